"""Ctrl-C and SIGTERM: stop with one line that says what is saved and how to continue, and the usual status.

Every entry point runs its work inside `sigterm_as_interrupt()`, which turns SIGTERM into
`Terminated` (a KeyboardInterrupt), so both signals unwind the same way: `with` blocks close
progress bars and temporary files, and the entry point catches KeyboardInterrupt, prints
`interrupted_line(...)` and returns `exit_status(err)`: 130 for Ctrl-C, 143 for SIGTERM, as a
shell reports a process killed by those signals.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Iterator

EXIT_SIGINT = 128 + signal.SIGINT  # 130
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, as Ctrl-C raises KeyboardInterrupt."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` in the main thread (a no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def held_signals() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back (blocked) in the block; they arrive, and raise, when it ends.

    For importing torch: a library that imports an optional module inside a broad `except` can
    swallow a KeyboardInterrupt and keep a half-imported module, which fails later. For starting
    DataLoader workers: `fork()` runs at-fork handlers (the logging module's, for
    one) in which an interrupt is dropped, and can leave a lock held. The workers start with the
    signals blocked too, until `unblock_signals()` (their init function) lets them in.
    """
    if not hasattr(signal, "pthread_sigmask"):  # not on Windows, which forks no workers
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def unblock_signals() -> None:
    """Let SIGINT and SIGTERM in again in a process started inside `held_signals()`."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def exit_status(err: BaseException) -> int:
    """130 after Ctrl-C, 143 after SIGTERM."""
    return EXIT_SIGTERM if isinstance(err, Terminated) else EXIT_SIGINT


def interrupted_line(err: BaseException, saved: str, resume: str | None) -> str:
    """One line: which signal, what is saved, and the exact command that continues (when there is one)."""
    what = "terminated (SIGTERM)" if isinstance(err, Terminated) else "interrupted (Ctrl-C)"
    line = f"{what}: {saved}"
    return f"{line}; to continue: {resume}" if resume else line


def drop_flag(args: list[str], flag: str, takes_value: bool) -> list[str]:
    """`args` without `flag` (or an abbreviation argparse accepts, e.g. --overw) and its value.

    For the commands that continue a run: a flag that would wipe what the run saved must go.
    """
    out, k = [], 0
    while k < len(args):
        arg = args[k]
        name = arg.split("=", 1)[0]
        if len(name) >= 4 and flag.startswith(name):  # argparse takes unambiguous prefixes
            k += 2 if takes_value and "=" not in arg else 1
            continue
        out.append(arg)
        k += 1
    return out


def command_line(argv: list[str] | None = None, replace: dict[str, str | None] | None = None) -> str:
    """The command that was run (`python <script> <args>`), shell-quoted, for "to continue" messages.

    replace: flag -> new value (None removes the flag and its value), e.g. {"--restart": "bmx-trees"}.
    Flags that are not present are appended. Only flags of the form `--flag VALUE` are replaced.
    """
    import shlex

    args = list(sys.argv[1:] if argv is None else argv)
    for flag, value in (replace or {}).items():
        out, k, found = [], 0, False
        while k < len(args):
            arg = args[k]
            if arg == flag or arg.startswith(flag + "="):
                found = True
                k += 1 if "=" in arg else 2
                if value is not None:
                    out += [flag, value]
                continue
            out.append(arg)
            k += 1
        if not found and value is not None:
            out += [flag, value]
        args = out
    return " ".join(shlex.quote(a) for a in ["python", sys.argv[0] if sys.argv[0] else "<script>", *args])
