"""``cream-pl pseudo-boxes``: load a classifier and a dataset, then :func:`cream_pl.pseudo_boxes.generate.generate_pseudo_boxes`.

The arguments live in :mod:`cream_pl.cli.parsers` (torch-free, so ``--help`` is instant); this module
loads the model and data only when the command runs.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from cream_pl.pseudo_boxes.generate import (
    checkpoint_normalisation,
    choose_threshold_on_val,
    generate_pseudo_boxes,
    quality_path,
)

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``cream-pl pseudo-boxes`` (its arguments live in :mod:`cream_pl.cli.parsers`)."""
    from cream_pl.cli.parsers import SUBCOMMANDS

    return SUBCOMMANDS["pseudo-boxes"].add(subparsers)


def _devices(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def run(args: argparse.Namespace) -> int:
    """``cream-pl pseudo-boxes``: load the classifier and data, then :func:`generate_pseudo_boxes`."""
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

    check_output_file(args.out, "--out")  # before any model or data is loaded
    check_trainer_options(accelerator=args.accelerator, devices=_devices(str(args.devices)), strategy=args.strategy,
                          precision=args.precision)
    if not (args.data / "metadata" / args.split).is_dir():
        raise UserFileNotFoundError(f"{args.data / 'metadata' / args.split}: no such split (--data, --split)")
    checkpoint = read_checkpoint(args.ckpt)
    splits = [args.split] + (["val"] if args.threshold is None and (args.data / "metadata" / "val").is_dir() else [])
    check_checkpoint_dataset(checkpoint, args.data, splits=splits, ckpt_path=args.ckpt)  # classes agree
    model = load_classifier(args.ckpt)  # CAM/CREAM, CI-CAM or KD-CI-CAM: the class that wrote it
    require_method(model, args.source, "--source", args.ckpt)  # e.g. cream_selected without a val search
    trainer_kwargs: dict[str, Any] = {"accelerator": args.accelerator, "devices": _devices(str(args.devices)),
                                      "strategy": args.strategy}
    if args.precision:
        trainer_kwargs["precision"] = args.precision
    common: dict[str, Any] = {"batch_size": args.batch_size, "num_workers": args.num_workers}
    norm = checkpoint_normalisation(checkpoint)
    if norm is not None:  # feed the classifier what it was trained on
        common["mean"], common["std"] = norm
    threshold = args.threshold
    validated_size = int(model.hparams.get("eval_size", 224))
    # PSOL boxes at 448: the maps (and val's boxes) live in the input's grid, and τ* is chosen on val
    # maps of that same input size, not taken from the classifier's 224 validation
    model.hparams.eval_size = args.input_size
    if threshold is None:
        val_dm = WSOLDataModule(str(args.data), eval_size=args.input_size, **common)
        threshold = choose_threshold_on_val(model, val_dm, args.source, trainer_kwargs,
                                            recompute=args.input_size != validated_size)
    datamodule = WSOLDataModule(str(args.data), eval_size=args.input_size, predict_split=args.split, **common)
    out = generate_pseudo_boxes(
        model, datamodule, args.out, source=args.source, threshold=threshold, trainer_kwargs=trainer_kwargs,
        chunk_size=args.chunk_size, multi_contour=args.multi_contour, overwrite=args.overwrite,
        keep_shards=args.keep_shards,
    )
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        print(f"pseudo boxes ({args.source}, threshold {threshold:g}): {out}")
        q = quality_path(out)
        if q.is_file():
            print(f"quality: {q}: {json.loads(q.read_text())}")
    return 0
