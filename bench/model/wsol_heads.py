"""Heads of the training-time WSOL methods that replace pooling + linear classifier: ACoL and SPG.

A :class:`ClassMapHead` turns the backbone's feature maps ``(B, C, h, w)``
(divided by the network's ``feature_scale``) into class maps and logits. The
network (:class:`bench.model.camnet.CamNet`) asks it for:

* :meth:`ClassMapHead.logits` ``(B, num_classes)``: classification at evaluation;
* :meth:`ClassMapHead.class_maps` ``(B, M, h, w)``: the map its method localizes with, for the classes asked;
* :meth:`ClassMapHead.training_output`: the logits the cross-entropy is taken on, and the method's
  other loss terms by name (scalar tensors; :data:`LOSS_TERMS` says what each is), given the training labels.

Both heads end in a 1x1 convolution to ``num_classes`` class maps, and their
logits are the run's pooling (``model.pooling``) of those maps, where
wsolevaluation always averages (GAP): with ``gap`` the logits are
wsolevaluation's; another pooling changes what the class maps are trained to
do exactly as it does for the CAM network. Their convolutions are new layers
(trained at ``train.head_lr_mult``), initialized as wsolevaluation initializes
its SPG models and its VGG / Inception ACoL: Xavier-uniform weights, zero biases
(its ResNet-50 ACoL uses He's fan-out normal instead; one rule for all here).
A head whose convolutions read more than the head input (SPG's taps) scales
those inputs in :meth:`ClassMapHead.calibrate`, once before training.
The methods, their parameters and where they attach are in docs/wsol_methods.md.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

Pool = Callable[[torch.Tensor], torch.Tensor]  # (B, K, h, w) class maps -> (B, K) logits: the run's pooling
LossTerms = dict[str, torch.Tensor]  # a head's loss terms besides the cross-entropy of its logits: name -> scalar

# The heads' loss terms by name, as the training history logs them (one column each), and what each is.
LOSS_TERMS = {
    "acol_b": "ACoL: cross-entropy of branch B (erased features)",
    "spg_b2": "SPG: B2 against SPG-A's mask",
    "spg_b1": "SPG: B1 against B2's mask",
    "spg_c": "SPG: C against B1 and B2 fused",
}


class ClassMapHead(nn.Module):
    """The contract of a method's own head (see the module docstring); the subclasses implement it."""

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """``features (B, C, h, w)`` -> class logits ``(B, num_classes)`` (evaluation)."""
        raise NotImplementedError

    def class_maps(self, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """``features (B, C, h, w)``, ``classes (B, M)`` int64 -> the method's maps ``(B, M, h, w)`` of those classes."""
        raise NotImplementedError

    def training_output(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, LossTerms]:
        """``(logits (B, num_classes), other loss terms by name)`` on a training batch with ``labels (B,)``.

        The training loss is the cross-entropy of the logits plus the sum of the terms (names in :data:`LOSS_TERMS`).
        """
        raise NotImplementedError

    def calibrate(self, body: nn.Module, images: torch.Tensor, head_input: torch.Tensor) -> None:
        """Fix the scales of the head's inputs other than ``head_input`` (none by default), once before training.

        ``body``: the backbone, in eval mode; ``images (B, 3, H, W)``: the calibration batch;
        ``head_input (B, C, h, w)``: the features of those images divided by the network's ``feature_scale``
        (:func:`bench.model.camnet.calibrate_feature_scale`, which calls this).
        """

    def calibration_note(self) -> str:
        """What :meth:`calibrate` set, for the run's log ('' when nothing)."""
        return ""


# ----------------------------------------------------------------------------- shared pieces


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalize each map of ``maps (..., h, w)`` to [0, 1] on its own; a constant map becomes zeros.

    wsolevaluation's ``normalize_tensor``, except that it divides a constant map by zero (NaN).
    """
    flat = maps.flatten(-2)  # (..., h*w)
    low = flat.amin(dim=-1, keepdim=True)
    span = flat.amax(dim=-1, keepdim=True) - low
    return ((flat - low) / torch.where(span > 0, span, torch.ones_like(span))).view_as(maps)


def maps_of_classes(maps: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """``maps (B, K, h, w)``, ``classes (B, M)`` int64 -> the maps of those classes ``(B, M, h, w)``."""
    B, M = classes.shape
    h, w = maps.shape[-2:]
    return maps.gather(1, classes.view(B, M, 1, 1).expand(B, M, h, w))


def position_energy(maps: torch.Tensor) -> torch.Tensor:
    """Mean over images and positions of the squared norm of ``maps (B, C, h, w)``'s C-vectors: a scalar.

    A k x k convolution's weight sees k*k such vectors at once, so its first SGD
    step on an input scales with this number (the 1/||x||^2 step rule of
    :func:`bench.model.camnet.calibrate_feature_scale`, applied to the patch).
    """
    return maps.float().pow(2).sum(dim=1).mean()


def matching_scale(maps: torch.Tensor, reference: torch.Tensor) -> float:
    """The divisor that gives ``maps (B, C, h, w)`` the :func:`position_energy` of ``reference (B, C', h', w')``.

    ``sqrt(position_energy(maps) / position_energy(reference))``; 1 when either energy is 0.
    """
    energy, target = float(position_energy(maps)), float(position_energy(reference))
    return math.sqrt(energy / target) if energy > 0 and target > 0 else 1.0


def _conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Conv2d:
    """A new convolution that keeps h x w, Xavier-uniform weights and zero bias (module docstring)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    nn.init.xavier_uniform_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def _conv_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [_conv(in_channels, out_channels, 3), nn.ReLU(inplace=True)]


# ----------------------------------------------------------------------------- ACoL


class AcolBranch(nn.Module):
    """One ACoL classifier: conv3x3 (C -> W), ReLU, conv3x3 (W -> W), ReLU, then conv1x1 (W -> K) to class maps."""

    def __init__(self, channels: int, width: int, num_classes: int):
        super().__init__()
        self.trunk = nn.Sequential(*_conv_relu(channels, width), *_conv_relu(width, width))
        self.classifier = _conv(width, num_classes, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``features (B, C, h, w)`` -> class maps ``(B, K, h, w)``."""
        return self.classifier(self.trunk(features))

    def maps_of(self, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """The map of class ``classes[n]`` for ``features[n]``: ``(N, C, h, w)``, ``(N,)`` -> ``(N, h, w)``.

        Only the asked class's row of the 1x1 convolution is applied (K may be 1000).
        """
        hidden = self.trunk(features)  # (N, W, h, w)
        weight = self.classifier.weight[classes, :, 0, 0]  # (N, W)
        return torch.einsum("nwhx,nw->nhx", hidden, weight.to(hidden.dtype)) + self.classifier.bias[classes, None, None]


def erase_features(features: torch.Tensor, attention: torch.Tensor, threshold: float) -> torch.Tensor:
    """ACoL's erasure: ``features (B, C, h, w)`` zeroed where ``attention (B, M, h, w) >= threshold``.

    Returns ``(B * M, C, h, w)``: for each image, one copy per attention map (image-major), erased by that map.
    """
    keep = (attention < threshold).to(features.dtype)  # (B, M, h, w)
    return (features.unsqueeze(1) * keep.unsqueeze(2)).flatten(0, 1)  # (B, M, C, h, w) -> (B*M, C, h, w)


class AcolHead(ClassMapHead):
    """ACoL, adversarial complementary learning (Zhang et al., CVPR 2018), as wsolevaluation implements it.

    Two classifiers :class:`AcolBranch` A and B on the backbone's features. In
    training, A's map of the label class, min-max normalized per image
    (:func:`normalize_maps`, detached), erases the features where it is at or
    above ``threshold`` (``wsol.acol_threshold``); B classifies the erased
    features, so it must find the object's other parts. The loss is
    ``CE(logits A) + CE(logits B)`` (:meth:`training_output`). At evaluation A
    classifies (B's logits are not used, as in wsolevaluation), and the map of a
    class c is ``max(a, b)``: ``a`` A's normalized map of c, ``b`` B's normalized
    map of c on the features erased by ``a`` (wsolevaluation's ``return_cam``).
    Each class asked is erased on its own map, so the top-5 and the GT class
    each get the map ACoL would make for it.

    Departures from wsolevaluation: the logits are the run's pooling of the
    class maps (GAP there); its VGG16 ACoL also smooths the features with a
    3x3 average pool (stride 1) before the branches, which is not done here
    (it is specific to that backbone, and our VGG16 body already ends in
    ``conv5_3``'s ReLU at stride 16 without pool5).
    """

    def __init__(self, channels: int, num_classes: int, width: int, threshold: float, pool: Pool):
        super().__init__()
        self.branch_a = AcolBranch(channels, width, num_classes)
        self.branch_b = AcolBranch(channels, width, num_classes)
        self.threshold = threshold
        self.pool = pool

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.pool(self.branch_a(features))

    def training_output(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, LossTerms]:
        maps_a = self.branch_a(features)  # (B, K, h, w)
        attention = normalize_maps(maps_of_classes(maps_a.detach(), labels[:, None]))  # (B, 1, h, w)
        maps_b = self.branch_b(erase_features(features, attention, self.threshold))  # (B, K, h, w)
        return self.pool(maps_a), {"acol_b": F.cross_entropy(self.pool(maps_b).float(), labels)}

    def class_maps(self, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        B, M = classes.shape
        h, w = features.shape[-2:]
        a = normalize_maps(maps_of_classes(self.branch_a(features), classes))  # (B, M, h, w)
        erased = erase_features(features, a, self.threshold)  # (B*M, C, h, w): all M erasures in one batch
        b = normalize_maps(self.branch_b.maps_of(erased, classes.flatten()).view(B, M, h, w))
        return torch.maximum(a, b)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}"


# ----------------------------------------------------------------------------- SPG

FOREGROUND, BACKGROUND, IGNORED = 1.0, 0.0, -1.0  # the values of a pseudo-mask (spg_pseudo_mask)
# wsolevaluation lowers the foreground threshold of an image whose mask has fewer than 30 foreground pixels of
# its 224 x 224 loss maps; the same share of the cells here, whatever the map's size (at least one cell).
MIN_FOREGROUND_SHARE = 30 / 224**2
FALLBACK_FOREGROUND = 0.7  # ... to this share of the image's maximum


def spg_pseudo_mask(attention: torch.Tensor, high: float, low: float) -> torch.Tensor:
    """SPG's pseudo-mask of ``attention (B, h, w)`` in [0, 1]: ``(B, h, w)`` of FOREGROUND / BACKGROUND / IGNORED.

    Foreground where ``attention > high``; background where ``attention < low``
    (background wins where both hold); the rest is ignored by the loss. An
    image with fewer than ``ceil(MIN_FOREGROUND_SHARE * h * w)`` foreground
    cells takes ``attention > FALLBACK_FOREGROUND * its maximum`` as
    foreground instead. The strict inequalities are wsolevaluation's
    (``mask_fg`` / ``mask_bg``) and the paper's ("larger than", "lower than").
    """
    B, h, w = attention.shape
    foreground = attention > high
    too_few = foreground.flatten(1).sum(dim=1) < math.ceil(MIN_FOREGROUND_SHARE * h * w)  # (B,)
    peak = attention.flatten(1).amax(dim=1).view(B, 1, 1)
    foreground = torch.where(too_few.view(B, 1, 1), attention > FALLBACK_FOREGROUND * peak, foreground)
    mask = torch.full_like(attention, IGNORED)
    mask[foreground] = FOREGROUND
    mask[attention < low] = BACKGROUND
    return mask


def masked_binary_cross_entropy(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean BCE-with-logits of ``logits`` against ``mask`` (same shape) over the cells not IGNORED (0 if none)."""
    known = mask != IGNORED
    if not bool(known.any()):
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[known], mask[known])


def _resized(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``maps (B, h, w)`` bilinearly resized to ``size`` (as wsolevaluation's ``nn.Upsample``); unchanged if there."""
    if tuple(maps.shape[-2:]) == size:
        return maps
    return F.interpolate(maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)


def spg_loss(class_maps: torch.Tensor, labels: torch.Tensor, logits_b1: torch.Tensor, logits_b2: torch.Tensor,
             logits_c: torch.Tensor, thresholds: tuple[tuple[float, float], ...]) -> LossTerms:
    """SPG's guidance terms (wsolevaluation's ``get_loss`` less its cross-entropy): ``spg_b2``, ``spg_b1``,
    ``spg_c``, scalars whose sum is wsolevaluation's.

    ``class_maps (B, K, h, w)`` (SPG-A), ``labels (B,)``, the 1-channel maps
    ``logits_b1``, ``logits_b2`` (SPG-B on the two taps) and ``logits_c``
    (SPG-C), each ``(B, h', w')``; ``thresholds``: the ``(high, low)`` pairs
    ``wsol.spg_threshold_1/2/3``. All maps are first resized bilinearly to the
    largest of their resolutions (wsolevaluation: to 224 x 224). Then:

    * B2 learns the mask of SPG-A's normalized map of the label class (threshold 1);
    * B1 learns the mask of ``sigmoid(B2)`` (threshold 2);
    * C learns the mask of the fused map ``(sigmoid(B1) + sigmoid(B2)) / 2`` (threshold 3).

    Each term is :func:`masked_binary_cross_entropy` against :func:`spg_pseudo_mask`;
    no gradient flows through a mask.
    """
    size = max((tuple(m.shape[-2:]) for m in (class_maps, logits_b1, logits_b2, logits_c)),
               key=lambda hw: hw[0] * hw[1])
    label_maps = maps_of_classes(class_maps.detach().float(), labels[:, None])[:, 0]  # (B, h, w)
    attention = normalize_maps(_resized(label_maps, size))  # (B, *size), resized then normalized as wsolevaluation
    b1, b2, c = (_resized(m.float(), size) for m in (logits_b1, logits_b2, logits_c))
    fused = (torch.sigmoid(b1.detach()) + torch.sigmoid(b2.detach())) / 2
    (high_1, low_1), (high_2, low_2), (high_3, low_3) = thresholds
    return {"spg_b2": masked_binary_cross_entropy(b2, spg_pseudo_mask(attention, high_1, low_1)),
            "spg_b1": masked_binary_cross_entropy(b1, spg_pseudo_mask(torch.sigmoid(b2.detach()), high_2, low_2)),
            "spg_c": masked_binary_cross_entropy(c, spg_pseudo_mask(fused, high_3, low_3))}


class SpgHead(ClassMapHead):
    """SPG, self-produced guidance (Zhang et al., ECCV 2018), in wsolevaluation's structure.

    * **SPG-A**, the classifier: conv3x3 (C -> W) + ReLU on the backbone's final
      features, then conv1x1 (W -> K) to the class maps; logits = the run's
      pooling of them. Its class map is the map at evaluation (wsolevaluation's
      ``return_cam``), so evaluation is the plain forward of SPG-A.
    * **SPG-B**: on the two tapped intermediate maps (``attach``), one conv3x3
      (tap channels -> W) + ReLU each, then a part shared by both: conv3x3
      (W -> W) + ReLU, conv1x1 (W -> 1): the maps B1 and B2.
    * **SPG-C**: conv3x3 (W -> W) + ReLU, conv1x1 (W -> 1) on SPG-A's hidden features.

    Training adds :func:`spg_loss` (B2 from SPG-A's attention, B1 from B2, C
    from B1 and B2 fused) to the cross-entropy of the logits.

    Departures from wsolevaluation, whose SPG-A keeps the backbone's last layers
    as part of SPG-A (ResNet-50: layer4; VGG16: conv4/conv5 plus two new conv3x3;
    Inception-v3: two new conv3x3) and whose SPG-B / SPG-C are 512 or 1024 wide
    per backbone: here SPG-A adds one W-wide conv3x3 (so that SPG-C, on its
    output, trains a layer the class maps are made from, as VGG16's SPG-C does)
    and every branch is ``W = wsol.head_channels`` wide. wsolevaluation drops
    out (p = 0.5) between Inception-v3's SPG-A layers; there is no dropout here.
    The loss maps are at the largest resolution of the maps they compare, not
    at 224 x 224 (see :func:`spg_loss`).

    **Tap scale.** SPG-A reads the features divided by the network's
    ``feature_scale``; each tap is divided by its own constant ``tap_scale[i]``,
    fixed by :meth:`calibrate` so that the tap has the head input's
    :func:`position_energy`. Then the first conv of each SPG-B entry steps as
    SPG-A's first conv does at the same learning rate (docs/wsol_methods.md has
    the arithmetic). The raw taps of EfficientNet-Lite0 have 9 to 18 times the
    head input's energy per position.
    """

    def __init__(self, channels: int, tap_channels: tuple[int, int], num_classes: int, width: int,
                 thresholds: tuple[tuple[float, float], ...], pool: Pool):
        super().__init__()
        self.a_trunk = nn.Sequential(*_conv_relu(channels, width))
        self.a_classifier = _conv(width, num_classes, 1)
        self.b1_entry = nn.Sequential(*_conv_relu(tap_channels[0], width))
        self.b2_entry = nn.Sequential(*_conv_relu(tap_channels[1], width))
        self.b_shared = nn.Sequential(*_conv_relu(width, width), _conv(width, 1, 1))
        self.c_branch = nn.Sequential(*_conv_relu(width, width), _conv(width, 1, 1))
        self.thresholds = tuple(tuple(pair) for pair in thresholds)
        self.pool = pool
        # Divisors of the two taps (calibrate); 1 until calibrated. Part of the state dict, as feature_scale.
        self.register_buffer("tap_scale", torch.ones(2))
        self._layers: tuple[nn.Module, ...] = ()  # the tapped backbone layers (a tuple: not the head's modules)
        # The tapped layers' outputs of the current training forward pass, consumed (emptied) by the head's
        # next call; nothing is kept in evaluation, so no graph outlives its pass.
        self._taps: dict[int, torch.Tensor] = {}
        self._hooks: list = []

    def attach(self, layers: tuple[nn.Module, nn.Module]) -> None:
        """Tap the outputs of two backbone layers (forward hooks; the layers stay the backbone's, not the head's)."""
        for hook in self._hooks:
            hook.remove()
        self._layers = tuple(layers)
        self._hooks = [layer.register_forward_hook(self._tap(index)) for index, layer in enumerate(layers)]

    @torch.no_grad()
    def calibrate(self, body: nn.Module, images: torch.Tensor, head_input: torch.Tensor) -> None:
        """Set ``tap_scale[i]`` so that tap i of ``images`` has ``head_input``'s :func:`position_energy`."""
        for index, tap in enumerate(layer_outputs(body, self._layers, images)):
            self.tap_scale[index] = matching_scale(tap, head_input)

    def calibration_note(self) -> str:
        first, second = (float(value) for value in self.tap_scale)
        return f"SPG's taps divided by {first:.4g} and {second:.4g} (the head input's energy per position)"

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A checkpoint written before the taps were scaled has no tap_scale: it trained on raw taps, i.e. scale 1.
        state_dict.setdefault(prefix + "tap_scale", torch.ones(2))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _tap(self, index: int):
        def keep(module: nn.Module, inputs, output: torch.Tensor) -> None:
            if self.training:
                self._taps[index] = output
        return keep

    def _class_maps_and_hidden(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.a_trunk(features)  # (B, W, h, w)
        return self.a_classifier(hidden), hidden  # (B, K, h, w), (B, W, h, w)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        self._taps.clear()  # a training-mode pass that only asks for logits leaves nothing behind
        return self.pool(self._class_maps_and_hidden(features)[0])

    def class_maps(self, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return maps_of_classes(self._class_maps_and_hidden(features)[0], classes)

    def training_output(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, LossTerms]:
        taps = [self._taps.pop(index, None) for index in range(2)]
        self._taps.clear()
        if any(tap is None for tap in taps):
            raise RuntimeError("SPG: the backbone's tapped layers did not run in this forward pass; the head needs "
                               "the network in train mode, called on images (CamNet.training_output)")
        maps, hidden = self._class_maps_and_hidden(features)
        logits_b1 = self.b_shared(self.b1_entry(taps[0] / self.tap_scale[0]))[:, 0]  # (B, h1, w1)
        logits_b2 = self.b_shared(self.b2_entry(taps[1] / self.tap_scale[1]))[:, 0]  # (B, h2, w2)
        logits_c = self.c_branch(hidden)[:, 0]  # (B, h, w)
        return self.pool(maps), spg_loss(maps, labels, logits_b1, logits_b2, logits_c, self.thresholds)

    def extra_repr(self) -> str:
        return f"thresholds={self.thresholds}, tap_scale={[round(float(v), 4) for v in self.tap_scale]}"


# Where SPG-B taps each backbone (docs/wsol_methods.md): backbone name -> the two layers whose outputs it reads.


def _efficientnet_taps(body: nn.Module) -> tuple[nn.Module, nn.Module]:
    stage = body.model.blocks[5]  # the stage that enters the final stride (bench.model.backbones.FeatureExtractor)
    return stage[0], stage[-1]


def _resnet_taps(body: nn.Module) -> tuple[nn.Module, nn.Module]:
    layer3 = body[6]  # Sequential(conv1, bn1, relu, maxpool, layer1, ..., layer4)
    return layer3[0], layer3[-1]


def _vgg16_taps(body: nn.Module) -> tuple[nn.Module, nn.Module]:
    return body[23], body[29]  # pool4, conv5_3's ReLU (the body's output; torchvision's indices)


def _googlenet_taps(body: nn.Module) -> tuple[nn.Module, nn.Module]:
    return body[7], body[11]  # maxpool3 (the stride-16 stage's input), inception4d (the last block's input)


def _tiny_taps(body: nn.Module) -> tuple[nn.Module, nn.Module]:
    first, second = [module for module in body if isinstance(module, nn.ReLU)][-2:]  # the last two blocks' outputs
    return first, second


SPG_TAPS = {
    "efficientnet_lite0": _efficientnet_taps,
    "efficientnet_lite1": _efficientnet_taps,
    "efficientnet_lite2": _efficientnet_taps,
    "resnet18": _resnet_taps,
    "resnet50": _resnet_taps,
    "vgg16_gap": _vgg16_taps,
    "googlenet_gap": _googlenet_taps,
    "tiny_cnn": _tiny_taps,
}

PROBE_SIZE = 64  # side of the blank image whose forward pass reads the tapped layers' channel counts


@torch.no_grad()
def layer_outputs(body: nn.Module, layers: tuple[nn.Module, ...], images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The output of each of ``layers`` (modules inside ``body``) in one forward pass of ``body`` (eval mode)."""
    seen: dict[int, torch.Tensor] = {}

    def reader(index: int):
        def read(module: nn.Module, inputs, output: torch.Tensor) -> None:  # returns None: the output is kept
            seen[index] = output.detach().clone()  # a copy: a later in-place layer may overwrite the output
        return read

    hooks = [layer.register_forward_hook(reader(index)) for index, layer in enumerate(layers)]
    was_training = body.training
    try:
        body.eval()
        body(images)
    finally:
        body.train(was_training)
        for hook in hooks:
            hook.remove()
    return tuple(seen[index] for index in range(len(layers)))


def output_channels(body: nn.Module, layers: tuple[nn.Module, ...]) -> tuple[int, ...]:
    """C of each layer's output, read from one forward pass of ``body`` (eval mode) on a blank image."""
    return tuple(output.shape[1] for output in layer_outputs(body, layers, torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE)))


def build_head(method: str, body: nn.Module, channels: int, num_classes: int, wsol, pool: Pool,
               backbone: str) -> ClassMapHead | None:
    """The head of ``method`` (None for the methods that keep pooling + linear classifier).

    ``body``: the backbone (SPG hooks two of its layers, :data:`SPG_TAPS`); ``channels``: C of its feature maps;
    ``wsol``: the run's :class:`bench.config.WsolConfig`; ``pool(maps (B, K, h, w)) -> (B, K)``: the run's pooling;
    ``backbone``: the backbone's name (``model.backbone``).
    """
    if method == "acol":
        return AcolHead(channels, num_classes, wsol.head_channels, wsol.acol_threshold, pool)
    if method == "spg":
        layers = SPG_TAPS[backbone](body)
        head = SpgHead(channels, output_channels(body, layers), num_classes, wsol.head_channels,
                       (wsol.spg_threshold_1, wsol.spg_threshold_2, wsol.spg_threshold_3), pool)
        head.attach(layers)
        return head
    return None
