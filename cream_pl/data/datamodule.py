"""``WSOLDataset`` and ``WSOLDataModule``: any dataset in the WSOL benchmark format, as Lightning batches.

Batches (see :func:`wsol_collate`) are dicts:

- ``image`` float32 ``(B, 3, H, W)``, ImageNet-normalised; ``label`` int64 ``(B,)``; ``index`` int64
  ``(B,)`` (position in the dataset); ``image_id`` ``list[str]``; ``orig_size`` int64 ``(B, 2)`` as
  ``(width, height)``;
- eval splits only (squash-resize to ``eval_size``, 224 by default): ``boxes`` = list of int64
  ``(n_i, 4)`` ``XYXY_INCLUSIVE`` boxes rescaled with the protocol's truncation
  (:func:`cream_pl.core.boxes.resize_boxes_protocol`), when the split has boxes; ``mask`` = uint8
  ``(B, eval_size, eval_size)`` with 1 = foreground, 0 = background, 255 = ignore, built like the
  protocol's ``get_mask`` (nearest resize of each PNG as float32, ``> 0.5``, union; ignore =
  ``ignore > 0.5 and not foreground``), when the split has masks.

Bad samples. Metadata problems are found when a split is read (in ``setup``). Image problems
(missing, empty, truncated or undecodable files, a size that disagrees with ``image_sizes.txt``,
a missing mask) are found when the image is loaded, and the error names the image and its line
in ``image_ids.txt``; the val and test splits are decoded once up front in ``setup``
(``check_eval_images``, cached by file size and modification time), so that a bad val image
cannot end a run after its training. With ``on_bad_sample="skip"`` the datamodule scans every image and mask of a
split once in ``setup`` (``validate_images``, on by default in skip mode, read-only so it is safe
under DDP where every process scans the same files and keeps the same samples), drops every bad
sample from the index and reports them all in one warning per split.

Example:
    >>> import tempfile
    >>> from cream_pl.data.synth import generate_synthetic_dataset
    >>> root = generate_synthetic_dataset(tempfile.mkdtemp(), num_classes=2, num_train=2, num_val=2,
    ...                                   num_test=2, min_side=64, max_side=80)
    >>> dm = WSOLDataModule(root, batch_size=2)
    >>> dm.setup("test")
    >>> batch = next(iter(dm.test_dataloader()))
    >>> tuple(batch["image"].shape), tuple(batch["mask"].shape), batch["boxes"][0].dtype
    ((2, 3, 224, 224), (2, 224, 224), torch.int64)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from cream_pl.core.boxes import resize_boxes_protocol
from cream_pl.core.errors import UserFileNotFoundError, UserValueError
from cream_pl.data.errors import WSOLDataError
from cream_pl.data.images import (
    Decoder,
    ImageFileError,
    check_decoder,
    check_once,
    files_stamp,
    load_image_rgb,
    read_protocol_mask,
)
from cream_pl.data.metadata import (
    REQUIRED_FILES,
    SampleRecord,
    SplitMetadata,
    read_class_names,
    read_split,
)
from cream_pl.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TrainTransformName,
    build_eval_transform,
    build_train_transform,
    reseed_for_worker,
)

__all__ = ["WSOLDataset", "WSOLDataModule", "wsol_collate", "protocol_mask"]

OnBadSample = Literal["error", "skip"]


def protocol_mask(
    mask_root: Path,
    mask_paths: Sequence[str],
    ignore_path: str | None,
    size: int = 224,
    expected_hw: tuple[int, int] | None = None,
) -> np.ndarray:
    """Ground-truth map of one image as the benchmark builds it (``evaluation.get_mask``).

    Args:
        mask_root: directory the mask paths are relative to.
        mask_paths: instance mask PNGs.
        ignore_path: ignore PNG, or ``None``.
        size: side of the square output.
        expected_hw: when given, every PNG must be of that ``(height, width)`` frame (:func:`~cream_pl.data.images.same_frame`).

    Returns:
        ``(size, size)`` uint8: 1 = foreground, 0 = background, 255 = ignore.
    """

    root = Path(mask_root)
    return read_protocol_mask([root / rel for rel in mask_paths], root / ignore_path if ignore_path else None, size,
                              expected_hw)


class WSOLDataset(Dataset):
    """One split of a WSOL dataset.

    Args:
        metadata: the parsed split (:func:`cream_pl.data.metadata.read_split`).
        image_root: directory the image ids are relative to.
        transform: an albumentations ``Compose`` from :mod:`cream_pl.data.transforms`.
        train: training sample (no boxes or masks; the transform is reseeded per worker) or eval
            sample (boxes and masks in the ``eval_size`` grid).
        eval_size: side of the squashed evaluation image.
        mask_root: directory the mask paths are relative to (needed when the split has masks).
        decoder: ``"pil"`` or ``"torchvision"`` (see :func:`cream_pl.data.images.load_image_rgb`).
    """

    def __init__(
        self,
        metadata: SplitMetadata,
        image_root: Path | str,
        transform: Any,
        *,
        train: bool = False,
        eval_size: int = 224,
        mask_root: Path | str | None = None,
        decoder: Decoder = "pil",
    ) -> None:
        self.decoder = check_decoder(decoder)
        self.metadata = metadata
        self.samples: list[SampleRecord] = list(metadata.samples)
        self.image_root = Path(image_root)
        self.mask_root = Path(mask_root) if mask_root is not None else None
        self.transform = transform
        self.train = train
        self.eval_size = eval_size
        if metadata.has_masks and not train and self.mask_root is None:
            raise ValueError(f"split {metadata.split_dir} has masks; pass mask_root")

    def __len__(self) -> int:
        return len(self.samples)

    def _where(self, s: SampleRecord) -> str:
        return f"image id {s.image_id!r}, {self.metadata.image_ids_path} line {s.line}"

    def load_image(self, index: int) -> np.ndarray:
        """Decode sample ``index`` to RGB uint8, checking its size against ``image_sizes.txt``."""
        s = self.samples[index]
        try:
            image = load_image_rgb(self.image_root / s.image_id, self.decoder)  # type: ignore[arg-type]
        except ImageFileError as err:
            raise ImageFileError(err.path, f"{err.reason} ({self._where(s)})") from None
        h, w = image.shape[:2]
        if s.size is not None and (w, h) != s.size:
            raise ImageFileError(self.image_root / s.image_id, f"image is {w}x{h} but image_sizes.txt says "
                                 f"{s.size[0]}x{s.size[1]} ({self._where(s)})")
        return image

    def load_mask(self, index: int, hw: tuple[int, int] | None = None) -> np.ndarray:
        """Protocol GT map of sample ``index`` in the ``eval_size`` grid (see :func:`protocol_mask`)."""
        s = self.samples[index]
        assert s.masks is not None and self.mask_root is not None
        try:
            return protocol_mask(self.mask_root, s.masks.mask_paths, s.masks.ignore_path, self.eval_size, hw)
        except ImageFileError as err:
            raise ImageFileError(err.path, f"{err.reason} ({self._where(s)})") from None

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        image = self.load_image(index)
        h, w = image.shape[:2]
        if self.train:
            reseed_for_worker(self.transform)
        out: dict[str, Any] = {
            "image": self.transform(image=image)["image"],
            "label": s.label,
            "index": index,
            "image_id": s.image_id,
            "orig_size": (w, h),
        }
        if not self.train:
            if self.metadata.has_boxes:
                boxes = torch.tensor(s.boxes, dtype=torch.int64).reshape(-1, 4)
                out["boxes"] = resize_boxes_protocol(boxes, (w, h), (self.eval_size, self.eval_size))
            if self.metadata.has_masks:
                out["mask"] = torch.from_numpy(self.load_mask(index, (h, w)))
        return out

    def check_sample(self, index: int) -> WSOLDataError | None:
        """Load sample ``index`` fully (image and masks); return the problem, or ``None``."""
        try:
            image = self.load_image(index)
            if self.samples[index].masks is not None and self.mask_root is not None:
                self.load_mask(index, image.shape[:2])
        except WSOLDataError as err:
            return err
        return None

    def validate(self, num_threads: int | None = None) -> list[tuple[int, WSOLDataError]]:
        """Check every sample; return ``(index, error)`` pairs (the dataset is not changed)."""
        threads = num_threads or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            results = list(pool.map(self.check_sample, range(len(self))))
        return [(i, r) for i, r in enumerate(results) if r is not None]

    def check_files_exist(self) -> None:
        """Every image is a non-empty regular file (a stat each, no decoding): the first that is not ends the run
        before its first step, not when its batch comes up.

        Raises:
            ImageFileError: naming the file and its ``image_ids.txt`` line.
        """
        import stat

        for s in self.samples:
            path = self.image_root / s.image_id
            try:
                st = path.stat()  # one call per image (a network filesystem pays per call)
            except FileNotFoundError:
                raise ImageFileError(path, f"file not found ({self._where(s)})") from None
            problem = "not a regular file" if not stat.S_ISREG(st.st_mode) else "empty file (0 bytes)" \
                if st.st_size == 0 else None
            if problem is not None:
                raise ImageFileError(path, f"{problem} ({self._where(s)})")

    def files(self) -> list[Path]:
        """Every file this split reads: its metadata files, images and masks."""
        split_dir = self.metadata.split_dir
        out = [split_dir / name for name in REQUIRED_FILES]
        for s in self.samples:
            out.append(self.image_root / s.image_id)
            if s.masks is not None and self.mask_root is not None:
                out += [self.mask_root / m for m in s.masks.mask_paths]
                if s.masks.ignore_path:
                    out.append(self.mask_root / s.masks.ignore_path)
        return out

    def drop(self, indices: Sequence[int]) -> None:
        """Remove samples from the index (used for ``on_bad_sample="skip"``)."""
        bad = set(indices)
        self.samples = [s for i, s in enumerate(self.samples) if i not in bad]


def wsol_collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Collate :class:`WSOLDataset` samples into the batch dict of the module docstring."""
    if not samples:
        raise ValueError("cannot collate an empty batch")
    batch: dict[str, Any] = {
        "image": torch.stack([s["image"] for s in samples]),
        "label": torch.tensor([s["label"] for s in samples], dtype=torch.int64),
        "index": torch.tensor([s["index"] for s in samples], dtype=torch.int64),
        "image_id": [s["image_id"] for s in samples],
        "orig_size": torch.tensor([s["orig_size"] for s in samples], dtype=torch.int64),
    }
    if "boxes" in samples[0]:
        batch["boxes"] = [s["boxes"] for s in samples]
    if "mask" in samples[0]:
        batch["mask"] = torch.stack([s["mask"] for s in samples])
    return batch


