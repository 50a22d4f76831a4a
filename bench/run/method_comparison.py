"""CAM-family methods on a finished run, scored with the run's own protocol (``bench methods``, ``study.methods``).

The network is rebuilt from the run folder's ``config.yaml`` with the final
epoch's weights (``checkpoint.pt``, the epoch ``metrics.json`` reports). For
each method (:mod:`bench.scoring.map_methods`), the maps of the top-1 and the GT class of
every image of the split go through the evaluation path of the run itself
(:func:`bench.scoring.evaluation.score_batches`, the run's ``eval`` section: frame, tau,
normalization, threshold list) and, for the tau from val, the val split's
sweep (:func:`bench.scoring.evaluation.sweep_split`). So the ``cam`` row is the run's own
``metrics.json``, recomputed.

Written to ``RUN_DIR/methods/`` (names in :mod:`bench.run.folder`), built in a
temporary folder and renamed once complete; an existing ``methods/`` is only
replaced with ``overwrite``:

* ``methods.csv`` / ``methods.md``: one row per method, in one table: top-1 /
  top-5 loc error, GT-known loc, mean IoU at the run's tau; MaxBoxAcc,
  MaxBoxAccV2, PxAP (with masks); the tau chosen on val and the top-1 loc
  error at it; the pointing game and the energy-based pointing game of the
  GT-class maps on the same images (:mod:`bench.scoring.pointing_game`); the
  faithfulness metrics of the top-1 class's maps on the first images
  (:func:`score_faithfulness`, :mod:`bench.scoring.faithfulness`): deletion
  and insertion AUC, Average Drop and Increase, ROAD MoRF and LeRF;
  milliseconds per image and the overhead over the forward pass
  (:func:`bench.scoring.map_methods.time_methods`, measured in the same process on the
  first batches of the split); the images scored (``methods.csv``: ``images``,
  ``val_images``, ``all_images``, ``faithfulness_images``; ``methods.md``: in
  its protocol lines);
* ``methods.png``: the first images of the split, one column per method
  (top-1 class map normalized as evaluated, GT boxes green, predicted box red);
* ``predictions_<method>.csv``: each method's per-image rows;
* ``pointing_<method>.csv``: each method's pointing game per image (GT
  class, hit 0/1, energy share), every scored image: paired differences
  between methods come from these;
* ``faithfulness_<method>.csv``: each method's faithfulness values per image
  (:data:`bench.scoring.faithfulness.IMAGE_VALUES`), on the first images.

``images`` scores the first N images of the split and the first N of val
only (:class:`ScoredImages`), a deterministic subset for a quick look;
``faithfulness_images`` the first N of those get the faithfulness metrics.
Before scoring, :func:`probe_seconds_per_image` times each method's path on
a few images, :func:`probe_faithfulness_seconds` the faithfulness metrics on
one, and :func:`describe_estimate` says what the call will cost.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from bench.atomic_files import TEMPORARY_SUFFIX, write_csv_rows, write_text  # noqa: E402
from bench.config import DEFAULT_DELETION_STEPS, DEFAULT_FAITHFULNESS_IMAGES, RunConfig, load_config  # noqa: E402
from bench.data.images import check_images  # noqa: E402
from bench.data.torch_dataset import WsolDataset, collate  # noqa: E402
from bench.errors import InputError  # noqa: E402
from bench.model.cam import upsample_cams  # noqa: E402
from bench.model.camnet import CamNet  # noqa: E402
from bench.run.figures import draw_box, overlay_cam, save_figure  # noqa: E402
from bench.run.folder import (
    CHECKPOINT_FILE,
    COMPLETE,
    CONFIG_FILE,
    METHOD_FAITHFULNESS,
    METHOD_POINTING,
    METHOD_PREDICTIONS,
    METHODS_DIR,
    METHODS_FIGURE,
    METHODS_MARKDOWN,
    METHODS_TABLE,
    run_status,
)
from bench.run.pipeline import calibration_samples, prepare_dataset  # noqa: E402
from bench.run.trained_model import load_trained_network  # noqa: E402
from bench.scoring.evaluation import GalleryItem, SweepMeters, collect_results, score_batches, sweep_split  # noqa: E402
from bench.scoring.faithfulness import IMAGE_VALUES, FaithfulnessMetrics, summarize  # noqa: E402
from bench.scoring.map_checks import UnscorableMapError  # noqa: E402
from bench.scoring.map_methods import (  # noqa: E402
    CENTER,
    DEFAULT_METHODS,
    LIBRARY_CLASSES,
    METHODS,
    ON_IMAGES,
    OUR_CAM,
    check_methods,
    map_method,
    time_methods,
)
from bench.scoring.metric_names import METHOD_COLUMNS, METRICS  # noqa: E402
from bench.scoring.pointing_game import PointingMeter  # noqa: E402
from bench.scoring.prediction import MapMethod, predict  # noqa: E402
from bench.scoring.protocols import describe_protocol, run_protocol  # noqa: E402
from bench.scoring.threshold_free_metrics import sweep_summary  # noqa: E402
from bench.training.loop import autocast, resolve_precision  # noqa: E402

COLUMNS = METHOD_COLUMNS  # methods.csv's columns after "method", with their labels in methods.md
# methods.csv's last columns, the same in every row (methods.md states them in its protocol line): the split's
# images scored, the val images swept for the tau from val, 1 if those were all of both splits (0: --images),
# the split's first images the faithfulness metrics scored (--faithfulness-images).
IMAGE_COLUMNS = ("images", "val_images", "all_images", "faithfulness_images")
FIGURE_IMAGES = 6
PROBE_IMAGES = 2  # the split's first images, on which each method's path is timed for the estimate
PROBE_ROUNDS = 3  # timed rounds over them after one warm-up, the methods in turn in each; the fastest counts


class MethodsFolderError(InputError, ValueError):
    """A run folder cannot take map methods (no finished run there, a ``methods/`` that exists); nothing was written."""


@dataclass(frozen=True)
class MethodsRun:
    """A finished run loaded for ``bench methods``: its config (``eval.split`` as asked) and its network."""

    run_dir: Path
    config: RunConfig
    network: CamNet
    class_names: list[str]
    device: torch.device
    precision: str


@dataclass(frozen=True)
class ScoredImages:
    """The images scored: the first ``limit`` of the split and of val (every image without a limit)."""

    split: str
    samples: list  # the split's images scored, in split order
    split_total: int  # the split's usable images
    val_samples: list  # the val images swept for the tau from val (none when the run does not calibrate)
    val_total: int
    limit: int | None = None

    @property
    def all_images(self) -> bool:
        return len(self.samples) == self.split_total and len(self.val_samples) == self.val_total

    def describe(self) -> str:
        """Which images, e.g. 'the first 50 of the 300 test images (--images 50), the first 50 of the 300 val ...'."""
        def part(count: int, total: int, split: str) -> str:
            return f"all {total} {split} images" if count == total else f"the first {count} of the {total} {split} images"

        text = part(len(self.samples), self.split_total, self.split)
        if self.val_total:
            text += f"; tau from val on {part(len(self.val_samples), self.val_total, 'val')}"
        return text + ("" if self.limit is None or self.all_images else f" (--images {self.limit})")

    def first(self, limit: int | None) -> ScoredImages:
        """The first ``limit`` images of the split and of val (all of them for None)."""
        return dataclasses.replace(self, samples=self.samples[:limit], val_samples=self.val_samples[:limit],
                                   limit=limit)


def check_image_limit(limit: int | None) -> None:
    """``--images``: None (every image) or an integer >= 1."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise MethodsFolderError(f"--images {limit!r}: expected a whole number of images >= 1 (the first N images "
                                 f"of the split and of val are scored); leave it out to score every image")


