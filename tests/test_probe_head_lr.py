"""The head learning-rate probe (``make probe-head-lr``) and the demo-methods text built from its results file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ACOL = REPO / "experiments" / "embedded_acol_cream.yaml"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from cream_pl.data import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("probe") / "data"
    generate_synthetic_dataset(root, seed=1, num_classes=3, num_train=12, num_val=6, num_test=6)
    return root


def test_the_probe_trains_each_rate_keeps_every_step_and_resumes(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.chdir(REPO)  # the results name a recipe relative to the working folder
    from cream_pl.pipelines.probe_head_lr import curve_summary, markdown, probe

    out, said = tmp_path / "probe.json", []
    result = probe([(ACOL, (1.0, 10.0))], tiny, out, steps=2, log=said.append)
    curves = result["curves"]
    assert list(curves) == ["embedded_acol_cream@1x", "embedded_acol_cream@10x"]
    for key, m in (("embedded_acol_cream@1x", 1.0), ("embedded_acol_cream@10x", 10.0)):
        c = curves[key]
        assert c["multiplier"] == m and c["recipe"] == "experiments/embedded_acol_cream.yaml"
        assert 1 <= len(c["losses"]) <= 2 and all(math.isfinite(v) and v > 0 for v in c["losses"])
        assert {k: c[k] for k in curve_summary(c["losses"])} == curve_summary(c["losses"])
    # one seed, one batch order: both rates start from the same first loss (the rate acts after step 1)
    assert curves["embedded_acol_cream@1x"]["first"] == pytest.approx(curves["embedded_acol_cream@10x"]["first"])
    assert json.loads(out.read_text())["curves"] == json.loads(json.dumps(curves))
    assert "| `experiments/embedded_acol_cream.yaml` | 10x |" in markdown(result)
    # a rerun with the same inputs trains nothing; another step limit trains again
    said.clear()
    again = probe([(ACOL, (1.0, 10.0))], tiny, out, steps=2, log=said.append)
    assert len(said) == 2 and all("using" in line for line in said)
    assert again["curves"] == json.loads(out.read_text())["curves"]
    said.clear()
    probe([(ACOL, (10.0,))], tiny, out, steps=1, log=said.append)
    assert said == ["embedded_acol_cream@10x: training (1 steps)"]
    kept = json.loads(out.read_text())["curves"]
    assert len(kept["embedded_acol_cream@10x"]["losses"]) == 1
    assert kept["embedded_acol_cream@1x"] == json.loads(json.dumps(curves["embedded_acol_cream@1x"]))  # not asked: kept
    assert kept["embedded_acol_cream@10x"]["wall_s"] > 0


def test_bad_arguments_are_one_line(tiny, tmp_path, capsys):
    from cream_pl.pipelines.probe_head_lr import main

    acol = ["--recipes", str(ACOL), "--multipliers", "1"]
    no_choice = tmp_path / "no_choice.yaml"  # a declaration whose runs choose nothing
    no_choice.write_text("name: x\nout: o\nwork: w\nruns: [{key: cam, recipe: embedded_cream}]\n")
    (tmp_path / "list.yaml").write_text("- 1\n")
    cases = [(["--recipes", str(tmp_path / "none.yaml"), "--data", str(tiny)], "none.yaml: not found"),
             ([*acol, "--data", str(tmp_path / "nodata")], "nodata: no dataset there"),
             (["--recipes", str(ACOL), "--data", str(tiny), "--multipliers", "0"], "each must be a positive number"),
             (["--recipes", str(ACOL), "--data", str(tiny)], "--recipes: name the multipliers too"),
             ([*acol, "--data", str(tiny), "--steps", "0"], "argument --steps: must be an integer >= 1, got '0'"),
             ([*acol, "--data", str(tiny), "--out", str(tmp_path / "p.md")], "p.md: a .json file"),
             (["--data", str(tiny), "--declaration", str(no_choice)], "no_choice.yaml: no run chooses head_lr_multiplier"),
             (["--data", str(tiny), "--declaration", str(tmp_path / "none.yaml")], "none.yaml: not found (--declaration"),
             # the second recipe is no recipe: before, the first one trained, then this line
             (["--recipes", str(ACOL), str(no_choice), "--multipliers", "1", "--data", str(tiny)],
              "no_choice.yaml: an experiment declaration, not a recipe"),
             (["--recipes", str(ACOL), str(tmp_path / "list.yaml"), "--multipliers", "1", "--data", str(tiny)],
              "list.yaml: a recipe is a mapping (trainer, model, data), got list")]
    for argv, message in cases:
        with pytest.raises(SystemExit) as err:
            main([*argv, "--out", str(tmp_path / "p.json")] if "--out" not in argv else argv)
        text = capsys.readouterr().err.strip()
        assert err.value.code == 2 and message in text and len(text.splitlines()) == 1, text
    assert not (tmp_path / "p.json").exists()
    broken = tmp_path / "broken.json"
    broken.write_text('{"curves": [1, 2')  # an earlier results file cut short: refused before any training
    assert main([*acol, "--data", str(tiny), "--out", str(broken)]) == 2
    text = capsys.readouterr().err.strip()
    assert "broken.json: not a probe_head_lr results file" in text and len(text.splitlines()) == 1
    # each file the probe writes is checked before it trains (before: a folder there was a traceback after training)
    folders = tmp_path / "folders"
    (folders / "as_dir.json").mkdir(parents=True)
    (folders / "md.md").mkdir()
    (folders / "readme" / "README.md").mkdir(parents=True)
    (folders / "readme" / "metrics.json").write_text("{}")
    for argv, message in [(["--out", str(folders / "as_dir.json")], "as_dir.json: --out must be a file path"),
                          (["--out", str(folders / "md.json")], "md.md: --out's .md table must be a file path"),
                          (["--out", str(folders / "r.json"), "--readme", str(folders / "readme")],
                           "README.md: --readme must be a file path")]:
        assert main([*acol, "--data", str(tiny), *argv]) == 2
        text = capsys.readouterr().err.strip()
        assert message in text and len(text.splitlines()) == 1, text
    assert sorted(p.name for p in folders.iterdir()) == ["as_dir.json", "md.md", "readme"]  # nothing written


def test_by_default_the_probe_trains_what_demo_methods_chooses_among(tiny, tmp_path, monkeypatch, capsys):
    """Without --recipes: the declaration's runs that choose head_lr_multiplier, at their grid; a declaration whose
    choosing run would train otherwise than its recipe, or probe one recipe twice, is one line before any training."""
    import cream_pl.pipelines.probe_head_lr as probe_module
    from cream_pl.pipelines.experiment import load_experiment

    monkeypatch.chdir(REPO)  # the default declaration, relative to the repository's root as make runs it
    asked = {}

    def fake_probe(plan, data, out, steps=None, log=print):
        asked.update(plan=[(Path(r).name, tuple(m)) for r, m in plan], data=data)
        return {"curves": {}}

    monkeypatch.setattr(probe_module, "probe", fake_probe)
    assert probe_module.main(["--data", str(tiny), "--out", str(tmp_path / "p.json")]) == 0
    declared = load_experiment(REPO / "experiments" / "demos" / "demo_methods.yaml")
    chooses = [r for r in declared.runs if r.choose is not None and r.choose.key.endswith("head_lr_multiplier")]
    assert asked["plan"] == [(f"{r.recipe}.yaml", tuple(r.choose.values)) for r in chooses]
    assert [r.key for r in chooses] == ["acol", "spg"] and asked["data"] == tiny.resolve()
    assert probe_module.main(["--data", str(tiny), "--out", str(tmp_path / "p.json"), "--multipliers", "2"]) == 0
    assert asked["plan"] == [(f"{r.recipe}.yaml", (2.0,)) for r in chooses]
    base = (REPO / "experiments" / "demos" / "demo_methods.yaml").read_text()
    spg = "    recipe: embedded_spg_cream\n"
    for edited, message in ((spg + "    overrides: {model.init_args.lr: 0.5}\n", "run 'spg' overrides model.init_args.lr, "
                             "which its training reads"),
                            ("    recipe: embedded_acol_cream\n", "run 'spg' probes embedded_acol_cream a second time")):
        assert base.count(spg) == 1
        edited = base.replace(spg, edited)
        assert edited != base
        bad = tmp_path / "bad.yaml"
        bad.write_text(edited)
        assert probe_module.main(["--data", str(tiny), "--out", str(tmp_path / "p.json"), "--declaration", str(bad)]) == 2
        text = capsys.readouterr().err.strip()
        assert message in text and len(text.splitlines()) == 1, text


def _probe_file(path: Path, stale_spg: bool = False) -> dict:
    import hashlib

    def sha(name: str) -> str:
        return hashlib.sha1((REPO / "experiments" / name).read_bytes()).hexdigest()

    curve = {"recipe": "experiments/embedded_acol_cream.yaml", "multiplier": 10.0, "losses": [5.25, 118.0, 947.0, 4.16],
             "first": 5.25, "peak": 947.0, "peak_step": 3, "last": 4.16, "min": 4.16, "steps": 4,
             "first_nonfinite_step": None, "inputs": {"recipe_sha1": sha("embedded_acol_cream.yaml")}}
    spg = {**curve, "recipe": "experiments/embedded_spg_cream.yaml", "losses": [2.1, float("nan")], "first": 2.1,
           "peak": 2.1, "peak_step": 1, "min": 2.1, "last": float("nan"), "steps": 2, "first_nonfinite_step": 2,
           "inputs": {"recipe_sha1": "an older recipe" if stale_spg else sha("embedded_spg_cream.yaml")}}
    result = {"probe": "x", "curves": {"embedded_acol_cream@10x": curve, "embedded_spg_cream@10x": spg}}
    from cream_pl.reporting.tables import write_json_atomic

    write_json_atomic(result, path / "probe_head_lr.json")
    return result


def _committed_metrics(results: Path) -> None:
    """The committed demo-methods metrics.json, its dataset named where none is (a probe is checked against a
    dataset only where that dataset is here: this test must not depend on a local data/synth)."""
    results.mkdir(exist_ok=True)
    payload = json.loads((REPO / "results" / "embedded_methods" / "metrics.json").read_text())
    payload["benchmark"]["data"] = str(results / "no_dataset_here")
    (results / "metrics.json").write_text(json.dumps(payload))


def test_the_methods_readme_states_the_probe_from_its_file_and_says_when_it_did_not_run(tiny, tmp_path, capsys,
                                                                                       monkeypatch):
    """The committed demo-methods results, rewritten by the README command, read their numbers from the probe's file."""
    from cream_pl.core.errors import UserValueError
    from cream_pl.pipelines.probe_head_lr import main, rewrite_methods_readme

    monkeypatch.chdir(REPO)  # the probe's recipes, as its file names them
    results = tmp_path / "res"
    _committed_metrics(results)
    rewrite_methods_readme(results)
    text = (results / "README.md").read_text()
    assert "was not run for this report" in text and "947" not in text
    _probe_file(results)
    rewrite_methods_readme(results)
    text = (results / "README.md").read_text()
    assert "ACoL at 10x from 5.25, up to 947 at step 3, 268.60 on average over its last 4 of 4 steps" in text
    assert "SPG at 10x from 2.1, NaN / inf from step 2 of 2" in text
    assert "only these 2 get a grid (1x, 3x, 10x)" in text and "the other 4 keep the shared 10x" in text
    assert "(`python -m cream_pl.pipelines.runner experiments/demos/demo_methods.yaml`)" in text
    capsys.readouterr()
    _probe_file(results, stale_spg=True)  # a curve of another recipe is left out, and said so
    rewrite_methods_readme(results)
    text = (results / "README.md").read_text()
    assert "SPG at 10x" not in text and "Left out: embedded_spg_cream@10x, trained from another recipe" in text
    # the command's --readme is checked before any training: one line
    with pytest.raises(SystemExit):
        main(["--recipes", str(ACOL), "--multipliers", "1", "--data", str(tiny), "--out", str(tmp_path / "p.json"),
              "--readme", str(tmp_path / "nothing")])
    assert "nothing/metrics.json: not found" in capsys.readouterr().err
    (results / "metrics.json").write_text("{}")
    with pytest.raises(UserValueError, match="metrics.json: not a demo-methods metrics.json"):
        rewrite_methods_readme(results)


