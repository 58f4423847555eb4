"""One-line user errors: ``cream-pl fit`` on bad images, bad labels and missing weights, for real.

Every test runs the real command (``cream_pl.cli.main``, Lightning CLI, real Trainer and
DataLoader workers, real JPEG files) and checks that it ends with exit status 2 and one line
``cream-pl fit: error: <file>...`` on stderr, without a traceback.
"""

from __future__ import annotations

import os
import shutil
import sys
import urllib.error
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torchvision
import yaml
from torch.utils.data import DataLoader

from cream_pl.cli import main
from cream_pl.core.errors import UserError, UserFileNotFoundError, user_error_message
from cream_pl.data import WSOLDataModule, generate_synthetic_dataset
from cream_pl.data.datamodule import WSOLDataset, wsol_collate
from cream_pl.data.images import ImageFileError
from cream_pl.models import WSOLClassifier

os.environ.setdefault("WANDB_MODE", "disabled")

SIZE = 64


@pytest.fixture(scope="module")
def jpeg_data(tmp_path_factory) -> Path:
    return generate_synthetic_dataset(tmp_path_factory.mktemp("synth"), seed=1, num_classes=3, num_train=12,
                                      num_val=6, num_test=6, min_side=72, max_side=96, image_format="jpg",
                                      overwrite=True)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CREAM_PL_CACHE_DIR", str(tmp_path / "cache"))


def _copy(root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(root, tmp_path / "data"))


def _ids(root: Path, split: str) -> list[str]:
    return (root / "metadata" / split / "image_ids.txt").read_text().split("\n")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # a real JPEG cut short: Pillow raises "truncated"


def _config(tmp_path: Path, root: Path, **model) -> Path:
    cfg = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "logger": False,
                    "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False,
                    "num_sanity_val_steps": 0, "default_root_dir": str(tmp_path / "run")},
        "model": {"class_path": "cream_pl.models.WSOLClassifier",
                  "init_args": {"pretrained": False, "eval_size": SIZE, "cam_curve_interval": 0.1, **model}},
        "data": {"class_path": "cream_pl.data.WSOLDataModule",
                 "init_args": {"data_root": str(root), "batch_size": 6, "num_workers": 1, "resize_size": 72,
                               "crop_size": SIZE, "eval_size": SIZE}},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:  # run_lightning_cli ends a user error with SystemExit(2)
        return int(exit_.code or 0)


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    assert err.rstrip().splitlines()[-1] == lines[0]  # the last thing the user sees
    return lines[0]


# ---------------------------------------------------------------------------------------------- the parser


def test_user_error_message_survives_a_real_dataloader_worker(jpeg_data, tmp_path):
    root = _copy(jpeg_data, tmp_path)
    dm = WSOLDataModule(str(root), eval_size=SIZE, check_eval_images=False)
    ds: WSOLDataset = dm.eval_dataset("val")
    bad = root / "images" / _ids(root, "val")[0]
    _truncate(bad)
    direct = ds.check_sample(0)
    assert isinstance(direct, ImageFileError) and isinstance(direct, UserError)
    loader = DataLoader(ds, batch_size=2, num_workers=1, collate_fn=wsol_collate)
    with pytest.raises(Exception) as info:  # PyTorch re-raises it as RuntimeError("Caught ImageFileError ...")
        next(iter(loader))
    assert "DataLoader worker process" in str(info.value)
    assert user_error_message(info.value) == str(direct)
    assert user_error_message(RuntimeError("a bug")) is None


def test_user_error_message_follows_the_cause_chain():
    try:
        try:
            raise UserFileNotFoundError("/x.pth: pretrained weights file not found")
        except FileNotFoundError as inner:
            raise ValueError("Does not validate against any of the Union subtypes\nErrors: ...") from inner
    except ValueError as outer:
        assert user_error_message(outer) == "/x.pth: pretrained weights file not found"


# ---------------------------------------------------------------------------------------------- cream-pl fit


def test_fit_truncated_train_jpeg_ends_in_one_line(jpeg_data, tmp_path, capsys):
    root = _copy(jpeg_data, tmp_path)
    rel = _ids(root, "train")[3]
    _truncate(root / "images" / rel)
    assert _run(["fit", "--config", str(_config(tmp_path, root))]) == 2  # raised in a DataLoader worker
    line = _error_line(capsys)
    assert line.startswith(f"cream-pl fit: error: {root / 'images' / rel}: truncated image file")
    assert f"{root / 'metadata/train/image_ids.txt'} line 4" in line


def test_fit_bad_val_image_fails_before_any_training(jpeg_data, tmp_path):
    root = _copy(jpeg_data, tmp_path)
    rel = _ids(root, "val")[2]
    _truncate(root / "images" / rel)

    class CountSteps(pl.Callback):
        steps = 0

        def on_train_batch_end(self, *args, **kwargs) -> None:
            CountSteps.steps += 1

    dm = WSOLDataModule(str(root), batch_size=6, resize_size=72, crop_size=SIZE, eval_size=SIZE)
    model = WSOLClassifier(num_classes=3, pretrained=False, eval_size=SIZE, cam_curve_interval=0.1)
    trainer = pl.Trainer(max_epochs=3, check_val_every_n_epoch=3, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, callbacks=[CountSteps()], default_root_dir=str(tmp_path))
    with pytest.raises(ImageFileError, match="truncated") as info:
        trainer.fit(model, dm)
    assert str(root / "images" / rel) in str(info.value) and "metadata/val/image_ids.txt line 3" in str(info.value)
    assert CountSteps.steps == 0 and trainer.global_step == 0  # no training was lost


