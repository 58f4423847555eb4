"""Output files: atomic writes honour the umask; a bad ``--out`` fails in one line before any work."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_data_cub import make_cub

from cream_pl.cli import main
from cream_pl.core.errors import UserError
from cream_pl.core.io import (
    atomic_copy_file,
    atomic_write_bytes,
    atomic_write_text,
    check_output_dir,
    check_output_file,
)
from cream_pl.models import WSOLClassifier
from cream_pl.pipelines.localize import localize
from cream_pl.pseudo_boxes.generate import atomic_write_text as pseudo_box_write
from cream_pl.reporting.tables import write_json_atomic, write_markdown_atomic
from cream_pl.reporting.viz import plot_box_acc_curves

os.environ.setdefault("WANDB_MODE", "disabled")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o022, 0o027, 0o002], ids=lambda m: f"umask{m:03o}")
def umask(request) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def test_every_atomic_writer_honours_the_umask(tmp_path, umask):
    src = tmp_path / "src.bin"
    src.write_bytes(b"ckpt")
    written = [
        atomic_write_bytes(tmp_path / "a.bin", b"x"),
        atomic_write_text(tmp_path / "b.txt", "x"),
        atomic_copy_file(src, tmp_path / "c.bin"),
        write_json_atomic({"a": 1}, tmp_path / "metrics.json"),  # results/embedded/*.json
        write_markdown_atomic("| a |", tmp_path / "metrics.md"),  # results/embedded/*.md
        plot_box_acc_curves({"cam": (np.linspace(0, 1, 5), np.full((3, 5), 50.0))}, [30, 50, 70],
                            tmp_path / "curves.png"),  # results/embedded/*.png
    ]
    pseudo_box_write(tmp_path / "boxes.json", "{}")  # the pseudo-box JSON writer
    written += [tmp_path / "boxes.json"]
    want = 0o666 & ~umask
    assert {p.name: oct(_mode(p)) for p in written} == {p.name: oct(want) for p in written}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary file left


def test_a_killed_writers_temporary_file_goes_with_the_next_process_writing_there(tmp_path):
    """SIGKILL runs no ``finally``: the half-written temporary file of an atomic write stays. The next process
    that writes into that folder removes it; a live writer's file in the same folder is left alone."""
    import signal
    import subprocess
    import sys
    import time

    fifo = tmp_path / "slow_source"
    os.mkfifo(fifo)
    code = ("import sys; from cream_pl.core.io import atomic_copy_file; "
            "atomic_copy_file(sys.argv[1], sys.argv[2])")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(fifo), str(tmp_path / name)])
             for name in ("killed.bin", "live.bin")]
    writers = []
    try:
        with open(fifo, "wb") as feed:  # both writers read the FIFO: each holds its temporary file open
            feed.write(b"x" * 100)
            feed.flush()
            deadline = time.monotonic() + 60
            while len(writers) < 2 and time.monotonic() < deadline:
                writers = sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp"))
                time.sleep(0.05)
            assert len(writers) == 2, writers
            killed = next(p for p in procs if any(f"-{p.pid}." in w for w in writers))
            live = next(p for p in procs if p is not killed)
            killed.send_signal(signal.SIGKILL)
            killed.wait(30)
            debris = [w for w in writers if f"-{killed.pid}." in w]
            assert (tmp_path / debris[0]).exists()  # what SIGKILL leaves
            subprocess.run([sys.executable, "-c", "import sys; from cream_pl.core.io import atomic_write_text; "
                            "atomic_write_text(sys.argv[1], 'x')", str(tmp_path / "next.txt")], check=True)
            left = sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp"))
            assert left == [w for w in writers if f"-{live.pid}." in w]  # the killed writer's went, the live one's stays
    finally:
        for p in procs:
            p.kill()
            p.wait(30)


def test_replacing_a_file_keeps_its_mode_like_open(tmp_path):
    path = tmp_path / "shared.json"
    path.write_text("old")
    path.chmod(0o664)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and _mode(path) == 0o664


def test_localize_outputs_honour_the_umask(tmp_path, umask):
    cv2.imwrite(str(tmp_path / "a.png"), np.full((40, 50, 3), 90, np.uint8))
    model = WSOLClassifier(num_classes=2, pretrained=False, eval_size=32)
    out = tmp_path / "out"
    localize(model, [tmp_path / "a.png"], out, method="cam")
    files = [out / "predictions.json", out / "overlays" / "a.png"]
    assert [oct(_mode(p)) for p in files] == [oct(0o666 & ~umask)] * 2


# ---------------------------------------------------------------------------------------------- --out checks


