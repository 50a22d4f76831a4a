"""The fixed-tau localization protocol in one place: the evaluated frame and the words that state the protocol.

**Frame.** Boxes are scored in one of two pixel frames (``eval.frame``):

* ``"input"``: the network input, the whole image resized (aspect not kept)
  to ``input_size x input_size``; ground-truth boxes are scaled with it.
* ``"original"``: the image file's own ``(H, W)``; ground-truth boxes as the
  dataset gives them, the CAM upsampled straight to that size. Evaluation
  resizes without cropping, so mapping back to the original is exact.

**Protocol text.** Every number is written beside the rule that produced it
(``metrics.json``, ``bench evaluate-maps``, ``bench cam``); :func:`describe_protocol`
and :func:`box_rule` are the one wording of it, :func:`sweep_maps_rule` that of
the threshold-sweep metrics under either ``eval.protocol``.

**Two protocols** (``eval.protocol``). ``"bench"`` (the default) scores every
metric with our rules. ``"wsolevaluation"`` scores the threshold-sweep metrics
(MaxBoxAcc, MaxBoxAccV2, PxAP, the BoxAcc curves and the val-calibrated
numbers) with wsolevaluation's pixel rules (:mod:`bench.scoring.wsolevaluation_rules`);
the fixed-tau metrics keep ours, and their text says so.
"""

from __future__ import annotations

import numpy as np

from bench.config import EvalConfig
from bench.data.boxes import resize_boxes
from bench.data.samples import Sample
from bench.scoring.fixed_tau_metrics import IOU_THRESHOLD


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


def describe_protocol(config: EvalConfig, input_size: int, maps: str = "CAMs") -> str:
    """The whole fixed-tau protocol (split, box rule, IoU threshold, frame), stated beside its numbers."""
    text = (f"{config.split} split, {box_rule(config.tau, config.normalization, maps)}, "
            f"IoU >= {IOU_THRESHOLD:g}, boxes in the {frame_name(config.frame, input_size)}")
    if config.protocol == "wsolevaluation":
        text += " (bench rules: eval.protocol=wsolevaluation applies to the threshold-sweep metrics only)"
    return text


def sweep_maps_rule(protocol: str, normalization: str) -> str:
    """How the threshold-sweep metrics read the maps under ``protocol`` (``eval.protocol``), beside their numbers."""
    if protocol == "wsolevaluation":
        return ("GT-class maps by wsolevaluation's rules (bicubic 224x224, min-max unless a saved 224x224 map, "
                "8-bit value > int(tau * max), OpenCV contours, GT boxes truncated, IoU +1)")
    if protocol != "bench":
        raise ValueError(f"unknown eval.protocol={protocol!r}; allowed values: ('bench', 'wsolevaluation')")
    return f"'{normalization}'-normalized GT-class maps"
