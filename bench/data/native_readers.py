"""Real WSOL datasets read in their native layouts, with no conversion step.

Every reader returns a :class:`DatasetSplits`: class names, ``train`` / ``val`` /
``test`` lists of :class:`bench.data.samples.Sample` (boxes ``[x0, y0, x1, y1)`` in the
original image frame, :mod:`bench.data.boxes`; sizes ``(H, W)``) and a one-line
description of where they came from. ``data/README.md`` ("Real datasets") tells
users where to put each dataset.

=====================  =====================================================
reader                 layout
=====================  =====================================================
:func:`read_cub`       CUB-200-2011 as distributed (``CUB_200_2011/``)
:func:`read_imagenet`  ILSVRC 2012 CLS-LOC, Kaggle folder layout, a class subset
:func:`read_csv_dataset`    your own data: one CSV file
=====================  =====================================================

This project's layout and wsolevaluation's metadata folders are read by
:mod:`bench.data.wsol_layout` (``read_wsol``, ``read_wsol_metadata``);
:func:`bench.data.loading.load_dataset` picks the reader a config names.

The choices that are open in the formats are made here, once:

* **Validation split** (:func:`carve_val`): where a dataset has no official
  split with boxes for choosing thresholds (CUB, ImageNet), ``val_size``
  images are carved out, stratified by class, with a fixed seed: CUB's val
  from its official *train* split (never from test), ImageNet's from its
  official *validation* images (the only ones with boxes), the rest of which
  are our test split.
* **ImageNet subset** (:func:`choose_synsets`): the wnids given, else every
  ``(number of synsets // num_classes)``-th synset in ``LOC_synset_mapping.txt``
  order, starting from the first.
* **Box conventions** (:func:`to_half_open`, :func:`from_half_open`, the one
  place for them): CUB's ``x y w h`` becomes ``[x, y, x + w, y + h)``;
  ImageNet's XML and Kaggle's CSV are *inclusive* (``xmax`` is the last pixel
  column inside the box) and become half-open by adding 1 to ``xmax`` and
  ``ymax``; the CSV of your own data is half-open. wsolevaluation's metadata
  folders say theirs per folder (:mod:`bench.data.wsol_layout`).
* **Box bounds** (:func:`bench.data.images.check_images`): boxes may overshoot the image by at
  most :data:`bench.data.images.BORDER_TOLERANCE` (1 px: inclusive ``xmax = W`` plus 1, float
  boxes touching the border) and are then clipped to it; more is an error.

Malformed lines raise :class:`bench.data.samples.DatasetFormatError` naming the file,
the 1-based line number, the line and what was expected; a dataset that is not
where it should be raises :class:`DatasetNotFoundError`, which says what was
expected where and how to obtain the dataset.
"""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from bench.data.boxes import xywh_to_xyxy
from bench.data.images import PROGRESS_MIN_IMAGES, read_image_sizes
from bench.data.samples import IMAGE_SUFFIXES, SPLITS, DatasetFormatError, DatasetSplits, Sample, not_found
from bench.data.text_lines import Line, first_lines, key_lines, parse_box, parse_float, parse_int, read_lines, read_text
from bench.progress import progress_bar

CUB_OBTAIN = ("Download CUB-200-2011 from the Caltech Vision Lab (Wah et al., 2011; archive CUB_200_2011.tgz), "
              "extract it and point dataset.path at the CUB_200_2011 folder.")


CUB_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt", "classes.txt",
             "images/")


IMAGENET_OBTAIN = (
    "Get ILSVRC 2012 from image-net.org (training images, validation images and the validation bounding boxes) "
    "or the Kaggle 'ImageNet Object Localization Challenge' packaging, which unpacks to exactly this layout."
)


IMAGENET_DATA = Path("ILSVRC/Data/CLS-LOC")  # train/<wnid>/*.JPEG, val/*.JPEG


IMAGENET_XML = Path("ILSVRC/Annotations/CLS-LOC/val")  # <val image stem>.xml, PASCAL VOC


SYNSET_FILE = "LOC_synset_mapping.txt"  # "<wnid> <names>", line order = class index


VAL_SOLUTION_FILE = "LOC_val_solution.csv"  # "ImageId,PredictionString" (wnid xmin ymin xmax ymax)*


VOC_BOX_NAMES = ("xmin", "ymin", "xmax", "ymax")  # inclusive pixel boxes (PASCAL VOC, ImageNet)


