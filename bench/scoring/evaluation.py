"""Streaming evaluation: one forward pass gives logits and CAMs; boxes and metrics per batch.

For each image, the CAMs of the top-5 predicted classes and of the ground-truth
class come from the same features as the logits; the top-1 and ground-truth
class's maps are upsampled bilinearly to the evaluated frame and boxed by the
paper's rule (the path :mod:`bench.scoring.prediction` shares with ``bench cam``). The
frame is the network input by default, or the original image with
``eval.frame: original`` (:mod:`bench.scoring.protocols`). Per-image rows go straight
to ``predictions.csv`` (:mod:`bench.scoring.image_rows`); only counters, a few numbers
per image for the metrics by object scale (:mod:`bench.scoring.object_scale`), the
feature-resolution CAMs (for ``cams.npz``) and a few gallery images stay in memory.

Every scoring function takes an optional map ``method`` (:data:`bench.scoring.prediction.MapMethod`,
``bench methods``): it replaces the CAM as the maker of the top-1 and GT-class maps, and nothing else.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from PIL import Image

from bench.atomic_files import atomic_path
from bench.config import EvalConfig
from bench.data.samples import Sample
from bench.model.camnet import CamNet
from bench.progress import progress_bar
from bench.scoring.box_rule import normalize_cams
from bench.scoring.fixed_tau_metrics import (
    TOP_K,
    LocalizationMeter,
    LocalizationOutcome,
    classification_hits,
    localization_outcomes,
)
from bench.scoring.image_rows import (
    PREDICTION_COLUMNS,
    format_box,
    format_boxes,
    format_iou,
    recorded_boxes,
    recorded_outcome,
)
from bench.scoring.object_scale import ObjectScaleMeter, box_to_object_areas, object_scales
from bench.scoring.pointing_game import PointingMeter
from bench.scoring.prediction import MapMethod, localize_batch, predict
from bench.scoring.protocols import BenchProtocol, ScoringProtocol, frame_of, mask_in_frame  # noqa: F401 (mask_in_frame: re-exported)
from bench.scoring.threshold_free_metrics import PixelPrecisionMeter, ThresholdSweepMeter

# The maps evaluation boxes, among the top-5 CAMs and the true class's: every metric needs the top-1
# class's box (top-1 loc, mean IoU) and the true class's box (top-5 loc, GT-known loc: the top-5 rule
# boxes *the true* class's CAM), never the boxes of predictions 2..5, so those are not made.
SCORED_MAPS = (0, -1)


@dataclass(frozen=True)
class GalleryItem:
    """One test image prepared for the figure, in the evaluated frame (H, W)."""

    image: np.ndarray  # (H, W, 3) uint8
    cam: np.ndarray  # (H, W) float32, top-1 CAM normalized as evaluated
    gt_boxes: np.ndarray  # (G, 4)
    box: np.ndarray  # (4,) top-1 box
    label: int
    predicted: int
    iou: float


@dataclass
class EvaluationResult:
    metrics: dict[str, float]
    by_object_scale: list[dict] = field(default_factory=list)  # bench.scoring.object_scale.metrics_by_scale's rows
    image_ids: list[str] = field(default_factory=list)
    top1_cams: list[np.ndarray] = field(default_factory=list)  # each (h, w) float32
    gt_cams: list[np.ndarray] = field(default_factory=list)  # each (h, w) float32
    gallery: list[GalleryItem] = field(default_factory=list)
    box_hits: list[np.ndarray] = field(default_factory=list)  # each (B, len(HIT_ROWS), T) bool, with a sweep


@dataclass
class ScoredBatch:
    """Everything evaluation keeps of one batch: picklable, so ranks can send it to rank 0."""

    rows: list[list]  # one predictions.csv row per image, columns PREDICTION_COLUMNS
    outcome: LocalizationOutcome
    object_scales: np.ndarray  # (B,) largest GT box / image, from the dataset's boxes (bench.scoring.object_scale)
    box_to_object: np.ndarray  # (B,) GT-class box area / its best GT box's, both boxes as the rows record them
    image_ids: list[str]
    top1_cams: list[np.ndarray]  # each (h, w) float32
    gt_cams: list[np.ndarray]  # each (h, w) float32
    gallery: list[GalleryItem]  # the batch's images among the first gallery_size of the split
    box_hits: np.ndarray | None = None  # (B, len(HIT_ROWS), T) bool: ThresholdSweepMeter.update's, with a sweep


@dataclass(frozen=True)
class SweepMeters:
    """Threshold-list meters fed with each image's GT-class map (:mod:`bench.scoring.threshold_free_metrics`).

    ``protocol`` (:func:`bench.scoring.protocols.scoring_protocol`) prepares the
    maps and the ground truth and gives the box rule; :meth:`update_from_cams`
    feeds the meters from feature-resolution CAMs under either protocol.
    """

    boxes: ThresholdSweepMeter
    pixels: PixelPrecisionMeter  # fed only with images that have a mask
    protocol: ScoringProtocol = BenchProtocol()

    @classmethod
    def for_thresholds(cls, thresholds: np.ndarray) -> SweepMeters:
        """Empty meters over ``thresholds (T,)``, our rules."""
        return cls(ThresholdSweepMeter(thresholds), PixelPrecisionMeter(thresholds))

    @classmethod
    def for_protocol(cls, protocol: ScoringProtocol, num_thresholds: int) -> SweepMeters:
        """Empty meters over ``num_thresholds`` thresholds with ``protocol``'s rules and threshold list."""
        boxes = ThresholdSweepMeter(protocol.thresholds(num_thresholds), protocol.box_ious, protocol.precision)
        return cls(boxes, PixelPrecisionMeter(protocol.pixel_thresholds(num_thresholds), protocol.precision), protocol)

    def update_from_cams(self, gt_cams: torch.Tensor, framed: list[np.ndarray] | None, samples: list[Sample],
                         sizes: list[tuple[int, int]], gt_boxes: list[np.ndarray], top1_correct: np.ndarray,
                         top5_correct: np.ndarray, normalization: str) -> np.ndarray:
        """Feed B GT-class CAMs ``(B, h, w)`` (feature resolution) by this protocol's rules; their box hits.

        ``framed``: the same CAMs already upsampled to the evaluated frames
        ``sizes`` (None: upsampled here if the protocol needs them); ``gt_boxes`` in those frames.
        """
        scoremaps = self.protocol.cam_scoremaps(gt_cams, framed, sizes, normalization)
        return self.update_scoremaps(scoremaps, samples, top1_correct, top5_correct, gt_boxes)

    def update_scoremaps(self, scoremaps: list[np.ndarray], samples: list[Sample], top1_correct: np.ndarray,
                         top5_correct: np.ndarray, gt_boxes: list[np.ndarray] | None = None) -> np.ndarray:
        """B maps already prepared by this protocol; ``gt_boxes`` in the evaluated frames (None: from ``samples``).

        Returns the images' box hits ``(B, len(HIT_ROWS), T)`` (:meth:`ThresholdSweepMeter.update`).
        """
        frame_boxes = [None] * len(samples) if gt_boxes is None else gt_boxes
        compared = [self.protocol.gt_boxes(sample, boxes) for sample, boxes in zip(samples, frame_boxes)]
        hits = self.boxes.update(scoremaps, compared, top1_correct, top5_correct)
        for scoremap, sample in zip(scoremaps, samples):
            if sample.mask_paths:
                self.pixels.update(scoremap, *self.protocol.masks(sample, scoremap.shape))
        return hits

    def update(self, gt_maps: list[np.ndarray], samples: list[Sample], gt_boxes: list[np.ndarray],
               top1_correct: np.ndarray, top5_correct: np.ndarray, normalization: str) -> np.ndarray:
        """B raw GT-class maps ``(H_i, W_i)`` already in the evaluated frame (normalized here; our rules only);
        their box hits."""
        scoremaps = self.protocol.framed_scoremaps(gt_maps, normalization)
        return self.update_scoremaps(scoremaps, samples, top1_correct, top5_correct, gt_boxes)

    def merge(self, other: SweepMeters) -> None:
        """Add ``other``'s counts (e.g. another rank's share of the split): exact, the meters only count."""
        if other.protocol != self.protocol:
            raise ValueError(f"cannot merge {other.protocol.name!r} meters into {self.protocol.name!r} ones")
        self.boxes.merge(other.boxes)
        self.pixels.merge(other.pixels)


