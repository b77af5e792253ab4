"""evaluate.py under torchrun: joining the group, which process runs which sequences, the shared folder.

`torchrun --nproc_per_node=N evaluate.py ...` starts N copies of evaluate.py that join one process
group (lib/distributed.py sets it up and makes the processes agree, as for training). The results
are files in one output folder that every process can see. Plain `python evaluate.py` is a group of
one.
"""
from __future__ import annotations

import os
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Sequence

import torch

from lib.atomic import atomic_write_text
from lib.devices import resolve_device, usable_cores
from lib.distributed import DistInfo, barrier, broadcast_object, setup

# A process that has finished its share waits in a collective until the others finish theirs, which
# can take hours on a large set; a process that dies is caught by torchrun, which stops the others.
WAIT_FOR_PEERS = timedelta(hours=48)


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
        barrier(self.info)
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
