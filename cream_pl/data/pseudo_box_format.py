"""Pseudo-box COCO files: validation against a dataset split, and the box regressor's training data.

A pseudo-box file (written by :mod:`cream_pl.pseudo_boxes.generate`) is COCO JSON with one
image entry and one box per training image:

- ``images``: ``{"id": <dataset index>, "file_name": <image_id>, "width": W, "height": H}``;
- ``categories``: ``{"id": c, "name": <class name>}`` for ``c = 0 .. C-1`` (0-based, the
  class index of the dataset);
- ``annotations``: ``{"id", "image_id", "category_id", "bbox": [x, y, w, h], "area", "iscrowd",
  "score"}`` with ``bbox`` in original image pixels (``BoxFormat.XYWH``).

:func:`read_pseudo_boxes` refuses a file that does not fit the dataset (invalid or truncated JSON,
unknown images, images without a box, boxes outside the image, wrong categories) with a
:class:`PseudoBoxFileError` that lists what is wrong, so training never starts on a bad file.

:class:`PseudoBoxDataset` yields an image and its box as the regressor's target, normalised
``(x, y, w, h)`` in ``[0, 1]`` (``BoxFormat.XYWH_REL``, the PSOL target). Training augmentation
moves the box with the image: a random resized crop that always keeps the whole box
(albumentations ``RandomSizedBBoxSafeCrop``) and a horizontal flip.

Example:
    >>> import numpy as np
    >>> t = build_box_train_transform(32)
    >>> img = np.zeros((60, 100, 3), np.uint8)
    >>> out = t(image=img, bboxes=[[40.0, 10.0, 70.0, 30.0]], box_labels=[0])
    >>> tuple(out["image"].shape), len(out["bboxes"])
    ((3, 32, 32), 1)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from cream_pl.core.boxes import BoxFormat, convert_boxes
from cream_pl.data.errors import WSOLDataError
from cream_pl.data.images import load_image_rgb, read_image_size
from cream_pl.data.metadata import SplitMetadata, read_class_names, read_split
from cream_pl.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_box_eval_transform,
    build_box_train_transform,
    random_state,
    reseed_for_worker,
    restore_random_state,
)

__all__ = [
    "PseudoBoxFileError",
    "PseudoBox",
    "read_pseudo_boxes",
    "build_box_train_transform",
    "build_box_eval_transform",
    "PseudoBoxDataset",
    "PseudoBoxDataModule",
]

_MAX_PROBLEMS_SHOWN = 10
# Box coordinates are floats mapped from the 224 grid; allow rounding noise at the image border.
_BORDER_TOLERANCE = 1e-3


class PseudoBoxFileError(WSOLDataError):
    """A pseudo-box file that cannot be read or does not match the dataset.

    Attributes:
        path: the pseudo-box file.
        problems: one line per problem, each naming the JSON element (e.g. ``annotations[3]``).
    """

    def __init__(self, path: Path | str, problems: Sequence[str]) -> None:
        self.path = Path(path)
        self.problems = list(problems)
        shown = self.problems[:_MAX_PROBLEMS_SHOWN]
        more = len(self.problems) - len(shown)
        lines = "\n".join(f"  - {p}" for p in shown) + (f"\n  ... and {more} more" if more > 0 else "")
        n = len(self.problems)
        super().__init__(f"{self.path}: bad pseudo-box file ({n} problem{'s' if n != 1 else ''}):\n{lines}")


@dataclass(frozen=True)
class PseudoBox:
    """One image's pseudo box, checked against the dataset.

    Attributes:
        index: position of the image in the split (``image_ids.txt`` order).
        image_id: the image's relative path (COCO ``file_name``).
        label: ground-truth class of the image.
        size: ``(width, height)`` of the original image.
        bbox: ``(x, y, w, h)`` in original pixels (``BoxFormat.XYWH``).
        score: the annotation's ``score`` (``None`` when absent).
    """

    index: int
    image_id: str
    label: int
    size: tuple[int, int]
    bbox: tuple[float, float, float, float]
    score: float | None = None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _load_json(path: Path) -> Any:
    """The file's JSON (:func:`cream_pl.core.io.read_json_file`); a problem is a :class:`PseudoBoxFileError`."""
    from cream_pl.core.errors import UserFileNotFoundError
    from cream_pl.core.io import JSONFileError, read_json_file

    try:
        return read_json_file(path, "pseudo-box file")
    except UserFileNotFoundError:
        raise PseudoBoxFileError(path, ["file not found"]) from None
    except JSONFileError as err:
        problem = "empty file (expected COCO JSON)" if err.problem == "empty file" else err.problem
        raise PseudoBoxFileError(path, [f"line {err.line}: {problem}" if err.line else problem]) from None


