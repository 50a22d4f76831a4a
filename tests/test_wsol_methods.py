"""The training-time WSOL methods that change the batch or the backbone: HaS, CutMix, ADL (hand-made numbers),
their config checks, and tiny end-to-end runs."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data as skimage_data

from bench.config import ConfigError, ModelConfig, WsolConfig, config_differences
from bench.model.camnet import build_model
from bench.model.feature_dropout import AttentionDropout, adl_mask
from bench.run.pipeline import run
from bench.training.loop import method_loss, train_one_epoch
from bench.training.wsol_batches import Mixing, cutmix, cutmix_box, hide_patches, mixed_cross_entropy

TINY = ModelConfig(backbone="tiny_cnn", pretrained=False, feature_stride=8)


# ----------------------------------------------------------------------------- HaS


def test_has_hides_whole_patches_with_the_mean_pixel_and_keeps_the_rest():
    torch.manual_seed(0)
    images = torch.rand(3, 3, 10, 9) + 1.0  # no pixel is 0 before hiding
    hidden = hide_patches(images, grid_size=4, drop_rate=0.5)
    zero = hidden == 0
    assert torch.equal(zero.all(dim=1), zero.any(dim=1))  # a pixel is hidden in every channel or in none
    kept = ~zero
    assert torch.equal(hidden[kept], images[kept])  # kept pixels are untouched
    # Patches are 4 x 4 from the top-left corner, the last row / column cut to 2 / 1 pixels: each all or nothing.
    for rows in (slice(0, 4), slice(4, 8), slice(8, 10)):
        for columns in (slice(0, 4), slice(4, 8), slice(8, 9)):
            cell = zero[:, 0, rows, columns].flatten(1)
            assert torch.equal(cell.all(dim=1), cell.any(dim=1))
    assert torch.equal(hide_patches(images, 4, 0.0), images)
    assert torch.count_nonzero(hide_patches(images, 4, 1.0)) == 0


def test_has_hides_the_configured_share_of_patches():
    torch.manual_seed(1)
    images = torch.ones(64, 3, 64, 64)
    hidden = hide_patches(images, grid_size=8, drop_rate=0.3)  # 64 images x 64 patches = 4,096 draws
    share = float((hidden[:, 0, ::8, ::8] == 0).float().mean())
    assert abs(share - 0.3) < 3 * math.sqrt(0.3 * 0.7 / 4096)  # within 3 standard errors


class _Recorder(torch.nn.Module):
    """A network stand-in that records the images of its training pass and returns fixed logits."""

    def __init__(self):
        super().__init__()
        self.seen = None

    def forward(self, images, labels=None):
        self.seen = images
        logits = torch.zeros(len(images), 2, requires_grad=True)
        return (logits, {}) if labels is not None else logits


def test_has_acts_on_training_batches_only_through_the_method_loss():
    network, images, labels = _Recorder(), torch.ones(2, 3, 8, 8), torch.tensor([0, 1])
    torch.manual_seed(0)
    method_loss(network, images, labels, WsolConfig(method="has", has_grid_size=2, has_drop_rate=0.5))
    assert torch.count_nonzero(network.seen == 0) > 0 and torch.count_nonzero(images == 0) == 0  # a copy is hidden
    logits, loss, terms = method_loss(network, images, labels, WsolConfig(method="adl"))  # ADL: images left alone
    assert network.seen is images and loss.item() == pytest.approx(math.log(2))
    assert terms == {}  # the cross-entropy alone: no terms to log


# ----------------------------------------------------------------------------- CutMix


def test_cutmix_box_is_clipped_to_the_image():
    # lam 0.75: sides floor(10 * 0.5) = 5; centre (1, 8): x in [1 - 2, 1 + 2] -> [0, 3), y in [6, 10) after clipping.
    assert cutmix_box(10, 10, 0.75, (1, 8)) == (0, 6, 3, 10)
    assert cutmix_box(10, 20, 0.0, (10, 5)) == (0, 0, 20, 10)  # lam 0 pastes (all of) the frame
    assert cutmix_box(10, 10, 1.0, (4, 4)) == (4, 4, 4, 4)  # lam 1 pastes nothing


def test_cutmix_pastes_the_box_from_the_permuted_batch_and_recomputes_lam_from_it():
    torch.manual_seed(3)
    images, labels = torch.arange(4 * 3 * 12 * 12, dtype=torch.float32).view(4, 3, 12, 12), torch.tensor([0, 1, 2, 3])
    mixed, mixing = cutmix(images, labels, beta=1.0, prob=1.0)
    x0, y0, x1, y1 = mixing.box
    assert mixing.lam == pytest.approx(1 - (x1 - x0) * (y1 - y0) / 144)
    order = [int(label) for label in mixing.other_labels]  # labels are the indices here
    for i, j in enumerate(order):
        assert torch.equal(mixed[i, :, y0:y1, x0:x1], images[j, :, y0:y1, x0:x1])
    outside = torch.ones(12, 12, dtype=torch.bool)
    outside[y0:y1, x0:x1] = False
    assert torch.equal(mixed[:, :, outside], images[:, :, outside])
    assert cutmix(images, labels, beta=1.0, prob=0.0) == (images, None)


def test_cutmix_loss_is_mixed_by_lam():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax (0.25, 0.75)
    mixing = Mixing(torch.tensor([0]), 0.88, (0, 0, 3, 4))
    expected = 0.88 * -math.log(0.75) + 0.12 * -math.log(0.25)
    assert mixed_cross_entropy(logits, torch.tensor([1]), mixing).item() == pytest.approx(expected)
    assert mixed_cross_entropy(logits, torch.tensor([1]), None).item() == pytest.approx(-math.log(0.75))


# ----------------------------------------------------------------------------- ADL


def test_adl_drop_mask_and_importance_map_on_a_hand_made_feature_map():
    features = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[1.0, 2.0], [3.0, 6.0]]]])  # channel mean [[1, 2], [3, 5]]
    # max 5, threshold 0.9 -> 4.5: only the cell of mean 5 is dropped.
    assert torch.equal(adl_mask(features, 0.9, True), torch.tensor([[[[1.0, 1.0], [1.0, 0.0]]]]))
    assert torch.equal(adl_mask(features, 0.5, True), torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]]))  # 2.5: 3 and 5
    assert torch.allclose(adl_mask(features, 0.9, False), torch.sigmoid(torch.tensor([[[[1.0, 2.0], [3.0, 5.0]]]])))
    layer = AttentionDropout(drop_rate=1.0, threshold=0.9).train()
    assert torch.equal(layer(features), features * adl_mask(features, 0.9, True))
    assert torch.allclose(AttentionDropout(0.0, 0.9).train()(features), features * adl_mask(features, 0.9, False))
    assert torch.equal(layer.eval()(features), features)  # the identity in evaluation


def test_adl_network_gives_the_plain_networks_cam_at_evaluation_and_differs_in_training():
    torch.manual_seed(0)
    plain = build_model(TINY, 3).eval()
    adl = build_model(TINY, 3, WsolConfig(method="adl", adl_drop_rate=1.0))
    adl.load_state_dict(plain.state_dict())  # ADL adds no parameters: the same state dict fits both
    images, classes = torch.randn(2, 3, 32, 32), torch.tensor([[0, 2], [1, 1]])
    adl.eval()
    assert torch.equal(adl.class_maps(adl.features(images), classes), plain.class_maps(plain.features(images), classes))
    assert torch.equal(adl(images), plain(images))
    plain.train(), adl.train()
    assert not torch.equal(adl.features(images), plain.features(images))


# Where ADL sits (the modules it is attached to, by name inside the backbone's body): ResNet and VGG16 are
# wsolevaluation's positions; EfficientNet's are each block's depthwise ReLU6 (bn2) and the head conv's.
ADL_MODULES = {
    "efficientnet_lite0": ["model.blocks.5.0.bn2", "model.blocks.6.0.bn2", "model.bn2"],
    "resnet18": ["6.0", "7.0", "7.1"],
    "resnet50": ["6.0", "7.0", "7.2"],
    "vgg16_gap": ["16", "22", "29"],
    "googlenet_gap": ["9", "11", "12"],
    "tiny_cnn": ["5", "8"],  # at stride 8: its last two blocks' ReLUs
}


@pytest.mark.parametrize("backbone", sorted(ADL_MODULES))
def test_adl_is_attached_after_the_named_modules_of_each_backbone(backbone):
    stride = 8 if backbone == "tiny_cnn" else 16
    network = build_model(ModelConfig(backbone=backbone, pretrained=False, feature_stride=stride, input_size=64), 3,
                          WsolConfig(method="adl"))
    attached = [name.removesuffix(".adl") for name, module in network.backbone.named_modules()
                if isinstance(module, AttentionDropout)]
    assert attached == ADL_MODULES[backbone]


def _photos(size: int, mean: tuple, std: tuple) -> torch.Tensor:
    """Four real photos (scikit-image) resized to ``size`` x ``size`` and normalized: ``(4, 3, size, size)``."""
    photos = [skimage_data.chelsea(), skimage_data.coffee(), skimage_data.astronaut(), skimage_data.rocket()]
    batch = torch.cat([F.interpolate(torch.from_numpy(np.ascontiguousarray(photo)).permute(2, 0, 1)[None].float()
                                     / 255.0, size=(size, size), mode="bilinear", antialias=True)
                       for photo in photos])  # (4, 3, size, size) in [0, 1]
    return (batch - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def test_adl_masks_non_negative_maps_of_the_pretrained_efficientnet_where_block_outputs_are_signed():
    """On real photos, every map ADL masks in EfficientNet-Lite0 is >= 0 (ReLU6), with BatchNorm in eval and in
    train mode; the outputs of the same blocks, where ADL sat before, have negative channel means (linear
    bottlenecks: about half of them)."""
    network = build_model(ModelConfig(backbone="efficientnet_lite0", feature_stride=16, input_size=160), 3,
                          WsolConfig(method="adl"))
    blocks = network.backbone.model.blocks
    layers = [module.adl for module in network.backbone.modules() if hasattr(module, "adl")]
    received, block_outputs = {}, {}
    for index, layer in enumerate(layers):  # what each ADL layer is given: the map it masks
        layer.register_forward_pre_hook(lambda module, inputs, index=index: received.__setitem__(index, inputs[0]))
    for index, block in enumerate((blocks[5][0], blocks[6][0])):  # where ADL sat before
        block.register_forward_hook(lambda module, inputs, output, index=index: block_outputs.__setitem__(index, output))
    images = _photos(160, network.mean, network.std)
    for training in (False, True):
        network.train(training)
        with torch.no_grad():
            network.features(images)
        assert len(received) == 3
        for maps in received.values():
            assert float(maps.min()) >= 0.0
            assert float(maps.mean(dim=1).flatten(1).amax(dim=1).min()) > 0.0  # a positive maximum in every image
        for output in block_outputs.values():
            assert float((output.mean(dim=1) < 0).float().mean()) > 0.2  # share of negative channel means


# ----------------------------------------------------------------------------- config and the rest of a run


def test_methods_that_change_the_backbone_refuse_head_mode_and_head_methods_refuse_gem(tiny_config):
    with pytest.raises(ConfigError, match="'wsol.method' is 'cutmix'.*train.mode"):
        tiny_config("wsol.method=cutmix", "train.mode=head")
    with pytest.raises(ConfigError, match="'wsol.method' 'acol'.*gem"):
        tiny_config("wsol.method=acol", "model.pooling=gem")
    with pytest.raises(ConfigError, match="wsol.spg_threshold_1"):
        tiny_config("wsol.spg_threshold_1=[0.1,0.2]")
    assert tiny_config().wsol == WsolConfig(method="cam")


def test_cam_trains_exactly_as_without_a_method():
    """``wsol.method: cam`` is the plain loop: the same weights after an epoch, bit for bit."""
    batches = [{"image": torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(i)),
                "label": torch.tensor([0, 1, 2, 0])} for i in range(3)]
    weights = []
    for wsol in (None, WsolConfig()):
        torch.manual_seed(0)
        model = build_model(TINY, 3)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        train_one_epoch(model, batches, optimizer, scheduler, torch.device("cpu"), wsol=wsol)
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_an_epoch_of_a_head_method_logs_each_loss_term_and_they_sum_to_the_loss():
    """ACoL / SPG: the epoch's row holds each term's batch-weighted mean (``loss_ce`` first), summing to ``loss``."""
    batches = [{"image": torch.randn(size, 3, 32, 32, generator=torch.Generator().manual_seed(size)),
                "label": torch.arange(size) % 3} for size in (4, 2)]  # unequal batches: the means are weighted
    for method, names in (("acol", ["ce", "acol_b"]), ("spg", ["ce", "spg_b2", "spg_b1", "spg_c"])):
        torch.manual_seed(0)
        model = build_model(TINY, 3, WsolConfig(method=method, head_channels=8))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # no step: every batch sees the same weights
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        row = train_one_epoch(model, batches, optimizer, scheduler, torch.device("cpu"), wsol=WsolConfig(
            method=method, head_channels=8))
        assert [key for key in row if key.startswith("loss_")] == [f"loss_{name}" for name in names]
        assert sum(row[f"loss_{name}"] for name in names) == pytest.approx(row["loss"], rel=1e-6)
        # The batch's loss is CE + (the head's terms summed in order), bit for bit as before they were logged.
        _, loss, terms = method_loss(model, batches[0]["image"], batches[0]["label"], WsolConfig(method=method))
        others = [terms[name] for name in names[1:]]
        assert torch.equal(loss, terms["ce"] + (others[0] if len(others) == 1 else others[0] + others[1] + others[2]))
        # Each term by hand: the same network in train mode on each batch, weighted by its size.
        model.train()
        expected = {name: 0.0 for name in names}
        with torch.no_grad():
            for batch in batches:
                logits, extra = model(batch["image"], batch["label"])
                for name, term in {"ce": F.cross_entropy(logits, batch["label"]), **extra}.items():
                    expected[name] += float(term) * len(batch["label"]) / 6
        assert {name: row[f"loss_{name}"] for name in names} == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("method", ["has", "cutmix", "adl"])
def test_a_tiny_run_trains_and_scores_with_each_batch_method(tiny_config, method):
    config = tiny_config(f"wsol.method={method}", "train.epochs=1", f"name=tiny-{method}", "threads=1")
    messages = []
    run(config, log=messages.append)
    metrics = json.loads((config.run_dir / "metrics.json").read_text())
    assert 0 <= metrics["gt_known_loc_acc"] <= 100
    # The training line names the method beside the pooling, and one epoch in the singular.
    training = [message for message in messages if message.startswith("training tiny_cnn")]
    assert len(training) == 1 and training[0].startswith(f"training tiny_cnn (GAP, {method.upper()}, "), messages
    assert training[0].endswith(" images for 1 epoch")


def test_parameters_a_method_does_not_read_are_not_a_difference(tiny_config):
    has = tiny_config("wsol.method=has")
    assert config_differences(has, tiny_config("wsol.method=has", "wsol.head_channels=64")) == []
    assert config_differences(has, tiny_config("wsol.method=has", "wsol.has_drop_rate=0.25")) == [
        "wsol.has_drop_rate: 0.5 -> 0.25"]
    acol = tiny_config("wsol.method=acol", "wsol.head_channels=64")
    assert config_differences(acol, tiny_config("wsol.method=acol")) == ["wsol.head_channels: 64 -> 1024"]
    assert "wsol.method: 'has' -> 'acol'" in config_differences(has, acol)


def test_a_cutmix_run_stopped_mid_training_resumes_to_the_uninterrupted_results(tiny_config, monkeypatch):
    """Its random boxes come from torch's generator, saved in each checkpoint: a resumed run replays them."""
    from bench.training import wsol_batches

    overrides = ["wsol.method=cutmix", "train.epochs=2", "threads=1"]
    whole, stopped = tiny_config(*overrides, "name=whole"), tiny_config(*overrides, "name=stopped")
    run(whole, log=lambda message: None)
    calls, real = [], wsol_batches.F.cross_entropy

    steps = math.ceil(whole.dataset.num_train / whole.train.batch_size)  # per epoch

    def breaks_in_epoch_two(logits, labels):  # 2 cross-entropies per mixed step: the first step of epoch 2
        calls.append(1)
        loss = real(logits, labels)
        return loss * float("nan") if len(calls) == 2 * steps + 2 else loss

    monkeypatch.setattr(wsol_batches.F, "cross_entropy", breaks_in_epoch_two)
    with pytest.raises(FloatingPointError, match="epoch 2/2"):
        run(stopped, log=lambda message: None)
    monkeypatch.setattr(wsol_batches.F, "cross_entropy", real)
    run(stopped, resume=True, log=lambda message: None)
    for name in ("metrics.json", "predictions.csv"):
        assert (stopped.run_dir / name).read_text() == (whole.run_dir / name).read_text()
