"""Score saved score maps in parallel: the engine behind ``cream-pl evaluate`` (numpy + numba, no torch).

Each image is one job: read its ``.npy`` map, check it and bring it to the protocol grid, then
one component-tree pass (:func:`~cream_pl.metrics.component_tree.level_ious`) gives its
localisation at every threshold for every IoU level, all contours (V2) and, from the same pass,
the largest contour (V1); with masks, one compiled pass adds its pixels to PxAP's two
histograms. Jobs run in chunks on a thread pool: the kernels, the file reads and OpenCV release
the GIL, so the CPU cores are used without the start-up cost of worker processes. Only counts
come back from a chunk, never the maps.

Example:
    >>> plan = ScoringPlan(cam_thresholds(0.5), (30, 50, 70), multi_contour=True, v1=True)
    >>> plan.rows, plan.v1_row
    (4, 3)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cream_pl.metrics.component_tree import scoremap_uint8
from cream_pl.metrics.functional import (
    RESIZE_LENGTH,
    cam_thresholds,
    check_iou_levels,
    localized_from_uint8,
    prepare_scoremap,
    threshold_levels,
)
from cream_pl.metrics.gt_mask import load_gt_mask
from cream_pl.metrics.pixel_histogram import mask_histograms

__all__ = [
    "EvaluationError",
    "ImageJob",
    "ScoringPlan",
    "Totals",
    "load_scoremap",
    "load_mask",
    "score_images",
    "cam_thresholds",
]



class EvaluationError(ValueError):
    """Bad input to ``cream-pl evaluate`` (the message names the file, line or image id)."""


@dataclass(frozen=True)
class ScoringPlan:
    """What to compute for every image.

    Attributes:
        thresholds: CAM thresholds (:func:`cam_thresholds`).
        iou_thresholds: IoU levels in percent of the main rows.
        multi_contour: all contours (V2) or the largest (V1) for the main rows.
        v1: also the largest-contour row at IoU 50 (``max_box_acc``), when the main rows lack it.
        normalize: ``"auto"`` (224x224 maps in [0, 1] as saved) or ``"always"`` (min-max every map).
        edges: PxAP bin edges, or ``None`` for no PxAP.
    """

    thresholds: np.ndarray
    iou_thresholds: tuple[int, ...]
    multi_contour: bool = True
    v1: bool = True
    normalize: str = "auto"
    edges: np.ndarray | None = None

    def __post_init__(self) -> None:
        check_iou_levels(self.iou_thresholds)

    @property
    def extra_v1(self) -> bool:
        return self.v1 and (self.multi_contour or 50 not in self.iou_thresholds)

    @property
    def rows(self) -> int:
        """Rows of the count matrix: the main IoU levels, then the V1 IoU-50 row if it is extra."""
        return len(self.iou_thresholds) + int(self.extra_v1)

    @property
    def v1_row(self) -> int | None:
        """Row of V1 at IoU 50 (``max_box_acc``), or ``None`` when not computed."""
        if self.extra_v1:
            return len(self.iou_thresholds)
        if self.v1 and not self.multi_contour:
            return self.iou_thresholds.index(50)
        return None


@dataclass(frozen=True)
class ImageJob:
    """One image: where its map is, its GT boxes (224 grid) and / or its mask PNGs."""

    image_id: str
    path: Path
    where: str = ""  # e.g. "image_ids.txt line 3", for messages
    gt: np.ndarray | None = None
    mask_pngs: tuple[Path, ...] = ()
    ignore_png: Path | None = None
    mask_hw: tuple[int, int] | None = None  # (height, width) every mask PNG must have, where the metadata says


@dataclass
class Totals:
    """Accumulated counts: localised images per (row, threshold) and PxAP's histograms."""

    correct: np.ndarray
    true_hist: np.ndarray | None = None
    false_hist: np.ndarray | None = None
    num_images: int = 0

    def add(self, other: Totals) -> None:
        self.correct += other.correct
        if self.true_hist is not None and other.true_hist is not None:
            self.true_hist += other.true_hist
            self.false_hist += other.false_hist  # type: ignore[operator]
        self.num_images += other.num_images


def _describe(image_id: str, path: Path, where: str) -> str:
    return f"the score map of image {image_id!r} ({path}{', ' + where if where else ''})"


_NPY_LOAD = threading.Lock()
"""np.load reads a .npy header with ast.literal_eval, and CPython 3.11's ast is not thread-safe (cpython gh-106905:
"AST constructor recursion depth mismatch" under concurrent use): the maps are read one at a time, scored in parallel."""


def _read_map(path: Path, image_id: str, where: str = "") -> np.ndarray:
    try:
        with _NPY_LOAD:
            raw = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        at = f" ({where})" if where else ""
        raise EvaluationError(f"no score map for image {image_id!r}{at}: expected {path}") from None
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        why = str(err)
        try:
            with open(path, "rb") as f:
                if f.read(6) != b"\x93NUMPY":  # numpy calls any such file "pickled data"
                    why = "not a .npy file (no NumPy header; np.save writes one)"
        except OSError as os_err:  # a folder, a file without read permission
            why = os_err.strerror or str(os_err)
        raise EvaluationError(f"cannot read {_describe(image_id, path, where)}: {why}") from None
    if isinstance(raw, np.ndarray) and np.issubdtype(raw.dtype, np.complexfloating):
        raise EvaluationError(f"{_describe(image_id, path, where)} is complex-valued (dtype {raw.dtype}); "
                              "a score map must be real")
    if not isinstance(raw, np.ndarray):  # np.load reads a .npz archive too, whatever the name
        raise EvaluationError(f"{_describe(image_id, path, where)} is a .npz archive, not one array: save the map "
                              "with np.save")
    if (
        raw.ndim != 2
        or raw.size == 0
        or not (np.issubdtype(raw.dtype, np.number) or raw.dtype == np.bool_)
        or np.issubdtype(raw.dtype, np.timedelta64)  # a number to numpy, no score
    ):
        raise EvaluationError(
            f"{_describe(image_id, path, where)} must be a non-empty 2-D numeric array, "
            f"got shape {raw.shape} dtype {raw.dtype}"
        )
    return raw


