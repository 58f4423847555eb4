"""``cream-pl evaluate``: interface, map handling (sizes, dtypes, NaN) and bad input."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from cream_pl.cli.evaluate import (
    EvaluationError,
    add_parser,
    evaluate_scoremaps,
    load_scoremap,
    read_split_metadata,
    run,
)


def write_split(root: Path, boxes: bool = True, masks: bool = False) -> Path:
    """Two images, 448x224 and 100x50, one box each; optional mask lines."""
    meta = root / "metadata" / "test"
    meta.mkdir(parents=True)
    ids = ["a/x.jpg", "b/y.png"]
    (meta / "image_ids.txt").write_text("\n".join(ids))
    (meta / "class_labels.txt").write_text("a/x.jpg,0\nb/y.png,1")
    (meta / "image_sizes.txt").write_text("a/x.jpg,448,224\nb/y.png,100,50")
    lines = []
    if boxes:
        lines += ["a/x.jpg,100,20,299,119", "b/y.png,0,0,99,49"]
    (meta / "localization.txt").write_text("\n".join(lines))
    if masks:
        (root / "masks").mkdir()
        for name, (w, h) in (("x", (448, 224)), ("y", (100, 50))):
            m = np.zeros((h, w), np.uint8)
            m[: h // 2] = 255
            cv2.imwrite(str(root / "masks" / f"{name}.png"), m)
        (meta / "localization_masks.txt").write_text("a/x.jpg,x.png,\nb/y.png,y.png,")
    return meta


def save_map(root: Path, image_id: str, array: np.ndarray) -> Path:
    path = root / "maps" / f"{image_id}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    return path


def perfect_maps(root: Path) -> None:
    a = np.zeros((224, 224))
    a[20:120, 50:150] = 1.0  # the 448x224 image's box [100,20,299,119] -> [50,20,149,119] at 224
    save_map(root, "a/x.jpg", a)
    save_map(root, "b/y.png", np.ones((7, 7), np.float32))  # constant -> zeros -> box [0,0,0,0]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["evaluate", *argv])


def test_interface_and_defaults(tmp_path: Path) -> None:
    args = parse(["--metadata", "m", "--scoremaps", "s", "--out", "o.json"])
    assert args.interval == 0.01 and args.multi_contour is True and args.mask_root is None and args.v1 is True
    assert args.iou_thresholds == [30, 50, 70] and args.func is run
    assert (
        parse(["--metadata", "m", "--scoremaps", "s", "--out", "o", "--no-multi-contour"]).multi_contour
        is False
    )


def test_scores_and_json_keys(tmp_path: Path) -> None:
    meta = write_split(tmp_path)
    perfect_maps(tmp_path)
    out = tmp_path / "res" / "scores.json"
    assert (
        run(parse(["--metadata", str(meta), "--scoremaps", str(tmp_path / "maps"), "--out", str(out)])) == 0
    )
    result = json.loads(out.read_text())
    # image a: IoU 10000/10201 at every level; image b: [0,0,0,0] vs the full-image GT -> 0
    assert result["max_box_acc_iou"] == {"30": 50.0, "50": 50.0, "70": 50.0}
    assert result["max_box_acc_v2"] == 50.0 and result["max_box_acc"] == 50.0
    assert set(result["best_threshold_iou"]) == {"30", "50", "70"}
    assert result["num_images"] == 2 and result["cam_curve_interval"] == 0.01 and "pxap" not in result


def test_pxap_with_mask_root(tmp_path: Path) -> None:
    meta = write_split(tmp_path, masks=True)
    for image_id in ("a/x.jpg", "b/y.png"):
        m = np.zeros((224, 224))
        m[:112] = 1.0  # the top half is the mask at 224
        save_map(tmp_path, image_id, m)
    result = evaluate_scoremaps(meta, tmp_path / "maps", mask_root=tmp_path / "masks")
    assert result["pxap"] == 100.0


def test_a_mask_of_another_size_than_its_image_is_refused_like_fit_and_test(tmp_path: Path, capsys) -> None:
    """Before: evaluate resized a 10x10 mask of a 100x50 image silently (``test`` and ``data check`` refuse it)."""
    meta = write_split(tmp_path, masks=True)
    for image_id in ("a/x.jpg", "b/y.png"):
        save_map(tmp_path, image_id, np.random.default_rng(0).random((224, 224)))
    cv2.imwrite(str(tmp_path / "masks" / "y.png"), np.full((10, 10), 255, np.uint8))
    out = tmp_path / "o.json"
    argv = ["--metadata", str(meta), "--scoremaps", str(tmp_path / "maps"), "--mask-root", str(tmp_path / "masks"),
            "--out", str(out)]
    assert run(parse(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and not out.exists(), err
    assert f"{tmp_path / 'masks' / 'y.png'}: mask is 10x10 but the image is 100x50" in err
    for name in ("image_sizes.txt", "localization.txt"):  # no sizes (masks only): the benchmark's plain resize
        (meta / name).write_text("")
    assert evaluate_scoremaps(meta, tmp_path / "maps", mask_root=tmp_path / "masks")["pxap"] > 0


def test_masks_of_one_image_in_two_shapes_are_refused_where_no_size_is_listed(tmp_path: Path, capsys) -> None:
    """OpenImages lists no image sizes. Before: an instance mask and the ignore mask of one image in two shapes were
    each stretched to the grid and scored (``test``, which knows the image, refuses them). One shape at two
    resolutions is what the reference's per-PNG resize scores alike: it is read."""
    meta = write_split(tmp_path, masks=True)
    for name in ("image_sizes.txt", "localization.txt"):
        (meta / name).write_text("")
    for image_id in ("a/x.jpg", "b/y.png"):
        save_map(tmp_path, image_id, np.random.default_rng(0).random((224, 224)))
    ignore = np.zeros((50, 100), np.uint8)
    ignore[:, 90:] = 255  # a strip on the right, outside the top-half object
    cv2.imwrite(str(tmp_path / "masks" / "y_ignore.png"), ignore)
    (meta / "localization_masks.txt").write_text("a/x.jpg,x.png,\nb/y.png,y.png,y_ignore.png")
    out = tmp_path / "o.json"
    argv = ["--metadata", str(meta), "--scoremaps", str(tmp_path / "maps"), "--mask-root", str(tmp_path / "masks"),
            "--out", str(out)]
    assert run(parse(argv)) == 0
    full = json.loads(out.read_text())["pxap"]
    cv2.imwrite(str(tmp_path / "masks" / "y_ignore.png"), cv2.resize(ignore, (50, 25), interpolation=cv2.INTER_NEAREST))
    assert run(parse(argv)) == 0 and json.loads(out.read_text())["pxap"] == full  # half the resolution: alike
    out.unlink()
    cv2.imwrite(str(tmp_path / "masks" / "y_ignore.png"), np.zeros((50, 50), np.uint8))  # another shape
    assert run(parse(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and not out.exists(), err
    assert f"{tmp_path / 'masks' / 'y_ignore.png'}: mask is 50x50 but {tmp_path / 'masks' / 'y.png'}, a mask of the " \
           "same image, is 100x50" in err


def test_masks_without_a_background_pixel_are_one_line_not_pxap_100(tmp_path: Path, capsys) -> None:
    """Before: masks whose background was not 0 (every pixel foreground) scored ``pxap=100.0000``, exit 0."""
    meta = write_split(tmp_path, masks=True)
    for name in ("x", "y"):
        path = tmp_path / "masks" / f"{name}.png"
        cv2.imwrite(str(path), np.maximum(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), 2))  # background 2, not 0
        save_map(tmp_path, "a/x.jpg" if name == "x" else "b/y.png", np.random.default_rng(0).random((224, 224)))
    out = tmp_path / "o.json"
    argv = ["--metadata", str(meta), "--scoremaps", str(tmp_path / "maps"), "--mask-root", str(tmp_path / "masks"),
            "--out", str(out)]
    assert run(parse(argv)) == 2
    err = capsys.readouterr().err
    assert "no background (GT-negative) pixel" in err and len(err.strip().splitlines()) == 1 and not out.exists()


def test_mask_only_split_needs_mask_root(tmp_path: Path) -> None:
    meta = write_split(tmp_path, boxes=False, masks=True)
    with pytest.raises(EvaluationError, match="--mask-root"):
        evaluate_scoremaps(meta, tmp_path / "maps")
    for image_id in ("a/x.jpg", "b/y.png"):
        save_map(tmp_path, image_id, np.zeros((14, 14)))
    result = evaluate_scoremaps(meta, tmp_path / "maps", mask_root=tmp_path / "masks")
    assert result["pxap"] == pytest.approx(50.0) and "max_box_acc" not in result


def test_missing_map_names_the_image_and_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    meta = write_split(tmp_path)
    save_map(tmp_path, "a/x.jpg", np.zeros((224, 224)))
    out = tmp_path / "o.json"
    assert (
        run(parse(["--metadata", str(meta), "--scoremaps", str(tmp_path / "maps"), "--out", str(out)])) == 2
    )
    err = capsys.readouterr().err
    assert "'b/y.png'" in err and str(tmp_path / "maps" / "b" / "y.png.npy") in err
    assert "image_ids.txt line 2" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_nan_map_is_an_error_like_the_reference_tool(tmp_path: Path) -> None:
    m = np.zeros((224, 224))
    m[3, 3] = np.nan
    path = save_map(tmp_path, "a/x.jpg", m)
    with pytest.raises(EvaluationError, match=r"'a/x.jpg'.*NaN"):
        load_scoremap(path, "a/x.jpg")


def test_map_handling_auto_and_always(tmp_path: Path) -> None:
    # a 224x224 map in [0, 1] is scored as saved (not stretched), like the benchmark's tool
    m = np.full((224, 224), 0.2)
    m[10:20, 10:20] = 0.6
    path = save_map(tmp_path, "k.jpg", m)
    np.testing.assert_array_equal(load_scoremap(path, "k.jpg"), m)
    stretched = load_scoremap(path, "k.jpg", normalize="always")
    assert stretched.min() == 0.0 and stretched.max() == 1.0
    # other sizes and out-of-range values go through bicubic + min-max; float32 is read as float64
    small = save_map(tmp_path, "s.jpg", np.arange(49, dtype=np.float32).reshape(7, 7))
    out = load_scoremap(small, "s.jpg")
    assert out.shape == (224, 224) and out.dtype == np.float64 and out.max() == 1.0
    wide = save_map(tmp_path, "w.jpg", np.linspace(-3, 5, 224 * 224).reshape(224, 224))
    assert load_scoremap(wide, "w.jpg").min() == 0.0
    with pytest.raises(EvaluationError, match="2-D"):
        load_scoremap(save_map(tmp_path, "v.jpg", np.zeros(5)), "v.jpg")


def test_bad_metadata_names_file_and_line(tmp_path: Path) -> None:
    meta = write_split(tmp_path)
    (meta / "localization.txt").write_text("a/x.jpg,100,20,299,119\nb/y.png,0,0,oops,49")
    with pytest.raises(EvaluationError, match=r"localization.txt:2: box coordinates must be integers"):
        evaluate_scoremaps(meta, tmp_path)
    (meta / "localization.txt").write_text("a/x.jpg,100,20,99,119\nb/y.png,0,0,9,9")
    with pytest.raises(EvaluationError, match=r"localization.txt:1: inverted box"):
        evaluate_scoremaps(meta, tmp_path)
    (meta / "localization.txt").write_text("a/x.jpg,100,20,299,119")
    with pytest.raises(EvaluationError, match=r"image_ids.txt:2: image id 'b/y.png' has no box"):
        evaluate_scoremaps(meta, tmp_path)
    with pytest.raises(EvaluationError, match="image_ids.txt: file not found"):
        evaluate_scoremaps(tmp_path, tmp_path)


def test_boxes_are_checked_against_image_sizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    meta = write_split(tmp_path)
    perfect_maps(tmp_path)
    (meta / "localization.txt").write_text("a/x.jpg,100,20,448,119\nb/y.png,0,0,99,49")  # x1 = W: outside
    argv = ["--metadata", str(meta), "--scoremaps", str(tmp_path / "maps"), "--out", str(tmp_path / "o.json")]
    assert run(parse(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "localization.txt:1:" in err and "outside the 448x224 image" in err
    (meta / "localization.txt").write_text("a/x.jpg,100,20,299,119\nb/y.png,0,0,99,49")
    (meta / "image_sizes.txt").write_text("a/x.jpg,448,224")  # no size for b/y.png
    assert run(parse(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert "image_ids.txt:2:" in err and "no size in image_sizes.txt" in err and "Traceback" not in err
    assert "no box" not in err  # its box line is there (it was called missing too)


def test_empty_split_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    meta = write_split(tmp_path)
    for name in ("image_ids.txt", "class_labels.txt", "image_sizes.txt", "localization.txt"):
        (meta / name).write_text("")
    argv = ["--metadata", str(meta), "--scoremaps", str(tmp_path), "--out", str(tmp_path / "o.json")]
    assert run(parse(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and str(meta / "image_ids.txt") in err and "empty" in err


def test_out_is_checked_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    meta = write_split(tmp_path)  # no maps at all: a late check would fail on them instead
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    for out, words in ((tmp_path, "is an existing folder"), (blocker / "o.json", f"{blocker} is a file")):
        argv = ["--metadata", str(meta), "--scoremaps", str(tmp_path / "maps"), "--out", str(out)]
        assert run(parse(argv)) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err and "score map" not in err


def test_a_symlinked_input_or_a_device_as_out_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: --out naming a symlinked score map (or a symlinked image_ids.txt) replaced the link with the results,
    and a device (/dev/null, as root) was replaced by a regular file."""
    import os

    meta = write_split(tmp_path)
    perfect_maps(tmp_path)
    link = tmp_path / "maps" / "a" / "x.jpg.npy"
    kept = tmp_path / "elsewhere.npy"
    link.rename(kept)
    link.symlink_to(kept)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for out, words in ((link, "an existing file inside --scoremaps"),
                       (fifo, "must be a regular file path, but it is a device, pipe or socket")):
        argv = ["--metadata", str(meta), "--scoremaps", str(tmp_path / "maps"), "--out", str(out)]
        assert run(parse(argv)) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
    assert link.is_symlink() and np.load(link).shape == (224, 224) and fifo.is_fifo()


def test_an_npz_archive_or_a_timedelta_map_is_named_for_what_it_is(tmp_path: Path) -> None:
    """Before: an .npz saved under a .npy name was 'got shape None dtype None'; a timedelta64 map was scored."""
    path = tmp_path / "maps" / "a.npy"
    path.parent.mkdir()
    with open(path, "wb") as f:
        np.savez(f, a=np.zeros((224, 224)))
    with pytest.raises(EvaluationError, match=r"is a .npz archive, not one array: save the map with np.save"):
        load_scoremap(path, "a")
    np.save(path, np.zeros((224, 224), "m8[s]"))
    with pytest.raises(EvaluationError, match=r"2-D numeric array, got shape \(224, 224\) dtype timedelta64\[s\]"):
        load_scoremap(path, "a")


def test_a_map_whose_range_float64_cannot_hold_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: +-1e308 made NaN of part of the min-max map; PxAP dropped those pixels silently, and a box split
    ended in an AttributeError traceback."""
    meta = write_split(tmp_path, masks=True)
    perfect_maps(tmp_path)
    huge = np.full((224, 224), -1e308)
    huge[20:120, 50:150] = 1e308
    save_map(tmp_path, "a/x.jpg", huge)
    for extra in ([], ["--mask-root", str(tmp_path / "masks")]):
        argv = ["--metadata", str(meta), "--scoremaps", str(tmp_path / "maps"), "--out", str(tmp_path / "o.json"), *extra]
        assert run(parse(argv)) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "'a/x.jpg'" in err and "spans more than float64 can hold" in err, err
    assert not (tmp_path / "o.json").exists()


@pytest.mark.parametrize("name, line, words", [
    ("image_sizes.txt", "a/x.jpg,1" + "0" * 400 + ",224", "image_sizes.txt:1: width and height must be positive integers"),
    ("image_sizes.txt", "a/x.jpg,448²,224", "image_sizes.txt:1: width and height must be positive integers"),
    ("class_labels.txt", "a/x.jpg,0²", "class_labels.txt:1: label '0²' is not an integer"),
])
def test_numbers_int_cannot_read_or_float_cannot_hold_name_their_line(name: str, line: str, words: str, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Before: a side of 10**400 was an OverflowError traceback; '448²' passed isdigit, then int() failed without a
    file or line."""
    meta = write_split(tmp_path)
    perfect_maps(tmp_path)
    rest = (meta / name).read_text().splitlines()[1:]
    (meta / name).write_text("\n".join([line, *rest]))
    argv = ["--metadata", str(meta), "--scoremaps", str(tmp_path / "maps"), "--out", str(tmp_path / "o.json")]
    assert run(parse(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err


def test_zero_padded_numbers_are_numbers(tmp_path: Path) -> None:
    meta = write_split(tmp_path)
    perfect_maps(tmp_path)
    (meta / "image_sizes.txt").write_text("a/x.jpg," + "0" * 5000 + "448,224\nb/y.png,100,050")  # past int()'s 4300
    assert read_split_metadata(meta).image_sizes == {"a/x.jpg": (448, 224), "b/y.png": (100, 50)}


def test_bad_interval_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    meta = write_split(tmp_path)
    perfect_maps(tmp_path)
    argv = ["--metadata", str(meta), "--scoremaps", str(tmp_path / "maps"), "--out", str(tmp_path / "o.json")]
    for bad in ("0", "1e-9"):  # 1e-9: a billion thresholds, gigabytes of counts (was: a MemoryError traceback)
        with pytest.raises(SystemExit) as info:  # refused by the parser (cream_pl.core.options), before any work
            parse([*argv, "--interval", bad])
        assert info.value.code == 2
        assert f"argument --interval: must be a number in [1e-06, 1), got '{bad}'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"interval must be in \[1e-06, 1\]"):
        evaluate_scoremaps(meta, tmp_path / "maps", interval=1e-9)  # the library call refuses it too


def test_registered_in_the_cream_pl_command(tmp_path: Path) -> None:
    from cream_pl.cli import main

    meta = write_split(tmp_path)
    perfect_maps(tmp_path)
    out = tmp_path / "o.json"
    argv = ["evaluate", "--metadata", str(meta), "--scoremaps", str(tmp_path / "maps"), "--out", str(out)]
    assert main([*argv, "--no-multi-contour", "--interval", "0.1"]) == 0
    assert json.loads(out.read_text())["multi_contour"] is False


def test_threads_and_chunks_do_not_change_the_numbers(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    meta = tmp_path / "metadata" / "test"
    meta.mkdir(parents=True)
    ids = [f"d{i % 3}/img{i}.jpg" for i in range(12)]
    (meta / "image_ids.txt").write_text("\n".join(ids))
    (meta / "class_labels.txt").write_text("\n".join(f"{i},0" for i in ids))
    (meta / "image_sizes.txt").write_text("\n".join(f"{i},300,200" for i in ids))
    boxes = []
    for i in ids:
        x0, y0 = (int(v) for v in rng.integers(0, 150, 2))
        boxes.append(f"{i},{x0},{y0},{x0 + int(rng.integers(20, 149))},{min(199, y0 + int(rng.integers(20, 99)))}")
        save_map(tmp_path, i, cv2.resize(rng.normal(size=(14, 14)), (224, 224), interpolation=cv2.INTER_CUBIC))
    (meta / "localization.txt").write_text("\n".join(boxes))
    maps = tmp_path / "maps"
    serial = evaluate_scoremaps(meta, maps, interval=0.001, num_workers=1, batch_size=64)
    threaded = evaluate_scoremaps(meta, maps, interval=0.001, num_workers=3, batch_size=2)
    assert serial == threaded
    v1 = evaluate_scoremaps(meta, maps, interval=0.001, multi_contour=False)
    assert v1["max_box_acc"] == serial["max_box_acc"] == v1["max_box_acc_iou"]["50"]
    assert "max_box_acc" not in evaluate_scoremaps(meta, maps, interval=0.001, v1=False)


def test_a_fresh_evaluate_process_skips_numbas_blas_probe_and_keeps_scipy_importable() -> None:
    """The evaluate module answers numba's BLAS probe "no" in a fresh process (no scipy.linalg import),
    its compiled kernels still run, and scipy.linalg can still be imported afterwards."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "import cream_pl.cli.evaluate\n"
        "from cream_pl.metrics.component_tree import level_ious\n"
        "probe_skipped = 'scipy.linalg' not in sys.modules\n"
        "hi = level_ious(np.eye(8, dtype=np.uint8) * 200, np.array([[0, 0, 7, 7]]))[0]\n"
        "import numba.np.arraymath as am, scipy.linalg\n"
        "print(probe_skipped, am._HAVE_BLAS, round(float(hi[1]), 4), scipy.linalg.norm([3.0, 4.0]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False", "1.0", "5.0"]


def test_maps_an_export_says_are_of_another_split_are_refused_and_its_manifest_is_no_out(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: maps whose export manifest names split 'val' were scored against split 'test' where the two share
    image ids, and --out <the manifest> replaced the record of which checkpoint wrote them (an older cream-pl's
    manifest, without ``exported``, too)."""
    meta = write_split(tmp_path)
    perfect_maps(tmp_path)
    manifest = tmp_path / "scoremaps.json"
    entry = {"checkpoint": "/c.ckpt", "data_root": str(tmp_path), "num_images": 2}
    manifest.write_text(json.dumps({"exported": {"maps": {**entry, "split": "val"}}}))
    out = tmp_path / "o.json"
    argv = ["--metadata", str(meta), "--scoremaps", str(tmp_path / "maps"), "--out", str(out)]
    assert run(parse(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and not out.exists(), err
    assert f"--scoremaps {tmp_path / 'maps'}: the maps of split 'val' of {tmp_path} (as {manifest} says), but " \
           f"--metadata {meta} is split 'test'" in err
    manifest.write_text(json.dumps({"exported": {"maps": {**entry, "data_root": "/moved/away", "split": "test"}}}))
    assert run(parse(argv)) == 0  # the same split of a dataset moved since the export: scored
    for text in (manifest.read_text(), json.dumps({**entry, "split": "test", "methods": ["maps"]})):
        manifest.write_text(text)
        assert run(parse([*argv[:-1], str(manifest)])) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and manifest.read_text() == text, err
        assert f"--out {manifest}: the manifest of an export-scoremaps run" in err
