"""`make demo-methods`'s report: every sentence from the intervals (its runs: tests/test_runner.py)."""

from __future__ import annotations


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
