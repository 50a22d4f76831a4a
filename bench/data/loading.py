"""One entry point: the dataset a config names (:func:`load_dataset`), generated or read in its native layout."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bench.config import DatasetConfig
from bench.data.generator import ensure_synthetic_dataset
from bench.data.native_readers import read_csv_dataset, read_cub, read_imagenet
from bench.data.samples import DatasetSplits
from bench.data.wsol_layout import read_wsol


def load_dataset(config: DatasetConfig, data_root: Path, progress: bool = True) -> DatasetSplits:
    """The dataset a config names, read in its native layout (the embedded one generated first if absent).

    The synthetic dataset goes through :func:`read_wsol`, the same reader a
    user's own data in that layout goes through.
    """
    data_root = Path(data_root)
    if config.name == "synthetic":
        species, num_train, num_val, num_test = config.species_split
        root = ensure_synthetic_dataset(data_root, config.variant, config.seed, num_train, num_val, num_test,
                                        config.image_size, config.generator_object_scale, progress=progress,
                                        num_species=species, hue_jitter=config.hue_jitter)
        splits = read_wsol(root)
        scale = config.object_scale if config.object_scale != "range" else f"range {config.object_scale_range}"
        classes = "12 classes" if not species else f"{species} species, hue jitter {config.hue_jitter:g} deg"
        return dataclasses.replace(splits, source=f"synthetic ({config.classes}: {classes}, {config.variant}, "
                                                  f"object scale {scale}) {splits.source}")
    path = data_root / config.path
    if config.name == "cub":
        return read_cub(path, config.val_size, config.seed)
    if config.name == "imagenet":
        return read_imagenet(path, config.wnids, config.num_classes, config.val_size, config.seed,
                             config.max_train_per_class)
    if config.name == "wsol":
        return read_wsol(path, config.box_convention)
    if config.name == "csv":
        return read_csv_dataset(path)
    raise ValueError(f"unknown dataset.name {config.name!r}")
