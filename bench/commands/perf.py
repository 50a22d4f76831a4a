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
3. Training images/s of every candidate path of ``configs/gap.yaml``'s
   training step (:func:`training_paths`): fp32 and bf16 autocast, each with
   the config's channels_last and frozen stages, each also under
   ``torch.compile`` where it can run here (``--compile``), and plain fp32
   full fine-tuning (no channels_last, nothing frozen) as the reference; all
   timed in alternation on the same embedded training images (SGD steps only:
   no data loading). Beside each: the training seconds of a default run
   (epochs x steps, compile time included), the path ``precision: auto``
   picks, and whether it is the fastest (:func:`auto_verdict`).
4. The cost of each map method of ``bench methods`` (:mod:`bench.scoring.map_methods`) on the
   same network: ms per image of forward + top-5 + the method's top-1 map,
   upsampled and boxed, and its ratio to the forward pass alone
   (:func:`bench.scoring.map_methods.time_methods`; the labels are the top-1 classes, as
   for correctly classified images: one map per image), the median of
   ``--method-repeats`` repeats over ``--method-images`` images. Score-CAM runs the
   network once per feature channel (1,280 for EfficientNet-Lite0), hence
   the one image it is timed on, once (``--scorecam-images``).
5. Seconds per SGD step of each training-time WSOL method (``wsol.method``: HaS, ADL, CutMix, ACoL, SPG)
   against plain CAM, on ``--train-config``'s path and one batch of its training images, in alternation
   (:func:`wsol_method_costs`; ``--wsol-args 'wsol.head_channels=256'`` times ACoL / SPG at another width).
6. The cost of the faithfulness metrics of ``bench methods`` (:mod:`bench.scoring.faithfulness`) on the
   same network, per image: deletion, insertion, Average Drop / Increase, ROAD MoRF and LeRF, all of them
   together, and ROAD MoRF at the library's default nine percentiles, each in ms and in forward passes
   (:func:`faithfulness_costs`; the CAM of the top-1 class as the map, ``--faithfulness-images`` images,
   each metric timed once after a warm-up of the whole set, in turn).

Timings are the median of a few repeats; a shared machine makes them noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import time
import typing
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bench.config import CamMethod, EvalConfig, ModelConfig, RunConfig, WsolMethod, load_config
from bench.data.loading import load_dataset
from bench.data.torch_dataset import WsolDataset, collate
from bench.model.camnet import build_model
from bench.scoring.box_rule import largest_component_box, normalize_cams
from bench.scoring.evaluation import SCORED_MAPS
from bench.scoring.fixed_tau_metrics import TOP_K
from bench.scoring.prediction import localize_batch, localize_features
from bench.scoring.threshold_sweep import reference_sweep, sweep_boxes, threshold_list
from bench.training.loop import autocast, batch_loss, make_optimizer, resolve_precision

SIZE = 224


