"""Data loading at real image sizes: decode + train transform per worker on CUB-sized JPEGs (``make bench``, ``make bench-gpu``).

CUB-200-2011's images are JPEGs of about 500x375 (ILSVRC's are about the same on average); the
embedded benchmark's are smaller, so its loading figure says little about a real run. Here:

- :func:`write_cub_sized_jpegs` writes a small data set in the benchmark format whose images are
  500x375 JPEGs at quality 92 (a crop of a bundled photograph as background, a textured ellipse
  as the object, its box in ``localization.txt``);
- :func:`per_worker_loading` times, in this process with one torch and one OpenCV thread (what one
  ``DataLoader`` worker has when every core is busy), the decode alone and the decode + the
  datamodule's real train transform (resize 256, random crop 224, flip, normalise), for a decoder
  (``"pil"`` or ``"torchvision"``, :func:`cream_pl.data.images.load_image_rgb`);
- :func:`loader_images_per_s` times a whole epoch of the datamodule's own train loader with ``N``
  worker processes;
- :func:`workers_needed`: the workers that keep up with a training step,
  ``ceil(step images/s / per-worker images/s)``.

Example:
    >>> import tempfile
    >>> root = write_cub_sized_jpegs(tempfile.mkdtemp(), num_train=2, num_val=1)
    >>> from PIL import Image
    >>> Image.open(root / "images" / "0" / "train_0000.jpg").size
    (500, 375)
    >>> workers_needed(1000.0, 150.0)
    7
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CUB_IMAGE_SIZE", "JPEG_QUALITY", "write_cub_sized_jpegs", "per_worker_loading", "loader_images_per_s",
           "workers_needed", "one_thread", "gpu_steps", "bench_cub_loading", "loading_rows"]

CUB_IMAGE_SIZE = (500, 375)
"""``(width, height)`` of a typical CUB-200-2011 image (most are 500 px on their long side)."""

JPEG_QUALITY = 92

_BACKGROUNDS = ("grass", "gravel", "brick", "coffee", "chelsea", "astronaut")  # skimage.data photographs


def _photo(name: str) -> np.ndarray:
    import skimage.data

    img = np.asarray(getattr(skimage.data, name)())
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3]).astype(np.uint8)


def _render(rng: np.random.Generator, photo: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, ...]]:
    """One CUB-sized image (a photo crop, an ellipse with a texture of its own) and the ellipse's inclusive box."""
    import cv2

    w, h = size
    ph, pw = photo.shape[:2]
    ch = int(rng.uniform(0.5, 1.0) * min(ph, pw * h / w))
    cw = int(ch * w / h)
    y, x = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    img = cv2.resize(photo[y:y + ch, x:x + cw], (w, h), interpolation=cv2.INTER_AREA if ch > h else cv2.INTER_LINEAR)
    ax, ay = int(rng.uniform(0.12, 0.35) * w), int(rng.uniform(0.12, 0.35) * h)
    cx, cy = int(rng.integers(ax, w - ax)), int(rng.integers(ay, h - ay))
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (cx, cy), (ax, ay), float(rng.uniform(0, 180)), 0, 360, 255, -1)
    texture = rng.normal(0, 18, (h // 4 + 1, w // 4 + 1, 3)).astype(np.float32)
    texture = cv2.resize(texture, (w, h), interpolation=cv2.INTER_CUBIC)[:h, :w]
    body = np.clip(rng.uniform(40, 220, 3).astype(np.float32) + texture, 0, 255)
    alpha = cv2.GaussianBlur(mask, (0, 0), 2.0).astype(np.float32)[:, :, None] / 255.0
    img = (img.astype(np.float32) * (1 - alpha) + body * alpha).round().astype(np.uint8)
    ys, xs = np.nonzero(mask)
    return img, (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))


def write_cub_sized_jpegs(root: Path | str, num_train: int, num_val: int = 0, *, num_classes: int = 4, seed: int = 0,
                          size: tuple[int, int] = CUB_IMAGE_SIZE, quality: int = JPEG_QUALITY) -> Path:
    """Write a data set in the benchmark format with CUB-sized JPEG images; returns ``root``.

    ``images/<label>/<split>_<i>.jpg`` (Pillow, quality ``quality``, 4:2:0 chroma, as most camera
    JPEGs), ``metadata/train`` (and ``metadata/val`` when ``num_val > 0``) with sizes and one box
    per image, ``class_names.txt``. Images are drawn from ``seed``.
    """
    from PIL import Image

    from cream_pl.data.metadata import SampleRecord, write_class_names, write_split

    for name, value, lo in (("num_train", num_train, 1), ("num_val", num_val, 0), ("num_classes", num_classes, 2),
                            ("quality", quality, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {value!r}")
    if quality > 100 or len(size) != 2 or min(size) < 32:
        raise ValueError(f"need quality <= 100 and a (width, height) size of at least 32 px, got {quality}, {size}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    photos = [_photo(n) for n in _BACKGROUNDS]
    for split, count in (("train", num_train), ("val", num_val)):
        samples = []
        for i in range(count):
            label = i % num_classes
            image_id = f"{label}/{split}_{i:04d}.jpg"
            img, box = _render(rng, photos[int(rng.integers(len(photos)))], (int(size[0]), int(size[1])))
            path = root / "images" / image_id
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(path, "JPEG", quality=quality)
            samples.append(SampleRecord(image_id, label, (int(size[0]), int(size[1])), (box,)))
        if samples:
            write_split(root / "metadata" / split, samples)
    write_class_names(root / "class_names.txt", [f"class_{k}" for k in range(num_classes)])
    return root


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One torch and one OpenCV thread for the block (a ``DataLoader`` worker's share of a busy machine)."""
    import cv2
    import torch

    saved = (torch.get_num_threads(), cv2.getNumThreads())
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        cv2.setNumThreads(saved[1])


def per_worker_loading(root: Path | str, decoder: str = "pil", *, num_images: int | None = None,
                       repeats: int = 3) -> dict[str, Any]:
    """Images/s of one worker on the train split of ``root``: decode alone, and decode + train transform.

    Each figure is the best of ``repeats`` passes over ``num_images`` images (default: the whole
    split) after one untimed pass (page cache, first-call set-up), with one torch and one OpenCV
    thread; the sample is the datamodule's own (``WSOLDataset.__getitem__``).
    """
    from cream_pl.data import WSOLDataModule

    dm = WSOLDataModule(str(root), num_workers=0, decoder=decoder, check_eval_images=False)  # type: ignore[arg-type]
    ds = dm.train_dataset()
    n = len(ds) if num_images is None else min(int(num_images), len(ds))
    if n < 1 or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"need at least one image and repeats >= 1, got {n} images, repeats={repeats!r}")

    def best(fn: Any) -> float:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            for i in range(n):
                fn(i)
            times.append(time.perf_counter() - t)
        return min(times)

    with one_thread():
        for i in range(n):
            ds[i]
        t_decode = best(ds.load_image)
        t_full = best(ds.__getitem__)
    shape = ds[0]["image"].shape
    return {"decoder": decoder, "num_images": n, "image_size": list(ds.load_image(0).shape[1::-1]),
            "output_shape": list(shape), "decode_images_per_s": n / t_decode, "images_per_s": n / t_full,
            "decode_ms": 1000 * t_decode / n, "transform_ms": 1000 * (t_full - t_decode) / n}


def loader_images_per_s(root: Path | str, decoder: str = "pil", *, num_workers: int = 2, batch_size: int = 32,
                        pin_memory: bool = False, epochs: int = 2) -> dict[str, Any]:
    """Images/s of the datamodule's train loader with ``num_workers`` processes (its last of ``epochs`` epochs).

    Workers persist between epochs, so the first epoch (worker start-up) is untimed when ``epochs > 1``.
    """
    from cream_pl.data import WSOLDataModule

    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    dm = WSOLDataModule(str(root), batch_size=batch_size, num_workers=num_workers, decoder=decoder,  # type: ignore[arg-type]
                        pin_memory=pin_memory, check_eval_images=False)
    loader = dm.train_dataloader()
    n, elapsed = 0, 0.0
    for _ in range(epochs):
        t = time.perf_counter()
        n = sum(batch["image"].shape[0] for batch in loader)
        elapsed = time.perf_counter() - t
    return {"decoder": decoder, "num_workers": num_workers, "batch_size": batch_size, "num_images": n,
            "images_per_s": n / elapsed}


def workers_needed(step_images_per_s: float, per_worker_images_per_s: float) -> int:
    """``ceil(step / per worker)``: the loader workers that keep a training step fed.

    Raises:
        ValueError: a figure that is not a positive finite number.
    """
    for name, value in (("step_images_per_s", step_images_per_s), ("per_worker_images_per_s", per_worker_images_per_s)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return max(1, math.ceil(step_images_per_s / per_worker_images_per_s - 1e-9))


def gpu_steps(path: Path | str | None) -> dict[str, Any] | None:
    """The training steps of a ``make bench-gpu`` JSON (``None``: no file, a dry run, or no training figures).

    Raises:
        UserValueError: the file is there but is no readable ``make bench-gpu`` result (one line naming it).
    """
    import json

    from cream_pl.core.errors import UserValueError

    if path is None or not Path(path).is_file():
        return None
    try:
        gpu = json.loads(Path(path).read_text(encoding="utf-8"))
        if gpu.get("dry_run") or not gpu.get("training"):
            return None
        steps = {f"{b} {c}": float(tr[c]["images_per_s"]) for b, tr in gpu["training"].items()
                 for c in ("fp32", "bf16_channels_last") if c in tr}
        return {"machine": str(gpu["machine"]), "file": str(path), "steps": steps}
    except (OSError, ValueError, AttributeError, KeyError, TypeError) as err:  # JSONDecodeError is a ValueError
        raise UserValueError(f"{path}: not a readable `make bench-gpu` result ({type(err).__name__}: {err}); rerun "
                             "`make bench-gpu` or remove the file") from err


def bench_cub_loading(workdir: Path | str, *, num_images: int = 64, batch_size: int = 32, size: int = 224,
                      steps: int = 1, warmup: int = 0, gpu_results: Path | str | None = None) -> dict[str, Any]:
    """``make bench``'s loading row: one worker's images/s per decoder on CUB-sized JPEGs, next to the
    CPU training step of the VGG16 and ResNet50 CUB recipes at ``batch_size``.

    The step is the recipe's model (random init, ``size`` px, fp32, this process's threads), ``steps``
    timed steps after ``warmup`` untimed ones: on a 2-core CPU one step of batch 32 takes about a
    minute (ResNet50 with its large feature map), so the default is one step and no warm-up (the
    first step's one-time set-up is small next to that minute). With ``gpu_results`` (a ``make bench-gpu`` JSON, not a dry
    run) the workers a GPU needs are derived from its steps; that file is read first, before any measurement.
    """
    import torch

    from cream_pl.data.images import DECODERS
    from cream_pl.pipelines.bench_training import (
        CUB_RECIPES,
        build_recipe_model,
        recipe_section,
        training_images_per_s,
    )

    gpu = gpu_steps(gpu_results)  # a damaged file is one line now, not a traceback after the measurements
    root = write_cub_sized_jpegs(Path(workdir) / "cub_sized", num_train=num_images)
    out: dict[str, Any] = {"per_worker": {d: per_worker_loading(root, d) for d in DECODERS}, "cpu_step": {},
                           "threads": torch.get_num_threads()}
    for backbone, recipe in CUB_RECIPES.items():
        model = build_recipe_model(recipe)
        out["cpu_step"][backbone] = training_images_per_s(
            model, "cpu", batch_size=batch_size, size=size, steps=steps, warmup=warmup, repeats=1,
            deterministic=recipe_section(recipe, "trainer").get("deterministic"))
        del model
    out["gpu"] = gpu
    return out


def loading_rows(d: dict[str, Any]) -> tuple[list[tuple[str, str, str, bool | None]], list[str]]:
    """``bench.md`` rows (name, result, target, met) and notes of a :func:`bench_cub_loading` result."""
    rows: list[tuple[str, str, str, bool | None]] = []
    per = d["per_worker"]
    for decoder, w in per.items():
        rows.append((f"Loading at CUB size ({w['image_size'][0]}×{w['image_size'][1]} JPEG, q{JPEG_QUALITY}), one worker "
                     f"(1 thread), `{decoder}` decoder: decode {w['decode_ms']:.1f} ms + train transform "
                     f"{w['transform_ms']:.1f} ms", f"{w['images_per_s']:.0f} img/s", "—", None))
    best = max(per, key=lambda k: per[k]["images_per_s"])
    for backbone, s in d["cpu_step"].items():
        need = ", ".join(f"{workers_needed(s['images_per_s'], w['images_per_s'])} (`{k}`)" for k, w in per.items())
        rows.append((f"… next to the CPU training step of the {backbone} CUB recipe (batch {s['batch_size']}, {s['size']} px, "
                     f"fp32, {d['threads']} threads, {s['steps']} timed step{'s' if s['steps'] > 1 else ''}, {s['warmup']} warm-up): "
                     f"workers to feed it {need}",
                     f"{s['images_per_s']:.1f} img/s", "—", None))
    notes = ["", "Workers a GPU needs: `ceil(GPU step img/s / one worker's img/s)`, one CPU core per worker."]
    if d.get("gpu"):
        g = d["gpu"]
        parts = [f"{name} {rate:.0f} img/s → {workers_needed(rate, per[best]['images_per_s'])}"
                 for name, rate in g["steps"].items()]
        notes[-1] += f" From `{g['file']}` ({g['machine']}), with `{best}`: " + "; ".join(parts) + "."
    else:
        notes[-1] += (f" No GPU figures here (`make bench-gpu` on a GPU writes them): with `{best}` at "
                      f"{per[best]['images_per_s']:.0f} img/s per worker, a step of S img/s needs "
                      f"ceil(S / {per[best]['images_per_s']:.0f}) workers.")
    return rows, notes