def faithfulness_metrics(deletion_steps: int) -> FaithfulnessMetrics:
    """The metrics for ``--deletion-steps``; the metrics' own check of the steps, named as the option."""
    try:
        return FaithfulnessMetrics.with_steps(deletion_steps)
    except ValueError as error:
        raise MethodsFolderError(f"--deletion-steps {deletion_steps!r}: expected a whole number of steps >= 1 (the "
                                 f"deletion and insertion curves replace 1/N of the pixels a step; default "
                                 f"{DEFAULT_DELETION_STEPS})") from error


def check_faithfulness_images(count: int) -> None:
    """``--faithfulness-images``: an integer >= 0 (0: no faithfulness metrics)."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise MethodsFolderError(f"--faithfulness-images {count!r}: expected a whole number of images >= 0 (the "
                                 f"first N images of the split get the faithfulness metrics; 0: none)")


def every_image(run: MethodsRun) -> ScoredImages:
    """The run's split (``eval.split``) and val images after the run's image checks (:meth:`ScoredImages.first` cuts)."""
    config = run.config
    dataset = prepare_dataset(config, progress=False)
    samples, _ = check_images(dataset.splits[config.eval.split], config.dataset.skip_bad, config.eval.split)
    val_samples = calibration_samples(dataset, config)[0] if config.eval.calibrate else []
    return ScoredImages(config.eval.split, samples, len(samples), val_samples, len(val_samples))


def check_methods_free(run_dir: Path, overwrite: bool) -> None:
    """Refuse a folder that is not a finished run, and an existing ``methods/`` without ``overwrite``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MethodsFolderError(f"run folder {run_dir} not found; give a finished run's folder, e.g. results/gap")
    status = run_status(run_dir)
    if status != COMPLETE or not (run_dir / CHECKPOINT_FILE).is_file():
        raise MethodsFolderError(f"{run_dir} holds no finished run (status: {status}; a run folder has "
                                  f"{CONFIG_FILE}, {CHECKPOINT_FILE} and a complete manifest.json); finish it first")
    if (run_dir / METHODS_DIR).exists() and not overwrite:
        raise MethodsFolderError(f"{run_dir / METHODS_DIR} already exists; pass --overwrite to replace it")


