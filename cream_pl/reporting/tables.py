"""Result files: atomic JSON/Markdown writers and Markdown tables that name their protocol.

Every number in a WSOL table depends on the protocol behind it (which IoU levels, which
threshold search, which contours, which resolution). :func:`metrics_table_markdown` therefore
always prints a footnote per column saying how the column was computed.

Example:
    >>> print(metrics_table_markdown({"cam": {"pxap": 61.234}, "cream": {}}, [("pxap", "PxAP")]))
    | Method | PxAP |
    | --- | ---: |
    | CAM | 61.23 |
    | CREAM | — |
    <BLANKLINE>
    - **PxAP**: pixel average precision over the 1002 histogram bins of wsolevaluation's MaskEvaluator (224×224 score maps, ignore pixels excluded).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cream_pl.core import io as _io

__all__ = [
    "MISSING",
    "METHOD_NAMES",
    "DEFAULT_PROTOCOL_NOTES",
    "to_builtin",
    "write_json_atomic",
    "write_markdown_atomic",
    "protocol_note",
    "metrics_table_markdown",
    "ablation_table_markdown",
]


def _is_tensor(obj: Any) -> bool:
    """Whether ``obj`` is a torch tensor (torch is never imported here: a tensor exists only once it is)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)

MISSING = "—"
"""What a table shows for a value that was not computed."""

METHOD_NAMES: dict[str, str] = {
    "cam": "CAM",
    "cream": "CREAM",
    "cream_selected": "CREAM (val-selected)",
    "cam_reg": "CAM_reg",
    "cream_reg": "CREAM_reg",
    "ci_cam": "CI-CAM",
    "kd_ci_cam": "KD-CI-CAM",
    "ci_cam_cream": "CI-CAM + CREAM",
}
"""Display names of the methods; other keys are shown as given."""

_BOX_COMMON = "all contours (RETR_TREE, holes included), thresholds <THRESHOLDS>, <SIZE> squash-resized images"
_NOTE_TEMPLATES: dict[str, str] = {
    "maxboxaccv2": (
        "mean over IoU δ ∈ {30, 50, 70} of the best-threshold box accuracy (each δ picks its own τ), "
        + _BOX_COMMON
    ),
    "maxboxacc": (
        "best-threshold box accuracy at IoU ≥ 0.5, largest contour only (V1), thresholds "
        "<THRESHOLDS>, <SIZE> squash-resized images"
    ),
    "gtknownloc": (
        "box accuracy at IoU ≥ 0.5 with the GT-class CAM at one threshold τ, not searched on the split scored "
        "(cream-pl's runs: the τ* of IoU-50 box accuracy on val), largest contour, <SIZE> squash-resized images"
    ),
    "gtknown": (
        "box accuracy at IoU ≥ 0.5 with the GT-class CAM at one threshold τ, not searched on the split scored "
        "(cream-pl's runs: the τ* of IoU-50 box accuracy on val), largest contour, <SIZE> squash-resized images"
    ),
    "top1loc": "GT-known Loc that also requires the top-1 predicted class to be correct",
    "top5loc": "GT-known Loc that also requires the GT class to be among the top-5 predicted classes",
    "pxap": (
        "pixel average precision over the 1002 histogram bins of wsolevaluation's MaskEvaluator "
        "(<SIZE> score maps, ignore pixels excluded)"
    ),
    "clsacc": "top-1 classification accuracy",
    "top1cls": "top-1 classification accuracy",
    "top5cls": "top-5 classification accuracy",
}


def fill_note(note: str, interval: float | str = 0.001, size: int | str = 224) -> str:
    """A protocol note at a run's threshold interval and evaluation size: its ``<THRESHOLDS>`` and ``<SIZE>`` filled
    in, so that a table's footnotes say how its numbers were computed (a ``--fast`` run's interval 0.01 included). A
    string is written as it is (several runs' values).

    Example:
        >>> fill_note(_NOTE_TEMPLATES["pxap"], 0.01, 448)[-44:]
        '(448×448 score maps, ignore pixels excluded)'
        >>> fill_note("thresholds <THRESHOLDS>", "0.001 or 0.01 (by run)")
        'thresholds np.arange(0, 1, 0.001 or 0.01 (by run))'
    """
    step = interval if isinstance(interval, str) else format(interval, "g")
    square = f"{size} px square" if isinstance(size, str) else f"{size}×{size}"
    return note.replace("<THRESHOLDS>", f"np.arange(0, 1, {step})").replace("<SIZE>", square)


