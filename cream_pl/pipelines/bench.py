"""``make bench``: the performance figures of cream-pl, written to ``results/bench.json`` and ``bench.md``.

- CREAM's map cost relative to CAM on the same batch (224 px, batch 32): forward + CAM vs
  forward + CREAM (target: within 5 %);
- box-metric speed vs a straightforward one-``findContours``-per-threshold loop (target >= 10x);
- pseudo-box throughput vs plain inference of the same backbone (target >= 0.9x);
- data-loading images/s of the embedded benchmark (train transform);
- loading at CUB's image size (500x375 JPEGs): one worker's images/s per decoder (``pil``,
  ``torchvision``) next to the CPU training step of the VGG16 and ResNet50 CUB recipes at batch 32,
  and the workers a GPU needs (from ``results/bench_gpu.json`` when ``make bench-gpu`` ran on a
  GPU); see :mod:`cream_pl.pipelines.bench_loading`;
- the val-split cost of ``cream_search`` (the embedded recipe's grid) per val image;
- CPU training images/s of the embedded recipe, default memory layout vs channels_last;
- on a GPU only: training images/s of the VGG16 recipe, fp32 vs bf16-mixed + channels_last (target >= 1.5x, issue 25);
- start-up: ``cream-pl --help`` and every sub-command's ``--help`` as whole processes (target <= 0.5 s);
- with ``WSOLEVAL_REF`` set to a checkout of the reference (``git clone
  https://github.com/clovaai/wsolevaluation``): ``cream-pl evaluate`` vs wsolevaluation's own
  evaluator on 800 real maps of a trained model, both as whole processes, MaxBoxAccV2 (interval
  0.001, all contours) and PxAP (target >= 10x, identical numbers); see
  :mod:`cream_pl.pipelines.bench_reference`.

Every input is checked before the first measurement; the finished measurements are kept in
``<out>/bench.partial.json`` while it runs (a late failure loses none; the next run on the same machine
resumes after them), which becomes ``bench.json`` at the end. ``--quick`` (small sizes, a smoke test) writes to a new temporary folder unless given
``--out``, is marked as such in both files, and never replaces a full run's files.

Example:
    $ WSOLEVAL_REF=../wsolevaluation python -m cream_pl.pipelines.bench --out results
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cream_pl.core.machine import machine_text

if TYPE_CHECKING:  # torch is imported when a measurement runs: --help stays instant
    import torch

__all__ = ["bench_cream_cost", "bench_cream_search", "bench_pseudo_boxes", "bench_data_loading", "bench_cpu_training",
           "bench_gpu_training", "refuse_to_replace_full_results", "run_bench", "main"]

PARTIAL_FILE = "bench.partial.json"
"""The finished measurements of a run in progress (in ``--out``; ``bench.json`` replaces it at the end)."""


def _time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in seconds."""
    import torch
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


@contextlib.contextmanager
def _work_folder(workdir: Path | None) -> Iterator[Path]:
    """``workdir``, else a temporary folder removed at the end of the block."""
    if workdir is not None:
        yield Path(workdir)
        return
    with tempfile.TemporaryDirectory(prefix="cream_bench_") as tmp:
        yield Path(tmp)


def _classifier(device: torch.device, pretrained: bool = True):
    from cream_pl.models import WSOLClassifier

    model = WSOLClassifier(num_classes=200, pretrained=pretrained).to(device).eval()
    return model


def bench_cream_cost(batch_size: int = 32, size: int = 224, repeats: int = 5, device: str | None = None) -> dict[str, Any]:
    """Forward + CAM vs forward + CREAM (T=2) on one batch, median of ``repeats`` (``device``: default the GPU if any)."""
    import torch
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    model = _classifier(dev)
    x = torch.randn(batch_size, 3, size, size, device=dev)
    labels = torch.randint(0, 200, (batch_size,), device=dev)

    def cam_only() -> None:
        feats, _ = model.forward_features(x)
        from cream_pl.models.cam import class_activation_maps, normalize_maps

        normalize_maps(class_activation_maps(feats, model.classifier.weight, labels))

    def with_cream() -> None:
        feats, _ = model.forward_features(x)
        model.method_maps(feats, labels, ["cam", "cream"])

    with torch.no_grad():
        t_cam = _time(cam_only, repeats)
        t_cream = _time(with_cream, repeats)
    return {"batch_size": batch_size, "size": size, "device": device, "forward_cam_s": t_cam,
            "forward_cream_s": t_cream, "overhead_percent": 100.0 * (t_cream / t_cam - 1.0),
            "cream_ms_per_image_extra": 1000.0 * (t_cream - t_cam) / batch_size, "target_percent": 5.0}


