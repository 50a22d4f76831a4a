"""Pooling formulas, the CAM invariants, feature-map sizes and the pretrained weights."""

import math

import numpy as np
import pytest
import torch
from skimage import data as skimage_data
from timm.data.constants import IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD
from torchvision.models import ResNet50_Weights

from bench.cam import class_activation_maps, upsample_cams
from bench.config import ConfigError, ModelConfig
from bench.models import (
    build_model,
    calibrate_feature_scale,
    efficientnet_lite_imagenet,
    global_pool,
)

FEATURES = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]], [[0.0, 0.0], [0.0, 4.0]]]])  # (1, 2, 2, 2)


def test_pooling_formulas_on_hand_computed_values():
    torch.testing.assert_close(global_pool(FEATURES, "gap"), torch.tensor([[3.0, 1.0]]))
    torch.testing.assert_close(global_pool(FEATURES, "gmp"), torch.tensor([[6.0, 4.0]]))
    lse = (1 / 2) * math.log((math.exp(2) + math.exp(4) + math.exp(6) + math.exp(12)) / 4)
    torch.testing.assert_close(global_pool(FEATURES, "lse", lse_r=2.0)[0, 0], torch.tensor(lse))
    gem = ((1 + 8 + 27 + 216) / 4) ** (1 / 3)
    torch.testing.assert_close(global_pool(FEATURES, "gem", gem_p=3.0)[0, 0], torch.tensor(gem))


def test_lse_and_gem_limits_reach_gap_and_gmp():
    features = torch.rand(2, 5, 4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gap, gmp = global_pool(features, "gap"), global_pool(features, "gmp")
    torch.testing.assert_close(global_pool(features, "lse", lse_r=1e-4), gap, atol=1e-4, rtol=0)
    torch.testing.assert_close(global_pool(features, "lse", lse_r=1e4), gmp, atol=1e-3, rtol=0)
    torch.testing.assert_close(global_pool(features, "gem", gem_p=1.0), gap)
    assert torch.all(global_pool(features, "lse", lse_r=5.0) <= gmp + 1e-6)
    assert torch.all(global_pool(features, "lse", lse_r=5.0) >= gap - 1e-6)


def test_unknown_pooling_is_rejected():
    with pytest.raises(ValueError, match="unknown pooling 'avg'"):
        global_pool(FEATURES, "avg")


def test_cam_is_the_weighted_sum_of_feature_maps():
    weight = torch.tensor([[1.0, -1.0], [0.5, 2.0], [0.0, 1.0]])  # (3 classes, 2 channels)
    cams = class_activation_maps(FEATURES, weight, torch.tensor([[1, 0]]))
    expected_class1 = 0.5 * FEATURES[0, 0] + 2.0 * FEATURES[0, 1]  # [[0.5, 1], [1.5, 11]]
    torch.testing.assert_close(cams[0, 0], expected_class1)
    torch.testing.assert_close(cams[0, 1], FEATURES[0, 0] - FEATURES[0, 1])


def test_upsampling_the_cam_equals_the_cam_of_upsampled_features():
    # Bilinear upsampling is linear: upsample the 1-channel map, never the C feature maps.
    features = torch.rand(2, 8, 5, 5, generator=torch.Generator().manual_seed(1))
    weight = torch.rand(4, 8, generator=torch.Generator().manual_seed(2))
    classes = torch.tensor([[0, 3], [2, 1]])
    small_first = upsample_cams(class_activation_maps(features, weight, classes), (20, 20))
    big_first = class_activation_maps(upsample_cams(features, (20, 20)), weight, classes)
    torch.testing.assert_close(small_first, big_first, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backbone, stride, input_size, map_size", [
    ("tiny_cnn", 8, 64, 8),
    ("tiny_cnn", 16, 64, 4),
    ("efficientnet_lite0", 32, 160, 5),
    ("efficientnet_lite0", 16, 160, 10),
    ("efficientnet_lite0", 16, 224, 14),
])
def test_gap_logits_equal_cam_mean_plus_bias(backbone, stride, input_size, map_size):
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=backbone, pretrained=False, feature_stride=stride, pooling="gap",
                                    input_size=input_size), num_classes=7).eval()
    images = torch.randn(2, 3, input_size, input_size)
    model.feature_scale.fill_(2.5)  # the CAM must account for the head's input scale
    with torch.no_grad():
        features = model.features(images)
        logits = model.head(features)
        cams = class_activation_maps(features, model.cam_weight, torch.arange(7).repeat(2, 1))
    assert features.shape[-2:] == (map_size, map_size)
    torch.testing.assert_close(logits, cams.mean(dim=(2, 3)) + model.classifier.bias, atol=1e-4, rtol=1e-4)


