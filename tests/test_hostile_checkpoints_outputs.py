"""Hostile inputs found after issue 23's sweep: checkpoints with a wrong structure or diverged weights, a missing
train image, and the outputs a rerun of ``localize`` may touch. Real files, real commands, one line each."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml
from hostile_helpers import isolated_cache  # noqa: F401  (an autouse fixture)

from cream_pl.cli import main
from cream_pl.data import generate_synthetic_dataset
from cream_pl.models import WSOLClassifier
from cream_pl.models.checkpoints import CLASS_KEY

os.environ.setdefault("WANDB_MODE", "disabled")
SIZE = 32


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic_dataset(tmp_path_factory.mktemp("d") / "d", seed=0, num_classes=2, num_train=4,
                                      num_val=3, num_test=3, min_side=48, max_side=56, image_format="png")


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch.manual_seed(0)
    model = WSOLClassifier(num_classes=2, pretrained=False, eval_size=SIZE, num_media_images=0)
    return {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
            "pytorch-lightning_version": pl.__version__, CLASS_KEY: "cream_pl.models.classifier.WSOLClassifier"}


def _one_line(rc: int, err: str, *named: object) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    for thing in named:
        assert str(thing) in err, (thing, err)


def _broken(good: dict, how: str) -> dict:
    ckpt = copy.deepcopy(good)
    if how == "state_dict a string":
        ckpt["state_dict"] = "x"
    elif how == "hyper_parameters a string":
        ckpt["hyper_parameters"] = "x"
    elif how == "diverged head":
        ckpt["state_dict"]["classifier.weight"] = torch.full_like(ckpt["state_dict"]["classifier.weight"], float("nan"))
    elif how == "unknown backbone":
        ckpt["hyper_parameters"]["backbone"] = "banana"
    elif how == "head of another shape":
        ckpt["state_dict"]["classifier.weight"] = torch.zeros(7, ckpt["state_dict"]["classifier.weight"].shape[1])
    return ckpt


CASES = [("state_dict a string", "its 'state_dict' is not a mapping of tensors"),
         ("hyper_parameters a string", "its 'hyper_parameters' is a str"),
         ("diverged head", "weight 'classifier.weight' holds NaN or infinite values"),
         ("unknown backbone", "Unknown backbone 'banana'"),
         ("head of another shape", "size mismatch for classifier.weight")]


@pytest.mark.parametrize("how, words", CASES, ids=[c for c, _ in CASES])
def test_a_checkpoint_of_the_wrong_structure_or_diverged_is_one_line(how, words, good, data, tmp_path, capsys):
    """Before: a traceback (``'str' object has no attribute 'keys'``, ``Unknown backbone``), or, for NaN weights,
    exit 0 with ``"score": NaN`` (not JSON) and a whole-image box."""
    ckpt = tmp_path / "c.ckpt"
    torch.save(_broken(good, how), ckpt)
    image = next((data / "images" / "test").rglob("*.png"))
    for argv in (["localize", str(image), "--ckpt", str(ckpt), "--out", str(tmp_path / "loc")],
                 ["export-scoremaps", "--ckpt", str(ckpt), "--data", str(data), "--out", str(tmp_path / "maps")]):
        rc = main(argv)  # export-scoremaps checks the class count against the data first
        _one_line(rc, capsys.readouterr().err, ckpt,
                  "a 7-class classifier" if how == "head of another shape" and argv[0] == "export-scoremaps" else words)
    assert not (tmp_path / "loc" / "predictions.json").exists() and not any((tmp_path / "maps").rglob("*.npy"))


def test_a_fit_checks_that_every_train_image_is_there_before_its_first_step(data, tmp_path, capsys):
    """Before: the run trained until the batch holding the missing image came up."""
    import shutil

    root = Path(shutil.copytree(data, tmp_path / "d"))
    ids = (root / "metadata" / "train" / "image_ids.txt").read_text().split()
    (root / "images" / ids[-1]).unlink()
    cfg = {"seed_everything": 0,
           "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "logger": False,
                       "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False,
                       "num_sanity_val_steps": 0, "default_root_dir": str(tmp_path / "run")},
           "model": {"class_path": "cream_pl.models.WSOLClassifier",
                     "init_args": {"pretrained": False, "eval_size": SIZE, "num_media_images": 0}},
           "data": {"class_path": "cream_pl.data.WSOLDataModule",
                    "init_args": {"data_root": str(root), "batch_size": 1, "num_workers": 0, "resize_size": 40,
                                  "crop_size": SIZE, "eval_size": SIZE, "check_eval_images": False}}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    stepped = []
    from pytorch_lightning import Callback

    class Count(Callback):
        def on_train_batch_end(self, *args, **kwargs):
            stepped.append(1)

    import cream_pl.pipelines.recipe_builder as rb

    real = rb.CreamCLI._instantiate_trainer
    rb.CreamCLI._instantiate_trainer = lambda self, config, callbacks: real(self, config, [*callbacks, Count()])
    try:
        with pytest.raises(SystemExit) as exit_:  # Lightning's commands end a user error with SystemExit(2)
            main(["fit", "--config", str(path)])
        rc = exit_.value.code
    finally:
        rb.CreamCLI._instantiate_trainer = real
    _one_line(rc, capsys.readouterr().err, ids[-1], "file not found", "image_ids.txt line 4")
    assert stepped == []  # not one step trained


def test_a_localize_rerun_removes_only_its_own_earlier_overlays_and_never_reads_them(good, data, tmp_path):
    """Before: every *.png in <out>/overlays/ that the run did not write was deleted (a user's file too), and
    ``localize dir --out dir`` twice localized the first run's overlays as photos."""
    ckpt = tmp_path / "c.ckpt"
    torch.save(good, ckpt)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, image in enumerate(sorted((data / "images" / "test").rglob("*.png"))[:2]):
        cv2.imwrite(str(photos / f"p{i}.png"), cv2.imread(str(image)))
    assert main(["localize", str(photos), "--ckpt", str(ckpt), "--out", str(photos)]) == 0
    mine = photos / "overlays" / "holiday.png"
    cv2.imwrite(str(mine), np.zeros((8, 8, 3), np.uint8))
    (photos / "p1.png").unlink()  # the second run sees p0 only: p1's overlay is the first run's, and goes
    assert main(["localize", str(photos), "--ckpt", str(ckpt), "--out", str(photos)]) == 0
    result = json.loads((photos / "predictions.json").read_text())
    assert [Path(im["file_name"]).name for im in result["images"]] == ["p0.png"]  # no overlay read as a photo
    assert mine.is_file() and (photos / "overlays" / "p0.png").is_file()
    assert not (photos / "overlays" / "p1.png").exists()


def test_a_localize_run_killed_before_its_predictions_leaves_overlays_the_next_run_owns(good, data, tmp_path,
                                                                                        monkeypatch):
    """Before: the overlays of a run killed before predictions.json counted as the user's files ever after: the
    next run wrote p0_1.png beside the orphan p0.png, and the orphan p1.png stayed."""
    import cream_pl.pipelines.localize as loc

    ckpt = tmp_path / "c.ckpt"
    torch.save(good, ckpt)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, image in enumerate(sorted((data / "images" / "test").rglob("*.png"))[:2]):
        cv2.imwrite(str(photos / f"p{i}.png"), cv2.imread(str(image)))
    out = tmp_path / "out"
    mine = out / "overlays" / "holiday.png"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"mine")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(loc, "write_json_atomic", killed)
        with pytest.raises(KeyboardInterrupt):
            loc.localize(ckpt, [photos], out)
    assert sorted(f.name for f in (out / "overlays").iterdir()) == [".pending", "holiday.png", "p0.png", "p1.png"]
    assert not (out / "predictions.json").exists()
    assert main(["localize", str(photos / "p0.png"), "--ckpt", str(ckpt), "--out", str(out)]) == 0
    result = json.loads((out / "predictions.json").read_text())
    assert [im["overlay"] for im in result["images"]] == ["overlays/p0.png"]
    assert sorted(f.name for f in (out / "overlays").iterdir()) == ["holiday.png", "p0.png"]
    assert mine.read_bytes() == b"mine"


