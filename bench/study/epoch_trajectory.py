"""The comparison along training: ``REFERENCE - X`` at every epoch, against that epoch's classification error.

Every run with ``train.validate`` scores its val split after each epoch and keeps
each image's outcome (``val_by_epoch.csv``). Runs of two compared values with the
same seed saw the same val images, so at every epoch the outcomes are paired as
the final table's are: :func:`bench.study.statistics.paired_bootstrap` over val
images and seeds. The study writes ``by_epoch.csv`` (one row per setting,
compared value, epoch and metric) and ``by_epoch.png``; :func:`main` draws the
rows of several studies in one figure (``make docs-img``), which is how the docs
set two datasets of different difficulty side by side.

The x axis is the epoch's classification error (top-1, val, the mean of the two
compared values'), so that studies whose classifiers converge to different
errors can be read on one axis: does the difference follow the classification
regime, or the training stage?
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bench.atomic_files import write_csv_rows  # noqa: E402
from bench.config import StudyConfig  # noqa: E402
from bench.run.figures import save_figure  # noqa: E402
from bench.run.folder import VAL_BY_EPOCH_COLUMNS, VAL_BY_EPOCH_FILE  # noqa: E402
from bench.study.results import RunResult, by_setting, setting_label, value_label  # noqa: E402
from bench.study.statistics import paired_bootstrap  # noqa: E402

# metric -> (val_by_epoch column, how a per-image outcome becomes the metric's per-image value, in %)
EPOCH_METRICS = {
    "gt_known_loc_acc": ("gt_known_loc", lambda hit: 100.0 * hit),
    "top1_loc_error": ("top1_loc", lambda hit: 100.0 * (1 - hit)),
    "top1_cls_error": ("top1_correct", lambda hit: 100.0 * (1 - hit)),
}
METRIC_LABELS = {"gt_known_loc_acc": "GT-known loc (%)", "top1_loc_error": "top-1 loc error (%)",
                 "top1_cls_error": "top-1 cls error (%)"}
BY_EPOCH_COLUMNS = ("setting", "reference", "versus", "epoch", "seeds", "images", "metric", "reference_mean",
                    "versus_mean", "difference", "low", "high", "cls_error")
BY_EPOCH_FILE, BY_EPOCH_FIGURE = "by_epoch.csv", "by_epoch.png"


def read_val_by_epoch(run_dir: Path) -> dict[int, dict[str, np.ndarray]]:
    """``val_by_epoch.csv`` as ``{epoch: {"image_ids": (N,) str, column: (N,) float}}``, images sorted by id.

    Empty if the run has no such file (a run from before it existed, or ``train.validate: false``).
    """
    path = Path(run_dir) / VAL_BY_EPOCH_FILE
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    epochs: dict[int, dict[str, np.ndarray]] = {}
    for epoch in sorted({int(row["epoch"]) for row in rows}):
        chosen = sorted((row for row in rows if int(row["epoch"]) == epoch), key=lambda row: row["image_id"])
        epochs[epoch] = {"image_ids": np.array([row["image_id"] for row in chosen]),
                         **{column: np.array([float(row[column]) for row in chosen])
                            for column in VAL_BY_EPOCH_COLUMNS[2:]}}
    return epochs


def _paired_seeds(reference: list[RunResult], versus: list[RunResult]) -> list[tuple[dict, dict]]:
    """The per-epoch outcomes of the seeds both values ran, in seed order (runs without the file left out)."""
    by_seed = {result.config.seed: read_val_by_epoch(result.config.run_dir) for result in reference}
    pairs = []
    for result in sorted(versus, key=lambda r: r.config.seed):
        ours, theirs = by_seed.get(result.config.seed), read_val_by_epoch(result.config.run_dir)
        if ours and theirs:
            pairs.append((ours, theirs))
    return pairs


def epoch_differences(study: StudyConfig, results: list[RunResult]) -> list[dict]:
    """One row per setting, compared value, epoch and metric of :data:`EPOCH_METRICS` (columns BY_EPOCH_COLUMNS).

    ``difference`` is REFERENCE - X (points), ``low`` / ``high`` its paired
    bootstrap interval over val images and seeds; ``cls_error`` is the mean of
    both values' top-1 cls error at that epoch. An epoch counts only where
    every paired seed has it, on the same images.
    """
    rows = []
    for setting, by_value in by_setting(study, results).items():
        if study.reference not in by_value:
            continue
        for value, runs in by_value.items():
            if value == study.reference:
                continue
            pairs = _paired_seeds(by_value[study.reference], runs)
            epochs = sorted(set.intersection(*(set(a) & set(b) for a, b in pairs))) if pairs else []
            for epoch in epochs:
                if any(not np.array_equal(a[epoch]["image_ids"], b[epoch]["image_ids"]) for a, b in pairs):
                    continue  # not the same val images: nothing to pair
                values = {metric: [np.stack([convert(side[epoch][column]) for side in (a, b)])
                                   for a, b in pairs] for metric, (column, convert) in EPOCH_METRICS.items()}
                cls_error = float(np.mean([both.mean() for both in values["top1_cls_error"]]))
                for metric, per_seed in values.items():
                    reference_values = np.stack([both[0] for both in per_seed])  # (S, N)
                    versus_values = np.stack([both[1] for both in per_seed])
                    difference, low, high = paired_bootstrap(reference_values, versus_values, study.bootstrap,
                                                             study.confidence)
                    rows.append({"setting": setting_label(study, setting, "all"),
                                 "reference": value_label(study.reference), "versus": value_label(value),
                                 "epoch": epoch, "seeds": len(pairs), "images": reference_values.shape[1],
                                 "metric": metric, "reference_mean": float(reference_values.mean()),
                                 "versus_mean": float(versus_values.mean()), "difference": difference,
                                 "low": low, "high": high, "cls_error": cls_error})
    return rows


def write_epoch_differences(rows: list[dict], path: Path) -> None:
    """``by_epoch.csv``, written atomically (numbers to 4 decimals)."""
    write_csv_rows(path, BY_EPOCH_COLUMNS, ([f"{row[key]:.4f}" if isinstance(row[key], float) else row[key]
                                             for key in BY_EPOCH_COLUMNS] for row in rows))


def read_epoch_differences(path: Path) -> list[dict]:
    """The rows of a ``by_epoch.csv`` (numbers as numbers)."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    numeric = set(BY_EPOCH_COLUMNS) - {"setting", "reference", "versus", "metric"}
    return [{key: (float(value) if key in numeric else value) for key, value in row.items()} for row in rows]


