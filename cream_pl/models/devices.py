"""Devices and Trainer device options, checked before any work (one line naming the option).

:func:`resolve_device` turns ``--device`` (``localize``, ``export-scoremaps``) into a torch device
that exists on this machine; :func:`check_trainer_options` checks ``--accelerator / --devices /
--strategy / --precision`` (``pseudo-boxes``, ``train-regressor``) the way ``pl.Trainer`` will,
without building one (a Trainer prints its device lines first).

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> check_trainer_options(accelerator="cpu", devices=1)
"""

from __future__ import annotations

from typing import Any

from cream_pl.core.errors import UserValueError

__all__ = ["resolve_device", "check_trainer_options"]


def resolve_device(name: str | None) -> Any:
    """The torch device ``name`` (default: CUDA when available, else CPU), checked to exist here.

    Raises:
        UserValueError: an unknown device name, or a CUDA / MPS device this machine does not have.
    """
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise UserValueError(f"--device {name}: not a torch device (e.g. cpu, cuda, cuda:0)") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserValueError(f"--device {name}: this machine has no CUDA GPU (use --device cpu)")
        if dev.index is not None and dev.index >= count:
            raise UserValueError(f"--device {name}: this machine has {count} CUDA device(s) (cuda:0 .. "
                                 f"cuda:{count - 1})")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UserValueError(f"--device {name}: MPS is not available on this machine (use --device cpu)")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise UserValueError(f"--device {name}: unsupported device type {dev.type!r} (use cpu or cuda)")
    return dev


def check_trainer_options(
    *, accelerator: Any = "auto", devices: Any = "auto", strategy: Any = "auto", precision: Any = None
) -> None:
    """Check Trainer device options as ``pl.Trainer`` would (its accelerator connector), silently.

    Raises:
        UserValueError: e.g. ``--accelerator gpu`` without a GPU, ``--devices banana``, an unknown
            ``--strategy`` or ``--precision``; one line naming the options.
    """
    from pytorch_lightning.trainer.connectors.accelerator_connector import _AcceleratorConnector

    given = f"--accelerator {accelerator} --devices {devices} --strategy {strategy}"
    if precision is not None:
        given += f" --precision {precision}"
    try:
        _AcceleratorConnector(devices=devices, accelerator=accelerator, strategy=strategy, precision=precision)
    except Exception as err:  # noqa: BLE001 - MisconfigurationException, ValueError, TypeError: the user's options
        text = " ".join(str(err).split()) or type(err).__name__
        raise UserValueError(f"{given}: {text[:300]}") from None
