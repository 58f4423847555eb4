"""The ``cream-pl`` command.

``cream-pl fit|validate|test|predict --config ...`` goes to Lightning's CLI; every other
sub-command is a small argparse parser. Start-up stays light: ``cream-pl --help`` and every
``cream-pl <command> --help`` are answered from the standard-library parsers of
:mod:`cream_pl.cli.parsers`, and a command imports its implementation (torch, Lightning, ...)
only when it runs. A user's bad input ends in one line (``cream-pl <command>: error: ...``, exit 2).

Example:
    $ cream-pl data synth --out data/synth --seed 0
    $ cream-pl fit --config experiments/embedded_cream.yaml
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cream_pl.cli.parsers import SUBCOMMANDS
from cream_pl.core.options import OneLineArgumentParser

__all__ = ["LIGHTNING_SUBCOMMANDS", "SUBCOMMAND_MODULES", "build_parser", "main"]

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")

SUBCOMMAND_MODULES: dict[str, str] = {name: cmd.module for name, cmd in SUBCOMMANDS.items()}
"""sub-command -> module that implements it (imported only when the command runs)."""


def _root_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = OneLineArgumentParser(
        prog="cream-pl",
        description="Weakly supervised object localization: CAM, CREAM, CREAM_reg, KD-CI-CAM. "
        f"Training and inference: cream-pl {{{','.join(LIGHTNING_SUBCOMMANDS)}}} --config FILE (Lightning CLI).",
    )
    return parser, parser.add_subparsers(dest="command", metavar="COMMAND")


def build_light_parser() -> argparse.ArgumentParser:
    """Every sub-command from its light parser: no torch, no Lightning (``--help``, usage errors)."""
    parser, subparsers = _root_parser()
    for name in LIGHTNING_SUBCOMMANDS:  # main() hands these to Lightning's CLI; listed so that help and a typo name them
        subparsers.add_parser(name, add_help=False, help=f"{name} with Lightning's CLI: --config FILE")
    for cmd in SUBCOMMANDS.values():
        cmd.add(subparsers)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The ``cream-pl`` parser (:func:`build_light_parser`: each command's module loads when it runs)."""
    return build_light_parser()


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cream-pl ARGV``: its exit status (0, 2 for a user error, 130 / 143 when Ctrl-C / SIGTERM stopped it)."""
    from cream_pl.core.interrupts import report_stop, sigterm_raises

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with sigterm_raises():
            return _run(argv)
    except BaseException as err:  # Ctrl-C, SIGTERM: one line, not a traceback (or status 0: Lightning's SIGTERM)
        command = next((a for a in argv if not a.startswith("-")), None)
        status = report_stop(err, "cream-pl" if command is None else f"cream-pl {command}")
        if status is None:
            raise
        return status


def _run(argv: list[str]) -> int:
    if argv and argv[0] in LIGHTNING_SUBCOMMANDS:
        from cream_pl.cli.lightning import run_lightning_cli

        run_lightning_cli(argv)
        return 0
    parser = build_light_parser()
    try:
        args = parser.parse_args(argv)  # a bad option or number: one line (OneLineArgumentParser), status 2
    except SystemExit as exit_:  # --help (0) or a parse error (2): returned, as every other status
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except Exception as err:  # a user's bad input ends in one line; programming errors keep their traceback
        from cream_pl.core.errors import user_error_message

        message = user_error_message(err)  # also unwraps DataLoader-worker re-raises
        if message is None:
            raise
        print(f"cream-pl {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
