"""Human-facing output of a run: the metrics table, the CAM gallery figure, and the drawing they share.

:func:`overlay_cam` is the one CAM overlay (jet at alpha 0.45 over the image),
used by the gallery, the study's figures and ``bench cam``; :func:`box_verdict`
the one caption of a box's IoU, hit or miss; :func:`save_figure` writes every
matplotlib figure atomically (:mod:`bench.atomic_files`).

Each figure marks what the run's claims rest on: the learning curves the epoch
chosen on val (whose test numbers are ``val_selected/``), the BoxAcc curves the
three taus the numbers are read at (:func:`tau_marks`), the gallery each box's
hit or miss. The ``*_figure`` functions return the figure unsaved, so a test can
read what it draws.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from bench.atomic_files import atomic_path, write_csv_rows  # noqa: E402
from bench.run.folder import CURVE_COLUMN, VAL_CURVE_COLUMN  # noqa: E402
from bench.scoring.evaluation import GalleryItem  # noqa: E402
from bench.scoring.fixed_tau_metrics import IOU_THRESHOLD  # noqa: E402
from bench.scoring.metric_names import RUN_METRICS  # noqa: E402
from bench.scoring.threshold_free_metrics import IOU_DELTAS, ThresholdSweepMeter  # noqa: E402
from bench.training.loop import loss_term_columns, loss_term_label  # noqa: E402

CAM_COLORMAP = "jet"
CAM_ALPHA = 0.45  # the CAM's share of each overlay pixel: enough to read the heat, the image still shows
HIT_COLOUR, MISS_COLOUR = "tab:green", "tab:red"  # a caption's box verdict


def format_metrics(metrics: dict[str, float], protocol: str) -> str:
    """A plain-text table of the run's metrics, with the protocol that produced them."""
    width = max(len(label) for label in RUN_METRICS.values())
    lines = [f"{metrics['num_images']} images, {protocol}"]
    for key, label in RUN_METRICS.items():
        value = metrics[key]
        lines.append(f"  {label:<{width}}  {value:7.3f}" if key == "mean_iou" else f"  {label:<{width}}  {value:7.2f}")
    return "\n".join(lines)


def overlay_cam(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """``cam (H, W)`` in jet blended over ``image (H, W, 3)`` uint8 -> ``(H, W, 3)`` uint8.

    ``cam`` is a normalized map; values outside ``[0, 1]`` are clipped (jet's
    blue at 0, dark red at 1). Each pixel is
    ``round((1 - CAM_ALPHA) * image + CAM_ALPHA * 255 * jet(cam))``.
    """
    image, cam = np.asarray(image), np.asarray(cam)
    if image.ndim != 3 or image.shape[2] != 3 or cam.shape != image.shape[:2]:
        raise ValueError(f"overlay_cam needs image (H, W, 3) and cam (H, W) of the same H, W; got image "
                         f"{image.shape} and cam {cam.shape}")
    heat = matplotlib.colormaps[CAM_COLORMAP](np.clip(cam, 0.0, 1.0))[..., :3] * 255.0  # (H, W, 3) in [0, 255]
    blended = (1.0 - CAM_ALPHA) * image.astype(np.float64) + CAM_ALPHA * heat
    return np.rint(blended).astype(np.uint8)


def save_figure(figure: plt.Figure, path: Path, dpi: int = 100) -> Path:
    """Write ``figure`` as PNG to ``path`` atomically, close it, return ``path``."""
    try:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, dpi=dpi, format="png")
    finally:
        plt.close(figure)
    return path


def draw_box(axis: plt.Axes, box, colour: str) -> None:
    x0, y0, x1, y1 = (float(v) for v in box)
    # Box edges are pixel edges; imshow puts pixel centres on integers, hence the -0.5.
    axis.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=1.5))


def box_verdict(iou: float) -> tuple[str, str]:
    """A box's caption and its colour: ``("✓ hit: IoU 0.57 ≥ 0.5", HIT_COLOUR)`` or ``("✗ miss: ...", MISS_COLOUR)``.

    A hit is IoU >= :data:`bench.scoring.fixed_tau_metrics.IOU_THRESHOLD`, the metrics' rule (exactly 0.5
    is a hit). The IoU shows 2 decimals; a miss that would round up to the threshold (0.497) is shown
    rounded down (0.49), so the number never contradicts the verdict.
    """
    if iou >= IOU_THRESHOLD:
        return f"\u2713 hit: IoU {iou:.2f} \u2265 {IOU_THRESHOLD:g}", HIT_COLOUR
    shown = f"{iou:.2f}" if round(iou, 2) < IOU_THRESHOLD else f"{math.floor(iou * 100) / 100:.2f}"
    return f"\u2717 miss: IoU {shown} < {IOU_THRESHOLD:g}", MISS_COLOUR


def caption_box(axis: plt.Axes, iou: float) -> None:
    """:func:`box_verdict` of ``iou`` under the image of ``axis``, in its colour."""
    text, colour = box_verdict(iou)
    axis.text(0.5, -0.02, text, transform=axis.transAxes, ha="center", va="top", fontsize=8, color=colour,
              fontweight="bold")


