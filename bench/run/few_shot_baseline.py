"""The few-shot baseline of a finished run's data and map grid: trained on the val masks, scored, kept in a folder.

wsolevaluation's few-shot baseline spends the val split's full supervision
(CUB: 5 images per class) on *training* a localizer instead of on choosing a
method's hyperparameters; it beats every weakly supervised method there. Here
(:func:`ensure_few_shot`):

1. the run's backbone, frozen, and a 1x1 convolution to one foreground logit
   per cell (:mod:`bench.model.foreground_head`) are trained on every val
   image's mask with a fixed recipe (:mod:`bench.training.few_shot`);
2. its map replaces the CAM in the run's own evaluation of its ``eval.split``
   (:func:`bench.run.method_comparison.score_method` with
   :func:`bench.scoring.few_shot_maps.foreground_maps`): same frame, threshold
   list, normalization and box rule, so its GT-known loc at ``eval.tau``,
   MaxBoxAcc, MaxBoxAccV2 and PxAP come from the same code as the CAM's. No
   tau is chosen on val (the val images trained it); the classes are the run's
   network's (the baseline has no classifier, so its top-1 numbers are not its own).

What the result depends on is its key (:func:`few_shot_key`): the dataset and
``data_root``, the backbone, its weights and stride, the input size, the
flip, the recipe and the scoring keys. The folder ``<cache_root>/<key hash>/``
holds it (:data:`KEY_FILE`, :data:`SCORES_FILE`, :data:`HEAD_FILE`,
:data:`LOSS_FILE`, :data:`PREDICTIONS`); it is built in a temporary folder and
renamed once complete, and a folder whose key matches is reused as it is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bench.atomic_files import TEMPORARY_SUFFIX, write_csv_rows, write_text
from bench.config import RunConfig
from bench.data.images import check_images
from bench.errors import InputError
from bench.model.foreground_head import build_foreground_net
from bench.run.folder import CHECKPOINT_FILE, METHOD_PREDICTIONS
from bench.run.method_comparison import MethodsRun, score_method
from bench.run.pipeline import prepare_dataset
from bench.run.trained_model import load_trained_network
from bench.scoring.few_shot_maps import foreground_maps
from bench.scoring.protocols import UNSCORED_EVAL_KEYS
from bench.training.few_shot import RECIPE, FewShotRecipe, train_few_shot
from bench.training.loop import resolve_precision

FEW_SHOT = "fewshot"  # its name in file names (predictions_fewshot.csv)
KEY_FILE = "key.json"  # what the result depends on (few_shot_key)
SCORES_FILE = "scores.json"  # {"row": methods.csv's columns, "training": what it trained on, how long it took}
HEAD_FILE = "foreground_head.pt"  # the trained head's state dict (the frozen body is rebuilt from the key)
LOSS_FILE = "training_loss.csv"  # the training objective at each L-BFGS evaluation
PREDICTIONS = METHOD_PREDICTIONS.format(method=FEW_SHOT)  # per-image rows (bench.scoring.image_rows)
KEY_VERSION = 1  # raised when the code changes what a key's result would be


class FewShotError(InputError, ValueError):
    """The few-shot baseline cannot be trained on this run's data (no val image, another normalization)."""


def few_shot_key(config: RunConfig, recipe: FewShotRecipe = RECIPE) -> dict:
    """Everything the baseline's scores depend on, as JSON-ready values; nothing of the run's training but the
    flip (``train.augment.hflip``, which the recipe takes from the run)."""
    model = config.model
    return {
        "version": KEY_VERSION,
        "dataset": dataclasses.asdict(config.dataset),
        "data_root": str(config.data_root),
        "model": {"backbone": model.backbone, "pretrained": model.pretrained, "weights": model.weights,
                  "feature_stride": model.feature_stride, "input_size": model.input_size},
        "hflip": config.train.augment.hflip,
        "recipe": dataclasses.asdict(recipe),
        "eval": {field.name: getattr(config.eval, field.name) for field in dataclasses.fields(config.eval)
                 if field.name not in UNSCORED_EVAL_KEYS},
    }


def _key_text(key: dict) -> str:
    return json.dumps(key, sort_keys=True, indent=1, default=str) + "\n"


def key_folder(cache_root: Path, key: dict) -> Path:
    """``cache_root / <the first 16 hex digits of the key's SHA-256>``."""
    return Path(cache_root) / hashlib.sha256(_key_text(key).encode("utf-8")).hexdigest()[:16]


