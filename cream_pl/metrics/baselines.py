"""Baselines without a network: the CREAM paper's "center baseline" (table 1), a fixed centred Gaussian map.

On CUB it scores 54.4 MaxBoxAccV2 (48.9 on ILSVRC, 45.8 PxAP on OpenImages): objects sit near the
image centre. A benchmark where it scores far from that gives a wrong picture of every method's
margin, so it is reported beside CAM. Max-over-thresholds metrics do not depend on the Gaussian's
width (its level sets are the same centred discs), so there is no parameter to choose.

Example:
    >>> m = center_gaussian_scoremap(5)
    >>> float(m[2, 2]), float(m[0, 0])
    (1.0, 0.0)
"""

from __future__ import annotations

import numpy as np

__all__ = ["center_gaussian_scoremap", "center_baseline_best_iou", "center_baseline_box_accuracy"]


def center_gaussian_scoremap(size: int = 224, sigma: float = 0.25) -> np.ndarray:
    """``(size, size)`` float64 centred isotropic Gaussian, min-max normalised (as every score map)."""
    if size < 2:
        raise ValueError(f"size must be >= 2, got {size}")
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    g = np.exp(-((xx - c) ** 2 + (yy - c) ** 2) / (2 * (sigma * size) ** 2))
    return (g - g.min()) / (g.max() - g.min())


def center_baseline_best_iou(gt_boxes: list[np.ndarray], interval: float = 0.001) -> np.ndarray:
    """``(n, n_thr)`` per-image best IoU per threshold of the center baseline (all contours).

    The same per-image record as ``WSOLClassifier(record_per_image=...)``'s ``best_iou``, so the
    baseline enters :func:`cream_pl.metrics.bootstrap.paired_bootstrap_max_box_acc` like a method.

    Args:
        gt_boxes: per image, ``(n, 4)`` ``XYXY_INCLUSIVE`` boxes rescaled to the 224 evaluation grid
            (:func:`cream_pl.core.boxes.resize_boxes_protocol`).
    """
    from cream_pl.metrics.functional import best_iou_per_threshold, cam_thresholds

    scoremap = center_gaussian_scoremap(224)
    thresholds = cam_thresholds(interval)
    if not gt_boxes:
        return np.zeros((0, len(thresholds)))
    return np.stack([np.asarray(best_iou_per_threshold(scoremap, g, thresholds, True)) for g in gt_boxes])


def center_baseline_box_accuracy(gt_boxes: list[np.ndarray], interval: float = 0.001,
                                 iou_thresholds: tuple[int, ...] = (30, 50, 70)) -> dict[str, float]:
    """MaxBoxAccV2 (and per IoU level) of the center baseline for GT boxes already in the 224 grid.

    Args:
        gt_boxes: per image, ``(n, 4)`` ``XYXY_INCLUSIVE`` boxes rescaled to the 224 evaluation grid
            (:func:`cream_pl.core.boxes.resize_boxes_protocol`).
    """
    best = center_baseline_best_iou(gt_boxes, interval)
    per_iou = {f"max_box_acc_iou{d}": float((best >= d / 100).mean(0).max() * 100) for d in iou_thresholds}
    return {"max_box_acc_v2": float(np.mean(list(per_iou.values()))), **per_iou}
