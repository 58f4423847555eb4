"""WSOLDataModule: batch format, boxes and masks aligned after the transforms, workers, Lightning, bad files."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from cream_pl.data import WSOLDataModule, wsol_collate
from cream_pl.data.images import ImageFileError
from cream_pl.data.metadata import MaskRecord, SampleRecord, write_class_names, write_split
from cream_pl.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_box_eval_transform,
    build_box_train_transform,
    build_train_transform,
)

os.environ.setdefault("WANDB_MODE", "disabled")

OBJECT_RGB = (230, 20, 20)
BACKGROUND_RGB = (20, 20, 230)
# (width, height, inclusive box) of the test images: non-square, odd sizes, boxes touching the border.
LAYOUTS = [(300, 180, (40, 30, 199, 149)), (97, 211, (0, 5, 60, 210)), (224, 224, (10, 10, 223, 100)),
           (512, 64, (300, 0, 511, 31))]


def _paint(width: int, height: int, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    img = np.empty((height, width, 3), np.uint8)
    img[:] = BACKGROUND_RGB
    x0, y0, x1, y1 = box
    img[y0:y1 + 1, x0:x1 + 1] = OBJECT_RGB
    mask = np.zeros((height, width), np.uint8)
    mask[y0:y1 + 1, x0:x1 + 1] = 255
    return img, mask


def build_dataset(root: Path, splits: tuple[str, ...] = ("train", "val", "test"), ignore: bool = True,
                  num_classes: int = 2) -> Path:
    """Rectangles of one colour on another; boxes and masks (with an ignore band to the right) for every split."""
    for split in splits:
        records = []
        for k, (w, h, box) in enumerate(LAYOUTS):
            image_id = f"{split}/{k}.png"
            img, mask = _paint(w, h, box)
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            (root / "masks" / split).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "images" / image_id), img[:, :, ::-1])
            cv2.imwrite(str(root / "masks" / f"{split}/{k}_m.png"), mask)
            ign = np.zeros_like(mask)
            x0, y0, x1, y1 = box
            ign[y0:y1 + 1, x0:min(x1 + 9, w)] = 255  # overlaps the object: only the part outside counts
            cv2.imwrite(str(root / "masks" / f"{split}/{k}_i.png"), ign)
            records.append(SampleRecord(image_id, k % num_classes, (w, h), (box,),
                                        MaskRecord((f"{split}/{k}_m.png",), f"{split}/{k}_i.png" if ignore else None)))
        write_split(root / "metadata" / split, records)
    return root


def _unnormalise(image: torch.Tensor) -> np.ndarray:
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return ((image * std + mean) * 255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


def test_eval_batch_format_boxes_and_masks(tmp_path: Path) -> None:
    dm = WSOLDataModule(str(build_dataset(tmp_path)), batch_size=4)
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert set(batch) == {"image", "label", "index", "image_id", "orig_size", "boxes", "mask"}
    assert batch["image"].dtype == torch.float32 and tuple(batch["image"].shape) == (4, 3, 224, 224)
    assert batch["label"].dtype == torch.int64 and batch["label"].tolist() == [0, 1, 0, 1]
    assert batch["index"].tolist() == [0, 1, 2, 3]
    assert batch["image_id"] == [f"test/{k}.png" for k in range(4)]
    assert batch["orig_size"].dtype == torch.int64
    assert batch["orig_size"].tolist() == [[w, h] for w, h, _ in LAYOUTS]
    assert batch["mask"].dtype == torch.uint8 and tuple(batch["mask"].shape) == (4, 224, 224)
    for k, (w, h, (x0, y0, x1, y1)) in enumerate(LAYOUTS):
        boxes = batch["boxes"][k]
        assert boxes.dtype == torch.int64 and tuple(boxes.shape) == (1, 4)
        # the protocol's truncation, written out by hand
        assert boxes[0].tolist() == [int(x0 * 224 / w), int(y0 * 224 / h), int(x1 * 224 / w), int(y1 * 224 / h)]
        mask = batch["mask"][k].numpy()
        # nearest resize: eval pixel (i, j) shows source pixel (floor(i * H / 224), floor(j * W / 224))
        rows, cols = (np.arange(224) * h / 224).astype(int), (np.arange(224) * w / 224).astype(int)
        fg = np.zeros((h, w), bool)
        fg[y0:y1 + 1, x0:x1 + 1] = True
        np.testing.assert_array_equal(mask == 1, fg[rows][:, cols])
        # and the mask agrees with the truncated box up to one source pixel's width
        ys, xs = np.nonzero(mask == 1)
        bx0, by0, bx1, by1 = boxes[0].tolist()
        tol_x, tol_y = int(np.ceil(224 / w)), int(np.ceil(224 / h))
        assert 0 <= xs.min() - bx0 <= tol_x and 0 <= ys.min() - by0 <= tol_y
        assert 0 <= xs.max() - bx1 <= tol_x and 0 <= ys.max() - by1 <= tol_y
        assert set(np.unique(mask).tolist()) <= {0, 1, 255}
        ignore_cols = np.nonzero((mask == 255).any(0))[0]
        if x1 < w - 1:  # ignore band right of the object, never on it
            assert ignore_cols.min() == xs.max() + 1
            assert not ((mask == 255) & (mask == 1)).any()
        else:
            assert len(ignore_cols) == 0
        # the object's pixels in the squashed image are where the mask says (away from the blurred border)
        img = _unnormalise(batch["image"][k])
        inner = cv2.erode((mask == 1).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        outer = ~cv2.dilate((mask == 1).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        assert np.abs(img[inner].astype(int) - OBJECT_RGB).max() <= 2
        assert np.abs(img[outer].astype(int) - BACKGROUND_RGB).max() <= 2


def test_mask_without_ignore_path(tmp_path: Path) -> None:
    dm = WSOLDataModule(str(build_dataset(tmp_path, ("test",), ignore=False)), batch_size=4)
    batch = next(iter(dm.test_dataloader()))
    assert set(np.unique(batch["mask"].numpy()).tolist()) == {0, 1}


def test_train_batches_and_predict_split(tmp_path: Path) -> None:
    dm = WSOLDataModule(str(build_dataset(tmp_path)), batch_size=3, resize_size=40, crop_size=32)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"image", "label", "index", "image_id", "orig_size"}
    assert tuple(batch["image"].shape) == (3, 3, 32, 32)
    dm.setup("predict")
    pred = list(dm.predict_dataloader())
    assert [i for b in pred for i in b["image_id"]] == [f"train/{k}.png" for k in range(4)]  # eval order
    assert tuple(pred[0]["image"].shape[-2:]) == (224, 224) and "boxes" in pred[0] and "mask" in pred[0]
    assert dm.eval_dataset("val")[0]["image_id"] == "val/0.png"


def test_train_transform_keeps_image_mask_and_boxes_in_sync(tmp_path: Path) -> None:
    w, h, box = 300, 180, (40, 30, 199, 149)
    img, mask = _paint(w, h, box)
    for name in ("crop", "resized_crop"):
        t = build_train_transform(256, 224, name, with_boxes=True)
        t.set_random_seed(0)
        flips = set()
        for _ in range(12):
            x0, y0, x1, y1 = box
            out = t(image=img, mask=mask, bboxes=[(x0, y0, x1 + 1, y1 + 1)], box_labels=[0])
            m = out["mask"].numpy() > 127
            assert set(np.unique(out["mask"].numpy()).tolist()) <= {0, 255}  # nearest: stays binary
            if not m.any():
                assert len(out["bboxes"]) == 0
                continue
            ys, xs = np.nonzero(m)
            bx0, by0, bx1, by1 = out["bboxes"][0]
            assert abs(bx0 - xs.min()) <= 1 and abs(by0 - ys.min()) <= 1
            assert abs(bx1 - (xs.max() + 1)) <= 1 and abs(by1 - (ys.max() + 1)) <= 1
            red = _unnormalise(out["image"])
            inner = cv2.erode(m.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
            assert np.abs(red[inner].astype(int) - OBJECT_RGB).max() <= 3
            flips.add(bool(xs.min() > 224 - xs.max()))
        assert len(flips) == 2 or name == "resized_crop"  # the flip happens (box is left of centre before it)


def test_box_transforms_keep_the_box_on_the_object() -> None:
    w, h, box = 300, 180, (40, 30, 199, 149)
    img, mask = _paint(w, h, box)
    x0, y0, x1, y1 = box
    train = build_box_train_transform(64)
    train.set_random_seed(1)
    for t in (train, build_box_eval_transform(64)):
        for _ in range(6):
            out = t(image=img, mask=mask, bboxes=[(x0, y0, x1 + 1, y1 + 1)], box_labels=[0])
            ys, xs = np.nonzero(out["mask"].numpy() > 127)  # the whole box survives the crop
            assert len(out["bboxes"]) == 1
            bx0, by0, bx1, by1 = out["bboxes"][0]
            assert abs(bx0 - xs.min()) <= 1 and abs(by0 - ys.min()) <= 1
            assert abs(bx1 - (xs.max() + 1)) <= 1 and abs(by1 - (ys.max() + 1)) <= 1


def test_workers_draw_different_augmentations(tmp_path: Path) -> None:
    root = build_dataset(tmp_path, ("train",))
    for k in range(4):  # the same image everywhere: only the augmentation differs
        cv2.imwrite(str(root / "images" / f"train/{k}.png"), cv2.imread(str(root / "images/train/0.png")))
    write_split(root / "metadata/train", [SampleRecord(f"train/{k}.png", 0, (300, 180), ((40, 30, 199, 149),))
                                          for k in range(4)])
    dm = WSOLDataModule(str(root), batch_size=1, num_workers=2, num_classes=2)
    loader = DataLoader(dm.train_dataset(), batch_size=1, num_workers=2, collate_fn=wsol_collate)
    images = [b["image"] for b in loader]
    assert len(images) == 4
    # workers 0 and 1 serve samples (0, 2) and (1, 3); unseeded copies of one generator would repeat
    assert not torch.equal(images[0], images[1]) or not torch.equal(images[2], images[3])
    assert len({tuple(i.flatten()[:: 997].tolist()) for i in images}) > 1
    batches = list(dm.train_dataloader())  # persistent workers through the module's own loader
    assert sum(len(b["image_id"]) for b in batches) == 4


def test_datasets_pickle(tmp_path: Path) -> None:
    dm = WSOLDataModule(str(build_dataset(tmp_path, ("train", "test"))), batch_size=2)
    for ds in (dm.train_dataset(), dm.eval_dataset("test")):
        clone = pickle.loads(pickle.dumps(ds))
        assert clone[1]["image_id"] == ds[1]["image_id"]
    pickle.loads(pickle.dumps(dm))


def test_num_classes_and_class_names(tmp_path: Path) -> None:
    root = build_dataset(tmp_path, ("train", "test"))
    dm = WSOLDataModule(str(root))
    assert dm.num_classes == 2 and dm.class_names == ["0", "1"]  # inferred from the labels
    write_class_names(root / "class_names.txt", ["cat", "dog", "eel"])
    dm = WSOLDataModule(str(root))
    assert dm.num_classes == 3 and dm.class_names == ["cat", "dog", "eel"]
    with pytest.raises(ValueError, match="has 3 classes but num_classes=5"):
        _ = WSOLDataModule(str(root), num_classes=5).class_names


def test_label_out_of_range_for_class_names(tmp_path: Path) -> None:
    root = build_dataset(tmp_path, ("test",), num_classes=4)
    write_class_names(root / "class_names.txt", ["a", "b"])
    with pytest.raises(ValueError, match=r"class_labels.txt:3: label 2 is out of range \[0, 2\)"):
        WSOLDataModule(str(root)).setup("test")


def test_constructor_checks(tmp_path: Path) -> None:
    root = build_dataset(tmp_path, ("test",))
    with pytest.raises(ValueError, match="on_bad_sample"):
        WSOLDataModule(str(root), on_bad_sample="warn")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="crop_size"):
        WSOLDataModule(str(root), resize_size=200, crop_size=224)
    with pytest.raises(ValueError, match="unknown train transform"):
        WSOLDataModule(str(root), train_transform="mosaic")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="metadata directory"):
        WSOLDataModule(str(tmp_path / "nowhere"))
    dm = WSOLDataModule(str(root))
    assert dm.val_dataloader() == []  # no val split: no validation
    with pytest.raises(FileNotFoundError, match="split 'train' not found"):
        dm.train_dataloader()


# ---------------------------------------------------------------- unusual but valid images


def test_grayscale_rgba_and_16bit_images_load(tmp_path: Path) -> None:
    root = build_dataset(tmp_path, ("test",))
    w, h, box = LAYOUTS[0]
    img, _ = _paint(w, h, box)
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(root / "images/test/0.png"), gray)
    cv2.imwrite(str(root / "images/test/1.png"),
                np.dstack([_paint(*LAYOUTS[1])[0][:, :, ::-1], np.full(LAYOUTS[1][1::-1], 128, np.uint8)]))
    cv2.imwrite(str(root / "images/test/2.png"), _paint(*LAYOUTS[2])[0][:, :, ::-1].astype(np.uint16) * 257)
    dm = WSOLDataModule(str(root), batch_size=4)
    batch = next(iter(dm.test_dataloader()))
    assert tuple(batch["image"].shape) == (4, 3, 224, 224)
    g = _unnormalise(batch["image"][0])
    assert np.abs(g[112, 100].astype(int) - gray[90, 130]).max() <= 2  # replicated gray inside the object
    for k in (1, 2):  # alpha dropped, 16 bits scaled: the same colours as the 8-bit RGB original
        mask = batch["mask"][k].numpy() == 1
        inner = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        assert np.abs(_unnormalise(batch["image"][k])[inner].astype(int) - OBJECT_RGB).max() <= 2


# ---------------------------------------------------------------- bad image files


def _break(root: Path, kind: str, rel: str = "images/test/2.png") -> Path:
    path = root / rel
    if kind == "missing":
        path.unlink()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = path.read_bytes()
        noisy = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        ok, buf = cv2.imencode(".png", noisy)
        data = buf.tobytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "wrong_size":
        cv2.imwrite(str(path), np.zeros((10, 10, 3), np.uint8))
    return path


@pytest.mark.parametrize("kind,words", [("missing", "file not found"), ("empty", "empty file"),
                                        ("truncated", "truncated"), ("wrong_size", "image_sizes.txt says 224x224")])
def test_bad_image_file_error_names_file_and_line(tmp_path: Path, kind: str, words: str) -> None:
    root = build_dataset(tmp_path, ("test",))
    path = _break(root, kind)
    dm = WSOLDataModule(str(root), batch_size=4, check_eval_images=False)
    dm.setup("test")  # metadata is fine; without the up-front check the file is checked when loaded
    with pytest.raises(ImageFileError) as info:
        next(iter(dm.test_dataloader()))
    msg = str(info.value)
    assert msg.startswith(f"{path}: ") and words in msg
    assert f"{root / 'metadata/test/image_ids.txt'} line 3" in msg and "'test/2.png'" in msg
    with pytest.raises(ImageFileError) as upfront:  # the default: found in setup, same one-line message
        WSOLDataModule(str(root), batch_size=4).setup("test")
    assert str(upfront.value) == msg


def test_bad_image_found_upfront_with_validate_images(tmp_path: Path) -> None:
    root = build_dataset(tmp_path, ("test",))
    path = _break(root, "truncated")
    dm = WSOLDataModule(str(root), validate_images=True)
    with pytest.raises(ImageFileError, match="truncated") as info:
        dm.setup("test")
    assert str(path) in str(info.value)


def test_missing_mask_file_error_names_mask(tmp_path: Path) -> None:
    root = build_dataset(tmp_path, ("test",))
    (root / "masks/test/1_m.png").unlink()
    dm = WSOLDataModule(str(root), batch_size=4)
    with pytest.raises(ImageFileError, match=r"masks/test/1_m.png: file not found \(image id 'test/1.png'"):
        next(iter(dm.test_dataloader()))


def test_skip_mode_drops_bad_samples_with_one_warning(tmp_path: Path) -> None:
    root = build_dataset(tmp_path, ("test",))
    _break(root, "missing", "images/test/0.png")
    _break(root, "truncated", "images/test/2.png")
    loc = root / "metadata/test/localization.txt"
    lines = loc.read_text().split("\n")
    lines[3] = "test/3.png,400,0,600,31"  # box outside the 512x64 image
    loc.write_text("\n".join(lines))
    dm = WSOLDataModule(str(root), batch_size=4, on_bad_sample="skip")
    with pytest.warns(UserWarning, match=r"split 'test': skipped 3 bad entries, kept 1 of 4") as record:
        dm.setup("test")
    assert len([w for w in record if "skipped" in str(w.message)]) == 1
    message = str(record[0].message)
    assert "images/test/0.png: file not found" in message and "truncated" in message and "localization.txt:4" in message
    batches = list(dm.test_dataloader())
    assert [i for b in batches for i in b["image_id"]] == ["test/1.png"]
    assert batches[0]["index"].tolist() == [0]


def test_skip_mode_without_validation_still_raises_on_load(tmp_path: Path) -> None:
    root = build_dataset(tmp_path, ("test",))
    _break(root, "empty")
    dm = WSOLDataModule(str(root), batch_size=4, on_bad_sample="skip", validate_images=False)
    with pytest.raises(ImageFileError, match="empty file"):
        next(iter(dm.test_dataloader()))


# ---------------------------------------------------------------- with a real Lightning Trainer


class TinyModel(pl.LightningModule):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(4, num_classes))
        self.seen: list[int] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return nn.functional.cross_entropy(self.net(batch["image"]), batch["label"])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        assert batch["mask"].shape[-2:] == (224, 224) and len(batch["boxes"]) == len(batch["image_id"])

    def predict_step(self, batch: dict, batch_idx: int) -> list[int]:
        return batch["index"].tolist()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_fit_and_predict_with_trainer(tmp_path: Path) -> None:
    dm = WSOLDataModule(str(build_dataset(tmp_path / "data")), batch_size=2, num_workers=1)
    model = TinyModel(dm.num_classes)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    out = trainer.predict(model, datamodule=dm)
    assert sorted(i for b in out for i in b) == [0, 1, 2, 3]


class RecordingModel(TinyModel):
    def __init__(self, num_classes: int, out_dir: str) -> None:
        super().__init__(num_classes)
        self.out_dir = out_dir

    def test_step(self, batch: dict, batch_idx: int) -> None:
        with open(Path(self.out_dir) / f"rank{self.global_rank}.txt", "a") as f:
            f.write("".join(f"{i}\n" for i in batch["image_id"]))


@pytest.mark.slow
def test_ddp_two_processes_split_the_data(tmp_path: Path) -> None:
    dm = WSOLDataModule(str(build_dataset(tmp_path / "data")), batch_size=2, num_workers=1, on_bad_sample="skip",
                        validate_images=True)  # global training batch 2 = 2 processes x 1
    model = RecordingModel(dm.num_classes, str(tmp_path))
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm)
    seen = [(tmp_path / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 2 and set(seen[0]).isdisjoint(seen[1])
    assert sorted(seen[0] + seen[1]) == [f"test/{k}.png" for k in range(4)]