def test_val_check_runs_once_per_unchanged_dataset(jpeg_data, tmp_path, monkeypatch):
    root = _copy(jpeg_data, tmp_path)
    decoded: list[int] = []
    real = WSOLDataset.check_sample
    monkeypatch.setattr(WSOLDataset, "check_sample", lambda self, i: (decoded.append(i), real(self, i))[1])
    WSOLDataModule(str(root), eval_size=SIZE).setup("validate")
    assert sorted(decoded) == list(range(6))
    WSOLDataModule(str(root), eval_size=SIZE).setup("validate")  # same files: the stamp says it passed
    assert len(decoded) == 6
    _truncate(root / "images" / _ids(root, "val")[5])  # a changed file is checked again, and found
    with pytest.raises(ImageFileError, match="truncated"):
        WSOLDataModule(str(root), eval_size=SIZE).setup("validate")
    assert len(decoded) == 12


def test_fit_label_out_of_range_ends_in_one_line(jpeg_data, tmp_path, capsys):
    root = _copy(jpeg_data, tmp_path)
    labels = root / "metadata/train/class_labels.txt"
    lines = labels.read_text().split("\n")
    lines[4] = lines[4].rsplit(",", 1)[0] + ",7"
    labels.write_text("\n".join(lines))
    assert _run(["fit", "--config", str(_config(tmp_path, root))]) == 2
    line = _error_line(capsys)
    assert line.startswith(f"cream-pl fit: error: {labels}:5: label 7 is out of range [0, 3)")


def test_fit_missing_pretrained_weights_ends_in_one_line(jpeg_data, tmp_path, capsys):
    missing = tmp_path / "no" / "such.pth"
    argv = ["fit", "--config", str(_config(tmp_path, jpeg_data)), "--model.init_args.pretrained", str(missing)]
    assert _run(argv) == 2  # raised inside jsonargparse's instantiation (a Union error around it)
    assert _error_line(capsys) == f"cream-pl fit: error: {missing}: pretrained weights file not found"


def test_fit_offline_torchvision_weights_end_in_one_line(jpeg_data, tmp_path, capsys, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    argv = ["fit", "--config", str(_config(tmp_path, jpeg_data, backbone="vgg16")),
            "--model.init_args.pretrained", "true"]
    assert _run(argv) == 2
    line = _error_line(capsys)
    assert line.startswith("cream-pl fit: error: Could not download the official ImageNet weights for backbone "
                           "'vgg16'")
    assert "vgg16-397923af.pth" in line and "--model.init_args.pretrained /path/to/" in line
    assert torch.hub.get_dir() in line  # where to copy the file


def test_only_a_failed_collective_of_a_multi_process_run_is_a_stopped_peer(monkeypatch):
    import torch.distributed as dist

    from cream_pl.cli.lightning import _peer_stopped_message

    gloo = RuntimeError("[gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:29573. This is ...")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert _peer_stopped_message(gloo) is None  # one process: nothing to blame on a peer, the traceback stays
    monkeypatch.setenv("WORLD_SIZE", "2")
    line = _peer_stopped_message(gloo)
    assert line is not None and "another process of this distributed run stopped" in line and "pair.cc" in line
    for other in (ConnectionResetError("Connection reset by peer"),  # a DataLoader worker or a download
                  BrokenPipeError("Broken pipe"), RuntimeError(""), RuntimeError("CUDA out of memory"),
                  dist.DistNetworkError("Connection reset by peer"),  # a port in use, a peer that never joined
                  dist.DistStoreError("Connection closed by peer")):
        assert _peer_stopped_message(other) is None, other


@pytest.mark.slow  # two real DDP processes on the CPU: about 20 s
@pytest.mark.parametrize("line", [1, 2])  # the sampler gives the two images to different ranks
def test_ddp_fit_with_a_bad_train_image_ends_without_a_traceback(jpeg_data, tmp_path, line):
    """One rank meets the truncated image and prints its line; the other, whose collective then fails, says
    so in one line (before: a gloo "Connection closed by peer" traceback, and exit status 1 from rank 0)."""
    import subprocess
    import sys

    root = _copy(jpeg_data, tmp_path)
    bad = root / "images" / _ids(root, "train")[line - 1]
    _truncate(bad)
    cfg = _config(tmp_path, root)
    argv = [str(Path(sys.executable).with_name("cream-pl")), "fit", "--config", str(cfg), "--trainer.strategy", "ddp",
            "--trainer.devices", "2", "--data.init_args.num_workers", "0", "--data.init_args.batch_size", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if "cream-pl fit: error:" in ln]
    assert errors and errors[0].startswith(f"cream-pl fit: error: {bad}: truncated"), proc.stderr[-3000:]
    # the seeded sampler gives both images to rank 1: rank 0, the survivor, says why it stops too
    assert len(errors) == 2 and errors[1].startswith("cream-pl fit: error: rank 0: another process of this "
                                                     "distributed run stopped"), errors


def test_an_error_line_after_a_live_progress_bar_starts_a_line_of_its_own(capsys) -> None:
    """Before: ``cream-pl fit: error: ...`` was glued to the end of Lightning's progress bar on stderr."""
    from tqdm import tqdm

    from cream_pl.core.errors import end_progress_bars

    end_progress_bars()
    assert capsys.readouterr().err == ""  # no bar: no empty line
    bar = tqdm(total=3, file=sys.stderr)
    bar.update(1)
    capsys.readouterr()
    end_progress_bars()
    assert capsys.readouterr().err == "\n"
    bar.close()
