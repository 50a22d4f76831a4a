"""Hand-computed checks of CAM normalization and the paper's box rule (bench/scoring/box_rule.py)."""

import numpy as np
import pytest

from bench.data.boxes import EMPTY_BOX
from bench.scoring.box_rule import NORMALIZATIONS, boxes_from_cams, largest_component_box, normalize_cams


def one_box(cam, tau=0.2, normalization="max") -> np.ndarray:
    return boxes_from_cams(np.asarray(cam, dtype=np.float64)[None], tau, normalization)[0]


def test_two_components_box_of_the_larger():
    cam = np.zeros((6, 8))
    cam[0:2, 0:2] = 1.0  # 4 pixels, comes first in raster order
    cam[3:6, 4:7] = 0.5  # 9 pixels, both above 0.2 * max = 0.2
    np.testing.assert_array_equal(one_box(cam), [4, 3, 7, 6])


def test_component_touching_the_border():
    cam = np.zeros((6, 8))
    cam[4:6, 6:8] = 2.0  # bottom-right corner block
    cam[0, 0] = 1.0  # a smaller component
    np.testing.assert_array_equal(one_box(cam), [6, 4, 8, 6])  # x1 = W, y1 = H


def test_constant_positive_map():
    cam = np.full((4, 5), 3.0)
    np.testing.assert_array_equal(normalize_cams(cam[None], "max")[0], np.ones((4, 5)))
    np.testing.assert_array_equal(normalize_cams(cam[None], "minmax")[0], np.zeros((4, 5)))
    np.testing.assert_array_equal(one_box(cam, 0.2, "max"), [0, 0, 5, 4])  # every pixel is at 100% of the max
    np.testing.assert_array_equal(one_box(cam, 1.0, "max"), [0, 0, 5, 4])
    np.testing.assert_array_equal(one_box(cam, 0.2, "minmax"), EMPTY_BOX)  # no contrast, no evidence
    np.testing.assert_array_equal(one_box(cam, 0.0, "minmax"), [0, 0, 5, 4])


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_all_zero_map(normalization):
    cam = np.zeros((4, 5))
    np.testing.assert_array_equal(normalize_cams(cam[None], normalization)[0], np.zeros((4, 5)))
    np.testing.assert_array_equal(one_box(cam, 0.2, normalization), EMPTY_BOX)
    np.testing.assert_array_equal(one_box(cam, 0.0, normalization), [0, 0, 5, 4])  # tau = 0 keeps everything


def test_all_negative_map_max_normalizes_to_zeros():
    cam = np.array([[-1.0, -3.0], [-2.0, -0.5]])
    np.testing.assert_array_equal(normalize_cams(cam[None], "max")[0], np.zeros((2, 2)))
    np.testing.assert_array_equal(one_box(cam, 0.2, "max"), EMPTY_BOX)


def test_tau_times_max_is_included():
    # max 10, tau 0.2 -> keep values >= 2: the 2 is kept, the 1.99 is not,
    # so the 5 at column 4 is a separate (smaller) component.
    cam = np.array([[0.0, 2.0, 10.0, 1.99, 5.0, 0.0]])
    np.testing.assert_array_equal(one_box(cam, 0.2), [1, 0, 3, 1])
    # 7 / 10 is not exactly representable; the pixel at 0.7 * max is still kept.
    cam = np.array([[0.0, 7.0, 10.0, 6.99, 8.0, 0.0]])
    np.testing.assert_array_equal(one_box(cam, 0.7), [1, 0, 3, 1])


def test_eight_connectivity_joins_diagonals():
    cam = np.zeros((4, 7))
    cam[0, 0] = cam[1, 1] = cam[2, 2] = 1.0  # a diagonal chain: one component of 3 pixels
    cam[0, 5] = cam[0, 6] = 1.0  # 2 pixels: would win under 4-connectivity
    np.testing.assert_array_equal(one_box(cam), [0, 0, 3, 3])


