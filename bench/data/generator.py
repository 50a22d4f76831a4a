"""Synthetic "birds": the default dataset, generated deterministically on first use.

Design (fixed up front, not tuned for any method; ``data/README.md`` shows it):

* **Image**: square, ``image_size`` px, RGB uint8.
* **Background** (cluttered): a random square crop (position and side 30-100 %
  of the photo's short side) of one of scikit-image's bundled photos
  (:data:`BACKGROUND_PHOTOS`), resized to ``image_size``, randomly mirrored and
  colour-jittered (brightness x0.7-1.3, per-channel gain x0.85-1.15); then 2-5
  class-neutral distractor shapes (ellipse / rectangle / triangle, box side
  12-32 % of the image, random aspect, rotation, position, possibly cut by the
  image border) painted with a random texture of :data:`TEXTURES` (the same
  family as the object's parts) in random colours.
* **Object** ("bird"), drawn last so it is never occluded. Four parts in an
  object-local frame ``(u, v)``, in drawing order: tail (triangle), body
  (large ellipse), wing (medium ellipse overlapping the body), head (small
  circle, about 8 % of the object's area, at the front end). Placed with a
  similarity transform plus aspect ratio: rotation uniform in [0, 360),
  aspect (u-stretch / v-stretch) log-uniform in [0.6, 1.6], mirrored (v -> -v)
  with p = 0.5, scale such that the object's box covers a fraction of the
  image drawn from the **object scale** distribution (below). Rendering is
  vectorized: each pixel centre is mapped back to ``(u, v)``; part membership
  is a set of inequalities and textures are functions of ``(u, v)`` (stripes,
  bands, checks, dots, rings), so they rotate and scale with the object.
* **Object scale** (``dataset.object_scale``): the area of the object's box
  over the image's area (the "largest ground-truth box / image area" of the
  real datasets), drawn per image:

  - ``cub`` (the default) and ``imagenet``: a piecewise-linear inverse CDF
    through the published quantiles p5 ... p95 of CUB-200-2011 test and ILSVRC
    2012 val (:data:`OBJECT_SCALE_QUANTILES`), extended to p0 and p100 by
    continuing the outermost segments, clamped to [0.01, 1]. A box too large to
    fit in the frame at the object's random rotation and aspect is **cropped by
    the frame**, as photos crop objects: the object then spans the frame along
    its box's long side (placed at a uniform offset, so one or both ends are cut)
    and its short side is sized so that the visible box has the drawn area.
    The drawn fraction is met by the rasterized visible box up to pixel
    rounding: the scale is refined three times against the rasterized box.
  - ``small`` (the embedded dataset before object scale was an axis, byte for
    byte): log-uniform in [0.05, 0.60], the object fully inside the frame (if
    the box cannot fit, the scale shrinks until it does), a pose whose
    rasterized box falls outside the range re-drawn.
  - ``range``: the ``small`` rule over ``dataset.object_scale_range``.

  In every case the ground truth is the visible object, exactly: the mask is
  rasterized in the frame and the box is the mask's box.
* **Classes** (:data:`NUM_CLASSES` = 12, :data:`CLASS_DESIGNS`). Variant
  ``parts``: class = (body texture, wing texture, head hue). Four body/wing
  texture pairs, each shared by three classes (labels ``k, k+4, k+8``), so
  the large parts narrow a class down to three candidates and never further;
  the head's hue (12 hues 30 degrees apart, one per class) alone identifies
  it. Body and wing colours are random per image (class-neutral): only their
  texture carries evidence. The tail wears the body's paint. Variant
  ``uniform`` (control): the same textures, but every part is painted in the
  class hue (texture modulating brightness), so any part alone identifies the
  class. Geometry distributions are identical in both variants.
* **Ground truth**: the object's pixel mask (union of its parts; the object
  is on top, so this is exactly the visible object) and its box
  ``mask_to_box(mask)``: exact by construction.
* **Splits**: train / val / test; labels balanced (round-robin, then
  shuffled). Every image draws from its own ``np.random.default_rng`` seeded
  from ``(seed, split, index)``, so any image can be regenerated alone and the
  dataset does not depend on generation order.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import math
import os
import shutil
import tempfile
import typing
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from bench.config import DatasetConfig, ObjectScale, SyntheticVariant, field_check
from bench.data.boxes import box_area, mask_to_box
from bench.data.samples import SPLITS, DatasetFormatError, Sample
from bench.data.species import SPECIES_VERSION, SpeciesDesign, species_colours, species_designs
from bench.data.wsol_layout import write_class_names, write_split
from bench.progress import progress_bar

# Bump whenever the rendered images could change: it is part of the dataset's folder name.
GENERATOR_VERSION = 1

NUM_CLASSES = 12
VARIANTS = typing.get_args(SyntheticVariant)
BOX_AREA_FRACTION_RANGE = (0.05, 0.60)  # object_scale: small
OBJECT_SCALES = typing.get_args(ObjectScale)
# (probability, quantile) of the largest GT box's area / image area, measured on wsolevaluation's metadata
# (localization.txt and image_sizes.txt): CUB-200-2011 test (5,794 images) and ILSVRC 2012 val (50,000 images).
OBJECT_SCALE_QUANTILES = {
    "cub": ((0.05, 0.111), (0.10, 0.138), (0.25, 0.204), (0.50, 0.313), (0.75, 0.451), (0.90, 0.588), (0.95, 0.681)),
    "imagenet": ((0.05, 0.035), (0.10, 0.072), (0.25, 0.194), (0.50, 0.411), (0.75, 0.662), (0.90, 0.871),
                 (0.95, 0.964)),
}
SMALLEST_OBJECT_FRACTION = 0.01  # p0 of a preset is clamped here: a 22x22 px box at 224 px
SCALE_REFINEMENTS = 3
CROP_BISECTIONS = 12
ASPECT_RANGE = (0.6, 1.6)
NUM_DISTRACTORS_RANGE = (2, 5)
BACKGROUND_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "immunohistochemistry", "hubble_deep_field")

OBJECT_FREQUENCY_RANGE = (3.0, 4.5)  # texture cycles per local unit: ~4-6 stripes along the body
DISTRACTOR_FREQUENCY_RANGE = (1.5, 3.0)  # a distractor's local unit is its half-size: similar pixel periods
TEXTURES = ("plain", "stripes", "bands", "checks", "dots", "rings")
# (body texture, wing texture); class label k uses pair k % 4.
BODY_WING_TEXTURES = (("stripes", "dots"), ("checks", "bands"), ("dots", "stripes"), ("bands", "checks"))
HUE_NAMES = ("red", "orange", "yellow", "lime", "green", "spring", "cyan", "azure", "blue", "violet", "magenta", "rose")
CLASS_SATURATION, CLASS_VALUE = 0.9, 0.95
DARK_FACTOR_UNIFORM = 0.55  # brightness of the texture's dark phase in the uniform variant

# Object parts in the object-local frame (units: the body's half-length is 0.62).
BODY = ((0.0, 0.0), (0.62, 0.36))  # ellipse: centre, semi-axes
WING = ((-0.1, -0.2), (0.42, 0.2))  # ellipse overlapping the body's upper side
TAIL = ((-0.45, 0.0), (-1.0, -0.3), (-1.0, 0.3))  # triangle vertices
HEAD = ((0.68, -0.16), 0.16)  # circle: centre, radius
# Species only (bench.data.species): the breast patch (ellipse, clipped to the body, under the wing) and the head's
# patterns, in head-local v (units of the head's radius, negative = the back's side): a cap above, a stripe across.
BREAST = ((0.2, 0.18), (0.38, 0.22))
CAP_BELOW = -0.25
EYE_STRIPE_HALF_WIDTH = 0.2


@dataclass(frozen=True)
class ClassDesign:
    """What identifies one class; ``head_rgb`` in [0, 255]."""

    label: int
    name: str
    body_texture: str
    wing_texture: str
    head_hue: float  # in [0, 1)
    head_rgb: tuple[float, float, float]


def _class_design(label: int) -> ClassDesign:
    body, wing = BODY_WING_TEXTURES[label % len(BODY_WING_TEXTURES)]
    hue = label / NUM_CLASSES
    rgb = tuple(255.0 * c for c in colorsys.hsv_to_rgb(hue, CLASS_SATURATION, CLASS_VALUE))
    name = f"c{label:02d}_body-{body}_wing-{wing}_head-{HUE_NAMES[label]}"
    return ClassDesign(label, name, body, wing, hue, rgb)


CLASS_DESIGNS = tuple(_class_design(label) for label in range(NUM_CLASSES))


def class_names(num_species: int = 0) -> list[str]:
    """The class names of ``birds12`` (``num_species`` 0) or of the first ``num_species`` species."""
    designs = species_designs(num_species) if num_species else CLASS_DESIGNS
    return [design.name for design in designs]


def num_classes(num_species: int = 0) -> int:
    """12 for ``birds12`` (``num_species`` 0), else ``num_species``."""
    return num_species or NUM_CLASSES


# ----------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Pose:
    """Local -> image map: ``p = centre + linear @ (u, v)``, ``linear`` (2, 2) in pixels per local unit."""

    centre: tuple[float, float]  # (x, y) in pixels
    linear: np.ndarray


def _linear_map(scale: float, rotation: float, aspect: float, mirror: bool) -> np.ndarray:
    """``scale * R(rotation) @ diag(sqrt(aspect), +-1 / sqrt(aspect))`` as (2, 2)."""
    cos, sin = math.cos(rotation), math.sin(rotation)
    stretch = np.diag([math.sqrt(aspect), (-1 if mirror else 1) / math.sqrt(aspect)])
    return scale * np.array([[cos, -sin], [sin, cos]]) @ stretch


def _ellipse_extent(linear: np.ndarray, centre, semi_axes) -> np.ndarray:
    """Exact box ``(4,)`` (relative to the pose centre) of an axis-aligned local ellipse after ``linear``."""
    mapped = linear @ np.asarray(centre, dtype=np.float64)
    # x(t) = row_x . (a cos t, b sin t) has amplitude hypot(row_x[0] a, row_x[1] b); same for y.
    half = np.hypot(linear[:, 0] * semi_axes[0], linear[:, 1] * semi_axes[1])
    return np.concatenate([mapped - half, mapped + half])


def _object_extent(linear: np.ndarray) -> np.ndarray:
    """Exact continuous box ``(4,)`` of the object, relative to its centre, for a local->image ``linear`` map."""
    tail = np.asarray(TAIL) @ linear.T  # (3, 2)
    boxes = np.stack(
        [
            _ellipse_extent(linear, *BODY),
            _ellipse_extent(linear, *WING),
            _ellipse_extent(linear, HEAD[0], (HEAD[1], HEAD[1])),
            np.concatenate([tail.min(axis=0), tail.max(axis=0)]),
        ]
    )
    return np.concatenate([boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)])


def _window(extent: np.ndarray, centre, image_size: int) -> tuple[slice, slice]:
    """Pixel rows/columns covering the relative box ``extent`` around ``centre``, clipped to the image."""
    x0, y0 = (math.floor(centre[i] + extent[i]) for i in (0, 1))
    x1, y1 = (math.ceil(centre[i] + extent[i + 2]) for i in (0, 1))
    clip = lambda value: min(max(value, 0), image_size)  # noqa: E731
    return slice(clip(y0), clip(y1)), slice(clip(x0), clip(x1))


def _local_coordinates(pose: _Pose, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
    """Local ``(u, v)``, each ``(h, w)`` float32, of the pixel centres of a window."""
    inverse = np.linalg.inv(pose.linear).astype(np.float32)
    dx = np.arange(cols.start, cols.stop, dtype=np.float32)[None, :] + 0.5 - np.float32(pose.centre[0])  # (1, w)
    dy = np.arange(rows.start, rows.stop, dtype=np.float32)[:, None] + 0.5 - np.float32(pose.centre[1])  # (h, 1)
    return inverse[0, 0] * dx + inverse[0, 1] * dy, inverse[1, 0] * dx + inverse[1, 1] * dy


def _in_ellipse(u: np.ndarray, v: np.ndarray, centre, semi_axes) -> np.ndarray:
    return ((u - centre[0]) / semi_axes[0]) ** 2 + ((v - centre[1]) / semi_axes[1]) ** 2 <= 1.0


def _in_triangle(u: np.ndarray, v: np.ndarray, vertices) -> np.ndarray:
    """Inside test by the signs of the three edge cross products (either winding)."""
    signs = []
    for (au, av), (bu, bv) in zip(vertices, vertices[1:] + vertices[:1]):
        signs.append((bu - au) * (v - av) - (bv - av) * (u - au) >= 0)
    return (signs[0] == signs[1]) & (signs[1] == signs[2])


# ----------------------------------------------------------------------------- paint


@dataclass(frozen=True)
class _Paint:
    """A binary texture of ``(u, v)`` mixing two colours (RGB in [0, 255])."""

    texture: str
    frequency: float  # cycles per local unit
    phase: tuple[float, float]  # in [0, 1), shifts the pattern
    light: tuple[float, float, float]
    dark: tuple[float, float, float]


def texture_pattern(texture: str, u: np.ndarray, v: np.ndarray, frequency: float, phase=(0.0, 0.0)) -> np.ndarray:
    """Boolean pattern (True = dark phase) of one of :data:`TEXTURES` at local coordinates ``(u, v)``."""
    fu, fv = frequency * u + phase[0], frequency * v + phase[1]
    if texture == "plain":
        return np.zeros(np.broadcast(u, v).shape, dtype=bool)
    if texture == "stripes":  # across the body axis
        return np.sin(2 * np.pi * fu) > 0
    if texture == "bands":  # along the body axis
        return np.sin(2 * np.pi * fv) > 0
    if texture == "checks":
        return (np.floor(fu) + np.floor(fv)) % 2 == 1
    if texture == "dots":
        return (fu - np.round(fu)) ** 2 + (fv - np.round(fv)) ** 2 < 0.3**2
    if texture == "rings":
        return np.sin(2 * np.pi * (frequency * np.hypot(u, v) + phase[0])) > 0
    raise ValueError(f"texture={texture!r} is not one of {TEXTURES}")


def _paint(canvas: np.ndarray, inside: np.ndarray, paint: _Paint, u: np.ndarray, v: np.ndarray) -> None:
    """Paint the ``inside`` pixels of a canvas window ``(h, w, 3)`` float32 in place."""
    dark = texture_pattern(paint.texture, u, v, paint.frequency, paint.phase)
    canvas[inside & ~dark] = paint.light
    canvas[inside & dark] = paint.dark


def _random_two_tone(rng: np.random.Generator) -> tuple[tuple, tuple]:
    """A random light colour and a darker version of it: class-neutral paint colours."""
    light = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.1, 0.8), rng.uniform(0.55, 1.0))) * 255
    dark = light * rng.uniform(0.25, 0.55)
    return tuple(light), tuple(dark)


def _random_paint(rng: np.random.Generator, texture: str, frequency_range: tuple[float, float]) -> _Paint:
    light, dark = _random_two_tone(rng)
    return _Paint(texture, rng.uniform(*frequency_range), tuple(rng.random(2)), light, dark)


def _class_paint(rng: np.random.Generator, texture: str, design: ClassDesign) -> _Paint:
    """The class hue, with the texture's dark phase at lower brightness (uniform variant)."""
    light = design.head_rgb
    dark = tuple(DARK_FACTOR_UNIFORM * c for c in light)
    return _Paint(texture, rng.uniform(*OBJECT_FREQUENCY_RANGE), tuple(rng.random(2)), light, dark)