def _seconds(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


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


def median_timings(repeats: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per method, the median over repeats of :func:`bench.scoring.map_methods.time_methods`'s answers.

    ``repeats``: one ``{name: {"ms_per_image", "overhead"}}`` per repeat.
    Returns ``{name: {"ms_per_image", "overhead", "lowest", "highest"}}``:
    medians, and the lowest and highest overhead seen (how stable the ratio is).
    """
    return {name: {"ms_per_image": statistics.median(repeat[name]["ms_per_image"] for repeat in repeats),
                   "overhead": statistics.median(repeat[name]["overhead"] for repeat in repeats),
                   "lowest": min(repeat[name]["overhead"] for repeat in repeats),
                   "highest": max(repeat[name]["overhead"] for repeat in repeats)}
            for name in repeats[0]}


# The method that runs the network once per feature channel: timed on fewer images, once.
FEW_IMAGES_METHOD = "scorecam"


def method_costs(num_images: int, repeats: int, few_images: int, batch_size: int, threads: int,
                 methods: list[str]) -> None:
    """Per-method ms per image and overhead over the forward pass (module docstring, item 4)."""
    from bench.scoring.map_methods import map_method, time_methods  # loads pytorch-grad-cam only for this timing

    if threads:
        torch.set_num_threads(threads)
    model = build_model(ModelConfig(), num_classes=12).eval()
    images = torch.randn(num_images, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        labels = model(images).argmax(dim=1)  # the top-1 class: one map per image, as for a correct prediction
    batches = [(images[start:start + batch_size], labels[start:start + batch_size])
               for start in range(0, num_images, batch_size)]
    config = EvalConfig()

    def timed(names: list[str], on: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, dict[str, float]]:
        makers = {name: map_method(name, model) for name in names}
        return time_methods(model, makers, on, config.tau, config.normalization, contextlib.nullcontext)

    many = [name for name in methods if name != FEW_IMAGES_METHOD]
    timings = median_timings([timed(many, batches) for _ in range(repeats)])
    print(f"\nmap methods, efficientnet_lite0 stride 16, {SIZE}px, {torch.get_num_threads()} torch threads: "
          f"median of {repeats} repeats over {num_images} images (batches of {batch_size}, one warm-up batch "
          f"per repeat), the methods and the forward pass in turn; range: lowest and highest ratio of the repeats")
    for name, timing in timings.items():
        target = "  (target <= 1.05)" if name == "cam" else ""
        print(f"  {name:<10} {timing['ms_per_image']:10.1f} ms/image  {timing['overhead']:8.2f} x forward  "
              f"range {timing['lowest']:.2f}-{timing['highest']:.2f}{target}")
    if FEW_IMAGES_METHOD in methods:
        few = timed([FEW_IMAGES_METHOD], [(images[:few_images], labels[:few_images])])[FEW_IMAGES_METHOD]
        print(f"  {FEW_IMAGES_METHOD:<10} {few['ms_per_image']:10.1f} ms/image  "
              f"{few['ms_per_image'] / timings['forward']['ms_per_image']:8.0f} x forward  "
              f"(one network pass per feature channel: timed once on {few_images} image(s), after one warm-up; "
              f"ratio to the forward above)")


@dataclasses.dataclass(frozen=True)
class TrainingPath:
    """One way to run a config's SGD step on the CPU: autocast precision, memory layout, frozen stages, compiled."""

    precision: str  # fp32 / bf16 (bench.training.loop.autocast)
    channels_last: bool
    frozen_stages: int
    compiled: bool = False  # torch.compile of the model (forward and backward graphs; the optimizer stays eager)

    @property
    def name(self) -> str:
        layout = "channels_last" if self.channels_last else "contiguous"
        return f"{self.precision}, {layout}, {self.frozen_stages} frozen" + (", torch.compile" if self.compiled else "")


def training_paths(config: RunConfig, compiled_precisions: typing.Sequence[str]) -> tuple[list[TrainingPath],
                                                                                          TrainingPath]:
    """The candidates of ``config``'s training step, and the reference path.

    Candidates: fp32 and bf16 autocast, each with the config's memory layout and
    frozen stages (what a run of ``config`` would train with at that
    precision), then the same compiled with ``torch.compile`` for each of
    ``compiled_precisions``. Reference: plain fp32 full fine-tuning (contiguous,
    nothing frozen), what the levers are measured against.
    """
    candidates = [TrainingPath(precision, config.channels_last, config.train.frozen_stages)
                  for precision in ("fp32", "bf16")]
    candidates += [TrainingPath(precision, config.channels_last, config.train.frozen_stages, compiled=True)
                   for precision in compiled_precisions]
    return candidates, TrainingPath("fp32", False, 0)


def auto_path(config: RunConfig) -> TrainingPath:
    """The path a run of ``config`` trains with on this CPU (``precision: auto`` resolved; runs are never compiled)."""
    return TrainingPath(resolve_precision(config.precision, torch.device("cpu")), config.channels_last,
                        config.train.frozen_stages)


def alternated_seconds(steps: dict[str, Callable[[], object]], repeats: int,
                       clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Seconds of each of ``steps`` over ``repeats`` rounds; each round runs every step once, in order.

    Alternating step by step (not all repeats of one, then the next) spreads
    load from other processes over all steps alike, so their ratios hold on a
    busy machine even where the absolute rates do not. Returns
    ``{name: [seconds per round]}`` in the order of ``steps``.
    """
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            started = clock()
            step()
            seconds[name].append(clock() - started)
    return seconds


def median_rates(seconds: dict[str, list[float]], images: int) -> dict[str, float]:
    """Images per second of each path: ``images`` over its median step time."""
    return {name: images / statistics.median(values) for name, values in seconds.items()}


def run_seconds(rate: float, run_images: int, compile_seconds: float = 0.0) -> float:
    """Training seconds of a run of ``run_images`` image-steps at ``rate`` images/s, plus the one-off compile time."""
    return compile_seconds + run_images / rate


def compile_seconds(first_calls: dict[int, float], step_seconds: float, batch_size: int) -> float:
    """One-off compile time of a compiled path: each first call less one step of its size.

    ``first_calls``: ``{batch size: seconds of the first step at that size}``
    (each new size compiles a graph); ``step_seconds``: the median step at
    ``batch_size`` once compiled, which a step of another size is taken to
    scale with linearly.
    """
    return sum(seconds - step_seconds * size / batch_size for size, seconds in first_calls.items())


# Differences below this fraction are within what alternated medians on a shared machine reproduce.
NOISE = 0.05


def auto_verdict(run_times: dict[str, float], auto: str) -> str:
    """One line: which path ``auto`` picks and whether it is the fastest over a default run.

    ``run_times``: ``{path name: training seconds of a default run}`` of the
    candidates (compile time included for compiled paths); ``auto`` one of them.
    """
    fastest = min(run_times, key=run_times.__getitem__)
    if fastest == auto:
        others = {name: seconds for name, seconds in run_times.items() if name != auto}
        runner_up = min(others, key=others.__getitem__) if others else None
        if runner_up is not None and others[runner_up] < run_times[auto] * (1 + NOISE):
            return (f"auto picks {auto}: the fastest here, but {runner_up} is within "
                    f"{others[runner_up] / run_times[auto] - 1:.0%}, inside the {NOISE:.0%} noise of a shared machine")
        return f"auto picks {auto}: the fastest here"
    gain = run_times[auto] / run_times[fastest]
    noise = (f"; within the {NOISE:.0%} noise of a shared machine, measure again before changing auto"
             if gain < 1 + NOISE else "")
    return f"auto picks {auto}: NOT the fastest here; {fastest} is {gain:.2f}x faster over a default run{noise}"


def _training_steps(config: RunConfig, path: TrainingPath, batches: list[list],
                    num_classes: int) -> list[Callable[[], None]]:
    """SGD steps of ``config``'s model as the pipeline trains it, run the way ``path`` says: one per batch of samples.

    All steps share one model and optimizer (and, compiled, one compiled
    network: a batch of a new size compiles again, as an epoch's last batch does).
    """
    model = build_model(config.model, num_classes, config.wsol)
    if path.frozen_stages:
        model.freeze_stages(path.frozen_stages)
    if path.channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = make_optimizer(model, config.train)
    network = torch.compile(model) if path.compiled else model
    device = torch.device("cpu")

    def step_on(samples: list) -> Callable[[], None]:
        dataset = WsolDataset(samples, config.model.input_size, model.mean, model.std, train=False)
        batch = collate([dataset[index] for index in range(len(dataset))])
        images, labels = batch["image"], batch["label"]  # (B, 3, S, S), (B,)
        if path.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)

        def step() -> None:
            with autocast(device, path.precision):
                _, loss, _ = batch_loss(network, images, labels, config.wsol)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return step

    return [step_on(samples) for samples in batches]


def compile_failure() -> str | None:
    """Why ``torch.compile`` cannot run here (its error, first line), or None when a small function compiles."""
    try:
        torch.compile(lambda tensor: tensor * 2 + 1)(torch.ones(4))
    except Exception as error:  # the inductor CPU backend needs a C++ compiler; any failure means "not here"
        return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
    return None


def training_throughput(config_path: str, repeats: int, threads: int, compile_mode: str,
                        data_root: str | None = None) -> None:
    """Images/s of every candidate training path of ``config_path`` and of plain fp32, measured in alternation."""
    if threads:
        torch.set_num_threads(threads)
    config = load_config(config_path, [f"data_root={data_root}"] if data_root else [])
    auto = auto_path(config)
    failure = compile_failure() if compile_mode != "none" else None
    compiled = [] if compile_mode == "none" or failure else (["fp32", "bf16"] if compile_mode == "all"
                                                              else [auto.precision])
    candidates, reference = training_paths(config, compiled)
    dataset = load_dataset(config.dataset, Path(config.data_root), progress=False)
    torch.manual_seed(0)
    train = dataset.splits["train"]
    batch_size = config.train.batch_size
    last = len(train) % batch_size  # an epoch's last, shorter batch: a new shape, so torch.compile compiles again
    classes = len(dataset.class_names)
    run_images = config.train.epochs * len(train)
    paths = [*candidates, reference]
    steps, first_calls = {}, {}
    for path in paths:  # warm-up: first-call allocations, oneDNN kernel choice, compilation
        sizes = [batch_size, last] if path.compiled and last else [batch_size]
        path_steps = _training_steps(config, path, [train[:size] for size in sizes], classes)
        first_calls[path.name] = {size: _seconds(step) for size, step in zip(sizes, path_steps)}
        steps[path.name] = path_steps[0]
    seconds = alternated_seconds(steps, repeats)
    rates = median_rates(seconds, batch_size)
    steps_per_epoch = -(-len(train) // batch_size)
    print(f"\ntraining throughput ({config.model.backbone}, {config.model.input_size} px, stride "
          f"{config.model.feature_stride}, batch {batch_size}, {torch.get_num_threads()} threads; median of "
          f"{repeats} alternated steps after one warm-up; no data loading). Run: training seconds of a default "
          f"run of {config_path} ({config.train.epochs} epochs x {steps_per_epoch} steps, {run_images} images)")
    width = max(len(path.name) for path in paths)
    run_times, compile_times = {}, {}
    for path in paths:
        name = path.name
        if path.compiled:
            compile_times[name] = compile_seconds(first_calls[name], statistics.median(seconds[name]), batch_size)
        note = "  (reference, not a candidate)" if path == reference else ""
        if path in candidates:
            run_times[name] = run_seconds(rates[name], run_images, compile_times.get(name, 0.0))
            note = f"  run {run_times[name]:5.0f} s" + ("  <- auto" if path == auto else "")
        print(f"  {name:<{width}}  {rates[name]:6.1f} images/s  {rates[name] / rates[reference.name]:5.2f}x fp32 full"
              f"{note}")
    for path in candidates:
        if path.compiled:
            eager = dataclasses.replace(path, compiled=False).name
            print(f"  torch.compile, {path.precision}: compile {compile_times[path.name]:.0f} s (first steps at "
                  f"batch {' and '.join(map(str, first_calls[path.name]))}, less a step each), then "
                  f"{rates[path.name] / rates[eager]:.2f}x the eager step; over a default run "
                  f"{run_times[path.name]:.0f} s against {run_times[eager]:.0f} s eager")
    if failure:
        print(f"  torch.compile cannot run here: {failure}")
    print(f"  {auto_verdict(run_times, auto.name)} (precision {config.precision} in {config_path})")


def wsol_method_costs(config_path: str, repeats: int, threads: int, methods: typing.Sequence[str],
                      data_root: str | None = None, overrides: typing.Sequence[str] = ()) -> None:
    """Seconds per SGD step of each training-time WSOL method against CAM on ``config_path``'s path, alternated.

    Each method's step is the loop's (:func:`bench.training.loop.batch_loss`: HaS / CutMix on the batch,
    the method's head and loss terms), on the same batch, with the path a run of ``config_path`` trains with.
    """
    if threads:
        torch.set_num_threads(threads)
    config = load_config(config_path, [*([f"data_root={data_root}"] if data_root else []), *overrides])
    path = auto_path(config)
    dataset = load_dataset(config.dataset, Path(config.data_root), progress=False)
    batch = dataset.splits["train"][:config.train.batch_size]
    classes = len(dataset.class_names)
    torch.manual_seed(0)
    steps = {}
    for name in dict.fromkeys(["cam", *methods]):
        method_config = dataclasses.replace(config, wsol=dataclasses.replace(config.wsol, method=name))
        steps[name] = _training_steps(method_config, path, [batch], classes)[0]
        steps[name]()  # warm-up
    seconds = {name: statistics.median(values) for name, values in alternated_seconds(steps, repeats).items()}
    print(f"\ntraining-time WSOL methods ({config.model.backbone}, {config.model.input_size} px, batch "
          f"{len(batch)}, {path.name}, {torch.get_num_threads()} threads; median of {repeats} alternated steps "
          f"after one warm-up; wsol parameters of {config_path}, head_channels {config.wsol.head_channels})")
    for name, value in seconds.items():
        print(f"  {name:<8} {value:7.3f} s / step  {value / seconds['cam']:5.2f}x cam")


def faithfulness_costs(num_images: int, threads: int) -> dict[str, float]:
    """Per-image ms of each faithfulness metric and of the forward pass (module docstring, item 6); returns them."""
    from bench.model.cam import upsample_cams
    from bench.scoring.faithfulness import FaithfulnessMetrics, Road  # loads pytorch-grad-cam only for this timing

    if threads:
        torch.set_num_threads(threads)
    model = build_model(ModelConfig(), num_classes=12).eval()
    images = torch.randn(num_images, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = model.features(images)  # (N, C, h, w)
        classes = model.head(features).argmax(dim=1)  # the top-1 class, as bench methods explains it
        maps = upsample_cams(model.class_maps(features, classes[:, None]), (SIZE, SIZE))[:, 0]  # (N, S, S)
    ids = [f"random_{index}" for index in range(num_images)]
    metrics = FaithfulnessMetrics()
    nine = Road(percentiles=tuple(range(10, 100, 10)))

    def with_model(metric: Callable) -> Callable[[], object]:
        return lambda: metric(model, images, classes, maps, ids)

    @torch.no_grad()
    def forward() -> None:
        model(images)

    steps = {"forward pass": forward, "deletion": with_model(metrics.deletion),
             "insertion": with_model(metrics.insertion), "Average Drop / Increase": with_model(metrics.confidence),
             "ROAD MoRF": with_model(metrics.road_morf), "ROAD LeRF": with_model(metrics.road_lerf),
             "all of them (bench methods)": with_model(metrics),
             "ROAD MoRF, percentiles 10..90": with_model(nine)}
    forward()
    metrics(model, images, classes, maps, ids)  # warm-up: first-call allocations, the library's imports
    seconds = {name: values[0] / num_images for name, values in alternated_seconds(steps, 1).items()}
    print(f"\nfaithfulness metrics, efficientnet_lite0 stride 16, {SIZE}px, {torch.get_num_threads()} torch threads, "
          f"{num_images} random images, the top-1 class's CAM; each timed once after a warm-up, in turn "
          f"({metrics.forward_passes()} forward passes per image in all; ROAD at percentiles "
          f"{', '.join(map(str, metrics.road_morf.percentiles))})")
    for name, value in seconds.items():
        print(f"  {name:<30} {value * 1e3:10.0f} ms/image  {value / seconds['forward pass']:7.1f} x forward")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--maps", type=int, default=20, help="maps timed for the fast sweep")
    parser.add_argument("--reference-maps", type=int, default=3, help="maps timed for the reference loop")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--train-config", default="configs/gap.yaml", help="whose training path is timed")
    parser.add_argument("--method-images", type=int, default=16, help="images the map methods are timed on")
    parser.add_argument("--method-repeats", type=int, default=5, help="repeats of the map-method timing (median)")
    parser.add_argument("--method-batch", type=int, default=8, help="images per batch in the map-method timing")
    parser.add_argument("--scorecam-images", type=int, default=1,
                        help="images Score-CAM is timed on (once: it runs the network once per feature channel)")
    parser.add_argument("--compile", choices=("auto", "all", "none"), default="auto",
                        help="training paths also timed under torch.compile: the precision auto picks (default), "
                             "fp32 and bf16, or none")
    parser.add_argument("--data-root", help="data folder of --train-config (default: the config's data_root)")
    parser.add_argument("--methods", default=",".join(typing.get_args(CamMethod)),
                        help="map methods timed (comma-separated; default: all)")
    parser.add_argument("--wsol-methods", default=",".join(m for m in typing.get_args(WsolMethod) if m != "cam"),
                        help="training-time WSOL methods timed against cam (comma-separated)")
    parser.add_argument("--wsol-args", default="",
                        help="config overrides for the WSOL timing, e.g. 'wsol.head_channels=256' (space-separated)")
    parser.add_argument("--faithfulness-images", type=int, default=2,
                        help="images the faithfulness metrics are timed on (once each)")
    parser.add_argument("--only", choices=("sweep", "cam", "train", "methods", "wsol", "faithfulness"),
                        help="run one of the timings")
    args = parser.parse_args()
    if args.only in (None, "sweep"):
        sweep_timings(args.maps, args.reference_maps)
    if args.only in (None, "cam"):
        cam_overhead(args.batch_size, args.repeats, args.threads)
    if args.only in (None, "train"):
        training_throughput(args.train_config, args.repeats, args.threads, args.compile, args.data_root)
    if args.only in (None, "methods"):
        method_costs(args.method_images, args.method_repeats, args.scorecam_images, args.method_batch,
                     args.threads, args.methods.split(","))
    if args.only in (None, "wsol"):
        wsol_method_costs(args.train_config, args.repeats, args.threads, args.wsol_methods.split(","),
                          args.data_root, args.wsol_args.split())
    if args.only in (None, "faithfulness"):
        faithfulness_costs(args.faithfulness_images, args.threads)


if __name__ == "__main__":
    main()
