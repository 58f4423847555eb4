"""CREAM_reg stage 2 entry point: train the box regressor on a pseudo-box file, then test it.

The pseudo-box file is checked against the training split first (:func:`read_pseudo_boxes`), so
a file that does not match the dataset is refused before any training starts. The test split's
Top-1 / Top-5 Loc combine the regressor's box with the class of a classifier (a checkpoint or a
module); GT-known Loc needs no classifier.

Example:
    $ python -m cream_pl.pipelines.regressor_train --pseudo-boxes runs/cub/pseudo_boxes.json --data data/cub \\
          --out runs/cub/regressor --classifier-ckpt runs/cub/last.ckpt
"""

from __future__ import annotations

if __name__ == "__main__":  # python -m: parse (and answer --help) before torch is imported; the command
    import sys  # runs from the imported module cream_pl.pipelines.regressor_train, as for cream-pl train-regressor

    from cream_pl.pipelines.command_parsers import add_train_regressor_parser
    from cream_pl.pipelines.entry import run_command

    sys.exit(run_command("train-regressor", add_train_regressor_parser, sys.argv[1:]))

import argparse
import json
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn

from cream_pl.data.pseudo_box_format import PseudoBoxDataModule, load_dataset_pseudo_boxes
from cream_pl.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from cream_pl.models.regressor import BoxRegressor

__all__ = ["psol_recipe", "train_regressor", "add_parser", "run", "main"]

METRICS_FILE = "regressor_metrics.json"
CURVE_FILE = "train_curve.json"
PER_IMAGE_FILE = "per_image_test.npz"
RECORD_METHOD = "regressor"
"""The method name of the regressor's per-image test records in :data:`PER_IMAGE_FILE` (``regressor/<field>``,
:func:`cream_pl.reporting.evidence.save_records`, the one record layout of every demo)."""


FIT_INPUTS = "inputs.json"
"""What a fit in ``.checkpoints.partial/`` was started from: a cut fit of the same inputs resumes from its last epoch."""


