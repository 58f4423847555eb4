"""Benchmark metadata: reader, writer, format checker and every kind of bad metadata line."""

from __future__ import annotations

from pathlib import Path

import pytest

from cream_pl.data.metadata import (
    MaskRecord,
    MetadataError,
    SampleRecord,
    check_split,
    read_class_names,
    read_split,
    write_class_names,
    write_split,
)

# A split written by hand in the exact wsolevaluation format (no trailing newline; two boxes for b).
GOOD = {
    "image_ids.txt": "c/a.png\nc/b.png",
    "class_labels.txt": "c/a.png,0\nc/b.png,2",
    "image_sizes.txt": "c/a.png,20,10\nc/b.png,30,40",
    "localization.txt": "c/a.png,0,0,19,9\nc/b.png,1,2,3,4\nc/b.png,5,6,29,39",
}


def make_split(tmp_path: Path, **changes: str) -> Path:
    d = tmp_path / "split"
    d.mkdir(exist_ok=True)
    for name, text in {**GOOD, **{k.replace("__", "."): v for k, v in changes.items()}}.items():
        (d / name).write_text(text, newline="")
    return d


def test_reads_boxes_labels_sizes(tmp_path: Path) -> None:
    meta = read_split(make_split(tmp_path), num_classes=3)
    assert [s.image_id for s in meta.samples] == ["c/a.png", "c/b.png"]
    assert [s.label for s in meta.samples] == [0, 2]
    assert [s.size for s in meta.samples] == [(20, 10), (30, 40)]
    assert meta.samples[1].boxes == ((1, 2, 3, 4), (5, 6, 29, 39))
    assert [s.line for s in meta.samples] == [1, 2]
    assert meta.has_boxes and meta.has_sizes and not meta.has_masks
    assert meta.skipped == []


def test_signed_numbers_read_as_the_references_int_reads_them(tmp_path: Path) -> None:
    """Before: a label '+0' was refused as not an integer, which the reference's ``int`` reads as 0."""
    meta = read_split(make_split(tmp_path, class_labels__txt="c/a.png,+0\nc/b.png,+2",
                                 image_sizes__txt="c/a.png,+20,10\nc/b.png,30,+40"), num_classes=3)
    assert [s.label for s in meta.samples] == [0, 2] and [s.size for s in meta.samples] == [(20, 10), (30, 40)]


def test_reads_openimages_mask_lines(tmp_path: Path) -> None:
    d = make_split(
        tmp_path,
        image_sizes__txt="",
        localization__txt="c/a.png,m/a_1.png,m/a_ignore.png\nc/a.png,m/a_2.png,\nc/b.png,m/b_1.png,m/b_ignore.png",
    )
    meta = read_split(d)
    assert meta.has_masks and not meta.has_boxes and not meta.has_sizes
    assert meta.samples[0].masks == MaskRecord(("m/a_1.png", "m/a_2.png"), "m/a_ignore.png")
    assert meta.samples[1].masks == MaskRecord(("m/b_1.png",), "m/b_ignore.png")
    assert check_split(d) == []


def test_writer_round_trip_and_exact_format(tmp_path: Path) -> None:
    samples = [
        SampleRecord("x/1.jpg", 1, (50, 40), ((0, 0, 49, 39), (3, 4, 5, 6)), MaskRecord(("x/1_m0.png",), "x/1_i.png")),
        SampleRecord("x/2.jpg", 0, (10, 20), ((1, 1, 2, 2),), MaskRecord(("x/2_m0.png", "x/2_m1.png"), "x/2_i.png")),
    ]
    d = tmp_path / "s"
    write_split(d, samples)
    assert (d / "image_ids.txt").read_text() == "x/1.jpg\nx/2.jpg"
    assert (d / "class_labels.txt").read_text() == "x/1.jpg,1\nx/2.jpg,0"
    assert (d / "image_sizes.txt").read_text() == "x/1.jpg,50,40\nx/2.jpg,10,20"
    assert (d / "localization.txt").read_text() == "x/1.jpg,0,0,49,39\nx/1.jpg,3,4,5,6\nx/2.jpg,1,1,2,2"
    assert (d / "localization_masks.txt").read_text() == (
        "x/1.jpg,x/1_m0.png,x/1_i.png\nx/2.jpg,x/2_m0.png,x/2_i.png\nx/2.jpg,x/2_m1.png,"
    )
    meta = read_split(d)
    assert [(s.image_id, s.label, s.size, s.boxes, s.masks) for s in meta.samples] == [
        (s.image_id, s.label, s.size, s.boxes, s.masks) for s in samples
    ]
    assert check_split(d) == []


