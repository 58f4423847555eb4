"""`make bench` writes its files (quick sizes), and its table states the reference comparison."""

from __future__ import annotations

import json

import pytest

from cream_pl.pipelines.bench import REFERENCE_HOWTO, _markdown


def _result(reference: dict | None) -> dict:
    return {
        "machine": "test machine",
        "cream_cost": {"overhead_percent": 1.0, "batch_size": 32, "size": 224},
        "metrics": {"num_workers": 2, "speedup": 12.0, "speedup_serial": 8.0, "interval": 0.001},
        "pseudo_boxes": {"ratio": 0.95},
        "data_loading": {"images_per_s": 400.0},
        "startup": {"cream-pl --help": 0.08, "cream-pl evaluate --help": 0.07, "cream-pl localize --help": 0.09},
        "reference": reference,
    }


def test_markdown_without_the_reference_says_how_to_get_it() -> None:
    md = _markdown(_result(None))
    assert "`cream-pl --help` (whole process) | 0.08 s | ≤ 0.5 s | yes" in md
    assert "`cream-pl localize --help` | 0.09 s" in md
    assert REFERENCE_HOWTO in md and "git clone https://github.com/clovaai/wsolevaluation" in md
    slow_top = _result(None)
    slow_top["startup"]["cream-pl --help"] = 0.2  # the top-level help is not a sub-command
    assert "slowest sub-command help, `cream-pl localize --help` | 0.09 s" in _markdown(slow_top)


def test_markdown_with_the_reference_names_maps_commit_and_both_times() -> None:
    acc = [70.875, 20.625, 2.75]
    ref = {
        "reference_commit": "96f4b88679af41f005824661f47e6fe3628af2aa", "maps": "800 CREAM maps of X",
        "num_images": 800, "interval": 0.001, "cpu_count": 2,
        "box": {"reference_s": 40.0, "reference_max_box_acc_iou": acc,
                "default": {"cream_s": 4.0, "speedup": 10.0, "max_box_acc_iou": acc, "identical": True},
                "v2_only": {"cream_s": 3.2, "speedup": 12.5, "max_box_acc_iou": acc, "identical": True}},
        "pxap": {"reference_s": 8.0, "cream_s": 3.0, "speedup": 8 / 3, "reference": 26.0, "cream": 26.0,
                 "identical": True},
    }
    md = _markdown(_result(ref))
    assert "40.0 s → 3.20 s" in md and "| 12.5× | ≥ 10× | yes |" in md and "identical numbers" in md
    assert "96f4b88679af41f005824661f47e6fe3628af2aa" in md and "800 CREAM maps of X" in md
    assert "git clone https://github.com/clovaai/wsolevaluation" in md
    ref["box"]["v2_only"]["identical"] = False
    assert "| 12.5× | ≥ 10× | no |" in _markdown(_result(ref))
    ref["pxap"].update(floor_s=0.8, max_speedup_at_floor=10.0)
    assert "0.80 s, so even with no work per image the speed-up would be at most | 10.0× |" in _markdown(_result(ref))


def test_pxap_floor_runs_the_fixed_part_of_an_evaluation_on_real_files(tmp_path) -> None:
    import cv2
    import numpy as np

    from cream_pl.pipelines.bench_reference import pxap_floor

    np.save(tmp_path / "map.npy", np.random.default_rng(0).random((224, 224)))
    mask = np.zeros((60, 80), np.uint8)
    mask[10:30, 20:50] = 255
    cv2.imwrite(str(tmp_path / "mask.png"), mask)
    assert 0.0 < pxap_floor(tmp_path / "map.npy", tmp_path / "mask.png", repeats=1) < 60.0
    with pytest.raises(RuntimeError, match="failed"):  # a missing mask fails the process, not the bench silently
        pxap_floor(tmp_path / "map.npy", tmp_path / "missing.png", repeats=1)


