"""Every localisation figure of a batch of raw maps from one pass per map: the metrics' shared input.

A validation step scores the same maps three ways (MaxBoxAccV2 all contours at IoU 30/50/70,
the largest contour's GT-known curve at IoU 50, PxAP's histograms), and ``cream_search`` does so
for every candidate of its grid (90 on the embedded recipe). Scored one metric at a time, each map
is resized, converted and swept by the component trees once per metric. Here one job per map does
it all once:

1. :func:`~cream_pl.metrics.functional.prepare_scoremap` (bicubic to 224, min-max), then
   ``floor(255 * s)``;
2. one component-tree pass (:func:`~cream_pl.metrics.component_tree.level_ious`) gives the
   all-contour rows, the per-threshold best IoU, and the largest-contour row
   (:func:`~cream_pl.metrics.functional.localized_from_uint8` with ``v1_iou_thresholds``);
3. with masks, PxAP's two histograms in one compiled pass
   (:func:`~cream_pl.metrics.pixel_histogram.mask_histograms`).

Jobs of all map sets run on one thread pool (the kernels and OpenCV release the GIL). The result,
one :class:`ScoredMaps` per map set, is what :class:`~cream_pl.metrics.box_accuracy.BoxAccuracy`,
:class:`~cream_pl.metrics.localization_curve.LocalizationCurve` and
:class:`~cream_pl.metrics.pxap.PxAP` accept in ``update`` in place of the score maps: the numbers
are identical to feeding them the maps one metric at a time (tested), since every step is the same
function.

Example:
    >>> import numpy as np
    >>> cam = np.zeros((1, 14, 14)); cam[0, 3:8, 4:10] = 1.0
    >>> plan = ScoringSpec(cam_interval=0.1)
    >>> scored = score_map_sets([cam], [np.array([[64, 48, 159, 127]])], None, plan)[0]
    >>> scored.box_counts.shape, scored.v1_ok.shape, scored.num_images
    ((3, 10), (1, 10), 1)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cream_pl.metrics.component_tree import level_ious_largest
from cream_pl.metrics.functional import (
    RESIZE_LENGTH,
    _check_gt_boxes,
    _iou_fractions,
    _largest_contour_ok,
    _to_numpy,
    cam_thresholds,
    check_iou_levels,
    prepare_scoremap_uint8,
    pxap_bin_edges,
    threshold_levels,
)
from cream_pl.metrics.pixel_histogram import mask_histograms

__all__ = ["ScoringSpec", "ScoredMaps", "score_map_sets"]


@dataclass(frozen=True)
class ScoringSpec:
    """What every map is scored for.

    Attributes:
        cam_interval: CAM threshold step (thresholds ``np.arange(0, 1, interval)``).
        iou_thresholds: IoU levels (percent) of the all-contour rows (MaxBoxAccV2).
        v1_iou: IoU level (percent) of the largest-contour row (GT-known / Top-1 Loc, MaxBoxAcc V1).
        size: side of the protocol grid the maps are brought to.
        per_image_iou: also keep each image's best all-contour IoU per threshold (per-image records).
    """

    cam_interval: float = 0.001
    iou_thresholds: tuple[float, ...] = (30, 50, 70)
    v1_iou: float = 50
    size: int = RESIZE_LENGTH
    per_image_iou: bool = False
    thresholds: np.ndarray = field(init=False, repr=False, compare=False)
    edges: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_iou_levels(self.iou_thresholds, self.v1_iou)
        object.__setattr__(self, "iou_thresholds", tuple(float(d) for d in self.iou_thresholds))
        object.__setattr__(self, "thresholds", cam_thresholds(self.cam_interval))
        object.__setattr__(self, "edges", pxap_bin_edges(self.thresholds))


@dataclass
class ScoredMaps:
    """One map set's figures for one batch (see the module docstring).

    Attributes:
        spec: what was computed.
        num_images: images of the batch.
        box_counts: int64 ``(len(iou_thresholds), n_thr)`` images localised by some contour (MaxBoxAccV2
            counts), or ``None`` without GT boxes.
        v1_ok: bool ``(B, n_thr)``: the largest contour reaches ``v1_iou``; ``None`` without GT boxes.
        best_iou: float64 ``(B, n_thr)`` best all-contour IoU (only with ``spec.per_image_iou``).
        true_hist, false_hist: PxAP's histograms (float64), or ``None`` without masks.
    """

    spec: ScoringSpec
    num_images: int
    box_counts: np.ndarray | None = None
    v1_ok: np.ndarray | None = None
    best_iou: np.ndarray | None = None
    true_hist: np.ndarray | None = None
    false_hist: np.ndarray | None = None

    def check(self, thresholds: np.ndarray, what: str) -> None:
        """Raise unless these figures were computed on ``thresholds`` (the metric's own grid)."""
        if len(thresholds) != len(self.spec.thresholds) or not np.array_equal(thresholds, self.spec.thresholds):
            raise ValueError(f"{what}: these scored maps use CAM interval {self.spec.cam_interval:g} "
                             f"({len(self.spec.thresholds)} thresholds), the metric {len(thresholds)} thresholds")


_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0


def _pool(workers: int) -> ThreadPoolExecutor:
    global _POOL, _POOL_SIZE
    if _POOL is None or _POOL_SIZE != workers:
        if _POOL is not None:
            _POOL.shutdown(wait=False)
        _POOL, _POOL_SIZE = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cream-score"), workers
    return _POOL


def _score_one(raw: np.ndarray, gt: np.ndarray | None, mask: np.ndarray | None,
               spec: ScoringSpec) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, tuple | None]:
    scoremap, img = prepare_scoremap_uint8(raw, spec.size)
    rows = best = hist = None
    if gt is not None:
        levels = threshold_levels(int(img.max()), spec.thresholds)
        index = np.clip(levels, -1, 255) + 1
        hi, lo, _, known, largest_iou = level_ious_largest(img, gt, levels)
        v2 = hi[index][None, :] >= _iou_fractions(spec.iou_thresholds)[:, None]
        v1 = _largest_contour_ok(img, gt, levels, hi, lo, _iou_fractions((spec.v1_iou,)), known, largest_iou)[0]
        rows = (v2, v1)
        best = hi[index] if spec.per_image_iou else None
    if mask is not None:
        hist = mask_histograms(scoremap, mask, spec.edges)
    return rows, best, hist  # type: ignore[return-value]


