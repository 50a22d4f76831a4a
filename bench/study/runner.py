"""Studies: several runs that differ in a few keys, their tables, paired comparisons and figures.

A study (:class:`bench.config.StudyConfig`) is a grid of run configs. Each run
is an ordinary run folder under ``results/<study>/runs/<run>/``; a finished run
whose saved config is the same experiment (:data:`bench.config.SAME_EXPERIMENT_KEYS`
may differ) is reused, so an interrupted study picks up where it stopped. The
study folder ``results/<study>/`` then gets:

* ``table.md``, ``table.tex`` (booktabs), ``table.csv``: one row per setting
  (every grid key but ``seed``), each metric as mean ± std over seeds, and the
  CAM paper's ILSVRC numbers in a separate reference block;
* ``comparison.md`` / ``comparison.csv``: ``GAP - X`` for each metric and
  each pooling X in ``study.compare``, with a paired bootstrap confidence
  interval over test images and seeds, and one computed verdict per setting;
* figures: ``cams_gap_vs_gmp.png``, ``iou_hist.png``, ``boxacc_vs_tau.png``,
  ``cam_area.png`` and, when the grid varies ``model.lse_r``, ``lse_sweep.png``.

**Paired bootstrap** (:func:`paired_bootstrap`). Runs of two poolings with
the same seed see the same test images in the same order, so per-image values
are paired. One resample draws S seeds and N images with replacement (the same
draw for both poolings) and takes the mean difference; the interval is the
percentile interval of the resamples. It accounts for both sources of
variation the table shows: which test images, and which training seed.

**Verdict.** GT-known localization accuracy isolates localization from
classification, so the verdict uses it: "GAP localizes better" if the whole
interval of ``GAP - X`` is above 0, "worse" if below, else "no significant
difference".
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Callable

import numpy as np

from bench import distributed
from bench.atomic_files import atomic_path, write_text
from bench.config import (
    SAME_EXPERIMENT_KEYS,
    RunConfig,
    StudyConfig,
    config_differences,
    load_config,
)
from bench.pipeline import run
from bench.run_folder import COMPLETE, FAILED, INTERRUPTED, RUNNING, run_status
from bench.study import figures as study_figures
from bench.study.results import (
    FINAL,
    POINTS,
    VAL_SELECTED,
    RunResult,
    has_point,
    read_run,
    setting_keys,
    setting_label,
)

TABLE_METRICS = {
    "top1_cls_error": "top-1 cls err (%)",
    "top1_loc_error": "top-1 loc err (%)",
    "top5_loc_error": "top-5 loc err (%)",
    "gt_known_loc_acc": "GT-known loc (%)",
    "mean_iou": "mean IoU",
}
# Threshold-free and calibrated columns (bench.threshold_metrics), from metrics.json["sweep"]; table only.
SWEEP_METRICS = {
    "sweep.max_box_acc.value": "MaxBoxAcc (%, oracle tau)",
    "sweep.max_box_acc_v2.value": "MaxBoxAccV2 (%, oracle tau)",
    "sweep.pxap.value": "PxAP (%)",
    "sweep.calibrated.top1_loc_error": "top-1 loc err (%, tau from val)",
}
# Per-run columns that say where a row stands in training: did it converge, which epoch was scored.
RUN_COLUMNS = {
    "train_accuracy": "train acc (%)",
    "epoch": "epoch",
}
LOWER_IS_BETTER = {"top1_cls_error", "top1_loc_error", "top5_loc_error"}
# The verdicts stated first: the paper's metric, and the one that isolates localization from classification.
HEADLINE_METRICS = ("top1_loc_error", "gt_known_loc_acc")
POINT_TITLES = {
    FINAL: "Final epoch (the paper's protocol)",
    VAL_SELECTED: "Epoch chosen on val localization (GT-known loc on the val split; never on test)",
}
# The CAM paper, ILSVRC 2014 val (Zhou et al., CVPR 2016, Tables 1-2): another dataset, shown for reference only.
PAPER_REFERENCE = (
    ("GoogLeNet-GAP", 35.0, 56.40, 43.00),
    ("GoogLeNet-GMP", 35.6, 57.78, 45.26),
)


class StudyError(RuntimeError):
    """A study cannot proceed as asked (e.g. a finished run folder holds another config)."""


# ----------------------------------------------------------------------------- running


def run_state(config: RunConfig) -> str:
    """What a study does with ``config.run_dir``; its status is read by :func:`bench.run_folder.run_status`.

    ``missing``; ``complete`` (finished, the same experiment: reused); ``different`` (finished with another
    config); ``running`` (its process is alive, or runs on another host); ``interrupted`` (stopped early,
    killed or failed, the same experiment: continued from its checkpoint); ``partial`` (unfinished and
    unreadable or of another config: run again from scratch). The same experiment: the saved config differs
    from ``config`` in no key but :data:`bench.config.SAME_EXPERIMENT_KEYS`, as ``--resume`` requires.
    """
    folder = config.run_dir
    if not folder.exists():
        return "missing"
    status = run_status(folder)
    if status == RUNNING:
        return "running"
    try:
        same = not config_differences(load_config(folder / "config.yaml"), config, SAME_EXPERIMENT_KEYS)
    except Exception:  # noqa: BLE001 - any unreadable folder is an unfinished one
        return "partial"
    if status == COMPLETE:
        return "complete" if same else "different"
    return "interrupted" if same and status in (INTERRUPTED, FAILED) else "partial"


def run_study(study: StudyConfig, runs: list[RunConfig], overwrite: bool = False,
              log: Callable[[str], None] = print) -> Path:
    """Run every run not finished yet (reusing finished ones, continuing interrupted ones), then write the report.

    Under ``torchrun`` every rank takes part in each run; rank 0 decides what to run and writes the report.
    """
    context = distributed.from_environment()
    states = context.on_main(lambda: {config.name: run_state(config) for config in runs})
    different = [name for name, state in states.items() if state == "different"]
    if different and not overwrite:
        raise StudyError(f"{len(different)} finished run folder(s) under {study.study_dir / 'runs'} hold another "
                         f"config than this study asks for ({', '.join(different[:3])}); pass --overwrite "
                         f"(make ... OVERWRITE=1) to retrain them, or rename the study file")
    running = [name for name, state in states.items() if state == "running"]
    if running:
        raise StudyError(f"run(s) {', '.join(running[:3])} of study {study.name} are being run by another process "
                         f"(manifest.json names it); wait for it or stop it first")
    say = log if context.is_main else (lambda message: None)
    reused = sum(state == "complete" for state in states.values())
    say(f"study {study.name}: {len(runs)} runs ({reused} finished and reused) -> {study.study_dir}/")
    for index, config in enumerate(runs, start=1):
        state = states[config.name]
        if state == "complete":
            continue
        if state == "interrupted":
            say(f"[{index}/{len(runs)}] {config.name}: interrupted earlier; continuing from its last checkpoint")
        elif state == "partial":
            say(f"[{index}/{len(runs)}] {config.name}: unfinished folder of another or unreadable config; "
                f"running it again")
        say(f"[{index}/{len(runs)}] {config.name}")
        run(config, overwrite=state in ("partial", "different"), resume=state == "interrupted", log=log,
            context=context)
    if not context.is_main:
        return study.study_dir
    return write_report(study, runs, log=log)


# ----------------------------------------------------------------------------- statistics


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int, confidence: float,
                     seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``a - b`` and its percentile confidence interval, resampling seeds and images.

    ``a``, ``b``: ``(S, N)`` per-image values of two methods, row s from
    training seed s, column n the same test image in both. One resample draws
    S rows and N columns with replacement (one draw shared by ``a`` and ``b``
    and by all drawn rows) and takes the mean of ``(a - b)`` over the drawn
    cells. Returns ``(observed mean difference, low, high)``.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"a and b must both be (seeds, images); got {a.shape} and {b.shape}")
    difference = a - b  # (S, N)
    num_seeds, num_images = difference.shape
    rng = np.random.default_rng(seed)
    # Mean over drawn rows and columns = mean over drawn rows of the drawn-column means;
    # per_column[s] sums over images via counts, which avoids an (R, S, N) array.
    image_counts = np.stack([np.bincount(rng.integers(0, num_images, num_images), minlength=num_images)
                             for _ in range(resamples)])  # (R, N)
    seed_counts = np.stack([np.bincount(rng.integers(0, num_seeds, num_seeds), minlength=num_seeds)
                            for _ in range(resamples)])  # (R, S)
    row_means = image_counts @ difference.T / num_images  # (R, S): each seed's mean over the drawn images
    means = (row_means * seed_counts).sum(axis=1) / num_seeds  # (R,)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(difference.mean()), float(low), float(high)


def verdict(low: float, high: float, metric: str) -> str:
    """A computed sentence from the interval of ``GAP - X`` (sign-aware for errors)."""
    better_if_positive = metric not in LOWER_IS_BETTER
    if low > 0:
        return "GAP localizes better" if better_if_positive else "GAP localizes worse"
    if high < 0:
        return "GAP localizes worse" if better_if_positive else "GAP localizes better"
    return "no significant difference"


# ----------------------------------------------------------------------------- grouping


def _value(config: RunConfig, key: str):
    value = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _row_keys(study: StudyConfig) -> list[str]:
    return [key for key, _ in study.grid if key != "seed"]


def group_runs(study: StudyConfig, results: list[RunResult]) -> dict[tuple, list[RunResult]]:
    """Results grouped by the values of every grid key but ``seed`` (grid order kept)."""
    keys = _row_keys(study)
    groups: dict[tuple, list[RunResult]] = {}
    for result in results:
        groups.setdefault(tuple(_value(result.config, key) for key in keys), []).append(result)
    return groups


def _settings(study: StudyConfig, results: list[RunResult]) -> dict[tuple, dict[str, list[RunResult]]]:
    """Results by setting (:func:`bench.study_results.setting_keys`), then by pooling."""
    keys = setting_keys(study)
    settings: dict[tuple, dict[str, list[RunResult]]] = {}
    for result in results:
        setting = tuple(_value(result.config, key) for key in keys)
        settings.setdefault(setting, {}).setdefault(result.config.model.pooling, []).append(result)
    return settings


# ----------------------------------------------------------------------------- tables


def _mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else math.nan  # no spread from one seed


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


def table_rows(study: StudyConfig, results: list[RunResult]) -> list[dict]:
    """One row per setting: the grid values, the number of seeds, each metric's mean and std (ddof 1) over seeds."""
    keys = _row_keys(study)
    rows = []
    for values, group in group_runs(study, results).items():
        row = {key: value for key, value in zip(keys, values)}
        row["seeds"] = len(group)
        for metric in (*RUN_COLUMNS, *TABLE_METRICS, *SWEEP_METRICS):
            values = [run_metric(r, metric) for r in group]
            if all(value is not None for value in values):
                row[f"{metric}_mean"], row[f"{metric}_std"] = _mean_std(values)
        rows.append(row)
    return rows


