"""The torchrun command a process was started by, for the "to continue: ..." lines of train.py and evaluate.py.

Under torchrun every process is a child of the launcher, so the launcher's own command line (its
options: --standalone, --nnodes, the rendezvous endpoint, ...) can be read back from /proc on Linux.
Elsewhere, or when it cannot be read, the options are rebuilt from torchrun's environment variables.
"""
from __future__ import annotations

import os
import shlex
import sys

_LAUNCHERS = ("torchrun", "torch.distributed.run", "torch.distributed.launch")


def is_rank_zero() -> bool:
    """Whether this process speaks for the run: the only process, or torchrun's rank 0 (no torch needed)."""
    return int(os.environ.get("RANK", "0")) == 0


def launcher_options(parent_argv: list[str], script: str) -> list[str] | None:
    """torchrun's options in `parent_argv` (the launcher's command line), or None if it is not torchrun's.

    Accepts `torchrun OPTIONS SCRIPT ...`, `python .../torchrun OPTIONS SCRIPT ...` and
    `python -m torch.distributed.run OPTIONS SCRIPT ...`; the options are what lies between the
    launcher and the first argument naming `script` (the worker's sys.argv[0]).
    """
    start = None
    for k, arg in enumerate(parent_argv):
        if os.path.basename(arg) == "torchrun" or (arg in _LAUNCHERS[1:] and k > 0 and parent_argv[k - 1] == "-m"):
            start = k + 1
            break
    if start is None:
        return None
    for k in range(start, len(parent_argv)):
        if parent_argv[k] == script:
            return parent_argv[start:k]
    return None  # e.g. --no-python with a wrapper script: the worker is not the launcher's script


def _parent_argv() -> list[str] | None:
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def continue_command(python_command: str) -> str:
    """`python_command` (`python SCRIPT ARGS`) as this process was launched: under torchrun, with its launcher.

    Several machines: the line is the command of this machine's launcher; the others run theirs.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return python_command
    script_and_args = python_command.split(" ", 1)[1] if " " in python_command else ""
    parent = _parent_argv()
    options = launcher_options(parent, sys.argv[0]) if parent else None
    if options is not None:
        return " ".join(["torchrun", *(shlex.quote(o) for o in options), script_and_args])
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if per_node == world:
        return f"torchrun --standalone --nproc_per_node={per_node} {script_and_args}"
    return (f"torchrun --nnodes={world // per_node} --nproc_per_node={per_node} <the same rendezvous options> "
            f"{script_and_args} (on every machine)")
