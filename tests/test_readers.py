"""Native dataset readers (CUB, ImageNet, wsolevaluation, CSV) and the image checks, on tiny written fixtures."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data

from bench.data.images import check_images
from bench.data.native_readers import carve_val, inclusive_to_half_open, read_csv_dataset, read_cub, read_imagenet
from bench.data.samples import UNKNOWN_SIZE, DatasetFormatError, DatasetNotFoundError, DatasetSplits, Sample
from bench.data.wsol_layout import read_split, read_wsol, read_wsol_metadata, write_class_names, write_split, write_wsol


def write_image(path: Path, height: int, width: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (40, 80, 120)).save(path, format="PNG")  # any suffix: PIL reads the header
    return path


def same_samples(got: list[Sample], expected: list[Sample]) -> None:
    assert [(s.image_id, s.image_path, s.label, s.size, s.mask_paths) for s in got] == [
        (s.image_id, s.image_path, s.label, s.size, s.mask_paths) for s in expected]
    for a, b in zip(got, expected):
        assert a.boxes.dtype == np.float32 and a.boxes.shape == b.boxes.shape
        np.testing.assert_array_equal(a.boxes, b.boxes)


# ----------------------------------------------------------------------------- CUB-200-2011

# image id -> (path under images/, class_id 1-based, train flag, (H, W), "x y w h")
CUB_IMAGES = {
    "1": ("001.Red_bird/red_1.jpg", 1, 1, (30, 50), "2.5 3.0 10.25 20.0"),
    "2": ("001.Red_bird/red_2.jpg", 1, 1, (40, 40), "0 0 40 40"),
    "3": ("001.Red_bird/red_3.jpg", 1, 0, (20, 36), "1 1 5 5"),
    "4": ("002.Blue_bird/blue_1.jpg", 2, 1, (24, 16), "4 6 8 12.5"),
    "5": ("002.Blue_bird/blue_2.jpg", 2, 1, (18, 22), "0.5 0.5 3 3"),
    "6": ("002.Blue_bird/blue_3.jpg", 2, 0, (26, 14), "2 2 10 20"),
}


@pytest.fixture
def cub_root(tmp_path) -> Path:
    folder = tmp_path / "CUB_200_2011"
    files = {
        "classes.txt": "1 001.Red_bird\n2 002.Blue_bird\n",
        "images.txt": "".join(f"{i} {v[0]}\n" for i, v in CUB_IMAGES.items()),
        "image_class_labels.txt": "".join(f"{i} {v[1]}\n" for i, v in CUB_IMAGES.items()),
        "train_test_split.txt": "".join(f"{i} {v[2]}\n" for i, v in CUB_IMAGES.items()),
        "bounding_boxes.txt": "".join(f"{i} {v[4]}\n" for i, v in CUB_IMAGES.items()),
    }
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    for path, _, _, (height, width), _ in CUB_IMAGES.values():
        write_image(folder / "images" / path, height, width)
    return folder


def test_cub_labels_boxes_sizes_and_official_split(cub_root):
    data = read_cub(cub_root, val_size=0, seed=0)
    assert data.class_names == ["001.Red_bird", "002.Blue_bird"]
    assert data.splits["val"] == []
    assert [s.image_id for s in data.splits["test"]] == ["001.Red_bird/red_3.jpg", "002.Blue_bird/blue_3.jpg"]
    by_id = {s.image_id: s for samples in data.splits.values() for s in samples}
    red_1, blue_1 = by_id["001.Red_bird/red_1.jpg"], by_id["002.Blue_bird/blue_1.jpg"]
    assert (red_1.label, blue_1.label) == (0, 1)  # class ids 1, 2 -> labels 0, 1
    assert (red_1.size, blue_1.size) == ((30, 50), (24, 16))  # (H, W) from the image headers
    # x y w h -> [x, y, x + w, y + h)
    np.testing.assert_array_equal(red_1.boxes, np.array([[2.5, 3.0, 12.75, 23.0]], np.float32))
    np.testing.assert_array_equal(blue_1.boxes, np.array([[4, 6, 12, 18.5]], np.float32))
    assert red_1.image_path == cub_root / "images" / "001.Red_bird" / "red_1.jpg"
    assert "CUB-200-2011" in data.source and "4 / 2" in data.source


def test_cub_val_is_carved_from_train_with_the_seed(cub_root):
    data = read_cub(cub_root.parent, val_size=2, seed=3)  # the parent of CUB_200_2011/ is accepted too
    train_ids = {s.image_id for s in data.splits["train"]}
    val_ids = {s.image_id for s in data.splits["val"]}
    test_ids = {s.image_id for s in data.splits["test"]}
    assert len(val_ids) == 2 and len(train_ids) == 2 and len(test_ids) == 2  # official test count kept
    assert not val_ids & test_ids and not val_ids & train_ids
    assert train_ids | val_ids == {v[0] for v in CUB_IMAGES.values() if v[2] == 1}
    assert sorted(s.label for s in data.splits["val"]) == [0, 1]  # stratified: one per class
    again = read_cub(cub_root, val_size=2, seed=3)
    assert [s.image_id for s in again.splits["val"]] == [s.image_id for s in data.splits["val"]]
    splits_by_seed = {tuple(s.image_id for s in read_cub(cub_root, 2, seed).splits["val"]) for seed in range(8)}
    assert len(splits_by_seed) > 1


def test_carve_val_is_stratified_and_keeps_order():
    labels = [0] * 10 + [1] * 5 + [2] * 2
    samples = [Sample(f"{i}", Path(f"{i}.png"), label, np.zeros((1, 4), np.float32), (4, 4), ())
               for i, label in enumerate(labels)]
    rest, carved = carve_val(samples, 7, seed=0)
    counts = [sum(s.label == k for s in carved) for k in range(3)]
    assert sorted(counts) == [2, 2, 3] and counts[2] == 2  # round robin: 2 each, one class gets a third
    assert [int(s.image_id) for s in carved] == sorted(int(s.image_id) for s in carved)
    assert sorted(rest + carved, key=lambda s: int(s.image_id)) == samples
    with pytest.raises(DatasetFormatError, match="dataset.val_size is 17 but only 17 images"):
        carve_val(samples, 17, seed=0)


def test_cub_missing_root_names_expected_files_and_source(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        read_cub(tmp_path / "nowhere", val_size=0, seed=0)
    message = str(error.value)
    for expected in ("images.txt", "bounding_boxes.txt", "train_test_split.txt", "Caltech Vision Lab",
                     "Wah et al., 2011", str(tmp_path / "nowhere")):
        assert expected in message


def test_cub_missing_one_file_is_named(cub_root):
    (cub_root / "bounding_boxes.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"\(missing: bounding_boxes.txt\)"):
        read_cub(cub_root, val_size=0, seed=0)


@pytest.mark.parametrize(
    "name, text, line, problem",
    [
        ("bounding_boxes.txt", "1 0 0 5 5\n2 0 0 5 5\n3 1.0 x 4 5\n4 0 0 1 1\n5 0 0 1 1\n6 0 0 1 1\n", 3,
         "y 'x' is not a number"),
        ("bounding_boxes.txt", "1 0 0 5 5\n2 0 0 0 5\n3 0 0 4 5\n4 0 0 1 1\n5 0 0 1 1\n6 0 0 1 1\n", 2,
         "width 0.0 and height 5.0 must be > 0"),
        ("image_class_labels.txt", "1 1\n2 3\n3 1\n4 2\n5 2\n6 2\n", 2, r"class_id 3 outside 1..2"),
        ("train_test_split.txt", "1 1\n2 1\n3 2\n4 1\n5 1\n6 0\n", 3, "train flag 2"),
        ("train_test_split.txt", "1 1\n2 1\n3 0\n4 1\n5 1\n6 0\n7 1\n", 7, "id '7' is not in images.txt"),
        ("image_class_labels.txt", "1 1\n2 1\n3 1\n4 2\n4 2\n6 2\n", 5, "second line for id '4'"),
        ("classes.txt", "1 001.Red_bird\n3 002.Blue_bird\n", 2, "class_id 3 out of order"),
    ],
)
def test_cub_malformed_line_names_file_and_line(cub_root, name, text, line, problem):
    (cub_root / name).write_text(text)
    with pytest.raises(DatasetFormatError, match=problem) as error:
        read_cub(cub_root, val_size=0, seed=0)
    assert f"{cub_root / name}, line {line}:" in str(error.value)


def test_cub_image_without_box_is_an_error(cub_root):
    (cub_root / "bounding_boxes.txt").write_text("1 0 0 5 5\n2 0 0 5 5\n")
    with pytest.raises(DatasetFormatError, match=r"bounding_boxes.txt: no line for 4 id\(s\).*images.txt line 3"):
        read_cub(cub_root, val_size=0, seed=0)


# ----------------------------------------------------------------------------- ILSVRC 2012

SYNSETS = ["n00000001 tench, Tinca tinca", "n00000002 goldfish", "n00000003 shark, great white", "n00000004 hen"]
# validation image stem -> (H, W), [(wnid, inclusive xmin ymin xmax ymax)]
VAL_BOXES = {
    "ILSVRC2012_val_00000001": ((30, 40), [("n00000001", (1, 2, 5, 7)), ("n00000001", (10, 0, 39, 29))]),
    "ILSVRC2012_val_00000002": ((20, 24), [("n00000002", (0, 0, 9, 9))]),
    "ILSVRC2012_val_00000003": ((16, 28), [("n00000003", (3, 3, 4, 4)), ("n00000003", (0, 1, 2, 3)),
                                           ("n00000003", (5, 5, 27, 15))]),
    "ILSVRC2012_val_00000004": ((22, 18), [("n00000001", (2, 2, 8, 8))]),
    "ILSVRC2012_val_00000005": ((12, 30), [("n00000003", (0, 0, 29, 11))]),
    "ILSVRC2012_val_00000006": ((14, 10), [("n00000004", (1, 1, 2, 2))]),
}
TRAIN_SIZES = [(12, 20), (15, 10), (9, 14)]  # three images per class


def voc_xml(size, objects):
    height, width = size
    boxes = "".join(
        f"<object><name>{wnid}</name><pose>Unspecified</pose><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for wnid, b in objects)
    return (f"<annotation><folder>val</folder><size><width>{width}</width><height>{height}</height>"
            f"<depth>3</depth></size>{boxes}</annotation>\n")


def write_imagenet(root: Path, form: str) -> Path:
    """The Kaggle layout with boxes as XML files, as LOC_val_solution.csv, or both (the CSV then disagrees)."""
    (root / "LOC_synset_mapping.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "LOC_synset_mapping.txt").write_text("\n".join(SYNSETS) + "\n")
    data = root / "ILSVRC/Data/CLS-LOC"
    for line in SYNSETS:
        wnid = line.split()[0]
        for k, (height, width) in enumerate(TRAIN_SIZES):
            write_image(data / "train" / wnid / f"{wnid}_{k}.JPEG", height, width)
    for stem, (size, _) in VAL_BOXES.items():
        write_image(data / "val" / f"{stem}.JPEG", *size)
    if form in ("xml", "both"):
        folder = root / "ILSVRC/Annotations/CLS-LOC/val"
        folder.mkdir(parents=True)
        for stem, (size, objects) in VAL_BOXES.items():
            (folder / f"{stem}.xml").write_text(voc_xml(size, objects))
    if form in ("csv", "both"):
        shift = 1 if form == "both" else 0  # "both": the CSV disagrees, to show which one is read
        rows = [f"{stem}," + " ".join(f"{w} {b[0]} {b[1]} {b[2] - shift} {b[3]}" for w, b in objects) + " "
                for stem, (_, objects) in VAL_BOXES.items()]
        (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
    return root


@pytest.mark.parametrize("form", ["xml", "csv", "both"])
def test_imagenet_boxes_become_half_open_in_both_annotation_forms(tmp_path, form):
    root = write_imagenet(tmp_path / "imagenet", form)
    data = read_imagenet(root, wnids=(), num_classes=2, val_size=0, seed=0, max_train_per_class=0)
    # 4 synsets, 2 classes: every 2nd synset from the first -> n00000001, n00000003
    assert data.class_names == ["n00000001 tench", "n00000003 shark"]
    assert data.splits["val"] == []
    test = {s.image_id: s for s in data.splits["test"]}
    assert list(test) == [f"val/ILSVRC2012_val_0000000{i}.JPEG" for i in (1, 3, 4, 5)]
    first, third = test["val/ILSVRC2012_val_00000001.JPEG"], test["val/ILSVRC2012_val_00000003.JPEG"]
    assert (first.label, third.label) == (0, 1)
    assert (first.size, third.size) == ((30, 40), (16, 28))
    # inclusive [xmin, ymin, xmax, ymax] -> [xmin, ymin, xmax + 1, ymax + 1)
    np.testing.assert_array_equal(first.boxes, np.array([[1, 2, 6, 8], [10, 0, 40, 30]], np.float32))
    np.testing.assert_array_equal(third.boxes, np.array([[3, 3, 5, 5], [0, 1, 3, 4], [5, 5, 28, 16]], np.float32))
    assert first.image_path == root / "ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_00000001.JPEG"
    assert ("XML" in data.source) == (form != "csv")


def test_inclusive_to_half_open_adds_one_to_the_far_edges():
    np.testing.assert_array_equal(inclusive_to_half_open(np.array([[0, 0, 0, 0], [2, 3, 9, 4]])),
                                  np.array([[0, 0, 1, 1], [2, 3, 10, 5]]))


def test_imagenet_subset_by_wnids_train_cap_and_val_carving(tmp_path):
    root = write_imagenet(tmp_path / "imagenet", "xml")
    data = read_imagenet(root, wnids=["n00000003", "n00000001"], num_classes=10, val_size=2, seed=0,
                         max_train_per_class=2)
    assert data.class_names == ["n00000003 shark", "n00000001 tench"]  # labels follow the order given
    train = data.splits["train"]
    assert [s.image_id for s in train] == ["train/n00000003/n00000003_0.JPEG", "train/n00000003/n00000003_1.JPEG",
                                           "train/n00000001/n00000001_0.JPEG", "train/n00000001/n00000001_1.JPEG"]
    assert [s.label for s in train] == [0, 0, 1, 1]
    assert [s.size for s in train] == [TRAIN_SIZES[0], TRAIN_SIZES[1]] * 2
    assert all(s.boxes.shape == (0, 4) for s in train)  # training uses labels only
    val, test = data.splits["val"], data.splits["test"]
    assert sorted(s.label for s in val) == [0, 1] and len(test) == 2  # 4 val images of these classes: 2 + 2
    assert not {s.image_id for s in val} & {s.image_id for s in test}
    again = read_imagenet(root, ["n00000003", "n00000001"], 10, 2, 0, 2)
    assert [s.image_id for s in again.splits["val"]] == [s.image_id for s in val]
    everything = read_imagenet(root, ["n00000002"], 10, 0, 0, 0)
    assert len(everything.splits["train"]) == 3 and len(everything.splits["test"]) == 1


def test_imagenet_unknown_wnid_and_class_count_errors(tmp_path):
    root = write_imagenet(tmp_path / "imagenet", "csv")
    with pytest.raises(DatasetFormatError, match="unknown wnid.*'n09999999'.*LOC_synset_mapping.txt"):
        read_imagenet(root, ["n00000001", "n09999999"], 10, 0, 0, 0)
    with pytest.raises(DatasetFormatError, match=r"num_classes is 5.*\[1, 4\]"):
        read_imagenet(root, (), 5, 0, 0, 0)
    with pytest.raises(DatasetFormatError, match="val_size is 4 but only 4 images"):
        read_imagenet(root, (), 2, 4, 0, 0)


def test_imagenet_without_synset_file_uses_sorted_train_folders(tmp_path):
    root = write_imagenet(tmp_path / "imagenet", "xml")
    (root / "LOC_synset_mapping.txt").unlink()
    data = read_imagenet(root, (), 4, 0, 0, 1)
    assert data.class_names == ["n00000001", "n00000002", "n00000003", "n00000004"]
    assert "no LOC_synset_mapping.txt" in data.source


def test_imagenet_missing_root_names_expected_files_and_sources(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        read_imagenet(tmp_path / "nowhere", (), 10, 0, 0, 0)
    message = str(error.value)
    for expected in ("LOC_synset_mapping.txt", "ILSVRC/Data/CLS-LOC/train/<wnid>", "LOC_val_solution.csv",
                     "image-net.org", "Kaggle 'ImageNet Object Localization Challenge'"):
        assert expected in message


def test_imagenet_malformed_annotations_name_the_file(tmp_path):
    root = write_imagenet(tmp_path / "csv_form", "csv")
    path = root / "LOC_val_solution.csv"
    lines = path.read_text().splitlines()
    lines[2] = "ILSVRC2012_val_00000002,n00000002 0 0 nine 9"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match="line 3: xmax 'nine' of box 1 is not a number") as error:
        read_imagenet(root, (), 2, 0, 0, 0)
    assert str(path) in str(error.value)
    lines[2] = "ILSVRC2012_val_00000002,n00000002 0 0 4 9 n00000002 0 nan 4 9"  # NaN passed float() before
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match="line 3: ymin 'nan' of box 2 is not finite"):
        read_imagenet(root, (), 2, 0, 0, 0)
    root = write_imagenet(tmp_path / "xml_form", "xml")
    broken = root / "ILSVRC/Annotations/CLS-LOC/val/ILSVRC2012_val_00000002.xml"
    broken.write_text("<annotation>\n<size><width>3</width>\n</annotation>\n")
    with pytest.raises(DatasetFormatError, match=r"ILSVRC2012_val_00000002.xml, line 3: not well-formed XML"):
        read_imagenet(root, (), 2, 0, 0, 0)


# ----------------------------------------------------------------------------- wsolevaluation metadata


def test_write_wsol_then_read_gives_identical_samples(cub_root, tmp_path):
    original = read_cub(cub_root, val_size=2, seed=0)
    metadata = tmp_path / "wsolevaluation" / "metadata" / "CUB"
    write_wsol(original, metadata, cub_root / "images")
    assert (metadata / "test" / "image_ids.txt").read_text().splitlines()[0] == "001.Red_bird/red_3.jpg"
    back = read_wsol_metadata(metadata, cub_root / "images", None)
    assert back.class_names == original.class_names  # from the classes.txt write_wsol adds
    for split in ("train", "val", "test"):
        same_samples(back.splits[split], original.splits[split])
    with pytest.raises(FileExistsError, match="already holds split folder"):
        write_wsol(original, metadata, cub_root / "images")
    # wsolevaluation's own folders: metadata/<DATASET> beside dataset/<DATASET>, no classes.txt
    (metadata / "classes.txt").unlink()
    (tmp_path / "wsolevaluation" / "dataset").mkdir()
    (tmp_path / "wsolevaluation" / "dataset" / "CUB").symlink_to(cub_root / "images")
    found = read_wsol(metadata)
    assert found.class_names == ["class_0", "class_1"]
    assert [s.image_id for s in found.splits["test"]] == [s.image_id for s in original.splits["test"]]


def test_wsol_round_trip_keeps_train_images_without_boxes(tmp_path):
    original = read_imagenet(write_imagenet(tmp_path / "imagenet", "xml"), (), 2, 1, 0, 2)
    image_root = tmp_path / "imagenet" / "ILSVRC/Data/CLS-LOC"
    write_wsol(original, tmp_path / "metadata", image_root)
    assert (tmp_path / "metadata" / "train" / "localization.txt").read_text() == ""
    back = read_wsol_metadata(tmp_path / "metadata", image_root, ["a", "b"])
    assert back.class_names == ["a", "b"]
    for split in ("train", "val", "test"):
        same_samples(back.splits[split], original.splits[split])


def test_read_wsol_on_the_project_layout_with_optional_val_and_train_sizes(tmp_path):
    root = tmp_path / "mine"
    write_image(root / "images" / "t.png", 10, 20)
    write_image(root / "images" / "e.png", 12, 8)
    train = [Sample("t.png", root / "images/t.png", 1, np.zeros((0, 4), np.float32), (10, 20), ())]
    test = [Sample("e.png", root / "images/e.png", 0, np.array([[0, 0, 8, 12]], np.float32), (12, 8), ())]
    root.mkdir(exist_ok=True)
    write_class_names(root, ["x", "y"])
    write_split(root, "train", train)
    write_split(root, "test", test)
    (root / "metadata" / "train" / "image_sizes.txt").unlink()  # train sizes then come from the headers
    data = read_wsol(root)
    assert data.class_names == ["x", "y"] and data.splits["val"] == []
    same_samples(data.splits["train"], train)
    same_samples(data.splits["test"], test)
    (root / "metadata" / "test" / "localization.txt").write_text("")
    with pytest.raises(DatasetFormatError, match="no box for 1 image id"):
        read_split(root, "test")  # evaluation splits still need a box per image


def test_read_wsol_missing_root_says_what_is_expected(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="classes.txt, images/ and metadata/<split>/.*write_wsol"):
        read_wsol(tmp_path / "nowhere")
    with pytest.raises(DatasetNotFoundError, match=r"missing: train/image_ids.txt, test/image_ids.txt"):
        read_wsol_metadata(tmp_path / "nowhere", tmp_path, None)


def test_dataset_splits_refuse_an_evaluation_image_without_box():
    sample = Sample("a", Path("a.png"), 0, np.zeros((0, 4), np.float32), (4, 4), ())
    boxed = Sample("b", Path("b.png"), 0, np.ones((1, 4), np.float32), (4, 4), ())
    DatasetSplits(["c"], {"train": [sample], "val": [], "test": [boxed]}, "here")
    with pytest.raises(DatasetFormatError, match="here: test image a has no box"):
        DatasetSplits(["c"], {"train": [boxed], "val": [], "test": [sample]}, "here")
    with pytest.raises(DatasetFormatError, match="b.png is in both the train and the test split"):
        DatasetSplits(["c"], {"train": [boxed], "val": [], "test": [boxed]}, "here")


# ----------------------------------------------------------------------------- your own CSV

CSV_TEXT = """image,label,split,x0,y0,x1,y1
imgs/a.png,zebra,train,,,,
imgs/b.png,ant,train,1,2,3,4
imgs/c.png,ant,val,1.5,2,10,12
imgs/c.png,ant,val,0,0,5,5

