"""``cream-pl evaluate``: score saved score maps the way wsolevaluation's own tool does.

Usage::

    cream-pl evaluate --metadata data/cub/metadata/test --scoremaps runs/x/scoremaps \\
        [--interval 0.01] [--no-multi-contour] [--mask-root data/openimages/masks] --out scores.json

Input:

- ``--metadata``: a split folder in the wsolevaluation format (``image_ids.txt``,
  ``image_sizes.txt``, ``localization.txt`` with box lines and/or OpenImages mask lines, and the
  optional ``localization_masks.txt``).
- ``--scoremaps``: one ``<image_id>.npy`` per image (the image id path is kept and ``.npy`` is
  appended, e.g. ``001/img.jpg.npy``), a 2-D array of any real dtype, read as float64.

Score maps, as in the benchmark's tool: a 224x224 map with values in ``[0, 1]`` is scored as it
is. Any other map (another size, or values outside ``[0, 1]``) goes through the protocol's
``prepare_scoremap`` (bicubic resize to 224, then min-max; a constant map becomes zeros);
``--normalize always`` applies that to every map. A map with NaN or infinite values is an error,
as in the benchmark's tool (its training-time code would have turned a NaN CAM into zeros before
saving it).

Output JSON: ``max_box_acc_v2`` (mean over the IoU levels for the chosen contour mode),
``max_box_acc`` (V1: IoU 50, largest contour), ``max_box_acc_iou`` (``{"30": ..., "50": ...,
"70": ...}`` for the chosen contour mode), ``best_threshold_iou``, ``pxap`` (with ``--mask-root``),
and the settings used. Defaults follow the benchmark's standalone tool: interval 0.01.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cream_pl.boxes import resize_boxes_protocol
from cream_pl.metrics.box_accuracy import BoxAccuracy, MaxBoxAcc
from cream_pl.metrics.functional import RESIZE_LENGTH, prepare_scoremap
from cream_pl.metrics.pxap import PxAP, load_gt_mask

__all__ = ["EvaluationError", "SplitMetadata", "read_split_metadata", "load_scoremap", "evaluate_scoremaps"]


class EvaluationError(ValueError):
    """Bad input to ``cream-pl evaluate`` (the message names the file, line or image id)."""


@dataclass
class SplitMetadata:
    """What ``evaluate`` needs from a split folder."""

    image_ids: list[str]
    image_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    boxes: dict[str, list[tuple[int, int, int, int]]] = field(default_factory=dict)
    mask_paths: dict[str, list[str]] = field(default_factory=dict)
    ignore_paths: dict[str, str] = field(default_factory=dict)


def _lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, line)`` pairs; the files have no trailing newline, as in the benchmark."""
    return list(enumerate(path.read_text(encoding="utf-8").splitlines(), start=1))


def _int(value: str, path: Path, number: int) -> int:
    try:
        return int(value)
    except ValueError:
        raise EvaluationError(f"{path}:{number}: expected an integer, got {value!r}") from None


