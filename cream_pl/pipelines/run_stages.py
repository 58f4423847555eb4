"""The stages a run may go through after its fit and test, by name: a declaration lists them (``runs[i].stages``).

Each stage is a function of the run's :class:`RunContext` that returns a mapping: its ``rows`` and
``records`` (optional) join the experiment's result rows and per-image records (so its rows can enter
the stated differences); everything else is the stage's output, kept under its name for the report.
``done(ctx)`` says whether the stage's output is already on disk (a resumed run skips the work; the
stage timer keeps the time of the invocation that did it). Every stage writes its files atomically.

=================== ===============================================================================
stage               what it adds
=================== ===============================================================================
``center_baseline`` the centred-Gaussian baseline's row and record on the test split
``diagnostics``     MaxBoxAccV2 of CREAM's ingredients, and how decided its EM is (``diagnostics.json``)
``figures``         BoxAcc curves, overlays and the T / λ ablation plots, into the results folder
``pseudo_boxes``    the val-selected CREAM's boxes over the train split, with their quality
``regressor``       CREAM_reg: box-regressor designs on those boxes, one chosen on val (its rows)
``probe_map_extent`` where each map's GT-known boxes go wrong (``probe_map_extent.json``)
``split_statistics`` box-area and box-centre statistics of the val and test splits
=================== ===============================================================================
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RunContext", "STAGES", "Stage", "select_teachers", "split_statistics"]


@dataclass
class RunContext:
    """One run at one seed, fitted and tested: what its stages read."""

    key: str
    seed: int
    folder: Path
    data: Path
    out: Path
    fast: bool
    cli: Any
    model: Any
    ckpt: Path
    test: dict[str, Any]
    records: dict[str, Any]
    log: Callable[[str], None] = print
    outputs: dict[str, Any] = field(default_factory=dict)  # earlier stages' outputs, by name


@dataclass(frozen=True)
class Stage:
    run: Callable[[RunContext], Mapping[str, Any]]
    done: Callable[[RunContext], bool]
    timer: str | None  # the stage's key in the run's timing.json (None: not timed)
    rows: tuple[str, ...] = ()  # the result rows it adds (a declaration's differences may name them)


def _read(path: Path) -> Any:
    return json.loads(path.read_text())


def _state(path: Path, ctx: RunContext | None = None) -> Any:
    """A stage's own JSON output, or ``None`` where it is missing or damaged (logged with ``ctx``): done again."""
    from cream_pl.pipelines.run_state import read_state

    return read_state(path, log=ctx.log if ctx is not None else None)


# ------------------------------------------------------------------------------------------ center baseline
def _center_baseline(ctx: RunContext) -> dict[str, Any]:
    import numpy as np
    import torch

    from cream_pl.core.boxes import resize_boxes_protocol
    from cream_pl.metrics.baselines import center_baseline_best_iou
    from cream_pl.metrics.bootstrap import max_box_acc_statistic

    samples = ctx.cli.datamodule.eval_dataset("test").samples  # batch "index" = position in this list
    boxes = [resize_boxes_protocol(torch.tensor(s.boxes), s.size, (224, 224)).numpy() for s in samples]
    best = center_baseline_best_iou(boxes, interval=float(ctx.model.hparams.cam_curve_interval))
    row = {"max_box_acc_v2": float(max_box_acc_statistic(best))}
    for d in (30, 50, 70):
        row[f"max_box_acc_iou{d}"] = float(max_box_acc_statistic(best, (d,)))
    record = {"index": np.arange(len(boxes)), "best_iou": best, "iou_thresholds": np.array([30.0, 50.0, 70.0])}
    return {"rows": {"center_baseline": row}, "records": {"center_baseline": record}}


# ------------------------------------------------------------------------------------------ diagnostics
def _diagnostics_done(ctx: RunContext) -> bool:
    return "responsibilities" in (_state(ctx.folder / "diagnostics.json") or {})


