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

Memory layout (what makes the pass fast on real maps): each pixel stores the id of the
component it joined (``label``), and the union-find runs over component ids, not pixels. A
smooth CAM has few components (one per local extremum), so the forest and the per-component
extents stay in L1 cache; the only per-pixel traffic is the label of the pixel's neighbours.
Which neighbours a pixel must join is looked up, not branched on: its 8 neighbours' occupancy is a
byte, and a 256-entry table (:func:`_neighbour_tables`) lists one neighbour per group of neighbours
that already touch each other (for 8- and for 4-connectivity). Two more tables of the same byte
give the centre-polygon area the pixel adds and the change of the mask's Euler number
(components minus holes): the number of holes of every level comes for free, so the hole pass
stops after the last level that has one, and the largest contour (MaxBoxAcc V1) is named without
tracing wherever a level has no hole (:func:`level_ious_largest`).

:func:`level_ious` goes one step further for the box metrics: it scores every contour's box
(``[x, y, min(x + w, W - 1), min(y + h, H - 1)]``, as the benchmark builds it) against the GT
boxes inside the pass, and returns per level the best and worst "+1" IoU and the contour count,
so no rectangle list is built at all.

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

__all__ = ["NUM_LEVELS", "level_rects", "level_ious", "level_ious_largest", "minmax_uint8", "scoremap_uint8"]

_NUM_GREY = 256
NUM_LEVELS = _NUM_GREY + 1
"""Mask levels ``c = -1 .. 255`` of ``img > c``, stored at index ``c + 1``."""


def _neighbour_tables(eight: bool) -> np.ndarray:
    """Per occupancy code of a pixel's 8 neighbours (bit i: neighbour i of N E S W NW NE SE SW is
    added), the neighbours it must join, one per local group: ``[count, i_0, i_1, ...]``.

    With 8-connectivity every occupied neighbour is one, and two that are 8-adjacent are already
    one component; with 4-connectivity only N E S W are, and two of them are already one component
    when the diagonal neighbour between them is occupied. Orthogonal neighbours come first.
    """
    pos = [(0, -1), (1, 0), (0, 1), (-1, 0), (-1, -1), (1, -1), (1, 1), (-1, 1)]
    table = np.zeros((256, 5), np.int64)
    for code in range(256):
        occ = [i for i in range(8) if code >> i & 1 and (eight or i < 4)]
        root = list(range(8))
        links = [(i, j) for i in occ for j in occ if i < j
                 and max(abs(pos[i][0] - pos[j][0]), abs(pos[i][1] - pos[j][1])) == 1]
        if not eight:  # N-E via NE, E-S via SE, S-W via SW, W-N via NW
            links = [(i, j) for i, j, d in ((0, 1, 5), (1, 2, 6), (2, 3, 7), (0, 3, 4))
                     if i in occ and j in occ and code >> d & 1]
        for i, j in links:
            ri, rj = _top(root, i), _top(root, j)
            root[max(ri, rj)] = min(ri, rj)
        reps = sorted({_top(root, i) for i in occ})
        table[code, 0] = len(reps)
        table[code, 1:1 + len(reps)] = reps
    return table


def _top(root: list[int], i: int) -> int:
    while root[i] != i:
        i = root[i]
    return i


def _grow_table() -> np.ndarray:
    """Per occupancy code (as above), twice the centre-polygon area a foreground pixel adds: 1 per
    2x2 block of the pixel that now holds 3 or 4 pixels."""
    grow = np.zeros(256, np.int64)
    for code in range(256):
        for a, b, d in ((0, 3, 4), (0, 1, 5), (2, 3, 7), (2, 1, 6)):  # blocks NW, NE, SW, SE
            grow[code] += int((code >> a & 1) + (code >> b & 1) + (code >> d & 1) >= 2)
    return grow


