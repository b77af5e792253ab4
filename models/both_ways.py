"""A video with masks given on any frames, tracked in both directions (docs/python_api.md).

The frames after the earliest given mask are tracked forward by one session, in which every later
given mask starts an object (a new id) or corrects one (an id already tracked). The frames before it
are tracked by a second session over the frames in reverse order, starting from the masks of that
earliest frame. The given frame's result is its given masks (in the forward session).
"""
from __future__ import annotations

from typing import Iterator, Mapping, Protocol, Sequence

import numpy as np

from models.session import TrackingSession
from models.tracker import FrameResult, Tracker, TrackStats


class FrameSource(Protocol):
    """Frames of one video, read forward or backward: (index, (H,W,3) uint8 RGB image) pairs."""

    def __len__(self) -> int: ...

    def frames(self, start: int, stop: int) -> Iterator[tuple[int, np.ndarray]]:
        """Frames start..stop-1, ascending."""
        ...

    def frames_backward(self, start: int, stop: int) -> Iterator[tuple[int, np.ndarray]]:
        """Frames stop-1 down to start."""
        ...


class FrameList:
    """A FrameSource over images in memory: a list (or any sequence) of (H,W,3) uint8 RGB arrays."""

    def __init__(self, images: Sequence[np.ndarray]) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def frames(self, start: int, stop: int) -> Iterator[tuple[int, np.ndarray]]:
        return ((i, self.images[i]) for i in range(start, min(stop, len(self))))

    def frames_backward(self, start: int, stop: int) -> Iterator[tuple[int, np.ndarray]]:
        return ((i, self.images[i]) for i in range(min(stop, len(self)) - 1, start - 1, -1))


class BothWays:
    """Iterating gives every frame's FrameResult: frames first-1 down to 0 (backward), then first..stop-1.

    Args:
        tracker: the tracker whose sessions run.
        source: the video (a FrameSource; FrameList for images in memory).
        masks: frame index -> {object id: (H,W) mask} given on that frame (at least one frame).
        stop: track frames up to stop-1 (default: the whole video).
    Attributes (after iterating): backward (the reverse session, None when the earliest mask is on frame 0),
    forward (the forward session), stats (both sessions' counts together).
    """

    def __init__(self, tracker: Tracker, source: FrameSource, masks: Mapping[int, Mapping[int, np.ndarray]],
                 stop: int | None = None) -> None:
        given = {frame: m for frame, m in masks.items() if m}
        if not given:
            raise ValueError("BothWays: give at least one frame's masks ({frame: {object id: mask}})")
        self.stop = len(source) if stop is None else min(stop, len(source))
        outside = sorted(f for f in given if not 0 <= f < self.stop)
        if outside:
            raise ValueError(f"BothWays: masks given on frame(s) {outside}; the frames tracked are 0..{self.stop - 1}")
        self.tracker, self.source, self.masks = tracker, source, given
        self.first = min(given)
        self.backward: TrackingSession | None = None
        self.forward: TrackingSession | None = None

    def __iter__(self) -> Iterator[FrameResult]:
        if self.first > 0:
            self.backward = self.tracker.session(first_index=self.first, reverse=True)
            for index, image in self.source.frames_backward(0, self.first + 1):
                result = self.backward.step(image, self.masks[self.first] if index == self.first else None)
                if index != self.first:  # the forward session gives the given frame's result
                    yield result
        self.forward = self.tracker.session(first_index=self.first)
        for index, image in self.source.frames(self.first, self.stop):
            yield self.forward.step(image, self.masks.get(index))

    @property
    def stats(self) -> TrackStats:
        """Frames, time and gate counts of both sessions (the backward session's repeat of the given frame excluded
        from the frame count and time: it is the start of that session, not a result)."""
        total = TrackStats()
        for session in (self.backward, self.forward):
            if session is None:
                continue
            st = session.stats
            repeat = session is self.backward and st.frames > 0
            total.frames += st.frames - repeat
            total.seconds += st.seconds - (st.first_frame_seconds if repeat else 0.0)
            total.object_frames += st.object_frames
            total.reused += st.reused
            total.deep_calls += st.deep_calls
        return total
