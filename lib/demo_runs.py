"""demo.py's output folder: which run wrote it and whether that run finished, so that rerunning an
interrupted demo continues it, and masks of other settings are never mixed with this run's.

`<output>/demo_run.json` records the settings that decide the masks (video, start mask, frames,
model, threshold, schedule, backbone weights) and whether the run finished (overlay written).
A run writes it, unfinished, before its first mask, and again, finished, after the overlay.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.atomic import atomic_write_text

RECORD = "demo_run.json"
MASKS = "masks"
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
        atomic_write_text(self.record, json.dumps({"settings": settings, "finished": finished}, indent=1) + "\n")


def labels_digest(labels: np.ndarray) -> str:
    """A short fingerprint of the start mask's object ids ((H,W) uint8), as the run record keeps it."""
    digest = hashlib.sha256(str(labels.shape).encode())
    digest.update(np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
    return digest.hexdigest()[:16]


def model_identity(path: Path | None) -> str:
    """The model file as the run record names it: path, size and modification time (retrained in place: another)."""
    if path is None:
        return "untrained network (random weights)"
    stat = path.stat()
    return f"{path.resolve()} ({stat.st_size} bytes, modified {stat.st_mtime_ns})"


def prepare(out: DemoOutput, settings: dict, overwrite: bool) -> bool:
    """Make `out` ready for a run with `settings`; True when an interrupted run of the same settings is continued.

    - Nothing there: a fresh start.
    - An unfinished run with these settings: it continues; its masks stay, and a mask is only
      rewritten when the new tracking gives another one.
    - Anything else (a finished run, a run of other settings, results without a record):
      `OutputInUse`, unless `overwrite`, which removes the masks, the overlay and the record first.
    """
    masks = out.masks.is_dir() and any(out.masks.iterdir())
    if not (masks or out.overlay.exists() or out.record.exists()):
        return False
    earlier = _read_record(out.record)
    if not overwrite:
        if earlier is not None and not earlier.get("finished") and earlier.get("settings") == settings:
            return True
        raise OutputInUse(_in_use_message(out, earlier, settings))
    out.record.unlink(missing_ok=True)  # first: interrupted half-way, what is left is refused, never continued
    if out.masks.is_dir():
        shutil.rmtree(out.masks)
    out.overlay.unlink(missing_ok=True)
    return False


def _read_record(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):  # absent, or not ours: the folder's results are then of unknown settings
        return None
    return record if isinstance(record, dict) else None


def _in_use_message(out: DemoOutput, earlier: dict | None, settings: dict) -> str:
    where = out.folder
    if earlier is None or earlier.get("finished"):
        return (f"{where} already holds the results of a run; pass --overwrite to replace them or --output to write "
                f"elsewhere")
    old = earlier.get("settings") if isinstance(earlier.get("settings"), dict) else {}
    differ = [key for key in settings if old.get(key) != settings[key]]
    shown = "; ".join(f"{key}: {old.get(key, 'not recorded')} there, {settings[key]} now" for key in differ[:3])
    return (f"{where} holds an interrupted run with other settings ({shown}); rerun its own command to continue it, "
            f"pass --overwrite to replace it, or --output to write elsewhere")
