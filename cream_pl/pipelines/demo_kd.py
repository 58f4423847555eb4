"""``make demo-kd``: KD-CI-CAM's two claims, measured on the confounded CUB-like benchmark.

KD-CI-CAM's abstract claims that (1) CI-CAM's causal intervention removes the object-context
confounder and (2) distilling from two teachers resolves the dilemma that classification and
localisation peak at different points of training. This demo measures both on the CUB-like
preset with class-correlated backgrounds (``cream-pl data synth --preset cub --confounded
--confounded-eval uniform``: each class sits on its usual photograph in 80 % of the train images;
val and test draw the background uniformly, so about one test image in six has its class's usual
background and the rest an unusual one):

==============  ==================================  ===========================================
run             recipe                              rows (its last epoch; CREAM chosen on val)
==============  ==================================  ===========================================
``cream``       ``embedded_confounded_cream``       CAM (``cam``), CREAM (val-selected)
``ci_cam``      ``embedded_confounded_ci_cam``      CI-CAM (``cam``), CI-CAM + CREAM (val-selected)
``ci_cam_rrc``  ``embedded_confounded_ci_cam_rrc``  (teacher candidates only)
``kd_ci_cam``   ``embedded_confounded_kd_ci_cam``   KD-CI-CAM (``cam``)
==============  ==================================  ===========================================

Every run validates after every epoch and keeps that epoch's checkpoint and its val Top-1 Cls and
GT-known (:class:`~cream_pl.callbacks.epoch_checkpoints.EpochCheckpoints`): the dilemma's curves.
The teachers are chosen as the official code chose them, on val: the checkpoint with the best val
Top-1 Cls over every epoch of both CI-CAM runs teaches classification, the one with the best val
GT-known localisation (:func:`select_teachers`). Every row and both teachers are tested with
per-image records, and every stated difference gets a paired bootstrap 95 % interval over the test
images (1000 resamples), on all of them and on the unusual- and usual-background subsets
(:mod:`cream_pl.reporting.evidence`). Results: ``<out>/metrics.json``, ``<out>/README.md`` and
``<out>/dilemma.png`` (:mod:`cream_pl.reporting.demo_kd_report`).

Resumable: the dataset, each run's fit and each tested checkpoint are written atomically and
skipped when present; a run whose inputs (data, recipe text, overrides, teachers, demo version)
changed starts over, and so does a student whose teachers changed.

Example:
    $ python -m cream_pl.pipelines.demo_kd --out results/embedded_confounded          # under 20 min on 2 CPU cores
    $ python -m cream_pl.pipelines.demo_kd --out /tmp/kd_smoke --fast                 # pipeline smoke test
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cream_pl.core.options import OneLineArgumentParser, seed_int
from cream_pl.pipelines.entry import pipeline_main, preflight
from cream_pl.pipelines.run_state import (
    StageTimer,
    callback_index,
    ensure_synthetic_dataset,
    path_free,
    start_over_if_stale,
)
from cream_pl.reporting.demo_kd_report import curve_peak  # re-exported: the teacher rule uses it

__all__ = ["CONFOUNDED", "DemoSettings", "RUNS", "Run", "curve_peak", "main", "run_demo", "select_teachers",
           "usual_background_flags"]

DEMO_VERSION = 3
"""Bumped when a stage's meaning changes: runs of another version start over."""
CONFOUNDED: dict[str, Any] = {"num_train": 480, "body_head_tint": 0.1, "confounded": True, "usual_background_prob": 0.8, "confounded_eval": "uniform"}
"""The confounded variant of the ``cub`` preset (``--confounded --confounded-eval uniform``), at the 480 train
images and the body-head tint 0.1 its study was run and calibrated with (the ``cub`` preset itself moved to 2,400
train images and a re-calibrated tint with the CREAM_reg work)."""
RECORDED = ("cam", "cream_selected")
"""Methods whose per-image test outcomes are kept (``cream_selected`` where the run selected one)."""


@dataclass(frozen=True)
class Run:
    """One training run: folder ``<work>/runs/<name>``, recipe stem, and what its last checkpoint gives.

    ``rows``: ``(row key, method)`` pairs of the results table read from the last epoch's test.
    ``ci_cam``: a CI-CAM model (gets ``DemoSettings.ci_cam_overrides``). ``candidate``: its epochs
    are teacher candidates. ``student``: a KD-CI-CAM student, taught by the selected teachers.
    """

    name: str
    recipe: str
    rows: tuple[tuple[str, str], ...] = ()
    ci_cam: bool = True
    candidate: bool = False
    student: bool = False