def test_writer_masks_only_go_to_localization(tmp_path: Path) -> None:
    d = tmp_path / "s"
    write_split(d, [SampleRecord("a.png", 0, None, (), MaskRecord(("a_m.png",), "a_i.png"))])
    assert (d / "localization.txt").read_text() == "a.png,a_m.png,a_i.png"
    assert (d / "image_sizes.txt").read_text() == ""
    assert not (d / "localization_masks.txt").exists()


def test_writer_rejects_bad_records(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="comma"):
        write_split(tmp_path / "s", [SampleRecord("a,b.png", 0, (5, 5), ((0, 0, 1, 1),))])
    with pytest.raises(ValueError, match="outside"):
        write_split(tmp_path / "s", [SampleRecord("a.png", 0, (5, 5), ((0, 0, 5, 1),))])
    with pytest.raises(ValueError, match="duplicate"):
        write_split(tmp_path / "s", [SampleRecord("a.png", 0, (5, 5)), SampleRecord("a.png", 0, (5, 5))])


def test_empty_localization_means_no_boxes(tmp_path: Path) -> None:
    meta = read_split(make_split(tmp_path, localization__txt="", image_sizes__txt=""))
    assert not meta.has_boxes and not meta.has_masks and not meta.has_sizes
    assert len(meta) == 2


def test_trailing_newline_tolerated_but_flagged_by_strict_check(tmp_path: Path) -> None:
    d = make_split(tmp_path, class_labels__txt=GOOD["class_labels.txt"] + "\n")
    assert len(read_split(d)) == 2  # the reference reader (readlines) accepts it
    problems = check_split(d)
    assert len(problems) == 1 and "class_labels.txt:2: trailing newline" in problems[0]
    assert check_split(d, strict=False) == []


def _dataset_root(tmp_path: Path, encode) -> Path:
    """A ``test`` split of GOOD with real image files, every metadata file passed through ``encode``."""
    import cv2
    import numpy as np

    root = tmp_path / "ds"
    split = root / "metadata" / "test"
    split.mkdir(parents=True)
    for name, text in GOOD.items():
        (split / name).write_bytes(encode(text))
    (root / "images" / "c").mkdir(parents=True)
    for rel, (w, h) in (("c/a.png", (20, 10)), ("c/b.png", (30, 40))):
        cv2.imwrite(str(root / "images" / rel), np.full((h, w, 3), 80, np.uint8))
    return root


ENCODINGS = {
    "crlf": lambda text: text.replace("\n", "\r\n").encode(),
    "bom": lambda text: "\ufeff".encode() + text.encode(),
    "bom_crlf_trailing": lambda text: ("\ufeff" + text.replace("\n", "\r\n") + "\r\n").encode("utf-8"),
    "cr": lambda text: text.replace("\n", "\r").encode(),  # old Mac: the reference's text mode reads its lines; was one
}                                                          # id holding \r (an error quoting the whole file)


@pytest.mark.parametrize("kind", sorted(ENCODINGS))
def test_crlf_and_bom_read_alike_by_fit_and_data_check(tmp_path: Path, kind: str, capsys) -> None:
    from cream_pl.cli import main
    from cream_pl.data import WSOLDataModule

    root = _dataset_root(tmp_path, ENCODINGS[kind])
    meta = read_split(root / "metadata" / "test", num_classes=3)  # what fit reads
    assert [s.image_id for s in meta.samples] == ["c/a.png", "c/b.png"]
    assert [s.label for s in meta.samples] == [0, 2] and meta.samples[1].boxes[1] == (5, 6, 29, 39)
    dm = WSOLDataModule(str(root), num_classes=3, eval_size=32)
    dm.setup("test")  # decodes every image: a BOM left in the first id would be "file not found"
    assert [b["image_id"] for b in dm.test_dataloader()] == [["c/a.png", "c/b.png"]]
    problems = check_split(root / "metadata" / "test", num_classes=3, image_root=root / "images", strict=False)
    assert problems == []  # data check --lenient: the same rule as fit
    status = main(["data", "check", str(root), "--files", "--num-classes", "3"])
    out = capsys.readouterr()
    if kind == "bom_crlf_trailing":  # strict: only the trailing newline (the same as with \n) is reported
        assert status == 1 and "trailing newline" in out.err and "\\r" not in out.err and "BOM" not in out.err
    else:
        assert status == 0, out.err