def gallery_figure(items: list[GalleryItem], class_names: list[str], title: str) -> plt.Figure:
    """A grid of images with the top-1 CAM overlaid (jet), GT boxes in green, predicted box in red; above each
    image its predicted class, below it the top-1 box's hit or miss (:func:`box_verdict`)."""
    columns = min(4, len(items))
    rows = math.ceil(len(items) / columns)
    # Constrained layout keeps the title, each class name and each verdict clear of the images around them.
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.6 * rows + 0.6), squeeze=False,
                                layout="constrained")
    for axis in axes.flat:
        axis.axis("off")
    for axis, item in zip(axes.flat, items):
        axis.imshow(overlay_cam(item.image, item.cam))
        for box in item.gt_boxes:
            draw_box(axis, box, "lime")
        draw_box(axis, item.box, "red")
        mark = "" if item.predicted == item.label else " (wrong class)"
        axis.set_title(f"{class_names[item.predicted]}{mark}", fontsize=7)
        caption_box(axis, item.iou)
    rule = f"hit: the top-1 box has IoU \u2265 {IOU_THRESHOLD:g} with a ground-truth box"
    figure.suptitle(textwrap.fill(f"{title}; {rule}", width=int(figure.get_figwidth() * 11)), fontsize=10)
    return figure


def save_gallery(items: list[GalleryItem], class_names: list[str], path: Path, title: str) -> None:
    """:func:`gallery_figure` as PNG (nothing when there are no items)."""
    if items:
        save_figure(gallery_figure(items, class_names, title), path)


def write_sweep_curves(test: ThresholdSweepMeter, val: ThresholdSweepMeter | None, csv_path: Path,
                       figure_path: Path, title: str, marks: list[TauMark]) -> None:
    """``box_acc_curves.csv`` (one row per tau) and ``boxacc_vs_tau.png`` of the threshold sweep, the taus
    ``marks`` (:func:`tau_marks`) marked on it."""
    curves = test.compute()["curves"]
    if val is not None:
        curves[VAL_CURVE_COLUMN] = val.compute()["curves"][CURVE_COLUMN]
    columns = list(curves)
    write_csv_rows(csv_path, columns, ([f"{value:.6g}" for value in row]
                                       for row in zip(*(curves[column] for column in columns))))
    save_figure(sweep_figure(curves, title, marks), figure_path)


class TauMark(NamedTuple):
    """A tau that a BoxAcc-vs-tau figure marks with a vertical line."""

    tau: float
    label: str  # its legend entry: what the tau is and which numbers are read at it
    colour: str
    style: str  # matplotlib line style


def tau_marks(summary: dict, fixed_tau: float, split: str) -> list[TauMark]:
    """The taus the run's numbers are read at, from the ``sweep`` section of ``metrics.json`` (``summary``):

    * ``fixed_tau`` (``eval.tau``): every fixed-tau metric (top-1 loc error, GT-known loc, ...);
    * the tau chosen on val (``summary["calibrated"]["tau"]``, when the run calibrates): the tau-from-val numbers;
    * the oracle tau (``summary["max_box_acc"]["tau"]``): MaxBoxAcc's, the best BoxAcc on ``split`` itself.
    """
    marks = [TauMark(fixed_tau, f"tau = {fixed_tau:g}, fixed (eval.tau): the fixed-tau metrics", "black", "-.")]
    if "calibrated" in summary:
        tau = summary["calibrated"]["tau"]
        marks.append(TauMark(tau, f"tau = {tau:g}, chosen on val (best val BoxAcc)", "tab:purple", "--"))
    tau = summary["max_box_acc"]["tau"]
    marks.append(TauMark(tau, f"tau = {tau:g}, oracle: best on {split} (MaxBoxAcc)", "tab:blue", ":"))
    return marks


# How each curve of box_acc_curves.csv is drawn: (legend label, colour, line style, line width, z-order).
# The largest component's curve (the paper's box) is drawn first, wide and solid; the all-components curves
# dashed and thin over it, so where two coincide both still show.
CURVE_STYLES = {
    CURVE_COLUMN: ("largest component, IoU \u2265 0.5", "tab:blue", "-", 3.0, 2),
    **{f"box_acc_all_{delta:g}": (f"all components (best match), IoU \u2265 {delta:g}", colour, "--", 1.3, 3)
       for delta, colour in zip(IOU_DELTAS, ("tab:orange", "tab:green", "tab:red"))},
    VAL_CURVE_COLUMN: ("val split: largest component, IoU \u2265 0.5", "tab:purple", "-", 1.3, 4),
}


def sweep_figure(curves: dict[str, list[float]], title: str, marks: list[TauMark]) -> plt.Figure:
    """BoxAcc against tau: the curves of :data:`CURVE_STYLES` that ``curves`` has, and a vertical line per mark."""
    figure, axis = plt.subplots(figsize=(9, 4.2), layout="constrained")
    for column, (label, colour, style, width, order) in CURVE_STYLES.items():
        if column in curves:
            axis.plot(curves["tau"], curves[column], label=label, color=colour, linestyle=style, linewidth=width,
                      zorder=order)
    for mark in marks:
        axis.axvline(mark.tau, color=mark.colour, linestyle=mark.style, linewidth=1.4, label=mark.label, zorder=5)
    axis.set_xlabel("tau (normalized CAM threshold)")
    axis.set_ylabel("BoxAcc (%)")
    axis.set_xlim(-0.02, 1.0)  # a mark at tau = 0 stays clear of the axis line
    axis.set_ylim(0, 100)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axis.set_title(title, fontsize=9)
    return figure


