"""The ``cream-pl`` command: the argparse front (``app``), its torch-free parsers, Lightning's CLI, sub-commands.

May import every layer below it (core, data, models, metrics, pseudo_boxes, pipelines, reporting), each lazily.

Example:
    >>> from cream_pl.cli import main  # main(["data", "synth", "--out", "data/synth"])
"""

from __future__ import annotations

from cream_pl.core.lazy_exports import lazy_exports

_EXPORTS: dict[str, str] = {name: "cream_pl.cli.app" for name in (
    "LIGHTNING_SUBCOMMANDS", "SUBCOMMAND_MODULES", "build_light_parser", "build_parser", "main")}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(_EXPORTS, globals())
