"""The scoring protocols, one object each, and the fixed-tau protocol's frame and wording.

**Frame.** Boxes are scored in one of two pixel frames (``eval.frame``):

* ``"input"``: the network input, the whole image resized (aspect not kept)
  to ``input_size x input_size``; ground-truth boxes are scaled with it.
* ``"original"``: the image file's own ``(H, W)``; ground-truth boxes as the
  dataset gives them, the CAM upsampled straight to that size. Evaluation
  resizes without cropping, so mapping back to the original is exact.

**Protocol text.** Every number is written beside the rule that produced it
(``metrics.json``, ``bench evaluate-maps``, ``bench cam``); :func:`describe_protocol`
and :func:`box_rule` are the one wording of it, each protocol's
:meth:`~BenchProtocol.maps_rule` that of the threshold-sweep metrics.

**Two protocols** (``eval.protocol``), each one object that holds everything in
which the two differ: the score-map preparation, the GT transform (frame,
boxes, masks), the box rule, the pixel meter's thresholds and precision, and
the words that describe them. :func:`scoring_protocol` chooses it once from
the config; callers ask the object and never test its name.

* :class:`BenchProtocol` (``"bench"``, the default) scores every metric with
  our rules: maps in the evaluated frame, normalized as ``eval.normalization``
  says, float32 ``>=`` thresholds, largest 8-connected component.
* :class:`WsolevaluationProtocol` scores the threshold-sweep metrics
  (MaxBoxAcc, MaxBoxAccV2, PxAP, the BoxAcc curves and the val-calibrated
  numbers) with wsolevaluation's pixel rules
  (:mod:`bench.scoring.wsolevaluation_rules`); the fixed-tau metrics keep
  ours, and their text says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np
import torch

from bench.config import EvalConfig, RunConfig
from bench.data.boxes import resize_boxes
from bench.data.images import read_mask
from bench.data.native_readers import from_half_open
from bench.data.samples import Sample
from bench.data.wsol_layout import wsolevaluation_box_convention
from bench.scoring import wsolevaluation_rules as wsol
from bench.scoring.box_rule import normalize_cams
from bench.scoring.fixed_tau_metrics import IOU_THRESHOLD
from bench.scoring.prediction import upsample_to_frames
from bench.scoring.threshold_free_metrics import BoxIous, half_open_box_ious
from bench.scoring.threshold_sweep import threshold_list

# The eval keys that change no score (how many images per batch, how many in the gallery): a fixed map scored
# under configs that differ only in them scores the same (the center and few-shot baselines' identities).
UNSCORED_EVAL_KEYS = ("batch_size", "gallery_size")


def frame_of(sample: Sample, frame: str, input_size: int) -> tuple[tuple[int, int], np.ndarray]:
    """The evaluated frame's size ``(H, W)`` and ``sample``'s ground-truth boxes ``(G, 4)`` float64 in it."""
    if frame == "original":
        return tuple(sample.size), np.asarray(sample.boxes, dtype=np.float64)
    if frame != "input":
        raise ValueError(f"unknown eval.frame={frame!r}; allowed values: ('input', 'original')")
    size = (input_size, input_size)
    return size, resize_boxes(sample.boxes, sample.size, size)


def frame_name(frame: str, input_size: int) -> str:
    """How the frame is named beside the numbers, e.g. ``"224x224 input frame"``."""
    return "original image frame" if frame == "original" else f"{input_size}x{input_size} input frame"


def box_rule(tau: float, normalization: str, maps: str = "CAMs") -> str:
    """The paper's box rule with its parameters, e.g. ``"fixed tau=0.2 on 'max'-normalized CAMs, ..."``."""
    return f"fixed tau={tau:g} on '{normalization}'-normalized {maps}, largest connected component"


