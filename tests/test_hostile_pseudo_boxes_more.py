"""Hostile inputs to the pseudo-box commands, the map-extent probe and the preset sweep (second audit).

Real files, real command-line calls (``cream-pl ...`` through :func:`cream_pl.cli.main`, the pipelines
through their ``main``): a bad file or value ends in one line naming it, exit status 2, no traceback,
before any long work, and no work of the user's is lost or replaced.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import yaml
from hostile_helpers import assert_one_line as _assert_one_line
from hostile_helpers import call as _call
from hostile_helpers import isolated_cache  # noqa: F401  (an autouse fixture)

from cream_pl.cli import main as cli_main
from cream_pl.data import generate_synthetic_dataset
from cream_pl.models import WSOLClassifier
from cream_pl.models.checkpoints import CLASS_KEY

os.environ.setdefault("WANDB_MODE", "disabled")
SIZE = 32
DEEP = "[" * 200_000 + "]" * 200_000  # deeper than Python's JSON decoder recurses


@pytest.fixture(scope="module")
def data2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic_dataset(tmp_path_factory.mktemp("hostile2") / "d2", seed=0, num_classes=2, num_train=4,
                                      num_val=3, num_test=3, min_side=64, max_side=72, image_format="png",
                                      overwrite=True)


def _save(module: torch.nn.Module, path: Path) -> Path:
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": pl.__version__, CLASS_KEY: "cream_pl.models.classifier.WSOLClassifier"},
               path)
    return path


@pytest.fixture(scope="module")
def c2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init 2-class classifier (no cream_search: it has cam and cream, not cream_selected)."""
    torch.manual_seed(0)
    model = WSOLClassifier(num_classes=2, pretrained=False, eval_size=SIZE, num_media_images=0)
    return _save(model, tmp_path_factory.mktemp("ck") / "c2.ckpt")


