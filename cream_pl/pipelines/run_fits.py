"""The two ways a declared run is fitted and tested, for :mod:`cream_pl.pipelines.runner`.

- :func:`fit_and_test` (``test: model``): fit (``model.ckpt``, written atomically; the val figures of
  the run's own map in ``val_method.json``, of every CREAM variant in ``val_variants.json``, the whole
  last validation in ``val.json``), then test the fitted model (``test.json`` and the per-image
  records ``per_image_test.npz``); each skipped when its files exist.
- :func:`fit_epochs` (``test: epochs``): fit with a checkpoint and the val numbers after every epoch
  (the recipe's ``EpochCheckpoints``; ``fit_done.json`` when finished), then test the last epoch's
  checkpoint (:func:`epoch_test`, ``test_epoch=NNN.{json,npz}``); a run that names ``teachers`` is
  taught by the checkpoints :func:`select_teachers_for` chooses on val among earlier runs' epochs.

Each takes the runner (its overrides, fingerprints, timers and log) and returns an :class:`Outcome`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MODEL_FILE", "Outcome", "choose_on_val", "fit_and_test", "fit_epochs", "method_row", "require_epoch_checkpoints", "select_teachers_for",
           "teacher_rows", "epoch_test", "variant_val_scores"]

ROW_KEYS = ("max_box_acc_v2", "max_box_acc_iou30", "max_box_acc_iou50", "max_box_acc_iou70", "max_box_acc",
            "gt_known", "top1_loc", "top5_loc", "pxap", "loc_threshold", "loc_threshold_source")
MODEL_FILE = "model.ckpt"
"""A fitted run's checkpoint, in its folder (``make demo``'s: ``outputs/demo/model.ckpt``)."""
EPOCH_RECORDED = ("cam", "cream_selected")
"""The maps whose per-image outcomes a tested per-epoch checkpoint keeps (where it has them)."""


def method_row(method: Mapping[str, Any], cls_acc: Any) -> dict[str, Any]:
    """A result row: a tested map's protocol figures (the keys it has of :data:`ROW_KEYS`) and the classifier's accuracy."""
    return {**{k: method[k] for k in ROW_KEYS if k in method}, "cls_acc": cls_acc}


@dataclass
class Outcome:
    """One run at one seed: its rows, per-image records (by row), test result, model facts, stage outputs, times."""

    key: str
    seed: int
    folder: Path
    rows: dict[str, Any]
    records: dict[str, Any]
    test: dict[str, Any]
    facts: dict[str, Any]
    timing: dict[str, float]
    stages: dict[str, Any] = field(default_factory=dict)
    val: dict[str, Any] = field(default_factory=dict)
    choice: dict[str, Any] | None = None
    val_results: dict[str, Any] = field(default_factory=dict)  # the last validation's results (runs since the runner)
    live: tuple[Any, ...] | None = field(default=None, repr=False)
    """``(cli, model, ckpt, records)`` of a fitted model until the run's stages have used it."""


RECORD_FIELDS = ("index", "top1", "best_iou", "gt_known", "top1_loc")
"""The per-image record fields every recorded map of a tested run has (its paired intervals read them)."""


def _test_ok(stored: Any, run: Any, *maps: str) -> bool:
    """A run's ``test.json`` holds every map its rows name (or ``maps``), each figure a percentage (PxAP: or none) and
    its threshold in [0, 1]."""
    from cream_pl.pipelines.run_state import percentages_ok

    methods = stored["methods"]
    for m in maps or set(run.rows.values()):
        row = methods[m]
        keys = ["max_box_acc_v2", *(k for k in ROW_KEYS if k in row and k not in ("loc_threshold", "loc_threshold_source"))]
        tau = row.get("loc_threshold")
        if not percentages_ok(row, keys, allow_none=["pxap"]) or (tau is not None and not 0.0 <= tau <= 1.0):
            return False
    return stored.get("cls_acc") is None or percentages_ok(stored, ["cls_acc"])


def _write_val(model: Any, resolved: Mapping[str, Any], paths: Sequence[Path]) -> None:
    """The last validation's figures: of the run's own map, of everything, of every CREAM variant (``paths``)."""
    from cream_pl.reporting.tables import write_json_atomic

    val = model.last_results.get("val", {})
    for content, path in zip((_val_of_method(model), val,
                              variant_val_scores(val.get("cream_search"), _variants(resolved))), paths):
        write_json_atomic(content, path)


