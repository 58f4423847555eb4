"""The data of a frozen-feature CREAM_reg: pseudo-boxed train images through the classifier's frozen backbone.

:class:`FrozenFeatureDataModule` serves :class:`~cream_pl.models.regressor.BoxRegressor` with
``features="classifier"``:

- **train**: the pseudo-boxed train images at the protocol's evaluation transform (squash to
  ``eval_size``, no crop: the features are those the classifier boxed), in the world-size-free
  order of :class:`~cream_pl.models.feature_cache.ShardedEpochBatchSampler` with a per-(epoch,
  image) horizontal flip applied in feature space by the regressor;
- **val / test**: the dataset's boxed splits (from a ``WSOLDataModule``).

``cache``: ``"on"`` computes the frozen features (and, for val / test, the classifier's logits)
once, into memory, refusing before the pass when they would exceed ``cache_max_gb``; ``"off"``
runs the frozen backbone online on the same samples every step (ILSVRC's 1.2 M images); ``"auto"``
caches when the bound allows. Under DDP each rank caches only what it loads: its shard of the train
split and its part of val / test. The caches are kept across fits of the same module, so several
heads train on one pass of the backbone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cream_pl.core.errors import UserValueError
from cream_pl.data.pseudo_box_format import PseudoBoxDataset, load_dataset_pseudo_boxes
from cream_pl.data.transforms import build_box_eval_transform
from cream_pl.models.feature_cache import (
    FeatureCache,
    Flipped,
    ShardedEpochBatchSampler,
    cache_features,
    collate_samples,
    feature_bytes,
)

__all__ = ["CACHE_MODES", "FrozenFeatureDataModule"]

CACHE_MODES = ("auto", "on", "off")


class FrozenFeatureDataModule(pl.LightningDataModule):
    """Pseudo-boxed train images (cached frozen features or online) + an evaluation data module.

    Args:
        pseudo_boxes: the COCO pseudo-box file of ``train_split``.
        data_root: dataset root.
        classifier: the frozen classifier (``forward_features(images) -> (features, logits)``).
        eval_datamodule: a ``WSOLDataModule`` of the same dataset (val / test, normalisation).
        batch_size: the global training batch (split over DDP ranks).
        cache: :data:`CACHE_MODES`.
        cache_max_gb: bound on this process's cached features (train + val + test), GiB.
        seed: seed of the training order and flips.
        flip_prob: horizontal flip probability.
        shards: shards of the training order (default: the world size; one process may set the
            world size of a DDP run to reproduce it).
        train_split: the split the pseudo boxes cover.
        num_workers: loader workers of the online path.
        cache_dtype: dtype of the cached features (float16 halves the memory; float32 makes the
            cached training equal the online one to float rounding).
    """

    def __init__(self, pseudo_boxes: Path | str, data_root: Path | str, classifier: nn.Module,
                 eval_datamodule: Any, batch_size: int = 32, cache: Literal["auto", "on", "off"] = "auto",
                 cache_max_gb: float = 4.0, seed: int = 0, flip_prob: float = 0.5, shards: int | None = None,
                 train_split: str = "train", num_workers: int = 0, cache_dtype: torch.dtype = torch.float16) -> None:
        super().__init__()
        if cache not in CACHE_MODES:
            raise UserValueError(f"feature cache must be one of {CACHE_MODES}, got {cache!r}")
        if not cache_max_gb > 0:
            raise UserValueError(f"the feature-cache bound must be > 0 GiB, got {cache_max_gb}")
        self.pseudo_boxes, self.data_root = Path(pseudo_boxes), Path(data_root)
        self.classifier, self.eval_dm = classifier, eval_datamodule
        self.batch_size, self.cache, self.max_bytes = int(batch_size), cache, int(cache_max_gb * 2**30)
        self.seed, self.flip_prob, self.shards = int(seed), float(flip_prob), shards
        self.train_split, self.num_workers, self.cache_dtype = train_split, int(num_workers), cache_dtype
        self.mean, self.std = tuple(eval_datamodule.mean), tuple(eval_datamodule.std)
        self.eval_size = int(eval_datamodule.hparams.get("eval_size", 224))
        self.train_base: PseudoBoxDataset | None = None
        self.caches: dict[str, FeatureCache] = {}
        self.cached: bool | None = None  # decided in setup
        self._world_key: tuple[int, int] | None = None

    # ------------------------------------------------------------------ world
    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (0, 1) if trainer is None else (int(trainer.global_rank), int(trainer.world_size))

    def _extract(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.classifier.eval()
        feats, logits = self.classifier.forward_features(images.to(next(self.classifier.parameters()).device))
        return feats.float(), logits

    def sampler(self) -> ShardedEpochBatchSampler:
        rank, world = self._world()
        shards = self.shards or world
        if world > 1 and shards != world:
            raise UserValueError(f"shards={shards} but the run has {world} processes")
        assert self.train_base is not None
        return ShardedEpochBatchSampler(len(self.train_base), self.batch_size, shards,
                                        shard=rank if world > 1 else None, seed=self.seed, flip_prob=self.flip_prob)

    def _eval_positions(self, dataset: Dataset) -> list[int]:
        rank, world = self._world()
        return list(range(rank, len(dataset), world))  # the eval loaders' unrepeated split: rank r takes r, r + N, ...

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        if getattr(self.eval_dm, "trainer", None) is None and getattr(self, "trainer", None) is not None:
            self.eval_dm.trainer = self.trainer
        self.eval_dm.setup(stage)
        if self.train_base is None:
            records = load_dataset_pseudo_boxes(self.pseudo_boxes, self.data_root, self.train_split)
            self.train_base = PseudoBoxDataset(records, self.data_root / "images",
                                               build_box_eval_transform(self.eval_size, self.mean, self.std))
        if self._world_key != self._world():  # another world: caches of other positions
            self.caches, self._world_key = {}, self._world()
        if self.cached is None:
            self.cached = self._decide_cache()
        if not self.cached:
            return
        for split in {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage, ()):
            self._cache_split(split)

    def _split_dataset(self, split: str) -> tuple[Dataset, list[int]]:
        if split == "train":
            assert self.train_base is not None
            sampler = self.sampler()
            shards = range(sampler.shards) if sampler.shard is None else [sampler.shard]
            return self.train_base, sorted(p for s in shards for p in sampler.shard_positions(s))
        ds = self.eval_dm.eval_dataset(split)
        return ds, self._eval_positions(ds)

    def _decide_cache(self) -> bool:
        """Whether this process caches: the size of its train + val + test share against the bound."""
        if self.cache == "off":
            return False
        assert self.train_base is not None
        with torch.no_grad():
            shape = self._extract(self.train_base[0]["image"][None])[0].shape[1:]
        n = sum(len(self._split_dataset(s)[1]) for s in ("train", "val", "test") if s == "train" or self.eval_dm.has_split(s))
        need = feature_bytes(n, shape, self.cache_dtype)
        if need <= self.max_bytes:
            return True
        if self.cache == "on":
            raise UserValueError(f"the frozen features of {n} images take {need / 2**30:.2f} GiB > the "
                                 f"{self.max_bytes / 2**30:.2f} GiB cache bound; raise it or use feature cache 'off'")
        return False

    def _cache_split(self, split: str) -> None:
        if split in self.caches or (split != "train" and not self.eval_dm.has_split(split)):
            return
        dataset, positions = self._split_dataset(split)
        used = sum(c.nbytes for c in self.caches.values())
        self.caches[split] = cache_features(self._extract, dataset, positions, batch_size=self.batch_size,
                                            max_bytes=self.max_bytes - used, dtype=self.cache_dtype,
                                            what=f"the {split} split")

    # ------------------------------------------------------------------ loaders
    def train_dataloader(self) -> DataLoader:
        if self.train_base is None:
            self.setup("fit")
        data: Dataset = self.caches["train"] if self.cached else self.train_base  # type: ignore[assignment]
        return DataLoader(Flipped(data), batch_sampler=self.sampler(), collate_fn=collate_samples,
                          num_workers=0 if self.cached else self.num_workers)

    def _eval_loader(self, split: str) -> Any:
        if self.cached and split in self.caches:
            cache = self.caches[split]
            return DataLoader(cache, sampler=cache.positions, batch_size=self.batch_size, collate_fn=collate_samples)
        return self.eval_dm.val_dataloader() if split == "val" else self.eval_dm.test_dataloader()

    def val_dataloader(self) -> Any:
        return self._eval_loader("val")

    def test_dataloader(self) -> Any:
        return self._eval_loader("test")
