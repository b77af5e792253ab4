"""Reading frames ahead in a background thread, so decoding overlaps with tracking."""
from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

_POLL_SECONDS = 0.1  # how often a blocked producer checks whether the consumer has gone


class _End:
    """Marks the end of the source (or carries the exception that ended it)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def prefetch(items: Iterable[T], depth: int) -> Iterator[T]:
    """Yield `items` in order while a background thread produces up to `depth` of them ahead.

    An exception raised by the source is re-raised here, at the item where it happened. Closing
    the returned generator early (break, garbage collection) stops the thread.
    """
    if depth < 1:
        raise ValueError(f"prefetch: depth must be at least 1, got {depth}")
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as err:  # handed to the consumer, which re-raises it
            put(_End(err))
            return
        put(_End())

    worker = threading.Thread(target=produce, name="frame-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = buffer.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        stop.set()
        worker.join()
