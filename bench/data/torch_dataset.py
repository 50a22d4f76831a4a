"""The torch side of a dataset: images as normalized tensors, with training augmentation.

Samples come from :mod:`bench.data.wsol_layout`; :class:`WsolDataset` maps their images
into the network's input frame. The geometry is torchvision's
(``transforms.v2`` on PIL images); only its seeding is ours. Items carry no
boxes: training reads labels only, and evaluation places a sample's boxes in
its evaluated frame with :func:`bench.scoring.protocols.frame_of`.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from bench.data.samples import Sample

CROP_ASPECT_RANGE = (3 / 4, 4 / 3)  # width / height of a training crop (torchvision's default)


def image_to_tensor(
    image: Image.Image, mean: tuple[float, float, float], std: tuple[float, float, float]
) -> torch.Tensor:
    """RGB PIL image (W x H) -> normalized float32 tensor ``(3, H, W)``: ``(pixel / 255 - mean) / std``."""
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)  # (H, W, 3)
    mean_t = torch.tensor(mean, dtype=torch.float32)
    std_t = torch.tensor(std, dtype=torch.float32)
    return ((pixels - mean_t) / std_t).permute(2, 0, 1).contiguous()  # (3, H, W)


class WsolDataset(torch.utils.data.Dataset):
    """Images of a split as normalized tensors.

    Evaluation (``train=False``): the whole image is resized to
    ``input_size x input_size`` (aspect not kept). Training: a random resized
    crop (area fraction in ``crop_scale``, aspect ``w/h`` in [3/4, 4/3]) resized
    to ``input_size``, then a horizontal flip with p = 0.5 if ``hflip``.

    The crop and flip of item ``index`` are drawn from a seed made of
    ``(seed, epoch, stream, index)`` alone. ``stream`` tells apart processes
    that read the same dataset (the rank in a distributed run); :meth:`set_epoch`
    starts the next epoch's crops. So the crops do not depend on ``num_workers``
    or on the order items are read in, they differ from item to item and from
    epoch to epoch, and a run resumed at an epoch boundary sees the crops the
    uninterrupted run saw (no state to save).
    """

    def __init__(
        self,
        samples: list[Sample],
        input_size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        train: bool,
        hflip: bool = True,
        crop_scale: tuple[float, float] = (0.5, 1.0),
        seed: int = 0,
        stream: int = 0,
    ):
        if not isinstance(input_size, int) or input_size <= 0:
            raise ValueError(f"input_size={input_size!r} must be a positive integer")
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(f"crop_scale={crop_scale!r} must satisfy 0 < low <= high <= 1")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean={mean!r} and std={std!r} must have 3 values each, std > 0")
        self.samples = list(samples)
        self.input_size = input_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.train = train
        self.seed, self.stream, self.epoch = seed, stream, 0
        square, bilinear = (input_size, input_size), v2.InterpolationMode.BILINEAR
        self.resize = v2.Resize(square, interpolation=bilinear)
        self.crop = v2.RandomResizedCrop(square, scale=tuple(crop_scale), ratio=CROP_ASPECT_RANGE,
                                         interpolation=bilinear)
        self.flip = v2.RandomHorizontalFlip(p=0.5) if hflip else v2.Identity()

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Draw the augmentation of epoch ``epoch`` from now on (call before iterating a new epoch)."""
        self.epoch = epoch

    def _augment(self, image: Image.Image, index: int) -> Image.Image:
        """The training crop and flip of item ``index`` (S x S), a function of (seed, epoch, stream, index)."""
        entropy = [self.seed, self.epoch, self.stream, index]
        item_seed = int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])
        # torchvision draws from the global generator: seed it for this item alone and restore it after,
        # so that the training's own draws (initialization, dropout) do not depend on the data loading.
        # (torch.manual_seed would also seed every accelerator: ~0.25 ms per item here, against ~3 us.)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(item_seed)
            return self.flip(self.crop(image))

    def _load(self, sample: Sample) -> Image.Image:
        with Image.open(sample.image_path) as image:
            image = image.convert("RGB")
        if (image.height, image.width) != sample.size:
            raise ValueError(
                f"{sample.image_path} is {image.height}x{image.width} (HxW) but image_sizes.txt says "
                f"{sample.size[0]}x{sample.size[1]}; fix the metadata"
            )
        return image

    def __getitem__(self, index: int) -> dict:
        """``{"image": (3, S, S) float32, "label": int, "index": int}``, S = input_size."""
        sample = self.samples[index]
        image = self._load(sample)
        image = self._augment(image, index) if self.train else self.resize(image)
        return {"image": image_to_tensor(image, self.mean, self.std), "label": sample.label, "index": index}


def collate(batch: list[dict]) -> dict:
    """Stack images ``(B, 3, S, S)``, labels and indices ``(B,)`` int64."""
    return {
        "image": torch.stack([item["image"] for item in batch]),
        "label": torch.tensor([item["label"] for item in batch], dtype=torch.int64),
        "index": torch.tensor([item["index"] for item in batch], dtype=torch.int64),
    }
