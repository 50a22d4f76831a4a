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
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from timm.data.constants import IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD

from bench.config import EvalConfig, ModelConfig, RunConfig
from bench.data.samples import Sample
from bench.data.torch_dataset import WsolDataset, collate, image_to_tensor
from bench.model.camnet import CamNet, build_model
from bench.scoring.evaluation import evaluate, to_pixels
from bench.scoring.image_rows import PREDICTION_COLUMNS
from bench.scoring.prediction import localize_batch, upsample_to_frames
from bench.scoring.protocols import describe_protocol, frame_of

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


def run_evaluate(samples, tmp_path, model=None):
    loader = torch.utils.data.DataLoader(WsolDataset(samples, SIZE, (0, 0, 0), (1, 1, 1), train=False),
                                         batch_size=3, collate_fn=collate)
    predictions = tmp_path / "predictions.csv"
    result = evaluate(model or identity_model(), loader, samples, EvalConfig(tau=0.2, gallery_size=2),
                      torch.device("cpu"), predictions)
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


def test_saved_cams_stay_at_feature_resolution_and_the_gallery_is_in_the_frame(samples, tmp_path):
    # A stride-4 "backbone" (4 x 4 average pooling), so that feature and input resolution differ: 8 x 8 maps.
    model = identity_model()
    model.backbone = torch.nn.AvgPool2d(4)
    result, _ = run_evaluate(samples, tmp_path, model)
    assert result.image_ids == ["a", "b", "c", "d"]
    # "a"'s red rectangle [4, 20) x [4, 12) fills exactly the 4 x 4 cells of columns 1-4, rows 1-2.
    red_cells = np.zeros((8, 8), dtype=np.float32)
    red_cells[1:3, 1:5] = 1.0
    assert result.top1_cams[0].dtype == np.float32
    np.testing.assert_array_equal(result.top1_cams[0], red_cells)
    np.testing.assert_array_equal(result.gt_cams[0], red_cells)  # "a" is labelled red
    assert len(result.gallery) == 2
    assert result.gallery[0].cam.shape == (SIZE, SIZE) and result.gallery[0].image.shape == (SIZE, SIZE, 3)
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


def rectangle_image(channel, x0, y0, x1, y1, value=1.0) -> torch.Tensor:
    """A ``(3, SIZE, SIZE)`` image, zero but for ``value`` in ``[x0, x1) x [y0, y1)`` of ``channel``."""
    image = torch.zeros(3, SIZE, SIZE)
    image[channel, y0:y1, x0:x1] = value
    return image


def test_shared_path_boxes_a_sharp_rectangle_as_worked_out_by_hand():
    # Red on [4, 20) x [4, 12): class 0's CAM is exactly that rectangle. Upsampled x2 (align_corners=False),
    # output pixel i reads input (i + 0.5) / 2 - 0.5, so the first pixels outside the edge get 0.25 of the
    # peak: kept at tau 0.2 (box one pixel wider on each side), dropped at tau 0.3 (box exactly x2).
    images = torch.stack([rectangle_image(0, 4, 4, 20, 12), rectangle_image(1, 0, 0, 8, 8)])
    at_02 = localize_batch(identity_model(), images, [(64, 64), (64, 64)], 5, 0.2, "max")
    assert at_02.boxes[0, 0].tolist() == [7, 7, 41, 25]
    at_03 = localize_batch(identity_model(), images, [(64, 64), (32, 64)], 5, 0.3, "max")
    assert at_03.boxes[0, 0].tolist() == [8, 8, 40, 24]
    assert at_03.boxes[1, 0].tolist() == [0, 0, 16, 8]  # a (32, 64) frame stretches x only
    assert at_03.maps[1].shape == (3, 32, 64) and at_03.maps[0][0].max() == 1.0
    # 3 classes, so the top-5 is the top-3; GAP logits are the channel means (16 * 8 / 1024 for red).
    prediction = at_02.prediction
    assert prediction.topk_classes.tolist() == [[0, 1, 2], [1, 0, 2]]
    red = np.exp(0.125) / (np.exp(0.125) + 2)
    assert prediction.topk_probs[0].tolist() == pytest.approx([red, (1 - red) / 2, (1 - red) / 2], abs=1e-6)


