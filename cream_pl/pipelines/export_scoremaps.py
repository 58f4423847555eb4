"""``cream-pl export-scoremaps``: a checkpoint's score maps, saved the way wsolevaluation saves them.

For every image of a split and every requested method, the map of the ground-truth class is
computed (``forward_features`` + ``method_maps``), brought to the protocol grid by
:func:`cream_pl.metrics.functional.prepare_scoremaps` (bicubic to 224x224 in float64, then
min-max; a constant or NaN map becomes zeros) and written to ``<out>/<method>/<image_id>.npy``:
a 224x224 float64 array, exactly what the benchmark's ``inference.py`` writes. The image id keeps
its folders (``<out>/cam/001.Black_footed_Albatross/x.jpg.npy``), so both ``cream-pl evaluate
--scoremaps <out>/cam`` and wsolevaluation's ``evaluation.py --scoremap_root <out>/cam`` read
them. Every file is written atomically; ``<out>/scoremaps.json`` records what was exported, and under
``exported`` which checkpoint, data and split wrote each method folder (an earlier export's other methods
stay, named with their own checkpoint). Resumable: the same export again after an interruption goes on from
the last image it finished.

Example:
    $ cream-pl export-scoremaps --ckpt last.ckpt --data data/synth --split test --methods cam,cream --out maps
    $ cream-pl evaluate --metadata data/synth/metadata/test --scoremaps maps/cream --interval 0.001 --out s.json

This module imports torch only when it runs, so ``cream-pl export-scoremaps --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cream_pl.core.errors import UserValueError, user_error_message
from cream_pl.core.io import atomic_write_bytes, atomic_write_text, check_output_dir
from cream_pl.core.options import device_name, nonneg_int, positive_int, split_name

__all__ = ["DONE", "INCOMPLETE", "MANIFEST", "add_parser", "export_scoremaps", "run", "save_npy_atomic", "scoremap_path",
           "unfinished_export"]

MANIFEST = "scoremaps.json"
"""What was exported (checkpoint, split, methods, number of maps), in the output folder."""
INCOMPLETE = "incomplete"
"""The key of a method folder whose export has not finished, in the manifest's ``exported``."""
DONE = "done"
"""Beside :data:`INCOMPLETE`: how many images (in metadata order) the unfinished export had written."""


def unfinished_export(maps: Path | str) -> str | None:
    """Why ``maps`` (``<out>/<method>``) must not be scored: an export into it that did not finish, as its folder's
    manifest says; ``None`` otherwise (a folder cream-pl did not write included).

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp())
        >>> _ = (out / MANIFEST).write_text('{"exported": {"cam": {"incomplete": true, "checkpoint": "/c.ckpt"}}}')
        >>> unfinished_export(out / "cam").endswith("never finished (the maps may mix two checkpoints)")
        True
        >>> unfinished_export(out / "cream") is None
        True
    """
    maps = Path(maps)
    try:
        entry = json.loads((maps.parent / MANIFEST).read_text())["exported"][maps.name]
    except (OSError, ValueError, TypeError, KeyError, RecursionError):
        return None
    if isinstance(entry, dict) and entry.get(INCOMPLETE):
        return (f"{maps}: the export-scoremaps run into it (checkpoint {entry.get('checkpoint')}, "
                f"{maps.parent / MANIFEST}) never finished (the maps may mix two checkpoints)")
    return None


def scoremap_path(out: Path | str, method: str, image_id: str) -> Path:
    """``<out>/<method>/<image_id>.npy``: the benchmark's ``<scoremap_root>/<image_id>.npy`` per method."""
    return Path(out) / method / f"{image_id}.npy"


