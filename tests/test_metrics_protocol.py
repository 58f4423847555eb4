"""Protocol arithmetic the metrics depend on, checked against hand-computed benchmark values."""

from __future__ import annotations

import torch

from cream_pl.core.boxes import resize_boxes_protocol
from cream_pl.pipelines.bench_metrics import bench_metrics


def test_resize_boxes_protocol_reference_unit_case() -> None:
    # wsolevaluation's own unit case: box (1, 2, 4, 3), size (10, 20) -> (35, 10) gives (3, 1, 14, 1)
    assert resize_boxes_protocol(torch.tensor([[1, 2, 4, 3]]), (10, 20), (35, 10)).tolist() == [[3, 1, 14, 1]]


def test_resize_boxes_protocol_multiplies_before_dividing() -> None:
    # 45 * 224 / 80 = 126 exactly and 55 * 224 / 110 = 112 exactly, but 45 * (224 / 80) = 125.999...
    out = resize_boxes_protocol(torch.tensor([[45, 55, 45, 55]]), (80, 110), (224, 224))
    assert out.tolist() == [[126, 112, 126, 112]]


def test_bench_fast_path_agrees_with_per_threshold_loop() -> None:
    out = bench_metrics(num_images=2, interval=0.01, seed=1)
    assert out["identical"] is True and out["num_thresholds"] == 100
    assert out["baseline_s"] > 0 and out["fast_s"] > 0 and out["speedup"] == out["baseline_s"] / out["fast_s"]


def test_center_baseline_equals_max_box_acc_v2_of_its_map() -> None:
    import numpy as np
    import torch

    from cream_pl.metrics import MaxBoxAccV2
    from cream_pl.metrics.baselines import center_baseline_box_accuracy, center_gaussian_scoremap

    rng = np.random.default_rng(0)
    boxes = []
    for _ in range(12):
        x0, y0 = rng.integers(0, 150, 2)
        boxes.append(np.array([[x0, y0, x0 + rng.integers(20, 70), y0 + rng.integers(20, 70)]]))
    metric = MaxBoxAccV2(cam_curve_interval=0.01)
    metric.update(torch.from_numpy(np.repeat(center_gaussian_scoremap()[None], 12, 0)), [torch.from_numpy(b) for b in boxes])
    ref = metric.compute()
    got = center_baseline_box_accuracy(boxes, interval=0.01)
    assert abs(got["max_box_acc_v2"] - float(ref["max_box_acc"])) < 1e-9
    assert got["max_box_acc_v2"] > 0
