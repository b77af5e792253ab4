"""Ctrl-C and SIGTERM in a training process, made dependable: never lost, never raised where Python drops it.

Python drops an exception raised inside a finalizer or an at-fork handler ("Exception ignored
in ..."), and the training loop spends a while in both between epochs: starting DataLoader
workers forks the process, and the DataLoader iterator's `__del__` joins them. A Ctrl-C landing
there would vanish and training would go on. `kept_across_finalizers()` remembers every signal and
defers one that lands in a finalizer to the next `raise_if_interrupted()`; `lib.interrupts.held_signals()` keeps
them out while workers are forked.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from types import FrameType
from typing import Any, Callable, Iterator

from lib.interrupts import Terminated

_received: list[int] = []  # the signals received inside `kept_across_finalizers()`, in order
_handlers: dict[int, Callable[[int, FrameType | None], Any]] = {}  # the handlers it wraps: they raise the interrupt


@contextlib.contextmanager
def kept_across_finalizers() -> Iterator[None]:
    """Within the block, a Ctrl-C or SIGTERM can no longer be lost in a `__del__`.

    Python prints and drops an exception raised inside a finalizer ("Exception ignored in ...
    __del__"), and between epochs the main process spends a while in one: the DataLoader
    iterator's `__del__` joins its worker processes. An interrupt raised there would vanish and
    training would go on. So the handlers in place (Python's for SIGINT, `sigterm_as_interrupt`'s
    for SIGTERM) are wrapped: each signal is remembered and raised at once, except inside a
    finalizer, where it waits for the next `raise_if_interrupted()` (the loop calls it after every
    batch). Should one still be dropped somewhere else, Python's "Exception ignored" report of it
    is left out, as that next check raises it. Main thread only, as signal handlers are; a signal
    that is ignored stays ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wrapped = {sig: handler for sig in (signal.SIGINT, signal.SIGTERM) if callable(handler := signal.getsignal(sig))}
    _handlers.update(wrapped)
    _received.clear()
    for sig in wrapped:
        signal.signal(sig, _remember_and_raise)
    report_unraisable = sys.unraisablehook

    def quiet_about_kept_interrupts(unraisable) -> None:
        if not (_received and isinstance(unraisable.exc_value, KeyboardInterrupt)):
            report_unraisable(unraisable)

    sys.unraisablehook = quiet_about_kept_interrupts
    try:
        yield
    finally:
        sys.unraisablehook = report_unraisable
        for sig, handler in wrapped.items():
            signal.signal(sig, handler)
        _handlers.clear()
        _received.clear()


def _remember_and_raise(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    if not _in_finalizer(frame):
        _handlers[signum](signum, frame)


def _in_finalizer(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def raise_if_interrupted() -> None:
    """Raise the interrupt of a signal received within `kept_across_finalizers()` (a no-op when none was)."""
    if _received:
        signum = _received[-1]
        _handlers[signum](signum, None)


def received_interrupt() -> KeyboardInterrupt | None:
    """The interrupt of the last signal received within `kept_across_finalizers()`, or None."""
    if not _received:
        return None
    return Terminated() if _received[-1] == signal.SIGTERM else KeyboardInterrupt()
