"""The demos' shared bookkeeping: path-free fingerprints, starting a run folder over, stage times, callbacks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cream_pl.core.errors import UserValueError
from cream_pl.pipelines.run_state import (
    WORK_MARKER,
    StageTimer,
    callback_index,
    check_work_dataset,
    check_work_folder,
    data_sha1,
    path_free,
    read_state,
    records_ok,
    run_entries,
    start_over_if_stale,
)


def test_path_free_names_paths_by_their_root_and_leaves_everything_else(tmp_path: Path) -> None:
    data, work = tmp_path / "data", tmp_path / "work"
    value = {"root": str(data), "ckpt": str(work / "runs" / "a" / "epochs" / "e1.ckpt"), "lr": 0.1, "opt": "adamw",
             "list": [str(data / "metadata"), 3, None], "elsewhere": "/opt/x.yaml", "path": work / "b"}
    out = path_free(value, {"data": data, "work": work})
    assert out == {"root": "<data>", "ckpt": "<work>/runs/a/epochs/e1.ckpt", "lr": 0.1, "opt": "adamw",
                   "list": ["<data>/metadata", 3, None], "elsewhere": "/opt/x.yaml", "path": "<work>/b"}
    assert path_free(out, {"data": data, "work": work}) == out  # idempotent
    # the deepest root names a path under two roots
    assert path_free(str(work / "data" / "x"), {"work": work, "data": work / "data"}) == "<data>/x"


def test_moving_the_folders_keeps_the_fingerprint(tmp_path: Path) -> None:
    def inputs(base: Path) -> dict:
        return path_free({"data": str(base / "d"), "out": str(base / "w" / "runs" / "r")}, {"data": base / "d", "work": base / "w"})

    assert inputs(tmp_path / "one") == inputs(tmp_path / "two")


def test_a_run_folder_of_other_inputs_starts_over_and_one_of_the_same_is_kept(tmp_path: Path) -> None:
    run = tmp_path / "has"
    assert not start_over_if_stale(run, {"recipe_sha1": "a"})  # nothing there yet
    (run / "model.ckpt").write_text("x")
    assert not start_over_if_stale(run, {"recipe_sha1": "a"})
    assert (run / "model.ckpt").is_file()  # same inputs: kept
    (run / "keep.txt").write_text("k")
    assert start_over_if_stale(run, {"recipe_sha1": "b"}, log=lambda m: None, keep=("keep.txt",))
    assert sorted(p.name for p in run.iterdir()) == ["inputs.json", "keep.txt"]
    assert json.loads((run / "inputs.json").read_text()) == {"recipe_sha1": "b"}
    assert oct((run / "inputs.json").stat().st_mode & 0o777) != oct(0o600)  # a normal file, not a private temp


def test_an_older_fingerprint_layout_is_migrated_without_losing_the_work(tmp_path: Path) -> None:
    run = tmp_path / "r"
    run.mkdir()
    (run / "inputs.json").write_text(json.dumps({"data": "/old/place", "v": 1}))
    (run / "model.ckpt").write_text("x")
    legacy = lambda stored: {k: v for k, v in stored.items() if k != "data"}  # noqa: E731
    assert not start_over_if_stale(run, {"v": 1}, legacy=legacy)
    assert (run / "model.ckpt").is_file() and json.loads((run / "inputs.json").read_text()) == {"v": 1}
    (run / "inputs.json").write_text(json.dumps({"data": "/old/place", "v": 1}))
    assert start_over_if_stale(run, {"v": 2}, log=lambda m: None, legacy=legacy)  # other inputs all the same
    assert not (run / "model.ckpt").exists()


def test_stage_timer_keeps_the_time_of_the_invocation_that_did_the_work(tmp_path: Path) -> None:
    path = tmp_path / "timing.json"
    t = StageTimer(path)
    t.record("a_s", 5.0, ran=True)
    t.record("b_s", 7.0, ran=True)
    assert not t.skipped
    again = StageTimer(path)
    again.record("a_s", 0.01, ran=False)  # found done: keeps 5.0
    again.record("b_s", 3.0, ran=True)  # ran again: the new time
    assert again.saved == {"a_s": 5.0, "b_s": 3.0} and again.skipped
    assert json.loads(path.read_text()) == {"a_s": 5.0, "b_s": 3.0}
    assert set(json.loads((tmp_path / "load.json").read_text())) == {"a_s", "b_s"}


def test_stage_timer_names_the_machine_a_stage_ran_on_and_never_guesses_it(tmp_path: Path) -> None:
    import torch

    from cream_pl.core.machine import machine_line

    t = StageTimer(tmp_path / "timing.json")
    t.record("fit_s", 5.0, ran=True)
    t.record("old_s", 2.0, ran=False)  # found done (made by another stage, or an older invocation): machine unknown
    here = json.loads((tmp_path / "machine.json").read_text())
    assert here == {"fit_s": machine_line()} and set(t.saved) == {"fit_s", "old_s"}
    assert f", torch {torch.__version__}, {torch.get_num_threads()} thread" in here["fit_s"]
    assert here["fit_s"].endswith(f", {torch.backends.cpu.get_cpu_capability()} kernels")
    (tmp_path / "machine.json").write_text(json.dumps({"fit_s": "another machine"}))
    again = StageTimer(tmp_path / "timing.json")
    again.record("fit_s", 0.1, ran=False)  # found done: keeps the machine that did the work
    assert json.loads((tmp_path / "machine.json").read_text()) == {"fit_s": "another machine"}
    again.clear()
    again.record("fit_s", 4.0, ran=True)
    assert json.loads((tmp_path / "machine.json").read_text()) == {"fit_s": machine_line()}


def test_callback_index_finds_a_recipe_callback_by_class_name(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("trainer:\n  callbacks:\n    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
                      "    - class_path: cream_pl.callbacks.EpochCheckpoints\n")
    assert callback_index(recipe, "EpochCheckpoints") == 1
    assert callback_index(recipe, "PseudoBoxesAtFitEnd") is None
    recipe.write_text("model: {}\n")
    assert callback_index(recipe, "EpochCheckpoints") is None


def test_every_per_image_record_file_has_one_layout_and_the_older_flat_one_still_reads(tmp_path: Path) -> None:
    import numpy as np
    import pytest

    from cream_pl.reporting.evidence import load_records, save_records

    rec = {"gt_known": np.array([True, False]), "index": np.array([3, 1])}
    (tmp_path / "new.npz").write_bytes(save_records({"regressor": rec, "cam": {"index": np.array([1])}}))
    back = load_records(tmp_path / "new.npz")
    assert sorted(back) == ["cam", "regressor"] and back["regressor"]["index"].tolist() == [3, 1]
    np.savez(tmp_path / "flat.npz", **rec)  # the regressor's layout before the one format
    assert load_records(tmp_path / "flat.npz", flat_as="regressor")["regressor"]["gt_known"].tolist() == [True, False]
    with pytest.raises(ValueError, match="names no method"):
        load_records(tmp_path / "flat.npz")


def test_a_folder_of_user_files_is_never_cleared_and_never_taken_for_a_work_folder(tmp_path: Path) -> None:
    """Before: a run folder without inputs.json was cleared whole (``--work ~/thesis`` lost the thesis), and
    ``--restart`` removed whatever folder --work named."""
    mine = tmp_path / "mine"
    (mine / "thesis").mkdir(parents=True)
    (mine / "notes.txt").write_text("x")
    with pytest.raises(UserValueError, match=r"mine: holds files the runner did not write \(notes.txt, thesis; "):
        start_over_if_stale(mine, {"v": 1})
    with pytest.raises(UserValueError, match=f"mine: holds files that are not a cream-pl runner's work \\(no {WORK_MARKER}"):
        check_work_folder(mine)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt", "thesis"]
    fresh, old = tmp_path / "fresh", tmp_path / "old"  # a new folder, and a runner's work folder of before the mark
    (old / "seed1").mkdir(parents=True)
    (old / "seed1" / "inputs.json").write_text("{}")
    for work in (fresh, old):
        check_work_folder(work)
        assert (work / WORK_MARKER).is_file()
    (old / "seed1" / "model.ckpt").write_text("x")  # another run's folder inside a run folder is never cleared
    (old / "model.ckpt").write_text("x")
    (old / "inputs.json").write_text(json.dumps({"v": 1}))
    assert start_over_if_stale(old, {"v": 2}, log=lambda m: None)
    assert sorted(p.name for p in old.iterdir()) == [WORK_MARKER, "inputs.json", "seed1"]
    assert (old / "seed1" / "model.ckpt").is_file()


@pytest.mark.parametrize("content", ["{", "[]", "null", "\xff", '{"v": NaN}'])
def test_damaged_state_is_read_as_missing_and_its_work_is_done_again(content: str, tmp_path: Path) -> None:
    """Before: a truncated or overwritten state file ended the run in a traceback (or its numbers were reported)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.ckpt").write_text("x")
    (run / "inputs.json").write_bytes(content.encode("latin-1"))
    said: list[str] = []
    finite = lambda v: isinstance(v, dict) and np.isfinite(v["v"])  # noqa: E731
    assert read_state(run / "inputs.json", finite, said.append) is None
    assert said == [] if content == "null" else said[0].endswith("inputs.json: damaged (not what the runner wrote "
                                                                   "there); doing that work again")
    said.clear()
    assert start_over_if_stale(run, {"v": 1}, log=said.append)  # its own folder (inputs.json is there): cleared
    assert sorted(p.name for p in run.iterdir()) == ["inputs.json"]
    if content not in ("null", '{"v": NaN}'):  # said so (before: "its inputs changed", which they had not)
        assert said == [f"{run}: {run / 'inputs.json'} is damaged, so what its work was made from is unknown; "
                        "starting it over"], said
    for name in ("timing.json", "load.json", "machine.json"):
        (tmp_path / name).write_bytes(content.encode("latin-1"))
    said.clear()
    timer = StageTimer(tmp_path / "timing.json", log=said.append)
    if content == '{"v": NaN}':  # a mapping: stage times are kept as they are (only the report reads them)
        assert list(timer.saved) == ["v"] and said == []
    else:
        assert timer.saved == timer.load == timer.machine == {} and len(said) == (0 if content == "null" else 3)


