"""``make bench-gpu``: the GPU profile of the CUB recipes, written to ``results/bench_gpu.json`` and ``bench_gpu.md``.

On a GPU, one command within 8 minutes (fixed step counts; sections that would start after
``--time-limit-s`` are skipped and listed as skipped):

- loading at CUB's image size (500x375 JPEGs, quality 92): images/s of one worker (decode alone,
  and decode + the train transform) for the ``pil`` and ``torchvision`` decoders; the datamodule's
  train loader with ``--num-workers`` processes; nvJPEG batch decoding on the GPU
  (``torchvision.io.decode_jpeg(device="cuda")``) and its largest difference from Pillow;
- training images/s of the VGG16 and ResNet50 CREAM recipes (``experiments/cub_{vgg16,resnet50}_cream.yaml``,
  random init, batch 32, 224 px) in fp32 and in bf16-mixed + channels_last (target: >= 1.5x);
- the loader against each step (target: the loader never below the step) and the workers a GPU
  needs, ``ceil(step images/s / one worker's images/s)``;
- a val epoch of each recipe with and without a ``cream_search`` grid (the CUB recipes set none:
  the grid of ``experiments/embedded_cream.yaml``, 90 candidates);
- ``cream-pl evaluate`` throughput: one whole process over CAM-like maps, interval 0.001.

``--dry-run`` runs every section on the CPU at toy sizes (a few steps, 64 px, a handful of
images) and writes to ``--out`` (default: a new temporary folder); the tests run it. Nothing else
in cream-pl needs a GPU.

Example:
    $ python -m cream_pl.pipelines.bench_gpu --out results          # on a GPU
    $ python -m cream_pl.pipelines.bench_gpu --dry-run               # anywhere (CPU, about a minute)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from cream_pl.core.machine import machine_text

__all__ = ["BenchPlan", "GPU_PLAN", "DRY_PLAN", "run_bench_gpu", "markdown", "main"]

REPO_ROOT = Path(__file__).resolve().parents[2]
SEARCH_RECIPE = REPO_ROOT / "experiments" / "embedded_cream.yaml"
CONFIGS = {"fp32": ("32-true", False), "bf16_channels_last": ("bf16-mixed", True)}
"""Training configurations: name -> (Lightning precision, channels_last)."""
TARGET_SPEEDUP = 1.5


@dataclass(frozen=True)
class BenchPlan:
    """Sizes of one profile run (:data:`GPU_PLAN` or :data:`DRY_PLAN`)."""

    device: str
    batch_size: int
    crop_size: int
    steps: int
    warmup: int
    repeats: int
    train_images: int
    val_images: int
    val_eval_size: int
    per_worker_images: int
    num_workers: int
    eval_maps: int
    time_limit_s: float


GPU_PLAN = BenchPlan(device="cuda", batch_size=32, crop_size=224, steps=20, warmup=5, repeats=3, train_images=960,
                     val_images=128, val_eval_size=224, per_worker_images=96, num_workers=8, eval_maps=1000,
                     time_limit_s=420.0)
"""On a GPU: CUB's batch and crop. Sized to end within 8 minutes even if the val search does not
scale past one core (2 x (128 + 32 warm-up) val images at 0.6 s each, its cost on 2 cores today);
the val epochs run last, so the time limit cuts them first."""

DRY_PLAN = BenchPlan(device="cpu", batch_size=2, crop_size=64, steps=1, warmup=1, repeats=1, train_images=4,
                     val_images=2, val_eval_size=64, per_worker_images=2, num_workers=1, eval_maps=4,
                     time_limit_s=600.0)
"""``--dry-run``: every section on the CPU at toy sizes."""


def _free(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------- sections


def section_loading(plan: BenchPlan, data: Path) -> dict[str, Any]:
    """One worker's images/s per decoder, and the train loader with ``plan.num_workers``."""
    from cream_pl.pipelines.bench_loading import loader_images_per_s, per_worker_loading

    out: dict[str, Any] = {"per_worker": {}, "loader": {}}
    for decoder in ("pil", "torchvision"):
        out["per_worker"][decoder] = per_worker_loading(data, decoder, num_images=plan.per_worker_images,
                                                        repeats=plan.repeats)
        out["loader"][decoder] = loader_images_per_s(data, decoder, num_workers=plan.num_workers,
                                                     batch_size=plan.batch_size, pin_memory=plan.device != "cpu")
    return out


