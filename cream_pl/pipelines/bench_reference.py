"""``make bench``'s user-level comparison: ``cream-pl evaluate`` against wsolevaluation itself, on real maps.

A user compares the two tools as whole processes on the maps of a trained model, so this bench
does exactly that:

1. real maps: the embedded benchmark with 800 test images (``cream-pl data synth --num-test
   800``), a trained classifier (``$CREAM_BENCH_CKPT``, else ``make demo``'s
   ``outputs/demo/model.ckpt``, else a 1-epoch ``cream-pl fit`` of
   ``experiments/embedded_cream.yaml``), and its maps saved by ``cream-pl export-scoremaps`` in
   the reference's format (224x224 float64 ``<image_id>.npy``). Everything is cached under the
   work folder (default ``outputs/bench``);
2. the reference: ``$WSOLEVAL_REF`` points at a checkout of clovaai/wsolevaluation (``git clone
   https://github.com/clovaai/wsolevaluation``). Its own ``evaluation.py`` runs in place, in a
   fresh interpreter, fed the way its ``evaluate_wsol`` feeds it (its ``CamDataset`` loader,
   ``BoxEvaluator`` / ``MaskEvaluator``). Its ``np.float`` (gone since numpy 1.24) is shimmed
   at run time (``np.float = float``); no file of the checkout is changed or copied;
3. ``cream-pl evaluate`` on the same maps, also as a fresh process; the numbers of both must agree
   to 1e-6.

Example:
    $ WSOLEVAL_REF=/path/to/wsolevaluation python -m cream_pl.pipelines.bench_reference
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cream_pl.core.errors import UserRuntimeError

__all__ = ["BenchCommandError", "check_reference_checkout", "bench_checkpoint", "check_bench_inputs", "prepare_real_maps",
           "reference_commit", "run_reference", "run_cream_evaluate", "bench_against_reference", "pxap_floor", "startup_times"]

REPO_ROOT = Path(__file__).resolve().parents[2]
NUM_TEST = 800
TOL = 1e-6

# Driver run in a fresh interpreter: the reference's own code, imported in place from its checkout.
_REFERENCE_DRIVER = r"""
import json, sys
import numpy as np
np.float = float  # the reference predates numpy 1.24, which removed this alias
ref, metadata_dir, scoremaps, kind, mask_root, interval = sys.argv[1:7]
sys.path.insert(0, ref)
import evaluation
from data_loaders import configure_metadata, get_image_ids
meta = configure_metadata(metadata_dir)
ids = get_image_ids(meta)
kwargs = dict(metadata=meta, split="test", cam_threshold_list=list(np.arange(0, 1, float(interval))),
              iou_threshold_list=[30, 50, 70], multi_contour_eval=True)
if kind == "box":
    evaluator = evaluation.BoxEvaluator(dataset_name="CUB", mask_root=None, **kwargs)
else:
    evaluator = evaluation.MaskEvaluator(dataset_name="OpenImages", mask_root=mask_root, **kwargs)
for cams, image_ids in evaluation._get_cam_loader(ids, scoremaps):
    for cam, image_id in zip(cams, image_ids):
        evaluator.accumulate(evaluation.t2n(cam), image_id)