def _object_paints(rng: np.random.Generator, label: int, variant: str) -> dict[str, _Paint]:
    """Paint of each part: ``{"body", "wing", "head"}`` (the tail wears the body's paint)."""
    design = CLASS_DESIGNS[label]
    head = _Paint("plain", 1.0, (0.0, 0.0), design.head_rgb, design.head_rgb)
    if variant == "parts":
        body = _random_paint(rng, design.body_texture, OBJECT_FREQUENCY_RANGE)
        wing = _random_paint(rng, design.wing_texture, OBJECT_FREQUENCY_RANGE)
    else:
        body = _class_paint(rng, design.body_texture, design)
        wing = _class_paint(rng, design.wing_texture, design)
    return {"body": body, "wing": wing, "head": head}


# ----------------------------------------------------------------------------- background and distractors


@lru_cache(maxsize=None)
def _background_photo(name: str) -> Image.Image:
    """One of scikit-image's bundled photos as an RGB PIL image (loaded once per process)."""
    import skimage.data  # imported here: only generation needs it

    pixels = getattr(skimage.data, name)()
    if pixels.ndim == 2:  # grey photo (camera)
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(pixels[:, :, :3]))


def _render_background(rng: np.random.Generator, image_size: int) -> np.ndarray:
    """Jittered random square crop of a photo, ``(S, S, 3)`` float32 in [0, 255]."""
    photo = _background_photo(BACKGROUND_PHOTOS[rng.integers(len(BACKGROUND_PHOTOS))])
    side = min(photo.size) * rng.uniform(0.3, 1.0)
    left = rng.uniform(0, photo.width - side)
    top = rng.uniform(0, photo.height - side)
    crop = photo.resize((image_size, image_size), Image.BILINEAR, box=(left, top, left + side, top + side))
    canvas = np.asarray(crop, dtype=np.float32)
    if rng.random() < 0.5:
        canvas = canvas[:, ::-1]
    gain = rng.uniform(0.7, 1.3) * rng.uniform(0.85, 1.15, size=3).astype(np.float32)
    return np.clip(canvas * gain, 0, 255)


