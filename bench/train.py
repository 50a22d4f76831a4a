"""Full fine-tuning: SGD with momentum, head learning-rate multiplier, warmup + cosine schedule."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from bench.config import TrainConfig
from bench.models import CamNet


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
    model: CamNet,
    loader: torch.utils.data.DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    description: str = "train",
    grad_clip: float = 0.0,
) -> dict[str, float]:
    """One pass over ``loader``; returns the mean loss and the accuracy (%) on the training batches.

    ``grad_clip > 0`` rescales the gradient to at most that global L2 norm
    before each step.
    """
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    progress = tqdm(loader, desc=description, leave=False, dynamic_ncols=True)
    for batch in progress:
        images = batch["image"].to(device, non_blocking=True)
        labels = batch["label"].to(device, non_blocking=True)
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{description}: loss became {loss.item()} at step {seen // len(labels)}; "
                                     f"lower train.lr or check the data")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        loss_sum += loss.item() * len(labels)
        correct += (logits.argmax(dim=1) == labels).sum().item()
        seen += len(labels)
        progress.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100.0 * correct / seen:.1f}%")
    return {"loss": loss_sum / seen, "accuracy": 100.0 * correct / seen}


def fit(
    model: CamNet,
    loader: torch.utils.data.DataLoader,
    config: TrainConfig,
    device: torch.device,
    checkpoint_path: Path,
    log: Callable[[str], None] = print,
) -> list[dict[str, float]]:
    """Train for ``config.epochs`` epochs, writing a checkpoint after each; returns per-epoch stats."""
    optimizer = make_optimizer(model, config)
    total_steps = config.epochs * len(loader)
    warmup_steps = min(round(config.warmup_epochs * len(loader)), total_steps)
    scheduler = warmup_cosine_schedule(optimizer, warmup_steps, total_steps)
    history = []
    for epoch in range(1, config.epochs + 1):
        stats = train_one_epoch(model, loader, optimizer, scheduler, device, f"epoch {epoch}/{config.epochs}",
                                config.grad_clip)
        history.append({"epoch": epoch, **stats})
        save_checkpoint(checkpoint_path, model, optimizer, scheduler, epoch)
        log(f"epoch {epoch}/{config.epochs}: loss {stats['loss']:.4f}, train accuracy {stats['accuracy']:.1f}%")
    return history


def save_checkpoint(path: Path, model: CamNet, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, epoch: int) -> None:
    """Write the training state atomically (temporary file, then rename)."""
    temporary = path.with_name(path.name + ".tmp")
    torch.save(
        {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
         "scheduler": scheduler.state_dict()},
        temporary,
    )
    temporary.replace(path)
