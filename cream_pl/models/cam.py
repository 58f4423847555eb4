"""Class activation maps (CAM, Zhou et al. 2016) as pure tensor functions.

``M_c(i, j) = sum_k w^c_k F_k(i, j)`` — the classifier weights of class ``c`` applied to every
location of the feature map that feeds global average pooling (bias ignored).

Example:
    >>> import torch
    >>> feats = torch.rand(2, 8, 7, 7)
    >>> weight = torch.rand(5, 8)
    >>> class_activation_maps(feats, weight, torch.tensor([0, 3])).shape
    torch.Size([2, 7, 7])
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["class_activation_maps", "all_class_activation_maps", "normalize_maps"]


def _check_features(features: Tensor, weight: Tensor) -> None:
    if features.ndim != 4:
        raise ValueError(f"features must be (B, K, h, w), got shape {tuple(features.shape)}")
    if weight.ndim != 2 or weight.shape[1] != features.shape[1]:
        raise ValueError(
            f"classifier weight must be (C, K={features.shape[1]}), got shape {tuple(weight.shape)}"
        )


def class_activation_maps(features: Tensor, weight: Tensor, class_ids: Tensor) -> Tensor:
    """CAM of one class per image.

    Args:
        features: ``(B, K, h, w)`` feature map.
        weight: ``(C, K)`` linear classifier weights.
        class_ids: ``(B,)`` class index per image.

    Returns:
        ``(B, h, w)`` raw (unnormalised) maps.
    """
    _check_features(features, weight)
    if class_ids.shape != (features.shape[0],):
        raise ValueError(f"class_ids must be ({features.shape[0]},), got {tuple(class_ids.shape)}")
    return torch.einsum("bk,bkhw->bhw", weight[class_ids].to(features.dtype), features)


def all_class_activation_maps(features: Tensor, weight: Tensor) -> Tensor:
    """CAMs of every class: ``(B, C, h, w)``."""
    _check_features(features, weight)
    return torch.einsum("ck,bkhw->bchw", weight.to(features.dtype), features)


def normalize_maps(maps: Tensor) -> Tensor:
    """Per-map min-max normalisation to [0, 1]; a constant or NaN-containing map becomes all zeros.

    Args:
        maps: ``(B, h, w)`` maps.

    Example:
        >>> normalize_maps(torch.tensor([[[1.0, 3.0]], [[2.0, 2.0]]]))
        tensor([[[0., 1.]],
        <BLANKLINE>
                [[0., 0.]]])
    """
    if maps.ndim != 3:
        raise ValueError(f"maps must be (B, h, w), got shape {tuple(maps.shape)}")
    flat = maps.flatten(1)
    bad = torch.isnan(flat).any(dim=1)
    flat = torch.nan_to_num(flat, nan=0.0)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    span = hi - lo
    constant = (span <= 0).squeeze(1) | bad
    out = (flat - lo) / torch.where(span > 0, span, torch.ones_like(span))
    out[constant] = 0.0
    return out.view_as(maps)
