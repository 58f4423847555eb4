"""``cream-pl evaluate``: score saved score maps the way wsolevaluation's own tool does.

Usage::

    cream-pl evaluate --metadata data/cub/metadata/test --scoremaps runs/x/scoremaps \\
        [--interval 0.01] [--no-multi-contour] [--mask-root data/openimages/masks] --out scores.json

Input:

- ``--metadata``: a split folder in the wsolevaluation format (``image_ids.txt``,
  ``class_labels.txt``, ``image_sizes.txt``, ``localization.txt`` with box lines or OpenImages
  mask lines, and the optional ``localization_masks.txt``). It is read and checked by
  :func:`cream_pl.data.metadata.read_split`, as ``cream-pl data check`` does: a box outside its
  image's size, an image without a size or a box, or an empty split is one error naming
  ``file:line``.
- ``--scoremaps``: one ``<image_id>.npy`` per image (the image id path is kept and ``.npy`` is
  appended, e.g. ``001/img.jpg.npy``), a 2-D array of any real dtype, read as float64; what
  ``cream-pl export-scoremaps`` and the benchmark's ``inference.py`` write.

Score maps, as in the benchmark's tool: a 224x224 map with values in ``[0, 1]`` is scored as it
is. Any other map (another size, or values outside ``[0, 1]``) goes through the protocol's
``prepare_scoremap`` (bicubic resize to 224, then min-max; a constant map becomes zeros);
``--normalize always`` applies that to every map. A map with NaN or infinite values is an error,
as in the benchmark's tool.

Output JSON: ``max_box_acc_v2`` (mean over the IoU levels for the chosen contour mode),
``max_box_acc`` (V1: IoU 50, largest contour; ``--no-v1`` skips it with all contours),
``max_box_acc_iou`` (``{"30": ..., "50": ..., "70": ...}`` for the chosen contour mode),
``best_threshold_iou``, ``pxap`` (with ``--mask-root``), and the settings used. Defaults follow
the benchmark's standalone tool: interval 0.01.

Speed: the work runs on :mod:`cream_pl.metrics.scoring` (threads over chunks of images, one
component-tree pass per map); this module imports neither torch nor Lightning.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


def _numba_without_scipy_blas() -> None:
    """Spare this process numba's BLAS probe (about 0.2 s of every ``cream-pl evaluate``).

    When numba loads its array library it imports ``scipy.linalg.cython_blas`` to learn whether
    ``np.dot`` / ``np.linalg`` may be used inside compiled code. The scoring kernels use neither, so
    where numba has not loaded it yet, the probe is answered "no BLAS" (the module is hidden for that
    one import) and scipy stays importable afterwards. In a process that already loaded numba's array
    library (a Python session, the tests) nothing changes.
    """
    if "numba.np.arraymath" in sys.modules or "scipy.linalg.cython_blas" in sys.modules:
        return
    sys.modules["scipy.linalg.cython_blas"] = None  # type: ignore[assignment]
    try:
        import numba.np.arraymath  # noqa: F401  (its BLAS probe runs now, and fails fast)
    finally:
        del sys.modules["scipy.linalg.cython_blas"]


_numba_without_scipy_blas()

from cream_pl.core.errors import UserValueError as OutputPathError  # noqa: E402
from cream_pl.core.io import atomic_write_text, check_output_file  # noqa: E402
from cream_pl.metrics.functional import (  # noqa: E402
    RESIZE_LENGTH,
    box_accuracy_summary,
    pxap_bin_edges,
    pxap_from_histograms,
)
from cream_pl.metrics.scoring import (  # noqa: E402
    EvaluationError,
    ImageJob,
    ScoringPlan,
    cam_thresholds,
    load_scoremap,
    score_images,
)

__all__ = [
    "EvaluationError",
    "SplitMetadata",
    "read_split_metadata",
    "load_scoremap",
    "evaluate_scoremaps",
    "add_parser",
    "run",
]


@dataclass
class SplitMetadata:
    """What ``evaluate`` needs from a split folder (read by :func:`read_split_metadata`)."""

    image_ids: list[str]
    image_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    boxes: dict[str, list[tuple[int, int, int, int]]] = field(default_factory=dict)
    mask_paths: dict[str, list[str]] = field(default_factory=dict)
    ignore_paths: dict[str, str] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)  # line of each image id in image_ids.txt
    split_dir: Path = Path(".")


def read_split_metadata(split_dir: str | os.PathLike[str]) -> SplitMetadata:
    """Read and check a wsolevaluation split folder (boxes and/or OpenImages-style mask lines).

    Uses :func:`cream_pl.data.metadata.read_split` (the checker of ``cream-pl data check``): boxes
    must lie inside the size ``image_sizes.txt`` gives their image, every image needs a size and a
    box (when the split has boxes), and the split must list at least one image.

    Raises:
        EvaluationError: the first problem, as ``<file>:<line>: <message>``.
    """
    from cream_pl.data.metadata import MetadataError, read_split

    try:
        split = read_split(split_dir)
    except MetadataError as err:
        raise EvaluationError(str(err)) from None
    meta = SplitMetadata(image_ids=[s.image_id for s in split.samples], split_dir=Path(split_dir))
    for s in split.samples:
        meta.lines[s.image_id] = s.line
        if s.size is not None:
            meta.image_sizes[s.image_id] = s.size
        if s.boxes:
            meta.boxes[s.image_id] = [tuple(b) for b in s.boxes]  # type: ignore[misc]
        if s.masks is not None:
            meta.mask_paths[s.image_id] = list(s.masks.mask_paths)
            meta.ignore_paths[s.image_id] = s.masks.ignore_path or ""
    return meta


def _resized_boxes(boxes: list[tuple[int, int, int, int]], size: tuple[int, int]) -> np.ndarray:
    """The benchmark's ``resize_bbox`` to the 224 grid: ``int(x * 224 / W)`` (multiply, then divide)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w, h = size
    new = float(RESIZE_LENGTH)
    return np.trunc(b * new / np.array([w, h, w, h], dtype=np.float64)).astype(np.int64)


