"""``PseudoBoxesAtFitEnd``: one ``cream-pl fit`` yields the classifier *and* its CREAM pseudo boxes.

A classifier recipe lists the callback in ``trainer.callbacks``; when the fit ends (after its last
validation, which chose τ* and, with ``cream_search``, CREAM's inference hyperparameters on the
val split), it writes the COCO pseudo-box file over the training split with the same writer as
``cream-pl pseudo-boxes`` (:class:`~cream_pl.pseudo_boxes.generate.PseudoBoxWriter`): resumable
chunks, every DDP rank boxing its own chunks, rank 0 merging, atomic files. A rerun of a finished
job (e.g. ``fit --ckpt_path last``) finds the file and predicts nothing.

The boxes use the data module's evaluation transform (squash to ``eval_size``, the ground-truth
class, no augmentation). For PSOL's 448-pixel boxes use ``cream-pl pseudo-boxes --input-size 448``,
which chooses τ* on val maps at that size.

Example (recipe):
    trainer:
      callbacks:
        - class_path: cream_pl.pseudo_boxes.fit_end.PseudoBoxesAtFitEnd
          init_args: {out_path: outputs/run/pseudo_boxes_cream.json, source: cream}
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DataLoader, Subset

from cream_pl.core.errors import UserValueError
from cream_pl.pseudo_boxes.generate import SOURCES, PseudoBoxWriter, model_fingerprint, split_fingerprint

__all__ = ["PseudoBoxesAtFitEnd"]


class PseudoBoxesAtFitEnd(pl.Callback):
    """Write CREAM (or CAM) pseudo boxes over a split of the fit's data module when ``fit`` ends.

    Args:
        out_path: COCO JSON file to write (``<out>.quality.json`` too when the split has true boxes).
        source: score maps to box: ``"cream"``, ``"cam"`` or ``"cream_selected"`` (the val-selected CREAM).
        threshold: fixed τ in [0, 1); ``None`` = τ* of ``source`` from the fit's last validation.
        split: the split to box (default ``train``).
        batch_size: images per forward pass (default: the data module's ``batch_size``).
        chunk_size: images per resumable shard (default 16 batches).
        multi_contour: union box of all contours instead of the largest contour's box.
        keep_shards: keep ``<out>.shards/`` after the final file is written.
    """

    def __init__(self, out_path: str | Path, source: str = "cream", threshold: float | None = None,
                 split: str = "train", batch_size: int | None = None, chunk_size: int | None = None,
                 multi_contour: bool = False, keep_shards: bool = False) -> None:
        super().__init__()
        if source not in SOURCES:
            raise UserValueError(f"source must be one of {SOURCES}, got {source!r}")
        if threshold is not None and not 0.0 <= threshold < 1.0:
            raise UserValueError(f"threshold must be in [0, 1), got {threshold}")
        if batch_size is not None and batch_size < 1:
            raise UserValueError(f"batch_size must be >= 1, got {batch_size}")
        self.out_path, self.source, self.threshold = Path(out_path), source, threshold
        self.split, self.batch_size, self.chunk_size = split, batch_size, chunk_size
        self.multi_contour, self.keep_shards = multi_contour, keep_shards
        self.written: Path | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.preflight(stage, trainer, pl_module, getattr(trainer, "datamodule", None))

    def preflight(self, stage: str, trainer: pl.Trainer, pl_module: pl.LightningModule,
                  datamodule: pl.LightningDataModule | None) -> None:
        """What the boxes at the fit's end need, checked before the training (``cream-pl fit`` calls it before the
        logger starts; ``setup`` again for a plain Trainer)."""
        names = getattr(pl_module, "method_names", None)
        if stage == "fit" and isinstance(names, list) and self.source not in names:  # before: found after the training
            hint = " (cream_selected needs the model's cream_search)" if self.source == "cream_selected" else ""
            raise UserValueError(f"PseudoBoxesAtFitEnd: source {self.source!r}, but the model makes no such maps{hint}; "
                                 f"its methods: {names}")
        if stage == "fit":  # a bad output path fails before the training, not after it
            from cream_pl.core.io import check_output_file

            check_output_file(self.out_path, "PseudoBoxesAtFitEnd.out_path")
            if self.out_path.is_file():  # a file of ours is replaced (or kept) at the end; any other is refused now
                from cream_pl.pseudo_boxes.generate import read_pseudo_box_info

                read_pseudo_box_info(self.out_path, "delete it or choose another PseudoBoxesAtFitEnd.out_path")
            from cream_pl.pseudo_boxes.generate import is_own_quality_record, quality_path

            quality = quality_path(self.out_path)
            if quality.exists() and not is_own_quality_record(quality, self.out_path):
                raise UserValueError(f"{quality}: exists and is not the quality record of {self.out_path.name} (the fit "
                                     "writes it at its end); move it or choose another PseudoBoxesAtFitEnd.out_path")
            if self.threshold is None:  # the val τ* the boxes need would be missing after the training
                dm, where = datamodule, None
                if trainer.limit_val_batches == 0:
                    where = "trainer.limit_val_batches is 0"
                elif dm is not None and hasattr(dm, "has_split") and not dm.has_split("val"):
                    where = f"{dm.metadata_root / 'val'} does not exist"
                if where is not None:
                    raise UserValueError(f"PseudoBoxesAtFitEnd: {where}, so the fit validates nothing and there is no "
                                         "val τ* for the pseudo boxes; give the data a val split or set threshold")

    def _threshold(self, pl_module: pl.LightningModule) -> float:
        if self.threshold is not None:
            return float(self.threshold)
        names = list(getattr(pl_module, "method_names", []))
        if self.source not in names:
            raise UserValueError(f"PseudoBoxesAtFitEnd: the model has no {self.source!r} maps (methods: {names})")
        tau = float(pl_module.val_best_threshold[names.index(self.source)])
        if not math.isfinite(tau):
            raise UserValueError("PseudoBoxesAtFitEnd: the fit ran no validation, so there is no val τ*; give the "
                                 "data a val split (and let the last epoch validate) or set threshold")
        return tau

    @torch.no_grad()
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.interrupted:
            return
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "eval_dataset"):
            raise UserValueError("PseudoBoxesAtFitEnd needs a WSOLDataModule (trainer.fit(model, datamodule=...))")
        tau = self._threshold(pl_module)
        dataset = dm.eval_dataset(self.split)
        batch = self.batch_size or int(dm.batch_size)
        fingerprint = {"model_sha1": model_fingerprint(pl_module), "predict_split": self.split,
                       "input_size": int(dm.hparams.get("eval_size", 224)), "data_sha1": split_fingerprint(dm, self.split)}
        writer = PseudoBoxWriter(self.out_path, source=self.source, threshold=tau, categories=dm.class_names,
                                 chunk_size=self.chunk_size, multi_contour=self.multi_contour,
                                 fingerprint=fingerprint, keep_shards=self.keep_shards)
        done = trainer.strategy.broadcast(writer.finished() if trainer.is_global_zero else None, src=0)
        if not done:
            writer.plan(dataset, batch, trainer)
            self._predict(writer, Subset(dataset, writer.my_indices()), batch, trainer, pl_module)
            trainer.strategy.barrier("pseudo_boxes_at_fit_end")
            if trainer.is_global_zero:
                writer.merge()
            trainer.strategy.barrier("pseudo_boxes_at_fit_end_merged")
        self.written = self.out_path
        rank_zero_info(f"pseudo boxes ({self.source}, threshold {tau:g}) over {self.split!r}: {self.out_path}")

    @staticmethod
    def _predict(writer: PseudoBoxWriter, subset: Subset, batch_size: int, trainer: pl.Trainer,
                 pl_module: pl.LightningModule) -> None:
        from cream_pl.data.datamodule import wsol_collate

        was_training = pl_module.training
        pl_module.eval()
        try:
            loader = DataLoader(subset, batch_size=batch_size, shuffle=False, collate_fn=wsol_collate)
            for i, batch in enumerate(loader):
                batch = _to_device(batch, pl_module.device)
                prediction = pl_module.predict_step(batch, i)
                writer.write_on_batch_end(trainer, pl_module, prediction, None, batch, i, 0)
            writer.on_predict_epoch_end(trainer, pl_module)
        finally:
            pl_module.train(was_training)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