@pytest.fixture(scope="module")
def c2_selected(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init 2-class classifier with a val-selected CREAM (as after a validation with cream_search)."""
    from cream_pl.models.cream_search import SCORE_METRICS, choice_values

    torch.manual_seed(0)
    model = WSOLClassifier(num_classes=2, pretrained=False, eval_size=SIZE, num_media_images=0,
                           cream_search={"iterations": [0, 1], "kappa": [0.01, 16]})
    with torch.no_grad():
        model.cream_selected_values.copy_(choice_values(model.cream_candidates[-1], 0.5, SCORE_METRICS[0]))
    assert model.selected_cream is not None
    return _save(model, tmp_path_factory.mktemp("ck") / "c2_selected.ckpt")


def _cli(argv: Sequence[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str]:
    return _call(cli_main, argv, capfd)


def assert_one_line(rc: int, text: str, *named: object) -> str:
    """Exit status 2, one line, no traceback, every ``named`` thing in it."""
    return _assert_one_line(rc, text, *named, exact=True)


def _no_work(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("work started before the bad input was refused")


def _pseudo_boxes(c2: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["pseudo-boxes", "--ckpt", str(c2), "--data", str(data), "--out", str(out), "--threshold", "0.3",
            "--input-size", str(SIZE), "--batch-size", "2", "--chunk-size", "2", "--num-workers", "0",
            "--accelerator", "cpu", "--devices", "1", *extra]


# ---------------------------------------------------------------------------------------------- 1: deep JSON


def test_a_deeply_nested_pseudo_box_file_is_one_line(tmp_path, capfd):
    from cream_pl.core.io import read_json_file

    deep = tmp_path / "deep.json"
    deep.write_text(DEEP)
    with pytest.raises(ValueError, match="nested too deeply") as err:
        read_json_file(deep, "pseudo-box file")
    assert str(err.value).startswith(f"{deep}: ")


def test_pseudo_boxes_out_holding_deeply_nested_json_is_one_line_and_kept(data2, c2, tmp_path, capfd):
    out = tmp_path / "deep.json"
    out.write_text(DEEP)
    rc, text = _cli(_pseudo_boxes(c2, data2, out), capfd)
    assert_one_line(rc, text, out, "not a cream-pl pseudo-box file", "--overwrite")
    assert out.read_text() == DEEP  # the user's file is not replaced


# ---------------------------------------------------------------------------------------------- 2: foreign --out


@pytest.mark.parametrize("content", ['{"info": "my notes"}', '{"info": {"note": 1}}', "[1, 2]", '"text"', "{",
                                     "", "\xff\xfe"])
def test_pseudo_boxes_refuses_an_out_that_is_not_its_file(content, data2, c2, tmp_path, capfd):
    out = tmp_path / "notes.json"
    out.write_bytes(content.encode("latin-1"))
    rc, text = _cli(_pseudo_boxes(c2, data2, out), capfd)
    assert_one_line(rc, text, out, "not a cream-pl pseudo-box file", "--overwrite")
    assert out.read_bytes() == content.encode("latin-1")
    assert not out.with_name(out.name + ".shards").exists()  # refused before any work


def test_pseudo_boxes_never_writes_over_a_users_file_named_like_its_quality_record(data2, c2, tmp_path, capfd):
    """Before: ``--out pq.json`` replaced the user's pq.quality.json without a word."""
    out = tmp_path / "pq.json"
    mine = tmp_path / "pq.quality.json"
    mine.write_text("my quality notes")
    rc, text = _cli(_pseudo_boxes(c2, data2, out), capfd)
    assert_one_line(rc, text, mine, "is not the quality record of pq.json", "--overwrite")
    assert mine.read_text() == "my quality notes" and not out.exists()


def test_fit_end_refuses_an_out_path_that_is_not_its_file_before_training(tmp_path):
    from cream_pl.core.errors import UserValueError
    from cream_pl.pseudo_boxes.fit_end import PseudoBoxesAtFitEnd

    out = tmp_path / "notes.json"
    out.write_text('{"info": "my notes"}')
    with pytest.raises(UserValueError, match="not a cream-pl pseudo-box file"):
        PseudoBoxesAtFitEnd(out, threshold=0.3).setup(None, None, "fit")  # type: ignore[arg-type]
    boxes, mine = tmp_path / "boxes.json", tmp_path / "boxes.quality.json"  # its quality record's name: the user's
    mine.write_text("my quality notes")
    with pytest.raises(UserValueError, match="boxes.quality.json: exists and is not the quality record of boxes.json"):
        PseudoBoxesAtFitEnd(boxes, threshold=0.3).setup(None, None, "fit")  # type: ignore[arg-type]
    mine.write_text('{"pseudo_boxes": "boxes.json"}')  # an earlier fit's own: replaced at the end, no refusal
    PseudoBoxesAtFitEnd(boxes, threshold=0.3).setup(None, None, "fit")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- 3: bad shards


@pytest.mark.parametrize("bad", ['[{"index": 5}]', "TRUNCATED", '[{"index": 0}, {"index": 1}]', "{}", DEEP, "[]"])
def test_a_corrupt_shard_is_recomputed_on_resume(bad, data2, c2, tmp_path, capfd, caplog):
    out = tmp_path / "boxes.json"
    argv = _pseudo_boxes(c2, data2, out, "--keep-shards")
    rc, text = _cli(argv, capfd)
    assert rc == 0, text
    finished = out.read_bytes()
    shard = out.with_name(out.name + ".shards") / "chunk_000000.json"
    good = shard.read_text()
    out.unlink()
    shard.write_text(good[: len(good) // 2] if bad == "TRUNCATED" else bad)
    other = out.with_name(out.name + ".shards") / "chunk_000001.json"
    other_mtime = other.stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level("INFO"):
        rc, text = _cli(argv, capfd)
    assert rc == 0 and "Traceback" not in text, text
    logged = [r.getMessage() for r in caplog.records if str(shard) in r.getMessage()]
    if not logged:  # Lightning's own handler (no root handler): the line went to stderr
        logged = [ln for ln in text.splitlines() if str(shard) in ln]
    assert len(logged) == 1 and "\n" not in logged[0], logged  # one log line names the shard
    assert logged[0].endswith("recomputing this chunk"), logged
    assert out.read_bytes() == finished  # the same file as the uninterrupted run
    assert shard.read_text() == good
    assert other.stat().st_mtime_ns == other_mtime  # the sound shard was not recomputed


def test_a_shard_changed_after_the_scan_is_one_line_at_merge(data2, tmp_path):
    from cream_pl.core.errors import UserValueError
    from cream_pl.pseudo_boxes.generate import PseudoBoxWriter

    writer = PseudoBoxWriter(tmp_path / "b.json", threshold=0.3, categories=["a", "b"], chunk_size=2)
    writer.num_images = 2
    writer.scan()
    writer.chunk_path(0).write_text('[{"index": 5}, {"index": 1}]')
    with pytest.raises(UserValueError, match="chunk_000000.json: record of index 0: index 5, expected 0"):
        writer.merge()
    writer.chunk_path(0).write_text('[{"index": 0')
    with pytest.raises(UserValueError, match="chunk_000000.json: .*invalid JSON"):
        writer.merge()


# ---------------------------------------------------------------------------------------------- 4: the probe


def _probe_main(argv: Sequence[str]) -> int:
    from cream_pl.pipelines.probe_map_extent import main

    return main(argv)


def _run_folder(path: Path, ckpt: Path, data: Path) -> Path:
    path.mkdir(parents=True)
    (path / "model.ckpt").write_bytes(ckpt.read_bytes())
    (path / "test.json").write_text(json.dumps({"wsol_method": "cam", "methods": {
        "cam": {"loc_threshold": 0.2}, "cream_selected": {"loc_threshold": 0.3}}}))
    (path / "config.yaml").write_text(yaml.safe_dump({"data": {"init_args": {
        "data_root": str(data), "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "eval_size": SIZE}}}))
    return path


PROBE_CASES = [
    ("test.json", "{", "invalid JSON"),
    ("test.json", "{}", "no 'methods'"),
    ("test.json", DEEP, "nested too deeply"),
    ("test.json", '{"methods": {"cam": {"loc_threshold": 0.2}}}', "methods.cream_selected.loc_threshold"),
    ("test.json", '{"methods": {"cam": {"loc_threshold": "x"}, "cream_selected": {"loc_threshold": 0.2}}}',
     "methods.cam.loc_threshold"),
    ("config.yaml", ": : [", "invalid YAML"),
    ("config.yaml", "[1, 2]", "data.init_args"),
    ("config.yaml", "data: {init_args: {data_root: /x, std: [1, 1, 1]}}", "data.init_args.mean"),
    ("model.ckpt", '{"not": "a checkpoint"}', "not a readable PyTorch checkpoint"),
]


@pytest.mark.parametrize("name, content, words", PROBE_CASES, ids=[f"{n} {c[:20]}" for n, c, _ in PROBE_CASES])
def test_probe_map_extent_bad_run_file_is_one_line(name, content, words, data2, c2_selected, tmp_path, capfd,
                                                   monkeypatch):
    import cream_pl.pipelines.probe_map_extent as probe

    good = _run_folder(tmp_path / "good", c2_selected, data2)
    bad = _run_folder(tmp_path / "bad", c2_selected, data2)
    (bad / name).write_text(content)
    monkeypatch.setattr(probe, "probe_run", _no_work)  # every run is checked before the first is probed
    out = tmp_path / "res" / "probe.json"
    rc, text = _call(_probe_main, ["--runs", str(good), str(bad), "--out", str(out)], capfd)
    assert_one_line(rc, text, bad / name, words, "python -m cream_pl.pipelines.probe_map_extent: error:")
    assert not out.exists()


def test_probe_map_extent_checkpoint_without_a_val_search_is_one_line(data2, c2, tmp_path, capfd):
    run = _run_folder(tmp_path / "run", c2, data2)
    rc, text = _call(_probe_main, ["--runs", str(run), "--out", str(tmp_path / "p.json")], capfd)
    assert_one_line(rc, text, run / "model.ckpt", "val-selected CREAM")


@pytest.mark.parametrize("where", ["under_a_file", "a_folder", "md"])
def test_probe_map_extent_checks_out_before_probing(where, data2, c2_selected, tmp_path, capfd, monkeypatch):
    import cream_pl.pipelines.probe_map_extent as probe

    run = _run_folder(tmp_path / "run", c2_selected, data2)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    out = {"under_a_file": a_file / "p.json", "a_folder": tmp_path, "md": tmp_path / "p.md"}[where]
    monkeypatch.setattr(probe, "check_run", _no_work)
    monkeypatch.setattr(probe, "probe_run", _no_work)
    rc, text = _call(_probe_main, ["--runs", str(run), "--out", str(out)], capfd)
    assert_one_line(rc, text, out, "--out")
    assert a_file.read_text() == "x"


def test_probe_map_extent_on_a_dataset_of_other_classes_is_one_line(data2, c2_selected, tmp_path, capfd):
    """Before: ``--data`` with more classes than the checkpoint ended in an IndexError traceback from the CAM."""
    other = generate_synthetic_dataset(tmp_path / "d4", seed=0, num_classes=4, num_train=4, num_val=4, num_test=4,
                                       min_side=SIZE, max_side=SIZE + 8, image_format="png")
    run = _run_folder(tmp_path / "run", c2_selected, data2)
    out = tmp_path / "p.json"
    rc, text = _call(_probe_main, ["--runs", str(run), "--data", str(other), "--out", str(out)], capfd)
    assert_one_line(rc, text, run / "model.ckpt", other / "class_names.txt")
    assert not out.exists()


def test_probe_map_extent_good_run_still_probes(data2, c2_selected, tmp_path, capfd):
    run = _run_folder(tmp_path / "run", c2_selected, data2)
    out = tmp_path / "res" / "probe.json"
    rc, text = _call(_probe_main, ["--runs", str(run), "--out", str(out)], capfd)
    assert rc == 0, text
    result = json.loads(out.read_text())["runs"][0]
    assert result["num_images"] == 3 and result["cam"]["tau"] == 0.2 and result["cream_selected"]["tau"] == 0.3
    assert out.with_suffix(".md").is_file()


# ---------------------------------------------------------------------------------------------- 5: the sweep


@pytest.mark.parametrize("sweep, words", [
    ("body_head_tint=-5", "body_head_tint must be a probability in [0, 1], got -5"),
    ("body_head_tint=0.1,-5", "--sweep body_head_tint=-5"),
    ("body_head_tint=NaN", "--sweep body_head_tint=NaN"),
    ("body_head_tint=Infinity", "--sweep body_head_tint=Infinity"),
    ('body_head_tint="abc"', '--sweep body_head_tint="abc"'),
    ("body_head_tint=[1]", "--sweep body_head_tint=[1]"),
    ("body_head_tint=true", "--sweep body_head_tint=true"),
    ("num_train=2.5", "--sweep num_train=2.5"),
    ("num_classes=1", "num_classes must be in"),
    ('confounded_eval="../x"', "confounded_eval"),
    ("body_head_tint=abc", "--sweep"),
    ("no_such_knob=1", "--sweep"),
    ("body_head_tint=0.1,0.2,0.10", "0.10 is listed twice"),  # before: both trained into one folder
])
def test_every_swept_value_is_checked_before_any_work(sweep, words, tmp_path, capfd, monkeypatch):
    import cream_pl.pipelines.calibrate_preset as calibrate
    import cream_pl.pipelines.runner as runner

    monkeypatch.setattr(runner, "run_experiment", _no_work)
    monkeypatch.setattr(calibrate, "run_sweep", _no_work)
    out, work = tmp_path / "o", tmp_path / "w"
    rc, text = _call(calibrate.main, ["--sweep", sweep, "--out", str(out), "--work", str(work)], capfd)
    assert_one_line(rc, text, words, "python -m cream_pl.pipelines.calibrate_preset: error:")
    assert not out.exists() and not work.exists()


def test_good_swept_values_pass_the_check(tmp_path, capfd, monkeypatch):
    import cream_pl.pipelines.calibrate_preset as calibrate

    seen: list[Any] = []
    monkeypatch.setattr(calibrate, "run_sweep", lambda exp, key, values, out, work: seen.append((key, values)))
    rc, text = _call(calibrate.main, ["--sweep", "body_head_tint=0,0.15,1", "--out", str(tmp_path / "o"),
                                      "--work", str(tmp_path / "w")], capfd)
    assert rc == 0, text
    assert seen == [("body_head_tint", [0, 0.15, 1])]


def test_frozen_feature_data_refuses_a_deeply_nested_pseudo_box_file(data2, tmp_path):
    from cream_pl.core.errors import user_error_message
    from cream_pl.data.datamodule import WSOLDataModule
    from cream_pl.pipelines.regressor_data import FrozenFeatureDataModule

    deep = tmp_path / "deep.json"
    deep.write_text(DEEP)
    model = WSOLClassifier(num_classes=2, pretrained=False, eval_size=SIZE, num_media_images=0)
    dm = FrozenFeatureDataModule(deep, data2, model, WSOLDataModule(str(data2), eval_size=SIZE, batch_size=2,
                                                                    num_workers=0), batch_size=2)
    with pytest.raises(Exception) as err:
        dm.setup("fit")
    message = user_error_message(err.value)
    assert message is not None and message.startswith(f"{deep}: ") and "\n" not in message, err.value
