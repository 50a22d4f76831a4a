"""Helpers shared by the tests (imported as ``helpers``; fixtures stay in conftest.py)."""

import csv
import hashlib
import subprocess
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from PIL import Image

from bench.config import RunConfig, load_config

REPO = Path(__file__).resolve().parent.parent
TINY_CONFIG = REPO / "configs" / "tiny.yaml"

# What a finished run folder holds (bench.run.pipeline), and the columns of its history.csv.
RUN_FILES = {"config.yaml", "classes.txt", "manifest.json", "checkpoint.pt", "metrics.json", "predictions.csv",
             "box_hits.npz", "cams.npz", "gallery.png", "box_acc_curves.csv", "boxacc_vs_tau.png", "history.csv", "history.png",
             "val_by_epoch.csv",
             "best_epoch.pt", "val_selected", "index.html", "page"}
SELECTED_FILES = {"metrics.json", "predictions.csv", "box_acc_curves.csv", "boxacc_vs_tau.png", "box_hits.npz"}
HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "lr", "seconds", "val_top1_cls_error", "val_gt_known_loc_acc",
                   "val_top1_loc_error"]


def read_rows(path: Path) -> list[dict]:
    """The rows of the CSV file ``path`` as dicts (its header's keys, string values)."""
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


class FinishedRun(NamedTuple):
    """A completed run: its resolved config (``config.run_dir`` is its folder) and the metrics ``run`` returned."""
    config: RunConfig
    metrics: dict


def tiny_run_config(data_root: Path, results_dir: Path, *overrides: str) -> RunConfig:
    """configs/tiny.yaml with its data in ``data_root`` and its run folder under ``results_dir``."""
    return load_config(TINY_CONFIG, [f"data_root={data_root}", f"results_dir={results_dir}", *overrides])


def hand_made_run(pooling, seed, top1_correct, top1_loc, top5_loc, gt_known, iou, curve, overrides=()):
    """A RunResult as read from a run folder, with per-image values chosen by hand (4 test images).

    Its config is configs/tiny.yaml with ``pooling``, ``seed`` and ``overrides`` (``"train.lr=0.01"``, ...).
    """
    from bench.study.results import PER_IMAGE_METRICS, RunResult

    columns = {"top1_correct": top1_correct, "top1_loc": top1_loc, "top5_loc": top5_loc, "gt_known_loc": gt_known,
               "top1_iou": iou}
    per_image = {key: transform(np.array(columns[column], dtype=float))
                 for key, (column, transform) in PER_IMAGE_METRICS.items()}
    config = load_config(TINY_CONFIG, [f"model.pooling={pooling}", f"seed={seed}", *overrides])
    boxes = np.zeros((4, 4))
    return RunResult(config=config, metrics={"protocol": "hand-made"}, image_ids=["a", "b", "c", "d"],
                     per_image=per_image, gt_boxes=[np.ones((1, 4))] * 4, gt_class_boxes=boxes,
                     gt_class_iou=np.zeros(4), gt_class_cams=np.zeros((4, 2, 2), np.float32),
                     box_acc_curve=(np.array([0.0, 0.5]), np.array(curve, dtype=float)))


def folder_fingerprint(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``folder`` by relative path: (mtime in ns, SHA-256 of its bytes)."""
    def fingerprint(path: Path) -> tuple[int, str]:
        return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()

    return {path.relative_to(folder).as_posix(): fingerprint(path) for path in folder.rglob("*") if path.is_file()}


def run_to_the_end(command: list[str], timeout: float, **options) -> subprocess.CompletedProcess:
    """``subprocess.run(command, capture_output=True, text=True)`` that fails the test after ``timeout`` seconds.

    On timeout the process gets SIGTERM first: torchrun then stops its workers, which run in sessions of their
    own and would outlive a SIGKILLed launcher (``subprocess.run``'s timeout), spinning on after the test.
    """
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                stdout, stderr = process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
            pytest.fail(f"{' '.join(command)} did not finish in {timeout} s; stopped it. stderr:\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


METADATA = {
    "image_ids.txt": "b/two.jpg\na/one.jpg\n",
    "class_labels.txt": "a/one.jpg,1\nb/two.jpg,0\n",
    "image_sizes.txt": "a/one.jpg,200,100\nb/two.jpg,50,40\n",
    "localization.txt": "a/one.jpg,20,10,120,60\nb/two.jpg,0.5,1.25,10.75,40\na/one.jpg,0,0,200,100\n",
}


def write_dataset(root, files=None, classes="0,cat\n1,dog\n", split="val"):
    """Hand-written metadata (and no images) under ``root``."""
    folder = root / "metadata" / split
    folder.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text(classes)
    for name, text in {**METADATA, **(files or {})}.items():
        if text is not None:
            (folder / name).write_text(text)
    return root


def write_image(root, image_id, height, width, colour=(10, 20, 30)):
    path = root / "images" / image_id
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((height, width, 3), dtype=np.uint8) + np.array(colour, dtype=np.uint8)
    Image.fromarray(pixels).save(path)  # PNG content regardless of suffix: lossless for exact checks
    return path

