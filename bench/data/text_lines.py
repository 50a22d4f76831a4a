"""Reading the plain-text formats line by line, with errors that name the file, the line and what was expected.

:func:`read_text` decodes a file (UTF-8), :func:`read_lines` splits it into fields, :func:`key_lines` keys the
lines by their first field (an image id, a CUB id, a wnid) and checks the keys against another file's,
:func:`parse_int`, :func:`parse_float` and :func:`parse_box` read the values. Every reader
(:mod:`bench.data.wsol_layout`, :mod:`bench.data.native_readers`) reports a malformed line through
:meth:`Line.error`, so all report it the same way.
"""

from __future__ import annotations

import codecs
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from bench.data.samples import DatasetFormatError

# The four values of a half-open box [x0, y0, x1, y1) (bench.data.boxes), as named in this layout's files.
BOX_NAMES = ("x0", "y0", "x1", "y1")



@dataclass(frozen=True)
class Line:
    """One non-blank line of a text file, split into stripped fields."""

    path: Path
    number: int  # 1-based
    text: str
    fields: list[str]
    expected: str  # what a line should look like, for error messages

    @property
    def where(self) -> str:
        """``"<file>, line <n>"``, as errors name a line."""
        return f"{self.path}, line {self.number}"

    def error(self, problem: str) -> DatasetFormatError:
        return DatasetFormatError(
            f"{self.where}: {problem}: {self.text!r} (expected {self.expected!r})"
        )


def read_text(path: Path) -> str:
    """A metadata file's text, decoded as UTF-8 (a leading byte-order mark is dropped).

    Any other encoding raises :class:`DatasetFormatError` naming the file and
    the first line that cannot be decoded (numbered as :meth:`str.splitlines`
    counts, like :func:`read_lines`), rather than a bare UnicodeDecodeError.
    """
    data = Path(path).read_bytes()
    data = data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        # The bytes before the error decode; "." stands for the line they end in.
        line = len((data[: error.start] + b".").decode("utf-8").splitlines())
        raise DatasetFormatError(
            f"{path}, line {line}: not UTF-8 text (byte 0x{data[error.start]:02x} is not valid UTF-8 there); "
            "save the file as UTF-8 (it may be in Latin-1 or Windows-1252)"
        ) from None


def read_lines(
    path: Path, num_fields: int, expected: str, separator: str | None = ",", max_split: int = -1,
    last_may_be_empty: bool = False,
) -> list[Line]:
    """Read a text file into lines of exactly ``num_fields`` non-empty fields (blank lines skipped).

    ``separator=None`` splits on runs of whitespace (CUB's files);
    ``max_split`` as in :meth:`str.split`, so the last field may hold separators;
    ``last_may_be_empty``: the last field may be empty.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"missing metadata file {path} (one {expected!r} per line); see data/README.md")
    lines = []
    for number, text in enumerate(read_text(path).splitlines(), start=1):
        if not text.strip():
            continue
        fields = [field.strip() for field in text.strip().split(separator, max_split)]
        line = Line(path, number, text, fields, expected)
        if len(fields) != num_fields:
            raise line.error(f"{len(fields)} field(s), {num_fields} expected")
        if not all(fields[:-1] if last_may_be_empty else fields):
            raise line.error(f"field {fields.index('') + 1} is empty")
        lines.append(line)
    return lines


def key_lines(
    path: Path, lines: list[Line], key: str = "image id", known: dict[str, Line] | None = None,
    repeats: bool = False, needs: str | None = None,
) -> dict[str, list[Line]]:
    """Group the lines of ``path`` by their first field: key -> its lines, in file order.

    ``key`` names the field in errors (``"image id"``, ``"id"``, ``"wnid"``).
    A key may be on one line only, unless ``repeats`` (several boxes or masks
    of an image). With ``known`` (key -> the line that defines it in another
    file, e.g. ``image_ids.txt``), every key must be one of them, and with
    ``needs`` (what each needs, e.g. ``"line"``, ``"box"``) each of them must
    have a line. Without ``known`` the file defines the keys and must list one.
    """
    keyed: dict[str, list[Line]] = {}
    for line in lines:
        value = line.fields[0]
        if known is not None and value not in known:
            raise line.error(f"{key} {value!r} is not in {next(iter(known.values())).path.name}")
        if value in keyed and not repeats:
            raise line.error(f"duplicate {key}: second line for {key} {value!r} (first on line "
                             f"{keyed[value][0].number})")
        keyed.setdefault(value, []).append(line)
    if known is None and not keyed:
        raise DatasetFormatError(f"{path} lists no {key}")
    missing = [value for value in known if value not in keyed] if known is not None and needs else []
    if missing:
        first = known[missing[0]]
        raise DatasetFormatError(
            f"{path}: no {needs} for {len(missing)} {key}(s) of {first.path.name}, e.g. {missing[:3]} "
            f"({first.path.name} line {first.number}); every {key} needs {'at least ' if repeats else ''}one"
        )
    return keyed


def first_lines(keyed: dict[str, list[Line]]) -> dict[str, Line]:
    """key -> its one line, for :func:`key_lines` results without ``repeats``."""
    return {value: lines[0] for value, lines in keyed.items()}


def parse_int(line: Line, index: int, what: str) -> int:
    try:
        return int(line.fields[index])
    except ValueError:
        raise line.error(f"{what} {line.fields[index]!r} is not an integer") from None


def parse_float(line: Line, index: int, what: str) -> float:
    return _finite(line, line.fields[index], what)


def _finite(line: Line, text: str, what: str, of: str = "") -> float:
    """``text`` as a finite float; errors read ``<what> '<text>'<of> is not a number``."""
    try:
        value = float(text)
    except ValueError:
        raise line.error(f"{what} {text!r}{of} is not a number") from None
    if not math.isfinite(value):
        raise line.error(f"{what} {text!r}{of} is not finite")
    return value


def parse_box(
    line: Line, values: Sequence[str], names: Sequence[str] = BOX_NAMES, number: int | None = None,
    inclusive: bool = False,
) -> list[float]:
    """The box given by four strings of ``line`` (``values``): four finite floats with positive extent.

    Half-open ``[x0, y0, x1, y1)`` (:mod:`bench.data.boxes`): ``x1 > x0`` and
    ``y1 > y0``. ``inclusive`` (PASCAL VOC style, the last pixel column/row
    inside): ``xmax >= xmin`` and ``ymax >= ymin``, returned as given
    (``bench.data.native_readers.inclusive_to_half_open`` converts). ``names`` name the
    values in errors; ``number``: the box's rank on a line holding several.
    """
    of = "" if number is None else f" of box {number}"
    x0, y0, x1, y1 = (_finite(line, text, name, of) for text, name in zip(values, names, strict=True))
    relation = ">=" if inclusive else ">"
    if not ((x1 >= x0 and y1 >= y0) if inclusive else (x1 > x0 and y1 > y0)):
        raise line.error(f"empty box{'' if number is None else f' {number}'} ({names[2]} must be {relation} "
                         f"{names[0]} and {names[3]} {relation} {names[1]}, got [{x0}, {y0}, {x1}, {y1}])")
    return [x0, y0, x1, y1]