def read_cached(folder: Path, key: dict) -> dict | None:
    """The folder's :data:`SCORES_FILE` if it is a finished baseline of ``key``; None otherwise."""
    try:
        if (folder / KEY_FILE).read_text(encoding="utf-8") != _key_text(key) or not (folder / PREDICTIONS).is_file():
            return None
        return json.loads((folder / SCORES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def ensure_few_shot(config: RunConfig, cache_root: Path, log: Callable[[str], None] = print) -> tuple[Path, dict]:
    """The few-shot baseline of the finished run ``config``'s data and grid: ``(its folder, its scores)``.

    Reused from ``cache_root`` when a finished folder of its key is there; otherwise trained and scored
    (module docstring), the folder built in ``<folder>.tmp`` and renamed once complete (removed on any error).
    ``config``: the run as the caller has it (its ``data_root`` is read; the folder's checkpoint gives the classes).
    """
    key = few_shot_key(config)
    folder = key_folder(cache_root, key)
    cached = read_cached(folder, key)
    if cached is not None:
        return folder, cached
    building = folder.with_name(folder.name + TEMPORARY_SUFFIX)
    shutil.rmtree(building, ignore_errors=True)  # a build an earlier kill interrupted
    building.mkdir(parents=True)
    try:
        write_text(building / KEY_FILE, _key_text(key))
        scores = _build(config, building, log)
        if folder.exists():
            shutil.rmtree(folder)  # another key's folder under the same hash, or an unreadable one
        building.rename(folder)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return folder, scores


def per_class_text(labels: list[int]) -> str:
    """``"5 per class"`` when every class present has the same count, else ``"3 to 5 per class"``."""
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    low, high = int(counts.min()), int(counts.max())
    return f"{low} per class" if low == high else f"{low} to {high} per class"


def _build(config: RunConfig, out_dir: Path, log: Callable[[str], None]) -> dict:
    """Train the head on the val split, score the map on ``eval.split``; write the folder's files. Its scores."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dataset = prepare_dataset(config, progress=False)
    val, _ = check_images(dataset.splits["val"], config.dataset.skip_bad, "val")
    if not val:
        raise FewShotError(f"{dataset.source}: the few-shot baseline trains on the val split's masks (or boxes), "
                           f"and it has no image")
    per_class = per_class_text([sample.label for sample in val])
    network = build_foreground_net(config.model, seed=RECIPE.seed)
    log(f"few-shot baseline: training a foreground head on {config.model.backbone}'s frozen features of "
        f"{len(val)} val images ({per_class}), L-BFGS, at most {RECIPE.iterations} iterations")
    training = train_few_shot(network, val, config.model.input_size, config.train.augment.hflip, device)
    torch.save(network.head.state_dict(), out_dir / HEAD_FILE)
    write_csv_rows(out_dir / LOSS_FILE, ["evaluation", "loss"],
                   ([count, f"{loss:.6g}"] for count, loss in enumerate(training.losses, start=1)))

    trained, class_names, _ = load_trained_network(config.run_dir / CHECKPOINT_FILE)
    if (tuple(trained.mean), tuple(trained.std)) != (tuple(network.mean), tuple(network.std)):
        raise FewShotError(f"{config.run_dir}: the run's network normalizes its input with mean {trained.mean} / "
                           f"std {trained.std}, the baseline's backbone with {network.mean} / {network.std}")
    run = MethodsRun(config.run_dir, config, trained.to(device).eval(), class_names, device,
                     resolve_precision(config.precision, device))
    split = config.eval.split
    samples, _ = check_images(dataset.splits[split], config.dataset.skip_bad, split)
    log(f"few-shot baseline: scoring {len(samples)} {split} images (classes from {config.name})")
    start, start_cpu = time.perf_counter(), time.process_time()
    row, _, _ = score_method(run, FEW_SHOT, foreground_maps(network.eval()), samples, [], out_dir, figure_images=0)
    scores = {"row": {key: float(value) for key, value in row.items()}, "training": {
        "split": "val", "images": training.images, "per_class": per_class, "maps": training.maps,
        "first_loss": training.losses[0], "last_loss": training.losses[-1], "evaluations": len(training.losses),
        "scored_images": len(samples), "device": device.type, "threads": torch.get_num_threads(),
        # wall-clock and CPU seconds (bench.training.few_shot.FewShotTraining)
        "feature_seconds": round(training.feature_seconds, 2), "train_seconds": round(training.train_seconds, 2),
        "score_seconds": round(time.perf_counter() - start, 2),
        "feature_cpu_seconds": round(training.feature_cpu_seconds, 2),
        "train_cpu_seconds": round(training.train_cpu_seconds, 2),
        "score_cpu_seconds": round(time.process_time() - start_cpu, 2)}}
    write_text(out_dir / SCORES_FILE, json.dumps(scores, indent=1, allow_nan=True) + "\n")
    return scores
