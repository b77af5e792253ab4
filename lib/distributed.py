"""torchrun helpers shared by training and evaluation: the process group and how processes agree.

`torchrun --nproc_per_node=N train.py ...` (or evaluate.py) sets WORLD_SIZE, RANK, LOCAL_RANK and
the rendezvous address; a plain `python train.py` runs as a single process with no process group,
and every helper here then does its work directly. Processes exchange only small Python objects and
reductions: whether their part failed (and why), sums, scores.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


class PeerStopped(RuntimeError):
    """Another process stopped the run and reports why; this one stops quietly (exit status 2)."""


class ProcessFailure(RuntimeError):
    """Another process's error, as rank 0 reports it (printed like rank 0's own)."""


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




def all_true(flag: bool, info: DistInfo) -> bool:
    """True when `flag` holds on every process (lets all ranks stop together instead of deadlocking)."""
    if not info.distributed:
        return flag
    t = torch.tensor([0.0 if flag else 1.0], device=info.device)
    dist.all_reduce(t)
    return bool(t.item() == 0)


def agree(error: BaseException | None, info: DistInfo) -> None:
    """Every process says whether its part failed; all stop together with the first failure's message.

    The failing process with the lowest rank wins. On rank 0 its error is raised (rank 0's own error
    object, or a ProcessFailure naming the process), elsewhere PeerStopped, so exactly one process
    prints. Without this, an error on one process would leave the others to fail later inside a
    collective with a gloo/NCCL traceback.
    """
    if not info.distributed:
        if error is not None:
            raise error
        return
    messages: list[str | None] = [None] * info.world_size
    dist.all_gather_object(messages, None if error is None else str(error))
    failed = [(rank, text) for rank, text in enumerate(messages) if text is not None]
    if not failed:
        return
    if not info.is_main:
        raise PeerStopped(f"process {failed[0][0]} stopped the run")
    if error is not None:
        raise error
    rank, text = failed[0]
    raise ProcessFailure(f"process {rank}: {text}")


def on_every_process(work: Callable[[], T], info: DistInfo,
                     errors: tuple[type[BaseException], ...] = (Exception,)) -> T | None:
    """Run `work` on every process; an error of the types `errors` on any of them stops all (see `agree`)."""
    result, error = None, None
    try:
        result = work()
    except errors as err:  # re-raised by agree() once every process knows
        error = err
    agree(error, info)
    return result


def on_main(work: Callable[[], T], info: DistInfo,
            errors: tuple[type[BaseException], ...] = (Exception,)) -> T | None:
    """Run `work` on rank 0 only; its failure stops every process together (see `agree`).
    Returns rank 0's result there and None elsewhere."""
    return on_every_process(work if info.is_main else (lambda: None), info, errors)


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


def gather(obj: T, info: DistInfo) -> list[T]:
    """Every process's `obj`, in rank order, on every process."""
    if not info.distributed:
        return [obj]
    box: list = [None] * info.world_size
    dist.all_gather_object(box, obj)
    return box


def lost_a_peer(err: BaseException) -> bool:
    """Whether `err` is a collective of a torchrun run that failed because another process is gone.

    gloo and NCCL report that as a plain RuntimeError ("Connection closed by peer", ...) raised
    inside torch.distributed; the same error type raised anywhere else is a bug and keeps its traceback.
    """
    if not isinstance(err, RuntimeError) or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = Path(tb.tb_frame.f_code.co_filename).parts if tb is not None else ()
    return any(where[k:k + 2] == ("torch", "distributed") for k in range(len(where) - 1))
