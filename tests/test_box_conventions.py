"""Box conventions at every file boundary, and wsolevaluation's GT, on real lines of each format.

The lines are copied from clovaai/wsolevaluation's metadata (``metadata/ILSVRC/test``:
ILSVRC2012_val_00000001, 500 x 375, whose XML gives xmin 111, ymin 108, xmax 441,
ymax 193; ``metadata/CUB/test``: CUB's first test image, box ``x y w h`` =
60 27 325 304, written there as ``x + w``, ``y + h``).
"""

import numpy as np
import pytest
import torch

from bench.config import EvalConfig
from bench.data.boxes import pairwise_iou
from bench.data.native_readers import from_half_open, to_half_open
from bench.data.samples import DatasetSplits, Sample
from bench.data.wsol_layout import BOX_CONVENTION_FILE, metadata_box_convention, read_wsol_metadata, write_wsol
from bench.scoring import wsolevaluation_rules as wsol
from bench.scoring.evaluation import SweepMeters
from bench.scoring.protocols import WsolevaluationProtocol, scoring_protocol
from bench.scoring.threshold_free_metrics import sweep_summary

ILSVRC_LINE = "val/ILSVRC2012_val_00000001.JPEG,111,108,441,193"
ILSVRC_SIZE = (375, 500)  # (H, W)
CUB_LINE = "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg,60,27,385,331"


def _metadata(folder, line, size):
    """A wsolevaluation metadata folder: ``line``'s image in test, another image (no box) in train."""
    image_id = line.split(",")[0]
    for split, name in (("train", "train/" + image_id.split("/")[-1]), ("test", image_id)):
        (folder / split).mkdir(parents=True)
        (folder / split / "image_ids.txt").write_text(name + "\n")
        (folder / split / "class_labels.txt").write_text(f"{name},0\n")
        (folder / split / "image_sizes.txt").write_text(f"{name},{size[1]},{size[0]}\n")
    (folder / "test" / "localization.txt").write_text(line + "\n")
    return image_id


def test_conversions_are_inverse_and_inclusive_adds_one():
    assert to_half_open(np.array([[111, 108, 441, 193]]), "inclusive").tolist() == [[111, 108, 442, 194]]
    assert to_half_open(np.array([[60, 27, 385, 331]]), "half_open").tolist() == [[60, 27, 385, 331]]
    boxes = np.array([[1.5, 2, 9, 4]])
    for convention in ("inclusive", "half_open"):
        assert np.array_equal(from_half_open(to_half_open(boxes, convention), convention), boxes)
    with pytest.raises(ValueError, match="unknown box convention 'xywh'"):
        to_half_open(boxes, "xywh")


def test_wsolevaluation_ilsvrc_metadata_is_read_inclusive(tmp_path):
    """Its ILSVRC folder holds the XML's inclusive xmax: read half-open [111, 108, 442, 194), 331 x 86 pixels.

    Our own box of those pixels has IoU 1; read as half-open (the old rule) the
    box is one pixel short each way: IoU 330 * 85 / (331 * 86).
    """
    folder = tmp_path / "metadata" / "ILSVRC"
    _metadata(folder, ILSVRC_LINE, ILSVRC_SIZE)
    (tmp_path / "dataset" / "ILSVRC").mkdir(parents=True)
    splits = read_wsol_metadata(folder, tmp_path / "dataset" / "ILSVRC")
    box = splits.splits["test"][0].boxes
    assert box.tolist() == [[111, 108, 442, 194]]
    assert pairwise_iou(box, [[111, 108, 442, 194]])[0, 0] == 1.0
    short = read_wsol_metadata(folder, tmp_path / "dataset" / "ILSVRC", box_convention="half_open")
    assert pairwise_iou(short.splits["test"][0].boxes, [[111, 108, 442, 194]])[0, 0] == pytest.approx(
        330 * 85 / (331 * 86))
    assert metadata_box_convention(folder) == "inclusive"


def test_wsolevaluation_cub_metadata_is_read_half_open(tmp_path):
    folder = tmp_path / "metadata" / "CUB"
    _metadata(folder, CUB_LINE, (335, 500))
    (tmp_path / "dataset" / "CUB").mkdir(parents=True)
    splits = read_wsol_metadata(folder, tmp_path / "dataset" / "CUB")
    assert splits.splits["test"][0].boxes.tolist() == [[60, 27, 385, 331]]  # = CUB's x + w, y + h


