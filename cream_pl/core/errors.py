"""User errors: problems with the user's input, files or environment, reported as one line.

A :class:`UserError` message already says everything the user needs, and names the file (and
the line, where there is one): the command-line front ends print ``cream-pl <command>: error:
<message>`` and exit with status 2, without a traceback. Programming errors keep their
traceback.

A user error can reach the front end wrapped by other code:

- ``jsonargparse`` (the Lightning CLI) raises "Does not validate against any of the Union
  subtypes ..." ``from`` the original exception, so the original is in the ``__cause__`` chain;
- PyTorch re-raises an exception of a ``DataLoader`` worker as ``exc_type(msg)`` (or a
  ``RuntimeError(msg)`` when ``exc_type`` cannot be built from one string), where ``msg`` is
  ``"Caught X in DataLoader worker process N.\\nOriginal Traceback ...`` and its last line is the
  original ``module.X: message``.

:func:`user_error_message` finds the clean message in both cases.

Example:
    >>> try:
    ...     try:
    ...         raise UserFileNotFoundError("/no/such.pth: pretrained weights file not found")
    ...     except FileNotFoundError as err:
    ...         raise ValueError("Does not validate against any of the Union subtypes") from err
    ... except ValueError as err:
    ...     print(user_error_message(err))
    /no/such.pth: pretrained weights file not found
"""

from __future__ import annotations

import importlib
import re
import sys

__all__ = [
    "end_progress_bars",
    "UserError",
    "UserValueError",
    "UserFileNotFoundError",
    "UserRuntimeError",
    "exception_chain",
    "user_error_message",
]

class UserError(Exception):
    """A problem the user can fix (bad input file, bad option, missing weights, unwritable output).

    The message is one line and names the file (``<file>:<line>: ...`` where a line is known).
    """


class UserValueError(UserError, ValueError):
    """A :class:`UserError` that is also a ``ValueError`` (bad content or option)."""


class UserFileNotFoundError(UserError, FileNotFoundError):
    """A :class:`UserError` that is also a ``FileNotFoundError`` (a file the user named is missing)."""


class UserRuntimeError(UserError, RuntimeError):
    """A :class:`UserError` that is also a ``RuntimeError`` (e.g. weights that cannot be downloaded)."""


_WORKER = re.compile(r"^(Caught (?P<name>\w+) in DataLoader worker process \d+\."
                     r"|-- Process \d+ terminated with the following error:)")  # torch's spawn (ddp_spawn)
_LAST_LINE = re.compile(r"^(?P<cls>[A-Za-z_][\w.]*): (?P<msg>.*)$")


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " ".join(lines)


def _resolve(dotted: str) -> type | None:
    """The exception class named ``module.Name`` (already imported modules only), or ``None``."""
    module, _, name = dotted.rpartition(".")
    if not module:
        return None
    mod = sys.modules.get(module)
    if mod is None:
        try:
            mod = importlib.import_module(module)
        except Exception:  # noqa: BLE001 - not ours to import: not a user error
            return None
    cls = getattr(mod, name, None)
    return cls if isinstance(cls, type) else None


def _worker_message(exc: BaseException) -> str | None:
    """The original message of a user error re-raised from a ``DataLoader`` worker or a process ``torch``'s spawn
    started (``ddp_spawn``), or ``None``."""
    text = (str(exc.args[0]) if exc.args and isinstance(exc.args[0], str) else str(exc)).strip()
    if not _WORKER.match(text):
        return None
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    match = _LAST_LINE.match(lines[-1].strip()) if lines else None
    if match is None:
        return None
    cls = _resolve(match["cls"])
    if cls is None or not issubclass(cls, UserError):
        return None
    return _one_line(match["msg"])


def _lightning_misconfiguration(err: BaseException) -> bool:
    """Lightning's ``MisconfigurationException``: a trainer, callback or logger setting the user chose that does not
    work together (a ``LearningRateMonitor`` without a logger), raised when the fit starts: a user error too."""
    cls = type(err)
    return cls.__name__ == "MisconfigurationException" and cls.__module__.split(".")[0] in (
        "lightning", "pytorch_lightning", "lightning_fabric")


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message of the :class:`UserError` behind ``exc``, or ``None`` for other errors.

    Looks at ``exc`` itself, then its ``__cause__`` / ``__context__`` chain, and parses the
    message PyTorch builds when it re-raises a worker's exception.

    Example:
        >>> user_error_message(RuntimeError(
        ...     "Caught ImageFileError in DataLoader worker process 0.\\nOriginal Traceback (most recent call "
        ...     "last):\\n  File ...\\ncream_pl.data.images.ImageFileError: /d/a.jpg: truncated image file"))
        '/d/a.jpg: truncated image file'
        >>> user_error_message(RuntimeError("\\n\\n-- Process 1 terminated with the following error:\\nTraceback (most "
        ...     "recent call last):\\n  File ...\\ncream_pl.core.errors.UserValueError: batch_size 7 must divide"))
        'batch_size 7 must divide'
        >>> user_error_message(KeyError("x")) is None
        True
    """
    for err in exception_chain(exc):
        if isinstance(err, UserError) or _lightning_misconfiguration(err):
            return _one_line(str(err)) or type(err).__name__
        worker = _worker_message(err)
        if worker is not None:
            return worker
    return None


def end_progress_bars() -> None:
    """Start a fresh line on stderr where a progress bar (tqdm: Lightning's) is still drawn on it, so that an error or
    stop line that follows is a line of its own (before: glued to the end of the bar)."""
    tqdm = sys.modules.get("tqdm.std")
    bars = getattr(getattr(tqdm, "tqdm", None), "_instances", None)
    if bars and any(not getattr(bar, "disable", True) for bar in list(bars)):
        sys.stderr.write("\n")
        sys.stderr.flush()


def exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions behind it (``__cause__``, then ``__context__``), breadth first, each once.

    Example:
        >>> try:
        ...     try:
        ...         raise KeyError("inner")
        ...     except KeyError as inner:
        ...         raise ValueError("outer") from inner
        ... except ValueError as outer:
        ...     [type(e).__name__ for e in exception_chain(outer)]
        ['ValueError', 'KeyError']
    """
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        err = todo.pop(0)
        if all(err is not s for s in seen):
            seen.append(err)
            todo.extend(e for e in (err.__cause__, err.__context__) if e is not None)
    return seen
