"""CREAM's class-specific context embeddings: buffers, momentum update, DDP-consistent apply.

The embeddings are buffers (no gradient, saved in checkpoints). Under DDP, every rank gathers
``(class, f_fg, f_bg)`` from all ranks and applies them in rank order, so all ranks hold the
same embeddings and the result equals a single process that saw the same samples in that order
(DDP's buffer broadcast from rank 0 would otherwise silently drop the other ranks' samples).

Example:
    >>> import torch
    >>> ctx = ContextEmbeddings(num_classes=3, dim=4, lambdas=(0.8,), seed=0)
    >>> ctx.update(torch.tensor([1]), torch.ones(1, 4), torch.zeros(1, 4))
    >>> ctx.fg.shape
    torch.Size([1, 3, 4])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from cream_pl.models.cream import momentum_update

__all__ = ["ContextEmbeddings", "gather_in_rank_order"]


def gather_in_rank_order(*tensors: Tensor) -> tuple[Tensor, ...]:
    """All-gather tensors whose first dimension may differ between ranks; concatenated in rank order.

    Without an initialised process group this returns the inputs unchanged.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensors
    world = dist.get_world_size()
    n_local = torch.tensor([tensors[0].shape[0]], device=tensors[0].device)
    sizes = [torch.zeros_like(n_local) for _ in range(world)]
    dist.all_gather(sizes, n_local)
    sizes_int = [int(s.item()) for s in sizes]
    n_max = max(sizes_int)
    out = []
    for t in tensors:
        padded = t.new_zeros((n_max, *t.shape[1:]))
        padded[: t.shape[0]] = t
        parts = [torch.zeros_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.contiguous())
        out.append(torch.cat([p[:n] for p, n in zip(parts, sizes_int)], dim=0))
    return tuple(out)


class ContextEmbeddings(nn.Module):
    """Foreground/background context embeddings ``E_fg, E_bg`` for one or several momenta λ.

    Several λ values can be tracked in one training run (the embeddings never influence the
    gradients, so a λ sweep needs only one trained network): index 0 is the main λ.

    Args:
        num_classes: ``C``.
        dim: feature dimension ``K``.
        lambdas: momentum values; ``lambdas[0]`` is the one used by default.
        seed: seed of the random initialisation (the paper initialises them randomly).
    """

    def __init__(self, num_classes: int, dim: int, lambdas: Sequence[float] = (0.8,), seed: int = 0) -> None:
        super().__init__()
        if num_classes < 1 or dim < 1:
            raise ValueError(f"num_classes and dim must be >= 1, got {num_classes}, {dim}")
        lambdas = tuple(float(v) for v in lambdas)
        if not lambdas or any(not 0.0 <= v <= 1.0 for v in lambdas):
            raise ValueError(f"lambdas must be a non-empty list of values in [0, 1], got {lambdas}")
        self.lambdas = lambdas
        g = torch.Generator().manual_seed(seed)
        init_fg = torch.rand(num_classes, dim, generator=g)
        init_bg = torch.rand(num_classes, dim, generator=g)
        self.register_buffer("fg", init_fg.expand(len(lambdas), -1, -1).clone())
        self.register_buffer("bg", init_bg.expand(len(lambdas), -1, -1).clone())
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(
        self,
        class_ids: Tensor,
        f_fg: Tensor,
        f_bg: Tensor,
        has_fg: Tensor | None = None,
        has_bg: Tensor | None = None,
        sync: bool = True,
    ) -> None:
        """Blend this step's samples into every λ's embeddings, in sample order (Eq. 4)."""
        n = class_ids.shape[0]
        has_fg = torch.ones(n, dtype=torch.bool, device=class_ids.device) if has_fg is None else has_fg
        has_bg = torch.ones(n, dtype=torch.bool, device=class_ids.device) if has_bg is None else has_bg
        if sync:
            class_ids, f_fg, f_bg, has_fg, has_bg = gather_in_rank_order(class_ids, f_fg, f_bg, has_fg, has_bg)
        for i, lam in enumerate(self.lambdas):
            self.fg[i] = momentum_update(self.fg[i], class_ids, f_fg.to(self.fg.dtype), lam, has_fg)
            self.bg[i] = momentum_update(self.bg[i], class_ids, f_bg.to(self.bg.dtype), lam, has_bg)
        self.num_updates += class_ids.shape[0]  # samples of every rank: the same count on all of them

    def get(self, index: int = 0) -> tuple[Tensor, Tensor]:
        """``(E_fg, E_bg)`` of ``lambdas[index]``, each ``(C, K)``."""
        return self.fg[index], self.bg[index]