def test_the_committed_methods_readme_is_what_its_files_render(tmp_path, monkeypatch):
    """results/embedded_methods/README.md is rendered from that folder's metrics.json and probe_head_lr.json alone
    (every difference and grid in the declaration's order, though metrics.json's keys are sorted)."""
    from cream_pl.pipelines.probe_head_lr import rewrite_methods_readme

    monkeypatch.chdir(REPO)
    committed = REPO / "results" / "embedded_methods"
    _committed_metrics(tmp_path)
    (tmp_path / "probe_head_lr.json").write_text((committed / "probe_head_lr.json").read_text())
    rewrite_methods_readme(tmp_path)
    assert (tmp_path / "README.md").read_text() == (committed / "README.md").read_text()


def test_the_readme_blocks_are_what_the_committed_results_render(tmp_path, monkeypatch):
    """README.md's RESULTS block is what results/embedded renders (make readme-results), and its METHODS block what
    results/embedded_methods/metrics.json renders (in the declaration's order: metrics.json's keys are sorted)."""
    from cream_pl.pipelines.experiment import load_experiment
    from cream_pl.reporting.demo_methods_report import in_order, splice_summary
    from cream_pl.reporting.demo_report import main

    monkeypatch.chdir(REPO)
    readme = tmp_path / "README.md"
    readme.write_text((REPO / "README.md").read_text())
    assert main(["--readme", str(readme), "--results", "results/embedded"]) == 0
    exp = load_experiment(REPO / "experiments" / "demos" / "demo_methods.yaml")
    payload = json.loads((REPO / "results" / "embedded_methods" / "metrics.json").read_text())
    payload["methods"] = in_order(payload["methods"], [r.key for r in exp.runs])
    payload["differences"] = in_order(payload["differences"], [f"{d.a}-{d.b}" for d in exp.differences])
    splice_summary(readme, payload, Path("results/embedded_methods"))
    assert readme.read_text() == (REPO / "README.md").read_text()
