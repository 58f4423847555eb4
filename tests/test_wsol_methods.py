"""HaS, CutMix and ADL against their definitions, and a tiny real fit of each with CREAM on top (ACoL and SPG:
``test_wsol_heads.py``)."""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from cream_pl.data import WSOLDataModule, generate_synthetic_dataset
from cream_pl.models import WSOLClassifier
from cream_pl.models.backbones import create_backbone
from cream_pl.models.cam import class_activation_maps, normalize_maps
from cream_pl.models.cream import foreground_background_features
from cream_pl.models.wsol_methods import (
    ADL,
    METHOD_DEFAULTS,
    WSOLMethod,
    adl_attention,
    adl_drop_mask,
    adl_importance_map,
    attach_adl,
    cutmix,
    cutmix_box,
    cutmix_keep_cells,
    has_cells,
    hide_and_seek,
    masked_foreground_background_features,
    mixed_cross_entropy,
)

os.environ.setdefault("WANDB_MODE", "disabled")

SIZE = 64
FROZEN = r"^(_conv_stem|_bn0|_blocks\.[0-7]\.)"  # the embedded recipe's CPU setting (ADL sits after it)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _model(**kw) -> WSOLClassifier:
    defaults = dict(num_classes=3, pretrained=False, cam_curve_interval=0.05, eval_size=SIZE, lr=0.01)
    return WSOLClassifier(**{**defaults, **kw})


def _batch(seed: int = 0, n: int = 6) -> dict[str, torch.Tensor]:
    g = _gen(seed)
    return {"image": torch.randn(n, 3, SIZE, SIZE, generator=g), "label": torch.arange(n) % 3}


