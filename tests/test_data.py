"""Metadata reader/writer and the box-aware torch Dataset, on hand-written data."""

import numpy as np
import pytest
import torch
from PIL import Image

from bench import data
from bench.data import (
    DatasetFormatError,
    Sample,
    WsolDataset,
    collate,
    image_to_tensor,
    read_class_names,
    read_split,
    sample_resized_crop,
    write_class_names,
    write_split,
)

METADATA = {
    "image_ids.txt": "b/two.jpg\na/one.jpg\n",
    "class_labels.txt": "a/one.jpg,1\nb/two.jpg,0\n",
    "image_sizes.txt": "a/one.jpg,200,100\nb/two.jpg,50,40\n",
    "localization.txt": "a/one.jpg,20,10,120,60\nb/two.jpg,0.5,1.25,10.75,40\na/one.jpg,0,0,200,100\n",
}


def write_dataset(root, files=None, classes="0,cat\n1,dog\n", split="val"):
    """Hand-written metadata (and no images) under ``root``."""
    folder = root / "metadata" / split
    folder.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text(classes)
    for name, text in {**METADATA, **(files or {})}.items():
        if text is not None:
            (folder / name).write_text(text)
    return root


def write_image(root, image_id, height, width, colour=(10, 20, 30)):
    path = root / "images" / image_id
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((height, width, 3), dtype=np.uint8) + np.array(colour, dtype=np.uint8)
    Image.fromarray(pixels).save(path)  # PNG content regardless of suffix: lossless for exact checks
    return path


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


def test_unknown_split_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"split='dev' is not one of \('train', 'val', 'test'\)"):
        read_split(write_dataset(tmp_path), "dev")


# ----------------------------------------------------------------------------- the torch Dataset

MEAN, STD = (0.5, 0.25, 0.0), (0.5, 0.5, 1.0)


def one_image_dataset(root, train, **kwargs):
    root = write_dataset(root)
    write_image(root, "a/one.jpg", 100, 200, colour=(255, 51, 0))
    write_image(root, "b/two.jpg", 40, 50)
    samples = read_split(root, "val")
    return WsolDataset(samples, 64, MEAN, STD, train=train, **kwargs)


def test_eval_item_resizes_image_and_boxes_exactly(tmp_path):
    dataset = one_image_dataset(tmp_path, train=False)
    item = dataset[1]  # a/one.jpg: 100 x 200 (H x W)
    assert (item["label"], item["index"]) == (1, 1)
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    # [20, 10, 120, 60] scaled by (64/200, 64/100) -> [6.4, 6.4, 38.4, 38.4]
    torch.testing.assert_close(item["boxes"], torch.tensor([[6.4, 6.4, 38.4, 38.4], [0, 0, 64, 64]]))
    # (255/255 - 0.5)/0.5 = 1, (51/255 - 0.25)/0.5 = -0.1, (0 - 0)/1 = 0
    torch.testing.assert_close(item["image"][:, 10, 10], torch.tensor([1.0, -0.1, 0.0]))


def test_image_to_tensor_normalizes_per_channel():
    image = Image.fromarray(np.array([[[0, 255, 51], [255, 0, 102]]], dtype=np.uint8))  # 1 x 2
    tensor = image_to_tensor(image, MEAN, STD)
    torch.testing.assert_close(tensor, torch.tensor([[[-1.0, 1.0]], [[1.5, -0.5]], [[0.2, 0.4]]]))


def test_train_boxes_stay_inside_the_input_frame(tmp_path):
    dataset = one_image_dataset(tmp_path, train=True, crop_scale=(0.08, 1.0))
    for _ in range(40):
        for index in range(len(dataset)):
            boxes = dataset[index]["boxes"]
            assert boxes.min() >= 0 and boxes.max() <= 64
            assert torch.all(boxes[:, 2] >= boxes[:, 0]) and torch.all(boxes[:, 3] >= boxes[:, 1])


def test_train_crops_reproducible_from_seed(tmp_path):
    first = [one_image_dataset(tmp_path / "a", train=True, seed=1)[1]["boxes"] for _ in range(2)]
    torch.testing.assert_close(first[0], first[1])
    other = one_image_dataset(tmp_path / "b", train=True, seed=2)[1]["boxes"]
    assert not torch.equal(first[0], other)
    dataset = one_image_dataset(tmp_path / "c", train=True, seed=1)
    assert not torch.equal(dataset[1]["boxes"], dataset[1]["boxes"])  # a new crop at each access