imgs/d.png,zebra,test,0,0,30,20
"""


def write_csv(folder: Path, text: str = CSV_TEXT) -> Path:
    for name, size in {"a": (10, 12), "b": (14, 6), "c": (16, 18), "d": (20, 30)}.items():
        write_image(folder / "imgs" / f"{name}.png", *size)
    (folder / "data.csv").write_text(text)
    return folder / "data.csv"


def test_csv_dataset_parses_several_and_missing_boxes(tmp_path):
    data = read_csv_dataset(write_csv(tmp_path))
    assert data.class_names == ["ant", "zebra"]  # sorted unique names
    (a, b), (c,), (d,) = data.splits["train"], data.splits["val"], data.splits["test"]
    assert (a.image_id, a.label, a.size, a.boxes.shape) == ("imgs/a.png", 1, (10, 12), (0, 4))
    np.testing.assert_array_equal(c.boxes, np.array([[1.5, 2, 10, 12], [0, 0, 5, 5]], np.float32))
    assert (b.label, c.label, d.label, c.size, d.size) == (0, 0, 1, (16, 18), (20, 30))
    assert c.image_path == tmp_path / "imgs" / "c.png"


@pytest.mark.parametrize(
    "row, line, problem",
    [
        ("imgs/c.png,ant,val,,,,", 3, "no box on a val row"),
        ("imgs/c.png,ant,dev,1,1,2,2", 3, "split 'dev' is not one of train, val, test"),
        ("imgs/c.png,ant,val,1,1,x,2", 3, "x1 'x' is not a number"),
        ("imgs/c.png,ant,val,1,1,2", 3, r"6 field\(s\), 7 expected"),
        ("imgs/c.png,ant,train,1,,2,2", 3, "fill all four box columns"),
        ("imgs/b.png,zebra,train,1,1,2,2", 3, "label 'zebra' differs from 'ant' given for the same image on line 2"),
    ],
)
def test_csv_errors_name_file_and_line(tmp_path, row, line, problem):
    path = write_csv(tmp_path, "image,label,split,x0,y0,x1,y1\nimgs/b.png,ant,train,1,1,2,2\n" + row + "\n"
                     "imgs/d.png,ant,test,0,0,1,1\n")
    with pytest.raises(DatasetFormatError, match=problem) as error:
        read_csv_dataset(path)
    assert f"{path}, line {line}:" in str(error.value)


def test_csv_header_and_missing_file(tmp_path):
    with pytest.raises(DatasetFormatError, match=r"line 1: the first row 'img,label' is not the header"):
        read_csv_dataset(write_csv(tmp_path, "img,label\n"))
    with pytest.raises(DatasetNotFoundError, match="image,label,split,x0,y0,x1,y1"):
        read_csv_dataset(tmp_path / "none.csv")


def test_csv_that_is_not_utf8_is_named_with_its_line_and_the_cli_exits_2(tmp_path, capsys):
    from bench.commands.cli import main

    path = write_csv(tmp_path, CSV_TEXT.replace("zebra,test", "z\u00e8bra,test"))
    path.write_bytes(path.read_text().encode("latin-1"))  # a Latin-1 byte (0xe8) on line 7
    with pytest.raises(DatasetFormatError, match="line 7: not UTF-8 text") as error:
        read_csv_dataset(path)
    assert f"{path}, line 7: not UTF-8 text (byte 0xe8" in str(error.value)
    config = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"
    code = main(["data", str(config), f"data_root={tmp_path}", "dataset.name=csv", "dataset.path=data.csv"])
    assert code == 2
    assert f"{path}, line 7: not UTF-8 text" in capsys.readouterr().err


def test_cub_and_imagenet_files_that_are_not_utf8_are_named(cub_root, tmp_path):
    (cub_root / "classes.txt").write_bytes("1 001.Red_bird\n2 002.Bl\u00e9_bird\n".encode("latin-1"))
    with pytest.raises(DatasetFormatError, match="classes.txt, line 2: not UTF-8 text"):
        read_cub(cub_root, val_size=0, seed=0)
    root = write_imagenet(tmp_path / "imagenet", "csv")
    synsets = root / "LOC_synset_mapping.txt"
    synsets.write_bytes(synsets.read_bytes() + "n09999999 caf\u00e9\n".encode("latin-1"))
    with pytest.raises(DatasetFormatError, match="LOC_synset_mapping.txt, line 5: not UTF-8 text"):
        read_imagenet(root, (), 2, 0, 0, 0)


# ----------------------------------------------------------------------------- check_images


def test_check_images_reports_or_skips_bad_images(tmp_path):
    good = write_image(tmp_path / "good.png", 20, 30)
    (tmp_path / "garbage.jpg").write_bytes(b"this is not a JPEG")
    write_image(tmp_path / "wrong_size.png", 20, 31)
    write_image(tmp_path / "outside.png", 20, 30)
    write_image(tmp_path / "border.png", 20, 30)
    path = write_csv(tmp_path, "image,label,split,x0,y0,x1,y1\n"
                               "good.png,a,train,,,,\n"
                               "garbage.jpg,a,train,,,,\n"          # read_csv_dataset does not stop here
                               "missing.png,a,train,,,,\n"
                               "border.png,a,test,-0.5,0,31,20\n"   # within 1 px: kept, clipped
                               "outside.png,a,test,0,0,31.5,20\n")  # 1.5 px too wide
    data = read_csv_dataset(path)
    assert data.splits["train"][1].size == UNKNOWN_SIZE
    samples = data.splits["train"] + data.splits["test"]
    samples.append(Sample("w", tmp_path / "wrong_size.png", 0, np.ones((1, 4), np.float32), (20, 30), ()))
    with pytest.raises(DatasetFormatError) as error:
        check_images(samples, skip_bad=False)
    message = str(error.value)
    assert "4 of 6 images have problems" in message and "set dataset.skip_bad: true" in message
    for bad in ("garbage.jpg", "missing.png", "outside.png", "wrong_size.png"):
        assert str(tmp_path / bad) in message
    assert str(good) not in message and "border.png" not in message

    kept, skipped = check_images(samples, skip_bad=True)
    assert [s.image_id for s in kept] == ["good.png", "border.png"]
    np.testing.assert_array_equal(kept[1].boxes, np.array([[0, 0, 30, 20]], np.float32))  # clipped to the image
    reasons = {Path(item["image"]).name: item["reason"] for item in skipped}
    assert reasons["missing.png"] == "missing file"
    assert reasons["garbage.jpg"].startswith("cannot be opened as an image")
    assert "outside the 30x20 (WxH) image by more than 1 px" in reasons["outside.png"]
    assert reasons["wrong_size.png"] == "the file is 20x31 (HxW) but the metadata says 20x30"


def _truncated_copy(path: Path, keep: float = 0.6) -> Path:
    """Cut ``path`` to ``keep`` of its bytes in place: the header (and so the size) stays readable."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def test_check_images_decodes_the_pixels_so_truncated_images_and_masks_are_caught(tmp_path):
    photo = np.asarray(Image.fromarray(skimage_data.coffee()).resize((60, 40)))
    paths = {}
    for name in ("good.jpg", "cut.jpg", "cut.png", "masked.jpg"):
        paths[name] = tmp_path / name
        Image.fromarray(photo).save(paths[name], quality=90)
    Image.fromarray(photo).save(paths["cut.png"])  # a PNG too
    mask = tmp_path / "mask.png"
    Image.fromarray(np.tile(np.arange(60, dtype=np.uint8) * 4, (40, 1))).save(mask)
    _truncated_copy(paths["cut.jpg"])
    _truncated_copy(paths["cut.png"])
    _truncated_copy(mask)
    box = np.array([[1, 1, 10, 10]], np.float32)
    samples = [Sample(name, path, 0, box, (40, 60), (mask,) if name == "masked.jpg" else ())
               for name, path in paths.items()]
    with Image.open(paths["cut.jpg"]) as image:
        assert image.size == (60, 40)  # the header alone looks fine
    kept, skipped = check_images(samples, skip_bad=True)
    assert [s.image_id for s in kept] == ["good.jpg"]
    reasons = {Path(item["image"]).name: item["reason"] for item in skipped}
    assert reasons["cut.jpg"].startswith("cannot be decoded as an image (OSError: image file is truncated")
    assert reasons["cut.png"].startswith("cannot be decoded as an image (OSError:")
    assert reasons["masked.jpg"].startswith(f"mask {mask} cannot be decoded (OSError:")
    with pytest.raises(DatasetFormatError, match="3 of 4 images have problems") as error:
        check_images(samples, skip_bad=False)
    assert f"{paths['cut.jpg']}: cannot be decoded" in str(error.value)


