"""Image loading: valid but unusual files load as 8-bit RGB; missing, empty and truncated files fail by name."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from cream_pl.data.images import ImageFileError, load_image_rgb, load_mask_gray, read_image_size, to_uint8

RNG = np.random.default_rng(0)


def test_rgb_png_and_jpeg_match_pillow(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image_rgb(tmp_path / "a.png"), rgb)
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    expected = np.asarray(Image.open(tmp_path / "a.jpg").convert("RGB"))  # the reference's decode
    np.testing.assert_array_equal(load_image_rgb(tmp_path / "a.jpg"), expected)


def test_grayscale_is_replicated(tmp_path: Path) -> None:
    gray = RNG.integers(0, 256, (6, 5), dtype=np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    img = load_image_rgb(tmp_path / "g.png")
    assert img.shape == (6, 5, 3) and img.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(img[:, :, c], gray)


def test_rgba_drops_alpha_like_the_reference(tmp_path: Path) -> None:
    rgba = RNG.integers(0, 256, (4, 8, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image_rgb(tmp_path / "a.png"), rgba[:, :, :3])


def test_gray_alpha_and_palette(tmp_path: Path) -> None:
    la = RNG.integers(0, 256, (4, 4, 2), dtype=np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(load_image_rgb(tmp_path / "la.png")[:, :, 1], la[:, :, 0])
    rgb = np.zeros((3, 3, 3), np.uint8)
    rgb[1, 1] = (255, 0, 0)
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_image_rgb(tmp_path / "p.png"), rgb)


def test_16bit_grayscale_png_is_scaled(tmp_path: Path) -> None:
    gray16 = np.array([[0, 257, 32896], [65535, 1000, 60000]], np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), gray16)
    img = load_image_rgb(tmp_path / "g16.png")
    expected = np.round(gray16 / 257.0).astype(np.uint8)  # 255 / 65535 = 1 / 257
    for c in range(3):
        np.testing.assert_array_equal(img[:, :, c], expected)


def test_16bit_rgb_and_rgba_png_are_scaled(tmp_path: Path) -> None:
    rgb16 = RNG.integers(0, 65536, (5, 6, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "c16.png"), rgb16[:, :, ::-1])  # OpenCV writes BGR
    np.testing.assert_array_equal(load_image_rgb(tmp_path / "c16.png"), np.round(rgb16 / 257.0).astype(np.uint8))
    rgba16 = np.concatenate([rgb16, np.full((5, 6, 1), 123, np.uint16)], axis=2)
    cv2.imwrite(str(tmp_path / "c16a.png"), rgba16[:, :, [2, 1, 0, 3]])
    np.testing.assert_array_equal(load_image_rgb(tmp_path / "c16a.png"), np.round(rgb16 / 257.0).astype(np.uint8))


def test_to_uint8_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="outside"):
        to_uint8(np.array([70000], np.int32))


def _encoded(suffix: str) -> bytes:
    img = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(suffix, img)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_file_fails_by_name(tmp_path: Path, suffix: str) -> None:
    data = _encoded(suffix)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageFileError, match="truncated") as info:
        load_image_rgb(path)
    assert info.value.path == path and str(path) in str(info.value)


def test_missing_file_fails_by_name(tmp_path: Path) -> None:
    with pytest.raises(ImageFileError, match="file not found") as info:
        load_image_rgb(tmp_path / "nope.png")
    assert str(tmp_path / "nope.png") in str(info.value)


def test_empty_file_fails_by_name(tmp_path: Path) -> None:
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(ImageFileError, match=r"e.png: empty file"):
        load_image_rgb(tmp_path / "e.png")


def test_not_an_image_fails_by_name(tmp_path: Path) -> None:
    (tmp_path / "t.png").write_text("hello")
    with pytest.raises(ImageFileError, match=r"t.png: not an image"):
        load_image_rgb(tmp_path / "t.png")


def test_mask_loading_matches_opencv_and_checks_integrity(tmp_path: Path) -> None:
    mask = (RNG.random((9, 7)) > 0.5).astype(np.uint8) * 255
    rgba = np.dstack([mask, mask, mask, np.full_like(mask, 255)])  # ignore PNGs may be 3- or 4-channel
    cv2.imwrite(str(tmp_path / "m.png"), rgba)
    np.testing.assert_array_equal(load_mask_gray(tmp_path / "m.png"),
                                  cv2.imread(str(tmp_path / "m.png"), cv2.IMREAD_GRAYSCALE))
    big = RNG.integers(0, 256, (64, 64), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "big.png"), big)
    (tmp_path / "cut.png").write_bytes((tmp_path / "big.png").read_bytes()[:-200])
    with pytest.raises(ImageFileError, match="cut.png: truncated"):
        load_mask_gray(tmp_path / "cut.png")


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_a_mask_drawn_only_in_its_alpha_channel_is_refused_by_name(mode: str, tmp_path: Path) -> None:
    shape = np.zeros((12, 10), np.uint8)
    shape[3:8, 2:6] = 255
    channels = 4 if mode == "RGBA" else 2
    drawn = np.zeros((12, 10, channels), np.uint8)
    drawn[..., -1] = shape  # grey 0 everywhere: cv2.IMREAD_GRAYSCALE sees an empty mask
    Image.fromarray(drawn, mode).save(tmp_path / "alpha.png")
    assert not cv2.imread(str(tmp_path / "alpha.png"), cv2.IMREAD_GRAYSCALE).any()
    with pytest.raises(ImageFileError, match=r"alpha.png: the mask's grey values are all 0 but its alpha channel"):
        load_mask_gray(tmp_path / "alpha.png")
    opaque = np.zeros((12, 10, channels), np.uint8)
    opaque[..., -1] = 255  # an empty mask saved with an opaque alpha is still an empty mask
    Image.fromarray(opaque, mode).save(tmp_path / "empty.png")
    assert not load_mask_gray(tmp_path / "empty.png").any()


def test_read_image_size(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((11, 13, 3), np.uint8)).save(tmp_path / "s.jpg")
    assert read_image_size(tmp_path / "s.jpg") == (13, 11)
    with pytest.raises(ImageFileError, match="file not found"):
        read_image_size(tmp_path / "none.jpg")
