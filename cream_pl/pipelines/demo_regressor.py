"""``make demo``'s CREAM_reg stage: box-regressor designs trained on the pseudo boxes, one chosen on val.

Every candidate (:data:`CANDIDATES`: a box head and a feature source) trains on the val-selected CREAM's pseudo
boxes over the train split. The heads on the classifier's frozen features share one pass of the frozen backbone
(:class:`~cream_pl.pipelines.regressor_data.FrozenFeatureDataModule`'s cache); a fine-tuned candidate trains its
own backbone on the images, as PSOL does. Then:

1. every candidate is scored on **val** (GT-known Loc) and the best is chosen
   (:func:`choose_on_val`; ties keep the earlier candidate): the test split plays no part;
2. only then is every candidate tested, for the report (each candidate's val score beside its test
   score); the chosen one is the ``cream_reg`` row, the PSOL head the ``cream_reg_psol`` row;
3. how each candidate does on the train images themselves, beside its pseudo boxes
   (:func:`train_correctness`; every frozen head from the cache, and the chosen design whatever its
   source): a regressor that is right more often than its own pseudo boxes denoises them.

Every step is resumable: a candidate's folder keeps its checkpoint and metrics.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cream_pl.reporting.tables import write_json_atomic

__all__ = ["CANDIDATES", "FROZEN_RECIPE", "PSOL_CANDIDATE", "choose_on_val", "run_regressor_stage", "train_correctness"]

FROZEN_RECIPE: dict[str, Any] = {"optimizer": "adamw", "lr": 1e-3, "loss": "l1_iou", "loss_weight": 1.0,
                                 "max_epochs": 15, "batch_size": 32, "weight_decay": 1e-4}
"""One recipe for every frozen-feature candidate: AdamW, L1 + (1 − IoU), 15 epochs of the pseudo-boxed train split
with feature flips."""
FINETUNE_FREEZE = r"^(_conv_stem|_bn0|_blocks\.[0-7]\.)"
"""The fine-tuned candidate's frozen stem and first eight Lite0 blocks (the CPU budget; its later blocks train)."""
FINETUNE_RECIPE: dict[str, Any] = {"pretrained": True, "max_epochs": 1, "optimizer": "adamw", "lr": 1e-4,
                                   "loss": "l1_iou", "loss_weight": 1.0, "crop": "box_safe", "datamodule": None,
                                   "regressor_kwargs": {"head_lr_multiplier": 10.0, "weight_decay": 1e-4,
                                                        "freeze_backbone": FINETUNE_FREEZE},
                                   "trainer_kwargs": {"limit_train_batches": 0.5}}
"""The demo's fine-tuned feature source (PSOL's: a separate ImageNet Lite0 on random box-safe crops of the train
images) at the CPU budget: half an epoch (38 steps of 32 over a random half of the 2,400 pseudo-boxed images, about
2 min on 2 cores; every frozen head gets 15 epochs of the cached features for about 20 s), the ImageNet stem and
first eight blocks frozen, AdamW at 1e-4 (the head at 10x), L1 + (1 − IoU) as the frozen heads. The budget is set
by the demo's 15-minute limit, not by a score: this candidate's val GT-known was 53.0 after a whole epoch."""
CANDIDATES: dict[str, dict[str, Any]] = {
    "psol_frozen": {"head": "psol", "features": "classifier", "label": "PSOL head (GAP + MLP)"},
    "spatial_mlp_frozen": {"head": "spatial_mlp", "features": "classifier", "label": "spatial MLP (position kept)"},
    "objectness_frozen": {"head": "objectness", "features": "classifier", "label": "objectness map + moments"},
    "objectness_finetune": {"head": "objectness", "features": "finetune",
                            "label": "objectness map + moments, fine-tuned Lite0 (PSOL's feature source, 1 epoch)",
                            "overrides": FINETUNE_RECIPE},
}
"""The designs chosen between on val: (box head, feature source). Three heads on the classifier's frozen features
and the best-placed head on a separately fine-tuned backbone (PSOL's feature source), at the demo's CPU budget."""
PSOL_CANDIDATE = "psol_frozen"
"""The paper's (PSOL's) head shape, reported as a row of its own whatever it scores."""
DONE_FILE = "candidates.json"
DESIGN_FILE = "design.json"
TRAIN_SUBSAMPLE = 8
"""A fine-tuned candidate that is not chosen is checked on every 8th train image (its own backbone pass)."""


