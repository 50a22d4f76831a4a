"""ACoL and SPG heads (bench.model.wsol_heads): hand-made erasures, masks and losses; eval = the explicit parts;
every backbone; tiny runs end to end with ``bench methods`` and ``--resume``."""

import csv
import json
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import TINY_CONFIG
from torch import nn

from bench.commands.cli import main
from bench.config import BACKBONES, ModelConfig, WsolConfig
from bench.model.camnet import build_model, calibrate_feature_scale, global_pool
from bench.model.wsol_heads import (
    BACKGROUND,
    FOREGROUND,
    IGNORED,
    AcolHead,
    SpgHead,
    layer_outputs,
    matching_scale,
    normalize_maps,
    position_energy,
    spg_loss,
    spg_pseudo_mask,
)
from bench.run.folder import run_status
from bench.training import loop

TINY = ModelConfig(backbone="tiny_cnn", pretrained=False, feature_stride=8, pooling="gap", input_size=64)


def gap(maps):
    return global_pool(maps, "gap")


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_min_max_normalization_is_per_map_and_a_constant_map_becomes_zeros():
    maps = torch.tensor([[[[1.0, 3.0], [5.0, 9.0]], [[2.0, 2.0], [2.0, 2.0]]]])  # (1, 2, 2, 2)
    expected = torch.tensor([[[[0.0, 0.25], [0.5, 1.0]], [[0.0, 0.0], [0.0, 0.0]]]])
    torch.testing.assert_close(normalize_maps(maps), expected)


# ----------------------------------------------------------------------------- ACoL on hand-made numbers


def _identity_branch(branch, classes_from_channels):
    """Make an AcolBranch the identity on non-negative 2-channel features, class k reading channel ``[k]``."""
    with torch.no_grad():
        for conv in (branch.trunk[0], branch.trunk[2]):
            conv.weight.zero_()
            conv.bias.zero_()
            conv.weight[0, 0, 1, 1] = conv.weight[1, 1, 1, 1] = 1.0  # the centre tap: a 3x3 conv that copies
        branch.classifier.weight.zero_()
        branch.classifier.bias.zero_()
        for k, channel in enumerate(classes_from_channels):
            branch.classifier.weight[k, channel, 0, 0] = 1.0


@pytest.fixture
def acol():
    """A's class maps are the features (class k = channel k); B's are swapped (class 0 = channel 1)."""
    head = AcolHead(channels=2, num_classes=2, width=2, threshold=0.8, pool=gap)
    _identity_branch(head.branch_a, (0, 1))
    _identity_branch(head.branch_b, (1, 0))
    return head.eval()


# channel 0 normalizes to [[0, .4], [.8, 1]]: at threshold 0.8 the bottom row is erased (0.8 >= 0.8 included).
FEATURES = torch.tensor([[[[0.0, 4.0], [8.0, 10.0]], [[2.0, 2.0], [2.0, 6.0]]]])  # (1, 2, 2, 2)


def test_acol_erases_where_a_normalized_label_map_reaches_the_threshold_and_b_sees_the_erased_features(acol):
    seen = []
    acol.branch_b.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].clone()))
    logits, extra = acol.training_output(FEATURES, torch.tensor([0]))
    erased = torch.tensor([[[[0.0, 4.0], [0.0, 0.0]], [[2.0, 2.0], [0.0, 0.0]]]])
    torch.testing.assert_close(seen[0], erased)
    # Logits A = GAP of the features = (5.5, 3); logits B = GAP of the swapped erased maps = (1, 1).
    torch.testing.assert_close(logits, torch.tensor([[5.5, 3.0]]))
    assert list(extra) == ["acol_b"]
    torch.testing.assert_close(extra["acol_b"], torch.tensor(math.log(2.0)))
    # The loop's loss: CE(A) + extra = CE(A) + CE(B), by hand.
    total = (F.cross_entropy(logits, torch.tensor([0])) + extra["acol_b"]).detach()
    assert total.item() == pytest.approx(softplus(3.0 - 5.5) + math.log(2.0), rel=1e-6)
    torch.testing.assert_close(acol.logits(FEATURES), logits)  # A classifies at evaluation too


