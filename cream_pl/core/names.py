"""Names that light and heavy modules share (standard library only).

The map methods a tool can box or show, and ``localize``'s fallback threshold, are read both by
the torch-free argument parsers (:mod:`cream_pl.cli.parsers`, so ``--help`` stays instant) and by
the modules that run the work; the names of ``cream-pl``'s sub-commands both by its parsers and
by the start-up benchmark (:mod:`cream_pl.pipelines.bench_reference`). This is their one definition.

Example:
    >>> MAP_METHODS
    ('cream', 'cam', 'cream_selected')
"""

from __future__ import annotations

__all__ = ["BOX_HEADS", "MAP_METHODS", "DEFAULT_LOCALIZE_THRESHOLD", "MIN_CAM_INTERVAL", "SUBCOMMAND_NAMES"]

MAP_METHODS: tuple[str, ...] = ("cream", "cam", "cream_selected")
"""Score maps of a classifier that pseudo boxes and ``localize`` accept; ``cream_selected`` is CREAM
at the T / κ / λ / feature norm chosen on val (``WSOLClassifier(cream_search=...)``)."""

BOX_HEADS: tuple[str, ...] = ("objectness", "psol", "spatial_mlp")
"""The box heads of CREAM_reg's regressor, for the parsers (``train-regressor --head``, ``recipes --heads``): the
names :func:`cream_pl.models.box_heads.list_box_heads` gives (a test keeps the two equal)."""

DEFAULT_LOCALIZE_THRESHOLD = 0.2
"""τ when none is given and the checkpoint has no validation τ* (the CAM threshold of the CREAM paper)."""

MIN_CAM_INTERVAL = 1e-6
"""The finest CAM threshold step accepted (a million thresholds; the benchmark uses 0.01 and 0.001): below it the
per-threshold counts take gigabytes."""

SUBCOMMAND_NAMES: tuple[str, ...] = ("data", "evaluate", "export-scoremaps", "localize", "pseudo-boxes",
                                     "train-regressor")
"""``cream-pl``'s argparse sub-commands (besides Lightning's ``fit|validate|test|predict``), in ``--help``
order: the keys of :data:`cream_pl.cli.parsers.SUBCOMMANDS`, and what the start-up benchmark times."""