def bench_pseudo_boxes(num_images: int = 64, batch_size: int = 32, workdir: Path | None = None) -> dict[str, Any]:
    """Images/s of the pseudo-box writer vs plain ``Trainer.predict`` of the same backbone (logits only).

    After one untimed plain run (warm-up), each side runs twice and keeps its faster run.
    """
    import pytorch_lightning as pl
    import torch

    from cream_pl.data import WSOLDataModule, generate_synthetic_dataset
    from cream_pl.pseudo_boxes.generate import generate_pseudo_boxes

    with _work_folder(workdir) as tmp:
        root = tmp / "synth"
        if not (root / "metadata").is_dir():
            generate_synthetic_dataset(root, seed=0, num_classes=4, num_train=num_images, num_val=8, num_test=8)
        mean, std = (0.498,) * 3, (0.502,) * 3
        dm = WSOLDataModule(str(root), batch_size=batch_size, mean=mean, std=std)
        model = _classifier(torch.device("cpu"))

        class _Plain(pl.LightningModule):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def predict_step(self, batch, batch_idx):
                return self.inner(batch["image"]).argmax(1)

        kw = dict(accelerator="auto", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
        plain = _Plain(model)

        def run_plain() -> None:
            pl.Trainer(**kw).predict(plain, datamodule=dm, return_predictions=False)

        def run_boxes() -> None:
            generate_pseudo_boxes(model, dm, tmp / "boxes.json", source="cream", threshold=0.2, trainer_kwargs=kw,
                                  overwrite=True)

        run_plain()  # warm-up: page cache, first-call allocations and kernels, for both runs alike
        t_plain = min(_time(run_plain, repeats=1, warmup=0) for _ in range(2))
        t_boxes = min(_time(run_boxes, repeats=1, warmup=0) for _ in range(2))
        return {"num_images": num_images, "plain_images_per_s": num_images / t_plain,
                "pseudo_box_images_per_s": num_images / t_boxes, "ratio": t_plain / t_boxes, "target_ratio": 0.9}


EMBEDDED_RECIPE = Path(__file__).resolve().parents[2] / "experiments" / "embedded_cream.yaml"
"""The recipe the benchmark's ``cream_search`` row validates: the repository's, wherever the command runs from."""


def bench_cream_search(num_images: int = 64, batch_size: int = 32, workdir: Path | None = None,
                       recipe: Path | str = EMBEDDED_RECIPE) -> dict[str, Any]:
    """Seconds per val image of a whole validation epoch, with the recipe's ``cream_search`` and without it.

    The recipe's model settings (backbone EfficientNet-Lite0 with ImageNet weights, a fresh head:
    contours, not weights, set the cost) validate ``num_images`` images of the embedded benchmark's
    ``cub`` preset twice per side; each side keeps its faster run.
    """
    import pytorch_lightning as pl
    import torch
    import yaml

    from cream_pl.data import WSOLDataModule, generate_synthetic_dataset
    from cream_pl.models import WSOLClassifier

    args = yaml.safe_load(Path(recipe).read_text())["model"]["init_args"]
    space = args.get("cream_search")
    if not space:
        raise ValueError(f"{recipe} sets no cream_search")
    from cream_pl.data.synth import PRESETS

    with _work_folder(workdir) as tmp:
        root = tmp / "synth_search"
        if not (root / "metadata").is_dir():
            generate_synthetic_dataset(root, seed=0, config=PRESETS["cub"], num_train=8, num_val=num_images, num_test=8)
        dm = WSOLDataModule(str(root), batch_size=batch_size, mean=(0.498,) * 3, std=(0.502,) * 3)
        keep = ("cream_lambda", "cream_kappa", "cream_iterations", "cream_feature_norm", "ablation_lambdas",
                "cam_curve_interval", "channels_last")
        base = {k: args[k] for k in keep if k in args}
        kw = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
        per_image = {}
        for name, search in (("without", None), ("with", space)):
            model = WSOLClassifier(num_classes=PRESETS["cub"].num_classes, pretrained=True, cream=True, cream_search=search,
                                   backbone=args.get("backbone", "efficientnet_lite0"), **base)
            runs = [_time(lambda m=model: pl.Trainer(**kw).validate(m, datamodule=dm, verbose=False), repeats=1, warmup=0)
                    for _ in range(2)]
            per_image[name] = min(runs) / num_images
        n_cand = len(WSOLClassifier(num_classes=PRESETS["cub"].num_classes, pretrained=False, cream=True, cream_search=space,
                                    **base).cream_candidates)
        return {"num_images": num_images, "candidates": n_cand, "threads": torch.get_num_threads(),
                "s_per_image_without": per_image["without"], "s_per_image_with": per_image["with"],
                "added_s_per_image": per_image["with"] - per_image["without"], "recipe": str(recipe)}


def bench_data_loading(num_images: int = 96, batch_size: int = 32, num_workers: int = 2,
                       workdir: Path | None = None) -> dict[str, Any]:
    """Images/s of one epoch of the embedded train loader (decode + resize 256 + crop 224 + flip + normalise)."""
    from cream_pl.data import WSOLDataModule, generate_synthetic_dataset

    with _work_folder(workdir) as tmp:
        root = tmp / "synth_loading"
        if not (root / "metadata").is_dir():
            generate_synthetic_dataset(root, seed=0, num_classes=4, num_train=num_images, num_val=8, num_test=8)
        dm = WSOLDataModule(str(root), batch_size=batch_size, num_workers=num_workers)
        dm.setup("fit")
        loader = dm.train_dataloader()
        t = time.perf_counter()
        n = sum(batch["image"].shape[0] for batch in loader)
        return {"images_per_s": n / (time.perf_counter() - t), "num_workers": num_workers, "num_images": n}


EMBEDDED_FREEZE = r"^(_conv_stem|_bn0|_blocks\.[0-7]\.)"
"""Frozen part of the embedded recipe's EfficientNet-Lite0 (``experiments/embedded_cream.yaml``)."""


def _training_images_per_s(device: torch.device, backbone: str, size: int, batch_size: int, steps: int,
                           channels_last: bool, dtype: torch.dtype | None, freeze: str | None = None) -> float:
    """Training images/s (forward, CE, backward, SGD step, CREAM embedding update) on random data."""
    import torch

    from cream_pl.models import WSOLClassifier

    model = WSOLClassifier(num_classes=200, backbone=backbone, pretrained=False, freeze_backbone=freeze,
                           channels_last=channels_last).to(device).train()
    opt = model.configure_optimizers()["optimizer"]
    batch = {"image": torch.randn(batch_size, 3, size, size, device=device),
             "label": torch.randint(0, 200, (batch_size,), device=device)}

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            feats, logits = model.forward_features(batch["image"])
            loss = torch.nn.functional.cross_entropy(logits.float(), batch["label"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model._update_context(feats.detach().float(), batch["label"])

    return steps * batch_size / _time(lambda: [step() for _ in range(steps)], repeats=3)


def bench_cpu_training(steps: int = 4, batch_size: int = 32, size: int = 160) -> dict[str, Any]:
    """Training images/s of the embedded recipe on the CPU (EfficientNet-Lite0, frozen stem + 8 blocks,
    160 px), default layout vs ``channels_last``."""
    import torch
    dev = torch.device("cpu")
    out: dict[str, Any] = {"backbone": "efficientnet_lite0", "size": size, "batch_size": batch_size,
                           "threads": torch.get_num_threads()}
    for name, cl in (("contiguous", False), ("channels_last", True)):
        out[f"{name}_images_per_s"] = _training_images_per_s(dev, "efficientnet_lite0", size, batch_size, steps, cl,
                                                             None, EMBEDDED_FREEZE)
    out["speedup"] = out["channels_last_images_per_s"] / out["contiguous_images_per_s"]
    return out


def bench_gpu_training(steps: int = 20, batch_size: int = 32) -> dict[str, Any] | None:
    """Training images/s of the VGG16 recipe, fp32 vs bf16-mixed + channels_last. ``None`` without a GPU."""
    import torch
    if not torch.cuda.is_available():
        return None
    dev = torch.device("cuda")
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(0)}
    for name, dtype, cl in (("fp32", None, False), ("bf16_channels_last", torch.bfloat16, True)):
        out[f"{name}_images_per_s"] = _training_images_per_s(dev, "vgg16", 224, batch_size, steps, cl, dtype)
    out["speedup"] = out["bf16_channels_last_images_per_s"] / out["fp32_images_per_s"]
    out["target_speedup"] = 2.0
    return out


REFERENCE_HOWTO = ("set `WSOLEVAL_REF` to a checkout of the reference (`git clone "
                   "https://github.com/clovaai/wsolevaluation`), then `make bench`")


def _reference_rows(res: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    rows: list[tuple[str, str, str, bool | None]] = []
    s = res.get("startup")
    if s:
        top = s["cream-pl --help"]
        worst = max((k for k in s if k != "cream-pl --help"), key=s.get, default="cream-pl --help")
        rows.append(("Start-up: `cream-pl --help` (whole process)", f"{top:.2f} s", "≤ 0.5 s", top <= 0.5))
        rows.append((f"Start-up: slowest sub-command help, `{worst}`", f"{s[worst]:.2f} s", "≤ 0.5 s", s[worst] <= 0.5))
    r = res.get("reference")
    if not r:
        return rows
    b, px = r["box"], r["pxap"]
    same = "identical numbers" if b["default"]["identical"] and b["v2_only"]["identical"] else "NUMBERS DIFFER"
    rows += [
        (f"`cream-pl evaluate` vs wsolevaluation `BoxEvaluator`, whole processes, {r['num_images']} real maps, interval "
         f"0.001, MaxBoxAccV2 (all contours): {b['reference_s']:.1f} s → {b['v2_only']['cream_s']:.2f} s "
         f"(`--no-v1`, the same work as the reference), {same}",
         f"{b['v2_only']['speedup']:.1f}×", "≥ 10×", b["v2_only"]["speedup"] >= 10.0 and b["v2_only"]["identical"]),
        (f"… same, default `cream-pl evaluate` (also computes MaxBoxAcc V1): {b['default']['cream_s']:.2f} s",
         f"{b['default']['speedup']:.1f}×", "—", None),
        (f"`cream-pl evaluate --mask-root` vs wsolevaluation `MaskEvaluator` (PxAP), same maps: {px['reference_s']:.1f} s"
         f" → {px['cream_s']:.2f} s, {'identical' if px['identical'] else 'DIFFERENT'} PxAP {px['cream']:.4f}",
         f"{px['speedup']:.1f}×", "≥ 10×", px["speedup"] >= 10.0 and px["identical"]),
    ]
    if "floor_s" in px:
        rows.append((f"… the fixed part of that process alone (interpreter, imports, the first call of each compiled "
                     f"kernel and of the mask decoder, on one map): {px['floor_s']:.2f} s, so even with no work per "
                     f"image the speed-up would be at most", f"{px['max_speedup_at_floor']:.1f}×", "—", None))
    return rows


def _reference_notes(res: dict[str, Any]) -> list[str]:
    r = res.get("reference")
    if not r and res.get("quick"):
        return ["", "A quick run skips the comparison with the reference tool."]
    if not r:
        return ["", f"The comparison with the reference tool on real maps was not run: {REFERENCE_HOWTO}."]
    b = r["box"]
    return ["", "Reference comparison (`cream_pl.pipelines.bench_reference`): maps: " + r["maps"] + ". Reference: "
            f"clovaai/wsolevaluation at commit `{r['reference_commit']}`, its `evaluation.py` imported in place from "
            "`$WSOLEVAL_REF` and fed as its `evaluate_wsol` does (its `CamDataset` loader), with `np.float = float` "
            "shimmed at run time (numpy >= 1.24); to get it: `git clone https://github.com/clovaai/wsolevaluation`. "
            f"Both tools run as fresh processes on {r['cpu_count']} CPU cores; the reference once, `cream-pl evaluate` "
            "once untimed (page cache, numba's kernel cache) then the median of 3 runs. MaxBoxAcc at IoU 30/50/70: "
            f"reference {[round(v, 4) for v in b['reference_max_box_acc_iou']]}, cream-pl "
            f"{[round(v, 4) for v in b['v2_only']['max_box_acc_iou']]}; PxAP: reference {r['pxap']['reference']:.6f}, "
            f"cream-pl {r['pxap']['cream']:.6f}."]


def _markdown(res: dict[str, Any]) -> str:
    c, m, p, d = res["cream_cost"], res["metrics"], res["pseudo_boxes"], res["data_loading"]
    m1 = res.get("metrics_v1")
    workers = f"{m['num_workers']} threads"
    rows = [
        (f"CREAM map cost vs CAM (forward + maps, batch {c['batch_size']}, {c['size']} px)",
         f"{c['overhead_percent']:+.1f} %", "≤ +5 %", c["overhead_percent"] <= 5.0),
        (f"Box metric (MaxBoxAccV2 update, interval {m['interval']:g}) vs per-threshold loop, {workers}", f"{m['speedup']:.1f}×",
         "≥ 10×", m["speedup"] >= 10.0),
        ("… same, one thread", f"{m['speedup_serial']:.1f}×", "—", None),
    ]
    if m1:
        rows += [
            (f"Box metric (MaxBoxAcc V1 update, largest contour) vs per-threshold loop, {workers}",
             f"{m1['speedup']:.1f}×", "≥ 10×", m1["speedup"] >= 10.0),
            ("… same, one thread", f"{m1['speedup_serial']:.1f}×", "—", None),
        ]
    rows += [
        ("Pseudo-box throughput vs plain inference", f"{p['ratio']:.2f}×", "≥ 0.9×", p["ratio"] >= 0.9),
        ("Data loading (embedded train transform)", f"{d['images_per_s']:.0f} img/s", "—", None),
    ]
    loading_notes: list[str] = []
    if res.get("loading_cub"):
        from cream_pl.pipelines.bench_loading import loading_rows

        more, loading_notes = loading_rows(res["loading_cub"])
        rows += more
    cs = res.get("cream_search")
    if cs:
        rows.append((f"Val selection of CREAM's T / κ / λ / feature norm ({cs['candidates']} candidates, {cs['threads']} "
                     f"threads): val epoch {cs['s_per_image_without']:.2f} → {cs['s_per_image_with']:.2f} s per image",
                     f"+{cs['added_s_per_image']:.2f} s/img", "≤ +0.10 s/img", cs["added_s_per_image"] <= 0.10))
    ct = res.get("cpu_training")
    if ct:
        rows.append((f"CPU training of the embedded recipe ({ct['size']} px, batch {ct['batch_size']}, {ct['threads']} threads), "
                     f"channels_last vs default layout: {ct['contiguous_images_per_s']:.0f} → "
                     f"{ct['channels_last_images_per_s']:.0f} img/s", f"{ct['speedup']:.2f}×", "—", None))
    g = res.get("gpu_training")
    if g:
        rows.append(("VGG16 training, bf16-mixed + channels_last vs fp32", f"{g['speedup']:.2f}×", "≥ 1.5×", g["speedup"] >= 1.5))
    rows += _reference_rows(res)
    if res.get("quick"):
        lines = [f"# cream-pl benchmarks — QUICK RUN ({res['machine']})", "",
                 "A quick run (`python -m cream_pl.pipelines.bench --quick`): small sizes, a smoke test; these are not "
                 "the figures of `make bench`.", ""]
    else:
        lines = [f"# cream-pl benchmarks ({res['machine']})", "",
                 "Produced by `make bench` (`python -m cream_pl.pipelines.bench`).", ""]
    lines += ["| measurement | result | target | met |", "| --- | ---: | ---: | :---: |"]
    for name, value, target, met in rows:
        lines.append(f"| {name} | {value} | {target} | {'—' if met is None else ('yes' if met else 'no')} |")
    if not g:
        lines += ["", "No GPU on this machine: the VGG16 fp32 vs bf16 training row is not measured."]
    lines += loading_notes
    lines += _reference_notes(res)
    return "\n".join(lines) + "\n"


def refuse_to_replace_full_results(path: Path | str) -> None:
    """Before a quick run writes ``path`` (``bench.json``, ``bench_cream_search.json``): one line if a full run's
    results (or any file not marked ``"quick": true``) are there.

    Raises:
        UserValueError: ``path`` exists and is no quick run's result.
    """
    from cream_pl.core.errors import UserValueError

    path = Path(path)
    if not path.exists():
        return
    try:
        quick = json.loads(path.read_text(encoding="utf-8")).get("quick") is True
    except (OSError, ValueError, AttributeError):
        quick = False
    if not quick:
        raise UserValueError(f"{path}: the results of a full run are there, and --quick does not replace them (give "
                             "--quick another --out, or none: a new temporary folder)")


def _reference_work_folder() -> tuple[str, str]:
    """The reference comparison's work folder and its name in messages (``$CREAM_BENCH_WORK`` or the default)."""
    env = os.environ.get("CREAM_BENCH_WORK")
    return (env, "CREAM_BENCH_WORK") if env else ("outputs/bench", "the default work folder (CREAM_BENCH_WORK)")


def _finished_stages(partial: Path, res: Mapping[str, Any], reference: str | None,
                     names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The stages an interrupted earlier run finished (``partial``), by name: kept where it ran on this machine, at
    these sizes (``quick``) and against this reference checkout; else ``{}`` (said, when there was such a file)."""
    from cream_pl.core.io import JSONFileError, read_json_file

    if not partial.is_file():
        return {}
    try:
        saved = read_json_file(partial, "an interrupted run's measurements")
    except JSONFileError as err:
        print(f"[bench] {err}: measuring every stage", flush=True)
        return {}
    same = isinstance(saved, dict) and isinstance(saved.get("finished"), dict) and all(
        saved.get(k) == v for k, v in (("machine", res["machine"]), ("quick", res["quick"]),
                                       ("reference_checkout", reference)))
    if not same:
        print(f"[bench] {partial}: an interrupted run on another machine, size or reference; measuring every stage",
              flush=True)
        return {}
    return {k: v for k, v in saved["finished"].items() if k in names and isinstance(v, dict)}


def run_bench(out: Path | str = "results", quick: bool = False, reference: str | None = None) -> dict[str, Any]:
    """Run every measurement and write ``bench.json`` / ``bench.md`` to ``out``.

    Every input is checked first (``out``, the reference checkout, ``$CREAM_BENCH_WORK``,
    ``$CREAM_BENCH_CKPT``, ``<out>/bench_gpu.json``). After each stage the finished measurements are
    written to ``<out>/bench.partial.json`` (``"incomplete": true``), removed once ``bench.json`` is; a run
    interrupted so is resumed by the next one on the same machine, sizes and reference (its finished stages kept).

    Args:
        out: output folder.
        quick: small sizes (smoke test); marked ``"quick": true``, and refused where a full run's
            ``bench.json`` is.
        reference: wsolevaluation checkout for the real-map comparison (default ``$WSOLEVAL_REF``;
            skipped when unset, or with ``quick``).
    """
    from cream_pl.core.io import check_output_dir
    from cream_pl.pipelines.bench_loading import bench_cub_loading, gpu_steps
    from cream_pl.pipelines.bench_metrics import bench_metrics
    from cream_pl.pipelines.bench_reference import bench_against_reference, check_bench_inputs, startup_times
    from cream_pl.reporting.tables import write_json_atomic, write_markdown_atomic

    out = Path(out)
    check_output_dir(out, "--out")  # every check before the first measurement, not a traceback after them
    if quick:
        refuse_to_replace_full_results(out / "bench.json")
    reference = reference if reference is not None else os.environ.get("WSOLEVAL_REF")
    reference = None if quick else reference
    work, work_option = _reference_work_folder()
    if reference:
        check_bench_inputs(reference, "WSOLEVAL_REF" if reference == os.environ.get("WSOLEVAL_REF") else "--reference",
                           work, work_option)
    gpu_results = out / "bench_gpu.json"
    gpu_steps(gpu_results)  # optional, but a damaged one is refused now

    batch = 8 if quick else 32  # of the model stages
    stages: list[tuple[str, Callable[[Path], dict[str, Any]]]] = [
        ("CREAM vs CAM map cost", lambda tmp: {"cream_cost": bench_cream_cost(batch_size=batch, repeats=2 if quick else 5)}),
        ("box metric vs per-threshold loop", lambda tmp: {
            "metrics": bench_metrics(num_images=4 if quick else 32, interval=0.001),
            "metrics_v1": bench_metrics(num_images=4 if quick else 32, interval=0.001, multi_contour=False)}),
        ("pseudo-box throughput", lambda tmp: {"pseudo_boxes": bench_pseudo_boxes(
            num_images=16 if quick else 64, batch_size=batch, workdir=tmp)}),
        ("data loading", lambda tmp: {"data_loading": bench_data_loading(num_images=16 if quick else 96, workdir=tmp)}),
        ("loading at CUB size vs the CUB recipes' CPU training step", lambda tmp: {"loading_cub": bench_cub_loading(
            tmp, num_images=8 if quick else 64, batch_size=2 if quick else 32, gpu_results=gpu_results)}),
        ("cream_search cost on the val split", lambda tmp: {"cream_search": bench_cream_search(
            num_images=8 if quick else 64, batch_size=batch, workdir=tmp)}),
        ("CPU training, default layout vs channels_last", lambda tmp: {"cpu_training": bench_cpu_training(
            steps=1 if quick else 4, batch_size=batch)}),
        ("VGG16 training on a GPU, fp32 vs bf16-mixed (none without a GPU)",
         lambda tmp: {"gpu_training": bench_gpu_training()}),
        ("start-up of the cream-pl command", lambda tmp: {"startup": startup_times(repeats=1 if quick else 3)}),
    ]
    if reference:
        stages.append((f"cream-pl evaluate vs wsolevaluation ({reference}) on real maps", lambda tmp: {
            "reference": bench_against_reference(reference, work=work, work_option=work_option)}))
    res: dict[str, Any] = {"machine": machine_text(), "quick": quick, "reference": None}
    partial = out / PARTIAL_FILE
    finished = _finished_stages(partial, res, reference, [w for w, _ in stages])
    with tempfile.TemporaryDirectory(prefix="cream_bench_") as tmp:
        for done, (what, measure) in enumerate(stages):
            if what in finished:  # an earlier invocation's, on this machine at these sizes: resumed, not measured again
                print(f"[bench] {what}: kept from {partial} (remove it to measure every stage again)", flush=True)
                res.update(finished[what])
                continue
            print(f"[bench] {what} ...", flush=True)
            try:
                finished[what] = measure(Path(tmp))
                res.update(finished[what])
            except BaseException:
                if done:
                    print(f"[bench] stopped in '{what}': the {len(finished)} finished stage(s) are in {partial}; "
                          "the next run resumes there", flush=True)
                raise
            write_json_atomic({**res, "incomplete": True, "stages_left": [w for w, _ in stages[done + 1:]],
                               "reference_checkout": reference, "finished": finished}, partial)
    write_json_atomic(res, out / "bench.json")
    write_markdown_atomic(_markdown(res), out / "bench.md")
    partial.unlink(missing_ok=True)
    print(_markdown(res), flush=True)
    print(f"[bench] wrote {out / 'bench.json'} and {out / 'bench.md'}{' (quick run)' if quick else ''}", flush=True)
    return res


def main(argv: Sequence[str] | None = None) -> int:
    from cream_pl.pipelines.entry import pipeline_main

    return pipeline_main("python -m cream_pl.pipelines.bench")(_main)(argv)


def _main(argv: Sequence[str] | None = None) -> int:
    from cream_pl.core.options import OneLineArgumentParser
    from cream_pl.pipelines.entry import preflight

    parser = OneLineArgumentParser(prog="python -m cream_pl.pipelines.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None,
                        help="folder for bench.json and bench.md (default: results; with --quick a new temporary "
                             "folder: a quick run never replaces a full run's files)")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test), marked as such in the files")
    parser.add_argument("--reference", default=None,
                        help="wsolevaluation checkout for the real-map comparison (default: $WSOLEVAL_REF)")
    parser.add_argument("--only", choices=("cream_search",), default=None,
                        help="run one measurement and write <out>/bench_<name>.json (bench.json is left alone)")
    args = parser.parse_args(argv)
    if args.quick and args.reference is not None:  # before: ignored without a word
        parser.error("--reference: not with --quick (the smoke test skips the comparison with the reference)")
    out = args.out if args.out is not None else (None if args.quick else "results")
    preflight(outputs=[(out, "--out")])  # before any measurement
    if args.quick and out is not None:
        refuse_to_replace_full_results(Path(out) / ("bench_cream_search.json" if args.only else "bench.json"))
    out = out if out is not None else tempfile.mkdtemp(prefix="cream_bench_quick_")
    if args.only == "cream_search":
        res = {"machine": machine_text(gpu=False), "quick": args.quick,
               "cream_search": bench_cream_search(num_images=8 if args.quick else 64, batch_size=8 if args.quick else 32),
               "load_average_1min_at_end": os.getloadavg()[0]}
        from cream_pl.reporting.tables import write_json_atomic

        write_json_atomic(res, Path(out) / "bench_cream_search.json")
        print(res, flush=True)
        print(f"[bench] wrote {Path(out) / 'bench_cream_search.json'}", flush=True)
        return 0
    run_bench(out, args.quick, args.reference)
    return 0


if __name__ == "__main__":
    sys.exit(main())