def test_records_are_whole_only_with_every_map_and_field_finite(tmp_path: Path) -> None:
    from cream_pl.reporting.evidence import save_records

    good = {"cam": {"index": np.arange(3), "best_iou": np.ones((3, 4)), "gt_known": np.ones(3, bool)}}
    path = tmp_path / "r.npz"
    path.write_bytes(save_records(good))
    assert records_ok(path, ["cam"], ["index", "best_iou", "gt_known"])
    assert not records_ok(path, ["cam", "cream"], ["index"])  # a map missing
    assert not records_ok(path, ["cam"], ["index", "top1"])  # a field missing
    path.write_bytes(save_records({"cam": {**good["cam"], "best_iou": np.full((3, 4), np.nan)}}))
    assert not records_ok(path, ["cam"], ["index", "best_iou"])
    path.write_bytes(save_records({"cam": {**good["cam"], "index": np.arange(2)}}))
    assert not records_ok(path, ["cam"], ["index", "best_iou"])  # fields of other lengths
    path.write_bytes(save_records(good)[:100])  # truncated
    assert not records_ok(path, ["cam"], ["index"])


def test_the_data_stage_never_removes_a_folder_it_did_not_write(tmp_path: Path) -> None:
    """Before: a declared dataset root holding other files (no benchmark, no synth_config.json) was removed whole."""
    from cream_pl.pipelines.run_state import ensure_synthetic_dataset

    root = tmp_path / "synth"
    root.mkdir()
    (root / "photos.txt").write_text("mine")
    with pytest.raises(UserValueError, match="synth: holds files that are not a synthetic dataset the runner wrote"):
        ensure_synthetic_dataset(root, {"num_classes": 2}, 0, log=lambda m: None)
    assert (root / "photos.txt").read_text() == "mine"


