"""Score heat maps saved by other tools (``python -m bench evaluate-maps``) on our protocol or wsolevaluation's.

One ``.npy`` file per image of the evaluated split, under the maps folder:
``<maps>/<image_id>.npy`` (image ids may contain folders), or the image id
with its extension replaced (``birds/001.png`` -> ``birds/001.npy``). Each
file holds a 2-D real array ``(h, w)`` of any resolution: the map of the
image's ground-truth class.

**Resize rule.** A map is resized to the evaluated frame (``eval.frame``:
the ``input_size x input_size`` network input, or the original image's
``(H, W)``) by bilinear interpolation with ``align_corners=False`` — exactly
how our own CAMs are upsampled (:func:`bench.model.cam.upsample_cams`); a map already
at the frame's size is used as is. The aspect ratio is not preserved: the map
is assumed to cover the whole image. It is then normalized with
``eval.normalization`` and scored like our CAMs: GT-known loc accuracy at the
fixed ``eval.tau``, MaxBoxAcc, MaxBoxAccV2 and (where masks exist) PxAP.
The pointing game and the energy-based pointing game
(:mod:`bench.scoring.pointing_game`) read the resized map as it is, in the
same frame, under either protocol; a map they cannot score (constant: no
maximum) is reported with its image id, all of them together, and nothing is
written.

**eval.protocol: wsolevaluation.** The threshold-sweep metrics (MaxBoxAcc,
MaxBoxAccV2, PxAP) follow wsolevaluation's rules instead
(:mod:`bench.scoring.wsolevaluation_rules`), in the ``S x S`` frame of
``model.input_size`` (224 by default, wsolevaluation's): a map of ``S x S``
is scored as it is, without normalization, and must lie in ``[0, 1]`` even
with ``allow_any_range``; a map of another size is resized bicubically to
``S x S`` and min-max normalized, as wsolevaluation treats a CAM. Maps
are kept in their file's precision (float64 stays float64), as its
evaluator reads them. GT-known loc at ``eval.tau`` keeps our rules.

**Checks.** Every file is checked before anything is scored, and all problems
are reported together, each with its file name: missing file, unreadable
file (0 bytes, truncated, a pickled object array, an ``.npz`` archive, not a
``.npy`` file at all), not 2-D, empty, not real numbers (complex, bool,
strings...), NaN or inf values, and values outside
``[0, 1]`` (wsolevaluation's convention for saved score maps; pass
``allow_any_range`` to accept any finite values, which the normalization
rescales anyway).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from bench.config import EvalConfig
from bench.data.boxes import best_iou
from bench.data.samples import Sample
from bench.errors import InputError
from bench.model.cam import upsample_cams
from bench.scoring.box_rule import boxes_from_cams
from bench.scoring.evaluation import SweepMeters, update_pointing
from bench.scoring.fixed_tau_metrics import IOU_THRESHOLD
from bench.scoring.map_checks import UnscorableMapError, array_problem
from bench.scoring.pointing_game import PointingMeter
from bench.scoring.protocols import ScoringProtocol, describe_protocol, frame_of, scoring_protocol
from bench.scoring.threshold_free_metrics import sweep_summary

MAX_LISTED_PROBLEMS = 20
# What np.load raises on a file that is not one readable .npy array: 0 bytes or a cut header (EOFError),
# truncated data, a pickled object array or a bad header (ValueError), an unreadable file (OSError).
NPY_READ_ERRORS = (OSError, ValueError, EOFError)


class ScoreMapError(InputError, ValueError):
    """Some score-map files are missing or invalid; the message lists them with their file names."""


def map_candidates(maps_dir: Path, image_id: str) -> list[Path]:
    """Where the map of ``image_id`` may be, in the order tried."""
    exact = maps_dir / f"{image_id}.npy"
    replaced = (maps_dir / image_id).with_suffix(".npy")
    return [exact] if replaced == exact else [exact, replaced]


def check_score_map(array: np.ndarray, allow_any_range: bool = False) -> str | None:
    """What is wrong with a loaded map (None if nothing)."""
    problem = array_problem(array)
    if problem:
        return problem
    if not allow_any_range and (array.min() < 0 or array.max() > 1):
        return (f"values outside [0, 1]: min {float(array.min()):g}, max {float(array.max()):g} "
                f"(save maps in [0, 1], or pass --any-range)")
    return None


def load_score_map(path: Path, allow_any_range: bool = False) -> np.ndarray:
    """One map file -> ``(h, w)`` float32, or float64 if the file holds float64 or integers.

    Raises :class:`ScoreMapError` saying what is wrong with the file.

    The file is memory-mapped first, so a header that announces more values
    than the file holds is refused without allocating them.
    """
    try:
        loaded = np.load(path, mmap_mode="r", allow_pickle=False)
    except NPY_READ_ERRORS as error:
        raise ScoreMapError(f"not a readable .npy array ({type(error).__name__}: {error}); save the map again "
                            "with np.save(path, map), map a 2-D array of floats") from None
    if not isinstance(loaded, np.ndarray):  # np.load opens an .npz archive whatever the file's name
        loaded.close()
        raise ScoreMapError("not a readable .npy array: an .npz archive (save each map alone with np.save)")
    problem = check_score_map(loaded, allow_any_range)
    if problem:
        raise ScoreMapError(problem)
    # A copy in memory (the file is closed), at least float32: wsolevaluation's 8-bit rule needs float64 exact.
    return np.array(loaded, dtype=np.result_type(loaded.dtype, np.float32))


def load_score_maps(maps_dir: Path, samples: list[Sample], allow_any_range: bool = False) -> list[np.ndarray]:
    """The map of every sample (``(h_i, w_i)``, :func:`load_score_map`), in order.

    Raises :class:`ScoreMapError` listing all problems.
    """
    maps_dir = Path(maps_dir)
    if not maps_dir.is_dir():
        raise ScoreMapError(f"{maps_dir}: score-map folder not found")
    maps, problems = [], []
    for sample in samples:
        candidates = map_candidates(maps_dir, sample.image_id)
        path = next((candidate for candidate in candidates if candidate.is_file()), None)
        if path is None:
            problems.append(f"{candidates[0]}: missing (map of image {sample.image_id!r})")
            continue
        try:
            maps.append(load_score_map(path, allow_any_range))
        except ScoreMapError as error:
            problems.append(f"{path}: {error}")
    if problems:
        listed = "\n  ".join(problems[:MAX_LISTED_PROBLEMS])
        more = f"\n  ... and {len(problems) - MAX_LISTED_PROBLEMS} more" if len(problems) > MAX_LISTED_PROBLEMS else ""
        raise ScoreMapError(f"{len(problems)} of {len(samples)} score maps in {maps_dir} are missing or invalid:\n"
                            f"  {listed}{more}")
    return maps


def resize_to_frame(score_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The module's resize rule: ``(h, w)`` -> ``size = (H, W)`` float32, bilinear, align_corners=False."""
    if score_map.shape == tuple(size):
        return score_map.astype(np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(score_map, dtype=np.float32))[None, None]  # (1, 1, h, w)
    return upsample_cams(tensor, tuple(size))[0, 0].numpy()


