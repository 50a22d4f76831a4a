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

COMPLETE, RUNNING, INTERRUPTED, FAILED, UNKNOWN = "complete", "running", "interrupted", "failed", "unknown"

# The run folder's file names, one place (bench.pipeline writes them; studies and tools read them).
CHECKPOINT_FILE = "checkpoint.pt"  # full training state after the last finished epoch
BEST_EPOCH_FILE = "best_epoch.pt"  # model weights of the epoch best on val localization
HISTORY_FILE = "history.csv"  # one row per epoch: training loss / accuracy, val metrics
SELECTED_DIR = "val_selected"  # metrics.json, predictions.csv, box_acc_curves.csv of the val-selected epoch


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
        manifest = json.loads((Path(run_dir) / "manifest.json").read_text())
        status = manifest["status"]
    except (OSError, ValueError, KeyError, TypeError):
        return UNKNOWN
    if status == RUNNING and manifest.get("host") == socket.gethostname() and isinstance(manifest.get("pid"), int):
        return RUNNING if _process_alive(manifest["pid"]) else INTERRUPTED
    return status if status in (COMPLETE, RUNNING, INTERRUPTED, FAILED) else UNKNOWN


def finished_runs(results_dir: Path) -> list[Path]:
    """The run folders under ``results_dir`` whose manifest says complete, sorted by name."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        return []
    return sorted(folder for folder in results_dir.iterdir() if folder.is_dir() and run_status(folder) == COMPLETE)
