"""Output paths of the command-line tools: checked before any work starts, written atomically.

Light on purpose (standard library only): the sub-commands call these checks right after
argument parsing, before they import torch or read any data.

Example:
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> check_output_file(root / "scores.json", "--out")
    >>> check_output_dir(root / "maps", "--out")
    >>> _ = (root / "f").write_text("x")
    >>> try:
    ...     check_output_dir(root / "f", "--out")
    ... except OutputPathError as err:
    ...     print(str(err).split(": ", 1)[1])
    is an existing file, not a directory
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["OutputPathError", "check_output_file", "check_output_dir", "write_bytes_atomic", "write_text_atomic"]


class OutputPathError(ValueError):
    """An output path that cannot be written; the message is one line starting with ``<flag> <path>:``."""


def _blocking_file(path: Path) -> Path | None:
    """The first existing ancestor of ``path`` that is not a directory (it blocks ``mkdir -p``)."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def check_output_file(path: str | os.PathLike[str], flag: str = "--out") -> None:
    """``path`` will be written as a file: it must not be a directory nor lie under a file.

    Raises:
        OutputPathError: one line naming the path (and the blocking file).
    """
    p = Path(path)
    if p.is_dir():
        raise OutputPathError(f"{flag} {p}: is a directory; give a file name, e.g. {p / 'scores.json'}")
    blocker = _blocking_file(p)
    if blocker is not None:
        raise OutputPathError(f"{flag} {p}: cannot be created because {blocker} is a file, not a directory")


def check_output_dir(path: str | os.PathLike[str], flag: str = "--out") -> None:
    """``path`` will hold output files: it must be a directory or not exist yet, and not lie under a file.

    Raises:
        OutputPathError: one line naming the path (and the blocking file).
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"{flag} {p}: is an existing file, not a directory")
    blocker = _blocking_file(p)
    if blocker is not None:
        raise OutputPathError(f"{flag} {p}: cannot be created because {blocker} is a file, not a directory")


def write_bytes_atomic(data: bytes, path: str | os.PathLike[str]) -> Path:
    """Write ``data`` to a temporary file next to ``path``, then rename it over ``path``.

    A reader never sees a half-written file, and an interrupted write leaves no file behind.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def write_text_atomic(text: str, path: str | os.PathLike[str]) -> Path:
    """UTF-8 :func:`write_bytes_atomic`."""
    return write_bytes_atomic(text.encode("utf-8"), path)