def load_run(run_dir: Path, split: str | None = None, device: torch.device | None = None) -> MethodsRun:
    """The run in ``run_dir`` with its final weights, in eval mode; ``split`` (default: the run's) is scored."""
    run_dir = Path(run_dir)
    config = load_config(run_dir / CONFIG_FILE, [] if split is None else [f"eval.split={split}"])
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    network, class_names, _ = load_trained_network(run_dir / CHECKPOINT_FILE)
    return MethodsRun(run_dir, config, network.to(device).eval(), class_names, device,
                      resolve_precision(config.precision, device))


def _loader(run: MethodsRun, samples: list) -> torch.utils.data.DataLoader:
    network, config = run.network, run.config
    images = WsolDataset(samples, config.model.input_size, network.mean, network.std, train=False)
    return torch.utils.data.DataLoader(images, batch_size=config.eval.batch_size, collate_fn=collate,
                                       num_workers=config.train.num_workers)


def score_method(run: MethodsRun, name: str, method: MapMethod | None, samples: list, val_samples: list,
                 out_dir: Path, figure_images: int) -> tuple[dict[str, float], list[GalleryItem], str]:
    """Method ``name`` (its map maker ``method``, :func:`bench.scoring.map_methods.map_method`) through the run's evaluation.

    Returns its row of ``methods.csv`` (no timing), its figure items and the pointing game's protocol line;
    writes its per-image rows (predictions, pointing) to ``out_dir``.
    """
    config = run.config
    eval_config = dataclasses.replace(config.eval, gallery_size=figure_images)
    # The run's protocol (eval.protocol) and threshold list, as the run's own evaluation used them.
    protocol = run_protocol(config)
    sweep = SweepMeters.for_protocol(protocol, config.eval.num_thresholds)
    val_sweep = SweepMeters.for_protocol(protocol, config.eval.num_thresholds)
    pointing = PointingMeter()
    with autocast(run.device, run.precision), _naming(name):
        scored = score_batches(run.network, _loader(run, samples), samples, eval_config, run.device, sweep, method,
                               pointing)
        result = collect_results(scored, out_dir / METHOD_PREDICTIONS.format(method=name))
        if val_samples:
            sweep_split(run.network, _loader(run, val_samples), val_samples, eval_config, run.device, val_sweep,
                        method)
    write_csv_rows(out_dir / METHOD_POINTING.format(method=name), ["image_id", "gt_class", "hit", "energy_share"],
                   ([image_id, label, int(hit), f"{share:.6g}"] for image_id, label, hit, share in pointing.images))
    summary = sweep_summary(sweep.boxes, sweep.pixels, val_sweep.boxes if val_samples else None,
                            config.eval.split, config.eval.normalization, protocol)
    calibrated = summary.get("calibrated", {})
    row = {key: result.metrics[key] for key in ("top1_cls_error", "top1_loc_error", "top5_loc_error",
                                                  "gt_known_loc_acc", "mean_iou")}
    row.update(max_box_acc=summary["max_box_acc"]["value"], max_box_acc_v2=summary["max_box_acc_v2"]["value"],
               pxap=summary.get("pxap", {}).get("value", math.nan), val_tau=calibrated.get("tau", math.nan),
               top1_loc_error_val_tau=calibrated.get("top1_loc_error", math.nan), **pointing.compute())
    return row, result.gallery, pointing.describe()