def _frames(batch: dict, samples: list[Sample], config: EvalConfig) -> tuple[list[Sample], list, list]:
    """The batch's samples, their evaluated frames' sizes ``(H_i, W_i)`` and ground-truth boxes ``(G_i, 4)``."""
    batch_samples = [samples[index] for index in batch["index"].tolist()]
    input_size = batch["image"].shape[-1]  # the loader's images are (B, 3, S, S)
    frames = [frame_of(sample, config.frame, input_size) for sample in batch_samples]
    return batch_samples, [size for size, _ in frames], [boxes for _, boxes in frames]


def _gallery_image(image: torch.Tensor, size: tuple[int, int], mean: tuple, std: tuple) -> np.ndarray:
    """The input tensor as ``(H, W, 3)`` uint8 at the evaluated frame's size."""
    pixels = to_pixels(image, mean, std)
    if pixels.shape[:2] != size:
        pixels = np.asarray(Image.fromarray(pixels).resize((size[1], size[0]), Image.BILINEAR))
    return pixels


def to_pixels(image: torch.Tensor, mean: tuple, std: tuple) -> np.ndarray:
    """``(3, S, S)`` tensor normalized with ``mean`` / ``std`` -> ``(S, S, 3)`` uint8.

    The inverse of :func:`bench.data.torch_dataset.image_to_tensor`.
    """
    pixels = image.cpu() * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    return (pixels.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def score_batch(model: CamNet, batch: dict, samples: list[Sample], config: EvalConfig,
                device: torch.device, sweep: SweepMeters | None = None, method: MapMethod | None = None,
                pointing: PointingMeter | None = None) -> ScoredBatch:
    """Predictions, boxes, outcomes and CSV rows of one batch (``batch["index"]`` indexes ``samples``).

    ``sweep`` and ``pointing`` (optional) are fed each image's GT-class map in the evaluated frame
    (``pointing``: the raw map, with the image's mask where it has one, :func:`update_pointing`).
    """
    batch_samples, sizes, gt_boxes = _frames(batch, samples, config)
    labels = batch["label"].to(device)
    located = localize_batch(model, batch["image"].to(device), sizes, TOP_K, config.tau, config.normalization,
                             labels, boxed=SCORED_MAPS, method=method)
    prediction, maps, boxes = located.prediction, located.maps, located.boxes  # ..., B x (2, H, W), (B, 2, 4)
    indices = batch["index"].tolist()
    topk_classes = prediction.topk_classes.cpu().numpy()
    label_array = labels.cpu().numpy()
    outcome = localization_outcomes(topk_classes, label_array, boxes[:, 0], boxes[:, -1], gt_boxes)
    hits = None
    if sweep is not None:
        hits = sweep.update_from_cams(prediction.cams[:, -1], [m[-1] for m in maps], batch_samples, sizes, gt_boxes,
                                      outcome.top1_correct, outcome.top5_correct, config.normalization)
    if pointing is not None:
        update_pointing(pointing, [m[-1] for m in maps], batch_samples, gt_boxes)
    topk_probs = prediction.topk_probs.float().cpu().numpy()
    cams = prediction.cams.float().cpu()
    # Object scale from the dataset's own boxes and frame (the scale does not depend on the frame); the box
    # ratio from the boxes as predictions.csv records them, so that a reader of the file gets the same numbers.
    scales = object_scales([sample.boxes for sample in batch_samples], [tuple(sample.size) for sample in batch_samples])
    ratios = box_to_object_areas(recorded_boxes(boxes[:, -1]), [recorded_boxes(b) for b in gt_boxes])
    scored = ScoredBatch(rows=[], outcome=outcome, object_scales=scales, box_to_object=ratios, image_ids=[],
                         top1_cams=[], gt_cams=[], gallery=[], box_hits=hits)
    for row, (index, sample) in enumerate(zip(indices, batch_samples)):
        scored.rows.append([
            sample.image_id, int(label_array[row]),
            " ".join(map(str, topk_classes[row])), " ".join(f"{p:.4f}" for p in topk_probs[row]),
            format_boxes(gt_boxes[row]),
            format_box(boxes[row, 0]), format_iou(outcome.top1_iou[row]),
            format_box(boxes[row, -1]), format_iou(outcome.gt_known_iou[row]),
            int(outcome.top1_correct[row]), int(outcome.top5_correct[row]),
            int(outcome.top1_loc[row]), int(outcome.top5_loc[row]), int(outcome.gt_known_loc[row]),
        ])
        scored.image_ids.append(sample.image_id)
        scored.top1_cams.append(cams[row, 0].numpy().astype(np.float32))
        scored.gt_cams.append(cams[row, -1].numpy().astype(np.float32))
        if index < config.gallery_size:
            scored.gallery.append(GalleryItem(
                image=_gallery_image(batch["image"][row], sizes[row], model.mean, model.std),
                cam=normalize_cams(maps[row][:1], config.normalization)[0],
                gt_boxes=gt_boxes[row], box=boxes[row, 0], label=int(label_array[row]),
                predicted=int(topk_classes[row, 0]), iou=float(outcome.top1_iou[row]),
            ))
    return scored


def score_batches(model: CamNet, loader: torch.utils.data.DataLoader, samples: list[Sample], config: EvalConfig,
                  device: torch.device, sweep: SweepMeters | None = None, method: MapMethod | None = None,
                  pointing: PointingMeter | None = None) -> Iterator[ScoredBatch]:
    """:func:`score_batch` over ``loader``, lazily (``sweep``, ``pointing`` complete once the iterator is exhausted)."""
    model.eval()
    for batch in progress_bar(loader, desc="evaluate", leave=False, dynamic_ncols=True):
        yield score_batch(model, batch, samples, config, device, sweep, method, pointing)


def update_pointing(pointing: PointingMeter, gt_maps: list[np.ndarray], samples: list[Sample],
                    gt_boxes: list[np.ndarray]) -> None:
    """Feed ``pointing`` B raw GT-class maps ``(H_i, W_i)`` in the evaluated frames, their GT boxes ``(G_i, 4)`` there.

    The object is the image's mask resized to the frame (:func:`bench.scoring.protocols.mask_in_frame`, the
    union of its instance masks) where it has one, else its boxes (:mod:`bench.scoring.pointing_game`).
    """
    for gt_map, sample, boxes in zip(gt_maps, samples, gt_boxes):
        mask = mask_in_frame(sample, gt_map.shape)[0] if sample.mask_paths else None
        pointing.update(gt_map, sample.label, boxes, mask, sample.image_id)


def collect_results(scored: Iterable[ScoredBatch], predictions_path: Path) -> EvaluationResult:
    """Stream scored batches (in split order) into ``predictions_path`` (written atomically) and the metrics.

    The metrics by object scale are fed the outcomes as the rows record them (IoUs to 4 decimals,
    :func:`bench.scoring.image_rows.recorded_outcome`): the file alone gives them back, bit for bit
    (:func:`bench.scoring.object_scale.read_metrics_by_scale`).
    """
    meter = LocalizationMeter()
    by_scale = ObjectScaleMeter()
    result = EvaluationResult(metrics={})
    with atomic_path(predictions_path) as temporary, temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(PREDICTION_COLUMNS)
        for batch in scored:
            writer.writerows(batch.rows)
            meter.update(batch.outcome)
            by_scale.update(recorded_outcome(batch.outcome), batch.object_scales, batch.box_to_object)
            result.image_ids += batch.image_ids
            result.top1_cams += batch.top1_cams
            result.gt_cams += batch.gt_cams
            result.gallery += batch.gallery
            if batch.box_hits is not None:
                result.box_hits.append(batch.box_hits)
    result.metrics = meter.compute()
    result.by_object_scale = by_scale.compute()
    return result


def evaluate(
    model: CamNet,
    loader: torch.utils.data.DataLoader,
    samples: list[Sample],
    config: EvalConfig,
    device: torch.device,
    predictions_path: Path,
    sweep: SweepMeters | None = None,
) -> EvaluationResult:
    """Score every image of ``loader`` (built over ``samples``, in order); write ``predictions_path``.

    The CSV is written to a temporary file and renamed once complete. ``sweep``
    (optional) is also fed each image's GT-class map in the evaluated frame.
    """
    return collect_results(score_batches(model, loader, samples, config, device, sweep), predictions_path)


@torch.no_grad()
def sweep_split(model: CamNet, loader: torch.utils.data.DataLoader, samples: list[Sample], config: EvalConfig,
                device: torch.device, sweep: SweepMeters, method: MapMethod | None = None) -> None:
    """Feed ``sweep`` with every image of ``loader``: one forward pass, the GT-class CAM only, no files.

    Used for the val split, whose only job is to choose tau.
    """
    model.eval()
    for batch in progress_bar(loader, desc="sweep", leave=False, dynamic_ncols=True):
        batch_samples, sizes, gt_boxes = _frames(batch, samples, config)
        labels = batch["label"].to(device)
        # The CAM path makes the top-k CAMs too (as evaluation does); a method only the GT class's map.
        prediction = predict(model, batch["image"].to(device), TOP_K, labels, method,
                             mapped=None if method is None else (-1,))
        top1, top5 = classification_hits(prediction.topk_classes.cpu().numpy(), labels.cpu().numpy())
        sweep.update_from_cams(prediction.cams[:, -1], None, batch_samples, sizes, gt_boxes, top1, top5,
                               config.normalization)  # the GT class's CAMs


@dataclass(frozen=True)
class ValidationScores:
    """A split scored without files: its metrics and each image's outcome, in split order."""

    metrics: dict[str, float]  # bench.scoring.fixed_tau_metrics.METRIC_KEYS
    image_ids: list[str]  # (N,)
    outcome: LocalizationOutcome  # every field (N,)


@torch.no_grad()
def validation_scores(model: CamNet, loader: torch.utils.data.DataLoader, samples: list[Sample],
                      config: EvalConfig, device: torch.device) -> ValidationScores:
    """The localization metrics and per-image outcomes of ``loader``'s images, writing no file.

    For the per-epoch check on the val split: same forward pass and box rule as
    the final evaluation; the model is left in eval mode.
    """
    meter = LocalizationMeter()
    image_ids, outcomes = [], []
    for batch in score_batches(model, loader, samples, config, device):
        meter.update(batch.outcome)
        image_ids += batch.image_ids
        outcomes.append(batch.outcome)
    outcome = LocalizationOutcome(**{name.name: np.concatenate([getattr(part, name.name) for part in outcomes])
                                     for name in fields(LocalizationOutcome)})
    return ValidationScores(meter.compute(), image_ids, outcome)


def validation_metrics(model: CamNet, loader: torch.utils.data.DataLoader, samples: list[Sample],
                       config: EvalConfig, device: torch.device) -> dict[str, float]:
    """The metrics of :func:`validation_scores` alone."""
    return validation_scores(model, loader, samples, config, device).metrics
