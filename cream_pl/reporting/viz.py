"""Pictures for WSOL results: CAM overlays, box drawings, result grids and BoxAcc curves.

Pure functions on NumPy / torch inputs. Images are ``uint8`` RGB ``(H, W, 3)`` arrays everywhere;
OpenCV's BGR order only exists inside this module. Boxes are ``XYXY_INCLUSIVE`` pixel boxes
(:class:`cream_pl.core.boxes.BoxFormat`), the WSOL benchmark convention. Files are written atomically
(temporary file + ``os.replace``), so a crashed run never leaves half a PNG behind.

Example:
    >>> import numpy as np
    >>> img = np.full((32, 32, 3), 128, np.uint8)
    >>> cam = np.zeros((8, 8)); cam[:, :4] = 1.0
    >>> out = draw_boxes(overlay_heatmap(img, cam), np.array([[2, 2, 13, 29]]), color=(0, 255, 0))
    >>> out.shape, out.dtype
    ((32, 32, 3), dtype('uint8'))
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from cream_pl.core.io import atomic_write_bytes
from cream_pl.reporting.tables import METHOD_NAMES

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "GT_COLOR",
    "PRED_COLOR",
    "denormalize_image",
    "to_rgb_image",
    "overlay_heatmap",
    "draw_boxes",
    "overlay_grid",
    "plot_box_acc_curves",
    "plot_ablation",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
GT_COLOR: tuple[int, int, int] = (0, 255, 0)  # RGB green
PRED_COLOR: tuple[int, int, int] = (255, 0, 0)  # RGB red

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_LINE_STYLES = ("-", "--", ":", "-.")


# --------------------------------------------------------------------------------------------- inputs
def _to_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}") from exc


def _check_rgb(image: Any, name: str = "image_rgb") -> np.ndarray:
    img = _to_numpy(image, name)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{name} must have shape (H, W, 3), got {img.shape}")
    if img.dtype != np.uint8:
        raise ValueError(
            f"{name} must be uint8 RGB, got dtype {img.dtype}; use denormalize_image() for network inputs"
        )
    return img


def _check_scoremap(scoremap: Any, name: str = "scoremap") -> np.ndarray:
    s = _to_numpy(scoremap, name)
    if s.ndim != 2:
        raise ValueError(f"{name} must have shape (h, w), got {s.shape}")
    if s.size == 0:
        raise ValueError(f"{name} is empty")
    s = s.astype(np.float32)
    if not np.isfinite(s).all():
        raise ValueError(f"{name} contains NaN or inf values")
    lo, hi = float(s.min()), float(s.max())
    if lo < -1e-6 or hi > 1.0 + 1e-6:
        raise ValueError(
            f"{name} must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]; normalise it first "
            "(cream_pl.metrics.functional.prepare_scoremaps)"
        )
    return np.clip(s, 0.0, 1.0)


def _check_boxes(boxes: Any, name: str = "boxes") -> np.ndarray:
    if boxes is None:
        return np.zeros((0, 4), np.int64)
    b = _to_numpy(boxes, name)
    if b.ndim == 1 and b.shape[0] == 4:
        b = b[None]
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) or (4,) in XYXY_INCLUSIVE pixels, got {b.shape}")
    if b.size and not np.isfinite(b.astype(np.float64)).all():
        raise ValueError(f"{name} contains NaN or inf coordinates")
    b = np.rint(b.astype(np.float64)).astype(np.int64)
    bad = (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
    if bad.any():
        raise ValueError(f"{name} has inverted boxes (x1 < x0 or y1 < y0): {b[bad].tolist()}")
    return b


def _check_color(color: Sequence[int]) -> tuple[int, int, int]:
    if len(color) != 3 or not all(0 <= int(c) <= 255 for c in color):
        raise ValueError(f"color must be an (R, G, B) tuple of ints in [0, 255], got {color!r}")
    return (int(color[0]), int(color[1]), int(color[2]))


# --------------------------------------------------------------------------------------------- images
def denormalize_image(
    image: Tensor | np.ndarray,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """Undo mean/std normalisation of a ``(3, H, W)`` network input.

    Args:
        image: ``(3, H, W)`` float tensor or array, ``(x / 255 - mean) / std`` per channel.
        mean: per-channel mean used for normalisation (ImageNet by default).
        std: per-channel std used for normalisation (ImageNet by default).

    Returns:
        ``uint8`` RGB array of shape ``(H, W, 3)`` (values clipped to [0, 255]).

    Example:
        >>> import torch
        >>> x = torch.zeros(3, 2, 2)  # the ImageNet mean colour
        >>> denormalize_image(x)[0, 0].tolist()
        [124, 116, 104]
    """
    x = _to_numpy(image, "image").astype(np.float64)
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"image must have shape (3, H, W), got {x.shape}")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 values each, got {len(mean)} and {len(std)}")
    if any(float(s) <= 0 for s in std):
        raise ValueError(f"std values must be positive, got {tuple(std)}")
    m = np.asarray(mean, np.float64)[:, None, None]
    s = np.asarray(std, np.float64)[:, None, None]
    rgb = np.clip((x * s + m) * 255.0, 0.0, 255.0)
    return np.ascontiguousarray(np.rint(rgb).astype(np.uint8).transpose(1, 2, 0))


def overlay_heatmap(
    image_rgb: np.ndarray,
    scoremap: np.ndarray | Tensor,
    alpha: float = 0.5,
    colormap: int = cv2.COLORMAP_JET,
) -> np.ndarray:
    """Blend a colour-mapped score map over an RGB image.

    The map is resized to the image with bilinear interpolation, coloured with an OpenCV
    colormap (converted from OpenCV's BGR to RGB, so with JET high scores are red), and blended
    as ``(1 - alpha) * image + alpha * heatmap``.

    Args:
        image_rgb: ``uint8`` RGB image ``(H, W, 3)``.
        scoremap: float ``(h, w)`` map in [0, 1].
        alpha: weight of the heatmap, in [0, 1].
        colormap: an OpenCV ``cv2.COLORMAP_*`` constant.

    Returns:
        ``uint8`` RGB image ``(H, W, 3)``.

    Example:
        >>> img = np.zeros((4, 4, 3), np.uint8)
        >>> overlay_heatmap(img, np.ones((2, 2)), alpha=1.0)[0, 0].tolist()  # JET(1.0) = dark red
        [128, 0, 0]
    """
    img = _check_rgb(image_rgb)
    s = _check_scoremap(scoremap)
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    h, w = img.shape[:2]
    if s.shape != (h, w):
        s = np.clip(cv2.resize(s, (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
    heat_bgr = cv2.applyColorMap(np.rint(s * 255.0).astype(np.uint8), colormap)
    heat = cv2.cvtColor(heat_bgr, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(np.ascontiguousarray(img), 1.0 - float(alpha), heat, float(alpha), 0.0)


def _put_label(img: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int]) -> None:
    """Write ``text`` on a filled background just above ``(x, y)`` (inside the image)."""
    scale, thick = 0.4, 1
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, thick)
    top = y - th - base - 2
    if top < 0:  # no room above the box: write inside it
        top = y + 1
    x = int(min(max(x, 0), max(img.shape[1] - tw - 2, 0)))
    cv2.rectangle(img, (x, top), (x + tw + 2, top + th + base + 1), color, thickness=cv2.FILLED)
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    ink = (0, 0, 0) if luminance > 128 else (255, 255, 255)
    cv2.putText(img, text, (x + 1, top + th), _FONT, scale, ink, thick, cv2.LINE_AA)


def draw_boxes(
    image_rgb: np.ndarray,
    boxes: np.ndarray | Tensor,
    color: Sequence[int] = PRED_COLOR,
    thickness: int = 2,
    label: str | Sequence[str] | None = None,
) -> np.ndarray:
    """Draw ``XYXY_INCLUSIVE`` boxes on a copy of an RGB image.

    The stroke lies *inside* each box: its outermost pixels are exactly the inclusive
    coordinates ``x0, y0, x1, y1``, and a thicker stroke grows inwards, so nothing is drawn
    outside the box.

    Args:
        image_rgb: ``uint8`` RGB image ``(H, W, 3)``.
        boxes: ``(N, 4)`` or ``(4,)`` inclusive pixel boxes (floats are rounded).
        color: ``(R, G, B)`` stroke colour.
        thickness: stroke width in pixels (>= 1).
        label: one text for every box, or one text per box, written above each box.

    Returns:
        A new ``uint8`` RGB image.

    Example:
        >>> out = draw_boxes(np.zeros((5, 5, 3), np.uint8), [[1, 1, 3, 3]], thickness=1)
        >>> (out[..., 0] > 0).astype(int).tolist()
        [[0, 0, 0, 0, 0], [0, 1, 1, 1, 0], [0, 1, 0, 1, 0], [0, 1, 1, 1, 0], [0, 0, 0, 0, 0]]
    """
    img = _check_rgb(image_rgb).copy()
    b = _check_boxes(boxes)
    rgb = _check_color(color)
    if int(thickness) < 1:
        raise ValueError(f"thickness must be >= 1, got {thickness}")
    if label is None or isinstance(label, str):
        labels: list[str | None] = [label] * len(b)
    else:
        labels = list(label)
        if len(labels) != len(b):
            raise ValueError(f"got {len(labels)} labels for {len(b)} boxes")
    for (x0, y0, x1, y1), text in zip(b.tolist(), labels):
        for i in range(int(thickness)):
            if x0 + i > x1 - i or y0 + i > y1 - i:
                break
            cv2.rectangle(img, (x0 + i, y0 + i), (x1 - i, y1 - i), rgb, thickness=1, lineType=cv2.LINE_8)
        if text:
            _put_label(img, str(text), x0, y0, rgb)
    return img


# --------------------------------------------------------------------------------------------- grid
def to_rgb_image(
    image: np.ndarray | Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    name: str = "image",
) -> np.ndarray:
    """Return a ``uint8`` RGB ``(H, W, 3)`` image as is, or de-normalise a float ``(3, H, W)`` input.

    Example:
        >>> to_rgb_image(np.zeros((3, 2, 2), np.float32)).shape
        (2, 2, 3)
    """
    img = _to_numpy(image, name)
    if img.ndim == 3 and img.shape[0] == 3 and img.dtype != np.uint8:
        img = denormalize_image(img, mean, std)
    return _check_rgb(img, name)


def _caption_strip(width: int, height: int, text: str) -> np.ndarray:
    strip = np.full((height, width, 3), 255, np.uint8)
    if height >= 8 and text:
        scale = min(0.4, (height - 4) / 25.0)
        cv2.putText(strip, text, (2, height - 4), _FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def overlay_grid(
    rows: Sequence[Mapping[str, Any]],
    out_path: str | os.PathLike[str] | None = None,
    *,
    tile_size: tuple[int, int] | None = None,
    alpha: float = 0.5,
    caption_height: int = 16,
    pad: int = 2,
) -> np.ndarray:
    """Build a results grid: one row per image, columns [image + GT, CAM + CAM box, CREAM + CREAM box].

    Each row is a dict with keys ``image`` (``uint8`` RGB ``(H, W, 3)``, or a normalised
    ``(3, H, W)`` float input, undone with the ImageNet mean/std), ``cam`` (score map in [0, 1]),
    optional ``cream`` (score map), optional ``gt_boxes`` (``(N, 4)`` inclusive boxes in image
    pixels), optional ``pred_boxes`` (``{"cam": box, "cream": box}``) and optional ``title``.
    GT boxes are drawn in green on every tile, predicted boxes in red. The CREAM column exists
    when any row has a ``cream`` map; a row without one gets a blank tile there.

    Args:
        rows: the rows, top to bottom.
        out_path: when given, the grid is also written there as a PNG (atomically).
        tile_size: ``(width, height)`` of every tile; defaults to the first row's image size.
        alpha: heatmap weight of the overlays.
        caption_height: height in pixels of the text strip above each tile (0 = none).
        pad: white gap in pixels between and around tiles.

    Returns:
        The grid as a ``uint8`` RGB array of shape
        ``(n_rows * (th + caption_height) + (n_rows + 1) * pad, n_cols * tw + (n_cols + 1) * pad, 3)``.

    Example:
        >>> row = dict(image=np.zeros((20, 30, 3), np.uint8), cam=np.eye(5), gt_boxes=[[1, 1, 9, 9]],
        ...            pred_boxes={"cam": [2, 2, 8, 8]}, title="bird")
        >>> overlay_grid([row], caption_height=0, pad=0).shape
        (20, 60, 3)
    """
    if isinstance(rows, Mapping) or len(rows) == 0:
        raise ValueError("rows must be a non-empty list of dicts")
    if caption_height < 0 or pad < 0:
        raise ValueError(f"caption_height and pad must be >= 0, got {caption_height} and {pad}")
    with_cream = any(r.get("cream") is not None for r in rows)
    methods = ["cam", "cream"] if with_cream else ["cam"]
    n_cols = 1 + len(methods)
    if tile_size is None:
        if not isinstance(rows[0], Mapping) or "image" not in rows[0]:
            raise ValueError("rows[0] must be a dict with an 'image'")
        first = to_rgb_image(rows[0]["image"], name="rows[0]['image']")
        tile_size = (first.shape[1], first.shape[0])
    tw, th = int(tile_size[0]), int(tile_size[1])
    if tw < 1 or th < 1:
        raise ValueError(f"tile_size must be positive, got {tile_size}")

    cell_h = th + caption_height
    grid_h = len(rows) * cell_h + (len(rows) + 1) * pad
    grid_w = n_cols * tw + (n_cols + 1) * pad
    grid = np.full((grid_h, grid_w, 3), 255, np.uint8)

    for r, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"rows[{r}] must be a dict, got {type(row).__name__}")
        if "image" not in row:
            raise ValueError(f"rows[{r}] has no 'image'")
        image = to_rgb_image(row["image"], name=f"rows[{r}]['image']")
        gt = _check_boxes(row.get("gt_boxes"), f"rows[{r}]['gt_boxes']")
        preds = row.get("pred_boxes") or {}
        if not isinstance(preds, Mapping):
            raise ValueError(f"rows[{r}]['pred_boxes'] must be a dict like {{'cam': box, 'cream': box}}")
        unknown = set(preds) - {"cam", "cream"}
        if unknown:
            raise ValueError(f"rows[{r}]['pred_boxes'] has unknown keys {sorted(unknown)}; use 'cam'/'cream'")
        title = str(row.get("title", ""))
        tiles = [(draw_boxes(image, gt, GT_COLOR), title or "image + GT")]
        for m in methods:
            if row.get(m) is None:
                if m == "cam":
                    raise ValueError(f"rows[{r}] has no 'cam' score map")
                tiles.append((np.full_like(image, 200), f"{m.upper()}: n/a"))
                continue
            tile = draw_boxes(overlay_heatmap(image, row[m], alpha=alpha), gt, GT_COLOR)
            if preds.get(m) is not None:
                tile = draw_boxes(tile, _check_boxes(preds[m], f"rows[{r}]['pred_boxes']['{m}']"), PRED_COLOR)
            tiles.append((tile, m.upper()))
        y = pad + r * (cell_h + pad)
        for c, (tile, caption) in enumerate(tiles):
            x = pad + c * (tw + pad)
            if tile.shape[:2] != (th, tw):
                tile = cv2.resize(tile, (tw, th), interpolation=cv2.INTER_AREA)
            if caption_height:
                grid[y : y + caption_height, x : x + tw] = _caption_strip(tw, caption_height, caption)
            grid[y + caption_height : y + cell_h, x : x + tw] = tile

    if out_path is not None:
        ok, buf = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        if not ok:  # pragma: no cover - OpenCV failure
            raise RuntimeError(f"OpenCV could not encode the grid as PNG for {out_path}")
        atomic_write_bytes(out_path, buf.tobytes())
    return grid


# --------------------------------------------------------------------------------------------- plots
def _save_figure(fig: Figure, out_path: str | os.PathLike[str], dpi: int) -> Path:
    FigureCanvasAgg(fig)  # explicit Agg canvas: no pyplot, no global backend switch
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(out_path, buf.getvalue())


def plot_box_acc_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    iou_levels: Sequence[int | float],
    out_path: str | os.PathLike[str],
    title: str = "",
    *,
    dpi: int = 120,
) -> Path:
    """Plot BoxAcc against the CAM threshold, one colour per method and one line style per IoU level.

    The layout of CREAM paper Fig. 6. The best threshold of each curve is marked with a dot.

    Args:
        curves: ``{method: (thresholds (T,), acc (n_iou, T))}``; ``acc`` in percent, row ``i``
            for ``iou_levels[i]``. A ``(T,)`` ``acc`` is accepted when there is one IoU level.
        iou_levels: the IoU thresholds of the rows of ``acc``, e.g. ``[30, 50, 70]``.
        out_path: PNG file to write (atomically).
        title: figure title.
        dpi: resolution of the PNG.

    Returns:
        ``out_path`` as a :class:`~pathlib.Path`.

    Example:
        >>> import tempfile
        >>> t = np.arange(0, 1, 0.01); acc = np.stack([100 * (1 - t), 50 * (1 - t)])
        >>> p = plot_box_acc_curves({"cam": (t, acc)}, [30, 50], tempfile.mkdtemp() + "/c.png")
        >>> p.stat().st_size > 0
        True
    """
    if not curves:
        raise ValueError("curves is empty: nothing to plot")
    levels = list(iou_levels)
    if not levels:
        raise ValueError("iou_levels is empty")
    if len(levels) > len(_LINE_STYLES):
        raise ValueError(
            f"at most {len(_LINE_STYLES)} IoU levels can be told apart by line style, got {levels}"
        )
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot(1, 1, 1)
    colors = [f"C{i % 10}" for i in range(len(curves))]
    for color, (method, pair) in zip(colors, curves.items()):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"curves[{method!r}] must be a (thresholds, acc) pair")
        thr = _to_numpy(pair[0], f"curves[{method!r}] thresholds").astype(np.float64)
        acc = _to_numpy(pair[1], f"curves[{method!r}] acc").astype(np.float64)
        if acc.ndim == 1 and len(levels) == 1:
            acc = acc[None]
        if thr.ndim != 1 or acc.shape != (len(levels), thr.shape[0]):
            raise ValueError(
                f"curves[{method!r}]: expected thresholds (T,) and acc ({len(levels)}, T), "
                f"got {thr.shape} and {acc.shape}"
            )
        for style, level, row in zip(_LINE_STYLES, levels, acc):
            ax.plot(
                thr,
                row,
                color=color,
                linestyle=style,
                linewidth=1.5,
                label=f"{METHOD_NAMES.get(method, method)} @ IoU {level:g}",
            )
            if np.isfinite(row).any():
                best = int(np.nanargmax(row))
                ax.plot(thr[best], row[best], "o", color=color, markersize=4)
    ax.set_xlabel("CAM threshold τ")
    ax.set_ylabel("BoxAcc (%)")
    ax.set_xlim(0.0, 1.0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    if title:
        ax.set_title(title)
    return _save_figure(fig, out_path, dpi)


def plot_ablation(
    xs: Sequence[float],
    ys_dict: Mapping[str, Sequence[float]],
    xlabel: str,
    ylabel: str,
    out_path: str | os.PathLike[str],
    *,
    title: str = "",
    dpi: int = 120,
) -> Path:
    """Plot one line (with markers) per series against a swept hyper-parameter (T, λ, ...).

    Args:
        xs: the swept values.
        ys_dict: ``{series name: values}``, each as long as ``xs``; ``NaN`` leaves a gap.
        xlabel: x-axis label, e.g. ``"EM iterations T"``.
        ylabel: y-axis label, e.g. ``"GT-known Loc (%)"``.
        out_path: PNG file to write (atomically).
        title: figure title.
        dpi: resolution of the PNG.

    Returns:
        ``out_path`` as a :class:`~pathlib.Path`.

    Example:
        >>> import tempfile
        >>> p = plot_ablation([0, 1, 2, 3], {"GT-known": [56.0, 69.3, 86.7, 82.2]}, "T", "%",
        ...                   tempfile.mkdtemp() + "/t.png")
        >>> p.suffix
        '.png'
    """
    x = np.asarray(list(xs), dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("xs must be a non-empty 1-D sequence of numbers")
    if not ys_dict:
        raise ValueError("ys_dict is empty: nothing to plot")
    fig = Figure(figsize=(5.0, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    for name, ys in ys_dict.items():
        y = np.asarray([np.nan if v is None else float(v) for v in ys], dtype=np.float64)
        if y.shape != x.shape:
            raise ValueError(f"series {name!r} has {y.size} values for {x.size} xs")
        ax.plot(x, y, marker="o", linewidth=1.5, label=str(name))
    ax.set_xticks(x)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if len(ys_dict) > 1:
        ax.legend(fontsize=8, loc="best")
    if title:
        ax.set_title(title)
    return _save_figure(fig, out_path, dpi)
