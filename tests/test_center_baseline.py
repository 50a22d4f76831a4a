"""The center baseline: hand-computed Gaussian values, symmetry, the paper's box on it, and one map for every image."""

import math

import numpy as np
import pytest
import torch

from bench.model.cam import upsample_cams
from bench.scoring.box_rule import boxes_from_cams
from bench.scoring.center_baseline import CENTER_SIGMA, center_map, center_maps
from bench.scoring.prediction import box_in_frames


def test_sigma_is_a_sixth_of_the_side():
    assert CENTER_SIGMA == 1 / 6  # docs/metrics.md states it; 2 sigma^2 = 1/18


def test_hand_computed_values_on_3x3():
    # Centres at u, v in {-1/3, 0, 1/3}; value exp(-18 (u^2 + v^2)).
    expected = np.array([[math.exp(-4), math.exp(-2), math.exp(-4)],
                         [math.exp(-2), 1.0, math.exp(-2)],
                         [math.exp(-4), math.exp(-2), math.exp(-4)]], dtype=np.float32)
    grid = center_map(3, 3)
    assert grid.dtype == np.float32 and grid.shape == (3, 3)
    np.testing.assert_array_equal(grid, expected)  # float64 maths rounded once, like these constants
    assert grid[1, 1] == 1.0


def test_hand_computed_values_on_even_and_non_square_frames():
    grid = center_map(4, 4)  # centres at -0.375, -0.125, 0.125, 0.375
    assert grid[0, 0] == np.float32(math.exp(-18 * 2 * 0.375**2))  # exp(-5.0625)
    assert grid[1, 1] == np.float32(math.exp(-18 * 2 * 0.125**2))  # exp(-0.5625): the 4 central pixels tie
    assert grid[0, 1] == np.float32(math.exp(-18 * (0.375**2 + 0.125**2)))  # exp(-2.8125)
    wide = center_map(2, 4)  # rows at v = -0.25, 0.25; columns as above: normalized, so an ellipse in pixels
    assert wide.shape == (2, 4)
    assert wide[0, 0] == np.float32(math.exp(-18 * (0.25**2 + 0.375**2)))  # exp(-3.65625)
    assert wide[1, 2] == np.float32(math.exp(-18 * (0.25**2 + 0.125**2)))


@pytest.mark.parametrize("size", [(3, 3), (4, 4), (7, 10), (100, 100)])
def test_symmetric_with_its_peak_at_the_centre(size):
    grid = center_map(*size)
    np.testing.assert_array_equal(grid, grid[::-1, :])  # up-down
    np.testing.assert_array_equal(grid, grid[:, ::-1])  # left-right
    if size[0] == size[1]:
        np.testing.assert_array_equal(grid, grid.T)
    height, width = size
    rows = [height // 2] if height % 2 else [height // 2 - 1, height // 2]
    cols = [width // 2] if width % 2 else [width // 2 - 1, width // 2]
    peak = grid.max()
    assert all(grid[r, c] == peak for r in rows for c in cols)
    assert np.count_nonzero(grid == peak) == len(rows) * len(cols)  # nowhere else
    assert (grid > 0).all() and peak <= 1.0


def test_paper_box_rule_on_100x100():
    # tau 0.2 of the max (max at the 4 central pixels, exp(-0.0009)): kept where
    # u^2 + v^2 <= (1/18) ln 5 + 0.00005 = 0.089464. On the middle rows (v = +-0.005) |u| <= 0.29906,
    # so column centres (j + 0.5) in [20.09, 79.91]: j = 20..79, box x in [20, 80). Same for rows.
    grid = center_map(100, 100)
    assert boxes_from_cams(grid[None], tau=0.2, normalization="max").tolist() == [[20, 20, 80, 80]]
    # side 2 sigma sqrt(2 ln 5) = 0.598 of the frame: the docs' number
    assert 2 * CENTER_SIGMA * math.sqrt(2 * math.log(5)) == pytest.approx(0.598, abs=5e-4)


def test_lower_tau_gives_a_larger_centred_box():
    grid = center_map(100, 100)[None]
    boxes = [boxes_from_cams(grid, tau=tau)[0] for tau in (0.8, 0.5, 0.2, 0.05)]
    sides = [box[2] - box[0] for box in boxes]
    assert sides == sorted(sides) and len(set(sides)) == 4
    assert all(box[0] + box[2] == 100 and box[1] + box[3] == 100 for box in boxes)  # centred


def test_map_method_gives_the_same_map_for_every_image_and_class():
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(3, 3, 56, 56, generator=generator)
    features = torch.randn(3, 8, 7, 7, generator=generator)
    classes = torch.tensor([[0, 4], [2, 2], [9, 1]])
    maps = center_maps(images, features, classes)
    assert maps.shape == (3, 2, 7, 7) and maps.dtype == torch.float32
    expected = torch.from_numpy(center_map(7, 7))
    assert all(torch.equal(maps[b, m], expected) for b in range(3) for m in range(2))
    # the images and features do not matter
    other = center_maps(torch.zeros_like(images), -features, classes)
    assert torch.equal(maps, other)


def test_map_method_rejects_a_class_list_of_another_batch():
    with pytest.raises(ValueError, match=r"classes must have shape \(B, M\) with B = 2"):
        center_maps(torch.zeros(2, 3, 8, 8), torch.zeros(2, 4, 2, 2), torch.zeros(3, 2, dtype=torch.int64))


def test_scored_path_upsamples_the_feature_grid_map():
    # What evaluation scores: the (h, w) map upsampled bilinearly to the frame, then the box rule.
    features = torch.zeros(2, 4, 14, 14)
    maps = center_maps(torch.zeros(2, 3, 224, 224), features, torch.zeros(2, 2, dtype=torch.int64))
    framed, boxes = box_in_frames(maps, [(224, 224)] * 2, tau=0.2, normalization="max")
    upsampled = upsample_cams(maps[:1, :1], (224, 224))[0, 0].numpy()
    np.testing.assert_array_equal(framed[0][0], upsampled)
    assert (boxes == boxes[0, 0]).all()  # one box for every image and class
    x0, y0, x1, y1 = boxes[0, 0].tolist()
    assert x0 + x1 == 224 and y0 + y1 == 224 and x0 == y0  # centred, square
    # close to the full-resolution Gaussian's box (side 0.598 * 224 = 134): within two pixels per edge
    full = boxes_from_cams(center_map(224, 224)[None], tau=0.2)[0]
    assert np.abs(boxes[0, 0] - full).max() <= 2


@pytest.mark.parametrize("size", [(5, 5), (7, 7), (10, 10)])
def test_coarse_grids_keep_the_border_well_below_tau(size):
    # The reason for sigma = 1/6: the outermost pixel centres, which bilinear upsampling repeats to the
    # border, stay far below 0.2 of the peak, so the tau = 0.2 box never becomes the whole frame.
    grid = center_map(*size)
    assert grid[:, 0].max() / grid.max() < 0.06
    framed = upsample_cams(torch.from_numpy(grid)[None, None], (224, 224))[0].numpy()
    x0, _, x1, _ = boxes_from_cams(framed, tau=0.2)[0]
    assert 0 < x0 and x1 < 224


@pytest.mark.parametrize("height, width, sigma", [(0, 4, 0.2), (4, 2.5, 0.2), (4, 4, 0.0), (4, 4, float("nan"))])
def test_bad_arguments(height, width, sigma):
    with pytest.raises(ValueError, match="center_map"):
        center_map(height, width, sigma)