def test_hflip_mirrors_image_and_boxes(tmp_path, monkeypatch):
    # Keep the whole image so that only the flip changes the geometry.
    monkeypatch.setattr(data, "sample_resized_crop", lambda size, scale, ratio, generator: (0, 0, size[1], size[0]))
    root = write_dataset(tmp_path)
    pixels = np.zeros((100, 200, 3), dtype=np.uint8)
    pixels[:, :100] = 255  # left half white
    (root / "images" / "a").mkdir(parents=True)
    Image.fromarray(pixels).save(root / "images" / "a" / "one.jpg", format="PNG")
    dataset = WsolDataset(read_split(root, "val")[1:], 64, MEAN, STD, train=True, seed=0)
    # box [20, 10, 120, 60] -> resized [6.4, 6.4, 38.4, 38.4] -> mirrored in width 64: [25.6, 6.4, 57.6, 38.4]
    plain = torch.tensor([[6.4, 6.4, 38.4, 38.4], [0, 0, 64, 64]])
    mirrored = torch.tensor([[25.6, 6.4, 57.6, 38.4], [0, 0, 64, 64]])
    outcomes = set()
    for _ in range(20):
        item = dataset[0]
        white_on_left = bool(item["image"][0, 32, 5] > 0)
        if white_on_left:
            torch.testing.assert_close(item["boxes"], plain)
        else:
            torch.testing.assert_close(item["boxes"], mirrored)
            assert item["image"][0, 32, 58] > 0
        outcomes.add(white_on_left)
    assert outcomes == {True, False}
    no_flip = WsolDataset(dataset.samples, 64, MEAN, STD, train=True, hflip=False)
    assert all(torch.allclose(no_flip[0]["boxes"], plain) for _ in range(10))


def test_sample_resized_crop_respects_scale_and_ratio():
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        x0, y0, x1, y1 = sample_resized_crop((100, 200), (0.25, 0.5), (3 / 4, 4 / 3), generator)
        width, height = x1 - x0, y1 - y0
        assert 0 <= x0 < x1 <= 200 and 0 <= y0 < y1 <= 100
        assert 0.24 <= width * height / 20000 <= 0.51  # rounding to whole pixels
        assert 3 / 4 - 0.03 <= width / height <= 4 / 3 + 0.03


def test_size_mismatch_between_metadata_and_image_is_an_error(tmp_path):
    root = write_dataset(tmp_path)
    write_image(root, "b/two.jpg", 41, 50)
    dataset = WsolDataset(read_split(root, "val"), 64, MEAN, STD, train=False)
    with pytest.raises(ValueError, match=r"two.jpg is 41x50 \(HxW\) but image_sizes.txt says 40x50"):
        dataset[0]


def test_collate_stacks_tensors_and_keeps_boxes_per_image(tmp_path):
    dataset = one_image_dataset(tmp_path, train=False)
    batch = collate([dataset[0], dataset[1]])
    assert batch["image"].shape == (2, 3, 64, 64)
    assert batch["label"].tolist() == [0, 1] and batch["label"].dtype == torch.int64
    assert batch["index"].tolist() == [0, 1]
    assert [b.shape for b in batch["boxes"]] == [(1, 4), (2, 4)]


def test_dataloader_workers_are_reproducible_and_do_not_repeat_crops(tmp_path):
    dataset = one_image_dataset(tmp_path, train=True, seed=5)
    dataset.samples = [dataset.samples[1]] * 4  # the same image four times

    def boxes_of_one_epoch():
        torch.manual_seed(0)
        loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=2, collate_fn=collate)
        return [batch["boxes"][0] for batch in loader]

    first, second = boxes_of_one_epoch(), boxes_of_one_epoch()
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    # items 0 and 1 go to different workers: their crops must differ
    assert not torch.equal(first[0], first[1])


def test_invalid_dataset_arguments(tmp_path):
    samples = read_split(write_dataset(tmp_path), "val")
    with pytest.raises(ValueError, match="input_size=0"):
        WsolDataset(samples, 0, MEAN, STD, train=False)
    with pytest.raises(ValueError, match=r"crop_scale=\(0.0, 1.0\)"):
        WsolDataset(samples, 64, MEAN, STD, train=True, crop_scale=(0.0, 1.0))
