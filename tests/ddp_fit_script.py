"""One fit + validate + test of a tiny CREAM classifier, for the DDP-equivalence tests.

Run as a plain script (one process), or under ``torchrun`` (several processes, one or two
"nodes"). Every process writes ``<out>/rank<r>.pt`` with its context embeddings and the val/test
results; the single-process run feeds each training step the samples that the two-process run
applies, in the same order, so the embeddings and the metrics must agree.

    python tests/ddp_fit_script.py DATA OUT [--nodes N --devices D]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Sampler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cream_pl.data import WSOLDataModule  # noqa: E402
from cream_pl.models import WSOLClassifier  # noqa: E402

SIZE = 64
GLOBAL_BATCH = 4
WORLD = 2  # the multi-process runs use 2 processes in all


class TwoRankOrder(Sampler[int]):
    """One process, the two-process order: per step, rank 0's samples then rank 1's.

    ``DistributedSampler(shuffle=True, seed=0)`` gives rank ``r`` the items ``perm[r::2]`` of
    ``perm = randperm(N)`` seeded with ``seed + epoch``; each of its batches holds
    ``GLOBAL_BATCH / 2`` of them, and the context update applies the gathered samples in rank order.
    """

    def __init__(self, n: int) -> None:
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.epoch)).tolist()
        per_rank = [perm[r::WORLD] for r in range(WORLD)]
        local = GLOBAL_BATCH // WORLD
        for s in range(0, len(per_rank[0]), local):
            for r in range(WORLD):
                yield from per_rank[r][s : s + local]

    def __len__(self) -> int:
        return self.n


class NoAugmentation(WSOLDataModule):
    """Training batches with the evaluation transform (no random crop or flip: no RNG stream to match)."""

    def __init__(self, *args, ordered_single_process: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.ordered_single_process = ordered_single_process

    def train_dataset(self):
        return self.eval_dataset("train")

    def train_dataloader(self) -> DataLoader:
        if not self.ordered_single_process:
            return super().train_dataloader()
        ds = self.train_dataset()
        return DataLoader(ds, batch_size=GLOBAL_BATCH, sampler=TwoRankOrder(len(ds)), collate_fn=self._collate)

    @staticmethod
    def _collate(samples):
        from cream_pl.data.datamodule import wsol_collate

        return wsol_collate(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--devices", type=int, default=1)
    args = parser.parse_args()
    distributed = args.nodes * args.devices > 1
    pl.seed_everything(0)
    # The whole backbone frozen (batch norm in eval mode: features do not depend on how the batch is
    # split) and lr 0 (DDP's gradient all-reduce would otherwise round differently from one process's
    # mean): what remains is cream-pl's own part, which must be exact: the global batch, the context
    # embeddings gathered and applied in rank order, and evaluation that counts every image once.
    model = WSOLClassifier(num_classes=3, pretrained=False, eval_size=SIZE, cam_curve_interval=0.01, lr=0.0,
                           freeze_backbone=".", lr_step_epochs=0)
    dm = NoAugmentation(args.data, batch_size=GLOBAL_BATCH, resize_size=72, crop_size=SIZE, eval_size=SIZE,
                        ordered_single_process=not distributed)
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", devices=args.devices, num_nodes=args.nodes,
        strategy="ddp" if distributed else "auto", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        default_root_dir=args.out,
    )
    trainer.fit(model, dm)
    losses = {"val": float(trainer.callback_metrics["val/loss"])}
    trainer.test(model, dm, verbose=False)
    losses["test"] = float(trainer.callback_metrics["test/loss"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"fg": model.context.fg.cpu(), "bg": model.context.bg.cpu(),
                "num_updates": int(model.context.num_updates), "results": model.last_results, "losses": losses,
                "world_size": trainer.world_size, "node_rank": trainer.node_rank},
               out / f"rank{trainer.global_rank}.pt")
    if os.environ.get("LOCAL_RANK") is not None and trainer.world_size > 1:
        torch.distributed.barrier()


if __name__ == "__main__":
    main()
