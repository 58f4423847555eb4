"""CREAM_reg stage 2: a class-agnostic box regressor trained on pseudo boxes (PSOL style).

``BoxRegressor`` = a backbone from the registry + global average pooling + a small head
``Linear(K, 512) -> ReLU -> Linear(512, 4) -> Sigmoid`` predicting the normalised box
``(x, y, w, h)`` (``BoxFormat.XYWH_REL``), trained with ``loss_weight x MSE`` (PSOL: 50).

Evaluation combines the regressor's box with a classifier's class (an optional frozen
``WSOLClassifier``): per image, IoU = best inclusive "+1" IoU of the predicted box against the
true boxes in the eval grid; GT-known Loc = IoU >= 0.5; Top-1 Loc = also top-1 class correct;
Top-5 Loc = GT class in the top 5. Logged as ``{val,test}/reg/{gt_known,top1_loc,top5_loc,
cls_acc,mean_iou}`` in percent (``mean_iou`` in [0, 1]).

Example:
    >>> import torch
    >>> model = BoxRegressor(backbone="efficientnet_lite0", pretrained=False)
    >>> model(torch.zeros(2, 3, 64, 64)).shape
    torch.Size([2, 4])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from cream_pl.core.boxes import BoxFormat, box_iou_inclusive, convert_boxes
from cream_pl.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from cream_pl.models.backbones import create_backbone

__all__ = ["BoxRegressor", "predicted_boxes_inclusive", "localization_hits", "relative_box_iou"]

_STAGES = ("val", "test")
_METRICS = ("gt_known", "top1_loc", "top5_loc", "cls_acc", "mean_iou")


def predicted_boxes_inclusive(pred: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Normalised ``(x, y, w, h)`` predictions -> ``XYXY_INCLUSIVE`` float boxes in an image of ``(W, H)``.

    The continuous box ``[x, x + w)`` (clipped to the image) covers the inclusive pixels
    ``x .. x + w - 1``, so the "+1" IoU against inclusive GT boxes is the continuous IoU.

    Example:
        >>> predicted_boxes_inclusive(torch.tensor([[0.25, 0.0, 0.5, 1.5]]), (224, 224))
        tensor([[ 56.,   0., 167., 223.]])
    """
    xyxy = convert_boxes(pred.detach().double(), BoxFormat.XYWH_REL, BoxFormat.XYXY, image_size)
    w, h = image_size
    xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, w)
    xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, h)
    xyxy[:, 2] = torch.maximum(xyxy[:, 2], xyxy[:, 0])
    xyxy[:, 3] = torch.maximum(xyxy[:, 3], xyxy[:, 1])
    return convert_boxes(xyxy, BoxFormat.XYXY, BoxFormat.XYXY_INCLUSIVE).to(pred.dtype)


def localization_hits(pred_inclusive: Tensor, gt_boxes: list[Tensor], iou_threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """Per image: best IoU over its GT boxes and whether it reaches ``iou_threshold`` (``>=``, as the benchmark).

    Example:
        >>> ious, hit = localization_hits(torch.tensor([[0., 0., 9., 9.]]), [torch.tensor([[0, 0, 9, 4]])])
        >>> ious.tolist(), hit.tolist()
        ([0.5], [True])
    """
    if len(gt_boxes) != len(pred_inclusive):
        raise ValueError(f"{len(pred_inclusive)} predicted boxes but {len(gt_boxes)} GT box lists")
    ious = torch.stack([
        box_iou_inclusive(pred_inclusive[i : i + 1].double().cpu(), g.reshape(-1, 4).double().cpu()).max()
        for i, g in enumerate(gt_boxes)
    ]) if len(gt_boxes) else torch.zeros(0, dtype=torch.float64)
    return ious, ious >= iou_threshold


def relative_box_iou(pred: Tensor, target: Tensor) -> Tensor:
    """Continuous IoU of two batches of normalised ``(x, y, w, h)`` boxes, ``(B,)`` (the training fit to the pseudo boxes).

    Example:
        >>> relative_box_iou(torch.tensor([[0.0, 0.0, 0.5, 1.0]]), torch.tensor([[0.25, 0.0, 0.5, 1.0]]))
        tensor([0.3333])
    """
    a = convert_boxes(pred.float(), BoxFormat.XYWH_REL, BoxFormat.XYXY, (1, 1))
    b = convert_boxes(target.float(), BoxFormat.XYWH_REL, BoxFormat.XYXY, (1, 1))
    iw = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    ih = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = iw * ih
    union = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0) + \
        (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0) - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


