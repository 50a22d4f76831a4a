"""From class activation maps to boxes: CAM normalization and the paper's box rule.

The rule (Zhou et al., CVPR 2016): normalize the CAM, keep the pixels
whose normalized value is ``>= tau`` (tau = 0.2 in the paper), and take the
bounding box of the largest connected component of the kept pixels.

Two normalizations (docs/metrics.md; they select different regions for the same
tau when the map has a negative minimum):

* ``"max"`` (the CAM paper): ``M / max(M)``; thresholding at tau keeps
  ``M >= tau * max(M)`` (rounding caveat in :func:`boxes_from_cams`).
* ``"minmax"`` (wsolevaluation): ``(M - min) / (max - min)``, in ``[0, 1]``.

Degenerate maps (a flat map has no contrast; only "max" still reads a flat
positive map as evidence everywhere):

* ``"max"``, constant positive map -> all ones: every pixel is at 100% of the
  max, so the box is the whole image (any tau).
* ``"max"``, max <= 0 (all zero or all negative) -> all zeros: no positive
  evidence; the empty box for tau > 0, the whole image for tau = 0.
* ``"minmax"``, constant map (any value) -> all zeros, for the same reason.

Boxes follow :mod:`bench.data.boxes` (``[x0, y0, x1, y1)`` in pixels of the map).
Components are 8-connected (diagonal neighbours join). The paper does not
state the connectivity; 8 is what OpenCV's contours (used by wsolevaluation)
follow. Labeling is done by ``scipy.ndimage.label``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from bench.data.boxes import EMPTY_BOX, mask_to_box

NORMALIZATIONS = ("max", "minmax")

# 8-connectivity: a pixel touches all 8 neighbours, diagonals included.
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
# Maps normalized at once by boxes_from_cams: 8 maps of 224 x 224 in float64 = 3 MB.
_CHUNK = 8


def _check_cams(cams: np.ndarray) -> np.ndarray:
    """Validate a ``(N, H, W)`` stack of finite real maps; return it as an array (no copy)."""
    cams = np.asarray(cams)
    if cams.ndim != 3:
        raise ValueError(f"cams must have shape (N, H, W); got shape {cams.shape}")
    if cams.shape[1] == 0 or cams.shape[2] == 0:
        raise ValueError(f"cams must have H >= 1 and W >= 1; got shape {cams.shape}")
    if not (np.issubdtype(cams.dtype, np.floating) or np.issubdtype(cams.dtype, np.integer)):
        raise ValueError(f"cams must hold real numbers; got dtype {cams.dtype}")
    num_bad = cams.size - np.count_nonzero(np.isfinite(cams))
    if num_bad:
        raise ValueError(
            f"cams contain {num_bad} non-finite value(s) (NaN or inf) out of {cams.size}; "
            "check the model's outputs (e.g. diverged training) before localizing"
        )
    return cams


def _check_method(method: str) -> None:
    if method not in NORMALIZATIONS:
        raise ValueError(f"unknown CAM normalization method={method!r}; allowed values: {NORMALIZATIONS}")


def normalize_cams(cams: np.ndarray, method: str) -> np.ndarray:
    """Normalize each map of ``cams (N, H, W)`` -> ``(N, H, W)`` float32.

    ``method`` is one of :data:`NORMALIZATIONS`:

    * ``"max"``: ``M / max(M)``. Negative values are kept (they stay below any
      tau >= 0). Constant positive map -> all ones; ``max(M) <= 0`` -> all zeros.
    * ``"minmax"``: ``(M - min) / (max - min)`` in ``[0, 1]``. Constant map -> all zeros.

    Arithmetic is float64, the result is rounded once to float32.

    Raises:
        ValueError: unknown ``method``, wrong shape or dtype, or non-finite values.
    """
    _check_method(method)
    return _normalize(_check_cams(cams), method)


def _normalize(cams: np.ndarray, method: str) -> np.ndarray:
    """:func:`normalize_cams` on already validated input."""
    peak = cams.max(axis=(1, 2), keepdims=True).astype(np.float64)  # (N, 1, 1)
    if method == "max":
        offset = np.zeros_like(peak)
        scale = np.where(peak > 0, peak, np.inf)  # dividing by inf zeroes maps with no positive evidence
    else:
        offset = cams.min(axis=(1, 2), keepdims=True).astype(np.float64)  # (N, 1, 1)
        spread = peak - offset
        scale = np.where(spread > 0, spread, np.inf)  # constant maps -> zeros
    normalized = np.subtract(cams, offset, dtype=np.float64)  # (N, H, W) new array, divided in place
    normalized /= scale
    return normalized.astype(np.float32)


def largest_component_box(mask: np.ndarray) -> np.ndarray:
    """Box ``(4,)`` float32 of the largest 8-connected component of ``mask (H, W)`` bool.

    "Largest" means most pixels. Ties go to the component whose first pixel
    comes first in raster order (row by row, left to right). An empty mask
    gives :data:`bench.data.boxes.EMPTY_BOX`.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must have shape (H, W); got shape {mask.shape}")
    labels, num_components = ndimage.label(mask, structure=_EIGHT_CONNECTED)  # (H, W) int, 0 = background
    if num_components == 0:
        return EMPTY_BOX.copy()
    sizes = np.bincount(labels.ravel(), minlength=num_components + 1)
    sizes[0] = 0  # background is never a component
    largest = np.flatnonzero(sizes == sizes.max())
    if len(largest) == 1:
        winner = largest[0]
    else:
        # Do not rely on scipy's label numbering for the tie-break: take the
        # tied label met first in raster order. Ties are rare, so this is cheap.
        flat = labels.ravel()
        winner = flat[np.flatnonzero(np.isin(flat, largest))[0]]
    return mask_to_box(labels == winner)


def boxes_from_cams(cams: np.ndarray, tau: float = 0.2, normalization: str = "max") -> np.ndarray:
    """The paper's box rule on each map of ``cams (N, H, W)`` -> boxes ``(N, 4)`` float32.

    Normalize with ``normalization`` (see :func:`normalize_cams`), keep pixels
    with normalized value ``>= tau``, and box the largest 8-connected component
    (:func:`largest_component_box`). Boxes are in the pixel frame of the maps:
    upsample the CAMs to image size first to get image-frame boxes.

    ``tau`` is compared in float32, the dtype of the normalized maps, so a
    pixel whose ratio to the max is exactly ``tau`` (e.g. 2 of max 10 at tau
    0.2, or 7 of max 10 at tau 0.7) is kept; values already rounded on the way
    (a float32 map holding ``float32(tau * max)``) may fall one ulp either side.
    ``tau = 0`` keeps every pixel (whole-image box), also for degenerate maps.
    ``N`` may be 0.

    Raises:
        ValueError: ``tau`` outside ``[0, 1]``, or any error of :func:`normalize_cams`.
    """
    if not isinstance(tau, (int, float, np.floating, np.integer)) or not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be a number in [0, 1] (fraction of the normalized CAM); got tau={tau!r}")
    _check_method(normalization)
    cams = _check_cams(cams)
    boxes = np.empty((len(cams), 4), dtype=np.float32)
    # Chunks keep the float64 temporaries in cache (1.5x faster than one pass over
    # a 256-map batch); within a chunk normalization and thresholding are vectorized.
    for start in range(0, len(cams), _CHUNK):
        normalized = _normalize(cams[start : start + _CHUNK], normalization)  # (n, H, W) float32
        masks = normalized >= np.float32(tau)  # (n, H, W) bool
        for offset, mask in enumerate(masks):
            boxes[start + offset] = largest_component_box(mask)
    return boxes
