"""Bounding boxes: the one place that defines the box convention.

Convention (used by every module of this package):

* A box is ``[x0, y0, x1, y1)``: half-open, in continuous pixel coordinates of
  one image frame, origin at the top-left corner, x to the right, y down.
* Pixel ``(row i, column j)`` covers the unit square ``[j, j+1) x [i, i+1)``.
  So the box of a single pixel at (i, j) is ``[j, i, j + 1, i + 1]`` and the
  box of a mask is ``[min col, min row, max col + 1, max row + 1]``.
* Area is ``(x1 - x0) * (y1 - y0)``; no ``+1`` (the older inclusive-pixel
  convention is not used here).
* Box arrays have shape ``(..., 4)`` and dtype float32/float64.
* The "empty box" ``[0, 0, 0, 0]`` stands for "no box" (e.g. nothing above the
  threshold): it has zero area and IoU 0 with every box.
* Image sizes are always ``(H, W)``, never OpenCV's ``(W, H)``.

Datasets given in other conventions (CUB's ``x y w h``) are converted on read
with :func:`xywh_to_xyxy`. Resizing boxes with their image lives here too
(:func:`resize_boxes`); training crops and flips move images only, as training
reads labels only.
"""

from __future__ import annotations

import numpy as np

EMPTY_BOX = np.zeros(4, dtype=np.float32)
EMPTY_BOX.setflags(write=False)  # shared constant: callers copy it before changing it


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Area of boxes ``(..., 4)`` -> ``(...)``; inverted boxes count as 0."""
    boxes = np.asarray(boxes, dtype=np.float64)
    width = np.clip(boxes[..., 2] - boxes[..., 0], 0, None)
    height = np.clip(boxes[..., 3] - boxes[..., 1], 0, None)
    return width * height


def pairwise_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``boxes_a (N, 4)`` with every box in ``boxes_b (M, 4)``.

    Returns ``(N, M)`` float64. Pairs whose union is empty (two empty boxes)
    have IoU 0.
    """
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)[:, None, :]  # (N, 1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)[None, :, :]  # (1, M, 4)
    inter_w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    inter_h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    intersection = inter_w * inter_h  # (N, M)
    union = box_area(a) + box_area(b) - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def best_iou(pred_boxes: np.ndarray, gt_boxes: list[np.ndarray]) -> np.ndarray:
    """IoU of each predicted box with its best-matching ground-truth box.

    Args:
        pred_boxes: ``(N, 4)``, one predicted box per image.
        gt_boxes: N arrays ``(G_i, 4)``, all ground-truth boxes of image i
            (an image with no box gets IoU 0).

    Returns:
        ``(N,)`` float64: ``max_g IoU(pred_i, gt_i[g])``.
    """
    pred_boxes = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)
    if len(pred_boxes) != len(gt_boxes):
        raise ValueError(f"best_iou: {len(pred_boxes)} predicted boxes but {len(gt_boxes)} ground-truth lists")
    out = np.zeros(len(pred_boxes))
    for i, (pred, gts) in enumerate(zip(pred_boxes, gt_boxes)):
        if len(gts):
            out[i] = pairwise_iou(pred[None], gts).max()
    return out


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """``(..., 4)`` boxes ``[x, y, width, height]`` -> ``[x0, y0, x1, y1)``."""
    boxes = np.asarray(boxes, dtype=np.float64)
    return np.concatenate([boxes[..., :2], boxes[..., :2] + boxes[..., 2:]], axis=-1)


def mask_to_box(mask: np.ndarray) -> np.ndarray:
    """Tight box ``(4,)`` float32 around the True pixels of a ``(H, W)`` mask.

    An empty mask gives :data:`EMPTY_BOX`.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return EMPTY_BOX.copy()
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)


def resize_boxes(boxes: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """Map boxes ``(..., 4)`` from an image of ``from_size (H, W)`` to one resized to ``to_size (H, W)``.

    Exact in continuous coordinates: x scales by ``W_to / W_from``, y by ``H_to / H_from``.
    """
    (h_from, w_from), (h_to, w_to) = from_size, to_size
    scale = np.array([w_to / w_from, h_to / h_from, w_to / w_from, h_to / h_from])
    return np.asarray(boxes, dtype=np.float64) * scale


def boxes_to_mask(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` bool mask of the pixels of an ``size (H, W)`` frame whose centre lies in one of ``boxes (G, 4)``.

    Pixel ``(i, j)`` has its centre at ``(j + 0.5, i + 0.5)``; it is inside ``[x0, y0, x1, y1)`` when
    ``x0 <= j + 0.5 < x1`` and ``y0 <= i + 0.5 < y1``. So an integer box fills exactly the pixels it covers
    (``[1, 0, 3, 2]`` on a 2 x 4 frame: columns 1 and 2 of both rows), and no box gives an empty mask.
    """
    height, width = size
    rows = np.arange(height) + 0.5  # (H,) pixel centres
    cols = np.arange(width) + 0.5  # (W,)
    mask = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        mask |= ((rows >= y0) & (rows < y1))[:, None] & ((cols >= x0) & (cols < x1))[None, :]
    return mask
