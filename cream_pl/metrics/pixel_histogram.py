"""PxAP's two score histograms of one map in a single compiled pass (numba, releases the GIL).

The benchmark's ``MaskEvaluator.accumulate`` calls ``np.histogram`` twice per image (GT-foreground
and GT-background pixels) with the bin edges ``thresholds + [1, 2, 3]``. Given explicit edges,
``np.histogram`` counts ``e_i <= v < e_{i+1}`` (the last bin also takes ``v == e_last``) and drops
values outside ``[e_0, e_last]``. :func:`mask_histograms` counts exactly that, by a search
over the same float64 edges (started from the uniform step's guess, so a pixel costs a few
comparisons), for both pixel sets in one pass over the map.

Example:
    >>> s = np.array([[0.0, 0.6], [1.0, 0.2]]); m = np.array([[0, 1], [1, 255]], np.uint8)
    >>> mask_histograms(s, m, np.array([0.0, 0.5, 1.0, 2.0, 3.0]))
    (array([0., 1., 1., 0.]), array([1., 0., 0., 0.]))
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["mask_histograms"]


@numba.njit(cache=True, nogil=True)
def _histograms(
    scores: np.ndarray, mask: np.ndarray, edges: np.ndarray, true_hist: np.ndarray, false_hist: np.ndarray
) -> None:
    n_edges = edges.shape[0]
    first, last = edges[0], edges[n_edges - 1]
    # the first bin's width gives a guess of the bin that is off by at most a step on the protocol's
    # edges (np.arange rounding); the walks below make it exact for any increasing edges
    width = edges[1] - edges[0]
    inv = 1.0 / width if width > 0 else 0.0
    for i in range(scores.shape[0]):
        m = mask[i]
        if m > 1:  # ignore (255) or not a label
            continue
        v = scores[i]
        if not (v >= first and v <= last):  # also drops NaN, as np.histogram's comparisons do
            continue
        if v == last:
            b = n_edges - 2
        else:  # the largest b with edges[b] <= v
            b = min(int((v - first) * inv), n_edges - 2)
            while b > 0 and edges[b] > v:
                b -= 1
            while b < n_edges - 2 and edges[b + 1] <= v:
                b += 1
        if m == 1:
            true_hist[b] += 1.0
        else:
            false_hist[b] += 1.0


def mask_histograms(
    scoremap: np.ndarray, mask: np.ndarray, edges: np.ndarray, out: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``np.histogram(scoremap[mask == 1], edges)`` and ``... [mask == 0] ...`` as float64, in one pass.

    Args:
        scoremap: float map (any shape), read as float64.
        mask: same shape, 1 = foreground, 0 = background, anything else (255 = ignore) is skipped.
        edges: increasing float64 bin edges (:func:`cream_pl.metrics.functional.pxap_bin_edges`).
        out: ``(true_hist, false_hist)`` float64 arrays of ``len(edges) - 1`` to add the counts to.

    Returns:
        ``(true_hist, false_hist)`` (``out`` when given).
    """
    scores = np.ascontiguousarray(scoremap, dtype=np.float64).ravel()
    labels = np.ascontiguousarray(mask).ravel()
    if labels.dtype != np.uint8:
        labels = np.where((labels == 0) | (labels == 1), labels, 255).astype(np.uint8)
    if scores.shape != labels.shape:
        raise ValueError(f"mask shape {np.shape(mask)} != score map shape {np.shape(scoremap)}")
    e = np.ascontiguousarray(edges, dtype=np.float64)
    if e.ndim != 1 or len(e) < 2:
        raise ValueError("edges must be a 1-D array of at least two bin edges")
    if out is None:
        out = (np.zeros(len(e) - 1), np.zeros(len(e) - 1))
    _histograms(scores, labels, e, out[0], out[1])
    return out
