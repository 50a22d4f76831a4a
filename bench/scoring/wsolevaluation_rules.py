"""wsolevaluation's pixel rules (``eval.protocol: wsolevaluation``), so a number can sit beside its published ones.

clovaai/wsolevaluation (Choe et al., CVPR 2020) scores MaxBoxAcc, MaxBoxAccV2
and PxAP with rules that differ from ours in small ways; each moves a number
by about one image in sixty (PxAP by up to a point). This module restates
those rules, written from reading its ``evaluation.py`` and ``inference.py``;
docs/metrics.md puts them beside ours, rule by rule.

**Frame.** Everything is scored in the network input's square frame
``S x S`` (``model.input_size``), whatever ``eval.frame``. wsolevaluation
resizes the CAM to its network input (always 224, :data:`WSOL_SIZE`) and
scales boxes and masks to a fixed 224: at S = 224, the only size it trains,
this is its rule exactly. At another size its code would compare a map of
S x S with ground truth at 224 x 224; here the ground truth is scaled to
S x S with the map instead (docs/metrics.md, "Two protocols"). Every
function takes the frame's side ``size`` (default 224).

**Score maps** (float64, as its evaluator asserts):

* a CAM (a run's feature-resolution map, or a saved map of any other size):
  resized to ``S x S`` by OpenCV's bicubic interpolation, then min-max
  normalized; a constant (or NaN) map becomes all zeros (:func:`scoremap_from_cam`);
* a saved map already ``S x S``: used as it is, without normalization
  (its evaluator reads saved maps so), so a constant map whose 8-bit value
  is > 0 keeps every pixel at every tau < 1 (:func:`scoremap_from_saved`).

**Boxes at a threshold tau** (:func:`box_ious_at_thresholds`):

* the map is quantized once: ``(map * 255).astype(uint8)``; a pixel is kept
  when its 8-bit value is strictly greater than ``int(tau * max8)`` (``max8``
  the 8-bit maximum), so 1,000 thresholds give at most 256 distinct masks;
* boxes come from ``cv2.findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)``: every
  contour, the inner contour of a hole included, gives a candidate box
  ``[x, y, min(x + w, S - 1), min(y + h, S - 1)]`` from ``cv2.boundingRect``;
* MaxBoxAcc takes the contour of largest polygon area (``cv2.contourArea``;
  the first one on ties), MaxBoxAccV2 the best of all candidates;
* no contour gives the box ``[0, 0, 0, 0]``, which the IoU below still
  counts as one pixel.

**Ground truth.** Boxes are first written as wsolevaluation's metadata
writes them for the dataset (inclusive ``xmax`` for ILSVRC, ``x + w`` for CUB:
:func:`bench.data.wsol_layout.wsolevaluation_box_convention`), then scaled
from the image's ``(H, W)`` to ``S x S`` and each coordinate truncated to an
integer (:func:`gt_boxes_in_frame`). IoU counts inclusive pixels: widths and heights are
``x1 - x0 + 1`` and ``y1 - y0 + 1`` (:func:`inclusive_iou`). Masks are read
as grayscale by OpenCV, resized with its nearest rule (the source pixel
``floor(i * H / S)``, top-left) and a pixel is an object pixel when its
value is > 0.5, i.e. > 0 (:func:`masks_in_frame`). A map with a NaN is
refused (:func:`box_ious_at_thresholds`), as its ``check_scoremap_validity``
does.

**Thresholds** (:func:`thresholds`): ``np.arange(0, 1, 1 / count)`` in
float64, its ``cam_curve_interval = 1 / count`` (100: 0.01, 1000: 0.001).
For the 58 counts in [2, 1000] where that call returns ``count + 1`` values
(49, 98, ...), the first ``count`` are used.

**PxAP** pools float64 map values (not the 8-bit copy) into a histogram with
the edges ``thresholds + [1, 2, 3]``: the same area under the
precision-recall curve as :class:`bench.scoring.threshold_free_metrics.PixelPrecisionMeter`
over :func:`pixel_thresholds` (the list with 1.0 appended, for the pixels
equal to 1).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from bench.data.samples import DatasetFormatError

WSOL_SIZE = 224  # wsolevaluation's _RESIZE_LENGTH and network input: the default frame side
MAX_8BIT = 255


def thresholds(count: int) -> np.ndarray:
    """wsolevaluation's threshold list for ``cam_curve_interval = 1 / count`` -> ``(count,)`` float64."""
    if not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"count must be an integer >= 1; got {count!r}")
    return np.arange(0, 1, 1 / count)[:count]