def test_a_truncated_training_image_stops_the_run_before_the_run_folder_with_exit_2(tmp_path, capsys):
    from bench.commands.cli import main

    overrides = [f"data_root={tmp_path / 'data'}", f"results_dir={tmp_path / 'results'}"]
    config = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"
    assert main(["data", str(config), *overrides]) == 0
    (root,) = (tmp_path / "data").glob("synthetic-*")
    image = root / "images" / (root / "metadata" / "train" / "image_ids.txt").read_text().split()[3]
    _truncated_copy(image, keep=0.5)
    capsys.readouterr()
    assert main(["run", str(config), *overrides]) == 2
    error = capsys.readouterr().err
    assert f"{image}: cannot be decoded as an image (OSError: image file is truncated" in error
    assert "Traceback" not in error
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


# ----------------------------------------------------------------------------- the configs and the command line


def test_cub_config_is_read_and_checked_by_the_cli_and_exported_as_wsol_metadata(cub_root, tmp_path, capsys):
    from bench.commands.cli import main

    config = Path(__file__).resolve().parent.parent / "configs" / "cub_gap.yaml"
    overrides = [f"data_root={cub_root.parent}", "dataset.val_size=1"]
    assert main(["data", str(config), *overrides]) == 0
    printed = capsys.readouterr().out
    assert "CUB-200-2011 at" in printed and "images per split: train 3, val 1, test 2" in printed

    out = tmp_path / "metadata" / "CUB"
    assert main(["export-wsol", str(config), str(out), *overrides]) == 0
    assert f"image ids are relative to {cub_root / 'images'}" in capsys.readouterr().out
    exported = read_wsol_metadata(out, cub_root / "images")
    original = read_cub(cub_root, val_size=1, seed=0)
    assert exported.class_names == original.class_names
    for split in ("train", "val", "test"):
        same_samples(exported.splits[split], original.splits[split])
    assert main(["export-wsol", str(config), str(out), *overrides]) == 2  # never written over
    assert "already holds split folder(s) train, val, test" in capsys.readouterr().err
