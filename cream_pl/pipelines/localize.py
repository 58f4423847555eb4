"""``cream-pl localize``: class, score map and box for arbitrary image files.

For every image (folders are expanded recursively to image files, sorted) a trained
``WSOLClassifier`` gives the top-1 class and its probability; the CREAM (or CAM) map of that class
becomes one box with the benchmark's map -> box rule (largest contour at a threshold τ) on the
``eval_size`` squash grid, and the box is mapped back to original pixels with
:mod:`cream_pl.core.boxes`. With a ``BoxRegressor`` (CREAM_reg) the regressor's box is used instead and
the class still comes from the classifier.

Outputs (written atomically):

- ``<out>/predictions.json``: COCO style (``images``, ``categories``, ``annotations`` with
  ``bbox = [x, y, w, h]`` in original pixels, ``category_id``, ``score``), plus ``"method"``,
  ``"threshold"`` and ``"failed"`` (files that could not be read, with the reason);
- ``<out>/overlays/<stem>.png``: the image, the heatmap of the predicted class and the box.

A rerun into the same ``--out`` replaces the previous run's results: ``predictions.json`` is
rewritten and the overlays the previous run wrote (those its ``predictions.json`` lists) that this
run did not rewrite are removed; any other file in ``<out>/overlays/`` is left alone. Each overlay's
name is put in ``<out>/overlays/.pending`` before it is written, and the list goes once
``predictions.json`` names them, so a run killed before then leaves overlays the next run knows as its own
(rewritten under the same names, or removed). Overlays are never read as input images, even when an input
folder holds ``--out`` or an earlier run's ``--out`` (an ``overlays/`` beside this tool's ``predictions.json``).

A missing or corrupt file is reported on stderr and in ``"failed"``; the other files go on. The
command exits with 1 if any file failed, 0 otherwise, 2 on usage errors. A run whose every input
fails leaves an earlier run's ``predictions.json`` and overlays in ``--out`` as they were.

Example:
    $ cream-pl localize --ckpt outputs/demo/model.ckpt photos/ --out outputs/localize
    $ cream-pl localize --ckpt cls.ckpt --regressor reg.ckpt a.jpg b.png --out out --method cam
"""

from __future__ import annotations

if __name__ == "__main__":  # python -m: parse (and answer --help) before torch is imported; the command
    import sys  # runs from the imported module cream_pl.pipelines.localize, as for cream-pl localize

    from cream_pl.pipelines.command_parsers import add_localize_parser
    from cream_pl.pipelines.entry import run_command

    sys.exit(run_command("localize", add_localize_parser, sys.argv[1:]))

import argparse
import json
import math
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
from torch import Tensor

from cream_pl.core.boxes import BoxFormat, clip_boxes, convert_boxes
from cream_pl.core.errors import user_error_message
from cream_pl.core.io import atomic_write_bytes, check_output_dir, check_output_file
from cream_pl.core.names import DEFAULT_LOCALIZE_THRESHOLD, MAP_METHODS
from cream_pl.data.images import ImageFileError, load_image_rgb
from cream_pl.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_eval_transform
from cream_pl.metrics.functional import pixel_box_from_scoremap_at, prepare_scoremaps
from cream_pl.reporting.tables import write_json_atomic
from cream_pl.reporting.viz import draw_boxes, overlay_heatmap

__all__ = ["IMAGE_EXTENSIONS", "DEFAULT_THRESHOLD", "expand_image_paths", "grid_box_to_original", "localize",
           "checkpoint_class_names", "add_parser", "run"]

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
"""File endings (lower case) picked up when a folder is expanded."""

DEFAULT_THRESHOLD = DEFAULT_LOCALIZE_THRESHOLD
"""τ when none is given and the checkpoint has no validation τ* (the CAM threshold of the CREAM paper)."""

Method = Literal["cream", "cam", "cream_selected"]
METHODS: tuple[str, ...] = MAP_METHODS
_DECIMALS = 4


# ---------------------------------------------------------------------------------------------- helpers


