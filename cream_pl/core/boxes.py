"""The one owner of box formats and box conversions.

Every box that crosses a module boundary in cream-pl is labelled with a :class:`BoxFormat`.
The WSOL benchmark stores boxes as *inclusive* integer pixel coordinates and scores them with
a "+1" IoU; COCO JSON stores ``[x, y, w, h]``; the box regressor predicts boxes normalised by
the image size. All conversions go through :func:`convert_boxes`.

Example:
    >>> import torch
    >>> b = torch.tensor([[10.0, 20.0, 29.0, 39.0]])
    >>> convert_boxes(b, BoxFormat.XYXY_INCLUSIVE, BoxFormat.XYWH)
    tensor([[10., 20., 20., 20.]])
"""

from __future__ import annotations

from enum import Enum

import torch
from torch import Tensor
from torchvision.ops import box_iou

__all__ = ["BoxFormat", "convert_boxes", "box_iou_inclusive", "resize_boxes_protocol", "clip_boxes", "hflip_boxes_rel"]


class BoxFormat(str, Enum):
    """Box formats used in the project.

    - ``XYXY_INCLUSIVE``: ``[x0, y0, x1, y1]`` absolute pixels, ``x1``/``y1`` are the last pixel
      *inside* the box (WSOL benchmark metadata, ``localization.txt``).
    - ``XYXY``: ``[x0, y0, x1, y1]`` absolute, ``x1``/``y1`` one past the last pixel
      (torchvision, albumentations ``pascal_voc``).
    - ``XYWH``: ``[x, y, w, h]`` absolute (COCO JSON ``bbox``); ``w = x1 - x0`` of ``XYXY``.
    - ``XYXY_REL``: ``XYXY`` divided by the image width/height (albumentations format).
    - ``XYWH_REL``: ``XYWH`` divided by the image width/height (PSOL regressor target).
    """

    XYXY_INCLUSIVE = "xyxy_inclusive"
    XYXY = "xyxy"
    XYWH = "xywh"
    XYXY_REL = "xyxy_rel"
    XYWH_REL = "xywh_rel"

    @property
    def is_relative(self) -> bool:
        return self in (BoxFormat.XYXY_REL, BoxFormat.XYWH_REL)


def _as_tensor(boxes: Tensor) -> Tensor:
    if not isinstance(boxes, Tensor):
        boxes = torch.as_tensor(boxes)
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {tuple(boxes.shape)}")
    return boxes


def _to_xyxy(boxes: Tensor, fmt: BoxFormat, size: tuple[float, float] | None) -> Tensor:
    b = boxes.to(torch.float64)
    if fmt == BoxFormat.XYXY_INCLUSIVE:
        return torch.stack([b[:, 0], b[:, 1], b[:, 2] + 1, b[:, 3] + 1], dim=1)
    if fmt == BoxFormat.XYXY:
        return b.clone()
    if fmt == BoxFormat.XYWH:
        return torch.stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]], dim=1)
    assert size is not None
    w, h = size
    scale = b.new_tensor([w, h, w, h])
    if fmt == BoxFormat.XYXY_REL:
        return b * scale
    return _to_xyxy(b * scale, BoxFormat.XYWH, None)  # XYWH_REL


def _from_xyxy(b: Tensor, fmt: BoxFormat, size: tuple[float, float] | None) -> Tensor:
    if fmt == BoxFormat.XYXY_INCLUSIVE:
        return torch.stack([b[:, 0], b[:, 1], b[:, 2] - 1, b[:, 3] - 1], dim=1)
    if fmt == BoxFormat.XYXY:
        return b
    if fmt == BoxFormat.XYWH:
        return torch.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], dim=1)
    assert size is not None
    w, h = size
    scale = b.new_tensor([w, h, w, h])
    if fmt == BoxFormat.XYXY_REL:
        return b / scale
    return _from_xyxy(b, BoxFormat.XYWH, None) / scale  # XYWH_REL


