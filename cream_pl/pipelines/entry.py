"""The one wrapper and pre-flight check of every pipeline entry point (``python -m cream_pl.pipelines.<name>``).

:func:`pipeline_main` wraps a ``main(argv)``: a user error raised anywhere inside (a bad image or
label, an output path in the way, a missing recipe; see :mod:`cream_pl.core.errors`) ends in one
line ``<prog>: error: <message>`` on stderr and exit status 2, never a traceback. Programming
errors keep their traceback.

:func:`preflight` runs before any long work: every output folder must be creatable (an existing
file in the way fails now, not after an hour of training), and a dataset the user gave must pass
the checks of ``cream-pl data check --files`` (metadata, labels against ``class_names.txt``, and
every image and mask decoded; the image pass is remembered per file set, like ``fit``'s).

:func:`run_command` is the ``python -m cream_pl.pipelines.<name>`` entry point of a pipeline that
is also a ``cream-pl`` command (``train-regressor``): its own parser, the same exit statuses and
one-line errors as ``cream-pl <command>``, without importing the command line.

Example:
    >>> @pipeline_main("python -m demo")
    ... def main(argv=None):
    ...     from cream_pl.core.errors import UserValueError
    ...     raise UserValueError("data/x.jpg: truncated image file")
    >>> import contextlib, io
    >>> err = io.StringIO()
    >>> with contextlib.redirect_stderr(err):
    ...     rc = main([])
    >>> rc, err.getvalue()
    (2, 'python -m demo: error: data/x.jpg: truncated image file\\n')
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from cream_pl.core.errors import UserFileNotFoundError, UserValueError, user_error_message
from cream_pl.core.interrupts import report_stop, sigterm_raises
from cream_pl.core.io import check_output_dir
from cream_pl.core.options import OneLineArgumentParser

__all__ = ["pipeline_main", "run_command", "preflight", "check_dataset_root"]

Main = Callable[[Sequence[str] | None], int]


def pipeline_main(prog: str) -> Callable[[Main], Main]:
    """Decorate a pipeline's ``main(argv)``: user errors end in one line and exit status 2; Ctrl-C and SIGTERM in one
    line and 130 / 143 (:mod:`cream_pl.core.interrupts`)."""

    def decorate(main: Main) -> Main:
        @functools.wraps(main)
        def wrapper(argv: Sequence[str] | None = None) -> int:
            try:
                with sigterm_raises():
                    return int(main(argv) or 0)
            except BaseException as err:
                message = user_error_message(err) if isinstance(err, Exception) else None  # DataLoader workers' too
                if message is not None:
                    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
                    return 2
                status = report_stop(err, prog)  # Ctrl-C, SIGTERM: one line and 130 / 143, not a traceback
                if status is None:
                    raise
                return status

        return wrapper

    return decorate


def run_command(name: str, add_parser: Callable[[Any], argparse.ArgumentParser], argv: Sequence[str]) -> int:
    """Run ``cream-pl <name> ARGV`` with the command's parser (``add_parser(subparsers)``, its ``func`` set).

    As ``cream-pl`` does: ``--help`` returns 0, a parse error is one line and returns 2, and a user
    error raised by the command is one line (``cream-pl <name>: error: <message>``) and returns 2.
    """
    parser = OneLineArgumentParser(prog="cream-pl")
    add_parser(parser.add_subparsers(dest="command", metavar="COMMAND"))
    try:
        args = parser.parse_args([name, *argv])
    except SystemExit as exit_:  # --help (0) or a parse error (2): returned, as every other status
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)

    @pipeline_main(f"cream-pl {name}")
    def command(_argv: Sequence[str] | None = None) -> int:
        return int(args.func(args) or 0)

    return command(None)


def check_dataset_root(root: Path | str, *, files: bool = True) -> Path:
    """Check a dataset root the way ``cream-pl data check [--files]`` does; raise the first problem.

    Labels are checked against ``class_names.txt`` when the dataset has one. With ``files`` every
    image and mask is decoded, once per set of files (a passed check is remembered by path, size
    and modification time, see :func:`cream_pl.data.images.check_once`).

    Raises:
        UserValueError: ``<file>:<line>: <problem>`` (and how many more problems there are).
    """
    from cream_pl.data.images import check_once, files_stamp
    from cream_pl.data.metadata import (
        check_split,
        leaked_images,
        read_class_names,
        read_split,
        split_dirs,
    )

    root = Path(root)
    meta_root = root / "metadata"
    if not meta_root.is_dir():
        raise UserValueError(f"{root}: no dataset in the benchmark format there (expected {meta_root}/<split>/)")
    num_classes = None
    if (root / "class_names.txt").is_file():
        num_classes = len(read_class_names(root / "class_names.txt"))
    splits = split_dirs(meta_root)
    if not splits:
        raise UserValueError(f"{meta_root}: no split folders")

    def first_problem(check_files: bool) -> None:
        problems = [p for s in splits for p in check_split(
            s, num_classes=num_classes, strict=False, image_root=root / "images" if check_files else None,
            mask_root=root / "masks" if check_files else None)] + [p for ps in leaked_images(meta_root).values() for p in ps]
        if problems:
            more = f" (and {len(problems) - 1} more problem(s): cream-pl data check --files {root})" \
                if len(problems) > 1 else ""
            raise UserValueError(f"{problems[0]}{more}")

    first_problem(False)  # metadata and labels: cheap, every time
    if files:
        images: list[Path] = []
        for s in splits:
            for sample in read_split(s).samples:
                images.append(root / "images" / sample.image_id)
        stamp = files_stamp(images, salt=f"cream-pl pipeline data check v2|{root.resolve()}")
        check_once(stamp, lambda: first_problem(True))
    return root


def preset_name(text: str) -> str:
    """``type=`` of a ``--preset`` option: one of the synthetic generator's presets (``cub``, ``hard``)."""
    from cream_pl.data.synth import PRESETS

    if text not in PRESETS:
        raise argparse.ArgumentTypeError(f"unknown preset {text!r}; known: {sorted(PRESETS)}")
    return text


def preflight(
    *,
    outputs: Iterable[tuple[Path | str | None, str]] = (),
    inputs: Iterable[tuple[Path | str | None, str]] = (),
    data: Path | str | None = None,
    files: bool = True,
) -> None:
    """Before any long work: every ``(file, option name)`` of ``inputs`` must be an existing file,
    every ``(folder, option name)`` of ``outputs`` must be usable as an output folder, and ``data``
    (when given) must pass :func:`check_dataset_root`.

    Raises:
        UserFileNotFoundError, UserValueError: the first problem, one line naming the path.
    """
    for path, what in inputs:
        if path is not None and not Path(path).is_file():
            raise UserFileNotFoundError(f"{path}: file not found ({what})")
    for path, what in outputs:
        if path is not None:
            check_output_dir(path, what)
    if data is not None:
        check_dataset_root(data, files=files)

