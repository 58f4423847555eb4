"""KD-CI-CAM distillation: KL variants (standard vs official quirk), CAM KD, routing, student loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cream_pl.models.distillation import (
    kd_cam_loss,
    kd_logit_loss,
    kd_student_loss,
    route_indices,
    route_samples,
)


def _logits(b: int = 5, c: int = 7, seed: int = 0, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, generator=g, dtype=torch.float64) * scale, torch.randn(
        b, c, generator=g, dtype=torch.float64
    ) * scale


# ------------------------------------------------------------------ logit KD
@pytest.mark.parametrize("T", [1.0, 4.0, 15.0])
def test_standard_kl_equals_manual_formula_with_t_squared(T):
    s, t = _logits()
    p_t = torch.softmax(t / T, 1)
    log_p_s = torch.log_softmax(s / T, 1)
    manual = (p_t * (torch.log(p_t) - log_p_s)).sum() / s.shape[0]
    loss = kd_logit_loss(s, t, T, "standard")
    torch.testing.assert_close(loss, (manual * T * T).float(), rtol=1e-5, atol=1e-7)
    assert loss >= 0
    # T² scaling: the unscaled KL at the same T is the loss / T²
    unscaled = F.kl_div(F.log_softmax(s.float() / T, 1), F.softmax(t.float() / T, 1), reduction="batchmean")
    torch.testing.assert_close(loss / (T * T), unscaled, rtol=1e-5, atol=1e-7)


def test_standard_kl_is_zero_for_identical_logits_and_nonnegative():
    s, t = _logits(b=50, seed=1)
    torch.testing.assert_close(kd_logit_loss(s, s.clone(), 15.0), torch.zeros(()), rtol=0, atol=1e-6)
    per_sample = torch.stack([kd_logit_loss(s[i : i + 1], t[i : i + 1], 2.0) for i in range(50)])
    assert (per_sample >= 0).all() and (per_sample > 0).any()


def test_official_variant_equals_probability_input_formula():
    s, t = _logits(seed=2)
    T = 15.0
    p_s, p_t = torch.softmax(s / T, 1), torch.softmax(t / T, 1)
    # KLDivLoss(input=p_s, target=p_t) = Σ p_t (log p_t - p_s) / B = (Σ p_t log p_t - Σ p_t p_s) / B
    manual = ((p_t * torch.log(p_t)).sum() - (p_t * p_s).sum()) / s.shape[0]
    loss = kd_logit_loss(s, t, T, "official")
    torch.testing.assert_close(loss, manual.float(), rtol=1e-5, atol=1e-7)
    # exactly what the official script calls
    official = nn.KLDivLoss(reduction="batchmean")(
        F.softmax(s.float() / T, dim=1), F.softmax(t.float() / T, dim=1)
    )
    torch.testing.assert_close(loss, official)
    # not a proper divergence: negative, and not zero for identical logits, no T² factor
    assert loss < 0
    assert kd_logit_loss(s, s, T, "official").abs() > 1e-3
    loss_t1 = kd_logit_loss(s, t, 1.0, "official")
    manual_t1 = (
        (torch.softmax(t, 1) * (torch.log_softmax(t, 1) - torch.softmax(s, 1))).sum() / s.shape[0]
    ).float()
    torch.testing.assert_close(loss_t1, manual_t1, rtol=1e-5, atol=1e-7)


def test_official_variant_gradient_is_much_weaker_but_aligned():
    s, t = _logits(seed=3)
    grads = {}
    for variant in ("standard", "official"):
        x = s.clone().float().requires_grad_(True)
        kd_logit_loss(x, t.float(), 15.0, variant).backward()
        grads[variant] = x.grad
    assert grads["official"].norm() < 0.1 * grads["standard"].norm()
    cos = F.cosine_similarity(grads["official"].flatten(), grads["standard"].flatten(), dim=0)
    assert cos > 0.5


def test_logit_loss_detaches_teacher_and_handles_empty_batch():
    s, t = _logits()
    s = s.float().requires_grad_(True)
    t = t.float().requires_grad_(True)
    kd_logit_loss(s, t, 2.0).backward()
    assert s.grad is not None and t.grad is None
    empty = torch.zeros(0, 7, requires_grad=True)
    loss = kd_logit_loss(empty, torch.zeros(0, 7), 2.0)
    assert loss.item() == 0.0 and loss.requires_grad


def test_logit_loss_rejects_bad_arguments():
    s, t = _logits()
    with pytest.raises(ValueError, match="variant"):
        kd_logit_loss(s, t, 2.0, "mnist")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="T must be"):
        kd_logit_loss(s, t, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        kd_logit_loss(s, t[:, :3], 2.0)


# ------------------------------------------------------------------ CAM KD
def test_cam_kd_loss_value_and_linearisation_at_t15():
    g = torch.Generator().manual_seed(4)
    cs = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    ct = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    T = 15.0
    manual = ((torch.sigmoid(cs / T) - torch.sigmoid(ct / T)) ** 2).sum() / cs.numel()
    loss = kd_cam_loss(cs, ct, T)
    torch.testing.assert_close(loss, manual.float(), rtol=1e-5, atol=1e-9)
    # σ(x/15) ≈ 1/2 + x/60 for small x
    linear = (((cs - ct) / 60.0) ** 2).mean()
    torch.testing.assert_close(loss.double(), linear, rtol=0.02, atol=0)
    assert kd_cam_loss(cs, cs, T) == 0
    with pytest.raises(ValueError, match="same shape"):
        kd_cam_loss(cs, ct[:, :2], T)


# ------------------------------------------------------------------ routing
def test_routes_are_uniform_and_deterministic_under_a_seed():
    r1 = route_samples(30000, torch.Generator().manual_seed(0))
    r2 = route_samples(30000, torch.Generator().manual_seed(0))
    assert torch.equal(r1, r2) and r1.dtype == torch.long
    assert not torch.equal(r1, route_samples(30000, torch.Generator().manual_seed(1)))
    freq = torch.bincount(r1, minlength=3).double() / r1.numel()
    torch.testing.assert_close(freq, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.015, rtol=0)
    for mode, allowed in (("cls", {0, 1}), ("loc", {0, 2})):
        r = route_samples(4000, torch.Generator().manual_seed(2), mode=mode)
        assert set(r.unique().tolist()) == allowed
        assert abs((r == 0).double().mean().item() - 0.5) < 0.03
    assert torch.equal(route_samples(5, mode="none"), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="mode"):
        route_samples(3, mode="all")  # type: ignore[arg-type]


def test_route_indices_split_the_batch():
    routes = torch.tensor([0, 2, 1, 1, 2, 0, 2])
    idx_cls, idx_loc = route_indices(routes)
    assert idx_cls.tolist() == [2, 3] and idx_loc.tolist() == [1, 4, 6]


# ------------------------------------------------------------------ student loss
def _student_batch(seed: int = 5):
    g = torch.Generator().manual_seed(seed)
    b, c = 7, 4
    logits = torch.randn(b, c, generator=g, requires_grad=True)
    cams = torch.randn(b, c, 3, 3, generator=g, requires_grad=True)
    labels = torch.randint(0, c, (b,), generator=g)
    routes = torch.tensor([0, 2, 1, 1, 2, 0, 2])
    t_logits_full = torch.randn(b, c, generator=g)
    t_cams_full = torch.randn(b, c, 3, 3, generator=g)
    return logits, cams, labels, routes, t_logits_full, t_cams_full


@pytest.mark.parametrize("variant", ["standard", "official"])
def test_student_loss_composes_the_routed_terms(variant):
    logits, cams, labels, routes, t_logits_full, t_cams_full = _student_batch()
    idx_cls, idx_loc = route_indices(routes)
    alpha, T_cls, T_loc, lam = 0.8, 15.0, 2.0, 0.5
    total, parts = kd_student_loss(
        logits,
        cams,
        labels,
        routes,
        t_logits_full[idx_cls],
        t_cams_full[idx_loc],
        alpha=alpha,
        T_cls=T_cls,
        T_loc=T_loc,
        variant=variant,
        loc_weight=lam,
    )
    ce = F.cross_entropy(logits, labels)
    kd_cls = kd_logit_loss(logits[[2, 3]], t_logits_full[[2, 3]], T_cls, variant)
    kd_loc = kd_cam_loss(cams[[1, 4, 6]], t_cams_full[[1, 4, 6]], T_loc)
    torch.testing.assert_close(total, (1 - alpha) * ce + alpha * kd_cls + alpha * lam * kd_loc)
    torch.testing.assert_close(parts["kd_cls"], kd_cls.detach())
    torch.testing.assert_close(parts["kd_loc"], kd_loc.detach())
    assert int(parts["n_cls"]) == 2 and int(parts["n_loc"]) == 3
    # student CAMs of the route-2 subset only give the same value
    total_sub, _ = kd_student_loss(
        logits,
        cams[idx_loc],
        labels,
        routes,
        t_logits_full[idx_cls],
        t_cams_full[idx_loc],
        alpha=alpha,
        T_cls=T_cls,
        T_loc=T_loc,
        variant=variant,
        loc_weight=lam,
    )
    torch.testing.assert_close(total_sub, total)
    total.backward()
    assert logits.grad is not None and cams.grad is not None
    assert cams.grad[[0, 2, 3, 5]].abs().sum() == 0  # only route-2 CAMs are distilled
    assert cams.grad[[1, 4, 6]].abs().sum() > 0


def test_student_loss_with_empty_subsets_and_alpha_zero():
    logits, cams, labels, _, _, _ = _student_batch()
    routes = torch.zeros(7, dtype=torch.long)
    total, parts = kd_student_loss(logits, None, labels, routes, None, None, alpha=0.8)
    torch.testing.assert_close(total, 0.2 * F.cross_entropy(logits, labels))
    assert parts["kd_cls"] == 0 and parts["kd_loc"] == 0 and int(parts["n_cls"]) == 0
    total.backward()
    assert logits.grad is not None


def test_student_loss_rejects_misaligned_teacher_outputs():
    logits, cams, labels, routes, t_logits_full, t_cams_full = _student_batch()
    idx_cls, idx_loc = route_indices(routes)
    with pytest.raises(ValueError, match="teacher_cls_logits must be"):
        kd_student_loss(logits, cams, labels, routes, t_logits_full, t_cams_full[idx_loc])
    with pytest.raises(ValueError, match="teacher_loc_cams must be"):
        kd_student_loss(logits, cams, labels, routes, t_logits_full[idx_cls], t_cams_full)
    with pytest.raises(ValueError, match="route 2"):
        kd_student_loss(logits, None, labels, routes, t_logits_full[idx_cls], t_cams_full[idx_loc])
    with pytest.raises(ValueError, match="routes must take"):
        kd_student_loss(logits, cams, labels, routes + 1, None, None)
    with pytest.raises(ValueError, match="alpha"):
        kd_student_loss(logits, cams, labels, routes, t_logits_full[idx_cls], t_cams_full[idx_loc], alpha=1.5)
