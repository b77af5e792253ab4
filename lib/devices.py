"""Devices and cores: the `--dev` flag of every entry point (one check, one set of messages), the usable CPU cores."""
from __future__ import annotations

import os

import torch


def resolve_device(requested: str | None) -> torch.device:
    """The device `--dev` asks for, checked before any work starts.

    None means cuda:0 when CUDA exists, else the CPU. Raises ValueError (with the flag's value and
    what to pass instead) for a name torch does not know, a device other than the CPU or CUDA, CUDA
    on a machine without it, or a CUDA index beyond the machine's devices.
    """
    if requested is None:
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ValueError(f"--dev {requested}: not a device name; use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--dev {requested}: this project runs on the CPU or on CUDA; use cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--dev {requested}: CUDA is not available on this machine; use --dev cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"--dev {requested}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return device


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS tells it, else all of them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
