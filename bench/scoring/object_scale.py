"""Localization by object scale: the scale of each image, fixed bins, and the fixed-tau metrics per bin.

**Object scale** of an image = area of its LARGEST ground-truth box / area of
its frame, a fraction in ``[0, 1]``:

* Boxes follow :mod:`bench.data.boxes` (``[x0, y0, x1, y1)`` half-open, pixels
  of the frame they are given in); a frame size is ``(H, W)``.
* A box is clipped to the frame ``[0, W) x [0, H)`` before its area is taken,
  so a box that runs past the border counts only with its visible part and the
  scale never exceeds 1.
* The scale does not depend on the frame: resizing an image (and its boxes
  with it, :func:`bench.data.boxes.resize_boxes`) scales a box's area and the
  frame's area by the same factor. The evaluated frame (the network input or
  the original image, :mod:`bench.scoring.protocols`) and the dataset's own
  frame give the same scale, up to float rounding.
* An image with several boxes takes its largest one: that is the object a
  box has to find for the metrics below to count it (IoU >= 0.5 with *any*
  box, best match), and the largest box is the one that dominates that match.

**Bins.** :data:`SCALE_BIN_EDGES` ``(0, 0.1, 0.2, 0.3, 0.5, 1)`` give five
bins ``[0, 0.1), [0.1, 0.2), [0.2, 0.3), [0.3, 0.5), [0.5, 1]``: each bin
holds its lower edge and not its upper one, except the last, which is closed
at 1. So a scale of exactly 0.1 is in the second bin, ``[0.1, 0.2)``, and a
scale of 1 (the whole frame) in the last.

**Metrics per bin** (:func:`metrics_by_scale`, :class:`ObjectScaleMeter`):
each bin's value of a metric is the mean over its images of their per-image
values (:func:`bench.scoring.fixed_tau_metrics.per_image_metrics`), which is
what :class:`bench.scoring.fixed_tau_metrics.LocalizationMeter` gives for those
images, so every key means exactly what it means in ``metrics.json`` (top-1 /
top-5 cls and loc error, GT-known loc acc as percentages; ``mean_iou`` is the
mean best IoU of the *top-1* class's box, a fraction), plus:

* ``mean_gt_known_iou``: the mean best IoU of the *ground-truth* class's box
  (the box GT-known loc thresholds), a fraction;
* ``median_box_to_object_area``: the median over the bin's images of
  :func:`box_to_object_areas` of the GT-class box (1 is the object's own
  size; above 1 the box is too large, below too small), when those ratios are
  given.

Every bin is always listed, in edge order, so tables of different runs line
up. An **empty bin** has ``num_images: 0`` and no metric keys at all: an
empty bin has no accuracy (0 would read as "every image failed"), and
leaving the keys out keeps ``metrics.json`` valid JSON (no NaN).

:func:`metrics_by_bin` is the one per-bin aggregation: a run's
``by_object_scale`` (:class:`ObjectScaleMeter`, fed while scoring) and a
study's ``by_object_scale.md`` (:mod:`bench.study.scale_table`) both go
through it. :func:`read_metrics_by_scale` computes the same from a finished
run's ``predictions.csv`` and the split's samples (see there for which column
gives what); a run feeds its meter the values as that file records them
(:mod:`bench.scoring.image_rows`), so the two agree bit for bit.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.data.boxes import box_area, pairwise_iou
from bench.data.samples import DatasetFormatError, Sample
from bench.scoring.fixed_tau_metrics import LocalizationOutcome, per_image_metrics
from bench.scoring.image_rows import PREDICTION_COLUMNS, parse_boxes

SCALE_BIN_EDGES = (0.0, 0.1, 0.2, 0.3, 0.5, 1.0)
NUM_SCALE_BINS = len(SCALE_BIN_EDGES) - 1

# The columns of predictions.csv the reader needs (a subset of image_rows.PREDICTION_COLUMNS).
_FLAG_COLUMNS = ("top1_correct", "top5_correct", "top1_loc", "top5_loc", "gt_known_loc")  # 0 / 1
_IOU_COLUMNS = ("top1_iou", "gt_class_iou")  # 4 decimals
NEEDED_COLUMNS = ("image_id", "gt_boxes", "gt_class_box", *_IOU_COLUMNS, *_FLAG_COLUMNS)


class PredictionsFileError(DatasetFormatError):
    """A ``predictions.csv`` that cannot be read against the split's samples (file and line named)."""


