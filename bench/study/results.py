"""Finished runs as a study reads them: per-image outcomes, boxes, CAMs, BoxAcc curves and learning curves.

Everything comes from a run folder's files (``metrics.json``, ``predictions.csv``,
``cams.npz``, ``box_acc_curves.csv``, ``history.csv``, ``manifest.json``), so a study report needs
no model. A run is read at one of two points (:data:`POINTS`): its final epoch
(the paper's protocol), or the epoch best on val localization (``val_selected/``).
Results are grouped by setting (:func:`by_setting`) for comparisons and figures,
then by their value of the study's compared key (``study.compare_key``, by
default ``model.pooling``): the *axis* of the study.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bench.config import RunConfig, StudyConfig, key_choices
from bench.errors import InputError
from bench.model.cam import upsample_cams
from bench.run.folder import (
    BOX_HITS_FILE,
    CAMS_FILE,
    CURVE_COLUMN,
    CURVES_FILE,
    HISTORY_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    SELECTED_DIR,
)
from bench.scoring.image_rows import parse_boxes
from bench.scoring.object_scale import box_to_object_areas
from bench.scoring.threshold_free_metrics import load_box_hits

# Per-image columns of predictions.csv -> (metric key, how a 0/1 or IoU value becomes the metric).
# Errors are 100 * (1 - correct); accuracies 100 * correct; mean IoU stays a fraction.
PER_IMAGE_METRICS = {
    "top1_cls_error": ("top1_correct", lambda v: 100.0 * (1.0 - v)),
    "top1_loc_error": ("top1_loc", lambda v: 100.0 * (1.0 - v)),
    "top5_loc_error": ("top5_loc", lambda v: 100.0 * (1.0 - v)),
    "gt_known_loc_acc": ("gt_known_loc", lambda v: 100.0 * v),
    "mean_iou": ("top1_iou", lambda v: v),
}
# Where a run is read: its final epoch, or the epoch chosen on the val split (train.validate).
FINAL, VAL_SELECTED = "final", "val_selected"
POINTS = (FINAL, VAL_SELECTED)
POINT_TITLES = {  # each point's heading in table.md, comparison.md and the study page
    FINAL: "Final epoch (the paper's protocol)",
    VAL_SELECTED: "Epoch chosen on val localization (GT-known loc on the val split; never on test)",
}


class StudyError(InputError, RuntimeError):
    """A study cannot proceed as asked (e.g. a finished run folder holds another config)."""


@dataclass(frozen=True)
class RunResult:
    """What the report needs of one finished run."""

    config: RunConfig
    metrics: dict
    image_ids: list[str]
    per_image: dict[str, np.ndarray]  # metric key -> (N,) per-image values (see PER_IMAGE_METRICS)
    gt_boxes: list[np.ndarray]  # N arrays (G, 4), evaluated frame
    gt_class_boxes: np.ndarray  # (N, 4)
    gt_class_iou: np.ndarray  # (N,) best IoU of the GT-class box with the ground truth
    gt_class_cams: np.ndarray | None  # (N, h, w) float32, feature resolution (the final epoch's; None otherwise)
    box_acc_curve: tuple[np.ndarray, np.ndarray]  # (taus (T,), BoxAcc(tau, 0.5) % (T,)) from box_acc_curves.csv
    # history.csv rows, one per epoch (empty for runs from before it existed)
    history: list[dict[str, float]] = field(default_factory=list)
    point: str = FINAL
    selected_epoch: int | None = None  # the epoch the run chose on val (manifest.json); None: it chose none
    # (N, len(HIT_ROWS), T) bool from box_hits.npz, image n = image_ids[n]; None for a run scored before it existed
    box_hits: np.ndarray | None = None

    @property
    def epoch(self) -> int:
        """The epoch whose model was scored."""
        return int(self.metrics.get("epoch", self.config.train.epochs))

    @property
    def train_accuracy(self) -> float | None:
        """Training accuracy (%, on the augmented training batches) in the scored epoch."""
        rows = [row for row in self.history if int(row["epoch"]) == self.epoch]
        return rows[0]["accuracy"] if rows else None


def has_point(config: RunConfig, point: str) -> bool:
    """Whether the finished run in ``config.run_dir`` was scored at ``point``."""
    return point == FINAL or (config.run_dir / SELECTED_DIR / METRICS_FILE).is_file()


def read_history(path) -> list[dict[str, float]]:
    """``history.csv`` as rows of floats (empty cells left out); [] if the file is missing."""
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return [{key: float(value) for key, value in row.items() if value != ""} for row in csv.DictReader(handle)]


def read_predictions(path: Path) -> dict:
    """The per-image fields of :class:`RunResult` from a ``predictions.csv`` (or a map method's
    ``predictions_<method>.csv``): ``image_ids``, ``per_image``, ``gt_boxes``, ``gt_class_boxes``, ``gt_class_iou``."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {
        "image_ids": [row["image_id"] for row in rows],
        "per_image": {key: transform(np.array([float(row[column]) for row in rows]))
                      for key, (column, transform) in PER_IMAGE_METRICS.items()},
        "gt_boxes": [parse_boxes(row["gt_boxes"]) for row in rows],
        "gt_class_boxes": np.stack([parse_boxes(row["gt_class_box"])[0] for row in rows]),
        "gt_class_iou": np.array([float(row["gt_class_iou"]) for row in rows]),
    }


