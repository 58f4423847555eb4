"""One pass per map for every metric (``ScoredMaps``) gives exactly what each metric computes from the maps.

The val epoch and ``cream_search`` feed :class:`MaxBoxAccV2`, :class:`MaxBoxAcc`, :class:`LocalizationCurve`
and :class:`PxAP` the figures of :func:`score_map_sets` instead of the score maps; these tests compare their
states and results with the maps fed to each metric on its own, on raw CAM-like maps (other sizes,
a constant map, a NaN map, several GT boxes, ignore pixels), on one and on two threads.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cream_pl.metrics import MaxBoxAcc, MaxBoxAccV2, PxAP
from cream_pl.metrics.functional import best_iou_per_threshold, prepare_scoremaps
from cream_pl.metrics.localization_curve import LocalizationCurve
from cream_pl.metrics.scored_maps import ScoringSpec, score_map_sets

INTERVAL = 0.01


def _batch(seed: int, n: int = 6, side: int = 14) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] + 0.5
    maps = []
    for _ in range(n):
        cam = 0.3 * g.normal(size=(side, side))
        for _ in range(int(g.integers(1, 4))):
            cx, cy, s = g.uniform(2, side - 2, 2).tolist() + [g.uniform(1, 3)]
            cam += g.uniform(0.5, 1.5) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
        maps.append(cam)
    if n >= 3:
        maps[1][:] = 0.7  # constant: all zeros after prepare_scoremap
        maps[2][3, 3] = np.nan  # NaN: all zeros
    boxes = []
    for _ in range(n):
        k = int(g.integers(1, 3))
        x0, y0 = g.integers(0, 150, (2, k))
        w, h = g.integers(20, 70, (2, k))
        boxes.append(torch.from_numpy(np.stack([x0, y0, np.minimum(x0 + w, 223), np.minimum(y0 + h, 223)], 1)))
    masks = torch.from_numpy(g.choice(np.array([0, 1, 255], np.uint8), size=(n, 224, 224), p=[0.6, 0.35, 0.05]))
    return torch.from_numpy(np.stack(maps)), boxes, masks


@pytest.mark.parametrize("workers", [1, 2])
def test_scored_maps_give_every_metric_exactly_its_own_numbers(workers):
    maps, boxes, masks = _batch(0)
    top1 = torch.tensor([True, False, True, True, False, True])
    top5 = torch.ones(6, dtype=torch.bool)
    spec = ScoringSpec(cam_interval=INTERVAL, iou_thresholds=(30, 50, 70))
    other = maps.flip(-1) * 2.0  # a second map set of the same batch (a search candidate)
    scored = score_map_sets([maps, other], boxes, masks, spec, num_workers=workers)
    for raw, figures in zip((maps, other), scored):
        prepared = prepare_scoremaps(raw)
        pairs = [
            (MaxBoxAccV2(cam_curve_interval=INTERVAL), lambda m, x: m.update(x, boxes)),
            (MaxBoxAcc(cam_curve_interval=INTERVAL), lambda m, x: m.update(x, boxes)),
            (LocalizationCurve(cam_curve_interval=INTERVAL), lambda m, x: m.update(x, boxes, top1, top5)),
            (PxAP(cam_curve_interval=INTERVAL), lambda m, x: m.update(x, masks)),
        ]
        for metric, update in pairs:
            again = type(metric)(cam_curve_interval=INTERVAL)
            update(metric, prepared)
            update(again, figures)
            for name in metric._defaults:
                assert torch.equal(getattr(metric, name), getattr(again, name)), (type(metric).__name__, name)
        assert figures.num_images == 6 and figures.v1_ok.shape == (6, len(spec.thresholds))
    # the counts are not trivial: some thresholds localise, some do not
    assert 0 < int(scored[0].box_counts.sum()) < 3 * 6 * len(spec.thresholds)


def test_per_image_ious_are_the_records_best_ious():
    maps, boxes, _ = _batch(1, n=3)
    spec = ScoringSpec(cam_interval=INTERVAL, per_image_iou=True)
    figures = score_map_sets([maps], boxes, None, spec)[0]
    prepared = prepare_scoremaps(maps)
    for i in range(3):
        want = best_iou_per_threshold(prepared[i], boxes[i], spec.thresholds, multi_contour=True)
        np.testing.assert_array_equal(figures.best_iou[i], want)
    assert figures.true_hist is None and ScoringSpec(cam_interval=INTERVAL).per_image_iou is False


def test_scored_maps_refuse_a_metric_they_were_not_scored_for():
    maps, boxes, masks = _batch(2, n=2)
    figures = score_map_sets([maps], boxes, None, ScoringSpec(cam_interval=INTERVAL))[0]
    with pytest.raises(ValueError, match="CAM interval 0.01"):
        MaxBoxAccV2(cam_curve_interval=0.05).update(figures, boxes)
    with pytest.raises(ValueError, match="cannot use maps scored"):
        MaxBoxAccV2(cam_curve_interval=INTERVAL, iou_thresholds=(50,)).update(figures, boxes)
    with pytest.raises(ValueError, match="largest contour at IoU 50"):
        LocalizationCurve(cam_curve_interval=INTERVAL, iou_threshold=70).update(figures, boxes, *torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="no mask histograms"):
        PxAP(cam_curve_interval=INTERVAL).update(figures, masks)
    bad = masks.clone()
    bad[1, 0, 0] = 7
    with pytest.raises(ValueError, match=r"image 1 of the batch: mask values .* found \[7\]"):
        score_map_sets([maps], boxes, bad, ScoringSpec(cam_interval=INTERVAL))
    with pytest.raises(ValueError, match="image 0 of the batch"):
        score_map_sets([maps], [torch.tensor([[5, 5, 2, 9]]), boxes[1]], None, ScoringSpec(cam_interval=INTERVAL))
    with pytest.raises(ValueError, match="percentages"):
        ScoringSpec(iou_thresholds=(0,))
