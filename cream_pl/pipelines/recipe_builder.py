"""Recipes (``experiments/*.yaml``) into a trainer, a model and a data module, with Lightning's CLI.

:class:`CreamCLI` is Lightning's CLI over every cream-pl module: ``cream-pl fit|validate|test|predict``
runs it (the command line imports it from here), and :func:`build_from_recipe` builds one from a recipe
without running it, for the pipelines (``make demo``, the CUB recipes, calibration) that train and
test in Python. Models and data modules are given by ``class_path`` in the YAML (``configs/`` by
component, ``experiments/`` one recipe per result row); the data module's ``num_classes`` is linked
into the model, so a recipe never repeats it.

A value a class refuses, a checkpoint that does not fit the config and bad trainer options raise a
one-line :class:`cream_pl.core.errors.UserValueError` naming the part.

Example:
    >>> cfg = {"trainer": {"max_epochs": 10}}
    >>> set_dotted(cfg, "trainer.max_epochs", 2); cfg
    {'trainer': {'max_epochs': 2}}
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from cream_pl.core.errors import user_error_message

__all__ = ["CreamCLI", "build_from_recipe", "check_recipe", "parse_error_text", "set_dotted"]

SCORING = ("validate", "test", "predict")
"""The Lightning commands that score a checkpoint: refused without one (``--ckpt_path``)."""
PRETRAINED = "pretrained"
"""``--ckpt_path pretrained``: score the model as the config builds it (its pretrained weights), on purpose."""


def _yaml_writes_enums() -> None:
    """Let YAML's safe dumper write an enum as its value. Lightning's CLI dumps the whole config before it builds
    the model, and a callback with an enum default (``Timer``'s ``interval``) stopped every such config with a
    RepresenterError traceback; the value reads back as the same enum."""
    import enum

    import yaml

    if enum.Enum not in yaml.SafeDumper.yaml_multi_representers:
        yaml.SafeDumper.add_multi_representer(enum.Enum, lambda dumper, value: dumper.represent_data(value.value))


class CreamCLI(LightningCLI):
    """LightningCLI with the data module's class count linked into the model and W&B val media on every trainer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from cream_pl.reporting.loggers import RunConfigCallback

        kwargs.setdefault("save_config_callback", RunConfigCallback)  # one config.yaml per run, under W&B too
        _yaml_writes_enums()
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        _batch_limits_int_first(parser)

    _checkpoint: dict[str, Any] | None = None

    def _ckpt_path(self) -> str | None:
        subcommand = self.config.get("subcommand") if self.config is not None else None
        if not subcommand:
            return None
        ckpt_path = self.config[subcommand].get("ckpt_path")
        if not ckpt_path or str(ckpt_path) in ("last", "best", "hpc", "registry"):
            return None
        return str(ckpt_path)

    def _parse_ckpt_path(self) -> None:
        """``--ckpt_path`` (``validate|test|predict``, a resumed ``fit``), checked before anything is built.

        It must be a readable classifier checkpoint (not a box regressor's) whose class count is
        the dataset's (:func:`cream_pl.models.checkpoints.check_checkpoint_dataset`): a missing or
        truncated file and a mismatch end in one line naming the file, before any work. Then
        Lightning applies the checkpoint's hyperparameters to the config, where the checkpoint
        records its model class (``cream-pl fit`` writes it); a checkpoint without one (written
        by a hand-built ``Trainer``) keeps the config's model and only gives the weights. ``validate``,
        ``test`` and ``predict`` without one are refused (before: the config's untrained model was scored).
        """
        from cream_pl.core.errors import UserValueError
        from cream_pl.models.checkpoints import (
            check_checkpoint_dataset,
            read_checkpoint,
            require_classifier_checkpoint,
        )

        subcommand = str(self.config.get("subcommand") or "") if self.config is not None else ""
        if subcommand in SCORING:
            given = self.config[subcommand].get("ckpt_path")
            if str(given) == PRETRAINED:  # asked for: the config's model as built (e.g. ImageNet's head on ILSVRC)
                self.config[subcommand]["ckpt_path"] = None
            elif not given:
                raise UserValueError(f"{subcommand}: no --ckpt_path, so the config's untrained model would be scored; "
                                     "give the checkpoint to score, e.g. --ckpt_path <fit's default_root_dir>/.../last.ckpt "
                                     f"(--ckpt_path {PRETRAINED}: the model as the config builds it)")
        ckpt_path = self._ckpt_path()
        if ckpt_path is None:
            return super()._parse_ckpt_path()
        self._checkpoint = checkpoint = read_checkpoint(ckpt_path)
        config = self.config[subcommand]
        data_root = _get_path(config, "data.init_args.data_root")
        if _is_classifier_class(str(_get_path(config, "model.class_path") or "")):
            if data_root:  # a classifier's checkpoint, with the dataset's class count and labels
                splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(subcommand, ())
                check_checkpoint_dataset(checkpoint, data_root, splits=splits, ckpt_path=ckpt_path)
            else:
                require_classifier_checkpoint(checkpoint, ckpt_path)
        if "_class_path" not in (checkpoint.get("hyper_parameters") or {}):
            return None  # nothing Lightning could apply in subclass mode: the config's model, the file's weights
        if subcommand == "fit":
            self._check_resume_keeps_config(checkpoint, ckpt_path)
        try:
            super()._parse_ckpt_path()
        except Exception as err:  # noqa: BLE001 - the user's file does not fit the config: one line
            first = " ".join(str(err).split())[:300] or type(err).__name__
            raise UserValueError(f"{ckpt_path}: its hyperparameters do not fit the config ({first})") from None
        saved, data_size = checkpoint["hyper_parameters"].get("eval_size"), _get_path(config, "data.init_args.eval_size")
        classifier = _is_classifier_class(str(checkpoint["hyper_parameters"]["_class_path"]))
        if classifier and isinstance(saved, int) and isinstance(data_size, int) and saved != data_size:  # else: setup's
            # line, which blamed the config's model.init_args.eval_size
            raise UserValueError(f"{ckpt_path}: the checkpoint's model.init_args.eval_size is {saved} (Lightning "
                                 f"replaces the config's model arguments by the checkpoint's), but "
                                 f"data.init_args.eval_size is {data_size}; give --data.init_args.eval_size {saved}")
        return None

    def _run_subcommand(self, subcommand: str) -> None:
        """``validate|test|predict --ckpt_path last`` where no last checkpoint is found is one line (before: Lightning
        warned and scored the untrained model), and so is ``--ckpt_path best`` without a best checkpoint."""
        if subcommand not in SCORING:
            return super()._run_subcommand(subcommand)
        from cream_pl.core.errors import UserValueError

        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=r'.*ckpt_path="last"\) is set, but there is no last checkpoint')
            try:
                return super()._run_subcommand(subcommand)
            except UserWarning:
                raise UserValueError(f"{subcommand}: --ckpt_path last: no last checkpoint where the config's "
                                     "ModelCheckpoint writes them, so the untrained model would be scored; give the "
                                     "checkpoint's path") from None
            except ValueError as err:
                if 'ckpt_path="best")` is set' not in str(err):
                    raise
                raise UserValueError(f"{subcommand}: --ckpt_path best: {' '.join(str(err).split())}") from None

    def _check_resume_keeps_config(self, checkpoint: Mapping[str, Any], ckpt_path: str) -> None:
        """A resumed fit continues the checkpoint's run: Lightning replaces the config's model arguments by the
        checkpoint's. Where the config asks for others, refuse in one line (before: a resnet50 checkpoint resumed
        under an efficientnet_lite0 config trained resnet50, silently)."""
        import json

        from cream_pl.core.errors import UserValueError

        hparams = dict(checkpoint.get("hyper_parameters") or {})
        model = self.config["fit"].get("model")
        init = getattr(model, "init_args", None)
        if init is None:
            return
        mine = init.as_dict() if hasattr(init, "as_dict") else dict(init)

        def same(a: Any, b: Any) -> bool:
            return json.loads(json.dumps(a, default=str)) == json.loads(json.dumps(b, default=str))

        # num_classes: set from the data module; the others: bookkeeping, or places that may have moved since
        ignored = {"num_classes", "record_per_image", "num_media_images"}
        diff = [(f"model.init_args.{k}", hparams[k], mine[k]) for k in mine if k in hparams and k not in ignored
                and not k.endswith("_ckpt") and not same(mine[k], hparams[k])]
        theirs = str(hparams["_class_path"])
        if str(getattr(model, "class_path", "")).rsplit(".", 1)[-1] != theirs.rsplit(".", 1)[-1]:
            diff.insert(0, ("model.class_path", theirs, model.class_path))
        if diff:
            key, saved, asked = diff[0]
            more = f" (and {len(diff) - 1} more: {', '.join(k for k, _, _ in diff[1:4])})" if len(diff) > 1 else ""
            raise UserValueError(f"{ckpt_path}: a resumed fit continues this checkpoint's run, whose {key} is "
                                 f"{saved!r}, but the config says {asked!r}{more}; give the checkpoint's "
                                 "values, or start a new fit without --ckpt_path")

    def _check_ckpt_fits_model(self) -> None:
        """The checkpoint's weights must be the model's (another method's checkpoint: one line, not a dump)."""
        from cream_pl.core.errors import UserValueError

        ckpt_path, checkpoint = self._ckpt_path(), self._checkpoint
        if ckpt_path is None or checkpoint is None or not hasattr(self.model, "classifier"):
            return
        model_keys = set(self.model.state_dict())
        ckpt_keys = set(checkpoint["state_dict"])
        missing, unexpected = sorted(model_keys - ckpt_keys), sorted(ckpt_keys - model_keys)
        if missing or unexpected:
            example = (missing or unexpected)[0]
            raise UserValueError(f"{ckpt_path}: does not fit the config's {type(self.model).__name__} ({len(missing)} "
                                 f"weight(s) missing, {len(unexpected)} unexpected, e.g. {example!r}); was it written "
                                 "with another model or recipe?")
        saved_shapes = {k: tuple(t.shape) for k, t in checkpoint["state_dict"].items() if hasattr(t, "shape")}
        shapes = [(k, saved_shapes[k], tuple(v.shape)) for k, v in self.model.state_dict().items()
                  if k in saved_shapes and saved_shapes[k] != tuple(v.shape)]
        if not shapes:
            return
        saved = (checkpoint.get("hyper_parameters") or {}).get("num_classes")
        mine = getattr(getattr(self.model, "hparams", None), "num_classes", None)
        if isinstance(saved, int) and isinstance(mine, int) and saved != mine:  # before: a state-dict traceback
            raise UserValueError(f"{ckpt_path}: a model of {saved} classes, but the data module counts {mine} (the "
                                 "lines of <data_root>/class_names.txt, else one more than the largest label of its "
                                 "train/val/test splits); is it this dataset's checkpoint?")
        key, theirs, asked = shapes[0]
        raise UserValueError(f"{ckpt_path}: its {key} has shape {list(theirs)} but the config's "
                             f"{type(self.model).__name__} makes {list(asked)}; was it written with another recipe?")

    def _preflight(self, stage: str) -> None:
        """The model's own checks of the trainer and data (a KD student's teachers included), and its callbacks', before
        the trainer starts its logger and saves its config: a refusal in ``setup`` left an empty W&B run and a
        config.yaml."""
        preflight = getattr(self.model, "preflight", None)
        if callable(preflight):
            preflight(stage, self.trainer, self.datamodule)
        for callback in self.trainer.callbacks:  # a callback's needs (PseudoBoxesAtFitEnd's maps and val τ*) too
            check = getattr(callback, "preflight", None)
            if callable(check):
                check(stage, self.trainer, self.model, self.datamodule)

    def before_fit(self) -> None:
        self._preflight("fit")

    def before_validate(self) -> None:
        self._preflight("validate")

    def before_test(self) -> None:
        self._preflight("test")

    def before_predict(self) -> None:
        """``cream-pl predict`` keeps what a prediction writer among the trainer's callbacks writes, and nothing else:
        without one it is refused before any work (before: every map computed, then thrown away, exit 0)."""
        from pytorch_lightning.callbacks import BasePredictionWriter

        from cream_pl.core.errors import UserValueError
        from cream_pl.pseudo_boxes.generate import PseudoBoxWriter

        if any(isinstance(cb, PseudoBoxWriter) for cb in self.trainer.callbacks):  # it needs its own chunked loader
            raise UserValueError("predict: PseudoBoxWriter writes pseudo boxes through cream-pl pseudo-boxes (it "
                                 "predicts the chunks not yet written, then merges them), not through predict; run "
                                 "cream-pl pseudo-boxes --ckpt <checkpoint> --data <root> --out <boxes.json>")
        if not any(isinstance(cb, BasePredictionWriter) for cb in self.trainer.callbacks):
            raise UserValueError("predict: no prediction writer among trainer.callbacks, so every map would be computed "
                                 "and thrown away; add a BasePredictionWriter callback of your own, or use cream-pl localize "
                                 "(image files) or cream-pl export-scoremaps (a dataset split)")

    def instantiate_classes(self) -> None:
        """Build model, data and trainer; a value their ``__init__`` refuses is one line naming the part."""
        from cream_pl.core.errors import UserValueError

        try:
            super().instantiate_classes()
        except ValueError as err:
            owner = _init_owner(err)
            known = user_error_message(err)
            if known is not None:
                if owner is None or known.startswith(owner):  # the model's or data's own errors say what they are about
                    raise
                # a callback's or logger's (Lightning's EarlyStopping mode, PseudoBoxesAtFitEnd's source): which one
                raise UserValueError(f"{owner}: {known}") from None
            root = _init_error(err)
            if root is None:
                raise
            part = owner or ("model.init_args" if "LightningModule" in str(err) else (
                "data.init_args" if "LightningDataModule" in str(err) else "config"))
            text = " ".join(str(root).split())[:300] or type(root).__name__
            raise UserValueError(f"{part}: {text}") from None

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> pl.Trainer:
        """Every trainer also gets :class:`~cream_pl.reporting.wandb_media.WSOLMediaCallback` (val overlays to W&B)."""
        from lightning_fabric.utilities.exceptions import MisconfigurationException

        from cream_pl.core.errors import UserValueError
        from cream_pl.reporting.wandb_media import WSOLMediaCallback

        self._check_ckpt_fits_model()  # the model is built; the trainer (and its output) not yet
        try:
            trainer = super()._instantiate_trainer(config, [*callbacks, WSOLMediaCallback()])
        except (MisconfigurationException, ValueError, TypeError) as err:  # the config's trainer options
            text = " ".join(str(err).split())[:300] or type(err).__name__
            raise UserValueError(f"trainer options: {text}") from None
        except RuntimeError as err:  # two callbacks of one state key (two alike ModelCheckpoints): Lightning's check
            if "more than one stateful callback" not in str(err):
                raise
            text = " ".join(str(err).split()).split(" In the current configuration")[0]
            raise UserValueError(f"trainer.callbacks: {text} (two of them would save the same state: give them "
                                 "different monitor or every_n_epochs values, or keep one)") from None
        _check_output_folders(trainer)
        if self.subcommand == "fit":
            self._check_config_kept(trainer)
            if not self.config["fit"].get("ckpt_path"):  # a resume (a path, last, hpc, ...) goes on
                _check_no_earlier_checkpoints(trainer)
            else:
                _continue_last_checkpoint(trainer)
            _check_monitors(trainer, self.model)
        return trainer

    def _check_config_kept(self, trainer: pl.Trainer) -> None:
        """A fit saves its resolved config as ``<log_dir>/config.yaml``: where that is one of its own ``--config``
        files (a config kept in its run folder), refuse before any work (before: the user's file, comments and all,
        was replaced by the resolved dump)."""
        from pytorch_lightning.loggers import WandbLogger

        from cream_pl.core.errors import UserValueError

        given = (self.config.get(self.subcommand) or {}).get("config") or []
        if isinstance(trainer.logger, WandbLogger):
            return  # saved in the W&B run's own new folder, or not at all (RunConfigCallback)
        saved = (Path(trainer.log_dir or trainer.default_root_dir) / "config.yaml").resolve()
        for path in given:
            if Path(str(getattr(path, "absolute", path))).resolve() == saved and saved.is_file():
                with saved.open("rb") as f:
                    if f.read(21) == b"# pytorch_lightning==":  # an earlier fit's dump (rerun from it): rewritten
                        continue
                raise UserValueError(f"{saved}: --config is where this fit saves its resolved config (the trainer's "
                                     "log folder); keep your config elsewhere, or set another trainer.default_root_dir "
                                     "(or the logger's save_dir)")

    def _set_seed(self) -> None:
        """``seed_everything`` outside numpy's seeds is one line naming the key (before: numpy's traceback)."""
        from cream_pl.core.errors import UserValueError

        seed = self._get(self.config, "seed_everything")
        if isinstance(seed, int) and not isinstance(seed, bool) and not 0 <= seed <= 2**32 - 1:
            raise UserValueError(f"seed_everything: {seed} is outside [0, 4294967295] (the seeds numpy takes)")
        super()._set_seed()


