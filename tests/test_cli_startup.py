"""Start-up of the ``cream-pl`` command: what ``--help`` and the light commands import.

Speed itself is measured by ``make bench`` (results/bench.md); these tests guard the import graph
that makes it possible, in fresh interpreters (``python -X importtime``), and check that the light
parsers of :mod:`cream_pl.cli.parsers` print the same help as the modules that own the commands.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cream_pl.cli import build_light_parser, build_parser
from cream_pl.cli.parsers import SUBCOMMANDS

HEAVY = ("torch", "pytorch_lightning", "lightning", "torchmetrics", "torchvision")


def imported_modules(*argv: str, cwd: Path | None = None) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """Top-level names of every module a fresh ``cream-pl ARGV`` imports, and the finished process."""
    code = "import sys; from cream_pl.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code, *argv], capture_output=True, text=True,
                          cwd=cwd)
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names, proc


@pytest.mark.parametrize("command", ["", *SUBCOMMANDS])
def test_help_imports_no_torch_and_no_lightning(command: str) -> None:
    names, proc = imported_modules(*([command] if command else []), "--help")
    assert proc.returncode == 0, proc.stderr[-500:]
    assert "usage: cream-pl" in proc.stdout
    assert not names & set(HEAVY), f"cream-pl {command} --help imported {sorted(names & set(HEAVY))}"
    assert "numpy" not in names


PACKAGE = Path(__file__).resolve().parents[1] / "cream_pl"
MAIN_MODULES = sorted(".".join(f.relative_to(PACKAGE).with_suffix("").parts) for f in PACKAGE.rglob("*.py")
                      if 'if __name__ == "__main__"' in f.read_text(encoding="utf-8"))


def test_the_python_dash_m_modules_are_found() -> None:
    assert {"pipelines.runner", "pipelines.bench", "pipelines.localize", "pipelines.regressor_train"} <= set(MAIN_MODULES)


@pytest.mark.parametrize("module", MAIN_MODULES)
def test_every_python_dash_m_command_answers_help_without_torch(module: str) -> None:
    """Every module with a ``python -m`` entry, the Makefile's included (before: ``pipelines.bench --help`` imported
    torch, ~2 s; ``pipelines.localize`` and ``pipelines.regressor_train`` did until their entry came before the imports)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", f"cream_pl.{module}", "--help"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr[-500:]
    names = {ln.rsplit("|", 1)[1].strip().split(".")[0] for ln in proc.stderr.splitlines()
             if ln.startswith("import time:") and "|" in ln}
    assert not names & set(HEAVY), f"python -m cream_pl.{module} --help imported {sorted(names & set(HEAVY))}"


def _tiny_split(root: Path) -> Path:
    meta = root / "metadata" / "test"
    meta.mkdir(parents=True)
    (meta / "image_ids.txt").write_text("a.jpg")
    (meta / "class_labels.txt").write_text("a.jpg,0")
    (meta / "image_sizes.txt").write_text("a.jpg,224,224")
    (meta / "localization.txt").write_text("a.jpg,10,10,99,99")
    m = np.zeros((224, 224))
    m[10:100, 10:100] = 1.0
    (root / "maps").mkdir()
    np.save(root / "maps" / "a.jpg.npy", m)
    (root / "images").mkdir()  # data check names a dataset without its image folder
    return meta


def test_evaluate_imports_neither_torch_nor_lightning(tmp_path: Path) -> None:
    meta = _tiny_split(tmp_path)
    names, proc = imported_modules("evaluate", "--metadata", str(meta), "--scoremaps", str(tmp_path / "maps"),
                                   "--out", str(tmp_path / "s.json"))
    assert proc.returncode == 0, proc.stderr[-800:]
    assert (tmp_path / "s.json").is_file()
    assert not names & set(HEAVY), f"cream-pl evaluate imported {sorted(names & set(HEAVY))}"


def test_data_check_imports_neither_torch_nor_lightning(tmp_path: Path) -> None:
    _tiny_split(tmp_path)
    names, proc = imported_modules("data", "check", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-800:]
    assert not names & set(HEAVY), f"cream-pl data check imported {sorted(names & set(HEAVY))}"


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def _helps(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, str]:
    """Help text of a parser and of each nested sub-parser."""
    out = {prefix: parser.format_help()}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.update(_helps(sub, f"{prefix} {name}"))
    return out


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_each_module_registers_the_one_parser_definition(command: str) -> None:
    # ``python -m <module>`` entry points (each module's add_parser) give the same parser as cream-pl's
    import importlib

    root = argparse.ArgumentParser(prog="cream-pl")
    importlib.import_module(SUBCOMMANDS[command].module).add_parser(root.add_subparsers(dest="command"))
    light = _helps(_subparser(build_light_parser(), command), command)
    assert _helps(_subparser(root, command), command) == light


def test_the_shared_subcommand_names_are_the_parsers() -> None:
    # the start-up benchmark (pipelines.bench_reference) times each of core.names.SUBCOMMAND_NAMES
    from cream_pl.core.names import SUBCOMMAND_NAMES

    assert tuple(SUBCOMMANDS) == SUBCOMMAND_NAMES


def test_commands_run_the_implementing_module() -> None:
    args = build_parser().parse_args(["pseudo-boxes", "--ckpt", "c.ckpt", "--data", "d", "--out", "o.json"])
    assert args.func.target == "cream_pl.cli.pseudo_boxes_command.run"
    args = build_parser().parse_args(["data", "check", "root"])
    assert args.func.target == "cream_pl.cli.data_commands.run_check"
    args = build_light_parser().parse_args(["evaluate", "--metadata", "m", "--scoremaps", "s", "--out", "o"])
    assert args.func.__name__ == "run" and args.interval == 0.01
