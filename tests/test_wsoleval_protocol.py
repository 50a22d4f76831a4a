"""eval.protocol: wsolevaluation, rule by rule on hand-made maps where each rule changes the answer.

Each test states the rule it pins down and what our own protocol ("bench")
gives on the same input, so a change to either rule fails here.
"""

import json

import numpy as np
import pytest
import torch
from helpers import TINY_CONFIG
from PIL import Image
from test_evaluate import identity_model, make_sample

from bench.commands.cli import main
from bench.config import ConfigError, EvalConfig
from bench.data.images import read_mask
from bench.data.samples import Sample
from bench.data.torch_dataset import WsolDataset, collate
from bench.run.pipeline import prepare_dataset
from bench.scoring import wsolevaluation_rules as wsol
from bench.scoring.box_rule import boxes_from_cams
from bench.scoring.evaluation import SweepMeters, evaluate
from bench.scoring.protocols import BenchProtocol, WsolevaluationProtocol, describe_protocol
from bench.scoring.threshold_free_metrics import PixelPrecisionMeter, half_open_box_ious
from bench.scoring.threshold_sweep import threshold_list

ONE_THRESHOLD = np.array([0.0])


def keys_cubic(distance: np.ndarray) -> np.ndarray:
    """The bicubic kernel OpenCV uses (Keys, a = -0.75)."""
    a, x = -0.75, np.abs(distance)
    near = (a + 2) * x**3 - (a + 3) * x**2 + 1
    far = a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


# ----------------------------------------------------------------------------- boxes


def test_ring_gives_v2_the_hole_border_as_an_extra_candidate_box():
    """A square ring: contours (RETR_TREE) give the outer border and the hole's border, each a box.

    GT = the hole's border box [5, 5, 15, 15]: the best candidate (V2) matches it
    exactly; the largest contour (V1) is the outer box, IoU 11^2 / 17^2 (+1
    pixel counting). Our rule has one 8-connected component: the outer box only.
    """
    ring = np.zeros((20, 20))
    ring[2:18, 2:18] = 1.0
    ring[6:14, 6:14] = 0.0
    gt = np.array([[5, 5, 15, 15]])
    largest, best = wsol.box_ious_at_thresholds(ring, np.array([0.5]), gt)
    assert best[0] == 1.0
    assert largest[0] == pytest.approx(121 / 289)
    _, ours_best = half_open_box_ious(ring.astype(np.float32), np.array([0.5], dtype=np.float32), gt)
    assert ours_best[0] == pytest.approx(100 / 256)  # [2, 2, 18, 18) against [5, 5, 15, 15)


def test_largest_box_is_by_contour_polygon_area_not_pixel_count():
    """A 15-pixel line (polygon area 0) and a 3x3 square (area 4): the square is the 'largest' contour."""
    kept = np.zeros((20, 20), dtype=bool)
    kept[2, 1:16] = True
    kept[10:13, 10:13] = True
    largest, every = wsol.contour_boxes(kept)
    assert largest.tolist() == [10, 10, 13, 13]  # x + w, y + h: one past the last pixel, with +1 IoU on top
    assert sorted(every.tolist()) == [[1, 2, 16, 3], [10, 10, 13, 13]]
    ours = boxes_from_cams(kept[None].astype(np.float32), 0.5, "max")[0]
    assert ours.tolist() == [1, 2, 16, 3]  # ours: the component with most pixels


def test_boxes_are_clipped_to_the_last_pixel_and_no_contour_is_the_zero_box():
    kept = np.zeros((8, 10), dtype=bool)
    kept[3:, 4:] = True  # touches the bottom-right corner
    largest, _ = wsol.contour_boxes(kept)
    assert largest.tolist() == [4, 3, 9, 7]  # x + w = 10 -> 9, y + h = 8 -> 7
    largest, every = wsol.contour_boxes(np.zeros((8, 10), dtype=bool))
    assert largest.tolist() == [0, 0, 0, 0] and every.tolist() == [[0, 0, 0, 0]]
    # The zero box still counts as the one pixel (0, 0) in the +1 IoU.
    assert wsol.inclusive_iou(np.zeros((1, 4)), [[0, 0, 1, 1]])[0, 0] == pytest.approx(1 / 4)


