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
stay, named with their own checkpoint). A method folder holds the maps of one split of one dataset: an export
of other images into it is refused, as is an ``--out`` inside the dataset. Resumable: the same export again
after an interruption goes on from the last image it finished; until then each method folder holds a
``.export-scoremaps-unfinished`` file, so that ``evaluate`` refuses the folder, a copy of it or a link to it.

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
from cream_pl.core.io import atomic_write_bytes, atomic_write_text, check_output_dir, check_outside_inputs
from cream_pl.core.options import device_name, nonneg_int, positive_int, split_name

__all__ = ["DONE", "INCOMPLETE", "MANIFEST", "MARKER", "add_parser", "export_root_hint", "export_scoremaps",
           "is_manifest", "other_split", "run", "save_npy_atomic", "scoremap_path", "unfinished_export"]

MANIFEST = "scoremaps.json"
"""What was exported (checkpoint, split, methods, number of maps), in the output folder."""
INCOMPLETE = "incomplete"
"""The key of a method folder whose export has not finished, in the manifest's ``exported``."""
DONE = "done"
"""Beside :data:`INCOMPLETE`: how many images (in metadata order) the unfinished export had written."""
MARKER = ".export-scoremaps-unfinished"
"""In a method folder while an export into it has not finished (a dot-file: never an image id's ``.npy``). The
manifest beside the folder says so too, but a copy of the folder (``cp -r``) leaves the manifest behind."""


def unfinished_export(maps: Path | str) -> str | None:
    """Why ``maps`` (``<out>/<method>``) must not be scored: an export into it that did not finish, as its folder's
    manifest (a link to the folder followed) or the :data:`MARKER` in it says; ``None`` otherwise (a folder cream-pl
    did not write, or one an older cream-pl wrote without the marker, included).

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp())
        >>> _ = (out / MANIFEST).write_text('{"exported": {"cam": {"incomplete": true, "checkpoint": "/c.ckpt"}}}')
        >>> unfinished_export(out / "cam").endswith("never finished (the maps may mix two checkpoints)")
        True
        >>> unfinished_export(out / "cream") is None
        True
        >>> (out / "copy").mkdir(); _ = (out / "copy" / MARKER).write_text('{"checkpoint": "/c.ckpt"}')
        >>> "(checkpoint /c.ckpt, " in unfinished_export(out / "copy")
        True
    """
    maps = Path(maps)
    manifest, entry = _manifest_entry(maps)
    if entry is not None and entry.get(INCOMPLETE):
        return _never_finished(maps, entry.get("checkpoint"), manifest)
    marker = maps / MARKER
    if marker.exists():  # a copy of a folder cut short, away from the manifest that says so
        try:
            checkpoint = json.loads(marker.read_text()).get("checkpoint")
        except (OSError, ValueError, AttributeError, RecursionError):
            checkpoint = None
        return _never_finished(maps, checkpoint, marker)
    return None


def _never_finished(maps: Path, checkpoint: object, says: Path) -> str:
    return f"{maps}: the export-scoremaps run into it (checkpoint {checkpoint}, {says}) never finished (the maps may " \
           "mix two checkpoints)"


def _manifest_entry(maps: Path) -> tuple[Path, dict[str, Any] | None]:
    """The manifest of the export that wrote ``maps`` (``<out>/<method>``; a link to it followed: the manifest is
    beside the real folder) and what it says of that folder (``None``: nothing)."""
    real = Path(maps).resolve()
    return real.parent / MANIFEST, _exported_before(real.parent).get(real.name)


def other_split(maps: Path | str, metadata: Path | str) -> str | None:
    """Why ``maps`` must not be scored against the split folder ``metadata``: its manifest says they are the maps of
    another split (``metadata``'s folder name, or that of the folder it links to); ``None`` otherwise.

    The data root is not compared: a dataset may have been moved since the export.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp())
        >>> _ = (out / MANIFEST).write_text('{"exported": {"cam": {"split": "val", "data_root": "/d"}}}')
        >>> other_split(out / "cam", "/d/metadata/test").endswith("but --metadata /d/metadata/test is split 'test'")
        True
        >>> other_split(out / "cam", "/d/metadata/val/") is None
        True
    """
    manifest, entry = _manifest_entry(Path(maps))
    meta = Path(metadata)
    if entry is None or not isinstance(entry.get("split"), str) or entry["split"] in (meta.name, meta.resolve().name):
        return None
    return (f"--scoremaps {maps}: the maps of split {entry['split']!r} of {entry.get('data_root')} (as {manifest} "
            f"says), but --metadata {metadata} is split {meta.resolve().name!r}")


