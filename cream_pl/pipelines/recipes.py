"""The CUB recipe behind ``make train-cub``, ``make pseudo-boxes`` and ``make train-regressor``.

1. ``train-cub``: converts ``CUB_200_2011`` into the benchmark format when needed, trains CREAM with
   ``experiments/cub_vgg16_cream.yaml`` and tests its last epoch's checkpoint (the WSOL benchmark's
   rule, recorded as ``checkpoint_rule`` in ``<work>/test_metrics.json``); the checkpoint lands in
   ``<work>/classifier.ckpt``. A run cut short resumes from ``<work>/checkpoints/last.ckpt``; a finished one is
   kept; a ``<work>`` of other settings is refused.
2. ``pseudo-boxes``: CREAM pseudo boxes over the CUB train split at PSOL's 448 input (τ* from the
   val split's maps at the same input size).
3. ``train-regressor``: the CREAM_reg box regressor on those boxes, one design chosen on val GT-known
   (:func:`regressor_candidates`, :mod:`cream_pl.pipelines.demo_regressor`) among PSOL's (a fine-tuned
   backbone + GAP/MLP head, :func:`cream_pl.pipelines.regressor_train.psol_recipe`: the paper's row,
   always reported), box heads on the classifier's frozen features and the objectness head on a
   fine-tuned backbone; each tested with the classifier's class.

Example:
    $ python -m cream_pl.pipelines.recipes train-cub --cub-root data/CUB_200_2011 --data data/cub
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from cream_pl.core.names import BOX_HEADS
from cream_pl.core.options import OneLineArgumentParser, input_size, nonneg_int, positive_int
from cream_pl.pipelines.entry import pipeline_main, preflight

__all__ = ["main"]

CUB_HELP = """\
python -m cream_pl.pipelines.recipes: error: CUB-200-2011 was not found in {cub_root} (--cub-root).

  1. Download CUB_200_2011.tgz (https://www.vision.caltech.edu/datasets/cub_200_2011/) and unpack it
     so that {cub_root}/images.txt and {cub_root}/images/ exist (or pass CUB_ROOT=<dir> to make).
  2. Convert it to the WSOL benchmark format (make train-cub does this for you):
        cream-pl data cub --src {cub_root} --out {data} --val-per-class 5
     For the benchmark's own val split (CUBV2, 1,000 images) copy wsolevaluation's
     metadata/CUB/val into {data}/metadata/val and the CUBV2 images under {data}/images instead
     of --val-per-class.
  3. Run `make train-cub` again.
"""


def _has_metadata(data: Path) -> bool:
    return (data / "metadata" / "train" / "image_ids.txt").is_file() and (data / "metadata" / "test").is_dir()


def train_cub(cub_root: Path, data: Path, work: Path, recipe: Path, val_per_class: int,
              recipe_args: Mapping[str, object]) -> int:
    if not _has_metadata(data):
        if not (cub_root / "images.txt").is_file():
            print(CUB_HELP.format(cub_root=cub_root, data=data), file=sys.stderr)
            return 2  # the user's input is missing (the how-to says where to get it)
        from cream_pl.data import convert_cub

        summary = convert_cub(cub_root, data, val_per_class=val_per_class)
        print(f"[train-cub] converted {cub_root} -> {data}: {summary}")
    from cream_pl.pipelines.recipe_builder import build_from_recipe

    overrides: dict[str, object] = {"data.init_args.data_root": str(data), "trainer.default_root_dir": str(work)}
    overrides.update(recipe_args)  # main's recipe_overrides, read before the conversion
    cli = build_from_recipe(recipe, overrides, work)
    resume = _resume_point(cli.trainer, work, recipe, overrides, data)
    if resume == "done":
        print(f"[train-cub] {work / 'classifier.ckpt'}: trained and tested before with these settings (test metrics: "
              f"{work / 'test_metrics.json'}); remove {work} to train anew")
        return 0
    if resume is not None:
        print(f"[train-cub] resuming the fit cut short at {resume}")
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=resume)
    # the WSOL benchmark's checkpoint rule: the last epoch's, for every row (CAM and CREAM alike)
    last = next((cb.last_model_path for cb in cli.trainer.checkpoint_callbacks
                 if getattr(cb, "last_model_path", "")), "")
    results = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=last or None)
    from cream_pl.core.io import atomic_copy_file, atomic_write_text

    work.mkdir(parents=True, exist_ok=True)
    if last:
        atomic_copy_file(last, work / "classifier.ckpt")  # never half a checkpoint where the next stage looks
    else:
        cli.trainer.save_checkpoint(work / "classifier.ckpt")
    metrics = {**(results[0] if results else {}),
               "checkpoint_rule": cli.model.last_results.get("test", {}).get("checkpoint", {}).get("rule", "unknown")}
    atomic_write_text(work / "test_metrics.json", json.dumps(metrics, indent=2, sort_keys=True))
    print(f"[train-cub] classifier: {work / 'classifier.ckpt'}; test metrics: {work / 'test_metrics.json'}")
    return 0


def recipe_overrides(extra: Sequence[str]) -> dict[str, object]:
    """``--key=value`` or ``--key value`` (dotted keys as in the YAML, list items by index) -> overrides; a word that
    is no ``--key`` is refused (before: ``--key value`` set the key to null and a key named after the value).

    Example:
        >>> recipe_overrides(["--trainer.max_epochs=2", "--model.init_args.pretrained", "/w/vgg16.pth"])
        {'trainer.max_epochs': 2, 'model.init_args.pretrained': '/w/vgg16.pth'}
    """
    from cream_pl.core.errors import UserValueError

    overrides: dict[str, object] = {}
    items = list(extra)
    while items:
        item = items.pop(0)
        if not item.startswith("--") or item == "--":
            raise UserValueError(f"{item}: not a recipe override (--<dotted key>=<value>, e.g. --trainer.max_epochs=2)")
        key, eq, value = item[2:].partition("=")
        if not eq:
            if not items or items[0].startswith("--"):
                raise UserValueError(f"{item}: no value (--{key}=<value>)")
            value = items.pop(0)
        overrides[key] = yaml.safe_load(value)
    return overrides


TRAIN_INPUTS = "train_cub_inputs.json"
"""``<work>/train_cub_inputs.json``: what the fit in ``<work>`` was made of (recipe text, overrides, data)."""


def _resume_point(trainer: Any, work: Path, recipe: Path, overrides: dict[str, object], data: Path) -> Any:
    """Where ``make train-cub`` goes on: ``"done"`` (finished with these settings), the ``last.ckpt`` of a fit of these
    settings cut short, or ``None`` (a new fit). The last-epoch checkpoints go to ``<work>/checkpoints`` where the
    recipe names no folder (a W&B run folder is new at every run: a rerun never found the cut fit, and trained from
    epoch 0 without a word). A fit of other settings in ``<work>`` is refused, never continued nor replaced."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    from cream_pl.core.errors import UserValueError
    from cream_pl.core.io import atomic_write_text, file_sha1
    from cream_pl.data.metadata import data_sha1
    from cream_pl.pipelines.recipe_builder import last_checkpoint_path
    from cream_pl.pipelines.run_state import changed_keys

    last = None
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.save_last:
            if cb.dirpath is None:
                cb.dirpath = str((work / "checkpoints").resolve())
            last = last_checkpoint_path(cb)
    places = ("data.init_args.data_root", "trainer.default_root_dir")  # where things are, not what is trained
    inputs = {"recipe_sha1": file_sha1(recipe), "data_sha1": data_sha1(data),
              "overrides": {k: v for k, v in overrides.items() if k not in places}}
    path = work / TRAIN_INPUTS
    try:
        before = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        before = None
    if before is not None and before != inputs and (last is not None and last.is_file()
                                                     or (work / "classifier.ckpt").is_file()):
        raise UserValueError(f"{work}: holds a fit of other settings ({', '.join(changed_keys(before, inputs))} differ); "
                             "give another --work, or remove it to train anew")
    if before == inputs and (work / "classifier.ckpt").is_file() and (work / "test_metrics.json").is_file():
        return "done"
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(inputs, indent=2) + "\n")
    return last if before == inputs and last is not None and last.is_file() else None