def metric_value(metrics: dict, key: str) -> float | None:
    """``metrics[a][b]...`` for a dotted key; None where the run did not compute it (e.g. no masks: no PxAP)."""
    value = metrics
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return float(value)


def _columns(rows: list[dict]) -> dict[str, str]:
    """The metric columns every row has: the fixed-tau ones, then the sweep ones that were computed."""
    labels = {**RUN_COLUMNS, **TABLE_METRICS, **SWEEP_METRICS}
    return {key: label for key, label in labels.items() if all(f"{key}_mean" in row for row in rows)}


def _format(metric: str, mean: float, std: float, separator: str = " ± ") -> str:
    """``mean ± std``; the mean alone where one seed gives no spread (std NaN)."""
    digits = 3 if metric == "mean_iou" else 0 if metric == "epoch" else 1
    if math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f}{separator}{std:.{digits}f}"


def comparisons(study: StudyConfig, results: list[RunResult]) -> list[dict]:
    """``GAP - X`` per setting, compared pooling and metric, with the paired bootstrap interval."""
    out = []
    for setting, by_pooling in _settings(study, results).items():
        if "gap" not in by_pooling:
            continue
        for other in study.compare:
            if other not in by_pooling:
                continue
            gap = {r.config.seed: r for r in by_pooling["gap"]}
            rival = {r.config.seed: r for r in by_pooling[other]}
            seeds = sorted(set(gap) & set(rival))
            if not seeds:
                continue
            for seed in seeds:
                if gap[seed].image_ids != rival[seed].image_ids:
                    raise StudyError(f"runs {gap[seed].config.name} and {rival[seed].config.name} were evaluated "
                                     "on different images; they cannot be paired")
            for metric in TABLE_METRICS:
                a = np.stack([gap[s].per_image[metric] for s in seeds])  # (S, N)
                b = np.stack([rival[s].per_image[metric] for s in seeds])
                mean, low, high = paired_bootstrap(a, b, study.bootstrap, study.confidence)
                label = setting_label(study, setting, "all runs")
                out.append({"setting": label, "versus": other, "metric": metric,
                            "seeds": len(seeds), "images": a.shape[1], "difference": mean, "low": low, "high": high,
                            "verdict": verdict(low, high, metric)})
    return out


