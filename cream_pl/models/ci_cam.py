"""CI-CAM (Shao et al., ACM MM 2021): causal context pool, causal intervention, combinational CAM.

What the official code does (spec ``kd_ci_cam.md`` §2), backbone-agnostic:

* up branch: ``z_up = Linear(GAP(F))``, ``CAM_up = W F`` (all classes, no bias), ``ĉ = argmax z_up``;
* causal intervention: the context pool ``P`` (``C x h x w``, one spatial map per class) gives
  ``A_b = W_a[:, ĉ_b] P[ĉ_b] + b_a`` (``K`` channels) and ``F' = F + A ⊙ F = F ⊙ (1 + A)``;
* down branch: ``z_down = Linear(GAP(F'))`` with the **same** linear layer, ``CAM_down = W F'``;
* loss ``CE(z_up) + CE(z_down)``;
* after every training forward (no gradient): ``S_c = Σ CAM_up,i[c]`` over the correctly
  classified samples of class ``c``, then ``P ← N(P + η N(S))`` with ``N`` the per-class spatial
  z-score (``η = 0.01``).

The pool is a persistent buffer here (the official code pickles it beside the checkpoint; losing
that file silently turns the intervention into ``A = bias``).

Example:
    >>> import torch
    >>> head = CICAMHead(num_classes=3, num_features=8, pool_size=4)
    >>> classifier = torch.nn.Linear(8, 3)
    >>> feats = torch.rand(2, 8, 4, 4)
    >>> out = head(feats, classifier)
    >>> torch.equal(out.features_down, feats)  # zero pool + zero bias: identity at init
    True
    >>> labels = torch.tensor([0, 2])
    >>> head.update_pool(feats, classifier, labels, out.logits_up, rate=0.01)
    >>> ci_cam_loss(out.logits_up, out.logits_down, labels).ndim
    0
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from cream_pl.models.cam import all_class_activation_maps, class_activation_maps

__all__ = [
    "CCAMFunction",
    "CICAMHead",
    "CICAMOutput",
    "CausalIntervention",
    "NonLocalBlock",
    "ci_cam_loss",
    "combinational_cam",
    "context_pool_update_sums",
    "spatial_standardize",
    "update_context_pool",
]

CCAMFunction = Literal["quadratic", "linear", "sum_1", "sum_2", "mean"]
_CCAM_FUNCTIONS = ("quadratic", "linear", "sum_1", "sum_2", "mean")


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 1 or w < 1:
        raise ValueError(f"pool_size must be positive, got {size}")
    return int(h), int(w)


# ----------------------------------------------------------------------------- context pool math
def spatial_standardize(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Per-class spatial z-score ``N(x) = (x - mean_hw) / sqrt(var_hw + eps)`` (biased variance).

    Equals ``nn.BatchNorm2d(C)`` in train mode (weight 1, bias 0) applied to ``x[None]``, which is
    how the official code normalises the pool. An all-zero (or constant) channel maps to 0.
    Low-precision inputs are computed in float32 and cast back.

    Args:
        x: ``(C, h, w)`` maps.
        eps: added to the variance (BatchNorm default).

    Example:
        >>> out = spatial_standardize(torch.tensor([[[1.0, 3.0]], [[0.0, 0.0]]]))
        >>> out.round(decimals=4)
        tensor([[[-1.,  1.]],
        <BLANKLINE>
                [[ 0.,  0.]]])
    """
    if x.ndim != 3:
        raise ValueError(f"x must be (C, h, w), got shape {tuple(x.shape)}")
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    mean = xf.mean(dim=(1, 2), keepdim=True)
    var = xf.var(dim=(1, 2), unbiased=False, keepdim=True)
    return ((xf - mean) / torch.sqrt(var + eps)).to(x.dtype)


