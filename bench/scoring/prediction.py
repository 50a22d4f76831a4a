"""From a batch of images to top-k classes, CAMs and boxes.

The one path that evaluation, ``bench cam`` and ``make perf`` share.

One forward pass gives the features; the classifier head on them gives the
logits (softmax, top-k classes) and, from the same features, the CAMs of the
top-k classes, then of the true classes when labels are given
(:mod:`bench.model.cam`). The maps asked for are upsampled bilinearly to each
image's frame ``(H_i, W_i)`` and boxed by the paper's rule at ``tau`` on
``normalization``-normalized maps (:mod:`bench.scoring.box_rule`; boxes follow
:mod:`bench.data.boxes`, in pixels of that frame).

A :data:`MapMethod` (``bench methods``: Grad-CAM and kin, :mod:`bench.scoring.map_methods`)
may replace the CAM: it only changes how the ``(h, w)`` maps of the chosen
classes are made; classes, upsampling and boxes stay this module's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from bench.model.cam import upsample_cams
from bench.model.camnet import CamNet
from bench.scoring.box_rule import boxes_from_cams

# Makes maps in place of the CAM: (images (B, 3, S, S), features (B, C, h, w), classes (B, M) int64)
# -> maps (B, M, h, w) float32 at the feature resolution, the map of classes[i, m] for image i.
MapMethod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class BatchPrediction:
    """What one forward pass yields for B images (K = min(topk, num_classes))."""

    topk_classes: torch.Tensor  # (B, K) int64, best first
    topk_probs: torch.Tensor  # (B, K) softmax probabilities
    # (B, K, h, w), or (B, K + 1, h, w) with the true class's CAM last when labels are given; from
    # predict(..., mapped=columns): the maps of those columns of that class list only, (B, len(columns), h, w)
    cams: torch.Tensor


@dataclass(frozen=True)
class BatchBoxes:
    """A :class:`BatchPrediction` with M of its maps upsampled to each image's frame and boxed."""

    prediction: BatchPrediction
    maps: list[np.ndarray]  # B arrays (M, H_i, W_i) float32, as upsampled (not normalized)
    boxes: np.ndarray  # (B, M, 4) float32


@torch.no_grad()
def predict_from_features(model: CamNet, features: torch.Tensor, topk: int,
                          labels: torch.Tensor | None = None) -> BatchPrediction:
    """Top-``topk`` classes and their CAMs (then the CAM of ``labels (B,)`` if given) from ``features (B, C, h, w)``."""
    topk_probs, topk_classes, classes = _ranked_classes(model, features, topk, labels)
    cams = model.class_maps(features, classes)  # (B, K [+ 1], h, w): the CAM, or the method head's maps
    return BatchPrediction(topk_classes, topk_probs, cams)


def _ranked_classes(model: CamNet, features: torch.Tensor, topk: int,
                    labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(top-k probabilities (B, K), top-k classes (B, K), those classes then labels (B, K [+ 1]))``."""
    logits = model.head(features)  # (B, num_classes)
    k = min(topk, logits.shape[1])
    topk_probs, topk_classes = logits.softmax(dim=1).topk(k, dim=1)  # (B, K)
    classes = topk_classes if labels is None else torch.cat([topk_classes, labels[:, None]], dim=1)  # (B, K [+ 1])
    return topk_probs, topk_classes, classes


@torch.no_grad()
def predict(model: CamNet, images: torch.Tensor, topk: int, labels: torch.Tensor | None = None,
            method: MapMethod | None = None, mapped: Sequence[int] | None = None) -> BatchPrediction:
    """:func:`predict_from_features` on a batch ``images (B, 3, S, S)``: one forward pass.

    ``method`` (None: the CAM) makes the maps; ``mapped`` (None: all) picks the
    columns of the class list that get one, e.g. ``(0, -1)``: the top-1 and the
    true class (a costly method then makes two maps per image, not K + 1).
    """
    features = model.features(images)  # (B, C, h, w)
    topk_probs, topk_classes, classes = _ranked_classes(model, features, topk, labels)
    chosen = classes if mapped is None else classes[:, list(mapped)]  # (B, M)
    maps = (model.class_maps(features, chosen) if method is None
            else method(images, features, chosen))  # (B, M, h, w)
    return BatchPrediction(topk_classes, topk_probs, maps)


def upsample_to_frames(cams: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Each image's ``cams[i] (M, h, w)`` upsampled to ``sizes[i] = (H_i, W_i)``: B float32 arrays ``(M, H_i, W_i)``.

    Frames of equal size are upsampled in one call (the result is the same as one image at a time).
    """
    cams = cams.float()
    if len(set(sizes)) == 1:
        return list(upsample_cams(cams, tuple(sizes[0])).cpu().numpy())  # B x (M, H, W)
    return [upsample_cams(cams[i : i + 1], tuple(size))[0].cpu().numpy() for i, size in enumerate(sizes)]


def box_in_frames(cams: torch.Tensor, sizes: Sequence[tuple[int, int]], tau: float,
                  normalization: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Upsample ``cams (B, M, h, w)`` to the frames ``sizes`` and box every map.

    Returns B maps ``(M, H_i, W_i)`` and their boxes ``(B, M, 4)``.
    """
    maps = upsample_to_frames(cams, sizes)
    boxes = np.stack([boxes_from_cams(image_maps, tau, normalization) for image_maps in maps])  # (B, M, 4)
    return maps, boxes.reshape(len(maps), cams.shape[1], 4)


@torch.no_grad()
def localize_features(model: CamNet, features: torch.Tensor, sizes: Sequence[tuple[int, int]], topk: int,
                      tau: float, normalization: str, labels: torch.Tensor | None = None,
                      boxed: Sequence[int] | None = None) -> BatchBoxes:
    """:func:`predict_from_features`, then the maps ``cams[:, boxed]`` (all if None) upsampled to ``sizes`` and boxed.

    ``boxed`` indexes the CAMs' second axis (e.g. ``(0, -1)``: the top-1 and the
    true class); ``maps`` and ``boxes`` follow its order.
    """
    prediction = predict_from_features(model, features, topk, labels)
    chosen = prediction.cams if boxed is None else prediction.cams[:, list(boxed)]  # (B, M, h, w)
    maps, boxes = box_in_frames(chosen, sizes, tau, normalization)
    return BatchBoxes(prediction, maps, boxes)


@torch.no_grad()
def localize_batch(model: CamNet, images: torch.Tensor, sizes: Sequence[tuple[int, int]], topk: int, tau: float,
                   normalization: str, labels: torch.Tensor | None = None,
                   boxed: Sequence[int] | None = None, method: MapMethod | None = None) -> BatchBoxes:
    """The whole path for ``images (B, 3, S, S)``: one forward pass, then :func:`localize_features`.

    With ``method``, it makes the maps of the ``boxed`` classes only (:func:`predict` with
    ``mapped=boxed``): ``prediction.cams``, ``maps`` and ``boxes`` then all follow ``boxed``'s order.
    """
    if method is None:
        return localize_features(model, model.features(images), sizes, topk, tau, normalization, labels, boxed)
    prediction = predict(model, images, topk, labels, method, mapped=boxed)
    maps, boxes = box_in_frames(prediction.cams, sizes, tau, normalization)
    return BatchBoxes(prediction, maps, boxes)
