"""Hostile inputs to every command: bad files, bad numbers, bad paths (issue 23).

Every ``cream-pl`` command (Lightning's ``fit|validate|test|predict``, ``data synth|cub|check``,
``evaluate``, ``export-scoremaps``, ``pseudo-boxes``, ``train-regressor``, ``localize``) and every
pipeline entry point (``python -m cream_pl.pipelines.{runner,calibrate_preset,recipes}``, the runner
over every demo's declaration) is run for real on real files (PNG/JPEG written with OpenCV, checkpoints
written with ``torch.save``, real Pillow decoding) and must end with an exit status other than 0,
at most two lines of output (stdout and stderr together, OpenCV's C++ log included), no
traceback, and the offending file (or option) named. Most cases call ``main([...])`` in-process;
a few run a fresh ``python`` to also catch import-time noise.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml
from hostile_helpers import assert_one_line, isolated_cache  # noqa: F401  (an autouse fixture)
from hostile_helpers import call as _call
from PIL import Image

from cream_pl.cli import main as cli_main
from cream_pl.data import generate_synthetic_dataset
from cream_pl.data.images import ImageFileError, load_image_rgb
from cream_pl.models import WSOLClassifier
from cream_pl.models.checkpoints import CLASS_KEY
from cream_pl.models.regressor import BoxRegressor

os.environ.setdefault("WANDB_MODE", "disabled")
REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "experiments" / "demos" / "demo.yaml"
SIZE = 32


# ---------------------------------------------------------------------------------------------- fixtures


def _synth(root: Path, num_classes: int) -> Path:
    return generate_synthetic_dataset(root, seed=0, num_classes=num_classes, num_train=max(4, num_classes), num_val=3, num_test=3,
                                      min_side=64, max_side=72, image_format="png", overwrite=True)


@pytest.fixture(scope="module")
def data3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _synth(tmp_path_factory.mktemp("hostile") / "d3", 3)


@pytest.fixture(scope="module")
def data5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _synth(tmp_path_factory.mktemp("hostile") / "d5", 5)


def _save(module: torch.nn.Module, path: Path, **extra: Any) -> Path:
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": pl.__version__, **extra}, path)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A random-init 3-class classifier, a truncated copy, and a box regressor's checkpoint."""
    d = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    model = WSOLClassifier(num_classes=3, pretrained=False, eval_size=SIZE, num_media_images=0)
    c3 = _save(model, d / "c3.ckpt", **{CLASS_KEY: "cream_pl.models.classifier.WSOLClassifier"})
    truncated = d / "truncated.ckpt"
    truncated.write_bytes(c3.read_bytes()[: c3.stat().st_size // 2])
    reg = _save(BoxRegressor(backbone="efficientnet_lite0", pretrained=False), d / "regressor.ckpt")
    return {"c3": c3, "truncated": truncated, "regressor": reg, "missing": d / "no_such.ckpt"}


def _png(path: Path, w: int, h: int, value: int = 120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((h, w, 3), value, np.uint8))
    return path


def _big_png(path: Path, w: int = 15000, h: int = 15000) -> Path:
    """A real, valid 8-bit grey PNG of ``w x h`` pixels, streamed (a few hundred KB on disk)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(1)
    row = b"\x00" * (w + 1)  # filter byte + pixels
    idat = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def big_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _big_png(tmp_path_factory.mktemp("big") / "huge.png")


def _copy(root: Path, dst: Path) -> Path:
    return Path(shutil.copytree(root, dst))


def _ids(root: Path, split: str) -> list[str]:
    return (root / "metadata" / split / "image_ids.txt").read_text().split()


# ---------------------------------------------------------------------------------------------- running


def _cli(argv: Sequence[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str]:
    return _call(cli_main, argv, capfd)


def _pipeline(name: str) -> Callable[[Sequence[str]], int]:
    import importlib

    return importlib.import_module(f"cream_pl.pipelines.{name}").main


def _subprocess(argv: Sequence[str], timeout: int = 180) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=str(REPO))
    return proc.returncode, proc.stdout + proc.stderr


def _lightning_config(tmp_path: Path, root: Path) -> Path:
    cfg = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "logger": False,
                    "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False,
                    "num_sanity_val_steps": 0, "default_root_dir": str(tmp_path / "run")},
        "model": {"class_path": "cream_pl.models.WSOLClassifier",
                  "init_args": {"pretrained": False, "eval_size": SIZE, "cam_curve_interval": 0.1,
                                "num_media_images": 0}},
        "data": {"class_path": "cream_pl.data.WSOLDataModule",
                 "init_args": {"data_root": str(root), "batch_size": 3, "num_workers": 0, "resize_size": 40,
                               "crop_size": SIZE, "eval_size": SIZE}},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# ---------------------------------------------------------------------------------------------- item 6: numbers


PSEUDO = ["pseudo-boxes", "--ckpt", "c.ckpt", "--data", "d", "--out", "o.json"]
TRAIN_REG = ["train-regressor", "--pseudo-boxes", "p.json", "--data", "d", "--out", "o"]
LOCALIZE = ["localize", "a.png", "--ckpt", "c.ckpt", "--out", "o"]
EXPORT = ["export-scoremaps", "--ckpt", "c.ckpt", "--data", "d", "--out", "o"]
EVALUATE = ["evaluate", "--metadata", "m", "--scoremaps", "s", "--out", "o.json"]

BAD_NUMBERS = [
    (EVALUATE + ["--iou-thresholds", "150", "-5"], "--iou-thresholds"),
    (EVALUATE + ["--iou-thresholds", "0"], "--iou-thresholds"),
    (EVALUATE + ["--interval", "0"], "--interval"),
    (EVALUATE + ["--interval", "nan"], "--interval"),
    (EVALUATE + ["--batch-size", "0"], "--batch-size"),
    (EVALUATE + ["--num-workers", "-1"], "--num-workers"),
    (PSEUDO + ["--input-size", "0"], "--input-size"),
    (PSEUDO + ["--input-size", "7"], "--input-size"),
    (PSEUDO + ["--chunk-size", "0"], "--chunk-size"),
    (PSEUDO + ["--batch-size", "0"], "--batch-size"),
    (PSEUDO + ["--num-workers", "-2"], "--num-workers"),
    (PSEUDO + ["--threshold", "1.5"], "--threshold"),
    (PSEUDO + ["--threshold", "nan"], "--threshold"),
    (TRAIN_REG + ["--max-epochs", "0"], "--max-epochs"),
    (TRAIN_REG + ["--lr", "nan"], "--lr"),
    (TRAIN_REG + ["--lr", "-0.1"], "--lr"),
    (TRAIN_REG + ["--input-size", "0"], "--input-size"),
    (TRAIN_REG + ["--batch-size", "0"], "--batch-size"),
    (TRAIN_REG + ["--loss-weight", "inf"], "--loss-weight"),
    (TRAIN_REG + ["--seed", "-1"], "--seed"),
    (TRAIN_REG + ["--cache-max-gb", "0"], "--cache-max-gb"),
    (TRAIN_REG + ["--cache-max-gb", "nan"], "--cache-max-gb"),
    (TRAIN_REG + ["--head", "gap"], "--head"),
    (LOCALIZE + ["--batch-size", "0"], "--batch-size"),
    (LOCALIZE + ["--threshold", "-0.1"], "--threshold"),
    (LOCALIZE + ["--device", "banana"], "--device"),
    (EXPORT + ["--batch-size", "0"], "--batch-size"),
    (EXPORT + ["--num-workers", "-1"], "--num-workers"),
    (EXPORT + ["--device", "banana"], "--device"),
    (EXPORT + ["--split", "test/"], "--split"),  # was: accepted, and stored as another split's name
    (EXPORT + ["--split", "../metadata/test"], "--split"),
    (PSEUDO + ["--split", ".."], "--split"),
    (["data", "check", "root", "--split", "a/b"], "--split"),
    (["data", "synth", "--out", "o", "--num-classes", "0"], "--num-classes"),
    (["data", "synth", "--out", "o", "--num-train", "-3"], "--num-train"),
    (["data", "synth", "--out", "o", "--min-side", "4"], "--min-side"),
    (["data", "synth", "--out", "o", "--usual-background-prob", "1.5"], "--usual-background-prob"),
    (["data", "synth", "--out", "o", "--seed", "x"], "--seed"),
    (["data", "cub", "--src", "s", "--out", "o", "--val-per-class", "-1"], "--val-per-class"),
    (["data", "check", "root", "--num-classes", "0"], "--num-classes"),
    (["data", "check", "root", "--max-problems", "-1"], "--max-problems"),
]


@pytest.mark.parametrize("argv, option", BAD_NUMBERS, ids=[" ".join(a[-2:]) + f" ({a[0]})" for a, _ in BAD_NUMBERS])
def test_numeric_options_outside_their_domain_fail_at_parse_time(argv: list[str], option: str, capfd) -> None:
    rc, text = _cli(argv, capfd)  # nothing named in argv exists: the parser refuses before any of it is read
    line = assert_one_line(rc, text, option)
    assert rc == 2 and "error: argument" in line and "usage:" not in text


def test_a_chunk_size_not_a_multiple_of_the_batch_is_one_line_before_any_file_is_read(capfd) -> None:
    """Before: a ValueError traceback from the shard planner, once the checkpoint and the data had loaded."""
    rc, text = _cli(PSEUDO + ["--chunk-size", "16"], capfd)  # c.ckpt and d do not exist: not read
    assert_one_line(rc, text, "--chunk-size 16: a multiple of --batch-size (32)")
    rc, text = _cli(PSEUDO + ["--chunk-size", "16", "--batch-size", "8"], capfd)
    assert rc == 2 and "--chunk-size" not in text and "no such split" in text  # a multiple: on to the data


PIPELINE_NUMBERS = [
    ("runner", ["experiments/demos/demo.yaml", "--seeds", "0"], "--seeds"),
    ("runner", ["experiments/demos/demo_seeds.yaml", "--seeds", "x"], "--seeds"),
    ("recipes", ["pseudo-boxes", "--input-size", "7"], "--input-size"),
    ("recipes", ["train-regressor", "--epochs", "0"], "--epochs"),
    ("recipes", ["train-regressor", "--batch-size", "0"], "--batch-size"),
    ("recipes", ["train-cub", "--val-per-class", "-1"], "--val-per-class"),
    ("bench_metrics", ["--interval", "0"], "--interval"),
    ("bench_reference", ["--repeats", "0"], "--repeats"),
    ("bench_gpu", ["--val-images", "0"], "--val-images"),
]


@pytest.mark.parametrize("name, argv, option", PIPELINE_NUMBERS, ids=[f"{n} {a[-2]}" for n, a, _ in PIPELINE_NUMBERS])
def test_pipeline_numeric_options_fail_at_parse_time(name: str, argv: list[str], option: str, capfd) -> None:
    rc, text = _call(_pipeline(name), argv, capfd)
    assert_one_line(rc, text, option, f"python -m cream_pl.pipelines.{name}")
    assert "usage:" not in text


LIGHTNING_NUMBERS = [
    (["--data.init_args.batch_size", "0"], "batch_size"),
    (["--data.init_args.num_workers", "-1"], "num_workers"),
    (["--data.init_args.eval_size", "0"], "eval_size"),
    (["--trainer.max_epochs", "-5"], "max_epochs"),
    (["--trainer.max_epochs", "abc"], "trainer.max_epochs"),
    (["--model.init_args.lr", "nan"], "lr"),
    (["--model.init_args.lr", "-1"], "lr must be a finite value >= 0, got -1.0"),  # was: torch's traceback at fit start
    (["--model.init_args.momentum", "1.5"], "momentum must be a finite value in [0, 1), got 1.5"),
    (["--model.init_args.cream_lambda", "5"], "model.init_args"),
    (["--model.init_args.cream_tau", "2"], "cream_tau must be in [0, 1], got 2.0"),  # was: the first step's traceback
    (["--model.init_args.cream_kappa", "-1"], "cream_kappa must be a finite value > 0"),  # was: EM inverted silently
    (["--model.init_args.cam_curve_interval", "1e-9"], "interval must be in [1e-06, 1]"),  # was: a MemoryError
    (["--model.init_args.backbone", "banana"], "banana"),
    (["--seed_everything", "-1"], "seed_everything: -1 is outside [0, 4294967295]"),
    (["--seed_everything", str(2**70)], "seed_everything"),
]


@pytest.mark.parametrize("extra, named", LIGHTNING_NUMBERS, ids=[" ".join(e) for e, _ in LIGHTNING_NUMBERS])
def test_lightning_numeric_options_end_in_one_line(extra, named, data3, tmp_path, capfd) -> None:
    cfg = _lightning_config(tmp_path, data3)
    rc, text = _cli(["fit", "--config", str(cfg), *extra], capfd)
    assert_one_line(rc, text, named, "cream-pl fit: error:")
    assert not (tmp_path / "run").exists()  # nothing trained


def test_a_bad_value_is_named_where_it_was_given_and_its_key_once(data3, tmp_path, capfd) -> None:
    """Before: a W&B ``tags`` string given as an option was reported against the --config files, as
    ``trainer.logger.init_args.tags.tags`` (the logger union's two branches each repeat the nested error)."""
    cfg = _lightning_config(tmp_path, data3)
    logger = str(REPO / "configs" / "logger" / "wandb.yaml")
    rc, text = _cli(["fit", "--config", str(cfg), "--config", logger, "--trainer.logger.init_args.tags", "x"], capfd)
    assert_one_line(rc, text, "cream-pl fit: error: command line: trainer.logger.init_args.tags: Expected a <class "
                    "'collections.abc.Sequence'>", "cream-pl fit: error:")
    bad = tmp_path / "tags.yaml"
    bad.write_text("trainer:\n  logger:\n    init_args:\n      tags: x\n")
    rc, text = _cli(["fit", "--config", str(cfg), "--config", logger, "--config", str(bad)], capfd)
    assert_one_line(rc, text, f"cream-pl fit: error: {cfg}, {logger}, {bad}: trainer.logger.init_args.tags: Expected",
                    "cream-pl fit: error:")
    assert "tags.tags" not in text and not (tmp_path / "run").exists()
    rc, text = _cli(["fit", "--config", str(cfg), "--model.lr", "abc"], capfd)  # jsonargparse's shorthand
    assert_one_line(rc, text, "cream-pl fit: error: command line: model.init_args.lr", "cream-pl fit: error:")
    bad.write_text("model:\n  init_args:\n    lr: abc\n")  # a class given as an option: its init_args are the file's
    rc, text = _cli(["fit", "--config", str(cfg), "--config", str(bad), "--model", "cream_pl.models.WSOLClassifier"],
                    capfd)
    assert_one_line(rc, text, f"cream-pl fit: error: {cfg}, {bad}: model.init_args.lr", "cream-pl fit: error:")
    # an option the class refuses: jsonargparse names the class's init_args, the option is the command line's
    # (before: blamed on the --config files, also when they had no data component at all)
    rc, text = _cli(["fit", "--config", str(cfg), "--data.init_args.banana", "3"], capfd)
    assert_one_line(rc, text, "cream-pl fit: error: command line: data.init_args: Option 'banana' is not accepted",
                    "cream-pl fit: error:")
    no_data = tmp_path / "no_data.yaml"
    no_data.write_text(yaml.safe_dump({k: v for k, v in yaml.safe_load(cfg.read_text()).items() if k != "data"}))
    rc, text = _cli(["fit", "--config", str(no_data), "--data.data_root", "d"], capfd)
    assert_one_line(rc, text, "cream-pl fit: error: command line: data.init_args: Option 'data_root'",
                    "cream-pl fit: error:")
    bad.write_text("data:\n  init_args:\n    banana: 3\n")
    rc, text = _cli(["fit", "--config", str(cfg), "--config", str(bad)], capfd)
    assert_one_line(rc, text, f"cream-pl fit: error: {cfg}, {bad}: data.init_args: Option 'banana'",
                    "cream-pl fit: error:")


CALLBACK_VALUES = [
    ({"class_path": "pytorch_lightning.callbacks.EarlyStopping", "init_args": {"monitor": "val/loss", "mode": "up"}},
     "trainer.callbacks[EarlyStopping]: `mode` can be min, max, got up"),  # was: no key named
    ({"class_path": "pytorch_lightning.callbacks.Timer", "init_args": {"duration": "ab:cd"}},
     "trainer.callbacks[Timer]: `Timer(duration='ab:cd')` is not a valid duration"),  # was: a RepresenterError traceback
    ({"class_path": "cream_pl.pseudo_boxes.fit_end.PseudoBoxesAtFitEnd",
      "init_args": {"out_path": "boxes.json", "source": "cream_selcted"}},
     "trainer.callbacks[PseudoBoxesAtFitEnd]: source must be one of"),  # was: no callback named
]
if importlib.util.find_spec("rich") is None:  # was: a ModuleNotFoundError traceback
    CALLBACK_VALUES.append(({"class_path": "pytorch_lightning.callbacks.RichProgressBar"},
                            "trainer.callbacks[RichProgressBar]: `RichProgressBar` requires `rich`"))


@pytest.mark.parametrize("callback, named", CALLBACK_VALUES, ids=[c["class_path"].rsplit(".")[-1] for c, _ in CALLBACK_VALUES])
def test_a_value_a_lightning_callback_refuses_names_the_callback(callback, named, data3, tmp_path, capfd) -> None:
    cfg = _lightning_config(tmp_path, data3)
    extra = tmp_path / "callbacks.yaml"
    extra.write_text(yaml.safe_dump({"trainer": {"callbacks": [callback]}}))
    rc, text = _cli(["fit", "--config", str(cfg), "--config", str(extra)], capfd)
    assert_one_line(rc, text, f"cream-pl fit: error: {named}", "cream-pl fit: error:")
    assert not (tmp_path / "run").exists()


def test_a_callback_with_an_enum_default_trains(data3, tmp_path, capfd) -> None:
    """Lightning's ``Timer`` (its ``interval`` default is an enum) stopped every fit in the CLI's config dump, with a
    YAML RepresenterError traceback; its config is saved with the enum's value, which reads back."""
    cfg = _lightning_config(tmp_path, data3)
    extra = tmp_path / "timer.yaml"
    extra.write_text(yaml.safe_dump({"trainer": {"callbacks": [{"class_path": "pytorch_lightning.callbacks.Timer",
                                                                "init_args": {"duration": "00:01:00:00"}}]}}))
    rc, text = _cli(["fit", "--config", str(cfg), "--config", str(extra), "--trainer.limit_train_batches", "1",
                     "--trainer.limit_val_batches", "1"], capfd)
    assert rc == 0, text[-2000:]
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    timer = next(c for c in saved["trainer"]["callbacks"] if c["class_path"].endswith("Timer"))
    assert timer["init_args"]["interval"] == "step" and timer["init_args"]["duration"] == "00:01:00:00"


def test_embeddings_that_would_never_learn_are_refused_before_training(data3, tmp_path, capfd) -> None:
    cfg = _lightning_config(tmp_path, data3)  # max_epochs 1: the embeddings' first update would be in epoch 5
    rc, text = _cli(["fit", "--config", str(cfg), "--model.init_args.cream_update_start_epoch", "5"], capfd)
    assert_one_line(rc, text, "cream_update_start_epoch=5 but the fit's last epoch is 0 (epochs count from 0; "
                    "trainer.max_epochs=1)", "cream-pl fit: error:")
    assert not list(tmp_path.rglob("*.ckpt"))  # nothing trained


@pytest.mark.parametrize("where", ["trainer.default_root_dir", "trainer.logger"])
def test_lightning_output_folders_that_are_files_end_in_one_line(where, data3, tmp_path, capfd) -> None:
    """Before: ``FileExistsError`` / ``NotADirectoryError`` tracebacks when the fit started."""
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    cfg = _lightning_config(tmp_path, data3)
    extra = ([f"--trainer.default_root_dir={a_file}"] if where == "trainer.default_root_dir" else
             [f"--trainer.logger={{class_path: pytorch_lightning.loggers.CSVLogger, init_args: {{save_dir: {a_file}}}}}"])
    rc, text = _cli(["fit", "--config", str(cfg), *extra], capfd)
    assert_one_line(rc, text, a_file, where, "must be a folder")
    assert a_file.read_text() == "mine"


def test_fit_never_writes_over_its_own_config_file(data3, tmp_path, capfd) -> None:
    """Before: a config kept in its run folder (<default_root_dir>/config.yaml) was replaced by the resolved dump."""
    run = tmp_path / "run"
    run.mkdir()
    mine = run / "config.yaml"
    text = "# my notes\n" + _lightning_config(tmp_path, data3).read_text()
    mine.write_text(text)
    rc, out = _cli(["fit", "--config", str(mine)], capfd)
    assert_one_line(rc, out, mine, "--config is where this fit saves its resolved config")
    assert mine.read_text() == text
    dump = "# pytorch_lightning==2\n" + text  # an earlier fit's own dump: a rerun from it rewrites it
    mine.write_text(dump)
    rc, out = _cli(["fit", "--config", str(mine)], capfd)
    assert rc == 0 and mine.read_text() != dump, out


def test_help_still_prints_usage(capfd) -> None:
    rc, text = _cli(["pseudo-boxes", "--help"], capfd)
    assert rc == 0 and "usage: cream-pl pseudo-boxes" in text and "--input-size" in text


# ---------------------------------------------------------------------------------------------- item 1: classes


def test_export_scoremaps_refuses_a_checkpoint_with_fewer_classes_than_the_data(data5, ckpts, tmp_path, capfd):
    out = tmp_path / "maps"
    rc, text = _cli(["export-scoremaps", "--ckpt", str(ckpts["c3"]), "--data", str(data5), "--out", str(out),
                     "--device", "cpu"], capfd)
    assert_one_line(rc, text, ckpts["c3"], data5 / "class_names.txt", "3-class", "5 classes")
    assert not any(out.rglob("*.npy"))  # before any work


def test_pseudo_boxes_refuses_a_checkpoint_with_fewer_classes_than_the_data(data5, ckpts, tmp_path, capfd):
    rc, text = _cli(["pseudo-boxes", "--ckpt", str(ckpts["c3"]), "--data", str(data5), "--out",
                     str(tmp_path / "b.json"), "--threshold", "0.3", "--input-size", str(SIZE), "--num-workers", "0",
                     "--accelerator", "cpu", "--devices", "1"], capfd)
    assert_one_line(rc, text, ckpts["c3"], data5 / "class_names.txt")
    assert not (tmp_path / "b.json.shards").exists()


def test_labels_beyond_the_checkpoint_are_refused_without_class_names(data5, ckpts, tmp_path, capfd):
    root = _copy(data5, tmp_path / "d")
    (root / "class_names.txt").unlink()
    rc, text = _cli(["pseudo-boxes", "--ckpt", str(ckpts["c3"]), "--data", str(root), "--out",
                     str(tmp_path / "b.json"), "--threshold", "0.3", "--input-size", str(SIZE)], capfd)
    assert_one_line(rc, text, ckpts["c3"], root / "metadata" / "train" / "class_labels.txt")


def test_train_regressor_refuses_a_classifier_with_fewer_classes(data5, ckpts, tmp_path, capfd):
    rc, text = _cli(["train-regressor", "--pseudo-boxes", str(tmp_path / "p.json"), "--data", str(data5),
                     "--out", str(tmp_path / "reg"), "--classifier-ckpt", str(ckpts["c3"]), "--no-pretrained"], capfd)
    assert_one_line(rc, text, ckpts["c3"], data5 / "class_names.txt")


def test_lightning_test_refuses_a_checkpoint_with_other_classes(data5, ckpts, tmp_path, capfd):
    cfg = _lightning_config(tmp_path, data5)
    rc, text = _cli(["test", "--config", str(cfg), "--ckpt_path", str(ckpts["c3"])], capfd)
    assert_one_line(rc, text, ckpts["c3"], data5 / "class_names.txt")


def _two_labels_without_names(data3: Path, dst: Path) -> Path:
    """data3 as a wsolevaluation layout has it (no class_names.txt), its labels folded to 0 and 1."""
    import shutil

    shutil.copytree(data3, dst)
    (dst / "class_names.txt").unlink()
    for labels in (dst / "metadata").glob("*/class_labels.txt"):
        lines = [line.rsplit(",", 1) for line in labels.read_text().splitlines()]
        labels.write_text("".join(f"{i},{min(int(c), 1)}\n" for i, c in lines))
    return dst


def test_lightning_test_refuses_a_checkpoint_of_more_classes_than_the_labels_count(data3, ckpts, tmp_path, capfd):
    """Without class_names.txt the count is one more than the largest label; before: a state-dict traceback."""
    root = _two_labels_without_names(data3, tmp_path / "d2")
    rc, text = _cli(["test", "--config", str(_lightning_config(tmp_path, root)), "--ckpt_path", str(ckpts["c3"])],
                    capfd)
    assert_one_line(rc, text, f"{ckpts['c3']}: a model of 3 classes, but the data module counts 2")


def test_two_alike_model_checkpoints_are_one_line(data3, tmp_path, capfd):
    """``--trainer.callbacks+=ModelCheckpoint`` beside the config's own: before, Lightning's traceback."""
    raw = yaml.safe_load(_lightning_config(tmp_path, data3).read_text())
    raw["trainer"].pop("enable_checkpointing")
    raw["trainer"]["callbacks"] = [{"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                                    "init_args": {"dirpath": str(tmp_path / d), "save_last": True}} for d in "ab"]
    cfg = tmp_path / "two.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    rc, text = _cli(["fit", "--config", str(cfg)], capfd)
    assert_one_line(rc, text, "trainer.callbacks: Found more than one stateful callback of type `ModelCheckpoint`",
                    "different monitor or every_n_epochs values")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_second_fit_into_a_checkpoint_folder_of_an_earlier_fit_is_one_line(data3, tmp_path, capfd):
    """Before: the second fit wrote last-v1.ckpt beside the first's last.ckpt (which test --ckpt_path then scored),
    and its fit-end pseudo boxes replaced the first model's."""
    raw = yaml.safe_load(_lightning_config(tmp_path, data3).read_text())
    raw["trainer"].pop("enable_checkpointing")
    raw["trainer"].update(limit_train_batches=1, limit_val_batches=1)
    ckpts = tmp_path / "ckpts"
    raw["trainer"]["callbacks"] = [{"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                                    "init_args": {"dirpath": str(ckpts), "save_last": True}}]
    cfg = tmp_path / "fit.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    rc, text = _cli(["fit", "--config", str(cfg)], capfd)
    assert rc == 0, text[-2000:]
    first = {p.name: p.read_bytes() for p in ckpts.iterdir()}
    rc, text = _cli(["fit", "--config", str(cfg)], capfd)
    assert_one_line(rc, text, f"{ckpts}: holds an earlier fit's checkpoints", f"--ckpt_path {ckpts / 'last.ckpt'}")
    assert {p.name: p.read_bytes() for p in ckpts.iterdir()} == first
    rc, text = _cli(["fit", "--config", str(cfg), "--trainer.max_epochs", "2", "--ckpt_path", str(ckpts / "last.ckpt")],
                    capfd)  # the resume it names goes on
    assert rc == 0 and "last-v1.ckpt" not in {p.name for p in ckpts.iterdir()}, text[-2000:]
    import shutil  # the run folder moved (or copied) elsewhere, then resumed there: its last.ckpt goes on
    moved = tmp_path / "moved"  # (before: Lightning wrote last-v1.ckpt beside the stale last.ckpt)
    shutil.copytree(ckpts, moved)
    rc, text = _cli(["fit", "--config", str(cfg), "--trainer.max_epochs", "3", "--ckpt_path", str(moved / "last.ckpt"),
                     "--trainer.callbacks.init_args.dirpath", str(moved)], capfd)
    assert rc == 0 and "last-v1.ckpt" not in {p.name for p in moved.iterdir()}, text[-2000:]
    import torch

    assert torch.load(moved / "last.ckpt", weights_only=False)["epoch"] == 2  # the resumed fit's last epoch (0-based)
    rc, text = _cli(["fit", "--config", str(cfg), "--trainer.max_epochs", "3", "--ckpt_path", "last"], capfd)
    assert rc == 0 and "last-v1.ckpt" not in {p.name for p in ckpts.iterdir()}, text[-2000:]  # Lightning's own


@pytest.mark.parametrize("command", ["fit", "test"])
def test_a_missing_config_file_is_named_as_missing(command, tmp_path, capfd):
    """Before: "<file>: config: not accepted", as if the file's content were at fault."""
    rc, text = _cli([command, "--config", str(tmp_path / "embedded_crem.yaml")], capfd)
    assert_one_line(rc, text, f"{tmp_path / 'embedded_crem.yaml'}: file not found (--config)", exact=True)
    rc, text = _cli([command, "--config", str(tmp_path)], capfd)
    assert_one_line(rc, text, f"{tmp_path}: a folder, not a config file (--config)", exact=True)
    demo = REPO / "experiments" / "demos" / "demo.yaml"  # before: "does not accept option 'legacy.demo_version'"
    rc, text = _cli([command, "--config", str(demo)], capfd)
    assert_one_line(rc, text, f"{demo}: an experiment declaration, not a config (--config); run it with python -m "
                              f"cream_pl.pipelines.runner {demo}", exact=True)


def test_a_monitor_of_a_method_the_model_lacks_is_one_line_before_training(data3, tmp_path, capfd):
    """configs/trainer/default.yaml monitors val/cream/... and configs/model/cam.yaml has no CREAM. Before: the first
    epoch trained, then the fit stopped without any checkpoint ("could not find the monitored key")."""
    raw = yaml.safe_load(_lightning_config(tmp_path, data3).read_text())
    raw["trainer"].pop("enable_checkpointing")
    raw["model"]["init_args"]["cream"] = False
    raw["trainer"]["callbacks"] = [{"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                                    "init_args": {"monitor": "val/cream/max_box_acc_v2", "mode": "max"}}]
    cfg = tmp_path / "cam.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    rc, text = _cli(["fit", "--config", str(cfg)], capfd)
    assert_one_line(rc, text, "trainer.callbacks[ModelCheckpoint].monitor: 'val/cream/max_box_acc_v2' is never logged",
                    "e.g. val/cam/max_box_acc_v2")
    assert not (tmp_path / "run").exists()  # nothing trained


def test_a_learning_rate_monitor_without_a_logger_is_one_line_naming_it(data3, tmp_path, capfd):
    """configs/trainer/default.yaml with configs/logger/none.yaml. Before: Lightning's line, naming no callback."""
    raw = yaml.safe_load(_lightning_config(tmp_path, data3).read_text())
    raw["trainer"]["callbacks"] = [{"class_path": "pytorch_lightning.callbacks.LearningRateMonitor"}]
    cfg = tmp_path / "lr.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    rc, text = _cli(["fit", "--config", str(cfg)], capfd)
    assert_one_line(rc, text, "trainer.callbacks[LearningRateMonitor]: needs a logger, but trainer.logger is false")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["fit", "validate"])
def test_a_model_refusal_comes_before_the_trainer_writes_anything(command, data3, ckpts, tmp_path, capfd):
    """The model's checks (here: maps at another size than the data's boxes) run before the trainer starts its
    logger and saves its config. Before: they ran in the model's setup, after config.yaml (and a W&B run) were
    written into the run folder."""
    raw = yaml.safe_load(_lightning_config(tmp_path, data3).read_text())
    raw["data"]["init_args"]["eval_size"] = 2 * SIZE
    cfg = tmp_path / "sizes.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    extra = ["--ckpt_path", "pretrained"] if command == "validate" else []
    rc, text = _cli([command, "--config", str(cfg), *extra], capfd)
    assert_one_line(rc, text, f"eval_size is {SIZE}", f"eval_size is {2 * SIZE}")
    assert not (tmp_path / "run").exists()


def test_another_folder_under_metadata_does_not_change_the_class_count(data3, tmp_path):
    """Before: a backup split with higher labels made an 8-class head of a 2-class dataset, silently."""
    import shutil

    from cream_pl.data.datamodule import WSOLDataModule

    root = _two_labels_without_names(data3, tmp_path / "d2")
    backup = shutil.copytree(root / "metadata" / "test", root / "metadata" / "test_backup")
    labels = backup / "class_labels.txt"
    labels.write_text(labels.read_text().replace(",1\n", ",7\n"))
    assert WSOLDataModule(str(root)).num_classes == 2
    assert WSOLDataModule(str(root), predict_split="test_backup").num_classes == 8  # a split it serves counts


def test_lightning_test_names_the_checkpoints_eval_size_that_replaced_the_config(data3, ckpts, tmp_path, capfd):
    """Lightning replaces the config's model arguments by the checkpoint's: before, the line blamed
    ``model.init_args.eval_size`` even where the user had given the data's value for it."""
    ckpt = torch.load(ckpts["c3"], weights_only=False)
    ckpt["hyper_parameters"].update(_class_path="cream_pl.models.WSOLClassifier", eval_size=2 * SIZE)
    path = tmp_path / "eval128.ckpt"
    torch.save(ckpt, path)
    cfg = _lightning_config(tmp_path, data3)
    rc, text = _cli(["test", "--config", str(cfg), "--ckpt_path", str(path), "--model.init_args.eval_size", str(SIZE)],
                    capfd)
    assert_one_line(rc, text, f"{path}: the checkpoint's model.init_args.eval_size is {2 * SIZE}",
                    f"data.init_args.eval_size is {SIZE}; give --data.init_args.eval_size {2 * SIZE}")


# ---------------------------------------------------------------------------------------------- item 7: checkpoints


@pytest.mark.parametrize("command, kind, words", [
    ("test", "missing", "checkpoint not found"),
    ("test", "truncated", "not a readable PyTorch checkpoint"),
    ("validate", "regressor", "box regressor's checkpoint"),
    ("predict", "truncated", "not a readable PyTorch checkpoint"),
])
def test_lightning_ckpt_path_problems_end_in_one_line(command, kind, words, data3, ckpts, tmp_path, capfd):
    cfg = _lightning_config(tmp_path, data3)
    rc, text = _cli([command, "--config", str(cfg), "--ckpt_path", str(ckpts[kind])], capfd)
    assert_one_line(rc, text, ckpts[kind], words)


def test_lightning_batch_limit_one_is_one_batch(data3, tmp_path, capfd):
    """Before: ``limit_val_batches: 1`` was parsed as 1.0, which Lightning reads as 100 % of the batches."""
    from cream_pl.pipelines.recipe_builder import build_from_recipe

    cfg = _lightning_config(tmp_path, data3)
    raw = yaml.safe_load(cfg.read_text())
    raw["trainer"].update(limit_train_batches=1, limit_val_batches=1)
    cfg.write_text(yaml.safe_dump(raw))
    rc, text = _cli(["fit", "--config", str(cfg), "--trainer.limit_test_batches", "1.0",
                     "--trainer.limit_predict_batches", "1", "--print_config"], capfd)
    assert rc == 0, text
    printed = yaml.safe_load(text[text.index("seed_everything"):])["trainer"]
    assert [printed[f"limit_{k}_batches"] for k in ("train", "val", "test", "predict")] == [1, 1, 1.0, 1]
    assert [type(printed[f"limit_{k}_batches"]) for k in ("train", "val", "test", "predict")] == [int, int, float, int]
    trainer = build_from_recipe(cfg, {"trainer.limit_test_batches": 0.5}, tmp_path / "w").trainer
    assert (trainer.limit_val_batches, type(trainer.limit_val_batches), trainer.limit_test_batches) == (1, int, 0.5)


@pytest.mark.parametrize("command", ["validate", "test", "predict"])
def test_lightning_scoring_without_a_checkpoint_is_refused(command, data3, tmp_path, capfd):
    """Before: ``cream-pl test --config C`` without --ckpt_path scored the config's untrained model and exited 0."""
    cfg = _lightning_config(tmp_path, data3)
    rc, text = _cli([command, "--config", str(cfg)], capfd)
    assert_one_line(rc, text, f"{command}: no --ckpt_path", "untrained model", "--ckpt_path pretrained")
    if command != "predict":  # (predict without a writer is refused first)
        rc, text = _cli([command, "--config", str(cfg), "--ckpt_path", "last"], capfd)  # before: warned, then scored
        assert_one_line(rc, text, f"{command}: --ckpt_path last: no last checkpoint", "untrained model")


def test_lightning_scoring_the_model_as_built_is_asked_for_by_name(data3, tmp_path, capfd):
    cfg = _lightning_config(tmp_path, data3)
    rc, text = _cli(["validate", "--config", str(cfg), "--ckpt_path", "pretrained"], capfd)
    assert rc == 0 and "Traceback" not in text and "val/cam/max_box_acc_v2" in text, text


def test_lightning_predict_without_a_prediction_writer_is_refused(data3, ckpts, tmp_path, capfd):
    """Before: every map was computed, then thrown away, and the command exited 0 having written nothing."""
    cfg = _lightning_config(tmp_path, data3)
    rc, text = _cli(["predict", "--config", str(cfg), "--ckpt_path", str(ckpts["c3"])], capfd)
    assert_one_line(rc, text, "predict: no prediction writer among trainer.callbacks", "cream-pl localize")
    cfg = yaml.safe_load(cfg.read_text())  # cream-pl's own writer needs its chunked loader: before, a TypeError after
    cfg["trainer"]["callbacks"] = [{"class_path": "cream_pl.pseudo_boxes.generate.PseudoBoxWriter",  # a batch
                                    "init_args": {"out_path": str(tmp_path / "b.json"), "categories": ["a", "b", "c"]}}]
    (tmp_path / "pw.yaml").write_text(yaml.safe_dump(cfg))
    rc, text = _cli(["predict", "--config", str(tmp_path / "pw.yaml"), "--ckpt_path", str(ckpts["c3"])], capfd)
    assert_one_line(rc, text, "predict: PseudoBoxWriter writes pseudo boxes through cream-pl pseudo-boxes")


@pytest.mark.slow  # about 10 s: one real fit
def test_lightning_test_accepts_good_checkpoints(data3, ckpts, tmp_path, capfd):
    """The checks refuse only bad files: a hand-saved checkpoint (no ``_class_path``: the config's model, the
    file's weights) and one written by ``cream-pl fit`` (its hyperparameters applied) both test fine."""
    cfg = _lightning_config(tmp_path, data3)
    rc, text = _cli(["test", "--config", str(cfg), "--ckpt_path", str(ckpts["c3"])], capfd)
    assert rc == 0 and "Traceback" not in text, text
    rc, text = _cli(["fit", "--config", str(cfg), "--trainer.enable_checkpointing", "true"], capfd)
    assert rc == 0, text
    written = sorted((tmp_path / "run").rglob("*.ckpt"))
    assert written, text
    assert "_class_path" in torch.load(written[-1], weights_only=False)["hyper_parameters"]
    rc, text = _cli(["validate", "--config", str(cfg), "--ckpt_path", str(written[-1])], capfd)
    assert rc == 0 and "Traceback" not in text, text
    # a resumed fit continues the checkpoint's run: a config asking for another model is refused (before: Lightning
    # replaced the config's values by the checkpoint's, silently); the same config resumes
    rc, text = _cli(["fit", "--config", str(cfg), "--ckpt_path", str(written[-1]), "--model.init_args.lr", "0.5"], capfd)
    assert_one_line(rc, text, written[-1], "a resumed fit continues this checkpoint's run, whose model.init_args.lr is 0.001")
    rc, text = _cli(["fit", "--config", str(cfg), "--ckpt_path", str(written[-1]), "--trainer.max_epochs", "2"], capfd)
    assert rc == 0 and "Traceback" not in text, text


@pytest.mark.parametrize("kind, words", [("truncated", "not a readable PyTorch checkpoint"),
                                         ("regressor", "box regressor's checkpoint"),
                                         ("missing", "checkpoint not found")])
def test_train_regressor_bad_classifier_ckpt_ends_in_one_line(kind, words, data3, ckpts, tmp_path, capfd):
    rc, text = _cli(["train-regressor", "--pseudo-boxes", str(tmp_path / "p.json"), "--data", str(data3),
                     "--out", str(tmp_path / "reg"), "--classifier-ckpt", str(ckpts[kind]), "--no-pretrained"], capfd)
    assert_one_line(rc, text, ckpts[kind], words)


def test_train_regressor_into_a_trained_regressor_needs_overwrite(data3, ckpts, tmp_path, capfd):
    """Before: the new fit replaced the trained regressor, its metrics and curve without a word."""
    trained = tmp_path / "reg" / "checkpoints" / "last.ckpt"
    trained.parent.mkdir(parents=True)
    trained.write_bytes(ckpts["regressor"].read_bytes())
    argv = ["train-regressor", "--pseudo-boxes", str(tmp_path / "p.json"), "--data", str(data3), "--out",
            str(tmp_path / "reg"), "--no-pretrained"]
    rc, text = _cli(argv, capfd)
    assert_one_line(rc, text, f"{trained}: --out holds a trained regressor", "--overwrite")
    assert trained.read_bytes() == ckpts["regressor"].read_bytes()
    rc, text = _cli([*argv, "--overwrite"], capfd)  # goes on to its inputs: here a missing pseudo-box file
    assert_one_line(rc, text, tmp_path / "p.json")
    trained.write_bytes(ckpts["c3"].read_bytes())  # a classifier's run folder (the recipes' checkpoints/last.ckpt)
    for extra in ([], ["--overwrite"]):  # before: called a regressor, and --overwrite replaced the classifier
        rc, text = _cli([*argv, *extra], capfd)
        assert_one_line(rc, text, f"{trained}: a classifier checkpoint, not a regressor's", "never replaces it")
        assert trained.read_bytes() == ckpts["c3"].read_bytes()


def test_train_regressor_out_inside_the_data_or_a_mask_only_split_is_one_line(data3, tmp_path, capfd):
    """Before: checkpoints/ and the metrics written into the dataset's metadata/ (which data check then refused); a
    split without boxes, a traceback at the sanity check, after the model was built."""
    argv = ["train-regressor", "--pseudo-boxes", str(tmp_path / "p.json"), "--no-pretrained"]
    rc, text = _cli([*argv, "--data", str(data3), "--out", str(data3 / "metadata")], capfd)
    assert_one_line(rc, text, f"--out {data3 / 'metadata'}: inside --data {data3}")
    assert not (data3 / "metadata" / "checkpoints").exists()
    import shutil

    masks_only = tmp_path / "masks_only"
    shutil.copytree(data3, masks_only)
    (masks_only / "metadata" / "val" / "localization.txt").write_text("")  # no boxes (masks only, as OpenImages')
    rc, text = _cli([*argv, "--data", str(masks_only), "--out", str(tmp_path / "reg")], capfd)
    assert_one_line(rc, text, f"{masks_only / 'metadata' / 'val'}: no boxes")


@pytest.mark.parametrize("command", ["localize", "export-scoremaps", "pseudo-boxes"])
def test_a_regressor_checkpoint_where_a_classifier_belongs(command, data3, ckpts, tmp_path, capfd):
    img = _png(tmp_path / "a.png", 50, 40)
    argv = {"localize": ["localize", str(img), "--ckpt", str(ckpts["regressor"]), "--out", str(tmp_path / "o")],
            "export-scoremaps": ["export-scoremaps", "--ckpt", str(ckpts["regressor"]), "--data", str(data3),
                                 "--out", str(tmp_path / "o")],
            "pseudo-boxes": ["pseudo-boxes", "--ckpt", str(ckpts["regressor"]), "--data", str(data3), "--out",
                             str(tmp_path / "b.json"), "--threshold", "0.3"]}[command]
    rc, text = _cli(argv, capfd)
    assert_one_line(rc, text, ckpts["regressor"], "box regressor's checkpoint")


@pytest.mark.parametrize("kind, words", [("c3", "a classifier's checkpoint"),
                                         ("truncated", "not a readable PyTorch checkpoint")])
def test_localize_bad_regressor_checkpoint_is_one_line(kind, words, ckpts, tmp_path, capfd):
    img = _png(tmp_path / "a.png", 50, 40)
    rc, text = _cli(["localize", str(img), "--ckpt", str(ckpts["c3"]), "--regressor", str(ckpts[kind]), "--out",
                     str(tmp_path / "o"), "--device", "cpu"], capfd)
    assert_one_line(rc, text, ckpts[kind], words)
    assert not (tmp_path / "o" / "predictions.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("command", ["localize", "export-scoremaps"])
def test_cuda_device_without_a_gpu_ends_in_one_line(command, data3, ckpts, tmp_path, capfd):
    img = _png(tmp_path / "a.png", 50, 40)
    argv = ([command, str(img), "--ckpt", str(ckpts["c3"]), "--out", str(tmp_path / "o")] if command == "localize"
            else [command, "--ckpt", str(ckpts["c3"]), "--data", str(data3), "--out", str(tmp_path / "o")])
    rc, text = _cli([*argv, "--device", "cuda:0"], capfd)
    assert_one_line(rc, text, "--device cuda:0", "no CUDA GPU")
    assert not (tmp_path / "o" / "predictions.json").exists()


TRAINER_OPTIONS = [
    ("pseudo-boxes", ["--devices", "banana"]),
    ("pseudo-boxes", ["--strategy", "banana"]),
    ("pseudo-boxes", ["--precision", "7"]),
    ("train-regressor", ["--devices", "banana"]),
    *([("pseudo-boxes", ["--accelerator", "gpu"]), ("train-regressor", ["--accelerator", "gpu"])]
      if not torch.cuda.is_available() else []),
]


@pytest.mark.parametrize("command, extra", TRAINER_OPTIONS, ids=[f"{c} {' '.join(e)}" for c, e in TRAINER_OPTIONS])
def test_bad_trainer_device_options_end_in_one_line(command, extra, data3, ckpts, tmp_path, capfd):
    argv = (["pseudo-boxes", "--ckpt", str(ckpts["c3"]), "--data", str(data3), "--out", str(tmp_path / "b.json"),
             "--threshold", "0.3", "--input-size", str(SIZE)] if command == "pseudo-boxes" else
            ["train-regressor", "--pseudo-boxes", str(tmp_path / "p.json"), "--data", str(data3), "--out",
             str(tmp_path / "reg"), "--no-pretrained"])
    rc, text = _cli([*argv, *extra], capfd)
    assert_one_line(rc, text, " ".join(extra))
    assert not (tmp_path / "b.json.shards").exists()


def test_pseudo_boxes_cream_selected_without_a_val_search(data3, ckpts, tmp_path, capfd):
    rc, text = _cli(["pseudo-boxes", "--ckpt", str(ckpts["c3"]), "--data", str(data3), "--out",
                     str(tmp_path / "b.json"), "--source", "cream_selected", "--threshold", "0.3"], capfd)
    assert_one_line(rc, text, ckpts["c3"], "val-selected CREAM", "--source cream")


# ---------------------------------------------------------------------------------------------- item 2: big images


def test_a_real_15000x15000_png_is_one_image_file_error(big_png, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(Image, "MAX_IMAGE_PIXELS", None)
        with Image.open(big_png) as img:
            assert img.size == (15000, 15000)  # a genuine PNG: only the pixel count is hostile
    with pytest.raises(ImageFileError, match="huge.png: image too large to decode"):
        load_image_rgb(big_png)


@pytest.mark.parametrize("side", [120, 200])  # over MAX_IMAGE_PIXELS (Pillow warns), over twice it (Pillow raises)
def test_localize_writes_the_good_images_and_reports_the_big_one(side, ckpts, tmp_path, capfd, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # a cheap stand-in for a 15000x15000 image
    good = _png(tmp_path / "in" / "good.png", 60, 50)
    big = _png(tmp_path / "in" / "big.png", side, side)
    out = tmp_path / "out"
    rc, text = _cli(["localize", str(tmp_path / "in"), "--ckpt", str(ckpts["c3"]), "--out", str(out),
                     "--device", "cpu"], capfd)
    assert_one_line(rc, text, big, "image too large")
    assert rc == 1
    pred = json.loads((out / "predictions.json").read_text())
    assert [i["file_name"] for i in pred["images"]] == [str(good)]
    assert [f["file_name"] for f in pred["failed"]] == [str(big)]
    assert (out / "overlays" / "good.png").is_file()


def test_localize_real_big_png_in_a_fresh_process(big_png, ckpts, tmp_path):
    good = _png(tmp_path / "good.png", 60, 50)
    out = tmp_path / "out"
    rc, text = _subprocess(["-m", "cream_pl.cli", "localize", str(good), str(big_png), "--ckpt", str(ckpts["c3"]),
                            "--out", str(out), "--device", "cpu"])
    assert_one_line(rc, text, big_png, "image too large")
    assert len(json.loads((out / "predictions.json").read_text())["annotations"]) == 1


def test_data_check_files_reports_a_big_image(data3, tmp_path, capfd, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    root = _copy(data3, tmp_path / "d")
    rel = _ids(root, "test")[1]
    _png(root / "images" / rel, 200, 200)
    rc, text = _cli(["data", "check", str(root), "--files", "--split", "test"], capfd)
    assert_one_line(rc, text, root / "images" / rel, "image too large")


def test_export_scoremaps_names_a_big_image(data3, ckpts, tmp_path, capfd, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    root = _copy(data3, tmp_path / "d")
    rel = _ids(root, "test")[0]
    _png(root / "images" / rel, 200, 200)
    rc, text = _cli(["export-scoremaps", "--ckpt", str(ckpts["c3"]), "--data", str(root), "--out",
                     str(tmp_path / "maps"), "--device", "cpu"], capfd)
    assert_one_line(rc, text, root / "images" / rel, "image too large")


# ---------------------------------------------------------------------------------------------- item 3: modes


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_exported_scoremaps_honour_the_umask(umask, data3, ckpts, tmp_path, capfd):
    old = os.umask(umask)
    try:
        rc, text = _cli(["export-scoremaps", "--ckpt", str(ckpts["c3"]), "--data", str(data3), "--out",
                         str(tmp_path / "maps"), "--methods", "cam", "--device", "cpu"], capfd)
    finally:
        os.umask(old)
    assert rc == 0, text
    files = [*(tmp_path / "maps").rglob("*.npy"), tmp_path / "maps" / "scoremaps.json"]
    assert len(files) == 4
    assert {oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {oct(0o666 & ~umask)}


def test_export_scoremaps_has_no_writer_of_its_own() -> None:
    source = (REPO / "cream_pl" / "pipelines" / "export_scoremaps.py").read_text()
    assert "mkstemp" not in source and "os.replace" not in source  # cream_pl.core.io is the one atomic writer


# ---------------------------------------------------------------------------------------------- item 4: pipelines


def _no_work(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the pipeline started its work before checking its inputs")


def _bad_image_data(data3: Path, dst: Path) -> tuple[Path, Path]:
    root = _copy(data3, dst)
    bad = root / "images" / _ids(root, "val")[1]
    bad.write_bytes(bad.read_bytes()[:200])  # a real PNG, truncated
    return root, bad


def _bad_label_data(data3: Path, dst: Path) -> tuple[Path, Path]:
    root = _copy(data3, dst)
    labels = root / "metadata" / "train" / "class_labels.txt"
    lines = labels.read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0] + ",7"  # 3 classes in class_names.txt
    labels.write_text("\n".join(lines) + "\n")
    return root, labels


@pytest.mark.parametrize("bad", ["image", "label"])
def test_demo_bad_dataset_ends_in_one_line_before_any_work(bad, data3, tmp_path, capfd, monkeypatch):
    import cream_pl.pipelines.runner as runner

    monkeypatch.setattr(runner, "run_experiment", _no_work)
    root, named = (_bad_image_data if bad == "image" else _bad_label_data)(data3, tmp_path / "d")
    rc, text = _call(runner.main, [str(DEMO), "--data", str(root), "--out", str(tmp_path / "o"), "--work",
                                   str(tmp_path / "w")], capfd)
    assert_one_line(rc, text, named, "python -m cream_pl.pipelines.runner: error:")


PIPELINE_OUT_IS_A_FILE: list[tuple[str, list[str], str, str]] = [
    ("runner", ["{demo}", "--out", "{file}"], "cream_pl.pipelines.runner", "run_experiment"),
    ("runner", ["{demo}", "--work", "{file}"], "cream_pl.pipelines.runner", "run_experiment"),
    ("runner", ["{seeds}", "--out", "{file}", "--fast"], "cream_pl.pipelines.runner", "run_experiment"),
    ("runner", ["{methods}", "--work", "{file}", "--fast"], "cream_pl.pipelines.runner", "run_experiment"),
    ("runner", ["{kd}", "--out", "{file}", "--fast"], "cream_pl.pipelines.runner", "run_experiment"),
    ("runner", ["{kd}", "--work", "{file}"], "cream_pl.pipelines.runner", "run_experiment"),
    ("runner", ["{calibrate}", "--out", "{file}"], "cream_pl.pipelines.runner", "run_experiment"),
    ("calibrate_preset", ["--sweep", "body_head_tint=0.1", "--out", "{file}"], "cream_pl.pipelines.calibrate_preset",
     "run_sweep"),
    ("calibrate_preset", ["--sweep", "body_head_tint=0.1", "--work", "{file}"], "cream_pl.pipelines.calibrate_preset",
     "run_sweep"),
    ("recipes", ["pseudo-boxes", "--work", "{file}"], "cream_pl.pipelines.recipes", "pseudo_boxes"),
    ("recipes", ["train-regressor", "--work", "{file}"], "cream_pl.pipelines.recipes", "train_regressor_stage"),
    ("bench", ["--out", "{file}", "--quick"], "cream_pl.pipelines.bench", "run_bench"),
    ("probe_head_lr", ["--recipes", "{recipe}", "--multipliers", "1", "--out", "{file}/probe.json"],
     "cream_pl.pipelines.probe_head_lr", "probe"),
    ("bench_gpu", ["--out", "{file}", "--dry-run"], "cream_pl.pipelines.bench_gpu", "run_bench_gpu"),
    ("bench_gpu", ["--work", "{file}", "--dry-run"], "cream_pl.pipelines.bench_gpu", "run_bench_gpu"),
]


@pytest.mark.parametrize("name, argv, module, work", PIPELINE_OUT_IS_A_FILE,
                         ids=[f"{n} {' '.join(a)}" for n, a, _, _ in PIPELINE_OUT_IS_A_FILE])
def test_pipeline_output_folder_that_is_a_file(name, argv, module, work, tmp_path, capfd, monkeypatch):
    import importlib

    monkeypatch.chdir(tmp_path)  # the defaults of the other folders land here
    monkeypatch.setattr(importlib.import_module(module), work, _no_work)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    recipe = REPO / "experiments" / "embedded_cream.yaml"
    argv = [a.replace("{file}", str(a_file)).replace("{recipe}", str(recipe)).replace("{demo}", str(DEMO))
            .replace("{seeds}", str(DEMO.with_name("demo_seeds.yaml"))).replace("{methods}",
                                                                                str(DEMO.with_name("demo_methods.yaml")))
            .replace("{calibrate}", str(DEMO.with_name("calibrate_cub.yaml")))
            .replace("{kd}", str(DEMO.with_name("demo_kd.yaml")))
            for a in argv]
    rc, text = _call(_pipeline(name), argv, capfd)
    assert_one_line(rc, text, a_file, f"python -m cream_pl.pipelines.{name}: error:")


@pytest.mark.parametrize("name, argv, module, work", [
    ("recipes", ["train-cub", "--recipe", "{missing}"], "cream_pl.pipelines.recipes", "train_cub"),
])
def test_pipeline_missing_recipe_is_one_line(name, argv, module, work, tmp_path, capfd, monkeypatch):
    import importlib

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(importlib.import_module(module), work, _no_work)
    missing = tmp_path / "no_such_recipe.yaml"
    rc, text = _call(_pipeline(name), [a.replace("{missing}", str(missing)) for a in argv], capfd)
    assert_one_line(rc, text, missing, "--recipe")


def test_recipes_bad_dataset_ends_in_one_line(data3, tmp_path, capfd, monkeypatch):
    import cream_pl.pipelines.recipes as recipes

    monkeypatch.setattr(recipes, "pseudo_boxes", _no_work)
    root, labels = _bad_label_data(data3, tmp_path / "d")
    rc, text = _call(recipes.main, ["pseudo-boxes", "--data", str(root), "--work", str(tmp_path / "w")], capfd)
    assert_one_line(rc, text, labels)


def test_recipes_train_regressor_checks_the_classifier_against_the_data(data5, ckpts, tmp_path, capfd):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(ckpts["c3"], work / "classifier.ckpt")
    (work / "pseudo_boxes_cream.json").write_text("{}")
    rc, text = _call(_pipeline("recipes"), ["train-regressor", "--data", str(data5), "--work", str(work)], capfd)
    assert_one_line(rc, text, work / "classifier.ckpt", data5 / "class_names.txt")
    assert not (work / "regressor_cream").exists()


def test_demo_bad_image_in_a_fresh_process(data3, tmp_path):
    root, bad = _bad_image_data(data3, tmp_path / "d")
    rc, text = _subprocess(["-m", "cream_pl.pipelines.runner", str(DEMO), "--data", str(root), "--out",
                            str(tmp_path / "o"), "--work", str(tmp_path / "w")], timeout=120)
    assert_one_line(rc, text, bad)


# ---------------------------------------------------------------------------------------------- item 5: pseudo boxes


def test_pseudo_boxes_rerun_with_other_settings_is_refused(data3, ckpts, tmp_path, capfd):
    out = tmp_path / "boxes.json"
    base = ["pseudo-boxes", "--ckpt", str(ckpts["c3"]), "--data", str(data3), "--out", str(out), "--input-size",
            str(SIZE), "--batch-size", "2", "--num-workers", "0", "--accelerator", "cpu", "--devices", "1"]
    rc, text = _cli([*base, "--threshold", "0.3", "--keep-shards"], capfd)
    assert rc == 0, text
    finished = out.read_bytes()
    rc, text = _cli([*base, "--threshold", "0.5"], capfd)  # another τ: the finished file is not replaced
    assert_one_line(rc, text, out, "--overwrite", "threshold")
    assert out.read_bytes() == finished
    out.unlink()  # what is left: shards of the τ = 0.3 run
    rc, text = _cli([*base, "--threshold", "0.5"], capfd)
    assert_one_line(rc, text, f"{out}.shards", "different pseudo-box run", "--overwrite")
    rc, text = _cli([*base, "--threshold", "0.3"], capfd)  # the same settings resume from the shards
    assert rc == 0 and out.read_bytes() == finished
    rc, text = _cli([*base, "--threshold", "0.3"], capfd)  # and a finished identical run is skipped
    assert rc == 0 and out.read_bytes() == finished
    rc, text = _cli([*base, "--threshold", "0.5", "--overwrite"], capfd)
    assert rc == 0 and json.loads(out.read_text())["info"]["threshold"] == 0.5


def test_pseudo_boxes_refuses_to_replace_a_file_it_did_not_write(data3, ckpts, tmp_path, capfd):
    out = tmp_path / "notes.json"
    out.write_text('{"my": "notes"}')
    rc, text = _cli(["pseudo-boxes", "--ckpt", str(ckpts["c3"]), "--data", str(data3), "--out", str(out),
                     "--threshold", "0.3", "--input-size", str(SIZE), "--accelerator", "cpu"], capfd)
    assert_one_line(rc, text, out, "--overwrite")
    assert out.read_text() == '{"my": "notes"}'


# ---------------------------------------------------------------------------------------------- item 8: smaller ones


def test_config_typo_is_one_line_naming_file_and_key(data3, tmp_path):
    cfg = _lightning_config(tmp_path, data3)
    raw = yaml.safe_load(cfg.read_text())
    raw["trainer"]["max_epocs"] = 2
    cfg.write_text(yaml.safe_dump(raw))
    rc, text = _subprocess(["-m", "cream_pl.cli", "fit", "--config", str(cfg)])
    assert_one_line(rc, text, cfg, "trainer.max_epocs")
    assert "usage:" not in text


def test_missing_config_file_is_one_line(tmp_path, capfd):
    rc, text = _cli(["fit", "--config", str(tmp_path / "nope.yaml")], capfd)
    assert_one_line(rc, text, tmp_path / "nope.yaml")


def _mask_split(root: Path) -> Path:
    meta = root / "metadata" / "test"
    meta.mkdir(parents=True)
    (meta / "image_ids.txt").write_text("a.png\nb.png")
    (meta / "class_labels.txt").write_text("a.png,0\nb.png,1")
    (meta / "image_sizes.txt").write_text("a.png,64,48\nb.png,64,48")
    (meta / "localization.txt").write_text("a.png,a_mask.png,ignore.png\nb.png,b_mask.png,ignore.png")
    (root / "masks").mkdir()
    for name in ("a_mask.png", "ignore.png"):  # b_mask.png is missing
        cv2.imwrite(str(root / "masks" / name), np.zeros((48, 64), np.uint8))
    (root / "maps").mkdir()
    for image_id in ("a.png", "b.png"):
        np.save(root / "maps" / f"{image_id}.npy", np.random.default_rng(0).random((224, 224)))
    return meta


def test_evaluate_missing_mask_is_one_line_without_an_opencv_warning(tmp_path, capfd):
    meta = _mask_split(tmp_path)
    rc, text = _cli(["evaluate", "--metadata", str(meta), "--scoremaps", str(tmp_path / "maps"), "--mask-root",
                     str(tmp_path / "masks"), "--out", str(tmp_path / "s.json"), "--num-workers", "1"], capfd)
    assert_one_line(rc, text, tmp_path / "masks" / "b_mask.png", "file not found")
    assert "WARN" not in text


def test_evaluate_refuses_a_complex_score_map(tmp_path, capfd):
    meta = _mask_split(tmp_path)
    bad = tmp_path / "maps" / "b.png.npy"
    np.save(bad, np.full((224, 224), 0.5 + 0.5j))
    (tmp_path / "masks" / "b_mask.png").write_bytes((tmp_path / "masks" / "a_mask.png").read_bytes())
    rc, text = _cli(["evaluate", "--metadata", str(meta), "--scoremaps", str(tmp_path / "maps"), "--mask-root",
                     str(tmp_path / "masks"), "--out", str(tmp_path / "s.json")], capfd)
    assert_one_line(rc, text, bad, "complex")
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize("where", ["metadata/test/image_ids.txt", "maps/a.png.npy", "masks/a_mask.png"])
def test_evaluate_never_writes_over_one_of_its_inputs(where, tmp_path, capfd):
    """Before: ``--out meta/image_ids.txt`` (or a score map, a mask) was replaced by the results, exit 0."""
    meta = _mask_split(tmp_path)
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 10:40] = 255
    for name in ("a_mask.png", "b_mask.png"):
        cv2.imwrite(str(tmp_path / "masks" / name), mask)
    target = tmp_path / where
    before = target.read_bytes()
    rc, text = _cli(["evaluate", "--metadata", str(meta), "--scoremaps", str(tmp_path / "maps"), "--mask-root",
                     str(tmp_path / "masks"), "--out", str(target)], capfd)
    assert_one_line(rc, text, target, "which the evaluation reads")
    assert target.read_bytes() == before
    new = tmp_path / "maps" / "scores.json"  # a results file beside the maps is fine, and a rerun replaces it
    for _ in range(2):
        rc, text = _cli(["evaluate", "--metadata", str(meta), "--scoremaps", str(tmp_path / "maps"), "--mask-root",
                         str(tmp_path / "masks"), "--out", str(new)], capfd)
        assert rc == 0 and json.loads(new.read_text())["num_images"] == 2, text


@pytest.mark.parametrize("kind", ["text", "folder"])
def test_evaluate_names_a_score_map_that_is_text_or_a_folder_for_what_it_is(kind, tmp_path, capfd):
    """Before: a text file was "pickled data" (numpy's words for any file without its header), a folder "no score map"."""
    meta = _mask_split(tmp_path)
    bad = tmp_path / "maps" / "a.png.npy"
    bad.unlink()
    bad.mkdir() if kind == "folder" else bad.write_text("0.5 0.5\n")
    rc, text = _cli(["evaluate", "--metadata", str(meta), "--scoremaps", str(tmp_path / "maps"), "--mask-root",
                     str(tmp_path / "masks"), "--out", str(tmp_path / "s.json")], capfd)
    assert_one_line(rc, text, bad, "a folder, not a .npy file" if kind == "folder" else "not a .npy file (no NumPy header")
    assert "pickled" not in text


def test_evaluate_refuses_repeated_iou_levels(tmp_path, capfd):
    """Before: ``--iou-thresholds 50 50`` was scored (MaxBoxAccV2 then counts IoU 50 twice)."""
    meta = _mask_split(tmp_path)
    (meta / "localization.txt").write_text("a.png,5,5,40,30\nb.png,10,10,50,40")  # boxes
    rc, text = _cli(["evaluate", "--metadata", str(meta), "--scoremaps", str(tmp_path / "maps"), "--out",
                     str(tmp_path / "s.json"), "--iou-thresholds", "50", "50"], capfd)
    assert_one_line(rc, text, "IoU levels repeat: [50, 50]")
    assert not (tmp_path / "s.json").exists()


def test_localize_rerun_replaces_the_previous_runs_overlays(ckpts, tmp_path, capfd):
    a, b = _png(tmp_path / "in" / "a.png", 60, 50), _png(tmp_path / "in" / "b.png", 40, 70)
    out = tmp_path / "out"
    assert _cli(["localize", str(a), str(b), "--ckpt", str(ckpts["c3"]), "--out", str(out), "--device", "cpu"],
                capfd)[0] == 0
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["a.png", "b.png"]
    rc, text = _cli(["localize", str(b), "--ckpt", str(ckpts["c3"]), "--out", str(out), "--device", "cpu"], capfd)
    assert rc == 0, text
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["b.png"]  # no stale a.png
    assert [i["overlay"] for i in json.loads((out / "predictions.json").read_text())["images"]] == ["overlays/b.png"]
    before = (out / "predictions.json").read_bytes()
    typo = tmp_path / "in" / "bb.png"  # a rerun whose every input fails: the results above are not lost
    rc, text = _cli(["localize", str(typo), "--ckpt", str(ckpts["c3"]), "--out", str(out), "--device", "cpu"], capfd)
    assert rc == 1 and "Traceback" not in text and str(typo) in text and "are kept" in text, text
    assert (out / "predictions.json").read_bytes() == before
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["b.png"]


# ---------------------------------------------------------------------------------------------- bad paths


def test_bad_paths_of_every_command(data3, ckpts, tmp_path, capfd):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    missing = tmp_path / "missing"
    cases: list[tuple[list[str], Path]] = [
        (["data", "synth", "--out", str(a_file), "--num-train", "8"], a_file),
        (["data", "cub", "--src", str(missing), "--out", str(tmp_path / "cub")], missing),
        (["data", "check", str(missing)], missing),
        (["data", "check", str(data3), "--split", "nosuch"], data3 / "metadata" / "nosuch"),
        (["evaluate", "--metadata", str(missing), "--scoremaps", str(tmp_path), "--out", str(tmp_path / "s.json")],
         missing),
        (["evaluate", "--metadata", str(data3 / "metadata" / "test"), "--scoremaps", str(tmp_path), "--out",
          str(a_file / "s.json")], a_file),
        (["export-scoremaps", "--ckpt", str(ckpts["c3"]), "--data", str(missing), "--out", str(tmp_path / "m")],
         missing),
        (["export-scoremaps", "--ckpt", str(ckpts["c3"]), "--data", str(data3), "--out", str(a_file)], a_file),
        (["pseudo-boxes", "--ckpt", str(ckpts["c3"]), "--data", str(missing), "--out", str(tmp_path / "b.json")],
         missing),
        (["pseudo-boxes", "--ckpt", str(ckpts["missing"]), "--data", str(data3), "--out", str(tmp_path / "b.json")],
         ckpts["missing"]),
        (["train-regressor", "--pseudo-boxes", str(missing), "--data", str(data3), "--out", str(a_file)], a_file),
        (["localize", str(tmp_path), "--ckpt", str(ckpts["missing"]), "--out", str(tmp_path / "o")],
         ckpts["missing"]),
        (["localize", str(tmp_path), "--ckpt", str(ckpts["c3"]), "--out", str(a_file)], a_file),
        (["fit", "--config", str(missing / "cfg.yaml")], missing / "cfg.yaml"),
    ]
    for argv, named in cases:
        rc, text = _cli(argv, capfd)
        assert_one_line(rc, text, named)


def test_pseudo_boxes_val_threshold_on_a_split_without_boxes_is_one_line_before_the_model(data3, ckpts, tmp_path, capfd):
    """Before: a whole val pass, then a 26-line traceback ('validation did not produce a threshold τ*'), exit 1."""
    import shutil

    masks_only = tmp_path / "masks_only"
    shutil.copytree(data3, masks_only)
    (masks_only / "metadata" / "val" / "localization.txt").write_text("")  # no boxes (masks only, as OpenImages')
    argv = ["pseudo-boxes", "--ckpt", str(ckpts["c3"]), "--data", str(masks_only), "--out", str(tmp_path / "b.json"),
            "--num-workers", "0"]
    rc, text = _cli(argv, capfd)
    assert_one_line(rc, text, f"{masks_only / 'metadata' / 'val'}: no boxes", "give --threshold")
    assert not (tmp_path / "b.json").exists()
