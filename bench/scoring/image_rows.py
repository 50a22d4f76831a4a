"""The rows of ``predictions.csv``: its columns, and how a box and an IoU are written in a cell and read back.

One row per evaluated image (:func:`bench.scoring.evaluation.score_batch` makes them). A box cell is
``x0 y0 x1 y1`` (:mod:`bench.data.boxes`), each value at 6 significant digits, several boxes joined by
``;``; an IoU cell has 4 decimals. :func:`recorded_boxes`, :func:`recorded_ious` and
:func:`recorded_outcome` give the values exactly as a reader of the file gets them back, so a number
computed while scoring from them (``by_object_scale`` in ``metrics.json``) is the one recomputed from the
file (:func:`bench.scoring.object_scale.read_metrics_by_scale`, a study's ``by_object_scale.md``), bit for bit.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from bench.scoring.fixed_tau_metrics import LocalizationOutcome

PREDICTION_COLUMNS = (
    "image_id", "label", "top5_classes", "top5_probs", "gt_boxes", "top1_box", "top1_iou",
    "gt_class_box", "gt_class_iou", "top1_correct", "top5_correct", "top1_loc", "top5_loc", "gt_known_loc",
)


def format_box(box: np.ndarray) -> str:
    """One box ``(4,)`` as a cell: ``"x0 y0 x1 y1"``, 6 significant digits."""
    return " ".join(f"{value:.6g}" for value in box)


def format_boxes(boxes: np.ndarray) -> str:
    """Boxes ``(G, 4)`` as one cell, ``;``-separated."""
    return ";".join(format_box(box) for box in boxes)


def parse_boxes(text: str) -> np.ndarray:
    """A box cell (``"x0 y0 x1 y1;x0 y0 x1 y1"``, as written here) -> ``(G, 4)`` float64."""
    return np.array([[float(v) for v in box.split()] for box in text.split(";") if box.strip()]).reshape(-1, 4)


def format_iou(iou: float) -> str:
    """An IoU as a cell: 4 decimals."""
    return f"{iou:.4f}"


def recorded_boxes(boxes: np.ndarray) -> np.ndarray:
    """``(G, 4)`` boxes as a reader of their cell gets them back: ``(G, 4)`` float64."""
    return parse_boxes(format_boxes(np.asarray(boxes).reshape(-1, 4)))


def recorded_ious(ious: np.ndarray) -> np.ndarray:
    """``(B,)`` IoUs as a reader of their cells gets them back: ``(B,)`` float64 (4 decimals)."""
    return np.array([float(format_iou(iou)) for iou in np.asarray(ious, dtype=np.float64)], dtype=np.float64)


def recorded_outcome(outcome: LocalizationOutcome) -> LocalizationOutcome:
    """``outcome`` as its rows record it: the 0/1 columns exact, both IoUs to 4 decimals."""
    return replace(outcome, top1_iou=recorded_ious(outcome.top1_iou),
                   gt_known_iou=recorded_ious(outcome.gt_known_iou))
