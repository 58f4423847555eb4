"""KD-CI-CAM (Shao et al., arXiv 2301.01060): two-teacher causal knowledge distillation losses.

A CI-CAM student learns from two frozen CI-CAM teachers of the same architecture (spec
``kd_ci_cam.md`` §3.2). Every training sample is routed to one of three cases:

* route 0: cross-entropy only;
* route 1: + logit distillation from the *classification* teacher (``KL`` at temperature ``T_cls``);
* route 2: + CAM distillation from the *localisation* teacher
  (``MSE(σ(CAM_s / T_loc), σ(CAM_t / T_loc))`` over all classes and positions).

``L = (1 - α) CE(z_down, y)`` over all samples ``+ α KD_cls`` over route 1 ``+ α λ KD_loc`` over
route 2, with ``α = 0.8`` and ``T = 15`` (CUB) / ``1.1`` (ILSVRC) in the official runs.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> routes = route_samples(4, g)
    >>> idx_cls, idx_loc = route_indices(routes)
    >>> logits_s, cams_s = torch.randn(4, 3), torch.randn(4, 3, 2, 2)
    >>> total, parts = kd_student_loss(
    ...     logits_s, cams_s, torch.tensor([0, 1, 2, 0]), routes,
    ...     teacher_cls_logits=torch.randn(len(idx_cls), 3),
    ...     teacher_loc_cams=torch.randn(len(idx_loc), 3, 2, 2),
    ... )
    >>> sorted(parts)
    ['ce', 'kd_cls', 'kd_loc', 'n_cls', 'n_loc']
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "KDLogitVariant",
    "RouteMode",
    "kd_cam_loss",
    "kd_logit_loss",
    "kd_student_loss",
    "route_indices",
    "route_samples",
]

KDLogitVariant = Literal["standard", "official"]
RouteMode = Literal["random", "cls", "loc", "none"]
_VARIANTS = ("standard", "official")
_ROUTE_MODES = ("random", "cls", "loc", "none")


def _check_temperature(T: float, name: str = "T") -> None:
    if not math.isfinite(T) or T <= 0:
        raise ValueError(f"{name} must be a finite value > 0, got {T}")


def _zero_like_graph(x: Tensor) -> Tensor:
    """A zero scalar that stays attached to ``x``'s graph (for empty subsets)."""
    return x.sum() * 0.0


def kd_logit_loss(
    student_logits: Tensor, teacher_logits: Tensor, T: float, variant: KDLogitVariant = "standard"
) -> Tensor:
    """Logit distillation loss at temperature ``T`` (batch mean); the teacher is detached.

    * ``"standard"`` (Hinton et al.): ``T² · KL(softmax(t/T) ‖ softmax(s/T))``, i.e.
      ``F.kl_div(log_softmax(s/T), log_softmax(t/T), log_target=True, reduction="batchmean") · T²``.
      It is ``>= 0`` and 0 only when the two distributions agree; the ``T²`` keeps the gradient
      scale roughly independent of ``T``.
    * ``"official"``: what the KD-CI-CAM code computes,
      ``nn.KLDivLoss(reduction="batchmean")(softmax(s/T), softmax(t/T))`` — *probabilities* given
      where log-probabilities are expected, and no ``T²``. Its value is
      ``Σ p_t (log p_t - p_s) / B = -⟨p_t, p_s⟩ + const`` (spec §3.2): it can be negative, is not
      0 for identical logits, and its gradient is weak (at ``T = 15`` the probabilities are almost
      uniform), though it still pulls the student towards the teacher. The official numbers were
      produced with it.

    Args:
        student_logits: ``(B, C)``.
        teacher_logits: ``(B, C)``.
        T: temperature ``> 0``.
        variant: ``"standard"`` or ``"official"``.

    Example:
        >>> z = torch.tensor([[1.0, 2.0, 0.5]])
        >>> float(kd_logit_loss(z, z, T=4.0))
        0.0
    """
    if variant not in _VARIANTS:
        raise ValueError(f"variant must be one of {_VARIANTS}, got {variant!r}")
    _check_temperature(T)
    if student_logits.ndim != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits must both be (B, C) of the same shape, "
            f"got {tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if student_logits.shape[0] == 0:
        return _zero_like_graph(student_logits)
    s = student_logits.float() / T
    t = teacher_logits.detach().float() / T
    if variant == "standard":
        kl = F.kl_div(
            F.log_softmax(s, dim=1), F.log_softmax(t, dim=1), reduction="batchmean", log_target=True
        )
        return kl * (T * T)
    return F.kl_div(F.softmax(s, dim=1), F.softmax(t, dim=1), reduction="batchmean")