def _diagnostics(ctx: RunContext) -> dict[str, Any]:
    """What CREAM's map is made of here: MaxBoxAccV2 (test, interval 0.01) of its ingredients, and how decided its EM is.

    On the same features: CAM; CREAM with the paper's defaults; ``M_hat`` alone (EM + calibration,
    without ``+ norm(CAM)``); CREAM without calibration; the cosine of every feature to the class's
    foreground embedding; the class-agnostic feature norm ``||f_ij||``; and the EM's foreground
    responsibilities inside / outside the true boxes. Values only: no difference is claimed from them.
    """
    import torch
    import torch.nn.functional as F

    from cream_pl.data import wsol_collate
    from cream_pl.metrics import MaxBoxAccV2
    from cream_pl.metrics.scored_maps import ScoringSpec, score_map_sets
    from cream_pl.models.cam import class_activation_maps, normalize_maps
    from cream_pl.models.cream import cream_maps
    from cream_pl.reporting.tables import write_json_atomic

    path = ctx.folder / "diagnostics.json"
    found = _state(path, ctx) or {}
    if "responsibilities" in found:
        return {"diagnostics": found}
    ctx.log("diagnostics: CREAM ingredients and variants on the test split")
    model = ctx.model.eval()
    ds = ctx.cli.datamodule.eval_dataset("test")
    feats, labels, boxes = [], [], []
    with torch.no_grad():
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
    return {"diagnostics": _read(path)}  # as a resumed run reads it: the same order either way


def _responsibilities(model: Any, feats: Any, labels: Any, boxes: list[Any]) -> dict[str, Any]:
    """Mean foreground responsibility ``z_fg`` of the feature cells whose centre lies inside / outside the true box,
    for the paper's defaults and for the val-selected candidate."""
    import torch

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


# ------------------------------------------------------------------------------------------ figures
FIGURES_STAGING = ".figures.partial"
"""``<out>/.figures.partial``: the figures stage's files until the report is written (:func:`publish_figures`): a
run stopped in between left new figures beside the earlier report."""


def publish_figures(out: Path, keep: bool) -> None:
    """Move the staged figures into ``out`` (``keep``: once the report is written), or drop them (a leftover of a
    run cut short, before this run's stages)."""
    import os
    import shutil

    staged = out / FIGURES_STAGING
    if keep and staged.is_dir():
        for f in sorted(staged.iterdir()):
            os.replace(f, out / f.name)
    shutil.rmtree(staged, ignore_errors=True)


def _figures(ctx: RunContext) -> dict[str, Any]:
    import numpy as np
    import torch

    from cream_pl.data import wsol_collate
    from cream_pl.metrics.functional import box_from_scoremap_at, prepare_scoremaps
    from cream_pl.reporting.demo_report import ABLATION_LAMBDA, ABLATION_T
    from cream_pl.reporting.viz import denormalize_image, overlay_grid, plot_ablation, plot_box_acc_curves

    out, model, methods = ctx.out / FIGURES_STAGING, ctx.model, ctx.test["methods"]  # published with the report
    out.mkdir(parents=True, exist_ok=True)
    curves = {name: (np.asarray(methods[name]["curves"]["thresholds"]), np.asarray(methods[name]["curves"]["box_acc"]))
              for name in ("cam", "cream") if name in methods}
    plot_box_acc_curves(curves, methods["cam"]["curves"]["iou_levels"], out / "box_acc_curves.png",
                        title="BoxAcc vs CAM threshold (test split, all contours)")
    ds = ctx.cli.datamodule.eval_dataset("test")
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
    for values, names, label, file, title in (
        (ABLATION_T, ["cam" if t == 0 else ("cream" if t == 2 else f"cream_T{t}") for t in ABLATION_T],
         "EM iterations T", "ablation_T.png", "CREAM: EM iterations (test)"),
        (ABLATION_LAMBDA, ["cream" if lam == 0.8 else f"cream_lambda{lam:g}" for lam in ABLATION_LAMBDA],
         "momentum λ", "ablation_lambda.png", "CREAM: momentum λ (test)")):
        picked = [methods[n] for n in names]
        plot_ablation(list(values), {"MaxBoxAccV2": [r["max_box_acc_v2"] for r in picked],
                                     "GT-known Loc": [r["gt_known"] for r in picked]},
                      label, "accuracy (%)", out / file, title=title)
    return {}


