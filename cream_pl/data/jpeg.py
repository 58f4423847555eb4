"""The torchvision JPEG path: ``torchvision.io.decode_jpeg`` (libjpeg-turbo on the CPU, nvJPEG on a GPU).

Pillow is cream-pl's default decoder (:func:`cream_pl.data.images.load_image_rgb`, the reference's
``Image.open(path).convert("RGB")``). ``decoder="torchvision"`` (``WSOLDataModule(decoder=...)``,
``load_image_rgb(path, decoder=...)``) decodes baseline and progressive JPEG files in RGB or
grayscale with :func:`decode_jpeg_rgb` instead, and leaves every other file (PNG, CMYK JPEG, ...)
to Pillow. The checks are Pillow's: the header is read by Pillow (format, size, the
decompression-bomb limit), and a missing, empty, truncated or corrupt file raises
:class:`~cream_pl.data.images.ImageFileError` naming it. EXIF orientation is ignored, as in the
reference.

The two decoders are different builds of the same IDCT, so their pixels may differ by rounding:
``tests/test_data_jpeg.py`` bounds the difference on real JPEG files after the train and eval
transforms (:data:`MEAN_ABS_TOLERANCE`, :data:`MAX_ABS_TOLERANCE`, in 8-bit levels). On a GPU,
:func:`decode_jpeg_batch` decodes a whole batch with nvJPEG (``make bench-gpu`` measures its speed
and its difference from Pillow).

torch and torchvision are imported on first use only. torchvision 0.29 marks its image decoders
deprecated in favour of TorchCodec and warns on every import of ``torchvision.io.image`` (in every
loader worker); that one warning is filtered here, and the tests pin the behaviour either way.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cream_pl.data.images import ImageFileError, _check_exists, _decode_error, _open

__all__ = ["JPEG_MAGIC", "MEAN_ABS_TOLERANCE", "MAX_ABS_TOLERANCE", "is_jpeg", "decode_jpeg_rgb",
           "decode_jpeg_batch", "read_jpeg_bytes"]

JPEG_MAGIC = b"\xff\xd8\xff"
"""The first bytes of every JPEG file (SOI marker, then the next marker's 0xFF)."""

MEAN_ABS_TOLERANCE = 0.5
"""Bound on the mean absolute difference, in 8-bit levels, between Pillow's and torchvision's
decode of the same JPEG, after cream-pl's train or eval transform (tested on CPU)."""

MAX_ABS_TOLERANCE = 8.0
"""Bound on the largest absolute difference of one value, in 8-bit levels, under the same test."""

# A filter, not catch_warnings: that is not thread-safe, and images are decoded from threads.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision are deprecated",
                        category=DeprecationWarning)

_TORCHVISION_MODES = ("RGB", "L")  # Pillow modes of the JPEGs sent to torchvision; CMYK / YCCK stay with Pillow


def is_jpeg(path: Path | str) -> bool:
    """Whether the file starts with a JPEG's SOI marker (a missing file is not a JPEG)."""
    try:
        with open(path, "rb") as f:
            return f.read(3) == JPEG_MAGIC
    except OSError:
        return False


def _jpeg_header(path: Path) -> bool:
    """Check the file as Pillow does (exists, not empty, a readable header under the pixel limit).

    Returns whether torchvision should decode it (a JPEG in RGB or grayscale).
    """
    _check_exists(path)
    with _open(path) as img:  # the header only; its errors worded as Pillow's decode words them
        return img.format == "JPEG" and img.mode in _TORCHVISION_MODES


def read_jpeg_bytes(path: Path | str) -> Any:
    """The checked bytes of a JPEG file as a 1-D ``uint8`` tensor (``None`` when Pillow should decode it).

    Raises:
        ImageFileError: missing, empty, unreadable header, or over the pixel limit.
    """
    import torch

    path = Path(path)
    if not _jpeg_header(path):
        return None
    return torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)


def _torchvision_error(path: Path, err: Exception) -> ImageFileError:
    """One line from torchvision's message (which starts with its C++ source location)."""
    msg = " ".join(str(err).split())
    if ".cpp:" in msg:
        msg = msg.rsplit(", ", 1)[-1]
    return _decode_error(path, RuntimeError(msg))


def decode_jpeg_rgb(path: Path | str) -> np.ndarray | None:
    """Decode a JPEG with ``torchvision.io.decode_jpeg`` (CPU) to ``(H, W, 3)`` ``uint8`` RGB.

    Returns ``None`` for a file that is not an RGB or grayscale JPEG (the caller decodes it with
    Pillow). A grayscale JPEG is replicated to three channels, as Pillow's ``convert("RGB")`` does.

    Raises:
        ImageFileError: as :func:`read_jpeg_bytes`, or libjpeg-turbo refuses the data.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    path = Path(path)
    data = read_jpeg_bytes(path)
    if data is None:
        return None
    try:
        chw = decode_jpeg(data, mode=ImageReadMode.RGB)
    except RuntimeError as err:  # truncated or corrupt data: libjpeg-turbo's errors, as Pillow refuses them
        raise _torchvision_error(path, err) from None
    return np.ascontiguousarray(chw.permute(1, 2, 0).numpy())


def decode_jpeg_batch(paths: Sequence[Path | str], device: str = "cpu") -> list[Any]:
    """Decode RGB / grayscale JPEG files in one ``decode_jpeg`` call on ``device`` (nvJPEG on ``cuda``).

    Returns one ``(3, H, W)`` ``uint8`` tensor per file, on ``device``.

    Raises:
        ImageFileError: a file that is not an RGB or grayscale JPEG, or as :func:`read_jpeg_bytes`.
        ValueError: ``paths`` is empty.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    if not isinstance(device, str):
        raise TypeError(f"device must be a str such as 'cpu' or 'cuda', got {type(device).__name__}")
    if not paths:
        raise ValueError("decode_jpeg_batch needs at least one path")
    datas = []
    for p in paths:
        data = read_jpeg_bytes(p)
        if data is None:
            raise ImageFileError(p, "not an RGB or grayscale JPEG (decode it with Pillow)")
        datas.append(data)
    try:
        return list(decode_jpeg(datas, mode=ImageReadMode.RGB, device=device))
    except RuntimeError as err:
        raise _torchvision_error(Path(paths[0]), RuntimeError(f"in a batch of {len(paths)} starting here: {err}")) \
            from None