def test_the_speed_bench_scores_make_demos_own_checkpoint_when_there_is_one(tmp_path, monkeypatch) -> None:
    import cream_pl.pipelines.bench_reference as bench_reference
    from cream_pl.pipelines.run_fits import MODEL_FILE

    monkeypatch.delenv("CREAM_BENCH_CKPT", raising=False)
    monkeypatch.setattr(bench_reference, "REPO_ROOT", tmp_path)
    demo = tmp_path / "outputs" / "demo" / MODEL_FILE  # where the runner's make demo writes its classifier
    demo.parent.mkdir(parents=True)
    demo.write_bytes(b"x")
    ckpt, what = bench_reference._find_checkpoint(tmp_path / "work", tmp_path / "data")
    assert ckpt == demo and "make demo's classifier" in what
    (tmp_path / "mine.ckpt").write_bytes(b"x")
    monkeypatch.setenv("CREAM_BENCH_CKPT", str(tmp_path / "mine.ckpt"))
    assert bench_reference._find_checkpoint(tmp_path / "work", tmp_path / "data")[0] == tmp_path / "mine.ckpt"


@pytest.mark.slow
def test_bench_writes_json_and_markdown(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    from cream_pl.pipelines.bench import run_bench

    res = run_bench(tmp_path, quick=True)
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["quick"] is True and "incomplete" not in data and not (tmp_path / "bench.partial.json").exists()
    assert data["metrics"]["identical"] is True
    assert data["pseudo_boxes"]["ratio"] > 0 and data["data_loading"]["images_per_s"] > 0
    assert res["cream_cost"]["forward_cream_s"] > 0
    md = (tmp_path / "bench.md").read_text()
    assert "CREAM map cost vs CAM (forward + maps, batch 8, 224 px)" in md and "per-threshold loop" in md
    assert "QUICK RUN" in md and "Produced by `make bench`" not in md
    assert data["cpu_training"]["contiguous_images_per_s"] > 0 and data["cpu_training"]["speedup"] > 0
    assert "channels_last vs default layout" in md
    cs = data["cream_search"]
    assert cs["candidates"] == 90 and cs["s_per_image_with"] > 0 and cs["s_per_image_without"] > 0
    assert "Val selection of CREAM's T / κ / λ / feature norm (90 candidates" in md
    assert data["startup"]["cream-pl --help"] > 0 and "Start-up" in md
    lc = data["loading_cub"]
    assert set(lc["per_worker"]) == {"pil", "torchvision"} and set(lc["cpu_step"]) == {"vgg16", "resnet50"}
    assert lc["per_worker"]["pil"]["image_size"] == [500, 375] and lc["cpu_step"]["vgg16"]["images_per_s"] > 0
    assert "Loading at CUB size (500×375 JPEG, q92), one worker (1 thread), `torchvision` decoder" in md
    assert "Workers a GPU needs: `ceil(GPU step img/s / one worker's img/s)`" in md


def _loading_cub() -> dict:
    per = {d: {"images_per_s": r, "decode_ms": 2.0, "transform_ms": 1.5, "image_size": [500, 375]}
           for d, r in (("pil", 280.0), ("torchvision", 320.0))}
    return {"per_worker": per, "threads": 2, "gpu": None,
            "cpu_step": {b: {"images_per_s": 0.6, "batch_size": 32, "size": 224, "steps": 1, "warmup": 0}
                         for b in ("vgg16", "resnet50")}}


def test_markdown_puts_cub_size_loading_next_to_the_cpu_step() -> None:
    res = _result(None)
    res["loading_cub"] = _loading_cub()
    md = _markdown(res)
    assert "one worker (1 thread), `pil` decoder: decode 2.0 ms + train transform 1.5 ms | 280 img/s |" in md
    assert "CPU training step of the resnet50 CUB recipe (batch 32, 224 px, fp32, 2 threads, 1 timed step, 0 warm-up)" in md
    assert "ceil(S / 320) workers" in md
    assert "one worker (1 thread)" not in _markdown(_result(None))


@pytest.mark.slow
def test_cub_loading_row_reads_gpu_steps_from_a_real_bench_gpu_file(tmp_path) -> None:
    from cream_pl.pipelines.bench_loading import bench_cub_loading

    gpu = tmp_path / "bench_gpu.json"
    gpu.write_text(json.dumps({"machine": "H200", "dry_run": False, "training": {
        "vgg16": {"fp32": {"images_per_s": 900.0}, "bf16_channels_last": {"images_per_s": 1800.0}}}}))
    out = bench_cub_loading(tmp_path / "w", num_images=2, batch_size=2, size=64, gpu_results=gpu)
    assert set(out["per_worker"]) == {"pil", "torchvision"} and out["per_worker"]["pil"]["num_images"] == 2
    assert out["cpu_step"]["resnet50"]["batch_size"] == 2 and out["cpu_step"]["vgg16"]["images_per_s"] > 0
    assert out["gpu"]["steps"] == {"vgg16 fp32": 900.0, "vgg16 bf16_channels_last": 1800.0}
    res = _result(None)
    res["loading_cub"] = out
    assert "vgg16 bf16_channels_last 1800 img/s → " in _markdown(res)


def test_gpu_steps_come_only_from_a_real_gpu_run(tmp_path) -> None:
    from cream_pl.pipelines.bench_loading import gpu_steps

    gpu = tmp_path / "bench_gpu.json"
    assert gpu_steps(None) is None and gpu_steps(gpu) is None
    gpu.write_text(json.dumps({"machine": "cpu", "dry_run": True, "training": {
        "vgg16": {"fp32": {"images_per_s": 1.0}, "bf16_channels_last": {"images_per_s": 1.0}}}}))
    assert gpu_steps(gpu) is None  # a dry run's CPU figures are no GPU figures
    gpu.write_text(json.dumps({"machine": "H200", "dry_run": False, "training": {
        "resnet50": {"fp32": {"images_per_s": 700.0}, "bf16_channels_last": {"images_per_s": 1500.0}}}}))
    assert gpu_steps(gpu) == {"machine": "H200", "file": str(gpu),
                              "steps": {"resnet50 fp32": 700.0, "resnet50 bf16_channels_last": 1500.0}}


@pytest.mark.parametrize("module, option", [("bench", None), ("bench_reference", "--ref")])
def test_a_folder_that_is_not_the_reference_checkout_is_one_line_before_any_measurement(module, option, tmp_path):
    """Before: ``make bench WSOLEVAL_REF=<not a checkout>`` measured for minutes, then ended in a traceback and wrote
    neither bench.json nor bench.md; a folder with only an evaluation.py ran a minute, then a 40-line traceback."""
    import os
    import subprocess
    import sys

    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "evaluation.py").write_text("")
    for ref, words in ((tmp_path / "absent", "not a folder"),
                       (tmp_path / "fake", "not a wsolevaluation checkout (no data_loaders.py, config.py, util.py")):
        argv = ["--out", str(tmp_path / "o")] if option is None else [option, str(ref)]
        env = {**os.environ, "WSOLEVAL_REF": str(ref)}
        proc = subprocess.run([sys.executable, "-m", f"cream_pl.pipelines.{module}", *argv], capture_output=True,
                              text=True, env=env, timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and words in lines[0] and str(ref) in lines[0], proc.stderr
        assert "[bench]" not in proc.stdout  # no measurement began


def test_quick_with_a_reference_is_refused_not_ignored(tmp_path, capsys) -> None:
    from cream_pl.pipelines.bench import main

    with pytest.raises(SystemExit) as err:
        main(["--quick", "--reference", str(tmp_path), "--out", str(tmp_path / "o")])
    text = capsys.readouterr().err.strip()
    assert err.value.code == 2 and "--reference: not with --quick" in text and not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------- control flow of run_bench


def _one_line_error(capfd, *words) -> str:
    err = capfd.readouterr().err.strip()
    lines = err.splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), err
    return lines[0]