def scale_bin_labels() -> list[str]:
    """One label per bin, in order: ``["[0, 0.1)", "[0.1, 0.2)", "[0.2, 0.3)", "[0.3, 0.5)", "[0.5, 1]"]``."""
    edges = SCALE_BIN_EDGES
    return [f"[{low:g}, {high:g}{']' if index == NUM_SCALE_BINS - 1 else ')'}"
            for index, (low, high) in enumerate(zip(edges[:-1], edges[1:]))]


def object_scales(gt_boxes: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]]) -> np.ndarray:
    """The object scale of each of N images: ``(N,)`` float64 in ``[0, 1]``.

    Args:
        gt_boxes: N arrays ``(G_i, 4)``, G_i >= 1, the ground-truth boxes of
            image i in the frame of ``sizes[i]``.
        sizes: N frame sizes ``(H_i, W_i)``, both >= 1.

    Returns:
        ``max_g area(gt_boxes[i][g] clipped to the frame) / (H_i * W_i)``.

    Raises:
        ValueError: the lengths differ, an image has no box, or a size is not positive.
    """
    if len(gt_boxes) != len(sizes):
        raise ValueError(f"object_scales: {len(gt_boxes)} box lists but {len(sizes)} frame sizes")
    scales = np.empty(len(gt_boxes))
    for index, (boxes, size) in enumerate(zip(gt_boxes, sizes)):
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        height, width = size
        if height < 1 or width < 1:
            raise ValueError(f"object_scales: image {index} has frame size (H, W) = {tuple(size)}; expected both >= 1")
        if len(boxes) == 0:
            raise ValueError(f"object_scales: image {index} has no ground-truth box; its object scale is undefined")
        clipped = np.clip(boxes, 0.0, [width, height, width, height])  # (G, 4), inside [0, W] x [0, H]
        scales[index] = box_area(clipped).max() / (float(height) * float(width))
    return scales


def scale_bins(scales: np.ndarray) -> np.ndarray:
    """The bin of each scale (index into the bins of :data:`SCALE_BIN_EDGES`): ``(N,)`` int64 in ``[0, 5)``.

    Bins hold their lower edge (0.1 is in bin 1, ``[0.1, 0.2)``); the last bin also holds 1.

    Raises:
        ValueError: a scale is NaN or outside ``[0, 1]``.
    """
    scales = np.asarray(scales, dtype=np.float64)
    bad = ~((scales >= 0.0) & (scales <= 1.0))  # NaN fails both comparisons
    if bad.any():
        raise ValueError(f"object scales must lie in [0, 1]; got {np.count_nonzero(bad)} outside, "
                         f"e.g. {scales[bad][:3].tolist()}")
    bins = np.searchsorted(np.asarray(SCALE_BIN_EDGES), scales, side="right") - 1  # (N,), 1.0 -> NUM_SCALE_BINS
    return np.minimum(bins, NUM_SCALE_BINS - 1).astype(np.int64)


