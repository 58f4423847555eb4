"""``cream-pl fit|validate|test|predict --config ...``: Lightning's CLI over every cream-pl module.

Models and data modules are given by ``class_path`` in the YAML (``configs/`` by component,
``experiments/`` one recipe per result row). The data module's ``num_classes`` is linked into the
model, so a recipe never repeats it.

Example:
    $ cream-pl fit --config experiments/embedded_cream.yaml --trainer.max_epochs 2
"""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

__all__ = ["CreamCLI", "run_lightning_cli"]


class CreamCLI(LightningCLI):
    """LightningCLI with the data module's class count linked into the model."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")


def run_lightning_cli(argv: Sequence[str]) -> CreamCLI:
    """Run Lightning's CLI on ``argv`` (``["fit", "--config", ...]``)."""
    import cream_pl.data  # noqa: F401  (make the class paths importable by short name)

    return CreamCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=list(argv),
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )
