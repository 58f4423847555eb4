"""CREAM_reg stage 1: pseudo boxes for the whole training split, written as COCO JSON.

A trained classifier runs over the training split (ground-truth class, eval transform, no
augmentation). Each image's score map (``"cream"`` or plain ``"cam"``) becomes one box with the
benchmark's map -> box rule at a threshold τ (the τ* of IoU-50 box accuracy on the fully
supervised val split by default), is mapped back to original image pixels and is written to a
COCO file that ``pycocotools`` loads.

Resumable, DDP-safe writing:

- the split's indices are cut into fixed **chunks** of ``chunk_size`` images (a multiple of the
  batch size); each chunk becomes one shard file ``<shard_dir>/chunk_<k>.json``, written
  atomically (temporary file + ``os.replace``) by the rank that computed it;
- before predicting, rank 0 lists the finished shards and broadcasts the list; the predict
  loader of each rank covers only its share of the **unfinished** chunks (round robin), so an
  interrupted run never recomputes a finished chunk;
- chunks are batch-aligned, so each image is seen in the same batch as in an uninterrupted run;
- rank 0 merges the shards sorted by index into the final file (atomically), which is therefore
  byte-identical to the file of an uninterrupted run;
- ``<shard_dir>/manifest.json`` records the run's settings; shards from a different run
  (another model, source, threshold, dataset, chunk size) are refused, not mixed.

Where the split has true boxes, ``<out>.quality.json`` gets the fraction of pseudo boxes with
IoU >= 0.5 and their mean IoU (inclusive "+1" IoU in original pixels, best GT box per image).

Example:
    $ cream-pl pseudo-boxes --ckpt runs/cub/last.ckpt --data data/cub --out runs/cub/pseudo_boxes.json
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import warnings
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from cream_pl.core.boxes import BoxFormat, box_iou_inclusive, convert_boxes
from cream_pl.core.errors import UserError, UserValueError
from cream_pl.core.io import atomic_write_text, read_json_file
from cream_pl.core.names import MAP_METHODS
from cream_pl.models.checkpoints import (  # re-exported (they moved to models.checkpoints)
    checkpoint_normalisation,
    model_fingerprint,
)

__all__ = [
    "OtherRunShards",
    "refuse_another_runs_file",
    "PseudoBoxWriter",
    "box_to_original",
    "pseudo_box_quality",
    "choose_threshold_on_val",
    "generate_pseudo_boxes",
    "model_fingerprint",
    "checkpoint_normalisation",
    "quality_path",
    "read_pseudo_box_info",
]

Source = Literal["cream", "cam", "cream_selected"]
# cream_selected: CREAM at the T / κ / λ / feature norm chosen on val (WSOLClassifier(cream_search=...))
SOURCES: tuple[str, ...] = MAP_METHODS
MANIFEST = "manifest.json"
_FORMAT_VERSION = 1
_DECIMALS = 4


class OtherRunShards(UserValueError):
    """A shard folder that holds another pseudo-box run's chunks (other settings, another model or other data)."""


# ---------------------------------------------------------------------------------------------- pure functions