def read_run(config: RunConfig, point: str = FINAL) -> RunResult:
    """One finished run at ``point`` (:data:`POINTS`)."""
    if point not in POINTS:
        raise ValueError(f"point {point!r}: expected one of {', '.join(POINTS)}")
    folder = config.run_dir if point == FINAL else config.run_dir / SELECTED_DIR
    metrics = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
    cams = np.load(config.run_dir / CAMS_FILE)["gt_class"].astype(np.float32) if point == FINAL else None
    with (folder / CURVES_FILE).open(newline="", encoding="utf-8") as handle:
        curve_rows = list(csv.DictReader(handle))
    curve = (np.array([float(row["tau"]) for row in curve_rows]),
             np.array([float(row[CURVE_COLUMN]) for row in curve_rows]))
    selected = json.loads((config.run_dir / MANIFEST_FILE).read_text(encoding="utf-8")).get("val_selected_epoch")
    predictions = read_predictions(folder / PREDICTIONS_FILE)
    return RunResult(config=config, metrics=metrics, **predictions, gt_class_cams=cams, box_acc_curve=curve,
                     history=read_history(config.run_dir / HISTORY_FILE), point=point, selected_epoch=selected,
                     box_hits=read_box_hits(folder / BOX_HITS_FILE, predictions["image_ids"]))


def read_box_hits(path: Path, image_ids: list[str]) -> np.ndarray | None:
    """The hits of a run's ``box_hits.npz`` in ``image_ids``' order (its ``predictions.csv``); None without the file."""
    if not path.is_file():
        return None
    box_hits = load_box_hits(path)
    if box_hits.image_ids != image_ids:
        raise StudyError(f"{path}: its {len(box_hits.image_ids)} images are not those of predictions.csv beside it "
                         f"({len(image_ids)}), in that order; score the run again")
    return box_hits.hits


def upsampled_cams(result: RunResult, count: int | None = None) -> np.ndarray:
    """The run's first ``count`` (default: all N) GT-class CAMs upsampled to its input frame, as evaluated.

    Returns ``(count, S, S)`` float32; each map is upsampled alone, so the first
    ``count`` are the same whatever ``count`` is (a figure of 6 pays for 6).
    """
    size = result.config.model.input_size
    cams = torch.from_numpy(result.gt_class_cams[:count])[:, None]  # (count, 1, h, w)
    return upsample_cams(cams, (size, size))[:, 0].numpy()


def area_ratios(result: RunResult) -> np.ndarray:
    """Area of the GT-class box / area of its best-matching GT box, per image: ``(N,)``.

    The rule is :func:`bench.scoring.object_scale.box_to_object_areas`, the one the per-scale tables use too.
    """
    return box_to_object_areas(result.gt_class_boxes, result.gt_boxes)


def setting_keys(study: StudyConfig) -> list[str]:
    """The grid keys that define a *setting*: every one but ``seed`` and ``study.compare_key`` (grid order)."""
    return [key for key, _ in study.grid if key not in ("seed", study.compare_key)]


def axis_name(study: StudyConfig) -> str:
    """The compared key's short name, as headers and titles say it: ``pooling``, ``method``, ``lr``."""
    return study.compare_key.rsplit(".", 1)[-1]


# The WSOL methods as their papers write them; every other value is shown upper-cased (gap -> GAP, adl -> ADL).
WRITTEN_AS = {"has": "HaS", "cutmix": "CutMix", "acol": "ACoL"}


def value_label(value) -> str:
    """A value of the compared key as labels show it (``GAP``, ``CAM``, ``CutMix``, ``0.05``); ``GAP - X`` too."""
    return WRITTEN_AS.get(str(value), str(value).upper())


def ordered_values(study: StudyConfig, values) -> list:
    """``values`` of the compared key in the order of figures and pages: the reference first, then the key's
    choices in the config's order (``model.pooling``: gap, gmp, lse, ...), else the grid's order; others last."""
    order = list(key_choices(study.compare_key)) or [v for key, vs in study.grid if key == study.compare_key
                                                     for v in vs]
    return sorted(values, key=lambda v: (v != study.reference, order.index(v) if v in order else len(order)))


def setting_label(study: StudyConfig, setting: tuple, default: str) -> str:
    """``"variant=parts, input_size=224"`` for the values of :func:`setting_keys`; ``default`` if there are none."""
    pairs = zip(setting_keys(study), setting)
    return ", ".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in pairs) or default


def config_value(config: RunConfig, key: str):
    """The value of a dotted key (``model.pooling``) in a run config."""
    value = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def by_setting(study: StudyConfig, results: list[RunResult]) -> dict[tuple, dict[object, list[RunResult]]]:
    """Results by setting (the values of :func:`setting_keys`, first-seen order), then by compared value."""
    keys = setting_keys(study)
    settings: dict[tuple, dict[object, list[RunResult]]] = {}
    for result in results:
        setting = tuple(config_value(result.config, key) for key in keys)
        value = config_value(result.config, study.compare_key)
        settings.setdefault(setting, {}).setdefault(value, []).append(result)
    return settings
