"""CREAM (Class RE-Activation Mapping, CVPR 2022) as pure, batched tensor functions.

Everything here takes ``(features, CAM, class ids, embeddings)`` and nothing else, so any
CAM-producing model can use it (the paper's "CREAM as a plug-in"). Equations follow
``shared/spec/cream.md``:

- training (Eq. 3-4): :func:`foreground_background_features` then :func:`momentum_update` of
  the class-specific context embeddings ``E_fg, E_bg`` (``(C, K)`` buffers);
- inference (Eq. 5-9): :func:`cream_em`, a two-component von Mises-Fisher-like soft
  clustering of the feature vectors initialised from the embeddings of the class;
- calibration and final map (Eq. 10-12): :func:`calibrate`, :func:`cream_maps`.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> feats = torch.rand(2, 16, 7, 7, generator=g)
    >>> cam = torch.rand(2, 7, 7, generator=g)
    >>> e_fg, e_bg = torch.rand(4, 16, generator=g), torch.rand(4, 16, generator=g)
    >>> cream_maps(feats, cam, torch.tensor([1, 2]), e_fg, e_bg).shape
    torch.Size([2, 7, 7])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from cream_pl.models.cam import normalize_maps

__all__ = [
    "FeatureNorm",
    "foreground_background_features",
    "momentum_update",
    "cream_em",
    "cream_em_runs",
    "calibrate",
    "cream_maps",
]

FeatureNorm = Literal["raw", "l2"]
_EPS = 1e-12


def _check_pair(features: Tensor, maps: Tensor) -> None:
    if features.ndim != 4:
        raise ValueError(f"features must be (B, K, h, w), got shape {tuple(features.shape)}")
    b, _, h, w = features.shape
    if maps.shape != (b, h, w):
        raise ValueError(f"maps must be (B, h, w) = {(b, h, w)}, got {tuple(maps.shape)}")


def foreground_background_features(
    features: Tensor, cam_normalized: Tensor, tau: float = 0.2
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Mean feature inside and outside the CAM foreground ``B = 1[norm(M_c) >= tau]`` (Eq. 3).

    Args:
        features: ``(B, K, h, w)`` features (detach them first: no gradient flows into embeddings).
        cam_normalized: ``(B, h, w)`` min-max normalised CAM of the ground-truth class.
        tau: foreground threshold (the CAM paper's 20 % rule).

    Returns:
        ``(f_fg, f_bg, has_fg, has_bg)``: ``(B, K)`` mean vectors and ``(B,)`` booleans that say
        whether the region was non-empty (an empty region yields a zero vector that must not be used).
    """
    _check_pair(features, cam_normalized)
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be in [0, 1], got {tau}")
    fg = (cam_normalized >= tau).to(features.dtype)
    bg = 1.0 - fg
    n_fg = fg.flatten(1).sum(1)
    n_bg = bg.flatten(1).sum(1)
    f_fg = torch.einsum("bkhw,bhw->bk", features, fg) / n_fg.clamp_min(1.0)[:, None]
    f_bg = torch.einsum("bkhw,bhw->bk", features, bg) / n_bg.clamp_min(1.0)[:, None]
    return f_fg, f_bg, n_fg > 0, n_bg > 0


