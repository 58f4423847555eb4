"""Robust image and mask loading.

Images are decoded with Pillow (as the reference ``Image.open(path).convert("RGB")``) into 8-bit RGB:
grayscale is replicated to three channels, the alpha channel of RGBA / LA is dropped (no
compositing, like the reference), palette images are expanded, and 16-bit images are scaled to
8 bits with ``round(v * 255 / 65535)`` (Pillow alone would clip 16-bit grayscale and truncate
16-bit RGB). EXIF orientation is ignored, as in the reference. A missing, empty, truncated or
undecodable file, and an image over Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``
pixels: refused here rather than warned about, then decoded), raise :class:`ImageFileError` naming
the file. This module (with :mod:`cream_pl.data.jpeg`, its torchvision path) is the one place
images and masks are decoded (``fit``, ``localize``, ``export-scoremaps``, ``pseudo-boxes``, ``data
check --files``, ``evaluate``'s masks). ``load_image_rgb(path, decoder="torchvision")`` decodes RGB
and grayscale JPEGs with ``torchvision.io.decode_jpeg`` instead of Pillow: the same checks, pixels
within a tested tolerance of Pillow's.

Example:
    >>> import tempfile, cv2, numpy as np
    >>> p = Path(tempfile.mkdtemp()) / "gray16.png"
    >>> _ = cv2.imwrite(str(p), np.full((2, 3), 65535, np.uint16))
    >>> img = load_image_rgb(p)
    >>> img.shape, img.dtype, int(img.max())
    ((2, 3, 3), dtype('uint8'), 255)
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from cream_pl.data.errors import WSOLDataError

__all__ = ["DECODERS", "Decoder", "ImageFileError", "check_decoder", "load_image_rgb", "load_mask_gray",
           "read_protocol_mask", "read_image_size", "same_frame", "to_uint8", "check_cache_dir", "files_stamp", "check_once"]


class ImageFileError(WSOLDataError):
    """An image or mask file that is missing, empty, truncated or cannot be decoded.

    Attributes:
        path: the offending file.
    """

    def __init__(self, path: Path | str, message: str) -> None:
        self.path = Path(path)
        self.reason = message
        super().__init__(f"{self.path}: {message}")


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise ImageFileError(path, "file not found")
    if not path.is_file():
        raise ImageFileError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise ImageFileError(path, "empty file (0 bytes)")


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale an integer image to ``uint8``: 16-bit by ``round(v * 255 / 65535)``, 8-bit unchanged.

    Example:
        >>> to_uint8(np.array([0, 257, 32896, 65535], np.uint16)).tolist()
        [0, 1, 128, 255]
    """
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype in (np.uint16, np.int32, np.int64, np.uint32):
        if array.size and (int(array.min()) < 0 or int(array.max()) > 65535):
            raise ValueError(f"integer image values outside [0, 65535] (dtype {array.dtype}) are not supported")
        return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    raise ValueError(f"unsupported image dtype {array.dtype}")


def _png_bit_depth(path: Path) -> int | None:
    with open(path, "rb") as f:
        head = f.read(29)
    if len(head) >= 25 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return head[24]
    return None


# Images over Pillow's limit are refused by :func:`_open` itself (one ImageFileError), so Pillow's
# warning about them would only be noise before that line. A filter, not catch_warnings: that is not
# thread-safe, and images are decoded from threads.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _too_large(path: Path, detail: str) -> ImageFileError:
    return ImageFileError(path, f"image too large to decode ({detail}; over Pillow's limit of "
                          f"{Image.MAX_IMAGE_PIXELS} pixels, PIL.Image.MAX_IMAGE_PIXELS)")


