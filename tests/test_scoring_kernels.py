"""The compiled kernels behind ``cream-pl evaluate`` against their plain references (OpenCV, numpy)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cream_pl.metrics.component_tree import level_ious, level_ious_largest, scoremap_uint8
from cream_pl.metrics.functional import (
    _level_boxes,
    box_iou_plus_one,
    cam_thresholds,
    localized_from_uint8,
    localized_per_threshold,
    prepare_scoremap,
    prepare_scoremap_uint8,
    pxap_bin_edges,
    threshold_levels,
)
from cream_pl.metrics.pixel_histogram import mask_histograms
from cream_pl.metrics.scoring import load_mask


def cam_like(rng: np.random.Generator, size: int = 224) -> np.ndarray:
    cam = cv2.resize(rng.normal(size=(14, 14)), (size, size), interpolation=cv2.INTER_CUBIC)
    return (cam - cam.min()) / (cam.max() - cam.min())


def gt_boxes(rng: np.random.Generator, n: int, size: int = 224) -> np.ndarray:
    x0, y0 = rng.integers(0, max(1, size // 2), (2, n))
    w, h = rng.integers(1, max(2, size // 2), (2, n))
    return np.stack([x0, y0, np.minimum(x0 + w, size - 1), np.minimum(y0 + h, size - 1)], axis=1)


@pytest.mark.parametrize("seed", range(3))
def test_level_ious_equal_findcontours_at_every_level(seed: int) -> None:
    rng = np.random.default_rng(seed)
    img = (cam_like(rng) * 255).astype(np.uint8)
    if seed == 2:
        img[100:140, 100:140] = 0  # a hole in the middle, and an empty top level
    gt = gt_boxes(rng, 1 + seed)
    hi, lo, counts = level_ious(img, gt)
    for level in range(-1, 256):
        boxes, n = _level_boxes(img, np.array([level]), multi_contour=True)  # one findContours
        ious = box_iou_plus_one(boxes, gt).max(axis=1)
        expected_count = n[0] if (img > level).any() else 0  # findContours' "no contour" is the [0,0,0,0] box
        assert (counts[level + 1], hi[level + 1], lo[level + 1]) == (expected_count, ious.max(), ious.min())


def test_random_small_maps_with_many_components() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        h, w = (int(v) for v in rng.integers(2, 30, 2))
        img = rng.integers(0, 256, (h, w)).astype(np.uint8)
        gt = gt_boxes(rng, 2, size=min(h, w))
        hi, lo, _ = level_ious(img, gt)
        for level in range(-1, 256, 7):
            boxes, _ = _level_boxes(img, np.array([level]), multi_contour=True)
            ious = box_iou_plus_one(boxes, gt).max(axis=1)
            assert (hi[level + 1], lo[level + 1]) == (ious.max(), ious.min())


def test_largest_contour_named_by_the_area_bounds_is_the_traced_one() -> None:
    """Where the pass names the largest contour (``known``), its IoU is that of OpenCV's largest contour."""
    rng = np.random.default_rng(5)
    named = 0
    maps = [(cam_like(rng) * 255).astype(np.uint8) for _ in range(4)]
    maps += [rng.integers(0, 256, (int(h), int(w))).astype(np.uint8) for h, w in rng.integers(3, 25, (12, 2))]
    for img in maps:
        gt = gt_boxes(rng, 2, size=min(img.shape))
        hi, lo, counts, known, largest = level_ious_largest(img, gt)
        np.testing.assert_array_equal(np.stack(level_ious(img, gt)), np.stack([hi, lo, counts]))
        for level in np.flatnonzero(known) - 1:
            boxes, _ = _level_boxes(img, np.array([level]), multi_contour=False)  # traced: largest contour
            assert largest[level + 1] == box_iou_plus_one(boxes, gt).max(), (img.shape, level)
            named += 1
    assert named > 300  # the bound decides most levels, so the test exercises it