def read_split_metadata(split_dir: str | os.PathLike[str]) -> SplitMetadata:
    """Read a wsolevaluation split folder (boxes and/or OpenImages-style mask lines).

    Raises:
        EvaluationError: a missing file or a malformed line (named as ``file:line``).
    """
    root = Path(split_dir)
    ids_file = root / "image_ids.txt"
    if not ids_file.is_file():
        raise EvaluationError(f"{root} is not a split folder: {ids_file} is missing")
    meta = SplitMetadata(image_ids=[])
    seen: set[str] = set()
    for number, line in _lines(ids_file):
        if not line:
            raise EvaluationError(f"{ids_file}:{number}: empty image id")
        if line in seen:
            raise EvaluationError(f"{ids_file}:{number}: image id {line!r} listed twice")
        seen.add(line)
        meta.image_ids.append(line)

    sizes_file = root / "image_sizes.txt"
    if sizes_file.is_file():
        for number, line in _lines(sizes_file):
            parts = line.split(",")
            if len(parts) != 3:
                raise EvaluationError(
                    f"{sizes_file}:{number}: expected '<image_id>,<width>,<height>', got {line!r}"
                )
            w, h = _int(parts[1], sizes_file, number), _int(parts[2], sizes_file, number)
            if w <= 0 or h <= 0:
                raise EvaluationError(f"{sizes_file}:{number}: image size must be positive, got {w}x{h}")
            meta.image_sizes[parts[0]] = (w, h)

    for name in ("localization.txt", "localization_masks.txt"):
        loc_file = root / name
        if not loc_file.is_file():
            continue
        for number, line in _lines(loc_file):
            parts = line.split(",")
            if len(parts) == 5 and name == "localization.txt":
                box = tuple(_int(v, loc_file, number) for v in parts[1:])
                x0, y0, x1, y1 = box
                if min(box) < 0 or x1 < x0 or y1 < y0:
                    raise EvaluationError(
                        f"{loc_file}:{number}: a box must be inclusive x0,y0,x1,y1 with 0 <= x0 <= x1 and "
                        f"0 <= y0 <= y1, got {line!r}"
                    )
                meta.boxes.setdefault(parts[0], []).append(box)  # type: ignore[arg-type]
            elif len(parts) == 3:
                image_id, mask_path, ignore_path = parts
                if image_id in meta.mask_paths:
                    if ignore_path:
                        raise EvaluationError(
                            f"{loc_file}:{number}: only the first mask line of an image may name an ignore mask"
                        )
                    meta.mask_paths[image_id].append(mask_path)
                else:
                    meta.mask_paths[image_id] = [mask_path]
                    meta.ignore_paths[image_id] = ignore_path
            else:
                raise EvaluationError(
                    f"{loc_file}:{number}: expected '<image_id>,<x0>,<y0>,<x1>,<y1>' (box) or "
                    f"'<image_id>,<mask_png>,<ignore_png>' (mask), got {line!r}"
                )
    return meta


def load_scoremap(path: str | os.PathLike[str], image_id: str, normalize: str = "auto") -> np.ndarray:
    """Load one saved score map and bring it to the 224x224 protocol grid (see the module docstring).

    Raises:
        EvaluationError: missing or unreadable file, not 2-D, NaN or infinite values.
    """
    if normalize not in ("auto", "always"):
        raise ValueError(f"normalize must be 'auto' or 'always', got {normalize!r}")
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"no score map for image {image_id!r}: expected {path}")
    try:
        raw = np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise EvaluationError(f"cannot read the score map of image {image_id!r} ({path}): {err}") from err
    if raw.ndim != 2 or raw.size == 0 or not (np.issubdtype(raw.dtype, np.number) or raw.dtype == np.bool_):
        raise EvaluationError(
            f"the score map of image {image_id!r} ({path}) must be a non-empty 2-D numeric array, "
            f"got shape {raw.shape} dtype {raw.dtype}"
        )
    scoremap = raw.astype(np.float64)
    if np.isnan(scoremap).any():
        raise EvaluationError(f"the score map of image {image_id!r} ({path}) contains NaN")
    if np.isinf(scoremap).any():
        raise EvaluationError(f"the score map of image {image_id!r} ({path}) contains an infinite value")
    in_range = scoremap.min() >= 0.0 and scoremap.max() <= 1.0
    if normalize == "auto" and scoremap.shape == (RESIZE_LENGTH, RESIZE_LENGTH) and in_range:
        return scoremap
    return prepare_scoremap(scoremap)


