"""Correctness fixes: float32 maps under mixed precision, exact pseudo-box widths, λ = 0 update, head init."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from cream_pl.metrics.functional import box_from_scoremap_at, pixel_box_from_scoremap_at
from cream_pl.models import WSOLClassifier
from cream_pl.models.ci_cam_module import CICAMClassifier
from cream_pl.models.cream import momentum_update
from cream_pl.pipelines.localize import grid_box_to_original
from cream_pl.pseudo_boxes.generate import PseudoBoxWriter

os.environ.setdefault("WANDB_MODE", "disabled")


def _feats(seed: int = 0, b: int = 3, k: int = 1280, h: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, k, h, h, generator=g) * 3.0


def _trained_like(model: WSOLClassifier) -> WSOLClassifier:
    """Embeddings and head with values of a trained model's scale (random init is too tame to show bf16 error)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.classifier.weight.copy_(torch.randn(model.classifier.weight.shape, generator=g) * 0.05)
        assert model.context is not None
        model.context.fg.copy_(torch.rand(model.context.fg.shape, generator=g) * 3.0)
        model.context.bg.copy_(torch.rand(model.context.bg.shape, generator=g) * 3.0)
    return model.eval()


# ---------------------------------------------------------------------------------------------- mixed precision


@pytest.mark.parametrize("cls", [WSOLClassifier, CICAMClassifier], ids=["cam_cream", "ci_cam"])
def test_maps_under_bf16_autocast_equal_float32_maps(cls: type) -> None:
    kw = {"train_crop_size": 64} if cls is CICAMClassifier else {}
    model = _trained_like(cls(num_classes=4, pretrained=False, **kw))
    feats, labels = _feats(), torch.tensor([0, 2, 3])
    ref = model.method_maps(feats, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model.method_maps(feats.bfloat16().float(), labels)  # features as bf16 training hands them over
        raw = model.method_maps(feats, labels)
    ref_q = model.method_maps(feats.bfloat16().float(), labels)
    for name in ref:
        assert raw[name].dtype == torch.float32
        torch.testing.assert_close(raw[name], ref[name], rtol=0, atol=1e-6)
        torch.testing.assert_close(mixed[name], ref_q[name], rtol=0, atol=1e-6)


def test_context_update_under_bf16_autocast_equals_float32() -> None:
    feats, labels = _feats(2, b=4), torch.tensor([0, 1, 1, 3])
    a = _trained_like(WSOLClassifier(num_classes=4, pretrained=False))
    b = _trained_like(WSOLClassifier(num_classes=4, pretrained=False))
    a._update_context(feats, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        b._update_context(feats, labels)
    torch.testing.assert_close(b.context.fg, a.context.fg, rtol=0, atol=1e-6)
    torch.testing.assert_close(b.context.bg, a.context.bg, rtol=0, atol=1e-6)


def test_ci_cam_pool_update_under_bf16_autocast_equals_float32() -> None:
    feats = _feats(3, b=4, h=4)
    models = [CICAMClassifier(num_classes=4, pretrained=False, train_crop_size=64, pool_rate=0.5) for _ in range(2)]
    for m in models:
        _trained_like(m)
    logits = models[0].classifier(feats.mean((2, 3)))
    labels = logits.argmax(1)  # correct predictions feed the pool
    models[0]._update_pool(feats, labels, logits)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        models[1]._update_pool(feats, labels, logits)
    assert models[0].context_pool.abs().sum() > 0
    torch.testing.assert_close(models[1].context_pool, models[0].context_pool, rtol=0, atol=1e-6)


class _RecordingClassifier(WSOLClassifier):
    """Keeps the features of each predict step, to recompute their maps in float32 outside the trainer."""

    def predict_step(self, batch, batch_idx, dataloader_idx=0):  # type: ignore[override]
        feats, _ = self.forward_features(batch["image"])
        self.recorded.append((feats.detach().float(), batch["label"]))
        return super().predict_step(batch, batch_idx, dataloader_idx)


def test_bf16_mixed_trainer_predicts_the_float32_maps_of_its_features(tmp_path: Path) -> None:
    from cream_pl.data import WSOLDataModule, generate_synthetic_dataset
    from cream_pl.metrics.functional import prepare_scoremaps

    root = generate_synthetic_dataset(tmp_path / "d", seed=3, num_classes=3, num_train=4, num_val=2, num_test=2,
                                      min_side=72, max_side=80, image_format="png", overwrite=True)
    model = _trained_like(_RecordingClassifier(num_classes=3, pretrained=False, eval_size=64))
    model.recorded = []
    dm = WSOLDataModule(str(root), batch_size=4, eval_size=64, predict_split="train")
    trainer = pl.Trainer(accelerator="cpu", devices=1, precision="bf16-mixed", logger=False,
                         enable_progress_bar=False, enable_model_summary=False)
    out = trainer.predict(model, dm)
    feats, labels = model.recorded[0]
    with torch.inference_mode():
        ref = model.method_maps(feats, labels, ["cam", "cream"])  # outside autocast, float32
    for name in ("cam", "cream"):
        expected = prepare_scoremaps(ref[name], size=64)
        torch.testing.assert_close(out[0]["scoremaps"][name], expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------- pseudo-box widths


def _block_map(x0: int = 60, x1: int = 119, y0: int = 30, y1: int = 99, size: int = 224) -> np.ndarray:
    s = np.zeros((size, size))
    s[y0 : y1 + 1, x0 : x1 + 1] = 1.0
    return s


def test_pixel_box_is_first_to_last_pixel_while_the_protocol_box_is_one_past() -> None:
    s = _block_map()
    assert pixel_box_from_scoremap_at(s, 0.5).tolist() == [60, 30, 119, 99]
    assert box_from_scoremap_at(s, 0.5).tolist() == [60, 30, 120, 100]  # the benchmark's box, kept for scoring
    edge = _block_map(x0=200, x1=223, y0=0, y1=223)
    assert pixel_box_from_scoremap_at(edge, 0.5).tolist() == [200, 0, 223, 223]
    assert pixel_box_from_scoremap_at(np.zeros((8, 8)), 0.5).tolist() == [0, 0, 0, 0]
    two = _block_map(x0=10, x1=19, y0=10, y1=19)
    two[100:120, 150:200] = 1.0
    assert pixel_box_from_scoremap_at(two, 0.5, multi_contour=True).tolist() == [10, 10, 199, 119]


def test_pseudo_box_of_a_block_over_columns_60_to_119_has_width_60(tmp_path: Path) -> None:
    writer = PseudoBoxWriter(tmp_path / "boxes.json", source="cream", threshold=0.5, categories=["a", "b"])
    prediction = {
        "scoremaps": {"cream": torch.from_numpy(_block_map())[None]},
        "index": torch.tensor([0]),
        "orig_size": torch.tensor([[224, 224]]),
        "label": torch.tensor([1]),
        "logits": torch.tensor([[0.0, 1.0]]),
        "image_id": ["x.png"],
    }
    rec = writer.records_from_prediction(prediction)[0]
    assert rec["bbox"] == [60.0, 30.0, 60.0, 70.0]
    # the same block of a 448 x 112 original: twice as wide, half as tall
    prediction["orig_size"] = torch.tensor([[448, 112]])
    assert writer.records_from_prediction(prediction)[0]["bbox"] == [120.0, 15.0, 120.0, 35.0]


def test_localize_box_of_a_block_over_columns_60_to_119_has_width_60() -> None:
    box = pixel_box_from_scoremap_at(_block_map(), 0.5)
    assert grid_box_to_original(box, 224, (224, 224)) == [60.0, 30.0, 60.0, 70.0]


# ---------------------------------------------------------------------------------------------- embeddings


def test_momentum_update_lambda_zero_with_only_invalid_samples_keeps_the_class_finite() -> None:
    e = torch.arange(6, dtype=torch.float32).reshape(3, 2)
    ids = torch.tensor([0, 1, 1])
    vals = torch.tensor([[9.0, 9.0], [5.0, 5.0], [7.0, 7.0]])
    out = momentum_update(e, ids, vals, 0.0, valid=torch.tensor([False, True, True]))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], e[0])  # class 0: only an invalid sample -> unchanged
    torch.testing.assert_close(out[1], vals[2])  # λ = 0: the last valid sample wins
    torch.testing.assert_close(out[2], e[2])


# ---------------------------------------------------------------------------------------------- head init


def test_classifier_head_is_initialised_as_the_benchmark() -> None:
    torch.manual_seed(0)
    model = WSOLClassifier(num_classes=200, backbone="efficientnet_lite0", pretrained=False, cream=False)
    w, b = model.classifier.weight, model.classifier.bias
    assert torch.count_nonzero(b) == 0
    assert abs(float(w.mean())) < 1e-3 and abs(float(w.std()) - 0.01) < 5e-4


@pytest.mark.parametrize("num_classes, kept", [(1000, True), (10, False)])
def test_resnet50_keeps_its_pretrained_fc_only_for_imagenet_classes(tmp_path: Path, num_classes: int, kept: bool) -> None:
    from torchvision.models import resnet50

    torch.manual_seed(0)
    ref = resnet50(weights=None).state_dict()
    ref["fc.bias"] = torch.randn(1000)
    path = tmp_path / "resnet50.pth"
    torch.save(ref, path)
    model = WSOLClassifier(num_classes=num_classes, backbone="resnet50", pretrained=str(path), cream=False)
    if kept:
        torch.testing.assert_close(model.classifier.weight, ref["fc.weight"], rtol=0, atol=0)
        torch.testing.assert_close(model.classifier.bias, ref["fc.bias"], rtol=0, atol=0)
    else:
        assert torch.count_nonzero(model.classifier.bias) == 0