# ---------------------------------------------------------------- bad metadata: error names file and line

BAD_CASES = {
    # case: (file changes, file named in the error, line, words in the message)
    "malformed_label_line": ({"class_labels__txt": "c/a.png,0\nc/b.png;2"}, "class_labels.txt", 2, "2 fields"),
    "non_integer_label": ({"class_labels__txt": "c/a.png,0\nc/b.png,two"}, "class_labels.txt", 2, "not an integer"),
    "malformed_size_line": ({"image_sizes__txt": "c/a.png,20,10\nc/b.png,30"}, "image_sizes.txt", 2, "3 fields"),
    "malformed_box_line": ({"localization__txt": "c/a.png,0,0,19,9\nc/b.png,1,2,3"}, "localization.txt", 2,
                           "got 4 fields"),
    "float_box": ({"localization__txt": "c/a.png,0,0,19.5,9\nc/b.png,1,2,3,4"}, "localization.txt", 1, "integers"),
    "empty_line_in_ids": ({"image_ids__txt": "c/a.png\n\nc/b.png"}, "image_ids.txt", 2, "empty line"),
    "duplicate_id": ({"image_ids__txt": "c/a.png\nc/b.png\nc/a.png"}, "image_ids.txt", 3, "duplicate"),
    # before: read from outside the root, and export-scoremaps wrote <id>.npy beside an absolute id's image
    "absolute_id": ({"image_ids__txt": "c/a.png\n/c/b.png"}, "image_ids.txt", 2, "stays inside it"),
    "climbing_id": ({"image_ids__txt": "c/a.png\nc/../../b.png"}, "image_ids.txt", 2, "stays inside it"),
    "unknown_id_in_labels": ({"class_labels__txt": "c/a.png,0\nc/b.png,2\nc/z.png,1"}, "class_labels.txt", 3,
                             "not listed"),
    "missing_label": ({"class_labels__txt": "c/a.png,0"}, "image_ids.txt", 2, "has no label in class_labels.txt"),
    "bom_inside_ids": ({"image_ids__txt": "c/a.png\n\ufeffc/b.png"}, "class_labels.txt", 2,
                       "image_ids.txt:2 has '\\ufeffc/b.png', with spaces or a byte order mark"),
    "space_after_id": ({"image_ids__txt": "c/a.png\nc/b.png "}, "class_labels.txt", 2,
                       "image_ids.txt:2 has 'c/b.png ', with spaces"),
    "missing_size": ({"image_sizes__txt": "c/a.png,20,10"}, "image_ids.txt", 2, "has no size in image_sizes.txt"),
    "missing_box": ({"localization__txt": "c/a.png,0,0,19,9"}, "image_ids.txt", 2, "has no box in localization.txt"),
    "label_out_of_range": ({"class_labels__txt": "c/a.png,0\nc/b.png,3"}, "class_labels.txt", 2, "out of range [0, 3)"),
    "negative_label": ({"class_labels__txt": "c/a.png,-1\nc/b.png,2"}, "class_labels.txt", 1, "out of range"),
    "box_outside_image": ({"localization__txt": "c/a.png,0,0,20,9\nc/b.png,1,2,3,4"}, "localization.txt", 1,
                          "outside the 20x10 image"),
    "negative_box": ({"localization__txt": "c/a.png,-1,0,19,9\nc/b.png,1,2,3,4"}, "localization.txt", 1, "outside"),
    "inverted_box": ({"localization__txt": "c/a.png,0,0,19,9\nc/b.png,4,2,3,4"}, "localization.txt", 2, "inverted"),
    "second_mask_line_with_ignore": ({"image_sizes__txt": "", "localization__txt":
                                      "c/a.png,m1.png,i.png\nc/a.png,m2.png,i.png\nc/b.png,m3.png,i.png"},
                                     "localization.txt", 2, "first line of an image only"),
    "mixed_box_and_mask_lines": ({"localization__txt": "c/a.png,0,0,19,9\nc/b.png,m.png,i.png"}, "localization.txt", 2,
                                 "one file holds one kind"),
    "zero_size": ({"image_sizes__txt": "c/a.png,0,10\nc/b.png,30,40"}, "image_sizes.txt", 1, "positive"),
    "not_utf8": ({"image_ids__txt": "c/a.png\nc/\udcff.png"}, "image_ids.txt", 2, "UTF-8"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_metadata_raises_with_file_and_line(tmp_path: Path, case: str) -> None:
    changes, filename, line, words = BAD_CASES[case]
    if case == "not_utf8":
        d = make_split(tmp_path)
        (d / "image_ids.txt").write_bytes(b"c/a.png\nc/\xff.png")
    else:
        d = make_split(tmp_path, **changes)
    with pytest.raises(MetadataError) as info:
        read_split(d, num_classes=3)
    err = info.value
    assert err.path.name == filename and err.line == line, str(err)
    assert words in str(err)
    assert str(err).startswith(f"{d / filename}:{line}: ")


@pytest.mark.parametrize("case", sorted(set(BAD_CASES) - {"not_utf8"}))
def test_check_split_reports_each_bad_case(tmp_path: Path, case: str) -> None:
    changes, filename, line, _ = BAD_CASES[case]
    problems = check_split(make_split(tmp_path, **changes), num_classes=3)
    assert any(p.startswith(f"{tmp_path / 'split' / filename}:{line}: ") for p in problems), problems


def test_missing_file_is_named(tmp_path: Path) -> None:
    d = make_split(tmp_path)
    (d / "image_sizes.txt").unlink()
    with pytest.raises(MetadataError, match=r"image_sizes.txt: file not found"):
        read_split(d)
    assert any("image_sizes.txt: file not found" in p for p in check_split(d))


def test_boxes_without_sizes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match="boxes need the image sizes"):
        read_split(make_split(tmp_path, image_sizes__txt=""))


def test_skip_mode_drops_bad_images_and_lists_reasons(tmp_path: Path) -> None:
    d = make_split(
        tmp_path,
        image_ids__txt="c/a.png\nc/b.png\nc/c.png\nc/d.png\nc/e.png",
        class_labels__txt="c/a.png,0\nc/b.png,7\nc/c.png,1\nc/d.png,2\nc/e.png,1\nc/z.png,0",
        image_sizes__txt="c/a.png,20,10\nc/b.png,30,40\nc/c.png,5,5\nc/d.png,8,8\nc/e.png,9,9",
        localization__txt="c/a.png,0,0,19,9\nc/b.png,1,2,3,4\nc/c.png,0,0,5,4\nc/d.png,3,3,2,2\nc/e.png,0,0,8,8",
    )
    meta = read_split(d, num_classes=3, on_bad_sample="skip")
    assert [s.image_id for s in meta.samples] == ["c/a.png", "c/e.png"]
    assert meta.num_listed == 5
    assert len(meta.skipped) == 4  # label 7, box outside c.png, inverted d.png box, unknown c/z.png
    assert any("class_labels.txt:2:" in r for r in meta.skipped)
    assert any("localization.txt:3:" in r for r in meta.skipped)
    assert any("localization.txt:4:" in r for r in meta.skipped)
    assert any("class_labels.txt:6:" in r and "not listed" in r for r in meta.skipped)


def test_skip_mode_with_nothing_left_raises(tmp_path: Path) -> None:
    d = make_split(tmp_path, class_labels__txt="c/a.png,9\nc/b.png,9")
    with pytest.raises(MetadataError, match="no usable sample"):
        read_split(d, num_classes=3, on_bad_sample="skip")


def test_on_bad_sample_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="on_bad_sample"):
        read_split(make_split(tmp_path), on_bad_sample="ignore")  # type: ignore[arg-type]


def test_class_names_round_trip(tmp_path: Path) -> None:
    write_class_names(tmp_path / "class_names.txt", ["a b", "c"])
    assert (tmp_path / "class_names.txt").read_text() == "a b\nc"
    assert read_class_names(tmp_path / "class_names.txt") == ["a b", "c"]
    (tmp_path / "class_names.txt").write_text("a\n\nc")
    with pytest.raises(MetadataError, match="class_names.txt:2: empty class name"):
        read_class_names(tmp_path / "class_names.txt")