def mask_in_frame(sample: Sample, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """``sample``'s object and ignored pixels, each ``(H, W)`` bool at ``size (H, W)`` (masks resized, nearest).

    Object: the union of its instance masks (value > 127). Ignored: the ignore
    mask's pixels that are not object pixels (None without an ignore mask),
    as wsolevaluation's OpenImages protocol.
    """
    union = np.any([read_mask(path, size) for path in sample.mask_paths], axis=0)
    if sample.ignore_path is None:
        return union, None
    return union, read_mask(sample.ignore_path, size) & ~union


@dataclass(frozen=True)
class BenchProtocol:
    """Our rules (``eval.protocol: bench``): every map in the evaluated frame, as the fixed-tau metrics see it.

    Score maps: the GT-class CAM upsampled bilinearly to the evaluated frame,
    then ``eval.normalization`` (float32). GT: the frame's boxes
    (:func:`frame_of`), masks resized to the frame (:func:`mask_in_frame`,
    > 127). Boxes: the largest 8-connected component / all components at
    ``>= tau`` (:func:`bench.scoring.threshold_free_metrics.half_open_box_ious`).
    """

    name: ClassVar[str] = "bench"
    part: ClassVar[str] = "component"  # what one candidate region is called in the text
    precision: ClassVar[type] = np.float32  # thresholds and pixel comparisons
    fixed_tau_note: ClassVar[str] = ""  # appended to the fixed-tau protocol's text

    @property
    def box_ious(self) -> BoxIous:
        return half_open_box_ious

    def thresholds(self, count: int) -> np.ndarray:
        """The sweep's ``(count,)`` thresholds."""
        return threshold_list(count)

    def pixel_thresholds(self, count: int) -> np.ndarray:
        """PxAP's levels."""
        return threshold_list(count)

    def cam_scoremaps(self, gt_cams: torch.Tensor, framed: list[np.ndarray] | None, sizes: list[tuple[int, int]],
                      normalization: str) -> list[np.ndarray]:
        """B GT-class CAMs ``(B, h, w)`` -> B normalized maps ``(H_i, W_i)`` float32 in the evaluated frames.

        ``framed``: the same CAMs already upsampled to ``sizes`` (None: upsampled here).
        """
        if framed is None:
            framed = [m[0] for m in upsample_to_frames(gt_cams[:, None], sizes)]
        return self.framed_scoremaps(framed, normalization)

    def framed_scoremaps(self, framed: list[np.ndarray], normalization: str) -> list[np.ndarray]:
        """Raw maps already in the evaluated frame -> normalized float32 maps."""
        return [normalize_cams(cam[None], normalization)[0] for cam in framed]

    def saved_scoremap(self, score_map: np.ndarray, framed: np.ndarray, normalization: str) -> np.ndarray:
        """A saved map (``bench evaluate-maps``), ``framed`` its resize to the evaluated frame -> the map scored."""
        return self.framed_scoremaps([framed], normalization)[0]

    def check_saved(self, maps: list[np.ndarray], samples: list[Sample]) -> list[str]:
        """Problems with saved maps that only this protocol has (one line each); none under ours."""
        return []

    def gt_boxes(self, sample: Sample, frame_boxes: np.ndarray) -> np.ndarray:
        """``sample``'s GT boxes as this protocol compares them; ours: the evaluated frame's (``frame_boxes``)."""
        return frame_boxes

    def masks(self, sample: Sample, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
        """Object and ignored pixels at the scored map's ``shape (H, W)``."""
        return mask_in_frame(sample, shape)

    def maps_rule(self, normalization: str) -> str:
        """How the threshold-sweep metrics read the maps, beside their numbers."""
        return f"'{normalization}'-normalized GT-class maps"

    def normalization_text(self, normalization: str) -> str:
        """The ``normalization`` entry of the ``sweep`` section of ``metrics.json``."""
        return normalization


@dataclass(frozen=True)
class WsolevaluationProtocol(BenchProtocol):
    """wsolevaluation's pixel rules (``eval.protocol: wsolevaluation``, :mod:`bench.scoring.wsolevaluation_rules`).

    The scoring frame is ``frame_size x frame_size``, the network input
    (``model.input_size``; wsolevaluation's 224 by default). Score maps: the
    feature-resolution CAM resized bicubically to the frame and min-max
    normalized (float64); a saved map already at the frame's size is used as
    it is. GT: boxes written as wsolevaluation's metadata writes them for the
    dataset (``stored_boxes``: ``"inclusive"`` for ILSVRC, ``"half_open"``
    for its CUB's ``x + w``; :func:`bench.data.wsol_layout.wsolevaluation_box_convention`),
    scaled to the frame and truncated; masks resized (nearest, top-left) and
    > 0. Boxes: OpenCV contours of the 8-bit map, largest polygon area / all
    contours, IoU counting inclusive pixels.
    """

    frame_size: int = wsol.WSOL_SIZE
    stored_boxes: str = "inclusive"

    name: ClassVar[str] = "wsolevaluation"
    part: ClassVar[str] = "contour"
    precision: ClassVar[type] = np.float64
    fixed_tau_note: ClassVar[str] = " (bench rules: eval.protocol=wsolevaluation applies to the threshold-sweep metrics only)"

    @property
    def box_ious(self) -> BoxIous:
        return wsol.box_ious_at_thresholds

    def thresholds(self, count: int) -> np.ndarray:
        return wsol.thresholds(count)

    def pixel_thresholds(self, count: int) -> np.ndarray:
        return wsol.pixel_thresholds(count)

    def cam_scoremaps(self, gt_cams: torch.Tensor, framed: list[np.ndarray] | None, sizes: list[tuple[int, int]],
                      normalization: str) -> list[np.ndarray]:
        """B GT-class CAMs ``(B, h, w)`` -> B maps ``(S, S)`` float64 (``framed``, ``sizes``, ``normalization`` unused)."""
        return [wsol.scoremap_from_cam(cam, self.frame_size) for cam in gt_cams.float().cpu().numpy()]

    def framed_scoremaps(self, framed: list[np.ndarray], normalization: str) -> list[np.ndarray]:
        raise ValueError(f"eval.protocol={self.name!r} resizes each map from the feature-resolution CAM "
                         "(SweepMeters.update_from_cams), not from a map already in the evaluated frame")

    def saved_scoremap(self, score_map: np.ndarray, framed: np.ndarray, normalization: str) -> np.ndarray:
        return wsol.scoremap_from_saved(score_map, self.frame_size)

    def check_saved(self, maps: list[np.ndarray], samples: list[Sample]) -> list[str]:
        """A saved map at the frame's size is scored without normalization (its 8-bit rule): it must lie in [0, 1]."""
        return [f"{sample.image_id}: values outside [0, 1]: min {float(m.min()):g}, max {float(m.max()):g}"
                for m, sample in zip(maps, samples)
                if m.shape == (self.frame_size, self.frame_size) and (m.min() < 0 or m.max() > 1)]

    def gt_boxes(self, sample: Sample, frame_boxes: np.ndarray | None = None) -> np.ndarray:
        stored = from_half_open(sample.boxes, self.stored_boxes)  # the numbers its metadata would hold
        return wsol.gt_boxes_in_frame(stored, sample.size, self.frame_size)

    def masks(self, sample: Sample, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
        return wsol.masks_in_frame(sample.mask_paths, sample.ignore_path, self.frame_size)

    def maps_rule(self, normalization: str) -> str:
        side = f"{self.frame_size}x{self.frame_size}"
        return (f"GT-class maps by wsolevaluation's rules (bicubic {side}, min-max unless a saved {side} map, "
                f"8-bit value > int(tau * max), OpenCV contours, GT boxes {self.stored_boxes.replace('_', '-')} "
                f"truncated, IoU +1)")

    def normalization_text(self, normalization: str) -> str:
        return f"minmax (saved {self.frame_size}x{self.frame_size} maps: none)"


ScoringProtocol = BenchProtocol  # the interface: every protocol is a BenchProtocol or overrides its methods

# eval.protocol -> the protocol's builder (frame side, how wsolevaluation's metadata writes the dataset's
# boxes): the one place that maps the config's choice to an object.
PROTOCOLS: dict[str, Callable[[int, str], ScoringProtocol]] = {
    "bench": lambda frame_size, stored_boxes: BenchProtocol(),
    "wsolevaluation": WsolevaluationProtocol,
}


def scoring_protocol(config: EvalConfig, input_size: int = wsol.WSOL_SIZE,
                     stored_boxes: str = "inclusive") -> ScoringProtocol:
    """The protocol object ``eval.protocol`` names, for a network input of ``input_size`` px.

    ``stored_boxes``: how wsolevaluation's metadata writes the dataset's boxes
    (:func:`bench.data.wsol_layout.wsolevaluation_box_convention`); only its protocol uses it.
    """
    if config.protocol not in PROTOCOLS:
        raise ValueError(f"unknown eval.protocol={config.protocol!r}; allowed values: {tuple(PROTOCOLS)}")
    return PROTOCOLS[config.protocol](input_size, stored_boxes)


def run_protocol(config: RunConfig) -> ScoringProtocol:
    """The protocol of a run: its ``eval.protocol``, network input size and dataset."""
    stored = wsolevaluation_box_convention(config.dataset, config.dataset_path)
    return scoring_protocol(config.eval, config.model.input_size, stored)


def describe_protocol(config: EvalConfig, input_size: int, maps: str = "CAMs") -> str:
    """The whole fixed-tau protocol (split, box rule, IoU threshold, frame), stated beside its numbers."""
    return (f"{config.split} split, {box_rule(config.tau, config.normalization, maps)}, "
            f"IoU >= {IOU_THRESHOLD:g}, boxes in the {frame_name(config.frame, input_size)}"
            f"{scoring_protocol(config, input_size).fixed_tau_note}")
