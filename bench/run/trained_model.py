"""A finished (or interrupted) run's network: rebuilt from its folder's ``config.yaml`` with a checkpoint's weights.

The one loader behind ``bench methods`` (:mod:`bench.run.method_comparison`), ``bench rescore``
and ``bench cam --checkpoint`` (:mod:`bench.commands.cam_images`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from bench.config import RunConfig, load_config
from bench.data.wsol_layout import CLASSES_FILE, read_class_names
from bench.errors import InputError
from bench.model.camnet import CamNet, build_model
from bench.run.folder import CONFIG_FILE


class TrainedModelError(InputError, ValueError):
    """The checkpoint, or the run folder it must sit in, is missing."""


def load_trained_network(checkpoint: Path) -> tuple[CamNet, list[str], RunConfig]:
    """``(network in eval mode on the CPU, class names, the run's config)`` of the run folder holding ``checkpoint``.

    The class names come from the folder's ``classes.txt`` (every run writes
    it), or, for runs made before that file existed, from the dataset the
    config names.

    Raises:
        TrainedModelError: no such checkpoint, or no ``config.yaml`` beside it.
    """
    checkpoint = Path(checkpoint)
    run_dir = checkpoint.parent
    if not checkpoint.is_file():
        raise TrainedModelError(f"checkpoint {checkpoint} not found (expected results/<run>/checkpoint.pt)")
    if not (run_dir / CONFIG_FILE).is_file():
        raise TrainedModelError(f"{run_dir / CONFIG_FILE} not found: the checkpoint must sit in its run folder")
    config = load_config(run_dir / CONFIG_FILE)
    if (run_dir / CLASSES_FILE).is_file():
        names = read_class_names(run_dir)
    else:
        from bench.data.loading import load_dataset

        names = load_dataset(config.dataset, Path(config.data_root), progress=False).class_names
    # The checkpoint holds every weight: no need to read ImageNet weights first.
    model_config = dataclasses.replace(config.model, pretrained=False, weights="")
    network = build_model(model_config, len(names), config.wsol)
    network.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["model"])
    return network.eval(), names, config