def convert_boxes(
    boxes: Tensor,
    src: BoxFormat | str,
    dst: BoxFormat | str,
    image_size: tuple[float, float] | None = None,
) -> Tensor:
    """Convert ``(N, 4)`` boxes between formats.

    Args:
        boxes: ``(N, 4)`` tensor (or array-like) in format ``src``.
        src: source :class:`BoxFormat`.
        dst: destination :class:`BoxFormat`.
        image_size: ``(width, height)``; required when either format is relative.

    Returns:
        ``(N, 4)`` float64 tensor in format ``dst``.

    Example:
        >>> convert_boxes(torch.tensor([[0.0, 0.0, 0.5, 0.5]]), "xyxy_rel", "xyxy_inclusive", (224, 224))
        tensor([[  0.,   0., 111., 111.]])
    """
    src, dst = BoxFormat(src), BoxFormat(dst)
    if (src.is_relative or dst.is_relative) and image_size is None:
        raise ValueError(f"converting {src.value} -> {dst.value} needs image_size=(width, height)")
    boxes = _as_tensor(boxes)
    out_dtype = boxes.dtype if boxes.is_floating_point() else torch.float64
    if src == dst:
        return boxes.to(out_dtype).clone()
    return _from_xyxy(_to_xyxy(boxes, src, image_size), dst, image_size).to(out_dtype)


def box_iou_inclusive(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """Pairwise IoU of inclusive-pixel boxes with the WSOL benchmark's "+1" areas.

    Args:
        boxes_a: ``(N, 4)`` ``XYXY_INCLUSIVE`` boxes.
        boxes_b: ``(M, 4)`` ``XYXY_INCLUSIVE`` boxes.

    Returns:
        ``(N, M)`` float64 IoU matrix.

    Example:
        >>> box_iou_inclusive(torch.tensor([[0, 0, 0, 0]]), torch.tensor([[0, 0, 0, 0]]))
        tensor([[1.]], dtype=torch.float64)
    """
    a = _to_xyxy(_as_tensor(boxes_a), BoxFormat.XYXY_INCLUSIVE, None)
    b = _to_xyxy(_as_tensor(boxes_b), BoxFormat.XYXY_INCLUSIVE, None)
    if (a[:, 2] < a[:, 0]).any() or (b[:, 2] < b[:, 0]).any() or (a[:, 3] < a[:, 1]).any() or (b[:, 3] < b[:, 1]).any():
        raise ValueError("inverted box (x1 < x0 or y1 < y0) passed to box_iou_inclusive")
    return torch.nan_to_num(box_iou(a, b), nan=0.0)


def resize_boxes_protocol(boxes: Tensor, orig_size: tuple[int, int], new_size: tuple[int, int]) -> Tensor:
    """Rescale inclusive boxes the way the WSOL benchmark does: ``int(x * new_w / orig_w)`` (truncation).

    Args:
        boxes: ``(N, 4)`` ``XYXY_INCLUSIVE`` boxes in the original image.
        orig_size: ``(width, height)`` of the original image.
        new_size: ``(width, height)`` of the evaluation image (``(224, 224)``).

    Example:
        >>> resize_boxes_protocol(torch.tensor([[1, 2, 4, 3]]), (10, 20), (35, 10))
        tensor([[ 3,  1, 14,  1]])
    """
    boxes = _as_tensor(boxes).to(torch.float64)
    (ow, oh), (nw, nh) = orig_size, new_size
    # multiply first, then divide: int(x * 224 / W) as the benchmark writes it (x * (224 / W) differs
    # for some (x, W) pairs, e.g. x=45, W=80)
    return torch.trunc(boxes * boxes.new_tensor([nw, nh, nw, nh]) / boxes.new_tensor([ow, oh, ow, oh])).to(torch.int64)


def clip_boxes(boxes: Tensor, fmt: BoxFormat | str, image_size: tuple[int, int]) -> Tensor:
    """Clip absolute boxes to an image of ``(width, height)``, keeping the format."""
    fmt = BoxFormat(fmt)
    if fmt.is_relative:
        return _as_tensor(boxes).clamp(0.0, 1.0)
    w, h = image_size
    xyxy = _to_xyxy(_as_tensor(boxes), fmt, None)
    xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, w)
    xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, h)
    return _from_xyxy(xyxy, fmt, None)


def hflip_boxes_rel(boxes: Tensor, flip: Tensor | bool = True) -> Tensor:
    """Mirror normalised ``XYWH_REL`` boxes left-right (``x -> 1 - x - w``) where ``flip`` (``(N,)`` bool or one bool).

    Example:
        >>> hflip_boxes_rel(torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4]]), torch.tensor([True, False]))
        tensor([[0.6000, 0.2000, 0.3000, 0.4000],
                [0.1000, 0.2000, 0.3000, 0.4000]])
    """
    boxes = _as_tensor(boxes)
    mirrored = boxes.clone()
    mirrored[:, 0] = 1.0 - boxes[:, 0] - boxes[:, 2]
    if isinstance(flip, bool):
        return mirrored if flip else boxes
    return torch.where(flip.to(boxes.device).reshape(-1, 1), mirrored, boxes)