def _save_model(trainer: Any, ckpt: Path) -> None:
    tmp = ckpt.with_name(".model.ckpt.tmp")
    trainer.save_checkpoint(tmp)
    if trainer.is_global_zero:
        os.replace(tmp, ckpt)


def _keep_fitted_model(ckpt: Path, fitted: Any) -> Any:
    """A callback that keeps the fitted model (``model.ckpt``) and, through ``fitted``, its val figures and fit time
    once the last epoch is done, before the fit-end callbacks (the train split's pseudo boxes, minutes) run: a run
    stopped there (Ctrl-C, SIGTERM) resumes from them instead of training again."""
    import pytorch_lightning as pl

    class KeepFittedModel(pl.Callback):
        def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            _save_model(trainer, ckpt)
            if trainer.is_global_zero:
                fitted(pl_module)

    return KeepFittedModel()


def _load_fitted(r: Any, ckpt: Path) -> Any:
    """The run's fitted classifier (as its own class, in training mode as Lightning loads it), or ``None`` where it
    has none or one that does not read back at all (then it trains again). A checkpoint that reads but does not load
    (diverged weights, a class this cream-pl lacks) is one line: retraining would not change it."""
    from cream_pl.models.checkpoints import UnreadableCheckpointError, load_classifier

    if not ckpt.is_file():
        return None
    r.log(f"{ckpt.parent.name}: loading {ckpt}")
    try:
        return load_classifier(ckpt).train()
    except UnreadableCheckpointError as err:
        r.log(f"{ckpt}: damaged ({str(err).removeprefix(f'{ckpt}: ')}); training again")
        return None


def fit_and_test(r: Any, run: Any, seed: int, folder: Path, extra: Mapping[str, Any]) -> Outcome:
    from cream_pl.core.io import atomic_write_bytes
    from cream_pl.pipelines.recipe_builder import build_from_recipe
    from cream_pl.pipelines.run_state import clear_run_folder, read_state, records_ok, run_entries
    from cream_pl.reporting.evidence import load_records, save_records
    from cream_pl.reporting.tables import write_json_atomic

    recipe = r.recipe(run.recipe)
    resolved, kept = r.overrides(run, seed, folder, recipe, extra)
    today = r.fingerprint(recipe, kept)
    folder.mkdir(parents=True, exist_ok=True)
    r.migrate(folder)
    r.start_over(folder, today, run.key, seed, legacy=True)
    timer = r.timer(folder)
    ckpt, test_path, rec_path, val_path = (folder / n for n in (MODEL_FILE, "test.json", "per_image_test.npz",
                                                               "val_method.json"))
    model = _load_fitted(r, ckpt)
    t, ran = time.time(), model is None
    if ran and run_entries(folder, r.kept_names(folder)):  # its model is gone: whatever it made is stale
        r.log(f"{folder.name}: no usable {MODEL_FILE}; starting the run over")
        clear_run_folder(folder, r.kept_names(folder))
        timer.clear()
    cli = build_from_recipe(recipe, resolved, folder)
    val_files = (val_path, folder / "val.json", folder / "val_variants.json")
    if not ran:
        damaged = [p for p in val_files if p.is_file() and read_state(p, log=r.log) is None]
        if damaged or (run.choose is not None and not val_path.is_file()):  # a run of before the choice: val again
            cli.trainer.validate(model, datamodule=cli.datamodule, verbose=False)
            _write_val(model, resolved, val_files)
    else:
        r.log(f"{folder.name}: training ({recipe.name}, seed {seed}"
              + "".join(f", {k.rsplit('.', 1)[-1]} {v}" for k, v in extra.items()) + ")")
        model = cli.model
        def fitted(m: Any) -> None:  # its val figures and time, kept with the model at the fit's end
            _write_val(m, resolved, val_files)
            timer.record("fit_s", time.time() - t, True)

        cli.trainer.callbacks.append(_keep_fitted_model(ckpt, fitted))
        cli.trainer.fit(model, datamodule=cli.datamodule)
        _save_model(cli.trainer, ckpt)
        _write_val(model, resolved, val_files)
    stored = None if ran else read_state(test_path, lambda v: _test_ok(v, run), r.log)  # a new fit: tested again
    if stored is not None and not records_ok(rec_path, [m for m in run.record if m in run.rows.values()], RECORD_FIELDS):
        r.log(f"{rec_path}: missing or damaged; testing again")
        stored = None
    for name in ("fit_s", "test_s"):  # a run folder of demo-methods before the runner kept its times in test.json
        if stored and name in stored.get("timing", {}):
            timer.record(name, stored["timing"][name], False)
    timer.record("fit_s", time.time() - t, ran)
    t, ran = time.time(), stored is None
    if ran:
        r.log(f"{folder.name}: testing")
        cli.trainer.test(model, datamodule=cli.datamodule, verbose=False)
        res = model.last_results["test"]
        if "cream_selected" in run.record and "cream_selected" not in res["methods"]:
            raise RuntimeError(f"{run.key}: the test produced no cream_selected map (the val search did not run)")
        records = {k: v for k, v in model.per_image.get("test", {}).items() if k in run.record}
        atomic_write_bytes(rec_path, save_records(records))
        write_json_atomic({**res, "wsol_method": model.wsol.name, "wsol_method_args": model.wsol.params}, test_path)
        stored = json.loads(test_path.read_text())
    else:
        r.log(f"{folder.name}: using {test_path}")
        records = load_records(rec_path)
    timer.record("test_s", time.time() - t, ran)
    rows = {row: method_row(stored["methods"][m], stored.get("cls_acc")) for row, m in run.rows.items()}
    recs = {row: records[m] for row, m in run.rows.items() if m in records}
    variants = read_state(folder / "val_variants.json", log=r.log)
    val = {**(read_state(val_path, log=r.log) or {}), **({"variants": variants} if variants is not None else {})}
    return Outcome(run.key, seed, folder, rows, recs, stored, _facts(cli, model), dict(timer.saved), val=val,
                   val_results=read_state(folder / "val.json", log=r.log) or {}, live=(cli, model, ckpt, records))