def test_a_work_folder_keeps_its_dataset_and_refuses_another_one(tmp_path: Path) -> None:
    """Before: ``make demo DATA=a/tiny`` then ``DATA=b/tiny`` shared ``outputs/demo_tiny``, and the second cleared the
    first one's finished run. A moved or regenerated dataset is still the work folder's own."""
    work = tmp_path / "work"
    check_work_folder(work)
    check_work_dataset(work, tmp_path / "a" / "tiny", "sha-a")
    (work / "inputs.json").write_text("{}")
    check_work_dataset(work, tmp_path / "a" / "tiny", "sha-a2")  # regenerated in place: its runs start over
    check_work_dataset(work, tmp_path / "moved", "sha-a2")  # the same content elsewhere: kept
    with pytest.raises(UserValueError, match=r"holds the runs of another dataset \(.*moved\), not of .*b/tiny; "
                                             r"nothing was removed"):
        check_work_dataset(work, tmp_path / "b" / "tiny", "sha-b")
    assert run_entries(work) == []  # the folder's mark and dataset are no run's work
    check_work_dataset(work, tmp_path / "b" / "tiny", "sha-b", restart=True)  # asked for: its runs start over
    stored = json.loads((work / ".cream-pl-dataset.json").read_text())
    assert stored == {"experiment": None, "root": str((tmp_path / "b" / "tiny").resolve()), "data_sha1": "sha-b"}