def _log(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def choose_on_val(val_scores: Mapping[str, float]) -> str:
    """The candidate with the highest val score (ties: the first in order).

    Example:
        >>> choose_on_val({"a": 70.0, "b": 72.5, "c": 72.5})
        'b'
    """
    if not val_scores:
        raise ValueError("no candidate has a val score")
    best = max(val_scores.values())
    return next(name for name, v in val_scores.items() if v == best)


@torch.no_grad()
def train_correctness(predict: Callable[[torch.Tensor], torch.Tensor], dataset: Any, positions: Sequence[int],
                      data: Path, pseudo: Mapping[int, Any], *, key: str = "features",
                      batch_size: int = 256) -> dict[str, float]:
    """On the un-flipped train images: the regressor's boxes against their pseudo boxes and the true boxes,
    beside the pseudo boxes' own accuracy, all in the 224 evaluation grid (IoU ≥ 0.5, inclusive '+1' IoU).

    ``predict`` maps a batch of ``dataset[p][key]`` (cached features, or images at the evaluation transform for a
    fine-tuned backbone) to normalised boxes."""
    from cream_pl.core.boxes import BoxFormat, box_iou_inclusive, convert_boxes, resize_boxes_protocol
    from cream_pl.data.metadata import read_split
    from cream_pl.models.regressor import predicted_boxes_inclusive

    samples = read_split(data / "metadata" / "train").samples
    to_pseudo, hit, pseudo_hit = [], [], []
    for start in range(0, len(positions), batch_size):
        items = [dataset[p] for p in positions[start : start + batch_size]]
        pred = predicted_boxes_inclusive(predict(torch.stack([it[key] for it in items]).float()), (224, 224))
        for i, it in enumerate(items):
            idx = int(it["index"])
            s, pb = samples[idx], pseudo[idx]
            gt = resize_boxes_protocol(torch.tensor(s.boxes), s.size, (224, 224)).double()
            box = convert_boxes(torch.tensor([pb.bbox], dtype=torch.float64), BoxFormat.XYWH, BoxFormat.XYXY_INCLUSIVE)
            box = resize_boxes_protocol(box, pb.size, (224, 224)).double()
            p = pred[i : i + 1].double()
            to_pseudo.append(float(box_iou_inclusive(p, box).max()))
            hit.append(bool(box_iou_inclusive(p, gt).max() >= 0.5))
            pseudo_hit.append(bool(box_iou_inclusive(box, gt).max() >= 0.5))
    return {"train_mean_iou_to_pseudo_boxes": float(np.mean(to_pseudo)), "train_gt_known": float(100 * np.mean(hit)),
            "train_pseudo_box_gt_known": float(100 * np.mean(pseudo_hit)), "num_train": len(hit)}


def _train_fit(model: Any, dm: Any, data: Path, pseudo: Mapping[int, Any], *, measure: bool) -> dict[str, float]:
    """Train correctness of one candidate: from the cache for a frozen-feature head (no backbone pass); with a pass
    of its own backbone over the un-flipped train images for a fine-tuned one, every image when ``measure`` (the
    chosen design), else every ``TRAIN_SUBSAMPLE``-th (``train_subsample`` records which)."""
    if model.frozen_features and dm.cached:
        cache = dm.caches["train"]
        return train_correctness(model.head, cache, cache.positions, data, pseudo)
    if model.frozen_features:
        if not measure:
            return {}
        model.set_classifier(dm.classifier)
    base = dm.train_base
    step = 1 if measure else TRAIN_SUBSAMPLE
    fit = train_correctness(model, base, range(0, len(base), step), data, pseudo, key="image", batch_size=64)
    return {**fit, "train_subsample": step}


def _kwargs(common: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    """``train_regressor``'s arguments of one candidate: the shared ones, then its overrides (trainer settings
    merged into the shared device settings, not replacing them)."""
    overrides = dict(spec.get("overrides", {}))
    trainer = {**common.get("trainer_kwargs", {}), **overrides.pop("trainer_kwargs", {})}
    return {**common, **overrides, "trainer_kwargs": trainer}


def _at_least_one_batch(kwargs: dict[str, Any], num_train: int) -> dict[str, Any]:
    """A fractional ``limit_train_batches`` that would leave no whole batch of a small train split (Lightning
    refuses it) becomes the whole epoch; on a split of many batches the fraction stands."""
    trainer = dict(kwargs.get("trainer_kwargs", {}))
    limit = trainer.get("limit_train_batches")
    if isinstance(limit, float) and limit < 1.0:
        batches = -(-num_train // max(1, int(kwargs["batch_size"])))
        if limit * batches < 1:
            trainer["limit_train_batches"] = 1.0
    return {**kwargs, "trainer_kwargs": trainer}


def _box_levels(row: dict[str, Any], per_image: dict[str, np.ndarray]) -> dict[str, Any]:
    """A box predictor's MaxBoxAccV2: the accuracy of its one box at IoU >= 30 / 50 / 70, averaged (no threshold
    to maximise over); it has no score map, hence no PxAP."""
    for d in (30, 50, 70):
        row[f"max_box_acc_iou{d}"] = float(100.0 * np.mean(per_image["iou"] >= d / 100))
    row["max_box_acc_v2"] = float(np.mean([row[f"max_box_acc_iou{d}"] for d in (30, 50, 70)]))
    row["pxap"] = None
    return row


def regressor_record(per_image: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The regressor's per-image test record in the classifier's format: its one box is a one-column
    ``best_iou``, so MaxBoxAccV2 differences use the same paired bootstrap."""
    return {**per_image, "best_iou": per_image["iou"][:, None].astype(np.float64),
            "iou_thresholds": np.array([30.0, 50.0, 70.0])}


def _read_json(path: Path, check: Callable[[Any], bool] | None = None, log: bool = True) -> Any:
    """A file of the stage's own, or ``None`` where it is missing or damaged (then its work is done again)."""
    from cream_pl.pipelines.run_state import read_state

    return read_state(path, check, _log if log else None)


REGRESSOR_FIELDS = ("index", "iou", "gt_known", "top1", "top1_loc")
"""The per-image record fields of a tested candidate (``per_image_test.npz``, method ``regressor``)."""
PERCENT_KEYS = ("val_gt_known", "gt_known", "top1_loc", "top5_loc", "cls_acc")


def _summary_ok(summary: Any, rdir: Path, candidates: Mapping[str, Any], psol_candidate: str) -> bool:
    """The finished stage's summary names these candidates, each figure a percentage, and the records it reads are
    whole (no NaN, no field missing)."""
    from cream_pl.pipelines.regressor_train import PER_IMAGE_FILE, RECORD_METHOD
    from cream_pl.pipelines.run_state import percentages_ok, records_ok

    rows = summary["candidates"]
    return (set(rows) == set(candidates) and summary["chosen"] in rows
            and all(percentages_ok(r, ["val_gt_known", "gt_known", *(k for k in PERCENT_KEYS if k in r)]) for r in rows.values())
            and all(records_ok(rdir / n / PER_IMAGE_FILE, [RECORD_METHOD], REGRESSOR_FIELDS, flat_as=RECORD_METHOD)
                    for n in {summary["chosen"], psol_candidate} if n in rows))


def _design(spec: Mapping[str, Any], recipe: Mapping[str, Any]) -> dict[str, Any]:
    """What a candidate's folder was trained as (head, feature source, recipe), as JSON reads it back."""
    own = {k: v for k, v in spec.get("overrides", {}).items() if k != "datamodule"}
    record = {"head": spec["head"], "features": spec["features"],
              "recipe": own if spec["features"] == "finetune" else {**recipe, **own}}
    return json.loads(json.dumps(record, sort_keys=True, default=str))


INPUTS_FILE = "trained_from.json"
"""``<rdir>/trained_from.json``: the SHA-1s of the pseudo-box file and the classifier the candidates were trained from."""


def _start_over_on_other_inputs(rdir: Path, pseudo_boxes: Path, ckpt: Path | None, classifier: Any,
                                candidates: Mapping[str, Any]) -> None:
    """Clear the candidates trained from another pseudo-box file or classifier (``make train-regressor`` reused
    them, their numbers of other boxes, after either changed); a folder of before this record keeps its work."""
    from cream_pl.core.io import file_sha1

    if ckpt is not None:
        model_id = file_sha1(ckpt)
    else:
        from cream_pl.models.checkpoints import model_fingerprint

        model_id = model_fingerprint(classifier)
    inputs = {"pseudo_boxes_sha1": file_sha1(pseudo_boxes), "classifier_sha1": model_id}
    stored = _read_json(rdir / INPUTS_FILE, log=False)
    if stored is not None and stored != inputs:
        _log("regressor: trained from other pseudo boxes or another classifier; training every candidate again")
        (rdir / DONE_FILE).unlink(missing_ok=True)
        for name in candidates:
            if (rdir / name / DESIGN_FILE).is_file():  # a candidate folder this stage wrote
                shutil.rmtree(rdir / name)
    if stored != inputs:
        write_json_atomic(inputs, rdir / INPUTS_FILE)


def _checkpoint_ok(cdir: Path) -> bool:
    """Whether a candidate's ``checkpoints/last.ckpt`` reads back (a truncated one failed every rerun's test)."""
    path = cdir / "checkpoints" / "last.ckpt"
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - missing, truncated, not a checkpoint: trained again
        _log(f"regressor: {path}: missing or unreadable; training that candidate again")
        return False
    return isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict)


def is_done(rdir: Path, candidates: Mapping[str, Any] = CANDIDATES, psol_candidate: str = PSOL_CANDIDATE,
            log: bool = False) -> bool:
    """Whether ``rdir`` holds the finished, undamaged stage of exactly these candidates (``log``: say so where it is
    damaged)."""
    return _read_json(rdir / DONE_FILE, lambda v: _summary_ok(v, rdir, candidates, psol_candidate), log) is not None


def run_regressor_stage(pseudo_boxes: Path, data: Path, rdir: Path, ckpt: Path | None, *, mean: Sequence[float],
                        std: Sequence[float], train_seed: int = 0, fast: bool = False,
                        candidates: Mapping[str, Mapping[str, Any]] = CANDIDATES,
                        classifier: torch.nn.Module | None = None,
                        trainer_kwargs: Mapping[str, Any] | None = None,
                        batch_size: int | None = None,
                        psol_candidate: str = PSOL_CANDIDATE) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train every candidate, choose on val, test all; returns ``(summary, records)``.

    ``summary``: ``chosen``, ``candidates`` (per candidate: head, features, val / test GT-known,
    Top-1 Loc, train correctness) and the ``cream_reg`` / ``cream_reg_psol`` rows; ``records``:
    the per-image test records of those two rows (for the paired intervals). ``classifier``: the
    loaded ``ckpt`` when the caller has it (else it is read from ``ckpt``). ``trainer_kwargs``: the
    trainers' device arguments (default: one CPU process); ``batch_size``: the global batch instead of the recipe's.
    """
    from cream_pl.data.datamodule import WSOLDataModule
    from cream_pl.data.pseudo_box_format import load_dataset_pseudo_boxes
    from cream_pl.models.checkpoints import load_classifier
    from cream_pl.models.regressor import BoxRegressor
    from cream_pl.pipelines.regressor_data import FrozenFeatureDataModule
    from cream_pl.pipelines.regressor_train import (
        CURVE_FILE,
        METRICS_FILE,
        PER_IMAGE_FILE,
        RECORD_METHOD,
        train_regressor,
    )
    from cream_pl.pipelines.run_state import percentages_ok, records_ok
    from cream_pl.reporting.evidence import load_records

    done = rdir / DONE_FILE
    _start_over_on_other_inputs(rdir, pseudo_boxes, ckpt, classifier, candidates)
    if is_done(rdir, candidates, psol_candidate, log=True):
        _log(f"regressor: using {done}")
        summary = json.loads(done.read_text())
    else:
        recipe = {**FROZEN_RECIPE, **({"max_epochs": 1} if fast else {}), **({"batch_size": batch_size} if batch_size else {})}
        classifier = classifier if classifier is not None else load_classifier(ckpt)
        records = load_dataset_pseudo_boxes(pseudo_boxes, data, "train")  # read once: batch size and train correctness
        num_train = len(records)
        recipe["batch_size"] = min(int(recipe["batch_size"]), num_train)  # a split smaller than one batch: one batch
        eval_dm = WSOLDataModule(str(data), batch_size=recipe["batch_size"], eval_size=224, mean=tuple(mean),
                                 std=tuple(std))
        dm = FrozenFeatureDataModule(pseudo_boxes, data, classifier, eval_dm, batch_size=recipe["batch_size"],
                                     cache="auto" if any(c["features"] == "classifier" for c in candidates.values())
                                     else "off", seed=train_seed)  # only the frozen heads read the cache
        common = dict(pretrained=False, max_epochs=recipe["max_epochs"], batch_size=recipe["batch_size"],
                      classifier_ckpt=ckpt if ckpt is not None else classifier, datamodule=dm, lr=recipe["lr"], optimizer=recipe["optimizer"],
                      loss=recipe["loss"], loss_weight=recipe["loss_weight"], seed=train_seed, mean=tuple(mean),
                      std=tuple(std), regressor_kwargs={"weight_decay": recipe["weight_decay"]},
                      trainer_kwargs={"accelerator": "cpu", "devices": 1, "enable_progress_bar": False,
                                      "enable_model_summary": False, **dict(trainer_kwargs or {}),
                                      "num_sanity_val_steps": 0, "check_val_every_n_epoch": 10_000})
        val: dict[str, float] = {}
        for name, spec in candidates.items():  # 1. train and validate every candidate (no test)
            cdir = rdir / name
            design = _design(spec, recipe)
            if cdir.exists() and _read_json(cdir / DESIGN_FILE) != design:  # another design or recipe: start over
                _log(f"regressor: {name} was trained as another design; training it again")
                shutil.rmtree(cdir)
            if not cdir.exists():
                write_json_atomic(design, cdir / DESIGN_FILE)
            stored = _read_json(cdir / METRICS_FILE, lambda v: percentages_ok(v, ["val/reg/gt_known"])) or {}
            if "val/reg/gt_known" not in stored or _read_json(cdir / CURVE_FILE) is None or not _checkpoint_ok(cdir):
                _log(f"regressor: {name} ({spec['head']} head, {spec['features']} features), train + val")
                (cdir / PER_IMAGE_FILE).unlink(missing_ok=True)  # an earlier model's test: tested again below
                stored = train_regressor(pseudo_boxes, data, cdir, head=spec["head"], features=spec["features"],
                                         stages=("fit", "validate"),
                                         **_at_least_one_batch(_kwargs(common, spec), num_train))
            val[name] = float(stored["val/reg/gt_known"])
        chosen = choose_on_val(val)  # 2. the choice, from val alone
        _log(f"regressor: val GT-known {', '.join(f'{k} {v:.2f}' for k, v in val.items())}; chosen: {chosen}")
        pseudo = {p.index: p for p in records}
        dm.setup("fit")  # train images (and, cached, their features) of the correctness figures
        rows: dict[str, Any] = {}
        for name, spec in candidates.items():  # 3. test every candidate, for the report
            cdir = rdir / name
            tested = _read_json(cdir / METRICS_FILE, lambda v: percentages_ok(v, ["test/reg/gt_known", *(
                k for k in v if k.startswith("test/reg/") and not k.endswith("mean_iou"))]), log=False)
            if tested is None or not records_ok(cdir / PER_IMAGE_FILE, [RECORD_METHOD], REGRESSOR_FIELDS,
                                                flat_as=RECORD_METHOD):
                train_regressor(pseudo_boxes, data, cdir, head=spec["head"], features=spec["features"],
                                stages=("test",), **_at_least_one_batch(_kwargs(common, spec), num_train))
                tested = json.loads((cdir / METRICS_FILE).read_text())
            metrics = tested
            model = BoxRegressor.load_from_checkpoint(cdir / "checkpoints" / "last.ckpt", map_location="cpu").eval()
            fit = _train_fit(model, dm, data, pseudo, measure=name == chosen)
            curve = _read_json(cdir / CURVE_FILE)
            rows[name] = {**_design(spec, recipe), "label": spec["label"],
                          "val_gt_known": float(metrics["val/reg/gt_known"]),
                          **{k.split("/")[-1]: float(v) for k, v in metrics.items() if k.startswith("test/reg/")},
                          "train_pseudo_iou_per_epoch": curve["train_pseudo_iou"], "epochs": curve["epochs"], **fit}
        summary = {"chosen": chosen, "val_metric": "gt_known", "recipe": recipe, "candidates": rows}
        write_json_atomic(summary, done)
    # the candidates in their declared order, whether this run trained them or read them back (sorted keys)
    summary["candidates"] = {k: summary["candidates"][k] for k in (*candidates, *sorted(summary["candidates"]))
                             if k in summary["candidates"]}
    records: dict[str, Any] = {}
    for key, name in (("cream_reg", summary["chosen"]), ("cream_reg_psol", psol_candidate)):
        if name not in summary["candidates"]:
            continue
        per_image = load_records(rdir / name / PER_IMAGE_FILE, flat_as=RECORD_METHOD)[RECORD_METHOD]
        summary[key] = {**_box_levels(dict(summary["candidates"][name]), per_image), "candidate": name}
        records[key] = regressor_record(per_image)
    return summary, records