def test_acol_map_is_the_max_of_a_and_of_b_on_the_features_erased_by_each_asked_class(acol):
    maps = acol.class_maps(FEATURES, torch.tensor([[0, 1]]))
    # class 0: a = [[0, .4], [.8, 1]] erases the bottom row; B's class 0 reads channel 1 erased: [[2, 2], [0, 0]]
    # -> normalized [[1, 1], [0, 0]]; max(a, b) = [[1, 1], [.8, 1]].
    # class 1: a = norm([[2, 2], [2, 6]]) = [[0, 0], [0, 1]] erases the bottom-right cell only; B's class 1 reads
    # channel 0 erased: [[0, 4], [8, 0]] -> [[0, .5], [1, 0]]; max(a, b) = [[0, .5], [1, 1]].
    expected = torch.tensor([[[[1.0, 1.0], [0.8, 1.0]], [[0.0, 0.5], [1.0, 1.0]]]])
    torch.testing.assert_close(maps, expected)


# ----------------------------------------------------------------------------- SPG's masks and loss


def test_spg_pseudo_mask_foreground_above_high_background_below_low_the_rest_ignored():
    attention = torch.tensor([[[0.95, 0.70, 0.71, 0.50],
                               [0.10, 0.09, 0.00, 0.30],
                               [1.00, 0.69, 0.11, 0.05]]])
    F_, B_, I_ = FOREGROUND, BACKGROUND, IGNORED
    expected = torch.tensor([[[F_, I_, F_, I_],  # 0.70 is not above 0.70: ignored (strict, as wsolevaluation)
                              [I_, B_, B_, I_],  # 0.10 is not below 0.10: ignored
                              [F_, I_, I_, B_]]])
    torch.testing.assert_close(spg_pseudo_mask(attention, high=0.7, low=0.1), expected)


def test_spg_pseudo_mask_without_foreground_falls_back_to_seventy_percent_of_the_image_maximum():
    # No cell of the first image is above 0.7: its foreground becomes "> 0.7 * 0.5 = 0.35". The second keeps its own.
    attention = torch.tensor([[[0.50, 0.36], [0.35, 0.05]],
                              [[0.90, 0.36], [0.35, 0.05]]])
    expected = torch.tensor([[[FOREGROUND, FOREGROUND], [IGNORED, BACKGROUND]],
                             [[FOREGROUND, IGNORED], [IGNORED, BACKGROUND]]])
    torch.testing.assert_close(spg_pseudo_mask(attention, high=0.7, low=0.1), expected)


def test_spg_loss_supervises_b2_by_a_b1_by_b2_and_c_by_both_fused_at_the_largest_resolution():
    class_maps = torch.tensor([[[[0.0, 1.0]], [[5.0, -5.0]]]])  # (1, 2, 1, 2); label 0's map normalizes to [0, 1]
    b1 = torch.tensor([[[2.0]]])  # (1, 1, 1): resized to (1, 2), it is [2, 2]
    b2 = torch.tensor([[[0.0, 0.0]]])
    c = torch.tensor([[[0.5, 3.0]]])
    terms = spg_loss(class_maps, torch.tensor([0]), b1, b2, c, ((0.7, 0.01), (0.5, 0.05), (0.7, 0.1)))
    # B2 against A's mask [background, foreground]: -log(1 - .5) and -log(.5), i.e. log 2.
    # B1 against sigmoid(B2) = [.5, .5]: nothing above 0.5, so "> 0.35": both foreground: softplus(-2) each.
    # C against (sigmoid(2) + .5) / 2 = 0.69 on both cells: nothing above 0.7, so "> 0.48": both foreground.
    expected = {"spg_b2": math.log(2.0), "spg_b1": softplus(-2.0), "spg_c": (softplus(-0.5) + softplus(-3.0)) / 2}
    assert {name: float(term) for name, term in terms.items()} == pytest.approx(expected, rel=1e-6)
    assert list(terms) == list(expected)  # in the order the history logs them


# ----------------------------------------------------------------------------- the networks at evaluation


@pytest.fixture(scope="module")
def networks():
    """Random tiny ACoL and SPG networks (3 classes, feature scale 2.5), in eval mode."""
    torch.manual_seed(0)
    built = {}
    for method in ("acol", "spg"):
        network = build_model(TINY, 3, WsolConfig(method=method, head_channels=8)).eval()
        network.feature_scale.fill_(2.5)
        built[method] = network
    return built


IMAGES = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
CLASSES = torch.tensor([[2, 0, 1], [1, 1, 0]])
LABELS = torch.tensor([2, 0])


def test_acol_maps_at_evaluation_are_its_parts_run_one_class_at_a_time(networks):
    network = networks["acol"]
    head = network.wsol_head
    with torch.no_grad():
        features = network.features(IMAGES)
        maps = network.class_maps(features, CLASSES)
        scaled = features / 2.5
        for image in range(2):
            for column, c in enumerate(CLASSES[image].tolist()):
                a = normalize_maps(head.branch_a(scaled[image:image + 1])[0, c])
                erased = scaled[image:image + 1] * (a < head.threshold)
                b = normalize_maps(head.branch_b(erased)[0, c])
                torch.testing.assert_close(maps[image, column], torch.maximum(a, b))
        torch.testing.assert_close(network.head(features), head.pool(head.branch_a(scaled)))
        assert torch.equal(network.class_maps(features, CLASSES), maps)  # deterministic
        assert torch.equal(network(IMAGES), network(IMAGES))


