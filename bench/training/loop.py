"""Training: SGD with momentum, head learning-rate multiplier, warmup + cosine schedule, one epoch loop.

The same loop serves one process and a DistributedDataParallel job (pass the
DDP wrapper as ``network``), fp32 or mixed precision, and a run resumed from
its checkpoint (:mod:`bench.training.checkpoint`).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from bench.config import TrainConfig, WsolConfig
from bench.model.camnet import CamNet
from bench.model.wsol_heads import LOSS_TERMS, LossTerms
from bench.progress import progress_bar
from bench.training.checkpoint import capture_rng_state, restore_rng_state
from bench.training.wsol_batches import Mixing, cutmix, hide_patches, mixed_cross_entropy

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# A method with loss terms besides the cross-entropy (ACoL, SPG) logs each one per epoch in its history row, under
# LOSS_TERM_PREFIX + name; the cross-entropy of the logits is the term "ce" (CutMix's mixed one for CutMix).
LOSS_TERM_PREFIX = "loss_"
CROSS_ENTROPY_TERM = "ce"
LOSS_TERM_LABELS = {CROSS_ENTROPY_TERM: "cross-entropy", **LOSS_TERMS}


def loss_term_columns(columns) -> list[str]:
    """The history columns among ``columns`` that hold one loss term each (``loss_ce``, ``loss_spg_b2``, ...)."""
    return [column for column in columns if column.startswith(LOSS_TERM_PREFIX)]


def loss_term_label(column: str) -> str:
    """What a :func:`loss_term_columns` column holds, in words (its term's name if unknown)."""
    term = column.removeprefix(LOSS_TERM_PREFIX)
    return LOSS_TERM_LABELS.get(term, term)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the epoch and the step."""


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """Mixed-precision context for ``precision`` in ``fp32`` (disabled), ``bf16``, ``fp16``."""
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES.get(precision, torch.bfloat16),
                          enabled=precision in AUTOCAST_DTYPES)


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a run uses: ``auto`` is ``bf16`` on a CUDA device that supports it, else ``fp32``.

    The rule is measured, not assumed: for EfficientNet-Lite0 (depthwise-heavy)
    CPU bf16 autocast trains no faster than fp32 on any CPU measured, with or
    without hardware bf16 (0.7x on an AVX-512 Xeon without BF16, 0.8x on a
    Xeon with AVX-512 BF16 and AMX, 0.98-0.99x on an AMD EPYC with AVX-512 BF16);
    see docs/results.md, "Precision". ``make perf`` prints the candidates side
    by side on the machine it runs on.
    """
    if precision != "auto":
        return precision
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


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


def method_loss(network: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                wsol: WsolConfig) -> tuple[torch.Tensor, torch.Tensor, LossTerms]:
    """One training batch under a training-time WSOL method other than ``cam``: ``(logits, loss, terms)``.

    HaS / CutMix change the images first (:mod:`bench.training.wsol_batches`); the network's training pass
    (``network(images, labels)``, :meth:`bench.model.camnet.CamNet.training_output`) gives the logits and the
    method's other loss terms (ACoL's second branch, SPG's masks), added to the (CutMix-mixed) cross-entropy.
    ``terms``: the loss's terms by name, the cross-entropy (``ce``) first, for a method that has other terms;
    ``{}`` when the loss is the cross-entropy alone.
    """
    mixing: Mixing | None = None
    if wsol.method == "has":
        images = hide_patches(images, wsol.has_grid_size, wsol.has_drop_rate)
    elif wsol.method == "cutmix":
        images, mixing = cutmix(images, labels, wsol.cutmix_beta, wsol.cutmix_prob)
    logits, extra = network(images, labels)
    cross_entropy = mixed_cross_entropy(logits.float(), labels, mixing)
    if not extra:
        return logits, cross_entropy, {}
    others = {name: term.float() for name, term in extra.items()}
    # The cross-entropy plus the sum of the others, in this order: the loss the terms were summed to before they
    # were logged one by one, bit for bit.
    return logits, cross_entropy + sum(others.values()), {CROSS_ENTROPY_TERM: cross_entropy, **others}


def batch_loss(network: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
               wsol: WsolConfig | None) -> tuple[torch.Tensor, torch.Tensor, LossTerms]:
    """``(logits, loss, terms)`` of one training batch: cross-entropy on ``network(images)`` for ``cam`` (or None;
    no terms), :func:`method_loss` for the other training-time methods."""
    if wsol is None or wsol.method == "cam":
        logits = network(images)
        return logits, F.cross_entropy(logits.float(), labels), {}
    return method_loss(network, images, labels, wsol)


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
    wsol: WsolConfig | None = None,
) -> dict[str, float]:
    """One pass over ``loader``; returns the mean loss and the accuracy (%) on this process's training batches.

    A method whose loss has several terms (:func:`batch_loss`) adds each term's mean, ``loss_<name>``
    (:data:`LOSS_TERM_PREFIX`); their sum is the mean loss.

    ``wsol``: the training-time WSOL method (:func:`batch_loss`). ``grad_clip > 0`` rescales the gradient to at
    most that global L2 norm before each step. A non-finite loss on any rank (``any_rank`` agrees across
    processes) raises :class:`NonFiniteLossError` naming the 1-based step, before
    the weights are touched.
    """
    network.train()
    loss_sum, correct, seen = 0.0, 0, 0
    term_sums: dict[str, float] = {}
    progress = progress_bar(loader, desc=description, leave=False, dynamic_ncols=True)
    for step, batch in enumerate(progress, start=1):
        images = batch["image"].to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = batch["label"].to(device, non_blocking=True)
        with autocast(device, precision):
            logits, loss, terms = batch_loss(network, images, labels, wsol)
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
        for name, term in terms.items():
            term_sums[name] = term_sums.get(name, 0.0) + term.item() * len(labels)
        correct += (logits.argmax(dim=1) == labels).sum().item()
        seen += len(labels)
        progress.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100.0 * correct / seen:.1f}%")
    return {"loss": loss_sum / seen, "accuracy": 100.0 * correct / seen,
            **{LOSS_TERM_PREFIX + name: total / seen for name, total in term_sums.items()}}


