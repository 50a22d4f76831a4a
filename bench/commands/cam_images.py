"""``python -m bench cam``: class activation maps, top-k classes and boxes for any image.

For each image: the network sees it resized (not cropped) to its input size,
the CAMs of the top-k classes come from the same forward pass as the logits,
are upsampled straight to the image's original ``(H, W)`` and boxed by the
paper's rule, largest 8-connected component (the path evaluation uses too,
:mod:`bench.scoring.prediction`). The threshold and normalization are the run's
``eval.tau`` and ``eval.normalization`` with ``--checkpoint`` (read from its
``config.yaml``), the paper's tau = 0.2 of the max otherwise; both are printed
and written in every JSON file. Outputs, in ``--out``:

* ``<file name>.cam.png``: one panel per top-k class, each at the image's
  original resolution (CAM overlaid in jet, box in red), class name and
  probability above it;
* ``<file name>.json``: the top-k classes, probabilities and boxes
  (``[x0, y0, x1, y1)`` in pixels of the original image, see :mod:`bench.data.boxes`),
  with the box rule (``tau``, ``normalization``) and where it came from.

EXIF orientation is applied first, so "original" means the image as viewers
show it. Existing outputs are never replaced without ``--overwrite``.

Model: with no checkpoint, the ImageNet-pretrained EfficientNet-Lite0 (its
1000-class layer, 224 px, stride 32: the network as it was trained) and the
1,000 ImageNet class names (from torchvision's metadata, offline). With
``--checkpoint results/<run>/checkpoint.pt`` (or the run folder ``results/<run>``): the network rebuilt from the
run folder's ``config.yaml``, the checkpoint's weights, the class names from
the run folder's ``classes.txt`` (written by every run), or, for runs made
before that file existed, from the dataset the config names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps
from timm.data.constants import IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD

from bench.atomic_files import atomic_path, write_text
from bench.config import EvalConfig, ModelConfig, file_in_the_way
from bench.data.samples import IMAGE_SUFFIXES
from bench.data.torch_dataset import image_to_tensor
from bench.errors import InputError
from bench.model.camnet import CamNet, efficientnet_lite0_imagenet
from bench.progress import progress_bar
from bench.run.figures import overlay_cam
from bench.run.folder import CHECKPOINT_FILE
from bench.run.trained_model import TrainedModelError, load_trained_network
from bench.scoring.box_rule import normalize_cams
from bench.scoring.prediction import localize_batch
from bench.scoring.protocols import box_rule

IMAGENET_INPUT_SIZE = 224
PAPER_RULE = EvalConfig()  # tau = 0.2 of the max: the box rule without a run to take it from


class CamCommandError(InputError, ValueError):
    """Bad input to ``bench cam`` (no images, missing checkpoint, outputs that exist); nothing was written."""


@dataclass(frozen=True)
class CamModel:
    """A CAM network with its class names, input size and box rule (``tau`` on ``normalization``-normalized CAMs)."""

    network: CamNet
    class_names: list[str]
    input_size: int
    tau: float = PAPER_RULE.tau
    normalization: str = PAPER_RULE.normalization
    rule_source: str = "the CAM paper's rule (no run given)"

    @property
    def box_rule(self) -> str:
        return box_rule(self.tau, self.normalization)


@dataclass(frozen=True)
class ImagePrediction:
    """The top-k classes of one image and the box of each one's CAM in the original frame."""

    classes: list[int]
    probabilities: list[float]
    boxes: np.ndarray  # (K, 4) float32
    cams: np.ndarray  # (K, H, W) float32, normalized by their max


def imagenet_cam_model() -> CamModel:
    """EfficientNet-Lite0 with its ImageNet 1000-class layer as a GAP :class:`CamNet`."""
    from torchvision.models import ResNet50_Weights

    pretrained = efficientnet_lite0_imagenet(feature_stride=32)
    network = CamNet(pretrained.features, pretrained.classifier.in_features, 1000,
                     ModelConfig(pooling="gap", pretrained=False), IMAGENET_INCEPTION_MEAN,
                     IMAGENET_INCEPTION_STD)  # EfficientNet-Lite's TF weights expect [-1, 1]
    network.classifier = pretrained.classifier
    names = list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])
    return CamModel(network.eval(), names, IMAGENET_INPUT_SIZE)


