"""What makes a map scorable by the pointing game and the faithfulness metrics, and the one error for a map that is not.

The localization metrics score any finite map (a constant one gets a box all
the same). The pointing game needs a maximum, the energy share and the
faithfulness metrics an order or a scale: a map that is constant, empty, not
2-D, not finite, or of the wrong size has none, and scoring it would give an
arbitrary number (the first pixel as the "maximum", a division by zero). Each
such map is refused with :class:`UnscorableMapError`, which names the image
(the callers add the method or the file) and what was expected.
"""

from __future__ import annotations

import numpy as np

from bench.errors import InputError


class UnscorableMapError(InputError, ValueError):
    """A map the pointing game or a faithfulness metric cannot score; the message names the image and the problem."""


def array_problem(array: np.ndarray) -> str | None:
    """What keeps ``array`` from being a map at all (None if nothing): not 2-D, empty, not real, not finite.

    Every scorer of maps asks this first (``bench evaluate-maps``' loaded maps too).
    """
    if array.ndim != 2:
        return f"expected a 2-D (H, W) map, got shape {array.shape}"
    if array.size == 0:
        return f"empty map, shape {array.shape}"
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        return f"expected real numbers, got dtype {array.dtype}"
    bad = array.size - int(np.count_nonzero(np.isfinite(array)))
    if bad:
        return f"{bad} NaN or inf value(s) out of {array.size}"
    return None


def map_problem(score_map: np.ndarray, shape: tuple[int, int] | None = None) -> str | None:
    """What makes ``score_map`` unscorable (None if nothing): not 2-D, empty, not ``shape``, not finite, constant."""
    score_map = np.asarray(score_map)
    if shape is not None and score_map.ndim == 2 and score_map.size and score_map.shape != tuple(shape):
        return f"expected a map of shape {tuple(shape)} (the image's), got {score_map.shape}"
    problem = array_problem(score_map)
    if problem:
        return problem
    if score_map.max() == score_map.min():
        return (f"constant map (every value {float(score_map.flat[0]):g}): it has no maximum to point with and no "
                f"order of pixels")
    return None


def check_map(score_map: np.ndarray, image_id: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """``score_map`` as float64 if scorable (:func:`map_problem`), else :class:`UnscorableMapError` naming ``image_id``."""
    problem = map_problem(score_map, shape)
    if problem:
        raise UnscorableMapError(f"image {image_id}: {problem}")
    return np.asarray(score_map, dtype=np.float64)


def relu_minmax(score_map: np.ndarray, image_id: str) -> np.ndarray:
    """``score_map (H, W)`` -> ``(H, W)`` float64 in [0, 1]: ReLU, then min-max scaling.

    The post-processing pytorch-grad-cam's methods apply before returning a map
    (``BaseCAM``: ``np.maximum(cam, 0)``, then ``scale_cam_image``: minus the
    min, over the max plus ``1e-7``), and the Score-CAM paper's maps; without
    the ``1e-7``, so a map's largest value is exactly 1. A map with no
    positive value is all zero after the ReLU, and stays all zero, as the
    library leaves it: it gives no weight to any pixel. Used where a map must
    act as a weight in [0, 1] (the energy-based pointing game, Average Drop /
    Increase). Refuses what :func:`check_map` refuses (a constant map, ...).
    """
    positive = np.maximum(check_map(score_map, image_id), 0.0)
    low, high = positive.min(), positive.max()
    if high == low:  # max <= 0: every value was cut by the ReLU (a constant map was refused above)
        return np.zeros_like(positive)
    return (positive - low) / (high - low)
