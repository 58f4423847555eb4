"""``make bench-gpu``: its CPU dry run for real (every section, written files), its report, its command line;
and the loading-at-CUB-size pieces of ``make bench``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cream_pl.pipelines.bench_loading import (
    loading_rows,
    per_worker_loading,
    workers_needed,
    write_cub_sized_jpegs,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[int, dict, str]:
    from cream_pl.pipelines.bench_gpu import main

    d = tmp_path_factory.mktemp("bench_gpu")
    rc = main(["--dry-run", "--out", str(d / "out"), "--work", str(d / "work")])
    return rc, json.loads((d / "out" / "bench_gpu.json").read_text()), (d / "out" / "bench_gpu.md").read_text()


@pytest.mark.slow
def test_dry_run_measures_every_section_and_writes_json_and_markdown(dry_run) -> None:
    from cream_pl.data.jpeg import MAX_ABS_TOLERANCE

    rc, res, md = dry_run
    assert rc == 0 and res["dry_run"] is True and res["skipped"] == [] and res["errors"] == {}
    assert set(res["training"]) == {"vgg16", "resnet50"}
    for tr in res["training"].values():
        assert tr["fp32"]["precision"] == "32-true" and tr["fp32"]["channels_last"] is False
        assert tr["bf16_channels_last"]["precision"] == "bf16-mixed" and tr["bf16_channels_last"]["channels_last"] is True
        assert tr["fp32"]["images_per_s"] > 0 and tr["speedup"] > 0 and tr["fp32"]["deterministic"] == "warn"
    load = res["loading"]
    for decoder in ("pil", "torchvision"):
        w = load["per_worker"][decoder]
        assert w["image_size"] == [500, 375] and w["output_shape"] == [3, 224, 224] and w["images_per_s"] > 0
        assert load["loader"][decoder]["num_workers"] == 1 and load["loader"][decoder]["num_images"] == 4
    dd = res["device_decode"]
    assert dd["device"] == "cpu" and dd["num_images"] == 4 and dd["max_abs_diff_vs_pil"] <= MAX_ABS_TOLERANCE
    for v in res["val_epoch"].values():
        assert v["candidates"] == 90 and v["num_images"] == 2 and v["s_with"] > 0 and v["s_without"] > 0
    e = res["evaluate"]
    assert e["num_maps"] == 4 and e["whole_process"] and 0 <= e["max_box_acc_v2"] <= 100 and e["maps_per_s"] > 0
    assert len(res["loader_vs_step"]) == 4
    for r in res["loader_vs_step"]:
        for decoder, n in r["workers_needed"].items():
            assert n == workers_needed(r["step_images_per_s"], load["per_worker"][decoder]["images_per_s"])
    assert md.startswith("# cream-pl GPU profile — DRY RUN on the CPU")
    assert "vgg16 CREAM recipe training: fp32" in md and "resnet50 val epoch, 2 images" in md
    assert "`cream-pl evaluate` (whole process), 4 maps" in md and "| workers (pil) | workers (torchvision) |" in md
    assert set(res["sections_s"]) >= {"loading", "training vgg16", "training resnet50", "val epoch vgg16", "evaluate"}


def _result(speedup: float, loader: float) -> dict:
    step = {"fp32": {"images_per_s": 1000.0}, "bf16_channels_last": {"images_per_s": 1000.0 * speedup},
            "speedup": speedup}
    per = {"pil": {"images_per_s": 150.0, "decode_images_per_s": 200.0, "decode_ms": 5.0, "transform_ms": 1.7,
                   "image_size": [500, 375]}}
    res = {"machine": "m", "dry_run": False, "total_s": 200.0, "workers_available": 16, "skipped": ["evaluate"],
           "sections_s": {"loading": 3.0}, "training": {"vgg16": step}, "val_epoch": {},
           "fp32_settings": {"cudnn_allow_tf32": True, "float32_matmul_precision": "highest"},
           "plan": {"batch_size": 32, "crop_size": 224, "repeats": 3, "steps": 20, "warmup": 5, "time_limit_s": 450.0},
           "loading": {"per_worker": per, "loader": {"pil": {"images_per_s": loader, "num_workers": 8}},
                       "device_decode": None}}
    from cream_pl.pipelines.bench_gpu import _derived

    res["loader_vs_step"] = _derived(res)
    return res


def test_markdown_states_the_targets() -> None:
    from cream_pl.pipelines.bench_gpu import markdown

    md = markdown(_result(1.6, 2000.0))
    assert "vgg16 CREAM recipe training: fp32 1000 → bf16-mixed + channels_last 1600 img/s | 1.60× | ≥ 1.5× | yes |" in md
    assert "Train loader (`pil`, 8 workers) 2000 img/s vs the vgg16 bf16_channels_last step 1600 img/s | 1.25× | ≥ 1× | yes |" in md
    assert "| vgg16 bf16_channels_last | 1600 | 11 |" in md  # ceil(1600 / 150)
    assert "cudnn.allow_tf32=True" in md
    assert "vgg16 fp32 step" not in md  # the loader is set against the fastest step only
    assert "Skipped (past the 450 s limit): evaluate." in md and "DRY RUN" not in md
    md = markdown(_result(1.2, 1100.0))
    assert "| 1.20× | ≥ 1.5× | no |" in md and "step 1200 img/s | 0.92× | ≥ 1× | no |" in md


def test_sections_past_the_time_limit_are_skipped_and_listed(tmp_path: Path) -> None:
    from cream_pl.pipelines.bench_gpu import main

    assert main(["--dry-run", "--time-limit-s", "1e-9", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "w")]) == 0
    res = json.loads((tmp_path / "out" / "bench_gpu.json").read_text())
    assert res["skipped"] == ["loading", "decode_jpeg on cpu", "training vgg16", "training resnet50", "evaluate",
                              "val epoch vgg16", "val epoch resnet50"]
    assert list(res["sections_s"]) == ["write CUB-sized JPEGs"] and res["training"] == {} and res["loading"] is None
    md = (tmp_path / "out" / "bench_gpu.md").read_text()
    assert "Skipped (past the 0 s limit): loading, decode_jpeg on cpu, training vgg16" in md and "| measurement |" in md


def test_a_failing_section_is_reported_and_the_others_still_written(tmp_path: Path, monkeypatch) -> None:
    import cream_pl.pipelines.bench_gpu as bg

    def boom(plan, recipe):
        raise RuntimeError(f"CUDA error in {recipe.name}\nsecond line")

    per = {"images_per_s": 300.0, "decode_images_per_s": 600.0, "decode_ms": 1.7, "transform_ms": 1.6,
           "image_size": [500, 375]}
    monkeypatch.setattr(bg, "section_training", boom)
    monkeypatch.setattr(bg, "section_loading", lambda plan, data: {
        "per_worker": {"pil": per}, "loader": {"pil": {"images_per_s": 900.0, "num_workers": 1}}})
    monkeypatch.setattr(bg, "device_decode", lambda plan, data: None)
    monkeypatch.setattr(bg, "section_evaluate", lambda plan, work: None)
    monkeypatch.setattr(bg, "section_val_epoch", lambda plan, recipe, data, workers: None)
    assert bg.main(["--dry-run", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "w")]) == 0
    res = json.loads((tmp_path / "out" / "bench_gpu.json").read_text())
    assert res["errors"] == {"training vgg16": "RuntimeError: CUDA error in cub_vgg16_cream.yaml second line",
                             "training resnet50": "RuntimeError: CUDA error in cub_resnet50_cream.yaml second line"}
    assert res["loading"]["loader"]["pil"]["images_per_s"] == 900.0 and res["training"] == {}
    md = (tmp_path / "out" / "bench_gpu.md").read_text()
    assert "Failed sections (the others ran): training vgg16: RuntimeError: CUDA error" in md
    assert "One worker (1 thread), `pil` decoder" in md


def test_help_answers_without_torch() -> None:
    code = "import sys; from cream_pl.pipelines.bench_gpu import main; sys.exit(main(['--help']))"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0 and "--dry-run" in proc.stdout
    names = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in proc.stderr.splitlines()
             if line.startswith("import time:") and "|" in line}
    assert not names & {"torch", "torchvision", "pytorch_lightning"}


def test_without_a_gpu_the_real_run_says_how_to_dry_run(tmp_path: Path, capfd, monkeypatch) -> None:
    import torch

    from cream_pl.pipelines.bench_gpu import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc = main(["--out", str(tmp_path / "out")])
    err = capfd.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "no CUDA GPU" in err and "DRY=1" in err
    assert not (tmp_path / "out" / "bench_gpu.json").exists()


def test_a_refused_work_folder_leaves_no_temporary_folder(tmp_path: Path, capfd, monkeypatch) -> None:
    """Before: the dry run's temporary --out folder was made before --work was checked, and stayed, empty."""
    import tempfile

    from cream_pl.pipelines.bench_gpu import main

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert main(["--dry-run", "--work", str(a_file)]) == 2
    err = capfd.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{a_file}: --work must be a folder" in err
    assert [p.name for p in (tmp_path / "tmp").iterdir() if p.name.startswith("cream_bench")] == []