def checkpoint_file(checkpoint: Path) -> Path:
    """``--checkpoint``: a checkpoint file as given, or a run folder's ``checkpoint.pt`` (the final epoch's)."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        return checkpoint
    if not (checkpoint / CHECKPOINT_FILE).is_file():
        raise CamCommandError(f"--checkpoint {checkpoint}: the folder holds no {CHECKPOINT_FILE}; give a finished "
                              f"run's folder (e.g. results/gap) or a checkpoint file")
    return checkpoint / CHECKPOINT_FILE


def checkpoint_cam_model(checkpoint: Path) -> CamModel:
    """The network of a run folder (``config.yaml`` beside the checkpoint) with the checkpoint's weights.

    ``checkpoint``: the file, or the run folder that holds ``checkpoint.pt`` (:func:`checkpoint_file`).
    """
    checkpoint = checkpoint_file(checkpoint)
    try:
        network, names, config = load_trained_network(checkpoint)
    except TrainedModelError as error:
        raise CamCommandError(str(error)) from error
    return CamModel(network, names, config.model.input_size, config.eval.tau, config.eval.normalization,
                    f"{checkpoint.parent / 'config.yaml'} (eval.tau, eval.normalization)")


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """The image files named by ``inputs``: files as given, folders' image files (by suffix, sorted, not recursive).

    A path that does not exist is bad input (:class:`CamCommandError` naming every
    such path, before anything is written); a file that exists but cannot be
    decoded is kept, and reported and skipped later (exit code 3).
    """
    missing = [str(item) for item in map(Path, inputs) if not item.exists()]
    if missing:
        raise CamCommandError(f"no such file or folder: {', '.join(missing)}; check the path(s) (nothing was "
                              f"written)")
    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise CamCommandError(f"folder {item} holds no image file ({', '.join(IMAGE_SUFFIXES)})")
            paths += found
        else:
            paths.append(item)
    return paths


def output_paths(image: Path, out_dir: Path) -> tuple[Path, Path]:
    """``(overlay PNG, boxes JSON)`` of one image."""
    return out_dir / f"{image.name}.cam.png", out_dir / f"{image.name}.json"


def check_outputs_free(images: list[Path], out_dir: Path, overwrite: bool) -> None:
    """Refuse an ``out_dir`` that cannot be a folder, two inputs with the same file name (same outputs) and,
    without ``overwrite``, existing outputs."""
    blocking = file_in_the_way(out_dir)
    if blocking is not None:
        raise CamCommandError(f"--out {out_dir}: {blocking} is an existing file, not a folder; choose a folder "
                              f"for the outputs")
    seen: dict[str, Path] = {}
    for image in images:
        if image.name in seen:
            raise CamCommandError(f"{seen[image.name]} and {image} have the same file name, so the same outputs in "
                               f"{out_dir}; run them with different --out folders")
        seen[image.name] = image
    if overwrite:
        return
    existing = [path for image in images for path in output_paths(image, out_dir) if path.exists()]
    if existing:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise CamCommandError(f"{existing[0]}{more} already exist(s); pass --overwrite to replace, "
                           f"or choose another --out folder")


def read_image(path: Path) -> Image.Image:
    """RGB image upright (EXIF orientation applied); raises ``OSError`` / ``ValueError`` if unreadable."""
    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


def predict_cams(model: CamModel, images: list[Image.Image], topk: int) -> list[ImagePrediction]:
    """Top-k classes, their CAMs upsampled to each image's ``(H, W)`` and their boxes, for a batch of images."""
    network = model.network
    size = (model.input_size, model.input_size)
    batch = torch.stack([image_to_tensor(image.resize(size, Image.BILINEAR), network.mean, network.std)
                         for image in images])  # (B, 3, S, S)
    sizes = [(image.height, image.width) for image in images]
    located = localize_batch(network, batch, sizes, topk, model.tau, model.normalization)
    prediction = located.prediction
    return [ImagePrediction(prediction.topk_classes[index].tolist(), prediction.topk_probs[index].tolist(),
                            located.boxes[index], normalize_cams(located.maps[index], model.normalization))
            for index in range(len(images))]


