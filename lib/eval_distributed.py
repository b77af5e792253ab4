"""evaluate.py under torchrun: which process runs which sequences, and how the processes agree.

`torchrun --nproc_per_node=N evaluate.py ...` starts N copies of evaluate.py that join one process
group (trainer/distributed.py sets it up, as for training). The results are files in one output
folder that every process can see, so the processes exchange only small Python objects: whether
their part failed (and why), and their sequences' scores. Plain `python evaluate.py` is a group of
one: every helper here then does its work directly.
"""
from __future__ import annotations

import os
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import torch
import torch.distributed as dist

from lib.atomic import atomic_write_text
from lib.devices import resolve_device, usable_cores
from trainer.distributed import DistInfo, PeerStopped, broadcast_object, setup

T = TypeVar("T")
# A process that has finished its share waits in a collective until the others finish theirs, which
# can take hours on a large set; a process that dies is caught by torchrun, which stops the others.
WAIT_FOR_PEERS = timedelta(hours=48)


class PeerFailed(PeerStopped):
    """Another process stopped the run; the main process reports its message, this one stops quietly."""


class ProcessFailure(RuntimeError):
    """Another process's error, as rank 0 reports it (printed like rank 0's own)."""


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


def cpu_threads(processes_here: int) -> int:
    """Torch threads for one of `processes_here` processes sharing this machine's cores."""
    return max(1, usable_cores() // max(1, processes_here))


def start(requested_device: str | None) -> DistInfo:
    """Check `--dev`, then join torchrun's process group when there is one.

    Under torchrun a CUDA run puts each process on cuda:LOCAL_RANK (NCCL), a CPU run gives each of
    the machine's processes its share of the cores (gloo). Raises ValueError, the same on every
    process of a machine, for a device that does not exist or more processes than GPUs.
    """
    device = resolve_device(requested_device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(0, 1, device)
    here = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if device.type == "cuda" and here > torch.cuda.device_count():
        raise ValueError(f"torchrun starts {here} processes on this machine but it has {torch.cuda.device_count()} "
                         f"CUDA device(s), one per process: pass --nproc_per_node={torch.cuda.device_count()}")
    info = setup(device.type, timeout=WAIT_FOR_PEERS)  # 'cuda' -> cuda:LOCAL_RANK, 'cpu' -> the CPU
    if info.device.type == "cpu":
        torch.set_num_threads(cpu_threads(here))
    return info


def agree(error: BaseException | None, info: DistInfo) -> None:
    """Every process says whether its part failed; all stop together with the first failure's message.

    The failing process with the lowest rank wins. On rank 0 its error is raised (rank 0's own error
    object, or a ProcessFailure naming the process), elsewhere PeerFailed, so exactly one process prints.
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
        raise PeerFailed(f"process {failed[0][0]} stopped the run")
    if error is not None:
        raise error
    rank, text = failed[0]
    raise ProcessFailure(f"process {rank}: {text}")


def on_every_process(work: Callable[[], T], info: DistInfo, errors: tuple[type[BaseException], ...]) -> T:
    """Run `work` on every process; an error of the types `errors` on any of them stops all (see `agree`)."""
    result, error = None, None
    try:
        result = work()
    except errors as err:  # re-raised by agree() once every process knows
        error = err
    agree(error, info)
    return result


def gather(obj: T, info: DistInfo) -> list[T]:
    """Every process's `obj`, in rank order, on every process."""
    if not info.distributed:
        return [obj]
    box: list = [None] * info.world_size
    dist.all_gather_object(box, obj)
    return box


def share_by_size(sizes: Sequence[int], processes: int) -> list[list[int]]:
    """Split items among processes, balanced by size: the largest first, each onto the least-loaded process.

    Deterministic (ties go to the earlier item and the lower rank), so every process computes the
    same split. Returns, per process, the indices of its items in their original order.
    """
    loads = [0] * processes
    shares: list[list[int]] = [[] for _ in range(processes)]
    for index in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        rank = min(range(processes), key=lambda r: (loads[r], r))
        shares[rank].append(index)
        loads[rank] += sizes[index]
    return [sorted(share) for share in shares]


class RunFolder:
    """A file in the shared output folder that names this run: every process must see it, and a
    process whose sequence failed leaves a stop file beside it that the others look for between
    sequences, so they stop within a sequence instead of finishing their share first."""

    def __init__(self, output_root: Path, info: DistInfo) -> None:
        self.info = info
        token = broadcast_object(uuid.uuid4().hex if info.is_main else None, info)
        self.marker = output_root / f".evaluate-run-{token}"
        self.stop_file = output_root / f".evaluate-run-{token}.stop"

    def check_shared(self) -> None:
        """Raise ValueError on a process that cannot see rank 0's marker (an output folder not shared by all machines)."""
        if self.info.is_main:
            atomic_write_text(self.marker, "evaluate.py run in progress\n")
        dist.barrier()
        if not self.marker.is_file():
            raise ValueError(f"--output {self.marker.parent}: this machine does not see the files process 0 writes "
                             f"there; with several machines the output folder must be on a file system they share")

    def signal_stop(self) -> None:
        atomic_write_text(self.stop_file, f"process {self.info.rank} failed\n")

    def stopped(self) -> bool:
        return self.stop_file.exists()

    def remove(self) -> None:
        if self.info.is_main:
            for path in (self.marker, self.stop_file):
                path.unlink(missing_ok=True)
