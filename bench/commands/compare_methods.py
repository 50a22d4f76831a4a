"""``python -m bench methods RUN_DIR``: CAM-family methods on a finished run, scored with the run's own protocol.

The command line's part: it scores the methods into ``RUN_DIR/methods/``
(:func:`bench.run.method_comparison.write_methods_folder`, which documents the
files) and prints ``methods.md``. A study's ``study.methods`` calls the run
layer directly (:mod:`bench.study.methods_table`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from bench.config import DEFAULT_DELETION_STEPS, DEFAULT_FAITHFULNESS_IMAGES
from bench.run.folder import METHODS_MARKDOWN
from bench.run.method_comparison import FIGURE_IMAGES, MethodsFolderError, write_methods_folder
from bench.scoring.map_methods import DEFAULT_METHODS, METHODS

MethodsCommandError = MethodsFolderError  # bad input to ``bench methods``: the run layer's refusal, as it is


ALL = "all"  # --methods all: every method, the slow ones included


def method_names(text: str) -> list[str]:
    """``--methods``: comma-separated names, or ``all`` (:data:`METHODS`)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    return list(METHODS) if names == [ALL] else names


def run_methods(run_dir: Path, methods: Sequence[str] = DEFAULT_METHODS, split: str | None = None,
                overwrite: bool = False, figure_images: int = FIGURE_IMAGES, timing_batches: int = 3,
                score_batch_size: int = 64, log: Callable[[str], None] = print, images: int | None = None,
                faithfulness_images: int = DEFAULT_FAITHFULNESS_IMAGES,
                deletion_steps: int = DEFAULT_DELETION_STEPS) -> Path:
    """Score ``methods`` on the run in ``run_dir`` into ``run_dir/methods/``, then print ``methods.md``; returns it.

    The estimated time is printed first; ``images``: the first N images of the split and of val only;
    ``faithfulness_images``: the faithfulness metrics on the first N of those (0: none), deletion and insertion
    in ``deletion_steps`` equal steps.
    """
    folder = write_methods_folder(run_dir, methods, split, overwrite, figure_images, timing_batches,
                                  score_batch_size, log, images=images, estimate=True,
                                  faithfulness_images=faithfulness_images, deletion_steps=deletion_steps)
    log((folder / METHODS_MARKDOWN).read_text(encoding="utf-8"))
    return folder