def test_a_work_folder_refuses_another_experiments_runs_before_its_data_stage(tmp_path: Path) -> None:
    """A dataset an experiment generates inside its work folder is never regenerated by another declaration's runs
    (before: ``runner demo_kd.yaml --work outputs/calibration_cub`` replaced calibrate-cub's dataset)."""
    work = tmp_path / "work"
    check_work_folder(work)
    check_work_dataset(work, work / "data", None, experiment="calibrate_cub")  # before its data stage: no hash yet
    check_work_dataset(work, work / "data", "sha-cub", experiment="calibrate_cub")
    check_work_dataset(work, work / "data", None, experiment="calibrate_cub")  # a resume
    with pytest.raises(UserValueError, match=r"holds the runs of experiment 'calibrate_cub', not 'demo_kd'; "
                                             r"nothing was removed"):
        check_work_dataset(work, work / "data", None, experiment="demo_kd")
    assert json.loads((work / ".cream-pl-dataset.json").read_text())["data_sha1"] == "sha-cub"
    with pytest.raises(UserValueError, match=r"remove that folder yourself \(--restart starts this experiment's own"):
        check_work_dataset(work, work / "data", None, restart=True, experiment="demo_kd")  # was: the folder taken over
    assert json.loads((work / ".cream-pl-dataset.json").read_text())["experiment"] == "calibrate_cub"


def test_the_runner_refuses_another_datasets_work_folder_before_any_work(tmp_path: Path, capsys) -> None:
    from cream_pl.data import generate_synthetic_dataset
    from cream_pl.pipelines.runner import main

    demo = Path(__file__).resolve().parents[1] / "experiments" / "demos" / "demo.yaml"
    size = dict(num_classes=2, num_train=2, num_val=2, num_test=2, min_side=48, max_side=64, image_format="png")
    a = generate_synthetic_dataset(tmp_path / "a" / "tiny", seed=1, **size)
    b = generate_synthetic_dataset(tmp_path / "b" / "tiny", seed=2, **size)
    work = tmp_path / "outputs" / "demo_tiny"
    check_work_folder(work)
    check_work_dataset(work, a, data_sha1(a))  # a's finished run
    (work / "inputs.json").write_text("{}")
    (work / "model.ckpt").write_text("a's model")
    assert main([str(demo), "--data", str(b), "--work", str(work), "--out", str(tmp_path / "results" / "tiny")]) == 2
    err = capsys.readouterr().err
    assert f"{work}: holds the runs of another dataset ({a.resolve()}), not of {b}" in err and err.count("\n") == 1
    assert (work / "model.ckpt").read_text() == "a's model" and not (tmp_path / "results").exists()
