"""Atomic output files: write to a temporary name beside the target, then rename.

A reader (or a resumed run) therefore sees either the previous complete file or
the new complete one, never a half-written one, even if the process is killed
mid-write. Running out of disk space while writing raises :class:`DiskFullError`,
whose message names the file and how to continue.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import shutil
from pathlib import Path
from typing import Iterable, Iterator

TEMPORARY_SUFFIX = ".tmp"


class DiskFullError(OSError):
    """The disk (or quota) filled up while writing a result file."""


def _free_bytes(path: Path) -> str:
    try:
        return f"{shutil.disk_usage(path.parent).free / 1e6:.1f} MB free"
    except OSError:
        return "free space unknown"


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on failure it is removed.

    Raises:
        DiskFullError: the write failed with ENOSPC / EDQUOT.
    """
    path = Path(path)
    temporary = path.with_name(path.name + TEMPORARY_SUFFIX)
    try:
        yield temporary
        temporary.replace(path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                error.errno, f"out of disk space writing {path} ({_free_bytes(path)}); free some space or set "
                             f"results_dir to another disk, then continue the run with --resume"
            ) from None
        raise
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_csv_rows(path: Path, header: Iterable, rows: Iterable[Iterable]) -> None:
    """Write a CSV file (UTF-8, a header line, then ``rows`` as given) to ``path`` atomically."""
    with atomic_path(path) as temporary, temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