@pytest.fixture
def measured(monkeypatch) -> list[str]:
    """Every measurement of ``run_bench`` replaced by canned figures of the sizes it is asked for (this is about the
    control flow, not the speed); returns the names of the stages that ran, in order."""
    import cream_pl.pipelines.bench as bench
    import cream_pl.pipelines.bench_loading as bench_loading
    import cream_pl.pipelines.bench_metrics as bench_metrics
    import cream_pl.pipelines.bench_reference as bench_reference

    ran: list[str] = []

    def canned(name, figures):
        def measure(*args, **kwargs):
            ran.append(name)
            return figures(*args, **kwargs) if callable(figures) else figures
        return measure

    monkeypatch.setattr(bench, "machine_text", lambda gpu=True: "test machine")
    monkeypatch.setattr(bench, "bench_cream_cost", canned("cream_cost", lambda batch_size=32, size=224, **kw: {
        "overhead_percent": 1.0, "batch_size": batch_size, "size": size}))
    monkeypatch.setattr(bench_metrics, "bench_metrics", canned("metrics", lambda num_images=16, interval=0.001, **kw: {
        "num_workers": 2, "speedup": 12.0, "speedup_serial": 8.0, "interval": interval}))
    monkeypatch.setattr(bench, "bench_pseudo_boxes", canned("pseudo_boxes", {"ratio": 0.95}))
    monkeypatch.setattr(bench, "bench_data_loading", canned("data_loading", {"images_per_s": 400.0}))
    monkeypatch.setattr(bench_loading, "bench_cub_loading", canned("loading_cub", lambda *a, **kw: _loading_cub()))
    monkeypatch.setattr(bench, "bench_cream_search", canned("cream_search", {
        "candidates": 90, "threads": 2, "s_per_image_without": 0.2, "s_per_image_with": 0.25, "added_s_per_image": 0.05}))
    monkeypatch.setattr(bench, "bench_cpu_training", canned("cpu_training", {
        "size": 160, "batch_size": 8, "threads": 2, "contiguous_images_per_s": 10.0, "channels_last_images_per_s": 12.0,
        "speedup": 1.2}))
    monkeypatch.setattr(bench, "bench_gpu_training", canned("gpu_training", None))
    monkeypatch.setattr(bench_reference, "startup_times", canned("startup", {"cream-pl --help": 0.08}))
    monkeypatch.setattr(bench_reference, "bench_against_reference", canned("reference", {}))
    return ran


