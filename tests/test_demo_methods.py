"""`make demo-methods`: WSOL methods with and without CREAM, one protocol, paired intervals; resumable."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _diff(a: float, b: float, lo: float, hi: float, verdict: str) -> dict:
    return {"diff": a - b, "ci95": [lo, hi], "verdict": verdict, "a": a, "b": b, "n_images": 100, "n_resamples": 1000}


def _payload() -> dict:
    rows = {}
    for key, name, cam, cream in (("cam", "CAM", 50.0, 60.0), ("has", "HaS", 52.0, 51.0), ("adl", "ADL", 40.0, 41.0)):
        rows[key] = {"display_name": name, "max_box_acc_v2": cam, "gt_known": cam, "top1_loc": cam, "cls_acc": 90.0}
        rows[key + "_cream_selected"] = {"display_name": name + " + CREAM (val-selected)", "max_box_acc_v2": cream,
                                         "gt_known": cream, "top1_loc": cream, "cls_acc": 90.0}
    d = {
        "cam_cream_selected-cam": {"max_box_acc_v2": _diff(60, 50, 8, 12, "gain")},
        "has_cream_selected-has": {"max_box_acc_v2": _diff(51, 52, -2, -0.5, "loss")},
        "adl_cream_selected-adl": {"max_box_acc_v2": _diff(41, 40, -1, 3, "no significant difference")},
        "has-cam": {"max_box_acc_v2": _diff(52, 50, -1, 5, "no significant difference"),
                    "cls_acc": _diff(60, 90, -35, -25, "loss"), "top1_loc": _diff(30, 45, -20, -10, "loss")},
        "adl-cam": {"cls_acc": _diff(89, 90, -3, 1, "no significant difference")},
    }
    return {"methods": rows, "differences": d}


def test_summary_is_computed_from_the_intervals():
    from cream_pl.reporting.demo_methods_report import plugin_table, summary_lines

    runs = [("cam", "CAM", ""), ("has", "HaS", ""), ("adl", "ADL", "")]
    text = "\n".join(summary_lines(_payload(), runs))
    assert "CREAM (val-selected) on CAM: MaxBoxAccV2 50.00 → 60.00, +10.00 [+8.00, +12.00], gain" in text
    assert "CREAM (val-selected) on HaS: MaxBoxAccV2 52.00 → 51.00, -1.00 [-2.00, -0.50], loss" in text
    assert "excludes 0 for 1 of 3 methods (CAM); a loss for HaS." in text
    assert "HaS − CAM (both without CREAM): MaxBoxAccV2 +2.00 [-1.00, +5.00], no significant difference" in text
    assert "HaS classifies worse than CAM after the same epochs (Top-1 Cls 60.00 vs 90.00, -30.00 [-35.00, -25.00])" in text
    assert "falls with it (-15.00 [-20.00, -10.00] against CAM)" in text
    assert "ADL classifies worse" not in text  # no interval below 0: no such claim
    table = plugin_table(_payload(), runs)
    assert "| ADL | MaxBoxAccV2 | 40.00 | 41.00 | +1.00 [-1.00, +3.00] | no significant difference |" in table
    assert "| ADL | GT-known Loc | 40.00 | 41.00 | — | — |" in table  # no interval: never a verdict


def test_differences_cover_every_method_and_the_cam_baseline():
    from cream_pl.pipelines.demo_methods import METHODS, METRICS, differences_of

    keys = [r.key for r in METHODS]
    pairs = {f"{a}-{b}": m for a, b, m in differences_of(keys)}
    for k in keys:
        assert pairs[f"{k}_cream_selected-{k}"] == METRICS
    assert "cam-cam" not in pairs and pairs["adl-cam"] == (*METRICS, "cls_acc")
    assert {f"{a}-{b}" for a, b, _ in differences_of(["has"])} == {"has_cream_selected-has"}  # no CAM: no X − CAM


def test_cli_help_is_instant_and_bad_method_is_one_line():
    out = subprocess.run([sys.executable, "-m", "cream_pl.pipelines.demo_methods", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "--methods" in out.stdout and "cutmix" in out.stdout
    assert "acol" in out.stdout and "spg" in out.stdout  # all six of the benchmark's methods
    bad = subprocess.run([sys.executable, "-m", "cream_pl.pipelines.demo_methods", "--methods", "gradcam"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "invalid choice: 'gradcam'" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("module", ["cream_pl.pipelines.demo_methods", "cream_pl.pipelines.demo_kd"])
def test_a_missing_recipe_is_one_line_before_any_work(module, tmp_path):
    out = subprocess.run([sys.executable, "-m", module, "--recipes", str(tmp_path / "nope"), "--out", str(tmp_path / "o"),
                          "--work", str(tmp_path / "w")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "nope/" in out.stderr and "recipe not found" in out.stderr
    assert not (tmp_path / "w").exists() and not (tmp_path / "o").exists()  # nothing started


@pytest.mark.slow  # two --fast methods (tiny data, 1 epoch, random init): ~30 s
def test_demo_methods_fast_writes_results_resumes_and_splices_the_readme(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    from cream_pl.pipelines.demo_methods import differences_of, run_demo_methods
    from cream_pl.reporting.demo_methods_report import BEGIN, END, splice_summary

    out, work, data = tmp_path / "res", tmp_path / "work", tmp_path / "data"
    payload = run_demo_methods(out, work, data, fast=True, methods=["cam", "adl"])
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved["methods"]) == {"cam", "cam_cream_selected", "adl", "adl_cream_selected"}
    for key, row in saved["methods"].items():
        for metric in ("max_box_acc_v2", "gt_known", "top1_loc", "cls_acc"):
            assert 0.0 <= row[metric] <= 100.0, (key, metric)
    assert saved["methods"]["adl"]["wsol_method"] == "adl" and saved["methods"]["cam"]["wsol_method"] == "cam"
    assert saved["methods"]["adl"]["wsol_method_args"] == {"drop_rate": 0.75, "threshold": 0.9}
    for a, b, metrics in differences_of(["cam", "adl"]):
        for m in metrics:
            d = saved["differences"][f"{a}-{b}"][m]
            assert d["ci95"][0] <= d["diff"] <= d["ci95"][1] and d["n_resamples"] >= 1000
            assert d["a"] == pytest.approx(saved["methods"][a][m]) and d["b"] == pytest.approx(saved["methods"][b][m])
    assert saved["selected"]["cam"]["candidates"] == 36 and "variant" not in saved["selected"]["cam"]
    assert saved["selected"]["adl"]["candidates"] == 72  # the grid x ADL's two CREAM variants
    for key in ("cam", "adl"):
        assert set(saved["selected"][key]) >= {"T", "kappa", "lambda"}
    adl = saved["selected"]["adl"]
    assert set(adl["variants_val"]) == {"before_adl", "after_adl"} and adl["variant"] in adl["variants_val"]
    assert adl["val_score"] == pytest.approx(max(adl["variants_val"].values()))  # the choice is the best on val
    assert saved["missing"] == {}
    md = (out / "README.md").read_text()
    assert "| ADL | MaxBoxAccV2 |" in md and "## Not run" in md and "paired bootstrap 95 % CI" in md
    assert "- None: all six of the benchmark's methods run" in md and f"ADL: val chose **{adl['variant']}**" in md
    # resume: nothing is retrained or retested
    capsys.readouterr()
    files = [work / k / n for k in ("cam", "adl") for n in ("model.ckpt", "test.json", "per_image_test.npz")]
    mtimes = [p.stat().st_mtime_ns for p in files]
    again = run_demo_methods(out, work, data, fast=True, methods=["cam", "adl"])
    assert "training" not in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in files] == mtimes and again["differences"] == payload["differences"]
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nold\n{END}\nrest\n")
    splice_summary(readme, saved, out)
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith("rest\n")
    assert "| CAM | MaxBoxAccV2 |" in text and f"({out.as_posix()}/README.md)" in text


def test_moving_the_data_or_work_folder_keeps_the_fingerprint(tmp_path):
    from cream_pl.data.synth import generate_synthetic_dataset
    from cream_pl.pipelines.demo_methods import METHODS, _fingerprint, overrides_for

    data = generate_synthetic_dataset(tmp_path / "a", seed=1, num_classes=2, num_train=2, num_val=2, num_test=2,
                                      min_side=48, max_side=56)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("seed_everything: 0\n")
    run = METHODS[0]
    here = _fingerprint(data, recipe, overrides_for(run, data, tmp_path / "w1" / run.key, 0, False))
    moved = data.rename(tmp_path / "b")
    assert _fingerprint(moved, recipe, overrides_for(run, moved, tmp_path / "w2" / run.key, 0, False)) == here
    assert _fingerprint(moved, recipe, overrides_for(run, moved, tmp_path / "w2" / run.key, 1, False)) != here  # seed


@pytest.mark.slow  # SPG's three --fast training candidates (tiny data, 1 epoch, random init): ~30 s
def test_a_method_with_a_training_grid_trains_every_candidate_and_val_alone_chooses(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    from cream_pl.pipelines.demo_methods import HEAD_LR_GRID, choose_head_lr, run_demo_methods

    out, work, data = tmp_path / "res", tmp_path / "work", tmp_path / "data"
    payload = run_demo_methods(out, work, data, fast=True, methods=["spg"])
    h = payload["head_lr_multiplier"]["spg"]
    assert list(h["candidates"]) == [f"{m:g}" for m in HEAD_LR_GRID] and h["recipe"] == HEAD_LR_GRID[0]
    val = {m: h["candidates"][f"{m:g}"]["val_max_box_acc_v2"] for m in HEAD_LR_GRID}
    assert h["chosen"] == choose_head_lr(val)  # the best val score of X (ties to the earlier), never a test column
    for m in HEAD_LR_GRID:  # each candidate trained in its own folder with its own rate
        folder = work / ("spg" if m == HEAD_LR_GRID[0] else f"spg_hlr{m:g}")
        stored = json.loads((folder / "test.json").read_text())
        assert stored["head_lr_multiplier"] == m
        assert stored["val"]["max_box_acc_v2"] == pytest.approx(val[m], nan_ok=True)
    chosen = json.loads((work / ("spg" if h["chosen"] == HEAD_LR_GRID[0] else f"spg_hlr{h['chosen']:g}")
                         / "test.json").read_text())
    assert payload["methods"]["spg"]["max_box_acc_v2"] == pytest.approx(chosen["methods"]["cam"]["max_box_acc_v2"])
    assert f"SPG: val chose the new layers' learning rate at **{h['chosen']:g}x**" in (out / "README.md").read_text()


def test_the_head_lr_choice_is_the_first_best_on_val():
    from cream_pl.pipelines.demo_methods import choose_head_lr

    assert choose_head_lr({10.0: 7.5, 3.0: 61.0, 1.0: 58.0}) == 3.0
    assert choose_head_lr({10.0: 61.0, 3.0: 61.0}) == 10.0  # a tie: the recipe's
    assert choose_head_lr({10.0: float("nan"), 3.0: float("nan")}) == 10.0  # nothing scored: the recipe's