def test_constant_saved_map_boxes_the_whole_image_at_every_threshold():
    """A saved 224x224 map of 0.5: no normalization, 8-bit 127 > int(tau * 127) for every tau < 1.

    As a CAM (min-max normalized, so all zeros) it boxes nothing at any tau.
    """
    constant = np.full((224, 224), 0.5)
    whole = wsol.gt_boxes_in_frame(np.array([[0, 0, 300, 200]]), (200, 300))
    assert whole.tolist() == [[0, 0, 224, 224]]
    saved = wsol.scoremap_from_saved(constant)
    assert np.array_equal(saved, constant)
    largest, best = wsol.box_ious_at_thresholds(saved, wsol.thresholds(100), whole)
    assert largest == pytest.approx(np.full(100, (224 / 225) ** 2))  # [0, 0, 223, 223] against [0, 0, 224, 224]
    assert np.array_equal(best, largest)
    as_cam = wsol.scoremap_from_cam(constant)
    assert not as_cam.any()
    largest, _ = wsol.box_ious_at_thresholds(as_cam, wsol.thresholds(100), whole)
    assert largest == pytest.approx(np.full(100, 1 / 225**2))  # the zero box: one pixel


def test_values_just_around_a_threshold_follow_the_8_bit_strict_rule():
    """Peak 1.0 (8-bit 255) at (4, 4) and a block at 0.2035 (8-bit 51: 51.89 truncated) right of it.

    tau = 0.20: cut int(0.2 * 255) = 51, and 51 > 51 is false: the block is
    dropped though 0.2035 >= 0.2 (ours keeps it); the peak's box [4, 4, 5, 5]
    against GT [4, 4, 9, 5] has IoU 4 / 12 (+1 pixel counting). tau = 0.19:
    cut 48, the block is kept: IoU 1. A block at 0.204 (8-bit 52) is kept at 0.20.
    """
    scoremap = np.zeros((10, 10))
    scoremap[4, 4] = 1.0
    scoremap[4, 5:9] = 0.2035
    gt = np.array([[4, 4, 9, 5]])
    at = {round(float(tau), 2): i for i, tau in enumerate(wsol.thresholds(100))}
    largest, _ = wsol.box_ious_at_thresholds(scoremap, wsol.thresholds(100), gt)
    assert largest[at[0.19]] == 1.0
    assert largest[at[0.2]] == pytest.approx(4 / 12)
    ours, _ = half_open_box_ious(scoremap.astype(np.float32), np.array([0.2], dtype=np.float32), gt)
    assert ours[0] == 1.0  # ours keeps the block at tau = 0.2: box [4, 4, 9, 5)
    scoremap[4, 5:9] = 0.204
    largest, _ = wsol.box_ious_at_thresholds(scoremap, wsol.thresholds(100), gt)
    assert largest[at[0.2]] == 1.0


def test_the_cut_is_a_fraction_of_the_8_bit_maximum():
    """Peak 0.5 (8-bit 127) and a pixel at 0.25 (8-bit 63): at tau = 0.5 the cut is int(63.5) = 63, 63 > 63
    is false. Ours, normalized by the max, keeps 0.25 / 0.5 >= 0.5."""
    scoremap = np.zeros((6, 6))
    scoremap[2, 2], scoremap[2, 3] = 0.5, 0.25
    largest, _ = wsol.box_ious_at_thresholds(scoremap, np.array([0.49, 0.5]), np.array([[2, 2, 4, 3]]))
    assert largest.tolist() == [1.0, pytest.approx(4 / 6)]  # 0.49: cut 62, both kept: box [2, 2, 4, 3]


def test_thresholds_are_numpy_arange_of_the_interval():
    assert np.array_equal(wsol.thresholds(100), np.arange(0, 1, 0.01))
    assert np.array_equal(wsol.thresholds(1000), np.arange(0, 1, 0.001))
    assert len(wsol.thresholds(49)) == 49  # np.arange(0, 1, 1 / 49) has 50 values; the first 49 are used
    assert wsol.pixel_thresholds(4).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]


# ----------------------------------------------------------------------------- frame, boxes, masks


def test_non_square_image_boxes_are_scaled_to_224_and_truncated():
    """An image of (H, W) = (300, 500): x scales by 224 / 500, y by 224 / 300, each truncated.

    Exact: [44.8, 37.33, 134.85, 186.67]; truncated: [44, 37, 134, 186]. Swapping
    H and W would give [74, 22, 224, 112].
    """
    boxes = wsol.gt_boxes_in_frame(np.array([[100, 50, 301, 250]], dtype=np.float32), (300, 500))
    assert boxes.tolist() == [[44, 37, 134, 186]]
    assert boxes.dtype == np.int64


