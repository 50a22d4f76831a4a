"""CAM-family methods on a finished run, scored with the run's own protocol (``bench methods``, ``study.methods``).

The network is rebuilt from the run folder's ``config.yaml`` with the final
epoch's weights (``checkpoint.pt``, the epoch ``metrics.json`` reports). For
each method (:mod:`bench.scoring.map_methods`), the maps of the top-1 and the GT class of
every image of the split go through the evaluation path of the run itself
(:func:`bench.scoring.evaluation.score_batches`, the run's ``eval`` section: frame, tau,
normalization, threshold list) and, for the tau from val, the val split's
sweep (:func:`bench.scoring.evaluation.sweep_split`). So the ``cam`` row is the run's own
``metrics.json``, recomputed.

Written to ``RUN_DIR/methods/`` (names in :mod:`bench.run.folder`), built in a
temporary folder and renamed once complete; an existing ``methods/`` is only
replaced with ``overwrite``:

* ``methods.csv`` / ``methods.md``: one row per method: top-1 / top-5 loc
  error, GT-known loc, mean IoU at the run's tau; MaxBoxAcc, MaxBoxAccV2,
  PxAP (with masks); the tau chosen on val and the top-1 loc error at it;
  milliseconds per image and the overhead over the forward pass
  (:func:`bench.scoring.map_methods.time_methods`, measured in the same process on the
  first batches of the split);
* ``methods.png``: the first images of the split, one column per method
  (top-1 class map normalized as evaluated, GT boxes green, predicted box red);
* ``predictions_<method>.csv``: each method's per-image rows.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from bench.atomic_files import TEMPORARY_SUFFIX, atomic_path, write_text  # noqa: E402
from bench.config import RunConfig, load_config  # noqa: E402
from bench.data.images import check_images  # noqa: E402
from bench.data.torch_dataset import WsolDataset, collate  # noqa: E402
from bench.errors import InputError  # noqa: E402
from bench.model.camnet import CamNet  # noqa: E402
from bench.run.figures import draw_box, overlay_cam, save_figure  # noqa: E402
from bench.run.folder import (
    CHECKPOINT_FILE,
    COMPLETE,
    CONFIG_FILE,
    METHOD_PREDICTIONS,
    METHODS_DIR,
    METHODS_FIGURE,
    METHODS_MARKDOWN,
    METHODS_TABLE,
    run_status,
)
from bench.run.pipeline import calibration_samples, prepare_dataset  # noqa: E402
from bench.run.trained_model import load_trained_network  # noqa: E402
from bench.scoring.evaluation import GalleryItem, SweepMeters, collect_results, score_batches, sweep_split  # noqa: E402
from bench.scoring.map_methods import CENTER, LIBRARY_CLASSES, METHODS, check_methods, map_method, time_methods  # noqa: E402
from bench.scoring.metric_names import METHOD_COLUMNS  # noqa: E402
from bench.scoring.prediction import MapMethod  # noqa: E402
from bench.scoring.protocols import describe_protocol, run_protocol  # noqa: E402
from bench.scoring.threshold_free_metrics import sweep_summary  # noqa: E402
from bench.training.loop import autocast, resolve_precision  # noqa: E402

COLUMNS = METHOD_COLUMNS  # methods.csv's columns after "method", with their labels in methods.md
FIGURE_IMAGES = 6


class MethodsFolderError(InputError, ValueError):
    """A run folder cannot take map methods (no finished run there, a ``methods/`` that exists); nothing was written."""


@dataclass(frozen=True)
class MethodsRun:
    """A finished run loaded for ``bench methods``: its config (``eval.split`` as asked) and its network."""

    run_dir: Path
    config: RunConfig
    network: CamNet
    class_names: list[str]
    device: torch.device
    precision: str


def check_methods_free(run_dir: Path, overwrite: bool) -> None:
    """Refuse a folder that is not a finished run, and an existing ``methods/`` without ``overwrite``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MethodsFolderError(f"run folder {run_dir} not found; give a finished run's folder, e.g. results/gap")
    status = run_status(run_dir)
    if status != COMPLETE or not (run_dir / CHECKPOINT_FILE).is_file():
        raise MethodsFolderError(f"{run_dir} holds no finished run (status: {status}; a run folder has "
                                  f"{CONFIG_FILE}, {CHECKPOINT_FILE} and a complete manifest.json); finish it first")
    if (run_dir / METHODS_DIR).exists() and not overwrite:
        raise MethodsFolderError(f"{run_dir / METHODS_DIR} already exists; pass --overwrite to replace it")


