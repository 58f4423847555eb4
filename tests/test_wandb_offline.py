"""``AutoWandbLogger`` with a real tiny fit: ``WANDB_MODE=disabled`` writes nothing, offline runs hold the media."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import wandb

from cream_pl.data import WSOLDataModule, generate_synthetic_dataset
from cream_pl.models import WSOLClassifier
from cream_pl.reporting.loggers import AutoWandbLogger

os.environ.setdefault("WANDB_MODE", "disabled")

SIZE = 64


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return generate_synthetic_dataset(tmp_path_factory.mktemp("synth"), seed=1, num_classes=3, num_train=12,
                                      num_val=6, num_test=6, min_side=72, max_side=96, image_format="png",
                                      overwrite=True)


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """Keep every W&B file of the test (config, cache, artifacts) under ``tmp_path``; finish the run after."""
    monkeypatch.chdir(tmp_path)
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home" / var.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))  # not logged in
    monkeypatch.setenv("CREAM_PL_CACHE_DIR", str(tmp_path / "cache"))
    yield tmp_path
    wandb.finish()


def _fit(data: Path, logger: AutoWandbLogger, root: Path, num_media_images: int = 4) -> pl.Trainer:
    from cream_pl.reporting.wandb_media import WSOLMediaCallback

    pl.seed_everything(0)
    dm = WSOLDataModule(str(data), batch_size=6, resize_size=72, crop_size=SIZE, eval_size=SIZE)
    model = WSOLClassifier(num_classes=3, pretrained=False, cam_curve_interval=0.05, eval_size=SIZE, lr=0.01,
                           num_media_images=num_media_images)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=logger, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         log_every_n_steps=1, default_root_dir=str(root / "run"),
                         callbacks=[WSOLMediaCallback()])  # what `cream-pl fit` (CreamCLI) adds to every trainer
    trainer.fit(model, dm)
    return trainer


def test_disabled_mode_creates_no_run(tiny_data, wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    save_dir = wandb_env / "wandb_logs"
    logger = AutoWandbLogger(save_dir=str(save_dir), name="disabled")
    assert logger.disabled
    _fit(tiny_data, logger, wandb_env)
    assert not save_dir.exists()  # no save_dir, no wandb/offline-run-*
    assert not list(wandb_env.rglob("offline-run-*")) and not list(wandb_env.rglob("run-*.wandb"))
    assert os.environ["WANDB_MODE"] == "disabled"  # the logger did not rewrite it


def test_offline_run_holds_overlays_and_curves(tiny_data, wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    save_dir = wandb_env / "wandb_logs"
    logger = AutoWandbLogger(save_dir=str(save_dir), name="offline")
    assert logger.wandb_mode == "offline"
    _fit(tiny_data, logger, wandb_env)
    run_dir = Path(logger.experiment.dir).parent
    wandb.finish()
    assert run_dir.parent == save_dir / "wandb" and run_dir.name.startswith("offline-run-")
    assert (run_dir / f"run-{run_dir.name.rsplit('-', 1)[-1]}.wandb").stat().st_size > 0  # the run's records
    media = run_dir / "files" / "media"
    images = sorted(p.relative_to(media).as_posix() for p in (media / "images").rglob("*.png"))
    tables = sorted(p.relative_to(media).as_posix() for p in (media / "table").rglob("*.table.json"))
    for kind in ("grid", "cam_overlays", "cream_overlays"):  # the overlay grid, per-image CAM / CREAM overlays
        assert any(p.startswith(f"images/val/media/{kind}_") for p in images), (kind, images)
    boxes = list((media / "metadata" / "boxes2D" / "val" / "media").glob("cream_overlays_*.boxes2D.json"))
    assert boxes  # the interactive GT / predicted boxes of the overlays
    names = (tiny_data / "class_names.txt").read_text().split()  # each box names its image's class (before: class_0)
    captions = [b["box_caption"] for f in boxes for b in json.loads(f.read_text())["box_data"]]
    gt = [c[4:] for c in captions if c.startswith("GT: ")]
    assert gt and all(c.split(": ", 1)[1] in names for c in captions), captions
    assert len(set(gt)) > 1  # the first val images are of several classes
    assert any(p.startswith("table/val/media/box_acc_curve_table_") for p in tables), tables  # the BoxAcc curve
    assert os.environ["WANDB_MODE"] == "offline"


@pytest.mark.parametrize("mode", ["disabled", "offline"])
def test_values_wb_refuses_are_one_line_naming_the_logger(mode, tiny_data, wandb_env, monkeypatch):
    """Before: a project name with '/' (``entity/project``) or a tag over 64 characters ended the fit's setup in a
    60-line traceback from wandb; an unknown WANDB_MODE in a pydantic one."""
    from cream_pl.core.errors import UserValueError

    monkeypatch.setenv("WANDB_MODE", mode)
    logger = AutoWandbLogger(save_dir=str(wandb_env / "logs"), tags=["x" * 70])
    with pytest.raises(UserValueError, match=r"^trainer.logger \(AutoWandbLogger\): W&B refused the run: .*"
                       "Tags must be between 1 and 64 characters"):
        _ = logger.experiment
    # names W&B's server refuses, checked when the logger is made (before: an entity with '/' or an empty project
    # went through offline, and `wandb sync` refused the run after the whole fit)
    for kwargs, words in (({"project": "me/cream"}, "project: 'me/cream' is no W&B project name"),
                          ({"project": ""}, "project: '' is no W&B project name"),
                          ({"entity": "me/team"}, "entity: 'me/team' is no W&B entity name")):
        with pytest.raises(UserValueError, match=words):
            AutoWandbLogger(save_dir=str(wandb_env / "logs"), **kwargs)
    monkeypatch.setenv("WANDB_PROJECT", "me/cream")  # W&B takes it over the config's: named as the variable
    with pytest.raises(UserValueError, match="WANDB_PROJECT='me/cream' is no W&B project name"):
        AutoWandbLogger(save_dir=str(wandb_env / "logs"))
    monkeypatch.delenv("WANDB_PROJECT")
    for bad in ("bogus", " Offline "):  # as W&B reads it (before: ' Offline ' passed here, then pydantic refused it)
        monkeypatch.setenv("WANDB_MODE", bad)
        with pytest.raises(UserValueError, match=f"WANDB_MODE={bad}: not a W&B mode"):
            AutoWandbLogger(save_dir=str(wandb_env / "logs"))


def test_each_fit_under_a_wb_logger_keeps_its_own_config(tiny_data, wandb_env, monkeypatch):
    """Before: every fit under configs/logger/wandb.yaml wrote <save_dir>/config.yaml over the last one's. Each is kept
    beside its run's checkpoints, a disabled run's too, and never in the W&B run's files/, where W&B writes its own."""
    import yaml

    from cream_pl.cli import main

    cfg = {"seed_everything": 0,
           "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 1, "limit_train_batches": 1,
                       "limit_val_batches": 1, "num_sanity_val_steps": 0, "enable_progress_bar": False,
                       "enable_model_summary": False, "default_root_dir": str(wandb_env / "run"),
                       "logger": {"class_path": "cream_pl.reporting.loggers.AutoWandbLogger",
                                  "init_args": {"save_dir": str(wandb_env / "logs")}}},
           "model": {"class_path": "cream_pl.models.WSOLClassifier",
                     "init_args": {"pretrained": False, "eval_size": SIZE, "num_media_images": 0}},
           "data": {"class_path": "cream_pl.data.WSOLDataModule",
                    "init_args": {"data_root": str(tiny_data), "batch_size": 6, "num_workers": 0, "resize_size": 72,
                                  "crop_size": SIZE, "eval_size": SIZE}}}
    path = wandb_env / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    for mode, lr in (("offline", "0.01"), ("offline", "0.5"), ("disabled", "0.2")):
        monkeypatch.setenv("WANDB_MODE", mode)
        assert main(["fit", "--config", str(path), "--model.init_args.lr", lr]) in (0, None)
        wandb.finish()
    saved = sorted((wandb_env / "logs").rglob("config.yaml"))
    mine = [p for p in saved if p.parent.name != "files"]  # W&B's own config.yaml of each offline run aside
    assert len(mine) == 3 and all(any(p.parent.rglob("*.ckpt")) for p in mine)
    assert sorted(yaml.safe_load(p.read_text())["model"]["init_args"]["lr"] for p in mine) == [0.01, 0.2, 0.5]


