"""Data-parallel training under ``torchrun``: one process per GPU (or CPU worker), PyTorch DDP.

``torchrun --nproc_per_node N -m propl train --data ...`` starts N processes with ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` in their environment. :func:`process_group` joins them
(NCCL on CUDA, Gloo on the CPU) and gives each its device; the :class:`~.trainer.Trainer`
notices the group and then

- draws its own batches and augmentations on each rank (rank 0 keeps the single-process
  random streams), so a step sees ``N × batch_size`` labelled scans;
- averages gradients with :class:`~torch.nn.parallel.DistributedDataParallel`, so every rank
  holds the same weights after each step;
- validates, checkpoints and logs on rank 0 only; the other ranks never write.

Without ``torchrun`` (``WORLD_SIZE`` unset or 1) nothing here changes how training runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..device import select_device


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that validates and writes."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1


def ranks_from_env(env: Mapping[str, str] | None = None) -> Ranks:
    """The ranks ``torchrun`` put in the environment (one process when there are none).

    Raises:
        ValueError: a variable that is not a number, or a rank outside ``0 .. WORLD_SIZE-1``.
    """
    env = os.environ if env is None else env
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise ValueError(f"WORLD_SIZE, RANK and LOCAL_RANK must be integers ({exc})") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return Ranks(rank, world, local)


def current_ranks() -> Ranks:
    """The ranks of the initialised process group, or a single process when there is none."""
    if dist.is_available() and dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
        return Ranks(rank, world, ranks_from_env().local_rank if world > 1 else 0)
    return Ranks()


def rank_device(requested: str, ranks: Ranks) -> torch.device:
    """The device for this rank: ``cuda:LOCAL_RANK`` when CUDA is chosen, else as requested.

    Raises:
        ValueError: MPS with several processes (one Apple GPU cannot be shared that way), or
            fewer visible GPUs than processes on this node.
    """
    device = select_device(requested)
    if not ranks.parallel:
        return device
    if device.type == "mps":
        raise ValueError("torchrun with MPS is not supported; use --device cpu")
    if device.type == "cuda":
        if device.index is not None:
            raise ValueError(
                f"--device {requested} under torchrun: each process takes cuda:LOCAL_RANK; "
                "pass --device cuda or auto"
            )
        if ranks.local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK {ranks.local_rank} but only {torch.cuda.device_count()} GPU(s) "
                "visible: start at most one process per GPU"
            )
        return torch.device("cuda", ranks.local_rank)
    return device


@contextmanager
def process_group(requested_device: str = "auto") -> Iterator[tuple[Ranks, torch.device]]:
    """Join the ``torchrun`` process group for the ``with`` block (a no-op for one process).

    Yields:
        this process's :class:`Ranks` and its device.
    """
    ranks = ranks_from_env()
    device = rank_device(requested_device, ranks)
    if not ranks.parallel or dist.is_initialized():
        yield ranks, device
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo", rank=ranks.rank, world_size=ranks.world
    )
    try:
        yield ranks, device
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (nothing to wait for in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any: ranks stop at the same step, or the
    ones still training would wait forever for the others' gradients."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of this rank's batch and augmentation streams (rank 0: ``seed`` itself, so a
    single process trains exactly as it always has)."""
    return seed if rank == 0 else seed + 1_000_003 * rank


@contextmanager
def main_first(ranks: Ranks) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. writes a cache), the others after it has finished
    (and read what it wrote)."""
    if not ranks.main:
        barrier()
    try:
        yield
    finally:
        if ranks.main:
            barrier()
