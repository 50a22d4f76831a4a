"""The evaluation wiring on images whose CAMs and boxes are known exactly.

The "network" is the identity: its features are the image's three colour
channels and the classifier weight is the 3x3 identity, so class c's CAM is
colour channel c and the GAP logit of class c is the channel's mean. A red
rectangle on black is then class 0 with a CAM that is exactly the rectangle.
"""

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from bench.config import EvalConfig, ModelConfig
from bench.evaluate import PREDICTION_COLUMNS, evaluate
from bench.layout import Sample
from bench.models import CamNet
from bench.torch_data import WsolDataset, collate

SIZE = 32


def identity_model() -> CamNet:
    model = CamNet(torch.nn.Identity(), num_features=3, num_classes=3, config=ModelConfig(pooling="gap"),
                   mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    with torch.no_grad():
        model.classifier.weight.copy_(torch.eye(3))
        model.classifier.bias.zero_()
    return model


def make_sample(tmp_path, name, label, rectangles, gt_boxes) -> Sample:
    """An image with ``rectangles`` [(channel, x0, y0, x1, y1), ...] at 255 on black, saved as PNG."""
    pixels = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    for channel, x0, y0, x1, y1 in rectangles:
        pixels[y0:y1, x0:x1, channel] = 255
    path = tmp_path / f"{name}.png"
    Image.fromarray(pixels).save(path)
    return Sample(name, path, label, np.array(gt_boxes, dtype=np.float32), (SIZE, SIZE), ())


@pytest.fixture
def samples(tmp_path):
    return [
        # red object, labelled red, GT box = the object: classified and localized.
        make_sample(tmp_path, "a", 0, [(0, 4, 4, 20, 12)], [[4, 4, 20, 12]]),
        # green object labelled green, but the GT box covers twice the object: IoU 1/2 (counts, >= 0.5).
        make_sample(tmp_path, "b", 1, [(1, 0, 0, 8, 8)], [[0, 0, 16, 8]]),
        # blue object, labelled red (misclassified); red CAM is all zero -> no box; blue box hits the 2nd GT box.
        make_sample(tmp_path, "c", 0, [(2, 10, 10, 30, 30)], [[0, 0, 4, 4], [10, 10, 30, 30]]),
        # big faint green area + small bright red object, labelled red: top-1 is green (wrong class);
        # the red CAM's box is exact, so GT-known and top-5 loc succeed.
        make_sample(tmp_path, "d", 0, [(1, 0, 0, 32, 32), (0, 2, 2, 6, 6)], [[2, 2, 6, 6]]),
    ]


def run_evaluate(samples, tmp_path):
    loader = torch.utils.data.DataLoader(WsolDataset(samples, SIZE, (0, 0, 0), (1, 1, 1), train=False),
                                         batch_size=3, collate_fn=collate)
    predictions = tmp_path / "predictions.csv"
    result = evaluate(identity_model(), loader, samples, EvalConfig(tau=0.2, gallery_size=2), torch.device("cpu"),
                      predictions)
    with predictions.open() as handle:
        rows = list(csv.DictReader(handle))
    return result, rows


def test_metrics_on_images_with_known_cams(samples, tmp_path):
    result, rows = run_evaluate(samples, tmp_path)
    metrics = result.metrics
    assert metrics["num_images"] == 4
    # top-1 correct: a, b (c is blue, d is green-dominated) -> 2/4 wrong.
    assert metrics["top1_cls_error"] == pytest.approx(100 * 2 / 4)
    assert metrics["top5_cls_error"] == 0.0  # 3 classes: every label is in the top 3
    # top-1 loc: a (IoU 1), b (IoU 1/2) -> 2/4 wrong.
    assert metrics["top1_loc_error"] == pytest.approx(100 * 2 / 4)
    # GT-class box: a 1, b 1/2, c empty red CAM -> 0, d exact -> 3/4.
    assert metrics["gt_known_loc_acc"] == pytest.approx(100 * 3 / 4)
    assert metrics["top5_loc_error"] == pytest.approx(100 * 1 / 4)
    # top-1 boxes: a [4,4,20,12] IoU 1; b IoU 1/2; c blue box = 2nd GT box, IoU 1; d whole image vs [2,2,6,6]: 16/1024.
    assert metrics["mean_iou"] == pytest.approx((1 + 0.5 + 1 + 16 / 1024) / 4)
    assert [row["image_id"] for row in rows] == ["a", "b", "c", "d"]
    assert tuple(rows[0]) == PREDICTION_COLUMNS
    assert rows[0]["top1_box"] == "4 4 20 12" and rows[0]["top1_loc"] == "1"
    assert rows[2]["gt_class_box"] == "0 0 0 0" and rows[2]["top1_box"] == "10 10 30 30"
    assert rows[2]["gt_boxes"] == "0 0 4 4;10 10 30 30"
    assert rows[3]["top5_classes"].split()[0] == "1" and rows[3]["top5_loc"] == "1" and rows[3]["top1_loc"] == "0"


def test_cams_and_gallery_are_kept_at_feature_resolution(samples, tmp_path):
    result, _ = run_evaluate(samples, tmp_path)
    assert result.image_ids == ["a", "b", "c", "d"]
    assert len(result.gallery) == 2
    top1_cam = result.top1_cams[0].astype(np.float32)  # red channel of "a", 0..1
    assert result.top1_cams[0].dtype == np.float32 and top1_cam.shape == (SIZE, SIZE)
    assert top1_cam[4:12, 4:20].min() == 1.0 and top1_cam.sum() == 16 * 8
    assert not (tmp_path / "predictions.csv.tmp").exists()


def test_original_frame_scores_against_the_boxes_as_given(tmp_path):
    # A 32 x 48 (H x W) image evaluated through a 32 x 32 input: the CAM goes back to 32 x 48.
    pixels = np.zeros((32, 48, 3), dtype=np.uint8)
    pixels[8:24, 12:36, 0] = 255  # red object, box [12, 8, 36, 24) in the original frame
    path = tmp_path / "wide.png"
    Image.fromarray(pixels).save(path)
    sample = Sample("wide", path, 0, np.array([[12, 8, 36, 24]], dtype=np.float32), (32, 48), ())
    loader = torch.utils.data.DataLoader(WsolDataset([sample], SIZE, (0, 0, 0), (1, 1, 1), train=False),
                                         batch_size=1, collate_fn=collate)
    config = EvalConfig(tau=0.5, frame="original", gallery_size=1)
    result = evaluate(identity_model(), loader, [sample], config, torch.device("cpu"), tmp_path / "p.csv")
    with (tmp_path / "p.csv").open() as handle:
        row = next(csv.DictReader(handle))
    assert row["gt_boxes"] == "12 8 36 24"  # the dataset's box, untouched
    x0, y0, x1, y1 = map(float, row["top1_box"].split())
    # Two bilinear resamplings blur the edges by at most a pixel or two at tau = 0.5.
    assert abs(x0 - 12) <= 1.5 and abs(x1 - 36) <= 1.5 and abs(y0 - 8) <= 1 and abs(y1 - 24) <= 1
    assert result.metrics["gt_known_loc_acc"] == 100.0
    assert result.gallery[0].image.shape == (32, 48, 3) and result.gallery[0].cam.shape == (32, 48)
