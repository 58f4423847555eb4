"""WSOL training methods of the wsolevaluation benchmark (HaS, CutMix, ADL) as pure tensor functions.

The benchmark (Choe et al., "Evaluating Weakly Supervised Object Localization Methods Right",
CVPR 2020, ``clovaai/wsolevaluation``) trains six methods under one protocol: CAM, HaS, CutMix,
ADL, ACoL and SPG. All six are implemented, written from their definitions;
:class:`~cream_pl.models.WSOLClassifier` applies them with ``wsol_method="has" | "cutmix" | "adl" |
"acol" | "spg"``. This module holds the three that act on the input or the backbone (HaS, CutMix,
ADL: evaluation unchanged); the two that add heads (ACoL's two classifier branches, SPG's
self-produced-guidance branches) are in :mod:`cream_pl.models.wsol_heads`, with their
hyperparameters here (:data:`METHOD_DEFAULTS`).

- **HaS** (Hide-and-Seek, Singh & Lee, ICCV 2017): before the forward pass every training image is
  tiled into square cells of ``grid_size`` pixels, starting at the top-left corner (cells at the
  right / bottom border are cut by the image edge), and each cell is hidden independently with
  probability ``drop_rate``: all channels of its pixels are set to 0, i.e. the normalisation mean
  (the reference ``wsol/method/has.py`` writes 0 into the normalised batch; the original HaS fills
  with the data set's mean colour). :func:`has_cells`, :func:`has_mask`, :func:`hide_and_seek`.
- **CutMix** (Yun et al., ICCV 2019): with probability ``prob`` a batch is mixed. ``λ ~ Beta(β, β)``;
  one box of ``floor(H·sqrt(1-λ)) x floor(W·sqrt(1-λ))`` pixels, centred on a uniformly drawn pixel
  (half-extent ``cut // 2`` on each side, clipped to the image), is pasted from a random
  permutation of the batch into every image; λ is then recomputed from the pasted area,
  ``λ = 1 - box area / image area``, and the loss is ``λ·CE(y_a) + (1-λ)·CE(y_b)``
  (reference ``wsol/method/cutmix.py`` and ``main.py::_wsol_training``). :func:`cutmix`,
  :func:`mixed_cross_entropy`.
- **ADL** (Attention-based Dropout Layer, Choe & Shim, CVPR 2019): a parameter-free layer. In
  training it computes the channel-mean attention ``A = mean_k x_k`` of its input, a drop mask
  ``1[A < γ · max A]`` (per image) and an importance map ``sigmoid(A)``, draws once per call whether
  to use the drop mask (probability ``drop_rate``) or the importance map, and multiplies the input
  by it; in eval mode it is the identity (reference ``wsol/method/adl.py``). :class:`ADL`,
  :func:`attach_adl` (forward hooks at a backbone's ``adl_positions``, the reference's positions).

Hyperparameter defaults are the reference's ``config.py`` defaults (:data:`METHOD_DEFAULTS`).
No method of the benchmark is missing (:data:`MISSING_METHODS` is empty).

Every random draw takes an optional ``torch.Generator`` (``None``: the global torch RNG, which
``seed_everything`` seeds), so a seeded generator gives the same result on every run.

Under DDP, ``seed_everything`` gives every process the same global torch stream, so drawing from
it would hide the same HaS cells, paste the same CutMix box and make the same ADL choices on every
rank. :func:`rank_generator` gives each process its own stream, as Lightning's worker seeding does:
process 0 keeps the global stream (a single-process run draws exactly what it always drew) and
process ``r > 0`` draws from a generator seeded from ``(global seed, r, epoch)``.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> hidden, cells = hide_and_seek(torch.ones(2, 3, 10, 7), grid_size=4, drop_rate=0.5, generator=g)
    >>> tuple(cells.shape)  # ceil(10 / 4) x ceil(7 / 4) cells per image
    (2, 3, 2)
    >>> bool(((hidden == 0).all(1) == has_mask(cells, 4, 10, 7)).all())
    True
    >>> WSOLMethod.create("adl").params
    {'drop_rate': 0.75, 'threshold': 0.9}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Real
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cream_pl.models.cam import normalize_maps

__all__ = [
    "ADL",
    "METHOD_DEFAULTS",
    "METHOD_TRUNKS",
    "MISSING_METHODS",
    "WSOL_METHODS",
    "CutMixBatch",
    "WSOLMethod",
    "WSOLMethodName",
    "adl_attention",
    "adl_drop_mask",
    "adl_importance_map",
    "attach_adl",
    "cutmix",
    "cutmix_box",
    "cutmix_keep_cells",
    "has_cells",
    "has_mask",
    "hide_and_seek",
    "masked_foreground_background_features",
    "mixed_cross_entropy",
    "rank_generator",
]

WSOLMethodName = Literal["cam", "has", "cutmix", "adl", "acol", "spg"]
WSOL_METHODS: tuple[str, ...] = ("cam", "has", "cutmix", "adl", "acol", "spg")
MISSING_METHODS: tuple[str, ...] = ()
"""The benchmark's methods that cream-pl does not implement: none.

