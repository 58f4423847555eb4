"""The argument parsers of the ``cream-pl`` sub-commands: their one table, :data:`SUBCOMMANDS` (standard library only).

``cream-pl --help`` and ``cream-pl <command> --help`` are answered from these definitions, so they
import neither torch nor Lightning. Each parser's ``func`` imports the module that does the work
only when the command runs; those modules' own ``add_parser`` (for ``python -m ...``) delegate here.
The commands the pipelines run are defined with them (``localize`` and ``train-regressor`` in
:mod:`cream_pl.pipelines.command_parsers`, ``export-scoremaps`` in its module) and registered here,
so the pipelines never import the command line.

Example:
    >>> p = argparse.ArgumentParser(prog="cream-pl"); sub = p.add_subparsers(dest="command")
    >>> _ = SUBCOMMANDS["evaluate"].add(sub)
    >>> p.parse_args(["evaluate", "--metadata", "m", "--scoremaps", "s", "--out", "o.json"]).interval
    0.01
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cream_pl.core.lazy_exports import lazy_command
from cream_pl.core.names import MAP_METHODS
from cream_pl.core.options import (
    input_size,
    nonneg_int,
    percent_int,
    positive_int,
    probability,
    seed_int,
    split_name,
    threshold_step,
    unit_interval,
)
from cream_pl.pipelines.command_parsers import add_localize_parser, add_train_regressor_parser

__all__ = ["Subcommand", "SUBCOMMANDS", "add_evaluate_arguments"]


# ---------------------------------------------------------------------------------------------- evaluate


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``cream-pl evaluate`` (also used by :func:`cream_pl.cli.evaluate.add_parser`)."""
    parser.add_argument("--metadata", required=True, help="split folder (image_ids.txt, localization.txt, ...)")
    parser.add_argument("--scoremaps", required=True, help="folder with one <image_id>.npy per image")
    parser.add_argument("--interval", type=threshold_step, default=0.01,
                        help="CAM threshold step (default 0.01, as the benchmark's tool)")
    parser.add_argument("--no-multi-contour", dest="multi_contour", action="store_false",
                        help="box of the largest contour only for max_box_acc_v2/max_box_acc_iou "
                        "(default: every contour)")
    parser.add_argument("--iou-thresholds", type=percent_int, nargs="+", default=[30, 50, 70], help="IoU levels in percent")
    parser.add_argument("--mask-root", default=None,
                        help="folder the mask PNG paths are relative to (enables PxAP)")
    parser.add_argument("--normalize", choices=("auto", "always"), default="auto",
                        help="auto: 224x224 maps in [0,1] are scored as saved, others resized + min-max; "
                        "always: min-max every map")
    parser.add_argument("--no-v1", dest="v1", action="store_false",
                        help="skip max_box_acc (V1, largest contour) when scoring all contours")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="maps per work item of a worker")
    parser.add_argument("--num-workers", type=nonneg_int, default=None, help="worker threads (default: all CPUs)")
    parser.add_argument("--out", required=True, help="JSON file to write")


