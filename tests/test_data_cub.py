"""CUB-200-2011 converter on a tiny fake CUB tree."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cream_pl.cli import main
from cream_pl.data import WSOLDataModule
from cream_pl.data.cub import convert_cub
from cream_pl.data.images import ImageFileError
from cream_pl.data.metadata import (
    MetadataError,
    SampleRecord,
    read_class_names,
    read_split,
    write_class_names,
    write_split,
)

CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
# (path, class 1-based, is_train, x y w h, image size). The first and third rows are CUB's images 1 and 3 with
# their real bounding_boxes.txt lines; wsolevaluation's metadata/CUB/test/localization.txt has them as
# "...0046_18.jpg,60,27,385,331" and "...0002_55.jpg,14,112,402,298" (golden values).
IMAGES = [
    ("001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg", 1, 0, "60.0 27.0 325.0 304.0", (500, 335)),
    ("001.Black_footed_Albatross/Black_Footed_Albatross_0009_34.jpg", 1, 1, "1.0 2.0 30.0 40.0", (64, 48)),
    ("001.Black_footed_Albatross/Black_Footed_Albatross_0002_55.jpg", 1, 0, "14.0 112.0 388.0 186.0", (500, 336)),
    ("001.Black_footed_Albatross/Black_Footed_Albatross_0074_59.jpg", 1, 1, "0.0 0.0 63.0 47.0", (64, 48)),
    ("002.Laysan_Albatross/Laysan_Albatross_0002_1027.jpg", 2, 1, "5.5 6.7 20.2 10.9", (40, 30)),
    ("002.Laysan_Albatross/Laysan_Albatross_0003_1033.jpg", 2, 1, "0.0 0.0 10.0 10.0", (40, 30)),
    ("002.Laysan_Albatross/Laysan_Albatross_0082_524.jpg", 2, 0, "1.0 1.0 10.0 10.0", (40, 30)),
    ("003.Sooty_Albatross/Sooty_Albatross_0003_1078.jpg", 3, 1, "2.0 3.0 4.0 5.0", (32, 32)),
    ("003.Sooty_Albatross/Sooty_Albatross_0005_796342.jpg", 3, 1, "2.0 3.0 4.0 5.0", (32, 32)),
    ("003.Sooty_Albatross/Sooty_Albatross_0044_1105.jpg", 3, 0, "2.0 3.0 4.0 5.0", (32, 32)),
]


def make_cub(root: Path, rows: list[tuple] = IMAGES) -> Path:
    cub = root / "CUB_200_2011"
    for i, (rel, _, _, _, (w, h)) in enumerate(rows):
        (cub / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((h, w, 3), i * 20, np.uint8)).save(cub / "images" / rel)
    (cub / "images.txt").write_text("".join(f"{i} {r[0]}\n" for i, r in enumerate(rows, 1)))
    (cub / "image_class_labels.txt").write_text("".join(f"{i} {r[1]}\n" for i, r in enumerate(rows, 1)))
    (cub / "train_test_split.txt").write_text("".join(f"{i} {r[2]}\n" for i, r in enumerate(rows, 1)))
    (cub / "bounding_boxes.txt").write_text("".join(f"{i} {r[3]}\n" for i, r in enumerate(rows, 1)))
    (cub / "classes.txt").write_text("".join(f"{k} {c}\n" for k, c in enumerate(CLASSES, 1)))
    return cub


def test_converts_to_the_benchmark_format(tmp_path: Path) -> None:
    cub = make_cub(tmp_path)
    summary = convert_cub(cub, tmp_path / "out")
    assert (summary.num_classes, summary.num_train, summary.num_val, summary.num_test) == (3, 6, 0, 4)
    assert summary.num_clipped_boxes == 0
    test_dir = tmp_path / "out/metadata/test"
    assert (test_dir / "localization.txt").read_text().split("\n")[:2] == [
        "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg,60,27,385,331",
        "001.Black_footed_Albatross/Black_Footed_Albatross_0002_55.jpg,14,112,402,298",
    ]
    assert (test_dir / "image_sizes.txt").read_text().split("\n")[0].endswith(",500,335")  # from the image file
    test = read_split(test_dir, num_classes=3)
    train = read_split(tmp_path / "out/metadata/train", num_classes=3)
    assert [s.image_id for s in test.samples] == [r[0] for r in IMAGES if r[2] == 0]  # images.txt order
    assert [s.label for s in train.samples] == [r[1] - 1 for r in IMAGES if r[2] == 1]  # 0-based
    assert train.samples[2].boxes == ((5, 6, 25, 17),)  # int(5.5), int(6.7), int(5.5 + 20.2), int(6.7 + 10.9)
    assert not (tmp_path / "out/metadata/val").exists()
    assert read_class_names(tmp_path / "out/class_names.txt") == CLASSES
    link = tmp_path / "out/images"
    assert link.is_symlink() and Path(os.readlink(link)) == (cub / "images").resolve()
    assert not (test_dir / "localization.txt").read_text().endswith("\n")


def test_box_past_the_border_is_clipped_and_counted(tmp_path: Path) -> None:
    assert convert_cub(make_cub(tmp_path / "a"), tmp_path / "a/out", link_images=False).num_clipped_boxes == 0
    assert not (tmp_path / "a/out/images").exists()
    assert read_split(tmp_path / "a/out/metadata/train").samples[1].boxes == ((0, 0, 63, 47),)  # whole image
    rows = list(IMAGES)
    rows[3] = (rows[3][0], 1, 1, "0.0 0.0 64.0 48.0", (64, 48))  # x + w = W: one past the last pixel
    summary = convert_cub(make_cub(tmp_path / "b", rows), tmp_path / "b/out")
    # never needed on the real CUB (all its boxes end inside the image); we clip to W - 1 and count it
    assert summary.num_clipped_boxes == 1
    assert read_split(tmp_path / "b/out/metadata/train").samples[1].boxes == ((0, 0, 63, 47),)


def test_val_carved_from_train(tmp_path: Path) -> None:
    cub = make_cub(tmp_path)
    a = convert_cub(cub, tmp_path / "a", val_per_class=1, seed=7)
    convert_cub(cub, tmp_path / "b", val_per_class=1, seed=7)
    assert (a.num_train, a.num_val, a.num_test) == (3, 3, 4)
    val = read_split(tmp_path / "a/metadata/val")
    train = read_split(tmp_path / "a/metadata/train")
    assert sorted(s.label for s in val.samples) == [0, 1, 2]
    assert not {s.image_id for s in val.samples} & {s.image_id for s in train.samples}
    assert (tmp_path / "a/metadata/val/image_ids.txt").read_text() == (tmp_path / "b/metadata/val/image_ids.txt").read_text()
    with pytest.raises(ValueError, match="class 0 has only 2 train images"):
        convert_cub(cub, tmp_path / "c", val_per_class=2)


def test_datamodule_reads_the_converted_dataset(tmp_path: Path) -> None:
    convert_cub(make_cub(tmp_path), tmp_path / "out", val_per_class=1)
    dm = WSOLDataModule(str(tmp_path / "out"), batch_size=4)
    assert dm.num_classes == 3 and dm.class_names[1] == "002.Laysan_Albatross"
    batch = next(iter(dm.test_dataloader()))
    assert batch["boxes"][0].tolist() == [[int(60 * 224 / 500), int(27 * 224 / 335), int(385 * 224 / 500),
                                           int(331 * 224 / 335)]]
    assert "mask" not in batch


def test_missing_box_line_names_images_txt_line(tmp_path: Path) -> None:
    cub = make_cub(tmp_path)
    lines = (cub / "bounding_boxes.txt").read_text().splitlines()
    (cub / "bounding_boxes.txt").write_text("\n".join(lines[:4] + lines[5:]))
    with pytest.raises(MetadataError, match=r"images.txt:5: image id 5 .* has no line in bounding_boxes.txt"):
        convert_cub(cub, tmp_path / "out")


@pytest.mark.parametrize("name,line,content,words", [
    ("bounding_boxes.txt", 2, "2 1.0 2.0 30.0", "expected 5"),
    ("bounding_boxes.txt", 2, "2 1.0 2.0 x 40.0", "must be numbers"),
    ("bounding_boxes.txt", 2, "2 1.0 2.0 -3.0 40.0", "invalid box"),
    ("image_class_labels.txt", 3, "3 4", "not an integer in [1, 3]"),
    ("train_test_split.txt", 1, "1 2", "expected 1 (train) or 0 (test)"),
    ("images.txt", 2, "1 001.Black_footed_Albatross/x.jpg", "duplicate image id 1"),
])
def test_bad_cub_lines_name_file_and_line(tmp_path: Path, name: str, line: int, content: str, words: str) -> None:
    cub = make_cub(tmp_path)
    lines = (cub / name).read_text().splitlines()
    lines[line - 1] = content
    (cub / name).write_text("\n".join(lines))
    with pytest.raises(MetadataError) as info:
        convert_cub(cub, tmp_path / "out")
    assert str(info.value).startswith(f"{cub / name}:{line}: ") and words in str(info.value)


def test_missing_image_file_is_named(tmp_path: Path) -> None:
    cub = make_cub(tmp_path)
    (cub / "images" / IMAGES[4][0]).unlink()
    with pytest.raises(ImageFileError, match=r"Laysan_Albatross_0002_1027.jpg: file not found \(images.txt:5\)$"):
        convert_cub(cub, tmp_path / "out")


def test_missing_cub_file(tmp_path: Path) -> None:
    cub = make_cub(tmp_path)
    (cub / "train_test_split.txt").unlink()
    with pytest.raises(MetadataError, match="train_test_split.txt: file not found"):
        convert_cub(cub, tmp_path / "out")


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cub = make_cub(tmp_path)
    assert main(["data", "cub", "--src", str(cub), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "3 classes, train 6, val 0, test 4 images" in out and "CUBV2" in out and "test: ok" in out
    assert main(["data", "cub", "--src", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o2")]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize("damage,where", [
    (lambda cub: (cub / "images.txt").write_text("".join((cub / "images.txt").read_text().splitlines(True)[:8])),
     "image_class_labels.txt:9: image id 9 is not in images.txt (which lists 8 images)"),  # a copy cut short
    (lambda cub: (cub / "bounding_boxes.txt").write_text((cub / "bounding_boxes.txt").read_text() + "11 1 1 5 5\n"),
     "bounding_boxes.txt:11: image id 11 is not in images.txt"),
])
def test_image_id_missing_from_images_txt_is_refused(tmp_path: Path, damage, where: str) -> None:
    cub = make_cub(tmp_path)
    damage(cub)
    with pytest.raises(MetadataError) as info:  # not a conversion of the images.txt subset
        convert_cub(cub, tmp_path / "out")
    assert str(info.value).startswith(str(cub / where))
    assert not (tmp_path / "out").exists()


def test_space_in_image_path_is_kept(tmp_path: Path) -> None:
    spaced = "001.Black footed Albatross"
    rows = [(r[0].replace(CLASSES[0], spaced), *r[1:]) for r in IMAGES]
    cub = make_cub(tmp_path, rows)
    (cub / "classes.txt").write_text("".join(f"{k} {c}\n" for k, c in enumerate([spaced, *CLASSES[1:]], 1)))
    convert_cub(cub, tmp_path / "out")
    ids = [s.image_id for s in read_split(tmp_path / "out/metadata/test").samples]
    assert ids[0] == f"{spaced}/Black_Footed_Albatross_0046_18.jpg"  # the comma-separated format holds spaces
    assert read_class_names(tmp_path / "out/class_names.txt")[0] == spaced
    assert main(["data", "check", str(tmp_path / "out"), "--files"]) == 0
    assert next(iter(WSOLDataModule(str(tmp_path / "out"), batch_size=2).test_dataloader()))["image"].shape[0] == 2


@pytest.mark.parametrize("out,words", [
    ("CUB_200_2011", "--out is the --src folder"),
    ("CUB_200_2011/images", "--out lies inside --src"),
    ("CUB_200_2011/out", "--out lies inside --src"),
])
def test_out_inside_src_is_refused(tmp_path: Path, out: str, words: str) -> None:
    cub = make_cub(tmp_path)
    with pytest.raises(ValueError, match=words):
        convert_cub(cub, tmp_path / out, link_images=False)
    assert sorted(p.name for p in (cub / "images").iterdir()) == sorted(CLASSES)  # nothing written into CUB
    assert not (cub / "out").exists() and not (cub / "metadata").exists()


def test_src_inside_a_place_of_out_is_refused(tmp_path: Path) -> None:
    cub = make_cub(tmp_path / "data/images")  # an --overwrite of a synthetic dataset would remove data/images
    with pytest.raises(ValueError, match=r"--src lies in .*data/images, which `data cub` writes"):
        convert_cub(cub, tmp_path / "data", overwrite=True)
    assert (cub / "images.txt").is_file()
    convert_cub(make_cub(tmp_path / "cub"), tmp_path / "cub")  # cub/CUB_200_2011 beside the dataset is fine
    assert read_split(tmp_path / "cub/metadata/train").samples


def _write_split(split_dir: Path, ids_labels: list[tuple[str, int]]) -> None:
    write_split(split_dir, [SampleRecord(i, label, (50, 40), ((1, 1, 9, 9),)) for i, label in ids_labels])


def _other_dataset(out: Path, val: list[tuple[str, int]] | None) -> None:
    """A dataset that `data cub` did not write (metadata by hand), with a val of ``val`` (``(id, label)``)."""
    _write_split(out / "metadata/train", [("n01/a.jpeg", 1)])
    _write_split(out / "metadata/test", [("n01/b.jpeg", 1)])
    if val is not None:
        _write_split(out / "metadata/val", val)
    write_class_names(out / "class_names.txt", [f"c{k}" for k in range(5)])


def test_overwrite_keeps_a_cub_val_only(tmp_path: Path) -> None:
    cub = make_cub(tmp_path)
    cubv2 = [("001.Black_footed_Albatross/30107316117.jpg", 0), ("003.Sooty_Albatross/30804529724.jpg", 2)]
    _write_split(tmp_path / "out/metadata/val", cubv2)  # the documented way: CUBV2's val put in by hand
    assert convert_cub(cub, tmp_path / "out").num_val == 0
    _other_dataset(tmp_path / "wsol", cubv2)  # wsolevaluation's CUB metadata copied by hand, its CUBV2 val too
    convert_cub(cub, tmp_path / "wsol", overwrite=True)
    for out in ("out", "wsol"):  # new images, but in CUB's class folders with their labels: kept
        assert [(s.image_id, s.label) for s in read_split(tmp_path / out / "metadata/val").samples] == cubv2

    _other_dataset(tmp_path / "ils", [("val2/3/0.jpeg", 3)])
    with pytest.raises(ValueError, match=r"metadata/val \(class_labels.txt:1: image 'val2/3/0.jpeg' is not in a class "
                       r"folder of --src\)"):
        convert_cub(cub, tmp_path / "ils", link_images=False)
    summary = convert_cub(cub, tmp_path / "ils", link_images=False, overwrite=True)
    assert summary.num_val == 0 and not (tmp_path / "ils/metadata/val").exists()  # not a mix of two datasets
    assert read_class_names(tmp_path / "ils/class_names.txt") == CLASSES
    # a val alone is checked too: without --overwrite it is refused, not kept beside CUB's train and test
    _write_split(tmp_path / "v/metadata/val", [("002.Laysan_Albatross/new.jpg", 0)])  # the class of 001., not 002.
    with pytest.raises(ValueError, match=r"label '0' is not the class of 002.Laysan_Albatross in --src"):
        convert_cub(cub, tmp_path / "v")


def test_no_link_onto_another_datasets_images_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cub = make_cub(tmp_path)
    _other_dataset(tmp_path / "ils", [("val2/3/0.jpeg", 3)])
    (tmp_path / "ils/images/n01").mkdir(parents=True)
    (tmp_path / "ils/images/n01/a.jpeg").write_bytes(b"x")
    args = ["data", "cub", "--src", str(cub), "--out", str(tmp_path / "ils"), "--overwrite"]
    assert main(args) == 2
    assert "pass --no-link if it holds the CUB images" in capsys.readouterr().err
    assert main([*args, "--no-link"]) == 2  # following the advice: CUB's metadata over ILSVRC's images is a mix too
    err = capsys.readouterr().err
    assert f"has no {IMAGES[0][0]} (images.txt:1): with --no-link it must hold the CUB images" in err
    assert len(err.strip().splitlines()) == 1
    assert read_split(tmp_path / "ils/metadata/val").samples[0].image_id == "val2/3/0.jpeg"  # left as it was
