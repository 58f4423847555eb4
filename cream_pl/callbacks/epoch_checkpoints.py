"""``EpochCheckpoints``: a checkpoint and one row of val numbers after every validation of a fit.

KD-CI-CAM chooses its teachers among the checkpoints of CI-CAM trainings, one for the best val
Top-1 Cls and one for the best val GT-known Loc (spec ``kd_ci_cam.md`` §3.1-3.2), and its premise is
that the two peak at different points of training. Both need a checkpoint at every epoch and the
val numbers it scored. With ``check_val_every_n_epoch: 1``, this callback writes, after each
validation of ``fit``:

* ``<dirpath>/epoch=NNN.ckpt`` (``NNN`` = epochs trained so far, from 1; weights, buffers, the
  context pool / embeddings and the val split's τ*, without the optimiser state by default);
* one row of ``record_path`` (JSON list, rewritten atomically): ``epoch``, ``step``,
  ``checkpoint`` and the val split's ``val_cls_acc``, and for ``method`` (default ``cam``)
  ``val_gt_known``, ``val_top1_loc``, ``val_max_box_acc_v2`` and ``val_loc_threshold``.

GT-known on val is scored at the val split's own τ* (the threshold that maximised IoU-50 box
accuracy there), as the model reports it. A row of an epoch at or after the one being written is
replaced, so a fit that starts over rewrites the record from epoch 1 and a resumed fit keeps the
epochs before its start. It needs a :class:`~cream_pl.models.WSOLClassifier` (its
``last_results["val"]``).

Example (recipe):
    trainer:
      check_val_every_n_epoch: 1
      callbacks:
        - class_path: cream_pl.callbacks.epoch_checkpoints.EpochCheckpoints
          init_args: {dirpath: outputs/run/epochs, record_path: outputs/run/epochs.json}
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from cream_pl.core.errors import UserValueError

__all__ = ["EpochCheckpoints", "checkpoint_name", "read_epoch_record"]


def checkpoint_name(epoch: int) -> str:
    """File name of the checkpoint written after ``epoch`` epochs (``epoch=005.ckpt``)."""
    return f"epoch={epoch:03d}.ckpt"


def read_epoch_record(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a record file, by epoch; ``[]`` when it does not exist."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "epoch" in r for r in rows):
        raise UserValueError(f"{path}: not an epoch record (a JSON list of rows with an 'epoch')")
    return sorted(rows, key=lambda r: r["epoch"])


class EpochCheckpoints(pl.Callback):
    """Save a checkpoint and record the val numbers after every validation of ``fit``.

    Args:
        dirpath: folder of the per-epoch checkpoints.
        record_path: JSON file of the per-epoch rows (default ``<dirpath>/epochs.json``).
        method: the evaluated map whose GT-known / Top-1 Loc / MaxBoxAccV2 are recorded.
        weights_only: leave the optimiser and loop states out of the checkpoints (they are
            teachers and test candidates, not resume points; ``ModelCheckpoint`` keeps those).
    """

    def __init__(self, dirpath: str | Path, record_path: str | Path | None = None, method: str = "cam",
                 weights_only: bool = True) -> None:
        super().__init__()
        self.dirpath = Path(dirpath)
        self.record_path = Path(record_path) if record_path is not None else self.dirpath / "epochs.json"
        self.method = method
        self.weights_only = weights_only

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        results = getattr(pl_module, "last_results", {}).get("val")
        if not results:
            raise UserValueError(f"EpochCheckpoints needs a WSOLClassifier's val results; {type(pl_module).__name__} "
                                 "has no last_results['val'] after this validation")
        metrics = results["methods"].get(self.method)
        if metrics is None:
            raise UserValueError(f"EpochCheckpoints: method {self.method!r} is not in the val results "
                                 f"({sorted(results['methods'])})")
        epoch = trainer.current_epoch + 1  # validation runs at the end of the epoch: epochs trained so far
        path = self.dirpath / checkpoint_name(epoch)
        trainer.save_checkpoint(path, weights_only=self.weights_only)  # every rank calls it; rank 0 writes
        if not trainer.is_global_zero:
            return
        row = {"epoch": epoch, "step": int(trainer.global_step), "checkpoint": str(path), "method": self.method,
               "val_cls_acc": _number(results.get("cls_acc")),
               **{f"val_{k}": _number(metrics.get(k)) for k in ("gt_known", "top1_loc", "max_box_acc_v2",
                                                                  "loc_threshold")}}
        rows = [r for r in read_epoch_record(self.record_path) if r["epoch"] < epoch] + [row]
        from cream_pl.core.io import atomic_write_text

        atomic_write_text(self.record_path, json.dumps(rows, sort_keys=True, indent=2, ensure_ascii=False) + "\n")


def _number(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None
