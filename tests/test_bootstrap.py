"""Paired bootstrap intervals (``cream_pl.metrics.bootstrap``) and the per-image records that feed them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from cream_pl.data import WSOLDataModule, generate_synthetic_dataset
from cream_pl.metrics import MaxBoxAccV2, best_iou_per_threshold, cam_thresholds, prepare_scoremaps
from cream_pl.metrics.bootstrap import (
    accuracy_statistic,
    independent_bootstrap_accuracy,
    max_box_acc_statistic,
    paired_bootstrap_accuracy,
    paired_bootstrap_max_box_acc,
    paired_bootstrap_records,
    resample_counts,
    verdict,
)
from cream_pl.models import WSOLClassifier

os.environ.setdefault("WANDB_MODE", "disabled")


def _random_maps(n: int, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    maps = prepare_scoremaps(torch.rand(n, 6, 6, generator=g), size=size)
    boxes = []
    for _ in range(n):
        x0, y0 = torch.randint(0, size // 2, (2,), generator=g).tolist()
        w, h = torch.randint(4, size // 2, (2,), generator=g).tolist()
        boxes.append(torch.tensor([[x0, y0, min(size - 1, x0 + w), min(size - 1, y0 + h)]]))
    return maps, boxes


def test_identical_methods_give_zero_interval():
    x = np.random.default_rng(0).integers(0, 2, 50)
    r = paired_bootstrap_accuracy(x, x, seed=3)
    assert r["diff"] == 0.0 and r["ci95"] == [0.0, 0.0] and verdict(r) == "no significant difference"
    iou = np.random.default_rng(1).random((40, 20))
    r = paired_bootstrap_max_box_acc(iou, iou, seed=3)
    assert r["diff"] == 0.0 and r["ci95"] == [0.0, 0.0]
    assert r["n_images"] == 40 and r["n_resamples"] == 1000


def test_known_large_gain_excludes_zero_and_loss_is_mirrored():
    rng = np.random.default_rng(0)
    a = rng.random(200) < 0.8
    b = rng.random(200) < 0.3
    r = paired_bootstrap_accuracy(a, b, seed=0)
    assert r["diff"] == pytest.approx(100 * (a.mean() - b.mean()))
    assert r["ci95"][0] > 0 and verdict(r) == "gain"
    assert verdict(paired_bootstrap_accuracy(b, a, seed=0)) == "loss"
    # MaxBoxAccV2: method a's IoUs sit at 0.9 on the best threshold, b's at 0.4
    good = np.full((200, 10), 0.1)
    good[:, 5] = np.where(rng.random(200) < 0.9, 0.9, 0.1)
    bad = np.full((200, 10), 0.1)
    bad[:, 5] = np.where(rng.random(200) < 0.9, 0.4, 0.1)
    r = paired_bootstrap_max_box_acc(good, bad, seed=0)
    assert r["diff"] > 40 and r["ci95"][0] > 0 and verdict(r) == "gain"
    small = paired_bootstrap_accuracy(a[:10], a[:10] ^ (np.arange(10) == 0), seed=0)
    assert verdict(small) == "no significant difference"


def test_independent_groups_resample_each_group_alone():
    usual, unusual = np.r_[np.ones(30), np.zeros(10)], np.r_[np.ones(100), np.zeros(200)]
    r = independent_bootstrap_accuracy(usual, unusual, seed=0)
    assert r["diff"] == pytest.approx(75.0 - 100 / 3) and verdict(r) == "gain"
    assert (r["n_a"], r["n_b"], r["n_images"]) == (40, 300, 340) and r["method"].startswith("independent")
    lo, hi = r["ci95"]
    assert lo < r["diff"] < hi and hi - lo < 40
    assert verdict(independent_bootstrap_accuracy(unusual[:150], unusual[150:], seed=1)) == "gain"  # 100/150 vs 0/150
    same = independent_bootstrap_accuracy(np.r_[np.ones(50), np.zeros(50)], np.r_[np.zeros(50), np.ones(50)])
    assert same["diff"] == 0.0 and verdict(same) == "no significant difference"
    assert independent_bootstrap_accuracy(usual, unusual, seed=3) == independent_bootstrap_accuracy(usual, unusual, seed=3)
    with pytest.raises(ValueError, match="at least one image"):
        independent_bootstrap_accuracy(usual, np.zeros(0))
    with pytest.raises(ValueError, match="at least 1000"):
        independent_bootstrap_accuracy(usual, unusual, n_resamples=10)


def test_seeded_reproducibility_and_argument_checks():
    rng = np.random.default_rng(0)
    a, b = rng.random((30, 8)), rng.random((30, 8))
    r1, r2 = paired_bootstrap_max_box_acc(a, b, seed=7), paired_bootstrap_max_box_acc(a, b, seed=7)
    assert r1 == r2
    assert paired_bootstrap_max_box_acc(a, b, seed=8)["ci95"] != r1["ci95"]
    c = resample_counts(30, 1000, seed=7)
    assert c.shape == (1000, 30) and (c.sum(1) == 30).all()
    with pytest.raises(ValueError, match="same images"):
        paired_bootstrap_accuracy(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="1000"):
        paired_bootstrap_accuracy(np.ones(3), np.ones(3), n_resamples=100)
    with pytest.raises(ValueError, match="0/1"):
        paired_bootstrap_accuracy(np.full(3, 0.5), np.ones(3))


def test_statistic_on_full_sample_equals_the_metric_class_and_resamples_are_reweightings():
    maps, boxes = _random_maps(12)
    metric = MaxBoxAccV2(cam_curve_interval=0.01)
    metric.update(maps, boxes)
    want = float(metric.compute()["max_box_acc"])
    thr = cam_thresholds(0.01)
    best = np.stack([best_iou_per_threshold(m, b, thr, multi_contour=True) for m, b in zip(maps, boxes)])
    assert abs(max_box_acc_statistic(best) - want) < 1e-9
    # a resample is the metric on the drawn images (duplicates included)
    counts = resample_counts(12, 1000, seed=1)[:3]
    for row, value in zip(counts, max_box_acc_statistic(best, counts=counts)):
        drawn = np.repeat(np.arange(12), row)
        m = MaxBoxAccV2(cam_curve_interval=0.01)
        m.update(maps[drawn], [boxes[i] for i in drawn])
        assert abs(value - float(m.compute()["max_box_acc"])) < 1e-9
    # boolean hits (n, n_iou, n_thr) give the same statistic
    hits = np.stack([best >= d / 100 for d in (30, 50, 70)], axis=1)
    assert max_box_acc_statistic(hits) == max_box_acc_statistic(best)


def test_large_bootstrap_is_fast():
    import time

    rng = np.random.default_rng(0)
    a, b = rng.random((1000, 1000)), rng.random((1000, 1000))
    t0 = time.perf_counter()
    paired_bootstrap_max_box_acc(a, b, seed=0)
    assert time.perf_counter() - t0 < 60  # well under 1 s on 2 cores


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    return generate_synthetic_dataset(root, seed=1, num_classes=3, num_train=12, num_val=6, num_test=6,
                                      min_side=72, max_side=96, image_format="png", overwrite=True)


def test_per_image_records_of_the_test_epoch_reproduce_every_metric(tiny_data, tmp_path):
    pl.seed_everything(0)
    dm = WSOLDataModule(str(tiny_data), batch_size=4, resize_size=72, crop_size=64, eval_size=64)
    model = WSOLClassifier(num_classes=3, pretrained=False, cam_curve_interval=0.05, eval_size=64, lr=0.01,
                           record_per_image=True)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         default_root_dir=str(tmp_path))
    trainer.fit(model, dm)
    trainer.test(model, dm, verbose=False)
    assert set(model.per_image) == {"val", "test"}
    res = model.last_results["test"]
    for name in ("cam", "cream"):
        rec = model.per_image["test"][name]
        assert sorted(rec["index"].tolist()) == list(range(6))
        assert rec["best_iou"].shape == (6, len(cam_thresholds(0.05)))
        r = res["methods"][name]
        assert abs(max_box_acc_statistic(rec["best_iou"]) - r["max_box_acc_v2"]) < 1e-9
        for key in ("gt_known", "top1_loc", "top5_loc"):
            assert abs(accuracy_statistic(rec[key]) - r[key]) < 1e-9
        assert abs(accuracy_statistic(rec["top1"]) - res["cls_acc"]) < 1e-5  # the class's sums are float32
    a, b = model.per_image["test"]["cream"], model.per_image["test"]["cam"]
    for metric in ("max_box_acc_v2", "gt_known", "top1_loc", "cls_acc"):
        r = paired_bootstrap_records(a, b, metric, seed=0)
        assert r["n_images"] == 6 and r["ci95"][0] <= r["diff"] <= r["ci95"][1]
    shuffled = {k: (v[::-1] if k != "thresholds" and k != "iou_thresholds" and np.ndim(v) else v) for k, v in b.items()}
    assert paired_bootstrap_records(a, shuffled, "max_box_acc_v2", seed=0) == paired_bootstrap_records(
        a, b, "max_box_acc_v2", seed=0)  # matched by image index, not by order
    assert paired_bootstrap_records(a, a, "cls_acc")["ci95"] == [0.0, 0.0]


def test_record_per_image_can_name_the_methods_it_keeps(tiny_data, tmp_path):
    with pytest.raises(ValueError, match=r"record_per_image names unknown method\(s\) \['nope'\]"):
        WSOLClassifier(num_classes=3, pretrained=False, record_per_image=["cam", "nope"])
    pl.seed_everything(0)
    dm = WSOLDataModule(str(tiny_data), batch_size=4, resize_size=72, crop_size=64, eval_size=64)
    model = WSOLClassifier(num_classes=3, pretrained=False, cam_curve_interval=0.05, eval_size=64,
                           record_per_image=["cream"], ablation_iterations=[1])
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.test(model, dm, verbose=False)
    assert set(model.per_image["test"]) == {"cream"} and len(model.per_image["test"]["cream"]["index"]) == 6