def test_iou_counts_inclusive_pixels():
    """[0, 0, 9, 9] and [0, 0, 4, 9]: 10x10 and 5x10 pixels, IoU 50 / 100; half-open it is 36 / 81."""
    assert wsol.inclusive_iou([[0, 0, 9, 9]], [[0, 0, 4, 9]])[0, 0] == 0.5
    assert wsol.inclusive_iou([[0, 0, 9, 9]], [[20, 20, 30, 30]])[0, 0] == 0.0


def _png(path, pixels):
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path)
    return path


def test_mask_pixels_are_above_zero_and_resized_from_the_top_left(tmp_path):
    """A 448x448 mask with 255 everywhere but the even (row, col) pixels, which are 0.

    OpenCV's nearest resize to 224 reads source pixel (2i, 2j): all 0, no object.
    Ours (PIL, pixel centres) reads (2i + 1, 2j + 1): all 255. A 224x224 mask of
    value 1 is all object by the > 0 rule and all background by ours (> 127).
    """
    checker = np.full((448, 448), 255)
    checker[::2, ::2] = 0
    path = _png(tmp_path / "checker.png", checker)
    union, ignore = wsol.masks_in_frame((path,), None)
    assert not union.any() and ignore is None
    assert read_mask(path, (224, 224)).all()
    faint = _png(tmp_path / "faint.png", np.ones((224, 224)))
    union, _ = wsol.masks_in_frame((faint,), None)
    assert union.all() and not read_mask(faint, (224, 224)).any()
    # Ignored: the ignore mask minus object pixels.
    object_left = np.zeros((224, 224))
    object_left[:, :100] = 1
    union, ignore = wsol.masks_in_frame((_png(tmp_path / "left.png", object_left),), faint)
    assert union[:, :100].all() and not union[:, 100:].any()
    assert ignore[:, 100:].all() and not ignore[:, :100].any()
    with pytest.raises(ValueError, match="cannot read"):
        wsol.masks_in_frame((tmp_path / "missing.png",), None)


def test_cams_are_resized_bicubically_then_min_max_normalized():
    """A 2x2 CAM, 0 on the left column and 1 on the right, to 224 x 224.

    Row values follow Keys' cubic kernel (a = -0.75, half-pixel centres,
    replicated border): they undershoot below 0 at the left edge and overshoot
    above 1 at the right before normalization. Bilinear would stay in [0, 1],
    flat for the first 56 columns.
    """
    cam = np.array([[0.0, 1.0], [0.0, 1.0]])
    columns = np.arange(224)
    source_x = (columns + 0.5) * 2 / 224 - 0.5
    left = np.floor(source_x)
    row = np.zeros(224)
    for offset in range(-1, 3):
        row += keys_cubic(source_x - left - offset) * cam[0, np.clip(left + offset, 0, 1).astype(int)]
    expected = (row - row.min()) / (row.max() - row.min())
    scoremap = wsol.scoremap_from_cam(cam)
    assert scoremap.shape == (224, 224) and scoremap.dtype == np.float64
    assert np.allclose(scoremap, expected[None, :], atol=1e-5)
    assert row.min() < -0.09 and row.max() > 1.09  # the cubic's ringing, normalized away
    assert scoremap[0, 0] > 0.01  # bilinear, normalized, is 0 over the first 56 columns


def test_saved_maps_at_224_are_kept_and_other_sizes_are_treated_as_cams():
    saved = np.linspace(0.1, 0.6, 224 * 224).reshape(224, 224)
    assert np.array_equal(wsol.scoremap_from_saved(saved), saved)  # not normalized: min stays 0.1
    small = saved[::16, ::16].astype(np.float32)
    assert np.array_equal(wsol.scoremap_from_saved(small), wsol.scoremap_from_cam(small))


# ----------------------------------------------------------------------------- PxAP


def test_pxap_has_a_level_for_the_pixels_equal_to_one():
    """Object pixels 1.0 and 0.5, background 0.995 and 0.

    wsolevaluation's histogram has a bin [1, 2): the pixel at 1.0 alone gives
    P = 1 at R = 1/2, then 0.5 adds R = 1/2 at P = 2/3: PxAP = 1/2 + 1/3.
    Ours starts at tau = 0.99, where 1.0 and 0.995 are kept: P = 1/2, so 1/4 + 1/3.
    """
    scores = np.array([[1.0, 0.5, 0.995, 0.0]])
    mask = np.array([[True, True, False, False]])
    theirs = PixelPrecisionMeter(wsol.pixel_thresholds(100), np.float64)
    theirs.update(scores, mask)
    assert theirs.compute() == pytest.approx(100 * (1 / 2 + 1 / 3))
    ours = PixelPrecisionMeter(threshold_list(100))
    ours.update(scores, mask)
    assert ours.compute() == pytest.approx(100 * (1 / 4 + 1 / 3))


