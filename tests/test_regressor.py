"""CREAM_reg box regressor: box-aware augmentation, training on pseudo boxes, Loc metrics, bad files."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from cream_reg_fixtures import CLASS_NAMES, write_tiny_dataset
from torch import nn

from cream_pl.data.datamodule import WSOLDataModule
from cream_pl.data.metadata import read_split
from cream_pl.data.pseudo_box_format import (
    PseudoBoxDataset,
    PseudoBoxFileError,
    build_box_train_transform,
    load_dataset_pseudo_boxes,
)
from cream_pl.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from cream_pl.models.backbones.efficientnet_lite0 import EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD
from cream_pl.models.regressor import BoxRegressor, localization_hits, predicted_boxes_inclusive
from cream_pl.pipelines.regressor_train import CURVE_FILE, METRICS_FILE, train_regressor

os.environ.setdefault("WANDB_MODE", "disabled")

TRAINER = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False, "enable_model_summary": False}


def _white_box(image: torch.Tensor) -> tuple[int, int, int, int]:
    """Exclusive ``XYXY`` box of the bright pixels of a normalised (3, H, W) image."""
    raw = image * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
    ys, xs = torch.nonzero(raw.mean(0) > 0.5, as_tuple=True)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


# ---------------------------------------------------------------------------------------------- augmentation


def test_box_aware_augmentation_keeps_the_box_on_the_object() -> None:
    img = np.zeros((90, 160, 3), np.uint8)
    img[20:50, 100:140] = 255  # object: exclusive box (100, 20, 140, 50), right half of the image
    transform = build_box_train_transform(48)
    transform.set_random_seed(0)
    flipped = 0
    for _ in range(20):
        out = transform(image=img, bboxes=np.array([[100.0, 20.0, 140.0, 50.0]], np.float32), box_labels=[0])
        (box,) = out["bboxes"]
        white = _white_box(out["image"])
        assert np.allclose(box, white, atol=1.5), (box, white)  # interpolation blurs edges by < 1.5 px
        flipped += box[0] < 48 - box[2]  # the object moved to the left half
    assert 0 < flipped < 20  # the flip happens, but not always


def test_pseudo_box_dataset_target_is_normalised_xywh_of_the_object(tmp_path: Path) -> None:
    root = write_tiny_dataset(tmp_path, {"train": [((120, 60), (30, 10, 89, 39), 1)]})
    records = load_dataset_pseudo_boxes(_write_gt_coco(root), root)
    ds = PseudoBoxDataset(records, root / "images", build_box_train_transform(64, hflip_p=0.0))
    for _ in range(5):
        sample = ds[0]
        x, y, w, h = sample["target"].tolist()
        x0, y0, x1, y1 = _white_box(sample["image"])
        assert [x * 64, y * 64, (x + w) * 64, (y + h) * 64] == pytest.approx([x0, y0, x1, y1], abs=1.5)
        assert sample["label"].item() == 1 and sample["image_id"] == records[0].image_id


# ---------------------------------------------------------------------------------------------- box math


def test_predicted_boxes_inclusive_and_hits_hand_computed() -> None:
    pred = torch.tensor([[0.25, 0.5, 0.5, 0.25], [0.9, 0.9, 0.5, 0.5]])
    boxes = predicted_boxes_inclusive(pred, (64, 32))
    # [16, 16) + 32 x 8 -> inclusive 16..47 x 16..23; second box clipped at the image: 57.6..63 x 28.8..31
    assert boxes[0].tolist() == [16.0, 16.0, 47.0, 23.0]
    assert boxes[1].tolist() == pytest.approx([57.6, 28.8, 63.0, 31.0])
    # GT 16..47 x 16..31 (32 x 16): first box IoU 256 / 512 = 0.5 (a hit: >=), second box no overlap
    ious, hit = localization_hits(boxes, [torch.tensor([[16, 16, 47, 31]]), torch.tensor([[0, 0, 9, 9]])])
    assert ious.tolist() == pytest.approx([0.5, 0.0]) and hit.tolist() == [True, False]


# ---------------------------------------------------------------------------------------------- model


def test_regressor_renormalises_batches_to_the_backbone_statistics() -> None:
    torch.manual_seed(0)
    raw = torch.rand(2, 3, 32, 32)
    imagenet = BoxRegressor(pretrained=False).eval()  # data normalised with ImageNet mean / std
    native = BoxRegressor(pretrained=False, data_mean=EFFICIENTNET_LITE_MEAN, data_std=EFFICIENTNET_LITE_STD).eval()
    native.load_state_dict(imagenet.state_dict())
    assert imagenet._renormalise and not native._renormalise

    def norm(mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
        return (raw - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]

    with torch.no_grad():
        a = imagenet(norm(IMAGENET_MEAN, IMAGENET_STD))
        b = native(norm(EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD))
    assert torch.allclose(a, b, atol=1e-5)


def test_freeze_backbone_freezes_matching_parameters_and_their_batch_norm() -> None:
    model = BoxRegressor(pretrained=False, freeze_backbone=r"^(_conv_stem|_bn0)\.")
    assert not model.backbone._conv_stem.weight.requires_grad and not model.backbone._bn0.weight.requires_grad
    model.train()
    assert not model.backbone._bn0.training and model.head.training
    optimised = {id(p) for g in model.configure_optimizers()["optimizer"].param_groups for p in g["params"]}
    assert id(model.backbone._conv_stem.weight) not in optimised and id(model.head[0].weight) in optimised
    with pytest.raises(ValueError, match="matches no parameter"):
        BoxRegressor(pretrained=False, freeze_backbone=r"^nothing_like_this")
    with pytest.raises(ValueError, match="not a valid regular expression"):
        BoxRegressor(pretrained=False, freeze_backbone=r"(")


# ---------------------------------------------------------------------------------------------- training


def _write_gt_coco(root: Path, split: str = "train") -> Path:
    """A pseudo-box file whose boxes are the true boxes (COCO [x, y, w, h] of the inclusive box)."""
    meta = read_split(root / "metadata" / split)
    coco = {
        "images": [{"id": i, "file_name": s.image_id, "width": s.size[0], "height": s.size[1]}
                   for i, s in enumerate(meta.samples)],
        "categories": [{"id": c, "name": n} for c, n in enumerate(CLASS_NAMES)],
        "annotations": [{"id": i, "image_id": i, "category_id": s.label,
                         "bbox": [s.boxes[0][0], s.boxes[0][1], s.boxes[0][2] - s.boxes[0][0] + 1,
                                  s.boxes[0][3] - s.boxes[0][1] + 1]} for i, s in enumerate(meta.samples)],
    }
    path = root / f"{split}_boxes.json"
    path.write_text(json.dumps(coco))
    return path


def _left_half_specs(n: int) -> list[tuple[tuple[int, int], tuple[int, int, int, int], int]]:
    sizes = [(64, 64), (96, 48), (48, 80)]
    items = []
    for i in range(n):
        w, h = sizes[i % 3]
        items.append(((w, h), (0, 0, w // 2 - 1, h - 1), i % 2))  # object = left half of the image
    return items


@pytest.fixture(scope="module")
def left_half_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    items = _left_half_specs(8)
    return write_tiny_dataset(tmp_path_factory.mktemp("left"), {"train": items, "val": items[:4], "test": items[:6]})


class _AlwaysClassZero(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2))  # must stay out of the regressor's checkpoint

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.tensor([[2.0, 1.0]]).expand(len(images), 2)


def test_loc_metrics_combine_the_classifier_class_with_the_regressor_box(left_half_root: Path) -> None:
    model = BoxRegressor(backbone="efficientnet_lite0", pretrained=False)
    with torch.no_grad():  # predict the left half (0, 0, 0.5, 1) for every image
        last = model.head[2]
        last.weight.zero_()
        last.bias.copy_(torch.logit(torch.tensor([1e-6, 1e-6, 0.5, 1 - 1e-6])))
    model.set_classifier(_AlwaysClassZero())
    dm = WSOLDataModule(str(left_half_root), batch_size=4, eval_size=64)
    (res,) = pl.Trainer(logger=False, **TRAINER).test(model, datamodule=dm, verbose=False)
    # test split: 6 images, labels 0,1,0,1,0,1; every box right (IoU ~ 1); class 0 always predicted
    assert res["test/reg/gt_known"] == pytest.approx(100.0)
    assert res["test/reg/cls_acc"] == pytest.approx(50.0)
    assert res["test/reg/top1_loc"] == pytest.approx(50.0)
    assert res["test/reg/top5_loc"] == pytest.approx(100.0)  # 2 classes: the GT class is always in the top 5
    assert res["test/reg/mean_iou"] > 0.95
    # the per-image record the paired intervals use: same images, same outcomes as the logged means
    rec = model.per_image["test"]
    assert sorted(rec["index"].tolist()) == list(range(6))
    assert rec["gt_known"].all() and rec["top1"].tolist() == (rec["index"] % 2 == 0).tolist()
    assert 100 * rec["top1_loc"].mean() == pytest.approx(res["test/reg/top1_loc"])
    # without a classifier only the class-agnostic numbers are reported
    model.set_classifier(None)
    (res,) = pl.Trainer(logger=False, **TRAINER).test(model, datamodule=dm, verbose=False)
    assert "test/reg/top1_loc" not in res and res["test/reg/gt_known"] == pytest.approx(100.0)


def test_train_regressor_fits_on_cpu_and_reports_loc_metrics(left_half_root: Path, tmp_path: Path) -> None:
    boxes = _write_gt_coco(left_half_root)
    model_seen: dict[str, Any] = {}

    class Spy(pl.Callback):
        def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                               batch: Any, batch_idx: int) -> None:
            model_seen.setdefault("losses", []).append(float(outputs["loss"]))
            model_seen["target_shape"] = tuple(batch["target"].shape)

    metrics = train_regressor(
        boxes, left_half_root, tmp_path / "reg", pretrained=False, max_epochs=1, batch_size=4,
        classifier_ckpt=_AlwaysClassZero(), input_size=64, eval_size=64, optimizer="adamw", lr=1e-3,
        mean=EFFICIENTNET_LITE_MEAN, std=EFFICIENTNET_LITE_STD, regressor_kwargs={"freeze_backbone": r"^_conv_stem"},
        trainer_kwargs={**TRAINER, "num_sanity_val_steps": 0}, callbacks=[Spy()],
    )
    assert len(model_seen["losses"]) == 2 and all(math.isfinite(v) for v in model_seen["losses"])
    assert model_seen["target_shape"] == (4, 4)
    for key in ("test/reg/gt_known", "test/reg/top1_loc", "test/reg/top5_loc", "test/reg/cls_acc"):
        assert 0.0 <= metrics[key] <= 100.0
    assert metrics["test/reg/cls_acc"] == pytest.approx(50.0)
    assert json.loads((tmp_path / "reg" / METRICS_FILE).read_text()) == pytest.approx(metrics)
    ckpt = tmp_path / "reg" / "checkpoints" / "last.ckpt"
    assert not any(k.startswith("_classifier") for k in torch.load(ckpt, weights_only=False)["state_dict"])
    restored = BoxRegressor.load_from_checkpoint(ckpt)
    assert restored.hparams.backbone == "efficientnet_lite0" and restored.classifier is None
    assert tuple(restored.hparams.data_mean) == EFFICIENTNET_LITE_MEAN and not restored._renormalise
    assert not restored.backbone._conv_stem.weight.requires_grad


def test_relative_box_iou_hand_computed() -> None:
    from cream_pl.models.regressor import relative_box_iou

    pred = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.2, 0.2], [0.1, 0.1, 0.4, 0.4]])
    target = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.4, 0.4]])
    # overlap 0.25 x 0.25 = 1/16 over 2 x 1/4 - 1/16 = 7/16 -> 1/7; disjoint -> 0; identical -> 1
    assert relative_box_iou(pred, target).tolist() == pytest.approx([1 / 7, 0.0, 1.0])


def test_train_regressor_stops_at_the_plateau_and_keeps_its_curve_and_per_image_test(left_half_root: Path,
                                                                                   tmp_path: Path) -> None:

    from cream_pl.pipelines.regressor_train import CURVE_FILE, PER_IMAGE_FILE, RECORD_METHOD
    from cream_pl.reporting.evidence import load_records

    boxes = _write_gt_coco(left_half_root)
    metrics = train_regressor(
        boxes, left_half_root, tmp_path / "reg", pretrained=False, max_epochs=6, batch_size=4, input_size=64,
        eval_size=64, optimizer="adamw", lr=1e-3, trainer_kwargs={**TRAINER, "num_sanity_val_steps": 0},
        plateau=(10.0, 1),  # no epoch can gain 10 IoU: stop one epoch after the first
    )
    curve = json.loads((tmp_path / "reg" / CURVE_FILE).read_text())
    assert curve["epochs"] == 2 == len(curve["train_pseudo_iou"]) and curve["max_epochs"] == 6
    assert all(0.0 <= v <= 1.0 for v in curve["train_pseudo_iou"])
    assert metrics["train/reg/pseudo_iou"] == pytest.approx(curve["train_pseudo_iou"][-1])
    z = load_records(tmp_path / "reg" / PER_IMAGE_FILE)[RECORD_METHOD]  # the one record layout of every demo
    assert sorted(z["index"].tolist()) == list(range(6))
    assert 100 * z["gt_known"].mean() == pytest.approx(metrics["test/reg/gt_known"])


def test_a_rerun_into_the_same_out_replaces_last_ckpt(left_half_root: Path, tmp_path: Path) -> None:
    """Before: the rerun's weights went to last-v1.ckpt beside the first run's last.ckpt, which localize --regressor
    and the demo's candidates then read."""
    import torch

    boxes = _write_gt_coco(left_half_root)
    last = tmp_path / "reg" / "checkpoints" / "last.ckpt"
    weights = []
    for seed in (0, 7):
        train_regressor(boxes, left_half_root, tmp_path / "reg", pretrained=False, max_epochs=1, batch_size=4,
                        input_size=64, eval_size=64, seed=seed, trainer_kwargs={**TRAINER, "num_sanity_val_steps": 0})
        weights.append(torch.load(last, map_location="cpu", weights_only=False)["state_dict"])
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # the second run's model