def test_shared_path_boxes_only_the_chosen_maps_with_the_true_class_last():
    # A big faint green area and a small bright red square, labelled red: green wins top-1.
    image = rectangle_image(1, 0, 0, SIZE, SIZE, value=0.5) + rectangle_image(0, 2, 2, 6, 6)
    located = localize_batch(identity_model(), image[None], [(SIZE, SIZE)], 5, 0.2, "max",
                             labels=torch.tensor([0]), boxed=(0, -1))
    assert located.prediction.cams.shape == (1, 4, SIZE, SIZE)  # top-3, then the true class
    assert located.boxes.shape == (1, 2, 4) and located.maps[0].shape == (2, SIZE, SIZE)
    assert located.boxes[0].tolist() == [[0, 0, SIZE, SIZE], [2, 2, 6, 6]]  # top-1 (green), true class (red)


def reference_boxes(model, images, sizes, topk, tau, labels) -> np.ndarray:
    """The box rule written out one image and one class at a time: min-max, ``>= tau``, largest 8-component."""
    with torch.no_grad():
        features = model.features(images).double()  # (B, C, h, w)
        probabilities = model.head(model.features(images)).softmax(dim=1)
    weight = model.cam_weight.detach().double()
    boxes = []
    for index, size in enumerate(sizes):
        classes = probabilities[index].argsort(descending=True)[:topk].tolist() + [int(labels[index])]
        for label in classes:
            cam = (weight[label][:, None, None] * features[index]).sum(dim=0)  # (h, w)
            full = F.interpolate(cam[None, None], size=size, mode="bilinear", align_corners=False)[0, 0].numpy()
            normalized = (full - full.min()) / (full.max() - full.min())
            components, _ = ndimage.label(normalized >= tau, structure=np.ones((3, 3)))
            largest = np.bincount(components.ravel())[1:].argmax() + 1
            ys, xs = np.nonzero(components == largest)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return np.array(boxes, dtype=np.float32).reshape(len(sizes), -1, 4)


def test_shared_path_matches_the_rule_written_out_on_a_tiny_network():
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="tiny_cnn", pretrained=False, feature_stride=8, input_size=64),
                        num_classes=7).eval()
    images = torch.randn(3, 3, 64, 64)
    labels = torch.tensor([1, 4, 6])
    sizes = [(64, 64), (50, 90), (64, 64)]  # frames of different sizes in one batch
    located = localize_batch(model, images, sizes, 3, 0.7, "minmax", labels)
    expected = reference_boxes(model, images, sizes, 3, 0.7, labels)
    np.testing.assert_array_equal(located.boxes, expected)
    assert (expected[..., 2:] - expected[..., :2]).min() > 0 and (expected != [0, 0, 64, 64]).any()
    # Frames of one size are upsampled in one call: the same maps as one image at a time.
    cams = located.prediction.cams
    together = upsample_to_frames(cams, [(50, 90)] * 3)
    for index in range(3):
        np.testing.assert_array_equal(together[index], upsample_to_frames(cams[index : index + 1], [(50, 90)])[0])


def test_frame_of_scales_boxes_to_the_input_or_keeps_the_originals():
    sample = Sample("wide", "wide.png", 0, np.array([[12, 8, 36, 24]], dtype=np.float32), (32, 48), ())
    size, boxes = frame_of(sample, "input", 32)
    assert size == (32, 32) and boxes.tolist() == [[8, 8, 24, 24]]  # x scaled by 32 / 48
    size, boxes = frame_of(sample, "original", 32)
    assert size == (32, 48) and boxes.tolist() == [[12, 8, 36, 24]]
    with pytest.raises(ValueError, match="eval.frame='crop'"):
        frame_of(sample, "crop", 32)


def test_protocol_is_stated_in_one_wording():
    assert describe_protocol(EvalConfig(), 224) == (
        "test split, fixed tau=0.2 on 'max'-normalized CAMs, largest connected component, IoU >= 0.5, "
        "boxes in the 224x224 input frame")
    config = RunConfig(name="x", eval=EvalConfig(split="val", tau=0.35, normalization="minmax", frame="original"))
    assert describe_protocol(config.eval, config.model.input_size, maps="maps") == (
        "val split, fixed tau=0.35 on 'minmax'-normalized maps, largest connected component, IoU >= 0.5, "
        "boxes in the original image frame")


@pytest.mark.parametrize("mean, std", [((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
                                       (IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD)])
def test_to_pixels_undoes_image_to_tensor_exactly(mean, std):
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_pixels(image_to_tensor(Image.fromarray(pixels), mean, std), mean, std), pixels)
