"""DDP gives the single-process answer: no double-counted eval images, global batch, multi-node.

A real Lightning fit + validate + test of a tiny CREAM classifier runs once in one process and
once in two processes (``torchrun``: one node with two processes, and two "nodes" of one process
each on localhost over gloo). Val and test have an odd number of images, so a padding sampler
would count an image twice. The single-process run feeds each step the samples that the two
processes apply, in the same order (``tests/ddp_fit_script.py``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cream_pl.data import WSOLDataModule, generate_synthetic_dataset

SCRIPT = Path(__file__).with_name("ddp_fit_script.py")
TORCHRUN = Path(sys.executable).with_name("torchrun")
ENV = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="module")
def odd_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp_synth")
    return generate_synthetic_dataset(root, seed=5, num_classes=3, num_train=12, num_val=7, num_test=7,
                                      min_side=72, max_side=88, image_format="png", overwrite=True)


@pytest.fixture(scope="module")
def single(odd_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("single")
    subprocess.run([sys.executable, str(SCRIPT), str(odd_data), str(out)], check=True, env=ENV, timeout=600)
    return torch.load(out / "rank0.pt", weights_only=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(data: Path, out: Path, nodes: int, per_node: int) -> list[dict]:
    port = _free_port()
    common = [str(TORCHRUN), f"--nnodes={nodes}", f"--nproc-per-node={per_node}", "--master-addr=127.0.0.1",
              f"--master-port={port}"]
    script = [str(SCRIPT), str(data), str(out), "--nodes", str(nodes), "--devices", str(per_node)]
    procs = [subprocess.Popen([*common, f"--node-rank={n}", *script], env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for n in range(nodes)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(nodes * per_node)]


def _assert_same(one: dict, ddp: dict) -> None:
    # features of a batch of 2 and of 4 differ in the last float bit (conv kernels), hence 1e-6
    torch.testing.assert_close(ddp["fg"], one["fg"], rtol=0, atol=1e-6)
    torch.testing.assert_close(ddp["bg"], one["bg"], rtol=0, atol=1e-6)
    from cream_pl.models.context_embeddings import ContextEmbeddings

    init = ContextEmbeddings(num_classes=3, dim=one["fg"].shape[-1], lambdas=(0.8,), seed=0)
    assert not torch.equal(one["fg"], init.fg)  # the embeddings did move
    assert ddp["num_updates"] == one["num_updates"] == 12
    for stage in ("val", "test"):
        a, b = one["results"][stage], ddp["results"][stage]
        assert b["cls_acc"] == a["cls_acc"]
        # the mean over the 7 images (ranks hold 4 and 3), not the mean of the ranks' means
        assert ddp["losses"][stage] == pytest.approx(one["losses"][stage], rel=1e-5), stage
        for method in ("cam", "cream"):
            # counts over images: exactly equal (a repeated image changes them by 1 / 7)
            for key in ("max_box_acc_v2", "max_box_acc", "gt_known", "top1_loc", "best_threshold_iou50"):
                assert b["methods"][method][key] == a["methods"][method][key], (stage, method, key)
            assert b["methods"][method]["pxap"] == pytest.approx(a["methods"][method]["pxap"], rel=1e-6)


@pytest.mark.slow  # three torch processes at once on 2 cores: ~1 min
def test_two_processes_on_one_node_equal_one_process(odd_data: Path, single: dict, tmp_path: Path) -> None:
    ranks = _torchrun(odd_data, tmp_path, nodes=1, per_node=2)
    assert [r["world_size"] for r in ranks] == [2, 2]
    for r in ranks:
        _assert_same(single, r)


@pytest.mark.slow
def test_two_nodes_of_one_process_equal_one_process(odd_data: Path, single: dict, tmp_path: Path) -> None:
    ranks = _torchrun(odd_data, tmp_path, nodes=2, per_node=1)
    assert sorted(r["node_rank"] for r in ranks) == [0, 1]
    for r in ranks:
        _assert_same(single, r)


class _FakeTrainer:
    def __init__(self, rank: int, world: int) -> None:
        self.global_rank, self.world_size = rank, world


def test_eval_loaders_show_every_image_once_across_processes(odd_data: Path) -> None:
    seen: list[int] = []
    for rank in range(2):
        dm = WSOLDataModule(str(odd_data), batch_size=2, eval_size=64)
        dm.trainer = _FakeTrainer(rank, 2)  # what Lightning attaches
        dm.setup("test")
        seen += [int(i) for batch in dm.test_dataloader() for i in batch["index"]]
    assert sorted(seen) == list(range(7))  # 7 images, none repeated (a padding sampler gives 8)


def test_the_recipe_batch_is_the_global_batch(odd_data: Path) -> None:
    dm = WSOLDataModule(str(odd_data), batch_size=4, resize_size=72, crop_size=64, eval_size=64)
    dm.trainer = _FakeTrainer(0, 2)
    dm.setup("fit")
    assert dm.train_dataloader().batch_size == 2
    dm.trainer = _FakeTrainer(0, 3)
    from cream_pl.core.errors import UserValueError

    with pytest.raises(UserValueError, match="global training batch and must divide over the 3 processes"):
        dm.train_dataloader()  # a user's error: one line, ddp_spawn's processes included (was: a traceback)
    dm.trainer = None
    assert dm.train_dataloader().batch_size == 4
