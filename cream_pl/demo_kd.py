"""``make demo-kd``: CAM, CREAM, CI-CAM, KD-CI-CAM and CI-CAM + CREAM on the confounded embedded benchmark.

The synthetic benchmark (:mod:`cream_pl.data.synth`) is generated with class-correlated
backgrounds: in the train split each class sits on "its" background photograph 80 % of the time,
in val and test never (``confounded_eval="unusual"``). Every model is trained by its
``experiments/embedded_confounded_*.yaml`` recipe (through Lightning's CLI machinery, with only
the paths, and for ``--fast`` the epochs, overridden), then evaluated on the test split with the
project's metrics (MaxBoxAccV2, GT-known / Top-1 Loc at the val split's τ, classification accuracy):

==================  ================================  ==========================================
row                 recipe                            map
==================  ================================  ==========================================
CAM                 ``embedded_confounded_cream``     ``cam`` of the plain classifier
CREAM               ``embedded_confounded_cream``     ``cream`` of the same network
CI-CAM              ``embedded_confounded_ci_cam``    ``cam`` of the intervened (down) branch
CI-CAM + CREAM      ``embedded_confounded_ci_cam``    ``cream`` on the intervened features
KD-CI-CAM           ``embedded_confounded_kd_ci_cam`` ``cam`` of the student's down branch
==================  ================================  ==========================================

plus the two teachers (``..._ci_cam_cls_teacher``, ``..._ci_cam_loc_teacher``) and the student's
CREAM map, for context. Results: ``<out>/metrics.json`` and ``<out>/README.md`` (table + a
paragraph computed from the numbers). Every stage is resumable: the dataset, each run's
checkpoint (``<work>/runs/<run>/model.ckpt``) and each run's test result (``result.json``) are
written atomically and skipped when present.

Example:
    $ python -m cream_pl.demo_kd --out results/embedded_confounded          # about 10 min on 2 CPU cores
    $ python -m cream_pl.demo_kd --out /tmp/kd_smoke --fast                 # pipeline smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["RUNS", "ROWS", "DemoSettings", "Run", "compare_rows", "main", "run_demo", "select_teachers", "summarize", "train_and_test"]


@dataclass(frozen=True)
class Run:
    """One training run: its name (folder under ``<work>/runs``) and recipe stem.

    ``ci_cam``: the recipe's model is a CI-CAM (it gets ``DemoSettings.ci_cam_overrides``).
    ``teachers``: for a KD-CI-CAM student, the names of the runs whose checkpoints are its
    ``(cls, loc)`` teachers.
    """

    name: str
    recipe: str
    ci_cam: bool = True
    teachers: tuple[str, str] | None = None


RUNS: tuple[Run, ...] = (
    Run("cream", "embedded_confounded_cream", ci_cam=False),
    Run("ci_cam", "embedded_confounded_ci_cam"),
    Run("ci_cam_cls_teacher", "embedded_confounded_ci_cam_cls_teacher"),
    Run("ci_cam_loc_teacher", "embedded_confounded_ci_cam_loc_teacher"),
    Run("kd_ci_cam", "embedded_confounded_kd_ci_cam", teachers=("ci_cam_cls_teacher", "ci_cam_loc_teacher")),
)
"""Training order (the student needs both teachers)."""

ROWS: tuple[tuple[str, str, str, str], ...] = (
    # (key in metrics.json, display name, run, evaluated method of that run)
    ("cam", "CAM", "cream", "cam"),
    ("cream", "CREAM", "cream", "cream"),
    ("ci_cam", "CI-CAM", "ci_cam", "cam"),
    ("kd_ci_cam", "KD-CI-CAM", "kd_ci_cam", "cam"),
    ("ci_cam_cream", "CI-CAM + CREAM", "ci_cam", "cream"),
    ("kd_ci_cam_cream", "KD-CI-CAM + CREAM (extra)", "kd_ci_cam", "cream"),
    ("ci_cam_cls_teacher", "CI-CAM cls teacher (extra)", "ci_cam_cls_teacher", "cam"),
    ("ci_cam_loc_teacher", "CI-CAM loc teacher (extra)", "ci_cam_loc_teacher", "cam"),
)
"""Result rows; the first five are the comparison the issue asks for."""

MAIN_ROWS = ("cam", "cream", "ci_cam", "kd_ci_cam", "ci_cam_cream")
FITTED_TRAIN_ACC = 80.0
"""Last-epoch training accuracy (percent) from which a model counts as having fit its training set."""
COLUMNS: tuple[tuple[str, str], ...] = (
    ("max_box_acc_v2", "MaxBoxAccV2"),
    ("gt_known", "GT-known Loc"),
    ("top1_loc", "Top-1 Loc"),
    ("cls_acc", "Top-1 Cls"),
)


@dataclass(frozen=True)
class DemoSettings:
    """Benchmark size and training length of the full demo and of ``--fast``."""

    num_classes: int = 8
    num_train: int = 480
    num_val: int = 80
    num_test: int = 160
    min_side: int = 224
    max_side: int = 320
    usual_background_prob: float = 0.8
    confounded_eval: str = "unusual"
    epoch_scale: float = 1.0  # multiplies every recipe's max_epochs (rounded, at least 1)
    overrides: tuple[tuple[str, Any], ...] = ()  # extra (dotted key, value) recipe overrides for every run
    ci_cam_overrides: tuple[tuple[str, Any], ...] = ()  # the same for the CI-CAM runs (teachers, student included)

    @classmethod
    def fast(cls) -> DemoSettings:
        """Smoke-test size: tiny images and splits, one epoch, batch 16, a coarse CAM-threshold curve."""
        return cls(num_train=48, num_val=16, num_test=16, min_side=96, max_side=128, epoch_scale=0.0,
                   overrides=(("data.init_args.batch_size", 16), ("model.init_args.cam_curve_interval", 0.01)))


# ---------------------------------------------------------------------------------------------- helpers
def _log(msg: str) -> None:
    print(f"[demo-kd] {msg}", flush=True)


def default_recipe_dir() -> Path:
    """``experiments/`` of the source checkout this module lives in."""
    return Path(__file__).resolve().parents[1] / "experiments"


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _copy_atomic(src: Path, dst: Path) -> None:
    from cream_pl.io import atomic_copy_file

    atomic_copy_file(src, dst)  # umask honoured (mkstemp alone makes 0600)


def _recipe_epochs(recipe: Path) -> int:
    import yaml

    cfg = yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}
    epochs = (cfg.get("trainer") or {}).get("max_epochs")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"{recipe}: trainer.max_epochs must be a positive integer, got {epochs!r}")
    return epochs


def ensure_dataset(root: Path, settings: DemoSettings, seed: int) -> Path:
    """Generate the confounded synthetic benchmark at ``root`` unless the same one is already there."""
    from cream_pl.data.synth import generate_synthetic_dataset

    wanted = {
        "num_classes": settings.num_classes, "num_train": settings.num_train, "num_val": settings.num_val,
        "num_test": settings.num_test, "min_side": settings.min_side, "max_side": settings.max_side, "confounded": True, "usual_background_prob": settings.usual_background_prob,
        "confounded_eval": settings.confounded_eval,
    }
    info_path = root / "synth_config.json"  # written last by the generator: marks a complete dataset
    if info_path.is_file():
        info = _read_json(info_path)
        if info.get("seed") == seed and all(info["config"].get(k) == v for k, v in wanted.items()):
            _log(f"dataset {root} exists, reusing it")
            return root
        _log(f"dataset {root} has another configuration, regenerating it")
    start = time.perf_counter()
    _log(f"generating the confounded synthetic benchmark in {root} ...")
    generate_synthetic_dataset(root, seed=seed, overwrite=True, **wanted)
    seconds = time.perf_counter() - start
    from cream_pl.report import write_json_atomic

    write_json_atomic({"seconds": seconds}, root.parent / "data_timing.json")
    _log(f"dataset ready ({seconds:.0f} s)")
    return root


def _data_seconds(work: Path) -> float | None:
    path = work / "data_timing.json"
    return float(_read_json(path)["seconds"]) if path.is_file() else None


def _eval_results(model: Any, stage: str = "test") -> dict[str, Any]:
    res = model.last_results.get(stage)
    if not res:
        raise RuntimeError(f"the {stage} run produced no results (model.last_results[{stage!r}] is empty)")
    out: dict[str, Any] = {"cls_acc": res.get("cls_acc"), "top5_cls_acc": res.get("top5_cls_acc"), "methods": {}}
    for name, metrics in res["methods"].items():
        out["methods"][name] = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    return out


def train_and_test(run: Run, recipe_dir: Path, work: Path, data_root: Path, settings: DemoSettings) -> dict[str, Any]:
    """Fit one recipe (unless its checkpoint exists), test it, write ``result.json``; returns the result."""
    from cream_pl.lightning_cli import build_from_recipe
    from cream_pl.report import write_json_atomic

    run_dir = work / "runs" / run.name
    result_path, ckpt_path = run_dir / "result.json", run_dir / "model.ckpt"
    if result_path.is_file():
        _log(f"{run.name}: result exists, skipping ({result_path})")
        result = _read_json(result_path)
        result["train_acc_last_epoch"] = last_train_accuracy(run_dir)
        return result
    recipe = recipe_dir / f"{run.recipe}.yaml"
    if not recipe.is_file():
        raise FileNotFoundError(f"recipe {recipe} not found; pass --recipes DIR (the experiments/ folder of cream-pl)")
    epochs = _recipe_epochs(recipe)
    epochs = max(1, round(epochs * settings.epoch_scale))
    overrides: dict[str, Any] = {
        "data.init_args.data_root": str(data_root),
        "trainer.default_root_dir": str(run_dir),
        "trainer.max_epochs": epochs,
        "trainer.check_val_every_n_epoch": epochs,
        "trainer.logger.init_args.save_dir": str(run_dir),
        "trainer.callbacks.0.init_args.dirpath": str(run_dir / "checkpoints"),
        **dict(settings.overrides),
        **(dict(settings.ci_cam_overrides) if run.ci_cam else {}),
    }
    if run.teachers is not None:
        for role, teacher in zip(("cls", "loc"), run.teachers):
            overrides[f"model.init_args.{role}_teacher_ckpt"] = str(work / "runs" / teacher / "model.ckpt")
    cli = build_from_recipe(recipe, overrides, run_dir)
    model, trainer, dm = cli.model, cli.trainer, cli.datamodule
    timing: dict[str, float] = {}
    if ckpt_path.is_file():
        _log(f"{run.name}: checkpoint exists, testing it ({ckpt_path})")
        model = type(model).load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=False, pretrained=False)
        timing["fit_seconds"] = float("nan")
    else:
        _log(f"{run.name}: training {epochs} epoch(s) with {recipe}")
        start = time.perf_counter()
        trainer.fit(model, datamodule=dm)
        timing["fit_seconds"] = time.perf_counter() - start
        tmp = run_dir / ".model.ckpt.tmp"
        trainer.save_checkpoint(tmp)  # final weights, pool, embeddings and the val split's τ
        os.replace(tmp, ckpt_path)
    if "val" not in model.last_results:  # a reloaded checkpoint: val gives τ for GT-known and the val row
        trainer.validate(model, datamodule=dm, verbose=False)
    start = time.perf_counter()
    trainer.test(model, datamodule=dm, verbose=False)
    timing["test_seconds"] = time.perf_counter() - start
    result = {"run": run.name, "recipe": str(recipe), "epochs": epochs, "checkpoint": str(ckpt_path),
              "cam_curve_interval": float(model.hparams.cam_curve_interval),
              **timing, **_eval_results(model), "val": _eval_results(model, "val")}
    if run.teachers is not None:
        result["teachers"] = dict(zip(("cls", "loc"), run.teachers))
        hp = model.hparams
        result["kd"] = {k: hp[k] for k in ("kd_alpha", "kd_temperature_cls", "kd_temperature_loc", "kd_variant",
                                           "kd_routing", "kd_loc_weight")}
    write_json_atomic(result, result_path)
    _log(f"{run.name}: done, {_short(result)}")
    result["train_acc_last_epoch"] = last_train_accuracy(run_dir)
    return result


def select_teachers(results: dict[str, dict[str, Any]], candidates: Sequence[str], method: str = "cam") -> tuple[str, str]:
    """KD-CI-CAM's choice of teachers among trained CI-CAM runs, made on the val split.

    The official code takes the CI-CAM with the best Top-1 Cls as the cls teacher and the one with
    the best GT-known Loc as the loc teacher (spec ``kd_ci_cam.md`` §3.2); here both are read from
    each run's val results (``result["val"]``), never from test. Ties go to the earlier candidate;
    one run may hold both roles.

    Args:
        results: ``{run name: train_and_test result}``.
        candidates: the run names to choose from.
        method: the evaluated map whose GT-known Loc ranks the loc teacher.

    Returns:
        ``(cls teacher run, loc teacher run)``.

    Raises:
        ValueError: no candidate, or a candidate without val results (a ``result.json`` written by
            an older cream-pl: delete it to re-test that run).

    Example:
        >>> runs = {"a": {"val": {"cls_acc": 60.0, "methods": {"cam": {"gt_known": 30.0}}}},
        ...         "b": {"val": {"cls_acc": 70.0, "methods": {"cam": {"gt_known": 20.0}}}}}
        >>> select_teachers(runs, ["a", "b"])
        ('b', 'a')
    """
    if not candidates:
        raise ValueError("select_teachers needs at least one candidate run")
    vals = {}
    for name in candidates:
        val = results.get(name, {}).get("val")
        if not val or method not in val.get("methods", {}):
            raise ValueError(f"run {name!r} has no val results for method {method!r}; delete its result.json "
                             "to test it again")
        vals[name] = val
    cls = max(candidates, key=lambda n: (vals[n]["cls_acc"], -candidates.index(n)))
    loc = max(candidates, key=lambda n: (vals[n]["methods"][method]["gt_known"], -candidates.index(n)))
    return cls, loc


def last_train_accuracy(run_dir: Path) -> float | None:
    """Last epoch's ``train/acc`` (percent) from the newest CSV log of a run, or ``None``.

    Training crops, 80 % of them on the class's usual background: compared with the test accuracy
    (never the usual background) it shows how much a model leans on the background.
    """
    import csv

    logs = sorted((run_dir / "logs").glob("version_*/metrics.csv"), key=lambda p: p.stat().st_mtime, reverse=True)
    for log in logs:  # newest log that has training rows (a test-only re-run logs none)
        value = None
        with log.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if row.get("train/acc"):
                    value = 100.0 * float(row["train/acc"])
        if value is not None:
            return value
    return None


def _short(result: dict[str, Any]) -> str:
    cam = result["methods"].get("cam", {})
    return (f"cls {result.get('cls_acc', float('nan')):.1f}, CAM MaxBoxAccV2 {cam.get('max_box_acc_v2', float('nan')):.1f}, "
            f"GT-known {cam.get('gt_known', float('nan')):.1f}")


def collect_rows(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{row key: {max_box_acc_v2, gt_known, top1_loc, cls_acc, ...}}`` from the per-run results."""
    rows: dict[str, dict[str, Any]] = {}
    for key, display, run, method in ROWS:
        if run not in results:
            continue
        m = results[run]["methods"][method]
        rows[key] = {
            "display_name": display,
            "run": run,
            "method": method,
            "max_box_acc_v2": m.get("max_box_acc_v2"),
            "max_box_acc_iou30": m.get("max_box_acc_iou30"),
            "max_box_acc_iou50": m.get("max_box_acc_iou50"),
            "max_box_acc_iou70": m.get("max_box_acc_iou70"),
            "gt_known": m.get("gt_known"),
            "top1_loc": m.get("top1_loc"),
            "top5_loc": m.get("top5_loc"),
            "pxap": m.get("pxap"),
            "loc_threshold": m.get("loc_threshold"),
            "loc_threshold_source": m.get("loc_threshold_source"),
            "cls_acc": results[run].get("cls_acc"),
            "train_acc_last_epoch": results[run].get("train_acc_last_epoch"),
        }
    return rows


