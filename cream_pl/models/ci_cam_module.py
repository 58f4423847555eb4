"""``CICAMClassifier``: CI-CAM (Shao et al., ACM MM 2021) as a :class:`WSOLClassifier`.

The backbone features ``F`` go through the up branch (``z_up = Linear(GAP(F))``), the causal
intervention ``F' = F ⊙ (1 + conv1x1(P[ĉ]))`` with the per-class causal context pool ``P``
(``C x h x w``, a persistent buffer) at the up-branch prediction ``ĉ``, and the down branch
(``z_down = Linear(GAP(F'))``, same linear layer). The pure math lives in
:mod:`cream_pl.models.ci_cam`; this module wires it into Lightning:

* ``training_step``: loss ``CE(z_up) + CE(z_down)``; then, without gradient, the pool update
  ``P ← N(P + η N(S))`` from the ground-truth-class up-branch CAMs of the correctly classified
  images (``S`` is all-reduced over DDP ranks, so every rank applies the same update); then the
  CREAM context embeddings are updated from the **intervened** features ``F'``.
* ``forward_features`` returns ``(F', z_down)``, so every evaluated map (``cam``, ``cream``,
  the metrics, ``predict``) is computed on the intervened branch: the ``cam`` method of this
  module is "CI-CAM" and its ``cream`` method is "CI-CAM + CREAM". The protocol is the project's
  (ground-truth-class map for MaxBoxAccV2 / GT-known, min-max normalised).
* ``cam_source="ccam_quadratic" | "ccam_sum1"`` adds a method ``"ccam"``: the official
  combinational CAM (all classes ranked by ``z_down``, class-agnostic), as a reproduction option.
* ``non_local=True`` puts one :class:`~cream_pl.models.ci_cam.NonLocalBlock` (identity at init)
  after the backbone's last feature map. **This placement is ours**: the official VGG16 has
  non-local blocks after pool2/pool3/pool4 and conv5_3; only the last one is reproduced, because
  the registry backbones expose only their final feature map.
* The intervention parameters (and the non-local block) train in the "new layers" group
  (``lr x head_lr_multiplier``), like the classifier.

Example:
    >>> model = CICAMClassifier(num_classes=3, backbone="efficientnet_lite0", pretrained=False,
    ...                         train_crop_size=64)
    >>> model.method_names, tuple(model.context_pool.shape)
    (['cam', 'cream'], (3, 4, 4))
    >>> feats, logits = model.forward_features(torch.zeros(2, 3, 64, 64))
    >>> tuple(feats.shape), tuple(logits.shape)
    ((2, 1280, 4, 4), (2, 3))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from cream_pl.core.errors import UserValueError
from cream_pl.models.cam import all_class_activation_maps, normalize_maps
from cream_pl.models.ci_cam import CICAMHead, CICAMOutput, NonLocalBlock, ci_cam_loss, combinational_cam
from cream_pl.models.classifier import WSOLClassifier
from cream_pl.models.precision import float32_math

__all__ = ["CAMSource", "CICAMClassifier"]

CAMSource = Literal["down_top1", "ccam_quadratic", "ccam_sum1"]
_CAM_SOURCES: dict[str, str | None] = {"down_top1": None, "ccam_quadratic": "quadratic", "ccam_sum1": "sum_1"}


class CICAMClassifier(WSOLClassifier):
    """CI-CAM classifier: backbone (+ optional non-local block) → up branch → intervention → down branch.

    All :class:`WSOLClassifier` arguments are accepted (backbone, optimiser, CREAM, metrics, ...);
    the CI-CAM ones are:

    Args:
        num_classes: number of classes ``C``.
        pool_rate: update rate ``η`` of the causal context pool (official default 0.01).
        pool_size: ``(h, w)`` of the pool = the feature map size at the training crop; ``None``
            measures it with one forward of a ``train_crop_size`` zero image. Feature maps of another
            size (e.g. 224 evaluation after a smaller training crop) use the bilinearly resized pool.
        train_crop_size: side of the training crops, used to measure ``pool_size``.
        cam_source: ``"down_top1"`` (default) evaluates the standard CAM of the intervened branch;
            ``"ccam_quadratic"`` (official CUB) or ``"ccam_sum1"`` (official ILSVRC, ``ccam_n``
            lowest classes) additionally evaluates the official combinational CAM as method ``"ccam"``.
        ccam_n: number of lowest-ranked classes of ``ccam_sum1`` (official 20; at most ``C``).
        non_local: add a non-local block after the backbone features (our placement, see module doc).
        **kwargs: :class:`WSOLClassifier` arguments.
    """

    def __init__(
        self,
        num_classes: int,
        pool_rate: float = 0.01,
        pool_size: int | tuple[int, int] | None = None,
        train_crop_size: int = 224,
        cam_source: CAMSource = "down_top1",
        ccam_n: int = 20,
        non_local: bool = False,
        **kwargs: Any,
    ) -> None:
        if not 0.0 <= pool_rate < float("inf"):
            raise ValueError(f"pool_rate must be a finite value >= 0, got {pool_rate}")
        if cam_source not in _CAM_SOURCES:
            raise ValueError(f"cam_source must be one of {sorted(_CAM_SOURCES)}, got {cam_source!r}")
        if cam_source == "ccam_sum1" and not 1 <= ccam_n <= num_classes:
            raise ValueError(f"ccam_n must be in [1, num_classes={num_classes}] for cam_source='ccam_sum1', got {ccam_n}")
        if train_crop_size < 8:
            raise ValueError(f"train_crop_size must be >= 8, got {train_crop_size}")
        super().__init__(num_classes=num_classes, **kwargs)
        k = self.backbone.num_features
        self.non_local = NonLocalBlock(k) if non_local else None
        if pool_size is None:
            pool_size = self._measure_feature_size(train_crop_size)
        self.ci_head = CICAMHead(num_classes, k, pool_size)

    # ------------------------------------------------------------------ model
    @property
    def context_pool(self) -> Tensor:
        """The causal context pool ``P`` (``C x h x w`` buffer, saved in checkpoints)."""
        return self.ci_head.context_pool

    def _pool_mismatch(self, size: tuple[int, ...], where: str = "") -> str:
        return (f"{where}training features are {size} but the causal context pool is "
                f"{tuple(self.context_pool.shape[1:])}: set train_crop_size (now {self.hparams.train_crop_size}) to the "
                "training crop size, or pool_size to the training feature map size")

    def preflight(self, stage: str, trainer: Any, datamodule: Any) -> None:
        super().preflight(stage, trainer, datamodule)
        if stage == "fit":
            self._check_pool_size(datamodule)

    def _check_pool_size(self, datamodule: Any) -> None:
        """Refuse, before any training, a data module whose crops give feature maps of another size than the
        pool (before: the first training step failed with a traceback)."""
        crop = dict(getattr(datamodule, "hparams", None) or {}).get("crop_size")
        if isinstance(crop, int) and not isinstance(crop, bool) and crop > 0:
            size = self._measure_feature_size(crop)
            if size != tuple(self.context_pool.shape[1:]):
                raise UserValueError(self._pool_mismatch(size, f"data crop_size {crop}: "))

    @torch.no_grad()
    def _measure_feature_size(self, crop: int) -> tuple[int, int]:
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            device = next(self.backbone.parameters()).device
            h, w = self.backbone.forward_features(torch.zeros(1, 3, crop, crop, device=device)).shape[2:]
        finally:
            self.backbone.train(was_training)
        return int(h), int(w)

    def _method_names(self) -> list[str]:
        names = super()._method_names()
        if _CAM_SOURCES[self.hparams.cam_source] is not None:
            names.append("ccam")
        return names

    def backbone_features(self, images: Tensor) -> Tensor:
        """``F``: backbone features, through the non-local block when enabled."""
        feats = self.backbone(images)
        return feats if self.non_local is None else self.non_local(feats)

    def ci_forward(self, images: Tensor) -> tuple[Tensor, CICAMOutput]:
        """``(F, CICAMOutput(z_up, z_down, F'))`` with the intervention at ``ĉ = argmax z_up``."""
        feats = self.backbone_features(images)
        return feats, self.ci_head(feats, self.classifier)

    def forward_features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(F', z_down)``: the intervened (down-branch) features and logits, used by every evaluation."""
        _, out = self.ci_forward(images)
        return out.features_down, out.logits_down

    def method_maps(
        self, feats: Tensor, class_ids: Tensor, names: Sequence[str] | None = None
    ) -> dict[str, Tensor]:
        """Parent's maps on ``F'`` (``cam`` = CI-CAM, ``cream`` = CI-CAM + CREAM), plus ``ccam`` if enabled."""
        maps = super().method_maps(feats, class_ids, names)
        fn = _CAM_SOURCES[self.hparams.cam_source]
        if fn is not None and (names is None or "ccam" in names):
            with float32_math(feats):  # float32 under any trainer precision
                feats = feats.float()
                weight = self.classifier.weight.float()
                cams = all_class_activation_maps(feats, weight)
                logits = feats.mean(dim=(2, 3)) @ weight.t()  # ranking only: the bias does not change it
                n = min(self.hparams.ccam_n, cams.shape[1])
                maps["ccam"] = normalize_maps(combinational_cam(cams, logits, fn, n=n))  # type: ignore[arg-type]
        return maps

    # --------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        images, labels = batch["image"], batch["label"]
        feats, out = self.ci_forward(images)
        loss = ci_cam_loss(out.logits_up, out.logits_down, labels)
        with torch.no_grad():
            loss_up = nn.functional.cross_entropy(out.logits_up, labels)
            loss_down = loss.detach() - loss_up
        self._update_pool(feats.detach(), labels, out.logits_up.detach())
        if self.context is not None and self.current_epoch >= self.hparams.cream_update_start_epoch:
            self._update_context(out.features_down.detach(), labels)
        n = labels.shape[0]
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n)
        self.log_dict({"train/loss_up": loss_up, "train/loss_down": loss_down},
                      on_step=False, on_epoch=True, batch_size=n)
        self._log_accuracy(out, labels)
        return loss

    def _log_accuracy(self, out: CICAMOutput, labels: Tensor) -> None:
        n = labels.shape[0]
        acc = (out.logits_down.argmax(1) == labels).float().mean()
        acc_up = (out.logits_up.argmax(1) == labels).float().mean()
        self.log("train/acc", acc, prog_bar=True, on_step=False, on_epoch=True, batch_size=n)
        self.log("train/acc_up", acc_up, on_step=False, on_epoch=True, batch_size=n)
        filled = (self.context_pool.flatten(1).abs().amax(dim=1) > 0).float().mean()
        self.log("train/pool_filled_classes", filled, on_step=False, on_epoch=True, batch_size=n)

    @torch.no_grad()
    def _update_pool(self, feats: Tensor, labels: Tensor, logits_up: Tensor) -> None:
        """``P ← N(P + η N(S))`` from this batch; ``S`` is summed over DDP ranks (a collective: every rank calls it)."""
        if tuple(feats.shape[2:]) != tuple(self.context_pool.shape[1:]):
            raise UserValueError(self._pool_mismatch(tuple(feats.shape[2:])))
        with float32_math(feats):  # the pool is a running average: float32 under any trainer precision
            sums = self.ci_head.pool_sums(feats.float(), self.classifier, labels, logits_up.float())
            self.ci_head.intervention.update(sums, rate=self.hparams.pool_rate, sync=True)

    # -------------------------------------------------------------- optimiser
    def new_parameters(self) -> list[nn.Parameter]:
        """The head plus what CI-CAM adds (intervention, non-local block): all at the new-layer lr."""
        params = list(self.ci_head.parameters())
        if self.non_local is not None:
            params += list(self.non_local.parameters())
        return super().new_parameters() + [p for p in params if p.requires_grad]
