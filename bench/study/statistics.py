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

from typing import Callable

import numpy as np

from bench.config import StudyConfig
from bench.study.results import RunResult, StudyError, by_setting, setting_label, value_label
from bench.study.tables import SWEEP_METRICS, TABLE_METRICS

LOWER_IS_BETTER = {"top1_cls_error", "top1_loc_error", "top5_loc_error"}
CLASSIFICATION_METRICS = {"top1_cls_error", "top5_cls_error"}  # their verdicts say "classifies"
# The verdicts stated first: the paper's metric, the one that isolates localization from classification, and
# wsolevaluation's (where the runs saved their box hits).
HEADLINE_METRICS = ("top1_loc_error", "gt_known_loc_acc", "max_box_acc_v2")
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
    # Mean over drawn rows and columns = mean over drawn rows of the drawn-column means; each seed's mean
    # over the drawn images comes from the draw's counts, which avoids an (R, S, N) array.
    ((low, high),) = bootstrap_intervals(lambda counts: (counts @ difference.T / num_images)[:, :, None],
                                         num_seeds, num_images, resamples, confidence, seed)
    return float(difference.mean()), low, high


def bootstrap_intervals(seed_differences: Callable[[np.ndarray], np.ndarray], num_seeds: int, num_images: int,
                        resamples: int, confidence: float, seed: int = 0) -> list[tuple[float, float]]:
    """Percentile intervals of K differences between two methods, resampling seeds and images.

    One resample draws N images with replacement, one draw shared by both methods and every seed, and S seeds
    with replacement. ``seed_differences(counts)`` maps the image draws of a block of resamples, ``counts
    (C, N)`` (how often each image was drawn), to each seed's K differences on them ``(C, S, K)``; a
    resample's difference is their mean over its drawn seeds. The draws are made BOOTSTRAP_CHUNK resamples at
    a time, so memory is ``(chunk, N)``, not ``(R, N)``: the same draws in the same order as all at once.
    Returns K ``(low, high)``.
    """
    rng = np.random.default_rng(seed)
    blocks = []  # (chunk, S, K) each: each seed's differences on the drawn images
    for start in range(0, resamples, BOOTSTRAP_CHUNK):
        chunk = range(start, min(start + BOOTSTRAP_CHUNK, resamples))
        image_counts = np.stack([np.bincount(rng.integers(0, num_images, num_images), minlength=num_images)
                                 for _ in chunk])  # (chunk, N)
        blocks.append(seed_differences(image_counts))
    seed_counts = np.stack([np.bincount(rng.integers(0, num_seeds, num_seeds), minlength=num_seeds)
                            for _ in range(resamples)])  # (R, S)
    means = np.einsum("rsk,rs->rk", np.concatenate(blocks), seed_counts) / num_seeds  # (R, K)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha], axis=0)  # (K,) each
    return [(float(lo), float(hi)) for lo, hi in zip(low, high)]


MAX_BOX_METRICS = ("max_box_acc", "max_box_acc_v2")  # the oracle-tau metrics a paired bootstrap of box hits gives
# Every compared metric's label in comparison.md / .csv readers: the table's columns, and the two above.
COMPARED_METRICS = {**TABLE_METRICS, **{metric: SWEEP_METRICS[f"sweep.{metric}.value"] for metric in MAX_BOX_METRICS}}


