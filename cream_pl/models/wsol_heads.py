"""ACoL and SPG, the benchmark's two head methods: their heads as modules, their math as pure tensor functions.

Written from the definitions of ``clovaai/wsolevaluation`` (``wsol/method/acol.py``, ``spg.py``, the
``*Acol`` / ``*Spg`` networks of ``wsol/{vgg,resnet,inception}.py``, ``main.py``), with the
hyperparameters of its ``config.py`` (:data:`~cream_pl.models.wsol_methods.METHOD_DEFAULTS`).
:class:`~cream_pl.models.WSOLClassifier` builds the head with :func:`build_wsol_head` for
``wsol_method="acol" | "spg"``.

- **ACoL** (Adversarial Complementary Learning, Zhang et al., CVPR 2018): two classifier branches on
  the backbone's trunk map, each two 3x3 convolutions + ReLU and a 1x1 classifier (here: GAP + the
  linear layer, the same map). Branch A sees the trunk map; its ground-truth-class map, min-max
  normalised per image, erases the trunk cells at or above ``threshold`` (:func:`acol_erase_mask`), and
  branch B sees the erased map. Loss ``CE(A) + CE(B)``; the logits are A's. The localisation map is
  the element-wise max of the two branches' normalised maps (:func:`acol_fuse`), erasure included (the
  reference evaluates with the ground-truth class). The erasing class is the label where one is given,
  else A's top class (the reference's rule).
- **SPG** (Self-produced Guidance, Zhang et al., ECCV 2018): the classifier (``SPG_A4``: GAP + linear,
  as CAM) and three training-only branches: ``B1`` and ``B2`` at two depths of the backbone (one
  3x3 conv each, then a shared 3x3 conv + 1x1 to one channel) and ``C`` on the final map. Each gets a
  pixel-wise BCE target at the training image size (:func:`spg_target`: 1 above its high threshold,
  falling back to ``0.7 · max`` when fewer than 30 pixels pass; 0 below its low threshold; ignored
  otherwise): ``B2`` from the normalised ground-truth-class CAM, ``B1`` from ``sigmoid(B2)`` and ``C``
  from the mean of ``sigmoid(B1)`` and ``sigmoid(B2)`` (:func:`spg_loss`). The CAM is the classifier's:
  nothing is added at inference.

Head widths: VGG16, ResNet50 and InceptionV3 use the reference's (each backbone's ``acol_layout`` /
``spg_layout``); EfficientNet-Lite0, which the reference does not have, uses widths scaled to its
channels. Compute at 14x14 (multiply-accumulates per image, :func:`conv_macs`): the reference's fixed
1024-channel ACoL heads on Lite0's 1280-channel map would cost 8.4 GMAC, about 11x the 0.76 GMAC
backbone; the scaled heads (320 channels on the 320-channel map before ``conv_head``, which they
replace as the reference's replace VGG's ``conv6``) cost about 0.75 GMAC, about 1x. Lite0's SPG
branches (the reference's 512 channels scaled by the same 320 / 1024: 160 channels for ``B1`` / ``B2`` at
``_blocks.10`` / ``_blocks.14`` and for ``C`` on the 1280-channel map) cost about 0.54 GMAC, in training only.

Example:
    >>> import torch
    >>> att = torch.tensor([[[[0.0, 0.69], [0.7, 1.0]]]])
    >>> acol_erase_mask(att, 0.7).tolist()
    [[[[1.0, 1.0], [0.0, 0.0]]]]
    >>> spg_target(torch.tensor([[[[0.0, 0.5, 0.9]]]]), high=0.7, low=0.01, min_pixels=1).tolist()
    [[[[0.0, 255.0, 1.0]]]]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cream_pl.models.backbones.base import ACoLLayout, Backbone, SPGLayout, initialize_weights
from cream_pl.models.cam import class_activation_maps, normalize_maps
from cream_pl.models.wsol_methods import WSOLMethod

__all__ = [
    "SPG_IGNORE",
    "head_costs",
    "ACoLHead",
    "HeadOutput",
    "SPGHead",
    "acol_erase",
    "acol_erase_mask",
    "acol_fuse",
    "build_wsol_head",
    "conv_macs",
    "head_macs",
    "init_classifier_for",
    "spg_attention_loss",
    "spg_loss",
    "spg_target",
    "spg_targets",
]

SPG_IGNORE = 255.0
"""Target value of the pixels SPG's losses ignore (the reference's fill value)."""
SPG_MIN_PIXELS = 30
"""A foreground with fewer pixels falls back to ``SPG_FALLBACK_RATIO · max`` (reference ``mask_fg``)."""
SPG_FALLBACK_RATIO = 0.7


# ----------------------------------------------------------------------------- pure functions: ACoL
def _check_maps(maps: Tensor, name: str) -> None:
    if not isinstance(maps, Tensor) or maps.ndim != 4 or maps.shape[1] != 1:
        raise ValueError(f"{name} must be a (B, 1, h, w) tensor, got {getattr(maps, 'shape', type(maps))}")


def acol_erase_mask(attention: Tensor, threshold: float) -> Tensor:
    """ACoL's keep mask ``(B, 1, h, w)``: 0 where the normalised branch-A map is ``>= threshold``, else 1."""
    _check_maps(attention, "attention")
    return (attention < threshold).to(attention.dtype)


