"""``<study>/index.html``: the study's tables, paired comparisons with verdicts, figures, and a side-by-side browser.

The browser shows each test image under every value of the study's compared key
(``study.compare_key``: every pooling, or every WSOL method) of one setting and seed
(a column per run), the ground-truth class's CAM and box in each (what GT-known
loc scores), and filters the images by where the columns disagree ("GAP
localizes, GMP does not" and the reverse). Its thumbnails are the run pages' own (``runs/<run>/page/img/``), so a
run's page is rendered first when it has none.

The tables and comparisons are read back from the files :func:`bench.study.runner.write_report`
wrote (``table*.csv``, ``comparison*.csv``), so the page shows exactly their numbers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable
from urllib.parse import quote

import pandas as pd

from bench.config import RunConfig, StudyConfig
from bench.data.samples import DatasetFormatError, Sample
from bench.data.wsol_layout import read_class_names
from bench.html.render import copy_assets, write_page
from bench.html.run_page import IMAGE_DIR, evaluated_samples, read_predictions, write_run_page
from bench.html.thumbnails import MAX_IMAGES, page_sample, thumbnail_name
from bench.run.folder import METRICS_FILE, PAGE_DIR, PAGE_FILE, PREDICTIONS_FILE
from bench.study.figures import gallery_name
from bench.study.results import (
    FINAL,
    POINT_TITLES,
    POINTS,
    axis_name,
    config_value,
    ordered_values,
    setting_keys,
    setting_label,
    value_label,
)
from bench.study.statistics import COMPARED_METRICS, HEADLINE_METRICS
from bench.study.tables import TABLE_METRICS, table_cells


def figure_captions(study: StudyConfig) -> dict[str, str]:
    """``{file: caption}`` of the figures :mod:`bench.study.figures` writes; the page shows those present, in order."""
    axis = axis_name(study)
    return {
        gallery_name(study): f"The same test images under each {axis}: GT-class CAM, its box (red), ground truth "
                             "(green).",
        "iou_hist.png": f"IoU of the GT-class box with the ground truth, per {axis}.",
        "boxacc_vs_tau.png": "Localization accuracy against the CAM threshold tau.",
        "cam_area.png": "Predicted box area / ground-truth box area (below 1: the box covers a part).",
        "lse_sweep.png": "GT-known loc and mean IoU along the LSE sharpness r.",
        "learning_curves.png": "Val GT-known loc and val top-1 cls error per epoch.",
        "search.png": f"The search: each trial's val score against each searched parameter, one colour per {axis}; "
                      "ringed, the trial each chose (search.md, trials.csv).",
    }


def _suffix(point: str) -> str:
    return "" if point == FINAL else f"_{point}"


def study_tables(study: StudyConfig, folder: Path) -> list[dict]:
    """Each scoring point's ``table<suffix>.csv`` as ``{"title", "header", "rows"}`` (cells as ``table.md``'s)."""
    tables = []
    for point in POINTS:
        path = folder / f"table{_suffix(point)}.csv"
        if path.is_file():
            rows = pd.read_csv(path, keep_default_na=False, na_values=[""], encoding="utf-8").to_dict("records")
            header, body = table_cells(study, rows, " ± ")
            tables.append({"title": POINT_TITLES[point], "header": header, "rows": body})
    return tables


def study_comparisons(folder: Path) -> list[dict]:
    """Each point's ``comparison<suffix>.csv``: ``{"title", "verdicts", "rows"}``, the headline metrics' first."""
    sections = []
    for point in POINTS:
        path = folder / f"comparison{_suffix(point)}.csv"
        if not path.is_file():
            continue
        rows = pd.read_csv(path, keep_default_na=False, encoding="utf-8").to_dict("records")
        for row in rows:
            digits = 3 if row["metric"] == "mean_iou" else 2
            row.update(label=COMPARED_METRICS.get(row["metric"], row["metric"]), versus=value_label(row["versus"]),
                       cells=[f"{row[key]:+.{digits}f}" for key in ("difference", "low", "high")])
        verdicts = [row for metric in HEADLINE_METRICS for row in rows if row["metric"] == metric]
        sections.append({"title": POINT_TITLES[point], "verdicts": verdicts, "rows": rows})
    return sections


def _column_keys(study: StudyConfig) -> list[str]:
    """Grid keys that vary between the columns of one browser table: not a setting key, not the seed."""
    settings = set(setting_keys(study))
    return [key for key, _ in study.grid if key not in settings and key != "seed"]


def _column_label(study: StudyConfig, config: RunConfig) -> str:
    parts = [value_label(config_value(config, key)) if key == study.compare_key
             else f"{key.rsplit('.', 1)[-1]}={config_value(config, key)}" for key in _column_keys(study)]
    return " · ".join(parts) or config.name


def _groups(study: StudyConfig, runs: list[RunConfig]) -> dict[tuple, list[RunConfig]]:
    """Runs by (setting values, seed), first-seen order; each group's runs in the compared values' order."""
    groups: dict[tuple, list[RunConfig]] = {}
    for config in runs:
        key = (tuple(config_value(config, k) for k in setting_keys(study)), config.seed)
        groups.setdefault(key, []).append(config)
    order = ordered_values(study, {config_value(config, study.compare_key) for config in runs})
    return {key: sorted(members, key=lambda config: order.index(config_value(config, study.compare_key)))
            for key, members in groups.items()}


def _href(folder: Path, target: Path) -> str:
    """``target`` relative to ``folder`` as a URL: forward slashes, each part percent-quoted.

    Run names may hold ``#``, ``?`` or ``%``, which a browser would read as a
    fragment, a query or an escape; HTML-escaping alone does not protect them.
    """
    return quote(Path(os.path.relpath(target, folder)).as_posix(), safe="/")


def browser_group(study: StudyConfig, folder: Path, key: tuple, runs: list[RunConfig]) -> dict | str:
    """One table of the side-by-side browser, or a sentence saying why it cannot be shown."""
    predictions = [read_predictions(config.run_dir / PREDICTIONS_FILE) for config in runs]
    ids = [row["image_id"] for row in predictions[0]]
    for config, rows in zip(runs[1:], predictions[1:]):
        if [row["image_id"] for row in rows] != ids:
            return f"runs {runs[0].name} and {config.name} were evaluated on different images"
    shown = page_sample(len(ids)).tolist()
    first = runs[0].run_dir / PAGE_DIR / IMAGE_DIR
    if not all((config.run_dir / PAGE_DIR / IMAGE_DIR / thumbnail_name(shown[0], "top1")).is_file()
               for config in runs):
        return f"{setting_label(study, key[0], 'all runs')}, seed {key[1]}: a run page has no thumbnails"
    class_names = read_class_names(runs[0].run_dir)
    columns = [{"label": _column_label(study, config), "href": _href(folder, config.run_dir / PAGE_FILE)}
               for config in runs]
    rows = []
    for row in shown:
        cells = []
        for config, column, table in zip(runs, columns, predictions):
            values = table[row]
            kind = "top1" if values["top1_correct"] == "1" else "gt"
            cells.append({"column": column["label"], "loc": int(values["gt_known_loc"]),
                          "iou": values["gt_class_iou"], "src": _href(folder, config.run_dir / PAGE_DIR / IMAGE_DIR
                                                                        / thumbnail_name(row, kind))})
        rows.append({"row": row, "image_id": ids[row], "label_name": class_names[int(predictions[0][row]["label"])],
                     "image": _href(folder, first / thumbnail_name(row, "image")), "cells": cells,
                     "loc": json.dumps({cell["column"]: cell["loc"] for cell in cells}, separators=(",", ":"))})
    return {"label": f"{setting_label(study, key[0], 'all runs')}, seed {key[1]}", "columns": columns, "rows": rows,
            "sampled": len(shown) < len(ids), "num_images": len(ids)}


def _run_summary(folder: Path, config: RunConfig) -> dict:
    metrics = json.loads((config.run_dir / METRICS_FILE).read_text(encoding="utf-8"))
    return {"name": config.name, "href": _href(folder, config.run_dir / PAGE_FILE),
            "cells": [f"{metrics[key]:.3f}" if key == "mean_iou" else f"{metrics[key]:.1f}" for key in TABLE_METRICS]}


def _write_missing_run_pages(runs: list[RunConfig], log: Callable[[str], None]) -> None:
    """Render the page of each run that has none, reading each dataset once for all the runs that share it."""
    samples: dict[tuple, list[Sample] | None] = {}
    for config in runs:
        if (config.run_dir / PAGE_FILE).is_file():
            continue
        key = (config.dataset, config.data_root, config.eval.split)
        if key not in samples:
            try:
                samples[key] = evaluated_samples(config)
            except (OSError, DatasetFormatError):
                samples[key] = None  # write_run_page tries again and says why on the page
        write_run_page(config, samples[key], log=log)


def write_study_page(study: StudyConfig, runs: list[RunConfig], log: Callable[[str], None] = print) -> Path:
    """``<study>/index.html`` from the report files and the finished ``runs``; renders missing run pages first."""
    folder = study.study_dir
    _write_missing_run_pages(runs, log)
    groups, notes = [], []
    for key, members in _groups(study, runs).items():
        group = browser_group(study, folder, key, members)
        (notes if isinstance(group, str) else groups).append(group)
    filters = list(dict.fromkeys(column["label"] for group in groups for column in group["columns"]))
    copy_assets(folder / PAGE_DIR)
    path = write_page(
        folder / PAGE_FILE, "study.html", title=f"study {study.name}", study=study,
        grid=[(key, ", ".join(str(value) for value in values)) for key, values in study.grid],
        tables=study_tables(study, folder), comparisons=study_comparisons(folder),
        confidence=f"{100 * study.confidence:g}%", reference=value_label(study.reference), axis=axis_name(study),
        figures=[(name, caption) for name, caption in figure_captions(study).items() if (folder / name).is_file()],
        runs=[_run_summary(folder, config) for config in runs], metric_labels=list(TABLE_METRICS.values()),
        groups=groups, browser_notes=notes, columns=filters, cap=MAX_IMAGES, assets=PAGE_DIR,
    )
    log(f"study page: {path}")
    return path
