"""Networks with a CAM seam: ``features(x) -> (B, C, h, w)`` and ``head(features) -> (B, num_classes)``.

The head is global pooling followed by one linear layer, so the class
activation map of class c is ``sum_k W[c, k] * f_k`` (see :mod:`bench.model.cam`).
:func:`global_pool` is the one function that decides the pooling. The
backbones (EfficientNet-Lite0/1/2, ResNet-18/50, VGG16-GAP, GoogLeNet-GAP, a
tiny test CNN) and their weights are in :mod:`bench.model.backbones`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import get_args

import torch
from torch import nn

from bench.config import ModelConfig, Pooling, WsolConfig, check_model
from bench.model.backbones import (
    FeatureExtractor,
    backbone_stages,
    build_backbone,
    load_efficientnet_lite_imagenet,
    set_efficientnet_stride_16,
)
from bench.model.cam import class_activation_maps
from bench.model.feature_dropout import attach_adl
from bench.model.wsol_heads import ClassMapHead, LossTerms, build_head


def topk_count(fraction: float, positions: int) -> int:
    """How many of ``positions`` map cells the ``topk`` pooling averages: ``fraction`` of them, at least one.

    ``k = max(1, floor(fraction * positions + 0.5))``, i.e. rounded to the
    nearest integer with halves rounded up (in double precision), so the same
    fraction means the same share of the map at every map resolution.
    ``fraction`` must be in (0, 1].
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"topk fraction is {fraction}; expected a number in (0, 1]")
    return max(1, math.floor(fraction * positions + 0.5))


def global_pool(features: torch.Tensor, method: str, *, lse_r: float = 5.0, gem_p: float = 3.0,
                topk_fraction: float = 0.2, topk_alpha: float = 0.7, mix_alpha: float = 0.5) -> torch.Tensor:
    """Pool ``features (B, C, h, w)`` over space to ``(B, C)``, each channel on its own.

    * ``gap``: mean over (h, w).
    * ``gmp``: max over (h, w).
    * ``lse``: log-sum-exp, ``(1/r) * log(mean(exp(r * f)))``; r -> 0 gives GAP, r -> inf gives GMP.
    * ``gem``: generalized mean ``mean(clamp(f, 1e-6) ** p) ** (1/p)``; p = 1 is GAP, p -> inf is GMP
      (defined for non-negative features, as after a ReLU).
    * ``topk`` (WILDCAT, Durand et al. CVPR 2017): the mean of the k highest values plus
      ``topk_alpha`` times the mean of the k lowest, ``k = topk_count(topk_fraction, h * w)``.
      Tied values give the same sum whichever of them are taken. k = 1 with alpha 0 is GMP;
      k = h * w with alpha 0 is GAP.
    * ``mixed``: ``mix_alpha * GMP + (1 - mix_alpha) * GAP``; alpha 0 is GAP, alpha 1 is GMP, exactly.

    Only GAP commutes with the linear classifier (logit = mean of the CAM +
    bias); the CAM is the classifier's weighted sum of the feature maps
    whatever the pooling (:mod:`bench.model.cam`).
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
    if method == "topk":
        k = topk_count(topk_fraction, flat.shape[2])
        ordered = flat.sort(dim=2, descending=True).values  # (B, C, h*w), highest first
        highest = ordered[..., :k].mean(dim=2)
        return highest if topk_alpha == 0 else highest + topk_alpha * ordered[..., -k:].mean(dim=2)
    if method == "mixed":
        return mix_alpha * flat.amax(dim=2) + (1 - mix_alpha) * flat.mean(dim=2)
    raise ValueError(f"unknown pooling {method!r}; expected one of: {', '.join(get_args(Pooling))}")


def pooling_parameters(config: ModelConfig) -> dict[str, float]:
    """The pooling's parameters as :func:`global_pool` takes them (each pooling reads its own)."""
    return {"lse_r": config.lse_r, "gem_p": config.gem_p, "topk_fraction": config.topk_fraction,
            "topk_alpha": config.topk_alpha, "mix_alpha": config.mix_alpha}


