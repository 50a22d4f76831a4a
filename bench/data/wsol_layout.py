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
its object pixels (:func:`bench.data.boxes.mask_to_box`) in the mask's own frame,
scaled to the image size when the mask's size differs, so every box metric
works unchanged on this layout. PxAP uses the union of the instance masks as
the object and leaves out the ignored pixels that are not object pixels
(:func:`read_mask`, ``bench.scoring.evaluation.mask_in_frame``), as wsolevaluation does.

Boxes follow :mod:`bench.data.boxes` (``[x0, y0, x1, y1)``, pixels of the original
image); sizes are converted to ``(H, W)`` on read, the one place where the
file's ``width,height`` order is handled (:func:`bench.data.images.image_size` is the one place
for PIL's ``(W, H)``). Image ids must not contain commas. In the ``train``
split boxes are optional (training uses labels only) and so is
``image_sizes.txt`` (sizes are then read from the image headers); ``val`` and
``test`` need both, and at least one box per image.

This module also reads wsolevaluation's own metadata folders (:func:`read_wsol`,
:func:`read_wsol_metadata`) and writes the layout (:func:`write_wsol`). The
readers of the other native layouts (CUB, ImageNet, a CSV) are in
:mod:`bench.data.native_readers`; every reader parses lines with
:mod:`bench.data.text_lines`, so every malformed line is reported the same way.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from bench.atomic_files import TEMPORARY_SUFFIX, atomic_path
from bench.config import DatasetConfig
from bench.data.boxes import mask_to_box, resize_boxes
from bench.data.images import MASK_THRESHOLD, read_image_sizes, read_mask
from bench.data.native_readers import BOX_CONVENTIONS, from_half_open, to_half_open
from bench.data.samples import SPLITS, UNKNOWN_SIZE, DatasetFormatError, DatasetSplits, Sample, not_found
from bench.data.text_lines import Line, first_lines, key_lines, parse_box, parse_int, read_lines, read_text
from bench.errors import OutputsExistError

CLASSES_FILE = "classes.txt"


# Key of _FORMATS for a localization.txt in the mask layout (not a file name of its own).
MASK_LAYOUT_FILE = "localization.txt (mask layout)"


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


def _box_line(line: Line, size: tuple[int, int] | None, convention: str) -> list[float]:
    """The half-open box of a ``localization.txt`` line written in ``convention``.

    Inside the image of ``size (H, W)`` unless ``size`` is None.
    """
    given = parse_box(line, line.fields[1:5], inclusive=convention == "inclusive")
    x0, y0, x1, y1 = (float(v) for v in to_half_open(np.array(given), convention))
    if size is not None:
        height, width = size
        if not (0 <= x0 and 0 <= y0 and x1 <= width and y1 <= height):
            raise line.error(f"box [{x0}, {y0}, {x1}, {y1}] is outside the image (width {width}, height {height})")
    return [x0, y0, x1, y1]


def _read_boxes(
    path: Path, ids: dict[str, Line], sizes: dict[str, tuple[int, int]] | None, required: bool, convention: str
) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, ...]]]:
    """image id -> ``(G, 4)`` float32 half-open, and image id -> the line of each of its boxes.

    ``required``: every id needs >= 1 box (else G = 0 is allowed). The file's
    boxes are in ``convention`` (:func:`bench.data.native_readers.to_half_open`).
    Boxes are checked against ``sizes`` when given (else ``check_images`` does it).
    """
    keyed = {}
    if path.exists() or required:
        keyed = key_lines(path, _read_lines(path), known=ids, repeats=True, needs="box" if required else None)
    boxes = {
        image_id: np.asarray([_box_line(line, None if sizes is None else sizes[image_id], convention)
                              for line in keyed.get(image_id, [])], dtype=np.float32).reshape(-1, 4)
        for image_id in ids
    }
    return boxes, {image_id: tuple(line.where for line in keyed.get(image_id, [])) for image_id in ids}