def _set_epoch(loader, epoch: int) -> None:
    """Make data order and augmentation functions of the epoch, so a resumed run replays them."""
    for part in (getattr(loader, "sampler", None), getattr(loader, "dataset", None)):
        if hasattr(part, "set_epoch"):
            part.set_epoch(epoch)


@dataclass
class TrainingState:
    """What one training loop steps and checkpoints: the optimizer, its schedule and the fp16 grad scaler."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None = None


def make_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig,
                  steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """:func:`warmup_cosine_schedule` over ``config.epochs`` epochs of ``steps_per_epoch`` steps."""
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = min(round(config.warmup_epochs * steps_per_epoch), total_steps)
    return warmup_cosine_schedule(optimizer, warmup_steps, total_steps)


def run_epochs(
    model: CamNet,
    network: torch.nn.Module,
    loader,
    state: TrainingState,
    config: TrainConfig,
    device: torch.device,
    checkpoint: Callable[[dict], None] | None,
    log: Callable[[str], None] = print,
    *,
    precision: str = "fp32",
    channels_last: bool = False,
    after_epoch: Callable[[int], dict[str, float]] | None = None,
    history: list[dict[str, float]] | None = None,
    any_rank: Callable[[bool], bool] = lambda flag: flag,
    description: str = "epoch",
    wsol: WsolConfig | None = None,
) -> list[dict[str, float]]:
    """The epoch loop both training modes share: train, then ``after_epoch``, then checkpoint and log.

    ``network`` runs forward on the loader's batches (the DDP wrapper, or the
    head on cached maps); ``model`` is what gets checkpointed. ``after_epoch(epoch)``
    returns extra per-epoch values (the val split's metrics) that join the
    epoch's history row. ``checkpoint(fields)`` saves the training state
    (None: this process writes nothing). ``history`` holds the rows of epochs
    already done (a resumed run); training continues after the last of them.
    Returns every epoch's row: ``epoch``, ``loss``, ``accuracy`` (%, on the
    training batches as augmented), the loss's terms if it has several
    (``loss_ce``, ``loss_spg_b2``, ...: :func:`train_one_epoch`), ``lr`` (the
    backbone's rate at the epoch's end), ``seconds``, then ``after_epoch``'s values.

    Raises:
        NonFiniteLossError: the loss became NaN / inf; the message names epoch
            and step, and the checkpoint of the last finished epoch is left as is.
    """
    history = list(history or [])
    for epoch in range(len(history) + 1, config.epochs + 1):
        _set_epoch(loader, epoch)
        started = time.perf_counter()
        try:
            stats = train_one_epoch(network, loader, state.optimizer, state.scheduler, device,
                                    f"{description} {epoch}/{config.epochs}", config.grad_clip, precision,
                                    state.scaler, any_rank, channels_last, wsol)
        except NonFiniteLossError as error:
            kept = (f"the checkpoint of epoch {epoch - 1} is kept" if epoch > 1 and checkpoint
                    else "no checkpoint was written")
            raise NonFiniteLossError(f"{error}; training stopped, {kept}. Lower train.lr, set train.grad_clip, "
                                     f"or check the data") from None
        row = {"epoch": epoch, **stats, "lr": state.optimizer.param_groups[0]["lr"],
               "seconds": round(time.perf_counter() - started, 3)}
        row.update(after_epoch(epoch) if after_epoch else {})
        history.append(row)
        if checkpoint is not None:
            checkpoint({
                "epoch": epoch, "epochs": config.epochs, "model": model.state_dict(),
                "optimizer": state.optimizer.state_dict(), "scheduler": state.scheduler.state_dict(),
                "scaler": state.scaler.state_dict() if state.scaler is not None else {}, "history": history,
                "rng": capture_rng_state(),
            })
        log(f"epoch {epoch}/{config.epochs}: " + format_epoch(row))
    return history


def format_epoch(row: dict[str, float]) -> str:
    """One history row as a log line: training loss (its terms in brackets, if several) and accuracy, then the
    val split's numbers if any."""
    terms = ", ".join(f"{column.removeprefix(LOSS_TERM_PREFIX)} {row[column]:.4f}"
                      for column in loss_term_columns(row))
    text = f"loss {row['loss']:.4f}" + (f" ({terms})" if terms else "") + f", train accuracy {row['accuracy']:.1f}%"
    if "val_top1_cls_error" in row:
        text += (f", val top-1 cls error {row['val_top1_cls_error']:.1f}%, "
                 f"val GT-known loc {row['val_gt_known_loc_acc']:.1f}%")
    return text


