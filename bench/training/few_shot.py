"""Training the few-shot baseline's foreground head on the val split's masks (:mod:`bench.model.foreground_head`).

The recipe is fixed (:data:`RECIPE`) and uses no held-out data: the val
images are the training set, so nothing is left to choose an epoch or a
threshold on. The last iterate of the optimizer is the baseline.

* **Inputs.** Each image resized to the run's ``input_size`` square, as
  evaluation resizes it (no crop: a cached feature map cannot be re-cropped),
  and, with the run's ``train.augment.hflip``, its mirror image too: two
  feature maps per image, computed once by the frozen backbone (float16 in
  memory, ``N * C * h * w * 2`` bytes per copy: 240 images x 1280 x 10 x 10 =
  61 MB for EfficientNet-Lite0 at 160 px, stride 16).
* **Targets.** The object mask in that frame (:func:`bench.data.images.object_mask`:
  the union of the image's masks, or its boxes filled where it has no mask),
  area-pooled to the feature grid: each cell's target is the fraction of its
  pixels that are object (:func:`foreground_targets`). The scored map is this
  ``(h, w)`` grid upsampled, so the loss is taken where the map lives; a cell
  on the object's border asks for a value between 0 and 1 instead of a hard
  label the grid cannot draw.
* **Loss.** Binary cross-entropy of each cell's logit against its soft target,
  averaged over cells and images (:func:`foreground_loss`), plus
  ``weight_decay / 2`` times the squared norm of the convolution's weights.
* **Optimizer.** The head's input is standardized per channel over the
  training cells (:meth:`bench.model.foreground_head.ForegroundHead.standardize`),
  so the problem is a logistic regression on well-scaled inputs: full-batch
  L-BFGS (strong-Wolfe line search) from zero weights, at most
  :data:`RECIPE` ``.iterations`` iterations, the last iterate kept.
  Deterministic: no batch order, no random start.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from bench.data.images import object_mask
from bench.data.samples import Sample
from bench.data.torch_dataset import WsolDataset, collate
from bench.model.foreground_head import ForegroundHead, ForegroundNet


@dataclass(frozen=True)
class FewShotRecipe:
    """How the foreground head is trained; one fixed recipe for every dataset (no choice is made on data)."""

    iterations: int = 100  # L-BFGS iterations at most (each one or a few passes over the cached cells)
    weight_decay: float = 1e-4  # on the standardized features' weights, not the bias
    seed: int = 0  # draws the frozen backbone of a config without pretrained weights (the tests' tiny CNN)


RECIPE = FewShotRecipe()


def foreground_targets(masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Object fraction of each grid cell: ``masks (N, S, S)`` bool -> ``(N, h, w)`` float32 in [0, 1].

    Adaptive average pooling: with ``S`` a multiple of the grid (the input size over the feature stride),
    each cell averages its own ``S/h x S/w`` block of pixels.
    """
    return F.adaptive_avg_pool2d(masks[:, None].float(), grid)[:, 0]


def foreground_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of ``logits (B, h, w)`` against soft ``targets (B, h, w)`` in [0, 1]: a scalar.

    Per cell ``-(t log p + (1 - t) log(1 - p))`` with ``p = sigmoid(logit)`` (computed from the logit, stable).
    """
    return F.binary_cross_entropy_with_logits(logits, targets)


@dataclass(frozen=True)
class FeatureCache:
    """The frozen backbone's maps of the training images and their targets, mirrored copies after the originals."""

    features: torch.Tensor  # (N, C, h, w) float16, on the CPU
    targets: torch.Tensor  # (N, h, w) float32


