"""Evidence of a results file: paired differences with bootstrap intervals, and what was selected on val.

The project's norms: every stated difference carries a paired bootstrap 95 % interval over the test
images (:mod:`cream_pl.metrics.bootstrap`, >= 1000 resamples), and is called a gain or a loss only
when the interval excludes 0; every chosen hyperparameter is chosen on val, shown beside the
paper's default. This module turns per-image records (``{method: {"index", "best_iou",
"gt_known", "top1_loc", "top1", ...}}``) into the ``differences`` object of a ``metrics.json`` and
into markdown.

Example:
    >>> import numpy as np
    >>> recs = {"a": {"index": np.arange(4), "gt_known": np.array([1, 1, 1, 0], bool)},
    ...         "b": {"index": np.arange(4), "gt_known": np.array([1, 0, 0, 0], bool)}}
    >>> d = compute_differences(recs, [("a", "b", ("gt_known",))])
    >>> d["a-b"]["gt_known"]["diff"], d["a-b"]["gt_known"]["verdict"] in {"gain", "no significant difference"}
    (50.0, True)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["METRIC_NAMES", "PAPER_DEFAULTS", "RECORD_CONSTANTS", "compute_differences", "compute_subset_differences",
           "hit_agreement", "interval_text",
           "differences_markdown", "selection_markdown", "save_records", "load_records", "subset_records"]

PAPER_DEFAULTS: dict[str, Any] = {"T": 2, "kappa": 8.0, "lambda": 0.8, "feature_norm": "raw"}
"""CREAM's inference-time defaults in the paper (spec: cream.md)."""

METRIC_NAMES = {"max_box_acc_v2": "MaxBoxAccV2", "gt_known": "GT-known Loc", "top1_loc": "Top-1 Loc",
                 "top5_loc": "Top-5 Loc", "cls_acc": "Top-1 Cls"}