def _protocol_map(
    raw: np.ndarray, path: Path, image_id: str, normalize: str, where: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """``(scoremap, floor(255 * scoremap) as uint8)`` on the 224x224 grid (see :func:`load_scoremap`)."""
    scoremap = raw if raw.dtype == np.float64 else raw.astype(np.float64)
    if normalize == "auto" and scoremap.shape == (RESIZE_LENGTH, RESIZE_LENGTH):
        img, reason = scoremap_uint8(scoremap)
        if img is not None:
            return scoremap, img
        if reason == "NaN values":
            raise EvaluationError(f"{_describe(image_id, path, where)} contains NaN")
    elif np.isnan(scoremap).any():
        raise EvaluationError(f"{_describe(image_id, path, where)} contains NaN")
    if np.isinf(scoremap).any():
        raise EvaluationError(f"{_describe(image_id, path, where)} contains an infinite value")
    try:
        scoremap = prepare_scoremap(scoremap)
    except ValueError as err:  # a range float64 cannot hold (+-1e308): min-max made NaN of part of the map
        raise EvaluationError(f"{_describe(image_id, path, where)}: {err}") from None
    img, reason = scoremap_uint8(scoremap)
    if img is None:
        raise EvaluationError(f"{_describe(image_id, path, where)}: its min-max normalised map has {reason}")
    return scoremap, img


def load_scoremap(path: str | os.PathLike[str], image_id: str, normalize: str = "auto") -> np.ndarray:
    """Load one saved score map and bring it to the 224x224 protocol grid.

    A 224x224 map with values in ``[0, 1]`` is scored as it is (the benchmark's tool); any other
    map (another size, values outside ``[0, 1]``), or every map with ``normalize="always"``, goes
    through :func:`~cream_pl.metrics.functional.prepare_scoremap` (bicubic resize to 224, then
    min-max; a constant map becomes zeros).

    Raises:
        EvaluationError: missing or unreadable file, not 2-D, NaN or infinite values.
    """
    if normalize not in ("auto", "always"):
        raise ValueError(f"normalize must be 'auto' or 'always', got {normalize!r}")
    path = Path(path)
    return _protocol_map(_read_map(path, image_id), path, image_id, normalize)[0]


def load_mask(mask_pngs: Sequence[Path], ignore_png: Path | None, size: int = RESIZE_LENGTH,
              expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """GT mask as the benchmark builds it (:func:`cream_pl.metrics.gt_mask.load_gt_mask`), bad files as
    :class:`EvaluationError`: 1 foreground, 0 background, 255 ignore."""
    try:
        return load_gt_mask(mask_pngs, ignore_png, size, expected_hw)
    except (FileNotFoundError, ValueError) as err:
        raise EvaluationError(str(err)) from None


def _score_chunk(jobs: Sequence[ImageJob], plan: ScoringPlan) -> Totals:
    totals = _empty_totals(plan)
    main = tuple(plan.iou_thresholds)
    extra_v1: tuple[int, ...] = (50,) if plan.extra_v1 else ()
    for job in jobs:
        raw = _read_map(job.path, job.image_id, job.where)
        scoremap, img = _protocol_map(raw, job.path, job.image_id, plan.normalize, job.where)
        if job.gt is not None:
            levels = threshold_levels(int(img.max()), plan.thresholds)
            if plan.multi_contour:
                ok = localized_from_uint8(img, job.gt, levels, main, True, extra_v1)
            else:
                ok = localized_from_uint8(img, job.gt, levels, main + extra_v1, False)
            totals.correct += ok
        if plan.edges is not None:
            try:
                mask = load_mask(job.mask_pngs, job.ignore_png, expected_hw=job.mask_hw)
            except EvaluationError as err:
                raise EvaluationError(f"image {job.image_id!r}: {err}") from None
            mask_histograms(scoremap, mask, plan.edges, out=(totals.true_hist, totals.false_hist))  # type: ignore[arg-type]
        totals.num_images += 1
    return totals


def _empty_totals(plan: ScoringPlan) -> Totals:
    bins = None if plan.edges is None else len(plan.edges) - 1
    return Totals(
        correct=np.zeros((plan.rows, len(plan.thresholds)), np.int64),
        true_hist=None if bins is None else np.zeros(bins),
        false_hist=None if bins is None else np.zeros(bins),
    )


def score_images(
    jobs: Sequence[ImageJob], plan: ScoringPlan, num_workers: int | None = None, chunk_size: int = 64
) -> Totals:
    """Score every job; counts are summed over chunks of ``chunk_size`` images on ``num_workers`` threads.

    Results do not depend on the number of workers or the chunk size. The first bad input (in
    job order) is raised as :class:`EvaluationError`.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk size must be >= 1, got {chunk_size}")
    workers = (os.cpu_count() or 1) if num_workers is None else int(num_workers)
    workers = max(1, min(workers, len(jobs)))
    # a few chunks per worker keep the threads busy to the end
    size = max(1, min(chunk_size, -(-len(jobs) // (4 * workers))))
    chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
    totals = _empty_totals(plan)
    if workers == 1:
        for chunk in chunks:
            totals.add(_score_chunk(chunk, plan))
        return totals
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_score_chunk, chunk, plan) for chunk in chunks]
        try:
            for future in futures:
                totals.add(future.result())
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return totals
