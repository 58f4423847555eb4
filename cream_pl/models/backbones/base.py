"""The backbone interface shared by every WSOL model in cream-pl.

A backbone turns a normalised image batch into a non-negative feature map. A WSOL model puts
global average pooling and a linear classifier on top, so the class activation map (CAM) of
class ``c`` is ``classifier.weight[c] · features`` at every position.

Example:
    >>> import torch
    >>> from cream_pl.models.backbones import create_backbone
    >>> net = create_backbone("vgg16")
    >>> feats = net.forward_features(torch.zeros(1, 3, 224, 224))
    >>> tuple(feats.shape), net.num_features, net.feature_stride
    ((1, 1024, 14, 14), 1024, 16)
"""

from __future__ import annotations

import abc
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from cream_pl.core.errors import UserFileNotFoundError, UserRuntimeError, UserValueError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ACoLLayout",
    "Backbone",
    "SPGLayout",
    "download_torchvision_state_dict",
    "initialize_weights",
    "load_state_dict_file",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_MAX_KEYS_SHOWN = 12
_INITS = ("he", "xavier")


@dataclass(frozen=True)
class ACoLLayout:
    """Shape of ACoL's two branches on a backbone (:class:`~cream_pl.models.wsol_heads.ACoLHead`).

    Attributes:
        width: channels of each branch's two 3x3 convolutions (reference: 1024).
        pre_pool: a 3x3 stride-1 average pool on the trunk map before the branches (``VggAcol``).
        init: initialisation of the branches and both classifiers (``"he"`` or ``"xavier"``).
        new_lr: the branches and the classifiers train at ``lr x head_lr_multiplier`` (``main.py``'s
            rule: every module outside the feature patterns; for ResNet50 only ``layer4`` / ``fc``).
    """

    width: int
    pre_pool: bool = False
    init: str = "xavier"
    new_lr: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.width, int) or self.width < 1 or self.init not in _INITS:
            raise ValueError(f"ACoLLayout needs width >= 1 and init in {_INITS}, got {self.width!r}, {self.init!r}")


@dataclass(frozen=True)
class SPGLayout:
    """Shape and place of SPG's branches on a backbone (:class:`~cream_pl.models.wsol_heads.SPGHead`).

    Attributes:
        taps: ``named_modules()`` names whose outputs feed ``B1`` and ``B2``.
        tap_channels: channels of those outputs.
        b_width: channels of ``B1`` / ``B2`` and of their shared 3x3 convolution.
        c_width: channels of ``C``'s 3x3 convolution (on the final map).
        init: initialisation of the branches and of the classifier (``SPG_A4``).
        new_lr: as :attr:`ACoLLayout.new_lr`.
    """

    taps: tuple[str, str]
    tap_channels: tuple[int, int]
    b_width: int
    c_width: int
    init: str = "xavier"
    new_lr: bool = True

    def __post_init__(self) -> None:
        if len(self.taps) != 2 or len(self.tap_channels) != 2 or min(*self.tap_channels, self.b_width, self.c_width) < 1:
            raise ValueError(f"SPGLayout needs two taps with their channels and widths >= 1, got {self}")
        if self.init not in _INITS:
            raise ValueError(f"SPGLayout.init must be in {_INITS}, got {self.init!r}")