def test_minmax_and_max_select_different_regions():
    cam = np.array([[-6.0, 1.0, 0.0, 3.0, 10.0]])
    np.testing.assert_allclose(normalize_cams(cam[None], "max")[0], [[-0.6, 0.1, 0.0, 0.3, 1.0]], rtol=1e-6)
    # (M + 6) / 16
    np.testing.assert_array_equal(normalize_cams(cam[None], "minmax")[0], [[0.0, 7 / 16, 6 / 16, 9 / 16, 1.0]])
    np.testing.assert_array_equal(one_box(cam, 0.2, "max"), [3, 0, 5, 1])  # keeps 3 and 10 (>= 2)
    np.testing.assert_array_equal(one_box(cam, 0.2, "minmax"), [1, 0, 5, 1])  # keeps all but the min


def test_normalize_max_keeps_negative_values_and_dtype():
    result = normalize_cams(np.array([[[-5, 10], [0, 5]]]), "max")  # int input is fine
    assert result.dtype == np.float32 and result.shape == (1, 2, 2)
    np.testing.assert_array_equal(result[0], [[-0.5, 1.0], [0.0, 0.5]])


def test_tie_break_first_pixel_in_raster_order():
    mask = np.zeros((3, 5), bool)
    mask[0, 3:5] = True  # 2 pixels, first pixel at raster index 3
    mask[1:3, 0] = True  # 2 pixels, first pixel at raster index 5
    np.testing.assert_array_equal(largest_component_box(mask), [3, 0, 5, 1])
    mask = np.zeros((3, 5), bool)
    mask[0:2, 4] = True  # first pixel at raster index 4, though it reaches further down
    mask[1, 0:2] = True  # first pixel at raster index 5
    np.testing.assert_array_equal(largest_component_box(mask), [4, 0, 5, 2])


def test_largest_component_box_empty_mask():
    box = largest_component_box(np.zeros((3, 4), bool))
    assert box.dtype == np.float32
    np.testing.assert_array_equal(box, EMPTY_BOX)


def test_batch_equals_one_map_at_a_time():
    rng = np.random.default_rng(0)
    cams = rng.standard_normal((19, 9, 11))  # more than one internal chunk
    for normalization in NORMALIZATIONS:
        boxes = boxes_from_cams(cams, 0.5, normalization)
        assert boxes.shape == (19, 4) and boxes.dtype == np.float32
        for cam, box in zip(cams, boxes):
            mask = normalize_cams(cam[None], normalization)[0] >= np.float32(0.5)
            np.testing.assert_array_equal(box, largest_component_box(mask))


def test_no_maps():
    boxes = boxes_from_cams(np.zeros((0, 7, 7)))
    assert boxes.shape == (0, 4) and boxes.dtype == np.float32


@pytest.mark.parametrize("tau", [-0.1, 1.5, float("nan")])
def test_bad_tau(tau):
    with pytest.raises(ValueError, match=r"tau must be a number in \[0, 1\].*tau="):
        boxes_from_cams(np.ones((1, 3, 3)), tau)


def test_bad_method():
    with pytest.raises(ValueError, match=r"method='mean'.*\('max', 'minmax'\)"):
        normalize_cams(np.ones((1, 3, 3)), "mean")
    with pytest.raises(ValueError, match="'mean'.*'minmax'"):
        boxes_from_cams(np.ones((1, 3, 3)), 0.2, "mean")


def test_non_finite_values_are_counted():
    cams = np.ones((2, 3, 3))
    cams[0, 0, 0] = cams[1, 2, 2] = np.nan
    cams[1, 0, 1] = np.inf
    with pytest.raises(ValueError, match="3 non-finite value"):
        normalize_cams(cams, "max")
    with pytest.raises(ValueError, match="3 non-finite value"):
        boxes_from_cams(cams)


def test_bad_shape():
    with pytest.raises(ValueError, match=r"shape \(N, H, W\)"):
        boxes_from_cams(np.ones((3, 3)))
