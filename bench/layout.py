"""On-disk dataset layout (wsolevaluation metadata + classes.txt + masks.txt): its reader and writer.

The layout is clovaai/wsolevaluation's plain-text metadata plus two small
extensions (``classes.txt`` and ``masks.txt``); ``data/README.md`` documents it
for people who convert their own data::

    <root>/classes.txt                        "<label>,<name>", line order = label (0-based)
    <root>/images/<image_id>                  any layout; image_id is the path under images/
    <root>/masks/<mask path>                  optional binary masks (0/255 PNG)
    <root>/metadata/<split>/image_ids.txt     "<image_id>"
    <root>/metadata/<split>/class_labels.txt  "<image_id>,<label>"
    <root>/metadata/<split>/image_sizes.txt   "<image_id>,<width>,<height>"   (width first, as wsolevaluation)
    <root>/metadata/<split>/localization.txt  "<image_id>,<x0>,<y0>,<x1>,<y1>" one line per box
    <root>/metadata/<split>/masks.txt         "<image_id>,<mask path under masks/>"  (optional)

``localization.txt`` may instead use wsolevaluation's OpenImages **mask
layout**, recognised by its field count (3 instead of 5; one file cannot mix
the two)::

    <image_id>,<instance mask path>,<ignore mask path>   one line per instance mask

The ignore mask path is given on an image's first line only (empty on its
later lines, and may be empty altogether); mask paths are relative to the
masks root. Masks are grayscale PNGs, object where value > 127. Such a sample
gets ``mask_paths`` (all its instance masks) and ``ignore_path``, and its GT
boxes are **derived** from the masks, one per instance mask: the tight box of
its object pixels (:func:`bench.boxes.mask_to_box`) in the mask's own frame,
scaled to the image size when the mask's size differs, so every box metric
works unchanged on this layout. PxAP uses the union of the instance masks as
the object and leaves out the ignored pixels that are not object pixels
(:func:`read_mask`, ``bench.evaluate.mask_in_frame``), as wsolevaluation does.

Boxes follow :mod:`bench.boxes` (``[x0, y0, x1, y1)``, pixels of the original
image); sizes are converted to ``(H, W)`` on read, the one place where the
file's ``width,height`` order is handled (:func:`image_size` is the one place
for PIL's ``(W, H)``). Image ids must not contain commas. In the ``train``
split boxes are optional (training uses labels only) and so is
``image_sizes.txt`` (sizes are then read from the image headers); ``val`` and
``test`` need both, and at least one box per image.

The readers of other native layouts (CUB, ImageNet, wsolevaluation's own
folders, a CSV) are in :mod:`bench.readers`; they reuse the line helpers here
so every malformed line is reported the same way: file, 1-based line number,
the line and what was expected. :func:`read_text` decodes a file (UTF-8),
:func:`read_lines` splits it into fields, :func:`key_lines` keys the lines
by their first field (an image id, a CUB id, a wnid) and checks the keys
against another file's, :func:`parse_int`, :func:`parse_float` and
:func:`parse_box` read the values.
"""

from __future__ import annotations

import codecs
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from bench.boxes import mask_to_box, resize_boxes
from bench.progress import progress_bar

SPLITS = ("train", "val", "test")
# File suffixes (lowercase) taken for images where a folder is listed: what PIL opens.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# The four values of a half-open box [x0, y0, x1, y1) (bench.boxes), as named in this layout's files.
BOX_NAMES = ("x0", "y0", "x1", "y1")
CLASSES_FILE = "classes.txt"
# Key of _FORMATS for a localization.txt in the mask layout (not a file name of its own).
MASK_LAYOUT_FILE = "localization.txt (mask layout)"
# A mask pixel is object (or ignored) where its grayscale value is above this.
MASK_THRESHOLD = 127
# Size of an image whose header could not be read: bench.readers.check_images reports it.
UNKNOWN_SIZE = (0, 0)
# Reading more image headers than this shows a progress bar.
PROGRESS_MIN_IMAGES = 2000
# What opening or decoding an image can raise: missing, not an image or truncated (OSError), bad header, huge image.
IMAGE_READ_ERRORS = (OSError, ValueError, Image.DecompressionBombError)

