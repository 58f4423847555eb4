"""``make demo-kernels``: the comparison of two runs' rows, and a missing reference refused in one line."""

from __future__ import annotations

import pytest

from cream_pl.pipelines.demo_kernels import compare, main


def test_compare_states_both_values_and_the_largest_move() -> None:
    ref = {"cam": {"gt_known": 60.0, "max_box_acc_v2": 55.0}, "cream_selected": {"gt_known": 70.0}}
    other = {"cam": {"gt_known": 59.0, "max_box_acc_v2": 55.5}, "cream_selected": {"gt_known": 72.0}}
    out = compare(ref, other)
    assert out["rows"]["cam"]["gt_known"] == {"reference": 60.0, "other_kernels": 59.0, "diff": -1.0}
    assert out["max_abs_diff"] == pytest.approx(2.0)
    assert "cream_reg" not in out["rows"]  # a row only one side has is not compared


def test_a_missing_reference_is_one_line(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--reference", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing/metrics.json" in err[0]


def test_an_unknown_option_is_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--skip-regresor"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "unrecognized arguments: --skip-regresor" in err[0]
