"""CREAM_reg's box heads and frozen-feature path: registry, heads against their definitions, cached == online,
the cache's memory bound, the val choice (never reading test first), one-pass localize, and DDP == one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from cream_reg_fixtures import write_tiny_dataset
from test_regressor import _write_gt_coco
from torch import nn

from cream_pl.core.boxes import hflip_boxes_rel
from cream_pl.core.errors import UserValueError
from cream_pl.data.datamodule import WSOLDataModule
from cream_pl.models.box_heads import ObjectnessHead, create_box_head, list_box_heads
from cream_pl.models.feature_cache import ShardedEpochBatchSampler
from cream_pl.models.regressor import BoxRegressor, relative_box_iou
from cream_pl.pipelines import demo_regressor
from cream_pl.pipelines.regressor_data import FrozenFeatureDataModule
from cream_pl.pipelines.regressor_train import train_regressor

os.environ.setdefault("WANDB_MODE", "disabled")
TRAINER = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False, "enable_model_summary": False,
           "num_sanity_val_steps": 0, "check_val_every_n_epoch": 10_000}
EVAL = 64


class BrightnessBackbone(nn.Module):
    """A fixed 'backbone': 2 channels, the mean brightness of each 8x8 cell and its complement."""

    num_features = 2

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        bright = torch.nn.functional.avg_pool2d(images.mean(1, keepdim=True), 8)
        return torch.cat([bright, -bright], dim=1)


class FrozenStandIn(nn.Module):
    """A classifier with ``forward_features`` (features, logits) and ``backbone.num_features``; counts its passes."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = BrightnessBackbone()
        self.classifier = nn.Linear(2, 2)
        self.passes = 0

    def forward_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.passes += 1
        feats = self.backbone(images)
        return feats, self.classifier(feats.mean(dim=(2, 3)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_features(images)[1]


def _specs(n: int) -> list[tuple[tuple[int, int], tuple[int, int, int, int], int]]:
    items = []
    for i in range(n):
        w, h = (64, 64) if i % 2 else (96, 64)
        x0, y0 = (7 * i) % (w // 2), (5 * i) % (h // 3)
        items.append(((w, h), (x0, y0, x0 + w // 2 - 1, y0 + h // 2 - 1), i % 2))
    return items


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    items = _specs(16)
    r = write_tiny_dataset(tmp_path_factory.mktemp("heads"), {"train": items, "val": items[:6], "test": items[6:14]})
    _write_gt_coco(r)
    return r


def _dm(root: Path, classifier: nn.Module, **kw: Any) -> FrozenFeatureDataModule:
    eval_dm = WSOLDataModule(str(root), batch_size=4, eval_size=EVAL)
    return FrozenFeatureDataModule(root / "train_boxes.json", root, classifier, eval_dm, batch_size=4, **kw)


# ---------------------------------------------------------------------------------------------- heads


def test_registry_lists_every_head_and_refuses_an_unknown_one_in_one_line() -> None:
    assert list_box_heads() == ["objectness", "psol", "spatial_mlp"]
    feats = torch.rand(3, 16, 14, 14)
    for name in list_box_heads():
        out = create_box_head(name, in_channels=16)(feats)
        assert out.shape == (3, 4) and bool(((out >= 0) & (out <= 1)).all()), name
    with pytest.raises(UserValueError, match="unknown box head 'gap'; available: objectness, psol, spatial_mlp"):
        create_box_head("gap", in_channels=16)
    with pytest.raises(UserValueError, match="channels must be an integer >= 1"):
        create_box_head("objectness", in_channels=16, channels=0)


def test_psol_head_keeps_the_original_regressor_parameter_names() -> None:
    model = BoxRegressor(pretrained=False)
    keys = {k for k in model.state_dict() if k.startswith("head.")}
    assert keys == {"head.0.weight", "head.0.bias", "head.2.weight", "head.2.bias"}  # older checkpoints load


def test_objectness_head_box_is_the_weighted_moments_of_its_map() -> None:
    head = ObjectnessHead(1, channels=1)
    with torch.no_grad():  # objectness ~1 where the feature is 1, ~0 elsewhere
        head.score[0].weight.fill_(1.0)
        head.score[0].bias.zero_()
        head.score[2].weight.fill_(60.0)
        head.score[2].bias.fill_(-30.0)
    feats = torch.zeros(1, 1, 14, 14)
    feats[0, 0, 4:10, 2:6] = 1.0  # cells x 2..5, y 4..9: the box [2/14, 4/14, 4/14, 6/14]
    box = head(feats)[0].detach()
    assert float(box[0] + box[2] / 2) == pytest.approx(4 / 14, abs=1e-4)  # centre = the map's mean
    assert float(box[1] + box[3] / 2) == pytest.approx(7 / 14, abs=1e-4)
    # half extent = sqrt(3) x sd of the cell centres: (n^2 - 1) / 12 cells^2 for n cells
    assert float(box[2]) == pytest.approx(2 * 3**0.5 * ((16 - 1) / 12) ** 0.5 / 14, abs=1e-4)
    assert float(box[3]) == pytest.approx(2 * 3**0.5 * ((36 - 1) / 12) ** 0.5 / 14, abs=1e-4)
    assert float(relative_box_iou(box[None], torch.tensor([[2 / 14, 4 / 14, 4 / 14, 6 / 14]]))) > 0.9


def test_hflip_mirrors_relative_boxes_where_asked() -> None:
    boxes = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.0, 0.5, 1.0]])
    out = hflip_boxes_rel(boxes, torch.tensor([True, True]))
    assert torch.allclose(out, torch.tensor([[0.6, 0.2, 0.3, 0.4], [0.0, 0.0, 0.5, 1.0]]))
    assert torch.allclose(hflip_boxes_rel(out, torch.tensor([True, True])), boxes)


# ---------------------------------------------------------------------------------------------- order


def test_training_order_is_the_union_of_the_shards_and_does_not_depend_on_the_process() -> None:
    one = list(ShardedEpochBatchSampler(20, batch_size=4, shards=2, seed=3))
    ranks = [list(ShardedEpochBatchSampler(20, batch_size=4, shards=2, shard=r, seed=3)) for r in range(2)]
    assert len(one) == 5 and all(len(b) == 4 for b in one)
    assert one == [ranks[0][t] + ranks[1][t] for t in range(5)]  # step t: what both ranks load, flips included
    assert all(p % 2 == 0 for b in ranks[0] for p, _ in b) and all(p % 2 == 1 for b in ranks[1] for p, _ in b)
    seen = [p for b in one for p, _ in b]
    assert sorted(seen) == list(range(20))  # every image once per epoch
    s = ShardedEpochBatchSampler(20, batch_size=4, shards=2, seed=3)
    s.set_epoch(1)
    assert list(s) != one  # a new shuffle and new flips per epoch
    with pytest.raises(UserValueError, match="must divide over 3"):
        ShardedEpochBatchSampler(20, batch_size=4, shards=3)


# ---------------------------------------------------------------------------------------------- cache


def _fit(root: Path, tmp: Path, dm: FrozenFeatureDataModule, classifier: nn.Module, head: str = "objectness",
         stages: tuple[str, ...] = ("fit",), **kw: Any) -> dict[str, float]:
    return train_regressor(root / "train_boxes.json", root, tmp, classifier_ckpt=classifier, head=head,
                           features="classifier", datamodule=dm, max_epochs=2, batch_size=4, optimizer="adamw",
                           lr=1e-2, loss="l1_iou", loss_weight=1.0, eval_size=EVAL, stages=stages,
                           trainer_kwargs=TRAINER, **kw)


def test_cached_and_online_frozen_features_train_the_same_head(root: Path, tmp_path: Path) -> None:
    heads = {}
    for mode in ("on", "off"):
        classifier = FrozenStandIn()
        torch.manual_seed(0)
        dm = _dm(root, classifier, cache=mode, cache_dtype=torch.float32)
        _fit(root, tmp_path / mode, dm, classifier)
        assert dm.cached is (mode == "on")
        heads[mode] = torch.load(tmp_path / mode / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        # cached: one probe of the feature size, then one pass per image (16 train + 6 val: 4 + 2 batches of 4);
        # online: the backbone runs at every step (2 epochs x 4 steps)
        assert classifier.passes == (1 + 4 + 2 if mode == "on" else 2 * 4), classifier.passes
    assert heads["on"].keys() == heads["off"].keys()
    for k in heads["on"]:
        assert torch.allclose(heads["on"][k], heads["off"][k], atol=1e-6), k


def test_the_cache_is_bounded_before_the_pass(root: Path, tmp_path: Path) -> None:
    classifier = FrozenStandIn()
    with pytest.raises(UserValueError, match=r"GiB > the 0.00 GiB cache bound; raise it or use feature cache 'off'"):
        _fit(root, tmp_path / "on", _dm(root, classifier, cache="on", cache_max_gb=1e-7), classifier)
    assert classifier.passes == 1  # only the probe of the feature size ran
    dm = _dm(root, classifier, cache="auto", cache_max_gb=1e-7)
    _fit(root, tmp_path / "auto", dm, classifier)
    assert dm.cached is False and dm.caches == {}  # over the bound: the frozen backbone ran online


# ---------------------------------------------------------------------------------------------- val choice


def test_the_design_is_chosen_on_val_before_any_test_image_is_read(root: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_choose, real_loader = demo_regressor.choose_on_val, FrozenFeatureDataModule._eval_loader

    def choose(val: dict[str, float]) -> str:
        events.append("choice")
        return real_choose(val)

    def loader(self: FrozenFeatureDataModule, split: str) -> Any:
        events.append(split)
        return real_loader(self, split)

    real_cache = FrozenFeatureDataModule._cache_split

    def cache(self: FrozenFeatureDataModule, split: str) -> None:
        events.append(f"cache:{split}")
        real_cache(self, split)

    monkeypatch.setattr(demo_regressor, "choose_on_val", choose)
    monkeypatch.setattr(FrozenFeatureDataModule, "_eval_loader", loader)
    monkeypatch.setattr(FrozenFeatureDataModule, "_cache_split", cache)
    monkeypatch.setattr(demo_regressor, "FROZEN_RECIPE", {**demo_regressor.FROZEN_RECIPE, "batch_size": 4,
                                                          "max_epochs": 6, "lr": 0.05})
    candidates = {"frozen_lr": {"head": "objectness", "features": "classifier", "label": "learns nothing",
                                "overrides": {"lr": 1e-12}},
                  "learns": {"head": "objectness", "features": "classifier", "label": "learns"}}
    classifier = FrozenStandIn()
    summary, records = demo_regressor.run_regressor_stage(
        root / "train_boxes.json", root, tmp_path / "reg", None, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
        candidates=candidates, classifier=classifier)
    rows = summary["candidates"]
    assert rows["learns"]["val_gt_known"] > rows["frozen_lr"]["val_gt_known"]  # the constructed best
    assert summary["chosen"] == "learns" and summary["cream_reg"]["candidate"] == "learns"
    first_test = min(i for i, e in enumerate(events) if "test" in e)
    assert events.index("choice") < first_test  # nothing of the test split before the choice
    assert {"val_gt_known", "gt_known", "top1_loc", "train_gt_known", "train_pseudo_box_gt_known"} <= set(rows["learns"])
    assert rows["learns"]["train_pseudo_box_gt_known"] == pytest.approx(100.0)  # the pseudo boxes are the true boxes
    assert len(records["cream_reg"]["iou"]) == 8
    again, _ = demo_regressor.run_regressor_stage(  # resumed: read back, nothing retrained
        root / "train_boxes.json", root, tmp_path / "reg", None, mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225), candidates=candidates, classifier=classifier)
    assert again["candidates"] == summary["candidates"]


def test_candidates_of_other_inputs_or_a_damaged_checkpoint_are_trained_again(root: Path, tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch,
                                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Before: make train-regressor reused candidates trained from other pseudo boxes or another classifier (their
    numbers reported for the new ones), and a truncated candidate checkpoint failed every rerun with a traceback."""
    import shutil

    monkeypatch.setattr(demo_regressor, "FROZEN_RECIPE", {**demo_regressor.FROZEN_RECIPE, "batch_size": 4,
                                                          "max_epochs": 1})
    candidates = {"a": {"head": "objectness", "features": "classifier", "label": "a"}}
    boxes = Path(shutil.copy(root / "train_boxes.json", tmp_path / "boxes.json"))
    classifier, rdir = FrozenStandIn(), tmp_path / "reg"

    def run(model: nn.Module = classifier) -> dict[str, Any]:
        return demo_regressor.run_regressor_stage(boxes, root, rdir, None, mean=(0.485, 0.456, 0.406),
                                                  std=(0.229, 0.224, 0.225), candidates=candidates, classifier=model)[0]

    run()
    ckpt = rdir / "a" / "checkpoints" / "last.ckpt"
    stamp = ckpt.stat().st_mtime_ns
    run()
    assert ckpt.stat().st_mtime_ns == stamp  # the same inputs: read back
    capsys.readouterr()
    other = FrozenStandIn()
    run(other)  # another classifier (other weights)
    assert "trained from other pseudo boxes or another classifier" in capsys.readouterr().out
    assert ckpt.stat().st_mtime_ns != stamp
    coco = json.loads(boxes.read_text())
    coco["annotations"][0]["bbox"] = [0, 0, 8, 8]
    boxes.write_text(json.dumps(coco))  # other pseudo boxes at the same path
    stamp = ckpt.stat().st_mtime_ns
    run(other)
    assert ckpt.stat().st_mtime_ns != stamp
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # truncated, and the stage's summary gone: the same inputs
    (rdir / demo_regressor.DONE_FILE).unlink()
    capsys.readouterr()
    assert run(other)["chosen"] == "a" and BoxRegressor.load_from_checkpoint(ckpt) is not None
    assert "last.ckpt: missing or unreadable; training that candidate again" in capsys.readouterr().out


def test_a_fine_tuned_feature_source_is_a_candidate_of_the_same_val_choice(root: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_regressor, "FROZEN_RECIPE", {**demo_regressor.FROZEN_RECIPE, "batch_size": 4,
                                                          "max_epochs": 1})
    tuned = {**demo_regressor.FINETUNE_RECIPE, "pretrained": False}
    candidates = {"frozen": {"head": "objectness", "features": "classifier", "label": "frozen"},
                  "tuned": {"head": "objectness", "features": "finetune", "label": "fine-tuned", "overrides": tuned}}
    classifier = FrozenStandIn()
    summary, _ = demo_regressor.run_regressor_stage(
        root / "train_boxes.json", root, tmp_path / "reg", None, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
        candidates=candidates, classifier=classifier)
    rows = summary["candidates"]
    assert rows["tuned"]["features"] == "finetune" and rows["frozen"]["features"] == "classifier"
    assert rows["tuned"]["recipe"]["regressor_kwargs"]["freeze_backbone"] == demo_regressor.FINETUNE_FREEZE
    assert rows["frozen"]["recipe"]["max_epochs"] == 1 and rows["tuned"]["recipe"]["lr"] == tuned["lr"]
    assert summary["chosen"] == demo_regressor.choose_on_val({k: r["val_gt_known"] for k, r in rows.items()})
    assert "train_gt_known" in rows["frozen"]  # from the cache: no backbone pass
    step = 1 if summary["chosen"] == "tuned" else demo_regressor.TRAIN_SUBSAMPLE  # own pass: all if chosen
    assert rows["tuned"]["train_subsample"] == step
    # the fine-tuned model's train correctness comes from its own backbone over the un-flipped train images
    model = BoxRegressor.load_from_checkpoint(tmp_path / "reg" / "tuned" / "checkpoints" / "last.ckpt").eval()
    dm = _dm(root, classifier, cache="off")
    dm.setup("fit")
    from cream_pl.data.pseudo_box_format import load_dataset_pseudo_boxes

    pseudo = {r.index: r for r in load_dataset_pseudo_boxes(root / "train_boxes.json", root, "train")}
    fit = demo_regressor._train_fit(model, dm, root, pseudo, measure=True)
    assert fit["num_train"] == 16 and fit["train_pseudo_box_gt_known"] == pytest.approx(100.0)
    boxes = model(torch.stack([dm.train_base[i]["image"] for i in range(16)]))
    assert 0.0 <= fit["train_gt_known"] <= 100.0 and boxes.shape == (16, 4)
    step = demo_regressor.TRAIN_SUBSAMPLE  # not chosen: every step-th image
    assert demo_regressor._train_fit(model, dm, root, pseudo, measure=False)["num_train"] == len(range(0, 16, step))


# ---------------------------------------------------------------------------------------------- DDP

SCRIPT = Path(__file__).with_name("regressor_ddp_script.py")
TORCHRUN = Path(sys.executable).with_name("torchrun")
ENV = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["on", "off"])
def test_two_ddp_processes_train_the_head_one_process_trains_with_two_shards(root: Path, tmp_path: Path,
                                                                            cache: str) -> None:
    one = tmp_path / "one"
    subprocess.run([sys.executable, str(SCRIPT), str(root), str(one), cache, "--shards", "2"], check=True, env=ENV,
                   timeout=600)
    two = tmp_path / "two"
    proc = subprocess.run([str(TORCHRUN), "--nnodes=1", "--nproc-per-node=2", "--master-addr=127.0.0.1",
                           f"--master-port={_free_port()}", str(SCRIPT), str(root), str(two), cache, "--devices", "2"],
                          env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    a, b = (torch.load(d / "result.pt", weights_only=False) for d in (one, two))
    for k in a["head"]:
        assert torch.allclose(a["head"][k], b["head"][k], atol=1e-5), k
    assert a["test"] == pytest.approx(b["test"])  # every test image once, on either side
    if cache == "on":  # each rank cached only its own shard of the train split
        assert b["cached_train"] == [list(range(0, 16, 2)), list(range(1, 16, 2))]
        assert a["cached_train"] == [list(range(16))]


def test_localize_boxes_with_the_frozen_head_from_the_classifier_pass(root: Path, tmp_path: Path) -> None:
    """``localize --regressor`` with a frozen-feature regressor: the box comes from the classifier's own pass."""
    model = BoxRegressor(features="classifier", feature_channels=2, head="objectness")
    classifier = FrozenStandIn()
    model.set_classifier(classifier)
    images = torch.rand(3, 3, EVAL, EVAL)
    feats, logits = model.features_and_logits(images)
    assert classifier.passes == 1 and logits is not None
    out = model.predict_step({"image": images}, 0)
    assert classifier.passes == 2 and out["logits"].shape == (3, 2)  # one pass: class and box together
    assert torch.allclose(out["box_rel"], model.head(feats))
    wrong = BoxRegressor(features="classifier", feature_channels=5, head="objectness")
    wrong.set_classifier(classifier)
    with pytest.raises(UserValueError, match="has 2 feature channels but this regressor's head was built for 5"):
        wrong.ensure_classifier()


def test_a_frozen_head_refuses_a_classifier_of_the_same_backbone_and_other_weights(root: Path, tmp_path: Path) -> None:
    """Before: ``localize --regressor`` checked the feature width only, and boxed with another classifier of the same
    backbone without a word (the head reads features it was never trained on)."""
    classifier = FrozenStandIn()
    classifier.backbone.register_buffer("gain", torch.ones(1))  # weights that tell two classifiers apart
    _fit(root, tmp_path, _dm(root, classifier), classifier)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    reg = BoxRegressor.load_from_checkpoint(ckpt, map_location="cpu", pretrained=False)
    other = FrozenStandIn()
    other.backbone.register_buffer("gain", torch.full((1,), 2.0))
    reg.set_classifier(other)
    with pytest.raises(UserValueError, match="backbone weights are not those this regressor's head was trained on"):
        reg.ensure_classifier()
    reg.set_classifier(classifier)
    reg.ensure_classifier()  # its own classifier


def test_regressor_json_metrics_keep_val_when_tested_later(root: Path, tmp_path: Path) -> None:
    classifier = FrozenStandIn()
    dm = _dm(root, classifier, cache="on")
    first = _fit(root, tmp_path / "r", dm, classifier, stages=("fit", "validate"))
    assert "val/reg/gt_known" in first and "test/reg/gt_known" not in first
    second = _fit(root, tmp_path / "r", dm, classifier, stages=("test",))
    stored = json.loads((tmp_path / "r" / "regressor_metrics.json").read_text())
    assert stored["val/reg/gt_known"] == first["val/reg/gt_known"] and "test/reg/gt_known" in second
    assert pl.__version__  # a real Lightning run behind both
