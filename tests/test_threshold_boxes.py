"""Threshold sweep: hand-made maps with known boxes at each tau, and fast sweep == reference loop."""

import numpy as np
import pytest
from scipy import ndimage

from bench.data.boxes import best_iou
from bench.scoring.box_rule import boxes_from_cams, normalize_cams
from bench.scoring.threshold_sweep import reference_sweep, sweep_boxes, threshold_list

EMPTY = [0, 0, 0, 0]


def test_threshold_list():
    assert threshold_list(4).tolist() == [0.0, 0.25, 0.5, 0.75]
    thresholds = threshold_list(100)
    assert len(thresholds) == 100 and thresholds[1] == np.float32(0.01) and thresholds[-1] == np.float32(0.99)
    assert threshold_list(1000)[1] == np.float32(0.001)
    with pytest.raises(ValueError, match="count must be an integer in"):
        threshold_list(1001)


def _two_blobs() -> np.ndarray:
    """A 3-pixel blob of value 4 (left) and a 4-pixel blob of value 2 (right), 6x8, zeros elsewhere."""
    cam = np.zeros((6, 8), dtype=np.float32)
    cam[1, 1:4] = 4.0  # box [1, 1, 4, 2)
    cam[3:5, 5:7] = 2.0  # box [5, 3, 7, 5)
    return cam


def test_boxes_at_each_tau_hand_made():
    normalized = normalize_cams(_two_blobs()[None], "max")[0]  # 1.0 (left), 0.5 (right), 0 elsewhere
    thresholds = threshold_list(4)  # 0, 0.25, 0.5, 0.75
    gt = np.array([[5.0, 3.0, 7.0, 5.0]])  # exactly the right blob
    result = sweep_boxes(normalized, thresholds, gt)
    # tau 0: everything kept; 0.25 and 0.5 (inclusive): both blobs, the 4-pixel one is larger; 0.75: left only.
    assert result.largest.tolist() == [[0, 0, 8, 6], [5, 3, 7, 5], [5, 3, 7, 5], [1, 1, 4, 2]]
    # all components, best match: the right blob whenever it exists on its own.
    assert result.best_match.tolist() == [[0, 0, 8, 6], [5, 3, 7, 5], [5, 3, 7, 5], [1, 1, 4, 2]]
    ious = best_iou(result.largest, [gt] * 4)
    assert ious.tolist() == [4 / 48, 1.0, 1.0, 0.0]


def test_all_components_beats_largest_when_the_object_is_the_small_blob():
    normalized = normalize_cams(_two_blobs()[None], "max")[0]
    gt = np.array([[1.0, 1.0, 4.0, 2.0]])  # the left, 3-pixel blob
    result = sweep_boxes(normalized, threshold_list(4), gt)
    largest_iou = best_iou(result.largest, [gt] * 4)
    all_iou = best_iou(result.best_match, [gt] * 4)
    assert largest_iou.tolist() == [3 / 48, 0.0, 0.0, 1.0]
    assert all_iou.tolist() == [3 / 48, 1.0, 1.0, 1.0]


def test_ties_diagonals_and_empty_maps():
    # Two 2-pixel components of equal size: the one met first in raster order wins (as largest_component_box).
    cam = np.zeros((4, 4), dtype=np.float32)
    cam[3, 2:4] = 1.0
    cam[0, 0] = cam[1, 1] = 1.0  # diagonal neighbours: one 8-connected component, first in raster order
    normalized = normalize_cams(cam[None], "max")[0]
    result = sweep_boxes(normalized, threshold_list(2), np.array([[0.0, 0.0, 1.0, 1.0]]))
    assert result.largest.tolist() == [[0, 0, 4, 4], [0, 0, 2, 2]]
    # All-zero map: whole image at tau 0, the empty box above (the box rule's convention).
    zeros = normalize_cams(np.zeros((1, 3, 5)), "minmax")[0]
    result = sweep_boxes(zeros, threshold_list(3), np.array([[0.0, 0.0, 5.0, 3.0]]))
    assert result.largest.tolist() == [[0, 0, 5, 3], EMPTY, EMPTY]
    assert result.best_match.tolist() == [[0, 0, 5, 3], EMPTY, EMPTY]


def test_sweep_equals_box_rule_at_each_tau():
    cam = ndimage.gaussian_filter(np.random.default_rng(3).normal(size=(20, 24)), 1.5)
    thresholds = threshold_list(50)
    for normalization in ("max", "minmax"):
        normalized = normalize_cams(cam[None], normalization)[0]
        largest = sweep_boxes(normalized, thresholds, np.zeros((1, 4))).largest
        for index, tau in enumerate(thresholds):
            expected = boxes_from_cams(cam[None], float(tau), normalization)[0]
            assert largest[index].tolist() == expected.tolist(), (normalization, tau)


def _random_maps(count: int, seed: int):
    """Random (noise), smooth (one or several blobs) and few-valued (many ties) maps of small random sizes."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        height, width = rng.integers(1, 18, size=2)
        kind = index % 4
        if kind == 0:
            cam = rng.random((height, width))
        elif kind == 1:
            cam = ndimage.gaussian_filter(rng.normal(size=(height, width)), rng.uniform(0.7, 3))
        elif kind == 2:
            cam = rng.integers(-1, 4, size=(height, width)).astype(np.float64)
        else:
            cam = np.zeros((height, width))
            for _ in range(rng.integers(1, 4)):
                y, x = rng.integers(0, height), rng.integers(0, width)
                cam[y, x] = rng.uniform(1, 3)
            cam = ndimage.gaussian_filter(cam, 1.0)
        gt_x0, gt_y0 = rng.integers(0, width), rng.integers(0, height)
        gt = np.array([[gt_x0, gt_y0, rng.integers(gt_x0 + 1, width + 1), rng.integers(gt_y0 + 1, height + 1)],
                       [0, 0, width, height]], dtype=np.float64)[: rng.integers(1, 3)]
        yield cam, gt


@pytest.mark.parametrize("normalization", ["max", "minmax"])
def test_fast_sweep_equals_reference_on_random_maps(normalization):
    thresholds = threshold_list(100)
    for cam, gt in _random_maps(160, seed=1 if normalization == "max" else 2):
        normalized = normalize_cams(cam[None], normalization)[0]
        fast, reference = sweep_boxes(normalized, thresholds, gt), reference_sweep(normalized, thresholds, gt)
        np.testing.assert_array_equal(fast.largest, reference.largest)
        # best_match may pick another component of exactly equal IoU: compare the IoUs.
        np.testing.assert_array_equal(best_iou(fast.best_match, [gt] * 100), best_iou(reference.best_match, [gt] * 100))


def test_fast_sweep_equals_reference_at_1000_thresholds():
    thresholds = threshold_list(1000)
    for cam, gt in _random_maps(8, seed=5):
        for normalization in ("max", "minmax"):
            normalized = normalize_cams(cam[None], normalization)[0]
            fast, reference = sweep_boxes(normalized, thresholds, gt), reference_sweep(normalized, thresholds, gt)
            np.testing.assert_array_equal(fast.largest, reference.largest)
            np.testing.assert_array_equal(best_iou(fast.best_match, [gt] * 1000),
                                          best_iou(reference.best_match, [gt] * 1000))


def test_sweep_rejects_bad_inputs():
    with pytest.raises(ValueError, match="float32"):
        sweep_boxes(np.zeros((3, 3)), threshold_list(4), np.zeros((1, 4)))
    with pytest.raises(ValueError, match="strictly increasing"):
        sweep_boxes(np.zeros((3, 3), np.float32), np.array([0.5, 0.1], np.float32), np.zeros((1, 4)))