def _write_csv(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(study: StudyConfig, rows: list[dict], protocol: str, title: str = "") -> str:
    keys = _row_keys(study)
    columns = _columns(rows)
    header = [key.rsplit(".", 1)[-1] for key in keys] + ["seeds"] + list(columns.values())
    lines = [f"## {title}", ""] if title else []
    lines += [f"Study `{study.name}`: mean ± std over seeds. Columns without a tau note: {protocol}. "
              "Oracle columns take the best tau on the test split itself (wsolevaluation's protocol); "
              "'tau from val' picks tau on the val split. 'train acc' is the training accuracy in the scored "
              "epoch (augmented batches).", "",
              "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row[key]) for key in keys] + [str(row["seeds"])]
        cells += [_format(metric, row[f"{metric}_mean"], row[f"{metric}_std"]) for metric in columns]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Reference, **another dataset** (ILSVRC 2014 val, GoogLeNet, the CAM paper's Tables 1-2; "
              "not comparable with the rows above):", "",
              "| method | top-1 cls err (%) | top-1 loc err (%) | top-5 loc err (%) |", "|---|---|---|---|"]
    lines += [f"| {name} | {cls:.1f} | {top1:.2f} | {top5:.2f} |" for name, cls, top1, top5 in PAPER_REFERENCE]
    return "\n".join(lines) + "\n"


def latex_table(study: StudyConfig, rows: list[dict], protocol: str) -> str:
    keys = _row_keys(study)
    metrics = _columns(rows)
    header = [key.rsplit(".", 1)[-1].replace("_", r"\_") for key in keys] + ["seeds"]
    header += [label.replace("%", r"\%") for label in metrics.values()]
    columns = "l" * (len(keys) + 1) + "r" * len(metrics)
    lines = [r"% " + f"wsol-bench study {study.name}: mean $\\pm$ std over seeds; {protocol}",
             r"\begin{tabular}{" + columns + "}", r"\toprule", " & ".join(header) + r" \\", r"\midrule"]
    for row in rows:
        cells = [str(row[key]).replace("_", r"\_") for key in keys] + [str(row["seeds"])]
        cells += [_format(metric, row[f"{metric}_mean"], row[f"{metric}_std"], r" $\pm$ ") for metric in metrics]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\midrule", r"\multicolumn{" + str(len(header)) + r"}{l}{\emph{Reference, another dataset: "
              r"ILSVRC 2014 val, CAM paper (top-1 cls / top-1 loc / top-5 loc err, \%)}} \\"]
    for name, cls, top1, top5 in PAPER_REFERENCE:
        lines.append(r"\multicolumn{" + str(len(keys) + 1) + "}{l}{" + name + "} & " +
                     f"{cls:.1f} & {top1:.2f} & {top5:.2f}" + " & " * (len(metrics) - 3) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def comparison_markdown(study: StudyConfig, rows: list[dict], title: str = "") -> str:
    level = f"{100 * study.confidence:g}%"
    lines = [f"## {title}", ""] if title else []
    lines += [f"Paired differences GAP - X ({level} bootstrap interval over test images and seeds, "
              f"{study.bootstrap} resamples). Verdicts from the paper's metric ({TABLE_METRICS['top1_loc_error']}) "
              f"and from {TABLE_METRICS['gt_known_loc_acc']}, which leaves classification out.", ""]
    for metric in HEADLINE_METRICS:
        for row in rows:
            if row["metric"] == metric:
                lines.append(f"- **{row['setting']}, GAP vs {row['versus'].upper()}, {TABLE_METRICS[metric]}: "
                             f"{row['verdict']}** (GAP - {row['versus'].upper()} = {row['difference']:+.1f} points, "
                             f"{level} CI [{row['low']:+.1f}, {row['high']:+.1f}]; {row['seeds']} seed(s) x "
                             f"{row['images']} images)")
    lines += ["", "| setting | GAP - X | metric | difference | CI low | CI high |", "|---|---|---|---|---|---|"]
    for row in rows:
        digits = 3 if row["metric"] == "mean_iou" else 2
        lines.append(f"| {row['setting']} | {row['versus'].upper()} | {TABLE_METRICS[row['metric']]} | "
                     f"{row['difference']:+.{digits}f} | {row['low']:+.{digits}f} | {row['high']:+.{digits}f} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- report


def protocol_of(results: list[RunResult]) -> str:
    protocols = sorted({r.metrics.get("protocol", "") for r in results})
    return protocols[0] if len(protocols) == 1 else "; ".join(protocols)


def write_report(study: StudyConfig, runs: list[RunConfig], log: Callable[[str], None] = print) -> Path:
    """Tables, comparisons and figures from the finished runs of ``runs`` (unfinished ones are left out, said).

    Each point of :data:`bench.study.results.POINTS` the runs were scored at
    gets its table and comparisons: ``table.*`` / ``comparison.csv`` for the
    final epoch, ``table_val_selected.*`` / ``comparison_val_selected.csv`` for
    the val-selected one; ``table.md`` and ``comparison.md`` hold both.
    """
    finished = [config for config in runs if run_state(config) == "complete"]
    missing = [config.name for config in runs if config not in finished]
    if not finished:
        raise StudyError(f"study {study.name}: none of its {len(runs)} runs has finished under "
                         f"{study.study_dir / 'runs'}; run it first (make benchmark CONFIG=...)")
    if missing:
        log(f"study {study.name}: {len(missing)} run(s) unfinished, left out of the report: {', '.join(missing)}")
    folder = study.study_dir
    folder.mkdir(parents=True, exist_ok=True)
    points = [point for point in POINTS if all(has_point(config, point) for config in finished)]
    tables, notes = [], []
    for point in points:
        results = [read_run(config, point) for config in finished]
        suffix = "" if point == FINAL else f"_{point}"
        title = POINT_TITLES[point] if len(points) > 1 else ""
        protocol = protocol_of(results)
        rows = table_rows(study, results)
        tables.append(markdown_table(study, rows, protocol, title))
        write_text(folder / f"table{suffix}.tex", latex_table(study, rows, protocol))
        _write_csv(folder / f"table{suffix}.csv", rows)
        differences = comparisons(study, results)
        if differences:
            notes.append(comparison_markdown(study, differences, title))
            _write_csv(folder / f"comparison{suffix}.csv", differences)
        if point == FINAL:
            figures = study_figures.draw_all(study, results, _settings(study, results), folder)
    write_text(folder / "table.md", "\n".join(tables))
    if notes:
        write_text(folder / "comparison.md", "\n".join(notes))
    log((folder / "table.md").read_text())
    if notes:
        log((folder / "comparison.md").read_text())
    log(f"study report in {folder}/ ({', '.join(sorted(p.name for p in figures))})")
    return folder