def _euler_table() -> np.ndarray:
    """Per occupancy code (as above), the change of 4x the 8-connected Euler number (components minus
    4-connected holes) when a foreground pixel is added, from Gray's 2x2 block counts: the image's sum
    of ``[block of 1 pixel] - [block of 3] - 2 [block of 2 diagonal pixels]`` is 4 E."""

    def block(k: int, a: int, b: int, d: int) -> int:  # a, b: the orthogonal pixels, d: the diagonal one
        count = k + a + b + d
        return int(count == 1) - int(count == 3) - 2 * int(count == 2 and (k == d))

    delta = np.zeros(256, np.int64)
    for code in range(256):
        for a, b, d in ((0, 3, 4), (0, 1, 5), (2, 3, 7), (2, 1, 6)):  # blocks NW, NE, SW, SE
            bits = (code >> a & 1, code >> b & 1, code >> d & 1)
            delta[code] += block(1, *bits) - block(0, *bits)
    return delta


_GROUPS8 = _neighbour_tables(True)
_GROUPS4 = _neighbour_tables(False)
_GROW8 = _grow_table()
_EULER8 = _euler_table()


@numba.njit(cache=True, nogil=True, inline="always")
def _find(forest: np.ndarray, p: int) -> int:
    while forest[p] != p:
        forest[p] = forest[forest[p]]  # path halving
        p = forest[p]
    return p