BATCH_LIMITS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches")


def _batch_limits_int_first(parser: LightningArgumentParser) -> None:
    """``trainer.limit_*_batches: 1`` is one batch, as ``Trainer(limit_val_batches=1)`` is.

    Lightning annotates them ``Optional[Union[int, float]]``, but ``typing`` caches unions by equality and hands
    back an earlier ``Union[float, int, None]``; jsonargparse tries the union's types in order, so an int 1 became
    the float 1.0, which Lightning reads as 100 % of the batches (before: ``limit_val_batches: 1`` validated on
    every batch). Each action's type is rebuilt with ``int`` first (a flat union, another cache key); 1.0 stays 1.0.
    ``tests/test_hostile_inputs.py`` pins the behaviour, so a change in either library shows there.
    """
    import typing

    # flat, so not the cached Union[float, int] that Optional[Union[int, float]] holds
    int_first = typing.Union[int, float, None]  # noqa: UP007
    for action in parser._actions:
        if action.dest.rpartition(".")[2] in BATCH_LIMITS and action.dest.startswith("trainer.") \
                and hasattr(action, "_typehint"):
            action._typehint = int_first


def _check_output_folders(trainer: pl.Trainer) -> None:
    """The trainer's folder and its loggers' folders can be folders: a file there (or above) is one line naming the key,
    before any work (before: ``NotADirectoryError`` / ``FileExistsError`` tracebacks at the fit's start)."""
    from cream_pl.core.io import check_output_dir

    check_output_dir(trainer.default_root_dir, "trainer.default_root_dir")
    for logger in trainer.loggers:
        save_dir = getattr(logger, "save_dir", None)
        if isinstance(save_dir, (str, os.PathLike)):
            check_output_dir(save_dir, f"trainer.logger ({type(logger).__name__}) save_dir")