@pytest.mark.parametrize("argv, option", [(["--val-images", "0"], "--val-images"), (["--num-workers", "-1"], "--num-workers"),
                                          (["--time-limit-s", "nan"], "--time-limit-s")])
def test_bad_options_fail_in_one_line(argv, option, capfd) -> None:
    from cream_pl.pipelines.bench_gpu import main

    with pytest.raises(SystemExit) as exc:
        main(["--dry-run", *argv])
    err = capfd.readouterr().err.strip()
    assert exc.value.code == 2 and err.count("\n") == 0 and option in err


# ---------------------------------------------------------------------------------------------- loading at CUB size


def test_cub_sized_jpegs_are_a_valid_dataset(tmp_path: Path) -> None:
    from PIL import Image

    from cream_pl.data.metadata import check_split, read_split

    root = write_cub_sized_jpegs(tmp_path, num_train=3, num_val=2, num_classes=2, seed=1)
    for split, n in (("train", 3), ("val", 2)):
        meta = read_split(root / "metadata" / split)
        assert len(meta.samples) == n and meta.has_boxes
        assert not check_split(root / "metadata" / split, num_classes=2, image_root=root / "images")
        for s in meta.samples:
            with Image.open(root / "images" / s.image_id) as img:
                assert img.format == "JPEG" and img.size == (500, 375) and s.size == (500, 375)
            (x0, y0, x1, y1), = s.boxes
            assert 0 <= x0 < x1 <= 499 and 0 <= y0 < y1 <= 374
    size = (root / "images" / meta.samples[0].image_id).stat().st_size
    assert 15_000 < size < 150_000  # textured like a photograph, not a flat fill
    again = write_cub_sized_jpegs(tmp_path / "b", num_train=3, num_val=2, num_classes=2, seed=1)
    a = np.asarray(Image.open(root / "images" / "0" / "train_0000.jpg"))
    assert np.array_equal(a, np.asarray(Image.open(again / "images" / "0" / "train_0000.jpg")))
    with pytest.raises(ValueError, match="num_train must be an int >= 1"):
        write_cub_sized_jpegs(tmp_path / "c", num_train=0)