def test_localize_never_writes_over_a_users_file_and_localizes_a_file_named_twice_once(good, data, tmp_path):
    """Before: a first run into <out> replaced the user's overlays/base.png; ``localize a.png a.png folder/`` (where
    folder/ holds a.png) localized a.png three times."""
    ckpt = tmp_path / "c.ckpt"
    torch.save(good, ckpt)
    photos = tmp_path / "photos"
    photos.mkdir()
    image = photos / "p0.png"
    cv2.imwrite(str(image), cv2.imread(str(next((data / "images" / "test").rglob("*.png")))))
    mine = tmp_path / "out" / "overlays" / "p0.png"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"my holiday photo")
    assert main(["localize", str(image), str(image), str(photos), "--ckpt", str(ckpt), "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert [im["overlay"] for im in result["images"]] == ["overlays/p0_1.png"]
    assert mine.read_bytes() == b"my holiday photo"


def test_train_regressor_on_a_pseudo_box_file_nested_too_deeply_is_one_line(data, tmp_path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200000 + "]" * 200000)  # json's decoder: RecursionError (a traceback before)
    rc = main(["train-regressor", "--pseudo-boxes", str(deep), "--data", str(data), "--out", str(tmp_path / "reg")])
    _one_line(rc, capsys.readouterr().err, deep, "nested too deeply")


def test_fit_end_pseudo_boxes_without_a_val_split_are_refused_before_training(data, tmp_path, capsys):
    """Before: the fit trained, wrote its checkpoints, then ended with "the fit ran no validation"."""
    import shutil

    root = Path(shutil.copytree(data, tmp_path / "d"))
    shutil.rmtree(root / "metadata" / "val")
    cfg = {"seed_everything": 0,
           "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "logger": False,
                       "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False,
                       "num_sanity_val_steps": 0, "default_root_dir": str(tmp_path / "run"),
                       "callbacks": [{"class_path": "cream_pl.pseudo_boxes.fit_end.PseudoBoxesAtFitEnd",
                                      "init_args": {"out_path": str(tmp_path / "boxes.json"), "source": "cam"}}]},
           "model": {"class_path": "cream_pl.models.WSOLClassifier",
                     "init_args": {"pretrained": False, "eval_size": SIZE, "num_media_images": 0}},
           "data": {"class_path": "cream_pl.data.WSOLDataModule",
                    "init_args": {"data_root": str(root), "batch_size": 2, "num_workers": 0, "resize_size": 40,
                                  "crop_size": SIZE, "eval_size": SIZE}}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(path)])
    _one_line(exit_.value.code, capsys.readouterr().err, root / "metadata" / "val", "no val τ*")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").rglob("*.ckpt"))
    # boxes from the val-selected maps of a model without cream_search (a recipe with --model.init_args.cream_search
    # null): before, the fit trained and saved its config, then "the model has no 'cream_selected' maps"
    cfg["data"]["init_args"]["data_root"] = str(data)
    cfg["trainer"]["callbacks"][0]["init_args"]["source"] = "cream_selected"
    cfg["trainer"]["logger"] = {"class_path": "pytorch_lightning.loggers.CSVLogger",
                                "init_args": {"save_dir": str(tmp_path / "run")}}
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(path)])
    _one_line(exit_.value.code, capsys.readouterr().err, "PseudoBoxesAtFitEnd: source 'cream_selected'",
              "cream_selected needs the model's cream_search")
    assert not (tmp_path / "run").exists() or not [p for p in (tmp_path / "run").rglob("*") if p.is_file()]