def _draw_distractor(rng: np.random.Generator, canvas: np.ndarray) -> None:
    """Paint one class-neutral textured shape anywhere on ``canvas (S, S, 3)`` in place."""
    image_size = canvas.shape[0]
    half_size = image_size * rng.uniform(0.06, 0.16)  # box side 12-32 % of the image
    linear = _linear_map(half_size, rng.uniform(0, 2 * np.pi), math.exp(rng.uniform(*np.log(ASPECT_RANGE))), False)
    pose = _Pose(tuple(rng.uniform(0, image_size, size=2)), linear)
    shape = ("ellipse", "rectangle", "triangle")[rng.integers(3)]
    paint = _random_paint(rng, TEXTURES[rng.integers(len(TEXTURES))], DISTRACTOR_FREQUENCY_RANGE)
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) @ linear.T  # bounds every shape below
    rows, cols = _window(np.concatenate([corners.min(axis=0), corners.max(axis=0)]), pose.centre, image_size)
    if rows.start >= rows.stop or cols.start >= cols.stop:
        return
    u, v = _local_coordinates(pose, rows, cols)
    if shape == "ellipse":
        inside = _in_ellipse(u, v, (0.0, 0.0), (1.0, 1.0))
    elif shape == "rectangle":
        inside = (np.abs(u) <= 1) & (np.abs(v) <= 1)
    else:
        inside = _in_triangle(u, v, [(-1.0, 1.0), (1.0, 1.0), (0.0, -1.0)])
    _paint(canvas[rows, cols], inside, paint, u, v)