def _check_monitors(trainer: pl.Trainer, model: Any) -> None:
    """A callback that monitors ``val/<method>/<metric>`` of a method the model does not have is one line, before any
    work. Before: ``configs/trainer/default.yaml``'s ``val/cream/...`` with ``configs/model/cam.yaml`` trained the
    first epoch, then stopped without a checkpoint ("could not find the monitored key")."""
    from pytorch_lightning.callbacks import LearningRateMonitor

    from cream_pl.core.errors import UserValueError

    if not trainer.loggers and any(isinstance(cb, LearningRateMonitor) for cb in trainer.callbacks):
        raise UserValueError("trainer.callbacks[LearningRateMonitor]: needs a logger, but trainer.logger is false "
                             "(configs/trainer/default.yaml has one: drop it, or keep a logger)")  # else at the start
    names = list(getattr(model, "method_names", None) or [])
    if not names:
        return  # a model that does not log per-method metrics (the box regressor): Lightning's own check
    for cb in trainer.callbacks:
        monitor = getattr(cb, "monitor", None)
        parts = monitor.split("/") if isinstance(monitor, str) else []
        if len(parts) == 3 and parts[0] in ("val", "train") and parts[1] not in (*names, "cream_search"):
            raise UserValueError(f"trainer.callbacks[{type(cb).__name__}].monitor: {monitor!r} is never logged: this "
                                 f"model's methods are {names} (e.g. {parts[0]}/{names[-1]}/{parts[2]}); a model "
                                 "without CREAM logs no val/cream/... (monitor another key, or set model.init_args.cream)")