def box_to_object_areas(boxes: np.ndarray, gt_boxes: Sequence[np.ndarray]) -> np.ndarray:
    """Area of each predicted box / area of its best-matching ground-truth box: ``(N,)`` float64.

    Args:
        boxes: ``(N, 4)``, one predicted box per image (the GT class's box in the reports).
        gt_boxes: N arrays ``(G_i, 4)``, G_i >= 1, in the same frame as ``boxes``.

    The best match is the ground-truth box of highest IoU (the first on ties,
    also when every IoU is 0). An empty predicted box gives 0; a ground-truth
    box of zero area counts as 1e-9 pixels.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) != len(gt_boxes):
        raise ValueError(f"box_to_object_areas: {len(boxes)} boxes but {len(gt_boxes)} ground-truth lists")
    ratios = np.empty(len(boxes))
    for index, (box, gts) in enumerate(zip(boxes, gt_boxes)):
        gts = np.asarray(gts, dtype=np.float64).reshape(-1, 4)
        if len(gts) == 0:
            raise ValueError(f"box_to_object_areas: image {index} has no ground-truth box")
        best = gts[int(pairwise_iou(box[None], gts)[0].argmax())]
        ratios[index] = box_area(box) / max(float(box_area(best)), 1e-9)
    return ratios


def metrics_by_bin(values: dict[str, np.ndarray], bins: np.ndarray,
                   medians: dict[str, np.ndarray] | None = None) -> list[dict]:
    """The per-bin aggregation of every by-scale table: the mean (or median) of per-image values over each bin.

    Args:
        values: ``{key: (N,) per-image values}``; a bin's ``key`` is their mean over its images
            (:func:`bench.scoring.fixed_tau_metrics.per_image_metrics` gives the fixed-tau metrics' values).
        bins: ``(N,)`` int, each image's bin (:func:`scale_bins`).
        medians: ``{key: (N,) per-image values}`` whose median over the bin is its ``key``.

    Returns:
        One dict per bin of :data:`SCALE_BIN_EDGES`, in edge order: ``bin`` (its label), ``low``, ``high``,
        ``num_images``, then for a non-empty bin the keys of ``values`` and of ``medians``, in their order.
        An empty bin has ``num_images`` 0 and no other key (its mean is undefined, not 0).
    """
    bins = np.asarray(bins)
    medians = medians or {}
    for key, column in {**values, **medians}.items():
        if np.shape(column) != bins.shape:
            raise ValueError(f"per-image values {key!r} must have the shape of bins {bins.shape}; "
                             f"got {np.shape(column)}")
    rows = []
    for index, label in enumerate(scale_bin_labels()):
        chosen = bins == index  # (N,) bool
        row = {"bin": label, "low": SCALE_BIN_EDGES[index], "high": SCALE_BIN_EDGES[index + 1],
               "num_images": int(np.count_nonzero(chosen))}
        if row["num_images"]:
            row.update({key: float(np.mean(np.asarray(column, dtype=np.float64)[chosen]))
                        for key, column in values.items()})
            row.update({key: float(np.median(np.asarray(column, dtype=np.float64)[chosen]))
                        for key, column in medians.items()})
        rows.append(row)
    return rows


def metrics_by_scale(outcome: LocalizationOutcome, scales: np.ndarray,
                     box_to_object: np.ndarray | None = None) -> list[dict]:
    """Per-bin metrics of N images in one call (:func:`metrics_by_bin`).

    Args:
        outcome: the N images' outcomes (:func:`bench.scoring.fixed_tau_metrics.localization_outcomes`;
            its ``top1_loc`` and ``gt_known_loc`` already apply IoU >= ``IOU_THRESHOLD``).
        scales: ``(N,)`` object scales (:func:`object_scales`).
        box_to_object: ``(N,)`` optional, :func:`box_to_object_areas` of the GT-class boxes.

    Returns:
        Five dicts, empty bins with ``num_images`` 0 and no metrics; a filled bin has the keys of
        :data:`bench.scoring.fixed_tau_metrics.METRIC_KEYS`, ``mean_gt_known_iou`` and (with ratios)
        ``median_box_to_object_area``.
    """
    scales = np.asarray(scales, dtype=np.float64)
    if scales.shape != (len(outcome),):
        raise ValueError(f"scales must have shape (B,) = ({len(outcome)},); got {scales.shape}")
    values = {**per_image_metrics(outcome), "mean_gt_known_iou": np.asarray(outcome.gt_known_iou)}
    medians = None if box_to_object is None else {"median_box_to_object_area": box_to_object}
    if medians is not None and np.shape(box_to_object) != scales.shape:
        raise ValueError(f"box_to_object must have shape (B,) = ({len(outcome)},); got {np.shape(box_to_object)}")
    return metrics_by_bin(values, scale_bins(scales), medians)


class ObjectScaleMeter:
    """Per-bin metrics of a stream of batches: ``update(outcome, scales, ratios)`` per batch, ``compute()``
    at the end.

    It keeps each image's outcome, scale and box / object area ratio (a few numbers per image) and
    aggregates them once, in :meth:`compute`: the result equals :func:`metrics_by_scale` of all the
    images in one call, bit for bit, however they were split into batches.
    """

    def __init__(self) -> None:
        self._outcomes: list[LocalizationOutcome] = []
        self._scales: list[np.ndarray] = []
        self._ratios: list[np.ndarray] = []
        self._with_ratios: bool | None = None  # set by the first update; every update must agree

    def update(self, outcome: LocalizationOutcome, scales: np.ndarray,
               box_to_object: np.ndarray | None = None) -> None:
        """Add B images: their outcomes, ``scales (B,)`` (:func:`object_scales`) and, optionally,
        ``box_to_object (B,)`` (:func:`box_to_object_areas` of the GT-class boxes)."""
        scales = np.asarray(scales, dtype=np.float64)
        if scales.shape != (len(outcome),):
            raise ValueError(f"scales must have shape (B,) = ({len(outcome)},); got {scales.shape}")
        with_ratios = box_to_object is not None
        if self._with_ratios is not None and with_ratios != self._with_ratios:
            raise ValueError("box_to_object must be given with every update or with none")
        self._with_ratios = with_ratios
        if with_ratios:
            box_to_object = np.asarray(box_to_object, dtype=np.float64)
            if box_to_object.shape != scales.shape:
                raise ValueError(f"box_to_object must have shape (B,) = ({len(outcome)},); "
                                 f"got {box_to_object.shape}")
            self._ratios.append(box_to_object)
        scale_bins(scales)  # a bad scale fails here, in the batch that brought it
        self._outcomes.append(outcome)
        self._scales.append(scales)

    def compute(self) -> list[dict]:
        """:func:`metrics_by_scale` of every image added so far (every bin empty before the first update)."""
        if not self._outcomes:
            return metrics_by_bin({}, np.zeros(0, dtype=np.int64))
        outcome = LocalizationOutcome(**{name: np.concatenate([getattr(part, name) for part in self._outcomes])
                                         for name in vars(self._outcomes[0])})
        ratios = np.concatenate(self._ratios) if self._with_ratios else None
        return metrics_by_scale(outcome, np.concatenate(self._scales), ratios)


def _flag(text: str) -> bool:
    """A 0/1 cell of ``predictions.csv`` as a bool."""
    if text not in ("0", "1"):
        raise ValueError("expected 0 or 1")
    return text == "1"


def _cell(path: Path, line: int, column: str, text: str, parse):
    """``parse(text)``; a malformed cell raises :class:`PredictionsFileError` naming the file, line and column."""
    try:
        return parse(text)
    except ValueError as error:
        raise PredictionsFileError(f"{path}:{line}: column {column!r} holds {text!r}: {error}") from None


def read_metrics_by_scale(predictions_path: Path, samples: Sequence[Sample]) -> list[dict]:
    """:func:`metrics_by_scale` of a finished run, from its ``predictions.csv`` and the evaluated split's samples.

    * Outcomes: the columns ``top1_correct``, ``top5_correct``, ``top1_loc``,
      ``top5_loc``, ``gt_known_loc`` (0/1, exact: thresholded when the run was
      scored) and ``top1_iou``, ``gt_class_iou`` (written to 4 decimals, so the
      mean IoUs match the run's own to about 1e-4).
    * Scales: from each sample's boxes and size (its original frame), matched
      by ``image_id``. ``predictions.csv`` does not record its frame's size;
      the scale is the same in the evaluated frame (module docstring).
    * Box / object area: ``gt_class_box`` against ``gt_boxes``, both in the evaluated frame.

    ``samples`` may hold more images than the file (e.g. the whole split of a
    run scored on part of it); every row of the file must match one of them,
    with as many boxes.

    Raises:
        PredictionsFileError: a needed column is missing, a row names an image
            that ``samples`` lacks or gives it another number of boxes, a cell
            is malformed, or the file has no rows (exit code 2 in the CLI).
    """
    predictions_path = Path(predictions_path)
    by_id = {sample.image_id: sample for sample in samples}
    with predictions_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in NEEDED_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise PredictionsFileError(f"{predictions_path}:1: header lacks the column(s) {missing}; "
                                       f"expected a predictions.csv with columns {list(PREDICTION_COLUMNS)}")
        rows = [(line, row) for line, row in enumerate(reader, start=2)]
    if not rows:
        raise PredictionsFileError(f"{predictions_path}: no image rows after the header")
    flags: dict[str, list[bool]] = {column: [] for column in _FLAG_COLUMNS}
    ious: dict[str, list[float]] = {column: [] for column in _IOU_COLUMNS}
    scale_boxes, scale_sizes, frame_boxes, class_boxes = [], [], [], []
    for line, row in rows:
        if any(row[column] is None for column in NEEDED_COLUMNS):
            raise PredictionsFileError(f"{predictions_path}:{line}: the row is cut short "
                                       f"({sum(value is not None for value in row.values())} cells, "
                                       f"{len(reader.fieldnames)} columns in the header)")
        sample = by_id.get(row["image_id"])
        if sample is None:
            raise PredictionsFileError(f"{predictions_path}:{line}: image {row['image_id']!r} is not in the "
                                       f"given split ({len(by_id)} images); read the file with the split it was "
                                       "scored on")
        for column, values in flags.items():
            values.append(_cell(predictions_path, line, column, row[column], _flag))
        for column, values in ious.items():
            values.append(_cell(predictions_path, line, column, row[column], float))
        gts = _cell(predictions_path, line, "gt_boxes", row["gt_boxes"], parse_boxes)
        box = _cell(predictions_path, line, "gt_class_box", row["gt_class_box"], parse_boxes)
        if len(gts) != len(sample.boxes) or len(box) != 1:
            raise PredictionsFileError(f"{predictions_path}:{line}: image {row['image_id']!r} has {len(gts)} "
                                       f"ground-truth box(es) and {len(box)} GT-class box(es) in the file, "
                                       f"{len(sample.boxes)} and 1 expected (the dataset's boxes); the file was "
                                       "scored on another dataset")
        scale_boxes.append(sample.boxes)
        scale_sizes.append(tuple(sample.size))
        frame_boxes.append(gts)
        class_boxes.append(box[0])
    outcome = LocalizationOutcome(
        top1_correct=np.array(flags["top1_correct"]), top5_correct=np.array(flags["top5_correct"]),
        top1_iou=np.array(ious["top1_iou"]), gt_known_iou=np.array(ious["gt_class_iou"]),
        top1_loc=np.array(flags["top1_loc"]), top5_loc=np.array(flags["top5_loc"]),
        gt_known_loc=np.array(flags["gt_known_loc"]),
    )
    try:
        scales = object_scales(scale_boxes, scale_sizes)
    except ValueError as error:
        raise PredictionsFileError(f"{predictions_path}: the samples' boxes or sizes give no object scale: "
                                   f"{error}") from None
    return metrics_by_scale(outcome, scales, box_to_object_areas(np.stack(class_boxes), frame_boxes))
