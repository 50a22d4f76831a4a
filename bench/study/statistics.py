"""Paired comparisons of the study: ``REFERENCE - X`` per setting and metric, a bootstrap interval and a verdict.

The study compares each value X of its compared key (``study.compare``; by
default poolings) with the reference value (``study.reference``; by default
GAP): ``GAP - GMP`` in a pooling study, ``CAM - HAS`` in one of WSOL methods.

**Paired bootstrap** (:func:`paired_bootstrap`). Runs of two values with
the same seed see the same test images in the same order, so per-image values
are paired. One resample draws S seeds and N images with replacement (the same
draw for both values) and takes the mean difference; the interval is the
percentile interval of the resamples. It accounts for both sources of
variation the table shows: which test images, and which training seed.

**Verdict** (:func:`verdict`). GT-known localization accuracy isolates
localization from classification, so the verdict uses it (the paper's top-1
loc error gets one too): "GAP localizes better" if the whole interval of
``GAP - X`` is above 0, "worse" if below, else "no significant difference".
"""

from __future__ import annotations

import numpy as np

from bench.config import StudyConfig
from bench.study.results import RunResult, StudyError, by_setting, setting_label, value_label
from bench.study.tables import TABLE_METRICS

LOWER_IS_BETTER = {"top1_cls_error", "top1_loc_error", "top5_loc_error"}
CLASSIFICATION_METRICS = {"top1_cls_error", "top5_cls_error"}  # their verdicts say "classifies"
# The verdicts stated first: the paper's metric, and the one that isolates localization from classification.
HEADLINE_METRICS = ("top1_loc_error", "gt_known_loc_acc")
BOOTSTRAP_CHUNK = 64  # resamples whose image counts are held at once: (64, N) int64, 26 MB at N = 50,000


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
    # Mean over drawn rows and columns = mean over drawn rows of the drawn-column means; each seed's mean
    # over the drawn images comes from the draw's counts, which avoids an (R, S, N) array. The counts are
    # made BOOTSTRAP_CHUNK resamples at a time, so memory is (chunk, N), not (R, N): the same draws in the
    # same order as all at once.
    row_means = np.empty((resamples, num_seeds))  # (R, S): each seed's mean over the drawn images
    for start in range(0, resamples, BOOTSTRAP_CHUNK):
        chunk = range(start, min(start + BOOTSTRAP_CHUNK, resamples))
        image_counts = np.stack([np.bincount(rng.integers(0, num_images, num_images), minlength=num_images)
                                 for _ in chunk])  # (chunk, N)
        row_means[start:chunk.stop] = image_counts @ difference.T / num_images
    seed_counts = np.stack([np.bincount(rng.integers(0, num_seeds, num_seeds), minlength=num_seeds)
                            for _ in range(resamples)])  # (R, S)
    means = (row_means * seed_counts).sum(axis=1) / num_seeds  # (R,)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(difference.mean()), float(low), float(high)


def verdict(low: float, high: float, metric: str, reference: str) -> str:
    """A computed sentence from the interval of ``REFERENCE - X`` (sign-aware for errors), naming ``reference``.

    ``reference`` is the reference's label (:func:`bench.study.results.value_label`: ``GAP``, ``CAM``).
    Classification error is a classification metric: its sentence says "classifies", the others "localizes".
    """
    better_if_positive = metric not in LOWER_IS_BETTER
    verb = "classifies" if metric in CLASSIFICATION_METRICS else "localizes"
    if low > 0:
        return f"{reference} {verb} better" if better_if_positive else f"{reference} {verb} worse"
    if high < 0:
        return f"{reference} {verb} worse" if better_if_positive else f"{reference} {verb} better"
    return "no significant difference"


def comparisons(study: StudyConfig, results: list[RunResult]) -> list[dict]:
    """``REFERENCE - X`` per setting, compared value X and metric, with the paired bootstrap interval."""
    out = []
    reference = value_label(study.reference)
    for setting, by_value in by_setting(study, results).items():
        if study.reference not in by_value:
            continue
        for other in study.compare:
            if other not in by_value:
                continue
            base = {r.config.seed: r for r in by_value[study.reference]}
            rival = {r.config.seed: r for r in by_value[other]}
            seeds = sorted(set(base) & set(rival))
            if not seeds:
                continue
            for seed in seeds:
                if base[seed].image_ids != rival[seed].image_ids:
                    raise StudyError(f"runs {base[seed].config.name} and {rival[seed].config.name} were evaluated "
                                     "on different images; they cannot be paired")
            for metric in TABLE_METRICS:
                a = np.stack([base[s].per_image[metric] for s in seeds])  # (S, N)
                b = np.stack([rival[s].per_image[metric] for s in seeds])
                mean, low, high = paired_bootstrap(a, b, study.bootstrap, study.confidence)
                label = setting_label(study, setting, "all runs")
                out.append({"setting": label, "versus": other, "metric": metric,
                            "seeds": len(seeds), "images": a.shape[1], "difference": mean, "low": low, "high": high,
                            "verdict": verdict(low, high, metric, reference)})
    return out


def comparison_markdown(study: StudyConfig, rows: list[dict], title: str = "") -> str:
    """``comparison.md``'s section for one scoring point: the headline verdicts, then every difference."""
    level = f"{100 * study.confidence:g}%"
    reference = value_label(study.reference)
    lines = [f"## {title}", ""] if title else []
    lines += [f"Paired differences {reference} - X ({level} bootstrap interval over test images and seeds, "
              f"{study.bootstrap} resamples). Verdicts from the paper's metric ({TABLE_METRICS['top1_loc_error']}) "
              f"and from {TABLE_METRICS['gt_known_loc_acc']}, which leaves classification out.", ""]
    for metric in HEADLINE_METRICS:
        for row in rows:
            if row["metric"] == metric:
                versus = value_label(row["versus"])
                lines.append(f"- **{row['setting']}, {reference} vs {versus}, {TABLE_METRICS[metric]}: "
                             f"{row['verdict']}** ({reference} - {versus} = {row['difference']:+.1f} points, "
                             f"{level} CI [{row['low']:+.1f}, {row['high']:+.1f}]; {row['seeds']} seed(s) x "
                             f"{row['images']} images)")
    lines += ["", f"| setting | {reference} - X | metric | difference | CI low | CI high |",
              "|---|---|---|---|---|---|"]
    for row in rows:
        digits = 3 if row["metric"] == "mean_iou" else 2
        lines.append(f"| {row['setting']} | {value_label(row['versus'])} | {TABLE_METRICS[row['metric']]} | "
                     f"{row['difference']:+.{digits}f} | {row['low']:+.{digits}f} | {row['high']:+.{digits}f} |")
    return "\n".join(lines) + "\n"
