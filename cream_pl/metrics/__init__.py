"""WSOL metrics under the exact wsolevaluation protocol: MaxBoxAcc (V1), MaxBoxAccV2, PxAP and
Top-1 / Top-5 / GT-known Loc, as torchmetrics ``Metric`` classes over pure functions.

Example:
    >>> from cream_pl.metrics import MaxBoxAccV2, PxAP, prepare_scoremaps
"""

from __future__ import annotations

from cream_pl.metrics.box_accuracy import BoxAccuracy, MaxBoxAcc, MaxBoxAccV2
from cream_pl.metrics.functional import (
    RESIZE_LENGTH,
    best_iou_per_threshold,
    box_accuracy_compute,
    box_accuracy_update,
    box_from_scoremap_at,
    boxes_from_scoremap,
    cam_thresholds,
    localized_per_threshold,
    prepare_scoremap,
    prepare_scoremaps,
    pxap_bin_edges,
    pxap_from_histograms,
    pxap_histograms,
    pxap_pr_curve,
    scoremap_to_uint8,
    threshold_levels,
)
from cream_pl.metrics.localization import LocalizationAccuracy
from cream_pl.metrics.pxap import PxAP, load_gt_mask

__all__ = [
    "RESIZE_LENGTH",
    "BoxAccuracy",
    "MaxBoxAcc",
    "MaxBoxAccV2",
    "PxAP",
    "LocalizationAccuracy",
    "load_gt_mask",
    "prepare_scoremap",
    "prepare_scoremaps",
    "cam_thresholds",
    "scoremap_to_uint8",
    "threshold_levels",
    "boxes_from_scoremap",
    "box_from_scoremap_at",
    "best_iou_per_threshold",
    "localized_per_threshold",
    "box_accuracy_update",
    "box_accuracy_compute",
    "pxap_bin_edges",
    "pxap_histograms",
    "pxap_pr_curve",
    "pxap_from_histograms",
]