Compute of the two head methods (14x14 map, multiply-accumulates per image; counted in
:mod:`cream_pl.models.wsol_heads`): ACoL with the reference's fixed 1024-channel heads costs 8.4 GMAC on
EfficientNet-Lite0's 1280-channel map, about 11x the 0.76 GMAC backbone; with widths scaled to Lite0
(320 channels on the 320-channel map, replacing ``conv_head`` as the reference replaces VGG's ``conv6``)
about 0.75 GMAC, about 1x the backbone. SPG's extra heads scaled the same way cost about 0.54 GMAC, in
training only; neither adds anything at inference beyond ACoL's second branch."""

# Defaults of wsolevaluation's config.py (the values main.py trains with):
METHOD_DEFAULTS: dict[str, dict[str, float | int]] = {
    "cam": {},
    "has": {
        "grid_size": 4,  # config.py --has_grid_size (cell side in pixels: has.py steps its loops by it)
        "drop_rate": 0.5,  # config.py --has_drop_rate
    },
    "cutmix": {
        "beta": 1.0,  # config.py --cutmix_beta (λ ~ Beta(β, β); 1: uniform)
        "prob": 1.0,  # config.py --cutmix_prob (main.py mixes a batch when prob > U[0, 1))
    },
    "adl": {
        "drop_rate": 0.75,  # config.py --adl_drop_rate
        "threshold": 0.9,  # config.py --adl_threshold, γ (adl.py's own class default is 0.8; main.py passes 0.9)
    },
    "acol": {
        "threshold": 0.7,  # config.py --acol_threshold (erase where branch A's normalised map >= it)
    },
    "spg": {  # config.py --spg_threshold_{1,2,3}{h,l}: (high, low) of each guidance target
        "threshold_1h": 0.7, "threshold_1l": 0.01,  # B2's target, from the classifier's CAM
        "threshold_2h": 0.5, "threshold_2l": 0.05,  # B1's target, from sigmoid(B2)
        "threshold_3h": 0.7, "threshold_3l": 0.1,  # C's target, from the mean of sigmoid(B1), sigmoid(B2)
    },
}
METHOD_TRUNKS: dict[str, str] = {"acol": "acol", "spg": "spg"}
"""The backbone ``variant`` a method trains on (its reference network differs from ``VggCam`` & co.);
methods not listed use the backbone as it is."""


# ----------------------------------------------------------------------------- configuration
def _is_real(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _check_value(method: str, key: str, value: Any) -> None:
    if key == "grid_size":
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{method}.grid_size must be an int >= 1 (cell side in pixels), got {value!r}")
    elif key == "beta":
        if not _is_real(value) or value <= 0:
            raise ValueError(f"{method}.beta must be a number > 0, got {value!r}")
    elif not _is_real(value) or not 0.0 <= value <= 1.0:  # drop_rate, prob, threshold(s)
        raise ValueError(f"{method}.{key} must be a number in [0, 1], got {value!r}")


def _check_params(method: str, params: Mapping[str, Any]) -> None:
    for key, value in params.items():
        _check_value(method, key, value)
    for i in (1, 2, 3):  # SPG: a low threshold at or above its high one leaves no foreground
        high, low = params.get(f"threshold_{i}h"), params.get(f"threshold_{i}l")
        if high is not None and low is not None and not low < high:
            raise ValueError(f"{method}.threshold_{i}l must be below {method}.threshold_{i}h, got {low!r} >= {high!r}")


@dataclass(frozen=True)
class WSOLMethod:
    """A WSOL training method and its hyperparameters (reference defaults + checked overrides).

    Build it with :meth:`create`; ``params`` always holds every hyperparameter of the method.

    Example:
        >>> WSOLMethod.create("has", {"drop_rate": 0.25}).params
        {'grid_size': 4, 'drop_rate': 0.25}
        >>> WSOLMethod.create("cutmix", {"alpha": 1.0})
        Traceback (most recent call last):
        ...
        ValueError: wsol_method_args ['alpha'] are not hyperparameters of 'cutmix'; allowed: ['beta', 'prob']
    """

    name: str = "cam"
    params: dict[str, float | int] = field(default_factory=dict)

    @classmethod
    def create(cls, name: str = "cam", overrides: Mapping[str, Any] | None = None) -> WSOLMethod:
        if name not in METHOD_DEFAULTS:
            raise ValueError(f"wsol_method must be one of {list(WSOL_METHODS)}, got {name!r}")
        if overrides is not None and not isinstance(overrides, Mapping):
            raise ValueError(f"wsol_method_args must be a mapping or None, got {type(overrides).__name__}")
        defaults = METHOD_DEFAULTS[name]
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(defaults))
        if unknown:
            raise ValueError(f"wsol_method_args {unknown} are not hyperparameters of {name!r}; "
                             f"allowed: {sorted(defaults)}")
        params = {**defaults, **overrides}
        _check_params(name, params)
        return cls(name, params)


# ----------------------------------------------------------------------------- per-process streams
def rank_generator(seed: int, rank: int, epoch: int = 0) -> torch.Generator | None:
    """The random source of the WSOL draws of process ``rank`` in epoch ``epoch`` (CPU generator).

    ``None`` (the global torch RNG, seeded by ``seed_everything``) for rank 0, so one process, and rank
    0 of many, draw exactly as before; rank ``r > 0``: a generator seeded from ``(seed, r, epoch)``
    (``numpy.random.SeedSequence``, as Lightning seeds its data-loader workers), so no two processes
    share a stream and a resumed epoch draws what it drew the first time.

    Example:
        >>> rank_generator(0, 0) is None
        True
        >>> a, b = rank_generator(0, 1), rank_generator(0, 2)
        >>> bool(torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b)))
        False
    """
    if rank < 0 or epoch < 0:
        raise ValueError(f"rank and epoch must be >= 0, got {rank}, {epoch}")
    if rank == 0:
        return None
    state = np.random.SeedSequence([int(seed) & (2**63 - 1), int(rank), int(epoch)]).generate_state(1, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> 1))


