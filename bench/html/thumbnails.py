"""Small JPEG thumbnails of a run's evaluated images: the image, its CAM overlay, the GT and predicted boxes.

For each image the page shows (:func:`page_sample`), ``<run>/page/img/`` gets:

* ``<k>_image.jpg``: the image in the evaluated frame with its ground-truth boxes (green);
* ``<k>_top1.jpg``: the top-1 class's CAM over it (:func:`bench.run.figures.overlay_cam`),
  ground truth (green) and the top-1 box (red);
* ``<k>_gt.jpg``: the same for the ground-truth class's CAM and box, only when
  the top-1 class is wrong (otherwise it is the top-1 picture).

``k`` is the image's row in ``predictions.csv`` (five digits), so the names are
safe URLs whatever the image ids hold. CAMs come from ``cams.npz`` (feature
resolution), upsampled bilinearly straight to the thumbnail and normalized as
the run normalized them; boxes come from ``predictions.csv``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from bench.atomic_files import atomic_path
from bench.data.samples import Sample
from bench.model.cam import upsample_cams
from bench.run.figures import overlay_cam
from bench.scoring.box_rule import normalize_cams
from bench.scoring.protocols import frame_of

THUMBNAIL_SIZE = 112  # pixels on the longer side
JPEG_QUALITY = 80
MAX_IMAGES = 2000  # a bigger split (ILSVRC val: 50,000) is shown through a fixed sample of this many
SAMPLE_SEED = 0
GT_COLOUR, PREDICTED_COLOUR = (0, 230, 0), (255, 0, 0)
KINDS = ("image", "top1", "gt")


def page_sample(count: int, cap: int = MAX_IMAGES) -> np.ndarray:
    """The rows of a split of ``count`` images the pages show: all of them, or ``cap`` drawn at random (seed 0).

    A function of ``count`` alone, so every run of a study (same split) shows the same images. Sorted ``(M,)``.
    """
    if count <= cap:
        return np.arange(count)
    return np.sort(np.random.default_rng(SAMPLE_SEED).choice(count, size=cap, replace=False))


def thumbnail_name(row: int, kind: str) -> str:
    """``00042_top1.jpg``: the file of row ``row`` of ``predictions.csv``; ``kind`` one of :data:`KINDS`."""
    if kind not in KINDS:
        raise ValueError(f"thumbnail kind {kind!r}: expected one of {KINDS}")
    return f"{row:05d}_{kind}.jpg"


def thumbnail_shape(frame: tuple[int, int]) -> tuple[int, int]:
    """``(h, w)`` of a thumbnail of a frame ``(H, W)``: the longer side :data:`THUMBNAIL_SIZE`, aspect kept."""
    height, width = frame
    scale = THUMBNAIL_SIZE / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _draw_boxes(picture: np.ndarray, scale: tuple[float, float], gt_boxes: np.ndarray,
                predicted: np.ndarray | None) -> Image.Image:
    """``picture (h, w, 3)`` with ``gt_boxes (G, 4)`` and ``predicted (4,)`` (frame pixels) scaled by ``(sy, sx)``."""
    image = Image.fromarray(picture)
    draw = ImageDraw.Draw(image)
    boxes = [(box, GT_COLOUR) for box in gt_boxes] + ([(predicted, PREDICTED_COLOUR)] if predicted is not None else [])
    for box, colour in boxes:
        x0, y0, x1, y1 = (float(v) for v in box)
        # Box edges are pixel edges: the last covered pixel is at x1 - 1.
        draw.rectangle((x0 * scale[1], y0 * scale[0], max(x0 * scale[1], x1 * scale[1] - 1),
                        max(y0 * scale[0], y1 * scale[0] - 1)), outline=colour, width=1)
    return image


def _save(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as temporary:
        image.save(temporary, format="JPEG", quality=JPEG_QUALITY)


def _load(sample: Sample, shape: tuple[int, int]) -> np.ndarray:
    """The image file resized (bilinear, aspect as the frame's) to ``shape (h, w)``: ``(h, w, 3)`` uint8."""
    with Image.open(sample.image_path) as image:
        image.draft("RGB", (shape[1] * 2, shape[0] * 2))  # JPEG: decode at a reduced scale (fast on big photos)
        return np.asarray(image.convert("RGB").resize((shape[1], shape[0]), Image.BILINEAR))


def _overlay(picture: np.ndarray, cam: np.ndarray, normalization: str) -> np.ndarray:
    """``cam (h', w')`` at feature resolution upsampled to ``picture``'s size, normalized, overlaid."""
    upsampled = upsample_cams(torch.from_numpy(cam.astype(np.float32))[None, None], picture.shape[:2])[0].numpy()
    return overlay_cam(picture, normalize_cams(upsampled, normalization)[0])


def write_image_thumbnails(folder: Path, row: int, sample: Sample, frame: str, input_size: int,
                           normalization: str, prediction: dict, cams: dict[str, np.ndarray]) -> None:
    """The thumbnails of one image (row ``row`` of ``predictions.csv``) into ``folder``.

    ``prediction``: ``gt_boxes (G, 4)``, ``top1_box (4,)``, ``gt_class_box (4,)`` in the evaluated frame and
    ``top1_correct`` (bool); ``cams``: ``{"top1", "gt_class"}`` maps ``(h', w')`` from ``cams.npz``.
    """
    frame_size, _ = frame_of(sample, frame, input_size)
    shape = thumbnail_shape(frame_size)
    scale = (shape[0] / frame_size[0], shape[1] / frame_size[1])
    picture = _load(sample, shape)
    gt_boxes = prediction["gt_boxes"]
    _save(_draw_boxes(picture, scale, gt_boxes, None), folder / thumbnail_name(row, "image"))
    _save(_draw_boxes(_overlay(picture, cams["top1"], normalization), scale, gt_boxes, prediction["top1_box"]),
          folder / thumbnail_name(row, "top1"))
    if not prediction["top1_correct"]:
        _save(_draw_boxes(_overlay(picture, cams["gt_class"], normalization), scale, gt_boxes,
                          prediction["gt_class_box"]), folder / thumbnail_name(row, "gt"))
