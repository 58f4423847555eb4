"""Val-split selection of CREAM's inference-time hyperparameters (T, κ, λ, M-step feature norm).

The WSOL protocol chooses every hyperparameter, inference-time ones included, on the fully
supervised **val** split, never on test. CREAM's EM iterations ``T``, concentration ``κ``, the
momentum ``λ`` (among the embeddings tracked during training: ``cream_lambda`` +
``ablation_lambdas``) and the M-step feature norm change nothing in training, so one trained
network can score a grid of them on val at the cost of extra EM runs and metric updates: the
backbone runs once per image and every candidate's maps come from the pure function
:func:`cream_pl.models.cream.cream_maps` on the same features.

Cost: ``python -m cream_pl.pipelines.bench --only cream_search`` (and ``make bench``) measures a whole val
epoch with and without the embedded recipe's grid (90 candidates; the ``cream_search`` row of ``results/bench.json``).
Two things make it cheap: :func:`candidate_maps` runs the EM of every candidate as one batch of runs
(:func:`~cream_pl.models.cream.cream_em_runs`: one run per (λ, κ, feature norm), every T read off the
longest run; about 2 ms per val image for the 90 candidates), and the classifier scores every
candidate's maps in one pass per map on a thread pool
(:func:`~cream_pl.metrics.scored_maps.score_map_sets`: MaxBoxAccV2, the largest-contour curve and PxAP
from one component-tree pass). What remains is mostly that pass over each 224x224 map (each
pixel joins one neighbour per local group, looked up by its neighbours' occupancy), the protocol's resize
and min-max (fused with the grey levels), PxAP's histograms, and the largest-contour traces of the
levels whose contours the pass cannot order by area. The test split never runs the search.

This module holds the typed search space, the candidate grid and the pure pieces of the
selection (candidate maps, the first-best rule); :class:`~cream_pl.models.classifier.WSOLClassifier`
wires them into its val epoch and reports the winner as the method ``cream_selected``.

The choice is stored as its **values** (:data:`CHOICE_FIELDS`: T, κ, λ, feature norm, val score,
val metric), not as an index into the grid, so a checkpoint evaluated under another
``cream_search`` grid applies the candidate that val chose (:func:`choice_values`,
:func:`choice_candidate`). Checkpoints that stored only the index (``cream_selection``) are converted
on load with the grid of their own hyperparameters (:func:`legacy_choice_values`).

Example:
    >>> space = CreamSearchSpace.from_config({"iterations": [1, 2], "kappa": [8, 16], "lambda": [0.8]})
    >>> cands = space.candidates(tracked_lambdas=(0.8, 0.6), default_iterations=2, default_kappa=8.0,
    ...                          default_feature_norm="raw")
    >>> [c.name for c in cands]
    ['T1_kappa8_lambda0.8_raw', 'T1_kappa16_lambda0.8_raw', 'T2_kappa8_lambda0.8_raw', 'T2_kappa16_lambda0.8_raw']
    >>> select_first_best([30.0, 32.5, 32.5, float("nan")])
    1
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from cream_pl.core.errors import UserValueError
from cream_pl.models.cream import calibrate, cream_em_runs, cream_maps

__all__ = [
    "CHOICE_FIELDS",
    "SCORE_METRICS",
    "CreamCandidate",
    "CreamSearchSpace",
    "SEARCH_KEYS",
    "candidate_maps",
    "choice_candidate",
    "choice_values",
    "grid_from_hparams",
    "legacy_choice_values",
    "select_first_best",
    "tracked_lambda_index",
]

#: keys a recipe may give in ``cream_search`` (each a value or a list of values); ``variant``: the WSOL
#: method's CREAM variants (:mod:`cream_pl.models.cream_variants`, e.g. ACoL's ``branches`` / ``fused``)
SEARCH_KEYS = ("iterations", "kappa", "lambda", "feature_norm", "variant")
_NORMS = ("raw", "l2")
#: the val metrics a choice can be scored by (MaxBoxAccV2 where the split has boxes, else PxAP)
SCORE_METRICS = ("max_box_acc_v2", "pxap")
#: the stored choice, in order (float64 buffer ``cream_selected_values``; NaN: no choice yet)
CHOICE_FIELDS = ("T", "kappa", "lambda", "feature_norm_l2", "val_score", "val_metric")


@dataclass(frozen=True)
class CreamCandidate:
    """One point of the grid. ``lambda_index`` indexes the tracked embeddings (``ContextEmbeddings``)."""

    iterations: int
    kappa: float
    lam: float
    lambda_index: int
    feature_norm: str
    variant: str = ""  # the CREAM variant of the WSOL method ("": a method with one)

    @property
    def name(self) -> str:
        base = f"T{self.iterations}_kappa{self.kappa:g}_lambda{self.lam:g}_{self.feature_norm}"
        return f"{base}_{self.variant}" if self.variant else base

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"T": self.iterations, "kappa": self.kappa, "lambda": self.lam,
                               "feature_norm": self.feature_norm}
        if self.variant:
            out["variant"] = self.variant
        return out


def _as_tuple(value: Any, key: str) -> tuple[Any, ...]:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return (value,)
    if isinstance(value, Iterable):
        out = tuple(value)
        if not out:
            raise ValueError(f"cream_search[{key!r}] must name at least one value, got an empty list")
        return out
    raise ValueError(f"cream_search[{key!r}] must be a value or a list of values, got {value!r}")


@dataclass(frozen=True)
class CreamSearchSpace:
    """Grid of CREAM inference-time hyperparameters; ``None`` on an axis keeps the model's own value.

    Args:
        iterations: EM iterations ``T`` (>= 0; 0 is plain CAM).
        kappa: EM concentrations ``κ`` (> 0).
        lambdas: momenta ``λ``; each must be tracked by the model (``cream_lambda`` or one of
            ``ablation_lambdas``), because the embeddings of an untracked λ do not exist.
        feature_norm: M-step features, ``"raw"`` and/or ``"l2"``.
        variant: CREAM variants of the model's WSOL method (names checked by the model).

    Candidates are the product in the order ``T`` × ``κ`` × ``λ`` × feature norm × variant, each axis in
    the order given; ties go to the earlier candidate.
    """

    iterations: tuple[int, ...] | None = None
    kappa: tuple[float, ...] | None = None
    lambdas: tuple[float, ...] | None = None
    feature_norm: tuple[str, ...] | None = None
    variant: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.iterations is not None:
            for t in self.iterations:
                if isinstance(t, bool) or not isinstance(t, int) or t < 0:
                    raise ValueError(f"cream_search['iterations'] must be integers >= 0, got {list(self.iterations)}")
        if self.kappa is not None:
            for k in self.kappa:
                if isinstance(k, bool) or not isinstance(k, (int, float)) or not (0 < k < math.inf):
                    raise ValueError(f"cream_search['kappa'] must be finite numbers > 0, got {list(self.kappa)}")
        if self.lambdas is not None:
            for lam in self.lambdas:
                if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= lam <= 1.0:
                    raise ValueError(f"cream_search['lambda'] must be numbers in [0, 1], got {list(self.lambdas)}")
        if self.feature_norm is not None:
            bad = [n for n in self.feature_norm if n not in _NORMS]
            if bad:
                raise ValueError(f"cream_search['feature_norm'] must be among {list(_NORMS)}, got {bad}")
        if self.variant is not None and any(not isinstance(v, str) or not v for v in self.variant):
            raise ValueError(f"cream_search['variant'] must be non-empty names, got {list(self.variant)}")
        for key, axis in zip(SEARCH_KEYS, (self.iterations, self.kappa, self.lambdas, self.feature_norm, self.variant)):
            if axis is not None and len(set(axis)) != len(axis):
                raise ValueError(f"cream_search[{key!r}] lists a value twice: {list(axis)}")

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | CreamSearchSpace) -> CreamSearchSpace:
        """From a recipe mapping ``{"iterations": [...], "kappa": [...], "lambda": [...], "feature_norm": [...]}``."""
        if isinstance(config, CreamSearchSpace):
            return config
        if not isinstance(config, Mapping):
            raise ValueError(f"cream_search must be a mapping with keys {list(SEARCH_KEYS)}, got {config!r}")
        unknown = sorted(set(config) - set(SEARCH_KEYS))
        if unknown:
            raise ValueError(f"cream_search: unknown key(s) {unknown}; allowed: {list(SEARCH_KEYS)}")
        if not config:
            raise ValueError(f"cream_search is empty; give at least one of {list(SEARCH_KEYS)} (or leave it unset)")

        def axis(key: str) -> tuple[Any, ...] | None:
            return None if config.get(key) is None else _as_tuple(config[key], key)

        lams = axis("lambda")
        kappas = axis("kappa")
        return cls(
            iterations=axis("iterations"),
            kappa=None if kappas is None else tuple(float(k) if not isinstance(k, bool) else k for k in kappas),
            lambdas=None if lams is None else tuple(float(v) if not isinstance(v, bool) else v for v in lams),
            feature_norm=axis("feature_norm"),
            variant=axis("variant"),
        )

    def candidates(
        self,
        tracked_lambdas: Sequence[float],
        default_iterations: int,
        default_kappa: float,
        default_feature_norm: str,
        default_variant: str = "",
    ) -> list[CreamCandidate]:
        """The grid, in its fixed order; missing axes take the model's value (λ: ``tracked_lambdas[0]``).

        Raises:
            ValueError: a λ that the model does not track.
        """
        tracked = [float(v) for v in tracked_lambdas]
        lams = self.lambdas if self.lambdas is not None else (tracked[0],)
        index = []
        for lam in lams:
            hits = [i for i, v in enumerate(tracked) if math.isclose(v, float(lam), rel_tol=0.0, abs_tol=1e-12)]
            if not hits:
                raise ValueError(
                    f"cream_search['lambda'] = {float(lam):g} is not tracked by the model (tracked λ: "
                    f"{[f'{v:g}' for v in tracked]}); add it to ablation_lambdas so its embeddings are learned"
                )
            index.append(hits[0])
        grid = itertools.product(
            self.iterations if self.iterations is not None else (int(default_iterations),),
            self.kappa if self.kappa is not None else (float(default_kappa),),
            list(zip(lams, index)),
            self.feature_norm if self.feature_norm is not None else (default_feature_norm,),
            self.variant if self.variant is not None else (default_variant,),
        )
        return [CreamCandidate(int(t), float(k), float(lam), int(i), str(n), str(v)) for t, k, (lam, i), n, v in grid]


def candidate_maps(
    feats: Tensor,
    cam: Tensor,
    class_ids: Tensor,
    embeddings: Sequence[tuple[Tensor, Tensor]],
    candidates: Sequence[CreamCandidate],
    tau: float,
    calibration: bool,
) -> list[Tensor]:
    """CREAM maps ``(B, h, w)`` of every candidate from one set of features (no backbone call).

    Each map is ``cream_maps(feats, cam, class_ids, E_fg, E_bg, T, κ, τ, feature norm, calibration)``
    up to float rounding: the EM of all candidates runs as one batch of runs
    (:func:`~cream_pl.models.cream.cream_em_runs`: one run per (λ, κ, feature norm), every T from the
    longest one), so the embedded grid's 90 candidates cost one batched EM of 3 steps.

    Args:
        feats: ``(B, K, h, w)`` features.
        cam: ``(B, h, w)`` raw CAM of ``class_ids``.
        class_ids: ``(B,)``.
        embeddings: ``(E_fg, E_bg)`` per tracked λ (indexed by ``CreamCandidate.lambda_index``).
        candidates: the grid.
        tau: CAM foreground threshold of the calibration.
        calibration: apply Eq. 10-11.
    """
    if not candidates:
        return []
    cam_n = cream_maps(feats, cam, class_ids, embeddings[0][0], embeddings[0][1], iterations=0)  # checks the shapes
    z: dict[tuple[int, float, str, int], Tensor] = {}
    runs = sorted({(c.lambda_index, c.kappa, c.feature_norm) for c in candidates if c.iterations > 0})
    if runs:
        mu_fg = torch.stack([embeddings[i][0][class_ids] for i, _, _ in runs])
        mu_bg = torch.stack([embeddings[i][1][class_ids] for i, _, _ in runs])
        kappa = torch.tensor([k for _, k, _ in runs], dtype=feats.dtype, device=feats.device)
        steps = cream_em_runs(feats, mu_fg, mu_bg, kappa, sorted({c.iterations for c in candidates if c.iterations > 0}),
                              [norm for _, _, norm in runs])  # type: ignore[misc]
        for t, z_t in steps.items():
            for run, z_fg in zip(runs, z_t):
                z[(*run, t)] = z_fg
    out = []
    for c in candidates:
        if c.iterations == 0:
            out.append(cam_n)
            continue
        z_fg = z[(c.lambda_index, c.kappa, c.feature_norm, c.iterations)]
        out.append((calibrate(z_fg, cam_n, tau) if calibration else z_fg) + cam_n)
    return out


def select_first_best(scores: Sequence[float]) -> int:
    """Index of the highest score; ties go to the earliest; NaN never wins (all NaN -> 0)."""
    best, best_score = 0, -math.inf
    for i, s in enumerate(scores):
        if math.isfinite(s) and s > best_score:
            best, best_score = i, s
    return best


# ----------------------------------------------------------------------------- the stored choice
def tracked_lambda_index(lam: float, tracked_lambdas: Sequence[float]) -> int | None:
    """Index of ``lam`` among the model's tracked λ (exact up to 1e-12), or ``None``."""
    for i, v in enumerate(tracked_lambdas):
        if math.isclose(float(v), float(lam), rel_tol=0.0, abs_tol=1e-12):
            return i
    return None