# ------------------------------------------------------------------------------------------ pseudo boxes
def pseudo_box_source(model: Any) -> str:
    """The maps the train split is boxed with: the val-selected CREAM where val selected one, else CREAM."""
    return "cream_selected" if model.selected_cream is not None else "cream"


def _pseudo_boxes_path(ctx: RunContext) -> Path:
    return ctx.folder / f"pseudo_boxes_{pseudo_box_source(ctx.model)}.json"


def _pseudo_boxes(ctx: RunContext) -> dict[str, Any]:
    """The train split's pseudo boxes (written by the fit's ``PseudoBoxesAtFitEnd``, else here) and their quality
    (as the writer stored it; the box sizes are read off the file only where it stored none)."""
    import numpy as np

    from cream_pl.pseudo_boxes.generate import generate_pseudo_boxes, quality_path

    source, path = pseudo_box_source(ctx.model), _pseudo_boxes_path(ctx)
    coco = _state(path, ctx)
    if coco is None and path.is_file():  # the run's own file, damaged: written again
        path.unlink()
        quality_path(path).unlink(missing_ok=True)
    if not path.is_file():
        from cream_pl.pseudo_boxes.generate import OtherRunShards

        ctx.log(f"pseudo boxes: {source} maps over the train split (τ* from the val split)")
        try:
            generate_pseudo_boxes(ctx.model, ctx.cli.datamodule, path, source=source, threshold=None,
                                  trainer_kwargs={"accelerator": "auto", "devices": 1})
        except OtherRunShards:  # the shards of the fit-end writer, cut short, in other chunks: the run's own
            ctx.log(f"pseudo boxes: {path}.shards: another writer's chunks; predicting them again")
            generate_pseudo_boxes(ctx.model, ctx.cli.datamodule, path, source=source, threshold=None,
                                  trainer_kwargs={"accelerator": "auto", "devices": 1}, overwrite=True)
    else:
        ctx.log(f"pseudo boxes: using {path}")
    quality = _state(quality_path(path), ctx) or {}
    if "mean_area_fraction" not in quality:  # no quality file (a train split without boxes to score against)
        coco = coco if coco is not None else _read(path)
        sizes = {im["id"]: im["width"] * im["height"] for im in coco["images"]}
        area = np.array([a["bbox"][2] * a["bbox"][3] / sizes[a["image_id"]] for a in coco["annotations"]])
        quality.update(mean_area_fraction=float(area.mean()), near_full_image_fraction=float((area >= 0.9).mean()),
                       threshold=coco["info"].get("threshold"))
    return {"file": str(path), **quality, "source": source}


# ------------------------------------------------------------------------------------------ regressor
def _regressor_done(ctx: RunContext) -> bool:
    from cream_pl.pipelines.demo_regressor import is_done

    return is_done(ctx.folder / "regressor")


def _regressor(ctx: RunContext) -> dict[str, Any]:
    """CREAM_reg on the pseudo boxes: its rows (class from the classifier), records, every candidate and the choice."""
    from cream_pl.pipelines.demo_regressor import run_regressor_stage
    from cream_pl.reporting.evidence import hit_agreement

    boxes = ctx.outputs.get("pseudo_boxes") or _pseudo_boxes(ctx)
    dm = ctx.cli.datamodule
    summary, records = run_regressor_stage(Path(boxes["file"]), ctx.data, ctx.folder / "regressor", ctx.ckpt,
                                           mean=dm.mean, std=dm.std, train_seed=ctx.seed, fast=ctx.fast)
    rows = {key: {**{k: v for k, v in summary[key].items() if k != "cls_acc"}, "cls_acc": ctx.test.get("cls_acc")}
            for key in ("cream_reg", "cream_reg_psol") if key in summary}
    out: dict[str, Any] = {"rows": rows, "records": records, "candidates": summary["candidates"],
                           "selection": {"chosen": summary["chosen"], "val_metric": summary["val_metric"],
                                         "recipe": summary["recipe"]}}
    if "cream_reg" in records and "cream_selected" in ctx.records:  # does the regressor fix CREAM's misses, or copy them?
        out["agreement"] = {"a": "cream_selected", "b": "cream_reg", "metric": "gt_known",
                            **hit_agreement(ctx.records["cream_selected"], records["cream_reg"])}
    return out


