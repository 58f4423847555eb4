"""Box heads of the CREAM_reg regressor: a timm-style registry, one small interface.

A box head maps a backbone feature map ``(B, K, h, w)`` to one box per image, normalised
``(x, y, w, h)`` in ``[0, 1]`` (``BoxFormat.XYWH_REL``). Heads:

- ``psol``: global average pooling + ``Linear(K, hidden) -> ReLU -> Linear(hidden, 4) -> Sigmoid``,
  PSOL's (and the CREAM paper's) head. Pooling throws away *where* the object is: the box must be
  re-derived from channel statistics, which a few thousand images do not teach.
- ``spatial_mlp``: a 1x1 convolution to a few channels, the map pooled to a fixed ``grid x grid``
  (identity on a 14x14 map), flattened (position kept) and an MLP to the box.
- ``objectness``: a 1x1-convolution MLP gives an objectness map ``p = sigmoid(z)``; the box is the
  map's weighted moments: centre ``mu = sum(p * c) / sum(p)`` over the cell centres ``c`` and half
  extent ``a * sigma + b`` per axis (``a`` starts at sqrt(3): a uniform box of width ``w`` has
  ``sigma = w / sqrt(12)``; ``a`` and ``b`` are learned). The box is a differentiable read-out of
  *where* the features say the object is, so the head learns an objectness map, not box numbers.

Example:
    >>> import torch
    >>> list_box_heads()
    ['objectness', 'psol', 'spatial_mlp']
    >>> head = create_box_head("objectness", in_channels=8)
    >>> head(torch.rand(2, 8, 14, 14)).shape
    torch.Size([2, 4])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cream_pl.core.errors import UserValueError

__all__ = ["BoxHead", "ObjectnessHead", "PsolHead", "SpatialMLPHead", "create_box_head", "list_box_heads",
           "register_box_head"]

_HEADS: dict[str, type[nn.Module]] = {}
_T = TypeVar("_T", bound=type)


def register_box_head(name: str) -> Callable[[_T], _T]:
    """Class decorator: register a box head under ``name`` (its ``name`` attribute is set)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"box head name must be a non-empty string, got {name!r}")

    def decorator(cls: _T) -> _T:
        if name in _HEADS:
            raise ValueError(f"box head {name!r} is already registered (by {_HEADS[name]!r})")
        cls.name = name
        _HEADS[name] = cls
        return cls

    return decorator


def list_box_heads() -> list[str]:
    """Names of the registered box heads, sorted."""
    return sorted(_HEADS)


def create_box_head(name: str, in_channels: int, **kwargs: Any) -> nn.Module:
    """Build a registered head for a ``in_channels``-channel feature map.

    Raises:
        UserValueError: unknown name, or a bad argument (one line).
    """
    if name not in _HEADS:
        raise UserValueError(f"unknown box head {name!r}; available: {', '.join(list_box_heads())}")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise UserValueError(f"a box head needs in_channels >= 1, got {in_channels!r}")
    try:
        return _HEADS[name](in_channels, **kwargs)
    except TypeError as err:
        raise UserValueError(f"box head {name!r}: {err}") from None


class BoxHead(nn.Module):
    """The interface: ``forward(features (B, K, h, w)) -> boxes (B, 4)``, normalised ``(x, y, w, h)``."""

    name: str = ""


def _positive(**values: int) -> None:
    for key, v in values.items():
        if not isinstance(v, int) or v < 1:
            raise UserValueError(f"{key} must be an integer >= 1, got {v!r}")


@register_box_head("psol")
class PsolHead(nn.Sequential, BoxHead):
    """GAP + ``Linear(K, hidden) -> ReLU -> Linear(hidden, 4) -> Sigmoid`` (PSOL; hidden 512).

    A ``Sequential`` so that its parameters keep the names of the regressor's original head
    (``head.0.weight``, ``head.2.weight``): older CREAM_reg checkpoints still load.
    """

    def __init__(self, in_channels: int, hidden_dim: int = 512) -> None:
        _positive(hidden_dim=hidden_dim)
        super().__init__(nn.Linear(in_channels, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, 4),
                         nn.Sigmoid())

    def forward(self, feats: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(feats.mean(dim=(2, 3)))


@register_box_head("spatial_mlp")
class SpatialMLPHead(BoxHead):
    """1x1 conv to ``channels`` -> ReLU -> pool to ``grid x grid`` -> flatten -> MLP -> Sigmoid (position kept)."""

    def __init__(self, in_channels: int, channels: int = 32, grid: int = 14, hidden_dim: int = 256) -> None:
        super().__init__()
        _positive(channels=channels, grid=grid, hidden_dim=hidden_dim)
        self.grid = grid
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, channels, 1), nn.ReLU(inplace=True))
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(channels * grid * grid, hidden_dim), nn.ReLU(inplace=True),
                                 nn.Linear(hidden_dim, 4), nn.Sigmoid())

    def forward(self, feats: Tensor) -> Tensor:
        x = self.reduce(feats)
        if tuple(x.shape[-2:]) != (self.grid, self.grid):
            x = F.adaptive_avg_pool2d(x, self.grid)
        return self.mlp(x)


@register_box_head("objectness")
class ObjectnessHead(BoxHead):
    """An objectness map from a 1x1-conv MLP; the box from its weighted moments (see the module docstring)."""

    def __init__(self, in_channels: int, channels: int = 64) -> None:
        super().__init__()
        _positive(channels=channels)
        self.score = nn.Sequential(nn.Conv2d(in_channels, channels, 1), nn.ReLU(inplace=True), nn.Conv2d(channels, 1, 1))
        self.scale = nn.Parameter(torch.full((2,), math.sqrt(3.0)))  # half extent = scale * sd + offset (x, y)
        self.offset = nn.Parameter(torch.zeros(2))

    def objectness(self, feats: Tensor) -> Tensor:
        """The objectness map ``(B, h, w)`` in ``(0, 1)``."""
        return torch.sigmoid(self.score(feats)[:, 0])

    def forward(self, feats: Tensor) -> Tensor:
        p = self.objectness(feats)
        h, w = p.shape[-2:]
        p = p / p.sum(dim=(1, 2), keepdim=True).clamp_min(1e-6)
        cy = (torch.arange(h, device=p.device, dtype=p.dtype) + 0.5) / h
        cx = (torch.arange(w, device=p.device, dtype=p.dtype) + 0.5) / w
        py, px = p.sum(dim=2), p.sum(dim=1)  # marginals (B, h), (B, w)
        mu = torch.stack([(px * cx).sum(1), (py * cy).sum(1)], dim=1)
        var = torch.stack([(px * (cx - mu[:, :1]) ** 2).sum(1), (py * (cy - mu[:, 1:]) ** 2).sum(1)], dim=1)
        half = (self.scale * var.clamp_min(1e-8).sqrt() + self.offset).clamp_min(0.0)
        lo, hi = (mu - half).clamp(0.0, 1.0), (mu + half).clamp(0.0, 1.0)
        return torch.cat([lo, hi - lo], dim=1)