def kd_cam_loss(student_cams: Tensor, teacher_cams: Tensor, T: float) -> Tensor:
    """CAM distillation ``MSE(σ(CAM_s / T), σ(CAM_t / T))``, mean over all ``B·C·h·w`` entries.

    Raw (unnormalised) down-branch CAMs of all classes, as the official ``kd_fe_loss=1``; the
    teacher is detached. Note that ``σ(x/T) ≈ 1/2 + x/(4T)`` for small ``x``: at ``T = 15`` this is
    roughly ``MSE(CAM_s/60, CAM_t/60)`` — a strongly flattened, almost linear target.

    Args:
        student_cams: ``(B, C, h, w)``.
        teacher_cams: ``(B, C, h, w)``.
        T: temperature ``> 0``.

    Example:
        >>> float(kd_cam_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2), T=15.0))
        0.0
    """
    _check_temperature(T)
    if student_cams.ndim != 4 or student_cams.shape != teacher_cams.shape:
        raise ValueError(
            f"student and teacher CAMs must both be (B, C, h, w) of the same shape, "
            f"got {tuple(student_cams.shape)} and {tuple(teacher_cams.shape)}"
        )
    if student_cams.shape[0] == 0:
        return _zero_like_graph(student_cams)
    return F.mse_loss(
        torch.sigmoid(student_cams.float() / T), torch.sigmoid(teacher_cams.detach().float() / T)
    )


def route_samples(
    batch_size: int,
    generator: torch.Generator | None = None,
    mode: RouteMode = "random",
    device: torch.device | str | None = None,
) -> Tensor:
    """Per-sample KD route: 0 = CE only, 1 = cls-teacher KD, 2 = loc-teacher KD.

    ``"random"``: uniform over ``{0, 1, 2}`` (official ``distillation="random"``); ``"cls"``: uniform
    over ``{0, 1}``; ``"loc"``: uniform over ``{0, 2}``; ``"none"``: all 0. The official code draws
    the route in the dataset so that each route gets its own augmentation; drawing it here (one
    augmentation for all routes) is the cheaper approximation. Under DDP give each rank its own
    generator seed, or the ranks route their local batches identically.

    Args:
        batch_size: ``B``.
        generator: random generator (``None``: the global RNG). The routes are drawn on the
            generator's device and then moved to ``device``.
        mode: routing mode.
        device: device of the result (default: the generator's device).

    Returns:
        ``(B,)`` int64 routes.

    Example:
        >>> route_samples(6, torch.Generator().manual_seed(0), mode="loc").unique().tolist()
        [0, 2]
    """
    if batch_size < 0:
        raise ValueError(f"batch_size must be >= 0, got {batch_size}")
    if mode not in _ROUTE_MODES:
        raise ValueError(f"mode must be one of {_ROUTE_MODES}, got {mode!r}")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    if mode == "none":
        routes = torch.zeros(batch_size, dtype=torch.long, device=gen_device)
    elif mode == "random":
        routes = torch.randint(0, 3, (batch_size,), generator=generator, device=gen_device)
    else:
        routes = torch.randint(0, 2, (batch_size,), generator=generator, device=gen_device)
        if mode == "loc":
            routes = routes * 2
    return routes if device is None else routes.to(device)


def route_indices(routes: Tensor) -> tuple[Tensor, Tensor]:
    """``(idx_cls, idx_loc)``: batch indices with route 1 and route 2, in increasing order.

    The caller runs the cls teacher on ``images[idx_cls]`` and the loc teacher on
    ``images[idx_loc]`` (under ``torch.no_grad()``) and passes those outputs, in this order, to
    :func:`kd_student_loss`.

    Example:
        >>> route_indices(torch.tensor([2, 0, 1, 2]))
        (tensor([2]), tensor([0, 3]))
    """
    if routes.ndim != 1:
        raise ValueError(f"routes must be (B,), got shape {tuple(routes.shape)}")
    return (routes == 1).nonzero().flatten(), (routes == 2).nonzero().flatten()


