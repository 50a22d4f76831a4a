"""``box_hits.npz`` for a run scored before the file existed: its saved weights scored again, checked, then added.

A study pairs MaxBoxAcc and MaxBoxAccV2 between runs from each test image's
box hits (:func:`bench.study.statistics.paired_max_box_acc`); runs finished
before ``box_hits.npz`` was written lack them and are left out of those rows.
Rather than train them again, :func:`rescore_box_hits` scores the run's saved
network once more (``checkpoint.pt`` for the final epoch, ``best_epoch.pt``
for ``val_selected/`` when the val-selected epoch is an earlier one) into a
temporary folder, exactly as the run scored it (one process, the CPU, the
precision its manifest records), and adds the box hits only if that
re-evaluation reproduces the run's own ``predictions.csv`` and
``box_acc_curves.csv`` byte for byte. Anything else (another device, another
library version, a changed scoring rule) is refused, naming the file that
differs, and nothing is written. Nothing else in the run folder changes.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from bench.atomic_files import atomic_path
from bench.config import load_config
from bench.errors import InputError, MissingInputError
from bench.run.folder import (
    BEST_EPOCH_FILE,
    BOX_HITS_FILE,
    CHECKPOINT_FILE,
    COMPLETE,
    CONFIG_FILE,
    CURVES_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    SELECTED_DIR,
    run_status,
)
from bench.run.pipeline import score_saved_network
from bench.run.trained_model import load_trained_network

CHECKED_FILES = (PREDICTIONS_FILE, CURVES_FILE)  # what the re-evaluation must reproduce byte for byte


class RescoreError(InputError):
    """The run cannot be rescored (not finished, weights gone), or its re-evaluation does not reproduce it."""


def rescore_points(run_dir: Path) -> list[tuple[Path, int, Path]]:
    """The scored points of the finished run in ``run_dir`` that lack ``box_hits.npz``: ``(folder, epoch, weights)``.

    The final epoch's folder is ``run_dir`` (weights ``checkpoint.pt``); the val-selected one's is
    ``run_dir/val_selected`` (weights ``best_epoch.pt``, or the final epoch's when it is the last).

    Raises:
        RescoreError: no finished run in ``run_dir``.
    """
    if not (run_dir / CONFIG_FILE).is_file() or run_status(run_dir) != COMPLETE:
        raise RescoreError(f"{run_dir} holds no finished run (expected {CONFIG_FILE} and a complete "
                           f"{MANIFEST_FILE}, as `bench run` leaves them)")
    config = load_config(run_dir / CONFIG_FILE)
    manifest = json.loads((run_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    final = config.train.epochs
    points = [(run_dir, final, run_dir / CHECKPOINT_FILE)]
    selected = manifest.get("val_selected_epoch")
    if selected is not None and (run_dir / SELECTED_DIR / METRICS_FILE).is_file():
        weights = run_dir / (CHECKPOINT_FILE if selected == final else BEST_EPOCH_FILE)
        points.append((run_dir / SELECTED_DIR, int(selected), weights))
    return [point for point in points if not (point[0] / BOX_HITS_FILE).is_file()]


def rescore_box_hits(run_dir: Path, log: Callable[[str], None] = print) -> list[Path]:
    """Add ``box_hits.npz`` to each scored point of the finished run in ``run_dir`` that lacks it; returns them.

    Raises:
        RescoreError: not a finished run, its weights are gone, or the re-evaluation does not reproduce the
            run's ``predictions.csv`` / ``box_acc_curves.csv`` (then nothing is written).
    """
    run_dir = Path(run_dir)
    points = rescore_points(run_dir)
    if not points:
        log(f"{run_dir}: every scored point already has {BOX_HITS_FILE}; nothing to do")
        return []
    for _, _, weights in points:
        if not weights.is_file():
            raise MissingInputError(f"{weights} not found: the run's saved network is needed to score it again")
    precision = json.loads((run_dir / MANIFEST_FILE).read_text(encoding="utf-8")).get("precision", "fp32")
    with tempfile.TemporaryDirectory(prefix=".rescore-", dir=run_dir) as scratch:
        scored = []
        for k, (folder, epoch, weights) in enumerate(points):
            out = Path(scratch) / str(k)
            log(f"{folder}: scoring epoch {epoch} ({weights.name}, {precision}) again for its box hits")
            network, _, config = load_trained_network(weights)
            score_saved_network(config, network, epoch, precision, out, log)
            for name in CHECKED_FILES:
                _check_same(folder / name, out / name)
            scored.append((folder, out))
        written = []
        for folder, out in scored:  # every point checked before any file is added
            with atomic_path(folder / BOX_HITS_FILE) as temporary:
                shutil.copyfile(out / BOX_HITS_FILE, temporary)
            written.append(folder / BOX_HITS_FILE)
            log(f"wrote {folder / BOX_HITS_FILE} (its {' and '.join(CHECKED_FILES)} reproduced byte for byte)")
    return written


def _check_same(stored: Path, again: Path) -> None:
    """Refuse unless the re-evaluation wrote ``stored`` byte for byte; name the first line that differs."""
    if not stored.is_file():
        raise RescoreError(f"{stored} not found: the run's scores are needed to check the re-evaluation")
    old, new = stored.read_bytes(), again.read_bytes()
    if old == new:
        return
    old_lines, new_lines = old.decode("utf-8").splitlines(), new.decode("utf-8").splitlines()
    line = next((k for k, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b),
                min(len(old_lines), len(new_lines))) + 1
    raise RescoreError(f"{stored}, line {line}: scoring the saved network again does not reproduce it (another "
                       "device, library version or scoring code?); box hits not added, nothing written")
