"""train.py stopped by Ctrl-C or SIGTERM: what is saved, the command that continues, and which errors count as the stop.

A rerun of the same command resumes from the newest `<name>_epNNNN.pth`, so that file is what an
interrupted run has saved; checkpoints are written atomically, so an epoch cut short leaves no
half-written file, only the previous epoch's checkpoint.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from lib.interrupts import command_line
from lib.launcher import continue_command as launched_as, is_rank_zero
from trainer.signals import received_interrupt

if TYPE_CHECKING:  # torch is imported only once the run starts: Ctrl-C during the imports ends cleanly too
    from trainer.options import TrainOptions


def saved_text(opts: TrainOptions | None) -> str:
    """What a rerun resumes from: the run's newest epoch checkpoint on disk (or that there is none)."""
    if opts is None:
        return "the run had not started, nothing is saved"
    from trainer.checkpoints import epoch_checkpoints

    found = epoch_checkpoints(opts.paths.checkpoints, opts.name)
    if not found:
        return f"no epoch had finished, so run {opts.name} has no checkpoint yet"
    epoch, path = found[-1]
    return f"the last finished epoch ({epoch} of {opts.cfg.max_epochs}) is saved in {path}"


def continue_command(argv: list[str] | None) -> str:
    """The command that continues: the same one, as torchrun was started when this is one of its processes."""
    return launched_as(command_line(argv))


def is_reporting_process() -> bool:
    """Under torchrun every rank is stopped; only rank 0 (which writes the checkpoints) prints the line."""
    return is_rank_zero()


def interrupt_of(err: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C/SIGTERM behind `err`: `err` itself, one it was raised while handling, or a signal received before.

    While an interrupt unwinds the run, a second error can replace it: a DataLoader worker killed
    by the same SIGTERM (the DataLoader raises "worker killed by signal"), or under torchrun a
    collective whose peer process already stopped (when this process's own interrupt waited for
    the end of a finalizer). Those are part of the interrupt, not new errors.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return current
        seen.add(id(current))
        current = current.__context__
    return received_interrupt()
