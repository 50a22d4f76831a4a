"""The study's figures (PNG, titled and labelled), drawn from finished runs by :func:`draw_all`.

Each figure draws one line, box or column per value of the study's compared key (its *axis*,
``study.compare_key``: the pooling by default, e.g. the WSOL method), the reference first:

* ``cams_gap_vs_gmp.png`` (a pooling study; :func:`gallery_name`: ``cams_by_<axis>.png`` for any other axis):
  the same test images, one column per value: the GT-class CAM (normalized as evaluated), its box (red) and
  the ground truth (green), each box's hit or miss (IoU >= 0.5) under it.
* ``iou_hist.png``: IoU of the GT-class box with the ground truth, per value.
* ``boxacc_vs_tau.png``: % of images localized (GT-class box, IoU >= 0.5) against tau, per value; marked: the
  fixed tau (``eval.tau``), each value's oracle tau (the best of its mean curve, a star) and the taus its runs
  chose on val (triangles).
* ``cam_area.png``: predicted box area / ground-truth box area per value (log scale; 1 = right size).
* ``lse_sweep.png``: top-1 loc error, GT-known loc, MaxBoxAccV2 and PxAP against the LSE sharpness r
  (only if the grid varies ``model.lse_r``).
* ``map_resolution.png``: the same metrics against the CAM's side in cells (input size / feature stride),
  per value and stride (only if the grid varies ``model.input_size`` or ``model.feature_stride``).
* ``learning_curves.png``: val GT-known loc (solid) and val top-1 cls error (dashed) per epoch, per value,
  with a star at each run's val-selected epoch (only if the runs validated every epoch, ``train.validate``).

One subplot (or block of rows) per setting: every grid key but seed and the compared key.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bench.config import RunConfig, StudyConfig  # noqa: E402
from bench.data.loading import load_dataset  # noqa: E402
from bench.data.torch_dataset import WsolDataset  # noqa: E402
from bench.run.figures import caption_box, draw_box, overlay_cam, save_figure  # noqa: E402
from bench.run.pipeline import SELECTION_RULE  # noqa: E402
from bench.scoring.box_rule import normalize_cams  # noqa: E402
from bench.scoring.evaluation import to_pixels  # noqa: E402
from bench.scoring.fixed_tau_metrics import IOU_THRESHOLD  # noqa: E402
from bench.study.results import (  # noqa: E402
    RunResult,
    area_ratios,
    axis_name,
    config_value,
    ordered_values,
    setting_label,
    upsampled_cams,
    value_label,
)
from bench.study.tables import run_metric  # noqa: E402

COLOURS = {"gap": "tab:blue", "gmp": "tab:red", "lse": "tab:green", "gem": "tab:purple", "topk": "tab:orange",
           "mixed": "tab:brown"}  # the poolings' colours; any other value takes matplotlib's cycle by its rank
GALLERY_IMAGES = 4  # test images per setting in the CAM gallery (gallery_name)
FIGURE_DPI = 110

Settings = dict[tuple, dict[object, list[RunResult]]]  # setting -> compared value -> runs (results.by_setting)


def gallery_name(study: StudyConfig) -> str:
    """The CAM gallery's file name: ``cams_gap_vs_gmp.png`` in a pooling study (its name since the first
    release), ``cams_by_<axis>.png`` along any other axis (``cams_by_method.png``)."""
    return "cams_gap_vs_gmp.png" if study.compare_key == "model.pooling" else f"cams_by_{axis_name(study)}.png"


def _colour(study: StudyConfig, value) -> str:
    """A value's colour in every figure: a pooling's own, else the colour cycle's by the value's rank."""
    if value in COLOURS:
        return COLOURS[value]
    order = ordered_values(study, [v for key, values in study.grid if key == study.compare_key for v in values])
    return f"C{order.index(value) % 10}" if value in order else "tab:gray"


def _title(figure: plt.Figure, text: str) -> None:
    """A figure title wrapped to the figure's width (about 11 characters per inch at size 10)."""
    figure.suptitle(textwrap.fill(text, width=int(figure.get_figwidth() * 11)), fontsize=10)


def _first_seed(runs: list[RunResult]) -> RunResult:
    return min(runs, key=lambda r: r.config.seed)