# ----------------------------------------------------------------------------- HaS
@pytest.mark.parametrize(("height", "width", "grid"), [(10, 7, 4), (8, 8, 4), (9, 13, 3)])
def test_has_hides_exactly_the_drawn_cells(height, width, grid):
    images = torch.rand(3, 2, height, width, generator=_gen(1)) + 1.0  # no pixel is 0 before hiding
    original = images.clone()
    hidden, cells = hide_and_seek(images, grid, 0.5, generator=_gen(7))
    assert cells.shape == (3, math.ceil(height / grid), math.ceil(width / grid)) and cells.dtype == torch.bool
    assert 0 < int(cells.sum()) < cells.numel()
    torch.testing.assert_close(images, original, rtol=0, atol=0)  # the input is not modified
    for b in range(3):
        for y in range(height):
            for x in range(width):
                if cells[b, y // grid, x // grid]:
                    assert torch.all(hidden[b, :, y, x] == 0.0), (b, y, x)
                else:
                    assert torch.equal(hidden[b, :, y, x], images[b, :, y, x]), (b, y, x)
    again, cells_again = hide_and_seek(images, grid, 0.5, generator=_gen(7))
    assert torch.equal(cells_again, cells) and torch.equal(again, hidden)  # deterministic given the generator


def test_has_drop_rate_extremes_and_frequency():
    assert not has_cells(2, 16, 16, 4, 0.0, _gen(0)).any()
    assert has_cells(2, 16, 16, 4, 1.0, _gen(0)).all()
    rate = float(has_cells(64, 224, 224, 4, 0.5, _gen(0)).float().mean())  # 64 x 56 x 56 cells
    assert abs(rate - 0.5) < 0.01


def test_classifier_has_step_feeds_the_hidden_images_to_the_backbone():
    model = _model(wsol_method="has").train()
    seen = []
    model.backbone.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    batch = _batch()
    torch.manual_seed(5)
    model.training_step(batch, 0)
    torch.manual_seed(5)
    expected, cells = hide_and_seek(batch["image"], 4, 0.5)  # the reference defaults
    assert cells.float().mean() > 0.3
    torch.testing.assert_close(seen[0], expected, rtol=0, atol=0)


# ----------------------------------------------------------------------------- CutMix
def test_cutmix_pastes_one_box_and_lambda_follows_the_pasted_area():
    height, width = 20, 16
    images = torch.rand(5, 3, height, width, generator=_gen(2))
    labels = torch.tensor([0, 1, 2, 3, 4])
    clipped = 0
    for seed in range(30):
        mix = cutmix(images, labels, beta=1.0, generator=_gen(seed))
        top, left, bottom, right = mix.box
        assert 0 <= top <= bottom <= height and 0 <= left <= right <= width
        clipped += top == 0 or left == 0 or bottom == height or right == width
        inside = torch.zeros(height, width, dtype=torch.bool)
        inside[top:bottom, left:right] = True
        torch.testing.assert_close(mix.images[:, :, inside], images[mix.permutation][:, :, inside], rtol=0, atol=0)
        torch.testing.assert_close(mix.images[:, :, ~inside], images[:, :, ~inside], rtol=0, atol=0)
        assert mix.lam == pytest.approx(1.0 - int(inside.sum()) / (height * width), abs=1e-12)
        assert torch.equal(mix.labels_a, labels) and torch.equal(mix.labels_b, labels[mix.permutation])
        assert sorted(mix.permutation.tolist()) == list(range(5))
    assert clipped > 0  # the border clipping was exercised
    again = cutmix(images, labels, beta=1.0, generator=_gen(3))
    first = cutmix(images, labels, beta=1.0, generator=_gen(3))
    assert again.box == first.box and torch.equal(again.images, first.images)


def test_cutmix_box_follows_the_half_extent_rule():
    # λ = 0.75: cut = floor(20 * 0.5) = 10 rows, 5 on each side of the centre, clipped to the image
    heights = set()
    for seed in range(200):
        top, left, bottom, right = cutmix_box(20, 16, 0.75, _gen(seed))
        h, w = bottom - top, right - left
        heights.add(h)
        assert 5 <= h <= 10 and 4 <= w <= 8
        assert h == 10 or top == 0 or bottom == 20
        assert w == 8 or left == 0 or right == 16
    assert {5, 10} <= heights
    top, left, bottom, right = cutmix_box(20, 16, 1.0, _gen(0))
    assert (bottom - top) * (right - left) == 0  # λ = 1 pastes nothing


def test_mixed_cross_entropy_is_the_lambda_weighted_cross_entropy():
    logits = torch.randn(4, 5, generator=_gen(0))
    a, b = torch.tensor([0, 1, 2, 3]), torch.tensor([4, 4, 0, 1])
    logp = logits.log_softmax(1)
    ce_a = -logp[torch.arange(4), a].mean()
    ce_b = -logp[torch.arange(4), b].mean()
    torch.testing.assert_close(mixed_cross_entropy(logits, a, b, 0.3), 0.3 * ce_a + 0.7 * ce_b)


def test_cutmix_keep_cells_drop_every_cell_that_touches_the_box():
    keep = cutmix_keep_cells((10, 10, 20, 40), (64, 64), (4, 4))  # cells of 16 x 16 pixels
    expected = torch.ones(4, 4, dtype=torch.bool)
    expected[0:2, 0:3] = False
    assert torch.equal(keep, expected)
    assert cutmix_keep_cells((0, 0, 0, 0), (64, 64), (4, 4)).all()


def test_masked_context_features_are_eq3_on_the_kept_cells():
    g = _gen(4)
    feats, cam = torch.rand(3, 5, 4, 4, generator=g), torch.randn(3, 4, 4, generator=g)
    full = masked_foreground_background_features(feats, cam, torch.ones(3, 4, 4, dtype=torch.bool), 0.2)
    ref = foreground_background_features(feats, normalize_maps(cam), 0.2)
    for got, want in zip(full, ref):
        torch.testing.assert_close(got, want)
    keep = torch.rand(3, 4, 4, generator=g) > 0.4
    keep[2] = False  # an image with no kept cell contributes nothing
    f_fg, f_bg, has_fg, has_bg = masked_foreground_background_features(feats, cam, keep, 0.2)
    for i in range(2):  # by hand: min-max over the kept cells, then the two means over them
        vals = cam[i][keep[i]]
        norm = (cam[i] - vals.min()) / (vals.max() - vals.min())
        fg, bg = keep[i] & (norm >= 0.2), keep[i] & (norm < 0.2)
        torch.testing.assert_close(f_fg[i], feats[i][:, fg].mean(1))
        torch.testing.assert_close(f_bg[i], feats[i][:, bg].mean(1))
        assert bool(has_fg[i]) and bool(has_bg[i]) == bool(bg.any())
    assert not has_fg[2] and not has_bg[2]


def test_classifier_cutmix_step_loss_and_context_update():
    model = _model(wsol_method="cutmix").train()
    batch = _batch(1)
    before = copy.deepcopy(model.context)
    torch.manual_seed(11)
    loss = model.training_step(batch, 0)
    torch.manual_seed(11)  # replay the step's draws: mix-or-not, then the mix, then the network
    assert float(torch.rand(())) < 1.0
    mix = cutmix(batch["image"], batch["label"], beta=1.0)
    assert 0.0 < mix.lam < 1.0
    with torch.no_grad():
        feats, logits = model.forward_features(mix.images)
    logp = logits.log_softmax(1)
    idx = torch.arange(6)
    expected = -(mix.lam * logp[idx, mix.labels_a] + (1 - mix.lam) * logp[idx, mix.labels_b]).mean()
    torch.testing.assert_close(loss.detach(), expected)
    # CREAM learned from the unmixed labels on the cells that miss the pasted box
    raw = class_activation_maps(feats, model.classifier.weight.detach(), batch["label"])
    keep = cutmix_keep_cells(mix.box, (SIZE, SIZE), tuple(feats.shape[-2:])).expand(6, -1, -1)
    assert not keep.all()
    masked, plain = copy.deepcopy(before), copy.deepcopy(before)
    masked.update(batch["label"], *masked_foreground_background_features(feats, raw, keep, 0.2), sync=False)
    plain.update(batch["label"], *foreground_background_features(feats, normalize_maps(raw), 0.2), sync=False)
    torch.testing.assert_close(model.context.fg, masked.fg)
    torch.testing.assert_close(model.context.bg, masked.bg)
    assert not torch.allclose(model.context.fg, plain.fg)


def test_cutmix_probability_zero_trains_plain_cam():
    model = _model(wsol_method="cutmix", wsol_method_args={"prob": 0.0}).train()
    batch = _batch(2)
    images, mix = model.wsol_training_inputs(batch["image"], batch["label"])
    assert mix is None and images is batch["image"]


# ----------------------------------------------------------------------------- ADL
def test_adl_maps_are_the_channel_mean_attention_definitions():
    x = torch.tensor([[[[1.0, -2.0], [3.0, 0.5]], [[0.0, 4.0], [1.0, 0.5]], [[2.0, 1.0], [-1.0, 0.5]]],
                      [[[0.2, 0.1], [0.0, 0.3]], [[0.2, 0.3], [0.0, 0.3]], [[0.2, 0.2], [0.0, 0.3]]]])  # (2, 3, 2, 2)
    attention = adl_attention(x)
    by_hand = torch.tensor([[[[1.0, 1.0], [1.0, 0.5]]], [[[0.2, 0.2], [0.0, 0.3]]]])
    torch.testing.assert_close(attention, by_hand)
    # γ = 0.9: image 0 peak 1.0 -> cells >= 0.9 are dropped; image 1 peak 0.3 -> cells >= 0.27 dropped
    drop = torch.tensor([[[[0.0, 0.0], [0.0, 1.0]]], [[[1.0, 1.0], [1.0, 0.0]]]])
    torch.testing.assert_close(adl_drop_mask(attention, 0.9), drop)
    importance = by_hand.apply_(lambda a: 1.0 / (1.0 + math.exp(-a)))
    torch.testing.assert_close(adl_importance_map(attention), importance)
    always_drop, never_drop = ADL(drop_rate=1.0, threshold=0.9).train(), ADL(drop_rate=0.0, threshold=0.9).train()
    torch.testing.assert_close(always_drop(x), x * drop)
    assert always_drop.last_choice == "drop"
    torch.testing.assert_close(never_drop(x), x * importance)
    assert never_drop.last_choice == "importance"
    evaluating = ADL().eval()
    assert evaluating(x) is x and evaluating.last_choice is None  # identity in eval mode


def test_adl_draws_the_drop_mask_at_its_rate():
    layer = ADL(drop_rate=0.75, threshold=0.9, generator=_gen(0)).train()
    x = torch.rand(1, 4, 3, 3, generator=_gen(1))
    choices = []
    for _ in range(2000):
        layer(x)
        choices.append(layer.last_choice == "drop")
    assert abs(sum(choices) / len(choices) - 0.75) < 0.03


@pytest.mark.parametrize(("name", "kwargs", "positions", "size"), [
    ("vgg16", {}, ("features.16", "features.22", "features.29"), 32),
    ("vgg16", {"large_feature_map": True}, ("features.16", "features.22", "features.28"), 32),
    ("resnet50", {}, ("layer3.0", "layer4.0", "layer4.2"), 32),
    ("inception_v3", {}, ("Mixed_5d", "Mixed_6e", "SPG_A3_2b"), 96),
    ("efficientnet_lite0", {}, ("_blocks.10", "_blocks.14", ""), 32),
], ids=["vgg16", "vgg16_28x28", "resnet50", "inception_v3", "efficientnet_lite0"])
def test_adl_sits_at_the_reference_positions_of_each_backbone(name, kwargs, positions, size):
    net = create_backbone(name, **kwargs)
    assert net.adl_positions == positions
    modules = dict(net.named_modules())
    if name == "vgg16":  # pool3, conv4_3's ReLU, conv5_3's ReLU
        convs = [i for i, m in enumerate(net.features) if isinstance(m, nn.Conv2d)]
        assert isinstance(modules[positions[0]], nn.MaxPool2d)
        assert [int(p.split(".")[1]) - 1 for p in positions[1:]] == [convs[9], convs[12]]
    keys = set(net.state_dict())
    x = torch.randn(1, 3, size, size, generator=_gen(0))
    net.eval()
    with torch.no_grad():
        plain = net(x)
    layers = attach_adl(net, drop_rate=1.0, threshold=0.9)
    assert set(net.state_dict()) == keys  # parameter-free: checkpoints and pretrained files unchanged
    with torch.no_grad():
        torch.testing.assert_close(net(x), plain, rtol=0, atol=0)  # eval: identity
    calls = []
    for key, layer in layers.items():
        layer.register_forward_hook(lambda m, args, out, key=key: calls.append((key, args[0], out)))
    layers.train()  # only the ADL layers train: batch norm and dropout stay in eval mode
    with torch.no_grad():
        out = net(x)
    assert [c[0] for c in calls] == [p.replace(".", "_") or "output" for p in positions]
    for _, inp, res in calls:  # drop_rate 1: each layer multiplies its input by its drop mask
        torch.testing.assert_close(res, inp * adl_drop_mask(adl_attention(inp), 0.9))
    assert not torch.equal(out, plain)


# ----------------------------------------------------------------------------- argument checks
def test_method_arguments_are_checked():
    assert WSOLMethod.create().params == {} and WSOLMethod.create("has").params == METHOD_DEFAULTS["has"]
    assert WSOLMethod.create("cutmix").params == {"beta": 1.0, "prob": 1.0}
    with pytest.raises(ValueError, match=r"wsol_method must be one of \[.*'acol', 'spg'\], got 'gradcam'"):
        WSOLMethod.create("gradcam")
    with pytest.raises(ValueError, match=r"allowed: \['drop_rate', 'grid_size'\]"):
        WSOLMethod.create("has", {"beta": 1.0})
    with pytest.raises(ValueError, match=r"allowed: \[\]"):
        WSOLMethod.create("cam", {"prob": 1.0})
    for method, args in [("has", {"grid_size": 0}), ("has", {"grid_size": 4.0}), ("has", {"grid_size": True}),
                         ("has", {"drop_rate": 1.5}), ("cutmix", {"beta": 0.0}), ("cutmix", {"prob": -0.1}),
                         ("adl", {"threshold": 2.0}), ("adl", {"drop_rate": float("nan")})]:
        with pytest.raises(ValueError, match=f"{method}.{next(iter(args))} must be"):
            WSOLMethod.create(method, args)
    with pytest.raises(ValueError, match="must be a mapping"):
        WSOLMethod.create("has", [("grid_size", 4)])
    with pytest.raises(ValueError, match=r"images must be a \(B, C, H, W\) tensor"):
        hide_and_seek(torch.zeros(3, 8, 8), 4, 0.5)
    with pytest.raises(ValueError, match="labels must be"):
        cutmix(torch.zeros(2, 3, 8, 8), torch.zeros(3, dtype=torch.long), 1.0)
    with pytest.raises(ValueError, match="defines no adl_positions"):
        attach_adl(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="not submodules"):
        attach_adl(nn.Sequential(nn.ReLU()), positions=("3",))
    with pytest.raises(ValueError, match="wsol_method must be one of"):
        _model(wsol_method="gradcam")
    with pytest.raises(ValueError, match="not hyperparameters of 'adl'"):
        _model(wsol_method="adl", wsol_method_args={"grid_size": 4})
    from cream_pl.models.ci_cam_module import CICAMClassifier

    with pytest.raises(ValueError, match="CICAMClassifier replaces"):
        CICAMClassifier(num_classes=3, pretrained=False, train_crop_size=SIZE, wsol_method="has")


# ----------------------------------------------------------------------------- tiny real fits
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    return generate_synthetic_dataset(root, seed=1, num_classes=3, num_train=12, num_val=6, num_test=6,
                                      min_side=72, max_side=96, image_format="png", overwrite=True)


@pytest.mark.parametrize("method", ["has", "cutmix", "adl"])
def test_tiny_fit_with_cream_on_each_method(method, tiny_data, tmp_path):
    pl.seed_everything(0)
    dm = WSOLDataModule(str(tiny_data), batch_size=6, resize_size=72, crop_size=SIZE, eval_size=SIZE)
    model = _model(wsol_method=method, freeze_backbone=FROZEN)
    init_fg, init_bg = model.context.fg.clone(), model.context.bg.clone()
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         default_root_dir=str(tmp_path))
    trainer.fit(model, dm)
    assert not torch.allclose(model.context.fg, init_fg) and not torch.allclose(model.context.bg, init_bg)
    assert int(model.context.num_updates) == 12
    trainer.test(model, dm, verbose=False)
    for stage in ("val", "test"):
        for name in ("cam", "cream"):
            value = model.last_results[stage]["methods"][name]["max_box_acc_v2"]
            assert math.isfinite(value) and 0.0 <= value <= 100.0, (stage, name, value)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    loaded = WSOLClassifier.load_from_checkpoint(ckpt, map_location="cpu").eval()
    assert loaded.hparams.wsol_method == method and loaded.wsol == model.wsol
    torch.testing.assert_close(loaded.context.fg, model.context.fg)
    if method == "adl":
        assert all(layer.last_choice in ("drop", "importance") for layer in model.adl_layers.values())
        assert list(loaded.adl_layers) == ["_blocks_10", "_blocks_14", "output"]
    state, restored = model.state_dict(), loaded.state_dict()
    assert list(restored) == list(state)
    for key, value in state.items():
        torch.testing.assert_close(restored[key], value, rtol=0, atol=0)


