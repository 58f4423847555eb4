"""MaxBoxAcc (V1) and MaxBoxAccV2 as torchmetrics ``Metric`` classes (wsolevaluation ``BoxEvaluator``).

State: ``correct`` (int64, ``(n_iou, n_thresholds)``, images whose best IoU at a CAM threshold
reaches the IoU level) and ``total`` (number of images), both summed across processes, so memory
does not grow with the dataset and DDP results equal single-process ones exactly.

Example:
    >>> import torch
    >>> metric = MaxBoxAccV2(cam_curve_interval=0.1)
    >>> maps = torch.zeros(1, 224, 224, dtype=torch.float64); maps[0, 40:120, 50:150] = 1.0
    >>> metric.update(maps, [torch.tensor([[50, 40, 149, 119]])])
    >>> out = metric.compute()
    >>> out["max_box_acc"], out["max_box_acc_iou"][70]
    (100.0, 100.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from cream_pl.metrics.functional import (
    box_accuracy_compute,
    box_accuracy_update,
    cam_thresholds,
    check_iou_levels,
)
from cream_pl.metrics.scored_maps import ScoredMaps

__all__ = ["BoxAccuracy", "MaxBoxAcc", "MaxBoxAccV2"]


class BoxAccuracy(Metric):
    """Box accuracy over a curve of CAM thresholds, maximised per IoU level.

    Args:
        iou_thresholds: IoU levels in percent; an image is correct at a CAM threshold when its best
            "+1" IoU is ``>= level / 100``.
        multi_contour: score every contour's box (V2) instead of the largest contour's (V1).
        cam_curve_interval: spacing of the CAM thresholds ``np.arange(0, 1, interval)``
            (0.001 in the benchmark's training code, 0.01 in its standalone tool).
        num_workers: threads over the images of a batch (``None``: all CPUs; results never depend on it).
        kwargs: passed to :class:`torchmetrics.Metric`.

    ``update(scoremaps, gt_boxes)`` takes ``(B, H, W)`` float maps in ``[0, 1]`` (224x224 in the
    protocol, see :func:`~cream_pl.metrics.functional.prepare_scoremaps`) and ``B`` tensors of
    ``(n_i, 4)`` ``XYXY_INCLUSIVE`` GT boxes in the same grid.

    ``compute()`` returns a dict: ``max_box_acc`` (float, percent: mean over IoU levels of the
    best accuracy over thresholds), ``max_box_acc_iou`` (``{iou: percent}``), ``best_threshold_iou``
    (``{iou: threshold}``, the first best), ``box_acc_curve`` (float64 ``(n_iou, n_thr)`` percent)
    and ``thresholds``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    correct: Tensor
    total: Tensor

    def __init__(
        self,
        iou_thresholds: Sequence[int | float] = (30, 50, 70),
        multi_contour: bool = True,
        cam_curve_interval: float = 0.001,
        num_workers: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        iou_thresholds = check_iou_levels(iou_thresholds)
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"num_workers must be >= 0 or None, got {num_workers}")
        self.iou_thresholds = iou_thresholds
        self.multi_contour = bool(multi_contour)
        self.cam_curve_interval = float(cam_curve_interval)
        self.num_workers = num_workers
        self._thresholds = cam_thresholds(cam_curve_interval)
        shape = (len(iou_thresholds), len(self._thresholds))
        self.add_state("correct", torch.zeros(shape, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    @property
    def thresholds(self) -> np.ndarray:
        """The CAM thresholds (float64, a copy)."""
        return self._thresholds.copy()

    def update(self, scoremaps: Tensor | np.ndarray | Sequence[Any] | ScoredMaps, gt_boxes: Sequence[Any]) -> None:
        """Accumulate a batch of score maps and their GT boxes.

        ``scoremaps`` may also be the batch's :class:`~cream_pl.metrics.scored_maps.ScoredMaps`
        (computed once for several metrics): its counts are added as they are.
        """
        if isinstance(scoremaps, ScoredMaps):
            self._update_scored(scoremaps, len(gt_boxes))
            return
        if isinstance(scoremaps, (Tensor, np.ndarray)) and scoremaps.ndim != 3:
            raise ValueError(f"score maps must have shape (B, H, W), got {tuple(scoremaps.shape)}")
        counts = box_accuracy_update(
            scoremaps,
            gt_boxes,
            self._thresholds,
            self.iou_thresholds,
            self.multi_contour,
            num_workers=self.num_workers,
        )
        self.correct += torch.from_numpy(counts).to(self.correct.device)
        self.total += len(gt_boxes)

    def _update_scored(self, scored: ScoredMaps, num_boxes: int) -> None:
        scored.check(self._thresholds, type(self).__name__)
        if scored.box_counts is None or scored.v1_ok is None or num_boxes != scored.num_images:
            raise ValueError(f"{type(self).__name__}: the scored maps hold no box figures for these {num_boxes} images")
        levels = tuple(float(d) for d in self.iou_thresholds)
        if self.multi_contour and levels == scored.spec.iou_thresholds:
            counts = scored.box_counts
        elif not self.multi_contour and levels == (float(scored.spec.v1_iou),):
            counts = scored.v1_ok.sum(0, dtype=np.int64)[None, :]
        else:
            raise ValueError(f"{type(self).__name__} (IoU {list(self.iou_thresholds)}, multi_contour="
                             f"{self.multi_contour}) cannot use maps scored for all contours at "
                             f"{list(scored.spec.iou_thresholds)} and the largest at {scored.spec.v1_iou:g}")
        self.correct += torch.from_numpy(np.ascontiguousarray(counts)).to(self.correct.device)
        self.total += scored.num_images

    def compute(self) -> dict[str, Any]:
        """MaxBoxAcc numbers (see the class docstring)."""
        return box_accuracy_compute(
            self.correct.cpu(), int(self.total), self.iou_thresholds, self._thresholds
        )


class MaxBoxAcc(BoxAccuracy):
    """MaxBoxAcc (V1): largest contour, IoU >= 0.5, best CAM threshold.

    Example:
        >>> MaxBoxAcc().iou_thresholds, MaxBoxAcc().multi_contour
        ((50,), False)
    """

    def __init__(
        self,
        iou_thresholds: Sequence[int | float] = (50,),
        multi_contour: bool = False,
        cam_curve_interval: float = 0.001,
        num_workers: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(iou_thresholds, multi_contour, cam_curve_interval, num_workers, **kwargs)


class MaxBoxAccV2(BoxAccuracy):
    """MaxBoxAccV2: every contour, mean over IoU levels 30/50/70 of the best accuracy per level.

    Example:
        >>> MaxBoxAccV2().iou_thresholds, MaxBoxAccV2().multi_contour
        ((30, 50, 70), True)
    """

    def __init__(
        self,
        iou_thresholds: Sequence[int | float] = (30, 50, 70),
        multi_contour: bool = True,
        cam_curve_interval: float = 0.001,
        num_workers: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(iou_thresholds, multi_contour, cam_curve_interval, num_workers, **kwargs)