def kd_student_loss(
    logits_s: Tensor,
    cams_s: Tensor | None,
    labels: Tensor,
    routes: Tensor,
    teacher_cls_logits: Tensor | None,
    teacher_loc_cams: Tensor | None,
    alpha: float = 0.8,
    T_cls: float = 15.0,
    T_loc: float = 15.0,
    variant: KDLogitVariant = "standard",
    loc_weight: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """KD-CI-CAM student loss ``(1-α) CE + α KD_cls[route 1] + α λ KD_loc[route 2]``.

    The teachers are evaluated only on their subsets, so their outputs come *per subset*: row ``j``
    of ``teacher_cls_logits`` belongs to sample ``route_indices(routes)[0][j]`` and row ``j`` of
    ``teacher_loc_cams`` to ``route_indices(routes)[1][j]``. ``KD_cls`` is averaged over the route-1
    samples (``batchmean`` of that subset) and ``KD_loc`` over all entries of the route-2 CAMs, as
    in the official code. An empty subset contributes 0 and may pass ``None`` for its teacher.

    Args:
        logits_s: ``(B, C)`` student down-branch logits.
        cams_s: student down-branch CAMs of all classes, either for the whole batch
            ``(B, C, h, w)`` or only for the route-2 samples ``(n_loc, C, h, w)`` (the two coincide
            when every sample has route 2); ``None`` if no sample has route 2.
        labels: ``(B,)`` ground-truth classes.
        routes: ``(B,)`` routes from :func:`route_samples` (values in ``{0, 1, 2}``).
        teacher_cls_logits: ``(n_cls, C)`` cls-teacher logits of the route-1 samples.
        teacher_loc_cams: ``(n_loc, C, h, w)`` loc-teacher down-branch CAMs of the route-2 samples.
        alpha: ``α`` in ``[0, 1]`` (official 0.8; 0 = plain CE, the "no KD" baseline).
        T_cls: logit-KD temperature.
        T_loc: CAM-KD temperature.
        variant: logit-KD form, see :func:`kd_logit_loss` (``"official"`` reproduces the paper code).
        loc_weight: ``λ`` on the CAM term (official ``kd_fe_times`` = 1).

    Returns:
        ``(total, parts)``; ``parts`` holds the detached unweighted terms ``ce``, ``kd_cls``,
        ``kd_loc`` (0 for an empty subset) and the subset sizes ``n_cls``, ``n_loc``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not math.isfinite(loc_weight) or loc_weight < 0:
        raise ValueError(f"loc_weight must be a finite value >= 0, got {loc_weight}")
    _check_temperature(T_cls, "T_cls")
    _check_temperature(T_loc, "T_loc")
    if logits_s.ndim != 2:
        raise ValueError(f"logits_s must be (B, C), got shape {tuple(logits_s.shape)}")
    b, c = logits_s.shape
    if labels.shape != (b,) or routes.shape != (b,):
        raise ValueError(
            f"labels and routes must be ({b},), got {tuple(labels.shape)} and {tuple(routes.shape)}"
        )
    if b and (int(routes.min()) < 0 or int(routes.max()) > 2):
        raise ValueError(f"routes must take values in {{0, 1, 2}}, got {routes.unique().tolist()}")
    idx_cls, idx_loc = route_indices(routes.to(logits_s.device))
    n_cls, n_loc = int(idx_cls.numel()), int(idx_loc.numel())

    ce = F.cross_entropy(logits_s, labels)
    kd_cls = _zero_like_graph(logits_s)
    if n_cls:
        if teacher_cls_logits is None or teacher_cls_logits.shape != (n_cls, c):
            got = None if teacher_cls_logits is None else tuple(teacher_cls_logits.shape)
            raise ValueError(
                f"teacher_cls_logits must be ({n_cls}, {c}) for the {n_cls} route-1 samples, got {got}"
            )
        kd_cls = kd_logit_loss(logits_s[idx_cls], teacher_cls_logits.to(logits_s.device), T_cls, variant)
    kd_loc = _zero_like_graph(logits_s)
    if n_loc:
        if cams_s is None or teacher_loc_cams is None:
            raise ValueError(f"{n_loc} samples have route 2 but cams_s or teacher_loc_cams is None")
        if cams_s.ndim != 4 or cams_s.shape[1] != c or cams_s.shape[0] not in (b, n_loc):
            raise ValueError(
                f"cams_s must be ({b}, {c}, h, w) or ({n_loc}, {c}, h, w), got shape {tuple(cams_s.shape)}"
            )
        student_loc = cams_s[idx_loc.to(cams_s.device)] if cams_s.shape[0] == b else cams_s
        if teacher_loc_cams.shape != student_loc.shape:
            raise ValueError(
                f"teacher_loc_cams must be {tuple(student_loc.shape)} for the {n_loc} route-2 samples, "
                f"got {tuple(teacher_loc_cams.shape)}"
            )
        kd_loc = kd_cam_loss(student_loc, teacher_loc_cams.to(student_loc.device), T_loc)
    total = (1.0 - alpha) * ce + alpha * kd_cls + alpha * loc_weight * kd_loc
    parts = {
        "ce": ce.detach(),
        "kd_cls": kd_cls.detach(),
        "kd_loc": kd_loc.detach(),
        "n_cls": torch.tensor(n_cls, device=logits_s.device),
        "n_loc": torch.tensor(n_loc, device=logits_s.device),
    }
    return total, parts
