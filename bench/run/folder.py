"""What state a run folder is in, read from its ``manifest.json``.

A run writes ``status: running`` (with its host and process id) before any
work, and ``status: complete`` only after every result file is in place. A run
that stopped on an error records ``failed``; one stopped by Ctrl-C records
``interrupted``; one killed outright (SIGKILL, power loss) still says
``running``, and is recognized as interrupted when its process no longer
exists on this host. Anything that lists results must use :func:`finished_runs`,
so that a partial folder is never reported as a result.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from bench.config import RunConfig
from bench.scoring.threshold_free_metrics import CURVE_COLUMN  # re-exported: the run folder's curve column

COMPLETE, RUNNING, INTERRUPTED, FAILED, UNKNOWN = "complete", "running", "interrupted", "failed", "unknown"

# The run folder's file names, one place (bench.run.pipeline writes them; studies and tools read them).
CONFIG_FILE = "config.yaml"  # the resolved config
MANIFEST_FILE = "manifest.json"  # status, versions, timings, per-epoch history
CHECKPOINT_FILE = "checkpoint.pt"  # full training state after the last finished epoch
BEST_EPOCH_FILE = "best_epoch.pt"  # model weights of the epoch best on val localization
HISTORY_FILE = "history.csv"  # one row per epoch: training loss / accuracy, val metrics
HISTORY_FIGURE = "history.png"
# One row per epoch and val image: that image's outcomes after that epoch (paired comparisons along training).
VAL_BY_EPOCH_FILE = "val_by_epoch.csv"
VAL_BY_EPOCH_COLUMNS = ("epoch", "image_id", "top1_correct", "top1_loc", "gt_known_loc")
CAMS_FILE = "cams.npz"  # top-1 and GT-class CAMs at feature resolution (the final epoch's)
GALLERY_FIGURE = "gallery.png"
PAGE_FILE = "index.html"  # the run's web page (bench.html); also the study folder's
PAGE_DIR = "page"  # the page's thumbnails, style sheet and script
SELECTED_DIR = "val_selected"  # the SCORED_FILES of the val-selected epoch
# Written for each scored epoch (the final one in the run folder, the val-selected one in SELECTED_DIR).
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
CURVES_FILE = "box_acc_curves.csv"  # one row per tau: CURVE_COLUMN and the other curves of bench.scoring.threshold_free_metrics
CURVES_FIGURE = "boxacc_vs_tau.png"
# Each image's box hits at every tau (bench.scoring.threshold_free_metrics.BoxHits): what a study's paired
# bootstrap of MaxBoxAcc / MaxBoxAccV2 resamples. Runs scored before it existed lack it (the rest still works).
BOX_HITS_FILE = "box_hits.npz"
SCORED_FILES = (METRICS_FILE, PREDICTIONS_FILE, CURVES_FILE, CURVES_FIGURE, BOX_HITS_FILE)
VAL_CURVE_COLUMN = f"val_{CURVE_COLUMN}"  # the same on the val split
# Written by ``bench methods`` (bench.run.method_comparison) into METHODS_DIR of a finished run.
METHODS_DIR = "methods"
METHODS_TABLE = "methods.csv"  # one row per map method: metrics, ms per image, overhead over the forward pass
METHODS_MARKDOWN = "methods.md"
METHODS_FIGURE = "methods.png"  # the same images, one column per method
METHOD_PREDICTIONS = "predictions_{method}.csv"  # each method's per-image rows (bench.scoring.image_rows.PREDICTION_COLUMNS)
# Each method's per-image faithfulness values (bench.scoring.faithfulness.IMAGE_VALUES) on the first images.
METHOD_FAITHFULNESS = "faithfulness_{method}.csv"
# Each method's pointing game per image (bench.scoring.pointing_game.PointingMeter.images), every scored image.
METHOD_POINTING = "pointing_{method}.csv"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def run_status(run_dir: Path) -> str:
    """One of ``complete``, ``running``, ``interrupted``, ``failed``, ``unknown`` (no readable manifest).

    ``running`` is only returned for a process that is alive on this host or
    runs on another host (which cannot be checked from here).
    """
    try:
        manifest = json.loads((Path(run_dir) / MANIFEST_FILE).read_text(encoding="utf-8"))
        status = manifest["status"]
    except (OSError, ValueError, KeyError, TypeError):
        return UNKNOWN
    if status == RUNNING and manifest.get("host") == socket.gethostname() and isinstance(manifest.get("pid"), int):
        return RUNNING if _process_alive(manifest["pid"]) else INTERRUPTED
    return status if status in (COMPLETE, RUNNING, INTERRUPTED, FAILED) else UNKNOWN


def resumable(config: RunConfig) -> bool:
    """Whether an unfinished run of ``config`` can be continued (``--resume``) rather than started again.

    Not in ``train.mode: head``: it caches the backbone's maps in memory and
    trains the head in minutes, so it keeps no checkpoint to continue from.
    """
    return config.train.mode != "head"


def running_process(run_dir: Path) -> str:
    """Who runs the ``running`` run in ``run_dir``, and what to do if it is gone, for error messages."""
    try:
        manifest = json.loads((Path(run_dir) / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "a process named in its manifest.json"
    pid, host = manifest.get("pid"), manifest.get("host")
    if host == socket.gethostname():
        return f"process {pid} on this host"
    return (f"process {pid} on host {host}, which cannot be checked from here: if it is gone (its node died), set "
            f"\"status\" to \"interrupted\" in {Path(run_dir) / MANIFEST_FILE} to continue the run")


def finished_runs(results_dir: Path) -> list[Path]:
    """The run folders under ``results_dir`` whose manifest says complete, sorted by name."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        return []
    return sorted(folder for folder in results_dir.iterdir() if folder.is_dir() and run_status(folder) == COMPLETE)