class BoxRegressor(pl.LightningModule):
    """Backbone + GAP + MLP head regressing one normalised box per image.

    Args:
        backbone: registry name (``cream_pl.models.backbones``).
        pretrained: ImageNet weights for the backbone (``True``, ``False`` or a weights file).
        backbone_kwargs: extra ``create_backbone`` arguments.
        hidden_dim: width of the head's hidden layer (PSOL: 512).
        loss_weight: factor on the MSE loss (PSOL: 50).
        optimizer: ``"sgd"`` (momentum, PSOL) or ``"adamw"``.
        lr: learning rate of the backbone; the head uses ``lr * head_lr_multiplier``.
        head_lr_multiplier: learning-rate factor of the new head (and the backbone's new layers).
        momentum: SGD momentum.
        weight_decay: weight decay.
        lr_step_epochs: StepLR period in epochs (0 = constant lr).
        lr_gamma: StepLR factor.
        classifier_ckpt: a ``WSOLClassifier`` checkpoint for the class in Top-1 / Top-5 Loc,
            loaded frozen in ``setup``. A module can be attached with :meth:`set_classifier`
            instead. Without a classifier only GT-known Loc is reported. The classifier gets the
            batches exactly as the data module made them (normalised with ``data_mean`` /
            ``data_std``, as it was trained).
        iou_threshold: IoU for a correct box (0.5).
        data_mean: per-channel mean (0-1 scale) the input batches are normalised with.
        data_std: per-channel std the input batches are normalised with. When these differ from
            the backbone's ``input_mean`` / ``input_std``, the regressor re-normalises its input.
        freeze_backbone: regular expression; backbone parameters whose names match it
            (``re.search``) are frozen, and batch-norm layers whose parameters are all frozen
            keep their running statistics. ``None`` trains everything.
        channels_last: run the backbone in the channels-last memory format
            (:meth:`~cream_pl.models.backbones.Backbone.use_channels_last`).
        bn_momentum: running-statistics momentum of the backbone's batch-norm layers (PyTorch
            convention); ``None`` keeps the backbone's own (EfficientNet-Lite0: 0.01). Short
            fine-tuning wants 0.1 (:meth:`~cream_pl.models.backbones.Backbone.set_batchnorm_momentum`).
    """

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        pretrained: bool | str = True,
        backbone_kwargs: dict[str, Any] | None = None,
        hidden_dim: int = 512,
        loss_weight: float = 50.0,
        optimizer: Literal["sgd", "adamw"] = "sgd",
        lr: float = 1e-3,
        head_lr_multiplier: float = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        lr_step_epochs: int = 0,
        lr_gamma: float = 0.1,
        classifier_ckpt: str | None = None,
        iou_threshold: float = 0.5,
        data_mean: Sequence[float] = IMAGENET_MEAN,
        data_std: Sequence[float] = IMAGENET_STD,
        freeze_backbone: str | None = None,
        channels_last: bool = False,
        bn_momentum: float | None = None,
    ) -> None:
        super().__init__()
        if optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {optimizer!r}")
        if hidden_dim < 1:
            raise ValueError(f"hidden_dim must be >= 1, got {hidden_dim}")
        if loss_weight <= 0 or lr <= 0 or head_lr_multiplier <= 0:
            raise ValueError("loss_weight, lr and head_lr_multiplier must be positive")
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        if len(data_mean) != 3 or len(data_std) != 3 or min(data_std) <= 0:
            raise ValueError(f"data_mean / data_std need 3 values (std > 0), got {data_mean}, {data_std}")
        self.save_hyperparameters()
        self.backbone = create_backbone(backbone, pretrained=pretrained, **(backbone_kwargs or {}))
        self.head = nn.Sequential(
            nn.Linear(self.backbone.num_features, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, 4),
            nn.Sigmoid(),
        )
        if freeze_backbone:
            self.backbone.freeze(freeze_backbone)
        self.backbone.use_channels_last(channels_last)
        if bn_momentum is not None:
            self.backbone.set_batchnorm_momentum(bn_momentum)
        # Re-normalise the batches (data_mean / data_std) to what the backbone's weights expect.
        mean_in, std_in = torch.tensor(data_mean, dtype=torch.float32), torch.tensor(data_std, dtype=torch.float32)
        mean_bb = torch.tensor(getattr(self.backbone, "input_mean", IMAGENET_MEAN))
        std_bb = torch.tensor(getattr(self.backbone, "input_std", IMAGENET_STD))
        self.register_buffer("_in_scale", (std_in / std_bb).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_in_shift", ((mean_in - mean_bb) / std_bb).view(1, 3, 1, 1), persistent=False)
        self._renormalise = not (torch.allclose(mean_in, mean_bb) and torch.allclose(std_in, std_bb))
        self.metrics = nn.ModuleDict({f"{s}_{m}": MeanMetric() for s in _STAGES for m in _METRICS})
        self._classifier: nn.Module | None = None
        #: per-image outcomes of the last test epoch (``index``, ``iou``, ``gt_known``, ``top1``, ``top1_loc``),
        #: for paired intervals against another method on the same images (gathered from every DDP rank)
        self.per_image: dict[str, dict[str, Any]] = {}
        self._per_image_parts: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ model
    def set_classifier(self, classifier: nn.Module | None) -> None:
        """Attach a frozen classifier (``forward(images) -> logits``) for Top-1 / Top-5 Loc.

        It is not a sub-module: its weights stay out of the regressor's checkpoints.
        """
        if classifier is not None:
            classifier.eval()
            for p in classifier.parameters():
                p.requires_grad_(False)
        object.__setattr__(self, "_classifier", classifier)  # bypass nn.Module registration

    @property
    def classifier(self) -> nn.Module | None:
        return self._classifier

    def setup(self, stage: str) -> None:
        ckpt = self.hparams.classifier_ckpt
        if self._classifier is None and ckpt is not None:
            from cream_pl.models.checkpoints import load_classifier

            self.set_classifier(load_classifier(ckpt))  # CAM/CREAM, CI-CAM or KD-CI-CAM

    def forward(self, images: Tensor) -> Tensor:
        """Normalised ``(x, y, w, h)`` boxes ``(B, 4)`` for ImageNet-normalised images."""
        if self._renormalise:
            images = images * self._in_scale + self._in_shift
        feats = self.backbone(images)
        return self.head(feats.mean(dim=(2, 3)))

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        pred = self(batch["image"])
        target = batch["target"].to(pred.dtype)
        loss = self.hparams.loss_weight * F.mse_loss(pred, target)
        self.log("train/reg/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(pred))
        # how well the regressor fits its own pseudo boxes (on the augmented training crops)
        self.log("train/reg/pseudo_iou", relative_box_iou(pred.detach(), target).mean(), on_step=False,
                 on_epoch=True, batch_size=len(pred), sync_dist=True)  # every rank's mean: one plateau decision
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        base, new = self.backbone.parameter_groups()  # frozen parameters are left out
        groups = [{"params": base, "lr": hp.lr},
                  {"params": new + list(self.head.parameters()), "lr": hp.lr * hp.head_lr_multiplier}]
        groups = [g for g in groups if g["params"]]
        if hp.optimizer == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum,
                                                         weight_decay=hp.weight_decay)
        else:
            opt = torch.optim.AdamW(groups, lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.lr_step_epochs <= 0:
            return {"optimizer": opt}
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=hp.lr_step_epochs, gamma=hp.lr_gamma)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    # ------------------------------------------------------------------ evaluation
    def _move_classifier(self) -> None:
        if self._classifier is not None:
            self._classifier.to(self.device)

    def on_validation_start(self) -> None:
        self._move_classifier()

    def on_test_start(self) -> None:
        self._move_classifier()

    def _eval_step(self, batch: dict[str, Any], stage: str) -> None:
        images, labels = batch["image"], batch["label"]
        boxes = batch.get("boxes")
        if boxes is None:
            raise ValueError(f"the {stage} batches have no 'boxes'; the regressor is evaluated on a split with boxes")
        pred = predicted_boxes_inclusive(self(images), (images.shape[-1], images.shape[-2]))
        ious, hit = localization_hits(pred, list(boxes), self.hparams.iou_threshold)
        ious, hit = ious.to(self.device), hit.to(self.device)
        m = self.metrics
        record: dict[str, Any] = {"iou": ious.detach().cpu().numpy(), "gt_known": hit.detach().cpu().numpy()}
        if "index" in batch:
            record["index"] = batch["index"].detach().cpu().numpy()
        m[f"{stage}_gt_known"].update(100.0 * hit.double())
        m[f"{stage}_mean_iou"].update(ious)
        if self._classifier is not None:
            logits = self._classifier(images)
            top1 = logits.argmax(1) == labels
            top5 = (logits.topk(min(5, logits.shape[1]), dim=1).indices == labels[:, None]).any(1)
            m[f"{stage}_cls_acc"].update(100.0 * top1.double())
            m[f"{stage}_top1_loc"].update(100.0 * (top1 & hit).double())
            m[f"{stage}_top5_loc"].update(100.0 * (top5 & hit).double())
            record["top1"] = top1.detach().cpu().numpy()
            record["top1_loc"] = (top1 & hit).detach().cpu().numpy()
        if stage == "test" and not self.trainer.sanity_checking:
            self._per_image_parts.append(record)
        for name in _METRICS:
            if name in ("cls_acc", "top1_loc", "top5_loc") and self._classifier is None:
                continue
            self.log(f"{stage}/reg/{name}", m[f"{stage}_{name}"], on_step=False, on_epoch=True,
                     prog_bar=name == "gt_known")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_start(self) -> None:
        self._per_image_parts = []

    def on_test_epoch_end(self) -> None:
        parts, self._per_image_parts = self._per_image_parts, []
        if self.trainer.world_size > 1:  # every rank holds its own images: gather them all (by index, once each)
            import torch.distributed as dist

            gathered: list[Any] = [None] * self.trainer.world_size
            dist.all_gather_object(gathered, parts)
            parts = [p for rank_parts in gathered for p in rank_parts]
        if parts:
            self.per_image["test"] = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """Predicted boxes: normalised ``(x, y, w, h)`` and ``XYXY_INCLUSIVE`` in the batch's image grid."""
        images = batch["image"]
        pred = self(images)
        out: dict[str, Any] = {"index": batch.get("index"), "image_id": batch.get("image_id"), "box_rel": pred,
                               "box": predicted_boxes_inclusive(pred, (images.shape[-1], images.shape[-2]))}
        if self._classifier is not None:
            out["logits"] = self._classifier(images)
        return out
