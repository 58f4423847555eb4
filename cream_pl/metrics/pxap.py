"""PxAP (pixel average precision) as a torchmetrics ``Metric`` (wsolevaluation ``MaskEvaluator``).

Two float64 histogram states over the bins ``[0, bw), ..., [1 - bw, 1), [1, 2), [2, 3]`` hold the
score-map values on GT-foreground and GT-background pixels (ignore pixels are left out); they are
summed across processes, so DDP is exact and memory does not grow with the dataset. ``compute()``
is the benchmark's non-interpolated AP: ``100 * sum(precision[1:] * diff(recall))`` over the points
with a positive prediction, thresholds in descending order, decision ``score >= threshold``.

It re-exports :func:`~cream_pl.metrics.gt_mask.load_gt_mask`, the benchmark's reading of instance and ignore PNGs.

Example:
    >>> import torch
    >>> metric = PxAP(cam_curve_interval=0.01)
    >>> mask = torch.zeros(1, 224, 224, dtype=torch.uint8); mask[0, :112] = 1
    >>> metric.update(mask.double(), mask)
    >>> float(metric.compute())
    100.0
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from cream_pl.metrics.functional import (
    cam_thresholds,
    pxap_bin_edges,
    pxap_from_histograms,
    pxap_histograms,
    pxap_pr_curve,
)
from cream_pl.metrics.gt_mask import load_gt_mask
from cream_pl.metrics.scored_maps import ScoredMaps

__all__ = ["PxAP", "load_gt_mask"]  # load_gt_mask: cream_pl.metrics.gt_mask (re-exported)


class PxAP(Metric):
    """Pixel average precision of score maps against GT masks, in percent.

    Args:
        cam_curve_interval: bin width of the score histograms (``np.arange(0, 1, interval)`` edges,
            then 1, 2, 3).
        kwargs: passed to :class:`torchmetrics.Metric`.

    ``update(scoremaps, masks)``: ``(B, H, W)`` float maps in ``[0, 1]`` and ``(B, H, W)`` integer
    masks with 1 = foreground, 0 = background, 255 = ignore. ``compute()`` returns a float64 scalar
    tensor; :meth:`pr_curve` gives the precision-recall points.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    true_hist: Tensor
    false_hist: Tensor

    def __init__(self, cam_curve_interval: float = 0.001, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cam_curve_interval = float(cam_curve_interval)
        self._edges = pxap_bin_edges(cam_thresholds(cam_curve_interval))
        n_bins = len(self._edges) - 1
        self.add_state("true_hist", torch.zeros(n_bins, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("false_hist", torch.zeros(n_bins, dtype=torch.float64), dist_reduce_fx="sum")

    @property
    def bin_edges(self) -> np.ndarray:
        """Histogram edges (float64, a copy)."""
        return self._edges.copy()

    def update(self, scoremaps: Tensor | np.ndarray | ScoredMaps, masks: Tensor | np.ndarray) -> None:
        """Accumulate a batch of score maps and GT masks (or the batch's
        :class:`~cream_pl.metrics.scored_maps.ScoredMaps`, whose histograms are added as they are)."""
        if isinstance(scoremaps, ScoredMaps):
            scoremaps.check(self._edges[:-3], "PxAP")
            if scoremaps.true_hist is None or scoremaps.false_hist is None or len(masks) != scoremaps.num_images:
                raise ValueError(f"PxAP: the scored maps hold no mask histograms for these {len(masks)} images")
            self.true_hist += torch.from_numpy(scoremaps.true_hist).to(self.true_hist.device)
            self.false_hist += torch.from_numpy(scoremaps.false_hist).to(self.false_hist.device)
            return
        for name, x in (("score maps", scoremaps), ("masks", masks)):
            if isinstance(x, (Tensor, np.ndarray)) and x.ndim != 3:
                raise ValueError(f"{name} must have shape (B, H, W), got {tuple(x.shape)}")
        true_hist, false_hist = pxap_histograms(scoremaps, masks, self._edges)
        self.true_hist += torch.from_numpy(true_hist).to(self.true_hist.device)
        self.false_hist += torch.from_numpy(false_hist).to(self.false_hist.device)

    def compute(self) -> Tensor:
        """PxAP in percent (float64 scalar tensor).

        Raises:
            RuntimeError: no foreground pixel, or no pixel predicted positive.
        """
        return torch.tensor(
            pxap_from_histograms(self.true_hist.cpu(), self.false_hist.cpu()), dtype=torch.float64
        )

    def pr_curve(self) -> dict[str, Tensor]:
        """Precision, recall and the decision thresholds, by descending threshold (float64 tensors)."""
        curve = pxap_pr_curve(self.true_hist.cpu(), self.false_hist.cpu(), self._edges)
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in curve.items()}

