"""torchmetrics classes of cream_pl.metrics: MaxBoxAcc, MaxBoxAccV2, PxAP, LocalizationAccuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cream_pl.metrics import (
    BoxAccuracy,
    LocalizationAccuracy,
    MaxBoxAcc,
    MaxBoxAccV2,
    PxAP,
    box_accuracy_update,
    cam_thresholds,
    prepare_scoremaps,
)
from cream_pl.pipelines.bench_metrics import make_bench_maps


def block_map(y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    s = torch.zeros(224, 224, dtype=torch.float64)
    s[y0:y1, x0:x1] = 1.0
    return s


def test_v1_and_v2_defaults_and_state_shapes() -> None:
    v1, v2 = MaxBoxAcc(), MaxBoxAccV2(cam_curve_interval=0.01)
    assert (v1.iou_thresholds, v1.multi_contour, v1.correct.shape) == ((50,), False, (1, 1000))
    assert (v2.iou_thresholds, v2.multi_contour, v2.correct.shape) == ((30, 50, 70), True, (3, 100))
    assert v1.correct.dtype == torch.int64 and v1.total.dtype == torch.int64
    np.testing.assert_array_equal(v2.thresholds, np.arange(0, 1, 0.01))


def test_state_size_does_not_grow_with_images() -> None:
    maps, boxes = make_bench_maps(6, seed=3)
    metric = MaxBoxAccV2(cam_curve_interval=0.05)
    sizes = []
    for i in range(0, 6, 2):
        metric.update(maps[i : i + 2], boxes[i : i + 2])
        sizes.append(sum(t.numel() for t in metric.metric_state.values()))
    assert sizes == [sizes[0]] * 3 and int(metric.total) == 6


def test_v2_beats_v1_with_a_hole_and_reports_curve() -> None:
    s = block_map(10, 60, 10, 60)
    s[20:50, 20:50] = 0.0  # a hole whose ring matches the GT box exactly
    gt = [torch.tensor([[19, 19, 50, 50]])]
    v1, v2 = BoxAccuracy((70,), False, 0.5), BoxAccuracy((70,), True, 0.5)
    v1.update(s[None], gt)
    v2.update(s[None], gt)
    out1, out2 = v1.compute(), v2.compute()
    assert out1["max_box_acc"] == 0.0 and out2["max_box_acc"] == 100.0
    assert out2["best_threshold_iou"] == {70: 0.0}
    assert out2["box_acc_curve"].tolist() == [[100.0, 100.0]]
    assert out2["thresholds"].tolist() == [0.0, 0.5]


def test_update_accepts_tensors_arrays_and_lists() -> None:
    maps, boxes = make_bench_maps(4, seed=1)
    a = MaxBoxAccV2(cam_curve_interval=0.01)
    a.update(torch.from_numpy(maps), [torch.from_numpy(b) for b in boxes])
    b = MaxBoxAccV2(cam_curve_interval=0.01, num_workers=0)
    b.update(list(maps), [b_.tolist() for b_ in boxes])
    assert torch.equal(a.correct, b.correct)
    expected = box_accuracy_update(maps, boxes, cam_thresholds(0.01), (30, 50, 70), True)
    assert a.correct.numpy().tolist() == expected.tolist()


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric")
def test_box_metric_argument_checks() -> None:
    with pytest.raises(ValueError, match="percentages"):
        BoxAccuracy(iou_thresholds=(150,))
    with pytest.raises(ValueError, match="at least one"):
        BoxAccuracy(iou_thresholds=())
    with pytest.raises(ValueError, match=r"got 0.5 \(a fraction\? IoU 0.5 is 50 here\)"):
        MaxBoxAccV2(iou_thresholds=(0.5,))  # before: scored at IoU 0.5 %, every box a hit
    assert MaxBoxAccV2(iou_thresholds=np.array([30, 50, 70])).iou_thresholds == (30, 50, 70)  # numpy integers
    with pytest.raises(ValueError, match="interval"):
        MaxBoxAcc(cam_curve_interval=1.5)
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        MaxBoxAcc().update(torch.zeros(224, 224), [torch.tensor([[0, 0, 1, 1]])])
    with pytest.raises(RuntimeError, match="at least one image"):
        MaxBoxAcc().compute()


def test_reset_clears_counts() -> None:
    metric = MaxBoxAcc(cam_curve_interval=0.1)
    metric.update(block_map(0, 50, 0, 50)[None], [torch.tensor([[0, 0, 49, 49]])])
    metric.reset()
    assert int(metric.total) == 0 and int(metric.correct.sum()) == 0


# ---------------------------------------------------------------------------------------------
# PxAP


def test_pxap_perfect_and_constant_maps() -> None:
    mask = torch.zeros(2, 224, 224, dtype=torch.uint8)
    mask[0, 10:110, 20:120] = 1  # 10000 foreground
    mask[1, 0:50, :] = 1  # 11200 foreground
    mask[1, 200:, :] = 255  # 5376 ignored
    perfect = PxAP()
    perfect.update((mask == 1).double(), mask)
    assert float(perfect.compute()) == 100.0
    constant = PxAP(cam_curve_interval=0.01)
    constant.update(prepare_scoremaps(torch.full((2, 14, 14), 0.7)), mask)  # constant -> zeros
    fg, counted = 10000 + 11200, 2 * 224 * 224 - 5376
    assert float(constant.compute()) == pytest.approx(100 * fg / counted, abs=1e-9)


def test_pxap_pr_curve_and_errors() -> None:
    metric = PxAP(cam_curve_interval=0.25)
    assert metric.true_hist.dtype == torch.float64 and metric.true_hist.shape == (6,)
    s = torch.tensor([[[0.9, 0.1], [0.6, 0.3]]], dtype=torch.float64)
    m = torch.tensor([[[1, 0], [0, 1]]], dtype=torch.uint8)
    metric.update(s, m)
    curve = metric.pr_curve()
    assert curve["thresholds"].tolist() == [2.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    assert curve["recall"].tolist() == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]
    # descending: P(>=.75)=1 at R=.5, P(>=.25)=2/3 at R=1 -> AP = .5 + 2/3 * .5
    assert float(metric.compute()) == pytest.approx(100 * (0.5 + 1 / 3))
    empty = PxAP()
    empty.update(s, torch.zeros_like(m))
    with pytest.raises(RuntimeError, match="no foreground"):
        empty.compute()
    with pytest.raises(ValueError, match="NaN"):
        PxAP().update(torch.full((1, 2, 2), float("nan")), m)


# ---------------------------------------------------------------------------------------------
# Top-1 / Top-5 / GT-known Loc


def test_localization_accuracy_hand_computed() -> None:
    good = block_map(40, 120, 50, 150)  # box [50, 40, 150, 120] vs GT [50, 40, 149, 119]: IoU 8000/8181
    bad = block_map(0, 20, 0, 20)
    maps = torch.stack([good, good, good, bad])
    gt = [torch.tensor([[50, 40, 149, 119]])] * 4
    logits = torch.tensor(
        [
            [0.0, 9.0, 1.0, 2.0, 3.0, 4.0, 5.0],  # top-1 = 1 (label)
            [9.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0],  # label 1 ranks last: not in top-5
            [9.0, 5.0, 1.0, 2.0, 3.0, 4.0, 0.0],  # label 1 is 2nd: in top-5
            [0.0, 9.0, 1.0, 2.0, 3.0, 4.0, 5.0],  # right class, wrong box
        ]
    )
    metric = LocalizationAccuracy(cam_threshold=0.2)
    metric.update(maps[:2], gt[:2], logits[:2], torch.tensor([1, 1]))
    metric.update(maps[2:], gt[2:], logits[2:], torch.tensor([1, 1]))
    assert metric.compute() == {"gt_known": 75.0, "top1_loc": 25.0, "top5_loc": 50.0}


def test_localization_accuracy_with_predicted_boxes_and_few_classes() -> None:
    metric = LocalizationAccuracy(top_k=5)
    gt = [torch.tensor([[10, 10, 59, 59]]), torch.tensor([[0, 0, 9, 9], [100, 100, 149, 149]])]
    pred = [torch.tensor([10, 10, 59, 59]), torch.tensor([[100, 100, 150, 150]])]  # 2500/2601 >= 0.5
    logits = torch.tensor([[0.2, 0.8], [0.9, 0.1]])  # 2 classes: top-5 covers both
    metric.update(None, gt, logits, torch.tensor([0, 0]), pred_boxes=pred)
    assert metric.compute() == {"gt_known": 100.0, "top1_loc": 50.0, "top5_loc": 100.0}


def test_localization_accuracy_iou_is_inclusive_and_at_least() -> None:
    # IoU exactly 0.5: GT [0,0,9,9] (100 px) vs prediction [0,0,19,4] (100 px), overlap 50 -> 50/150
    # and vs [0,0,9,4]: 50/100 = 0.5 -> counts (>=)
    metric = LocalizationAccuracy()
    gt = [torch.tensor([[0, 0, 9, 9]])]
    metric.update(
        None, gt, torch.tensor([[1.0, 0.0]]), torch.tensor([0]), pred_boxes=[torch.tensor([0, 0, 9, 4])]
    )
    assert metric.compute()["gt_known"] == 100.0


def test_localization_argument_checks() -> None:
    with pytest.raises(ValueError, match="cam_threshold"):
        LocalizationAccuracy(cam_threshold=2.0)
    metric = LocalizationAccuracy()
    with pytest.raises(ValueError, match="labels"):
        metric.update(
            None,
            [torch.tensor([[0, 0, 1, 1]])],
            torch.zeros(1, 3),
            torch.tensor([5]),
            pred_boxes=[[0, 0, 1, 1]],
        )
    with pytest.raises(ValueError, match="either score maps or pred_boxes"):
        metric.update(None, [torch.tensor([[0, 0, 1, 1]])], torch.zeros(1, 3), torch.tensor([0]))
