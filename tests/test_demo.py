"""`make demo` end to end in --fast mode (tiny data, 1 epoch, random init): every file is written, resume skips stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_fast_writes_results_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    from cream_pl.pipelines.demo import DIFFERENCES, run_demo

    out, work, data = tmp_path / "results", tmp_path / "work", tmp_path / "data"
    res = run_demo(out, work, data, fast=True)
    for name in ("metrics.json", "metrics.md", "box_acc_curves.png", "overlays.png", "ablation_T.md",
                 "ablation_lambda.md", "ablation_T.png", "ablation_lambda.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    for method in ("cam", "cream", "cream_selected"):
        for key in ("max_box_acc_v2", "gt_known", "top1_loc", "pxap", "cls_acc"):
            assert 0.0 <= saved[method][key] <= 100.0, (method, key)
    assert {"gt_known", "top1_loc", "top5_loc", "train_pseudo_iou_per_epoch", "max_box_acc_v2", "train_gt_known",
            "train_mean_iou_to_pseudo_boxes", "train_pseudo_box_gt_known"} <= set(saved["cream_reg"])
    assert saved["cream_reg"]["pxap"] is None  # a box, no map
    chosen = saved["cream_reg_selection"]["chosen"]  # the design chosen on val, each candidate's val and test shown
    assert saved["cream_reg"]["candidate"] == chosen and saved["cream_reg_psol"]["candidate"] == "psol_frozen"
    assert set(saved["cream_reg_candidates"]) == {"psol_frozen", "spatial_mlp_frozen", "objectness_frozen",
                                                  "objectness_finetune"}  # both feature sources
    assert saved["cream_reg_candidates"]["objectness_finetune"]["features"] == "finetune"
    assert all({"val_gt_known", "gt_known"} <= set(c) for c in saved["cream_reg_candidates"].values())
    assert saved["cream_reg_candidates"][chosen]["val_gt_known"] == max(
        c["val_gt_known"] for c in saved["cream_reg_candidates"].values())
    assert 0.0 <= saved["center_baseline"]["max_box_acc_v2"] <= 100.0
    assert saved["pseudo_box_quality"]["source"] == "cream_selected"
    # the pseudo boxes came from the fit itself (PseudoBoxesAtFitEnd in the recipe), at the selected CREAM's val τ*
    boxes = json.loads((work / "pseudo_boxes_cream_selected.json").read_text())
    assert boxes["info"]["source"] == "cream_selected"
    assert set(saved["selected"]["cream"]) >= {"T", "kappa", "lambda", "feature_norm", "val_score"}
    assert saved["benchmark"] == {**saved["benchmark"], "preset": "cub", "num_test": 32}
    for a, b, metrics in DIFFERENCES:  # every stated difference has its interval
        for m in metrics:
            d = saved["differences"][f"{a}-{b}"][m]
            assert d["ci95"][0] <= d["diff"] <= d["ci95"][1] and d["n_resamples"] >= 1000, (a, b, m)
            assert d["diff"] == pytest.approx(d["a"] - d["b"])
    # the interval's point estimate is the table's own number
    assert saved["differences"]["cream_selected-cam"]["gt_known"]["a"] == pytest.approx(saved["cream_selected"]["gt_known"])
    assert saved["differences"]["cam-center_baseline"]["max_box_acc_v2"]["b"] == pytest.approx(
        saved["center_baseline"]["max_box_acc_v2"])
    assert saved["differences"]["cream_reg-cream_selected"]["gt_known"]["a"] == pytest.approx(saved["cream_reg"]["gt_known"])
    md = (out / "metrics.md").read_text()
    assert "| CREAM (val-selected) |" in md and "| center baseline |" in md and "paired bootstrap 95 % CI" in md
    assert saved["ablations"]["T"]["values"] == [0, 1, 2, 3, 4]
    assert res["cream"]["max_box_acc_v2"] == saved["cream"]["max_box_acc_v2"]
    capsys.readouterr()
    stage_files = [work / n for n in ("classifier.ckpt", "classifier_test.json", "per_image_test.npz",
                                      "diagnostics.json", "pseudo_boxes_cream_selected.json",
                                      "regressor/candidates.json", "regressor/objectness_frozen/per_image_test.npz")]
    mtimes = [p.stat().st_mtime_ns for p in stage_files]
    run_demo(out, work, data, fast=True)  # second run: every stage is found finished
    log = capsys.readouterr().out
    assert "classifier: loading" in log and "training" not in log
    assert [p.stat().st_mtime_ns for p in stage_files] == mtimes  # nothing was recomputed
    assert json.loads((out / "metrics.json").read_text())["differences"] == saved["differences"]


@pytest.mark.slow  # the --fast demo on a second dataset: ~40 s
def test_demo_runs_on_any_benchmark_format_dataset(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from cream_pl.data.cub import convert_cub
    from cream_pl.pipelines.demo import main

    cub = tmp_path / "CUB_200_2011"  # a tiny raw CUB tree: 3 classes x (6 train + 3 test), no masks
    rows = [(f"{c:03d}.bird_{c}/img_{c}_{k}.jpg", c, int(k < 6)) for c in (1, 2, 3) for k in range(9)]
    rng = np.random.default_rng(0)
    for rel, _, _ in rows:
        (cub / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(cub / "images" / rel)
    for name, col in (("images.txt", 0), ("image_class_labels.txt", 1), ("train_test_split.txt", 2)):
        (cub / name).write_text("".join(f"{i} {r[col]}\n" for i, r in enumerate(rows, 1)))
    (cub / "bounding_boxes.txt").write_text("".join(f"{i} 10.0 12.0 60.0 50.0\n" for i in range(1, len(rows) + 1)))
    (cub / "classes.txt").write_text("".join(f"{c} {c:03d}.bird_{c}\n" for c in (1, 2, 3)))
    data = convert_cub(cub, tmp_path / "data", val_per_class=2).out
    assert main(["--fast", "--data", str(data), "--out", str(tmp_path / "res"), "--work", str(tmp_path / "work")]) == 0
    md = (tmp_path / "res" / "metrics.md").read_text()
    assert md.startswith(f"# Results on `{data}`") and "3 classes, from its metadata" in md
    metrics = json.loads((tmp_path / "res" / "metrics.json").read_text())
    assert metrics["protocol"]["num_test_images"] == 9 and "max_box_acc_v2" in metrics["cream"]
    with pytest.raises(SystemExit):  # a typo is refused, never filled with the synthetic benchmark
        main(["--data", str(tmp_path / "no_such_dataset")])
    assert not (tmp_path / "no_such_dataset").exists()


def test_a_work_folder_of_other_inputs_starts_over_and_one_of_the_same_inputs_is_kept(tmp_path: Path) -> None:
    from cream_pl.data import generate_synthetic_dataset
    from cream_pl.pipelines.demo import _check_work, _inputs

    data = generate_synthetic_dataset(tmp_path / "data", seed=1, num_classes=2, num_train=2, num_val=2, num_test=2,
                                      min_side=48, max_side=64, image_format="png")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: {}\n")
    work = tmp_path / "work"
    base = _inputs(data, recipe, train_seed=0, fast=False)
    assert _inputs(data, recipe, train_seed=1, fast=False) != base  # a seed ...
    recipe.write_text("model: {lr: 0.1}\n")
    assert _inputs(data, recipe, train_seed=0, fast=False) != base  # ... a recipe ...
    recipe.write_text("model: {}\n")
    generate_synthetic_dataset(data, seed=2, num_classes=2, num_train=2, num_val=2, num_test=2, min_side=48,
                               max_side=64, image_format="png", overwrite=True)
    other_data = _inputs(data, recipe, train_seed=0, fast=False)
    assert other_data != base  # ... or the data: each is other inputs

    def fill() -> None:
        (work / "classifier").mkdir(parents=True, exist_ok=True)
        for name in ("classifier.ckpt", "classifier_test.json", "per_image_test.npz", "pseudo_boxes_cream_selected.json",
                     "notes.txt"):
            (work / name).write_text("x")

    fill()
    _check_work(work, base)  # no inputs.json: whatever is there is of unknown inputs
    assert sorted(p.name for p in work.iterdir()) == ["inputs.json", "notes.txt"]
    fill()
    _check_work(work, base)  # the same inputs: everything is kept
    assert (work / "classifier.ckpt").is_file() and (work / "pseudo_boxes_cream_selected.json").is_file()
    _check_work(work, other_data)
    assert sorted(p.name for p in work.iterdir()) == ["inputs.json", "notes.txt"]
    assert json.loads((work / "inputs.json").read_text()) == other_data


def test_demo_refuses_a_dataset_without_test_boxes_in_one_line(tmp_path: Path, capsys) -> None:
    from cream_pl.data import generate_synthetic_dataset
    from cream_pl.pipelines.demo import main

    root = generate_synthetic_dataset(tmp_path / "d", seed=1, num_classes=2, num_train=2, num_val=2, num_test=2,
                                      min_side=48, max_side=64, image_format="png")
    test = root / "metadata" / "test"  # mask-only test split, as OpenImages
    (test / "localization.txt").write_text((test / "localization_masks.txt").read_text())
    (test / "localization_masks.txt").unlink()
    with pytest.raises(SystemExit):
        main(["--data", str(root), "--out", str(tmp_path / "res"), "--work", str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert f"{test}: no boxes in the test split" in err and err.count("\n") == 1
    assert not (tmp_path / "work").exists() and not (tmp_path / "res").exists()
