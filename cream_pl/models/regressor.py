"""CREAM_reg stage 2: a class-agnostic box regressor trained on pseudo boxes.

``BoxRegressor`` = a feature source + a box head from :mod:`cream_pl.models.box_heads`, predicting
the normalised box ``(x, y, w, h)`` (``BoxFormat.XYWH_REL``). Two feature sources:

- ``features="finetune"`` (PSOL, the paper's CREAM_reg): a separate backbone from the registry,
  fine-tuned with the head on random box-safe crops; trained with ``loss_weight x MSE`` (PSOL: 50).
- ``features="classifier"``: the classifier's own backbone, frozen; only the head trains. One
  forward pass of the classifier gives the class *and* the features the head boxes, so at test
  time class and box come from one pass. The training batches may carry the frozen features
  (``"features"``, from :func:`cream_pl.models.feature_cache.cache_features`) or the images (the
  backbone then runs online on the same samples); a ``"flip"`` flag mirrors features and target.

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
    >>> BoxRegressor(features="classifier", feature_channels=8, head="objectness").head(torch.rand(1, 8, 7, 7)).shape
    torch.Size([1, 4])
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

from cream_pl.core.boxes import BoxFormat, box_iou_inclusive, convert_boxes, hflip_boxes_rel
from cream_pl.core.errors import UserValueError
from cream_pl.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from cream_pl.models.backbones import create_backbone
from cream_pl.models.box_heads import create_box_head

__all__ = ["BoxRegressor", "FEATURE_SOURCES", "FROZEN_BACKBONE_KEY", "LOSSES", "predicted_boxes_inclusive", "localization_hits",
           "relative_box_iou", "box_loss"]

_STAGES = ("val", "test")
_METRICS = ("gt_known", "top1_loc", "top5_loc", "cls_acc", "mean_iou")
FEATURE_SOURCES = ("finetune", "classifier")
"""Where the head's features come from: a separate fine-tuned backbone (PSOL) or the frozen classifier's."""
LOSSES = ("mse", "l1_iou")
"""``mse``: PSOL's ``MSE`` on ``(x, y, w, h)``; ``l1_iou``: ``L1 + (1 - IoU)`` (scale-free, what a box is scored by)."""
FROZEN_BACKBONE_KEY = "frozen_classifier_backbone_sha1"
"""A frozen-feature regressor's checkpoint key: the SHA-1 of the classifier backbone's weights its head was trained on
(a classifier of the same backbone and other weights is refused, not boxed with)."""


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


def box_loss(pred: Tensor, target: Tensor, loss: str) -> Tensor:
    """The regression loss of a batch of normalised ``(x, y, w, h)`` boxes (:data:`LOSSES`).

    Example:
        >>> t = torch.tensor([[0.1, 0.1, 0.5, 0.5]])
        >>> float(box_loss(t, t, "l1_iou")), float(box_loss(t, t, "mse"))
        (0.0, 0.0)
    """
    if loss == "mse":
        return F.mse_loss(pred, target)
    if loss == "l1_iou":
        return F.l1_loss(pred, target) + (1.0 - relative_box_iou(pred, target)).mean()
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")


