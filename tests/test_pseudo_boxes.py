"""CREAM_reg pseudo boxes: the writer end to end (real Trainer.predict), resume, quality, bad files."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from cream_reg_fixtures import CLASS_NAMES, StandInClassifier, default_specs, write_tiny_dataset
from pycocotools.coco import COCO

from cream_pl.core.boxes import resize_boxes_protocol
from cream_pl.core.errors import UserValueError
from cream_pl.data.datamodule import WSOLDataModule
from cream_pl.data.metadata import read_split
from cream_pl.data.pseudo_box_format import PseudoBoxFileError, read_pseudo_boxes
from cream_pl.models.backbones.efficientnet_lite0 import EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD
from cream_pl.pseudo_boxes.generate import (
    box_to_original,
    checkpoint_normalisation,
    choose_threshold_on_val,
    generate_pseudo_boxes,
    pseudo_box_quality,
    quality_path,
)

os.environ.setdefault("WANDB_MODE", "disabled")

TRAINER = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny"), default_specs(10))


def _dm(root: Path, batch_size: int = 2) -> WSOLDataModule:
    return WSOLDataModule(str(root), batch_size=batch_size, num_workers=0)


def _generate(root: Path, out: Path, model: pl.LightningModule | None = None, **kw: Any) -> Path:
    kw.setdefault("threshold", 0.5)
    kw.setdefault("chunk_size", 4)
    return generate_pseudo_boxes(model or StandInClassifier(), _dm(root), out, trainer_kwargs=TRAINER, **kw)


# ---------------------------------------------------------------------------------------------- pure functions


def test_box_to_original_scales_grid_pixels_to_image_pixels() -> None:
    # grid pixel i covers [i, i + 1) -> [i W/224, (i + 1) W/224): box 50..99 of a 448-wide image -> 100..200
    assert box_to_original([50, 20, 99, 97], (224, 224), (448, 112)) == [100.0, 10.0, 100.0, 39.0]
    # the whole grid is the whole image
    assert box_to_original([0, 0, 223, 223], (224, 224), (37, 501)) == [0.0, 0.0, 37.0, 501.0]


def test_pseudo_box_quality_hand_computed() -> None:
    gt = [torch.tensor([[10, 20, 59, 79]]), torch.tensor([[0, 0, 9, 9], [50, 50, 59, 59]])]
    # image 1: COCO [10, 20, 51, 61] = inclusive 10..60 x 20..80: inter 50*60, union 51*61
    # image 2: COCO [50, 50, 5, 10] inside the second GT box: 50 / 100
    q = pseudo_box_quality([[10, 20, 51, 61], [50, 50, 5, 10]], gt)
    assert q["mean_iou"] == pytest.approx((3000 / 3111 + 0.5) / 2)
    assert q["iou50_fraction"] == 1.0
    q = pseudo_box_quality([[10, 20, 51, 61], [50, 50, 5, 9]], gt)  # 45 / 100 < 0.5
    assert q["iou50_fraction"] == 0.5


# ---------------------------------------------------------------------------------------------- end to end


def test_writer_end_to_end_coco_loads_and_boxes_map_back(data_root: Path, tmp_path: Path) -> None:
    out = _generate(data_root, tmp_path / "boxes.json")
    coco = COCO(str(out))
    meta = read_split(data_root / "metadata" / "train")
    assert sorted(coco.getImgIds()) == list(range(len(meta.samples)))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == CLASS_NAMES
    for i, s in enumerate(meta.samples):
        img = coco.loadImgs(i)[0]
        assert img["file_name"] == s.image_id and (img["width"], img["height"]) == s.size
        (ann,) = coco.loadAnns(coco.getAnnIds(imgIds=i))
        assert ann["category_id"] == s.label
        w, h = s.size
        # the map is the GT box in the 224 grid (protocol truncation); the pseudo box of a map region
        # x0..x1 is that region, first to last pixel (not the benchmark's one-past x + w box)
        g = resize_boxes_protocol(torch.tensor([s.boxes[0]]), (w, h), (224, 224))[0].tolist()
        x0, y0, x1, y1 = g
        expect = [x0 * w / 224, y0 * h / 224, (x1 + 1) * w / 224, (y1 + 1) * h / 224]
        bx, by, bw, bh = ann["bbox"]
        assert [bx, by, bx + bw, by + bh] == pytest.approx(expect, abs=1e-3)
    # the 448x112 image (index 1): GT 3,5..227,60 -> grid 1,10..113,120 -> original [2, 228) x [5, 60.5)
    assert coco.loadAnns(coco.getAnnIds(imgIds=1))[0]["bbox"] == pytest.approx([2.0, 5.0, 226.0, 55.5])
    quality = json.loads(quality_path(out).read_text())
    recomputed = pseudo_box_quality([coco.loadAnns(coco.getAnnIds(imgIds=i))[0]["bbox"] for i in range(10)],
                                    [torch.tensor(s.boxes) for s in meta.samples])
    assert quality["mean_iou"] == pytest.approx(recomputed["mean_iou"])
    assert quality["iou50_fraction"] == recomputed["iou50_fraction"] == 1.0
    assert quality_path(out).name == "boxes.quality.json"


def test_quality_file_hand_checked_and_cam_source(tmp_path: Path) -> None:
    specs = {"train": [((224, 224), (10, 20, 59, 79), 0), ((224, 224), (0, 0, 223, 111), 1)]}
    root = write_tiny_dataset(tmp_path / "d", specs)
    out = _generate(root, tmp_path / "cream.json", chunk_size=2)
    q = json.loads(quality_path(out).read_text())
    # the pseudo boxes are the map regions exactly: 10..59 x 20..79 and 0..223 x 0..111 -> IoU 1 each
    assert q["mean_iou"] == pytest.approx(1.0)
    assert q["iou50_fraction"] == 1.0 and q["num_images"] == 2
    # CAM = the map shifted right by 8: box 1 -> 18..67 x 20..79, i.e. 50 x 60 pixels
    out = _generate(root, tmp_path / "cam.json", source="cam", chunk_size=2)
    ann = json.loads(out.read_text())["annotations"][0]
    assert ann["bbox"] == [18.0, 20.0, 50.0, 60.0]
    assert json.loads(out.read_text())["info"]["source"] == "cam"


class _StopAfter(pl.Callback):
    def __init__(self, batches: int) -> None:
        self.batches = batches

    def on_predict_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        self.batches -= 1
        if self.batches == 0:
            raise RuntimeError("simulated interruption")


def test_interrupted_run_resumes_without_redoing_chunks_and_gives_same_bytes(data_root: Path, tmp_path: Path) -> None:
    # 10 images, batch 2, chunks of 4: chunks {0..3}, {4..7}, {8, 9}
    full = _generate(data_root, tmp_path / "full" / "boxes.json")
    out = tmp_path / "resumed" / "boxes.json"
    with pytest.raises(RuntimeError, match="simulated interruption"):
        _generate(data_root, out, callbacks=[_StopAfter(3)])  # chunk 0 done, half of chunk 1 lost
    shards = sorted(p.name for p in (out.parent / "boxes.json.shards").glob("chunk_*.json"))
    assert shards == ["chunk_000000.json"] and not out.exists()
    first_chunk = (out.parent / "boxes.json.shards" / "chunk_000000.json").stat().st_mtime_ns
    model = StandInClassifier()
    _generate(data_root, out, model=model, keep_shards=True)
    assert model.predicted_images == 6  # only chunks 1 and 2
    assert (out.parent / "boxes.json.shards" / "chunk_000000.json").stat().st_mtime_ns == first_chunk
    assert out.read_bytes() == full.read_bytes()
    assert quality_path(out).read_bytes() == quality_path(full).read_bytes()
    assert not (tmp_path / "full" / "boxes.json.shards").exists()  # removed once the final file is written
    shutil.rmtree(out.parent / "boxes.json.shards")
    # a finished run resumes to the same file without predicting anything
    model = StandInClassifier()
    _generate(data_root, out, model=model)
    assert model.predicted_images == 0 and out.read_bytes() == full.read_bytes()


def test_resume_refuses_shards_of_another_run(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "boxes.json"
    with pytest.raises(RuntimeError, match="simulated"):
        _generate(data_root, out, callbacks=[_StopAfter(2)])
    with pytest.raises(ValueError, match="different pseudo-box run.*threshold"):
        _generate(data_root, out, threshold=0.3)
    model = StandInClassifier()
    _generate(data_root, out, model=model, threshold=0.3, overwrite=True)
    assert model.predicted_images == 10
    # an --overwrite run cut short resumes its own chunks on the same --overwrite command (it removed them all)
    with pytest.raises(RuntimeError, match="simulated"):
        _generate(data_root, out, threshold=0.2, overwrite=True, callbacks=[_StopAfter(3)])
    model = StandInClassifier()
    _generate(data_root, out, model=model, threshold=0.2, overwrite=True)
    assert model.predicted_images == 6 and json.loads(out.read_text())["info"]["threshold"] == 0.2
    _generate(data_root, out, threshold=0.2, overwrite=True, keep_shards=True)  # finished, its chunks kept
    model = StandInClassifier()
    _generate(data_root, out, model=model, threshold=0.2, overwrite=True)  # --overwrite: a finished run's are redone
    assert model.predicted_images == 10
    with pytest.raises(RuntimeError, match="simulated"):  # a cut run whose manifest is then damaged: --overwrite
        _generate(data_root, out, threshold=0.1, overwrite=True, callbacks=[_StopAfter(3)])  # starts it over
    (out.parent / "boxes.json.shards" / "manifest.json").write_text("{")
    model = StandInClassifier()
    _generate(data_root, out, model=model, threshold=0.1, overwrite=True)
    assert model.predicted_images == 10 and json.loads(out.read_text())["info"]["threshold"] == 0.1


def test_chunk_size_must_be_a_multiple_of_the_batch_size(data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple of the batch size"):
        _generate(data_root, tmp_path / "b.json", chunk_size=3)


def test_threshold_from_val(data_root: Path, tmp_path: Path) -> None:
    assert choose_threshold_on_val(StandInClassifier(tau=0.25), source="cream") == 0.25
    with pytest.raises(ValueError, match="never validated"):
        choose_threshold_on_val(StandInClassifier())
    tau = choose_threshold_on_val(StandInClassifier(), _dm(data_root), trainer_kwargs=TRAINER)
    assert tau == pytest.approx(0.37)
    out = generate_pseudo_boxes(StandInClassifier(tau=0.25), _dm(data_root), tmp_path / "b.json", threshold=None,
                                trainer_kwargs=TRAINER, chunk_size=4)
    assert json.loads(out.read_text())["info"]["threshold"] == 0.25


def test_written_file_passes_the_dataset_check(data_root: Path, tmp_path: Path) -> None:
    out = _generate(data_root, tmp_path / "boxes.json")
    records = read_pseudo_boxes(out, data_root / "metadata" / "train", class_names=CLASS_NAMES)
    assert [r.index for r in records] == list(range(10))


def test_cli_registers_pseudo_boxes() -> None:
    from cream_pl.cli import build_parser

    args = build_parser().parse_args(["pseudo-boxes", "--ckpt", "c.ckpt", "--data", "d", "--out", "o.json",
                                      "--source", "cam", "--threshold", "0.3"])
    assert args.source == "cam" and args.threshold == 0.3 and args.func.__name__ == "run"


# ---------------------------------------------------------------------------------------------- bad files


def _valid_coco(root: Path) -> dict[str, Any]:
    meta = read_split(root / "metadata" / "train")
    return {
        "images": [{"id": i, "file_name": s.image_id, "width": s.size[0], "height": s.size[1]}
                   for i, s in enumerate(meta.samples)],
        "categories": [{"id": c, "name": n} for c, n in enumerate(CLASS_NAMES)],
        "annotations": [{"id": i, "image_id": i, "category_id": s.label,
                         "bbox": [s.boxes[0][0], s.boxes[0][1], s.boxes[0][2] - s.boxes[0][0] + 1,
                                  s.boxes[0][3] - s.boxes[0][1] + 1], "score": 1.0}
                        for i, s in enumerate(meta.samples)],
    }


def _break(coco: dict[str, Any], case: str) -> dict[str, Any] | str:
    if case == "unknown_image_id":
        coco["annotations"][3]["image_id"] = 999
    elif case == "unknown_file":
        coco["images"][2]["file_name"] = "train/000/nope.png"
    elif case == "box_outside":
        coco["annotations"][1]["bbox"] = [400.0, 0.0, 60.0, 10.0]  # image 1 is 448 wide: 460 > 448
    elif case == "negative_xy":
        coco["annotations"][1]["bbox"] = [-5.0, 0.0, 10.0, 10.0]
    elif case == "zero_size":
        coco["annotations"][0]["bbox"] = [5.0, 5.0, 0.0, 10.0]
    elif case == "at_the_border":  # within the tolerance past the 448-px edge: nothing left once clipped
        coco["annotations"][1]["bbox"] = [448.0005, 0.0, 0.0004, 10.0]
    elif case == "tiny_width":  # positive in float64, no width in float32 (the transforms'): 10 + 1e-9 == 10
        coco["annotations"][1]["bbox"] = [10.0, 0.0, 1e-9, 10.0]
    elif case == "missing_box":
        del coco["annotations"][4]
    elif case == "two_boxes":
        coco["annotations"].append(dict(coco["annotations"][0], id=100))
    elif case == "category_count":
        coco["categories"].append({"id": 2, "name": "extra"})
    elif case == "category_name":
        coco["categories"][1]["name"] = "green_star"
    elif case == "wrong_category":
        coco["annotations"][0]["category_id"] = 1 - coco["annotations"][0]["category_id"]
    elif case == "wrong_size":
        coco["images"][0]["width"] = 225
    elif case == "missing_image":
        del coco["images"][5]
    elif case == "truncated":
        return json.dumps(coco)[:-40]
    elif case == "not_coco":
        return json.dumps({"images": []})
    elif case == "other_split":  # a file of the val split: one cause, not every image of it listed
        coco["info"] = {"predict_split": "val"}
        coco["images"][2]["file_name"] = "val/000/x.png"
    return coco


BAD_CASES = {
    "unknown_image_id": "annotations[3]: unknown image id 999",
    "unknown_file": "images[2]: file_name 'train/000/nope.png' is not an image of the split",
    "box_outside": "extends past the 448x112 image (x + w = 460 > 448)",
    "negative_xy": "starts outside the 448x112 image",
    "zero_size": "non-positive width or height",
    "at_the_border": "box [448.0005, 0.0, 0.0004, 10.0] has no area inside the 448x112 image once clipped to it",
    "tiny_width": "box [10.0, 0.0, 1e-09, 10.0] has no area inside the 448x112 image once clipped",
    "missing_box": "1 image(s) have no box in 'annotations', e.g. 'train/000/img_004.png'",
    "two_boxes": "a second box for the image (first in annotations[0])",
    "category_count": "expected ids 0..1 (one per class of the dataset, 2 classes), got 3 categories",
    "category_name": "category 1 is named 'green_star' but the dataset's class 1 is 'blue_square'",
    "wrong_category": "annotations[0] (image 'train/000/img_000.png'): category_id 1 differs from the image's class 0",
    "wrong_size": "size 225x224 differs from the dataset's 224x224",
    "missing_image": "1 image(s) of the split have no entry in 'images', e.g. 'train/001/img_005.png'",
    "truncated": "invalid JSON",
    "not_coco": "missing top-level key 'annotations'",
    "other_split": "info.predict_split: the boxes of split 'val', not of 'train'",
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_pseudo_box_file_is_refused_with_a_precise_message(data_root: Path, tmp_path: Path, case: str) -> None:
    broken = _break(_valid_coco(data_root), case)
    path = tmp_path / "bad.json"
    path.write_text(broken if isinstance(broken, str) else json.dumps(broken))
    with pytest.raises(PseudoBoxFileError) as info:
        read_pseudo_boxes(path, data_root / "metadata" / "train", class_names=CLASS_NAMES)
    assert str(path) in str(info.value)
    assert BAD_CASES[case] in str(info.value)
    if case == "other_split":
        assert info.value.problems == [info.value.problems[0]]  # the one cause


def test_truncated_json_names_line_and_column(data_root: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_valid_coco(data_root), indent=1)[:-30])
    with pytest.raises(PseudoBoxFileError, match=r"line \d+: invalid JSON at column \d+: .*truncated"):
        read_pseudo_boxes(path, data_root / "metadata" / "train")


def test_valid_reference_file_is_accepted(data_root: Path, tmp_path: Path) -> None:
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(_valid_coco(data_root)))
    records = read_pseudo_boxes(path, data_root / "metadata" / "train", class_names=CLASS_NAMES)
    assert records[1].bbox == (3.0, 5.0, 225.0, 56.0) and records[1].size == (448, 112)


@pytest.mark.slow
def test_ddp_two_ranks_write_their_chunks_and_rank0_merges_the_same_file(data_root: Path, tmp_path: Path) -> None:
    single = _generate(data_root, tmp_path / "single" / "boxes.json")
    ddp = {**TRAINER, "devices": 2, "strategy": "ddp_spawn"}
    out = tmp_path / "ddp" / "boxes.json"
    generate_pseudo_boxes(StandInClassifier(), _dm(data_root), out, threshold=0.5, chunk_size=4, trainer_kwargs=ddp)
    assert out.read_bytes() == single.read_bytes()
    assert quality_path(out).read_bytes() == quality_path(single).read_bytes()
    # one chunk for two processes (a split smaller than a chunk per rank, or a resumed run's last chunk): the idle
    # rank waits (before: "`DataLoader` within local rank has zero length", a traceback per process)
    one = tmp_path / "one_chunk" / "boxes.json"
    generate_pseudo_boxes(StandInClassifier(), _dm(data_root), one, threshold=0.5, chunk_size=10, trainer_kwargs=ddp)
    assert one.read_bytes() == single.read_bytes()


def test_real_classifier_predict_step_feeds_the_writer(data_root: Path, tmp_path: Path) -> None:
    from cream_pl.models.classifier import WSOLClassifier

    model = WSOLClassifier(num_classes=2, backbone="efficientnet_lite0", pretrained=False, num_media_images=0)
    for source in ("cream", "cam"):  # 64 px inputs keep it fast; the maps are still prepared at 224
        dm = WSOLDataModule(str(data_root), batch_size=3, eval_size=64)
        out = generate_pseudo_boxes(model, dm, tmp_path / f"{source}.json", source=source, threshold=0.3,
                                    chunk_size=6, trainer_kwargs=TRAINER)
        records = read_pseudo_boxes(out, data_root / "metadata" / "train", class_names=CLASS_NAMES)
        assert len(records) == 10 and all(r.bbox[2] > 0 and r.bbox[3] > 0 for r in records)


@pytest.mark.slow
def test_cli_end_to_end_with_a_real_classifier_checkpoint(data_root: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from cream_pl.cli import main
    from cream_pl.models.classifier import WSOLClassifier

    model = WSOLClassifier(num_classes=2, backbone="efficientnet_lite0", pretrained=False, num_media_images=0)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=1, num_sanity_val_steps=0, logger=False,
                         enable_checkpointing=False, default_root_dir=tmp_path, **TRAINER)
    lite = (EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD)
    trainer.fit(model, datamodule=WSOLDataModule(str(data_root), batch_size=4, crop_size=64, resize_size=72,
                                                 mean=lite[0], std=lite[1]))
    tau = float(model.val_best_threshold[model.method_names.index("cream")])
    assert math.isfinite(tau)  # the val run stored τ*
    ckpt = tmp_path / "classifier.ckpt"
    trainer.save_checkpoint(ckpt)
    assert checkpoint_normalisation(ckpt) == lite  # the CLI feeds the classifier what it was trained on
    out = tmp_path / "boxes.json"
    argv = ["pseudo-boxes", "--ckpt", str(ckpt), "--data", str(data_root), "--out", str(out), "--batch-size", "5",
            "--num-workers", "0", "--accelerator", "cpu", "--devices", "1", "--chunk-size", "5"]
    assert main(argv) == 0
    coco = COCO(str(out))
    assert len(coco.getAnnIds()) == 10 and json.loads(out.read_text())["info"]["threshold"] == tau
    assert 0.0 <= json.loads(quality_path(out).read_text())["mean_iou"] <= 1.0
    read_pseudo_boxes(out, data_root / "metadata" / "train", class_names=CLASS_NAMES)
    assert main([*argv, "--source", "cam", "--threshold", "0.2", "--overwrite"]) == 0
    assert json.loads(out.read_text())["info"]["source"] == "cam"
    import cream_pl.pseudo_boxes.from_checkpoint as from_checkpoint

    def no_val_pass(*args: Any, **kwargs: Any) -> float:
        raise AssertionError("the val pass ran before the output was checked")

    with monkeypatch.context() as m:  # another input size: before, refused only after its val pass (minutes at 448)
        m.setattr(from_checkpoint, "choose_threshold_on_val", no_val_pass)
        capsys.readouterr()
        assert main([*argv, "--source", "cam", "--input-size", "96"]) == 2
        assert "holds the pseudo boxes of another run (input_size: file has 224, this run has 96)" in \
            capsys.readouterr().err
    from cream_pl.pipelines.regressor_train import main as train_regressor_main

    reg = tmp_path / "reg"
    assert train_regressor_main(["--pseudo-boxes", str(out), "--data", str(data_root), "--out", str(reg),
                                 "--classifier-ckpt", str(ckpt), "--no-pretrained", "--max-epochs", "1",
                                 "--batch-size", "5", "--input-size", "64", "--num-workers", "0",
                                 "--accelerator", "cpu", "--devices", "1"]) == 0
    assert "test/reg/top1_loc" in json.loads((reg / "regressor_metrics.json").read_text())


def test_keep_shards_keeps_the_shard_folder_and_a_changed_run_recomputes(data_root: Path, tmp_path: Path) -> None:
    out = _generate(data_root, tmp_path / "boxes.json", keep_shards=True)
    assert sorted(p.name for p in (tmp_path / "boxes.json.shards").glob("chunk_*.json")) == [
        "chunk_000000.json", "chunk_000001.json", "chunk_000002.json"]
    out = _generate(data_root, tmp_path / "other.json")
    assert not (tmp_path / "other.json.shards").exists()
    model = StandInClassifier()
    before = out.read_bytes()
    with pytest.raises(UserValueError, match="another run.*threshold"):  # another τ: never a silent replacement
        _generate(data_root, out, model=model, threshold=0.3)
    assert model.predicted_images == 0 and out.read_bytes() == before
    _generate(data_root, out, model=model, threshold=0.3, overwrite=True)  # what --overwrite is for
    assert model.predicted_images == 10
    assert json.loads(out.read_text())["info"]["threshold"] == 0.3


def test_a_finished_file_of_other_data_at_the_same_root_is_never_returned(data_root: Path, tmp_path: Path) -> None:
    """Before: a dataset regenerated at the same root (other ids, labels or sizes) got the earlier dataset's finished
    file back, its boxes of other images; the split's metadata is now in the file's fingerprint."""
    import shutil

    root = Path(shutil.copytree(data_root, tmp_path / "data"))
    out = _generate(root, tmp_path / "boxes.json")
    assert json.loads(out.read_text())["info"]["data_sha1"]
    model = StandInClassifier()
    _generate(root, out, model=model)  # the same data: the finished file is kept, nothing predicted
    assert model.predicted_images == 0
    labels = root / "metadata" / "train" / "class_labels.txt"
    lines = labels.read_text().splitlines()
    first_id, first_label = lines[0].split(",")
    labels.write_text("\n".join([f"{first_id},{1 - int(first_label)}", *lines[1:]]))  # another label: other maps
    before = out.read_bytes()
    with pytest.raises(UserValueError, match="another run.*data_sha1"):
        _generate(root, out, model=model)
    assert model.predicted_images == 0 and out.read_bytes() == before
    info = json.loads(before)  # a file of before the data hash is recomputed, not refused
    del info["info"]["data_sha1"]
    out.write_text(json.dumps(info))
    _generate(root, out, model=model)
    assert model.predicted_images == 10 and json.loads(out.read_text())["info"]["data_sha1"]


def test_threshold_recomputed_on_val_at_another_input_size(data_root: Path) -> None:
    # a stored 224 τ* is not reused for pseudo boxes at another input size: val is scored again
    model = StandInClassifier(tau=0.25)
    assert choose_threshold_on_val(model, _dm(data_root), trainer_kwargs=TRAINER, recompute=True) == pytest.approx(0.37)


@pytest.mark.parametrize("case", ["wrong_size", "unknown_file"])
def test_a_refused_image_entry_is_reported_once(data_root: Path, tmp_path: Path, case: str) -> None:
    """Before: its annotation was also "unknown image id k" and its image "has no entry in 'images'"."""
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_break(_valid_coco(data_root), case)))
    with pytest.raises(PseudoBoxFileError) as info:
        read_pseudo_boxes(path, data_root / "metadata" / "train", class_names=CLASS_NAMES)
    problems = info.value.problems
    assert len(problems) == (1 if case == "wrong_size" else 2), problems  # unknown_file: its image is then missing
    assert not any("unknown image id" in p for p in problems), problems