def test_media_wb_cannot_stage_never_end_the_fit(tiny_data, wandb_env, monkeypatch):
    """Before: an unwritable W&B data folder (a read-only ~/.local/share/wandb on a cluster node) ended the fit at its
    first validation, in three tracebacks, before any checkpoint. Now the media are left out with one warning."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    (wandb_env / "a_file").write_text("")
    monkeypatch.setenv("WANDB_DATA_DIR", str(wandb_env / "a_file" / "wandb"))  # cannot be made
    logger = AutoWandbLogger(save_dir=str(wandb_env / "wandb_logs"), name="no_staging")
    with pytest.warns(UserWarning, match="W&B media not logged, and not tried again in this fit: .*WANDB_DATA_DIR"):
        trainer = _fit(tiny_data, logger, wandb_env)
    assert trainer.state.finished and trainer.current_epoch == 1


def test_no_media_images_still_logs_the_curves_and_a_negative_count_is_refused(tiny_data, wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = AutoWandbLogger(save_dir=str(wandb_env / "wandb_logs"), name="curves_only")
    _fit(tiny_data, logger, wandb_env, num_media_images=0)
    media = Path(logger.experiment.dir) / "media"
    wandb.finish()
    assert list((media / "table").rglob("box_acc_curve_table_*.table.json"))  # before: nothing at all with 0 images
    assert not (media / "images").exists()
    with pytest.raises(ValueError, match="num_media_images must be >= 0"):  # before: -1 logged nothing, silently
        WSOLClassifier(num_classes=3, pretrained=False, num_media_images=-1)


@pytest.mark.parametrize("mode", ["disabled", "offline"])
def test_a_save_dir_of_home_is_expanded_and_an_empty_one_refused(mode, wandb_env, monkeypatch):
    """Before: '~/x' made a folder literally named '~' in the working folder while W&B wrote to $HOME/x (then the
    fit's config.yaml failed to save there); '' was a 40-line jsonargparse traceback."""
    from cream_pl.core.errors import UserValueError

    monkeypatch.setenv("WANDB_MODE", mode)
    monkeypatch.setenv("HOME", str(wandb_env / "home"))
    logger = AutoWandbLogger(save_dir="~/wb")
    assert logger.save_dir == str(wandb_env / "home" / "wb") and not (wandb_env / "~").exists()
    for empty in ("", "  "):
        with pytest.raises(UserValueError, match=r"^save_dir: '\s*' is no folder"):
            AutoWandbLogger(save_dir=empty)