RUNS: tuple[Run, ...] = (
    Run("cream", "embedded_confounded_cream", (("cam", "cam"), ("cream_selected", "cream_selected")), ci_cam=False),
    Run("ci_cam", "embedded_confounded_ci_cam", (("ci_cam", "cam"), ("ci_cam_cream_selected", "cream_selected")),
        candidate=True),
    Run("ci_cam_rrc", "embedded_confounded_ci_cam_rrc", candidate=True),
    Run("kd_ci_cam", "embedded_confounded_kd_ci_cam", (("kd_ci_cam", "cam"),), student=True),
)
"""Training order: the student comes last (it needs the teachers chosen from the CI-CAM runs)."""


@dataclass(frozen=True)
class DemoSettings:
    """What the full demo and ``--fast`` change: data size, epochs, recipe overrides, resamples."""

    data: tuple[tuple[str, Any], ...] = ()  # SynthConfig fields replacing the confounded cub variant's
    epochs: int | None = None  # every run's max_epochs (None: each recipe's own)
    overrides: tuple[tuple[str, Any], ...] = ()  # (dotted key, value) for every recipe
    ci_cam_overrides: tuple[tuple[str, Any], ...] = ()  # the same for the CI-CAM runs (student included)
    n_resamples: int = 1000

    @classmethod
    def fast(cls) -> DemoSettings:
        """Smoke-test size: small images and splits, two epochs (a curve), batch 16, a coarse threshold grid."""
        return cls(data=(("num_train", 48), ("num_val", 16), ("num_test", 48), ("min_side", 96), ("max_side", 128)),
                   epochs=2, overrides=(("data.init_args.batch_size", 16), ("model.init_args.cam_curve_interval", 0.01)))


@dataclass
class _Context:
    work: Path
    recipe_dir: Path
    settings: DemoSettings
    data_root: Path
    data_sha1: str
    timing: StageTimer
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)


def _log(msg: str) -> None:
    print(f"[demo-kd] {msg}", flush=True)


def default_recipe_dir() -> Path:
    """``experiments/`` of the source checkout this module lives in."""
    return Path(__file__).resolve().parents[2] / "experiments"


# ---------------------------------------------------------------------------------------------- selection
def select_teachers(curves: Mapping[str, Sequence[Mapping[str, Any]]], candidates: Sequence[str]) -> dict[str, Any]:
    """KD-CI-CAM's teachers among every epoch's checkpoint of the candidate runs, chosen on val.

    The official code takes the checkpoint with the best Top-1 Cls as the cls teacher and the one
    with the best GT-known Loc as the loc teacher (spec ``kd_ci_cam.md`` §3.1-3.2); here both are
    read from the val rows of :class:`~cream_pl.callbacks.epoch_checkpoints.EpochCheckpoints`
    (``val_cls_acc``, ``val_gt_known``), never from test. The candidates are ordered by run (as
    given), then by epoch; a tie goes to the earlier one. One checkpoint may win both roles.

    Returns:
        ``{"cls": {"run", "epoch", "val_cls_acc", "val_gt_known", "checkpoint"}, "loc": {...},
        "same_checkpoint": bool}``.

    Raises:
        ValueError: no candidate run, a run without epochs, or an epoch without a val number.

    Example:
        >>> curves = {"a": [{"epoch": 1, "val_cls_acc": 60.0, "val_gt_known": 40.0},
        ...                 {"epoch": 2, "val_cls_acc": 70.0, "val_gt_known": 30.0}]}
        >>> t = select_teachers(curves, ["a"])
        >>> (t["cls"]["epoch"], t["loc"]["epoch"], t["same_checkpoint"])
        (2, 1, False)
    """
    if not candidates:
        raise ValueError("select_teachers needs at least one candidate run")
    pool: list[tuple[str, Mapping[str, Any]]] = []
    for run in candidates:
        rows = curves.get(run) or []
        if not rows:
            raise ValueError(f"run {run!r} has no per-epoch val rows (EpochCheckpoints record missing or empty)")
        for row in sorted(rows, key=lambda r: r["epoch"]):
            for key in ("val_cls_acc", "val_gt_known"):
                if row.get(key) is None:
                    raise ValueError(f"run {run!r}, epoch {row['epoch']}: no {key} (did the val split have boxes?)")
            pool.append((run, row))

    def pick(key: str) -> dict[str, Any]:
        i = max(range(len(pool)), key=lambda j: (pool[j][1][key], -j))
        run, row = pool[i]
        return {"run": run, "epoch": int(row["epoch"]), "val_cls_acc": float(row["val_cls_acc"]),
                "val_gt_known": float(row["val_gt_known"]), "checkpoint": row.get("checkpoint")}

    cls, loc = pick("val_cls_acc"), pick("val_gt_known")
    return {"cls": cls, "loc": loc, "same_checkpoint": (cls["run"], cls["epoch"]) == (loc["run"], loc["epoch"])}


