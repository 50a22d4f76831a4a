"""wsolevaluation's OpenImages mask layout: instance masks + ignore mask, boxes derived from masks, PxAP with ignore."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.data.samples import DatasetFormatError
from bench.data.wsol_layout import read_metadata, read_wsol_metadata
from bench.scoring.evaluation import SweepMeters, mask_in_frame
from bench.scoring.threshold_free_metrics import PixelPrecisionMeter

LOCALIZATION = ("val/a.png,masks/a_0.png,masks/a_ignore.png\n"
                "val/a.png,masks/a_1.png,\n"
                "val/b.png,masks/b_0.png,\n")


def _png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def _mask(shape: tuple[int, int], *cells: tuple[slice, slice]) -> np.ndarray:
    """0/255 mask of ``shape (H, W)`` with 255 on each ``(rows, cols)`` cell."""
    mask = np.zeros(shape, np.uint8)
    for rows, cols in cells:
        mask[rows, cols] = 255
    return mask


def write_fixture(tmp_path: Path, localization: str = LOCALIZATION) -> tuple[Path, Path]:
    """Image a: 6x8 (HxW), 2 instances + ignore; image b: 8x8, 1 instance drawn at 4x4. Returns (metadata, images)."""
    images = tmp_path / "dataset"
    _png(images / "val/a.png", np.zeros((6, 8, 3)))
    _png(images / "val/b.png", np.zeros((8, 8, 3)))
    _png(images / "masks/a_0.png", _mask((6, 8), (slice(1, 3), slice(1, 4))))  # box [1, 1, 4, 3]
    _png(images / "masks/a_1.png", _mask((6, 8), (slice(4, 5), slice(5, 7))))  # box [5, 4, 7, 5]
    # Ignore: column 7, plus pixel (1, 1) which is object (a_0) and so stays object.
    _png(images / "masks/a_ignore.png", _mask((6, 8), (slice(None), slice(7, 8)), (slice(1, 2), slice(1, 2))))
    _png(images / "masks/b_0.png", _mask((4, 4), (slice(1, 2), slice(2, 3))))  # box [2, 1, 3, 2] at 4x4
    _png(images / "train/c.png", np.zeros((4, 4, 3)))
    metadata = tmp_path / "metadata"
    (metadata / "train").mkdir(parents=True)  # train: labels only, no localization.txt
    (metadata / "train/image_ids.txt").write_text("train/c.png\n")
    (metadata / "train/class_labels.txt").write_text("train/c.png,1\n")
    folder = metadata / "test"
    folder.mkdir()
    (folder / "image_ids.txt").write_text("val/a.png\nval/b.png\n")
    (folder / "class_labels.txt").write_text("val/a.png,0\nval/b.png,1\n")
    (folder / "image_sizes.txt").write_text("val/a.png,8,6\nval/b.png,8,8\n")
    (folder / "localization.txt").write_text(localization)
    return metadata, images


def test_mask_layout_gives_instance_masks_ignore_and_derived_boxes(tmp_path):
    metadata, images = write_fixture(tmp_path)
    a, b = read_metadata(metadata / "test", "test", images, 2, images)
    assert a.mask_paths == (images / "masks/a_0.png", images / "masks/a_1.png")
    assert a.ignore_path == images / "masks/a_ignore.png"
    assert b.mask_paths == (images / "masks/b_0.png",) and b.ignore_path is None
    np.testing.assert_array_equal(a.boxes, [[1, 1, 4, 3], [5, 4, 7, 5]])
    np.testing.assert_array_equal(b.boxes, [[4, 2, 6, 4]])  # [2, 1, 3, 2] at 4x4, scaled x2 to 8x8
    assert a.boxes.dtype == np.float32 and (a.size, b.size) == ((6, 8), (8, 8))


def test_read_wsol_metadata_reads_the_mask_layout_end_to_end(tmp_path):
    metadata, images = write_fixture(tmp_path)
    splits = read_wsol_metadata(metadata, images)  # masks_root defaults to the image root
    assert splits.class_names == ["class_0", "class_1"]
    assert [len(samples) for samples in splits.splits.values()] == [1, 0, 2]
    a, b = splits.splits["test"]
    assert a.image_path == images / "val/a.png" and len(a.mask_paths) == 2 and b.ignore_path is None
    assert splits.splits["train"][0].mask_paths == () and splits.splits["train"][0].size == (4, 4)
    np.testing.assert_array_equal(b.boxes, [[4, 2, 6, 4]])


def test_mask_in_frame_is_the_union_and_ignore_leaves_object_pixels_alone(tmp_path):
    metadata, images = write_fixture(tmp_path)
    a, b = read_metadata(metadata / "test", "test", images, 2, images)
    union, ignore = mask_in_frame(a, (6, 8))
    assert union.sum() == 6 + 2 and union[1:3, 1:4].all() and union[4, 5:7].all()
    assert ignore.sum() == 6 and ignore[:, 7].all() and not ignore[1, 1]  # (1, 1) is object: not ignored
    union, ignore = mask_in_frame(b, (8, 8))  # the 4x4 mask resized (nearest) to the 8x8 frame
    assert ignore is None and union.sum() == 4 and union[2:4, 4:6].all()


def test_pxap_with_ignore_hand_computed():
    """Scores [[0.9, 0.8], [0.3, 0.1]], object = left column, thresholds 0, 0.25, 0.5, 0.75.

    No ignore: tau 0.75 keeps {0.9+, 0.8-}: P 1/2, R 1/2; tau 0.25 adds 0.3+: P 2/3, R 1.
    PxAP = 1/2 * 1/2 + 1/2 * 2/3 = 7/12. Ignoring the negative 0.8: P = 1 at both, PxAP = 1.
    Ignoring the positive 0.3 (ignore counts on both sides): tau 0.75 gives P 1/2, R 1: PxAP = 1/2.
    """
    scores = np.array([[0.9, 0.8], [0.3, 0.1]], np.float32)
    mask = np.array([[True, False], [True, False]])
    thresholds = np.array([0.0, 0.25, 0.5, 0.75])
    expected = {None: 700 / 12, (0, 1): 100.0, (1, 0): 50.0}
    for cell, value in expected.items():
        meter = PixelPrecisionMeter(thresholds)
        ignore = None if cell is None else np.zeros((2, 2), bool)
        if cell is not None:
            ignore[cell] = True
        meter.update(scores, mask, ignore)
        assert meter.compute() == pytest.approx(value)
    with pytest.raises(ValueError, match="ignore"):
        PixelPrecisionMeter(thresholds).update(scores, mask, np.zeros((1, 2), bool))


@pytest.mark.parametrize("localization, problem", [
    ("val/a.png,masks/a_0.png,\nval/a.png,1,1,3,3\n", "line 2: 5 field\\(s\\), 3 expected.*mask layout, from line 1"),
    ("val/a.png,1,1,3,3\nval/b.png,masks/b_0.png,\n", "line 2: 3 field\\(s\\), 5 expected.*box layout, from line 1"),
    ("val/a.png,masks/a_0.png,,x\n", "line 1: 4 field\\(s\\), 5 expected"),  # neither layout
    ("val/a.png,,\n", "line 1: field 2 is empty"),
    (LOCALIZATION.replace("a_1.png,", "a_1.png,masks/a_ignore.png"), "line 2: ignore mask on a later line"),
    (LOCALIZATION.replace("b_0.png", "missing.png"), "line 3: cannot read instance mask"),
    (LOCALIZATION.replace("a_1.png", "empty.png"), "line 2: instance mask .* has no object pixel"),
    ("val/a.png,masks/a_0.png,\n", "no instance mask for 1 image id"),
])
def test_malformed_mask_layout_names_file_and_line(tmp_path, localization, problem):
    metadata, images = write_fixture(tmp_path, localization)
    _png(images / "masks/empty.png", np.zeros((6, 8)))
    with pytest.raises(DatasetFormatError, match=problem) as error:
        read_metadata(metadata / "test", "test", images, 2, images)
    assert str(metadata / "test" / "localization.txt") in str(error.value)


def test_mask_layout_needs_a_masks_root_and_excludes_masks_txt(tmp_path):
    metadata, images = write_fixture(tmp_path)
    with pytest.raises(DatasetFormatError, match="no masks root"):
        read_metadata(metadata / "test", "test", images, 2)
    (metadata / "test" / "masks.txt").write_text("val/a.png,masks/a_0.png\n")
    with pytest.raises(DatasetFormatError, match="masks.txt: masks are already listed"):
        read_metadata(metadata / "test", "test", images, 2, images)


def test_sweep_meters_pxap_leaves_the_ignored_pixels_out(tmp_path):
    """Image a: object pixels (8) score 0.5, the ignored column 7 (6 pixels) scores 1.

    Counted as negatives they would give PxAP = 8/14 (all kept at tau = 0.5, none
    of them object above it) = 57.14 %; ignored, only object pixels remain: 100 %.
    """
    metadata, images = write_fixture(tmp_path)
    a, _ = read_metadata(metadata / "test", "test", images, 2, images)
    union, ignore = mask_in_frame(a, (6, 8))
    cam = np.where(ignore, 1.0, np.where(union, 0.5, 0.0)).astype(np.float32)
    thresholds = np.arange(100) / 100
    meters = SweepMeters.for_thresholds(thresholds)
    meters.update([cam], [a], [a.boxes], np.array([True]), np.array([True]), "max")
    assert meters.pixels.compute() == pytest.approx(100.0)
    without = PixelPrecisionMeter(thresholds)
    without.update(cam, union)
    assert without.compute() == pytest.approx(800 / 14)
