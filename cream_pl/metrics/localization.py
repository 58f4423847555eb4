"""Top-1 Loc, Top-5 Loc and GT-known Loc at a fixed CAM threshold, as a torchmetrics ``Metric``.

The older WSOL metrics (wsolevaluation #14, #50): the box comes from the GT-class score map at a
*fixed* threshold (largest contour by default, same map -> box rule as MaxBoxAcc), or is given
directly (box regressor). An image is

- GT-known correct when the best "+1" IoU with its GT boxes is ``>= iou_threshold``;
- Top-1 correct when it is GT-known correct and the top-1 class is the label;
- Top-5 correct when it is GT-known correct and the label is among the top-5 classes.

When the top-1 class is the label, the predicted-class map is the GT-class map, so GT-class maps
suffice for Top-1 Loc too. State: four int64 counters summed across processes.

Example:
    >>> import torch
    >>> metric = LocalizationAccuracy(cam_threshold=0.2)
    >>> maps = torch.zeros(2, 224, 224, dtype=torch.float64); maps[:, 40:120, 50:150] = 1.0
    >>> boxes = [torch.tensor([[50, 40, 149, 119]])] * 2
    >>> logits = torch.tensor([[0.1, 0.9], [0.8, 0.2]])
    >>> metric.update(maps, boxes, logits, torch.tensor([1, 1]))
    >>> metric.compute()
    {'gt_known': 100.0, 'top1_loc': 50.0, 'top5_loc': 100.0}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from cream_pl.core.boxes import box_iou_inclusive
from cream_pl.metrics.functional import _check_gt_boxes, boxes_from_scoremap

__all__ = ["LocalizationAccuracy"]


class LocalizationAccuracy(Metric):
    """GT-known, Top-1 and Top-5 localisation accuracy (percent) at a fixed CAM threshold.

    Args:
        cam_threshold: fixed CAM threshold in ``[0, 1]`` (0.2 = the CAM paper's 20 % rule); the
            protocol's rule applies: keep ``floor(255 s) > int(threshold * max)``.
        iou_threshold: IoU needed for a correct box (``>=``; 0.5 in the literature).
        multi_contour: score every contour's box instead of the largest contour's.
        top_k: ``k`` of the Top-k Loc (capped at the number of classes).
        kwargs: passed to :class:`torchmetrics.Metric`.

    ``update(scoremaps, gt_boxes, logits, labels, pred_boxes=None)``: ``(B, H, W)`` maps in
    ``[0, 1]`` of the GT class (or ``None`` when ``pred_boxes`` is given), ``B`` tensors of
    ``(n_i, 4)`` ``XYXY_INCLUSIVE`` GT boxes, ``(B, C)`` logits, ``(B,)`` labels; ``pred_boxes``
    (optional) gives ``B`` predicted ``XYXY_INCLUSIVE`` boxes (``(4,)`` or ``(m, 4)``) instead of maps.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    gt_known: Tensor
    top1: Tensor
    topk: Tensor
    total: Tensor

    def __init__(
        self,
        cam_threshold: float = 0.2,
        iou_threshold: float = 0.5,
        multi_contour: bool = False,
        top_k: int = 5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= cam_threshold <= 1.0:
            raise ValueError(f"cam_threshold must be in [0, 1], got {cam_threshold}")
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold is a fraction in (0, 1], got {iou_threshold}")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.cam_threshold = float(cam_threshold)
        self.iou_threshold = float(iou_threshold)
        self.multi_contour = bool(multi_contour)
        self.top_k = int(top_k)
        for name in ("gt_known", "top1", "topk", "total"):
            self.add_state(name, torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def _pred_boxes(self, scoremaps: Any, pred_boxes: Any, n: int) -> list[Tensor]:
        if pred_boxes is not None:
            if len(pred_boxes) != n:
                raise ValueError(f"got {len(pred_boxes)} predicted box sets for {n} images")
            out = []
            for i, b in enumerate(pred_boxes):
                t = torch.as_tensor(b).reshape(-1, 4)
                if t.shape[0] == 0:
                    raise ValueError(f"image {i} of the batch: no predicted box")
                out.append(t)
            return out
        if scoremaps is None:
            raise ValueError("give either score maps or pred_boxes")
        if len(scoremaps) != n:
            raise ValueError(f"got {len(scoremaps)} score maps for {n} images")
        return [
            torch.from_numpy(
                boxes_from_scoremap(s, [self.cam_threshold], self.multi_contour, fast=False)[0]
            )
            for s in scoremaps
        ]

    def update(
        self,
        scoremaps: Tensor | np.ndarray | Sequence[Any] | None,
        gt_boxes: Sequence[Any],
        logits: Tensor,
        labels: Tensor,
        pred_boxes: Sequence[Any] | None = None,
    ) -> None:
        """Accumulate a batch (see the class docstring)."""
        logits, labels = torch.as_tensor(logits), torch.as_tensor(labels)
        n = len(gt_boxes)
        if logits.ndim != 2 or logits.shape[0] != n:
            raise ValueError(f"logits must have shape (B={n}, C), got {tuple(logits.shape)}")
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
        if ((labels < 0) | (labels >= logits.shape[1])).any():
            raise ValueError(f"labels must be class indices in [0, {logits.shape[1]}), got {labels.tolist()}")
        boxes = self._pred_boxes(scoremaps, pred_boxes, n)
        correct = torch.tensor(
            [
                bool(
                    box_iou_inclusive(b, _check_gt_boxes(g, f"image {i} of the batch")).max()
                    >= self.iou_threshold
                )
                for i, (b, g) in enumerate(zip(boxes, gt_boxes))
            ],
            dtype=torch.bool,
        )
        k = min(self.top_k, logits.shape[1])
        topk = logits.detach().cpu().topk(k, dim=1).indices
        labels = labels.detach().cpu()
        top1_ok = topk[:, 0] == labels
        topk_ok = (topk == labels[:, None]).any(dim=1)
        self.gt_known += int(correct.sum())
        self.top1 += int((correct & top1_ok).sum())
        self.topk += int((correct & topk_ok).sum())
        self.total += n

    def compute(self) -> dict[str, float]:
        """``gt_known``, ``top1_loc`` and ``top5_loc`` (``top{k}_loc`` for another ``top_k``) in percent."""
        total = int(self.total)
        if total <= 0:
            raise RuntimeError(
                "localization accuracy needs at least one image; update() was never called with data"
            )
        return {
            "gt_known": int(self.gt_known) * 100.0 / total,
            "top1_loc": int(self.top1) * 100.0 / total,
            f"top{self.top_k}_loc": int(self.topk) * 100.0 / total,
        }
