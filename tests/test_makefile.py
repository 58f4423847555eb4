"""The Makefile's own argument checks, with real ``make`` (``-n``: nothing runs)."""

from __future__ import annotations

import os
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


REFUSING = [("demo-kd", "DATA", "runner experiments/demos/<its declaration>.yaml"),
            ("probe-head-lr", "DATA", "probe_head_lr --data/--out"),
            ("calibrate-cub-sweep", "OUT", "calibrate_preset --out/--work"),
            ("bench", "OUT", "pipelines.bench --out"),  # before: ignored, and results/bench.json replaced
            ("bench-gpu", "OUT", "bench_gpu --out/--work"),
            ("data-synth", "OUT", "data synth --out"),  # before: ignored, data/synth written
            ("readme-results", "OUT", "demo_report --readme README.md --results"),
            ("train-cub", "DATA", "CUB_DATA=<converted dataset>"),
            ("pseudo-boxes", "OUT", "CUB_DATA=<converted dataset>"),
            ("train-regressor", "WORK", "CUB_DATA=<converted dataset>")]


@pytest.mark.parametrize("target, var, variant", REFUSING, ids=[f"{t} {v}" for t, v, _ in REFUSING])
def test_targets_other_than_demo_refuse_demo_variables_and_say_how_to_run_a_variant(target, var, variant):
    done = _make("-W", "pyproject.toml", target, f"{var}=elsewhere")  # -W: as if .venv were out of date
    assert done.returncode != 0
    assert "pip install" not in done.stdout  # refused before the install prerequisite (was: installed, then refused)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{var}=elsewhere: only make demo takes DATA, OUT and WORK; make {target} would " \
        "ignore it (for a variant: " in lines[0] and variant in lines[0], done.stderr
    assert "cream_pl." not in done.stdout and "cream-pl data" not in done.stdout  # nothing printed to run


def test_make_bench_refuses_make_bench_gpus_dry_run_variable():
    done = _make("bench", "DRY=1")  # before: the full bench, into results/
    assert done.returncode != 0 and "DRY=1: make bench-gpu takes DRY" in done.stderr


def test_an_environment_work_folder_is_not_make_demos():
    """An HPC site's ``$WORK`` (or a shell's ``$OUT``) is no make demo option: only the command line's are."""
    env = {**os.environ, "WORK": "/scratch/someone", "OUT": "elsewhere", "DATA": "d"}
    done = subprocess.run(["make", "-n", "--no-print-directory", "demo"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1].endswith("experiments/demos/demo.yaml --out results/embedded")
    done = subprocess.run(["make", "-n", "--no-print-directory", "demo-seeds"], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr  # and no other target refuses what the user never gave it


def test_make_train_cub_passes_recipe_overrides():
    """Before: `make train-cub` took no override, so the offline-weights hint (pass the VGG16 file's path) had no
    make form."""
    done = _make("train-cub", "RECIPE_ARGS=--model.init_args.pretrained=/w/vgg16.pth --trainer.max_epochs=2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1].endswith(
        "--model.init_args.pretrained=/w/vgg16.pth --trainer.max_epochs=2")
