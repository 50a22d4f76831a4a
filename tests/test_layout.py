"""The on-disk metadata layout: reader and writer, on hand-written data."""

from pathlib import Path

import numpy as np
import pytest
from helpers import write_dataset

from bench.data.samples import DatasetFormatError, Sample
from bench.data.text_lines import Line, key_lines, parse_box, read_lines
from bench.data.wsol_layout import read_class_names, read_split, write_class_names, write_split

# ----------------------------------------------------------------------------- line helpers


def _lines(tmp_path, name, text, num_fields=2):
    path = tmp_path / name
    path.write_text(text)
    return path, read_lines(path, num_fields, "<key>,<value>")


def test_key_lines_groups_by_first_field_in_file_order_and_checks_keys(tmp_path):
    ids_path, id_lines = _lines(tmp_path, "ids.txt", "b\na\nc\n", 1)
    ids = {line.fields[0]: line for line in id_lines}
    path, lines = _lines(tmp_path, "boxes.txt", "a,1\nb,2\n\na,3\n")
    keyed = key_lines(path, lines, known=ids, repeats=True)
    assert list(keyed) == ["a", "b"]
    assert [[line.fields[1] for line in group] for group in keyed.values()] == [["1", "3"], ["2"]]
    assert [line.number for line in keyed["a"]] == [1, 4]
    with pytest.raises(DatasetFormatError) as error:
        key_lines(path, lines, known=ids)
    assert str(error.value).startswith(f"{path}, line 4: duplicate image id: second line for image id 'a' "
                                       "(first on line 1)")
    with pytest.raises(DatasetFormatError) as error:
        key_lines(path, lines, "id", known=ids, repeats=True, needs="box")
    assert str(error.value) == (f"{path}: no box for 1 id(s) of ids.txt, e.g. ['c'] (ids.txt line 3); "
                                "every id needs at least one")
    key_lines(path, lines, known=ids, repeats=True)  # without needs, ids may lack a line
    path, lines = _lines(tmp_path, "other.txt", "a,1\nz,2\n")
    with pytest.raises(DatasetFormatError, match=r"other.txt, line 2: wnid 'z' is not in ids.txt"):
        key_lines(path, lines, "wnid", known=ids)
    path, lines = _lines(tmp_path, "empty.txt", "\n\n")
    with pytest.raises(DatasetFormatError, match=r"empty.txt lists no image id$"):
        key_lines(path, lines)
    assert key_lines(path, lines, known=ids) == {}  # a file that only refers to keys may be empty


def test_parse_box_half_open_and_inclusive():
    line = Line(Path("f.txt"), 7, "a,1,2,3,4", ["a", "1", "2", "3", "4"], "<id>,<x0>,<y0>,<x1>,<y1>")
    assert parse_box(line, ["1", "2.5", "3", "4e1"]) == [1.0, 2.5, 3.0, 40.0]
    assert parse_box(line, ["5", "5", "5", "9"], ("xmin", "ymin", "xmax", "ymax"), inclusive=True) == [5, 5, 5, 9]
    with pytest.raises(DatasetFormatError) as error:
        parse_box(line, ["5", "5", "5", "9"])
    assert str(error.value) == ("f.txt, line 7: empty box (x1 must be > x0 and y1 > y0, got [5.0, 5.0, 5.0, 9.0]): "
                                "'a,1,2,3,4' (expected '<id>,<x0>,<y0>,<x1>,<y1>')")
    with pytest.raises(DatasetFormatError, match=r"line 7: empty box 2 \(xmax must be >= xmin and ymax >= ymin, "
                                                 r"got \[5.0, 5.0, 4.0, 9.0\]\)"):
        parse_box(line, ["5", "5", "4", "9"], ("xmin", "ymin", "xmax", "ymax"), 2, inclusive=True)
    with pytest.raises(DatasetFormatError, match="line 7: ymax 'inf' of box 3 is not finite"):
        parse_box(line, ["0", "0", "1", "inf"], ("xmin", "ymin", "xmax", "ymax"), 3)
    with pytest.raises(ValueError):
        parse_box(line, ["0", "0", "1"])  # three values: a caller's bug, not a user's


# ----------------------------------------------------------------------------- reading