def _height_width(size: tuple[int, int] | None) -> tuple[int, int] | None:
    return (int(size[1]), int(size[0])) if size is not None else None  # image_sizes.txt holds (width, height)


def _jobs(meta: SplitMetadata, scoremaps: Path, with_boxes: bool, mask_root: Path | None) -> list[ImageJob]:
    ids_file = meta.split_dir / "image_ids.txt"
    jobs = []
    for image_id in meta.image_ids:
        ignore = meta.ignore_paths.get(image_id, "")
        jobs.append(ImageJob(
            image_id=image_id,
            path=scoremaps / f"{image_id}.npy",
            where=f"{ids_file} line {meta.lines.get(image_id, 0)}",
            gt=_resized_boxes(meta.boxes[image_id], meta.image_sizes[image_id]) if with_boxes else None,
            mask_pngs=tuple(mask_root / p for p in meta.mask_paths[image_id]) if mask_root is not None else (),
            ignore_png=(mask_root / ignore) if mask_root is not None and ignore else None,
            mask_hw=_height_width(meta.image_sizes.get(image_id)),
        ))
    return jobs


def evaluate_scoremaps(
    metadata: str | os.PathLike[str],
    scoremaps: str | os.PathLike[str],
    interval: float = 0.01,
    multi_contour: bool = True,
    iou_thresholds: Sequence[int] = (30, 50, 70),
    mask_root: str | os.PathLike[str] | None = None,
    normalize: str = "auto",
    batch_size: int = 64,
    num_workers: int | None = None,
    v1: bool = True,
) -> dict[str, Any]:
    """Score a folder of saved score maps against a split; returns the JSON-ready result dict.

    Args:
        metadata: split folder.
        scoremaps: folder of ``<image_id>.npy`` maps.
        interval: CAM threshold step.
        multi_contour: all contours (V2) or the largest (V1) for ``max_box_acc_v2`` / ``max_box_acc_iou``.
        iou_thresholds: IoU levels in percent.
        mask_root: folder of the mask PNGs (enables PxAP).
        normalize: ``"auto"`` or ``"always"`` (see the module docstring).
        batch_size: images per work item of a worker thread.
        num_workers: worker threads (``None``: all CPUs).
        v1: also ``max_box_acc`` (V1, IoU 50) when scoring all contours.

    Raises:
        EvaluationError: bad metadata, a missing or bad map (one line naming the file).
    """
    if normalize not in ("auto", "always"):
        raise ValueError(f"normalize must be 'auto' or 'always', got {normalize!r}")
    thresholds = cam_thresholds(interval)
    meta = read_split_metadata(metadata)
    root = Path(scoremaps)
    has_boxes = bool(meta.boxes)
    if not has_boxes and mask_root is None:
        if meta.mask_paths:
            raise EvaluationError(f"{metadata} has mask annotations only: pass --mask-root to compute PxAP")
        raise EvaluationError(f"{Path(metadata) / 'localization.txt'}: no box annotations to evaluate against")
    if mask_root is not None and not meta.mask_paths:
        raise EvaluationError(
            f"--mask-root was given but {metadata} has no mask lines (localization.txt or localization_masks.txt)"
        )
    if not root.is_dir():
        raise EvaluationError(f"--scoremaps {root}: not a directory")
    from cream_pl.pipelines.export_scoremaps import export_root_hint, other_split, unfinished_export

    unfinished = unfinished_export(root)
    if unfinished is not None:
        raise EvaluationError(f"{unfinished}; run it again before scoring the folder")
    mismatch = other_split(root, metadata)  # the maps of another split, where ids are shared, would be scored
    if mismatch is not None:
        raise EvaluationError(mismatch)
    jobs = _jobs(meta, root, has_boxes, Path(mask_root) if mask_root is not None else None)
    for job in jobs:  # fail fast, before any work, on the first missing map
        if job.path.is_dir():
            raise EvaluationError(f"{job.path}: a folder, not a .npy file (the score map of image {job.image_id!r}, "
                                  f"{job.where})")
        if not job.path.is_file():
            raise EvaluationError(f"no score map for image {job.image_id!r} ({job.where}): expected {job.path}"
                                  f"{export_root_hint(root)}")
    ious = tuple(int(d) for d in iou_thresholds)
    plan = ScoringPlan(
        thresholds=thresholds,
        iou_thresholds=ious,
        multi_contour=multi_contour,
        v1=has_boxes and (v1 or not multi_contour),
        normalize=normalize,
        edges=pxap_bin_edges(thresholds) if mask_root is not None else None,
    )
    totals = score_images(jobs, plan, num_workers=num_workers, chunk_size=batch_size)

    result: dict[str, Any] = {
        "num_images": len(jobs),
        "cam_curve_interval": float(interval),
        "multi_contour": bool(multi_contour),
        "iou_thresholds": list(ious),
        "normalize": normalize,
    }
    if has_boxes:
        n = len(ious)
        out = box_accuracy_summary(totals.correct[:n], totals.num_images, ious, thresholds)
        result["max_box_acc_v2"] = out["max_box_acc"]
        if plan.v1_row is not None:
            v1_counts = totals.correct[plan.v1_row : plan.v1_row + 1]
            result["max_box_acc"] = box_accuracy_summary(v1_counts, totals.num_images, (50,), thresholds)[
                "max_box_acc_iou"
            ][50]
        result["max_box_acc_iou"] = {str(k): v for k, v in out["max_box_acc_iou"].items()}
        result["best_threshold_iou"] = {str(k): v for k, v in out["best_threshold_iou"].items()}
    if plan.edges is not None:
        try:
            result["pxap"] = pxap_from_histograms(totals.true_hist, totals.false_hist)  # type: ignore[arg-type]
        except RuntimeError as err:
            raise EvaluationError(f"{metadata}: {err}") from None
    return result


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``cream-pl evaluate`` (the arguments live in :mod:`cream_pl.cli.parsers`)."""
    from cream_pl.cli.parsers import add_evaluate_arguments

    parser = subparsers.add_parser(
        "evaluate",
        help="score saved score maps (<image_id>.npy) with MaxBoxAcc, MaxBoxAccV2 and PxAP",
        description=__doc__.split("\n\n")[0],
    )
    add_evaluate_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def _error(message: object) -> int:
    text = str(message).strip()
    print(f"cream-pl evaluate: error: {text.splitlines()[0] if text else type(message).__name__}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Run ``cream-pl evaluate``; 0 on success, 2 on a user error (one line on stderr)."""
    try:
        check_output_file(args.out)
    except OutputPathError as err:
        return _error(err)
    out = Path(args.out)
    places = (out.resolve(), out.absolute().parent.resolve() / out.name)  # its target, and the link itself
    for option, folder in (("--metadata", args.metadata), ("--scoremaps", args.scoremaps), ("--mask-root", args.mask_root)):
        if folder is not None and out.is_file() and out.suffix != ".json" and any(
                Path(folder).resolve() in place.parents for place in places):
            return _error(f"--out {out}: an existing file inside {option} {folder}, which the evaluation reads; "
                          "give another path")  # its inputs are .txt, .npy and mask images; a .json is an earlier result
    from cream_pl.pipelines.export_scoremaps import is_manifest

    if any(is_manifest(place) for place in places):  # the only record of which checkpoint wrote the maps beside it
        return _error(f"--out {out}: the manifest of an export-scoremaps run (which checkpoint wrote the maps beside "
                      "it), which export-scoremaps and evaluate read; give another path")
    if args.batch_size < 1:
        return _error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.num_workers is not None and args.num_workers < 0:
        return _error(f"--num-workers must be >= 0, got {args.num_workers}")
    try:
        result = evaluate_scoremaps(
            args.metadata,
            args.scoremaps,
            interval=args.interval,
            multi_contour=args.multi_contour,
            iou_thresholds=args.iou_thresholds,
            mask_root=args.mask_root,
            normalize=args.normalize,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            v1=getattr(args, "v1", True),
        )
    except ValueError as err:  # EvaluationError and bad settings (e.g. --interval 0)
        return _error(err)
    try:
        atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    except OSError as err:
        return _error(f"--out {out}: cannot write: {err.strerror or err}")
    parts = [f"{k}={result[k]:.4f}" for k in ("max_box_acc_v2", "max_box_acc", "pxap") if k in result]
    print(f"{result['num_images']} images: {', '.join(parts)} -> {out}")
    return 0