def test_output_checks(tmp_path):
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    check_output_dir(tmp_path / "new" / "dir")
    check_output_file(tmp_path / "new" / "x.json")
    with pytest.raises(ValueError, match="must be a folder, but it is an existing file"):
        check_output_dir(a_file)
    with pytest.raises(ValueError, match=f"must be a folder, but {a_file} is a file"):
        check_output_dir(a_file / "sub" / "dir")
    with pytest.raises(ValueError, match="must be a file path, but it is an existing folder"):
        check_output_file(tmp_path)
    with pytest.raises(ValueError, match=f"{a_file} is a file, not a folder"):
        check_output_file(a_file / "x.json")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="must be a folder, but it is a device, pipe or socket"):  # was "a file"
        check_output_dir(fifo)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_output_checks_try_the_write_where_permissions_say_yes(tmp_path, capsys, monkeypatch):
    """Under ``/proc`` (or a read-only mount) ``os.access`` says writable to root, and the write failed after the work."""
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: True)  # root's answer, whoever runs the test
    for bad in ("/proc/cream-pl-out", "/proc/cream-pl-out/sub"):
        with pytest.raises(UserError, match=f"^{bad}: --out cannot be created in /proc: "):
            check_output_dir(bad)
    with pytest.raises(UserError, match="^/proc/cream-pl.json: --out cannot be created in /proc: "):
        check_output_file("/proc/cream-pl.json")
    check_output_dir(tmp_path)
    check_output_dir(tmp_path / "new" / "dir")
    assert [p.name for p in tmp_path.iterdir()] == []  # the checks leave nothing behind
    ckpt = tmp_path / "cls.ckpt"
    ckpt.write_bytes(b"never read")
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    assert main(["localize", "--ckpt", str(ckpt), str(tmp_path / "a.png"), "--out", "/proc/cream-pl-out"]) == 2
    _one_error_line(capsys, "cream-pl localize: error: /proc/cream-pl-out: --out cannot be created in /proc")


def test_an_existing_output_file_needs_a_writable_folder(tmp_path, monkeypatch):
    """The file is replaced through a temporary file in its folder: a writable file in a read-only folder failed
    after the work (the check asked only whether the file itself was writable)."""
    out = tmp_path / "ro" / "x.json"
    out.parent.mkdir()
    out.write_text("{}")
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == out.parent else real(p, mode, **kw))
    with pytest.raises(UserError, match=f"^{out}: --out cannot be replaced: {out.parent} is not writable$"):
        check_output_file(out)
    monkeypatch.setattr(os, "access", real)
    assert check_output_file(out) == out and sorted(p.name for p in out.parent.iterdir()) == ["x.json"]


def _one_error_line(capsys, prefix: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(prefix), lines[0]
    return lines[0]


@pytest.mark.parametrize("where", ["is_file", "under_file"])
def test_localize_bad_out_fails_before_loading_anything(tmp_path, capsys, monkeypatch, where):
    import cream_pl.pipelines.localize as loc

    def must_not_run(*args, **kwargs):
        raise AssertionError("the classifier was loaded before --out was checked")

    monkeypatch.setattr(loc, "_load_classifier", must_not_run)
    ckpt = tmp_path / "cls.ckpt"
    ckpt.write_bytes(b"never read")
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    out = blocker if where == "is_file" else blocker / "predictions"
    assert main(["localize", "--ckpt", str(ckpt), str(tmp_path / "a.png"), "--out", str(out)]) == 2
    line = _one_error_line(capsys, f"cream-pl localize: error: {out}: --out must be a folder")
    assert str(blocker) in line
    assert blocker.read_text() == "a file"


def test_localize_predictions_json_that_is_a_folder(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "predictions.json").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    model = WSOLClassifier(num_classes=2, pretrained=False, eval_size=32)
    with pytest.raises(ValueError, match="predictions.json: --out/predictions.json must be a file path"):
        localize(model, [tmp_path / "a.png"], out, method="cam")
    assert not (out / "overlays").exists()  # nothing was written before the check


@pytest.mark.parametrize("where", ["is_file", "under_file"])
def test_data_synth_bad_out_fails_in_one_line(tmp_path, capsys, where):
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    out = blocker if where == "is_file" else blocker / "synth"
    argv = ["data", "synth", "--out", str(out), "--num-classes", "2", "--num-train", "2", "--num-val", "2",
            "--num-test", "2", "--min-side", "64", "--max-side", "64"]
    assert main(argv) == 2
    line = _one_error_line(capsys, f"cream-pl data synth: error: {out}: --out must be a folder")
    assert str(blocker) in line
    assert blocker.read_text() == "a file"


def test_data_cub_bad_out_fails_before_reading_images(tmp_path, capsys, monkeypatch):
    import cream_pl.data.cub as cub

    src = make_cub(tmp_path / "cub")
    headers: list[Path] = []
    real = cub.read_image_size
    monkeypatch.setattr(cub, "read_image_size", lambda p: (headers.append(p), real(p))[1])
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    assert main(["data", "cub", "--src", str(src), "--out", str(blocker / "cub")]) == 2
    _one_error_line(capsys, f"cream-pl data cub: error: {blocker / 'cub'}: --out must be a folder, but {blocker}")
    assert headers == []  # the check came before the work
    assert main(["data", "cub", "--src", str(src), "--out", str(tmp_path / "ok")]) == 0
    assert headers  # and a good --out goes on to read them