def _add_evaluate(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("evaluate", help="score saved score maps (<image_id>.npy) with MaxBoxAcc, MaxBoxAccV2 "
                       "and PxAP", description="``cream-pl evaluate``: score saved score maps the way "
                       "wsolevaluation's own tool does.")
    add_evaluate_arguments(p)
    p.set_defaults(func=lazy_command("cream_pl.cli.evaluate"))
    return p


def _add_export(sub: Any) -> argparse.ArgumentParser:
    from cream_pl.pipelines.export_scoremaps import add_parser

    return add_parser(sub)


# ---------------------------------------------------------------------------------------------- the others


def _add_data(sub: Any) -> argparse.ArgumentParser:
    """``cream-pl data {synth,cub,check}`` (run by :mod:`cream_pl.cli.data_commands`)."""
    parser = sub.add_parser("data", help="write the synthetic benchmark, convert CUB, check a dataset",
                            description="Datasets in the WSOL benchmark format.")
    dsub = parser.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    synth = dsub.add_parser("synth", help="write the embedded synthetic WSOL benchmark",
                            description="Write the deterministic synthetic WSOL dataset (see cream_pl.data.synth).")
    synth.add_argument("--out", required=True, help="output dataset root")
    synth.add_argument("--seed", type=seed_int, default=0, help="base seed (same seed -> byte-identical files)")
    synth.add_argument("--preset", choices=("cub", "hard"), default="cub",
                       help="cub (default, the embedded benchmark): built from CUB's properties (one centred object, "
                       "CUB-like box areas, bodies whose colour and texture follow the class, val 200 / test 1000); "
                       "hard: the earlier adversarial design (distractors that copy object parts, clutter, second "
                       "objects); see cream_pl.data.synth.PRESETS")
    synth.add_argument("--num-classes", type=positive_int, default=None, help="default: the preset's (8)")
    synth.add_argument("--num-train", type=positive_int, default=None, help="default: the preset's (hard 480, cub 2400)")
    synth.add_argument("--num-val", type=positive_int, default=None, help="default: the preset's (hard 80, cub 200)")
    synth.add_argument("--num-test", type=positive_int, default=None, help="default: the preset's (hard 160, cub 1000)")
    synth.add_argument("--min-side", type=input_size, default=None, help="smallest image width/height (preset: 224)")
    synth.add_argument("--max-side", type=input_size, default=None, help="largest image width/height (preset: 320)")
    synth.add_argument("--confounded", action="store_true",
                       help="class-correlated backgrounds in train (each class has a usual photo)")
    synth.add_argument("--usual-background-prob", type=probability, default=None,
                       help="probability of the usual background in train with --confounded (default 0.8)")
    synth.add_argument("--confounded-eval", choices=("uniform", "unusual"), default=None,
                       help="val/test backgrounds with --confounded: uniform (default), or never the class's usual one")
    synth.add_argument("--image-format", choices=("jpg", "png"), default="jpg")
    synth.add_argument("--overwrite", action="store_true", help="replace a dataset already at --out")
    synth.add_argument("--max-problems", type=nonneg_int, default=20, help=argparse.SUPPRESS)
    synth.set_defaults(func=lazy_command("cream_pl.cli.data_commands", "run_synth"))

    cub = dsub.add_parser("cub", help="convert CUB_200_2011 into the benchmark format",
                          description="Convert the original CUB-200-2011 layout (see cream_pl.data.cub).")
    cub.add_argument("--src", required=True, help="the CUB_200_2011 directory")
    cub.add_argument("--out", required=True, help="output dataset root")
    cub.add_argument("--val-per-class", type=nonneg_int, default=0,
                     help="move N random train images per class into a val split (default 0: no val)")
    cub.add_argument("--seed", type=seed_int, default=0, help="seed of the val draw")
    cub.add_argument("--no-link", action="store_true",
                     help="do not create <out>/images -> <src>/images (an <out>/images already there must hold the "
                     "CUB images)")
    cub.add_argument("--overwrite", action="store_true",
                     help="replace another dataset already at --out (a val of CUB's classes, e.g. the benchmark's "
                     "CUBV2, is kept)")
    cub.add_argument("--max-problems", type=nonneg_int, default=20, help=argparse.SUPPRESS)
    cub.set_defaults(func=lazy_command("cream_pl.cli.data_commands", "run_cub"))

    check = dsub.add_parser("check", help="check a dataset against the benchmark format",
                            description="Check metadata (and with --files every image and mask); exit 1 on problems.")
    check.add_argument("root", help="dataset root (with metadata/<split>/)")
    check.add_argument("--split", type=split_name, action="append", help="split to check (repeatable; default all)")
    check.add_argument("--files", action="store_true", help="also decode every image and mask")
    check.add_argument("--lenient", action="store_true",
                       help="accept what the reference reader tolerates (trailing newline, './' prefix, ...); "
                       "\\r\\n line endings and a UTF-8 byte order mark are always accepted, as by fit")
    check.add_argument("--num-classes", type=positive_int, default=None, help="label range (default: class_names.txt)")
    check.add_argument("--image-root", type=Path, default=None,
                       help="folder the image ids are relative to (default: <root>/images)")
    check.add_argument("--mask-root", type=Path, default=None,
                       help="folder the mask paths are relative to (default: <root>/masks; wsolevaluation's "
                       "OpenImages keeps images and masks in one OpenImages/ folder)")
    check.add_argument("--max-problems", type=nonneg_int, default=20, help="problems printed per split")
    check.set_defaults(func=lazy_command("cream_pl.cli.data_commands", "run_check"))
    return parser


def _cpus() -> int:
    """The CPUs this process may run on (more loader workers than that only queue; Lightning warns of them)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _add_pseudo_boxes(sub: Any) -> argparse.ArgumentParser:
    """``cream-pl pseudo-boxes`` (run by :mod:`cream_pl.cli.pseudo_boxes_command`)."""
    p = sub.add_parser(
        "pseudo-boxes",
        help="CREAM_reg: write pseudo boxes for the training split (COCO JSON)",
        description="Run a trained classifier over the training split (ground-truth class, no augmentation) and "
        "write one box per image (COCO JSON, original pixels). Resumable: rerun the same command after an "
        "interruption and finished chunks are kept.",
    )
    p.add_argument("--ckpt", required=True, type=Path, help="classifier checkpoint (CAM/CREAM, CI-CAM or KD-CI-CAM)")
    p.add_argument("--data", required=True, type=Path, help="dataset root (images/, metadata/)")
    p.add_argument("--out", required=True, type=Path, help="COCO JSON file to write")
    p.add_argument("--source", choices=MAP_METHODS, default="cream",
                   help="score maps to box (default: cream; cream_selected: CREAM at the hyperparameters the "
                   "classifier's cream_search chose on val)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--threshold", type=unit_interval, default=None, help="fixed CAM threshold τ in [0, 1)")
    g.add_argument("--val-threshold", action="store_true",
                   help="use τ*, the best IoU-50 box-accuracy threshold on the val split (default)")
    p.add_argument("--split", type=split_name, default="train", help="split to box (default: train)")
    p.add_argument("--input-size", type=input_size, default=224,
                   help="input resolution of the classifier (PSOL: 448); τ* is then chosen on val at this size too")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--num-workers", type=nonneg_int, default=min(4, _cpus()),
                   help="data-loading processes (default: 4, or this machine's CPUs where fewer; the boxes do not "
                   "depend on it)")
    p.add_argument("--chunk-size", type=positive_int, default=None, help="images per resumable shard (default: 16 batches)")
    p.add_argument("--multi-contour", action="store_true", help="union box of all contours (default: largest)")
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--devices", default="auto", help="e.g. 1, 4 or auto")
    p.add_argument("--strategy", default="auto", help="e.g. ddp with several devices")
    p.add_argument("--precision", default=None, help="Lightning precision, e.g. 16-mixed")
    p.add_argument("--overwrite", action="store_true", help="discard shards (or the finished file) of an earlier run")
    p.add_argument("--keep-shards", action="store_true", help="keep <out>.shards/ after the final file is written")
    p.set_defaults(func=lazy_command("cream_pl.cli.pseudo_boxes_command"))
    return p


# ---------------------------------------------------------------------------------------------- table


@dataclass(frozen=True)
class Subcommand:
    """A ``cream-pl`` sub-command: its light parser and the module that implements it."""

    add: Callable[[Any], argparse.ArgumentParser]
    module: str


SUBCOMMANDS: dict[str, Subcommand] = {
    "data": Subcommand(_add_data, "cream_pl.cli.data_commands"),
    "evaluate": Subcommand(_add_evaluate, "cream_pl.cli.evaluate"),
    "export-scoremaps": Subcommand(_add_export, "cream_pl.pipelines.export_scoremaps"),
    "localize": Subcommand(add_localize_parser, "cream_pl.pipelines.localize"),
    "pseudo-boxes": Subcommand(_add_pseudo_boxes, "cream_pl.cli.pseudo_boxes_command"),
    "train-regressor": Subcommand(add_train_regressor_parser, "cream_pl.pipelines.regressor_train"),
}
"""Every sub-command besides Lightning's ``fit|validate|test|predict``, in ``--help`` order."""