def usual_background_flags(data_root: Path, image_ids: Sequence[str], split: str = "test") -> np.ndarray:
    """Per image (in ``image_ids``' order, i.e. by record ``index``): on its class's usual background?

    Reads ``metadata/<split>/backgrounds.txt`` (``<image_id>,<photo>,<is_usual 0|1>``) of a
    confounded synthetic dataset.
    """
    path = Path(data_root) / "metadata" / split / "backgrounds.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: demo-kd needs a confounded synthetic dataset "
                                "(cream-pl data synth --confounded)")
    usual: dict[str, bool] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.strip().split(",")
        if len(parts) != 3 or parts[2] not in ("0", "1"):
            raise ValueError(f"{path}:{n}: expected '<image_id>,<photo>,<0|1>', got {line!r}")
        usual[parts[0]] = parts[2] == "1"
    missing = [i for i in image_ids if i not in usual]
    if missing:
        raise ValueError(f"{path}: no background entry for {len(missing)} image(s), e.g. {missing[0]}")
    return np.array([usual[i] for i in image_ids], dtype=bool)


# ---------------------------------------------------------------------------------------------- stages
def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def synth_config(settings: DemoSettings) -> Any:
    """The benchmark's :class:`~cream_pl.data.synth.SynthConfig`: the ``cub`` preset, confounded, with ``settings.data``."""
    from cream_pl.data.synth import PRESETS

    return replace(PRESETS["cub"], **{**CONFOUNDED, **dict(settings.data)})


def ensure_dataset(root: Path, settings: DemoSettings, seed: int) -> bool:
    """Generate the benchmark at ``root`` unless the same one is there; returns whether it was generated."""
    return ensure_synthetic_dataset(root, asdict(synth_config(settings)), seed, log=_log,
                                    what="the confounded CUB-like benchmark")


def _recipe(ctx: _Context, run: Run) -> Path:
    path = ctx.recipe_dir / f"{run.recipe}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"recipe {path} not found; pass --recipes DIR (the experiments/ folder of cream-pl)")
    return path


def _callback_index(recipe: Path, class_name: str) -> int:
    index = callback_index(recipe, class_name)
    if index is None:
        raise ValueError(f"{recipe}: trainer.callbacks has no {class_name}; demo-kd needs its per-epoch checkpoints")
    return index


def _overrides(ctx: _Context, run: Run, teachers: Mapping[str, Any] | None) -> dict[str, Any]:
    recipe, run_dir = _recipe(ctx, run), ctx.work / "runs" / run.name
    epochs = _callback_index(recipe, "EpochCheckpoints")
    out: dict[str, Any] = {
        "data.init_args.data_root": str(ctx.data_root),
        "trainer.default_root_dir": str(run_dir),
        "trainer.logger.init_args.save_dir": str(run_dir),
        "trainer.callbacks.0.init_args.dirpath": str(run_dir / "checkpoints"),
        f"trainer.callbacks.{epochs}.init_args.dirpath": str(run_dir / "epochs"),
        f"trainer.callbacks.{epochs}.init_args.record_path": str(run_dir / "epochs.json"),
        "trainer.check_val_every_n_epoch": 1,
        "trainer.enable_progress_bar": False,
        **({"trainer.max_epochs": ctx.settings.epochs} if ctx.settings.epochs else {}),
        **dict(ctx.settings.overrides),
        **(dict(ctx.settings.ci_cam_overrides) if run.ci_cam else {}),
    }
    if teachers is not None:
        for role in ("cls", "loc"):
            out[f"model.init_args.{role}_teacher_ckpt"] = teachers[role]["checkpoint"]
    return out


