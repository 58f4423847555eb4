"""The benchmark's ground-truth mask of one image (``evaluation.get_mask``), numpy + OpenCV + Pillow only.

The metrics' entry to it: the torchmetrics class's callers (:mod:`cream_pl.metrics.pxap` re-exports
:func:`load_gt_mask`) and the torch-free ``cream-pl evaluate`` engine (:mod:`cream_pl.metrics.scoring`). The
reading itself is :func:`cream_pl.data.images.read_protocol_mask`, which the data module's maps use too.

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
    from cream_pl.data.images import read_protocol_mask  # the one reading, the data module's too

    if not mask_paths:
        raise ValueError("an image needs at least one mask PNG")
    return read_protocol_mask(mask_paths, ignore_path, size, expected_hw)
