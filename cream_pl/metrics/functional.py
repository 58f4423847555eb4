"""Pure functions behind the WSOL metrics (the wsolevaluation protocol, to the last digit).

Score map convention: a float64 ``(224, 224)`` map in ``[0, 1]`` aligned with the squashed
224x224 evaluation image, produced by :func:`prepare_scoremap` (bicubic resize, then NaN or
constant maps become zeros, then min-max). Boxes are ``XYXY_INCLUSIVE`` integer pixels of that grid
(see :mod:`cream_pl.core.boxes`).

Map -> boxes (:func:`boxes_from_scoremap`, the one place this happens in cream-pl):

- ``u = floor(255 * s)`` as uint8; at threshold ``t`` a pixel is kept iff ``u > int(t * u.max())``;
- contours of the kept pixels with ``cv2.findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)`` (hole
  contours included); no contour gives the single box ``[0, 0, 0, 0]``;
- ``multi_contour=False`` keeps the contour with the largest ``cv2.contourArea`` (first one on
  ties), ``True`` keeps them all;
- a contour's box is ``[x, y, min(x + w, W - 1), min(y + h, H - 1)]`` from ``cv2.boundingRect``:
  the right/bottom edge is one pixel past the contour unless clipped, as in the benchmark.

Speed: after the uint8 conversion the binary mask only changes when ``int(t * max)`` crosses a
grey level that is present in the map, so at most 256 distinct masks exist per map, and they are
nested. The default path (``fast=True``) reads the contour boxes of every distinct mask off two
component trees built in one pass over the pixels (:mod:`cream_pl.metrics.component_tree`), and
calls ``findContours`` only where the largest contour (V1) must be picked among several. The
straightforward per-threshold loop (``fast=False``) gives identical boxes and is kept as the oracle
for tests and ``make bench``.

Example:
    >>> import numpy as np
    >>> s = np.zeros((224, 224)); s[50:100, 60:120] = 1.0
    >>> boxes_from_scoremap(s, cam_thresholds(0.5))
    [array([[ 60,  50, 120, 100]]), array([[ 60,  50, 120, 100]])]
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from cream_pl.core.errors import UserRuntimeError
from cream_pl.core.names import MIN_CAM_INTERVAL
from cream_pl.metrics.component_tree import level_ious, level_ious_largest, level_rects, minmax_uint8
from cream_pl.metrics.pixel_histogram import mask_histograms

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "RESIZE_LENGTH",
    "check_iou_levels",
    "prepare_scoremap",
    "prepare_scoremap_uint8",
    "prepare_scoremaps",
    "cam_thresholds",
    "scoremap_to_uint8",
    "threshold_levels",
    "boxes_from_scoremap",
    "box_from_scoremap_at",
    "pixel_box_from_scoremap_at",
    "best_iou_per_threshold",
    "localized_per_threshold",
    "localized_from_uint8",
    "box_accuracy_update",
    "box_accuracy_summary",
    "box_accuracy_compute",
    "box_iou_plus_one",
    "pxap_bin_edges",
    "pxap_histograms",
    "pxap_pr_curve",
    "pxap_from_histograms",
]

RESIZE_LENGTH = 224
"""Side of the evaluation grid: score maps, GT boxes and GT masks all live at 224x224."""

_NO_BOX = np.zeros((1, 4), dtype=np.int64)  # what the benchmark returns when nothing survives

ArrayLike = Union[np.ndarray, "Tensor"]
# torch and OpenCV are imported where they are needed: scoring saved 224x224 maps (``cream-pl
# evaluate``, V2) needs neither.


def _is_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")  # a tensor exists only if torch has been imported
    return torch is not None and isinstance(x, torch.Tensor)


def _to_numpy(x: Any) -> np.ndarray:
    if _is_tensor(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


# ----------------------------------------------------------------------------------------------
# CAM -> score map


def _normalize_minmax(cam: np.ndarray) -> np.ndarray:
    """The benchmark's normalisation: NaN anywhere or a constant map -> zeros, else min-max (in place); a map whose
    range float64 cannot hold (its bicubic resize may overshoot too) is refused: min-max made NaN of part of it."""
    if np.isnan(cam).any():
        return np.zeros_like(cam)
    if cam.min() == cam.max():
        return np.zeros_like(cam)
    if not math.isfinite(float(cam.max()) - float(cam.min())):  # python floats: no overflow warning
        raise ValueError("a score map holds an infinite value or spans more than float64 can hold")
    cam -= cam.min()
    cam /= cam.max()
    return cam


def check_iou_levels(levels: Sequence[int | float], *more: int | float) -> tuple[int | float, ...]:
    """IoU levels in percent (``levels``, then ``more`` checked alike but not returned), as a tuple: at least one,
    each in [1, 100] (below 1 % is a fraction written where a percentage goes), none repeated (MaxBoxAccV2 is their
    mean: each counts once).

    >>> check_iou_levels([30, 50, 70])
    (30, 50, 70)
    >>> check_iou_levels([50, 50])
    Traceback (most recent call last):
    ValueError: IoU levels repeat: [50, 50] (MaxBoxAccV2 is their mean: each counts once)
    """
    levels = tuple(x.item() if isinstance(x, np.generic) else x for x in levels)  # numpy's 50 is a 50
    if not levels:
        raise ValueError("iou_thresholds must name at least one IoU level (in percent, e.g. 50)")
    for d in (*levels, *more):
        if isinstance(d, bool) or not isinstance(d, (int, float, np.integer, np.floating)) or not 1 <= d <= 100:
            hint = f" (a fraction? IoU {d:g} is {100 * d:g} here)" if isinstance(d, float) and 0 < d < 1 else ""
            raise ValueError(f"IoU levels are percentages in [1, 100] (the protocol's: 30, 50, 70), got {d!r}{hint}")
    if len(set(map(float, levels))) != len(levels):
        raise ValueError(f"IoU levels repeat: {list(levels)} (MaxBoxAccV2 is their mean: each counts once)")
    return levels


def prepare_scoremap(cam: ArrayLike, size: int = RESIZE_LENGTH) -> np.ndarray:
    """Turn one raw CAM into the benchmark's score map (wsolevaluation ``CAMComputer``).

    The map is cast to float64, resized to ``size x size`` with ``cv2.INTER_CUBIC`` (a no-op when it
    already has that size), then normalised: a map with any NaN or a constant map becomes all zeros,
    otherwise ``(m - min) / max(m - min)``.

    Args:
        cam: 2-D numpy array or tensor of any real dtype and any size.
        size: side of the output map (224 in the protocol).

    Returns:
        float64 ``(size, size)`` array in ``[0, 1]``.

    Raises:
        ValueError: if ``cam`` is not 2-D, is empty, holds an infinite value or spans more than float64 can hold.

    Example:
        >>> m = prepare_scoremap(np.arange(4.0).reshape(2, 2))
        >>> m.shape, m.min(), m.max()
        ((224, 224), np.float64(0.0), np.float64(1.0))
    """
    return _normalize_minmax(_resized_float64(cam, size))


def prepare_scoremap_uint8(cam: ArrayLike, size: int = RESIZE_LENGTH) -> tuple[np.ndarray, np.ndarray]:
    """:func:`prepare_scoremap` and its ``floor(255 * s)`` grey image, the normalisation and the grey
    levels in two compiled passes (:func:`~cream_pl.metrics.component_tree.minmax_uint8`).

    Example:
        >>> s, img = prepare_scoremap_uint8(np.arange(4.0).reshape(2, 2))
        >>> bool(np.array_equal(s, prepare_scoremap(np.arange(4.0).reshape(2, 2)))), img.dtype, int(img.max())
        (True, dtype('uint8'), 255)
    """
    arr = _resized_float64(cam, size)
    return arr, minmax_uint8(arr)


def _resized_float64(cam: ArrayLike, size: int) -> np.ndarray:
    """A checked float64 copy of ``cam`` brought to ``size x size`` (bicubic), not yet normalised."""
    arr = _to_numpy(cam)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"a CAM must be a non-empty 2-D array (H, W), got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"a CAM must hold real numbers, got dtype {arr.dtype}")  # complex: its imaginary part dropped
    arr = np.array(arr, dtype=np.float64)  # copy: normalisation works in place
    if np.isinf(arr).any():
        raise ValueError("a CAM holds an infinite value; the benchmark cannot score it")
    if arr.shape != (size, size):
        import cv2

        arr = cv2.resize(arr, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(arr)


def prepare_scoremaps(cams: ArrayLike, size: int = RESIZE_LENGTH) -> ArrayLike:
    """Batched :func:`prepare_scoremap`: ``(B, h, w)`` -> float64 ``(B, size, size)``.

    Returns a CPU tensor when given a tensor, a numpy array otherwise.

    Example:
        >>> import torch
        >>> prepare_scoremaps(torch.rand(2, 14, 14)).shape
        torch.Size([2, 224, 224])
    """
    arr = _to_numpy(cams)
    if arr.ndim != 3:
        raise ValueError(f"CAMs must have shape (B, H, W), got {arr.shape}")
    out = np.stack([prepare_scoremap(a, size) for a in arr]) if len(arr) else np.zeros((0, size, size))
    if _is_tensor(cams):
        import torch

        return torch.from_numpy(out)
    return out


def cam_thresholds(interval: float = 0.001) -> np.ndarray:
    """CAM thresholds of the benchmark: ``np.arange(0, 1, interval)`` in float64 (1.0 excluded).

    Example:
        >>> cam_thresholds(0.25)
        array([0.  , 0.25, 0.5 , 0.75])
    """
    interval = float(interval)
    if not MIN_CAM_INTERVAL <= interval <= 1.0:  # below: millions of thresholds, gigabytes of counts per image
        raise ValueError(f"the CAM threshold interval must be in [{MIN_CAM_INTERVAL:g}, 1] (at most a million "
                         f"thresholds; the benchmark uses 0.01 and 0.001), got {interval:g}")
    return np.arange(0, 1, interval)


# ----------------------------------------------------------------------------------------------
# score map -> boxes


def _check_scoremap(scoremap: ArrayLike) -> np.ndarray:
    arr = _to_numpy(scoremap)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"a score map must be a non-empty 2-D array (H, W), got shape {arr.shape}")
    arr = arr.astype(np.float64, copy=False)
    if np.isnan(arr).any():
        raise ValueError("a score map must not contain NaN (prepare_scoremap turns NaN CAMs into zeros)")
    if (arr > 1).any() or (arr < 0).any():
        raise ValueError(
            f"a score map must be in [0, 1], got min={arr.min()}, max={arr.max()} (use prepare_scoremap)"
        )
    return arr


def scoremap_to_uint8(scoremap: ArrayLike) -> np.ndarray:
    """``floor(255 * s)`` as uint8, after the benchmark's validity checks (2-D, no NaN, in [0, 1]).

    Example:
        >>> scoremap_to_uint8(np.array([[0.0, 0.5, 1.0]]))
        array([[  0, 127, 255]], dtype=uint8)
    """
    return (_check_scoremap(scoremap) * 255).astype(np.uint8)


def threshold_levels(uint8_max: int, thresholds: Sequence[float] | np.ndarray) -> np.ndarray:
    """Grey level of each threshold: ``int(t * uint8_max)``; a pixel is kept iff its value is greater.

    Example:
        >>> threshold_levels(255, [0.0, 0.5, 0.999])
        array([  0, 127, 254])
    """
    thr = np.asarray(thresholds, dtype=np.float64)
    if thr.ndim != 1 or not np.isfinite(thr).all():
        raise ValueError("thresholds must be a 1-D sequence of finite numbers")
    # levels below 0 keep every pixel and levels from 255 on keep none, so clipping changes nothing
    return np.clip(np.trunc(thr * float(uint8_max)), -1, 256).astype(np.int64)


def _mask_rects(mask: np.ndarray, multi_contour: bool) -> list[tuple[int, int, int, int]]:
    """``cv2.boundingRect`` of all contours of a binary mask, or of the largest one.

    ``(0, 0, 0, 0)`` stands for "no contour" (it becomes the benchmark's ``[0, 0, 0, 0]`` box).
    """
    import cv2

    contours = cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
    if len(contours) == 0:
        return [(0, 0, 0, 0)]
    if multi_contour:
        return [cv2.boundingRect(c) for c in contours]
    areas = [cv2.contourArea(c) for c in contours]
    return [cv2.boundingRect(contours[areas.index(max(areas))])]  # index(): the first contour wins ties


def _rects_to_boxes(rects: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(x, y, w, h)`` -> ``[x, y, min(x + w, W - 1), min(y + h, H - 1)]``: one past the contour, clipped."""
    boxes = rects.astype(np.int64, copy=True)
    boxes[:, 2] = np.minimum(rects[:, 0] + rects[:, 2], width - 1)
    boxes[:, 3] = np.minimum(rects[:, 1] + rects[:, 3], height - 1)
    return boxes


def _level_boxes(img: np.ndarray, levels: np.ndarray, multi_contour: bool) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of the masks ``img > t`` for each level ``t``, concatenated, and the number per level.

    One ``cv2.findContours`` per level: the reference's way, kept as the oracle.
    """
    import cv2

    rects: list[tuple[int, int, int, int]] = []
    counts = np.empty(len(levels), dtype=np.int64)
    for i, t in enumerate(levels.tolist()):
        # uint8 THRESH_BINARY keeps src > floor(thresh); thresh < 0 keeps all, >= 255 keeps none
        mask = cv2.threshold(img, t, 1, cv2.THRESH_BINARY)[1]
        found = _mask_rects(mask, multi_contour)
        rects.extend(found)
        counts[i] = len(found)
    height, width = img.shape
    return _rects_to_boxes(np.asarray(rects, dtype=np.int64).reshape(-1, 4), width, height), counts


def _level_boxes_fast(
    img: np.ndarray, levels: np.ndarray, multi_contour: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Same output as :func:`_level_boxes`, from the component trees of :func:`level_rects`.

    All contours come from the trees directly. For the largest contour (V1) a level with a single
    contour needs nothing more; only levels with several contours are traced with ``findContours``
    to compare their ``cv2.contourArea``.
    """
    rects, counts = level_rects(img, levels)
    empty = counts == 0
    if empty.any():  # no contour: the benchmark's single [0, 0, 0, 0] box
        rects = np.insert(rects, np.cumsum(counts)[empty], 0, axis=0)  # at each empty level's start
        counts = np.where(empty, 1, counts)
    height, width = img.shape
    boxes = _rects_to_boxes(rects, width, height)
    if multi_contour:
        return boxes, counts
    largest = boxes[np.cumsum(counts) - 1]  # right where a level has a single contour
    several = np.flatnonzero(counts > 1)
    if len(several):
        largest[several] = _level_boxes(img, levels[several], multi_contour=False)[0]
    return largest, np.ones(len(levels), np.int64)


def _distinct_levels(img: np.ndarray, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group levels that give the same mask ``img > level``.

    Returns ``(representative levels, inverse)`` with ``levels[i]`` giving the same mask as
    ``representative[inverse[i]]``. Two levels give the same mask iff the same number of grey levels
    present in ``img`` are <= each of them.
    """
    present = np.bincount(img.ravel(), minlength=256)[:256] > 0
    at_or_below = np.cumsum(present)  # at_or_below[v] = number of present grey levels <= v
    clipped = np.clip(levels, -1, 255)
    keys = np.where(clipped < 0, 0, at_or_below[np.maximum(clipped, 0)])
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return levels[first], inverse.reshape(-1)


def _split(boxes: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    return np.split(boxes, np.cumsum(counts)[:-1])


def boxes_from_scoremap(
    scoremap: ArrayLike,
    thresholds: Sequence[float] | np.ndarray,
    multi_contour: bool = False,
    *,
    fast: bool = True,
) -> list[np.ndarray]:
    """Boxes of a score map at every CAM threshold, exactly as the benchmark computes them.

    Args:
        scoremap: 2-D float map in ``[0, 1]`` (see :func:`prepare_scoremap`).
        thresholds: CAM thresholds (e.g. :func:`cam_thresholds`).
        multi_contour: keep every contour (MaxBoxAccV2) instead of the largest one (V1).
        fast: each distinct binary mask once, all of them from two component trees (identical
            boxes; within one threshold the order of the boxes may differ from OpenCV's when
            ``multi_contour``); ``False`` runs one ``findContours`` per threshold like the reference.

    Returns:
        One ``(n, 4)`` int64 ``XYXY_INCLUSIVE`` array per threshold (``n == 1`` unless
        ``multi_contour``); ``[[0, 0, 0, 0]]`` where nothing survives the threshold.

    Example:
        >>> s = np.zeros((8, 8)); s[2:4, 1:6] = 1.0
        >>> boxes_from_scoremap(s, [0.5])[0]  # right/bottom edge one past the object
        array([[1, 2, 6, 4]])
    """
    img = scoremap_to_uint8(scoremap)
    levels = threshold_levels(int(img.max()), thresholds)
    if not fast:
        return _split(*_level_boxes(img, levels, multi_contour))
    reps, inverse = _distinct_levels(img, levels)
    per_rep = _split(*_level_boxes_fast(img, reps, multi_contour))
    return [per_rep[j].copy() for j in inverse]


def box_from_scoremap_at(scoremap: ArrayLike, threshold: float, multi_contour: bool = False) -> np.ndarray:
    """Box(es) of a score map at one threshold (pseudo boxes, ``localize``).

    Returns:
        ``(4,)`` int64 ``XYXY_INCLUSIVE`` box of the largest contour, or with ``multi_contour`` the
        ``(n, 4)`` boxes of all contours. ``[0, 0, 0, 0]`` when nothing survives.

    Example:
        >>> s = np.zeros((8, 8)); s[2:4, 1:6] = 1.0; s[6, 6] = 0.9
        >>> box_from_scoremap_at(s, 0.5)
        array([1, 2, 6, 4])
    """
    boxes = boxes_from_scoremap(scoremap, [float(threshold)], multi_contour, fast=False)[0]
    return boxes if multi_contour else boxes[0]


def pixel_box_from_scoremap_at(scoremap: ArrayLike, threshold: float, multi_contour: bool = False) -> np.ndarray:
    """The object's own pixel box at one threshold: first to **last** pixel, both inclusive.

    :func:`box_from_scoremap_at` returns the benchmark's box, whose right/bottom edge is one past
    the contour (``x + w``, clipped at ``W - 1``): right for scoring against the protocol, one
    pixel too wide and tall as a description of the object. Pseudo boxes and ``localize`` use
    this function instead. With ``multi_contour`` the union box of all contours is returned.

    Returns:
        ``(4,)`` int64 ``XYXY_INCLUSIVE`` box; ``[0, 0, 0, 0]`` when nothing survives.

    Example:
        >>> s = np.zeros((8, 8)); s[2:4, 1:6] = 1.0; s[6, 6] = 0.9
        >>> pixel_box_from_scoremap_at(s, 0.5)
        array([1, 2, 5, 3])
    """
    import cv2

    img = scoremap_to_uint8(scoremap)
    level = int(threshold_levels(int(img.max()), [float(threshold)])[0])
    mask = cv2.threshold(img, level, 1, cv2.THRESH_BINARY)[1]
    rects = np.asarray(_mask_rects(mask, multi_contour), dtype=np.int64).reshape(-1, 4)
    if rects[:, 2:].max() == 0:
        return np.zeros(4, dtype=np.int64)
    x0, y0 = rects[:, 0].min(), rects[:, 1].min()
    x1, y1 = (rects[:, 0] + rects[:, 2]).max() - 1, (rects[:, 1] + rects[:, 3]).max() - 1
    return np.array([x0, y0, x1, y1], dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# box accuracy


def _check_gt_boxes(gt_boxes: ArrayLike, where: str) -> np.ndarray:
    gt = _to_numpy(gt_boxes)
    if gt.ndim == 1 and gt.size == 4:
        gt = gt[None]
    if gt.ndim != 2 or gt.shape[1] != 4:
        raise ValueError(f"{where}: GT boxes must have shape (n, 4), got {tuple(gt.shape)}")
    if gt.shape[0] == 0:
        raise ValueError(f"{where}: an image needs at least one GT box")
    if not (np.issubdtype(gt.dtype, np.number) or gt.dtype == np.bool_):
        raise ValueError(f"{where}: GT boxes must be integer XYXY_INCLUSIVE pixels, got dtype {gt.dtype}")
    if np.issubdtype(gt.dtype, np.floating) and not np.array_equal(gt, np.round(gt)):
        raise ValueError(f"{where}: GT boxes must be integer XYXY_INCLUSIVE pixels, got {gt.tolist()}")
    gt = gt.astype(np.int64)
    if (gt < 0).any() or (gt[:, 2] < gt[:, 0]).any() or (gt[:, 3] < gt[:, 1]).any():
        raise ValueError(
            f"{where}: GT boxes must be XYXY_INCLUSIVE with 0 <= x0 <= x1 and 0 <= y0 <= y1, got {gt.tolist()}"
        )
    return gt


def box_iou_plus_one(boxes_a: ArrayLike, boxes_b: ArrayLike) -> np.ndarray:
    """Pairwise "+1" IoU of integer ``XYXY_INCLUSIVE`` boxes, the benchmark's arithmetic, in numpy.

    Integer intersection and union, one float64 division (equal to
    :func:`cream_pl.core.boxes.box_iou_inclusive`); a pair with no positive union scores 0.

    Example:
        >>> box_iou_plus_one([[0, 0, 1, 1]], [[1, 1, 2, 2], [0, 0, 1, 1]])
        array([[0.14285714, 1.        ]])
    """
    a = np.asarray(_to_numpy(boxes_a), dtype=np.int64).reshape(-1, 4)
    b = np.asarray(_to_numpy(boxes_b), dtype=np.int64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1
    inter = np.maximum(iw, 0) * np.maximum(ih, 0)
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    union = area_a[:, None] + area_b[None, :] - inter
    out = np.zeros(union.shape, dtype=np.float64)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def best_iou_per_threshold(
    scoremap: ArrayLike,
    gt_boxes: ArrayLike,
    thresholds: Sequence[float] | np.ndarray,
    multi_contour: bool = False,
    *,
    fast: bool = True,
) -> np.ndarray:
    """Best "+1" IoU between the map's boxes and the GT boxes at each threshold.

    Args:
        scoremap: 2-D float map in ``[0, 1]``.
        gt_boxes: ``(n, 4)`` ``XYXY_INCLUSIVE`` GT boxes in the map's grid.
        thresholds: CAM thresholds.
        multi_contour: all contours (V2) or the largest (V1).
        fast: see :func:`boxes_from_scoremap`.

    Returns:
        float64 ``(len(thresholds),)``: max over the boxes at that threshold of max over GT boxes.

    Example:
        >>> s = np.zeros((8, 8)); s[2:4, 1:6] = 1.0
        >>> best_iou_per_threshold(s, [[1, 2, 5, 3]], [0.5]).round(4)  # 10 / 18 pixels
        array([0.5556])
    """
    gt = _check_gt_boxes(gt_boxes, "best_iou_per_threshold")
    img = scoremap_to_uint8(scoremap)
    levels = threshold_levels(int(img.max()), thresholds)
    if len(levels) == 0:
        return np.zeros(0)
    if fast and multi_contour:  # scored inside the component-tree pass
        return level_ious(img, gt, levels)[0][np.clip(levels, -1, 255) + 1]
    _, inverse, ious, starts = _contour_ious(img, gt, levels, multi_contour, fast)
    return np.maximum.reduceat(ious, starts)[inverse]


def _contour_ious(
    img: np.ndarray, gt: np.ndarray, levels: np.ndarray, multi_contour: bool, fast: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Best IoU over the GT boxes of every contour box at each (distinct, if ``fast``) grey level.

    Returns ``(levels, inverse, ious, starts)``: input level ``i`` is ``levels[inverse[i]]``, whose
    boxes' IoUs are ``ious[starts[j]:starts[j + 1]]`` for ``j = inverse[i]``.
    """
    if fast:
        levels, inverse = _distinct_levels(img, levels)
        boxes, counts = _level_boxes_fast(img, levels, multi_contour)
    else:
        inverse = np.arange(len(levels))
        boxes, counts = _level_boxes(img, levels, multi_contour)
    ious = box_iou_plus_one(boxes, gt).max(axis=1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return levels, inverse, ious, starts


def _iou_fractions(iou_thresholds: Sequence[int | float]) -> np.ndarray:
    # the benchmark compares against ``delta / 100`` with delta given in percent (30, 50, 70)
    return np.array([d / 100 for d in iou_thresholds], dtype=np.float64)


def localized_per_threshold(
    scoremap: ArrayLike,
    gt_boxes: ArrayLike,
    thresholds: Sequence[float] | np.ndarray,
    iou_thresholds: Sequence[int | float] = (30, 50, 70),
    multi_contour: bool = True,
    *,
    fast: bool = True,
) -> np.ndarray:
    """Whether the map localises the object at each (IoU level, threshold): best IoU ``>= delta / 100``.

    Equal to ``best_iou_per_threshold(...) >= delta / 100``. The fast path scores every contour
    inside the component-tree pass (:func:`~cream_pl.metrics.component_tree.level_ious`); for
    the largest contour (V1) it traces a level with ``findContours`` only when its contours
    disagree: if every contour's box clears ``delta`` (or none does), so does the largest one.

    Args:
        scoremap: 2-D float map in ``[0, 1]``.
        gt_boxes: ``(n, 4)`` ``XYXY_INCLUSIVE`` GT boxes in the map's grid.
        thresholds: CAM thresholds.
        iou_thresholds: IoU levels in percent.
        multi_contour: all contours (V2) or the largest (V1).
        fast: see :func:`boxes_from_scoremap`.

    Returns:
        bool ``(len(iou_thresholds), len(thresholds))``.

    Example:
        >>> s = np.zeros((8, 8)); s[2:4, 1:6] = 1.0; s[6, 6] = 0.8
        >>> localized_per_threshold(s, [[1, 2, 5, 3]], [0.5, 0.9], (30, 50, 70), multi_contour=False)
        array([[ True,  True],
               [ True,  True],
               [False, False]])
    """
    if not fast:
        best = best_iou_per_threshold(scoremap, gt_boxes, thresholds, multi_contour, fast=False)
        return best[None, :] >= _iou_fractions(iou_thresholds)[:, None]
    gt = _check_gt_boxes(gt_boxes, "localized_per_threshold")
    img = scoremap_to_uint8(scoremap)
    levels = threshold_levels(int(img.max()), thresholds)
    return localized_from_uint8(img, gt, levels, iou_thresholds, multi_contour)


def localized_from_uint8(
    img: np.ndarray,
    gt: np.ndarray,
    levels: np.ndarray,
    iou_thresholds: Sequence[int | float] = (30, 50, 70),
    multi_contour: bool = True,
    v1_iou_thresholds: Sequence[int | float] = (),
) -> np.ndarray:
    """:func:`localized_per_threshold` on a checked uint8 map, its threshold levels and int64 GT boxes.

    With ``v1_iou_thresholds`` (and ``multi_contour``), the largest-contour (V1) decisions at
    those IoU levels come from the same component-tree pass and are stacked below the main rows.

    Returns:
        bool ``(len(iou_thresholds) + len(v1_iou_thresholds), len(levels))``.
    """
    fractions = _iou_fractions(iou_thresholds)
    v1_fractions = _iou_fractions(v1_iou_thresholds) if multi_contour else fractions
    if len(levels) == 0:
        return np.zeros((len(fractions) + (len(v1_fractions) if multi_contour else 0), 0), dtype=bool)
    index = np.clip(levels, -1, 255) + 1
    hi, lo, _, known, largest_iou = level_ious_largest(img, gt, levels)
    rows = [hi[index][None, :] >= fractions[:, None]] if multi_contour else []
    if len(v1_fractions):
        rows.append(_largest_contour_ok(img, gt, levels, hi, lo, v1_fractions, known, largest_iou))
    return np.concatenate(rows, axis=0)


def _largest_contour_ok(
    img: np.ndarray, gt: np.ndarray, levels: np.ndarray, hi: np.ndarray, lo: np.ndarray, fractions: np.ndarray,
    known: np.ndarray, largest_iou: np.ndarray,
) -> np.ndarray:
    """V1 decisions: some contour clears delta and every one does -> yes; none does -> no; else trace.

    Decided per mask level index (at most 257), and each distinct undecided mask is traced once.
    A level whose largest contour the component-tree pass already names (``known`` / ``largest_iou``,
    :func:`~cream_pl.metrics.component_tree.level_ious_largest`) takes its IoU instead of a trace.
    """
    index = np.clip(levels, -1, 255) + 1
    ok = hi[None, :] >= fractions[:, None]  # (n_iou, 257)
    every = lo[None, :] >= fractions[:, None]
    needed = np.zeros(len(hi), dtype=bool)
    needed[index] = True
    disagree = needed & (ok != every).any(axis=0)
    named = disagree & known
    ok[:, named] = largest_iou[None, named] >= fractions[:, None]
    disagree &= ~known
    undecided = np.flatnonzero(disagree)
    if len(undecided):  # contours disagree: the largest one decides; equal masks share one trace
        present = np.bincount(img.ravel(), minlength=256)[:256] > 0
        keys = np.concatenate([[0], np.cumsum(present)])[undecided]  # same key <=> same mask
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        _, _, iou, _ = _contour_ious(img, gt, undecided[first] - 1, multi_contour=False, fast=False)
        ok[:, undecided] = (iou[None, :] >= fractions[:, None])[:, inverse.reshape(-1)]
    return ok[:, index]


def box_accuracy_update(
    scoremaps: Sequence[ArrayLike] | ArrayLike,
    gt_boxes: Sequence[ArrayLike],
    thresholds: Sequence[float] | np.ndarray,
    iou_thresholds: Sequence[int | float] = (30, 50, 70),
    multi_contour: bool = True,
    *,
    num_workers: int | None = None,
    fast: bool = True,
) -> np.ndarray:
    """Per-(IoU level, threshold) counts of correctly localised images in a batch.

    An image counts as correct at ``(delta, t)`` when its best IoU at ``t`` is ``>= delta / 100``.

    Args:
        scoremaps: ``(B, H, W)`` maps in ``[0, 1]`` (tensor, array or a sequence of 2-D maps).
        gt_boxes: ``B`` arrays/tensors of ``(n_i, 4)`` ``XYXY_INCLUSIVE`` GT boxes.
        thresholds: CAM thresholds.
        iou_thresholds: IoU levels in percent (the benchmark uses 30, 50, 70).
        multi_contour: all contours (V2) or the largest (V1).
        num_workers: threads over images (the compiled kernels and OpenCV release the GIL);
            ``None`` = CPU count, ``0``/``1`` = serial. Results do not depend on it.
        fast: see :func:`boxes_from_scoremap`.

    Returns:
        int64 ``(len(iou_thresholds), len(thresholds))`` counts.

    Example:
        >>> s = np.zeros((1, 8, 8)); s[0, 2:4, 1:6] = 1.0
        >>> box_accuracy_update(s, [[[1, 2, 5, 3]]], [0.5], (30, 50, 70))
        array([[1],
               [1],
               [0]])
    """
    if len(scoremaps) != len(gt_boxes):
        raise ValueError(f"got {len(scoremaps)} score maps but {len(gt_boxes)} GT box sets")
    fractions = _iou_fractions(iou_thresholds)
    thr = np.asarray(thresholds, dtype=np.float64)

    def one(i: int) -> np.ndarray:
        try:
            return localized_per_threshold(
                scoremaps[i], gt_boxes[i], thr, iou_thresholds, multi_contour, fast=fast
            )
        except ValueError as err:
            raise ValueError(f"image {i} of the batch: {err}") from err

    workers = (os.cpu_count() or 1) if num_workers is None else int(num_workers)
    workers = max(1, min(workers, len(scoremaps)))
    if workers == 1:
        ok = [one(i) for i in range(len(scoremaps))]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            ok = list(pool.map(one, range(len(scoremaps))))
    counts = np.zeros((len(fractions), len(thr)), dtype=np.int64)
    for o in ok:
        counts += o
    return counts


def box_accuracy_summary(
    correct: ArrayLike,
    total: int,
    iou_thresholds: Sequence[int | float],
    thresholds: Sequence[float] | np.ndarray,
) -> dict[str, Any]:
    """MaxBoxAcc numbers from the accumulated counts (the benchmark's ``BoxEvaluator.compute``), numpy only.

    Returns:
        ``max_box_acc`` (mean over IoU levels of the best accuracy over thresholds, percent),
        ``max_box_acc_iou`` ``{iou: percent}``, ``best_threshold_iou`` ``{iou: threshold}`` (first
        best), ``box_acc_curve`` (float64 ``(n_iou, n_thr)`` percent) and ``thresholds`` (arrays).

    Example:
        >>> box_accuracy_summary(np.array([[1, 2], [0, 1]]), 2, (30, 50), [0.0, 0.5])["max_box_acc"]
        75.0
    """
    correct = _to_numpy(correct)
    total = int(total)
    if total <= 0:
        raise RuntimeError("box accuracy needs at least one image; update() was never called with data")
    thr = np.asarray(thresholds, dtype=np.float64)
    if correct.shape != (len(iou_thresholds), len(thr)):
        raise ValueError(f"counts have shape {correct.shape}, expected {(len(iou_thresholds), len(thr))}")
    curve = correct.astype(np.float64) * 100.0 / float(total)
    maxima = [curve[i].max() for i in range(len(iou_thresholds))]
    best_idx = [int(np.argmax(curve[i])) for i in range(len(iou_thresholds))]
    return {
        "max_box_acc": float(np.average(maxima)),
        "max_box_acc_iou": {_iou_key(d): float(m) for d, m in zip(iou_thresholds, maxima)},
        "best_threshold_iou": {_iou_key(d): float(thr[j]) for d, j in zip(iou_thresholds, best_idx)},
        "box_acc_curve": curve,
        "thresholds": thr.copy(),
    }


def box_accuracy_compute(
    correct: ArrayLike,
    total: int,
    iou_thresholds: Sequence[int | float],
    thresholds: Sequence[float] | np.ndarray,
) -> dict[str, Any]:
    """:func:`box_accuracy_summary` with ``box_acc_curve`` and ``thresholds`` as torch tensors.

    Example:
        >>> box_accuracy_compute(np.array([[1, 2], [0, 1]]), 2, (30, 50), [0.0, 0.5])["max_box_acc"]
        75.0
    """
    import torch

    out = box_accuracy_summary(correct, total, iou_thresholds, thresholds)
    out["box_acc_curve"] = torch.from_numpy(out["box_acc_curve"])
    out["thresholds"] = torch.from_numpy(out["thresholds"])
    return out


def _iou_key(delta: int | float) -> int | float:
    return int(delta) if float(delta).is_integer() else float(delta)


# ----------------------------------------------------------------------------------------------
# PxAP


def pxap_bin_edges(thresholds: Sequence[float] | np.ndarray) -> np.ndarray:
    """Histogram edges of the benchmark's PxAP: the thresholds then 1, 2, 3 (bins ``[t_i, t_i+1)``).

    Example:
        >>> pxap_bin_edges(cam_thresholds(0.5))
        array([0. , 0.5, 1. , 2. , 3. ])
    """
    return np.append(np.asarray(thresholds, dtype=np.float64), [1.0, 2.0, 3.0])


def pxap_histograms(
    scoremaps: Sequence[ArrayLike] | ArrayLike, masks: Sequence[ArrayLike] | ArrayLike, edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Histograms of the scores on GT-foreground and GT-background pixels (ignore pixels excluded).

    Args:
        scoremaps: ``(B, H, W)`` maps in ``[0, 1]``.
        masks: ``(B, H, W)`` integer masks, 1 = foreground, 0 = background, 255 = ignore.
        edges: :func:`pxap_bin_edges`.

    Returns:
        ``(true_hist, false_hist)``, float64 of length ``len(edges) - 1``.

    Example:
        >>> s = np.array([[[0.0, 0.6], [1.0, 0.2]]]); m = np.array([[[0, 1], [1, 255]]])
        >>> pxap_histograms(s, m, pxap_bin_edges([0.0, 0.5]))
        (array([0., 1., 1., 0.]), array([1., 0., 0., 0.]))
    """
    if len(scoremaps) != len(masks):
        raise ValueError(f"got {len(scoremaps)} score maps but {len(masks)} masks")
    true_hist = np.zeros(len(edges) - 1)
    false_hist = np.zeros(len(edges) - 1)
    for i, (s, m) in enumerate(zip(scoremaps, masks)):
        try:
            score = _check_scoremap(s)
        except ValueError as err:
            raise ValueError(f"image {i} of the batch: {err}") from err
        mask = _to_numpy(m)
        if mask.shape != score.shape:
            raise ValueError(
                f"image {i} of the batch: mask shape {mask.shape} != score map shape {score.shape}"
            )
        bad = ~np.isin(mask, (0, 1, 255))
        if bad.any():
            raise ValueError(
                f"image {i} of the batch: mask values must be 0 (background), 1 (foreground) or 255 (ignore), "
                f"found {np.unique(mask[bad])[:5].tolist()}"
            )
        mask_histograms(score, mask.astype(np.uint8), edges, out=(true_hist, false_hist))  # np.histogram's bins
    return true_hist, false_hist


def _pr_arrays(true_hist: ArrayLike, false_hist: ArrayLike) -> tuple[np.ndarray, ...]:
    t = _to_numpy(true_hist).astype(np.float64, copy=False)
    f = _to_numpy(false_hist).astype(np.float64, copy=False)
    if t.shape != f.shape or t.ndim != 1:
        raise ValueError(f"histograms must be 1-D of equal length, got {t.shape} and {f.shape}")
    tp = t[::-1].cumsum()
    fn = t.sum() - tp
    fp = f[::-1].cumsum()
    if ((tp + fn) <= 0).all():  # the masks' fault (UserRuntimeError): one line from every command
        raise UserRuntimeError("PxAP: no foreground (GT-positive) pixel in the evaluated masks")
    if f.sum() <= 0:  # every precision would be 1: PxAP 100 whatever the maps
        raise UserRuntimeError("PxAP: no background (GT-negative) pixel in the evaluated masks (all foreground or "
                               "ignored: inverted masks, or a background value other than 0?)")
    if ((tp + fp) <= 0).all():
        raise RuntimeError("PxAP: no pixel was predicted positive (empty histograms)")
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    return tp, fp, precision, recall


def pxap_pr_curve(true_hist: ArrayLike, false_hist: ArrayLike, edges: np.ndarray) -> dict[str, np.ndarray]:
    """Pixel precision-recall curve, by descending decision threshold (``score >= threshold``).

    Returns:
        ``precision``, ``recall`` and ``thresholds`` (float64, same length; the first point is
        ``score >= 2``, i.e. nothing predicted, with precision NaN).
    """
    _, _, precision, recall = _pr_arrays(true_hist, false_hist)
    return {
        "precision": precision,
        "recall": recall,
        "thresholds": np.asarray(edges, np.float64)[:-1][::-1].copy(),
    }


def pxap_from_histograms(true_hist: ArrayLike, false_hist: ArrayLike) -> float:
    """PxAP in percent: ``sum(precision[1:] * diff(recall))`` over points with a positive prediction.

    This is the benchmark's ``MaskEvaluator.compute``: a non-interpolated AP over the binned curve.

    Example:
        >>> pxap_from_histograms(np.array([0.0, 0, 3, 0]), np.array([0.0, 0, 1, 0]))
        75.0
    """
    tp, fp, precision, recall = _pr_arrays(true_hist, false_hist)
    keep = (tp + fp) != 0
    return float((precision[1:] * np.diff(recall))[keep[1:]].sum() * 100)
