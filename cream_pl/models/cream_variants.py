"""Where CREAM runs on a WSOL method's network: the map's form, and the training features the embeddings learn from.

CREAM needs a linear map ``M_c = w_c · F`` on non-negative features ``F`` (``shared/spec/cream.md``).
CAM, HaS, CutMix, ADL and SPG have one (SPG's ``SPG_A4`` is a 1x1 conv on the final map, i.e. GAP + a
linear layer): the **linear** form. ACoL has two: each branch's 1x1 classifier on its last ReLU map,
and its localisation map is their max-fusion (:func:`~cream_pl.models.wsol_heads.acol_fuse`), which is
not of that form. Its features are ``cat([F_A, F_B])``; two placements:

- ``acol_branches`` (variant ``"branches"``): CREAM on each branch (Eq. 3 from that branch's own CAM on
  its own half of ``E_fg`` / ``E_bg``; EM and calibration per branch), then the branches' maps are fused
  as ACoL fuses its CAMs. Each branch is in CREAM's exact form.
- ``acol_fused`` (variant ``"fused"``): the fused map takes the CAM's place: Eq. 3's foreground, the
  calibration and the final sum use it, and EM clusters the concatenated features of both branches.

Under ADL the last ADL layer sits on the map Eq. 3 reads during training on ResNet50, InceptionV3 and
EfficientNet-Lite0 (``Backbone.adl_output_position``): on ``drop_rate`` (75 %) of the steps its
most-attended cells are zeroed and leave Eq. 3's foreground, while evaluation features have no ADL. Two
sources of the embeddings' training features:

- ``"before_adl"``: the input of that layer (Eq. 3 on the features without the last ADL's drop or
  importance map; the default);
- ``"after_adl"``: the map the classifier trains on (ADL applied).

On the embedded benchmark (``make demo-methods``) val put them at 70.00 (``before_adl``) and 70.17
(``after_adl``) MaxBoxAccV2, one val image at one IoU level apart: no evidence either way, so the
default stays ``before_adl``, whose training features are the ones evaluation sees (no ADL there);
ACoL's ``branches`` is val's pick (57.50 against 57.00). A search over ``variant`` uses val's pick.

Each model tracks the embeddings of every variant of its method during training (they never change the
gradients), so one run can choose the variant on val with ``cream_search={"variant": [...]}``;
``cream_variant`` sets the one the plain ``cream`` method uses.

Example:
    >>> [v.name for v in method_variants("acol")]
    ['branches', 'fused']
    >>> [v.name for v in method_variants("adl", adl_output_position="")]
    ['before_adl', 'after_adl']
    >>> [v.name for v in method_variants("adl", adl_output_position=None)]  # VGG16: last ADL before conv6
    ['after_adl']
    >>> method_variants("cam")[0].form
    'linear'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from cream_pl.models.cam import class_activation_maps, normalize_maps
from cream_pl.models.cream import cream_maps, foreground_background_features
from cream_pl.models.wsol_heads import acol_fuse
from cream_pl.models.wsol_methods import masked_foreground_background_features

__all__ = ["FORMS", "CreamVariant", "form_cam", "form_cream", "form_eq3", "method_variants"]

Eq3 = tuple[Tensor, Tensor, Tensor, Tensor]


@dataclass(frozen=True)
class CreamVariant:
    """A place for CREAM: ``name`` (``""`` for a method with one), map ``form`` (:data:`FORMS`), and the
    ``source`` of the embeddings' training features (``"features"``: the map evaluated, ``"before_adl"``)."""

    name: str
    form: str = "linear"
    source: str = "features"


_VARIANTS: dict[str, tuple[CreamVariant, ...]] = {
    "acol": (CreamVariant("branches", "acol_branches"), CreamVariant("fused", "acol_fused")),
    "adl": (CreamVariant("before_adl", "linear", "before_adl"), CreamVariant("after_adl", "linear", "features")),
}


def method_variants(method: str, adl_output_position: str | None = None) -> tuple[CreamVariant, ...]:
    """The CREAM variants of a WSOL method, the default first.

    ``before_adl`` exists only where the last ADL layer's output is the feature map
    (``adl_output_position`` not ``None``).
    """
    variants = _VARIANTS.get(method, (CreamVariant(""),))
    return tuple(v for v in variants if v.source != "before_adl" or adl_output_position is not None)


