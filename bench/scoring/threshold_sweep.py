"""Boxes at every threshold of a list, in one pass over the pixels.

The threshold-free metrics (MaxBoxAcc, MaxBoxAccV2; docs/metrics.md) need, for
each map and each threshold ``tau`` of a list (100 or 1,000 of them), the box
the paper's rule gives at ``tau`` (the largest 8-connected component of
``normalized >= tau``) and the best ground-truth match among the boxes of ALL
components at ``tau``. Relabelling the mask at each threshold costs T
connected-component passes per map; :func:`reference_sweep` does exactly that
with :func:`bench.scoring.box_rule.largest_component_box` and ``scipy.ndimage`` and is
kept as the reference the fast sweep is tested against.

**The fast sweep** (:func:`sweep_boxes`). The masks are nested: lowering
``tau`` only adds pixels, so components only grow and merge. Each pixel gets a
*level*, the number of thresholds ``<= value`` (``np.searchsorted``), so the
pixel is kept at threshold index t exactly when ``level > t`` — the same
float32 ``>=`` comparison as :func:`bench.scoring.box_rule.boxes_from_cams`, ties and
the inclusive boundary included. Pixels are added in decreasing level order
(a stable radix sort) to a union-find that keeps each component's size,
bounding box and first pixel in raster order; after all pixels of level
``t + 1`` are in, the forest is the labelling of the mask at threshold t:

* largest component: the best ``(size, -first raster pixel)`` only improves
  through the component that just changed (a merged-away best is beaten by
  the merge), so it is updated in O(1) per pixel; ties go to the component
  met first in raster order, as in :func:`~bench.scoring.box_rule.largest_component_box`;
* all components: each component changed during a level is pushed on a
  max-heap keyed by its best IoU with the ground truth; stale entries
  (merged-away roots, older versions) are dropped when they reach the top.

Total work is O(N log N) for N pixels plus O(T): nearly independent of the
number of thresholds. An empty mask (e.g. an all-zero map at ``tau > 0``)
gives the empty box ``[0, 0, 0, 0]``, as the box rule does.

**Why numba.** Union-find is a sequential loop over pixels with data-dependent
merges; it has no efficient NumPy formulation, and in pure Python the loop
costs about as much as the per-threshold labelling it replaces. scikit-image's
``max_tree`` builds the component tree in Cython, but accumulating sizes and
boxes up that tree is again a per-pixel Python loop. numba (``pip install
numba``, a wheel from PyPI, no compiler needed) compiles the loop once
(cached in ``__pycache__``) and runs it at C speed. Measured numbers:
``make perf`` and docs/results.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from scipy import ndimage

from bench.data.boxes import pairwise_iou
from bench.scoring.box_rule import largest_component_box

MAX_THRESHOLDS = 1000  # levels are stored as int16 (radix sort)


def threshold_list(count: int) -> np.ndarray:
    """``count`` evenly spaced thresholds ``0, 1/count, ..., (count-1)/count`` -> ``(count,)`` float32.

    100 gives wsolevaluation's 0.00, 0.01, ..., 0.99; 1000 gives steps of 0.001.
    """
    if not isinstance(count, (int, np.integer)) or not 1 <= count <= MAX_THRESHOLDS:
        raise ValueError(f"count must be an integer in [1, {MAX_THRESHOLDS}]; got {count!r}")
    return (np.arange(count, dtype=np.float64) / count).astype(np.float32)


@dataclass(frozen=True)
class SweepBoxes:
    """Boxes of one map at each of T thresholds (:mod:`bench.data.boxes` convention)."""

    largest: np.ndarray  # (T, 4) float32: box of the largest component (empty box if none)
    best_match: np.ndarray  # (T, 4) float32: the component box with the best IoU with a GT box (empty if none)


def _check_inputs(normalized: np.ndarray, thresholds: np.ndarray, gt_boxes: np.ndarray):
    normalized = np.asarray(normalized)
    if normalized.ndim != 2 or normalized.size == 0:
        raise ValueError(f"normalized must be a non-empty (H, W) map; got shape {normalized.shape}")
    if normalized.dtype != np.float32:
        raise ValueError(f"normalized must be float32 (bench.scoring.box_rule.normalize_cams); got {normalized.dtype}")
    thresholds = np.asarray(thresholds)
    if thresholds.dtype != np.float32 or thresholds.ndim != 1 or not 1 <= len(thresholds) <= MAX_THRESHOLDS:
        raise ValueError(f"thresholds must be (T,) float32 with 1 <= T <= {MAX_THRESHOLDS}; "
                         f"got {thresholds.dtype} {thresholds.shape}")
    if np.any(np.diff(thresholds) <= 0):
        raise ValueError("thresholds must be strictly increasing")
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    return normalized, thresholds, gt_boxes


def sweep_boxes(normalized: np.ndarray, thresholds: np.ndarray, gt_boxes: np.ndarray) -> SweepBoxes:
    """Fast sweep (module docstring) of one normalized map ``(H, W)`` float32.

    Args:
        normalized: a map from :func:`bench.scoring.box_rule.normalize_cams`.
        thresholds: ``(T,)`` float32, strictly increasing; pixel kept at t iff ``normalized >= thresholds[t]``.
        gt_boxes: ``(G, 4)`` ground-truth boxes in the map's frame (for ``best_match``).

    Returns:
        :class:`SweepBoxes`, equal to :func:`reference_sweep`'s (``best_match``
        may differ only between components of exactly equal IoU).
    """
    normalized, thresholds, gt_boxes = _check_inputs(normalized, thresholds, gt_boxes)
    height, width = normalized.shape
    levels = np.searchsorted(thresholds, normalized.ravel(), side="right").astype(np.int16)  # (N,) in 0..T
    order = np.argsort(-levels, kind="stable")  # (N,) decreasing level; radix sort on int16
    largest, best_match = _sweep_kernel(levels, order, height, width, len(thresholds), gt_boxes)
    return SweepBoxes(largest=largest, best_match=best_match)


def reference_sweep(normalized: np.ndarray, thresholds: np.ndarray, gt_boxes: np.ndarray) -> SweepBoxes:
    """The straightforward loop: label the mask at each threshold (scipy), box the components.

    ``best_match`` is the first component box (in scipy's label order) with
    the highest IoU against any of ``gt_boxes``. Same contract as :func:`sweep_boxes`.
    """
    normalized, thresholds, gt_boxes = _check_inputs(normalized, thresholds, gt_boxes)
    largest = np.zeros((len(thresholds), 4), dtype=np.float32)
    best_match = np.zeros((len(thresholds), 4), dtype=np.float32)
    for index, threshold in enumerate(thresholds):
        mask = normalized >= threshold
        largest[index] = largest_component_box(mask)
        labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
        if count == 0:
            continue
        boxes = np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in ndimage.find_objects(labels)],
                         dtype=np.float32)  # (count, 4)
        if len(gt_boxes):
            best_match[index] = boxes[pairwise_iou(boxes, gt_boxes).max(axis=1).argmax()]
        else:
            best_match[index] = boxes[0]
    return SweepBoxes(largest=largest, best_match=best_match)


# ----------------------------------------------------------------------------- compiled kernel


@numba.njit(cache=True)
def _find(parent, pixel):
    while parent[pixel] != pixel:
        parent[pixel] = parent[parent[pixel]]  # path halving
        pixel = parent[pixel]
    return pixel


@numba.njit(cache=True)
def _best_iou(x0, y0, x1, y1, gt_boxes):
    """Best IoU of box ``[x0, y0, x1, y1)`` with ``gt_boxes (G, 4)``, same arithmetic as pairwise_iou."""
    best = 0.0
    area = max(x1 - x0, 0.0) * max(y1 - y0, 0.0)
    for g in range(gt_boxes.shape[0]):
        gx0, gy0, gx1, gy1 = gt_boxes[g, 0], gt_boxes[g, 1], gt_boxes[g, 2], gt_boxes[g, 3]
        inter = max(min(x1, gx1) - max(x0, gx0), 0.0) * max(min(y1, gy1) - max(y0, gy0), 0.0)
        union = area + max(gx1 - gx0, 0.0) * max(gy1 - gy0, 0.0) - inter
        if union > 0:
            iou = inter / union
            if iou > best:
                best = iou
    return best


@numba.njit(cache=True)
def _heap_push(keys, roots, stamps, count, key, root, stamp):
    """Push onto the max-heap held in ``keys/roots/stamps[:count]``; returns the new count."""
    index = count
    keys[index], roots[index], stamps[index] = key, root, stamp
    while index > 0:
        up = (index - 1) // 2
        if keys[up] >= keys[index]:
            break
        keys[up], keys[index] = keys[index], keys[up]
        roots[up], roots[index] = roots[index], roots[up]
        stamps[up], stamps[index] = stamps[index], stamps[up]
        index = up
    return count + 1


@numba.njit(cache=True)
def _heap_pop(keys, roots, stamps, count):
    """Remove the top of the max-heap; returns the new count."""
    count -= 1
    keys[0], roots[0], stamps[0] = keys[count], roots[count], stamps[count]
    index = 0
    while True:
        left, right, top = 2 * index + 1, 2 * index + 2, index
        if left < count and keys[left] > keys[top]:
            top = left
        if right < count and keys[right] > keys[top]:
            top = right
        if top == index:
            return count
        keys[top], keys[index] = keys[index], keys[top]
        roots[top], roots[index] = roots[index], roots[top]
        stamps[top], stamps[index] = stamps[index], stamps[top]
        index = top


@numba.njit(cache=True)
def _sweep_kernel(levels, order, height, width, num_thresholds, gt_boxes):
    """Union-find over pixels in decreasing level order; see the module docstring."""
    n = height * width
    parent = np.full(n, -1, dtype=np.int64)  # -1: pixel not added yet
    size = np.zeros(n, dtype=np.int64)
    first = np.zeros(n, dtype=np.int64)  # smallest raster index in the component
    box = np.zeros((n, 4), dtype=np.int64)  # x0, y0, x1, y1 (half-open)
    version = np.zeros(n, dtype=np.int64)
    pushed_at = np.full(n, -1, dtype=np.int64)  # threshold index of the last heap push per root
    changed = np.empty(n, dtype=np.int64)  # roots changed during the current level
    heap_keys = np.empty(n + 1, dtype=np.float64)
    heap_roots = np.empty(n + 1, dtype=np.int64)
    heap_stamps = np.empty(n + 1, dtype=np.int64)
    heap_count = 0
    largest = np.zeros((num_thresholds, 4), dtype=np.float32)
    best_match = np.zeros((num_thresholds, 4), dtype=np.float32)
    best = -1
    cursor = 0
    for t in range(num_thresholds - 1, -1, -1):
        num_changed = 0
        while cursor < n and levels[order[cursor]] > t:
            pixel = order[cursor]
            cursor += 1
            row, col = pixel // width, pixel % width
            parent[pixel] = pixel
            size[pixel] = 1
            first[pixel] = pixel
            box[pixel, 0], box[pixel, 1], box[pixel, 2], box[pixel, 3] = col, row, col + 1, row + 1
            root = pixel
            for d_row in range(-1, 2):
                for d_col in range(-1, 2):
                    r, c = row + d_row, col + d_col
                    if (d_row == 0 and d_col == 0) or r < 0 or r >= height or c < 0 or c >= width:
                        continue
                    neighbour = r * width + c
                    if parent[neighbour] < 0:
                        continue
                    other = _find(parent, neighbour)
                    if other == root:
                        continue
                    if size[other] > size[root]:  # union by size: the bigger root survives
                        root, other = other, root
                    parent[other] = root
                    size[root] += size[other]
                    first[root] = min(first[root], first[other])
                    box[root, 0] = min(box[root, 0], box[other, 0])
                    box[root, 1] = min(box[root, 1], box[other, 1])
                    box[root, 2] = max(box[root, 2], box[other, 2])
                    box[root, 3] = max(box[root, 3], box[other, 3])
            changed[num_changed] = root
            num_changed += 1
            if best < 0 or parent[best] != best or size[root] > size[best] or (
                    size[root] == size[best] and first[root] < first[best]):
                best = root
        if best >= 0:
            for k in range(4):
                largest[t, k] = box[best, k]
        for index in range(num_changed):
            root = changed[index]
            if parent[root] != root or pushed_at[root] == t:
                continue
            pushed_at[root] = t
            version[root] += 1
            key = _best_iou(float(box[root, 0]), float(box[root, 1]), float(box[root, 2]), float(box[root, 3]),
                            gt_boxes)
            heap_count = _heap_push(heap_keys, heap_roots, heap_stamps, heap_count, key, root, version[root])
        while heap_count > 0 and (parent[heap_roots[0]] != heap_roots[0] or heap_stamps[0] != version[heap_roots[0]]):
            heap_count = _heap_pop(heap_keys, heap_roots, heap_stamps, heap_count)
        if heap_count > 0:
            for k in range(4):
                best_match[t, k] = box[heap_roots[0], k]
    return largest, best_match
