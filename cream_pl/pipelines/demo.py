"""``make demo``: the whole pipeline on the embedded CUB-like benchmark (or any benchmark-format dataset).

data (``cream-pl data synth --preset cub``) -> classifier (CAM + CREAM; CREAM's inference T / κ /
λ / feature norm chosen on the val split; its pseudo boxes over the train split written when the fit
ends) -> test (CAM, CREAM with the paper's defaults, CREAM val-selected, T / λ ablations, the center
baseline) -> box regressor on the val-selected CREAM's pseudo boxes, trained until its train IoU to
them plateaus (CREAM_reg) -> paired bootstrap intervals of every stated difference ->
``results/embedded/`` (``metrics.json``, ``metrics.md``, plots). CI-CAM and KD-CI-CAM have their own
study, ``make demo-kd``.

Every stage writes its output atomically and is skipped when that output already exists, so an
interrupted demo resumes where it stopped (``--restart`` starts over).

Example:
    $ python -m cream_pl.pipelines.demo --out results/embedded
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cream_pl.pipelines.run_state import (
    StageTimer,
    callback_index,
    ensure_synthetic_dataset,
    synthetic_dataset_is_current,
)
from cream_pl.reporting.demo_report import STAGES
from cream_pl.reporting.tables import write_json_atomic

__all__ = ["run_demo", "main"]

ABLATION_T = (0, 1, 2, 3, 4)
ABLATION_LAMBDA = (0.2, 0.6, 0.8, 0.99, 1.0)


DEMO_VERSION = 3
"""Bumped when a stage's meaning changes: a work folder of another version starts over."""
DEFAULT_PRESET = "cub"
PER_IMAGE_METHODS = ("cam", "cream", "cream_selected")
"""The methods whose per-image test outcomes are kept for the paired intervals."""
DIFFERENCES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("cream_selected", "cam", ("max_box_acc_v2", "gt_known", "top1_loc")),
    ("cream", "cam", ("max_box_acc_v2", "gt_known", "top1_loc")),
    ("cream_selected", "cream", ("max_box_acc_v2", "gt_known")),
    ("cam", "center_baseline", ("max_box_acc_v2",)),
    ("cream_reg", "cream_selected", ("gt_known", "top1_loc")),  # one box each (a map's MaxBoxAccV2 sweeps τ per δ)
    ("cream_reg", "cam", ("gt_known", "top1_loc")),
    ("cream_reg_psol", "cream_selected", ("gt_known", "top1_loc")),
)
"""Every difference the results state: (a, b, metrics), each with a paired bootstrap interval."""
def _log(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def _synth_config(fast: bool, preset: str) -> dict[str, Any]:
    from dataclasses import asdict

    from cream_pl.data.synth import PRESETS

    overrides: dict[str, Any] = dict(num_train=64, num_val=16, num_test=32, num_classes=4) if fast else {}
    return json.loads(json.dumps({**asdict(PRESETS[preset]), **overrides}))


def _data_is_current(data: Path, seed: int, fast: bool, preset: str, owned: bool) -> bool:
    """A dataset is there and, when it is the demo's own synthetic root, holds this preset and seed."""
    return synthetic_dataset_is_current(data, _synth_config(fast, preset), seed, owned=owned)


def _stage_data(data: Path, seed: int, fast: bool, preset: str = DEFAULT_PRESET, owned: bool = True) -> bool:
    """Use the dataset at ``data``; the demo's own synthetic root (``owned``) is (re)generated when it is
    missing or holds another configuration; returns whether it was. A user's dataset is never touched."""
    return ensure_synthetic_dataset(data, _synth_config(fast, preset), seed, owned=owned, log=_log,
                                    what=f"the embedded synthetic benchmark (preset {preset!r})")


STAGE_OUTPUTS = ("classifier.ckpt", "classifier", "classifier_test.json", "per_image_test.npz", "diagnostics.json",
                 "regressor", "timing.json", "load.json")
"""What the stages write into the work folder (with ``pseudo_boxes_*``); removed when the inputs change."""


FAST_OVERRIDES: dict[str, Any] = {"trainer.max_epochs": 1, "trainer.check_val_every_n_epoch": 1,
                                  "model.init_args.pretrained": False, "data.init_args.batch_size": 16,
                                  "model.init_args.cam_curve_interval": 0.01, "data.init_args.resize_size": 128,
                                  "data.init_args.crop_size": 112}
"""``--fast`` (a smoke test): one epoch from a random init, small crops, a coarse CAM-threshold curve."""


def data_sha1(data: Path) -> str:
    """The dataset's identity: its generator config (a synthetic root), else its metadata files, hashed with their paths."""
    import hashlib

    h = hashlib.sha1()
    info = data / "synth_config.json"
    files = [info] if info.is_file() else sorted((data / "metadata").rglob("*.txt"))
    for f in files:
        h.update(f.relative_to(data).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _inputs(data: Path, recipe: Path, train_seed: int, fast: bool) -> dict[str, Any]:
    """What every stage's output depends on: the dataset (:func:`data_sha1`), the recipe's text, the training seed,
    ``--fast`` and the demo's version; never where the data is (moving it keeps the work)."""
    import hashlib

    return {"data_sha1": data_sha1(data), "recipe_sha1": hashlib.sha1(recipe.read_bytes()).hexdigest(),
            "train_seed": train_seed, "fast": fast, "demo_version": DEMO_VERSION}


def _same_inputs(work: Path, inputs: dict[str, Any]) -> bool:
    """``work/inputs.json`` records ``inputs`` (one of before path-free fingerprints: its data path aside)."""
    path = work / "inputs.json"
    if not path.is_file():
        return False
    stored = json.loads(path.read_text())
    return {k: v for k, v in stored.items() if k != "data"} == inputs


def _check_work(work: Path, inputs: dict[str, Any]) -> None:
    """Start the work folder over when it holds the outputs of other inputs (data, recipe, seed, version)."""
    path = work / "inputs.json"
    if _same_inputs(work, inputs):
        if json.loads(path.read_text()) != inputs:
            write_json_atomic(inputs, path)  # today's layout
        return
    stale = [work / n for n in STAGE_OUTPUTS if (work / n).exists()] + sorted(work.glob("pseudo_boxes_*"))
    if stale:
        _log(f"work: {work} holds the outputs of other inputs (data, recipe, seed or demo version); starting over")
    for p in stale:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    write_json_atomic(inputs, path)


def _test_done(work: Path) -> bool:
    return (work / "classifier_test.json").is_file() and (work / "per_image_test.npz").is_file()


def _diagnostics_done(work: Path) -> bool:
    path = work / "diagnostics.json"
    return path.is_file() and "responsibilities" in json.loads(path.read_text())


def _regressor_done(work: Path) -> bool:
    from cream_pl.pipelines.demo_regressor import is_done

    return is_done(work / "regressor")


def _stage_classifier(recipe: Path, data: Path, work: Path, fast: bool, train_seed: int = 0) -> tuple[Any, Any, Any]:
    from cream_pl.models import WSOLClassifier
    from cream_pl.pipelines.recipe_builder import build_from_recipe

    ckpt = work / "classifier.ckpt"
    run_dir = work / "classifier"
    overrides: dict[str, Any] = {
        "seed_everything": train_seed,
        "data.init_args.data_root": str(data),
        "trainer.default_root_dir": str(run_dir),
        "trainer.logger.init_args.save_dir": str(run_dir),
        "trainer.callbacks.0.init_args.dirpath": str(run_dir / "checkpoints"),
        "model.init_args.record_per_image": list(PER_IMAGE_METHODS),
    }
    boxes_at_fit_end = callback_index(recipe, "PseudoBoxesAtFitEnd")
    if boxes_at_fit_end is not None:  # the fit writes the val-selected CREAM's train pseudo boxes itself
        overrides[f"trainer.callbacks.{boxes_at_fit_end}.init_args.out_path"] = str(work / f"pseudo_boxes_{PSEUDO_SOURCE}.json")
    if fast:
        overrides.update(FAST_OVERRIDES)
    cli = build_from_recipe(recipe, overrides, run_dir)
    if ckpt.is_file():
        _log(f"classifier: loading {ckpt}")
        model = WSOLClassifier.load_from_checkpoint(ckpt, map_location="cpu", pretrained=False)
    else:
        _log(f"classifier: training ({recipe}, seed {train_seed})")
        model = cli.model
        cli.trainer.fit(model, datamodule=cli.datamodule)
        tmp = ckpt.with_suffix(".ckpt.tmp")
        cli.trainer.save_checkpoint(tmp)
        os.replace(tmp, ckpt)
    return cli, model, ckpt


def _test(cli: Any, model: Any, work: Path) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """Test results and the per-image records of :data:`PER_IMAGE_METHODS` (both kept for a resume)."""
    from cream_pl.core.io import atomic_write_bytes
    from cream_pl.reporting.evidence import load_records, save_records

    path, rec_path = work / "classifier_test.json", work / "per_image_test.npz"
    if _test_done(work):
        _log(f"evaluation: using {path}")
        return json.loads(path.read_text()), load_records(rec_path)
    _log("evaluation: test split, CAM / CREAM (paper defaults and val-selected) and the T / λ ablations")
    cli.trainer.test(model, datamodule=cli.datamodule, verbose=False)
    res = model.last_results["test"]
    records = {k: v for k, v in model.per_image.get("test", {}).items() if k in PER_IMAGE_METHODS}
    atomic_write_bytes(rec_path, save_records(records))
    write_json_atomic(res, path)
    return json.loads(path.read_text()), records


def _center_baseline(cli: Any, interval: float) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The center baseline's row (MaxBoxAccV2 and per IoU level) and per-image record on the test split."""
    from cream_pl.core.boxes import resize_boxes_protocol
    from cream_pl.metrics.baselines import center_baseline_best_iou
    from cream_pl.metrics.bootstrap import max_box_acc_statistic

    samples = cli.datamodule.eval_dataset("test").samples  # batch "index" = position in this list
    boxes = [resize_boxes_protocol(torch.tensor(s.boxes), s.size, (224, 224)).numpy() for s in samples]
    best = center_baseline_best_iou(boxes, interval=interval)
    row = {"max_box_acc_v2": float(max_box_acc_statistic(best))}
    for d in (30, 50, 70):
        row[f"max_box_acc_iou{d}"] = float(max_box_acc_statistic(best, (d,)))
    return row, {"index": np.arange(len(boxes)), "best_iou": best, "iou_thresholds": np.array([30.0, 50.0, 70.0])}


def _method_row(method: dict[str, Any], cls: dict[str, Any]) -> dict[str, Any]:
    keep = ("max_box_acc_v2", "max_box_acc_iou30", "max_box_acc_iou50", "max_box_acc_iou70", "max_box_acc",
            "gt_known", "top1_loc", "top5_loc", "pxap", "loc_threshold", "loc_threshold_source")
    row = {k: method[k] for k in keep if k in method}
    row["cls_acc"] = cls.get("cls_acc")
    return row


PSEUDO_SOURCE = "cream_selected"
"""CREAM_reg's pseudo boxes: the val-selected CREAM at its val τ* (the paper's CREAM when no search ran)."""


def _pseudo_box_source(model: Any) -> str:
    """The maps the train split is boxed with: the val-selected CREAM where val selected one, else CREAM."""
    return PSEUDO_SOURCE if model.selected_cream is not None else "cream"


def _stage_pseudo_boxes(model: Any, cli: Any, work: Path, source: str) -> dict[str, Any]:
    """The train split's pseudo boxes (written by the fit's ``PseudoBoxesAtFitEnd``, else here) and their quality
    (as the writer stored it; the box sizes are read off the file only where it stored none)."""
    from cream_pl.pseudo_boxes.generate import generate_pseudo_boxes, quality_path

    path = work / f"pseudo_boxes_{source}.json"
    if not path.is_file():
        _log(f"pseudo boxes: {source} maps over the train split (τ* from the val split)")
        generate_pseudo_boxes(model, cli.datamodule, path, source=source, threshold=None,
                              trainer_kwargs={"accelerator": "auto", "devices": 1})
    else:
        _log(f"pseudo boxes: using {path}")
    quality = json.loads(quality_path(path).read_text()) if quality_path(path).is_file() else {}
    if "mean_area_fraction" not in quality:  # no quality file (a train split without boxes to score against)
        coco = json.loads(path.read_text())
        sizes = {im["id"]: im["width"] * im["height"] for im in coco["images"]}
        area = np.array([a["bbox"][2] * a["bbox"][3] / sizes[a["image_id"]] for a in coco["annotations"]])
        quality.update(mean_area_fraction=float(area.mean()), near_full_image_fraction=float((area >= 0.9).mean()),
                       threshold=coco["info"].get("threshold"))
    return {"file": str(path), **quality, "source": source}


def _figures(model: Any, cli: Any, test_res: dict[str, Any], out: Path) -> None:
    from cream_pl.metrics.functional import box_from_scoremap_at, prepare_scoremaps
    from cream_pl.reporting.viz import denormalize_image, overlay_grid, plot_ablation, plot_box_acc_curves

    methods = test_res["methods"]
    curves = {name: (np.asarray(methods[name]["curves"]["thresholds"]), np.asarray(methods[name]["curves"]["box_acc"]))
              for name in ("cam", "cream") if name in methods}
    plot_box_acc_curves(curves, methods["cam"]["curves"]["iou_levels"], out / "box_acc_curves.png",
                        title="BoxAcc vs CAM threshold (test split, all contours)")
    ds = cli.datamodule.eval_dataset("test")
    batch = cli.datamodule.collate([ds[i] for i in range(min(8, len(ds)))]) if hasattr(cli.datamodule, "collate") else None
    if batch is None:
        from cream_pl.data import wsol_collate

        batch = wsol_collate([ds[i] for i in range(min(8, len(ds)))])
    model.eval()
    with torch.no_grad():
        feats, _ = model.forward_features(batch["image"])
        maps = model.method_maps(feats.float(), batch["label"], ["cam", "cream"])
    rows = []
    for i in range(batch["image"].shape[0]):
        row: dict[str, Any] = {"image": denormalize_image(batch["image"][i], model.backbone.input_mean, model.backbone.input_std),
                               "gt_boxes": batch["boxes"][i].numpy(), "pred_boxes": {}, "title": batch["image_id"][i]}
        for name in ("cam", "cream"):
            scoremap = prepare_scoremaps(maps[name][i : i + 1])[0].numpy()
            row[name] = scoremap
            row["pred_boxes"][name] = box_from_scoremap_at(scoremap, methods[name]["loc_threshold"])
        rows.append(row)
    overlay_grid(rows, out / "overlays.png")
    t_rows = [methods["cam" if t == 0 else ("cream" if t == 2 else f"cream_T{t}")] for t in ABLATION_T]
    plot_ablation(list(ABLATION_T), {"MaxBoxAccV2": [r["max_box_acc_v2"] for r in t_rows],
                                     "GT-known Loc": [r["gt_known"] for r in t_rows]},
                  "EM iterations T", "accuracy (%)", out / "ablation_T.png", title="CREAM: EM iterations (test)")
    lam_rows = [methods["cream" if lam == 0.8 else f"cream_lambda{lam:g}"] for lam in ABLATION_LAMBDA]
    plot_ablation(list(ABLATION_LAMBDA), {"MaxBoxAccV2": [r["max_box_acc_v2"] for r in lam_rows],
                                          "GT-known Loc": [r["gt_known"] for r in lam_rows]},
                  "momentum λ", "accuracy (%)", out / "ablation_lambda.png", title="CREAM: momentum λ (test)")


def _ablations(methods: dict[str, Any]) -> dict[str, Any]:
    def pick(name: str) -> dict[str, Any]:
        return methods.get(name, {})

    t_names = ["cream_T0" if "cream_T0" in methods else "cam", "cream_T1", "cream", "cream_T3", "cream_T4"]
    lam_names = ["cream_lambda0.2", "cream_lambda0.6", "cream", "cream_lambda0.99", "cream_lambda1"]
    metrics = ("max_box_acc_v2", "gt_known", "top1_loc")
    return {
        "T": {"values": list(ABLATION_T), **{m: [pick(n).get(m) for n in t_names] for m in metrics}},
        "lambda": {"values": list(ABLATION_LAMBDA), **{m: [pick(n).get(m) for n in lam_names] for m in metrics}},
    }


@torch.no_grad()
def _diagnostics(model: Any, cli: Any, work: Path) -> dict[str, Any]:
    """What CREAM's map is made of here: MaxBoxAccV2 (test, interval 0.01) of its ingredients, and how decided its EM is.

    Evaluates, on the same features: CAM; CREAM with the paper's defaults; ``M_hat`` alone (EM +
    calibration, without ``+ norm(CAM)``); CREAM without calibration; the cosine of every feature to
    the class's foreground embedding; a class-agnostic map, the feature norm ``||f_ij||`` (how
    salient the object is to the backbone); and the EM's foreground responsibilities inside / outside
    the true boxes (:func:`_responsibilities`). Values only: no difference is claimed from them.
    """
    path = work / "diagnostics.json"
    if _diagnostics_done(work):
        return json.loads(path.read_text())
    _log("diagnostics: CREAM ingredients and variants on the test split")
    import torch.nn.functional as F

    from cream_pl.data import wsol_collate
    from cream_pl.metrics import MaxBoxAccV2
    from cream_pl.metrics.scored_maps import ScoringSpec, score_map_sets
    from cream_pl.models.cam import class_activation_maps, normalize_maps
    from cream_pl.models.cream import cream_maps

    model.eval()
    ds = cli.datamodule.eval_dataset("test")
    feats, labels, boxes = [], [], []
    for i in range(0, len(ds), 32):
        batch = wsol_collate([ds[j] for j in range(i, min(i + 32, len(ds)))])
        f, _ = model.forward_features(batch["image"])
        feats.append(f.float())
        labels.append(batch["label"])
        boxes += batch["boxes"]
    feats_all, labels_all = torch.cat(feats), torch.cat(labels)
    cam = class_activation_maps(feats_all, model.classifier.weight, labels_all)
    e_fg, e_bg = model.context.get(0)
    hp = model.hparams
    base = dict(kappa=hp.cream_kappa, tau=hp.cream_tau, iterations=hp.cream_iterations)
    final = cream_maps(feats_all, cam, labels_all, e_fg, e_bg, **base)
    variants = {
        "cam": normalize_maps(cam),
        "cream": final,
        "m_hat_alone": final - normalize_maps(cam),
        "cream_no_calibration": cream_maps(feats_all, cam, labels_all, e_fg, e_bg, calibration=False, **base),
        "cosine_to_fg_embedding": torch.einsum("bkhw,bk->bhw", F.normalize(feats_all, dim=1),
                                               F.normalize(e_fg[labels_all], dim=1)),
        "feature_norm_class_agnostic": feats_all.norm(dim=1),
    }
    out: dict[str, Any] = {"interval": 0.01, "split": "test", "max_box_acc_v2": {}}
    scored = score_map_sets([m.detach() for m in variants.values()], boxes, None, ScoringSpec(cam_interval=0.01))
    for name, figures in zip(variants, scored):
        metric = MaxBoxAccV2(cam_curve_interval=0.01)
        metric.update(figures, boxes)
        out["max_box_acc_v2"][name] = metric.compute()["max_box_acc"]
    out["responsibilities"] = _responsibilities(model, feats_all, labels_all, boxes)
    write_json_atomic(out, path)
    return json.loads(path.read_text())  # as a resumed run reads it: the same order either way


def _responsibilities(model: Any, feats: torch.Tensor, labels: torch.Tensor, boxes: list[torch.Tensor]) -> dict[str, Any]:
    """How decided CREAM's EM is: mean foreground responsibility ``z_fg`` of the feature cells whose centre lies
    inside / outside the true box, for the paper's defaults and for the val-selected candidate."""
    from cream_pl.models.cream import cream_em

    hp = model.hparams
    candidates = {"paper_defaults": {"T": hp.cream_iterations, "kappa": hp.cream_kappa, "lambda": float(hp.cream_lambda),
                                     "feature_norm": hp.cream_feature_norm}}
    if model.selected_cream is not None:
        candidates["val_selected"] = {k: model.selected_cream[k] for k in ("T", "kappa", "lambda", "feature_norm")}
    h, w = feats.shape[-2:]
    cy = (torch.arange(h, dtype=torch.float64) + 0.5) * 224 / h
    cx = (torch.arange(w, dtype=torch.float64) + 0.5) * 224 / w
    inside = torch.zeros(len(boxes), h, w, dtype=torch.bool)
    for i, bxs in enumerate(boxes):
        for x0, y0, x1, y1 in bxs.double().tolist():
            inside[i] |= ((cy >= y0) & (cy <= y1 + 1))[:, None] & ((cx >= x0) & (cx <= x1 + 1))[None, :]
    out: dict[str, Any] = {}
    for name, c in candidates.items():
        e_fg, e_bg = model.context.get(model.lambdas.index(float(c["lambda"])))
        z = cream_em(feats, e_fg[labels], e_bg[labels], kappa=float(c["kappa"]), iterations=int(c["T"]),
                     feature_norm=c["feature_norm"])
        out[name] = {**c, "z_fg_inside_box": float(z[inside].mean()), "z_fg_outside_box": float(z[~inside].mean())}
    return out


def run_demo(out: Path | str = "results/embedded", work: Path | str = "outputs/demo", data: Path | str = "data/synth",
             recipe: Path | str = "experiments/embedded_cream.yaml", seed: int = 0, fast: bool = False,
             restart: bool = False, skip_regressor: bool = False, *, preset: str = DEFAULT_PRESET,
             owned_data: bool = True, train_seed: int = 0) -> dict[str, Any]:
    """Run every stage (skipping finished ones) and write the results folder. Returns ``metrics.json``'s content.

    Args:
        seed: the synthetic dataset's seed (``owned_data`` only).
        train_seed: the classifier's and the regressor's training seed (``make demo-seeds`` varies it).
        owned_data: ``data`` is the demo's own synthetic root, regenerated when it holds another
            configuration; ``False`` for a user's dataset, which is used as it is.
    """
    from cream_pl.reporting.demo_report import write_results
    from cream_pl.reporting.evidence import compute_differences

    start = time.time()
    out, work, data, recipe = Path(out), Path(work), Path(data), Path(recipe)
    if restart:
        shutil.rmtree(work, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    timer = StageTimer(work / "timing.json", STAGES)  # stages of another demo version are not ours
    record = timer.record

    t = time.time()
    ran = _stage_data(data, seed, fast, preset, owned_data)
    data_s = time.time() - t
    inputs = _inputs(data, recipe, train_seed, fast)
    if not _same_inputs(work, inputs):
        timer.clear()  # every stage below reruns
    _check_work(work, inputs)
    record("data_s", data_s, ran)
    t = time.time()
    ran = not (work / "classifier.ckpt").is_file()
    cli, model, ckpt = _stage_classifier(recipe, data, work, fast, train_seed)
    record("classifier_s", time.time() - t, ran)
    t = time.time()
    ran = not _test_done(work)
    test_res, records = _test(cli, model, work)
    record("evaluation_s", time.time() - t, ran)
    methods = test_res["methods"]
    results: dict[str, Any] = {name: _method_row(methods[name], test_res) for name in PER_IMAGE_METHODS if name in methods}
    interval = float(model.hparams.cam_curve_interval)
    results["center_baseline"], records["center_baseline"] = _center_baseline(cli, interval)
    if "cream_selected" in methods:
        sel = methods["cream_selected"]
        results["selected"] = {"cream": {
            "T": int(sel["T"]), "kappa": float(sel["kappa"]), "lambda": float(sel["lambda"]),
            "feature_norm": sel["feature_norm"], "val_score": float(sel["val_score"]), "val_metric": "max_box_acc_v2",
            "candidates": len(model.cream_candidates),
            "search_space": dict(model.hparams.cream_search)}}
    ablations = _ablations(methods)
    t = time.time()
    ran = not _diagnostics_done(work)
    results["diagnostics"] = _diagnostics(model, cli, work)
    record("diagnostics_s", time.time() - t, ran)
    t = time.time()
    _figures(model, cli, test_res, out)
    record("figures_s", time.time() - t, True)
    if not skip_regressor:
        t = time.time()
        source = _pseudo_box_source(model)
        ran = not (work / f"pseudo_boxes_{source}.json").is_file()
        quality = _stage_pseudo_boxes(model, cli, work, source)
        record("pseudo_boxes_s", time.time() - t, ran)
        t = time.time()
        ran = not _regressor_done(work)
        dm = cli.datamodule
        from cream_pl.pipelines.demo_regressor import run_regressor_stage

        summary, reg_records = run_regressor_stage(Path(quality["file"]), data, work / "regressor", ckpt,
                                                   mean=dm.mean, std=dm.std, train_seed=train_seed, fast=fast)
        records.update(reg_records)
        record("regressor_s", time.time() - t, ran)
        for key in ("cream_reg", "cream_reg_psol"):
            if key in summary:
                results[key] = {**{k: v for k, v in summary[key].items() if k != "cls_acc"},
                                "cls_acc": test_res.get("cls_acc")}
        results["cream_reg_candidates"] = summary["candidates"]
        if "cream_reg" in records and "cream_selected" in records:  # does the regressor fix CREAM's misses, or copy them?
            from cream_pl.reporting.evidence import hit_agreement

            results["cream_reg_agreement"] = {"a": "cream_selected", "b": "cream_reg", "metric": "gt_known",
                                              **hit_agreement(records["cream_selected"], records["cream_reg"])}
        results["cream_reg_selection"] = {"chosen": summary["chosen"], "val_metric": summary["val_metric"],
                                          "recipe": summary["recipe"]}
        results["pseudo_box_quality"] = {k: v for k, v in quality.items() if k != "file"}
    t = time.time()
    results["differences"] = compute_differences(records, DIFFERENCES, n_resamples=1000, seed=0)
    record("bootstrap_s", time.time() - t, True)
    timing = dict(timer.saved)
    timing["total_s"] = sum(v for k, v in timing.items() if k in STAGES)
    timing["this_invocation_s"] = time.time() - start
    results["ablations"] = ablations
    num_test = len(cli.datamodule.eval_dataset("test"))
    synth = data / "synth_config.json"
    results["benchmark"] = {"preset": preset if (owned_data and synth.is_file()) else None, "num_test": num_test,
                            "num_val": len(cli.datamodule.eval_dataset("val")),
                            "num_train": len(cli.datamodule.eval_dataset("train")), "num_classes": cli.datamodule.num_classes,
                            "data": str(data), "seeds": 1, "train_seed": train_seed}
    results["protocol"] = {
        "split": "test", "eval_size": 224, "cam_curve_interval": interval,
        "max_box_acc_v2": "mean over IoU {30,50,70} of the best-threshold box accuracy, all contours",
        "max_box_acc": "V1: IoU 50, largest contour, best threshold",
        "gt_known/top1_loc/top5_loc": "largest-contour box at the fixed threshold tau* chosen on the val split (IoU >= 0.5)",
        "pxap": "pixel average precision over 1002 histogram bins (where the split has masks)",
        "selection": "cream_selected: T, kappa, lambda and the M-step feature norm chosen on the val split by MaxBoxAccV2",
        "regressor": "class from the classifier, box from the regressor; IoU >= 0.5 with the '+1' inclusive IoU",
        "center_baseline": "a fixed centred Gaussian map (CREAM paper, table 1); MaxBoxAccV2 only",
        "num_test_images": num_test,
    }
    results["timing"] = {k: round(v, 1) for k, v in timing.items()}
    write_results(results, out, data=data, seed=seed, num_classes=cli.datamodule.num_classes, fast=fast)
    cam, sel_row = results["cam"], results.get("cream_selected", results.get("cream"))
    line = (f"[demo] done in {timing['this_invocation_s'] / 60:.1f} min (all stages: {timing['total_s'] / 60:.1f} min): "
            f"MaxBoxAccV2 CAM {cam['max_box_acc_v2']:.2f} -> CREAM (val-selected) {sel_row['max_box_acc_v2']:.2f}; "
            f"GT-known CAM {cam['gt_known']:.2f} -> {sel_row['gt_known']:.2f}")
    if "cream_reg" in results:
        line += f" -> CREAM_reg {results['cream_reg'].get('gt_known', float('nan')):.2f}"
    print(line + f"  ({out / 'metrics.md'})", flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    from cream_pl.pipelines.entry import pipeline_main, preflight

    @pipeline_main("python -m cream_pl.pipelines.demo")  # a user error: one line, exit 2
    def _main(argv: Sequence[str] | None) -> int:
        from cream_pl.core.options import OneLineArgumentParser, seed_int

        parser: argparse.ArgumentParser = OneLineArgumentParser(prog="python -m cream_pl.pipelines.demo",
                                                                description=__doc__.split("\n\n")[0])
        parser.add_argument("--out", default="results/embedded", help="results folder")
        parser.add_argument("--work", default="outputs/demo", help="checkpoints and intermediate files")
        parser.add_argument("--data", default=None,
                            help="dataset root in the benchmark format (default: data/synth, the embedded benchmark, "
                            "generated when missing or when it holds another preset)")
        parser.add_argument("--preset", default=DEFAULT_PRESET, choices=("cub", "hard"),
                            help="synthetic preset of the embedded benchmark (without --data)")
        parser.add_argument("--recipe", default="experiments/embedded_cream.yaml", help="classifier recipe")
        parser.add_argument("--seed", type=seed_int, default=0, help="the synthetic dataset's seed")
        parser.add_argument("--train-seed", type=seed_int, default=0, help="the classifier's and the regressor's seed")
        parser.add_argument("--fast", action="store_true", help="tiny data, 1 epoch, random init (smoke test)")
        parser.add_argument("--restart", action="store_true", help="ignore finished stages")
        parser.add_argument("--skip-regressor", action="store_true", help="leave out the pseudo-box and regressor stages")
        args = parser.parse_args(argv)
        if args.data is not None and not (Path(args.data) / "metadata" / "test" / "image_ids.txt").is_file():
            parser.exit(2, f"python -m cream_pl.pipelines.demo: error: {args.data}: no dataset in the benchmark "
                        "format there "
                        "(expected metadata/test/image_ids.txt); leave --data out for the embedded benchmark\n")
        if args.data is not None:
            from cream_pl.data.metadata import read_split

            test = read_split(Path(args.data) / "metadata" / "test").samples
            if not any(sample.boxes for sample in test):
                parser.exit(2, f"python -m cream_pl.pipelines.demo: error: {Path(args.data) / 'metadata' / 'test'}: "
                            "no boxes in the "
                            "test split; the demo's table, center baseline and box regressor need boxes (score a mask-only "
                            "dataset with `cream-pl fit` / `cream-pl test`, which report PxAP)\n")
        # before any work: --out / --work usable, a given dataset's metadata, labels and images sound
        preflight(inputs=[(args.recipe, "--recipe")], outputs=[(args.out, "--out"), (args.work, "--work")],
                  data=args.data)
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        run_demo(args.out, args.work, args.data or "data/synth", args.recipe, args.seed, args.fast, args.restart,
                 args.skip_regressor, preset=args.preset, owned_data=args.data is None, train_seed=args.train_seed)
        return 0

    return _main(argv)


if __name__ == "__main__":
    sys.exit(main())
