"""The box-aware torch Dataset, on hand-written images."""

import numpy as np
import pytest
import torch
from helpers import write_dataset, write_image
from PIL import Image

from bench import torch_data
from bench.layout import read_split
from bench.torch_data import WsolDataset, collate, image_to_tensor, sample_resized_crop

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
    monkeypatch.setattr(torch_data, "sample_resized_crop", lambda size, scale, ratio, generator: (0, 0, size[1], size[0]))
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
