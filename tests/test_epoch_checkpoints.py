"""``EpochCheckpoints``: a checkpoint and the val numbers after every epoch of a real (tiny) fit."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from cream_pl.callbacks.epoch_checkpoints import EpochCheckpoints, checkpoint_name, read_epoch_record
from cream_pl.core.errors import UserValueError
from cream_pl.data import WSOLDataModule, generate_synthetic_dataset
from cream_pl.models.checkpoints import load_classifier
from cream_pl.models.ci_cam_module import CICAMClassifier

os.environ.setdefault("WANDB_MODE", "disabled")

SIZE = 64


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("epochs")
    return generate_synthetic_dataset(root / "data", seed=2, num_classes=3, num_train=12, num_val=6, num_test=6,
                                      min_side=72, max_side=96, image_format="png", confounded=True)


def _dm(root: Path) -> WSOLDataModule:
    return WSOLDataModule(str(root), batch_size=6, resize_size=72, crop_size=SIZE, eval_size=SIZE)


def _trainer(tmp_path: Path, callbacks: list, **kw) -> pl.Trainer:
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, num_sanity_val_steps=1, default_root_dir=str(tmp_path))
    return pl.Trainer(**{**defaults, **kw}, callbacks=callbacks)


def _model() -> CICAMClassifier:
    return CICAMClassifier(num_classes=3, pretrained=False, cam_curve_interval=0.05, eval_size=SIZE, lr=0.05,
                           train_crop_size=SIZE)


def test_every_epoch_leaves_its_checkpoint_and_the_numbers_it_scored(tiny_data, tmp_path):
    seen: list[dict] = []

    class _Watch(pl.Callback):  # the model's own val results, epoch by epoch
        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                val = pl_module.last_results["val"]
                seen.append({"cls": val["cls_acc"], **val["methods"]["cam"],
                             "pool": pl_module.context_pool.clone(), "tau": pl_module.val_best_threshold.clone()})

    pl.seed_everything(0)
    cb = EpochCheckpoints(tmp_path / "epochs", tmp_path / "epochs.json")
    _trainer(tmp_path, [cb, _Watch()], max_epochs=3).fit(_model(), _dm(tiny_data))
    rows = read_epoch_record(tmp_path / "epochs.json")
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # the sanity check wrote no row
    assert sorted(p.name for p in (tmp_path / "epochs").iterdir()) == [checkpoint_name(e) for e in (1, 2, 3)]
    for row, val in zip(rows, seen):
        assert row["val_cls_acc"] == pytest.approx(val["cls"])
        for key in ("gt_known", "top1_loc", "max_box_acc_v2", "loc_threshold"):
            assert row[f"val_{key}"] == pytest.approx(val[key])
        assert row["method"] == "cam" and Path(row["checkpoint"]).name == checkpoint_name(row["epoch"])
    assert rows[0]["step"] < rows[1]["step"] < rows[2]["step"]
    # each file holds that epoch's model: its pool and the τ* its validation chose (so a teacher tests at its own τ*)
    for epoch in (1, 3):
        ckpt = torch.load(tmp_path / "epochs" / checkpoint_name(epoch), map_location="cpu", weights_only=False)
        assert "optimizer_states" not in ckpt  # weights only: candidates, not resume points
        loaded = load_classifier(tmp_path / "epochs" / checkpoint_name(epoch))
        assert isinstance(loaded, CICAMClassifier)
        torch.testing.assert_close(loaded.context_pool, seen[epoch - 1]["pool"])
        torch.testing.assert_close(loaded.val_best_threshold, seen[epoch - 1]["tau"])
    assert not torch.equal(seen[0]["pool"], seen[2]["pool"])
    # a fit that starts over rewrites the record from epoch 1
    _trainer(tmp_path, [EpochCheckpoints(tmp_path / "epochs", tmp_path / "epochs.json")], max_epochs=1).fit(
        _model(), _dm(tiny_data))
    assert [r["epoch"] for r in read_epoch_record(tmp_path / "epochs.json")] == [1]


def test_bad_method_and_bad_record_fail_in_one_line(tiny_data, tmp_path):
    cb = EpochCheckpoints(tmp_path / "e", method="ccam")  # not evaluated by this model
    with pytest.raises(UserValueError, match="method 'ccam' is not in the val results"):
        _trainer(tmp_path, [cb], max_epochs=1, num_sanity_val_steps=0).fit(_model(), _dm(tiny_data))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"epoch": 1}))
    with pytest.raises(UserValueError, match="not an epoch record"):
        read_epoch_record(bad)
    assert read_epoch_record(tmp_path / "missing.json") == []
