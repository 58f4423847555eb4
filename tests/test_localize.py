"""``cream-pl localize``: a real tiny classifier checkpoint on real files, bad files, box mapping, regressor boxes."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from cream_pl.cli import main
from cream_pl.data import WSOLDataModule, generate_synthetic_dataset
from cream_pl.data.metadata import read_class_names
from cream_pl.models import WSOLClassifier
from cream_pl.models.regressor import BoxRegressor
from cream_pl.pipelines.localize import expand_image_paths, grid_box_to_original, localize

os.environ.setdefault("WANDB_MODE", "disabled")

SIZE = 64


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """(data root, classifier checkpoint) trained 1 epoch on a tiny synthetic data set."""
    root = generate_synthetic_dataset(tmp_path_factory.mktemp("synth"), seed=1, num_classes=3, num_train=12,
                                      num_val=6, num_test=6, min_side=72, max_side=96, image_format="png",
                                      overwrite=True)
    pl.seed_everything(0)
    dm = WSOLDataModule(str(root), batch_size=6, resize_size=72, crop_size=SIZE, eval_size=SIZE)
    model = WSOLClassifier(num_classes=3, pretrained=False, cam_curve_interval=0.05, eval_size=SIZE, lr=0.01)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         default_root_dir=str(tmp_path_factory.mktemp("run")))
    trainer.fit(model, dm)
    ckpt = tmp_path_factory.mktemp("ckpt") / "classifier.ckpt"
    trainer.save_checkpoint(ckpt)
    return root, ckpt


def _test_images(root: Path, n: int) -> list[Path]:
    ids = (root / "metadata" / "test" / "image_ids.txt").read_text().split("\n")[:n]
    return [root / "images" / i for i in ids]


def _input_folder(root: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    a, b = _test_images(root, 2)
    shutil.copy(a, folder / "a.png")
    shutil.copy(b, folder / "sub" / "b.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    (folder / "notes.txt").write_text("not an image, ignored by extension")
    return folder


def test_cli_localizes_good_files_and_lists_bad_ones(tiny, tmp_path, capsys):
    root, ckpt = tiny
    folder = _input_folder(root, tmp_path)
    missing = tmp_path / "missing.jpg"
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop.name)  # a symlink to itself, named on the command line (was: a traceback)
    out = tmp_path / "out"
    status = main(["localize", "--ckpt", str(ckpt), str(folder), str(missing), str(loop), "--out", str(out),
                   "--batch-size", "2"])
    assert status == 1
    err = capsys.readouterr().err
    assert "corrupt.png" in err and "missing.jpg" in err and "loop.jpg" in err and "Traceback" not in err

    res = json.loads((out / "predictions.json").read_text())
    assert res["method"] == "cream"
    model = WSOLClassifier.load_from_checkpoint(ckpt, map_location="cpu")
    assert res["threshold"] == pytest.approx(float(model.val_best_threshold[model.method_names.index("cream")]))
    assert res["threshold_source"] == "val"
    assert [c["name"] for c in res["categories"]] == read_class_names(root / "class_names.txt")
    assert sorted(Path(i["file_name"]).name for i in res["images"]) == ["a.png", "b.png"]
    assert len(res["annotations"]) == 2
    for img, ann in zip(res["images"], res["annotations"]):
        assert ann["image_id"] == img["id"]
        h, w = cv2.imread(img["file_name"]).shape[:2]
        assert (img["width"], img["height"]) == (w, h)
        x, y, bw, bh = ann["bbox"]
        assert 0 <= x and 0 <= y and bw > 0 and bh > 0
        assert x + bw <= w + 1e-6 and y + bh <= h + 1e-6
        assert 0 <= ann["category_id"] < 3 and 0.0 < ann["score"] <= 1.0
        overlay = cv2.imread(str(out / img["overlay"]))
        assert overlay is not None and overlay.shape[:2] == (h, w)
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["a.png", "b.png"]
    failed = {Path(f["file_name"]).name: f["reason"] for f in res["failed"]}
    assert set(failed) == {"corrupt.png", "missing.jpg", "loop.jpg"}
    assert "not found" in failed["missing.jpg"]

    # the class is the classifier's top-1 on the squashed image
    status = main(["localize", "--ckpt", str(ckpt), str(folder / "a.png"), "--out", str(tmp_path / "o2"),
                   "--method", "cam", "--threshold", "0.5"])
    assert status == 0
    res2 = json.loads((tmp_path / "o2" / "predictions.json").read_text())
    assert res2["method"] == "cam" and res2["threshold"] == 0.5 and res2["failed"] == []
    first = next(a for a, i in zip(res["annotations"], res["images"]) if i["file_name"].endswith("a.png"))
    assert res2["annotations"][0]["category_id"] == first["category_id"]


def test_usage_errors_exit_2(tiny, tmp_path, capsys):
    root, ckpt = tiny
    image = str(_test_images(root, 1)[0])
    assert main(["localize", "--ckpt", str(ckpt), "--out", str(tmp_path / "o")]) == 2
    assert main(["localize", "--ckpt", str(tmp_path / "nope.ckpt"), image, "--out", str(tmp_path / "o")]) == 2
    assert main(["localize", "--ckpt", str(ckpt), image, "--out", str(tmp_path / "o"), "--threshold", "1.5"]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["localize", "--ckpt", str(ckpt), str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    bad_ckpt = tmp_path / "bad.ckpt"
    bad_ckpt.write_bytes(b"not a checkpoint")
    assert main(["localize", "--ckpt", str(bad_ckpt), image, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no input" in err and "nope.ckpt" in err and "bad.ckpt" in err
    assert not (tmp_path / "o" / "predictions.json").exists()


def test_earlier_runs_overlays_in_an_input_folder_are_no_input(tiny, tmp_path, capsys):
    """Before: ``localize P --out P/run1``, then ``--out P/run2``, ... localized 2, 4, 8 images: each run's heatmap
    overlays were read as photos by the next. A run killed before its predictions.json (``.pending``) counts too."""
    root, ckpt = tiny
    photos = tmp_path / "P"
    photos.mkdir()
    for i, p in enumerate(_test_images(root, 2)):
        shutil.copy(p, photos / f"{i}.png")
    for run in ("run1", "run2", "run3"):
        assert main(["localize", "--ckpt", str(ckpt), str(photos), "--out", str(photos / run)]) == 0
        res = json.loads((photos / run / "predictions.json").read_text())
        assert sorted(Path(i["file_name"]).name for i in res["images"]) == ["0.png", "1.png"], run
    killed = photos / "killed" / "overlays"
    killed.mkdir(parents=True)
    shutil.copy(photos / "run1" / "overlays" / "0.png", killed / "0.png")
    (killed / ".pending").write_text("0.png\n")
    user = photos / "mine" / "overlays"  # a user's folder named overlays, with no localize run beside it: photos
    user.mkdir(parents=True)
    shutil.copy(photos / "0.png", user / "u.png")
    assert main(["localize", "--ckpt", str(ckpt), str(photos), "--out", str(tmp_path / "o")]) == 0
    res = json.loads((tmp_path / "o" / "predictions.json").read_text())
    assert sorted(Path(i["file_name"]).relative_to(photos).as_posix() for i in res["images"]) == [
        "0.png", "1.png", "mine/overlays/u.png"]
    # named on the command line, an earlier run's overlay is the user's choice
    assert main(["localize", "--ckpt", str(ckpt), str(photos / "run1" / "overlays" / "0.png"), "--out",
                 str(tmp_path / "o2")]) == 0
    # a folder of overlays only: the message names it and says why nothing was found
    capsys.readouterr()
    assert main(["localize", "--ckpt", str(ckpt), str(photos / "run1"), "--out", str(tmp_path / "o3")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"no image files to localize in {photos / 'run1'}" in err and "overlays are skipped" in err


def test_checkpoint_folders_and_a_threshold_the_regressor_ignores_are_one_line(tiny, tmp_path, capsys):
    root, ckpt = tiny
    image = str(_test_images(root, 1)[0])
    folder = tmp_path / "dir.ckpt"
    folder.mkdir()
    for argv, said in [(["--ckpt", str(folder)], f"{folder}: --ckpt is a folder, not a classifier checkpoint file"),
                       (["--ckpt", str(ckpt), "--regressor", str(folder)],
                        f"{folder}: --regressor is a folder, not a regressor checkpoint file"),
                       (["--ckpt", str(ckpt), "--regressor", str(ckpt), "--threshold", "0.9"],
                        "--threshold 0.9: the regressor's boxes take no map threshold")]:  # before: recorded as used
        assert main(["localize", image, "--out", str(tmp_path / "o"), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert said in err and len(err.splitlines()) == 1, err
    from cream_pl.models.checkpoints import read_checkpoint

    truncated = tmp_path / "cut.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(ValueError) as err:
        read_checkpoint(truncated)
    assert str(err.value).endswith("failed finding central directory)")  # torch's first sentence, not cut mid-way
    with pytest.raises(ValueError, match="a folder, not a checkpoint file"):
        read_checkpoint(folder)
    assert not (tmp_path / "o").exists()


class _KnownMapClassifier(WSOLClassifier):
    """Always class 1, with a map that is 1 exactly on grid rows 16..31 and columns 8..39."""

    def method_maps(self, feats, class_ids, names=None):
        s = self.hparams.eval_size
        m = torch.zeros(len(class_ids), s, s)
        m[:, 16:32, 8:40] = 1.0
        return {"cam": m, "cream": m}

    def forward_features(self, images):
        feats, logits = super().forward_features(images)
        return feats, torch.tensor([[0.0, 5.0]]).expand(len(images), 2)


def test_map_box_maps_to_original_coordinates(tmp_path):
    # the region's own pixels: boundingRect (x=8, y=16, w=32, h=16) -> inclusive [8, 16, 39, 31] (not the
    # benchmark's one-past [8, 16, 40, 32]); grid pixel i covers [i W/64, (i+1) W/64): W=128 -> x in [16, 80),
    # H=96 -> y in [24, 48)
    expected = [16.0, 24.0, 64.0, 24.0]
    assert grid_box_to_original([8, 16, 39, 31], SIZE, (128, 96)) == expected
    assert grid_box_to_original([0, 0, SIZE - 1, SIZE - 1], SIZE, (128, 96)) == [0.0, 0.0, 128.0, 96.0]

    cv2.imwrite(str(tmp_path / "img.png"), np.full((96, 128, 3), 90, np.uint8))
    model = _KnownMapClassifier(num_classes=2, pretrained=False, eval_size=SIZE)
    res = localize(model, [tmp_path / "img.png"], tmp_path / "out", threshold=0.5, class_names=["cat", "dog"])
    ann = res["annotations"][0]
    assert ann["bbox"] == expected
    assert ann["box_grid"] == [8, 16, 39, 31]
    assert ann["category_id"] == 1 and ann["category_name"] == "dog"
    assert res["threshold_source"] == "given"
    overlay = cv2.cvtColor(cv2.imread(str(tmp_path / "out" / "overlays" / "img.png")), cv2.COLOR_BGR2RGB)
    assert tuple(overlay[40, 16]) == (255, 0, 0)  # the red box's left edge at x = 16
    assert tuple(overlay[40, 15]) != (255, 0, 0)


def test_expand_image_paths_recurses_and_sorts(tmp_path):
    for rel in ("z.png", "b/a.JPG", "b/c.txt", "a/y.jpeg", "a/x.jfif", "a/w.JPE"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).touch()
    (tmp_path / "a" / "gone.png").symlink_to(tmp_path / "nowhere.png")  # dangling: kept, to be reported as failed
    got = expand_image_paths([tmp_path, tmp_path / "b" / "c.txt"])
    assert [p.relative_to(tmp_path).as_posix() for p in got] == ["a/gone.png", "a/w.JPE", "a/x.jfif", "a/y.jpeg",
                                                                 "b/a.JPG", "z.png", "b/c.txt"]


def test_regressor_box_replaces_the_map_box(tiny, tmp_path, capsys):
    root, ckpt = tiny
    reg = BoxRegressor(pretrained=False, hidden_dim=8)
    last = reg.head[2]
    torch.nn.init.zeros_(last.weight)
    target = torch.tensor([0.25, 0.1, 0.5, 0.6])  # normalised (x, y, w, h)
    with torch.no_grad():
        last.bias.copy_(torch.logit(target))
    reg_ckpt = tmp_path / "reg.ckpt"
    torch.save({"state_dict": reg.state_dict(), "hyper_parameters": dict(reg.hparams),
                "pytorch-lightning_version": pl.__version__}, reg_ckpt)

    folder = tmp_path / "in"
    folder.mkdir()
    images = _test_images(root, 2)
    for i, p in enumerate(images):
        shutil.copy(p, folder / f"{i}.png")
    status = main(["localize", "--ckpt", str(ckpt), "--regressor", str(reg_ckpt), str(folder),
                   "--out", str(tmp_path / "out")])
    assert status == 0
    assert f"with boxes of the regressor {reg_ckpt}, maps of " in capsys.readouterr().out  # not a τ it did not use
    res = json.loads((tmp_path / "out" / "predictions.json").read_text())
    plain = localize(ckpt, [folder], tmp_path / "plain")
    assert res["info"]["box_source"] == "regressor"
    for img, ann, ref in zip(res["images"], res["annotations"], plain["annotations"]):
        w, h = img["width"], img["height"]
        exp = [0.25 * w, 0.1 * h, 0.5 * w, 0.6 * h]
        assert all(math.isclose(a, b, abs_tol=1e-3) for a, b in zip(ann["bbox"], exp)), (ann["bbox"], exp)
        assert ann["category_id"] == ref["category_id"]  # class still from the classifier
        assert ann["score"] == pytest.approx(ref["score"])
        assert "box_grid" not in ann


def _resave(ckpt: Path, dest: Path, data_root: str, keep_names: bool) -> Path:
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    state["datamodule_hyper_parameters"]["data_root"] = data_root
    if not keep_names:
        state.pop("WSOLDataModule")  # a checkpoint written before the data module stored the names
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, dest)
    return dest


def test_class_names_come_with_the_checkpoint(tiny, tmp_path, monkeypatch):
    root, ckpt = tiny
    names = read_class_names(root / "class_names.txt")
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["WSOLDataModule"] == {"class_names": names}
    moved = _resave(ckpt, tmp_path / "cls.ckpt", str(tmp_path / "gone"), keep_names=True)  # data moved away
    monkeypatch.chdir(tmp_path)
    res = localize(moved, _test_images(root, 1), tmp_path / "out")
    assert [c["name"] for c in res["categories"]] == names
    assert res["annotations"][0]["category_name"] in names


def test_class_names_of_a_relative_data_root_from_another_folder(tiny, tmp_path, monkeypatch, capsys):
    # as `make demo` writes it: data_root "data/synth" relative to the project folder the run started in
    root, ckpt = tiny
    project = tmp_path / "project"
    shutil.copytree(root, project / "data" / "synth")
    old = _resave(ckpt, project / "outputs" / "run" / "classifier.ckpt", "data/synth", keep_names=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    image = str(_test_images(root, 1)[0])
    assert main(["localize", "--ckpt", str(old), image, "--out", "out"]) == 0
    res = json.loads((elsewhere / "out" / "predictions.json").read_text())
    names = read_class_names(root / "class_names.txt")
    assert [c["name"] for c in res["categories"]] == names
    assert not any(c["name"].startswith("class_") for c in res["categories"])


def test_frozen_feature_regressor_boxes_from_the_classifier_pass(tiny, tmp_path, monkeypatch):
    """A ``features="classifier"`` regressor: ``localize`` runs the classifier once per batch, the head boxes its features."""
    from cream_pl.models import WSOLClassifier

    root, ckpt = tiny
    reg = BoxRegressor(features="classifier", feature_channels=1280, head="psol", hidden_dim=8,
                       classifier_ckpt=str(ckpt))
    last = reg.head[2]
    torch.nn.init.zeros_(last.weight)
    with torch.no_grad():
        last.bias.copy_(torch.logit(torch.tensor([0.25, 0.1, 0.5, 0.6])))
    reg_ckpt = tmp_path / "reg.ckpt"
    torch.save({"state_dict": reg.state_dict(), "hyper_parameters": dict(reg.hparams),
                "pytorch-lightning_version": pl.__version__}, reg_ckpt)
    folder = tmp_path / "in"
    folder.mkdir()
    for i, p in enumerate(_test_images(root, 3)):
        shutil.copy(p, folder / f"{i}.png")
    calls = []
    real = WSOLClassifier.forward_features
    monkeypatch.setattr(WSOLClassifier, "forward_features", lambda self, x: calls.append(len(x)) or real(self, x))
    assert main(["localize", "--ckpt", str(ckpt), "--regressor", str(reg_ckpt), str(folder),
                 "--out", str(tmp_path / "out")]) == 0
    assert calls == [3]  # one classifier pass for the class and the box of the batch
    res = json.loads((tmp_path / "out" / "predictions.json").read_text())
    for img, ann in zip(res["images"], res["annotations"]):
        w, h = img["width"], img["height"]
        exp = [0.25 * w, 0.1 * h, 0.5 * w, 0.6 * h]
        assert all(math.isclose(a, b, abs_tol=1e-3) for a, b in zip(ann["bbox"], exp)), (ann["bbox"], exp)
