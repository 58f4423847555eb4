"""A ``fit`` killed with SIGKILL after its first epoch resumes from ``last.ckpt`` where it stopped.

The first run is a real process (real Trainer, tiny embedded data, the ``ModelCheckpoint`` of the
embedded recipe ``experiments/embedded_cream.yaml``) killed by the test with SIGKILL once epoch 0 has
ended and epoch 1 has begun: its ``last.ckpt`` must hold epoch 0 (Lightning >= 2.5 writes
``last.ckpt`` only when a top-k checkpoint is written, so ``save_top_k: 0`` would leave nothing to
resume from until the run ends). The resumed
run (``ckpt_path="last"``) must start at epoch 1 with the saved step, weights and CREAM context
state, and end with the same epoch and step counts as a run that was never interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import ModelCheckpoint

from cream_pl.data import WSOLDataModule, generate_synthetic_dataset
from cream_pl.models import WSOLClassifier

os.environ.setdefault("WANDB_MODE", "disabled")

SIZE = 64
EPOCHS = 3
STEPS_PER_EPOCH = 2  # 12 train images, batch 6

_COMMON = textwrap.dedent(
    f"""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint
    from cream_pl.data import WSOLDataModule
    from cream_pl.models import WSOLClassifier

    def parts(data, ckpt_dir, checkpoint_kwargs, extra=()):
        dm = WSOLDataModule(data, batch_size=6, resize_size=72, crop_size={SIZE}, eval_size={SIZE})
        model = WSOLClassifier(num_classes=3, pretrained=False, cam_curve_interval=0.1, eval_size={SIZE}, lr=0.01)
        trainer = pl.Trainer(max_epochs={EPOCHS}, accelerator="cpu", devices=1, logger=False,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                             default_root_dir=ckpt_dir, callbacks=[
                                 ModelCheckpoint(**{{**checkpoint_kwargs, "dirpath": ckpt_dir}}), *extra])
        return dm, model, trainer
    """
)

_KILLED_RUN = _COMMON + textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path

    class Hang(pl.Callback):
        # epoch 0's checkpoint is written; say so and wait to be killed in the middle of epoch 1
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 1:
                Path(sys.argv[3]).write_text(str(trainer.global_step))
                time.sleep(600)

    pl.seed_everything(0)
    dm, model, trainer = parts(sys.argv[1], sys.argv[2], json.loads(sys.argv[4]), [Hang()])
    trainer.fit(model, dm)
    """
)


def recipe_checkpoint_kwargs(recipe: str = "experiments/embedded_cream.yaml") -> dict:
    """``init_args`` of the recipe's ``ModelCheckpoint`` (the run's checkpoints, as ``cream-pl fit`` makes them)."""
    callbacks = yaml.safe_load(Path(recipe).read_text())["trainer"]["callbacks"]
    (ckpt,) = [c for c in callbacks if c["class_path"].endswith("ModelCheckpoint")]
    return dict(ckpt.get("init_args") or {})


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return generate_synthetic_dataset(tmp_path_factory.mktemp("synth"), seed=1, num_classes=3, num_train=12,
                                      num_val=6, num_test=6, min_side=72, max_side=96, image_format="png",
                                      overwrite=True)


def _kill_after_first_checkpoint(data: Path, ckpt_dir: Path, tmp_path: Path) -> int:
    script, ready = tmp_path / "killed_run.py", tmp_path / "in_epoch_1"
    script.write_text(_KILLED_RUN)
    env = {**os.environ, "WANDB_MODE": "disabled", "CREAM_PL_CACHE_DIR": str(tmp_path / "cache")}
    argv = [sys.executable, str(script), str(data), str(ckpt_dir), str(ready), json.dumps(recipe_checkpoint_kwargs())]
    proc = subprocess.Popen(argv, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not ready.exists():
            if proc.poll() is not None:
                pytest.fail(f"the first run ended before it was killed:\n{proc.stdout.read()}")
            if time.monotonic() > deadline:
                pytest.fail("the first run did not reach epoch 1 in 300 s")
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    return int(ready.read_text())


class _Record(pl.Callback):
    def __init__(self) -> None:
        self.epochs: list[int] = []
        self.first_step: int | None = None
        self.first_weights: dict[str, torch.Tensor] | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epochs.append(trainer.current_epoch)
        if self.first_step is None:
            self.first_step = trainer.global_step
            self.first_weights = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def test_killed_fit_resumes_from_last_ckpt(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("CREAM_PL_CACHE_DIR", str(tmp_path / "cache"))
    ckpt_dir = tmp_path / "checkpoints"
    step_at_kill = _kill_after_first_checkpoint(tiny_data, ckpt_dir, tmp_path)
    assert step_at_kill == STEPS_PER_EPOCH
    last = ckpt_dir / "last.ckpt"
    assert last.is_file(), f"the recipe's ModelCheckpoint {recipe_checkpoint_kwargs()} left no last.ckpt after epoch 0"
    saved = torch.load(last, map_location="cpu", weights_only=False)
    assert saved["epoch"] == 0 and saved["global_step"] == STEPS_PER_EPOCH  # what the killed run left

    pl.seed_everything(0)
    record = _Record()
    dm = WSOLDataModule(str(tiny_data), batch_size=6, resize_size=72, crop_size=SIZE, eval_size=SIZE)
    model = WSOLClassifier(num_classes=3, pretrained=False, cam_curve_interval=0.1, eval_size=SIZE, lr=0.01)
    trainer = pl.Trainer(max_epochs=EPOCHS, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(ckpt_dir),
                         callbacks=[ModelCheckpoint(**{**recipe_checkpoint_kwargs(), "dirpath": str(ckpt_dir)}), record])
    trainer.fit(model, dm, ckpt_path="last")

    # it continued from the saved step, with the saved weights and CREAM state ...
    assert record.epochs == [1, 2]
    assert record.first_step == STEPS_PER_EPOCH
    for key, value in saved["state_dict"].items():
        torch.testing.assert_close(record.first_weights[key], value, rtol=0, atol=0, msg=key)
    # ... and ended where an uninterrupted run ends
    assert trainer.current_epoch == EPOCHS and trainer.global_step == EPOCHS * STEPS_PER_EPOCH
    assert int(model.context.num_updates) == EPOCHS * 12  # one CREAM update per training image and epoch
    final = torch.load(last, map_location="cpu", weights_only=False)
    assert final["epoch"] == EPOCHS - 1 and final["global_step"] == EPOCHS * STEPS_PER_EPOCH
    assert final["optimizer_states"][0]["state"]  # the optimizer (momentum) state was carried over
    assert torch.isfinite(model.val_best_threshold).all()
