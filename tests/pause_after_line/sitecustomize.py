"""A test helper that Python imports at start-up when PYTHONPATH begins with this folder.

With TEST_PAUSE_AFTER_LINE set, a program stops for good right after it has printed a line that
starts with that text through `tqdm.write` (as evaluate.py reports each finished sequence): it waits
there until a signal ends it. A test that interrupts the program at that line, or before it, then
always catches it in the middle of its run, however slowly a loaded machine runs either of them.
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