def score_map_sets(
    map_sets: Sequence[Any],
    gt_boxes: Sequence[Any] | None,
    masks: Any | None,
    spec: ScoringSpec,
    num_workers: int | None = None,
) -> list[ScoredMaps]:
    """Score several sets of maps of the same batch (methods, search candidates) on one thread pool.

    Args:
        map_sets: each ``(B, h, w)`` raw maps (tensor or array; any size, brought to the grid by
            :func:`~cream_pl.metrics.functional.prepare_scoremap`).
        gt_boxes: ``B`` arrays of ``(n_i, 4)`` ``XYXY_INCLUSIVE`` GT boxes on the grid, or ``None``.
        masks: ``(B, size, size)`` masks (1 foreground, 0 background, 255 ignore), or ``None``.
        spec: what to compute.
        num_workers: threads (``None``: all CPUs). Results never depend on it.

    Returns:
        one :class:`ScoredMaps` per map set, in order.

    Raises:
        ValueError: a map set, box list or mask batch of another length; a bad box or mask value
            (the message names the image of the batch).
    """
    arrays = [np.asarray(_to_numpy(m)) for m in map_sets]
    if not arrays:
        return []
    n = len(arrays[0])
    for a in arrays:
        if a.ndim != 3 or len(a) != n:
            raise ValueError(f"every map set must be (B, h, w) with B = {n}, got shape {a.shape}")
    gts: list[np.ndarray] | None = None
    if gt_boxes is not None:
        if len(gt_boxes) != n:
            raise ValueError(f"got {n} maps per set but {len(gt_boxes)} GT box sets")
        gts = []
        for i, g in enumerate(gt_boxes):
            try:
                gts.append(_check_gt_boxes(g, "score_map_sets"))
            except ValueError as err:
                raise ValueError(f"image {i} of the batch: {err}") from err
    mask_arr: np.ndarray | None = None
    if masks is not None:
        mask_arr = np.asarray(_to_numpy(masks))
        if mask_arr.shape != (n, spec.size, spec.size):
            raise ValueError(f"masks must be (B, {spec.size}, {spec.size}) with B = {n}, got {mask_arr.shape}")
        bad = ~np.isin(mask_arr, (0, 1, 255))
        if bad.any():
            i = int(np.flatnonzero(bad.reshape(n, -1).any(1))[0])
            raise ValueError(f"image {i} of the batch: mask values must be 0 (background), 1 (foreground) or 255 "
                             f"(ignore), found {np.unique(mask_arr[i][bad[i]])[:5].tolist()}")
        mask_arr = mask_arr.astype(np.uint8, copy=False)

    def job(k: int) -> Any:
        s, i = divmod(k, n)
        try:
            return _score_one(arrays[s][i], None if gts is None else gts[i],
                              None if mask_arr is None else mask_arr[i], spec)
        except ValueError as err:
            raise ValueError(f"image {i} of the batch: {err}") from err

    workers = (os.cpu_count() or 1) if num_workers is None else int(num_workers)
    workers = max(1, min(workers, len(arrays) * n))
    total = len(arrays) * n
    results = [job(k) for k in range(total)] if workers == 1 else list(_pool(workers).map(job, range(total)))
    out = []
    for s in range(len(arrays)):
        part = results[s * n:(s + 1) * n]
        scored = ScoredMaps(spec, n)
        if gts is not None:
            v2 = np.zeros((len(spec.iou_thresholds), len(spec.thresholds)), np.int64)
            for rows, _, _ in part:
                v2 += rows[0]
            scored.box_counts = v2
            scored.v1_ok = (np.stack([rows[1] for rows, _, _ in part]) if n
                            else np.zeros((0, len(spec.thresholds)), bool))
            if spec.per_image_iou:
                scored.best_iou = (np.stack([best for _, best, _ in part]) if n
                                   else np.zeros((0, len(spec.thresholds))))
        if mask_arr is not None:
            scored.true_hist = np.zeros(len(spec.edges) - 1)
            scored.false_hist = np.zeros(len(spec.edges) - 1)
            for _, _, (t, f) in part:
                scored.true_hist += t
                scored.false_hist += f
        out.append(scored)
    return out
