"""Who am I in a ``torchrun`` job, and the few collective steps the pipeline needs.

``torchrun`` (``python -m torch.distributed.run``) starts one process per rank
and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in
the environment; :func:`from_environment` reads them and joins the process group
(gloo on CPU, nccl on GPU). A plain ``python -m bench run`` is a world of one, and
every helper here then reduces to a no-op, so the pipeline has one code path.

Rank 0 is the only process that touches the run folder; the others compute and
send their results to it.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (any picklable object)."""
        if not self.distributed:
            return value
        holder = [value if self.is_main else None]
        dist.broadcast_object_list(holder, src=0, device=self._collective_device)
        return holder[0]

    def on_main(self, function: Callable[[], T]) -> T:
        """Run ``function`` on rank 0 only and return its result on every rank.

        If it raises, every rank raises the same exception, so no rank is left
        waiting in a collective while another has stopped.
        """
        outcome: tuple[bool, Any] | None = None
        if self.is_main:
            try:
                outcome = (True, function())
            except Exception as error:  # noqa: BLE001 - re-raised on every rank below
                outcome = (False, error)
        ok, value = self.broadcast(outcome)
        if not ok:
            raise value
        return value

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on at least one."""
        if not self.distributed:
            return flag
        tensor = torch.tensor([1.0 if flag else 0.0], device=self._collective_device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())

    def sync_module(self, module: torch.nn.Module) -> None:
        """Copy rank 0's parameters and buffers (e.g. BatchNorm statistics) to every rank."""
        if not self.distributed:
            return
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)

    def my_batches(self, num_items: int, batch_size: int) -> list[list[int]]:
        """This rank's share of the sequential batches ``[0, B), [B, 2B), ...``: batches rank, rank + W, ...

        Every batch has exactly the composition it has in a single process, so the
        per-image outputs are bit-identical (no batch-size dependent kernels).
        """
        batches = [list(range(start, min(start + batch_size, num_items))) for start in range(0, num_items, batch_size)]
        return batches[self.rank :: self.world_size]

    def gather_in_order(self, items: list[T]) -> list[T] | None:
        """Undo :meth:`my_batches`: rank 0 gets every rank's items interleaved in global order, the others None.

        ``items`` on rank r are global items r, r + W, r + 2W, ...
        """
        if not self.distributed:
            return items
        gathered: list[list[T]] | None = [[] for _ in range(self.world_size)] if self.is_main else None
        dist.gather_object(items, gathered, dst=0)
        if not self.is_main:
            return None
        total = sum(len(part) for part in gathered)
        return [gathered[index % self.world_size][index // self.world_size] for index in range(total)]

    @property
    def _collective_device(self) -> torch.device:
        # nccl moves objects through the GPU; gloo through the CPU.
        return self.device if self.device.type == "cuda" else torch.device("cpu")


def from_environment(timeout_minutes: float = 30.0) -> Context:
    """The context ``torchrun`` describes in the environment; joins the process group if ``WORLD_SIZE > 1``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=timeout_minutes))
    return Context(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def shutdown() -> None:
    """Leave the process group (if any)."""
    if dist.is_initialized():
        dist.destroy_process_group()
