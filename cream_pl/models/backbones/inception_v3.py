"""InceptionV3 as modified by the WSOL benchmark (clovaai/wsolevaluation ``InceptionCam``).

torchvision's InceptionV3 up to ``Mixed_6e`` with the benchmark's changes: ``Conv2d_1a``
padding 1, ceil-mode max pools, ``Mixed_6a`` at stride 1 / padding 1, the extra max pool after
``Mixed_5d`` skipped when ``large_feature_map``; then ``SPG_A3_1b`` (3x3, 768 -> 1024) + ReLU and
``SPG_A3_2b`` (3x3, 1024 -> 1024) + ReLU with dropout 0.5 before, between and after them.
The benchmark's ``SPG_A4`` (1x1 conv) + GAP equals the WSOL head's GAP + Linear, so the
backbone returns the 1024-channel ``SPG_A3_2b`` map.

Note: the benchmark feeds ImageNet mean/std normalised images to the Google weights (no
``transform_input``), and so does this backbone.

Example:
    >>> import torch
    >>> net = InceptionV3Backbone().eval()
    >>> tuple(net.forward_features(torch.zeros(1, 3, 224, 224)).shape)
    (1, 1024, 14, 14)
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import Inception_V3_Weights
from torchvision.models.inception import BasicConv2d, InceptionA, InceptionB, InceptionC

from cream_pl.models.backbones.base import (
    ACoLLayout,
    Backbone,
    SPGLayout,
    download_torchvision_state_dict,
    initialize_weights,
)
from cream_pl.models.backbones.registry import register_backbone

__all__ = ["InceptionV3Backbone"]

_PRETRAINED_NAME_PARTS = ("Mixed", "Conv2d_1", "Conv2d_2", "Conv2d_3", "Conv2d_4")


class _InceptionBStride1(InceptionB):
    """torchvision ``InceptionB`` (``Mixed_6a``) with stride 1 and padding 1, as the benchmark."""

    def __init__(self, in_channels: int) -> None:
        super().__init__(in_channels)
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=1, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=1, padding=1)

    def _forward(self, x: Tensor) -> list[Tensor]:
        branch3x3 = self.branch3x3(x)
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return [branch3x3, branch3x3dbl, branch_pool]


@register_backbone("inception_v3")
class InceptionV3Backbone(Backbone):
    """WSOL-benchmark InceptionV3 body (to ``Mixed_6e``) + ``SPG_A3_1b`` / ``SPG_A3_2b``.

    Args:
        large_feature_map: skip the max pool after ``Mixed_5d`` (28x28 at 224, stride 8).
        dropout: dropout probability around the SPG_A3 convs (benchmark: 0.5).

    Learning-rate groups (benchmark rule): ``Mixed*`` and ``Conv2d_1..4*`` at the base lr,
    ``SPG_A3_*`` at x10. Random init: Xavier uniform convs, BN (1, 0), as ``InceptionCam``.

    ADL positions (wsolevaluation ``wsol/inception.py``, ``InceptionAdl``: ``ADL_5d``, ``ADL_6e``,
    ``ADL_A3_2b``): after ``Mixed_5d`` (before the optional max pool), after ``Mixed_6e`` and after
    ``SPG_A3_2b`` + ReLU. The reference's ``InceptionAdl`` has no dropout: its recipes set ``dropout: 0``.

    ACoL (``InceptionAcol``): ``variant="acol"`` ends at ``Mixed_6e`` (768 channels, no ``SPG_A3`` layers,
    no dropout); ACoL's branches of 1024 channels sit there. SPG (``InceptionSpg``, the same network as
    ``InceptionCam``): ``B1`` (512 channels) after the max pool that follows ``Mixed_5d`` (``pool_5d``, a
    parameter-free module; the identity with ``large_feature_map``), ``B2`` (512) after ``Mixed_6d``,
    ``C`` (512) on the final map. Xavier init, x10 lr (``main.py``: outside ``Mixed`` / ``Conv2d_1..4``).
    """

    adl_positions = ("Mixed_5d", "Mixed_6e", "SPG_A3_2b")
    adl_output_position = "SPG_A3_2b"
    acol_layout = ACoLLayout(width=1024, init="xavier")
    spg_layout = SPGLayout(taps=("pool_5d", "Mixed_6d"), tap_channels=(288, 768), b_width=512, c_width=512,
                           init="xavier")

    ignored_pretrained_prefixes = ("Mixed_7", "AuxLogits.", "fc.")
    new_module_prefixes = ("SPG_A3_",)

    def __init__(self, large_feature_map: bool = False, dropout: float = 0.5, variant: str = "cam") -> None:
        super().__init__()
        self.variant = self.check_variant(variant)
        if not isinstance(large_feature_map, bool):
            raise ValueError(f"large_feature_map must be a bool, got {large_feature_map!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.large_feature_map = large_feature_map
        self.dropout = dropout
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2, padding=1)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.pool_5d: nn.Module = (nn.Identity() if large_feature_map
                                   else nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True))
        self.Mixed_6a = _InceptionBStride1(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.with_spg_a3 = self.variant != "acol"
        if self.with_spg_a3:  # InceptionAcol puts its branches on Mixed_6e instead
            self.SPG_A3_1b = nn.Sequential(nn.Conv2d(768, 1024, kernel_size=3, padding=1), nn.ReLU(inplace=True))
            self.SPG_A3_2b = nn.Sequential(nn.Conv2d(1024, 1024, kernel_size=3, padding=1), nn.ReLU(inplace=True))
        self.num_features = 1024 if self.with_spg_a3 else 768
        self.feature_stride = 8 if large_feature_map else 16
        initialize_weights(self.modules(), init_mode="xavier")

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1, ceil_mode=True)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1, ceil_mode=True)
        x = self.pool_5d(self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x))))
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(self.Mixed_6a(x)))))
        if not self.with_spg_a3:
            return x
        x = self.SPG_A3_1b(F.dropout(x, self.dropout, self.training))
        x = self.SPG_A3_2b(F.dropout(x, self.dropout, self.training))
        return F.dropout(x, self.dropout, self.training)

    def _is_new_parameter(self, name: str) -> bool:
        return not any(part in name for part in _PRETRAINED_NAME_PARTS)

    def official_state_dict(self) -> dict[str, Tensor]:
        return download_torchvision_state_dict(Inception_V3_Weights.IMAGENET1K_V1, self.name)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dropout={self.dropout}"