def _input_images(result: RunResult, image_ids: list[str]) -> list[np.ndarray]:
    """The test images as the network saw them (the evaluation's resize to ``input_size``), ``(S, S, 3)`` uint8."""
    config = result.config
    dataset = load_dataset(config.dataset, Path(config.data_root), progress=False)
    by_id = {sample.image_id: sample for sample in dataset.splits[config.eval.split]}
    plain = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # no normalization: the tensors are the pixels / 255
    images = WsolDataset([by_id[image_id] for image_id in image_ids], config.model.input_size, *plain, train=False)
    return [to_pixels(images[index]["image"], *plain) for index in range(len(images))]


def cams_side_by_side(study: StudyConfig, settings: Settings, path: Path) -> Path:
    blocks = []
    for setting, by_value in settings.items():
        values = ordered_values(study, by_value)
        results = [_first_seed(by_value[v]) for v in values]
        blocks.append((setting, values, results))
    columns = max(len(values) for _, values, _ in blocks) + 1
    rows = GALLERY_IMAGES * len(blocks)
    # Constrained layout keeps the title, the captions above and the verdicts below each image apart.
    figure, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.7 * rows + 0.5), squeeze=False,
                                layout="constrained")
    for axis in axes.flat:
        axis.axis("off")
    for block, (setting, values, results) in enumerate(blocks):
        reference = results[0]
        count = min(GALLERY_IMAGES, len(reference.image_ids))
        images = _input_images(reference, reference.image_ids[:count])
        maps = [normalize_cams(upsampled_cams(r, count), r.config.eval.normalization) for r in results]
        for index in range(count):
            row = axes[block * GALLERY_IMAGES + index]
            row[0].imshow(images[index])
            for box in reference.gt_boxes[index]:
                draw_box(row[0], box, "lime")
            name = reference.image_ids[index].rsplit("/", 1)[-1]
            row[0].set_title(f"{setting_label(study, setting, study.name)}\n{name}",
                             fontsize=7)
            for column, (value, result, cams) in enumerate(zip(values, results, maps), start=1):
                axis = row[column]
                axis.imshow(overlay_cam(images[index], cams[index]))
                for box in result.gt_boxes[index]:
                    draw_box(axis, box, "lime")
                draw_box(axis, result.gt_class_boxes[index], "red")
                axis.set_title(f"{value_label(value)} (seed {result.config.seed})", fontsize=7)
                caption_box(axis, result.gt_class_iou[index])
    _title(figure, f"{study.name}: GT-class CAM per {axis_name(study)}, box at tau={reference.config.eval.tau:g} "
                    f"(red), ground truth (green); hit: IoU \u2265 {IOU_THRESHOLD:g}")
    return save_figure(figure, path, FIGURE_DPI)


