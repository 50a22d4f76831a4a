"""Hand-computed checks of the localization metrics (bench/scoring/fixed_tau_metrics.py)."""

import numpy as np
import pytest

from bench.scoring.fixed_tau_metrics import (
    METRIC_KEYS,
    LocalizationMeter,
    LocalizationOutcome,
    classification_hits,
    localization_outcomes,
)

GT = [0, 0, 10, 10]

# Five hand-made images (label i for image i); every GT box is [0, 0, 10, 10]
# except image 2, whose first GT box is far away and only the second matches.
TOPK = np.array(
    [
        [0, 5, 6, 7, 8],  # 0: top-1 correct
        [5, 1, 6, 7, 8],  # 1: top-1 wrong, top-5 correct
        [2, 5, 6, 7, 8],  # 2: top-1 correct
        [5, 6, 7, 3, 9],  # 3: top-1 wrong, top-5 correct (4th)
        [9, 8, 7, 6, 5],  # 4: both wrong
    ]
)
LABELS = np.array([0, 1, 2, 3, 4])
TOP1_BOXES = np.array(
    [
        [0, 0, 10, 5],  # IoU 50 / 100 = 0.5 exactly: counts
        [0, 0, 10, 10],  # IoU 1, but the class is wrong
        [0, 0, 10, 10],  # IoU 0 with the first GT box, 1 with the second
        [20, 20, 30, 30],  # IoU 0
        [0, 0, 4, 10],  # IoU 0.4
    ],
    float,
)
GT_CLASS_BOXES = np.array(
    [
        [0, 0, 10, 5],  # 0.5
        [0, 0, 10, 10],  # 1
        [0, 0, 10, 10],  # 1 (second GT box)
        [0, 0, 5, 5],  # 25 / 100 = 0.25
        [0, 0, 10, 10],  # 1
    ],
    float,
)
GT_BOXES = [np.array([GT], float) for _ in range(5)]
GT_BOXES[2] = np.array([[50, 50, 60, 60], GT], float)


def outcomes(index=slice(None), **kwargs) -> LocalizationOutcome:
    gt_boxes = [GT_BOXES[i] for i in range(5)[index]]
    return localization_outcomes(
        TOPK[index], LABELS[index], TOP1_BOXES[index], GT_CLASS_BOXES[index], gt_boxes, **kwargs
    )


def test_per_image_outcomes():
    outcome = outcomes()
    np.testing.assert_array_equal(outcome.top1_correct, [True, False, True, False, False])
    np.testing.assert_array_equal(outcome.top5_correct, [True, True, True, True, False])
    np.testing.assert_allclose(outcome.top1_iou, [0.5, 1.0, 1.0, 0.0, 0.4])
    np.testing.assert_allclose(outcome.gt_known_iou, [0.5, 1.0, 1.0, 0.25, 1.0])
    np.testing.assert_array_equal(outcome.top1_loc, [True, False, True, False, False])
    np.testing.assert_array_equal(outcome.top5_loc, [True, True, True, False, False])
    np.testing.assert_array_equal(outcome.gt_known_loc, [True, True, True, False, True])


def test_iou_exactly_half_counts_as_correct():
    outcome = outcomes(slice(0, 1))
    assert outcome.top1_iou[0] == 0.5
    assert outcome.top1_loc[0] and outcome.top5_loc[0] and outcome.gt_known_loc[0]
    # The same IoU misses a stricter threshold.
    assert not outcomes(slice(0, 1), iou_threshold=0.6).top1_loc[0]


def test_meter_hand_computed_percentages():
    meter = LocalizationMeter()
    meter.update(outcomes())
    metrics = meter.compute()
    assert tuple(metrics) == METRIC_KEYS
    assert metrics["num_images"] == 5 and isinstance(metrics["num_images"], int)
    assert metrics["top1_cls_error"] == pytest.approx(100 * 3 / 5)
    assert metrics["top5_cls_error"] == pytest.approx(100 * 1 / 5)
    assert metrics["top1_loc_error"] == pytest.approx(100 * 3 / 5)
    assert metrics["top5_loc_error"] == pytest.approx(100 * 2 / 5)
    assert metrics["gt_known_loc_acc"] == pytest.approx(100 * 4 / 5)
    assert metrics["mean_iou"] == pytest.approx((0.5 + 1 + 1 + 0 + 0.4) / 5)  # a fraction, not a percentage