def expand_image_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Expand folders recursively to their image files (by extension, sorted); files are kept as given.

    Paths that do not exist are kept too, so that the caller reports them as failed; a file given twice is kept once.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); (d / "b.PNG").touch(); (d / "a.jpg").touch(); (d / "n.txt").touch()
        >>> [p.name for p in expand_image_paths([d, d / "missing.png"])]
        ['a.jpg', 'b.PNG', 'missing.png']
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            entries = list(p.rglob("*"))  # one walk of the folder, for its images and localize runs' outputs
            found = sorted(f for f in entries  # a dangling link too: reported as failed (before: left out)
                           if (f.is_file() or f.is_symlink()) and f.suffix.lower() in IMAGE_EXTENSIONS)
            skip = _overlay_folders(entries)  # earlier localize runs' overlays are no photos (before: localized)
            out.extend(f for f in found if not any(d in f.parents for d in skip))
        else:
            out.append(p)
    unique: dict[Path, Path] = {}  # a file named twice (itself and its folder, say) is localized once
    for f in out:
        unique.setdefault(_real(f), f)
    return list(unique.values())


def _overlay_folders(entries: Iterable[Path]) -> set[Path]:
    """The ``overlays/`` folders of localize runs among a folder's ``entries`` (all its files): beside a
    ``predictions.json`` of this tool, or holding a killed run's ``.pending`` list.

    Example:
        >>> import json, tempfile
        >>> d = Path(tempfile.mkdtemp()); (d / "run" / "overlays").mkdir(parents=True); (d / "x" / "overlays").mkdir(parents=True)
        >>> _ = (d / "run" / "predictions.json").write_text(json.dumps({"info": {"description": DESCRIPTION}}))
        >>> sorted(str(p.relative_to(d)) for p in _overlay_folders(d.rglob("*")))
        ['run/overlays']
    """
    entries = list(entries)
    found = {f.parent for f in entries if f.name == PENDING and f.parent.name == "overlays"}
    for f in (f for f in entries if f.name == "predictions.json"):
        try:
            info = json.loads(f.read_text(encoding="utf-8")).get("info", {})
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(info, dict) and info.get("description") == DESCRIPTION:
            found.add(f.parent / "overlays")
    return found


def _real(path: Path) -> Path:
    """``path`` with its links resolved; a symlink loop does not raise (``Path.resolve`` does): its file is
    reported as failed when it is read."""
    return Path(os.path.realpath(path))


def grid_box_to_original(box: Sequence[int] | np.ndarray | Tensor, grid_size: int,
                         orig_size: tuple[int, int]) -> list[float]:
    """An inclusive box of the ``grid_size x grid_size`` squash grid -> COCO ``[x, y, w, h]`` in original pixels.

    Grid pixel ``i`` covers ``[i W / S, (i + 1) W / S)`` of the original image, so the box always
    lies inside the image.

    Args:
        box: ``XYXY_INCLUSIVE`` box in the grid.
        grid_size: side ``S`` of the grid (the classifier's ``eval_size``).
        orig_size: ``(width, height)`` of the original image.

    Example:
        >>> grid_box_to_original([56, 0, 111, 223], 224, (448, 100))
        [112.0, 0.0, 112.0, 100.0]
    """
    b = torch.as_tensor(np.asarray(box, dtype=np.float64)).reshape(1, 4)
    rel = convert_boxes(b, BoxFormat.XYXY_INCLUSIVE, BoxFormat.XYXY_REL, (grid_size, grid_size))
    xywh = convert_boxes(rel, BoxFormat.XYXY_REL, BoxFormat.XYWH, orig_size)[0]
    return [round(float(v), _DECIMALS) for v in xywh]


def _regressor_box_to_original(pred: Tensor, orig_size: tuple[int, int]) -> list[float]:
    """Normalised ``(x, y, w, h)`` of the regressor -> COCO ``[x, y, w, h]`` clipped to the image."""
    xyxy = clip_boxes(convert_boxes(pred.reshape(1, 4).double(), BoxFormat.XYWH_REL, BoxFormat.XYXY, orig_size),
                      BoxFormat.XYXY, orig_size)
    xywh = convert_boxes(xyxy, BoxFormat.XYXY, BoxFormat.XYWH)[0]
    return [round(float(v), _DECIMALS) for v in xywh]