@torch.no_grad()
def cache_features(network: ForegroundNet, samples: Sequence[Sample], input_size: int, hflip: bool,
                   device: torch.device, batch_size: int = 32) -> FeatureCache:
    """One pass of the frozen backbone over ``samples`` (resized to ``input_size``), plus their mirror images
    with ``hflip``; each with its :func:`foreground_targets` on the feature grid."""
    dataset = WsolDataset(list(samples), input_size, network.mean, network.std, train=False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    features, flipped = [], []
    for batch in loader:
        images = batch["image"].to(device)  # (B, 3, S, S)
        features.append(network.features(images).to("cpu", torch.float16))  # (B, C, h, w)
        if hflip:
            flipped.append(network.features(images.flip(3)).to("cpu", torch.float16))
    maps = torch.cat(features + flipped)  # (N or 2N, C, h, w)
    masks = torch.from_numpy(np.stack([object_mask(sample, (input_size, input_size)) for sample in samples]))
    targets = foreground_targets(masks, tuple(maps.shape[2:]))  # (N, h, w)
    if hflip:
        targets = torch.cat([targets, targets.flip(2)])
    return FeatureCache(maps, targets)


def training_cells(cache: FeatureCache) -> torch.Tensor:
    """Every cell of the cached maps as a row: ``(N * h * w, C)`` float32, filled a few maps at a time (the
    float16 cache is not copied whole to float32 twice)."""
    count, channels, height, width = cache.features.shape
    cells = torch.empty(count * height * width, channels)
    per_map = height * width
    for start in range(0, count, 64):
        chunk = cache.features[start : start + 64].float()  # (n, C, h, w)
        cells[start * per_map : (start + len(chunk)) * per_map] = chunk.permute(0, 2, 3, 1).reshape(-1, channels)
    return cells


def train_head(head: ForegroundHead, cache: FeatureCache, recipe: FewShotRecipe) -> list[float]:
    """Train ``head`` on ``cache`` with ``recipe`` (module docstring), on the CPU; returns the objective at
    every evaluation L-BFGS made (its line search evaluates more than once per iteration)."""
    head.cpu().train()
    cells = training_cells(cache)  # (M, C), M = N * h * w
    head.standardize(cells)
    cells.sub_(head.mean).div_(head.std)  # in place: the head's own standardization, done once
    targets = cache.targets.flatten()  # (M,), the same cell order (map, row, column)
    optimizer = torch.optim.LBFGS(head.conv.parameters(), lr=1.0, max_iter=recipe.iterations,
                                  line_search_fn="strong_wolfe")
    losses: list[float] = []

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        weight = head.conv.weight.view(-1)  # (C,): the 1x1 convolution on a row of channels is a dot product
        loss = foreground_loss(cells @ weight + head.conv.bias, targets)
        loss = loss + 0.5 * recipe.weight_decay * weight.square().sum()
        loss.backward()
        losses.append(loss.item())
        return loss

    optimizer.step(objective)
    head.eval()
    return losses


@dataclass(frozen=True)
class FewShotTraining:
    """What training the head gave: its objective along the way, the images and maps it saw, and its timings."""

    losses: list[float]  # the objective at each L-BFGS evaluation
    images: int  # val images trained on
    maps: int  # feature maps trained on (images, and their mirror images with hflip)
    # Wall-clock and CPU seconds (this process, every thread: what load from other processes does not inflate)
    # of caching the features and of training the head.
    feature_seconds: float
    train_seconds: float
    feature_cpu_seconds: float
    train_cpu_seconds: float


def train_few_shot(network: ForegroundNet, samples: Sequence[Sample], input_size: int, hflip: bool,
                   device: torch.device, recipe: FewShotRecipe = RECIPE) -> FewShotTraining:
    """Cache ``network``'s features of ``samples`` and train its head on their masks (module docstring)."""
    network.to(device)
    start, start_cpu = time.perf_counter(), time.process_time()
    cache = cache_features(network, samples, input_size, hflip, device)
    cached, cached_cpu = time.perf_counter(), time.process_time()
    losses = train_head(network.head, cache, recipe)
    network.head.to(device)
    return FewShotTraining(losses, len(samples), len(cache.targets), cached - start, time.perf_counter() - cached,
                           cached_cpu - start_cpu, time.process_time() - cached_cpu)