def pseudo_boxes(data: Path, work: Path, source: str, input_size: int = 448) -> int:
    ckpt = work / "classifier.ckpt"
    if not ckpt.is_file():
        print(f"python -m cream_pl.pipelines.recipes: error: {ckpt} not found: run `make train-cub` first",
              file=sys.stderr)
        return 2
    from cream_pl.pseudo_boxes.from_checkpoint import print_pseudo_box_summary, pseudo_boxes_from_checkpoint

    # cream-pl pseudo-boxes --val-threshold at PSOL's 448: τ* from val maps at the same input size
    out, threshold = pseudo_boxes_from_checkpoint(ckpt, data, work / f"pseudo_boxes_{source}.json", source=source,
                                                  threshold=None, input_size=input_size)
    print_pseudo_box_summary(out, source, threshold)
    return 0


def _box_heads(value: str) -> list[str]:
    """``--heads a,b``: box head names, each one of :data:`~cream_pl.core.names.BOX_HEADS` (before: a misspelt one
    was dropped without a word, and the long run went on without it)."""
    import argparse

    heads = [h.strip() for h in value.split(",") if h.strip()]
    unknown = [h for h in heads if h not in BOX_HEADS]
    if unknown or not heads:
        raise argparse.ArgumentTypeError(f"{', '.join(unknown) or repr(value)}: not a box head (choose among "
                                         f"{', '.join(BOX_HEADS)})")
    return heads


