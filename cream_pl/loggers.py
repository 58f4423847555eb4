"""W&B logging that works offline by default and goes online once the user has logged in.

Example:
    >>> logger = AutoWandbLogger(project="cream-pl", save_dir="outputs")  # doctest: +SKIP
"""

from __future__ import annotations

import netrc
import os
from typing import Any
from urllib.parse import urlparse

from pytorch_lightning.loggers import WandbLogger

__all__ = ["AutoWandbLogger", "wandb_logged_in"]


def wandb_logged_in() -> bool:
    """True when W&B credentials exist: ``WANDB_API_KEY`` or the netrc entry that ``wandb login`` writes."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = os.environ.get("NETRC", os.path.expanduser("~/.netrc"))
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class AutoWandbLogger(WandbLogger):
    """``WandbLogger`` whose ``offline`` defaults to "not logged in".

    Runs are stored under ``save_dir/wandb`` and can be uploaded later with ``wandb sync``.
    ``WANDB_MODE=disabled`` (as in the tests) turns W&B off entirely.

    Args:
        offline: ``None`` (default) = offline unless W&B credentials are present.
        **kwargs: everything ``WandbLogger`` takes (``project``, ``name``, ``group``, ``tags`` ...).
    """

    def __init__(self, offline: bool | None = None, project: str = "cream-pl", save_dir: str = "outputs", **kwargs: Any) -> None:
        if offline is None:
            offline = not wandb_logged_in()
        os.makedirs(save_dir, exist_ok=True)
        super().__init__(offline=offline, project=project, save_dir=save_dir, **kwargs)
