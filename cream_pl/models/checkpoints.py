"""Load a classifier checkpoint as the class that wrote it (CAM/CREAM, CI-CAM or KD-CI-CAM).

Every tool that takes a classifier checkpoint (``pseudo-boxes``, ``localize``, ``train-regressor
--classifier-ckpt``, score-map export) goes through :func:`load_classifier`, so a CI-CAM or
KD-CI-CAM checkpoint works wherever a plain ``WSOLClassifier`` one does. The writing class is
stored in the checkpoint (``checkpoint[CLASS_KEY]``, :mod:`cream_pl.models.checkpoint_keys`; see
:meth:`WSOLClassifier.on_save_checkpoint`); checkpoints written before that are recognised by
their state-dict keys.

Example:
    >>> classifier_class_name({"state_dict": {"ci_head.weight": 0}})
    'cream_pl.models.ci_cam_module.CICAMClassifier'
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cream_pl.core.errors import UserFileNotFoundError, UserValueError
from cream_pl.models.checkpoint_keys import CLASS_KEY  # re-exported here, its home before checkpoint_keys

__all__ = ["CLASS_KEY", "checkpoint_normalisation", "model_fingerprint", "classifier_class_name", "load_classifier", "read_checkpoint", "checkpoint_kind",
           "checkpoint_num_classes", "dataset_num_classes", "require_classifier_checkpoint", "check_checkpoint_dataset",
           "require_method", "load_regressor", "UnreadableCheckpointError"]

_WSOL = "cream_pl.models.classifier.WSOLClassifier"
_CI_CAM = "cream_pl.models.ci_cam_module.CICAMClassifier"
_KD = "cream_pl.models.kd_student.KDCICAMStudent"
_KNOWN = (_WSOL, _CI_CAM, _KD)


class UnreadableCheckpointError(UserValueError):
    """A file that does not read back as a Lightning checkpoint at all (truncated, overwritten, another format)."""


def read_checkpoint(path: Path | str) -> dict[str, Any]:
    """The raw checkpoint dict (CPU), with a one-line error for a missing or unreadable file
    (:class:`UnreadableCheckpointError` where it is not a Lightning checkpoint at all)."""
    import torch

    path = Path(path)
    if path.is_dir():
        raise UserValueError(f"{path}: a folder, not a checkpoint file")
    if not path.is_file():
        raise UserFileNotFoundError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # pickle / zip errors of a truncated or foreign file
        first = " ".join(str(err).split()).split(". ")[0][:200]  # torch's first sentence (then its advice)
        raise UnreadableCheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or not a checkpoint: "
                                        f"{type(err).__name__}: {first})") from None
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt:
        raise UnreadableCheckpointError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
    weights, hparams = ckpt["state_dict"], ckpt.get("hyper_parameters")
    if not isinstance(weights, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                   for k, v in weights.items()):
        raise UserValueError(f"{path}: not a Lightning checkpoint (its 'state_dict' is not a mapping of tensors)")
    if hparams is not None and not isinstance(hparams, Mapping):
        raise UserValueError(f"{path}: not a Lightning checkpoint (its 'hyper_parameters' is a "
                             f"{type(hparams).__name__}, not a mapping)")
    bad = next((k for k, v in weights.items() if k.endswith((".weight", ".bias")) and v.is_floating_point()
                and not bool(torch.isfinite(v).all())), None)  # learned parameters (a buffer may hold a NaN "unset")
    if bad is not None:  # a diverged training: its maps and scores would be NaN, its boxes the whole image
        raise UserValueError(f"{path}: weight {bad!r} holds NaN or infinite values (did the training diverge?)")
    return dict(ckpt)


def checkpoint_kind(ckpt: Mapping[str, Any]) -> str:
    """``"classifier"`` (has ``classifier.weight``), ``"regressor"`` (a ``BoxRegressor``'s) or ``"other"``."""
    keys = ckpt.get("state_dict", {}).keys()
    if "classifier.weight" in keys:
        return "classifier"
    if any(k.startswith("head.") for k in keys) and "loss_weight" in (ckpt.get("hyper_parameters") or {}):
        return "regressor"
    return "other"


def require_classifier_checkpoint(ckpt: Mapping[str, Any], path: Path | str) -> None:
    """Refuse a box regressor's (or any non-classifier) checkpoint in one line naming the file."""
    kind = checkpoint_kind(ckpt)
    if kind == "regressor":
        raise UserValueError(f"{path}: a box regressor's checkpoint (cream-pl train-regressor), not a classifier's "
                             "(cream-pl fit)")
    if kind != "classifier":
        raise UserValueError(f"{path}: not a cream-pl classifier checkpoint (no 'classifier.weight' in its state_dict)")


def checkpoint_num_classes(ckpt: Mapping[str, Any]) -> int | None:
    """The class count of a classifier checkpoint (its linear head), or ``None`` when it has none."""
    weight = ckpt.get("state_dict", {}).get("classifier.weight")
    if weight is not None and getattr(weight, "ndim", 0) == 2:
        return int(weight.shape[0])
    n = (ckpt.get("hyper_parameters") or {}).get("num_classes")
    return int(n) if isinstance(n, int) else None


def dataset_num_classes(
    data_root: Path | str, splits: Sequence[str] = ()
) -> tuple[int | None, int | None, Path | None]:
    """``(declared, needed, labels_file)`` of a dataset: the lines of ``class_names.txt`` (``None``
    without one), 1 + the largest label of ``splits`` (``None`` when none is given or present) and
    the ``class_labels.txt`` that holds that label."""
    from cream_pl.data.metadata import read_class_names, read_split

    root = Path(data_root)
    names = root / "class_names.txt"
    declared = len(read_class_names(names)) if names.is_file() else None
    needed: int | None = None
    source: Path | None = None
    for split in splits:
        split_dir = root / "metadata" / split
        if (split_dir / "class_labels.txt").is_file():
            labels = [s.label for s in read_split(split_dir).samples]
            top = max(labels) + 1 if labels else None
            if top is not None and (needed is None or top > needed):
                needed, source = top, split_dir / "class_labels.txt"
    return declared, needed, source


def check_checkpoint_dataset(
    ckpt: Mapping[str, Any] | Path | str,
    data_root: Path | str,
    *,
    splits: Sequence[str] = (),
    ckpt_path: Path | str | None = None,
) -> None:
    """The one check that a classifier checkpoint and a dataset agree on the classes, run before any work.

    The checkpoint's class count (its linear head) must equal the lines of the dataset's
    ``class_names.txt``, and every label of ``splits`` must be below it.

    Raises:
        UserValueError: one line naming both files and both counts.
    """
    if not isinstance(ckpt, Mapping):
        ckpt_path = ckpt_path or ckpt
        ckpt = read_checkpoint(ckpt)
    where = ckpt_path if ckpt_path is not None else "the checkpoint"
    require_classifier_checkpoint(ckpt, where)
    have = checkpoint_num_classes(ckpt)
    if have is None:
        return
    declared, needed, source = dataset_num_classes(data_root, splits)
    names = Path(data_root) / "class_names.txt"
    if declared is not None and declared != have:
        raise UserValueError(f"{where}: a {have}-class classifier, but the dataset has {declared} classes "
                             f"({names}); use a checkpoint trained on this dataset")
    if needed is not None and needed > have:
        raise UserValueError(f"{where}: a {have}-class classifier, but {source} has labels up to {needed - 1}"
                             + (f" ({names} lists {declared})" if declared is not None else "")
                             + "; use a checkpoint trained on this dataset")


def require_method(model: Any, method: str, option: str = "--method", where: Path | str | None = None,
                   hint: str | None = None) -> None:
    """The one check that a classifier has the maps ``method`` names (``cream_selected`` needs a val search).

    Raises:
        UserValueError: one line, naming the checkpoint when ``where`` is given, ending in ``hint`` (default: the
            ``option`` value to use instead).
    """
    at = f"{where}: " if where is not None else ""
    names = list(getattr(model, "method_names", []))
    if method == "cream_selected" and (method not in names or getattr(model, "selected_cream", None) is None):
        raise UserValueError(f"{at}the classifier has no val-selected CREAM hyperparameters (no validation run with "
                             f"cream_search); {hint or f'use {option} cream'}")
    if method not in names:
        raise UserValueError(f"{at}the classifier has no {method!r} maps (methods: {names}); {hint or f'use {option} cam'}")


def model_fingerprint(model: Any) -> str:
    """SHA-1 of a module's state dict (names, shapes, dtypes, values): tells runs of different weights apart."""
    import hashlib

    import torch

    h = hashlib.sha1()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def checkpoint_normalisation(
    ckpt: Path | str | Mapping[str, Any],
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The input ``(mean, std)`` a classifier was trained with, from its checkpoint's data-module hyperparameters.

    Args:
        ckpt: the checkpoint file, or its already-read dict (saves reading the file again).

    Returns ``None`` when the checkpoint does not record them (then the data contract's default,
    ImageNet mean / std, applies).
    """
    if not isinstance(ckpt, Mapping):
        ckpt = read_checkpoint(ckpt)  # a missing or truncated file: one line naming it
    hp = ckpt.get("datamodule_hyper_parameters") or {}
    if hp.get("mean") is None or hp.get("std") is None:
        return None
    return tuple(float(v) for v in hp["mean"]), tuple(float(v) for v in hp["std"])


def classifier_class_name(ckpt: Mapping[str, Any]) -> str:
    """Dotted name of the classifier class that wrote ``ckpt`` (stored, else guessed from its keys)."""
    stored = ckpt.get(CLASS_KEY)
    if isinstance(stored, str) and stored:
        return stored
    hp = ckpt.get("hyper_parameters") or {}
    if any(k in hp for k in ("kd_alpha", "kd_routing", "cls_teacher_ckpt")):
        return _KD
    if any(k.startswith("ci_head.") for k in ckpt.get("state_dict", {})):
        return _CI_CAM
    return _WSOL


def _import(dotted: str) -> type:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def load_classifier(path: Path | str, **overrides: Any) -> Any:
    """Load a classifier checkpoint on the CPU as its own class, in eval mode.

    Backbone weights come from the checkpoint (``pretrained=False``: nothing is downloaded).

    Args:
        path: ``.ckpt`` written by ``cream-pl fit`` (or any ``WSOLClassifier`` subclass).
        **overrides: hyperparameters to override at load time.

    Raises:
        FileNotFoundError, ValueError: one-line messages naming the file.
    """
    from cream_pl.models.classifier import WSOLClassifier

    path = Path(path)
    ckpt = read_checkpoint(path)
    require_classifier_checkpoint(ckpt, path)
    name = classifier_class_name(ckpt)
    try:
        cls = _import(name)
    except (ImportError, AttributeError):
        raise UserValueError(f"{path}: written by {name}, which this cream-pl cannot import") from None
    if not (isinstance(cls, type) and issubclass(cls, WSOLClassifier)):
        raise UserValueError(f"{path}: written by {name}, which is not a cream-pl classifier")
    kwargs = {"pretrained": False, **overrides}
    try:
        model = cls.load_from_checkpoint(str(path), map_location="cpu", weights_only=False, **kwargs)
    except (RuntimeError, KeyError, TypeError, ValueError) as err:  # its weights or hyperparameters do not fit
        raise UserValueError(f"{path}: cannot load as {name.rsplit('.', 1)[-1]}: {_first(err)}") from None
    model.eval()
    return model


def load_regressor(path: Path | str) -> Any:
    """Load a ``BoxRegressor`` checkpoint (``cream-pl train-regressor``) on the CPU, in eval mode.

    Raises:
        UserFileNotFoundError, UserValueError: a missing, truncated or foreign file (a classifier's
            checkpoint, say), one line naming it.
    """
    from cream_pl.models.regressor import BoxRegressor

    path = Path(path)
    ckpt = read_checkpoint(path)
    kind = checkpoint_kind(ckpt)
    if kind != "regressor":
        what = "a classifier's checkpoint (cream-pl fit)" if kind == "classifier" else "not a box regressor checkpoint"
        raise UserValueError(f"{path}: {what}, not a box regressor's (cream-pl train-regressor)")
    try:
        model = BoxRegressor.load_from_checkpoint(str(path), map_location="cpu", weights_only=False)
    except (RuntimeError, KeyError, TypeError, ValueError) as err:
        raise UserValueError(f"{path}: cannot load as BoxRegressor: {_first(err)}") from None
    model.eval()
    return model


def _first(err: BaseException) -> str:
    """An error's message on one line, short: torch's "Error(s) in loading state_dict for X:" keeps its first reason."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."
