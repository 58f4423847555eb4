"""Tests for cream_pl.models.backbones: registry, shapes, lr groups, weight loading, ImageNet sanity."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision
from efficientnet_lite_pytorch import EfficientNet
from skimage import data
from torch import Tensor, nn
from torchvision.models.vgg import cfgs, make_layers

from cream_pl.models.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    create_backbone,
    list_backbones,
    register_backbone,
)
from cream_pl.models.backbones import registry as registry_module
from cream_pl.models.backbones.efficientnet_lite0 import (
    EFFICIENTNET_LITE_MEAN,
    EFFICIENTNET_LITE_STD,
    create_imagenet_classifier,
    imagenet_head,
    pretrained_weights_path,
)

BENCHMARK_BACKBONES = ["efficientnet_lite0", "inception_v3", "resnet50", "vgg16"]
NUM_FEATURES = {"efficientnet_lite0": 1280, "inception_v3": 1024, "resnet50": 2048, "vgg16": 1024}
IMAGENET_CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _normalise(image_uint8, mean: tuple[float, ...], std: tuple[float, ...], size: int = 224) -> Tensor:
    x = torch.from_numpy(image_uint8).permute(2, 0, 1).float()[None] / 255.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


# --------------------------------------------------------------------------------------- registry
def test_registry_lists_the_benchmark_backbones():
    assert set(BENCHMARK_BACKBONES) <= set(list_backbones())
    assert list_backbones() == sorted(list_backbones())


def test_unknown_name_lists_available_backbones():
    with pytest.raises(ValueError, match="Unknown backbone 'vgg19'.*efficientnet_lite0.*vgg16"):
        create_backbone("vgg19")


def test_bad_pretrained_value_is_rejected():
    with pytest.raises(ValueError, match="pretrained must be"):
        create_backbone("resnet50", pretrained=1)


def test_bad_constructor_argument_is_rejected():
    with pytest.raises(ValueError, match="large_feature_map"):
        create_backbone("vgg16", large_feature_map="yes")


def test_register_custom_backbone_and_duplicate_name(monkeypatch):
    monkeypatch.setattr(registry_module, "_BACKBONES", dict(registry_module._BACKBONES))

    @register_backbone("tiny_test_net")
    class Tiny(Backbone):
        def __init__(self, width: int = 4) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, width, 3, stride=2, padding=1)
            self.num_features, self.feature_stride = width, 2

        def forward_features(self, x: Tensor) -> Tensor:
            return torch.relu(self.conv(x))

        def _is_new_parameter(self, name: str) -> bool:
            return name.endswith("bias")

    net = create_backbone("tiny_test_net", width=6)
    assert isinstance(net, Tiny) and net.name == "tiny_test_net"
    assert net(torch.zeros(1, 3, 8, 8)).shape == (1, 6, 4, 4)
    assert "tiny_test_net" in list_backbones()
    assert "name='tiny_test_net'" in repr(net)
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("tiny_test_net")(Tiny)
    with pytest.raises(NotImplementedError):
        create_backbone("tiny_test_net", pretrained=True)


# ----------------------------------------------------------------------------- shapes / groups
@pytest.mark.parametrize("name", BENCHMARK_BACKBONES)
def test_forward_224_shape_and_non_negative(name):
    torch.manual_seed(0)
    net = create_backbone(name).eval()
    assert net.num_features == NUM_FEATURES[name]
    assert net.feature_stride == 16
    with torch.no_grad():
        feats = net.forward_features(torch.randn(1, 3, 224, 224))
    assert feats.shape == (1, NUM_FEATURES[name], 14, 14)
    assert torch.isfinite(feats).all()
    assert feats.min() >= 0
    assert feats.max() > 0


@pytest.mark.parametrize("name", BENCHMARK_BACKBONES)
def test_large_feature_map_and_train_mode(name):
    torch.manual_seed(0)
    net = create_backbone(name, large_feature_map=True).train()
    assert net.feature_stride == 8
    feats = net(torch.randn(2, 3, 112, 112))
    assert feats.shape == (2, NUM_FEATURES[name], 14, 14)
    assert feats.min() >= 0
    feats.mean().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_efficientnet_same_padding_follows_input_size():
    net = create_backbone("efficientnet_lite0").eval()
    with torch.no_grad():
        # TF "same" padding: every stride-2 stage gives ceil(H / 2); 200 -> 100, 50, 25, 13.
        assert net(torch.zeros(1, 3, 200, 232)).shape == (1, 1280, 13, 15)


@pytest.mark.parametrize("name", BENCHMARK_BACKBONES)
def test_channels_last_is_the_same_arithmetic_in_another_layout(name):
    torch.manual_seed(0)
    plain = create_backbone(name).eval()
    nhwc = create_backbone(name).eval()
    nhwc.load_state_dict(plain.state_dict())
    assert nhwc.use_channels_last() is nhwc and nhwc.channels_last
    convs = [m.weight for m in nhwc.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        ref, out = plain(x), nhwc(x)
    assert out.is_contiguous() and out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
    # the state dict loads into a model in the default layout, and the switch goes back
    plain.load_state_dict(nhwc.state_dict())
    assert not nhwc.use_channels_last(False).channels_last
    assert all(m.weight.is_contiguous() for m in nhwc.modules() if isinstance(m, nn.Conv2d))


# Parameters that train at lr x 10 under the benchmark's rule (main.py `_set_optimizer`).
NEW_GROUP_PREFIXES = {
    "vgg16": ("conv6.",),
    "resnet50": ("layer4.",),
    "inception_v3": ("SPG_A3_1b.", "SPG_A3_2b."),
    "efficientnet_lite0": (),
}


@pytest.mark.parametrize("name", BENCHMARK_BACKBONES)
def test_parameter_groups_partition_trainable_params(name):
    net = create_backbone(name)
    pretrained, new = net.parameter_groups()
    ids_pre, ids_new = {id(p) for p in pretrained}, {id(p) for p in new}
    assert len(ids_pre) == len(pretrained) and len(ids_new) == len(new)
    assert not ids_pre & ids_new
    assert ids_pre | ids_new == {id(p) for p in net.parameters()}
    names_new = {n for n, p in net.named_parameters() if id(p) in ids_new}
    expected_new = {n for n, _ in net.named_parameters() if n.startswith(NEW_GROUP_PREFIXES[name])}
    assert names_new == expected_new
    assert len(pretrained) > 0

    first = next(net.parameters())
    first.requires_grad_(False)
    pretrained2, new2 = net.parameter_groups()
    assert id(first) not in {id(p) for p in pretrained2 + new2}
    assert len(pretrained2) + len(new2) == len(pretrained) + len(new) - 1


# ------------------------------------------------------------------------------ weight loading
def _torchvision_vgg16_file(tmp_path) -> tuple[str, dict[str, Tensor]]:
    """A torchvision-format VGG16 state dict: real `features` keys, a small classifier stub."""
    torch.manual_seed(1)
    features = make_layers(cfgs["D"])  # torchvision's own VGG16 conv stack, pool5 included
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.6.bias"] = torch.zeros(1000)  # dropped by the loader, like the real fc layers
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    return str(path), state


def test_vgg16_loads_local_torchvision_file(tmp_path):
    path, state = _torchvision_vgg16_file(tmp_path)
    torch.manual_seed(2)
    net = create_backbone("vgg16", pretrained=path)
    torch.manual_seed(2)
    fresh = create_backbone("vgg16")
    for idx in (0, 2, 24, 28):
        assert torch.equal(net.features[idx].weight, state[f"features.{idx}.weight"])
        assert torch.equal(net.features[idx].bias, state[f"features.{idx}.bias"])
    assert torch.equal(net.conv6.weight, fresh.conv6.weight)  # new layer keeps its He init


def test_vgg16_large_feature_map_remaps_after_dropped_pool4(tmp_path):
    path, state = _torchvision_vgg16_file(tmp_path)
    net = create_backbone("vgg16", pretrained=path, large_feature_map=True)
    # pool4 (torchvision index 23) is gone, so torchvision conv 24/26/28 sit at 23/25/27.
    assert torch.equal(net.features[21].weight, state["features.21.weight"])
    for tv_idx in (24, 26, 28):
        assert torch.equal(net.features[tv_idx - 1].weight, state[f"features.{tv_idx}.weight"])
    # The backbone's own state dict reloads unchanged.
    own = tmp_path / "own.pth"
    torch.save({"state_dict": net.state_dict()}, own)
    again = create_backbone("vgg16", pretrained=own, large_feature_map=True)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))


def test_resnet50_loads_local_torchvision_file(tmp_path):
    torch.manual_seed(3)
    state = torchvision.models.resnet50(weights=None).state_dict()
    path = tmp_path / "resnet50.pth"
    torch.save(state, path)
    net = create_backbone("resnet50", pretrained=path)
    assert torch.equal(net.layer4[0].conv2.weight, state["layer4.0.conv2.weight"])
    assert torch.equal(net.bn1.running_var, state["bn1.running_var"])
    assert net.layer4[0].conv2.stride == (1, 1)
    assert not hasattr(net, "fc")


def test_inception_v3_loads_local_torchvision_file(tmp_path):
    torch.manual_seed(4)
    tv = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=True)
    state = tv.state_dict()
    path = tmp_path / "inception_v3.pth"
    torch.save(state, path)
    net = create_backbone("inception_v3", pretrained=path)
    assert torch.equal(net.Mixed_6e.branch7x7dbl_5.conv.weight, state["Mixed_6e.branch7x7dbl_5.conv.weight"])
    assert torch.equal(net.Mixed_6a.branch3x3.conv.weight, state["Mixed_6a.branch3x3.conv.weight"])
    assert torch.equal(net.Conv2d_1a_3x3.bn.running_mean, state["Conv2d_1a_3x3.bn.running_mean"])


def test_wrong_weights_file_reports_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "not_vgg.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(
        RuntimeError, match=r"(?s)not_vgg\.pth.*missing keys \(26\).*unexpected keys \(1\).*conv1"
    ):
        create_backbone("vgg16", pretrained=path)


def test_shape_mismatch_names_the_file(tmp_path):
    path, state = _torchvision_vgg16_file(tmp_path)
    state["features.0.weight"] = torch.zeros(32, 3, 3, 3)
    torch.save(state, path)
    with pytest.raises(RuntimeError, match=r"(?s)vgg16\.pth.*size mismatch"):
        create_backbone("vgg16", pretrained=path)


def test_missing_or_bad_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        create_backbone("vgg16", pretrained=tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="bad.pth"):
        create_backbone("vgg16", pretrained=str(bad))


@pytest.mark.parametrize("name", ["vgg16", "resnet50", "inception_v3"])
def test_official_weights_download_failure_explains_local_file(monkeypatch, name):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match=rf"(?s)Could not download.*'{name}'.*pretrained='/path/to/"):
        create_backbone(name, pretrained=True)


# ---------------------------------------------------------------------- EfficientNet-Lite0 ImageNet
def test_efficientnet_lite0_package_weights_match_exactly():
    state = torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)
    model = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    net = create_backbone("efficientnet_lite0", pretrained=True)  # raises on any missing / unexpected key
    assert torch.equal(net._blocks[11]._depthwise_conv.weight, state["_blocks.11._depthwise_conv.weight"])
    assert net._blocks[11]._depthwise_conv.stride == [1, 1]


def test_efficientnet_lite0_normalisation_attributes():
    net = create_backbone("efficientnet_lite0")
    assert net.input_mean == pytest.approx((127 / 255,) * 3)
    assert net.input_std == pytest.approx((128 / 255,) * 3)
    assert create_backbone("vgg16").input_mean == IMAGENET_MEAN
    assert create_backbone("resnet50").input_std == IMAGENET_STD


def test_efficientnet_lite0_first_bn_statistics_favour_tf_normalisation():
    """The stem BN running variance was estimated on (x*255-127)/128 inputs, not ImageNet mean/std."""
    state = torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)
    net = create_backbone("efficientnet_lite0", pretrained=True).eval()
    images = [data.chelsea(), data.coffee(), data.astronaut()]
    running_var = state["_bn0.running_var"]
    alive = running_var > 1e-3

    def log_var_ratio(mean, std) -> float:
        x = torch.cat([_normalise(im, mean, std) for im in images])
        with torch.no_grad():
            var = net._conv_stem(x).var(dim=(0, 2, 3))
        return (var[alive] / running_var[alive]).log().median().abs().item()

    assert log_var_ratio(EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD) < log_var_ratio(
        IMAGENET_MEAN, IMAGENET_STD
    )


def test_efficientnet_lite0_classifies_chelsea_as_a_cat():
    x = _normalise(data.chelsea(), EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD)
    model = create_imagenet_classifier()
    with torch.no_grad():
        probs = model(x).softmax(dim=1)[0]
    top1 = int(probs.argmax())
    assert top1 in IMAGENET_CAT_CLASSES
    assert probs[top1] > 0.5
    assert probs[sorted(IMAGENET_CAT_CLASSES)].sum() > 0.8


def test_efficientnet_lite0_stride1_features_still_see_a_cat():
    x = _normalise(data.chelsea(), EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD)
    net = create_backbone("efficientnet_lite0", pretrained=True).eval()
    head = imagenet_head()
    with torch.no_grad():
        feats = net(x)
        probs = head(feats.mean(dim=(2, 3))).softmax(dim=1)[0]
    assert feats.shape == (1, 1280, 14, 14)
    assert 0 <= feats.min() and feats.max() <= 6  # ReLU6
    top5 = set(probs.topk(5).indices.tolist())
    assert top5 & IMAGENET_CAT_CLASSES
