"""Head-only training (``train.mode: head``): frozen backbone, cached feature maps, train the new layers.

The pretrained backbone's map of every training image is computed once (eval
mode, no augmentation: the plain resize the evaluation uses, since a cached
map cannot be re-cropped), kept in memory as float16, and the layers added to
the backbone (the CAM modification's conv, if any, and the classifier) are
trained on the cache (on the pooled vectors, pooled once, when there is no
added layer) with the same SGD, warmup + cosine schedule and head
learning rate (``lr * head_lr_mult``) as full fine-tuning. The pooling is the
only thing that separates a GAP run from a GMP run, so this isolates the
effect of the pooling from the effect of fine-tuning.

Memory: ``N * C * h * w * 2`` bytes, e.g. 1,500 images x 1280 x 10 x 10 = 384 MB
(EfficientNet-Lite0 at 160 px, stride 16).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from bench.config import TrainConfig
from bench.model.camnet import CamNet
from bench.progress import progress_bar
from bench.training.checkpoint import save_training_state
from bench.training.loop import TrainingState, make_schedule, run_epochs


@dataclass(frozen=True)
class FeatureCache:
    """The backbone's maps of a set of images: ``maps (N, C, h, w)`` float16, ``labels (N,)`` int64."""

    maps: torch.Tensor
    labels: torch.Tensor


@torch.no_grad()
def cache_backbone_features(model: CamNet, loader: torch.utils.data.DataLoader, device: torch.device) -> FeatureCache:
    """Run the frozen backbone (eval mode) once over ``loader``; keep its maps on the CPU in float16."""
    model.eval()
    maps, labels = [], []
    for batch in progress_bar(loader, desc="caching features", leave=False, dynamic_ncols=True):
        maps.append(model.backbone(batch["image"].to(device)).to("cpu", torch.float16))  # (B, C, h, w)
        labels.append(batch["label"])
    return FeatureCache(torch.cat(maps), torch.cat(labels))


class _ShuffledBatches:
    """Batches of the cache in a new random order each pass, shaped like :func:`bench.data.torch_dataset.collate`'s.

    One gather per batch (``maps[indices]``) instead of a DataLoader's item-by-item stacking.
    """

    def __init__(self, cache: FeatureCache, batch_size: int, seed: int):
        self.cache = cache
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.cache.labels) // self.batch_size)  # ceil

    def __iter__(self):
        order = torch.randperm(len(self.cache.labels), generator=self.generator)
        for start in range(0, len(order), self.batch_size):
            indices = order[start : start + self.batch_size]
            yield {"image": self.cache.maps[indices], "label": self.cache.labels[indices]}


class _HeadOnCache(nn.Module):
    """Cached maps ``(B, C, h, w)`` -> logits through the added layers and the head, or, when
    ``pooled``, cached pooled vectors ``(B, C)`` -> logits through the classifier alone."""

    def __init__(self, model: CamNet, pooled: bool):
        super().__init__()
        self.model = model
        self.pooled = pooled

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.pooled:
            return self.model.classify_pooled(inputs.float())
        return self.model.head(self.model.added(inputs.float()))


@torch.no_grad()
def pool_cache(model: CamNet, cache: FeatureCache, chunk: int = 256) -> FeatureCache:
    """The cache with each map replaced by its pooled vector ``(N, C)`` float32 (the model's pooling)."""
    pooled = [model.pool(cache.maps[start : start + chunk].float()) for start in range(0, len(cache.labels), chunk)]
    return FeatureCache(torch.cat(pooled), cache.labels)


def fit_head(
    model: CamNet,
    cache: FeatureCache,
    config: TrainConfig,
    device: torch.device,
    checkpoint_path: Path,
    seed: int = 0,
    log: Callable[[str], None] = print,
    after_epoch: Callable[[int], dict[str, float]] | None = None,
) -> list[dict[str, float]]:
    """Train ``model``'s added layers and classifier on ``cache`` for ``config.epochs`` epochs.

    The backbone is frozen (``requires_grad = False``, eval mode) and never
    run. The epochs go through the same loop as full training
    (:func:`bench.training.loop.run_epochs`): a checkpoint of the whole model after
    each, ``after_epoch``'s values in the history. Returns the per-epoch rows.
    """
    for parameter in model.backbone.parameters():
        parameter.requires_grad_(False)
    model.backbone.eval()
    # Nothing before the pooling learns (no added layers) and the pooling has no
    # parameters, so each map is pooled once here instead of at every epoch.
    pooled = not any(True for _ in model.added.parameters())
    loader = _ShuffledBatches(pool_cache(model, cache) if pooled else cache, config.batch_size, seed)
    optimizer = torch.optim.SGD(model.new_parameters(), lr=config.lr * config.head_lr_mult,
                                momentum=config.momentum, weight_decay=config.weight_decay)
    state = TrainingState(optimizer, make_schedule(optimizer, config, len(loader)))
    head = _HeadOnCache(model, pooled)

    def checkpoint(fields: dict) -> None:
        model.backbone.eval()  # train_one_epoch switched the whole model to train mode
        save_training_state(checkpoint_path, {**fields, "mode": "head"})

    return run_epochs(model, head, loader, state, config, device, checkpoint, log, after_epoch=after_epoch,
                      description="head epoch")