def test_quick_without_out_writes_a_temporary_folder_marked_quick_not_results(tmp_path, monkeypatch, measured) -> None:
    """Before: ``--quick`` wrote into the default ``results``, replacing the committed bench.json / bench.md, and its
    bench.md read "Produced by `make bench`" with a "batch 32" row while bench.json said batch_size 8."""
    import tempfile

    from cream_pl.pipelines.bench import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    assert main(["--quick"]) == 0
    assert not (tmp_path / "results").exists()
    folder, = (tmp_path / "tmp").iterdir()  # the run's own work folder is gone, its results folder stays
    data = json.loads((folder / "bench.json").read_text())
    assert data["quick"] is True and data["cream_cost"]["batch_size"] == 8 and "incomplete" not in data
    md = (folder / "bench.md").read_text()
    assert md.startswith("# cream-pl benchmarks — QUICK RUN (test machine)") and "bench --quick`): small sizes" in md
    assert "A quick run skips the comparison with the reference tool." in md and "then `make bench`" not in md
    assert "Produced by `make bench`" not in md and "(forward + maps, batch 8, 224 px)" in md
    assert measured[0] == "cream_cost" and measured[-1] == "startup" and not (folder / "bench.partial.json").exists()


@pytest.mark.parametrize("only", [None, "cream_search"])
def test_quick_refuses_to_replace_a_full_runs_files(only, tmp_path, capfd, measured) -> None:
    from cream_pl.pipelines.bench import main

    name = "bench_cream_search.json" if only else "bench.json"
    full = tmp_path / "results" / name
    full.parent.mkdir()
    for text in ('{"machine": "m", "cream_cost": {}}', '{"quick": false}', "{not json"):  # no "quick": a full run's
        full.write_text(text)
        assert main(["--quick", "--out", str(full.parent), *(["--only", only] if only else [])]) == 2
        _one_line_error(capfd, str(full), "--quick does not replace them")
        assert full.read_text() == text and measured == []
    full.write_text('{"quick": true}')  # an earlier quick run's files may be replaced
    if only is None:
        assert main(["--quick", "--out", str(full.parent)]) == 0 and json.loads(full.read_text())["quick"] is True