class _PseudoIoUCurve(pl.Callback):
    """Keeps each epoch's mean train IoU of the regressor to its own pseudo boxes (in the checkpoint too, so that a
    resumed fit's curve holds every epoch)."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get("train/reg/pseudo_iou")
        if value is not None:
            self.values.append(float(value))

    def state_dict(self) -> dict[str, Any]:
        return {"values": list(self.values)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.values = [float(v) for v in state_dict.get("values", [])]


class _RandomStates(pl.Callback):
    """Saves the random generators' states with each checkpoint and puts them back when a fit resumes from one, at
    its start (before its first loader draws its seeds): the resumed epochs see the order the uncut fit saw."""

    def __init__(self) -> None:
        self._loaded: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        import random

        import numpy as np
        import torch

        name, keys, pos, has_gauss, gauss = np.random.get_state()  # plain values: a checkpoint reads weights_only
        state = {"python": random.getstate(), "numpy": [name, keys.tolist(), pos, has_gauss, gauss],
                 "torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = state_dict

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import random

        import numpy as np
        import torch

        state, self._loaded = self._loaded, None
        if state is None:
            return
        random.setstate(state["python"])
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def _fit_inputs(pseudo_boxes_json: Path | str, data_root: Path | str, classifier: str | nn.Module | None,
                pretrained: bool | str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """What a regressor fit is of, without any path: the pseudo boxes' and the dataset's content, the classifier's
    weights, the pretrained weights file's content and every setting. JSON-ready; a setting JSON cannot hold is
    written by its ``repr`` (an object's differs from run to run, so such a fit never resumes)."""
    from cream_pl.core.io import file_sha1
    from cream_pl.data.metadata import data_sha1

    if isinstance(classifier, nn.Module):
        from cream_pl.models.checkpoints import model_fingerprint

        classifier_id: str | None = model_fingerprint(classifier)
    else:
        classifier_id = None if classifier is None else file_sha1(classifier)
    weights = file_sha1(pretrained) if isinstance(pretrained, str) and Path(pretrained).is_file() else pretrained
    return json.loads(json.dumps({"pseudo_boxes": file_sha1(pseudo_boxes_json), "data": data_sha1(Path(data_root)),
                                  "classifier": classifier_id, "pretrained": weights, **settings}, default=repr))


def _cut_fit(staging: Path, inputs: Mapping[str, Any]) -> Path | None:
    """The last checkpoint of a fit of these ``inputs`` that was cut short, or ``None``."""
    last = staging / "last.ckpt"
    try:
        same = json.loads((staging / FIT_INPUTS).read_text()) == inputs
    except (OSError, ValueError, RecursionError):
        return None
    return last if same and last.is_file() else None


def _discarded_fit(staging: Path, inputs: Mapping[str, Any]) -> str | None:
    """What a fit cut short of other ``inputs`` than these, about to be cleared, was: ``None`` where there is none.

    Example:
        >>> import tempfile
        >>> staging = Path(tempfile.mkdtemp())
        >>> _ = (staging / FIT_INPUTS).write_text('{"lr": 0.1, "num_workers": 0}'); _ = (staging / "last.ckpt").write_text("")
        >>> _discarded_fit(staging, {"lr": 0.1, "num_workers": 1})
        'discarding the regressor fit cut short at ... (its inputs differ: num_workers); run it as before to resume it'
    """
    from cream_pl.pipelines.run_state import changed_keys, read_state

    last = staging / "last.ckpt"
    if not last.is_file():
        return None
    differ = changed_keys(read_state(staging / FIT_INPUTS, log=None), inputs)
    return (f"discarding the regressor fit cut short at {last} (its inputs differ: {', '.join(differ) or 'unknown'}); "
            "run it as before to resume it")


def psol_recipe(batch_size: int) -> dict[str, Any]:
    """PSOL's regressor recipe (``PSOL_training.py``) for a batch size: ``train_regressor`` keyword arguments.

    SGD (momentum 0.9, wd 1e-4) at ``lr = 1e-3 * batch / 256``, the head at 2x that lr, 50 x MSE, a
    random resized crop with area scale (0.2, 1) whose window overlaps the box (box clipped to it),
    6 epochs at a constant lr.

    Example:
        >>> r = psol_recipe(32); r["lr"], r["crop"], r["regressor_kwargs"]["head_lr_multiplier"]
        (0.000125, 'psol', 2.0)
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return {"lr": 1e-3 * batch_size / 256, "optimizer": "sgd", "loss_weight": 50.0, "crop": "psol",
            "max_epochs": 6, "regressor_kwargs": {"head_lr_multiplier": 2.0, "momentum": 0.9, "weight_decay": 1e-4,
                                                  "lr_step_epochs": 0}}


def train_regressor(
    pseudo_boxes_json: Path | str,
    data_root: Path | str,
    out_dir: Path | str,
    backbone: str = "efficientnet_lite0",
    pretrained: bool | str = True,
    max_epochs: int = 6,
    batch_size: int = 32,
    classifier_ckpt: str | Path | nn.Module | None = None,
    *,
    head: str = "psol",
    head_kwargs: Mapping[str, Any] | None = None,
    features: Literal["finetune", "classifier"] = "finetune",
    feature_cache: Literal["auto", "on", "off"] = "auto",
    cache_max_gb: float = 4.0,
    datamodule: pl.LightningDataModule | None = None,
    stages: Sequence[str] = ("fit", "test"),
    lr: float = 1e-3,
    optimizer: Literal["sgd", "adamw"] = "sgd",
    loss: Literal["mse", "l1_iou"] = "mse",
    loss_weight: float = 50.0,
    input_size: int = 224,
    eval_size: int = 224,
    erosion_rate: float = 0.0,
    crop: Literal["box_safe", "psol"] = "box_safe",
    num_workers: int = 0,
    seed: int = 0,
    train_split: str = "train",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    regressor_kwargs: Mapping[str, Any] | None = None,
    trainer_kwargs: Mapping[str, Any] | None = None,
    callbacks: Sequence[pl.Callback] = (),
    plateau: tuple[float, int] | None = None,
    keep_cut_fit: bool = False,
) -> dict[str, float]:
    """Train a :class:`BoxRegressor` on pseudo boxes, then validate and / or test it.

    Args:
        pseudo_boxes_json: COCO pseudo-box file of ``train_split``.
        data_root: dataset root (``images/``, ``metadata/``, optional ``class_names.txt``).
        out_dir: checkpoints (``checkpoints/last.ckpt``) and ``regressor_metrics.json`` go here.
        backbone: registry name of the regressor's backbone (``features="finetune"``).
        pretrained: ImageNet weights for it.
        max_epochs: training epochs (PSOL: 6).
        batch_size: the global batch size of training (and evaluation).
        classifier_ckpt: ``WSOLClassifier`` checkpoint path, or a classifier module
            (``forward_features(images) -> (features, logits)``): the class of Top-1 / Top-5 Loc,
            and with ``features="classifier"`` the frozen features too. ``None`` = GT-known only
            (``features="finetune"`` alone).
        head: box head (:func:`cream_pl.models.box_heads.list_box_heads`); ``head_kwargs`` its arguments.
        features: ``"finetune"`` (a separate backbone on random box-safe crops, PSOL) or
            ``"classifier"`` (the classifier's frozen backbone; :mod:`cream_pl.pipelines.regressor_data`).
        feature_cache: ``"auto"`` / ``"on"`` / ``"off"``: cache the frozen features in memory
            (bounded by ``cache_max_gb``) or run the frozen backbone online (``features="classifier"``).
        datamodule: a :class:`~cream_pl.pipelines.regressor_data.FrozenFeatureDataModule` to reuse
            (its feature caches serve several heads); built here when ``None``.
        stages: what runs, in order: ``"fit"``, ``"validate"``, ``"test"``. Without ``"fit"`` the
            regressor is read from ``out_dir/checkpoints/last.ckpt`` (test a chosen candidate later).
        lr: learning rate; ``optimizer``, ``loss``, ``loss_weight``: see :class:`BoxRegressor`.
        input_size: side of the training crops (``features="finetune"``).
        eval_size: side of the squashed val/test images (protocol: 224).
        erosion_rate: see :func:`cream_pl.data.pseudo_box_format.build_box_train_transform`.
        crop: training crop, ``"box_safe"`` or PSOL's ``"psol"`` (see :func:`psol_recipe`).
        num_workers: data loader workers.
        seed: ``seed_everything`` seed (and the frozen path's training order and flips).
        train_split: split the pseudo boxes cover.
        mean / std: normalisation of the input images (0-1 scale). Use the values the classifier
            was trained with: its Top-1 / Top-5 classes come from the same batches. The regressor
            re-normalises internally to what its backbone expects.
        regressor_kwargs: more :class:`BoxRegressor` arguments.
        trainer_kwargs: ``pl.Trainer`` arguments (``accelerator``, ``devices``, ``logger``, ...).
        callbacks: extra callbacks.
        plateau: ``(min_delta, patience)``: stop before ``max_epochs`` once the epoch's mean train
            IoU to the pseudo boxes (``train/reg/pseudo_iou``) has not risen by ``min_delta`` for
            ``patience`` epochs; ``max_epochs`` stays the cap. ``None``: train ``max_epochs``.
        keep_cut_fit: a fit of other inputs cut short in ``out_dir`` is refused (the command line's rule:
            ``--overwrite`` discards it) rather than discarded with a line saying so (a pipeline's own folder).

    Returns:
        The metrics of the stages that ran (``val/reg/gt_known``, ``test/reg/gt_known``,
        ``test/reg/top1_loc``, ...) and ``train/reg/pseudo_iou`` (last epoch), also merged into
        ``out_dir/regressor_metrics.json``. ``out_dir`` also gets ``train_curve.json`` (that figure
        per epoch) and, after a test, ``per_image_test.npz`` (per test image: ``index``, ``iou``,
        ``gt_known``, and with a classifier ``top1``, ``top1_loc``).

    Raises:
        PseudoBoxFileError: the pseudo-box file does not match the training split (raised
            before the trainer is built).
    """
    from cream_pl.core.errors import UserValueError
    from cream_pl.data.datamodule import WSOLDataModule

    out_dir = Path(out_dir)
    unknown = sorted(set(stages) - {"fit", "validate", "test"})
    if unknown or not stages:
        raise UserValueError(f"stages must be a non-empty sequence of fit / validate / test, got {list(stages)}")
    # Refuse a bad file before anything is built or trained.
    load_dataset_pseudo_boxes(pseudo_boxes_json, data_root, train_split)
    classifier_path: str | None = None
    classifier_module: nn.Module | None = None
    if isinstance(classifier_ckpt, nn.Module):
        classifier_module = classifier_ckpt
    elif classifier_ckpt is not None:
        classifier_path = str(classifier_ckpt)
        if not Path(classifier_path).is_file():
            raise FileNotFoundError(f"classifier checkpoint not found: {classifier_path}")
    if features == "classifier" and classifier_module is None:
        if classifier_path is None:
            raise UserValueError("features='classifier' boxes the classifier's own features: give --classifier-ckpt")
        from cream_pl.models.checkpoints import load_classifier

        classifier_module = load_classifier(classifier_path)
    pl.seed_everything(seed, workers=True)
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if datamodule is not None:
        dm = datamodule
    else:
        eval_dm = WSOLDataModule(str(data_root), batch_size=batch_size, num_workers=num_workers, eval_size=eval_size,
                                 mean=mean, std=std)
        if features == "classifier":
            from cream_pl.pipelines.regressor_data import FrozenFeatureDataModule

            dm = FrozenFeatureDataModule(pseudo_boxes_json, data_root, classifier_module, eval_dm, batch_size=batch_size,
                                         cache=feature_cache, cache_max_gb=cache_max_gb, seed=seed,
                                         train_split=train_split, num_workers=num_workers)
        else:
            dm = PseudoBoxDataModule(pseudo_boxes_json, data_root, train_split=train_split, batch_size=batch_size,
                                     num_workers=num_workers, input_size=input_size, erosion_rate=erosion_rate,
                                     crop=crop, eval_datamodule=eval_dm, mean=mean, std=std)
    reg_kwargs: dict[str, Any] = {"head": head, "head_kwargs": dict(head_kwargs or {}) or None, "features": features,
                                  "loss": loss, "eval_size": eval_size, **dict(regressor_kwargs or {})}
    if features == "classifier":
        reg_kwargs["feature_channels"] = int(classifier_module.backbone.num_features)  # type: ignore[union-attr]
    ckpt_path = out_dir / "checkpoints" / "last.ckpt"
    if "fit" in stages:
        model = BoxRegressor(backbone=backbone, pretrained=pretrained, lr=lr, optimizer=optimizer,
                             loss_weight=loss_weight, classifier_ckpt=classifier_path, data_mean=mean, data_std=std,
                             **reg_kwargs)
    else:
        if not ckpt_path.is_file():
            raise UserValueError(f"{ckpt_path}: no trained regressor to {'/'.join(stages)} (run the fit stage first)")
        model = BoxRegressor.load_from_checkpoint(ckpt_path, map_location="cpu", pretrained=False)
    if classifier_module is not None:
        model.set_classifier(classifier_module)
    kw: dict[str, Any] = {"max_epochs": max_epochs, "default_root_dir": str(out_dir), "logger": False,
                          **dict(trainer_kwargs or {})}
    if features == "classifier":  # the frozen path orders (and shards) its own training batches
        kw["use_distributed_sampler"] = False
    # a fit checkpoints into a staging folder, moved into checkpoints/ once it ends: one cut short (Ctrl-C, SIGTERM)
    # leaves the earlier run's checkpoint beside its own metrics, never a new checkpoint beside the old metrics, and
    # a rerun of the same inputs resumes from the cut fit's last epoch
    staging = out_dir / ".checkpoints.partial"
    resume_from: Path | None = None
    if "fit" in stages:
        from pytorch_lightning.utilities import rank_zero_only

        inputs = _fit_inputs(pseudo_boxes_json, data_root, classifier_module if classifier_path is None else
                             classifier_path, pretrained, {
                                 "backbone": backbone, "max_epochs": max_epochs, "batch_size": batch_size,
                                 "head": head, "head_kwargs": dict(head_kwargs or {}), "features": features,
                                 "lr": lr, "optimizer": optimizer, "loss": loss, "loss_weight": loss_weight,
                                 "input_size": input_size, "eval_size": eval_size, "erosion_rate": erosion_rate,
                                 "crop": crop, "num_workers": num_workers, "seed": seed, "train_split": train_split,
                                 "mean": mean, "std": std, "regressor_kwargs": dict(regressor_kwargs or {}),
                                 "trainer_kwargs": dict(trainer_kwargs or {}), "plateau": plateau})
        resume_from = _cut_fit(staging, inputs)
        note = None if resume_from is not None else _discarded_fit(staging, inputs)
        if note and keep_cut_fit:  # on every process (a torchrun rank that went on would wait for the others)
            raise UserValueError(f"{out_dir}: {note.replace('discarding', 'holds', 1)}, or --overwrite to start anew")
    # a fit: its one "top-1" checkpoint without a monitor is the latest epoch's, named last.ckpt and rewritten after
    # every epoch (save_last would write it only at the end, or beside a second copy); not last-v1.ckpt
    checkpoint = (ModelCheckpoint(dirpath=staging, filename="last", save_top_k=1, enable_version_counter=False,
                                  save_on_train_epoch_end=True)  # with or without a validation (its epoch end)
                  if "fit" in stages else ModelCheckpoint(dirpath=out_dir / "checkpoints", save_last=True,
                                                          save_top_k=0, enable_version_counter=False))
    curve = _PseudoIoUCurve()
    extra: list[pl.Callback] = [curve, _RandomStates()]
    if plateau is not None:
        from pytorch_lightning.callbacks import EarlyStopping

        min_delta, patience = plateau
        extra.append(EarlyStopping(monitor="train/reg/pseudo_iou", mode="max", min_delta=float(min_delta),
                                   patience=int(patience), check_on_train_epoch_end=True))
    kw["callbacks"] = [checkpoint, *extra, *kw.get("callbacks", []), *callbacks]
    trainer = pl.Trainer(**kw)
    metrics: dict[str, float] = {}
    if "fit" in stages:
        import warnings

        if rank_zero_only.rank == 0:  # the launched ranks (at fit) find what rank 0 decided
            from cream_pl.core.io import atomic_write_text

            if resume_from is None:
                if note:  # before: a cut fit's epochs thrown away without a word
                    print(f"{out_dir}: {note}", file=sys.stderr)
                shutil.rmtree(staging, ignore_errors=True)  # a fit cut short before, of other inputs
                staging.mkdir(parents=True, exist_ok=True)
                atomic_write_text(staging / FIT_INPUTS, json.dumps(inputs, indent=2) + "\n")
            else:
                print(f"{out_dir}: resuming the regressor fit cut short at {resume_from}", file=sys.stderr)
        with warnings.catch_warnings():  # the staging folder is this fit's own: its inputs.json, a cut fit's epochs
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
            trainer.fit(model, datamodule=dm, ckpt_path=resume_from)
        if trainer.is_global_zero:  # this fit's checkpoint, and none of the earlier run's figures beside it
            for name in (METRICS_FILE, CURVE_FILE, PER_IMAGE_FILE):
                (out_dir / name).unlink(missing_ok=True)
            ckpt_path.parent.mkdir(parents=True, exist_ok=True)
            if (staging / "last.ckpt").is_file():
                os.replace(staging / "last.ckpt", ckpt_path)
            else:  # a fit of no step (max_epochs 0) saved none: no earlier model beside this run's figures
                ckpt_path.unlink(missing_ok=True)
            shutil.rmtree(staging, ignore_errors=True)
        trainer.strategy.barrier("regressor_checkpoint")
        if curve.values:
            metrics["train/reg/pseudo_iou"] = curve.values[-1]
    if "validate" in stages:
        metrics.update({k: float(v) for k, v in (trainer.validate(model, datamodule=dm, verbose=False) or [{}])[0].items()})
    if "test" in stages:
        metrics.update({k: float(v) for k, v in (trainer.test(model, datamodule=dm, verbose=False) or [{}])[0].items()})
    if trainer.is_global_zero:
        from cream_pl.core.io import atomic_write_bytes, atomic_write_text

        out_dir.mkdir(parents=True, exist_ok=True)
        if "fit" in stages:
            atomic_write_text(out_dir / CURVE_FILE, json.dumps({"train_pseudo_iou": curve.values,
                                                                "epochs": len(curve.values), "max_epochs": max_epochs,
                                                                "plateau": plateau}, indent=2) + "\n")
        if "test" in stages and "test" in model.per_image:
            from cream_pl.reporting.evidence import save_records

            atomic_write_bytes(out_dir / PER_IMAGE_FILE, save_records({RECORD_METHOD: model.per_image["test"]}))
        metrics_path = out_dir / METRICS_FILE
        stored = json.loads(metrics_path.read_text()) if metrics_path.is_file() and "fit" not in stages else {}
        metrics = {**stored, **metrics}
        atomic_write_text(metrics_path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return metrics


# ---------------------------------------------------------------------------------------------- CLI


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``train-regressor`` (its arguments live in :mod:`cream_pl.pipelines.command_parsers`)."""
    from cream_pl.pipelines.command_parsers import add_train_regressor_parser

    return add_train_regressor_parser(subparsers)


def run(args: argparse.Namespace) -> int:
    from cream_pl.core.errors import UserValueError
    from cream_pl.core.io import check_output_dir, check_outside_inputs
    from cream_pl.models.checkpoints import checkpoint_normalisation

    check_output_dir(args.out, "--out")  # before any model or data is loaded
    check_outside_inputs(args.out, {"--data": args.data}, "which data check would then refuse; give an --out outside "
                         "the dataset", label="--out ")  # before: checkpoints/ and the metrics written into the dataset
    trained = Path(args.out) / "checkpoints" / "last.ckpt"
    if trained.is_file():
        from cream_pl.models.checkpoints import checkpoint_kind, read_checkpoint

        kind = checkpoint_kind(read_checkpoint(trained))
        if kind != "regressor":  # a classifier's run folder (the recipes keep last.ckpt there): never replaced
            raise UserValueError(f"{trained}: a {'classifier' if kind == 'classifier' else 'foreign'} checkpoint, not "
                                 "a regressor's; --out is the regressor's own folder (--overwrite never replaces "
                                 "it): give another --out")
        if not args.overwrite:  # before: replaced by the new fit without a word
            raise UserValueError(f"{trained}: --out holds a trained regressor; give another --out, or --overwrite to "
                                 "train anew")
    from cream_pl.data.metadata import split_has_boxes

    for split in ("val", "test"):  # the regressor is chosen and scored on boxes (before: a traceback at its sanity check)
        meta = Path(args.data) / "metadata" / split
        if meta.is_dir() and not split_has_boxes(meta):
            raise UserValueError(f"{meta}: no boxes (a mask-only split, as OpenImages'); CREAM_reg is validated and "
                                 "scored on boxes")
    if args.classifier_ckpt is not None:  # a readable classifier checkpoint whose classes fit the dataset
        from cream_pl.models.checkpoints import check_checkpoint_dataset

        check_checkpoint_dataset(args.classifier_ckpt, args.data, splits=("test",))

    devices: int | str = int(args.devices) if str(args.devices).isdigit() else args.devices
    from cream_pl.models.devices import check_trainer_options

    check_trainer_options(accelerator=args.accelerator, devices=devices)  # e.g. --accelerator gpu without a GPU
    norm = checkpoint_normalisation(args.classifier_ckpt) if args.classifier_ckpt is not None else None
    mean, std = norm if norm is not None else (IMAGENET_MEAN, IMAGENET_STD)
    recipe: dict[str, Any] = {"lr": args.lr, "optimizer": args.optimizer, "loss_weight": args.loss_weight,
                              "loss": args.loss}
    if args.psol:
        recipe = {k: v for k, v in psol_recipe(args.batch_size).items() if k != "max_epochs"}
    metrics = train_regressor(
        args.pseudo_boxes, args.data, args.out, backbone=args.backbone, pretrained=not args.no_pretrained,
        max_epochs=args.max_epochs, batch_size=args.batch_size, classifier_ckpt=args.classifier_ckpt,
        input_size=args.input_size, num_workers=args.num_workers, seed=args.seed, mean=mean, std=std,
        head=args.head, features=args.features, feature_cache=args.feature_cache, cache_max_gb=args.cache_max_gb,
        trainer_kwargs={"accelerator": args.accelerator, "devices": devices}, keep_cut_fit=not args.overwrite, **recipe,
    )
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cream_pl.pipelines.regressor_train ...``: the same as ``cream-pl train-regressor ...``."""
    from cream_pl.pipelines.entry import run_command

    return run_command("train-regressor", add_parser, sys.argv[1:] if argv is None else argv)

