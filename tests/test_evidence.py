"""Differences with paired intervals, the center baseline's per-image record, make demo-seeds' aggregation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cream_pl.reporting.evidence import (
    compute_differences,
    compute_subset_differences,
    differences_markdown,
    load_records,
    save_records,
    selection_markdown,
    subset_records,
)


def _records(n: int = 400, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    thr = np.arange(0, 1, 0.01)
    good = np.clip(rng.normal(0.6, 0.15, (n, 1)) - np.abs(thr - 0.3)[None], 0, 1)
    bad = np.clip(rng.normal(0.4, 0.15, (n, 1)) - np.abs(thr - 0.3)[None], 0, 1)
    idx = rng.permutation(n)  # records hold images in any order; they are matched by index
    return {
        "good": {"index": idx, "best_iou": good, "gt_known": good[:, 30] >= 0.5, "iou_thresholds": np.array([30., 50., 70.])},
        "bad": {"index": idx, "best_iou": bad, "gt_known": bad[:, 30] >= 0.5, "iou_thresholds": np.array([30., 50., 70.])},
        "box_only": {"index": idx, "gt_known": bad[:, 30] >= 0.5},
    }


def test_differences_match_the_metric_and_call_a_clear_gain_a_gain():
    from cream_pl.metrics.bootstrap import max_box_acc_statistic

    recs = _records()
    d = compute_differences(recs, [("good", "bad", ("max_box_acc_v2", "gt_known")), ("bad", "good", ("gt_known",)),
                                   ("good", "good", ("gt_known",))])
    v2 = d["good-bad"]["max_box_acc_v2"]
    assert v2["a"] == pytest.approx(max_box_acc_statistic(recs["good"]["best_iou"]))
    assert v2["diff"] == pytest.approx(v2["a"] - v2["b"]) and v2["verdict"] == "gain" and v2["ci95"][0] > 0
    assert d["bad-good"]["gt_known"]["verdict"] == "loss"
    assert d["good-good"]["gt_known"] == {**d["good-good"]["gt_known"], "diff": 0.0, "ci95": [0.0, 0.0],
                                          "verdict": "no significant difference"}
    assert v2["n_images"] == 400 and v2["n_resamples"] == 1000


def test_missing_records_or_fields_are_left_out_never_filled():
    d = compute_differences(_records(), [("good", "nowhere", ("gt_known",)), ("box_only", "good", ("max_box_acc_v2",
                                                                                                  "gt_known"))])
    assert list(d) == ["box_only-good"] and list(d["box_only-good"]) == ["gt_known"]


def test_subset_differences_re_maximise_max_box_acc_on_the_subset_alone():
    from cream_pl.metrics.bootstrap import max_box_acc_statistic

    n = 6  # as many images as thresholds: the per-record threshold grid must not be mistaken for a per-image field
    thr = np.linspace(0, 1, n, endpoint=False)
    first = np.zeros((n, n))
    first[:3, 0] = 1.0  # images 0-2 are localised at the lowest threshold only
    first[3:, -1] = 1.0  # images 3-5 at the highest only: no single threshold serves all six
    rec = {"a": {"index": np.array([5, 4, 3, 2, 1, 0]), "best_iou": first[::-1].copy(), "thresholds": thr,
                 "iou_thresholds": np.array([50.0]), "top1": np.array([1, 1, 1, 0, 0, 0], bool)[::-1].copy(),
                 "loc_threshold": np.float64(0.2)},
           "b": {"index": np.arange(n), "best_iou": np.zeros((n, n)), "thresholds": thr,
                 "iou_thresholds": np.array([50.0]), "top1": np.zeros(n, bool), "loc_threshold": np.float64(0.2)}}
    assert max_box_acc_statistic(first, (50,)) == pytest.approx(50.0)  # the full set: best threshold hits 3 of 6
    sub = subset_records(rec["a"], [4, 5, 3])
    assert sub["index"].tolist() == [5, 4, 3] and sub["best_iou"].shape == (3, n) and sub["thresholds"] is thr
    assert max_box_acc_statistic(sub["best_iou"], (50,)) == pytest.approx(100.0)  # re-maximised on the subset
    d = compute_subset_differences(rec, [("a", "b", ("max_box_acc_v2", "cls_acc"))], [3, 4, 5], "late")
    assert set(d) == {"a-b@late"}
    assert d["a-b@late"]["max_box_acc_v2"]["diff"] == pytest.approx(100.0)
    assert d["a-b@late"]["max_box_acc_v2"]["n_images"] == 3
    assert d["a-b@late"]["cls_acc"]["a"] == pytest.approx(0.0)  # images 3-5 are the unclassified ones
    assert compute_subset_differences(rec, [("a", "b", ("cls_acc",))], [], "none") == {}
    with pytest.raises(ValueError, match="not one row per image"):
        subset_records({**rec["b"], "top1": np.zeros(n - 1, bool)}, [0])
    md = differences_markdown(d, {"a": "A", "b": "B", "@late": "late images"})
    assert "| A − B (late images) | MaxBoxAccV2 |" in md


def test_records_round_trip_and_markdown(tmp_path: Path):
    recs = _records(50)
    path = tmp_path / "r.npz"
    path.write_bytes(save_records(recs))
    back = load_records(path)
    assert set(back) == set(recs) and np.array_equal(back["good"]["best_iou"], recs["good"]["best_iou"])
    md = differences_markdown(compute_differences(back, [("good", "bad", ("gt_known",))]), {"good": "A", "bad": "B"})
    assert "| A − B | GT-known Loc |" in md and "50 test images (1000 resamples" in md
    sel = selection_markdown({"T": 3, "kappa": 32.0, "lambda": 0.99, "feature_norm": "l2", "val_score": 61.5,
                              "candidates": 36})
    assert "| kappa | 8 | 32 |" in sel and "| T | 2 | 3 |" in sel and "among 36 candidates" in sel


def test_center_baseline_record_reproduces_its_row():
    from cream_pl.metrics.baselines import center_baseline_best_iou, center_baseline_box_accuracy
    from cream_pl.metrics.bootstrap import max_box_acc_statistic

    boxes = [np.array([[50, 60, 170, 160]]), np.array([[0, 0, 60, 60]]), np.array([[80, 80, 140, 150], [0, 0, 9, 9]])]
    best = center_baseline_best_iou(boxes)
    assert best.shape == (3, 1000)
    row = center_baseline_box_accuracy(boxes)
    assert max_box_acc_statistic(best) == pytest.approx(row["max_box_acc_v2"], abs=1e-9)
    assert best[1].max() < 0.3 < best[0].max()  # a corner box is never hit by a centred map; a central one is


def test_demo_seeds_aggregates_rows_and_differences():
    from cream_pl.reporting.experiment_report import aggregate_seeds

    def run(cam: float, diff: float, lo: float, hi: float) -> dict:
        return {"cam": {"max_box_acc_v2": cam, "gt_known": cam - 5}, "cream_selected": {"max_box_acc_v2": cam + diff},
                "differences": {"cream_selected-cam": {"max_box_acc_v2": {"diff": diff, "ci95": [lo, hi]}}}}

    agg = aggregate_seeds({0: run(60.0, 4.0, 1.0, 7.0), 1: run(62.0, 2.0, -1.0, 5.0), 2: run(64.0, 6.0, 3.0, 9.0)},
                          ["cam", "cream_selected", "cream_reg"])
    cam = agg["methods"]["cam"]["max_box_acc_v2"]
    assert cam["mean"] == pytest.approx(62.0) and cam["sd"] == pytest.approx(2.0) and cam["values"] == [60.0, 62.0, 64.0]
    d = agg["differences"]["cream_selected-cam"]["max_box_acc_v2"]
    assert d["mean"] == pytest.approx(4.0) and d["seeds_interval_above_0"] == 2 and d["seeds_interval_below_0"] == 0
    assert "pxap" not in agg["methods"]["cam"] and "cream_reg" not in agg["methods"]  # never filled in
    json.dumps(agg)


def test_readme_block_is_replaced_between_its_markers_only(tmp_path: Path):
    from cream_pl.reporting.demo_report import main, splice_readme

    readme = "intro\n<!-- RESULTS:BEGIN -->\nold table\n<!-- RESULTS:END -->\n![c](results/embedded/c.png) tail\n"
    new = splice_readme(readme, "# Title\n\n| a |\n![o](overlays.png)\n", "Wall time: 1 min.")
    assert new.startswith("intro\n<!-- RESULTS:BEGIN -->\n| a |\n![o](results/embedded/overlays.png)\n\nWall time")
    assert new.endswith("<!-- RESULTS:END -->\n![c](results/embedded/c.png) tail\n") and "old table" not in new
    with pytest.raises(ValueError, match="exactly one"):
        splice_readme("no markers", "x")
    res = tmp_path / "res"
    res.mkdir()
    (res / "metrics.md").write_text("# T\n\nrows\n")
    (res / "metrics.json").write_text(json.dumps({"timing": {"data_s": 60.0, "classifier_s": 120.0, "total_s": 180.0}}))
    (tmp_path / "README.md").write_text(readme)
    assert main(["--readme", str(tmp_path / "README.md"), "--results", str(res)]) == 0
    text = (tmp_path / "README.md").read_text()
    assert "rows\n\nWall time of that `make demo` run: 3.0 min of stages" in text and "classifier 2.0 min" in text



def test_readme_results_refuses_bad_input_in_one_line(tmp_path: Path, capsys):
    """``make readme-results``: a missing or broken results folder or README is one line naming it, and the README is
    left as it was."""
    from cream_pl.reporting.demo_report import main

    res, readme = tmp_path / "res", tmp_path / "README.md"
    res.mkdir()
    readme.write_text("intro without the block\n")
    (res / "metrics.md").write_text("# T\n\nrows\n")
    mine = ["--results", str(res), "--readme", str(readme)]
    for payload, argv, want in ((None, ["--results", str(tmp_path / "none")], "none/metrics.json: not found (make demo"),
                                (None, mine, "res/metrics.json: not found"),
                                ("{not json", mine, "metrics.json: not a JSON results file"),
                                ("[1, 2]", mine, "metrics.json: not a JSON results file"),
                                ("{}", ["--results", str(res), "--readme", str(tmp_path / "NO.md")], "NO.md: not found"),
                                ("{}", mine, "README.md: the README needs exactly one <!-- RESULTS:BEGIN -->")):
        if payload is not None:
            (res / "metrics.json").write_text(payload)
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1 and want in err[0], err
    assert readme.read_text() == "intro without the block\n"