def _dump(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def box_to_original(box: Sequence[int] | np.ndarray | Tensor, grid_size: tuple[int, int],
                    orig_size: tuple[int, int]) -> list[float]:
    """Map an inclusive box of the ``grid_size`` score map back to a COCO ``[x, y, w, h]`` box in original pixels.

    Pixel ``i`` of the squashed grid covers ``[i, i + 1)``, i.e. ``[i W / S, (i + 1) W / S)`` of the
    original image. Values are rounded to 4 decimals.

    Args:
        box: ``XYXY_INCLUSIVE`` box in the grid.
        grid_size: ``(width, height)`` of the grid (224 x 224).
        orig_size: ``(width, height)`` of the original image.

    Example:
        >>> box_to_original([56, 0, 111, 223], (224, 224), (448, 100))
        [112.0, 0.0, 112.0, 100.0]
    """
    b = torch.as_tensor(np.asarray(box, dtype=np.float64)).reshape(1, 4)
    rel = convert_boxes(b, BoxFormat.XYXY_INCLUSIVE, BoxFormat.XYXY_REL, grid_size)
    x0, y0, x1, y1 = convert_boxes(rel, BoxFormat.XYXY_REL, BoxFormat.XYXY, orig_size)[0].tolist()
    x0, y0, x1, y1 = (round(v, _DECIMALS) for v in (x0, y0, x1, y1))
    return [x0, y0, round(x1 - x0, _DECIMALS), round(y1 - y0, _DECIMALS)]


def pseudo_box_quality(pred_xywh: Tensor | Sequence[Sequence[float]],
                       gt_boxes: Sequence[Tensor | Sequence[Sequence[int]]]) -> dict[str, float | int]:
    """Quality of pseudo boxes against true boxes: fraction with IoU >= 0.5 and mean IoU.

    The IoU of an image is the best over its GT boxes, with the benchmark's inclusive "+1" areas
    (a COCO box ``[x, y, w, h]`` covers the inclusive pixels ``x .. x + w - 1``).

    Args:
        pred_xywh: ``(N, 4)`` COCO boxes in original pixels.
        gt_boxes: per image, ``(n_i, 4)`` ``XYXY_INCLUSIVE`` boxes in original pixels.

    Example:
        >>> q = pseudo_box_quality([[0, 0, 10, 10], [0, 0, 10, 5]], [[[0, 0, 9, 9]], [[0, 0, 9, 9]]])
        >>> q["iou50_fraction"], q["mean_iou"], q["num_images"]
        (1.0, 0.75, 2)
    """
    pred = torch.as_tensor(pred_xywh, dtype=torch.float64).reshape(-1, 4)
    if len(pred) != len(gt_boxes):
        raise ValueError(f"{len(pred)} pseudo boxes but {len(gt_boxes)} GT box lists")
    if len(pred) == 0:
        raise ValueError("no pseudo boxes to score")
    incl = convert_boxes(pred, BoxFormat.XYWH, BoxFormat.XYXY_INCLUSIVE)
    ious = torch.stack([
        box_iou_inclusive(incl[i : i + 1], torch.as_tensor(g, dtype=torch.float64).reshape(-1, 4)).max()
        for i, g in enumerate(gt_boxes)
    ])
    return {
        "iou50_fraction": float((ious >= 0.5).double().mean()),
        "mean_iou": float(ious.mean()),
        "num_images": len(pred),
    }


def split_fingerprint(datamodule: Any, split: str | None) -> str | None:
    """SHA-1 of the ``split``'s metadata files (names and bytes) and, for a synthetic root, its generator config:
    the images the boxes are of. ``None`` where the data module has no metadata folder."""
    meta = getattr(datamodule, "metadata_root", None)
    if meta is None or split is None:
        return None
    h = hashlib.sha1()
    files = sorted((Path(meta) / split).glob("*.txt"))
    root = getattr(datamodule, "data_root", None)
    if root is not None and (Path(root) / "synth_config.json").is_file():
        files.append(Path(root) / "synth_config.json")
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- the writer


class PseudoBoxWriter(BasePredictionWriter):
    """Turns predicted score maps into pseudo boxes and writes them in resumable chunk shards.

    Use it through :func:`generate_pseudo_boxes`, which wraps the data module so that only
    unfinished chunks are predicted and merges the shards at the end. Each prediction must be
    the ``predict_step`` dict of ``WSOLClassifier`` (``index``, ``image_id``, ``orig_size``,
    ``label``, ``logits``, ``scoremaps[source]`` of shape ``(B, S, S)``).

    Args:
        out_path: the final COCO JSON file.
        source: score map to box: ``"cream"`` or ``"cam"``.
        threshold: CAM threshold τ in ``[0, 1)`` (benchmark rule: keep ``floor(255 s) > int(255 τ)``).
        categories: class names; category ``c`` of the COCO file is class ``c`` (0-based).
        shard_dir: folder of the chunk shards (default ``<out_path>.shards``).
        chunk_size: images per shard; must be a multiple of the predict batch size (default:
            16 batches).
        multi_contour: box of all contours instead of the largest (the benchmark's V2 rule);
            the union box is written.
        fingerprint: extra settings recorded in the manifest (e.g. model hash, data root);
            shards written under different settings are refused.
        gt_boxes: per dataset index, ``(n, 4)`` true ``XYXY_INCLUSIVE`` boxes in original pixels
            (writes ``<out>.quality.json``); default: the predict dataset's ``samples[i].boxes``
            when it has them (``WSOLDataset``).
        expected_image_ids: the split's image ids in index order, checked against the predictions;
            default: the predict dataset's ``samples[i].image_id``.
        overwrite: delete existing shards instead of resuming from them.
        keep_shards: keep ``shard_dir`` after the final file is written (default: removed).
    """

    def __init__(
        self,
        out_path: Path | str,
        source: Source = "cream",
        threshold: float = 0.2,
        categories: Sequence[str] = (),
        shard_dir: Path | str | None = None,
        chunk_size: int | None = None,
        multi_contour: bool = False,
        fingerprint: Mapping[str, Any] | None = None,
        gt_boxes: Sequence[Any] | None = None,
        expected_image_ids: Sequence[str] | None = None,
        overwrite: bool = False,
        keep_shards: bool = False,
    ) -> None:
        super().__init__(write_interval="batch")
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        if not (isinstance(threshold, (int, float)) and 0.0 <= float(threshold) < 1.0):
            raise ValueError(f"threshold must be a number in [0, 1), got {threshold!r}")
        if not categories:
            raise ValueError("categories (the class names) must not be empty")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.out_path = Path(out_path)
        self.source = source
        self.threshold = float(threshold)
        self.categories = [str(c) for c in categories]
        self.shard_dir = Path(shard_dir) if shard_dir is not None else self.out_path.with_name(self.out_path.name + ".shards")
        self.chunk_size = chunk_size
        self.multi_contour = multi_contour
        self.fingerprint = dict(fingerprint or {})
        self.gt_boxes = gt_boxes
        self.expected_image_ids = list(expected_image_ids) if expected_image_ids is not None else None
        self.overwrite = overwrite
        self.keep_shards = keep_shards
        self.num_images: int | None = None
        self.my_chunks: list[int] = []
        self._my_chunk_set: set[int] = set()
        self.pending_chunks: list[int] = []
        self._buffers: dict[int, dict[int, dict[str, Any]]] = {}
        self.chunks_written = 0

    # ------------------------------------------------------------------ chunk plan
    def chunk_path(self, k: int) -> Path:
        return self.shard_dir / f"chunk_{k:06d}.json"

    def num_chunks(self) -> int:
        assert self.num_images is not None and self.chunk_size is not None
        return math.ceil(self.num_images / self.chunk_size)

    def chunk_indices(self, k: int) -> range:
        assert self.num_images is not None and self.chunk_size is not None
        return range(k * self.chunk_size, min((k + 1) * self.chunk_size, self.num_images))

    def manifest(self) -> dict[str, Any]:
        return {
            "format_version": _FORMAT_VERSION,
            "num_images": self.num_images,
            "chunk_size": self.chunk_size,
            "source": self.source,
            "threshold": self.threshold,
            "multi_contour": self.multi_contour,
            "categories": self.categories,
            "image_ids_sha1": _ids_hash(self.expected_image_ids),
            **{f"fingerprint_{k}": v for k, v in sorted(self.fingerprint.items())},
        }

    def scan(self) -> list[int]:
        """Check or create the manifest and return the unfinished chunks (rank 0's view of the shard folder)."""
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        manifest_path = self.shard_dir / MANIFEST
        want = self.manifest()
        if self.overwrite and not self._own_manifest(want):  # this run's own chunks (an --overwrite run cut short)
            for p in self.shard_dir.glob("chunk_*.json"):  # are resumed; another run's are removed
                p.unlink()
            manifest_path.unlink(missing_ok=True)
        for p in self.shard_dir.glob(".chunk_*.tmp"):  # debris of an interrupted atomic write
            p.unlink(missing_ok=True)
        if manifest_path.exists():
            self._check_manifest(want)
        else:
            atomic_write_text(manifest_path, _dump(want))
        pending = []
        for k in range(self.num_chunks()):
            path = self.chunk_path(k)
            if not path.is_file():
                pending.append(k)
                continue
            problem = self.shard_problem(k)[1]
            if problem is not None:  # not ours as written (atomic writes): recomputed, never merged as it is
                from pytorch_lightning.utilities import rank_zero_info

                rank_zero_info(f"pseudo boxes: {path}: {problem}; recomputing this chunk")
                path.unlink(missing_ok=True)
                pending.append(k)
        return pending

    def _read_shard(self, k: int) -> list[Any]:
        """The records of chunk ``k``'s shard; a shard that cannot be read or is not a list raises ``UserValueError``."""
        recs = read_json_file(self.chunk_path(k), "pseudo-box chunk shard")
        if not isinstance(recs, list):
            raise UserValueError(f"{self.chunk_path(k)}: not a list of pseudo-box records")
        return recs

    def shard_problem(self, k: int) -> tuple[list[dict[str, Any]], str | None]:
        """The records of chunk ``k``'s shard and why it is not the shard this run writes (unreadable, other
        indices or image ids, records without their fields), or ``None`` when it is sound."""
        try:
            recs = self._read_shard(k)
        except UserError as err:
            return [], _reason(err, self.chunk_path(k), "pseudo-box chunk shard")
        want = list(self.chunk_indices(k))
        if len(recs) != len(want):
            return recs, f"holds {len(recs)} records, chunk {k} has {len(want)} images"
        for i, rec in zip(want, recs):
            problem = _record_problem(rec, i, len(self.categories), self.gt_boxes is not None)
            if problem is None and self.expected_image_ids is not None and rec["image_id"] != self.expected_image_ids[i]:
                problem = f"image id {rec['image_id']!r}, the split's is {self.expected_image_ids[i]!r}"
            if problem is not None:
                return recs, f"record of index {i}: {problem}"
        return recs, None

    def _own_manifest(self, want: Mapping[str, Any]) -> bool:
        """Whether the shard folder holds the chunks of this run cut short: its manifest is exactly this run's
        (``want``) and no finished file of this run is there (``--keep-shards`` kept a finished run's chunks, which
        ``--overwrite`` asks to predict again)."""
        try:
            if read_json_file(self.shard_dir / MANIFEST, "shard manifest") != dict(want):
                return False
            if not self.out_path.is_file():
                return True
            info = read_pseudo_box_info(self.out_path)
        except UserError:  # no readable manifest (a cut run writes it first), or a foreign file at --out
            return False
        return any(info.get(k) != v for k, v in self._info().items())

    def _check_manifest(self, want: Mapping[str, Any], known_only: bool = False) -> None:
        """Refuse shards of another run (``known_only``: compare only the settings known before planning)."""
        manifest_path = self.shard_dir / MANIFEST
        try:
            have = read_json_file(manifest_path, "shard manifest")
            if not isinstance(have, dict):
                raise UserValueError(f"{manifest_path}: not a JSON object")
        except UserError as err:
            reason = _reason(err, manifest_path, "shard manifest")
            raise UserValueError(f"{manifest_path}: unreadable shard manifest ({reason}); delete {self.shard_dir} "
                                 "or pass --overwrite (overwrite=True)") from None
        keys = set(want) | set(have)
        if known_only:
            keys = {k for k in keys if want.get(k) is not None}
        diff = sorted(k for k in keys if want.get(k) != have.get(k))
        if diff:
            details = "; ".join(f"{k}: shards have {have.get(k)!r}, this run has {want.get(k)!r}" for k in diff[:3])
            raise OtherRunShards(f"{self.shard_dir} holds shards of a different pseudo-box run ({details}). Delete the "
                                 "folder, choose another --out, or pass --overwrite (overwrite=True).")

    def check_before_run(self) -> None:
        """Before any work: refuse (without ``overwrite``) a finished file or shards of another run.

        Rerunning the same settings is fine (a finished file is kept, shards are resumed); other
        settings (another τ, source, model, split, ...) must not replace a finished file silently.

        Raises:
            UserValueError: one line naming the file or folder and the first differences.
        """
        if self.overwrite:
            return
        quality = quality_path(self.out_path)
        if quality.exists() and not is_own_quality_record(quality, self.out_path):
            raise UserValueError(f"{quality}: exists and is not the quality record of {self.out_path.name} (this run "
                                 "writes it); move it, pass --overwrite to replace it, or choose another --out")
        if self.out_path.exists():  # a file of before the data hash lacks it: recomputed
            refuse_another_runs_file(self.out_path, self._info(), absent_ok=("data_sha1",))
        if (self.shard_dir / MANIFEST).is_file():
            self._check_manifest(self.manifest(), known_only=True)

    def plan(self, dataset: Any, batch_size: int, trainer: pl.Trainer | None) -> None:
        """Decide the chunk size, list the unfinished chunks (rank 0, broadcast) and pick this rank's share.

        Args:
            dataset: the full predict dataset (``len``; ``samples`` of ``SampleRecord`` when available).
            batch_size: the predict batch size.
            trainer: the running trainer (rank, world size, broadcast), or ``None`` for one process.
        """
        num_images = len(dataset)
        if num_images < 1:
            raise ValueError("the predict split is empty")
        samples = getattr(dataset, "samples", None)
        if samples is not None and len(samples) == num_images and all(hasattr(r, "image_id") for r in samples):
            if self.expected_image_ids is None:
                self.expected_image_ids = [r.image_id for r in samples]
            if self.gt_boxes is None and all(getattr(r, "boxes", ()) for r in samples):
                self.gt_boxes = [r.boxes for r in samples]
        if self.chunk_size is None:
            self.chunk_size = 16 * batch_size
        if self.chunk_size % batch_size != 0:
            raise ValueError(f"chunk_size ({self.chunk_size}) must be a multiple of the batch size ({batch_size}) so "
                             "that a resumed run sees the same batches as an uninterrupted one")
        if self.expected_image_ids is not None and len(self.expected_image_ids) != num_images:
            raise ValueError(f"the predict split has {num_images} images but {len(self.expected_image_ids)} image ids "
                             "were expected")
        self.num_images = num_images
        self.fingerprint.setdefault("has_gt_boxes", self.gt_boxes is not None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        result: Any = None
        if rank == 0:
            try:
                result = self.scan()
            except ValueError as err:  # every rank raises it (a user error stays one: one line, exit status 2)
                result = (isinstance(err, UserError), str(err))
        if trainer is not None and world > 1:
            result = trainer.strategy.broadcast(result, src=0)
        if isinstance(result, tuple):
            raise (UserValueError if result[0] else ValueError)(result[1])
        self.pending_chunks = list(result)
        self.my_chunks = self.pending_chunks[rank::world]
        self._my_chunk_set = set(self.my_chunks)
        self._buffers = {}

    def my_indices(self) -> list[int]:
        return [i for k in self.my_chunks for i in self.chunk_indices(k)]

    # ------------------------------------------------------------------ writing
    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int = 0) -> None:
        for rec in self.records_from_prediction(prediction):
            k = rec["index"] // self.chunk_size  # type: ignore[operator]
            if k not in self._my_chunk_set:
                raise RuntimeError(f"prediction for dataset index {rec['index']} belongs to chunk {k}, which this rank "
                                   f"does not own; the predict loader must come from generate_pseudo_boxes")
            self._buffers.setdefault(k, {})[rec["index"]] = rec
            if len(self._buffers[k]) == len(self.chunk_indices(k)):
                self._flush(k)

    def records_from_prediction(self, prediction: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Pseudo-box records (index, image id, size, label, box, score) of one ``predict_step`` output."""
        from cream_pl.metrics.functional import pixel_box_from_scoremap_at

        maps_by_source = prediction.get("scoremaps", {})
        if self.source not in maps_by_source:
            hint = ("the classifier needs cream_search and a validation run that selected CREAM's "
                    "hyperparameters" if self.source == "cream_selected" else "CREAM disabled? use source='cam'")
            raise ValueError(f"the model's predict_step has no {self.source!r} score maps (it has "
                             f"{sorted(maps_by_source)}); {hint}")
        maps = _numpy(maps_by_source[self.source]).astype(np.float64, copy=False)
        index = _numpy(prediction["index"]).astype(np.int64)
        sizes = _numpy(prediction["orig_size"]).astype(np.int64)
        labels = _numpy(prediction["label"]).astype(np.int64)
        logits = torch.as_tensor(prediction["logits"]).detach().float().cpu()
        probs = torch.softmax(logits, dim=1)
        image_ids = list(prediction["image_id"])
        if maps.ndim != 3 or not (len(maps) == len(index) == len(sizes) == len(labels) == len(image_ids)):
            raise ValueError("predict_step output: 'scoremaps' must be (B, S, S) and every field must have B entries")
        grid = (maps.shape[2], maps.shape[1])
        out = []
        for i in range(len(index)):
            box = pixel_box_from_scoremap_at(maps[i], self.threshold, self.multi_contour)  # first..last pixel
            w, h = int(sizes[i, 0]), int(sizes[i, 1])
            idx = int(index[i])
            if self.expected_image_ids is not None and self.expected_image_ids[idx] != image_ids[i]:
                raise ValueError(f"dataset index {idx} is {image_ids[i]!r} in the predict loader but "
                                 f"{self.expected_image_ids[idx]!r} in the split metadata")
            rec = {
                "index": idx,
                "image_id": image_ids[i],
                "width": w,
                "height": h,
                "label": int(labels[i]),
                "bbox": box_to_original(box, grid, (w, h)),
                "box_grid": [int(v) for v in box],
                "score": round(float(probs[i, labels[i]]), 6),
            }
            if self.gt_boxes is not None:
                rec["iou"] = pseudo_box_quality([rec["bbox"]], [self.gt_boxes[idx]])["mean_iou"]
            out.append(rec)
        return out

    def _flush(self, k: int) -> None:
        recs = [self._buffers[k][i] for i in self.chunk_indices(k)]
        atomic_write_text(self.chunk_path(k), _dump(recs))
        del self._buffers[k]
        self.chunks_written += 1

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._buffers:
            left = {k: len(v) for k, v in self._buffers.items()}
            raise RuntimeError(f"pseudo-box chunks left incomplete at the end of prediction: {left} "
                               "(the predict loader skipped images?)")

    # ------------------------------------------------------------------ merging
    def merge(self) -> Path:
        """Merge every shard, sorted by index, into the COCO file (and the quality file); atomic writes."""
        # The manifest is the record of the run (in the main process of ddp_spawn, the workers planned it).
        manifest = read_json_file(self.shard_dir / MANIFEST, "shard manifest")
        if not isinstance(manifest, dict) or not all(isinstance(manifest.get(k), int)
                                                     for k in ("num_images", "chunk_size")):
            raise UserValueError(f"{self.shard_dir / MANIFEST}: not a shard manifest of cream-pl; delete "
                                 f"{self.shard_dir} or pass --overwrite (overwrite=True)")
        self.num_images, self.chunk_size = manifest["num_images"], manifest["chunk_size"]
        fingerprint = {k[len("fingerprint_"):]: v for k, v in manifest.items() if k.startswith("fingerprint_")}
        missing = [k for k in range(self.num_chunks()) if not self.chunk_path(k).is_file()]
        if missing:
            raise RuntimeError(f"cannot merge: {len(missing)} chunk shard(s) missing in {self.shard_dir} "
                               f"(e.g. {self.chunk_path(missing[0]).name})")
        records: list[dict[str, Any]] = []
        for k in range(self.num_chunks()):
            recs, problem = self.shard_problem(k)
            if problem is not None:  # changed after this run's scan: the next run recomputes it
                raise UserValueError(f"{self.chunk_path(k)}: {problem}; run the same command again to recompute "
                                     "this chunk")
            records.extend(recs)
        coco = {
            "info": {
                "description": "CREAM_reg pseudo boxes (cream-pl)",
                "source": self.source,
                "threshold": self.threshold,
                "multi_contour": self.multi_contour,
                "box_format": "bbox = [x, y, w, h] in original image pixels; score = classifier "
                              "probability of the ground-truth class",
                "num_fallback_boxes": sum(1 for r in records if r["box_grid"] == [0, 0, 0, 0]),
                **dict(sorted(fingerprint.items())),
            },
            "images": [{"id": r["index"], "file_name": r["image_id"], "width": r["width"], "height": r["height"]}
                       for r in records],
            "categories": [{"id": c, "name": name} for c, name in enumerate(self.categories)],
            "annotations": [
                {"id": r["index"], "image_id": r["index"], "category_id": r["label"], "bbox": r["bbox"],
                 "area": round(r["bbox"][2] * r["bbox"][3], _DECIMALS), "iscrowd": 0, "score": r["score"]}
                for r in records
            ],
        }
        atomic_write_text(self.out_path, _dump(coco))
        if records and all("iou" in r for r in records):
            ious = np.array([r["iou"] for r in records], dtype=np.float64)
            area = np.array([r["bbox"][2] * r["bbox"][3] / (r["width"] * r["height"]) for r in records])
            quality = {
                "iou50_fraction": float((ious >= 0.5).mean()),
                "mean_iou": float(ious.mean()),
                "mean_area_fraction": float(area.mean()),  # box area / image area
                "near_full_image_fraction": float((area >= 0.9).mean()),  # boxes covering >= 90 % of the image
                "num_images": len(records),
                "iou_threshold": 0.5,
                "source": self.source,
                "threshold": self.threshold,
                "pseudo_boxes": self.out_path.name,
            }
            atomic_write_text(quality_path(self.out_path), json.dumps(quality, indent=2) + "\n")
        elif is_own_quality_record(quality_path(self.out_path), self.out_path):  # an earlier run's, of other boxes: it would mislead
            quality_path(self.out_path).unlink()
        if not self.keep_shards:
            shutil.rmtree(self.shard_dir, ignore_errors=True)
        return self.out_path

    def _info(self) -> dict[str, Any]:
        return {"source": self.source, "threshold": self.threshold, "multi_contour": self.multi_contour,
                **dict(sorted(self.fingerprint.items()))}

    def finished(self) -> bool:
        """Whether ``out_path`` already holds this run's result (same source, τ, model and split), so
        a rerun of a finished job (its shards already removed) predicts nothing."""
        if self.overwrite or not self.out_path.is_file() or self.shard_dir.is_dir():
            return False
        try:
            info = read_pseudo_box_info(self.out_path)
        except UserError:  # not ours: check_before_run refuses it in one line
            return False
        return all(info.get(k) == v for k, v in self._info().items())


def refuse_another_runs_file(out_path: Path, wanted: Mapping[str, Any], absent_ok: Collection[str] = ()) -> None:
    """One line where ``out_path`` holds the pseudo boxes of a run of other settings than ``wanted`` (a setting in
    ``absent_ok`` the file may lack); also where it is no pseudo-box file of cream-pl.

    Raises:
        UserValueError: ``<out_path>: holds the pseudo boxes of another run (<first differences>); ...``.
    """
    info = read_pseudo_box_info(out_path, "pass --overwrite to replace it, or choose another --out")
    diff = [k for k, v in wanted.items() if info.get(k) != v and (k in info or k not in absent_ok)]
    if diff:
        details = "; ".join(f"{k}: file has {info.get(k)!r}, this run has {wanted[k]!r}" for k in diff[:3])
        raise UserValueError(f"{out_path}: holds the pseudo boxes of another run ({details}); pass --overwrite to "
                             "replace it, or choose another --out")


def read_pseudo_box_info(path: Path | str, hint: str = "choose another output file") -> dict[str, Any]:
    """The ``info`` object of a pseudo-box file written by cream-pl (its run's source, τ, model, split).

    Raises:
        UserValueError: one line naming ``path`` when it is not such a file (invalid JSON, too deeply
            nested, not a COCO object, no ``info`` object), ending with ``hint``.
    """
    path = Path(path)
    try:
        data = read_json_file(path, "pseudo-box file")
        reason = None
    except UserError as err:
        data, reason = None, _reason(err, path, "pseudo-box file")
    if reason is None:
        info = data.get("info") if isinstance(data, dict) else None
        if isinstance(info, dict) and "source" in info and "threshold" in info:
            return info
        reason = "no 'info' object of a pseudo-box run" if isinstance(data, dict) else \
            f"a JSON {type(data).__name__}, not a COCO object"
    raise UserValueError(f"{path}: exists and is not a cream-pl pseudo-box file ({reason}); {hint}")


def _reason(err: BaseException, path: Path, what: str) -> str:
    """The message of a :func:`read_json_file` error without its file name and ``(what)`` (said around it)."""
    text = str(err).removesuffix(f" ({what})")
    if not text.startswith(f"{path}:"):
        return text
    line, sep, rest = text[len(f"{path}:"):].partition(": ")
    return f"line {line}: {rest}" if sep and line.isdigit() else text[len(f"{path}:"):].lstrip()


def _record_problem(rec: Any, index: int, num_classes: int, with_iou: bool) -> str | None:
    """Why ``rec`` is not a pseudo-box record of dataset index ``index`` as the writer writes it, or ``None``."""
    if not isinstance(rec, dict):
        return f"a JSON {type(rec).__name__}, not an object"
    if rec.get("index") != index or isinstance(rec.get("index"), bool):
        return f"index {rec.get('index')!r}, expected {index}"

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    def integer(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    checks = {
        "image_id": lambda v: isinstance(v, str) and v != "",
        "width": lambda v: integer(v) and v > 0,
        "height": lambda v: integer(v) and v > 0,
        "label": lambda v: integer(v) and 0 <= v < num_classes,
        "bbox": lambda v: isinstance(v, list) and len(v) == 4 and all(number(x) for x in v),
        "box_grid": lambda v: isinstance(v, list) and len(v) == 4 and all(integer(x) for x in v),
        "score": number,
        **({"iou": number} if with_iou else {}),
    }
    for key, ok in checks.items():
        if key not in rec:
            return f"no {key!r}"
        if not ok(rec[key]):
            return f"{key} {rec[key]!r} is not valid"
    return None


def is_own_quality_record(path: Path, out_path: Path | str) -> bool:
    """Whether ``path`` is the quality record a pseudo-box writer wrote for ``out_path`` (an earlier run's)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8")).get("pseudo_boxes") == Path(out_path).name
    except (OSError, ValueError, AttributeError, RecursionError):
        return False


def quality_path(out_path: Path | str) -> Path:
    """``<out>.quality.json`` beside the pseudo-box file (``boxes.json`` -> ``boxes.quality.json``)."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.stem + ".quality.json")


def _ids_hash(ids: Sequence[str] | None) -> str | None:
    return None if ids is None else hashlib.sha1("\n".join(ids).encode()).hexdigest()


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


# ---------------------------------------------------------------------------------------------- data wrapper


class _PendingChunksData(pl.LightningDataModule):
    """Wraps a data module: its predict loader, restricted to this rank's unfinished chunks."""

    def __init__(self, inner: pl.LightningDataModule, writer: PseudoBoxWriter) -> None:
        super().__init__()
        self.inner = inner
        self.writer = writer
        self._base: DataLoader | None = None
        # fewer pending chunks than processes (a small split, the last chunk of a resumed run) leave a rank with
        # nothing to predict: it waits at the merge barrier (before: Lightning's "zero length" error on that rank)
        self.allow_zero_length_dataloader_with_multiple_devices = True

    def prepare_data(self) -> None:
        self.inner.prepare_data()

    def setup(self, stage: str) -> None:
        self.inner.trainer = self.trainer
        self.inner.setup("predict")
        base = self.inner.predict_dataloader()
        if not isinstance(base, DataLoader) or base.batch_size is None:
            raise TypeError("the data module's predict_dataloader() must return one DataLoader with a batch_size")
        self._base = base
        self.writer.plan(base.dataset, base.batch_size, self.trainer)

    def predict_dataloader(self) -> DataLoader:
        assert self._base is not None
        b = self._base
        return DataLoader(Subset(b.dataset, self.writer.my_indices()), batch_size=b.batch_size, shuffle=False,
                          num_workers=b.num_workers, collate_fn=b.collate_fn, pin_memory=b.pin_memory,
                          worker_init_fn=b.worker_init_fn)


# ---------------------------------------------------------------------------------------------- entry points


def choose_threshold_on_val(
    model: pl.LightningModule,
    datamodule: pl.LightningDataModule | None = None,
    source: Source = "cream",
    trainer_kwargs: Mapping[str, Any] | None = None,
    recompute: bool = False,
) -> float:
    """τ*: the CAM threshold that maximises IoU-50 box accuracy on the fully supervised val split.

    Uses the value the classifier stored at its last validation (``val_best_threshold``, saved in
    checkpoints); if there is none, or with ``recompute`` (e.g. pseudo boxes at another input size
    than the one the classifier was validated at), runs ``Trainer.validate`` on ``datamodule``.

    Raises:
        ValueError: no stored τ* and no data module to compute one.
    """
    names = list(getattr(model, "method_names", []))
    if source not in names:
        raise ValueError(f"the model has no {source!r} maps (methods: {names})")
    i = names.index(source)

    def stored() -> float:
        buf = getattr(model, "val_best_threshold", None)
        return float(buf[i]) if buf is not None else float("nan")

    tau = float("nan") if recompute else stored()
    if not math.isfinite(tau):
        if datamodule is None:
            raise ValueError("the classifier has no val threshold τ* (it was never validated); pass a data module "
                             "with a val split, or a fixed threshold")
        kw = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False, **dict(trainer_kwargs or {})}
        pl.Trainer(**kw).validate(model, datamodule=datamodule, verbose=False)
        tau = stored()
        if not math.isfinite(tau):  # a user's data (a val split without boxes): one line, exit status 2
            raise UserValueError("validation did not produce a threshold τ* (does the val split have boxes?); give a "
                                 "fixed threshold")
    return tau


def generate_pseudo_boxes(
    model: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    out_path: Path | str,
    source: Source = "cream",
    threshold: float | None = None,
    trainer_kwargs: Mapping[str, Any] | None = None,
    *,
    categories: Sequence[str] | None = None,
    chunk_size: int | None = None,
    shard_dir: Path | str | None = None,
    multi_contour: bool = False,
    overwrite: bool = False,
    keep_shards: bool = False,
    callbacks: Sequence[pl.Callback] = (),
) -> Path:
    """Run ``model`` over the predict split of ``datamodule`` and write pseudo boxes as COCO JSON.

    Args:
        model: a ``WSOLClassifier`` (or any module with the same ``predict_step`` contract).
        datamodule: provides ``predict_dataloader()`` over the training split (eval transform) and,
            for ``threshold=None`` without a stored τ*, ``val_dataloader()``.
        out_path: COCO file to write.
        source: ``"cream"``, ``"cam"`` or ``"cream_selected"`` (the val-selected CREAM) maps.
        threshold: fixed τ; ``None`` = τ* of the val split (:func:`choose_threshold_on_val`).
        trainer_kwargs: ``pl.Trainer`` arguments (``accelerator``, ``devices``, ``strategy``, ...).
        categories: class names (default: ``datamodule.class_names``, else ``class_<i>``).
        chunk_size: images per resumable shard (multiple of the batch size; default 16 batches).
        shard_dir: shard folder (default ``<out_path>.shards``).
        multi_contour: union box of all contours instead of the largest contour's box.
        overwrite: ignore and delete existing shards (and recompute a finished file).
        keep_shards: keep the shard folder after the final file is written.
        callbacks: extra Lightning callbacks.

    Returns:
        ``out_path``. ``<out>.quality.json`` is written too when the split has true boxes.
    """
    out_path = Path(out_path)
    if threshold is None:
        threshold = choose_threshold_on_val(model, datamodule, source, trainer_kwargs)
    if categories is None:
        categories = getattr(datamodule, "class_names", None)
    if categories is None:
        num_classes = dict(getattr(model, "hparams", {})).get("num_classes")
        if num_classes is None:
            raise ValueError("cannot tell the class names: pass categories=")
        categories = [f"class_{c}" for c in range(int(num_classes))]
    dm_hparams = dict(getattr(datamodule, "hparams", {}))
    split = getattr(datamodule, "predict_split", None)
    fingerprint = {"model_sha1": model_fingerprint(model), "predict_split": split,
                   "input_size": dm_hparams.get("eval_size"), "data_sha1": split_fingerprint(datamodule, split)}
    writer = PseudoBoxWriter(
        out_path, source=source, threshold=threshold, categories=categories, shard_dir=shard_dir,
        chunk_size=chunk_size, multi_contour=multi_contour, fingerprint=fingerprint, overwrite=overwrite,
        keep_shards=keep_shards,
    )
    if writer.finished():
        return out_path
    writer.check_before_run()  # a finished file or shards of another run: refused before any work
    kw: dict[str, Any] = {"logger": False, "enable_checkpointing": False, **dict(trainer_kwargs or {})}
    kw["use_distributed_sampler"] = False  # each rank's loader already holds its own chunks
    kw["callbacks"] = [writer, *kw.get("callbacks", []), *callbacks]
    trainer = pl.Trainer(**kw)
    with warnings.catch_warnings():  # a resumed run may leave a rank (or all) with nothing to predict
        warnings.filterwarnings("ignore", message=".*Total length of `DataLoader` across ranks is zero.*")
        warnings.filterwarnings("ignore", message=".*but local rank has zero length.*")
        trainer.predict(model, datamodule=_PendingChunksData(datamodule, writer), return_predictions=False)
    if trainer.interrupted:
        raise RuntimeError(f"pseudo-box prediction was interrupted; finished chunks are kept in {writer.shard_dir}. "
                           "Run the same command again to resume.")
    trainer.strategy.barrier("pseudo_boxes_merge")
    if trainer.is_global_zero:
        writer.merge()
    trainer.strategy.barrier("pseudo_boxes_merged")
    return out_path
