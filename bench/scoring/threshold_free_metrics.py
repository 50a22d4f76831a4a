"""Metrics over a list of thresholds: BoxAcc curves, MaxBoxAcc(V2), PxAP and a tau chosen on val.

Definitions (docs/metrics.md; percentages; ``tau`` runs over a threshold list,
:func:`bench.scoring.threshold_sweep.threshold_list`; maps are GT-class CAMs normalized as
``eval.normalization`` says):

* **BoxAcc(tau, delta)**: % of images whose box at ``tau`` has IoU >= delta
  with some ground-truth box. Two box rules: the paper's *largest* component,
  and *all* components (best matching component box counts).
* **MaxBoxAcc** = max over tau of BoxAcc(tau, 0.5), largest component.
* **MaxBoxAccV2** = mean over delta in {0.3, 0.5, 0.7} of max over tau of
  BoxAcc(tau, delta), all components (each delta takes its own best tau).
  Both maxima are taken on the split being reported: an *oracle* protocol.
* **top-1 / top-5 loc error at tau**: as in :mod:`bench.scoring.fixed_tau_metrics`. When the
  top-1 class is right its CAM *is* the GT-class CAM, so top-1 loc at tau is
  ``top-1 correct AND GT-class IoU(tau) >= 0.5``; top-5 loc is ``true class in
  top 5 AND GT-class IoU(tau) >= 0.5``. Only the GT-class map is swept.
* **Calibrated tau** (:func:`calibrated_tau`): the tau with the best BoxAcc(tau,
  0.5) (largest component) on the *val* split, smallest tau on ties; test
  numbers are then read at that tau.
* **PxAP** (:class:`PixelPrecisionMeter`): pool the pixels of all maps of the
  split; at each tau, TP(tau) = mask pixels with score >= tau, FP(tau) =
  background pixels with score >= tau, precision P = TP / (TP + FP), recall
  R = TP / (mask pixels). Going down the thresholds from the highest,
  ``PxAP = sum_t (R(t) - R(t_next above)) * P(t)`` with R = 0 above the
  highest threshold (a step-wise area under the precision-recall curve).
  Thresholds where nothing is kept add no recall, so their precision never
  counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from bench.atomic_files import atomic_path
from bench.data.boxes import best_iou
from bench.scoring.fixed_tau_metrics import IOU_THRESHOLD
from bench.scoring.threshold_sweep import sweep_boxes

IOU_DELTAS = (0.3, 0.5, 0.7)  # MaxBoxAccV2's IoU thresholds

# A box rule over a threshold list: (map (H, W), thresholds (T,), gt_boxes (G, 4)) -> best GT IoU at each
# threshold of (the largest component's box (T,), the best-matching component's box (T,)).
BoxIous = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

CURVE_COLUMN = "box_acc_largest_0.5"  # BoxAcc(tau, IoU 0.5) of the GT-class box, largest component
# The rows of an image's box hits (ThresholdSweepMeter.update): is its box right at each tau, by the rule of
# MaxBoxAcc (largest component, IoU >= 0.5), then of MaxBoxAccV2 at each delta (all components).
HIT_ROWS = ("largest_0.5", *(f"all_{delta:g}" for delta in IOU_DELTAS))



def half_open_box_ious(normalized: np.ndarray, thresholds: np.ndarray,
                       gt_boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Our box rule (:data:`BoxIous`): :func:`bench.scoring.threshold_sweep.sweep_boxes`, half-open IoU."""
    boxes = sweep_boxes(normalized, thresholds, gt_boxes)
    repeated = [gt_boxes] * len(thresholds)
    return best_iou(boxes.largest, repeated), best_iou(boxes.best_match, repeated)


def _check_same_thresholds(mine: np.ndarray, theirs: np.ndarray) -> None:
    if not np.array_equal(mine, theirs):
        raise ValueError(f"cannot merge meters over different thresholds ({len(mine)} vs {len(theirs)} values, "
                         f"or other values); build both from the same threshold list")