@contextlib.contextmanager
def _naming(name: str):
    """A map that cannot be scored (:class:`UnscorableMapError`) is reported with the method that made it."""
    try:
        yield
    except UnscorableMapError as error:
        raise UnscorableMapError(f"method {name}, {error}; bench methods cannot score this method's maps (exit "
                                 f"without writing methods/); leave the method out with --methods") from error


def score_faithfulness(run: MethodsRun, name: str, method: MapMethod | None, samples: list, out_dir: Path,
                       metrics: FaithfulnessMetrics = FaithfulnessMetrics()) -> dict[str, float]:
    """The faithfulness metrics of method ``name`` on ``samples`` (:mod:`bench.scoring.faithfulness`).

    Each image's map of its top-1 class, made as the scoring makes it (at the run's precision), upsampled
    bilinearly to the network input ``(S, S)``, raw; the metrics then run in float32. Writes each image's
    values to ``out_dir / faithfulness_<name>.csv`` (no file without images); returns the summary
    (:data:`bench.scoring.faithfulness.SUMMARY_KEYS`, NaN without images).
    """
    values: dict[str, list] = {key: [] for key in IMAGE_VALUES}
    if not samples:
        return summarize(values)  # NaN columns, no file
    image_ids, classes = [], []
    network = run.network
    for batch in _loader(run, samples):
        images = batch["image"].to(run.device)  # (B, 3, S, S)
        ids = [samples[index].image_id for index in batch["index"].tolist()]
        with autocast(run.device, run.precision):
            prediction = predict(network, images, 1, None, method, mapped=(0,))  # the top-1 class's map
        top1 = prediction.topk_classes[:, 0]  # (B,)
        maps = upsample_cams(prediction.cams.float(), tuple(images.shape[-2:]))[:, 0]  # (B, S, S)
        with _naming(name):
            scores = metrics(network, images.float(), top1, maps, ids)
        for key in IMAGE_VALUES:
            values[key] += scores[key].tolist()
        image_ids += ids
        classes += top1.tolist()
    header = ["image_id", "top1_class", *IMAGE_VALUES]
    write_csv_rows(out_dir / METHOD_FAITHFULNESS.format(method=name), header,
                   ([image_id, label, *(f"{values[key][row]:.6g}" for key in IMAGE_VALUES)]
                    for row, (image_id, label) in enumerate(zip(image_ids, classes))))
    return summarize({key: values[key] for key in IMAGE_VALUES})


