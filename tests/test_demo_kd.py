"""``make demo-kd``: teacher selection over (run, epoch), background subsets, the report, and a real end-to-end run."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cream_pl.pipelines.run_stages import select_teachers
from cream_pl.reporting.demo_kd_report import curve_peak, usual_background_flags

REPO = Path(__file__).resolve().parents[1]
RUNS = {"cream": "embedded_confounded_cream", "ci_cam": "embedded_confounded_ci_cam",
        "ci_cam_rrc": "embedded_confounded_ci_cam_rrc", "kd_ci_cam": "embedded_confounded_kd_ci_cam"}

os.environ.setdefault("WANDB_MODE", "disabled")

SIZE = 64


def _rows(cls: list[float], loc: list[float]) -> list[dict]:
    return [{"epoch": e + 1, "val_cls_acc": c, "val_gt_known": g, "checkpoint": f"e{e + 1}"}
            for e, (c, g) in enumerate(zip(cls, loc))]


def test_teachers_are_the_best_val_checkpoints_over_runs_and_epochs():
    curves = {"a": _rows([50.0, 60.0, 58.0], [40.0, 35.0, 30.0]), "b": _rows([55.0, 62.0], [41.0, 20.0])}
    t = select_teachers(curves, ["a", "b"])
    assert (t["cls"]["run"], t["cls"]["epoch"], t["cls"]["val_cls_acc"]) == ("b", 2, 62.0)
    assert (t["loc"]["run"], t["loc"]["epoch"], t["loc"]["val_gt_known"]) == ("b", 1, 41.0)
    assert t["cls"]["val_gt_known"] == 20.0 and t["loc"]["checkpoint"] == "e1" and not t["same_checkpoint"]
    assert select_teachers(curves, ["a"])["loc"]["epoch"] == 1  # only the listed runs compete


def test_ties_go_to_the_earlier_run_then_epoch_and_one_checkpoint_may_win_both():
    tie = {"a": _rows([60.0, 70.0], [30.0, 45.0]), "b": _rows([70.0, 70.0], [45.0, 10.0])}
    t = select_teachers(tie, ["a", "b"])
    assert (t["cls"]["run"], t["cls"]["epoch"]) == ("a", 2) and (t["loc"]["run"], t["loc"]["epoch"]) == ("a", 2)
    assert t["same_checkpoint"]
    t = select_teachers(tie, ["b", "a"])  # the order of the candidates decides ties
    assert (t["cls"]["run"], t["cls"]["epoch"], t["loc"]["epoch"]) == ("b", 1, 1) and t["same_checkpoint"]
    with pytest.raises(ValueError, match="at least one candidate"):
        select_teachers(tie, [])
    with pytest.raises(ValueError, match="'c' has no per-epoch val rows"):
        select_teachers(tie, ["a", "c"])
    with pytest.raises(ValueError, match="epoch 2: no val_gt_known"):
        select_teachers({"a": [*_rows([1.0], [1.0]), {"epoch": 2, "val_cls_acc": 3.0, "val_gt_known": None}]}, ["a"])


def test_curve_peak_is_the_first_epoch_of_the_maximum():
    rows = _rows([50.0, 61.0, 61.0, 40.0], [70.0, 60.0, 50.0, 40.0])
    assert curve_peak(rows, "val_cls_acc") == {"epoch": 2, "value": 61.0}
    assert curve_peak(rows, "val_gt_known") == {"epoch": 1, "value": 70.0}
    with pytest.raises(ValueError, match="no epoch has a value"):
        curve_peak([{"epoch": 1, "x": None}], "x")


def test_usual_background_flags_follow_the_image_order(tmp_path):
    from cream_pl.data import WSOLDataModule, generate_synthetic_dataset

    root = generate_synthetic_dataset(tmp_path / "d", seed=0, num_classes=3, num_train=6, num_val=3, num_test=24,
                                      min_side=48, max_side=56, confounded=True, confounded_eval="uniform")
    ids = [s.image_id for s in WSOLDataModule(str(root), eval_size=SIZE).eval_dataset("test").samples]
    flags = usual_background_flags(root, ids)
    lines = [line.split(",") for line in (root / "metadata" / "test" / "backgrounds.txt").read_text().splitlines()]
    by_id = {i: u == "1" for i, _, u in lines}
    assert flags.tolist() == [by_id[i] for i in ids] and 0 < flags.sum() < len(ids)
    assert usual_background_flags(root, ids[::-1]).tolist() == flags[::-1].tolist()
    with pytest.raises(ValueError, match="no background entry"):
        usual_background_flags(root, ["test/nope.jpg"])
    with pytest.raises(FileNotFoundError, match="confounded synthetic dataset"):
        usual_background_flags(tmp_path, ids)


def _report_inputs(same: bool) -> tuple:
    """Hand-made rows and records: CI-CAM better than CAM on the unusual backgrounds only."""
    n, rng = 300, np.random.default_rng(0)
    usual = np.zeros(n, bool)
    usual[:60] = True
    thr = np.arange(0, 1, 0.01)

    def rec(p_cls: np.ndarray, p_loc: np.ndarray) -> dict:
        top1, hit = rng.random(n) < p_cls, rng.random(n) < p_loc
        best = np.where(hit[:, None], 0.8, 0.1) * np.ones((1, len(thr)))
        return {"index": np.arange(n), "top1": top1, "gt_known": hit, "top1_loc": hit & top1, "best_iou": best,
                "thresholds": thr, "iou_thresholds": np.array([30.0, 50.0, 70.0])}

    hi_usual = np.where(usual, 0.95, 0.5)
    records = {"cam": rec(hi_usual, hi_usual), "cream_selected": rec(hi_usual, hi_usual + 0.02),
               "ci_cam": rec(np.full(n, 0.9), np.full(n, 0.9)), "ci_cam_cream_selected": rec(np.full(n, 0.9), np.full(n, 0.9)),
               "kd_ci_cam": rec(np.full(n, 0.9), np.full(n, 0.9)), "cls_teacher": rec(np.full(n, 0.9), np.full(n, 0.9))}
    records["loc_teacher"] = records["cls_teacher"] if same else rec(np.full(n, 0.5), np.full(n, 0.99))
    from cream_pl.reporting.demo_kd_report import subset_metrics

    tested = {k: {"run": "r", "epoch": 1, "method": "cam", **subset_metrics(r)} for k, r in records.items()}
    curves = {"ci_cam": _rows([60.0, 70.0], [50.0, 40.0]), "ci_cam_rrc": _rows([65.0, 66.0], [45.0, 55.0])}
    teachers = select_teachers(curves, ["ci_cam", "ci_cam_rrc"])
    if same:
        teachers["loc"] = dict(teachers["cls"])
        teachers["same_checkpoint"] = True
    return tested, records, usual, curves, teachers


@pytest.mark.parametrize("same", [False, True], ids=["two_teachers", "one_checkpoint"])
def test_report_states_the_claims_from_the_intervals(same, tmp_path):
    from cream_pl.reporting.demo_kd_report import build_results, write_results

    tested, records, usual, curves, teachers = _report_inputs(same)
    results = build_results(tested, records, usual, curves, teachers)
    results["benchmark"] = {"num_test": 300, "num_test_usual": 60, "num_test_unusual": 240, "num_val": 20,
                            "num_train": 40, "num_classes": 8, "usual_background_prob": 0.8, "seed": 0,
                            "confounded": True, "confounded_eval": "uniform",
                            "background_photos": ["p0", "p1", "p2", "p3", "p4", "p5"]}
    results["runs"] = {name: {"recipe": f"experiments/{recipe}.yaml", "epochs": 2} for name, recipe in RUNS.items()}
    write_results(results, tmp_path, timing={"data_s": 1.0, "fit_ci_cam_s": 2.0, "test_ci_cam_epoch002_s": 3.0},
                  fast=False, command="python -m cream_pl.pipelines.runner experiments/demos/demo_kd.yaml", wall_s=6.0,
                  load={"data_s": 0.5, "fit_ci_cam_s": 3.5, "test_ci_cam_epoch002_s": 1.0})
    saved = json.loads((tmp_path / "metrics.json").read_text())
    d = saved["differences"]
    assert d["ci_cam-cam@unusual"]["cls_acc"]["verdict"] == "gain"  # 0.9 vs 0.5 on 240 images
    assert d["ci_cam-cam@unusual"]["cls_acc"]["n_images"] == 240 and d["ci_cam-cam@usual"]["cls_acc"]["n_images"] == 60
    assert d["ci_cam-cam"]["cls_acc"]["a"] == pytest.approx(saved["methods"]["ci_cam"]["cls_acc"])
    assert saved["confounder"]["cam"]["cls_acc"]["verdict"] == "gain"  # CAM classifies better on usual backgrounds
    assert saved["confounder"]["cam"]["cls_acc"]["n_usual"] == 60
    assert saved["methods"]["cam"]["subsets"]["usual"]["n_images"] == 60
    assert saved["dilemma"]["ci_cam"]["peak_val_cls_acc"] == {"epoch": 2, "value": 70.0}
    assert saved["dilemma"]["ci_cam"]["peaks_differ"] and not saved["dilemma"]["ci_cam_rrc"]["peaks_differ"]
    text = (tmp_path / "README.md").read_text()
    assert "CI-CAM beats CAM in" in text and "Top-1 Cls" in text
    assert "| CI-CAM − CAM (unusual-background test images) | Top-1 Cls |" in text
    assert "## What this benchmark cannot show" in text and (tmp_path / "dilemma.png").stat().st_size > 0
    assert "(`python -m cream_pl.pipelines.runner experiments/demos/demo_kd.yaml`) on " in text
    assert "The 1-min load average at the end of the stages was 0.5–3.5 on" in text
    if same:
        assert saved["teachers"]["same_checkpoint"] and "cls_teacher-loc_teacher" not in d
        assert "The two teachers are the same checkpoint" in text and "no classification/localisation dilemma" in text
    else:
        assert (saved["teachers"]["cls"]["run"], saved["teachers"]["cls"]["epoch"]) == ("ci_cam", 2)
        assert (saved["teachers"]["loc"]["run"], saved["teachers"]["loc"]["epoch"]) == ("ci_cam_rrc", 2)
        assert d["cls_teacher-loc_teacher"]["cls_acc"]["verdict"] == "gain"
        assert d["cls_teacher-loc_teacher"]["gt_known"]["verdict"] == "loss"
        assert "Each teacher is significantly better in its own role on test: the dilemma is real here." in text
        assert d["kd_ci_cam-loc_teacher"]["gt_known"]["verdict"] == "loss"
        assert "the student falls short of the loc teacher's GT-known Loc" in text


def _tiny_declaration(tmp_path: Path, recipes: Path) -> Path:
    """``make demo-kd``'s declaration at a tiny size: the same runs, each recipe a copy under ``recipes``."""
    import yaml

    exp = yaml.safe_load((REPO / "experiments" / "demos" / "demo_kd.yaml").read_text())
    exp.update(out=str(tmp_path / "results"), work=str(tmp_path / "work"))
    exp["dataset"]["root"] = str(tmp_path / "work" / "data")
    exp["dataset"]["overrides"].update(num_classes=3, num_train=12, num_val=6, num_test=18, min_side=72, max_side=96)
    exp["defaults"]["overrides"].update({
        "trainer.max_epochs": 2, "model.init_args.pretrained": False, "model.init_args.cam_curve_interval": 0.05,
        "model.init_args.eval_size": SIZE, "data.init_args.resize_size": 72, "data.init_args.crop_size": SIZE,
        "data.init_args.eval_size": SIZE, "data.init_args.batch_size": 6, "data.init_args.num_workers": 0})
    for run in exp["runs"]:
        run["recipe"] = str(recipes / f"{run['recipe']}.yaml")
        if run["key"] != "cream":  # the CI-CAM models' own crop
            run["overrides"] = {**exp["defaults"]["overrides"], "model.init_args.train_crop_size": SIZE}
    path = tmp_path / "demo_kd_tiny.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    return path


