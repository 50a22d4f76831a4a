"""The center baseline as a row of every study table: the floor a method must beat.

The center baseline (:mod:`bench.scoring.center_baseline`) is one fixed,
centred Gaussian map for every image and class: no training, scored by the
same code as every map (``bench methods``' map method ``center``). Its GT-known
loc, mean IoU, MaxBoxAcc, MaxBoxAccV2, PxAP and tau from val therefore depend
only on the dataset split and the feature grid (input size / feature stride),
while its top-1 / top-5 loc error use the run's predicted classes: they are the
classifier's, not the baseline's. Settings (:func:`bench.study.results.setting_keys`)
whose runs share the data, the map grid and the scoring rules (:func:`baseline_identity`)
share one baseline: in a sweep of ``model.lse_r`` or ``train.lr`` every setting
would repeat the same row. Per such group, one finished run (:func:`baseline_runs`:
the reference's lowest seed, of the group's first setting) gets ``center`` in its
``methods/`` folder (:func:`bench.study.methods_table.ensure_methods`, which keeps
the methods it had), and its row of ``methods/methods.csv`` becomes one row of
the study's tables (:func:`center_table_rows`) labelled :data:`CENTER_LABEL`,
with the columns of :data:`TABLE_COLUMNS` filled and the classifier's and
training columns empty; its setting cells say which settings it stands for
(:func:`setting_cells`: ``all`` where it stands for every value of a key). Its
per-image rows (``methods/predictions_center.csv``) are binned by object scale
as the runs' are (:func:`center_scale_rows`). A group whose baseline cannot be
scored (its dataset or checkpoint gone) is left out with one logged line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from bench.config import RunConfig, StudyConfig
from bench.errors import InputError
from bench.run.folder import METHOD_PREDICTIONS, METHODS_DIR
from bench.scoring.map_methods import CENTER
from bench.scoring.protocols import UNSCORED_EVAL_KEYS
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
from bench.study.tables import ALL_VALUES, FixedRow

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
    """The center baseline of the settings that share it: the run it was scored on and its row of ``methods.csv``."""

    settings: tuple[tuple, ...]  # each the values of setting_keys(study); one baseline_identity for all
    run: RunConfig
    row: dict[str, float]  # methods.csv columns (bench.scoring.metric_names.METHOD_COLUMNS) -> value


def baseline_identity(config: RunConfig) -> tuple:
    """What the center baseline's filled cells depend on, for the run ``config``: runs that agree on it score
    the same baseline.

    The dataset (its config and ``data_root``), the map grid (input size; feature grid: backbone and feature
    stride) and the scoring rules (every ``eval`` key but batch and gallery sizes). Nothing the training
    changes: the map is the same fixed Gaussian whatever the network learnt.
    """
    scoring = tuple((field.name, getattr(config.eval, field.name)) for field in dataclasses.fields(config.eval)
                    if field.name not in UNSCORED_EVAL_KEYS)
    model = config.model
    return config.dataset, config.data_root, model.input_size, model.backbone, model.feature_stride, scoring


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


def baseline_groups(study: StudyConfig, finished: list[RunConfig],
                    identity: Callable[[RunConfig], tuple]) -> list[tuple[tuple[tuple, ...], RunConfig]]:
    """``[(settings, run)]``: the settings whose :func:`baseline_runs` share an ``identity``, grouped in order,
    each group with the run of its first setting (the one a baseline row is made on)."""
    groups: dict[tuple, list[tuple[tuple, RunConfig]]] = {}
    for setting, config in baseline_runs(study, finished).items():
        groups.setdefault(identity(config), []).append((setting, config))
    return [(tuple(setting for setting, _ in members), members[0][1]) for members in groups.values()]


def center_baselines(study: StudyConfig, finished: list[RunConfig],
                     log: Callable[[str], None] = print) -> list[CenterBaseline]:
    """The center baselines of the settings, scored where missing: one per group of settings with the same
    :func:`baseline_identity`, on the run :func:`baseline_runs` picks for the group's first setting.

    A group whose run cannot be scored (an :class:`~bench.errors.InputError` or ``OSError``: its dataset or
    checkpoint is gone) is left out, and one line says so and why.
    """
    out = []
    for settings, config in baseline_groups(study, finished, baseline_identity):
        try:
            ensure_methods(config, [CENTER], log)
        except (InputError, OSError) as error:
            log(f"study {study.name}: center baseline row left out for {baseline_label(study, settings)} "
                f"(scored on {config.name}): {error}")
            continue
        out.append(CenterBaseline(settings, config, read_methods_table(config.run_dir)[CENTER]))
    return out


def setting_cells(study: StudyConfig, settings: tuple[tuple, ...]) -> dict[str, object]:
    """Each setting key's cell in the row of a baseline that stands for ``settings``.

    The value where the settings share it; :data:`ALL_VALUES` where they cover every value of the key's
    grid entry; else their values, `` / ``-joined (``0.5 / 8.0``: the other values' runs are not finished).
    """
    grid = dict(study.grid)
    cells = {}
    for index, key in enumerate(setting_keys(study)):
        values = list(dict.fromkeys(setting[index] for setting in settings))
        if len(values) == 1:
            cells[key] = values[0]
        elif len(values) == len(grid[key]) and all(value in values for value in grid[key]):
            cells[key] = ALL_VALUES
        else:
            cells[key] = " / ".join(map(str, values))
    return cells


def baseline_label(study: StudyConfig, settings: tuple[tuple, ...]) -> str:
    """``"lse_r=all"``, ``"variant=parts, input_size=224"``: the settings a baseline stands for, as
    :func:`bench.study.results.setting_label` names one; ``all runs`` when the study has no setting key."""
    if len(settings) == 1:
        return setting_label(study, settings[0], "all runs")
    cells = setting_cells(study, settings)
    return ", ".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in cells.items()) or "all runs"


def fixed_row(study: StudyConfig, settings: tuple[tuple, ...], label: str, row: dict[str, float]) -> FixedRow:
    """A baseline's table row (:class:`bench.study.tables.FixedRow`) from its ``row`` of ``methods.csv``
    columns: :data:`TABLE_COLUMNS` filled, the setting cells those of :func:`setting_cells`."""
    return FixedRow(setting=setting_cells(study, settings), label=label,
                    values={column: row[source] for column, source in TABLE_COLUMNS.items()})


def center_table_rows(study: StudyConfig, baselines: list[CenterBaseline]) -> list[FixedRow]:
    """The table rows of ``baselines`` (:func:`fixed_row`, labelled :data:`CENTER_LABEL`)."""
    return [fixed_row(study, baseline.settings, CENTER_LABEL, baseline.row) for baseline in baselines]


def predictions_result(run: RunConfig, path: Path) -> RunResult:
    """A baseline's per-image rows (a ``predictions_<method>.csv`` at ``path``) as a :class:`RunResult` of the
    run it was scored on (no metrics, CAMs or curves: what binning by object scale reads)."""
    return RunResult(config=run, metrics={}, **read_predictions(path), gt_class_cams=None,
                     box_acc_curve=(np.empty(0), np.empty(0)))


def center_result(baseline: CenterBaseline) -> RunResult:
    """The baseline's per-image rows (``methods/predictions_center.csv``): :func:`predictions_result`."""
    return predictions_result(baseline.run, baseline.run.run_dir / METHODS_DIR / METHOD_PREDICTIONS.format(method=CENTER))


def binned_rows(study: StudyConfig, settings: tuple[tuple, ...], label: str, result: RunResult) -> list[dict]:
    """A baseline's rows by object scale (:func:`bench.study.scale_table.bin_rows`), only
    :data:`SCALE_COLUMNS` kept (the others None); ``setting`` is :func:`baseline_label`."""
    dropped = {key: None for key in SCALE_METRICS if key not in SCALE_COLUMNS}
    return [{**row, **dropped} for row in bin_rows(baseline_label(study, settings), label, [result])]


def center_scale_rows(study: StudyConfig, baselines: list[CenterBaseline]) -> list[dict]:
    """Each baseline's rows by object scale (:func:`binned_rows`), labelled :data:`CENTER_LABEL`."""
    return [row for baseline in baselines
            for row in binned_rows(study, baseline.settings, CENTER_LABEL, center_result(baseline))]
