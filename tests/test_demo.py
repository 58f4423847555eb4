"""`make demo` end to end in --fast mode (tiny data, 1 epoch, random init): every file is written, resume skips stages."""

from __future__ import annotations

import json

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
    assert saved["ablations"]["T"]["values"] == [0, 1, 2, 3, 4]
    assert res["cream"]["max_box_acc_v2"] == saved["cream"]["max_box_acc_v2"]
    capsys.readouterr()
    run_demo(out, work, data, fast=True)  # second run: every stage is found finished
    log = capsys.readouterr().out
    assert "classifier: loading" in log and "training" not in log.replace("regressor", "")