def _check_pixels(path: Path, size: tuple[int, int]) -> None:
    """Refuse an image over ``PIL.Image.MAX_IMAGE_PIXELS`` (Pillow only warns up to twice that)."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and size[0] * size[1] > limit:
        raise _too_large(path, f"{size[0]}x{size[1]} = {size[0] * size[1]} pixels")


def _decode_error(path: Path, err: Exception) -> ImageFileError:
    msg = str(err)
    if "truncated" in msg.lower():
        return ImageFileError(path, f"truncated image file ({msg})")
    return ImageFileError(path, f"corrupt or unreadable image ({msg})")


def _open(path: Path, header_only: bool = False) -> Image.Image:
    """``Image.open`` (the header) with one-line errors; the decompression-bomb limit is checked here."""
    try:
        img = Image.open(path)
    except Image.DecompressionBombError as err:
        raise _too_large(path, str(err).split(" exceeds ")[0]) from None
    except UnidentifiedImageError:
        raise ImageFileError(path, "not an image file Pillow can decode") from None
    except (OSError, SyntaxError, ValueError) as err:
        if header_only:
            raise ImageFileError(path, f"cannot read the image header ({err})") from None
        raise _decode_error(path, err) from None
    try:
        _check_pixels(path, img.size)
    except ImageFileError:
        img.close()
        raise
    return img


def _decode_pil(path: Path) -> Image.Image:
    _check_exists(path)
    img = _open(path)
    try:
        img.load()  # raises on truncated or corrupt data
    except Image.DecompressionBombError as err:
        img.close()
        raise _too_large(path, str(err).split(" exceeds ")[0]) from None
    except (OSError, SyntaxError, ValueError) as err:
        img.close()
        raise _decode_error(path, err) from None
    return img


Decoder = Literal["pil", "torchvision"]
DECODERS: tuple[str, ...] = ("pil", "torchvision")
"""Image decoders: ``"pil"`` (Pillow, the reference's) and ``"torchvision"`` (``torchvision.io.decode_jpeg``
for RGB and grayscale JPEGs, Pillow for every other file; see :mod:`cream_pl.data.jpeg`)."""


def check_decoder(decoder: object) -> str:
    """Return ``decoder`` when it names one of :data:`DECODERS`; else a one-line ``ValueError``."""
    if not isinstance(decoder, str) or decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {', '.join(map(repr, DECODERS))}, got {decoder!r}")
    return decoder


def load_image_rgb(path: Path | str, decoder: Decoder = "pil") -> np.ndarray:
    """Load an image as an ``(H, W, 3)`` ``uint8`` RGB array.

    Args:
        path: the image file.
        decoder: ``"pil"`` or ``"torchvision"`` (JPEGs through ``torchvision.io.decode_jpeg``, within
            :data:`cream_pl.data.jpeg.MAX_ABS_TOLERANCE` of Pillow; other files through Pillow).

    Raises:
        ImageFileError: the file is missing, empty, truncated or cannot be decoded.
    """
    path = Path(path)
    if check_decoder(decoder) == "torchvision":
        from cream_pl.data.jpeg import decode_jpeg_rgb  # torch / torchvision on first use only

        arr = decode_jpeg_rgb(path)
        if arr is not None:
            return arr
    img = _decode_pil(path)
    with img:
        if img.format == "PNG" and _png_bit_depth(path) == 16 and img.mode not in ("I", "I;16", "I;16B", "I;16L"):
            # 16-bit colour PNG: Pillow keeps only the high byte, OpenCV keeps all 16 bits.
            arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if arr is None or arr.dtype != np.uint16:
                raise ImageFileError(path, "cannot decode this 16-bit PNG")
            arr = to_uint8(arr)
            if arr.ndim == 2:
                return np.ascontiguousarray(np.repeat(arr[:, :, None], 3, axis=2))
            code = cv2.COLOR_BGRA2RGB if arr.shape[2] == 4 else cv2.COLOR_BGR2RGB
            return cv2.cvtColor(arr, code)
        if img.mode in ("I", "I;16", "I;16B", "I;16L"):
            try:
                arr = to_uint8(np.asarray(img))
            except ValueError as err:
                raise ImageFileError(path, str(err)) from None
            return np.ascontiguousarray(np.repeat(arr[:, :, None], 3, axis=2))
        if img.mode == "F":
            raise ImageFileError(path, "floating-point images are not supported")
        return np.asarray(img.convert("RGB")).copy()


def load_mask_gray(path: Path | str) -> np.ndarray:
    """Load a mask PNG the way the benchmark does (``cv2.IMREAD_GRAYSCALE``) as ``(H, W)`` ``uint8``.

    Raises:
        ImageFileError: the file is missing, empty, truncated or cannot be decoded.
    """
    path = Path(path)
    mask = _whole_png_gray(path)
    if mask is None:
        _decode_pil(path).close()  # integrity check: OpenCV silently decodes truncated files
        mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise ImageFileError(path, "OpenCV cannot decode this mask")
    if not mask.any():
        _refuse_alpha_only_mask(path)
    return mask


def same_frame(hw: Sequence[int], other_hw: Sequence[int]) -> bool:
    """Whether two ``(height, width)`` sizes can be one picture at two resolutions: equal, or of one aspect up to the
    rounding of a resize (half a pixel per side). The protocol resizes every mask PNG to the 224 grid on its own, so a
    mask stored at another resolution than its image (OpenImages' are) scores alike; one of another shape cannot.

    Example:
        >>> same_frame((30, 40), (60, 80)), same_frame((683, 1024), (1067, 1600)), same_frame((10, 10), (50, 100))
        (True, True, False)
    """
    (h, w), (h2, w2) = hw, other_hw
    return abs(w * h2 - w2 * h) <= (max(w, w2) + max(h, h2)) / 2


def read_protocol_mask(
    mask_pngs: Iterable[Path | str],
    ignore_png: Path | str | None,
    size: int = 224,
    expected_hw: tuple[int, int] | None = None,
) -> np.ndarray:
    """Ground-truth map of one image as the benchmark builds it (``evaluation.get_mask``): the one reading behind
    the data module's :func:`~cream_pl.data.datamodule.protocol_mask` and ``cream-pl evaluate``'s
    :func:`~cream_pl.metrics.gt_mask.load_gt_mask`.

    Each PNG is read as grey (:func:`load_mask_gray`), resized to ``size x size`` with nearest neighbour and
    thresholded at 0.5; instance masks are united; ignore = the ignore PNG and not foreground.

    Args:
        mask_pngs: instance mask PNGs (none: an all-background map).
        ignore_png: ignore PNG, or ``None`` / ``""``.
        size: side of the square output.
        expected_hw: the image's ``(height, width)`` where known: a PNG of another shape is refused (the
            benchmark would stretch it onto the image silently); one of the image's shape at another resolution is
            read as the benchmark reads it (see :func:`same_frame`). Where the size is not known (OpenImages lists
            none), the PNGs of one image must still be of one shape.

    Returns:
        ``(size, size)`` uint8: 1 = foreground, 0 = background, 255 = ignore.
    """
    first: list[tuple[Path | str, tuple[int, ...]]] = []

    def load(path: Path | str) -> np.ndarray:
        gray = load_mask_gray(path)
        if expected_hw is not None and not same_frame(gray.shape[:2], expected_hw):
            raise ImageFileError(path, f"mask is {gray.shape[1]}x{gray.shape[0]} but the image is "
                                       f"{expected_hw[1]}x{expected_hw[0]}")
        if first and not same_frame(gray.shape[:2], first[0][1]):  # before: scored, each stretched on its own
            (h, w) = first[0][1]
            raise ImageFileError(path, f"mask is {gray.shape[1]}x{gray.shape[0]} but {first[0][0]}, a mask of the "
                                       f"same image, is {w}x{h}")
        first[:] = first or [(path, gray.shape[:2])]
        # nearest neighbour picks the same source pixels for uint8 as for the benchmark's float32 copy, and
        # ``float32(v) > 0.5`` is ``v >= 1`` for uint8: one byte per pixel instead of four, same mask
        return cv2.resize(gray, (size, size), interpolation=cv2.INTER_NEAREST) >= 1

    fg = np.zeros((size, size), bool)
    for path in mask_pngs:
        fg |= load(path)
    out = fg.astype(np.uint8)
    if ignore_png is not None and os.fspath(ignore_png) != "":
        out[load(ignore_png) & ~fg] = 255
    return out


def _refuse_alpha_only_mask(path: Path) -> None:
    """An all-0 grey mask PNG whose alpha channel draws the shape would count as all background (the
    benchmark reads masks as grey, ``cv2.IMREAD_GRAYSCALE``): refuse it, naming the file."""
    try:
        with open(path, "rb") as f:
            head = f.read(26)
    except OSError:
        return
    if not head.startswith(_PNG_SIGNATURE) or len(head) < 26 or head[25] not in (4, 6):  # grey+alpha, RGBA
        return
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is not None and raw.ndim == 3 and raw.shape[2] in (2, 4) and raw[..., -1].min() != raw[..., -1].max():
        raise ImageFileError(path, "the mask's grey values are all 0 but its alpha channel draws a shape; masks are "
                                   "read as grey (cv2.IMREAD_GRAYSCALE, foreground > 0), so save it as a grey PNG")


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk: length 0, type, CRC


def _whole_png_gray(path: Path) -> np.ndarray | None:
    """The fast path of :func:`load_mask_gray`: one read and one OpenCV decode of a PNG that is whole.

    A PNG that starts with the signature, ends with its IEND chunk and declares no more pixels than
    Pillow's decompression-bomb limit is decoded from the bytes read (libpng checks every chunk's CRC
    and the compressed data). Anything else (``None``) takes the checked path, which names the problem.
    """
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if len(data) < 33 or not data.startswith(_PNG_SIGNATURE) or not data.endswith(_PNG_END):
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        return None
    mask = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    return mask if mask is not None and mask.shape == (height, width) else None


def read_image_size(path: Path | str) -> tuple[int, int]:
    """Return ``(width, height)`` of an image from its header (no full decode)."""
    path = Path(path)
    _check_exists(path)
    with _open(path, header_only=True) as img:
        return img.size


# ---------------------------------------------------------------------------------------------- checked once


def check_cache_dir() -> Path:
    """Where :func:`check_once` keeps its stamps.

    ``$CREAM_PL_CACHE_DIR``, else ``$XDG_CACHE_HOME/cream-pl``, else ``~/.cache/cream-pl``, plus
    ``/checked``.
    """
    base = os.environ.get("CREAM_PL_CACHE_DIR")
    if not base:
        base = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cream-pl")
    return Path(base) / "checked"


def files_stamp(paths: Iterable[Path | str], salt: str = "") -> str:
    """A digest of the absolute path, size and modification time of every file (one ``stat`` each).

    A file that is missing gives a different stamp than any existing file, so a stamp only
    matches when every file is as it was.

    Example:
        >>> import tempfile
        >>> f = Path(tempfile.mkdtemp()) / "a.txt"; _ = f.write_text("x")
        >>> s = files_stamp([f]); s == files_stamp([f]), s == files_stamp([f], salt="other")
        (True, False)
    """
    digest = hashlib.sha256(salt.encode("utf-8"))
    for p in paths:
        p = os.path.abspath(p)
        try:
            st = os.stat(p)
            digest.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{p}\0missing\n".encode())
    return digest.hexdigest()


def check_once(stamp: str, check: Callable[[], None]) -> bool:
    """Run ``check`` unless it already passed for ``stamp``; returns whether it ran.

    ``check`` raises on a problem; when it returns, an empty marker ``<check_cache_dir>/<stamp>``
    is written (best effort: an unwritable cache only means the check runs again next time).
    """
    marker = check_cache_dir() / stamp
    if marker.is_file():
        return False
    check()
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        pass
    return True
