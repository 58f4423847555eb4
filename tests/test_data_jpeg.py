"""The torchvision JPEG decoder: the same tensors as Pillow within a stated tolerance, the same checks, on real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cream_pl.core.errors import UserValueError
from cream_pl.data.images import ImageFileError, check_decoder, load_image_rgb
from cream_pl.data.jpeg import (
    MAX_ABS_TOLERANCE,
    MEAN_ABS_TOLERANCE,
    decode_jpeg_batch,
    decode_jpeg_rgb,
    is_jpeg,
)
from cream_pl.data.transforms import IMAGENET_STD, build_eval_transform, build_train_transform


def _scene(w: int = 500, h: int = 375, seed: int = 0) -> np.ndarray:
    """A colourful image with edges, gradients and texture (JPEG artefacts everywhere)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([255 * xx / w, 255 * yy / h, 128 + 60 * np.sin(xx / 9) * np.cos(yy / 7)], axis=2)
    img[h // 4: h // 2, w // 5: w // 2] = (230, 30, 40)  # a saturated block: chroma edges
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _jpeg(path: Path, array: np.ndarray, mode: str = "RGB", **kw) -> Path:
    Image.fromarray(array).convert(mode).save(path, "JPEG", quality=kw.pop("quality", 92), **kw)
    return path


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("jpegs")
    img = _scene()
    return {
        "420": _jpeg(d / "a.jpg", img),
        "444": _jpeg(d / "b.jpg", img, subsampling=0),
        "progressive": _jpeg(d / "c.jpg", _scene(seed=1), progressive=True),
        "gray": _jpeg(d / "g.jpg", img, mode="L"),
        "odd_size": _jpeg(d / "o.jpg", _scene(333, 217, seed=2), quality=75),
    }


def _levels(a, b) -> np.ndarray:
    """Absolute difference of two normalised ``(3, H, W)`` tensors, in 8-bit levels."""
    std = np.asarray(IMAGENET_STD, np.float64)[:, None, None] * 255.0
    return np.abs(a.numpy().astype(np.float64) - b.numpy().astype(np.float64)) * std


@pytest.mark.parametrize("kind", ["420", "444", "progressive", "gray", "odd_size"])
def test_torchvision_gives_the_pil_tensors_within_tolerance(jpegs, kind: str) -> None:
    path = jpegs[kind]
    pil, tv = load_image_rgb(path, "pil"), load_image_rgb(path, "torchvision")
    assert tv.shape == pil.shape and tv.dtype == np.uint8 and tv.flags["C_CONTIGUOUS"]
    ev = build_eval_transform(224)
    d = _levels(ev(image=pil)["image"], ev(image=tv)["image"])
    assert d.mean() <= MEAN_ABS_TOLERANCE and d.max() <= MAX_ABS_TOLERANCE + 1e-3, (d.mean(), d.max())
    for seed in range(3):  # the same crop and flip on both sides
        t1, t2 = build_train_transform(256, 224), build_train_transform(256, 224)
        t1.set_random_seed(seed)
        t2.set_random_seed(seed)
        d = _levels(t1(image=pil)["image"], t2(image=tv)["image"])
        assert d.mean() <= MEAN_ABS_TOLERANCE and d.max() <= MAX_ABS_TOLERANCE + 1e-3, (seed, d.mean(), d.max())


def test_the_tolerance_catches_a_wrong_decode(jpegs) -> None:
    """A swapped channel order or a one-row shift is far outside the tolerance: the test above can fail."""
    pil = load_image_rgb(jpegs["420"], "pil")
    ev = build_eval_transform(224)
    for wrong in (pil[:, :, ::-1].copy(), np.roll(pil, 3, axis=0)):
        d = _levels(ev(image=pil)["image"], ev(image=wrong)["image"])
        assert d.mean() > MEAN_ABS_TOLERANCE or d.max() > MAX_ABS_TOLERANCE


def test_gray_jpeg_is_replicated_to_three_channels(jpegs) -> None:
    tv = load_image_rgb(jpegs["gray"], "torchvision")
    assert tv.shape[2] == 3 and (tv[:, :, 0] == tv[:, :, 1]).all() and (tv[:, :, 1] == tv[:, :, 2]).all()


def test_files_torchvision_does_not_take_go_to_pillow(tmp_path: Path) -> None:
    img = _scene(64, 48)
    png = tmp_path / "p.png"
    Image.fromarray(img).save(png)
    cmyk = tmp_path / "k.jpg"
    Image.fromarray(img).convert("CMYK").save(cmyk, "JPEG", quality=92)
    for path in (png, cmyk):
        assert decode_jpeg_rgb(path) is None
        assert np.array_equal(load_image_rgb(path, "torchvision"), load_image_rgb(path, "pil"))
    assert not is_jpeg(png) and is_jpeg(cmyk) and not is_jpeg(tmp_path / "missing.jpg")


def test_bad_files_fail_alike_under_both_decoders(jpegs, tmp_path: Path) -> None:
    data = jpegs["420"].read_bytes()
    cases = {"truncated.jpg": data[: len(data) // 2], "empty.jpg": b"", "header_only.jpg": data[:600],
             "garbage.jpg": b"\xff\xd8\xff" + bytes(range(256)) * 4}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    for decoder in ("pil", "torchvision"):
        for name in [*cases, "missing.jpg"]:
            with pytest.raises(ImageFileError) as err:
                load_image_rgb(tmp_path / name, decoder)
            assert name in str(err.value) and "\n" not in str(err.value)
        with pytest.raises(ImageFileError, match="truncated"):
            load_image_rgb(tmp_path / "truncated.jpg", decoder)


def test_trailing_bytes_after_the_end_marker_are_fine(jpegs, tmp_path: Path) -> None:
    padded = tmp_path / "padded.jpg"
    padded.write_bytes(jpegs["420"].read_bytes() + b"\x00" * 100)
    assert np.array_equal(load_image_rgb(padded, "torchvision"), load_image_rgb(jpegs["420"], "torchvision"))


def test_batch_decode_equals_one_by_one_on_the_cpu(jpegs, tmp_path: Path) -> None:
    paths = [jpegs[k] for k in ("420", "444", "gray", "odd_size")]
    out = decode_jpeg_batch(paths, "cpu")
    assert len(out) == len(paths)
    for p, chw in zip(paths, out):
        assert str(chw.device) == "cpu" and chw.shape[0] == 3
        assert np.array_equal(chw.permute(1, 2, 0).numpy(), decode_jpeg_rgb(p))
    png = tmp_path / "p.png"
    Image.fromarray(_scene(32, 32)).save(png)
    with pytest.raises(ImageFileError, match="p.png"):
        decode_jpeg_batch([jpegs["420"], png], "cpu")
    with pytest.raises(ValueError, match="at least one"):
        decode_jpeg_batch([], "cpu")
    with pytest.raises(TypeError, match="device"):
        decode_jpeg_batch(paths, 0)  # type: ignore[arg-type]


def test_decoder_names_are_checked() -> None:
    assert check_decoder("pil") == "pil" and check_decoder("torchvision") == "torchvision"
    for bad in ("PIL", "cv2", None, 1):
        with pytest.raises(ValueError, match="decoder must be one of 'pil', 'torchvision'"):
            check_decoder(bad)


def _dataset(root: Path, n: int = 6) -> Path:
    from cream_pl.pipelines.bench_loading import write_cub_sized_jpegs

    return write_cub_sized_jpegs(root, num_train=n, num_val=2, num_classes=2, seed=3)


def test_datamodule_decoder_option_gives_the_same_batches(tmp_path: Path) -> None:
    import torch

    from cream_pl.data import WSOLDataModule

    root = _dataset(tmp_path / "d")
    batches = {}
    for decoder in ("pil", "torchvision"):
        dm = WSOLDataModule(str(root), batch_size=3, decoder=decoder)
        dm.setup("fit")
        assert dm.train_dataset().decoder == decoder and dm.eval_dataset("val").decoder == decoder
        torch.manual_seed(0)
        train = next(iter(dm.train_dataloader()))
        val = next(iter(dm.val_dataloader()))
        batches[decoder] = (train, val)
    (t1, v1), (t2, v2) = batches["pil"], batches["torchvision"]
    assert t1["image_id"] == t2["image_id"] and torch.equal(v1["boxes"][0], v2["boxes"][0])
    for a, b in ((t1["image"], t2["image"]), (v1["image"], v2["image"])):
        for x, y in zip(a, b):
            d = _levels(x, y)
            assert d.mean() <= MEAN_ABS_TOLERANCE and d.max() <= MAX_ABS_TOLERANCE + 1e-3


def test_datamodule_refuses_an_unknown_decoder_in_one_line(tmp_path: Path) -> None:
    from cream_pl.data import WSOLDataModule

    root = _dataset(tmp_path / "d", n=2)
    with pytest.raises(UserValueError, match=r"^decoder must be one of 'pil', 'torchvision', got 'nvjpeg'$"):
        WSOLDataModule(str(root), decoder="nvjpeg")  # type: ignore[arg-type]