def test_a_rerun_cut_short_keeps_the_earlier_checkpoint_beside_its_own_metrics(left_half_root: Path,
                                                                               tmp_path: Path) -> None:
    """Before: a rerun stopped after its fit (SIGTERM, Ctrl-C) left its own last.ckpt beside the earlier run's
    regressor_metrics.json, per-image records and curve, read as one finished run."""
    import torch

    from cream_pl.core.interrupts import Terminated

    class StopAtFitEnd(pl.Callback):
        def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            raise Terminated()

    boxes, out = _write_gt_coco(left_half_root), tmp_path / "reg"
    kw = dict(pretrained=False, max_epochs=1, batch_size=4, input_size=64, eval_size=64,
              trainer_kwargs={**TRAINER, "num_sanity_val_steps": 0})
    train_regressor(boxes, left_half_root, out, seed=0, **kw)
    first = {p.name: p.read_bytes() for p in (out / "regressor_metrics.json", out / "checkpoints" / "last.ckpt")}
    with pytest.raises(Terminated):
        train_regressor(boxes, left_half_root, out, seed=7, callbacks=[StopAtFitEnd()], **kw)
    assert {p.name: p.read_bytes() for p in (out / "regressor_metrics.json", out / "checkpoints" / "last.ckpt")} == first
    assert (out / ".checkpoints.partial" / "last.ckpt").is_file()  # the cut run's, apart
    metrics = train_regressor(boxes, left_half_root, out, seed=7, **kw)
    assert not (out / ".checkpoints.partial").exists() and "test/reg/gt_known" in metrics
    assert (out / "checkpoints" / "last.ckpt").read_bytes() != first["last.ckpt"]
    assert torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


