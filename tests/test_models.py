"""Pooling formulas, the CAM invariants, feature-map sizes and the pretrained weights."""

import math

import numpy as np
import pytest
import torch
from skimage import data as skimage_data
from timm.data.constants import IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD
from torchvision.models import ResNet50_Weights

from bench.config import ConfigError, ModelConfig, load_config
from bench.model.cam import class_activation_maps, upsample_cams
from bench.model.camnet import build_model, calibrate_feature_scale, efficientnet_lite_imagenet, global_pool, topk_count

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


@pytest.mark.parametrize("fraction, positions, count", [
    (0.2, 100, 20), (0.2, 25, 5), (0.2, 16, 3),  # 3.2 -> 3
    (0.2, 9, 2),  # 1.8 -> 2
    (0.5, 9, 5), (0.1, 25, 3), (0.625, 4, 3),  # halves round up: 4.5 -> 5, 2.5 -> 3 (Python's round gives 4, 2, 2)
    (0.1, 4, 1), (0.01, 4, 1),  # never fewer than one cell
    (1.0, 4, 4), (1.0, 1, 1),
])
def test_topk_count_is_the_rounded_share_of_the_map(fraction, positions, count):
    assert topk_count(fraction, positions) == count


@pytest.mark.parametrize("fraction", [0.0, -0.2, 1.5])
def test_topk_count_refuses_a_fraction_outside_0_1(fraction):
    with pytest.raises(ValueError, match=f"topk fraction is {fraction}; expected a number in \\(0, 1\\]"):
        topk_count(fraction, 4)


def test_topk_and_mixed_formulas_on_hand_computed_values():
    # FEATURES: channel 0 holds 1, 2, 3, 6; channel 1 holds 0, 0, 0, 4 (tied lowest values).
    def topk(fraction, alpha):
        return global_pool(FEATURES, "topk", topk_fraction=fraction, topk_alpha=alpha)

    # k = 2: channel 0 (6 + 3) / 2 + 0.7 * (1 + 2) / 2; channel 1 (4 + 0) / 2 + 0.7 * (0 + 0) / 2.
    torch.testing.assert_close(topk(0.5, 0.7), torch.tensor([[4.5 + 0.7 * 1.5, 2.0]]))
    # k = round-half-up(0.625 * 4) = 3: (6 + 3 + 2) / 3 + 0.5 * (1 + 2 + 3) / 3; (4 + 0 + 0) / 3 + 0.
    torch.testing.assert_close(topk(0.625, 0.5), torch.tensor([[11 / 3 + 1.0, 4 / 3]]))
    # k = max(1, round(0.4)) = 1: the max plus alpha times the min.
    torch.testing.assert_close(topk(0.1, 0.7), torch.tensor([[6.0 + 0.7 * 1.0, 4.0]]))
    assert torch.equal(topk(0.1, 0.0), torch.tensor([[6.0, 4.0]]))  # k = 1, alpha 0: GMP
    assert torch.equal(topk(1.0, 0.0), torch.tensor([[3.0, 1.0]]))  # k = all, alpha 0: GAP
    torch.testing.assert_close(topk(1.0, 0.5), torch.tensor([[4.5, 1.5]]))  # k = all: (1 + alpha) * GAP
    map3x3 = torch.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # k = round(0.2 * 9) = 2
    torch.testing.assert_close(global_pool(map3x3, "topk", topk_fraction=0.2, topk_alpha=0.7),
                               torch.tensor([[(9 + 8) / 2 + 0.7 * (1 + 2) / 2]]))
    mixed = global_pool(FEATURES, "mixed", mix_alpha=0.25)
    torch.testing.assert_close(mixed, torch.tensor([[0.25 * 6 + 0.75 * 3, 0.25 * 4 + 0.75 * 1]]))


