"""ACoL and SPG against their definitions (wsolevaluation), CREAM's variants on them and under ADL, tiny real fits."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from cream_pl.data import WSOLDataModule, generate_synthetic_dataset
from cream_pl.models import WSOLClassifier
from cream_pl.models.backbones import Backbone, create_backbone, register_backbone
from cream_pl.models.backbones.base import ACoLLayout, SPGLayout
from cream_pl.models.cam import class_activation_maps, normalize_maps
from cream_pl.models.cream import cream_maps, foreground_background_features
from cream_pl.models.cream_variants import form_cam, form_cream, form_eq3, method_variants
from cream_pl.models.wsol_heads import (
    SPG_IGNORE,
    ACoLHead,
    acol_erase,
    acol_erase_mask,
    acol_fuse,
    head_macs,
    spg_attention_loss,
    spg_target,
    spg_targets,
)
from cream_pl.models.wsol_methods import METHOD_DEFAULTS, MISSING_METHODS, WSOL_METHODS, WSOLMethod

os.environ.setdefault("WANDB_MODE", "disabled")

SIZE = 64
FROZEN = r"^(_conv_stem|_bn0|_blocks\.[0-7]\.)"


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _model(**kw) -> WSOLClassifier:
    defaults = dict(num_classes=3, pretrained=False, cam_curve_interval=0.05, eval_size=SIZE, lr=0.01)
    return WSOLClassifier(**{**defaults, **kw})


# ----------------------------------------------------------------------------- the six methods
def test_all_six_methods_exist_with_the_reference_defaults():
    assert WSOL_METHODS == ("cam", "has", "cutmix", "adl", "acol", "spg") and MISSING_METHODS == ()
    assert WSOLMethod.create("acol").params == {"threshold": 0.7}
    assert WSOLMethod.create("spg").params == {"threshold_1h": 0.7, "threshold_1l": 0.01, "threshold_2h": 0.5,
                                               "threshold_2l": 0.05, "threshold_3h": 0.7, "threshold_3l": 0.1}
    assert METHOD_DEFAULTS["acol"]["threshold"] == 0.7
    with pytest.raises(ValueError, match=r"acol.threshold must be a number in \[0, 1\]"):
        WSOLMethod.create("acol", {"threshold": 1.5})
    with pytest.raises(ValueError, match="spg.threshold_2l must be below spg.threshold_2h"):
        WSOLMethod.create("spg", {"threshold_2l": 0.6})
    with pytest.raises(ValueError, match=r"allowed: \['threshold'\]"):
        WSOLMethod.create("acol", {"drop_rate": 0.5})
    with pytest.raises(ValueError, match="cream_variant must be one of"):
        _model(wsol_method="acol", cream_variant="before_adl")
    with pytest.raises(ValueError, match=r"cream_search\['variant'\] \['fused'\] are not CREAM variants of wsol_method='adl'"):
        _model(wsol_method="adl", cream_search={"variant": ["fused"]})
    with pytest.raises(ValueError, match="wsol_method='spg' has one place for CREAM; leave cream_variant unset"):
        _model(wsol_method="spg", cream_variant="branches")
    with pytest.raises(ValueError, match="contradicts wsol_method='acol'"):
        _model(wsol_method="acol", backbone_kwargs={"variant": "spg"})
    with pytest.raises(ValueError, match="backbone variant must be one of"):
        create_backbone("resnet50", variant="acl")


class _Plain(Backbone):
    """A registered backbone that knows nothing of ACoL / SPG."""

    num_features, feature_stride = 8, 16

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=16, padding=1)

    def forward_features(self, x):
        return torch.relu(self.conv(x))

    def _is_new_parameter(self, name):
        return False


class _PlainWithVariant(_Plain):
    def __init__(self, variant: str = "cam") -> None:
        super().__init__()
        self.variant = self.check_variant(variant)


def test_a_backbone_without_the_method_network_or_layout_is_one_line():
    from cream_pl.models.backbones.registry import _BACKBONES

    register_backbone("_test_plain")(_Plain)
    register_backbone("_test_plain_variant")(_PlainWithVariant)
    try:
        with pytest.raises(ValueError, match="backbone '_test_plain' takes no 'variant' argument"):
            _model(backbone="_test_plain", wsol_method="acol")
        with pytest.raises(ValueError, match="backbone '_test_plain_variant' defines no spg_layout"):
            _model(backbone="_test_plain_variant", wsol_method="spg")
    finally:
        _BACKBONES.pop("_test_plain", None)
        _BACKBONES.pop("_test_plain_variant", None)


# ----------------------------------------------------------------------------- ACoL
def test_acol_erase_mask_is_exactly_the_cells_at_or_above_the_threshold():
    att = torch.rand(3, 1, 5, 6, generator=_gen(0))
    att[0, 0, 0, 0] = 0.7  # at the threshold: erased (>=)
    mask = acol_erase_mask(att, 0.7)
    assert torch.equal(mask == 0, att >= 0.7) and mask[0, 0, 0, 0] == 0
    feats = torch.rand(3, 4, 5, 6, generator=_gen(1)) + 1.0
    erased = acol_erase(feats, att, 0.7)
    assert torch.equal((erased == 0).all(1, keepdim=True), att >= 0.7)
    torch.testing.assert_close(erased[(att < 0.7).expand_as(feats)], feats[(att < 0.7).expand_as(feats)])
    with pytest.raises(ValueError, match=r"attention must be a \(B, 1, h, w\) tensor"):
        acol_erase_mask(torch.zeros(2, 3, 3), 0.7)


@pytest.mark.parametrize("pre_pool", [False, True])
def test_acol_head_feeds_branch_b_the_trunk_erased_by_branch_a_map(pre_pool):
    torch.manual_seed(0)
    head = ACoLHead(ACoLLayout(width=8, pre_pool=pre_pool), in_channels=6, num_classes=3, threshold=0.7).eval()
    classifier = nn.Linear(8, 3)
    trunk = torch.rand(4, 6, 7, 7, generator=_gen(2))
    labels = torch.tensor([0, 1, 2, 1])
    seen = {}
    head.branch_b.register_forward_pre_hook(lambda m, args: seen.setdefault("b_in", args[0]))
    with torch.no_grad():
        out = head(trunk, classifier, labels)
    x = F.avg_pool2d(trunk, 3, 1, 1) if pre_pool else trunk
    feat_a = head.branch_a(x)
    attention = normalize_maps(class_activation_maps(feat_a, classifier.weight, labels))  # A's map of the label
    erased = attention >= 0.7
    assert erased.any() and (~erased).any()
    torch.testing.assert_close(seen["b_in"], x * (~erased)[:, None].float())
    torch.testing.assert_close(out.features, torch.cat([feat_a, head.branch_b(seen["b_in"])], 1))
    torch.testing.assert_close(out.logits, classifier(feat_a.mean((2, 3))))
    torch.testing.assert_close(out.extras["logits_b"], head.classifier_b(out.features[:, 8:].mean((2, 3))))
    # no labels: A's top class erases (the reference's rule)
    with torch.no_grad():
        top = head(trunk, classifier, None)
        ref = head(trunk, classifier, out.logits.argmax(1))
    torch.testing.assert_close(top.features, ref.features)
    loss = head.loss(out, labels)
    torch.testing.assert_close(loss, F.cross_entropy(out.logits, labels) + F.cross_entropy(out.extras["logits_b"], labels))


def test_acol_map_is_the_max_of_the_normalised_branch_maps_and_cream_placements():
    g = _gen(3)
    fa, fb = torch.rand(2, 4, 5, 5, generator=g), torch.rand(2, 4, 5, 5, generator=g)
    wa, wb = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    ids = torch.tensor([2, 0])
    feats = torch.cat([fa, fb], 1)
    cam_a, cam_b = class_activation_maps(fa, wa, ids), class_activation_maps(fb, wb, ids)
    fused = torch.maximum(normalize_maps(cam_a), normalize_maps(cam_b))
    torch.testing.assert_close(acol_fuse(cam_a, cam_b), fused)
    for form in ("acol_branches", "acol_fused"):
        torch.testing.assert_close(form_cam(form, feats, [wa, wb], ids), fused)
    e_fg, e_bg = torch.rand(3, 8, generator=g), torch.rand(3, 8, generator=g)
    kw = dict(iterations=2, kappa=8.0, tau=0.2)
    branches = form_cream("acol_branches", feats, [wa, wb], ids, e_fg, e_bg, **kw)
    ref = acol_fuse(cream_maps(fa, cam_a, ids, e_fg[:, :4], e_bg[:, :4], **kw),
                    cream_maps(fb, cam_b, ids, e_fg[:, 4:], e_bg[:, 4:], **kw))
    torch.testing.assert_close(branches, ref)
    torch.testing.assert_close(form_cream("acol_fused", feats, [wa, wb], ids, e_fg, e_bg, **kw),
                               cream_maps(feats, fused, ids, e_fg, e_bg, **kw))
    # Eq. 3: per branch from its own CAM, or on both halves from the fused map
    f_fg, f_bg, _, _ = form_eq3("acol_branches", feats, [wa, wb], ids, 0.2)
    a = foreground_background_features(fa, normalize_maps(cam_a), 0.2)
    b = foreground_background_features(fb, normalize_maps(cam_b), 0.2)
    torch.testing.assert_close(f_fg, torch.cat([a[0], b[0]], 1))
    torch.testing.assert_close(f_bg, torch.cat([a[1], b[1]], 1))
    fused_fg = form_eq3("acol_fused", feats, [wa, wb], ids, 0.2)[0]
    torch.testing.assert_close(fused_fg, foreground_background_features(feats, normalize_maps(fused), 0.2)[0])


def test_acol_head_cost_scaled_to_lite0_and_the_reference_widths():
    lite = create_backbone("efficientnet_lite0", variant="acol")
    assert lite.num_features == 320 and lite.acol_layout.width == 320
    head = ACoLHead(lite.acol_layout, lite.num_features, 200, 0.7)
    assert 0.70e9 < head_macs(head, 200) < 0.80e9  # about 1x the 0.76 GMAC backbone
    reference = ACoLHead(ACoLLayout(width=1024), 1280, 200, 0.7)  # fixed 1024-channel heads on the 1280-channel map
    assert 8.3e9 < head_macs(reference, 200) < 8.5e9
    assert create_backbone("resnet50").acol_layout.width == 1024 and create_backbone("vgg16").acol_layout.pre_pool


@pytest.mark.parametrize(("name", "kwargs", "size"), [
    ("vgg16", {}, 64), ("vgg16", {"large_feature_map": True}, 64), ("resnet50", {}, 64), ("inception_v3", {}, 96),
    ("efficientnet_lite0", {}, 64),
])
def test_backbone_variants_keep_the_map_size_and_give_the_reference_channels(name, kwargs, size):
    x = torch.randn(1, 3, size, size, generator=_gen(0))
    shapes = {}
    for variant in ("cam", "acol", "spg"):
        net = create_backbone(name, variant=variant, **kwargs).eval()
        with torch.no_grad():
            shapes[variant] = tuple(net(x).shape)
        assert shapes[variant][1] == net.num_features
    assert shapes["acol"][2:] == shapes["spg"][2:] == shapes["cam"][2:]
    channels = {"vgg16": (1024, 512, 512), "resnet50": (2048, 2048, 2048), "inception_v3": (1024, 768, 1024),
                "efficientnet_lite0": (1280, 320, 1280)}[name]
    assert (shapes["cam"][1], shapes["acol"][1], shapes["spg"][1]) == channels


@pytest.mark.parametrize("method", ["acol", "spg"])
@pytest.mark.parametrize(("name", "size"), [("vgg16", 64), ("resnet50", 64), ("inception_v3", 96)])
def test_reference_heads_train_on_each_benchmark_backbone(name, size, method):
    """One real training step of each (backbone, method) row: the layouts' channels fit, every head gets a gradient,
    and the lr groups follow main.py (ResNet50: heads and classifier at the base lr)."""
    torch.manual_seed(0)
    model = _model(backbone=name, wsol_method=method, eval_size=size).train()
    batch = {"image": torch.randn(2, 3, size, size, generator=_gen(8)), "label": torch.tensor([0, 2])}
    loss = model.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.wsol_head.parameters())
    groups = model.configure_optimizers()["optimizer"].param_groups
    head = {id(p) for p in [*model.wsol_head.parameters(), *model.classifier.parameters()]}
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    expected = model.hparams.lr * (1.0 if name == "resnet50" else model.hparams.head_lr_multiplier)
    assert {lr_of[i] for i in head} == {expected}


def test_vgg_variants_load_the_pretrained_convolutions_by_order():
    source = create_backbone("vgg16").state_dict()
    official = {k: v for k, v in source.items() if k.startswith("features.")}  # the 13 convs, torchvision keys
    for variant in ("acol", "spg"):
        net = create_backbone("vgg16", variant=variant)
        net.load_pretrained_state_dict(official, source="test")
        convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
        torch.testing.assert_close(convs[12].weight, source["features.28.weight"])
    spg = create_backbone("vgg16", variant="spg")
    pre, new = spg.parameter_groups()
    assert len(pre) == 14 and len(new) == 12 + 4  # conv1-3 base; conv4, conv5 (SPG_A_1/2) and SPG_A_3 at x10


# ----------------------------------------------------------------------------- SPG
def test_spg_target_thresholds_fallback_and_ignore_rule():
    att = torch.zeros(2, 1, 8, 8)
    att[0, 0, :4] = 0.9  # 32 pixels above high 0.7: foreground as they are
    att[0, 0, 4:6] = 0.5  # between low and high: ignored
    att[0, 0, 6:] = 0.005  # below low 0.01: background
    att[1, 0, 0, :3] = torch.tensor([0.6, 0.5, 0.3])  # no pixel above 0.7: fall back to > 0.7 * 0.6 = 0.42
    att[1, 0, 1:] = 0.2
    t = spg_target(att, high=0.7, low=0.01)
    assert torch.equal(t[0, 0, :4], torch.ones(4, 8)) and torch.equal(t[0, 0, 6:], torch.zeros(2, 8))
    assert (t[0, 0, 4:6] == SPG_IGNORE).all()
    assert t[1, 0, 0, :3].tolist() == [1.0, 1.0, SPG_IGNORE] and (t[1, 0, 0, 3:] == 0).all()  # 0 < low
    assert (t[1, 0, 1:] == SPG_IGNORE).all()
    # background overrides a fallback foreground below the low threshold
    tiny = torch.full((1, 1, 4, 4), 0.004)
    assert (spg_target(tiny, high=0.7, low=0.01) == 0).all()
    # 30 pixels above high are enough; 29 are not (fallback to 0.7 · max)
    for n, expect in ((30, 30), (29, 40)):
        a = torch.full((1, 1, 10, 10), 0.5)
        a.view(-1)[:n] = 0.8
        a.view(-1)[n:40] = 0.6  # above 0.7 · 0.8 = 0.56
        assert int((spg_target(a, 0.7, 0.01) == 1).sum()) == expect


def test_spg_targets_chain_and_loss_ignore_the_ignored_pixels():
    g = _gen(4)
    cam = torch.randn(2, 4, 4, generator=g)
    b1, b2 = torch.randn(2, 1, 4, 4, generator=g), torch.randn(2, 1, 4, 4, generator=g)
    th = METHOD_DEFAULTS["spg"]
    out = spg_targets(cam, b1, b2, (16, 16), th)

    def up(x):
        return F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)

    att = normalize_maps(up(cam[:, None])[:, 0])[:, None]
    assert torch.equal(out["b2"], spg_target(att, 0.7, 0.01))
    assert torch.equal(out["b1"], spg_target(torch.sigmoid(up(b2)), 0.5, 0.05))
    assert torch.equal(out["c"], spg_target((torch.sigmoid(up(b1)) + torch.sigmoid(up(b2))) / 2, 0.7, 0.1))
    target = out["b2"]
    valid = target != SPG_IGNORE
    assert valid.any() and (~valid).any()
    expected = F.binary_cross_entropy_with_logits(up(b1)[valid], target[valid])
    torch.testing.assert_close(spg_attention_loss(b1, target), expected)
    logits = b1.clone().requires_grad_(True)
    zero = spg_attention_loss(logits, torch.full_like(target, SPG_IGNORE))
    zero.backward()
    assert zero.item() == 0.0 and logits.grad is not None


def test_spg_layouts_are_the_reference_taps_and_widths():
    r = create_backbone("resnet50").spg_layout
    assert r == SPGLayout(("layer3.0", "layer3"), (1024, 1024), 1024, 512, "xavier", new_lr=False)
    i = create_backbone("inception_v3").spg_layout
    assert (i.taps, i.tap_channels, i.b_width, i.c_width) == (("pool_5d", "Mixed_6d"), (288, 768), 512, 512)
    v = create_backbone("vgg16", variant="spg").spg_layout
    assert (v.tap_channels, v.b_width, v.c_width) == ((512, 512), 512, 512)
    lite = create_backbone("efficientnet_lite0").spg_layout
    assert (lite.taps, lite.tap_channels, lite.b_width, lite.c_width) == (("_blocks.10", "_blocks.14"), (112, 192), 160, 160)
    model = _model(wsol_method="spg", num_classes=200)
    assert 0.5e9 < head_macs(model.wsol_head, 200) < 0.6e9  # training only; 512 x 320 / 1024 channels


def test_spg_branches_run_in_training_only_and_the_loss_is_the_sum():
    torch.manual_seed(0)
    model = _model(wsol_method="spg", freeze_backbone=FROZEN).train()
    x, labels = torch.randn(2, 3, SIZE, SIZE, generator=_gen(5)), torch.tensor([0, 2])
    out = model.head_forward(x, labels)
    assert set(out.extras) == {"b1", "b2", "c"} and out.extras["b1"].shape[1] == 1
    loss = model.wsol_head.loss(out, labels, weight=model.classifier.weight, size=(SIZE, SIZE))
    cam = class_activation_maps(out.features.detach(), model.classifier.weight.detach(), labels)
    targets = spg_targets(cam, out.extras["b1"], out.extras["b2"], (SIZE, SIZE), METHOD_DEFAULTS["spg"])
    ref = F.cross_entropy(out.logits, labels) + sum(spg_attention_loss(out.extras[k], targets[k]) for k in ("b2", "b1", "c"))
    torch.testing.assert_close(loss, ref)
    model.eval()
    with torch.no_grad():
        evaluated = model.head_forward(x, labels)
        feats, logits = model.forward_features(x)
    assert evaluated.extras == {}
    torch.testing.assert_close(logits, model.classifier(feats.mean((2, 3))))  # SPG_A4 + GAP: the CAM's classifier


# ----------------------------------------------------------------------------- CREAM variants, ADL sources
def test_variants_of_each_method():
    assert [v.name for v in method_variants("spg")] == [""]
    assert [v.name for v in method_variants("acol")] == ["branches", "fused"]
    adl = _model(wsol_method="adl", freeze_backbone=FROZEN)
    assert [v.name for v in adl.cream_variants] == ["before_adl", "after_adl"] and adl.cream_variant.name == "before_adl"
    assert set(adl.variant_contexts) == {"after_adl"}
    assert adl.adl_layers["output"].record_input
    vgg = _model(wsol_method="adl", backbone="vgg16")  # the last ADL layer is before conv6: one variant
    assert [v.name for v in vgg.cream_variants] == ["after_adl"] and not len(vgg.variant_contexts)


def test_adl_embeddings_learn_before_or_after_the_last_adl_layer():
    torch.manual_seed(0)
    model = _model(wsol_method="adl", freeze_backbone=FROZEN, wsol_method_args={"drop_rate": 1.0})
    model.train()
    batch = {"image": torch.randn(4, 3, SIZE, SIZE, generator=_gen(6)), "label": torch.tensor([0, 1, 2, 0])}
    seen = {}
    layer = model.adl_layers["output"]
    layer.register_forward_hook(lambda m, args, out: seen.update(before=args[0].detach(), after=out.detach()))
    before_fg, after_fg = model.context.fg.clone(), model.variant_contexts["after_adl"].fg.clone()
    model.training_step(batch, 0)
    labels, w = batch["label"], model.classifier.weight.detach()
    assert not torch.equal(seen["before"], seen["after"])
    for src, ctx, init in (("before", model.context, before_fg), ("after", model.variant_contexts["after_adl"], after_fg)):
        f = seen[src]
        f_fg = foreground_background_features(f, normalize_maps(class_activation_maps(f, w, labels)), 0.2)[0]
        expected = init[0].clone()
        for c in range(3):  # Eq. 4 in sample order
            for i in (labels == c).nonzero().flatten().tolist():
                expected[c] = 0.8 * expected[c] + 0.2 * f_fg[i]
        torch.testing.assert_close(ctx.fg[0], expected)


def test_an_adl_checkpoint_without_the_variants_embeddings_is_refused_in_one_line():
    from cream_pl.core.errors import UserValueError

    model = _model(wsol_method="adl", freeze_backbone=FROZEN)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("variant_contexts.")}
    with pytest.raises(UserValueError, match=r"no context embeddings of CREAM variant\(s\) \['after_adl'\]"):
        model.on_load_checkpoint({"state_dict": state})
    model.on_load_checkpoint({"state_dict": model.state_dict()})  # a current checkpoint loads


def test_no_adl_input_is_kept_without_cream():
    model = _model(wsol_method="adl", freeze_backbone=FROZEN, cream=False).train()
    assert not model.adl_layers["output"].record_input
    model.training_step({"image": torch.randn(2, 3, SIZE, SIZE, generator=_gen(7)), "label": torch.tensor([0, 1])}, 0)
    assert model.adl_layers["output"].last_input is None


# ----------------------------------------------------------------------------- tiny real fits
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    return generate_synthetic_dataset(root, seed=1, num_classes=3, num_train=12, num_val=6, num_test=6,
                                      min_side=72, max_side=96, image_format="png", overwrite=True)


@pytest.mark.parametrize(("method", "variants"), [("acol", ["branches", "fused"]), ("spg", None),
                                                  ("adl", ["before_adl", "after_adl"])])
def test_tiny_fit_with_val_selected_cream(method, variants, tiny_data, tmp_path):
    pl.seed_everything(0)
    dm = WSOLDataModule(str(tiny_data), batch_size=6, resize_size=72, crop_size=SIZE, eval_size=SIZE)
    search = {"iterations": [1, 2], **({"variant": variants} if variants else {})}
    model = _model(wsol_method=method, freeze_backbone=FROZEN, cream_search=search, record_per_image=["cam"])
    init = model.context.fg.clone()
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         default_root_dir=str(tmp_path))
    trainer.fit(model, dm)
    assert not torch.allclose(model.context.fg, init) and int(model.context.num_updates) == 12
    for ctx in model.variant_contexts.values():
        assert int(ctx.num_updates) == 12
    assert len(model.cream_candidates) == 2 * len(variants or [""])
    chosen = model.selected_cream
    assert chosen is not None and chosen.get("variant", "") in (variants or [""])
    trainer.test(model, dm, verbose=False)
    for stage in ("val", "test"):
        for name in ("cam", "cream", "cream_selected"):
            value = model.last_results[stage]["methods"][name]["max_box_acc_v2"]
            assert math.isfinite(value) and 0.0 <= value <= 100.0, (stage, name, value)
    if variants:
        assert model.last_results["test"]["methods"]["cream_selected"]["variant"] == chosen["variant"]
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    loaded = WSOLClassifier.load_from_checkpoint(ckpt, map_location="cpu").eval()
    assert loaded.selected_cream == chosen
    state, restored = model.state_dict(), loaded.state_dict()
    assert list(restored) == list(state)
    for key, value in state.items():
        torch.testing.assert_close(restored[key], value, rtol=0, atol=0)


def test_a_diverged_fit_is_said_in_one_warning(tiny_data, tmp_path):
    pl.seed_everything(0)
    dm = WSOLDataModule(str(tiny_data), batch_size=6, resize_size=72, crop_size=SIZE, eval_size=SIZE)
    model = _model(wsol_method="spg", freeze_backbone=FROZEN, lr=1e30)  # an absurd rate: NaN weights and loss
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, default_root_dir=str(tmp_path))
    with pytest.warns(UserWarning, match=r"training diverged in epoch 0: .*lower the learning rate \(lr 1e\+30"):
        trainer.fit(model, dm)
    healthy = _model(wsol_method="spg", freeze_backbone=FROZEN)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, default_root_dir=str(tmp_path))
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        trainer.fit(healthy, dm)
    assert not [w for w in seen if "diverged" in str(w.message)]
