"""Overlay videos: every object's mask blended over the frame in its DAVIS palette colour, its
outline, and a badge with the reuse gate's decision (REUSE / COMPUTE) and p_reuse per object.

`OverlayVideoWriter` writes an MP4 (every frame, full size) and/or a GIF (every n-th frame,
downscaled so it stays small); both appear atomically when the writer closes without error.
`save_sequence_overlays` makes both for one sequence of an evaluation run.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
from PIL import Image

from lib.atomic import atomic_path, atomic_write
from lib.image_io import DAVIS_PALETTE, read_label_png
from evaluator.run_records import SequenceRecord
from models.config import OverlayConfig

OVERLAY_DIR = "overlays"  # inside a results folder: <seq>.gif and <seq>.mp4
FONT = cv2.FONT_HERSHEY_SIMPLEX
DECISION_COLOURS = {"start": (255, 255, 255), "reuse": (110, 235, 110), "compute": (255, 170, 60)}  # RGB


@dataclass(frozen=True)
class ObjectStatus:
    """What one object did on one frame: 'start' (given mask), 'reuse' or 'compute' with the gate's p_reuse."""

    object_id: int
    decision: str
    p_reuse: float | None = None

    @property
    def text(self) -> str:
        if self.decision == "start":
            return f"{self.object_id} START"
        return f"{self.object_id} {self.decision.upper()} p={self.p_reuse:.2f}"


def frame_statuses(
    gate: Iterable[tuple[int, int, float, int | bool]], start_frames: dict[int, int]
) -> dict[int, list[ObjectStatus]]:
    """Group gate rows (frame, object_id, p_reuse, reused) and object starts by frame, objects sorted by id."""
    by_frame: dict[int, list[ObjectStatus]] = {}
    for object_id, frame in start_frames.items():
        by_frame.setdefault(frame, []).append(ObjectStatus(object_id, "start"))
    for frame, object_id, p_reuse, reused in gate:
        by_frame.setdefault(frame, []).append(ObjectStatus(object_id, "reuse" if reused else "compute", p_reuse))
    return {frame: sorted(rows, key=lambda s: s.object_id) for frame, rows in by_frame.items()}


def blend_masks(image: np.ndarray, labels: np.ndarray, alpha: float) -> np.ndarray:
    """Blend each object's palette colour over its pixels and outline it in a lighter shade.

    Args:
        image: (H,W,3) uint8 RGB.
        labels: (H,W) uint8 object ids, 0 = background.
    Returns:
        (H,W,3) uint8 RGB.
    """
    if labels.shape != image.shape[:2]:
        raise ValueError(f"mask size {labels.shape} differs from frame size {image.shape[:2]}")
    out = image.astype(np.float32)
    fg = labels > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * DAVIS_PALETTE[labels[fg]]
    out = np.ascontiguousarray(out.round().astype(np.uint8))
    thickness = max(1, round(min(labels.shape) / 240))
    for object_id in np.unique(labels[fg]):
        contours, _ = cv2.findContours((labels == object_id).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, _outline_colour(int(object_id)), thickness)
    return out


