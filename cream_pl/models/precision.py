"""Float32 islands inside mixed-precision training: maps, EM, calibration and buffer updates.

Lightning runs every ``*_step`` under ``torch.autocast`` with ``precision="bf16-mixed"`` (or
``16-mixed``), and autocast runs ``einsum`` / ``matmul`` in the low precision even on float32
inputs. The WSOL maps are compared with thresholds 0.001 apart, and CREAM's embeddings and
CI-CAM's context pool are running averages, so all of that math runs in float32 whatever the
trainer precision: :func:`float32_math` switches autocast off for the block, and callers cast
their inputs with ``.float()``.

Example:
    >>> import torch
    >>> a = torch.ones(2, 2)
    >>> with torch.autocast("cpu", dtype=torch.bfloat16):
    ...     with float32_math(a):
    ...         (a @ a).dtype
    torch.float32
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

__all__ = ["float32_math"]


@contextmanager
def float32_math(like: Tensor | torch.device | str) -> Iterator[None]:
    """Disable autocast on the device of ``like`` (a tensor or a device) for the enclosed block."""
    device = like.device if isinstance(like, Tensor) else torch.device(like)
    with torch.autocast(device_type=device.type, enabled=False):
        yield