def pixel_thresholds(count: int) -> np.ndarray:
    """PxAP's levels ``(count + 1,)`` float64: :func:`thresholds` and 1.0 (its histogram's bin ``[1, 2)``)."""
    return np.append(thresholds(count), 1.0)


# ----------------------------------------------------------------------------- score maps


def normalize_scoremap(cam: np.ndarray) -> np.ndarray:
    """Min-max to ``[0, 1]`` float64; a constant map, or one with a NaN, becomes all zeros."""
    cam = np.asarray(cam, dtype=np.float64)
    if np.isnan(cam).any() or cam.min() == cam.max():
        return np.zeros_like(cam)
    shifted = cam - cam.min()
    return shifted / shifted.max()


def scoremap_from_cam(cam: np.ndarray, size: int = WSOL_SIZE) -> np.ndarray:
    """A CAM ``(h, w)`` -> ``(size, size)`` float64: OpenCV bicubic resize, then :func:`normalize_scoremap`."""
    cam = np.ascontiguousarray(cam, dtype=np.float64)
    resized = cv2.resize(cam, (size, size), interpolation=cv2.INTER_CUBIC)  # dsize is (W, H)
    return normalize_scoremap(resized)


def scoremap_from_saved(score_map: np.ndarray, size: int = WSOL_SIZE) -> np.ndarray:
    """A saved map in ``[0, 1]`` -> ``(size, size)`` float64: as it is at that size, else as a CAM."""
    if score_map.shape == (size, size):
        return np.array(score_map, dtype=np.float64)
    return scoremap_from_cam(score_map, size)


# ----------------------------------------------------------------------------- boxes and IoU


def gt_boxes_in_frame(boxes: np.ndarray, size: tuple[int, int], frame: int = WSOL_SIZE) -> np.ndarray:
    """Boxes ``(G, 4)`` of an image of ``size (H, W)``, as its metadata writes them -> ``(G, 4)`` int64 at ``frame x frame``.

    Each coordinate is scaled (``x * frame / W``, as it computes it) and truncated.
    """
    height, width = size
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scale_by = np.array([width, height, width, height], dtype=np.float64)
    return np.trunc(boxes * float(frame) / scale_by).astype(np.int64)


