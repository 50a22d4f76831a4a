"""Hand-computed checks of the box convention in bench/data/boxes.py."""

import numpy as np
import pytest

from bench.data.boxes import EMPTY_BOX, best_iou, box_area, mask_to_box, pairwise_iou, resize_boxes, xywh_to_xyxy


def iou(a, b) -> float:
    return float(pairwise_iou(np.array([a], float), np.array([b], float))[0, 0])


def test_box_area_half_open_no_plus_one():
    np.testing.assert_array_equal(box_area(np.array([[1, 2, 4, 6], [0, 0, 1, 1]])), [12.0, 1.0])


def test_box_area_inverted_box_is_zero():
    assert box_area(np.array([3, 0, 1, 2])) == 0.0


def test_iou_partial_overlap_one_seventh():
    # intersection [1,1,2,2] = 1, union 4 + 4 - 1 = 7
    assert iou([0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(1 / 7)


def test_iou_containment_one_quarter():
    assert iou([0, 0, 4, 4], [1, 1, 3, 3]) == pytest.approx(4 / 16)


def test_iou_identical_is_one():
    assert iou([1.5, 2, 7, 9.25], [1.5, 2, 7, 9.25]) == 1.0


def test_iou_disjoint_is_zero():
    assert iou([0, 0, 1, 1], [2, 2, 3, 3]) == 0.0


def test_iou_touching_edges_is_zero():
    # Half-open: [0, 1) and [1, 2) share no pixel.
    assert iou([0, 0, 1, 1], [1, 0, 2, 1]) == 0.0
    assert iou([0, 0, 1, 1], [0, 1, 1, 2]) == 0.0
    assert iou([0, 0, 1, 1], [1, 1, 2, 2]) == 0.0  # corner


def test_iou_with_empty_box_is_zero():
    assert iou(EMPTY_BOX, [0, 0, 2, 2]) == 0.0
    assert iou(EMPTY_BOX, EMPTY_BOX) == 0.0  # union 0 -> 0, not NaN


def test_pairwise_iou_matrix():
    a = np.array([[0, 0, 2, 2], [0, 0, 2, 1]], float)  # (2, 4)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]], float)  # (3, 4)
    expected = np.array([[1 / 7, 1.0, 0.0], [0.0, 0.5, 0.0]])
    result = pairwise_iou(a, b)
    assert result.shape == (2, 3) and result.dtype == np.float64
    np.testing.assert_allclose(result, expected)


def test_best_iou_takes_best_gt_box():
    pred = np.array([[0, 0, 2, 2], [0, 0, 1, 1]], float)
    gts = [np.array([[5, 5, 6, 6], [0, 0, 2, 1]], float), np.zeros((0, 4))]
    np.testing.assert_allclose(best_iou(pred, gts), [0.5, 0.0])  # second image has no GT box


def test_best_iou_rejects_length_mismatch():
    with pytest.raises(ValueError, match="2 predicted boxes but 1"):
        best_iou(np.zeros((2, 4)), [np.zeros((1, 4))])


def test_xywh_to_xyxy():
    np.testing.assert_array_equal(xywh_to_xyxy(np.array([10, 20, 30, 40])), [10, 20, 40, 60])
    np.testing.assert_array_equal(
        xywh_to_xyxy(np.array([[0.5, 1, 2, 3], [0, 0, 0, 0]])), [[0.5, 1, 2.5, 4], [0, 0, 0, 0]]
    )


def test_resize_boxes_scales_x_by_width_y_by_height():
    # (H, W) = (100, 200) -> (50, 400): x * 2, y * 0.5
    np.testing.assert_allclose(resize_boxes(np.array([20, 10, 60, 30]), (100, 200), (50, 400)), [40, 5, 120, 15])


def test_resize_boxes_matches_pixel_upsampling():
    mask = np.zeros((3, 4), bool)
    mask[1, 2] = mask[2, 3] = True
    upsampled = np.kron(mask, np.ones((2, 3), bool))  # (6, 12): each pixel -> 2 x 3 block
    np.testing.assert_allclose(resize_boxes(mask_to_box(mask), (3, 4), (6, 12)), mask_to_box(upsampled))


def test_mask_to_box_single_pixel():
    mask = np.zeros((5, 6), bool)
    mask[2, 3] = True  # row 2, column 3
    box = mask_to_box(mask)
    assert box.dtype == np.float32
    np.testing.assert_array_equal(box, [3, 2, 4, 3])


def test_mask_to_box_spans_all_true_pixels():
    mask = np.zeros((5, 6), bool)
    mask[1, 4] = mask[3, 1] = True
    np.testing.assert_array_equal(mask_to_box(mask), [1, 1, 5, 4])
    np.testing.assert_array_equal(mask_to_box(np.ones((5, 6), bool)), [0, 0, 6, 5])  # whole image [0, 0, W, H]


def test_mask_to_box_empty_is_empty_box_copy():
    box = mask_to_box(np.zeros((3, 3), bool))
    np.testing.assert_array_equal(box, EMPTY_BOX)
    assert box is not EMPTY_BOX