def score_maps(maps: list[np.ndarray], samples: list[Sample], config: EvalConfig, input_size: int,
               split: str, protocol: ScoringProtocol | None = None) -> dict:
    """Score loaded maps (one per sample) on ``protocol`` -> a JSON-able dict with protocols.

    ``protocol`` (:func:`bench.scoring.protocols.run_protocol`): None takes the
    config's ``eval.protocol`` at ``input_size``, boxes inclusive in wsolevaluation's metadata.
    """
    protocol = scoring_protocol(config, input_size) if protocol is None else protocol
    problems = protocol.check_saved(maps, samples)
    if problems:
        listed = "\n  ".join(problems[:MAX_LISTED_PROBLEMS])
        raise ScoreMapError(f"{len(problems)} of {len(samples)} maps are scored without normalization under "
                            f"eval.protocol={protocol.name} (its 8-bit rule on maps saved at its frame's size), "
                            f"so save them in [0, 1]:\n  {listed}")
    sweep = SweepMeters.for_protocol(protocol, config.num_thresholds)
    pointing = PointingMeter()
    correct, unscorable = 0, []
    for score_map, sample in zip(maps, samples):
        size, gt_boxes = frame_of(sample, config.frame, input_size)
        framed = resize_to_frame(score_map, size)
        box = boxes_from_cams(framed[None], config.tau, config.normalization)  # (1, 4)
        correct += int(best_iou(box, [gt_boxes])[0] >= IOU_THRESHOLD)
        flags = np.zeros(1, dtype=bool)  # no classifier: top-1/top-5 are not scored
        scoremap = protocol.saved_scoremap(score_map, framed, config.normalization)
        sweep.update_scoremaps([scoremap], [sample], flags, flags, [gt_boxes])
        try:
            update_pointing(pointing, [framed], [sample], [gt_boxes])
        except UnscorableMapError as error:
            unscorable.append(str(error))
    if unscorable:
        listed = "\n  ".join(unscorable[:MAX_LISTED_PROBLEMS])
        more = f"\n  ... and {len(unscorable) - MAX_LISTED_PROBLEMS} more" if len(unscorable) > MAX_LISTED_PROBLEMS else ""
        raise ScoreMapError(f"{len(unscorable)} of {len(samples)} maps cannot be scored by the pointing game (a "
                            f"constant map has no maximum to point with):\n  {listed}{more}")
    pointing_scores = pointing.compute()
    return {
        "num_images": len(samples),
        "gt_known_loc_acc": {
            "value": 100.0 * correct / len(samples),
            "protocol": describe_protocol(dataclasses.replace(config, split=split), input_size, maps="maps"),
        },
        "sweep": sweep_summary(sweep.boxes, sweep.pixels, None, split, config.normalization, protocol),
        "pointing_game": {"value": pointing_scores["pointing_game"], "protocol": pointing.describe()},
        "energy_pointing_game": {"value": pointing_scores["energy_pointing_game"], "protocol": pointing.describe()},
    }