def _timing_batches(run: MethodsRun, samples: list, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    batches = []
    for batch in _loader(run, samples):
        if len(batches) == count:
            break
        batches.append((batch["image"].to(run.device), batch["label"].to(run.device)))
    return batches


def write_methods_folder(run_dir: Path, methods: Sequence[str] = DEFAULT_METHODS, split: str | None = None,
                         overwrite: bool = False, figure_images: int = FIGURE_IMAGES, timing_batches: int = 3,
                         score_batch_size: int = 64, log: Callable[[str], None] = print,
                         images: int | None = None, estimate: bool = False,
                         faithfulness_images: int = DEFAULT_FAITHFULNESS_IMAGES,
                         deletion_steps: int = DEFAULT_DELETION_STEPS) -> Path:
    """Score ``methods`` on the run in ``run_dir``; write ``run_dir/methods/`` (module docstring). Returns it.

    ``images``: score the first N images of the split and of val only (None: all). ``faithfulness_images``:
    the faithfulness metrics on the first N of the images scored (0: none), deletion and insertion in
    ``deletion_steps`` equal steps. ``estimate``: first log
    what the call will cost (:func:`probe_seconds_per_image`, :func:`probe_faithfulness_seconds`,
    :func:`describe_estimate`). The files are made in ``methods.tmp/``, renamed to ``methods/`` once
    complete and removed on any error.
    """
    methods = check_methods(methods)
    check_image_limit(images)
    check_faithfulness_images(faithfulness_images)
    metrics = faithfulness_metrics(deletion_steps)
    check_methods_free(run_dir, overwrite)
    run = load_run(run_dir, split)
    every = every_image(run)
    scored = every.first(images)
    faithful = scored.samples[:faithfulness_images]
    if estimate:
        per_image = probe_seconds_per_image(run, scored.samples, score_batch_size)
        faithful_seconds = probe_faithfulness_seconds(run, faithful, metrics) if faithful else 0.0
        log(describe_estimate(per_image, methods, scored, every, timing_batches, run.config.eval.batch_size,
                              faithful_seconds, len(faithful), metrics))
    final_dir = Path(run_dir) / METHODS_DIR
    building = final_dir.with_name(final_dir.name + TEMPORARY_SUFFIX)
    shutil.rmtree(building, ignore_errors=True)  # a build an earlier kill interrupted
    building.mkdir()
    try:
        _build_methods_folder(run, methods, scored, building, figure_images, timing_batches, score_batch_size, log,
                              faithful, metrics)
        if final_dir.exists():
            shutil.rmtree(final_dir)  # overwrite was asked for (checked above)
        building.rename(final_dir)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return final_dir


def _forward_seconds(run: MethodsRun, images: torch.Tensor) -> float:
    """Seconds of one forward pass (features and logits) over ``images (B, 3, S, S)``."""
    with torch.no_grad(), autocast(run.device, run.precision):
        start = time.perf_counter()
        run.network.head(run.network.features(images))
        if run.device.type == "cuda":
            torch.cuda.synchronize(run.device)
        return time.perf_counter() - start


def probe_seconds_per_image(run: MethodsRun, samples: list, score_batch_size: int = 64) -> dict[str, float]:
    """Seconds per image of every method's path (:data:`METHODS`): the forward pass plus the method's own work.

    The path is :func:`bench.scoring.map_methods.time_methods`'s (forward pass, top-k,
    the top-1 and GT maps, upsampling, boxes). Each method's work beyond the
    forward pass is timed on the first :data:`PROBE_IMAGES` of ``samples``: one
    warm-up, then :data:`PROBE_ROUNDS` rounds, each running every method once in
    turn. The forward pass itself is timed on one batch of ``eval.batch_size``
    images, as the scoring runs it (per image, a batch of 2 is faster on a CPU,
    its activations staying in cache), twice. The fastest round counts, as
    ``timeit`` advises: load from other processes only ever adds time.
    Score-CAM is not run: it runs the whole network on one masked image per
    feature channel and map, so its path is taken as the CAM's plus C forward
    passes per image (one map per image: a lower bound where the top-1 class
    is not the GT class).
    """
    probe = _timing_batches(run, samples[:PROBE_IMAGES], 1)
    config = run.config
    makers = {name: map_method(name, run.network, score_batch_size) for name in METHODS if name not in ON_IMAGES}
    rounds = [time_methods(run.network, makers, probe, config.eval.tau, config.eval.normalization,
                           lambda: autocast(run.device, run.precision), warm_up=round_ == 0)
              for round_ in range(PROBE_ROUNDS)]
    probed = {name: min(timings[name]["ms_per_image"] for timings in rounds) / 1e3 for name in rounds[0]}
    batch = _timing_batches(run, samples, 1)[0][0]  # (B, 3, S, S): the split's first batch
    forward = min(_forward_seconds(run, batch) for _ in range(2)) / len(batch)
    seconds = {name: forward + max(0.0, probed[name] - probed["forward"]) for name in makers}
    with torch.no_grad(), autocast(run.device, run.precision):
        channels = run.network.features(batch[:1]).shape[1]  # C of the (1, C, h, w) feature map
    for name in ON_IMAGES:
        seconds[name] = seconds[OUR_CAM] + channels * forward
    return {name: seconds[name] for name in METHODS}


def probe_faithfulness_seconds(run: MethodsRun, samples: list,
                               metrics: FaithfulnessMetrics = FaithfulnessMetrics()) -> float:
    """Seconds of the faithfulness metrics on the first of ``samples``, with its CAM: each method's cost per image.

    One image, timed once, whole: :data:`FaithfulnessMetrics.forward_passes` forward passes and ROAD's sparse
    solves, whose time depends on the map's shape (a real CAM here). The method's own map comes on top,
    counted in the estimate from :func:`probe_seconds_per_image`.
    """
    batch = next(iter(_loader(run, samples[:1])))
    images = batch["image"].to(run.device)  # (1, 3, S, S)
    with autocast(run.device, run.precision):
        prediction = predict(run.network, images, 1, None, None, mapped=(0,))
    maps = upsample_cams(prediction.cams.float(), tuple(images.shape[-2:]))[:, 0]  # (1, S, S)
    start = time.perf_counter()
    with _naming(OUR_CAM):
        metrics(run.network, images.float(), prediction.topk_classes[:, 0], maps, [samples[0].image_id])
    return time.perf_counter() - start


def images_seen(scored: ScoredImages, timing_batches: int, batch_size: int) -> int:
    """Images each method goes through: the split and val images scored, then the timing pass (warm-up included)."""
    count = len(scored.samples)
    return count + len(scored.val_samples) + min(count, batch_size) + min(count, timing_batches * batch_size)


def _duration(seconds: float) -> str:
    """'<1 s', '45 s', '3 min 05 s', '2 h 10 min'."""
    seconds = round(seconds)
    if seconds < 1:
        return "<1 s"
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _about(seconds: float) -> str:
    """'under 1 s', 'about 45 s', ..."""
    return "under 1 s" if round(seconds) < 1 else f"about {_duration(seconds)}"


def describe_estimate(per_image: dict[str, float], methods: Sequence[str], scored: ScoredImages,
                      every_image: ScoredImages, timing_batches: int, batch_size: int,
                      faithful_seconds: float = 0.0, faithful_images: int = 0,
                      metrics: FaithfulnessMetrics = FaithfulnessMetrics()) -> str:
    """What the call will cost, method by method, how that was estimated, and what the full call would cost.

    ``per_image``: :func:`probe_seconds_per_image`; ``every_image``: the run's images without ``--images``;
    ``faithful_seconds``: the faithfulness metrics on one image (:func:`probe_faithfulness_seconds`), which
    each method runs on ``faithful_images`` images, its own map made again for each.
    """
    seen = images_seen(scored, timing_batches, batch_size)

    def faithfulness(name: str) -> float:
        return faithful_images * (faithful_seconds + per_image[name])

    cost = {name: per_image[name] * seen + faithfulness(name) for name in methods}
    lines = [f"estimated time: {_about(sum(cost.values()))} for {len(methods)} method(s) on "
             f"{scored.describe()}: " + ", ".join(f"{name} {_duration(value)}" for name, value in cost.items()),
             f"  (each method's path timed here: the forward pass on a batch of "
             f"{min(batch_size, len(scored.samples))} {scored.split} images, the maps and boxes on the first "
             f"{min(PROBE_IMAGES, len(scored.samples))}; times the {seen} images it goes through: scoring, the val "
             f"sweep, the timing pass. Score-CAM not run: the CAM's path plus one forward pass per feature channel "
             f"and map, at least one map per image. Loading the run and the images, the sweep summaries and the "
             f"figure not counted: seconds)"]
    if faithful_images:
        lines.append(f"  of which the faithfulness metrics on the first {faithful_images} {scored.split} images: "
                     f"{_about(sum(faithfulness(n) for n in methods))}, "
                     f"{_duration(faithful_seconds)} per image and method (all of them, timed on one image with "
                     f"its CAM: {metrics.forward_passes()} forward passes and ROAD's imputations) "
                     f"plus the method's map")
    others = [name for name in METHODS if name not in methods]
    every = sum(per_image[name] * images_seen(every_image, timing_batches, batch_size) + faithfulness(name)
                for name in METHODS)
    if others:
        lines.append("  not asked: " + ", ".join(f"{name} ({_about(per_image[name] * seen + faithfulness(name))})"
                                                 for name in others) + "; name them in --methods, or --methods all")
    if others or not scored.all_images:
        lines.append(f"  every method on every image (--methods all, no --images) would take {_about(every)}; "
                     f"--images N scores the first N images only")
    return "\n".join(lines)


def _build_methods_folder(run: MethodsRun, methods: Sequence[str], scored: ScoredImages, out_dir: Path,
                          figure_images: int, timing_batches: int, score_batch_size: int,
                          log: Callable[[str], None], faithful: Sequence = (),
                          metrics: FaithfulnessMetrics = FaithfulnessMetrics()) -> None:
    """Score and time every method; write the table, the figure and the per-image rows into ``out_dir``.

    ``faithful``: the images the faithfulness metrics score (the first of the split's; none: NaN columns),
    with ``metrics``.
    """
    config = run.config
    samples, val_samples = scored.samples, scored.val_samples
    makers = {name: map_method(name, run.network, score_batch_size) for name in methods}
    rows, galleries, pointing_rule = {}, {}, ""
    for name in methods:
        log(f"{name}: scoring {len(samples)} {config.eval.split} images"
            + (f" and sweeping {len(val_samples)} val images" if val_samples else "")
            + (f"; faithfulness on the first {len(faithful)}" if faithful else ""))
        rows[name], galleries[name], pointing_rule = score_method(run, name, makers[name], samples, val_samples,
                                                                  out_dir, figure_images)
        rows[name].update(score_faithfulness(run, name, makers[name], list(faithful), out_dir, metrics))
    batches = _timing_batches(run, samples, timing_batches)
    timings = time_methods(run.network, makers, batches, config.eval.tau, config.eval.normalization,
                           lambda: autocast(run.device, run.precision))
    for name in methods:
        rows[name].update(ms_per_image=timings[name]["ms_per_image"], overhead=timings[name]["overhead"],
                          images=len(samples), val_images=len(val_samples), all_images=int(scored.all_images),
                          faithfulness_images=len(faithful))
    timing_note = (f"ms / image: forward pass, top-5 classes, the top-1 and GT maps, upsampling and boxes, "
                   f"on the first {sum(len(labels) for _, labels in batches)} {config.eval.split} images "
                   f"({run.device.type}, {torch.get_num_threads()} threads, {run.precision}); x forward: that "
                   f"time over the forward pass alone ({timings['forward']['ms_per_image']:.2f} ms / image), "
                   f"timed in turn on the same batches")
    faithfulness_rule = (f"the top-1 class's map upsampled to the {config.model.input_size}x{config.model.input_size} "
                         f"input, raw, on the first {len(faithful)} {config.eval.split} images; class "
                         f"probability (softmax), float32; "
                         f"{metrics.describe()}" if faithful else
                         "not scored (--faithfulness-images 0)")
    write_methods_table(out_dir, rows, config, timing_note, scored.describe(), pointing_rule, faithfulness_rule)
    save_methods_figure(galleries, out_dir / METHODS_FIGURE,
                        f"{config.name}: top-1 class maps per method ({config.eval.split}), GT green, predicted red")


def _cell(value: float, key: str) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.{METRICS[key].digits}f}"