def test_read_split_parses_several_and_float_boxes_exactly(tmp_path):
    root = write_dataset(tmp_path)
    samples = read_split(root, "val")
    assert [s.image_id for s in samples] == ["b/two.jpg", "a/one.jpg"]  # image_ids.txt order
    two, one = samples
    assert (one.label, one.size, two.label, two.size) == (1, (100, 200), 0, (40, 50))  # sizes are (H, W)
    np.testing.assert_array_equal(one.boxes, np.array([[20, 10, 120, 60], [0, 0, 200, 100]], dtype=np.float32))
    np.testing.assert_array_equal(two.boxes, np.array([[0.5, 1.25, 10.75, 40]], dtype=np.float32))
    assert one.boxes.dtype == np.float32
    assert one.image_path == root / "images" / "a" / "one.jpg"
    assert one.mask_paths == () and one.ignore_path is None
    assert read_class_names(root) == ["cat", "dog"]


def test_masks_txt_is_optional_per_image(tmp_path):
    root = write_dataset(tmp_path, {"masks.txt": "a/one.jpg,a/one.png\n"})
    two, one = read_split(root, "val")
    assert one.mask_paths == (root / "masks" / "a" / "one.png",) and two.mask_paths == ()


def test_write_then_read_round_trips(tmp_path):
    root = tmp_path / "out"
    samples = [
        Sample("x/1.jpg", root / "images/x/1.jpg", 1, np.array([[1, 2, 3, 4], [0.5, 0, 8, 9.25]], np.float32),
               (10, 8), (root / "masks/x/1.png",)),
        Sample("2.jpg", root / "images/2.jpg", 0, np.array([[0, 0, 5, 5]], np.float32), (6, 7), ()),
    ]
    write_class_names(root.mkdir() or root, ["a", "b, with comma"])
    write_split(root, "test", samples)
    assert (root / "metadata/test/image_sizes.txt").read_text() == "x/1.jpg,8,10\n2.jpg,7,6\n"
    assert (root / "metadata/test/localization.txt").read_text().splitlines()[1] == "x/1.jpg,0.5,0,8,9.25"
    assert read_class_names(root) == ["a", "b, with comma"]
    for got, expected in zip(read_split(root, "test"), samples):
        assert (got.image_id, got.label, got.size, got.mask_paths, got.ignore_path) == (
            expected.image_id, expected.label, expected.size, expected.mask_paths, None)
        np.testing.assert_array_equal(got.boxes, expected.boxes)


@pytest.mark.parametrize(
    "name, text, line, problem",
    [
        ("image_ids.txt", "b/two.jpg\nb/two.jpg\n", 2, "duplicate image id"),
        ("class_labels.txt", "a/one.jpg,1\nb/two.jpg\n", 2, r"1 field\(s\), 2 expected"),
        ("class_labels.txt", "a/one.jpg,dog\nb/two.jpg,0\n", 1, "'dog' is not an integer"),
        ("class_labels.txt", "a/one.jpg,1\nb/two.jpg,2\n", 2, r"label 2 outside \[0, 2\)"),
        ("class_labels.txt", "a/one.jpg,1\nb/two.jpg,0\nc.jpg,0\n", 3, "'c.jpg' is not in image_ids.txt"),
        ("class_labels.txt", "a/one.jpg,1\nb/two.jpg,0\na/one.jpg,0\n", 3, "second line"),
        ("image_sizes.txt", "a/one.jpg,200,100\nb/two.jpg,50\n", 2, r"2 field\(s\), 3 expected"),
        ("image_sizes.txt", "a/one.jpg,200,100.5\nb/two.jpg,50,40\n", 1, "height '100.5' is not an integer"),
        ("image_sizes.txt", "a/one.jpg,0,100\nb/two.jpg,50,40\n", 1, "not positive"),
        ("localization.txt", "a/one.jpg,20,10,120,60\nb/two.jpg,5,5,5,9\n", 2, "empty box"),
        ("localization.txt", "a/one.jpg,20,10,120,60\nb/two.jpg,5,5,x,9\n", 2, "x1 'x' is not a number"),
        ("localization.txt", "a/one.jpg,20,10,120,60\nb/two.jpg,5,5,nan,9\n", 2, "not finite"),
        ("localization.txt", "a/one.jpg,20,10,201,60\nb/two.jpg,1,1,2,2\n", 1, "outside the image"),
        ("localization.txt", "a/one.jpg,20,-1,120,60\nb/two.jpg,1,1,2,2\n", 1, "outside the image"),
        ("localization.txt", "a/one.jpg,20,10,120,60\n\nb/two.jpg,1,1,2,2,3\n", 3, r"6 field\(s\), 5 expected"),
        ("localization.txt", "a/one.jpg,20,10,120,60\nb/two.jpg,1,1,2,2\nz.jpg,1,1,2,2\n", 3, "not in image_ids"),
        ("masks.txt", "zz.jpg,zz.png\n", 1, "not in image_ids"),
        ("masks.txt", "a/one.jpg,a.png\na/one.jpg,b.png\n", 2, "duplicate image id: second line for image id "
                                                              "'a/one.jpg' \\(first on line 1\\)"),
    ],
)
def test_malformed_line_names_file_line_and_problem(tmp_path, name, text, line, problem):
    root = write_dataset(tmp_path, {name: text})
    with pytest.raises(DatasetFormatError, match=problem) as error:
        read_split(root, "val")
    message = str(error.value)
    assert str(root / "metadata" / "val" / name) in message
    assert f"line {line}:" in message
    assert "(expected '<image_id>" in message


