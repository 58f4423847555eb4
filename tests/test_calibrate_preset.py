"""The calibration report's split statistics, on real generated files."""

from __future__ import annotations

import numpy as np

from cream_pl.data.metadata import read_split
from cream_pl.data.synth import generate_synthetic_dataset
from cream_pl.pipelines.run_stages import split_statistics


def test_split_statistics_match_the_boxes_on_disk(tmp_path) -> None:
    root = generate_synthetic_dataset(tmp_path, seed=3, num_classes=2, num_train=2, num_val=2, num_test=8,
                                      min_side=64, max_side=96, image_format="png")
    stats = split_statistics(root / "metadata" / "test")
    samples = read_split(root / "metadata" / "test").samples
    areas = [(b[2] - b[0] + 1) * (b[3] - b[1] + 1) / (s.size[0] * s.size[1]) for s in samples for b in s.boxes[:1]]
    assert stats["images"] == 8
    assert stats["instances_per_image"] == np.mean([len(s.boxes) for s in samples]) >= 1.0
    assert abs(stats["area_median"] - float(np.median(areas))) < 1e-12
    assert stats["area_p10"] <= stats["area_median"] <= stats["area_p90"]


def test_sweep_argument_is_checked_and_its_table_names_every_value(capsys) -> None:
    import pytest

    from cream_pl.pipelines.calibrate_preset import _parse_sweep
    from cream_pl.reporting.calibration_report import sweep_markdown as _sweep_markdown

    assert _parse_sweep("body_head_tint=0,0.15,0.5") == ("body_head_tint", [0, 0.15, 0.5])
    for bad in ("no_such_knob=1", "body_head_tint=", "body_head_tint=0,x"):
        with pytest.raises(SystemExit, match="--sweep"):
            _parse_sweep(bad)
    with pytest.raises(SystemExit, match=r"'x' is not a value \(a number, true/false, or a quoted string\)$"):
        _parse_sweep("body_head_tint=0,x")  # before: json's "Expecting value: line 1 column 1 (char 0)"
    row = {"value": 0.15, "cam": {"test": {"max_box_acc_v2": 57.4, "max_box_acc_iou30": 86.7, "max_box_acc_iou50": 63.5,
                                           "max_box_acc_iou70": 22.0, "gt_known": 61.5, "cls_acc": 95.2}},
           "center_baseline": {"max_box_acc_v2": 50.0},
           "targets_met": {"cam_max_box_acc_v2": True, "cam_gt_known": True, "cls_acc": True, "center_below_cam": True}}
    low = {**row, "value": 0, "targets_met": {**row["targets_met"], "cam_max_box_acc_v2": False}}
    md = _sweep_markdown("cub", "body_head_tint", [low, row], 1.0)
    assert "| 0.15 | 57.40 | 86.7 / 63.5 / 22.0 | 61.50 | 95.20 | 50.00 | all |" in md
    assert "| 0 | 57.40" in md and "cam_gt_known, cls_acc, center_below_cam |" in md
    # the command that made it, with the values swept (it runs as written)
    assert "`python -m cream_pl.pipelines.calibrate_preset --preset cub --sweep body_head_tint=0,0.15`" in md


def test_an_unknown_preset_is_one_line_before_anything_runs(tmp_path, capsys) -> None:
    import pytest

    from cream_pl.pipelines.calibrate_preset import main

    with pytest.raises(SystemExit) as err:
        main(["--sweep", "body_head_tint=0.1", "--preset", "nope", "--out", str(tmp_path / "o"),
              "--work", str(tmp_path / "w")])
    text = capsys.readouterr().err.strip()
    assert err.value.code == 2 and len(text.splitlines()) == 1
    assert "--preset: unknown preset 'nope'; known: ['cub', 'hard']" in text
    assert not (tmp_path / "o").exists() and not (tmp_path / "w").exists()


def test_a_declaration_without_the_calibration_report_is_one_line_before_anything_runs(tmp_path, capsys) -> None:
    """Before: its data was generated and its run trained, then a KeyError ('center_baseline')."""
    from cream_pl.pipelines.calibrate_preset import main

    table = tmp_path / "table.yaml"
    table.write_text("name: t\nout: o\nwork: w\nruns: [{key: run, recipe: embedded_cream}]\n")
    rc = main(["--sweep", "num_train=16", "--declaration", str(table), "--out", str(tmp_path / "o"),
               "--work", str(tmp_path / "w")])
    text = capsys.readouterr().err.strip()
    assert rc == 2 and len(text.splitlines()) == 1 and f"{table}: report: the sweep repeats" in text, text
    assert not (tmp_path / "o").exists() and not (tmp_path / "w").exists()
