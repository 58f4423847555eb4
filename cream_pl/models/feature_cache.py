"""Frozen-backbone features for the box regressor: a bounded in-memory cache and a world-size-free training order.

With the classifier's own backbone frozen (``BoxRegressor(features="classifier")``), every epoch
would recompute the same features. :func:`cache_features` computes them once, in a preallocated
tensor whose size is checked against a memory bound before it is allocated (CUB's 6k train images
cache in ~3 GB of float16; ILSVRC's 1.2 M cannot, and the frozen backbone then runs online on the
same samples). :class:`ShardedEpochBatchSampler` orders the training samples so that the training
is the same whether it runs cached or online, in one process or in ``N`` (DDP): the split is cut
into ``shards`` (image ``i`` belongs to shard ``i % shards``), each shard is shuffled per epoch by
its own seeded generator, and global step ``t`` takes ``batch / shards`` samples of every shard.
Under DDP rank ``r`` loads (and caches) shard ``r`` only; one process with ``shards = N`` feeds
each step the union of what the ``N`` ranks load. Horizontal flips are drawn per (epoch, image)
from the seed, so they do not depend on the world size either.

Example:
    >>> s = ShardedEpochBatchSampler(8, batch_size=4, shards=2, seed=0, flip_prob=0.0)
    >>> [[i for i, _ in b] for b in s]
    [[0, 2, 3, 7], [6, 4, 5, 1]]
    >>> [[i for i, _ in b] for b in ShardedEpochBatchSampler(8, batch_size=4, shards=2, shard=1, seed=0)]
    [[3, 7], [5, 1]]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from cream_pl.core.errors import UserValueError

__all__ = ["FeatureCache", "Flipped", "ShardedEpochBatchSampler", "cache_features", "collate_samples",
           "feature_bytes"]

LIST_KEYS = ("boxes", "image_id")
"""Batch keys kept as lists (ragged or strings); every other key is stacked."""
DROPPED_KEYS = ("image", "mask")
"""Item keys a cache does not keep: the image (the features replace it) and the mask (the regressor scores boxes)."""


def feature_bytes(n: int, shape: Sequence[int], dtype: torch.dtype) -> int:
    """Bytes of ``n`` feature maps of ``shape`` (``(K, h, w)``) in ``dtype``.

    Example:
        >>> feature_bytes(6000, (1280, 14, 14), torch.float16) / 2**30
        2.803...
    """
    numel = 1
    for s in shape:
        numel *= int(s)
    return int(n) * numel * torch.empty((), dtype=dtype).element_size()


def collate_samples(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack every tensor / number field of the samples; :data:`LIST_KEYS` and strings stay lists."""
    if not samples:
        raise ValueError("cannot collate an empty batch")
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if key in LIST_KEYS or isinstance(values[0], str):
            batch[key] = values
        elif isinstance(values[0], Tensor):
            batch[key] = torch.stack(values)
        else:
            batch[key] = torch.tensor(values)
    return batch


class FeatureCache(Dataset[dict[str, Any]]):
    """Cached backbone outputs of some samples of a dataset, indexed by the dataset's positions.

    Each item is the dataset's item without :data:`DROPPED_KEYS`, plus ``"features"`` (``(K, h, w)``, the
    cache's dtype) and, when the extractor gives them, ``"logits"`` (float32).
    """

    def __init__(self, positions: Sequence[int], features: Tensor, logits: Tensor | None,
                 items: Sequence[dict[str, Any]]) -> None:
        self.positions = list(positions)
        self.features, self.logits, self.items = features, logits, list(items)
        self._row = {p: r for r, p in enumerate(self.positions)}

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def nbytes(self) -> int:
        return self.features.numel() * self.features.element_size()

    def __getitem__(self, position: int) -> dict[str, Any]:
        r = self._row[int(position)]
        out = {**self.items[r], "features": self.features[r]}
        if self.logits is not None:
            out["logits"] = self.logits[r]
        return out