print("RESULT " + json.dumps(evaluator.compute()))
"""


# The fixed cost of a ``cream-pl evaluate --mask-root`` process before its first image: the interpreter,
# the CLI's imports, and the first call of each compiled kernel (numba loads its cached machine code
# then) and of the mask decoder, on one map and one mask of the split.
_FLOOR_DRIVER = r"""
import sys
from pathlib import Path
import numpy as np
import cream_pl.cli.app, cream_pl.cli.evaluate
from cream_pl.metrics.component_tree import scoremap_uint8
from cream_pl.metrics.pixel_histogram import mask_histograms
from cream_pl.metrics.scoring import load_mask
scoremap = np.load(sys.argv[1])
mask = load_mask([Path(sys.argv[2])], None)
scoremap_uint8(scoremap)
mask_histograms(scoremap, mask, np.linspace(0.0, 1.0, 11))
"""


def pxap_floor(scoremap: Path, mask_png: Path, repeats: int = 3) -> float:
    """Median wall time of a fresh process that does only the fixed part of a PxAP evaluation (see above)."""
    cmd = [sys.executable, "-c", _FLOOR_DRIVER, str(scoremap), str(mask_png)]
    times = sorted(_timed(cmd, name="the fixed part of a PxAP evaluation (python -c <driver>)")[0] for _ in range(repeats))
    return times[len(times) // 2]


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("cream-pl")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "cream_pl.cli"]


def _env() -> dict[str, str]:
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONWARNINGS="ignore")
    return env


class BenchCommandError(UserRuntimeError):
    """A process the bench runs failed: one line with its name and its last line of error output."""


def _command_name(cmd: Sequence[str]) -> str:
    """``cream-pl <sub-command>`` for the command line, else the program and its first argument."""
    args = [str(a) for a in cmd]
    if Path(args[0]).name == "cream-pl":
        return " ".join(["cream-pl", *args[1:2]])
    if args[1:3] == ["-m", "cream_pl.cli"]:
        return " ".join(["cream-pl", *args[3:4]])
    return " ".join([Path(args[0]).name, *args[1:2]])


def _timed(cmd: Sequence[str], cwd: Path | None = None, name: str | None = None) -> tuple[float, str]:
    """Wall time and stdout of ``cmd`` as a fresh process.

    Raises:
        BenchCommandError: it failed; the message names it (``name``, default from ``cmd``) and its last line of
            stderr (else stdout), e.g. ``cream-pl export-scoremaps failed (exit status 2): ... checkpoint not found``.
    """
    start = time.perf_counter()
    proc = subprocess.run(list(cmd), cwd=cwd, env=_env(), capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        last = lines[-1][:500] if lines else "no output"
        raise BenchCommandError(f"{name or _command_name(cmd)} failed (exit status {proc.returncode}): {last}")
    return elapsed, proc.stdout


def startup_times(repeats: int = 3) -> dict[str, float]:
    """Median wall time of ``cream-pl --help`` and of every sub-command's ``--help`` (whole process)."""
    from cream_pl.core.names import SUBCOMMAND_NAMES

    out = {}
    for name in ("", *SUBCOMMAND_NAMES):
        cmd = [*_cli(), *([name] if name else []), "--help"]
        times = sorted(_timed(cmd)[0] for _ in range(repeats))
        out[f"cream-pl {name} --help".replace("  ", " ")] = times[len(times) // 2]
    return out


def reference_commit(ref: Path) -> str:
    """``git rev-parse HEAD`` of the reference checkout (``"unknown"`` if it is not a git checkout)."""
    proc = subprocess.run(["git", "-C", str(ref), "rev-parse", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


def bench_checkpoint() -> Path | None:
    """``$CREAM_BENCH_CKPT`` (the classifier whose maps the comparison scores) when set, else ``None``.

    Raises:
        UserFileNotFoundError: it is set but names no file (one line, before any measurement).
    """
    from cream_pl.core.errors import UserFileNotFoundError

    env = os.environ.get("CREAM_BENCH_CKPT")
    if not env:
        return None
    path = Path(env).expanduser()
    if not path.is_file():
        what = "a folder, not a checkpoint file" if path.is_dir() else "no such file"
        raise UserFileNotFoundError(f"CREAM_BENCH_CKPT={env}: {what} (a cream-pl checkpoint; unset it to use make "
                                    "demo's or a 1-epoch fit)")
    return path


def _find_checkpoint(work: Path, data: Path) -> tuple[Path, str]:
    env = bench_checkpoint()
    if env is not None:
        return env, f"$CREAM_BENCH_CKPT ({os.environ['CREAM_BENCH_CKPT']})"
    from cream_pl.pipelines.run_fits import MODEL_FILE

    demo = REPO_ROOT / "outputs" / "demo" / MODEL_FILE
    if demo.is_file():
        return demo, f"make demo's classifier (outputs/demo/{MODEL_FILE})"
    ckpt = work / "fit" / "outputs" / "embedded_cream" / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        print("[bench] training a 1-epoch classifier for the real maps ...", flush=True)
        (work / "fit").mkdir(parents=True, exist_ok=True)
        _timed([*_cli(), "fit", "--config", str(REPO_ROOT / "experiments" / "embedded_cream.yaml"),
                "--data.init_args.data_root", str(data), "--trainer.max_epochs", "1"], cwd=work / "fit")
    return ckpt, "experiments/embedded_cream.yaml trained 1 epoch by the bench"


def prepare_real_maps(work: Path | str = REPO_ROOT / "outputs" / "bench", num_test: int = NUM_TEST) -> dict[str, Any]:
    """The dataset, checkpoint and exported CAM / CREAM maps the comparison runs on (cached in ``work``)."""
    from cream_pl.data.synth import SynthConfig, generate_synthetic_dataset

    work = Path(work).resolve()
    data = work / f"synth_test{num_test}"
    if not (data / "metadata" / "test" / "image_ids.txt").is_file():
        print(f"[bench] writing the embedded benchmark with {num_test} test images ...", flush=True)
        generate_synthetic_dataset(data, 0, config=SynthConfig(num_test=num_test), overwrite=True)
    ckpt, ckpt_source = _find_checkpoint(work, data)
    maps = work / "maps"
    manifest = maps / "scoremaps.json"
    fresh = manifest.is_file() and json.loads(manifest.read_text()).get("checkpoint") in (str(ckpt), str(Path(ckpt).resolve())) and \
        json.loads(manifest.read_text()).get("num_images") == num_test
    if not fresh:
        print("[bench] exporting CAM and CREAM maps with cream-pl export-scoremaps ...", flush=True)
        shutil.rmtree(maps, ignore_errors=True)
        _timed([*_cli(), "export-scoremaps", "--ckpt", str(ckpt), "--data", str(data), "--split", "test",
                "--methods", "cam,cream", "--out", str(maps)])
    # a mask-only view of the same split, so that both tools compute PxAP alone
    mask_split = work / "mask_split" / "test"
    mask_split.mkdir(parents=True, exist_ok=True)
    src = data / "metadata" / "test"
    for name in ("image_ids.txt", "class_labels.txt", "image_sizes.txt"):
        shutil.copyfile(src / name, mask_split / name)
    shutil.copyfile(src / "localization_masks.txt", mask_split / "localization.txt")
    return {"data": data, "metadata": src, "mask_metadata": mask_split, "masks": data / "masks", "maps": maps,
            "checkpoint": ckpt, "checkpoint_source": ckpt_source, "num_images": num_test}


def run_reference(ref: Path, metadata: Path, scoremaps: Path, kind: str = "box", mask_root: Path | None = None,
                  interval: float = 0.001) -> tuple[float, Any]:
    """Wall time of a fresh interpreter running the reference's evaluator, and what ``compute()`` returned."""
    cmd = [sys.executable, "-c", _REFERENCE_DRIVER, str(ref), str(metadata), f"{scoremaps}{os.sep}", kind,
           str(mask_root or ""), str(interval)]
    elapsed, stdout = _timed(cmd, name=f"wsolevaluation's evaluation.py ({kind}, {ref})")
    line = [x for x in stdout.splitlines() if x.startswith("RESULT ")][-1]
    return elapsed, json.loads(line[len("RESULT "):])


def run_cream_evaluate(metadata: Path, scoremaps: Path, out: Path, interval: float = 0.001,
                       extra: Sequence[str] = ()) -> tuple[float, dict[str, Any]]:
    """Wall time of a fresh ``cream-pl evaluate`` process, and its JSON result."""
    cmd = [*_cli(), "evaluate", "--metadata", str(metadata), "--scoremaps", str(scoremaps), "--interval",
           str(interval), "--out", str(out), *extra]
    elapsed, _ = _timed(cmd)
    return elapsed, json.loads(out.read_text())


def _median_run(fn: Any, repeats: int) -> tuple[float, Any]:
    runs = [fn() for _ in range(repeats)]
    times = sorted(r[0] for r in runs)
    return times[len(times) // 2], runs[-1][1]


REFERENCE_FILES = ("evaluation.py", "data_loaders.py", "config.py", "util.py")
"""The files of a wsolevaluation checkout that its ``evaluation.py`` and the driver import."""


def check_reference_checkout(ref: Path | str, what: str = "WSOLEVAL_REF") -> Path:
    """``ref`` resolved, when it is a wsolevaluation checkout; else one line, before any measurement.

    Raises:
        UserFileNotFoundError: ``ref`` is not a folder.
        UserValueError: it lacks a file of :data:`REFERENCE_FILES`.
    """
    from cream_pl.core.errors import UserFileNotFoundError, UserValueError

    path = Path(ref).expanduser().resolve()
    howto = "git clone https://github.com/clovaai/wsolevaluation"
    if not path.is_dir():
        raise UserFileNotFoundError(f"{what}={ref}: not a folder ({howto})")
    missing = [f for f in REFERENCE_FILES if not (path / f).is_file()]
    if missing:
        raise UserValueError(f"{what}={ref}: not a wsolevaluation checkout (no {', '.join(missing)} there; {howto})")
    return path


def check_bench_inputs(ref: Path | str, ref_option: str, work: Path | str, work_option: str) -> Path:
    """The checks of :func:`bench_against_reference`'s inputs, before any measurement: the checkout (named
    ``ref_option``), the work folder (named ``work_option``) and ``$CREAM_BENCH_CKPT``; returns the checkout resolved.

    Raises:
        UserError: the first problem, one line.
    """
    from cream_pl.core.io import check_output_dir

    path = check_reference_checkout(ref, ref_option)
    check_output_dir(work, work_option)
    bench_checkpoint()
    return path


def bench_against_reference(ref: Path | str, work: Path | str = REPO_ROOT / "outputs" / "bench",
                            repeats: int = 3, method: str = "cream", work_option: str = "--work") -> dict[str, Any]:
    """Box (MaxBoxAccV2, interval 0.001, all contours) and PxAP: the reference vs ``cream-pl evaluate``.

    The reference runs once per metric; ``cream-pl evaluate`` runs once untimed (warm page cache and
    numba's on-disk kernel cache, as for any later run) and then ``repeats`` times, median kept.
    ``work_option`` names ``work`` in the message when it cannot be a folder.
    """
    ref, work = check_bench_inputs(ref, "WSOLEVAL_REF", work, work_option), Path(work).resolve()
    real = prepare_real_maps(work)
    maps = Path(real["maps"]) / method
    tmp = Path(work) / "scores"
    tmp.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {
        "reference_commit": reference_commit(ref),
        "maps": f"{real['num_images']} {method.upper()} maps (224x224 float64 .npy, `cream-pl export-scoremaps`) of "
                f"the embedded benchmark's test split (`cream-pl data synth --seed 0 --num-test {real['num_images']}`),"
                f" EfficientNet-Lite0 from {real['checkpoint_source']}",
        "num_images": real["num_images"],
        "interval": 0.001,
        "cpu_count": os.cpu_count(),
    }
    # boxes: MaxBoxAccV2 settings (all contours, IoU 30/50/70)
    run_cream_evaluate(real["metadata"], maps, tmp / "warmup.json")
    print("[bench] wsolevaluation BoxEvaluator on the real maps ...", flush=True)
    t_ref, ref_acc = run_reference(ref, real["metadata"], maps, "box")
    variants = {"default": (), "v2_only": ("--no-v1",)}
    box: dict[str, Any] = {"reference_s": t_ref, "reference_max_box_acc_iou": ref_acc}
    for name, extra in variants.items():
        t, out = _median_run(lambda e=extra, n=name: run_cream_evaluate(real["metadata"], maps, tmp / f"{n}.json",
                                                                         extra=e), repeats)
        ours = [out["max_box_acc_iou"][k] for k in ("30", "50", "70")]
        box[name] = {"cream_s": t, "speedup": t_ref / t, "max_box_acc_iou": ours,
                     "identical": all(abs(a - b) <= TOL for a, b in zip(ours, ref_acc))}
    res["box"] = box
    # PxAP on the same maps (mask-only split: both tools compute PxAP alone)
    print("[bench] wsolevaluation MaskEvaluator on the real maps ...", flush=True)
    extra = ("--mask-root", str(real["masks"]))
    run_cream_evaluate(real["mask_metadata"], maps, tmp / "warmup_pxap.json", extra=extra)
    t_ref_px, ref_px = run_reference(ref, real["mask_metadata"], maps, "mask", mask_root=real["masks"])
    t_px, out_px = _median_run(lambda: run_cream_evaluate(real["mask_metadata"], maps, tmp / "pxap.json",
                                                          extra=extra), repeats)
    first = (Path(real["mask_metadata"]) / "localization.txt").read_text().splitlines()[0].split(",")
    floor = pxap_floor(maps / f"{first[0]}.npy", Path(real["masks"]) / first[1], repeats)
    res["pxap"] = {"reference_s": t_ref_px, "cream_s": t_px, "speedup": t_ref_px / t_px, "reference": ref_px,
                   "cream": out_px["pxap"], "identical": abs(out_px["pxap"] - ref_px) <= TOL,
                   "floor_s": floor, "max_speedup_at_floor": t_ref_px / floor}
    return res


def main(argv: Sequence[str] | None = None) -> int:
    from cream_pl.pipelines.entry import pipeline_main

    return pipeline_main("python -m cream_pl.pipelines.bench_reference")(_main)(argv)


def _main(argv: Sequence[str] | None = None) -> int:
    from cream_pl.core.options import OneLineArgumentParser, positive_int

    parser = OneLineArgumentParser(prog="python -m cream_pl.pipelines.bench_reference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", default=None, help="wsolevaluation checkout (default: $WSOLEVAL_REF)")
    parser.add_argument("--work", default=str(REPO_ROOT / "outputs" / "bench"))
    parser.add_argument("--repeats", type=positive_int, default=3)
    args = parser.parse_args(argv)
    ref = args.ref or os.environ.get("WSOLEVAL_REF")
    if not ref:
        parser.error("set WSOLEVAL_REF or --ref (git clone https://github.com/clovaai/wsolevaluation)")
    check_bench_inputs(ref, "--ref" if args.ref else "WSOLEVAL_REF", args.work, "--work")  # before any measurement
    print(json.dumps({"startup": startup_times(), **bench_against_reference(ref, args.work, args.repeats)},
                     indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