def test_spg_maps_at_evaluation_are_spg_a_class_maps_and_nothing_is_kept(networks):
    network = networks["spg"]
    head = network.wsol_head
    with torch.no_grad():
        features = network.features(IMAGES)
        class_maps = head.a_classifier(head.a_trunk(features / 2.5))  # (2, 3, 8, 8)
        torch.testing.assert_close(network.class_maps(features, CLASSES),
                                   torch.stack([class_maps[i, CLASSES[i]] for i in range(2)]))
        torch.testing.assert_close(network.head(features), class_maps.mean(dim=(2, 3)))
        assert torch.equal(network(IMAGES), network(IMAGES))  # deterministic
    assert head._taps == {}  # eval passes tap nothing


@pytest.mark.parametrize("method", ["acol", "spg"])
def test_training_output_is_the_plain_forward_plus_the_methods_term(method):
    torch.manual_seed(0)
    network = build_model(TINY, 3, WsolConfig(method=method, head_channels=8)).train()
    # In train mode BatchNorm uses the batch's statistics, so both passes see the same features.
    logits, extra = network(IMAGES, LABELS)
    torch.testing.assert_close(logits, network(IMAGES))
    assert list(extra) == {"acol": ["acol_b"], "spg": ["spg_b2", "spg_b1", "spg_c"]}[method]
    assert all(term.ndim == 0 and term.item() > 0 for term in extra.values())
    (F.cross_entropy(logits, LABELS) + sum(extra.values())).backward()
    head_parameters = list(network.wsol_head.named_parameters())
    assert all(parameter.grad is not None and parameter.grad.abs().sum() > 0 for _, parameter in head_parameters), \
        [name for name, parameter in head_parameters if parameter.grad is None]  # DDP needs every one used
    assert network.new_parameters() == [parameter for _, parameter in head_parameters]  # trained at head_lr_mult


def test_spg_taps_the_layers_outputs_for_one_training_pass_only():
    torch.manual_seed(0)
    network = build_model(TINY, 3, WsolConfig(method="spg", head_channels=8)).train()
    head = network.wsol_head
    relus = [module for module in network.backbone if isinstance(module, nn.ReLU)]
    outputs = []
    for relu in relus[-2:]:
        relu.register_forward_hook(lambda module, inputs, output: outputs.append(output))
    network.features(IMAGES)
    assert [tap.shape for tap in head._taps.values()] == [(2, 32, 16, 16), (2, 64, 8, 8)]
    assert all(tap is output for tap, output in zip(head._taps.values(), outputs))
    network(IMAGES, LABELS)
    assert head._taps == {}  # consumed by the training pass
    network(IMAGES)
    assert head._taps == {}  # a logits-only pass in train mode leaves nothing either
    with pytest.raises(RuntimeError, match="tapped layers did not run"):
        head.training_output(torch.zeros(2, 64, 8, 8), LABELS)


# ----------------------------------------------------------------------------- SPG's tap scale

# Two positions (1 x 2 map): C-vectors (3, 4) and (6, 8), squared norms 25 and 100, position energy 62.5.
TAPS = torch.tensor([[[[3.0, 6.0]], [[4.0, 8.0]]]])  # (1, 2, 1, 2)
HEAD_INPUT = torch.tensor([[[[1.0, 2.0]]]])  # (1, 1, 1, 2): squared norms 1 and 4, position energy 2.5


def test_position_energy_and_the_scale_that_matches_it_on_hand_made_maps():
    assert float(position_energy(TAPS)) == pytest.approx(62.5)
    assert float(position_energy(HEAD_INPUT)) == pytest.approx(2.5)
    assert matching_scale(TAPS, HEAD_INPUT) == pytest.approx(5.0)  # sqrt(62.5 / 2.5)
    assert float(position_energy(TAPS / 5.0)) == pytest.approx(2.5)
    assert matching_scale(torch.zeros(1, 2, 1, 2), HEAD_INPUT) == 1.0  # nothing to match: no rescaling


