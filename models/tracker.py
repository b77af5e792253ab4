"""The G-FRTM tracker: a trained network and its settings, ready to segment videos (docs/method.md, "Tracking").

A Tracker holds what videos share (the frozen backbone, the trained network, TrackerConfig); each
video is a TrackingSession (models/session.py) with its own state, made by `session()`. `track()`
runs a whole video forward through one session. Build one from a checkpoint with
models.builder.load_tracker.
"""
from __future__ import annotations

import copy
from typing import Iterable, Iterator, Mapping

import numpy as np
import torch

from lib.devices import cpu_bf16_support
from models.backbone import Backbone
from models.config import TrackerConfig
from models.gfrtm import GFRTM
from models.session import ForceReuse, TrackingSession
from models.tracking_records import (  # noqa: F401  (re-exported: what the tracker's users read)
    START_STAGE,
    STAGES,
    FrameResult,
    GateRecord,
    StageTimer,
    TrackStats,
)


class AmpUnavailable(ValueError):
    """Mixed precision was asked for where it would not help (a CPU without native bfloat16)."""


class Tracker:
    """Runs G-FRTM over videos.

    Args:
        backbone: the frozen feature extractor.
        net: the trained G-FRTM modules (eval mode is set here; with cfg.channels_last both modules' weights
            are switched to channels-last memory, values unchanged).
        cfg: tracker settings (tau, fast, amp, augmentation seed, speed settings).
        force_reuse, timer: the defaults of `session()` (see TrackingSession).
        allow_emulated_bf16: with cfg.amp on the CPU, run bfloat16 even on a CPU without native bfloat16
            arithmetic (tests and the benchmark's comparison; slow there, and refused otherwise).

    The tracker runs its own copy of `net`, with the refinement network's BatchNorm folded into its
    convolutions (models/refiner.py); the modules given are not changed but for eval mode and memory format.
    cfg.amp: float16 autocast on CUDA; on the CPU bfloat16: copies of the backbone and the network are
    converted to bfloat16 once and the frames' features are bfloat16 (no autocast, whose per-call casts
    cost more than they save), while the target models (their GN-CG), the scores and the merge stay float32.
    """

    def __init__(self, backbone: Backbone, net: GFRTM, cfg: TrackerConfig, force_reuse: ForceReuse | None = None,
                 timer: StageTimer | None = None, allow_emulated_bf16: bool = False) -> None:
        self.cfg = cfg
        self.device = next(net.parameters()).device
        self.cpu_bf16 = cfg.amp and self.device.type == "cpu"
        self.dtype = torch.bfloat16 if self.cpu_bf16 else torch.float32  # of the frames' features
        # An inference copy of the network, its BatchNorm folded into the convolutions before it (the
        # network given may still be trained or saved; a folded one refuses both).
        if self.cpu_bf16:  # refused before any copying where the CPU lacks bfloat16
            check_cpu_bf16(allow_emulated_bf16)
        net = copy.deepcopy(net).eval()
        net.refiner.fold_batchnorm()
        if self.cpu_bf16:  # the weights converted once; the frames' work then runs in bfloat16 without autocast
            backbone, net = copy.deepcopy(backbone).to(torch.bfloat16), net.to(torch.bfloat16)
        self.backbone = backbone.eval()
        self.net = net
        self.force_reuse = force_reuse
        self.timer = timer
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        if cfg.channels_last:
            self.backbone.to(memory_format=torch.channels_last)
            self.net.to(memory_format=torch.channels_last)
        self.stats = TrackStats()  # the last `track()` video's
        self.gate_log: list[GateRecord] = []

    def session(self, force_reuse: ForceReuse | None = None, timer: StageTimer | None = None,
                first_index: int = 0, reverse: bool = False) -> TrackingSession:
        """A new video: a TrackingSession over this tracker (hooks default to the tracker's)."""
        return TrackingSession(self, force_reuse if force_reuse is not None else self.force_reuse,
                               timer if timer is not None else self.timer, first_index, reverse)

    def track(self, frames: Iterable[tuple[int, np.ndarray]], start_masks) -> Iterator[FrameResult]:
        """Segment one video forward: a thin loop over one session's `step`.

        Args:
            frames: (index, (H,W,3) uint8 RGB image) in order, indices counting up from the first one's.
            start_masks: callable index -> {object_id: (H,W) bool mask} given on that frame (empty dict when none).
        Yields:
            one FrameResult per frame; `self.stats` and `self.gate_log` are the session's.
        """
        session = None
        self.stats, self.gate_log = TrackStats(), []
        for index, image in frames:
            if session is None:
                session = self.session(first_index=index)
                self.stats, self.gate_log = session.stats, session.gate_log
            if index != session.next_index:
                raise ValueError(f"Tracker.track: frame index {index} after {session.next_index - 1}; frames must "
                                 f"come in order, one index apart")
            masks: Mapping[int, np.ndarray] = start_masks(index)
            yield session.step(image, masks)
            self.gate_log = session.gate_log

    def autocast(self):
        """The autocast of a frame's work: float16 on CUDA with cfg.amp; none otherwise (a CPU --amp runs
        bfloat16 weights and features instead)."""
        enabled = self.cfg.amp and self.device.type == "cuda"
        return torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=enabled)


def check_cpu_bf16(allow_emulated: bool = False) -> None:
    """Raise AmpUnavailable unless this CPU computes bfloat16 natively (avx512_bf16 or amx_bf16, and oneDNN agrees)."""
    support = cpu_bf16_support()
    if support["native"] or allow_emulated:
        return
    raise AmpUnavailable(f"--amp on the CPU runs bfloat16, but this CPU has no native bfloat16 arithmetic "
                         f"({support['reason']}). Leave out --amp "
                         f"(float32), or use a CPU with AMX or AVX512-BF16, or a CUDA device")