def test_topk_and_mixed_reach_gap_and_gmp_exactly_at_their_ends():
    features = torch.rand(2, 5, 4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gap, gmp = global_pool(features, "gap"), global_pool(features, "gmp")
    assert torch.equal(global_pool(features, "mixed", mix_alpha=0.0), gap)
    assert torch.equal(global_pool(features, "mixed", mix_alpha=1.0), gmp)
    assert torch.equal(global_pool(features, "topk", topk_fraction=1 / 12, topk_alpha=0.0), gmp)  # k = 1 of 12
    # k = all sums the same values in sorted order: GAP up to rounding.
    torch.testing.assert_close(global_pool(features, "topk", topk_fraction=1.0, topk_alpha=0.0), gap)
    middle = global_pool(features, "topk", topk_fraction=0.5, topk_alpha=0.0)
    assert torch.all(gap <= middle) and torch.all(middle <= gmp)


def test_topk_and_mixed_gradients_reach_the_cells_they_pool():
    features = FEATURES[:, :1].clone().requires_grad_(True)  # 1, 2, 3, 6
    global_pool(features, "topk", topk_fraction=0.5, topk_alpha=0.7).sum().backward()
    # 1/k on the two highest cells (3, 6), alpha/k on the two lowest (1, 2).
    torch.testing.assert_close(features.grad[0, 0], torch.tensor([[0.35, 0.35], [0.5, 0.5]]))
    features.grad = None
    global_pool(features, "mixed", mix_alpha=0.25).sum().backward()
    # (1 - alpha)/4 everywhere, plus alpha at the max.
    torch.testing.assert_close(features.grad[0, 0], torch.tensor([[0.1875, 0.1875], [0.1875, 0.4375]]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("pooling", ["topk", "mixed"])
def test_topk_and_mixed_pool_half_precision_features(pooling, dtype):
    features = torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(3))
    pooled = global_pool(features.to(dtype), pooling)
    assert pooled.dtype == dtype
    torch.testing.assert_close(pooled.float(), global_pool(features, pooling), atol=2e-2, rtol=2e-2)


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


def test_every_pooling_keeps_the_same_cam_and_feeds_the_head_its_parameters():
    # Same weights and features under every pooling: the CAM (the classifier's weighted sum of the
    # feature maps) does not change; the logits are the classifier applied to that pooling's vector.
    poolings = {"gap": {}, "gmp": {}, "lse": {"lse_r": 2.0}, "gem": {"gem_p": 2.0},
                "topk": {"topk_fraction": 0.3, "topk_alpha": 0.4}, "mixed": {"mix_alpha": 0.25}}
    torch.manual_seed(0)
    reference = build_model(ModelConfig(backbone="tiny_cnn", pretrained=False, feature_stride=8), 3).eval()
    reference.feature_scale.fill_(2.0)
    with torch.no_grad():
        features = reference.features(torch.randn(2, 3, 64, 64))  # (2, C, 8, 8)
        cams = class_activation_maps(features, reference.cam_weight, torch.arange(3).repeat(2, 1))
        gap_logits = cams.mean(dim=(2, 3)) + reference.classifier.bias
        gmp_logits = reference.classifier(features.amax(dim=(2, 3)) / 2.0)
        for pooling, parameters in poolings.items():
            model = build_model(ModelConfig(backbone="tiny_cnn", pretrained=False, feature_stride=8, pooling=pooling,
                                            **parameters), 3).eval()
            model.load_state_dict(reference.state_dict())
            assert torch.equal(class_activation_maps(features, model.cam_weight, torch.arange(3).repeat(2, 1)), cams)
            expected = reference.classifier(global_pool(features, pooling, **parameters) / 2.0)
            torch.testing.assert_close(model.head(features), expected)
            if pooling == "gap":  # the one pooling that commutes with the linear head
                torch.testing.assert_close(model.head(features), gap_logits, atol=1e-5, rtol=1e-5)
            if pooling == "mixed":  # linear in the pooled vector: the same mix of the GMP and GAP logits
                torch.testing.assert_close(model.head(features), 0.25 * gmp_logits + 0.75 * gap_logits,
                                           atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("text, fragment", [
    ("model:\n  topk_fraction: 0\n", "'model.topk_fraction' is 0; expected a number in (0, 1]"),
    ("model:\n  topk_fraction: 1.5\n", "'model.topk_fraction' is 1.5; expected a number in (0, 1]"),
    ("model:\n  topk_alpha: -0.1\n", "'model.topk_alpha' is -0.1; expected a number in [0, 1]"),
    ("model:\n  mix_alpha: 2\n", "'model.mix_alpha' is 2; expected a number in [0, 1]"),
])
def test_pooling_parameters_out_of_range_are_refused_on_load(tmp_path, text, fragment):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert f"{path}, line 2" in str(error.value) and fragment in str(error.value)


@pytest.mark.parametrize("pooling", ["gap", "gmp", "topk", "mixed"])
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
