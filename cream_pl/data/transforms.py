"""All image augmentation code of cream-pl (albumentations, pinned to the MIT-licensed 2.0.8).

The benchmark protocol (wsolevaluation ``get_data_loader``):

- train: resize to ``resize_size x resize_size`` (256), random crop ``crop_size`` (224), horizontal
  flip, ImageNet mean/std;
- eval (val / test / pseudo boxes): **squash** to ``eval_size x eval_size`` (224) without keeping the
  aspect ratio and without a crop, ImageNet mean/std.

Resizing uses bilinear interpolation, and area interpolation when shrinking (close to Pillow's
antialiased bilinear that the reference uses). GT boxes and masks of eval splits never go through
albumentations: they follow the protocol's own rules (see ``cream_pl.data.datamodule``).

Albumentations' ``Compose`` keeps its own random generator, which ``DataLoader`` workers would copy
unchanged (every worker would draw the same crops). :func:`reseed_for_worker` reseeds it from
``torch.initial_seed()`` once per process and worker, so augmentations differ between workers and
follow ``seed_everything``.

Example:
    >>> import numpy as np
    >>> t = build_eval_transform(224)
    >>> t(image=np.zeros((300, 500, 3), np.uint8))["image"].shape
    torch.Size([3, 224, 224])
"""

from __future__ import annotations

import math
import os
from typing import Any, Literal

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TrainTransformName",
    "build_train_transform",
    "build_eval_transform",
    "build_box_train_transform",
    "random_state",
    "restore_random_state",
    "RandomResizedBoxCrop",
    "build_box_eval_transform",
    "reseed_for_worker",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TrainTransformName = Literal["crop", "resized_crop"]


def _resize(size: int) -> A.Resize:
    return A.Resize(size, size, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
                    area_for_downscale="image")


Stats = tuple[float, float, float]


def _finish(mean: Stats = IMAGENET_MEAN, std: Stats = IMAGENET_STD) -> list[A.BasicTransform]:
    if len(mean) != 3 or len(std) != 3 or any(v <= 0 for v in std):
        raise ValueError(f"mean and std need 3 values each (std > 0), got mean={mean}, std={std}")
    return [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()]


def build_train_transform(
    resize_size: int = 256,
    crop_size: int = 224,
    name: TrainTransformName = "crop",
    *,
    with_boxes: bool = False,
    resized_crop_scale: tuple[float, float] = (0.2, 1.0),
    mean: Stats = IMAGENET_MEAN,
    std: Stats = IMAGENET_STD,
) -> A.Compose:
    """Training augmentation.

    Args:
        resize_size: side of the square resize before the crop (``"crop"`` only).
        crop_size: output side.
        name: ``"crop"`` = protocol (resize, random crop, flip); ``"resized_crop"`` =
            ``RandomResizedCrop(crop_size, scale=resized_crop_scale)`` + flip (KD-CI-CAM style).
        with_boxes: also transform ``bboxes`` (``XYXY`` exclusive pixels, albumentations
            ``pascal_voc``) passed with ``box_labels``; boxes are clipped to the crop and a box
            fully cropped out is dropped.
        resized_crop_scale: area range of ``"resized_crop"``.
        mean / std: per-channel normalisation on the 0-1 scale (the backbone's ``input_mean`` /
            ``input_std``; ImageNet's by default).

    Example:
        >>> import numpy as np
        >>> out = build_train_transform(32, 24)(image=np.zeros((50, 40, 3), np.uint8))
        >>> tuple(out["image"].shape)
        (3, 24, 24)
    """
    if crop_size < 1 or resize_size < 1:
        raise ValueError(f"sizes must be positive, got resize_size={resize_size}, crop_size={crop_size}")
    if name == "crop":
        if crop_size > resize_size:
            raise ValueError(f"crop_size ({crop_size}) must not exceed resize_size ({resize_size})")
        geometric = [_resize(resize_size), A.RandomCrop(crop_size, crop_size)]
    elif name == "resized_crop":
        lo, hi = resized_crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"resized_crop_scale must satisfy 0 < lo <= hi <= 1, got {resized_crop_scale}")
        geometric = [A.RandomResizedCrop(size=(crop_size, crop_size), scale=(lo, hi), interpolation=cv2.INTER_LINEAR,
                                         mask_interpolation=cv2.INTER_NEAREST, area_for_downscale="image")]
    else:
        raise ValueError(f"unknown train transform {name!r}; choose 'crop' or 'resized_crop'")
    bbox_params = _box_params() if with_boxes else None
    return A.Compose([*geometric, A.HorizontalFlip(p=0.5), *_finish(mean, std)], bbox_params=bbox_params)


