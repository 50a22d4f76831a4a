"""``export-wsol`` (bench.data.wsol_layout.write_wsol): all or nothing, so a failed export never blocks its rerun."""

from pathlib import Path

import numpy as np
import pytest

from bench.data.samples import DatasetSplits, Sample
from bench.data.wsol_layout import read_wsol_metadata, write_wsol


def sample(root: Path, name: str, label: int, boxes: list[list[float]]) -> Sample:
    return Sample(name, root / name, label, np.array(boxes, np.float32).reshape(-1, 4), (20, 30), ())


def dataset(root: Path, test_name: str = "b/test_0.jpg") -> DatasetSplits:
    train = [sample(root, "a/train_0.jpg", 0, []), sample(root, "b/train_1.jpg", 1, [[1, 2, 10, 12]])]
    test = [sample(root, test_name, 1, [[0, 0, 30, 20]])]
    return DatasetSplits(["cat", "dog"], {"train": train, "val": [], "test": test}, "two classes")


def test_a_split_the_format_cannot_hold_writes_nothing_and_the_fixed_rerun_succeeds(tmp_path):
    images, metadata = tmp_path / "images", tmp_path / "metadata"
    with pytest.raises(ValueError, match="'b/test,0.jpg' contains a comma"):
        write_wsol(dataset(images, "b/test,0.jpg"), metadata, images)
    assert not metadata.exists() or list(metadata.iterdir()) == []  # train/ and classes.txt used to stay
    write_wsol(dataset(images), metadata, images)  # used to raise "already holds split folder(s) train"
    assert (metadata / "classes.txt").read_text() == "0,cat\n1,dog\n"
    # Written inclusive (wsolevaluation's convention, box_convention.txt): [1, 2, 10, 12) -> 1,2,9,11.
    assert (metadata / "train" / "localization.txt").read_text() == "b/train_1.jpg,1,2,9,11\n"
    assert (metadata / "box_convention.txt").read_text() == "inclusive\n"
    assert (metadata / "test" / "image_sizes.txt").read_text() == "b/test_0.jpg,30,20\n"
    assert sorted(p.name for p in metadata.iterdir()) == ["box_convention.txt", "classes.txt", "test", "train"]


def test_a_write_failing_half_way_removes_the_splits_already_written(tmp_path):
    images, metadata = tmp_path / "images", tmp_path / "metadata"
    metadata.mkdir()
    images.mkdir()  # read back below
    (metadata / "train.tmp").mkdir()  # left by a writer killed mid-split: removed, not an obstacle
    (metadata / "train.tmp" / "image_ids.txt").write_text("half\n")
    (metadata / "test.tmp").write_text("")  # a plain file where test's staging folder goes: that write fails
    with pytest.raises(FileExistsError):
        write_wsol(dataset(images), metadata, images)
    assert sorted(p.name for p in metadata.iterdir()) == ["test.tmp"]  # train/ (renamed already) removed again
    (metadata / "test.tmp").unlink()
    write_wsol(dataset(images), metadata, images)
    back = read_wsol_metadata(metadata, images)
    assert back.class_names == ["cat", "dog"]
    assert [s.image_id for s in back.splits["train"]] == ["a/train_0.jpg", "b/train_1.jpg"]
    assert back.splits["test"][0].boxes.tolist() == [[0, 0, 30, 20]]
    assert sorted(p.name for p in metadata.iterdir()) == ["box_convention.txt", "classes.txt", "test", "train"]