def test_meter_two_batches_equal_one_batch():
    whole = LocalizationMeter()
    whole.update(outcomes())
    split = LocalizationMeter()
    split.update(outcomes(slice(0, 2)))
    split.update(outcomes(slice(2, 5)))
    expected = whole.compute()
    assert split.compute() == pytest.approx(expected)
    assert split.compute()["num_images"] == 5


def test_meter_four_images_quarters():
    meter = LocalizationMeter()
    meter.update(outcomes(slice(1, 5)))  # images 1..4
    metrics = meter.compute()
    assert metrics["top1_cls_error"] == pytest.approx(100 * 3 / 4)
    assert metrics["top1_loc_error"] == pytest.approx(100 * 3 / 4)
    assert metrics["top5_loc_error"] == pytest.approx(100 * 2 / 4)
    assert metrics["gt_known_loc_acc"] == pytest.approx(100 * 3 / 4)
    assert metrics["mean_iou"] == pytest.approx(2.4 / 4)


def test_meter_without_images_raises():
    meter = LocalizationMeter()
    with pytest.raises(ValueError, match="before any image"):
        meter.compute()
    meter.update(outcomes(slice(0, 0)))  # an empty batch adds nothing
    with pytest.raises(ValueError):
        meter.compute()


def test_meter_reset():
    meter = LocalizationMeter()
    meter.update(outcomes())
    meter.reset()
    meter.update(outcomes(slice(0, 1)))
    assert meter.compute()["num_images"] == 1


def test_top5_uses_first_five_columns_only():
    topk = np.array([[9, 8, 7, 6, 5, 0]])  # label 0 is 6th
    outcome = localization_outcomes(topk, np.array([0]), [GT], [GT], [np.array([GT], float)])
    assert not outcome.top5_correct[0] and not outcome.top5_loc[0]
    assert outcome.gt_known_loc[0]


def test_classification_hits_by_hand():
    # Labels 3, 4, 0: top-1 hit; hit only in the 5th column; 6th column only (a miss for top-5 too).
    topk = np.array([[3, 1, 2, 5, 6, 7], [1, 2, 3, 5, 4, 0], [1, 2, 3, 4, 5, 0]])
    top1, top5 = classification_hits(topk, np.array([3, 4, 0]))
    assert top1.tolist() == [True, False, False]
    assert top5.tolist() == [True, True, False]
    with pytest.raises(ValueError, match="labels must have shape"):
        classification_hits(topk, np.array([3, 4]))


def test_k_equal_one_top5_is_top1():
    outcome = localization_outcomes(TOPK[:, :1], LABELS, TOP1_BOXES, GT_CLASS_BOXES, GT_BOXES)
    np.testing.assert_array_equal(outcome.top5_correct, outcome.top1_correct)


def test_image_without_gt_box_has_iou_zero():
    outcome = localization_outcomes(np.array([[0]]), np.array([0]), [GT], [GT], [np.zeros((0, 4))])
    assert outcome.top1_iou[0] == 0.0 and not outcome.gt_known_loc[0]


def test_bad_inputs():
    with pytest.raises(ValueError, match="labels must have shape"):
        localization_outcomes(TOPK, LABELS[:3], TOP1_BOXES, GT_CLASS_BOXES, GT_BOXES)
    with pytest.raises(ValueError, match="gt_boxes must hold one array per image"):
        localization_outcomes(TOPK, LABELS, TOP1_BOXES, GT_CLASS_BOXES, GT_BOXES[:4])
    with pytest.raises(ValueError, match="top1_boxes must have shape"):
        localization_outcomes(TOPK, LABELS, TOP1_BOXES[:, :3], GT_CLASS_BOXES, GT_BOXES)
    with pytest.raises(ValueError, match="topk_classes must have shape"):
        localization_outcomes(LABELS, LABELS, TOP1_BOXES, GT_CLASS_BOXES, GT_BOXES)
    with pytest.raises(ValueError, match="iou_threshold"):
        outcomes(iou_threshold=1.5)


def test_outcome_rejects_mismatched_lengths():
    good = outcomes()
    with pytest.raises(ValueError, match="same shape"):
        LocalizationOutcome(**{**good.__dict__, "top5_loc": good.top5_loc[:3]})