def choice_values(candidate: CreamCandidate | None, score: float = math.nan, metric: str = "") -> Tensor:
    """The stored form of a choice: float64 ``(len(CHOICE_FIELDS),)``, all NaN for ``None`` (no choice)."""
    if candidate is None:
        return torch.full((len(CHOICE_FIELDS),), math.nan, dtype=torch.float64)
    return torch.tensor([candidate.iterations, candidate.kappa, candidate.lam, float(candidate.feature_norm == "l2"),
                         score, SCORE_METRICS.index(metric)], dtype=torch.float64)


def choice_candidate(values: Tensor, tracked_lambdas: Sequence[float]) -> CreamCandidate | None:
    """The candidate that stored ``values`` name, its λ indexed among ``tracked_lambdas`` (``None``: no choice).

    Raises:
        UserValueError: the stored λ is not tracked (its embeddings do not exist in this model).
    """
    v = [float(x) for x in values.detach().cpu().tolist()]
    if math.isnan(v[0]):
        return None
    index = tracked_lambda_index(v[2], tracked_lambdas)
    if index is None:
        raise UserValueError(
            f"the val-selected CREAM (cream_selected) has lambda {v[2]:g}, which this model does not track "
            f"(tracked lambda: {[f'{x:g}' for x in tracked_lambdas]}): its context embeddings do not exist here; "
            "evaluate the checkpoint with its own hyperparameters (cream_lambda / ablation_lambdas)")
    return CreamCandidate(int(v[0]), v[1], v[2], index, "l2" if v[3] == 1.0 else "raw")


