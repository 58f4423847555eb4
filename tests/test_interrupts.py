"""Ctrl-C and SIGTERM end a command in one line and status 130 / 143 (cream_pl.core.interrupts), in real processes.

Before: Ctrl-C outside a Lightning call printed Python's KeyboardInterrupt traceback, and SIGTERM (``kill``,
``timeout``) inside a fit ended it with status 0 (Lightning's SIGTERMException is a SystemExit without a code).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cream_pl.core.interrupts import Terminated, stop_message
from cream_pl.data.synth import generate_synthetic_dataset

CREAM_PL = str(Path(sys.executable).with_name("cream-pl"))
ENV = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}


def _signal_when(argv: list[str], ready: Path, signum: int, group: bool, timeout: float = 240) -> tuple[int, str]:
    """Run ``argv``, send ``signum`` once ``ready`` exists (to its process group: Ctrl-C in a terminal; or to the
    process alone: ``kill``), and return its status and stderr."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV,
                            start_new_session=True)
    start = time.time()
    while proc.poll() is None and not ready.exists() and time.time() - start < timeout:
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1][-3000:]  # it was still working when the signal came
    time.sleep(0.5)
    os.killpg(proc.pid, signum) if group else os.kill(proc.pid, signum)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def test_stop_messages() -> None:
    assert stop_message(KeyboardInterrupt())[1] == 130 and stop_message(Terminated())[1] == 143
    assert stop_message(RuntimeError("DataLoader worker (pid 3) is killed by signal: Terminated. "))[1] == 143
    assert stop_message(RuntimeError("DataLoader worker (pid 3) is killed by signal: Killed. ")) is None
    assert stop_message(SystemExit(1)) is None  # argparse, or a command's own status: it stands
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            sys.exit(1)  # what Lightning does after its graceful shutdown
    except SystemExit as err:
        assert stop_message(err) == ("interrupted (Ctrl-C); the work finished before it is kept", 130)


def test_an_entry_point_called_in_process_gives_its_caller_back_its_sigterm_handler(tmp_path: Path) -> None:
    """Before: the handler stayed after cream-pl's main returned, so SIGTERM to the embedding process (pytest under
    ``timeout``, a notebook) raised Terminated in whatever ran next instead of ending it."""
    from cream_pl.cli.app import main
    from cream_pl.core.interrupts import sigterm_raises

    before = signal.getsignal(signal.SIGTERM)
    assert main(["data", "synth", "--out", str(tmp_path / "d"), "--num-train", "8", "--num-val", "2", "--num-test", "2",
                 "--num-classes", "2"]) == 0
    assert signal.getsignal(signal.SIGTERM) is before
    with sigterm_raises():
        assert signal.getsignal(signal.SIGTERM) is not before
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs at the next bytecode
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_multi_process_run_leaves_sigterm_to_lightning_only_where_its_loops_look(monkeypatch) -> None:
    """Lightning's fit/validate/test loops stop every rank at a batch boundary; its predict loop never looks, and
    outside a trainer call nothing would: there SIGTERM raises (before: a multi-process run ignored it)."""
    from types import SimpleNamespace

    from cream_pl.core import interrupts

    class Connector:
        def __init__(self, fn: str) -> None:
            self.trainer = SimpleNamespace(state=SimpleNamespace(fn=SimpleNamespace(value=fn)))

        def notify(self, signum, frame) -> None:
            pass

    monkeypatch.setattr(interrupts, "_multi_process_run", lambda: True)
    for fn, leaves in (("fit", True), ("test", True), ("predict", False)):
        compose = SimpleNamespace(signal_handlers=[Connector(fn).notify, interrupts._on_sigterm])
        monkeypatch.setattr(signal, "getsignal", lambda signum, c=compose: c)
        assert interrupts._lightning_stops_every_rank() is leaves, fn
    monkeypatch.setattr(signal, "getsignal", lambda signum: interrupts._on_sigterm)  # no trainer at work
    assert interrupts._lightning_stops_every_rank() is False
    monkeypatch.setattr(interrupts, "_multi_process_run", lambda: False)
    assert interrupts._lightning_stops_every_rank() is False


@pytest.mark.parametrize("signum, status, words", [(signal.SIGINT, 130, "interrupted (Ctrl-C)"),
                                                   (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_a_stopped_data_synth_is_one_line(tmp_path: Path, signum: int, status: int, words: str) -> None:
    out = tmp_path / "d"
    rc, err = _signal_when([CREAM_PL, "data", "synth", "--out", str(out), "--num-train", "20000"],
                           out / "images", signum, group=True)
    assert rc == status and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == f"cream-pl data: {words}; the work finished before it is kept"


@pytest.mark.slow  # a real fit on the CPU until its first checkpoint, then SIGTERM: about 30 s
def test_sigterm_stops_a_fit_with_status_143_not_0(tmp_path: Path) -> None:
    root = generate_synthetic_dataset(tmp_path / "data", seed=1, num_classes=3, num_train=12, num_val=6, num_test=6,
                                      min_side=72, max_side=96, overwrite=True)
    ckpts = tmp_path / "ckpts"
    cfg = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1000, "logger": False,
                    "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
                    "default_root_dir": str(tmp_path / "run"),
                    "callbacks": [{"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                                   "init_args": {"dirpath": str(ckpts), "save_last": True}}]},
        "model": {"class_path": "cream_pl.models.WSOLClassifier",
                  "init_args": {"pretrained": False, "eval_size": 64, "cam_curve_interval": 0.1, "num_media_images": 0}},
        "data": {"class_path": "cream_pl.data.WSOLDataModule",
                 "init_args": {"data_root": str(root), "batch_size": 6, "num_workers": 1, "resize_size": 72,
                               "crop_size": 64, "eval_size": 64}},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    rc, err = _signal_when([CREAM_PL, "fit", "--config", str(tmp_path / "cfg.yaml")], ckpts / "last.ckpt",
                           signal.SIGTERM, group=False)  # `kill <pid>`: the process alone
    assert rc == 143 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == "cream-pl fit: terminated (SIGTERM); the work finished before it is kept"
    assert (ckpts / "last.ckpt").is_file() and not list(tmp_path.rglob("*.tmp"))  # kept, no debris
