"""`make demo` end to end in --fast mode (tiny data, 1 epoch, random init): every file is written, resume skips stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_fast_writes_results_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    from cream_pl.demo import run_demo

    out, work, data = tmp_path / "results", tmp_path / "work", tmp_path / "data"
    res = run_demo(out, work, data, fast=True)
    for name in ("metrics.json", "metrics.md", "box_acc_curves.png", "overlays.png", "ablation_T.md",
                 "ablation_lambda.md", "ablation_T.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    for method in ("cam", "cream"):
        for key in ("max_box_acc_v2", "gt_known", "top1_loc", "pxap", "cls_acc"):
            assert 0.0 <= saved[method][key] <= 100.0
    for method in ("cam_reg", "cream_reg"):
        assert {"gt_known", "top1_loc", "top5_loc"} <= set(saved[method])
    assert set(saved["pseudo_box_quality"]) == {"cream", "cam"}
    for method in ("ci_cam", "ci_cam_cream", "kd_ci_cam"):  # the KD stage's rows, same columns
        for key in ("max_box_acc_v2", "gt_known", "top1_loc", "pxap", "cls_acc"):
            assert 0.0 <= saved[method][key] <= 100.0, (method, key)
    assert {saved["kd"]["teachers"][r]["run"] for r in ("cls", "loc")} <= {"ci_cam", "ci_cam_cls_teacher"}
    assert "| KD-CI-CAM |" in (out / "metrics.md").read_text()
    student = json.loads((work / "kd" / "runs" / "kd_ci_cam" / "result.json").read_text())
    assert student["teachers"] == {r: saved["kd"]["teachers"][r]["run"] for r in ("cls", "loc")}
    assert saved["ablations"]["T"]["values"] == [0, 1, 2, 3, 4]
    assert res["cream"]["max_box_acc_v2"] == saved["cream"]["max_box_acc_v2"]
    capsys.readouterr()
    run_demo(out, work, data, fast=True)  # second run: every stage is found finished
    log = capsys.readouterr().out
    assert "classifier: loading" in log and "training" not in log.replace("regressor", "")


def _write_result(work, run, cls_acc, gt_known, teachers=None):
    from cream_pl.report import write_json_atomic

    methods = {"cam": {"max_box_acc_v2": 30.0, "gt_known": gt_known, "top1_loc": 10.0, "top5_loc": 12.0, "pxap": 20.0},
               "cream": {"max_box_acc_v2": 33.0, "gt_known": gt_known + 1, "top1_loc": 11.0, "top5_loc": 13.0, "pxap": 21.0}}
    result = {"run": run, "recipe": f"/x/experiments/{run}.yaml", "epochs": 3, "checkpoint": "model.ckpt",
              "cam_curve_interval": 0.001, "cls_acc": cls_acc, "methods": methods,
              "val": {"cls_acc": cls_acc, "methods": methods}}
    if teachers:
        result["teachers"] = teachers
    write_json_atomic(result, work / "kd" / "runs" / run / "result.json")


def test_kd_stage_picks_teachers_on_val_and_refuses_a_student_of_other_teachers(tmp_path):
    """The KD stage reads finished runs from disk; the student must have been taught by the val-chosen teachers."""
    from cream_pl.demo import _stage_kd
    from cream_pl.demo_kd import default_recipe_dir

    # the second candidate classifies better, the first localises better
    _write_result(tmp_path, "ci_cam", cls_acc=50.0, gt_known=40.0)
    _write_result(tmp_path, "ci_cam_cls_teacher", cls_acc=70.0, gt_known=20.0)
    _write_result(tmp_path, "kd_ci_cam", cls_acc=60.0, gt_known=35.0, teachers={"cls": "ci_cam", "loc": "ci_cam"})
    with pytest.raises(RuntimeError, match="cls = ci_cam_cls_teacher, loc = ci_cam; delete that folder"):
        _stage_kd(default_recipe_dir(), tmp_path / "data", tmp_path, fast=True)
    _write_result(tmp_path, "kd_ci_cam", cls_acc=60.0, gt_known=35.0,
                  teachers={"cls": "ci_cam_cls_teacher", "loc": "ci_cam"})
    kd = _stage_kd(default_recipe_dir(), tmp_path / "data", tmp_path, fast=True)
    assert kd["teachers"]["cls"] == {"run": "ci_cam_cls_teacher", "val_cls_acc": 70.0, "val_gt_known": 20.0}
    assert kd["teachers"]["loc"] == {"run": "ci_cam", "val_cls_acc": 50.0, "val_gt_known": 40.0}
    assert set(kd["runs"]) == {"ci_cam", "ci_cam_cls_teacher", "kd_ci_cam"}


def test_select_teachers_ties_and_missing_val(tmp_path):
    from cream_pl.demo_kd import select_teachers

    same = {"cls": 50.0, "methods": {"cam": {"gt_known": 20.0}}}
    runs = {"a": {"val": {"cls_acc": 50.0, "methods": {"cam": {"gt_known": 20.0}}}},
            "b": {"val": {"cls_acc": 50.0, "methods": {"cam": {"gt_known": 25.0}}}}}
    assert select_teachers(runs, ["a", "b"]) == ("a", "b")  # tie on cls goes to the earlier run
    assert select_teachers(runs, ["b", "a"]) == ("b", "b")  # one run may hold both roles
    with pytest.raises(ValueError, match="'c' has no val results"):
        select_teachers({**runs, "c": {"cls_acc": 1.0, **same}}, ["a", "c"])
    with pytest.raises(ValueError, match="at least one candidate"):
        select_teachers(runs, [])


@pytest.mark.slow  # the --fast demo on a second dataset: ~40 s
def test_demo_runs_on_any_benchmark_format_dataset(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from cream_pl.data.cub import convert_cub
    from cream_pl.demo import main

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
    assert main(["--fast", "--data", str(data), "--out", str(tmp_path / "res"), "--work", str(tmp_path / "work")]) == 0
    md = (tmp_path / "res" / "metrics.md").read_text()
    assert md.startswith(f"# Results on `{data}`") and "3 classes, from its metadata" in md
    metrics = json.loads((tmp_path / "res" / "metrics.json").read_text())
    assert metrics["protocol"]["num_test_images"] == 9 and "max_box_acc_v2" in metrics["cream"]
    with pytest.raises(SystemExit):  # a typo is refused, never filled with the synthetic benchmark
        main(["--data", str(tmp_path / "no_such_dataset")])
    assert not (tmp_path / "no_such_dataset").exists()
