"""Hostile inputs to ``cream-pl data cub|synth|check``, second audit.

As in :mod:`tests.test_hostile_inputs`: real files (images written with OpenCV), real CLI calls
(``main([...])`` with ``capfd``); every bad input must end in one line on stderr naming the file
(and its line), exit status 2 (``data check``: 1, it reports problems), no traceback, and nothing
written before the input was checked.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cream_pl.cli import main as cli_main
from cream_pl.data import generate_synthetic_dataset
from cream_pl.data.cub import convert_cub
from cream_pl.data.metadata import read_split

os.environ.setdefault("WANDB_MODE", "disabled")

# the 6-image CUB tree of the audit: 2 classes x 3 images (2 train + 1 test each), 60x50 images
ROWS = [("001.A/a1.jpg", 1, 1), ("001.A/a2.jpg", 1, 1), ("001.A/a3.jpg", 1, 0),
        ("002.B/b1.jpg", 2, 1), ("002.B/b2.jpg", 2, 1), ("002.B/b3.jpg", 2, 0)]


def make_cub(root: Path) -> Path:
    cub = root / "CUB_200_2011"
    for rel, _, _ in ROWS:
        (cub / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(cub / "images" / rel), np.full((50, 60, 3), 100, np.uint8))
    (cub / "images.txt").write_text("".join(f"{i} {r[0]}\n" for i, r in enumerate(ROWS, 1)))
    (cub / "image_class_labels.txt").write_text("".join(f"{i} {r[1]}\n" for i, r in enumerate(ROWS, 1)))
    (cub / "train_test_split.txt").write_text("".join(f"{i} {r[2]}\n" for i, r in enumerate(ROWS, 1)))
    (cub / "bounding_boxes.txt").write_text("".join(f"{i} 5.0 5.0 20.0 20.0\n" for i in range(1, len(ROWS) + 1)))
    (cub / "classes.txt").write_text("1 001.A\n2 002.B\n")
    return cub


def _replace_line(path: Path, number: int, content: bytes | str) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[number - 1] = content if isinstance(content, bytes) else content.encode()
    path.write_bytes(b"\n".join(lines))


def _cli(argv: Sequence[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capfd.readouterr()
    rc = cli_main(list(argv))
    out = capfd.readouterr()
    return int(rc or 0), out.out, out.err


def assert_one_line(rc: int, out: str, err: str, *named: object, status: int = 2) -> str:
    """Exit ``status``, exactly one line (on stderr), no traceback, every ``named`` thing in it."""
    text = out + err
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert rc == status, text
    assert "Traceback" not in text, text
    assert len(lines) == 1 and lines[0] in err, f"{len(lines)} lines:\n{text}"
    for thing in named:
        assert str(thing) in lines[0], f"{thing} not named in:\n{text}"
    return lines[0]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


# ---------------------------------------------------------------------------------------------- 1: boxes


@pytest.mark.parametrize("box", ["5.0 5.0 inf 20.0", "5.0 5.0 nan 20.0", "nan 5.0 20.0 20.0", "5.0 -inf 20.0 20.0",
                                 "1e308 5.0 1e308 20.0", "500.0 5.0 20.0 20.0"])
def test_cub_non_finite_or_outside_box_names_the_file_and_line(box, tmp_path, capfd):
    cub = make_cub(tmp_path)
    _replace_line(cub / "bounding_boxes.txt", 4, f"4 {box}")
    out = tmp_path / "out"
    rc, o, e = _cli(["data", "cub", "--src", str(cub), "--out", str(out)], capfd)
    line = assert_one_line(rc, o, e, f"{cub / 'bounding_boxes.txt'}:4:")
    assert "convert" not in line  # not Python's "cannot convert float ... to integer"
    assert _files(out) == []


# ---------------------------------------------------------------------------------------------- 2: the tables


@pytest.mark.parametrize("name, number, content", [
    ("images.txt", 2, b"2 001.A/\xe92.jpg"),
    ("classes.txt", 2, b"2 \xe9"),
    ("image_class_labels.txt", 3, b"3 \xe9"),
    ("train_test_split.txt", 5, b"5 \xff"),
    ("bounding_boxes.txt", 6, b"6 5.0 \xe9 20.0 20.0"),
])
def test_cub_latin1_byte_names_the_file_and_line(name, number, content, tmp_path, capfd):
    cub = make_cub(tmp_path)
    _replace_line(cub / name, number, content)
    rc, o, e = _cli(["data", "cub", "--src", str(cub), "--out", str(tmp_path / "out")], capfd)
    line = assert_one_line(rc, o, e, f"{cub / name}:{number}:", "UTF-8")
    assert "codec" not in line
    assert _files(tmp_path / "out") == []


@pytest.mark.parametrize("name, number, content", [
    ("image_class_labels.txt", 1, "1 \u00b2"),  # str.isdigit() but not int()
    ("image_class_labels.txt", 4, "4 \u0662"),  # an Arabic-Indic 2: int() reads it, CUB never has it
    ("classes.txt", 1, "\u00b9 001.A"),
])
def test_cub_non_ascii_digit_names_the_file_and_line(name, number, content, tmp_path, capfd):
    cub = make_cub(tmp_path)
    _replace_line(cub / name, number, content)
    rc, o, e = _cli(["data", "cub", "--src", str(cub), "--out", str(tmp_path / "out")], capfd)
    line = assert_one_line(rc, o, e, f"{cub / name}:{number}:")
    assert "invalid literal" not in line


@pytest.mark.parametrize("name", ["images.txt", "classes.txt"])
def test_cub_empty_table_names_it(name, tmp_path, capfd):
    cub = make_cub(tmp_path)
    (cub / name).write_text("")
    rc, o, e = _cli(["data", "cub", "--src", str(cub), "--out", str(tmp_path / "out")], capfd)
    line = assert_one_line(rc, o, e, cub / name, "empty")
    assert "class_names.txt" not in line and "Errno" not in line
    assert _files(tmp_path / "out") == []


def test_cub_duplicate_image_path_names_the_file_and_line(tmp_path, capfd):
    cub = make_cub(tmp_path)
    _replace_line(cub / "images.txt", 2, "2 001.A/a1.jpg")
    rc, o, e = _cli(["data", "cub", "--src", str(cub), "--out", str(tmp_path / "out")], capfd)
    assert_one_line(rc, o, e, f"{cub / 'images.txt'}:2:", "001.A/a1.jpg", "line 1")
    assert _files(tmp_path / "out") == []


def test_duplicate_class_id_is_not_called_an_image_id(tmp_path, capfd):
    cub = make_cub(tmp_path)
    (cub / "classes.txt").write_text("1 001.A\n1 002.B\n")
    rc, o, e = _cli(["data", "cub", "--src", str(cub), "--out", str(tmp_path / "out")], capfd)
    line = assert_one_line(rc, o, e, f"{cub / 'classes.txt'}:2:", "duplicate class id")
    assert "image id" not in line


def test_cub_repeated_class_name_names_the_file_and_line(tmp_path, capfd):
    """Before: accepted; class_names.txt then named two classes alike (a pasted line in classes.txt)."""
    cub = make_cub(tmp_path)
    (cub / "classes.txt").write_text("1 001.A\n2 001.A\n")
    rc, o, e = _cli(["data", "cub", "--src", str(cub), "--out", str(tmp_path / "out")], capfd)
    assert_one_line(rc, o, e, f"{cub / 'classes.txt'}:2:", "'001.A' repeated", "line 1")
    assert _files(tmp_path / "out") == []


@pytest.mark.parametrize("path", ["001.A/a,3.jpg", "../../../etc/passwd", "/etc/passwd"])
def test_cub_bad_image_path_is_refused_before_anything_is_written(path, tmp_path, capfd, monkeypatch):
    import cream_pl.data.cub as cub_module

    cub = make_cub(tmp_path)
    if "," in path:
        shutil.copy(cub / "images/001.A/a3.jpg", cub / "images" / path)
    _replace_line(cub / "images.txt", 3, f"3 {path}")
    headers: list[Path] = []
    real = cub_module.read_image_size
    monkeypatch.setattr(cub_module, "read_image_size", lambda p: (headers.append(p), real(p))[1])
    out = tmp_path / "out"
    rc, o, e = _cli(["data", "cub", "--src", str(cub), "--out", str(out)], capfd)
    assert_one_line(rc, o, e, f"{cub / 'images.txt'}:3:", path)
    assert _files(out) == []  # no metadata/train before the bad line was found
    assert headers == []  # found before the image headers are read


def test_cub_val_per_class_too_large_names_the_option(tmp_path, capfd):
    cub = make_cub(tmp_path)
    rc, o, e = _cli(["data", "cub", "--src", str(cub), "--out", str(tmp_path / "out"), "--val-per-class", "5"], capfd)
    assert_one_line(rc, o, e, "--val-per-class", "has only 2 train images")
    assert _files(tmp_path / "out") == []


# ---------------------------------------------------------------------------------------------- 3: reruns


def test_cub_rerun_without_val_removes_the_carved_val(tmp_path, capfd):
    cub = make_cub(tmp_path)
    out = tmp_path / "out"
    rc, o, e = _cli(["data", "cub", "--src", str(cub), "--out", str(out), "--val-per-class", "1"], capfd)
    assert rc == 0, e
    assert len(read_split(out / "metadata/val")) == 2 and len(read_split(out / "metadata/train")) == 2
    rc, o, e = _cli(["data", "cub", "--src", str(cub), "--out", str(out)], capfd)
    assert rc == 0, e
    assert not (out / "metadata/val").exists()  # its images are train images again
    assert "val: ok" not in o and "no val split" in o
    assert len(read_split(out / "metadata/train")) == 4
    assert sorted(p.name for p in (out / "metadata").iterdir()) == ["test", "train"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def _cubv2_standin(out: Path) -> None:
    """A val split put in by hand, standing for CUBV2's metadata: train's lines under new image ids (CUBV2's images
    are new ones, so neither train nor test lists them) in CUB's class folders (``001.Black_footed_Albatross/...``)."""
    (out / "metadata/val").mkdir()
    for f in (out / "metadata/train").iterdir():
        lines = [ln.split(",", 1) for ln in f.read_text().splitlines()]
        renamed = ["/".join([*ln[0].split("/")[:-1], "v2_" + ln[0].split("/")[-1]]) for ln in lines]
        (out / "metadata/val" / f.name).write_text("\n".join(",".join([r, *ln[1:]]) for r, ln in zip(renamed, lines)))


