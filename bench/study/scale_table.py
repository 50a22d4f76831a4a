"""Localization by object scale in a study: per setting, compared value and scale bin, and REFERENCE - X per bin.

Object scale is the area of an image's largest ground-truth box over the
image's area (:mod:`bench.scoring.object_scale`, bins
:data:`~bench.scoring.object_scale.SCALE_BIN_EDGES`). A run's per-image values
come from its ``predictions.csv`` (:mod:`bench.study.results`), so finished runs
are binned without re-scoring; the per-bin numbers are means of the same
per-image values the study's tables average (GT-known loc, top-1 loc error,
mean IoU of the top-1 box) and the median box / object area of the GT-class
box (:func:`bench.study.results.area_ratios`), taken per run by the run's own
per-bin aggregation (:func:`bench.scoring.object_scale.metrics_by_bin`), then
averaged over seeds. The paired intervals are the
study's paired bootstrap (:func:`bench.study.statistics.paired_bootstrap`)
restricted to the images of one bin: every run of a setting sees the same
test images, so a bin holds the same images in every run.
"""

from __future__ import annotations

import numpy as np

from bench.config import StudyConfig
from bench.scoring.object_scale import metrics_by_bin, object_scales, scale_bin_labels, scale_bins
from bench.study.results import RunResult, area_ratios, axis_name, by_setting, setting_label, value_label
from bench.study.statistics import paired_bootstrap, verdict

# Per-bin metrics of the table: key of RunResult.per_image (or "box_to_object") -> column label.
SCALE_METRICS = {
    "gt_known_loc_acc": "GT-known loc (%)",
    "top1_loc_error": "top-1 loc err (%)",
    "mean_iou": "mean IoU",
    "box_to_object": "box / object area (median)",
}
COMPARED = ("gt_known_loc_acc", "top1_loc_error")  # the per-bin paired comparisons


def result_bins(result: RunResult) -> np.ndarray:
    """``(N,)`` scale bin of each image of ``result``, from its GT boxes in the evaluated frame.

    In the input frame the frame is ``input_size`` square; in the original
    frame the scale is taken against the smallest frame holding every GT box,
    which is exact only when a box touches each border, so only the input
    frame is binned (a ``ValueError`` otherwise).
    """
    if result.config.eval.frame != "input":
        raise ValueError(f"{result.config.name}: binning by object scale needs eval.frame: input "
                         f"(boxes of predictions.csv in the input frame), not {result.config.eval.frame!r}")
    size = result.config.model.input_size
    return scale_bins(object_scales(result.gt_boxes, [(size, size)] * len(result.gt_boxes)))


def run_bins(result: RunResult) -> list[dict]:
    """One run's :data:`SCALE_METRICS` per bin (:func:`bench.scoring.object_scale.metrics_by_bin`, the
    aggregation of a run's own ``by_object_scale``): the mean of the per-image values, the median ratio."""
    means = {key: result.per_image[key] for key in SCALE_METRICS if key != "box_to_object"}
    return metrics_by_bin(means, result_bins(result), {"box_to_object": area_ratios(result)})


def bin_rows(setting: str, label: str, runs: list[RunResult]) -> list[dict]:
    """One row per bin of ``runs`` (the seeds of one setting and value; ``label`` names them in the ``value``
    column): images, seeds, and each of :data:`SCALE_METRICS` averaged over the seeds (None for an empty bin)."""
    per_run = [run_bins(run) for run in runs]
    rows = []
    for index, name in enumerate(scale_bin_labels()):
        count = per_run[0][index]["num_images"]
        row = {"setting": setting, "value": label, "bin": name, "images": count, "seeds": len(runs)}
        for key in SCALE_METRICS:
            row[key] = float(np.mean([bins[index].get(key, np.nan) for bins in per_run])) if count else None
        rows.append(row)
    return rows


def scale_rows(study: StudyConfig, results: list[RunResult]) -> list[dict]:
    """One row per setting, compared value and bin (:func:`bin_rows`); ``value`` is the value's label (``GAP``)."""
    rows = []
    for setting, by_value in by_setting(study, results).items():
        for value, runs in by_value.items():
            rows += bin_rows(setting_label(study, setting, "all runs"), value_label(value), runs)
    return rows