def load_run(run_dir: Path, split: str | None = None, device: torch.device | None = None) -> MethodsRun:
    """The run in ``run_dir`` with its final weights, in eval mode; ``split`` (default: the run's) is scored."""
    run_dir = Path(run_dir)
    config = load_config(run_dir / CONFIG_FILE, [] if split is None else [f"eval.split={split}"])
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    network, class_names, _ = load_trained_network(run_dir / CHECKPOINT_FILE)
    return MethodsRun(run_dir, config, network.to(device).eval(), class_names, device,
                      resolve_precision(config.precision, device))


def _loader(run: MethodsRun, samples: list) -> torch.utils.data.DataLoader:
    network, config = run.network, run.config
    images = WsolDataset(samples, config.model.input_size, network.mean, network.std, train=False)
    return torch.utils.data.DataLoader(images, batch_size=config.eval.batch_size, collate_fn=collate,
                                       num_workers=config.train.num_workers)


def score_method(run: MethodsRun, name: str, method: MapMethod | None, samples: list, val_samples: list,
                 out_dir: Path, figure_images: int) -> tuple[dict[str, float], list[GalleryItem]]:
    """Method ``name`` (its map maker ``method``, :func:`bench.scoring.map_methods.map_method`) through the run's evaluation.

    Returns its row of ``methods.csv`` (no timing) and its figure items; writes its per-image rows to ``out_dir``.
    """
    config = run.config
    eval_config = dataclasses.replace(config.eval, gallery_size=figure_images)
    # The run's protocol (eval.protocol) and threshold list, as the run's own evaluation used them.
    protocol = run_protocol(config)
    sweep = SweepMeters.for_protocol(protocol, config.eval.num_thresholds)
    val_sweep = SweepMeters.for_protocol(protocol, config.eval.num_thresholds)
    with autocast(run.device, run.precision):
        scored = score_batches(run.network, _loader(run, samples), samples, eval_config, run.device, sweep, method)
        result = collect_results(scored, out_dir / METHOD_PREDICTIONS.format(method=name))
        if val_samples:
            sweep_split(run.network, _loader(run, val_samples), val_samples, eval_config, run.device, val_sweep,
                        method)
    summary = sweep_summary(sweep.boxes, sweep.pixels, val_sweep.boxes if val_samples else None,
                            config.eval.split, config.eval.normalization, protocol)
    calibrated = summary.get("calibrated", {})
    row = {key: result.metrics[key] for key in ("top1_cls_error", "top1_loc_error", "top5_loc_error",
                                                  "gt_known_loc_acc", "mean_iou")}
    row.update(max_box_acc=summary["max_box_acc"]["value"], max_box_acc_v2=summary["max_box_acc_v2"]["value"],
               pxap=summary.get("pxap", {}).get("value", math.nan), val_tau=calibrated.get("tau", math.nan),
               top1_loc_error_val_tau=calibrated.get("top1_loc_error", math.nan))
    return row, result.gallery


