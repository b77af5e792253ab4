"""Process-group setup for multi-process training and the few collective helpers the loop needs.

`torchrun --nproc_per_node=N train.py ...` sets WORLD_SIZE, RANK, LOCAL_RANK and the rendezvous
address; plain `python train.py` runs as a single process with no process group at all.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

T = TypeVar("T")


class PeerStopped(RuntimeError):
    """Rank 0 stopped the run and reports why; the other processes stop quietly (train.py exits with 2)."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the number of processes and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Only the main process writes checkpoints, logs and the cache index."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str | None, timeout: timedelta | None = None) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1, else run single-process on `device`.

    Under torchrun each process takes cuda:LOCAL_RANK when CUDA is available (NCCL), else the
    CPU (gloo); `device` 'cpu' forces the CPU. timeout: how long a collective waits for the other
    processes (torch's default when None).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo(0, 1, torch.device(device or ("cuda:0" if torch.cuda.is_available() else "cpu")))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (device is None or not device.startswith("cpu"))
    dev = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    extra = {"timeout": timeout} if timeout is not None else {}
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://", **extra)
    return DistInfo(dist.get_rank(), dist.get_world_size(), dev)


def setup_explicit(rank: int, world_size: int, init_method: str, device: torch.device) -> DistInfo:
    """Join a process group without torchrun (tests, notebooks): e.g. init_method 'file:///tmp/x'."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, init_method=init_method, rank=rank, world_size=world_size)
    return DistInfo(rank, world_size, device)


def teardown(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap(module: nn.Module, info: DistInfo) -> nn.Module:
    """DistributedDataParallel around `module` when distributed, else the module itself.

    Every trainable parameter takes part in every step (both gated paths are computed and
    blended), so find_unused_parameters stays off.
    """
    if not info.distributed:
        return module
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)


def all_true(flag: bool, info: DistInfo) -> bool:
    """True when `flag` holds on every process (lets all ranks stop together instead of deadlocking)."""
    if not info.distributed:
        return flag
    t = torch.tensor([0.0 if flag else 1.0], device=info.device)
    dist.all_reduce(t)
    return bool(t.item() == 0)


def on_main(work: Callable[[], T], info: DistInfo) -> T | None:
    """Run `work` on rank 0 only and tell every process whether it succeeded, so that all stop together.

    Without this, an error on rank 0 (an unwritable folder, a refused cache) would leave the other
    ranks to fail later inside a collective with a gloo/NCCL traceback. Rank 0 re-raises its error,
    the others raise PeerStopped. Returns rank 0's result there and None elsewhere.
    """
    result, error = None, None
    if info.is_main:
        try:
            result = work()
        except Exception as err:  # re-raised below, once the other ranks know
            error = err
    if not all_true(error is None, info):
        if error is not None:
            raise error
        raise PeerStopped("rank 0 stopped the run; its message says why")
    return result


def all_sum(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Sum each value over all processes."""
    if not info.distributed or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def broadcast_object(obj, info: DistInfo):
    """Rank 0's `obj` on every process."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
