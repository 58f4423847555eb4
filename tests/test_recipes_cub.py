"""``make train-cub`` -> ``make pseudo-boxes`` -> ``make train-regressor`` on a tiny raw-CUB folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from test_data_cub import make_cub

from cream_pl.models.checkpoints import load_classifier
from cream_pl.pipelines.recipes import main

os.environ.setdefault("WANDB_MODE", "disabled")

TINY = [  # the CUB recipe, shrunk to run on the CPU in seconds (every key is a real recipe key)
    "--model.init_args.backbone=efficientnet_lite0", "--model.init_args.pretrained=false",
    "--model.init_args.backbone_kwargs={}", "--model.init_args.cam_curve_interval=0.05",
    "--data.init_args.batch_size=3", "--data.init_args.num_workers=0", "--data.init_args.resize_size=72",
    "--data.init_args.crop_size=64", "--data.init_args.eval_size=64", "--model.init_args.eval_size=64", "--trainer.max_epochs=1",
    "--trainer.accelerator=cpu", "--trainer.devices=1",
]


def test_train_cub_then_pseudo_boxes_then_regressor(tmp_path: Path, capsys) -> None:
    raw = make_cub(tmp_path)
    data, work = tmp_path / "cub", tmp_path / "work"
    assert main(["train-cub", "--cub-root", str(raw), "--data", str(data), "--work", str(work),
                 "--val-per-class", "1", *TINY,
                 f"--trainer.logger={{class_path: pytorch_lightning.loggers.CSVLogger, init_args: {{save_dir: {work}}}}}"]) == 0
    assert (data / "metadata" / "val" / "image_ids.txt").is_file()  # converted from the raw layout
    model = load_classifier(work / "classifier.ckpt")
    assert model.hparams.num_classes == 3 and model.hparams.backbone == "efficientnet_lite0"
    test_metrics = json.loads((work / "test_metrics.json").read_text())
    assert "test/cream/max_box_acc_v2" in test_metrics and "test/cam/max_box_acc_v2" in test_metrics
    assert test_metrics["checkpoint_rule"] == "last"  # the benchmark's rule, for CAM and CREAM alike

    assert main(["pseudo-boxes", "--data", str(data), "--work", str(work)]) == 0
    boxes = json.loads((work / "pseudo_boxes_cream.json").read_text())
    assert len(boxes["annotations"]) == 3 and boxes["info"]["input_size"] == 448  # PSOL's input
    assert not (work / "pseudo_boxes_cream.json.shards").exists()

    assert main(["train-regressor", "--data", str(data), "--work", str(work), "--backbone", "efficientnet_lite0",
                 "--epochs", "1", "--batch-size", "3"]) == 0
    metrics = json.loads((work / "regressor_cream" / "psol_finetune" / "regressor_metrics.json").read_text())
    assert {"val/reg/gt_known", "test/reg/gt_known", "test/reg/top1_loc"} <= set(metrics)  # the paper's (PSOL) row
    designs = json.loads((work / "regressor_cream" / "candidates.json").read_text())  # one val choice over all designs
    rows = designs["candidates"]
    assert set(rows) == {"psol_finetune", "objectness_finetune", "psol_frozen", "spatial_mlp_frozen",
                         "objectness_frozen"}
    assert {rows[k]["features"] for k in rows} == {"finetune", "classifier"}
    assert rows["psol_finetune"]["recipe"]["optimizer"] == "sgd"  # PSOL's recipe
    assert rows["objectness_finetune"]["recipe"]["backbone"] == "efficientnet_lite0"
    assert rows[designs["chosen"]]["val_gt_known"] == max(row["val_gt_known"] for row in rows.values())
    assert all("val_gt_known" in row and "gt_known" in row for row in rows.values())
    out = capsys.readouterr().out
    assert '"chosen": {' in out and '"psol": {' in out and f'"candidate": "{designs["chosen"]}"' in out


RECIPES = sorted(p for pat in ("cub_*.yaml", "ilsvrc_*.yaml", "openimages_*.yaml")
                 for p in (Path(__file__).resolve().parents[1] / "experiments").glob(pat))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipes_test_the_last_checkpoint_not_one_chosen_on_a_method_metric(recipe: Path) -> None:
    """The WSOL benchmark tests the last checkpoint (wsol_protocol.md §5); a checkpoint kept for being best on
    ``val/cream/...`` would favour CREAM over CAM, whose row comes from the same checkpoint."""
    text = recipe.read_text()
    cfg = yaml.safe_load(text)
    checkpoints = [cb for cb in cfg["trainer"]["callbacks"] if cb["class_path"].endswith("ModelCheckpoint")]
    assert checkpoints, recipe.name
    for cb in checkpoints:
        assert (cb.get("init_args") or {}).get("monitor") is None, f"{recipe.name}: a monitored checkpoint"
    assert any((cb.get("init_args") or {}).get("save_last") for cb in checkpoints)  # last.ckpt: the tested one
    assert "Checkpoint rule" in text and "LAST epoch" in text  # the recipe says which rule produced its rows


@pytest.mark.parametrize("heads, bad", [("objectness,spatial-mlp", "spatial-mlp"), ("bogus", "bogus"), (",", "','")])
def test_a_misspelt_box_head_is_one_line_before_any_work(heads: str, bad: str, tmp_path: Path, capsys) -> None:
    """Before: ``make train-regressor HEADS=objectness,spatial-mlp`` dropped the misspelt head without a word."""
    with pytest.raises(SystemExit) as exit_:
        main(["train-regressor", "--data", str(tmp_path / "cub"), "--work", str(tmp_path / "w"), "--heads", heads])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1
    assert f"argument --heads: {bad}: not a box head (choose among objectness, psol, spatial_mlp)" in err
    assert not (tmp_path / "w").exists()


def test_the_parsers_box_heads_are_the_registered_ones() -> None:
    from cream_pl.core.names import BOX_HEADS
    from cream_pl.models.box_heads import list_box_heads

    assert sorted(BOX_HEADS) == list_box_heads()


@pytest.mark.parametrize("stage, missing", [("pseudo-boxes", "classifier.ckpt"),
                                            ("train-regressor", "pseudo_boxes_cream.json")])
def test_a_stage_before_its_inputs_exist_is_a_usage_error(stage: str, missing: str, tmp_path: Path, capsys) -> None:
    """Exit status 2 and one line, as every other missing input (before: status 1)."""
    (tmp_path / "w").mkdir()
    assert main([stage, "--data", str(tmp_path / "cub"), "--work", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"error: {tmp_path / 'w' / missing} not found" in err, err


def test_train_cub_cut_short_resumes_a_finished_one_is_kept_and_other_settings_are_refused(tmp_path: Path, monkeypatch,
                                                                                            capsys) -> None:
    """Before: a rerun of a cut `make train-cub` trained from epoch 0 without a word (the recipe's checkpoints went to
    a W&B run folder that is new at every run), and a finished one trained again."""
    import pytorch_lightning as pl

    import cream_pl.pipelines.recipe_builder as recipe_builder
    from cream_pl.core.interrupts import Terminated

    epochs: list[int] = []

    class Watch(pl.Callback):  # the epochs each run trains; stops the first run as SIGTERM would, after epoch 0
        stop = True

        def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            if trainer.current_epoch == 1 and Watch.stop:
                raise Terminated()
            epochs.append(trainer.current_epoch)

    build = recipe_builder.build_from_recipe

    def watched(*args, **kwargs):
        cli = build(*args, **kwargs)
        cli.trainer.callbacks.append(Watch())
        return cli

    monkeypatch.setattr(recipe_builder, "build_from_recipe", watched)
    raw = make_cub(tmp_path)
    data, work = tmp_path / "cub", tmp_path / "work"
    argv = ["train-cub", "--cub-root", str(raw), "--data", str(data), "--work", str(work), "--val-per-class", "1",
            *[a for a in TINY if not a.startswith("--trainer.max_epochs")], "--trainer.max_epochs=2",
            f"--trainer.logger={{class_path: pytorch_lightning.loggers.CSVLogger, init_args: {{save_dir: {work}}}}}"]
    assert main(argv) == 143  # cut short after epoch 0: its last.ckpt kept in <work>/checkpoints
    assert (work / "checkpoints" / "last.ckpt").is_file() and not (work / "classifier.ckpt").exists()
    Watch.stop = False
    assert main(argv) == 0 and epochs == [0, 1]  # epoch 0 was not trained again
    assert f"resuming the fit cut short at {(work / 'checkpoints' / 'last.ckpt').resolve()}" in capsys.readouterr().out
    assert not list((work / "checkpoints").glob("last-v*.ckpt"))
    assert main(argv) == 0 and epochs == [0, 1] and "trained and tested before" in capsys.readouterr().out
    assert main([*argv, "--model.init_args.lr=0.5"]) == 2  # other settings: never continued nor replaced
    assert f"{work}: holds a fit of other settings (overrides differ)" in capsys.readouterr().err


def test_train_cub_overrides_take_both_forms_and_a_stray_word_is_one_line(tmp_path: Path, capsys) -> None:
    """Before: `--model.init_args.pretrained /path` (the form the offline-weights hint printed) set pretrained to null
    and an override named after the path; a stray word was taken as a key, after the conversion."""
    from cream_pl.pipelines.recipes import recipe_overrides

    assert recipe_overrides(["--model.init_args.pretrained", "/w/vgg16.pth", "--trainer.max_epochs=2"]) == {
        "model.init_args.pretrained": "/w/vgg16.pth", "trainer.max_epochs": 2}
    raw = make_cub(tmp_path)
    for extra, words in ((["stray"], "stray: not a recipe override"), (["--trainer.max_epochs"], "no value")):
        assert main(["train-cub", "--cub-root", str(raw), "--data", str(tmp_path / "cub"), "--work",
                     str(tmp_path / "work"), *extra]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "cub").exists()  # refused before the conversion