def _subplots(count: int, width: float = 4.2, height: float = 3.4,
              max_columns: int = 3) -> tuple[plt.Figure, np.ndarray]:
    columns = min(count, max_columns)
    rows = -(-count // columns)
    figsize = (max(width * columns, 7.0), height * rows + 0.6)  # room for a two-line title
    figure, axes = plt.subplots(rows, columns, figsize=figsize, squeeze=False)
    for axis in axes.flat[count:]:
        axis.axis("off")
    return figure, axes.flat


def iou_histograms(study: StudyConfig, settings: Settings, path: Path) -> Path:
    figure, axes = _subplots(len(settings))
    bins = np.linspace(0, 1, 21)
    for axis, (setting, by_value) in zip(axes, settings.items()):
        for value in ordered_values(study, by_value):
            ious = np.concatenate([r.gt_class_iou for r in by_value[value]])
            axis.hist(ious, bins=bins, histtype="step", linewidth=1.8, color=_colour(study, value),
                      label=f"{value_label(value)} (median {np.median(ious):.2f})")
        axis.axvline(0.5, color="grey", linestyle=":", linewidth=1)
        axis.set(title=setting_label(study, setting, study.name),
                 xlabel="IoU of the GT-class box with the ground truth",
                 ylabel="images (all seeds)")
        axis.legend(fontsize=8)
    _title(figure, f"{study.name}: localization IoU per {axis_name(study)} (IoU >= 0.5 counts as localized)")
    figure.tight_layout()
    return save_figure(figure, path, FIGURE_DPI)


def _mean_and_band(axis: plt.Axes, x, curves: np.ndarray, colour: str | None, label: str, **style) -> None:
    """The mean of ``curves (seeds, T)`` over ``x``, and a min..max band when there are several seeds."""
    axis.plot(x, curves.mean(axis=0), color=colour, label=label, **style)
    if len(curves) > 1:
        axis.fill_between(x, curves.min(axis=0), curves.max(axis=0), color=colour, alpha=0.15)


def val_taus(runs: list[RunResult]) -> list[float]:
    """The tau each run chose on val (``metrics.json``'s ``sweep.calibrated.tau``), in seed order; runs that did
    not calibrate give none."""
    ordered = sorted(runs, key=lambda r: r.config.seed)
    return [r.metrics["sweep"]["calibrated"]["tau"] for r in ordered if "calibrated" in r.metrics.get("sweep", {})]


def boxacc_vs_tau(study: StudyConfig, settings: Settings, path: Path) -> Path:
    figure, axes = _subplots(len(settings))
    for axis, (setting, by_value) in zip(axes, settings.items()):
        for value in ordered_values(study, by_value):
            taus = by_value[value][0].box_acc_curve[0]
            curves = np.stack([r.box_acc_curve[1] for r in by_value[value]])  # (seeds, T)
            mean = curves.mean(axis=0)
            colour, label = _colour(study, value), value_label(value)
            _mean_and_band(axis, taus, curves, colour, f"{label} (mean over seeds)")
            best = int(mean.argmax())
            axis.plot([taus[best]], [mean[best]], marker="*", markersize=11, color=colour, markeredgecolor="black",
                      linestyle="none", zorder=5, label=f"{label} oracle tau {taus[best]:.2f}: best {mean[best]:.1f}%")
            chosen = val_taus(by_value[value])
            if chosen:
                axis.plot(chosen, np.interp(chosen, taus, mean), marker="v", markersize=7, color=colour,
                          markeredgecolor="black", linestyle="none", zorder=5,
                          label=f"{label} tau chosen on val: {', '.join(f'{t:g}' for t in chosen)}")
        tau = next(iter(by_value.values()))[0].config.eval.tau
        axis.axvline(tau, color="grey", linestyle="--", linewidth=1, label=f"tau = {tau:g}, fixed (eval.tau)")
        axis.set(title=setting_label(study, setting, study.name), xlabel="tau (fraction of the normalized CAM)",
                 ylabel="GT-known BoxAcc (%), IoU >= 0.5", ylim=(0, 100), xlim=(-0.02, 1))
        axis.legend(fontsize=6.5)
    _title(figure, f"{study.name}: localization accuracy against the CAM threshold "
                    "(mean over seeds, band = min..max)")
    figure.tight_layout()
    return save_figure(figure, path, FIGURE_DPI)


def cam_area(study: StudyConfig, settings: Settings, path: Path) -> Path:
    figure, axes = _subplots(len(settings))
    for axis, (setting, by_value) in zip(axes, settings.items()):
        values = ordered_values(study, by_value)
        ratios = [np.concatenate([area_ratios(r) for r in by_value[v]]) for v in values]
        positive = [np.clip(r, 1e-3, None) for r in ratios]
        axis.boxplot(positive, showfliers=False)
        axis.set_xticks(range(1, len(values) + 1),
                        [f"{value_label(v)}\nmedian {np.median(r):.2f}" for v, r in zip(values, ratios)])
        axis.set_yscale("log")
        axis.axhline(1.0, color="grey", linestyle=":", linewidth=1)
        axis.set(title=setting_label(study, setting, study.name), ylabel="predicted box area / GT box area")
    _title(figure, f"{study.name}: box size relative to the object (GT-class CAM; < 1 = box on a part)")
    figure.tight_layout()
    return save_figure(figure, path, FIGURE_DPI)


# The panels of a figure that plots localization against a setting parameter (tables.run_metric keys).
PARAMETER_PANELS = (
    ("top1_loc_error", "top-1 loc error (%, tau fixed)"),
    ("gt_known_loc_acc", "GT-known loc (%)"),
    ("sweep.max_box_acc_v2.value", "MaxBoxAccV2 (%)"),
    ("sweep.pxap.value", "PxAP (%)"),
)
# The least y range of a percentage panel: on a few hundred test images one seed's numbers move by a few
# points, and a panel scaled to a 2-point range would draw that noise as a trend.
MIN_PERCENT_SPAN = 12.0
SeriesPoints = dict[float, list[RunResult]]  # parameter value -> the runs (seeds) at that value


def _against_parameter(series: dict[str, tuple[str, str, SeriesPoints]], path: Path, xlabel: str, title: str,
                       log_x: bool = False, notes: dict[float, str] | None = None) -> Path:
    """One panel per :data:`PARAMETER_PANELS` metric the runs have, against a setting parameter.

    ``series`` maps a legend label to ``(colour, line style, points)``; each
    point is the mean over its runs (seeds), with a min..max bar when there are
    several. ``notes`` labels x values (e.g. the input size behind a map size).
    """
    runs = [r for _, _, points in series.values() for group in points.values() for r in group]
    panels = [(m, label) for m, label in PARAMETER_PANELS if all(run_metric(r, m) is not None for r in runs)]
    figure, axes = _subplots(len(panels), width=4.2, height=3.2, max_columns=2)
    for axis, (metric, label) in zip(axes, panels):
        for name, (colour, style, points) in series.items():
            xs = sorted(points)
            values = [np.array([run_metric(r, metric) for r in points[x]]) for x in xs]
            means = np.array([v.mean() for v in values])
            spread = np.array([[means[i] - v.min(), v.max() - means[i]] for i, v in enumerate(values)]).T
            axis.errorbar(xs, means, yerr=spread if any(len(v) > 1 for v in values) else None, color=colour,
                          linestyle=style, marker="o", capsize=3, label=name)
        if log_x:
            axis.set_xscale("log")
        for x, note in (notes or {}).items():
            axis.annotate(note, (x, 0), xycoords=("data", "axes fraction"), fontsize=6, ha="center",
                          va="bottom", color="grey")
        low, high = axis.get_ylim()
        if metric != "mean_iou" and high - low < MIN_PERCENT_SPAN:  # a few points must not fill the panel
            middle = (low + high) / 2
            axis.set_ylim(middle - MIN_PERCENT_SPAN / 2, middle + MIN_PERCENT_SPAN / 2)
        axis.set(xlabel=xlabel, ylabel=label)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    _title(figure, title)
    figure.tight_layout()
    return save_figure(figure, path, FIGURE_DPI)


def _points(results: list[RunResult], x_of) -> SeriesPoints:
    points: SeriesPoints = {}
    for result in results:
        points.setdefault(float(x_of(result.config)), []).append(result)
    return points


def lse_sweep(study: StudyConfig, results: list[RunResult], path: Path) -> Path:
    """Localization against the LSE sharpness r; GAP and GMP runs of the study, if any, at r's two ends."""
    lse = [r for r in results if r.config.model.pooling == "lse"]
    series = {"LSE": (COLOURS["lse"], "-", _points(lse, lambda c: c.model.lse_r))}
    ends = {"gap": min(series["LSE"][2]), "gmp": max(series["LSE"][2])}
    for pooling, x in ends.items():
        matched = [r for r in results if r.config.model.pooling == pooling]
        if matched:
            series[f"{pooling.upper()} (drawn at r = {x:g})"] = (COLOURS[pooling], "none", {x: matched})
    return _against_parameter(series, path, "LSE sharpness r (r -> 0: GAP, r -> inf: GMP)",
                              f"{study.name}: localization along the average-to-max continuum (final epoch)",
                              log_x=True)


def map_resolution(study: StudyConfig, results: list[RunResult], path: Path) -> Path:
    """Localization against the CAM's side in cells (input size / feature stride), per compared value and stride."""
    def cam_side(config: RunConfig) -> float:
        return config.model.input_size / config.model.feature_stride

    strides = sorted({r.config.model.feature_stride for r in results})
    by_value: dict[object, list[RunResult]] = {}
    for result in results:
        by_value.setdefault(config_value(result.config, study.compare_key), []).append(result)
    series = {}
    for stride in strides:  # the finest stride solid, coarser ones dashed
        for value in ordered_values(study, by_value):
            runs = [r for r in by_value[value] if r.config.model.feature_stride == stride]
            if runs:
                series[f"{value_label(value)}, stride {stride}"] = (_colour(study, value), "-" if stride == strides[0]
                                                                    else "--", _points(runs, cam_side))
    notes = {cam_side(r.config): f"{r.config.model.input_size}px" for r in results}
    return _against_parameter(series, path, "CAM side (cells) = input size / feature stride",
                              f"{study.name}: localization against map resolution (final epoch; "
                              "grey: input size)", notes=notes)


def selected_epochs(runs: list[RunResult]) -> list[int]:
    """The epoch each run chose on val (``manifest.json``), in seed order; runs that chose none give none."""
    return [r.selected_epoch for r in sorted(runs, key=lambda r: r.config.seed) if r.selected_epoch is not None]


def learning_curves(study: StudyConfig, settings: Settings, path: Path) -> Path:
    """Val GT-known loc and val top-1 cls error against the epoch, mean over seeds (band = min..max of GT-known)."""
    figure, axes = _subplots(len(settings))
    for axis, (setting, by_value) in zip(axes, settings.items()):
        for value in ordered_values(study, by_value):
            runs = by_value[value]
            epochs = [int(row["epoch"]) for row in runs[0].history]
            located = np.array([[row["val_gt_known_loc_acc"] for row in r.history] for r in runs])  # (seeds, E)
            errors = np.array([[row["val_top1_cls_error"] for row in r.history] for r in runs])
            colour, label = _colour(study, value), value_label(value)
            _mean_and_band(axis, epochs, located, colour, f"{label} GT-known loc", marker="o")
            axis.plot(epochs, errors.mean(axis=0), color=colour, linestyle="--", label=f"{label} cls error")
            chosen = selected_epochs(runs)
            if chosen:
                axis.plot(chosen, np.interp(chosen, epochs, located.mean(axis=0)), marker="*", markersize=12,
                          color=colour, markeredgecolor="black", linestyle="none", zorder=5,
                          label=f"{label} selected on val: epoch {', '.join(map(str, chosen))}")
        axis.set(title=setting_label(study, setting, study.name), xlabel="epoch", ylabel="val split (%)",
                 ylim=(0, 100))
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    _title(figure, f"{study.name}: the val split along training, mean over seeds; star: each run's epoch "
                    f"selected on val ({SELECTION_RULE})")
    figure.tight_layout()
    return save_figure(figure, path, FIGURE_DPI)


def _validated(results: list[RunResult]) -> bool:
    """Every run has a val row for every epoch, on the same epochs."""
    epochs = {tuple(int(row["epoch"]) for row in r.history) for r in results}
    return len(epochs) == 1 and all(r.history and all("val_gt_known_loc_acc" in row for row in r.history)
                                    for r in results)


def draw_all(study: StudyConfig, results: list[RunResult], settings: Settings, folder: Path) -> list[Path]:
    """Every figure that applies to this study; returns their paths.

    The figures draw each run's CAMs (``cams.npz``, input frame) with the boxes of its ``predictions.csv``,
    so they need ``eval.frame: input``: a study scored in the original frame gets no figures (none drawn,
    ``[]``), never boxes of one frame over images of the other.
    """
    if any(r.config.eval.frame != "input" for r in results):
        return []
    paths = [
        cams_side_by_side(study, settings, folder / gallery_name(study)),
        iou_histograms(study, settings, folder / "iou_hist.png"),
        boxacc_vs_tau(study, settings, folder / "boxacc_vs_tau.png"),
        cam_area(study, settings, folder / "cam_area.png"),
    ]
    grid_keys = {key for key, _ in study.grid}
    if "model.lse_r" in grid_keys:
        paths.append(lse_sweep(study, results, folder / "lse_sweep.png"))
    if grid_keys & {"model.input_size", "model.feature_stride"}:
        paths.append(map_resolution(study, results, folder / "map_resolution.png"))
    if _validated(results):
        paths.append(learning_curves(study, settings, folder / "learning_curves.png"))
    return paths
