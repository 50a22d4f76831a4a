"""Localization by object scale: hand-computed scales, bins and per-bin metrics, and the predictions.csv reader."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from bench.data.boxes import resize_boxes
from bench.data.loading import load_dataset
from bench.data.samples import DatasetFormatError, Sample
from bench.scoring.evaluation import ScoredBatch, collect_results
from bench.scoring.fixed_tau_metrics import METRIC_KEYS, LocalizationMeter, localization_outcomes, per_image_metrics
from bench.scoring.image_rows import PREDICTION_COLUMNS
from bench.scoring.object_scale import (
    NEEDED_COLUMNS,
    SCALE_BIN_EDGES,
    ObjectScaleMeter,
    PredictionsFileError,
    box_to_object_areas,
    metrics_by_bin,
    metrics_by_scale,
    object_scales,
    read_metrics_by_scale,
    scale_bin_labels,
    scale_bins,
)

FRAME = (100, 100)


def test_bin_edges_and_labels():
    assert SCALE_BIN_EDGES == (0.0, 0.1, 0.2, 0.3, 0.5, 1.0)
    assert scale_bin_labels() == ["[0, 0.1)", "[0.1, 0.2)", "[0.2, 0.3)", "[0.3, 0.5)", "[0.5, 1]"]


def test_bins_hold_their_lower_edge_and_the_last_holds_one():
    scales = [0.0, 0.0999, 0.1, 0.15, 0.2, 0.2999, 0.3, 0.4999, 0.5, 0.75, 1.0]
    assert scale_bins(np.array(scales)).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4]
    assert scale_bins(np.array([1000 / 10000])).tolist() == [1]  # 0.1 computed as an area fraction


@pytest.mark.parametrize("bad", [-0.01, 1.0001, float("nan")])
def test_bins_reject_scales_outside_zero_one(bad):
    with pytest.raises(ValueError, match=r"object scales must lie in \[0, 1\]; got 1 outside"):
        scale_bins(np.array([0.5, bad]))


def test_scale_is_the_largest_box_over_the_frame():
    boxes = [np.array([[0, 0, 30, 30]]),  # 900 / 10000
             np.array([[0, 0, 20, 20], [50, 50, 90, 90]]),  # the larger: 1600 / 10000
             np.array([[10, 20, 60, 40]])]  # 50 x 20 on a frame (H, W) = (50, 200): 1000 / 10000
    scales = object_scales(boxes, [FRAME, FRAME, (50, 200)])  # read as (W, H) it would clip to 0.08
    assert scales.tolist() == [0.09, 0.16, 0.1]


def test_scale_clips_boxes_to_the_frame():
    # [-10, 90) x [50, 130) on 100 x 100: visible [0, 90) x [50, 100) = 90 * 50
    assert object_scales([np.array([[-10, 50, 90, 130]])], [FRAME]).tolist() == [0.45]
    assert object_scales([np.array([[-5, -5, 105, 105]])], [FRAME]).tolist() == [1.0]


def test_scale_does_not_depend_on_the_frame():
    boxes = np.array([[12.0, 30.0, 301.0, 207.0], [0.0, 0.0, 40.0, 40.0]])
    original = object_scales([boxes], [(375, 500)])
    resized = object_scales([resize_boxes(boxes, (375, 500), (224, 224))], [(224, 224)])
    assert resized[0] == pytest.approx(original[0], rel=1e-12)
    assert original[0] == pytest.approx(289 * 177 / (375 * 500))


def test_scale_errors_name_the_image():
    with pytest.raises(ValueError, match="image 1 has no ground-truth box"):
        object_scales([np.array([[0, 0, 1, 1]]), np.zeros((0, 4))], [FRAME, FRAME])
    with pytest.raises(ValueError, match=r"image 0 has frame size \(H, W\) = \(0, 10\)"):
        object_scales([np.array([[0, 0, 1, 1]])], [(0, 10)])
    with pytest.raises(ValueError, match="2 box lists but 1 frame sizes"):
        object_scales([np.array([[0, 0, 1, 1]])] * 2, [FRAME])


def test_box_to_object_area_uses_the_best_matching_box():
    gts = [np.array([[0, 0, 20, 20], [50, 50, 90, 90]])]
    # best match is the second box (IoU 0.625): 1000 / 1600
    assert box_to_object_areas(np.array([[50, 50, 90, 75]]), gts).tolist() == [0.625]
    assert box_to_object_areas(np.zeros((1, 4)), gts).tolist() == [0.0]  # empty box


class Example:
    """Five images on 100 x 100 frames with hand-chosen boxes (IoUs in the comments).

    ====  =====  =================  =========  ==========  ===========  ======================
    img   scale  bin                top-1 ok   top-1 IoU   GT-cls IoU   GT-cls box / object
    ====  =====  =================  =========  ==========  ===========  ======================
    A     0.09   0 [0, 0.1)         yes        1.0         1.0          900 / 900 = 1.0
    B     0.10   1 [0.1, 0.2)       no         1.0         0.5          500 / 1000 = 0.5
    C     0.16   1 [0.1, 0.2)       yes        0.625       0.625        1000 / 1600 = 0.625
    D     0.25   2 [0.2, 0.3)       yes        0.4         0.4          1000 / 2500 = 0.4
    E     1.00   4 [0.5, 1]         yes        0.6         0.6          6000 / 10000 = 0.6
    ====  =====  =================  =========  ==========  ===========  ======================

    Bin 3, [0.3, 0.5), is empty. IoU >= 0.5 counts (B's GT-class box, exactly 0.5).
    """

    ids = ["a.png", "b.png", "c.png", "d.png", "e.png"]
    gt_boxes = [np.array([[0.0, 0, 30, 30]]), np.array([[0.0, 0, 10, 100]]),
                np.array([[0.0, 0, 20, 20], [50, 50, 90, 90]]), np.array([[0.0, 0, 50, 50]]),
                np.array([[0.0, 0, 100, 100]])]
    labels = np.array([0, 1, 0, 0, 0])
    topk = np.array([[0, 1], [0, 1], [0, 1], [0, 1], [0, 1]])  # B's top-1 (class 0) is wrong, its top-2 right
    top1_boxes = np.array([[0.0, 0, 30, 30], [0, 0, 10, 100], [50, 50, 90, 75], [0, 0, 20, 50], [0, 0, 100, 60]])
    gt_class_boxes = np.array([[0.0, 0, 30, 30], [0, 0, 10, 50], [50, 50, 90, 75], [0, 0, 20, 50],
                               [0, 0, 100, 60]])

    @classmethod
    def outcome(cls):
        return localization_outcomes(cls.topk, cls.labels, cls.top1_boxes, cls.gt_class_boxes, cls.gt_boxes)

    @classmethod
    def scales(cls):
        return object_scales(cls.gt_boxes, [FRAME] * 5)

    @classmethod
    def ratios(cls):
        return box_to_object_areas(cls.gt_class_boxes, cls.gt_boxes)


# The per-bin numbers, by hand from the table above (None: empty bin).
EXPECTED = [
    dict(num_images=1, top1_cls_error=0.0, top1_loc_error=0.0, gt_known_loc_acc=100.0, mean_iou=1.0,
         mean_gt_known_iou=1.0, median_box_to_object_area=1.0),
    dict(num_images=2, top1_cls_error=50.0, top1_loc_error=50.0, gt_known_loc_acc=100.0, mean_iou=0.8125,
         mean_gt_known_iou=0.5625, median_box_to_object_area=0.5625),
    dict(num_images=1, top1_cls_error=0.0, top1_loc_error=100.0, gt_known_loc_acc=0.0, mean_iou=0.4,
         mean_gt_known_iou=0.4, median_box_to_object_area=0.4),
    None,
    dict(num_images=1, top1_cls_error=0.0, top1_loc_error=0.0, gt_known_loc_acc=100.0, mean_iou=0.6,
         mean_gt_known_iou=0.6, median_box_to_object_area=0.6),
]


def _check_bins(bins, expected=EXPECTED, approx=1e-12):
    assert [row["bin"] for row in bins] == scale_bin_labels()
    assert [(row["low"], row["high"]) for row in bins] == list(zip(SCALE_BIN_EDGES[:-1], SCALE_BIN_EDGES[1:]))
    for row, want in zip(bins, expected):
        if want is None:
            assert row == {"bin": "[0.3, 0.5)", "low": 0.3, "high": 0.5, "num_images": 0}  # metrics left out
            continue
        for key, value in want.items():
            assert row[key] == pytest.approx(value, abs=approx), (row["bin"], key)
        assert set(METRIC_KEYS) <= set(row)


def test_example_scales_and_ratios():
    assert Example.scales().tolist() == [0.09, 0.1, 0.16, 0.25, 1.0]
    assert scale_bins(Example.scales()).tolist() == [0, 1, 1, 2, 4]
    assert Example.ratios().tolist() == [1.0, 0.5, 0.625, 0.4, 0.6]
    outcome = Example.outcome()
    assert outcome.top1_iou.tolist() == [1.0, 1.0, 0.625, 0.4, 0.6]
    assert outcome.gt_known_iou.tolist() == [1.0, 0.5, 0.625, 0.4, 0.6]


def test_metrics_by_scale_hand_computed():
    _check_bins(metrics_by_scale(Example.outcome(), Example.scales(), Example.ratios()))


def test_bins_add_up_to_the_whole_split():
    bins = metrics_by_scale(Example.outcome(), Example.scales())
    meter = LocalizationMeter()
    meter.update(Example.outcome())
    overall = meter.compute()  # top-1 loc: A, C, E of 5 -> error 40
    assert overall["top1_loc_error"] == 40.0
    filled = [row for row in bins if row["num_images"]]
    assert sum(row["num_images"] for row in bins) == overall["num_images"] == 5
    for key in ("top1_cls_error", "top1_loc_error", "top5_loc_error", "gt_known_loc_acc", "mean_iou"):
        weighted = sum(row[key] * row["num_images"] for row in filled) / 5
        assert weighted == pytest.approx(overall[key]), key
    assert all("median_box_to_object_area" not in row for row in bins)  # no ratios given: no key


def test_streaming_meter_equals_one_call():
    outcome, scales, ratios = Example.outcome(), Example.scales(), Example.ratios()
    meter = ObjectScaleMeter()
    for part in ([0, 3], [1, 2, 4]):  # two batches, bin 1 split across them
        rows = np.zeros(5, dtype=bool)
        rows[part] = True
        batch = type(outcome)(**{name: value[rows] for name, value in vars(outcome).items()})
        meter.update(batch, scales[rows], ratios[rows])
    assert meter.compute() == metrics_by_scale(outcome, scales, ratios)
    with pytest.raises(ValueError, match="with every update or with none"):
        meter.update(outcome, scales)


def test_streaming_meter_is_bit_identical_to_one_call_for_any_batches():
    # 300 images with irregular IoUs in uneven batches: summing per batch would round differently.
    generator = np.random.default_rng(0)
    count = 300
    flags = {name: generator.random(count) < 0.6 for name in ("top1_correct", "top5_correct", "top1_loc",
                                                                "top5_loc", "gt_known_loc")}
    outcome = type(Example.outcome())(**flags, top1_iou=generator.random(count), gt_known_iou=generator.random(count))
    scales, ratios = generator.random(count), generator.random(count) * 3
    meter = ObjectScaleMeter()
    edges = [0, 1, 17, 64, 65, 190, count]
    for start, stop in zip(edges[:-1], edges[1:]):
        part = slice(start, stop)
        meter.update(type(outcome)(**{name: value[part] for name, value in vars(outcome).items()}), scales[part],
                     ratios[part])
    assert meter.compute() == metrics_by_scale(outcome, scales, ratios)
    assert ObjectScaleMeter().compute() == [{"bin": label, "low": low, "high": high, "num_images": 0}
                                            for label, low, high in zip(scale_bin_labels(), SCALE_BIN_EDGES[:-1],
                                                                        SCALE_BIN_EDGES[1:])]


def test_per_image_means_equal_the_meter_bit_for_bit():
    # The per-bin aggregation takes means of per-image values; the split's meter counts. They must agree exactly.
    generator = np.random.default_rng(1)
    for count in (1, 3, 7, 8, 9, 127, 128, 129, 300, 1001):
        flags = {name: generator.random(count) < 0.37 for name in ("top1_correct", "top5_correct", "top1_loc",
                                                                    "top5_loc", "gt_known_loc")}
        outcome = type(Example.outcome())(**flags, top1_iou=generator.random(count),
                                          gt_known_iou=generator.random(count))
        meter = LocalizationMeter()
        meter.update(outcome)
        expected = meter.compute()
        means = {key: float(np.mean(values)) for key, values in per_image_metrics(outcome).items()}
        assert means == {key: value for key, value in expected.items() if key != "num_images"}, count


def test_metrics_by_bin_hand_computed():
    bins = np.array([1, 1, 4, 1])
    rows = metrics_by_bin({"loc": np.array([100.0, 0.0, 100.0, 100.0])}, bins, {"ratio": np.array([1, 4, 2, 3.0])})
    assert [row["num_images"] for row in rows] == [0, 3, 0, 0, 1]
    assert rows[1] == {"bin": "[0.1, 0.2)", "low": 0.1, "high": 0.2, "num_images": 3, "loc": 200 / 3, "ratio": 3.0}
    assert rows[4] == {"bin": "[0.5, 1]", "low": 0.5, "high": 1.0, "num_images": 1, "loc": 100.0, "ratio": 2.0}
    assert rows[0] == {"bin": "[0, 0.1)", "low": 0.0, "high": 0.1, "num_images": 0}
    with pytest.raises(ValueError, match=r"per-image values 'ratio' must have the shape of bins \(4,\); got \(3,\)"):
        metrics_by_bin({}, bins, {"ratio": np.ones(3)})


def test_all_bins_empty_but_one():
    outcome = Example.outcome()
    bins = metrics_by_scale(outcome, np.full(5, 0.35))
    assert [row["num_images"] for row in bins] == [0, 0, 0, 5, 0]
    assert all(set(row) == {"bin", "low", "high", "num_images"} for i, row in enumerate(bins) if i != 3)
    assert set(bins[3]) == {"bin", "low", "high", *METRIC_KEYS, "mean_gt_known_iou"}


def test_scales_must_match_the_outcome():
    with pytest.raises(ValueError, match=r"scales must have shape \(B,\) = \(5,\); got \(4,\)"):
        metrics_by_scale(Example.outcome(), np.zeros(4))


# ---- reading a finished run's predictions.csv ----

def _samples(size=FRAME) -> list[Sample]:
    """The example's images as the dataset gives them: boxes in a 200 x 200 original frame, scored at 100 x 100."""
    scale = size[0] / FRAME[0]
    return [Sample(image_id=image_id, image_path=Path(image_id), label=int(label), boxes=(boxes * scale).astype(
        np.float32), size=size, mask_paths=()) for image_id, label, boxes in zip(Example.ids, Example.labels,
                                                                                  Example.gt_boxes)]


def _write_predictions(path: Path):
    """The example's predictions.csv, through evaluation's own writer (rows as score_batch formats them); returns
    the writer's :class:`EvaluationResult`."""
    outcome = Example.outcome()

    def box(values):
        return " ".join(f"{v:.6g}" for v in values)

    rows = [[image_id, int(Example.labels[i]), " ".join(map(str, Example.topk[i])), "0.6000 0.4000",
             ";".join(box(b) for b in Example.gt_boxes[i]), box(Example.top1_boxes[i]), f"{outcome.top1_iou[i]:.4f}",
             box(Example.gt_class_boxes[i]), f"{outcome.gt_known_iou[i]:.4f}", int(outcome.top1_correct[i]),
             int(outcome.top5_correct[i]), int(outcome.top1_loc[i]), int(outcome.top5_loc[i]),
             int(outcome.gt_known_loc[i])] for i, image_id in enumerate(Example.ids)]
    batch = ScoredBatch(rows=rows, outcome=outcome, object_scales=Example.scales(), box_to_object=Example.ratios(),
                        image_ids=list(Example.ids), top1_cams=[], gt_cams=[], gallery=[])
    return collect_results([batch], path)


def test_reader_needs_only_columns_that_evaluation_writes():
    assert set(NEEDED_COLUMNS) <= set(PREDICTION_COLUMNS)


def test_reader_reproduces_the_in_memory_bins(tmp_path):
    path = tmp_path / "predictions.csv"
    written = _write_predictions(path)
    # Scales from the dataset (a 200 x 200 original frame), box ratios from the file's 100 x 100 frame.
    bins = read_metrics_by_scale(path, _samples(size=(200, 200)))
    _check_bins(bins)
    assert bins == metrics_by_scale(Example.outcome(), Example.scales(), Example.ratios())
    assert written.by_object_scale == bins  # the writer's own pass gives what the file gives back


def test_the_writer_bins_the_iou_the_file_records(tmp_path):
    # An IoU of 1/3 is written as 0.3333: the bins in memory hold that value, as a reader of the file gets it.
    third = np.array([[0.0, 0, 30, 100]])  # a 30 x 100 box inside a 90 x 100 GT box: IoU 1/3
    outcome = localization_outcomes(np.array([[0, 1]]), np.array([0]), third, third, [np.array([[0.0, 0, 90, 100]])])
    assert outcome.top1_iou[0] == 1 / 3
    row = ["a.png", 0, "0 1", "0.6000 0.4000", "0 0 90 100", "0 0 30 100", "0.3333", "0 0 30 100", "0.3333",
           1, 1, 0, 0, 0]
    batch = ScoredBatch(rows=[row], outcome=outcome, object_scales=np.array([0.9]), box_to_object=np.array([1 / 3]),
                        image_ids=["a.png"], top1_cams=[], gt_cams=[], gallery=[])
    result = collect_results([batch], tmp_path / "predictions.csv")
    assert result.metrics["mean_iou"] == 1 / 3  # the split's metric keeps the exact IoU
    assert result.by_object_scale[4]["mean_iou"] == 0.3333 == result.by_object_scale[4]["mean_gt_known_iou"]


def test_reader_accepts_a_larger_split(tmp_path):
    path = tmp_path / "predictions.csv"
    _write_predictions(path)
    extra = Sample("z.png", Path("z.png"), 0, np.array([[0, 0, 1, 1]], dtype=np.float32), FRAME, ())
    assert read_metrics_by_scale(path, [extra, *_samples()]) == read_metrics_by_scale(path, _samples())


def _rewrite(path: Path, edit) -> None:
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    edit(rows)
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def test_reader_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "predictions.csv"
    _write_predictions(path)
    with pytest.raises(PredictionsFileError, match=r"predictions.csv:4: image 'c.png' is not in the given split"):
        read_metrics_by_scale(path, [s for s in _samples() if s.image_id != "c.png"])
    other = [Sample(s.image_id, s.image_path, s.label, s.boxes[:1].repeat(2, axis=0), s.size, ()) for s in _samples()]
    with pytest.raises(PredictionsFileError, match=r":2: image 'a.png' has 1 ground-truth box\(es\).*2 and 1 expected"):
        read_metrics_by_scale(path, other)

    _rewrite(path, lambda rows: rows[3].__setitem__(PREDICTION_COLUMNS.index("gt_known_loc"), "yes"))
    with pytest.raises(PredictionsFileError, match=r":4: column 'gt_known_loc' holds 'yes': expected 0 or 1"):
        read_metrics_by_scale(path, _samples())
    _write_predictions(path)
    _rewrite(path, lambda rows: rows[2].__setitem__(PREDICTION_COLUMNS.index("gt_class_box"), "1 2 3"))
    with pytest.raises(PredictionsFileError, match=r":3: column 'gt_class_box' holds '1 2 3'"):
        read_metrics_by_scale(path, _samples())
    _write_predictions(path)
    _rewrite(path, lambda rows: rows.__setitem__(5, rows[5][:6]))
    with pytest.raises(PredictionsFileError, match=r":6: the row is cut short \(6 cells, 14 columns"):
        read_metrics_by_scale(path, _samples())


def test_reader_rejects_a_file_without_the_columns_or_rows(tmp_path):
    path = tmp_path / "predictions.csv"
    path.write_text("image_id,label\n")
    with pytest.raises(PredictionsFileError, match=r"predictions.csv:1: header lacks the column\(s\) \['gt_boxes'"):
        read_metrics_by_scale(path, _samples())
    path.write_text(",".join(PREDICTION_COLUMNS) + "\n")
    with pytest.raises(PredictionsFileError, match="no image rows after the header"):
        read_metrics_by_scale(path, _samples())
    assert issubclass(PredictionsFileError, DatasetFormatError)  # exit code 2 in the CLI



def test_reader_on_a_finished_tiny_run(tiny_run):
    # A real run folder: the bins partition its test split and add up to its metrics.json.
    config, metrics = tiny_run.config, tiny_run.metrics
    samples = load_dataset(config.dataset, Path(config.data_root), progress=False).splits[config.eval.split]
    bins = read_metrics_by_scale(config.run_dir / "predictions.csv", samples)
    # The run binned its images while scoring; its predictions.csv gives the same numbers back, bit for bit.
    assert json.loads((config.run_dir / "metrics.json").read_text())["by_object_scale"] == bins
    filled = [row for row in bins if row["num_images"]]
    assert sum(row["num_images"] for row in bins) == metrics["num_images"] == len(samples)
    for key in ("top1_loc_error", "gt_known_loc_acc", "top1_cls_error"):  # from exact 0/1 columns
        weighted = sum(row[key] * row["num_images"] for row in filled) / metrics["num_images"]
        assert weighted == pytest.approx(metrics[key], abs=1e-9), key
    weighted_iou = sum(row["mean_iou"] * row["num_images"] for row in filled) / metrics["num_images"]
    assert weighted_iou == pytest.approx(metrics["mean_iou"], abs=5e-5)  # the file's IoUs have 4 decimals
    scales = object_scales([s.boxes for s in samples], [s.size for s in samples])
    assert [row["num_images"] for row in bins] == np.bincount(scale_bins(scales), minlength=5).tolist()