def save_npy_atomic(array: Any, path: Path) -> None:
    """``np.save`` through :func:`cream_pl.core.io.atomic_write_bytes` (the one atomic writer: the
    file gets the mode a plain ``open`` would give it, honouring the umask)."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def _parse_methods(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise ValueError(f"--methods: no method named in {text!r} (e.g. cam,cream)")
    return list(dict.fromkeys(names))


def export_scoremaps(
    ckpt: Path | str,
    data_root: Path | str,
    out: Path | str,
    *,
    split: str = "test",
    methods: Sequence[str] = ("cam", "cream"),
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | None = None,
    size: int = 224,
    image_root: Path | str | None = None,
    mask_root: Path | str | None = None,
) -> dict[str, Any]:
    """Write ``<out>/<method>/<image_id>.npy`` for every image of ``split`` and every method.

    Args:
        ckpt: classifier checkpoint (CAM/CREAM, CI-CAM or KD-CI-CAM; see ``load_classifier``).
        data_root: dataset root (``images/``, ``metadata/<split>/``).
        out: output folder (created; existing maps are replaced).
        split: metadata split to export.
        methods: names among the model's ``method_names`` (e.g. ``cam``, ``cream``, ``cream_T1``).
        batch_size, num_workers: data loading.
        device: torch device (default: CUDA when available, else CPU).
        size: side of the saved maps (224 in the protocol).
        image_root / mask_root: where the image ids and mask paths are relative to (default ``<data_root>/images``
            and ``<data_root>/masks``).

    Returns:
        The manifest written to ``<out>/scoremaps.json``.

    Raises:
        ValueError: an unknown method, a bad split, an unreadable checkpoint (one line).
    """
    import torch
    from torch.utils.data import DataLoader, Subset

    from cream_pl.core.io import file_sha1
    from cream_pl.data.datamodule import WSOLDataModule
    from cream_pl.data.metadata import data_sha1
    from cream_pl.metrics.functional import prepare_scoremaps
    from cream_pl.models.checkpoints import (
        check_checkpoint_dataset,
        checkpoint_normalisation,
        load_classifier,
        read_checkpoint,
        require_method,
    )
    from cream_pl.models.devices import resolve_device

    out = Path(out)
    check_output_dir(out)
    names = list(dict.fromkeys(methods))
    dev = resolve_device(device)
    if not (Path(data_root) / "metadata" / split).is_dir():
        raise UserValueError(f"{Path(data_root) / 'metadata' / split}: no such split")
    checkpoint = read_checkpoint(ckpt)
    check_checkpoint_dataset(checkpoint, data_root, splits=[split], ckpt_path=ckpt)  # before any work
    model = load_classifier(ckpt)
    unknown = [m for m in names if m not in model.method_names]
    if unknown:
        raise UserValueError(f"{ckpt}: unknown method(s) {unknown}; this checkpoint has {list(model.method_names)}")
    for name in names:
        require_method(model, name, "--methods", ckpt)
    before = _exported_before(out)
    for name in names:  # one method folder holds one checkpoint's maps: the manifest names one checkpoint per method
        old = before.get(name, {})
        other_images = old.get("split") != split or Path(str(old.get("data_root"))).resolve() != Path(data_root).resolve()
        if old and other_images and Path(str(old.get("checkpoint"))).resolve() != Path(ckpt).resolve():
            raise UserValueError(f"{out / name}: holds another checkpoint's maps ({old.get('checkpoint')}, split "
                                 f"{old.get('split')!r} of {old.get('data_root')}) that this export would not replace; "
                                 "give another --out")
    model.to(dev)
    kwargs: dict[str, Any] = {"batch_size": batch_size, "num_workers": num_workers, "eval_size": size}
    norm = checkpoint_normalisation(checkpoint)
    if norm is not None:  # the input normalisation the classifier was trained with
        kwargs["mean"], kwargs["std"] = norm
    for key, value in (("image_root", image_root), ("mask_root", mask_root)):
        if value is not None:
            kwargs[key] = str(value)
    dm = WSOLDataModule(str(data_root), predict_split=split, **kwargs)
    place = {"checkpoint": str(Path(ckpt).resolve()), "data_root": str(Path(data_root).resolve()), "split": split,
             "image_root": str(dm.image_root.resolve())}  # a resume from other images would mix two sets of maps
    # until the last map is written, the manifest says so: an export cut short (Ctrl-C, SIGTERM) leaves a folder of
    # two checkpoints' maps, which evaluate then refuses instead of scoring them together; it also says how many
    # images (in metadata order) are done, so that the same export again goes on from there
    cut = {"checkpoint_sha1": file_sha1(ckpt), "data_sha1": data_sha1(Path(data_root)), "size": size}
    loader = dm.predict_dataloader()
    total = len(loader.dataset)
    count = _done_before(before, names, {**place, **cut})
    if count:
        print(f"{out}: resuming the export cut short after {count} of {total} images", file=sys.stderr)
        loader = DataLoader(Subset(loader.dataset, range(count, total)), batch_size=loader.batch_size, shuffle=False,
                            num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory)
    first = True
    with torch.inference_mode():
        for batch in loader:
            if first:  # just before the first map: an export that fails earlier leaves the folder as it was
                out.mkdir(parents=True, exist_ok=True)
                first = False
            feats, _ = model.forward_features(batch["image"].to(dev))
            maps = model.method_maps(feats.float(), batch["label"].to(dev), names)
            atomic_write_text(out / MANIFEST, json.dumps({"exported": {**before, **{  # before this batch's maps
                name: {**place, **cut, INCOMPLETE: True, DONE: count} for name in names}}}, indent=2) + "\n")
            for name in names:
                scoremaps = prepare_scoremaps(maps[name].detach().cpu(), size=size).numpy()
                for image_id, scoremap in zip(batch["image_id"], scoremaps):
                    save_npy_atomic(scoremap, scoremap_path(out, name, image_id))
            count += len(batch["image_id"])
    this = {**place, "num_images": count}
    manifest = {
        **this,
        "methods": names,
        "size": size,
        "dtype": "float64",
        "layout": "<out>/<method>/<image_id>.npy",
        # every method folder under <out> and what wrote it: an earlier export's other methods stay, and say so
        "exported": {**before, **{name: this for name in names}},
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


def _done_before(before: Mapping[str, Any], names: Sequence[str], this: Mapping[str, Any]) -> int:
    """How many images (in metadata order) an export of these ``names`` cut short had written, where it was this
    export (checkpoint, data and split, by content too, and map size); 0 otherwise.

    Example:
        >>> this = {"checkpoint": "/c.ckpt", "checkpoint_sha1": "ab", "split": "test"}
        >>> cut = {"cam": {**this, INCOMPLETE: True, DONE: 64}, "cream": {**this, INCOMPLETE: True, DONE: 64}}
        >>> _done_before(cut, ["cam", "cream"], this), _done_before(cut, ["cam"], {**this, "checkpoint_sha1": "cd"})
        (64, 0)
        >>> _done_before({"cam": {**this, DONE: 64}}, ["cam"], this)  # a finished export: done anew
        0
    """
    done = set()
    for name in names:
        entry = before.get(name)
        if not isinstance(entry, dict) or not entry.get(INCOMPLETE) or any(entry.get(k) != v for k, v in this.items()):
            return 0
        done.add(entry.get(DONE))
    (count,) = done if len(done) == 1 else (0,)
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 0


def _exported_before(out: Path) -> dict[str, Any]:
    """``exported`` of an earlier export's manifest in ``out`` (its ``methods``, for a manifest of before that key)."""
    try:
        old = json.loads((out / MANIFEST).read_text())
        if "exported" in old:
            return {str(k): dict(v) for k, v in old["exported"].items()}
        return {str(m): {k: old[k] for k in ("checkpoint", "data_root", "split", "num_images")} for m in old["methods"]}
    except (OSError, ValueError, AttributeError, TypeError, KeyError, RecursionError):
        return {}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``cream-pl export-scoremaps``."""
    p = subparsers.add_parser(
        "export-scoremaps",
        help="save a checkpoint's score maps as <out>/<method>/<image_id>.npy (wsolevaluation format)",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    p.add_argument("--ckpt", required=True, type=Path, help="classifier checkpoint (CAM/CREAM, CI-CAM, KD-CI-CAM)")
    p.add_argument("--data", required=True, type=Path, help="dataset root (images/, metadata/)")
    p.add_argument("--image-root", type=Path, default=None,
                   help="folder the image ids are relative to (default: <data>/images)")
    p.add_argument("--mask-root", type=Path, default=None,
                   help="folder the mask paths are relative to (default: <data>/masks)")
    p.add_argument("--split", type=split_name, default="test", help="split to export (default: test)")
    p.add_argument("--methods", default="cam,cream", help="comma-separated methods (default: cam,cream)")
    p.add_argument("--out", required=True, type=Path, help="output folder (one sub-folder per method)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--num-workers", type=nonneg_int, default=0, help="data-loading processes")
    p.add_argument("--device", type=device_name, default=None, help="torch device, e.g. cpu or cuda:0 (default: auto)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``cream-pl export-scoremaps``; 0 on success, 2 on a user error (one line on stderr)."""

    def error(msg: str) -> int:
        print(f"cream-pl export-scoremaps: error: {msg}", file=sys.stderr)
        return 2

    try:
        check_output_dir(args.out)
        methods = _parse_methods(args.methods)
    except ValueError as err:  # a bad --out (UserValueError) or --methods
        return error(str(err))
    if args.batch_size < 1:
        return error(f"--batch-size must be >= 1, got {args.batch_size}")
    if not Path(args.ckpt).is_file():
        return error(f"--ckpt {args.ckpt}: checkpoint not found")
    try:
        manifest = export_scoremaps(args.ckpt, args.data, args.out, split=args.split, methods=methods,
                                    batch_size=args.batch_size, num_workers=args.num_workers, device=args.device,
                                    image_root=args.image_root, mask_root=args.mask_root)
    except Exception as err:  # a user error (bad image, checkpoint, dataset): one line; others keep their traceback
        message = user_error_message(err)
        if message is None:
            raise
        return error(message)
    print(f"wrote {manifest['num_images']} maps x {len(methods)} method(s) ({', '.join(methods)}) "
          f"of split {args.split} to {args.out}/<method>/<image_id>.npy")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cream_pl.pipelines.export_scoremaps ...``: the same as ``cream-pl export-scoremaps ...``."""
    from cream_pl.pipelines.entry import run_command

    return run_command("export-scoremaps", add_parser, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
