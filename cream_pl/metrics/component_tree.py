"""All-contour boxes of a uint8 map at many grey levels at once, from two component trees.

``cv2.findContours(mask, RETR_TREE, ...)`` returns one outer border per 8-connected component of
the mask and one hole border per 4-connected component of the background that does not reach the
image frame (OpenCV treats the outside of the image as background). Their ``cv2.boundingRect``
is therefore known without tracing:

- outer border: the component's own extent ``(x0, y0, x1 - x0 + 1, y1 - y0 + 1)``;
- hole border: the foreground pixels 4-adjacent to the hole, i.e. the hole's extent grown by
  one pixel on every side ``(x0 - 1, y0 - 1, x1 - x0 + 3, y1 - y0 + 3)``.

The masks ``img > c`` of all grey levels ``c`` are nested, so one union-find pass over the pixels
in decreasing grey order gives the foreground components of every level, and one pass in
increasing order the background components (the holes). Each pass touches every pixel once
(near-linear in the number of pixels), instead of one ``findContours`` per level. The rectangles
are identical to OpenCV's for every mask (the tests compare them on random and CAM-like maps);
only their order within a level differs, which the all-contour box accuracy does not see.

The kernels are compiled by numba (cached on disk after the first call) and release the GIL, so
a thread pool scales them over images.

Example:
    >>> img = np.zeros((6, 6), np.uint8); img[1:5, 1:5] = 9; img[2:4, 2:4] = 3
    >>> rects, counts = level_rects(img, np.array([5, 0]))
    >>> counts.tolist()  # level 5: the ring and its hole; level 0: one square
    [2, 1]
    >>> sorted(map(tuple, rects[:2].tolist()))
    [(1, 1, 4, 4), (1, 1, 4, 4)]
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["level_rects"]

_NUM_GREY = 256


@numba.njit(cache=True, nogil=True, inline="always")
def _find(parent: np.ndarray, p: int) -> int:
    while parent[p] != p:
        parent[p] = parent[parent[p]]  # path halving
        p = parent[p]
    return p


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _sweep(
    img: np.ndarray, order: np.ndarray, starts: np.ndarray, foreground: bool, record: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Union-find over grey levels; after each level whose ``record`` flag is set, emit the rects.

    ``foreground=True`` adds pixels from grey 255 down to 0 with 8-connectivity: after grey ``v``
    the added set is the mask ``img > v - 1``. ``False`` adds them from 0 up with 4-connectivity
    and keeps only components that do not touch the frame: after grey ``v`` they are the holes of
    the mask ``img > v``. ``record`` is indexed by the mask's level plus one (levels -1..255).

    Returns ``(tags, rects)``: for each emitted rect the mask level + 1 it belongs to, and its
    ``(x, y, w, h)`` as ``cv2.boundingRect`` gives it for the matching contour.
    """
    height, width = img.shape
    padded_width = width + 2  # a frame of never-added pixels spares the bounds checks
    n = (height + 2) * padded_width
    parent = np.full(n, -1, np.int32)  # -1: pixel not added yet
    # per root: size, x0, y0, x1, y1 (one row, so a union touches two cache lines)
    comp = np.empty((n, 5), np.int32)
    active = np.empty(n, np.int32)  # roots of the current components, compact
    slot = np.empty(n, np.int32)  # position of a root in ``active``
    num_active = 0
    cap = 1024
    tags = np.empty(cap, np.int64)
    rects = np.empty((cap, 4), np.int64)
    num_out = 0
    w = padded_width
    if foreground:
        offsets = np.array([-w - 1, -w, -w + 1, -1, 1, w - 1, w, w + 1])
    else:
        offsets = np.array([-w, -1, 1, w])
    for step in range(_NUM_GREY):
        grey = _NUM_GREY - 1 - step if foreground else step
        for k in range(starts[grey], starts[grey + 1]):
            flat = order[k]
            py = flat // width
            px = flat - py * width
            p = (py + 1) * padded_width + px + 1
            a = -1  # root of p's component once p has joined one
            for j in range(offsets.shape[0]):
                q = p + offsets[j]
                up = parent[q]
                if up < 0 or up == a:  # not added yet (or the frame), or already in p's component
                    continue
                b = _find(parent, q)
                if a < 0:  # the first component met: p joins it
                    parent[p] = b
                    comp[b, 0] += 1
                    comp[b, 1] = min(comp[b, 1], px)
                    comp[b, 2] = min(comp[b, 2], py)
                    comp[b, 3] = max(comp[b, 3], px)
                    comp[b, 4] = max(comp[b, 4], py)
                    a = b
                    continue
                if a == b:
                    continue
                if comp[a, 0] < comp[b, 0]:
                    a, b = b, a
                parent[b] = a  # b's component joins a's
                comp[a, 0] += comp[b, 0]
                comp[a, 1] = min(comp[a, 1], comp[b, 1])
                comp[a, 2] = min(comp[a, 2], comp[b, 2])
                comp[a, 3] = max(comp[a, 3], comp[b, 3])
                comp[a, 4] = max(comp[a, 4], comp[b, 4])
                last = active[num_active - 1]  # swap-remove b from the active roots
                active[slot[b]] = last
                slot[last] = slot[b]
                num_active -= 1
            if a < 0:  # no added neighbour: p starts a component
                parent[p] = p
                comp[p, 0] = 1
                comp[p, 1] = px
                comp[p, 2] = py
                comp[p, 3] = px
                comp[p, 4] = py
                slot[p] = num_active
                active[num_active] = p
                num_active += 1
        level_plus_one = grey if foreground else grey + 1
        if not record[level_plus_one]:
            continue
        for i in range(num_active):
            r = active[i]
            cx0, cy0, cx1, cy1 = comp[r, 1], comp[r, 2], comp[r, 3], comp[r, 4]
            if foreground:
                rect = (cx0, cy0, cx1 - cx0 + 1, cy1 - cy0 + 1)
            elif cx0 > 0 and cy0 > 0 and cx1 < width - 1 and cy1 < height - 1:
                rect = (cx0 - 1, cy0 - 1, cx1 - cx0 + 3, cy1 - cy0 + 3)
            else:
                continue  # background reaching the frame is not a hole
            if num_out == cap:
                cap *= 2
                tags_grown = np.empty(cap, np.int64)
                tags_grown[:num_out] = tags[:num_out]
                tags = tags_grown
                rects_grown = np.empty((cap, 4), np.int64)
                rects_grown[:num_out] = rects[:num_out]
                rects = rects_grown
            tags[num_out] = level_plus_one
            rects[num_out, 0] = rect[0]
            rects[num_out, 1] = rect[1]
            rects[num_out, 2] = rect[2]
            rects[num_out, 3] = rect[3]
            num_out += 1
    return tags[:num_out], rects[:num_out]


