"""Paired bootstrap intervals of the difference between two methods scored on the same images.

Pure numpy. The per-image outcomes come from the metric code itself
(``WSOLClassifier(record_per_image=True)`` fills ``model.per_image[stage][method]`` from
:func:`~cream_pl.metrics.functional.best_iou_per_threshold` and
:func:`~cream_pl.metrics.functional.localized_per_threshold`). One resample draws ``n`` images
with replacement, the same draw for both methods (paired); it is a vector of counts ``w`` with
``sum(w) = n``, so every statistic is a matrix product with the ``(R, n)`` count matrix:

- GT-known / Top-1 / Top-5 Loc / cls accuracy: ``100 * w @ x / n`` of a 0/1 vector ``x``;
- MaxBoxAccV2: per IoU level ``δ`` the accuracy curve ``100 * w @ H_δ / n`` of the per-image ×
  per-threshold hit matrix ``H_δ = best_iou >= δ / 100`` is re-maximised over the thresholds,
  then averaged over ``δ``, exactly as :class:`~cream_pl.metrics.MaxBoxAccV2` defines it (on the
  full sample, ``w = 1``, it equals the metric's value).

The interval is the percentile interval of the resampled differences (default 95 %, 1000
resamples, seeded). Units are percentage points, like the metrics.

Example:
    >>> import numpy as np
    >>> a = np.r_[np.ones(80), np.zeros(20)]; b = np.r_[np.ones(40), np.zeros(60)]
    >>> r = paired_bootstrap_accuracy(a, b, seed=0)
    >>> r["diff"], verdict(r)
    (40.0, 'gain')
    >>> verdict(paired_bootstrap_accuracy(a, a))
    'no significant difference'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "resample_counts",
    "accuracy_statistic",
    "max_box_acc_statistic",
    "independent_bootstrap_accuracy",
    "paired_bootstrap_accuracy",
    "paired_bootstrap_max_box_acc",
    "paired_bootstrap_records",
    "RECORD_METRICS",
    "verdict",
]

_CHUNK = 256  # resamples per matrix product (bounds memory at 1000 images x 1000 thresholds)


def resample_counts(n: int, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """``(R, n)`` int64 counts: how often each image is drawn in each resample (rows sum to ``n``)."""
    if n < 1:
        raise ValueError(f"a bootstrap needs at least one image, got {n}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(np.int64)


def _binary(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a per-image 1-D 0/1 vector, got shape {a.shape}")
    if not np.isin(a, (0, 1)).all():
        raise ValueError(f"{name} must hold 0/1 (or booleans) per image")
    return a.astype(np.float64)


def _hits(x: Any, iou_thresholds: Sequence[float], name: str) -> np.ndarray:
    """``(n_iou, n, n_thr)`` float32 0/1 from a best-IoU matrix ``(n, n_thr)`` or hits ``(n, n_iou, n_thr)``."""
    a = np.asarray(x)
    if a.ndim == 2:
        fractions = np.array([d / 100 for d in iou_thresholds], dtype=np.float64)  # as the metric compares
        return np.stack([(a >= f) for f in fractions]).astype(np.float32)
    if a.ndim == 3 and a.dtype == bool:
        if a.shape[1] != len(iou_thresholds):
            raise ValueError(f"{name}: {a.shape[1]} IoU rows but {len(iou_thresholds)} IoU levels")
        return np.ascontiguousarray(a.transpose(1, 0, 2)).astype(np.float32)
    raise ValueError(f"{name} must be a best-IoU matrix (n, n_thr) or boolean hits (n, n_iou, n_thr), got {a.shape}")


def accuracy_statistic(x: Any, counts: np.ndarray | None = None) -> np.ndarray | float:
    """Accuracy in percent of a 0/1 vector: a float, or ``(R,)`` over the resamples ``counts``."""
    v = _binary(x, "x")
    if counts is None:
        return float(v.sum() * 100.0 / len(v))
    return (counts @ v) * 100.0 / len(v)


def max_box_acc_statistic(
    best_iou_or_hits: Any, iou_thresholds: Sequence[float] = (30, 50, 70), counts: np.ndarray | None = None
) -> np.ndarray | float:
    """MaxBoxAccV2 in percent: a float on the full sample, or ``(R,)`` over the resamples ``counts``."""
    h = _hits(best_iou_or_hits, iou_thresholds, "best_iou_or_hits")
    n = h.shape[1]
    if counts is None:
        curves = h.sum(axis=1, dtype=np.int64).astype(np.float64) * 100.0 / float(n)  # (n_iou, n_thr)
        return float(np.average([c.max() for c in curves]))
    out = np.empty(counts.shape[0], dtype=np.float64)
    for s in range(0, counts.shape[0], _CHUNK):
        w = counts[s:s + _CHUNK].astype(np.float32)  # integer counts <= n: exact in float32 below 2^24
        maxima = [np.rint(w @ h_d).astype(np.float64).max(axis=1) for h_d in h]  # (r,) per IoU level
        out[s:s + _CHUNK] = np.mean(maxima, axis=0) * 100.0 / float(n)
    return out


def _summary(diff: float, diffs: np.ndarray, n: int, n_resamples: int, confidence: float, seed: int,
             a: float, b: float) -> dict[str, Any]:
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.percentile(diffs, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    out: dict[str, Any] = {"diff": float(diff), "ci": [float(lo), float(hi)]}
    if confidence == 0.95:
        out["ci95"] = out["ci"]
    return {**out, "confidence": confidence, "a": float(a), "b": float(b), "n_images": int(n),
            "n_resamples": int(n_resamples), "seed": int(seed), "method": "paired bootstrap, percentile"}


def _check_common(n_a: int, n_b: int, n_resamples: int, confidence: float) -> None:
    if n_a != n_b:
        raise ValueError(f"paired outcomes need the same images: {n_a} vs {n_b}")
    if n_resamples < 1000:
        raise ValueError(f"use at least 1000 resamples for a 95 % interval, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def paired_bootstrap_accuracy(
    a: Any, b: Any, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict[str, Any]:
    """Difference ``acc(a) - acc(b)`` (percentage points) of per-image 0/1 outcomes and its interval.

    For GT-known Loc, Top-1 / Top-5 Loc and classification accuracy.

    Returns:
        ``{"diff", "ci95": [lo, hi], "a", "b", "n_images", "n_resamples", "seed", ...}``.
    """
    va, vb = _binary(a, "a"), _binary(b, "b")
    _check_common(len(va), len(vb), n_resamples, confidence)
    counts = resample_counts(len(va), n_resamples, seed)
    diffs = (counts @ (va - vb)) * 100.0 / len(va)
    sa, sb = accuracy_statistic(va), accuracy_statistic(vb)
    return _summary(float(sa) - float(sb), diffs, len(va), n_resamples, confidence, seed, float(sa), float(sb))


def independent_bootstrap_accuracy(
    a: Any, b: Any, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict[str, Any]:
    """Difference ``acc(a) - acc(b)`` of two **different** groups of images, and its bootstrap interval.

    For a gap between two subsets of one test split (e.g. one model's accuracy on images with the
    class's usual background against the others): no image is in both groups, so nothing is
    paired; each group is resampled on its own (two seeded streams), percentile interval.

    Returns:
        Like :func:`paired_bootstrap_accuracy`, with ``n_images`` the two group sizes summed and
        ``n_a`` / ``n_b`` each group's.

    Example:
        >>> r = independent_bootstrap_accuracy(np.r_[np.ones(90), np.zeros(10)], np.r_[np.ones(40), np.zeros(60)])
        >>> r["diff"], verdict(r), r["n_a"], r["n_b"]
        (50.0, 'gain', 100, 100)
    """
    va, vb = _binary(a, "a"), _binary(b, "b")
    if len(va) < 1 or len(vb) < 1:
        raise ValueError(f"each group needs at least one image, got {len(va)} and {len(vb)}")
    _check_common(1, 1, n_resamples, confidence)
    stream_a, stream_b = np.random.SeedSequence(seed).spawn(2)
    ca = resample_counts(len(va), n_resamples, int(stream_a.generate_state(1)[0]))
    cb = resample_counts(len(vb), n_resamples, int(stream_b.generate_state(1)[0]))
    diffs = (ca @ va) * 100.0 / len(va) - (cb @ vb) * 100.0 / len(vb)
    sa, sb = float(accuracy_statistic(va)), float(accuracy_statistic(vb))
    out = _summary(sa - sb, diffs, len(va) + len(vb), n_resamples, confidence, seed, sa, sb)
    return {**out, "n_a": len(va), "n_b": len(vb), "method": "independent bootstrap, percentile"}


def paired_bootstrap_max_box_acc(
    a: Any,
    b: Any,
    iou_thresholds: Sequence[float] = (30, 50, 70),
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Difference of MaxBoxAccV2 (percentage points) and its paired bootstrap interval.

    Args:
        a, b: per-image best IoU per CAM threshold ``(n, n_thr)`` (``per_image[...]["best_iou"]``)
            or boolean hits ``(n, n_iou, n_thr)``, same images in the same order.
        iou_thresholds: IoU levels in percent.
    """
    na, nb = np.asarray(a).shape[0], np.asarray(b).shape[0]
    _check_common(na, nb, n_resamples, confidence)
    counts = resample_counts(na, n_resamples, seed)
    diffs = max_box_acc_statistic(a, iou_thresholds, counts) - max_box_acc_statistic(b, iou_thresholds, counts)
    sa, sb = max_box_acc_statistic(a, iou_thresholds), max_box_acc_statistic(b, iou_thresholds)
    return _summary(float(sa) - float(sb), np.asarray(diffs), na, n_resamples, confidence, seed, float(sa), float(sb))


RECORD_METRICS = {"gt_known": "gt_known", "top1_loc": "top1_loc", "top5_loc": "top5_loc", "cls_acc": "top1",
                  "max_box_acc_v2": "best_iou"}
"""The metrics a paired interval is computed for, each with the per-image record field it reads."""


def paired_bootstrap_records(
    a: Mapping[str, np.ndarray],
    b: Mapping[str, np.ndarray],
    metric: str,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Paired interval of ``metric`` from two ``per_image`` records, matched by image ``index``.

    Args:
        a, b: ``model.per_image[stage][method]`` of two methods (same model or two models on the
            same split).
        metric: ``"max_box_acc_v2"``, ``"gt_known"``, ``"top1_loc"``, ``"top5_loc"`` or ``"cls_acc"``.
    """
    if metric not in RECORD_METRICS:
        raise ValueError(f"metric must be one of {sorted(RECORD_METRICS)}, got {metric!r}")
    key = RECORD_METRICS[metric]
    for name, rec in (("a", a), ("b", b)):
        if key not in rec:
            raise ValueError(f"record {name} has no {key!r} (boxes missing from the split?)")
    ia, ib = np.asarray(a["index"]), np.asarray(b["index"])
    if len(np.unique(ia)) != len(ia) or len(np.unique(ib)) != len(ib) or set(ia.tolist()) != set(ib.tolist()):
        raise ValueError("the two records do not cover the same images (by index) exactly once each")
    oa, ob = np.argsort(ia, kind="stable"), np.argsort(ib, kind="stable")
    xa, xb = np.asarray(a[key])[oa], np.asarray(b[key])[ob]
    if metric == "max_box_acc_v2":
        levels = tuple(np.asarray(a.get("iou_thresholds", (30, 50, 70))).tolist())
        return paired_bootstrap_max_box_acc(xa, xb, levels, n_resamples, seed, confidence)
    return paired_bootstrap_accuracy(xa, xb, n_resamples, seed, confidence)


def verdict(result: Mapping[str, Any]) -> str:
    """``"gain"`` / ``"loss"`` when the interval excludes 0, else ``"no significant difference"``."""
    lo, hi = result["ci"]
    if lo > 0:
        return "gain"
    if hi < 0:
        return "loss"
    return "no significant difference"
