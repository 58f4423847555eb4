"""Hand-computed cases for cream_pl.metrics.functional (map -> boxes, IoU, thresholds, PxAP math)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from cream_pl.metrics.functional import (
    best_iou_per_threshold,
    box_accuracy_compute,
    box_accuracy_update,
    box_from_scoremap_at,
    boxes_from_scoremap,
    cam_thresholds,
    localized_per_threshold,
    prepare_scoremap,
    prepare_scoremaps,
    pxap_bin_edges,
    pxap_from_histograms,
    pxap_histograms,
    pxap_pr_curve,
    scoremap_to_uint8,
    threshold_levels,
)


def blank() -> np.ndarray:
    return np.zeros((224, 224), dtype=np.float64)


def smooth_map(seed: int, k: int = 10) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return prepare_scoremap(rng.random((k, k)))


# ---------------------------------------------------------------------------------------------
# thresholds and score maps


def test_cam_thresholds_are_numpy_arange() -> None:
    thr = cam_thresholds(0.001)
    assert thr.dtype == np.float64 and len(thr) == 1000 and thr[0] == 0.0 and thr[-1] < 1.0
    np.testing.assert_array_equal(thr, np.arange(0, 1, 0.001))
    assert not np.array_equal(thr, np.arange(1000) / 1000)  # k/1000 differs at some positions
    assert len(cam_thresholds(0.01)) == 100
    with pytest.raises(ValueError, match="interval"):
        cam_thresholds(0.0)


def test_prepare_scoremap_bicubic_then_minmax() -> None:
    cam = np.arange(14 * 14, dtype=np.float32).reshape(14, 14) ** 0.5
    out = prepare_scoremap(torch.from_numpy(cam))
    expected = cv2.resize(cam.astype(np.float64), (224, 224), interpolation=cv2.INTER_CUBIC)
    expected -= expected.min()
    expected /= expected.max()
    assert out.dtype == np.float64 and out.shape == (224, 224)
    np.testing.assert_array_equal(out, expected)
    assert out.min() == 0.0 and out.max() == 1.0


def test_prepare_scoremap_constant_and_nan_give_zeros() -> None:
    assert not prepare_scoremap(np.full((7, 7), 3.5)).any()
    nan_map = np.ones((14, 14))
    nan_map[3, 4] = np.nan
    assert not prepare_scoremap(nan_map).any()
    with pytest.raises(ValueError, match="infinite"):
        prepare_scoremap(np.full((7, 7), np.inf))
    with pytest.raises(ValueError, match="2-D"):
        prepare_scoremap(np.zeros((2, 7, 7)))
    with pytest.raises(ValueError, match="spans more than float64 can hold"):  # min-max made NaN of part of it
        prepare_scoremap(np.array([[1e308, -1e308], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="real numbers, got dtype complex128"):  # its imaginary part was dropped
        prepare_scoremap(np.ones((7, 7)) * 1j)


def test_prepare_scoremaps_batch_keeps_kind() -> None:
    maps = torch.rand(3, 7, 7)
    out = prepare_scoremaps(maps)
    assert isinstance(out, torch.Tensor) and out.shape == (3, 224, 224) and out.dtype == torch.float64
    np.testing.assert_array_equal(out[1].numpy(), prepare_scoremap(maps[1]))
    assert isinstance(prepare_scoremaps(maps.numpy()), np.ndarray)


def test_uint8_floor_and_threshold_levels() -> None:
    s = np.array([[0.0, 0.5, 0.999, 1.0, 0.0039]])
    np.testing.assert_array_equal(scoremap_to_uint8(s), [[0, 127, 254, 255, 0]])
    # int(t * max): relative to the uint8 maximum of the map, truncated
    np.testing.assert_array_equal(threshold_levels(255, [0.0, 0.5, 0.999]), [0, 127, 254])
    np.testing.assert_array_equal(threshold_levels(100, [0.5, 0.999]), [50, 99])
    with pytest.raises(ValueError, match="NaN"):
        scoremap_to_uint8(np.array([[np.nan, 0.0]]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        scoremap_to_uint8(np.array([[1.5, 0.0]]))


def test_strict_greater_than_threshold() -> None:
    s = blank()
    s[10:20, 10:20] = 0.5  # uint8 127
    s[100:120, 100:130] = 1.0  # uint8 255, so thresholds are relative to 255
    # t = 0.5: level int(127.5) = 127 and 127 > 127 is false: only the bright block survives
    assert box_from_scoremap_at(s, 0.5, multi_contour=True).tolist() == [[100, 100, 130, 120]]
    # t = 0.498: level int(126.99) = 126 < 127: both blocks survive
    assert len(box_from_scoremap_at(s, 0.498, multi_contour=True)) == 2


def test_threshold_relative_to_map_maximum() -> None:
    s = blank()
    s[10:20, 10:20] = 0.2  # uint8 51 is the maximum
    s[30:40, 30:40] = 0.1  # uint8 25
    # t = 0.5 -> level int(0.5 * 51) = 25: 25 > 25 is false, the 0.1 block is dropped
    assert box_from_scoremap_at(s, 0.5).tolist() == [10, 10, 20, 20]
    assert len(box_from_scoremap_at(s, 0.45, multi_contour=True)) == 2  # level 22


# ---------------------------------------------------------------------------------------------
# map -> boxes


def test_box_edges_one_past_the_contour() -> None:
    s = blank()
    s[50:100, 60:120] = 1.0  # rows 50..99, cols 60..119
    assert boxes_from_scoremap(s, [0.0, 0.5])[0].tolist() == [[60, 50, 120, 100]]
    assert box_from_scoremap_at(s, 0.5).tolist() == [60, 50, 120, 100]


def test_boxes_touching_the_border_are_clipped_at_223() -> None:
    s = blank()
    s[200:, 180:] = 1.0  # touches right and bottom: x + w = 224 -> clipped to 223
    assert box_from_scoremap_at(s, 0.5).tolist() == [180, 200, 223, 223]
    s = blank()
    s[:30, :40] = 1.0  # touches left and top
    assert box_from_scoremap_at(s, 0.5).tolist() == [0, 0, 40, 30]
    s = np.ones((224, 224))
    s[0, 0] = 0.0
    assert box_from_scoremap_at(s, 0.0).tolist() == [0, 0, 223, 223]


def test_blob_with_hole_gives_outer_and_hole_contours() -> None:
    s = blank()
    s[10:30, 10:30] = 1.0
    s[15:25, 15:25] = 0.0  # hole rows/cols 15..24; the inner ring of foreground is 14..25
    multi = box_from_scoremap_at(s, 0.5, multi_contour=True)
    assert sorted(multi.tolist()) == [[10, 10, 30, 30], [14, 14, 26, 26]]
    assert box_from_scoremap_at(s, 0.5).tolist() == [10, 10, 30, 30]  # the hole never beats its outer contour
    # GT = the hole's ring: +1 IoU with [14,14,26,26] = 144/169, with the outer box = 144/441
    gt = [[14, 14, 25, 25]]
    assert best_iou_per_threshold(s, gt, [0.5], multi_contour=True)[0] == pytest.approx(144 / 169)
    assert best_iou_per_threshold(s, gt, [0.5], multi_contour=False)[0] == pytest.approx(144 / 441)


def test_largest_contour_is_polygon_area_not_pixel_count() -> None:
    s = blank()
    s[100, 10:60] = 1.0  # a 50-pixel line: polygon area 0
    s[20:22, 20:22] = 1.0  # a 4-pixel square: polygon area 1
    assert box_from_scoremap_at(s, 0.5).tolist() == [20, 20, 22, 22]


@pytest.mark.parametrize(
    ("blocks", "expected"),
    [
        ([(20, 20), (100, 150)], [150, 100, 160, 110]),
        ([(100, 20), (20, 150)], [20, 100, 30, 110]),
    ],
)
def test_tied_contours_first_in_findcontours_order(
    blocks: list[tuple[int, int]], expected: list[int]
) -> None:
    s = blank()
    for y, x in blocks:
        s[y : y + 10, x : x + 10] = 1.0  # equal areas: a tie
    # OpenCV lists contours in reverse raster order of discovery, so the lower block comes first
    contours = cv2.findContours((s > 0.5).astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    first = max(contours, key=cv2.contourArea)
    x, y, w, h = cv2.boundingRect(first)
    assert [x, y, x + w, y + h] == expected
    assert box_from_scoremap_at(s, 0.5).tolist() == expected


def test_nothing_survives_gives_zero_box() -> None:
    assert box_from_scoremap_at(blank(), 0.0).tolist() == [0, 0, 0, 0]
    assert box_from_scoremap_at(blank(), 0.0, multi_contour=True).tolist() == [[0, 0, 0, 0]]
    s = blank()
    s[5:10, 5:10] = 1.0
    assert box_from_scoremap_at(s, 1.0).tolist() == [0, 0, 0, 0]  # level 255: 255 > 255 is false


@pytest.mark.parametrize("multi", [False, True])
@pytest.mark.parametrize("kind", ["smooth", "noisy", "sparse", "peaked"])
def test_fast_path_equals_per_threshold_loop(kind: str, multi: bool) -> None:
    rng = np.random.default_rng(len(kind))
    s = {
        "smooth": smooth_map(1),
        "noisy": rng.random((40, 48)),  # small: thousands of contours per level at 224
        "sparse": (rng.random((40, 48)) > 0.8) * rng.random((40, 48)),
        "peaked": smooth_map(2, k=28) ** 4,
    }[kind]
    thr = cam_thresholds(0.001)
    fast = boxes_from_scoremap(s, thr, multi)
    slow = boxes_from_scoremap(s, thr, multi, fast=False)
    assert len(fast) == len(slow) == 1000
    for a, b in zip(fast, slow):  # same boxes; with all contours their order may differ
        np.testing.assert_array_equal(np.unique(a, axis=0), np.unique(b, axis=0))
        assert len(a) == len(b)
    gt = np.array([[30, 40, 150, 160], [0, 0, 20, 223]])
    np.testing.assert_array_equal(
        best_iou_per_threshold(s, gt, thr, multi), best_iou_per_threshold(s, gt, thr, multi, fast=False)
    )
    expected = best_iou_per_threshold(s, gt, thr, multi, fast=False)[None, :] >= np.array([[0.3], [0.5], [0.7]])
    np.testing.assert_array_equal(localized_per_threshold(s, gt, thr, (30, 50, 70), multi), expected)


@pytest.mark.parametrize("multi", [False, True])
def test_box_accuracy_update_fast_equals_loop_on_many_maps(multi: bool) -> None:
    rng = np.random.default_rng(7)
    maps, gts = [], []
    for i in range(12):
        cam = rng.normal(size=(14, 14)) * (0.1 + 0.2 * (i % 3)) + np.random.default_rng(i).random((14, 14))
        maps.append(prepare_scoremap(cam))
        x0, y0 = rng.integers(0, 120, 2)
        gts.append(np.array([[x0, y0, x0 + rng.integers(20, 100), y0 + rng.integers(20, 100)]]))
    thr = cam_thresholds(0.002)
    fast = box_accuracy_update(maps, gts, thr, (30, 50, 70), multi, num_workers=2)
    slow = box_accuracy_update(maps, gts, thr, (30, 50, 70), multi, num_workers=1, fast=False)
    np.testing.assert_array_equal(fast, slow)
    assert fast.sum() > 0


# ---------------------------------------------------------------------------------------------
# box accuracy


def test_several_gt_boxes_best_match_counts() -> None:
    s = blank()
    s[40:80, 40:100] = 1.0  # predicted box [40, 40, 100, 80]: 61 x 41 = 2501 pixels
    gt_far = [150, 150, 200, 200]
    gt_match = [40, 40, 99, 79]  # 60 x 40 = 2400 inside the prediction: IoU 2400/2501
    iou = best_iou_per_threshold(s, [gt_far, gt_match], [0.5])[0]
    assert iou == pytest.approx(2400 / 2501)
    assert best_iou_per_threshold(s, [gt_far], [0.5])[0] == 0.0


def test_box_accuracy_counts_and_compute() -> None:
    s = blank()
    s[40:80, 40:100] = 1.0
    maps = np.stack([s, s, blank()])
    gt = [np.array([[40, 40, 99, 79]]), np.array([[150, 150, 200, 200]]), np.array([[0, 0, 0, 0]])]
    thr = np.array([0.0, 0.5])
    counts = box_accuracy_update(maps, gt, thr, (30, 50, 70), multi_contour=False, num_workers=2)
    # image 0 matches at both thresholds, image 1 never, image 2: zero map -> box [0,0,0,0] = its GT
    np.testing.assert_array_equal(counts, [[2, 2], [2, 2], [2, 2]])
    assert (box_accuracy_update(maps, gt, thr, (30, 50, 70), False, num_workers=0) == counts).all()
    out = box_accuracy_compute(counts, 3, (30, 50, 70), thr)
    assert out["max_box_acc"] == pytest.approx(200 / 3)
    assert out["max_box_acc_iou"] == {
        30: pytest.approx(200 / 3),
        50: pytest.approx(200 / 3),
        70: pytest.approx(200 / 3),
    }
    assert out["best_threshold_iou"] == {30: 0.0, 50: 0.0, 70: 0.0}
    assert out["box_acc_curve"].shape == (3, 2)


def test_each_iou_level_picks_its_own_threshold() -> None:
    counts = np.array([[5, 9, 7], [6, 2, 8]])
    out = box_accuracy_compute(counts, 10, (30, 70), [0.1, 0.2, 0.3])
    assert out["max_box_acc_iou"] == {30: 90.0, 70: 80.0}
    assert out["best_threshold_iou"] == {30: 0.2, 70: 0.3}
    assert out["max_box_acc"] == 85.0
    with pytest.raises(RuntimeError, match="at least one image"):
        box_accuracy_compute(np.zeros((2, 3)), 0, (30, 70), [0.1, 0.2, 0.3])


def test_perfect_map_scores_100() -> None:
    s = blank()
    s[30:130, 50:170] = 1.0  # box 100 x 120: the one-past edge still gives IoU 12000/12221 >= 0.7
    counts = box_accuracy_update(s[None], [[[50, 30, 169, 129]]], cam_thresholds(0.01), (30, 50, 70), True)
    out = box_accuracy_compute(counts, 1, (30, 50, 70), cam_thresholds(0.01))
    assert out["max_box_acc"] == 100.0


def test_bad_gt_and_maps_are_rejected() -> None:
    s = blank()
    with pytest.raises(ValueError, match="image 0 of the batch"):
        box_accuracy_update(s[None], [np.zeros((0, 4))], [0.5])
    with pytest.raises(ValueError, match="XYXY_INCLUSIVE"):
        box_accuracy_update(s[None], [[[10, 10, 5, 20]]], [0.5])
    with pytest.raises(ValueError, match="NaN"):
        box_accuracy_update(np.full((1, 8, 8), np.nan), [[[0, 0, 1, 1]]], [0.5])
    with pytest.raises(ValueError, match="2 score maps but 1"):
        box_accuracy_update(np.zeros((2, 8, 8)), [[[0, 0, 1, 1]]], [0.5])


# ---------------------------------------------------------------------------------------------
# PxAP


def test_pxap_bins_and_histograms() -> None:
    edges = pxap_bin_edges(cam_thresholds(0.5))
    np.testing.assert_array_equal(edges, [0.0, 0.5, 1.0, 2.0, 3.0])
    s = np.array([[[0.0, 0.5, 1.0, 0.25]]])
    m = np.array([[[1, 1, 0, 255]]])
    t, f = pxap_histograms(s, m, edges)
    np.testing.assert_array_equal(t, [1, 1, 0, 0])  # 0.0 -> [0, .5), 0.5 -> [.5, 1)
    np.testing.assert_array_equal(f, [0, 0, 1, 0])  # 1.0 -> [1, 2); the ignore pixel is left out
    with pytest.raises(ValueError, match="255"):
        pxap_histograms(s, np.array([[[1, 2, 0, 0]]]), edges)


def test_pxap_constant_map_is_foreground_fraction() -> None:
    edges = pxap_bin_edges(cam_thresholds(0.01))
    mask = np.zeros((1, 224, 224), np.uint8)
    mask[0, 20:80, 30:90] = 1  # 3600 foreground
    mask[0, 150:160, :] = 255  # 2240 ignored
    n_bg = 224 * 224 - 3600 - 2240
    t, f = pxap_histograms(np.zeros((1, 224, 224)), mask, edges)
    assert pxap_from_histograms(t, f) == pytest.approx(100 * 3600 / (3600 + n_bg), abs=1e-9)


def test_pxap_perfect_map_is_100_whatever_the_ignore_value() -> None:
    edges = pxap_bin_edges(cam_thresholds(0.001))
    mask = np.zeros((1, 224, 224), np.uint8)
    mask[0, 20:80, 30:90] = 1
    mask[0, 150:160, :] = 255
    for ignore_value in (0.0, 1.0):
        s = (mask == 1).astype(np.float64)
        s[mask == 255] = ignore_value
        assert pxap_from_histograms(*pxap_histograms(s, mask, edges)) == 100.0


def test_pxap_formula_and_errors() -> None:
    # bins [0,.5), [.5,1), [1,2), [2,3]; descending: tp = 0,0,2,3; fp = 0,0,1,2
    true_hist, false_hist = np.array([1.0, 2.0, 0.0, 0.0]), np.array([1.0, 1.0, 0.0, 0.0])
    # precision = nan, nan, 2/3, 3/5; recall = 0, 0, 2/3, 1 -> AP = 2/3 * 2/3 + 3/5 * 1/3
    assert pxap_from_histograms(true_hist, false_hist) == pytest.approx(100 * (4 / 9 + 1 / 5))
    curve = pxap_pr_curve(true_hist, false_hist, np.array([0.0, 0.5, 1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(curve["thresholds"], [2.0, 1.0, 0.5, 0.0])
    np.testing.assert_allclose(curve["recall"], [0, 0, 2 / 3, 1])
    with pytest.raises(RuntimeError, match="no foreground"):
        pxap_from_histograms(np.zeros(4), np.ones(4))