class ThresholdSweepMeter:
    """Streams images; counts, for each threshold and delta, the images whose box is correct.

    ``update(maps, gt_boxes, top1_correct, top5_correct)`` per batch (maps are
    normalized GT-class maps), ``compute()`` for the curves and summaries.
    Memory: a few ``(T,)`` counters. ``box_ious`` is the box rule (:data:`BoxIous`):
    ours (:func:`half_open_box_ious`, thresholds in float32, the maps' precision)
    by default, or :func:`bench.scoring.wsolevaluation_rules.box_ious_at_thresholds` (``precision=np.float64``).
    """

    def __init__(self, thresholds: np.ndarray, box_ious: BoxIous | None = None, precision: type = np.float32) -> None:
        self.thresholds = np.asarray(thresholds, dtype=precision)
        self.box_ious = box_ious or half_open_box_ious
        count = len(self.thresholds)
        self.num_images = 0
        self.largest_correct = np.zeros(count, dtype=np.int64)  # IoU >= 0.5, largest component
        self.all_correct = np.zeros((len(IOU_DELTAS), count), dtype=np.int64)  # per delta, all components
        self.top1_loc = np.zeros(count, dtype=np.int64)
        self.top5_loc = np.zeros(count, dtype=np.int64)

    def update(self, maps: list[np.ndarray], gt_boxes: list[np.ndarray],
               top1_correct: np.ndarray, top5_correct: np.ndarray) -> np.ndarray:
        """Add B images: ``maps`` B normalized ``(H_i, W_i)`` float32, ``gt_boxes`` B ``(G_i, 4)``, ``(B,)`` bools.

        Returns their box hits ``(B, len(HIT_ROWS), T)`` bool: each image's row of every counter but the
        top-1 / top-5 ones, so that summing them over a split's images gives this meter's counts
        (:func:`max_box_acc_from_hits`; a paired bootstrap resamples them).
        """
        if not len(maps) == len(gt_boxes) == len(top1_correct) == len(top5_correct):
            raise ValueError(f"update: {len(maps)} maps, {len(gt_boxes)} box lists, {len(top1_correct)} "
                             f"top-1 and {len(top5_correct)} top-5 flags; expected one of each per image")
        hits = np.zeros((len(maps), len(HIT_ROWS), len(self.thresholds)), dtype=bool)
        for index, (normalized, gts, top1, top5) in enumerate(zip(maps, gt_boxes, top1_correct, top5_correct)):
            largest_iou, all_iou = self.box_ious(normalized, self.thresholds, gts)  # (T,), (T,)
            hits[index, 0] = largest_iou >= IOU_THRESHOLD
            hits[index, 1:] = all_iou[None, :] >= np.array(IOU_DELTAS)[:, None]
            self.largest_correct += hits[index, 0]
            self.all_correct += hits[index, 1:]
            self.top1_loc += hits[index, 0] & bool(top1)
            self.top5_loc += hits[index, 0] & bool(top5)
            self.num_images += 1
        return hits

    def merge(self, other: ThresholdSweepMeter) -> None:
        """Add ``other``'s images (same thresholds): the result equals one meter fed with both streams."""
        _check_same_thresholds(self.thresholds, other.thresholds)
        self.num_images += other.num_images
        self.largest_correct += other.largest_correct
        self.all_correct += other.all_correct
        self.top1_loc += other.top1_loc
        self.top5_loc += other.top5_loc

    def compute(self) -> dict:
        """Curves (lists over the thresholds, %) and the oracle summaries; see the module docstring."""
        if self.num_images == 0:
            raise ValueError("ThresholdSweepMeter.compute() called before any image was added with update()")
        to_percent = 100.0 / self.num_images
        box_acc = self.largest_correct * to_percent  # (T,)
        all_acc = self.all_correct * to_percent  # (len(IOU_DELTAS), T)
        best = int(np.argmax(box_acc))
        best_per_delta = all_acc.argmax(axis=1)
        return {
            "num_images": self.num_images,
            "max_box_acc": float(box_acc[best]),
            "max_box_acc_tau": round(float(self.thresholds[best]), 6),
            "max_box_acc_v2": float(np.mean(all_acc.max(axis=1))),
            "max_box_acc_v2_per_delta": {f"{delta:g}": float(all_acc[i].max()) for i, delta in enumerate(IOU_DELTAS)},
            "max_box_acc_v2_taus": {f"{delta:g}": round(float(self.thresholds[index]), 6)
                                    for delta, index in zip(IOU_DELTAS, best_per_delta)},
            "curves": {
                "tau": [round(float(tau), 6) for tau in self.thresholds],
                CURVE_COLUMN: box_acc.tolist(),
                **{f"box_acc_all_{delta:g}": all_acc[i].tolist() for i, delta in enumerate(IOU_DELTAS)},
                "top1_loc_error": (100.0 - self.top1_loc * to_percent).tolist(),
                "top5_loc_error": (100.0 - self.top5_loc * to_percent).tolist(),
            },
        }

    def at(self, index: int) -> dict[str, float]:
        """Top-1 / top-5 loc error and GT-known loc acc (= BoxAcc(tau, 0.5)) at threshold ``index``."""
        to_percent = 100.0 / max(self.num_images, 1)
        return {
            "top1_loc_error": 100.0 - float(self.top1_loc[index]) * to_percent,
            "top5_loc_error": 100.0 - float(self.top5_loc[index]) * to_percent,
            "gt_known_loc_acc": float(self.largest_correct[index]) * to_percent,
        }


