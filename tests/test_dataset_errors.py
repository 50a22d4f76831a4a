"""A user's dataset that is not where the config says, a box outside its image, a class the splits leave out.

Each is refused with exit code 2 before a run folder exists, naming the key, the file and line, the split or the
class, or, for a class with fewer than two val images, logged as one warning line.
"""

from pathlib import Path

import numpy as np
import pytest
from helpers import TINY_CONFIG, tiny_run_config
from PIL import Image

from bench.commands.cli import main
from bench.config import load_config
from bench.data.images import check_images
from bench.data.samples import DatasetFormatError, Sample, check_classes
from bench.data.wsol_layout import read_metadata
from bench.run import pipeline


def write_csv_dataset(folder: Path, rows: list[str]) -> Path:
    """``folder/boxes.csv`` with ``rows`` under the header; every image it names is a 30 x 20 (W x H) PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    for row in rows:
        image = folder / row.split(",")[0]
        if not image.exists():
            Image.new("RGB", (30, 20), (40, 80, 120)).save(image)
    path = folder / "boxes.csv"
    path.write_text("image,label,split,x0,y0,x1,y1\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def csv_overrides(tmp_path: Path, data_root: Path, path: str) -> list[str]:
    return [f"data_root={data_root}", f"results_dir={tmp_path / 'results'}", "dataset.name=csv",
            f"dataset.path={path}"]


# Two classes with train, val and test images each; boxes inside their 30 x 20 images.
GOOD_ROWS = ["cat_1.png,cat,train,,,,", "dog_1.png,dog,train,,,,", "cat_2.png,cat,val,1,1,20,15",
             "cat_3.png,cat,val,2,2,20,15", "dog_2.png,dog,val,0,0,30,20", "dog_3.png,dog,val,5,5,10,10",
             "cat_4.png,cat,test,1,1,9,9", "dog_4.png,dog,test,3,3,29,19"]


# ----------------------------------------------------------------------------- dataset.path and data_root


def test_a_relative_dataset_path_is_read_under_data_root_and_the_error_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_csv_dataset(tmp_path / "mydata", GOOD_ROWS)  # ./mydata/boxes.csv, but data_root is ./data
    (tmp_path / "data").mkdir()
    code = main(["data", str(TINY_CONFIG), *csv_overrides(tmp_path, Path("data"), "mydata/boxes.csv")])
    assert code == 2
    assert capsys.readouterr().err == (
        "error: dataset.path 'mydata/boxes.csv' is read relative to data_root 'data', so at data/mydata/boxes.csv, "
        "and nothing is there (mydata/boxes.csv does exist relative to the current folder: give it as the absolute "
        f"path dataset.path: {tmp_path / 'mydata' / 'boxes.csv'}); expected your CSV file "
        "(image,label,split,x0,y0,x1,y1). Give dataset.path relative to data_root, or as an absolute path, or set "
        "data_root to the folder that holds it (data_root=/path on the command line, make ... DATA_ROOT=/path). "
        "See data/README.md, section 'Real datasets'.\n")
    # Both fixes the message names work: the absolute path, or data_root at the folder above mydata/.
    absolute = str(tmp_path / "mydata" / "boxes.csv")
    assert main(["data", str(TINY_CONFIG), *csv_overrides(tmp_path, Path("data"), absolute)]) == 0
    assert main(["data", str(TINY_CONFIG), *csv_overrides(tmp_path, tmp_path, "mydata/boxes.csv")]) == 0
    assert not (tmp_path / "results").exists()


def test_a_missing_absolute_dataset_path_is_named_as_given(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "CUB_200_2011"
    code = main(["run", str(TINY_CONFIG), f"data_root={tmp_path}", f"results_dir={tmp_path / 'results'}",
                 "dataset.name=cub", f"dataset.path={missing}"])
    assert code == 2
    assert capsys.readouterr().err == (
        f"error: dataset.path {missing} does not exist (expected the CUB_200_2011 folder (or its parent)); correct "
        "dataset.path. See data/README.md, section 'Real datasets'.\n")
    assert not (tmp_path / "results").exists()


# ----------------------------------------------------------------------------- a box outside its image


def test_a_box_outside_its_image_names_the_split_the_csv_line_the_box_and_the_image_size(tmp_path, capsys):
    rows = GOOD_ROWS[:-1] + ["dog_4.png,dog,test,3,3,29,19", "dog_4.png,dog,test,10,2,34,18"]  # 4 px too wide
    path = write_csv_dataset(tmp_path / "data", rows)
    code = main(["run", str(TINY_CONFIG), *csv_overrides(tmp_path, tmp_path / "data", "boxes.csv")])
    assert code == 2
    assert capsys.readouterr().err == (
        f"error: 1 of 2 test images have problems:\n  {tmp_path / 'data' / 'dog_4.png'}: box [10, 2, 34, 18] "
        f"({path}, line 10) is outside the 30x20 (WxH) image by more than 1 px\nFix or remove them, or set "
        "dataset.skip_bad: true to skip them (they are then listed in the manifest).\n")
    assert not (tmp_path / "results").exists()


def test_a_box_outside_its_image_in_wsolevaluation_metadata_names_localization_txt_and_its_line(tmp_path):
    folder = tmp_path / "metadata" / "test"
    folder.mkdir(parents=True)
    Image.new("RGB", (30, 20)).save(tmp_path / "a.png")
    Image.new("RGB", (30, 20)).save(tmp_path / "b.png")
    (folder / "image_ids.txt").write_text("a.png\nb.png\n", encoding="utf-8")
    (folder / "class_labels.txt").write_text("a.png,0\nb.png,0\n", encoding="utf-8")
    (folder / "image_sizes.txt").write_text("a.png,30,20\nb.png,30,20\n", encoding="utf-8")
    # wsolevaluation's folders are read with 1 px of slack (strict_boxes=False), so check_images judges the bounds
    (folder / "localization.txt").write_text("a.png,0,0,31,20\nb.png,1,1,5,5\nb.png,0,0,30,23\n", encoding="utf-8")
    samples = read_metadata(folder, "test", tmp_path, num_classes=1, strict_boxes=False)
    assert samples[1].box_lines == (f"{folder / 'localization.txt'}, line 2", f"{folder / 'localization.txt'}, line 3")
    with pytest.raises(DatasetFormatError) as error:
        check_images(samples, skip_bad=False, split="test")
    assert str(error.value).startswith(
        f"1 of 2 test images have problems:\n  {tmp_path / 'b.png'}: box [0, 0, 30, 23] "
        f"({folder / 'localization.txt'}, line 3) is outside the 30x20 (WxH) image by more than 1 px\n")
    kept, skipped = check_images(samples, skip_bad=True, split="test")
    assert [sample.image_id for sample in kept] == ["a.png"]  # its 1 px overshoot is within the slack: clipped
    np.testing.assert_array_equal(kept[0].boxes, np.array([[0, 0, 30, 20]], np.float32))
    assert skipped[0]["reason"] == (f"box [0, 0, 30, 23] ({folder / 'localization.txt'}, line 3) is outside the "
                                    "30x20 (WxH) image by more than 1 px")


# ----------------------------------------------------------------------------- classes the splits leave out


def sample(label: int, name: str = "x.png") -> Sample:
    return Sample(name, Path(name), label, np.ones((1, 4), np.float32), (4, 4), ())


def test_a_class_without_train_images_is_refused_naming_it():
    names = ["cat", "dog", "eel"]
    with pytest.raises(DatasetFormatError) as error:
        check_classes(names, [sample(0), sample(0), sample(2)], [sample(0), sample(1), sample(1)], "my data")
    assert str(error.value) == (
        "my data: 1 class(es) have no image in the train split: 'dog' (label 1); the classifier could never "
        "predict them. Add train images of each, or remove the class (its line in the class list and its val / "
        "test images)")


def test_classes_with_fewer_than_two_val_images_give_one_warning_line():
    names = ["cat", "dog", "eel"]
    train = [sample(0), sample(1), sample(2)]
    assert check_classes(names, train, [sample(0), sample(0), sample(1)], "my data") == [
        "2 of 3 classes have fewer than 2 images in the val split (images each): 'dog' (label 1): 1, 'eel' "
        "(label 2): 0; val chooses tau and the reported epoch, which then hardly see them. Add val images "
        "(dataset.val_size for CUB / ImageNet) for choices that stand for every class"]
    assert check_classes(names, train, [sample(k) for k in (0, 0, 1, 1, 2, 2)], "my data") == []
    assert check_classes(names, train, [], "my data") == []  # no val split used: nothing to warn of


def test_a_class_with_only_test_images_stops_the_run_with_exit_2(tmp_path, capsys):
    rows = [row for row in GOOD_ROWS if not row.startswith("dog_1")]  # dog keeps its val and test images
    path = write_csv_dataset(tmp_path / "data", rows)
    code = main(["run", str(TINY_CONFIG), *csv_overrides(tmp_path, tmp_path / "data", "boxes.csv")])
    assert code == 2
    assert capsys.readouterr().err == (
        f"error: CSV {path} (2 classes; train / val / test: 1 / 4 / 2 images): 1 class(es) have no image in the "
        "train split: 'dog' (label 1); the classifier could never predict them. Add train images of each, or "
        "remove the class (its line in the class list and its val / test images)\n")
    assert not (tmp_path / "results").exists()


def test_a_class_with_one_val_image_is_logged_by_run_and_data(tmp_path, capsys):
    rows = [row for row in GOOD_ROWS if not row.startswith("dog_3")]  # dog has one val image left
    write_csv_dataset(tmp_path / "data", rows)
    overrides = csv_overrides(tmp_path, tmp_path / "data", "boxes.csv")
    *_, warnings = pipeline._read_data(load_config(TINY_CONFIG, overrides))  # what run logs, before training
    expected = ("2 classes have fewer than 2 images in the val split (images each): 'dog' (label 1): 1; val "
                "chooses tau")
    assert len(warnings) == 1 and warnings[0].startswith(f"1 of {expected}")
    assert main(["data", str(TINY_CONFIG), *overrides]) == 0
    assert f"\nwarning: 1 of {expected}" in capsys.readouterr().out



def test_the_tiny_config_has_every_class_in_train_and_two_val_images_each(tiny_data_dir, tmp_path):
    *_, warnings = pipeline._read_data(tiny_run_config(tiny_data_dir, tmp_path / "results"))
    assert warnings == []
