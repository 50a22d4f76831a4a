"""CAM-family map methods on a trained :class:`bench.model.camnet.CamNet`, as map makers for :mod:`bench.scoring.prediction`.

``cam`` is our own CAM (:mod:`bench.model.cam`). The others come from
pytorch-grad-cam (PyPI ``grad-cam``, module ``pytorch_grad_cam``); the
weighting of each is the library's, never rewritten here:

============  =====================  ==============================================================
name          library class          map of class c (A: the feature map, g = dS_c / dA)
============  =====================  ==============================================================
gradcam       GradCAM                sum_k mean_xy(g_k) A_k
gradcampp     GradCAMPlusPlus        sum_k (sum_xy alpha_k,xy relu(g_k,xy)) A_k, alpha from g^2, g^3
xgradcam      XGradCAM               sum_k (sum_xy g_k A_k / sum_xy A_k) A_k
layercam      LayerCAM               sum_k relu(g_k) A_k, per position
scorecam      ScoreCAM               sum_k softmax_k(S_c(image x upsampled, min-max scaled A_k)) A_k
eigencam      EigenCAM               A projected on its first principal component (class-agnostic)
center        (ours)                 a fixed isotropic Gaussian over the frame (bench.scoring.center_baseline), the floor
============  =====================  ==============================================================

The hooked layer is the CamNet's last feature layer, the input of the global
pooling (an ``nn.Identity`` the library hooks), so every map is ``(h, w)``,
the CAM's resolution, and is scored exactly like a CAM.

**Raw maps.** The library's ``__call__`` ReLUs each map, min-max scales it
and resizes it to the input size. We call its pieces instead
(:func:`library_maps`): its hooks record the feature map and, for the summed
target class scores, its gradient (as ``BaseCAM.forward`` does), and the
method's own ``get_cam_image`` weighs them. The map is taken before the ReLU
and the scaling, so the run's ``eval.normalization`` and box rule treat every
method alike, and the Grad-CAM = CAM invariant holds exactly (with GAP and a
linear head the gradient is ``W[c] / (h w)`` at every position, so Grad-CAM is
the CAM divided by ``h w``).

**Cost.** The gradient methods and EigenCAM run on the features already
computed for the logits: the library's model is the head alone
(:class:`_FeaturesToLogits`), so their backward pass covers the pooling and
the linear layer, not the backbone. Score-CAM masks the *input image* with
each of the C channels and runs the whole network on each masked copy: C
forward passes per image and class (``score_batch_size`` at a time). An image
whose GT class is its top-1 class gets one map, used for both.

The library computes in NumPy, so its methods run in float32, outside
autocast; the forward pass that gives the features and the top-k classes runs
at the caller's precision, as for the CAM.
"""

from __future__ import annotations

import contextlib
import io
import time
import typing

import numpy as np
import torch
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM, XGradCAM
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from bench.config import SLOW_CAM_METHODS, CamMethod
from bench.errors import InputError
from bench.model.camnet import CamNet
from bench.scoring.center_baseline import center_maps
from bench.scoring.evaluation import SCORED_MAPS
from bench.scoring.fixed_tau_metrics import TOP_K
from bench.scoring.prediction import MapMethod, localize_batch

METHODS: tuple[str, ...] = typing.get_args(CamMethod)  # every method name, ours first
OUR_CAM = "cam"
LIBRARY_CLASSES: dict[str, type[BaseCAM]] = {
    "gradcam": GradCAM, "gradcampp": GradCAMPlusPlus, "xgradcam": XGradCAM, "layercam": LayerCAM,
    "scorecam": ScoreCAM, "eigencam": EigenCAM,
}
ON_IMAGES = ("scorecam",)  # methods that need the input images, not only the feature map
# The center baseline (bench.scoring.center_baseline): one fixed map, the floor a method must beat.
CENTER = "center"
SLOW_METHODS: tuple[str, ...] = SLOW_CAM_METHODS  # not run by ``bench methods`` unless named (bench.config)
DEFAULT_METHODS: tuple[str, ...] = tuple(name for name in METHODS if name not in SLOW_METHODS)


class MethodError(InputError, ValueError):
    """An unknown method name; the message lists the known ones."""


def check_methods(names: typing.Iterable[str]) -> tuple[str, ...]:
    """``names`` as a tuple, each checked against :data:`METHODS` (duplicates dropped, order kept)."""
    names = tuple(dict.fromkeys(names))
    unknown = [name for name in names if name not in METHODS]
    if unknown or not names:
        raise MethodError(f"unknown method(s) {unknown or names!r}; allowed: {', '.join(METHODS)}")
    return names


class _FeaturesToLogits(nn.Module):
    """``features (B, C, h, w) -> logits``: the CamNet's head, its input passing through ``feature_map``."""

    def __init__(self, network: CamNet) -> None:
        super().__init__()
        self.network = network
        self.feature_map = nn.Identity()  # the layer the library hooks

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.network.head(self.feature_map(features))