def draw_epoch_differences(series: dict[str, list[dict]], path: Path, title: str) -> Path:
    """``REFERENCE - X`` (GT-known loc, top-1 loc error) against the epoch's cls error, one line per series.

    ``series``: label -> rows of :func:`epoch_differences` for one (study, setting, compared value). Each
    point is an epoch (numbered), its bar the 95 % interval; the last epoch is ringed, as the final table's.
    """
    figure, axes = plt.subplots(1, 2, figsize=(11.5, 4.4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, metric in zip(axes, ("gt_known_loc_acc", "top1_loc_error")):
        for index, (label, rows) in enumerate(series.items()):
            chosen = sorted((row for row in rows if row["metric"] == metric), key=lambda row: row["epoch"])
            if not chosen:
                continue
            x = np.array([row["cls_error"] for row in chosen])
            y = np.array([row["difference"] for row in chosen])
            spread = np.array([[row["difference"] - row["low"] for row in chosen],
                               [row["high"] - row["difference"] for row in chosen]])
            colour = colours[index % len(colours)]
            axis.errorbar(x, y, yerr=spread, color=colour, marker="o", markersize=4, capsize=2, linewidth=1.2,
                          label=label)
            axis.plot(x[-1:], y[-1:], marker="o", markersize=11, markerfacecolor="none", color=colour)
            for row in (chosen[0], chosen[len(chosen) // 2], chosen[-1]):
                axis.annotate(f"ep {int(row['epoch'])}", (row["cls_error"], row["difference"]),
                              textcoords="offset points", xytext=(4, 5), fontsize=7, color=colour)
        axis.axhline(0.0, color="0.4", linewidth=0.8, linestyle="--")
        reference, versus = _names(series)
        axis.set_xlabel("top-1 cls error at that epoch, val (%)")
        axis.set_ylabel(f"{reference} - {versus}, {METRIC_LABELS[metric]}")
        better = "better" if metric == "gt_known_loc_acc" else "worse"
        axis.set_title(f"{METRIC_LABELS[metric]}: above 0 = {reference} {better}", fontsize=10)
        axis.invert_xaxis()  # training runs left to right: the error falls
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    save_figure(figure, path)
    return path


def _names(series: dict[str, list[dict]]) -> tuple[str, str]:
    first = next((rows[0] for rows in series.values() if rows), {"reference": "REFERENCE", "versus": "X"})
    return first["reference"], first["versus"]


def study_series(rows: list[dict], prefix: str = "") -> dict[str, list[dict]]:
    """Rows of one study grouped into figure series, one per (setting, compared value), labelled with their size."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["setting"], row["reference"], row["versus"]), []).append(row)
    series = {}
    for (setting, reference, versus), chosen in groups.items():
        where = f" ({setting})" if setting != "all" else ""
        size = f"{int(chosen[0]['seeds'])} seeds x {int(chosen[0]['images'])} val images"
        series[f"{prefix}{reference} - {versus}{where}, {size}"] = chosen
    return series


def main(argv: list[str] | None = None) -> int:
    """Draw the ``by_epoch.csv`` of several studies in one figure: ``STUDY_DIR[=LABEL] ... --out PNG``."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.study.epoch_trajectory",
        description="One figure of REFERENCE - X along training, against the epoch's cls error, for several "
                    "studies (each study folder's by_epoch.csv, written by its report).")
    parser.add_argument("studies", nargs="+", help="study folders, each optionally =LABEL (e.g. results/paper=cub48)")
    parser.add_argument("--out", required=True, type=Path, help="the PNG to write")
    parser.add_argument("--title", default="Along training: the paired difference against the classification error")
    arguments = parser.parse_args(argv)
    series: dict[str, list[dict]] = {}
    for entry in arguments.studies:
        folder, _, label = entry.partition("=")
        path = Path(folder) / BY_EPOCH_FILE
        if not path.is_file():
            parser.error(f"{path} not found: run the study and its report first (make report CONFIG=...)")
        series.update(study_series(read_epoch_differences(path), f"{label or Path(folder).name}: "))
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    draw_epoch_differences(series, arguments.out, arguments.title)
    print(f"wrote {arguments.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
