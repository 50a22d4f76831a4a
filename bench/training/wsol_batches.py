"""The training-time WSOL methods that act on a training batch: Hide-and-Seek and CutMix.

Both change the images of a training batch before the forward pass, never at
evaluation; CutMix also mixes the loss. Random draws come from torch's global
CPU generator (seeded by the run, saved in its checkpoints), so a resumed run
replays them.

* **HaS** (Singh & Lee, ICCV 2017), :func:`hide_patches`: the image is cut
  into square patches of ``grid_size`` pixels (the last row and column may be
  smaller), and each patch of each image is hidden with probability
  ``drop_rate``. Hidden pixels are set to 0 in the normalized input, i.e. to
  the mean of the backbone's input normalization (``CamNet.mean``), as in
  wsolevaluation: the paper fills with the mean pixel so that hidden patches
  do not shift the activations' statistics (it takes the mean over its
  training set). For the torchvision ResNet / VGG weights that mean is the
  ImageNet mean (0.485, 0.456, 0.406); for EfficientNet-Lite and GoogLeNet,
  whose weights take [-1, 1] input (mean = std = 0.5), it is mid-gray
  (0.5, 0.5, 0.5). ``grid_size`` is the patch side in pixels as in
  wsolevaluation's ``has_grid_size`` (default 4); the paper hides 16- to
  56-pixel patches of 224-pixel images (``wsol.has_grid_size: 32`` for its
  most used setting).
* **CutMix** (Yun et al., ICCV 2019), :func:`cutmix`: with probability
  ``prob`` per batch, ``lam ~ Beta(beta, beta)``; a box of sides
  ``floor(W sqrt(1 - lam))`` x ``floor(H sqrt(1 - lam))`` around a uniform
  random centre, clipped to the image, is pasted from a permuted copy of the
  batch; ``lam`` is then recomputed as the share of the image not pasted over,
  and the loss is ``lam * CE(logits, y) + (1 - lam) * CE(logits, y[perm])``
  (:func:`mixed_cross_entropy`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def hide_patches(images: torch.Tensor, grid_size: int, drop_rate: float) -> torch.Tensor:
    """HaS: ``images (B, 3, H, W)`` normalized -> a copy with each ``grid_size``-pixel patch zeroed with ``drop_rate``.

    One draw per image and patch (``(B, ceil(H / g), ceil(W / g))`` uniform numbers; hidden where below ``drop_rate``).
    """
    batch, _, height, width = images.shape
    rows, columns = math.ceil(height / grid_size), math.ceil(width / grid_size)
    kept = (torch.rand(batch, rows, columns) >= drop_rate).to(images.device, images.dtype)  # (B, rows, columns)
    mask = kept.repeat_interleave(grid_size, dim=1).repeat_interleave(grid_size, dim=2)[:, :height, :width]
    return images * mask[:, None]


@dataclass(frozen=True)
class Mixing:
    """How CutMix mixed a batch: the other image's labels and the share ``lam`` of each image left as it was."""

    other_labels: torch.Tensor  # (B,) labels of the pasted images
    lam: float  # share of the image area not pasted over, in [0, 1]
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1) pasted region, pixels, half-open


def cutmix_box(height: int, width: int, lam: float, centre: tuple[int, int]) -> tuple[int, int, int, int]:
    """The pasted box for a drawn ``lam`` and ``centre = (cx, cy)``: ``(x0, y0, x1, y1)`` clipped to the image.

    Sides ``floor(width * sqrt(1 - lam))`` and ``floor(height * sqrt(1 - lam))``; corners ``centre -/+ side // 2``.
    """
    ratio = math.sqrt(1.0 - lam)
    cut_w, cut_h = int(width * ratio), int(height * ratio)
    cx, cy = centre
    x0, x1 = min(max(cx - cut_w // 2, 0), width), min(max(cx + cut_w // 2, 0), width)
    y0, y1 = min(max(cy - cut_h // 2, 0), height), min(max(cy + cut_h // 2, 0), height)
    return x0, y0, x1, y1


def cutmix(images: torch.Tensor, labels: torch.Tensor, beta: float,
           prob: float) -> tuple[torch.Tensor, Mixing | None]:
    """CutMix a training batch ``images (B, 3, H, W)``, ``labels (B,)``: ``(images, Mixing)``, or the batch and None.

    Draws (torch's generator, in this order): whether to mix, ``lam``, the centre, the permutation.
    """
    if float(torch.rand(())) >= prob:
        return images, None
    batch, _, height, width = images.shape
    lam = float(torch.distributions.Beta(beta, beta).sample())
    centre = (int(torch.randint(width, ())), int(torch.randint(height, ())))
    order = torch.randperm(batch).to(images.device)
    x0, y0, x1, y1 = cutmix_box(height, width, lam, centre)
    mixed = images.clone()
    mixed[:, :, y0:y1, x0:x1] = images[order, :, y0:y1, x0:x1]
    kept = 1.0 - (x1 - x0) * (y1 - y0) / (width * height)
    return mixed, Mixing(labels[order], kept, (x0, y0, x1, y1))


def mixed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, mixing: Mixing | None) -> torch.Tensor:
    """Cross-entropy of ``logits (B, K)``; under CutMix ``lam * CE(labels) + (1 - lam) * CE(other labels)``."""
    if mixing is None:
        return F.cross_entropy(logits, labels)
    return mixing.lam * F.cross_entropy(logits, labels) + (1.0 - mixing.lam) * F.cross_entropy(logits,
                                                                                                mixing.other_labels)