class Backbone(nn.Module, abc.ABC):
    """Abstract base class of all backbones.

    Subclasses set ``num_features`` and ``feature_stride`` in ``__init__``, implement
    :meth:`forward_features` and :meth:`_is_new_parameter`, and describe how official or
    local pretrained weights map onto them (:meth:`official_state_dict`,
    :meth:`remap_state_dict`, ``ignored_pretrained_prefixes``, ``new_module_prefixes``).

    Attributes:
        name: registry name (set by :func:`~cream_pl.models.backbones.register_backbone`).
        num_features: number of channels ``K`` of the feature map.
        feature_stride: input pixels per feature-map cell (224 / 14 = 16 by default).
        input_mean: per-channel RGB mean (on the 0-1 scale) the pretrained weights expect.
        input_std: per-channel RGB std (on the 0-1 scale) the pretrained weights expect.
        ignored_pretrained_prefixes: state-dict key prefixes of a pretrained file that this
            backbone does not use (e.g. the ImageNet classifier); they are dropped silently.
        pretrained_classifier_prefix: key prefix of the ImageNet classifier in pretrained files
            (ResNet50: ``"fc."``); when set, loading keeps ``(weight, bias)`` in
            ``pretrained_classifier`` so a model on ImageNet's 1000 classes can start from it, as the
            benchmark's ILSVRC ResNet50 does.
        new_module_prefixes: parameter-name prefixes of modules that pretrained weights do not
            cover (e.g. VGG's ``conv6``); they keep their random init when weights are loaded.
        adl_positions: names (``named_modules()``) of the submodules after whose output the ADL
            method puts an attention-based dropout layer (wsolevaluation's positions for the benchmark
            backbones; ``""`` is the backbone's output), see :func:`cream_pl.models.wsol_methods.attach_adl`.
        adl_output_position: the ADL position whose layer's output is the feature map (CAM's map), or
            ``None`` when the last ADL layer sits earlier (VGG16: before ``conv6``). CREAM's
            ``before_adl`` embeddings learn from that layer's input.
        variant: the network the training method needs (``"cam"``; ``"acol"`` / ``"spg"`` where the
            reference's ``*Acol`` / ``*Spg`` networks differ, e.g. ACoL's heads replace VGG's ``conv6``).
        acol_layout / spg_layout: shape and place of ACoL's / SPG's heads on this backbone (``None``:
            that method is not available).
    """

    name: str = "backbone"
    num_features: int
    feature_stride: int
    input_mean: tuple[float, float, float] = IMAGENET_MEAN
    input_std: tuple[float, float, float] = IMAGENET_STD
    ignored_pretrained_prefixes: tuple[str, ...] = ()
    new_module_prefixes: tuple[str, ...] = ()
    pretrained_classifier_prefix: str | None = None
    pretrained_classifier: tuple[Tensor, Tensor] | None = None
    adl_positions: tuple[str, ...] = ()
    adl_output_position: str | None = None
    variant: str = "cam"
    acol_layout: ACoLLayout | None = None
    spg_layout: SPGLayout | None = None

    @staticmethod
    def check_variant(variant: Any, allowed: tuple[str, ...] = ("cam", "acol", "spg")) -> str:
        """``variant`` if it is one of ``allowed``, else a one-line ``ValueError``."""
        if variant not in allowed:
            raise ValueError(f"backbone variant must be one of {list(allowed)}, got {variant!r}")
        return str(variant)

    @abc.abstractmethod
    def forward_features(self, x: Tensor) -> Tensor:
        """Compute the feature map that feeds global average pooling.

        Args:
            x: images ``(B, 3, H, W)`` normalised with ``input_mean`` / ``input_std``.

        Returns:
            Non-negative features ``(B, num_features, H / feature_stride, W / feature_stride)``.
        """

    def forward(self, x: Tensor) -> Tensor:
        """:meth:`forward_features` in the memory format set by :meth:`use_channels_last`.

        Models call the backbone through this method; the returned map is always contiguous.
        """
        if not self.channels_last:
            return self.forward_features(x)
        return self.forward_features(x.contiguous(memory_format=torch.channels_last)).contiguous()

    channels_last: bool = False

    def use_channels_last(self, enabled: bool = True) -> Backbone:
        """Keep 4-D weights, and run every call, in the channels-last (NHWC) memory format.

        The same arithmetic in another layout: faster training on AVX-512 CPUs (oneDNN; ``make
        bench`` measures it), and the layout that bf16 / fp16 tensor cores want on a GPU.

        Example:
            >>> import torch
            >>> from cream_pl.models.backbones import create_backbone
            >>> net = create_backbone("efficientnet_lite0").use_channels_last().eval()
            >>> net._conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
            True
            >>> net(torch.zeros(1, 3, 64, 64)).is_contiguous()
            True
        """
        self.channels_last = bool(enabled)
        self.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)
        return self

    @abc.abstractmethod
    def _is_new_parameter(self, name: str) -> bool:
        """Whether parameter ``name`` trains at the higher (x10) learning rate."""

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """Split the trainable parameters into (base-lr, x10-lr) groups as the WSOL benchmark does.

        Frozen parameters (``requires_grad=False``) are left out of both lists.

        Returns:
            ``(pretrained_params, new_params)``; together they hold every trainable parameter once.
        """
        pretrained: list[nn.Parameter] = []
        new: list[nn.Parameter] = []
        for name, param in self.named_parameters():
            if param.requires_grad:
                (new if self._is_new_parameter(name) else pretrained).append(param)
        return pretrained, new

    # ----------------------------------------------------------------------------- freezing
    def freeze(self, pattern: str) -> list[nn.Parameter]:
        """Freeze the parameters whose names match a regular expression (``re.search``).

        Batch-norm layers whose own parameters are all frozen are frozen whole: they stay in eval
        mode (running statistics fixed) even when the model trains.

        Args:
            pattern: regular expression over :meth:`named_parameters` names.

        Returns:
            The frozen parameters.

        Raises:
            ValueError: the pattern is not a valid regular expression or matches no parameter.

        Example:
            >>> from cream_pl.models.backbones import create_backbone
            >>> net = create_backbone("efficientnet_lite0")
            >>> len(net.freeze(r"^(_conv_stem|_bn0)\\."))  # stem conv weight, its BN weight and bias
            3
            >>> net.train()._bn0.training, net._conv_stem.weight.requires_grad
            (False, False)
        """
        try:
            regex = re.compile(pattern)
        except re.error as err:
            raise ValueError(f"freeze_backbone is not a valid regular expression ({err}): {pattern!r}") from None
        frozen = [p for name, p in self.named_parameters() if regex.search(name)]
        if not frozen:
            raise ValueError(f"freeze_backbone={pattern!r} matches no parameter of backbone {self.name!r}")
        for p in frozen:
            p.requires_grad_(False)
        self._frozen_norms = [
            m for m in self.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and any(True for _ in m.parameters(recurse=False))
            and all(not p.requires_grad for p in m.parameters(recurse=False))
        ]
        self.train(self.training)
        return frozen

    def set_batchnorm_momentum(self, momentum: float) -> Backbone:
        """Set the running-statistics momentum of every batch-norm layer (PyTorch convention).

        ``momentum`` is the weight of each new batch in the running mean / variance. Pretrained
        backbones come with the value of their original training (EfficientNet-Lite0: 0.01, the
        TF value for hundreds of epochs); a fine-tuning of a few hundred steps wants PyTorch's 0.1,
        or the eval-mode statistics lag behind the trained weights.

        Example:
            >>> from cream_pl.models.backbones import create_backbone
            >>> net = create_backbone("efficientnet_lite0").set_batchnorm_momentum(0.1)
            >>> net._bn0.momentum
            0.1
        """
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"batch-norm momentum must be in (0, 1], got {momentum}")
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = float(momentum)
        return self

    def train(self, mode: bool = True) -> Backbone:
        """Like ``nn.Module.train``; batch-norm layers frozen by :meth:`freeze` stay in eval mode."""
        super().train(mode)
        for m in getattr(self, "_frozen_norms", ()):
            m.eval()
        return self

    # ----------------------------------------------------------------------------- weights
    def official_state_dict(self) -> dict[str, Tensor]:
        """Return the official ImageNet weights in their original key format.

        Raises:
            RuntimeError: when the weights cannot be obtained (e.g. no network).
        """
        raise NotImplementedError(f"Backbone '{self.name}' has no official pretrained weights.")

    def remap_state_dict(self, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Map an official-format state dict onto this backbone's parameter names.

        The default drops ``ignored_pretrained_prefixes`` and keeps the other keys unchanged.
        """
        return {k: v for k, v in state_dict.items() if not k.startswith(self.ignored_pretrained_prefixes)}

    def load_pretrained_state_dict(
        self, state_dict: Mapping[str, Tensor], source: str = "state dict"
    ) -> None:
        """Load pretrained weights and check that they cover the whole pretrained part.

        Keys under ``new_module_prefixes`` may be missing (they keep their init); any other
        missing key, any unexpected key and any shape mismatch raises.

        Args:
            state_dict: weights in official (torchvision / package) format or in this
                backbone's own format.
            source: where the weights come from, used in error messages.

        Raises:
            RuntimeError: if the weights do not fit this backbone.
        """
        prefix = self.pretrained_classifier_prefix
        if prefix and f"{prefix}weight" in state_dict and f"{prefix}bias" in state_dict:
            self.pretrained_classifier = (state_dict[f"{prefix}weight"].detach().clone(),
                                          state_dict[f"{prefix}bias"].detach().clone())
        remapped = self.remap_state_dict(state_dict)
        try:
            result = self.load_state_dict(remapped, strict=False)
        except RuntimeError as err:
            detail = "; ".join(ln.strip() for ln in str(err).splitlines() if ln.strip())
            raise UserRuntimeError(
                f"Could not load the weights from {source} into backbone '{self.name}': {detail}"
            ) from err
        missing = [
            k
            for k in result.missing_keys
            if not k.startswith(self.new_module_prefixes) and not k.endswith("num_batches_tracked")
        ]
        unexpected = list(result.unexpected_keys)
        if missing or unexpected:
            raise UserRuntimeError(
                f"The weights from {source} do not match backbone '{self.name}': "
                f"missing keys ({len(missing)}): {_short_list(missing)}; "
                f"unexpected keys ({len(unexpected)}): {_short_list(unexpected)}; "
                "expected a torchvision-format (or package-format) state dict of the same architecture."
            )

    def extra_repr(self) -> str:
        return f"name={self.name!r}, num_features={self.num_features}, feature_stride={self.feature_stride}"


def _short_list(keys: list[str]) -> str:
    if len(keys) <= _MAX_KEYS_SHOWN:
        return str(keys)
    return f"{keys[:_MAX_KEYS_SHOWN]} ... and {len(keys) - _MAX_KEYS_SHOWN} more"


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a state dict saved with ``torch.save`` (tensors only; ``weights_only`` loading).

    A checkpoint dict that wraps the weights under ``"state_dict"`` or ``"model"`` is unwrapped.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file does not hold a dict of tensors.

    Example:
        >>> import tempfile, torch
        >>> f = tempfile.NamedTemporaryFile(suffix=".pth", delete=False); f.close()
        >>> torch.save({"w": torch.ones(2)}, f.name)
        >>> load_state_dict_file(f.name)["w"].tolist()
        [1.0, 1.0]
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserFileNotFoundError(f"{path}: pretrained weights file not found")
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle / zip errors come in many types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserValueError(f"{path}: cannot read this pretrained weights file ({first})") from err
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise UserValueError(f"{path}: this pretrained weights file does not contain a state dict (a dict of tensors)")
    return dict(obj)


def download_torchvision_state_dict(weights: Any, backbone_name: str) -> dict[str, Tensor]:
    """Fetch official torchvision weights (from the torch hub cache or the internet).

    Args:
        weights: a torchvision ``WeightsEnum`` member, e.g. ``VGG16_Weights.IMAGENET1K_V1``.
        backbone_name: registry name, used in the error message.

    Raises:
        RuntimeError: if the download fails; the message says how to use a local file instead.
    """
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except Exception as err:  # URLError, HTTPError, OSError, hash mismatch, ...
        url = weights.url
        filename = url.rsplit("/", 1)[-1]
        cache = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
        reason = " ".join(str(err).split()) or type(err).__name__
        raise UserRuntimeError(
            f"Could not download the official ImageNet weights for backbone '{backbone_name}' "
            f"from {url} ({type(err).__name__}: {reason}); download that file on a machine with internet "
            f"access and either pass its path (--model.init_args.pretrained /path/to/{filename}; make train-cub: "
            f"RECIPE_ARGS=--model.init_args.pretrained=/path/to/{filename}; or "
            f"create_backbone('{backbone_name}', pretrained='/path/to/{filename}')) or copy it to {cache}"
        ) from err


def initialize_weights(modules: Iterable[nn.Module], init_mode: str) -> None:
    """Initialise conv / BN / linear layers as the WSOL benchmark's ``initialize_weights``.

    Args:
        modules: modules to initialise (e.g. ``model.modules()``).
        init_mode: ``"he"`` (Kaiming normal, fan-out, ReLU) or ``"xavier"`` (Xavier uniform)
            for convolutions; biases are zeroed, BN is (1, 0), linear layers get N(0, 0.01).
    """
    if init_mode not in ("he", "xavier"):
        raise ValueError(f"init_mode must be 'he' or 'xavier', got {init_mode!r}")
    for m in modules:
        if isinstance(m, nn.Conv2d):
            if init_mode == "he":
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            else:
                nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