def _legacy_inputs(stored: dict[str, Any]) -> dict[str, Any]:
    """A run's ``inputs.json`` of before path-free fingerprints (absolute paths) in today's layout: its data and
    work folders are read off its own overrides (``data.init_args.data_root``, ``<work>/runs/<run>``)."""
    over = stored.get("overrides") or {}
    if "data.init_args.data_root" not in over or "trainer.default_root_dir" not in over:
        return stored
    roots = {"data": over["data.init_args.data_root"], "work": Path(over["trainer.default_root_dir"]).parent.parent}
    teachers = stored.get("teachers")
    if teachers:  # a teacher's own inputs are of the same layout
        stored = {**stored, "teachers": {r: {**t, "inputs": _legacy_inputs(t.get("inputs") or {})} for r, t in teachers.items()}}
    return path_free(stored, roots)


def _fit(ctx: _Context, run: Run, teachers: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Train one run (unless done with the same inputs); returns its per-epoch val rows."""
    from cream_pl.callbacks.epoch_checkpoints import read_epoch_record
    from cream_pl.pipelines.recipe_builder import build_from_recipe
    from cream_pl.reporting.tables import write_json_atomic

    recipe, run_dir = _recipe(ctx, run), ctx.work / "runs" / run.name
    overrides = _overrides(ctx, run, teachers)
    roots = {"data": ctx.data_root, "work": ctx.work}
    inputs = path_free({"demo_version": DEMO_VERSION, "data_sha1": ctx.data_sha1,
                        "recipe_sha1": _sha1(recipe.read_bytes()), "overrides": json.loads(json.dumps(overrides, default=str)),
                        "teachers": None if teachers is None else {r: {**teachers[r], "inputs": ctx.inputs[teachers[r]["run"]]}
                                                                   for r in ("cls", "loc")}}, roots)
    ctx.inputs[run.name] = inputs
    done = run_dir / "fit_done.json"
    start_over_if_stale(run_dir, inputs, _log, legacy=_legacy_inputs, name=run.name)
    start = time.perf_counter()
    ran = not done.is_file()
    if ran:
        for p in run_dir.iterdir():  # a fit killed half-way starts over
            if p.name != "inputs.json":
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        cli = build_from_recipe(recipe, overrides, run_dir)
        _log(f"{run.name}: training {cli.trainer.max_epochs} epoch(s) with {recipe.name}, val after every epoch")
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        rows = read_epoch_record(run_dir / "epochs.json")
        if len(rows) != cli.trainer.max_epochs:
            raise RuntimeError(f"{run.name}: {len(rows)} per-epoch val rows for {cli.trainer.max_epochs} epochs")
        write_json_atomic({"epochs": len(rows)}, done)
    else:
        _log(f"{run.name}: fit done, reusing {run_dir}")
    ctx.timing.record(f"fit_{run.name}_s", time.perf_counter() - start, ran)
    return read_epoch_record(run_dir / "epochs.json")


def _recipe_facts(ctx: _Context, run: Run) -> dict[str, Any]:
    """What the results README says of a run's recipe (after the demo's overrides): model, crops, CREAM grid, KD."""
    import yaml

    from cream_pl.pipelines.recipe_builder import set_dotted

    config = yaml.safe_load(_recipe(ctx, run).read_text())
    for key, value in _overrides(ctx, run, None).items():
        set_dotted(config, key, value)
    model, data = config["model"]["init_args"], config["data"]["init_args"]
    grid = model.get("cream_search")
    facts = {"model": config["model"]["class_path"].rsplit(".", 1)[-1], "train_transform": data.get("train_transform"),
             "crop_size": data.get("crop_size"), "resize_size": data.get("resize_size"), "lr": model.get("lr"),
             "cream_search": grid, "cream_search_epochs": model.get("cream_search_epochs", "all"),
             "cream_candidates": int(np.prod([len(v) if isinstance(v, list) else 1 for v in grid.values()])) if grid else 0}
    if run.student:
        facts["kd"] = {k: model.get(k) for k in ("kd_alpha", "kd_temperature_cls", "kd_temperature_loc", "kd_variant",
                                                  "kd_routing", "kd_loc_weight")}
    return facts


def _eval_datamodule(ctx: _Context) -> Any:
    """The test split's data module, from the CAM recipe's data settings (every recipe evaluates alike)."""
    import yaml

    from cream_pl.data import WSOLDataModule
    from cream_pl.pipelines.recipe_builder import set_dotted

    config = yaml.safe_load(_recipe(ctx, RUNS[0]).read_text())
    for key, value in {**dict(ctx.settings.overrides), "data.init_args.data_root": str(ctx.data_root)}.items():
        if key.startswith("data."):
            set_dotted(config, key, value)
    return WSOLDataModule(**config["data"]["init_args"])


def _test(ctx: _Context, dm: Any, run: str, epoch: int) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """Test one per-epoch checkpoint (unless done): scalar results and per-image records of :data:`RECORDED`."""
    import pytorch_lightning as pl

    from cream_pl.callbacks.epoch_checkpoints import checkpoint_name
    from cream_pl.core.io import atomic_write_bytes
    from cream_pl.models.checkpoints import load_classifier
    from cream_pl.reporting.evidence import load_records, save_records
    from cream_pl.reporting.tables import write_json_atomic

    run_dir = ctx.work / "runs" / run
    res_path, rec_path = run_dir / f"test_epoch={epoch:03d}.json", run_dir / f"test_epoch={epoch:03d}.npz"
    start = time.perf_counter()
    ran = not (res_path.is_file() and rec_path.is_file())
    if ran:
        ckpt = run_dir / "epochs" / checkpoint_name(epoch)
        _log(f"{run}: testing epoch {epoch} ({ckpt})")
        model = load_classifier(ckpt)
        model.hparams["record_per_image"] = [m for m in RECORDED if m in model.available_methods()]
        trainer = pl.Trainer(accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False)
        with warnings.catch_warnings():  # an intermediate epoch (a teacher) has no CREAM choice; only its CAM is used
            warnings.filterwarnings("ignore", message="cream_search is set but no validation run")
            trainer.test(model, datamodule=dm, verbose=False)
        res = model.last_results["test"]
        scalars = {"cls_acc": res.get("cls_acc"), "top5_cls_acc": res.get("top5_cls_acc"),
                   "methods": {n: {k: v for k, v in m.items() if not isinstance(v, dict)} for n, m in res["methods"].items()},
                   "selected_cream": model.selected_cream, "checkpoint": str(ckpt)}
        atomic_write_bytes(rec_path, save_records(model.per_image["test"]))
        write_json_atomic(scalars, res_path)
    ctx.timing.record(f"test_{run}_epoch{epoch:03d}_s", time.perf_counter() - start, ran)
    return json.loads(res_path.read_text()), load_records(rec_path)


# ---------------------------------------------------------------------------------------------- main
def run_demo(out: Path, work: Path, recipe_dir: Path, settings: DemoSettings, seed: int = 0,
             fast: bool = False) -> dict[str, Any]:
    """Run every stage (skipping finished ones); write ``metrics.json``, ``README.md`` and ``dilemma.png`` to ``out``."""
    from cream_pl.callbacks.epoch_checkpoints import checkpoint_name
    from cream_pl.reporting.demo_kd_report import build_results, write_results

    start = time.perf_counter()
    out, work = Path(out), Path(work)
    work.mkdir(parents=True, exist_ok=True)
    timing = StageTimer(work / "timing.json")
    t = time.perf_counter()
    ran = ensure_dataset(work / "data", settings, seed)
    timing.record("data_s", time.perf_counter() - t, ran)
    data_root = work / "data"
    ctx = _Context(work, Path(recipe_dir), settings, data_root, _sha1((data_root / "synth_config.json").read_bytes()),
                   timing)
    curves: dict[str, list[dict[str, Any]]] = {}
    for run in RUNS:
        if run.student:
            teachers = select_teachers(curves, [r.name for r in RUNS if r.candidate])
            for role in ("cls", "loc"):  # the file of the chosen epoch, wherever the work folder now lives
                teachers[role]["checkpoint"] = str(work / "runs" / teachers[role]["run"] / "epochs"
                                                   / checkpoint_name(teachers[role]["epoch"]))
            _log(f"teachers (val): cls = {teachers['cls']['run']} epoch {teachers['cls']['epoch']}, loc = "
                 f"{teachers['loc']['run']} epoch {teachers['loc']['epoch']}"
                 + (" (the same checkpoint)" if teachers["same_checkpoint"] else ""))
        curves[run.name] = _fit(ctx, run, teachers if run.student else None)
    dm = _eval_datamodule(ctx)
    tested: dict[str, dict[str, Any]] = {}
    records: dict[str, dict[str, np.ndarray]] = {}
    for run in RUNS:
        if run.rows:
            last = curves[run.name][-1]["epoch"]
            res, rec = _test(ctx, dm, run.name, last)
            for key, method in run.rows:
                if method in res["methods"] and method in rec:
                    tested[key] = {"run": run.name, "epoch": last, "method": method, "cls_acc": res["cls_acc"],
                                   **res["methods"][method], "selected_cream": res.get("selected_cream")}
                    records[key] = rec[method]
    for role in ("cls", "loc"):
        res, rec = _test(ctx, dm, teachers[role]["run"], teachers[role]["epoch"])
        tested[f"{role}_teacher"] = {"run": teachers[role]["run"], "epoch": teachers[role]["epoch"], "method": "cam",
                                     "cls_acc": res["cls_acc"], **res["methods"]["cam"]}
        records[f"{role}_teacher"] = rec["cam"]
    image_ids = [s.image_id for s in dm.eval_dataset("test").samples]
    usual = usual_background_flags(data_root, image_ids)
    t = time.perf_counter()
    results = build_results(tested, records, usual, curves, teachers, n_resamples=settings.n_resamples)
    timing.record("bootstrap_s", time.perf_counter() - t, True)
    synth = json.loads((data_root / "synth_config.json").read_text())
    results["benchmark"] = {"preset": "cub", **CONFOUNDED, "seed": seed, "config": synth["config"],
                            "background_photos": synth["background_photos"], "num_test": len(image_ids),
                            "num_test_usual": int(usual.sum()), "num_test_unusual": int((~usual).sum()),
                            "num_val": len(dm.eval_dataset("val")), "num_train": synth["config"]["num_train"],
                            "num_classes": synth["config"]["num_classes"]}
    results["runs"] = {r.name: {"recipe": f"experiments/{r.recipe}.yaml", "epochs": len(curves[r.name]),
                                "fit_s": timing.used.get(f"fit_{r.name}_s"), **_recipe_facts(ctx, r)} for r in RUNS}
    wall_s, full_file = time.perf_counter() - start, work / "full_run.json"
    if not timing.skipped:  # every stage ran in this invocation: its wall time is the whole demo's
        from cream_pl.reporting.tables import write_json_atomic

        write_json_atomic({"wall_s": wall_s}, full_file)
    full_wall = json.loads(full_file.read_text())["wall_s"] if full_file.is_file() else None
    t = time.perf_counter()
    write_results(results, out, timing=timing.used, load=timing.used_load(), fast=fast, wall_s=wall_s,
                  full_wall_s=full_wall, candidates=[r.name for r in RUNS if r.candidate])
    timing.record("report_s", time.perf_counter() - t, True)
    _log(f"wrote {out / 'metrics.json'}, {out / 'README.md'}, {out / 'dilemma.png'} "
         f"(this invocation {(time.perf_counter() - start) / 60:.1f} min; stages {sum(timing.used.values()) / 60:.1f} min)")
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="python -m cream_pl.pipelines.demo_kd", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/embedded_confounded"), help="results folder")
    parser.add_argument("--work", type=Path, default=None,
                        help="dataset, checkpoints and logs (default outputs/embedded_confounded[_fast])")
    parser.add_argument("--recipes", type=Path, default=None, help="folder of the recipes (default: experiments/)")
    parser.add_argument("--fast", action="store_true", help="tiny data, two epochs per run: a pipeline smoke test")
    parser.add_argument("--seed", type=seed_int, default=0, help="dataset seed")
    parser.add_argument("--restart", action="store_true", help="delete the work folder first")
    return parser


@pipeline_main("python -m cream_pl.pipelines.demo_kd")
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    recipes = args.recipes or default_recipe_dir()
    missing = [recipes / f"{r.recipe}.yaml" for r in RUNS if not (recipes / f"{r.recipe}.yaml").is_file()]
    if missing:  # before any data or training
        parser.exit(2, f"{parser.prog}: error: {missing[0]}: recipe not found (--recipes DIR: the experiments/ "
                    "folder of cream-pl)\n")
    settings = DemoSettings.fast() if args.fast else DemoSettings()
    work = args.work or Path("outputs/embedded_confounded" + ("_fast" if args.fast else ""))
    preflight(outputs=[(args.out, "--out"), (work, "--work")])  # before any work (and before --restart deletes)
    if args.restart:
        shutil.rmtree(work, ignore_errors=True)
    run_demo(args.out, work, recipes, settings, seed=args.seed, fast=args.fast)
    return 0


if __name__ == "__main__":
    sys.exit(main())
