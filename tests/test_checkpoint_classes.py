"""CI-CAM and KD-CI-CAM checkpoints work wherever a classifier checkpoint is accepted."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from cream_pl.cli import main as cli_main
from cream_pl.data import WSOLDataModule, generate_synthetic_dataset
from cream_pl.models import WSOLClassifier
from cream_pl.models.checkpoints import CLASS_KEY, classifier_class_name, load_classifier
from cream_pl.models.ci_cam_module import CICAMClassifier
from cream_pl.models.kd_student import KDCICAMStudent
from cream_pl.models.regressor import BoxRegressor
from cream_pl.pipelines.localize import localize

os.environ.setdefault("WANDB_MODE", "disabled")

SIZE = 64


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic_dataset(tmp_path_factory.mktemp("ckpt_synth"), seed=2, num_classes=3, num_train=6,
                                      num_val=3, num_test=3, min_side=72, max_side=80, image_format="png",
                                      overwrite=True)


def _fit_and_save(model: pl.LightningModule, data: Path, path: Path) -> Path:
    dm = WSOLDataModule(str(data), batch_size=3, resize_size=72, crop_size=SIZE, eval_size=SIZE)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         default_root_dir=str(path.parent))
    trainer.fit(model, dm)
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def checkpoints(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("ckpts")
    common = dict(num_classes=3, pretrained=False, eval_size=SIZE, cam_curve_interval=0.05)
    pl.seed_everything(0)
    return {
        "ci_cam": _fit_and_save(CICAMClassifier(train_crop_size=SIZE, **common), data, out / "ci_cam.ckpt"),
        "kd": _fit_and_save(KDCICAMStudent(kd_routing="none", kd_alpha=0.0, train_crop_size=SIZE, **common),
                            data, out / "kd.ckpt"),
    }


def test_load_classifier_restores_the_writing_class(checkpoints: dict[str, Path]) -> None:
    ci = load_classifier(checkpoints["ci_cam"])
    assert type(ci) is CICAMClassifier and not ci.training
    assert float(ci.context_pool.abs().sum()) >= 0.0
    kd = load_classifier(checkpoints["kd"])
    assert type(kd) is KDCICAMStudent
    state = torch.load(checkpoints["ci_cam"], weights_only=False)
    assert state[CLASS_KEY] == "cream_pl.models.ci_cam_module.CICAMClassifier"
    del state[CLASS_KEY]  # a checkpoint of an older cream-pl: recognised by its keys
    assert classifier_class_name(state) == "cream_pl.models.ci_cam_module.CICAMClassifier"
    # the plain class cannot read it: what every tool used to do
    with pytest.raises(RuntimeError, match="ci_head"):
        WSOLClassifier.load_from_checkpoint(checkpoints["ci_cam"], map_location="cpu", pretrained=False)


def test_load_classifier_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.ckpt: checkpoint not found"):
        load_classifier(tmp_path / "nope.ckpt")
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.ckpt: not a readable PyTorch checkpoint"):
        load_classifier(bad)


@pytest.mark.parametrize("kind", ["ci_cam", "kd"])
def test_pseudo_boxes_localize_and_regressor_accept_ci_cam_checkpoints(
    kind: str, checkpoints: dict[str, Path], data: Path, tmp_path: Path
) -> None:
    ckpt = checkpoints[kind]
    out = tmp_path / "boxes.json"
    rc = cli_main(["pseudo-boxes", "--ckpt", str(ckpt), "--data", str(data), "--out", str(out), "--threshold", "0.3",
                   "--input-size", str(SIZE), "--batch-size", "3", "--num-workers", "0", "--accelerator", "cpu",
                   "--devices", "1"])
    assert rc == 0
    assert len(json.loads(out.read_text())["annotations"]) == 6

    img = tmp_path / "photo.png"
    cv2.imwrite(str(img), np.full((70, 90, 3), 120, np.uint8))
    res = localize(ckpt, [img], tmp_path / "pred", threshold=0.5, device="cpu")
    assert len(res["annotations"]) == 1

    reg = BoxRegressor(backbone="efficientnet_lite0", pretrained=False, classifier_ckpt=str(ckpt))
    reg.setup("fit")
    assert type(reg.classifier) is type(load_classifier(ckpt))


@pytest.mark.parametrize("command", ["pseudo-boxes", "train-regressor"])
def test_bad_out_ends_in_one_line_before_any_work(command: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    missing = tmp_path / "no_such.ckpt"  # never read: the --out check comes first
    if command == "pseudo-boxes":
        argv = ["pseudo-boxes", "--ckpt", str(missing), "--data", str(tmp_path), "--out", str(tmp_path)]
        words = "must be a file path, but it is an existing folder"
    else:
        argv = ["train-regressor", "--pseudo-boxes", str(missing), "--data", str(tmp_path), "--out",
                str(a_file / "sub"), "--classifier-ckpt", str(missing)]
        words = f"{a_file} is a file"
    proc = subprocess.run([sys.executable, "-m", "cream_pl.cli", *argv], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in proc.stderr, proc.stderr