def render_overlay(image: Image.Image, prediction: ImagePrediction, class_names: list[str]) -> Image.Image:
    """The K panels side by side, each ``H x W`` (the original image) under a title strip."""
    width, height = image.size
    font = ImageFont.load_default(size=max(12, min(width, height) // 25))
    strip = int(font.size * 1.6)
    line = max(2, min(width, height) // 150)
    canvas = Image.new("RGB", (width * len(prediction.classes), height + strip), "white")
    pixels = np.asarray(image)
    for rank, (label, probability, box, cam) in enumerate(zip(prediction.classes, prediction.probabilities,
                                                              prediction.boxes, prediction.cams)):
        panel = Image.fromarray(overlay_cam(pixels, cam))
        x0, y0, x1, y1 = (float(v) for v in box)
        if x1 > x0 and y1 > y0:  # boxes are half-open pixel ranges; PIL's rectangle is inclusive
            ImageDraw.Draw(panel).rectangle((x0, y0, x1 - 1, y1 - 1), outline=(255, 0, 0), width=line)
        canvas.paste(panel, (rank * width, strip))
        title = f"{rank + 1}. {class_names[label]}  {100 * probability:.1f}%"
        ImageDraw.Draw(canvas).text((rank * width + 4, strip * 0.2), title, fill="black", font=font)
    return canvas


def prediction_record(path: Path, image: Image.Image, prediction: ImagePrediction, model: CamModel) -> dict:
    """What the JSON file holds for one image."""
    return {
        "image": str(path),
        "size_hw": [image.height, image.width],
        "input_size": model.input_size,
        "tau": model.tau,
        "normalization": model.normalization,
        "box_rule": model.box_rule,
        "box_rule_from": model.rule_source,
        "box_format": "[x0, y0, x1, y1), pixels of the original image",
        "predictions": [
            {"rank": rank + 1, "class_index": label, "class_name": model.class_names[label],
             "probability": round(probability, 6), "box": [round(float(v), 2) for v in box]}
            for rank, (label, probability, box) in enumerate(zip(prediction.classes, prediction.probabilities,
                                                                 prediction.boxes))
        ],
    }


def plan_outputs(inputs: Sequence[str | Path], out_dir: Path, overwrite: bool = False) -> list[Path]:
    """The images to process, after checking that their outputs can be written (before any model is loaded)."""
    images = collect_images(inputs)
    check_outputs_free(images, out_dir, overwrite)
    return images


def run_cam(images: list[Path], model: CamModel, out_dir: Path, topk: int = 5, batch_size: int = 16,
            log: Callable[[str], None] = print) -> list[tuple[Path, str]]:
    """CAMs, top-k and boxes for every image (from :func:`plan_outputs`); returns the skipped files with the reason."""
    if topk < 1 or batch_size < 1:
        raise CamCommandError(f"--topk and --batch-size must be >= 1, got {topk} and {batch_size}")
    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"boxes: {model.box_rule} (8-connected), from {model.rule_source}")
    skipped: list[tuple[Path, str]] = []
    batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    for batch_paths in progress_bar(batches, desc="cam", unit="batch", leave=False, disable=len(batches) < 2):
        loaded = []
        for path in batch_paths:
            try:
                loaded.append((path, read_image(path)))
            except (OSError, ValueError, Image.DecompressionBombError) as error:
                skipped.append((path, f"{type(error).__name__}: {error}"))
                log(f"skipped {path}: cannot read it as an image ({type(error).__name__}: {error})")
        if not loaded:
            continue
        predictions = predict_cams(model, [image for _, image in loaded], topk)
        for (path, image), prediction in zip(loaded, predictions):
            png, record_path = output_paths(path, out_dir)
            with atomic_path(png) as temporary:
                render_overlay(image, prediction, model.class_names).save(temporary, format="PNG")
            record = prediction_record(path, image, prediction, model)
            write_text(record_path, json.dumps(record, indent=2) + "\n")
            log(f"{path} ({image.width}x{image.height})")
            for entry in record["predictions"]:
                log(f"  {entry['rank']}. {entry['class_name']:<28} {100 * entry['probability']:6.2f}%  "
                    f"box {entry['box']}")
    log(f"{len(images) - len(skipped)} image(s) done, {len(skipped)} skipped; outputs in {out_dir}/")
    return skipped
