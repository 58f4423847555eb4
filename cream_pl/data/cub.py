"""Convert the original CUB-200-2011 layout into the WSOL benchmark format.

Reads ``images.txt`` (``<id> <path>``), ``image_class_labels.txt`` (``<id> <class>``, 1-based),
``train_test_split.txt`` (``<id> <1 = train, 0 = test>``), ``bounding_boxes.txt``
(``<id> <x> <y> <w> <h>``, floats) and optionally ``classes.txt``, and writes
``<out>/metadata/{train,test}``, ``<out>/class_names.txt`` and a symlink ``<out>/images`` to
``<src>/images``. Image sizes are read from the image headers.

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

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cream_pl.core.errors import UserFileNotFoundError, UserValueError
from cream_pl.core.io import check_output_dir
from cream_pl.data.images import read_image_size
from cream_pl.data.metadata import MetadataError, SampleRecord, write_class_names, write_split

__all__ = ["CubSummary", "convert_cub", "cub_box_to_inclusive"]


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

    Example:
        >>> cub_box_to_inclusive(60.0, 27.0, 325.0, 304.0, (500, 335))
        ((60, 27, 385, 331), False)
        >>> cub_box_to_inclusive(10.0, 5.0, 90.0, 20.0, (100, 50))
        ((10, 5, 99, 25), True)
    """
    width, height = size
    raw = (int(x), int(y), int(x + w), int(y + h))
    box = (min(max(raw[0], 0), width - 1), min(max(raw[1], 0), height - 1),
           min(max(raw[2], 0), width - 1), min(max(raw[3], 0), height - 1))
    return box, box != raw


def _read_table(path: Path, num_fields: int) -> dict[str, tuple[int, list[str]]]:
    """``id -> (line, fields)`` of a whitespace-separated CUB file."""
    if not path.is_file():
        raise MetadataError(path, None, "file not found (is --src the CUB_200_2011 directory?)")
    table: dict[str, tuple[int, list[str]]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):  # BOM dropped
        if line.strip() == "":
            continue
        fields = line.split()
        if len(fields) != num_fields:
            raise MetadataError(path, number, f"expected {num_fields} space-separated fields, got {len(fields)}: "
                                f"{line!r}")
        if fields[0] in table:
            raise MetadataError(path, number, f"duplicate image id {fields[0]} (first on line {table[fields[0]][0]})")
        table[fields[0]] = (number, fields[1:])
    return table


def convert_cub(
    src: Path | str,
    out: Path | str,
    *,
    val_per_class: int = 0,
    seed: int = 0,
    link_images: bool = True,
) -> CubSummary:
    """Convert ``src`` (CUB_200_2011) into the benchmark format under ``out``.

    Args:
        src: the CUB_200_2011 directory (with ``images/`` and the ``.txt`` files).
        out: output dataset root.
        val_per_class: when > 0, move this many random train images of each class into ``val``.
        seed: seed of the val draw.
        link_images: create the ``<out>/images -> <src>/images`` symlink.

    Returns:
        A :class:`CubSummary`.
    """
    if val_per_class < 0:
        raise ValueError(f"val_per_class must be >= 0, got {val_per_class}")
    src, out = Path(src), Path(out)
    image_dir = src / "images"
    if not image_dir.is_dir():
        raise UserFileNotFoundError(f"{image_dir} not found (is --src the CUB_200_2011 directory?)")
    # every output problem is found before the 11788 image headers are read
    check_output_dir(out)
    link = out / "images"
    if link_images:
        if link.is_symlink():
            if Path(os.readlink(link)).resolve() != image_dir.resolve():
                raise UserValueError(f"{link} already links to {os.readlink(link)}, not {image_dir.resolve()}")
        elif link.exists():
            raise UserValueError(f"{link} exists and is not a symlink; remove it or pass --no-link")
    images = _read_table(src / "images.txt", 2)
    labels = _read_table(src / "image_class_labels.txt", 2)
    splits = _read_table(src / "train_test_split.txt", 2)
    boxes = _read_table(src / "bounding_boxes.txt", 5)
    class_names: list[str] | None = None
    if (src / "classes.txt").is_file():
        classes = _read_table(src / "classes.txt", 2)
        bad = [k for k in classes if not k.isdigit()]
        if bad:
            raise MetadataError(src / "classes.txt", classes[bad[0]][0], f"class id {bad[0]!r} is not an integer")
        ids = sorted(classes, key=int)
        if [int(k) for k in ids] != list(range(1, len(ids) + 1)):
            raise MetadataError(src / "classes.txt", None, "class ids must be 1..N without gaps")
        class_names = [classes[k][1][0] for k in ids]
    num_classes = len(class_names) if class_names is not None else None

    records: dict[str, list[SampleRecord]] = {"train": [], "test": []}
    clipped = 0
    images_txt = src / "images.txt"
    for cub_id, (line, (rel,)) in images.items():
        for table, name in ((labels, "image_class_labels.txt"), (splits, "train_test_split.txt"),
                            (boxes, "bounding_boxes.txt")):
            if cub_id not in table:
                raise MetadataError(images_txt, line, f"image id {cub_id} ({rel}) has no line in {name}")
        label_line, (raw_label,) = labels[cub_id]
        if not raw_label.isdigit() or int(raw_label) < 1 or (num_classes is not None and int(raw_label) > num_classes):
            raise MetadataError(src / "image_class_labels.txt", label_line,
                                f"class {raw_label!r} is not an integer in [1, {num_classes or 'num_classes'}]")
        split_line, (flag,) = splits[cub_id]
        if flag not in ("0", "1"):
            raise MetadataError(src / "train_test_split.txt", split_line, f"expected 1 (train) or 0 (test), got {flag!r}")
        box_line, raw_box = boxes[cub_id]
        try:
            x, y, w, h = (float(v) for v in raw_box)
        except ValueError:
            raise MetadataError(src / "bounding_boxes.txt", box_line, f"box values must be numbers: {raw_box}") from None
        if w <= 0 or h <= 0 or x < 0 or y < 0:
            raise MetadataError(src / "bounding_boxes.txt", box_line, f"invalid box x={x} y={y} w={w} h={h}")
        size = read_image_size(image_dir / rel)
        box, was_clipped = cub_box_to_inclusive(x, y, w, h, size)
        clipped += was_clipped
        split = "train" if flag == "1" else "test"
        records[split].append(SampleRecord(rel, int(raw_label) - 1, size, (box,)))  # type: ignore[arg-type]

    found = {r.label for rs in records.values() for r in rs}
    num_classes = num_classes or max(found) + 1
    val: list[SampleRecord] = []
    if val_per_class:
        rng = np.random.default_rng(seed)
        chosen: set[str] = set()
        for c in range(num_classes):
            pool = [r.image_id for r in records["train"] if r.label == c]
            if len(pool) <= val_per_class:
                raise ValueError(f"class {c} has only {len(pool)} train images; cannot move {val_per_class} to val")
            chosen.update(pool[i] for i in rng.choice(len(pool), val_per_class, replace=False))
        val = [r for r in records["train"] if r.image_id in chosen]
        records["train"] = [r for r in records["train"] if r.image_id not in chosen]

    meta_root = out / "metadata"
    for split, rs in (("train", records["train"]), ("val", val), ("test", records["test"])):
        if rs:
            write_split(meta_root / split, rs)
    if class_names is not None:
        write_class_names(out / "class_names.txt", class_names)
    if link_images and not link.is_symlink():
        link.symlink_to(image_dir.resolve(), target_is_directory=True)
    return CubSummary(out, num_classes, len(records["train"]), len(val), len(records["test"]), clipped)
