"""Names that light and heavy modules share (standard library only).

The map methods a tool can box or show, and ``localize``'s fallback threshold, are read both by
the torch-free argument parsers (:mod:`cream_pl.cli.parsers`, so ``--help`` stays instant) and by
the modules that run the work; this is their one definition.

Example:
    >>> MAP_METHODS
    ('cream', 'cam', 'cream_selected')
"""

from __future__ import annotations

__all__ = ["MAP_METHODS", "DEFAULT_LOCALIZE_THRESHOLD"]

MAP_METHODS: tuple[str, ...] = ("cream", "cam", "cream_selected")
"""Score maps of a classifier that pseudo boxes and ``localize`` accept; ``cream_selected`` is CREAM
at the T / κ / λ / feature norm chosen on val (``WSOLClassifier(cream_search=...)``)."""

DEFAULT_LOCALIZE_THRESHOLD = 0.2
"""τ when none is given and the checkpoint has no validation τ* (the CAM threshold of the CREAM paper)."""