# ----------------------------------------------------------------------------- the object


@dataclass(frozen=True)
class _RasterObject:
    """The object's parts rasterized in a window of the image."""

    rows: slice
    cols: slice
    u: np.ndarray  # (h, w) local coordinates of the window's pixel centres
    v: np.ndarray
    parts: dict[str, np.ndarray]  # part name -> (h, w) bool, in drawing order

    def mask(self, image_size: int) -> np.ndarray:
        """Full-image ``(S, S)`` bool mask of the object (union of its parts)."""
        mask = np.zeros((image_size, image_size), dtype=bool)
        mask[self.rows, self.cols] = np.logical_or.reduce(list(self.parts.values()))
        return mask


def _sample_pose(rng: np.random.Generator, image_size: int, fraction_range: tuple[float, float]) -> _Pose:
    """Random rotation, aspect, mirror, box-area fraction; a position keeping the object inside the image."""
    aspect = math.exp(rng.uniform(*np.log(ASPECT_RANGE)))
    unit = _linear_map(1.0, rng.uniform(0, 2 * np.pi), aspect, rng.random() < 0.5)
    extent = _object_extent(unit)
    width, height = extent[2] - extent[0], extent[3] - extent[1]
    fraction = math.exp(rng.uniform(*np.log(fraction_range)))
    # Scale for the target box area, shrunk if the box would not fit in the image.
    scale = min(math.sqrt(fraction / (width * height)), 1 / width, 1 / height) * image_size
    # Centres keeping the box inside [0, S]; max(.., 0): the range is empty up to rounding when the box fills the image.
    low = -scale * extent[:2]  # (x, y)
    room = np.maximum(image_size - scale * (extent[2:] - extent[:2]), 0.0)
    centre = low + rng.random(2) * room
    return _Pose((float(centre[0]), float(centre[1])), scale * unit)