def test_per_worker_loading_runs_the_datamodule_train_sample(tmp_path: Path) -> None:
    root = write_cub_sized_jpegs(tmp_path, num_train=2, num_classes=2)
    for decoder in ("pil", "torchvision"):
        w = per_worker_loading(root, decoder, repeats=1)
        assert w["decoder"] == decoder and w["num_images"] == 2 and w["output_shape"] == [3, 224, 224]
        assert w["images_per_s"] > 0 and w["decode_images_per_s"] >= w["images_per_s"] * 0.5
    with pytest.raises(ValueError, match="decoder must be one of"):
        per_worker_loading(root, "cv2")


def test_workers_needed() -> None:
    assert workers_needed(1000.0, 150.0) == 7 and workers_needed(300.0, 150.0) == 2 and workers_needed(1.0, 500.0) == 1
    for bad in ((0.0, 1.0), (1.0, float("nan")), (True, 1.0), ("3", 1.0)):
        with pytest.raises(ValueError, match="must be a positive finite number"):
            workers_needed(*bad)


def test_loading_rows_with_and_without_gpu_figures() -> None:
    per = {d: {"images_per_s": r, "decode_ms": 4.0, "transform_ms": 2.0, "image_size": [500, 375]}
           for d, r in (("pil", 160.0), ("torchvision", 200.0))}
    d = {"per_worker": per, "threads": 2, "gpu": None,
         "cpu_step": {"vgg16": {"images_per_s": 3.0, "batch_size": 32, "size": 224, "steps": 1, "warmup": 0}}}
    rows, notes = loading_rows(d)
    assert rows[0][0].startswith("Loading at CUB size (500×375 JPEG, q92), one worker") and rows[0][1] == "160 img/s"
    assert "workers to feed it 1 (`pil`), 1 (`torchvision`)" in rows[2][0] and rows[2][1] == "3.0 img/s"
    assert "ceil(S / 200)" in notes[-1]
    d["gpu"] = {"machine": "H200", "file": "results/bench_gpu.json", "steps": {"vgg16 bf16_channels_last": 2100.0}}
    assert "vgg16 bf16_channels_last 2100 img/s → 11" in loading_rows(d)[1][-1]