# ----------------------------------------------------------------------------- per-process random streams (DDP)
def _replay_has(step: dict, grid: int, drop: float, state: torch.Tensor) -> torch.Tensor:
    from cream_pl.models.wsol_methods import has_mask

    b, _, h, w = step["shape"]
    g = torch.Generator()
    g.set_state(state)
    return has_mask(has_cells(b, h, w, grid, drop, generator=g), grid, h, w)


def _replay_cutmix(step: dict, beta: float, state: torch.Tensor) -> tuple:
    b, c, h, w = step["shape"]
    g = torch.Generator()
    g.set_state(state)
    assert float(torch.rand((), generator=g)) < 1.0  # the prob draw (prob 1)
    mix = cutmix(torch.zeros(b, c, h, w), torch.zeros(b, dtype=torch.long), beta, generator=g)
    return mix.box, mix.permutation.tolist(), mix.lam


def test_rank_generator_keeps_rank_0_on_the_global_stream_and_seeds_the_others_apart():
    from cream_pl.models.wsol_methods import rank_generator

    assert rank_generator(0, 0) is None and rank_generator(7, 0, epoch=3) is None

    def draws(*args) -> torch.Tensor:
        return torch.rand(8, generator=rank_generator(*args))

    assert torch.equal(draws(0, 1, 0), draws(0, 1, 0))  # reproducible (and so resumable per epoch)
    assert not torch.equal(draws(0, 1, 0), draws(0, 2, 0))
    assert not torch.equal(draws(0, 1, 0), draws(0, 1, 1))
    assert not torch.equal(draws(0, 1, 0), draws(1, 1, 0))
    with pytest.raises(ValueError, match=">= 0"):
        rank_generator(0, -1)