def _rasterize_object(pose: _Pose, image_size: int) -> _RasterObject:
    rows, cols = _window(_object_extent(pose.linear), pose.centre, image_size)
    u, v = _local_coordinates(pose, rows, cols)
    parts = {
        "tail": _in_triangle(u, v, list(TAIL)),
        "body": _in_ellipse(u, v, *BODY),
        "wing": _in_ellipse(u, v, *WING),
        "head": _in_ellipse(u, v, HEAD[0], (HEAD[1], HEAD[1])),
    }
    return _RasterObject(rows, cols, u, v, parts)


def _sample_object(rng: np.random.Generator, image_size: int, object_scale) -> _RasterObject:
    """The object at ``object_scale`` (a preset name or a ``(low, high)`` log-uniform range), rasterized."""
    if object_scale in OBJECT_SCALE_QUANTILES:
        return _sample_object_at_quantiles(rng, image_size, OBJECT_SCALE_QUANTILES[object_scale])
    low, high = BOX_AREA_FRACTION_RANGE if object_scale == "small" else object_scale
    for _ in range(100):
        raster = _rasterize_object(_sample_pose(rng, image_size, (low, high)), image_size)
        fraction = box_area(mask_to_box(raster.mask(image_size))) / image_size**2
        if low <= fraction <= high:
            return raster
    raise RuntimeError(f"no object pose with box area fraction in {(low, high)} at {image_size} px")


def scale_inverse_cdf(quantiles) -> tuple[np.ndarray, np.ndarray]:
    """Knots ``(probabilities, fractions)`` of the piecewise-linear inverse CDF through ``quantiles``.

    ``quantiles`` is ``((p, q), ...)`` in increasing ``p``; p0 and p100 continue
    the first and last segments, clamped to ``[SMALLEST_OBJECT_FRACTION, 1]``.
    """
    probabilities, fractions = (np.array(column, dtype=np.float64) for column in zip(*quantiles))
    slope_low = (fractions[1] - fractions[0]) / (probabilities[1] - probabilities[0])
    slope_high = (fractions[-1] - fractions[-2]) / (probabilities[-1] - probabilities[-2])
    first = max(fractions[0] - slope_low * probabilities[0], SMALLEST_OBJECT_FRACTION)
    last = min(fractions[-1] + slope_high * (1 - probabilities[-1]), 1.0)
    return np.concatenate([[0.0], probabilities, [1.0]]), np.concatenate([[first], fractions, [last]])


def draw_object_scale(rng: np.random.Generator, object_scale: str) -> float:
    """One box-area fraction from preset ``object_scale`` (``cub`` or ``imagenet``): inverse CDF of a uniform."""
    probabilities, fractions = scale_inverse_cdf(OBJECT_SCALE_QUANTILES[object_scale])
    return float(np.interp(rng.random(), probabilities, fractions))


def _fitting_pose(unit: np.ndarray, fraction: float, offsets: np.ndarray, image_size: int) -> _Pose | None:
    """The pose whose whole box covers ``fraction`` of the image, at ``offsets`` (2,) in [0, 1) of the room left.

    None if that box cannot fit in the frame (its area fraction exceeds short side / long side).
    """
    extent = _object_extent(unit)
    size = extent[2:] - extent[:2]  # (width, height) at scale 1
    scale = math.sqrt(fraction / (size[0] * size[1])) * image_size
    if np.any(scale * size > image_size * (1 + 1e-9)):
        return None
    start = offsets * np.maximum(image_size - scale * size, 0.0)
    centre = start - scale * extent[:2]
    return _Pose((float(centre[0]), float(centre[1])), scale * unit)


def _visible_fraction(raster: _RasterObject, image_size: int) -> float:
    return box_area(mask_to_box(raster.mask(image_size))) / image_size**2


