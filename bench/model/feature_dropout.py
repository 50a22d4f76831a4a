"""ADL, the Attention-based Dropout Layer (Choe & Shim, CVPR 2019), and where it sits in each backbone.

In training, at a few layers of the backbone, the feature maps ``f (B, C, h, w)``
are multiplied by one of two maps made from their channel mean
``a = mean_c f (B, 1, h, w)``:

* the **drop mask** ``a < threshold * max_{x,y} a`` (per image): the most
  activated region is erased, so the later layers must find the object's other parts;
* the **importance map** ``sigmoid(a)``: the activated region is emphasized.

One draw per forward pass picks the drop mask with probability ``drop_rate``
(the same map kind for the whole batch, as in wsolevaluation; the paper draws
per iteration). In evaluation ADL is the identity, so a trained network's CAM
is its plain forward's.

Where ADL is attached (:data:`ADL_POSITIONS`): wsolevaluation's positions where
it defines them (ResNet-50: after block 0 of layer3 and after blocks 0 and 2 of
layer4; VGG16: after pool3, after conv4_3 and after conv5_3), and the same
pattern elsewhere (twice in the last stages, once on the final feature map).
Every position is a map after a ReLU (or ReLU6), so ``a >= 0`` and "below
``threshold`` times the maximum" keeps the paper's meaning: the most activated
cells are dropped. EfficientNet's block outputs are linear-bottleneck sums
(about half of their channel means are negative on our data), so there ADL masks
each block's last activated map, the depthwise conv's ReLU6 output, which the
block's linear projection turns into its output. Each layer is attached as a child module ``adl`` of the layer whose output it
masks, applied by a forward hook: the backbone's parameter names and its
ImageNet weights do not change, and ``train()`` / ``eval()`` reach it.
"""

from __future__ import annotations

import torch
from torch import nn


def adl_mask(features: torch.Tensor, threshold: float, use_drop_mask: bool) -> torch.Tensor:
    """The map ADL multiplies ``features (B, C, h, w)`` by: ``(B, 1, h, w)`` float.

    ``use_drop_mask``: ``1`` where the channel mean is below ``threshold`` times its per-image maximum, else ``0``;
    otherwise the sigmoid of the channel mean.
    """
    attention = features.mean(dim=1, keepdim=True)  # (B, 1, h, w)
    if not use_drop_mask:
        return torch.sigmoid(attention)
    peak = attention.flatten(1).amax(dim=1).view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    return (attention < threshold * peak).to(features.dtype)


class AttentionDropout(nn.Module):
    """ADL on a feature map: training only; the identity in evaluation (module docstring)."""

    def __init__(self, drop_rate: float, threshold: float):
        super().__init__()
        if not (0 <= drop_rate <= 1 and 0 <= threshold <= 1):
            raise ValueError(f"ADL: drop_rate and threshold must be in [0, 1]; got {drop_rate}, {threshold}")
        self.drop_rate = drop_rate
        self.threshold = threshold

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return features
        use_drop_mask = bool(torch.rand(()) < self.drop_rate)  # one draw (torch's CPU generator) per forward
        return features * adl_mask(features, self.threshold, use_drop_mask)

    def extra_repr(self) -> str:
        return f"drop_rate={self.drop_rate}, threshold={self.threshold}"


def _efficientnet_positions(body: nn.Module) -> list[nn.Module]:
    model = body.model  # bench.model.backbones.FeatureExtractor
    # bn2 of a block: BN + ReLU6 after its depthwise conv (>= 0; the block's output after it is linear, signed);
    # the model's bn2: BN + ReLU6 after the head conv, the final feature map.
    return [model.blocks[5][0].bn2, model.blocks[6][0].bn2, model.bn2]


def _resnet_positions(body: nn.Module) -> list[nn.Module]:
    layer3, layer4 = body[6], body[7]  # Sequential(conv1, bn1, relu, maxpool, layer1, ..., layer4)
    return [layer3[0], layer4[0], layer4[-1]]


def _vgg16_positions(body: nn.Module) -> list[nn.Module]:
    return [body[16], body[22], body[29]]  # pool3, conv4_3's ReLU, conv5_3's ReLU (torchvision's indices)


def _googlenet_positions(body: nn.Module) -> list[nn.Module]:
    return [body[9], body[11], body[12]]  # inception4b, inception4d, inception4e (the final map)


def _tiny_positions(body: nn.Module) -> list[nn.Module]:
    return [module for module in body if isinstance(module, nn.ReLU)][-2:]  # the last two blocks' outputs


# Backbone name -> the layers whose outputs ADL masks, in forward order.
ADL_POSITIONS = {
    "efficientnet_lite0": _efficientnet_positions,
    "efficientnet_lite1": _efficientnet_positions,
    "efficientnet_lite2": _efficientnet_positions,
    "resnet18": _resnet_positions,
    "resnet50": _resnet_positions,
    "vgg16_gap": _vgg16_positions,
    "googlenet_gap": _googlenet_positions,
    "tiny_cnn": _tiny_positions,
}


def _apply_adl(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
    return module.adl(output)


def attach_adl(body: nn.Module, backbone: str, drop_rate: float, threshold: float) -> list[nn.Module]:
    """Attach an :class:`AttentionDropout` after each layer of ``ADL_POSITIONS[backbone]``; returns those layers."""
    layers = ADL_POSITIONS[backbone](body)
    for layer in layers:
        layer.adl = AttentionDropout(drop_rate, threshold)
        layer.register_forward_hook(_apply_adl)
    return layers