def compute_differences(
    records: Mapping[str, Mapping[str, np.ndarray]],
    pairs: Iterable[tuple[str, str, Sequence[str]]],
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{"a-b": {metric: {"diff", "ci95", "verdict", "a", "b", "n_images", "n_resamples"}}}`` for each pair.

    A pair whose records are missing, or lack the metric's per-image field, is left out (never
    filled in).
    """
    from cream_pl.metrics.bootstrap import paired_bootstrap_records, verdict

    out: dict[str, dict[str, dict[str, Any]]] = {}
    for a, b, metrics in pairs:
        if a not in records or b not in records:
            continue
        for metric in metrics:
            try:
                r = paired_bootstrap_records(records[a], records[b], metric, n_resamples=n_resamples, seed=seed)
            except ValueError as err:
                if "has no" in str(err):
                    continue
                raise
            out.setdefault(f"{a}-{b}", {})[metric] = {
                "diff": r["diff"], "ci95": r["ci95"], "verdict": verdict(r), "a": r["a"], "b": r["b"],
                "n_images": r["n_images"], "n_resamples": r["n_resamples"]}
    return out


RECORD_CONSTANTS = ("thresholds", "iou_thresholds", "loc_threshold")
"""Fields of a per-image record that describe the record, not one value per image."""


def hit_agreement(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], key: str = "gt_known") -> dict[str, int]:
    """How two methods' per-image outcomes agree on the same images (joined on ``index``): both right, only ``a``,
    only ``b``, neither.

    Example:
        >>> x = {"index": np.array([0, 1, 2, 3]), "gt_known": np.array([1, 1, 0, 0])}
        >>> y = {"index": np.array([3, 2, 1, 0]), "gt_known": np.array([1, 0, 0, 1])}
        >>> hit_agreement(x, y)
        {'both': 1, 'only_a': 1, 'only_b': 1, 'neither': 1, 'n': 4}
    """
    hits_b = dict(zip(np.asarray(b["index"]).tolist(), np.asarray(b[key]).astype(bool).tolist()))
    out = {"both": 0, "only_a": 0, "only_b": 0, "neither": 0, "n": 0}
    for i, ha in zip(np.asarray(a["index"]).tolist(), np.asarray(a[key]).astype(bool).tolist()):
        if i not in hits_b:
            continue
        hb = hits_b[i]
        out["both" if ha and hb else "only_a" if ha else "only_b" if hb else "neither"] += 1
        out["n"] += 1
    return out


def subset_records(record: Mapping[str, np.ndarray], indices: Iterable[int]) -> dict[str, np.ndarray]:
    """The record restricted to the images whose ``index`` is in ``indices`` (their order kept).

    Every field but :data:`RECORD_CONSTANTS` holds one entry (row) per image and is subset; the
    constants are kept as they are. A MaxBoxAccV2 difference on the subset is then re-maximised
    over the thresholds on those images alone (by :func:`compute_differences`).

    Raises:
        ValueError: a per-image field's length is not the number of images.

    Example:
        >>> rec = {"index": np.array([4, 7, 9]), "top1": np.array([1, 0, 1], bool), "thresholds": np.arange(3) / 3}
        >>> sub = subset_records(rec, [9, 4])
        >>> sub["index"].tolist(), sub["top1"].tolist(), len(sub["thresholds"])
        ([4, 9], [True, True], 3)
    """
    index = np.asarray(record["index"])
    keep = np.isin(index, np.fromiter((int(i) for i in indices), dtype=np.int64))
    out: dict[str, np.ndarray] = {}
    for key, value in record.items():
        if key in RECORD_CONSTANTS:
            out[key] = value
            continue
        arr = np.asarray(value)
        if arr.ndim == 0 or arr.shape[0] != index.shape[0]:
            raise ValueError(f"record field {key!r} has shape {arr.shape}, not one row per image ({index.shape[0]})")
        out[key] = arr[keep]
    return out


def compute_subset_differences(
    records: Mapping[str, Mapping[str, np.ndarray]],
    pairs: Iterable[tuple[str, str, Sequence[str]]],
    indices: Iterable[int],
    tag: str,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, dict[str, Any]]]:
    """:func:`compute_differences` on the images ``indices`` only, keys ``"a-b@tag"``; ``{}`` for no image.

    Example:
        >>> recs = {"a": {"index": np.arange(4), "gt_known": np.array([1, 1, 0, 0], bool)},
        ...         "b": {"index": np.arange(4), "gt_known": np.array([0, 1, 0, 1], bool)}}
        >>> d = compute_subset_differences(recs, [("a", "b", ("gt_known",))], [0, 1], "first")
        >>> d["a-b@first"]["gt_known"]["diff"], d["a-b@first"]["gt_known"]["n_images"]
        (50.0, 2)
    """
    wanted = [int(i) for i in indices]
    if not wanted:
        return {}
    subset = {name: subset_records(rec, wanted) for name, rec in records.items()}
    diffs = compute_differences(subset, pairs, n_resamples=n_resamples, seed=seed)
    return {f"{key}@{tag}": value for key, value in diffs.items()}


def interval_text(d: Mapping[str, Any]) -> str:
    """One stated difference in words: its value, its paired bootstrap 95 % interval and the verdict.

    Example:
        >>> interval_text({"diff": 8.6, "ci95": [6.1, 11.0], "verdict": "gain"})
        '+8.60 (95 % CI [+6.10, +11.00], gain)'
    """
    lo, hi = d["ci95"]
    return f"{d['diff']:+.2f} (95 % CI [{lo:+.2f}, {hi:+.2f}], {d['verdict']})"


def differences_markdown(differences: Mapping[str, Mapping[str, Mapping[str, Any]]],
                         names: Mapping[str, str]) -> str:
    """A table: one row per (pair, metric) with the difference, its 95 % interval and the verdict."""
    lines = ["| difference | metric | a | b | a − b | paired bootstrap 95 % CI | verdict |",
             "| --- | --- | ---: | ---: | ---: | --- | --- |"]
    for pair, per_metric in differences.items():
        pair, _, subset = pair.partition("@")  # "a-b@tag": on a subset of the test images
        a, b = pair.split("-", 1)
        label = f"{names.get(a, a)} − {names.get(b, b)}" + (f" ({names.get('@' + subset, subset)})" if subset else "")
        for metric, r in per_metric.items():
            lo, hi = r["ci95"]
            lines.append(f"| {label} | {METRIC_NAMES.get(metric, metric)} | {r['a']:.2f} | {r['b']:.2f} | "
                         f"{r['diff']:+.2f} | [{lo:+.2f}, {hi:+.2f}] | {r['verdict']} |")
    n = {r["n_images"] for pm in differences.values() for r in pm.values()}
    reps = {r["n_resamples"] for pm in differences.values() for r in pm.values()}
    if n:
        lines += ["", f"Paired bootstrap over the {', '.join(map(str, sorted(n)))} test images "
                      f"({', '.join(map(str, sorted(reps)))} resamples, percentile interval): a gain or a loss only "
                      "where the interval excludes 0."]
    return "\n".join(lines)


def selection_markdown(selected: Mapping[str, Any], defaults: Mapping[str, Any] = PAPER_DEFAULTS) -> str:
    """CREAM's val-selected inference hyperparameters beside the paper's defaults."""
    lines = ["| CREAM inference hyperparameter | paper default | selected on val |", "| --- | ---: | ---: |"]
    for key in ("T", "kappa", "lambda", "feature_norm"):
        chosen = selected.get(key)
        lines.append(f"| {key} | {_fmt(defaults.get(key))} | {_fmt(chosen)} |")
    if "val_score" in selected:
        lines += ["", f"Chosen by val {selected.get('val_metric', 'max_box_acc_v2')} "
                      f"({selected['val_score']:.2f}) among {selected.get('candidates', '?')} candidates; the test "
                      "split never selects."]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return "—" if v is None else str(v)


def save_records(records: Mapping[str, Mapping[str, np.ndarray]]) -> bytes:
    """Per-image records as ``.npz`` bytes (``<method>/<field>`` keys) for an atomic write."""
    import io

    buf = io.BytesIO()
    np.savez(buf, **{f"{m}/{k}": np.asarray(v) for m, rec in records.items() for k, v in rec.items()})
    return buf.getvalue()


def load_records(path: Any, flat_as: str | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Inverse of :func:`save_records` (from a file path).

    ``flat_as``: the method a file of the older flat layout (``<field>`` keys, one method, as the box
    regressor wrote before it used :func:`save_records`) is read as; without it such a key is an error.
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path) as z:
        for key in z.files:
            if "/" not in key and flat_as is None:
                raise ValueError(f"{path}: per-image record key {key!r} names no method (<method>/<field>)")
            m, k = key.split("/", 1) if "/" in key else (flat_as, key)
            out.setdefault(m, {})[k] = z[key]
    return out