class CamNet(nn.Module):
    """Backbone -> added layers (the CAM modification, often none) -> global pooling -> linear classifier.

    ``backbone`` is the pretrained part, ``added`` the new layers before the
    pooling (``nn.Identity()`` if none); they train with the classifier at the
    head's learning-rate multiplier, and head-only training trains them on the
    backbone's cached maps.

    ``wsol_head`` (ACoL, SPG: :mod:`bench.model.wsol_heads`) replaces pooling +
    linear classifier by a method's own head, which then gives the logits and
    the maps (:meth:`class_maps`); ``classifier`` is then None.
    """

    def __init__(self, backbone: nn.Module, num_features: int, num_classes: int, config: ModelConfig,
                 mean: tuple[float, float, float], std: tuple[float, float, float], added: nn.Module | None = None,
                 wsol_head: ClassMapHead | None = None):
        super().__init__()
        self.backbone = backbone
        self.added = nn.Identity() if added is None else added
        self.classifier = nn.Linear(num_features, num_classes) if wsol_head is None else None
        self.wsol_head = wsol_head
        self.pooling = config.pooling
        self.pooling_parameters = pooling_parameters(config)
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
        return self.added(self.backbone(images))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """``features (B, C, h, w)`` -> class logits ``(B, num_classes)``."""
        if self.wsol_head is not None:
            return self.wsol_head.logits(features / self.feature_scale)
        return self.classify_pooled(self.pool(features))

    def class_maps(self, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """The maps evaluation boxes: ``features (B, C, h, w)``, ``classes (B, M)`` -> ``(B, M, h, w)``.

        The CAM (:func:`bench.model.cam.class_activation_maps` with :attr:`cam_weight`), or the map of the
        method's own head (``wsol_head``).
        """
        if self.wsol_head is not None:
            return self.wsol_head.class_maps(features / self.feature_scale, classes)
        return class_activation_maps(features, self.cam_weight, classes)

    def training_output(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, LossTerms]:
        """A training batch -> ``(logits (B, num_classes), the method's other loss terms by name)``.

        Plain CAM (and HaS, CutMix, ADL, which change the input or the backbone's features, not the head):
        the logits of :meth:`forward` and no other term (``{}``). ACoL / SPG: their head's (``labels`` guide it;
        :data:`bench.model.wsol_heads.LOSS_TERMS` names the terms).
        """
        features = self.features(images)
        if self.wsol_head is not None:
            return self.wsol_head.training_output(features / self.feature_scale, labels)
        return self.head(features), {}

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """``features (B, C, h, w)`` -> ``(B, C)`` with the model's pooling and its parameters (:func:`global_pool`)."""
        return global_pool(features, self.pooling, **self.pooling_parameters)

    def classify_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """``pooled (B, C)`` (the output of :meth:`pool`) -> class logits ``(B, num_classes)``."""
        return self.classifier(pooled / self.feature_scale)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        """Logits ``(B, num_classes)``; given training ``labels (B,)``, :meth:`training_output` instead.

        One entry point for both, so that a DistributedDataParallel wrapper sees the training pass.
        """
        if labels is not None:
            return self.training_output(images, labels)
        return self.head(self.features(images))

    def parameter_groups(self, lr: float, head_lr_mult: float) -> list[dict]:
        """Optimizer groups: the trainable pretrained backbone at ``lr``; the new layers at ``lr * head_lr_mult``."""
        return [
            {"params": [p for p in self.backbone.parameters() if p.requires_grad], "lr": lr},
            {"params": self.new_parameters(), "lr": lr * head_lr_mult},
        ]

    def freeze_stages(self, count: int) -> None:
        """Freeze the backbone's first ``count`` stages (:func:`bench.model.backbones.backbone_stages`).

        Frozen stages keep their ImageNet weights and BatchNorm statistics (eval
        mode, whatever :meth:`train` is asked); as their parameters need no
        gradient, autograd records nothing before the first trained layer, so the
        backward pass skips them: the early, high-resolution stages are where
        most of its cost is.
        """
        stages = backbone_stages(self.backbone)
        if not 0 <= count <= len(stages):
            raise ValueError(f"train.frozen_stages is {count}; this backbone has {len(stages)} stages")
        self._frozen = stages[:count]
        for stage in self._frozen:
            for parameter in stage.parameters():
                parameter.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> "CamNet":
        super().train(mode)
        for stage in getattr(self, "_frozen", ()):
            stage.eval()
        return self

    def new_parameters(self) -> list[nn.Parameter]:
        """The parameters of the layers added to the pretrained backbone: ``added``, then the classifier (or head)."""
        last = self.classifier if self.wsol_head is None else self.wsol_head
        return list(self.added.parameters()) + list(last.parameters())


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
    A method's own head then scales its other inputs to match the head input
    (:meth:`bench.model.wsol_heads.ClassMapHead.calibrate`: SPG's taps).
    ``target_energy <= 0`` leaves every scale at 1. Returns the scale.
    """
    if target_energy <= 0:
        return float(model.feature_scale)
    was_training = model.training
    model.eval()
    features = model.features(images)  # (B, C, h, w)
    energy = model.pool(features).pow(2).sum(dim=1).mean().item()  # pooled (B, C)
    scale = math.sqrt(energy / target_energy) if energy > 0 else 1.0
    model.feature_scale.fill_(scale)
    if model.wsol_head is not None:
        model.wsol_head.calibrate(model.backbone, images, features / scale)
    model.train(was_training)
    return scale


@dataclass(frozen=True)
class ImageNetClassifier:
    """The pretrained backbone with its original 1000-class layer (for sanity checks and ``bench cam``)."""

    features: nn.Module
    classifier: nn.Linear


def efficientnet_lite_imagenet(version: int = 0, feature_stride: int = 32) -> ImageNetClassifier:
    """An ImageNet-pretrained EfficientNet-Lite<version> as features + 1000-class classifier, in eval mode."""
    model = load_efficientnet_lite_imagenet(version)
    if feature_stride == 16:
        set_efficientnet_stride_16(model)
    classifier = model.classifier
    model.reset_classifier(0)
    return ImageNetClassifier(FeatureExtractor(model).eval(), classifier.eval())


def efficientnet_lite0_imagenet(feature_stride: int = 32) -> ImageNetClassifier:
    """The ImageNet-pretrained EfficientNet-Lite0 as features + 1000-class classifier, in eval mode."""
    return efficientnet_lite_imagenet(0, feature_stride)


def build_model(config: ModelConfig, num_classes: int, wsol: WsolConfig = WsolConfig()) -> CamNet:
    """Build the network a config describes, with a fresh ``num_classes`` classifier, for ``wsol.method``.

    ``adl`` attaches its dropout layers to the backbone (:func:`bench.model.feature_dropout.attach_adl`); ``acol``
    and ``spg`` get their own head (:func:`bench.model.wsol_heads.build_head`) in place of the linear classifier
    and of the CAM modification's added layers. A config built in code skipped the loader, so its backbone /
    stride / weights combination is checked here by the loader's own check (ConfigError).
    """
    check_model(config)
    backbone = build_backbone(config)
    if wsol.method == "adl":
        attach_adl(backbone.body, config.backbone, wsol.adl_drop_rate, wsol.adl_threshold)
    parameters = pooling_parameters(config)

    def pool(maps: torch.Tensor) -> torch.Tensor:
        return global_pool(maps, config.pooling, **parameters)

    channels = body_channels(backbone)
    head = build_head(wsol.method, backbone.body, channels, num_classes, wsol, pool, config.backbone)
    if head is not None:
        return CamNet(backbone.body, channels, num_classes, config, backbone.mean, backbone.std, wsol_head=head)
    return CamNet(backbone.body, backbone.channels, num_classes, config, backbone.mean, backbone.std,
                  added=backbone.added)


def body_channels(backbone) -> int:
    """C of the body's own output (before the CAM modification's added layers, which a method's head replaces)."""
    added = [m for m in backbone.added.modules() if isinstance(m, nn.Conv2d)]
    return added[0].in_channels if added else backbone.channels
