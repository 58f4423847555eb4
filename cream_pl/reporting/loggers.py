"""W&B logging that works offline by default and goes online once the user has logged in.

Example:
    >>> logger = AutoWandbLogger(project="cream-pl", save_dir="outputs")  # doctest: +SKIP
"""

from __future__ import annotations

import netrc
import os
from typing import Any
from urllib.parse import urlparse

from pytorch_lightning.cli import SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger

__all__ = ["AutoWandbLogger", "RunConfigCallback", "resolve_wandb_mode", "wandb_logged_in"]


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


_MODES = {"online": "online", "run": "online", "shared": "online", "offline": "offline", "dryrun": "offline",
          "disabled": "disabled"}


def resolve_wandb_mode(offline: bool | None = None, mode: str | None = None) -> str:
    """``"online"``, ``"offline"`` or ``"disabled"``: what an :class:`AutoWandbLogger` run will be.

    In order: an explicit ``mode``; ``WANDB_MODE=disabled`` (W&B off, whatever else is set); an
    explicit ``offline``; any other ``WANDB_MODE``; else online when W&B credentials exist.

    Example:
        >>> resolve_wandb_mode(mode="dryrun"), resolve_wandb_mode(mode="disabled")
        ('offline', 'disabled')
    """
    if mode is not None:
        if mode not in _MODES:
            raise ValueError(f"W&B mode must be one of {sorted(_MODES)}, got {mode!r}")
        return _MODES[mode]
    raw = os.environ.get("WANDB_MODE", "")
    env = _MODES.get(raw)  # as W&B reads it: ' Offline ' is refused there too (in pydantic's words)
    if raw and env is None:  # before: wandb refused it at the trainer's setup, in a 60-line traceback
        from cream_pl.core.errors import UserValueError

        raise UserValueError(f"WANDB_MODE={os.environ['WANDB_MODE']}: not a W&B mode (one of {', '.join(sorted(_MODES))})")
    if env == "disabled":
        return "disabled"
    if offline is not None:
        return "offline" if offline else "online"
    if env is not None:
        return env
    return "online" if wandb_logged_in() else "offline"


_NOT_IN_NAMES = "/\\#?%:"
"""Characters W&B refuses in a project or entity name."""


class AutoWandbLogger(WandbLogger):
    """``WandbLogger`` whose ``offline`` defaults to "not logged in".

    Runs are stored under ``save_dir/wandb`` and can be uploaded later with ``wandb sync``.
    ``WANDB_MODE=disabled`` (as in the tests) turns W&B off entirely: the run is a disabled
    W&B run, and the logger writes nothing (no ``wandb/`` run directory; checkpoints and the
    fit's config still go under ``save_dir``). The mode goes
    to ``wandb.init`` directly, so, unlike ``WandbLogger(offline=True)``, the logger never rewrites
    the ``WANDB_MODE`` variable of the process.

    Args:
        offline: ``None`` (default) = offline unless W&B credentials are present (or ``WANDB_MODE``
            says otherwise); see :func:`resolve_wandb_mode`.
        **kwargs: everything ``WandbLogger`` takes (``project``, ``name``, ``group``, ``tags``,
            ``mode`` ...).
    """

    def __init__(self, offline: bool | None = None, project: str = "cream-pl", save_dir: str = "outputs", **kwargs: Any) -> None:
        from cream_pl.core.errors import UserValueError

        names = [("project", project), ("entity", kwargs.get("entity"))]  # offline, W&B takes any; its server
        names += [(var, os.environ[var]) for var in ("WANDB_PROJECT", "WANDB_ENTITY") if var in os.environ]  # (W&B
        for key, value in names:  # uses them over the config's) refuses them at `wandb sync`, after the whole fit
            if key == "entity" and value is None:
                continue
            if not isinstance(value, str) or not value.strip() or any(c in value for c in _NOT_IN_NAMES):
                what = key.removeprefix("WANDB_").lower()
                raise UserValueError(f"{key}{'=' if key.isupper() else ': '}{value!r} is no W&B {what} name (empty, or "
                                     f"with one of {' '.join(_NOT_IN_NAMES)}); W&B would refuse it when the run is synced")
        if not isinstance(save_dir, str) or not save_dir.strip():  # before: a 40-line jsonargparse traceback
            raise UserValueError(f"save_dir: {save_dir!r} is no folder (a path, e.g. outputs)")
        save_dir = os.path.expanduser(save_dir)  # as W&B does: before, '~/x' made a folder named '~' here too
        mode = resolve_wandb_mode(offline, kwargs.pop("mode", None))
        if mode == "disabled":
            kwargs["log_model"] = False  # nothing to upload to
        else:
            from cream_pl.core.io import check_output_dir

            check_output_dir(save_dir, "trainer.logger save_dir")  # a file there: one line, not FileExistsError
            os.makedirs(save_dir, exist_ok=True)
        super().__init__(offline=False, project=project, save_dir=save_dir, mode=mode, **kwargs)
        self.wandb_mode = mode
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)  # recent wandb warns about the key itself
        if mode == "disabled":
            # wandb.init creates its `dir` even for a disabled run; save_dir still reports the
            # configured folder (checkpoint paths do not depend on the mode)
            self._wandb_init.pop("dir", None)

    @property  # type: ignore[override]
    def experiment(self) -> Any:
        """The W&B run, started on first use; a value W&B refuses (a project name with ``/``, a tag over 64
        characters) is one line naming the logger, not a traceback from the trainer's setup."""
        try:
            return WandbLogger.experiment.fget(self)  # type: ignore[attr-defined]
        except Exception as err:
            if not type(err).__module__.startswith(("wandb", "pydantic")):
                raise
            from cream_pl.core.errors import UserValueError

            text = " ".join(str(err).split())[:300] or type(err).__name__
            raise UserValueError(f"trainer.logger ({type(self).__name__}): W&B refused the run: {text}") from None

    @property
    def disabled(self) -> bool:
        """True when W&B is off (``WANDB_MODE=disabled`` or ``mode="disabled"``)."""
        return self.wandb_mode == "disabled"


class RunConfigCallback(SaveConfigCallback):
    """Lightning's ``config.yaml`` of a ``cream-pl fit``, kept for every run.

    Lightning writes it to the trainer's ``log_dir``: a run folder of its own under the CSV and
    TensorBoard loggers (``version_N/``), but the ``save_dir`` itself under a W&B logger, so each fit
    replaced the last one's. Under a W&B logger it goes beside the run's checkpoints instead,
    ``<save_dir>/<project>/<run id>/config.yaml`` (where Lightning's ``ModelCheckpoint`` puts them),
    a disabled W&B run included. Not in the W&B run's ``files/``: W&B writes its own ``config.yaml`` there.
    """

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        logger = trainer.logger
        if not isinstance(logger, WandbLogger):
            return super().setup(trainer, pl_module, stage)
        if self.already_saved:
            return None
        if trainer.is_global_zero:
            version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
            folder = os.path.join(str(logger.save_dir), str(logger.name), version)  # as ModelCheckpoint's dirpath
            os.makedirs(folder, exist_ok=True)
            self.parser.save(self.config, os.path.join(folder, self.config_filename), skip_none=False, overwrite=True,
                             multifile=self.multifile)
        self.already_saved = trainer.strategy.broadcast(True)
        return None