def grid_from_hparams(hparams: Mapping[str, Any]) -> list[CreamCandidate]:
    """The ``cream_search`` grid a model with these hyperparameters builds (``[]`` without ``cream_search``)."""
    search = hparams.get("cream_search")
    if search is None:
        return []
    lambdas = (float(hparams.get("cream_lambda", 0.8)), *[float(v) for v in hparams.get("ablation_lambdas", ()) or ()])
    return CreamSearchSpace.from_config(search).candidates(
        lambdas, int(hparams.get("cream_iterations", 2)), float(hparams.get("cream_kappa", 8.0)),
        str(hparams.get("cream_feature_norm", "raw")))


def legacy_choice_values(selection: Tensor, score: Tensor, hparams: Mapping[str, Any]) -> Tensor:
    """Convert an index-only choice (``cream_selection = [candidate index, metric index]``, checkpoints
    before the values were stored) with the grid of the checkpoint's own ``hparams``.

    Raises:
        UserValueError: the index does not resolve in that grid.
    """
    index, metric = (int(x) for x in selection.detach().cpu().tolist()[:2])
    if index < 0:
        return choice_values(None)
    grid = grid_from_hparams(hparams)
    if not 0 <= index < len(grid) or not 0 <= metric < len(SCORE_METRICS):
        raise UserValueError(
            f"the checkpoint stores its val-selected CREAM as candidate {index} of a cream_search grid, but its own "
            f"hyperparameters give {len(grid)} candidates: the choice cannot be recovered; run validate to select again")
    return choice_values(grid[index], float(score), SCORE_METRICS[metric])