def regressor_candidates(design: str, backbone: str, epochs: int, batch_size: int, pretrained: bool = True,
                         heads: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """The CUB recipes' CREAM_reg designs, chosen between on val.

    ``psol``: PSOL's regressor (a fine-tuned ``backbone`` + GAP/MLP head, :func:`psol_recipe`), the paper's row;
    ``frozen``: box heads on the classifier's frozen features (the demo's); ``both``: those, and the objectness head
    on a fine-tuned ``backbone`` (the demo's fine-tuned candidate at ``epochs``, nothing frozen). ``heads``: keep only
    candidates with these heads.

    Example:
        >>> sorted(regressor_candidates("both", "resnet50", 6, 32))
        ['objectness_finetune', 'objectness_frozen', 'psol_finetune', 'psol_frozen', 'spatial_mlp_frozen']
    """
    from cream_pl.pipelines.demo_regressor import CANDIDATES, FINETUNE_RECIPE
    from cream_pl.pipelines.regressor_train import psol_recipe

    tuned = {"backbone": backbone, "pretrained": pretrained, "max_epochs": epochs, "datamodule": None}
    psol = {"psol_finetune": {"head": "psol", "features": "finetune", "label": "PSOL (fine-tuned backbone, GAP + MLP)",
                              "overrides": {**psol_recipe(batch_size), **tuned}}}
    frozen = {k: c for k, c in CANDIDATES.items() if c["features"] == "classifier"}
    finetune = {k: {**c, "label": f"objectness map + moments, fine-tuned {backbone}",
                    "overrides": {**{k: v for k, v in FINETUNE_RECIPE.items() if k != "trainer_kwargs"}, **tuned,  # whole epochs
                                  "regressor_kwargs": {**FINETUNE_RECIPE["regressor_kwargs"], "freeze_backbone": None}}}
                for k, c in CANDIDATES.items() if c["features"] == "finetune"}
    chosen = {"psol": psol, "frozen": frozen, "both": {**psol, **frozen, **finetune}}[design]
    return {k: c for k, c in chosen.items() if heads is None or c["head"] in heads}


def train_regressor_stage(data: Path, work: Path, source: str, backbone: str, epochs: int, batch_size: int = 32,
                          pretrained: bool = True, trainer_kwargs: dict[str, object] | None = None,
                          design: str = "both", heads: Sequence[str] | None = None) -> int:
    """Train every design of :func:`regressor_candidates`, choose one on val GT-known, test them all.

    Writes ``<work>/regressor_<source>/candidates.json`` (every candidate's val and test scores, the chosen one) and
    prints PSOL's row (``psol``, when trained) and the chosen design's (``chosen``)."""
    boxes = work / f"pseudo_boxes_{source}.json"
    if not boxes.is_file():
        print(f"python -m cream_pl.pipelines.recipes: error: {boxes} not found: run `make pseudo-boxes` first",
              file=sys.stderr)
        return 2
    candidates = regressor_candidates(design, backbone, epochs, batch_size, pretrained, heads)
    if not candidates:
        print(f"--heads {','.join(heads or [])}: no design of --design {design} has such a box head", file=sys.stderr)
        return 2
    from cream_pl.models.checkpoints import (
        check_checkpoint_dataset,
        checkpoint_normalisation,
        load_classifier,
    )
    from cream_pl.pipelines.demo_regressor import run_regressor_stage

    check_checkpoint_dataset(work / "classifier.ckpt", data, splits=("test",))  # before any training
    trainer = {"accelerator": "auto", "devices": "auto", **(trainer_kwargs or {})}
    classifier = load_classifier(work / "classifier.ckpt")
    mean, std = checkpoint_normalisation(work / "classifier.ckpt") or ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    summary, _ = run_regressor_stage(boxes, data, work / f"regressor_{source}", work / "classifier.ckpt", mean=mean,
                                     std=std, classifier=classifier, trainer_kwargs=trainer, candidates=candidates,
                                     batch_size=batch_size, psol_candidate="psol_finetune")
    rows = {"chosen": {"candidate": summary["chosen"], **summary["cream_reg"]}}
    if "cream_reg_psol" in summary:
        rows["psol"] = summary["cream_reg_psol"]
    print(json.dumps(rows, indent=2, sort_keys=True, default=str))
    return 0


@pipeline_main("python -m cream_pl.pipelines.recipes")
def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m cream_pl.pipelines.recipes", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="stage", required=True)
    p = sub.add_parser("train-cub", help="convert CUB if needed, train and test CREAM (VGG16 recipe)",
                       epilog="Any other --<dotted key>=<value> overrides the recipe, as in cream-pl fit (e.g. "
                       "--model.init_args.pretrained=/path/to/vgg16-397923af.pth offline, --trainer.max_epochs=2).")
    p.add_argument("--cub-root", type=Path, default=Path("data/CUB_200_2011"))
    p.add_argument("--recipe", type=Path, default=Path(__file__).resolve().parents[2] / "experiments" / "cub_vgg16_cream.yaml",
                   help="the training recipe (default: the repository's experiments/cub_vgg16_cream.yaml)")
    p.add_argument("--val-per-class", type=nonneg_int, default=5, help="val images carved from train when there is no CUBV2")
    for q in (p, sub.add_parser("pseudo-boxes", help="CREAM pseudo boxes over the CUB train split"),
              sub.add_parser("train-regressor", help="CREAM_reg regressor on the pseudo boxes")):
        q.add_argument("--data", type=Path, default=Path("data/cub"))
        q.add_argument("--work", type=Path, default=Path("outputs/cub_vgg16_cream"))
        if q is not p:
            q.add_argument("--source", choices=("cream", "cam"), default="cream")
    sub.choices["pseudo-boxes"].add_argument("--input-size", type=input_size, default=448,
                                             help="classifier input of the pseudo boxes (PSOL: 448)")
    sub.choices["train-regressor"].add_argument("--backbone", default="resnet50")
    sub.choices["train-regressor"].add_argument("--epochs", type=positive_int, default=6)
    sub.choices["train-regressor"].add_argument("--batch-size", type=positive_int, default=32)
    sub.choices["train-regressor"].add_argument(
        "--design", choices=("psol", "frozen", "both"), default="both",
        help="psol: the paper's regressor (fine-tuned backbone, GAP + MLP); frozen: box heads on the classifier's "
        "frozen features; both: those and the objectness head on a fine-tuned backbone; always chosen on val")
    sub.choices["train-regressor"].add_argument("--heads", default=None, type=_box_heads,
                                                help="comma-separated box heads to keep among the designs, of "
                                                f"{', '.join(BOX_HEADS)} (default: all)")
    args, extra = parser.parse_known_args(argv)
    recipe_args = recipe_overrides(extra) if args.stage == "train-cub" else {}  # a stray word: one line now
    # before any conversion or training: the work folder, and the dataset when it is there already
    preflight(inputs=[(args.recipe, "--recipe")] if args.stage == "train-cub" else [],
              outputs=[(args.work, "--work")], data=args.data if _has_metadata(args.data) else None)
    if args.stage == "train-cub":
        return train_cub(args.cub_root, args.data, args.work, args.recipe, args.val_per_class, recipe_args)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.stage == "pseudo-boxes":
        return pseudo_boxes(args.data, args.work, args.source, args.input_size)
    return train_regressor_stage(args.data, args.work, args.source, args.backbone, args.epochs, args.batch_size,
                                 design=args.design, heads=args.heads)


if __name__ == "__main__":
    sys.exit(main())