def test_spg_tap_scale_divides_each_tap_and_shrinks_the_first_sgd_step_of_its_entry_conv():
    """A hand-built SPG head whose two taps are the batch itself: tap_scale = 5 for both, so each entry conv reads
    taps / 5, and the first SGD step of its weight, relative to the weight, is 5 times smaller than on the raw taps
    (its effect on the conv's output, the 1/||x||^2 rule, 25 times smaller)."""
    body = nn.Sequential(nn.Identity(), nn.Identity())
    head = SpgHead(channels=1, tap_channels=(2, 2), num_classes=2, width=1,
                   thresholds=((0.7, 0.01), (0.5, 0.05), (0.7, 0.1)), pool=gap)
    head.attach((body[0], body[1]))
    head.calibrate(body, TAPS, HEAD_INPUT)
    torch.testing.assert_close(head.tap_scale, torch.tensor([5.0, 5.0]))

    seen = {}
    head.b1_entry.register_forward_pre_hook(lambda module, inputs: seen.setdefault("b1", inputs[0].clone()))
    head.b2_entry.register_forward_pre_hook(lambda module, inputs: seen.setdefault("b2", inputs[0].clone()))
    head.train()
    body(TAPS)  # the training pass taps both layers
    head.training_output(HEAD_INPUT, torch.tensor([1]))
    torch.testing.assert_close(seen["b1"], TAPS / 5.0)
    torch.testing.assert_close(seen["b2"], TAPS / 5.0)

    # The first step of a 3x3 conv (2 -> 1 channels, all weights 1, ||W|| = sqrt(18)) on loss = sum of its outputs.
    # On the 1 x 2 map the centre row sees: W[:, 1, 1] both positions, (3, 4) + (6, 8) = (9, 12); W[:, 1, 2] the
    # right one from the left position, (6, 8); W[:, 1, 0] the left one, (3, 4): ||grad||^2 = 225 + 100 + 25 = 350.
    # SGD at lr 0.01 steps lr * ||grad|| / s, relative to ||W||: 0.01 * sqrt(350 / 18) / s; the loss moves by
    # lr * ||grad||^2 / s^2 = 3.5 / s^2.
    for inputs, scale in ((TAPS, 1.0), (seen["b1"], 5.0)):  # before the fix (raw taps), after it
        conv = nn.Conv2d(2, 1, 3, padding=1, bias=False)
        nn.init.ones_(conv.weight)
        before = conv.weight.detach().clone()
        loss = conv(inputs).sum()
        loss.backward()
        torch.optim.SGD(conv.parameters(), lr=0.01).step()
        step = (conv.weight.detach() - before).norm() / before.norm()
        assert float(step) == pytest.approx(0.01 * math.sqrt(350 / 18) / scale, rel=1e-5)
        assert float(conv(inputs).sum().detach() - loss.detach()) == pytest.approx(-3.5 / scale**2, rel=1e-5)


def test_calibration_gives_the_taps_the_energy_per_position_of_the_head_input():
    torch.manual_seed(0)
    network = build_model(TINY, 3, WsolConfig(method="spg", head_channels=8))
    head = network.wsol_head
    images = torch.randn(4, 3, 64, 64)
    scale = calibrate_feature_scale(network, images, 100.0)
    network.eval()
    with torch.no_grad():
        features = network.features(images)
        assert float(global_pool(features / scale, "gap").pow(2).sum(dim=1).mean()) == pytest.approx(100.0, rel=1e-4)
        target = float(position_energy(features / scale))
        for tap, tap_scale in zip(layer_outputs(network.backbone, head._layers, images), head.tap_scale):
            assert abs(float(tap_scale) - 1.0) > 0.5  # a scale that changes something (about 0.05 here)
            assert float(position_energy(tap / tap_scale)) == pytest.approx(target, rel=1e-4)
    assert calibrate_feature_scale(build_model(TINY, 3, WsolConfig(method="spg")), images, 0.0) == 1.0


def test_a_checkpoint_without_tap_scale_loads_with_scale_one_what_it_trained_with():
    torch.manual_seed(0)
    network = build_model(TINY, 3, WsolConfig(method="spg", head_channels=8))
    network.wsol_head.tap_scale.fill_(3.0)
    state = {key: value for key, value in network.state_dict().items() if key != "wsol_head.tap_scale"}
    network.load_state_dict(state)  # strict: the missing buffer is filled, not an error
    torch.testing.assert_close(network.wsol_head.tap_scale, torch.ones(2))


# ----------------------------------------------------------------------------- every backbone

