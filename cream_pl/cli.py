"""The ``cream-pl`` command.

``cream-pl fit|validate|test|predict --config ...`` goes to Lightning's CLI; every other
sub-command is a small argparse parser contributed by the module that owns it (each module
exposes ``add_parser(subparsers)`` and sets ``func(args) -> int``).

Example:
    $ cream-pl data synth --out data/synth --seed 0
    $ cream-pl fit --config experiments/embedded_cream.yaml
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")

# sub-command -> module that owns it (imported lazily so `cream-pl --help` stays fast).
SUBCOMMAND_MODULES: dict[str, str] = {
    "data": "cream_pl.data.cli",
    "evaluate": "cream_pl.metrics.cli",
    "localize": "cream_pl.localize",
    "pseudo-boxes": "cream_pl.callbacks.pseudo_boxes",
    "train-regressor": "cream_pl.regressor_train",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cream-pl",
        description="Weakly supervised object localization: CAM, CREAM, CREAM_reg, KD-CI-CAM. "
        f"Training and inference: cream-pl {{{','.join(LIGHTNING_SUBCOMMANDS)}}} --config FILE (Lightning CLI).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue  # the sub-command has not been built yet
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LIGHTNING_SUBCOMMANDS:
        from cream_pl.lightning_cli import run_lightning_cli

        run_lightning_cli(argv)
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
