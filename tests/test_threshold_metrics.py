"""BoxAcc curves, MaxBoxAcc(V2), PxAP and the val-calibrated tau on hand-made cases."""

import numpy as np
import pytest

from bench.scoring.box_rule import normalize_cams
from bench.scoring.protocols import BenchProtocol
from bench.scoring.threshold_free_metrics import (
    HIT_ROWS,
    BoxHits,
    PixelPrecisionMeter,
    ThresholdSweepMeter,
    calibrated_tau,
    load_box_hits,
    max_box_acc_from_hits,
    save_box_hits,
    sweep_summary,
)
from bench.scoring.threshold_sweep import threshold_list

RIGHT_BLOB = np.array([[5.0, 3.0, 7.0, 5.0]])  # the 4-pixel blob of value 2
LEFT_BLOB = np.array([[1.0, 1.0, 4.0, 2.0]])  # the 3-pixel blob of value 4


def _two_blobs() -> np.ndarray:
    cam = np.zeros((6, 8), dtype=np.float32)
    cam[1, 1:4] = 4.0
    cam[3:5, 5:7] = 2.0
    return normalize_cams(cam[None], "max")[0]  # left 1.0, right 0.5


def _meter(gt_boxes: list, top1: list, top5: list) -> ThresholdSweepMeter:
    meter = ThresholdSweepMeter(threshold_list(4))  # 0, 0.25, 0.5, 0.75
    meter.update([_two_blobs()] * len(gt_boxes), gt_boxes, np.array(top1), np.array(top5))
    return meter


def test_box_acc_at_each_tau_and_max_box_acc():
    # Image A's object is the right blob: the largest component at tau 0.25 and 0.5.
    # Image B's object is the left blob: the largest component only at tau 0.75; any component from 0.25 on.
    meter = _meter([RIGHT_BLOB, LEFT_BLOB], top1=[True, False], top5=[True, True])
    result = meter.compute()
    curves = result["curves"]
    assert curves["tau"] == [0.0, 0.25, 0.5, 0.75]
    assert curves["box_acc_largest_0.5"] == [0.0, 50.0, 50.0, 50.0]
    assert result["max_box_acc"] == 50.0 and result["max_box_acc_tau"] == 0.25  # first of the tied best
    # All components: A is right at 0.25 and 0.5, B at 0.25, 0.5 and 0.75 (IoU 1), for every delta.
    assert curves["box_acc_all_0.3"] == [0.0, 100.0, 100.0, 50.0]
    assert curves["box_acc_all_0.7"] == [0.0, 100.0, 100.0, 50.0]
    assert result["max_box_acc_v2"] == 100.0
    # top-1 loc needs the right class: only A (right at 0.25, 0.5); top-5: A at 0.25, 0.5 and B at 0.75.
    assert curves["top1_loc_error"] == [100.0, 50.0, 50.0, 100.0]
    assert curves["top5_loc_error"] == [100.0, 50.0, 50.0, 50.0]


def test_each_images_box_hits_are_its_rows_of_the_meters_counts(tmp_path):
    meter = ThresholdSweepMeter(threshold_list(4))
    hits = meter.update([_two_blobs()] * 2, [RIGHT_BLOB, LEFT_BLOB], np.array([True, False]), np.array([True, True]))
    # The curves of the test above, image by image (taus 0, .25, .5, .75): A right at .25 and .5 by both rules;
    # B right at .75 by the largest component, at .25 to .75 by any.
    assert HIT_ROWS == ("largest_0.5", "all_0.3", "all_0.5", "all_0.7")
    assert hits.dtype == bool and hits.shape == (2, 4, 4)
    assert hits[0].tolist() == [[False, True, True, False]] * 4
    assert hits[1].tolist() == [[False, False, False, True]] + [[False, True, True, True]] * 3
    assert (hits[:, 0].sum(axis=0) == meter.largest_correct).all() and (hits[:, 1:].sum(axis=0) == meter.all_correct).all()
    result = meter.compute()
    assert max_box_acc_from_hits(hits) == {"max_box_acc": result["max_box_acc"],
                                           "max_box_acc_v2": result["max_box_acc_v2"]} == {
        "max_box_acc": 50.0, "max_box_acc_v2": 100.0}
    save_box_hits(tmp_path / "box_hits.npz", BoxHits(["a.png", "b.png"], meter.thresholds, hits))
    loaded = load_box_hits(tmp_path / "box_hits.npz")
    assert loaded.image_ids == ["a.png", "b.png"] and (loaded.hits == hits).all()
    assert loaded.thresholds.tolist() == [0.0, 0.25, 0.5, 0.75] and not list(tmp_path.glob("*.tmp"))
    np.savez(tmp_path / "other.npz", image_ids=np.array(["a"]), thresholds=np.zeros(4), rows=np.array(["x"]),
             hits=np.zeros((1, 1, 4), dtype=bool))
    with pytest.raises(ValueError, match=r"other\.npz: box hits with rows \('x',\)"):
        load_box_hits(tmp_path / "other.npz")


