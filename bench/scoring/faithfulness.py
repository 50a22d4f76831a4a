"""Is a map faithful to the model? Deletion and insertion, Average Drop / Increase, ROAD (MoRF and LeRF).

Each metric is a small frozen object, its parameters in the constructor and in
its ``describe()``, called as ``metric(model, images, classes, maps)`` (the
form of Quantus's metrics), with

* ``model``: an ``nn.Module`` in eval mode, ``images (B, C, S, S)`` as the
  network takes them (normalized) -> logits ``(B, K)``;
* ``images``: ``(B, C, S, S)`` float32, on the model's device;
* ``classes``: ``(B,)`` int64, the class each map explains (``bench methods``: the top-1 class);
* ``maps``: ``(B, S, S)`` float, the raw map of that class at the image's
  resolution (``bench methods``: upsampled bilinearly, before any ReLU or
  normalization); every map is checked first
  (:func:`bench.scoring.map_checks.check_map`: 2-D, the image's size, finite,
  not constant), and ``image_ids`` name the image in the error.

The score read off the model is always the **softmax probability of the
class**. Everything runs in float32, without autocast (the library's metrics
compute in NumPy).

**Where each comes from.** Average Drop / Increase and ROAD are
pytorch-grad-cam's (``pytorch_grad_cam.metrics.cam_mult_image``,
``pytorch_grad_cam.metrics.road``), called as they are; where its definition
differs from the paper's, the paper's is followed, as said below. Deletion and
insertion are in neither pytorch-grad-cam nor (as such) Quantus, so they are
written here, once, as the RISE paper defines them.

* :class:`Deletion` / :class:`Insertion` (Petsiuk et al., BMVC 2018, *RISE*):
  the pixels in decreasing map order (ties in row-major order), replaced in
  ``steps`` equal steps (after step k, the first ``round(k P / steps)`` of the
  ``P`` pixels, all channels); the class probability at each of the
  ``steps + 1`` images; the area under that curve over the fraction of pixels
  replaced (trapezoid rule: RISE's ``auc``). Deletion starts from the image
  and puts in the **zero of the normalized input**, the dataset's mean colour
  (RISE's code does the same on its normalized tensor; its paper says black):
  lower is more faithful. Insertion starts from the image **blurred**
  (torchvision's ``gaussian_blur``, kernel 11, sigma 5: RISE's kernel; it pads
  by reflection where RISE pads with zeros) and puts the image's pixels back:
  higher is more faithful. RISE replaces 224 pixels a step (224 steps at 224 px);
  16 steps here cost 17 forward passes per curve instead of 225.
* :class:`ConfidenceChange` (Chattopadhay et al., WACV 2018, *Grad-CAM++*):
  the image times the map ``L`` (ReLU, then min-max to [0, 1]:
  :func:`bench.scoring.map_checks.relu_minmax`, the library's own
  post-processing; a map with no positive value weighs every pixel 0, as the
  library's would), ``O`` the class probability on it, ``Y`` on the image.
  **Average Drop** = ``100 mean(max(0, Y - O) / Y)`` (lower is better),
  **Average Increase** = ``100 mean(O > Y)`` (the paper's "increase in
  confidence", higher is better). ``O`` is the library's
  ``CamMultImageConfidenceChange``. Its ``DropInConfidence`` returns
  ``max(0, Y - O)`` without dividing by ``Y``: we follow the paper and divide.
  Like the library, the map multiplies the *normalized* input, so a zero
  weight gives the mean colour, not black.
* :class:`Road` (Rong et al., ICML 2022, *ROAD: Remove and Debias*): at each
  percentile p, the ``100 - p`` % most relevant pixels (MoRF) or least
  relevant ones (LeRF) are removed and imputed by the library's noisy linear
  imputation (each removed pixel the weighted mean of its 8 neighbours, one
  sparse linear system, plus ``N(0, 0.01^2)`` noise, seeded here); the score
  is the library's: the change in class probability, removed minus original,
  averaged over the percentiles (``ROADMostRelevantFirstAverage`` /
  ``ROADLeastRelevantFirstAverage``). MoRF: more negative is more faithful;
  LeRF: nearer 0 is more faithful. The paper plots accuracy against the
  fraction removed; the library's mean change is its one-number summary. The
  percentiles are 20, 40, 60, 80 (the library's ARCC set) rather than its
  default 10, ..., 90: imputing 90 % of the pixels is the dearest solve,
  and the four kept cost about a third of the nine (measured in ``make perf``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from bench.config import DEFAULT_DELETION_STEPS
from bench.scoring.map_checks import check_map, relu_minmax

# The per-image values every metric gives (faithfulness_<method>.csv) and the summary of each (methods.csv).
IMAGE_VALUES = ("probability", "deletion_auc", "insertion_auc", "drop", "increase", "road_morf", "road_lerf")
SUMMARY_KEYS = ("deletion_auc", "insertion_auc", "average_drop", "average_increase", "road_morf", "road_lerf")


def check_maps(maps: torch.Tensor, images: torch.Tensor, image_ids: Sequence[str]) -> np.ndarray:
    """``maps (B, S, S)`` as float32 NumPy once each is scorable at the size of ``images (B, C, S, S)``.

    Raises :class:`bench.scoring.map_checks.UnscorableMapError` naming the first image whose map is not.
    """
    if len(maps) != len(images) or len(image_ids) != len(images):
        raise ValueError(f"{len(maps)} maps and {len(image_ids)} image ids for {len(images)} images")
    arrays = maps.detach().float().cpu().numpy()
    for array, image_id in zip(arrays, image_ids):
        check_map(array, image_id, tuple(images.shape[-2:]))
    return arrays


@torch.no_grad()
def class_probabilities(model: nn.Module, images: torch.Tensor, classes: torch.Tensor,
                        batch_size: int = 64) -> torch.Tensor:
    """Softmax probability of ``classes`` on ``images``: ``(N, C, S, S)``, ``(N,)`` -> ``(N,)`` float32, on the CPU."""
    out = []
    for start in range(0, len(images), batch_size):
        logits = model(images[start:start + batch_size]).float()  # (b, K)
        rows = torch.arange(len(logits), device=logits.device)
        out.append(logits.softmax(dim=1)[rows, classes[start:start + batch_size].to(logits.device)].cpu())
    return torch.cat(out)


def removal_ranks(score_map: np.ndarray) -> np.ndarray:
    """``(H, W)`` int64: each pixel's place in decreasing map order (0: the highest; ties in row-major order)."""
    order = np.argsort(-np.asarray(score_map, dtype=np.float64).ravel(), kind="stable")  # (P,)
    ranks = np.empty_like(order)
    ranks[order] = np.arange(order.size)
    return ranks.reshape(np.shape(score_map))