def draw_badge(frame: np.ndarray, title: str, statuses: list[ObjectStatus]) -> np.ndarray:
    """Draw a dark box in the top-left corner: the title, then one line per object with its colour swatch.

    Args:
        frame: (H,W,3) uint8 RGB; not modified.
    Returns:
        (H,W,3) uint8 RGB.
    """
    out = frame.copy()
    scale = max(0.3, min(frame.shape[:2]) / 700)
    thickness = 1 if scale < 0.8 else 2
    (_, text_h), _ = cv2.getTextSize("Ag", FONT, scale, thickness)
    line_h = int(text_h * 1.9)
    pad = max(2, text_h // 2)
    swatch = text_h
    widths = [cv2.getTextSize(title, FONT, scale, thickness)[0][0]]
    widths += [swatch + pad + cv2.getTextSize(s.text, FONT, scale, thickness)[0][0] for s in statuses]
    box_w = min(frame.shape[1], max(widths) + 2 * pad)
    box_h = min(frame.shape[0], line_h * (1 + len(statuses)) + pad)
    out[:box_h, :box_w] = (out[:box_h, :box_w] * 0.35).astype(np.uint8)  # darken so the text reads on any frame
    baseline = pad + text_h
    cv2.putText(out, title, (pad, baseline), FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    for status in statuses:
        baseline += line_h
        colour = tuple(int(c) for c in DAVIS_PALETTE[status.object_id])
        cv2.rectangle(out, (pad, baseline - swatch), (pad + swatch, baseline), colour, -1)
        cv2.putText(out, status.text, (2 * pad + swatch, baseline), FONT, scale,
                    DECISION_COLOURS[status.decision], thickness, cv2.LINE_AA)
    return out


def render_overlay(image: np.ndarray, labels: np.ndarray, title: str, statuses: list[ObjectStatus],
                   cfg: OverlayConfig) -> np.ndarray:
    """One overlay frame: masks, outlines and the gate badge. (H,W,3) uint8 RGB in and out."""
    return draw_badge(blend_masks(image, labels, cfg.alpha), title, statuses)


def gif_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(H, W) scaled down (never up) so that the longer side is at most max_side."""
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


class OverlayVideoWriter:
    """Context manager that renders overlay frames into an MP4 and/or a GIF.

    Both files are written atomically when the `with` block ends without an exception;
    on an exception neither file is created. The GIF is rendered at its own (smaller)
    size so that the badge text stays legible.

    Args:
        mp4_path: MP4 output ('mp4v' codec via OpenCV) or None.
        gif_path: GIF output (Pillow) or None.
        fps: frame rate of the MP4; the GIF plays at the same speed with every cfg.gif_stride-th frame.
    """

    def __init__(self, mp4_path: Path | None, gif_path: Path | None, fps: float, cfg: OverlayConfig = OverlayConfig()):
        if mp4_path is None and gif_path is None:
            raise ValueError("OverlayVideoWriter needs an MP4 path, a GIF path or both")
        if fps <= 0:
            raise ValueError(f"overlay frame rate must be positive, got {fps}")
        self.mp4_path = Path(mp4_path) if mp4_path else None
        self.gif_path = Path(gif_path) if gif_path else None
        self.fps = fps
        self.cfg = cfg
        self.frames_added = 0
        self._size: tuple[int, int] | None = None
        self._gif_frames: list[Image.Image] = []
        self._stack = contextlib.ExitStack()
        self._mp4: cv2.VideoWriter | None = None
        self._mp4_tmp: Path | None = None  # OpenCV picks the container from the suffix, so it must end in .mp4
        self._mp4_final_tmp: Path | None = None

    def __enter__(self) -> "OverlayVideoWriter":
        if self.mp4_path is not None:
            self._mp4_final_tmp = self._stack.enter_context(atomic_path(self.mp4_path))
            self._mp4_tmp = Path(f"{self._mp4_final_tmp}.mp4")
        return self

    def add(self, image: np.ndarray, labels: np.ndarray, title: str, statuses: list[ObjectStatus]) -> None:
        """Add one frame. image (H,W,3) uint8 RGB; labels (H,W) uint8 object ids; every frame the same size."""
        size = image.shape[:2]
        if self._size is None:
            self._size = size
        elif size != self._size:
            raise ValueError(f"overlay frame {self.frames_added} is {size[1]}x{size[0]} but the video is "
                             f"{self._size[1]}x{self._size[0]}: all frames of a video must have one size")
        if self.mp4_path is not None:
            self._write_mp4_frame(render_overlay(image, labels, title, statuses, self.cfg))
        if self.gif_path is not None and self.frames_added % self.cfg.gif_stride == 0:
            h, w = gif_size(*size, self.cfg.gif_max_side)
            small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
            small_labels = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
            frame = render_overlay(small, small_labels, title, statuses, self.cfg)
            self._gif_frames.append(Image.fromarray(frame).quantize(
                self.cfg.gif_colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE))
        self.frames_added += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._mp4 is not None:
            self._mp4.release()
        if exc_type is not None:
            self._discard(exc_type, exc, tb)
            return
        try:
            self._finish()
        except BaseException as err:
            self._discard(type(err), err, err.__traceback__)
            raise
        self._stack.close()  # moves the MP4 into place

    def _finish(self) -> None:
        if self.frames_added == 0:
            raise ValueError(f"no frames were added to the overlay video {self.mp4_path or self.gif_path}")
        if self._mp4_tmp is not None:
            os.replace(self._mp4_tmp, self._mp4_final_tmp)
        if self.gif_path is not None:
            atomic_write(self.gif_path, self._save_gif)

    def _discard(self, exc_type, exc, tb) -> None:
        """Remove the partial MP4; atomic_path, told about the exception, leaves mp4_path untouched."""
        if self._mp4_tmp is not None and self._mp4_tmp.exists():
            self._mp4_tmp.unlink()
        self._stack.__exit__(exc_type, exc, tb)

    def _write_mp4_frame(self, frame: np.ndarray) -> None:
        if self._mp4 is None:
            h, w = frame.shape[:2]
            self._mp4 = cv2.VideoWriter(str(self._mp4_tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self._mp4.isOpened():
                raise RuntimeError(f"OpenCV cannot write an MP4 ('mp4v') at {self.mp4_path}: its video backend "
                                   "lacks the encoder; reinstall opencv-python-headless")
        self._mp4.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

    def _save_gif(self, tmp: Path) -> None:
        duration_ms = round(1000 * self.cfg.gif_stride / self.fps)
        first, *rest = self._gif_frames
        first.save(tmp, format="GIF", save_all=True, append_images=rest, duration=duration_ms, loop=0)


def overlay_paths(results_dir: Path, sequence_name: str) -> tuple[Path, Path]:
    """(GIF, MP4) paths of a sequence's overlays inside a results folder."""
    folder = Path(results_dir) / OVERLAY_DIR
    return folder / f"{sequence_name}.gif", folder / f"{sequence_name}.mp4"


def save_sequence_overlays(seq, out_dir: Path, records: list[SequenceRecord],
                           cfg: OverlayConfig = OverlayConfig()) -> tuple[Path, Path]:
    """Write `<out_dir>/overlays/<seq.name>.gif` and `.mp4` from the masks a run wrote into `<out_dir>/<seq.name>/`.

    Args:
        seq: a dataset.sequence.VideoSequence; its output frames (those whose masks the run wrote) are drawn.
        out_dir: the run's results folder.
        records: the run's SequenceRecords; the one named seq.name gives the gate decisions.
    Returns:
        (gif_path, mp4_path).
    """
    out_dir = Path(out_dir)
    record = next((r for r in records if r.name == seq.name), None)
    if record is None:
        raise ValueError(f"no run record for sequence {seq.name!r} in {out_dir}: it was not tracked in this run")
    statuses = frame_statuses(record.gate, seq.start_frames)
    wanted = set(seq.output_frames)
    gif_path, mp4_path = overlay_paths(out_dir, seq.name)
    with OverlayVideoWriter(mp4_path, gif_path, cfg.fps, cfg) as video:
        for index, image in seq.frames():
            if index not in wanted:
                continue
            name = seq.frame_names[index]
            mask_path = out_dir / seq.name / f"{name}.png"
            if not mask_path.is_file():
                raise FileNotFoundError(f"{mask_path}: the run wrote no mask for frame {name} of {seq.name}; "
                                        "rerun the evaluation with --overwrite")
            video.add(image, read_label_png(mask_path), f"{seq.name} {name}", statuses.get(index, []))
    return gif_path, mp4_path


def _outline_colour(object_id: int) -> tuple[int, int, int]:
    """The object's palette colour moved halfway to white, so the outline stands out from the blend."""
    colour = DAVIS_PALETTE[object_id].astype(int)
    return tuple(int(c) for c in colour + (255 - colour) // 2)
