"""Faithfulness metrics (bench.scoring.faithfulness) on a model small enough to compute every value by hand.

The model reads one pixel P = (1, 1) of a 1-channel 4 x 4 image: logits ``(a x[P], 0)``, so the
probability of class 0 is ``sigmoid(a x[P])``. The image is 1 at P and 0 elsewhere.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

from bench.scoring.faithfulness import (
    ConfidenceChange,
    Deletion,
    FaithfulnessMetrics,
    Insertion,
    Road,
    curve_auc,
    removal_ranks,
    replaced_counts,
    summarize,
)
from bench.scoring.map_checks import UnscorableMapError


def sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


class OnePixel(nn.Module):
    """Logits ``(a x[:, 0, 1, 1], 0)``."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = a

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logit = self.a * images[:, 0, 1, 1]
        return torch.stack([logit, torch.zeros_like(logit)], dim=1)


def one_hot_image(value: float = 1.0) -> torch.Tensor:
    image = torch.zeros(1, 1, 4, 4)
    image[0, 0, 1, 1] = value
    return image


# Map 15 - (row-major index): P = (1, 1) is pixel 5, value 10, the 6th in decreasing order.
RAMP = (15.0 - torch.arange(16.0)).reshape(1, 4, 4)
# P the highest (20), the others 0..14 in row-major order.
P_FIRST = torch.cat([torch.arange(5.0), torch.tensor([20.0]), torch.arange(5.0, 15.0)]).reshape(1, 4, 4)
CLASS_0 = torch.tensor([0])


def test_pixels_are_ranked_by_decreasing_value_ties_in_row_major_order():
    np.testing.assert_array_equal(removal_ranks(np.array([[1.0, 3.0], [3.0, 0.0]])), [[2, 0], [1, 3]])
    assert removal_ranks(RAMP[0].numpy())[1, 1] == 5
    np.testing.assert_array_equal(replaced_counts(16, 4), [0, 4, 8, 12, 16])
    np.testing.assert_array_equal(replaced_counts(10, 4), [0, 2, 5, 8, 10])  # round(2.5) = 2: to even
    # Trapezoids: (1 + 1) / 2 * 0.5 + (1 + 0) / 2 * 0.5 = 0.75.
    assert curve_auc(np.array([1.0, 1.0, 0.0]), np.array([0.0, 0.5, 1.0])) == pytest.approx(0.75)


def test_deletion_auc_by_hand():
    # 4 steps of 4 pixels: P (6th) goes at step 2; the probability is sigmoid(2) until then, then sigmoid(0) = 0.5.
    # AUC over fractions 0, 1/4, .., 1: 1/4 (s + (s + 0.5) / 2 + 0.5 + 0.5), s = sigmoid(2).
    s = sigmoid(2.0)
    deletion = Deletion(steps=4)(OnePixel(2.0), one_hot_image(), CLASS_0, RAMP)
    assert deletion == pytest.approx([0.25 * (s + (s + 0.5) / 2 + 1.0)], rel=1e-6)
    curve = Deletion(steps=4).curves(OnePixel(2.0), one_hot_image(), CLASS_0, RAMP, ["p"])
    np.testing.assert_allclose(curve, [[s, s, 0.5, 0.5, 0.5]], rtol=1e-6)


def test_insertion_auc_by_hand():
    # Start: the image blurred by a 3 x 3 Gaussian of sigma 1; P is interior, so its blurred value is the kernel's
    # centre weight k0^2 with k0 = 1 / (1 + 2 exp(-1/2)) (the other pixels are 0). P comes back at step 2.
    k0 = 1.0 / (1.0 + 2.0 * math.exp(-0.5))
    blurred, s = sigmoid(2.0 * k0**2), sigmoid(2.0)
    insertion = Insertion(steps=4, blur_kernel=3, blur_sigma=1.0)(OnePixel(2.0), one_hot_image(), CLASS_0, RAMP)
    assert insertion == pytest.approx([0.25 * (blurred + (blurred + s) / 2 + 2 * s)], rel=1e-6)


def test_average_drop_and_increase_by_hand():
    # The ramp after ReLU and min-max gives P the weight 10 / 15: O = sigmoid(2 * 2/3), Y = sigmoid(2).
    drop, increase = ConfidenceChange()(OnePixel(2.0), one_hot_image(), CLASS_0, RAMP)
    y, o = sigmoid(2.0), sigmoid(4.0 / 3.0)
    assert drop == pytest.approx([(y - o) / y], rel=1e-5) and not increase[0]
    # P weighted 1 (the map's max): nothing changes, no drop, no increase (O > Y is strict).
    drop, increase = ConfidenceChange()(OnePixel(2.0), one_hot_image(), CLASS_0, P_FIRST)
    assert drop == pytest.approx([0.0], abs=1e-7) and not increase[0]
    # x[P] = -1: the weighted image is less negative, the probability rises: an increase, no drop.
    drop, increase = ConfidenceChange()(OnePixel(2.0), one_hot_image(-1.0), CLASS_0, RAMP)
    assert drop == [0.0] and increase[0]
    # No positive value: every weight 0 after the ReLU (the library's convention), the image becomes the mean colour:
    # O = sigmoid(0) = 0.5.
    drop, increase = ConfidenceChange()(OnePixel(2.0), one_hot_image(), CLASS_0, -1.0 - RAMP)
    assert drop == pytest.approx([(y - 0.5) / y], rel=1e-5) and not increase[0]
    assert summarize({"drop": np.array([0.1, 0.3]), "increase": np.array([1.0, 0.0])})["average_drop"] == (
        pytest.approx(20.0))


def test_road_by_hand():
    # MoRF removes P (the most relevant) at every percentile; every other pixel is 0, so the imputation of P is
    # 0 plus the library's N(0, 0.01^2) noise: logit 4 * 0.01 z, probability 0.5 +- 0.01. Change: 0.5 - sigmoid(4).
    morf = Road(most_relevant_first=True)(OnePixel(4.0), one_hot_image(), CLASS_0, P_FIRST)
    assert morf == pytest.approx([0.5 - sigmoid(4.0)], abs=0.02)
    assert Road(seed=0)(OnePixel(4.0), one_hot_image(), CLASS_0, P_FIRST) == morf  # seeded: the same again
    # LeRF keeps the most relevant pixels, P among them: the logit is untouched, the change exactly 0.
    lerf = Road(most_relevant_first=False)(OnePixel(4.0), one_hot_image(), CLASS_0, P_FIRST)
    assert lerf.tolist() == [0.0]


def test_every_metric_refuses_a_map_it_cannot_order_naming_the_image():
    model, image = OnePixel(2.0), one_hot_image()
    metrics = FaithfulnessMetrics(Deletion(steps=4), Insertion(steps=4, blur_kernel=3, blur_sigma=1.0))
    with pytest.raises(UnscorableMapError, match=r"image bird_3\.jpg: constant map \(every value 0\)"):
        metrics(model, image, CLASS_0, torch.zeros(1, 4, 4), ["bird_3.jpg"])
    nan = RAMP.clone()
    nan[0, 2, 2] = float("nan")
    with pytest.raises(UnscorableMapError, match=r"image x: 1 NaN or inf value\(s\) out of 16"):
        Deletion(steps=4)(model, image, CLASS_0, nan, ["x"])
    with pytest.raises(UnscorableMapError, match=r"expected a map of shape \(4, 4\) \(the image's\), got \(2, 8\)"):
        Road()(model, image, CLASS_0, RAMP.reshape(1, 2, 8), ["x"])
    with pytest.raises(ValueError, match="steps 0: expected a whole number >= 1"):
        Deletion(steps=0)
