"""Progress bars (tqdm), drawn by one process per job.

Every long loop of the package goes through :func:`progress_bar`. Under torchrun
each rank runs the same loops; :func:`show_progress` ``(False)`` on all ranks
but rank 0 leaves one bar per job. (tqdm's own ``TQDM_DISABLE`` is read once,
when tqdm is imported, so setting it inside a running process has no effect.)
"""

from __future__ import annotations

import typing

from tqdm import tqdm

_shown = True


def show_progress(shown: bool) -> None:
    """Draw (``True``, the default) or hide every later bar of this process."""
    global _shown
    _shown = shown


def progress_bar(iterable: typing.Iterable | None = None, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)``, hidden when this process shows no progress."""
    if not _shown:
        kwargs["disable"] = True
    return tqdm(iterable, **kwargs)