# ---------------------------------------------------------------------------------------------- summary
def accuracy_noise(n: int, p: float) -> float:
    """Two binomial standard errors (percentage points) of an accuracy ``p`` (percent) on ``n`` images."""
    q = min(max(p / 100.0, 0.0), 1.0)
    return 200.0 * math.sqrt(max(q * (1 - q), 0.25 / n) / n)


def compare_rows(rows: dict[str, dict[str, Any]], a: str, b: str, metric: str, n: int, label: str) -> str | None:
    """``"A vs B, label: a vs b (diff, verdict; ±noise ...)"`` for rows with a ``display_name``; ``None`` if missing."""
    if a not in rows or b not in rows:
        return None
    va, vb = rows[a].get(metric), rows[b].get(metric)
    if va is None or vb is None:
        return None
    diff, noise = va - vb, accuracy_noise(n, (va + vb) / 2)
    if abs(diff) < noise:
        verdict = "within the noise of this test set"
    else:
        verdict = "a gain" if diff > 0 else "a loss"
    return (f"{rows[a]['display_name']} vs {rows[b]['display_name']}, {label}: {va:.1f} vs {vb:.1f} "
            f"({diff:+.1f} points, {verdict}; ±{noise:.1f} is two binomial standard errors here)")


def summarize(rows: dict[str, dict[str, Any]], num_test: int, fast: bool) -> list[str]:
    """Sentences that state what the numbers show, computed from them (no fixed claims)."""
    out: list[str] = []
    if fast:
        out.append("This is a --fast smoke run (tiny data, one epoch per model): the numbers only show that the "
                   "pipeline runs and must not be read as a comparison.")
    pairs = [
        ("cream", "cam", "max_box_acc_v2", "MaxBoxAccV2"),
        ("ci_cam", "cam", "max_box_acc_v2", "MaxBoxAccV2"),
        ("ci_cam", "cam", "cls_acc", "Top-1 Cls"),
        ("ci_cam_cream", "ci_cam", "max_box_acc_v2", "MaxBoxAccV2"),
        ("ci_cam_cream", "cream", "max_box_acc_v2", "MaxBoxAccV2"),
        ("kd_ci_cam", "ci_cam", "max_box_acc_v2", "MaxBoxAccV2"),
        ("kd_ci_cam", "ci_cam", "gt_known", "GT-known Loc"),
        ("kd_ci_cam", "ci_cam", "cls_acc", "Top-1 Cls"),
    ]
    for a, b, metric, label in pairs:
        s = compare_rows(rows, a, b, metric, num_test, label)
        if s:
            out.append(s + ".")
    present = [k for k in MAIN_ROWS if k in rows and rows[k].get("max_box_acc_v2") is not None]
    if present:
        best = max(present, key=lambda k: rows[k]["max_box_acc_v2"])
        worst = min(present, key=lambda k: rows[k]["max_box_acc_v2"])
        spread = rows[best]["max_box_acc_v2"] - rows[worst]["max_box_acc_v2"]
        out.append(f"Best MaxBoxAccV2 among the five compared rows: {rows[best]['display_name']} "
                   f"({rows[best]['max_box_acc_v2']:.1f}); worst: {rows[worst]['display_name']} "
                   f"({rows[worst]['max_box_acc_v2']:.1f}); spread {spread:.1f} points.")
    gaps = {k: (rows[k]["train_acc_last_epoch"], rows[k]["cls_acc"]) for k in ("cam", "ci_cam", "kd_ci_cam",
            "ci_cam_cls_teacher", "ci_cam_loc_teacher") if k in rows
            and rows[k].get("train_acc_last_epoch") is not None and rows[k].get("cls_acc") is not None}
    if gaps:
        parts = ", ".join(f"{rows[k]['display_name'].replace(' (extra)', '')} {tr:.0f} → {te:.0f}"
                          for k, (tr, te) in gaps.items())
        fitted = {k: v for k, v in gaps.items() if v[0] >= FITTED_TRAIN_ACC}
        sentence = ("Background shortcut, classification accuracy on the last training epoch (80 % of the images on "
                    f"the class's usual background) → on test (never on it): {parts}. A large drop means the "
                    "classifier relies on the class-correlated background rather than on the object")
        if fitted:
            best = min(fitted, key=lambda k: fitted[k][0] - fitted[k][1])
            sentence += (f"; among the models that fit their training set (≥ {FITTED_TRAIN_ACC:.0f} %), the smallest "
                         f"drop is {rows[best]['display_name'].replace(' (extra)', '')}'s "
                         f"({fitted[best][0] - fitted[best][1]:.0f} points)")
        underfit = [rows[k]["display_name"].replace(" (extra)", "") for k in gaps if k not in fitted]
        if underfit:
            sentence += (f"; {', '.join(underfit)} did not fit its training set (< {FITTED_TRAIN_ACC:.0f} % on the "
                         "last epoch), so its smaller drop reflects under-fitting within this budget, not robustness")
        out.append(sentence + ".")
    t_cls, t_loc = rows.get("ci_cam_cls_teacher"), rows.get("ci_cam_loc_teacher")
    if t_cls and t_loc and None not in (t_cls["cls_acc"], t_loc["cls_acc"], t_cls["gt_known"], t_loc["gt_known"]):
        roles_hold = t_cls["cls_acc"] >= t_loc["cls_acc"] and t_loc["gt_known"] >= t_cls["gt_known"]
        out.append(
            f"Teachers: cls teacher Top-1 Cls {t_cls['cls_acc']:.1f} / GT-known {t_cls['gt_known']:.1f}, loc teacher "
            f"Top-1 Cls {t_loc['cls_acc']:.1f} / GT-known {t_loc['gt_known']:.1f}; "
            + ("their recipes did produce the intended specialisation (better classifier vs better localiser)."
               if roles_hold else
               "their recipes did NOT produce the intended specialisation on this run (the 'cls' teacher does not "
               "classify better and/or the 'loc' teacher does not localise better), so the student learns from "
               "teachers whose roles are nominal.")
        )
        kd = rows.get("kd_ci_cam")
        if kd and kd.get("gt_known") is not None:
            beats = kd["gt_known"] > max(t_cls["gt_known"], t_loc["gt_known"])
            out.append(f"The student's GT-known ({kd['gt_known']:.1f}) is "
                       + ("above both teachers'." if beats else "not above both teachers'."))
    out.append(
        f"Caveats: one seed, a few CPU epochs on {num_test} synthetic test images whose backgrounds are never the "
        "class's usual training background; differences inside the noise band say nothing, and none of these "
        "numbers predicts the CUB/ILSVRC results of the papers."
    )
    return out