def read_pseudo_boxes(
    path: Path | str,
    split: SplitMetadata | Path | str,
    *,
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
    image_root: Path | str | None = None,
    check_image_sizes: bool | None = None,
) -> list[PseudoBox]:
    """Read a pseudo-box COCO file and check that it matches a dataset split.

    Every image of the split needs exactly one image entry and one box; the box must have a
    positive size and lie inside the image; its category must be the image's class; the
    categories must be ``0 .. C-1`` (with the dataset's class names when known).

    Args:
        path: the COCO JSON file.
        split: the split's :class:`SplitMetadata`, or its metadata directory.
        class_names: the dataset's class names; category names must match them.
        num_classes: number of classes ``C`` (defaults to ``len(class_names)``, else the
            number of categories in the file, which must then cover every label of the split).
        image_root: the split's image folder, needed by ``check_image_sizes``.
        check_image_sizes: read each image's header and compare its size with the file's
            ``width``/``height``. ``None`` (default): only when the metadata has no image sizes
            and ``image_root`` is given.

    Returns:
        The pseudo boxes in split order.

    Raises:
        PseudoBoxFileError: the file is unreadable, is not valid JSON, or does not match the split;
            the message lists every problem (the first ten) with its JSON element.

    Example:
        >>> import json, tempfile
        >>> from cream_pl.data.metadata import SampleRecord, write_split
        >>> d = Path(tempfile.mkdtemp())
        >>> write_split(d / "train", [SampleRecord("a.png", 0, (20, 10))])
        >>> coco = {"images": [{"id": 0, "file_name": "a.png", "width": 20, "height": 10}],
        ...         "categories": [{"id": 0, "name": "c0"}, {"id": 1, "name": "c1"}],
        ...         "annotations": [{"id": 0, "image_id": 0, "category_id": 0, "bbox": [2, 1, 30, 5]}]}
        >>> _ = (d / "boxes.json").write_text(json.dumps(coco))
        >>> try:
        ...     read_pseudo_boxes(d / "boxes.json", d / "train")
        ... except PseudoBoxFileError as err:
        ...     print(err.problems[0])
        annotations[0] (image 'a.png'): box [2, 1, 30, 5] extends past the 20x10 image (x + w = 32 > 20)
    """
    path = Path(path)
    meta = split if isinstance(split, SplitMetadata) else read_split(split)
    if class_names is not None and num_classes is not None and len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} names but num_classes is {num_classes}")
    if num_classes is None and class_names is not None:
        num_classes = len(class_names)
    data = _load_json(path)
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise PseudoBoxFileError(path, [f"the top level must be a JSON object, got {type(data).__name__}"])
    for key in ("images", "annotations", "categories"):
        if key not in data:
            problems.append(f"missing top-level key {key!r} (a COCO file has images, annotations, categories)")
        elif not isinstance(data[key], list):
            problems.append(f"{key!r} must be a list, got {type(data[key]).__name__}")
    if problems:
        raise PseudoBoxFileError(path, problems)
    boxed = data.get("info", {}).get("predict_split") if isinstance(data.get("info"), Mapping) else None
    if isinstance(boxed, str) and meta.split_dir is not None and boxed != Path(meta.split_dir).name:
        raise PseudoBoxFileError(path, [f"info.predict_split: the boxes of split {boxed!r}, not of "  # the one cause,
                                        f"{Path(meta.split_dir).name!r} ({meta.split_dir})"])  # not every image listed

    _check_categories(data["categories"], meta, class_names, num_classes, problems)
    by_name = {s.image_id: (i, s) for i, s in enumerate(meta.samples)}
    where_ids = meta.image_ids_path

    # images
    images: dict[int, tuple[str, tuple[int, int]]] = {}
    seen_files: dict[str, int] = {}
    reported_ids: set[int] = set()  # entries already refused: no follow-on line blames them again
    reported_files: set[str] = set()
    for k, img in enumerate(data["images"]):
        at = f"images[{k}]"
        if not isinstance(img, Mapping):
            problems.append(f"{at}: expected an object, got {type(img).__name__}")
            continue
        image_id, name, w, h = img.get("id"), img.get("file_name"), img.get("width"), img.get("height")
        if not _is_int(image_id):
            problems.append(f"{at}: 'id' must be an integer, got {image_id!r}")
            continue
        if image_id in images:
            problems.append(f"{at}: duplicate image id {image_id}")
            continue
        reported_ids.add(image_id)  # until the entry is accepted below
        if isinstance(name, str) and name in by_name:
            reported_files.add(name)
        if not isinstance(name, str):
            problems.append(f"{at}: 'file_name' must be a string, got {name!r}")
            continue
        if name not in by_name:
            problems.append(f"{at}: file_name {name!r} is not an image of the split ({where_ids})")
            continue
        if name in seen_files:
            problems.append(f"{at}: file_name {name!r} already listed in images[{seen_files[name]}]")
            continue
        if not (_is_int(w) and _is_int(h) and w > 0 and h > 0):
            problems.append(f"{at} ({name!r}): 'width' and 'height' must be positive integers, got {w!r}, {h!r}")
            continue
        size = by_name[name][1].size
        if size is not None and (w, h) != size:
            problems.append(f"{at} ({name!r}): size {w}x{h} differs from the dataset's {size[0]}x{size[1]} "
                            f"({meta.split_dir / 'image_sizes.txt'})")
            continue
        seen_files[name] = k
        images[image_id] = (name, (w, h))
        reported_ids.discard(image_id)
    missing = [s for s in meta.samples if s.image_id not in seen_files and s.image_id not in reported_files]
    if missing:
        s = missing[0]
        problems.append(f"{len(missing)} image(s) of the split have no entry in 'images', e.g. {s.image_id!r} "
                        f"({where_ids} line {s.line})")

    # annotations
    boxes: dict[str, tuple[tuple[float, float, float, float], float | None]] = {}
    first_ann: dict[str, int] = {}
    for k, ann in enumerate(data["annotations"]):
        at = f"annotations[{k}]"
        if not isinstance(ann, Mapping):
            problems.append(f"{at}: expected an object, got {type(ann).__name__}")
            continue
        image_id = ann.get("image_id")
        if not _is_int(image_id):
            problems.append(f"{at}: 'image_id' must be an integer, got {image_id!r}")
            continue
        if image_id not in images:
            if image_id not in reported_ids:  # an entry refused above is not "unknown"
                problems.append(f"{at}: unknown image id {image_id} (no entry with this id in 'images')")
            continue
        name, (w, h) = images[image_id]
        at = f"{at} (image {name!r})"
        if name in first_ann:
            problems.append(f"{at}: a second box for the image (first in annotations[{first_ann[name]}]); "
                            "the regressor needs exactly one box per image")
            continue
        first_ann[name] = k
        label = by_name[name][1].label
        cat = ann.get("category_id")
        if not _is_int(cat):
            problems.append(f"{at}: 'category_id' must be an integer, got {cat!r}")
        elif cat != label:
            problems.append(f"{at}: category_id {cat} differs from the image's class {label} in the dataset")
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            problems.append(f"{at}: 'bbox' must be a list of 4 finite numbers [x, y, w, h], got {bbox!r}")
            continue
        x, y, bw, bh = (float(v) for v in bbox)
        if bw <= 0 or bh <= 0:
            problems.append(f"{at}: box {bbox} has a non-positive width or height")
            continue
        if x < -_BORDER_TOLERANCE or y < -_BORDER_TOLERANCE:
            problems.append(f"{at}: box {bbox} starts outside the {w}x{h} image (negative x or y)")
            continue
        if x + bw > w + _BORDER_TOLERANCE or y + bh > h + _BORDER_TOLERANCE:
            over = f"x + w = {x + bw:g} > {w}" if x + bw > w + _BORDER_TOLERANCE else f"y + h = {y + bh:g} > {h}"
            problems.append(f"{at}: box {bbox} extends past the {w}x{h} image ({over})")
            continue
        score = ann.get("score")
        if score is not None and not _is_number(score):
            problems.append(f"{at}: 'score' must be a finite number, got {score!r}")
            continue
        x0, y0 = min(max(x, 0.0), float(w)), min(max(y, 0.0), float(h))  # clipped to the image (the tolerance)
        x1, y1 = min(x + bw, float(w)), min(y + bh, float(h))
        if not (np.float32(x1) > np.float32(x0) and np.float32(y1) > np.float32(y0)):  # the transforms' float32
            problems.append(f"{at}: box {bbox} has no area inside the {w}x{h} image once clipped to it (a box at its "
                            "border, or narrower than float32 tells apart)")
            continue
        boxes[name] = ((x0, y0, x1 - x0, y1 - y0), None if score is None else float(score))
    no_box = [s for s in meta.samples if s.image_id in seen_files and s.image_id not in first_ann]
    if no_box:
        s = no_box[0]
        problems.append(f"{len(no_box)} image(s) have no box in 'annotations', e.g. {s.image_id!r} "
                        f"(images[{seen_files[s.image_id]}])")
    if problems:
        raise PseudoBoxFileError(path, problems)

    size_of = dict(images.values())
    records = [PseudoBox(i, s.image_id, s.label, size_of[s.image_id], *boxes[s.image_id]) for i, s in enumerate(meta.samples)]
    if check_image_sizes is None:
        check_image_sizes = not meta.has_sizes and image_root is not None
    if check_image_sizes:
        if image_root is None:
            raise ValueError("check_image_sizes=True needs image_root")
        for r in records:
            actual = read_image_size(Path(image_root) / r.image_id)
            if actual != r.size:
                problems.append(f"images[{seen_files[r.image_id]}] ({r.image_id!r}): size {r.size[0]}x{r.size[1]} "
                                f"differs from the image file's {actual[0]}x{actual[1]}")
        if problems:
            raise PseudoBoxFileError(path, problems)
    return records


