"""Every metric's name in every output: one table, read by the run's text and page, the study's tables and
pages, the learning-curve table and the map methods' tables.

Each metric key (``metrics.json``'s, or a sweep's, or a training history's)
has two labels: ``text``, the full wording of a run's summary and page
(``"top-1 cls error (%)"``), and ``column``, the short one of a table header
(``"top-1 cls err (%)"``); ``digits`` is the decimals every table shows it
with. A few columns qualify a metric by how its tau was chosen; their labels
are spelled out below rather than built, so each output keeps its wording.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricName:
    """How one metric is labelled: ``text`` in sentences and the run page, ``column`` in table headers."""

    text: str
    column: str
    digits: int = 2  # decimals in the tables and pages


METRICS: dict[str, MetricName] = {
    # Fixed-tau metrics (bench.scoring.fixed_tau_metrics): percentages, but mean IoU (a fraction).
    "top1_cls_error": MetricName("top-1 cls error (%)", "top-1 cls err (%)"),
    "top5_cls_error": MetricName("top-5 cls error (%)", "top-5 cls err (%)"),
    "top1_loc_error": MetricName("top-1 loc error (%)", "top-1 loc err (%)"),
    "top5_loc_error": MetricName("top-5 loc error (%)", "top-5 loc err (%)"),
    "gt_known_loc_acc": MetricName("GT-known loc acc (%)", "GT-known loc (%)"),
    "mean_iou": MetricName("mean IoU (top-1 box)", "mean IoU", digits=3),
    # Threshold-free metrics (bench.scoring.threshold_free_metrics).
    "max_box_acc": MetricName("MaxBoxAcc (%)", "MaxBoxAcc (%)"),
    "max_box_acc_v2": MetricName("MaxBoxAccV2 (%)", "MaxBoxAccV2 (%)"),
    "pxap": MetricName("PxAP (%)", "PxAP (%)"),
    # Tau chosen on val (the sweep's "calibrated" block; bench methods' val_tau columns).
    "val_tau": MetricName("tau from val", "tau from val", digits=3),
    "top1_loc_error_val_tau": MetricName("top-1 loc error (%), tau from val", "top-1 loc err, tau from val (%)"),
    "gt_known_loc_acc_val_tau": MetricName("GT-known loc acc (%), tau from val", "GT-known loc, tau from val (%)"),
    # A training history (history.csv) and the run columns of a study table.
    "epoch": MetricName("epoch", "epoch", digits=0),
    "loss": MetricName("training loss", "training loss", digits=3),
    "accuracy": MetricName("train accuracy", "train acc (%)", digits=1),
    "val_top1_cls_error": MetricName("val top-1 cls error", "val top-1 cls err (%)", digits=1),
    "val_gt_known_loc_acc": MetricName("val GT-known loc", "val GT-known loc (%)", digits=1),
    "val_top1_loc_error": MetricName("val top-1 loc error", "val top-1 loc err (%)", digits=1),
    # bench methods' pointing (bench.scoring.pointing_game) and faithfulness (bench.scoring.faithfulness) columns.
    "pointing_game": MetricName("pointing game (%)", "pointing game (%)"),
    "energy_pointing_game": MetricName("energy pointing game (%)", "energy PG (%)"),
    "deletion_auc": MetricName("deletion AUC (lower is better)", "deletion AUC", digits=3),
    "insertion_auc": MetricName("insertion AUC (higher is better)", "insertion AUC", digits=3),
    "average_drop": MetricName("Average Drop (%, lower is better)", "avg drop (%)"),
    "average_increase": MetricName("Average Increase (%, higher is better)", "avg increase (%)"),
    "road_morf": MetricName("ROAD MoRF, change in probability (lower is better)", "ROAD MoRF", digits=3),
    "road_lerf": MetricName("ROAD LeRF, change in probability (nearer 0 is better)", "ROAD LeRF", digits=3),
    # bench methods' timing columns.
    "ms_per_image": MetricName("ms / image", "ms / image"),
    "overhead": MetricName("x forward", "x forward", digits=3),
}


def texts(keys: tuple[str, ...]) -> dict[str, str]:
    """``{key: its text label}`` for ``keys``, in that order."""
    return {key: METRICS[key].text for key in keys}


def columns(keys: tuple[str, ...]) -> dict[str, str]:
    """``{key: its column label}`` for ``keys``, in that order."""
    return {key: METRICS[key].column for key in keys}


# What each output shows, in order.
RUN_METRICS = texts(("top1_cls_error", "top5_cls_error", "top1_loc_error", "top5_loc_error", "gt_known_loc_acc",
                     "mean_iou"))  # a run's summary and the first rows of its page
SWEEP_ROWS = texts(("max_box_acc", "max_box_acc_v2", "pxap"))  # the run page's threshold-free rows
CALIBRATED_ROWS = {"top1_loc_error": METRICS["top1_loc_error_val_tau"].text,  # the run page, tau from val
                   "gt_known_loc_acc": METRICS["gt_known_loc_acc_val_tau"].text}
HISTORY_COLUMNS = columns(("epoch",)) | texts(("loss",)) | columns(
    ("accuracy", "val_top1_cls_error", "val_gt_known_loc_acc", "val_top1_loc_error"))  # the run page's table
STUDY_METRICS = columns(("top1_cls_error", "top1_loc_error", "top5_loc_error", "gt_known_loc_acc", "mean_iou"))
STUDY_SWEEP_COLUMNS = {  # the study table's threshold-free and tau-from-val columns (metrics.json["sweep"] paths)
    "sweep.max_box_acc.value": "MaxBoxAcc (%, oracle tau)",
    "sweep.max_box_acc_v2.value": "MaxBoxAccV2 (%, oracle tau)",
    "sweep.pxap.value": METRICS["pxap"].column,
    "sweep.calibrated.top1_loc_error": "top-1 loc err (%, tau from val)",
}
STUDY_RUN_COLUMNS = {"train_accuracy": METRICS["accuracy"].column, "epoch": METRICS["epoch"].column}
METHOD_COLUMNS = columns(("top1_cls_error", "top1_loc_error", "top5_loc_error", "gt_known_loc_acc", "mean_iou",
                          "max_box_acc", "max_box_acc_v2", "pxap", "val_tau")) | {
    "top1_loc_error_val_tau": "top-1 loc err at it (%)",  # beside the tau from val column in methods.md
} | columns(("pointing_game", "energy_pointing_game", "deletion_auc", "insertion_auc", "average_drop",
             "average_increase", "road_morf", "road_lerf", "ms_per_image", "overhead"))  # methods.csv / methods.md
STUDY_METHOD_COLUMNS = columns(("top1_loc_error", "gt_known_loc_acc", "mean_iou", "max_box_acc", "max_box_acc_v2",
                                "pxap", "top1_loc_error_val_tau", "pointing_game", "energy_pointing_game",
                                "deletion_auc", "insertion_auc", "average_drop", "average_increase", "road_morf",
                                "road_lerf", "ms_per_image", "overhead"))  # methods_table.*: methods.csv's, but tau
