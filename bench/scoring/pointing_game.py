"""The pointing game and the energy-based pointing game: does a map's maximum, or its mass, fall on the object?

**Pointing game** (Zhang et al., ECCV 2016, *Top-down Neural Attention by
Excitation Backprop*; TorchRay's ``torchray.benchmark.pointing_game``). The
point is the map's maximum in the evaluated frame (the first one in row-major
order if several tie, as ``argmax``). It is a **hit** when some object pixel
lies closer than the tolerance to it: squared distance between pixel
indices ``< tolerance^2``, strictly, as TorchRay's acceptance disc. The object
is the image's mask where the dataset has one (the union of its instance
masks, resized to the frame as PxAP reads it), else its ground-truth boxes
(the pixels whose centre lies in a box, :func:`boxes_mask`). The score is
TorchRay's: the hit rate of each class, averaged over the classes; here over
the classes that have at least one scored image (TorchRay averages over all
of the dataset's classes, a class never scored counting 0).

**Tolerance.** TorchRay's default is 15 px on PASCAL VOC 2007 and COCO images
at their own resolution; VOC's are 500 px on their longest side (COCO's
640). Here it scales with the frame: ``15 / 500 = 3 %`` of the evaluated
frame's longest side (:data:`TOLERANCE_FRACTION`): 4.8 px in a 160 x 160
frame, 6.72 px in 224 x 224, 15 px on a 500-px original image.

**Energy-based pointing game** (Wang et al., CVPR Workshops 2020, *Score-CAM*,
their localization evaluation): the share of the map's energy inside the
ground-truth boxes, ``sum(L * inside) / sum(L)``, with ``L`` the map after a
ReLU and min-max scaling (the paper's and pytorch-grad-cam's post-processing,
:func:`bench.scoring.map_checks.relu_minmax`) and ``inside`` the pixels of
any of the image's boxes (:func:`boxes_mask`; boxes, as the paper, even where
masks exist). The score is the mean share over images.

Both read the raw map of the class (a CAM or a method's map) upsampled to the
frame, whatever ``eval.normalization`` says: the pointing game is the same for
any positive rescaling, and the energy share fixes its own. A map with no
maximum (constant, NaN, ...) is refused
(:class:`bench.scoring.map_checks.UnscorableMapError`); one with no positive
value has no energy after the ReLU, and its share counts 0 (said in
:meth:`PointingMeter.describe`).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from bench.scoring.map_checks import UnscorableMapError, check_map, relu_minmax

TORCHRAY_TOLERANCE = 15  # pixels, at the resolution of PASCAL VOC 2007's images
VOC_LONGEST_SIDE = 500  # pixels: the longest side of (nearly) every VOC 2007 image
TOLERANCE_FRACTION = TORCHRAY_TOLERANCE / VOC_LONGEST_SIDE  # of the evaluated frame's longest side


def tolerance_pixels(size: tuple[int, int], fraction: float = TOLERANCE_FRACTION) -> float:
    """The pointing game's tolerance in pixels of a frame of ``size (H, W)``: ``fraction`` of its longest side."""
    return fraction * max(size)


def maximum_point(score_map: np.ndarray, image_id: str = "?") -> tuple[int, int]:
    """``(row, column)`` of the maximum of ``score_map (H, W)``: the first in row-major order if several tie.

    Raises :class:`bench.scoring.map_checks.UnscorableMapError` for a constant (or NaN, empty, ...) map.
    """
    checked = check_map(score_map, image_id)
    return tuple(int(index) for index in np.unravel_index(np.argmax(checked), checked.shape))


