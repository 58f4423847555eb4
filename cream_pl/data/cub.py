"""Convert the original CUB-200-2011 layout into the WSOL benchmark format.

Reads ``images.txt`` (``<id> <path>``, the path may hold spaces), ``image_class_labels.txt``
(``<id> <class>``, 1-based), ``train_test_split.txt`` (``<id> <1 = train, 0 = test>``), ``bounding_boxes.txt``
(``<id> <x> <y> <w> <h>``, floats) and optionally ``classes.txt``, and writes
``<out>/metadata/{train,test}``, ``<out>/class_names.txt`` and a symlink ``<out>/images`` to
``<src>/images``. Image sizes are read from the image headers. Every line of the text files is
checked before the first image header is read (the four files must list the same image ids), and the
output is staged and moved into place at the end: a bad line or image leaves ``out`` as it was. ``out``
must lie outside ``src`` (and ``src`` outside the places ``out`` gets written).

A rerun into the same ``out`` replaces what the earlier run wrote (recorded in
``<out>/cub_convert.json``) and removes the splits it no longer writes (a val carved by an earlier
``val_per_class``); it keeps a val it does not write and never wrote when that val is one of CUB's
classes (every image in a class folder of ``src`` with that folder's label: the benchmark's CUBV2 val,
put in ``<out>/metadata/val`` by hand), and refuses an ``out`` that holds another dataset (a
synthetic one, metadata written by hand, a val of other classes) unless ``overwrite``, which removes
all of it but such a CUB val: never a mix of two datasets.

Boxes follow wsolevaluation's CUB metadata: ``x0 = int(x)``, ``y0 = int(y)``, ``x1 = int(x + w)``,
``y1 = int(y + h)`` (e.g. CUB's ``60.0 27.0 325.0 304.0`` for
``Black_Footed_Albatross_0046_18.jpg`` is ``60,27,385,331`` in ``metadata/CUB/test/localization.txt``),
clipped to ``[0, W-1] x [0, H-1]`` (never needed on the real CUB; the number clipped is reported).

CUB has no validation split. The benchmark's ``val`` (train-fullsup) is **CUBV2**, a separate set of
new images (wsolevaluation ``metadata/CUB/val``); put it in ``<out>/metadata/val`` yourself, or
carve a held-out val from train with ``val_per_class`` (those images leave train).

Example:
    $ cream-pl data cub --src data/CUB_200_2011 --out data/cub --val-per-class 5
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cream_pl.core.errors import UserFileNotFoundError, UserValueError
from cream_pl.core.io import atomic_write_text, check_output_dir
from cream_pl.data.images import ImageFileError, read_image_size
from cream_pl.data.metadata import MetadataError, SampleRecord, leaves_root, write_class_names, write_split

__all__ = ["CubSummary", "convert_cub", "cub_box_to_inclusive"]

MARKER = "cub_convert.json"
"""What a conversion wrote into ``out`` (its splits, source and options): the splits a rerun replaces."""
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class CubSummary:
    """What :func:`convert_cub` wrote."""

    out: Path
    num_classes: int
    num_train: int
    num_val: int
    num_test: int
    num_clipped_boxes: int


def cub_box_to_inclusive(x: float, y: float, w: float, h: float, size: tuple[int, int]) -> tuple[tuple[int, ...], bool]:
    """CUB ``x, y, w, h`` to an inclusive box as in wsolevaluation; returns ``(box, clipped)``.

    The values must be finite (:func:`convert_cub` refuses the others, naming the line).

    Example:
        >>> cub_box_to_inclusive(60.0, 27.0, 325.0, 304.0, (500, 335))
        ((60, 27, 385, 331), False)
        >>> cub_box_to_inclusive(10.0, 5.0, 90.0, 20.0, (100, 50))
        ((10, 5, 99, 25), True)
    """
    if not all(math.isfinite(v) for v in (x, y, w, h, x + w, y + h)):
        raise ValueError(f"box values must be finite numbers, got x={x} y={y} w={w} h={h}")
    width, height = size
    raw = (int(x), int(y), int(x + w), int(y + h))
    box = (min(max(raw[0], 0), width - 1), min(max(raw[1], 0), height - 1),
           min(max(raw[2], 0), width - 1), min(max(raw[3], 0), height - 1))
    return box, box != raw


def _ascii_int(value: str) -> int | None:
    """``int(value)`` for plain ASCII digits only (``"²".isdigit()`` is true, ``int("²")`` fails)."""
    return int(value) if value.isascii() and value.isdigit() else None


def _read_table(path: Path, num_fields: int, key: str = "image id", text_last: bool = False,
                ) -> dict[str, tuple[int, list[str]]]:
    """``id -> (line, fields)`` of a whitespace-separated CUB file.

    With ``text_last`` the last field is the rest of the line (CUB's ``<id> <path>``: a folder or class name
    may hold spaces, which the comma-separated benchmark format keeps).
    """
    if not path.is_file():
        raise MetadataError(path, None, "file not found (is --src the CUB_200_2011 directory?)")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise MetadataError(path, None, f"cannot read the file: {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8-sig")  # BOM dropped
    except UnicodeDecodeError as err:
        raise MetadataError(path, raw[: err.start].count(b"\n") + 1, "not valid UTF-8 text") from None
    table: dict[str, tuple[int, list[str]]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip() == "":
            continue
        fields = line.split(maxsplit=num_fields - 1) if text_last else line.split()
        if text_last and len(fields) == num_fields:
            fields[-1] = fields[-1].rstrip()  # trailing blanks are layout, as for the other files
        if len(fields) != num_fields:
            shown = repr(line) if len(line) <= 120 else repr(line[:120]) + "..."
            raise MetadataError(path, number, f"expected {num_fields} space-separated fields, got {len(fields)}: "
                                f"{shown}")
        if fields[0] in table:
            raise MetadataError(path, number, f"duplicate {key} {fields[0]} (first on line {table[fields[0]][0]})")
        table[fields[0]] = (number, fields[1:])
    if not table:
        raise MetadataError(path, None, "empty file (no lines)")
    return table


@dataclass(frozen=True)
class _Row:
    """One image of ``images.txt``, every text field checked (the header is read later)."""

    rel: str
    line: int  # in images.txt
    label: int  # 0-based
    split: str
    box: tuple[float, float, float, float]
    box_line: int


def _check_image_path(images_txt: Path, line: int, rel: str) -> None:
    if "," in rel:
        raise MetadataError(images_txt, line, f"image path {rel!r} contains a comma, which the benchmark format "
                            "cannot hold")
    if any(ord(c) < 32 or ord(c) == 127 for c in rel):
        raise MetadataError(images_txt, line, f"image path {rel!r} contains a control character")
    if leaves_root(rel):
        raise MetadataError(images_txt, line, f"image path {rel!r} must be relative to images/ and stay inside it")


def _check_ids_listed(table: dict[str, tuple[int, list[str]]], path: Path,
                      images: dict[str, tuple[int, list[str]]]) -> None:
    """Refuse an id of ``path`` that ``images.txt`` lacks: the conversion goes by ``images.txt``, and would drop
    that image silently (a copy of CUB with ``images.txt`` cut short)."""
    for cub_id, (line, _) in table.items():
        if cub_id not in images:
            raise MetadataError(path, line, f"image id {cub_id} is not in images.txt (which lists {len(images)} "
                                "images)")


def _read_rows(src: Path) -> tuple[list[_Row], list[str] | None]:
    """Every line of the CUB text files checked, before any image is opened; returns the rows and class names."""
    images_txt, labels_txt = src / "images.txt", src / "image_class_labels.txt"
    splits_txt, boxes_txt, classes_txt = src / "train_test_split.txt", src / "bounding_boxes.txt", src / "classes.txt"
    images = _read_table(images_txt, 2, text_last=True)
    labels = _read_table(labels_txt, 2)
    splits = _read_table(splits_txt, 2)
    boxes = _read_table(boxes_txt, 5)
    for table, path in ((labels, labels_txt), (splits, splits_txt), (boxes, boxes_txt)):
        _check_ids_listed(table, path, images)
    class_names: list[str] | None = None
    if classes_txt.is_file():
        classes = _read_table(classes_txt, 2, key="class id", text_last=True)
        bad = [k for k in classes if _ascii_int(k) is None]
        if bad:
            raise MetadataError(classes_txt, classes[bad[0]][0], f"class id {bad[0]!r} is not an integer")
        ids = sorted(classes, key=int)
        if [int(k) for k in ids] != list(range(1, len(ids) + 1)):
            raise MetadataError(classes_txt, None, "class ids must be 1..N without gaps")
        class_names = [classes[k][1][0] for k in ids]
        first: dict[str, str] = {}
        for k in ids:  # CUB's names carry their id ("001.Black_footed_Albatross"): a repeat is a pasted line
            name = classes[k][1][0]
            if name in first:
                raise MetadataError(classes_txt, classes[k][0],
                                    f"class name {name!r} repeated (first on line {classes[first[name]][0]})")
            first[name] = k
    num_classes = len(class_names) if class_names is not None else None

    rows: list[_Row] = []
    path_line: dict[str, int] = {}
    for cub_id, (line, (rel,)) in images.items():
        _check_image_path(images_txt, line, rel)
        if rel in path_line:
            raise MetadataError(images_txt, line, f"duplicate image path {rel!r} (first on line {path_line[rel]})")
        path_line[rel] = line
        for table, name in ((labels, labels_txt.name), (splits, splits_txt.name), (boxes, boxes_txt.name)):
            if cub_id not in table:
                raise MetadataError(images_txt, line, f"image id {cub_id} ({rel}) has no line in {name}")
        label_line, (raw_label,) = labels[cub_id]
        label = _ascii_int(raw_label)
        if label is None or label < 1 or (num_classes is not None and label > num_classes):
            raise MetadataError(labels_txt, label_line,
                                f"class {raw_label!r} is not an integer in [1, {num_classes or 'num_classes'}]")
        split_line, (flag,) = splits[cub_id]
        if flag not in ("0", "1"):
            raise MetadataError(splits_txt, split_line, f"expected 1 (train) or 0 (test), got {flag!r}")
        box_line, raw_box = boxes[cub_id]
        try:
            x, y, w, h = (float(v) for v in raw_box)
        except ValueError:
            raise MetadataError(boxes_txt, box_line, f"box values must be numbers: {raw_box}") from None
        if not all(math.isfinite(v) for v in (x, y, w, h, x + w, y + h)):
            raise MetadataError(boxes_txt, box_line, f"box values must be finite numbers: {raw_box}")
        if w <= 0 or h <= 0 or x < 0 or y < 0:
            raise MetadataError(boxes_txt, box_line, f"invalid box x={x} y={y} w={w} h={h}")
        rows.append(_Row(rel, line, label - 1, "train" if flag == "1" else "test", (x, y, w, h), box_line))
    return rows, class_names


def _load_marker(marker: Path) -> set[str]:
    """The splits an earlier :func:`convert_cub` wrote into this ``out`` (its ``cub_convert.json``) and that are still
    as it wrote them (a split replaced by hand since, e.g. the benchmark's CUBV2 val, is not its own any more)."""
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
        splits, sha1 = info["splits"], info.get("image_ids_sha1", {})
        if not isinstance(splits, list) or not all(isinstance(s, str) and s in SPLITS for s in splits) \
                or not isinstance(sha1, dict):
            raise TypeError
    except (OSError, ValueError, TypeError, KeyError, RecursionError):
        raise UserValueError(f"{marker}: not a record of `cream-pl data cub` (unreadable or unexpected content); "
                             "remove it and the dataset it describes, or choose another --out") from None
    meta = marker.parent / "metadata"
    return {s for s in splits if s not in sha1 or _ids_sha1(meta / s) == sha1[s]}


def _ids_sha1(split_dir: Path) -> str | None:
    """The split's ``image_ids.txt`` hash (``None`` without one): what a rerun recognises as its own."""
    from cream_pl.core.io import file_sha1

    path = split_dir / "image_ids.txt"
    return file_sha1(path) if path.is_file() else None


def _foreign_val(val_dir: Path, rows: list[_Row]) -> str | None:
    """Why ``val_dir`` is not a val of this CUB's classes, or ``None`` when it is.

    wsolevaluation's CUBV2 val holds new images, so its ids are not in ``images.txt``; what it shares with CUB is
    the class folders and their labels (``001.Black_footed_Albatross/30107316117.jpg,0``). Any other val is
    another dataset's: kept beside CUB's train and test, it would mix two datasets.
    """
    folders: dict[str, set[int]] = {}
    for row in rows:
        folders.setdefault(row.rel.split("/")[0], set()).add(row.label)
    labels = val_dir / "class_labels.txt"
    try:
        lines = [(n, t) for n, t in enumerate(labels.read_text(encoding="utf-8-sig").splitlines(), 1) if t.strip()]
    except (OSError, UnicodeDecodeError):
        return f"no readable {labels.name}"
    if not lines:
        return f"{labels.name} is empty"
    for number, line in lines:
        image_id, _, raw = line.partition(",")
        folder = image_id.split("/")[0]
        if "/" not in image_id or folder not in folders:
            return f"{labels.name}:{number}: image {image_id!r} is not in a class folder of --src"
        if _ascii_int(raw.strip()) not in folders[folder]:
            return f"{labels.name}:{number}: label {raw.strip()!r} is not the class of {folder} in --src"
    return None


def _plan_replace(out: Path, rows: list[_Row], writes_val: bool, link_images: bool, overwrite: bool,
                  ) -> tuple[set[str], list[Path]]:
    """What a conversion into ``out`` replaces: ``(own splits, other paths to remove first)``; refuses the rest.

    The splits an earlier conversion wrote (listed in its ``cub_convert.json``, unchanged since) are replaced,
    or removed when the new one does not write them (a val carved by an earlier ``--val-per-class``). A
    synthetic dataset, or anything else in the places the conversion writes (metadata written by hand, or by
    a ``data cub`` of before the record) is refused unless ``overwrite``, which removes them (a synthetic
    dataset whole). A val the conversion does not write is kept when it is a val of CUB's classes (the
    benchmark's CUBV2 ``val``, put there by hand); another val is the other dataset's, refused or removed with it.
    """
    meta = out / "metadata"
    marker = out / MARKER
    own = _load_marker(marker) if marker.is_file() else set()
    existing = sorted(p.name for p in meta.iterdir()) if meta.is_dir() else []
    writes = {"train", "test"} | ({"val"} if writes_val else set())
    conflicts = [meta / s for s in existing if s not in own and s in writes]
    why: dict[Path, str] = {}  # a conflict's reason, where its path alone does not say it
    if "val" in existing and "val" not in own and "val" not in writes:
        reason = _foreign_val(meta / "val", rows)
        if reason is not None:
            conflicts.append(meta / "val")
            why[meta / "val"] = f" ({reason})"
    if (out / "class_names.txt").exists() and not marker.is_file():
        conflicts.append(out / "class_names.txt")
    synth = out / "synth_config.json"
    if overwrite:
        if synth.exists():  # a synthetic dataset goes whole: its val is no CUB split
            remove = [meta, out / "class_names.txt", synth, out / "masks"] + ([out / "images"] if link_images else [])
        else:
            remove = [*conflicts] + ([out / "images"] if link_images and (out / "images").is_symlink() else [])
        return own, [p for p in remove if p.exists() or p.is_symlink()]
    if synth.exists():
        raise UserValueError(f"{out} holds a synthetic dataset ({synth.name}); `data cub` would mix its splits "
                             "with it: choose another --out, or pass --overwrite to replace it")
    if conflicts:
        raise UserValueError(f"{out} already holds a dataset that this `data cub` did not write (or a split changed "
                             f"since): {', '.join(str(p) + why.get(p, '') for p in conflicts)}; choose another "
                             "--out, or pass --overwrite to replace " + ("it" if len(conflicts) == 1 else "them")
                             + " (a val of CUB's classes, e.g. the benchmark's CUBV2, stays)")
    return own, []


def _check_apart(src: Path, out: Path) -> None:
    """Refuse an ``out`` that is ``src`` or lies in it (the dataset would be written into the CUB tree, with an
    ``images -> images`` self-link in ``src/images``), and a ``src`` in a place of ``out`` that a conversion
    writes or an ``--overwrite`` removes (the CUB images would go with it)."""
    s, o = src.resolve(), out.resolve()
    if o == s:
        raise UserValueError(f"{out}: --out is the --src folder; choose a folder outside the CUB tree")
    if s in o.parents:
        raise UserValueError(f"{out}: --out lies inside --src {src}; choose a folder outside the CUB tree")
    for name in ("metadata", "images", "masks"):
        place = o / name
        if s == place or place in s.parents:
            raise UserValueError(f"{src}: --src lies in {out / name}, which `data cub` writes into --out (or "
                                 "--overwrite removes); move the CUB tree or choose another --out")


def _check_link(src: Path, out: Path, rows: list[_Row], link_images: bool, remove_first: list[Path]) -> None:
    """``<out>/images`` must be (or become) the CUB images: the link to ``src/images``, or with ``--no-link`` a
    folder holding every CUB image (another dataset's images beside CUB's metadata would be a mix)."""
    image_dir, link = src / "images", out / "images"
    if link in remove_first or not (link.exists() or link.is_symlink()):
        return
    if link_images:
        if link.is_symlink():
            if Path(os.readlink(link)).resolve() != image_dir.resolve():
                raise UserValueError(f"{link} already links to {os.readlink(link)}, not {image_dir.resolve()}")
        else:
            raise UserValueError(f"{link} exists and is not a symlink; remove it, or pass --no-link if it holds "
                                 "the CUB images")
        return
    missing = next((r for r in rows if not (link / r.rel).is_file()), None)
    if missing is not None:
        raise UserValueError(f"{link} has no {missing.rel} (images.txt:{missing.line}): with --no-link it must hold "
                             "the CUB images; remove it or choose another --out")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def convert_cub(
    src: Path | str,
    out: Path | str,
    *,
    val_per_class: int = 0,
    seed: int = 0,
    link_images: bool = True,
    overwrite: bool = False,
) -> CubSummary:
    """Convert ``src`` (CUB_200_2011) into the benchmark format under ``out``.

    Args:
        src: the CUB_200_2011 directory (with ``images/`` and the ``.txt`` files).
        out: output dataset root.
        val_per_class: when > 0, move this many random train images of each class into ``val``.
        seed: seed of the val draw.
        link_images: create the ``<out>/images -> <src>/images`` symlink.
        overwrite: replace another dataset found at ``out`` (see the module docstring).

    Returns:
        A :class:`CubSummary`.
    """
    if val_per_class < 0:
        raise ValueError(f"val_per_class must be >= 0, got {val_per_class}")
    src, out = Path(src), Path(out)
    image_dir = src / "images"
    if not image_dir.is_dir():
        raise UserFileNotFoundError(f"{image_dir} not found (is --src the CUB_200_2011 directory?)")
    # every input and output problem is found before the 11788 image headers are read
    _check_apart(src, out)
    check_output_dir(out)
    rows, class_names = _read_rows(src)  # every text line; the plan below needs the class folders
    own, remove_first = _plan_replace(out, rows, val_per_class > 0, link_images, overwrite)
    _check_link(src, out, rows, link_images, remove_first)
    link = out / "images"

    num_classes = len(class_names) if class_names is not None else max(r.label for r in rows) + 1
    chosen: set[str] = set()  # the val draw, before the long work too
    if val_per_class:
        rng = np.random.default_rng(seed)
        for c in range(num_classes):
            pool = [r.rel for r in rows if r.split == "train" and r.label == c]
            if len(pool) <= val_per_class:
                name = f" ({class_names[c]})" if class_names is not None else ""
                raise UserValueError(f"--val-per-class {val_per_class}: class {c} has only {len(pool)} train images"
                                     f"{name}; cannot move {val_per_class} to val and keep one in train")
            chosen.update(pool[i] for i in rng.choice(len(pool), val_per_class, replace=False))

    records: dict[str, list[SampleRecord]] = {"train": [], "val": [], "test": []}
    clipped = 0
    for row in rows:
        try:
            size = read_image_size(image_dir / row.rel)
        except ImageFileError as err:  # the line to fix or drop
            raise ImageFileError(err.path, f"{err.reason} (images.txt:{row.line})") from None
        x, y, w, h = row.box
        if int(x) > size[0] - 1 or int(y) > size[1] - 1:
            raise MetadataError(src / "bounding_boxes.txt", row.box_line, f"box x={x} y={y} w={w} h={h} starts "
                                f"outside the {size[0]}x{size[1]} image {image_dir / row.rel}")
        box, was_clipped = cub_box_to_inclusive(x, y, w, h, size)
        clipped += was_clipped
        split = "val" if row.rel in chosen else row.split
        records[split].append(SampleRecord(row.rel, row.label, size, (box,)))  # type: ignore[arg-type]

    written = [s for s in SPLITS if records[s]]
    info = {"generator": "cream_pl.data.cub", "src": str(src.resolve()), "val_per_class": val_per_class,
            "seed": seed, "link_images": link_images, "splits": written}
    _commit(out, records, class_names, own, remove_first, info)
    if link_images and not link.is_symlink():
        link.symlink_to(image_dir.resolve(), target_is_directory=True)
    return CubSummary(out, num_classes, len(records["train"]), len(records["val"]), len(records["test"]), clipped)


def _commit(out: Path, records: dict[str, list[SampleRecord]], class_names: list[str] | None, own: set[str],
            remove_first: list[Path], info: dict) -> None:
    """Write the splits into a staging folder beside them (``<out>/metadata/.cub_convert.*``: the renames that put
    them in place stay on one filesystem, wherever ``metadata/`` lives), then move them into place.

    A split this conversion does not write but an earlier one did (``own``) is removed; the marker lists
    the union while the splits are moved, then this conversion's splits with their ``image_ids.txt`` hashes.
    """
    created = not out.exists()
    meta = out / "metadata"
    made_meta = not meta.exists()
    meta.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".cub_convert.", dir=meta))
    try:
        for split, rs in records.items():
            if rs:
                write_split(stage / split, rs)
        # everything is written: from here on only removals and renames
        for path in remove_first:
            for p in ([c for c in meta.iterdir() if c != stage] if path == meta else [path]):  # the stage stays
                _remove(p)
        marker = out / MARKER
        atomic_write_text(marker, json.dumps({**info, "splits": sorted(own | set(info["splits"]))}, indent=2))
        old = stage / "old"
        old.mkdir()
        for split in SPLITS:
            if (meta / split).exists() and (split in own or records[split]):
                os.replace(meta / split, old / split)  # an earlier run's split (own: checked by _plan_replace)
            if records[split]:
                os.replace(stage / split, meta / split)
        if class_names is not None:
            write_class_names(out / "class_names.txt", class_names)
        elif (out / "class_names.txt").exists():
            (out / "class_names.txt").unlink()  # an earlier run's (its classes.txt is gone)
        sha1 = {s: _ids_sha1(meta / s) for s in info["splits"]}
        atomic_write_text(marker, json.dumps({**info, "image_ids_sha1": sha1}, indent=2))
    except BaseException:
        for split in SPLITS:  # a failure between the two renames: the earlier split goes back in place
            if (stage / "old" / split).exists() and not (meta / split).exists():
                os.replace(stage / "old" / split, meta / split)
        shutil.rmtree(stage, ignore_errors=True)
        if made_meta and meta.is_dir() and not any(meta.iterdir()):
            meta.rmdir()
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # nothing of ours left behind
        raise
    shutil.rmtree(stage, ignore_errors=True)