def level_rects(img: np.ndarray, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.boundingRect`` of every contour (outer and hole) of ``img > c`` for each level ``c``.

    Args:
        img: 2-D uint8 map.
        levels: 1-D integer grey levels; ``-1`` (or less) keeps every pixel, ``255`` (or more)
            none. Repeated levels are allowed.

    Returns:
        ``(rects, counts)``: int64 ``(sum(counts), 4)`` ``(x, y, w, h)`` rects grouped by level in
        the order of ``levels``, and the number of contours of each level (0 when the mask is
        empty).

    Example:
        >>> img = np.zeros((4, 4), np.uint8); img[0, 0] = 200; img[3, 3] = 100
        >>> rects, counts = level_rects(img, np.array([150, 50, 255]))
        >>> counts.tolist(), rects.tolist()
        ([1, 2, 0], [[0, 0, 1, 1], [0, 0, 1, 1], [3, 3, 1, 1]])
    """
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 2:
        raise ValueError(f"level_rects needs a 2-D uint8 array, got {getattr(img, 'dtype', type(img))}")
    lv = np.asarray(levels)
    if lv.ndim != 1 or not np.issubdtype(lv.dtype, np.integer):
        raise ValueError(f"levels must be a 1-D integer array, got dtype {lv.dtype} and shape {lv.shape}")
    lv = np.clip(lv.astype(np.int64), -1, 255)
    record = np.zeros(_NUM_GREY + 1, np.bool_)
    record[lv + 1] = True
    record[_NUM_GREY] = False  # level 255 keeps no pixel: no contour
    img = np.ascontiguousarray(img)
    flat = img.ravel()
    order = np.argsort(flat, kind="stable")
    starts = np.zeros(_NUM_GREY + 1, np.int64)
    np.cumsum(np.bincount(flat, minlength=_NUM_GREY), out=starts[1:])
    fg_tags, fg_rects = _sweep(img, order, starts, True, record)
    hole_tags, hole_rects = _sweep(img, order, starts, False, record)
    tags = np.concatenate([fg_tags, hole_tags])
    rects_all = np.concatenate([fg_rects, hole_rects])
    by_level = np.argsort(tags, kind="stable")  # rects of mask level c + 1 are contiguous
    first = np.zeros(_NUM_GREY + 2, np.int64)
    np.cumsum(np.bincount(tags, minlength=_NUM_GREY + 1), out=first[1:])
    counts = first[lv + 2] - first[lv + 1]
    # positions in ``by_level`` of each requested level's rects, in request order
    out_start = np.cumsum(counts) - counts
    pick = np.arange(int(counts.sum())) + np.repeat(first[lv + 1] - out_start, counts)
    return rects_all[by_level[pick]], counts
