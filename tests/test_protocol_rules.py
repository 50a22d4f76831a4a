"""One hand-computed case per rule of the localization protocol, each chosen so that it fails if the rule changes.

The rules (bench/scoring/box_rule.py, bench/scoring/fixed_tau_metrics.py, bench/scoring/threshold_sweep.py,
bench/scoring/threshold_free_metrics.py, bench/scoring/prediction.py, bench/scoring/evaluation.py):

* tau = 0.2 of the CAM's max by default, kept pixels ``>= tau``;
* "max" normalization by default (``M / max``), "minmax" on request;
* components are 8-connected; the box is the largest component's (most pixels);
* a box is correct at IoU >= 0.5 with ANY ground-truth box (best match);
  MaxBoxAccV2 uses IoU >= 0.3, 0.5 and 0.7;
* top-5 = the first 5 predicted classes;
* GT-known loc and top-5 loc box the ground-truth class's CAM, top-1 loc the top-1 class's CAM.

Every IoU below is a ratio of whole pixel areas, so it is exact in floating point
(e.g. 45 / 100 == 0.45), and a case sitting on a boundary tests that boundary.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.config import EvalConfig, ModelConfig
from bench.data.samples import Sample
from bench.model.camnet import CamNet
from bench.scoring.box_rule import boxes_from_cams, normalize_cams
from bench.scoring.evaluation import score_batch
from bench.scoring.fixed_tau_metrics import LocalizationMeter, localization_outcomes
from bench.scoring.image_rows import PREDICTION_COLUMNS
from bench.scoring.threshold_free_metrics import ThresholdSweepMeter
from bench.scoring.threshold_sweep import reference_sweep, sweep_boxes, threshold_list

GT = np.array([[0.0, 0.0, 10.0, 10.0]])  # area 100


def both_sweeps(normalized, thresholds, gt_boxes):
    """The fast sweep and the reference loop: every sweep rule must hold in both."""
    thresholds = np.asarray(thresholds, dtype=np.float32)
    return sweep_boxes(normalized, thresholds, gt_boxes), reference_sweep(normalized, thresholds, gt_boxes)


# ----------------------------------------------------------------------------- the evaluation, on known CAMs

SIZE = 32


def colour_model(weight, bias) -> CamNet:
    """Features = the image's three channels (identity backbone); class c's CAM = ``weight[c] . pixel``."""
    weight = torch.as_tensor(weight, dtype=torch.float32)
    model = CamNet(torch.nn.Identity(), num_features=3, num_classes=len(weight), config=ModelConfig(pooling="gap"),
                   mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    with torch.no_grad():
        model.classifier.weight.copy_(weight)
        model.classifier.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    return model


def score(model, images, labels, gt_boxes, config=None):
    """The evaluation of one batch of ``images (B, 3, S, S)`` (the input frame), with the default protocol."""
    size = tuple(images.shape[-2:])
    samples = [Sample(f"image{i}", Path(f"image{i}.png"), label, np.asarray(box, dtype=np.float32), size, ())
               for i, (label, box) in enumerate(zip(labels, gt_boxes))]  # the files are never read
    batch = {"image": images, "label": torch.tensor(labels), "index": torch.arange(len(labels))}
    return score_batch(model, batch, samples, config or EvalConfig(gallery_size=0), torch.device("cpu"))


def image_with(*rectangles, size=SIZE):
    """``(3, size, size)`` black image with each ``(channel, x0, y0, x1, y1)`` rectangle at 1."""
    image = torch.zeros(3, size, size)
    for channel, x0, y0, x1, y1 in rectangles:
        image[channel, y0:y1, x0:x1] = 1.0
    return image


def columns(*values):
    """``(1, 3, W, W)`` image whose red channel repeats ``values`` (W of them) on every row, the rest 0."""
    image = torch.zeros(1, 3, len(values), len(values))
    image[0, 0] = torch.tensor(values, dtype=torch.float32)
    return image


def top1_box(scored):
    return [float(value) for value in scored.rows[0][PREDICTION_COLUMNS.index("top1_box")].split()]


# ----------------------------------------------------------------------------- tau and normalization


def test_default_tau_keeps_exactly_a_fifth_of_the_max_and_not_less():
    # max 10: the default keeps >= 2. The 2 joins the peak; the 1.99 does not, so the 5 stays a separate pixel.
    # tau 0.21 or a strict ">" would drop the 2 (box [2, 0, 3, 1)); tau 0.19 or an absolute threshold would
    # keep the 1.99 and join the 5 (box [1, 0, 5, 1)).
    cam = np.array([[[0.0, 2.0, 10.0, 1.99, 5.0, 0.0]]])  # (1, 1, 6)
    np.testing.assert_array_equal(boxes_from_cams(cam)[0], [1, 0, 3, 1])
    # The evaluation's default config: the same profile down every row of a 6 x 6 red channel. Columns 1-2 make
    # one 12-pixel stripe, column 4 a 6-pixel one.
    model = colour_model(torch.eye(3), torch.zeros(3))
    scored = score(model, columns(0.0, 0.2, 1.0, 0.199, 0.5, 0.0), [0], [[[1, 0, 3, 6]]])
    assert top1_box(scored) == [1, 0, 3, 6] and scored.outcome.gt_known_iou.tolist() == [1.0]


def test_max_and_minmax_normalizations_give_different_boxes():
    # max = 10, min = -6. "max": keep M >= 0.2 * 10 = 2 -> the 3 and the 10. "minmax": keep (M + 6) / 16 >= 0.2,
    # i.e. M >= -2.8 -> all but the -6.
    cam = np.array([[[-6.0, 1.0, 0.0, 3.0, 10.0]]])
    np.testing.assert_array_equal(normalize_cams(cam, "minmax")[0], [[0, 7 / 16, 6 / 16, 9 / 16, 1]])
    np.testing.assert_array_equal(boxes_from_cams(cam, 0.2, "max")[0], [3, 0, 5, 1])
    np.testing.assert_array_equal(boxes_from_cams(cam, 0.2, "minmax")[0], [1, 0, 5, 1])
    # The evaluation: "max" by default, "minmax" when asked (the profile down every row of a 5 x 5 map).
    model, image = colour_model(torch.eye(3), torch.zeros(3)), columns(-0.6, 0.1, 0.0, 0.3, 1.0)
    assert top1_box(score(model, image, [0], [[[0, 0, 5, 5]]])) == [3, 0, 5, 5]
    minmax = EvalConfig(gallery_size=0, normalization="minmax")
    assert top1_box(score(model, image, [0], [[[0, 0, 5, 5]]], minmax)) == [1, 0, 5, 5]


# ----------------------------------------------------------------------------- components


def test_a_diagonal_only_pair_is_one_component():
    # (0, 0) and (1, 1) touch only by a corner; (3, 5) is alone. 8-connected: the pair (2 pixels) is the largest
    # component, box [0, 0, 2, 2). 4-connected: three single pixels, the first in raster order wins, [0, 0, 1, 1).
    cam = np.zeros((4, 6))
    cam[0, 0] = cam[1, 1] = cam[3, 5] = 1.0
    np.testing.assert_array_equal(boxes_from_cams(cam[None])[0], [0, 0, 2, 2])
    normalized = normalize_cams(cam[None], "max")[0]
    pair = np.array([[0.0, 0.0, 2.0, 2.0]])
    for result in both_sweeps(normalized, [0.5], pair):
        np.testing.assert_array_equal(result.largest, [[0, 0, 2, 2]])
        np.testing.assert_array_equal(result.best_match, [[0, 0, 2, 2]])  # 4-connected: a pixel, IoU 1/4


def test_the_largest_component_is_the_one_with_most_pixels():
    # A: a diagonal of 4 pixels holding the peak, first in raster order, box [0, 0, 4, 4) of area 16.
    # B: a 2 x 3 block of 6 pixels, box [5, 3, 8, 5) of area 6. Most pixels: B. (Largest box, highest peak,
    # first component or smallest component would all give A; the box of all kept pixels is [0, 0, 8, 5).)
    cam = np.zeros((6, 8))
    cam[0, 0] = 10.0
    cam[1, 1] = cam[2, 2] = cam[3, 3] = 5.0
    cam[3:5, 5:8] = 5.0
    np.testing.assert_array_equal(boxes_from_cams(cam[None])[0], [5, 3, 8, 5])
    normalized = normalize_cams(cam[None], "max")[0]
    for result in both_sweeps(normalized, [0.2], GT):
        np.testing.assert_array_equal(result.largest, [[5, 3, 8, 5]])


# ----------------------------------------------------------------------------- IoU and ground-truth boxes


def test_iou_of_exactly_one_half_counts_and_0_45_does_not():
    topk = np.array([[0], [0]])
    labels = np.array([0, 0])
    boxes = np.array([[0, 0, 10, 5], [0, 0, 9, 5]], dtype=float)  # IoU 50 / 100 and 45 / 100 with GT
    outcome = localization_outcomes(topk, labels, boxes, boxes, [GT, GT])
    assert outcome.top1_iou.tolist() == [0.5, 0.45]
    assert outcome.top1_loc.tolist() == outcome.top5_loc.tolist() == outcome.gt_known_loc.tolist() == [True, False]
    meter = LocalizationMeter()
    meter.update(outcome)
    metrics = meter.compute()
    assert (metrics["top1_loc_error"], metrics["top5_loc_error"], metrics["gt_known_loc_acc"]) == (50.0, 50.0, 50.0)


def test_box_acc_deltas_count_their_boundary():
    # threshold 0 keeps the whole 10 x 10 map, so every image's box is [0, 0, 10, 10); its ground-truth boxes
    # give IoU 0.7, 0.3, 0.5 and 0.45 exactly.
    ground_truths = [np.array([[0.0, 0.0, 10.0, height]]) for height in (7.0, 3.0, 5.0)] + [np.array([[0, 0, 9, 5.0]])]
    meter = ThresholdSweepMeter(threshold_list(1))
    whole = normalize_cams(np.ones((1, 10, 10)), "max")[0]
    meter.update([whole] * 4, ground_truths, np.ones(4, bool), np.ones(4, bool))
    result = meter.compute()
    assert result["max_box_acc"] == 50.0  # 0.7 and 0.5 reach 0.5; 0.45 and 0.3 do not
    assert result["max_box_acc_v2_per_delta"] == {"0.3": 100.0, "0.5": 50.0, "0.7": 25.0}
    assert result["max_box_acc_v2"] == pytest.approx(175 / 3)
    assert meter.at(0) == {"top1_loc_error": 50.0, "top5_loc_error": 50.0, "gt_known_loc_acc": 50.0}


def test_a_box_is_scored_against_its_best_matching_ground_truth_box():
    # Three GT boxes; the prediction [0, 0, 10, 5) has IoU 0 with the first, 50 / 100 with the second and
    # 50 / 200 with the third. The best (1/2) counts; the first (0), the last or the mean (1/4) would not.
    ground_truth = np.array([[50, 50, 60, 60], [0, 0, 10, 10], [0, 0, 10, 20]], dtype=float)
    box = np.array([[0, 0, 10, 5]], dtype=float)
    outcome = localization_outcomes(np.array([[0]]), np.array([0]), box, box, [ground_truth])
    assert outcome.top1_iou.tolist() == [0.5] and outcome.gt_known_loc.tolist() == [True]
    # The sweep: two blobs, the larger one (6 pixels, first in raster order, so it would win a tie of IoU 0)
    # unmatched, the 2-pixel one matching the second GT box exactly.
    cam = np.zeros((6, 8), dtype=np.float32)
    cam[0:2, 0:3] = 1.0  # box [0, 0, 3, 2)
    cam[4, 6:8] = 1.0  # box [6, 4, 8, 5)
    ground_truth = np.array([[40.0, 40.0, 50.0, 50.0], [6.0, 4.0, 8.0, 5.0]])
    for result in both_sweeps(cam, [0.5], ground_truth):
        np.testing.assert_array_equal(result.largest, [[0, 0, 3, 2]])
        np.testing.assert_array_equal(result.best_match, [[6, 4, 8, 5]])
    meter = ThresholdSweepMeter(np.array([0.5], dtype=np.float32))
    meter.update([cam], [ground_truth], np.ones(1, bool), np.ones(1, bool))
    assert meter.compute()["max_box_acc_v2"] == 100.0 and meter.compute()["max_box_acc"] == 0.0


# ----------------------------------------------------------------------------- top-5 and the GT class's map


def test_the_true_class_at_rank_5_counts_for_top5_and_at_rank_6_does_not():
    topk = np.array([[9, 8, 7, 6, 0, 5], [9, 8, 7, 6, 5, 0]])  # label 0 5th, then 6th
    labels = np.array([0, 0])
    boxes = np.repeat(GT, 2, axis=0)
    outcome = localization_outcomes(topk, labels, boxes, boxes, [GT, GT])
    assert outcome.top5_correct.tolist() == [True, False]
    assert outcome.top5_loc.tolist() == [True, False] and outcome.gt_known_loc.tolist() == [True, True]


def test_evaluation_takes_five_classes_for_top5():
    # Seven classes that all look at the red channel, ranked by their bias: class c is at rank c + 1 and every
    # class's CAM is the red object, which is the GT box. Label 4 (rank 5) is a top-5 hit, label 5 (rank 6) not.
    model = colour_model([[1.0, 0.0, 0.0]] * 7, [6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    red = image_with((0, 4, 4, 20, 12))
    gt = np.array([[4.0, 4.0, 20.0, 12.0]])
    outcome = score(model, torch.stack([red, red]), [4, 5], [gt, gt]).outcome
    assert outcome.top5_correct.tolist() == [True, False]
    assert outcome.top5_loc.tolist() == [True, False]
    assert outcome.gt_known_loc.tolist() == [True, True] and outcome.top1_iou.tolist() == [1.0, 1.0]


def test_gt_known_and_top5_box_the_ground_truth_class_map():
    # Class c = colour channel c. Both images are labelled red (class 0).
    # 1: a blue square exactly on the GT box and no red: top-1 (blue) has IoU 1, the red map is empty (IoU 0).
    # 2: green (384 px) > blue (192 px) > red (16 px, on the GT box): red ranks 3rd; the top-1 (green) and 2nd
    #    (blue) maps miss the GT box, the red map hits it exactly.
    model = colour_model(torch.eye(3), [0.002, 0.001, 0.0])  # biases only break the tie of two empty channels
    gt = np.array([[24.0, 24.0, 28.0, 28.0]])
    first = image_with((2, 24, 24, 28, 28))
    second = image_with((1, 0, 0, 32, 12), (2, 0, 20, 16, 32), (0, 24, 24, 28, 28))
    scored = score(model, torch.stack([first, second]), [0, 0], [gt, gt])
    outcome = scored.outcome
    assert outcome.top1_iou.tolist() == [1.0, 0.0] and outcome.gt_known_iou.tolist() == [0.0, 1.0]
    assert outcome.top1_loc.tolist() == [False, False]
    assert outcome.gt_known_loc.tolist() == [False, True]
    assert outcome.top5_loc.tolist() == [False, True]
    top5 = PREDICTION_COLUMNS.index("top5_classes")
    assert [row[top5] for row in scored.rows] == ["2 0 1", "1 2 0"]  # 3 classes exist, best first