def acol_erase(features: Tensor, attention: Tensor, threshold: float) -> Tensor:
    """The trunk map branch B sees: ``features · acol_erase_mask(attention, threshold)`` (a new tensor)."""
    if features.ndim != 4 or attention.shape != (features.shape[0], 1, *features.shape[2:]):
        raise ValueError(f"need features (B, K, h, w) and attention (B, 1, h, w); got {tuple(features.shape)}, "
                         f"{tuple(attention.shape)}")
    return features * acol_erase_mask(attention, threshold).to(features.dtype)


def acol_fuse(cam_a: Tensor, cam_b: Tensor) -> Tensor:
    """ACoL's localisation map: ``max(norm(cam_a), norm(cam_b))`` per cell, each map min-max normalised per image."""
    if cam_a.shape != cam_b.shape:
        raise ValueError(f"the branch maps must have one shape, got {tuple(cam_a.shape)} and {tuple(cam_b.shape)}")
    return torch.maximum(normalize_maps(cam_a), normalize_maps(cam_b))


# ----------------------------------------------------------------------------- pure functions: SPG
def spg_target(
    attention: Tensor, high: float, low: float, min_pixels: int = SPG_MIN_PIXELS,
    fallback_ratio: float = SPG_FALLBACK_RATIO,
) -> Tensor:
    """SPG's pixel target ``(B, 1, H, W)`` from an attention map in [0, 1] (reference ``get_mask``).

    Per image: foreground (1) where ``attention > high``; if that holds for fewer than ``min_pixels``
    pixels, where ``attention > fallback_ratio · max(attention)`` instead. Then background (0) where
    ``attention < low`` (it overrides the foreground). Every other pixel is :data:`SPG_IGNORE`.
    """
    _check_maps(attention, "attention")
    fg = attention > high
    few = fg.flatten(1).sum(1) < min_pixels
    if bool(few.any()):
        peak = attention.flatten(1).amax(1).view(-1, 1, 1, 1)
        fg = torch.where(few.view(-1, 1, 1, 1), attention > fallback_ratio * peak, fg)
    target = torch.full_like(attention, SPG_IGNORE)
    target = target.masked_fill(fg, 1.0)
    return target.masked_fill(attention < low, 0.0)


