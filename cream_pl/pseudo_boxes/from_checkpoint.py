"""Pseudo boxes of a classifier checkpoint over a dataset split: the work of ``cream-pl pseudo-boxes``.

:func:`pseudo_boxes_from_checkpoint` checks everything it can before loading anything (the output
file, the trainer options, the split, the checkpoint against the dataset's classes), loads the
classifier as the class that wrote it, chooses τ* on the val split at the input size when no
threshold is given, then runs :func:`cream_pl.pseudo_boxes.generate.generate_pseudo_boxes`.
``cream-pl pseudo-boxes`` (:mod:`cream_pl.cli.pseudo_boxes_command`) and the CUB recipe
(:mod:`cream_pl.pipelines.recipes`) both call it.

Example:
    $ cream-pl pseudo-boxes --ckpt runs/cub/last.ckpt --data data/cub --out runs/cub/pseudo_boxes.json
    $ python -m cream_pl.pipelines.recipes pseudo-boxes --data data/cub --work outputs/cub_vgg16_cream
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cream_pl.models.checkpoints import checkpoint_normalisation
from cream_pl.pseudo_boxes.generate import (
    Source,
    choose_threshold_on_val,
    generate_pseudo_boxes,
    quality_path,
    refuse_another_runs_file,
)

__all__ = ["pseudo_boxes_from_checkpoint", "print_pseudo_box_summary"]


def pseudo_boxes_from_checkpoint(
    ckpt: Path | str,
    data: Path | str,
    out: Path | str,
    *,
    source: Source = "cream",
    threshold: float | None = None,
    split: str = "train",
    input_size: int = 224,
    batch_size: int = 32,
    num_workers: int = 4,
    chunk_size: int | None = None,
    multi_contour: bool = False,
    accelerator: str = "auto",
    devices: int | str = "auto",
    strategy: str = "auto",
    precision: str | None = None,
    overwrite: bool = False,
    keep_shards: bool = False,
) -> tuple[Path, float]:
    """Write the pseudo boxes of the classifier ``ckpt`` over ``split`` of the dataset ``data`` to ``out``.

    Args:
        ckpt: classifier checkpoint (CAM/CREAM, CI-CAM or KD-CI-CAM).
        data: dataset root (``images/``, ``metadata/``).
        out: COCO JSON file to write.
        source: the score maps to box (``cream_selected``: CREAM at the classifier's val-selected values).
        threshold: fixed CAM threshold τ, or ``None`` for τ* on the val split at ``input_size``.
        input_size: the classifier's input (PSOL: 448).
        chunk_size: images per resumable shard (default: 16 batches).
        accelerator, devices, strategy, precision: the Lightning ``Trainer``'s options.
        overwrite: discard the shards (or the finished file) of an earlier run.
        keep_shards: keep ``<out>.shards/`` after the final file is written.

    Returns:
        The file written and the threshold used.

    Raises:
        UserFileNotFoundError, UserValueError: one line naming the file or option, before any long work.
    """
    from cream_pl.core.errors import UserFileNotFoundError
    from cream_pl.core.io import check_output_file
    from cream_pl.data.datamodule import WSOLDataModule
    from cream_pl.models.checkpoints import (
        check_checkpoint_dataset,
        load_classifier,
        read_checkpoint,
        require_method,
    )
    from cream_pl.models.devices import check_trainer_options

    data = Path(data)
    check_output_file(out, "--out")  # before any model or data is loaded
    check_trainer_options(accelerator=accelerator, devices=devices, strategy=strategy, precision=precision)
    if not (data / "metadata" / split).is_dir():
        raise UserFileNotFoundError(f"{data / 'metadata' / split}: no such split (--data, --split)")
    if threshold is None and (data / "metadata" / "val").is_dir():  # before: a traceback after a whole val pass
        from cream_pl.core.errors import UserValueError
        from cream_pl.data.metadata import split_has_boxes

        if not split_has_boxes(data / "metadata" / "val"):
            raise UserValueError(f"{data / 'metadata' / 'val'}: no boxes (a mask-only split, as OpenImages'): τ* is "
                                 "the threshold of the best IoU-50 box accuracy on val; give --threshold")
    checkpoint = read_checkpoint(ckpt)
    splits = [split] + (["val"] if threshold is None and (data / "metadata" / "val").is_dir() else [])
    check_checkpoint_dataset(checkpoint, data, splits=splits, ckpt_path=ckpt)  # classes agree
    model = load_classifier(ckpt)  # CAM/CREAM, CI-CAM or KD-CI-CAM: the class that wrote it
    require_method(model, source, "--source", ckpt)  # e.g. cream_selected without a val search
    trainer_kwargs: dict[str, Any] = {"accelerator": accelerator, "devices": devices, "strategy": strategy}
    if precision:
        trainer_kwargs["precision"] = precision
    common: dict[str, Any] = {"batch_size": batch_size, "num_workers": num_workers}
    norm = checkpoint_normalisation(checkpoint)
    if norm is not None:  # feed the classifier what it was trained on
        common["mean"], common["std"] = norm
    if not overwrite and Path(out).is_file():  # another run's file: refused before the val pass (minutes at 448);
        known = {"source": source, "multi_contour": multi_contour, "predict_split": split,  # τ* and the model after it
                 "input_size": input_size, **({"threshold": threshold} if threshold is not None else {})}
        refuse_another_runs_file(Path(out), known, absent_ok=known)
    validated_size = int(model.hparams.get("eval_size", 224))
    # PSOL boxes at 448: the maps (and val's boxes) live in the input's grid, and τ* is chosen on val
    # maps of that same input size, not taken from the classifier's 224 validation
    model.hparams.eval_size = input_size
    if threshold is None:
        val_dm = WSOLDataModule(str(data), eval_size=input_size, **common)
        threshold = choose_threshold_on_val(model, val_dm, source, trainer_kwargs,
                                            recompute=input_size != validated_size)
    datamodule = WSOLDataModule(str(data), eval_size=input_size, predict_split=split, **common)
    written = generate_pseudo_boxes(
        model, datamodule, out, source=source, threshold=threshold, trainer_kwargs=trainer_kwargs,
        chunk_size=chunk_size, multi_contour=multi_contour, overwrite=overwrite, keep_shards=keep_shards,
    )
    return written, threshold


def print_pseudo_box_summary(out: Path, source: str, threshold: float) -> None:
    """Print (on the first process only) the file written and, where the split has true boxes, their quality."""
    if int(os.environ.get("LOCAL_RANK", "0")) != 0:
        return
    print(f"pseudo boxes ({source}, threshold {threshold:g}): {out}")
    q = quality_path(out)
    if q.is_file():
        print(f"quality: {q}: {json.loads(q.read_text())}")