class _ImagesToLogits(_FeaturesToLogits):
    """``images (B, 3, S, S) -> logits``, the feature map passing through ``feature_map`` (for Score-CAM)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network.head(self.feature_map(self.network.features(images)))


def library_method(name: str, network: CamNet, score_batch_size: int = 64) -> BaseCAM:
    """The library's method ``name`` on ``network``, hooked at its last feature layer.

    Its input is the feature map, or the images for :data:`ON_IMAGES`
    (Score-CAM then scores ``score_batch_size`` masked images per forward pass).
    """
    wrapper = (_ImagesToLogits if name in ON_IMAGES else _FeaturesToLogits)(network)
    method = LIBRARY_CLASSES[name](model=wrapper, target_layers=[wrapper.feature_map])
    method.batch_size = score_batch_size  # read by ScoreCAM.get_cam_weights only
    return method


def library_maps(method: BaseCAM, inputs: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """The library's map of class ``classes[i]`` for ``inputs[i]``, before its ReLU and scaling: ``(B, h, w)`` float32.

    ``BaseCAM.forward`` up to ``get_cam_image``: one forward pass through the
    library's hooks, the backward pass of the summed class scores (gradient
    methods), then the method's weighting. ``inputs`` are the features, or
    the images for :data:`ON_IMAGES`.
    """
    targets = [ClassifierOutputTarget(int(label)) for label in classes]
    hooks = method.activations_and_grads
    gradients_needed = method.uses_gradients
    with torch.set_grad_enabled(gradients_needed), torch.autocast(inputs.device.type, enabled=False), \
            contextlib.redirect_stderr(io.StringIO()):  # Score-CAM's own per-image progress bars
        # The hook records a gradient only where one flows: from these features on, never into the backbone.
        inputs = inputs.detach().float().requires_grad_(gradients_needed)
        outputs = hooks(inputs)  # (B, num_classes)
        if gradients_needed:
            method.model.zero_grad()
            sum(target(output) for target, output in zip(targets, outputs)).backward()
        activations = hooks.activations[0].float().numpy()  # (B, C, h, w)
        gradients = hooks.gradients[0].float().numpy() if hooks.gradients else None
        maps = method.get_cam_image(inputs, method.target_layers[0], targets, activations, gradients,
                                    eigen_smooth=False)  # (B, h, w)
    hooks.clear()
    method.model.zero_grad(set_to_none=True)
    return torch.from_numpy(np.asarray(maps, dtype=np.float32))


def map_method(name: str, network: CamNet, score_batch_size: int = 64) -> MapMethod | None:
    """The map maker of method ``name`` for :mod:`bench.scoring.prediction` (None for ``cam``: the CAM path itself)."""
    check_methods([name])
    if name == OUR_CAM:
        return None
    if name == CENTER:
        return center_maps
    method = library_method(name, network, score_batch_size)
    on_images = name in ON_IMAGES

    def make_maps(images: torch.Tensor, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """``classes (B, M)`` -> ``(B, M, h, w)``; a class an image already had a map for is not redone."""
        inputs = images if on_images else features
        columns: list[torch.Tensor] = []
        for column in range(classes.shape[1]):
            wanted = classes[:, column]  # (B,)
            maps = torch.empty(len(wanted), *features.shape[2:])  # (B, h, w)
            todo = torch.ones(len(wanted), dtype=torch.bool)
            for earlier in range(column):  # e.g. the GT class when it is the top-1 class
                same = todo & (classes[:, earlier] == wanted).cpu()
                maps[same] = columns[earlier][same]
                todo &= ~same
            if todo.any():
                rows = todo.nonzero()[:, 0]
                maps[rows] = library_maps(method, inputs[rows.to(inputs.device)], wanted[rows.to(wanted.device)])
            columns.append(maps)
        return torch.stack(columns, dim=1).to(features.device)  # (B, M, h, w)

    return make_maps


def time_methods(network: CamNet, makers: dict[str, MapMethod | None], batches: list[tuple[torch.Tensor, torch.Tensor]],
                 tau: float, normalization: str, precision_context: typing.Callable[[], typing.ContextManager],
                 boxed: typing.Sequence[int] = SCORED_MAPS, topk: int = TOP_K,
                 warm_up: bool = True) -> dict[str, dict[str, float]]:
    """Milliseconds per image of each method's whole path, and its ratio to the forward pass alone.

    A method's path is :func:`bench.scoring.prediction.localize_batch` as evaluation
    calls it: forward pass, top-k classes, the ``boxed`` classes' maps (top-1
    and GT), upsampled to the input frame and boxed. ``batches``: ``(images
    (B, 3, S, S), labels (B,))``; each batch is timed once per method after one
    warm-up (on the first batch; ``warm_up=False`` when the caller has just
    run one), the methods and the plain forward pass in turn, so that load from
    other processes hits all alike. Returns ``{name: {"ms_per_image",
    "overhead"}}`` with ``"forward"`` (overhead 1) first.
    """
    network.eval()
    totals = dict.fromkeys(["forward", *makers], 0.0)

    @torch.no_grad()
    def forward(images: torch.Tensor, labels: torch.Tensor) -> None:
        network.head(network.features(images))

    def path(method: MapMethod | None) -> typing.Callable[[torch.Tensor, torch.Tensor], None]:
        def run(images: torch.Tensor, labels: torch.Tensor) -> None:
            sizes = [tuple(images.shape[-2:])] * len(images)
            localize_batch(network, images, sizes, topk, tau, normalization, labels, boxed=boxed, method=method)
        return run

    timed = {"forward": forward, **{name: path(method) for name, method in makers.items()}}
    with precision_context():
        for name, function in timed.items() if warm_up else ():  # first-call allocations, kernel choice
            function(*batches[0])
        for images, labels in batches:
            for name, function in timed.items():
                start = time.perf_counter()
                function(images, labels)
                totals[name] += time.perf_counter() - start
    count = sum(len(labels) for _, labels in batches)
    return {name: {"ms_per_image": 1e3 * total / count, "overhead": total / totals["forward"]}
            for name, total in totals.items()}