def device_decode(plan: BenchPlan, data: Path) -> dict[str, Any]:
    """Images/s of batched ``decode_jpeg`` on ``plan.device`` over the train images, and its difference from Pillow.

    The bytes are read and their headers checked on the CPU (:func:`cream_pl.data.jpeg.read_jpeg_bytes`),
    as a GPU decoding path would; that time is included.
    """
    import numpy as np

    from cream_pl.data.images import load_image_rgb
    from cream_pl.data.jpeg import decode_jpeg_batch
    from cream_pl.data.metadata import read_split
    from cream_pl.pipelines.bench_training import synchronize

    paths = [data / "images" / s.image_id for s in read_split(data / "metadata" / "train").samples]
    batches = [paths[i:i + plan.batch_size] for i in range(0, len(paths), plan.batch_size)]
    decode_jpeg_batch(batches[0], plan.device)  # warm-up: nvJPEG handles, allocator
    synchronize(plan.device)
    t = time.perf_counter()
    for b in batches:
        decode_jpeg_batch(b, plan.device)
    synchronize(plan.device)
    elapsed = time.perf_counter() - t
    diffs = []
    for p, img in zip(batches[0], decode_jpeg_batch(batches[0], plan.device)):
        ours = img.permute(1, 2, 0).cpu().numpy().astype(np.int16)
        diffs.append(np.abs(ours - load_image_rgb(p).astype(np.int16)))
    d = np.stack(diffs)
    return {"device": plan.device, "num_images": len(paths), "images_per_s": len(paths) / elapsed,
            "mean_abs_diff_vs_pil": float(d.mean()), "max_abs_diff_vs_pil": int(d.max())}


def section_training(plan: BenchPlan, recipe: Path) -> dict[str, Any]:
    """Training images/s of one recipe in every configuration of :data:`CONFIGS`."""
    from cream_pl.pipelines.bench_training import build_recipe_model, recipe_section, training_images_per_s

    deterministic = recipe_section(recipe, "trainer").get("deterministic")
    out: dict[str, Any] = {"recipe": str(recipe.relative_to(REPO_ROOT) if recipe.is_relative_to(REPO_ROOT) else recipe)}
    for name, (precision, channels_last) in CONFIGS.items():
        model = build_recipe_model(recipe, channels_last=channels_last)
        out[name] = training_images_per_s(model, plan.device, batch_size=plan.batch_size, size=plan.crop_size,
                                          steps=plan.steps, warmup=plan.warmup, repeats=plan.repeats,
                                          precision=precision, deterministic=deterministic)
        del model
        _free(plan.device)
    out["speedup"] = out["bf16_channels_last"]["images_per_s"] / out["fp32"]["images_per_s"]
    return out


