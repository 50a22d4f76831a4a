"""The torch side of a dataset: images as normalized tensors, with box-aware training augmentation.

Samples come from :mod:`bench.layout` (their boxes follow :mod:`bench.boxes`);
:class:`WsolDataset` maps them into the network's input frame.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from bench.boxes import crop_boxes, hflip_boxes, resize_boxes
from bench.layout import Sample


def image_to_tensor(
    image: Image.Image, mean: tuple[float, float, float], std: tuple[float, float, float]
) -> torch.Tensor:
    """RGB PIL image (W x H) -> normalized float32 tensor ``(3, H, W)``: ``(pixel / 255 - mean) / std``."""
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)  # (H, W, 3)
    mean_t = torch.tensor(mean, dtype=torch.float32)
    std_t = torch.tensor(std, dtype=torch.float32)
    return ((pixels - mean_t) / std_t).permute(2, 0, 1).contiguous()  # (3, H, W)


def sample_resized_crop(
    size: tuple[int, int], scale: tuple[float, float], ratio: tuple[float, float], generator: torch.Generator
) -> tuple[int, int, int, int]:
    """Random crop ``(x0, y0, x1, y1)`` of an image of ``size (H, W)``, as torchvision's RandomResizedCrop.

    Same algorithm as ``torchvision.transforms.RandomResizedCrop.get_params``
    (10 tries of area fraction in ``scale`` and log-uniform aspect ``w/h`` in
    ``ratio``, else a centre crop at the nearest allowed aspect) but with an
    explicit generator, which torchvision's does not take.
    """
    height, width = size
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(1, generator=generator).item())
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * torch.rand(1, generator=generator).item())
        crop_w = int(round(math.sqrt(target_area * aspect)))
        crop_h = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(torch.randint(0, height - crop_h + 1, (1,), generator=generator).item())
            left = int(torch.randint(0, width - crop_w + 1, (1,), generator=generator).item())
            return left, top, left + crop_w, top + crop_h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        crop_w, crop_h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        crop_h, crop_w = height, int(round(height * ratio[1]))
    else:
        crop_w, crop_h = width, height
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return left, top, left + crop_w, top + crop_h


class WsolDataset(torch.utils.data.Dataset):
    """Images of a split as normalized tensors, with their boxes mapped into the input frame.

    Evaluation (``train=False``): the whole image is resized to
    ``input_size x input_size`` (aspect not kept). Training: a random resized
    crop (area fraction in ``crop_scale``, aspect in [3/4, 4/3]) resized to
    ``input_size``, then a horizontal flip with p = 0.5 if ``hflip``.

    Augmentation randomness comes from a generator owned by the dataset, seeded
    from ``(seed, epoch, stream)`` and, inside a DataLoader worker, that worker's
    id. ``stream`` tells apart processes that read the same dataset (the rank in
    a distributed run); :meth:`set_epoch` starts the next epoch's crops. So runs
    are reproducible for any ``num_workers``, workers and ranks do not repeat
    each other's crops, crops differ from epoch to epoch, and a run resumed at an
    epoch boundary sees the crops the uninterrupted run saw (no state to save).
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
        self.train, self.hflip = train, hflip
        self.crop_scale = tuple(crop_scale)
        self.seed, self.stream, self.epoch = seed, stream, 0
        self._generator: torch.Generator | None = None
        self._generator_worker: int | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getstate__(self) -> dict:
        # Workers build their own generator (see _augmentation_generator).
        state = self.__dict__.copy()
        state["_generator"], state["_generator_worker"] = None, None
        return state

    def set_epoch(self, epoch: int) -> None:
        """Draw the augmentation of epoch ``epoch`` from now on (call before iterating a new epoch)."""
        self.epoch = epoch
        self._generator, self._generator_worker = None, None

    def _augmentation_generator(self) -> torch.Generator:
        worker = torch.utils.data.get_worker_info()
        worker_id = None if worker is None else worker.id
        if self._generator is None or worker_id != self._generator_worker:
            entropy = [self.seed, self.epoch, self.stream] + ([] if worker_id is None else [worker_id + 1])
            seed = int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])
            self._generator = torch.Generator().manual_seed(seed)
            self._generator_worker = worker_id
        return self._generator

    def _load(self, sample: Sample) -> Image.Image:
        with Image.open(sample.image_path) as image:
            image = image.convert("RGB")
        if (image.height, image.width) != sample.size:
            raise ValueError(
                f"{sample.image_path} is {image.height}x{image.width} (HxW) but image_sizes.txt says "
                f"{sample.size[0]}x{sample.size[1]}; fix the metadata"
            )
        return image

    def _transform(self, image: Image.Image, boxes: np.ndarray) -> tuple[Image.Image, np.ndarray]:
        """Apply the geometry to the image and its ``(G, 4)`` boxes together."""
        target = (self.input_size, self.input_size)
        original = (image.height, image.width)
        if not self.train:
            return image.resize(target, Image.BILINEAR), resize_boxes(boxes, original, target)
        generator = self._augmentation_generator()
        crop = sample_resized_crop(original, self.crop_scale, (3 / 4, 4 / 3), generator)
        image = image.resize(target, Image.BILINEAR, box=crop)
        crop_size = (crop[3] - crop[1], crop[2] - crop[0])
        boxes = resize_boxes(crop_boxes(boxes, crop), crop_size, target)
        if self.hflip and torch.rand(1, generator=generator).item() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
            boxes = hflip_boxes(boxes, self.input_size)
        return image, boxes

    def __getitem__(self, index: int) -> dict:
        """``{"image": (3, S, S) float32, "label": int, "index": int, "boxes": (G, 4) float32}``, S = input_size."""
        sample = self.samples[index]
        image, boxes = self._transform(self._load(sample), sample.boxes)
        return {
            "image": image_to_tensor(image, self.mean, self.std),
            "label": sample.label,
            "index": index,
            "boxes": torch.as_tensor(np.asarray(boxes, dtype=np.float32)),
        }


def collate(batch: list[dict]) -> dict:
    """Stack images ``(B, 3, S, S)``, labels and indices ``(B,)`` int64; boxes stay a list of ``(G_i, 4)``."""
    return {
        "image": torch.stack([item["image"] for item in batch]),
        "label": torch.tensor([item["label"] for item in batch], dtype=torch.int64),
        "index": torch.tensor([item["index"] for item in batch], dtype=torch.int64),
        "boxes": [item["boxes"] for item in batch],
    }
