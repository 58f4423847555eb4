"""Weights & Biases media for WSOL runs: CAM overlays with interactive boxes and BoxAcc curves.

The builders (:func:`wandb_overlay_image`, :func:`wandb_curve_table`, :func:`wandb_curve_plot`)
need no live run. :func:`log_wsol_media` logs them through a Lightning ``WandbLogger`` and is a
no-op for any other logger, for ``None``, on non-zero ranks and for disabled runs
(``WANDB_MODE=disabled`` or ``WandbLogger(mode="disabled")``), so callers never need to check.

Boxes go to W&B in the ``"pixel"`` domain. Our boxes are ``XYXY_INCLUSIVE`` (``x1`` is the last
pixel inside); W&B draws continuous rectangles, so ``maxX = x1 + 1`` and ``maxY = y1 + 1`` put the
edges around the last pixel rather than through it.

Example:
    >>> import numpy as np
    >>> img = wandb_overlay_image(np.zeros((16, 16, 3), np.uint8), np.eye(16), [[2, 2, 9, 9]],
    ...                           [3, 3, 9, 9], {0: "bird"}, "sample 0")
    >>> img._boxes["ground_truth"]._val[0]["position"]
    {'minX': 2, 'minY': 2, 'maxX': 10, 'maxY': 10}
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import wandb
from pytorch_lightning import Callback
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from torch import Tensor

from cream_pl.core.boxes import BoxFormat, box_iou_inclusive, convert_boxes
from cream_pl.reporting.viz import (
    _check_boxes,
    _check_rgb,
    denormalize_image,
    overlay_grid,
    overlay_heatmap,
    to_rgb_image,
)

__all__ = [
    "CURVE_COLUMNS",
    "box_data",
    "wandb_overlay_image",
    "wandb_curve_table",
    "wandb_curve_plot",
    "wsol_media",
    "log_wsol_media",
    "is_live_wandb_logger",
    "WSOLMediaCallback",
]

log = logging.getLogger(__name__)

CURVE_COLUMNS: tuple[str, str, str] = ("threshold", "method", "box_acc")


def _check_class_labels(class_labels: Mapping[int, str], class_id: int) -> dict[int, str]:
    labels = {}
    for k, v in class_labels.items():
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise ValueError(f"class_labels keys must be ints (class ids), got {k!r}")
        labels[int(k)] = str(v)
    if int(class_id) not in labels:
        raise ValueError(f"class_id {class_id} is not in class_labels (ids {sorted(labels)[:10]}...)")
    return labels


def box_data(
    boxes: Any,
    class_id: int,
    caption: str,
    scores: Sequence[Mapping[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """W&B ``box_data`` entries (``"domain": "pixel"``) for ``(N, 4)`` ``XYXY_INCLUSIVE`` boxes.

    Example:
        >>> box_data([[0, 0, 4, 9]], 3, "GT")
        [{'position': {'minX': 0, 'minY': 0, 'maxX': 5, 'maxY': 10}, 'class_id': 3, 'box_caption': 'GT', 'domain': 'pixel'}]
    """
    b = _check_boxes(boxes)
    if scores is not None and len(scores) != len(b):
        raise ValueError(f"got {len(scores)} score dicts for {len(b)} boxes")
    edges = (
        convert_boxes(torch.as_tensor(b), BoxFormat.XYXY_INCLUSIVE, BoxFormat.XYXY).to(torch.int64).tolist()
    )
    out = []
    for i, (x0, y0, x1, y1) in enumerate(edges):
        entry: dict[str, Any] = {
            "position": {"minX": x0, "minY": y0, "maxX": x1, "maxY": y1},
            "class_id": int(class_id),
            "box_caption": caption,
            "domain": "pixel",
        }
        if scores is not None:
            entry["scores"] = {str(k): float(v) for k, v in scores[i].items()}
        out.append(entry)
    return out


def wandb_overlay_image(
    image_rgb: np.ndarray,
    scoremap: np.ndarray | Tensor | None,
    gt_boxes: Any,
    pred_box: Any,
    class_labels: Mapping[int, str],
    caption: str,
    *,
    class_id: int = 0,
    alpha: float = 0.5,
) -> wandb.Image:
    """A ``wandb.Image`` of a CAM overlay with GT and predicted boxes as two toggleable box groups.

    Args:
        image_rgb: ``uint8`` RGB image ``(H, W, 3)``.
        scoremap: ``(h, w)`` map in [0, 1] blended over the image, or ``None`` for the plain image.
        gt_boxes: ``(N, 4)`` ``XYXY_INCLUSIVE`` GT boxes in image pixels (or ``None``).
        pred_box: ``(4,)`` or ``(M, 4)`` predicted box(es) (or ``None``); each gets an ``"iou"``
            score (best "+1" IoU against the GT boxes) when GT boxes are given.
        class_labels: ``{class id: name}`` shown by W&B.
        caption: image caption.
        class_id: class of the boxes (the image label); must be a key of ``class_labels``.
        alpha: heatmap weight.

    Returns:
        ``wandb.Image`` with ``boxes={"ground_truth": ..., "predictions": ...}``.
    """
    img = _check_rgb(image_rgb)
    labels = _check_class_labels(class_labels, class_id)
    shown = img if scoremap is None else overlay_heatmap(img, scoremap, alpha=alpha)
    gt = _check_boxes(gt_boxes, "gt_boxes")
    pred = _check_boxes(pred_box, "pred_box")
    name = labels[int(class_id)]
    groups: dict[str, dict[str, Any]] = {}
    if len(gt):
        groups["ground_truth"] = {"box_data": box_data(gt, class_id, f"GT: {name}"), "class_labels": labels}
    if len(pred):
        scores = None
        if len(gt):
            ious = box_iou_inclusive(torch.as_tensor(pred), torch.as_tensor(gt)).max(dim=1).values.tolist()
            scores = [{"iou": round(v, 4)} for v in ious]
        groups["predictions"] = {
            "box_data": box_data(pred, class_id, f"pred: {name}", scores),
            "class_labels": labels,
        }
    return wandb.Image(shown, caption=caption, boxes=groups or None)


def wandb_curve_table(
    thresholds: np.ndarray | Tensor | Sequence[float],
    acc_by_method: Mapping[str, np.ndarray | Tensor | Sequence[float]],
    *,
    max_points: int | None = None,
) -> wandb.Table:
    """A long-format ``wandb.Table`` (columns ``threshold``, ``method``, ``box_acc``) for a line plot.

    Args:
        thresholds: ``(T,)`` CAM thresholds.
        acc_by_method: ``{method (or "method@IoU50"): (T,) BoxAcc}``.
        max_points: keep at most this many evenly spaced thresholds per method (W&B tables are
            limited to 10,000 rows when logged); ``None`` keeps all.

    Example:
        >>> t = wandb_curve_table([0.0, 0.5], {"cam": [40.0, 60.0], "cream": [50.0, 70.0]})
        >>> t.columns, t.data[-1]
        (['threshold', 'method', 'box_acc'], [0.5, 'cream', 70.0])
    """
    thr = np.asarray(thresholds.detach().cpu() if isinstance(thresholds, Tensor) else thresholds, np.float64)
    if thr.ndim != 1 or thr.size == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D array, got shape {thr.shape}")
    if not acc_by_method:
        raise ValueError("acc_by_method is empty")
    keep = np.arange(thr.size)
    if max_points is not None and thr.size > max_points:
        if max_points < 2:
            raise ValueError(f"max_points must be >= 2, got {max_points}")
        keep = np.unique(np.linspace(0, thr.size - 1, max_points).round().astype(np.int64))
    data = []
    for method, acc in acc_by_method.items():
        a = np.asarray(acc.detach().cpu() if isinstance(acc, Tensor) else acc, np.float64)
        if a.shape != thr.shape:
            raise ValueError(f"acc_by_method[{method!r}] has shape {a.shape}, thresholds have {thr.shape}")
        data.extend([float(thr[i]), str(method), float(a[i])] for i in keep)
    return wandb.Table(columns=list(CURVE_COLUMNS), data=data)


def wandb_curve_plot(table: wandb.Table, title: str = "BoxAcc vs CAM threshold") -> Any:
    """``wandb.plot.line`` of a :func:`wandb_curve_table`, one line per ``method`` (``stroke``)."""
    return wandb.plot.line(table, "threshold", "box_acc", stroke="method", title=title)


def _flatten_curves(
    curves: Mapping[str, tuple[Any, Any]], iou_levels: Sequence[int | float]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    thr_ref: np.ndarray | None = None
    flat: dict[str, np.ndarray] = {}
    for method, (thr, acc) in curves.items():
        t = np.asarray(thr.detach().cpu() if isinstance(thr, Tensor) else thr, np.float64)
        a = np.asarray(acc.detach().cpu() if isinstance(acc, Tensor) else acc, np.float64)
        if a.ndim == 1:
            a = a[None]
        if a.shape != (len(iou_levels), t.shape[0]):
            raise ValueError(
                f"curves[{method!r}]: acc has shape {a.shape}, expected ({len(iou_levels)}, {t.shape[0]})"
            )
        if thr_ref is None:
            thr_ref = t
        elif t.shape != thr_ref.shape or not np.allclose(t, thr_ref):
            raise ValueError(f"curves[{method!r}] uses other thresholds than the first method")
        for level, row in zip(iou_levels, a):
            flat[f"{method}@IoU{level:g}"] = row
    assert thr_ref is not None
    return thr_ref, flat


def wsol_media(
    key_prefix: str,
    rows: Sequence[Mapping[str, Any]] | None = None,
    curves: Mapping[str, tuple[Any, Any]] | None = None,
    *,
    iou_levels: Sequence[int | float] = (30, 50, 70),
    class_labels: Mapping[int, str] | None = None,
    max_rows: int = 16,
    max_curve_points: int = 250,
) -> dict[str, Any]:
    """Build the W&B media dict logged by :func:`log_wsol_media` (no run needed).

    Keys: ``{prefix}/grid`` (the :func:`cream_pl.reporting.viz.overlay_grid` picture),
    ``{prefix}/{cam,cream}_overlays`` (lists of :func:`wandb_overlay_image`, boxes toggleable),
    ``{prefix}/box_acc_curve`` (a ``wandb.plot.line``, one line per ``method@IoUδ``).
    Rows use the :func:`~cream_pl.reporting.viz.overlay_grid` dict format plus an optional ``label``
    (class id, looked up in ``class_labels``).
    """
    media: dict[str, Any] = {}
    if rows:
        if len(rows) > max_rows:
            log.info("log_wsol_media: logging the first %d of %d rows", max_rows, len(rows))
            rows = list(rows)[:max_rows]
        columns = " | ".join(["image+GT", "CAM"] + (["CREAM"] if any(r.get("cream") is not None for r in rows) else []))
        media[f"{key_prefix}/grid"] = wandb.Image(overlay_grid(rows), caption=f"{key_prefix}: {columns}")
        for method in ("cam", "cream"):
            images = []
            for i, row in enumerate(rows):
                if row.get(method) is None:
                    continue
                image = to_rgb_image(row["image"], name=f"rows[{i}]['image']")
                label = int(row.get("label", 0))
                labels = dict(class_labels) if class_labels is not None else {label: f"class_{label}"}
                preds = row.get("pred_boxes") or {}
                caption = str(row.get("title", f"{key_prefix} #{i}"))
                images.append(
                    wandb_overlay_image(
                        image,
                        row[method],
                        row.get("gt_boxes"),
                        preds.get(method),
                        labels,
                        caption,
                        class_id=label,
                    )
                )
            if images:
                media[f"{key_prefix}/{method}_overlays"] = images
    if curves:
        thr, flat = _flatten_curves(curves, list(iou_levels))
        table = wandb_curve_table(thr, flat, max_points=max_curve_points)
        media[f"{key_prefix}/box_acc_curve"] = wandb_curve_plot(
            table, f"{key_prefix}: BoxAcc vs CAM threshold"
        )
    return media


def is_live_wandb_logger(logger: Any) -> bool:
    """True iff ``logger`` is a ``WandbLogger`` that would really log from this process.

    False for ``None``, other loggers, ranks other than 0, and disabled runs. A run is not
    started just to find out it is disabled.
    """
    if not isinstance(logger, WandbLogger) or rank_zero_only.rank > 0:
        return False
    existing = getattr(logger, "_experiment", None)
    if existing is None:
        mode = (getattr(logger, "_wandb_init", None) or {}).get("mode") or os.environ.get("WANDB_MODE")
        if mode == "disabled":
            return False
        existing = logger.experiment
    return not bool(getattr(existing, "disabled", False))


def log_wsol_media(
    logger: Logger | Iterable[Logger] | None,
    key_prefix: str,
    rows: Sequence[Mapping[str, Any]] | None = None,
    curves: Mapping[str, tuple[Any, Any]] | None = None,
    step: int | None = None,
    **kwargs: Any,
) -> bool:
    """Log a result grid, per-method box overlays and BoxAcc curves to W&B, if W&B is live.

    Args:
        logger: a ``WandbLogger``, any other logger, a list of loggers (``trainer.loggers``) or ``None``.
        key_prefix: W&B key prefix, e.g. ``"val/media"``.
        rows: :func:`cream_pl.reporting.viz.overlay_grid` rows (first ``max_rows`` are logged).
        curves: ``{method: (thresholds (T,), acc (n_iou, T))}`` as for
            :func:`cream_pl.reporting.viz.plot_box_acc_curves`.
        step: the trainer's global step (logged as ``trainer/global_step``).
        **kwargs: passed to :func:`wsol_media` (``iou_levels``, ``class_labels``, ``max_rows``, ...).

    Returns:
        True if something was logged, False if this was a no-op.

    Example:
        >>> log_wsol_media(None, "val/media", rows=[])
        False
    """
    loggers = list(logger) if isinstance(logger, Iterable) else [logger]
    live = [lg for lg in loggers if is_live_wandb_logger(lg)]
    if not live or (not rows and not curves):
        return False
    media = wsol_media(key_prefix, rows, curves, **kwargs)
    for lg in live:
        lg.log_metrics(media, step=step)
    return bool(media)


class WSOLMediaCallback(Callback):
    """After each real validation run: overlays (image, CAM, CREAM, GT box, predicted boxes at the val τ*)
    and BoxAcc curves of a WSOL classifier to W&B, when a W&B logger is live (else nothing).

    It reads what the classifier kept of its first val batch (``media_batch``: ``num_media_images``
    images, boxes and CAM / CREAM maps) and the val results. ``cream-pl fit`` (:class:`cream_pl.pipelines.recipe_builder.CreamCLI`)
    adds it to every trainer; with a hand-built ``Trainer`` pass it in ``callbacks``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.failed: str | None = None  # why W&B refused the media once: not tried again in this fit

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self.failed or trainer.sanity_checking or not any(is_live_wandb_logger(lg) for lg in trainer.loggers):
            return
        media = getattr(pl_module, "media_batch", None)  # None with num_media_images 0: the curves alone
        methods = getattr(pl_module, "last_results", {}).get("val", {}).get("methods", {})
        rows = [] if media is None else _rows(media, methods, pl_module)
        curves = {name: (res["curves"]["thresholds"], res["curves"]["box_acc"])
                  for name, res in methods.items() if name in ("cam", "cream") and "curves" in res}
        try:
            log_wsol_media(trainer.loggers, "val/media", rows=rows, curves=curves, step=pl_module.global_step,
                           iou_levels=list(pl_module.hparams.iou_thresholds), class_labels=_class_labels(trainer))
        except OSError as err:  # pictures never end a fit (before: an unwritable W&B data folder did, unsaved)
            from pytorch_lightning.utilities import rank_zero_warn

            self.failed = " ".join(str(err).split())[:300]
            rank_zero_warn(f"W&B media not logged, and not tried again in this fit: {self.failed} (W&B stages its "
                           f"tables in {wandb.env.get_data_dir()}: set WANDB_DATA_DIR to a writable folder)")