def test_a_nonzero_rank_gets_its_own_stream_for_has_cutmix_and_adl(monkeypatch):
    from cream_pl.models.wsol_methods import rank_generator

    class _FakeTrainer:
        global_rank, current_epoch = 1, 2

    monkeypatch.setenv("PL_GLOBAL_SEED", "5")
    for method in ("has", "cutmix", "adl"):
        kw = {"freeze_backbone": FROZEN} if method == "adl" else {}
        model = _model(wsol_method=method, **kw)
        model.on_train_epoch_start()  # no trainer: rank 0
        assert model.wsol_generator is None
        model._trainer = _FakeTrainer()
        try:
            model.on_train_epoch_start()
        finally:
            model._trainer = None
        g = model.wsol_generator
        assert g is not None
        assert torch.equal(torch.rand(4, generator=g), torch.rand(4, generator=rank_generator(5, 1, 2)))
        if method == "adl":
            assert all(layer.generator is g for layer in model.adl_layers.values())
    cam = _model()
    cam.on_train_epoch_start()
    assert cam.wsol_generator is None


def test_one_process_draws_has_exactly_from_the_global_stream(tiny_data, tmp_path):
    """Single-process runs are unchanged: each step's HaS cells are the global torch stream's next draws."""
    from ddp_wsol_rng_script import Recorder

    pl.seed_everything(0)
    model = Recorder(num_classes=3, pretrained=False, eval_size=SIZE, cam_curve_interval=0.05, lr=0.01,
                     wsol_method="has")
    dm = WSOLDataModule(str(tiny_data), batch_size=4, resize_size=72, crop_size=SIZE, eval_size=SIZE)
    pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
               default_root_dir=str(tmp_path)).fit(model, dm)
    assert model.wsol_generator is None and len(model.steps) == 3
    for step in model.steps:
        assert step["own_state"] is None
        assert torch.equal(step["hidden"], _replay_has(step, 4, 0.5, step["global_state"]))