def is_manifest(path: Path | str) -> bool:
    """Whether ``path`` is an export's manifest (``scoremaps.json`` naming the method folders beside it): the only
    record of which checkpoint wrote them, which no other output may replace.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp())
        >>> _ = (out / MANIFEST).write_text('{"max_box_acc_v2": 50.0}')  # an evaluate result under that name
        >>> is_manifest(out / MANIFEST)
        False
        >>> _ = (out / MANIFEST).write_text('{"exported": {"cam": {"split": "test"}}}')
        >>> is_manifest(out / MANIFEST)
        True
    """
    path = Path(path)
    return path.name == MANIFEST and path.is_file() and bool(_exported_before(path.parent))


def export_root_hint(folder: Path | str) -> str:
    """For a missing map: ``" (<folder> is an export-scoremaps folder: pass <folder>/cam or <folder>/cream)"`` where
    ``folder`` is an export's ``--out`` (the maps are one level down), else ``""``."""
    folder = Path(folder)
    methods = [folder / name for name in _exported_before(folder) if (folder / name).is_dir()]
    if not methods:
        return ""
    return f" ({folder} is an export-scoremaps folder: pass {' or '.join(str(m) for m in methods)})"


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
        out: output folder (created; existing maps of the same split and dataset are replaced; not inside the
            dataset).
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
        ValueError: an unknown method, a bad split, an unreadable checkpoint, an ``out`` inside the dataset or
            holding other images' maps (one line).
    """
    out = Path(out)
    check_output_dir(out)
    check_outside_inputs(out, {"--data": data_root, "--image-root": image_root, "--mask-root": mask_root},
                         "which the export reads: the maps would be written into the dataset; give an --out outside it")

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

    names = list(dict.fromkeys(methods))
    dev = resolve_device(device)
    if not (Path(data_root) / "metadata" / split).is_dir():
        raise UserValueError(f"{Path(data_root) / 'metadata' / split}: no such split")
    data_id = data_sha1(Path(data_root))
    before = _exported_before(out)
    _check_same_images(out, before, names, split, data_root, data_id)
    checkpoint = read_checkpoint(ckpt)
    check_checkpoint_dataset(checkpoint, data_root, splits=[split], ckpt_path=ckpt)  # before any work
    model = load_classifier(ckpt)
    unknown = [m for m in names if m not in model.method_names]
    if unknown:
        raise UserValueError(f"{ckpt}: unknown method(s) {unknown}; this checkpoint has {list(model.method_names)}")
    for name in names:
        require_method(model, name, "--methods", ckpt)
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
    cut = {"checkpoint_sha1": file_sha1(ckpt), "data_sha1": data_id, "size": size}
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
                _mark_unfinished(out, names, place)
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
    this = {**place, "data_sha1": data_id, "num_images": count}  # data_sha1: the same data moved is still the same
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
    for name in names:  # after the manifest: an export stopped in between leaves a marker, refused, never a mix
        (out / name / MARKER).unlink(missing_ok=True)
    return manifest


def _check_same_images(out: Path, before: Mapping[str, Any], names: Sequence[str], split: str,
                       data_root: Path | str, data_id: str) -> None:
    """Refuse to export other images (another split, another dataset) into a method folder that holds maps: the
    export would replace only the image ids the two share and leave the others' maps beside its own, under a
    manifest that names only this export, whatever the checkpoint."""
    for name in names:
        old = before.get(name)
        if not old or not (out / name).is_dir() or _same_images(old, split, data_root, data_id):
            continue
        raise UserValueError(f"{out / name}: holds the maps of split {old.get('split')!r} of {old.get('data_root')} "
                             f"(checkpoint {old.get('checkpoint')}), which this export of split {split!r} of "
                             f"{data_root} would not all replace; give another --out (or remove {out / name})")


def _same_images(old: Mapping[str, Any], split: str, data_root: Path | str, data_id: str) -> bool:
    """Whether the export ``old`` (a manifest's entry) read the images of ``split`` of ``data_root``: the same split
    of the same folder (links followed), or of the same dataset (by content: moved, or copied elsewhere).

    Example:
        >>> old = {"split": "test", "data_root": "/nowhere/tiny", "data_sha1": "ab"}
        >>> _same_images(old, "test", "/moved/tiny", "ab"), _same_images(old, "test", "/nowhere/tiny", "cd")
        (True, True)
        >>> _same_images(old, "val", "/nowhere/tiny", "ab"), _same_images(old, "test", "/other", "cd")
        (False, False)
    """
    if old.get("split") != split:
        return False
    return Path(str(old.get("data_root"))).resolve() == Path(data_root).resolve() or old.get("data_sha1") == data_id


def _mark_unfinished(out: Path, names: Sequence[str], place: Mapping[str, Any]) -> None:
    """Put the :data:`MARKER` in each method folder before its first map is written or replaced: a copy of a folder
    whose export is cut short carries it, away from the manifest that says so."""
    for name in names:
        (out / name).mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / name / MARKER, json.dumps(dict(place)) + "\n")


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
    if Path(args.ckpt).is_dir():
        return error(f"--ckpt {args.ckpt}: a folder, not a checkpoint file")
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
