"""demo.py's output folder: which run wrote it and whether that run finished, so that rerunning an
interrupted demo continues it, and masks of other settings are never mixed with this run's.

`<output>/demo_run.json` = {"settings": ..., "finished": bool}, written and read as evaluate.py's
`.run.json` is (evaluator.settings_record), with the same keys for the same settings (`model`,
`model_sha256`, `backbone`, `backbone_weights`, `TH`, `schedule`) and the demo's own (`video`,
`frames`, `masks`: "FRAME:fingerprint" of each given mask, `last_frame`). A run writes it, unfinished,
before its first mask, and again, finished, after the overlay.
"""
from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluator.settings_record import differences, model_settings, read_record, weights_setting, write_record

RECORD = "demo_run.json"
MASKS = "masks"
OBJECTS = "objects"  # --save-objects: objects/<id>/<frame>.png, one binary PNG per object and frame
OVERLAY = "overlay.mp4"


class OutputInUse(RuntimeError):
    """The output folder holds results this run must not mix with or silently replace."""


@dataclass(frozen=True)
class DemoOutput:
    """The files of one demo output folder."""

    folder: Path

    @property
    def masks(self) -> Path:
        return self.folder / MASKS

    @property
    def objects(self) -> Path:
        return self.folder / OBJECTS

    def object_path(self, object_id: int, frame_name: str) -> Path:
        return self.objects / str(object_id) / f"{frame_name}.png"

    @property
    def overlay(self) -> Path:
        return self.folder / OVERLAY

    @property
    def record(self) -> Path:
        return self.folder / RECORD

    def mask_path(self, frame_name: str) -> Path:
        return self.masks / f"{frame_name}.png"

    def saved_masks(self, frame_names: list[str]) -> int:
        """How many of these frames have their mask on disk (each was written atomically: complete)."""
        return sum(self.mask_path(name).is_file() for name in frame_names)

    def write_record(self, settings: dict, finished: bool) -> None:
        """Write demo_run.json: the run's settings and whether it finished."""
        write_record(self.record, settings, finished=finished)


def labels_digest(labels: np.ndarray) -> str:
    """A short fingerprint of a given mask's object ids ((H,W) uint8), as the run record keeps it."""
    digest = hashlib.sha256(str(labels.shape).encode())
    digest.update(np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
    return digest.hexdigest()[:16]


def demo_settings(video: Path, frames: int, given: list[tuple[int, np.ndarray]], stop: int,
                  model_path: Path | None, backbone: str, backbone_weights: str, tau: float, fast: bool) -> dict:
    """What the masks of a demo run depend on, as demo_run.json records them.

    given: (frame, (H,W) uint8 object ids) of each given mask. The model file is identified by its
    contents (hashed here: call once per command), a backbone weights file by its path; frames
    0..stop-1 are tracked.
    """
    return {"video": str(video.resolve()), "frames": frames,
            "masks": [f"{frame}:{labels_digest(labels)}" for frame, labels in given],
            "last_frame": stop - 1, **model_settings(model_path), "backbone": backbone,
            "backbone_weights": weights_setting(backbone_weights), "TH": tau, "schedule": "fast" if fast else "full"}


def prepare(out: DemoOutput, settings: dict, overwrite: bool) -> bool:
    """Make `out` ready for a run with `settings`; True when an interrupted run of the same settings is continued.

    - Nothing there: a fresh start.
    - An unfinished run with these settings: it continues; its masks stay, and a mask is only
      rewritten when the new tracking gives another one.
    - Anything else (a finished run, a run of other settings, results without a record):
      `OutputInUse`, unless `overwrite`, which removes the masks, the overlay and the record first.
    """
    written = any(folder.is_dir() and any(folder.iterdir()) for folder in (out.masks, out.objects))
    if not (written or out.overlay.exists() or out.record.exists()):
        return False
    earlier = read_record(out.record)
    if not overwrite:
        if earlier is not None and not earlier.get("finished") and earlier["settings"] == settings:
            return True
        raise OutputInUse(_in_use_message(out, earlier, settings))
    out.record.unlink(missing_ok=True)  # first: interrupted half-way, what is left is refused, never continued
    for folder in (out.masks, out.objects):
        if folder.is_dir():
            shutil.rmtree(folder)
    out.overlay.unlink(missing_ok=True)
    return False


def _in_use_message(out: DemoOutput, earlier: dict | None, settings: dict) -> str:
    where = out.folder
    if earlier is None or earlier.get("finished"):
        return (f"{where} already holds the results of a run; pass --overwrite to replace them or --output to write "
                f"elsewhere")
    return (f"{where} holds an interrupted run with other settings ({differences(earlier['settings'], settings)}); "
            f"rerun its own command to continue it, pass --overwrite to replace it, or --output to write elsewhere")
