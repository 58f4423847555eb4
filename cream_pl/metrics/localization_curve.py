"""GT-known / Top-1 / Top-5 Loc at *every* CAM threshold, so the threshold can be chosen afterwards.

:class:`LocalizationAccuracy` needs its threshold before the first update; a classifier that
takes τ* from the fully supervised val split (or reports the whole curve) needs the counts at
all thresholds. This metric keeps them in a fixed ``(3, n_thresholds)`` sum state (largest
contour, IoU ≥ 0.5 by default) — which also gives MaxBoxAcc (V1): the best GT-known over τ.

Example:
    >>> import torch
    >>> metric = LocalizationCurve(cam_curve_interval=0.1)
    >>> maps = torch.zeros(2, 224, 224, dtype=torch.float64); maps[:, 40:120, 50:150] = 1.0
    >>> boxes = [torch.tensor([[50, 40, 149, 119]])] * 2
    >>> metric.update(maps, boxes, torch.tensor([True, False]), torch.tensor([True, True]))
    >>> res = metric.compute()
    >>> res["max_box_acc"], accuracy_at(res, 0.5)
    (100.0, {'gt_known': 100.0, 'top1_loc': 50.0, 'top5_loc': 100.0})
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from cream_pl.metrics.functional import cam_thresholds, localized_per_threshold
from cream_pl.metrics.scored_maps import ScoredMaps

__all__ = ["LocalizationCurve", "accuracy_at"]

_ROWS = ("gt_known", "top1_loc", "top5_loc")


class LocalizationCurve(Metric):
    """Per-threshold GT-known / Top-1 / Top-5 localisation counts.

    Args:
        cam_curve_interval: threshold step; thresholds are ``np.arange(0, 1, interval)``.
        iou_threshold: IoU (percent) a box needs (``>=``), 50 in the literature.
        multi_contour: all contours' boxes instead of the largest contour's.
        num_workers: threads over the images of a batch (``None`` = CPU count).

    ``update(scoremaps, gt_boxes, top1_correct, top5_correct)``: ``(B, H, W)`` GT-class maps in
    [0, 1], ``B`` tensors of ``(n_i, 4)`` ``XYXY_INCLUSIVE`` GT boxes, ``(B,)`` booleans.
    ``compute()`` returns ``max_box_acc`` (V1 when ``multi_contour=False``), ``best_threshold``,
    ``curves`` (``(3, n_thr)`` percent, rows gt_known / top1_loc / top5_loc) and ``thresholds``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    correct: Tensor
    total: Tensor

    def __init__(
        self,
        cam_curve_interval: float = 0.001,
        iou_threshold: float = 50,
        multi_contour: bool = False,
        num_workers: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not 0 < iou_threshold <= 100:
            raise ValueError(f"iou_threshold is a percentage in (0, 100], got {iou_threshold}")
        self.thresholds = cam_thresholds(cam_curve_interval)
        self.iou_threshold = float(iou_threshold)
        self.multi_contour = bool(multi_contour)
        self.num_workers = num_workers
        self.add_state(
            "correct", torch.zeros(3, len(self.thresholds), dtype=torch.int64), dist_reduce_fx="sum"
        )
        self.add_state("total", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(
        self,
        scoremaps: Tensor | np.ndarray | Sequence[Any],
        gt_boxes: Sequence[Any],
        top1_correct: Tensor,
        top5_correct: Tensor,
    ) -> None:
        n = len(gt_boxes)
        if isinstance(scoremaps, ScoredMaps):  # figures computed once for several metrics
            self._add(self._scored_decisions(scoremaps, n), top1_correct, top5_correct)
            return
        if len(scoremaps) != n or top1_correct.shape != (n,) or top5_correct.shape != (n,):
            raise ValueError(
                f"got {len(scoremaps)} maps, {n} GT box sets, top1 {tuple(top1_correct.shape)}, "
                f"top5 {tuple(top5_correct.shape)}; all must describe the same {n} images"
            )

        def one(i: int) -> np.ndarray:
            return localized_per_threshold(
                scoremaps[i], gt_boxes[i], self.thresholds, (self.iou_threshold,), self.multi_contour
            )[0]

        workers = max(1, min(n, self.num_workers if self.num_workers is not None else 2))
        if workers == 1:
            best = [one(i) for i in range(n)]
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                best = list(pool.map(one, range(n)))
        ok = (
            torch.from_numpy(np.stack(best))
            if n
            else torch.zeros(0, len(self.thresholds), dtype=torch.bool)
        )
        self._add(ok, top1_correct, top5_correct)

    def _scored_decisions(self, scored: ScoredMaps, n: int) -> Tensor:
        scored.check(self.thresholds, "LocalizationCurve")
        if self.multi_contour or float(scored.spec.v1_iou) != self.iou_threshold:
            raise ValueError(f"LocalizationCurve (IoU {self.iou_threshold:g}, multi_contour={self.multi_contour}) "
                             f"cannot use maps scored for the largest contour at IoU {scored.spec.v1_iou:g}")
        if scored.v1_ok is None or scored.num_images != n:
            raise ValueError(f"LocalizationCurve: the scored maps hold no box figures for these {n} images")
        return torch.from_numpy(scored.v1_ok)

    def _add(self, ok: Tensor, top1_correct: Tensor, top5_correct: Tensor) -> None:
        n = ok.shape[0]
        if top1_correct.shape != (n,) or top5_correct.shape != (n,):
            raise ValueError(f"got {n} images but top1 {tuple(top1_correct.shape)}, top5 {tuple(top5_correct.shape)}")
        top1 = top1_correct.detach().cpu().bool()[:, None]
        top5 = top5_correct.detach().cpu().bool()[:, None]
        counts = torch.stack([ok.sum(0), (ok & top1).sum(0), (ok & top5).sum(0)]).to(self.correct)
        self.correct += counts
        self.total += n

    def compute(self) -> dict[str, Any]:
        total = int(self.total)
        if total <= 0:
            raise RuntimeError("LocalizationCurve.compute() before any image was seen")
        curves = self.correct.double().cpu() * 100.0 / total
        best = int(torch.argmax(curves[0]))
        return {
            "max_box_acc": float(curves[0, best]),
            "best_threshold": float(self.thresholds[best]),
            "curves": curves,
            "thresholds": torch.from_numpy(self.thresholds.copy()),
        }


def accuracy_at(result: dict[str, Any], threshold: float) -> dict[str, float]:
    """GT-known / Top-1 / Top-5 Loc (percent) at the grid threshold closest to ``threshold``."""
    thresholds = result["thresholds"]
    idx = int(torch.argmin((thresholds - float(threshold)).abs()))
    return {name: float(result["curves"][row, idx]) for row, name in enumerate(_ROWS)}
