"""``configs/`` by component (data, model, trainer, logger): every file composes into a real Lightning CLI."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted((CONFIGS / "data").glob("*.yaml")), ids=lambda p: p.name)
def test_data_configs_name_real_data_module_arguments(path):
    from cream_pl.data import WSOLDataModule

    cfg = yaml.safe_load(path.read_text())
    assert set(cfg) == {"data"} and cfg["data"]["class_path"] == "cream_pl.data.WSOLDataModule"
    params = inspect.signature(WSOLDataModule.__init__).parameters
    unknown = set(cfg["data"]["init_args"]) - set(params)
    assert not unknown, f"{path.name}: not WSOLDataModule arguments: {sorted(unknown)}"
    assert (cfg["data"]["init_args"]["crop_size"], cfg["data"]["init_args"]["eval_size"]) == (224, 224)  # protocol


def test_components_compose_into_one_run(tmp_path, monkeypatch):
    """trainer + model + data + logger components, as the README shows, build a trainer, model and data module."""
    import warnings

    import pytorch_lightning as pl

    from cream_pl.cli.lightning import CreamCLI
    from cream_pl.data.synth import generate_synthetic_dataset

    monkeypatch.setenv("WANDB_MODE", "disabled")
    root = generate_synthetic_dataset(tmp_path / "synth", seed=1, num_classes=3, num_train=6, num_val=3, num_test=3,
                                      min_side=64, max_side=80)
    args = [f"--config={CONFIGS / c}" for c in ("trainer/cpu.yaml", "model/cream.yaml", "data/embedded.yaml",
                                                 "logger/none.yaml")]
    args += [f"--data.init_args.data_root={root}", "--model.init_args.pretrained=false",
             f"--trainer.default_root_dir={tmp_path / 'run'}"]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
        cli = CreamCLI(pl.LightningModule, pl.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                       args=args, run=False, save_config_callback=None)
    assert cli.datamodule.hparams.crop_size == 224 and Path(cli.datamodule.hparams.data_root) == root
    assert cli.model.hparams.num_classes == 3  # linked from the data module's metadata
    assert cli.model.hparams.cream is True
    from cream_pl.reporting.wandb_media import WSOLMediaCallback

    assert sum(isinstance(cb, WSOLMediaCallback) for cb in cli.trainer.callbacks) == 1  # W&B val media, as before