# (backbone, stride): SPG's tap channels and the taps' map sides at 64 px (docs/wsol_methods.md); final side 64 / stride.
BACKBONE_TAPS = {
    ("efficientnet_lite0", 16): ((192, 192), (4, 4)), ("efficientnet_lite0", 32): ((192, 192), (2, 2)),
    ("efficientnet_lite1", 16): ((192, 192), (4, 4)), ("efficientnet_lite1", 32): ((192, 192), (2, 2)),
    ("efficientnet_lite2", 16): ((208, 208), (4, 4)), ("efficientnet_lite2", 32): ((208, 208), (2, 2)),
    ("resnet18", 16): ((256, 256), (4, 4)), ("resnet18", 32): ((256, 256), (4, 4)),  # layer3: stride 16 at both
    ("resnet50", 16): ((1024, 1024), (4, 4)), ("resnet50", 32): ((1024, 1024), (4, 4)),
    ("vgg16_gap", 16): ((512, 512), (4, 4)), ("googlenet_gap", 16): ((480, 528), (4, 4)),
    ("tiny_cnn", 8): ((32, 64), (16, 8)), ("tiny_cnn", 16): ((64, 64), (8, 4)),
}


def test_the_tap_table_covers_every_backbone_and_stride():
    assert set(BACKBONE_TAPS) == {(name, stride) for name, info in BACKBONES.items()
                                  for stride in info.feature_strides}


@pytest.mark.parametrize("backbone, stride", sorted(BACKBONE_TAPS))
def test_every_backbone_gives_logits_and_feature_resolution_maps_with_acol_and_spg(backbone, stride):
    tap_channels, tap_sides = BACKBONE_TAPS[(backbone, stride)]
    side = 64 // stride
    images = torch.randn(2, 3, 64, 64)
    for method in ("acol", "spg"):
        network = build_model(ModelConfig(backbone=backbone, pretrained=False, feature_stride=stride, input_size=64),
                              4, WsolConfig(method=method, head_channels=8))
        if method == "spg":
            head = network.wsol_head
            assert (head.b1_entry[0].in_channels, head.b2_entry[0].in_channels) == tap_channels
            network.train()
            network.features(images)
            assert [tuple(tap.shape[-2:]) for tap in head._taps.values()] == [(side, side) for side in tap_sides]
            logits, extra = network(images, torch.tensor([0, 3]))
            assert logits.shape == (2, 4) and all(torch.isfinite(term) for term in extra.values())
        network.eval()
        with torch.no_grad():
            features = network.features(images)
            assert network.head(features).shape == (2, 4)
            assert network.class_maps(features, torch.tensor([[0, 1, 2], [3, 3, 0]])).shape == (2, 3, side, side)


# ----------------------------------------------------------------------------- tiny runs end to end


@pytest.mark.parametrize("method", ["acol", "spg"])
def test_a_tiny_run_finishes_scores_with_bench_methods_and_resumes_to_the_same_results(method, tiny_data_dir,
                                                                                       tmp_path, monkeypatch):
    overrides = [f"data_root={tiny_data_dir}", f"results_dir={tmp_path / 'results'}", f"wsol.method={method}",
                 "wsol.head_channels=16", "threads=1"]
    assert main(["run", str(TINY_CONFIG), *overrides, "name=whole"]) == 0
    whole = tmp_path / "results" / "whole"
    metrics = json.loads((whole / "metrics.json").read_text())
    assert 0 <= metrics["top1_cls_error"] <= 100 and metrics["num_images"] == 24

    # bench methods: the cam row is the run's own maps (the head's class_maps); Grad-CAM goes through the head.
    assert main(["methods", str(whole), "--methods", "cam,gradcam", "--timing-batches", "1"]) == 0
    with (whole / "methods" / "methods.csv").open() as handle:
        rows = {row["method"]: row for row in csv.DictReader(handle)}
    assert list(rows) == ["cam", "gradcam"]
    for key in ("top1_cls_error", "gt_known_loc_acc", "top1_loc_error"):
        assert float(rows["cam"][key]) == pytest.approx(metrics[key], abs=1e-4), key

    # Interrupted after epoch 1 (Ctrl-C), then --resume: the same results as the uninterrupted run.
    real_epoch = loop.train_one_epoch
    calls = []

    def interrupted_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(loop, "train_one_epoch", interrupted_in_epoch_2)
    assert main(["run", str(TINY_CONFIG), *overrides, "name=resumed"]) == 130
    resumed = tmp_path / "results" / "resumed"
    assert run_status(resumed) == "interrupted"
    monkeypatch.setattr(loop, "train_one_epoch", real_epoch)
    assert main(["run", str(TINY_CONFIG), *overrides, "name=resumed", "--resume"]) == 0
    for name in ("metrics.json", "predictions.csv"):
        assert (resumed / name).read_text() == (whole / name).read_text(), name