def _check_categories(
    cats: list[Any],
    meta: SplitMetadata,
    class_names: Sequence[str] | None,
    num_classes: int | None,
    problems: list[str],
) -> None:
    ids: dict[int, str] = {}
    for k, c in enumerate(cats):
        if not isinstance(c, Mapping) or not _is_int(c.get("id")) or not isinstance(c.get("name"), str):
            problems.append(f"categories[{k}]: expected {{'id': <int>, 'name': <str>}}, got {c!r}")
            return
        if c["id"] in ids:
            problems.append(f"categories[{k}]: duplicate category id {c['id']}")
            return
        ids[c["id"]] = c["name"]
    n = num_classes if num_classes is not None else len(ids)
    if len(ids) != n or sorted(ids) != list(range(n)):
        shown = sorted(ids)[:8]
        problems.append(f"categories: expected ids 0..{n - 1} (one per class of the dataset, {n} classes), got "
                        f"{len(ids)} categories with ids {shown}{' ...' if len(ids) > 8 else ''}")
        return
    if class_names is not None:
        for c in range(n):
            if ids[c] != class_names[c]:
                problems.append(f"categories: category {c} is named {ids[c]!r} but the dataset's class {c} is "
                                f"{class_names[c]!r}")
                return
    too_big = [s for s in meta.samples if s.label >= n]
    if too_big:
        problems.append(f"categories: {n} categories, but image {too_big[0].image_id!r} has class {too_big[0].label}")


