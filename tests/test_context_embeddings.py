"""Context embeddings: buffers in checkpoints, λ sweep, identical DDP update on every rank."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cream_pl.models.context_embeddings import ContextEmbeddings
from cream_pl.models.cream import momentum_update

C, K, N = 5, 6, 12


def _samples():
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, C, (N,), generator=g)
    f_fg = torch.randn(N, K, generator=g)
    f_bg = torch.randn(N, K, generator=g)
    has_bg = torch.ones(N, dtype=torch.bool)
    has_bg[3] = False
    return ids, f_fg, f_bg, has_bg


def test_embeddings_are_buffers_saved_in_state_dict_and_sweep_lambdas():
    ctx = ContextEmbeddings(C, K, lambdas=(0.8, 0.2, 1.0), seed=3)
    assert {"fg", "bg", "num_updates"} <= set(ctx.state_dict())
    assert not list(ctx.parameters())
    init_fg = ctx.fg.clone()
    ids, f_fg, f_bg, has_bg = _samples()
    ctx.update(ids, f_fg, f_bg, None, has_bg)
    for i, lam in enumerate((0.8, 0.2, 1.0)):
        torch.testing.assert_close(ctx.fg[i], momentum_update(init_fg[i], ids, f_fg, lam))
    torch.testing.assert_close(ctx.fg[2], init_fg[2])  # λ = 1 keeps the random init
    assert int(ctx.num_updates) == N
    restored = ContextEmbeddings(C, K, lambdas=(0.8, 0.2, 1.0), seed=99)
    restored.load_state_dict(ctx.state_dict())
    torch.testing.assert_close(restored.bg, ctx.bg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        ids, f_fg, f_bg, has_bg = _samples()
        # uneven shards: rank 0 gets the first 7 samples, rank 1 the last 5
        sl = slice(0, 7) if rank == 0 else slice(7, N)
        ctx = ContextEmbeddings(C, K, lambdas=(0.8,), seed=3)
        ctx.update(ids[sl], f_fg[sl], f_bg[sl], None, has_bg[sl])
        torch.save({"fg": ctx.fg, "bg": ctx.bg}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_update_is_identical_on_every_rank_and_equals_one_process(tmp_path):
    port = _free_port()
    mp.start_processes(_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    torch.testing.assert_close(r0["fg"], r1["fg"], rtol=0, atol=0)
    torch.testing.assert_close(r0["bg"], r1["bg"], rtol=0, atol=0)
    single = ContextEmbeddings(C, K, lambdas=(0.8,), seed=3)
    ids, f_fg, f_bg, has_bg = _samples()
    single.update(ids, f_fg, f_bg, None, has_bg)  # one process, same samples, same order
    torch.testing.assert_close(r0["fg"], single.fg, rtol=0, atol=1e-6)
    torch.testing.assert_close(r0["bg"], single.bg, rtol=0, atol=1e-6)
