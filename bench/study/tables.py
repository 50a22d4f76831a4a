"""The study's tables: ``table.md``, ``table.tex`` (booktabs) and ``table.csv``, from finished runs.

The runs are read into a pandas table with one row per run (grid values, seed,
each column of :data:`COLUMNS`); grouped by every grid key but ``seed``, it
gives one row per setting with each column's mean and std (ddof 1) over seeds.
The fixed-tau cells are recomputed from each run's ``predictions.csv`` rows, so
they can be audited from the run folders. Rows that are no mean over seeds
(:class:`FixedRow`: the center and few-shot baselines, :mod:`bench.study.center_row`)
follow the last row of the settings they stand for, a cell they lack shown as "-". The CAM paper's ILSVRC numbers follow in a block
labelled as another dataset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.atomic_files import atomic_path, write_text
from bench.config import StudyConfig
from bench.scoring.metric_names import STUDY_METRICS, STUDY_RUN_COLUMNS, STUDY_SWEEP_COLUMNS
from bench.study.results import FINAL, RunResult, config_value

TABLE_METRICS = STUDY_METRICS  # fixed-tau columns, recomputed from predictions.csv
# Threshold-free and calibrated columns (bench.scoring.threshold_free_metrics), from metrics.json["sweep"]; table only.
SWEEP_METRICS = STUDY_SWEEP_COLUMNS
# Per-run columns that say where a row stands in training: did it converge, which epoch was scored.
RUN_COLUMNS = STUDY_RUN_COLUMNS
# Every column a table may show, in order; one that some run lacks is left out rather than shown half-empty.
COLUMNS = {**RUN_COLUMNS, **TABLE_METRICS, **SWEEP_METRICS}
# The CAM paper, ILSVRC 2014 val (Zhou et al., CVPR 2016, Tables 1-2): another dataset, shown for reference only.
PAPER_REFERENCE = (
    ("GoogLeNet-GAP", 35.0, 56.40, 43.00),
    ("GoogLeNet-GMP", 35.6, 57.78, 45.26),
)


def run_metric(result: RunResult, metric: str) -> float | None:
    """One run's value of a table column, recomputed from its per-image files where possible.

    The fixed-tau columns are means of ``predictions.csv`` rows and MaxBoxAcc
    is the maximum of ``box_acc_curves.csv``, so those cells can be audited
    from the run folder; the other threshold-free columns (MaxBoxAccV2, PxAP,
    tau from val) need the maps and come from ``metrics.json``.
    """
    if metric in TABLE_METRICS:
        return float(result.per_image[metric].mean())
    if metric == "train_accuracy":
        return result.train_accuracy
    if metric == "epoch":  # the scored epoch; a column only where it varies by design (the val-selected one)
        return float(result.epoch) if result.point != FINAL else None
    if metric == "sweep.max_box_acc.value":
        return float(result.box_acc_curve[1].max())
    return metric_value(result.metrics, metric)


def metric_value(metrics: dict, key: str) -> float | None:
    """``metrics[a][b]...`` for a dotted key; None where the run did not compute it (e.g. no masks: no PxAP)."""
    value = metrics
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return float(value)


ALL_VALUES = "all"  # a FixedRow's cell in a setting key's column when it stands for every value of that key
JOINED = " / "  # between the values of a FixedRow's cell that stands for some of its key's values


@dataclass(frozen=True)
class FixedRow:
    """A row of a study table that is no mean over seeds (a baseline), placed after the rows it stands for.

    ``setting``: its cell in each setting key's column: a value, :data:`ALL_VALUES`, or values
    :data:`JOINED`; ``label``: its cell in the compared key's column (or in the
    seeds column when the compared key is no grid key); ``values``: its value of each column of
    :data:`COLUMNS` it has. Its other cells, std and seeds are empty ("-"; NaN in ``table.csv``).
    """

    setting: dict[str, object]
    label: str
    values: dict[str, float]


def _row_keys(study: StudyConfig) -> list[str]:
    return [key for key, _ in study.grid if key != "seed"]


def run_frame(study: StudyConfig, results: list[RunResult]) -> pd.DataFrame:
    """One row per run: its grid values and seed, then each of :data:`COLUMNS` (NaN where the run lacks it)."""
    keys = dict.fromkeys([*(key for key, _ in study.grid), "seed"])  # seed once, in its grid place if it has one
    return pd.DataFrame([{**{key: config_value(result.config, key) for key in keys},
                          **{column: run_metric(result, column) for column in COLUMNS}} for result in results])


def table_rows(study: StudyConfig, results: list[RunResult]) -> list[dict]:
    """One row per setting (every grid key but ``seed``, first-seen order), as ``table.csv`` holds it.

    A row has the grid values, ``seeds`` (its number of runs), then ``<column>_mean`` and ``<column>_std``
    (ddof 1; NaN from one seed) for each of :data:`COLUMNS` that every run has.
    """
    runs = run_frame(study, results)
    keys = _row_keys(study)
    columns = [column for column in COLUMNS if runs[column].notna().all()]
    groups = runs.groupby(keys or (lambda index: "all runs"), sort=False)  # one group when only the seed varies
    table = groups[columns].agg(["mean", "std"])  # pandas' std is the sample std (ddof 1)
    table.columns = [f"{column}_{statistic}" for column, statistic in table.columns]
    table.insert(0, "seeds", groups.size())
    return table.reset_index(drop=not keys).to_dict("records")


def stands_for(row: FixedRow, setting: dict) -> bool:
    """Whether ``row``'s setting cells cover the setting row ``setting`` (a :func:`table_rows` row)."""
    def covers(cell, value) -> bool:
        return cell == value or cell == ALL_VALUES or (isinstance(cell, str) and str(value) in cell.split(JOINED))
    return all(covers(cell, setting.get(key)) for key, cell in row.setting.items())