# file name -> (number of comma-separated fields, what a line should look like)
_FORMATS = {
    "image_ids.txt": (1, "<image_id>"),
    "class_labels.txt": (2, "<image_id>,<label>"),
    "image_sizes.txt": (3, "<image_id>,<width>,<height>"),
    "localization.txt": (5, "<image_id>,<x0>,<y0>,<x1>,<y1>"
                            " (box layout, from line 1; the 3-field mask layout cannot be mixed in)"),
    # wsolevaluation's OpenImages layout of localization.txt (module docstring); the last field may be empty.
    MASK_LAYOUT_FILE: (3, "<image_id>,<instance mask path>,<ignore mask path or empty>"
                          " (mask layout, from line 1; the 5-field box layout cannot be mixed in)"),
    "masks.txt": (2, "<image_id>,<mask path relative to masks/>"),
    CLASSES_FILE: (2, "<label>,<name>"),
}


class DatasetFormatError(ValueError):
    """A metadata file is missing or one of its lines is malformed."""


@dataclass(frozen=True)
class Sample:
    """One image of a split, as described by the metadata (the image is not opened).

    ``boxes`` is ``(G, 4)`` float32 in the original image frame
    (:mod:`bench.boxes` convention). G >= 1 in the evaluation splits (``val``,
    ``test``); G = 0 is allowed only in ``train``, whose boxes are never used
    for training. ``size`` is ``(H, W)`` of the original image
    (:data:`UNKNOWN_SIZE` if a reader could not read the image's header; such
    samples are reported by ``bench.readers.check_images``).
    ``mask_paths``: the image's object masks (empty: none; one from
    ``masks.txt``, one per instance in the mask layout; the object is their
    union); ``ignore_path``: pixels PxAP leaves out (mask layout only).
    """

    image_id: str
    image_path: Path
    label: int
    boxes: np.ndarray
    size: tuple[int, int]
    mask_paths: tuple[Path, ...]
    ignore_path: Path | None = None


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Line:
    """One non-blank line of a text file, split into stripped fields."""

    path: Path
    number: int  # 1-based
    text: str
    fields: list[str]
    expected: str  # what a line should look like, for error messages

    def error(self, problem: str) -> DatasetFormatError:
        return DatasetFormatError(
            f"{self.path}, line {self.number}: {problem}: {self.text!r} (expected {self.expected!r})"
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


def _read_lines(path: Path, kind: str | None = None) -> list[Line]:
    """Read one of this layout's metadata files (format from its name, or ``kind``: a key of ``_FORMATS``)."""
    kind = path.name if kind is None else kind
    num_fields, expected = _FORMATS[kind]
    # Class names may contain commas; image ids may not (see module docstring).
    max_split = num_fields - 1 if kind == CLASSES_FILE else -1
    return read_lines(path, num_fields, expected, ",", max_split, last_may_be_empty=kind == MASK_LAYOUT_FILE)


def _is_mask_layout(path: Path) -> bool:
    """True if ``localization.txt`` uses the mask layout: its first non-blank line has 3 fields.

    Every other line must then have 3 fields too (:func:`_read_lines` names the
    first that does not); a missing file is the box layout.
    """
    if not path.is_file():
        return False
    first = next((text for text in read_text(path).splitlines() if text.strip()), "")
    return len(first.split(",")) == _FORMATS[MASK_LAYOUT_FILE][0]


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

    Half-open ``[x0, y0, x1, y1)`` (:mod:`bench.boxes`): ``x1 > x0`` and
    ``y1 > y0``. ``inclusive`` (PASCAL VOC style, the last pixel column/row
    inside): ``xmax >= xmin`` and ``ymax >= ymin``, returned as given
    (``bench.readers.inclusive_to_half_open`` converts). ``names`` name the
    values in errors; ``number``: the box's rank on a line holding several.
    """
    of = "" if number is None else f" of box {number}"
    x0, y0, x1, y1 = (_finite(line, text, name, of) for text, name in zip(values, names, strict=True))
    relation = ">=" if inclusive else ">"
    if not ((x1 >= x0 and y1 >= y0) if inclusive else (x1 > x0 and y1 > y0)):
        raise line.error(f"empty box{'' if number is None else f' {number}'} ({names[2]} must be {relation} "
                         f"{names[0]} and {names[3]} {relation} {names[1]}, got [{x0}, {y0}, {x1}, {y1}])")
    return [x0, y0, x1, y1]


def image_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` of an image file from its header (PIL does not decode the pixels)."""
    with Image.open(path) as image:
        width, height = image.size
    return height, width


def decode_image(path: Path) -> None:
    """Decode every pixel of an image file, so a truncated or corrupt one fails here, not in a training batch.

    Raises one of :data:`IMAGE_READ_ERRORS` where PIL's full decode would
    (``ImageFile.LOAD_TRUNCATED_IMAGES`` stays False, so a file cut short is an
    error). JPEGs are decoded at 1/8 scale (PIL's ``draft``): libjpeg still
    reads all of the file's data but skips most of the inverse DCT, about 1.6x
    cheaper than a full decode (0.3 vs 0.5 ms per 224 px image on 2 CPU cores;
    the header alone takes 0.03 ms); other formats are decoded in full.
    """
    with Image.open(path) as image:
        image.draft(None, (1, 1))  # no-op but for JPEG
        image.load()


def read_image_sizes(paths: list[Path], what: str = "reading image sizes") -> list[tuple[int, int]]:
    """``(H, W)`` of each image from its header; :data:`UNKNOWN_SIZE` where it cannot be read.

    A missing or unreadable image does not stop the reader: ``check_images``
    reports it later with the reason (or skips it, if asked).
    """
    sizes = []
    for path in progress_bar(paths, desc=what, unit="img", disable=len(paths) <= PROGRESS_MIN_IMAGES):
        try:
            sizes.append(image_size(path))
        except IMAGE_READ_ERRORS:
            sizes.append(UNKNOWN_SIZE)
    return sizes


def read_class_names(root: Path) -> list[str]:
    """Class names from ``<root>/classes.txt``; index = label (0-based)."""
    names = []
    for line in _read_lines(Path(root) / CLASSES_FILE):
        label = parse_int(line, 0, "label")
        if label != len(names):
            raise line.error(f"label {label} out of order (line order must be 0, 1, 2, ...; {len(names)} expected)")
        names.append(line.fields[1])
    if not names:
        raise DatasetFormatError(f"{Path(root) / CLASSES_FILE} lists no class")
    return names


def _read_image_ids(path: Path) -> dict[str, Line]:
    """image id -> its line of ``image_ids.txt``, in file order."""
    return first_lines(key_lines(path, _read_lines(path)))


def _read_one_per_image(path: Path, ids: dict[str, Line], parse: Callable[[Line], object]) -> dict:
    """Read a file with exactly one line per image id; ``parse(line)`` gives the value."""
    keyed = key_lines(path, _read_lines(path), known=ids, needs="line")
    return {image_id: parse(line) for image_id, line in first_lines(keyed).items()}


def _parse_label(line: Line, num_classes: int | None) -> int:
    label = parse_int(line, 1, "label")
    if label < 0:
        raise line.error(f"label {label} is negative (labels are 0-based)")
    if num_classes is not None and label >= num_classes:
        raise line.error(f"label {label} outside [0, {num_classes}) (classes.txt has {num_classes} classes)")
    return label


def _parse_size(line: Line) -> tuple[int, int]:
    """``<id>,<width>,<height>`` -> ``(H, W)``."""
    width, height = parse_int(line, 1, "width"), parse_int(line, 2, "height")
    if width <= 0 or height <= 0:
        raise line.error(f"size {width}x{height} is not positive")
    return height, width


def _box_line(line: Line, size: tuple[int, int] | None) -> list[float]:
    """The box of a ``localization.txt`` line; inside the image of ``size (H, W)`` unless ``size`` is None."""
    x0, y0, x1, y1 = parse_box(line, line.fields[1:5])
    if size is not None:
        height, width = size
        if not (0 <= x0 and 0 <= y0 and x1 <= width and y1 <= height):
            raise line.error(f"box [{x0}, {y0}, {x1}, {y1}] is outside the image (width {width}, height {height})")
    return [x0, y0, x1, y1]


def _read_boxes(
    path: Path, ids: dict[str, Line], sizes: dict[str, tuple[int, int]] | None, required: bool
) -> dict[str, np.ndarray]:
    """image id -> ``(G, 4)`` float32; ``required``: every id needs >= 1 box (else G = 0 is allowed).

    Boxes are checked against ``sizes`` when given (else ``check_images`` does it).
    """
    keyed = {}
    if path.exists() or required:
        keyed = key_lines(path, _read_lines(path), known=ids, repeats=True, needs="box" if required else None)
    return {
        image_id: np.asarray([_box_line(line, None if sizes is None else sizes[image_id])
                              for line in keyed.get(image_id, [])], dtype=np.float32).reshape(-1, 4)
        for image_id in ids
    }


def read_metadata(
    folder: Path,
    split: str,
    image_root: Path,
    num_classes: int | None,
    masks_root: Path | None = None,
    strict_boxes: bool = True,
) -> list[Sample]:
    """Read and validate one split's metadata files in ``folder``; samples in image_ids.txt order.

    Image paths are ``image_root / image_id``; ``masks.txt`` (optional) paths
    and those of a mask-layout ``localization.txt`` (module docstring; boxes
    derived from the instance masks, which are opened) are under ``masks_root``.
    ``num_classes`` bounds the labels (None: any label >= 0). In ``train``, ``localization.txt`` is optional (images
    without a line get G = 0) and so is ``image_sizes.txt`` (sizes come from
    the image headers). ``strict_boxes``: every box must lie inside its listed
    size, else the bounds are left to ``bench.readers.check_images`` (which
    allows 1 px of slack, for third-party metadata). Raises
    :class:`DatasetFormatError` naming the file and line on any inconsistency.
    """
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {SPLITS}")
    folder, image_root = Path(folder), Path(image_root)
    train = split == "train"
    ids = _read_image_ids(folder / "image_ids.txt")
    labels = _read_one_per_image(folder / "class_labels.txt", ids, lambda line: _parse_label(line, num_classes))
    if train and not (folder / "image_sizes.txt").exists():
        sizes = dict(zip(ids, read_image_sizes([image_root / image_id for image_id in ids], f"{split}: image sizes")))
    else:
        sizes = _read_one_per_image(folder / "image_sizes.txt", ids, _parse_size)
    localization = folder / "localization.txt"
    ignore: dict[str, Path] = {}
    if _is_mask_layout(localization):
        if masks_root is None:
            raise DatasetFormatError(f"{localization} lists masks (mask layout) but no masks root was given")
        if (folder / "masks.txt").exists():
            raise DatasetFormatError(f"{folder / 'masks.txt'}: masks are already listed in {localization} "
                                     "(mask layout); keep one of the two")
        masks, ignore, boxes = _read_instance_masks(localization, ids, Path(masks_root), sizes, required=not train)
    else:
        boxes = _read_boxes(localization, ids, sizes if strict_boxes else None, required=not train)
        masks = {} if masks_root is None else _read_masks(folder / "masks.txt", ids, Path(masks_root))
    return [
        Sample(
            image_id=image_id,
            image_path=image_root / image_id,
            label=labels[image_id],
            boxes=boxes[image_id],
            size=sizes[image_id],
            mask_paths=masks.get(image_id, ()),
            ignore_path=ignore.get(image_id),
        )
        for image_id in ids
    ]


def read_split(root: Path, split: str) -> list[Sample]:
    """Read and validate ``<root>/metadata/<split>/*.txt``; samples in image_ids.txt order.

    Images are not opened (``bench.readers.check_images`` checks them), except in a
    ``train`` split without ``image_sizes.txt``. Raises
    :class:`DatasetFormatError` naming the file and line on any inconsistency.
    """
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {SPLITS}")
    root = Path(root)
    num_classes = len(read_class_names(root))
    return read_metadata(root / "metadata" / split, split, root / "images", num_classes, root / "masks")


def _read_masks(path: Path, ids: dict[str, Line], masks_root: Path) -> dict[str, tuple[Path]]:
    """Optional masks.txt: image id -> (mask path,) (images without a line have no mask)."""
    if not path.exists():
        return {}
    keyed = first_lines(key_lines(path, _read_lines(path), known=ids))
    return {image_id: (masks_root / line.fields[1],) for image_id, line in keyed.items()}


def _read_instance_masks(
    path: Path, ids: dict[str, Line], masks_root: Path, sizes: dict[str, tuple[int, int]], required: bool
) -> tuple[dict[str, tuple[Path, ...]], dict[str, Path], dict[str, np.ndarray]]:
    """localization.txt in the mask layout -> instance mask paths, ignore mask path and derived boxes per image id.

    Boxes ``(G, 4)`` float32, one per instance mask: the tight box of its
    object pixels in the mask's frame, scaled to the image's ``sizes[id] (H, W)``
    when the sizes differ. Each mask file must be readable and hold at least
    one object pixel. ``required``: every image needs >= 1 instance mask.
    """
    keyed = key_lines(path, _read_lines(path, MASK_LAYOUT_FILE), known=ids, repeats=True,
                      needs="instance mask" if required else None)
    masks: dict[str, tuple[Path, ...]] = {}
    ignore: dict[str, Path] = {}
    boxes = {image_id: np.zeros((0, 4), dtype=np.float32) for image_id in ids}
    for image_id, lines in keyed.items():
        for line in lines[1:]:
            if line.fields[2]:
                raise line.error("ignore mask on a later line of the image (give it on the image's first line only)")
        if lines[0].fields[2]:
            ignore[image_id] = masks_root / lines[0].fields[2]
        masks[image_id] = tuple(masks_root / line.fields[1] for line in lines)
        boxes[image_id] = np.asarray([_instance_box(line, path, sizes[image_id])
                                      for line, path in zip(lines, masks[image_id])], dtype=np.float32)
    return masks, ignore, boxes


def _instance_box(line: Line, mask_path: Path, size: tuple[int, int]) -> np.ndarray:
    """``(4,)`` tight box of an instance mask's object pixels, in the frame of the image of ``size (H, W)``."""
    try:
        mask = read_mask(mask_path)
    except IMAGE_READ_ERRORS as error:
        raise line.error(f"cannot read instance mask {mask_path} ({type(error).__name__}: {error})") from None
    if not mask.any():
        raise line.error(f"instance mask {mask_path} has no object pixel (value > {MASK_THRESHOLD})")
    box = mask_to_box(mask)
    return resize_boxes(box, mask.shape, size) if mask.shape != size and size != UNKNOWN_SIZE else box


def read_mask(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """``(H, W)`` bool mask of a grayscale PNG (True where value > :data:`MASK_THRESHOLD`).

    ``size (H, W)``: resized to it first (nearest neighbour); None keeps the file's size.
    """
    with Image.open(path) as image:
        mask = image.convert("L")
        if size is not None and mask.size != (size[1], size[0]):
            mask = mask.resize((size[1], size[0]), Image.NEAREST)
        return np.asarray(mask) > MASK_THRESHOLD


# ----------------------------------------------------------------------------- writing


def _format_number(value: float) -> str:
    """Integers without a decimal point (exact pixel edges), other values as Python floats."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def _relative_id(path: Path, root: Path, what: str) -> str:
    """``path`` relative to ``root`` as a posix string; a clear error if it is not under it."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        raise ValueError(f"{what} {path} is not under {root}; metadata stores paths relative to it") from None


def write_class_names(root: Path, names: list[str]) -> None:
    """Write ``<root>/classes.txt``."""
    lines = [f"{label},{name}" for label, name in enumerate(names)]
    (Path(root) / CLASSES_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_metadata(folder: Path, samples: list[Sample], image_root: Path, masks_root: Path | None) -> None:
    """Write one split's metadata files into ``folder`` (image ids relative to ``image_root``).

    Mask paths are written relative to ``masks_root``; ``masks.txt`` is
    written only if some sample has a mask. Samples without boxes (train
    only) get no line in ``localization.txt``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ids, labels, sizes, boxes, masks = [], [], [], [], []
    for sample in samples:
        image_id = _relative_id(sample.image_path, Path(image_root), "image")
        if "," in image_id:
            raise ValueError(f"image id {image_id!r} contains a comma, which the metadata format cannot hold")
        height, width = sample.size
        ids.append(image_id)
        labels.append(f"{image_id},{sample.label}")
        sizes.append(f"{image_id},{width},{height}")
        boxes += [f"{image_id}," + ",".join(_format_number(v) for v in box) for box in sample.boxes]
        if len(sample.mask_paths) > 1 or sample.ignore_path is not None:
            raise ValueError(f"{sample.image_id} has {len(sample.mask_paths)} instance mask(s) and ignore mask "
                             f"{sample.ignore_path}; the writer stores one mask per image (masks.txt) and no ignore "
                             "mask: keep such data in wsolevaluation's OpenImages layout and read it in place")
        if sample.mask_paths:
            if masks_root is None:
                raise ValueError(f"{sample.image_id} has a mask but no masks_root was given")
            masks.append(f"{image_id},{_relative_id(sample.mask_paths[0], Path(masks_root), 'mask')}")
    files = {"image_ids.txt": ids, "class_labels.txt": labels, "image_sizes.txt": sizes, "localization.txt": boxes}
    if masks:
        files["masks.txt"] = masks
    for name, lines in files.items():
        (folder / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def write_split(root: Path, split: str, samples: list[Sample], image_root: Path | None = None) -> None:
    """Write ``<root>/metadata/<split>/*.txt``.

    Image ids are paths relative to ``image_root`` (default ``<root>/images``,
    where :func:`read_split` looks for them); mask paths (if any) must be under
    ``<root>/masks``; ``masks.txt`` is written only if some sample has a mask.
    """
    root = Path(root)
    image_root = root / "images" if image_root is None else Path(image_root)
    write_metadata(root / "metadata" / split, samples, image_root, root / "masks")
