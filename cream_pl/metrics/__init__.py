"""WSOL metrics under the exact wsolevaluation protocol: MaxBoxAcc (V1), MaxBoxAccV2, PxAP and
Top-1 / Top-5 / GT-known Loc, as torchmetrics ``Metric`` classes over pure functions, and their bootstrap intervals.

May import: core and data; never models, pseudo_boxes, pipelines, cli or reporting.

The names are loaded on first use (PEP 562), so ``import cream_pl.metrics.functional`` (and
``cream-pl evaluate``) does not import torch or torchmetrics.

Example:
    >>> from cream_pl.metrics import MaxBoxAccV2, PxAP, prepare_scoremaps
"""

from __future__ import annotations

from cream_pl.core.lazy_exports import lazy_exports

_FUNCTIONAL = "cream_pl.metrics.functional"
_EXPORTS: dict[str, str] = {
    "BoxAccuracy": "cream_pl.metrics.box_accuracy",
    "MaxBoxAcc": "cream_pl.metrics.box_accuracy",
    "MaxBoxAccV2": "cream_pl.metrics.box_accuracy",
    "PxAP": "cream_pl.metrics.pxap",
    "load_gt_mask": "cream_pl.metrics.pxap",
    "LocalizationAccuracy": "cream_pl.metrics.localization",
    **{name: _FUNCTIONAL for name in (
        "RESIZE_LENGTH", "prepare_scoremap", "prepare_scoremaps", "cam_thresholds", "scoremap_to_uint8",
        "threshold_levels", "boxes_from_scoremap", "box_from_scoremap_at", "best_iou_per_threshold",
        "localized_per_threshold", "box_accuracy_update", "box_accuracy_compute", "pxap_bin_edges",
        "pxap_histograms", "pxap_pr_curve", "pxap_from_histograms",
    )},
}

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

__getattr__, __dir__ = lazy_exports(_EXPORTS, globals())
