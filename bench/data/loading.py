"""One entry point: the dataset a config names (:func:`load_dataset`), generated or read in its native layout."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bench.config import DatasetConfig
from bench.data.generator import ensure_synthetic_dataset
from bench.data.native_readers import read_csv_dataset, read_cub, read_imagenet
from bench.data.samples import README_HINT, DatasetNotFoundError, DatasetSplits
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
    if not path.exists():
        raise missing_dataset_path(config, data_root)
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


# What dataset.path names, per dataset.name (data/README.md, "Real datasets").
PATH_NAMES = {
    "cub": "the CUB_200_2011 folder (or its parent)",
    "imagenet": "the folder holding LOC_synset_mapping.txt and ILSVRC/",
    "wsol": "a dataset in the metadata layout (classes.txt, images/, metadata/) or a wsolevaluation metadata/<DATASET> "
            "folder",
    "csv": "your CSV file (image,label,split,x0,y0,x1,y1)",
}


def missing_dataset_path(config: DatasetConfig, data_root: Path) -> DatasetNotFoundError:
    """The error for a ``dataset.path`` with nothing at ``data_root / dataset.path``: how the path is read, the fix.

    A relative ``dataset.path`` is read under ``data_root``, not the current
    folder; when it does name something from the current folder, the message says so.
    """
    given = Path(config.path)
    expected = PATH_NAMES[config.name]
    if given.is_absolute():
        return DatasetNotFoundError(f"dataset.path {given} does not exist (expected {expected}); correct "
                                    f"dataset.path. {README_HINT}")
    here = (f" ({given} does exist relative to the current folder: give it as the absolute path "
            f"dataset.path: {given.resolve()})" if given.exists() else "")
    return DatasetNotFoundError(
        f"dataset.path {str(given)!r} is read relative to data_root {str(data_root)!r}, so at {data_root / given}, "
        f"and nothing is there{here}; expected {expected}. Give dataset.path relative to data_root, or as an "
        f"absolute path, or set data_root to the folder that holds it (data_root=/path on the command line, "
        f"make ... DATA_ROOT=/path). {README_HINT}")