def _sample_object_at_quantiles(rng: np.random.Generator, image_size: int, quantiles) -> _RasterObject:
    """An object whose visible box covers a fraction drawn from ``quantiles`` (see the module docstring).

    A box that fits is placed whole at a uniform position, its scale refined
    against the rasterized box. One that cannot fit is cropped by the frame: the
    body's centre sits at a uniform point of the frame's middle half and the scale
    is bisected until the visible box's area meets the fraction (the visible area
    grows with the scale around a fixed point inside the object).
    """
    aspect = math.exp(rng.uniform(*np.log(ASPECT_RANGE)))
    unit = _linear_map(1.0, rng.uniform(0, 2 * np.pi), aspect, rng.random() < 0.5)
    probabilities, fractions = scale_inverse_cdf(quantiles)
    target = float(np.interp(rng.random(), probabilities, fractions))
    offsets = rng.random(2)
    best, best_error = None, math.inf

    def rasterize(pose: _Pose) -> float:
        nonlocal best, best_error
        raster = _rasterize_object(pose, image_size)
        reached = _visible_fraction(raster, image_size)
        if abs(reached - target) < best_error:
            best, best_error = raster, abs(reached - target)
        return reached

    aim = target
    for _ in range(SCALE_REFINEMENTS):  # the whole box fits: correct the scale for pixel rounding
        pose = _fitting_pose(unit, aim, offsets, image_size)
        if pose is None:
            break
        aim *= target / rasterize(pose)
        if best_error * image_size**2 < 1:
            return best
    if best is not None and best_error < 0.005:
        return best
    # Cropped by the frame: bisect the scale (in log) with the body's centre fixed in the frame's middle half.
    extent = _object_extent(unit)
    centre = tuple(float(c) for c in image_size * (0.25 + 0.5 * offsets))
    low = math.log(math.sqrt(target / np.prod(extent[2:] - extent[:2])) * image_size)  # whole box = target
    high = low
    while rasterize(_Pose(centre, math.exp(high) * unit)) < target and high < low + math.log(64.0):
        low, high = high, high + math.log(2.0)
    for _ in range(CROP_BISECTIONS):
        middle = (low + high) / 2
        if rasterize(_Pose(centre, math.exp(middle) * unit)) < target:
            low = middle
        else:
            high = middle
    return best


def _draw_object(canvas: np.ndarray, raster: _RasterObject, paints: dict[str, _Paint]) -> None:
    window = canvas[raster.rows, raster.cols]
    for part, inside in raster.parts.items():  # drawing order: tail, body, wing, head
        _paint(window, inside, paints["body" if part == "tail" else part], raster.u, raster.v)


def _plain_paint(rgb: tuple[float, float, float]) -> _Paint:
    return _Paint("plain", 1.0, (0.0, 0.0), rgb, rgb)


def _species_paints(rng: np.random.Generator, design: SpeciesDesign, hue_jitter: float) -> dict[str, _Paint]:
    """Paint of each part of a species' bird: ``{"body", "wing", "breast", "head", "head_pattern"}``.

    Body (and tail) texture and colours and the wing's colours are random per image; the wing's pattern, the
    breast's colour and the head's colour and pattern are the species' (:mod:`bench.data.species`).
    """
    body = _random_paint(rng, TEXTURES[rng.integers(len(TEXTURES))], OBJECT_FREQUENCY_RANGE)
    wing = _random_paint(rng, design.wing_texture, OBJECT_FREQUENCY_RANGE)
    colours = species_colours(rng, design, hue_jitter)
    return {"body": body, "wing": wing, "breast": _plain_paint(colours["breast"]),
            "head": _plain_paint(colours["head"]), "head_pattern": _plain_paint(colours["head_pattern"])}


def head_pattern_region(u: np.ndarray, v: np.ndarray, pattern: str) -> np.ndarray:
    """Bool ``(h, w)``: where a head pattern (``plain``, ``capped``, ``eye-striped``) darkens the head's disc."""
    head_v = (v - HEAD[0][1]) / HEAD[1]
    if pattern == "plain":
        return np.zeros(head_v.shape, dtype=bool)
    if pattern == "capped":
        return head_v < CAP_BELOW
    if pattern == "eye-striped":
        return np.abs(head_v) < EYE_STRIPE_HALF_WIDTH
    raise ValueError(f"head pattern {pattern!r} is not one of plain, capped, eye-striped")


def _draw_species(canvas: np.ndarray, raster: _RasterObject, paints: dict[str, _Paint], design: SpeciesDesign) -> None:
    """Draw a species' bird: tail, body, breast (on the body, under the wing), wing, head, head pattern."""
    window, u, v, parts = canvas[raster.rows, raster.cols], raster.u, raster.v, raster.parts
    _paint(window, parts["tail"], paints["body"], u, v)
    _paint(window, parts["body"], paints["body"], u, v)
    _paint(window, parts["body"] & _in_ellipse(u, v, *BREAST), paints["breast"], u, v)
    _paint(window, parts["wing"], paints["wing"], u, v)
    _paint(window, parts["head"], paints["head"], u, v)
    _paint(window, parts["head"] & head_pattern_region(u, v, design.head_pattern_name), paints["head_pattern"], u, v)


# ----------------------------------------------------------------------------- public rendering


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {tuple(allowed)}")


def _check_parameter(name: str, value) -> None:
    """ValueError unless ``value`` is an integer meeting the constraint on ``DatasetConfig.<name>``.

    Guards callers that bypass the config; the bounds themselves are defined once, beside the config field.
    """
    holds, expected = field_check(DatasetConfig, name)
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not is_int or not holds(value):
        raise ValueError(f"{name}={value!r} is not valid: expected {expected}")


def _check_species(num_species, hue_jitter, variant: str) -> None:
    """ValueError unless ``num_species`` is 0 (``birds12``) or a valid species count, with a valid jitter."""
    if num_species:
        _check_parameter("num_species", num_species)
        holds, expected = field_check(DatasetConfig, "hue_jitter")
        if isinstance(hue_jitter, bool) or not isinstance(hue_jitter, (int, float)) or not holds(hue_jitter):
            raise ValueError(f"hue_jitter={hue_jitter!r} is not valid: expected {expected}")
        if variant != "parts":
            raise ValueError(f"variant={variant!r}: the species have the 'parts' variant only")