def build_eval_transform(eval_size: int = 224, mean: Stats = IMAGENET_MEAN, std: Stats = IMAGENET_STD) -> A.Compose:
    """Evaluation transform: squash-resize to ``eval_size x eval_size`` (no crop), normalise.

    Example:
        >>> import numpy as np
        >>> out = build_eval_transform(16)(image=np.full((30, 10, 3), 255, np.uint8))["image"]
        >>> tuple(out.shape), round(float(out[0, 0, 0]), 4)
        ((3, 16, 16), 2.2489)
    """
    if eval_size < 1:
        raise ValueError(f"eval_size must be positive, got {eval_size}")
    return A.Compose([_resize(eval_size), *_finish(mean, std)])


def _box_params() -> A.BboxParams:
    return A.BboxParams(format="pascal_voc", label_fields=["box_labels"], clip=True, min_area=0.0,
                        min_visibility=0.0, filter_invalid_bboxes=True)


class RandomResizedBoxCrop(A.RandomSizedBBoxSafeCrop):
    """PSOL's ``RandomResizedBBoxCrop``: a random resized crop that keeps (part of) the box, then resize.

    The window is drawn as torchvision's ``RandomResizedCrop`` draws it (area fraction in
    ``scale``, aspect ratio log-uniform in ``ratio``), again until it overlaps the box (10 tries,
    then the whole image); the box is clipped to the window. Unlike a box-safe crop, the window may
    cut the object, as PSOL trains its regressor.
    """

    def __init__(self, size: int, scale: tuple[float, float] = (0.2, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), interpolation: int = cv2.INTER_LINEAR) -> None:
        super().__init__(size, size, erosion_rate=0.0, interpolation=interpolation)
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1, got {scale}")
        if not 0.0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < lo <= hi, got {ratio}")
        self.scale, self.ratio = tuple(scale), tuple(ratio)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        boxes = np.asarray(data.get("bboxes", np.zeros((0, 4))))[:, :4]  # normalised x_min, y_min, x_max, y_max
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            area = height * width * self.py_random.uniform(*self.scale)
            aspect = math.exp(self.py_random.uniform(log_lo, log_hi))
            w = int(round(math.sqrt(area * aspect)))
            h = int(round(math.sqrt(area / aspect)))
            if not (0 < w <= width and 0 < h <= height):
                continue
            x0 = self.py_random.randint(0, width - w)
            y0 = self.py_random.randint(0, height - h)
            if len(boxes) == 0 or _overlaps(boxes, (x0, y0, x0 + w, y0 + h), width, height):
                return {"crop_coords": (x0, y0, x0 + w, y0 + h)}
        return {"crop_coords": (0, 0, width, height)}


def _overlaps(boxes: np.ndarray, crop: tuple[int, int, int, int], width: int, height: int) -> bool:
    """Whether the pixel window ``crop`` overlaps every box by at least one pixel in each direction."""
    bx = boxes * np.array([width, height, width, height])
    ix = np.minimum(bx[:, 2], crop[2]) - np.maximum(bx[:, 0], crop[0])
    iy = np.minimum(bx[:, 3], crop[3]) - np.maximum(bx[:, 1], crop[1])
    return bool(((ix >= 1) & (iy >= 1)).all())


