"""Test hooks that Python imports at start-up when PYTHONPATH begins with this folder (tests only).

TEST_PAUSE_AFTER_LINE=TEXT: a program stops for good right after it has printed a line that starts
with TEXT through `tqdm.write` (as evaluate.py reports each finished sequence): it waits there until
a signal ends it. A test that interrupts the program at that line, or before it, then always catches
it in the middle of its run, however slowly a loaded machine runs either of them.

TEST_HELD_MARKER=PATH: the first `lib.interrupts.held_signals()` block (an entry point's import of
torch) creates PATH once SIGINT and SIGTERM are held, and waits until one of them is pending. A test
that sends the signal when PATH appears then always interrupts the start-up inside that block.
"""
import os

_PREFIX = os.environ.get("TEST_PAUSE_AFTER_LINE")
if _PREFIX:
    import time

    from tqdm import tqdm

    _write = tqdm.write

    def _write_then_wait(s, *args, **kwargs):
        _write(s, *args, **kwargs)
        if str(s).startswith(_PREFIX):
            while True:  # the signal's KeyboardInterrupt (Ctrl-C, or SIGTERM as Terminated) is raised here
                time.sleep(0.05)

    tqdm.write = staticmethod(_write_then_wait)

_MARKER = os.environ.pop("TEST_HELD_MARKER", None)  # popped: the program's own children do not wait
if _MARKER:
    import contextlib
    import signal
    import time

    import lib.interrupts

    _held_signals = lib.interrupts.held_signals
    _waited = False

    @contextlib.contextmanager
    def _held_then_wait_for_a_signal():
        global _waited
        with _held_signals():
            if not _waited:
                _waited = True
                open(_MARKER, "w").close()
                while not signal.sigpending() & {signal.SIGINT, signal.SIGTERM}:
                    time.sleep(0.01)
            yield

    lib.interrupts.held_signals = _held_then_wait_for_a_signal