def max_box_acc_from_hits(hits: np.ndarray) -> dict[str, float]:
    """MaxBoxAcc and MaxBoxAccV2 (%) of a split from its images' box hits ``(N, len(HIT_ROWS), T)``.

    The same numbers as :meth:`ThresholdSweepMeter.compute` on the meter the hits came from (sums of the same
    0/1 values): what a resample of the images is scored with.
    """
    accuracy = hits.sum(axis=0) * (100.0 / len(hits))  # (len(HIT_ROWS), T)
    return {"max_box_acc": float(accuracy[0].max()), "max_box_acc_v2": float(accuracy[1:].max(axis=1).mean())}


@dataclass(frozen=True)
class BoxHits:
    """A split's per-image box hits (``box_hits.npz``): ``image_ids`` (N,), ``thresholds`` (T,), ``hits``
    ``(N, len(HIT_ROWS), T)`` bool, rows named by :data:`HIT_ROWS`."""

    image_ids: list[str]
    thresholds: np.ndarray
    hits: np.ndarray


def save_box_hits(path: Path, box_hits: BoxHits) -> None:
    """Write ``box_hits`` to ``path`` (compressed ``.npz``, written to a temporary name and renamed)."""
    with atomic_path(Path(path)) as temporary, temporary.open("wb") as handle:
        np.savez_compressed(handle, image_ids=np.array(box_hits.image_ids), thresholds=box_hits.thresholds,
                            rows=np.array(HIT_ROWS), hits=box_hits.hits)


def load_box_hits(path: Path) -> BoxHits:
    """Read a :func:`save_box_hits` file; ``ValueError`` naming the file if its rows are not :data:`HIT_ROWS`."""
    with np.load(path) as data:
        rows = tuple(str(row) for row in data["rows"])
        if rows != HIT_ROWS or data["hits"].shape[1:] != (len(HIT_ROWS), len(data["thresholds"])):
            raise ValueError(f"{path}: box hits with rows {rows} and shape {data['hits'].shape}; "
                             f"expected rows {HIT_ROWS} and (images, {len(HIT_ROWS)}, thresholds)")
        return BoxHits(data["image_ids"].tolist(), data["thresholds"], data["hits"].astype(bool))


def calibrated_tau(val_meter: ThresholdSweepMeter) -> int:
    """Index of the threshold with the best val BoxAcc(tau, 0.5) (largest component); smallest tau on ties."""
    if val_meter.num_images == 0:
        raise ValueError("calibrated_tau: the val meter holds no image")
    return int(np.argmax(val_meter.largest_correct))


