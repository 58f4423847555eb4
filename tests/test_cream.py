"""CREAM's math: context-embedding update, EM, calibration, final map."""

from __future__ import annotations

import math

import pytest
import torch

from cream_pl.models.cam import all_class_activation_maps, class_activation_maps, normalize_maps
from cream_pl.models.cream import (
    calibrate,
    cream_em,
    cream_em_runs,
    cream_maps,
    foreground_background_features,
    momentum_update,
)


def test_cam_matches_classifier_weights_and_gap_logits():
    g = torch.Generator().manual_seed(0)
    feats = torch.rand(3, 6, 5, 5, generator=g)
    lin = torch.nn.Linear(6, 4)
    cams = all_class_activation_maps(feats, lin.weight)
    # the spatial mean of the CAM plus the bias is the GAP logit (CAM paper Eq. 1-2)
    logits = lin(feats.mean((2, 3)))
    torch.testing.assert_close(cams.mean((2, 3)) + lin.bias, logits)
    ids = torch.tensor([3, 0, 2])
    torch.testing.assert_close(class_activation_maps(feats, lin.weight, ids), cams[torch.arange(3), ids])


def test_normalize_maps_constant_and_nan_become_zero():
    maps = torch.tensor([[[1.0, 5.0], [3.0, 2.0]], [[4.0, 4.0], [4.0, 4.0]], [[1.0, float("nan")], [0.0, 2.0]]])
    out = normalize_maps(maps)
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 1.0], [0.5, 0.25]]))
    assert (out[1] == 0).all() and (out[2] == 0).all()


def test_momentum_update_equals_sequential_loop():
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(5, 7, generator=g, dtype=torch.float64)
    ids = torch.tensor([2, 0, 2, 2, 4, 0, 2])
    vals = torch.randn(7, 7, generator=g, dtype=torch.float64)
    valid = torch.tensor([True, True, False, True, True, True, True])
    lam = 0.8
    expected = emb.clone()
    for i in range(len(ids)):
        if valid[i]:
            expected[ids[i]] = lam * expected[ids[i]] + (1 - lam) * vals[i]
    torch.testing.assert_close(momentum_update(emb, ids, vals, lam, valid), expected, rtol=0, atol=1e-12)
    # lambda = 1 keeps the initial embeddings, lambda = 0 keeps the last sample of each class
    torch.testing.assert_close(momentum_update(emb, ids, vals, 1.0), emb)
    last = momentum_update(emb, ids, vals, 0.0)
    torch.testing.assert_close(last[2], vals[6])
    torch.testing.assert_close(last[1], emb[1])


def test_momentum_update_rejects_bad_class_ids():
    with pytest.raises(ValueError, match="class ids"):
        momentum_update(torch.zeros(2, 3), torch.tensor([2]), torch.zeros(1, 3), 0.8)


def test_foreground_background_features_means_and_empty_regions():
    feats = torch.zeros(2, 2, 2, 2)
    feats[:, 0] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    feats[:, 1] = 1.0
    cam = torch.tensor([[[1.0, 0.0], [0.5, 0.1]], [[1.0, 1.0], [1.0, 1.0]]])
    f_fg, f_bg, has_fg, has_bg = foreground_background_features(feats, cam, tau=0.2)
    torch.testing.assert_close(f_fg[0], torch.tensor([2.0, 1.0]))  # pixels (0,0) and (1,0)
    torch.testing.assert_close(f_bg[0], torch.tensor([3.0, 1.0]))
    assert has_fg.tolist() == [True, True] and has_bg.tolist() == [True, False]
    torch.testing.assert_close(f_bg[1], torch.zeros(2))


def _em_reference(f, mu_fg, mu_bg, kappa, iters):
    """Plain per-pixel loop of the spec's EM for one image (f: (N, K))."""
    mus = [mu_fg.clone(), mu_bg.clone()]
    pis = [0.5, 0.5]
    z = None
    for t in range(iters):
        p = []
        for mu, pi in zip(mus, pis):
            cos = (f @ mu) / (f.norm(dim=1) * mu.norm())
            p.append(pi * torch.exp(kappa * cos))
        z = p[0] / (p[0] + p[1])
        if t < iters - 1:
            zs = [z, 1 - z]
            mus = [(zk[:, None] * f).sum(0) / zk.sum() for zk in zs]
            pis = [zk.mean().item() for zk in zs]
    return z


