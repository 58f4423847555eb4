"""CI-CAM: context-pool math (vs BatchNorm2d / loops), DDP-consistent update, intervention, CCAM, non-local."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from cream_pl.models.ci_cam import (
    CausalIntervention,
    CICAMHead,
    NonLocalBlock,
    ci_cam_loss,
    combinational_cam,
    context_pool_update_sums,
    spatial_standardize,
    update_context_pool,
)

C, K, H, W = 5, 6, 4, 3


def _bn_reference(x: torch.Tensor) -> torch.Tensor:
    """The official normaliser: a fresh BatchNorm2d(C) (affine 1/0) in train mode on [1, C, h, w]."""
    bn = nn.BatchNorm2d(x.shape[0], affine=True).to(x.dtype).train()
    with torch.no_grad():
        return bn(x[None])[0]


# ------------------------------------------------------------------ pool math
@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-6), (torch.float32, 1e-6)])
def test_spatial_standardize_equals_batchnorm_train_mode(dtype, atol):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(C, H, W, generator=g) * 3 + 2).to(dtype)
    x[1] = 0.0  # all-zero channel
    x[3] = 7.5  # constant channel
    out = spatial_standardize(x)
    # BatchNorm's own float32 rounding leaves ~1e-4 on a non-zero constant channel; ours is exactly 0
    varying = [0, 1, 2, 4]
    torch.testing.assert_close(out[varying], _bn_reference(x)[varying], rtol=0, atol=atol)
    if dtype == torch.float64:
        torch.testing.assert_close(out, _bn_reference(x), rtol=0, atol=atol)
    assert out.dtype == dtype
    assert torch.equal(out[1], torch.zeros(H, W, dtype=dtype))
    assert torch.equal(out[3], torch.zeros(H, W, dtype=dtype))
    torch.testing.assert_close(out[0].mean(), torch.zeros((), dtype=dtype), rtol=0, atol=1e-6)


def test_spatial_standardize_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"\(C, h, w\)"):
        spatial_standardize(torch.zeros(2, 3, 4, 5))


def _batch(b: int = 8, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    cams = torch.randn(b, C, H, W, generator=g, dtype=torch.float64)
    labels = torch.randint(0, C, (b,), generator=g)
    preds = labels.clone()
    preds[::3] = (labels[::3] + 1) % C  # every third sample misclassified
    return cams, labels, preds


def test_update_sums_count_only_correct_gt_class_maps():
    cams, labels, preds = _batch()
    expected = torch.zeros(C, H, W, dtype=torch.float64)
    for i in range(len(labels)):
        if labels[i] == preds[i]:
            expected[labels[i]] += cams[i, labels[i]]
    sums = context_pool_update_sums(cams, labels, preds, C)
    torch.testing.assert_close(sums, expected, rtol=0, atol=1e-12)
    # the (B, h, w) GT-class form gives the same sums
    gt_maps = cams[torch.arange(len(labels)), labels]
    torch.testing.assert_close(
        context_pool_update_sums(gt_maps, labels, preds, C), expected, rtol=0, atol=1e-12
    )
    # a misclassified sample does not contribute, even to its predicted class
    i = 0
    assert labels[i] != preds[i]
    only_wrong = context_pool_update_sums(cams[:1], labels[:1], preds[:1], C)
    assert torch.equal(only_wrong, torch.zeros_like(only_wrong))


def test_update_sums_reject_bad_input():
    cams, labels, preds = _batch()
    with pytest.raises(ValueError, match="num_classes"):
        context_pool_update_sums(cams, labels, preds, C + 1)
    with pytest.raises(ValueError, match="labels must be in"):
        context_pool_update_sums(cams, labels + C, preds, C)
    with pytest.raises(ValueError, match="labels and preds"):
        context_pool_update_sums(cams, labels[:-1], preds, C)


def test_pool_update_equals_batchnorm_reference_and_zero_channels_stay_zero():
    cams, labels, preds = _batch()
    sums = context_pool_update_sums(cams, labels, preds, C)
    empty = [c for c in range(C) if not ((labels == c) & (preds == c)).any()]
    pool = torch.zeros(C, H, W, dtype=torch.float64)
    ref = pool.clone()
    for _ in range(3):
        pool = update_context_pool(pool, sums, rate=0.01)
        ref = _bn_reference(ref + 0.01 * _bn_reference(sums))  # official update_mask
    torch.testing.assert_close(pool, ref, rtol=0, atol=1e-6)
    assert empty, "the test batch should leave at least one class without correct samples"
    for c in empty:
        assert torch.equal(pool[c], torch.zeros(H, W, dtype=torch.float64))
    filled = [c for c in range(C) if c not in empty]
    torch.testing.assert_close(
        pool[filled].std((1, 2), unbiased=False),
        torch.ones(len(filled), dtype=torch.float64),
        atol=1e-4,
        rtol=0,
    )


def test_update_rejects_shape_mismatch_and_negative_rate():
    with pytest.raises(ValueError, match="same shape"):
        update_context_pool(torch.zeros(C, H, W), torch.zeros(C, H, W + 1))
    with pytest.raises(ValueError, match="rate"):
        update_context_pool(torch.zeros(C, H, W), torch.zeros(C, H, W), rate=-0.1)


# ------------------------------------------------------------------ DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_batches():
    return [_batch(b=8, seed=10 + step) for step in range(3)]


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        module = CausalIntervention(C, K, (H, W)).double()
        pool = torch.zeros(C, H, W, dtype=torch.float64)
        for cams, labels, preds in _ddp_batches():
            half = slice(0, 4) if rank == 0 else slice(4, 8)
            local = context_pool_update_sums(cams[half], labels[half], preds[half], C)
            module.update(local, rate=0.05, sync=True)  # all-reduce inside
            reduced = local.clone()
            dist.all_reduce(reduced, op=dist.ReduceOp.SUM)  # the documented caller-side contract
            pool = update_context_pool(pool, reduced, rate=0.05)
        torch.save({"module": module.context_pool, "pure": pool}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_pool_update_identical_on_ranks_and_equals_full_batch(tmp_path):
    port = _free_port()
    mp.start_processes(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert torch.equal(r0["module"], r1["module"])
    assert torch.equal(r0["pure"], r1["pure"])
    single = torch.zeros(C, H, W, dtype=torch.float64)
    for cams, labels, preds in _ddp_batches():
        single = update_context_pool(single, context_pool_update_sums(cams, labels, preds, C), rate=0.05)
    assert single.abs().sum() > 0
    torch.testing.assert_close(r0["module"], single, rtol=0, atol=1e-9)
    torch.testing.assert_close(r0["pure"], single, rtol=0, atol=1e-9)
    # per-rank updates without the all-reduce would differ from the full-batch pool
    cams, labels, preds = _ddp_batches()[0]
    rank0_only = update_context_pool(
        torch.zeros(C, H, W, dtype=torch.float64),
        context_pool_update_sums(cams[:4], labels[:4], preds[:4], C),
        0.05,
    )
    full = update_context_pool(
        torch.zeros(C, H, W, dtype=torch.float64), context_pool_update_sums(cams, labels, preds, C), 0.05
    )
    assert not torch.allclose(rank0_only, full)


# ------------------------------------------------------------------ intervention
def _official_dense_intervention(features, pool, weight, bias, class_idx):
    """The official form: one-hot-over-classes tensor holding P[ĉ] in channel ĉ, then Conv2d(C, K, 1)."""
    b, c = features.shape[0], pool.shape[0]
    context = torch.zeros(b, c, *pool.shape[1:], dtype=features.dtype)
    context[torch.arange(b), class_idx] = pool[class_idx]
    conv = nn.Conv2d(c, weight.shape[0], 1).to(features.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight[:, :, None, None])
        conv.bias.copy_(bias)
    attention = conv(context)
    return torch.add(features, attention.mul(features))


def test_intervention_is_identity_at_init_and_keeps_shape():
    torch.manual_seed(0)
    ci = CausalIntervention(C, K, (H, W))
    feats = torch.rand(3, K, H, W)
    out = ci(feats, torch.tensor([0, 4, 2]))
    assert out.shape == feats.shape
    assert torch.equal(out, feats)
    assert torch.equal(ci.bias, torch.zeros(K)) and ci.weight.abs().sum() > 0
    with torch.no_grad():
        ci.context_pool.copy_(torch.randn(C, H, W))
    assert not torch.allclose(ci(feats, torch.tensor([0, 4, 2])), feats)


def test_intervention_indexing_equals_official_dense_conv():
    torch.manual_seed(1)
    ci = CausalIntervention(C, K, (H, W)).double()
    with torch.no_grad():
        ci.context_pool.copy_(torch.randn(C, H, W, dtype=torch.float64))
        ci.bias.copy_(torch.randn(K, dtype=torch.float64))
    feats = torch.rand(4, K, H, W, dtype=torch.float64)
    idx = torch.tensor([3, 0, 3, 1])
    expected = _official_dense_intervention(feats, ci.context_pool, ci.weight.detach(), ci.bias.detach(), idx)
    torch.testing.assert_close(ci(feats, idx), expected, rtol=0, atol=1e-12)


def test_intervention_resizes_pool_bilinearly_for_another_feature_size():
    torch.manual_seed(2)
    ci = CausalIntervention(C, K, (H, W))
    with torch.no_grad():
        ci.context_pool.copy_(torch.randn(C, H, W))
    feats = torch.rand(2, K, 2 * H, 2 * W)
    idx = torch.tensor([1, 2])
    pool_big = F.interpolate(
        ci.context_pool[None], size=(2 * H, 2 * W), mode="bilinear", align_corners=False
    )[0]
    expected = _official_dense_intervention(feats, pool_big, ci.weight.detach(), ci.bias.detach(), idx)
    torch.testing.assert_close(ci(feats, idx), expected, rtol=0, atol=1e-5)


def test_pool_is_a_persistent_buffer_in_state_dict():
    ci = CausalIntervention(C, K, (H, W))
    ci.update(torch.randn(C, H, W), rate=0.01)
    state = ci.state_dict()
    assert {"context_pool", "num_updates", "weight", "bias"} <= set(state)
    assert "context_pool" not in dict(ci.named_parameters())
    restored = CausalIntervention(C, K, (H, W))
    restored.load_state_dict(state)
    assert torch.equal(restored.context_pool, ci.context_pool) and int(restored.num_updates) == 1


def test_intervention_rejects_bad_input():
    ci = CausalIntervention(C, K, (H, W))
    with pytest.raises(ValueError, match="class_idx must be in"):
        ci(torch.rand(1, K, H, W), torch.tensor([C]))
    with pytest.raises(ValueError, match="features must be"):
        ci(torch.rand(1, K + 1, H, W), torch.tensor([0]))
    with pytest.raises(ValueError, match="pool shape"):
        ci.update(torch.zeros(C, H + 1, W))


# ------------------------------------------------------------------ head
def test_head_branches_share_the_classifier_and_use_the_up_prediction():
    torch.manual_seed(3)
    head = CICAMHead(C, K, (H, W))
    lin = nn.Linear(K, C)
    with torch.no_grad():
        head.intervention.context_pool.copy_(torch.randn(C, H, W))
        head.intervention.bias.normal_()
    feats = torch.rand(4, K, H, W, requires_grad=True)
    out = head(feats, lin)
    torch.testing.assert_close(out.logits_up, lin(feats.mean((2, 3))))
    c_hat = out.logits_up.argmax(1)
    torch.testing.assert_close(out.features_down, head.intervention(feats, c_hat))
    torch.testing.assert_close(out.logits_down, lin(out.features_down.mean((2, 3))))
    # CAMs: spatial mean + bias = logits (no bias inside the CAM)
    torch.testing.assert_close(head.cam_up(feats, lin).mean((2, 3)) + lin.bias, out.logits_up)
    torch.testing.assert_close(head.cam_down(out.features_down, lin).mean((2, 3)) + lin.bias, out.logits_down)
    labels = torch.tensor([0, 1, 2, 3])
    torch.testing.assert_close(
        head.cam_down(out.features_down, lin, labels),
        head.cam_down(out.features_down, lin)[torch.arange(4), labels],
    )
    loss = ci_cam_loss(out.logits_up, out.logits_down, labels)
    torch.testing.assert_close(
        loss, F.cross_entropy(out.logits_up, labels) + F.cross_entropy(out.logits_down, labels)
    )
    loss.backward()
    for p in (head.intervention.weight, head.intervention.bias, lin.weight, feats):
        assert p.grad is not None and p.grad.abs().sum() > 0
    # ground-truth-class intervention (ablation) uses the given classes
    out_gt = head(feats, lin, class_idx=labels)
    torch.testing.assert_close(out_gt.features_down, head.intervention(feats, labels))


def test_head_update_pool_matches_manual_update():
    torch.manual_seed(4)
    head = CICAMHead(C, K, (H, W))
    lin = nn.Linear(K, C)
    feats = torch.rand(6, K, H, W)
    labels = torch.randint(0, C, (6,))
    with torch.no_grad():
        lin.bias.zero_()
        lin.bias[labels[:3]] = 100.0  # make some samples correct
    out = head(feats, lin)
    preds = out.logits_up.argmax(1)
    assert (preds == labels).any()
    sums = context_pool_update_sums(head.cam_up(feats, lin).detach(), labels, preds, C)
    expected = update_context_pool(torch.zeros(C, H, W), sums, rate=0.3)
    head.update_pool(feats, lin, labels, out.logits_up, rate=0.3)
    torch.testing.assert_close(head.context_pool, expected, rtol=0, atol=1e-6)
    assert head.context_pool.abs().sum() > 0


# ------------------------------------------------------------------ combinational CAM
def _official_ccam(cam, logits, function, mean_num):
    """Loop form of the official torch_cam_combination (rank by logits, stack, weight, min-subtract)."""
    bz, nc = cam.shape[:2]
    out = []
    for i in range(bz):
        order = torch.sort(logits[i], descending=True, stable=True).indices
        tmp = cam[i, order]  # M_k, rank order
        if function == "linear":
            m = sum(hk * tmp[k] for k, hk in enumerate(torch.linspace(1, -1, nc, dtype=cam.dtype)))
        elif function == "quadratic":
            m = sum(-(hk**2) * tmp[k] for k, hk in enumerate(torch.linspace(0, -1, nc, dtype=cam.dtype)))
        elif function in ("sum_1", "sum_2"):
            hx = torch.linspace(0, 2 if function == "sum_1" else 4, mean_num, dtype=cam.dtype)
            m = tmp[0] - (tmp[-mean_num:] * hx[:, None, None]).sum(0) / mean_num
        else:
            m = tmp[0] - tmp[-mean_num:].mean(0)
        out.append(m - m.min())
    return torch.stack(out)


@pytest.mark.parametrize(
    "fn,n", [("quadratic", 20), ("linear", 20), ("sum_1", 3), ("sum_2", 2), ("mean", 4), ("sum_1", 7)]
)
def test_combinational_cam_matches_official_loop(fn, n):
    g = torch.Generator().manual_seed(5)
    cams = torch.randn(3, 7, 4, 4, generator=g, dtype=torch.float64)
    logits = torch.randn(3, 7, generator=g, dtype=torch.float64)
    out = combinational_cam(cams, logits, fn=fn, n=n)
    torch.testing.assert_close(out, _official_ccam(cams, logits, fn, n), rtol=0, atol=1e-12)
    assert torch.equal(out.flatten(1).amin(1), torch.zeros(3, dtype=torch.float64))


def test_quadratic_ccam_gives_the_top1_class_weight_zero():
    g = torch.Generator().manual_seed(6)
    cams = torch.randn(2, 6, 5, 5, generator=g)
    logits = torch.randn(2, 6, generator=g)
    top1 = logits.argmax(1)
    changed = cams.clone()
    changed[torch.arange(2), top1] += 10.0 * torch.randn(2, 5, 5, generator=g)
    torch.testing.assert_close(combinational_cam(changed, logits), combinational_cam(cams, logits))
    # ...while the lowest-ranked class has weight -1
    low = logits.argmin(1)
    bumped = cams.clone()
    bumped[torch.arange(2), low, 0, 0] -= 1.0
    diff = combinational_cam(bumped, logits) - combinational_cam(cams, logits)
    raw_diff = diff - diff[:, 1:, 1:].mean((1, 2))[:, None, None]  # remove the min-subtraction offset
    torch.testing.assert_close(raw_diff[:, 0, 0], torch.ones(2), atol=1e-5, rtol=0)


def test_combinational_cam_rejects_bad_arguments():
    cams, logits = torch.zeros(1, 4, 2, 2), torch.zeros(1, 4)
    with pytest.raises(ValueError, match="fn must be"):
        combinational_cam(cams, logits, fn="cubic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n must be"):
        combinational_cam(cams, logits, fn="sum_1", n=20)
    with pytest.raises(ValueError, match="logits must be"):
        combinational_cam(cams, torch.zeros(1, 3))


# ------------------------------------------------------------------ non-local
def test_non_local_block_is_identity_at_init_and_learns():
    torch.manual_seed(7)
    block = NonLocalBlock(16)
    x = torch.randn(2, 16, 5, 4)
    for mode in (True, False):
        block.train(mode)
        assert torch.equal(block(x), x)
    block.train()
    out = block(x)
    out.square().sum().backward()
    assert block.bn.weight.grad is not None and block.bn.weight.grad.abs().sum() > 0
    with torch.no_grad():
        block.bn.weight.fill_(1.0)
    y = block(x)
    assert y.shape == x.shape and not torch.allclose(y, x)
    with pytest.raises(ValueError, match="channels"):
        NonLocalBlock(4)


def test_non_local_block_attention_matches_explicit_formula():
    torch.manual_seed(8)
    block = NonLocalBlock(8).eval()
    with torch.no_grad():
        block.bn.weight.fill_(1.0)
    x = torch.randn(1, 8, 3, 3)
    q = block.query(x).flatten(2)[0]  # (C/8, N)
    k = block.key(x).flatten(2)[0]
    v = block.value(x).flatten(2)[0]  # (C, N)
    n = q.shape[1]
    out = torch.zeros(8, n)
    for i in range(n):  # position i attends to all j
        a = torch.softmax(torch.stack([q[:, i] @ k[:, j] for j in range(n)]), 0)
        out[:, i] = (v * a[None]).sum(1)
    expected = x + block.bn(block.mix(out.view(1, 8, 3, 3)))
    torch.testing.assert_close(block(x), expected)
