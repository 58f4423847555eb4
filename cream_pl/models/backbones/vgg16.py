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

from cream_pl.models.backbones.base import Backbone, download_torchvision_state_dict, initialize_weights
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
    """

    ignored_pretrained_prefixes = ("classifier.",)
    new_module_prefixes = ("conv6.",)

    def __init__(self, large_feature_map: bool = False) -> None:
        super().__init__()
        if not isinstance(large_feature_map, bool):
            raise ValueError(f"large_feature_map must be a bool, got {large_feature_map!r}")
        self.large_feature_map = large_feature_map
        cfg = list(cfgs["D"][:-1])  # drop pool5
        if large_feature_map:
            pool4 = 13  # [64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512]
            assert cfg[pool4] == "M"
            del cfg[pool4]
        self.features = make_layers(cfg, batch_norm=False)
        pools = [i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        relus = [i for i, m in enumerate(self.features) if isinstance(m, nn.ReLU)]  # one per conv
        self.adl_positions = (f"features.{pools[2]}", f"features.{relus[9]}", f"features.{relus[12]}")
        self.conv6 = nn.Conv2d(512, 1024, kernel_size=3, padding=1)
        self.relu = nn.ReLU(inplace=False)
        self.num_features = 1024
        self.feature_stride = 8 if large_feature_map else 16
        initialize_weights(self.modules(), init_mode="he")

    def forward_features(self, x: Tensor) -> Tensor:
        return self.relu(self.conv6(self.features(x)))

    def _is_new_parameter(self, name: str) -> bool:
        return "features." not in name

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