def render_markdown(rows: dict[str, dict[str, Any]], summary: Sequence[str], meta: dict[str, Any]) -> str:
    """README of the results folder: table, protocol footnotes, what the numbers show, how they were made."""
    from cream_pl.report import metrics_table_markdown

    table_rows = {r["display_name"]: r for r in rows.values()}
    step = meta.get("cam_curve_interval", 0.001)
    notes = {
        "max_box_acc_v2": "mean over IoU δ ∈ {30, 50, 70} of the best-threshold box accuracy (each δ picks its own τ), "
                          f"all contours, thresholds np.arange(0, 1, {step:g}), 224×224 squash-resized test images",
        "gt_known": "box accuracy at IoU ≥ 0.5 of the largest contour of the GT-class map at one threshold τ, the one "
                    "that maximised IoU-50 box accuracy on the val split (not searched on test)",
        "top1_loc": "GT-known Loc that also requires the top-1 predicted class to be correct",
        "cls_acc": "top-1 classification accuracy on the test split (down branch for CI-CAM models)",
    }
    table = metrics_table_markdown(table_rows, list(COLUMNS), protocol_notes=notes)
    lines = [
        "# KD-CI-CAM on the confounded embedded benchmark",
        "",
        f"Produced by `make demo-kd` (`python -m cream_pl.demo_kd`{' --fast' if meta['fast'] else ''}) on "
        f"{meta['machine']}: {meta['stage_seconds'] / 60:.1f} min of measured stage time (dataset, every fit and "
        f"test, wall-clock, each timed when it ran; other jobs on the machine slow it down). "
        f"Test split: {meta['num_test']} images, "
        f"{meta['num_classes']} classes; train backgrounds are class-correlated (usual background with probability "
        f"{meta['usual_background_prob']}), test backgrounds are never the class's usual one "
        f"(`confounded_eval={meta['confounded_eval']}`).",
        "",
        table,
        "",
        "Rows marked *(extra)* are shown for context. CI-CAM rows use the intervened (down) branch with the standard "
        "ground-truth-class CAM (`cam_source: down_top1`), so every row is scored by the same protocol. τ for GT-known "
        "and Top-1 Loc is the threshold that maximised IoU-50 box accuracy on the val split.",
        "",
        "## What the numbers show",
        "",
        *[f"- {s}" for s in summary],
        "",
        "## How they were made",
        "",
        *[f"- `{r['name']}`: `{r['recipe']}`, {r['epochs']} epoch(s), fit {r['fit']}, test {r['test']}"
          for r in meta["runs"]],
        "",
        "Raw numbers (all IoU levels, PxAP, thresholds, timings): `metrics.json`.",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- main
def run_demo(out: Path, work: Path, recipe_dir: Path, settings: DemoSettings, seed: int = 0, fast: bool = False) -> dict[str, Any]:
    """Run every stage (skipping finished ones) and write ``metrics.json`` and ``README.md`` to ``out``."""
    import platform

    import torch

    from cream_pl.report import write_json_atomic, write_markdown_atomic

    start = time.perf_counter()
    data_root = ensure_dataset(work / "data", settings, seed)
    results = {run.name: train_and_test(run, recipe_dir, work, data_root, settings) for run in RUNS}
    rows = collect_rows(results)
    summary = summarize(rows, settings.num_test, fast)
    total = time.perf_counter() - start

    def _fmt(sec: Any) -> str:
        return "skipped (checkpoint reused)" if sec is None or not math.isfinite(sec) else f"{sec:.0f} s"

    meta = {
        "fast": fast, "seed": seed, "wall_seconds_this_invocation": total,
        "stage_seconds": (_data_seconds(work) or 0.0) + sum(
            r.get(k) or 0.0 for r in results.values() for k in ("fit_seconds", "test_seconds")
            if r.get(k) is not None and math.isfinite(r[k])),
        "data_seconds": _data_seconds(work),
        "cam_curve_interval": next(iter(results.values()))["cam_curve_interval"],
        **{k: v for k, v in asdict(settings).items() if k not in ("overrides", "ci_cam_overrides")},
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__} "
                   f"({torch.get_num_threads()} threads)",
        "runs": [{"name": r["run"], "recipe": os.path.relpath(r["recipe"], recipe_dir.parent), "epochs": r["epochs"],
                  "fit": _fmt(r.get("fit_seconds")), "test": _fmt(r.get("test_seconds"))} for r in results.values()],
    }
    payload = {
        "benchmark": {"generator": "cream_pl.data.synth", "confounded": True, "seed": seed,
                      **{k: v for k, v in asdict(settings).items() if k not in ("epoch_scale", "overrides", "ci_cam_overrides")}},
        "protocol": {
            "max_box_acc_v2": "mean over IoU {30,50,70} of the best-threshold box accuracy, all contours, 224x224 squash, "
                              f"thresholds every {meta['cam_curve_interval']:g}",
            "gt_known": "IoU >= 0.5, largest contour, GT-class map at the val split's best IoU-50 threshold",
            "top1_loc": "GT-known and top-1 class correct",
            "cls_acc": "top-1 classification accuracy (down branch for CI-CAM models)",
        },
        "methods": rows,
        "main_rows": [k for k in MAIN_ROWS if k in rows],
        "summary": summary,
        "runs": results,
        "meta": meta,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(payload, out / "metrics.json")
    write_markdown_atomic(render_markdown(rows, summary, meta), out / "README.md")
    _log(f"wrote {out / 'metrics.json'} and {out / 'README.md'} (this invocation: {total / 60:.1f} min, "
         f"measured stage time: {meta['stage_seconds'] / 60:.1f} min)")
    return payload


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cream_pl.demo_kd", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/embedded_confounded"), help="results folder")
    parser.add_argument("--work", type=Path, default=None,
                        help="dataset, checkpoints and logs (default outputs/embedded_confounded[_fast])")
    parser.add_argument("--recipes", type=Path, default=None, help="folder of the recipes (default: experiments/)")
    parser.add_argument("--fast", action="store_true", help="tiny data, one epoch per model: a pipeline smoke test")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = DemoSettings.fast() if args.fast else DemoSettings()
    work = args.work or Path("outputs/embedded_confounded" + ("_fast" if args.fast else ""))
    recipe_dir = args.recipes or default_recipe_dir()
    run_demo(args.out, work, recipe_dir, settings, seed=args.seed, fast=args.fast)
    return 0


if __name__ == "__main__":
    sys.exit(main())