def test_markdown_rows_name_the_measured_sizes() -> None:
    res = _result(None)
    res["cream_cost"].update(batch_size=8, size=160)
    res["metrics"]["interval"] = 0.01
    md = _markdown(res)
    assert "(forward + maps, batch 8, 160 px)" in md and "MaxBoxAccV2 update, interval 0.01)" in md
    assert "Produced by `make bench`" in md and "QUICK RUN" not in md  # a full run's files say so


def test_a_late_failure_keeps_the_finished_measurements(tmp_path, capsys, monkeypatch, measured) -> None:
    """Before: bench.json was written only after the last stage, so a failure there lost every measurement."""
    import cream_pl.pipelines.bench_reference as bench_reference
    from cream_pl.pipelines.bench import run_bench

    def broken(repeats=3):
        raise OSError("start-up failed")

    monkeypatch.setattr(bench_reference, "startup_times", broken)
    (tmp_path / "bench.json").write_text('{"earlier": "results"}')
    with pytest.raises(OSError, match="start-up failed"):
        run_bench(tmp_path)
    partial = json.loads((tmp_path / "bench.partial.json").read_text())
    assert partial["incomplete"] is True and partial["stages_left"] == ["start-up of the cream-pl command"]
    assert partial["quick"] is False and partial["cream_cost"]["batch_size"] == 32 and partial["cpu_training"]["speedup"]
    assert (tmp_path / "bench.json").read_text() == '{"earlier": "results"}'  # a failed run replaces nothing
    assert f"the 8 finished stage(s) are in {tmp_path / 'bench.partial.json'}" in capsys.readouterr().out
    monkeypatch.setattr(bench_reference, "startup_times", lambda repeats=3: {"cream-pl --help": 0.1})
    first = list(measured)
    run_bench(tmp_path)  # resumed: the 8 finished stages are kept, only the last one is measured (before: all again)
    assert measured[len(first):] == [] and "kept from" in capsys.readouterr().out
    final = json.loads((tmp_path / "bench.json").read_text())
    assert not (tmp_path / "bench.partial.json").exists() and "incomplete" not in final and "finished" not in final
    assert final["cream_cost"] == partial["cream_cost"] and final["startup"] == {"cream-pl --help": 0.1}
    partial.update(machine="another machine")  # an interrupted run elsewhere: every stage measured again
    (tmp_path / "bench.partial.json").write_text(json.dumps(partial))
    run_bench(tmp_path)
    assert measured[len(first):] == first and "on another machine" in capsys.readouterr().out


def test_a_damaged_bench_gpu_json_is_one_line_before_any_measurement(tmp_path, capfd, measured) -> None:
    """Before: a JSONDecodeError traceback from ``gpu_steps`` after five stages of measurements."""
    from cream_pl.core.errors import UserValueError
    from cream_pl.pipelines.bench import main
    from cream_pl.pipelines.bench_loading import gpu_steps

    gpu = tmp_path / "bench_gpu.json"
    for text in ('{"training": {"vgg16": ', '{"machine": "H200", "training": {"vgg16": {"fp32": 3}}}', "[1, 2]"):
        gpu.write_text(text)
        with pytest.raises(UserValueError, match="not a readable `make bench-gpu` result"):
            gpu_steps(gpu)
    gpu.write_text('{"training": {"vgg16": ')
    assert main(["--out", str(tmp_path)]) == 2
    _one_line_error(capfd, f"{gpu}: not a readable `make bench-gpu` result (JSONDecodeError")
    assert measured == [] and not (tmp_path / "bench.partial.json").exists()


def test_cub_loading_reads_the_gpu_file_before_writing_any_image(tmp_path) -> None:
    from cream_pl.core.errors import UserValueError
    from cream_pl.pipelines.bench_loading import bench_cub_loading

    (tmp_path / "bench_gpu.json").write_text('{"training": ')
    with pytest.raises(UserValueError, match="bench_gpu.json: not a readable"):
        bench_cub_loading(tmp_path / "w", num_images=2, gpu_results=tmp_path / "bench_gpu.json")
    assert not (tmp_path / "w").exists()


