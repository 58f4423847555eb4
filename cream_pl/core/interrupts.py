"""A stopped command ends in one line and a non-zero status, like a bad input.

Ctrl-C (SIGINT) outside a Lightning call printed Python's whole ``KeyboardInterrupt`` traceback, and
SIGTERM (``kill``, ``timeout``, ``docker stop``, a scheduler) either killed the process without a word,
or, inside a Lightning call, was taken by Lightning's own handler: training ended with status 0 (its
``SIGTERMException`` is a ``SystemExit`` without a code), and predict and test went on to the end.

:func:`sigterm_raises` (around every entry point) makes SIGTERM raise :class:`Terminated` in the
main thread, so each ``finally`` and atomic-write cleanup runs (no ``.tmp`` file is left behind) and
Lightning tears its trainer down; Lightning chains its own handler before this one. A forked
DataLoader worker still dies as the signal asks, and in a run of several processes Lightning's own stop (every
rank at a batch boundary) is left to work. :func:`stop_message` turns each way of stopping into
the entry point's line and status: 130 for Ctrl-C, 143 for SIGTERM (128 + the signal number).

Example:
    >>> stop_message(KeyboardInterrupt())
    ('interrupted (Ctrl-C); the work finished before it is kept', 130)
    >>> stop_message(ValueError("x")) is None
    True
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["Terminated", "report_stop", "sigterm_raises", "stop_message"]


class Terminated(BaseException):
    """SIGTERM reached the process (a ``BaseException``, like ``KeyboardInterrupt``: never caught as an error)."""


_MAIN_PID: int | None = None


def _multi_process_run() -> bool:
    """Whether a distributed group of several processes is up (a DDP trainer at work)."""
    import sys

    dist = sys.modules.get("torch.distributed")
    try:
        return bool(dist is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)
    except Exception:  # noqa: BLE001 - a group being torn down: not one to wait for
        return False


def _on_sigterm(signum: int, frame: Any) -> None:
    if os.getpid() != _MAIN_PID:  # a forked process inherited the handler: die as the signal asks
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    if _lightning_stops_every_rank():  # its SIGTERMException at a batch boundary, on every rank: leaving
        return  # mid-collective would hang the others
    raise Terminated()


def _lightning_stops_every_rank() -> bool:
    """Whether Lightning's SIGTERM handler (chained before this one) is installed by a trainer that is fitting,
    validating or testing in a run of several processes: those loops stop every rank at a batch boundary. Its
    predict loop never looks, and outside a trainer call nothing would stop the process."""
    if not _multi_process_run():
        return False
    for handler in getattr(signal.getsignal(signal.SIGTERM), "signal_handlers", ()):
        trainer = getattr(getattr(handler, "__self__", None), "trainer", None)
        fn = getattr(getattr(trainer, "state", None), "fn", None)
        if getattr(fn, "value", None) in ("fit", "validate", "test"):
            return True
    return False


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block SIGTERM raises :class:`Terminated` in this process's main thread; the handler before it
    comes back after (an embedding process, pytest, a notebook, keeps its own). Nothing changes where another
    handler is installed, or outside the main thread (where ``signal`` cannot be used)."""
    global _MAIN_PID
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGTERM)
    if before is not signal.SIG_DFL:  # someone else's (or one installed outside Python), or ours (nested)
        yield
        return
    pid, _MAIN_PID = _MAIN_PID, os.getpid()
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)  # a SIGTERM now ends the process by the default action
        _MAIN_PID = pid


_KEPT = "the work finished before it is kept"


def report_stop(err: BaseException, prog: str) -> int | None:
    """Say, in one line on stderr, that ``prog`` was stopped by Ctrl-C or SIGTERM, and return its exit status;
    ``None`` (nothing said) for any other exception."""
    import sys

    from cream_pl.core.errors import end_progress_bars

    stop = stop_message(err)
    if stop is None:
        return None
    end_progress_bars()
    print(f"{prog}: {stop[0]}", file=sys.stderr, flush=True)
    return stop[1]


def stop_message(err: BaseException) -> tuple[str, int] | None:
    """``(line, exit status)`` for a command stopped by Ctrl-C or SIGTERM, ``None`` for anything else.

    SIGTERM shows as :class:`Terminated`, as Lightning's ``SIGTERMException`` (another process of a distributed run
    got it), or as the ``RuntimeError`` a DataLoader raises when SIGTERM killed its worker first.
    """
    if isinstance(err, KeyboardInterrupt) or (isinstance(err, SystemExit) and err.code == 1
                                              and isinstance(err.__context__, KeyboardInterrupt)):
        return f"interrupted (Ctrl-C); {_KEPT}", 130  # the second: Lightning's sys.exit(1) after its graceful shutdown
    if isinstance(err, Terminated) or type(err).__name__ == "SIGTERMException":
        return f"terminated (SIGTERM); {_KEPT}", 143
    if isinstance(err, RuntimeError) and "DataLoader worker" in str(err) and "killed by signal: Terminated" in str(err):
        return f"terminated (SIGTERM); {_KEPT}", 143
    return None