def fit(
    model: CamNet,
    loader: torch.utils.data.DataLoader,
    config: TrainConfig,
    device: torch.device,
    checkpoint: Callable[[dict], None] | None,
    log: Callable[[str], None] = print,
    *,
    network: torch.nn.Module | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
    resume: dict | None = None,
    after_epoch: Callable[[int], dict[str, float]] | None = None,
    any_rank: Callable[[bool], bool] = lambda flag: flag,
    wsol: WsolConfig | None = None,
) -> list[dict[str, float]]:
    """Fine-tune ``model`` for ``config.epochs`` epochs (:func:`run_epochs`), checkpointing after each.

    ``network`` is what runs forward (the DDP wrapper of ``model`` in a
    distributed job; ``model`` itself by default). ``resume``: a state loaded by
    :func:`bench.training.checkpoint.load_training_state`; training continues after its
    epoch. Returns the per-epoch rows of every epoch, resumed ones included.
    """
    optimizer = make_optimizer(model, config)
    state = TrainingState(optimizer, make_schedule(optimizer, config, len(loader)),
                          torch.amp.GradScaler(device.type) if precision == "fp16" else None)
    history: list[dict[str, float]] = []
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        state.scheduler.load_state_dict(resume["scheduler"])
        if state.scaler is not None and resume.get("scaler"):
            state.scaler.load_state_dict(resume["scaler"])
        restore_rng_state(resume["rng"])
        history = list(resume["history"])
        log(f"resuming after epoch {resume['epoch']}/{config.epochs}")
    return run_epochs(model, network if network is not None else model, loader, state, config, device, checkpoint,
                      log, precision=precision, channels_last=channels_last, after_epoch=after_epoch,
                      history=history, any_rank=any_rank, wsol=wsol)
