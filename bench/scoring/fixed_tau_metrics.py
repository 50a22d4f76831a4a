"""Localization metrics: per-image outcomes and a streaming meter.

Definitions (docs/metrics.md), over all evaluated images; accuracies and errors are
percentages, errors are ``100 - accuracy``:

* **top-1 / top-5 classification error**: % of images whose label is not the
  top-1 / not among the top-5 predicted classes.
* **top-1 loc**: the top-1 class is correct AND the box from the top-1 class's
  CAM has IoU >= 0.5 with ANY ground-truth box of the image (best match).
  Reported as ``top1_loc_error``.
* **top-5 loc**: the true class is among the top-5 predictions AND the box from
  that (= the true) class's CAM has IoU >= 0.5 with any ground-truth box.
  Reported as ``top5_loc_error``.
* **GT-known loc**: the box from the ground-truth class's CAM has IoU >= 0.5
  with any ground-truth box (classification ignored). Reported as an accuracy,
  ``gt_known_loc_acc``.
* **mean IoU**: mean over all images of the best IoU of the TOP-1 predicted
  class's box, whether or not the class is right. Reported as a fraction in
  ``[0, 1]``, ``mean_iou`` (the only non-percentage).

"IoU >= 0.5" is exact: an IoU of exactly 0.5 counts as correct. Boxes and IoU
follow :mod:`bench.data.boxes`. Since the top-5 box is the true class's box, top-5
loc = (true class in top 5) AND GT-known loc, and top-1 loc implies GT-known
loc whenever the top-1 box is the true class's box.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from bench.data.boxes import best_iou

IOU_THRESHOLD = 0.5
TOP_K = 5  # the "top-5" of top-5 error and top-5 loc

METRIC_KEYS = (
    "num_images",
    "top1_cls_error",
    "top5_cls_error",
    "top1_loc_error",
    "top5_loc_error",
    "gt_known_loc_acc",
    "mean_iou",
)


@dataclass(frozen=True)
class LocalizationOutcome:
    """Per-image results for a batch of B images; every field is a ``(B,)`` array."""

    top1_correct: np.ndarray  # (B,) bool: label == top-1 class
    top5_correct: np.ndarray  # (B,) bool: label among the top-5 classes
    top1_iou: np.ndarray  # (B,) float64: best IoU of the top-1 class's box
    gt_known_iou: np.ndarray  # (B,) float64: best IoU of the GT class's box
    top1_loc: np.ndarray  # (B,) bool
    top5_loc: np.ndarray  # (B,) bool
    gt_known_loc: np.ndarray  # (B,) bool

    def __post_init__(self) -> None:
        shapes = {field.name: np.shape(getattr(self, field.name)) for field in fields(self)}
        if len(set(shapes.values())) != 1 or len(shapes["top1_correct"]) != 1:
            raise ValueError(f"LocalizationOutcome fields must all have the same shape (B,); got {shapes}")

    def __len__(self) -> int:
        return len(self.top1_correct)


def _as_boxes(name: str, boxes: np.ndarray, num_images: int) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.shape != (num_images, 4):
        raise ValueError(f"{name} must have shape (B, 4) = ({num_images}, 4); got {boxes.shape}")
    return boxes


def classification_hits(topk_classes: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(top1_correct, top5_correct)``, each ``(B,)`` bool, of ``(B, K)`` sorted predictions and ``(B,)`` labels.

    Top-5 uses the first ``min(K, 5)`` columns.
    """
    topk_classes = np.asarray(topk_classes)
    labels = np.asarray(labels)
    if topk_classes.ndim != 2 or topk_classes.shape[1] < 1:
        raise ValueError(f"topk_classes must have shape (B, K) with K >= 1; got {topk_classes.shape}")
    if labels.shape != (len(topk_classes),):
        raise ValueError(f"labels must have shape (B,) = ({len(topk_classes)},); got {labels.shape}")
    return topk_classes[:, 0] == labels, (topk_classes[:, :TOP_K] == labels[:, None]).any(axis=1)