@torch.no_grad()
def cache_features(
    extractor: Callable[[Tensor], tuple[Tensor, Tensor | None]],
    dataset: Dataset,
    positions: Sequence[int] | None = None,
    *,
    batch_size: int = 32,
    max_bytes: int,
    dtype: torch.dtype = torch.float16,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    what: str = "the train split",
) -> FeatureCache:
    """Run ``extractor`` (images -> ``(features, logits or None)``) once over ``dataset[positions]``.

    The cache's size is known after the first batch and is refused, before anything else is
    computed, when it would exceed ``max_bytes`` (:class:`~cream_pl.core.errors.UserValueError`,
    one line: run the frozen backbone online instead).
    """
    from torch.utils.data import DataLoader, Subset

    if batch_size < 1:
        raise UserValueError(f"batch_size must be >= 1, got {batch_size}")
    positions = list(range(len(dataset))) if positions is None else [int(p) for p in positions]
    loader = DataLoader(Subset(dataset, positions), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_samples)
    features: Tensor | None = None
    logits: Tensor | None = None
    items: list[dict[str, Any]] = []
    row = 0
    for batch in loader:
        feats, logit = extractor(batch["image"].to(device))
        if features is None:
            need = feature_bytes(len(positions), feats.shape[1:], dtype)
            if need > max_bytes:
                raise UserValueError(
                    f"caching the frozen features of {what} takes {need / 2**30:.2f} GiB ({len(positions)} images x "
                    f"{tuple(feats.shape[1:])} {str(dtype).replace('torch.', '')}) > the {max_bytes / 2**30:.2f} GiB "
                    "bound; raise the bound or run the frozen backbone online (feature cache 'off')")
            features = torch.empty((len(positions), *feats.shape[1:]), dtype=dtype)
            if logit is not None:
                logits = torch.empty((len(positions), logit.shape[1]), dtype=torch.float32)
        n = feats.shape[0]
        features[row : row + n] = feats.detach().to("cpu", dtype)
        if logits is not None and logit is not None:
            logits[row : row + n] = logit.detach().float().cpu()
        keys = [k for k in batch if k not in DROPPED_KEYS]
        for i in range(n):
            items.append({k: batch[k][i] for k in keys})
        row += n
    if features is None:
        raise UserValueError(f"{what} has no images to cache")
    return FeatureCache(positions, features, logits, items)


class Flipped(Dataset[dict[str, Any]]):
    """``dataset[(position, flip)]`` -> the item with ``"flip"`` (the sampler decides the flip)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, bool]) -> dict[str, Any]:
        position, flip = key
        return {**self.dataset[position], "flip": bool(flip)}


class ShardedEpochBatchSampler(Sampler[list[tuple[int, bool]]]):
    """Training batches of ``(position, flip)`` whose global composition does not depend on the world size.

    Args:
        n: samples in the split (positions ``0 .. n-1``).
        batch_size: the **global** batch (divisible by ``shards``).
        shards: how many shards the order is built from (the DDP world size; one process may
            use any, to reproduce an ``N``-process run).
        shard: the shard this process loads (its DDP rank); ``None``: all of them (one process),
            each step the union of every shard's part, shard by shard.
        seed: seed of the shuffles and flips.
        flip_prob: probability of a horizontal flip per (epoch, image).

    ``n // batch_size`` steps per epoch (the last, partial, global batch is dropped).
    """

    def __init__(self, n: int, batch_size: int, shards: int = 1, shard: int | None = None, seed: int = 0,
                 flip_prob: float = 0.5) -> None:
        if shards < 1 or batch_size < 1 or batch_size % shards:
            raise UserValueError(f"the global batch {batch_size} must divide over {shards} shard(s) (devices x nodes)")
        if shard is not None and not 0 <= shard < shards:
            raise UserValueError(f"shard {shard} is not in [0, {shards})")
        if n < batch_size:
            raise UserValueError(f"{n} training samples are fewer than one global batch ({batch_size})")
        if not 0.0 <= flip_prob <= 1.0:
            raise UserValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
        self.n, self.batch_size, self.shards, self.shard = n, batch_size, shards, shard
        self.seed, self.flip_prob, self.epoch = seed, flip_prob, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n // self.batch_size

    def shard_positions(self, shard: int) -> list[int]:
        return list(range(shard, self.n, self.shards))

    def _generator(self, *keys: int) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed(((self.seed * 1_000_003 + self.epoch) * 1_009 + keys[0]) % (2**63))
        return g

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        flips = torch.rand(self.n, generator=self._generator(self.shards + 1)) < self.flip_prob
        local = self.batch_size // self.shards
        orders = {}
        for s in range(self.shards) if self.shard is None else [self.shard]:
            pos = torch.tensor(self.shard_positions(s))
            orders[s] = pos[torch.randperm(len(pos), generator=self._generator(s))].tolist()
        for t in range(len(self)):
            batch = [p for s in orders for p in orders[s][t * local : (t + 1) * local]]
            yield [(p, bool(flips[p])) for p in batch]
