"""Full fine-tuning: SGD with momentum, head learning-rate multiplier, warmup + cosine schedule.

The same loop serves one process and a DistributedDataParallel job (pass the
DDP wrapper as ``network``), fp32 or mixed precision, and a run resumed from
its checkpoint (:mod:`bench.checkpoint`).
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from bench.checkpoint import capture_rng_state, restore_rng_state, save_training_state
from bench.config import TrainConfig
from bench.models import CamNet

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the epoch and the step."""


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """Mixed-precision context for ``precision`` in ``fp32`` (disabled), ``bf16``, ``fp16``."""
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES.get(precision, torch.bfloat16),
                          enabled=precision in AUTOCAST_DTYPES)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(model: CamNet, config: TrainConfig) -> torch.optim.SGD:
    return torch.optim.SGD(
        model.parameter_groups(config.lr, config.head_lr_mult),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )


def learning_rate_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based).

    Linear warmup ``(step + 1) / warmup_steps`` for the first ``warmup_steps``
    steps (the new head starts at a large rate, and a cold start sends the loss
    above chance), then cosine decay from 1 to 0 over the remaining steps.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min(step - warmup_steps, decay_steps) / decay_steps
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int,
                           total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule of :func:`learning_rate_factor` applied to every parameter group."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, warmup_steps, total_steps)
    )


def train_one_epoch(
    network: torch.nn.Module,
    loader: torch.utils.data.DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    description: str = "train",
    grad_clip: float = 0.0,
    precision: str = "fp32",
    scaler: torch.amp.GradScaler | None = None,
    any_rank: Callable[[bool], bool] = lambda flag: flag,
    channels_last: bool = False,
) -> dict[str, float]:
    """One pass over ``loader``; returns the mean loss and the accuracy (%) on this process's training batches.

    ``grad_clip > 0`` rescales the gradient to at most that global L2 norm
    before each step. A non-finite loss on any rank (``any_rank`` agrees across
    processes) raises :class:`NonFiniteLossError` naming the 1-based step, before
    the weights are touched.
    """
    network.train()
    loss_sum, correct, seen = 0.0, 0, 0
    progress = tqdm(loader, desc=description, leave=False, dynamic_ncols=True)
    for step, batch in enumerate(progress, start=1):
        images = batch["image"].to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = batch["label"].to(device, non_blocking=True)
        with autocast(device, precision):
            logits = network(images)
            loss = F.cross_entropy(logits.float(), labels)
        if any_rank(not bool(torch.isfinite(loss))):
            raise NonFiniteLossError(f"{description}, step {step}/{len(loader)}: the training loss became "
                                     f"{loss.item()} (on this or another rank)")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(network.parameters(), grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        loss_sum += loss.item() * len(labels)
        correct += (logits.argmax(dim=1) == labels).sum().item()
        seen += len(labels)
        progress.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100.0 * correct / seen:.1f}%")
    return {"loss": loss_sum / seen, "accuracy": 100.0 * correct / seen}


def _set_epoch(loader: torch.utils.data.DataLoader, epoch: int) -> None:
    """Make data order and augmentation functions of the epoch, so a resumed run replays them."""
    for part in (loader.sampler, loader.dataset):
        if hasattr(part, "set_epoch"):
            part.set_epoch(epoch)


def fit(
    model: CamNet,
    loader: torch.utils.data.DataLoader,
    config: TrainConfig,
    device: torch.device,
    checkpoint_path: Path | None,
    log: Callable[[str], None] = print,
    *,
    network: torch.nn.Module | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
    resume: dict | None = None,
    any_rank: Callable[[bool], bool] = lambda flag: flag,
) -> list[dict[str, float]]:
    """Train for ``config.epochs`` epochs, writing the full state to ``checkpoint_path`` after each.

    ``network`` is what runs forward (the DDP wrapper of ``model`` in a
    distributed job; ``model`` itself by default). ``checkpoint_path=None``
    writes nothing (ranks other than 0). ``resume``: a state loaded by
    :func:`bench.checkpoint.load_training_state`; training continues after its
    epoch. Returns the per-epoch stats of every epoch, resumed ones included.

    Raises:
        NonFiniteLossError: the loss became NaN / inf; the message names epoch
            and step, and the checkpoint of the last finished epoch is left as is.
    """
    network = network if network is not None else model
    optimizer = make_optimizer(model, config)
    total_steps = config.epochs * len(loader)
    warmup_steps = min(round(config.warmup_epochs * len(loader)), total_steps)
    scheduler = warmup_cosine_schedule(optimizer, warmup_steps, total_steps)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    history: list[dict[str, float]] = []
    first_epoch = 1
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        if scaler is not None and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        restore_rng_state(resume["rng"])
        history = list(resume["history"])
        first_epoch = resume["epoch"] + 1
        log(f"resuming after epoch {resume['epoch']}/{config.epochs}")
    for epoch in range(first_epoch, config.epochs + 1):
        _set_epoch(loader, epoch)
        try:
            stats = train_one_epoch(network, loader, optimizer, scheduler, device, f"epoch {epoch}/{config.epochs}",
                                    config.grad_clip, precision, scaler, any_rank, channels_last)
        except NonFiniteLossError as error:
            kept = (f"the checkpoint of epoch {epoch - 1} is kept in {checkpoint_path}" if epoch > 1 and checkpoint_path
                    else "no checkpoint was written")
            raise NonFiniteLossError(f"{error}; training stopped, {kept}. Lower train.lr, set train.grad_clip, "
                                     f"or check the data") from None
        history.append({"epoch": epoch, **stats})
        if checkpoint_path is not None:
            save_training_state(checkpoint_path, {
                "epoch": epoch, "epochs": config.epochs, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else {}, "history": history,
                "rng": capture_rng_state(),
            })
        log(f"epoch {epoch}/{config.epochs}: loss {stats['loss']:.4f}, train accuracy {stats['accuracy']:.1f}%")
    return history