def read_metadata(
    folder: Path,
    split: str,
    image_root: Path,
    num_classes: int | None,
    masks_root: Path | None = None,
    strict_boxes: bool = True,
    box_convention: str = "half_open",
) -> list[Sample]:
    """Read and validate one split's metadata files in ``folder``; samples in image_ids.txt order.

    Image paths are ``image_root / image_id``; ``masks.txt`` (optional) paths
    and those of a mask-layout ``localization.txt`` (module docstring; boxes
    derived from the instance masks, which are opened) are under ``masks_root``.
    ``num_classes`` bounds the labels (None: any label >= 0). In ``train``, ``localization.txt`` is optional (images
    without a line get G = 0) and so is ``image_sizes.txt`` (sizes come from
    the image headers). ``strict_boxes``: every box must lie inside its listed
    size, else the bounds are left to ``bench.data.images.check_images`` (which
    allows 1 px of slack, for third-party metadata). ``box_convention``: how
    ``localization.txt`` writes its boxes (``"half_open"`` or ``"inclusive"``);
    they are made half-open here. Raises
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
    box_lines: dict[str, tuple[str, ...]] = {}
    if _is_mask_layout(localization):
        if masks_root is None:
            raise DatasetFormatError(f"{localization} lists masks (mask layout) but no masks root was given")
        if (folder / "masks.txt").exists():
            raise DatasetFormatError(f"{folder / 'masks.txt'}: masks are already listed in {localization} "
                                     "(mask layout); keep one of the two")
        masks, ignore, boxes = _read_instance_masks(localization, ids, Path(masks_root), sizes, required=not train)
    else:
        boxes, box_lines = _read_boxes(localization, ids, sizes if strict_boxes else None, required=not train,
                                       convention=box_convention)
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
            box_lines=box_lines.get(image_id, ()),
        )
        for image_id in ids
    ]


def read_split(root: Path, split: str, box_convention: str = "half_open") -> list[Sample]:
    """Read and validate ``<root>/metadata/<split>/*.txt``; samples in image_ids.txt order.

    Images are not opened (``bench.data.images.check_images`` checks them), except in a
    ``train`` split without ``image_sizes.txt``. Raises
    :class:`DatasetFormatError` naming the file and line on any inconsistency.
    """
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {SPLITS}")
    root = Path(root)
    num_classes = len(read_class_names(root))
    return read_metadata(root / "metadata" / split, split, root / "images", num_classes, root / "masks",
                         box_convention=box_convention)


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
    except DatasetFormatError as error:  # the line that lists the mask says more than the file alone
        cause = error.__cause__
        raise line.error(f"cannot read instance mask {mask_path} ({type(cause).__name__}: {cause})") from None
    if not mask.any():
        raise line.error(f"instance mask {mask_path} has no object pixel (value > {MASK_THRESHOLD})")
    box = mask_to_box(mask)
    return resize_boxes(box, mask.shape, size) if mask.shape != size and size != UNKNOWN_SIZE else box


def _format_number(value: float) -> str:
    """Integers without a decimal point (exact pixel edges), other values as Python floats."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def _relative_id(path: Path, root: Path, what: str) -> str:
    """``path`` relative to ``root`` as a posix string; a clear error if it is not under it."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        raise DatasetFormatError(f"{what} {path} is not under {root}; metadata stores paths relative to it") from None


def write_class_names(root: Path, names: list[str]) -> None:
    """Write ``<root>/classes.txt`` atomically (a reader sees the old file or the new one)."""
    with atomic_path(Path(root) / CLASSES_FILE) as temporary:
        temporary.write_text(_class_names_text(names), encoding="utf-8")


def _class_names_text(names: list[str]) -> str:
    return "\n".join(f"{label},{name}" for label, name in enumerate(names)) + "\n"


def _metadata_texts(samples: list[Sample], image_root: Path, masks_root: Path | None,
                    box_convention: str = "half_open") -> dict[str, str]:
    """One split's metadata files as ``{file name: text}``; every check of :func:`write_metadata`, nothing written.

    Boxes are written in ``box_convention`` (:func:`bench.data.native_readers.from_half_open`).
    """
    ids, labels, sizes, boxes, masks = [], [], [], [], []
    for sample in samples:
        image_id = _relative_id(sample.image_path, Path(image_root), "image")
        if "," in image_id:
            raise DatasetFormatError(f"image id {image_id!r} contains a comma, which the metadata format cannot hold "
                                     f"(image {sample.image_path}); rename the file")
        height, width = sample.size
        ids.append(image_id)
        labels.append(f"{image_id},{sample.label}")
        sizes.append(f"{image_id},{width},{height}")
        boxes += [f"{image_id}," + ",".join(_format_number(v) for v in box)
                  for box in from_half_open(sample.boxes, box_convention)]
        if len(sample.mask_paths) > 1 or sample.ignore_path is not None:
            raise DatasetFormatError(f"{sample.image_id} has {len(sample.mask_paths)} instance mask(s) and ignore mask "
                                     f"{sample.ignore_path}; the writer stores one mask per image (masks.txt) and no "
                                     "ignore mask: keep such data in wsolevaluation's OpenImages layout and read it "
                                     "in place")
        if sample.mask_paths:
            if masks_root is None:
                raise DatasetFormatError(f"{sample.image_id} has a mask but no masks_root was given")
            masks.append(f"{image_id},{_relative_id(sample.mask_paths[0], Path(masks_root), 'mask')}")
    files = {"image_ids.txt": ids, "class_labels.txt": labels, "image_sizes.txt": sizes, "localization.txt": boxes}
    if masks:
        files["masks.txt"] = masks
    return {name: "".join(line + "\n" for line in lines) for name, lines in files.items()}


def _write_texts(folder: Path, texts: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        with atomic_path(folder / name) as temporary:
            temporary.write_text(text, encoding="utf-8")


def write_metadata(folder: Path, samples: list[Sample], image_root: Path, masks_root: Path | None,
                   box_convention: str = "half_open") -> None:
    """Write one split's metadata files into ``folder`` (image ids relative to ``image_root``).

    Boxes are written in ``box_convention`` (:func:`bench.data.native_readers.from_half_open`).

    Mask paths are written relative to ``masks_root``; ``masks.txt`` is
    written only if some sample has a mask. Samples without boxes (train
    only) get no line in ``localization.txt``. Every sample is checked before
    any file is written, and each file is written atomically.
    """
    _write_texts(Path(folder), _metadata_texts(samples, image_root, masks_root, box_convention))


def write_split(root: Path, split: str, samples: list[Sample], image_root: Path | None = None) -> None:
    """Write ``<root>/metadata/<split>/*.txt``.

    Image ids are paths relative to ``image_root`` (default ``<root>/images``,
    where :func:`read_split` looks for them); mask paths (if any) must be under
    ``<root>/masks``; ``masks.txt`` is written only if some sample has a mask.
    """
    root = Path(root)
    image_root = root / "images" if image_root is None else Path(image_root)
    write_metadata(root / "metadata" / split, samples, image_root, root / "masks")


BOX_CONVENTION_FILE = "box_convention.txt"  # written by write_wsol: "inclusive" or "half_open", one line


# How clovaai/wsolevaluation's own metadata folders write their boxes, by folder name (metadata/<DATASET>):
# ILSVRC copies the XML's inclusive xmax / ymax; CUB holds x + w, y + h (CUB's boxes, half-open); OpenImages
# lists masks, whose boxes are derived half-open.
WSOLEVALUATION_BOXES = {"ILSVRC": "inclusive", "CUB": "half_open", "OpenImages": "half_open"}


def is_wsolevaluation_folder(root: Path) -> bool:
    """True for a wsolevaluation ``metadata/<DATASET>`` folder (split folders directly inside, no ``metadata/``)."""
    return (Path(root) / "test" / "image_ids.txt").is_file() and not (Path(root) / "metadata").exists()


def metadata_box_convention(metadata_root: Path, setting: str = "auto") -> str:
    """How the boxes of a wsolevaluation metadata folder are written: ``"inclusive"`` or ``"half_open"``.

    ``setting`` (``dataset.box_convention``) other than ``"auto"`` decides. Else:
    the folder's ``box_convention.txt`` (written by :func:`write_wsol`); else
    the folder's name if it is one of wsolevaluation's (:data:`WSOLEVALUATION_BOXES`);
    else half-open (what this project wrote before it wrote the file).
    """
    if setting != "auto":
        if setting not in BOX_CONVENTIONS:
            raise ValueError(f"unknown box convention {setting!r}; allowed values: ('auto', *{BOX_CONVENTIONS})")
        return setting
    marker = Path(metadata_root) / BOX_CONVENTION_FILE
    if marker.is_file():
        text = read_text(marker).strip()
        if text not in BOX_CONVENTIONS:
            raise DatasetFormatError(f"{marker}, line 1: {text!r} is not a box convention; expected one of "
                                     f"{', '.join(BOX_CONVENTIONS)}")
        return text
    return WSOLEVALUATION_BOXES.get(Path(metadata_root).name, "half_open")


def wsolevaluation_box_convention(dataset: DatasetConfig, root: Path) -> str:
    """How wsolevaluation's metadata writes this dataset's boxes (``root``: the dataset's folder).

    The GT transform of ``eval.protocol: wsolevaluation`` (its IoU counts
    ``x1 - x0 + 1`` pixels of the numbers its metadata holds) and
    ``export-wsol`` both use it: CUB as its metadata/CUB writes it (``x + w``,
    half-open); a wsolevaluation folder as it is written
    (:func:`metadata_box_convention`); anything else inclusive, as its ILSVRC
    metadata and the ImageNet XML, so its IoU counts exactly the box's pixels.
    """
    if dataset.name == "cub":
        return "half_open"
    if dataset.name == "wsol" and is_wsolevaluation_folder(root):
        return metadata_box_convention(root, dataset.box_convention)
    return "inclusive"


WSOL_OBTAIN = (
    "Write it with bench.data.wsol_layout.write_wsol, or point to a metadata/<DATASET> folder of clovaai/wsolevaluation "
    "(Choe et al., CVPR 2020), with the images in dataset/<DATASET> beside metadata/."
)


def read_wsol(root: Path, box_convention: str = "auto") -> DatasetSplits:
    """This project's layout (``bench.data.wsol_layout``, data/README.md), or a wsolevaluation metadata folder.

    ``root`` with ``classes.txt`` and ``metadata/{train,val,test}/``: the
    ``val`` folder is optional (empty split). ``root`` that directly holds
    ``train/`` and ``test/`` metadata folders is taken as wsolevaluation's
    ``metadata/<DATASET>``, whose images are in ``../../dataset/<DATASET>``
    (:func:`read_wsol_metadata`). ``box_convention`` (``dataset.box_convention``):
    ``"auto"`` reads this project's layout as half-open and a wsolevaluation
    folder as :func:`metadata_box_convention` says.
    """
    root = Path(root)
    if is_wsolevaluation_folder(root):
        return read_wsol_metadata(root, root.parent.parent / "dataset" / root.name, None,
                                  box_convention=box_convention)
    if not (root / CLASSES_FILE).is_file() or not (root / "metadata").is_dir():
        expected = (f"{CLASSES_FILE}, images/ and metadata/<split>/ (image_ids.txt, class_labels.txt, "
                    "image_sizes.txt, localization.txt) for the splits train, test and optionally val")
        raise not_found("a dataset in the wsol metadata layout", root, expected, WSOL_OBTAIN)
    class_names = read_class_names(root)
    convention = "half_open" if box_convention == "auto" else box_convention
    splits = {split: [] if split == "val" and not (root / "metadata" / "val").exists()
              else read_split(root, split, convention) for split in SPLITS}
    counts = " / ".join(str(len(samples)) for samples in splits.values())
    shown = "" if convention == "half_open" else f", {convention} boxes"
    return DatasetSplits(class_names, splits,
                         f"wsol metadata layout at {root} (train / val / test: {counts}{shown})")


def read_wsol_metadata(metadata_root: Path, image_root: Path, class_names: list[str] | None = None,
                       masks_root: Path | None = None, box_convention: str = "auto") -> DatasetSplits:
    """wsolevaluation's ``metadata/<DATASET>/<split>/*.txt`` with images under ``image_root``.

    ``train`` and ``test`` are required, ``val`` optional. Class names: the
    ones given, else ``metadata_root/classes.txt`` if present (written by
    :func:`write_wsol`), else ``class_<k>`` for k up to the largest label.
    ``train`` may lack ``image_sizes.txt`` (read from the headers) and boxes.
    Box bounds are checked by :func:`check_images` (with its 1 px tolerance),
    not here. Optional ``masks.txt`` paths are relative to ``masks_root``
    (default ``image_root``). Boxes are read in :func:`metadata_box_convention`
    (``box_convention``: ``"auto"``, ``"half_open"`` or ``"inclusive"``).
    """
    metadata_root, image_root = Path(metadata_root), Path(image_root)
    missing = [f"{split}/image_ids.txt" for split in ("train", "test")
               if not (metadata_root / split / "image_ids.txt").is_file()]
    if missing:
        expected = ("<split>/image_ids.txt, class_labels.txt, image_sizes.txt, localization.txt for train, test and "
                    f"optionally val (missing: {', '.join(missing)})")
        raise not_found("wsolevaluation metadata", metadata_root, expected, WSOL_OBTAIN)
    if not image_root.is_dir():
        raise not_found("the images of the wsolevaluation metadata", image_root,
                         f"a folder holding the image ids listed in {metadata_root}/<split>/image_ids.txt", WSOL_OBTAIN)
    if class_names is None and (metadata_root / CLASSES_FILE).is_file():
        class_names = read_class_names(metadata_root)
    num_classes = None if class_names is None else len(class_names)
    masks_root = image_root if masks_root is None else Path(masks_root)
    convention = metadata_box_convention(metadata_root, box_convention)
    splits = {}
    for split in SPLITS:
        folder = metadata_root / split
        present = split != "val" or (folder / "image_ids.txt").is_file()
        splits[split] = (read_metadata(folder, split, image_root, num_classes, masks_root, strict_boxes=False,
                                       box_convention=convention) if present else [])
    if class_names is None:
        largest = max(sample.label for samples in splits.values() for sample in samples)
        class_names = [f"class_{k}" for k in range(largest + 1)]
    counts = " / ".join(str(len(samples)) for samples in splits.values())
    source = (f"wsolevaluation metadata at {metadata_root}, images in {image_root} (train / val / test: {counts}; "
              f"{convention} boxes)")
    return DatasetSplits(list(class_names), splits, source)


def common_image_root(splits: DatasetSplits) -> Path:
    """The deepest folder holding every image of ``splits`` (image ids are written relative to it)."""
    import os

    folders = {str(sample.image_path.parent) for samples in splits.splits.values() for sample in samples}
    return Path(os.path.commonpath(sorted(folders)))


def write_wsol(splits: DatasetSplits, metadata_root: Path, image_root: Path, masks_root: Path | None = None,
               box_convention: str = "inclusive") -> None:
    """Write ``splits`` as wsolevaluation metadata: ``metadata_root/<split>/*.txt``, ``classes.txt``, ``box_convention.txt``.

    Boxes are written in ``box_convention`` (default inclusive, what
    wsolevaluation's evaluator reads: its IoU counts ``x1 - x0 + 1`` pixels),
    and ``box_convention.txt`` says which, so :func:`read_wsol_metadata` reads
    them back exactly.

    Image ids are the image paths relative to ``image_root`` (masks relative
    to ``masks_root``, default ``image_root``); an empty split gets no folder.
    :func:`read_wsol_metadata` reads it back to identical samples. Refuses to
    write over existing split folders.

    All or nothing: every split is checked before anything is written; each
    split is written into ``<split>.tmp/`` and renamed, then ``box_convention.txt``, ``classes.txt`` last,
    and a failure removes what this call wrote, so the same command can simply
    be run again (a ``<split>.tmp/`` left by a killed writer is removed too).
    """
    metadata_root = Path(metadata_root)
    existing = [split for split in SPLITS if (metadata_root / split).exists()]
    if existing:
        raise OutputsExistError(f"{metadata_root} already holds split folder(s) {', '.join(existing)}; "
                                "remove them or choose another metadata_root")
    if box_convention not in BOX_CONVENTIONS:
        raise ValueError(f"unknown box convention {box_convention!r}; allowed values: {BOX_CONVENTIONS}")
    masks_root = image_root if masks_root is None else masks_root
    texts = {split: _metadata_texts(samples, Path(image_root), Path(masks_root), box_convention)
             for split, samples in splits.splits.items() if samples}
    metadata_root.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        for split, files in texts.items():
            staging = metadata_root / f"{split}{TEMPORARY_SUFFIX}"
            shutil.rmtree(staging, ignore_errors=True)
            written.append(staging)
            _write_texts(staging, files)
            staging.rename(metadata_root / split)
            written[-1] = metadata_root / split
        with atomic_path(metadata_root / BOX_CONVENTION_FILE) as temporary:
            temporary.write_text(box_convention + "\n", encoding="utf-8")
        written.append(metadata_root / BOX_CONVENTION_FILE)
        write_class_names(metadata_root, splits.class_names)
    except BaseException:
        for path in written:
            if path.name == BOX_CONVENTION_FILE:
                path.unlink(missing_ok=True)
            else:
                shutil.rmtree(path, ignore_errors=True)
        raise
