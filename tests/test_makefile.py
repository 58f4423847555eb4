"""The Makefile's own argument checks, with real ``make`` (``-n``: nothing runs)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-n", "--no-print-directory", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("var, target", [("DATA", "demo"), ("OUT", "demo"), ("WORK", "demo"),
                                         ("CUB_ROOT", "train-cub"), ("CUB_DATA", "pseudo-boxes")])
def test_a_path_with_a_space_is_refused_in_one_line_before_anything_runs(var, target):
    """Before: ``make demo DATA="my data"`` ran ``runner ... --data my data --out results/my data``."""
    done = _make(target, f"{var}=my data")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f'{var}="my data": make splits paths at spaces' in lines[0], done.stderr
    assert "runner" not in done.stdout and "recipes" not in done.stdout  # no command was printed to run


def test_make_demo_passes_data_out_and_work_whole():
    done = _make("demo", "DATA=../some_data", "OUT=res/x", "WORK=w/y")
    assert done.returncode == 0, done.stderr
    command = done.stdout.strip().splitlines()[-1]
    assert command.endswith("experiments/demos/demo.yaml --data ../some_data --work w/y --out res/x"), command


def test_targets_other_than_demo_refuse_demo_variables():
    done = _make("demo-kd", "DATA=data/synth")
    assert done.returncode != 0 and "only make demo takes DATA, OUT and WORK" in done.stderr