# ----------------------------------------------------------------------------- the forms
def _halves(features: Tensor, weights: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    width = weights[0].shape[1]
    if len(weights) != 2 or features.shape[1] != 2 * width:
        raise ValueError(f"ACoL's features must be cat([F_A, F_B]) with 2 x {width} channels and two classifier "
                         f"weights; got {features.shape[1]} channels and {len(weights)} weight(s)")
    return features[:, :width], features[:, width:]


class _Linear:
    """CAM's form: ``M_c = w_c · F``."""

    def cam(self, features: Tensor, weights: Sequence[Tensor], class_ids: Tensor) -> Tensor:
        return class_activation_maps(features, weights[0], class_ids)

    def eq3(self, features: Tensor, weights: Sequence[Tensor], class_ids: Tensor, tau: float,
            keep: Tensor | None = None) -> Eq3:
        raw = self.cam(features, weights, class_ids)
        if keep is None:
            return foreground_background_features(features, normalize_maps(raw), tau)
        return masked_foreground_background_features(features, raw, keep, tau)

    def cream(self, features: Tensor, weights: Sequence[Tensor], class_ids: Tensor, e_fg: Tensor, e_bg: Tensor,
              **kw: Any) -> Tensor:
        return cream_maps(features, self.cam(features, weights, class_ids), class_ids, e_fg, e_bg, **kw)

    def cream_grid(self, features: Tensor, weights: Sequence[Tensor], class_ids: Tensor,
                   embeddings: Sequence[tuple[Tensor, Tensor]], candidates: Sequence[Any], tau: float,
                   calibration: bool) -> list[Tensor]:
        """:meth:`cream` of every val-search candidate at once (:func:`~cream_pl.models.cream_search.candidate_maps`:
        the EM of all candidates as one batch); ``embeddings``: ``(E_fg, E_bg)`` per tracked λ."""
        from cream_pl.models.cream_search import candidate_maps

        return candidate_maps(features, self.cam(features, weights, class_ids), class_ids, embeddings, candidates,
                              tau, calibration)


class _ACoLFused(_Linear):
    """ACoL's max-fused map in the CAM's place, EM on ``cat([F_A, F_B])``."""

    def cam(self, features: Tensor, weights: Sequence[Tensor], class_ids: Tensor) -> Tensor:
        fa, fb = _halves(features, weights)
        return acol_fuse(class_activation_maps(fa, weights[0], class_ids), class_activation_maps(fb, weights[1], class_ids))

    def eq3(self, features: Tensor, weights: Sequence[Tensor], class_ids: Tensor, tau: float,
            keep: Tensor | None = None) -> Eq3:
        if keep is not None:
            raise ValueError("ACoL's CREAM has no masked (CutMix) update")
        return foreground_background_features(features, normalize_maps(self.cam(features, weights, class_ids)), tau)


class _ACoLBranches(_ACoLFused):
    """CREAM on each ACoL branch (its CAM, its half of the embeddings), then ACoL's fusion of the two maps."""

    def eq3(self, features: Tensor, weights: Sequence[Tensor], class_ids: Tensor, tau: float,
            keep: Tensor | None = None) -> Eq3:
        if keep is not None:
            raise ValueError("ACoL's CREAM has no masked (CutMix) update")
        parts = [foreground_background_features(f, normalize_maps(class_activation_maps(f, w, class_ids)), tau)
                 for f, w in zip(_halves(features, weights), weights)]
        (fa, ba, hfa, hba), (fb, bb, hfb, hbb) = parts
        return torch.cat([fa, fb], 1), torch.cat([ba, bb], 1), hfa & hfb, hba & hbb

    def cream(self, features: Tensor, weights: Sequence[Tensor], class_ids: Tensor, e_fg: Tensor, e_bg: Tensor,
              **kw: Any) -> Tensor:
        halves, width = _halves(features, weights), weights[0].shape[1]
        maps = [cream_maps(f, class_activation_maps(f, w, class_ids), class_ids, e_fg[:, sl], e_bg[:, sl], **kw)
                for f, w, sl in zip(halves, weights, (slice(0, width), slice(width, 2 * width)))]
        return acol_fuse(maps[0], maps[1])

    def cream_grid(self, features: Tensor, weights: Sequence[Tensor], class_ids: Tensor,
                   embeddings: Sequence[tuple[Tensor, Tensor]], candidates: Sequence[Any], tau: float,
                   calibration: bool) -> list[Tensor]:
        from cream_pl.models.cream_search import candidate_maps

        halves, width = _halves(features, weights), weights[0].shape[1]
        parts = [candidate_maps(f, class_activation_maps(f, w, class_ids), class_ids,
                                [(fg[:, sl], bg[:, sl]) for fg, bg in embeddings], candidates, tau, calibration)
                 for f, w, sl in zip(halves, weights, (slice(0, width), slice(width, 2 * width)))]
        return [acol_fuse(a, b) for a, b in zip(*parts)]


FORMS: dict[str, _Linear] = {"linear": _Linear(), "acol_fused": _ACoLFused(), "acol_branches": _ACoLBranches()}
"""The map forms by name: ``cam`` (raw map), ``eq3`` (Eq. 3's mean features and non-empty flags), ``cream``."""


def form_cam(form: str, features: Tensor, weights: Sequence[Tensor], class_ids: Tensor) -> Tensor:
    """The method's map of ``class_ids`` before normalisation, ``(B, h, w)``."""
    return FORMS[form].cam(features, weights, class_ids)


def form_eq3(form: str, features: Tensor, weights: Sequence[Tensor], class_ids: Tensor, tau: float,
             keep: Tensor | None = None) -> Eq3:
    """Eq. 3 in the form's place: ``(f_fg, f_bg, has_fg, has_bg)``; ``keep`` restricts it to those cells."""
    return FORMS[form].eq3(features, weights, class_ids, tau, keep)


def form_cream(form: str, features: Tensor, weights: Sequence[Tensor], class_ids: Tensor, e_fg: Tensor, e_bg: Tensor,
               **kw: Any) -> Tensor:
    """CREAM maps ``(B, h, w)`` in the form's place (``kw``: :func:`~cream_pl.models.cream.cream_maps`'s options)."""
    return FORMS[form].cream(features, weights, class_ids, e_fg, e_bg, **kw)