@pytest.mark.parametrize("iters", [1, 2, 3])
def test_em_matches_per_pixel_reference(iters):
    g = torch.Generator().manual_seed(2)
    feats = torch.rand(2, 6, 4, 5, generator=g, dtype=torch.float64)
    mu_fg = torch.rand(2, 6, generator=g, dtype=torch.float64)
    mu_bg = torch.rand(2, 6, generator=g, dtype=torch.float64)
    z = cream_em(feats, mu_fg, mu_bg, kappa=8.0, iterations=iters)
    for b in range(2):
        ref = _em_reference(feats[b].flatten(1).T, mu_fg[b], mu_bg[b], 8.0, iters)
        torch.testing.assert_close(z[b].flatten(), ref, rtol=0, atol=1e-10)


def test_em_separates_two_clusters_and_reactivates_the_object():
    # object = left 3 columns (two feature "parts": head column and body columns), background right
    k = 4
    feats = torch.zeros(1, k, 4, 6)
    feats[0, 0, :, 0] = 1.0  # discriminative head
    feats[0, 1, :, 0] = 0.6
    feats[0, 1, :, 1:3] = 1.0  # body, similar direction to the head's second channel
    feats[0, 0, :, 1:3] = 0.1
    feats[0, 2:, :, 3:] = 1.0  # background
    cam = feats[0, 0].clone()[None]  # CAM fires on the head only
    e_fg = torch.zeros(1, k)
    e_fg[0, :2] = torch.tensor([0.7, 0.7])
    e_bg = torch.zeros(1, k)
    e_bg[0, 2:] = 1.0
    final = cream_maps(feats, cam, torch.tensor([0]), e_fg, e_bg, iterations=2)
    cam_fg = normalize_maps(cam)[0] >= 0.2
    cream_fg = normalize_maps(final)[0] >= 0.2
    assert cam_fg[:, 1:3].sum() == 0  # CAM misses the body
    assert cream_fg[:, :3].all() and not cream_fg[:, 3:].any()  # CREAM covers exactly the object


def test_calibration_flips_components_when_em_labels_are_swapped():
    cam = torch.tensor([[[1.0, 0.9], [0.0, 0.0]]])
    z = torch.tensor([[[0.1, 0.2], [0.9, 0.8]]])  # "fg" component is actually the background
    torch.testing.assert_close(calibrate(z, cam), 1 - z)
    torch.testing.assert_close(calibrate(1 - z, cam), 1 - z)


def test_cream_maps_zero_iterations_is_plain_cam():
    g = torch.Generator().manual_seed(3)
    feats = torch.rand(2, 5, 3, 3, generator=g)
    cam = torch.rand(2, 3, 3, generator=g)
    emb = torch.rand(4, 5, generator=g)
    torch.testing.assert_close(cream_maps(feats, cam, torch.tensor([0, 1]), emb, emb, iterations=0), normalize_maps(cam))
    out = cream_maps(feats, cam, torch.tensor([0, 1]), emb, emb, iterations=2)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 2 + 1e-6
    assert not math.isclose(float((out - normalize_maps(cam)).abs().sum()), 0.0)


def test_batched_em_runs_equal_each_run_alone_at_every_t():
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(3, 16, 5, 6, generator=g).relu()
    mu_fg, mu_bg = torch.randn(4, 3, 16, generator=g), torch.randn(4, 3, 16, generator=g)
    kappa = torch.tensor([8.0, 16.0, 32.0, 8.0])
    norms = ["raw", "l2", "raw", "l2"]
    runs = cream_em_runs(feats, mu_fg, mu_bg, kappa, (1, 3, 2), norms)
    assert sorted(runs) == [1, 2, 3]
    for t, z in runs.items():
        assert z.shape == (4, 3, 5, 6)
        for r in range(4):
            want = cream_em(feats, mu_fg[r], mu_bg[r], kappa=float(kappa[r]), iterations=t, feature_norm=norms[r])
            torch.testing.assert_close(z[r], want, atol=1e-6, rtol=1e-5)  # float32 sums in another order (CPU kernels)
    assert not torch.allclose(runs[1][0], runs[3][0])  # the steps differ: T is not ignored
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        cream_em_runs(feats, mu_fg, mu_bg, kappa, (0, 1), norms)
    with pytest.raises(ValueError, match="feature_norm must be"):
        cream_em_runs(feats, mu_fg, mu_bg, kappa, (1,), ["raw", "l1", "raw", "raw"])