def eval_datamodule(r: Any, run: Any, seed: int, folder: Path) -> Any:
    """The test split's data module, from the first per-epoch run's data settings (every recipe evaluates alike)."""
    if r._eval_dm is None:
        import yaml

        from cream_pl.data import WSOLDataModule
        from cream_pl.pipelines.recipe_builder import set_dotted

        recipe = r.recipe(run.recipe)
        config = yaml.safe_load(recipe.read_text())
        for key, value in r.overrides(run, seed, folder, recipe, {})[0].items():
            if key.startswith("data."):
                set_dotted(config, key, value)
        r._eval_dm = WSOLDataModule(**config["data"]["init_args"])
    return r._eval_dm

def epoch_test(r: Any, run: Any, seed: int, folder: Path, epoch: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Test one per-epoch checkpoint (unless done): its results and per-image records (``test_epoch=NNN.*``)."""
    import warnings

    import pytorch_lightning as pl

    from cream_pl.callbacks.epoch_checkpoints import checkpoint_name
    from cream_pl.core.io import atomic_write_bytes
    from cream_pl.models.checkpoints import load_classifier
    from cream_pl.pipelines.run_state import read_state, records_ok
    from cream_pl.reporting.evidence import load_records, save_records
    from cream_pl.reporting.tables import write_json_atomic

    res_path, rec_path = folder / f"test_epoch={epoch:03d}.json", folder / f"test_epoch={epoch:03d}.npz"
    stored = read_state(res_path, lambda v: all(_test_ok(v, run, m) for m in v["methods"]), r.log)
    recorded = [m for m in EPOCH_RECORDED if stored is not None and m in stored["methods"]]
    t, ran = time.time(), not (stored is not None and records_ok(rec_path, recorded, RECORD_FIELDS))
    if ran:
        ckpt = folder / "epochs" / checkpoint_name(epoch)
        r.log(f"{run.key}: testing epoch {epoch} ({ckpt})")
        model = load_classifier(ckpt)
        model.hparams["record_per_image"] = [m for m in EPOCH_RECORDED if m in model.available_methods()]
        trainer = pl.Trainer(accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False)
        with warnings.catch_warnings():  # an intermediate epoch (a teacher) has no CREAM choice; its CAM is used
            warnings.filterwarnings("ignore", message="cream_search is set but no validation run")
            trainer.test(model, datamodule=eval_datamodule(r, run, seed, folder), verbose=False)
        res = model.last_results["test"]
        scalars = {"cls_acc": res.get("cls_acc"), "top5_cls_acc": res.get("top5_cls_acc"),
                   "methods": {n: {k: v for k, v in m.items() if not isinstance(v, dict)}
                               for n, m in res["methods"].items()},
                   "selected_cream": model.selected_cream, "checkpoint": str(ckpt)}
        atomic_write_bytes(rec_path, save_records(model.per_image["test"]))
        write_json_atomic(scalars, res_path)
        stored = json.loads(res_path.read_text())  # as a resumed run reads it: the same key order either way
    r.timer(folder).record(f"test_epoch{epoch:03d}_s", time.time() - t, ran)
    return stored, load_records(rec_path)


def require_epoch_checkpoints(recipe: Path, key: str) -> None:
    """A run tested per epoch needs its recipe's ``EpochCheckpoints`` callback: refused before any training."""
    from cream_pl.core.errors import UserValueError
    from cream_pl.pipelines.run_state import callback_index

    if callback_index(recipe, "EpochCheckpoints") is None:
        raise UserValueError(f"{recipe}: run {key!r} is tested per epoch (test: epochs) but its recipe keeps no "
                             "per-epoch checkpoints (add cream_pl.callbacks.epoch_checkpoints.EpochCheckpoints to trainer.callbacks)")


def fit_epochs(r: Any, run: Any, seed: int, folder: Path) -> Outcome:
    """Fit with a checkpoint and the val numbers after every epoch (unless done), then test the last epoch."""
    from cream_pl.callbacks.epoch_checkpoints import read_epoch_record
    from cream_pl.pipelines.recipe_builder import build_from_recipe
    from cream_pl.pipelines.run_state import clear_run_folder
    from cream_pl.reporting.tables import write_json_atomic

    recipe = r.recipe(run.recipe)
    require_epoch_checkpoints(recipe, run.key)
    resolved, kept = r.overrides(run, seed, folder, recipe, {})
    today = r.fingerprint(recipe, kept)
    if run.teachers:  # the teachers' checkpoints are places; which checkpoints of which inputs they are is not
        t = select_teachers_for(r, run)
        resolved.update({f"model.init_args.{role}_teacher_ckpt": t[role]["checkpoint"] for role in ("cls", "loc")})
        today["teachers"] = {role: {"run": t[role]["run"], "epoch": t[role]["epoch"], "inputs": r.inputs[t[role]["run"]]}
                             for role in ("cls", "loc")}
    r.inputs[run.key] = today
    r.start_over(folder, today, run.key, seed)
    timer = r.timer(folder)
    done, record = folder / "fit_done.json", folder / "epochs.json"
    t0, ran = time.time(), not done.is_file()
    if ran:
        clear_run_folder(folder, r.kept_names(folder))  # a fit killed half-way starts over
        timer.clear()
        cli = build_from_recipe(recipe, resolved, folder)
        r.log(f"{run.key}: training {cli.trainer.max_epochs} epoch(s) with {recipe.name}, val after every epoch")
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        if len(read_epoch_record(record)) != cli.trainer.max_epochs:
            raise RuntimeError(f"{run.key}: {len(read_epoch_record(record))} per-epoch val rows for "
                               f"{cli.trainer.max_epochs} epochs (does the recipe keep EpochCheckpoints?)")
        write_json_atomic({"epochs": cli.trainer.max_epochs}, done)
    else:
        r.log(f"{run.key}: fit done, reusing {folder}")
    timer.record("fit_s", time.time() - t0, ran)
    curve = read_epoch_record(record)
    last = int(curve[-1]["epoch"])
    res, records = epoch_test(r, run, seed, folder, last) if run.rows else ({"methods": {}}, {})
    rows = {row: {"run": run.key, "epoch": last, "method": m, "cls_acc": res["cls_acc"], **res["methods"][m],
                  "selected_cream": res.get("selected_cream")}
            for row, m in run.rows.items() if m in res["methods"] and m in records}
    recs = {row: records[m] for row, m in run.rows.items() if row in rows}
    from cream_pl.core.io import read_yaml_file

    model_args = (read_yaml_file(folder / "config.yaml", "the fit's config") or {}).get("model", {}).get("init_args", {})
    facts = {"cam_curve_interval": float(model_args.get("cam_curve_interval", 0.001)),  # what the reports state
             "eval_size": int(model_args.get("eval_size", 224))}  # (a key the config leaves out: the class default)
    out = Outcome(run.key, seed, folder, rows, recs, res, facts, dict(timer.saved))
    out.stages["epochs"] = {"curve": curve, "last": last}
    return out


def select_teachers_for(r: Any, run: Any) -> dict[str, Any]:
    """KD's teachers among every epoch of ``run.teachers``' runs, on val; their checkpoint files where they are now."""
    from cream_pl.callbacks.epoch_checkpoints import checkpoint_name
    from cream_pl.pipelines.run_stages import select_teachers

    done = r.outcomes_so_far
    teachers = select_teachers({k: done[k].stages["epochs"]["curve"] for k in run.teachers}, list(run.teachers))
    for role in ("cls", "loc"):
        teachers[role]["checkpoint"] = str(done[teachers[role]["run"]].folder / "epochs"
                                           / checkpoint_name(teachers[role]["epoch"]))
    r.log(f"teachers (val): cls = {teachers['cls']['run']} epoch {teachers['cls']['epoch']}, loc = "
          f"{teachers['loc']['run']} epoch {teachers['loc']['epoch']}"
          + (" (the same checkpoint)" if teachers["same_checkpoint"] else ""))
    r.teachers = teachers
    return teachers


def teacher_rows(r: Any, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The teachers' rows (their checkpoints tested, CAM) and records."""
    rows, records = {}, {}
    for role in ("cls", "loc"):
        t = r.teachers[role]
        o = r.outcomes_so_far[t["run"]]
        res, rec = epoch_test(r, next(d for d in r.exp.runs if d.key == t["run"]), seed, o.folder, t["epoch"])
        rows[f"{role}_teacher"] = {"run": t["run"], "epoch": t["epoch"], "method": "cam", "cls_acc": res["cls_acc"],
                                   **res["methods"]["cam"]}
        records[f"{role}_teacher"] = rec["cam"]
    return rows, records


def _variants(overrides: Mapping[str, Any]) -> list[str]:
    return list((overrides.get("model.init_args.cream_search") or {}).get("variant") or [])


def _val_of_method(model: Any) -> dict[str, float]:
    """The val split's figures of the run's own map (``cam``) and classification, from the last validation."""
    val = model.last_results.get("val", {})
    cam = val.get("methods", {}).get("cam", {})
    return {"max_box_acc_v2": float(cam.get("max_box_acc_v2", float("nan"))),
            "cls_acc": float(val.get("cls_acc") if val.get("cls_acc") is not None else float("nan"))}


def _facts(cli: Any, model: Any) -> dict[str, Any]:
    """What the report says about a trained run besides its numbers."""
    dm, hp = cli.datamodule, model.hparams
    return {"cam_curve_interval": float(hp.cam_curve_interval), "eval_size": int(hp.eval_size),
            "candidates": len(model.cream_candidates),
            "search_space": dict(hp.cream_search) if hp.get("cream_search") else None,
            "selected_cream": model.selected_cream is not None, "epochs": int(cli.trainer.max_epochs),
            "wsol_method": model.wsol.name, "wsol_method_args": model.wsol.params,
            "head_lr_multiplier": float(hp.get("head_lr_multiplier", 1.0)),
            **{f"num_{s}": len(dm.eval_dataset(s)) for s in ("train", "val", "test")}, "num_classes": dm.num_classes}


def choose_on_val(val_scores: Mapping[float, float]) -> float:
    """The value of the best val score; ties (and NaN) to the earlier listed.

    >>> choose_on_val({10.0: 7.5, 3.0: 60.2, 1.0: 60.2})
    3.0
    >>> choose_on_val({10.0: float("nan"), 3.0: 0.0})
    3.0
    """
    best, best_score = None, -float("inf")
    for m, score in val_scores.items():
        if score == score and score > best_score:
            best, best_score = m, score
    return next(iter(val_scores)) if best is None else best


def variant_val_scores(search: Mapping[str, Any] | None, variants: Sequence[str]) -> dict[str, float]:
    """The best val MaxBoxAccV2 of each CREAM variant over its candidates (``{}`` for a method with one).

    >>> variant_val_scores({"scores": {"T1_kappa8_lambda0.8_raw_fused": 60.0, "T2_kappa8_lambda0.8_raw_fused": 61.0,
    ...                                "T1_kappa8_lambda0.8_raw_branches": 62.5}}, ["branches", "fused"])
    {'branches': 62.5, 'fused': 61.0}
    """
    if not variants or not search:
        return {}
    scores = search.get("scores", {})
    return {v: max((s for name, s in scores.items() if name.endswith(f"_{v}") and s == s), default=float("nan"))
            for v in variants}
