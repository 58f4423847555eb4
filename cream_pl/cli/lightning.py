"""``cream-pl fit|validate|test|predict --config ...``: Lightning's CLI over every cream-pl module.

The CLI class itself, :class:`~cream_pl.pipelines.recipe_builder.CreamCLI`, lives in
:mod:`cream_pl.pipelines.recipe_builder` with :func:`build_from_recipe` and :func:`set_dotted`
(re-exported here), so that the pipelines build recipes without importing the command line.

User errors (a bad image or metadata line, missing pretrained weights, ...; see
:mod:`cream_pl.core.errors`) end the command with one line, ``cream-pl fit: error: <file>:<line>: ...``,
and exit status 2, whether they are raised while the classes are built (where jsonargparse wraps
them), in ``setup`` or in a ``DataLoader`` worker.

Example:
    $ cream-pl fit --config experiments/embedded_cream.yaml --trainer.max_epochs 2
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl

from cream_pl.core.errors import end_progress_bars, user_error_message
from cream_pl.pipelines.recipe_builder import CreamCLI, build_from_recipe, set_dotted  # re-exported

__all__ = ["CreamCLI", "run_lightning_cli", "build_from_recipe", "set_dotted"]


def run_lightning_cli(argv: Sequence[str]) -> CreamCLI:
    """Run Lightning's CLI on ``argv`` (``["fit", "--config", ...]``).

    Raises:
        SystemExit: status 2 after printing one line on stderr for a user error (see the module
            docstring); other exceptions propagate with their traceback.
    """
    from jsonargparse import ArgumentError

    import cream_pl.data.datamodule  # noqa: F401  (register the data modules, so short class names resolve)
    import cream_pl.models  # noqa: F401

    argv = list(argv)
    command = argv[0] if argv else "fit"
    for path in _config_files(argv):  # before: "<file>: config: not accepted", as if the file's content were wrong
        inline = path.lstrip().startswith(("{", "[")) or "\n" in path or ": " in path  # YAML given in the option
        if not inline and not Path(path).is_file():
            print(f"cream-pl {command}: error: {path}: " + ("a folder, not a config file" if Path(path).is_dir()
                                                           else "file not found") + " (--config)", file=sys.stderr)
            raise SystemExit(2)
        if not inline and _is_declaration(Path(path)):  # before: "does not accept option 'legacy.demo_version'"
            print(f"cream-pl {command}: error: {path}: an experiment declaration, not a config (--config); run it with "
                  f"python -m cream_pl.pipelines.runner {path}", file=sys.stderr)
            raise SystemExit(2)
    no_exit = {"exit_on_error": False}  # parse errors raise: one line here, not the usage block first
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
                parser_kwargs={**no_exit, **{name: dict(no_exit) for name in ("fit", "validate", "test", "predict")}},
            )
    except ArgumentError as err:
        message = user_error_message(err) or _parse_error_line(err, argv)
        print(f"cream-pl {command}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as err:
        message = user_error_message(err) or _peer_stopped_message(err)
        if message is None:
            raise
        end_progress_bars()
        print(f"cream-pl {command}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


_PEER_GONE = ("Connection closed by peer", "Connection reset by peer")


def _world_size() -> int:
    """Processes of this run: ``torch.distributed``'s group, else ``WORLD_SIZE`` (set by Lightning's launcher and by
    torchrun, and still there after Lightning tore the group down)."""
    import os

    torch_dist = sys.modules.get("torch.distributed")
    if torch_dist is not None and torch_dist.is_available() and torch_dist.is_initialized():
        return int(torch_dist.get_world_size())
    try:
        return int(os.environ.get("WORLD_SIZE") or 1)
    except ValueError:
        return 1


def _peer_stopped_message(err: BaseException) -> str | None:
    """One line for a DDP process whose collective failed because another process ended (a bad image on its
    rank: that process printed the error line), instead of a traceback after it; ``None`` for anything else
    (any error outside a multi-process run, a port in use, a store timeout, a peer that never joined)."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    if _world_size() < 2:
        return None
    torch_dist = sys.modules.get("torch.distributed")
    backend_error = getattr(torch_dist, "DistBackendError", None) if torch_dist is not None else None
    text = str(err)
    collective = type(err) is RuntimeError or (isinstance(backend_error, type) and isinstance(err, backend_error))
    if not (collective and any(words in text for words in _PEER_GONE)):
        return None
    first = (text.splitlines() or [""])[0][:160]
    return (f"rank {getattr(rank_zero_only, 'rank', 0)}: another process of this distributed run stopped (its error "
            f"is on stderr), so this one stops too ({type(err).__name__}: {first})")


def _is_declaration(path: Path) -> bool:
    """Whether ``path`` reads as an experiment declaration (a mapping with ``runs``); a file that does not read as
    YAML is left to the CLI's own message."""
    from cream_pl.core.io import read_yaml_file

    try:
        content = read_yaml_file(path, "--config")
    except ValueError:
        return False
    return isinstance(content, dict) and "runs" in content


def _config_files(argv: Sequence[str]) -> list[str]:
    """The ``--config FILE`` / ``--config=FILE`` values of ``argv``."""
    files = []
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            files.append(argv[i + 1])
        elif arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
    return files


def _parse_error_line(err: BaseException, argv: Sequence[str]) -> str:
    """One line for a jsonargparse parse error, naming the ``--config`` file(s) it came from."""
    from cream_pl.pipelines.recipe_builder import parse_error_text

    text = parse_error_text(err)
    text = text.replace("Subcommand", "subcommand", 1) if text.startswith("Subcommand") else text
    key = text.split(":", 1)[0]
    refused = re.search(r"Option '([^']+)' is not accepted", text)  # the key is the class's, the option below it
    if refused:
        key = f"{key}.{refused.group(1)}"
    options = [a.split("=", 1)[0][2:] for a in argv if a.startswith("--")]

    def bare(dotted: str) -> str:  # --model.lr is jsonargparse's shorthand of --model.init_args.lr
        return ".".join(part for part in dotted.split(".") if part != "init_args")

    def sets_key(option: str) -> bool:  # a class option (--model X) leaves its init_args to the --config files
        below = key.startswith(option + ".") and not key[len(option) + 1:].startswith("init_args")
        shorthand = "." in option and bare(option) == bare(key)
        return option != "config" and (key == option or option.startswith(key + ".") or below or shorthand)

    if any(sets_key(option) for option in options):
        return f"command line: {text}"  # the value came from an option, not from a --config file
    files = _config_files(argv)
    return f"{', '.join(files)}: {text}" if files else text
