"""The torch Dataset, on hand-written images."""

import numpy as np
import pytest
import torch
from helpers import write_dataset, write_image
from PIL import Image
from torchvision.transforms import v2

from bench.data.torch_dataset import WsolDataset, collate, image_to_tensor
from bench.data.wsol_layout import read_split
from bench.scoring.protocols import frame_of

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
    assert set(item) == {"image", "label", "index"}  # boxes: bench.scoring.protocols.frame_of, the one place
    assert (item["label"], item["index"]) == (1, 1)
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    # [20, 10, 120, 60] scaled by (64/200, 64/100) -> [6.4, 6.4, 38.4, 38.4]: the frame the item is in
    size, boxes = frame_of(dataset.samples[1], "input", dataset.input_size)
    assert size == tuple(item["image"].shape[1:])
    np.testing.assert_allclose(boxes, [[6.4, 6.4, 38.4, 38.4], [0, 0, 64, 64]], rtol=1e-6)
    # (255/255 - 0.5)/0.5 = 1, (51/255 - 0.25)/0.5 = -0.1, (0 - 0)/1 = 0
    torch.testing.assert_close(item["image"][:, 10, 10], torch.tensor([1.0, -0.1, 0.0]))


def test_image_to_tensor_normalizes_per_channel():
    image = Image.fromarray(np.array([[[0, 255, 51], [255, 0, 102]]], dtype=np.uint8))  # 1 x 2
    tensor = image_to_tensor(image, MEAN, STD)
    torch.testing.assert_close(tensor, torch.tensor([[[-1.0, 1.0]], [[1.5, -0.5]], [[0.2, 0.4]]]))


def ramp_dataset(root, **kwargs):
    """Training set of one 100 x 200 (H x W) image whose red value is its column and green value its row.

    With mean 0 and std 1/255 an item's tensor holds those values, so it shows which crop it came from.
    The default crop scale is small enough for most draws to fit a 3/4..4/3 crop in this 1:2 image (at
    0.5..1 about 4 items in 10 would get the same fallback centre crop).
    """
    kwargs.setdefault("crop_scale", (0.25, 0.5))
    root = write_dataset(root)
    pixels = np.zeros((100, 200, 3), dtype=np.uint8)
    pixels[..., 0] = np.arange(200)[None, :]
    pixels[..., 1] = np.arange(100)[:, None]
    (root / "images" / "a").mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(root / "images" / "a" / "one.jpg", format="PNG")
    samples = read_split(root, "val")[1:]  # a/one.jpg
    return WsolDataset(samples, 64, (0.0, 0.0, 0.0), (1 / 255,) * 3, train=True, **kwargs)


def measured_crop(image):
    """``(left, top, width, height)`` of the crop a ramp item shows, within 1 pixel.

    Inner output column k (its window lies inside the crop) holds ``left - 0.5 + (k + 0.5) * width / 64``:
    a line fitted to the inner columns (rows) gives left and width (top and height).
    """
    centres = np.arange(1, 63) + 0.5
    x_slope, x_start = np.polyfit(centres, image[0, 32, 1:63].numpy(), 1)
    y_slope, y_start = np.polyfit(centres, image[1, 1:63, 32].numpy(), 1)
    return x_start + 0.5, y_start + 0.5, x_slope * 64, y_slope * 64


def test_train_items_carry_no_boxes(tmp_path):
    # Training reads labels only; boxes of a random crop would be in a frame no evaluation uses.
    item = one_image_dataset(tmp_path, train=True)[1]
    assert set(item) == {"image", "label", "index"} and item["image"].shape == (3, 64, 64)
    assert item["label"] == 1 and item["index"] == 1


def test_train_crop_respects_scale_and_ratio(tmp_path, monkeypatch):
    drawn = []
    make_params = v2.RandomResizedCrop.make_params

    def recording_make_params(self, flat_inputs):
        drawn.append(make_params(self, flat_inputs))
        return drawn[-1]

    monkeypatch.setattr(v2.RandomResizedCrop, "make_params", recording_make_params)
    dataset = ramp_dataset(tmp_path, hflip=False)
    for epoch in range(200):
        dataset.set_epoch(epoch)
        image = dataset[0]["image"]
        x0, y0, width, height = drawn[-1]["left"], drawn[-1]["top"], drawn[-1]["width"], drawn[-1]["height"]
        x1, y1 = x0 + width, y0 + height
        assert 0 <= x0 < x1 <= 200 and 0 <= y0 < y1 <= 100
        assert 0.24 <= width * height / 20000 <= 0.51  # rounding to whole pixels
        assert 3 / 4 - 0.03 <= width / height <= 4 / 3 + 0.03
        np.testing.assert_allclose(measured_crop(image), (x0, y0, width, height), atol=1.0)  # the item shows it
    assert len(drawn) == 200


def test_train_crops_reproducible_from_seed(tmp_path):
    first = [ramp_dataset(tmp_path / "a", seed=1)[0]["image"] for _ in range(2)]
    torch.testing.assert_close(first[0], first[1])
    other = ramp_dataset(tmp_path / "b", seed=2)[0]["image"]
    assert not torch.equal(first[0], other)
    dataset = ramp_dataset(tmp_path / "c", seed=1)
    again = dataset[0]["image"]
    assert torch.equal(dataset[0]["image"], again)  # an item's crop is fixed within an epoch ...
    dataset.set_epoch(1)
    assert not torch.equal(dataset[0]["image"], again)  # ... and new at each epoch


