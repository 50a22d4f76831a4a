"""``make perf``: timings of the threshold sweep, the CAM overhead, training and the map methods (a benchmark, not a test).

Prints, from one process on one machine:

1. ms per 224x224 map for the fast sweep (:func:`bench.scoring.threshold_sweep.sweep_boxes`) and
   the per-threshold reference loop (:func:`bench.scoring.threshold_sweep.reference_sweep`,
   which computes the same two box rules with ``scipy.ndimage.label``), at 100
   and 1,000 thresholds, and their ratio; also the plain loop "threshold ->
   label -> largest component box" alone (one rule). The maps are random 14x14 maps
   upsampled bilinearly to 224x224, like CAMs.
2. The CAM overhead ratio ``time(forward + top-5 and GT-class CAMs + upsampling
   + boxes at tau) / time(forward alone)`` for the default backbone
   (EfficientNet-Lite0, stride 16, 224 px, ImageNet weights, 12 classes).
3. Training images/s of the default training path (``configs/gap.yaml``: the
   precision ``auto`` resolves to on this machine, channels_last, the frozen
   stages it sets) against plain fp32 full fine-tuning (no channels_last,
   nothing frozen), timed in alternation on the same batch of 32 embedded
   training images (SGD steps only: no data loading), and their ratio.
4. The cost of each map method of ``bench methods`` (:mod:`bench.scoring.map_methods`) on the
   same network: ms per image of forward + top-5 + the method's top-1 map,
   upsampled and boxed, and its ratio to the forward pass alone
   (:func:`bench.scoring.map_methods.time_methods`; the labels are the top-1 classes, as
   for correctly classified images: one map per image). Score-CAM runs the
   network once per feature channel (1,280 for EfficientNet-Lite0), hence
   the few images it is timed on (``--method-images``).

Timings are the median of a few repeats; a shared machine makes them noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import typing
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bench.config import CamMethod, EvalConfig, ModelConfig, RunConfig, load_config
from bench.data.loading import load_dataset
from bench.data.torch_dataset import WsolDataset, collate
from bench.model.camnet import build_model
from bench.scoring.box_rule import largest_component_box, normalize_cams
from bench.scoring.evaluation import SCORED_MAPS
from bench.scoring.fixed_tau_metrics import TOP_K
from bench.scoring.prediction import localize_batch, localize_features
from bench.scoring.threshold_sweep import reference_sweep, sweep_boxes, threshold_list
from bench.training.loop import autocast, make_optimizer, resolve_precision

SIZE = 224


def _median_seconds(function: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cam_like_maps(count: int, seed: int = 0) -> np.ndarray:
    """``(count, 224, 224)`` float32 maps: random 14x14 maps upsampled bilinearly, max-normalized."""
    generator = torch.Generator().manual_seed(seed)
    small = torch.randn(count, 1, 14, 14, generator=generator)
    maps = torch.nn.functional.interpolate(small, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return normalize_cams(maps[:, 0].numpy(), "max")


def sweep_timings(num_maps: int, reference_maps: int) -> None:
    maps = cam_like_maps(num_maps)
    gt_boxes = np.array([[40.0, 50.0, 160.0, 190.0]])
    sweep_boxes(maps[0], threshold_list(10), gt_boxes)  # compile (or load the cached compiled kernel)
    print(f"threshold sweep, ms per {SIZE}x{SIZE} map (median of repeats; {num_maps} maps fast, "
          f"{reference_maps} reference)")
    print(f"  {'thresholds':>10}  {'fast':>8}  {'reference':>10}  {'ratio':>7}  "
          f"{'largest-only loop':>18}  {'ratio':>7}")
    for count in (100, 1000):
        thresholds = threshold_list(count)
        fast = _median_seconds(lambda: [sweep_boxes(m, thresholds, gt_boxes) for m in maps], 5) / num_maps
        repeats = 1 if count == 1000 else 3
        reference = _median_seconds(lambda: [reference_sweep(m, thresholds, gt_boxes)
                                              for m in maps[:reference_maps]], repeats) / reference_maps
        largest_only = _median_seconds(lambda: [[largest_component_box(m >= t) for t in thresholds]
                                                 for m in maps[:reference_maps]], 1) / reference_maps
        print(f"  {count:>10}  {fast * 1e3:8.2f}  {reference * 1e3:10.1f}  {reference / fast:6.0f}x  "
              f"{largest_only * 1e3:18.1f}  {largest_only / fast:6.0f}x")


def cam_overhead(batch_size: int, repeats: int, threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)
    model = build_model(ModelConfig(), num_classes=12).eval()
    images = torch.randn(batch_size, 3, SIZE, SIZE)
    labels = torch.arange(batch_size) % 12
    config = EvalConfig()
    sizes = [(SIZE, SIZE)] * batch_size
    # Exactly evaluation's call: top-5 and GT-class CAMs, the two maps the metrics use upsampled and boxed.
    rule = {"topk": TOP_K, "tau": config.tau, "normalization": config.normalization, "labels": labels,
            "boxed": SCORED_MAPS}

    @torch.no_grad()
    def forward() -> None:
        model.head(model.features(images))

    def forward_cams_boxes() -> None:
        localize_batch(model, images, sizes, **rule)

    forward()
    forward_cams_boxes()  # warm-up
    plain, full = [], []
    for _ in range(repeats):  # interleaved, so that load from other processes hits both alike
        plain.append(_median_seconds(forward, 1))
        full.append(_median_seconds(forward_cams_boxes, 1))
    plain, full = statistics.median(plain), statistics.median(full)
    # The CAM work alone, on features computed once: far less noisy than a difference of two forward timings.
    with torch.no_grad():
        features = model.features(images)  # (B, C, h, w)

    def cams_and_boxes() -> None:
        localize_features(model, features, sizes, **rule)

    extra = _median_seconds(cams_and_boxes, 3 * repeats)
    print(f"CAM overhead, efficientnet_lite0 stride 16, {SIZE}px, batch {batch_size}, "
          f"{torch.get_num_threads()} torch threads (median of {repeats})")
    print(f"  forward alone                              {plain * 1e3 / batch_size:7.2f} ms/image")
    print(f"  forward + top-5 & GT CAMs + top-1 & GT boxes {full * 1e3 / batch_size:7.2f} ms/image")
    print(f"  ratio, end to end                          {full / plain:7.3f}  (target <= 1.05)")
    print(f"  head + CAMs + boxes alone (median of {3 * repeats})  {extra * 1e3 / batch_size:7.2f} ms/image")
    print(f"  ratio, (forward + that) / forward          {(plain + extra) / plain:7.3f}  (target <= 1.05)")


def method_costs(num_images: int, threads: int, methods: list[str]) -> None:
    """Per-method ms per image and overhead over the forward pass (module docstring, item 4)."""
    from bench.scoring.map_methods import map_method, time_methods  # loads pytorch-grad-cam only for this timing

    if threads:
        torch.set_num_threads(threads)
    model = build_model(ModelConfig(), num_classes=12).eval()
    images = torch.randn(num_images, 3, SIZE, SIZE)
    with torch.no_grad():
        labels = model(images).argmax(dim=1)  # the top-1 class: one map per image, as for a correct prediction
    makers = {name: map_method(name, model) for name in methods}
    config = EvalConfig()
    timings = time_methods(model, makers, [(images, labels)], config.tau, config.normalization, contextlib.nullcontext)
    print(f"\nmap methods, efficientnet_lite0 stride 16, {SIZE}px, one batch of {num_images} images, "
          f"{torch.get_num_threads()} torch threads (after one warm-up)")
    for name, timing in timings.items():
        target = "  (target <= 1.05)" if name == "cam" else ""
        print(f"  {name:<10} {timing['ms_per_image']:10.1f} ms/image  {timing['overhead']:8.2f} x forward{target}")


def _training_step(config: RunConfig, samples: list, num_classes: int, precision: str) -> Callable[[], None]:
    """One SGD step of ``config``'s model on ``samples`` as the pipeline trains it.

    Same frozen stages, memory layout and precision as a run of ``config``.
    """
    model = build_model(config.model, num_classes=num_classes)
    images = WsolDataset(samples, config.model.input_size, model.mean, model.std, train=False)
    batch = collate([images[index] for index in range(len(images))])
    images, labels = batch["image"], batch["label"]
    if config.train.frozen_stages:
        model.freeze_stages(config.train.frozen_stages)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    model.train()
    optimizer = make_optimizer(model, config.train)
    device = torch.device("cpu")

    def step() -> None:
        with autocast(device, precision):
            loss = torch.nn.functional.cross_entropy(model(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def training_throughput(config_path: str, repeats: int, threads: int) -> None:
    """Images/s of ``config_path``'s training path and of plain fp32 full fine-tuning, measured in alternation."""
    if threads:
        torch.set_num_threads(threads)
    default = load_config(config_path)
    plain = load_config(config_path, ["precision=fp32", "channels_last=false", "train.frozen_stages=0"])
    precision = resolve_precision(default.precision, torch.device("cpu"))
    dataset = load_dataset(default.dataset, Path(default.data_root), progress=False)
    torch.manual_seed(0)
    samples = dataset.splits["train"][:32]
    classes = len(dataset.class_names)
    steps = {"default": _training_step(default, samples, classes, precision),
             "fp32 full": _training_step(plain, samples, classes, "fp32")}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():
        step()  # warm-up: first-call allocations and oneDNN kernel choice
    for _ in range(repeats):
        for name, step in steps.items():  # alternated, so load on a shared machine hits both alike
            started = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - started)
    rates = {name: len(samples) / statistics.median(values) for name, values in times.items()}
    frozen = default.train.frozen_stages
    print(f"\ntraining throughput ({default.model.backbone}, {default.model.input_size} px, stride "
          f"{default.model.feature_stride}, batch 32, {torch.get_num_threads()} threads; median of {repeats} "
          f"alternated steps)")
    print(f"  default path ({config_path}: {precision} [precision {default.precision}], channels_last "
          f"{default.channels_last}, {frozen} stages frozen): {rates['default']:6.1f} images/s")
    print(f"  fp32 full fine-tuning (no channels_last, nothing frozen):  {rates['fp32 full']:6.1f} images/s")
    print(f"  ratio default / fp32: {rates['default'] / rates['fp32 full']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--maps", type=int, default=20, help="maps timed for the fast sweep")
    parser.add_argument("--reference-maps", type=int, default=3, help="maps timed for the reference loop")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--train-config", default="configs/gap.yaml", help="whose training path is timed")
    parser.add_argument("--method-images", type=int, default=2, help="images the map methods are timed on")
    parser.add_argument("--methods", default=",".join(typing.get_args(CamMethod)),
                        help="map methods timed (comma-separated; default: all)")
    parser.add_argument("--only", choices=("sweep", "cam", "train", "methods"), help="run one of the timings")
    args = parser.parse_args()
    if args.only in (None, "sweep"):
        sweep_timings(args.maps, args.reference_maps)
    if args.only in (None, "cam"):
        cam_overhead(args.batch_size, args.repeats, args.threads)
    if args.only in (None, "train"):
        training_throughput(args.train_config, args.repeats, args.threads)
    if args.only in (None, "methods"):
        method_costs(args.method_images, args.threads, args.methods.split(","))


if __name__ == "__main__":
    main()
