"""The embedded synthetic WSOL benchmark: a deterministic dataset in the benchmark format.

Two named configurations (:data:`PRESETS`): ``cub``, the embedded benchmark of ``make demo`` and
the default of ``cream-pl data synth``, built from CUB's properties; and ``hard``, the earlier
adversarial design, which is also what a bare :class:`SynthConfig` (and
:func:`generate_synthetic_dataset` without ``config``) gives. The ``hard`` design, below:

Each image holds one object (sometimes two of the same class) made of

- a large textured **body** (an irregular ellipse, random elongation) plus an optional **tail**,
  whose colour, texture and shape come from one distribution shared by all classes, with a
  weak class bias (``body_class_bias``): the body alone says little about the class;
- a small **head** (about ``head_fraction`` of the object area) whose shape *and* colour decide
  the class: class ``k`` is one (colour, shape) pair, e.g. ``red_circle``.

What makes it hard, as in real WSOL: the part that decides the class is small, so a classifier
can ignore the rest of the object; backgrounds are random crops of the photographs bundled with
scikit-image, covered with clutter (lines, rectangles, ellipses, some in head colours);
**distractors** look like parts of objects: headless bodies with the body texture and lone
"heads" with (colour, shape) pairs that no class uses; objects vary in scale (box area
``object_area`` of the image), rotation, mirroring, elongation and position; images vary in size
and aspect ratio (``min_side``..``max_side``) so the squash-resize of the protocol matters.

With ``confounded=True`` each class has a usual background photograph that the train split
uses with probability ``usual_background_prob`` (the object/context co-occurrence that
KD-CI-CAM targets); val and test draw backgrounds uniformly (``confounded_eval="uniform"``) or
never from the class's usual one (``"unusual"``).

Every split (train included) has boxes in ``localization.txt`` (tight inclusive box of each
instance mask) and masks in ``localization_masks.txt``: one ``{0, 255}`` PNG per instance (the
exact silhouette body ∪ tail ∪ head, a pixel is in when at least half of it is covered) and an
all-zero ignore PNG per image (the silhouette is exact, so nothing is ambiguous).
``metadata/<split>/backgrounds.txt`` records ``<image_id>,<photo>,<is_usual 0|1>``.

Images are JPEG (quality 92; PNG with ``image_format="png"``), masks PNG. Every random draw comes
from ``numpy.random.default_rng([seed, split, index])``, so the same seed and configuration give
byte-identical files on the same software stack.

Example:
    >>> import tempfile
    >>> root = generate_synthetic_dataset(tempfile.mkdtemp(), seed=0, num_classes=2, num_train=2,
    ...                                   num_val=2, num_test=2, min_side=64, max_side=80)
    >>> sorted(p.name for p in (root / "metadata").iterdir())
    ['test', 'train', 'val']
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from cream_pl.core.io import atomic_write_text, check_output_dir
from cream_pl.data.metadata import MaskRecord, SampleRecord, write_class_names, write_split

__all__ = [
    "PRESETS",
    "SynthConfig",
    "HEAD_COLOURS",
    "HEAD_SHAPES",
    "BACKGROUND_PHOTOS",
    "class_specs",
    "generate_synthetic_dataset",
    "generator_wrote",
    "holds_dataset",
    "preset_config",
]

GENERATOR_VERSION = 1
SPLITS = ("train", "val", "test")

HEAD_COLOURS: dict[str, tuple[int, int, int]] = {  # RGB, saturated (bodies use muted colours)
    "red": (222, 32, 32),
    "yellow": (240, 220, 30),
    "blue": (30, 80, 235),
    "magenta": (220, 40, 205),
    "orange": (250, 140, 20),
    "green": (40, 205, 60),
}
HEAD_SHAPES = ("circle", "triangle", "square", "star", "cross", "bar")
BODY_PALETTE: tuple[tuple[int, int, int], ...] = (
    (125, 88, 62),  # brown
    (130, 130, 128),  # grey
    (112, 112, 64),  # olive
    (82, 98, 124),  # slate
    (182, 152, 112),  # tan
    (52, 102, 100),  # teal
)
BACKGROUND_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
    "retina", "camera", "brick", "grass", "gravel", "moon",
)
_SS = 4  # supersampling factor of the polygon rasteriser


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the generator (defaults = the embedded benchmark).

    Attributes:
        num_classes: 2..36 (one (colour, shape) head pair per class).
        num_train / num_val / num_test: images per split (classes balanced within one image).
        min_side / max_side: image width and height are drawn independently in this range.
        object_area: range of the main object's box area as a fraction of the image area.
        head_fraction: head polygon area / object area.
        body_class_bias: probability that the body colour is the class's preferred palette
            entry (otherwise uniform over the shared palette).
        tail_prob: probability that an object has a tail.
        second_object_prob: probability of a second, smaller object of the same class.
        distractor_body_prob: probability of a headless body in the background.
        distractor_head_prob: probability of each of up to two lone heads with unused pairs.
        clutter: inclusive range of the number of clutter shapes.
        clutter_head_colour_prob: probability that a clutter shape takes a head colour (a lone
            coloured disc or square then imitates a head: a distractor that copies an object part).
        object_area_beta: ``(a, b)``: draw the box-area fraction from ``Beta(a, b)`` clipped to
            ``object_area`` instead of uniformly in it (CUB's fractions are skewed: median 0.32).
        centre_sd: ``(sd_x, sd_y)`` as fractions of the image size: the object's box centre is drawn
            from a normal around the image centre (CUB: 0.09, 0.07) instead of uniformly.
        body_texture_class_bias: probability that the body texture kind is the class's own (with
            ``body_class_bias``, bodies share class-correlated appearance, as a bird's plumage).
        body_head_tint: fraction by which the main objects' body colour is mixed toward the head
            colour (0: muted palette only). A bird's head colour usually runs through its plumage (a
            cardinal is red all over, its crest the distinctive part): the parts then share a
            class-correlated colour direction while the head stays the most saturated, discriminative part.
        backgrounds: the bundled photographs backgrounds are cut from (``None``: all of
            ``BACKGROUND_PHOTOS``; the CUB-like preset keeps the scenery and texture ones, without
            another salient object such as the astronaut, the cat or the rocket).
        confounded: class-correlated backgrounds in train (see module docstring).
        usual_background_prob: probability of the usual background in train when confounded.
        confounded_eval: backgrounds of val/test when confounded, ``"uniform"`` or ``"unusual"``.
        image_format: ``"jpg"`` (quality 92) or ``"png"``.
    """

    num_classes: int = 8
    num_train: int = 480
    num_val: int = 80
    num_test: int = 160
    min_side: int = 224
    max_side: int = 320
    object_area: tuple[float, float] = (0.15, 0.6)
    head_fraction: float = 0.13
    body_class_bias: float = 0.3
    tail_prob: float = 0.75
    second_object_prob: float = 0.1
    distractor_body_prob: float = 0.4
    distractor_head_prob: float = 0.4
    clutter: tuple[int, int] = (3, 8)
    clutter_head_colour_prob: float = 0.3
    object_area_beta: tuple[float, float] | None = None
    centre_sd: tuple[float, float] | None = None
    body_texture_class_bias: float = 0.0
    body_head_tint: float = 0.0
    backgrounds: tuple[str, ...] | None = None
    confounded: bool = False
    usual_background_prob: float = 0.8
    confounded_eval: Literal["uniform", "unusual"] = "uniform"
    image_format: Literal["jpg", "png"] = "jpg"

    def __post_init__(self) -> None:
        n_pairs = len(HEAD_COLOURS) * len(HEAD_SHAPES)
        if not 2 <= self.num_classes <= n_pairs:
            raise ValueError(f"num_classes must be in [2, {n_pairs}], got {self.num_classes}")
        for name in ("num_train", "num_val", "num_test"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_train < self.num_classes:
            raise ValueError(f"num_train ({self.num_train}) must be >= num_classes ({self.num_classes}): classes "
                             f"{self.num_train} to {self.num_classes - 1} would have no train image")
        if not 32 <= self.min_side <= self.max_side:
            raise ValueError(f"need 32 <= min_side <= max_side, got {self.min_side}, {self.max_side}")
        lo, hi = self.object_area
        if not 0.01 <= lo <= hi <= 0.9:
            raise ValueError(f"object_area must satisfy 0.01 <= lo <= hi <= 0.9, got {self.object_area}")
        if not 0.02 <= self.head_fraction <= 0.5:
            raise ValueError(f"head_fraction must be in [0.02, 0.5], got {self.head_fraction}")
        if self.object_area_beta is not None and min(self.object_area_beta) <= 0:
            raise ValueError(f"object_area_beta must be two positive numbers, got {self.object_area_beta}")
        if self.backgrounds is not None and (len(self.backgrounds) < 2
                                             or not set(self.backgrounds) <= set(BACKGROUND_PHOTOS)):
            raise ValueError(f"backgrounds must name at least 2 of {BACKGROUND_PHOTOS}, got {self.backgrounds}")
        if self.centre_sd is not None and not all(0 < v <= 1 for v in self.centre_sd):
            raise ValueError(f"centre_sd must be two fractions in (0, 1], got {self.centre_sd}")
        for name in ("body_class_bias", "tail_prob", "second_object_prob", "distractor_body_prob",
                     "distractor_head_prob", "usual_background_prob", "body_texture_class_bias", "body_head_tint",
                     "clutter_head_colour_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.clutter[0] <= self.clutter[1]:
            raise ValueError(f"clutter must be an inclusive range 0 <= lo <= hi, got {self.clutter}")
        if self.confounded_eval not in ("uniform", "unusual"):
            raise ValueError(f"confounded_eval must be 'uniform' or 'unusual', got {self.confounded_eval!r}")
        if self.image_format not in ("jpg", "png"):
            raise ValueError(f"image_format must be 'jpg' or 'png', got {self.image_format!r}")
        if not self.confounded:  # they only shape a confounded dataset: never silently ignored
            for name in ("usual_background_prob", "confounded_eval"):
                if getattr(self, name) != _FIELD_DEFAULTS[name]:
                    raise ValueError(f"{name}={getattr(self, name)!r} only applies with confounded=True")


_FIELD_DEFAULTS = {f.name: f.default for f in fields(SynthConfig)}

PRESETS: dict[str, SynthConfig] = {
    # Today's embedded benchmark, adversarial in ways CUB is not: headless distractor bodies and lone
    # heads that copy object parts, second objects, heavy clutter, a body texture shared by every
    # class (the head alone decides), uniform placement and area fractions.
    "hard": SynthConfig(),
    # Built from CUB's properties (wsol_protocol.md, last section), calibrated on CAM and the center
    # baseline only (make calibrate-cub), never on CREAM: one main object (second objects rare),
    # box-area fractions skewed like CUB's (Beta(2.2, 4.2): mean 0.34, median 0.32), centred boxes
    # (sd 0.09 W, 0.07 H), bodies whose colour and texture follow the class and carry a tint of the
    # head's colour (a bird's plumage), the small saturated head still the most discriminative part,
    # scenery and texture photo backgrounds (no other salient object) with light clutter in no head
    # colour, no distractors. Splits: train 2,400 (CUB: 5,994; set by the 2-core time budget of the passes
    # over it, pseudo boxes and frozen features, never by a score), val 25 per class, test >= 1000. The one calibrated knob is the
    # tint: `make calibrate-cub-sweep` (results/calibration_cub/sweep.md) trains the embedded CAM
    # recipe at each listed tint, and the preset takes the first (smallest) one at which CAM's
    # MaxBoxAccV2, GT-known and Top-1 Cls land in CUB's ranges, above the center baseline.
    "cub": SynthConfig(num_train=2400, num_val=200, num_test=1000, min_side=224, max_side=320,
                       object_area=(0.06, 0.9), object_area_beta=(2.2, 4.2), centre_sd=(0.09, 0.07),
                       body_class_bias=0.9, body_texture_class_bias=0.9, body_head_tint=0.25, second_object_prob=0.02,
                       distractor_body_prob=0.0, distractor_head_prob=0.0, clutter=(0, 2), clutter_head_colour_prob=0.0,
                       backgrounds=("grass", "gravel", "brick", "moon", "hubble_deep_field", "immunohistochemistry")),
}
"""Named generator configurations (``cream-pl data synth --preset NAME``)."""


def preset_config(preset: str, overrides: Mapping[str, Any]) -> SynthConfig:
    """``PRESETS[preset]`` with ``overrides`` (as JSON or YAML gives them: lists for tuples), each of the preset's own
    type (a count is no float) and finite, checked by :class:`SynthConfig` as a whole.

    Raises:
        ValueError: ``"<knob>: <reason>"`` for the first bad knob (an unknown one included).

    Example:
        >>> preset_config("cub", {"num_train": 48, "object_area": [0.1, 0.5]}).object_area
        (0.1, 0.5)
        >>> preset_config("cub", {"num_train": 2.5})
        Traceback (most recent call last):
        ValueError: num_train: expected int like the preset's 2400, got 2.5
    """
    base = asdict(PRESETS[preset])
    for key, value in overrides.items():
        if key not in base:
            raise ValueError(f"{key}: not a generator knob; knobs: {sorted(base)}")
        want = type(base[key])
        want = (list, tuple) if want is tuple else want
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{key}: not a finite number, got {value!r}")
        if base[key] is not None and not (isinstance(value, want) and (want is bool or not isinstance(value, bool))
                                          or want is float and isinstance(value, int) and not isinstance(value, bool)):
            raise ValueError(f"{key}: expected {getattr(want, '__name__', 'a list')} like the preset's {base[key]!r}, "
                             f"got {value!r}")
    merged = {k: tuple(v) if isinstance(v, list) else v for k, v in {**base, **overrides}.items()}
    try:
        return SynthConfig(**merged)
    except (TypeError, ValueError) as err:
        raise ValueError(" ".join(str(err).split())) from None


def class_specs(num_classes: int) -> list[tuple[str, str]]:
    """(colour, shape) head pair of each class; every colour and shape serves several classes.

    Example:
        >>> class_specs(8)[:2], class_specs(8)[6]
        ([('red', 'circle'), ('yellow', 'triangle')], ('yellow', 'circle'))
    """
    colours, n = list(HEAD_COLOURS), len(HEAD_SHAPES)
    specs = [(colours[(k + k // n) % len(colours)], HEAD_SHAPES[k % n]) for k in range(num_classes)]
    assert len(set(specs)) == len(specs)
    return specs


# ---------------------------------------------------------------------------------------------- geometry


def _unit_shape(shape: str) -> np.ndarray:
    """Polygon of a head shape with circumradius 1, centred on the origin."""
    if shape == "circle":
        t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], 1)
    if shape in ("triangle", "square"):
        k = 3 if shape == "triangle" else 4
        t = np.linspace(0, 2 * np.pi, k, endpoint=False) + np.pi / k
        return np.stack([np.cos(t), np.sin(t)], 1)
    if shape == "star":
        t = np.linspace(0, 2 * np.pi, 10, endpoint=False)
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return np.stack([r * np.cos(t), r * np.sin(t)], 1)
    if shape == "cross":
        a, w = 0.95, 0.32
        return np.array([[w, w], [w, a], [-w, a], [-w, w], [-a, w], [-a, -w], [-w, -w], [-w, -a], [w, -a],
                         [w, -w], [a, -w], [a, w]])
    if shape == "bar":
        return np.array([[0.95, 0.33], [-0.95, 0.33], [-0.95, -0.33], [0.95, -0.33]])
    raise ValueError(f"unknown head shape {shape!r}")


def _area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _blob(rng: np.random.Generator, ratio: float, n: int = 48) -> np.ndarray:
    """Irregular ellipse with semi-axes (1, ratio)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    wobble = 1 + sum(rng.uniform(0, 0.06) * np.cos(k * t + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4))
    return np.stack([np.cos(t) * wobble, ratio * np.sin(t) * wobble], 1)


@dataclass
class _Object:
    """Polygons of one object in image coordinates (pixel j spans [j, j+1))."""

    body: list[np.ndarray]  # body (+ tail)
    head: np.ndarray | None
    eye: np.ndarray | None
    centre: np.ndarray
    size: float  # body semi-major axis in pixels

    def all_points(self) -> np.ndarray:
        parts = list(self.body) + [p for p in (self.head,) if p is not None]
        return np.concatenate(parts, 0)


def _make_object(rng: np.random.Generator, head_shape: str | None, head_fraction: float, tail: bool) -> _Object:
    """Object at unit scale (body semi-major axis 1) centred on the origin, axis along x."""
    ratio = rng.uniform(0.4, 0.7)
    body = _blob(rng, ratio)
    parts = [body]
    if tail:
        t_len, t_w, j = rng.uniform(0.25, 0.6), rng.uniform(0.2, 0.4) * ratio, rng.uniform(-0.2, 0.2) * ratio
        parts.append(np.array([[-0.8, t_w], [-1.0 - t_len, j + t_w * 1.4], [-1.0 - t_len * 0.8, j - t_w * 1.2],
                               [-0.8, -t_w]]))
    head = eye = None
    if head_shape is not None:
        unit = _unit_shape(head_shape)
        body_area = sum(_area(p) for p in parts)
        h = np.sqrt(head_fraction / (1 - head_fraction) * body_area / _area(unit))
        alpha = rng.uniform(-0.35, 0.35)
        edge = np.array([np.cos(alpha), ratio * np.sin(alpha)])
        normal = np.array([np.cos(alpha) * ratio, np.sin(alpha)])
        normal /= np.linalg.norm(normal)
        centre = edge + normal * 0.55 * h
        psi = rng.uniform(0, 2 * np.pi)
        rot = np.array([[np.cos(psi), -np.sin(psi)], [np.sin(psi), np.cos(psi)]])
        head = unit @ rot.T * h + centre
        eye = _unit_shape("circle") * 0.2 * h + centre
    return _Object(parts, head, eye, np.zeros(2), 1.0)


def _place(obj: _Object, scale: float, angle: float, mirror: bool, centre: np.ndarray) -> _Object:
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) * scale
    if mirror:
        rot = rot @ np.diag([1.0, -1.0])

    def tf(p: np.ndarray | None) -> np.ndarray | None:
        return None if p is None else p @ rot.T + centre

    return _Object([tf(p) for p in obj.body], tf(obj.head), tf(obj.eye), centre, scale)  # type: ignore[misc]


def _extent(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return points.min(0), points.max(0)


# ---------------------------------------------------------------------------------------------- rendering


def _coverage(polys: Sequence[np.ndarray], x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """Fraction of each pixel of the window [x0, x0+w) x [y0, y0+h) covered by the union of polygons."""
    canvas = np.zeros((h * _SS, w * _SS), np.uint8)
    pts = [np.round(((p - [x0, y0]) * _SS - 0.5) * 16).astype(np.int32) for p in polys]
    cv2.fillPoly(canvas, pts, 255, lineType=cv2.LINE_8, shift=4)
    return cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _window(polys: Sequence[np.ndarray], width: int, height: int) -> tuple[int, int, int, int] | None:
    lo, hi = _extent(np.concatenate(polys, 0))
    x0, y0 = max(int(np.floor(lo[0])) - 1, 0), max(int(np.floor(lo[1])) - 1, 0)
    x1, y1 = min(int(np.ceil(hi[0])) + 1, width), min(int(np.ceil(hi[1])) + 1, height)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1 - x0, y1 - y0


def _composite(img: np.ndarray, polys: Sequence[np.ndarray], layer_fn) -> None:  # noqa: ANN001
    win = _window(polys, img.shape[1], img.shape[0])
    if win is None:
        return
    x0, y0, w, h = win
    alpha = _coverage(polys, x0, y0, w, h)[..., None]
    region = img[y0:y0 + h, x0:x0 + w]
    region[:] = region * (1 - alpha) + layer_fn(x0, y0, w, h) * alpha


def _body_layer(rng: np.random.Generator, base: np.ndarray, obj: _Object, kind: int | None = None):  # noqa: ANN202
    drawn = int(rng.integers(3))
    kind = drawn if kind is None else kind
    amp = rng.uniform(15, 40)
    phi, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
    wavelength = rng.uniform(0.15, 0.35) * obj.size
    spots = rng.uniform(-1, 1, size=(int(rng.integers(8, 20)), 3)) * [obj.size, obj.size * 0.6, 0.0]
    spots[:, 2] = rng.uniform(0.06, 0.15, len(spots)) * obj.size
    noise = rng.standard_normal((6, 6)).astype(np.float32)
    cx, cy = obj.centre

    def layer(x0: int, y0: int, w: int, h: int) -> np.ndarray:
        yy, xx = np.mgrid[y0:y0 + h, x0:x0 + w].astype(np.float32) + 0.5
        if kind == 0:  # stripes
            u = (xx - cx) * np.cos(phi) + (yy - cy) * np.sin(phi)
            v = amp * np.sin(2 * np.pi * u / wavelength + phase)
        elif kind == 1:  # spots
            v = np.zeros((h, w), np.float32)
            for sx, sy, sr in spots:
                v = np.maximum(v, ((xx - cx - sx) ** 2 + (yy - cy - sy) ** 2 < sr**2).astype(np.float32))
            v = -amp * 1.5 * cv2.GaussianBlur(v, (0, 0), 1.0)
        else:  # mottled
            v = amp * cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
        return np.clip(base[None, None, :] + v[..., None], 0, 255)

    return layer


def _flat_layer(colour: np.ndarray, rng: np.random.Generator | None = None):  # noqa: ANN202
    direction = rng.uniform(0, 2 * np.pi) if rng is not None else 0.0

    def layer(x0: int, y0: int, w: int, h: int) -> np.ndarray:
        if rng is None:
            return np.broadcast_to(colour, (h, w, 3)).astype(np.float32)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = (xx * np.cos(direction) + yy * np.sin(direction)) / max(w, h)
        shade = 0.85 + 0.3 * (t - t.min())
        return np.clip(colour[None, None, :] * shade[..., None], 0, 255)

    return layer


def _jitter(rng: np.random.Generator, colour: Sequence[int], amount: float) -> np.ndarray:
    return np.clip(np.asarray(colour, np.float32) + rng.uniform(-amount, amount, 3), 0, 255).astype(np.float32)


def _draw_object(img: np.ndarray, rng: np.random.Generator, obj: _Object, body_colour: np.ndarray,
                 head_colour: np.ndarray | None, texture: int | None = None) -> None:
    _composite(img, obj.body, _body_layer(rng, body_colour, obj, texture))
    if obj.head is not None and head_colour is not None:
        _composite(img, [obj.head], _flat_layer(head_colour, rng))
        _composite(img, [obj.eye], _flat_layer(np.array([20.0, 20.0, 24.0], np.float32)))  # type: ignore[list-item]


def _hard_mask(obj: _Object, width: int, height: int) -> np.ndarray:
    """Exact silhouette: pixels at least half covered by body, tail or head."""
    polys = obj.body + ([obj.head] if obj.head is not None else [])
    mask = np.zeros((height, width), bool)
    win = _window(polys, width, height)
    if win is not None:
        x0, y0, w, h = win
        mask[y0:y0 + h, x0:x0 + w] = _coverage(polys, x0, y0, w, h) >= 0.5
    return mask


@cache
def _photo(name: str) -> np.ndarray:
    """A bundled scikit-image photograph as RGB uint8, longest side at most 640."""
    import skimage.data

    img = np.asarray(getattr(skimage.data, name)())
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    img = np.ascontiguousarray(img[:, :, :3]).astype(np.uint8)
    scale = 640 / max(img.shape[:2])
    if scale < 1:
        img = cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    img.setflags(write=False)
    return img


def _background(rng: np.random.Generator, photo: np.ndarray, width: int, height: int) -> np.ndarray:
    ph, pw = photo.shape[:2]
    max_h = min(ph, pw * height / width)
    ch = rng.uniform(0.35, 1.0) * max_h
    cw = ch * width / height
    x, y = rng.uniform(0, pw - cw), rng.uniform(0, ph - ch)
    crop = photo[int(y):int(y + ch), int(x):int(x + cw)]
    interp = cv2.INTER_AREA if crop.shape[0] > height else cv2.INTER_LINEAR
    bg = cv2.resize(crop, (width, height), interpolation=interp).astype(np.float32)
    if rng.random() < 0.5:
        bg = bg[:, ::-1]
    mean = bg.mean()
    return np.clip((bg - mean) * rng.uniform(0.75, 1.2) + mean * rng.uniform(0.8, 1.2), 0, 255)


def _clutter(img: np.ndarray, rng: np.random.Generator, count: int, head_colour_prob: float = 0.3) -> None:
    h, w = img.shape[:2]
    side = min(h, w)
    head_colours = list(HEAD_COLOURS.values())
    for _ in range(count):
        if rng.random() < head_colour_prob:
            colour = tuple(float(c) for c in _jitter(rng, head_colours[rng.integers(len(head_colours))], 20))
        else:
            colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        kind = rng.integers(4)
        p = rng.uniform([0, 0], [w, h])
        size = rng.uniform(0.05, 0.3) * side
        if kind == 0:
            q = p + size * 1.5 * np.array([np.cos(a := rng.uniform(0, 2 * np.pi)), np.sin(a)])
            cv2.line(img, tuple(np.round(p).astype(int)), tuple(np.round(q).astype(int)), colour,
                     int(rng.integers(1, 5)), cv2.LINE_AA)
        elif kind == 1:
            q = p + rng.uniform(0.3, 1.0, 2) * size
            cv2.rectangle(img, tuple(np.round(p).astype(int)), tuple(np.round(q).astype(int)), colour,
                          -1 if rng.random() < 0.5 else int(rng.integers(1, 4)), cv2.LINE_AA)
        elif kind == 2:
            axes = tuple(int(v) for v in np.maximum(rng.uniform(0.2, 0.6, 2) * size, 1))
            cv2.ellipse(img, tuple(np.round(p).astype(int)), axes, float(rng.uniform(0, 180)), 0, 360, colour,
                        -1 if rng.random() < 0.5 else int(rng.integers(1, 4)), cv2.LINE_AA)
        else:
            pts = p + rng.uniform(-0.5, 0.5, (int(rng.integers(3, 7)), 2)) * size
            cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], colour, cv2.LINE_AA, shift=4)


# ---------------------------------------------------------------------------------------------- one image


@dataclass
class _Rendered:
    image: np.ndarray  # RGB uint8
    masks: list[np.ndarray]  # bool instance masks
    photo: str
    usual: bool


def _free(mask: np.ndarray, occupied: np.ndarray) -> bool:
    return not (mask & occupied).any()


def _dilate(mask: np.ndarray, px: int) -> np.ndarray:
    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)).astype(bool)


def _choose_photo(rng: np.random.Generator, cfg: SynthConfig, split: str, label: int) -> tuple[str, bool]:
    photos = BACKGROUND_PHOTOS if cfg.backgrounds is None else tuple(cfg.backgrounds)
    usual = photos[label % len(photos)]
    others = [p for p in photos if p != usual]
    if cfg.confounded and split == "train":
        name = usual if rng.random() < cfg.usual_background_prob else others[rng.integers(len(others))]
    elif cfg.confounded and cfg.confounded_eval == "unusual":
        name = others[rng.integers(len(others))]
    else:
        name = photos[rng.integers(len(photos))]
    return name, name == usual


def _render(rng: np.random.Generator, cfg: SynthConfig, split: str, label: int,
            specs: list[tuple[str, str]]) -> _Rendered:
    width, height = (int(v) for v in rng.integers(cfg.min_side, cfg.max_side + 1, 2))
    colour_name, shape = specs[label]
    head_colour = _jitter(rng, HEAD_COLOURS[colour_name], 12)

    def body_colour() -> np.ndarray:
        k = label % len(BODY_PALETTE) if rng.random() < cfg.body_class_bias else rng.integers(len(BODY_PALETTE))
        return _jitter(rng, BODY_PALETTE[k], 18) * rng.uniform(0.8, 1.2)

    # main object: box area = object_area of the image when it fits
    unit = _make_object(rng, shape, cfg.head_fraction, rng.random() < cfg.tail_prob)
    angle, mirror = rng.uniform(0, 2 * np.pi), bool(rng.random() < 0.5)
    oriented = _place(unit, 1.0, angle, mirror, np.zeros(2))
    lo, hi = _extent(oriented.all_points())
    bw, bh = hi - lo
    if cfg.object_area_beta is None:
        fraction = rng.uniform(*cfg.object_area)
    else:
        fraction = float(np.clip(rng.beta(*cfg.object_area_beta), *cfg.object_area))
    target = fraction * width * height
    scale = min(np.sqrt(target / (bw * bh)), (width - 4) / bw, (height - 4) / bh)
    free_x, free_y = max(width - 4 - bw * scale, 0.0), max(height - 4 - bh * scale, 0.0)
    if cfg.centre_sd is None:
        corner = rng.uniform([2, 2], [2 + free_x, 2 + free_y])
    else:  # box centre ~ N(image centre, sd), kept inside the image
        centre = rng.normal([width / 2, height / 2], [cfg.centre_sd[0] * width, cfg.centre_sd[1] * height])
        corner = np.clip(centre - [bw * scale / 2, bh * scale / 2], [2, 2], [2 + free_x, 2 + free_y])
    origin = corner - lo * scale
    objects = [_place(unit, scale, angle, mirror, origin)]
    masks = [_hard_mask(objects[0], width, height)]
    occupied = _dilate(masks[0], 6)

    if rng.random() < cfg.second_object_prob:
        unit2 = _make_object(rng, shape, cfg.head_fraction, rng.random() < cfg.tail_prob)
        scale2, angle2, mirror2 = scale * rng.uniform(0.5, 0.8), rng.uniform(0, 2 * np.pi), bool(rng.random() < 0.5)
        lo2, hi2 = _extent(_place(unit2, scale2, angle2, mirror2, np.zeros(2)).all_points())
        for _ in range(30):
            if hi2[0] - lo2[0] >= width - 4 or hi2[1] - lo2[1] >= height - 4:
                break
            c = rng.uniform([2 - lo2[0], 2 - lo2[1]], [width - 2 - hi2[0], height - 2 - hi2[1]])
            cand = _place(unit2, scale2, angle2, mirror2, c)
            m = _hard_mask(cand, width, height)
            if _free(_dilate(m, 6), occupied):
                objects.append(cand)
                masks.append(m)
                occupied |= _dilate(m, 6)
                break

    # distractors (never touching an object, so the ground truth stays exact)
    distractors: list[tuple[_Object, np.ndarray, np.ndarray | None]] = []
    if rng.random() < cfg.distractor_body_prob:
        unit_d = _make_object(rng, None, cfg.head_fraction, rng.random() < cfg.tail_prob)
        scale_d, angle_d, mirror_d = scale * rng.uniform(0.4, 0.8), rng.uniform(0, 2 * np.pi), rng.random() < 0.5
        for _ in range(30):
            cand = _place(unit_d, scale_d, angle_d, bool(mirror_d), rng.uniform([0, 0], [width, height]))
            m = _hard_mask(cand, width, height)
            if m.any() and _free(_dilate(m, 4), occupied):
                distractors.append((cand, body_colour(), None))
                occupied |= _dilate(m, 4)
                break
    used = set(specs)
    unused = [(c, s) for c in HEAD_COLOURS for s in HEAD_SHAPES if (c, s) not in used]
    head_size = np.sqrt(_area(objects[0].head) / np.pi)  # type: ignore[arg-type]
    for _ in range(2):
        if not unused or rng.random() >= cfg.distractor_head_prob:
            continue
        c_name, s_name = unused[rng.integers(len(unused))]
        r = head_size * rng.uniform(0.7, 1.3)
        psi = rng.uniform(0, 2 * np.pi)
        rot = np.array([[np.cos(psi), -np.sin(psi)], [np.sin(psi), np.cos(psi)]])
        for _ in range(30):
            centre = rng.uniform([r, r], [width - r, height - r])
            poly = _unit_shape(s_name) @ rot.T * r + centre
            cand = _Object([], poly, _unit_shape("circle") * 0.2 * r + centre, centre, r)
            m = _hard_mask(cand, width, height)
            if m.any() and _free(_dilate(m, 4), occupied):
                distractors.append((cand, np.zeros(3, np.float32), _jitter(rng, HEAD_COLOURS[c_name], 12)))
                occupied |= _dilate(m, 4)
                break

    photo, usual = _choose_photo(rng, cfg, split, label)
    img = np.ascontiguousarray(_background(rng, _photo(photo), width, height))
    _clutter(img, rng, int(rng.integers(cfg.clutter[0], cfg.clutter[1] + 1)), cfg.clutter_head_colour_prob)
    for obj, b_colour, h_colour in distractors:
        if obj.body:
            _draw_object(img, rng, obj, b_colour, None)
        else:
            _composite(img, [obj.head], _flat_layer(h_colour, rng))  # type: ignore[list-item,arg-type]
            _composite(img, [obj.eye], _flat_layer(np.array([20.0, 20.0, 24.0], np.float32)))  # type: ignore[list-item]
    # (no draw at bias 0: the "hard" preset's random stream, hence its files, stay as they were)
    texture = label % 3 if cfg.body_texture_class_bias > 0 and rng.random() < cfg.body_texture_class_bias else None
    for obj in objects:
        body = body_colour()
        if cfg.body_head_tint > 0:  # no extra random draw: the files of a preset without tint stay as they were
            body = np.clip((1 - cfg.body_head_tint) * body + cfg.body_head_tint * head_colour, 0, 255).astype(np.float32)
        _draw_object(img, rng, obj, body, head_colour, texture)
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 0.8))
    img += rng.standard_normal(img.shape, dtype=np.float32) * rng.uniform(1.0, 4.0)
    return _Rendered(np.clip(np.round(img), 0, 255).astype(np.uint8), masks, photo, usual)


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def _encode(path: Path, image: np.ndarray, params: list[int]) -> None:
    ok, buf = cv2.imencode(path.suffix, image, params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())


# ---------------------------------------------------------------------------------------------- dataset


def generate_synthetic_dataset(
    out: Path | str,
    seed: int = 0,
    *,
    config: SynthConfig | None = None,
    overwrite: bool = False,
    **overrides: object,
) -> Path:
    """Write the synthetic WSOL dataset to ``out`` and return its root.

    Args:
        out: dataset root (``images/``, ``masks/``, ``metadata/{train,val,test}``,
            ``class_names.txt``, ``synth_config.json``).
        seed: base seed; the same seed and configuration give byte-identical files.
        config: a :class:`SynthConfig`; keyword ``overrides`` replace its fields.
        overwrite: replace a dataset this generator wrote at ``out`` (:func:`generator_wrote`): its ``images/``,
            ``masks/``, ``metadata/``, ``class_names.txt`` and ``synth_config.json`` are removed first. Those names
            at ``out`` without the generator's ``synth_config.json`` are a user's: refused, never removed.

    Returns:
        ``Path(out)``.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    cfg = config or SynthConfig()
    valid = {f.name for f in fields(SynthConfig)}
    unknown = set(overrides) - valid
    if unknown:
        raise ValueError(f"unknown synthetic dataset option(s) {sorted(unknown)}; valid: {sorted(valid)}")
    if overrides:
        cfg = SynthConfig(**{**asdict(cfg), **overrides})  # type: ignore[arg-type]
    root = check_output_dir(out)  # a file in the way fails here, in one line, before any image is drawn
    owned = [root / "images", root / "masks", root / "metadata", root / "class_names.txt", root / "synth_config.json"]
    present = [p for p in owned if p.exists() or p.is_symlink()]
    if present:
        if not generator_wrote(root):  # a user's folders: never removed, --overwrite or not
            raise FileExistsError(f"{root}: holds {', '.join(p.name for p in present)} but no {SYNTH_CONFIG} of this "
                                  "generator: a user's files, not a dataset it wrote; nothing was removed: give another "
                                  "--out, or move them")
        if not overwrite:
            raise FileExistsError(f"{root} already holds a synthetic dataset; add --overwrite (overwrite=True) to "
                                  "replace it")
        for p in present:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / WRITING, "")  # this generator's, until synth_config.json closes the dataset

    specs = class_specs(cfg.num_classes)
    names = [f"{c}_{s}" for c, s in specs]
    ext = cfg.image_format
    params = [cv2.IMWRITE_JPEG_QUALITY, 92] if ext == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 6]
    mask_params = [cv2.IMWRITE_PNG_COMPRESSION, 9]
    for split_index, split in enumerate(SPLITS):
        count = getattr(cfg, f"num_{split}")
        labels = np.random.default_rng([seed, split_index]).permutation(np.arange(count) % cfg.num_classes)
        records: list[SampleRecord] = []
        background_lines: list[str] = []
        for i, label in enumerate(labels.tolist()):
            rng = np.random.default_rng([seed, split_index, i + 1])
            sample = _render(rng, cfg, split, label, specs)
            stem = f"{split}/{label:02d}_{names[label]}/{split}_{i:05d}"
            image_id = f"{stem}.{ext}"
            _encode(root / "images" / image_id, cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR), params)
            mask_paths = []
            for k, m in enumerate(sample.masks):
                mask_paths.append(f"{stem}_m{k}.png")
                _encode(root / "masks" / mask_paths[-1], m.astype(np.uint8) * 255, mask_params)
            ignore_path = f"{stem}_ignore.png"
            _encode(root / "masks" / ignore_path, np.zeros(sample.masks[0].shape, np.uint8), mask_params)
            h, w = sample.image.shape[:2]
            records.append(SampleRecord(image_id, label, (w, h), tuple(_tight_box(m) for m in sample.masks),
                                        MaskRecord(tuple(mask_paths), ignore_path)))
            background_lines.append(f"{image_id},{sample.photo},{int(sample.usual)}")
        write_split(root / "metadata" / split, records)
        atomic_write_text(root / "metadata" / split / "backgrounds.txt", "\n".join(background_lines))
    write_class_names(root / "class_names.txt", names)
    atomic_write_text(root / SYNTH_CONFIG, json.dumps(dataset_info(seed, cfg), indent=2, sort_keys=True))
    (root / WRITING).unlink(missing_ok=True)
    return root


def dataset_info(seed: int, cfg: SynthConfig) -> dict[str, object]:
    """What ``synth_config.json`` records of the dataset ``seed`` and ``cfg`` give (the same: the same files)."""
    specs = class_specs(cfg.num_classes)
    names = [f"{c}_{s}" for c, s in specs]
    return {"generator": "cream_pl.data.synth", "version": GENERATOR_VERSION, "seed": seed, "config": asdict(cfg),
            "classes": [{"index": k, "name": n, "head_colour": c, "head_shape": s}
                        for k, (n, (c, s)) in enumerate(zip(names, specs))],
            "background_photos": list(BACKGROUND_PHOTOS if cfg.backgrounds is None else cfg.backgrounds)}


def holds_dataset(root: Path | str, seed: int, cfg: SynthConfig) -> bool:
    """Whether ``root`` holds the finished dataset of ``seed`` and ``cfg`` (its ``synth_config.json`` records them)."""
    return not (Path(root) / WRITING).exists() and _recorded(root) == json.loads(json.dumps(dataset_info(seed, cfg)))


def _recorded(root: Path | str) -> object:
    """The contents of ``root``'s ``synth_config.json`` (``None``: none, or unreadable)."""
    try:
        return json.loads((Path(root) / SYNTH_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


SYNTH_CONFIG = "synth_config.json"
WRITING = ".synth_writing"
"""``<out>/.synth_writing``: a generation has begun and not finished (killed): its files are the generator's."""


def generator_wrote(root: Path | str) -> bool:
    """Whether the dataset files at ``root`` are this generator's: its ``synth_config.json`` says so, or a generation
    was cut short there (``.synth_writing``). Only those are removed by ``overwrite``.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> generator_wrote(d), (d / SYNTH_CONFIG).write_text('{"generator": "cream_pl.data.synth"}') > 0, generator_wrote(d)
        (False, True, True)
    """
    info = _recorded(root)
    return (Path(root) / WRITING).is_file() or (isinstance(info, dict) and info.get("generator") == "cream_pl.data.synth")
