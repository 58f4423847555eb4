"""The experiment declarations and the one runner: checks, fingerprints, legacy work, every demo end to end (--fast)."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMOS = REPO / "experiments" / "demos"


def _decl(tmp_path: Path, text: str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------- declarations
def test_every_shipped_declaration_loads_and_names_existing_recipes():
    from cream_pl.pipelines.experiment import load_experiment

    names = sorted(p.stem for p in DEMOS.glob("*.yaml"))
    assert {"demo", "demo_seeds", "demo_methods"} <= set(names)
    for name in names:
        exp = load_experiment(DEMOS / f"{name}.yaml")
        for run in exp.runs:
            assert (REPO / "experiments" / f"{run.recipe}.yaml").is_file(), (name, run.recipe)
        rows = {row for run in exp.runs for row in run.rows} | {"center_baseline", "cream_reg", "cream_reg_psol"}
        for d in exp.differences:  # every stated difference names rows the runs produce
            assert d.a in rows and d.b in rows, (name, d)


def test_demo_seeds_extends_demo_and_only_changes_what_it_says():
    from cream_pl.pipelines.experiment import load_experiment

    demo, seeds = load_experiment(DEMOS / "demo.yaml"), load_experiment(DEMOS / "demo_seeds.yaml")
    assert seeds.differences == demo.differences and seeds.fast == demo.fast and seeds.dataset == demo.dataset
    assert seeds.runs[0].recipe == demo.runs[0].recipe and seeds.runs[0].overrides == demo.runs[0].overrides
    assert seeds.runs[0].seeds == (0, 1, 2) and seeds.runs[0].seed_folders == {0: "outputs/demo"}
    assert "figures" not in seeds.runs[0].stages and seeds.readme == {} and seeds.report == "seeds"


@pytest.mark.parametrize("text, message", [
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r}]\nrepport: table\n",
     "x.yaml: repport: unknown key; expected one of"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a}]\n", "x.yaml: runs[0].recipe: missing (required)"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, seeds: 3}]\n", "x.yaml: runs[0].seeds: expected list, got int"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, seeds: [-1]}]\n", "x.yaml: runs[0].seeds: expected a non-empty"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, stages: [figurez]}]\n",
     "x.yaml: runs[0].stages: unknown stage 'figurez'"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r}, {key: a, recipe: r}]\n", "x.yaml: runs: the run keys"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, choose: {key: k, values: [1]}}]\n",
     "x.yaml: runs[0].choose.values: a choice needs at least two different values"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r}]\ndifferences: [{a: cam, b: x}]\n",
     "x.yaml: differences[0].metrics: missing (required)"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r}\n", "x.yaml:5: invalid YAML: "),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, test: epochs, stages: [figures]}]\n",
     "x.yaml: runs[0]: a run tested per epoch takes no stages"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, teachers: [b]}, {key: b, recipe: r, test: epochs, rows: {}}]\n",
     "x.yaml: runs[0].teachers: 'b' is not an earlier run with test: epochs"),
    # a second review's sweep: each was a silently dropped row, a seed run once, results in the current folder, a
    # typo ignored, or a KeyError after the training
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r}, {key: b, recipe: r}]\n",
     "x.yaml: runs[1].rows: row 'cam' is also runs[0]'s (a, its rows); give each run's rows their own names"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, stages: [center_baseline]}, "
     "{key: b, recipe: r, rows: {b: cam, center_baseline: cream}}]\n",
     "x.yaml: runs[1].rows: row 'center_baseline' is also runs[0]'s (a, its stages)"),
    ("name: x\nout: o\nwork: w\nruns: [{key: t, recipe: r, test: epochs, rows: {cls_teacher: cam}}, "
     "{key: s, recipe: r, rows: {s: cam}, teachers: [t]}]\n",
     "x.yaml: runs[1].teachers: row 'cls_teacher' is also runs[0]'s (t, its rows)"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, seeds: [0, 0]}]\n", "x.yaml: runs[0].seeds: [0, 0] repeats a seed"),
    ("name: x\nout: ''\nwork: w\nruns: [{key: a, recipe: r}]\n", "x.yaml: out: empty (expected a folder)"),
    ("name: ' '\nout: o\nwork: w\nruns: [{key: a, recipe: r}]\n", "x.yaml: name: empty (expected a name)"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r}]\nsettings: {min_seed: 2}\n",
     "x.yaml: settings.min_seed: unknown key; expected one of ['min_seeds', 'missing', 'selection']"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r}]\nlegacy: {demo_version: 3, other: 1}\n",
     "x.yaml: legacy: one '<version key>: <integer>' at most"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r}]\nruns: [{key: b, recipe: r}]\n",
     "x.yaml:5: invalid YAML: duplicate key 'runs' (first on line 4)"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, rows: {a: cam, a_cream_selected: cream_selected}}]\n"
     "report: methods\n", "x.yaml: report: 'methods' needs settings.selection"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r}]\nreport: kd\n",
     "x.yaml: report: 'kd' needs every run tested per epoch (test: epochs); runs[0] (a) is not"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r}]\nreport: calibration\n",
     "x.yaml: report: 'calibration' needs the stages ['split_statistics', 'center_baseline']; runs[0] (a) lacks"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r}]\nreport: demo\n",
     "x.yaml: report: 'demo' needs the rows {'cam': 'cam', 'cream': 'cream', 'cream_selected': 'cream_selected'} (name: "
     "map) from every run; runs[0] (a) lacks {'cream': 'cream'}"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, rows: {base: cam, cream: cream, cream_selected: "
     "cream_selected}}]\nreport: demo\n", "runs[0] (a) lacks {'cam': 'cam'}"),  # the report reads the row 'cam'
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r}]\nreport: methods\nsettings: {selection: val}\n",
     "x.yaml: report: 'methods' needs the rows {'a': 'cam', 'a_cream_selected': 'cream_selected'}"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, test: epochs}]\nreport: kd\n",
     "x.yaml: report: 'kd' needs the rows {'cam': 'cam', 'cream_selected': 'cream_selected', 'ci_cam': 'cam', "),
    ("", "x.yaml: the file is empty (a declaration is a mapping of"),
    ("- a\n", "x.yaml: expected a mapping of"),
    ("extends: nothere.yaml\nname: x\nout: o\nwork: w\nruns: [{key: a, recipe: r}]\n", "nothere.yaml not found"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r}]\ndifferences: [{a: cream_selected, b: camx, metrics: [gt_known]}]\n",
     "x.yaml: differences[0].b: no run gives a row 'camx'; rows: ['cam', 'cream_selected']"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, stages: [regressor]}]\n"
     "differences: [{a: cream_reg, b: center_baseline, metrics: [gt_known]}]\n",
     "x.yaml: differences[0].b: no run gives a row 'center_baseline'"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r}]\ndifferences: [{a: cream_selected, b: cam, metrics: [pxap]}]\n",
     "x.yaml: differences[0].metrics: 'pxap' has no paired interval"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r}]\nreport: tabel\n", "x.yaml: report: unknown 'tabel'"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r}]\ndataset: {preset: cubb}\n",
     "x.yaml: dataset.preset: unknown 'cubb'"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r}]\nreadme: {file: R.md, block: RESULT}\n",
     "x.yaml: readme.block: unknown 'RESULT'"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, choose: {key: k, values: [1, fast]}}]\n",
     "x.yaml: runs[0].choose.values: expected finite numbers"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, folder: '{name}'}]\n",
     "x.yaml: runs[0].folder: '{name}': a relative folder that may hold {key} and {seed}, nothing else"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, seed_folders: {first: o}}]\n",
     "x.yaml: runs[0].seed_folders: expected seed -> folder"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r}]\ndataset: {overrides: {num_trainn: 5}}\n",
     "x.yaml: dataset.overrides: num_trainn: not a generator knob; knobs: ['backgrounds',"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r}]\nfast: {dataset: {num_train: 0}}\n",
     "x.yaml: fast.dataset: num_train must be >= 1, got 0"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r}]\ndataset: {overrides: {num_train: 2.5}}\n",
     "x.yaml: dataset.overrides: num_train: expected int like the preset's 2400, got 2.5"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r}]\ndifferences: [{a: cam, b: cream_selected, metrics: [[gt_known]]}]\n",
     "x.yaml: differences[0].metrics: expected a non-empty list of metric names"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r}]\ndifferences: [{a: cam, b: cream_selected, metrics: []}]\n",
     "x.yaml: differences[0].metrics: expected a non-empty list"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, folder: '{seed[0]}'}]\n", "x.yaml: runs[0].folder: '{seed[0]}'"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, folder: '{key.upper}'}]\n", "x.yaml: runs[0].folder: '{key.upper}'"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, folder: '../{key}'}]\n", "x.yaml: runs[0].folder: '../{key}'"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a/../../b, recipe: r}]\n", "x.yaml: runs[0].key: 'a/../../b': letters"),
    ("name: x\nout: o\nwork: w\nruns: [{key: '', recipe: r}]\n", "x.yaml: runs[0].key: '': letters"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, overrides: {1: 2}}]\n", "x.yaml: runs[0].overrides: expected string keys"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, overrides: {'trainer.callbacks[A.init_args.x': 1}}]\n",
     "x.yaml: runs[0].overrides: 'trainer.callbacks[A.init_args.x': a callback is named as"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, stages: [{a: 1}]}]\n", "x.yaml: runs[0].stages: expected a list of names"),
    ("name: x\nout: o\nwork: w\ndefaults: {overrides: [1]}\nruns: [{key: a, recipe: r, overrides: {b: 1}}]\n",
     "x.yaml: defaults.overrides: expected dict, got list"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, record: [cam]}]\n",
     "x.yaml: runs[0].record: ('cam',) leaves out the rows' map(s) ['cream_selected']"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, choose: {key: k, values: [1, 2], val: gt_knwon}}]\n",
     "x.yaml: runs[0].choose.val: unknown 'gt_knwon'"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, choose: {key: k, values: [1, 1]}}]\n",
     "x.yaml: runs[0].choose.values: a choice needs at least two different values"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, choose: {key: k, values: [1, .nan]}}]\n",
     "x.yaml: runs[0].choose.values: expected finite numbers"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, overrides: {trainer.default_root_dir: '{runn}/c'}}]\n",
     "x.yaml: runs[0].overrides.trainer.default_root_dir: {runn} is not a place; places: ['{run}', '{data}', '{out}']"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, overrides: {trainer.default_root_dir: '{work}/c'}}]\n",
     "x.yaml: runs[0].overrides.trainer.default_root_dir: {work} is not a place"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r}]\nsettings: {min_seeds: two}\n",
     "x.yaml: settings.min_seeds: expected an integer, got 'two'"),
    # found by the ninth session's sweep: each trained first, then was silently wrong or lost work
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, seeds: [0, 1], rows: {a: cam}},"
     " {key: b, recipe: r, rows: {b: cam}}]\ndifferences: [{a: a, b: b, metrics: [gt_known]}]\n",
     "x.yaml: differences[0]: a has seeds [0, 1] but b [0]; a paired difference needs the same seeds"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, overrides: {data.init_args.data_root: /d}}]\n",
     "x.yaml: runs[0].overrides: data.init_args.data_root: the runs' data is the declaration's dataset"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, overrides: {data.data_root: /d}}]\n",
     "x.yaml: runs[0].overrides: data.data_root: the runs' data"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, folder: shared, rows: {a: cam}},"
     " {key: b, recipe: r, folder: shared, rows: {b: cam}}]\n",
     "x.yaml: runs[1].folder: 'shared' (seed 0) is also runs[0]'s (a, seed 0)"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, rows: {a: cam}}, {key: a_seed1, recipe: r, "
     "rows: {b: cam}}, {key: c, recipe: r, seeds: [0, 1], folder: a, rows: {c: cam}}]\n",
     "x.yaml: runs[2].folder: 'a' (seed 0) is also runs[0]'s (a, seed 0)"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r}]\ndataset: {seed: -3}\n",
     "x.yaml: dataset.seed: expected an integer >= 0, got -3"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r}]\nreadme: {file: R.md, block: METHODS}\n",
     "x.yaml: readme.block: METHODS is filled from the results of report methods, not 'table'"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r}]\n"
     "differences: [{a: cream_selected, b: cream_selected, metrics: [gt_known]}]\n",
     "x.yaml: differences[0]: a and b are both 'cream_selected'; a difference needs two rows"),
    ("name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, seeds: [0, 1], seed_folders: {7: elsewhere}}]\n",
     "x.yaml: runs[0].seed_folders: seed 7 is not one of the run's seeds [0, 1]"),
])
def test_a_bad_declaration_is_one_line_naming_the_file_and_the_key(tmp_path, text, message):
    from cream_pl.core.errors import UserError
    from cream_pl.pipelines.experiment import load_experiment

    with pytest.raises(UserError) as err:
        load_experiment(_decl(tmp_path, text))
    unlined = re.sub(r"x\.yaml:\d+: ", "x.yaml: ", str(err.value))  # the line: see the test below
    assert message in (str(err.value) if re.search(r"yaml:\d", message) else unlined) and "\n" not in str(err.value) and str(tmp_path) in str(err.value)


def test_a_bad_declaration_names_the_line_of_its_key(tmp_path):
    """The line of the key at fault (the key itself; a missing one: its mapping's), found by its key in a file that
    extends another (the merged list's run index is not the file's); a run the base alone gives: no line."""
    from cream_pl.core.errors import UserError
    from cream_pl.pipelines.experiment import load_experiment

    head = "name: x\nout: o\nwork: w\nruns:\n"
    cases = [(head + "  - key: a\n    recipe: r\n  - key: b\n    recipe: r\n    seeds: [0, 0]\n",
              "x.yaml:9: runs[1].seeds: [0, 0] repeats a seed"),
             (head + "  - key: a\n    recipe: r\n  - key: b\n    seeds: [1]\n", "x.yaml:7: runs[1].recipe: missing"),
             (head + "  - key: a\n    recipe: r\n    overrides:\n      model.init_args.lr: '{runn}'\n",
              "x.yaml:8: runs[0].overrides.model.init_args.lr: {runn} is not a place"),
             (head + "  - {key: a, recipe: r}\ndataset:\n  preset: cub\n  seed: -1\n", "x.yaml:8: dataset.seed:"),
             (head + "  - {key: a, recipe: r}\ndifferences:\n  - {a: cam, b: camx, metrics: [gt_known]}\n",
              "x.yaml:7: differences[0].b: no run gives a row 'camx'")]
    for text, message in cases:
        with pytest.raises(UserError) as err:
            load_experiment(_decl(tmp_path, text))
        assert message in str(err.value), (message, str(err.value))
    _decl(tmp_path, head + "  - {key: a, recipe: r}\n  - {key: b, recipe: r}\n", "base.yaml")
    top = "extends: base.yaml\nname: y\nout: o2\nwork: w2\n"
    child = _decl(tmp_path, top + "runs:\n  - key: c\n    recipe: r\n  - key: b\n    seeds: [2, 2]\n",
                  "child.yaml")
    with pytest.raises(UserError, match=r"child\.yaml:9: runs\[1\]\.seeds: \[2, 2\] repeats a seed"):
        load_experiment(child)  # b is the merged list's runs[1], this file's runs[1] too, by its key
    child.write_text(top + "runs:\n  - key: b\n    seeds: [2, 2]\n")
    with pytest.raises(UserError, match=r"child\.yaml:7: runs\[1\]\.seeds"):
        load_experiment(child)  # merged runs[1] (b) is this file's runs[0]
    _decl(tmp_path, head + "  - {key: a, recipe: r, seeds: [3, 3]}\n", "base.yaml")
    child.write_text(top + "runs:\n  - key: b\n    recipe: r\n")
    with pytest.raises(UserError) as err:
        load_experiment(child)  # the base's run alone: its keys are not in this file
    assert str(err.value).startswith(f"{child}: runs[0].seeds:"), str(err.value)


def test_a_declaration_that_is_not_utf8_is_one_line(tmp_path):
    """Before: a UnicodeDecodeError traceback."""
    from cream_pl.core.errors import UserError
    from cream_pl.pipelines.experiment import load_experiment

    decl = tmp_path / "x.yaml"
    decl.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"x.yaml: byte 9: not valid UTF-8 text \(experiment declaration\)$"):
        load_experiment(decl)


def test_cli_help_is_instant_and_bad_arguments_are_one_line(tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    a_list = tmp_path / "list.json"
    a_list.write_text("[1, 2]")
    min_two = _decl(tmp_path, "name: x\nout: o\nwork: w\nruns: [{key: a, recipe: embedded_cream}]\n"
                              "settings: {min_seeds: 2}\n", "min_two.yaml")  # before: trained, then the report failed
    help_ = subprocess.run([sys.executable, "-m", "cream_pl.pipelines.runner", "--help"], capture_output=True, text=True,
                           timeout=60)
    assert help_.returncode == 0 and "--only" in help_.stdout and "--compare" in help_.stdout
    for argv, message in (([str(DEMOS / "demo_methods.yaml"), "--only", "gradcam"], "--only: unknown run 'gradcam'"),
                          ([str(DEMOS / "demo.yaml"), "--skip", "nothing"], "--skip: unknown stage 'nothing'"),
                          ([str(DEMOS / "demo_seeds.yaml"), "--seeds", "1"], "needs at least 2 seeds"),
                          ([str(DEMOS / "demo_seeds.yaml"), "--train-seed", "1"], "needs at least 2 seeds (use --seeds)"),
                          ([str(DEMOS / "demo.yaml"), "--preset", "nope"], "--preset: unknown preset 'nope'"),
                          ([str(DEMOS / "demo.yaml"), "--data-seed", "-1"], "--data-seed"),
                          ([str(tmp_path / "none.yaml")], "none.yaml: experiment declaration not found"),
                          ([str(DEMOS / "demo.yaml"), "--compare", str(bad_json)], "bad.json: not a JSON results file"),
                          ([str(min_two)], "min_two.yaml: runs[0].seeds: [0], but it needs at least 2 seeds"),
                          ([str(DEMOS / "demo.yaml"), "--compare", str(a_list)],  # before: every run, then "differ"
                           "list.json: not a results file (a JSON object, as the report writes), got a list"),
                          ([str(DEMOS / "demo.yaml"), "--compare", str(REPO / "results/embedded_methods/metrics.json")],
                           "metrics.json: not the results of a 'demo' report, which "),  # before: after the runs,
                          # every number 'only in' one of the files
                          ([str(DEMOS / "demo_methods.yaml"), "--preset", "hard", "--readme", "R.md"],
                           "--readme: the README shows"),
                          ([str(DEMOS / "demo.yaml"), "--recipe-typo"], "unrecognized arguments"),
                          ([str(DEMOS / "demo.yaml"), "--seeds", "3"], "report (demo) shows one training seed"),
                          ([str(DEMOS / "demo_seeds.yaml"), "--seeds", "9" * 20], "--seeds: must be an integer in [1, 100]"),
                          ([str(DEMOS / "demo.yaml"), "--kernels", "avx9"], "--kernels: invalid choice: 'avx9'")):
        bad = subprocess.run([sys.executable, "-m", "cream_pl.pipelines.runner", *argv, "--out", str(tmp_path / "o"),
                              "--work", str(tmp_path / "w")], capture_output=True, text=True, timeout=60, cwd=REPO)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "w").exists() and not (tmp_path / "o").exists()  # nothing started


def test_restart_never_clears_the_declared_runs_for_a_seed_or_run_subset(tmp_path):
    decl = _decl(tmp_path, f"name: x\nout: {tmp_path / 'o'}\nwork: {tmp_path / 'w'}\n"
                           "defaults: {rows: {'{key}': cam, '{key}_s': cream_selected}}\n"
                           "runs: [{key: a, recipe: embedded_cream}, {key: b, recipe: embedded_cream}]\n")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "model.ckpt").write_text("the declared run's")
    for extra in (["--train-seed", "3"], ["--seeds", "2"], ["--only", "b"]):
        out = subprocess.run([sys.executable, "-m", "cream_pl.pipelines.runner", str(decl), "--restart", *extra],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
        assert f"--restart: {tmp_path / 'w'} holds every declared run" in out.stderr, out.stderr
    assert (tmp_path / "w" / "model.ckpt").is_file() and not (tmp_path / "o").exists()


def test_a_variant_of_the_data_never_trains_in_a_declared_seed_folder(tmp_path, monkeypatch):
    """demo-seeds' seed 0 is make demo's own run; another dataset's seed 0 trains in a folder of its own."""
    import cream_pl.pipelines.runner as runner
    from cream_pl.pipelines.experiment import load_experiment

    exp = load_experiment(DEMOS / "demo_seeds.yaml")
    folders = []

    def fit_and_test(r, run, seed, folder, extra):  # where the run would train; nothing trains
        folders.append(folder)
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "fit_and_test", fit_and_test)
    for variant in (False, True):
        r = runner._Runner(exp, tmp_path / "o", tmp_path / "w", tmp_path / "d", True, False, print, variant=variant)
        with pytest.raises(KeyboardInterrupt):
            r.run(exp.runs[0], 0, [])
    assert folders == [Path("outputs/demo"), tmp_path / "w" / "seed0"]