def replaced_counts(pixels: int, steps: int) -> np.ndarray:
    """``(steps + 1,)``: pixels replaced after each step, ``round(k pixels / steps)`` for k = 0..steps."""
    return np.rint(np.arange(steps + 1) * pixels / steps).astype(np.int64)


def causal_images(image: torch.Tensor, start: torch.Tensor, end: torch.Tensor, ranks: np.ndarray,
                  steps: int) -> torch.Tensor:
    """The ``steps + 1`` images of one curve: ``start`` with its first pixels (in ``ranks`` order) taken from ``end``.

    ``image``, ``start``, ``end``: ``(C, S, S)`` (``image`` only gives the shape); ``ranks (S, S)`` from
    :func:`removal_ranks`. Returns ``(steps + 1, C, S, S)``: image k holds ``end`` on its
    ``replaced_counts(...)[k]`` first pixels and ``start`` elsewhere.
    """
    counts = torch.from_numpy(replaced_counts(ranks.size, steps))  # (steps + 1,)
    taken = torch.from_numpy(ranks)[None] < counts[:, None, None]  # (steps + 1, S, S)
    taken = taken[:, None].to(image.device)  # (steps + 1, 1, S, S)
    return torch.where(taken, end[None], start[None])


def curve_auc(probabilities: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Area under each curve ``probabilities (..., T)`` over ``fractions (T,)`` (0 to 1), trapezoid rule -> ``(...)``."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    widths = np.diff(np.asarray(fractions, dtype=np.float64))  # (T - 1,)
    return ((probabilities[..., 1:] + probabilities[..., :-1]) / 2 * widths).sum(axis=-1)


@dataclass(frozen=True)
class _CausalMetric:
    """Deletion or insertion (module docstring): ``steps`` equal steps, the area under the probability curve."""

    steps: int = DEFAULT_DELETION_STEPS
    batch_size: int = 64  # images per forward pass

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps {self.steps!r}: expected a whole number >= 1")

    def ends(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(start, end)`` images of the curve for ``image (C, S, S)``."""
        raise NotImplementedError

    def curves(self, model: nn.Module, images: torch.Tensor, classes: torch.Tensor, maps: torch.Tensor,
               image_ids: Sequence[str]) -> np.ndarray:
        """``(B, steps + 1)``: the class probability along each image's curve."""
        arrays = check_maps(maps, images, image_ids)
        stacked = torch.cat([causal_images(image, *self.ends(image), removal_ranks(array), self.steps)
                             for image, array in zip(images, arrays)])  # (B (steps + 1), C, S, S)
        repeated = classes.repeat_interleave(self.steps + 1)
        return class_probabilities(model, stacked, repeated, self.batch_size).numpy().reshape(len(images), -1)

    def __call__(self, model: nn.Module, images: torch.Tensor, classes: torch.Tensor, maps: torch.Tensor,
                 image_ids: Sequence[str] | None = None) -> np.ndarray:
        """``(B,)`` float64: the area under each image's curve."""
        image_ids = [str(index) for index in range(len(images))] if image_ids is None else image_ids
        curves = self.curves(model, images, classes, maps, image_ids)
        pixels = images.shape[-2] * images.shape[-1]
        return curve_auc(curves, replaced_counts(pixels, self.steps) / pixels)


@dataclass(frozen=True)
class Deletion(_CausalMetric):
    """RISE's deletion: from the image to the mean colour (the normalized input's zero), most relevant first."""

    def ends(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return image, torch.zeros_like(image)

    def describe(self) -> str:
        return (f"deletion: most relevant pixels first, replaced by the mean colour (0 of the normalized input) in "
                f"{self.steps} equal steps; AUC of the class probability (lower is better)")


@dataclass(frozen=True)
class Insertion(_CausalMetric):
    """RISE's insertion: from the blurred image back to the image, most relevant first."""

    blur_kernel: int = 11
    blur_sigma: float = 5.0

    def ends(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return gaussian_blur(image, [self.blur_kernel] * 2, [self.blur_sigma] * 2), image

    def describe(self) -> str:
        return (f"insertion: most relevant pixels first, put back into the image blurred (Gaussian kernel "
                f"{self.blur_kernel}, sigma {self.blur_sigma:g}) in {self.steps} equal steps; AUC of the class "
                f"probability (higher is better)")


def _targets(classes: torch.Tensor) -> list[ClassifierOutputSoftmaxTarget]:
    return [ClassifierOutputSoftmaxTarget(int(label)) for label in classes]


@dataclass(frozen=True)
class ConfidenceChange:
    """Average Drop and Average Increase (module docstring): per image, ``max(0, Y - O) / Y`` and ``O > Y``."""

    def __call__(self, model: nn.Module, images: torch.Tensor, classes: torch.Tensor, maps: torch.Tensor,
                 image_ids: Sequence[str] | None = None,
                 probabilities: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(drop (B,) float64 in [0, 1], increase (B,) bool)``; ``probabilities``: ``Y`` if already known."""
        image_ids = [str(index) for index in range(len(images))] if image_ids is None else image_ids
        arrays = check_maps(maps, images, image_ids)
        weights = np.stack([relu_minmax(array, image_id) for array, image_id in zip(arrays, image_ids)])
        masked = CamMultImageConfidenceChange()(images, weights.astype(np.float32), _targets(classes), model,
                                                return_diff=False)  # O: (B,) float32
        before = (class_probabilities(model, images, classes) if probabilities is None else probabilities)
        before = before.double().cpu().numpy()
        after = np.asarray(masked, dtype=np.float64)
        return np.maximum(before - after, 0.0) / before, after > before

    def describe(self) -> str:
        return ("Average Drop / Increase: the class probability on the image times the map (ReLU, min-max), "
                "100 mean(max(0, Y - O) / Y) (lower is better) and 100 mean(O > Y) (higher is better)")


@dataclass(frozen=True)
class Road:
    """ROAD, MoRF (``most_relevant_first``) or LeRF: the mean change in class probability (module docstring)."""

    most_relevant_first: bool = True
    percentiles: tuple[int, ...] = (20, 40, 60, 80)
    seed: int = 0

    def __call__(self, model: nn.Module, images: torch.Tensor, classes: torch.Tensor, maps: torch.Tensor,
                 image_ids: Sequence[str] | None = None) -> np.ndarray:
        """``(B,)`` float64: probability after removal minus before, averaged over the percentiles."""
        image_ids = [str(index) for index in range(len(images))] if image_ids is None else image_ids
        arrays = check_maps(maps, images, image_ids)
        metric = (ROADMostRelevantFirstAverage if self.most_relevant_first
                  else ROADLeastRelevantFirstAverage)(percentiles=list(self.percentiles))
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():  # the noise: torch.randn_like, CPU
            torch.manual_seed(self.seed)
            # The library's np.float32(tensor < threshold) on a torch tensor: NumPy 2 warns about __array_wrap__.
            warnings.filterwarnings("ignore", message="__array_wrap__ must accept context", category=DeprecationWarning)
            scores = metric(images, arrays, _targets(classes), model)
        return np.asarray(scores, dtype=np.float64).reshape(len(images))

    @property
    def order(self) -> str:
        return "MoRF" if self.most_relevant_first else "LeRF"

    def describe(self) -> str:
        removed = ", ".join(f"{100 - p}" for p in self.percentiles)
        better = "more negative is better" if self.most_relevant_first else "nearer 0 is better"
        relevance = "most" if self.most_relevant_first else "least"
        return (f"ROAD {self.order}: the {removed} % {relevance} relevant pixels imputed (noisy linear imputation, "
                f"seed {self.seed}), mean change in class probability ({better})")


@dataclass(frozen=True)
class FaithfulnessMetrics:
    """Every faithfulness metric of ``bench methods`` on a batch: per-image values (:data:`IMAGE_VALUES`)."""

    deletion: Deletion = Deletion()
    insertion: Insertion = Insertion()
    confidence: ConfidenceChange = ConfidenceChange()
    road_morf: Road = Road(most_relevant_first=True)
    road_lerf: Road = Road(most_relevant_first=False)

    def __call__(self, model: nn.Module, images: torch.Tensor, classes: torch.Tensor, maps: torch.Tensor,
                 image_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """``{value: (B,)}`` for the :data:`IMAGE_VALUES`; every map is checked before any is scored."""
        check_maps(maps, images, image_ids)
        probabilities = class_probabilities(model, images, classes)
        drop, increase = self.confidence(model, images, classes, maps, image_ids, probabilities)
        return {"probability": probabilities.double().numpy(),
                "deletion_auc": self.deletion(model, images, classes, maps, image_ids),
                "insertion_auc": self.insertion(model, images, classes, maps, image_ids),
                "drop": drop, "increase": increase.astype(np.float64),
                "road_morf": self.road_morf(model, images, classes, maps, image_ids),
                "road_lerf": self.road_lerf(model, images, classes, maps, image_ids)}

    def describe(self) -> str:
        return "; ".join(metric.describe() for metric in (self.deletion, self.insertion, self.confidence,
                                                           self.road_morf, self.road_lerf))

    @classmethod
    def with_steps(cls, steps: int) -> "FaithfulnessMetrics":
        """The metrics with deletion and insertion in ``steps`` equal steps (``bench methods --deletion-steps``)."""
        return cls(deletion=Deletion(steps), insertion=Insertion(steps))

    def forward_passes(self) -> int:
        """Forward passes per image: the probability, deletion and insertion, the masked image, ROAD's two orders."""
        return 1 + 2 * (self.deletion.steps + 1) + 1 + 2 * 2 * len(self.road_morf.percentiles)


def summarize(values: dict[str, np.ndarray]) -> dict[str, float]:
    """Per-image values (:data:`IMAGE_VALUES`, N images) -> the :data:`SUMMARY_KEYS` (NaN for N = 0).

    AUCs and ROAD changes: means (fractions); Average Drop and Increase: means in %.
    """
    def mean(key: str) -> float:
        return float(np.mean(values[key])) if len(values.get(key, ())) else float("nan")

    return {"deletion_auc": mean("deletion_auc"), "insertion_auc": mean("insertion_auc"),
            "average_drop": 100.0 * mean("drop"), "average_increase": 100.0 * mean("increase"),
            "road_morf": mean("road_morf"), "road_lerf": mean("road_lerf")}
