"""demo.py's masks: `--mask PATH [--mask-frame N]` or `--mask FRAME:PATH` (repeatable), checked and read.

A mask file may hold several objects (a palette PNG, or several grey values): its ids are given on its
frame. Ids not tracked yet start there; ids already tracked are corrected there.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluator.demo.video_input import read_start_mask

FRAME_PREFIX = re.compile(r"^(\d+):(.+)$")  # FRAME:PATH; a path whose name starts with digits and ':' reads as one


class MaskSpecError(ValueError):
    """The --mask / --mask-frame flags do not fit together or do not fit the video."""


@dataclass(frozen=True)
class GivenMask:
    """One --mask: the frame it belongs to, its file and its object ids ((H,W) uint8, 0 = background)."""

    frame: int
    path: Path
    labels: np.ndarray

    @property
    def object_ids(self) -> list[int]:
        return [int(i) for i in np.unique(self.labels) if i != 0]

    def masks(self) -> dict[int, np.ndarray]:
        """object id -> (H,W) bool mask."""
        return {oid: self.labels == oid for oid in self.object_ids}


def parse_mask_specs(specs: list[str], mask_frame: int | None) -> tuple[list[tuple[int, Path]], bool]:
    """((frame, path) of each --mask sorted by frame, whether they came as FRAME:PATH); MaskSpecError for
    combinations that do not fit."""
    framed, plain = [], []
    for spec in specs:
        match = FRAME_PREFIX.match(spec)
        if match:
            framed.append((int(match.group(1)), Path(match.group(2))))
        else:
            plain.append(Path(spec))
    if framed and plain:
        raise MaskSpecError(f"--mask: give every mask as FRAME:PATH, or one mask as PATH (with --mask-frame); got "
                            f"{len(framed)} FRAME:PATH and {len(plain)} PATH")
    if len(plain) > 1:
        raise MaskSpecError(f"--mask: {len(plain)} masks without a frame; give masks on several frames as "
                            f"--mask FRAME:PATH (e.g. --mask 0:{plain[0]} --mask 40:{plain[1]})")
    if framed and mask_frame is not None:
        raise MaskSpecError("--mask-frame goes with a single --mask PATH; with --mask FRAME:PATH the frame is in "
                            "the flag itself: drop --mask-frame")
    if mask_frame is not None and mask_frame < 0:
        raise MaskSpecError(f"--mask-frame {mask_frame}: frames are numbered from 0")
    pairs = framed or [(mask_frame or 0, plain[0])]
    frames = [frame for frame, _ in pairs]
    twice = sorted({frame for frame in frames if frames.count(frame) > 1})
    if twice:
        raise MaskSpecError(f"--mask: several masks for frame(s) {twice}; put the objects of one frame into one "
                            f"mask file (a palette PNG: index = object id)")
    return sorted(pairs), bool(framed)


def read_given_masks(pairs: list[tuple[int, Path]], video: Path, frame_count: int, frame_size: tuple[int, int],
                     resize: bool, framed: bool) -> list[GivenMask]:
    """Check each frame against the video and read each file (VideoInputError names a file that cannot be used).

    framed: the masks came as FRAME:PATH (else as --mask PATH --mask-frame N), for the messages."""
    for frame, path in pairs:
        if frame >= frame_count:
            flag = f"--mask {frame}:{path}" if framed else f"--mask-frame {frame}"
            raise MaskSpecError(f"{flag}: {video} has {frame_count} frames (0..{frame_count - 1})")
    return [GivenMask(frame, path, read_start_mask(path, frame_size, resize=resize)) for frame, path in pairs]