@pytest.mark.slow  # two torch processes (torchrun, gloo) on 2 cores: about 1 min
def test_ddp_ranks_draw_different_has_cutmix_and_adl_randomness(tmp_path):
    import subprocess

    from test_ddp_exact import ENV, SCRIPT, TORCHRUN, _free_port

    data = generate_synthetic_dataset(tmp_path / "data", seed=5, num_classes=3, num_train=8, num_val=2, num_test=2,
                                      min_side=72, max_side=88, image_format="png", overwrite=True)
    script = SCRIPT.with_name("ddp_wsol_rng_script.py")
    out = tmp_path / "out"
    proc = subprocess.run([str(TORCHRUN), "--nnodes=1", "--nproc-per-node=2", "--master-addr=127.0.0.1",
                           f"--master-port={_free_port()}", str(script), str(data), str(out), "--devices", "2"],
                          env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:]
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    for method in ("has", "cutmix", "adl"):
        s0, s1 = r0[method]["steps"], r1[method]["steps"]
        assert r0[method]["world_size"] == 2 and len(s0) == len(s1) == 4  # 2 epochs x 2 steps of 2 images per rank
        # seed_everything gave both ranks the same global stream: the draws differ all the same
        if method == "has":
            assert not any(torch.equal(a["hidden"], b["hidden"]) for a, b in zip(s0, s1))
        elif method == "cutmix":
            assert [a["cutmix"] for a in s0] != [b["cutmix"] for b in s1]
        else:
            assert [a["adl"] for a in s0] != [b["adl"] for b in s1]
        # rank 0 draws from the global torch stream, as one process does; rank 1 from its own generator
        assert all(s["own_state"] is None for s in s0) and all(s["own_state"] is not None for s in s1)
        if method == "has":
            for s in s0:
                assert torch.equal(s["hidden"], _replay_has(s, 4, 0.5, s["global_state"]))
            for s in s1:
                assert torch.equal(s["hidden"], _replay_has(s, 4, 0.5, s["own_state"]))
                assert not torch.equal(s["hidden"], _replay_has(s, 4, 0.5, s["global_state"]))
        elif method == "cutmix":
            for s in s0:
                assert s["cutmix"] == _replay_cutmix(s, 1.0, s["global_state"])
            for s in s1:
                assert s["cutmix"] == _replay_cutmix(s, 1.0, s["own_state"])
        else:
            for s in s1:  # rank 1's own generator feeds its ADL layers alone, one draw per layer in order
                g = torch.Generator()
                g.set_state(s["own_state"])
                assert s["adl"] == ["drop" if float(torch.rand((), generator=g)) < 0.5 else "importance"
                                    for _ in s["adl"]]