def _fake_checkout(root):
    from cream_pl.pipelines.bench_reference import REFERENCE_FILES

    root.mkdir()
    for name in REFERENCE_FILES:  # passes the checkout check; its evaluation.py cannot run
        (root / name).write_text("")
    return root


@pytest.mark.parametrize("variable", ["CREAM_BENCH_WORK", "CREAM_BENCH_CKPT"])
def test_the_reference_comparisons_environment_is_checked_before_any_measurement(variable, tmp_path, capfd, monkeypatch,
                                                                                  measured) -> None:
    """Before: a ``CREAM_BENCH_WORK`` under a file was refused after every measurement, as ``--out``; a missing
    ``CREAM_BENCH_CKPT`` spent 20 s writing images, then a RuntimeError traceback of ``export-scoremaps``."""
    from cream_pl.pipelines import bench, bench_reference

    ref = _fake_checkout(tmp_path / "ref")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    monkeypatch.setenv("WSOLEVAL_REF", str(ref))
    bad = {"CREAM_BENCH_WORK": (a_file / "sub", f"{a_file / 'sub'}: CREAM_BENCH_WORK must be a folder"),
           "CREAM_BENCH_CKPT": (tmp_path / "none.ckpt", f"CREAM_BENCH_CKPT={tmp_path / 'none.ckpt'}: no such file")}
    value, words = bad[variable]
    monkeypatch.setenv(variable, str(value))
    assert bench.main(["--out", str(tmp_path / "out")]) == 2
    assert "--out" not in _one_line_error(capfd, words)
    if variable == "CREAM_BENCH_CKPT":  # bench_reference's work folder is its --work
        assert bench_reference.main(["--work", str(tmp_path / "w")]) == 2
        _one_line_error(capfd, words)
    assert measured == []
    monkeypatch.delenv(variable)
    assert bench_reference.main(["--work", str(a_file / "sub")]) == 2
    _one_line_error(capfd, f"{a_file / 'sub'}: --work must be a folder")
    monkeypatch.setenv("CREAM_BENCH_CKPT", str(tmp_path))
    assert bench_reference.main([]) == 2
    _one_line_error(capfd, "CREAM_BENCH_CKPT=", "a folder, not a checkpoint file")
    assert measured == []


def test_a_failed_process_is_one_user_error_with_its_name_and_last_line(tmp_path) -> None:
    """Before: a RuntimeError (a traceback at the top) whose text cut the command after its first three words,
    the reference's whole driver script included."""
    import sys

    from cream_pl.core.errors import UserError, user_error_message
    from cream_pl.pipelines.bench_reference import _timed, run_reference

    with pytest.raises(UserError) as err:
        _timed([sys.executable, "-c", "import sys; print('noise', file=sys.stderr); sys.exit('last words')"])
    assert str(err.value).endswith("-c failed (exit status 1): last words") and user_error_message(err.value)
    ref = _fake_checkout(tmp_path / "ref")
    with pytest.raises(UserError) as err:
        run_reference(ref, tmp_path / "metadata", tmp_path / "maps")
    text = user_error_message(err.value)
    assert text.startswith(f"wsolevaluation's evaluation.py (box, {ref}) failed (exit status 1): ImportError: ")
    assert "configure_metadata" in text and "\n" not in text and "np.float" not in text


@pytest.mark.parametrize("measure", ["bench_cream_search", "bench_pseudo_boxes", "bench_data_loading"])
def test_a_measurement_without_a_work_folder_leaves_no_temporary_folder(measure, tmp_path, monkeypatch) -> None:
    """Before: each run left a ``/tmp/cream_bench_*`` folder (``mkdtemp``, never removed)."""
    import tempfile

    import cream_pl.data
    import cream_pl.pipelines.bench as bench

    class Generated(Exception):
        pass

    def generate(root, *args, **kwargs):
        assert str(root).startswith(str(tmp_path / "tmp"))  # it works in a temporary folder
        raise Generated

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setattr(cream_pl.data, "generate_synthetic_dataset", generate)
    with pytest.raises(Generated):
        getattr(bench, measure)(num_images=2, batch_size=2)
    assert [p.name for p in (tmp_path / "tmp").iterdir() if p.name.startswith("cream_bench")] == []