def section_val_epoch(plan: BenchPlan, recipe: Path, data: Path, workers: int) -> dict[str, Any]:
    """Seconds of one val epoch of ``recipe``'s model without and with the ``cream_search`` grid."""
    from cream_pl.data import WSOLDataModule
    from cream_pl.pipelines.bench_training import build_recipe_model, val_epoch_seconds

    size = plan.val_eval_size
    dm = WSOLDataModule(str(data), batch_size=plan.batch_size, num_workers=workers, eval_size=size,
                        resize_size=max(size, 256 * size // 224), crop_size=size, pin_memory=plan.device != "cpu",
                        check_eval_images=False)  # the up-front check would be timed in the first epoch only
    accelerator = "gpu" if plan.device.startswith("cuda") else "cpu"
    out: dict[str, Any] = {"num_images": plan.val_images, "eval_size": size, "num_workers": workers,
                           "search_recipe": str(SEARCH_RECIPE.relative_to(REPO_ROOT))}
    for name, search in (("without", None), ("with", SEARCH_RECIPE)):
        model = build_recipe_model(recipe, num_classes=dm.num_classes, cream_search_from=search, eval_size=size)
        if search is not None:
            out["candidates"] = len(model.cream_candidates)
        out[f"s_{name}"] = val_epoch_seconds(model, dm, accelerator=accelerator)
        out[f"s_per_image_{name}"] = out[f"s_{name}"] / plan.val_images
        del model
        _free(plan.device)
    out["added_s_per_image"] = out["s_per_image_with"] - out["s_per_image_without"]
    return out


def section_evaluate(plan: BenchPlan, work: Path, interval: float = 0.001) -> dict[str, Any]:
    """Wall seconds of one ``cream-pl evaluate`` process over ``plan.eval_maps`` CAM-like 224x224 maps."""
    import numpy as np

    from cream_pl.data.metadata import SampleRecord, write_split
    from cream_pl.pipelines.bench_metrics import make_bench_maps
    from cream_pl.pipelines.bench_reference import run_cream_evaluate

    maps, boxes = make_bench_maps(plan.eval_maps, seed=0)
    folder = work / "evaluate"
    samples = []
    for i, (m, b) in enumerate(zip(maps, boxes)):
        image_id = f"m/{i:05d}.jpg"
        (folder / "maps" / "m").mkdir(parents=True, exist_ok=True)
        np.save(folder / "maps" / f"{image_id}.npy", m.astype(np.float32))
        samples.append(SampleRecord(image_id, 0, (224, 224), tuple(tuple(int(v) for v in row) for row in b)))
    write_split(folder / "split", samples)
    seconds, result = run_cream_evaluate(folder / "split", folder / "maps", folder / "scores.json", interval=interval)
    return {"num_maps": plan.eval_maps, "interval": interval, "seconds": seconds,
            "maps_per_s": plan.eval_maps / seconds, "max_box_acc_v2": result["max_box_acc_v2"],
            "whole_process": True}


# ---------------------------------------------------------------------------------------------- run


def _derived(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Loader against every training step, and the workers each step needs per decoder."""
    from cream_pl.pipelines.bench_loading import workers_needed

    load, rows = res.get("loading"), []
    if not load:
        return rows
    for backbone, tr in (res.get("training") or {}).items():
        for config in CONFIGS:
            step = tr[config]["images_per_s"]
            rows.append({
                "backbone": backbone, "config": config, "step_images_per_s": step,
                "loader": {d: load["loader"][d]["images_per_s"] for d in load["loader"]},
                "loader_num_workers": next(iter(load["loader"].values()))["num_workers"],
                "loader_keeps_up": {d: load["loader"][d]["images_per_s"] >= step for d in load["loader"]},
                "workers_needed": {d: workers_needed(step, w["images_per_s"]) for d, w in load["per_worker"].items()},
            })
    return rows


def run_bench_gpu(out: Path | str, plan: BenchPlan, work: Path | str | None = None,
                  recipes: dict[str, Path] | None = None) -> dict[str, Any]:
    """Run every section of ``plan`` and write ``bench_gpu.json`` / ``bench_gpu.md`` to ``out`` (atomically).

    Args:
        out: output folder.
        plan: :data:`GPU_PLAN`, :data:`DRY_PLAN` or a variant.
        work: folder for the generated images and maps (default: a temporary folder, removed).
        recipes: backbone name -> recipe (default: the CUB VGG16 and ResNet50 CREAM recipes).
    """
    import torch

    from cream_pl.pipelines.bench_loading import write_cub_sized_jpegs
    from cream_pl.reporting.tables import write_json_atomic, write_markdown_atomic

    if plan.device.startswith("cuda") and not torch.cuda.is_available():
        from cream_pl.core.errors import UserValueError

        raise UserValueError("no CUDA GPU is visible; `make bench-gpu DRY=1` (--dry-run) runs the CPU dry mode")
    from cream_pl.pipelines.bench_training import CUB_RECIPES

    recipes = dict(CUB_RECIPES if recipes is None else recipes)
    start = time.perf_counter()
    res: dict[str, Any] = {"machine": machine_text(), "dry_run": plan.device == "cpu", "plan": asdict(plan),
                           "workers_available": os.cpu_count(), "sections_s": {}, "skipped": [], "errors": {},
                           "training": {},
                           "val_epoch": {},
                           # what "fp32" means on the device: PyTorch's defaults, which 32-true recipes keep
                           "fp32_settings": {"cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                                             "float32_matmul_precision": torch.get_float32_matmul_precision()}}

    def timed(name: str, fn: Callable[[], Any], required: bool = False) -> Any:
        if not required and time.perf_counter() - start > plan.time_limit_s:
            res["skipped"].append(name)
            print(f"[bench-gpu] {name}: skipped (past the {plan.time_limit_s:.0f} s limit)", flush=True)
            return None
        print(f"[bench-gpu] {name} ...", flush=True)
        t = time.perf_counter()
        try:
            value = fn()
        except Exception as err:  # one failed section must not lose the others' figures (one GPU run)
            if required:
                raise
            res["errors"][name] = f"{type(err).__name__}: {' '.join(str(err).split())}"[:400]
            print(f"[bench-gpu] {name}: FAILED: {res['errors'][name]}", flush=True)
            return None
        finally:
            res["sections_s"][name] = time.perf_counter() - t
            _free(plan.device)
        return value

    with tempfile.TemporaryDirectory(prefix="cream_bench_gpu_") as tmp:
        work = Path(work) if work is not None else Path(tmp)
        data = work / "cub_sized"
        classes = 4 if plan.device == "cpu" else 200  # CUB's 200 on a GPU
        timed("write CUB-sized JPEGs", lambda: write_cub_sized_jpegs(data, num_train=plan.train_images,
                                                                     num_val=plan.val_images, num_classes=classes),
              required=True)
        res["loading"] = timed("loading", lambda: section_loading(plan, data))
        res["device_decode"] = timed(f"decode_jpeg on {plan.device}", lambda: device_decode(plan, data))
        for backbone, recipe in recipes.items():
            value = timed(f"training {backbone}", lambda r=recipe: section_training(plan, r))
            if value is not None:
                res["training"][backbone] = value
        res["evaluate"] = timed("evaluate", lambda: section_evaluate(plan, work))
        for backbone, recipe in recipes.items():  # last: the longest sections, the first the time limit cuts
            value = timed(f"val epoch {backbone}", lambda r=recipe: section_val_epoch(plan, r, data, plan.num_workers))
            if value is not None:
                res["val_epoch"][backbone] = value
    res["loader_vs_step"] = _derived(res)
    res["total_s"] = time.perf_counter() - start
    out = Path(out)
    write_json_atomic(res, out / "bench_gpu.json")
    write_markdown_atomic(markdown(res), out / "bench_gpu.md")
    print(markdown(res), flush=True)
    return res


# ---------------------------------------------------------------------------------------------- report


def _met(flag: bool | None) -> str:
    return "—" if flag is None else ("yes" if flag else "no")


def markdown(res: dict[str, Any]) -> str:
    """The ``bench_gpu.md`` text of a :func:`run_bench_gpu` result."""
    plan = res["plan"]
    dry = res["dry_run"]
    title = "cream-pl GPU profile" + (" — DRY RUN on the CPU (toy sizes; the figures are not GPU figures)" if dry else "")
    lines = [f"# {title}", "", f"Machine: {res['machine']}. Produced by `make bench-gpu` "
             f"(`python -m cream_pl.pipelines.bench_gpu{' --dry-run' if dry else ''}`) in {res['total_s']:.0f} s; "
             f"batch {plan['batch_size']}, {plan['crop_size']} px, random init, median of {plan['repeats']} blocks of "
             f"{plan['steps']} steps after {plan['warmup']} warm-up steps. fp32 is PyTorch's default "
             f"(convolutions may use TF32: cudnn.allow_tf32={res['fp32_settings']['cudnn_allow_tf32']}, matmul "
             f"precision {res['fp32_settings']['float32_matmul_precision']!r}), as the `32-true` recipes run.", "",
             "| measurement | result | target | met |", "| --- | ---: | ---: | :---: |"]
    rows: list[tuple[str, str, str, bool | None]] = []
    for backbone, tr in res.get("training", {}).items():
        a, b = tr["fp32"]["images_per_s"], tr["bf16_channels_last"]["images_per_s"]
        rows.append((f"{backbone} CREAM recipe training: fp32 {a:.0f} → bf16-mixed + channels_last {b:.0f} img/s",
                     f"{tr['speedup']:.2f}×", f"≥ {TARGET_SPEEDUP}×", tr["speedup"] >= TARGET_SPEEDUP))
    fastest: dict[str, dict[str, Any]] = {}  # the loader against each backbone's fastest step: the hardest to feed
    for r in res.get("loader_vs_step", []):
        if r["step_images_per_s"] > fastest.get(r["backbone"], {}).get("step_images_per_s", 0.0):
            fastest[r["backbone"]] = r
    for r in fastest.values():
        for decoder, rate in r["loader"].items():
            rows.append((f"Train loader (`{decoder}`, {r['loader_num_workers']} workers) {rate:.0f} img/s vs the "
                         f"{r['backbone']} {r['config']} step {r['step_images_per_s']:.0f} img/s",
                         f"{rate / r['step_images_per_s']:.2f}×", "≥ 1×", r["loader_keeps_up"][decoder]))
    load = res.get("loading")
    if load:
        for decoder, w in load["per_worker"].items():
            rows.append((f"One worker (1 thread), `{decoder}` decoder, {w['image_size'][0]}×{w['image_size'][1]} JPEG: decode "
                         f"{w['decode_images_per_s']:.0f} img/s ({w['decode_ms']:.1f} ms), + train transform "
                         f"({w['transform_ms']:.1f} ms)", f"{w['images_per_s']:.0f} img/s", "—", None))
    d = res.get("device_decode")
    if d:
        rows.append((f"Batched `decode_jpeg` on {d['device']} ({d['num_images']} images, bytes read on the CPU); vs "
                     f"Pillow: mean |Δ| {d['mean_abs_diff_vs_pil']:.2f}, max |Δ| {d['max_abs_diff_vs_pil']} levels",
                     f"{d['images_per_s']:.0f} img/s", "—", None))
    for backbone, v in res.get("val_epoch", {}).items():
        rows.append((f"{backbone} val epoch, {v['num_images']} images ({v['eval_size']} px): {v['s_without']:.1f} s → "
                     f"{v['s_with']:.1f} s with `cream_search` ({v['candidates']} candidates)",
                     f"+{v['added_s_per_image']:.3f} s/img", "—", None))
    e = res.get("evaluate")
    if e:
        rows.append((f"`cream-pl evaluate` (whole process), {e['num_maps']} maps, interval {e['interval']}: "
                     f"{e['seconds']:.1f} s", f"{e['maps_per_s']:.0f} maps/s", "—", None))
    lines += [f"| {n} | {v} | {t} | {_met(m)} |" for n, v, t, m in rows]
    need = res.get("loader_vs_step", [])
    if need:
        decoders = list(need[0]["workers_needed"])
        lines += ["", "Workers a GPU needs, `ceil(step img/s / one worker's img/s)` (one worker = one CPU core; "
                  f"this machine has {res['workers_available']}):", "",
                  "| step | img/s | " + " | ".join(f"workers ({d})" for d in decoders) + " |",
                  "| --- | ---: |" + " ---: |" * len(decoders)]
        for r in need:
            lines.append(f"| {r['backbone']} {r['config']} | {r['step_images_per_s']:.0f} | "
                         + " | ".join(str(r["workers_needed"][d]) for d in decoders) + " |")
    if res.get("errors"):
        lines += ["", "Failed sections (the others ran): " + "; ".join(f"{k}: {v}" for k, v in res["errors"].items())]
    if res.get("skipped"):
        lines += ["", f"Skipped (past the {plan['time_limit_s']:.0f} s limit): {', '.join(res['skipped'])}."]
    lines += ["", "Sections (s): " + ", ".join(f"{k} {v:.1f}" for k, v in res["sections_s"].items()) + "."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    from cream_pl.pipelines.entry import pipeline_main

    return pipeline_main("python -m cream_pl.pipelines.bench_gpu")(_main)(argv)


def _main(argv: Sequence[str] | None = None) -> int:
    from cream_pl.core.options import OneLineArgumentParser, nonneg_int, positive_float, positive_int
    from cream_pl.pipelines.entry import preflight

    parser = OneLineArgumentParser(prog="python -m cream_pl.pipelines.bench_gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="every section on the CPU at toy sizes (default --out: a new temporary folder)")
    parser.add_argument("--out", default=None, help="folder for bench_gpu.json and bench_gpu.md (default: results)")
    parser.add_argument("--work", default=None, help="folder for the generated images and maps (default: temporary)")
    parser.add_argument("--num-workers", type=nonneg_int, default=None,
                        help="loader worker processes (default: the recipes' 8, at most the CPU count)")
    parser.add_argument("--val-images", type=positive_int, default=None, help="images of each val epoch")
    parser.add_argument("--time-limit-s", type=positive_float, default=None,
                        help="sections that would start later are skipped (default 420 on a GPU)")
    args = parser.parse_args(argv)
    plan = DRY_PLAN if args.dry_run else replace(GPU_PLAN, num_workers=min(GPU_PLAN.num_workers, os.cpu_count() or 1))
    if args.num_workers is not None:
        plan = replace(plan, num_workers=args.num_workers)
    if args.val_images is not None:
        plan = replace(plan, val_images=args.val_images)
    if args.time_limit_s is not None:
        plan = replace(plan, time_limit_s=args.time_limit_s)
    out = args.out if args.out is not None else (None if args.dry_run else "results")
    preflight(outputs=[(out, "--out"), (args.work, "--work")])  # before the dry run's temporary folder is made
    out = out if out is not None else tempfile.mkdtemp(prefix="cream_bench_gpu_dry_")
    run_bench_gpu(out, plan, work=args.work)
    print(f"[bench-gpu] wrote {Path(out) / 'bench_gpu.json'} and bench_gpu.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