def _check_object_scale(object_scale) -> str | tuple[float, float]:
    """``object_scale`` as the generator takes it: a preset name, or a validated ``(low, high)`` tuple."""
    if isinstance(object_scale, str):
        _check_choice("object_scale", object_scale, [name for name in OBJECT_SCALES if name != "range"])
        return object_scale
    holds, expected = field_check(DatasetConfig, "object_scale_range")
    if not (isinstance(object_scale, (tuple, list)) and len(object_scale) == 2 and holds(tuple(object_scale))):
        raise ValueError(f"object_scale={object_scale!r} is not valid: expected a preset or {expected}")
    return (float(object_scale[0]), float(object_scale[1]))


def render_sample(rng: np.random.Generator, label: int, variant: str, image_size: int,
                  object_scale: str | tuple[float, float], num_species: int = 0,
                  hue_jitter: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Render one image of class ``label``: ``(image uint8 (S, S, 3), object mask bool (S, S))``.

    ``object_scale`` is a preset of :data:`OBJECT_SCALES` other than ``range``, or a ``(low, high)`` range.
    ``num_species`` 0 draws the ``birds12`` classes (:data:`CLASS_DESIGNS`); otherwise ``label`` is one of the
    first ``num_species`` species of :mod:`bench.data.species` (``parts`` variant only), its colours jittered by
    ``hue_jitter`` degrees.
    """
    _check_species(num_species, hue_jitter, variant)
    classes = num_classes(num_species)
    if isinstance(label, bool) or not (isinstance(label, (int, np.integer)) and 0 <= label < classes):
        raise ValueError(f"label={label!r} is not valid: expected an integer in [0, {classes - 1}]")
    _check_choice("variant", variant, VARIANTS)
    _check_parameter("image_size", image_size)
    canvas = _render_background(rng, image_size)
    for _ in range(rng.integers(NUM_DISTRACTORS_RANGE[0], NUM_DISTRACTORS_RANGE[1] + 1)):
        _draw_distractor(rng, canvas)
    raster = _sample_object(rng, image_size, _check_object_scale(object_scale))
    if num_species:
        design = species_designs(num_species)[label]
        _draw_species(canvas, raster, _species_paints(rng, design, hue_jitter), design)
    else:
        _draw_object(canvas, raster, _object_paints(rng, label, variant))
    image = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    return image, raster.mask(image_size)


# ----------------------------------------------------------------------------- the dataset on disk


def _parameters(variant: str, seed: int, num_train: int, num_val: int, num_test: int, image_size: int,
                object_scale: str | tuple[float, float], num_species: int = 0, hue_jitter: float = 0.0) -> dict:
    """Validated generator parameters (what identifies a dataset).

    ``object_scale`` ``small`` adds no key, so that dataset keeps the folder name
    (hash) it had before object scale was a parameter; its images are unchanged too.
    So does ``num_species`` 0 (the ``birds12`` classes, from before the species).
    """
    _check_choice("variant", variant, VARIANTS)
    object_scale = _check_object_scale(object_scale)
    _check_species(num_species, hue_jitter, variant)
    for name, value in (("seed", seed), ("num_train", num_train), ("num_val", num_val), ("num_test", num_test),
                        ("image_size", image_size)):
        _check_parameter(name, value)
    species = {"num_species": int(num_species), "hue_jitter": float(hue_jitter), "species_version": SPECIES_VERSION}
    return {
        "generator_version": GENERATOR_VERSION,
        "variant": variant,
        "seed": int(seed),
        "num_train": int(num_train),
        "num_val": int(num_val),
        "num_test": int(num_test),
        "image_size": int(image_size),
        **({} if object_scale == "small" else {"object_scale": object_scale}),
        **({"species": species} if num_species else {}),
    }


def synthetic_dataset_dir(
    data_dir: Path, variant: str, seed: int, num_train: int, num_val: int, num_test: int, image_size: int,
    object_scale: str | tuple[float, float], num_species: int = 0, hue_jitter: float = 0.0,
) -> Path:
    """``data_dir / "synthetic-<variant>[-<scale>][-species<C>]-<hash of all parameters and versions>"`` (no I/O).

    ``<scale>`` is the preset's name, or ``range`` (the range is in the hash); none for ``small``.
    ``species<C>`` names a species dataset; none for ``birds12``.
    """
    parameters = _parameters(variant, seed, num_train, num_val, num_test, image_size, object_scale, num_species,
                             hue_jitter)
    digest = hashlib.sha256(json.dumps(parameters, sort_keys=True).encode()).hexdigest()[:10]
    scale = parameters.get("object_scale")
    label = "" if scale is None else f"-{scale}" if isinstance(scale, str) else "-range"
    species = f"-species{num_species}" if num_species else ""
    return Path(data_dir) / f"synthetic-{variant}{label}{species}-{digest}"


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator that renders image ``index`` of ``split``: regenerate any image on its own with it."""
    # Keys have equal length on purpose: SeedSequence([a, b]) == SeedSequence([a, b, 0]).
    return np.random.default_rng([seed, SPLITS.index(split), 1, index])


def split_labels(seed: int, split: str, count: int, classes: int = NUM_CLASSES) -> np.ndarray:
    """Balanced labels ``(count,)`` of a split: round-robin over ``classes`` classes, then shuffled.

    ``count`` a multiple of ``classes`` gives every class exactly ``count / classes`` images.
    """
    rng = np.random.default_rng([seed, SPLITS.index(split), 0, 0])
    return rng.permutation(np.arange(count) % classes)


def _write_sample(root: Path, split: str, index: int, label: int, image: np.ndarray, mask: np.ndarray,
                  label_digits: int) -> Sample:
    """Save one image (JPEG q95) and its mask (0/255 PNG) under ``root``; returns its metadata."""
    relative = Path(split) / f"{label:0{label_digits}d}" / f"{index:06d}"
    image_path = root / "images" / relative.with_suffix(".jpg")
    mask_path = root / "masks" / relative.with_suffix(".png")
    for folder in (image_path.parent, mask_path.parent):
        folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(image_path, quality=95)
    Image.fromarray(mask.astype(np.uint8) * 255).save(mask_path)
    image_id = relative.with_suffix(".jpg").as_posix()
    return Sample(image_id, image_path, label, mask_to_box(mask)[None], mask.shape, (mask_path,))


def _species_parameters(parameters: dict) -> dict:
    """The ``species`` entry of :func:`_parameters`' dict; ``num_species`` 0 (``birds12``) where it has none."""
    return parameters.get("species", {"num_species": 0, "hue_jitter": 0.0})


def _generate_split(root: Path, split: str, parameters: dict, bar: tqdm) -> list[int]:
    """Render and write one split's images, masks and metadata; returns the count per label."""
    seed, variant, image_size = parameters["seed"], parameters["variant"], parameters["image_size"]
    object_scale = parameters.get("object_scale", "small")
    species = _species_parameters(parameters)
    classes = num_classes(species["num_species"])
    label_digits = 2 if classes <= 100 else 3  # birds12's folders (00 ... 11) as before the species
    samples = []
    for index, label in enumerate(split_labels(seed, split, parameters[f"num_{split}"], classes).tolist()):
        image, mask = render_sample(image_rng(seed, split, index), label, variant, image_size, object_scale,
                                    species["num_species"], species["hue_jitter"])
        samples.append(_write_sample(root, split, index, label, image, mask, label_digits))
        bar.update()
    write_split(root, split, samples)
    return np.bincount([sample.label for sample in samples], minlength=classes).tolist()


def _generate(root: Path, name: str, parameters: dict, progress: bool) -> None:
    """Write the whole dataset into ``root``; ``name`` is the final folder name (for the progress bar)."""
    total = sum(parameters[f"num_{split}"] for split in SPLITS)
    num_species = _species_parameters(parameters)["num_species"]
    with progress_bar(total=total, desc=f"generating {name}", unit="img", disable=not progress) as bar:
        counts = {split: _generate_split(root, split, parameters, bar) for split in SPLITS}
    names = class_names(num_species)
    write_class_names(root, names)
    description = {
        "generator": "bench.data.generator",
        "parameters": parameters,
        "num_classes": num_classes(num_species),
        "class_names": names,
        "images_per_label": counts,
    }
    # Written last: its presence marks a complete dataset.
    (root / "dataset.json").write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")


def _is_complete(root: Path, parameters: dict) -> bool:
    """True if ``root`` holds a finished dataset generated with exactly ``parameters``."""
    description_path = root / "dataset.json"
    if not description_path.is_file():
        return False
    try:
        description = json.loads(description_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):  # not this generator's file: the caller names the folder
        return False
    return isinstance(description, dict) and description.get("parameters") == parameters


def ensure_synthetic_dataset(
    data_dir: Path,
    variant: str,
    seed: int,
    num_train: int,
    num_val: int,
    num_test: int,
    image_size: int,
    object_scale: str | tuple[float, float],
    progress: bool = True,
    num_species: int = 0,
    hue_jitter: float = 0.0,
) -> Path:
    """Return the dataset folder, generating it first if absent.

    ``num_species`` 0 gives the ``birds12`` classes, else that many species (``hue_jitter`` degrees of colour
    jitter); the split sizes are totals, balanced over the classes.
    Generation writes into a hidden temporary sibling folder and renames it at
    the end, so an interrupted run never leaves a half dataset under the final
    name. An existing complete folder is reused as is.
    """
    parameters = _parameters(variant, seed, num_train, num_val, num_test, image_size, object_scale, num_species,
                             hue_jitter)
    root = synthetic_dataset_dir(data_dir, variant, seed, num_train, num_val, num_test, image_size, object_scale,
                                 num_species, hue_jitter)
    if root.exists():
        if not _is_complete(root, parameters):
            raise DatasetFormatError(
                f"{root} exists but has no dataset.json with parameters {parameters}; "
                "it was not written by this generator version: delete it to regenerate"
            )
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        _generate(temporary, root.name, parameters, progress)
        os.rename(temporary, root)  # atomic within one file system
    except OSError:
        shutil.rmtree(temporary, ignore_errors=True)
        if _is_complete(root, parameters):  # another process finished the same dataset first
            return root
        raise
    except BaseException:  # includes KeyboardInterrupt: leave nothing half-written behind
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return root