def with_fixed_rows(study: StudyConfig, rows: list[dict], fixed: list[FixedRow]) -> list[dict]:
    """``rows`` (:func:`table_rows`) with each of ``fixed`` laid out as they are (same keys, same order) after the
    last row it :func:`stands_for`, in ``fixed``'s order; at the end where that row is not the last of the
    settings it stands for (a row standing for ``all`` of a key that varies in the outer loop)."""
    after: dict[int, list[dict]] = {}
    for row in fixed:
        covered = [index for index, setting in enumerate(rows) if stands_for(row, setting)]
        spans = covered and covered == list(range(covered[0], covered[-1] + 1))
        after.setdefault(covered[-1] if spans else len(rows) - 1, []).append(fixed_cells(study, rows, row))
    return [cells for index, setting in enumerate(rows) for cells in (setting, *after.get(index, ()))]


def fixed_cells(study: StudyConfig, rows: list[dict], row: FixedRow) -> dict:
    """``row``'s cells under the columns of ``rows`` (:func:`table_rows`)."""
    label_key = study.compare_key if study.compare_key in rows[0] else "seeds"
    cells = {}
    for key in rows[0]:
        if key == label_key:
            cells[key] = row.label
        elif key == "seeds":
            cells[key] = "-"
        elif key.endswith("_mean"):
            cells[key] = row.values.get(key.removesuffix("_mean"), math.nan)
        elif key.endswith("_std"):
            cells[key] = math.nan
        else:
            cells[key] = row.setting[key]
    return cells


def _format(metric: str, mean: float, std: float, separator: str) -> str:
    """``mean ± std``; the mean alone where one seed gives no spread (std NaN); "-" for no value (mean NaN)."""
    digits = 3 if metric == "mean_iou" else 0 if metric == "epoch" else 1
    if math.isnan(mean):
        return "-"
    if math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f}{separator}{std:.{digits}f}"


def table_cells(study: StudyConfig, rows: list[dict], separator: str) -> tuple[list[str], list[list[str]]]:
    """Header and body as text: the grid values (short key names), the seed count, ``mean<separator>std``."""
    keys = _row_keys(study)
    columns = {key: label for key, label in COLUMNS.items() if f"{key}_mean" in rows[0]}
    header = [key.rsplit(".", 1)[-1] for key in keys] + ["seeds", *columns.values()]
    body = [[str(row[key]) for key in keys] + [str(row["seeds"])] +
            [_format(column, row[f"{column}_mean"], row[f"{column}_std"], separator) for column in columns]
            for row in rows]
    return header, body


