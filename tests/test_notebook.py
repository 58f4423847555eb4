"""notebooks/cam_vs_cream.ipynb runs top to bottom on a tiny checkpoint and draws its figure."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
import pytorch_lightning as pl
from nbclient import NotebookClient

from cream_pl.data import WSOLDataModule, generate_synthetic_dataset
from cream_pl.models import WSOLClassifier

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "cam_vs_cream.ipynb"
SIZE = 64


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
@pytest.mark.parametrize("cream", [True, False])  # a checkpoint trained without CREAM: its CAM alone (was: a ValueError)
def test_cam_vs_cream_notebook_runs(tmp_path, monkeypatch, cream):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    root = generate_synthetic_dataset(tmp_path / "data", seed=1, num_classes=3, num_train=12, num_val=6,
                                      num_test=6, min_side=72, max_side=96, image_format="png")
    # a tiny untrained classifier, validated once so that the checkpoint holds τ* and the data-module settings
    dm = WSOLDataModule(str(root), batch_size=6, resize_size=72, crop_size=SIZE, eval_size=SIZE)
    model = WSOLClassifier(num_classes=3, pretrained=False, cam_curve_interval=0.05, eval_size=SIZE, cream=cream)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.validate(model, dm, verbose=False)
    ckpt = tmp_path / "classifier.ckpt"
    trainer.save_checkpoint(ckpt)

    monkeypatch.setenv("CREAM_CKPT", str(ckpt))
    monkeypatch.setenv("CREAM_DATA", str(root))
    monkeypatch.setenv("CREAM_NUM_IMAGES", "3")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # kernel "python3" starts sys.executable (jupyter_client maps "python" to the running interpreter)
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any(o.output_type == "display_data" and "image/png" in o.get("data", {}) for o in outputs)
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    ious = re.findall(r"IoU CAM (\d\.\d{3})  CREAM (\d\.\d{3})" if cream else r"IoU CAM (\d\.\d{3})\n", printed)
    assert len(ious) == 3 and all(0.0 <= float(v) <= 1.0 for pair in ious for v in (pair if cream else [pair]))
