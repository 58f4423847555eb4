"""cream_pl.metrics.component_tree: every level's contour rects equal OpenCV's, contour by contour."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cream_pl.metrics.component_tree import level_rects


def opencv_rects(img: np.ndarray, level: int) -> list[tuple[int, int, int, int]]:
    mask = cv2.threshold(img, int(level), 1, cv2.THRESH_BINARY)[1]
    contours = cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
    return sorted(cv2.boundingRect(c) for c in contours)


def tree_rects(img: np.ndarray, levels: list[int]) -> list[list[tuple[int, int, int, int]]]:
    rects, counts = level_rects(img, np.asarray(levels))
    assert counts.sum() == len(rects)
    return [sorted(map(tuple, r.tolist())) for r in np.split(rects, np.cumsum(counts)[:-1])]


def test_ring_hole_nested_island_and_border() -> None:
    img = np.zeros((12, 12), np.uint8)
    img[1:9, 1:9] = 200  # ring ...
    img[3:7, 3:7] = 0  # ... with a 4x4 hole (rows/cols 3..6) ...
    img[4:6, 4:6] = 100  # ... holding an island
    img[10:, 10:] = 50  # a block in the corner, touching the frame
    got = tree_rects(img, [150, 60, 20, -1, 255])
    assert got[0] == [(1, 1, 8, 8), (2, 2, 6, 6)]  # outer ring; hole grown by one pixel
    assert got[1] == [(1, 1, 8, 8), (2, 2, 6, 6), (4, 4, 2, 2)]  # + the island
    assert got[2] == [(1, 1, 8, 8), (2, 2, 6, 6), (4, 4, 2, 2), (10, 10, 2, 2)]
    assert got[3] == [(0, 0, 12, 12)]  # level -1 keeps every pixel
    assert got[4] == []  # level 255 keeps none
    for level, rects in zip([150, 60, 20, -1, 255], got):
        assert rects == opencv_rects(img, level)


def test_diagonal_pixels_are_one_component_and_diagonal_gaps_separate_holes() -> None:
    img = np.zeros((7, 7), np.uint8)
    for i in range(1, 6):
        img[i, i] = 9  # an 8-connected diagonal: one outer contour
    assert tree_rects(img, [0]) == [[(1, 1, 5, 5)]] == [opencv_rects(img, 0)]
    # a filled square with two background pixels touching only diagonally: two holes
    sq = np.full((6, 6), 9, np.uint8)
    sq[2, 2] = sq[3, 3] = 0
    assert tree_rects(sq, [0])[0] == opencv_rects(sq, 0) == [(0, 0, 6, 6), (1, 1, 3, 3), (2, 2, 3, 3)]


def test_repeated_and_unsorted_levels_come_back_in_request_order() -> None:
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (20, 25)).astype(np.uint8)
    levels = [200, -5, 17, 200, 300, 90]
    got = tree_rects(img, levels)
    assert got == [opencv_rects(img, min(max(lv, -1), 255)) for lv in levels]


@pytest.mark.parametrize("seed", range(4))
def test_random_maps_match_opencv_at_every_level(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        img = rng.integers(0, int(rng.integers(2, 256)), (h, w)).astype(np.uint8)
        if rng.random() < 0.5:
            img = cv2.GaussianBlur(img, (3, 3), 0)
        levels = list(range(-1, 256, int(rng.integers(1, 9))))
        assert tree_rects(img, levels) == [opencv_rects(img, lv) for lv in levels]


def test_cam_like_map_at_full_size() -> None:
    rng = np.random.default_rng(0)
    cam = cv2.resize(rng.normal(size=(14, 14)), (224, 224), interpolation=cv2.INTER_CUBIC)
    img = ((cam - cam.min()) / (cam.max() - cam.min()) * 255).astype(np.uint8)
    levels = list(range(-1, 256))
    assert tree_rects(img, levels) == [opencv_rects(img, lv) for lv in levels]


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="2-D uint8"):
        level_rects(np.zeros((4, 4), np.float32), np.array([0]))
    with pytest.raises(ValueError, match="1-D integer"):
        level_rects(np.zeros((4, 4), np.uint8), np.array([0.5]))


def test_euler_table_counts_components_minus_holes_as_pixels_are_added() -> None:
    """The foreground sweep's Euler number: pixels added one by one (any order) sum to 4 (components - holes)."""
    from cream_pl.metrics.component_tree import _EULER8

    rng = np.random.default_rng(0)
    pos = [(0, -1), (1, 0), (0, 1), (-1, 0), (-1, -1), (1, -1), (1, 1), (-1, 1)]  # N E S W NW NE SE SW
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(2, 16, 2))
        target = rng.random((h, w)) < rng.uniform(0.2, 0.8)
        added = np.zeros((h + 2, w + 2), bool)
        euler4 = 0
        for y, x in rng.permutation(np.argwhere(target)):
            code = sum(1 << i for i, (dx, dy) in enumerate(pos) if added[y + 1 + dy, x + 1 + dx])
            euler4 += int(_EULER8[code])
            added[y + 1, x + 1] = True
        mask = target.astype(np.uint8)
        components = cv2.connectedComponents(mask, connectivity=8)[0] - 1
        hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)[-1]
        holes = 0 if hierarchy is None else int((hierarchy[0][:, 3] != -1).sum())
        assert euler4 == 4 * (components - holes)