def spg_attention_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Mean BCE-with-logits of ``logits`` (upsampled bilinearly to the target's size) over the not-ignored pixels.

    No pixel to learn from (all ignored) gives a zero loss that still reaches ``logits``.
    """
    _check_maps(logits, "logits")
    _check_maps(target, "target")
    up = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    valid = target != SPG_IGNORE
    if not bool(valid.any()):
        return up.sum() * 0.0
    return F.binary_cross_entropy_with_logits(up[valid], target[valid])


def spg_targets(
    cam: Tensor, logits_b1: Tensor, logits_b2: Tensor, size: tuple[int, int], thresholds: Mapping[str, float]
) -> dict[str, Tensor]:
    """The three targets at ``size``: ``{"b2": from the CAM, "b1": from sigmoid(B2), "c": from the fused B1/B2}``.

    Args:
        cam: raw ground-truth-class CAM ``(B, h, w)`` (upsampled, then min-max normalised per image).
        logits_b1, logits_b2: the B branches' one-channel logits ``(B, 1, h', w')``.
        size: the training image size (the reference's 224).
        thresholds: ``threshold_{1,2,3}{h,l}`` (:data:`~cream_pl.models.wsol_methods.METHOD_DEFAULTS`).
    """
    def up(x: Tensor) -> Tensor:
        return F.interpolate(x.detach().float(), size=size, mode="bilinear", align_corners=False)

    attention = normalize_maps(up(cam[:, None])[:, 0])[:, None]
    b1, b2 = torch.sigmoid(up(logits_b1)), torch.sigmoid(up(logits_b2))
    t = thresholds
    return {
        "b2": spg_target(attention, t["threshold_1h"], t["threshold_1l"]),
        "b1": spg_target(b2, t["threshold_2h"], t["threshold_2l"]),
        "c": spg_target((b1 + b2) / 2.0, t["threshold_3h"], t["threshold_3l"]),
    }


def spg_loss(
    logits: Tensor, labels: Tensor, cam: Tensor, branches: Mapping[str, Tensor], size: tuple[int, int],
    thresholds: Mapping[str, float],
) -> Tensor:
    """``CE(logits) + BCE(B2) + BCE(B1) + BCE(C)`` against :func:`spg_targets` (reference ``spg.get_loss``)."""
    targets = spg_targets(cam, branches["b1"], branches["b2"], size, thresholds)
    loss = F.cross_entropy(logits, labels)
    for key in ("b2", "b1", "c"):
        loss = loss + spg_attention_loss(branches[key].float(), targets[key])
    return loss


def conv_macs(in_channels: int, out_channels: int, kernel: int, cells: int = 14 * 14) -> int:
    """Multiply-accumulates of one convolution over ``cells`` output cells (the head cost counts above)."""
    return in_channels * out_channels * kernel * kernel * cells


# ----------------------------------------------------------------------------- modules
def _conv_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), nn.ReLU(inplace=False)]


@dataclass
class HeadOutput:
    """What a head gives the classifier: the evaluated features, the logits, training extras."""

    features: Tensor
    logits: Tensor
    extras: dict[str, Any]


class ACoLHead(nn.Module):
    """ACoL's two branches on a trunk map; branch A's classifier is the model's linear layer.

    ``features`` of the output are ``cat([F_A, F_B], 1)`` (``2 · width`` channels): each branch's last
    ReLU map, on which its linear classifier acts, so each branch's CAM (and CREAM) has the linear form.

    Args:
        layout: the backbone's :class:`~cream_pl.models.backbones.base.ACoLLayout`.
        in_channels: channels of the trunk map.
        num_classes: ``C``.
        threshold: erasing threshold.
    """

    needs_labels = True

    def __init__(self, layout: ACoLLayout, in_channels: int, num_classes: int, threshold: float) -> None:
        super().__init__()
        self.layout, self.threshold, self.width = layout, float(threshold), int(layout.width)
        self.branch_a = nn.Sequential(*_conv_relu(in_channels, self.width), *_conv_relu(self.width, self.width))
        self.branch_b = nn.Sequential(*_conv_relu(in_channels, self.width), *_conv_relu(self.width, self.width))
        self.classifier_b = nn.Linear(self.width, num_classes)
        initialize_weights(self.modules(), layout.init)
        _init_as_conv(self.classifier_b, layout.init)

    @property
    def feature_dim(self) -> int:
        return 2 * self.width

    @property
    def classifier_dim(self) -> int:
        return self.width

    def forward(self, trunk: Tensor, classifier: nn.Linear, labels: Tensor | None = None) -> HeadOutput:
        if self.layout.pre_pool:  # VggAcol: a 3x3 stride-1 average pool before both branches
            trunk = F.avg_pool2d(trunk, kernel_size=3, stride=1, padding=1)
        feat_a = self.branch_a(trunk)
        logits_a = classifier(feat_a.mean(dim=(2, 3)))
        ids = logits_a.argmax(1) if labels is None else labels
        with torch.no_grad():
            attention = normalize_maps(class_activation_maps(feat_a.detach().float(), classifier.weight.float(), ids))
        feat_b = self.branch_b(acol_erase(trunk, attention[:, None], self.threshold))
        logits_b = self.classifier_b(feat_b.mean(dim=(2, 3)))
        return HeadOutput(torch.cat([feat_a, feat_b], dim=1), logits_a, {"logits_b": logits_b, "erased": attention})

    def loss(self, out: HeadOutput, labels: Tensor, **_: Any) -> Tensor:
        """``CE(A) + CE(B)``."""
        return F.cross_entropy(out.logits, labels) + F.cross_entropy(out.extras["logits_b"], labels)

    def cam_weights(self, classifier: nn.Linear) -> tuple[Tensor, ...]:
        return classifier.weight, self.classifier_b.weight

    def extra_repr(self) -> str:
        return f"width={self.width}, threshold={self.threshold}, pre_pool={self.layout.pre_pool}"


class SPGHead(nn.Module):
    """SPG's training-only branches: ``B1`` / ``B2`` at the layout's two backbone taps, ``C`` on the final map.

    The taps are forward hooks (no parameter, state dict of the backbone unchanged) that keep their
    module's output during training; the branches run in training only.

    Args:
        layout: the backbone's :class:`~cream_pl.models.backbones.base.SPGLayout`.
        backbone: the network the taps hook into.
        in_channels: channels of the final map (``C``'s input).
        thresholds: SPG's six thresholds.
    """

    needs_labels = False

    def __init__(self, layout: SPGLayout, backbone: Backbone, in_channels: int, thresholds: Mapping[str, float]) -> None:
        super().__init__()
        self.layout, self.thresholds = layout, dict(thresholds)
        (c1, c2), w = layout.tap_channels, layout.b_width
        self.b1 = nn.Sequential(*_conv_relu(c1, w))
        self.b2 = nn.Sequential(*_conv_relu(c2, w))
        self.b_shared = nn.Sequential(*_conv_relu(w, w), nn.Conv2d(w, 1, kernel_size=1))
        self.c = nn.Sequential(*_conv_relu(in_channels, layout.c_width), nn.Conv2d(layout.c_width, 1, kernel_size=1))
        initialize_weights(self.modules(), layout.init)
        modules = dict(backbone.named_modules())
        missing = [p for p in layout.taps if p not in modules]
        if missing:
            raise ValueError(f"SPG taps {missing} are not submodules of {type(backbone).__name__}")
        self._taps: dict[str, Tensor] = {}
        for key, pos in zip(("b1", "b2"), layout.taps):
            modules[pos].register_forward_hook(self._recorder(key))

    def _recorder(self, key: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Tensor) -> None:
            if self.training:
                self._taps[key] = output

        return hook

    @property
    def feature_dim(self) -> int:
        return self.c[0].in_channels

    @property
    def classifier_dim(self) -> int:
        return self.c[0].in_channels

    def forward(self, trunk: Tensor, classifier: nn.Linear, labels: Tensor | None = None) -> HeadOutput:
        logits = classifier(trunk.mean(dim=(2, 3)))
        extras: dict[str, Any] = {}
        if self.training:
            taps, self._taps = self._taps, {}
            if set(taps) != {"b1", "b2"}:
                raise RuntimeError(f"SPG's taps {self.layout.taps} did not run in this forward pass")
            extras = {"b1": self.b_shared(self.b1(taps["b1"])), "b2": self.b_shared(self.b2(taps["b2"])),
                      "c": self.c(trunk)}
        return HeadOutput(trunk, logits, extras)

    def loss(self, out: HeadOutput, labels: Tensor, weight: Tensor | None = None,
             size: tuple[int, int] | None = None) -> Tensor:
        """:func:`spg_loss` with the ground-truth-class CAM of ``out.features`` (classifier ``weight``) at the
        training image ``size`` (the reference's 224)."""
        if weight is None or size is None:
            raise ValueError("SPG's loss needs the classifier weight and the training image size")
        cam = class_activation_maps(out.features.detach().float(), weight.detach().float(), labels)
        return spg_loss(out.logits, labels, cam, out.extras, size, self.thresholds)

    def cam_weights(self, classifier: nn.Linear) -> tuple[Tensor, ...]:
        return (classifier.weight,)

    def extra_repr(self) -> str:
        return f"taps={self.layout.taps}, b_width={self.layout.b_width}, c_width={self.layout.c_width}"


def _init_as_conv(linear: nn.Linear, init: str) -> None:
    """Initialise a linear classifier as the reference initialises its 1x1-conv classifier."""
    conv = nn.Conv2d(linear.in_features, linear.out_features, kernel_size=1)
    initialize_weights([conv], init)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.view_as(linear.weight))
        linear.bias.zero_()


def _layout(backbone: Backbone, attr: str, method: str) -> Any:
    layout = getattr(backbone, attr, None)
    if layout is None:
        raise ValueError(f"backbone {backbone.name!r} defines no {attr} (the {method!r} heads' shape and place); "
                         f"set it on the backbone class to train {method!r} on it")
    return layout


def build_wsol_head(method: WSOLMethod, backbone: Backbone, num_classes: int) -> ACoLHead | SPGHead | None:
    """The head of a head method (``None`` for the others), laid out by the backbone's ``acol_layout`` / ``spg_layout``."""
    builders: dict[str, Callable[[], nn.Module]] = {
        "acol": lambda: ACoLHead(_layout(backbone, "acol_layout", "acol"), backbone.num_features, num_classes,
                                 method.params["threshold"]),
        "spg": lambda: SPGHead(_layout(backbone, "spg_layout", "spg"), backbone, backbone.num_features, method.params),
    }
    build = builders.get(method.name)
    return None if build is None else build()  # type: ignore[return-value]


def init_classifier_for(head: ACoLHead | SPGHead, classifier: nn.Linear) -> None:
    """Initialise the model's linear classifier (ACoL's branch A, SPG's ``SPG_A4``) as the reference's 1x1 conv."""
    _init_as_conv(classifier, head.layout.init)


def head_macs(head: ACoLHead | SPGHead, num_classes: int, cells: int = 14 * 14) -> int:
    """Multiply-accumulates per image of a head's convolutions (and classifiers) at ``cells`` map cells."""
    total = 0
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            shared = 2 if isinstance(head, SPGHead) and any(m is x for x in head.b_shared.modules()) else 1
            total += shared * conv_macs(m.in_channels, m.out_channels, m.kernel_size[0], cells)
    if isinstance(head, ACoLHead):
        total += 2 * conv_macs(head.width, num_classes, 1, cells)
    return total


def head_costs(backbone: str = "efficientnet_lite0", num_classes: int = 200, size: int = 224) -> dict[str, float]:
    """GMAC per image at ``size`` px of the backbone's own forward pass (torch's ``FlopCounterMode``, one
    multiply-accumulate = 2 FLOPs), of its ACoL heads (training and test) and SPG branches (training only) at our
    widths, and of the reference's fixed 1024-channel ACoL heads on its final map: what ``make demo-methods``'s report
    states of the heads' cost.

    >>> c = head_costs(num_classes=200)
    >>> 0.7 < c["backbone"] < 0.8 and 0.7 < c["acol"] < 0.8 and 8.3 < c["acol_reference"] < 8.5 and 0.5 < c["spg"] < 0.6
    True
    """
    from torch.utils.flop_counter import FlopCounterMode

    from cream_pl.models.backbones import create_backbone

    full, acol = create_backbone(backbone).eval(), create_backbone(backbone, variant="acol")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        cells = int(full(torch.zeros(1, 3, size, size)).shape[-2:].numel())
    method = WSOLMethod.create("spg")
    return {"backbone": counter.get_total_flops() / 2e9,
            "acol": head_macs(ACoLHead(acol.acol_layout, acol.num_features, num_classes, 0.7), num_classes, cells) / 1e9,
            "acol_reference": head_macs(ACoLHead(ACoLLayout(width=1024), full.num_features, num_classes, 0.7),
                                        num_classes, cells) / 1e9,
            "spg": head_macs(build_wsol_head(method, full, num_classes), num_classes, cells) / 1e9}  # type: ignore[arg-type]