def test_cub_rerun_keeps_a_val_split_it_did_not_write(tmp_path, capfd):
    """The benchmark's val (CUBV2) is put in <out>/metadata/val by hand: a rerun keeps it, never mixes it."""
    cub = make_cub(tmp_path)
    out = tmp_path / "out"
    assert _cli(["data", "cub", "--src", str(cub), "--out", str(out)], capfd)[0] == 0
    _cubv2_standin(out)
    before = {p.name: p.read_bytes() for p in (out / "metadata/val").iterdir()}
    rc, o, e = _cli(["data", "cub", "--src", str(cub), "--out", str(out)], capfd)
    assert rc == 0, e
    assert {p.name: p.read_bytes() for p in (out / "metadata/val").iterdir()} == before
    assert "no val split" not in o and "val: ok" in o
    rc, o, e = _cli(["data", "cub", "--src", str(cub), "--out", str(out), "--val-per-class", "1"], capfd)
    assert_one_line(rc, o, e, out / "metadata" / "val")
    assert {p.name: p.read_bytes() for p in (out / "metadata/val").iterdir()} == before


@pytest.mark.parametrize("link", [True, False])
def test_cub_refuses_an_out_that_holds_a_synthetic_dataset(link, tmp_path, capfd):
    cub = make_cub(tmp_path)
    out = generate_synthetic_dataset(tmp_path / "synth", seed=0, num_classes=2, num_train=4, num_val=3, num_test=3,
                                     min_side=64, max_side=72, image_format="png")
    before = {f: (out / f).read_bytes() for f in _files(out) if (out / f).is_file()}
    argv = ["data", "cub", "--src", str(cub), "--out", str(out)] + ([] if link else ["--no-link"])
    rc, o, e = _cli(argv, capfd)
    assert_one_line(rc, o, e, out)
    assert {f: (out / f).read_bytes() for f in _files(out) if (out / f).is_file()} == before