def localization_outcomes(
    topk_classes: np.ndarray,
    labels: np.ndarray,
    top1_boxes: np.ndarray,
    gt_class_boxes: np.ndarray,
    gt_boxes: list[np.ndarray],
    iou_threshold: float = IOU_THRESHOLD,
) -> LocalizationOutcome:
    """Per-image outcomes of the module's definitions for a batch of B images.

    Args:
        topk_classes: ``(B, K)`` int, K >= 1, predicted classes sorted by
            decreasing score; top-5 uses the first ``min(K, 5)`` columns.
        labels: ``(B,)`` int, ground-truth class of each image.
        top1_boxes: ``(B, 4)``, box from the CAM of the top-1 predicted class.
        gt_class_boxes: ``(B, 4)``, box from the CAM of the ground-truth class.
        gt_boxes: B arrays ``(G_i, 4)``, all ground-truth boxes of image i.
        iou_threshold: IoU needed for a correct box, in ``[0, 1]``.

    Returns:
        A :class:`LocalizationOutcome` with ``(B,)`` arrays.
    """
    top1_correct, top5_correct = classification_hits(topk_classes, labels)
    num_images = len(top1_correct)
    if len(gt_boxes) != num_images:
        raise ValueError(f"gt_boxes must hold one array per image: {num_images}; got {len(gt_boxes)}")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1]; got iou_threshold={iou_threshold!r}")
    top1_boxes = _as_boxes("top1_boxes", top1_boxes, num_images)
    gt_class_boxes = _as_boxes("gt_class_boxes", gt_class_boxes, num_images)

    top1_iou = best_iou(top1_boxes, gt_boxes)
    gt_known_iou = best_iou(gt_class_boxes, gt_boxes)
    gt_known_loc = gt_known_iou >= iou_threshold
    return LocalizationOutcome(
        top1_correct=top1_correct,
        top5_correct=top5_correct,
        top1_iou=top1_iou,
        gt_known_iou=gt_known_iou,
        top1_loc=top1_correct & (top1_iou >= iou_threshold),
        top5_loc=top5_correct & gt_known_loc,  # the top-5 box is the true class's box
        gt_known_loc=gt_known_loc,
    )


def per_image_metrics(outcome: LocalizationOutcome) -> dict[str, np.ndarray]:
    """Each image's value of every metric of :data:`METRIC_KEYS` but ``num_images``: ``{key: (B,) float64}``.

    An error is 100 where the image misses and 0 where it hits, an accuracy the reverse, ``mean_iou`` the
    image's top-1 IoU: the mean over images is the metric. For any images, ``np.mean`` of each array equals
    :class:`LocalizationMeter`'s value for them fed in one update, bit for bit (a sum of hundreds is exact,
    then one division; the IoUs are summed by the same NumPy reduction).
    """
    def error(hit: np.ndarray) -> np.ndarray:
        return 100.0 * (1.0 - np.asarray(hit, dtype=np.float64))

    return {
        "top1_cls_error": error(outcome.top1_correct),
        "top5_cls_error": error(outcome.top5_correct),
        "top1_loc_error": error(outcome.top1_loc),
        "top5_loc_error": error(outcome.top5_loc),
        "gt_known_loc_acc": 100.0 * np.asarray(outcome.gt_known_loc, dtype=np.float64),
        "mean_iou": np.asarray(outcome.top1_iou, dtype=np.float64),
    }


class LocalizationMeter:
    """Streaming accumulator of :class:`LocalizationOutcome` batches.

    ``update(outcome)`` per batch, ``compute()`` for the metrics of all images
    so far. Holds only counts and one sum, so memory does not grow with the
    number of images.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._num_images = 0
        self._top1_correct = 0
        self._top5_correct = 0
        self._top1_loc = 0
        self._top5_loc = 0
        self._gt_known_loc = 0
        self._iou_sum = 0.0

    def update(self, outcome: LocalizationOutcome) -> None:
        self._num_images += len(outcome)
        self._top1_correct += int(np.count_nonzero(outcome.top1_correct))
        self._top5_correct += int(np.count_nonzero(outcome.top5_correct))
        self._top1_loc += int(np.count_nonzero(outcome.top1_loc))
        self._top5_loc += int(np.count_nonzero(outcome.top5_loc))
        self._gt_known_loc += int(np.count_nonzero(outcome.gt_known_loc))
        self._iou_sum += float(np.sum(outcome.top1_iou, dtype=np.float64))

    def compute(self) -> dict[str, float]:
        """Metrics over all images seen; keys are :data:`METRIC_KEYS`.

        ``num_images`` is an int, ``mean_iou`` a fraction, the rest percentages.

        Raises:
            ValueError: no image has been added.
        """
        n = self._num_images
        if n == 0:
            raise ValueError("LocalizationMeter.compute() called before any image was added with update()")

        def error(correct: int) -> float:
            return 100.0 * (n - correct) / n

        return {
            "num_images": n,
            "top1_cls_error": error(self._top1_correct),
            "top5_cls_error": error(self._top5_correct),
            "top1_loc_error": error(self._top1_loc),
            "top5_loc_error": error(self._top5_loc),
            "gt_known_loc_acc": 100.0 * self._gt_known_loc / n,
            "mean_iou": self._iou_sum / n,
        }
