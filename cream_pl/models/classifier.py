"""``WSOLClassifier``: the classifier LightningModule with CAM and CREAM, evaluated under the WSOL protocol.

Training is plain cross-entropy on a backbone + GAP + linear head (new layers at lr x10). With
CREAM enabled, every training step also updates the class-specific context embeddings from the
ground-truth-class CAM (Eq. 3-4, features detached, DDP-consistent). Validation and test report
CAM and CREAM side by side: MaxBoxAccV2 (+ per IoU), MaxBoxAcc (V1), GT-known / Top-1 / Top-5 Loc,
PxAP where masks exist, and classification accuracy, under names like
``test/cream/max_box_acc_v2``.

With ``cream_search`` the val epoch also scores a grid of CREAM's inference-time hyperparameters
(:mod:`cream_pl.models.cream_search`) on the same features and stores the winner; it is reported
as the method ``cream_selected`` (``model.selected_cream`` holds the chosen values). With
``record_per_image`` every method's per-image outcomes are kept in ``model.per_image`` for paired
bootstrap intervals (:mod:`cream_pl.metrics.bootstrap`).

``wsol_method`` trains with one of wsolevaluation's WSOL methods instead of plain CAM
(:mod:`cream_pl.models.wsol_methods`, :mod:`cream_pl.models.wsol_heads`): ``"has"`` hides grid cells
of the training images, ``"cutmix"`` mixes the training batch and its loss, ``"adl"`` puts
attention-based dropout layers at the backbone's ``adl_positions``, ``"acol"`` trains two classifier
branches (the second on the map erased where the first's is high) and evaluates their max-fused map,
``"spg"`` adds training-only guidance branches. CREAM runs on top, its context embeddings learned
during that method's training (where it runs on ACoL, and which ADL features it learns from, are the
method's CREAM variants, :mod:`cream_pl.models.cream_variants`): from the hidden images' features under
HaS, from the ADL network's training features under ADL (before or after its last layer), from each
ACoL branch or their fusion, from SPG's final map, and under CutMix from the mixed batch with the unmixed labels, on the
feature cells that see only the unmixed image (cells whose pixels miss the pasted box; the pasted
patch, a partial view of another image, updates nothing); an unmixed batch updates as usual.
Validation, test, prediction and every map are the same as for CAM (HaS and CutMix act on the
training batch only; ADL is the identity in eval mode; SPG's branches run in training only), except
for ACoL, whose map (``cam``) is the max of its two branches' normalised maps and whose features are
``cat([F_A, F_B])``; where the labels are known (val, test, predict) branch B is erased by the
ground-truth class, as the reference evaluates, and by A's top class otherwise
(:meth:`forward_features`). Under DDP each process draws its own HaS
cells, CutMix boxes and ADL choices (:func:`~cream_pl.models.wsol_methods.rank_generator`: rank 0
keeps the global torch stream, so one process draws exactly as before).

Example:
    >>> model = WSOLClassifier(num_classes=4, backbone="efficientnet_lite0", pretrained=False)
    >>> model.method_names
    ['cam', 'cream']
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from cream_pl.core.errors import UserValueError
from cream_pl.metrics import MaxBoxAccV2, PxAP
from cream_pl.metrics.functional import cam_thresholds, prepare_scoremaps
from cream_pl.metrics.localization_curve import LocalizationCurve, accuracy_at
from cream_pl.metrics.scored_maps import ScoredMaps, ScoringSpec, score_map_sets
from cream_pl.models.backbones import create_backbone
from cream_pl.models.cam import normalize_maps
from cream_pl.models.checkpoint_keys import CHECKPOINT_RECORD_KEY, CLASS_KEY
from cream_pl.models.context_embeddings import ContextEmbeddings
from cream_pl.models.cream import FeatureNorm
from cream_pl.models.cream_search import (
    SCORE_METRICS,
    CreamCandidate,
    CreamSearchSpace,
    choice_candidate,
    choice_values,
    legacy_choice_values,
    select_first_best,
)
from cream_pl.models.cream_variants import (
    FORMS,
    CreamVariant,
    form_cam,
    form_cream,
    form_eq3,
    method_variants,
)
from cream_pl.models.precision import float32_math
from cream_pl.models.wsol_heads import HeadOutput, build_wsol_head, init_classifier_for
from cream_pl.models.wsol_methods import (
    METHOD_TRUNKS,
    CutMixBatch,
    WSOLMethod,
    WSOLMethodName,
    attach_adl,
    cutmix,
    cutmix_keep_cells,
    hide_and_seek,
    mixed_cross_entropy,
    rank_generator,
)

__all__ = ["SELECTED", "WSOLClassifier", "check_eval_sizes"]

Stage = Literal["val", "test"]
SELECTED = "cream_selected"  # the method whose T / κ / λ / feature norm were chosen on val (cream_search)
_SCORE_METRICS = SCORE_METRICS
_CHOICE = "cream_selected_values"  # buffer: the chosen values (cream_search.CHOICE_FIELDS), NaN until val selects
_CHOICE_VARIANT = "cream_selected_variant"  # buffer (methods with several CREAM variants): index of the chosen one
_LEGACY_CHOICE = ("cream_selection", "cream_selection_score")  # older checkpoints: an index into the grid


def check_search_validates(searches: bool, trainer: Mapping[str, Any], where: str = "") -> None:
    """A model with ``cream_search`` selects its ``cream_selected`` maps in validation: where those maps are needed
    (a runner's row or record), refuse, before any work, a trainer config section that never validates (before: the
    fit ran, then its test had no ``cream_selected`` map). A fit that validates nothing on purpose (a training-only
    probe) is not checked.

    Example:
        >>> check_search_validates(True, {"limit_val_batches": 0}, where="r.yaml")
        Traceback (most recent call last):
        cream_pl.core.errors.UserValueError: r.yaml: trainer.limit_val_batches is 0, so the fit never validates and cream_search selects no cream_selected maps; drop cream_search or let the fit validate
    """
    if not searches:
        return
    for key in ("max_epochs", "limit_train_batches", "limit_val_batches"):
        value = trainer.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
            raise UserValueError(f"{where + ': ' if where else ''}trainer.{key} is 0, so the fit never validates and "
                                 "cream_search selects no cream_selected maps; drop cream_search or let the fit "
                                 "validate")


def check_eval_sizes(model_size: int, data_size: int, where: str | None = None) -> None:
    """The one check that a classifier's maps and its data's boxes and masks share one evaluation grid.

    Raises:
        UserValueError: one line (beginning with ``where``, the declaration's run, when given).
    """
    if model_size != data_size:
        at = f"{where}: " if where else ""
        raise UserValueError(f"{at}model.init_args.eval_size is {model_size} but data.init_args.eval_size is "
                             f"{data_size}: the maps are scored against boxes and masks at the data's size; give both "
                             "one value (the protocol's: 224)")


class WSOLClassifier(pl.LightningModule):
    """Backbone + GAP + linear classifier with CAM and CREAM localisation.

    Args:
        num_classes: number of classes ``C``.
        backbone: registry name (``cream_pl.models.backbones.list_backbones()``).
        pretrained: ``True`` for the official ImageNet weights, a path to a local state dict,
            or ``False`` for random init (tests).
        backbone_kwargs: extra arguments of the backbone (e.g. ``large_feature_map``).
        freeze_backbone: regular expression; backbone parameters whose names match are frozen
            (e.g. ``"^(_conv_stem|_bn0|_blocks\\.[0-7]\\.)"`` trains only the last EfficientNet stages,
            the CPU demo's speed setting); batch-norm layers left with no trainable parameter keep
            their running statistics (:meth:`Backbone.freeze`). ``None`` trains everything.
        channels_last: run the backbone in the channels-last memory format
            (:meth:`Backbone.use_channels_last`): same results up to float rounding, faster on
            AVX-512 CPUs and with mixed precision on GPUs.
        bn_momentum: running-statistics momentum of the backbone's batch-norm layers (PyTorch
            convention); ``None`` keeps the backbone's own (EfficientNet-Lite0: 0.01). Short
            fine-tuning wants 0.1 (:meth:`~cream_pl.models.backbones.Backbone.set_batchnorm_momentum`).
        optimizer: ``"sgd"`` (benchmark recipe, Nesterov) or ``"adamw"``.
        lr: base learning rate (pretrained layers).
        head_lr_multiplier: lr multiplier of the newly added layers (benchmark: 10).
        momentum: SGD momentum.
        weight_decay: weight decay.
        lr_step_epochs: divide the lr by ``1 / lr_gamma`` every this many epochs (0 = constant).
        lr_gamma: step-decay factor.
        cream: learn context embeddings and report CREAM maps.
        cream_tau: CAM foreground threshold τ of Eq. 3 and of the calibration.
        cream_lambda: momentum λ of the embedding update (paper: 0.8).
        cream_kappa: EM concentration κ (paper: 8).
        cream_iterations: EM iterations T (paper: 2; 0 = plain CAM).
        cream_feature_norm: [choice] features of the M-step, ``"raw"`` (default) or ``"l2"``.
        cream_calibration: apply the map calibration (Eq. 10-11).
        cream_update_start_epoch: [choice] first epoch that updates the embeddings (0 = whole training).
        cream_seed: seed of the random embedding initialisation.
        ablation_iterations: extra evaluation-time methods ``cream_T{t}`` (T sweep, paper Table 3).
        ablation_lambdas: extra embeddings tracked with these λ, evaluated as ``cream_lambda{λ}``.
        cam_curve_interval: CAM threshold step of the box metrics (benchmark training code: 0.001).
        iou_thresholds: IoU levels of MaxBoxAccV2, in percent.
        loc_threshold: fixed CAM threshold for GT-known / Top-1 / Top-5 Loc; ``None`` uses the
            threshold that maximised IoU-50 box accuracy on the last validation run (the
            fully supervised val split), per method.
        eval_size: evaluation resolution of the score maps (protocol: 224).
        num_media_images: images of the first val batch kept in ``media_batch`` (with their class, boxes and
            CAM / CREAM maps; at most the batch) for reporting callbacks (``cream-pl fit`` logs them to W&B;
            0: no images, the BoxAcc curves still).
        cream_search: val-split selection of CREAM's inference-time hyperparameters, a mapping
            ``{"iterations": [1, 2, 3], "kappa": [8, 16, 32], "lambda": [0.8, 0.6],
            "feature_norm": ["raw", "l2"], "variant": [...]}`` (``variant``: the WSOL method's CREAM
            variants, see ``cream_variant``; any subset; a missing key keeps the model's value;
            every λ must be tracked: ``cream_lambda`` or ``ablation_lambdas``). Each val epoch scores
            every candidate by MaxBoxAccV2 (PxAP on mask-only data), on the features of the one
            backbone pass, and stores the first best; it is evaluated as method ``cream_selected``
            (val: the winner's own numbers and τ*; test: the stored choice, never re-selected; absent
            with a warning if no val run selected one). ``None`` (default): no search.
            Cost: ``python -m cream_pl.pipelines.bench --only cream_search`` measures a whole val epoch with and
            without the embedded recipe's 90-candidate grid (``make bench``: the ``cream_search`` row of ``results/bench.json``);
            nothing at test (see :mod:`cream_pl.models.cream_search`).
        cream_search_epochs: [choice] which validations of a fit run ``cream_search``: ``"all"``
            (every one, default) or ``"last"`` (only the validation after the fit's last epoch,
            ``trainer.max_epochs``; a stand-alone ``validate`` always searches). The choice stays on
            val either way; ``"last"`` saves the search's cost on per-epoch validations (``make
            demo-kd`` validates every epoch and tests the last one). ``"last"`` needs the fit to test
            its last epoch: ``fit`` refuses it, before training, with a monitored ``ModelCheckpoint``
            (a best-val checkpoint from an earlier epoch has no choice), early stopping,
            ``max_steps``, or a ``check_val_every_n_epoch`` that skips the last epoch.
        record_per_image: keep per-image outcomes of every method (``True``) or of the listed
            methods in ``per_image[stage][method]``
            (numpy arrays: ``index``, ``best_iou`` ``(n, n_thr)`` all-contour best IoU per threshold,
            ``v1_hit50`` ``(n, n_thr)`` largest-contour IoU >= 0.5, ``top1`` / ``top5``, and at τ*
            ``gt_known`` / ``top1_loc`` / ``top5_loc``) for :mod:`cream_pl.metrics.bootstrap`.
            Per process: under DDP each rank holds its own images.
        wsol_method: the WSOL training method (wsolevaluation's definitions): ``"cam"`` (plain
            cross-entropy), ``"has"`` (Hide-and-Seek), ``"cutmix"``, ``"adl"``, ``"acol"`` or ``"spg"``.
            ACoL and SPG build the backbone's ``variant`` of that name and the heads of its
            ``acol_layout`` / ``spg_layout``. See :mod:`cream_pl.models.wsol_methods`,
            :mod:`cream_pl.models.wsol_heads` and the module doc for CREAM on top.
        wsol_method_args: overrides of the method's hyperparameters (defaults: wsolevaluation's
            ``config.py``): HaS ``{"grid_size": 4, "drop_rate": 0.5}`` (cell side in pixels), CutMix
            ``{"beta": 1.0, "prob": 1.0}``, ADL ``{"drop_rate": 0.75, "threshold": 0.9}`` (γ), ACoL
            ``{"threshold": 0.7}``, SPG ``{"threshold_1h": 0.7, "threshold_1l": 0.01, "threshold_2h": 0.5,
            "threshold_2l": 0.05, "threshold_3h": 0.7, "threshold_3l": 0.1}``. Unknown keys raise.
            ``None``: the defaults.
        cream_variant: [choice] where CREAM runs on the method's network, for the ``cream`` method and
            the ablations (:mod:`cream_pl.models.cream_variants`): ACoL ``"branches"`` (default: on each
            branch, then fused) or ``"fused"`` (on the fused map); ADL ``"before_adl"`` (default where
            the last ADL layer is on the feature map: the embeddings learn from its input) or
            ``"after_adl"``. ``None``: the method's default. The embeddings of every variant are
            learned in the same run; ``cream_search={"variant": [...]}`` chooses one on val.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "efficientnet_lite0",
        pretrained: bool | str = True,
        backbone_kwargs: dict[str, Any] | None = None,
        freeze_backbone: str | None = None,
        channels_last: bool = False,
        bn_momentum: float | None = None,
        optimizer: Literal["sgd", "adamw"] = "sgd",
        lr: float = 1e-3,
        head_lr_multiplier: float = 10.0,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        lr_step_epochs: int = 15,
        lr_gamma: float = 0.1,
        cream: bool = True,
        cream_tau: float = 0.2,
        cream_lambda: float = 0.8,
        cream_kappa: float = 8.0,
        cream_iterations: int = 2,
        cream_feature_norm: FeatureNorm = "raw",
        cream_calibration: bool = True,
        cream_update_start_epoch: int = 0,
        cream_seed: int = 0,
        ablation_iterations: Sequence[int] = (),
        ablation_lambdas: Sequence[float] = (),
        cam_curve_interval: float = 0.001,
        iou_thresholds: Sequence[int] = (30, 50, 70),
        loc_threshold: float | None = None,
        eval_size: int = 224,
        num_media_images: int = 8,
        cream_search: dict[str, Any] | None = None,
        cream_search_epochs: Literal["all", "last"] = "all",
        record_per_image: bool | list[str] = False,
        wsol_method: WSOLMethodName = "cam",
        wsol_method_args: dict[str, Any] | None = None,
        cream_variant: str | None = None,
    ) -> None:
        super().__init__()
        self.wsol = WSOLMethod.create(wsol_method, wsol_method_args)
        if self.wsol.name != "cam" and type(self).training_step is not WSOLClassifier.training_step:
            raise ValueError(f"wsol_method={wsol_method!r} is applied by WSOLClassifier.training_step, which "
                             f"{type(self).__name__} replaces; use wsol_method='cam' with it")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {optimizer!r}")
        for name, value, ok, want in (  # torch refuses them only when the fit starts (a traceback after the set-up)
                ("lr", lr, lr >= 0, ">= 0"),  # 0: frozen weights (as torch allows)
                ("head_lr_multiplier", head_lr_multiplier, head_lr_multiplier >= 0, ">= 0"),
                ("momentum", momentum, 0 <= momentum < 1, "in [0, 1)"),
                ("weight_decay", weight_decay, weight_decay >= 0, ">= 0"),
                ("lr_gamma", lr_gamma, lr_gamma > 0, "> 0")):
            if not (math.isfinite(value) and ok):
                raise ValueError(f"{name} must be a finite value {want}, got {value}")
        if lr_step_epochs < 0:
            raise ValueError(f"lr_step_epochs must be >= 0 (0: no step decay), got {lr_step_epochs}")
        if cream_update_start_epoch < 0:
            raise ValueError(f"cream_update_start_epoch must be >= 0, got {cream_update_start_epoch}")
        if cream_iterations < 0 or any(t < 0 for t in ablation_iterations):
            raise ValueError("EM iterations must be >= 0")
        if not cream and (ablation_iterations or ablation_lambdas):
            raise ValueError("ablation_iterations / ablation_lambdas need cream=True")
        if not 0.0 <= cream_tau <= 1.0:  # else the first training step fails (Eq. 3 thresholds a [0, 1] CAM)
            raise ValueError(f"cream_tau must be in [0, 1], got {cream_tau}")
        if not cream_kappa > 0 or not math.isfinite(cream_kappa):
            raise ValueError(f"cream_kappa must be a finite value > 0 (EM concentration; paper: 8), got {cream_kappa}")
        if loc_threshold is not None and not 0.0 <= loc_threshold < 1.0:
            raise ValueError(f"loc_threshold must be in [0, 1), got {loc_threshold}")
        if cream_search is not None and not cream:
            raise ValueError("cream_search needs cream=True (it selects CREAM's inference-time hyperparameters)")
        if cream_search_epochs not in ("all", "last"):
            raise ValueError(f"cream_search_epochs must be 'all' or 'last', got {cream_search_epochs!r}")
        if isinstance(num_media_images, bool) or num_media_images < 0:  # before: -1 logged nothing, silently
            raise ValueError(f"num_media_images must be >= 0 (0: no images, the curves still), got {num_media_images}")
        self.save_hyperparameters()
        trunk = METHOD_TRUNKS.get(self.wsol.name)
        kwargs = dict(backbone_kwargs or {})
        if trunk is not None:
            if kwargs.get("variant", trunk) != trunk:
                raise ValueError(f"backbone_kwargs variant={kwargs['variant']!r} contradicts wsol_method="
                                 f"{self.wsol.name!r}, which trains on the backbone's {trunk!r} variant")
            kwargs["variant"] = trunk
        try:
            self.backbone = create_backbone(backbone, pretrained=pretrained, **kwargs)
        except TypeError as err:
            if trunk is None or "variant" not in str(err):
                raise
            raise ValueError(f"backbone {backbone!r} takes no 'variant' argument, so it cannot build the {trunk!r} "
                             f"network that wsol_method={self.wsol.name!r} trains on") from None
        if freeze_backbone:
            self.backbone.freeze(freeze_backbone)
        self.backbone.use_channels_last(channels_last)
        if bn_momentum is not None:
            self.backbone.set_batchnorm_momentum(bn_momentum)
        # ADL: parameter-free layers as forward hooks at the backbone's positions (state dict unchanged)
        self.adl_layers = attach_adl(self.backbone, **self.wsol.params) if self.wsol.name == "adl" else None
        # ACoL / SPG: their heads (None for the other methods); ACoL's features are cat([F_A, F_B])
        self.wsol_head = build_wsol_head(self.wsol, self.backbone, num_classes)
        head = self.wsol_head
        self.classifier = nn.Linear(self.backbone.num_features if head is None else head.classifier_dim, num_classes)
        self._init_classifier()
        if head is not None:
            init_classifier_for(head, self.classifier)
        feature_dim = self.backbone.num_features if head is None else head.feature_dim
        self.cream_variants: tuple[CreamVariant, ...] = method_variants(
            self.wsol.name, getattr(self.backbone, "adl_output_position", None))
        names = [v.name for v in self.cream_variants]
        if cream_variant is not None and cream_variant not in names:
            raise ValueError(f"cream_variant must be one of {names} for wsol_method={self.wsol.name!r}, got "
                             f"{cream_variant!r}" if len(names) > 1 else f"wsol_method={self.wsol.name!r} has one "
                             f"place for CREAM; leave cream_variant unset (got {cream_variant!r})")
        self.cream_variant = self.cream_variants[names.index(cream_variant) if cream_variant is not None else 0]
        self._pre_adl: list[Any] = []  # the ADL layer whose input the before_adl embeddings learn from
        if cream and self.adl_layers is not None and any(v.source == "before_adl" for v in self.cream_variants):
            layer = self.adl_layers[self.backbone.adl_output_position.replace(".", "_") or "output"]
            layer.record_input = True
            self._pre_adl.append(layer)
        self.lambdas = (float(cream_lambda), *[float(v) for v in ablation_lambdas])
        self.cream_candidates: list[CreamCandidate] = []
        if cream_search is not None:
            space = CreamSearchSpace.from_config(cream_search)
            multi = len(self.cream_variants) > 1
            self.cream_candidates = space.candidates(self.lambdas, cream_iterations, cream_kappa, cream_feature_norm,
                                                     self.cream_variant.name if multi else "")
            wrong = sorted({c.variant for c in self.cream_candidates} - set(names))
            if wrong:
                raise ValueError(f"cream_search['variant'] {wrong} are not CREAM variants of wsol_method="
                                 f"{self.wsol.name!r}; its variants: {[n for n in names if n] or 'none (one place)'}")
            if multi:
                self.register_buffer(_CHOICE_VARIANT, torch.tensor(float("nan"), dtype=torch.float64))
            # the chosen values themselves (T, κ, λ, feature norm, val score, val metric), NaN until a val
            # run selects: a checkpoint evaluated under another grid still applies the candidate val chose
            self.register_buffer(_CHOICE, choice_values(None))
        self.context = (
            ContextEmbeddings(num_classes, feature_dim, self.lambdas, seed=cream_seed) if cream else None
        )
        # the other CREAM variants' embeddings (same init), learned in the same run; empty for one variant
        self.variant_contexts = nn.ModuleDict({
            v.name: ContextEmbeddings(num_classes, feature_dim, self.lambdas, seed=cream_seed)
            for v in self.cream_variants if cream and v != self.cream_variant
        })
        self.method_names = self._method_names()
        if not isinstance(record_per_image, bool):
            unknown = sorted(set(record_per_image) - set(self.method_names))
            if unknown:
                raise ValueError(f"record_per_image names unknown method(s) {unknown}; methods: {self.method_names}")
        n = len(self.method_names)
        # τ* per method, chosen on the last validation run (NaN until then); saved in checkpoints.
        self.register_buffer("val_best_threshold", torch.full((n,), float("nan"), dtype=torch.float64))
        self.metrics = nn.ModuleDict()
        for stage in ("val", "test"):
            for name in self.method_names:
                self.metrics[_metric_key(stage, name)] = self._new_method_metrics()
        # val-only metrics of every cream_search candidate, in the grid's order
        self.search_metrics = nn.ModuleList([self._new_method_metrics() for _ in self.cream_candidates])
        self.val_acc = _TopKAccuracy()
        self.test_acc = _TopKAccuracy()
        self.last_results: dict[str, dict[str, Any]] = {}
        self.media_batch: dict[str, Any] | None = None
        self.per_image: dict[str, dict[str, dict[str, np.ndarray]]] = {}
        self._per_image_parts: dict[str, list[dict[str, np.ndarray]]] = {}
        # random source of the WSOL draws: None (global torch RNG) in process 0, own stream in ranks > 0
        self._wsol_generator: torch.Generator | None = None
        # where the current weights come from (a loaded checkpoint's record, or the end of a fit)
        self._weights_record: dict[str, Any] | None = None

    # ------------------------------------------------------------------ model
    def _method_names(self) -> list[str]:
        names = ["cam"]
        if self.hparams.cream:
            names.append("cream")
            names += [f"cream_T{t}" for t in self.hparams.ablation_iterations]
            names += [f"cream_lambda{lam:g}" for lam in self.hparams.ablation_lambdas]
            if self.hparams.get("cream_search") is not None:
                names.append(SELECTED)
        return names

    @property
    def selected_cream(self) -> dict[str, Any] | None:
        """The val-selected CREAM hyperparameters ``{"T", "kappa", "lambda", "feature_norm", "val_score",
        "val_metric", "candidate"}``, or ``None`` (no ``cream_search``, or no val run yet)."""
        c = self._selected_candidate()
        if c is None:
            return None
        values = getattr(self, _CHOICE)
        return {**c.as_dict(), "val_score": float(values[4]), "val_metric": _SCORE_METRICS[int(values[5])],
                "candidate": c.name}

    def _selected_candidate(self) -> CreamCandidate | None:
        """The stored choice as a candidate of this model (its λ among the tracked ones), or ``None``."""
        if not self.cream_candidates:
            return None
        return self._with_variant(choice_candidate(getattr(self, _CHOICE), self.lambdas), getattr(self, _CHOICE_VARIANT, None))

    def _with_variant(self, c: CreamCandidate | None, stored: Tensor | None) -> CreamCandidate | None:
        """``c`` with the stored CREAM variant (methods with several; NaN or absent: the default one)."""
        if c is None or len(self.cream_variants) < 2:
            return c
        index = 0 if stored is None or not math.isfinite(float(stored)) else int(stored)
        variant = self.cream_variants[index] if 0 <= index < len(self.cream_variants) else self.cream_variant
        return CreamCandidate(c.iterations, c.kappa, c.lam, c.lambda_index, c.feature_norm, variant.name)

    def clear_cream_selection(self) -> None:
        """Forget the val-selected choice (the next validation selects again)."""
        if self.cream_candidates:
            getattr(self, _CHOICE).fill_(float("nan"))
            if hasattr(self, _CHOICE_VARIANT):
                getattr(self, _CHOICE_VARIANT).fill_(float("nan"))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """Check a stored CREAM choice against this model before loading it (see :meth:`_check_stored_choice`)."""
        if self.cream_candidates:
            self._check_stored_choice(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _check_stored_choice(self, state_dict: dict[str, Any], prefix: str) -> None:
        """Refuse a choice whose λ this model does not track; warn when it is not in this model's grid.

        An index-only choice (older checkpoints) is converted by :meth:`on_load_checkpoint`, which has the
        checkpoint's own hyperparameters; a bare state dict that still holds one is refused.
        """
        if prefix + _CHOICE not in state_dict:
            if prefix + _LEGACY_CHOICE[0] in state_dict:
                raise UserValueError(
                    "this state dict stores the val-selected CREAM only as an index into a cream_search grid (an "
                    "older checkpoint); load the checkpoint file (load_classifier or load_from_checkpoint), whose own "
                    "hyperparameters resolve the index")
            return
        candidate = self._with_variant(choice_candidate(state_dict[prefix + _CHOICE], self.lambdas),  # raises on an untracked λ
                                       state_dict.get(prefix + _CHOICE_VARIANT))
        if candidate is not None and candidate.name not in {c.name for c in self.cream_candidates}:
            rank_zero_warn(f"the stored val-selected CREAM {candidate.name} is not a candidate of this model's "
                           f"cream_search grid ({len(self.cream_candidates)} candidates): cream_selected applies the "
                           "stored values, which val chose over another grid")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the checkpoint's epoch record (:meth:`checkpoint_rule`); convert an index-only CREAM choice
        (older checkpoints) to its values, with the checkpoint's own grid."""
        record = checkpoint.get(CHECKPOINT_RECORD_KEY)
        self._weights_record = dict(record) if isinstance(record, dict) else {"epoch": checkpoint.get("epoch")}
        state = checkpoint.get("state_dict")
        self._check_variant_embeddings(state)
        if not isinstance(state, dict) or _LEGACY_CHOICE[0] not in state or _CHOICE in state:
            return
        selection = state.pop(_LEGACY_CHOICE[0])
        score = state.pop(_LEGACY_CHOICE[1], torch.tensor(float("nan")))
        state[_CHOICE] = legacy_choice_values(selection, score, checkpoint.get("hyper_parameters") or {})

    def _check_variant_embeddings(self, state: Any) -> None:
        """Refuse, in one line, a checkpoint without the embeddings of this method's other CREAM variants (ADL
        checkpoints written before the variants existed learned only the ``after_adl`` ones)."""
        if not isinstance(state, dict) or not len(self.variant_contexts):
            return
        missing = sorted(n for n in self.variant_contexts if f"variant_contexts.{n}.fg" not in state)
        if missing:
            raise UserValueError(
                f"this checkpoint has no context embeddings of CREAM variant(s) {missing} of wsol_method="
                f"{self.wsol.name!r} (it predates CREAM's variants, cream_pl.models.cream_variants: its 'context' "
                "holds the embeddings of the features after the last ADL layer); retrain it to evaluate the variants")

    def available_methods(self) -> list[str]:
        """``method_names`` that can produce maps now (``cream_selected`` only once val has selected)."""
        return [n for n in self.method_names if n != SELECTED or self.selected_cream is not None]

    def _new_method_metrics(self) -> nn.ModuleDict:
        interval = self.hparams.cam_curve_interval
        return nn.ModuleDict(
            {
                "box_v2": MaxBoxAccV2(cam_curve_interval=interval, iou_thresholds=tuple(self.hparams.iou_thresholds)),
                "loc": LocalizationCurve(cam_curve_interval=interval),
                "pxap": PxAP(cam_curve_interval=interval),
            }
        )

    def _init_classifier(self) -> None:
        """N(0, 0.01) weights and zero bias, as the benchmark's ``initialize_weights``; a backbone that
        loaded a pretrained classifier of the same shape (ResNet50 on ImageNet's 1000 classes) keeps it."""
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier.bias)
        head = getattr(self.backbone, "pretrained_classifier", None)
        if head is not None and tuple(head[0].shape) == tuple(self.classifier.weight.shape):
            with torch.no_grad():
                self.classifier.weight.copy_(head[0])
                self.classifier.bias.copy_(head[1])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the writing class, so :func:`cream_pl.models.checkpoints.load_classifier` restores it, and
        the checkpoint's epoch and whether it is the fit's last (``checkpoint["cream_pl_checkpoint"]``,
        read by :meth:`checkpoint_rule`)."""
        checkpoint[CLASS_KEY] = f"{type(self).__module__}.{type(self).__qualname__}"
        trainer = self._trainer
        if trainer is not None:
            epoch, max_epochs = int(checkpoint.get("epoch", self.current_epoch)), trainer.max_epochs
            last = bool(trainer.should_stop) or (max_epochs is not None and 0 < max_epochs <= epoch + 1)
            if max_epochs is not None and max_epochs > 0:
                epoch = min(epoch, max_epochs - 1)  # saved after the fit: Lightning's epoch is one past the last
            checkpoint[CHECKPOINT_RECORD_KEY] = {"epoch": epoch, "max_epochs": max_epochs, "last": last}

    def on_train_epoch_end(self) -> None:
        """Say it in one line when training diverged (a NaN or infinite epoch loss or weight): every map of such a
        model is degenerate, and its localisation numbers would otherwise read as a method's result."""
        loss = self.trainer.callback_metrics.get("train/loss_epoch")
        bad_loss = loss is not None and not bool(torch.isfinite(torch.as_tensor(loss)).all())
        bad_weight = next((n for n, p in self.named_parameters() if p.requires_grad and not bool(torch.isfinite(p).all())),
                          None)
        if bad_loss or bad_weight is not None:
            rank_zero_warn(f"training diverged in epoch {self.current_epoch}: "
                           + (f"the epoch's loss is {float(loss)}" if bad_loss else f"{bad_weight} holds NaN or inf")
                           + f"; lower the learning rate (lr {self.hparams.get('lr', float('nan')):g}, head_lr_multiplier "
                           f"{self.hparams.get('head_lr_multiplier', float('nan')):g}): this model's maps and boxes are "
                           "not a method's result")

    def on_fit_end(self) -> None:
        trainer = self.trainer
        self._weights_record = {"epoch": max(int(trainer.current_epoch) - 1, 0), "max_epochs": trainer.max_epochs,
                                "last": True}

    def checkpoint_rule(self) -> dict[str, Any]:
        """Which checkpoint rule produced the weights being tested: ``{"rule", "epoch", "max_epochs", "path"}``.

        ``rule`` is ``"last"`` (the fit's last epoch, or the weights at the end of a fit: the WSOL
        benchmark's rule), ``"best <monitor> (<mode>)"`` (a monitored ``ModelCheckpoint``'s best file),
        ``"epoch <e> of <n>"`` (an earlier epoch, chosen by the caller) or ``"unknown"`` (a checkpoint
        without the record, or weights of no fit). Every row of one test comes from these weights; the
        test results carry it (``last_results["test"]["checkpoint"]``) so reports can state it.
        """
        trainer = self._trainer
        path = getattr(trainer, "ckpt_path", None) if trainer is not None else None
        rec = self._weights_record or {}
        epoch, max_epochs = rec.get("epoch"), rec.get("max_epochs")
        rule = "unknown"
        if rec.get("last"):
            rule = "last"
        elif epoch is not None and max_epochs:
            rule = f"epoch {int(epoch) + 1} of {int(max_epochs)}"
        if path and trainer is not None:
            for cb in trainer.checkpoint_callbacks:
                best = getattr(cb, "best_model_path", "")
                if getattr(cb, "monitor", None) and best and os.path.abspath(best) == os.path.abspath(path):
                    rule = f"best {cb.monitor} ({cb.mode})"
        return {"rule": rule, "epoch": None if epoch is None else int(epoch), "max_epochs": max_epochs,
                "path": None if path is None else str(path)}

    def forward_features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(features (B, K, h, w), logits (B, C))`` — the hook subclasses (e.g. CI-CAM) override.

        ACoL: ``cat([F_A, F_B])`` and branch A's logits, branch B erased by A's top class (no labels here).
        """
        if self.wsol_head is not None:
            out = self.head_forward(images)
            return out.features, out.logits
        feats = self.backbone(images)
        return feats, self.classifier(feats.mean(dim=(2, 3)))

    def head_forward(self, images: Tensor, labels: Tensor | None = None) -> HeadOutput:
        """ACoL / SPG: the head's output; ``labels`` set ACoL's erasing class (else A's top class)."""
        if self.wsol_head is None:
            raise ValueError(f"wsol_method={self.wsol.name!r} has no head")
        return self.wsol_head(self.backbone(images), self.classifier, labels)

    def _labelled_features(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`forward_features` where the labels are known (ACoL erases by the ground-truth class, as the
        reference evaluates)."""
        if self.wsol_head is None or not self.wsol_head.needs_labels:
            return self.forward_features(images)
        out = self.head_forward(images, labels)
        return out.features, out.logits

    def cam_weights(self) -> tuple[Tensor, ...]:
        """The linear weights of the method's map(s): the classifier's; ACoL: branch A's and branch B's."""
        return (self.classifier.weight,) if self.wsol_head is None else self.wsol_head.cam_weights(self.classifier)

    def _variant(self, name: str) -> CreamVariant:
        return next((v for v in self.cream_variants if v.name == name), self.cream_variant)

    def _context_of(self, variant: CreamVariant) -> ContextEmbeddings:
        assert self.context is not None
        return self.context if variant == self.cream_variant else self.variant_contexts[variant.name]  # type: ignore[return-value]

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_features(images)[1]

    def method_maps(
        self, feats: Tensor, class_ids: Tensor, names: Sequence[str] | None = None
    ) -> dict[str, Tensor]:
        """Maps of the evaluated methods at feature resolution, ``{name: (B, h, w)}``, for ``class_ids``.

        Args:
            feats: backbone features ``(B, K, h, w)``.
            class_ids: class of each map ``(B,)``.
            names: methods to compute (a subset of ``method_names``); ``None`` computes all of
                :meth:`available_methods`.
        """
        wanted = list(self.available_methods() if names is None else names)
        unknown = sorted(set(wanted) - set(self.method_names))
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; this model has {self.method_names}")
        if SELECTED in wanted and self.selected_cream is None:
            raise ValueError(f"{SELECTED!r} has no stored choice: no validation run has selected CREAM's "
                             "hyperparameters yet (run fit or validate with a val split first)")
        with float32_math(feats):  # the trainer may run this step under bf16/fp16 autocast
            return self._method_maps(feats.float(), class_ids, wanted)

    def _method_maps(self, feats: Tensor, class_ids: Tensor, wanted: list[str]) -> dict[str, Tensor]:
        hp = self.hparams
        weights = [w.float() for w in self.cam_weights()]
        form = self.cream_variant.form
        maps = {"cam": normalize_maps(form_cam(form, feats, weights, class_ids))} if "cam" in wanted else {}
        if self.context is None:
            return maps
        kw = dict(kappa=hp.cream_kappa, tau=hp.cream_tau, feature_norm=hp.cream_feature_norm, calibration=hp.cream_calibration)
        e_fg, e_bg = self.context.get(0)
        if "cream" in wanted:
            maps["cream"] = form_cream(form, feats, weights, class_ids, e_fg, e_bg, iterations=hp.cream_iterations, **kw)
        for t in hp.ablation_iterations:
            if f"cream_T{t}" in wanted:
                maps[f"cream_T{t}"] = form_cream(form, feats, weights, class_ids, e_fg, e_bg, iterations=t, **kw)
        for i, lam in enumerate(hp.ablation_lambdas, start=1):
            if f"cream_lambda{lam:g}" in wanted:
                fg, bg = self.context.get(i)
                maps[f"cream_lambda{lam:g}"] = form_cream(form, feats, weights, class_ids, fg, bg,
                                                          iterations=hp.cream_iterations, **kw)
        if SELECTED in wanted:
            chosen = self._selected_candidate()
            assert chosen is not None
            variant = self._variant(chosen.variant)  # CREAM's own arithmetic (the search's batched EM is within 1e-5)
            e_fg, e_bg = self._context_of(variant).get(chosen.lambda_index)
            maps[SELECTED] = form_cream(variant.form, feats, [w.float() for w in self.cam_weights()], class_ids,
                                        e_fg, e_bg, iterations=chosen.iterations, kappa=chosen.kappa,
                                        tau=self.hparams.cream_tau, feature_norm=chosen.feature_norm,
                                        calibration=self.hparams.cream_calibration)
        return maps

    def _candidate_maps(self, feats: Tensor, class_ids: Tensor, candidates: Sequence[CreamCandidate]) -> list[Tensor]:
        """Each candidate's CREAM maps, in its variant's place with its variant's embeddings; the candidates of
        one variant share one batched EM (:meth:`~cream_pl.models.cream_variants._Linear.cream_grid`)."""
        weights = [w.float() for w in self.cam_weights()]
        out: list[Tensor | None] = [None] * len(candidates)
        for name in dict.fromkeys(c.variant for c in candidates):
            variant = self._variant(name)
            context = self._context_of(variant)
            group = [i for i, c in enumerate(candidates) if c.variant == name]
            embeddings = [context.get(i) for i in range(len(self.lambdas))]
            maps = FORMS[variant.form].cream_grid(feats, weights, class_ids, embeddings, [candidates[i] for i in group],
                                                  self.hparams.cream_tau, self.hparams.cream_calibration)
            for i, m in zip(group, maps):
                out[i] = m
        return out  # type: ignore[return-value]

    def search_maps(self, feats: Tensor, class_ids: Tensor) -> list[Tensor]:
        """Maps ``(B, h, w)`` of every ``cream_search`` candidate from these features (float32 math)."""
        with float32_math(feats):
            return self._candidate_maps(feats.float(), class_ids, self.cream_candidates)

    # --------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        labels = batch["label"]
        images, mix = self.wsol_training_inputs(batch["image"], labels)
        if self.wsol_head is not None:  # ACoL: CE(A) + CE(B); SPG: CE + its three guidance losses
            out = self.head_forward(images, labels)
            feats, logits = out.features, out.logits
            loss = self.wsol_head.loss(out, labels, weight=self.classifier.weight, size=tuple(images.shape[-2:]))
        else:
            feats, logits = self.forward_features(images)
            if mix is None:
                loss = F.cross_entropy(logits, labels)
            else:
                loss = mixed_cross_entropy(logits, mix.labels_a, mix.labels_b, mix.lam)
        pre_adl = None  # the last ADL layer's input of this step (CREAM's before_adl features), released here
        if self._pre_adl and self._pre_adl[0].last_input is not None:
            pre_adl, self._pre_adl[0].last_input = self._pre_adl[0].last_input.detach(), None
        if self.context is not None and self.current_epoch >= self.hparams.cream_update_start_epoch:
            keep = None
            if mix is not None:  # only the cells that see the unmixed image (labels) alone
                cells = cutmix_keep_cells(mix.box, tuple(images.shape[-2:]), tuple(feats.shape[-2:]), feats.device)
                keep = cells.expand(feats.shape[0], -1, -1)
            sources = {"features": feats.detach()}
            if pre_adl is not None:
                sources["before_adl"] = pre_adl
            self._update_context(feats.detach(), labels, keep, sources)
        acc = (logits.argmax(1) == labels).float().mean()
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=labels.shape[0])
        self.log("train/acc", acc, prog_bar=True, on_step=False, on_epoch=True, batch_size=labels.shape[0])
        return loss

    def wsol_training_inputs(self, images: Tensor, labels: Tensor) -> tuple[Tensor, CutMixBatch | None]:
        """The training batch the WSOL method feeds to the network: ``(images, CutMix batch or None)``.

        HaS hides grid cells; CutMix mixes the batch with probability ``prob`` (a mixed batch comes
        back with its labels and λ); CAM and ADL pass the images through. Random draws come from
        this process's stream (:meth:`wsol_generator`): the global torch RNG (``seed_everything``) in
        process 0, an own generator in every other DDP process.
        """
        p, g = self.wsol.params, self._wsol_generator
        if self.wsol.name == "has":
            return hide_and_seek(images, p["grid_size"], p["drop_rate"], generator=g)[0], None
        if self.wsol.name == "cutmix" and float(torch.rand((), generator=g)) < p["prob"]:
            mix = cutmix(images, labels, p["beta"], generator=g)
            return mix.images, mix
        return images, None

    @property
    def wsol_generator(self) -> torch.Generator | None:
        """The random source of this process's HaS / CutMix / ADL draws (``None``: the global torch RNG)."""
        return self._wsol_generator

    def on_train_epoch_start(self) -> None:
        """Seed this process's WSOL draws apart from the other processes' (:func:`rank_generator`).

        ``seed_everything`` gives every DDP process the same global stream; rank 0 keeps it (one
        process draws exactly as before), rank ``r > 0`` draws from a generator seeded from
        ``(PL_GLOBAL_SEED, r, epoch)``.
        """
        if self.wsol.name == "cam":
            return
        rank = int(self.global_rank)
        seed = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed()))
        self._wsol_generator = rank_generator(seed, rank, int(self.current_epoch))
        if self.adl_layers is not None:
            for layer in self.adl_layers.values():
                layer.generator = self._wsol_generator

    @torch.no_grad()
    def _update_context(self, feats: Tensor, labels: Tensor, keep: Tensor | None = None,
                        sources: dict[str, Tensor] | None = None) -> None:
        """Eq. 3-4 from the ground-truth-class map, for every CREAM variant in its own place.

        ``keep`` ``(B, h, w)`` restricts Eq. 3 to those cells; ``sources`` maps a variant's feature source
        (``"features"``: ``feats``; ``"before_adl"``) to its training features; a variant whose source is
        missing is not updated this step.
        """
        sources = {"features": feats, **(sources or {})}
        weights = [w.detach().float() for w in self.cam_weights()]
        for variant in self.cream_variants:
            src = sources.get(variant.source)
            if src is None:
                continue
            with float32_math(src):  # Eq. 3-4 in float32 under any trainer precision
                f_fg, f_bg, has_fg, has_bg = form_eq3(variant.form, src.float(), weights, labels,
                                                      self.hparams.cream_tau, keep)
                self._context_of(variant).update(labels, f_fg, f_bg, has_fg, has_bg, sync=True)

    def new_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters outside the pretrained backbone (the head, and what subclasses add).

        They train at ``lr * head_lr_multiplier``; subclasses extend this list. ACoL's / SPG's heads and
        the classifier are here unless the backbone's layout gives them the base lr (ResNet50).
        """
        return [p for p in self._head_parameters() if p.requires_grad] if self._head_at_new_lr() else []

    def _head_parameters(self) -> list[nn.Parameter]:
        head = [] if self.wsol_head is None else list(self.wsol_head.parameters())
        return list(self.classifier.parameters()) + head

    def _head_at_new_lr(self) -> bool:
        return self.wsol_head is None or bool(self.wsol_head.layout.new_lr)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        pretrained, new = self.backbone.parameter_groups()  # frozen parameters are left out
        if not self._head_at_new_lr():  # wsolevaluation's ResNet rule: only layer4 / fc at the x10 lr
            pretrained = pretrained + [p for p in self._head_parameters() if p.requires_grad]
        groups = [
            {"params": pretrained, "lr": hp.lr},
            {"params": list({id(p): p for p in new + self.new_parameters()}.values()),  # each once
             "lr": hp.lr * hp.head_lr_multiplier},
        ]
        groups = [g for g in groups if g["params"]]
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay, nesterov=hp.momentum > 0)
        else:
            opt = torch.optim.AdamW(groups, lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.lr_step_epochs <= 0:
            return {"optimizer": opt}
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=hp.lr_step_epochs, gamma=hp.lr_gamma)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    # -------------------------------------------------------------- evaluation
    def _eval_step(self, batch: dict[str, Any], stage: Stage) -> None:
        images, labels = batch["image"], batch["label"]
        feats, logits = self._labelled_features(images, labels)
        acc = self.val_acc if stage == "val" else self.test_acc
        acc.update(logits, labels)  # also the loss: summed over every rank's images, logged at the epoch's end
        # val: cream_selected's numbers are the winning candidate's (below); test uses the stored choice
        names = [n for n in self.available_methods() if not (stage == "val" and n == SELECTED)]
        maps = self.method_maps(feats.float(), labels, names)
        top1 = logits.argmax(1) == labels
        top5 = (logits.topk(min(5, logits.shape[1]), dim=1).indices == labels[:, None]).any(1)
        boxes, masks = batch.get("boxes"), batch.get("mask")
        search = stage == "val" and bool(self.cream_candidates) and self._searches_this_validation()
        candidate_maps = self.search_maps(feats, labels) if search else []
        # every method's and candidate's figures from one pass per map, on one thread pool
        scored = score_map_sets([m.detach().cpu() for m in (*maps.values(), *candidate_maps)], boxes, masks,
                                self._scoring_spec())
        records: dict[str, dict[str, np.ndarray]] = {}
        for name, figures in zip(maps, scored):
            _update_method_metrics(self.metrics[_metric_key(stage, name)], figures, boxes, masks, top1, top5)
            if self._records_method(name):
                records[name] = self._per_image_record(batch, figures, top1, top5)
        if records and not self.trainer.sanity_checking:
            self._per_image_parts.setdefault(stage, []).append(records)
        for metric, figures in zip(self.search_metrics, scored[len(maps):]):
            _update_method_metrics(metric, figures, boxes, masks, top1, top5)
        if stage == "val" and self.media_batch is None and self.hparams.num_media_images > 0:
            k = self.hparams.num_media_images
            self.media_batch = {
                "image": images[:k].detach().cpu(),
                "label": labels[:k].detach().cpu(),  # the overlays' GT class (before: every box read class_0)
                "boxes": None if boxes is None else [b.cpu() for b in boxes[:k]],
                "maps": {n: prepare_scoremaps(m[:k], size=self.hparams.eval_size).cpu() for n, m in maps.items() if n in ("cam", "cream")},
            }

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_epoch_start(self) -> None:
        self.media_batch = None
        self._per_image_parts.pop("val", None)

    def on_test_epoch_start(self) -> None:
        self._per_image_parts.pop("test", None)
        if self.cream_candidates and self.selected_cream is None:
            rank_zero_warn(f"cream_search is set but no validation run has selected CREAM's hyperparameters: "
                           f"{SELECTED!r} is left out of the test results (the test split never selects)")

    def on_validation_epoch_end(self) -> None:
        self._end_eval_epoch("val")
        if self.trainer.sanity_checking:
            self.media_batch = None  # reporting callbacks show real validation epochs only

    def on_test_epoch_end(self) -> None:
        self._end_eval_epoch("test")

    def _end_eval_epoch(self, stage: Stage) -> None:
        acc = self.val_acc if stage == "val" else self.test_acc
        results: dict[str, Any] = {"cls_acc": None, "methods": {}}
        if acc.total.item() > 0:
            top1, top5 = acc.compute()
            results["cls_acc"], results["top5_cls_acc"] = float(top1), float(top5)
            self.log(f"{stage}/loss", acc.mean_loss())  # the mean over images (not over ranks' means: DDP-exact)
            self.log(f"{stage}/cls_acc", top1)
            self.log(f"{stage}/top5_cls_acc", top5)
        acc.reset()
        for i, name in enumerate(self.method_names):
            if name == SELECTED:
                res = self._select_on_val(i, results) if stage == "val" else self._compute_selected(stage, i)
                if res is None:
                    continue
            else:
                res = self._compute_method(stage, i, name)
            results["methods"][name] = res
            for key, value in res.items():
                if isinstance(value, float) and math.isfinite(value):
                    self.log(f"{stage}/{name}/{key}", value)
        if not self.trainer.sanity_checking:
            if stage == "test":
                results["checkpoint"] = self.checkpoint_rule()
            self.last_results[stage] = results
            parts = self._per_image_parts.pop(stage, [])
            if parts:
                self.per_image[stage] = self._finish_per_image(parts, results["methods"])

    # ------------------------------------------------------- cream_search (val selection)
    def setup(self, stage: str) -> None:
        trainer = self._trainer
        self.preflight(stage, trainer, getattr(trainer, "datamodule", None) if trainer is not None else None)

    def preflight(self, stage: str, trainer: Any, datamodule: Any) -> None:
        """Refuse, in one line, a trainer or data module this model cannot run ``stage`` (``fit``, ``validate``,
        ``test``) with. ``setup`` calls it; ``cream-pl`` calls it earlier too, before the trainer starts its logger
        and saves its config (a refusal in ``setup`` left an empty W&B run and a ``config.yaml`` behind)."""
        self._check_eval_size(datamodule)
        if stage == "fit" and trainer is not None:
            self._check_search_epochs(trainer)
            self._check_update_start(trainer)

    def _check_eval_size(self, datamodule: Any) -> None:
        """The maps are scored against the data's boxes and masks: refuse, before any work, a data module that builds
        them at another size than the model's maps (before: a full epoch trained, then validation failed)."""
        size = dict(getattr(datamodule, "hparams", None) or {}).get("eval_size")
        if isinstance(size, int):
            check_eval_sizes(int(self.hparams.eval_size), size)

    def _check_search_epochs(self, trainer: Any) -> None:
        """``cream_search_epochs="last"`` selects in the validation after epoch ``max_epochs - 1`` only, so
        refuse, before any training, a fit whose tested checkpoint may come from another epoch (a
        monitored ``ModelCheckpoint``: the best val epoch) or that may end without that validation
        (early stopping, ``max_steps``, no ``max_epochs``, ``check_val_every_n_epoch`` not dividing it):
        its ``cream_selected`` would silently be missing at test.
        """
        if not self.cream_candidates or self.hparams.get("cream_search_epochs", "all") != "last":
            return
        why = None
        monitored = [cb.monitor for cb in trainer.checkpoint_callbacks if getattr(cb, "monitor", None) is not None]
        if monitored:
            why = (f"a ModelCheckpoint monitors {monitored[0]!r}, so the kept checkpoint may come from an earlier "
                   "epoch, which has no cream_selected; keep the last epoch's checkpoint (no monitor, the WSOL "
                   "benchmark's rule)")
        elif trainer.early_stopping_callbacks:
            why = "early stopping may end the fit before that validation"
        elif trainer.max_epochs is None or trainer.max_epochs < 1:
            why = "the fit has no max_epochs, so no validation is known to be the last"
        elif trainer.max_steps not in (None, -1):
            why = f"max_steps={trainer.max_steps} may end the fit before the last epoch"
        elif trainer.max_epochs % (trainer.check_val_every_n_epoch or 1) != 0:
            why = (f"check_val_every_n_epoch={trainer.check_val_every_n_epoch} skips the validation after epoch "
                   f"{trainer.max_epochs}")
        if why is not None:
            raise UserValueError(
                f"cream_search_epochs='last' selects CREAM's hyperparameters only in the validation after the last "
                f"epoch (max_epochs={trainer.max_epochs}), but {why}; use cream_search_epochs='all' or change the "
                "trainer")

    def _check_update_start(self, trainer: Any) -> None:
        """Refuse a fit whose last epoch comes before ``cream_update_start_epoch``: its embeddings would never
        learn, so every CREAM map would come from their random start (before: scored without a word)."""
        start = int(self.hparams.cream_update_start_epoch)
        last = trainer.max_epochs
        if self.context is not None and start > 0 and last is not None and 0 <= last <= start:
            raise UserValueError(f"cream_update_start_epoch={start} but the fit's last epoch is {last - 1} (epochs "
                                 f"count from 0; trainer.max_epochs={last}): CREAM's context embeddings would never "
                                 "be updated; lower cream_update_start_epoch or train longer")

    def _searches_this_validation(self) -> bool:
        """Whether this validation scores the ``cream_search`` grid (see ``cream_search_epochs``)."""
        if self.hparams.get("cream_search_epochs", "all") == "all":
            return True
        trainer = self._trainer
        if trainer is None or trainer.state.fn != "fit":
            return True  # a stand-alone validate always selects
        last = trainer.max_epochs
        return last is not None and last > 0 and trainer.current_epoch >= last - 1

    def _select_on_val(self, index: int, results: dict[str, Any]) -> dict[str, Any] | None:
        """Score every candidate on this val epoch, store the first best, return its full numbers."""
        try:
            scored = [_selection_score(m) for m in self.search_metrics]
            if not scored or all(not math.isfinite(s) for s, _ in scored):
                return None
            best = select_first_best([s for s, _ in scored])
            res = self._compute_metric_set(self.search_metrics[best], "val", index)
        finally:  # every candidate's states start the next val epoch empty
            for m in self.search_metrics:
                _reset_metric_set(m)
        c = self.cream_candidates[best]
        score, metric_name = scored[best]
        results["cream_search"] = {
            "metric": metric_name,
            "scores": {cand.name: s for cand, (s, _) in zip(self.cream_candidates, scored)},
            "selected": c.name,
        }
        if not self.trainer.sanity_checking:
            getattr(self, _CHOICE).copy_(choice_values(c, score, metric_name))
            if hasattr(self, _CHOICE_VARIANT):
                getattr(self, _CHOICE_VARIANT).fill_(float([v.name for v in self.cream_variants].index(c.variant)))
            rank_zero_info(f"cream_search: selected {c.name} on val ({metric_name} {score:.2f}; "
                           f"{len(self.cream_candidates)} candidates, ties to the earlier)")
        for cand, (s, _) in zip(self.cream_candidates, scored):
            if math.isfinite(s):
                self.log(f"val/cream_search/{cand.name}", s)
        return {**res, **_selection_fields(c, score)}

    def _compute_selected(self, stage: Stage, index: int) -> dict[str, Any] | None:
        choice = self.selected_cream
        if choice is None:
            return None
        c = self._selected_candidate()
        assert c is not None
        res = self._compute_method(stage, index, SELECTED)
        return {**res, **_selection_fields(c, choice["val_score"])}

    def _compute_method(self, stage: Stage, index: int, name: str) -> dict[str, Any]:
        return self._compute_metric_set(self.metrics[_metric_key(stage, name)], stage, index)

    def _compute_metric_set(self, metric: nn.ModuleDict, stage: Stage, index: int) -> dict[str, Any]:
        res: dict[str, Any] = {}
        if metric["box_v2"].update_count > 0:
            v2 = metric["box_v2"].compute()
            v1 = metric["loc"].compute()
            res["max_box_acc_v2"] = float(v2["max_box_acc"])
            for iou, value in v2["max_box_acc_iou"].items():
                res[f"max_box_acc_iou{iou}"] = float(value)
            res["max_box_acc"] = v1["max_box_acc"]
            res["best_threshold_iou50"] = v1["best_threshold"]
            res["curves"] = {"thresholds": v2["thresholds"], "box_acc": v2["box_acc_curve"], "iou_levels": list(self.hparams.iou_thresholds)}
            if stage == "val" and not self.trainer.sanity_checking:
                self.val_best_threshold[index] = res["best_threshold_iou50"]
            tau, tau_source = self._loc_threshold(index, res["best_threshold_iou50"])
            res.update(accuracy_at(v1, tau))
            res["loc_threshold"] = tau
            res["loc_threshold_source"] = tau_source
        if metric["pxap"].update_count > 0:
            res["pxap"] = float(metric["pxap"].compute())
        _reset_metric_set(metric)
        return res

    # ------------------------------------------------------- per-image records (bootstrap)
    def _records_method(self, name: str) -> bool:
        wanted = self.hparams.get("record_per_image", False)
        return bool(wanted) if isinstance(wanted, bool) else name in wanted

    def _per_image_record(
        self, batch: dict[str, Any], figures: ScoredMaps, top1: Tensor, top5: Tensor
    ) -> dict[str, np.ndarray]:
        """One batch's per-image outcomes of one method, from the metrics' own scored figures."""
        rec = {
            "index": batch["index"].detach().cpu().numpy().astype(np.int64),
            "top1": top1.detach().cpu().numpy().astype(bool),
            "top5": top5.detach().cpu().numpy().astype(bool),
        }
        if figures.best_iou is not None and figures.v1_ok is not None:
            rec["best_iou"] = figures.best_iou  # all contours, per threshold
            rec["v1_hit50"] = figures.v1_ok  # the LocalizationCurve decision (largest contour, IoU >= 0.5)
        return rec

    def _scoring_spec(self) -> ScoringSpec:
        """What the metrics need from every map (per-image IoUs only when some method keeps records)."""
        hp = self.hparams
        wanted = hp.get("record_per_image", False)
        key = (hp.cam_curve_interval, tuple(hp.iou_thresholds), hp.eval_size, bool(wanted))
        if getattr(self, "_spec_key", None) != key:
            self._spec = ScoringSpec(cam_interval=hp.cam_curve_interval, iou_thresholds=tuple(hp.iou_thresholds),
                                     v1_iou=50, size=hp.eval_size, per_image_iou=bool(wanted))
            self._spec_key = key
        return self._spec

    def _finish_per_image(
        self, parts: list[dict[str, dict[str, np.ndarray]]], methods: dict[str, dict[str, Any]]
    ) -> dict[str, dict[str, np.ndarray]]:
        thr = cam_thresholds(self.hparams.cam_curve_interval)
        out: dict[str, dict[str, np.ndarray]] = {}
        for name in parts[0]:
            rec = {k: np.concatenate([p[name][k] for p in parts]) for k in parts[0][name]}
            rec["thresholds"] = thr.copy()
            rec["iou_thresholds"] = np.asarray(self.hparams.iou_thresholds, dtype=np.float64)
            tau = methods.get(name, {}).get("loc_threshold")
            if "v1_hit50" in rec and tau is not None:  # the column accuracy_at reads
                col = int(np.argmin(np.abs(thr - float(tau))))
                rec["loc_threshold"] = np.float64(tau)
                rec["gt_known"] = rec["v1_hit50"][:, col].copy()
                rec["top1_loc"] = rec["gt_known"] & rec["top1"]
                rec["top5_loc"] = rec["gt_known"] & rec["top5"]
            out[name] = rec
        return out

    def _loc_threshold(self, index: int, split_best: float) -> tuple[float, str]:
        if self.hparams.loc_threshold is not None:
            return float(self.hparams.loc_threshold), "fixed"
        val_tau = float(self.val_best_threshold[index])
        if math.isfinite(val_tau):
            return val_tau, "val"
        return split_best, "oracle"

    # ---------------------------------------------------------------- predict
    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """Ground-truth-class maps of every method at the evaluation size (pseudo boxes, localize)."""
        labels = batch["label"]
        feats, logits = self._labelled_features(batch["image"], labels)
        available = self.available_methods()
        maps = self.method_maps(feats.float(), labels, [n for n in ("cam", "cream", SELECTED) if n in available])
        return {
            "index": batch["index"],
            "image_id": batch["image_id"],
            "orig_size": batch["orig_size"],
            "label": labels,
            "logits": logits,
            "scoremaps": {n: prepare_scoremaps(m, size=self.hparams.eval_size) for n, m in maps.items()},
        }


