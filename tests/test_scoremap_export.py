"""``cream-pl export-scoremaps``: a real tiny checkpoint's maps in wsolevaluation's format, scored back."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl

from cream_pl.cli import main
from cream_pl.cli.evaluate import read_split_metadata
from cream_pl.data import WSOLDataModule, generate_synthetic_dataset
from cream_pl.metrics.functional import box_accuracy_compute, box_accuracy_update, cam_thresholds
from cream_pl.models import WSOLClassifier
from cream_pl.pipelines.export_scoremaps import MANIFEST, MARKER, scoremap_path

os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data root, classifier checkpoint) trained 1 epoch on a tiny synthetic data set."""
    root = generate_synthetic_dataset(tmp_path_factory.mktemp("synth"), seed=1, num_classes=3, num_train=12,
                                      num_val=6, num_test=6, min_side=72, max_side=96, image_format="png",
                                      overwrite=True)
    pl.seed_everything(0)
    dm = WSOLDataModule(str(root), batch_size=6, resize_size=72, crop_size=64, eval_size=64)
    model = WSOLClassifier(num_classes=3, pretrained=False, cam_curve_interval=0.05, eval_size=64, lr=0.01)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, default_root_dir=str(tmp_path_factory.mktemp("run")))
    trainer.fit(model, dm)
    ckpt = tmp_path_factory.mktemp("ckpt") / "classifier.ckpt"
    trainer.save_checkpoint(ckpt)
    return root, ckpt


