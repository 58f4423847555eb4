"""Tiny datasets and a stand-in classifier for the CREAM_reg tests (pseudo boxes, box regressor).

Images are black with one white rectangle = the object, whose inclusive box is the ground truth.
The stand-in classifier follows ``WSOLClassifier.predict_step``'s contract; its score map is the
indicator of the GT box in the eval grid (``batch["boxes"]``), so the pseudo box is known exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from cream_pl.data.metadata import SampleRecord, write_class_names, write_split
from cream_pl.metrics.functional import prepare_scoremaps

CLASS_NAMES = ["red_circle", "blue_square"]


def write_tiny_dataset(
    root: Path,
    specs: dict[str, list[tuple[tuple[int, int], tuple[int, int, int, int], int]]],
) -> Path:
    """Write ``root/images``, ``root/metadata/<split>``, ``root/class_names.txt``.

    Args:
        specs: per split, a list of ``((width, height), inclusive box, label)``.
    """
    for split, items in specs.items():
        records = []
        for i, ((w, h), box, label) in enumerate(items):
            image_id = f"{split}/{label:03d}/img_{i:03d}.png"
            img = np.zeros((h, w, 3), np.uint8)
            x0, y0, x1, y1 = box
            img[y0 : y1 + 1, x0 : x1 + 1] = 255
            path = root / "images" / image_id
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), img)
            records.append(SampleRecord(image_id, label, (w, h), (box,)))
        write_split(root / "metadata" / split, records)
    write_class_names(root / "class_names.txt", CLASS_NAMES)
    return root


def default_specs(num_train: int = 10) -> dict[str, list[tuple[tuple[int, int], tuple[int, int, int, int], int]]]:
    """Images of a few sizes (224x224 first: no rescaling), boxes at varied places."""
    sizes = [(224, 224), (448, 112), (96, 64), (80, 120), (224, 224)]
    items = []
    for i in range(num_train):
        w, h = sizes[i % len(sizes)]
        x0, y0 = (3 * i) % (w // 3), (5 * i) % (h // 3)
        x1, y1 = x0 + w // 2 - 1 + i % 3, y0 + h // 2 - 1
        items.append(((w, h), (x0, y0, x1, y1), i % 2))
    return {"train": items, "val": items[:4], "test": items[:6]}


class StandInClassifier(pl.LightningModule):
    """Follows ``WSOLClassifier``'s ``predict_step`` contract; counts the images it predicts.

    ``scoremaps[...]`` = indicator of the first GT box in the eval grid (run through the real
    ``prepare_scoremaps``); ``"cam"`` is the same map shifted right by ``cam_shift`` pixels.
    """

    def __init__(self, num_classes: int = 2, cam_shift: int = 8, tau: float = float("nan")) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.scale = nn.Parameter(torch.ones(()))
        self.method_names = ["cam", "cream"]
        self.register_buffer("val_best_threshold", torch.tensor([tau, tau], dtype=torch.float64))
        self.predicted_images = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b = images.shape[0]
        return self.scale * images.mean(dim=(2, 3))[:, :1].expand(b, self.hparams.num_classes).clone()

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        images, labels = batch["image"], batch["label"]
        self.predicted_images += len(images)
        h, w = images.shape[-2:]
        maps = torch.zeros(len(images), h, w, dtype=torch.float64)
        for i, boxes in enumerate(batch["boxes"]):
            x0, y0, x1, y1 = boxes[0].tolist()
            maps[i, y0 : y1 + 1, x0 : x1 + 1] = 1.0
        cam = torch.roll(maps, shifts=self.hparams.cam_shift, dims=2)
        logits = torch.nn.functional.one_hot(labels, self.hparams.num_classes).float() * 3.0 + self(images) * 0
        return {
            "index": batch["index"],
            "image_id": batch["image_id"],
            "orig_size": batch["orig_size"],
            "label": labels,
            "logits": logits,
            "scoremaps": {"cam": prepare_scoremaps(cam), "cream": prepare_scoremaps(maps)},
        }

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        pass

    def on_validation_epoch_end(self) -> None:
        self.val_best_threshold.fill_(0.37)  # stands for the classifier's τ* search on val