class BoxRegressor(pl.LightningModule):
    """A feature source + a box head regressing one normalised box per image.

    Args:
        backbone: registry name (``cream_pl.models.backbones``), ``features="finetune"`` only.
        pretrained: ImageNet weights for the backbone (``True``, ``False`` or a weights file).
        backbone_kwargs: extra ``create_backbone`` arguments.
        hidden_dim: width of the ``psol`` head's hidden layer (PSOL: 512).
        head: box head name (:func:`cream_pl.models.box_heads.list_box_heads`).
        head_kwargs: extra arguments of the head.
        features: :data:`FEATURE_SOURCES`: ``"finetune"`` or ``"classifier"`` (frozen; needs a
            classifier, from ``classifier_ckpt`` or :meth:`set_classifier`).
        feature_channels: channels of the classifier's feature map (``features="classifier"``).
        loss: :data:`LOSSES`.
        loss_weight: factor on the loss (PSOL: 50 x MSE).
        eval_size: side of the evaluation grid of batches that carry cached features, not images.
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
        head: str = "psol",
        head_kwargs: dict[str, Any] | None = None,
        features: Literal["finetune", "classifier"] = "finetune",
        feature_channels: int | None = None,
        loss: Literal["mse", "l1_iou"] = "mse",
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
        eval_size: int = 224,
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
        if features not in FEATURE_SOURCES:
            raise UserValueError(f"features must be one of {FEATURE_SOURCES}, got {features!r}")
        if loss not in LOSSES:
            raise UserValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if features == "classifier" and (not isinstance(feature_channels, int) or feature_channels < 1):
            raise UserValueError("features='classifier' needs feature_channels (the classifier backbone's channels)")
        self.save_hyperparameters()
        head_kw = dict(head_kwargs or {})
        if head == "psol":
            head_kw.setdefault("hidden_dim", hidden_dim)
        self.backbone = None
        if features == "classifier":
            self.head = create_box_head(head, int(feature_channels), **head_kw)  # type: ignore[arg-type]
        else:
            self._init_backbone(backbone, pretrained, backbone_kwargs, freeze_backbone, channels_last, bn_momentum,
                                data_mean, data_std)
            self.head = create_box_head(head, self.backbone.num_features, **head_kw)
        self.metrics = nn.ModuleDict({f"{s}_{m}": MeanMetric() for s in _STAGES for m in _METRICS})
        self._classifier: nn.Module | None = None
        self._classifier_sha1: str | None = None  # its backbone's weights, once asked for
        self._trained_on: str | None = None  # a loaded frozen-feature checkpoint's FROZEN_BACKBONE_KEY
        #: per-image outcomes of the last test epoch (``index``, ``iou``, ``gt_known``, ``top1``, ``top1_loc``),
        #: for paired intervals against another method on the same images (gathered from every DDP rank)
        self.per_image: dict[str, dict[str, Any]] = {}
        self._per_image_parts: list[dict[str, Any]] = []

    def _init_backbone(self, backbone: str, pretrained: bool | str, backbone_kwargs: dict[str, Any] | None,
                       freeze_backbone: str | None, channels_last: bool, bn_momentum: float | None,
                       data_mean: Sequence[float], data_std: Sequence[float]) -> None:
        self.backbone = create_backbone(backbone, pretrained=pretrained, **(backbone_kwargs or {}))
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
        self._classifier_sha1 = None

    def _frozen_backbone_sha1(self) -> str | None:
        """SHA-1 of the attached classifier's backbone weights: what a frozen-feature head was trained on."""
        backbone = getattr(self._classifier, "backbone", None)
        if backbone is None:
            return None
        if self._classifier_sha1 is None:
            from cream_pl.models.checkpoints import model_fingerprint

            self._classifier_sha1 = model_fingerprint(backbone)
        return self._classifier_sha1

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.frozen_features and self._classifier is not None:
            checkpoint[FROZEN_BACKBONE_KEY] = self._frozen_backbone_sha1()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._trained_on = checkpoint.get(FROZEN_BACKBONE_KEY)

    @property
    def classifier(self) -> nn.Module | None:
        return self._classifier

    @property
    def frozen_features(self) -> bool:
        """Whether the head reads the frozen classifier's features (``features="classifier"``)."""
        return self.hparams.features == "classifier"

    def ensure_classifier(self) -> None:
        """Load ``classifier_ckpt`` when no classifier is attached (a frozen-feature regressor needs one)."""
        ckpt = self.hparams.classifier_ckpt
        if self._classifier is None and ckpt is not None:
            from cream_pl.models.checkpoints import load_classifier

            self.set_classifier(load_classifier(ckpt))  # CAM/CREAM, CI-CAM or KD-CI-CAM
        if self.frozen_features:
            if self._classifier is None:
                raise UserValueError("this regressor reads the classifier's frozen features: give it classifier_ckpt "
                                     "(or set_classifier) — its checkpoint names none")
            channels = getattr(getattr(self._classifier, "backbone", None), "num_features", None)
            if channels != self.hparams.feature_channels:
                raise UserValueError(f"the classifier's backbone has {channels} feature channels but this regressor's "
                                     f"head was built for {self.hparams.feature_channels}: not the classifier it was "
                                     "trained on")
            if self._trained_on is not None and self._trained_on != self._frozen_backbone_sha1():  # before: silently
                named = self.hparams.classifier_ckpt
                raise UserValueError("the classifier's backbone weights are not those this regressor's head was "
                                     "trained on" + (f" (its checkpoint names {named})" if named else "") +
                                     ": not the classifier it was trained on")

    def setup(self, stage: str) -> None:
        self.ensure_classifier()

    def features_and_logits(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(features (B, K, h, w), classifier logits or None)`` of a batch: one classifier pass for frozen features."""
        if self.frozen_features:
            assert self._classifier is not None, "ensure_classifier() first"
            self._classifier.eval()
            with torch.no_grad():
                feats, logits = self._classifier.forward_features(images)
            return feats.float(), logits
        logits = None
        if self._classifier is not None and not self.training:  # the classifier gets the batch as it was trained
            with torch.no_grad():
                logits = self._classifier(images)
        return self._backbone_features(images), logits

    def _backbone_features(self, images: Tensor) -> Tensor:
        """The fine-tuned backbone's features (``features="finetune"``), its input re-normalised as it expects."""
        if self._renormalise:
            images = images * self._in_scale + self._in_shift
        return self.backbone(images)

    def forward(self, images: Tensor) -> Tensor:
        """Normalised ``(x, y, w, h)`` boxes ``(B, 4)`` for a batch normalised as ``data_mean`` / ``data_std``."""
        if self.frozen_features:
            return self.head(self.features_and_logits(images)[0])
        return self.head(self._backbone_features(images))

    # ------------------------------------------------------------------ training
    def _batch_features(self, batch: dict[str, Any]) -> Tensor:
        if "features" in batch:
            return batch["features"].float()
        if self.frozen_features:
            return self.features_and_logits(batch["image"])[0]
        return self._backbone_features(batch["image"])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        feats = self._batch_features(batch)
        target = batch["target"].to(feats.dtype)
        if "flip" in batch:  # a horizontal flip in feature space: the map and its box mirrored together
            flip = batch["flip"].to(feats.device)
            feats = torch.where(flip.view(-1, 1, 1, 1), feats.flip(-1), feats)
            target = hflip_boxes_rel(target, flip)
        pred = self.head(feats)
        loss = self.hparams.loss_weight * box_loss(pred, target, self.hparams.loss)
        self.log("train/reg/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(pred))
        # how well the regressor fits its own pseudo boxes (on the augmented training crops)
        self.log("train/reg/pseudo_iou", relative_box_iou(pred.detach(), target).mean(), on_step=False,
                 on_epoch=True, batch_size=len(pred), sync_dist=True)  # every rank's mean: one plateau decision
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        base, new = self.backbone.parameter_groups() if self.backbone is not None else ([], [])  # frozen left out
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

    def on_fit_start(self) -> None:
        self._move_classifier()

    def on_validation_start(self) -> None:
        self._move_classifier()

    def on_test_start(self) -> None:
        self._move_classifier()

    def _eval_step(self, batch: dict[str, Any], stage: str) -> None:
        labels = batch["label"]
        boxes = batch.get("boxes")
        if boxes is None:
            raise ValueError(f"the {stage} batches have no 'boxes'; the regressor is evaluated on a split with boxes")
        if "features" in batch:  # cached: the classifier's features and logits of these images
            feats, logits = batch["features"].float(), batch.get("logits")
            grid = (self.hparams.eval_size, self.hparams.eval_size)
        else:
            images = batch["image"]
            feats, logits = self.features_and_logits(images)
            grid = (images.shape[-1], images.shape[-2])
        pred = predicted_boxes_inclusive(self.head(feats), grid)
        ious, hit = localization_hits(pred, list(boxes), self.hparams.iou_threshold)
        ious, hit = ious.to(self.device), hit.to(self.device)
        m = self.metrics
        record: dict[str, Any] = {"iou": ious.detach().cpu().numpy(), "gt_known": hit.detach().cpu().numpy()}
        if "index" in batch:
            record["index"] = batch["index"].detach().cpu().numpy()
        m[f"{stage}_gt_known"].update(100.0 * hit.double())
        m[f"{stage}_mean_iou"].update(ious)
        if logits is not None:
            logits = logits.to(self.device)
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
            if name in ("cls_acc", "top1_loc", "top5_loc") and logits is None:
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
        feats, logits = self.features_and_logits(images)  # frozen features: class and box from one pass
        pred = self.head(feats)
        out: dict[str, Any] = {"index": batch.get("index"), "image_id": batch.get("image_id"), "box_rel": pred,
                               "box": predicted_boxes_inclusive(pred, (images.shape[-1], images.shape[-2]))}
        if logits is not None:
            out["logits"] = logits
        return out
