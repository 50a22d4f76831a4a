"""The full training state in one file, so that ``--resume`` continues exactly where a run stopped.

``checkpoint.pt`` holds, after each finished epoch: the model, optimizer,
learning-rate scheduler (and fp16 grad scaler) states, the epoch, the per-epoch
history, the world size, and the random states of Python, NumPy and torch (CPU
and CUDA). Data order and augmentation need no saved state: both are functions
of ``(seed, epoch, rank)`` (``DistributedSampler.set_epoch`` and
:meth:`bench.data.torch_dataset.WsolDataset.set_epoch`). Every value is a tensor or plain
Python data, so the file loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from bench.atomic_files import atomic_path


def capture_rng_state() -> dict:
    """Python, NumPy and torch random states as tensors and plain data."""
    numpy_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)), "position": int(numpy_state[2]),
                  "has_gauss": int(numpy_state[3]), "cached_gaussian": float(numpy_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Undo :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["position"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(path: Path, state: dict) -> None:
    """Write ``state`` atomically: a kill during the write leaves the previous checkpoint intact."""
    with atomic_path(path) as temporary:
        torch.save(state, temporary)


def load_training_state(path: Path) -> dict:
    """Read a checkpoint written by :func:`save_training_state` (on the CPU)."""
    return torch.load(path, map_location="cpu", weights_only=True)