def _metric_key(stage: str, method: str) -> str:
    return f"{stage}_{method}".replace(".", "_")


def _update_method_metrics(
    metric: nn.ModuleDict, scoremaps: ScoredMaps, boxes: Any, masks: Any, top1: Tensor, top5: Tensor
) -> None:
    if boxes is not None:
        metric["box_v2"].update(scoremaps, boxes)
        metric["loc"].update(scoremaps, boxes, top1, top5)
    if masks is not None:
        metric["pxap"].update(scoremaps, masks)


def _reset_metric_set(metric: nn.ModuleDict) -> None:
    for m in metric.values():
        m.reset()


def _selection_score(metric: nn.ModuleDict) -> tuple[float, str]:
    """The protocol metric of a candidate: MaxBoxAccV2 where the split has boxes, else PxAP (NaN: no data)."""
    if metric["box_v2"].update_count > 0:
        return float(metric["box_v2"].compute()["max_box_acc"]), "max_box_acc_v2"
    if metric["pxap"].update_count > 0:
        return float(metric["pxap"].compute()), "pxap"
    return float("nan"), ""


def _selection_fields(c: CreamCandidate, score: float) -> dict[str, Any]:
    """The chosen values, logged next to cream_selected's metrics (floats) and kept in the results."""
    fields = {"T": float(c.iterations), "kappa": c.kappa, "lambda": c.lam, "feature_norm": c.feature_norm,
              "feature_norm_l2": float(c.feature_norm == "l2"), "val_score": float(score)}
    if c.variant:
        fields["variant"] = c.variant
    return fields