def _batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


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
) -> dict[str, Any]:
    """Score a folder of saved score maps against a split; returns the JSON-ready result dict."""
    meta = read_split_metadata(metadata)
    root = Path(scoremaps)
    has_boxes = bool(meta.boxes)
    if not has_boxes and mask_root is None:
        if meta.mask_paths:
            raise EvaluationError(f"{metadata} has mask annotations only: pass --mask-root to compute PxAP")
        raise EvaluationError(f"{metadata} has no box annotations (localization.txt) to evaluate against")
    if mask_root is not None and not meta.mask_paths:
        raise EvaluationError(
            f"--mask-root was given but {metadata} has no mask lines (localization.txt or localization_masks.txt)"
        )
    for image_id in meta.image_ids:
        if has_boxes and image_id not in meta.boxes:
            raise EvaluationError(f"image {image_id!r} has no box in {Path(metadata) / 'localization.txt'}")
        if has_boxes and image_id not in meta.image_sizes:
            raise EvaluationError(f"image {image_id!r} has no size in {Path(metadata) / 'image_sizes.txt'}")
        if mask_root is not None and image_id not in meta.mask_paths:
            raise EvaluationError(f"image {image_id!r} has no mask line in {metadata}")

    main = BoxAccuracy(iou_thresholds, multi_contour, interval, num_workers)
    v1 = None if (not multi_contour and 50 in main.iou_thresholds) else MaxBoxAcc(cam_curve_interval=interval)
    pxap = PxAP(cam_curve_interval=interval) if mask_root is not None else None
    grid = (RESIZE_LENGTH, RESIZE_LENGTH)
    for batch in _batches(meta.image_ids, batch_size):
        maps = np.stack([load_scoremap(root / f"{image_id}.npy", image_id, normalize) for image_id in batch])
        if has_boxes:
            gt = [
                resize_boxes_protocol(torch.tensor(meta.boxes[i]), meta.image_sizes[i], grid) for i in batch
            ]
            main.update(maps, gt)
            if v1 is not None:
                v1.update(maps, gt)
        if pxap is not None:
            masks = []
            for image_id in batch:
                ignore = meta.ignore_paths[image_id]
                try:
                    masks.append(
                        load_gt_mask(
                            [Path(mask_root) / p for p in meta.mask_paths[image_id]],
                            Path(mask_root) / ignore if ignore else None,
                        )
                    )
                except FileNotFoundError as err:
                    raise EvaluationError(f"image {image_id!r}: {err}") from err
            pxap.update(maps, np.stack(masks))

    result: dict[str, Any] = {
        "num_images": len(meta.image_ids),
        "cam_curve_interval": float(interval),
        "multi_contour": bool(multi_contour),
        "iou_thresholds": [int(d) for d in main.iou_thresholds],
        "normalize": normalize,
    }
    if has_boxes:
        out = main.compute()
        result["max_box_acc_v2"] = out["max_box_acc"]
        result["max_box_acc"] = (v1.compute() if v1 is not None else out)["max_box_acc_iou"][50]
        result["max_box_acc_iou"] = {str(k): v for k, v in out["max_box_acc_iou"].items()}
        result["best_threshold_iou"] = {str(k): v for k, v in out["best_threshold_iou"].items()}
    if pxap is not None:
        result["pxap"] = float(pxap.compute())
    return result


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``cream-pl evaluate``."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score saved score maps (<image_id>.npy) with MaxBoxAcc, MaxBoxAccV2 and PxAP",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--metadata", required=True, help="split folder (image_ids.txt, localization.txt, ...)"
    )
    parser.add_argument("--scoremaps", required=True, help="folder with one <image_id>.npy per image")
    parser.add_argument(
        "--interval",
        type=float,
        default=0.01,
        help="CAM threshold step (default 0.01, as the benchmark's tool)",
    )
    parser.add_argument(
        "--no-multi-contour",
        dest="multi_contour",
        action="store_false",
        help="box of the largest contour only for max_box_acc_v2/max_box_acc_iou (default: every contour)",
    )
    parser.add_argument(
        "--iou-thresholds", type=int, nargs="+", default=[30, 50, 70], help="IoU levels in percent"
    )
    parser.add_argument(
        "--mask-root", default=None, help="folder the mask PNG paths are relative to (enables PxAP)"
    )
    parser.add_argument(
        "--normalize",
        choices=("auto", "always"),
        default="auto",
        help="auto: 224x224 maps in [0,1] are scored as saved, others resized + min-max; always: min-max every map",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="maps loaded at a time")
    parser.add_argument(
        "--num-workers", type=int, default=None, help="threads over images (default: all CPUs)"
    )
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``cream-pl evaluate``; returns the exit status."""
    if args.batch_size < 1:
        print(f"cream-pl evaluate: error: --batch-size must be >= 1, got {args.batch_size}", file=sys.stderr)
        return 2
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
        )
    except ValueError as err:  # EvaluationError and bad settings (e.g. --interval 0)
        print(f"cream-pl evaluate: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    parts = [f"{k}={result[k]:.4f}" for k in ("max_box_acc_v2", "max_box_acc", "pxap") if k in result]
    print(f"{result['num_images']} images: {', '.join(parts)} -> {out}")
    return 0