# ---------------------------------------------------------------------------------------------- transforms


Stats = Sequence[float]

# build_box_train_transform / build_box_eval_transform live with every other albumentations pipeline in
# cream_pl.data.transforms; they are re-exported here for the regressor's callers.


# ---------------------------------------------------------------------------------------------- dataset


class PseudoBoxDataset(Dataset[dict[str, Any]]):
    """Images with one pseudo box each, for training the box regressor.

    Each sample is ``{"image": float32 (3, S, S), "target": float32 (4,) normalised (x, y, w, h),
    "label": int64, "index": int64, "image_id": str}``.

    Args:
        records: the checked boxes (from :func:`read_pseudo_boxes`).
        image_root: folder the ``image_id`` paths are relative to.
        transform: an albumentations ``Compose`` with ``BboxParams(format="pascal_voc",
            label_fields=["box_labels"])`` that outputs a tensor image.
    """

    def __init__(self, records: Sequence[PseudoBox], image_root: Path | str, transform: A.Compose) -> None:
        if not records:
            raise ValueError("PseudoBoxDataset needs at least one record")
        self.records = list(records)
        self.image_root = Path(image_root)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        r = self.records[i]
        path = self.image_root / r.image_id
        image = load_image_rgb(path)
        h, w = image.shape[:2]
        if (w, h) != r.size:
            raise WSOLDataError(f"{path}: image is {w}x{h} but the pseudo-box file says {r.size[0]}x{r.size[1]}")
        xyxy = convert_boxes(torch.tensor([r.bbox], dtype=torch.float64), BoxFormat.XYWH, BoxFormat.XYXY)
        reseed_for_worker(self.transform)
        out = self.transform(image=image, bboxes=xyxy.numpy().astype(np.float32), box_labels=[r.label])
        img = out["image"]
        if len(out["bboxes"]) != 1:
            raise RuntimeError(f"{path}: the transform dropped the box {r.bbox}; use a box-safe crop")
        size = (img.shape[-1], img.shape[-2])
        target = convert_boxes(torch.as_tensor(np.asarray(out["bboxes"], dtype=np.float64)), BoxFormat.XYXY,
                               BoxFormat.XYWH_REL, size)[0].clamp(0.0, 1.0)
        return {
            "image": img,
            "target": target.to(torch.float32),
            "label": torch.tensor(r.label, dtype=torch.int64),
            "index": torch.tensor(r.index, dtype=torch.int64),
            "image_id": r.image_id,
        }


