"""Human-facing output of a run: the metrics table, the CAM gallery figure, and the drawing they share.

:func:`overlay_cam` is the one CAM overlay (jet at alpha 0.45 over the image),
used by the gallery, the study's figures and ``bench cam``; :func:`save_figure`
writes every matplotlib figure atomically (:mod:`bench.atomic_files`).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from bench.atomic_files import atomic_path  # noqa: E402
from bench.run.folder import CURVE_COLUMN, VAL_CURVE_COLUMN  # noqa: E402
from bench.scoring.evaluation import GalleryItem  # noqa: E402
from bench.scoring.metric_names import RUN_METRICS  # noqa: E402
from bench.scoring.threshold_free_metrics import ThresholdSweepMeter  # noqa: E402

CAM_COLORMAP = "jet"
CAM_ALPHA = 0.45  # the CAM's share of each overlay pixel: enough to read the heat, the image still shows



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


def save_gallery(items: list[GalleryItem], class_names: list[str], path: Path, title: str) -> None:
    """A grid of images with the top-1 CAM overlaid (jet), GT boxes in green, predicted box in red."""
    if not items:
        return
    columns = min(4, len(items))
    rows = math.ceil(len(items) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.4 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, item in zip(axes.flat, items):
        axis.imshow(overlay_cam(item.image, item.cam))
        for box in item.gt_boxes:
            draw_box(axis, box, "lime")
        draw_box(axis, item.box, "red")
        mark = "" if item.predicted == item.label else " (wrong)"
        name = class_names[item.predicted]
        axis.set_title(f"{name}{mark}\nIoU {item.iou:.2f}", fontsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    save_figure(figure, path)


def write_sweep_curves(test: ThresholdSweepMeter, val: ThresholdSweepMeter | None, csv_path: Path,
                       figure_path: Path, title: str) -> None:
    """``box_acc_curves.csv`` (one row per tau) and ``boxacc_vs_tau.png`` of the threshold sweep."""
    curves = test.compute()["curves"]
    if val is not None:
        curves[VAL_CURVE_COLUMN] = val.compute()["curves"][CURVE_COLUMN]
    columns = list(curves)
    with atomic_path(csv_path) as temporary, temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in zip(*(curves[column] for column in columns)):
            writer.writerow([f"{value:.6g}" for value in row])
    figure, axis = plt.subplots(figsize=(6, 4))
    for column in columns[1:]:
        if column.startswith("box_acc") or column.startswith("val_"):
            axis.plot(curves["tau"], curves[column], label=column.replace("_", " "))
    axis.set_xlabel("tau (normalized CAM threshold)")
    axis.set_ylabel("BoxAcc (%)")
    axis.set_ylim(0, 100)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    save_figure(figure, figure_path)


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


def save_history_figure(history: list[dict[str, float]], path: Path, title: str) -> None:
    """Learning curves: training loss (left); train accuracy, val top-1 cls error and val GT-known loc (right)."""
    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, percent_axis) = plt.subplots(1, 2, figsize=(9, 3.4))
    loss_axis.plot(epochs, [row["loss"] for row in history], marker="o", color="tab:gray")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("training loss")
    curves = (("accuracy", "train accuracy", "tab:gray"), ("val_top1_cls_error", "val top-1 cls error", "tab:red"),
              ("val_gt_known_loc_acc", "val GT-known loc", "tab:blue"))
    for key, label, colour in curves:
        if any(key in row for row in history):
            percent_axis.plot(epochs, [row.get(key, float("nan")) for row in history], marker="o", label=label,
                              color=colour)
    percent_axis.set_xlabel("epoch")
    percent_axis.set_ylabel("%")
    percent_axis.set_ylim(0, 100)
    percent_axis.legend(fontsize=7)
    for axis in (loss_axis, percent_axis):
        axis.grid(alpha=0.3)
        axis.xaxis.get_major_locator().set_params(integer=True)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    save_figure(figure, path)
