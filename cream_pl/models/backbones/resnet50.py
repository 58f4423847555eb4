"""ResNet50 as modified by the WSOL benchmark (clovaai/wsolevaluation ``ResNetCam``).

torchvision's Bottleneck ResNet50 with ``layer4`` at stride 1 (and ``layer3`` at stride 1 when
``large_feature_map``), without dilation: 2048 channels at 14x14 (28x28) for a 224 input.

Example:
    >>> import torch
    >>> net = ResNet50Backbone()
    >>> tuple(net.forward_features(torch.zeros(1, 3, 64, 64)).shape)
    (1, 2048, 4, 4)
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models import ResNet50_Weights, resnet50
from torchvision.models.resnet import Bottleneck

from cream_pl.models.backbones.base import (
    ACoLLayout,
    Backbone,
    SPGLayout,
    download_torchvision_state_dict,
    initialize_weights,
)
from cream_pl.models.backbones.registry import register_backbone

__all__ = ["ResNet50Backbone"]


def _set_first_block_stride_1(layer: nn.Sequential) -> None:
    block = layer[0]
    assert isinstance(block, Bottleneck) and block.downsample is not None
    block.conv2.stride = (1, 1)  # torchvision (v1.5) strides in the 3x3 conv, as the benchmark
    block.downsample[0].stride = (1, 1)
    block.stride = 1


@register_backbone("resnet50")
class ResNet50Backbone(Backbone):
    """WSOL-benchmark ResNet50: conv1 ... layer4 with layer4 at stride 1.

    Args:
        large_feature_map: also run ``layer3`` at stride 1 (28x28 at 224, stride 8).

    Learning-rate groups (benchmark rule, inverted w.r.t. VGG): ``layer4`` at x10, everything
    else at the base lr. Random init: Xavier uniform convs, BN (1, 0), as the benchmark's
    ``ResNetCam`` (which uses ``init_mode='xavier'``).

    ADL positions (wsolevaluation ``wsol/resnet.py``, ``_ADL_POSITION = [[], [], [], [0], [0, 2]]``):
    after the first bottleneck of ``layer3``, and after the first and the third (last) of ``layer4``.

    ACoL and SPG (``ResNetAcol`` / ``ResNetSpg``): the same network (``variant`` changes nothing); ACoL's
    branches of 1024 channels on ``layer4`` (He init), SPG's ``B1`` / ``B2`` of 1024 channels after
    ``layer3.0`` and ``layer3`` and ``C`` of 512 on ``layer4`` (Xavier). ``main.py`` gives the x10 lr to
    ``layer4.`` / ``fc.`` only, so these heads and their classifiers train at the base lr.
    """

    adl_positions = ("layer3.0", "layer4.0", "layer4.2")
    adl_output_position = "layer4.2"
    acol_layout = ACoLLayout(width=1024, init="he", new_lr=False)
    spg_layout = SPGLayout(taps=("layer3.0", "layer3"), tap_channels=(1024, 1024), b_width=1024, c_width=512,
                           init="xavier", new_lr=False)

    ignored_pretrained_prefixes = ("fc.",)
    pretrained_classifier_prefix = "fc."  # kept for 1000-class (ILSVRC) models, as the benchmark

    def __init__(self, large_feature_map: bool = False, variant: str = "cam") -> None:
        super().__init__()
        self.variant = self.check_variant(variant)
        if not isinstance(large_feature_map, bool):
            raise ValueError(f"large_feature_map must be a bool, got {large_feature_map!r}")
        self.large_feature_map = large_feature_map
        net = resnet50(weights=None)
        _set_first_block_stride_1(net.layer4)
        if large_feature_map:
            _set_first_block_stride_1(net.layer3)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.num_features = 2048
        self.feature_stride = 8 if large_feature_map else 16
        initialize_weights(self.modules(), init_mode="xavier")

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def _is_new_parameter(self, name: str) -> bool:
        return "layer4." in name

    def official_state_dict(self) -> dict[str, Tensor]:
        # IMAGENET1K_V1: the original torchvision recipe the benchmark was trained from (not V2).
        return download_torchvision_state_dict(ResNet50_Weights.IMAGENET1K_V1, self.name)
