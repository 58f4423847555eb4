"""``cream-pl pseudo-boxes``: :func:`cream_pl.pseudo_boxes.from_checkpoint.pseudo_boxes_from_checkpoint` on the parsed options.

The arguments live in :mod:`cream_pl.cli.parsers` (torch-free, so ``--help`` is instant); this module
loads the model and data only when the command runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from cream_pl.pseudo_boxes.from_checkpoint import print_pseudo_box_summary, pseudo_boxes_from_checkpoint

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``cream-pl pseudo-boxes`` (its arguments live in :mod:`cream_pl.cli.parsers`)."""
    from cream_pl.cli.parsers import SUBCOMMANDS

    return SUBCOMMANDS["pseudo-boxes"].add(subparsers)


def _devices(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def run(args: argparse.Namespace) -> int:
    """``cream-pl pseudo-boxes``: :func:`~cream_pl.pseudo_boxes.from_checkpoint.pseudo_boxes_from_checkpoint`."""
    if args.chunk_size is not None and args.chunk_size % args.batch_size:  # before: a traceback once the model loaded
        from cream_pl.core.errors import UserValueError

        raise UserValueError(f"--chunk-size {args.chunk_size}: a multiple of --batch-size ({args.batch_size}), so that "
                             "a resumed run sees the same batches as an uninterrupted one")
    out, threshold = pseudo_boxes_from_checkpoint(
        args.ckpt, args.data, args.out, source=args.source, threshold=args.threshold, split=args.split,
        input_size=args.input_size, batch_size=args.batch_size, num_workers=args.num_workers,
        chunk_size=args.chunk_size, multi_contour=args.multi_contour, accelerator=args.accelerator,
        devices=_devices(str(args.devices)), strategy=args.strategy, precision=args.precision,
        overwrite=args.overwrite, keep_shards=args.keep_shards,
    )
    print_pseudo_box_summary(out, args.source, threshold)
    return 0