class _StopAtSecondEpoch(pl.Callback):
    """Stops a fit as SIGTERM would, once its first epoch (and that epoch's checkpoint) is done."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from cream_pl.core.interrupts import Terminated

        if trainer.current_epoch == 1:
            raise Terminated()


class _Epochs(pl.Callback):
    """The epochs a fit trains."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seen.append(trainer.current_epoch)


@pytest.mark.parametrize("features", ["finetune", "classifier"])
def test_a_cut_fit_resumes_from_its_last_epoch_to_the_uncut_fits_weights(left_half_root: Path, tmp_path: Path,
                                                                          features: str) -> None:
    """Before: a rerun after Ctrl-C or SIGTERM trained every epoch again (hours on ILSVRC). Now the same inputs resume
    from the cut fit's last epoch, with the random generators of that moment, and end where the uncut fit ends."""
    import torch

    from cream_pl.core.interrupts import Terminated
    from cream_pl.models.classifier import WSOLClassifier

    boxes = _write_gt_coco(left_half_root)
    torch.manual_seed(0)
    classifier = WSOLClassifier(num_classes=2, pretrained=False, cream=False) if features == "classifier" else None
    kw: dict[str, Any] = dict(pretrained=False, max_epochs=2, batch_size=4, input_size=64, eval_size=64, seed=3,
                              features=features, classifier_ckpt=classifier,
                              trainer_kwargs={**TRAINER, "num_sanity_val_steps": 0})
    train_regressor(boxes, left_half_root, tmp_path / "uncut", **kw)
    uncut = torch.load(tmp_path / "uncut" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    out = tmp_path / "cut"
    with pytest.raises(Terminated):
        train_regressor(boxes, left_half_root, out, callbacks=[_StopAtSecondEpoch()], **kw)
    assert (out / ".checkpoints.partial" / "last.ckpt").is_file() and not (out / "checkpoints").exists()
    epochs = _Epochs()
    metrics = train_regressor(boxes, left_half_root, out, callbacks=[epochs], **kw)
    assert epochs.seen == [1]  # the first epoch was not trained again
    resumed = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert uncut["state_dict"].keys() == resumed["state_dict"].keys()
    for key, value in uncut["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    assert json.loads((out / CURVE_FILE).read_text()) == json.loads((tmp_path / "uncut" / CURVE_FILE).read_text())
    assert metrics == json.loads((tmp_path / "uncut" / METRICS_FILE).read_text())
    assert not (out / ".checkpoints.partial").exists()


def test_a_cut_fit_of_other_inputs_starts_over(left_half_root: Path, tmp_path: Path, capsys) -> None:
    from cream_pl.core.interrupts import Terminated

    boxes, out = _write_gt_coco(left_half_root), tmp_path / "reg"
    kw: dict[str, Any] = dict(pretrained=False, max_epochs=2, batch_size=4, input_size=64, eval_size=64,
                              trainer_kwargs={**TRAINER, "num_sanity_val_steps": 0})
    with pytest.raises(Terminated):
        train_regressor(boxes, left_half_root, out, seed=0, callbacks=[_StopAtSecondEpoch()], **kw)
    from cream_pl.core.errors import UserValueError

    with pytest.raises(UserValueError, match=r"holds the regressor fit cut short at .*inputs differ: seed\); run it "
                       "as before to resume it, or --overwrite"):  # the command line's rule: never discarded unasked
        train_regressor(boxes, left_half_root, out, seed=1, keep_cut_fit=True, **kw)
    assert (out / ".checkpoints.partial" / "last.ckpt").is_file()
    epochs = _Epochs()
    train_regressor(boxes, left_half_root, out, seed=1, callbacks=[epochs], **kw)  # another seed: another fit
    assert epochs.seen == [0, 1] and "discarding the regressor fit cut short at" in capsys.readouterr().err  # said
    assert json.loads((out / CURVE_FILE).read_text())["epochs"] == 2


@pytest.mark.parametrize("case", ["unknown_image", "box_outside", "wrong_categories", "truncated"])
def test_bad_pseudo_box_file_is_refused_before_training(left_half_root: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    coco = json.loads(_write_gt_coco(left_half_root).read_text())
    if case == "unknown_image":
        coco["annotations"][0]["image_id"] = 42
    elif case == "box_outside":
        coco["annotations"][0]["bbox"] = [10, 10, 80, 10]  # image 0 is 64 wide
    elif case == "wrong_categories":
        coco["categories"] = coco["categories"][:1]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(coco)[: -25 if case == "truncated" else None])
    started: list[str] = []
    monkeypatch.setattr(pl.Trainer, "__init__", lambda *a, **k: started.append("trainer"))
    monkeypatch.setattr(pl.Trainer, "fit", lambda *a, **k: started.append("fit"))
    expected = {"unknown_image": "unknown image id 42", "box_outside": "extends past the 64x64 image",
                "wrong_categories": "expected ids 0..1", "truncated": "invalid JSON"}[case]
    with pytest.raises(PseudoBoxFileError, match=expected):
        train_regressor(path, left_half_root, tmp_path / "reg", pretrained=False, trainer_kwargs=TRAINER)
    assert started == []


def test_psol_crop_keeps_a_clipped_box_and_draws_areas_in_its_scale() -> None:
    import numpy as np

    from cream_pl.data.transforms import RandomResizedBoxCrop, build_box_train_transform

    crop = RandomResizedBoxCrop(32, scale=(0.2, 1.0))
    crop.set_random_seed(0)
    areas = []
    for _ in range(300):
        p = crop.get_params_dependent_on_data({"shape": (100, 200)}, {"bboxes": np.array([[0.75, 0.1, 0.95, 0.4]])})
        x0, y0, x1, y1 = p["crop_coords"]
        areas.append((x1 - x0) * (y1 - y0) / 20000)
        assert min(x1, 190) - max(x0, 150) >= 1 and min(y1, 40) - max(y0, 10) >= 1  # overlaps the box
    assert 0.19 <= min(areas) and max(areas) <= 1.0 and min(areas) < 0.5  # PSOL's (0.2, 1) area range, some cut
    t = build_box_train_transform(32, crop="psol", hflip_p=0.0)
    t.set_random_seed(1)
    for _ in range(50):
        out = t(image=np.zeros((100, 200, 3), np.uint8), bboxes=[(150, 10, 190, 40)], box_labels=[0])
        (bx0, by0, bx1, by1), = out["bboxes"]
        assert 0 <= bx0 < bx1 <= 32 and 0 <= by0 < by1 <= 32  # clipped to the crop, never dropped