def context_pool_update_sums(cams_up: Tensor, labels: Tensor, preds: Tensor, num_classes: int) -> Tensor:
    """Per-class sum ``S_c`` of the ground-truth-class up-branch CAM over correctly classified samples.

    ``S_c = Σ_{i : y_i = c and ĉ_i = c} CAM_up,i[c]`` (raw CAM, feature resolution). Classes without
    a correct sample get an all-zero map. The result carries no gradient.

    Args:
        cams_up: ``(B, C, h, w)`` all-class up-branch CAMs, or ``(B, h, w)`` maps already taken at
            the ground-truth class of each sample (cheaper for large ``C``).
        labels: ``(B,)`` ground-truth classes.
        preds: ``(B,)`` up-branch top-1 predictions.
        num_classes: ``C``.

    Returns:
        ``(C, h, w)`` sums, float32 or wider.

    Example:
        >>> cams = torch.ones(3, 2, 2)  # GT-class maps of 3 samples
        >>> s = context_pool_update_sums(cams, torch.tensor([1, 1, 0]), torch.tensor([1, 0, 0]), 2)
        >>> s[:, 0, 0]  # sample 1 is misclassified and does not count
        tensor([1., 1.])
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if cams_up.ndim not in (3, 4):
        raise ValueError(f"cams_up must be (B, C, h, w) or (B, h, w), got shape {tuple(cams_up.shape)}")
    b = cams_up.shape[0]
    if labels.shape != (b,) or preds.shape != (b,):
        raise ValueError(
            f"labels and preds must be ({b},), got {tuple(labels.shape)} and {tuple(preds.shape)}"
        )
    if cams_up.ndim == 4 and cams_up.shape[1] != num_classes:
        raise ValueError(f"cams_up has {cams_up.shape[1]} class maps but num_classes is {num_classes}")
    if b and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels must be in [0, {num_classes}), got range [{int(labels.min())}, {int(labels.max())}]"
        )
    labels = labels.to(cams_up.device).long()
    cams = cams_up.detach()
    gt_maps = cams[torch.arange(b, device=cams.device), labels] if cams.ndim == 4 else cams
    dtype = torch.promote_types(gt_maps.dtype, torch.float32)
    correct = labels == preds.to(labels.device)
    sums = gt_maps.new_zeros((num_classes, *gt_maps.shape[1:]), dtype=dtype)
    return sums.index_add_(0, labels[correct], gt_maps[correct].to(dtype))


def update_context_pool(pool: Tensor, sums: Tensor, rate: float = 0.01, eps: float = 1e-5) -> Tensor:
    """One context-pool step ``P ← N(P + η · N(S))`` (returns the new pool; inputs are untouched).

    Under DDP the caller must all-reduce ``sums`` (``SUM``) across ranks *before* calling this, so
    that every rank applies the identical update and the result equals one process that saw the
    whole global batch (``N`` is not additive, so updating per rank and averaging would differ).
    ``CausalIntervention.update(..., sync=True)`` does that all-reduce.

    Args:
        pool: ``(C, h, w)`` current pool ``P``.
        sums: ``(C, h, w)`` per-class sums ``S`` from :func:`context_pool_update_sums`.
        rate: update rate ``η`` (official default 0.01).
        eps: variance epsilon of ``N``.

    Example:
        >>> p = update_context_pool(torch.zeros(2, 3, 3), torch.rand(2, 3, 3))
        >>> bool(p.mean((1, 2)).abs().max() < 1e-6)
        True
    """
    if pool.ndim != 3 or sums.shape != pool.shape:
        raise ValueError(
            f"pool and sums must both be (C, h, w) of the same shape, got {tuple(pool.shape)} and {tuple(sums.shape)}"
        )
    if not math.isfinite(rate) or rate < 0:
        raise ValueError(f"rate must be a finite value >= 0, got {rate}")
    return spatial_standardize(pool + rate * spatial_standardize(sums.to(pool.dtype), eps), eps)


# ----------------------------------------------------------------------------- modules
class CausalIntervention(nn.Module):
    """Context pool + ``mask2attention``: ``F' = F ⊙ (1 + A)``, ``A_b = W[:, ĉ_b] P[ĉ_b] + b``.

    ``W`` (``K x C``) and ``b`` (``K``) are the official ``Conv2d(C, K, 1)`` applied to a one-hot
    (over classes) tensor that holds ``P[ĉ_b]`` in channel ``ĉ_b``; indexing gives the same result
    without building that dense ``B x C x h x w`` tensor. ``W`` uses the conv's default init;
    **the bias starts at 0 (our choice; the official bias is default-initialised)**, so with the
    initial all-zero pool the intervention is exactly the identity.

    If the feature map size differs from the pool size (e.g. evaluation at another resolution), the
    selected pool maps are resized bilinearly (``align_corners=False``) to the feature size.

    Args:
        num_classes: ``C``.
        num_features: ``K`` (channels of the backbone feature map).
        pool_size: ``(h, w)`` of the training feature map (14 for VGG16 at 224, 17 for Inception at 299).

    Example:
        >>> ci = CausalIntervention(num_classes=5, num_features=4, pool_size=(3, 3))
        >>> ci(torch.rand(2, 4, 3, 3), torch.tensor([0, 4])).shape
        torch.Size([2, 4, 3, 3])
        >>> "context_pool" in ci.state_dict()
        True
    """

    context_pool: Tensor
    num_updates: Tensor

    def __init__(self, num_classes: int, num_features: int, pool_size: int | tuple[int, int]) -> None:
        super().__init__()
        if num_classes < 1 or num_features < 1:
            raise ValueError(f"num_classes and num_features must be >= 1, got {num_classes}, {num_features}")
        self.num_classes = num_classes
        self.num_features = num_features
        self.pool_size = _pair(pool_size)
        self.register_buffer("context_pool", torch.zeros(num_classes, *self.pool_size), persistent=True)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long), persistent=True)
        self.weight = nn.Parameter(torch.empty(num_features, num_classes))
        self.bias = nn.Parameter(torch.zeros(num_features))
        # same as nn.Conv2d(C, K, 1).reset_parameters() for the weight (fan_in = C)
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, num_features={self.num_features}, pool_size={self.pool_size}"

    def attention(self, class_idx: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """``A`` of shape ``(B, K, h, w)`` for the intervention classes ``class_idx`` (``(B,)``)."""
        if class_idx.ndim != 1:
            raise ValueError(f"class_idx must be (B,), got shape {tuple(class_idx.shape)}")
        if class_idx.numel() and (int(class_idx.min()) < 0 or int(class_idx.max()) >= self.num_classes):
            raise ValueError(f"class_idx must be in [0, {self.num_classes}), got {class_idx.tolist()}")
        idx = class_idx.to(self.context_pool.device).long()
        maps = self.context_pool[idx].to(self.weight.dtype)  # (B, ph, pw)
        if size is not None and tuple(size) != self.pool_size:
            maps = F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
        return torch.einsum("kb,bhw->bkhw", self.weight[:, idx], maps) + self.bias[None, :, None, None]

    def forward(self, features: Tensor, class_idx: Tensor) -> Tensor:
        """Intervened features ``F' = F + A ⊙ F``.

        Args:
            features: ``(B, K, h, w)`` backbone feature map ``F``.
            class_idx: ``(B,)`` class whose pool map is used (CI-CAM: the up-branch top-1 ``ĉ``).
        """
        if features.ndim != 4 or features.shape[1] != self.num_features:
            raise ValueError(
                f"features must be (B, {self.num_features}, h, w), got shape {tuple(features.shape)}"
            )
        if class_idx.shape != (features.shape[0],):
            raise ValueError(f"class_idx must be ({features.shape[0]},), got shape {tuple(class_idx.shape)}")
        attn = self.attention(class_idx, size=(features.shape[2], features.shape[3]))
        return features + attn.to(features.dtype) * features

    @torch.no_grad()
    def update(self, sums: Tensor, rate: float = 0.01, sync: bool = True) -> None:
        """Apply ``P ← N(P + η N(S))`` in place.

        Args:
            sums: ``(C, h, w)`` local per-class sums from :func:`context_pool_update_sums`.
            rate: update rate ``η``.
            sync: when a process group with more than one rank is initialised, all-reduce ``sums``
                (``SUM``) first so every rank applies the same update. Every rank must call this
                the same number of times (it is a collective).
        """
        if sums.shape != self.context_pool.shape:
            raise ValueError(
                f"sums must have the pool shape {tuple(self.context_pool.shape)}, got {tuple(sums.shape)}"
            )
        sums = sums.detach().to(self.context_pool.device, self.context_pool.dtype)
        if sync and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            sums = sums.clone()
            dist.all_reduce(sums, op=dist.ReduceOp.SUM)
        self.context_pool.copy_(update_context_pool(self.context_pool, sums, rate))
        self.num_updates += 1


class CICAMOutput(NamedTuple):
    """Output of :class:`CICAMHead`: ``(logits_up, logits_down, features_down)``."""

    logits_up: Tensor
    logits_down: Tensor
    features_down: Tensor


class CICAMHead(nn.Module):
    """Up branch → causal intervention → down branch, sharing one ``nn.Linear(K, C)`` classifier.

    The classifier is passed to :meth:`forward` (it belongs to the calling model, so its weights
    are registered once). GAP is the spatial mean, as the official ``AvgPool2d(h)``.

    Args:
        num_classes: ``C``.
        num_features: ``K``.
        pool_size: feature map size ``(h, w)`` at the training resolution.

    Example:
        >>> head = CICAMHead(num_classes=4, num_features=6, pool_size=5)
        >>> lin = torch.nn.Linear(6, 4)
        >>> out = head(torch.rand(3, 6, 5, 5), lin)
        >>> out.logits_up.shape, out.logits_down.shape
        (torch.Size([3, 4]), torch.Size([3, 4]))
        >>> head.cam_down(out.features_down, lin, torch.tensor([0, 1, 3])).shape
        torch.Size([3, 5, 5])
    """

    def __init__(self, num_classes: int, num_features: int, pool_size: int | tuple[int, int]) -> None:
        super().__init__()
        self.intervention = CausalIntervention(num_classes, num_features, pool_size)

    @property
    def context_pool(self) -> Tensor:
        return self.intervention.context_pool

    def _check(self, features: Tensor, classifier: nn.Linear) -> None:
        ci = self.intervention
        if classifier.weight.shape != (ci.num_classes, ci.num_features):
            raise ValueError(
                f"classifier must be Linear({ci.num_features}, {ci.num_classes}), "
                f"got weight shape {tuple(classifier.weight.shape)}"
            )
        if features.ndim != 4 or features.shape[1] != ci.num_features:
            raise ValueError(
                f"features must be (B, {ci.num_features}, h, w), got shape {tuple(features.shape)}"
            )

    def forward(
        self, features: Tensor, classifier: nn.Linear, class_idx: Tensor | None = None
    ) -> CICAMOutput:
        """Both branches.

        Args:
            features: ``(B, K, h, w)`` backbone features ``F``.
            classifier: the shared ``nn.Linear(K, C)``.
            class_idx: intervention classes; default ``ĉ = argmax z_up`` (detached), as the
                official code does in training and test. Pass the labels for a GT-class ablation.
        """
        self._check(features, classifier)
        logits_up = classifier(features.mean(dim=(2, 3)))
        if class_idx is None:
            class_idx = logits_up.detach().argmax(dim=1)
        features_down = self.intervention(features, class_idx)
        logits_down = classifier(features_down.mean(dim=(2, 3)))
        return CICAMOutput(logits_up, logits_down, features_down)

    @staticmethod
    def cams(features: Tensor, classifier: nn.Linear, class_ids: Tensor | None = None) -> Tensor:
        """Raw CAMs ``W F`` (no bias): ``(B, C, h, w)``, or ``(B, h, w)`` for one class per image."""
        if class_ids is None:
            return all_class_activation_maps(features, classifier.weight)
        return class_activation_maps(features, classifier.weight, class_ids)

    def cam_up(self, features: Tensor, classifier: nn.Linear, class_ids: Tensor | None = None) -> Tensor:
        """``CAM_up`` from the backbone features ``F`` (see :meth:`cams`)."""
        return self.cams(features, classifier, class_ids)

    def cam_down(
        self, features_down: Tensor, classifier: nn.Linear, class_ids: Tensor | None = None
    ) -> Tensor:
        """``CAM_down`` from the intervened features ``F'`` (``CICAMOutput.features_down``)."""
        return self.cams(features_down, classifier, class_ids)

    @torch.no_grad()
    def pool_sums(self, features: Tensor, classifier: nn.Linear, labels: Tensor, logits_up: Tensor) -> Tensor:
        """Local sums ``S`` (``(C, h, w)``) from the GT-class up-branch CAMs of this batch."""
        self._check(features, classifier)
        gt_cams = class_activation_maps(features.detach().float(), classifier.weight.detach().float(), labels)
        return context_pool_update_sums(
            gt_cams, labels, logits_up.detach().argmax(dim=1), self.intervention.num_classes
        )

    @torch.no_grad()
    def update_pool(
        self,
        features: Tensor,
        classifier: nn.Linear,
        labels: Tensor,
        logits_up: Tensor,
        rate: float = 0.01,
        sync: bool = True,
    ) -> None:
        """One pool step from this batch (call after the forward, in training only); DDP-consistent."""
        self.intervention.update(self.pool_sums(features, classifier, labels, logits_up), rate, sync=sync)