def last_checkpoint_path(cb: Any) -> Path:
    """Where a ``ModelCheckpoint`` with a ``dirpath`` writes its ``last.ckpt`` (as its ``format_checkpoint_name`` names
    it)."""
    return Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}"


def _continue_last_checkpoint(trainer: pl.Trainer) -> None:
    """A resumed fit goes on writing its ``ModelCheckpoint``'s ``last.ckpt``, also in a run folder that was moved or
    copied. Before: Lightning, finding another folder in the checkpoint than the callback's, forgot the last
    checkpoint's path and wrote ``last-v1.ckpt`` beside the stale ``last.ckpt`` (a later resume from ``last.ckpt``
    then went back in time). In place, Lightning restores the same path from the checkpoint."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    for cb in trainer.callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.dirpath is not None and cb.save_last:
            last = last_checkpoint_path(cb)
            if last.is_file():
                cb.last_model_path = str(last)  # the string Lightning compares with the file it is about to write


def _check_no_earlier_checkpoints(trainer: pl.Trainer) -> None:
    """A new fit (no ``--ckpt_path``) whose ``ModelCheckpoint`` folder holds an earlier fit's checkpoints is one line,
    before any work. Before: Lightning wrote the new model as ``last-v1.ckpt`` beside the earlier ``last.ckpt``,
    which ``test --ckpt_path .../last.ckpt`` then scored, while the fit-end pseudo boxes were the new model's."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    from cream_pl.core.errors import UserValueError

    if os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") not in ("", "0"):
        return  # torchrun --max-restarts starting the same command again: its restart, not a new fit
    if list(Path(trainer.default_root_dir).glob("hpc_ckpt_*.ckpt")):
        return  # a SLURM requeue: Lightning resumes it from its hpc checkpoint
    for cb in trainer.callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.dirpath is not None and Path(cb.dirpath).is_dir():
            files = sorted(Path(cb.dirpath).glob("*.ckpt"), key=lambda f: f.stat().st_mtime)
            earlier = sorted(f.name for f in files)
            if earlier:
                last = Path(cb.dirpath) / ("last.ckpt" if "last.ckpt" in earlier else files[-1].name)  # the newest
                raise UserValueError(f"{cb.dirpath}: holds an earlier fit's checkpoints ({', '.join(earlier[:3])}"
                                     f"{', ...' if len(earlier) > 3 else ''}), beside which this fit would write its "
                                     f"own; resume that fit with --ckpt_path {last}, or move the folder away, or "
                                     "give this fit another folder (trainer.default_root_dir, or the "
                                     "ModelCheckpoint's dirpath)")