def test_class_label_out_of_order_in_classes_txt(tmp_path):
    root = write_dataset(tmp_path, classes="0,cat\n2,dog\n")
    with pytest.raises(DatasetFormatError, match=r"classes.txt, line 2: label 2 out of order"):
        read_split(root, "val")


@pytest.mark.parametrize(
    "name, problem",
    [
        ("class_labels.txt", r"class_labels.txt: no line for 1 image id\(s\).*'b/two.jpg'.*image_ids.txt line 1"),
        ("image_sizes.txt", r"image_sizes.txt: no line for 1 image id"),
        ("localization.txt", r"localization.txt: no box for 1 image id\(s\).*'b/two.jpg'"),
    ],
)
def test_image_without_label_size_or_box_is_an_error(tmp_path, name, problem):
    kept = {"class_labels.txt": "a/one.jpg,1\n", "image_sizes.txt": "a/one.jpg,200,100\n",
            "localization.txt": "a/one.jpg,20,10,120,60\n"}
    root = write_dataset(tmp_path, {name: kept[name]})
    with pytest.raises(DatasetFormatError, match=problem):
        read_split(root, "val")


def test_missing_metadata_file_names_the_expected_path(tmp_path):
    root = write_dataset(tmp_path, {"image_sizes.txt": None})
    with pytest.raises(DatasetFormatError, match="missing metadata file") as error:
        read_split(root, "val")
    assert str(root / "metadata" / "val" / "image_sizes.txt") in str(error.value)
    with pytest.raises(DatasetFormatError, match="missing metadata file .*classes.txt"):
        read_class_names(tmp_path / "elsewhere")


@pytest.mark.parametrize("name", ["classes.txt", "metadata/val/class_labels.txt", "metadata/val/localization.txt"])
def test_a_file_that_is_not_utf8_is_named_with_its_line(tmp_path, name):
    root = write_dataset(tmp_path)
    path = root / name
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b"o", "\u00f6".encode("latin-1"), 1)  # a Latin-1 byte (0xf6) on line 2
    path.write_bytes(b"".join(lines))
    with pytest.raises(DatasetFormatError, match="line 2: not UTF-8 text") as error:
        read_split(root, "val")
    assert f"{path}, line 2: not UTF-8 text (byte 0xf6" in str(error.value)
    assert "save the file as UTF-8" in str(error.value)


def test_a_utf8_byte_order_mark_is_not_part_of_the_first_field(tmp_path):
    root = write_dataset(tmp_path, classes="\ufeff0,cat\n1,dog\n")
    (root / "metadata" / "val" / "image_ids.txt").write_text("\ufeffb/two.jpg\na/one.jpg\n", encoding="utf-8")
    assert read_class_names(root) == ["cat", "dog"]
    assert [sample.image_id for sample in read_split(root, "val")] == ["b/two.jpg", "a/one.jpg"]


def test_unknown_split_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"split='dev' is not one of \('train', 'val', 'test'\)"):
        read_split(write_dataset(tmp_path), "dev")