def test_max_box_acc_v2_takes_each_delta_at_its_own_tau():
    # Whole-image box at tau 0 has IoU 4/48 with the right blob: below every delta. A GT box covering
    # both blobs, [1, 1, 7, 5) (area 24): at tau 0 IoU 24/48 = 0.5; at 0.25-0.5 the best single blob
    # is the right one, 4/24 = 0.167; at 0.75 the left blob, 3/24 = 0.125.
    meter = _meter([np.array([[1.0, 1.0, 7.0, 5.0]])], top1=[True], top5=[True])
    result = meter.compute()
    assert result["max_box_acc_v2_per_delta"] == {"0.3": 100.0, "0.5": 100.0, "0.7": 0.0}
    assert result["max_box_acc_v2"] == pytest.approx(200.0 / 3)
    assert result["max_box_acc_v2_taus"] == {"0.3": 0.0, "0.5": 0.0, "0.7": 0.0}


def test_calibrated_tau_is_the_val_best_and_test_numbers_are_read_there():
    val = _meter([LEFT_BLOB, LEFT_BLOB, RIGHT_BLOB], top1=[True] * 3, top5=[True] * 3)
    # val BoxAcc: [0, 33.3, 33.3, 66.7] -> index 3 (tau 0.75).
    assert calibrated_tau(val) == 3
    test = _meter([RIGHT_BLOB, LEFT_BLOB], top1=[True, True], top5=[True, True])
    summary = sweep_summary(test, PixelPrecisionMeter(test.thresholds), val, "test", "max", BenchProtocol())
    calibrated = summary["calibrated"]
    assert calibrated["tau"] == 0.75
    assert calibrated["protocol"].startswith("tau from val = 0.75 ")
    assert calibrated["top1_loc_error"] == 50.0 and calibrated["gt_known_loc_acc"] == 50.0  # only B is right at 0.75
    assert summary["max_box_acc"]["protocol"].startswith("oracle max over tau on test")
    assert "pxap" not in summary  # no image had a mask
    assert "calibrated" not in sweep_summary(test, PixelPrecisionMeter(test.thresholds), None, "test", "max",
                                         BenchProtocol())


def test_pxap_hand_computed():
    # Scores 1.0, 0.6, 0.6, 0.2 with object pixels at the 1.0 and one 0.6; thresholds 0, 0.25, 0.5, 0.75.
    # tau 0.75: TP 1 FP 0 (P 1, R 1/2); 0.5 and 0.25: TP 2 FP 1 (P 2/3, R 1); 0: TP 2 FP 2 (P 1/2, R 1).
    # PxAP = 1/2 * 1 + 1/2 * 2/3 + 0 + 0 = 5/6.
    meter = PixelPrecisionMeter(threshold_list(4))
    meter.update(np.array([[1.0, 0.6]], np.float32), np.array([[True, False]]))
    meter.update(np.array([[0.6, 0.2]], np.float32), np.array([[True, False]]))
    assert meter.compute() == pytest.approx(100.0 * 5 / 6)
    # A perfect separator scores 100; no object pixel at all is an error.
    perfect = PixelPrecisionMeter(threshold_list(4))
    perfect.update(np.array([[0.9, 0.1]], np.float32), np.array([[True, False]]))
    assert perfect.compute() == pytest.approx(100.0)
    empty = PixelPrecisionMeter(threshold_list(4))
    empty.update(np.array([[0.9]], np.float32), np.array([[False]]))
    with pytest.raises(ValueError, match="at least one object pixel"):
        empty.compute()


def test_meters_reject_misuse():
    with pytest.raises(ValueError, match="before any image"):
        ThresholdSweepMeter(threshold_list(4)).compute()
    with pytest.raises(ValueError, match="one of each per image"):
        ThresholdSweepMeter(threshold_list(4)).update([_two_blobs()], [], np.array([True]), np.array([True]))
    with pytest.raises(ValueError, match="same"):
        PixelPrecisionMeter(threshold_list(4)).update(np.zeros((2, 2), np.float32), np.zeros((2, 3), bool))


def test_merged_meters_equal_one_meter_fed_both_streams():
    # How ranks' shares are combined: rank 0 saw image A, rank 1 image B (the first test's images).
    both = _meter([RIGHT_BLOB, LEFT_BLOB], top1=[True, False], top5=[True, True])
    share = _meter([RIGHT_BLOB], top1=[True], top5=[True])
    share.merge(_meter([LEFT_BLOB], top1=[False], top5=[True]))
    assert share.compute() == both.compute()
    assert share.compute()["curves"]["box_acc_largest_0.5"] == [0.0, 50.0, 50.0, 50.0]
    # PxAP of the hand-computed example, its two images fed to two meters: 5/6 as well.
    pixels, other = PixelPrecisionMeter(threshold_list(4)), PixelPrecisionMeter(threshold_list(4))
    pixels.update(np.array([[1.0, 0.6]], np.float32), np.array([[True, False]]))
    other.update(np.array([[0.6, 0.2]], np.float32), np.array([[True, False]]))
    pixels.merge(other)
    assert pixels.num_images == 2 and pixels.compute() == pytest.approx(100.0 * 5 / 6)
    with pytest.raises(ValueError, match="different thresholds"):
        pixels.merge(PixelPrecisionMeter(threshold_list(5)))
    with pytest.raises(ValueError, match="different thresholds"):
        share.merge(ThresholdSweepMeter(threshold_list(5)))
