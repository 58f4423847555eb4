"""PEP 562 lazy package exports: a package's names load on first use (standard library only).

``cream_pl.data`` and ``cream_pl.metrics`` re-export their modules' public names; importing those
modules eagerly would pull torch and Lightning into ``cream-pl evaluate`` and ``data check``.

Example:
    >>> getattr_, dir_ = lazy_exports({"sqrt": "math"}, {})
    >>> getattr_("sqrt")(4.0)
    2.0
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


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
