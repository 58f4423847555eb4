"""``KDCICAMStudent``: the KD-CI-CAM student (Shao et al., arXiv 2301.01060) as a CI-CAM LightningModule.

Two frozen CI-CAM teachers, each a :class:`CICAMClassifier` checkpoint trained by its own recipe,
teach a CI-CAM student of the same design (spec ``kd_ci_cam.md`` §3.2):

* every training sample gets a route ``r``: 0 = cross-entropy only, 1 = logit distillation from
  the **classification** teacher, 2 = CAM distillation from the **localisation** teacher;
* ``L = (1 - α) CE(z_down, y)`` over all samples ``+ α KD_cls`` over route 1
  ``+ α λ MSE(σ(CAM_s / T_loc), σ(CAM_t / T_loc))`` over route 2 (down-branch CAMs of all classes),
  as :func:`cream_pl.models.distillation.kd_student_loss` (no up-branch CE, as the official student);
* ``KD_cls`` is a proper KL by default (``kd_variant="standard"``: log-softmax input, ``T²``
  factor); ``kd_variant="official"`` reproduces the official code (probabilities as input, no
  ``T²``; see :func:`~cream_pl.models.distillation.kd_logit_loss`);
* the teachers run only on their subsets, under ``torch.no_grad()``, in eval mode; the student's own
  context pool and CREAM embeddings are updated as in :class:`CICAMClassifier`.

Teachers are **not** part of the student's ``state_dict`` (they sit in a plain dict, not as
submodules): a student checkpoint holds only the student, and evaluating or predicting with it
never needs the teacher files. They are loaded in ``setup("fit")`` (so resuming a fit reloads them
from the paths in the hyper-parameters) and moved to the student's device in ``on_fit_start``.

Routes are drawn per sample from a generator seeded by ``(kd_seed, global rank, epoch,
batch_idx)``: reproducible, resumable and different on every DDP rank. One augmentation serves all
routes (the official code draws the route in the dataset to give each route its own
random-resized-crop scale; this is the cheaper approximation of spec §7).

Example:
    >>> student = KDCICAMStudent(num_classes=3, backbone="efficientnet_lite0", pretrained=False,
    ...                          train_crop_size=64, kd_routing="none")
    >>> "teacher" in " ".join(student.state_dict())
    False
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cream_pl.core.errors import UserFileNotFoundError, UserValueError
from cream_pl.models.cam import all_class_activation_maps
from cream_pl.models.checkpoints import load_classifier
from cream_pl.models.ci_cam_module import CICAMClassifier
from cream_pl.models.distillation import (
    KDLogitVariant,
    RouteMode,
    kd_student_loss,
    route_indices,
    route_samples,
)

__all__ = ["KDCICAMStudent", "load_ci_cam_teacher"]

_VARIANTS = ("standard", "official")
_ROUTINGS = ("random", "cls", "loc", "none")


def load_ci_cam_teacher(path: str | Path, role: str = "teacher", num_classes: int | None = None) -> CICAMClassifier:
    """Load a frozen CI-CAM teacher (eval mode, no gradients) from a Lightning checkpoint on the CPU.

    The checkpoint must come from :class:`CICAMClassifier` or a subclass (a KD student works too).
    Backbone weights come from the checkpoint only (``pretrained=False``: nothing is downloaded).

    Args:
        path: ``.ckpt`` file.
        role: name used in error messages (``"classification teacher"``, ...).
        num_classes: if given, the teacher must have this many classes.

    Raises:
        UserFileNotFoundError: the file does not exist.
        UserValueError: the file is not a readable classifier checkpoint, not a CI-CAM model's, or has
            another class count (one line naming the file).
    """
    path = Path(path)
    if path.is_dir():
        raise UserValueError(f"{path}: a folder, not the {role} checkpoint (name its .ckpt file)")
    if not path.is_file():
        raise UserFileNotFoundError(
            f"{path}: {role} checkpoint not found; train a CI-CAM first (e.g. "
            "experiments/embedded_confounded_ci_cam.yaml; make demo-kd picks per-epoch checkpoints)"
        )
    teacher = load_classifier(path)  # one line for a truncated, foreign or regressor checkpoint
    if not isinstance(teacher, CICAMClassifier):
        raise UserValueError(f"{path}: the {role} checkpoint is not a CI-CAM (CICAMClassifier) checkpoint: it was "
                             f"written by {type(teacher).__name__}")
    if num_classes is not None and teacher.hparams.num_classes != num_classes:
        raise UserValueError(
            f"{path}: the {role} checkpoint has {teacher.hparams.num_classes} classes, the student has {num_classes}"
        )
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


class KDCICAMStudent(CICAMClassifier):
    """KD-CI-CAM student: a :class:`CICAMClassifier` trained with two frozen CI-CAM teachers.

    All :class:`CICAMClassifier` / :class:`WSOLClassifier` arguments are accepted; the KD ones are:

    Args:
        num_classes: number of classes ``C``.
        cls_teacher_ckpt: checkpoint of the classification teacher (best Top-1 Cls); needed when
            ``kd_routing`` is ``"random"`` or ``"cls"``.
        loc_teacher_ckpt: checkpoint of the localisation teacher (best GT-known); needed when
            ``kd_routing`` is ``"random"`` or ``"loc"``.
        kd_alpha: ``α`` in ``[0, 1]`` (official 0.8; 0 with ``kd_routing="none"`` = plain student CE).
        kd_temperature_cls: ``T_cls`` of the logit KD (official: 15 on CUB, 1.1 on ILSVRC).
        kd_temperature_loc: ``T_loc`` of the CAM KD (official: same as ``T_cls``).
        kd_variant: ``"standard"`` (proper KL, ``T²``) or ``"official"`` (the official code's form).
        kd_loc_weight: ``λ`` on the CAM term (official ``kd_fe_times`` = 1).
        kd_routing: ``"random"`` (uniform over {0, 1, 2}, official), ``"cls"`` ({0, 1}),
            ``"loc"`` ({0, 2}) or ``"none"`` (all 0).
        kd_seed: seed of the routing generator.
        **kwargs: :class:`CICAMClassifier` arguments.
    """

    def __init__(
        self,
        num_classes: int,
        cls_teacher_ckpt: str | None = None,
        loc_teacher_ckpt: str | None = None,
        kd_alpha: float = 0.8,
        kd_temperature_cls: float = 15.0,
        kd_temperature_loc: float = 15.0,
        kd_variant: KDLogitVariant = "standard",
        kd_loc_weight: float = 1.0,
        kd_routing: RouteMode = "random",
        kd_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        if not 0.0 <= kd_alpha <= 1.0:
            raise ValueError(f"kd_alpha must be in [0, 1], got {kd_alpha}")
        for name, t in (("kd_temperature_cls", kd_temperature_cls), ("kd_temperature_loc", kd_temperature_loc)):
            if not 0.0 < t < float("inf"):
                raise ValueError(f"{name} must be a finite value > 0, got {t}")
        if kd_variant not in _VARIANTS:
            raise ValueError(f"kd_variant must be one of {_VARIANTS}, got {kd_variant!r}")
        if kd_routing not in _ROUTINGS:
            raise ValueError(f"kd_routing must be one of {_ROUTINGS}, got {kd_routing!r}")
        if not 0.0 <= kd_loc_weight < float("inf"):
            raise ValueError(f"kd_loc_weight must be a finite value >= 0, got {kd_loc_weight}")
        super().__init__(num_classes=num_classes, **kwargs)
        # plain dict: the teachers stay out of state_dict(), parameters() and train()/eval() switches
        self._teachers: dict[str, CICAMClassifier] = {}

    # ------------------------------------------------------------------ teachers
    def needed_teachers(self) -> tuple[str, ...]:
        """Teacher roles that the routing mode uses: a subset of ``("cls", "loc")``."""
        return {"random": ("cls", "loc"), "cls": ("cls",), "loc": ("loc",), "none": ()}[self.hparams.kd_routing]

    def load_teachers(self) -> None:
        """Load the needed teachers from ``cls_teacher_ckpt`` / ``loc_teacher_ckpt`` (frozen, eval mode)."""
        names = {"cls": "classification teacher", "loc": "localisation teacher"}
        for role in self.needed_teachers():
            path = self.hparams[f"{role}_teacher_ckpt"]
            if not path:
                raise UserValueError(
                    f"kd_routing={self.hparams.kd_routing!r} needs the {names[role]}: set {role}_teacher_ckpt"
                )
            self._teachers[role] = load_ci_cam_teacher(path, names[role], self.hparams.num_classes)

    @property
    def teachers(self) -> dict[str, CICAMClassifier]:
        """The loaded teachers by role (``"cls"``, ``"loc"``); empty before ``setup("fit")``."""
        return dict(self._teachers)

    def preflight(self, stage: str, trainer: Any, datamodule: Any) -> None:
        super().preflight(stage, trainer, datamodule)
        if stage == "fit" and set(self._teachers) != set(self.needed_teachers()):
            self.load_teachers()
            self.check_teacher_data(datamodule)

    def check_teacher_data(self, datamodule: Any) -> None:
        """Each teacher must see the images it was trained on, normalised as then: another dataset (by its
        metadata's content, where the teacher's recorded root still exists) or another mean / std is one line.
        Before: a teacher of the confounded dataset, or one trained at mean 0.498 fed ImageNet-normalised images,
        distilled without a word."""
        from cream_pl.data.metadata import data_sha1
        from cream_pl.models.checkpoints import checkpoint_normalisation, read_checkpoint

        if datamodule is None or not hasattr(datamodule, "mean"):
            return
        names = {"cls": "classification teacher", "loc": "localisation teacher"}
        mine = tuple(float(v) for v in datamodule.mean), tuple(float(v) for v in datamodule.std)
        for role in self._teachers:
            path = self.hparams[f"{role}_teacher_ckpt"]
            checkpoint = read_checkpoint(path)
            theirs = checkpoint_normalisation(checkpoint)
            if theirs is not None and not np.allclose(np.concatenate(theirs), np.concatenate(mine), atol=1e-6):
                raise UserValueError(f"{path}: the {names[role]} was trained on images normalised with mean "
                                     f"{list(theirs[0])} / std {list(theirs[1])}, but the student's data gives mean "
                                     f"{list(mine[0])} / std {list(mine[1])}; set data.init_args.mean / std to the "
                                     "teacher's")
            root = (checkpoint.get("datamodule_hyper_parameters") or {}).get("data_root")
            own = getattr(datamodule, "data_root", None)
            if root and own is not None and Path(root).is_dir() and Path(root).resolve() != Path(own).resolve() \
                    and data_sha1(Path(root)) != data_sha1(Path(own)):
                raise UserValueError(f"{path}: the {names[role]} was trained on {root}, other data than the student's "
                                     f"{own} (their metadata differ); KD-CI-CAM's teachers are CI-CAM trainings on the "
                                     "student's dataset")

    def on_fit_start(self) -> None:
        for teacher in self._teachers.values():
            teacher.to(self.device)
            teacher.eval()

    def route_generator(self, batch_idx: int, rank: int | None = None, epoch: int | None = None) -> torch.Generator:
        """Generator of the routes of one batch, seeded by ``(kd_seed, rank, epoch, batch_idx)``.

        Defaults: this process's global rank and the current epoch. Different ranks (and batches)
        get independent streams; the same arguments always give the same routes (resumable).
        """
        rank = self.global_rank if rank is None else rank
        epoch = self.current_epoch if epoch is None else epoch
        seed = np.random.SeedSequence([int(self.hparams.kd_seed), int(rank), int(epoch), int(batch_idx)])
        return torch.Generator().manual_seed(int(seed.generate_state(1, dtype=np.uint64)[0] >> 1))

    @torch.no_grad()
    def _teacher_outputs(self, role: str, images: Tensor, need_cams: bool) -> Tensor:
        """Teacher's down-branch logits ``(n, C)`` or, with ``need_cams``, all-class down-branch CAMs."""
        teacher = self._teachers[role]
        dtype = next(teacher.parameters()).dtype
        feats, logits = teacher.forward_features(images.to(dtype))
        if not need_cams:
            return logits
        return all_class_activation_maps(feats, teacher.classifier.weight)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        images, labels = batch["image"], batch["label"]
        hp = self.hparams
        if set(self._teachers) != set(self.needed_teachers()):
            raise RuntimeError("the KD teachers are not loaded; call setup('fit') (Trainer.fit does)")
        routes = route_samples(labels.shape[0], self.route_generator(batch_idx), hp.kd_routing, device=labels.device)
        idx_cls, idx_loc = route_indices(routes)
        feats, out = self.ci_forward(images)
        t_logits = self._teacher_outputs("cls", images[idx_cls], need_cams=False) if idx_cls.numel() else None
        cams_s = t_cams = None
        if idx_loc.numel():
            cams_s = all_class_activation_maps(out.features_down[idx_loc], self.classifier.weight)
            t_cams = self._teacher_outputs("loc", images[idx_loc], need_cams=True).to(cams_s.dtype)
            if t_cams.shape[2:] != cams_s.shape[2:]:  # a teacher with another feature stride
                t_cams = F.interpolate(t_cams, size=cams_s.shape[2:], mode="bilinear", align_corners=False)
        loss, parts = kd_student_loss(
            out.logits_down, cams_s, labels, routes, t_logits, t_cams, alpha=hp.kd_alpha,
            T_cls=hp.kd_temperature_cls, T_loc=hp.kd_temperature_loc, variant=hp.kd_variant,
            loc_weight=hp.kd_loc_weight,
        )
        self._update_pool(feats.detach(), labels, out.logits_up.detach())
        if self.context is not None and self.current_epoch >= hp.cream_update_start_epoch:
            self._update_context(out.features_down.detach(), labels)
        n = labels.shape[0]
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n)
        self.log_dict({f"train/{k}": v.float() for k, v in parts.items()}, on_step=False, on_epoch=True, batch_size=n)
        self._log_accuracy(out, labels)
        return loss