def by_run(values: Iterable[Any]) -> Any:
    """The one value of a run setting (a threshold interval, an evaluation size), or the runs' values as
    ``"a or b (by run)"``, which :func:`fill_note` writes as it is.

    Example:
        >>> by_run([224, 224]), by_run({0.01, 0.001})
        (224, '0.001 or 0.01 (by run)')
    """
    values = set(values)
    return next(iter(values)) if len(values) == 1 else " or ".join(f"{v:g}" for v in sorted(values)) + " (by run)"


DEFAULT_PROTOCOL_NOTES: dict[str, str] = {k: fill_note(v) for k, v in _NOTE_TEMPLATES.items()}
"""Protocol notes keyed by normalised metric name (lower case, no ``_``/``-``/spaces, no ``stage/``), at the protocol's
interval 0.001 and size 224 (:func:`fill_note`: at a run's own)."""

_IOU_KEY = re.compile(r"^(?:max)?boxacc(?:v2)?(?:iou|@)?(\d+)$")


# --------------------------------------------------------------------------------------------- files
def to_builtin(obj: Any) -> Any:
    """Turn numpy/torch scalars and arrays (nested in dicts, lists, tuples) into plain Python.

    Dict keys become strings (JSON object keys are strings); paths become strings.

    Example:
        >>> import torch
        >>> to_builtin({"a": np.float32(0.5), 1: torch.tensor([1, 2]), "p": (np.int64(3),)})
        {'a': 0.5, '1': [1, 2], 'p': [3]}
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if _is_tensor(obj):
        return obj.detach().cpu().tolist()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return float(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, Mapping):
        return {k if isinstance(k, str) else str(to_builtin(k)): to_builtin(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return [to_builtin(v) for v in items]
    raise TypeError(f"cannot write an object of type {type(obj).__name__} to JSON: {obj!r:.80}")


def write_json_atomic(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``obj`` as JSON (sorted keys, indent 2, UTF-8) atomically.

    numpy/torch values are converted with :func:`to_builtin`. NaN/inf are written as the
    ``NaN``/``Infinity`` tokens that Python's ``json`` module reads back.

    Example:
        >>> import tempfile
        >>> p = write_json_atomic({"b": np.float64(1.5), "a": 1}, Path(tempfile.mkdtemp()) / "r.json")
        >>> print(p.read_text(), end="")
        {
          "a": 1,
          "b": 1.5
        }
    """
    text = json.dumps(to_builtin(obj), sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    return _io.atomic_write_text(path, text)


def write_markdown_atomic(text: str, path: str | os.PathLike[str]) -> Path:
    """Write Markdown ``text`` (UTF-8, ending with a newline) atomically."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not text.endswith("\n"):
        text += "\n"
    return _io.atomic_write_text(path, text)


# --------------------------------------------------------------------------------------------- tables
def _normalise_key(key: str) -> str:
    return re.sub(r"[\s_\-]", "", key.rsplit("/", 1)[-1].lower())


def protocol_note(key: str, interval: float | str = 0.001, size: int | str = 224) -> str | None:
    """The default protocol note of a metric key (``"test/maxboxacc_v2"``, ``"gt_known_loc"``, ...), at a threshold
    interval and evaluation size (:func:`fill_note`).

    Example:
        >>> protocol_note("val/boxacc_iou70")[:32]
        'best-threshold box accuracy at I'
        >>> protocol_note("epoch") is None
        True
    """
    template = _note_template(key)
    return None if template is None else fill_note(template, interval, size)


def _note_template(key: str) -> str | None:
    """The default note of a metric key, its ``<THRESHOLDS>`` / ``<SIZE>`` not filled in (``None``: no note)."""
    norm = _normalise_key(key)
    if norm in _NOTE_TEMPLATES:
        return _NOTE_TEMPLATES[norm]
    m = _IOU_KEY.match(norm)
    return f"best-threshold box accuracy at IoU ≥ {int(m.group(1)) / 100:g}, " + _BOX_COMMON if m else None


def _format_value(value: Any, decimals: int) -> str:
    if value is None:
        return MISSING
    if _is_tensor(value) or isinstance(value, (np.ndarray, np.generic)):
        n = value.numel() if _is_tensor(value) else value.size
        if n != 1:
            raise ValueError(f"table cells must be scalars, got an array of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Real):
        v = float(value)
        return MISSING if math.isnan(v) else f"{v:.{decimals}f}"
    return str(value)


def metrics_table_markdown(
    results: Mapping[str, Mapping[str, Any]],
    columns: Sequence[tuple[str, str]],
    protocol_notes: Mapping[str, str] | None = None,
    *,
    decimals: int = 2,
    interval: float | str = 0.001,
    size: int | str = 224,
) -> str:
    """A Markdown results table, one row per method, with a protocol footnote per column.

    Args:
        results: ``{method: {metric key: value}}``; rows keep this order. Methods in
            :data:`METHOD_NAMES` get their display name.
        columns: ``[(metric key, header)]``.
        protocol_notes: ``{metric key: note}``; overrides/extends :data:`DEFAULT_PROTOCOL_NOTES`
            (looked up by normalised key, so ``"test/MaxBoxAcc_V2"`` finds ``"maxboxaccv2"``).
        decimals: digits after the decimal point.
        interval, size: the threshold interval and evaluation size behind the numbers, which the
            notes state (``<THRESHOLDS>`` / ``<SIZE>`` in a given note: :func:`fill_note`).

    Returns:
        The table, a blank line, then one ``- **header**: note`` line per column.

    Raises:
        ValueError: a column has no protocol note (pass one in ``protocol_notes``), or there are
            no methods/columns.
    """
    if not results:
        raise ValueError("results is empty: no methods to tabulate")
    if not columns:
        raise ValueError("columns is empty")
    for col in columns:
        if not (isinstance(col, (tuple, list)) and len(col) == 2):
            raise ValueError(f"each column must be a (metric key, header) pair, got {col!r}")
    notes = dict(protocol_notes or {})
    footnotes, undocumented = [], []
    for key, header in columns:
        template = notes.get(key) or _note_template(key)  # the caller's, or the default: filled in once
        note = None if template is None else fill_note(template, interval, size)
        if note is None:
            undocumented.append(key)
        footnotes.append(f"- **{header}**: {note}.")
    if undocumented:
        raise ValueError(
            f"no protocol note for column(s) {undocumented}; pass protocol_notes={{key: 'how it was computed'}}"
        )
    lines = [
        "| Method | " + " | ".join(h for _, h in columns) + " |",
        "| --- | " + " | ".join("---:" for _ in columns) + " |",
    ]
    for method, metrics in results.items():
        if not isinstance(metrics, Mapping):
            raise ValueError(f"results[{method!r}] must be a dict of metrics, got {type(metrics).__name__}")
        cells = [_format_value(metrics.get(key), decimals) for key, _ in columns]
        lines.append(f"| {METHOD_NAMES.get(method, method)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + "\n".join(footnotes)


def ablation_table_markdown(
    name: str,
    xs: Sequence[Any],
    rows: Mapping[str, Sequence[Any]],
    *,
    decimals: int = 2,
) -> str:
    """A Markdown table of a hyper-parameter sweep: one column per swept value, one row per metric.

    Example:
        >>> print(ablation_table_markdown("T", [0, 1, 2], {"GT-known": [56.0, 69.3, None]}))
        | T | 0 | 1 | 2 |
        | --- | ---: | ---: | ---: |
        | GT-known | 56.00 | 69.30 | — |
    """
    xs = list(xs)
    if not xs:
        raise ValueError("xs is empty")
    if not rows:
        raise ValueError("rows is empty")
    lines = [
        f"| {name} | " + " | ".join(f"{x:g}" if isinstance(x, float) else str(x) for x in xs) + " |",
        "| --- | " + " | ".join("---:" for _ in xs) + " |",
    ]
    for row_name, values in rows.items():
        values = list(values)
        if len(values) != len(xs):
            raise ValueError(f"row {row_name!r} has {len(values)} values for {len(xs)} swept values")
        lines.append(f"| {row_name} | " + " | ".join(_format_value(v, decimals) for v in values) + " |")
    return "\n".join(lines)
