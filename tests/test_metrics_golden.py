"""Golden numbers from clovaai/wsolevaluation for ``cream-pl evaluate`` and the metric classes.

``write_golden_split(root)`` writes a deterministic split under ``root``:

- ``metadata/test/`` in the wsolevaluation format (boxes in ``localization.txt``, OpenImages-style
  mask lines in ``localization_masks.txt``);
- ``scoremaps/<image_id>.npy``: raw CAM-like maps of assorted sizes (float32/float64), plus a
  constant map and 224x224 maps already in ``[0, 1]``;
- ``masks/``: instance and ignore PNGs at the original image size.

How the golden numbers were produced: clovaai/wsolevaluation at commit
96f4b88679af41f005824661f47e6fe3628af2aa (last code change e00842f), in a scratch copy outside this
repository with ``np.float``/``np.int`` replaced by ``np.float64``/``np.int64`` (numpy >= 1.24) and a
stand-in ``munch.Munch``; opencv-python-headless 5.0.0, numpy 2.4.6. A script wrote this split with
``write_golden_split``, loaded each ``<image_id>.npy`` as float64 (the tool's ``t2n``), passed
224x224 maps in [0, 1] unchanged and ran the others through the reference's own CAMComputer steps
(``cv2.resize(..., INTER_CUBIC)`` to 224 then ``inference.normalize_scoremap``), and fed them to
``evaluation.BoxEvaluator`` (``dataset_name="CUB"``, IoU 30/50/70, ``multi_contour_eval`` False and
True) and ``evaluation.MaskEvaluator`` (``dataset_name="OpenImages"``, the mask lines as its
``localization.txt``, ``mask_root`` = the masks folder), for ``np.arange(0, 1, interval)`` with
intervals 0.01 and 0.001. Recorded: ``compute()`` (percent per IoU level), the first best threshold
``thr[argmax(num_correct[iou])]``, a fingerprint of the whole ``num_correct`` curve
(``sum(c)``, ``sum(j * c[j])``) and the PxAP. ``test_reference_recompute`` reruns that when
``WSOLEVAL_REF`` points at such a patched checkout.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cream_pl.cli.evaluate import load_scoremap, read_split_metadata
from cream_pl.core.boxes import resize_boxes_protocol
from cream_pl.metrics import BoxAccuracy, MaxBoxAcc, MaxBoxAccV2, PxAP, load_gt_mask

SEED = 20240611
NUM_IMAGES = 32


def _protocol_safe(x: int, size: int) -> bool:
    # keep coordinates where int(x * 224 / size) == int(x * (224 / size)); the two roundings differ for
    # a few (x, size) pairs and the golden numbers must not depend on that (see test_metrics_protocol)
    return int(x * 224.0 / size) == int(x * (224.0 / size))


def _box(rng: np.random.Generator, w: int, h: int) -> tuple[int, int, int, int]:
    while True:
        x0, x1 = sorted(int(v) for v in rng.integers(0, w, 2))
        y0, y1 = sorted(int(v) for v in rng.integers(0, h, 2))
        if rng.random() < 0.2:  # touch the right/bottom border
            x1, y1 = w - 1, h - 1
        if x1 - x0 < w // 8 or y1 - y0 < h // 8:
            continue
        if all(_protocol_safe(v, w) for v in (x0, x1)) and all(_protocol_safe(v, h) for v in (y0, y1)):
            return x0, y0, x1, y1


def _raw_map(rng: np.random.Generator, i: int, box: tuple[int, int, int, int], w: int, h: int) -> np.ndarray:
    """A CAM-like map: a blob over the first GT box (sometimes off), background noise, a second peak."""
    if i == 0:
        return np.full((14, 14), 0.3, dtype=np.float32)  # constant: zeros after normalisation
    if i in (1, 2):  # already 224x224 in [0, 1], not reaching 0 and 1: scored as saved
        small = rng.random((7, 7))
        m = cv2.resize(small, (224, 224), interpolation=cv2.INTER_LINEAR)
        return 0.15 + 0.7 * (m - m.min()) / (m.max() - m.min())
    gh, gw = [(14, 14), (7, 7), (28, 28), (12, 20), (14, 14)][i % 5]
    yy, xx = np.mgrid[0:gh, 0:gw] + 0.5
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1 + 1) / 2 / w * gw, (y0 + y1 + 1) / 2 / h * gh
    sx, sy = max((x1 - x0 + 1) / w * gw / 2.5, 0.5), max((y1 - y0 + 1) / h * gh / 2.5, 0.5)
    shift = rng.normal(scale=0.25, size=2) * (gw, gh)
    cam = np.exp(-(((xx - cx - shift[0]) / sx) ** 2 + ((yy - cy - shift[1]) / sy) ** 2) / 2)
    cam += (
        0.5
        * rng.random()
        * np.exp(-(((xx - rng.random() * gw) / 1.5) ** 2 + ((yy - rng.random() * gh) / 1.5) ** 2))
    )
    cam += 0.15 * rng.normal(size=(gh, gw))
    if i % 4 == 3:  # a sharp peak: small, tied contours at high thresholds
        cam[gh // 2, gw // 3] += 3.0
    return cam.astype(np.float32 if i % 2 else np.float64)


def write_golden_split(root: str | Path) -> dict[str, Path]:
    """Write the golden split under ``root``; returns the metadata, scoremap and mask folders."""
    root = Path(root)
    rng = np.random.default_rng(SEED)
    meta = root / "metadata" / "test"
    maps_dir = root / "scoremaps"
    masks_dir = root / "masks"
    for d in (meta, maps_dir, masks_dir):
        d.mkdir(parents=True, exist_ok=True)
    ids, labels, sizes, boxes, mask_lines = [], [], [], [], []
    for i in range(NUM_IMAGES):
        cls = i % 3
        image_id = f"{cls:03d}.class/img_{i:05d}.jpg"
        w, h = int(rng.integers(60, 500)), int(rng.integers(60, 500))
        ids.append(image_id)
        labels.append(f"{image_id},{cls}")
        sizes.append(f"{image_id},{w},{h}")
        gt = [_box(rng, w, h) for _ in range(1 + int(rng.integers(0, 3)))]
        boxes += [image_id + "," + ",".join(map(str, b)) for b in gt]
        path = maps_dir / f"{image_id}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, _raw_map(rng, i, gt[0], w, h))
        # instance masks (ellipses) and an ignore rectangle, values {0, 255}
        rel = Path(f"{cls:03d}") / f"img_{i:05d}"
        (masks_dir / rel.parent).mkdir(parents=True, exist_ok=True)
        n_inst = 1 + int(rng.integers(0, 2))
        for k in range(n_inst):
            inst = np.zeros((h, w), np.uint8)
            center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            axes = (int(rng.integers(5, w // 2)), int(rng.integers(5, h // 2)))
            cv2.ellipse(inst, center, axes, float(rng.integers(0, 180)), 0, 360, 255, -1)
            cv2.imwrite(str(masks_dir / f"{rel}_m{k}.png"), inst)
            ignore_field = f"{rel}_ignore.png" if k == 0 else ""
            mask_lines.append(f"{image_id},{rel}_m{k}.png,{ignore_field}")
        ignore = np.zeros((h, w), np.uint8)
        x0, y0, x1, y1 = _box(rng, w, h)
        ignore[y0 : y1 + 1, x0 : x1 + 1] = 255
        cv2.imwrite(str(masks_dir / f"{rel}_ignore.png"), ignore)
    files = {
        "image_ids.txt": ids,
        "class_labels.txt": labels,
        "image_sizes.txt": sizes,
        "localization.txt": boxes,
        "localization_masks.txt": mask_lines,
    }
    for name, lines in files.items():
        (meta / name).write_text("\n".join(lines), encoding="utf-8")  # no trailing newline, as the benchmark
    return {"metadata": meta, "scoremaps": maps_dir, "masks": masks_dir}


# ---------------------------------------------------------------------------------------------
# golden numbers (see the module docstring for how they were produced)

GOLDEN = {
    0.01: {
        "largest": {
            "acc": [56.25, 31.25, 12.5],
            "best_thr": [0.15, 0.42, 0.33],
            "fingerprint": {30: (1167, 43021), 50: (492, 17532), 70: (140, 4304)},
        },
        "multi": {
            "acc": [59.375, 31.25, 15.625],
            "best_thr": [0.15, 0.42, 0.33],
            "fingerprint": {30: (1203, 44506), 50: (505, 17922), 70: (149, 4592)},
        },
        "pxap": 22.393676271912856,
    },
    0.001: {
        "largest": {
            "acc": [56.25, 31.25, 12.5],
            "best_thr": [0.15, 0.41200000000000003, 0.33],
            "fingerprint": {30: (11601, 4300433), 50: (4868, 1740443), 70: (1371, 423595)},
        },
        "multi": {
            "acc": [62.5, 31.25, 15.625],
            "best_thr": [0.181, 0.41200000000000003, 0.33],
            "fingerprint": {30: (11966, 4449703), 50: (4997, 1778547), 70: (1457, 450900)},
        },
        "pxap": 22.383910227048965,
    },
}
TOL = 1e-6


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_golden_split(tmp_path_factory.mktemp("golden"))


def _run_cli(argv: list[str]) -> int:
    from cream_pl.cli import main

    return main(argv)


@pytest.mark.parametrize("interval", [0.01, 0.001])
def test_cli_matches_reference(split: dict[str, Path], tmp_path: Path, interval: float) -> None:
    out = tmp_path / "scores.json"
    argv = ["evaluate", "--metadata", str(split["metadata"]), "--scoremaps", str(split["scoremaps"])]
    argv += ["--mask-root", str(split["masks"]), "--out", str(out)]
    if interval != 0.01:  # 0.01 is the default, as in the benchmark's tool
        argv += ["--interval", str(interval)]
    assert _run_cli(argv) == 0
    result = json.loads(out.read_text())
    gold = GOLDEN[interval]
    assert result["num_images"] == NUM_IMAGES and result["multi_contour"] is True
    assert result["cam_curve_interval"] == interval
    for k, key in enumerate(("30", "50", "70")):
        assert result["max_box_acc_iou"][key] == pytest.approx(gold["multi"]["acc"][k], abs=TOL)
        assert result["best_threshold_iou"][key] == pytest.approx(gold["multi"]["best_thr"][k], abs=1e-12)
    assert result["max_box_acc_v2"] == pytest.approx(float(np.average(gold["multi"]["acc"])), abs=TOL)
    assert result["max_box_acc"] == pytest.approx(gold["largest"]["acc"][1], abs=TOL)  # V1: IoU 50, largest
    assert result["pxap"] == pytest.approx(gold["pxap"], abs=TOL)


def test_cli_largest_contour_mode(split: dict[str, Path], tmp_path: Path) -> None:
    from cream_pl.cli.evaluate import run

    out = tmp_path / "scores.json"
    args = _parse(["--metadata", str(split["metadata"]), "--scoremaps", str(split["scoremaps"])])
    args.multi_contour, args.out = False, str(out)
    assert run(args) == 0
    result = json.loads(out.read_text())
    gold = GOLDEN[0.01]["largest"]
    assert [result["max_box_acc_iou"][k] for k in ("30", "50", "70")] == pytest.approx(gold["acc"], abs=TOL)
    assert result["max_box_acc_v2"] == pytest.approx(float(np.average(gold["acc"])), abs=TOL)
    assert result["max_box_acc"] == pytest.approx(gold["acc"][1], abs=TOL)
    assert "pxap" not in result


def _parse(argv: list[str]):
    import argparse

    from cream_pl.cli.evaluate import add_parser

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["evaluate", *argv, "--out", "unused.json"])


def _prepared(split: dict[str, Path]) -> tuple[np.ndarray, list[torch.Tensor], list[np.ndarray]]:
    meta = read_split_metadata(split["metadata"])
    maps = np.stack([load_scoremap(split["scoremaps"] / f"{i}.npy", i) for i in meta.image_ids])
    gt = [
        resize_boxes_protocol(torch.tensor(meta.boxes[i]), meta.image_sizes[i], (224, 224))
        for i in meta.image_ids
    ]
    masks = [
        load_gt_mask([split["masks"] / p for p in meta.mask_paths[i]], split["masks"] / meta.ignore_paths[i])
        for i in meta.image_ids
    ]
    return maps, gt, masks


@pytest.mark.parametrize("interval", [0.01, 0.001])
@pytest.mark.parametrize("mode", ["largest", "multi"])
def test_metric_curves_match_reference(split: dict[str, Path], interval: float, mode: str) -> None:
    maps, gt, _ = _prepared(split)
    metric = BoxAccuracy((30, 50, 70), multi_contour=mode == "multi", cam_curve_interval=interval)
    for start in range(0, len(gt), 10):  # several batches, odd sizes
        metric.update(torch.from_numpy(maps[start : start + 10]), gt[start : start + 10])
    out = metric.compute()
    gold = GOLDEN[interval][mode]
    assert out["max_box_acc"] == pytest.approx(float(np.average(gold["acc"])), abs=TOL)
    assert [out["max_box_acc_iou"][d] for d in (30, 50, 70)] == pytest.approx(gold["acc"], abs=TOL)
    assert [out["best_threshold_iou"][d] for d in (30, 50, 70)] == pytest.approx(gold["best_thr"], abs=1e-12)
    counts = metric.correct.numpy()
    j = np.arange(counts.shape[1])
    for row, d in zip(counts, (30, 50, 70)):
        assert (int(row.sum()), int((j * row).sum())) == gold["fingerprint"][d]


def test_v1_v2_classes_match_reference(split: dict[str, Path]) -> None:
    maps, gt, _ = _prepared(split)
    v1, v2 = MaxBoxAcc(cam_curve_interval=0.01), MaxBoxAccV2(cam_curve_interval=0.01)
    v1.update(maps, gt)
    v2.update(maps, gt)
    assert v1.compute()["max_box_acc"] == pytest.approx(GOLDEN[0.01]["largest"]["acc"][1], abs=TOL)
    assert v2.compute()["max_box_acc"] == pytest.approx(
        float(np.average(GOLDEN[0.01]["multi"]["acc"])), abs=TOL
    )


@pytest.mark.parametrize("interval", [0.01, 0.001])
def test_pxap_metric_matches_reference(split: dict[str, Path], interval: float) -> None:
    maps, _, masks = _prepared(split)
    metric = PxAP(cam_curve_interval=interval)
    metric.update(torch.from_numpy(maps[:7]), torch.from_numpy(np.stack(masks[:7])))
    metric.update(maps[7:], np.stack(masks[7:]))
    assert float(metric.compute()) == pytest.approx(GOLDEN[interval]["pxap"], abs=TOL)


@pytest.mark.skipif(
    not os.environ.get("WSOLEVAL_REF"), reason="set WSOLEVAL_REF to a patched wsolevaluation checkout"
)
def test_reference_recompute(split: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Recompute the golden numbers with the reference itself (see the module docstring)."""
    monkeypatch.syspath_prepend(os.environ["WSOLEVAL_REF"])
    for name in ("evaluation", "data_loaders", "util", "config", "munch"):  # generic names: import afresh
        monkeypatch.delitem(sys.modules, name, raising=False)
    import evaluation  # type: ignore[import-not-found]
    from data_loaders import configure_metadata  # type: ignore[import-not-found]

    maps, _, _ = _prepared(split)
    meta = configure_metadata(str(split["metadata"]))
    ids = evaluation.get_image_ids(meta)
    thr = list(np.arange(0, 1, 0.01))
    for mode, multi in (("largest", False), ("multi", True)):
        ev = evaluation.BoxEvaluator(
            metadata=meta, dataset_name="CUB", split="test", cam_threshold_list=thr,
            iou_threshold_list=[30, 50, 70], mask_root=None, multi_contour_eval=multi,
        )  # fmt: skip
        for m, i in zip(maps, ids):
            ev.accumulate(m, i)
        assert ev.compute() == pytest.approx(GOLDEN[0.01][mode]["acc"], abs=TOL)