@pytest.fixture(scope="module")
def exported(tiny: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root, ckpt = tiny
    out = tmp_path_factory.mktemp("export") / "maps"
    argv = ["export-scoremaps", "--ckpt", str(ckpt), "--data", str(root), "--split", "test", "--methods",
            "cam,cream", "--out", str(out), "--batch-size", "4"]
    assert main(argv) == 0
    return out


def test_maps_are_written_in_the_reference_format(tiny: tuple[Path, Path], exported: Path) -> None:
    root, ckpt = tiny
    ids = (root / "metadata" / "test" / "image_ids.txt").read_text().split("\n")
    assert all("/" in i for i in ids)  # image ids with folders -> sub-folders under <out>/<method>/
    for method in ("cam", "cream"):
        for image_id in ids:
            path = scoremap_path(exported, method, image_id)
            assert path == exported / method / f"{image_id}.npy" and path.is_file()
            m = np.load(path)
            assert m.shape == (224, 224) and m.dtype == np.float64  # what the reference's inference saves
            assert m.min() >= 0.0 and m.max() <= 1.0 and (m.max() == 1.0 or not m.any())
    assert not list(exported.rglob("*.tmp")) and not list(exported.rglob(MARKER))  # a finished export: nothing left
    manifest = json.loads((exported / MANIFEST).read_text())
    assert manifest["methods"] == ["cam", "cream"] and manifest["num_images"] == len(ids)
    assert manifest["checkpoint"] == str(ckpt) and manifest["split"] == "test"


def _oracle(meta_dir: Path, maps: Path, multi_contour: bool) -> dict[str, float]:
    """MaxBoxAcc of the exported maps by the per-threshold findContours loop (the reference's way)."""
    from cream_pl.cli.evaluate import _resized_boxes

    meta = read_split_metadata(meta_dir)
    scoremaps = [np.load(maps / f"{i}.npy") for i in meta.image_ids]
    gt = [_resized_boxes(meta.boxes[i], meta.image_sizes[i]) for i in meta.image_ids]
    thr = cam_thresholds(0.01)
    counts = box_accuracy_update(scoremaps, gt, thr, (30, 50, 70), multi_contour, num_workers=1, fast=False)
    return {str(k): v for k, v in box_accuracy_compute(counts, len(gt), (30, 50, 70), thr)["max_box_acc_iou"].items()}


@pytest.mark.parametrize("method", ["cam", "cream"])
def test_export_then_evaluate_round_trip(tiny: tuple[Path, Path], exported: Path, tmp_path: Path,
                                         method: str) -> None:
    root, _ = tiny
    meta = root / "metadata" / "test"
    out = tmp_path / "scores.json"
    argv = ["evaluate", "--metadata", str(meta), "--scoremaps", str(exported / method), "--out", str(out),
            "--mask-root", str(root / "masks")]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["num_images"] == 6 and 0.0 <= result["pxap"] <= 100.0
    expected = _oracle(meta, exported / method, multi_contour=True)
    assert result["max_box_acc_iou"] == pytest.approx(expected, abs=1e-6)
    assert result["max_box_acc"] == pytest.approx(_oracle(meta, exported / method, False)["50"], abs=1e-6)


@pytest.mark.skipif(not os.environ.get("WSOLEVAL_REF"), reason="set WSOLEVAL_REF to a wsolevaluation checkout")
def test_exported_maps_are_scored_alike_by_the_reference(tiny: tuple[Path, Path], exported: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = tiny
    monkeypatch.setattr(np, "float", float, raising=False)  # the reference predates numpy 1.24
    monkeypatch.syspath_prepend(os.environ["WSOLEVAL_REF"])
    for name in ("evaluation", "data_loaders", "util", "config"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import evaluation  # type: ignore[import-not-found]
    from data_loaders import configure_metadata  # type: ignore[import-not-found]

    meta_dir = root / "metadata" / "test"
    meta = configure_metadata(str(meta_dir))
    ev = evaluation.BoxEvaluator(metadata=meta, dataset_name="CUB", split="test",
                                 cam_threshold_list=list(np.arange(0, 1, 0.01)), iou_threshold_list=[30, 50, 70],
                                 mask_root=None, multi_contour_eval=True)
    for image_id in evaluation.get_image_ids(meta):
        ev.accumulate(np.load(exported / "cream" / f"{image_id}.npy"), image_id)
    out = tmp_path / "s.json"
    assert main(["evaluate", "--metadata", str(meta_dir), "--scoremaps", str(exported / "cream"), "--out",
                 str(out)]) == 0
    ours = json.loads(out.read_text())["max_box_acc_iou"]
    assert [ours[k] for k in ("30", "50", "70")] == pytest.approx(ev.compute(), abs=1e-6)


def test_bad_out_and_methods_are_refused_before_work(tiny: tuple[Path, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    root, ckpt = tiny
    a_file = tmp_path / "maps.npy"
    a_file.write_text("not a folder")
    base = ["export-scoremaps", "--ckpt", str(ckpt), "--data", str(root)]
    for out, words in ((a_file, "is an existing file"), (a_file / "sub", f"{a_file} is a file")):
        assert main([*base, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err
    assert a_file.read_text() == "not a folder"
    assert main([*base, "--out", str(tmp_path / "m"), "--methods", "cam,nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err and str(ckpt) in err
    assert main([*base[:2], str(tmp_path / "missing.ckpt"), *base[3:], "--out", str(tmp_path / "m")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_a_second_export_into_the_same_folder_says_which_checkpoint_wrote_each_method(
        tiny: tuple[Path, Path], tmp_path: Path) -> None:
    """Exporting cam from another checkpoint into a folder that holds cam and cream maps: cream's maps stay, and the
    manifest says they are the first checkpoint's (it named only the second before)."""
    import shutil

    root, ckpt = tiny
    other = tmp_path / "other.ckpt"
    shutil.copy(ckpt, other)
    out = tmp_path / "maps"
    base = ["export-scoremaps", "--data", str(root), "--out", str(out), "--batch-size", "6"]
    assert main([*base, "--ckpt", str(ckpt), "--methods", "cam,cream"]) == 0
    assert main([*base, "--ckpt", str(other), "--methods", "cam"]) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["checkpoint"] == str(other) and manifest["methods"] == ["cam"]
    assert manifest["exported"]["cam"]["checkpoint"] == str(other)
    assert manifest["exported"]["cream"]["checkpoint"] == str(ckpt) and (out / "cream").is_dir()
    # another checkpoint's cam of another split would sit beside other's test maps, the manifest naming one of them
    rc = main([*base, "--ckpt", str(ckpt), "--methods", "cam", "--split", "val"])
    assert rc == 2 and json.loads((out / MANIFEST).read_text()) == manifest
    assert len(list((out / "cam").rglob("*.npy"))) == manifest["num_images"]
    # the same checkpoint's val maps would sit beside its test maps too, the manifest naming only val
    assert main([*base, "--ckpt", str(other), "--methods", "cam", "--split", "val"]) == 2
    assert json.loads((out / MANIFEST).read_text()) == manifest


def test_an_export_cut_short_is_refused_by_evaluate_until_it_finishes(tiny: tuple[Path, Path], tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Before: an export stopped half-way (Ctrl-C, SIGTERM) left a method folder of two checkpoints' maps under a
    manifest naming the first, and evaluate scored them together without a word."""
    import shutil

    from cream_pl.core.interrupts import Terminated
    from cream_pl.pipelines import export_scoremaps as module

    root, ckpt = tiny
    other = tmp_path / "other.ckpt"
    shutil.copy(ckpt, other)
    out = tmp_path / "maps"
    base = ["export-scoremaps", "--data", str(root), "--out", str(out), "--batch-size", "2", "--methods", "cam"]
    assert main([*base, "--ckpt", str(ckpt)]) == 0
    real, written = module.save_npy_atomic, []

    def stop_after_two(array, path):  # the second checkpoint's export stops after two of six maps
        if len(written) == 2:
            raise Terminated()
        written.append(path)
        real(array, path)

    monkeypatch.setattr(module, "save_npy_atomic", stop_after_two)
    assert main([*base, "--ckpt", str(other)]) == 143
    monkeypatch.setattr(module, "save_npy_atomic", real)
    evaluate = ["evaluate", "--metadata", str(root / "metadata" / "test"), "--scoremaps", str(out / "cam"),
                "--out", str(tmp_path / "s.json")]
    capsys.readouterr()
    assert main(evaluate) == 2 and not (tmp_path / "s.json").exists()
    err = capsys.readouterr().err.strip()
    assert err.endswith("never finished (the maps may mix two checkpoints); run it again before scoring the folder")
    assert f"checkpoint {other}" in err and len(err.splitlines()) == 1
    assert main([*base, "--ckpt", str(other)]) == 0 and main(evaluate) == 0  # the rerun finishes it


def test_the_same_export_again_goes_on_where_it_was_cut(tiny: tuple[Path, Path], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Before: a rerun after Ctrl-C or SIGTERM computed every map again (ILSVRC: 50,000 images per method)."""
    from cream_pl.core.interrupts import Terminated
    from cream_pl.pipelines import export_scoremaps as module

    root, ckpt = tiny
    base = ["export-scoremaps", "--ckpt", str(ckpt), "--data", str(root), "--batch-size", "2", "--methods", "cam,cream"]
    assert main([*base, "--out", str(tmp_path / "uncut")]) == 0
    real, written = module.save_npy_atomic, []

    def stop_in_the_second_batch(array, path):
        if len(written) == 5:  # both methods' maps of the first batch (4), then one of the second
            raise Terminated()
        written.append(path)
        real(array, path)

    out = tmp_path / "maps"
    monkeypatch.setattr(module, "save_npy_atomic", stop_in_the_second_batch)
    assert main([*base, "--out", str(out)]) == 143
    monkeypatch.setattr(module, "save_npy_atomic", real)
    capsys.readouterr()
    assert main([*base, "--out", str(out)]) == 0
    assert f"{out}: resuming the export cut short after 2 of 6 images" in capsys.readouterr().err
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["num_images"] == 6 and not any(e.get("incomplete") for e in manifest["exported"].values())
    ids = (root / "metadata" / "test" / "image_ids.txt").read_text().split("\n")
    for method in ("cam", "cream"):
        for image_id in ids:
            assert np.array_equal(np.load(scoremap_path(out, method, image_id)),
                                  np.load(scoremap_path(tmp_path / "uncut", method, image_id)))
    capsys.readouterr()
    assert main([*base, "--out", str(out)]) == 0 and "resuming" not in capsys.readouterr().err  # finished: anew
    written.clear()
    monkeypatch.setattr(module, "save_npy_atomic", stop_in_the_second_batch)
    assert main([*base, "--out", str(out)]) == 143
    monkeypatch.setattr(module, "save_npy_atomic", real)
    import shutil

    elsewhere = shutil.copytree(root / "images", tmp_path / "elsewhere")
    capsys.readouterr()
    assert main([*base, "--out", str(out), "--image-root", str(elsewhere)]) == 0  # other images: never resumed
    assert "resuming" not in capsys.readouterr().err


def test_image_root_reads_images_kept_elsewhere_to_the_same_maps(tiny: tuple[Path, Path], exported: Path,
                                                                  tmp_path: Path) -> None:
    """A dataset whose images are not under <data>/images (wsolevaluation's layouts): --image-root."""
    import shutil

    root, ckpt = tiny
    data = tmp_path / "data"
    shutil.copytree(root / "metadata", data / "metadata")
    shutil.copy(root / "class_names.txt", data / "class_names.txt")
    images = Path(shutil.copytree(root / "images", tmp_path / "kept_elsewhere"))
    shutil.copytree(root / "masks", images, dirs_exist_ok=True)  # OpenImages: masks beside the images
    out = tmp_path / "maps"
    argv = ["export-scoremaps", "--ckpt", str(ckpt), "--data", str(data), "--split", "test", "--methods", "cam",
            "--out", str(out), "--batch-size", "4"]
    assert main(argv) == 2  # no <data>/images
    assert main([*argv, "--image-root", str(images), "--mask-root", str(images)]) == 0
    ids = (root / "metadata" / "test" / "image_ids.txt").read_text().split("\n")
    for image_id in ids:
        assert np.array_equal(np.load(scoremap_path(out, "cam", image_id)), np.load(scoremap_path(exported, "cam",
                                                                                                   image_id)))


def _stop_after(module, monkeypatch: pytest.MonkeyPatch, maps: int) -> None:
    """Make the export stop (as on SIGTERM) when it is about to write its ``maps + 1``-th map."""
    from cream_pl.core.interrupts import Terminated

    real, written = module.save_npy_atomic, []

    def stop(array, path):
        if len(written) == maps:
            raise Terminated()
        written.append(path)
        real(array, path)

    monkeypatch.setattr(module, "save_npy_atomic", stop)


def test_an_export_of_other_images_into_a_method_folder_is_refused_whatever_the_checkpoint(
        tiny: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: the same checkpoint's export of another dataset (or split) into the same --out replaced the maps of the
    image ids the two share and kept the others, and evaluate scored that mix (MaxBoxAccV2 45.83 instead of 50)."""
    import shutil

    root, ckpt = tiny
    other = generate_synthetic_dataset(tmp_path / "tiny2", seed=2, num_classes=3, num_train=12, num_val=6,
                                       num_test=6, min_side=72, max_side=96, image_format="png")
    out = tmp_path / "maps"
    base = ["export-scoremaps", "--ckpt", str(ckpt), "--out", str(out), "--methods", "cam", "--batch-size", "6"]
    assert main([*base, "--data", str(root)]) == 0
    manifest, maps = (out / MANIFEST).read_text(), {p: p.read_bytes() for p in (out / "cam").rglob("*.npy")}
    capsys.readouterr()
    for data, split in ((other, "test"), (root, "val")):
        assert main([*base, "--data", str(data), "--split", split]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.endswith(f"give another --out (or remove {out / 'cam'})"), err
        assert f"{out / 'cam'}: holds the maps of split 'test' of {root.resolve()} (checkpoint " in err
    assert (out / MANIFEST).read_text() == manifest
    assert {p: p.read_bytes() for p in (out / "cam").rglob("*.npy")} == maps
    moved = Path(shutil.copytree(root, tmp_path / "moved"))  # the same dataset elsewhere: the same images
    (tmp_path / "link").symlink_to(root)
    for data in (moved, tmp_path / "link"):
        assert main([*base, "--data", str(data)]) == 0
    assert {p: p.read_bytes() for p in (out / "cam").rglob("*.npy")} == maps
    shutil.rmtree(out / "cam")  # what the refusal offers: the folder gone, another dataset's maps may go there
    assert main([*base, "--data", str(other)]) == 0


def test_evaluate_refuses_the_maps_of_another_split(tiny: tuple[Path, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Before: the val maps scored against the test split were 'no score map for image ...' (or, where the two
    splits share image ids, a score)."""
    root, ckpt = tiny
    out = tmp_path / "maps"
    assert main(["export-scoremaps", "--ckpt", str(ckpt), "--data", str(root), "--split", "val", "--methods", "cam",
                 "--out", str(out)]) == 0
    evaluate = ["evaluate", "--scoremaps", str(out / "cam"), "--out", str(tmp_path / "s.json")]
    capsys.readouterr()
    assert main([*evaluate, "--metadata", str(root / "metadata" / "test")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and not (tmp_path / "s.json").exists(), err
    assert f"--scoremaps {out / 'cam'}: the maps of split 'val' of {root.resolve()} (as {out / MANIFEST} says), " \
           f"but --metadata {root / 'metadata' / 'test'} is split 'test'" in err
    assert main([*evaluate, "--metadata", str(root / "metadata" / "val")]) == 0


def test_a_cut_short_export_is_refused_through_a_link_or_a_copy_of_its_folder(
        tiny: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Before: evaluate refused <out>/cam of an export cut short, but scored a symlink to it or a copy of it."""
    import shutil

    from cream_pl.pipelines import export_scoremaps as module

    root, ckpt = tiny
    out = tmp_path / "maps"
    export = ["export-scoremaps", "--ckpt", str(ckpt), "--data", str(root), "--out", str(out), "--batch-size", "2",
              "--methods", "cam"]
    _stop_after(module, monkeypatch, 2)
    assert main(export) == 143
    monkeypatch.undo()
    assert (out / "cam" / MARKER).is_file()
    (tmp_path / "link").symlink_to(out / "cam")
    copy = Path(shutil.copytree(out / "cam", tmp_path / "copy"))
    evaluate = ["evaluate", "--metadata", str(root / "metadata" / "test"), "--out", str(tmp_path / "s.json")]
    capsys.readouterr()
    for maps, says in ((tmp_path / "link", out / MANIFEST), (copy, copy / MARKER)):
        assert main([*evaluate, "--scoremaps", str(maps)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and not (tmp_path / "s.json").exists(), err
        assert err.endswith(f"{maps}: the export-scoremaps run into it (checkpoint {ckpt}, {says}) never finished "
                            "(the maps may mix two checkpoints); run it again before scoring the folder"), err
    assert main(export) == 0 and "resuming the export cut short after 2 of 6" in capsys.readouterr().err
    assert not (out / "cam" / MARKER).exists()  # finished: the folder, a link to it and a new copy are scored
    for maps in (out / "cam", tmp_path / "link", Path(shutil.copytree(out / "cam", tmp_path / "copy2"))):
        assert main([*evaluate, "--scoremaps", str(maps)]) == 0
    assert main([*evaluate, "--scoremaps", str(copy)]) == 2  # the copy made while cut short stays refused


def test_evaluate_out_naming_the_export_manifest_is_refused(tiny: tuple[Path, Path], exported: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Before: --out <export>/scoremaps.json replaced the record of which checkpoint wrote the maps with scores, and
    the checks that read it no longer protected the folder."""
    import shutil

    root, _ = tiny
    maps = Path(shutil.copytree(exported, tmp_path / "ex1"))
    manifest = (maps / MANIFEST).read_text()
    evaluate = ["evaluate", "--metadata", str(root / "metadata" / "test"), "--scoremaps", str(maps / "cam")]
    capsys.readouterr()
    assert main([*evaluate, "--out", str(maps / MANIFEST)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and (maps / MANIFEST).read_text() == manifest, err
    assert f"--out {maps / MANIFEST}: the manifest of an export-scoremaps run" in err
    results = tmp_path / "scores" / MANIFEST  # an earlier result under that name, beside no maps: replaced
    assert main([*evaluate, "--out", str(results)]) == 0 and main([*evaluate, "--out", str(results)]) == 0


def test_out_inside_the_dataset_is_refused_before_the_model_is_loaded(tiny: tuple[Path, Path], tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Before: --out <data>/metadata (or <data>, <data>/images) wrote cam/, cream/ and scoremaps.json into the
    dataset, after which `cream-pl data check` failed; --ckpt <a folder> was 'checkpoint not found'."""
    import shutil

    root, ckpt = tiny
    data = Path(shutil.copytree(root, tmp_path / "tinyc"))
    not_a_checkpoint = tmp_path / "bad.ckpt"
    not_a_checkpoint.write_text("not a checkpoint")
    capsys.readouterr()
    for out in (data / "metadata", data, data / "images"):
        for checkpoint in (ckpt, not_a_checkpoint):  # the bad one: refused for --out, before it is read
            assert main(["export-scoremaps", "--ckpt", str(checkpoint), "--data", str(data), "--out", str(out)]) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1, err
            assert f"{out}: {'is' if out == data else 'inside'} --data {data}, which the export reads: the maps " \
                   "would be written into the dataset; give an --out outside it" in err
    assert not list(data.rglob(MANIFEST)) and not list(data.rglob("cam")) and main(["data", "check", str(data)]) == 0
    assert main(["export-scoremaps", "--ckpt", str(tmp_path), "--data", str(data), "--out", str(tmp_path / "m")]) == 2
    assert f"--ckpt {tmp_path}: a folder, not a checkpoint file" in capsys.readouterr().err


def test_evaluate_of_an_export_folder_names_its_method_folders(tiny: tuple[Path, Path], exported: Path,
                                                                tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: --scoremaps <export> (not <export>/cam) said only 'expected <export>/test/...npy'."""
    root, _ = tiny
    capsys.readouterr()
    assert main(["evaluate", "--metadata", str(root / "metadata" / "test"), "--scoremaps", str(exported), "--out",
                 str(tmp_path / "s.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no score map for image" in err, err
    assert err.endswith(f"({exported} is an export-scoremaps folder: pass {exported / 'cam'} or {exported / 'cream'})")
