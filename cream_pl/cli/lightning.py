"""``cream-pl fit|validate|test|predict --config ...``: Lightning's CLI over every cream-pl module.

Models and data modules are given by ``class_path`` in the YAML (``configs/`` by component,
``experiments/`` one recipe per result row). The data module's ``num_classes`` is linked into the
model, so a recipe never repeats it.

User errors (a bad image or metadata line, missing pretrained weights, ...; see
:mod:`cream_pl.core.errors`) end the command with one line, ``cream-pl fit: error: <file>:<line>: ...``,
and exit status 2, whether they are raised while the classes are built (where jsonargparse wraps
them), in ``setup`` or in a ``DataLoader`` worker.

Example:
    $ cream-pl fit --config experiments/embedded_cream.yaml --trainer.max_epochs 2
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from cream_pl.core.errors import user_error_message

__all__ = ["CreamCLI", "run_lightning_cli", "build_from_recipe", "set_dotted"]


class CreamCLI(LightningCLI):
    """LightningCLI with the data module's class count linked into the model and W&B val media on every trainer."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> pl.Trainer:
        """Every trainer also gets :class:`~cream_pl.reporting.wandb_media.WSOLMediaCallback` (val overlays to W&B)."""
        from cream_pl.reporting.wandb_media import WSOLMediaCallback

        return super()._instantiate_trainer(config, [*callbacks, WSOLMediaCallback()])


def run_lightning_cli(argv: Sequence[str]) -> CreamCLI:
    """Run Lightning's CLI on ``argv`` (``["fit", "--config", ...]``).

    Raises:
        SystemExit: status 2 after printing one line on stderr for a user error (see the module
            docstring); other exceptions propagate with their traceback.
    """
    import cream_pl.data.datamodule  # noqa: F401  (register the data modules, so short class names resolve)
    import cream_pl.models  # noqa: F401

    argv = list(argv)
    try:
        with warnings.catch_warnings():  # main() passes sys.argv[1:] as args on purpose
            warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
            return CreamCLI(
                pl.LightningModule,
                pl.LightningDataModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                args=argv,
                save_config_kwargs={"overwrite": True},
                auto_configure_optimizers=False,
            )
    except Exception as err:
        message = user_error_message(err)
        if message is None:
            raise
        command = argv[0] if argv else "fit"
        print(f"cream-pl {command}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def set_dotted(config: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``config[a][b][c] = value`` for ``dotted = "a.b.c"``; integer keys index into lists.

    Example:
        >>> cfg = {"trainer": {"callbacks": [{"init_args": {"dirpath": "a"}}]}}
        >>> set_dotted(cfg, "trainer.callbacks.0.init_args.dirpath", "b"); cfg["trainer"]["callbacks"][0]
        {'init_args': {'dirpath': 'b'}}
    """
    node: Any = config
    keys = dotted.split(".")
    for i, key in enumerate(keys[:-1]):
        try:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        except (IndexError, ValueError):
            raise KeyError(f"override {dotted!r}: {'.'.join(keys[: i + 1])!r} is not in the recipe") from None
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def build_from_recipe(
    recipe: Path | str, overrides: Mapping[str, Any] | None = None, workdir: Path | str | None = None
) -> CreamCLI:
    """Instantiate (without running) the trainer, model and data module of a recipe YAML.

    Args:
        recipe: ``experiments/*.yaml`` (or any ``cream-pl fit`` config).
        overrides: dotted keys to values, list items by index (e.g.
            ``{"trainer.callbacks.0.init_args.dirpath": "runs/x/checkpoints"}``); a value replaces
            the whole node (``{"trainer.callbacks": []}`` drops every callback).
        workdir: where the resolved config is written (``<workdir>/config.yaml``); default the
            recipe's ``trainer.default_root_dir``.

    Returns:
        The CLI object: ``cli.trainer``, ``cli.model``, ``cli.datamodule``.
    """
    import yaml

    import cream_pl.data.datamodule  # noqa: F401  (register the data modules, so short class names resolve)
    import cream_pl.models  # noqa: F401

    config = yaml.safe_load(Path(recipe).read_text())
    for key, value in (overrides or {}).items():
        set_dotted(config, key, value)
    workdir = Path(workdir or Path(config.get("trainer", {}).get("default_root_dir", "outputs")))
    workdir.mkdir(parents=True, exist_ok=True)
    resolved = workdir / "config.yaml"
    resolved.write_text(yaml.safe_dump(config, sort_keys=False))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
        return CreamCLI(
            pl.LightningModule, pl.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
            args=["--config", str(resolved)], run=False, save_config_callback=None,
        )