def test_cub_refuses_an_out_with_metadata_it_did_not_write(tmp_path, capfd):
    cub = make_cub(tmp_path)
    out = tmp_path / "out"
    (out / "metadata" / "train").mkdir(parents=True)
    (out / "metadata" / "train" / "image_ids.txt").write_text("mine.png")
    rc, o, e = _cli(["data", "cub", "--src", str(cub), "--out", str(out)], capfd)
    assert_one_line(rc, o, e, out / "metadata" / "train")
    assert (out / "metadata" / "train" / "image_ids.txt").read_text() == "mine.png"
    assert _files(out) == ["metadata", "metadata/train", "metadata/train/image_ids.txt"]


def test_convert_cub_overwrite_replaces_a_synthetic_dataset(tmp_path):
    cub = make_cub(tmp_path)
    out = generate_synthetic_dataset(tmp_path / "synth", seed=0, num_classes=2, num_train=4, num_val=3, num_test=3,
                                     min_side=64, max_side=72, image_format="png")
    shutil.rmtree(out / "images")  # the images link needs the place
    summary = convert_cub(cub, out, overwrite=True)
    assert (summary.num_train, summary.num_val, summary.num_test) == (4, 0, 2)
    assert sorted(p.name for p in (out / "metadata").iterdir()) == ["test", "train"]
    assert not (out / "synth_config.json").exists() and not (out / "masks").exists()