def build_box_train_transform(
    size: int = 224,
    erosion_rate: float = 0.0,
    hflip_p: float = 0.5,
    mean: Stats = IMAGENET_MEAN,
    std: Stats = IMAGENET_STD,
    crop: Literal["box_safe", "psol"] = "box_safe",
    scale: tuple[float, float] = (0.2, 1.0),
) -> A.Compose:
    """Box-aware training augmentation (box regressor): a random crop that keeps the box, resized, then a flip.

    ``RandomSizedBBoxSafeCrop`` picks a window containing the box (from the box itself to the whole
    image) and resizes it to ``size x size``. Boxes are albumentations ``pascal_voc`` (``XYXY``,
    exclusive pixels), passed as ``bboxes`` with ``box_labels``.

    Args:
        size: output side.
        erosion_rate: fraction of the box the crop may cut away (0 keeps the whole box).
        hflip_p: probability of a horizontal flip.
        crop: ``"box_safe"`` (a window containing the whole box) or ``"psol"``
            (:class:`RandomResizedBoxCrop`: PSOL's random resized crop with area ``scale``, box clipped).
        scale: area range of the ``"psol"`` crop (PSOL: 0.2 to 1).

    Example:
        >>> import numpy as np
        >>> out = build_box_train_transform(32)(image=np.zeros((40, 60, 3), np.uint8), bboxes=[(5, 5, 30, 20)],
        ...                                     box_labels=[0])
        >>> tuple(out["image"].shape), len(out["bboxes"])
        ((3, 32, 32), 1)
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if not 0.0 <= erosion_rate < 1.0:
        raise ValueError(f"erosion_rate must be in [0, 1), got {erosion_rate}")
    if not 0.0 <= hflip_p <= 1.0:
        raise ValueError(f"hflip_p must be in [0, 1], got {hflip_p}")
    if crop == "psol":
        window: A.BasicTransform = RandomResizedBoxCrop(size, scale=scale)
    elif crop == "box_safe":
        window = A.RandomSizedBBoxSafeCrop(size, size, erosion_rate=erosion_rate, interpolation=cv2.INTER_LINEAR)
    else:
        raise ValueError(f"crop must be 'box_safe' or 'psol', got {crop!r}")
    return A.Compose([window, A.HorizontalFlip(p=hflip_p), *_finish(mean, std)], bbox_params=_box_params())


def build_box_eval_transform(size: int = 224, mean: Stats = IMAGENET_MEAN, std: Stats = IMAGENET_STD) -> A.Compose:
    """Evaluation transform with boxes: squash to ``size x size`` (the protocol's eval resize), normalise."""
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    return A.Compose([_resize(size), *_finish(mean, std)], bbox_params=_box_params())


def _random_parts(transform: Any) -> list[Any]:
    """``transform`` and every transform inside it, depth first: each holds its own generators."""
    parts = [transform]
    for child in getattr(transform, "transforms", []):
        parts += _random_parts(child)
    return parts


def random_state(transform: A.BaseCompose) -> list[list[Any]]:
    """The generators' states of ``transform`` and of every transform inside it (NumPy's bit generator, Python's
    ``random``), as plain values: what a fit resumed from a checkpoint puts back with :func:`restore_random_state`.

    Example:
        >>> t = build_box_train_transform(32); t.set_random_seed(0)
        >>> state = random_state(t); _ = t.py_random.random()
        >>> restore_random_state(t, state); random_state(t) == state
        True
    """
    return [[t.random_generator.bit_generator.state, t.py_random.getstate()] for t in _random_parts(transform)]


def restore_random_state(transform: A.BaseCompose, state: list[list[Any]]) -> None:
    """Put back what :func:`random_state` returned, in place (a data set holding ``transform`` sees it), and keep
    :func:`reseed_for_worker` from reseeding it in this process."""
    parts = _random_parts(transform)
    if len(parts) != len(state):
        raise ValueError(f"a random state of {len(state)} transforms cannot be put back into {len(parts)}")
    for t, (numpy_state, python_state) in zip(parts, state):
        t.random_generator.bit_generator.state = numpy_state
        t.py_random.setstate(tuple(tuple(v) if isinstance(v, list) else v for v in python_state))
    transform._cream_seed_key = (os.getpid(), torch.initial_seed())  # type: ignore[attr-defined]


def reseed_for_worker(transform: A.Compose) -> None:
    """Reseed ``transform`` from ``torch.initial_seed()`` once per (process, worker seed).

    In a ``DataLoader`` worker ``torch.initial_seed()`` is the worker's own seed (new each epoch
    unless workers persist); in the main process it is the seed of ``seed_everything``.
    """
    key = (os.getpid(), torch.initial_seed())
    if getattr(transform, "_cream_seed_key", None) != key:
        transform.set_random_seed(torch.initial_seed() % 2**32)
        transform._cream_seed_key = key  # type: ignore[attr-defined]