CSV_HEADER = ("image", "label", "split", "x0", "y0", "x1", "y1")


CSV_EXPECTED = "image,label,split,x0,y0,x1,y1 (box columns left empty only on train rows)"






def carve_val(samples: list[Sample], size: int, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Split ``size`` samples off ``samples``, stratified by label: returns ``(rest, carved)``.

    Rule: shuffle the indices with ``numpy.random.default_rng(seed)``; rank each
    sample within its class in shuffled order; carve the ``size`` samples with
    the smallest (rank, shuffled position). So every class gets
    ``floor(size / K)`` or one more (fewer if it runs out), and which classes
    get one more is random. Both lists keep the input order; the same input and
    seed always give the same split. ``rest`` must keep at least one sample.
    """
    if size < 0:
        raise ValueError(f"val_size={size} must be >= 0")
    if size == 0:
        return list(samples), []
    if size >= len(samples):
        raise DatasetFormatError(
            f"dataset.val_size is {size} but only {len(samples)} images are there to carve it from, and at least "
            f"one must remain; lower dataset.val_size"
        )
    order = np.random.default_rng(seed).permutation(len(samples))
    seen_per_class: dict[int, int] = {}
    keys = []  # (rank within class, shuffled position, index)
    for position, index in enumerate(order):
        label = samples[index].label
        rank = seen_per_class.get(label, 0)
        seen_per_class[label] = rank + 1
        keys.append((rank, position, int(index)))
    carved = {index for _, _, index in sorted(keys)[:size]}
    return ([s for i, s in enumerate(samples) if i not in carved],
            [s for i, s in enumerate(samples) if i in carved])


BoxConvention = Literal["half_open", "inclusive"]
BOX_CONVENTIONS: tuple[str, ...] = ("half_open", "inclusive")
# What the last two coordinates of a box line name, per convention (added to them to make them half-open).
_TO_HALF_OPEN = {"half_open": 0.0, "inclusive": 1.0}


def to_half_open(boxes: np.ndarray, convention: str) -> np.ndarray:
    """Boxes ``(..., 4)`` as a file writes them in ``convention`` -> half-open ``[x0, y0, x1, y1)`` float64.

    ``"half_open"``: ``x1, y1`` are one past the box (CUB's ``x + w``, our
    layout, :mod:`bench.data.boxes`): kept. ``"inclusive"`` (PASCAL VOC:
    ImageNet's XML, Kaggle's LOC_val_solution.csv, wsolevaluation's ILSVRC
    metadata): ``x1, y1`` name the last pixel column / row *inside* the box,
    so ``+ 1``. Every reader converts here, once, at the file's boundary.
    """
    if convention not in _TO_HALF_OPEN:
        raise ValueError(f"unknown box convention {convention!r}; allowed values: {BOX_CONVENTIONS}")
    return np.asarray(boxes, dtype=np.float64) + np.array([0.0, 0.0, 1.0, 1.0]) * _TO_HALF_OPEN[convention]


def from_half_open(boxes: np.ndarray, convention: str) -> np.ndarray:
    """The inverse of :func:`to_half_open`: half-open boxes ``(..., 4)`` as a file in ``convention`` writes them."""
    if convention not in _TO_HALF_OPEN:
        raise ValueError(f"unknown box convention {convention!r}; allowed values: {BOX_CONVENTIONS}")
    return np.asarray(boxes, dtype=np.float64) - np.array([0.0, 0.0, 1.0, 1.0]) * _TO_HALF_OPEN[convention]


def inclusive_to_half_open(boxes: np.ndarray) -> np.ndarray:
    """Inclusive pixel boxes ``[xmin, ymin, xmax, ymax]`` -> half-open ``[x0, y0, x1, y1)``, ``(..., 4)``.

    PASCAL VOC style annotations (ImageNet's XML, Kaggle's LOC_val_solution.csv)
    name the first and last pixel column/row *inside* the box, so the box
    covers pixel columns ``xmin..xmax``: ``[xmin, xmax + 1)`` in
    :mod:`bench.data.boxes`. The origin is kept as given (ImageNet's boxes are
    0-based; a 1-based ``xmax = W`` overshoots by 1 px, within
    :data:`BORDER_TOLERANCE`, and is clipped by :func:`bench.data.images.check_images`).
    """
    return to_half_open(boxes, "inclusive")


def _boxes_array(boxes: list[list[float]]) -> np.ndarray:
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


def _cub_folder(root: Path) -> Path:
    """The ``CUB_200_2011`` folder: ``root`` itself or ``root/CUB_200_2011``."""
    for folder in (root, root / "CUB_200_2011"):
        if (folder / "images.txt").is_file():
            missing = [name for name in CUB_FILES if not (folder / name).exists()]
            if missing:
                raise not_found("CUB-200-2011", folder, f"{', '.join(CUB_FILES)} (missing: {', '.join(missing)})",
                                 CUB_OBTAIN)
            return folder
    expected = f"the CUB_200_2011 folder (or its parent) with {', '.join(CUB_FILES)}"
    raise not_found("CUB-200-2011", root, expected, CUB_OBTAIN)


def _read_cub_file(path: Path, num_fields: int, expected: str, images: dict[str, Line] | None = None,
                   max_split: int = -1) -> dict[str, Line]:
    """One of CUB's whitespace-separated files, one line per image id: id -> line (``images``: those of images.txt)."""
    lines = read_lines(path, num_fields, expected, separator=None, max_split=max_split)
    return first_lines(key_lines(path, lines, "id", known=images, needs="line"))


def read_cub(root: Path, val_size: int, seed: int) -> DatasetSplits:
    """CUB-200-2011 in its distributed layout; the official train/test split, val carved from train.

    ``root`` is the ``CUB_200_2011`` folder or its parent. Labels are
    ``class_id - 1``; boxes ``x y width height`` become ``[x, y, x + w, y + h)``;
    sizes come from the image headers. ``val`` is ``val_size`` images of the
    official *train* split (:func:`carve_val`, stratified, ``seed``), ``train``
    the rest; ``test`` is the official test split. Image ids are the paths
    under ``images/``, as in wsolevaluation.
    """
    folder = _cub_folder(Path(root))
    class_lines = read_lines(folder / "classes.txt", 2, "<class_id> <class name>", separator=None, max_split=1)
    class_names = []
    for line in class_lines:
        class_id = parse_int(line, 0, "class_id")
        if class_id != len(class_names) + 1:
            raise line.error(f"class_id {class_id} out of order (line order must be 1, 2, 3, ...; "
                             f"{len(class_names) + 1} expected)")
        class_names.append(line.fields[1])
    images = _read_cub_file(folder / "images.txt", 2, "<image_id> <path under images/>", max_split=1)
    labels = _read_cub_file(folder / "image_class_labels.txt", 2, "<image_id> <class_id 1..N>", images)
    is_train = _read_cub_file(folder / "train_test_split.txt", 2, "<image_id> <1 = train, 0 = test>", images)
    boxes = _read_cub_file(folder / "bounding_boxes.txt", 5, "<image_id> <x> <y> <width> <height>", images)

    paths = [folder / "images" / line.fields[1] for line in images.values()]
    sizes = read_image_sizes(paths, "CUB: image sizes")
    splits: dict[str, list[Sample]] = {"train": [], "test": []}
    for (image_id, line), path, size in zip(images.items(), paths, sizes):
        label = parse_int(labels[image_id], 1, "class_id")
        if not 1 <= label <= len(class_names):
            raise labels[image_id].error(f"class_id {label} outside 1..{len(class_names)} (classes.txt)")
        flag = parse_int(is_train[image_id], 1, "train flag")
        if flag not in (0, 1):
            raise is_train[image_id].error(f"train flag {flag} is not 1 (train) or 0 (test)")
        box_line = boxes[image_id]
        x, y, width, height = (parse_float(box_line, i, name) for i, name in enumerate("x y width height".split(), 1))
        if width <= 0 or height <= 0:
            raise box_line.error(f"box width {width} and height {height} must be > 0")
        box = xywh_to_xyxy(np.array([[x, y, width, height]]))
        sample = Sample(line.fields[1], path, label - 1, _boxes_array(box), size, (), box_lines=(box_line.where,))
        splits["train" if flag == 1 else "test"].append(sample)
    train, val = carve_val(splits["train"], val_size, seed)
    source = (f"CUB-200-2011 at {folder} (official train/test split: {len(splits['train'])} / "
              f"{len(splits['test'])} images; val: {len(val)} images carved from train, stratified by class, "
              f"seed {seed})")
    return DatasetSplits(class_names, {"train": train, "val": val, "test": splits["test"]}, source)


IMAGENET_EXPECTED = (
    f"{SYNSET_FILE}, {IMAGENET_DATA}/train/<wnid>/*.JPEG, {IMAGENET_DATA}/val/*.JPEG and the validation boxes "
    f"as {IMAGENET_XML}/<image>.xml or {VAL_SOLUTION_FILE}"
)


def _read_synsets(root: Path) -> tuple[list[tuple[str, str]], str]:
    """``[(wnid, first name)]`` in class-index order, and where they came from.

    From ``LOC_synset_mapping.txt``; without it, the sorted ``train/`` folder
    names (torchvision's ImageFolder order, which equals that file's order for
    the 1000 ILSVRC classes), each named by its wnid.
    """
    path = root / SYNSET_FILE
    if path.is_file():
        lines = read_lines(path, 2, "<wnid> <name>, <other names>", separator=None, max_split=1)
        keyed = first_lines(key_lines(path, lines, "wnid"))
        return [(wnid, line.fields[1].split(",")[0].strip()) for wnid, line in keyed.items()], str(path)
    train = root / IMAGENET_DATA / "train"
    if not train.is_dir():
        raise not_found("ILSVRC 2012 localization data", root, IMAGENET_EXPECTED, IMAGENET_OBTAIN)
    folders = sorted(entry.name for entry in train.iterdir() if entry.is_dir())
    if not folders:
        raise not_found("ILSVRC 2012 training class folders", train, "one folder per wnid", IMAGENET_OBTAIN)
    return [(wnid, wnid) for wnid in folders], f"the folders of {train} (no {SYNSET_FILE})"


def choose_synsets(synsets: list[tuple[str, str]], wnids: Sequence[str], num_classes: int,
                   where: str) -> tuple[list[tuple[str, str]], str]:
    """The class subset and a description of the rule.

    ``wnids`` non-empty: exactly those, in that order (labels 0..K-1 follow it).
    Else every ``(len(synsets) // num_classes)``-th synset from the first, in
    ``where``'s order: ``num_classes`` classes spread evenly over the list (for
    the 1000 ILSVRC synsets and 10 classes: indices 0, 100, ..., 900).
    """
    known = {wnid: index for index, (wnid, _) in enumerate(synsets)}
    if wnids:
        unknown = [wnid for wnid in wnids if wnid not in known]
        if unknown:
            raise DatasetFormatError(f"dataset.wnids: unknown wnid(s) {', '.join(map(repr, unknown))}: not in "
                                     f"{where} ({len(synsets)} synsets, e.g. {synsets[0][0]})")
        repeated = sorted({wnid for wnid in wnids if list(wnids).count(wnid) > 1})
        if repeated:
            raise DatasetFormatError(f"dataset.wnids lists {', '.join(repeated)} more than once")
        return [synsets[known[wnid]] for wnid in wnids], f"{len(wnids)} wnids given in dataset.wnids"
    if not 1 <= num_classes <= len(synsets):
        raise DatasetFormatError(f"dataset.num_classes is {num_classes}; {where} has {len(synsets)} synsets, "
                                 f"so it must be in [1, {len(synsets)}]")
    step = len(synsets) // num_classes
    return synsets[::step][:num_classes], f"{num_classes} classes: every {step}th synset of {where} from the first"


def _imagenet_train(train_root: Path, chosen: list[tuple[str, str]], max_per_class: int) -> list[Sample]:
    """Images of ``train_root/<wnid>/``, sorted by file name, the first ``max_per_class`` (0: all); no boxes."""
    paths, labels = [], []
    for label, (wnid, _) in enumerate(chosen):
        folder = train_root / wnid
        if not folder.is_dir():
            raise not_found(f"the training images of class {wnid}", folder, "one folder of images per chosen wnid",
                             IMAGENET_OBTAIN)
        files = sorted(entry for entry in folder.iterdir() if entry.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DatasetFormatError(f"{folder} holds no image (expected files ending in {', '.join(IMAGE_SUFFIXES)})")
        files = files[:max_per_class] if max_per_class > 0 else files
        paths += files
        labels += [label] * len(files)
    sizes = read_image_sizes(paths, "ImageNet train: image sizes")
    no_box = np.zeros((0, 4), dtype=np.float32)
    return [Sample(path.relative_to(train_root.parent).as_posix(), path, label, no_box, size, ())
            for path, label, size in zip(paths, labels, sizes)]


def _xml_text(path: Path, element: ElementTree.Element, tag: str) -> str:
    child = element.find(tag)
    if child is None or not (child.text or "").strip():
        raise DatasetFormatError(f"{path}: <{element.tag}> has no <{tag}> (expected a PASCAL VOC annotation: "
                                 "<size><width/><height/></size> and <object><name>wnid</name>"
                                 "<bndbox><xmin/><ymin/><xmax/><ymax/></bndbox></object> per box)")
    return child.text.strip()


def _xml_number(path: Path, element: ElementTree.Element, tag: str) -> float:
    text = _xml_text(path, element, tag)
    try:
        return float(text)
    except ValueError:
        raise DatasetFormatError(f"{path}: <{element.tag}><{tag}> is {text!r}, not a number") from None


def _parse_voc_xml(path: Path) -> tuple[tuple[int, int], list[tuple[str, list[float]]]]:
    """One PASCAL VOC annotation -> ``(H, W)`` and ``[(wnid, inclusive box)]``."""
    try:
        annotation = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        raise DatasetFormatError(f"{path}, line {error.position[0]}: not well-formed XML ({error}); expected a "
                                 "PASCAL VOC annotation") from None
    size = annotation.find("size")
    if size is None:
        raise DatasetFormatError(f"{path}: no <size> element (expected <size><width/><height/></size>)")
    height, width = int(_xml_number(path, size, "height")), int(_xml_number(path, size, "width"))
    objects = []
    for element in annotation.iter("object"):
        bndbox = element.find("bndbox")
        if bndbox is None:
            raise DatasetFormatError(f"{path}: an <object> has no <bndbox>")
        box = [_xml_number(path, bndbox, tag) for tag in VOC_BOX_NAMES]
        objects.append((_xml_text(path, element, "name"), box))
    return (height, width), objects


def _val_from_xml(xml_dir: Path) -> dict[str, tuple[tuple[int, int] | None, list[tuple[str, list[float]]], str]]:
    """Validation image stem -> (size, [(wnid, inclusive box)], where) from the XML files."""
    paths = sorted(xml_dir.glob("*.xml"))
    annotations = {}
    for path in progress_bar(paths, desc="ImageNet val: reading XML", unit="file", disable=len(paths) <= PROGRESS_MIN_IMAGES):
        size, objects = _parse_voc_xml(path)
        annotations[path.stem] = (size, objects, str(path))
    return annotations


def _val_from_csv(path: Path) -> dict[str, tuple[tuple[int, int] | None, list[tuple[str, list[float]]], str]]:
    """Validation image id -> (None, [(wnid, inclusive box)], where) from Kaggle's LOC_val_solution.csv."""
    expected = "<ImageId>,<wnid> <xmin> <ymin> <xmax> <ymax> [<wnid> <xmin> ...]"
    lines = [line for line in read_lines(path, 2, expected) if line.fields != ["ImageId", "PredictionString"]]
    annotations: dict[str, tuple] = {}
    for image_id, line in first_lines(key_lines(path, lines)).items():
        tokens = line.fields[1].split()
        if len(tokens) % 5:
            raise line.error(f"{len(tokens)} values in PredictionString, not a multiple of 5")
        objects = [(tokens[start], parse_box(line, tokens[start + 1 : start + 5], VOC_BOX_NAMES, start // 5 + 1,
                                             inclusive=True))
                   for start in range(0, len(tokens), 5)]
        annotations[image_id] = (None, objects, f"{path}, line {line.number}")
    return annotations


def _imagenet_val(root: Path, chosen: list[tuple[str, str]]) -> tuple[list[Sample], str]:
    """The official validation images of the chosen classes with their boxes, sorted by id."""
    val_images = root / IMAGENET_DATA / "val"
    if not val_images.is_dir():
        raise not_found("ILSVRC 2012 validation images", val_images, IMAGENET_EXPECTED, IMAGENET_OBTAIN)
    xml_dir, csv_path = root / IMAGENET_XML, root / VAL_SOLUTION_FILE
    # Prefer the per-image XML files (the original annotation) when both forms are present.
    if xml_dir.is_dir() and any(xml_dir.glob("*.xml")):
        annotations, form = _val_from_xml(xml_dir), f"the XML files in {xml_dir}"
    elif csv_path.is_file():
        annotations, form = _val_from_csv(csv_path), str(csv_path)
    else:
        raise not_found("ILSVRC 2012 validation boxes", root, IMAGENET_EXPECTED, IMAGENET_OBTAIN)
    label_of = {wnid: label for label, (wnid, _) in enumerate(chosen)}
    records = []  # (image_id, path, label, half-open boxes, size or None, where each box was read)
    for stem in sorted(annotations):
        size, objects, where = annotations[stem]
        wnids = {wnid for wnid, _ in objects}
        if not wnids & label_of.keys():
            continue  # another class, or no box at all: not in this subset
        if len(wnids) > 1:
            raise DatasetFormatError(f"{where}: boxes of several classes ({', '.join(sorted(wnids))}) in one image; "
                                     "ILSVRC CLS-LOC validation images have one class")
        boxes = inclusive_to_half_open(np.array([box for _, box in objects]))
        if np.any(boxes[:, 2] <= boxes[:, 0]) or np.any(boxes[:, 3] <= boxes[:, 1]):
            raise DatasetFormatError(f"{where}: a box has xmax < xmin or ymax < ymin: {[b for _, b in objects]}")
        path = val_images / f"{stem}.JPEG"
        records.append((f"val/{path.name}", path, label_of[wnids.pop()], boxes, size, (where,) * len(boxes)))
    if not records:
        raise DatasetFormatError(f"{form} has no validation image of the {len(chosen)} chosen classes "
                                 f"({', '.join(w for w, _ in chosen[:5])}{', ...' if len(chosen) > 5 else ''})")
    if records[0][4] is None:  # the CSV form gives no sizes: read them from the image headers
        sizes = read_image_sizes([path for _, path, *_ in records], "ImageNet val: image sizes")
        records = [(*record[:4], size, record[5]) for record, size in zip(records, sizes)]
    samples = [Sample(image_id, path, label, _boxes_array(boxes), size, (), box_lines=lines)
               for image_id, path, label, boxes, size, lines in records]
    return samples, form


def read_imagenet(root: Path, wnids: Sequence[str], num_classes: int, val_size: int, seed: int,
                  max_train_per_class: int) -> DatasetSplits:
    """ILSVRC 2012 localization (Kaggle layout), a class subset.

    Classes: :func:`choose_synsets` (``wnids`` if given, else ``num_classes``
    evenly spaced synsets); labels 0..K-1 in that order; class names
    ``"<wnid> <first name>"``. ``train``: the images of
    ``ILSVRC/Data/CLS-LOC/train/<wnid>/`` (sorted by file name, the first
    ``max_train_per_class`` if > 0) with no boxes. The official validation
    images of the chosen classes (the only ones with boxes; several boxes per
    image kept) give ``val`` (``val_size`` of them, :func:`carve_val`,
    stratified, ``seed``) and ``test`` (the rest). Boxes come from
    ``ILSVRC/Annotations/CLS-LOC/val/*.xml`` if present, else from
    ``LOC_val_solution.csv``, made half-open by :func:`inclusive_to_half_open`.
    Image ids are paths under ``ILSVRC/Data/CLS-LOC/`` (``train/<wnid>/<file>``,
    ``val/<file>``), as in wsolevaluation.
    """
    root = Path(root)
    if not root.is_dir():
        raise not_found("ILSVRC 2012 localization data", root, IMAGENET_EXPECTED, IMAGENET_OBTAIN)
    synsets, where = _read_synsets(root)
    chosen, rule = choose_synsets(synsets, wnids, num_classes, where)
    train = _imagenet_train(root / IMAGENET_DATA / "train", chosen, max_train_per_class)
    evaluation, form = _imagenet_val(root, chosen)
    test, val = carve_val(evaluation, val_size, seed)
    cap = f", at most {max_train_per_class} per class" if max_train_per_class > 0 else ""
    source = (f"ILSVRC 2012 CLS-LOC at {root} ({rule}; train: {len(train)} images of the class folders{cap}; "
              f"val/test: the {len(evaluation)} official validation images of these classes, boxes from {form}, "
              f"{len(val)} carved as val (stratified by class, seed {seed}), {len(test)} test)")
    class_names = [f"{wnid} {name}" if name != wnid else wnid for wnid, name in chosen]
    return DatasetSplits(class_names, {"train": train, "val": val, "test": test}, source)


def _csv_box(line: Line, split: str) -> list[float] | None:
    """The row's box (fields 3..6), or None if all four are empty (train rows only)."""
    values = line.fields[3:7]
    if not any(values):
        if split != "train":
            raise line.error(f"no box on a {split} row: val and test images need x0,y0,x1,y1 "
                             "(only train rows may leave them empty)")
        return None
    if not all(values):
        raise line.error("fill all four box columns x0,y0,x1,y1, or none (train rows only)")
    return parse_box(line, values, CSV_HEADER[3:])


def _csv_record(rows: list[Line]) -> tuple[str, str, list[list[float]], tuple[str, ...]]:
    """One image's rows -> ``(class name, split, boxes, the line of each box)``.

    Every row must give the first row's label and split.
    """
    first = rows[0]
    for row in rows:
        image, label, split = row.fields[:3]
        if not image or not label:
            raise row.error(f"the {'image' if not image else 'label'} column is empty")
        if split not in SPLITS:
            raise row.error(f"split {split!r} is not one of {', '.join(SPLITS)}")
        for index, column in ((1, "label"), (2, "split")):
            if row.fields[index] != first.fields[index]:
                raise row.error(f"{column} {row.fields[index]!r} differs from {first.fields[index]!r} given for the "
                                f"same image on line {first.number}")
    boxes = [(_csv_box(row, first.fields[2]), row.where) for row in rows]
    return (first.fields[1], first.fields[2], [box for box, _ in boxes if box is not None],
            tuple(where for box, where in boxes if box is not None))


def _csv_lines(path: Path) -> list[Line]:
    """The CSV's data rows as lines of 7 stripped fields, after checking the header (the first row)."""
    header = ",".join(CSV_HEADER)
    lines: list[Line] = []
    header_seen = False
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    for row in reader:
        if not any(field.strip() for field in row):
            continue
        line = Line(path, reader.line_num, ",".join(row), [field.strip() for field in row], CSV_EXPECTED)
        if not header_seen:
            if tuple(field.lower() for field in line.fields) != CSV_HEADER:
                raise DatasetFormatError(f"{path}, line {line.number}: the first row {line.text!r} is not the "
                                         f"header {header!r}")
            header_seen = True
            continue
        if len(line.fields) != len(CSV_HEADER):
            raise line.error(f"{len(line.fields)} field(s), {len(CSV_HEADER)} expected")
        lines.append(line)
    if not header_seen:
        raise DatasetFormatError(f"{path} is empty; expected the header {header!r} and one row per box")
    return lines


def read_csv_dataset(path: Path) -> DatasetSplits:
    """Your own data: one CSV file ``image,label,split,x0,y0,x1,y1`` with a header row.

    ``image``: path relative to the CSV's folder (also the image id);
    ``label``: the class *name*; ``split``: ``train``, ``val`` or ``test``;
    the box ``[x0, y0, x1, y1)`` in pixels of the image (bench.data.boxes). Several
    boxes: several rows with the same image (same label and split). Train rows
    may leave the box columns empty. Classes are the sorted unique names
    (label = index); sizes come from the image headers; samples keep the
    order of first appearance.
    """
    path = Path(path)
    if not path.is_file():
        raise not_found("the dataset CSV", path, f"a CSV file with the header {','.join(CSV_HEADER)!r}",
                         "Write it for your images, one row per box.")
    rows_of = key_lines(path, _csv_lines(path), "image", repeats=True)  # image -> its rows, one per box
    records = {image: _csv_record(rows) for image, rows in rows_of.items()}  # image -> (name, split, boxes, lines)
    class_names = sorted({name for name, *_ in records.values()})
    label_of = {name: label for label, name in enumerate(class_names)}
    paths = [path.parent / image for image in records]
    sizes = read_image_sizes(paths, "CSV dataset: image sizes")
    splits: dict[str, list[Sample]] = {split: [] for split in SPLITS}
    for (image, (name, split, boxes, lines)), image_path, size in zip(records.items(), paths, sizes):
        splits[split].append(Sample(image, image_path, label_of[name], _boxes_array(boxes), size, (),
                                    box_lines=lines))
    counts = " / ".join(str(len(samples)) for samples in splits.values())
    source = f"CSV {path} ({len(class_names)} classes; train / val / test: {counts} images)"
    return DatasetSplits(class_names, splits, source)