def inclusive_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU ``(N, M)`` of integer boxes ``(N, 4)`` and ``(M, 4)`` counting inclusive pixels (``+ 1``); 0 if degenerate."""
    a = np.asarray(boxes_a, dtype=np.int64).reshape(-1, 4)[:, None, :]  # (N, 1, 4)
    b = np.asarray(boxes_b, dtype=np.int64).reshape(-1, 4)[None, :, :]  # (1, M, 4)
    inter_w = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
    inter_h = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
    intersection = inter_w * inter_h  # (N, M)
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    union = area_a + area_b - intersection
    return np.divide(intersection, union, out=np.zeros(intersection.shape), where=union > 0)


def contour_boxes(kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of a ``(H, W)`` bool mask by OpenCV contours -> ``(largest (4,), every (K, 4))`` int64.

    ``every`` holds one box per contour (outer ones and hole borders, ``RETR_TREE``);
    ``largest`` is the box of the contour of largest polygon area, the first on ties.
    No contour: both are the box ``[0, 0, 0, 0]``.
    """
    height, width = kept.shape
    contours = cv2.findContours(kept.astype(np.uint8) * MAX_8BIT, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
    if not contours:
        empty = np.zeros(4, dtype=np.int64)
        return empty, empty[None]
    boxes = np.empty((len(contours), 4), dtype=np.int64)
    for index, contour in enumerate(contours):
        x, y, w, h = cv2.boundingRect(contour)
        boxes[index] = (x, y, min(x + w, width - 1), min(y + h, height - 1))  # its clip to the last pixel
    areas = [cv2.contourArea(contour) for contour in contours]
    return boxes[int(np.argmax(areas))], boxes  # argmax: the first maximum, as Python's max()


def box_ious_at_thresholds(scoremap: np.ndarray, threshold_list: np.ndarray,
                           gt_boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best GT IoU of the largest-contour box and of the best contour box at each threshold.

    Args:
        scoremap: ``(H, W)`` float64 in ``[0, 1]`` (:func:`scoremap_from_cam` / :func:`scoremap_from_saved`).
        threshold_list: ``(T,)`` float64 (:func:`thresholds`).
        gt_boxes: ``(G, 4)`` int boxes in the map's frame (:func:`gt_boxes_in_frame`).

    Returns:
        ``(largest (T,), best (T,))`` float64 (module docstring). Each distinct
        8-bit cut is boxed once: at most 256 contour passes whatever T.
    """
    scoremap = np.asarray(scoremap)
    if scoremap.dtype != np.float64 or scoremap.ndim != 2:
        raise ValueError(f"scoremap must be a (H, W) float64 map; got {scoremap.dtype} {scoremap.shape}")
    if np.isnan(scoremap).any():
        raise ValueError(f"scoremap holds {int(np.isnan(scoremap).sum())} NaN value(s) of {scoremap.size}; "
                         "wsolevaluation refuses such maps (check_scoremap_validity): fix the map maker, "
                         "or save maps without NaN")
    if scoremap.min() < 0 or scoremap.max() > 1:
        raise ValueError(f"scoremap must lie in [0, 1] (8-bit copy); got min {scoremap.min():g}, "
                         f"max {scoremap.max():g}")
    image8 = (scoremap * MAX_8BIT).astype(np.uint8)
    cuts = (np.asarray(threshold_list, dtype=np.float64) * image8.max()).astype(np.int64)  # int(tau * max8)
    largest, best = np.zeros(len(cuts)), np.zeros(len(cuts))
    if len(gt_boxes) == 0:
        return largest, best
    for cut in np.unique(cuts):
        box, every = contour_boxes(image8 > cut)
        at = cuts == cut
        largest[at] = inclusive_iou(box[None], gt_boxes).max()
        best[at] = inclusive_iou(every, gt_boxes).max()
    return largest, best


# ----------------------------------------------------------------------------- masks


def _mask_in_frame(path: Path, size: int) -> np.ndarray:
    """One mask file -> ``(size, size)`` bool: OpenCV grayscale, nearest resize, > 0.5."""
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        raise DatasetFormatError(f"{path}: OpenCV cannot read this mask image (expected a grayscale PNG)")
    resized = cv2.resize(gray.astype(np.float32), (size, size), interpolation=cv2.INTER_NEAREST)
    return resized > 0.5


def masks_in_frame(mask_paths: tuple[Path, ...], ignore_path: Path | None,
                   size: int = WSOL_SIZE) -> tuple[np.ndarray, np.ndarray | None]:
    """Object pixels (the union of the instance masks) and ignored pixels (None without an ignore mask), ``(size, size)`` bool.

    Ignored: the ignore mask's pixels that are not object pixels.
    """
    union = np.any([_mask_in_frame(path, size) for path in mask_paths], axis=0)
    if ignore_path is None:
        return union, None
    return union, _mask_in_frame(ignore_path, size) & ~union