def momentum_update(
    embeddings: Tensor, class_ids: Tensor, values: Tensor, lam: float, valid: Tensor | None = None
) -> Tensor:
    """Apply ``E[c] <- lam * E[c] + (1 - lam) * v`` for every sample, in order (Eq. 4).

    Vectorised with the same result as the sequential loop: ``m`` valid samples of class ``c``,
    in order, give ``E[c] <- lam^m E[c] + (1 - lam) * sum_i lam^(m-1-i) v_i``.

    Args:
        embeddings: ``(C, K)`` current embeddings (not modified).
        class_ids: ``(N,)`` class of each sample, in the order the samples are applied.
        values: ``(N, K)`` vectors to blend in.
        lam: momentum ``lambda`` in [0, 1]; 1.0 keeps the (random) initial embeddings.
        valid: optional ``(N,)`` boolean mask; invalid samples are skipped.

    Returns:
        ``(C, K)`` updated embeddings.

    Example:
        >>> e = torch.zeros(2, 1)
        >>> momentum_update(e, torch.tensor([0, 0]), torch.tensor([[1.0], [1.0]]), 0.5)
        tensor([[0.7500],
                [0.0000]])
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must be in [0, 1], got {lam}")
    if embeddings.ndim != 2 or values.ndim != 2 or values.shape[1] != embeddings.shape[1]:
        raise ValueError(
            f"embeddings must be (C, K) and values (N, K); got {tuple(embeddings.shape)} and {tuple(values.shape)}"
        )
    if class_ids.shape != (values.shape[0],):
        raise ValueError(f"class_ids must be ({values.shape[0]},), got {tuple(class_ids.shape)}")
    num_classes = embeddings.shape[0]
    if class_ids.numel() and (class_ids.min() < 0 or class_ids.max() >= num_classes):
        raise ValueError(f"class ids must be in [0, {num_classes}), got {class_ids.tolist()}")
    if valid is None:
        valid = torch.ones_like(class_ids, dtype=torch.bool)
    dtype = torch.float64
    onehot = F.one_hot(class_ids, num_classes).to(dtype) * valid[:, None].to(dtype)  # (N, C)
    counts = onehot.sum(0)  # m_c
    rank = (onehot.cumsum(0) - 1.0).mul(onehot).sum(1)  # position of each sample within its class
    m = counts[class_ids]
    lam_t = torch.tensor(lam, dtype=dtype, device=embeddings.device)
    # invalid samples get exponent 0, not m - 1 (= -1 for a class with no valid sample: 0^-1 * 0 = NaN at lam = 0)
    exponent = torch.where(valid, m - 1.0 - rank, torch.zeros_like(m))
    weights = (1.0 - lam_t) * lam_t.pow(exponent) * valid.to(dtype)  # (N,)
    out = embeddings.to(dtype) * lam_t.pow(counts)[:, None]
    out = out.index_add(0, class_ids, values.to(dtype) * weights[:, None])
    return out.to(embeddings.dtype)


def cream_em(
    features: Tensor,
    mu_fg: Tensor,
    mu_bg: Tensor,
    kappa: float = 8.0,
    iterations: int = 2,
    feature_norm: FeatureNorm = "raw",
) -> Tensor:
    """EM soft clustering of the feature vectors into foreground / background (Eq. 5-9).

    Per pixel ``p(f | k) ∝ exp(kappa * cos(f, mu_k))``; E-step as a softmax over the two logits
    ``log pi_k + kappa cos(f, mu_k)``; M-step (skipped after the last E-step) recomputes
    ``mu_k`` as the ``z_k``-weighted mean of the features and ``pi_k`` as the mean of ``z_k``.

    Args:
        features: ``(B, K, h, w)``.
        mu_fg: ``(B, K)`` initial foreground means (``E_fg[c]`` of each image's class).
        mu_bg: ``(B, K)`` initial background means.
        kappa: concentration.
        iterations: number of E-steps ``T`` (>= 1).
        feature_norm: ``"raw"`` (default) weighted mean of raw features in the M-step, or ``"l2"``
            of L2-normalised features (a [choice] point of the spec).

    Returns:
        ``(B, h, w)`` foreground responsibilities ``z_fg`` in [0, 1].
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1 for EM, got {iterations} (T = 0 means plain CAM)")
    if feature_norm not in ("raw", "l2"):
        raise ValueError(f"feature_norm must be 'raw' or 'l2', got {feature_norm!r}")
    b, k, h, w = features.shape
    if mu_fg.shape != (b, k) or mu_bg.shape != (b, k):
        raise ValueError(f"mu_fg / mu_bg must be {(b, k)}, got {tuple(mu_fg.shape)} / {tuple(mu_bg.shape)}")
    feats = features.flatten(2).transpose(1, 2)  # (B, N, K)
    feats_unit = F.normalize(feats, dim=-1, eps=_EPS)
    feats_m = feats if feature_norm == "raw" else feats_unit
    mu = torch.stack([mu_fg, mu_bg], dim=1).to(feats.dtype)  # (B, 2, K)
    log_pi = torch.full((b, 2), -torch.log(torch.tensor(2.0)).item(), dtype=feats.dtype, device=feats.device)
    z = None
    for t in range(iterations):
        cos = torch.einsum("bnk,bjk->bnj", feats_unit, F.normalize(mu, dim=-1, eps=_EPS))  # (B, N, 2)
        z = torch.softmax(log_pi[:, None, :] + kappa * cos, dim=-1)  # E-step
        if t == iterations - 1:
            break
        mass = z.sum(1)  # (B, 2)  M-step
        mu = torch.einsum("bnj,bnk->bjk", z, feats_m) / mass.clamp_min(_EPS)[..., None]
        log_pi = torch.log((mass / z.shape[1]).clamp_min(_EPS))
    assert z is not None
    return z[..., 0].reshape(b, h, w)


def cream_em_runs(
    features: Tensor,
    mu_fg: Tensor,
    mu_bg: Tensor,
    kappa: Tensor,
    iterations: tuple[int, ...] | list[int],
    feature_norm: Sequence[FeatureNorm],
) -> dict[int, Tensor]:
    """:func:`cream_em` for ``R`` runs (initial means, κ, feature norm) and several ``T`` at once.

    The val search (:mod:`cream_pl.models.cream_search`) scores many (λ, κ, T, feature norm) on one
    batch: the runs share the normalised features, each EM step of all runs is one batched matrix
    product (two: one per feature norm in the M-step), and the run with the largest ``T`` passes
    through every shorter ``T`` (the same E-steps), so T = 1, 2, 3 cost the three steps of T = 3.
    The two-component softmax is written as a sigmoid of the logit difference. Each run's
    responsibilities equal :func:`cream_em`'s up to float rounding.

    Args:
        features: ``(B, K, h, w)``.
        mu_fg: ``(R, B, K)`` initial foreground means of each run.
        mu_bg: ``(R, B, K)`` initial background means.
        kappa: ``(R,)`` concentration of each run.
        iterations: the ``T`` (>= 1) to return.
        feature_norm: ``R`` M-step feature norms, ``"raw"`` or ``"l2"``.

    Returns:
        ``{T: (R, B, h, w) z_fg}``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> f, a, b = torch.rand(2, 4, 3, 3, generator=g), torch.rand(1, 2, 4, generator=g), torch.rand(1, 2, 4, generator=g)
        >>> z = cream_em_runs(f, a, b, torch.tensor([8.0]), (1, 2), ["raw"])
        >>> torch.allclose(z[2][0], cream_em(f, a[0], b[0], 8.0, 2), atol=1e-6)
        True
    """
    wanted = sorted({int(t) for t in iterations})
    if not wanted or wanted[0] < 1:
        raise ValueError(f"iterations must be >= 1 for EM, got {list(iterations)} (T = 0 means plain CAM)")
    b, k, h, w = features.shape
    r = mu_fg.shape[0]
    norms = list(feature_norm)
    if mu_fg.shape != (r, b, k) or mu_bg.shape != (r, b, k) or kappa.shape != (r,) or len(norms) != r:
        raise ValueError(f"mu_fg / mu_bg must be (R, {b}, {k}), kappa (R,) and feature_norm R names, got "
                         f"{tuple(mu_fg.shape)}, {tuple(mu_bg.shape)}, {tuple(kappa.shape)}, {len(norms)}")
    bad = sorted(set(norms) - {"raw", "l2"})
    if bad:
        raise ValueError(f"feature_norm must be 'raw' or 'l2', got {bad}")
    feats = features.flatten(2).transpose(1, 2).contiguous()  # (B, N, K)
    feats_unit = F.normalize(feats, dim=-1, eps=_EPS)
    n = feats.shape[1]
    mu = torch.stack([mu_fg, mu_bg], dim=2).to(feats.dtype).permute(1, 0, 2, 3).reshape(b, 2 * r, k)  # (B, 2R, K)
    log_pi = torch.full((b, r, 2), -torch.log(torch.tensor(2.0)).item(), dtype=feats.dtype, device=feats.device)
    scale = kappa.to(feats)[None, None, :]
    groups = [(torch.tensor([i for i, m in enumerate(norms) if m == name], device=feats.device), source)
              for name, source in (("raw", feats), ("l2", feats_unit)) if name in norms]
    out: dict[int, Tensor] = {}
    for t in range(wanted[-1]):
        cos = torch.bmm(feats_unit, F.normalize(mu, dim=-1, eps=_EPS).transpose(1, 2)).view(b, n, r, 2)
        logit = (log_pi[:, None, :, 0] - log_pi[:, None, :, 1]) + scale * (cos[..., 0] - cos[..., 1])
        z_fg = torch.sigmoid(logit)  # E-step, (B, N, R): softmax over (fg, bg)
        if t + 1 in wanted:
            out[t + 1] = z_fg.permute(2, 0, 1).reshape(r, b, h, w)
        if t + 1 == wanted[-1]:
            break
        z = torch.stack([z_fg, 1.0 - z_fg], dim=-1)  # (B, N, R, 2)  M-step
        mass = z.sum(1)  # (B, R, 2)
        mu = torch.empty_like(mu).view(b, r, 2, k)
        for index, source in groups:
            zi = z.index_select(2, index).reshape(b, n, 2 * len(index))
            mu[:, index] = torch.bmm(zi.transpose(1, 2), source).view(b, len(index), 2, k)
        mu = (mu / mass[..., None].clamp_min(_EPS)).reshape(b, 2 * r, k)
        log_pi = torch.log((mass / n).clamp_min(_EPS))
    return out


def calibrate(z_fg: Tensor, cam_normalized: Tensor, tau: float = 0.2) -> Tensor:
    """Pick the EM component that agrees with the CAM foreground (Eq. 10-11).

    ``s_fg = mean_B z_fg`` and ``s_bg = mean_B (1 - z_fg)`` over ``B = 1[norm(M_c) >= tau]``;
    returns ``z_fg`` where ``s_fg >= s_bg`` and ``1 - z_fg`` otherwise.
    """
    if z_fg.shape != cam_normalized.shape:
        raise ValueError(f"z_fg {tuple(z_fg.shape)} and CAM {tuple(cam_normalized.shape)} must match")
    fg = (cam_normalized >= tau).to(z_fg.dtype).flatten(1)
    n = fg.sum(1).clamp_min(1.0)
    s_fg = (z_fg.flatten(1) * fg).sum(1) / n
    s_bg = ((1.0 - z_fg).flatten(1) * fg).sum(1) / n
    keep = (s_fg >= s_bg)[:, None, None]
    return torch.where(keep, z_fg, 1.0 - z_fg)


def cream_maps(
    features: Tensor,
    cam: Tensor,
    class_ids: Tensor,
    emb_fg: Tensor,
    emb_bg: Tensor,
    iterations: int = 2,
    kappa: float = 8.0,
    tau: float = 0.2,
    feature_norm: FeatureNorm = "raw",
    calibration: bool = True,
) -> Tensor:
    """CREAM re-activation maps ``M_final = M_hat + norm(M_c)`` (Eq. 12), at feature resolution.

    Args:
        features: ``(B, K, h, w)`` features that produced the CAM.
        cam: ``(B, h, w)`` raw CAM of ``class_ids``.
        class_ids: ``(B,)`` the class whose embeddings initialise EM (GT class for GT-known,
            predicted class for Top-1 Loc).
        emb_fg: ``(C, K)`` foreground context embeddings.
        emb_bg: ``(C, K)`` background context embeddings.
        iterations: EM iterations ``T``; ``0`` returns the normalised CAM (plain CAM).
        kappa: concentration of the EM base model.
        tau: CAM foreground threshold used by the calibration.
        feature_norm: M-step features, ``"raw"`` or ``"l2"``.
        calibration: apply Eq. 10-11; without it ``M_hat = z_fg``.

    Returns:
        ``(B, h, w)`` maps, not normalised (normalise after upsampling, as the protocol does).
    """
    _check_pair(features, cam)
    cam_n = normalize_maps(cam.to(features.dtype))
    if iterations == 0:
        return cam_n
    z_fg = cream_em(features, emb_fg[class_ids], emb_bg[class_ids], kappa, iterations, feature_norm)
    m_hat = calibrate(z_fg, cam_n, tau) if calibration else z_fg
    return m_hat + cam_n
