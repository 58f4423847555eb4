"""The calibration report's split statistics, on real generated files."""

from __future__ import annotations

import numpy as np

from cream_pl.calibrate_preset import split_statistics
from cream_pl.data.metadata import read_split
from cream_pl.data.synth import generate_synthetic_dataset


def test_split_statistics_match_the_boxes_on_disk(tmp_path) -> None:
    root = generate_synthetic_dataset(tmp_path, seed=3, num_classes=2, num_train=2, num_val=2, num_test=8,
                                      min_side=64, max_side=96, image_format="png")
    stats = split_statistics(root / "metadata" / "test")
    samples = read_split(root / "metadata" / "test").samples
    areas = [(b[2] - b[0] + 1) * (b[3] - b[1] + 1) / (s.size[0] * s.size[1]) for s in samples for b in s.boxes[:1]]
    assert stats["images"] == 8
    assert stats["instances_per_image"] == np.mean([len(s.boxes) for s in samples]) >= 1.0
    assert abs(stats["area_median"] - float(np.median(areas))) < 1e-12
    assert stats["area_p10"] <= stats["area_median"] <= stats["area_p90"]