def max_box_acc_on_draws(hits: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """:data:`MAX_BOX_METRICS` (%) of one run on each image draw: ``(C, 2)``.

    ``hits (N, len(HIT_ROWS), T)`` bool (:class:`bench.scoring.threshold_free_metrics.BoxHits`), ``counts (C, N)``
    how often each image is drawn. Each draw's BoxAcc curves are ``counts @ hits`` over its N images, and each
    maximum over tau is taken on the draw itself, as the metric is on a split (the oracle tau of the draw).
    """
    num_images, rows, thresholds = hits.shape
    # float32 is exact here: every product and sum is an integer count below 2**24 for N < 16 million.
    curves = counts.astype(np.float32) @ hits.reshape(num_images, rows * thresholds).astype(np.float32)
    best = curves.reshape(len(counts), rows, thresholds).max(axis=2).astype(np.float64) * (100.0 / num_images)
    return np.stack([best[:, 0], best[:, 1:].mean(axis=1)], axis=1)


def paired_max_box_acc(a: list[np.ndarray], b: list[np.ndarray], resamples: int, confidence: float,
                       seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """MaxBoxAcc and MaxBoxAccV2 of ``a - b``: the observed mean over seeds and the paired bootstrap interval.

    ``a``, ``b``: per seed, the runs' box hits ``(N, len(HIT_ROWS), T)``, image n the same in all. The draws
    are :func:`bootstrap_intervals`' (seeds and images, shared by both methods), and each draw is scored as a
    split: the maximum over tau is re-taken on every draw (:func:`max_box_acc_on_draws`), so the interval holds
    the variation of the oracle tau too. Returns ``{metric: (difference, low, high)}`` for :data:`MAX_BOX_METRICS`.
    """
    if len(a) != len(b) or not a or any(x.shape != y.shape or x.ndim != 3 for x, y in zip(a, b)):
        raise ValueError(f"a and b must hold the same number of (images, rows, thresholds) arrays; got "
                         f"{[x.shape for x in a]} and {[y.shape for y in b]}")
    num_images = a[0].shape[0]

    def seed_differences(counts: np.ndarray) -> np.ndarray:
        return np.stack([max_box_acc_on_draws(x, counts) - max_box_acc_on_draws(y, counts)
                         for x, y in zip(a, b)], axis=1)  # (C, S, 2)

    observed = seed_differences(np.ones((1, num_images), dtype=np.int64))[0].mean(axis=0)  # (2,)
    intervals = bootstrap_intervals(seed_differences, len(a), num_images, resamples, confidence, seed)
    return {metric: (float(observed[k]), *intervals[k]) for k, metric in enumerate(MAX_BOX_METRICS)}


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


def comparisons(study: StudyConfig, results: list[RunResult], log: Callable[[str], None] = print) -> list[dict]:
    """``REFERENCE - X`` per setting, compared value X and metric, with the paired bootstrap interval.

    The per-image metrics (:data:`~bench.study.tables.TABLE_METRICS`) for every pair; MaxBoxAcc and MaxBoxAccV2
    (:func:`paired_max_box_acc`) where both values' runs saved their box hits, else one logged line says which
    runs lack them.
    """
    out = []
    reference = value_label(study.reference)
    lacking: list[str] = []
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
            label = setting_label(study, setting, "all runs")

            def row(metric: str, mean: float, low: float, high: float, images: int) -> dict:
                return {"setting": label, "versus": other, "metric": metric, "seeds": len(seeds), "images": images,
                        "difference": mean, "low": low, "high": high,
                        "verdict": verdict(low, high, metric, reference)}

            for metric in TABLE_METRICS:
                a = np.stack([base[s].per_image[metric] for s in seeds])  # (S, N)
                b = np.stack([rival[s].per_image[metric] for s in seeds])
                out.append(row(metric, *paired_bootstrap(a, b, study.bootstrap, study.confidence), a.shape[1]))
            pairs = [(base[s], rival[s]) for s in seeds]
            missing = [r.config.name for pair in pairs for r in pair if r.box_hits is None]
            if missing:
                lacking += missing
                continue
            paired = paired_max_box_acc([x.box_hits for x, _ in pairs], [y.box_hits for _, y in pairs],
                                        study.bootstrap, study.confidence)
            out += [row(metric, *paired[metric], len(pairs[0][0].image_ids)) for metric in MAX_BOX_METRICS]
    if lacking:
        names = list(dict.fromkeys(lacking))
        log(f"study {study.name}: MaxBoxAcc(V2) not compared for {len(names)} run(s) scored before box_hits.npz "
            f"existed ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}); rerun them to compare it")
    return out


def comparison_markdown(study: StudyConfig, rows: list[dict], title: str = "") -> str:
    """``comparison.md``'s section for one scoring point: the headline verdicts, then every difference."""
    level = f"{100 * study.confidence:g}%"
    reference = value_label(study.reference)
    lines = [f"## {title}", ""] if title else []
    lines += [f"Paired differences {reference} - X ({level} bootstrap interval over test images and seeds, "
              f"{study.bootstrap} resamples). Verdicts from the paper's metric ({TABLE_METRICS['top1_loc_error']}), "
              f"from {TABLE_METRICS['gt_known_loc_acc']}, which leaves classification out, and, where the runs saved "
              f"their box hits, from wsolevaluation's {COMPARED_METRICS['max_box_acc_v2']}, its best tau re-taken on "
              "every resample.", ""]
    for metric in HEADLINE_METRICS:
        for row in rows:
            if row["metric"] == metric:
                versus = value_label(row["versus"])
                lines.append(f"- **{row['setting']}, {reference} vs {versus}, {COMPARED_METRICS[metric]}: "
                             f"{row['verdict']}** ({reference} - {versus} = {row['difference']:+.1f} points, "
                             f"{level} CI [{row['low']:+.1f}, {row['high']:+.1f}]; {row['seeds']} seed(s) x "
                             f"{row['images']} images)")
    lines += ["", f"| setting | {reference} - X | metric | difference | CI low | CI high |",
              "|---|---|---|---|---|---|"]
    for row in rows:
        digits = 3 if row["metric"] == "mean_iou" else 2
        lines.append(f"| {row['setting']} | {value_label(row['versus'])} | {COMPARED_METRICS[row['metric']]} | "
                     f"{row['difference']:+.{digits}f} | {row['low']:+.{digits}f} | {row['high']:+.{digits}f} |")
    return "\n".join(lines) + "\n"