def write_methods_table(out_dir: Path, rows: dict[str, dict[str, float]], config: RunConfig, timing_note: str,
                        images: str, pointing_rule: str = "", faithfulness_rule: str = "") -> None:
    """``methods.csv`` (full precision) and ``methods.md`` (rounded, with the protocols, the images, the timing rule).

    ``images``: which images were scored (:meth:`ScoredImages.describe`); ``pointing_rule``,
    ``faithfulness_rule``: the protocols of the pointing and the faithfulness columns, in words.
    """
    write_csv_rows(out_dir / METHODS_TABLE, ["method", *COLUMNS, *IMAGE_COLUMNS],
                   ([name, *(f"{row[key]:.6g}" for key in (*COLUMNS, *IMAGE_COLUMNS))] for name, row in rows.items()))
    protocol = describe_protocol(config.eval, config.model.input_size, maps="maps")
    lines = [f"# {config.name}: map methods ({config.model.backbone}, {config.model.pooling.upper()})", "",
             f"Fixed-tau columns: {protocol}. MaxBoxAcc / MaxBoxAccV2: oracle max over "
             f"{config.eval.num_thresholds} thresholds on {config.eval.split}; tau from val: best BoxAcc(tau, 0.5) "
             f"on the val split. Maps: the top-1 and GT class's, at the feature resolution, before any ReLU.", "",
             f"Pointing columns ({config.eval.split} images scored, GT-class maps in the evaluated frame): "
             f"{pointing_rule}.", "",
             f"Faithfulness columns: {faithfulness_rule}.", "",
             f"Images: {images}.", "",
             "| method | library class | " + " | ".join(COLUMNS.values()) + " |",
             "|---|---|" + "---:|" * len(COLUMNS)]
    for name, row in rows.items():
        library = (LIBRARY_CLASSES[name].__name__ if name in LIBRARY_CLASSES
                   else "ours (bench.scoring.center_baseline)" if name == CENTER else "ours (bench.model.cam)")
        lines.append(f"| {name} | {library} | " + " | ".join(_cell(row[key], key) for key in COLUMNS) + " |")
    lines += ["", timing_note + ".", ""]
    write_text(out_dir / METHODS_MARKDOWN, "\n".join(lines))


def save_methods_figure(galleries: dict[str, list[GalleryItem]], path: Path, title: str) -> None:
    """Rows: the same images; columns: the methods (top-1 map, GT boxes green, predicted box red, IoU)."""
    names = list(galleries)
    count = min(len(items) for items in galleries.values())
    if count == 0:
        return
    figure, axes = plt.subplots(count, len(names), figsize=(2.4 * len(names), 2.5 * count), squeeze=False)
    for column, name in enumerate(names):
        for row, item in enumerate(galleries[name][:count]):
            axis = axes[row, column]
            axis.axis("off")
            axis.imshow(overlay_cam(item.image, item.cam))
            for box in item.gt_boxes:
                draw_box(axis, box, "lime")
            draw_box(axis, item.box, "red")
            method = f"{name}\n" if row == 0 else ""
            wrong = " (wrong class)" if item.predicted != item.label else ""
            axis.set_title(f"{method}IoU {item.iou:.2f}{wrong}", fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    save_figure(figure, path)