def test_cub_overwrite_keeps_a_val_it_does_not_write_and_a_hand_replaced_val_is_not_its_own(tmp_path, capfd):
    """--overwrite replaces what the conversion writes, never the CUBV2 val put in by hand; and a val it carved that
    was replaced by hand since (its image_ids.txt changed) is kept by a plain rerun instead of removed."""
    cub = make_cub(tmp_path)
    out = tmp_path / "out"
    assert _cli(["data", "cub", "--src", str(cub), "--out", str(out), "--val-per-class", "1"], capfd)[0] == 0
    shutil.rmtree(out / "metadata/val")
    _cubv2_standin(out)
    hand = (out / "metadata/val/image_ids.txt").read_bytes()
    rc, o, e = _cli(["data", "cub", "--src", str(cub), "--out", str(out)], capfd)
    assert rc == 0, e
    assert (out / "metadata/val/image_ids.txt").read_bytes() == hand
    (out / "cub_convert.json").unlink()  # as a `data cub` of before the record left it
    rc, o, e = _cli(["data", "cub", "--src", str(cub), "--out", str(out)], capfd)
    assert_one_line(rc, o, e, out / "metadata" / "train", "--overwrite")
    rc, o, e = _cli(["data", "cub", "--src", str(cub), "--out", str(out), "--overwrite"], capfd)
    assert rc == 0, e
    assert (out / "metadata/val/image_ids.txt").read_bytes() == hand and len(read_split(out / "metadata/train")) == 4