def _init_owner(err: BaseException) -> str | None:
    """The trainer part whose ``__init__`` raised behind ``err`` (``trainer.callbacks[EarlyStopping]``,
    ``trainer.logger (CSVLogger)``), found in the tracebacks; ``None`` for anything else."""
    from pytorch_lightning.loggers import Logger

    from cream_pl.core.errors import exception_chain

    for e in exception_chain(err):
        tb = e.__traceback__
        while tb is not None:
            me = tb.tb_frame.f_locals.get("self") if tb.tb_frame.f_code.co_name == "__init__" else None
            if isinstance(me, pl.Callback):
                return f"trainer.callbacks[{type(me).__name__}]"
            if isinstance(me, pl.LightningDataModule):  # its data_root, batch_size, ...: the data config's
                return "data.init_args"
            if isinstance(me, Logger):
                return f"trainer.logger ({type(me).__name__})"
            tb = tb.tb_next
    return None


def _init_error(err: BaseException) -> BaseException | None:
    """The ``ValueError`` / ``KeyError`` a class's ``__init__`` raised on a config value, or the ``ImportError`` of a
    package it needs (Lightning's ``RichProgressBar`` without ``rich``), behind jsonargparse's "Does not validate
    against any of the Union subtypes" wrapper; else ``None``."""
    if "Does not validate against any of the Union subtypes" not in str(err):
        return None
    root: BaseException | None = err.__cause__
    while root is not None and root.__cause__ is not None:
        root = root.__cause__
    return root if isinstance(root, (ValueError, KeyError, ImportError)) and root is not err else None


