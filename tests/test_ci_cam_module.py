"""CICAMClassifier: intervention wiring, pool updates in a real fit (1 and 2 DDP processes), checkpoints, CCAM option."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from cream_pl.core.errors import UserError
from cream_pl.data import WSOLDataModule, generate_synthetic_dataset
from cream_pl.models.cam import all_class_activation_maps, normalize_maps
from cream_pl.models.ci_cam import combinational_cam, spatial_standardize, update_context_pool
from cream_pl.models.ci_cam_module import CICAMClassifier

os.environ.setdefault("WANDB_MODE", "disabled")

SIZE = 64  # tiny crops keep the CPU tests fast (EfficientNet-Lite0 stride 16 -> 4x4 maps)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth_confounded")
    return generate_synthetic_dataset(root, seed=2, num_classes=3, num_train=12, num_val=6, num_test=6,
                                      min_side=72, max_side=96, image_format="png", confounded=True)


def _dm(root: Path, **kw) -> WSOLDataModule:
    return WSOLDataModule(str(root), batch_size=6, resize_size=72, crop_size=SIZE, eval_size=SIZE, **kw)


def _model(cls: type[CICAMClassifier] = CICAMClassifier, **kw) -> CICAMClassifier:
    defaults = dict(num_classes=3, pretrained=False, cam_curve_interval=0.05, eval_size=SIZE, lr=0.01,
                    train_crop_size=SIZE)
    return cls(**{**defaults, **kw})


def _trainer(tmp_path: Path, **kw) -> pl.Trainer:
    defaults = dict(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                    default_root_dir=str(tmp_path))
    return pl.Trainer(**{**defaults, **kw})


# ---------------------------------------------------------------------------------------------- wiring
def test_intervention_is_identity_at_init_and_keeps_shapes():
    torch.manual_seed(0)
    model = _model().eval()
    assert tuple(model.context_pool.shape) == (3, 4, 4)  # measured at train_crop_size = 64
    assert not model.context_pool.any()
    images = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        feats_down, logits_down = model.forward_features(images)
        feats = model.backbone.forward_features(images)
        _, out = model.ci_forward(images)
    assert feats_down.shape == feats.shape == (2, model.backbone.num_features, 4, 4)
    assert torch.equal(feats_down, feats)  # zero pool + zero bias: F' = F
    torch.testing.assert_close(logits_down, model.classifier(feats.mean(dim=(2, 3))))
    torch.testing.assert_close(out.logits_up, out.logits_down)


def test_forward_features_returns_the_intervened_branch_with_a_filled_pool():
    torch.manual_seed(0)
    model = _model().eval()
    with torch.no_grad():
        model.context_pool.copy_(torch.randn_like(model.context_pool))
        model.ci_head.intervention.bias.fill_(0.3)
        images = torch.randn(3, 3, SIZE, SIZE)
        feats = model.backbone.forward_features(images)
        c_hat = model.classifier(feats.mean(dim=(2, 3))).argmax(1)
        attn = model.ci_head.intervention.attention(c_hat, size=(4, 4))
        feats_down, logits_down = model.forward_features(images)
    expected = feats * (1 + attn)
    torch.testing.assert_close(feats_down, expected)
    assert not torch.allclose(feats_down, feats)
    torch.testing.assert_close(logits_down, model.classifier(expected.mean(dim=(2, 3))))
    # the evaluated "cam" map is the standard CAM of F' at the given class
    labels = torch.tensor([0, 2, 1])
    maps = model.method_maps(feats_down, labels)
    assert set(maps) == {"cam", "cream"}
    cam_down = all_class_activation_maps(feats_down, model.classifier.weight)[torch.arange(3), labels]
    torch.testing.assert_close(maps["cam"], normalize_maps(cam_down))


def test_ccam_option_adds_the_official_combinational_map():
    torch.manual_seed(0)
    model = _model(cam_source="ccam_quadratic").eval()
    assert model.method_names == ["cam", "cream", "ccam"]
    feats = torch.rand(2, model.backbone.num_features, 4, 4)
    maps = model.method_maps(feats, torch.tensor([0, 1]))
    cams = all_class_activation_maps(feats, model.classifier.weight)
    logits = model.classifier(feats.mean(dim=(2, 3)))
    torch.testing.assert_close(maps["ccam"], normalize_maps(combinational_cam(cams, logits, "quadratic")))
    # sum_1 with n lowest classes; n must not exceed the class count
    model = _model(cam_source="ccam_sum1", ccam_n=2)
    assert "ccam" in model.method_names
    with pytest.raises(ValueError, match="ccam_n"):
        _model(cam_source="ccam_sum1", ccam_n=20)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"cam_source": "ccam"}, "cam_source"), ({"pool_rate": -0.1}, "pool_rate"),
     ({"pool_rate": float("nan")}, "pool_rate"), ({"train_crop_size": 4}, "train_crop_size")],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _model(**kwargs)


def test_training_crop_that_does_not_match_the_pool_is_a_clear_error_before_training(tiny_data, tmp_path, monkeypatch):
    model = _model(train_crop_size=96)  # pool 6x6, but the data module crops 64 px (4x4 features)
    steps: list[int] = []
    monkeypatch.setattr(type(model), "training_step", lambda self, batch, i: steps.append(i))
    with pytest.raises(UserError, match=r"data crop_size 64: training features are \(4, 4\) but the causal context "
                                        r"pool is \(6, 6\): set train_crop_size \(now 96\)"):
        _trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(model, _dm(tiny_data))
    assert steps == []  # refused at setup, before any step
    pool = _model(train_crop_size=96, pool_size=(4, 4))  # an explicit pool of the crop feature size trains
    _trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(pool, _dm(tiny_data))
    assert pool.global_step == 1


def test_intervention_and_non_local_train_in_the_new_lr_group_with_the_schedule():
    model = _model(non_local=True, lr=0.01, head_lr_multiplier=10.0, lr_step_epochs=1, lr_gamma=0.5)
    x = torch.randn(2, 1280, 4, 4)
    assert torch.equal(model.non_local(x), x)  # identity at init
    config = model.configure_optimizers()
    opt, sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids))  # nothing twice
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}  # everything trainable once
    group_of = {id(p): i for i, g in enumerate(opt.param_groups) for p in g["params"]}
    new = {group_of[id(p)] for p in [*model.ci_head.parameters(), *model.non_local.parameters()]}
    assert all(opt.param_groups[i]["lr"] == pytest.approx(0.1) for i in new)
    opt.step()
    sched.step()  # the step decay also applies to the group added after the scheduler was built
    assert all(opt.param_groups[i]["lr"] == pytest.approx(0.05) for i in new)


# ---------------------------------------------------------------------------------------------- fit
def test_fit_updates_the_pool_and_checkpoint_round_trip_keeps_it(tiny_data, tmp_path):
    pl.seed_everything(0)
    model = _model(pool_rate=0.5, cam_source="ccam_quadratic")
    trainer = _trainer(tmp_path, max_epochs=1)
    trainer.fit(model, _dm(tiny_data))
    assert int(model.ci_head.intervention.num_updates) == trainer.global_step == 2
    pool = model.context_pool
    filled = pool.flatten(1).abs().amax(1) > 0
    assert filled.any()  # some correctly classified images reached the pool
    # every filled class map is a spatial z-score (the pool is N(P + η N(S)))
    torch.testing.assert_close(pool[filled], spatial_standardize(pool[filled]), atol=1e-5, rtol=0)
    assert torch.isfinite(model.val_best_threshold).all()

    trainer.test(model, _dm(tiny_data), verbose=False)
    res = model.last_results["test"]
    assert set(res["methods"]) == {"cam", "cream", "ccam"}
    for r in res["methods"].values():
        assert 0.0 <= r["max_box_acc_v2"] <= 100.0 and 0.0 <= r["gt_known"] <= 100.0

    ckpt = tmp_path / "ci_cam.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert "ci_head.intervention.context_pool" in state
    restored = CICAMClassifier.load_from_checkpoint(ckpt, map_location="cpu", weights_only=False).eval()
    assert torch.equal(restored.context_pool, pool.cpu())
    assert int(restored.ci_head.intervention.num_updates) == 2
    model.eval()
    images = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(restored.forward_features(images)[1], model.forward_features(images)[1])


def test_cream_context_is_learned_on_the_intervened_features(tiny_data, tmp_path, monkeypatch):
    pl.seed_everything(0)
    model = _model()
    seen: list[torch.Tensor] = []
    original = model._update_context

    def spy(feats, labels):
        seen.append(feats)
        return original(feats, labels)

    downs: list[torch.Tensor] = []
    original_forward = model.ci_forward

    def forward_spy(images):
        feats, out = original_forward(images)
        downs.append(out.features_down.detach())
        return feats, out

    monkeypatch.setattr(model, "_update_context", spy)
    monkeypatch.setattr(model, "ci_forward", forward_spy)
    _trainer(tmp_path, limit_val_batches=0).fit(model, _dm(tiny_data))
    assert len(seen) == 2
    for f, d in zip(seen, downs):
        assert torch.equal(f, d)


# ---------------------------------------------------------------------------------------------- DDP
class _RecordingCICAM(CICAMClassifier):
    """Records (pool before, local sums, pool after) of every update, saved per rank at the end."""

    def __init__(self, record_dir: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self.record_dir = record_dir
        self.records: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def _update_pool(self, feats, labels, logits_up) -> None:
        before = self.context_pool.detach().clone()
        local = self.ci_head.pool_sums(feats.float(), self.classifier, labels, logits_up)
        super()._update_pool(feats, labels, logits_up)
        self.records.append((before.cpu(), local.cpu(), self.context_pool.detach().clone().cpu()))

    def on_train_end(self) -> None:
        torch.save(self.records, os.path.join(self.record_dir, f"pool{self.global_rank}.pt"))


@pytest.mark.slow
def test_ddp_two_processes_sum_the_pool_update_over_ranks(tiny_data, tmp_path):
    pl.seed_everything(0)
    rate = 0.5
    model = _model(_RecordingCICAM, record_dir=str(tmp_path), pool_rate=rate, num_classes=3)
    trainer = _trainer(tmp_path, max_epochs=2, devices=2, strategy="ddp_spawn", limit_val_batches=0)
    dm = WSOLDataModule(str(tiny_data), batch_size=12, resize_size=72, crop_size=SIZE, eval_size=SIZE)
    trainer.fit(model, dm)
    r0, r1 = torch.load(tmp_path / "pool0.pt"), torch.load(tmp_path / "pool1.pt")
    assert len(r0) == len(r1) == 2  # 12 images, global batch 12 = 2 ranks x 6: one step per epoch
    saw_rank_specific_sums = False
    for (b0, s0, a0), (b1, s1, a1) in zip(r0, r1):
        assert torch.equal(b0, b1) and torch.equal(a0, a1)  # identical pools on both ranks
        expected = update_context_pool(b0, s0 + s1, rate)  # one process that saw the global batch
        torch.testing.assert_close(a0, expected, rtol=0, atol=1e-6)
        if not torch.equal(s0, s1):
            saw_rank_specific_sums = True
            assert not torch.allclose(a0, update_context_pool(b0, s0, rate), atol=1e-4)
    assert saw_rank_specific_sums
    assert r0[-1][2].abs().sum() > 0
