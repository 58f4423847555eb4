"""Names that load on first use (standard library only): PEP 562 package exports and command functions.

``cream_pl.data`` and ``cream_pl.metrics`` re-export their modules' public names; importing those
modules eagerly would pull torch and Lightning into ``cream-pl evaluate`` and ``data check``. A
command's light parser (``cream-pl <command> --help``) names the function that runs it with
:func:`lazy_command`, which imports the function's module only when the command runs.

Example:
    >>> getattr_, dir_ = lazy_exports({"sqrt": "math"}, {})
    >>> getattr_("sqrt")(4.0)
    2.0
    >>> run = lazy_command("math", "floor"); run.target, run(2.5)
    ('math.floor', 2)
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports", "lazy_command"]


def lazy_exports(exports: Mapping[str, str], namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for a package whose names ``exports`` maps to their modules.

    Args:
        exports: public name -> module that defines it.
        namespace: the package's ``globals()``; a loaded name is cached there, so later lookups are plain.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {namespace.get('__name__')!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__


def lazy_command(module: str, name: str = "run") -> Callable[[argparse.Namespace], int]:
    """A parser's ``func`` that imports ``module`` only when called, then returns ``module.name(args)`` as an int.

    The function's dotted name is its ``target`` attribute (``"<module>.<name>"``).
    """

    def run(args: argparse.Namespace) -> int:
        return int(getattr(importlib.import_module(module), name)(args) or 0)

    run.__qualname__ = run.__name__ = name
    run.target = f"{module}.{name}"  # type: ignore[attr-defined]
    return run