@numba.njit(cache=True, nogil=True)
def _grey_order(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels sorted by grey value, stable (a counting sort), and where each grey level starts.

    ``order[k]`` packs the k-th pixel as ``y << 16 | x`` (no division in the sweeps).
    """
    height, width = img.shape
    starts = np.zeros(_NUM_GREY + 1, np.int64)
    for y in range(height):
        for x in range(width):
            starts[img[y, x] + 1] += 1
    for g in range(_NUM_GREY):
        starts[g + 1] += starts[g]
    fill = starts[:-1].copy()
    order = np.empty(height * width, np.int64)
    for y in range(height):
        for x in range(width):
            v = img[y, x]
            order[fill[v]] = (y << 16) | x
            fill[v] += 1
    return order, starts


@numba.njit(cache=True, nogil=True, inline="always")
def _best_iou(x0: int, y0: int, x1: int, y1: int, gt: np.ndarray) -> float:
    """Best "+1" IoU of one inclusive box against the GT boxes (the benchmark's arithmetic)."""
    area = (x1 - x0 + 1) * (y1 - y0 + 1)
    best = 0.0
    for g in range(gt.shape[0]):
        iw = min(x1, gt[g, 2]) - max(x0, gt[g, 0]) + 1
        ih = min(y1, gt[g, 3]) - max(y0, gt[g, 1]) + 1
        inter = max(0, iw) * max(0, ih)
        denominator = area + (gt[g, 2] - gt[g, 0] + 1) * (gt[g, 3] - gt[g, 1] + 1) - inter
        iou = inter / denominator if denominator > 0 else 0.0
        if iou > best:
            best = iou
    return best


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _sweep(
    img: np.ndarray,
    order: np.ndarray,
    starts: np.ndarray,
    foreground: bool,
    record: np.ndarray,
    gt: np.ndarray,
    want_rects: bool,
    lvl_max: np.ndarray,
    lvl_min: np.ndarray,
    lvl_count: np.ndarray,
    big_lb: np.ndarray,
    big_iou: np.ndarray,
    big_ub: np.ndarray,
    exact: np.ndarray,
    holes: np.ndarray,
    ws: np.ndarray,
    ws64: np.ndarray,
    num_steps: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Union-find over grey levels; after each level whose ``record`` flag is set, emit its contours.

    ``foreground=True`` adds pixels from grey 255 down to 0 with 8-connectivity: after grey ``v``
    the added set is the mask ``img > v - 1``. ``False`` adds them from 0 up with 4-connectivity
    and keeps only components that do not touch the frame: after grey ``v`` they are the holes of
    the mask ``img > v``. Levels are indexed by the mask's level plus one (``-1..255``).
    A pixel joins one neighbour per local group of its occupancy code (:func:`_neighbour_tables`).

    Every emitted contour updates ``lvl_max`` / ``lvl_min`` (best IoU of its benchmark box against
    ``gt``; skipped when ``gt`` has no row) and ``lvl_count`` at its level. With ``want_rects`` it
    is also returned in ``(tags, rects)``: its level index and its ``(x, y, w, h)`` as
    ``cv2.boundingRect`` gives it for the matching contour.

    Area bounds of the largest contour (``cv2.contourArea``, in half pixels; see
    :func:`level_ious_largest`): the foreground sweep keeps each component's area of the polygon
    through its pixel centres (a 2x2 block of 4 pixels adds 1, of 3 pixels 1/2: all pixels of a
    block are 8-connected, so a block belongs to one component), a lower bound of its outer
    contour's area. Per level it stores the largest such bound (``big_lb``), that component's box
    IoU (``big_iou``), and in ``big_ub`` the largest upper bound ``(w - 1)(h - 1)`` of any other
    outer contour; the hole sweep raises ``big_ub`` to each hole contour's ``(w - 1)(h - 1)`` of its
    ``cv2.boundingRect`` (its polygon runs through the pixels around the hole).

    A component without holes has an outer contour of exactly that centre-polygon area. The
    foreground sweep keeps the mask's Euler number (components minus holes, :func:`_euler_table`);
    where a level has no hole and one component's area is larger than every other's, ``exact`` is
    set: that component's outer contour is the largest. The foreground sweep also stores each
    recorded level's number of holes in ``holes``; the hole sweep runs its first ``num_steps`` grey
    levels only (past the last level with a hole it would emit nothing).
    """
    height, width = img.shape
    padded_width = width + 2  # a frame of never-labelled pixels spares the bounds checks
    n = (height + 2) * padded_width
    label = ws[:n]  # component id a pixel joined (-1: not added yet)
    label[:] = -1
    # per component id (only the first few are touched on a smooth map): forest link, extent
    hw = height * width
    forest = ws[n:n + hw]
    comp = ws[n + hw:n + 5 * hw].reshape((hw, 4))
    active = ws[n + 5 * hw:n + 6 * hw]
    slot = ws[n + 6 * hw:n + 7 * hw]
    num_ids = 0
    num_active = 0
    cap = 1024 if want_rects else 1
    tags = np.empty(cap, np.int64)
    rects = np.empty((cap, 4), np.int64)
    num_out = 0
    score = gt.shape[0] > 0
    area2 = ws64
    pw = padded_width
    euler4 = 0  # 4x the Euler number of the foreground so far
    nb = np.empty(8, np.int32)  # the 8 neighbours' labels: N E S W NW NE SE SW
    groups = _GROUPS8 if foreground else _GROUPS4
    for step in range(num_steps):
        grey = _NUM_GREY - 1 - step if foreground else step
        for k in range(starts[grey], starts[grey + 1]):
            packed = order[k]
            py = packed >> 16
            px = packed & 0xFFFF
            p = (py + 1) * padded_width + px + 1
            a = -1  # root of p's component once p has joined one
            grow = 0
            # the 8 neighbours: occupied ones already joined to each other locally (see _neighbour_tables)
            # are one component, so one label per local group is enough
            l_n = label[p - pw]
            l_s = label[p + pw]
            l_w = label[p - 1]
            l_e = label[p + 1]
            l_nw = label[p - pw - 1]
            l_ne = label[p - pw + 1]
            l_sw = label[p + pw - 1]
            l_se = label[p + pw + 1]
            code = (int(l_n >= 0) | int(l_e >= 0) << 1 | int(l_s >= 0) << 2 | int(l_w >= 0) << 3
                    | int(l_nw >= 0) << 4 | int(l_ne >= 0) << 5 | int(l_se >= 0) << 6 | int(l_sw >= 0) << 7)
            nb[0] = l_n
            nb[1] = l_e
            nb[2] = l_s
            nb[3] = l_w
            nb[4] = l_nw
            nb[5] = l_ne
            nb[6] = l_se
            nb[7] = l_sw
            if foreground:
                grow = _GROW8[code]
                euler4 += _EULER8[code]
            seen = -1  # last neighbour label resolved (neighbours mostly share one)
            for j in range(groups[code, 0]):
                lq = nb[groups[code, 1 + j]]
                if lq == seen:  # just resolved (a group's neighbour is always added)
                    continue
                seen = lq
                b = _find(forest, lq)
                if b == a:
                    continue
                if a < 0:  # the first component met: p joins it
                    a = b
                    continue
                if b < a:  # the older component is the root (ids grow with time)
                    a, b = b, a
                forest[b] = a  # b's component joins a's
                if foreground:
                    area2[a] += area2[b]
                comp[a, 0] = min(comp[a, 0], comp[b, 0])
                comp[a, 1] = min(comp[a, 1], comp[b, 1])
                comp[a, 2] = max(comp[a, 2], comp[b, 2])
                comp[a, 3] = max(comp[a, 3], comp[b, 3])
                last = active[num_active - 1]  # swap-remove b from the active roots
                active[slot[b]] = last
                slot[last] = slot[b]
                num_active -= 1
            if a < 0:  # no added neighbour: p starts a component
                a = num_ids
                num_ids += 1
                forest[a] = a
                if foreground:
                    area2[a] = 0
                comp[a, 0] = px
                comp[a, 1] = py
                comp[a, 2] = px
                comp[a, 3] = py
                slot[a] = num_active
                active[num_active] = a
                num_active += 1
            else:
                comp[a, 0] = min(comp[a, 0], px)
                comp[a, 1] = min(comp[a, 1], py)
                comp[a, 2] = max(comp[a, 2], px)
                comp[a, 3] = max(comp[a, 3], py)
            if foreground:
                area2[a] += grow
            label[p] = a
        level_plus_one = grey if foreground else grey + 1
        if not record[level_plus_one]:
            continue
        top_lb = -1  # largest area lower bound (2x), its IoU, the second largest, and the two largest upper bounds (2x)
        lb2 = -1
        top_iou = 0.0
        top_id = -1
        ub1 = -1
        ub1_id = -1
        ub2 = -1
        for i in range(num_active):
            r = active[i]
            cx0, cy0, cx1, cy1 = comp[r, 0], comp[r, 1], comp[r, 2], comp[r, 3]
            if foreground:
                rx, ry, rw, rh = cx0, cy0, cx1 - cx0 + 1, cy1 - cy0 + 1
            elif cx0 > 0 and cy0 > 0 and cx1 < width - 1 and cy1 < height - 1:
                rx, ry, rw, rh = cx0 - 1, cy0 - 1, cx1 - cx0 + 3, cy1 - cy0 + 3
            else:
                continue  # background reaching the frame is not a hole
            lvl_count[level_plus_one] += 1
            iou = 0.0
            if score:
                iou = _best_iou(rx, ry, min(rx + rw, width - 1), min(ry + rh, height - 1), gt)
                lvl_max[level_plus_one] = max(lvl_max[level_plus_one], iou)
                lvl_min[level_plus_one] = min(lvl_min[level_plus_one], iou)
            if foreground:
                ub = 2 * (rw - 1) * (rh - 1)
                if area2[r] > top_lb:
                    lb2 = top_lb
                    top_lb, top_iou, top_id = area2[r], iou, r
                elif area2[r] > lb2:
                    lb2 = area2[r]
                if ub > ub1:
                    ub2 = ub1
                    ub1, ub1_id = ub, r
                elif ub > ub2:
                    ub2 = ub
            else:
                big_ub[level_plus_one] = max(big_ub[level_plus_one], 2 * (rw - 1) * (rh - 1))
            if not want_rects:
                continue
            if num_out == cap:
                cap *= 2
                tags_grown = np.empty(cap, np.int64)
                tags_grown[:num_out] = tags[:num_out]
                tags = tags_grown
                rects_grown = np.empty((cap, 4), np.int64)
                rects_grown[:num_out] = rects[:num_out]
                rects = rects_grown
            tags[num_out] = level_plus_one
            rects[num_out, 0] = rx
            rects[num_out, 1] = ry
            rects[num_out, 2] = rw
            rects[num_out, 3] = rh
            num_out += 1
        if foreground and top_id >= 0:
            big_lb[level_plus_one] = top_lb
            big_iou[level_plus_one] = top_iou
            big_ub[level_plus_one] = max(big_ub[level_plus_one], ub2 if ub1_id == top_id else ub1)
            holes[level_plus_one] = num_active - euler4 // 4
            exact[level_plus_one] = holes[level_plus_one] == 0 and top_lb > lb2  # one strictly largest
    return tags[:num_out], rects[:num_out]


@numba.njit(cache=True, nogil=True, inline="always")
def _workspace(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Scratch of one sweep: labels of the padded grid, then per component id its forest link,
    extent x0 y0 x1 y1 (4), active slot and position (int32); its centre-polygon area (int64)."""
    hw = height * width
    return np.empty((height + 2) * (width + 2) + 7 * hw, np.int32), np.empty(hw, np.int64)


@numba.njit(cache=True, nogil=True)
def _level_ious_kernel(
    img: np.ndarray, gt: np.ndarray, record: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    order, starts = _grey_order(img)
    lvl_max = np.full(NUM_LEVELS, -np.inf)
    lvl_min = np.full(NUM_LEVELS, np.inf)
    lvl_count = np.zeros(NUM_LEVELS, np.int64)
    big_lb = np.full(NUM_LEVELS, -1, np.int64)
    big_iou = np.zeros(NUM_LEVELS)
    big_ub = np.full(NUM_LEVELS, -1, np.int64)
    ws, ws64 = _workspace(img.shape[0], img.shape[1])  # one scratch for both sweeps (measured: 11 % of the pass)
    exact = np.zeros(NUM_LEVELS, np.bool_)
    holes = np.zeros(NUM_LEVELS, np.int64)
    _sweep(img, order, starts, True, record, gt, False, lvl_max, lvl_min, lvl_count, big_lb, big_iou, big_ub,
           exact, holes, ws, ws64, _NUM_GREY)
    # the hole sweep's grey g emits the holes of mask level g (index g + 1): it stops after the last one
    last = 0
    for i in range(NUM_LEVELS):
        if record[i] and holes[i] > 0:
            last = i
    if last > 0:
        _sweep(img, order, starts, False, record, gt, False, lvl_max, lvl_min, lvl_count, big_lb, big_iou, big_ub,
               exact, holes, ws, ws64, last)
    # no contour: the benchmark's single box [0, 0, 0, 0]
    height, width = img.shape
    empty_iou = _best_iou(0, 0, 0, 0, gt) if gt.shape[0] > 0 else 0.0
    for i in range(NUM_LEVELS):
        if lvl_count[i] == 0:
            lvl_max[i] = empty_iou
            lvl_min[i] = empty_iou
    known = (big_lb > big_ub) | exact  # the largest contour is that component's outer one (strictly largest area)
    return lvl_max, lvl_min, lvl_count, known, big_iou


@numba.njit(cache=True, nogil=True)
def _to_uint8_kernel(scoremap: np.ndarray, out: np.ndarray) -> int:
    """``out = floor(255 * s)``; 0 = ok, 1 = a NaN, 2 = a value outside [0, 1]."""
    flat = scoremap.ravel()
    dst = out.ravel()
    status = 0
    for i in range(flat.shape[0]):
        v = flat[i]
        if v != v:
            return 1
        if v < 0.0 or v > 1.0:
            status = 2
            continue
        dst[i] = np.uint8(v * 255.0)
    return status


@numba.njit(cache=True, nogil=True)
def _minmax_uint8_kernel(cam: np.ndarray, out: np.ndarray) -> bool:
    flat = cam.ravel()
    dst = out.ravel()
    n = flat.shape[0]
    low = flat[0]
    high = flat[0]
    flat_map = False
    for i in range(n):
        v = flat[i]
        if v != v:  # NaN anywhere: zeros
            flat_map = True
            break
        low = min(low, v)
        high = max(high, v)
    if flat_map or low == high:
        flat[:] = 0.0
        dst[:] = 0
        return True
    # numpy's ``cam -= cam.min(); cam /= cam.max()``: rounding is monotone, so the shifted map's
    # maximum is ``high - low`` rounded, and each value is the same two float64 operations
    span = high - low
    if not np.isfinite(span):  # an infinite value, or a span past float64
        return False
    for i in range(n):
        v = (flat[i] - low) / span
        flat[i] = v
        dst[i] = np.uint8(v * 255.0)
    return True


def minmax_uint8(cam: np.ndarray) -> np.ndarray:
    """The protocol's min-max normalisation of a float64 map **in place**, and ``floor(255 * s)`` of it.

    Equal to :func:`~cream_pl.metrics.functional.prepare_scoremap`'s normalisation (NaN anywhere or a
    constant map -> zeros) followed by :func:`scoremap_uint8`, in two compiled passes.

    Example:
        >>> m = np.array([[2.0, 4.0], [3.0, 6.0]]); minmax_uint8(m), m
        (array([[  0, 127],
               [ 63, 255]], dtype=uint8), array([[0.  , 0.5 ],
               [0.25, 1.  ]]))
    """
    if cam.dtype != np.float64 or cam.ndim != 2 or cam.size == 0 or not cam.flags.c_contiguous:
        raise ValueError(f"minmax_uint8 needs a non-empty C-contiguous 2-D float64 map, got {cam.dtype} {cam.shape}")
    out = np.empty(cam.shape, np.uint8)
    if not _minmax_uint8_kernel(cam, out):
        raise ValueError("a score map holds an infinite value or spans more than float64 can hold")
    return out


def scoremap_uint8(scoremap: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """``floor(255 * s)`` of a float64 2-D map in one compiled pass, or ``(None, reason)`` if invalid.

    The reason is the benchmark's validity rule the map breaks (NaN, outside [0, 1]).

    Example:
        >>> scoremap_uint8(np.array([[0.0, 0.5, 1.0]]))[0]
        array([[  0, 127, 255]], dtype=uint8)
        >>> scoremap_uint8(np.array([[0.0, 2.0]]))[1]
        'values outside [0, 1]'
    """
    arr = np.ascontiguousarray(scoremap, dtype=np.float64)
    if arr.ndim != 2 or arr.size == 0:
        return None, f"not a non-empty 2-D array (shape {arr.shape})"
    out = np.empty(arr.shape, np.uint8)
    status = _to_uint8_kernel(arr, out)
    if status == 1:
        return None, "NaN values"
    if status == 2:
        return None, "values outside [0, 1]"
    return out, None


def _record(levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lv = np.clip(levels.astype(np.int64), -1, 255)
    record = np.zeros(NUM_LEVELS, np.bool_)
    record[lv + 1] = True
    record[_NUM_GREY] = False  # level 255 keeps no pixel: no contour
    return lv, record


def _check_img(img: np.ndarray, where: str) -> np.ndarray:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 2:
        raise ValueError(f"{where} needs a 2-D uint8 array, got {getattr(img, 'dtype', type(img))}")
    if img.shape[1] >= 1 << 16:
        raise ValueError(f"{where}: maps up to 65535 pixels wide, got {img.shape[1]}")
    return np.ascontiguousarray(img)


def level_ious(
    img: np.ndarray, gt_boxes: np.ndarray, levels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per mask level: best and worst contour IoU against the GT boxes, and the contour count.

    Every contour (outer and hole) of ``img > c`` gets the benchmark's box ``[x, y, min(x + w,
    W - 1), min(y + h, H - 1)]`` from its ``cv2.boundingRect``, and that box's best "+1" IoU over
    ``gt_boxes``. A level with no contour gets the IoU of the benchmark's ``[0, 0, 0, 0]`` box.

    Args:
        img: 2-D uint8 map.
        gt_boxes: ``(m, 4)`` int ``XYXY_INCLUSIVE`` GT boxes in the map's grid (``m >= 1``).
        levels: the levels ``c`` needed (default all); others come back as if they had no contour.

    Returns:
        ``(iou_max, iou_min, counts)``, each of length :data:`NUM_LEVELS`, indexed by ``c + 1``.

    Example:
        >>> img = np.zeros((8, 8), np.uint8); img[2:4, 1:6] = 255; img[6, 6] = 200
        >>> hi, lo, n = level_ious(img, np.array([[1, 2, 5, 3]]))
        >>> n[[0 + 1, 210 + 1]].tolist(), round(float(hi[211]), 4), round(float(lo[1]), 4)
        ([2, 1], 0.5556, 0.0)
    """
    return level_ious_largest(img, gt_boxes, levels)[:3]


def level_ious_largest(
    img: np.ndarray, gt_boxes: np.ndarray, levels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`level_ious`, plus the largest contour's IoU where the pass alone can name that contour.

    The largest-contour rule (MaxBoxAcc V1) keeps the contour of largest ``cv2.contourArea``: the
    area of the polygon through its border pixels' centres. The pass bounds every contour's area
    without tracing it: an outer contour encloses at least its component's own centre polygon
    (2x2 blocks of 4 pixels count 1, of 3 pixels 1/2) and at most ``(w - 1)(h - 1)`` of its
    bounding rect; a hole's contour at most ``(w - 1)(h - 1)`` of its rect. Where one component's
    lower bound exceeds every other contour's upper bound, that component's outer contour is the
    largest, with no tie, whatever the trace would give. At a level without holes (the pass keeps
    the mask's Euler number) every outer contour's area is exactly its component's centre-polygon
    area, so a component whose area is strictly the largest names it too.

    Returns:
        ``(iou_max, iou_min, counts, known, largest_iou)``, each of length :data:`NUM_LEVELS`
        indexed by ``c + 1``; ``largest_iou[i]`` is the largest contour's IoU where ``known[i]``.

    Example:
        >>> img = np.zeros((8, 8), np.uint8); img[1:6, 1:6] = 255; img[7, 7] = 200
        >>> hi, lo, n, known, big = level_ious_largest(img, np.array([[1, 1, 6, 6]]))
        >>> bool(known[0 + 1]), round(float(big[0 + 1]), 4), round(float(lo[0 + 1]), 4)
        (True, 1.0, 0.0)
    """
    img = _check_img(img, "level_ious")
    gt = np.ascontiguousarray(gt_boxes, dtype=np.int64).reshape(-1, 4)
    if gt.shape[0] == 0:
        raise ValueError("level_ious needs at least one GT box")
    if levels is None:
        record = np.ones(NUM_LEVELS, np.bool_)
        record[_NUM_GREY] = False
    else:
        record = _record(np.asarray(levels))[1]
    return _level_ious_kernel(img, gt, record)


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
    img = _check_img(img, "level_rects")
    lv = np.asarray(levels)
    if lv.ndim != 1 or not np.issubdtype(lv.dtype, np.integer):
        raise ValueError(f"levels must be a 1-D integer array, got dtype {lv.dtype} and shape {lv.shape}")
    lv, record = _record(lv)
    order, starts = _grey_order(img)
    no_gt = np.zeros((0, 4), np.int64)
    scratch = (np.zeros(NUM_LEVELS), np.zeros(NUM_LEVELS), np.zeros(NUM_LEVELS, np.int64),
               np.zeros(NUM_LEVELS, np.int64), np.zeros(NUM_LEVELS), np.zeros(NUM_LEVELS, np.int64),
               np.zeros(NUM_LEVELS, np.bool_), np.zeros(NUM_LEVELS, np.int64))
    ws, ws64 = _workspace(img.shape[0], img.shape[1])
    fg_tags, fg_rects = _sweep(img, order, starts, True, record, no_gt, True, *scratch, ws, ws64, _NUM_GREY)
    hole_tags, hole_rects = _sweep(img, order, starts, False, record, no_gt, True, *scratch, ws, ws64, _NUM_GREY)
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
