"""What tracking reports: a frame's result, the gate's verdicts, a video's counts, and the names of a
frame's stages (for timers). Shared by the session, the tracker and everything that reads their output."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ContextManager, Protocol

import numpy as np

# Stage names of a frame's work (see StageTimer). The per-frame ones, in order:
STAGES = (
    "shallow",  # shallow backbone half (with the frame's upload and normalisation)
    "match_gate",  # template matching and the gate (with the decision's transfer to the host)
    "deep",  # deep backbone half
    "tm_score",  # target-model scores
    "refine_deep",  # deep refinement part
    "translate",  # delta generator and refine translator (reuse path)
    "refine_shallow",  # shallow refinement part and upsampler
    "merge",  # merging objects and the label map's transfer to the host
    "tm_update",  # target-model updates (memory insertion, every train_skipping-th time GN-CG)
)
START_STAGE = "start"  # initialising the objects that start (or are corrected) on a frame


class StageTimer(Protocol):
    """Receives the tracker's stages: `with timer.stage(name): ...` around each piece of a frame's work."""

    def stage(self, name: str) -> ContextManager: ...


@dataclass(slots=True)
class GateRecord:
    """The gate's verdict for one object on one frame (slots: a video's gate log holds one per object-frame)."""

    frame: int
    object_id: int
    p_reuse: float
    reused: bool


@dataclass
class FrameResult:
    """Output of one frame.

    index: the frame's index in its video.
    labels: (H,W) uint8 object ids, 0 = background.
    gate: the gate's verdicts of the objects tracked on this frame (none for objects given on it).
    given: the ids whose mask was given on this frame (started or corrected there).
    """

    index: int
    labels: np.ndarray
    gate: list[GateRecord] = field(default_factory=list)
    given: tuple[int, ...] = ()

    def object_mask(self, object_id: int) -> np.ndarray:
        """(H,W) bool mask of one object in the label map."""
        return self.labels == object_id


@dataclass
class TrackStats:
    """Timing and reuse counts of one video (or one session)."""

    frames: int = 0
    seconds: float = 0.0
    object_frames: int = 0  # object-frames decided by the gate: after each object's first frame, corrections excluded
    reused: int = 0
    deep_calls: int = 0  # deep backbone half runs (at most one per frame, except in the reference schedule)
    first_frame_seconds: float = 0.0  # the first frame's share of `seconds` (its objects' target models are fitted)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")

    @property
    def later_frame_seconds(self) -> float:
        """Mean time of the frames after the first (nan for a one-frame video)."""
        return (self.seconds - self.first_frame_seconds) / (self.frames - 1) if self.frames > 1 else float("nan")

    @property
    def reuse_rate(self) -> float:
        return self.reused / self.object_frames if self.object_frames else 0.0