def test_pxap_compares_in_float64():
    """A score one float64 step below the threshold 0.07: float64 drops it at 0.07 (with the background 0.065
    it enters at 0.06: PxAP 50); in float32 it would round onto float32(0.07) and count at 0.07 (PxAP 100)."""
    threshold = wsol.thresholds(100)[7]
    score = np.nextafter(threshold, 0.0)
    assert np.float32(score) == np.float32(threshold)
    meter = PixelPrecisionMeter(wsol.pixel_thresholds(100), np.float64)
    meter.update(np.array([[score, 0.065]]), np.array([[True, False]]))
    assert meter.compute() == pytest.approx(50.0)


# ----------------------------------------------------------------------------- the sweep and its wiring


def straightforward_box_ious(scoremap, threshold_list_, gt_boxes):
    """Per threshold, without sharing equal cuts: quantize, compare, box by contours, IoU +1."""
    image8 = (scoremap * 255).astype(np.uint8)
    largest, best = [], []
    for tau in threshold_list_:
        kept = image8 > int(tau * image8.max())
        box, every = wsol.contour_boxes(kept)
        largest.append(wsol.inclusive_iou(box[None], gt_boxes).max())
        best.append(wsol.inclusive_iou(every, gt_boxes).max())
    return np.array(largest), np.array(best)


def test_sharing_equal_cuts_changes_nothing():
    rng = np.random.default_rng(0)
    for _ in range(3):
        cam = rng.random((7, 7)) ** 3
        scoremap = wsol.scoremap_from_cam(cam)
        gt = np.array([[30, 40, 150, 200], [0, 0, 60, 60]])
        fast = wsol.box_ious_at_thresholds(scoremap, wsol.thresholds(1000), gt)
        slow = straightforward_box_ious(scoremap, wsol.thresholds(1000), gt)
        assert np.array_equal(fast[0], slow[0]) and np.array_equal(fast[1], slow[1])


def test_scoremaps_outside_0_1_or_not_float64_are_refused():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        wsol.box_ious_at_thresholds(np.full((4, 4), 1.5), ONE_THRESHOLD, np.zeros((1, 4)))
    with pytest.raises(ValueError, match="float64"):
        wsol.box_ious_at_thresholds(np.zeros((4, 4), dtype=np.float32), ONE_THRESHOLD, np.zeros((1, 4)))


def test_a_run_feeds_the_raw_gt_class_cams_to_the_wsolevaluation_meters(tmp_path):
    """The evaluation path (identity network: class c's CAM is colour channel c) gives the same counts
    as feeding the meters by hand with each image's GT-class channel through the CAM rule."""
    samples = [make_sample(tmp_path, "a", 0, [(0, 4, 4, 20, 12)], [[4, 4, 20, 12]]),
               make_sample(tmp_path, "b", 1, [(1, 0, 0, 8, 8), (1, 20, 20, 24, 30)], [[0, 0, 8, 8]]),
               make_sample(tmp_path, "c", 2, [(2, 10, 10, 30, 30)], [[10, 10, 30, 30]])]
    loader = torch.utils.data.DataLoader(WsolDataset(samples, 32, (0, 0, 0), (1, 1, 1), train=False),
                                         batch_size=2, collate_fn=collate)
    sweep = SweepMeters.for_protocol(WsolevaluationProtocol(), 100)
    evaluate(identity_model(), loader, samples, EvalConfig(protocol="wsolevaluation"), torch.device("cpu"),
             tmp_path / "predictions.csv", sweep)
    by_hand = SweepMeters.for_protocol(WsolevaluationProtocol(), 100)
    for sample in samples:
        with Image.open(sample.image_path) as image:
            channel = np.asarray(image, dtype=np.float32)[..., sample.label] / 255
        by_hand.update_scoremaps([wsol.scoremap_from_cam(channel)], [sample], np.ones(1, bool), np.ones(1, bool))
    assert np.array_equal(sweep.boxes.largest_correct, by_hand.boxes.largest_correct)
    assert np.array_equal(sweep.boxes.all_correct, by_hand.boxes.all_correct)
    assert sweep.boxes.compute()["max_box_acc"] == 100.0
    assert sweep.boxes.thresholds.dtype == np.float64
    with pytest.raises(ValueError, match="eval.protocol='wsolevaluation'"):
        sweep.update([np.zeros((4, 4), np.float32)], samples[:1], [np.zeros((1, 4))], np.ones(1, bool),
                     np.ones(1, bool), "max")
    with pytest.raises(ValueError, match="cannot merge"):
        sweep.merge(SweepMeters.for_protocol(BenchProtocol(), 100))


