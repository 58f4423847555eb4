"""Metric states are exact under DDP: 2 CPU processes over gloo give the 1-process numbers."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cream_pl.metrics import LocalizationAccuracy, MaxBoxAcc, MaxBoxAccV2, PxAP, box_from_scoremap_at
from cream_pl.pipelines.bench_metrics import make_bench_maps

NUM_IMAGES = 7  # odd: the two ranks see different numbers of images


def _data() -> dict[str, object]:
    maps, boxes = make_bench_maps(NUM_IMAGES, seed=11)
    for i in range(0, NUM_IMAGES, 2):  # half of the GT boxes follow the maps: non-zero accuracies
        boxes[i] = box_from_scoremap_at(maps[i], 0.3)[None]
    masks = np.zeros((NUM_IMAGES, 224, 224), np.uint8)
    for i, b in enumerate(boxes):
        x0, y0, x1, y1 = b[0]
        masks[i, y0 : y1 + 1, x0 : x1 + 1] = 1
        masks[i, 200:, :] = 255
    gen = torch.Generator().manual_seed(0)
    return {
        "maps": torch.from_numpy(maps),
        "boxes": [torch.from_numpy(b) for b in boxes],
        "masks": torch.from_numpy(masks),
        "logits": torch.randn(NUM_IMAGES, 6, generator=gen),
        "labels": torch.randint(0, 6, (NUM_IMAGES,), generator=gen),
    }


def _metrics() -> dict[str, object]:
    return {
        "v1": MaxBoxAcc(cam_curve_interval=0.01, num_workers=1),
        "v2": MaxBoxAccV2(cam_curve_interval=0.01, num_workers=1),
        "pxap": PxAP(cam_curve_interval=0.01),
        "loc": LocalizationAccuracy(cam_threshold=0.3),
    }


def _run(metrics: dict[str, object], data: dict[str, object], indices: list[int]) -> dict[str, object]:
    for start in range(0, len(indices), 2):
        idx = indices[start : start + 2]
        maps = data["maps"][idx]
        boxes = [data["boxes"][i] for i in idx]
        metrics["v1"].update(maps, boxes)
        metrics["v2"].update(maps, boxes)
        metrics["pxap"].update(maps, data["masks"][idx])
        metrics["loc"].update(maps, boxes, data["logits"][idx], data["labels"][idx])
    out = {}
    for name, metric in metrics.items():
        value = metric.compute()
        if isinstance(value, dict):
            value = {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in value.items()}
        else:
            value = float(value)
        out[name] = value
    return out


def _worker(rank: int, world_size: int, port: int, result_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        data = _data()
        indices = list(range(NUM_IMAGES))[rank::world_size]
        out = _run(_metrics(), data, indices)
        torch.save(out, Path(result_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two spawned processes importing torch: ~35 s on 2 shared cores
def test_two_gloo_processes_equal_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _run(_metrics(), _data(), list(range(NUM_IMAGES)))
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # the spawned children import this module
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        for name in expected:
            assert got[name] == expected[name], f"rank {rank}, {name}: differs from the 1-process value"
    assert (
        expected["v2"]["max_box_acc"] > 0 and 0 < expected["pxap"] < 100 and expected["loc"]["gt_known"] > 0
    )
