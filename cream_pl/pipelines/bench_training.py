"""Training and validation speed of a recipe's model, as its ``cream-pl fit`` runs it (``make bench``, ``make bench-gpu``).

- :func:`build_recipe_model`: the ``WSOLClassifier`` of a recipe (``experiments/*.yaml``: backbone,
  its kwargs, optimiser, CREAM settings), random init (``pretrained=False``): speed does not depend
  on the weights.
- :func:`training_images_per_s`: images/s of the model's own ``training_step`` (forward, loss,
  CREAM embedding update) + backward + its optimiser's step, on random data already on the device,
  under the precision Lightning would apply (``"32-true"``, or ``"bf16-mixed"``: autocast to
  bfloat16 around the step, as Lightning's ``MixedPrecision`` plugin does) and the recipe's
  ``trainer.deterministic`` flags (:func:`recipe_determinism`).
- :func:`val_epoch_seconds`: one whole ``Trainer.validate`` epoch (loader, forward, maps, metrics,
  and with ``cream_search`` the scoring of every candidate).

Example:
    >>> model = build_recipe_model("experiments/cub_resnet50_cream.yaml", num_classes=4)
    >>> model.hparams.backbone, model.hparams.pretrained, model.hparams.cream
    ('resnet50', False, True)
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["CUB_RECIPES", "PRECISIONS", "recipe_section", "build_recipe_model", "recipe_determinism", "training_images_per_s",
           "val_epoch_seconds", "synchronize"]

REPO_ROOT = Path(__file__).resolve().parents[2]
CUB_RECIPES = {"vgg16": REPO_ROOT / "experiments" / "cub_vgg16_cream.yaml",
               "resnet50": REPO_ROOT / "experiments" / "cub_resnet50_cream.yaml"}
"""The CUB CREAM recipes whose speed ``make bench`` and ``make bench-gpu`` report."""

PRECISIONS = ("32-true", "bf16-mixed")
"""Lightning precision names :func:`training_images_per_s` accepts."""


def recipe_section(recipe: Path | str, section: str) -> dict[str, Any]:
    """``<section>.init_args`` (``model`` / ``data``) or the ``trainer`` mapping of a recipe file.

    Raises:
        UserFileNotFoundError: no such file.
        UserValueError: the file has no such section.
    """
    import yaml

    from cream_pl.core.errors import UserFileNotFoundError, UserValueError

    path = Path(recipe)
    if not path.is_file():
        raise UserFileNotFoundError(f"recipe {path} not found")
    cfg = yaml.safe_load(path.read_text()) or {}
    node = cfg.get(section)
    if not isinstance(node, dict):
        raise UserValueError(f"recipe {path} has no {section!r} section")
    if section == "trainer":
        return dict(node)
    args = node.get("init_args")
    if not isinstance(args, dict):
        raise UserValueError(f"recipe {path}: {section} has no init_args")
    return dict(args)


def build_recipe_model(recipe: Path | str, num_classes: int = 200, *, channels_last: bool = False,
                       cream_search_from: Path | str | None = None, **overrides: Any) -> Any:
    """The recipe's ``WSOLClassifier`` with random weights.

    Args:
        recipe: a recipe YAML whose model is a ``WSOLClassifier``.
        num_classes: classes of the head (CUB: 200).
        channels_last: keep the backbone in the channels-last memory format.
        cream_search_from: another recipe whose ``cream_search`` grid (and the ``ablation_lambdas``
            it needs) to add; the CUB recipes set none.
        overrides: more ``WSOLClassifier`` arguments (e.g. ``eval_size``).
    """
    from cream_pl.core.errors import UserValueError
    from cream_pl.models import WSOLClassifier

    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    args = recipe_section(recipe, "model")
    args.update(pretrained=False, channels_last=bool(channels_last), num_classes=num_classes)
    if cream_search_from is not None:
        other = recipe_section(cream_search_from, "model")
        if not other.get("cream_search"):
            raise UserValueError(f"recipe {cream_search_from} sets no cream_search")
        args["cream_search"] = other["cream_search"]
        args["ablation_lambdas"] = other.get("ablation_lambdas", [])
    args.update(overrides)
    return WSOLClassifier(**args)


@contextlib.contextmanager
def recipe_determinism(deterministic: bool | str | None) -> Iterator[None]:
    """Apply ``Trainer(deterministic=...)``'s torch flags for the block, then restore them.

    ``True`` / ``"warn"``: deterministic algorithms (``"warn"``: warn only), cuDNN autotuning off,
    ``CUBLAS_WORKSPACE_CONFIG=:4096:8``, as Lightning sets them; ``None`` / ``False``: unchanged.
    """
    import torch

    if deterministic not in (None, False, True, "warn"):
        raise ValueError(f"deterministic must be None, a bool or 'warn', got {deterministic!r}")
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    try:
        if deterministic:
            torch.backends.cudnn.benchmark = False
            torch.use_deterministic_algorithms(True, warn_only=deterministic == "warn")
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]
        if saved[3] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[3]


def synchronize(device: Any) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _positive(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def training_images_per_s(model: Any, device: str = "cpu", *, batch_size: int = 32, size: int = 224, steps: int = 10,
                          warmup: int = 2, repeats: int = 3, precision: str = "32-true",
                          deterministic: bool | str | None = None) -> dict[str, Any]:
    """Training images/s of ``model`` on ``device`` (the median of ``repeats`` blocks of ``steps`` steps).

    Each step is the model's ``training_step`` (under bfloat16 autocast for ``"bf16-mixed"``), then
    ``zero_grad``, ``backward`` and the step of the optimiser of ``configure_optimizers``, on a
    random ``(batch_size, 3, size, size)`` batch made once on the device (the loader is measured
    apart). ``warmup`` untimed steps come first (kernel selection, allocator).

    Returns:
        ``images_per_s``, ``step_s`` (seconds per step) and the settings.
    """
    import torch

    for name, value in (("batch_size", batch_size), ("size", size), ("steps", steps), ("repeats", repeats)):
        _positive(name, value)
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    dev = torch.device(device)
    model = model.to(dev).train()
    opt = model.configure_optimizers()["optimizer"]
    gen = torch.Generator().manual_seed(0)
    batch = {"image": torch.randn(batch_size, 3, size, size, generator=gen).to(dev),
             "label": torch.randint(0, model.hparams.num_classes, (batch_size,), generator=gen).to(dev)}
    bf16 = precision == "bf16-mixed"

    def step(i: int) -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model.training_step(batch, i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = []
    with recipe_determinism(deterministic), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")  # no Trainer: logging is skipped, as intended
        for i in range(warmup):
            step(i)
        for _ in range(repeats):
            synchronize(dev)
            t = time.perf_counter()
            for i in range(steps):
                step(i)
            synchronize(dev)
            times.append(time.perf_counter() - t)
    times.sort()
    block = times[len(times) // 2]
    return {"images_per_s": steps * batch_size / block, "step_s": block / steps, "batch_size": batch_size,
            "size": size, "steps": steps, "warmup": warmup, "repeats": repeats, "precision": precision,
            "channels_last": bool(getattr(model.backbone, "channels_last", False)), "device": str(dev),
            "deterministic": deterministic}


def val_epoch_seconds(model: Any, datamodule: Any, *, accelerator: str = "cpu", precision: str = "32-true",
                      repeats: int = 1, warmup: bool = True) -> float:
    """Wall seconds of the fastest of ``repeats`` whole ``Trainer.validate`` epochs (``datamodule``'s val split).

    With ``warmup``, an untimed validation of one batch comes first (compiled kernels, device
    set-up: once per process, not per epoch).
    """
    import pytorch_lightning as pl

    _positive("repeats", repeats)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    kw = dict(accelerator=accelerator, devices=1, precision=precision, logger=False, enable_progress_bar=False,
              enable_model_summary=False, enable_checkpointing=False)
    if warmup:
        pl.Trainer(**kw, limit_val_batches=1).validate(model, datamodule=datamodule, verbose=False)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        pl.Trainer(**kw).validate(model, datamodule=datamodule, verbose=False)
        best = min(best, time.perf_counter() - t)
    return best