def _get_path(config: Any, dotted: str) -> Any:
    """``config.a.b.c`` of a jsonargparse namespace (or nested dicts), ``None`` where a key is missing."""
    node = config
    for key in dotted.split("."):
        try:
            node = node[key] if isinstance(node, dict) else getattr(node, key)
        except (KeyError, AttributeError, TypeError):
            return None
        if node is None:
            return None
    return node


def _is_classifier_class(class_path: str) -> bool:
    """Whether the config's ``model.class_path`` (dotted, or a short name) is a cream-pl classifier."""
    import importlib

    from cream_pl.models.classifier import WSOLClassifier

    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name) if module else getattr(
            importlib.import_module("cream_pl.models"), name)
    except (ImportError, AttributeError, ValueError):
        return False
    return isinstance(cls, type) and issubclass(cls, WSOLClassifier)


_NOISE = ("Parser key", "Does not validate", "Subtypes:", "Errors:", "Given value", "Expected a <class 'NoneType'>",
          "Problem with given class_path", "tip:")


def parse_error_text(err: BaseException) -> str:
    r"""jsonargparse's nested report of a config it refuses, as one short line: the key, then the reason.

    Example:
        >>> text = ('Parser key "model":\n  Does not validate against any of the Union subtypes\n  Errors:\n'
        ...         "    - Problem with given class_path 'cream_pl.models.WSOLClassifier':\n"
        ...         '        Parser key "lr":\n          Expected a float. Got value: abc\n'
        ...         "    - Expected a <class 'NoneType'>\n  Given value type: <class 'dict'>")
        >>> parse_error_text(ValueError(text))
        'model.init_args.lr: Expected a float. Got value: abc'
    """
    import re

    text = str(err)
    branch = "- Problem with given class_path"  # a union's branches may repeat one nested error: read the first
    if text.count(branch) > 1:
        first = text.index(branch)
        text = text[: text.index(branch, first + len(branch))]
    keys = re.findall(r'Parser key "([^"]+)"', text)
    if not keys:
        return " ".join(text.split()) or type(err).__name__
    nested = "Problem with given class_path" in text
    lines = [line.strip().lstrip("-").strip() for line in text.splitlines()]
    reason = next((line for line in lines if line and not line.startswith(_NOISE)), "not accepted")  # the first
    unimportable = nested and len(keys) == 1 and ("No module named" in reason or "has no attribute" in reason)
    key = keys[0] + (".class_path" if unimportable else ".init_args" if nested else "") + "".join("." + k for k in keys[1:])
    given = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Given value:")), None)
    if given is not None and "Got value" not in reason and not nested:
        reason += f" (given {given})"
    return f"{key}: {reason}"