def test_a_missing_recipe_is_one_line_before_any_work(tmp_path):
    decl = _decl(tmp_path, f"name: x\nout: {tmp_path / 'o'}\nwork: {tmp_path / 'w'}\n"
                           f"runs: [{{key: a, recipe: {tmp_path / 'nope.yaml'}}}]\n")
    out = subprocess.run([sys.executable, "-m", "cream_pl.pipelines.runner", str(decl)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert "nope.yaml: recipe not found" in out.stderr and "runs[0].recipe" in out.stderr
    assert not (tmp_path / "w").exists() and not (tmp_path / "o").exists()


def test_a_run_tested_per_epoch_needs_per_epoch_checkpoints_before_any_work(tmp_path):
    decl = _decl(tmp_path, f"name: x\nout: {tmp_path / 'o'}\nwork: {tmp_path / 'w'}\n"
                           "runs: [{key: a, recipe: embedded_cream, test: epochs}]\n")
    out = subprocess.run([sys.executable, "-m", "cream_pl.pipelines.runner", str(decl)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert "embedded_cream.yaml: run 'a' is tested per epoch" in out.stderr and "EpochCheckpoints" in out.stderr
    assert "runs[0].recipe" in out.stderr
    assert not (tmp_path / "w").exists() and not (tmp_path / "o").exists()


@pytest.mark.parametrize("overrides, message", [
    ("{model.init_args.head_lr: 3}", "runs[0] (a, embedded_cream): model.init_args: Option 'head_lr' is not accepted"),
    ("{model.init_args.lr: fast}", "runs[0] (a, embedded_cream): model.init_args.lr: Expected a <class 'float'>. Got value: fast"),
    ("{trainer.max_epochz: 3}", "runs[0] (a, embedded_cream): Group 'trainer' does not accept option 'max_epochz'"),
    ("{trainer.callbacks.9.init_args.dirpath: x}",
     "runs[0] (a, embedded_cream): override 'trainer.callbacks.9.init_args.dirpath': 'trainer.callbacks.9' is not in the recipe"),
    ("{data.init_args.eval_size: 64}",  # before: boxes in a 64 grid scored against 224 maps (or a failed validation)
     "runs[0] (a, embedded_cream): model.init_args.eval_size is 224 but data.init_args.eval_size is 64"),
    # values the classes' __init__ refuse, and settings Lightning refuses at the fit start: before, the first run
    # trained and tested, then the second one failed
    ("{model.init_args.cream: false}",
     "runs[0] (a, embedded_cream): model.init_args: ablation_iterations / ablation_lambdas need cream=True"),
    ("{'trainer.callbacks[PseudoBoxesAtFitEnd].init_args.source': no_such_map}",
     "runs[0] (a, embedded_cream): trainer.callbacks[PseudoBoxesAtFitEnd].init_args: source must be one of"),
    ("{trainer.logger: false}", "runs[0] (a, embedded_cream): trainer.callbacks: a LearningRateMonitor needs a logger"),
    ("{'trainer.callbacks[PseudoBoxesAtFitEn].init_args.source': cam}",  # before: left out, silently
     "runs[0].overrides: trainer.callbacks[PseudoBoxesAtFitEn].init_args.source: 'PseudoBoxesAtFitEn' is no callback"),
    # before: a traceback once the first run had trained (an optimizer's lr, a fit that never validates)
    ("{model.init_args.lr: -1.0}", "runs[0] (a, embedded_cream): model.init_args: lr must be a finite value >= 0"),
    ("{trainer.limit_val_batches: 0}", "runs[0] (a, embedded_cream): trainer.limit_val_batches is 0, so the fit never "
                                       "validates and cream_search selects no cream_selected maps"),
    ("{trainer.max_epochs: 0}", "runs[0] (a, embedded_cream): trainer.max_epochs is 0"),
    ("{model.init_args.cream_search: null}",
     "runs[0] (a, embedded_cream): model.init_args: record_per_image names unknown method(s) ['cream_selected']"),
    # the data module's values: before, found when the fit built it, after the dataset was generated
    ("{data.init_args.batch_size: 0}", "runs[0] (a, embedded_cream): data.init_args: batch_size must be >= 1, got 0"),
    ("{data.init_args.crop_size: 300}", "runs[0] (a, embedded_cream): data.init_args: "),
    ("{model..lr: 0.1}",  # before: jsonargparse's 'Empty nested key' with the whole model section after it
     "runs[0] (a, embedded_cream): override 'model..lr': an empty step between dots"),
])
def test_an_override_the_recipe_does_not_take_is_one_line_before_any_work(tmp_path, overrides, message, capsys):
    """Every run's config is parsed before the data stage: a typo in the last run never costs the first run's training
    (nor clears its earlier work)."""
    from cream_pl.pipelines.runner import main

    decl = _decl(tmp_path, f"name: x\nout: {tmp_path / 'o'}\nwork: {tmp_path / 'w'}\ndataset: {{root: {tmp_path / 'd'}}}\n"
                           "defaults: {rows: {'{key}': cam, '{key}_s': cream_selected}}\n"
                           f"runs: [{{key: z, recipe: embedded_cream}}, {{key: a, recipe: embedded_cream, overrides: {overrides}}}]\n")
    assert main([str(decl)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"{decl}: " + message.replace("runs[0]", "runs[1]") in err, err
    assert not any((tmp_path / n).exists() for n in ("w", "o", "d"))  # no data, no work, no results


def test_a_base_declaration_whose_run_has_no_key_is_one_line(tmp_path):
    """Before: a KeyError / TypeError traceback when its runs were merged by key."""
    from cream_pl.core.errors import UserError
    from cream_pl.pipelines.experiment import load_experiment

    for run, words in (("{recipe: r}", "runs[0]: expected a mapping with a key"), ("plain", "runs[0]: expected a mapping")):
        _decl(tmp_path, f"name: b\nout: o\nwork: w\nruns: [{run}]\n", "base.yaml")
        with pytest.raises(UserError, match=rf"^{tmp_path / 'base.yaml'}: {re_escape(words)}"):
            load_experiment(_decl(tmp_path, "extends: base.yaml\nname: x\nout: o\nwork: w\nruns: []\n"))


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


def test_a_seed_folder_may_be_named_by_a_quoted_seed(tmp_path):
    from cream_pl.pipelines.experiment import load_experiment

    exp = load_experiment(_decl(tmp_path, "name: x\nout: o\nwork: w\nruns: [{key: a, recipe: r, seed_folders: {'0': f}}]\n"))
    assert exp.runs[0].seed_folders == {0: "f"}


def test_the_readme_block_must_be_there_before_any_work(tmp_path, capsys):
    from cream_pl.pipelines.runner import main

    readme = tmp_path / "R.md"
    readme.write_text("# mine\n<!-- RESULTS:END -->\n<!-- RESULTS:BEGIN -->\n")
    places = ["--out", str(tmp_path / "o"), "--work", str(tmp_path / "w")]
    for decl, file, message in ((DEMOS / "demo_seeds.yaml", readme, "fills no README block"),
                                (DEMOS / "demo.yaml", tmp_path / "none.md", "none.md: file not found (--readme)"),
                                (DEMOS / "demo.yaml", readme, "R.md: needs exactly one <!-- RESULTS:BEGIN -->")):
        with pytest.raises(SystemExit) as exit_:  # the parser's error: one line, status 2
            main([str(decl), "--readme", str(file), *places])
        err = capsys.readouterr().err
        assert exit_.value.code == 2
        assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "w").exists() and not (tmp_path / "o").exists()


def test_a_dataset_used_as_it_is_must_be_there_before_any_work(tmp_path, capsys):
    from cream_pl.data.synth import generate_synthetic_dataset
    from cream_pl.pipelines.runner import main

    generate_synthetic_dataset(tmp_path / "w2" / "data", seed=1, num_classes=2, num_train=2, num_val=2, num_test=2,
                               min_side=48, max_side=56)  # inside the work folder ({work}/data): found there
    decl = _decl(tmp_path, f"name: x\nout: {tmp_path / 'o2'}\nwork: {tmp_path / 'w2'}\ndataset: {{root: '{{work}}/data', "
                           "preset: null}\nruns: [{key: a, recipe: embedded_cream, overrides: {model.init_args.lr: fast}}]\n",
                 "inwork.yaml")
    assert main([str(decl)]) == 2  # past the dataset check: refused at the run's config
    assert "runs[0] (a, embedded_cream): model.init_args.lr" in capsys.readouterr().err

    decl = _decl(tmp_path, f"name: x\nout: {tmp_path / 'o'}\nwork: {tmp_path / 'w'}\n"
                           f"dataset: {{root: {tmp_path / 'mine'}, preset: null}}\nruns: [{{key: a, recipe: embedded_cream}}]\n")
    assert main([str(decl)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"{tmp_path / 'mine'}: no dataset in the benchmark format" in err, err
    assert not (tmp_path / "w").exists() and not (tmp_path / "o").exists()


def test_a_run_writes_every_file_of_its_recipe_in_its_own_folder(tmp_path):
    """The recipe's logger, checkpoints and pseudo boxes live under its default_root_dir: for each run and seed they move
    under the run's folder (places, never in the fingerprint), except where the declaration places or drops them."""
    from cream_pl.pipelines.experiment import load_experiment
    from cream_pl.pipelines.run_state import recipe_places
    from cream_pl.pipelines.runner import _Runner

    recipe = REPO / "experiments" / "embedded_cream.yaml"
    places = recipe_places(recipe)
    assert set(places.values()) == {"{root}", "{root}/checkpoints", "{root}/pseudo_boxes_cream_selected.json"}
    decl = _decl(tmp_path, "name: x\nout: o\nwork: w\ndefaults: {rows: {'{key}': cam, '{key}_s': cream_selected}}\n"
                           "runs:\n  - {key: a, recipe: embedded_cream, seeds: [0, 1]}\n"
                           "  - {key: b, recipe: embedded_cream, overrides: {trainer.default_root_dir: '{run}/c', "
                           "trainer.callbacks.0.init_args.dirpath: '{out}/ck'}}\n"
                           "  - {key: c, recipe: embedded_cream, overrides: {trainer.logger: false, trainer.callbacks: []}}\n")
    exp = load_experiment(decl)
    r = _Runner(exp, tmp_path / "o", tmp_path / "w", tmp_path / "d", False, False, print)
    got = {}
    for run, seed in ((exp.runs[0], 0), (exp.runs[0], 1), (exp.runs[1], 0), (exp.runs[2], 0)):
        folder = tmp_path / "w" / f"{run.key}{seed}"
        resolved, kept = r.overrides(run, seed, folder, recipe, {})
        got[run.key, seed] = {k: resolved.get(k) for k in places}
        assert not set(places) & set(kept)  # where a run writes is not what it computes
    a0 = tmp_path / "w" / "a0"
    assert set(got["a", 0].values()) == {str(a0), str(a0 / "checkpoints"), str(a0 / "pseudo_boxes_cream_selected.json")}
    assert not set(got["a", 0].values()) & set(got["a", 1].values())  # two seeds never share a file
    b0 = tmp_path / "w" / "b0"
    assert set(got["b", 0].values()) == {str(b0 / "c"), str(tmp_path / "o" / "ck"), str(b0 / "c" / "pseudo_boxes_cream_selected.json")}
    assert set(got["c", 0].values()) == {None}  # dropped by the declaration: nothing added back
    # a run tested per epoch keeps its epochs where the runner reads them, wherever its trainer's root is
    kd = REPO / "experiments" / "embedded_confounded_ci_cam.yaml"
    run = replace(exp.runs[0], test="epochs", recipe=str(kd), overrides={"trainer.default_root_dir": "{run}/fit"})
    resolved, kept = r.overrides(run, 0, tmp_path / "w" / "e", kd, {})
    assert {resolved["trainer.callbacks.1.init_args.dirpath"], resolved["trainer.callbacks.1.init_args.record_path"]} == {
        str(tmp_path / "w" / "e" / "epochs"), str(tmp_path / "w" / "e" / "epochs.json")}
    assert resolved["trainer.callbacks.0.init_args.dirpath"] == str(tmp_path / "w" / "e" / "fit" / "checkpoints")
    assert not any("callbacks" in k for k in kept)


# ---------------------------------------------------------------------------------------------- fingerprints
def _runner(tmp_path: Path, data: Path, work: Path, exp_name: str = "demo_methods.yaml"):
    from cream_pl.pipelines.experiment import load_experiment
    from cream_pl.pipelines.runner import _Runner

    return _Runner(load_experiment(DEMOS / exp_name), tmp_path / "o", work, data, False, False, print)


def test_restart_clears_each_run_folder_inside_the_work_folder_once_and_nothing_else(tmp_path):
    """Before: ``--restart`` removed the whole --work folder, whatever it held (``--work .`` removed the checkout)."""
    work, elsewhere = tmp_path / "w", tmp_path / "outputs" / "demo"
    r = _runner(tmp_path, tmp_path / "data", work, "demo.yaml")
    r.restart = True
    today = {"v": 1}
    for folder in (work / "a", elsewhere):
        folder.mkdir(parents=True)
        (folder / "inputs.json").write_text(json.dumps(today))
        (folder / "model.ckpt").write_text("x")
    (work / "notes").mkdir()  # not a run folder: never touched
    r.start_over(work / "a", today, "a", 0)
    assert sorted(p.name for p in (work / "a").iterdir()) == ["inputs.json"]
    (work / "a" / "model.ckpt").write_text("this invocation's")
    r.start_over(work / "a", today, "a", 0)  # once per invocation: its new work is kept
    r.start_over(elsewhere, today, "cream", 0)  # a declared seed folder outside the work folder (make demo's)
    assert (work / "a" / "model.ckpt").read_text() == "this invocation's" and (elsewhere / "model.ckpt").is_file()
    assert (work / "notes").is_dir()


def test_a_fitted_model_loads_as_its_own_class_and_only_an_unreadable_file_is_damaged(tmp_path):
    """Before this was written, every resume of a CI-CAM run read its checkpoint as a WSOLClassifier, failed, and
    was about to be retrained each time."""
    import pytorch_lightning as pl
    import torch

    from cream_pl.models.checkpoints import CLASS_KEY
    from cream_pl.models.ci_cam_module import CICAMClassifier
    from cream_pl.pipelines.run_fits import _load_fitted

    said: list[str] = []
    r = _runner(tmp_path, tmp_path / "data", tmp_path / "w")
    r.log = said.append
    model = CICAMClassifier(num_classes=2, pretrained=False, num_media_images=0)
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": pl.__version__, CLASS_KEY: "cream_pl.models.ci_cam_module.CICAMClassifier"}, ckpt)
    loaded = _load_fitted(r, ckpt)
    assert type(loaded) is CICAMClassifier and loaded.training
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    assert _load_fitted(r, ckpt) is None and "model.ckpt: damaged" in said[-1]
    assert _load_fitted(r, tmp_path / "absent.ckpt") is None


def test_moving_the_data_or_work_folder_keeps_the_fingerprint_and_a_seed_changes_it(tmp_path):
    from cream_pl.data.synth import generate_synthetic_dataset

    data = generate_synthetic_dataset(tmp_path / "a", seed=1, num_classes=2, num_train=2, num_val=2, num_test=2,
                                      min_side=48, max_side=56)
    recipe = REPO / "experiments" / "embedded_cream.yaml"
    r = _runner(tmp_path, data, tmp_path / "w1")
    run = r.exp.runs[0]
    resolved, kept = r.overrides(run, 0, tmp_path / "w1" / "cam", recipe, {})
    assert resolved["trainer.default_root_dir"] == str(tmp_path / "w1" / "cam") and resolved["data.init_args.data_root"] == str(data)
    assert "trainer.default_root_dir" not in kept and "data.init_args.data_root" not in kept  # places: not inputs
    here = r.fingerprint(recipe, kept)
    moved = data.rename(tmp_path / "b")
    r2 = _runner(tmp_path, moved, tmp_path / "w2")
    assert r2.fingerprint(recipe, r2.overrides(run, 0, tmp_path / "w2" / "cam", recipe, {})[1]) == here
    assert r2.fingerprint(recipe, r2.overrides(run, 1, tmp_path / "w2" / "cam", recipe, {})[1]) != here  # a seed
    other = r2.overrides(run, 0, tmp_path / "w2" / "cam", recipe, {"model.init_args.head_lr_multiplier": 3.0})[1]
    assert r2.fingerprint(recipe, other) != here  # a chosen training value
    r2.threads = 1  # another thread count trains another model: never the same work
    assert r2.fingerprint(recipe, r2.overrides(run, 0, tmp_path / "w2" / "cam", recipe, {})[1]) != here


def test_a_callback_named_by_class_is_found_in_the_recipe_or_left_out(tmp_path):
    r = _runner(tmp_path, tmp_path, tmp_path / "w", "demo.yaml")
    run = r.exp.runs[0]
    with_cb = r.overrides(run, 0, tmp_path / "w", REPO / "experiments" / "embedded_cream.yaml", {})[0]
    assert any(k.startswith("trainer.callbacks.") and k.endswith(".out_path") for k in with_cb)
    plain = tmp_path / "plain.yaml"
    plain.write_text("trainer: {callbacks: []}\n")
    assert not any(k.endswith(".out_path") for k in r.overrides(run, 0, tmp_path / "w", plain, {})[0])
    from cream_pl.core.errors import UserValueError
    from cream_pl.pipelines.run_state import callback_index

    for text, message in (("trainer: [1]\n", "trainer.callbacks is a list"), ("- 1\n", "trainer.callbacks is a list"),
                          ("trainer: {callbacks: {a: 1}}\n", "trainer.callbacks is a list"),
                          ("trainer: {callbacks: [\n", r"bad.yaml:2: invalid YAML: .* \(recipe\)")):
        (tmp_path / "bad.yaml").write_text(text)
        with pytest.raises(UserValueError, match=message):
            callback_index(tmp_path / "bad.yaml", "EpochCheckpoints")


def test_a_work_folder_of_before_the_runner_is_kept_and_one_of_other_inputs_starts_over(tmp_path):
    """A ``make demo`` folder of the old layout (``classifier.ckpt``, its own fingerprint) keeps its work under
    today's names; one of another seed, recipe or data is cleared before any new work."""
    from cream_pl.pipelines.run_state import start_over_if_stale

    r = _runner(tmp_path, tmp_path, tmp_path / "w", "demo.yaml")
    today = {"data_sha1": "d", "recipe_sha1": "r", "overrides": {"seed_everything": 0}, "version": 3}
    work = tmp_path / "w"

    def fill(seed: int, data: str = "d") -> None:
        work.mkdir(exist_ok=True)
        for name in ("classifier.ckpt", "classifier_test.json", "per_image_test.npz", "pseudo_boxes_cream_selected.json"):
            (work / name).write_text("x")
        (work / "timing.json").write_text(json.dumps({"classifier_s": 5.0, "evaluation_s": 2.0, "data_s": 1.0}))
        (work / "inputs.json").write_text(json.dumps({"data_sha1": data, "recipe_sha1": "r", "train_seed": seed,
                                                      "fast": False, "demo_version": 3}))

    fill(0)
    r.migrate(work)
    assert not start_over_if_stale(work, today, legacy=r.legacy(today, 0))
    assert (work / "model.ckpt").is_file() and (work / "test.json").is_file() and not (work / "classifier.ckpt").exists()
    assert json.loads((work / "timing.json").read_text()) == {"fit_s": 5.0, "test_s": 2.0, "data_s": 1.0}
    assert json.loads((work / "inputs.json").read_text()) == today  # today's layout from now on
    for stale in ({"seed": 1}, {"seed": 0, "data": "other"}):
        for p in work.iterdir():
            p.unlink()
        fill(stale["seed"], stale.get("data", "d"))
        r.migrate(work)
        assert start_over_if_stale(work, today, legacy=r.legacy(today, 0))
        assert sorted(p.name for p in work.iterdir()) == ["inputs.json"]


def test_a_comparison_states_every_difference_beside_the_reference_and_whether_its_verdict_holds(tmp_path):
    from cream_pl.reporting.experiment_report import write_comparison

    def results(diff: float, lo: float, hi: float, verdict: str) -> dict:
        return {"cam": {"gt_known": 60.0 + diff}, "differences": {"cream-cam": {
            "gt_known": {"diff": diff, "ci95": [lo, hi], "verdict": verdict, "a": 1.0, "b": 2.0},
            "top1_loc": {"diff": 2.0, "ci95": [1.0, 3.0], "verdict": "gain", "a": 1.0, "b": 2.0}}}}

    ref = results(8.0, 6.0, 10.0, "gain")
    assert write_comparison(ref, ref, Path("r.json"), tmp_path, "cmd") == (
        "every number equal to 1e-9 (times and machine aside)", [])
    line, diffs = write_comparison(results(1.0, -1.0, 3.0, "no significant difference"), ref, Path("r.json"), tmp_path,
                                   "cmd")
    assert line == "5 numbers differ; 1 of 2 stated differences keep their verdict"  # row, diff, interval, verdict
    assert len(diffs) == 5 and "/cam/gt_known: 61.0 vs 68.0" in diffs
    saved = json.loads((tmp_path / "comparison.json").read_text())
    assert saved["verdicts_kept"] == 1 and saved["numbers_differing"] == 5 and saved["machine"]["cores"] >= 1
    by_path = {v["path"]: v for v in saved["verdicts"]}
    assert by_path["/differences/cream-cam/gt_known"]["same_verdict"] is False
    assert by_path["/differences/cream-cam/gt_known"]["reference"]["diff"] == 8.0
    md = (tmp_path / "comparison.md").read_text()
    assert "| `/differences/cream-cam/gt_known` | +1.00 [-1.00, +3.00] no significant difference | +8.00 [+6.00, " in md
    assert "| **no** |" in md and "`cmd --compare r.json`" in md


def test_compare_numbers_reads_every_number_to_1e9():
    from cream_pl.reporting.experiment_report import compare_numbers

    a = {"cam": {"gt_known": 50.0, "curve": [1.0, float("nan")]}, "timing": {"x": 1}, "name": "a"}
    assert compare_numbers(a, {**a, "timing": {"x": 9}}) == []
    assert compare_numbers(a, {**a, "cam": {"gt_known": 50.0 + 2e-9, "curve": [1.0, float("nan")]}}) == [
        "/cam/gt_known: 50.0 vs 50.000000002"]
    assert compare_numbers(a, {k: v for k, v in a.items() if k != "name"}) == ["/name: only in the new"]


# ---------------------------------------------------------------------------------------------- end to end (--fast)
@pytest.mark.slow
def test_demo_fast_writes_results_resumes_and_reproduces_itself(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    from cream_pl.pipelines.experiment import load_experiment
    from cream_pl.pipelines.runner import run_experiment
    from cream_pl.reporting import demo_report, demo_seeds_report
    from cream_pl.reporting.experiment_report import compare_numbers

    exp = load_experiment(DEMOS / "demo.yaml")
    out, work = tmp_path / "results", tmp_path / "work"
    res = run_experiment(exp, out=out, work=work, fast=True)
    assert (work / "data" / "synth_config.json").is_file()  # a --fast run never touches the real dataset
    for name in ("metrics.json", "metrics.md", "box_acc_curves.png", "overlays.png", "ablation_T.md",
                 "ablation_lambda.md", "ablation_T.png", "ablation_lambda.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    for method in ("cam", "cream", "cream_selected"):
        for key in ("max_box_acc_v2", "gt_known", "top1_loc", "pxap", "cls_acc"):
            assert 0.0 <= saved[method][key] <= 100.0, (method, key)
    assert {"gt_known", "top1_loc", "top5_loc", "train_pseudo_iou_per_epoch", "max_box_acc_v2", "train_gt_known",
            "train_mean_iou_to_pseudo_boxes", "train_pseudo_box_gt_known"} <= set(saved["cream_reg"])
    assert saved["cream_reg"]["pxap"] is None  # a box, no map
    chosen = saved["cream_reg_selection"]["chosen"]  # the design chosen on val, each candidate's val and test shown
    assert saved["cream_reg"]["candidate"] == chosen and saved["cream_reg_psol"]["candidate"] == "psol_frozen"
    assert set(saved["cream_reg_candidates"]) == {"psol_frozen", "spatial_mlp_frozen", "objectness_frozen",
                                                  "objectness_finetune"}
    assert saved["cream_reg_candidates"][chosen]["val_gt_known"] == max(
        c["val_gt_known"] for c in saved["cream_reg_candidates"].values())
    assert 0.0 <= saved["center_baseline"]["max_box_acc_v2"] <= 100.0
    assert saved["pseudo_box_quality"]["source"] == "cream_selected"
    boxes = json.loads((work / "pseudo_boxes_cream_selected.json").read_text())  # written by the fit's callback
    assert boxes["info"]["source"] == "cream_selected"
    assert any((work / "classifier" / "checkpoints").glob("*.ckpt"))  # the recipe's checkpoints, moved into the run
    assert set(saved["selected"]["cream"]) >= {"T", "kappa", "lambda", "feature_norm", "val_score", "candidates"}
    assert saved["benchmark"] == {**saved["benchmark"], "preset": "cub", "num_test": 32}
    for d in exp.differences:  # every stated difference has its interval, on the table's own numbers
        for m in d.metrics:
            x = saved["differences"][f"{d.a}-{d.b}"][m]
            assert x["ci95"][0] <= x["diff"] <= x["ci95"][1] and x["n_resamples"] >= 1000, (d, m)
            assert x["a"] == pytest.approx(saved[d.a][m]) and x["b"] == pytest.approx(saved[d.b][m])
    md = (out / "metrics.md").read_text()
    assert "| CREAM (val-selected) |" in md and "| center baseline |" in md and "paired bootstrap 95 % CI" in md
    # the footnotes state the run's own threshold interval (--fast: 0.01; before: the protocol's 0.001 always)
    assert "thresholds np.arange(0, 1, 0.01), 224×224 squash" in md and "np.arange(0, 1, 0.001)" not in md
    assert saved["protocol"]["cam_curve_interval"] == 0.01 and saved["protocol"]["eval_size"] == 224
    assert saved["ablations"]["T"]["values"] == [0, 1, 2, 3, 4] and res["cream"] == saved["cream"]
    assert set(saved["timing"]) >= {"data_s", "classifier_s", "evaluation_s", "regressor_s", "total_s"}
    from cream_pl.pipelines.run_state import data_sha1

    assert not (out / ".figures.partial").exists()  # published with the report
    assert json.loads((out / ".cream-pl-results.json").read_text()) == {
        "experiment": "demo", "data_sha1": data_sha1(work / "data"), "root": str((work / "data").resolve())}
    from cream_pl.core.machine import machine_line  # the machine every stage ran on, beside the results

    machines = json.loads((out / "machines.json").read_text())  # made here from nothing: every stage that ran, here
    assert {"fit_s", "test_s", "data_s", "regressor_s"} <= set(machines[machine_line()])
    assert set(machines) <= {machine_line(), "not recorded"}
    capsys.readouterr()
    stage_files = [work / n for n in ("model.ckpt", "test.json", "per_image_test.npz", "diagnostics.json",
                                      "pseudo_boxes_cream_selected.json", "regressor/candidates.json",
                                      "regressor/objectness_frozen/per_image_test.npz")]
    mtimes = [p.stat().st_mtime_ns for p in stage_files]
    again = tmp_path / "again"  # the same finished runs, re-reported: every number to 1e-9
    seen = {}

    def keep(e, result, o):  # make demo's own report, the runs it saw kept for demo-seeds' report below
        seen["result"] = result
        return demo_report.report(e, result, o)

    run_experiment(exp, out=again, work=work, fast=True, report=keep)
    log = capsys.readouterr().out
    assert "loading" in log and "training" not in log
    assert [p.stat().st_mtime_ns for p in stage_files] == mtimes  # nothing was recomputed
    assert compare_numbers(json.loads((again / "metrics.json").read_text()), saved) == []
    assert json.loads((again / "machines.json").read_text()) == machines  # found done: the machines that did the work
    assert (again / "metrics.md").read_text().split("## What")[0] == md.split("## What")[0]
    from cream_pl.pipelines.runner import main  # the command line's --compare on the same finished runs

    assert main([str(DEMOS / "demo.yaml"), "--fast", "--out", str(tmp_path / "cmp"), "--work", str(work),
                 "--compare", str(out / "metrics.json")]) == 0
    comparison = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert comparison["numbers_differing"] == 0 and comparison["verdicts_kept"] == len(comparison["verdicts"]) > 0
    # damaged state (a NaN in test.json, truncated files, a list for the times): read as missing, that work done
    # again, never reported; the same numbers come back (before: a traceback, or the NaN in metrics.json)
    test_json = json.loads((work / "test.json").read_text())
    test_json["methods"]["cam"]["max_box_acc_v2"] = float("nan")
    (work / "test.json").write_text(json.dumps(test_json))
    (work / "diagnostics.json").write_text("{")
    (work / "timing.json").write_text("[]")
    chosen_records = work / "regressor" / chosen / "per_image_test.npz"
    chosen_records.write_bytes(chosen_records.read_bytes()[:200])
    capsys.readouterr()
    run_experiment(exp, out=tmp_path / "damaged", work=work, fast=True)
    log = capsys.readouterr().out
    assert "training" not in log and "Traceback" not in log
    for name in ("test.json", "diagnostics.json", "timing.json", "regressor/candidates.json"):
        assert f"{work / name}: damaged" in log, name
    assert compare_numbers(json.loads((tmp_path / "damaged" / "metrics.json").read_text()), saved,
                           skip=("timing", "meta")) == []
    # demo-seeds' report on these runs as two seeds: each seed's own make-demo results beside its run, and the spread
    r = seen["result"]
    two = replace(r, **{f: {s: getattr(r, f)[0] for s in (0, 1)} for f in ("outcomes", "rows", "records", "differences")})
    agg = demo_seeds_report.report(load_experiment(DEMOS / "demo_seeds.yaml"), two, tmp_path / "seeds")
    assert agg["methods"]["cam"]["max_box_acc_v2"]["values"] == [saved["cam"]["max_box_acc_v2"]] * 2
    for s in (0, 1):
        own = r.work / f"seed{s}" / "results"
        mine = json.loads((own / "metrics.json").read_text())
        assert mine["benchmark"]["train_seed"] == s and f"One training run (seed {s})" in " ".join(mine["summary"])
        assert compare_numbers(mine, saved, skip=("timing", "meta", "train_seed", "summary")) == []  # the run's numbers
        text = (own / "metrics.md").read_text()
        assert f"`make demo-seeds`, training seed {s}" in text and "overlays.png" not in text  # no figures drawn there
        assert (own / "ablation_T.md").is_file() and (own / "ablation_lambda.md").is_file()


@pytest.mark.slow  # the --fast demo, stopped once in its fit-end pseudo boxes: ~60 s
def test_a_run_stopped_in_its_fit_end_pseudo_boxes_keeps_its_fitted_model(tmp_path: Path, monkeypatch, capsys):
    """Before: a run stopped after its last epoch, while the fit-end callback boxed the train split (Ctrl-C,
    SIGTERM), had no model.ckpt yet; the rerun said 'no usable model.ckpt', removed the finished fit and trained again."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    from cream_pl.core.interrupts import Terminated
    from cream_pl.pipelines.experiment import load_experiment
    from cream_pl.pipelines.runner import run_experiment
    from cream_pl.pseudo_boxes.fit_end import PseudoBoxesAtFitEnd

    exp = load_experiment(DEMOS / "demo.yaml")
    out, work = tmp_path / "results", tmp_path / "work"
    real = PseudoBoxesAtFitEnd._predict

    def stop(self, *args, **kwargs):
        raise Terminated()

    monkeypatch.setattr(PseudoBoxesAtFitEnd, "_predict", stop)
    with pytest.raises(Terminated):
        run_experiment(exp, out=out, work=work, fast=True, skip=("regressor",))
    assert (work / "model.ckpt").is_file() and (work / "val_method.json").is_file()
    fit_s = json.loads((work / "timing.json").read_text())["fit_s"]  # kept with the model: the resumed run's
    assert fit_s > 1.0                                                  # loading is no fit time
    assert not (work / "pseudo_boxes_cream_selected.json").exists()
    monkeypatch.setattr(PseudoBoxesAtFitEnd, "_predict", real)
    capsys.readouterr()
    run_experiment(exp, out=out, work=work, fast=True, skip=("regressor",))
    log = capsys.readouterr().out
    assert f"loading {work / 'model.ckpt'}" in log and "training (" not in log and "starting the run over" not in log
    assert "pseudo boxes: cream_selected maps over the train split" in log, log  # the stage boxes it instead
    boxes = json.loads((work / "pseudo_boxes_cream_selected.json").read_text())
    assert boxes["info"]["source"] == "cream_selected" and len(boxes["annotations"]) == len(boxes["images"]) > 0
    assert 0.0 <= json.loads((out / "metrics.json").read_text())["cream_selected"]["max_box_acc_v2"] <= 100.0
    assert json.loads((work / "timing.json").read_text())["fit_s"] == fit_s


@pytest.mark.slow  # the --fast demo on a second dataset: ~40 s
def test_demo_runs_on_any_benchmark_format_dataset(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from cream_pl.data.cub import convert_cub
    from cream_pl.pipelines.runner import main

    cub = tmp_path / "CUB_200_2011"  # a tiny raw CUB tree: 3 classes x (6 train + 3 test), no masks
    rows = [(f"{c:03d}.bird_{c}/img_{c}_{k}.jpg", c, int(k < 6)) for c in (1, 2, 3) for k in range(9)]
    rng = np.random.default_rng(0)
    for rel, _, _ in rows:
        (cub / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(cub / "images" / rel)
    for name, col in (("images.txt", 0), ("image_class_labels.txt", 1), ("train_test_split.txt", 2)):
        (cub / name).write_text("".join(f"{i} {r[col]}\n" for i, r in enumerate(rows, 1)))
    (cub / "bounding_boxes.txt").write_text("".join(f"{i} 10.0 12.0 60.0 50.0\n" for i in range(1, len(rows) + 1)))
    (cub / "classes.txt").write_text("".join(f"{c} {c:03d}.bird_{c}\n" for c in (1, 2, 3)))
    data = convert_cub(cub, tmp_path / "data", val_per_class=2).out
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    assert main([str(DEMOS / "demo.yaml"), "--fast", "--data", str(data), "--out", str(tmp_path / "res"), "--work",
                 str(tmp_path / "work")]) == 0
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before  # a user's dataset is never touched
    md = (tmp_path / "res" / "metrics.md").read_text()
    assert md.startswith(f"# Results on `{data}`") and "3 classes, from its metadata" in md
    metrics = json.loads((tmp_path / "res" / "metrics.json").read_text())
    assert metrics["protocol"]["num_test_images"] == 9 and "max_box_acc_v2" in metrics["cream"]


def test_demo_refuses_a_dataset_without_test_boxes_in_one_line(tmp_path: Path, capsys) -> None:
    from cream_pl.data import generate_synthetic_dataset
    from cream_pl.pipelines.runner import main

    root = generate_synthetic_dataset(tmp_path / "d", seed=1, num_classes=2, num_train=2, num_val=2, num_test=2,
                                      min_side=48, max_side=64, image_format="png")
    test = root / "metadata" / "test"  # mask-only test split, as OpenImages
    (test / "localization.txt").write_text((test / "localization_masks.txt").read_text())
    (test / "localization_masks.txt").unlink()
    with pytest.raises(SystemExit):
        main([str(DEMOS / "demo.yaml"), "--data", str(root), "--out", str(tmp_path / "res"), "--work",
              str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert f"{test}: no boxes in the test split" in err and err.count("\n") == 1
    assert not (tmp_path / "work").exists() and not (tmp_path / "res").exists()


def test_a_dataset_without_a_val_split_is_refused_before_any_work(tmp_path: Path, capsys) -> None:
    """Before: the runs trained, then ended in a traceback (no CREAM choice: the val search never ran)."""
    import shutil

    from cream_pl.data import generate_synthetic_dataset
    from cream_pl.pipelines.runner import main

    root = generate_synthetic_dataset(tmp_path / "d", seed=1, num_classes=2, num_train=2, num_val=2, num_test=2,
                                      min_side=48, max_side=64, image_format="png")
    shutil.rmtree(root / "metadata" / "val")
    assert main([str(DEMOS / "demo.yaml"), "--data", str(root), "--out", str(tmp_path / "res"), "--work",
                 str(tmp_path / "work")]) == 2
    err = capsys.readouterr().err
    assert f"{root / 'metadata' / 'val'}: no such split" in err and err.count("\n") == 1, err
    assert not (tmp_path / "work").exists() and not (tmp_path / "res").exists()


def test_a_dataset_the_report_cannot_read_is_refused_before_any_work(tmp_path: Path, capsys) -> None:
    from cream_pl.data import generate_synthetic_dataset
    from cream_pl.pipelines.runner import main

    def refused(root: Path) -> str:
        with pytest.raises(SystemExit):
            main([str(DEMOS / "demo_kd.yaml"), "--data", str(root), "--out", str(tmp_path / "res"), "--work",
                  str(tmp_path / "work")])
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and not (tmp_path / "work").exists() and not (tmp_path / "res").exists()
        return err

    size = dict(seed=1, num_classes=2, num_train=2, num_val=2, num_test=4, min_side=48, max_side=64, image_format="png")
    plain = generate_synthetic_dataset(tmp_path / "d", **size)  # not confounded: every background is 'usual' by chance
    assert f"{plain / 'synth_config.json'}: config.confounded is not true" in refused(plain)
    (plain / "metadata" / "test" / "backgrounds.txt").unlink()  # a benchmark-format dataset
    assert "backgrounds.txt: not found; demo-kd needs a confounded synthetic dataset" in refused(plain)
    unusual = generate_synthetic_dataset(tmp_path / "u", confounded=True, confounded_eval="unusual", **size)
    assert "backgrounds.txt: the test split needs images on their class's usual background" in refused(unusual)


@pytest.mark.slow  # two --fast methods (tiny data, 1 epoch, random init): ~30 s
def test_demo_methods_fast_writes_results_resumes_and_splices_the_readme(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    from cream_pl.pipelines.experiment import load_experiment
    from cream_pl.pipelines.runner import run_experiment
    from cream_pl.reporting.demo_methods_report import BEGIN, END

    exp = load_experiment(DEMOS / "demo_methods.yaml")
    out, work, readme = tmp_path / "res", tmp_path / "work", tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nold\n{END}\nrest\n")
    payload = run_experiment(exp, out=out, work=work, fast=True, only=["cam", "adl"], readme=readme)
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved["methods"]) == {"cam", "cam_cream_selected", "adl", "adl_cream_selected"}
    for key, row in saved["methods"].items():
        for metric in ("max_box_acc_v2", "gt_known", "top1_loc", "cls_acc"):
            assert 0.0 <= row[metric] <= 100.0, (key, metric)
    assert saved["methods"]["adl"]["wsol_method"] == "adl" and saved["methods"]["cam"]["wsol_method"] == "cam"
    assert saved["methods"]["adl"]["wsol_method_args"] == {"drop_rate": 0.75, "threshold": 0.9}
    stated = [d for d in exp.differences if {d.a, d.b} <= set(saved["methods"])]
    assert len(stated) == 4 and set(saved["differences"]) == {f"{d.a}-{d.b}" for d in stated}  # the others: no rows
    for d in stated:
        for m in d.metrics:
            x = saved["differences"][f"{d.a}-{d.b}"][m]
            assert x["ci95"][0] <= x["diff"] <= x["ci95"][1] and x["n_resamples"] >= 1000
            assert x["a"] == pytest.approx(saved["methods"][d.a][m]) and x["b"] == pytest.approx(saved["methods"][d.b][m])
    assert saved["selected"]["cam"]["candidates"] == 36 and "variant" not in saved["selected"]["cam"]
    adl = saved["selected"]["adl"]
    assert adl["candidates"] == 72 and set(adl["variants_val"]) == {"before_adl", "after_adl"}  # grid x 2 variants
    assert adl["variant"] in adl["variants_val"] and adl["val_score"] == pytest.approx(max(adl["variants_val"].values()))
    assert saved["missing"] == {} and set(saved["probe_map_extent"]) == {"cam", "adl"}
    md = (out / "README.md").read_text()
    assert "| ADL | MaxBoxAccV2 |" in md and "## Not run" in md and f"ADL: val chose **{adl['variant']}**" in md
    # the command that reproduces these numbers, with the options that change them
    assert "(`python -m cream_pl.pipelines.runner experiments/demos/demo_methods.yaml --fast --only cam adl`)" in md
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith("rest\n") and "| CAM | MaxBoxAccV2 |" in text
    said = capsys.readouterr().out  # the differences --only leaves without rows are named, not dropped silently
    left = [f"{d.a} - {d.b}" for d in exp.differences if d not in stated]
    assert left and "differences left out" in said and all(x in said for x in left), said
    files = [work / k / n for k in ("cam", "adl") for n in ("model.ckpt", "test.json", "per_image_test.npz")]
    mtimes = [p.stat().st_mtime_ns for p in files]
    again = run_experiment(exp, out=out, work=work, fast=True, only=["cam", "adl"])
    assert "training" not in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in files] == mtimes and again["differences"] == payload["differences"]


@pytest.mark.slow  # SPG's three --fast training candidates (tiny data, 1 epoch, random init): ~30 s
def test_a_run_with_a_training_grid_trains_every_candidate_and_val_alone_chooses(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    from cream_pl.pipelines.experiment import load_experiment
    from cream_pl.pipelines.run_fits import choose_on_val
    from cream_pl.pipelines.runner import run_experiment

    exp = load_experiment(DEMOS / "demo_methods.yaml")
    grid = next(r for r in exp.runs if r.key == "spg").choose.values
    out, work = tmp_path / "res", tmp_path / "work"
    payload = run_experiment(exp, out=out, work=work, fast=True, only=["spg"])
    h = payload["head_lr_multiplier"]["spg"]
    assert list(h["candidates"]) == [f"{m:g}" for m in grid] and h["recipe"] == grid[0]
    val = {m: h["candidates"][f"{m:g}"]["val_max_box_acc_v2"] for m in grid}
    assert h["chosen"] == choose_on_val(val)  # the best val score of X (ties to the earlier), never a test column
    for m in grid:  # each candidate trained in its own folder with its own rate
        folder = work / ("spg" if m == grid[0] else f"spg_hlr{m:g}")
        config = (folder / "config.yaml").read_text()
        assert f"head_lr_multiplier: {m}" in config  # the first: the recipe's own value, without an override
        assert ("head_lr_multiplier" in json.loads((folder / "inputs.json").read_text())["overrides"].__repr__()) == (
            m != grid[0])
        assert json.loads((folder / "val_method.json").read_text())["max_box_acc_v2"] == pytest.approx(val[m], nan_ok=True)
    chosen = json.loads((work / ("spg" if h["chosen"] == grid[0] else f"spg_hlr{h['chosen']:g}") / "test.json").read_text())
    assert payload["methods"]["spg"]["max_box_acc_v2"] == pytest.approx(chosen["methods"]["cam"]["max_box_acc_v2"])
    assert f"SPG: val chose the new layers' learning rate at **{h['chosen']:g}x**" in (out / "README.md").read_text()


def test_the_choice_on_val_is_the_first_best():
    from cream_pl.pipelines.run_fits import choose_on_val

    assert choose_on_val({10.0: 7.5, 3.0: 61.0, 1.0: 58.0}) == 3.0
    assert choose_on_val({10.0: 61.0, 3.0: 61.0}) == 10.0  # a tie: the recipe's
    assert choose_on_val({10.0: float("nan"), 3.0: float("nan")}) == 10.0  # nothing scored: the recipe's


@pytest.mark.slow  # a new experiment written as the README shows: one run at two seeds (--fast): ~60 s
def test_a_new_experiment_is_a_short_declaration(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    from cream_pl.pipelines.runner import main

    decl = _decl(tmp_path, (REPO / "README.md").read_text().split("<!-- EXPERIMENT:BEGIN -->")[1]
                 .split("```yaml\n")[1].split("```")[0], "mine.yaml")
    text = decl.read_text().replace("outputs/", f"{tmp_path}/outputs/").replace("results/", f"{tmp_path}/results/")
    decl.write_text(text)
    assert main([str(decl), "--fast"]) == 0
    out = tmp_path / "outputs" / "cream_hard_fast" / "results"  # a smoke run keeps to its own folders
    assert not (tmp_path / "results").exists() and not (tmp_path / "outputs" / "cream_hard").exists()
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved["per_seed"]) == {"0", "1"} and "over_seeds" in saved
    d = saved["over_seeds"]["differences"]["cream_selected-cam"]["max_box_acc_v2"]
    assert len(d["values"]) == 2 and d["seeds_interval_above_0"] + d["seeds_interval_below_0"] <= 2
    assert "| cream_selected |" in (out / "metrics.md").read_text() or "cream_selected" in (out / "metrics.md").read_text()
    assert "thresholds np.arange(0, 1, 0.01), 224×224" in (out / "metrics.md").read_text()  # the runs' own interval
    # a variant of the declared data (another generator seed) at one training seed: its own folders and dataset
    assert main([str(decl), "--fast", "--data-seed", "1", "--train-seed", "1"]) == 0
    variant = tmp_path / "outputs" / "cream_hard_dataseed1_fast"
    assert json.loads((variant / "data" / "synth_config.json").read_text())["seed"] == 1
    assert json.loads((tmp_path / "outputs" / "cream_hard_fast" / "data" / "synth_config.json").read_text())["seed"] == 0
    again = json.loads((variant / "results_trainseed1" / "metrics.json").read_text())  # not the declared seeds' report
    assert set(again["per_seed"]) == {"1"} and "over_seeds" not in again
    assert f"`python -m cream_pl.pipelines.runner {decl} --fast --train-seed 1 --data-seed 1`" in (
        variant / "results_trainseed1" / "metrics.md").read_text()
    # another thread count: a folder of its own, in the fingerprint, the command line and the machines file, and the
    # runner's own count restored after it
    import torch

    from cream_pl.pipelines.runner import DEFAULT_THREADS

    threads = 1 if DEFAULT_THREADS != 1 else 2
    plural = "s" if threads > 1 else ""
    before = torch.get_num_threads()
    try:  # --compare against the two-seed report: numbers differ (exit 1), and the comparison names the run's threads
        assert main([str(decl), "--fast", "--threads", str(threads), "--train-seed", "0", "--compare",
                     str(out / "metrics.json")]) == 1
        assert torch.get_num_threads() == DEFAULT_THREADS  # the runner's own count, as before the runs
    finally:
        torch.set_num_threads(before)
    tvar = tmp_path / "outputs" / f"cream_hard_threads{threads}_fast"
    assert json.loads((tvar / "cream" / "inputs.json").read_text())["threads"] == threads
    machines = json.loads((tvar / "results_trainseed0" / "machines.json").read_text())
    assert all(f", {threads} thread{plural}, " in m for m in machines if m != "not recorded")
    assert any("cream/fit_s" in stages for stages in machines.values())
    assert f" --fast --seeds 1 --threads {threads}`" in (tvar / "results_trainseed0" / "metrics.md").read_text()
    assert f", {threads} thread{plural}, " in (tvar / "results_trainseed0" / "comparison.md").read_text()
    # an AVX2 machine's kernels (a process of its own: torch fixes its kernels at its first operation): a folder of its
    # own, in the fingerprint, the command line, the machines file and the comparison
    if platform.machine() not in ("x86_64", "AMD64"):
        return
    done = subprocess.run([sys.executable, "-m", "cream_pl.pipelines.runner", str(decl), "--fast", "--kernels", "avx2",
                           "--train-seed", "0", "--compare", str(out / "metrics.json")], capture_output=True, text=True,
                          timeout=600, cwd=REPO, env={**os.environ, "WANDB_MODE": "disabled"})
    assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stderr[-2000:]
    kvar = tmp_path / "outputs" / "cream_hard_avx2kernels_fast"
    assert json.loads((kvar / "cream" / "inputs.json").read_text())["kernels"] == "avx2"
    machines = json.loads((kvar / "results_trainseed0" / "machines.json").read_text())
    assert machines and all(m.endswith(", AVX2 kernels") for m in machines if m != "not recorded")
    assert " --fast --seeds 1 --kernels avx2`" in (kvar / "results_trainseed0" / "metrics.md").read_text()
    assert ", AVX2 kernels" in (kvar / "results_trainseed0" / "comparison.md").read_text()


def test_kernels_are_refused_in_one_line_where_torch_already_runs_others():
    import torch

    from cream_pl.core.errors import UserValueError
    from cream_pl.core.machine import use_kernels

    torch.ones(2).add_(1)  # torch's first operation here has fixed its kernels
    if torch.backends.cpu.get_cpu_capability() == "AVX2":
        pytest.skip("this machine's own kernels are AVX2: nothing to refuse")
    before = {k: os.environ.get(k) for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}
    with pytest.raises(UserValueError, match=r"^--kernels avx2: torch here runs \w+ kernels: .*before any\)$"):
        use_kernels("avx2")
    assert {k: os.environ.get(k) for k in before} == before  # a refusal leaves the environment as it was
    with pytest.raises(UserValueError, match="unknown kernel set 'avx9'"):
        use_kernels("avx9")


def test_the_pre_work_build_uses_placeholders_reads_no_weights_and_keeps_random_states(monkeypatch):
    """The runner builds each run's model once before any work: with the data's class count unknown (1000, so a
    CI-CAM ccam_n of 5 fits), no pretrained weights (not even through CI-CAM's **kwargs), the global random states
    as they were; a value the model refuses is one line naming the run."""
    import random

    import numpy as np
    import torch
    import torchvision

    from cream_pl.core.errors import UserError
    from cream_pl.pipelines.recipe_builder import check_recipe

    def no_download(*args, **kwargs):
        raise AssertionError("the check read pretrained weights")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", no_download)
    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    before = (torch.random.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    recipe = REPO / "experiments" / "embedded_confounded_ci_cam.yaml"
    check_recipe(recipe, {"model.init_args.cam_source": "ccam_sum1", "model.init_args.ccam_n": 5,
                          "model.init_args.backbone": "vgg16", "model.init_args.freeze_backbone": None,
                          "model.init_args.pretrained": True}, build=True)
    assert torch.equal(torch.random.get_rng_state(), before[0]) and random.getstate() == before[1]
    assert (np.random.get_state()[1] == before[2]).all()
    with pytest.raises(UserError, match=r"^x.yaml: runs\[0\]: model.init_args: pool_rate"):
        check_recipe(recipe, {"model.init_args.pool_rate": -1.0}, origin="x.yaml: runs[0]", build=True)


def test_a_results_folder_of_another_dataset_or_the_dataset_itself_is_refused_before_any_work(tmp_path, capsys):
    """Before: ``make demo DATA=b OUT=<a's results>`` replaced a's results without a word, and OUT=<the data root>
    wrote metrics beside images/ and metadata/."""
    from cream_pl.pipelines.runner import main

    out = tmp_path / "o"
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps({"benchmark": {"data": str(tmp_path / "other")}, "cam": {}}))
    (tmp_path / "other_data" / "metadata").mkdir(parents=True)  # a dataset that is not this run's
    for where, words in ((out, f"{out}: holds the results of another dataset ({tmp_path / 'other'}), not of"),
                         (tmp_path / "d", f"{tmp_path / 'd'}: the results folder is the dataset's root"),
                         (tmp_path / "other_data", f"{tmp_path / 'other_data'}: holds a dataset (metadata/)")):
        decl = _decl(tmp_path, f"name: x\nout: {where}\nwork: {tmp_path / 'w'}\ndataset: {{root: {tmp_path / 'd'}}}\n"
                               "runs: [{key: a, recipe: embedded_cream}]\n")
        assert main([str(decl)]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and words in err, err
    assert not (tmp_path / "w").exists() and json.loads((out / "metrics.json").read_text())["cam"] == {}


def test_figures_are_published_with_the_report_and_a_cut_runs_are_dropped(tmp_path):
    """Before: the figures stage wrote into the results folder; a run stopped before its report left new figures
    beside the earlier report."""
    from cream_pl.pipelines.run_stages import FIGURES_STAGING, publish_figures

    out = tmp_path / "results"
    (out / FIGURES_STAGING).mkdir(parents=True)
    (out / "overlays.png").write_bytes(b"earlier")
    (out / FIGURES_STAGING / "overlays.png").write_bytes(b"cut short")
    publish_figures(out, keep=False)  # the next run starts: the cut run's figures never reach the folder
    assert (out / "overlays.png").read_bytes() == b"earlier" and not (out / FIGURES_STAGING).exists()
    (out / FIGURES_STAGING).mkdir()
    (out / FIGURES_STAGING / "overlays.png").write_bytes(b"this run")
    publish_figures(out, keep=True)  # its report is written
    assert (out / "overlays.png").read_bytes() == b"this run" and not (out / FIGURES_STAGING).exists()


def test_a_results_folder_of_another_experiment_is_refused_before_any_work(tmp_path, capsys):
    """Before: ``make demo OUT=results/embedded_seeds`` (the same dataset) replaced demo-seeds' metrics.json with
    demo's, without a word. The owner is the folder's .cream-pl-results.json, written by the runner."""
    from cream_pl.core.errors import UserValueError
    from cream_pl.pipelines.runner import RESULTS_OWNER, check_results_folder, main, mark_results_folder

    out = tmp_path / "o"
    mark_results_folder(out, "demo-seeds")
    assert json.loads((out / RESULTS_OWNER).read_text()) == {"experiment": "demo-seeds"}
    (out / "metrics.json").write_text('{"seeds": [0, 1, 2]}')
    decl = _decl(tmp_path, f"name: demo\nout: {out}\nwork: {tmp_path / 'w'}\ndataset: {{root: {tmp_path / 'd'}}}\n"
                           "runs: [{key: a, recipe: embedded_cream}]\n")
    assert main([str(decl)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"python -m cream_pl.pipelines.runner: error: {out}: holds the results of experiment 'demo-seeds', not 'demo'; nothing was written: "
                           "give this one another results folder (--out; make demo: OUT=), or remove them"), err
    assert not (tmp_path / "w").exists() and (out / "metrics.json").read_text() == '{"seeds": [0, 1, 2]}'
    check_results_folder(out, tmp_path / "d", "seeds", "demo-seeds")  # its own experiment reports there again
    (out / RESULTS_OWNER).write_text("{damaged")  # a damaged mark is no owner: the results file's dataset decides
    check_results_folder(out, tmp_path / "d", "demo", "demo")
    mark_results_folder(out, "demo")
    assert json.loads((out / RESULTS_OWNER).read_text()) == {"experiment": "demo"}
    # with its dataset's content hash, the content decides: the same data moved (or named by another relative path)
    # is the same dataset; other content is refused, whatever the path
    (out / "metrics.json").write_text(json.dumps({"benchmark": {"data": str(tmp_path / "before_the_move")}}))
    with pytest.raises(UserValueError, match="holds the results of another dataset"):
        check_results_folder(out, tmp_path / "d", "demo", "demo")  # no hash yet: the path decides
    mark_results_folder(out, "demo", "abc", tmp_path / "d")
    check_results_folder(out, tmp_path / "moved", "demo", "demo", "abc")  # the same content elsewhere
    check_results_folder(out, tmp_path / "d", "demo", "demo", "def")  # the same root, edited (its runs start over)
    check_results_folder(out, tmp_path / "e", "demo", "demo", None)  # a dataset not generated yet: checked after
    with pytest.raises(UserValueError, match=f"^{out}: holds the results of another dataset \\({tmp_path / 'd'}\\), "
                                             f"not of {tmp_path / 'e'}; nothing was written"):
        check_results_folder(out, tmp_path / "e", "demo", "demo", "def")
    (out / "metrics.json").unlink()  # a folder a run marked but never reported into: any experiment may use it
    check_results_folder(out, tmp_path / "e", "demo", "demo-seeds", "def")
    (out / "calibration.json").write_text("{}")  # another report's file: its owner still counts
    mark_results_folder(out, "calibrate-cub")
    with pytest.raises(UserValueError, match="holds the results of experiment 'calibrate-cub', not 'demo'"):
        check_results_folder(out, tmp_path / "e", "demo", "demo")
    # a dataset inside the current folder is recorded by its relative path: a results folder kept in git names no
    # user's machine (before: /home/<user>/.../data/synth in results/embedded/.cream-pl-results.json)
    os.chdir(tmp_path)
    try:
        mark_results_folder(out, "demo", "abc", tmp_path / "d")
        assert json.loads((out / RESULTS_OWNER).read_text()) == {"experiment": "demo", "data_sha1": "abc", "root": "d"}
        check_results_folder(out, tmp_path / "d", "demo", "demo", "def")  # the same root, edited
        with pytest.raises(UserValueError, match="holds the results of another dataset"):
            check_results_folder(out, tmp_path / "e", "demo", "demo", "def")
    finally:
        os.chdir(REPO)


def test_readme_alone_splices_into_the_declared_file_and_other_seeds_report_in_a_folder_of_their_own(
        tmp_path, monkeypatch, capsys):
    """``--readme`` alone reads the declaration's ``readme.file`` (before: the key was never read); ``--seeds N`` with
    other seeds than declared reports beside the declared results (before: into them, replacing the declared report)."""
    import cream_pl.pipelines.runner as runner

    monkeypatch.chdir(tmp_path)
    for text, message in (("# no block\n", "README.md: needs exactly one <!-- METHODS:BEGIN -->"),
                          (None, "README.md: file not found (--readme)")):
        (tmp_path / "README.md").unlink(missing_ok=True)
        if text is not None:
            (tmp_path / "README.md").write_text(text)
        with pytest.raises(SystemExit) as exit_:
            runner.main([str(DEMOS / "demo_methods.yaml"), "--readme"])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    with pytest.raises(SystemExit):
        runner.main([str(DEMOS / "demo_seeds.yaml"), "--readme"])
    assert "demo_seeds.yaml fills no README block" in capsys.readouterr().err
    places = []
    monkeypatch.setattr(runner, "run_experiment", lambda exp, **kw: places.append((kw["out"], kw["seeds"])))
    for n in ("3", "4", "2"):  # demo-seeds declares seeds 0, 1, 2
        assert runner.main([str(DEMOS / "demo_seeds.yaml"), "--seeds", n]) == 0
    assert places == [("results/embedded_seeds", [0, 1, 2]), ("results/embedded_seeds_4seeds", [0, 1, 2, 3]),
                      ("results/embedded_seeds_2seeds", [0, 1])]
    assert not (tmp_path / "results").exists() and not (tmp_path / "outputs").exists()


def test_a_declaration_named_as_a_run_s_recipe_is_one_line(tmp_path, capsys):
    """Before: "data.init_args: Option 'data_root' is not accepted", about a file that is no recipe at all."""
    from cream_pl.pipelines.runner import main

    decl = _decl(tmp_path, f"name: x\nout: {tmp_path / 'o'}\nwork: {tmp_path / 'w'}\ndataset: {{root: {tmp_path / 'd'}}}\n"
                           f"runs: [{{key: a, recipe: {DEMOS / 'demo.yaml'}}}]\n")
    assert main([str(decl)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"{DEMOS / 'demo.yaml'}: an experiment declaration, not a recipe (" \
        f"{decl}: runs[0] (a, " in err, err
    assert not any((tmp_path / n).exists() for n in ("w", "o", "d"))