def checkpoint_class_names(checkpoint: dict[str, Any], ckpt_path: str | Path | None = None) -> list[str] | None:
    """Class names of a classifier checkpoint, or ``None`` when it has none.

    In order: the names the data module stored in the checkpoint (``WSOLDataModule.state_dict``),
    else ``class_names.txt`` of the data module's ``data_root``. A relative ``data_root`` (as
    recipes write it, relative to the folder training ran in) is tried against the current folder,
    then against the checkpoint's folder and each folder above it.
    """
    from cream_pl.data.metadata import read_class_names

    for value in checkpoint.values():
        if isinstance(value, dict) and isinstance(value.get("class_names"), list) and value["class_names"]:
            return [str(n) for n in value["class_names"]]
    root = (checkpoint.get("datamodule_hyper_parameters") or {}).get("data_root")
    if not root:
        return None
    root = Path(root)
    bases = [Path.cwd()]
    if ckpt_path is not None and not root.is_absolute():
        bases += list(Path(ckpt_path).resolve().parents)
    for base in bases:
        path = (base / root) / "class_names.txt"
        if path.is_file():
            return read_class_names(path)
    return None


def _load_classifier(ckpt: str | Path) -> tuple[Any, tuple[Any, Any] | None, list[str] | None]:
    """Classifier, its training normalisation and class names (see :func:`checkpoint_class_names`)."""
    from cream_pl.models.checkpoints import checkpoint_normalisation, load_classifier, read_checkpoint

    model = load_classifier(ckpt)  # CAM/CREAM, CI-CAM or KD-CI-CAM: the class that wrote it
    checkpoint = read_checkpoint(ckpt)  # read once for the normalisation and the class names
    return model, checkpoint_normalisation(checkpoint), checkpoint_class_names(checkpoint, ckpt)


def _load_regressor(regressor: Any) -> Any:
    if regressor is None or isinstance(regressor, torch.nn.Module):
        return regressor
    from cream_pl.models.checkpoints import load_regressor

    return load_regressor(regressor)  # a missing, truncated or classifier's checkpoint: one line naming it


def _choose_threshold(model: Any, method: str, threshold: float | None) -> tuple[float, str]:
    if threshold is not None:
        if not 0.0 <= float(threshold) < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold}")
        return float(threshold), "given"
    names = list(model.method_names)
    tau = float(model.val_best_threshold[names.index(method)])
    if math.isfinite(tau):
        return tau, "val"
    return DEFAULT_THRESHOLD, "default"


def _unique_stem(stem: str, used: set[str]) -> str:
    name, k = stem, 1
    while name in used:
        name, k = f"{stem}_{k}", k + 1
    used.add(name)
    return name


def _write_png(image_rgb: np.ndarray, path: Path) -> None:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - OpenCV failure
        raise RuntimeError(f"OpenCV could not encode {path}")
    atomic_write_bytes(path, buf.tobytes())


def _overlay(image: np.ndarray, scoremap: np.ndarray, bbox: list[float], label: str) -> np.ndarray:
    h, w = image.shape[:2]
    x0, y0, x1, y1 = convert_boxes(torch.tensor([bbox], dtype=torch.float64), BoxFormat.XYWH,
                                   BoxFormat.XYXY_INCLUSIVE)[0].round().tolist()
    x0, y0 = min(max(x0, 0), w - 1), min(max(y0, 0), h - 1)
    box = [[x0, y0, min(max(x1, x0), w - 1), min(max(y1, y0), h - 1)]]
    thickness = max(1, round(min(h, w) / 150))
    return draw_boxes(overlay_heatmap(image, scoremap), np.asarray(box), thickness=thickness, label=label)


# ---------------------------------------------------------------------------------------------- API


