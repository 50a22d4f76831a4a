"""``python -m bench methods RUN_DIR``: CAM-family methods on a finished run, scored with the run's own protocol.

The command line's part: it scores the methods into ``RUN_DIR/methods/``
(:func:`bench.run.method_comparison.write_methods_folder`, which documents the
files) and prints ``methods.md``. A study's ``study.methods`` calls the run
layer directly (:mod:`bench.study.methods_table`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from bench.run.folder import METHODS_MARKDOWN
from bench.run.method_comparison import FIGURE_IMAGES, MethodsFolderError, write_methods_folder
from bench.scoring.map_methods import METHODS

MethodsCommandError = MethodsFolderError  # bad input to ``bench methods``: the run layer's refusal, as it is


def run_methods(run_dir: Path, methods: Sequence[str] = METHODS, split: str | None = None, overwrite: bool = False,
                figure_images: int = FIGURE_IMAGES, timing_batches: int = 3, score_batch_size: int = 64,
                log: Callable[[str], None] = print) -> Path:
    """Score ``methods`` on the run in ``run_dir`` into ``run_dir/methods/``, then print ``methods.md``; returns it."""
    folder = write_methods_folder(run_dir, methods, split, overwrite, figure_images, timing_batches,
                                  score_batch_size, log)
    log((folder / METHODS_MARKDOWN).read_text(encoding="utf-8"))
    return folder