class PseudoBoxDataModule(pl.LightningDataModule):
    """Train the regressor on a pseudo-box file; validate and test on the dataset's boxed splits.

    The train split's images come with the pseudo boxes; ``val`` / ``test`` loaders come from an
    evaluation data module (``WSOLDataModule`` by default), whose batches carry the true boxes
    (``batch["boxes"]``, inclusive, in the eval grid).

    Args:
        pseudo_boxes: the COCO pseudo-box file.
        data_root: dataset root (``images/``, ``metadata/<split>/``, optional ``class_names.txt``).
        train_split: split the pseudo boxes cover.
        batch_size: training batch size.
        num_workers: data loader workers.
        input_size: side of the training crops.
        erosion_rate: see :func:`build_box_train_transform`.
        hflip_p: see :func:`build_box_train_transform`.
        crop: ``"box_safe"`` or PSOL's ``"psol"`` random resized crop (see :func:`build_box_train_transform`).
        eval_datamodule: data module that provides ``val_dataloader`` / ``test_dataloader``;
            ``None`` builds ``WSOLDataModule(data_root, batch_size=..., num_workers=..., **eval_kwargs)``.
        eval_kwargs: extra ``WSOLDataModule`` arguments.
        mean / std: input normalisation of the training images (also passed to the default
            ``WSOLDataModule``; an ``eval_datamodule`` must use the same).
    """

    def __init__(
        self,
        pseudo_boxes: Path | str,
        data_root: Path | str,
        train_split: str = "train",
        batch_size: int = 32,
        num_workers: int = 0,
        input_size: int = 224,
        erosion_rate: float = 0.0,
        hflip_p: float = 0.5,
        crop: str = "box_safe",
        eval_datamodule: pl.LightningDataModule | None = None,
        eval_kwargs: dict[str, Any] | None = None,
        mean: Stats = IMAGENET_MEAN,
        std: Stats = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.pseudo_boxes = Path(pseudo_boxes)
        self.data_root = Path(data_root)
        self.train_split = train_split
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.mean, self.std = tuple(mean), tuple(std)
        self.transform = build_box_train_transform(input_size, erosion_rate, hflip_p, self.mean, self.std,
                                                   crop=crop)  # type: ignore[arg-type]
        if eval_datamodule is not None:
            dm_mean, dm_std = getattr(eval_datamodule, "mean", None), getattr(eval_datamodule, "std", None)
            if dm_mean is not None and (tuple(dm_mean) != self.mean or tuple(dm_std) != self.std):
                raise ValueError(f"the eval data module normalises with mean {tuple(dm_mean)} / std {tuple(dm_std)} "
                                 f"but the training images with {self.mean} / {self.std}; use the same")
        self._eval_dm = eval_datamodule
        self._eval_kwargs = dict(eval_kwargs or {})
        self.train_dataset: PseudoBoxDataset | None = None

    def state_dict(self) -> dict[str, Any]:
        """The training crops' generators (in a checkpoint: a resumed fit draws the crops the uncut one drew; exactly
        so without loader workers, whose copies of the transform this process cannot see)."""
        return {"transform_random_state": random_state(self.transform)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "transform_random_state" in state_dict:
            restore_random_state(self.transform, state_dict["transform_random_state"])

    @property
    def eval_datamodule(self) -> pl.LightningDataModule:
        if self._eval_dm is None:
            from cream_pl.data.datamodule import WSOLDataModule

            kw = {"batch_size": self.batch_size, "num_workers": self.num_workers, "mean": self.mean, "std": self.std,
                  **self._eval_kwargs}
            self._eval_dm = WSOLDataModule(self.data_root, **kw)
        return self._eval_dm

    def load_records(self) -> list[PseudoBox]:
        """Read and check the pseudo-box file against the train split (raises :class:`PseudoBoxFileError`)."""
        return load_dataset_pseudo_boxes(self.pseudo_boxes, self.data_root, self.train_split)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.train_dataset is None:
            self.train_dataset = PseudoBoxDataset(self.load_records(), self.data_root / "images", self.transform)
        dm = self.eval_datamodule
        if self.trainer is not None and getattr(dm, "trainer", None) is None:
            dm.trainer = self.trainer
        dm.setup(stage)

    def train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            self.setup("fit")
        assert self.train_dataset is not None
        return DataLoader(self.train_dataset, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> Any:
        return self.eval_datamodule.val_dataloader()

    def test_dataloader(self) -> Any:
        return self.eval_datamodule.test_dataloader()


def load_dataset_pseudo_boxes(
    pseudo_boxes: Path | str, data_root: Path | str, split: str = "train"
) -> list[PseudoBox]:
    """:func:`read_pseudo_boxes` against ``<data_root>/metadata/<split>`` with the dataset's class names.

    Image sizes are read from the image headers when the metadata has none.
    """
    data_root = Path(data_root)
    meta = read_split(data_root / "metadata" / split)
    names_file = data_root / "class_names.txt"
    class_names = read_class_names(names_file) if names_file.is_file() else None
    return read_pseudo_boxes(pseudo_boxes, meta, class_names=class_names, image_root=data_root / "images")
