"""Every backbone: map size, the GAP invariant, the added layers' learning rate, weights files and their errors."""

import dataclasses
import typing

import pytest
import torch
import torchvision
from helpers import TINY_CONFIG

from bench.commands.cli import main
from bench.config import BACKBONES, ConfigError, ModelConfig, load_config
from bench.model.backbones import BACKBONE_BUILDERS, MissingWeightsError, build_backbone
from bench.model.cam import class_activation_maps
from bench.model.camnet import build_model

CASES = [(name, stride) for name, info in BACKBONES.items() for stride in info.feature_strides]


def test_one_backbone_table_names_every_builder_and_config_choice():
    # config.BACKBONES is the one list: the builders and the config's allowed choices follow it.
    assert list(BACKBONE_BUILDERS) == list(BACKBONES)
    assert typing.get_args(typing.get_type_hints(ModelConfig)["backbone"]) == tuple(BACKBONES)


@pytest.mark.parametrize("backbone, stride", CASES)
def test_every_backbone_gives_input_over_stride_maps_and_the_gap_invariant(backbone, stride):
    torch.manual_seed(0)
    size = 64
    model = build_model(ModelConfig(backbone=backbone, pretrained=False, feature_stride=stride, pooling="gap",
                                    input_size=size), num_classes=4).eval()
    model.feature_scale.fill_(3.0)
    with torch.no_grad():
        features = model.features(torch.randn(2, 3, size, size))
        logits = model.head(features)
        cams = class_activation_maps(features, model.cam_weight, torch.arange(4).repeat(2, 1))
    assert features.shape == (2, model.classifier.in_features, size // stride, size // stride)
    torch.testing.assert_close(logits, cams.mean(dim=(2, 3)) + model.classifier.bias, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backbone, channels", [("vgg16_gap", 512), ("googlenet_gap", 832)])
def test_the_paper_gap_backbones_add_a_1024_channel_conv_trained_at_the_head_rate(backbone, channels):
    model = build_model(ModelConfig(backbone=backbone, pretrained=False), num_classes=3)
    conv = model.added[0]
    if backbone == "vgg16_gap":  # conv1_1 ... conv5_3 + ReLU: 13 convs, 4 pools (pool5 removed)
        layers = list(model.backbone)
        assert sum(isinstance(m, torch.nn.Conv2d) for m in layers) == 13
        assert sum(isinstance(m, torch.nn.MaxPool2d) for m in layers) == 4 and isinstance(layers[-1], torch.nn.ReLU)
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (channels, 1024, (3, 3))
    pretrained, new = model.parameter_groups(lr=0.01, head_lr_mult=10.0)
    assert new["lr"] == pytest.approx(0.1) and pretrained["lr"] == 0.01
    new_ids = {id(p) for p in new["params"]}
    assert id(conv.weight) in new_ids and id(model.classifier.weight) in new_ids
    assert not new_ids & {id(p) for p in pretrained["params"]}
    assert len(new["params"]) + len(pretrained["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("backbone, mean, std", [
    # torchvision's ImageNet weights: timm's IMAGENET_DEFAULT_*; TF-ported weights take [-1, 1] input.
    ("resnet18", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ("vgg16_gap", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ("efficientnet_lite0", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    ("googlenet_gap", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
])
def test_each_backbone_declares_the_input_normalization_its_weights_expect(backbone, mean, std):
    model = build_model(ModelConfig(backbone=backbone, pretrained=False), num_classes=2)
    assert (tuple(model.mean), tuple(model.std)) == (mean, std)


def test_resnet_stride_16_is_wsolevaluations_layer4_at_stride_1():
    body = build_backbone(ModelConfig(backbone="resnet50", pretrained=False, feature_stride=16)).body
    layer4 = body[7][0]
    assert layer4.conv2.stride == (1, 1) and layer4.downsample[0].stride == (1, 1)


def test_torchvision_weights_load_from_the_configured_path(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "my-resnet18.pth"
    torch.save(reference.state_dict(), path)
    body = build_backbone(ModelConfig(backbone="resnet18", pretrained=True, weights=str(path))).body
    torch.testing.assert_close(body[0].weight, reference.conv1.weight)
    torch.testing.assert_close(body[7][1].conv2.weight, reference.layer4[1].conv2.weight)


def test_torchvision_weights_load_from_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    reference = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True)
    torch.save(reference.state_dict(), tmp_path / "checkpoints" / "googlenet-1378be20.pth")
    body = build_backbone(ModelConfig(backbone="googlenet_gap", pretrained=True)).body
    torch.testing.assert_close(body[0].conv.weight, reference.conv1.conv.weight)
    assert len(body) == 13  # conv1 ... inception4e; maxpool4 and after removed
    torch.testing.assert_close(body[-1].branch1.conv.weight, reference.inception4e.branch1.conv.weight)


def test_missing_weights_say_which_file_where_and_how_to_train_from_scratch(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(MissingWeightsError) as error:
        build_backbone(ModelConfig(backbone="googlenet_gap", pretrained=True))
    message = str(error.value)
    assert str(tmp_path / "checkpoints" / "googlenet-1378be20.pth") in message
    assert "torch hub cache" in message and "model.pretrained: false" in message
    with pytest.raises(MissingWeightsError, match="nowhere.pth .from model.weights. does not exist"):
        build_backbone(ModelConfig(backbone="resnet50", pretrained=True, weights=str(tmp_path / "nowhere.pth")))


def test_missing_weights_stop_a_run_with_exit_code_2_and_no_run_folder(tmp_path, tiny_data_dir, monkeypatch,
                                                                       capsys):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    code = main(["run", str(TINY_CONFIG), f"data_root={tiny_data_dir}", f"results_dir={tmp_path / 'results'}",
                 "model.backbone=resnet18", "model.pretrained=true", "model.feature_stride=16"])
    assert code == 2
    assert "resnet18-f37072fd.pth" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_unknown_backbone_is_rejected_with_the_allowed_names(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  backbone: resnet101\n")
    with pytest.raises(ConfigError, match="line 2: 'model.backbone' is 'resnet101'; expected one of: .*resnet50"):
        load_config(path)
    config = dataclasses.replace(ModelConfig(pretrained=False), backbone="resnet101")
    with pytest.raises(ValueError, match="unknown backbone 'resnet101'; expected one of: .*googlenet_gap"):
        build_backbone(config)


@pytest.mark.parametrize("text, message", [
    ("model:\n  backbone: vgg16_gap\n  feature_stride: 32\n", "vgg16_gap supports: 16"),
    ("model:\n  weights: w.pth\n", "'model.weights' is 'w.pth' but it is only read for"),
    ("model:\n  backbone: resnet18\n  pretrained: false\n  weights: w.pth\n", "only read for model.pretrained: true"),
])
def test_backbone_config_errors(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
