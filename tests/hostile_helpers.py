"""What the hostile-input tests share: calling a command in-process and asserting its one-line refusal."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test its own cache of checked files (a file checked once is never checked again)."""
    monkeypatch.setenv("CREAM_PL_CACHE_DIR", str(tmp_path / "cache"))


def call(fn: Callable[[Sequence[str]], int | None], argv: Sequence[str], capfd: pytest.CaptureFixture[str]
         ) -> tuple[int, str]:
    """``fn(argv)``'s exit status and everything it wrote (stdout + stderr, C-level writes included)."""
    capfd.readouterr()
    try:
        rc = fn(list(argv))
    except SystemExit as exit_:
        code = exit_.code
        rc = code if isinstance(code, int) else (0 if code is None else 1)
        if isinstance(code, str):
            print(code, file=sys.stderr)
    out = capfd.readouterr()
    return int(rc or 0), out.out + out.err


def assert_one_line(rc: int, text: str, *named: object, exact: bool = False) -> str:
    """Exit status != 0 (``exact``: 2 and one line), at most two lines, no traceback, every ``named`` thing in it."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert rc == 2 if exact else rc != 0, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert (len(lines) == 1) if exact else (1 <= len(lines) <= 2), f"{len(lines)} lines:\n{text[-3000:]}"
    for thing in named:
        assert str(thing) in text, f"{thing} not named in:\n{text}"
    return lines[-1]