def test_gmp_head_pools_with_amax():
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="tiny_cnn", pretrained=False, feature_stride=8, pooling="gmp"), 3).eval()
    with torch.no_grad():
        features = model.features(torch.randn(2, 3, 64, 64))
        pooled = features.amax(dim=(2, 3))
        torch.testing.assert_close(model.head(features), pooled @ model.classifier.weight.T + model.classifier.bias)


@pytest.mark.parametrize("pooling", ["gap", "gmp"])
def test_calibration_sets_the_pooled_energy_and_keeps_the_model_mode(pooling):
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="tiny_cnn", pretrained=False, feature_stride=8, pooling=pooling), 3)
    images = torch.randn(4, 3, 64, 64)
    scale = calibrate_feature_scale(model, images, target_energy=100.0)
    assert model.training and float(model.feature_scale) == pytest.approx(scale)
    model.eval()
    with torch.no_grad():
        pooled = global_pool(model.features(images), pooling) / model.feature_scale
    assert pooled.pow(2).sum(dim=1).mean().item() == pytest.approx(100.0, rel=1e-5)
    assert calibrate_feature_scale(model, images, target_energy=0.0) == pytest.approx(scale)  # 0 = leave as is


@pytest.mark.parametrize("config, fragment", [
    (ModelConfig(backbone="vgg16_gap", pretrained=False, feature_stride=32), "vgg16_gap supports: 16"),
    (ModelConfig(backbone="tiny_cnn", feature_stride=8), "backbone tiny_cnn has no pretrained weights"),
])
def test_build_model_checks_a_code_built_config_with_the_loaders_check(config, fragment):
    # A ModelConfig made in code skips load_config; build_model runs the same check (one definition).
    with pytest.raises(ConfigError, match=fragment):
        build_model(config, 3)


def test_parameter_groups_give_the_head_its_multiplier():
    model = build_model(ModelConfig(backbone="tiny_cnn", pretrained=False, feature_stride=8), 3)
    backbone, head = model.parameter_groups(lr=0.01, head_lr_mult=10.0)
    assert backbone["lr"] == 0.01 and head["lr"] == pytest.approx(0.1)
    assert len(backbone["params"]) + len(head["params"]) == len(list(model.parameters()))
    # The multiplier goes to the new layers (added + classifier), the base rate to the pretrained backbone.
    new_layers = [*model.added.parameters(), *model.classifier.parameters()]
    assert {id(p) for p in head["params"]} == {id(p) for p in new_layers}
    assert {id(p) for p in backbone["params"]} == {id(p) for p in model.backbone.parameters()}


def classify(model, image: np.ndarray) -> tuple[str, float]:
    """Top-1 ImageNet class name and probability of an RGB uint8 image (resized to 224).

    Normalized as EfficientNet-Lite's TF weights expect, to [-1, 1]: timm's IMAGENET_INCEPTION mean = std = 0.5.
    """
    tensor = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255.0
    tensor = torch.nn.functional.interpolate(tensor, size=(224, 224), mode="bilinear", antialias=True)
    mean, std = (torch.tensor(values)[:, None, None] for values in (IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD))
    with torch.no_grad():
        logits = model.classifier(model.features((tensor - mean) / std).mean(dim=(2, 3)))
    probability, index = logits.softmax(dim=1)[0].max(dim=0)
    return ResNet50_Weights.IMAGENET1K_V2.meta["categories"][index], probability.item()


@pytest.mark.parametrize("version", [0, 1, 2])
def test_pretrained_weights_recognize_real_photos(version):
    # If the by-position mapping of the weight file were wrong, these would be noise.
    imagenet_model = efficientnet_lite_imagenet(version)
    cat, cat_probability = classify(imagenet_model, skimage_data.chelsea())
    assert cat in {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}
    assert cat_probability > 0.3
    coffee, _ = classify(imagenet_model, skimage_data.coffee())
    assert coffee in {"espresso", "cup", "coffee mug"}
