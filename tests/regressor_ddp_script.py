"""Train a frozen-feature box head (cached or online) in one process or under torchrun; save the head and test GT-known.

Usage: python regressor_ddp_script.py ROOT OUT {on,off} [--shards N] [--devices N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from test_box_heads import EVAL, FrozenStandIn  # noqa: E402

from cream_pl.data.datamodule import WSOLDataModule  # noqa: E402
from cream_pl.pipelines.regressor_data import FrozenFeatureDataModule  # noqa: E402
from cream_pl.pipelines.regressor_train import train_regressor  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("root", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("cache", choices=("on", "off"))
    p.add_argument("--shards", type=int, default=None)
    p.add_argument("--devices", type=int, default=1)
    a = p.parse_args()
    torch.manual_seed(0)
    classifier = FrozenStandIn()
    dm = FrozenFeatureDataModule(a.root / "train_boxes.json", a.root, classifier,
                                 WSOLDataModule(str(a.root), batch_size=4, eval_size=EVAL), batch_size=4, cache=a.cache,
                                 cache_dtype=torch.float32, shards=a.shards)
    trainer = {"accelerator": "cpu", "devices": a.devices, "enable_progress_bar": False, "enable_model_summary": False,
               "num_sanity_val_steps": 0, "check_val_every_n_epoch": 10_000}
    if a.devices > 1:
        trainer["strategy"] = "ddp"
    metrics = train_regressor(a.root / "train_boxes.json", a.root, a.out, classifier_ckpt=classifier, head="objectness",
                              features="classifier", datamodule=dm, max_epochs=2, batch_size=4, optimizer="adamw",
                              lr=1e-2, loss="l1_iou", loss_weight=1.0, eval_size=EVAL, stages=("fit", "test"),
                              trainer_kwargs=trainer)
    ckpt = torch.load(a.out / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    cached = [dm.caches["train"].positions] if dm.cached else []
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        gathered: list = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, cached)
        cached = [c for part in gathered for c in part]
        rank = torch.distributed.get_rank()
        # every rank leaves together and tears gloo down: a rank that exits while another still holds the
        # group can abort in gloo's destructor ("terminate called without an active exception")
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
        if rank != 0:
            return
    torch.save({"head": {k: v for k, v in ckpt.items() if k.startswith("head.")}, "cached_train": cached,
                "test": metrics.get("test/reg/gt_known")}, a.out / "result.pt")


if __name__ == "__main__":
    main()