@pytest.mark.parametrize("module, command", [("localize", "localize"), ("export_scoremaps", "export-scoremaps")])
def test_python_dash_m_runs_the_command_as_cream_pl_does(module, command, good, data, tmp_path, capsys):
    """Before: ``python -m cream_pl.pipelines.localize ...`` (and export_scoremaps) exited 0 and did nothing."""
    import importlib

    main_ = importlib.import_module(f"cream_pl.pipelines.{module}").main
    ckpt = tmp_path / "c.ckpt"
    torch.save(good, ckpt)
    image = next((data / "images" / "test").rglob("*.png"))
    args = {"localize": [str(image), "--ckpt", str(ckpt), "--out", str(tmp_path / "o")],
            "export-scoremaps": ["--ckpt", str(ckpt), "--data", str(data), "--out", str(tmp_path / "o")]}[command]
    assert main_(args) == 0
    assert any((tmp_path / "o").rglob("*.json"))
    capsys.readouterr()
    absent = [str(tmp_path / "absent.ckpt") if a == str(ckpt) else a for a in args]
    _one_line(main_(absent), capsys.readouterr().err, f"cream-pl {command}: error", "absent.ckpt")
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", f"cream_pl.pipelines.{module}", *absent], capture_output=True, text=True)
    _one_line(proc.returncode, proc.stderr, f"cream-pl {command}: error", "absent.ckpt")  # the real ``python -m`` entry


def test_a_fit_whose_model_and_data_score_at_other_sizes_is_refused_before_its_first_step(data, tmp_path, capsys):
    """Before: a full epoch trained, then validation ended in ``ValueError: masks must be (B, 48, 48) ...``."""
    cfg = {"seed_everything": 0,
           "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "logger": False,
                       "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False,
                       "num_sanity_val_steps": 0, "default_root_dir": str(tmp_path / "run")},
           "model": {"class_path": "cream_pl.models.WSOLClassifier",
                     "init_args": {"pretrained": False, "eval_size": 48, "num_media_images": 0}},
           "data": {"class_path": "cream_pl.data.WSOLDataModule",
                    "init_args": {"data_root": str(data), "batch_size": 1, "num_workers": 0, "resize_size": 40,
                                  "crop_size": SIZE, "eval_size": SIZE, "check_eval_images": False}}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(path)])
    _one_line(exit_.value.code, capsys.readouterr().err, "model.init_args.eval_size is 48",
              f"data.init_args.eval_size is {SIZE}")
    assert not any((tmp_path / "run").rglob("*.ckpt"))
