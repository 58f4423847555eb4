"""`make bench` writes its files (quick sizes), and its table states the reference comparison."""

from __future__ import annotations

import json

import pytest

from cream_pl.pipelines.bench import REFERENCE_HOWTO, _markdown


def _result(reference: dict | None) -> dict:
    return {
        "machine": "test machine",
        "cream_cost": {"overhead_percent": 1.0},
        "metrics": {"num_workers": 2, "speedup": 12.0, "speedup_serial": 8.0},
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
    monkeypatch.setenv("CREAM_BENCH_CKPT", str(tmp_path / "mine.ckpt"))
    assert bench_reference._find_checkpoint(tmp_path / "work", tmp_path / "data")[0] == tmp_path / "mine.ckpt"


@pytest.mark.slow
def test_bench_writes_json_and_markdown(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    from cream_pl.pipelines.bench import run_bench

    res = run_bench(tmp_path, quick=True)
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["metrics"]["identical"] is True
    assert data["pseudo_boxes"]["ratio"] > 0 and data["data_loading"]["images_per_s"] > 0
    assert res["cream_cost"]["forward_cream_s"] > 0
    md = (tmp_path / "bench.md").read_text()
    assert "CREAM map cost vs CAM" in md and "per-threshold loop" in md
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