def ci_cam_loss(logits_up: Tensor, logits_down: Tensor, labels: Tensor) -> Tensor:
    """CI-CAM training loss ``CE(z_up, y) + CE(z_down, y)`` (weights 1:1, mean over the batch)."""
    if logits_up.shape != logits_down.shape:
        raise ValueError(
            f"logits_up and logits_down differ in shape: {tuple(logits_up.shape)} vs {tuple(logits_down.shape)}"
        )
    return F.cross_entropy(logits_up, labels) + F.cross_entropy(logits_down, labels)


# ----------------------------------------------------------------------------- combinational CAM
def _ccam_rank_weights(fn: str, num_classes: int, n: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    c = num_classes
    if fn == "quadratic":
        return -(torch.linspace(0, 1, c, device=device, dtype=dtype) ** 2)
    if fn == "linear":
        return torch.linspace(1, -1, c, device=device, dtype=dtype)
    w = torch.zeros(c, device=device, dtype=dtype)
    if fn == "mean":
        h = torch.ones(n, device=device, dtype=dtype)
    else:
        h = torch.linspace(0, 2.0 if fn == "sum_1" else 4.0, n, device=device, dtype=dtype)
    w[c - n :] -= h / n
    w[0] += 1.0
    return w


def combinational_cam(cams: Tensor, logits: Tensor, fn: CCAMFunction = "quadratic", n: int = 20) -> Tensor:
    """NL-CCAM / CI-CAM "combinational CAM" (official ``torch_cam_combination``), min-subtracted.

    Classes are ranked by ``logits`` (descending); with ``M_k`` the CAM of rank ``k``:

    * ``quadratic``: ``Σ_k -(k/(C-1))² M_k`` — the top-1 class gets weight **0** (CI-CAM's version);
    * ``linear``: weights ``linspace(1, -1, C)``;
    * ``sum_1`` / ``sum_2``: ``M_0 - (1/n) Σ_j h_j M_{C-n+j}`` with ``h = linspace(0, 2 | 4, n)``
      (the lowest-ranked class gets the largest weight);
    * ``mean``: ``M_0 -`` mean of the ``n`` lowest-ranked maps.

    Then the per-image minimum is subtracted (no max normalisation).

    Args:
        cams: ``(B, C, h, w)`` raw down-branch CAMs.
        logits: ``(B, C)`` scores that define the ranking (down-branch logits).
        fn: combination function.
        n: number of lowest-ranked classes for ``sum_1`` / ``sum_2`` / ``mean`` (official
            ``mean_num``), ``1 <= n <= C``.

    Returns:
        ``(B, h, w)`` maps with minimum 0.

    Example:
        >>> cams = torch.rand(2, 5, 4, 4)
        >>> combinational_cam(cams, torch.rand(2, 5)).amin(dim=(1, 2))
        tensor([0., 0.])
    """
    if cams.ndim != 4:
        raise ValueError(f"cams must be (B, C, h, w), got shape {tuple(cams.shape)}")
    b, c = cams.shape[:2]
    if logits.shape != (b, c):
        raise ValueError(f"logits must be ({b}, {c}), got shape {tuple(logits.shape)}")
    if fn not in _CCAM_FUNCTIONS:
        raise ValueError(f"fn must be one of {_CCAM_FUNCTIONS}, got {fn!r}")
    if c < 2:
        raise ValueError(f"combinational CAM needs at least 2 classes, got {c}")
    if fn in ("sum_1", "sum_2", "mean") and not 1 <= n <= c:
        raise ValueError(f"n must be in [1, {c}] (number of classes) for fn={fn!r}, got {n}")
    rank_w = _ccam_rank_weights(fn, c, n, cams.device, cams.dtype)
    order = torch.sort(logits.detach(), dim=1, descending=True, stable=True).indices
    class_w = torch.zeros(b, c, device=cams.device, dtype=cams.dtype).scatter_(
        1, order.to(cams.device), rank_w.expand(b, c)
    )
    maps = torch.einsum("bc,bchw->bhw", class_w, cams)
    return maps - maps.flatten(1).amin(dim=1)[:, None, None]


# ----------------------------------------------------------------------------- non-local block
class NonLocalBlock(nn.Module):
    """SAGAN-style self-attention block of NL-CCAM / CI-CAM (``Self_Attn``), identity at init.

    ``q, k = Conv1x1(C → C/8)``, ``v = Conv1x1(C → C)``; attention = softmax over positions of
    ``qᵀk``; ``out = v attentionᵀ`` → ``Conv1x1(C → C)`` → ``BatchNorm2d`` with weight **and** bias
    initialised to 0 → ``+ x``. So the block outputs ``x`` until its BN parameters move.

    Args:
        channels: ``C`` (at least 8).

    Example:
        >>> block = NonLocalBlock(16)
        >>> x = torch.rand(2, 16, 5, 5)
        >>> torch.equal(block(x), x)
        True
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels < 8:
            raise ValueError(f"channels must be >= 8 (queries use channels // 8), got {channels}")
        self.query = nn.Conv2d(channels, channels // 8, 1)
        self.key = nn.Conv2d(channels, channels // 8, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.mix = nn.Conv2d(channels, channels, 1)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.value.in_channels:
            raise ValueError(f"x must be (B, {self.value.in_channels}, h, w), got shape {tuple(x.shape)}")
        b, c, h, w = x.shape
        q = self.query(x).flatten(2)  # (B, C/8, N)
        k = self.key(x).flatten(2)
        v = self.value(x).flatten(2)  # (B, C, N)
        attn = torch.softmax(torch.bmm(q.transpose(1, 2), k), dim=-1)  # (B, N, N), rows = queries
        out = torch.bmm(v, attn.transpose(1, 2)).view(b, c, h, w)
        return x + self.bn(self.mix(out))