# ----------------------------------------------------------------------------- HaS
def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")


def has_cells(
    batch_size: int, height: int, width: int, grid_size: int, drop_rate: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw the hidden cells: ``(B, ceil(H / g), ceil(W / g))`` booleans, each True with prob. ``drop_rate``.

    Drawn on the generator's device (CPU by default).
    """
    _check_value("has", "grid_size", grid_size)
    _check_value("has", "drop_rate", drop_rate)
    if batch_size < 0 or height < 1 or width < 1:
        raise ValueError(f"need batch_size >= 0 and height, width >= 1; got {batch_size}, {height}, {width}")
    shape = (batch_size, -(-height // grid_size), -(-width // grid_size))
    device = generator.device if generator is not None else "cpu"
    return torch.rand(shape, generator=generator, device=device) < drop_rate


def has_mask(cells: Tensor, grid_size: int, height: int, width: int) -> Tensor:
    """Pixel mask ``(B, H, W)`` of the hidden cells: pixel ``(y, x)`` is hidden iff cell ``(y // g, x // g)`` is."""
    _check_value("has", "grid_size", grid_size)
    if cells.ndim != 3 or cells.shape[1:] != (-(-height // grid_size), -(-width // grid_size)):
        raise ValueError(f"cells must be (B, ceil(H/g), ceil(W/g)) for H, W, g = {height}, {width}, {grid_size}; "
                         f"got {tuple(cells.shape)}")
    full = cells.repeat_interleave(grid_size, dim=1).repeat_interleave(grid_size, dim=2)
    return full[:, :height, :width]


def hide_and_seek(
    images: Tensor, grid_size: int, drop_rate: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Hide-and-Seek: ``(hidden images, cells)``; hidden cells are 0 in every channel (a new tensor).

    Args:
        images: normalised batch ``(B, C, H, W)`` (0 is the normalisation mean).
        grid_size: cell side in pixels.
        drop_rate: probability that a cell is hidden.
        generator: random source of the cells (``None``: the global torch RNG).
    """
    _check_images(images)
    b, _, h, w = images.shape
    cells = has_cells(b, h, w, grid_size, drop_rate, generator).to(images.device)
    hidden = has_mask(cells, grid_size, h, w)[:, None]
    return images.masked_fill(hidden, 0.0), cells


# ----------------------------------------------------------------------------- CutMix
class CutMixBatch(NamedTuple):
    """A mixed batch: ``images[:, :, top:bottom, left:right]`` come from ``images[permutation]``."""

    images: Tensor
    labels_a: Tensor  # the labels of the unmixed images
    labels_b: Tensor  # the labels of the pasted images, labels_a[permutation]
    lam: float  # 1 - pasted area / image area
    box: tuple[int, int, int, int]  # (top, left, bottom, right), half-open
    permutation: Tensor


def _beta(beta: float, generator: torch.Generator | None) -> float:
    """One ``Beta(β, β)`` draw, reproducible from a torch generator (numpy's sampler, seeded by it)."""
    device = generator.device if generator is not None else "cpu"
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device))
    return float(np.random.default_rng(seed).beta(beta, beta))


def cutmix_box(
    height: int, width: int, lam: float, generator: torch.Generator | None = None
) -> tuple[int, int, int, int]:
    """The pasted box ``(top, left, bottom, right)`` for a drawn ``λ`` (reference ``rand_bbox``'s rule).

    Side ``cut = floor(side · sqrt(1 - λ))`` per axis, centre drawn uniformly over the pixels, the box
    spans ``cut // 2`` on each side of the centre and is clipped to the image.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be >= 1, got {height}, {width}")
    ratio = math.sqrt(1.0 - lam)
    half_h, half_w = int(height * ratio) // 2, int(width * ratio) // 2
    device = generator.device if generator is not None else "cpu"
    cy = int(torch.randint(height, (1,), generator=generator, device=device))
    cx = int(torch.randint(width, (1,), generator=generator, device=device))
    top, bottom = max(cy - half_h, 0), min(cy + half_h, height)
    left, right = max(cx - half_w, 0), min(cx + half_w, width)
    return top, left, bottom, right


def cutmix(
    images: Tensor, labels: Tensor, beta: float, generator: torch.Generator | None = None
) -> CutMixBatch:
    """CutMix one batch: one box, pasted from a random permutation of the batch; λ from the pasted area.

    Args:
        images: ``(B, C, H, W)`` (not modified).
        labels: ``(B,)`` class ids.
        beta: ``λ ~ Beta(β, β)``.
        generator: random source (``None``: the global torch RNG).
    """
    _check_images(images)
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must be ({images.shape[0]},), got {tuple(labels.shape)}")
    _check_value("cutmix", "beta", beta)
    b, _, h, w = images.shape
    lam = _beta(beta, generator)
    device = generator.device if generator is not None else "cpu"
    perm = torch.randperm(b, generator=generator, device=device).to(images.device)
    top, left, bottom, right = cutmix_box(h, w, lam, generator)
    mixed = images.clone()
    mixed[:, :, top:bottom, left:right] = images[perm, :, top:bottom, left:right]
    lam = 1.0 - (bottom - top) * (right - left) / (h * w)
    return CutMixBatch(mixed, labels, labels[perm], lam, (top, left, bottom, right), perm)


def mixed_cross_entropy(logits: Tensor, labels_a: Tensor, labels_b: Tensor, lam: float) -> Tensor:
    """``λ · CE(logits, y_a) + (1 - λ) · CE(logits, y_b)`` (batch means), CutMix's loss."""
    return lam * F.cross_entropy(logits, labels_a) + (1.0 - lam) * F.cross_entropy(logits, labels_b)


def cutmix_keep_cells(
    box: tuple[int, int, int, int], image_size: tuple[int, int], feature_size: tuple[int, int],
    device: torch.device | str | None = None,
) -> Tensor:
    """``(h, w)`` booleans: feature cells whose pixel block (adaptive-pooling bins) misses the pasted box.

    These cells see only the unmixed image's pixels at their own position; CREAM's embedding update
    under CutMix uses them alone (see :class:`~cream_pl.models.WSOLClassifier`).
    """
    (top, left, bottom, right), (height, width) = box, image_size
    inside = torch.zeros(1, 1, height, width, device=device)
    inside[..., top:bottom, left:right] = 1.0
    return F.adaptive_max_pool2d(inside, tuple(feature_size))[0, 0] == 0


def masked_foreground_background_features(
    features: Tensor, cam: Tensor, keep: Tensor, tau: float = 0.2
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """CREAM's Eq. 3 on the ``keep`` cells only: the CAM is min-max normalised over them, and the mean
    features inside / outside ``norm(M) >= tau`` are taken over them.

    With every cell kept this equals
    ``foreground_background_features(features, normalize_maps(cam), tau)``.

    Args:
        features: ``(B, K, h, w)``; cam: raw ground-truth-class CAM ``(B, h, w)``; keep: ``(B, h, w)`` bool.

    Returns:
        ``(f_fg, f_bg, has_fg, has_bg)`` as :func:`~cream_pl.models.cream.foreground_background_features`.
    """
    if features.ndim != 4 or cam.shape != (features.shape[0], *features.shape[2:]) or keep.shape != cam.shape:
        raise ValueError(f"need features (B, K, h, w) and cam, keep (B, h, w); got {tuple(features.shape)}, "
                         f"{tuple(cam.shape)}, {tuple(keep.shape)}")
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be in [0, 1], got {tau}")
    keep = keep.bool()
    # cells outside the region take the region's minimum, so min-max over the map = over the region
    region_min = cam.masked_fill(~keep, math.inf).flatten(1).amin(1)
    region_min = torch.where(torch.isfinite(region_min), region_min, torch.zeros_like(region_min))
    norm = normalize_maps(torch.where(keep, cam, region_min[:, None, None]))
    fg = ((norm >= tau) & keep).to(features.dtype)
    bg = ((norm < tau) & keep).to(features.dtype)
    n_fg, n_bg = fg.flatten(1).sum(1), bg.flatten(1).sum(1)
    f_fg = torch.einsum("bkhw,bhw->bk", features, fg) / n_fg.clamp_min(1.0)[:, None]
    f_bg = torch.einsum("bkhw,bhw->bk", features, bg) / n_bg.clamp_min(1.0)[:, None]
    return f_fg, f_bg, n_fg > 0, n_bg > 0


# ----------------------------------------------------------------------------- ADL
def adl_attention(x: Tensor) -> Tensor:
    """Channel-mean self-attention ``(B, 1, h, w)`` of a feature map ``(B, K, h, w)``."""
    if x.ndim != 4:
        raise ValueError(f"ADL input must be (B, K, h, w), got shape {tuple(x.shape)}")
    return x.mean(dim=1, keepdim=True)


def adl_drop_mask(attention: Tensor, threshold: float) -> Tensor:
    """``1[A < γ · max A]`` per image (0 on the most activated cells), in the attention's dtype."""
    _check_value("adl", "threshold", threshold)
    peak = attention.flatten(1).amax(1).view(-1, 1, 1, 1)
    return (attention < threshold * peak).to(attention.dtype)


def adl_importance_map(attention: Tensor) -> Tensor:
    """``sigmoid(A)``: the map that highlights the most activated cells."""
    return torch.sigmoid(attention)


class ADL(nn.Module):
    """Attention-based Dropout Layer: identity in eval; in training ``x ·`` drop mask (prob. ``drop_rate``)
    or ``x ·`` importance map, one draw per call.

    Args:
        drop_rate: probability of the drop mask (reference default 0.75).
        threshold: γ of the drop mask (reference default 0.9).
        generator: random source of the draws (``None``: the global torch RNG).

    Attributes:
        last_choice: ``"drop"`` or ``"importance"`` after a training call, else ``None``.
        record_input: keep the input of each training call in ``last_input`` (the features before
            this layer; CREAM's ``before_adl`` embeddings learn from them, see
            :mod:`cream_pl.models.cream_variants`).
    """

    def __init__(self, drop_rate: float = 0.75, threshold: float = 0.9,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        _check_value("adl", "drop_rate", drop_rate)
        _check_value("adl", "threshold", threshold)
        self.drop_rate, self.threshold, self.generator = float(drop_rate), float(threshold), generator
        self.last_choice: str | None = None
        self.record_input = False
        self.last_input: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        if self.record_input:
            self.last_input = x
        attention = adl_attention(x)
        device = self.generator.device if self.generator is not None else "cpu"
        use_drop = float(torch.rand((), generator=self.generator, device=device)) < self.drop_rate
        self.last_choice = "drop" if use_drop else "importance"
        selected = adl_drop_mask(attention, self.threshold) if use_drop else adl_importance_map(attention)
        return x * selected.to(x.dtype)

    def hook(self, module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        """Forward-hook form: replaces ``module``'s output by ``self(output)``."""
        return self(output)

    def extra_repr(self) -> str:
        return f"drop_rate={self.drop_rate}, threshold={self.threshold}"


def attach_adl(
    backbone: nn.Module, drop_rate: float = 0.75, threshold: float = 0.9,
    positions: tuple[str, ...] | None = None, generator: torch.Generator | None = None,
) -> nn.ModuleDict:
    """Put an :class:`ADL` after each named submodule of ``backbone`` (forward hooks).

    Args:
        backbone: the network; ``positions`` defaults to its ``adl_positions`` (names of
            ``named_modules()``; ``""`` is the backbone's own output).
        drop_rate, threshold: ADL hyperparameters.
        positions: override of the positions.
        generator: random source shared by the layers.

    Returns:
        The layers, keyed by position (``"."`` -> ``"_"``, ``""`` -> ``"output"``). Keep them as a
        submodule of the model so that ``train()`` / ``eval()`` reach them; they have no parameters,
        so state dicts are the same as without ADL.
    """
    positions = tuple(getattr(backbone, "adl_positions", ()) if positions is None else positions)
    if not positions:
        raise ValueError(f"{type(backbone).__name__} defines no adl_positions; pass positions=(...) to attach ADL")
    modules = dict(backbone.named_modules())
    missing = [p for p in positions if p not in modules]
    if missing:
        raise ValueError(f"ADL positions {missing} are not submodules of {type(backbone).__name__}")
    layers = nn.ModuleDict()
    for pos in positions:  # the layers start in the backbone's train / eval mode
        layer = ADL(drop_rate, threshold, generator).train(backbone.training)
        modules[pos].register_forward_hook(layer.hook)
        layers[pos.replace(".", "_") or "output"] = layer
    return layers
