"""Load a classifier checkpoint as the class that wrote it (CAM/CREAM, CI-CAM or KD-CI-CAM).

Every tool that takes a classifier checkpoint (``pseudo-boxes``, ``localize``, ``train-regressor
--classifier-ckpt``, score-map export) goes through :func:`load_classifier`, so a CI-CAM or
KD-CI-CAM checkpoint works wherever a plain ``WSOLClassifier`` one does. The writing class is
stored in the checkpoint (``checkpoint["cream_pl_class"]``, see
:meth:`WSOLClassifier.on_save_checkpoint`); checkpoints written before that are recognised by
their state-dict keys.

Example:
    >>> classifier_class_name({"state_dict": {"ci_head.weight": 0}})
    'cream_pl.models.ci_cam_module.CICAMClassifier'
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["CLASS_KEY", "classifier_class_name", "load_classifier", "read_checkpoint"]

CLASS_KEY = "cream_pl_class"
_WSOL = "cream_pl.models.classifier.WSOLClassifier"
_CI_CAM = "cream_pl.models.ci_cam_module.CICAMClassifier"
_KD = "cream_pl.models.kd_student.KDCICAMStudent"
_KNOWN = (_WSOL, _CI_CAM, _KD)


def read_checkpoint(path: Path | str) -> dict[str, Any]:
    """The raw checkpoint dict (CPU), with a one-line error for a missing or unreadable file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # pickle / zip errors of a truncated or foreign file
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt:
        raise ValueError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
    return dict(ckpt)


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
    name = classifier_class_name(ckpt)
    try:
        cls = _import(name)
    except (ImportError, AttributeError):
        raise ValueError(f"{path}: written by {name}, which this cream-pl cannot import") from None
    if not (isinstance(cls, type) and issubclass(cls, WSOLClassifier)):
        raise ValueError(f"{path}: written by {name}, which is not a cream-pl classifier")
    kwargs = {"pretrained": False, **overrides}
    try:
        model = cls.load_from_checkpoint(str(path), map_location="cpu", weights_only=False, **kwargs)
    except (RuntimeError, KeyError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: cannot load as {name.rsplit('.', 1)[-1]}: {first}") from None
    model.eval()
    return model