def test_cub_writes_into_a_metadata_folder_that_links_elsewhere(tmp_path, capfd):
    """The splits are staged beside them (inside metadata/), so a metadata/ on another filesystem still works."""
    cub = make_cub(tmp_path)
    out, elsewhere = tmp_path / "out", Path("/dev/shm") if Path("/dev/shm").is_dir() else tmp_path
    target = Path(tempfile.mkdtemp(dir=elsewhere))
    try:
        out.mkdir()
        (out / "metadata").symlink_to(target, target_is_directory=True)
        rc, o, e = _cli(["data", "cub", "--src", str(cub), "--out", str(out)], capfd)
        assert rc == 0, e
        assert sorted(p.name for p in target.iterdir()) == ["test", "train"]  # no staging folder left
    finally:
        shutil.rmtree(target, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- 4: synth


@pytest.mark.parametrize("extra, option", [
    (["--usual-background-prob", "0.5"], "--usual-background-prob"),
    (["--confounded-eval", "unusual"], "--confounded-eval"),
])
def test_synth_confounded_options_without_confounded_are_refused(extra, option, tmp_path, capfd):
    out = tmp_path / "d"
    argv = ["data", "synth", "--out", str(out), "--num-classes", "2", "--num-train", "4", "--num-val", "3",
            "--num-test", "3", "--min-side", "64", "--max-side", "72", "--image-format", "png"]
    rc, o, e = _cli(argv + extra, capfd)
    assert_one_line(rc, o, e, option, "--confounded")
    assert not out.exists()
    rc, o, e = _cli(argv + extra + ["--confounded"], capfd)
    assert rc == 0, e


# ---------------------------------------------------------------------------------------------- 5: data check


@pytest.fixture(scope="module")
def data2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic_dataset(tmp_path_factory.mktemp("more") / "d", seed=0, num_classes=2, num_train=4,
                                      num_val=3, num_test=3, min_side=64, max_side=72, image_format="png")


@pytest.mark.parametrize("which", ["mask", "ignore"])
def test_data_check_files_reports_a_mask_of_another_size(which, data2, tmp_path, capfd):
    root = Path(shutil.copytree(data2, tmp_path / "d"))
    sample = read_split(root / "metadata/test").samples[0]
    assert sample.masks is not None and sample.masks.ignore_path is not None
    rel = sample.masks.mask_paths[0] if which == "mask" else sample.masks.ignore_path
    assert cv2.imwrite(str(root / "masks" / rel), np.full((30, 30), 255 if which == "mask" else 0, np.uint8))
    rc, o, e = _cli(["data", "check", str(root), "--files", "--split", "test"], capfd)
    assert rc == 1 and "Traceback" not in o + e
    lines = [ln for ln in e.splitlines() if ln.strip()]
    assert len(lines) == 2 and lines[0] == "test: 1 problem(s)", e
    w, h = sample.size
    assert str(root / "masks" / rel) in lines[1] and "30x30" in lines[1] and f"{w}x{h}" in lines[1]
    assert _cli(["data", "check", str(data2), "--files"], capfd)[0] == 0


def test_a_mask_of_its_images_shape_at_another_resolution_is_read_alike(data2, tmp_path, capfd):
    """The protocol resizes each mask PNG to the grid on its own (OpenImages' masks are not at their images'
    resolution). Before: refused by data check, fit and test for not being the image's size."""
    from cream_pl.data.datamodule import WSOLDataModule

    root = Path(shutil.copytree(data2, tmp_path / "d"))
    dm = WSOLDataModule(str(root), eval_size=64)
    before = [dm.eval_dataset("test")[i]["mask"] for i in range(3)]  # checked against the decoded image's size
    for sample in read_split(root / "metadata/test").samples:
        for rel in (*sample.masks.mask_paths, sample.masks.ignore_path):
            mask = cv2.imread(str(root / "masks" / rel), cv2.IMREAD_GRAYSCALE)
            h, w = mask.shape
            assert cv2.imwrite(str(root / "masks" / rel), cv2.resize(mask, (2 * w, 2 * h), interpolation=cv2.INTER_NEAREST))
    assert _cli(["data", "check", str(root), "--files", "--split", "test"], capfd)[0] == 0
    after = [WSOLDataModule(str(root), eval_size=64).eval_dataset("test")[i]["mask"] for i in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(before, after))  # twice the resolution, the same protocol mask


def test_data_check_and_export_read_images_and_masks_kept_in_one_folder(data2, tmp_path, capfd):
    """wsolevaluation's OpenImages keeps images and masks in one ``OpenImages/`` folder. Before: ``data check`` knew
    only ``<root>/images`` and ``<root>/masks`` (a "file not found" line per image), and so did export-scoremaps."""
    root = tmp_path / "oi"
    shutil.copytree(data2 / "metadata", root / "metadata")
    together = tmp_path / "OpenImages"
    shutil.copytree(data2 / "images", together)
    shutil.copytree(data2 / "masks", together, dirs_exist_ok=True)
    rc, _, e = _cli(["data", "check", str(root), "--files", "--split", "test"], capfd)
    assert rc == 1 and f"{root / 'images'}: image folder not found (--image-root" in e
    rc, o, e = _cli(["data", "check", str(root), "--files", "--image-root", str(together), "--mask-root",
                     str(together)], capfd)
    assert rc == 0 and "Traceback" not in e and "test: ok" in o, e
    shutil.rmtree(together / read_split(root / "metadata/test").samples[0].image_id.split("/")[0])
    rc, _, e = _cli(["data", "check", str(root), "--files", "--split", "test", "--image-root", str(together),
                     "--mask-root", str(together)], capfd)
    assert rc == 1 and str(together) in e  # the images it reads are those of --image-root


def test_cub_failure_between_the_renames_puts_the_earlier_split_back(tmp_path, monkeypatch):
    """Before: a failure after the earlier test split was moved aside and before the new one was moved in removed
    both (the staging folder held the earlier one)."""
    import cream_pl.data.cub as cub_module

    cub = make_cub(tmp_path)
    out = tmp_path / "out"
    convert_cub(cub, out)
    before = {p.name: p.read_bytes() for p in (out / "metadata/test").iterdir()}
    real = os.replace

    def fail_moving_in(src, dst):
        if Path(dst) == out / "metadata/test" and Path(src).parent.name.startswith(".cub_convert."):
            raise OSError(28, "No space left on device")  # the new split only (the earlier one is in .../old/)
        return real(src, dst)

    monkeypatch.setattr(cub_module.os, "replace", fail_moving_in)
    with pytest.raises(OSError, match="No space left"):
        convert_cub(cub, out)
    assert {p.name: p.read_bytes() for p in (out / "metadata/test").iterdir()} == before
    assert sorted(p.name for p in (out / "metadata").iterdir()) == ["test", "train"]  # no staging folder left


def test_synth_with_fewer_train_images_than_classes_is_one_line(tmp_path, capfd):
    """Before: exit 0; classes 3 and 4 had no image in any split, and ``data check`` said ok."""
    rc, o, e = _cli(["data", "synth", "--out", str(tmp_path / "d"), "--num-classes", "5", "--num-train", "3",
                     "--num-val", "2", "--num-test", "2", "--min-side", "64", "--max-side", "64"], capfd)
    assert_one_line(rc, o, e, "--num-train (3) must be >= --num-classes (5)")
    assert not (tmp_path / "d").exists()


def test_data_check_reports_a_test_image_that_train_lists_too(tmp_path, capfd):
    """Before: "test: ok / train: ok": a test image the model trains on (leakage) went unnoticed."""
    from cream_pl.data.metadata import write_split

    root = generate_synthetic_dataset(tmp_path / "d", seed=0, num_classes=2, num_train=4, num_val=2, num_test=3,
                                      min_side=48, max_side=56, image_format="png")
    train, test = read_split(root / "metadata/train"), read_split(root / "metadata/test")
    write_split(root / "metadata/test", [train.samples[0], *test.samples[1:]])
    rc, o, e = _cli(["data", "check", str(root)], capfd)
    assert rc == 1 and f"{root / 'metadata/test/image_ids.txt'}:1: image {train.samples[0].image_id!r} is in train too" in e


def test_data_check_reports_a_val_image_that_train_lists_too(tmp_path, capfd):
    """Before: "val: ok": hyperparameters chosen on val would have been chosen on training images."""
    from cream_pl.data.metadata import write_split

    root = generate_synthetic_dataset(tmp_path / "d", seed=0, num_classes=2, num_train=4, num_val=2, num_test=3,
                                      min_side=48, max_side=56, image_format="png")
    train, val = read_split(root / "metadata/train"), read_split(root / "metadata/val")
    write_split(root / "metadata/val", [*val.samples[:1], train.samples[2]])
    rc, o, e = _cli(["data", "check", str(root)], capfd)
    assert rc == 1 and "val: 1 problem(s)" in e and "test: ok" in o
    assert f"{root / 'metadata/val/image_ids.txt'}:2: image {train.samples[2].image_id!r} is in train too" in e
    assert "so the hyperparameters would be chosen on training images" in e


def test_data_check_names_a_missing_image_folder_and_class_names_that_disagree(tmp_path: Path, capsys) -> None:
    """Before: ``data check`` said ok to a dataset fit cannot load (no images/ without --files, a class_names.txt of
    another count under --num-classes, a class_names.txt that is a folder), and a wrong --split or root was a
    dataset problem (status 1) instead of a usage error."""
    root = generate_synthetic_dataset(tmp_path / "d", seed=0, num_classes=3, num_train=3, num_val=3, num_test=3,
                                      min_side=48, max_side=56, image_format="png")
    assert cli_main(["data", "check", str(root)]) == 0
    capsys.readouterr()
    assert cli_main(["data", "check", str(root), "--num-classes", "4"]) == 1
    assert f"{root / 'class_names.txt'}: 3 class names, but --num-classes is 4" in capsys.readouterr().err
    (root / "images").rename(root / "imgs")
    assert cli_main(["data", "check", str(root)]) == 1
    assert f"{root / 'images'}: image folder not found" in capsys.readouterr().err
    (root / "imgs").rename(root / "images")
    (root / "class_names.txt").unlink()
    (root / "class_names.txt").mkdir()
    assert cli_main(["data", "check", str(root)]) == 1
    assert f"{root / 'class_names.txt'}: not a file" in capsys.readouterr().err
    for argv, words in (([str(root), "--split", "bogus"], f"{root / 'metadata' / 'bogus'}: no such split (--split bogus)"),
                        ([str(tmp_path / "absent")], f"{tmp_path / 'absent'}: not a folder")):
        assert cli_main(["data", "check", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
