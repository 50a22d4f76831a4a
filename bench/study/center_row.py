"""The center baseline as a row of every study table: the floor a method must beat.

The center baseline (:mod:`bench.scoring.center_baseline`) is one fixed,
centred Gaussian map for every image and class: no training, scored by the
same code as every map (``bench methods``' map method ``center``). Its GT-known
loc, mean IoU, MaxBoxAcc, MaxBoxAccV2, PxAP and tau from val therefore depend
only on the dataset split and the feature grid (input size / feature stride),
while its top-1 / top-5 loc error use the run's predicted classes: they are the
classifier's, not the baseline's. So, per setting (:func:`bench.study.results.setting_keys`),
one finished run (:func:`baseline_runs`: the reference's lowest seed) gets
``center`` in its ``methods/`` folder (:func:`bench.study.methods_table.ensure_methods`,
which keeps the methods it had), and its row of ``methods/methods.csv`` becomes
a row of the study's tables (:func:`center_table_rows`) labelled
:data:`CENTER_LABEL`, with the columns of :data:`TABLE_COLUMNS` filled and the
classifier's and training columns empty. Its per-image rows
(``methods/predictions_center.csv``) are binned by object scale as the runs'
are (:func:`center_scale_rows`). A setting whose baseline cannot be scored
(its dataset or checkpoint gone) is left out with one logged line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from bench.config import RunConfig, StudyConfig
from bench.errors import InputError
from bench.run.folder import METHOD_PREDICTIONS, METHODS_DIR
from bench.scoring.map_methods import CENTER
from bench.study.methods_table import ensure_methods, read_methods_table
from bench.study.results import (
    RunResult,
    config_value,
    ordered_values,
    read_predictions,
    setting_keys,
    setting_label,
)
from bench.study.scale_table import SCALE_METRICS, bin_rows
from bench.study.tables import FixedRow

CENTER_LABEL = "center baseline"  # its cell in the compared key's column
# The table columns that do not depend on the classifier -> their methods.csv column. The others (cls error,
# top-1 / top-5 loc error, top-1 loc error at the val tau, train acc, epoch) are empty in its row.
TABLE_COLUMNS = {
    "gt_known_loc_acc": "gt_known_loc_acc",
    "mean_iou": "mean_iou",
    "sweep.max_box_acc.value": "max_box_acc",
    "sweep.max_box_acc_v2.value": "max_box_acc_v2",
    "sweep.pxap.value": "pxap",
}
SCALE_COLUMNS = ("gt_known_loc_acc", "mean_iou")  # its per-bin rows in by_object_scale.md
TABLE_NOTE = ("The center baseline row is one fixed centred Gaussian map for every image (no training), scored by "
              "the same code as the runs; its '-' cells are the classifier's (classification, top-1 / top-5 loc "
              "error, which use the predicted class) and training's, not the baseline's.")


@dataclass(frozen=True)
class CenterBaseline:
    """The center baseline of one setting: the run it was scored on and its row of ``methods.csv``."""

    setting: tuple  # the values of setting_keys(study)
    run: RunConfig
    row: dict[str, float]  # methods.csv columns (bench.scoring.metric_names.METHOD_COLUMNS) -> value


def baseline_runs(study: StudyConfig, finished: list[RunConfig]) -> dict[tuple, RunConfig]:
    """Per setting (first-seen order), the finished run that scores its center baseline.

    The reference's lowest seed; a setting without a finished reference run takes the lowest seed of its
    first value in :func:`bench.study.results.ordered_values` order.
    """
    keys = setting_keys(study)
    groups: dict[tuple, list[RunConfig]] = {}
    for config in finished:
        groups.setdefault(tuple(config_value(config, key) for key in keys), []).append(config)
    chosen = {}
    for setting, configs in groups.items():
        order = ordered_values(study, {config_value(config, study.compare_key) for config in configs})
        chosen[setting] = min(configs, key=lambda c: (order.index(config_value(c, study.compare_key)), c.seed))
    return chosen


def center_baselines(study: StudyConfig, finished: list[RunConfig],
                     log: Callable[[str], None] = print) -> list[CenterBaseline]:
    """Each setting's center baseline, scored where missing (:func:`baseline_runs`; one run per setting).

    A setting whose run cannot be scored (an :class:`~bench.errors.InputError` or ``OSError``: its dataset
    or checkpoint is gone) is left out, and one line says so and why.
    """
    out = []
    for setting, config in baseline_runs(study, finished).items():
        try:
            ensure_methods(config, [CENTER], log)
        except (InputError, OSError) as error:
            log(f"study {study.name}: center baseline row left out for {setting_label(study, setting, 'all runs')} "
                f"(scored on {config.name}): {error}")
            continue
        out.append(CenterBaseline(setting, config, read_methods_table(config.run_dir)[CENTER]))
    return out


def center_table_rows(study: StudyConfig, baselines: list[CenterBaseline]) -> list[FixedRow]:
    """The table rows of ``baselines`` (:class:`bench.study.tables.FixedRow`): :data:`TABLE_COLUMNS` filled."""
    keys = setting_keys(study)
    return [FixedRow(setting=dict(zip(keys, baseline.setting)), label=CENTER_LABEL,
                     values={column: baseline.row[source] for column, source in TABLE_COLUMNS.items()})
            for baseline in baselines]


def center_result(baseline: CenterBaseline) -> RunResult:
    """The baseline's per-image rows (``methods/predictions_center.csv``) as a :class:`RunResult` of its run
    (no metrics, CAMs or curves: what binning by object scale reads)."""
    path = baseline.run.run_dir / METHODS_DIR / METHOD_PREDICTIONS.format(method=CENTER)
    return RunResult(config=baseline.run, metrics={}, **read_predictions(path), gt_class_cams=None,
                     box_acc_curve=(np.empty(0), np.empty(0)))


def center_scale_rows(study: StudyConfig, baselines: list[CenterBaseline]) -> list[dict]:
    """Each baseline's rows by object scale (:func:`bench.study.scale_table.bin_rows`), only
    :data:`SCALE_COLUMNS` kept (the others None)."""
    dropped = {key: None for key in SCALE_METRICS if key not in SCALE_COLUMNS}
    return [{**row, **dropped} for baseline in baselines
            for row in bin_rows(setting_label(study, baseline.setting, "all runs"), CENTER_LABEL,
                                [center_result(baseline)])]
