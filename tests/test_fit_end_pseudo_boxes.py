"""One ``fit`` yields classifier + pseudo boxes: the ``PseudoBoxesAtFitEnd`` callback, in a real Trainer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml

from cream_pl.data import WSOLDataModule, generate_synthetic_dataset
from cream_pl.models import WSOLClassifier
from cream_pl.pseudo_boxes.fit_end import PseudoBoxesAtFitEnd
from cream_pl.pseudo_boxes.generate import generate_pseudo_boxes

os.environ.setdefault("WANDB_MODE", "disabled")
SIZE = 64


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic_dataset(tmp_path_factory.mktemp("fitend"), seed=4, num_classes=3, num_train=10,
                                      num_val=6, num_test=3, min_side=72, max_side=90, image_format="png",
                                      overwrite=True)


def _dm(root: Path) -> WSOLDataModule:
    return WSOLDataModule(str(root), batch_size=4, resize_size=72, crop_size=SIZE, eval_size=SIZE)


def _trainer(tmp_path: Path, callbacks: list, **kw) -> pl.Trainer:
    return pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      default_root_dir=str(tmp_path), callbacks=callbacks, **kw)


def test_fit_writes_the_pseudo_boxes_of_the_stand_alone_command(data: Path, tmp_path: Path) -> None:
    pl.seed_everything(0)
    model = WSOLClassifier(num_classes=3, pretrained=False, eval_size=SIZE, cam_curve_interval=0.05)
    cb = PseudoBoxesAtFitEnd(tmp_path / "boxes.json", chunk_size=4)
    _trainer(tmp_path, [cb]).fit(model, _dm(data))
    coco = json.loads((tmp_path / "boxes.json").read_text())
    assert len(coco["annotations"]) == 10 and coco["info"]["source"] == "cream"
    tau = float(model.val_best_threshold[model.method_names.index("cream")])
    assert coco["info"]["threshold"] == tau  # the fit's own val τ*
    assert (tmp_path / "boxes.quality.json").is_file() and not (tmp_path / "boxes.json.shards").exists()
    # the same boxes as `cream-pl pseudo-boxes` on the trained model
    ref = generate_pseudo_boxes(model, _dm(data), tmp_path / "ref.json", threshold=tau, chunk_size=4,
                                trainer_kwargs={"accelerator": "cpu", "enable_progress_bar": False})
    assert json.loads(ref.read_text())["annotations"] == coco["annotations"]
    # a finished file is kept: a rerun that ends with the same weights predicts nothing
    before = (tmp_path / "boxes.json").stat().st_mtime_ns
    cb.on_fit_end(_FakeTrainer(_dm(data)), model)
    assert (tmp_path / "boxes.json").stat().st_mtime_ns == before


class _FakeTrainer:
    """Enough of a one-process trainer for a second ``on_fit_end`` call."""

    interrupted, is_global_zero, global_rank, world_size = False, True, 0, 1

    def __init__(self, dm: WSOLDataModule) -> None:
        dm.setup("fit")
        self.datamodule = dm

        class _Strategy:
            @staticmethod
            def broadcast(obj, src=0):
                return obj

            @staticmethod
            def barrier(name=None):
                return None

        self.strategy = _Strategy()


def test_without_validation_it_asks_for_a_threshold_and_a_bad_out_fails_before_training(data: Path,
                                                                                          tmp_path: Path) -> None:
    model = WSOLClassifier(num_classes=3, pretrained=False, eval_size=SIZE, cam_curve_interval=0.05)
    with pytest.raises(ValueError, match="no val τ\\*"):
        _trainer(tmp_path, [PseudoBoxesAtFitEnd(tmp_path / "b.json")], limit_val_batches=0).fit(model, _dm(data))
    steps = []

    class _Count(pl.Callback):
        def on_train_batch_end(self, *args) -> None:
            steps.append(1)

    with pytest.raises(ValueError, match="is an existing folder"):
        _trainer(tmp_path, [PseudoBoxesAtFitEnd(tmp_path), _Count()]).fit(model, _dm(data))
    assert steps == []
    with pytest.raises(ValueError, match="source must be one of"):
        PseudoBoxesAtFitEnd(tmp_path / "b.json", source="gradcam")


def test_a_recipe_lists_it_in_trainer_callbacks(data: Path, tmp_path: Path) -> None:
    from cream_pl.cli import main

    cfg = {
        "seed_everything": 0,
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "logger": False, "enable_checkpointing": False,
                    "enable_progress_bar": False, "num_sanity_val_steps": 0, "default_root_dir": str(tmp_path),
                    "callbacks": [{"class_path": "cream_pl.pseudo_boxes.fit_end.PseudoBoxesAtFitEnd",
                                   "init_args": {"out_path": str(tmp_path / "boxes.json"), "source": "cam"}}]},
        "model": {"class_path": "cream_pl.models.WSOLClassifier",
                  "init_args": {"pretrained": False, "eval_size": SIZE, "cam_curve_interval": 0.05}},
        "data": {"class_path": "cream_pl.data.WSOLDataModule",
                 "init_args": {"data_root": str(data), "batch_size": 4, "resize_size": 72, "crop_size": SIZE,
                               "eval_size": SIZE}},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["fit", "--config", str(tmp_path / "recipe.yaml")]) == 0
    coco = json.loads((tmp_path / "boxes.json").read_text())
    assert len(coco["annotations"]) == 10 and coco["info"]["source"] == "cam"


@pytest.mark.slow  # two spawned torch processes
def test_two_ddp_ranks_box_their_own_chunks_and_rank0_merges(data: Path, tmp_path: Path) -> None:
    pl.seed_everything(0)
    model = WSOLClassifier(num_classes=3, pretrained=False, eval_size=SIZE, cam_curve_interval=0.05)
    _trainer(tmp_path, [PseudoBoxesAtFitEnd(tmp_path / "boxes.json", threshold=0.3, chunk_size=4, keep_shards=True)],
             devices=2, strategy="ddp_spawn").fit(model, _dm(data))
    coco = json.loads((tmp_path / "boxes.json").read_text())
    assert sorted(a["image_id"] for a in coco["annotations"]) == list(range(10))
    assert len(list((tmp_path / "boxes.json.shards").glob("chunk_*.json"))) == 3
    assert torch.isfinite(torch.tensor([a["bbox"] for a in coco["annotations"]])).all()
