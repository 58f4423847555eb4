"""The one validator of command-line options: numeric domains and one-line parse errors (standard library only).

Every numeric option of every command (``cream-pl ...`` and ``python -m cream_pl.pipelines...``)
declares its domain with one of these ``argparse`` ``type=`` factories, so a value outside it is
refused at parse time, before anything is imported or loaded, in one line::

    cream-pl pseudo-boxes: error: argument --input-size: must be an integer >= 32, got '7'

:class:`OneLineArgumentParser` makes every parse error that one line (``prog: error: message``,
exit status 2), without the usage block ``argparse`` prints first; ``--help`` is unchanged.

Example:
    >>> p = OneLineArgumentParser(prog="x")
    >>> _ = p.add_argument("--n", type=positive_int)
    >>> _ = p.add_argument("--tau", type=unit_interval)
    >>> p.parse_args(["--n", "3", "--tau", "0.5"])
    Namespace(n=3, tau=0.5)
    >>> positive_int("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be an integer >= 1, got '0'
    >>> unit_interval("nan")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be a number in [0, 1), got 'nan'
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from typing import Any, NoReturn

from cream_pl.core.names import MIN_CAM_INTERVAL

__all__ = [
    "OneLineArgumentParser",
    "MIN_INPUT_SIZE",
    "int_at_least",
    "int_in_range",
    "positive_int",
    "nonneg_int",
    "seed_int",
    "input_size",
    "percent_int",
    "float_in_range",
    "finite_float",
    "positive_float",
    "unit_interval",
    "open_unit_interval",
    "threshold_step",
    "probability",
    "device_name",
    "split_name",
]

MIN_INPUT_SIZE = 32
"""Smallest classifier / regressor input side. Every backbone has a feature stride of 16 (224 -> a
14x14 map), so 32 px gives a 2x2 map: the smallest on which a box can be anything but the whole
image. Below it (``--input-size 7``: one cell) the boxes, and every number computed from them, are
meaningless."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line, ``<prog>: error: <message>`` (exit status 2).

    Sub-parsers made by :meth:`add_subparsers` are of the same class, so this holds for every
    sub-command too.
    """

    def error(self, message: str) -> NoReturn:
        text = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {text}\n")

    def _get_values(self, action: argparse.Action, arg_strings: list[str]) -> Any:
        """An empty value (``--out ""``, or ``--out $OUT`` with ``OUT`` unset) is refused: as a path it is the current
        folder, which no option here means (before: ``data synth --out ""`` wrote a dataset into the working folder)."""
        sub_command = isinstance(action, argparse._SubParsersAction)  # its strings are the sub-command's to check
        if not sub_command and any(isinstance(a, str) and not a.strip() for a in arg_strings):
            name = "/".join(action.option_strings) or action.dest
            self.error(f"argument {name}: an empty value (an unset shell variable?); give one")
        return super()._get_values(action, arg_strings)


def _typed(name: str, check: Callable[[str], object]) -> Callable[[str], object]:
    check.__name__ = check.__qualname__ = name  # argparse names the type in some messages
    return check


def int_in_range(lo: int | None = None, hi: int | None = None, name: str | None = None) -> Callable[[str], int]:
    """``type=`` factory: an integer in ``[lo, hi]`` (either end may be open-ended with ``None``)."""
    if lo is not None and hi is not None:
        want = f"an integer in [{lo}, {hi}]"
    elif lo is not None:
        want = f"an integer >= {lo}"
    elif hi is not None:
        want = f"an integer <= {hi}"
    else:
        want = "an integer"

    def check(text: str) -> int:
        try:
            value = int(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}")
        return value

    return _typed(name or "int", check)  # type: ignore[return-value]


def int_at_least(lo: int, name: str | None = None) -> Callable[[str], int]:
    """``type=`` factory: an integer ``>= lo``."""
    return int_in_range(lo, None, name)


positive_int = int_at_least(1, "positive_int")
"""An integer >= 1 (batch sizes, epochs, counts, chunk sizes)."""

nonneg_int = int_at_least(0, "nonneg_int")
"""An integer >= 0 (worker counts, problem counts)."""

seed_int = int_in_range(0, 2**32 - 1, "seed")
"""A random seed: what NumPy accepts, an integer in [0, 2**32 - 1]."""

input_size = int_in_range(MIN_INPUT_SIZE, 4096, "input_size")
"""An image side for a network input, in [:data:`MIN_INPUT_SIZE`, 4096]."""

percent_int = int_in_range(1, 100, "percent")
"""An integer percentage in [1, 100] (IoU levels: 0 would count every box as correct)."""


def float_in_range(
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    name: str | None = None,
) -> Callable[[str], float]:
    """``type=`` factory: a finite float in the interval ``lo .. hi`` (NaN and infinities refused)."""
    if lo is not None and hi is not None:
        want = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        want = f"a number {'>' if lo_open else '>='} {lo:g}"
    elif hi is not None:
        want = f"a number {'<' if hi_open else '<='} {hi:g}"
    else:
        want = "a finite number"

    def check(text: str) -> float:
        try:
            value = float(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}") from None
        bad = not math.isfinite(value)
        if lo is not None:
            bad = bad or value < lo or (lo_open and value == lo)
        if hi is not None:
            bad = bad or value > hi or (hi_open and value == hi)
        if bad:
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}")
        return value

    return _typed(name or "float", check)  # type: ignore[return-value]


finite_float = float_in_range(name="finite_float")
"""Any finite float."""

positive_float = float_in_range(0.0, None, lo_open=True, name="positive_float")
"""A finite float > 0 (learning rates, loss weights)."""

unit_interval = float_in_range(0.0, 1.0, hi_open=True, name="unit_interval")
"""A finite float in [0, 1) (map thresholds τ)."""

open_unit_interval = float_in_range(0.0, 1.0, lo_open=True, hi_open=True, name="open_unit_interval")
"""A finite float in (0, 1)."""

threshold_step = float_in_range(MIN_CAM_INTERVAL, 1.0, hi_open=True, name="threshold_step")
"""A CAM threshold step: a finite float in [1e-6, 1) (at most a million thresholds)."""

probability = float_in_range(0.0, 1.0, name="probability")
"""A finite float in [0, 1]."""

_DEVICE = re.compile(r"^(cpu|cuda|mps|xpu)(:\d+)?$")


def split_name(text: str) -> str:
    """``type=``: a split, i.e. a folder name under ``metadata/`` (``train``, ``val``, ``test``): no path, so that
    ``test/`` or ``../metadata/test`` is not stored as another split's name."""
    value = str(text)
    if not value or value in (".", "..") or "/" in value or "\\" in value:
        raise argparse.ArgumentTypeError(f"must be a split name (a folder under metadata/, e.g. test), got {text!r}")
    return value


def device_name(text: str) -> str:
    """``type=``: a torch device name (``cpu``, ``cuda``, ``cuda:N``, ``mps``); whether it exists is
    checked when the command runs (:func:`cream_pl.models.checkpoints.resolve_device`)."""
    value = str(text).strip()
    if not _DEVICE.match(value):
        raise argparse.ArgumentTypeError(f"must be a torch device such as cpu, cuda or cuda:0, got {text!r}")
    return value