@pytest.mark.slow  # four tiny fits with per-epoch validation, five tests, then a partial rerun: about 2 min
def test_demo_kd_end_to_end_is_resumable_and_restarts_stale_runs(tmp_path, capsys):
    from cream_pl.pipelines.experiment import load_experiment
    from cream_pl.pipelines.runner import run_experiment
    from cream_pl.reporting.demo_kd_report import MAIN_ROWS, subset_metrics
    from cream_pl.reporting.evidence import load_records

    recipes = tmp_path / "recipes"
    shutil.copytree(REPO / "experiments", recipes, ignore=shutil.ignore_patterns("demos"))
    exp = load_experiment(_tiny_declaration(tmp_path, recipes))
    out, work = tmp_path / "results", tmp_path / "work"
    payload = run_experiment(exp)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["main_rows"] == list(MAIN_ROWS)
    for key in MAIN_ROWS:
        for col in ("max_box_acc_v2", "gt_known", "top1_loc", "cls_acc"):
            assert 0.0 <= saved["methods"][key][col] <= 100.0, (key, col)
    assert (out / "dilemma.png").stat().st_size > 0
    readme = (out / "README.md").read_text()
    assert "| KD-CI-CAM |" in readme and "## What the numbers show" in readme
    assert saved["meta"]["eval_size"] == SIZE and f"{SIZE}×{SIZE} squash-resized test images" in readme  # was: 224 always
    # every stage time carries the load average when it ended, read back on a resumed report too
    assert set(saved["meta"]["load_average_1min"]) == set(saved["meta"]["timing"])
    assert "The 1-min load average at the end of the stages was" in readme
    assert f"(`python -m cream_pl.pipelines.runner {exp.source}`) on " in readme
    # every run validated every epoch and kept every epoch's checkpoint
    for run in RUNS:
        rows = saved["dilemma"][run]["epochs"]
        assert [r["epoch"] for r in rows] == [1, 2]
        assert all((work / "runs" / run / "epochs" / f"epoch={e:03d}.ckpt").is_file() for e in (1, 2))
    # the teachers are the val argmax over both CI-CAM runs' epochs, and the student was taught by those files
    curves = {r: saved["dilemma"][r]["epochs"] for r in ("ci_cam", "ci_cam_rrc")}
    want = select_teachers(curves, ["ci_cam", "ci_cam_rrc"])
    for role in ("cls", "loc"):
        assert (saved["teachers"][role]["run"], saved["teachers"][role]["epoch"]) == (want[role]["run"], want[role]["epoch"])
    config = (work / "runs" / "kd_ci_cam" / "config.yaml").read_text()
    assert saved["teachers"]["cls"]["checkpoint"] in config and saved["teachers"]["loc"]["checkpoint"] in config
    # the student's fingerprint names its teachers by run, epoch and inputs, never by where the files are
    student = json.loads((work / "runs" / "kd_ci_cam" / "inputs.json").read_text())
    assert student["teachers"]["cls"]["run"] == want["cls"]["run"] and str(work) not in json.dumps(student)
    assert student["teachers"]["cls"]["inputs"] == json.loads((work / "runs" / want["cls"]["run"] / "inputs.json").read_text())
    ckpt = torch.load(work / "runs" / "kd_ci_cam" / "epochs" / "epoch=002.ckpt", map_location="cpu", weights_only=False)
    assert not any("teacher" in k for k in ckpt["state_dict"])
    # the table's numbers are the records' numbers, and the subsets partition the test images
    t = saved["teachers"]["loc"]
    rec = load_records(work / "runs" / t["run"] / f"test_epoch={t['epoch']:03d}.npz")["cam"]
    assert subset_metrics(rec)["gt_known"] == pytest.approx(saved["methods"]["loc_teacher"]["gt_known"])
    assert saved["benchmark"]["num_test_usual"] + saved["benchmark"]["num_test_unusual"] == 18
    assert saved["differences"]["kd_ci_cam-cls_teacher"]["cls_acc"]["n_resamples"] == 1000
    if saved["benchmark"]["num_test_usual"]:
        assert saved["differences"]["ci_cam-cam@usual"]["gt_known"]["n_images"] == saved["benchmark"]["num_test_usual"]
    # resumable: nothing is refitted or retested
    capsys.readouterr()
    again = run_experiment(exp)
    log = capsys.readouterr().out
    assert "training" not in log and "testing" not in log
    assert again["differences"] == payload["differences"]
    # a changed recipe restarts its run and, through the teachers' inputs, the student; the others are kept
    teacher_runs = {saved["teachers"][r]["run"] for r in ("cls", "loc")}
    changed = sorted(teacher_runs)[0]
    recipe = recipes / f"{RUNS[changed]}.yaml"
    recipe.write_text(recipe.read_text().replace("lr: 0.01", "lr: 0.02"))
    run_experiment(exp)
    log = capsys.readouterr().out
    assert f"[demo-kd] {changed} (seed 0): its inputs changed" in log
    assert "[demo-kd] kd_ci_cam (seed 0): its inputs changed" in log and "[demo-kd] cream: fit done, reusing" in log