def scale_comparisons(study: StudyConfig, results: list[RunResult]) -> list[dict]:
    """``REFERENCE - X`` per setting, compared value, bin and metric of :data:`COMPARED`, with its interval."""
    out = []
    reference = value_label(study.reference)
    for setting, by_value in by_setting(study, results).items():
        if study.reference not in by_value:
            continue
        base = {run.config.seed: run for run in by_value[study.reference]}
        for other in study.compare:
            rival = {run.config.seed: run for run in by_value.get(other, [])}
            seeds = sorted(set(base) & set(rival))
            if not seeds:
                continue
            bins = result_bins(base[seeds[0]])
            for index, label in enumerate(scale_bin_labels()):
                chosen = bins == index
                if not chosen.any():
                    continue
                for metric in COMPARED:
                    a = np.stack([base[s].per_image[metric][chosen] for s in seeds])  # (S, n)
                    b = np.stack([rival[s].per_image[metric][chosen] for s in seeds])
                    mean, low, high = paired_bootstrap(a, b, study.bootstrap, study.confidence)
                    out.append({"setting": setting_label(study, setting, "all runs"), "versus": other, "bin": label,
                                "metric": metric, "images": int(chosen.sum()), "seeds": len(seeds),
                                "difference": mean, "low": low, "high": high,
                                "verdict": verdict(low, high, metric, reference)})
    return out


def _number(value: float | None, key: str) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:.3f}" if key in ("mean_iou", "box_to_object") else f"{value:.1f}"


def scale_markdown(study: StudyConfig, rows: list[dict], comparisons: list[dict], title: str,
                   baseline_rows: list[dict] = ()) -> str:
    """A study's ``by_object_scale.md`` section for one scoring point.

    ``rows``: :func:`scale_rows`; ``baseline_rows``: the center baseline's :func:`bin_rows`
    (:func:`bench.study.center_row.center_scale_rows`), shown after its setting's rows in the table of each
    metric it has (a value in some bin; the classifier's metrics are None there); one that stands for several
    settings (``lse_r=all``) after every setting's.
    """
    level = f"{100 * study.confidence:g}%"
    reference = value_label(study.reference)
    lines = [f"## {title}", "", "Object scale = largest GT box area / image area; bins "
             f"{', '.join(scale_bin_labels())}. Metrics are means over the images of a bin (box / object area: "
             "median), averaged over seeds.", ""]
    labels = scale_bin_labels()
    for key, name in SCALE_METRICS.items():
        lines += [f"**{name}**", "", f"| setting | {axis_name(study)} | " + " | ".join(labels) + " |",
                  "|---|---|" + "---|" * len(labels)]
        settings = list(dict.fromkeys(row["setting"] for row in rows))
        shared = [row["setting"] for row in baseline_rows if row["setting"] not in settings]
        for setting in [*settings, *dict.fromkeys(shared)]:
            baseline = [row for row in baseline_rows if row["setting"] == setting]
            shown = [row for row in rows if row["setting"] == setting]
            shown += baseline if any(row[key] is not None for row in baseline) else []
            for value in dict.fromkeys(row["value"] for row in shown):
                cells = [row for row in shown if row["value"] == value]
                lines.append(f"| {setting} | {value} | " + " | ".join(_number(cell[key], key) for cell in cells)
                             + " |")
        lines.append("")
    lines += ["**images per bin**", "", "| setting | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for setting in dict.fromkeys(row["setting"] for row in rows):
        first = next(row["value"] for row in rows if row["setting"] == setting)
        lines.append(f"| {setting} | " + " | ".join(str(row["images"]) for row in rows
                                                  if row["setting"] == setting and row["value"] == first) + " |")
    lines += ["", f"Paired {reference} - X per bin ({level} bootstrap interval over the bin's images and the seeds, "
              f"{study.bootstrap} resamples):", "",
              f"| setting | {reference} - X | bin | images | metric | difference | CI low | CI high | verdict |",
              "|---|---|---|---|---|---|---|---|---|"]
    for row in comparisons:
        lines.append(f"| {row['setting']} | {value_label(row['versus'])} | {row['bin']} | {row['images']} | "
                     f"{SCALE_METRICS[row['metric']]} | {row['difference']:+.1f} | {row['low']:+.1f} | "
                     f"{row['high']:+.1f} | {row['verdict']} |")
    return "\n".join(lines) + "\n"
