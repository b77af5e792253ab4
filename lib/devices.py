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


CPU_BF16_FLAGS = ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16")  # /proc/cpuinfo names
# What bfloat16 cost where the CPU lacks it (benchmark.py --compare-bf16; docs/speed.md), for the refusal.
EMULATED_BF16_MEASURED = ("emulated bfloat16 measured 10-14x slower than float32 per frame on an AVX2-only "
                          "AMD EPYC, benchmark.py --compare-bf16")


def cpu_bf16_support(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """What this CPU and torch offer for bfloat16.

    Returns {"flags": {flag: bool} for CPU_BF16_FLAGS (all False when cpuinfo cannot be read),
    "cpuinfo_read": bool, "torch_cpu_capability": e.g. "AVX2", "onednn_bf16": oneDNN's own check or None,
    "hardware_bf16": avx512_bf16 or amx_bf16, "native": hardware_bf16 and oneDNN does not disagree,
    "reason": one line saying why not (empty when native)}.
    """
    try:
        with open(cpuinfo) as f:
            text = f.read()
    except OSError:
        text = None
    present: set[str] = set()
    for line in (text or "").splitlines():
        if line.startswith("flags"):
            present = set(line.split(":", 1)[1].split())
            break
    flags = {name: name in present for name in CPU_BF16_FLAGS}
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    onednn = bool(check()) if check is not None else None
    hardware = flags["avx512_bf16"] or flags["amx_bf16"]
    native = hardware and onednn is not False
    if native:
        reason = ""
    elif text is None:
        reason = f"{cpuinfo} cannot be read, so the CPU's bfloat16 support is unknown"
    elif not hardware:
        reason = f"no avx512_bf16 or amx_bf16 in {cpuinfo}; {EMULATED_BF16_MEASURED}"
    else:
        reason = "the CPU lists bfloat16 instructions but oneDNN does not use them"
    return {"flags": flags, "cpuinfo_read": text is not None, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_bf16": onednn, "hardware_bf16": hardware, "native": native, "reason": reason}
