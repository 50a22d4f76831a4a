"""The center baseline: one fixed, centred map for every image and class, scored like any other map.

wsolevaluation (Choe et al., CVPR 2020) reports a center baseline, an
isotropic Gaussian score map centred on the image whatever the image, as the
floor a localization method must beat (MaxBoxAccV2 52.5 on ImageNet, 59.7 on
CUB). Its code releases no such map and states no width, so the map is
defined here:

* **Map.** Pixel ``(row i, column j)`` of an ``(H, W)`` frame has its centre
  at the normalized position ``u = (j + 0.5) / W - 0.5``, ``v = (i + 0.5) / H - 0.5``
  (``[-0.5, 0.5]``, 0 at the frame's centre). Its value is
  ``exp(-(u^2 + v^2) / (2 sigma^2))`` with ``sigma =`` :data:`CENTER_SIGMA`
  ``= 1/6`` of each side: the frame's edges lie 3 sigma from the centre.
* **Isotropic in the normalized frame**: a circle on a square frame, an
  ellipse stretched with the image on any other, as every map here is
  stretched when an image is resized without keeping its aspect.
* **Peak 1 at the centre** for odd sizes (the central pixel sits at ``u = v = 0``);
  for even sizes the central pixels tie just below 1. The scoring normalizes
  every map anyway (``eval.normalization``).
* **Box at tau.** ``g >= tau`` holds inside the disc ``u^2 + v^2 <= 2 sigma^2 ln(1 / tau)``:
  a centred box of side ``2 sigma sqrt(2 ln(1 / tau))`` of each frame side,
  at tau 0.2 ``0.598`` (``[20, 20, 80, 80)`` on a 100 x 100 frame, 36 % of its
  area). Every threshold gives a centred box, larger as tau falls, so the max
  over tau of MaxBoxAcc(V2) hardly depends on sigma; the fixed-tau metrics do.
* **Why 1/6.** The map is made at the feature resolution and upsampled
  (below), and bilinear upsampling repeats the outermost pixel centres' values
  out to the border. With a wider Gaussian (sigma = 1/4) those values are
  about 0.2 of the peak on a 7 x 7 or 10 x 10 grid, so the tau = 0.2 box jumps
  to the whole frame; at 1/6 they are at most 0.06 of the peak on any grid
  of 5 x 5 or more (0.04 at 7 x 7, 0.03 at 10 x 10). That its tau = 0.2 box covers about CUB's mean object scale
  (0.34) is a coincidence, not a fit.

**As a map method** (:data:`bench.scoring.prediction.MapMethod`),
:func:`center_maps` gives the map at the feature resolution ``(h, w)``, as
every map method does; the scoring then upsamples it bilinearly to the
evaluated frame (``align_corners=False``, which keeps the pixel-centre
positions above) and boxes it by the same rule as a CAM. The map scored is
thus the ``(h, w)`` Gaussian upsampled, not the Gaussian drawn at full
resolution; :func:`center_map` at the frame's size is the latter (e.g. for
``bench evaluate-maps``).
"""

from __future__ import annotations

import numpy as np
import torch

CENTER_SIGMA = 1 / 6  # the Gaussian's standard deviation, as a fraction of each side of the frame


def center_map(height: int, width: int, sigma: float = CENTER_SIGMA) -> np.ndarray:
    """The center baseline's map on an ``(height, width)`` grid: ``(H, W)`` float32 in ``(0, 1]`` (module docstring).

    Computed in float64, rounded once to float32.

    Raises:
        ValueError: a size below 1, or ``sigma`` not a positive finite number.
    """
    if not (isinstance(height, (int, np.integer)) and isinstance(width, (int, np.integer))) \
            or height < 1 or width < 1:
        raise ValueError(f"center_map: height and width must be integers >= 1; got ({height!r}, {width!r})")
    if not (isinstance(sigma, (int, float, np.floating)) and np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"center_map: sigma must be a positive fraction of the side; got sigma={sigma!r}")
    v = (np.arange(height) + 0.5) / height - 0.5  # (H,) rows' centres, normalized
    u = (np.arange(width) + 0.5) / width - 0.5  # (W,) columns' centres, normalized
    squared = v[:, None] ** 2 + u[None, :] ** 2  # (H, W)
    return np.exp(-squared / (2.0 * sigma**2)).astype(np.float32)


def center_maps(images: torch.Tensor, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """The center baseline as a :data:`bench.scoring.prediction.MapMethod`: ``(B, M, h, w)`` float32.

    ``images (B, 3, S, S)`` and the feature values are not read: every image
    and every class of ``classes (B, M)`` gets :func:`center_map` ``(h, w)`` of
    the feature grid ``features (B, C, h, w)``, on the features' device.
    """
    batch, _, height, width = features.shape
    if classes.ndim != 2 or classes.shape[0] != batch:
        raise ValueError(f"center_maps: classes must have shape (B, M) with B = {batch}; got {tuple(classes.shape)}")
    grid = torch.from_numpy(center_map(height, width)).to(features.device)  # (h, w)
    return grid.expand(batch, classes.shape[1], height, width).contiguous()  # (B, M, h, w)