def markdown_table(study: StudyConfig, rows: list[dict], protocol: str, title: str = "", note: str = "") -> str:
    """``table.md``'s table of one scoring point, then the paper's block (by hand: pandas' needs ``tabulate``).

    ``note``: sentences added to the table's note (what the fixed rows are).
    """
    header, body = table_cells(study, rows, " ± ")
    lines = [f"## {title}", ""] if title else []
    lines += [f"Study `{study.name}`: mean ± std over seeds. Columns without a tau note: {protocol}. "
              "Oracle columns take the best tau on the test split itself (wsolevaluation's protocol); "
              "'tau from val' picks tau on the val split. 'train acc' is the training accuracy in the scored "
              "epoch (augmented batches)." + (f" {note}" if note else ""), "",
              "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    lines += ["", "Reference, **another dataset** (ILSVRC 2014 val, GoogLeNet, the CAM paper's Tables 1-2; "
              "not comparable with the rows above):", "",
              "| method | top-1 cls err (%) | top-1 loc err (%) | top-5 loc err (%) |", "|---|---|---|---|"]
    lines += [f"| {name} | {cls:.1f} | {top1:.2f} | {top5:.2f} |" for name, cls, top1, top5 in PAPER_REFERENCE]
    return "\n".join(lines) + "\n"


def latex_table(study: StudyConfig, rows: list[dict], protocol: str) -> str:
    """``table.tex``: a booktabs tabular (pandas' Styler escapes the text), the paper's block above the last rule."""
    header, body = table_cells(study, rows, r" $\pm$ ")
    left = len(_row_keys(study)) + 1  # the grid values and the seed count
    styler = pd.DataFrame(body, columns=header).style.hide(axis="index")
    styler = styler.format(escape="latex-math").format_index(escape="latex", axis="columns")
    tabular = styler.to_latex(hrules=True, column_format="l" * left + "r" * (len(header) - left))
    reference = [r"\midrule", r"\multicolumn{" + str(len(header)) + r"}{l}{\emph{Reference, another dataset: "
                 r"ILSVRC 2014 val, CAM paper (top-1 cls / top-1 loc / top-5 loc err, \%)}} \\"]
    reference += [r"\multicolumn{" + str(left) + "}{l}{" + name + "} & " + f"{cls:.1f} & {top1:.2f} & {top5:.2f}"
                  + " & " * (len(header) - left - 3) + r" \\" for name, cls, top1, top5 in PAPER_REFERENCE]
    comment = f"% wsol-bench study {study.name}: mean $\\pm$ std over seeds; {protocol}\n"
    return comment + tabular.replace("\\bottomrule", "\n".join(reference) + "\n\\bottomrule")


def write_csv(path: Path, rows: list[dict]) -> None:
    """``rows`` (dicts with the same keys) as a CSV file with a header line, written atomically."""
    with atomic_path(path) as temporary:
        pd.DataFrame(rows).to_csv(temporary, index=False, encoding="utf-8")


def write_tables(study: StudyConfig, results: list[RunResult], stem: Path, title: str = "",
                 fixed: list[FixedRow] = (), note: str = "") -> str:
    """``<stem>.tex`` and ``<stem>.csv`` of ``results`` and then the ``fixed`` rows; returns the markdown table
    (``table.md`` gathers them), ``note`` added to its note."""
    protocols = sorted({result.metrics.get("protocol", "") for result in results})
    protocol = "; ".join(protocols)
    rows = with_fixed_rows(study, table_rows(study, results), list(fixed))
    write_text(stem.parent / f"{stem.name}.tex", latex_table(study, rows, protocol))
    write_csv(stem.parent / f"{stem.name}.csv", rows)
    return markdown_table(study, rows, protocol, title, note)
