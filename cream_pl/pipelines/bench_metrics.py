"""Speed of the box-accuracy update: component-tree path vs one ``findContours`` per threshold.

The fast path reads the contour boxes of all (at most 256) distinct masks of a map off two
component trees built in one pass over the pixels, and scores the images of a batch on a thread
pool (the compiled kernels release the GIL); for the largest contour (V1) it traces a level only
when its contours disagree about an IoU level. The baseline runs one ``findContours`` per
threshold (1000 per map at interval 0.001), serially. Both paths run on the same maps in the same
process and must give identical counts.

Example:
    >>> out = bench_metrics(num_images=2, interval=0.01)
    >>> out["identical"], out["num_thresholds"]
    (True, 100)

Command line: ``python -m cream_pl.pipelines.bench_metrics [--num-images 16] [--interval 0.001]``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from cream_pl.metrics.functional import box_accuracy_update, cam_thresholds, prepare_scoremap

__all__ = ["bench_metrics", "make_bench_maps"]


def make_bench_maps(num_images: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """CAM-like smooth score maps (14x14 -> 224, one to three blobs plus noise) and 1-2 GT boxes each."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:14, 0:14] + 0.5
    maps, boxes = [], []
    for _ in range(num_images):
        cam = 0.2 * rng.normal(size=(14, 14))
        for _ in range(int(rng.integers(1, 4))):
            cx, cy, sx, sy = rng.uniform(2, 12), rng.uniform(2, 12), rng.uniform(1, 4), rng.uniform(1, 4)
            cam += rng.uniform(0.5, 1.5) * np.exp(-(((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2) / 2)
        maps.append(prepare_scoremap(cam))
        gt = []
        for _ in range(int(rng.integers(1, 3))):
            x0, y0 = (int(v) for v in rng.integers(0, 150, 2))
            w, h = (int(v) for v in rng.integers(30, 74, 2))
            gt.append([x0, y0, x0 + w, y0 + h])
        boxes.append(np.array(gt, dtype=np.int64))
    return np.stack(maps), boxes


def _timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def bench_metrics(
    num_images: int = 16,
    interval: float = 0.001,
    seed: int = 0,
    multi_contour: bool = True,
    num_workers: int | None = None,
) -> dict[str, Any]:
    """Time the per-threshold loop and the fast path on identical maps; assert identical counts.

    Args:
        num_images: number of 224x224 maps.
        interval: CAM threshold step (0.001: 1000 thresholds, as in the benchmark's training code).
        seed: seed of the maps and boxes.
        multi_contour: all contours (MaxBoxAccV2) or the largest (MaxBoxAcc).
        num_workers: threads of the fast path (``None``: all CPUs).

    Returns:
        Times in seconds (``baseline_s``: one findContours per threshold, serial; ``fast_serial_s``:
        component trees, one thread; ``fast_s``: component trees on ``num_workers`` threads), the
        ratios ``speedup`` (baseline / fast) and ``speedup_serial``, and the settings.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    maps, boxes = make_bench_maps(num_images, seed)
    thr = cam_thresholds(interval)
    iou = (30, 50, 70)
    box_accuracy_update(maps[:1], boxes[:1], thr, iou, multi_contour, num_workers=1)  # load the kernels
    baseline, t_base = _timed(
        lambda: box_accuracy_update(maps, boxes, thr, iou, multi_contour, num_workers=1, fast=False)
    )
    serial, t_serial = _timed(
        lambda: box_accuracy_update(maps, boxes, thr, iou, multi_contour, num_workers=1)
    )
    fast, t_fast = _timed(
        lambda: box_accuracy_update(maps, boxes, thr, iou, multi_contour, num_workers=num_workers)
    )
    if not (np.array_equal(baseline, serial) and np.array_equal(baseline, fast)):
        raise AssertionError("the fast box-accuracy path disagrees with the per-threshold loop")
    workers = (os.cpu_count() or 1) if num_workers is None else num_workers
    return {
        "num_images": num_images,
        "interval": float(interval),
        "num_thresholds": len(thr),
        "multi_contour": bool(multi_contour),
        "num_workers": max(1, min(workers, num_images)),
        "cpu_count": os.cpu_count(),
        "identical": True,
        "baseline_s": t_base,
        "fast_serial_s": t_serial,
        "fast_s": t_fast,
        "ms_per_image_baseline": 1000 * t_base / num_images,
        "ms_per_image_fast": 1000 * t_fast / num_images,
        "speedup_serial": t_base / t_serial,
        "speedup": t_base / t_fast,
    }


def main(argv: list[str] | None = None) -> int:
    from cream_pl.core.options import (
        OneLineArgumentParser,
        nonneg_int,
        positive_int,
        seed_int,
        threshold_step,
    )

    parser = OneLineArgumentParser(prog="python -m cream_pl.pipelines.bench_metrics", description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-images", type=positive_int, default=16)
    parser.add_argument("--interval", type=threshold_step, default=0.001)
    parser.add_argument("--seed", type=seed_int, default=0)
    parser.add_argument("--num-workers", type=nonneg_int, default=None)
    args = parser.parse_args(argv)
    results = [
        bench_metrics(args.num_images, args.interval, args.seed, multi, args.num_workers)
        for multi in (False, True)
    ]
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