def boxes_mask(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` bool: the pixels whose centre ``(j + 0.5, i + 0.5)`` lies in one of ``boxes (G, 4)``.

    Boxes are ``[x0, y0, x1, y1)`` in the frame's pixels (:mod:`bench.data.boxes`): an integer box covers
    exactly its pixels, a fractional one the pixels more than half inside it along each axis.
    """
    height, width = size
    rows = np.arange(height) + 0.5  # (H,) pixel centres
    columns = np.arange(width) + 0.5  # (W,)
    inside = np.zeros(size, dtype=bool)
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        inside |= ((rows >= y0) & (rows < y1))[:, None] & ((columns >= x0) & (columns < x1))[None, :]
    return inside


def pointing_hit(point: tuple[int, int], object_mask: np.ndarray, tolerance: float) -> bool:
    """Whether an object pixel of ``object_mask (H, W)`` lies closer than ``tolerance`` to ``point (row, column)``.

    Distances between pixel indices; strictly closer, as TorchRay's acceptance disc (``< tolerance ** 2``).
    """
    rows, columns = np.nonzero(object_mask)
    if rows.size == 0:
        return False
    squared = (rows - point[0]) ** 2 + (columns - point[1]) ** 2
    return bool(squared.min() < tolerance**2)


def energy_share(score_map: np.ndarray, inside: np.ndarray, image_id: str = "?") -> float:
    """Share of ``score_map``'s energy (after ReLU and min-max) on the pixels ``inside (H, W)``, in [0, 1].

    A map with no positive value has no energy after the ReLU: its share is 0 (none of it in the box), by
    convention (:class:`PointingMeter` counts such maps and says so).
    """
    energy = relu_minmax(score_map, image_id)
    total = energy.sum()
    return float(energy[inside].sum() / total) if total > 0 else 0.0


class PointingMeter:
    """Accumulates the pointing game and the energy share over images; :meth:`compute` gives the scores in %.

    ``update`` takes one image's raw map in the evaluated frame, its class, its
    ground-truth boxes in that frame and its object mask (None: the boxes are
    the object), as the module docstring defines them. ``images`` keeps each
    image's ``(image_id, class, hit, energy share)``, in the order scored.
    """

    def __init__(self, tolerance_fraction: float = TOLERANCE_FRACTION) -> None:
        self.tolerance_fraction = tolerance_fraction
        self.masked = 0  # images whose object was a mask (the others: their boxes)
        self.no_energy = 0  # maps with no positive value: energy share 0
        self.sizes: set[tuple[int, int]] = set()
        self.images: list[tuple[str, int, bool, float]] = []  # per image: (image_id, class, hit, energy share)

    def update(self, score_map: np.ndarray, label: int, gt_boxes: np.ndarray, object_mask: np.ndarray | None,
               image_id: str = "?") -> bool:
        """Score one image; returns whether it is a pointing hit."""
        checked = check_map(score_map, image_id)
        size = checked.shape
        if object_mask is not None and np.shape(object_mask) != size:
            raise UnscorableMapError(f"image {image_id}: map of shape {size}, object mask of shape "
                                     f"{np.shape(object_mask)}; expected both in the evaluated frame")
        inside = boxes_mask(gt_boxes, size)
        point = maximum_point(checked, image_id)
        hit = pointing_hit(point, inside if object_mask is None else object_mask,
                           tolerance_pixels(size, self.tolerance_fraction))
        share = energy_share(checked, inside, image_id)
        self.no_energy += bool(checked.max() <= 0)
        self.masked += object_mask is not None
        self.sizes.add(size)
        self.images.append((image_id, int(label), bool(hit), share))
        return hit

    def compute(self) -> dict[str, float]:
        """``pointing_game``: mean over classes of the hit rate (%); ``energy_pointing_game``: mean share (%)."""
        if not self.images:
            return {"pointing_game": float("nan"), "energy_pointing_game": float("nan")}
        hits = defaultdict(list)  # per class
        for _, label, hit, _ in self.images:
            hits[label].append(hit)
        return {"pointing_game": 100.0 * float(np.mean([np.mean(rows) for rows in hits.values()])),
                "energy_pointing_game": 100.0 * float(np.mean([share for *_, share in self.images]))}

    def describe(self) -> str:
        """The protocol beside the numbers, e.g. '... tolerance 4.8 px (3 % of the 160-px longest side) ...'."""
        sides = sorted({max(size) for size in self.sizes})
        frame = (f"{sides[0]}-px longest side, {tolerance_pixels((sides[0], sides[0]), self.tolerance_fraction):g} px"
                 if len(sides) == 1 else "each frame's longest side")
        images, classes = len(self.images), len({label for _, label, _, _ in self.images})
        on = ("masks" if self.masked == images else "boxes" if self.masked == 0
              else f"masks ({self.masked} images), else boxes")
        none = (f"; {self.no_energy} map(s) with no positive value, share 0" if self.no_energy else "")
        return (f"pointing game: the GT-class map's maximum within {100 * self.tolerance_fraction:g} % of the "
                f"{frame} (TorchRay's 15 px at VOC's 500 px) of the object ({on}), hit rate averaged over "
                f"{classes} class(es); energy pointing game: share of the map's energy (ReLU, min-max) in "
                f"the GT boxes, mean over {images} images{none}")
