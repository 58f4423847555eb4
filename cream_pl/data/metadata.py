"""Reader, writer and format checker for the WSOL benchmark metadata (clovaai/wsolevaluation layout).

A split lives in ``<metadata_root>/<split>/`` and has four files, comma separated, with **no
trailing newline**:

- ``image_ids.txt``: ``<image_id>`` (a path relative to the image root, and the key everywhere);
- ``class_labels.txt``: ``<image_id>,<label>`` with a 0-based integer label;
- ``image_sizes.txt``: ``<image_id>,<width>,<height>`` (may be empty when the split has no boxes);
- ``localization.txt``: either boxes ``<image_id>,<x0>,<y0>,<x1>,<y1>`` (inclusive integer pixels,
  one line per box) or OpenImages mask lines ``<image_id>,<mask_png>,<ignore_png>`` (the ignore
  path on the first line of an image only); may be empty (no localization, e.g. a train split).

cream-pl adds one optional file, ``localization_masks.txt`` (mask lines), so that a split can
carry both boxes and masks. Every problem raises :class:`MetadataError` naming the file and the
line, or, with ``on_bad_sample="skip"``, drops the image and records the reason. ``check_split``
decodes images and masks with :mod:`cream_pl.data.images`, which never imports this module.

Example:
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> write_split(root / "test", [SampleRecord("a/1.png", 0, (20, 10), ((2, 1, 9, 8),))])
    >>> meta = read_split(root / "test")
    >>> meta.samples[0].boxes, meta.has_boxes, meta.has_masks
    (((2, 1, 9, 8),), True, False)
    >>> (root / "test" / "localization.txt").read_text()
    'a/1.png,2,1,9,8'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cream_pl.core.io import atomic_write_text
from cream_pl.data.errors import WSOLDataError  # re-exported here, its home before data.errors

__all__ = [
    "data_sha1",
    "leaked_images",
    "leaves_root",
    "IMAGE_IDS",
    "CLASS_LABELS",
    "IMAGE_SIZES",
    "LOCALIZATION",
    "LOCALIZATION_MASKS",
    "REQUIRED_FILES",
    "WSOLDataError",
    "MetadataError",
    "MaskRecord",
    "SampleRecord",
    "SplitMetadata",
    "read_split",
    "split_dirs",
    "split_has_boxes",
    "write_split",
    "check_split",
    "read_class_names",
    "write_class_names",
]

IMAGE_IDS = "image_ids.txt"
CLASS_LABELS = "class_labels.txt"
IMAGE_SIZES = "image_sizes.txt"
LOCALIZATION = "localization.txt"
LOCALIZATION_MASKS = "localization_masks.txt"
REQUIRED_FILES = (IMAGE_IDS, CLASS_LABELS, IMAGE_SIZES, LOCALIZATION)
_BOM = "\ufeff"

OnBadSample = Literal["error", "skip"]


class MetadataError(WSOLDataError):
    """A problem in a metadata file; the message starts with ``<file>:<line>:`` when a line is known.

    Attributes:
        path: the metadata file.
        line: 1-based line number, or ``None`` for problems of the whole file.
    """

    def __init__(self, path: Path | str, line: int | None, message: str) -> None:
        self.path = Path(path)
        self.line = line
        self.reason = message
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class MaskRecord:
    """OpenImages-style masks of one image: instance mask PNGs and an optional ignore PNG.

    Paths are relative to the mask root.
    """

    mask_paths: tuple[str, ...]
    ignore_path: str | None = None


@dataclass(frozen=True)
class SampleRecord:
    """Everything the metadata says about one image.

    Attributes:
        image_id: relative image path (the key of every metadata file).
        label: 0-based class index.
        size: ``(width, height)`` from ``image_sizes.txt``, or ``None`` when the split has no sizes.
        boxes: ``XYXY_INCLUSIVE`` integer boxes in original pixels (empty when the split has none).
        masks: the image's masks, or ``None`` when the split has none.
        line: 1-based line of the image in ``image_ids.txt`` (0 for records not read from disk).
    """

    image_id: str
    label: int
    size: tuple[int, int] | None = None
    boxes: tuple[tuple[int, int, int, int], ...] = ()
    masks: MaskRecord | None = None
    line: int = 0


@dataclass
class SplitMetadata:
    """A parsed split: the kept samples in ``image_ids.txt`` order, and what was skipped."""

    split_dir: Path
    samples: list[SampleRecord]
    has_sizes: bool
    has_boxes: bool
    has_masks: bool
    skipped: list[str] = field(default_factory=list)
    num_listed: int = 0

    @property
    def image_ids_path(self) -> Path:
        return self.split_dir / IMAGE_IDS

    def __len__(self) -> int:
        return len(self.samples)


# ---------------------------------------------------------------------------------------------- reading


@dataclass
class _Problems:
    """Collects problems; raises at once in ``error`` mode."""

    mode: Literal["error", "skip", "collect"]
    items: list[tuple[str | None, MetadataError]] = field(default_factory=list)

    def add(self, path: Path, line: int | None, message: str, image_id: str | None = None) -> None:
        err = MetadataError(path, line, message)
        if self.mode == "error":
            raise err
        self.items.append((image_id, err))

    @property
    def bad_ids(self) -> set[str]:
        return {i for i, _ in self.items if i is not None}


def _read_lines(path: Path, problems: _Problems, strict: bool = False) -> list[tuple[int, str]]:
    """Return ``(line_number, text)`` pairs; an empty file gives no lines.

    One rule for every reader and for the checker (``read_split`` in ``fit`` and ``check_split``
    in ``cream-pl data check`` alike): a UTF-8 byte order mark at the start of the file is dropped
    and Windows (``\\r\\n``) and old Mac (``\\r``) line endings end a line, as in the reference's text mode
    (a ``\\r`` never ends up in a field). Only the trailing newline is reported by the strict check.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise MetadataError(path, None, "file not found (a split needs " + ", ".join(REQUIRED_FILES) + ")") from None
    except OSError as err:
        raise MetadataError(path, None, f"cannot read the file: {err}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise MetadataError(path, line, "not valid UTF-8 text") from None
    if text.startswith(_BOM):  # written by some Windows editors: not part of the first image id
        text = text[len(_BOM):]
    if text == "":
        return []
    lines = re.split(r"\r\n|\r|\n", text)  # the reference's text mode reads all three (old Mac files end in \r)
    if lines[-1] == "":  # one trailing newline: tolerated by the reference reader (readlines), not its format
        lines.pop()
        if strict:
            problems.add(path, len(lines), "trailing newline at the end of the file (the format has none)")
    return list(enumerate(lines, start=1))


def leaves_root(relative: str) -> bool:
    r"""Whether an image id (or any path meant to be relative) names a place outside the folder it is joined to: an
    absolute path, a drive letter, or a ``..`` part.

    Example:
        >>> [leaves_root(p) for p in ("a/b.jpg", "/a.jpg", "a/../../b.jpg", "C:x.jpg", "..\\b.jpg", "a..b.jpg")]
        [False, True, True, True, True, False]
    """
    parts = relative.replace("\\", "/").split("/")
    return relative.startswith(("/", "\\")) or ".." in parts or (len(relative) > 1 and relative[1] == ":")


def _bare(image_id: str) -> str:
    """An id without surrounding whitespace or byte order marks (only to name a near miss, never to match)."""
    return image_id.strip().strip(_BOM).strip()


INT_LIMIT = 2**31
"""Labels, sides and box coordinates lie strictly between -2**31 and 2**31 (int32, as image libraries hold them)."""


def _parse_int(value: str) -> int | None:
    """A metadata integer, or ``None``: not decimal digits (``'12²'``: ``isdigit`` took it, ``int`` did not) or
    outside ``(-INT_LIMIT, INT_LIMIT)`` (a side of ``10**400`` overflowed the float conversions). A sign is read as
    the reference's ``int`` reads it (``'+0'`` is 0).

    Example:
        >>> [_parse_int(v) for v in ("+0", "-3", " 007 ", "+-1", "+", "1_0", "2147483648")]
        [0, -3, 7, None, None, None, None]
    """
    v = value.strip()
    negative = v.startswith("-")
    raw = v[1:] if v.startswith(("+", "-")) else v
    if not raw.isdecimal():  # "" and "-" too
        return None
    digits = raw.lstrip("0") or "0"  # zero-padded numbers are numbers, however long the padding
    if len(digits) > 10:
        return None
    n = -int(digits) if negative else int(digits)
    return n if -INT_LIMIT < n < INT_LIMIT else None


def split_dirs(metadata_root: Path | str) -> list[Path]:
    """The split folders under ``metadata_root``, sorted; a hidden folder (a converter's staging folder) is none."""
    return sorted(p for p in Path(metadata_root).iterdir() if p.is_dir() and not p.name.startswith("."))


def split_has_boxes(split_dir: Path | str) -> bool:
    """Whether a split's ``localization.txt`` holds boxes (a mask-only split, as OpenImages', holds none): what box
    metrics, τ* and the box regressor need, checked before any work."""
    return any(s.boxes for s in read_split(split_dir).samples)


def read_split(
    split_dir: Path | str,
    *,
    num_classes: int | None = None,
    on_bad_sample: OnBadSample = "error",
    require_boxes: bool = False,
    _problems: _Problems | None = None,
    _strict: bool = False,
) -> SplitMetadata:
    """Read and validate one split of WSOL metadata.

    Args:
        split_dir: ``<metadata_root>/<split>``.
        num_classes: when given, labels must lie in ``[0, num_classes)``.
        on_bad_sample: ``"error"`` raises :class:`MetadataError` at the first problem; ``"skip"``
            drops every image with a problem and lists the reasons in ``SplitMetadata.skipped``.
        require_boxes: raise if ``localization.txt`` has no boxes.

    Returns:
        The :class:`SplitMetadata`.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> for name, text in [("image_ids.txt", "x.png"), ("class_labels.txt", "x.png,7"),
        ...                    ("image_sizes.txt", ""), ("localization.txt", "")]:
        ...     _ = (d / name).write_text(text)
        >>> try:
        ...     read_split(d, num_classes=5)
        ... except MetadataError as err:
        ...     print(err.path.name, err.line, err.reason)
        class_labels.txt 1 label 7 is out of range [0, 5) for image id 'x.png'
    """
    if on_bad_sample not in ("error", "skip"):
        raise ValueError(f"on_bad_sample must be 'error' or 'skip', got {on_bad_sample!r}")
    if num_classes is not None and num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise MetadataError(split_dir, None, "metadata split directory not found")
    problems = _problems if _problems is not None else _Problems(on_bad_sample)
    ids_path, labels_path = split_dir / IMAGE_IDS, split_dir / CLASS_LABELS
    sizes_path, loc_path = split_dir / IMAGE_SIZES, split_dir / LOCALIZATION

    # image_ids.txt
    id_line: dict[str, int] = {}
    for number, line in _read_lines(ids_path, problems, _strict):
        if line == "":
            problems.add(ids_path, number, "empty line (expected an image id)")
        elif "," in line:
            problems.add(ids_path, number, f"image id {line!r} contains a comma, which the format cannot hold", line)
        elif line in id_line:
            problems.add(ids_path, number, f"duplicate image id {line!r} (first on line {id_line[line]})", line)
        elif leaves_root(line):  # read from (and maps written to) a place outside the image root and the map folder
            problems.add(ids_path, number, f"image id {line!r} must be a path relative to the image root that stays "
                         "inside it (no leading '/', drive letter or '..')", line)
        else:
            if _strict and line.startswith("./"):
                problems.add(ids_path, number, f"image id {line!r} starts with './' (the format has none)", line)
            id_line[line] = number
    if not id_line and not problems.items:
        raise MetadataError(ids_path, None, "no image ids (the file is empty)")

    padded = {_bare(i): (i, n) for i, n in id_line.items() if _bare(i) != i}  # ids with invisible characters

    def known(path: Path, number: int, image_id: str) -> bool:
        if image_id in id_line:
            return True
        message = f"image id {image_id!r} is not listed in {IMAGE_IDS}"
        if _bare(image_id) in padded:  # the culprit is in image_ids.txt: name its line
            listed, line = padded[_bare(image_id)]
            message += f"; {ids_path}:{line} has {listed!r}, with spaces or a byte order mark around the id"
        problems.add(path, number, message)
        return False

    # class_labels.txt
    labels: dict[str, int] = {}
    label_line: dict[str, int] = {}
    for number, line in _read_lines(labels_path, problems, _strict):
        fields = line.split(",")
        if len(fields) != 2:
            problems.add(labels_path, number, f"expected '<image_id>,<label>' (2 fields), got {len(fields)}: {line!r}",
                         fields[0] or None)
            continue
        image_id, raw = fields
        if not known(labels_path, number, image_id):
            continue
        value = _parse_int(raw)
        if value is None:
            problems.add(labels_path, number, f"label {raw!r} is not an integer (below 2**31)", image_id)
        elif image_id in labels:
            problems.add(labels_path, number, f"second label for image id {image_id!r} (first on line "
                         f"{label_line[image_id]})", image_id)
        elif value < 0 or (num_classes is not None and value >= num_classes):
            rng = f"[0, {num_classes})" if num_classes is not None else "[0, num_classes)"
            problems.add(labels_path, number, f"label {value} is out of range {rng} for image id {image_id!r}", image_id)
        else:
            labels[image_id] = value
            label_line[image_id] = number

    # image_sizes.txt (empty = the split has no sizes)
    sizes: dict[str, tuple[int, int]] = {}
    size_lines = _read_lines(sizes_path, problems, _strict)
    for number, line in size_lines:
        fields = line.split(",")
        if len(fields) != 3:
            problems.add(sizes_path, number, f"expected '<image_id>,<width>,<height>' (3 fields), got {len(fields)}: "
                         f"{line!r}", fields[0] or None)
            continue
        image_id = fields[0]
        if not known(sizes_path, number, image_id):
            continue
        w, h = _parse_int(fields[1]), _parse_int(fields[2])
        if w is None or h is None or w < 1 or h < 1:
            problems.add(sizes_path, number, f"width and height must be positive integers below 2**31, got {fields[1]!r}, "
                         f"{fields[2]!r}", image_id)
        elif image_id in sizes:
            problems.add(sizes_path, number, f"second size for image id {image_id!r}", image_id)
        else:
            sizes[image_id] = (w, h)
    has_sizes = bool(size_lines)

    # localization.txt (+ optional localization_masks.txt)
    boxes: dict[str, list[tuple[int, int, int, int]]] = {}
    masks: dict[str, tuple[list[str], str | None]] = {}
    loc_lines = _read_lines(loc_path, problems, _strict)
    loc_kind: str | None = None
    for number, line in loc_lines:
        fields = line.split(",")
        kind = {5: "boxes", 3: "masks"}.get(len(fields))
        if kind is None:
            problems.add(loc_path, number, "expected a box line '<image_id>,<x0>,<y0>,<x1>,<y1>' or a mask line "
                         f"'<image_id>,<mask_png>,<ignore_png>', got {len(fields)} fields: {line!r}",
                         fields[0] or None)
            continue
        if loc_kind is None:
            loc_kind = kind
        elif kind != loc_kind:
            problems.add(loc_path, number, f"a {kind[:-2] if kind == 'boxes' else 'mask'} line in a file of "
                         f"{loc_kind} lines (one file holds one kind)", fields[0])
            continue
        if not known(loc_path, number, fields[0]):
            continue
        if kind == "boxes":
            _parse_box(loc_path, number, fields, sizes, has_sizes, problems, boxes)
        else:
            _parse_mask_line(loc_path, number, fields, problems, masks)
    masks_path = split_dir / LOCALIZATION_MASKS
    if masks_path.exists():
        if loc_kind == "masks":
            raise MetadataError(masks_path, None, f"{LOCALIZATION} already holds mask lines; "
                                f"{LOCALIZATION_MASKS} is only for splits whose {LOCALIZATION} has boxes")
        for number, line in _read_lines(masks_path, problems, _strict):
            fields = line.split(",")
            if len(fields) != 3:
                problems.add(masks_path, number, "expected '<image_id>,<mask_png>,<ignore_png>' (3 fields), got "
                             f"{len(fields)}: {line!r}", fields[0] or None)
                continue
            if known(masks_path, number, fields[0]):
                _parse_mask_line(masks_path, number, fields, problems, masks)
    has_boxes = loc_kind == "boxes"
    has_masks = loc_kind == "masks" or masks_path.exists() and bool(masks)
    if has_boxes and not has_sizes:
        raise MetadataError(sizes_path, None, f"empty, but {LOCALIZATION} has boxes; boxes need the image sizes")
    if require_boxes and not has_boxes:
        raise MetadataError(loc_path, None, "this split needs boxes but the file has none")

    # every listed image needs a label, a size (when sizes exist), a box/mask (when localization exists)
    for image_id, number in id_line.items():
        missing = []
        if image_id not in labels and image_id not in problems.bad_ids:
            missing.append(f"label in {CLASS_LABELS}")
        if has_sizes and image_id not in sizes and image_id not in problems.bad_ids:
            missing.append(f"size in {IMAGE_SIZES}")
        if has_boxes and image_id not in boxes and image_id not in problems.bad_ids and (
                not has_sizes or image_id in sizes):  # without its size, its box lines were not read
            missing.append(f"box in {LOCALIZATION}")
        if has_masks and image_id not in masks and image_id not in problems.bad_ids:
            missing.append(f"mask in {LOCALIZATION if loc_kind == 'masks' else LOCALIZATION_MASKS}")
        if missing:
            problems.add(ids_path, number, f"image id {image_id!r} has no " + " and no ".join(missing), image_id)

    bad = problems.bad_ids
    samples = [
        SampleRecord(
            image_id=i,
            label=labels[i],
            size=sizes.get(i),
            boxes=tuple(boxes.get(i, ())),
            masks=MaskRecord(tuple(masks[i][0]), masks[i][1]) if i in masks else None,
            line=n,
        )
        for i, n in id_line.items()
        if i not in bad
    ]
    skipped = [str(err) for _, err in problems.items]
    if not samples and _problems is None:
        raise MetadataError(ids_path, None, f"no usable sample left after skipping {len(skipped)} bad entries; "
                            f"first problem: {skipped[0] if skipped else 'none'}")
    return SplitMetadata(split_dir, samples, has_sizes, has_boxes, has_masks, skipped, num_listed=len(id_line))


def _parse_box(path: Path, number: int, fields: list[str], sizes: dict[str, tuple[int, int]], has_sizes: bool,
               problems: _Problems, boxes: dict[str, list[tuple[int, int, int, int]]]) -> None:
    image_id = fields[0]
    values = [_parse_int(v) for v in fields[1:]]
    if any(v is None for v in values):
        problems.add(path, number, f"box coordinates must be integers (inclusive pixels, below 2**31 in size), got "
                     f"{fields[1:]}", image_id)
        return
    x0, y0, x1, y1 = values  # type: ignore[misc]
    if x1 < x0 or y1 < y0:
        problems.add(path, number, f"inverted box {x0},{y0},{x1},{y1} (needs x0 <= x1 and y0 <= y1)", image_id)
        return
    size = sizes.get(image_id)
    if size is not None:
        w, h = size
        if x0 < 0 or y0 < 0 or x1 > w - 1 or y1 > h - 1:
            problems.add(path, number, f"box {x0},{y0},{x1},{y1} lies outside the {w}x{h} image (inclusive "
                         f"coordinates must satisfy 0 <= x <= {w - 1}, 0 <= y <= {h - 1})", image_id)
            return
    elif has_sizes:
        return  # the missing size is reported for this image id
    elif x0 < 0 or y0 < 0:
        problems.add(path, number, f"box {x0},{y0},{x1},{y1} has negative coordinates", image_id)
        return
    boxes.setdefault(image_id, []).append((x0, y0, x1, y1))


def _parse_mask_line(path: Path, number: int, fields: list[str], problems: _Problems,
                     masks: dict[str, tuple[list[str], str | None]]) -> None:
    image_id, mask_path, ignore_path = fields
    if mask_path == "":
        problems.add(path, number, "empty mask path", image_id)
        return
    if image_id in masks:
        if ignore_path != "":
            problems.add(path, number, "the ignore mask must be on the first line of an image only; later lines "
                         "end with an empty field", image_id)
            return
        masks[image_id][0].append(mask_path)
    else:
        masks[image_id] = ([mask_path], ignore_path or None)


# ---------------------------------------------------------------------------------------------- writing


def _check_field(value: str, what: str) -> str:
    if value == "" or any(c in value for c in ",\n\r"):
        raise ValueError(f"{what} {value!r} is empty or contains a comma or a newline, which the format cannot hold")
    return value


def write_split(split_dir: Path | str, samples: Sequence[SampleRecord]) -> None:
    """Write one split in the benchmark format (no trailing newline).

    Sizes are written when every sample has one (else ``image_sizes.txt`` is empty). Boxes go to
    ``localization.txt``; masks go to ``localization.txt`` when the split has no boxes, else to
    ``localization_masks.txt``.

    Args:
        split_dir: directory to create or overwrite.
        samples: the records, in the order to write.
    """
    split_dir = Path(split_dir)
    if not samples:
        raise ValueError("write_split needs at least one sample")
    seen: set[str] = set()
    for s in samples:
        _check_field(s.image_id, "image id")
        if s.image_id in seen:
            raise ValueError(f"duplicate image id {s.image_id!r}")
        seen.add(s.image_id)
        if s.label < 0:
            raise ValueError(f"negative label {s.label} for {s.image_id!r}")
        for b in s.boxes:
            if len(b) != 4 or b[2] < b[0] or b[3] < b[1] or min(b) < 0:
                raise ValueError(f"invalid inclusive box {b} for {s.image_id!r}")
            if s.size is not None and (b[2] > s.size[0] - 1 or b[3] > s.size[1] - 1):
                raise ValueError(f"box {b} lies outside the {s.size[0]}x{s.size[1]} image {s.image_id!r}")
        if s.masks is not None:
            for p in s.masks.mask_paths:
                _check_field(p, "mask path")
            if s.masks.ignore_path is not None:
                _check_field(s.masks.ignore_path, "ignore path")
    with_boxes = [s for s in samples if s.boxes]
    with_masks = [s for s in samples if s.masks is not None]
    if with_boxes and len(with_boxes) != len(samples):
        raise ValueError("either every sample has boxes or none does")
    if with_masks and len(with_masks) != len(samples):
        raise ValueError("either every sample has masks or none does")
    if with_boxes and any(s.size is None for s in samples):
        raise ValueError("samples with boxes need sizes")
    all_sizes = all(s.size is not None for s in samples)

    mask_lines = []
    for s in with_masks:
        assert s.masks is not None
        for k, p in enumerate(s.masks.mask_paths):
            ignore = (s.masks.ignore_path or "") if k == 0 else ""
            mask_lines.append(f"{s.image_id},{p},{ignore}")
    files = {
        IMAGE_IDS: [s.image_id for s in samples],
        CLASS_LABELS: [f"{s.image_id},{s.label}" for s in samples],
        IMAGE_SIZES: [f"{s.image_id},{s.size[0]},{s.size[1]}" for s in samples] if all_sizes else [],  # type: ignore[index]
        LOCALIZATION: [f"{s.image_id},{b[0]},{b[1]},{b[2]},{b[3]}" for s in samples for b in s.boxes]
        if with_boxes else mask_lines,
    }
    split_dir.mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():  # each file whole or not at all
        atomic_write_text(split_dir / name, "\n".join(lines))
    masks_file = split_dir / LOCALIZATION_MASKS
    if with_boxes and with_masks:
        atomic_write_text(masks_file, "\n".join(mask_lines))
    elif masks_file.exists():
        masks_file.unlink()


def read_class_names(path: Path | str) -> list[str]:
    """Read ``class_names.txt`` (line ``i`` = name of class ``i``)."""
    path = Path(path)
    lines = _read_lines(path, _Problems("error"))
    names = []
    for number, line in lines:
        if line.strip() == "":
            raise MetadataError(path, number, "empty class name")
        names.append(line)
    if not names:
        raise MetadataError(path, None, "no class names (the file is empty)")
    return names


def write_class_names(path: Path | str, names: Sequence[str]) -> None:
    """Write ``class_names.txt`` without a trailing newline."""
    for n in names:
        if n.strip() == "" or "\n" in n or "\r" in n:
            raise ValueError(f"invalid class name {n!r}")
    atomic_write_text(path, "\n".join(names))


# ---------------------------------------------------------------------------------------------- checking


def leaked_images(meta_root: Path | str) -> dict[str, list[str]]:
    """Evaluation images that an earlier split lists too, by split: a test image in ``train`` (the model trains on
    it) or ``val`` (it selects the hyperparameters), a val image in ``train`` (hyperparameters chosen on training
    images). One problem per such line of ``<split>/image_ids.txt``, naming both files and lines.

    Example:
        >>> import tempfile
        >>> m = Path(tempfile.mkdtemp())
        >>> for split, ids in (("train", "a.jpg b.jpg"), ("val", "a.jpg"), ("test", "c.jpg b.jpg")):
        ...     ids = ids.replace(" ", chr(10))
        ...     (m / split).mkdir(); _ = (m / split / IMAGE_IDS).write_text(ids)
        >>> {k: [p.replace(str(m), "M") for p in v] for k, v in leaked_images(m).items()}  # doctest: +NORMALIZE_WHITESPACE
        {'val': ["M/val/image_ids.txt:1: image 'a.jpg' is in train too (M/train/image_ids.txt line 1): a val image
                  the model trains on, so the hyperparameters would be chosen on training images"],
         'test': ["M/test/image_ids.txt:2: image 'b.jpg' is in train too (M/train/image_ids.txt line 2): a test image
                   the model trains on"]}
    """
    meta_root = Path(meta_root)

    def lines(split: str) -> dict[str, int]:
        path = meta_root / split / IMAGE_IDS
        if not path.is_file():
            return {}
        text = path.read_bytes().decode("utf-8", errors="replace")
        out: dict[str, int] = {}
        for number, line in enumerate(text.splitlines(), 1):
            out.setdefault(line.strip(), number)
        out.pop("", None)
        return out

    ids = {split: lines(split) for split in ("train", "val", "test")}
    why = {("val", "train"): "a val image the model trains on, so the hyperparameters would be chosen on training images",
           ("test", "train"): "a test image the model trains on", ("test", "val"): "a test image that selects the hyperparameters"}
    problems: dict[str, list[str]] = {}
    for (split, earlier), text in why.items():
        for image_id, number in ids[split].items():
            if image_id in ids[earlier]:
                problems.setdefault(split, []).append(
                    f"{meta_root / split / IMAGE_IDS}:{number}: image {image_id!r} is in {earlier} too "
                    f"({meta_root / earlier / IMAGE_IDS} line {ids[earlier][image_id]}): {text}")
    return problems


def check_split(
    split_dir: Path | str,
    *,
    num_classes: int | None = None,
    image_root: Path | str | None = None,
    mask_root: Path | str | None = None,
    strict: bool = True,
) -> list[str]:
    """Check one split against the format and return every problem found (empty = valid).

    Args:
        split_dir: ``<metadata_root>/<split>``.
        num_classes: when given, labels must lie in ``[0, num_classes)``.
        image_root: when given, every image must exist, decode, and have the size in ``image_sizes.txt``.
        mask_root: when given, every mask and ignore PNG must exist, decode and have its image's size (the
            decoded image's with ``image_root``, else ``image_sizes.txt``'s), as fit's loader requires.
        strict: also report deviations from the letter of the format that the reference reader
            tolerates (a trailing newline, a ``./`` prefix, a first mask line without an ignore
            path). ``\\r\\n`` line endings and a UTF-8 byte order mark are accepted in both modes,
            as ``read_split`` (and so ``fit``) accepts them.

    Returns:
        Problems as ``"<file>:<line>: <message>"`` strings.
    """
    problems = _Problems("collect")
    split_dir = Path(split_dir)
    for name in REQUIRED_FILES:
        if not (split_dir / name).is_file():
            problems.add(split_dir / name, None, "file not found (a split needs " + ", ".join(REQUIRED_FILES) + ")")
    if problems.items:
        return [str(e) for _, e in problems.items]
    try:
        meta = read_split(split_dir, num_classes=num_classes, _problems=problems, _strict=strict)
    except MetadataError as err:
        problems.items.append((None, err))
        return [str(e) for _, e in problems.items]
    if strict:
        mask_file = LOCALIZATION if not meta.has_boxes else LOCALIZATION_MASKS
        for s in meta.samples:
            if s.masks is not None and s.masks.ignore_path is None:
                problems.add(split_dir / mask_file, None, f"image id {s.image_id!r} has no ignore mask path on its "
                             "first mask line (the reference reader needs one)", s.image_id)
    if image_root is not None or mask_root is not None:
        from cream_pl.data.images import ImageFileError, load_image_rgb, load_mask_gray, same_frame

        for s in meta.samples:
            where = f"(image id {s.image_id!r}, {meta.image_ids_path} line {s.line})"
            size = s.size  # (width, height): the decoded image's when the images are checked, else the metadata's
            if image_root is not None:
                try:
                    img = load_image_rgb(Path(image_root) / s.image_id)
                    h, w = img.shape[:2]
                    if s.size is not None and (w, h) != s.size:
                        problems.add(split_dir / IMAGE_SIZES, None, f"image {Path(image_root) / s.image_id} is "
                                     f"{w}x{h} but {IMAGE_SIZES} says {s.size[0]}x{s.size[1]} {where}", s.image_id)
                    size = (w, h)
                except ImageFileError as err:
                    problems.add(meta.image_ids_path, s.line, str(err), s.image_id)
            if mask_root is not None and s.masks is not None:
                paths = list(s.masks.mask_paths) + ([s.masks.ignore_path] if s.masks.ignore_path else [])
                for p in paths:
                    try:
                        mask = load_mask_gray(Path(mask_root) / p)
                    except ImageFileError as err:
                        problems.add(meta.image_ids_path, s.line, f"{err} {where}", s.image_id)
                        continue
                    # a mask of another shape than its image would be stretched onto it by the 224 x 224 resize of
                    # the evaluation (one of its shape at another resolution scores alike: fit's loader takes it)
                    if size is not None and not same_frame(mask.shape[:2], (size[1], size[0])):
                        problems.add(meta.image_ids_path, s.line, f"{Path(mask_root) / p}: mask is {mask.shape[1]}x"
                                     f"{mask.shape[0]} but its image is {size[0]}x{size[1]} {where}", s.image_id)
    return [str(e) for _, e in problems.items]


def data_sha1(data: Path) -> str:
    """A dataset's identity: its generator config (a synthetic root), else its metadata files, hashed with their
    paths relative to the root (never where the root is)."""
    import hashlib

    data, h = Path(data), hashlib.sha1()
    info = data / "synth_config.json"
    files = [info] if info.is_file() else sorted((data / "metadata").rglob("*.txt"))
    for f in files:
        h.update(f.relative_to(data).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()