def test_non_square_sample_is_scored_in_the_224_frame(tmp_path):
    """A 50x100 (H x W) image with GT [20, 10, 60, 40]: at 224 x 224 it is [44, 44, 134, 179].

    The saved map marks exactly that box at 224 x 224: every threshold scores it.
    """
    sample = Sample("wide", tmp_path / "wide.png", 0, np.array([[20, 10, 60, 40]], dtype=np.float32), (50, 100), ())
    scoremap = np.zeros((224, 224))
    scoremap[44:180, 44:135] = 1.0  # rows 44..179, columns 44..134: boundingRect x + w = 135, y + h = 180
    meters = SweepMeters.for_protocol(WsolevaluationProtocol(stored_boxes="half_open"), 10)  # as its CUB
    meters.update_scoremaps([wsol.scoremap_from_saved(scoremap)], [sample], np.ones(1, bool), np.ones(1, bool))
    iou = wsol.inclusive_iou([[44, 44, 135, 180]], [[44, 44, 134, 179]])[0, 0]
    assert iou == pytest.approx(91 * 136 / (92 * 137))
    assert meters.boxes.largest_correct.tolist() == [1] * 10


# ----------------------------------------------------------------------------- config, text, end to end


def test_bad_protocol_is_a_config_error_naming_the_key_and_the_choices(tiny_data_dir, tmp_path):
    from helpers import tiny_run_config
    with pytest.raises(ConfigError, match=r"'eval.protocol' is 'wsol'; expected one of: bench, wsolevaluation"):
        tiny_run_config(tiny_data_dir, tmp_path, "eval.protocol=wsol")
    assert tiny_run_config(tiny_data_dir, tmp_path).eval.protocol == "bench"


def test_fixed_tau_text_says_the_sweep_alone_follows_wsolevaluation():
    assert describe_protocol(EvalConfig(protocol="wsolevaluation"), 224).endswith(
        "boxes in the 224x224 input frame (bench rules: eval.protocol=wsolevaluation applies to the "
        "threshold-sweep metrics only)")


def test_evaluate_maps_with_the_wsolevaluation_protocol(tiny_config, tiny_data_dir, tmp_path, capsys):
    """Masks as maps: at a quarter resolution they are CAMs (bicubic + min-max), at the 64 x 64 network
    input of the tiny config saved maps, used as they are (the frame is the network input)."""
    samples = prepare_dataset(tiny_config(), progress=False).splits["test"]
    folder = tmp_path / "maps"
    for index, sample in enumerate(samples):
        with Image.open(sample.mask_paths[0]) as mask:
            object_pixels = np.asarray(mask.convert("L"), dtype=np.float32) / 255.0
        score = object_pixels[::4, ::4] if index % 2 else np.asarray(
            Image.fromarray(object_pixels).resize((64, 64), Image.NEAREST), dtype=np.float64)
        path = folder / f"{sample.image_id}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, score)
    out = tmp_path / "scores.json"
    code = main(["evaluate-maps", "--maps", str(folder), "--dataset-config", str(TINY_CONFIG), "--out", str(out),
                 f"data_root={tiny_data_dir}", "eval.protocol=wsolevaluation"])
    assert code == 0
    sweep = json.loads(out.read_text())["sweep"]
    assert sweep["protocol"] == "wsolevaluation"
    assert sweep["thresholds"]["count"] == 100 and sweep["num_images"] == len(samples)
    assert sweep["max_box_acc"]["value"] >= 90.0 and sweep["pxap"]["value"] > 90.0
    assert "wsolevaluation's rules (bicubic 64x64" in sweep["max_box_acc"]["protocol"]
    assert "largest contour" in sweep["max_box_acc"]["protocol"]
    # A 64 x 64 map outside [0, 1] is refused, --any-range or not: it is scored without normalization.
    np.save(folder / f"{samples[0].image_id}.npy", np.full((64, 64), 2.0))
    code = main(["evaluate-maps", "--maps", str(folder), "--dataset-config", str(TINY_CONFIG), "--any-range",
                 f"data_root={tiny_data_dir}", "eval.protocol=wsolevaluation"])
    assert code == 2
    assert f"{samples[0].image_id}: values outside [0, 1]: min 2, max 2" in capsys.readouterr().err
