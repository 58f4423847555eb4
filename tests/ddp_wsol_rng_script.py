"""Tiny HaS, CutMix and ADL fits that record every random WSOL draw, for the per-rank seeding test.

Run as a plain script (one process) or under ``torchrun`` (two processes on the CPU, gloo). Every
process writes ``<out>/rank<r>.pt``: per method and training step, the global torch RNG state and
this process's WSOL generator state just before the step's draws, and what was drawn (HaS: the
hidden pixels; CutMix: the box, the permutation and λ; ADL: each layer's choice).

    python tests/ddp_wsol_rng_script.py DATA OUT [--devices D]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cream_pl.data import WSOLDataModule  # noqa: E402
from cream_pl.models import WSOLClassifier  # noqa: E402

SIZE = 64
METHODS = {"has": {}, "cutmix": {}, "adl": {"drop_rate": 0.5}}  # ADL at 1/2: its choices say more per draw


class Recorder(WSOLClassifier):
    """Records the state of both random sources before each step's draws, and the draws themselves."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.steps: list[dict[str, Any]] = []

    def wsol_training_inputs(self, images, labels):
        g = getattr(self, "wsol_generator", None)  # (None before per-rank streams existed)
        step = {"global_state": torch.get_rng_state(), "own_state": None if g is None else g.get_state(),
                "shape": tuple(images.shape)}
        out, mix = super().wsol_training_inputs(images, labels)
        if self.wsol.name == "has":
            step["hidden"] = (out == 0).all(1) & ~(images == 0).all(1)
        if mix is not None:
            step["cutmix"] = (mix.box, mix.permutation.tolist(), mix.lam)
        self.steps.append(step)
        return out, mix

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.adl_layers is not None:
            self.steps[-1]["adl"] = [layer.last_choice for layer in self.adl_layers.values()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--devices", type=int, default=1)
    args = parser.parse_args()
    distributed = args.devices > 1
    records: dict[str, Any] = {}
    rank = 0
    for method, method_args in METHODS.items():
        pl.seed_everything(0)
        model = Recorder(num_classes=3, pretrained=False, eval_size=SIZE, cam_curve_interval=0.05, lr=0.0,
                         lr_step_epochs=0, wsol_method=method, wsol_method_args=method_args)
        dm = WSOLDataModule(args.data, batch_size=4, resize_size=72, crop_size=SIZE, eval_size=SIZE)
        trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=args.devices,
                             strategy="ddp" if distributed else "auto", logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                             limit_val_batches=0, default_root_dir=args.out)
        trainer.fit(model, dm)
        records[method] = {"steps": model.steps, "grid_size": model.wsol.params.get("grid_size"),
                           "drop_rate": model.wsol.params.get("drop_rate"), "beta": model.wsol.params.get("beta"),
                           "world_size": trainer.world_size}
        rank = trainer.global_rank
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(records, out / f"rank{rank}.pt")
    if os.environ.get("LOCAL_RANK") is not None and distributed:
        torch.distributed.barrier()


if __name__ == "__main__":
    main()