class PixelPrecisionMeter:
    """Streams (map, mask) pairs into two histograms over threshold levels; ``compute()`` gives PxAP (%).

    Maps are compared with the thresholds in ``precision`` (float32: ours; float64: wsolevaluation's).
    """

    def __init__(self, thresholds: np.ndarray, precision: type = np.float32) -> None:
        self.thresholds = np.asarray(thresholds, dtype=precision)  # maps are compared in this precision
        # Level of a score = number of thresholds <= score (0..T): kept at t iff level > t.
        self.positive = np.zeros(len(self.thresholds) + 1, dtype=np.int64)
        self.negative = np.zeros(len(self.thresholds) + 1, dtype=np.int64)
        self.num_images = 0

    def update(self, normalized: np.ndarray, mask: np.ndarray, ignore: np.ndarray | None = None) -> None:
        """Add one map ``(H, W)`` float32 (normalized) and its object mask ``(H, W)`` bool.

        ``ignore (H, W)`` bool: pixels left out of both positives and negatives (None: none).
        """
        normalized, mask = np.asarray(normalized, dtype=self.thresholds.dtype), np.asarray(mask, dtype=bool)
        kept = np.ones_like(mask) if ignore is None else ~np.asarray(ignore, dtype=bool)
        if not normalized.shape == mask.shape == kept.shape:
            raise ValueError(f"map {normalized.shape}, mask {mask.shape} and ignore {kept.shape} "
                             "must have the same (H, W)")
        levels = np.searchsorted(self.thresholds, normalized.ravel(), side="right")  # (H*W,)
        flat_mask, flat_kept = mask.ravel(), kept.ravel()
        bins = len(self.positive)
        self.positive += np.bincount(levels[flat_mask & flat_kept], minlength=bins)
        self.negative += np.bincount(levels[~flat_mask & flat_kept], minlength=bins)
        self.num_images += 1

    def merge(self, other: PixelPrecisionMeter) -> None:
        """Add ``other``'s pixels (same thresholds): the result equals one meter fed with both streams."""
        _check_same_thresholds(self.thresholds, other.thresholds)
        self.positive += other.positive
        self.negative += other.negative
        self.num_images += other.num_images

    def compute(self) -> float:
        """PxAP in % (module docstring). Raises ValueError if no mask pixel was seen."""
        total_positive = int(self.positive.sum())
        if total_positive == 0:
            raise ValueError("PxAP needs at least one object pixel; no mask with object pixels was added")
        # Kept at threshold t: levels t+1..T, i.e. a reverse cumulative sum; index t = threshold t.
        true_positive = np.cumsum(self.positive[::-1])[::-1][1:].astype(np.float64)  # (T,)
        false_positive = np.cumsum(self.negative[::-1])[::-1][1:].astype(np.float64)  # (T,)
        kept = true_positive + false_positive
        precision = np.divide(true_positive, kept, out=np.zeros_like(kept), where=kept > 0)
        recall = true_positive / total_positive
        recall_gain = recall - np.append(recall[1:], 0.0)  # R(t) - R(t+1), R(T) = 0
        return float(100.0 * np.sum(recall_gain * precision))


def sweep_summary(test: ThresholdSweepMeter, pixels: PixelPrecisionMeter, val: ThresholdSweepMeter | None,
                  split: str, normalization: str, protocol) -> dict:
    """The ``sweep`` section of ``metrics.json``: every number with the protocol that produced it.

    ``val`` is the val split's meter (None: no calibration); ``protocol`` is the
    scoring protocol object that swept them (:func:`bench.scoring.protocols.scoring_protocol`,
    e.g. ``SweepMeters.protocol``), which words the rules. It has no default: the
    protocols are built from this module's box rules, so this module does not
    import them (no import cycle, tests/test_layers.py).
    """
    result = test.compute()
    thresholds = test.thresholds
    listing = (f"{len(thresholds)} thresholds {thresholds[0]:g}..{thresholds[-1]:g} "
               f"on {protocol.maps_rule(normalization)}")
    part = protocol.part
    summary = {
        "protocol": protocol.name,
        "thresholds": {"count": len(thresholds), "first": round(float(thresholds[0]), 6),
                       "last": round(float(thresholds[-1]), 6)},
        "normalization": protocol.normalization_text(normalization),
        "num_images": result["num_images"],
        "max_box_acc": {
            "value": result["max_box_acc"], "tau": result["max_box_acc_tau"],
            "protocol": f"oracle max over tau on {split}, {listing}, largest {part}, IoU >= 0.5",
        },
        "max_box_acc_v2": {
            "value": result["max_box_acc_v2"], "per_delta": result["max_box_acc_v2_per_delta"],
            "taus": result["max_box_acc_v2_taus"],
            "protocol": f"oracle max over tau on {split} for each IoU delta in {{0.3, 0.5, 0.7}}, mean; "
                        f"{listing}, all {part}s (best match)",
        },
    }
    if pixels.num_images:
        summary["pxap"] = {"value": pixels.compute(), "num_images": pixels.num_images,
                           "protocol": f"pixels pooled over the {split} images with masks, {listing}"}
    if val is not None:
        index = calibrated_tau(val)
        tau = round(float(thresholds[index]), 6)
        summary["calibrated"] = {
            **test.at(index), "tau": tau, "val_box_acc": float(val.largest_correct[index] * 100.0 / val.num_images),
            "val_images": val.num_images,
            "protocol": f"tau from val = {tau:g} (best BoxAcc(tau, 0.5), largest {part}, on the val split), "
                        f"applied to {split}; {listing}",
        }
    return summary