def test_v2_and_v1_rows_from_one_pass_equal_the_per_threshold_loop() -> None:
    rng = np.random.default_rng(11)
    thr = cam_thresholds(0.001)
    for _ in range(3):
        s = cam_like(rng)
        gt = gt_boxes(rng, 2)
        img, _ = scoremap_uint8(s)
        levels = threshold_levels(int(img.max()), thr)
        rows = localized_from_uint8(img, gt, levels, (30, 50, 70), True, (50,))
        v2 = localized_per_threshold(s, gt, thr, (30, 50, 70), True, fast=False)
        v1 = localized_per_threshold(s, gt, thr, (50,), False, fast=False)
        np.testing.assert_array_equal(rows, np.concatenate([v2, v1]))


def test_uint8_kernel_equals_numpy_and_flags_bad_maps() -> None:
    s = cam_like(np.random.default_rng(0))
    img, reason = scoremap_uint8(s)
    assert reason is None
    np.testing.assert_array_equal(img, (s * 255).astype(np.uint8))
    assert scoremap_uint8(np.array([[0.5, np.nan]]))[1] == "NaN values"
    assert scoremap_uint8(np.array([[0.5, 1.5]]))[1] == "values outside [0, 1]"
    assert scoremap_uint8(np.zeros(3))[0] is None


@pytest.mark.parametrize("interval", [0.01, 0.001])
def test_mask_histograms_equal_np_histogram(interval: float) -> None:
    rng = np.random.default_rng(3)
    edges = pxap_bin_edges(cam_thresholds(interval))
    s = cam_like(rng)
    s[:3] = edges[rng.integers(0, len(edges) - 3, (3, 224))]  # values exactly on bin edges
    s[5, :4] = [0.0, 1.0, 1.0, 0.0]
    mask = rng.choice(np.array([0, 1, 255], np.uint8), size=s.shape)
    true_hist, false_hist = mask_histograms(s, mask, edges)
    np.testing.assert_array_equal(true_hist, np.histogram(s[mask == 1], bins=edges)[0])
    np.testing.assert_array_equal(false_hist, np.histogram(s[mask == 0], bins=edges)[0])


def test_mask_loader_equals_the_metric_one(tmp_path: Path) -> None:
    from cream_pl.metrics.pxap import load_gt_mask

    rng = np.random.default_rng(5)
    a = (rng.random((90, 130)) > 0.7).astype(np.uint8) * 255
    b = np.zeros((90, 130), np.uint8)
    b[10:40, 20:90] = 255
    ignore = np.zeros((90, 130, 3), np.uint8)
    ignore[:60, :100] = 255
    for name, img in (("a.png", a), ("b.png", b), ("ignore.png", ignore)):
        cv2.imwrite(str(tmp_path / name), img)
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    np.testing.assert_array_equal(load_mask(paths, tmp_path / "ignore.png"), load_gt_mask(paths, tmp_path / "ignore.png"))
    np.testing.assert_array_equal(load_mask(paths[:1], None), load_gt_mask(paths[:1], None))


def test_fused_minmax_uint8_equals_prepare_scoremap_then_uint8() -> None:
    rng = np.random.default_rng(13)
    cams = [rng.normal(size=(14, 14)) * 10 ** float(e) for e in rng.uniform(-8, 8, 6)]
    cams += [cam_like(rng), np.full((7, 9), 3.5), np.arange(12.0).reshape(3, 4), rng.integers(0, 5, (224, 224))]
    nan_cam = rng.normal(size=(14, 14))
    nan_cam[3, 4] = np.nan
    cams.append(nan_cam)
    for cam in cams:
        scoremap, img = prepare_scoremap_uint8(cam)
        expected = prepare_scoremap(cam)
        np.testing.assert_array_equal(scoremap, expected)  # bit for bit, not to a tolerance
        np.testing.assert_array_equal(img, scoremap_uint8(expected)[0])
    with pytest.raises(ValueError, match="infinite"):
        prepare_scoremap_uint8(np.array([[-1e308, 1e308], [0.0, 1.0]]))
