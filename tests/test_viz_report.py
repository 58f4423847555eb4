"""Tests for the presentation layer: cream_pl.reporting.viz, cream_pl.reporting.tables, cream_pl.reporting.wandb_media.

Everything runs offline: W&B is forced into disabled mode, files go to tmp_path, images are tiny.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import wandb
from pytorch_lightning.loggers import CSVLogger, WandbLogger

from cream_pl.core.io import atomic_write_bytes
from cream_pl.reporting.tables import (
    MISSING,
    ablation_table_markdown,
    metrics_table_markdown,
    write_json_atomic,
    write_markdown_atomic,
)
from cream_pl.reporting.viz import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    denormalize_image,
    draw_boxes,
    overlay_grid,
    overlay_heatmap,
    plot_ablation,
    plot_box_acc_curves,
)
from cream_pl.reporting.wandb_media import (
    is_live_wandb_logger,
    log_wsol_media,
    wandb_curve_plot,
    wandb_curve_table,
    wandb_overlay_image,
    wsol_media,
)


@pytest.fixture(autouse=True)
def _offline_wandb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def _row(h: int = 24, w: int = 32, with_cream: bool = True, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    row = {
        "image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "cam": rng.random((7, 7)),
        "gt_boxes": np.array([[2, 3, 20, 18]]),
        "pred_boxes": {"cam": np.array([4, 4, 15, 15]), "cream": torch.tensor([[2, 3, 19, 18]])},
        "title": f"img {seed}",
        "label": 1,
    }
    if with_cream:
        row["cream"] = torch.rand(7, 7, generator=torch.Generator().manual_seed(seed))
    else:
        del row["pred_boxes"]["cream"]
    return row


# --------------------------------------------------------------------------------------------- viz
def test_denormalize_image_inverts_normalisation() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    x = (torch.from_numpy(rgb).permute(2, 0, 1).float() / 255 - mean) / std
    out = denormalize_image(x, IMAGENET_MEAN, IMAGENET_STD)
    assert out.dtype == np.uint8 and out.shape == (5, 6, 3)
    np.testing.assert_array_equal(out, rgb)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        denormalize_image(torch.zeros(5, 6, 3))


def test_overlay_heatmap_is_rgb_hot_is_red() -> None:
    image = np.full((40, 40, 3), 128, np.uint8)
    scoremap = np.zeros((10, 10))
    scoremap[:, :5] = 1.0  # hot on the left half
    out = overlay_heatmap(image, scoremap, alpha=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    left, right = out[:, :15].astype(float), out[:, 25:].astype(float)  # away from the bilinear seam
    # JET: 1.0 is red, 0.0 is blue. A BGR/RGB mix-up swaps channels 0 and 2 and fails both asserts.
    assert left[..., 0].mean() > right[..., 0].mean() + 30
    assert right[..., 2].mean() > left[..., 2].mean() + 30
    # alpha=0 returns the image unchanged
    np.testing.assert_array_equal(overlay_heatmap(image, scoremap, alpha=0.0), image)


def test_overlay_heatmap_rejects_bad_maps() -> None:
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        overlay_heatmap(image, np.full((4, 4), 3.0))
    with pytest.raises(ValueError, match="NaN"):
        overlay_heatmap(image, np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="uint8"):
        overlay_heatmap(image.astype(np.float32), np.zeros((4, 4)))


def _perimeter(h: int, w: int, box: tuple[int, int, int, int], width: int) -> np.ndarray:
    x0, y0, x1, y1 = box
    m = np.zeros((h, w), bool)
    m[y0 : y1 + 1, x0 : x1 + 1] = True
    inner_x0, inner_y0, inner_x1, inner_y1 = x0 + width, y0 + width, x1 - width, y1 - width
    if inner_x0 <= inner_x1 and inner_y0 <= inner_y1:
        m[inner_y0 : inner_y1 + 1, inner_x0 : inner_x1 + 1] = False
    return m


@pytest.mark.parametrize("thickness", [1, 3])
@pytest.mark.parametrize("box", [(3, 5, 12, 9), (0, 0, 19, 14)])
def test_draw_boxes_exact_inclusive_pixels(thickness: int, box: tuple[int, int, int, int]) -> None:
    image = np.zeros((15, 20, 3), np.uint8)
    out = draw_boxes(image, np.array([box]), color=(255, 0, 0), thickness=thickness)
    drawn = out.any(axis=2)
    np.testing.assert_array_equal(drawn, _perimeter(15, 20, box, thickness))
    assert (out[drawn] == (255, 0, 0)).all()  # RGB colour written as given
    assert not image.any()  # the input is not modified


def test_draw_boxes_label_and_errors() -> None:
    image = np.zeros((40, 60, 3), np.uint8)
    out = draw_boxes(image, [[10, 20, 50, 35]], color=(0, 255, 0), label="bird")
    assert out[:20].any()  # the label is written above the box
    with pytest.raises(ValueError, match="inverted"):
        draw_boxes(image, [[10, 10, 5, 20]])
    with pytest.raises(ValueError, match="labels"):
        draw_boxes(image, [[1, 1, 5, 5]], label=["a", "b"])


def test_overlay_grid_png_roundtrip(tmp_path: Path) -> None:
    rows = [_row(seed=0), _row(seed=1, with_cream=False)]
    # the second image is normalised network input of another size: it is de-normalised and resized
    rows[1]["image"] = torch.randn(3, 48, 40)
    out = tmp_path / "sub" / "grid.png"
    grid = overlay_grid(rows, out, caption_height=12, pad=2)
    expected = (2 * (24 + 12) + 3 * 2, 3 * 32 + 4 * 2, 3)
    assert grid.shape == expected and grid.dtype == np.uint8
    read = cv2.imread(str(out), cv2.IMREAD_COLOR)
    assert read is not None and read.shape == expected
    np.testing.assert_array_equal(
        cv2.cvtColor(read, cv2.COLOR_BGR2RGB), grid
    )  # PNG is lossless, RGB order kept
    assert _leftovers(out.parent) == []


def test_overlay_grid_without_cream_has_two_columns() -> None:
    grid = overlay_grid([_row(with_cream=False)], caption_height=0, pad=0)
    assert grid.shape == (24, 64, 3)
    # the GT box (green) is on the first tile at its inclusive coordinates
    assert (grid[3, 2:21] == (0, 255, 0)).all()
    with pytest.raises(ValueError, match="no 'cam'"):
        overlay_grid([{"image": np.zeros((4, 4, 3), np.uint8)}])


def test_plot_box_acc_curves_png(tmp_path: Path) -> None:
    thr = np.arange(0, 1, 0.01)
    curves = {
        "cam": (thr, np.stack([80 * (1 - thr), 60 * (1 - thr), 30 * (1 - thr)])),
        "cream": (
            thr,
            np.stack([90 * np.sin(np.pi * thr), 70 * np.sin(np.pi * thr), 40 * np.sin(np.pi * thr)]),
        ),
    }
    out = plot_box_acc_curves(curves, [30, 50, 70], tmp_path / "curves.png", title="BoxAcc")
    assert out.stat().st_size > 1000
    img = cv2.imread(str(out))
    assert img is not None and img.ndim == 3 and img.shape[0] > 100
    assert _leftovers(tmp_path) == []
    with pytest.raises(ValueError, match=r"acc \(3, T\)"):
        plot_box_acc_curves({"cam": (thr, thr)}, [30, 50, 70], tmp_path / "bad.png")


def test_plot_ablation_png(tmp_path: Path) -> None:
    out = plot_ablation(
        [0, 1, 2, 3],
        {"GT-known": [56.0, 69.3, 86.7, 82.2], "Top-1": [44, 55, None, 60]},
        "T",
        "%",
        tmp_path / "t.png",
    )
    assert out.stat().st_size > 1000 and cv2.imread(str(out)) is not None
    with pytest.raises(ValueError, match="3 values for 4 xs"):
        plot_ablation([0, 1, 2, 3], {"a": [1, 2, 3]}, "T", "%", tmp_path / "bad.png")


# --------------------------------------------------------------------------------------------- report
def test_write_json_atomic_roundtrip(tmp_path: Path) -> None:
    obj = {
        "acc": np.float32(0.25),
        "count": np.int64(7),
        "curve": np.array([[1.0, 2.5], [3.0, 4.0]]),
        "tensor": torch.tensor([1, 2, 3]),
        "scalar": torch.tensor(0.5),
        "nested": {"path": tmp_path / "x", 3: (np.bool_(True), None)},
    }
    path = write_json_atomic(obj, tmp_path / "out" / "results.json")
    loaded = json.loads(path.read_text())
    assert loaded == {
        "acc": 0.25,
        "count": 7,
        "curve": [[1.0, 2.5], [3.0, 4.0]],
        "tensor": [1, 2, 3],
        "scalar": 0.5,
        "nested": {"path": str(tmp_path / "x"), "3": [True, None]},
    }
    text = path.read_text()
    assert text.index('"acc"') < text.index('"count"') < text.index('"tensor"')  # sorted keys
    assert '\n  "acc"' in text  # indent 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]  # no tmp file left


def test_write_json_atomic_keeps_old_file_on_error(tmp_path: Path) -> None:
    path = write_json_atomic({"a": 1}, tmp_path / "r.json")
    with pytest.raises(TypeError, match="object"):
        write_json_atomic({"a": object()}, path)
    assert json.loads(path.read_text()) == {"a": 1}
    assert _leftovers(tmp_path) == []


def test_write_markdown_and_bytes_atomic(tmp_path: Path) -> None:
    p = write_markdown_atomic("# title", tmp_path / "a" / "r.md")
    assert p.read_text() == "# title\n"
    assert atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert _leftovers(tmp_path) == [] and _leftovers(tmp_path / "a") == []


def test_metrics_table_markdown() -> None:
    results = {
        "cam": {"test/maxboxacc_v2": 63.456, "test/pxap": np.float32(58.0), "cls_acc": torch.tensor(71.0)},
        "cream": {"test/maxboxacc_v2": 70.1, "test/pxap": None},
        "cream_reg": {"test/maxboxacc_v2": float("nan"), "cls_acc": 7},
        "my_method": {},
    }
    columns = [("test/maxboxacc_v2", "MaxBoxAccV2"), ("test/pxap", "PxAP"), ("cls_acc", "Top-1 Cls")]
    md = metrics_table_markdown(results, columns)
    table, notes = md.split("\n\n")
    lines = table.splitlines()
    assert lines[0] == "| Method | MaxBoxAccV2 | PxAP | Top-1 Cls |"
    assert lines[1] == "| --- | ---: | ---: | ---: |"
    assert lines[2:] == [
        "| CAM | 63.46 | 58.00 | 71.00 |",
        f"| CREAM | 70.10 | {MISSING} | {MISSING} |",
        f"| CREAM_reg | {MISSING} | {MISSING} | 7.00 |",
        f"| my_method | {MISSING} | {MISSING} | {MISSING} |",
    ]
    note_lines = notes.splitlines()
    assert len(note_lines) == 3
    assert (
        note_lines[0].startswith("- **MaxBoxAccV2**: mean over IoU δ ∈ {30, 50, 70}")
        and "0.001" in note_lines[0]
    )
    assert "1002" in note_lines[1] and "top-1 classification" in note_lines[2]


def test_metrics_table_protocol_notes_required() -> None:
    with pytest.raises(ValueError, match=r"no protocol note for column\(s\) \['epoch'\]"):
        metrics_table_markdown({"cam": {"epoch": 3}}, [("epoch", "Epoch")])
    md = metrics_table_markdown(
        {"cam": {"gt_known": 55.556}}, [("gt_known", "GT-known Loc")], {"gt_known": "IoU ≥ 0.5 at τ = 0.2"}
    )
    assert "| CAM | 55.56 |" in md and "- **GT-known Loc**: IoU ≥ 0.5 at τ = 0.2." in md
    # default notes exist for the usual WSOL metrics
    md = metrics_table_markdown(
        {"cam": {}}, [("gt_known_loc", "GT-known"), ("top1_loc", "Top-1 Loc"), ("val/boxacc_iou70", "IoU70")]
    )
    assert "not searched on the split scored" in md and "top-1 predicted class" in md and "IoU ≥ 0.7" in md


def test_ablation_table_markdown() -> None:
    md = ablation_table_markdown(
        "λ", [0.5, 0.8, 1.0], {"GT-known": [80.0, 86.7, math.nan], "Top-1": [1, 2, 3]}
    )
    assert md.splitlines() == [
        "| λ | 0.5 | 0.8 | 1 |",
        "| --- | ---: | ---: | ---: |",
        f"| GT-known | 80.00 | 86.70 | {MISSING} |",
        "| Top-1 | 1.00 | 2.00 | 3.00 |",
    ]
    with pytest.raises(ValueError, match="2 values for 3"):
        ablation_table_markdown("T", [0, 1, 2], {"a": [1, 2]})


# --------------------------------------------------------------------------------------------- wandb
def test_wandb_overlay_image_box_structure() -> None:
    image = np.zeros((16, 20, 3), np.uint8)
    img = wandb_overlay_image(
        image, np.eye(8), [[2, 3, 9, 11]], [2, 3, 9, 11], {0: "bg", 4: "bird"}, "sample", class_id=4
    )
    assert isinstance(img, wandb.Image)
    assert img._caption == "sample"
    # wandb keeps the validated box groups in Image._boxes (no public getter in wandb 0.31)
    assert set(img._boxes) == {"ground_truth", "predictions"}
    gt = img._boxes["ground_truth"]._val
    pred = img._boxes["predictions"]._val
    assert gt == [
        {
            "position": {"minX": 2, "minY": 3, "maxX": 10, "maxY": 12},
            "class_id": 4,
            "box_caption": "GT: bird",
            "domain": "pixel",
        }
    ]
    assert pred[0]["position"] == gt[0]["position"] and pred[0]["domain"] == "pixel"
    assert pred[0]["scores"] == {"iou": 1.0}
    assert img._boxes["predictions"]._class_labels == {0: "bg", 4: "bird"}
    with pytest.raises(ValueError, match="class_id 7"):
        wandb_overlay_image(image, None, None, None, {0: "bg"}, "x", class_id=7)


def test_wandb_overlay_image_iou_score() -> None:
    # GT 10x10 pixels, prediction its left half (5x10): "+1" IoU = 50 / 100
    img = wandb_overlay_image(
        np.zeros((12, 12, 3), np.uint8), None, [[0, 0, 9, 9]], [0, 0, 4, 9], {0: "a"}, "c"
    )
    assert img._boxes["predictions"]._val[0]["scores"]["iou"] == pytest.approx(0.5)


def test_wandb_curve_table_and_plot() -> None:
    thr = np.array([0.0, 0.25, 0.5, 0.75])
    table = wandb_curve_table(
        thr, {"cam": np.array([10.0, 20, 30, 40]), "cream": torch.tensor([5.0, 6, 7, 8])}
    )
    assert isinstance(table, wandb.Table)
    assert table.columns == ["threshold", "method", "box_acc"]
    assert len(table.data) == 8
    assert table.data[0] == [0.0, "cam", 10.0] and table.data[7] == [0.75, "cream", 8.0]
    assert len(wandb_curve_table(np.arange(0, 1, 0.001), {"a": np.zeros(1000)}, max_points=100).data) == 100
    chart = wandb_curve_plot(table)
    assert chart.table is table
    with pytest.raises(ValueError, match="shape"):
        wandb_curve_table(thr, {"cam": np.zeros(3)})


def _curves() -> dict:
    thr = np.arange(0, 1, 0.1)
    return {"cam": (thr, np.stack([thr * 100, thr * 50])), "cream": (thr, np.stack([thr * 90, thr * 40]))}


def test_wsol_media_keys() -> None:
    media = wsol_media("val/media", [_row(seed=0), _row(seed=1)], _curves(), iou_levels=[30, 50])
    assert set(media) == {
        "val/media/grid",
        "val/media/cam_overlays",
        "val/media/cream_overlays",
        "val/media/box_acc_curve",
    }
    assert len(media["val/media/cam_overlays"]) == 2
    assert media["val/media/cam_overlays"][0]._boxes["ground_truth"]._val[0]["class_id"] == 1
    data = media["val/media/box_acc_curve"].table.data
    assert {d[1] for d in data} == {"cam@IoU30", "cam@IoU50", "cream@IoU30", "cream@IoU50"}


class _RecordingRun:
    """Stands in for a live wandb run: records what WandbLogger.log_metrics sends."""

    disabled = False

    def __init__(self) -> None:
        self.logged: list[dict] = []

    def log(self, data: dict, *args: object, **kwargs: object) -> None:
        self.logged.append(data)


def test_log_wsol_media_noop_without_live_wandb(tmp_path: Path) -> None:
    rows, curves = [_row()], _curves()
    assert log_wsol_media(None, "val", rows, curves, step=3, iou_levels=[30, 50]) is False
    csv = CSVLogger(save_dir=tmp_path / "csv")
    assert log_wsol_media(csv, "val", rows, curves, step=3, iou_levels=[30, 50]) is False
    assert not (tmp_path / "csv").exists()  # nothing was written through the CSV logger
    disabled = WandbLogger(save_dir=str(tmp_path), mode="disabled")
    assert log_wsol_media(disabled, "val", rows, curves, step=3, iou_levels=[30, 50]) is False
    by_env = WandbLogger(save_dir=str(tmp_path))  # WANDB_MODE=disabled from the fixture
    assert is_live_wandb_logger(by_env) is False
    assert by_env._experiment is None  # no run was started just to find out


def test_log_wsol_media_logs_to_live_wandb_logger(tmp_path: Path) -> None:
    run = _RecordingRun()
    logger = WandbLogger(save_dir=str(tmp_path), experiment=run)
    logged = log_wsol_media(
        [CSVLogger(tmp_path), logger], "test/media", [_row()], _curves(), step=5, iou_levels=[30, 50]
    )
    assert logged is True
    assert len(run.logged) == 1
    data = run.logged[0]
    assert data["trainer/global_step"] == 5
    assert isinstance(data["test/media/grid"], wandb.Image)
    assert len(data["test/media/cream_overlays"]) == 1
    # nothing to log is a no-op even for a live logger
    assert log_wsol_media(logger, "test/media", rows=None, curves=None) is False
    assert len(run.logged) == 1


def test_media_callback_logs_a_real_validation_to_live_wandb_only(tmp_path: Path) -> None:
    """A real fit: WSOLMediaCallback sends the classifier's first val batch (overlays at the val τ*) to W&B."""
    import pytorch_lightning as pl

    from cream_pl.data import WSOLDataModule, generate_synthetic_dataset
    from cream_pl.models import WSOLClassifier
    from cream_pl.reporting.wandb_media import WSOLMediaCallback

    root = generate_synthetic_dataset(tmp_path / "synth", seed=1, num_classes=3, num_train=6, num_val=4, num_test=2,
                                      min_side=64, max_side=80)
    class _FitRun(_RecordingRun):  # what a fit also touches on a live run
        class config:  # noqa: N801
            @staticmethod
            def update(*args: object, **kwargs: object) -> None:
                pass

        def define_metric(self, *args: object, **kwargs: object) -> None:
            pass

    run = _FitRun()
    for loggers, expect in (([CSVLogger(tmp_path / "csv")], 0), ([WandbLogger(save_dir=str(tmp_path), experiment=run)], 1)):
        dm = WSOLDataModule(str(root), batch_size=2, num_workers=0, resize_size=64, crop_size=56, eval_size=56)
        model = WSOLClassifier(num_classes=3, pretrained=False, num_media_images=2, eval_size=56,
                               cam_curve_interval=0.05)
        trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=loggers, callbacks=[WSOLMediaCallback()],
                             enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=1,
                             limit_train_batches=1, default_root_dir=str(tmp_path))
        trainer.fit(model, datamodule=dm)
        media = [d for d in run.logged if "val/media/grid" in d]
        assert len(media) == expect  # the sanity check is never logged; a CSV logger gets nothing
    assert len(media[0]["val/media/cam_overlays"]) == 2 and "val/media/box_acc_curve" in media[0]