class WSOLDataModule(pl.LightningDataModule):
    """Lightning data module over a dataset in the WSOL benchmark format.

    Args:
        data_root: dataset root with ``images/``, ``metadata/<split>/``, optional ``masks/`` and
            ``class_names.txt``.
        metadata_root / image_root / mask_root: override ``<data_root>/metadata``, ``/images``, ``/masks``.
        batch_size: the **global** training batch (the recipe's, e.g. the paper's 32): under ``N``
            processes each loads ``batch_size / N`` (an error when it does not divide); the
            evaluation and predict loaders use it per process.
        num_workers: ``DataLoader`` workers (workers persist between epochs when > 0).
        resize_size / crop_size: training resize and random crop (protocol 256 / 224).
        eval_size: side of the squashed eval images and of eval boxes and masks (protocol 224).
        on_bad_sample: ``"error"`` (default) raises at the first bad sample, naming the file and
            line; ``"skip"`` drops bad samples and reports them in one warning per split.
        predict_split: split served by ``predict_dataloader`` with eval transforms (pseudo boxes).
        pin_memory: ``DataLoader`` ``pin_memory``.
        train_transform: ``"crop"`` (protocol) or ``"resized_crop"``
            (see :func:`cream_pl.data.transforms.build_train_transform`).
        num_classes: number of classes; default = lines of ``class_names.txt``, else the largest
            label of any split plus one.
        validate_images: scan every image and mask of a split in ``setup``; default: on when
            ``on_bad_sample="skip"``.
        check_eval_images: decode every image and mask of the val split (``fit``, ``validate``)
            and of the test split (``test``) in ``setup``, before any training, so that a bad file
            ends the run at once, in one line naming it, and not at the first validation after
            hours of training. The check runs in threads and once per dataset: it is skipped while
            no file of the split changed size or modification time (see
            :func:`cream_pl.data.images.check_once`). Training images are not checked up front;
            a bad one fails its batch, naming the file.
        mean / std: input normalisation on the 0-1 scale; use the backbone's ``input_mean`` /
            ``input_std`` (ImageNet's by default; EfficientNet-Lite0 expects 0.498 / 0.502).
        decoder: ``"pil"`` (default, the reference's Pillow) or ``"torchvision"``
            (``torchvision.io.decode_jpeg`` for RGB and grayscale JPEGs, Pillow for the rest; the
            same tensors within :data:`cream_pl.data.jpeg.MAX_ABS_TOLERANCE` levels). ``make bench``
            measures both per worker on CUB-sized JPEGs.
    """

    def __init__(
        self,
        data_root: str,
        metadata_root: str | None = None,
        image_root: str | None = None,
        mask_root: str | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        resize_size: int = 256,
        crop_size: int = 224,
        eval_size: int = 224,
        on_bad_sample: OnBadSample = "error",
        predict_split: str = "train",
        pin_memory: bool = False,
        train_transform: TrainTransformName = "crop",
        num_classes: int | None = None,
        validate_images: bool | None = None,
        check_eval_images: bool = True,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        decoder: Decoder = "pil",
    ) -> None:
        super().__init__()
        # bad arguments (a config's data.init_args) are user errors: one line, see cream_pl.core.errors
        if on_bad_sample not in ("error", "skip"):
            raise UserValueError(f"on_bad_sample must be 'error' or 'skip', got {on_bad_sample!r}")
        if batch_size < 1:
            raise UserValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise UserValueError(f"num_workers must be >= 0, got {num_workers}")
        if num_classes is not None and num_classes < 1:
            raise UserValueError(f"num_classes must be >= 1, got {num_classes}")
        try:
            self.decoder = check_decoder(decoder)
        except ValueError as err:
            raise UserValueError(str(err)) from None
        self.save_hyperparameters(logger=False)
        self.data_root = Path(data_root)
        self.metadata_root = Path(metadata_root) if metadata_root else self.data_root / "metadata"
        self.image_root = Path(image_root) if image_root else self.data_root / "images"
        self.mask_root = Path(mask_root) if mask_root else self.data_root / "masks"
        if not self.metadata_root.is_dir():
            raise UserFileNotFoundError(f"metadata directory {self.metadata_root} not found (expected "
                                    f"<data_root>/metadata/<split>/ with {', '.join(REQUIRED_FILES)})")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.on_bad_sample: OnBadSample = on_bad_sample
        self.validate_images = on_bad_sample == "skip" if validate_images is None else validate_images
        self.check_eval_images = check_eval_images
        self.predict_split = predict_split
        self.pin_memory = pin_memory
        self.train_transform_name = train_transform
        # fail early on bad sizes or transform names
        self.mean, self.std = tuple(mean), tuple(std)
        try:
            build_train_transform(resize_size, crop_size, train_transform, mean=self.mean, std=self.std)
            build_eval_transform(eval_size, self.mean, self.std)
        except ValueError as err:  # resize_size / crop_size / eval_size / mean / std out of their domain
            raise UserValueError(" ".join(str(err).split())) from None
        self._num_classes = num_classes
        self._class_names: list[str] | None = None
        self._datasets: dict[tuple[str, bool], WSOLDataset] = {}

    # ------------------------------------------------------------------------------------------ classes

    @property
    def class_names(self) -> list[str]:
        """Class names (``class_names.txt``, else ``"0"``, ``"1"``, ...)."""
        if self._class_names is None:
            path = self.data_root / "class_names.txt"
            if path.is_file():
                names = read_class_names(path)
                if self._num_classes is not None and len(names) != self._num_classes:
                    raise ValueError(f"{path} has {len(names)} classes but num_classes={self._num_classes}")
            else:
                names = [str(i) for i in range(self.num_classes)]
            self._class_names = names
        return self._class_names

    @property
    def num_classes(self) -> int:
        """Number of classes (see the class docstring)."""
        if self._num_classes is None:
            if (self.data_root / "class_names.txt").is_file():
                self._num_classes = len(self.class_names)
            else:
                self._num_classes = self._infer_num_classes()
        return self._num_classes

    def _infer_num_classes(self) -> int:
        """One more than the largest label of the splits this module serves (another folder under ``metadata/``, a
        backup say, is not the dataset's: it made an 8-class head of a 2-class dataset)."""
        top = -1
        for name in dict.fromkeys(("train", "val", "test", self.predict_split)):
            split_dir = self.metadata_root / name
            if (split_dir / "class_labels.txt").is_file():
                meta = read_split(split_dir, on_bad_sample=self.on_bad_sample)
                top = max([top] + [s.label for s in meta.samples])
        if top < 0:
            raise ValueError(f"no labelled split under {self.metadata_root}; pass num_classes")
        return top + 1

    # ------------------------------------------------------------------------------------------ datasets

    def has_split(self, split: str) -> bool:
        """Whether ``<metadata_root>/<split>/`` exists."""
        return (self.metadata_root / split).is_dir()

    def _dataset(self, split: str, train: bool) -> WSOLDataset:
        key = (split, train)
        if key not in self._datasets:
            if not self.has_split(split):
                raise UserFileNotFoundError(f"split {split!r} not found: {self.metadata_root / split} does not exist")
            meta = read_split(self.metadata_root / split, num_classes=self.num_classes, on_bad_sample=self.on_bad_sample)
            hp = self.hparams
            transform = (build_train_transform(hp.resize_size, hp.crop_size, self.train_transform_name,
                                               mean=self.mean, std=self.std) if train
                         else build_eval_transform(hp.eval_size, self.mean, self.std))
            ds = WSOLDataset(meta, self.image_root, transform, train=train, eval_size=hp.eval_size,
                             mask_root=self.mask_root if meta.has_masks else None,
                             decoder=self.decoder)  # type: ignore[arg-type]
            skipped = list(meta.skipped)
            if self.validate_images:
                problems = ds.validate()
                if problems and self.on_bad_sample == "error":
                    raise problems[0][1]
                ds.drop([i for i, _ in problems])
                skipped += [str(p) for _, p in problems]
            if not len(ds):
                raise WSOLDataError(f"split {split!r}: no usable sample left; first problem: {skipped[0]}")
            if skipped:
                shown = "\n  ".join(skipped[:5]) + ("\n  ..." if len(skipped) > 5 else "")
                rank_zero_warn(f"split {split!r}: skipped {len(skipped)} bad entries, kept {len(ds)} of "
                               f"{meta.num_listed} listed images (on_bad_sample='skip'):\n  {shown}")
            ds.metadata = replace(meta, samples=ds.samples, skipped=skipped)
            self._datasets[key] = ds
        return self._datasets[key]

    def train_dataset(self) -> WSOLDataset:
        """The ``train`` split with training transforms."""
        return self._dataset("train", True)

    def eval_dataset(self, split: str) -> WSOLDataset:
        """Any split with evaluation transforms (boxes and masks in the ``eval_size`` grid)."""
        return self._dataset(split, False)

    def setup(self, stage: str | None = None) -> None:
        """Read the splits a stage needs and check the val / test images (read-only: safe on every DDP process)."""
        if stage in ("fit", None):
            train = self.train_dataset()
            if self.on_bad_sample == "error" and not self.validate_images:  # (validate_images decoded them all)
                train.check_files_exist()
        if stage in ("fit", "validate", None):
            if self.has_split("val"):
                self.check_images_once(self.eval_dataset("val"))
            elif stage == "validate":
                raise UserFileNotFoundError(f"no val split: {self.metadata_root / 'val'} does not exist")
        if stage in ("test", None) and (stage == "test" or self.has_split("test")):
            self.check_images_once(self.eval_dataset("test"))
        if stage == "predict":
            self.eval_dataset(self.predict_split)

    def check_images_once(self, dataset: WSOLDataset) -> bool:
        """Decode every image and mask of ``dataset`` unless that already passed for these files.

        Does nothing when ``check_eval_images`` is off, with ``on_bad_sample="skip"`` (its
        ``validate_images`` scan drops bad files instead), or when ``validate_images`` already
        scanned the split. Returns whether the files were decoded.

        Raises:
            ImageFileError: the first bad file, with its ``image_ids.txt`` line (and how many more).
        """
        if not self.check_eval_images or self.validate_images or self.on_bad_sample != "error":
            return False
        split = dataset.metadata.split_dir.name

        def check() -> None:
            problems = dataset.validate(max(self.num_workers, min(8, os.cpu_count() or 1)))
            if not problems:
                return
            err = problems[0][1]
            if len(problems) > 1:
                more = (f"; {len(problems) - 1} more bad file(s) in split {split!r} "
                        f"(`cream-pl data check --files {self.data_root}` lists them)")
                if isinstance(err, ImageFileError):
                    raise ImageFileError(err.path, err.reason + more) from None
            raise err

        stamp = files_stamp(dataset.files(), salt=f"cream-pl eval image check v1|{dataset.eval_size}")
        return check_once(stamp, check)

    # ------------------------------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint: the class names of ``class_names.txt`` (for ``cream-pl localize``)."""
        if not (self.data_root / "class_names.txt").is_file():
            return {}
        try:
            return {"class_names": list(self.class_names)}
        except ValueError:  # names that disagree with num_classes: never fail a checkpoint over them
            return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore: the class names are read from the data again."""

    # ------------------------------------------------------------------------------------------ loaders

    def _world(self) -> tuple[int, int]:
        """``(global rank, world size)`` of the attached trainer: ``(0, 1)`` without one."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def per_process_train_batch(self) -> int:
        """Training batch of one process: ``batch_size`` is the **global** batch, split over every process.

        The recipes state the paper's batch (32). Under ``N`` processes (devices x nodes) each loads
        ``32 / N``, so the optimiser sees the same batch, and the same lr applies, at any scale.

        Raises:
            UserValueError: ``batch_size`` is not divisible by the number of processes (a ``ValueError``).
        """
        _, world = self._world()
        if self.batch_size % world:
            raise UserValueError(f"batch_size {self.batch_size} is the global training batch and must divide over the "
                             f"{world} processes (devices x nodes); use a multiple of {world}")
        return self.batch_size // world

    def _loader(self, dataset: WSOLDataset, shuffle: bool, batch_size: int | None = None,
                sampler: Any = None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size if batch_size is None else batch_size,
            shuffle=shuffle if sampler is None else False,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            collate_fn=wsol_collate,
            persistent_workers=self.num_workers > 0,
        )

    def _eval_loader(self, dataset: WSOLDataset) -> DataLoader:
        """An evaluation loader that shows every image exactly once across processes.

        Lightning's default ``DistributedSampler`` pads the split with up to ``N - 1`` repeated
        images so that every process gets as many batches; those repeats would be counted twice by
        the metrics (and move τ*). Under several processes this loader uses an unrepeated sampler
        (process ``r`` takes images ``r, r + N, ...``; batch counts may differ by one, which is safe
        here: evaluation steps hold no per-batch collective), so the sum states of every metric equal
        one process's exactly. ``batch_size`` is per process here: evaluation results do not depend on it.
        """
        rank, world = self._world()
        if world <= 1:
            return self._loader(dataset, shuffle=False)
        from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler

        if len(dataset) < world:
            raise ValueError(f"an evaluation split of {len(dataset)} images cannot feed {world} processes")
        sampler = UnrepeatedDistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)
        return self._loader(dataset, shuffle=False, sampler=sampler)

    def train_dataloader(self) -> DataLoader:
        batch = self.per_process_train_batch()
        rank, world = self._world()
        if world > 1 and rank == 0:
            from pytorch_lightning.utilities import rank_zero_info

            rank_zero_info(f"global training batch {self.batch_size} = {world} processes x {batch} images "
                           "(lr unchanged: the recipe's batch is the global batch)")
        return self._loader(self.train_dataset(), shuffle=True, batch_size=batch)

    def val_dataloader(self) -> DataLoader | list:
        """The val split (an empty list, i.e. no validation, when the dataset has none)."""
        if not self.has_split("val"):
            return []
        return self._eval_loader(self.eval_dataset("val"))

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.eval_dataset("test"))

    def predict_dataloader(self) -> DataLoader:
        """``predict_split`` with evaluation transforms, in metadata order (for pseudo boxes)."""
        return self._loader(self.eval_dataset(self.predict_split), shuffle=False)

    def split_dataloader(self, split: str, shuffle: bool = False) -> DataLoader:
        """A loader over any split with evaluation transforms."""
        return self._loader(self.eval_dataset(split), shuffle=shuffle)