def test_train_crops_are_a_function_of_seed_epoch_stream_and_item(tmp_path):
    dataset = ramp_dataset(tmp_path / "a", seed=3)
    dataset.samples = dataset.samples * 3  # the same image as items 0, 1, 2
    epochs = {}
    for epoch in (1, 2, 3):
        dataset.set_epoch(epoch)
        epochs[epoch] = [dataset[index]["image"] for index in (2, 1, 0)][::-1]  # read order does not matter
    assert not torch.equal(epochs[1][0], epochs[1][1]) and not torch.equal(epochs[1][0], epochs[2][0])
    resumed = ramp_dataset(tmp_path / "b", seed=3)
    resumed.samples = resumed.samples * 3
    resumed.set_epoch(3)  # a run resumed after epoch 2 replays epoch 3's crops
    assert all(torch.equal(resumed[index]["image"], epochs[3][index]) for index in range(3))
    other_stream = ramp_dataset(tmp_path / "c", seed=3, stream=1)
    other_stream.set_epoch(1)
    assert not torch.equal(other_stream[0]["image"], epochs[1][0])


def test_reading_train_items_leaves_the_global_generator_alone(tmp_path):
    # Training's own draws (initialization, dropout) must not depend on how many items were read.
    dataset = ramp_dataset(tmp_path)
    state = torch.get_rng_state()
    dataset[0]
    assert torch.equal(torch.get_rng_state(), state)


def test_hflip_mirrors_the_image(tmp_path):
    dataset = ramp_dataset(tmp_path, seed=0)
    dataset.crop = v2.Resize((64, 64))  # keep the whole image so that only the flip changes the geometry
    plain = WsolDataset(dataset.samples, 64, dataset.mean, dataset.std, train=False)[0]["image"]
    mirrored = plain.flip(-1)
    outcomes = set()
    for epoch in range(20):
        dataset.set_epoch(epoch)
        image = dataset[0]["image"]
        low_columns_on_left = bool(image[0, 32, 5] < image[0, 32, 58])
        if low_columns_on_left:
            torch.testing.assert_close(image, plain)
        else:
            torch.testing.assert_close(image, mirrored)
        outcomes.add(low_columns_on_left)
    assert outcomes == {True, False}
    no_flip = WsolDataset(dataset.samples, 64, dataset.mean, dataset.std, train=True, hflip=False)
    no_flip.crop = v2.Resize((64, 64))
    for epoch in range(10):
        no_flip.set_epoch(epoch)
        torch.testing.assert_close(no_flip[0]["image"], plain)


def test_size_mismatch_between_metadata_and_image_is_an_error(tmp_path):
    root = write_dataset(tmp_path)
    write_image(root, "b/two.jpg", 41, 50)
    dataset = WsolDataset(read_split(root, "val"), 64, MEAN, STD, train=False)
    with pytest.raises(ValueError, match=r"two.jpg is 41x50 \(HxW\) but image_sizes.txt says 40x50"):
        dataset[0]


def test_collate_stacks_images_labels_and_indices(tmp_path):
    dataset = one_image_dataset(tmp_path, train=False)
    batch = collate([dataset[1], dataset[0]])
    assert set(batch) == {"image", "label", "index"}
    assert batch["image"].shape == (2, 3, 64, 64)
    assert torch.equal(batch["image"][1], dataset[0]["image"])
    assert batch["label"].tolist() == [1, 0] and batch["label"].dtype == torch.int64
    assert batch["index"].tolist() == [1, 0] and batch["index"].dtype == torch.int64


def epoch_of_batches(dataset, num_workers, epoch):
    dataset.set_epoch(epoch)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=num_workers, collate_fn=collate)
    return [batch["image"] for batch in loader]


def test_dataloader_workers_are_reproducible_and_do_not_repeat_crops(tmp_path):
    dataset = ramp_dataset(tmp_path, seed=5)
    dataset.samples = dataset.samples * 4  # the same image four times
    torch.manual_seed(0)
    first = epoch_of_batches(dataset, 2, epoch=1)
    torch.manual_seed(0)
    second = epoch_of_batches(dataset, 2, epoch=1)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    # items 0 and 1 go to different workers: their crops must differ
    assert not torch.equal(first[0][0], first[0][1])


def test_crops_do_not_depend_on_the_number_of_workers(tmp_path):
    dataset = ramp_dataset(tmp_path, seed=5)
    dataset.samples = dataset.samples * 6
    torch.manual_seed(1)
    in_process = epoch_of_batches(dataset, 0, epoch=2)
    torch.manual_seed(2)  # the workers' own base seeds differ too
    in_workers = epoch_of_batches(dataset, 2, epoch=2)
    assert len(in_process) == len(in_workers) == 3
    assert all(torch.equal(a, b) for a, b in zip(in_process, in_workers))
    assert not torch.equal(in_process[0][0], in_process[0][1])


def test_invalid_dataset_arguments(tmp_path):
    samples = read_split(write_dataset(tmp_path), "val")
    with pytest.raises(ValueError, match="input_size=0"):
        WsolDataset(samples, 0, MEAN, STD, train=False)
    with pytest.raises(ValueError, match=r"crop_scale=\(0.0, 1.0\)"):
        WsolDataset(samples, 64, MEAN, STD, train=True, crop_scale=(0.0, 1.0))