@torch.no_grad()
def localize(
    ckpt_or_model: str | Path | torch.nn.Module,
    paths: Iterable[str | Path],
    out_dir: str | Path,
    regressor: str | Path | torch.nn.Module | None = None,
    method: Method = "cream",
    threshold: float | None = None,
    batch_size: int = 16,
    *,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: str | torch.device | None = None,
    log_errors: bool = True,
) -> dict[str, Any]:
    """Predict class, score map and box for image files; write ``predictions.json`` and overlays.

    Args:
        ckpt_or_model: a ``WSOLClassifier`` checkpoint path, or the module itself.
        paths: image files and/or folders (expanded recursively to image files, sorted).
        out_dir: output folder (``predictions.json``, ``overlays/<stem>.png``).
        regressor: optional ``BoxRegressor`` (checkpoint path or module): its box replaces the map's box.
        method: ``"cream"``, ``"cam"`` or ``"cream_selected"`` (CREAM at the hyperparameters the
            classifier's ``cream_search`` chose on val) maps.
        threshold: map threshold τ in [0, 1); ``None`` = the checkpoint's validation τ* for
            ``method``, else :data:`DEFAULT_THRESHOLD`.
        batch_size: images per forward pass.
        class_names: category names; default = the checkpoint's ``class_names.txt``, else ``class_<i>``.
        mean / std: input normalisation; default = the checkpoint's data-module values, else ImageNet's.
        device: torch device (default: CUDA when available, else CPU).
        log_errors: print one line per unreadable file on stderr.

    Returns:
        The ``predictions.json`` content.

    Raises:
        FileNotFoundError: the classifier or regressor checkpoint does not exist.
        ValueError: bad ``method`` / ``threshold`` / ``batch_size``, or no image found;
            :class:`cream_pl.core.errors.UserValueError` when ``out_dir`` is a file or lies under one
            (checked before the model is loaded).

    Example:
        >>> from cream_pl.models import WSOLClassifier
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); _ = cv2.imwrite(str(d / "a.png"), np.zeros((40, 50, 3), np.uint8))
        >>> res = localize(WSOLClassifier(num_classes=2, pretrained=False, eval_size=32), [d], d / "out",
        ...                method="cam")
        >>> len(res["annotations"]), res["failed"], (d / "out" / "overlays" / "a.png").is_file()
        (1, [], True)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out_dir = Path(out_dir)  # checked before any work: a file in the way fails now, not after the model ran
    check_output_dir(out_dir)
    check_output_dir(out_dir / "overlays", "--out/overlays")
    check_output_file(out_dir / "predictions.json", "--out/predictions.json")
    from cream_pl.models.checkpoints import require_method
    from cream_pl.models.devices import resolve_device

    dev = resolve_device(str(device) if device is not None else None)  # --device banana / cuda without a GPU
    ckpt_path: str | None = None
    names: list[str] | None = None
    norm = None
    if isinstance(ckpt_or_model, torch.nn.Module):
        model = ckpt_or_model
    else:
        ckpt_path = str(ckpt_or_model)
        if not Path(ckpt_path).is_file():
            raise FileNotFoundError(f"classifier checkpoint not found: {ckpt_path}")
        model, norm, names = _load_classifier(ckpt_path)
    require_method(model, method, "--method", ckpt_path)
    tau, tau_source = _choose_threshold(model, method, threshold)
    reg = _load_regressor(regressor)
    num_classes = int(model.classifier.out_features)
    names = list(class_names) if class_names is not None else names
    if names is not None and len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for a {num_classes}-class classifier")
    names = names or [f"class_{c}" for c in range(num_classes)]
    mean = tuple(mean) if mean is not None else (norm[0] if norm else IMAGENET_MEAN)
    std = tuple(std) if std is not None else (norm[1] if norm else IMAGENET_STD)
    grid = int(model.hparams.get("eval_size", 224))
    transform = build_eval_transform(grid, mean, std)
    reg_transform = None
    if reg is not None and reg.frozen_features:
        reg.set_classifier(model)  # the regressor's head reads this classifier's features
        reg.ensure_classifier()  # refuses a classifier of another feature width
    elif reg is not None:
        reg_mean, reg_std = tuple(reg.hparams.data_mean), tuple(reg.hparams.data_std)
        same = np.allclose(reg_mean, mean) and np.allclose(reg_std, std)
        reg_transform = None if same else build_eval_transform(grid, reg_mean, reg_std)
    model.eval().to(dev)
    if reg is not None:
        reg.eval().to(dev)

    overlay_dir = out_dir / "overlays"  # this tool's own output is never an input (localize dir --out dir, twice)
    paths = list(paths)
    files = [f for f in expand_image_paths(paths) if _real(overlay_dir) not in _real(f).parents]
    if not files:
        given = ", ".join(map(str, paths[:3])) + (", ..." if len(paths) > 3 else "")
        raise ValueError(f"no image files to localize in {given} (folders without image files by extension: "
                         f"{', '.join(sorted(IMAGE_EXTENSIONS))}; localize runs' overlays are skipped)")
    images_json: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    before = _previous_overlays(out_dir)
    # a file in overlays/ that no earlier run listed is the user's: never written over (its name is taken)
    used_stems = {f.stem for f in overlay_dir.glob("*.png") if _real(f) not in before} if overlay_dir.is_dir() else set()
    overlay_dir.mkdir(parents=True, exist_ok=True)

    for start in range(0, len(files), batch_size):
        batch: list[tuple[Path, np.ndarray]] = []
        for path in files[start : start + batch_size]:
            try:
                batch.append((path, load_image_rgb(path)))
            except ImageFileError as err:
                failed.append({"file_name": str(path), "reason": err.reason})
                if log_errors:
                    print(f"cream-pl localize: skipped {path}: {err.reason}", file=sys.stderr)
        if not batch:
            continue
        x = torch.stack([transform(image=img)["image"] for _, img in batch]).to(dev)
        feats, logits = model.forward_features(x)
        probs = logits.float().softmax(dim=1)
        score, pred = probs.max(dim=1)
        maps = prepare_scoremaps(model.method_maps(feats.float(), pred, [method])[method].cpu(), size=grid).numpy()
        reg_pred = None
        if reg is not None and reg.frozen_features:  # the head boxes the classifier's own features: one pass
            reg_pred = reg.head(feats.float()).float().cpu()
        elif reg is not None:
            xr = x if reg_transform is None else torch.stack(
                [reg_transform(image=img)["image"] for _, img in batch]).to(dev)
            reg_pred = reg(xr).float().cpu()
        for i, (path, img) in enumerate(batch):
            h, w = img.shape[:2]
            image_id = len(images_json)
            if reg_pred is None:
                box_grid = pixel_box_from_scoremap_at(maps[i], tau)  # first..last pixel
                bbox = grid_box_to_original(box_grid, grid, (w, h))
            else:
                box_grid = None
                bbox = _regressor_box_to_original(reg_pred[i], (w, h))
            c, s = int(pred[i]), float(score[i])
            stem = _unique_stem(path.stem, used_stems)
            overlay_path = overlay_dir / f"{stem}.png"
            with open(overlay_dir / PENDING, "a", encoding="utf-8") as pending:  # before the file exists
                pending.write(f"{overlay_path.name}\n")
            _write_png(_overlay(img, maps[i], bbox, f"{names[c]} {s:.2f}"), overlay_path)
            images_json.append({"id": image_id, "file_name": str(path), "width": w, "height": h,
                                "overlay": str(overlay_path.relative_to(out_dir))})
            ann: dict[str, Any] = {
                "id": image_id, "image_id": image_id, "category_id": c, "category_name": names[c],
                "bbox": bbox, "area": round(bbox[2] * bbox[3], _DECIMALS), "iscrowd": 0, "score": round(s, 6),
            }
            if box_grid is not None:
                ann["box_grid"] = [int(v) for v in box_grid]
            annotations.append(ann)

    result: dict[str, Any] = {
        "info": {
            "description": DESCRIPTION,
            "checkpoint": ckpt_path,
            "regressor": None if regressor is None or isinstance(regressor, torch.nn.Module) else str(regressor),
            "box_source": "regressor" if reg is not None else f"{method} map, largest contour",
            "grid_size": grid,
            "box_format": "bbox = [x, y, w, h] in original image pixels; score = top-1 class probability",
        },
        "method": method,
        "threshold": tau,
        "threshold_source": tau_source,
        "images": images_json,
        "categories": [{"id": c, "name": n} for c, n in enumerate(names)],
        "annotations": annotations,
        "failed": failed,
    }
    if not images_json and before and (out_dir / "predictions.json").is_file():  # every input failed (a mistyped
        # path, say): the earlier run's results stay
        result["kept_previous"] = True  # overlays/.pending too: a killed run's overlays stay this tool's own
        return result
    write_json_atomic(result, out_dir / "predictions.json")
    # the overlays a previous run into the same --out wrote (other images, or images that failed this time) go once
    # this run's are written; a file localize did not write stays
    written = {_real(out_dir / img["overlay"]) for img in images_json}
    for stale in before - written:
        stale.unlink(missing_ok=True)
    (overlay_dir / PENDING).unlink(missing_ok=True)
    return result


DESCRIPTION = "cream-pl localize predictions"
"""``info.description`` of this tool's ``predictions.json``: how a later run knows its overlays are no input."""
PENDING = ".pending"
"""``<out>/overlays/.pending``: the overlays a run has begun to write and its ``predictions.json`` does not list yet."""


