"""WSOLClassifier end to end on a tiny embedded data set: fit, test, predict, checkpoints, CLI, DDP."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml

from cream_pl.data import WSOLDataModule, generate_synthetic_dataset
from cream_pl.models import WSOLClassifier

os.environ.setdefault("WANDB_MODE", "disabled")

SIZE = 64  # tiny images keep the CPU test fast; the protocol's 224 is a parameter


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    return generate_synthetic_dataset(root, seed=1, num_classes=3, num_train=12, num_val=6, num_test=6,
                                      min_side=72, max_side=96, image_format="png", overwrite=True)


def _dm(root: Path, **kw) -> WSOLDataModule:
    return WSOLDataModule(str(root), batch_size=6, resize_size=72, crop_size=SIZE, eval_size=SIZE, **kw)


def _model(**kw) -> WSOLClassifier:
    defaults = dict(num_classes=3, pretrained=False, cam_curve_interval=0.05, eval_size=SIZE, lr=0.01)
    return WSOLClassifier(**{**defaults, **kw})


def _trainer(tmp_path: Path, **kw) -> pl.Trainer:
    defaults = dict(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                    default_root_dir=str(tmp_path))
    return pl.Trainer(**{**defaults, **kw})


def test_fit_test_reports_cam_and_cream_side_by_side(tiny_data, tmp_path):
    pl.seed_everything(0)
    dm = _dm(tiny_data)
    model = _model(ablation_iterations=[0], ablation_lambdas=[1.0])
    init_fg = model.context.fg.clone()
    trainer = _trainer(tmp_path)
    trainer.fit(model, dm)
    # embeddings moved for λ < 1 and stayed at their random init for λ = 1
    assert not torch.allclose(model.context.fg[0], init_fg[0])
    torch.testing.assert_close(model.context.fg[1], init_fg[1])
    assert int(model.context.num_updates) == 12
    assert torch.isfinite(model.val_best_threshold).all()  # τ* chosen on val for every method
    trainer.test(model, dm, verbose=False)
    metrics = trainer.callback_metrics
    for method in ("cam", "cream", "cream_T0", "cream_lambda1"):
        for key in ("max_box_acc_v2", "max_box_acc", "gt_known", "top1_loc", "top5_loc", "pxap",
                    "max_box_acc_iou30", "max_box_acc_iou50", "max_box_acc_iou70"):
            value = float(metrics[f"test/{method}/{key}"])
            assert 0.0 <= value <= 100.0, (method, key, value)
    assert 0.0 <= float(metrics["test/cls_acc"]) <= 100.0
    res = model.last_results["test"]["methods"]
    # T = 0 is plain CAM, exactly
    assert res["cream_T0"]["max_box_acc_v2"] == res["cam"]["max_box_acc_v2"]
    assert res["cream_T0"]["pxap"] == res["cam"]["pxap"]
    assert res["cream"]["loc_threshold_source"] == "val"
    # Top-1 Loc never exceeds GT-known or Top-5 Loc
    for r in res.values():
        assert r["top1_loc"] <= r["top5_loc"] <= r["gt_known"] + 1e-9
        assert max(r[f"max_box_acc_iou{i}"] for i in (30, 50, 70)) >= r["max_box_acc_v2"]


def test_predict_step_contract_and_checkpoint_round_trip(tiny_data, tmp_path):
    pl.seed_everything(0)
    dm = _dm(tiny_data)
    model = _model()
    trainer = _trainer(tmp_path, max_epochs=1)
    trainer.fit(model, dm)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    loaded = WSOLClassifier.load_from_checkpoint(ckpt, map_location="cpu")
    torch.testing.assert_close(loaded.context.fg, model.context.fg)
    torch.testing.assert_close(loaded.context.bg, model.context.bg)
    torch.testing.assert_close(loaded.val_best_threshold, model.val_best_threshold)
    out = trainer.predict(loaded, dm)
    first = out[0]
    assert set(first) >= {"index", "image_id", "orig_size", "label", "logits", "scoremaps"}
    assert set(first["scoremaps"]) == {"cam", "cream"}
    cream = first["scoremaps"]["cream"]
    assert cream.shape == (6, SIZE, SIZE) and cream.dtype == torch.float64
    assert float(cream.min()) >= 0.0 and float(cream.max()) <= 1.0
    assert sum(len(o["index"]) for o in out) == 12  # the train split, eval transform


def test_cam_only_model_and_argument_checks():
    model = _model(cream=False)
    assert model.method_names == ["cam"] and model.context is None
    with pytest.raises(ValueError, match="matches no parameter"):
        _model(freeze_backbone="^no_such_layer")
    with pytest.raises(ValueError, match="need cream=True"):
        _model(cream=False, ablation_iterations=[1])
    frozen = _model(freeze_backbone=r"^(_conv_stem|_bn0|_blocks\.[0-7]\.)")
    assert not frozen.backbone._conv_stem.weight.requires_grad
    opt = frozen.configure_optimizers()["optimizer"]
    lrs = sorted({g["lr"] for g in opt.param_groups})
    assert lrs == [0.01, 0.1]  # new head at lr x 10
    assert all(p.requires_grad for g in opt.param_groups for p in g["params"])


def test_frozen_batch_norm_keeps_running_statistics_through_training():
    model = _model(freeze_backbone=r"^(_conv_stem|_bn0|_blocks\.0\.)")
    bn_frozen, bn_trained = model.backbone._bn0, model.backbone._blocks[5]._bn1
    before_frozen = bn_frozen.running_mean.clone()
    before_trained = bn_trained.running_mean.clone()
    model.train()
    assert not bn_frozen.training and bn_trained.training
    batch = {"image": torch.randn(4, 3, 64, 64), "label": torch.tensor([0, 1, 2, 0])}
    loss = model.training_step(batch, 0)
    loss.backward()
    assert torch.equal(bn_frozen.running_mean, before_frozen)  # stats of a frozen layer do not drift
    assert not torch.equal(bn_trained.running_mean, before_trained)
    assert bn_frozen.weight.grad is None and model.classifier.weight.grad is not None


def test_channels_last_classifier_trains_and_reloads_in_the_default_layout(tiny_data, tmp_path):
    pl.seed_everything(0)
    model = _model(channels_last=True, cream=False)
    assert model.backbone.channels_last
    trainer = _trainer(tmp_path, limit_val_batches=0)
    trainer.fit(model, datamodule=_dm(tiny_data))
    ckpt = tmp_path / "nhwc.ckpt"
    trainer.save_checkpoint(ckpt)
    plain = WSOLClassifier.load_from_checkpoint(ckpt, map_location="cpu", channels_last=False).eval()
    model.eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), model(x), rtol=1e-4, atol=1e-4)
    assert not plain.backbone.channels_last


def test_lightning_cli_fit_from_config(tiny_data, tmp_path):
    from cream_pl.cli import main

    recipe = yaml.safe_load(Path("experiments/embedded_cream.yaml").read_text())
    recipe["trainer"].update(max_epochs=1, logger=False, accelerator="cpu", default_root_dir=str(tmp_path),
                             enable_progress_bar=False, limit_val_batches=1)
    recipe["trainer"]["callbacks"] = recipe["trainer"]["callbacks"][:1]  # no LearningRateMonitor without a logger
    recipe["trainer"]["callbacks"][0]["init_args"]["dirpath"] = str(tmp_path / "ckpt")
    recipe["model"]["init_args"].update(pretrained=False, cam_curve_interval=0.1, eval_size=SIZE,
                                        ablation_iterations=[], ablation_lambdas=[], cream_search=None)
    recipe["data"]["init_args"].update(data_root=str(tiny_data), resize_size=72, crop_size=SIZE, eval_size=SIZE,
                                       batch_size=6, num_workers=0)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(recipe))
    assert main(["fit", "--config", str(cfg)]) == 0
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    assert ckpt.is_file()
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["hyper_parameters"]["num_classes"] == 3  # linked from the data module
    assert "context.fg" in state["state_dict"]


class _SaveContext(pl.Callback):
    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_end(self, trainer, pl_module) -> None:
        torch.save({"fg": pl_module.context.fg.cpu(), "bg": pl_module.context.bg.cpu()},
                   os.path.join(self.out, f"ctx{trainer.global_rank}.pt"))


@pytest.mark.slow
def test_ddp_two_cpu_processes_keep_identical_embeddings(tiny_data, tmp_path):
    pl.seed_everything(0)
    dm = _dm(tiny_data)
    model = _model()
    trainer = _trainer(tmp_path, devices=2, strategy="ddp_spawn", callbacks=[_SaveContext(str(tmp_path))],
                       limit_val_batches=0)
    trainer.fit(model, dm)
    r0, r1 = torch.load(tmp_path / "ctx0.pt"), torch.load(tmp_path / "ctx1.pt")
    torch.testing.assert_close(r0["fg"], r1["fg"], rtol=0, atol=0)
    torch.testing.assert_close(r0["bg"], r1["bg"], rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(Path("experiments").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_experiment_recipe_instantiates(recipe, tiny_data, tmp_path):
    from cream_pl.cli.lightning import build_from_recipe

    cli = build_from_recipe(recipe, {"data.init_args.data_root": str(tiny_data), "model.init_args.pretrained": False,
                                      "trainer.logger": False, "trainer.default_root_dir": str(tmp_path),
                                      "trainer.callbacks": []}, tmp_path)
    assert isinstance(cli.model, WSOLClassifier)
    assert cli.model.hparams.num_classes == 3


def test_eval_loss_is_the_mean_over_images_and_nan_when_the_model_diverged():
    """val/test loss: summed per image (DDP-exact, tests/test_ddp_exact.py); a NaN is kept, never dropped (a
    diverged epoch must not log a small loss that a ModelCheckpoint monitoring val/loss would keep)."""
    from cream_pl.models.classifier import _TopKAccuracy

    acc = _TopKAccuracy()
    logits, labels = torch.randn(5, 3, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 0, 1])
    acc.update(logits[:4], labels[:4])  # batches of unequal size
    acc.update(logits[4:], labels[4:])
    torch.testing.assert_close(acc.mean_loss(), torch.nn.functional.cross_entropy(logits, labels))
    acc.reset()
    acc.update(torch.full((2, 3), float("nan")), torch.tensor([0, 1]))
    acc.update(torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0]))
    assert torch.isnan(acc.mean_loss())