def _rows(media: Mapping[str, Any], methods: Mapping[str, Any], pl_module: Any) -> list[dict[str, Any]]:
    """The overlay rows of a classifier's ``media_batch``: image, GT boxes and class, maps, boxes at the val τ*."""
    from cream_pl.metrics.functional import box_from_scoremap_at

    rows = []
    for i in range(media["image"].shape[0]):
        row: dict[str, Any] = {
            "image": denormalize_image(media["image"][i], pl_module.backbone.input_mean, pl_module.backbone.input_std),
            "gt_boxes": None if media["boxes"] is None else media["boxes"][i].numpy(),
            "pred_boxes": {},
            "title": f"#{i}",
        }
        if media.get("label") is not None:
            row["label"] = int(media["label"][i])
        for name, maps in media["maps"].items():
            scoremap = maps[i].numpy()
            row[name] = scoremap
            tau = methods.get(name, {}).get("loc_threshold")
            if tau is not None:
                row["pred_boxes"][name] = box_from_scoremap_at(scoremap, tau)
        rows.append(row)
    return rows


def _class_labels(trainer: Any) -> dict[int, str] | None:
    """Class id -> name from the trainer's data module (``class_names.txt``); ``None`` where it has none."""
    try:
        names = getattr(trainer, "datamodule", None) and trainer.datamodule.class_names
    except (OSError, ValueError):
        return None
    return {i: str(n) for i, n in enumerate(names)} if names else None