def set_dotted(config: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``config[a][b][c] = value`` for ``dotted = "a.b.c"``; integer keys index into lists.

    Example:
        >>> cfg = {"trainer": {"callbacks": [{"init_args": {"dirpath": "a"}}]}}
        >>> set_dotted(cfg, "trainer.callbacks.0.init_args.dirpath", "b"); cfg["trainer"]["callbacks"][0]
        {'init_args': {'dirpath': 'b'}}
    """
    node: Any = config
    keys = dotted.split(".")
    if "" in keys:  # "model..lr": jsonargparse's "Empty nested key" with the whole model section after it
        raise KeyError(f"override {dotted!r}: an empty step between dots (keys are as in cream-pl fit: "
                       "model.init_args.lr)")
    for i, key in enumerate(keys[:-1]):
        try:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        except (IndexError, ValueError):
            raise KeyError(f"override {dotted!r}: {'.'.join(keys[: i + 1])!r} is not in the recipe") from None
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def build_from_recipe(
    recipe: Path | str, overrides: Mapping[str, Any] | None = None, workdir: Path | str | None = None
) -> CreamCLI:
    """Instantiate (without running) the trainer, model and data module of a recipe YAML.

    Args:
        recipe: ``experiments/*.yaml`` (or any ``cream-pl fit`` config).
        overrides: dotted keys to values, list items by index (e.g.
            ``{"trainer.callbacks.0.init_args.dirpath": "runs/x/checkpoints"}``); a value replaces
            the whole node (``{"trainer.callbacks": []}`` drops every callback).
        workdir: where the resolved config is written (``<workdir>/config.yaml``); default the
            recipe's ``trainer.default_root_dir``.

    Returns:
        The CLI object: ``cli.trainer``, ``cli.model``, ``cli.datamodule``.
    """
    import yaml

    from cream_pl.core.io import atomic_write_text

    config = _with_overrides(recipe, overrides)
    check_recipe(recipe, overrides)  # a bad override is one line before the folder's config.yaml is replaced
    workdir = Path(workdir or Path(config.get("trainer", {}).get("default_root_dir", "outputs")))
    workdir.mkdir(parents=True, exist_ok=True)
    resolved = workdir / "config.yaml"
    atomic_write_text(resolved, yaml.safe_dump(config, sort_keys=False))
    return _cli(CreamCLI, recipe, resolved, overrides)


def check_recipe(recipe: Path | str, overrides: Mapping[str, Any] | None = None, origin: str | None = None,
                 build: bool = False, selects: bool = False) -> None:
    """Parse a recipe with ``overrides`` as :func:`build_from_recipe` would, building nothing: a key the classes do
    not take or a value of the wrong type is one :class:`~cream_pl.core.errors.UserValueError` line, before any work,
    that begins with ``origin`` (default: the recipe). With ``build``, the model (random init, ``pretrained=False``),
    the trainer's callbacks and the data module (on an empty metadata folder) are built too, so a value their
    ``__init__`` refuses is one line now as well (the runner checks every run so before the first one trains); else
    that shows when the recipe is built. With
    ``selects`` (the run's results need ``cream_selected``), a ``cream_search`` fit that never validates is refused.

    Example:
        >>> check_recipe("experiments/embedded_cream.yaml", {"model.init_args.lr": "fast"}, origin="mine.yaml: runs[0]")
        Traceback (most recent call last):
        cream_pl.core.errors.UserValueError: mine.yaml: runs[0]: model.init_args.lr: Expected a <class 'float'>. Got value: fast
    """
    import tempfile

    import yaml

    config = _with_overrides(recipe, overrides, origin)
    with tempfile.TemporaryDirectory() as tmp:
        resolved = Path(tmp) / "config.yaml"
        resolved.write_text(yaml.safe_dump(config, sort_keys=False))
        cli = _cli(_ParseOnlyCLI, recipe, resolved, overrides, origin)
    if build:
        _build_model_and_callbacks(cli.config, str(origin or recipe))
    trainer = config.get("trainer") if isinstance(config.get("trainer"), dict) else {}
    monitors = [cb for cb in trainer.get("callbacks") or [] if isinstance(cb, dict)
                and str(cb.get("class_path", "")).endswith("LearningRateMonitor")]
    if monitors and "logger" in trainer and trainer["logger"] in (False, []):  # Lightning refuses it at the fit start
        from cream_pl.core.errors import UserValueError

        raise UserValueError(f"{origin or recipe}: trainer.callbacks: a LearningRateMonitor needs a logger, but "
                             "trainer.logger is false (drop the callback, or keep a logger)")
    model, data = (config.get(part) if isinstance(config.get(part), dict) else {} for part in ("model", "data"))
    if _is_classifier_class(str(model.get("class_path", ""))):  # as WSOLClassifier.setup checks it, before any work
        from cream_pl.models.classifier import check_eval_sizes, check_search_validates

        check_eval_sizes(*((part.get("init_args") or {}).get("eval_size", 224) for part in (model, data)),
                         where=str(origin or recipe))
        check_search_validates(selects and bool((model.get("init_args") or {}).get("cream_search")), trainer,
                               where=str(origin or recipe))


def _build_model_and_callbacks(config: Any, where: str) -> None:
    """Build the parsed config's model (1000 classes where the data sets the count, no pretrained weights read), its
    trainer callbacks and its data module (on an empty metadata folder: nothing read), then drop them; global random
    states are left as they were."""
    import importlib
    import inspect
    import random
    import tempfile

    import numpy as np
    import torch

    from cream_pl.core.errors import UserValueError

    def plain(node: Any) -> dict[str, Any]:
        return dict(node.as_dict() if hasattr(node, "as_dict") else node or {})

    parts: list[tuple[str, str, dict[str, Any]]] = []
    model = _get_path(config, "model")
    if model is not None and _get_path(model, "class_path"):
        parts.append(("model.init_args", str(model.class_path), plain(_get_path(model, "init_args"))))
    for cb in _get_path(config, "trainer.callbacks") or []:
        if _get_path(cb, "class_path"):
            parts.append((f"trainer.callbacks[{str(cb.class_path).rsplit('.', 1)[-1]}].init_args", str(cb.class_path),
                          plain(_get_path(cb, "init_args"))))
    data = _get_path(config, "data")
    if data is not None and _get_path(data, "class_path"):  # its values (a batch size of 0, a crop larger than the
        parts.append(("data.init_args", str(data.class_path), plain(_get_path(data, "init_args"))))  # resize), too
    state = (random.getstate(), np.random.get_state())
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings(), tempfile.TemporaryDirectory() as no_data:
        warnings.simplefilter("ignore")
        try:
            for what, class_path, kwargs in parts:
                module, _, name = class_path.rpartition(".")
                cls = getattr(importlib.import_module(module), name)
                takes = inspect.signature(cls).parameters
                if "pretrained" in takes or "pretrained" in kwargs:  # CI-CAM's pass it on through **kwargs
                    kwargs["pretrained"] = False
                if ("num_classes" in takes or "num_classes" in kwargs) and kwargs.get("num_classes") is None:
                    kwargs["num_classes"] = 1000  # the data sets it; the most any benchmark has (ccam_n <= it)
                if what == "data.init_args" and "metadata_root" in takes:  # the dataset may not be there yet: its
                    kwargs["metadata_root"] = no_data  # folders are checked when the data stage has made it
                try:
                    cls(**kwargs)
                except (ValueError, TypeError, KeyError, FileNotFoundError) as err:
                    message = user_error_message(err) or " ".join(str(err).split())[:300] or type(err).__name__
                    raise UserValueError(f"{where}: {what}: {message}") from None
        finally:
            random.setstate(state[0])
            np.random.set_state(state[1])


class _ParseOnlyCLI(CreamCLI):
    """Parses the config and stops: no seed set, nothing instantiated."""

    def _set_seed(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass

    def after_instantiate_classes(self) -> None:
        pass


def _with_overrides(recipe: Path | str, overrides: Mapping[str, Any] | None, origin: str | None = None) -> dict[str, Any]:
    from cream_pl.core.errors import UserValueError
    from cream_pl.core.io import read_yaml_file

    config = read_yaml_file(recipe, "recipe")
    if not isinstance(config, dict):
        raise UserValueError(f"{recipe}: a recipe is a mapping (trainer, model, data), got {type(config).__name__}")
    if "runs" in config:  # before: "data.init_args: Option 'data_root' is not accepted"
        raise UserValueError(f"{recipe}: an experiment declaration, not a recipe ({origin or 'recipe'}; a recipe "
                             "names the trainer, model and data of one fit, as experiments/embedded_cream.yaml)")
    for key, value in (overrides or {}).items():
        try:
            set_dotted(config, key, value)
        except KeyError as err:
            raise UserValueError(f"{origin or recipe}: {err.args[0]}") from None
        except (TypeError, ValueError, AttributeError, IndexError):
            raise UserValueError(f"{origin or recipe}: override {key!r}: the recipe has no such place") from None
    return config


def _cli(cls: type[CreamCLI], recipe: Path | str, resolved: Path, overrides: Mapping[str, Any] | None,
         origin: str | None = None) -> CreamCLI:
    """``cls`` on the resolved config file; a config jsonargparse refuses is one line naming the recipe."""
    from jsonargparse import ArgumentError

    import cream_pl.data.datamodule  # noqa: F401  (register the data modules, so short class names resolve)
    import cream_pl.models  # noqa: F401
    from cream_pl.core.errors import UserValueError

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
            return cls(
                pl.LightningModule, pl.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                args=["--config", str(resolved)], run=False, save_config_callback=None,
                parser_kwargs={"exit_on_error": False},
            )
    except ArgumentError as err:
        origin = origin or f"{recipe}{' with its overrides' if overrides else ''}"
        raise UserValueError(f"{origin}: {user_error_message(err) or parse_error_text(err)}") from None
