"""The benchmark's ground-truth mask of one image (``evaluation.get_mask``), numpy + OpenCV + Pillow only.

Both PxAP paths build it here: the torchmetrics class's callers (:mod:`cream_pl.metrics.pxap`
re-exports :func:`load_gt_mask`) and the torch-free ``cream-pl evaluate`` engine
(:mod:`cream_pl.metrics.scoring`).

Example:
    >>> import tempfile, cv2
    >>> d = tempfile.mkdtemp(); m = np.zeros((4, 4), np.uint8); m[:2] = 255
    >>> _ = cv2.imwrite(f"{d}/m.png", m)
    >>> load_gt_mask([f"{d}/m.png"], None, size=2).tolist()
    [[1, 1], [0, 0]]
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

__all__ = ["IGNORE", "load_gt_mask"]

IGNORE = 255
_RESIZE_LENGTH = 224  # cream_pl.metrics.functional.RESIZE_LENGTH (the protocol's grid)


def _read_mask_png(path: str, size: int, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    import cv2

    from cream_pl.data.images import ImageFileError, load_mask_gray  # the one decoder: checked before OpenCV

    image = load_mask_gray(path)  # ImageFileError (a ValueError) naming the file: missing, truncated, ...
    if expected_hw is not None and image.shape != tuple(expected_hw):  # the data module's check, the same words
        raise ImageFileError(path, f"mask is {image.shape[1]}x{image.shape[0]} but the image is "
                                   f"{expected_hw[1]}x{expected_hw[0]}")
    # nearest neighbour picks the same source pixels for uint8 as for the benchmark's float32 copy, and
    # ``float32(v) > 0.5`` is ``v >= 1`` for uint8: one byte per pixel instead of four, same mask
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_NEAREST) >= 1


def load_gt_mask(
    mask_paths: Sequence[str | os.PathLike[str]],
    ignore_path: str | os.PathLike[str] | None,
    size: int = _RESIZE_LENGTH,
    expected_hw: tuple[int, int] | None = None,
) -> np.ndarray:
    """GT mask of one image as the benchmark builds it (``evaluation.get_mask``).

    Each PNG is read as greyscale, resized to ``size x size`` with nearest neighbour and
    thresholded at 0.5; instance masks are united. Ignore = ignore PNG and not foreground.
    ``ignore_path`` may be ``None`` or empty (no ignore region; the benchmark crashes there,
    wsolevaluation issue #33). ``expected_hw``: the image's ``(height, width)`` where the metadata
    gives it; a PNG of another size is refused (the benchmark would resize it silently).

    Returns:
        uint8 ``(size, size)``: 1 foreground, 0 background, 255 ignore.
    """
    if not mask_paths:
        raise ValueError("an image needs at least one mask PNG")
    foreground = np.stack([_read_mask_png(os.fspath(p), size, expected_hw) for p in mask_paths]).any(axis=0)
    if ignore_path is None or os.fspath(ignore_path) == "":
        ignore = np.zeros_like(foreground)
    else:
        ignore = np.logical_and(_read_mask_png(os.fspath(ignore_path), size, expected_hw), ~foreground)
    return foreground.astype(np.uint8) + IGNORE * ignore.astype(np.uint8)
