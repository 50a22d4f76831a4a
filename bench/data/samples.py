"""What every reader returns: :class:`Sample` (one image and its annotations) and :class:`DatasetSplits`.

Boxes follow :mod:`bench.data.boxes` (``[x0, y0, x1, y1)`` in the original image frame); sizes are
``(H, W)``. :class:`DatasetFormatError` is the error of every malformed dataset file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.errors import InputError

SPLITS = ("train", "val", "test")


# File suffixes (lowercase) taken for images where a folder is listed: what PIL opens.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


# Size of an image whose header could not be read: bench.data.images.check_images reports it.
UNKNOWN_SIZE = (0, 0)


class DatasetFormatError(InputError, ValueError):
    """A metadata file is missing or one of its lines is malformed."""


@dataclass(frozen=True)
class Sample:
    """One image of a split, as described by the metadata (the image is not opened).

    ``boxes`` is ``(G, 4)`` float32 in the original image frame
    (:mod:`bench.data.boxes` convention). G >= 1 in the evaluation splits (``val``,
    ``test``); G = 0 is allowed only in ``train``, whose boxes are never used
    for training. ``size`` is ``(H, W)`` of the original image
    (:data:`UNKNOWN_SIZE` if a reader could not read the image's header; such
    samples are reported by ``bench.data.images.check_images``).
    ``mask_paths``: the image's object masks (empty: none; one from
    ``masks.txt``, one per instance in the mask layout; the object is their
    union); ``ignore_path``: pixels PxAP leaves out (mask layout only).
    ``box_lines``: where each box was read, one entry per box
    (``"<file>, line <n>"``), so that a check of the box against the image
    can name it; empty where the reader has no line to name (the
    generated data, boxes derived from masks).
    """

    image_id: str
    image_path: Path
    label: int
    boxes: np.ndarray
    size: tuple[int, int]
    mask_paths: tuple[Path, ...]
    ignore_path: Path | None = None
    box_lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset as read: class names (index = label), the three splits and where they came from.

    Checked on construction: splits are exactly ``train``, ``val``, ``test``;
    ``train`` and ``test`` are not empty (``val`` may be); every label indexes
    ``class_names``; every ``val`` / ``test`` image has at least one box; no
    image file is in two splits.
    """

    class_names: list[str]
    splits: dict[str, list[Sample]]
    source: str  # e.g. "CUB-200-2011 at /x (official train/test split: ...; val: 500 carved from train ...)"

    def __post_init__(self) -> None:
        if tuple(self.splits) != SPLITS:
            raise ValueError(f"splits must have the keys {SPLITS} in this order, got {tuple(self.splits)}")
        for split in ("train", "test"):
            if not self.splits[split]:
                raise DatasetFormatError(f"{self.source}: the {split} split is empty")
        seen: dict[Path, str] = {}
        for split, samples in self.splits.items():
            for sample in samples:
                if not 0 <= sample.label < len(self.class_names):
                    raise DatasetFormatError(f"{self.source}: {split} image {sample.image_id} has label "
                                             f"{sample.label}, outside [0, {len(self.class_names)})")
                if split != "train" and len(sample.boxes) == 0:
                    raise DatasetFormatError(f"{self.source}: {split} image {sample.image_id} has no box; "
                                             "evaluation splits (val, test) need at least one box per image")
                if sample.image_path in seen:
                    raise DatasetFormatError(f"{self.source}: {sample.image_path} is in both the "
                                             f"{seen[sample.image_path]} and the {split} split")
                seen[sample.image_path] = split

    def counts(self) -> dict[str, int]:
        """Number of images per split."""
        return {split: len(samples) for split, samples in self.splits.items()}


# A class with fewer val images than this gets a warning (check_classes): val chooses tau and the reported epoch.
MIN_VAL_PER_CLASS = 2


def _named(class_names: list[str], labels: list[int], counts: list[int] | None = None) -> str:
    """The first five classes of ``labels`` as ``'<name>' (label <k>)[: <count>]``, and how many more."""
    shown = ", ".join(f"{class_names[label]!r} (label {label})" + (f": {counts[label]}" if counts else "")
                      for label in labels[:5])
    return shown + (f" and {len(labels) - 5} more" if len(labels) > 5 else "")


def check_classes(class_names: list[str], train: list[Sample], val: list[Sample], source: str) -> list[str]:
    """Refuse a class with no train image; return a warning for classes with few val images.

    ``train`` and ``val``: the samples a run trains and validates on (after
    any skipped images; ``val`` empty when the run uses no val split). A class
    with no train image is an error (:class:`DatasetFormatError`): the
    classifier never sees it, so every image of it is misclassified by
    construction, which is a broken dataset (a mistyped label, swapped
    splits), not a result. A class with fewer than
    :data:`MIN_VAL_PER_CLASS` val images is a warning (one line, returned):
    val only chooses tau and the reported epoch over all classes pooled, so
    the run stays valid, but those choices hardly see that class.
    Classes without test images are fine: they are not scored.
    """
    train_counts = np.bincount([sample.label for sample in train], minlength=len(class_names))
    untrained = [label for label, count in enumerate(train_counts) if count == 0]
    if untrained:
        raise DatasetFormatError(
            f"{source}: {len(untrained)} class(es) have no image in the train split: "
            f"{_named(class_names, untrained)}; the classifier could never predict them. Add train images of "
            f"each, or remove the class (its line in the class list and its val / test images)")
    if not val:
        return []
    val_counts = np.bincount([sample.label for sample in val], minlength=len(class_names))
    few = [label for label, count in enumerate(val_counts) if count < MIN_VAL_PER_CLASS]
    if not few:
        return []
    return [f"{len(few)} of {len(class_names)} classes have fewer than {MIN_VAL_PER_CLASS} images in the val split "
            f"(images each): {_named(class_names, few, val_counts.tolist())}; val chooses tau and the reported "
            f"epoch, which then hardly see them. Add val images (dataset.val_size for CUB / ImageNet) for choices "
            f"that stand for every class"]


README_HINT = "See data/README.md, section 'Real datasets'."


class DatasetNotFoundError(InputError, FileNotFoundError):
    """A dataset is not where the config says; the message lists what was expected and where to get it."""


def not_found(what: str, where: Path, expected: str, how_to_get_it: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(f"{what} not found at {where}: expected {expected}. {how_to_get_it} {README_HINT}")
