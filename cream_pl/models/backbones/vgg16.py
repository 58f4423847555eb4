"""VGG16 as modified by the WSOL benchmark (clovaai/wsolevaluation ``VggCam``).

torchvision's VGG16 conv stack without pool5 (14x14 at 224; ``large_feature_map`` also drops
pool4, 28x28), followed by ``conv6`` (3x3, 512 -> 1024) + ReLU. The WSOL head (GAP + Linear)
is not part of the backbone.

Example:
    >>> import torch
    >>> net = VGG16Backbone(large_feature_map=True)
    >>> tuple(net.forward_features(torch.zeros(1, 3, 112, 112)).shape)
    (1, 1024, 14, 14)
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor, nn
from torchvision.models import VGG16_Weights
from torchvision.models.vgg import cfgs, make_layers

from cream_pl.models.backbones.base import (
    ACoLLayout,
    Backbone,
    SPGLayout,
    download_torchvision_state_dict,
    initialize_weights,
)
from cream_pl.models.backbones.registry import register_backbone

__all__ = ["VGG16Backbone"]

_FEATURE_KEY = re.compile(r"^features\.(\d+)\.(weight|bias)$")


@register_backbone("vgg16")
class VGG16Backbone(Backbone):
    """WSOL-benchmark VGG16: conv1-conv5 (no pool5) + conv6 (1024 ch) + ReLU.

    Args:
        large_feature_map: also drop pool4, giving a 28x28 map at 224 (stride 8).

    Learning-rate groups (benchmark rule): ``features.*`` at the base lr, ``conv6`` at x10.
    Random init: Kaiming normal (fan-out) everywhere, as the benchmark's ``VggCam``.

    ADL positions (wsolevaluation ``wsol/vgg.py``, ``configs_dict['adl']``, both map sizes): after
    pool3, after conv4_3's ReLU (before pool4, where there is one) and after conv5_3's ReLU (before
    ``conv6``): ``features.16``, ``features.22`` and ``features.29`` (``features.28`` without pool4).

    Variants (``configs_dict`` of ``wsol/vgg.py``): ``"acol"`` (``VggAcol``) has 3x3 stride-2 max pools
    (padding 1) instead of 2x2, pool4 at stride 1 in the 28x28 map, a 3x3 stride-1 max pool after conv5 and
    no ``conv6``: 512 channels, on which ACoL's branches (1024 channels, after a 3x3 average pool) sit.
    ``"spg"`` (``VggSpg``) has conv1-conv3 with their pools, conv4 (``SPG_A_1``), a 3x3 stride-2 max pool
    (padding 1; none in the 28x28 map), conv5 (``SPG_A_2``) and two new 3x3 convolutions of 512 channels
    + ReLU (``spg_a3``, the reference's ``SPG_A_3``): 512 channels; SPG's ``B1`` taps the map after that
    pool (conv4's in the 28x28 map), ``B2`` conv5's, each with 512 channels, ``C`` (512) the final map. The
    reference's lr rule (x10 for names without ``features.``) gives conv4 and conv5 of ``VggSpg`` (named
    ``SPG_A_1`` / ``SPG_A_2`` there) the x10 lr; so does this variant. Xavier init for both variants.
    """

    ignored_pretrained_prefixes = ("classifier.",)

    def __init__(self, large_feature_map: bool = False, variant: str = "cam") -> None:
        super().__init__()
        if not isinstance(large_feature_map, bool):
            raise ValueError(f"large_feature_map must be a bool, got {large_feature_map!r}")
        self.variant = self.check_variant(variant)
        self.large_feature_map = large_feature_map
        cfg = list(cfgs["D"][:-1])  # drop pool5
        pool4 = 13  # [64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512]
        assert cfg[pool4] == "M"
        if large_feature_map:
            del cfg[pool4]
        self.features = make_layers(cfg, batch_norm=False)
        self._new_convs = 0  # how many of the last ``features`` convolutions train at the x10 lr
        self.new_module_prefixes = ("conv6.",) if self.variant == "cam" else ("spg_a3.",)
        if self.variant == "acol":
            self._acol_pools()
        elif self.variant == "spg":
            self._spg_pool()
        pools = [i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        relus = [i for i, m in enumerate(self.features) if isinstance(m, nn.ReLU)]  # one per conv
        self.adl_positions = (f"features.{pools[2]}", f"features.{relus[9]}", f"features.{relus[12]}")
        if self.variant == "cam":
            self.conv6 = nn.Conv2d(512, 1024, kernel_size=3, padding=1)
            self.relu = nn.ReLU(inplace=False)
        self.num_features = 1024 if self.variant == "cam" else 512
        self.feature_stride = 8 if large_feature_map else 16
        self.acol_layout = ACoLLayout(width=1024, pre_pool=True, init="xavier")
        b1 = f"features.{pools[3]}" if not large_feature_map else f"features.{relus[9]}"
        self.spg_layout = SPGLayout(taps=(b1, f"features.{relus[12]}"), tap_channels=(512, 512), b_width=512,
                                    c_width=512, init="xavier")
        initialize_weights(self.modules(), init_mode="he" if self.variant == "cam" else "xavier")

    def _acol_pools(self) -> None:
        """``VggAcol``: every 2x2 pool becomes 3x3 stride 2 padding 1; a 3x3 stride-1 pool after conv5 (and
        in place of pool4 in the 28x28 map)."""
        layers = [nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if isinstance(m, nn.MaxPool2d) else m
                  for m in self.features]
        if self.large_feature_map:
            conv4_3_relu = [i for i, m in enumerate(layers) if isinstance(m, nn.ReLU)][9]
            layers.insert(conv4_3_relu + 1, nn.MaxPool2d(kernel_size=3, stride=1, padding=1))
        layers.append(nn.MaxPool2d(kernel_size=3, stride=1, padding=1))
        self.features = nn.Sequential(*layers)

    def _spg_pool(self) -> None:
        """``VggSpg``: pool4 is a 3x3 stride-2 pool with padding 1 (none in the 28x28 map); ``SPG_A_3`` after conv5."""
        layers = list(self.features)
        if not self.large_feature_map:
            pool4 = [i for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)][3]
            layers[pool4] = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.features = nn.Sequential(*layers)
        self.spg_a3 = nn.Sequential(nn.Conv2d(512, 512, kernel_size=3, padding=1), nn.ReLU(inplace=False),
                                    nn.Conv2d(512, 512, kernel_size=3, padding=1), nn.ReLU(inplace=False))
        self._new_convs = 6  # conv4 and conv5: SPG_A_1 / SPG_A_2 in the reference, outside its ``features.``

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.features(x)
        if self.variant == "cam":
            return self.relu(self.conv6(x))
        return self.spg_a3(x) if self.variant == "spg" else x

    def _is_new_parameter(self, name: str) -> bool:
        if "features." not in name:
            return True
        convs = [i for i, m in enumerate(self.features) if isinstance(m, nn.Conv2d)]
        new = set(convs[len(convs) - self._new_convs:]) if self._new_convs else set()
        return int(name.split(".")[1]) in new

    def official_state_dict(self) -> dict[str, Tensor]:
        return download_torchvision_state_dict(VGG16_Weights.IMAGENET1K_V1, self.name)

    def remap_state_dict(self, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Map the k-th conv of the file's ``features`` onto the k-th conv here (benchmark remap).

        Removing pool4 shifts the later ``features`` indices, so torchvision's ``features.24``
        becomes ``features.23`` etc. in the 28x28 variant. Files that already use this
        backbone's indices load unchanged.
        """
        state_dict = super().remap_state_dict(state_dict)
        src_idx = sorted({int(m.group(1)) for k in state_dict if (m := _FEATURE_KEY.match(k))})
        dst_idx = [i for i, m in enumerate(self.features) if isinstance(m, nn.Conv2d)]
        if len(src_idx) != len(dst_idx):
            return state_dict  # let load_pretrained_state_dict report the mismatch
        mapping = dict(zip(src_idx, dst_idx))
        out: dict[str, Tensor] = {}
        for key, value in state_dict.items():
            m = _FEATURE_KEY.match(key)
            out[f"features.{mapping[int(m.group(1))]}.{m.group(2)}" if m else key] = value
        return out
