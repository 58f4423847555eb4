"""A small timm-style registry of backbones: register by name, create by name.

Example:
    >>> from cream_pl.models.backbones import create_backbone, list_backbones
    >>> list_backbones()
    ['efficientnet_lite0', 'inception_v3', 'resnet50', 'vgg16']
    >>> create_backbone("resnet50", large_feature_map=True).feature_stride
    8
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from cream_pl.models.backbones.base import Backbone, load_state_dict_file

__all__ = ["create_backbone", "list_backbones", "register_backbone"]

_BACKBONES: dict[str, Callable[..., Backbone]] = {}

_F = TypeVar("_F", bound=Callable[..., Backbone])


def register_backbone(name: str) -> Callable[[_F], _F]:
    """Class (or factory function) decorator that registers a backbone under ``name``.

    When the decorated object is a :class:`Backbone` subclass its ``name`` attribute is set.

    Raises:
        ValueError: if ``name`` is empty or already registered.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"Backbone name must be a non-empty string, got {name!r}")

    def decorator(factory: _F) -> _F:
        if name in _BACKBONES:
            raise ValueError(f"Backbone '{name}' is already registered (by {_BACKBONES[name]!r}).")
        if isinstance(factory, type) and issubclass(factory, Backbone):
            factory.name = name
        _BACKBONES[name] = factory
        return factory

    return decorator


def list_backbones() -> list[str]:
    """Names of all registered backbones, sorted."""
    return sorted(_BACKBONES)


def create_backbone(name: str, pretrained: bool | str | os.PathLike[str] = False, **kwargs: Any) -> Backbone:
    """Build a registered backbone, optionally with pretrained weights.

    Args:
        name: registry name (see :func:`list_backbones`).
        pretrained: ``False``: random init as in the WSOL benchmark. ``True``: official ImageNet
            weights (torchvision download, or the offline package for ``efficientnet_lite0``).
            A path: a local state-dict file in torchvision / package key format (or this
            backbone's own format), remapped as the benchmark does.
        **kwargs: passed to the backbone constructor (e.g. ``large_feature_map=True``).

    Raises:
        ValueError: unknown name or bad ``pretrained`` value.
        RuntimeError: official weights cannot be downloaded, or the weights do not fit.
        FileNotFoundError: the weights file does not exist.
    """
    if name not in _BACKBONES:
        raise ValueError(f"Unknown backbone '{name}'. Available backbones: {', '.join(list_backbones())}.")
    if not isinstance(pretrained, (bool, str, os.PathLike)):
        raise ValueError(
            f"pretrained must be True, False or a path to a weights file, got {type(pretrained).__name__}."
        )
    model = _BACKBONES[name](**kwargs)
    if not isinstance(model, Backbone):
        raise TypeError(
            f"The factory registered as '{name}' returned {type(model).__name__}, not a Backbone."
        )
    if pretrained is True:
        model.load_pretrained_state_dict(model.official_state_dict(), source=f"the official '{name}' weights")
    elif isinstance(pretrained, (str, os.PathLike)):
        model.load_pretrained_state_dict(load_state_dict_file(pretrained), source=os.fspath(pretrained))
    return model
