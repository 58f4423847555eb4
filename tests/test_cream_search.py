"""Val-split selection of CREAM's inference-time hyperparameters (``cream_search`` → ``cream_selected``).

A stand-in classifier whose "images" are hand-built feature maps makes the best candidate known:
on the val split the object is a body (direction e0) with a small head (e2); the classifier sees only
the head, so CAM covers the head alone, and CREAM with the fg embedding e0 at κ = 16 re-activates the
whole body (IoU ≈ 1), while T = 0 (plain CAM) and κ = 0.01 (flat EM) do not. The test split is built
so that a different candidate would win there (CAM exact; CREAM at T1/κ16 merges the object's right
part with the background).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from cream_pl.data import WSOLDataModule, generate_synthetic_dataset
from cream_pl.models import WSOLClassifier
from cream_pl.models.checkpoints import load_classifier
from cream_pl.models.ci_cam_module import CICAMClassifier
from cream_pl.models.cream_search import CreamSearchSpace
from cream_pl.pseudo_boxes.generate import SOURCES, generate_pseudo_boxes

os.environ.setdefault("WANDB_MODE", "disabled")

K, H = 1280, 8  # EfficientNet-Lite0 feature width; 8 x 8 feature maps
EVAL = 64
SEARCH = {"iterations": [0, 1], "kappa": [0.01, 16]}  # winner on val: T1, κ16 (index 3)


class _StandIn(WSOLClassifier):
    """The "image" is the feature map itself (the backbone is bypassed)."""

    def forward_features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return images, self.classifier(images.mean(dim=(2, 3)))


def _features(kind: str, n: int) -> list[tuple[Tensor, Tensor]]:
    """``n`` (features, GT box in the 64 grid) pairs; object on rows 2-5, cols 1-6 of the 8x8 map."""
    out = []
    for i in range(n):
        f = torch.zeros(K, H, H)
        f[1] = 1.0  # background direction e1
        obj = (slice(2, 6), slice(1, 7))
        if kind == "val":  # body e0, head e2 at one cell: CAM (weight on e2) sees the head only
            f[1][obj] = 0.0
            f[0][obj] = 1.0
            f[2, 2, 1 + i % 3] = 3.0
        else:  # test: CAM sees the whole object; CREAM's e0 covers the background and only the object's left part
            f[1] = 0.0
            f[0] = 1.0
            f[0][obj] = 0.0
            f[2][obj] = 1.0
            f[0, 2:6, 1:5] = 1.0
            f[1, 2:6, 5:7] = 1.0
        out.append((f, torch.tensor([[8, 16, 55, 47]])))
    return out


class _FeatureSet(Dataset):
    def __init__(self, kind: str, n: int) -> None:
        self.items = _features(kind, n)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        f, box = self.items[i]
        return {"image": f, "label": 0, "boxes": box, "index": i}


def _collate(items: list[dict]) -> dict:
    return {"image": torch.stack([x["image"] for x in items]), "label": torch.tensor([x["label"] for x in items]),
            "boxes": [x["boxes"] for x in items], "index": torch.tensor([x["index"] for x in items])}


class _FeatureData(pl.LightningDataModule):
    def val_dataloader(self) -> DataLoader:
        return DataLoader(_FeatureSet("val", 6), batch_size=3, collate_fn=_collate)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(_FeatureSet("test", 6), batch_size=3, collate_fn=_collate)


def _stand_in(**kw) -> _StandIn:
    defaults = dict(num_classes=2, pretrained=False, eval_size=EVAL, cam_curve_interval=0.01, cream_search=SEARCH)
    model = _StandIn(**{**defaults, **kw})
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.weight[0, 2] = 1.0
        model.classifier.bias.zero_()
        assert model.context is not None
        model.context.fg.zero_()
        model.context.bg.zero_()
        model.context.fg[:, :, 0] = 1.0  # E_fg = e0, E_bg = e1, for every tracked λ
        model.context.bg[:, :, 1] = 1.0
    return model


def _trainer(tmp_path: Path, **kw) -> pl.Trainer:
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, default_root_dir=str(tmp_path))
    return pl.Trainer(**{**defaults, **kw})


def test_val_selection_picks_the_known_best_candidate_and_test_never_selects(tmp_path):
    model = _stand_in()
    assert model.method_names == ["cam", "cream", "cream_selected"]
    assert [c.name for c in model.cream_candidates] == [
        "T0_kappa0.01_lambda0.8_raw", "T0_kappa16_lambda0.8_raw", "T1_kappa0.01_lambda0.8_raw", "T1_kappa16_lambda0.8_raw"]
    dm = _FeatureData()
    trainer = _trainer(tmp_path)
    trainer.validate(model, datamodule=dm, verbose=False)
    choice = model.selected_cream
    assert choice is not None
    assert (choice["T"], choice["kappa"], choice["lambda"], choice["feature_norm"]) == (1, 16.0, 0.8, "raw")
    assert choice["val_metric"] == "max_box_acc_v2" and choice["val_score"] == pytest.approx(100.0)
    val = model.last_results["val"]
    scores = val["cream_search"]["scores"]
    assert scores["T1_kappa16_lambda0.8_raw"] > max(v for k, v in scores.items() if k != "T1_kappa16_lambda0.8_raw")
    assert scores["T0_kappa0.01_lambda0.8_raw"] == scores["T0_kappa16_lambda0.8_raw"]  # T = 0 is plain CAM
    # val numbers of cream_selected are the winner's own, with its own val τ*
    assert val["methods"]["cream_selected"]["max_box_acc_v2"] == pytest.approx(100.0)
    assert val["methods"]["cream_selected"]["loc_threshold_source"] == "val"  # τ* of this very val epoch
    i = model.method_names.index("cream_selected")
    assert 0.0 <= float(model.val_best_threshold[i]) < 1.0
    assert float(trainer.callback_metrics["val/cream_selected/kappa"]) == 16.0

    before = dict(choice)
    trainer.test(model, datamodule=dm, verbose=False)
    assert model.selected_cream == before  # the test split never selects
    test = trainer.callback_metrics
    assert float(test["test/cream_selected/T"]) == 1.0
    res = model.last_results["test"]["methods"]["cream_selected"]
    assert res["loc_threshold_source"] == "val" and res["loc_threshold"] == float(model.val_best_threshold[i])
    # the test split would have picked another candidate (plain CAM is exact there)
    assert res["max_box_acc_v2"] < model.last_results["test"]["methods"]["cam"]["max_box_acc_v2"]
    # cream_selected at test is exactly CREAM at the chosen values
    ref = _stand_in(cream_iterations=1, cream_kappa=16.0, cream_search=None)
    _trainer(tmp_path).test(ref, datamodule=dm, verbose=False)
    for key in ("max_box_acc_v2", "max_box_acc", "best_threshold_iou50"):
        assert res[key] == ref.last_results["test"]["methods"]["cream"][key]


def test_test_before_any_val_does_not_select(tmp_path):
    model = _stand_in()
    trainer = _trainer(tmp_path)
    with pytest.warns(UserWarning, match="no validation run has selected"):
        trainer.test(model, datamodule=_FeatureData(), verbose=False)
    assert model.selected_cream is None
    assert "cream_selected" not in model.last_results["test"]["methods"]
    assert not any(k.startswith("test/cream_selected") for k in trainer.callback_metrics)
    with pytest.raises(ValueError, match="no stored choice"):
        model.method_maps(torch.zeros(1, K, H, H), torch.tensor([0]), ["cream_selected"])
    assert "cream_selected" not in model.method_maps(torch.zeros(1, K, H, H), torch.tensor([0]))
    _trainer(tmp_path).validate(model, datamodule=_FeatureData(), verbose=False)
    assert model.selected_cream["candidate"] == "T1_kappa16_lambda0.8_raw"


def test_sanity_check_does_not_select(tmp_path):
    class _Data(_FeatureData):
        def train_dataloader(self) -> DataLoader:
            return self.val_dataloader()

    class _Spy(pl.Callback):
        ran = 0

        def on_sanity_check_end(self, trainer, pl_module) -> None:
            _Spy.ran += 1
            assert pl_module.selected_cream is None  # scored, but not stored

    fresh = _stand_in()
    _trainer(tmp_path, max_epochs=1, limit_train_batches=0, num_sanity_val_steps=2,
             callbacks=[_Spy()]).fit(fresh, datamodule=_Data())
    assert _Spy.ran == 1 and fresh.selected_cream is None


def test_argument_checks():
    kw = dict(num_classes=3, pretrained=False, eval_size=EVAL)
    with pytest.raises(ValueError, match="not tracked"):
        WSOLClassifier(**kw, cream_search={"lambda": [0.8, 0.6]})
    ok = WSOLClassifier(**kw, ablation_lambdas=[0.6], cream_search={"lambda": [0.6, 0.8], "feature_norm": "l2"})
    assert [(c.lam, c.lambda_index, c.feature_norm) for c in ok.cream_candidates] == [(0.6, 1, "l2"), (0.8, 0, "l2")]
    with pytest.raises(ValueError, match="unknown key"):
        WSOLClassifier(**kw, cream_search={"kappas": [8]})
    with pytest.raises(ValueError, match="needs cream=True"):
        WSOLClassifier(**kw, cream=False, cream_search={"kappa": [8]})
    with pytest.raises(ValueError, match="feature_norm"):
        CreamSearchSpace.from_config({"feature_norm": ["raw", "cosine"]})
    with pytest.raises(ValueError, match="iterations"):
        CreamSearchSpace.from_config({"iterations": [-1]})
    with pytest.raises(ValueError, match="kappa"):
        CreamSearchSpace.from_config({"kappa": [0]})
    with pytest.raises(ValueError, match="twice"):
        CreamSearchSpace.from_config({"kappa": [8, 8.0]})
    with pytest.raises(ValueError, match="empty"):
        CreamSearchSpace.from_config({})
    grid = CreamSearchSpace.from_config({"iterations": [1, 2, 3], "kappa": [8, 16, 32], "feature_norm": ["raw", "l2"]})
    assert len(grid.candidates((0.8,), 2, 8.0, "raw")) == 18
    assert "cream_selected" in SOURCES


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    return generate_synthetic_dataset(root, seed=1, num_classes=3, num_train=12, num_val=6, num_test=6,
                                      min_side=72, max_side=96, image_format="png", overwrite=True)


def _dm(root: Path, **kw) -> WSOLDataModule:
    return WSOLDataModule(str(root), batch_size=6, resize_size=72, crop_size=EVAL, eval_size=EVAL, **kw)


def test_choice_survives_checkpoint_and_feeds_pseudo_boxes_and_localize(tiny_data, tmp_path):
    pl.seed_everything(0)
    search = {"iterations": [1, 2], "kappa": [8, 32], "lambda": [0.8, 0.5], "feature_norm": ["raw", "l2"]}
    model = WSOLClassifier(num_classes=3, pretrained=False, cam_curve_interval=0.05, eval_size=EVAL, lr=0.01,
                           ablation_lambdas=[0.5], cream_search=search)
    trainer = _trainer(tmp_path, max_epochs=1, num_sanity_val_steps=0)
    trainer.fit(model, _dm(tiny_data))
    choice = model.selected_cream
    assert choice is not None and len(model.last_results["val"]["cream_search"]["scores"]) == 16
    ckpt = tmp_path / "cls.ckpt"
    trainer.save_checkpoint(ckpt)
    loaded = load_classifier(ckpt)
    assert loaded.selected_cream == choice
    i = loaded.method_names.index("cream_selected")
    assert float(loaded.val_best_threshold[i]) == float(model.val_best_threshold[i])
    assert WSOLClassifier.load_from_checkpoint(str(ckpt), weights_only=False).selected_cream == choice

    # pseudo boxes from cream_selected == pseudo boxes from a model whose paper-default CREAM is the choice
    dm = _dm(tiny_data)
    out = generate_pseudo_boxes(loaded, dm, tmp_path / "sel.json", source="cream_selected", threshold=0.3,
                                trainer_kwargs={"accelerator": "cpu", "devices": 1})
    ref = WSOLClassifier(num_classes=3, pretrained=False, cam_curve_interval=0.05, eval_size=EVAL,
                         ablation_lambdas=[0.5], cream_iterations=choice["T"], cream_kappa=choice["kappa"],
                         cream_feature_norm=choice["feature_norm"])
    state = {k: v for k, v in loaded.state_dict().items() if not k.startswith(("cream_selected", "val_best"))}
    if choice["lambda"] == 0.5:  # the chosen λ's embeddings become the reference's main ones
        state["context.fg"] = state["context.fg"].flip(0)
        state["context.bg"] = state["context.bg"].flip(0)
    ref.load_state_dict(state, strict=False)
    ref_out = generate_pseudo_boxes(ref, _dm(tiny_data), tmp_path / "ref.json", source="cream", threshold=0.3,
                                    trainer_kwargs={"accelerator": "cpu", "devices": 1})
    sel, want = json.loads(Path(out).read_text()), json.loads(Path(ref_out).read_text())
    assert [a["bbox"] for a in sel["annotations"]] == [a["bbox"] for a in want["annotations"]]
    assert len(sel["annotations"]) == 12

    from cream_pl.pipelines.localize import localize

    images = sorted((tiny_data / "images").rglob("*.png"))[:2]
    res = localize(ckpt, images, tmp_path / "loc", method="cream_selected")
    assert res["method"] == "cream_selected" and res["threshold"] == float(loaded.val_best_threshold[i])
    with pytest.raises(ValueError, match="val-selected"):
        localize(WSOLClassifier(num_classes=3, pretrained=False, eval_size=EVAL, cream_search={"kappa": [8]}),
                 images, tmp_path / "loc2", method="cream_selected")


def test_ci_cam_val_selected_row(tiny_data, tmp_path):
    pl.seed_everything(0)
    model = CICAMClassifier(num_classes=3, pretrained=False, cam_curve_interval=0.05, eval_size=EVAL, lr=0.01,
                            train_crop_size=EVAL, cream_search={"kappa": [8, 16]})
    assert model.method_names == ["cam", "cream", "cream_selected"]
    trainer = _trainer(tmp_path, max_epochs=1, num_sanity_val_steps=0)
    trainer.fit(model, _dm(tiny_data))
    assert model.selected_cream is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.test(model, _dm(tiny_data), verbose=False)
    assert 0.0 <= float(trainer.callback_metrics["test/cream_selected/max_box_acc_v2"]) <= 100.0
    assert model.last_results["test"]["methods"]["cream_selected"]["loc_threshold_source"] == "val"


def test_search_in_the_last_epoch_only_saves_every_other_validation(tiny_data, tmp_path):
    """``cream_search_epochs="last"``: the per-epoch validations skip the grid, the last one selects (on val)."""
    seen: list[dict] = []

    class _Watch(pl.Callback):
        def on_validation_end(self, trainer, pl_module):
            seen.append({"search": "cream_search" in pl_module.last_results["val"],
                         "selected": pl_module.selected_cream is not None,
                         "methods": sorted(pl_module.last_results["val"]["methods"])})

    pl.seed_everything(0)
    model = WSOLClassifier(num_classes=3, pretrained=False, cam_curve_interval=0.05, eval_size=EVAL, lr=0.01,
                           cream_search={"kappa": [8, 16]}, cream_search_epochs="last")
    trainer = _trainer(tmp_path, max_epochs=3, num_sanity_val_steps=0, callbacks=[_Watch()])
    trainer.fit(model, _dm(tiny_data))
    assert [s["search"] for s in seen] == [False, False, True]
    assert [s["selected"] for s in seen] == [False, False, True]
    assert "cream_selected" not in seen[0]["methods"] and "cream_selected" in seen[-1]["methods"]
    # a stand-alone validate always selects, and test uses the stored choice
    fresh = WSOLClassifier(num_classes=3, pretrained=False, cam_curve_interval=0.05, eval_size=EVAL,
                           cream_search={"kappa": [8, 16]}, cream_search_epochs="last")
    fresh.load_state_dict(model.state_dict())
    fresh.clear_cream_selection()
    assert fresh.selected_cream is None
    _trainer(tmp_path).validate(fresh, _dm(tiny_data), verbose=False)
    assert fresh.selected_cream is not None and "cream_search" in fresh.last_results["val"]
    with pytest.raises(ValueError, match="cream_search_epochs must be"):
        WSOLClassifier(num_classes=3, pretrained=False, cream_search={"kappa": [8]}, cream_search_epochs="first")


# ----------------------------------------------------------------- the stored choice: values, not an index
def _validated_checkpoint(tmp_path: Path, **kw) -> tuple[_StandIn, Path]:
    model = _stand_in(**kw)
    trainer = _trainer(tmp_path)
    trainer.validate(model, datamodule=_FeatureData(), verbose=False)
    assert model.selected_cream["candidate"] == "T1_kappa16_lambda0.8_raw"
    ckpt = tmp_path / "sel.ckpt"
    trainer.save_checkpoint(ckpt)
    return model, ckpt


def test_another_grid_applies_the_stored_values(tmp_path):
    model, ckpt = _validated_checkpoint(tmp_path)
    choice = model.selected_cream
    # the same candidates in another order: index 3 names T0_kappa0.01 here, so an index would apply it
    reordered = {"iterations": [1, 0], "kappa": [16, 0.01]}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the choice is in this grid: nothing to warn about
        loaded = _StandIn.load_from_checkpoint(str(ckpt), weights_only=False, cream_search=reordered)
    assert loaded.cream_candidates[3].name == "T0_kappa0.01_lambda0.8_raw"
    assert loaded.selected_cream == choice
    # and the test split scores exactly that candidate
    _trainer(tmp_path).test(loaded, datamodule=_FeatureData(), verbose=False)
    ref = _stand_in(cream_iterations=1, cream_kappa=16.0, cream_search=None)
    _trainer(tmp_path).test(ref, datamodule=_FeatureData(), verbose=False)
    got = loaded.last_results["test"]["methods"]["cream_selected"]
    assert got["max_box_acc_v2"] == ref.last_results["test"]["methods"]["cream"]["max_box_acc_v2"]
    assert (got["T"], got["kappa"], got["lambda"]) == (1.0, 16.0, 0.8)
    # a grid without the chosen candidate: the stored values still apply, with a warning
    with pytest.warns(UserWarning, match="not a candidate of this model's cream_search grid"):
        narrow = _StandIn.load_from_checkpoint(str(ckpt), weights_only=False,
                                               cream_search={"iterations": [0], "kappa": [0.01, 16]})
    assert narrow.selected_cream == choice


def test_a_stored_lambda_the_model_does_not_track_is_refused(tmp_path):
    from cream_pl.core.errors import UserError

    model, ckpt = _validated_checkpoint(tmp_path, ablation_lambdas=[0.5])
    assert model.selected_cream["lambda"] == 0.8
    # same number of tracked embeddings (the state dict fits), but λ 0.8 is not among them
    with pytest.raises(UserError, match=r"lambda 0\.8, which this model does not track") as err:
        _StandIn.load_from_checkpoint(str(ckpt), weights_only=False, cream_lambda=0.6, ablation_lambdas=[0.5],
                                      cream_search={"kappa": [16], "lambda": [0.6]})
    assert "\n" not in str(err.value)


def _legacy(ckpt: Path, index: int, out: Path) -> Path:
    """The checkpoint as an older cream-pl wrote it: the choice as [candidate index, metric index] + score."""
    raw = torch.load(ckpt, weights_only=False)
    values = raw["state_dict"].pop("cream_selected_values")
    raw["state_dict"]["cream_selection"] = torch.tensor([index, 0])
    raw["state_dict"]["cream_selection_score"] = values[4].clone()
    torch.save(raw, out)
    return out


def test_an_index_only_checkpoint_is_converted_with_its_own_grid(tmp_path):
    model, ckpt = _validated_checkpoint(tmp_path)
    choice = model.selected_cream
    old = _legacy(ckpt, 3, tmp_path / "old.ckpt")
    assert load_classifier(old).selected_cream == choice
    # tested by a model built with another grid (`cream-pl test --config other.yaml --ckpt_path old.ckpt`):
    # the index resolves in the checkpoint's own grid, where index 3 is T1_kappa16, not in the model's
    other = _stand_in(cream_search={"iterations": [1, 0], "kappa": [16, 0.01]})
    _trainer(tmp_path).test(other, datamodule=_FeatureData(), ckpt_path=str(old), verbose=False)
    assert other.selected_cream == choice
    # an index-only checkpoint that never selected loads with no choice
    assert load_classifier(_legacy(ckpt, -1, tmp_path / "none.ckpt")).selected_cream is None
    # an index its own grid cannot resolve, or a bare index-only state dict: refused in one line
    from cream_pl.core.errors import UserError

    with pytest.raises(UserError, match="candidate 7 of a cream_search grid"):
        load_classifier(_legacy(ckpt, 7, tmp_path / "bad.ckpt"))
    bare = torch.load(old, weights_only=False)["state_dict"]
    with pytest.raises(UserError, match="only as an index"):
        _stand_in().load_state_dict(bare)


@pytest.mark.parametrize("trainer_kw, why", [
    (dict(enable_checkpointing=True, callbacks=[pl.callbacks.ModelCheckpoint(monitor="val/cream/max_box_acc_v2",
                                                                             mode="max")]), "monitors"),
    (dict(callbacks=[pl.callbacks.EarlyStopping(monitor="val/cream/max_box_acc_v2", mode="max")]), "early stopping"),
    (dict(max_epochs=3, check_val_every_n_epoch=2), "check_val_every_n_epoch=2"),
    (dict(max_epochs=3, max_steps=2), "max_steps=2"),
])
def test_search_in_the_last_epoch_is_refused_where_the_tested_checkpoint_may_lack_it(tmp_path, trainer_kw, why):
    """``cream_search_epochs="last"`` + a best-val checkpoint (or a fit that may end early): refused at setup."""
    from cream_pl.core.errors import UserError

    class _Data(_FeatureData):
        def train_dataloader(self) -> DataLoader:
            return self.val_dataloader()

    class _NoStep(pl.Callback):
        def on_train_batch_start(self, *args) -> None:
            raise AssertionError("the refusal comes before any training")

    model = _stand_in(cream_search_epochs="last")
    kw = {"max_epochs": 2, "num_sanity_val_steps": 0, **trainer_kw}
    kw["callbacks"] = [*kw.get("callbacks", []), _NoStep()]
    with pytest.raises(UserError, match=f"cream_search_epochs='last'.*{why}") as err:
        _trainer(tmp_path, **kw).fit(model, datamodule=_Data())
    assert "\n" not in str(err.value)
    # every validation searching ("all") is consistent with any checkpoint rule
    ok = _stand_in(cream_search_epochs="all")
    ok_kw = {**kw, "callbacks": [c for c in kw["callbacks"] if not isinstance(c, _NoStep)], "max_epochs": 1}
    ok_kw.pop("max_steps", None)
    ok_kw.pop("check_val_every_n_epoch", None)
    _trainer(tmp_path, **ok_kw).fit(ok, datamodule=_Data())
    assert ok.selected_cream is not None


def test_test_results_state_the_checkpoint_rule(tmp_path):
    """Every test result says which checkpoint rule produced its rows (issue 23 item 10)."""

    class _Data(_FeatureData):
        def train_dataloader(self) -> DataLoader:
            return self.val_dataloader()

    every = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "every", save_top_k=-1, filename="{epoch}")
    best = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "best", monitor="val/cam/max_box_acc_v2", mode="max")
    model = _stand_in()
    trainer = _trainer(tmp_path, max_epochs=2, num_sanity_val_steps=0, enable_checkpointing=True,
                       callbacks=[best, every])  # ckpt_path="best" reads the first one
    trainer.fit(model, datamodule=_Data())
    trainer.test(model, datamodule=_Data(), verbose=False)  # the weights at the end of the fit
    assert model.last_results["test"]["checkpoint"]["rule"] == "last"
    trainer.test(model, datamodule=_Data(), ckpt_path=str(tmp_path / "every" / "epoch=0.ckpt"), verbose=False)
    first = model.last_results["test"]["checkpoint"]
    assert (first["rule"], first["epoch"], first["max_epochs"]) == ("epoch 1 of 2", 0, 2)
    trainer.test(model, datamodule=_Data(), ckpt_path=str(tmp_path / "every" / "epoch=1.ckpt"), verbose=False)
    assert model.last_results["test"]["checkpoint"]["rule"] == "last"
    trainer.test(model, datamodule=_Data(), ckpt_path="best", verbose=False)
    assert model.last_results["test"]["checkpoint"]["rule"] == "best val/cam/max_box_acc_v2 (max)"
    # the record travels with the checkpoint file (a later process, load_classifier)
    trainer.save_checkpoint(tmp_path / "end.ckpt")
    loaded = load_classifier(tmp_path / "end.ckpt")
    _trainer(tmp_path).test(loaded, datamodule=_Data(), verbose=False)
    assert loaded.last_results["test"]["checkpoint"]["rule"] == "last"
    json.dumps(loaded.last_results["test"]["checkpoint"])  # reports write it as JSON


def test_the_search_scores_every_candidate_as_scoring_it_alone_would(tiny_data, tmp_path):
    """The batched EM runs and the one-pass scoring of the val search give the same scores and the same choice
    as each candidate's own ``cream_maps`` fed to its own metrics (the implementation before them)."""
    from cream_pl.metrics import MaxBoxAccV2, PxAP, prepare_scoremaps
    from cream_pl.metrics.localization_curve import LocalizationCurve
    from cream_pl.models.cam import class_activation_maps
    from cream_pl.models.cream import cream_maps
    from cream_pl.models.cream_search import candidate_maps

    pl.seed_everything(0)
    search = {"iterations": [0, 1, 2, 3], "kappa": [8, 32], "lambda": [0.8, 0.5], "feature_norm": ["raw", "l2"]}
    model = WSOLClassifier(num_classes=3, pretrained=False, cam_curve_interval=0.01, eval_size=EVAL, lr=0.01,
                           ablation_lambdas=[0.5], cream_search=search)
    _trainer(tmp_path, max_epochs=1, num_sanity_val_steps=0).fit(model, _dm(tiny_data))
    val = model.last_results["val"]
    model.eval()
    dm = _dm(tiny_data)
    dm.setup("validate")
    n = len(model.cream_candidates)
    metrics = [(MaxBoxAccV2(cam_curve_interval=0.01), LocalizationCurve(cam_curve_interval=0.01),
                PxAP(cam_curve_interval=0.01)) for _ in range(n)]
    with torch.no_grad():
        for batch in dm.val_dataloader():
            feats, logits = model.forward_features(batch["image"])
            labels = batch["label"]
            cam = class_activation_maps(feats, model.classifier.weight, labels)
            top1 = logits.argmax(1) == labels
            batched = candidate_maps(feats, cam, labels, [model.context.get(i) for i in range(2)],
                                     model.cream_candidates, model.hparams.cream_tau, True)
            for c, m, (v2, v1, px) in zip(model.cream_candidates, batched, metrics):
                e_fg, e_bg = model.context.get(c.lambda_index)
                alone = cream_maps(feats, cam, labels, e_fg, e_bg, iterations=c.iterations, kappa=c.kappa,
                                   tau=model.hparams.cream_tau, feature_norm=c.feature_norm)
                torch.testing.assert_close(m, alone, atol=1e-5, rtol=1e-5)  # float32, another summation order
                maps = prepare_scoremaps(alone, size=EVAL)
                v2.update(maps, batch["boxes"])
                v1.update(maps, batch["boxes"], top1, top1)
                px.update(maps, batch["mask"])
    alone_scores = {c.name: float(v2.compute()["max_box_acc"]) for c, (v2, _, _) in zip(model.cream_candidates, metrics)}
    assert val["cream_search"]["scores"] == pytest.approx(alone_scores, abs=1e-6)
    best = max(alone_scores.values())
    assert val["cream_search"]["selected"] == next(k for k, v in alone_scores.items() if v == best)  # first best
    winner = [c.name for c in model.cream_candidates].index(val["cream_search"]["selected"])
    sel = val["methods"]["cream_selected"]
    assert sel["max_box_acc"] == pytest.approx(metrics[winner][1].compute()["max_box_acc"], abs=1e-9)
    assert sel["best_threshold_iou50"] == metrics[winner][1].compute()["best_threshold"]
    assert sel["pxap"] == pytest.approx(float(metrics[winner][2].compute()), abs=1e-9)
    assert len(set(alone_scores.values())) > 1  # the grid is not degenerate
