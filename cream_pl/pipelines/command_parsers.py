"""The argument parsers of the pipelines' ``cream-pl`` commands, ``localize`` and ``train-regressor`` (standard library only).

Their one definition: ``cream-pl``'s table of sub-commands registers them (so ``cream-pl localize
--help`` imports neither torch nor Lightning), and the pipeline modules register them for
their own entry points (``add_parser``, ``python -m cream_pl.pipelines.regressor_train``). Each
parser's ``func`` imports the pipeline module only when the command runs.

Example:
    >>> p = argparse.ArgumentParser(prog="cream-pl"); sub = p.add_subparsers(dest="command")
    >>> _ = add_localize_parser(sub)
    >>> args = p.parse_args(["localize", "a.jpg", "--ckpt", "c.ckpt", "--out", "o"])
    >>> args.method, args.func.target
    ('cream', 'cream_pl.pipelines.localize.run')
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cream_pl.core.lazy_exports import lazy_command
from cream_pl.core.names import BOX_HEADS, DEFAULT_LOCALIZE_THRESHOLD, MAP_METHODS
from cream_pl.core.options import (
    device_name,
    input_size,
    nonneg_int,
    positive_float,
    positive_int,
    seed_int,
    unit_interval,
)

__all__ = ["add_localize_parser", "add_train_regressor_parser"]


def add_localize_parser(sub: Any) -> argparse.ArgumentParser:
    """``cream-pl localize`` (run by :mod:`cream_pl.pipelines.localize`)."""
    p = sub.add_parser(
        "localize",
        help="class, CREAM/CAM map and box for image files (COCO JSON + overlays)",
        description="Run a trained classifier on image files or folders (searched recursively) and write, per "
        "image, the top-1 class, the map of that class and a box in original pixels (the largest contour at "
        "the threshold, or a box regressor's box) to <out>/predictions.json and <out>/overlays/. Original pixels are "
        "the pixels as stored: an EXIF orientation is not applied (nor in training). Unreadable "
        "files are listed under 'failed' and the exit status is 1. A rerun into the same --out replaces the previous "
        "run's results (stale overlays are removed).",
    )
    p.add_argument("inputs", nargs="*", type=Path, metavar="IMAGE_OR_FOLDER", help="image files or folders")
    p.add_argument("--ckpt", required=True, type=Path, help="classifier checkpoint (CAM/CREAM, CI-CAM or KD-CI-CAM)")
    p.add_argument("--regressor", type=Path, default=None, help="BoxRegressor checkpoint (CREAM_reg boxes)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--method", choices=MAP_METHODS, default="cream",
                   help="score maps (default: cream; cream_selected: CREAM at the val-selected hyperparameters)")
    p.add_argument("--threshold", type=unit_interval, default=None,
                   help=f"map threshold τ in [0, 1) (default: the checkpoint's val τ*, else "
                   f"{DEFAULT_LOCALIZE_THRESHOLD})")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--device", type=device_name, default=None, help="torch device, e.g. cpu or cuda:0 (default: auto)")
    p.set_defaults(func=lazy_command("cream_pl.pipelines.localize"))
    return p


def add_train_regressor_parser(sub: Any) -> argparse.ArgumentParser:
    """``cream-pl train-regressor`` (run by :mod:`cream_pl.pipelines.regressor_train`)."""
    p = sub.add_parser("train-regressor", help="CREAM_reg: train the box regressor on pseudo boxes",
                       description="Train a box regressor on a pseudo-box COCO file and report Top-1 / Top-5 / "
                       "GT-known Loc on the test split (class from --classifier-ckpt). Resumable: rerun the same command "
                       "after an interruption and the fit goes on from its last finished epoch.")
    p.add_argument("--pseudo-boxes", required=True, type=Path, help="COCO pseudo-box file (cream-pl pseudo-boxes)")
    p.add_argument("--data", required=True, type=Path, help="dataset root")
    p.add_argument("--out", required=True, type=Path, help="output folder (checkpoints, regressor_metrics.json)")
    p.add_argument("--classifier-ckpt", type=Path, default=None, help="classifier checkpoint (CAM/CREAM, CI-CAM or KD-CI-CAM) for Top-1/Top-5 Loc")
    p.add_argument("--head", default="psol", choices=BOX_HEADS,
                   help="box head: psol (GAP + MLP, the paper's), spatial_mlp (position kept), objectness (a map's "
                   "weighted moments); see cream_pl.models.box_heads")
    p.add_argument("--features", default="finetune", choices=("finetune", "classifier"),
                   help="finetune: a separate backbone fine-tuned with the head (PSOL); classifier: the classifier's "
                   "own backbone, frozen (needs --classifier-ckpt; class and box from one pass)")
    p.add_argument("--feature-cache", default="auto", choices=("auto", "on", "off"),
                   help="--features classifier: cache the frozen features in memory (bounded by --cache-max-gb) or "
                   "run the frozen backbone online every step (auto: cache when the bound allows)")
    p.add_argument("--cache-max-gb", type=positive_float, default=4.0, help="memory bound of the feature cache per process")
    p.add_argument("--loss", default="mse", choices=("mse", "l1_iou"), help="mse (PSOL) or L1 + (1 - IoU)")
    p.add_argument("--backbone", default="efficientnet_lite0", help="--features finetune: the regressor's backbone")
    p.add_argument("--no-pretrained", action="store_true", help="random-init backbone")
    p.add_argument("--max-epochs", type=positive_int, default=6)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    p.add_argument("--loss-weight", type=positive_float, default=50.0)
    p.add_argument("--input-size", type=input_size, default=224)
    p.add_argument("--num-workers", type=nonneg_int, default=4)
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--devices", default="auto")
    p.add_argument("--overwrite", action="store_true",
                   help="train anew where --out holds a trained regressor, or a fit of other settings cut short "
                   "(refused without it; the same command again resumes a cut fit)")
    p.add_argument("--psol", action="store_true",
                   help="PSOL's recipe: lr 1e-3 x batch / 256, head lr x2, random resized box crop (0.2, 1); "
                        "overrides --lr, --optimizer, --loss-weight")
    p.set_defaults(func=lazy_command("cream_pl.pipelines.regressor_train"))
    return p