# ------------------------------------------------------------------------------------------ probe
def _probe_path(ctx: RunContext) -> Path:
    return ctx.folder / "probe_map_extent.json"


def _probe_done(ctx: RunContext) -> bool:
    path = _probe_path(ctx)
    return path.is_file() and path.stat().st_mtime_ns >= (ctx.folder / "test.json").stat().st_mtime_ns


def _probe(ctx: RunContext) -> dict[str, Any]:
    """Where each of the run's two maps' GT-known boxes go wrong (:mod:`cream_pl.pipelines.probe_map_extent`),
    once per trained model (redone when the model's test is newer)."""
    from cream_pl.pipelines.probe_map_extent import probe_run
    from cream_pl.reporting.tables import write_json_atomic

    probe = _state(_probe_path(ctx), ctx) if _probe_done(ctx) else None
    if probe is None:
        ctx.log(f"{ctx.folder.name}: probing where its boxes go wrong (test split, no selection)")
        write_json_atomic(probe_run(ctx.folder, ctx.data), _probe_path(ctx))
        probe = _read(_probe_path(ctx))  # as a resumed run reads it
    return {"probe": probe}


# ------------------------------------------------------------------------------------------ split statistics
def split_statistics(split_dir: Path) -> dict[str, Any]:
    """Images, instances per image, box-area fraction and box-centre statistics of a split (first box)."""
    import numpy as np

    from cream_pl.data.metadata import read_split

    samples = read_split(split_dir).samples
    area, cx, cy = [], [], []
    for s in samples:
        w, h = s.size
        x0, y0, x1, y1 = s.boxes[0]
        area.append((x1 - x0 + 1) * (y1 - y0 + 1) / (w * h))
        cx.append((x0 + x1 + 1) / 2 / w)
        cy.append((y0 + y1 + 1) / 2 / h)
    a = np.array(area)
    return {"images": len(samples), "instances_per_image": float(np.mean([len(s.boxes) for s in samples])),
            "area_mean": float(a.mean()), "area_median": float(np.median(a)),
            "area_p10": float(np.percentile(a, 10)), "area_p90": float(np.percentile(a, 90)),
            "centre_x": f"{np.mean(cx):.2f} ± {np.std(cx):.2f}", "centre_y": f"{np.mean(cy):.2f} ± {np.std(cy):.2f}"}


def _split_statistics(ctx: RunContext) -> dict[str, Any]:
    return {"statistics": {s: split_statistics(ctx.data / "metadata" / s) for s in ("val", "test")}}


# ------------------------------------------------------------------------------------------ teachers
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



STAGES: dict[str, Stage] = {
    "split_statistics": Stage(_split_statistics, lambda ctx: False, None),
    "center_baseline": Stage(_center_baseline, lambda ctx: False, None, ("center_baseline",)),
    "diagnostics": Stage(_diagnostics, _diagnostics_done, "diagnostics_s"),
    "figures": Stage(_figures, lambda ctx: False, "figures_s"),
    "pseudo_boxes": Stage(_pseudo_boxes, lambda ctx: _pseudo_boxes_path(ctx).is_file(), "pseudo_boxes_s"),
    "regressor": Stage(_regressor, _regressor_done, "regressor_s", ("cream_reg", "cream_reg_psol")),
    "probe_map_extent": Stage(_probe, _probe_done, None),
}
"""Every stage a declaration may name, by name."""