def _timing_batches(run: MethodsRun, samples: list, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    batches = []
    for batch in _loader(run, samples):
        if len(batches) == count:
            break
        batches.append((batch["image"].to(run.device), batch["label"].to(run.device)))
    return batches


def write_methods_folder(run_dir: Path, methods: Sequence[str] = METHODS, split: str | None = None,
                         overwrite: bool = False, figure_images: int = FIGURE_IMAGES, timing_batches: int = 3,
                         score_batch_size: int = 64, log: Callable[[str], None] = print) -> Path:
    """Score ``methods`` on the run in ``run_dir``; write ``run_dir/methods/`` (module docstring). Returns it.

    The files are made in ``methods.tmp/``, renamed to ``methods/`` once complete and removed on any error.
    """
    methods = check_methods(methods)
    check_methods_free(run_dir, overwrite)
    run = load_run(run_dir, split)
    final_dir = Path(run_dir) / METHODS_DIR
    building = final_dir.with_name(final_dir.name + TEMPORARY_SUFFIX)
    shutil.rmtree(building, ignore_errors=True)  # a build an earlier kill interrupted
    building.mkdir()
    try:
        _build_methods_folder(run, methods, building, figure_images, timing_batches, score_batch_size, log)
        if final_dir.exists():
            shutil.rmtree(final_dir)  # overwrite was asked for (checked above)
        building.rename(final_dir)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return final_dir


def _build_methods_folder(run: MethodsRun, methods: Sequence[str], out_dir: Path, figure_images: int,
                          timing_batches: int, score_batch_size: int, log: Callable[[str], None]) -> None:
    """Score and time every method; write the table, the figure and the per-image rows into ``out_dir``."""
    config = run.config
    dataset = prepare_dataset(config, progress=False)
    samples, _ = check_images(dataset.splits[config.eval.split], config.dataset.skip_bad, config.eval.split)
    val_samples = calibration_samples(dataset, config)[0] if config.eval.calibrate else []
    makers = {name: map_method(name, run.network, score_batch_size) for name in methods}
    rows, galleries = {}, {}
    for name in methods:
        log(f"{name}: scoring {len(samples)} {config.eval.split} images"
            + (f" and sweeping {len(val_samples)} val images" if val_samples else ""))
        rows[name], galleries[name] = score_method(run, name, makers[name], samples, val_samples, out_dir,
                                                   figure_images)
    batches = _timing_batches(run, samples, timing_batches)
    timings = time_methods(run.network, makers, batches, config.eval.tau, config.eval.normalization,
                           lambda: autocast(run.device, run.precision))
    for name in methods:
        rows[name].update(ms_per_image=timings[name]["ms_per_image"], overhead=timings[name]["overhead"])
    timing_note = (f"ms / image: forward pass, top-5 classes, the top-1 and GT maps, upsampling and boxes, "
                   f"on the first {sum(len(labels) for _, labels in batches)} {config.eval.split} images "
                   f"({run.device.type}, {torch.get_num_threads()} threads, {run.precision}); x forward: that "
                   f"time over the forward pass alone ({timings['forward']['ms_per_image']:.2f} ms / image), "
                   f"timed in turn on the same batches")
    write_methods_table(out_dir, rows, config, timing_note)
    save_methods_figure(galleries, out_dir / METHODS_FIGURE,
                        f"{config.name}: top-1 class maps per method ({config.eval.split}), GT green, predicted red")


def _cell(value: float, key: str) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.3f}" if key in ("mean_iou", "val_tau", "overhead") else f"{value:.2f}"


def write_methods_table(out_dir: Path, rows: dict[str, dict[str, float]], config: RunConfig, timing_note: str) -> None:
    """``methods.csv`` (full precision) and ``methods.md`` (rounded, with the protocol and the timing rule)."""
    with atomic_path(out_dir / METHODS_TABLE) as temporary, temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", *COLUMNS])
        for name, row in rows.items():
            writer.writerow([name, *(f"{row[key]:.6g}" for key in COLUMNS)])
    protocol = describe_protocol(config.eval, config.model.input_size, maps="maps")
    lines = [f"# {config.name}: map methods ({config.model.backbone}, {config.model.pooling.upper()})", "",
             f"Fixed-tau columns: {protocol}. MaxBoxAcc / MaxBoxAccV2: oracle max over "
             f"{config.eval.num_thresholds} thresholds on {config.eval.split}; tau from val: best BoxAcc(tau, 0.5) "
             f"on the val split. Maps: the top-1 and GT class's, at the feature resolution, before any ReLU.", "",
             "| method | library class | " + " | ".join(COLUMNS.values()) + " |",
             "|---|---|" + "---:|" * len(COLUMNS)]
    for name, row in rows.items():
        library = (LIBRARY_CLASSES[name].__name__ if name in LIBRARY_CLASSES
                   else "ours (bench.scoring.center_baseline)" if name == CENTER else "ours (bench.model.cam)")
        lines.append(f"| {name} | {library} | " + " | ".join(_cell(row[key], key) for key in COLUMNS) + " |")
    lines += ["", timing_note + ".", ""]
    write_text(out_dir / METHODS_MARKDOWN, "\n".join(lines))


def save_methods_figure(galleries: dict[str, list[GalleryItem]], path: Path, title: str) -> None:
    """Rows: the same images; columns: the methods (top-1 map, GT boxes green, predicted box red, IoU)."""
    names = list(galleries)
    count = min(len(items) for items in galleries.values())
    if count == 0:
        return
    figure, axes = plt.subplots(count, len(names), figsize=(2.4 * len(names), 2.5 * count), squeeze=False)
    for column, name in enumerate(names):
        for row, item in enumerate(galleries[name][:count]):
            axis = axes[row, column]
            axis.axis("off")
            axis.imshow(overlay_cam(item.image, item.cam))
            for box in item.gt_boxes:
                draw_box(axis, box, "lime")
            draw_box(axis, item.box, "red")
            method = f"{name}\n" if row == 0 else ""
            wrong = " (wrong class)" if item.predicted != item.label else ""
            axis.set_title(f"{method}IoU {item.iou:.2f}{wrong}", fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    save_figure(figure, path)