class _TopKAccuracy(nn.Module):
    """Top-1 / top-5 classification accuracy and the mean cross-entropy, with sum states (DDP-safe via
    torchmetrics: a split that the ranks share unevenly still gives the mean over its images)."""

    def __init__(self) -> None:
        super().__init__()
        from torchmetrics import SumMetric

        self.correct1 = SumMetric()
        self.correct5 = SumMetric()
        self.count = SumMetric()
        self.loss_sum = SumMetric(nan_strategy="disable")  # a diverged model's NaN loss stays NaN (default: dropped)

    @property
    def total(self) -> Tensor:
        return self.count.sum_value

    def update(self, logits: Tensor, labels: Tensor) -> None:
        k = min(5, logits.shape[1])
        self.correct1.update((logits.argmax(1) == labels).sum().double())
        self.correct5.update((logits.topk(k, 1).indices == labels[:, None]).any(1).sum().double())
        self.count.update(torch.tensor(float(labels.shape[0]), dtype=torch.float64))
        self.loss_sum.update(F.cross_entropy(logits.float(), labels, reduction="sum").double())

    def compute(self) -> tuple[Tensor, Tensor]:
        n = self.count.compute().clamp_min(1.0)
        return 100.0 * self.correct1.compute() / n, 100.0 * self.correct5.compute() / n

    def mean_loss(self) -> Tensor:
        return (self.loss_sum.compute() / self.count.compute().clamp_min(1.0)).float()

    def reset(self) -> None:
        for m in (self.correct1, self.correct5, self.count, self.loss_sum):
            m.reset()
