"""The few-shot baseline's network: a frozen backbone and a 1x1 convolution that maps its features to "object".

wsolevaluation (Choe et al., CVPR 2020) shows that the few images with full
supervision a WSOL method is tuned on (its val split) are better spent
*training* a localizer: its few-shot baseline beats every weakly supervised
method. Here that localizer is the run's own backbone (``model.backbone``,
``model.pretrained``, ``model.feature_stride``: the CAM's ``(h, w)`` grid)
with one added layer, a 1x1 convolution from its ``C`` channels to one logit
per cell: a class-agnostic foreground map, ``sigmoid`` of the logit, that
scoring takes in place of the CAM.

The backbone is **frozen** (eval mode, no gradient): its features are
computed once per image and cached (:mod:`bench.training.few_shot`), so the
baseline costs one forward pass over a few hundred images, not a fine-tuning.
wsolevaluation fine-tunes the whole network; a frozen backbone makes this
baseline a lower estimate of that ceiling (docs/studies.md). Only the
backbone's pretrained ``body`` is used: the random-init layers some backbones
add for the CAM (``vgg16_gap``, ``googlenet_gap``: a 3x3 conv) would stay
random, and they keep the grid anyway.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.config import ModelConfig
from bench.model.backbones import build_backbone
from bench.model.camnet import body_channels


class ForegroundHead(nn.Module):
    """``features (B, C, h, w) -> logits (B, h, w)``: each channel standardized, then one 1x1 convolution.

    The standardization (``(f - mean) / std`` per channel, buffers set by :meth:`standardize` from the
    training features, then fixed) puts every backbone's features on one scale, so one recipe trains a
    pretrained EfficientNet's and a random tiny CNN's alike. The convolution starts at zero (every cell at
    p = 0.5): no random draw.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, kernel_size=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))

    @torch.no_grad()
    def standardize(self, cells: torch.Tensor) -> None:
        """Set ``mean`` / ``std`` to each channel's over ``cells (M, C)`` float32, every cell of the training
        maps (the sample std; at least 1e-6, for a channel that never varies)."""
        variance, mean = torch.var_mean(cells, dim=0)  # (C,), (C,)
        self.mean.copy_(mean)
        self.std.copy_(variance.sqrt().clamp(min=1e-6))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        standardized = (features - self.mean[:, None, None]) / self.std[:, None, None]  # (B, C, h, w)
        return self.conv(standardized)[:, 0]  # (B, h, w)


class ForegroundNet(nn.Module):
    """A frozen backbone ``body`` (always in eval mode) and a trainable :class:`ForegroundHead`.

    ``mean`` / ``std``: the input normalization the body expects (the backbone's, as for the CAM network).
    """

    def __init__(self, body: nn.Module, channels: int, mean: tuple[float, float, float],
                 std: tuple[float, float, float]):
        super().__init__()
        self.body = body.eval()
        for parameter in self.body.parameters():
            parameter.requires_grad_(False)
        self.head = ForegroundHead(channels)
        self.mean, self.std = mean, std

    def train(self, mode: bool = True) -> "ForegroundNet":
        super().train(mode)
        self.body.eval()  # frozen: BatchNorm keeps its statistics whatever is trained
        return self

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``images (B, 3, S, S)`` normalized -> the frozen body's feature maps ``(B, C, h, w)``."""
        return self.body(images)

    def foreground(self, images: torch.Tensor) -> torch.Tensor:
        """``images (B, 3, S, S)`` -> the foreground map ``sigmoid(head(features))``: ``(B, h, w)`` in (0, 1)."""
        return torch.sigmoid(self.head(self.features(images)))


def build_foreground_net(config: ModelConfig, seed: int = 0) -> ForegroundNet:
    """The backbone ``config`` describes (weights, stride) with a fresh :class:`ForegroundHead`.

    A backbone without pretrained weights (``model.pretrained: false``, the tests' tiny CNN) is drawn from
    ``seed`` in a forked generator, so the same config always gives the same frozen features and the
    caller's random state is left alone.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = build_backbone(config)
    return ForegroundNet(backbone.body, body_channels(backbone), backbone.mean, backbone.std)