def test_wsolevaluation_gt_of_imagenet_boxes_has_no_double_plus_one():
    """ImageNet read natively: half-open [111, 108, 442, 194). wsolevaluation scales its metadata's
    inclusive 441 / 193: int(441 * 224 / 500) = 197, int(193 * 224 / 375) = 115 -> [49, 64, 197, 115].
    Scaling the half-open box (the old rule) gives int(442 * 224 / 500) = 198: IoU 149 / 150 with +1 pixels."""
    sample = Sample("val/x.JPEG", None, 0, np.array([[111, 108, 442, 194]], np.float32), ILSVRC_SIZE, ())
    ours = WsolevaluationProtocol(stored_boxes="inclusive").gt_boxes(sample)
    assert ours.tolist() == [[49, 64, 197, 115]]
    old = wsol.gt_boxes_in_frame(sample.boxes, sample.size)
    assert old.tolist() == [[49, 64, 198, 115]]
    assert wsol.inclusive_iou(ours, old)[0, 0] == pytest.approx(149 * 52 / (150 * 52))
    # CUB as its metadata writes it (x + w): int(385 * 224 / 500) = 172, int(331 * 224 / 335) = 221.
    cub = Sample("c.jpg", None, 0, np.array([[60, 27, 385, 331]], np.float32), (335, 500), ())
    assert WsolevaluationProtocol(stored_boxes="half_open").gt_boxes(cub).tolist() == [[26, 18, 172, 221]]


def test_export_writes_inclusive_boxes_and_says_so(tmp_path):
    image = tmp_path / "images" / "val" / "a.JPEG"
    sample = Sample("val/a.JPEG", image, 0, np.array([[111, 108, 442, 194]], np.float32), ILSVRC_SIZE, ())
    splits = DatasetSplits(["tench"], {"train": [sample], "val": [], "test": [
        Sample("val/b.JPEG", tmp_path / "images" / "val" / "b.JPEG", 0, sample.boxes, ILSVRC_SIZE, ())]}, "t")
    out = tmp_path / "export"
    write_wsol(splits, out, tmp_path / "images")
    assert (out / "test" / "localization.txt").read_text() == "val/b.JPEG,111,108,441,193\n"
    assert (out / BOX_CONVENTION_FILE).read_text() == "inclusive\n"
    (tmp_path / "images" / "val").mkdir(parents=True)
    back = read_wsol_metadata(out, tmp_path / "images")
    assert back.splits["test"][0].boxes.tolist() == [[111, 108, 442, 194]]
    (out / BOX_CONVENTION_FILE).write_text("xyxy\n")
    with pytest.raises(ValueError, match=r"box_convention.txt, line 1: 'xyxy' is not a box convention"):
        read_wsol_metadata(out, tmp_path / "images")


def test_nan_maps_are_refused():
    scoremap = np.zeros((8, 8))
    scoremap[2, 3] = np.nan
    with pytest.raises(ValueError, match="1 NaN value"):
        wsol.box_ious_at_thresholds(scoremap, np.array([0.5]), np.zeros((1, 4)))


def test_a_160_px_network_is_scored_in_its_160_frame():
    """The CAM goes to 160 x 160 (the network input, as wsolevaluation resizes to its input), and so
    do the GT boxes: [0, 0, 500, 375) inclusive [0, 0, 499, 374] -> int(499 * 160 / 500) = 159, 159."""
    protocol = scoring_protocol(EvalConfig(protocol="wsolevaluation"), 160, "inclusive")
    assert protocol.frame_size == 160
    maps = protocol.cam_scoremaps(torch.rand(2, 10, 10), None, [], "minmax")
    assert [m.shape for m in maps] == [(160, 160), (160, 160)]
    whole = Sample("w", None, 0, np.array([[0, 0, 500, 375]], np.float32), ILSVRC_SIZE, ())
    assert protocol.gt_boxes(whole).tolist() == [[0, 0, 159, 159]]
    assert "bicubic 160x160" in protocol.maps_rule("max")
    sweep = SweepMeters.for_protocol(protocol, 10)
    sweep.update_scoremaps([np.ones((160, 160))], [whole], np.ones(1, bool), np.ones(1, bool))
    assert sweep.boxes.largest_correct.tolist() == [1] * 10  # [0, 0, 159, 159] clipped to the last pixel


def test_tau_from_val_names_the_largest_contour():
    protocol = WsolevaluationProtocol()
    meters = SweepMeters.for_protocol(protocol, 10)
    whole = Sample("w", None, 0, np.array([[0, 0, 224, 224]], np.float32), (224, 224), ())
    meters.update_scoremaps([np.ones((224, 224))], [whole], np.ones(1, bool), np.ones(1, bool))
    summary = sweep_summary(meters.boxes, meters.pixels, meters.boxes, "test", "max", protocol)
    assert "(best BoxAcc(tau, 0.5), largest contour, on the val split)" in summary["calibrated"]["protocol"]
    assert "largest contour" in summary["max_box_acc"]["protocol"]
