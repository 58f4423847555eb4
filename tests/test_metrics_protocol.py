"""Protocol arithmetic the metrics depend on, checked against hand-computed benchmark values."""

from __future__ import annotations

import torch

from cream_pl.boxes import resize_boxes_protocol
from cream_pl.metrics.bench import bench_metrics


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