def format_sweep(summary: dict) -> str:
    """Plain-text lines of the threshold-sweep metrics, each with its protocol."""
    lines = [f"  MaxBoxAcc (%)          {summary['max_box_acc']['value']:7.2f}  at tau "
             f"{summary['max_box_acc']['tau']:g} [{summary['max_box_acc']['protocol']}]",
             f"  MaxBoxAccV2 (%)        {summary['max_box_acc_v2']['value']:7.2f}  "
             f"[{summary['max_box_acc_v2']['protocol']}]"]
    if "pxap" in summary:
        lines.append(f"  PxAP (%)               {summary['pxap']['value']:7.2f}  [{summary['pxap']['protocol']}]")
    if "calibrated" in summary:
        calibrated = summary["calibrated"]
        lines.append(f"  top-1 / top-5 loc error (%) {calibrated['top1_loc_error']:6.2f} / "
                     f"{calibrated['top5_loc_error']:6.2f}, GT-known loc acc {calibrated['gt_known_loc_acc']:.2f} "
                     f"[{calibrated['protocol']}]")
    return "\n".join(lines)


def format_selected(final: dict, selected: dict, split: str) -> str:
    """The val-selected epoch's headline metrics beside the final epoch's, one line.

    ``final`` and ``selected``: ``{"metrics", "sweep", ...}`` as the pipeline's evaluation returns them.
    """
    parts = []
    for key, label in (("top1_cls_error", "top-1 cls err"), ("top1_loc_error", "top-1 loc err"),
                       ("gt_known_loc_acc", "GT-known loc")):
        parts.append(f"{label} {selected['metrics'][key]:.2f} (final {final['metrics'][key]:.2f})")
    v2 = selected["sweep"]["max_box_acc_v2"]["value"]
    parts.append(f"MaxBoxAccV2 {v2:.2f} (final {final['sweep']['max_box_acc_v2']['value']:.2f})")
    return ", ".join(parts) + f" [{split} split]"


def history_figure(history: list[dict[str, float]], title: str, selected: int | None,
                   selected_by: str) -> plt.Figure:
    """Learning curves: training loss (left); train accuracy, val top-1 cls error and val GT-known loc (right).

    A loss of several terms (ACoL, SPG: ``loss_<term>`` columns) draws each term dashed under the total.

    ``selected``: the epoch chosen on val (None: none), marked on both panels by a vertical line whose legend
    entry names ``selected_by``, the selection rule, and by a star on the val curve it was chosen on.
    """
    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, percent_axis) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    loss_lines = loss_axis.plot(epochs, [row["loss"] for row in history], marker="o", color="tab:gray", label="total")
    for column in loss_term_columns(dict.fromkeys(key for row in history for key in row)):
        loss_lines += loss_axis.plot(epochs, [row.get(column, float("nan")) for row in history], marker=".",
                                     linestyle="--", linewidth=1, label=loss_term_label(column))
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("training loss")
    curves = (("accuracy", "train accuracy", "tab:gray"), ("val_top1_cls_error", "val top-1 cls error", "tab:red"),
              ("val_gt_known_loc_acc", "val GT-known loc", "tab:blue"))
    for key, label, colour in curves:
        if any(key in row for row in history):
            percent_axis.plot(epochs, [row.get(key, float("nan")) for row in history], marker="o", label=label,
                              color=colour)
    if selected is not None:
        label = f"epoch {selected}, selected on val ({selected_by})"
        for axis in (loss_axis, percent_axis):
            axis.axvline(selected, color="black", linestyle="--", linewidth=1.2, label=label, zorder=1)
        chosen = [row for row in history if row["epoch"] == selected and "val_gt_known_loc_acc" in row]
        if chosen:
            percent_axis.plot([selected], [chosen[0]["val_gt_known_loc_acc"]], marker="*", markersize=16,
                              color="tab:blue", markeredgecolor="black", linestyle="none", zorder=5)
    percent_axis.set_xlabel("epoch")
    percent_axis.set_ylabel("%")
    percent_axis.set_ylim(0, 100)
    percent_axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if len(loss_lines) > 1:  # the terms' legend (the selected epoch is named in the other panel's)
        loss_axis.legend(handles=loss_lines, fontsize=6, loc="best")
    for axis in (loss_axis, percent_axis):
        axis.grid(alpha=0.3)
        axis.xaxis.get_major_locator().set_params(integer=True)
    figure.suptitle(title, fontsize=9)
    return figure


def save_history_figure(history: list[dict[str, float]], path: Path, title: str, selected: int | None,
                        selected_by: str) -> None:
    """:func:`history_figure` as PNG."""
    save_figure(history_figure(history, title, selected, selected_by), path)
