"""The record a results folder keeps of the settings its files depend on.

evaluate.py's threshold folders (`.run.json`) and demo.py's output folder (`demo_run.json`) both
keep one, so that rerunning the same command continues an interrupted run while a command with
other settings is refused instead of mixing two runs' masks. The keys are the flags' names
(`TH`, `schedule`, `backbone_weights`, ...), and the model file is identified by its contents.
"""
from __future__ import annotations

import json
from pathlib import Path

from lib.atomic import atomic_write_text
from lib.file_hash import file_sha256


def model_settings(model_path: Path | None) -> dict:
    """`model` (the resolved path, or 'untrained') and `model_sha256` (its contents: a file retrained
    in place is another model). Hash once per command: a large checkpoint takes a moment."""
    if model_path is None:
        return {"model": "untrained", "model_sha256": None}
    return {"model": str(model_path.resolve()), "model_sha256": file_sha256(model_path)}


def weights_setting(backbone_weights: str) -> str:
    """`backbone_weights` as recorded: 'imagenet', 'none', or a weights file by its resolved path."""
    return backbone_weights if backbone_weights in ("imagenet", "none") else str(Path(backbone_weights).resolve())


def read_record(path: Path) -> dict | None:
    """The record at `path`, or None when absent or not one of ours (then the folder's settings are unknown)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("settings"), dict) else None


def write_record(path: Path, settings: dict, **fields) -> None:
    """Write {"settings": settings, **fields} atomically."""
    atomic_write_text(path, json.dumps({"settings": settings, **fields}, indent=1) + "\n")


def differences(recorded: dict, now: dict, limit: int = 4) -> str:
    """'TH 0.7 there, 0.5 now, ...' for the settings that differ (a changed model file under the same name too)."""
    keys = [k for k in now if recorded.get(k) != now.get(k)]
    parts = [f"{k} {recorded.get(k, 'not recorded')} there, {now[k]} now" for k in keys if k != "model_sha256"]
    if "model_sha256" in keys and "model" not in keys:
        parts.append(f"model {now['model']} has changed since")
    return ", ".join(parts[:limit]) + (", ..." if len(parts) > limit else "")
