"""The pointing game and its energy-based variant (bench.scoring.pointing_game), with hand-computed hits."""

import numpy as np
import pytest

from bench.scoring.map_checks import UnscorableMapError
from bench.scoring.pointing_game import (
    PointingMeter,
    boxes_mask,
    energy_share,
    maximum_point,
    pointing_hit,
    tolerance_pixels,
)


def test_tolerance_is_torchrays_15_px_at_vocs_500_px_scaled_to_the_longest_side():
    assert tolerance_pixels((500, 375)) == pytest.approx(15.0)
    assert tolerance_pixels((160, 160)) == pytest.approx(4.8)
    assert tolerance_pixels((224, 224)) == pytest.approx(6.72)
    assert tolerance_pixels((100, 300)) == pytest.approx(9.0)


def test_the_maximum_is_the_first_in_row_major_order_and_a_constant_map_has_none():
    assert maximum_point(np.array([[0.0, 2.0, 2.0], [2.0, 1.0, 0.0]])) == (0, 1)
    with pytest.raises(UnscorableMapError, match=r"image a\.png: constant map"):
        maximum_point(np.full((3, 3), 0.5), "a.png")
    with pytest.raises(UnscorableMapError, match=r"image b: expected a 2-D \(H, W\) map, got shape \(3,\)"):
        maximum_point(np.arange(3.0), "b")


def test_a_box_covers_the_pixels_whose_centre_it_holds():
    inside = boxes_mask(np.array([[1.0, 0.0, 3.0, 2.0], [2.4, 3.0, 3.6, 4.0]]), (4, 5))
    np.testing.assert_array_equal(inside.astype(int), [[0, 1, 1, 0, 0],
                                                       [0, 1, 1, 0, 0],
                                                       [0, 0, 0, 0, 0],
                                                       [0, 0, 1, 1, 0]])  # x centres 2.5 and 3.5 in [2.4, 3.6)


def test_a_hit_needs_an_object_pixel_strictly_within_the_tolerance():
    obj = np.zeros((10, 10), dtype=bool)
    obj[2, 7] = True
    # From (2, 2): distance 5 -> a miss at tolerance 5 (strict, as TorchRay), a hit at 5.1.
    assert not pointing_hit((2, 2), obj, 5.0) and pointing_hit((2, 2), obj, 5.1)
    # From (5, 3): dy 3, dx 4 -> distance 5 again.
    assert not pointing_hit((5, 3), obj, 5.0) and pointing_hit((5, 3), obj, 5.01)
    assert pointing_hit((2, 7), obj, 0.5)  # on the object
    assert not pointing_hit((0, 0), np.zeros((3, 3), dtype=bool), 100.0)  # no object: never a hit


def test_the_tolerance_scales_with_the_frame_the_mask_wins_over_the_box():
    # 160 x 160 frame: tolerance 4.8 px. The maximum at (10, 10); box from column 14 on.
    size = (160, 160)
    score_map = np.zeros(size)
    score_map[10, 10] = 1.0
    box = np.array([[14.0, 0.0, 40.0, 40.0]])  # nearest box pixel (10, 14): distance 4 < 4.8 -> hit
    far_box = np.array([[15.0, 0.0, 40.0, 40.0]])  # (10, 15): distance 5 > 4.8 -> miss
    meter = PointingMeter()
    assert meter.update(score_map, 0, box, None, "near")
    assert not meter.update(score_map, 0, far_box, None, "far")
    # The same far box at 224 x 224: tolerance 6.72 px -> a hit.
    wide = np.zeros((224, 224))
    wide[10, 10] = 1.0
    assert meter.update(wide, 1, far_box, None, "wide")
    # A mask wins over the box: the box holds the point, the mask is 6 px away -> a miss at 4.8 px.
    mask = np.zeros(size, dtype=bool)
    mask[10, 16:30] = True
    assert not meter.update(score_map, 1, np.array([[0.0, 0.0, 40.0, 40.0]]), mask, "masked")
    # Class 0: 1 hit of 2; class 1: 1 of 2 -> 50 %, averaged over classes (not images).
    assert meter.compute()["pointing_game"] == pytest.approx(50.0)
    meter.update(score_map, 1, box, None, "again")  # class 1 now 2 of 3: (1/2 + 2/3) / 2
    assert meter.compute()["pointing_game"] == pytest.approx(100 * (0.5 + 2 / 3) / 2)


def test_energy_share_is_the_relu_minmax_maps_mass_in_the_box():
    # Values -1, 1, 3, 5: ReLU -> 0, 1, 3, 5; min-max -> 0, 0.2, 0.6, 1. Box over the 2nd row: (0.6 + 1) / 1.8.
    score_map = np.array([[-1.0, 1.0], [3.0, 5.0]])
    inside = boxes_mask(np.array([[0.0, 1.0, 2.0, 2.0]]), (2, 2))
    assert energy_share(score_map, inside) == pytest.approx(1.6 / 1.8)
    # All positive: the min-max moves the lowest to 0. Values 1, 2, 3, 5 -> 0, 0.25, 0.5, 1: (0.5 + 1) / 1.75.
    assert energy_share(np.array([[1.0, 2.0], [3.0, 5.0]]), inside) == pytest.approx(1.5 / 1.75)
    # No positive value: no energy after the ReLU, its share counts 0, and the meter says how many.
    assert energy_share(np.array([[-1.0, -2.0], [-3.0, -4.0]]), inside, "z") == 0.0
    meter = PointingMeter()
    meter.update(score_map, 0, np.array([[0.0, 1.0, 2.0, 2.0]]), None)
    meter.update(score_map, 0, np.array([[0.0, 0.0, 2.0, 2.0]]), None)  # the whole frame: share 1
    assert meter.compute()["energy_pointing_game"] == pytest.approx(100 * (1.6 / 1.8 + 1.0) / 2)
    assert "3 % of the 2-px longest side, 0.06 px" in meter.describe() and "averaged over 1 class(es)" in meter.describe()
    assert "share 0" not in meter.describe()
    meter.update(-score_map - 10, 0, np.array([[0.0, 0.0, 2.0, 2.0]]), None)
    assert meter.compute()["energy_pointing_game"] == pytest.approx(100 * (1.6 / 1.8 + 1.0) / 3)
    assert meter.describe().endswith("mean over 3 images; 1 map(s) with no positive value, share 0")


def test_a_map_with_no_positive_value_still_points_and_counts_zero_energy():
    # A GAP CAM can be negative everywhere for the GT class: the pointing game still has its maximum (-1 at the
    # top left, inside the box), the energy share counts 0 for it instead of stopping the whole comparison.
    meter = PointingMeter()
    negative = np.array([[-1.0, -2.0], [-3.0, -4.0]])
    assert meter.update(negative, 0, np.array([[0.0, 0.0, 1.0, 1.0]]), None, "n") is True
    meter.update(np.array([[-1.0, 1.0], [3.0, 5.0]]), 1, np.array([[0.0, 1.0, 2.0, 2.0]]), None)
    scores = meter.compute()
    assert scores["energy_pointing_game"] == pytest.approx(100 * (0.0 + 1.6 / 1.8) / 2)
    assert scores["pointing_game"] == pytest.approx(100.0)
    assert meter.describe().endswith("; 1 map(s) with no positive value, share 0")
    assert meter.images == [("n", 0, True, 0.0), ("?", 1, True, pytest.approx(1.6 / 1.8))]  # per image, in order