def test_the_committed_readme_says_what_the_report_renders_from_its_metrics(monkeypatch):
    """results/embedded_confounded/README.md holds every line the report renders from that folder's metrics.json (the
    same lines; metrics.json keeps its keys sorted, so rows, differences and stages may stand in another order)."""
    from cream_pl.pipelines.experiment import load_experiment
    from cream_pl.pipelines.runner import command_line
    from cream_pl.reporting.demo_kd_report import render_markdown

    monkeypatch.chdir(REPO)
    folder = REPO / "results" / "embedded_confounded"
    results = json.loads((folder / "metrics.json").read_text())
    # results made before the runner kept its command line in metrics.json: the declaration's, as the runner builds it
    results["meta"].setdefault("command", command_line(load_experiment("experiments/demos/demo_kd.yaml")))
    rendered = render_markdown(results, results["summary"], results["cannot_show"]).splitlines()
    committed = (folder / "README.md").read_text().splitlines()

    def stages_sorted(line: str) -> str:  # the stage list "(data 26 s, fit cream 177 s, ...)" in any order
        head, sep, rest = line.partition(" min of measured stage time (")
        if not sep:
            return line
        stages, _, tail = rest.partition(");")
        return f"{head}{sep}{', '.join(sorted(stages.split(', ')))});{tail}"

    assert sorted(map(stages_sorted, committed)) == sorted(map(stages_sorted, rendered))