def _previous_overlays(out_dir: Path) -> set[Path]:
    """The overlays earlier runs wrote: those ``<out>/predictions.json`` lists (none when it is missing or
    unreadable) and those a killed run had begun (``overlays/.pending``)."""
    import json

    overlays = _real(out_dir / "overlays")
    try:
        paths = {overlays / name for name in (overlays / PENDING).read_text(encoding="utf-8").splitlines() if name}
    except (OSError, ValueError):
        paths = set()
    try:
        images = json.loads((out_dir / "predictions.json").read_text()).get("images", [])
        paths |= {_real(out_dir / str(img["overlay"])) for img in images if img.get("overlay")}
    except (OSError, ValueError, AttributeError, TypeError, KeyError, RecursionError):
        pass
    return {p for p in paths if p.parent == overlays and p.suffix == ".png"}  # never a file outside overlays/


# ---------------------------------------------------------------------------------------------- CLI


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``cream-pl localize`` (its arguments live in :mod:`cream_pl.pipelines.command_parsers`)."""
    from cream_pl.pipelines.command_parsers import add_localize_parser

    return add_localize_parser(subparsers)


def run(args: argparse.Namespace) -> int:
    """``cream-pl localize``: 0 = all files done, 1 = some files failed, 2 = usage error."""

    def usage(msg: str) -> int:
        print(f"cream-pl localize: error: {msg}", file=sys.stderr)
        return 2

    if not args.inputs:
        return usage("no input images or folders given")
    for option, path, what in (("--ckpt", args.ckpt, "classifier"), ("--regressor", args.regressor, "regressor")):
        if path is not None and path.is_dir():
            return usage(f"{path}: {option} is a folder, not a {what} checkpoint file")
        if path is not None and not path.is_file():
            return usage(f"{what} checkpoint not found: {path}")
    if args.threshold is not None and not 0.0 <= args.threshold < 1.0:
        return usage(f"--threshold must be in [0, 1), got {args.threshold}")
    if args.threshold is not None and args.regressor is not None:  # before: recorded as the boxes' threshold
        return usage(f"--threshold {args.threshold:g}: the regressor's boxes take no map threshold; drop --threshold "
                     "or --regressor")
    if args.batch_size < 1:
        return usage(f"--batch-size must be >= 1, got {args.batch_size}")
    try:
        res = localize(args.ckpt, args.inputs, args.out, regressor=args.regressor, method=args.method,
                       threshold=args.threshold, batch_size=args.batch_size, device=args.device)
    except Exception as err:  # a user error: one line; programming errors keep their traceback
        message = user_error_message(err) or (str(err) if isinstance(err, ValueError) else None)
        if message is None:
            raise
        return usage(message)
    n_ok, n_bad = len(res["annotations"]), len(res["failed"])
    if res.get("kept_previous"):
        print(f"localized no image: all {n_bad} failed (listed above); the earlier run's results in "
              f"{args.out / 'predictions.json'} and its overlays are kept")
        return 1
    boxes = (f"boxes of the regressor {args.regressor}, maps of {args.method}" if args.regressor is not None else
             f"{args.method} (threshold {res['threshold']:g}, {res['threshold_source']})")  # the regressor's: no τ
    print(f"localized {n_ok} image(s) with {boxes}; {n_bad} failed; results in {args.out / 'predictions.json'}")
    return 1 if n_bad else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cream_pl.pipelines.localize ...``: the same as ``cream-pl localize ...``."""
    from cream_pl.pipelines.entry import run_command

    return run_command("localize", add_parser, sys.argv[1:] if argv is None else argv)

