"""What an evaluation run records besides the masks: per-sequence progress, the gate log,
the summary and the YouTube-VOS submission zip. Every file is written atomically."""
from __future__ import annotations

import csv
import io
import json
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path

from lib.atomic import atomic_path, atomic_write, atomic_write_text

PROGRESS_DIR = ".progress"  # one JSON per finished sequence; lets --restart resume


@dataclass
class SequenceRecord:
    """Everything a finished sequence contributes to the run's summary."""

    name: str
    frames: int
    seconds: float
    object_frames: int
    reused: int
    deep_calls: int
    gate: list[tuple[int, int, float, int]] = field(default_factory=list)  # (frame, object, p_reuse, reused)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")

    @property
    def reuse_rate(self) -> float:
        return self.reused / self.object_frames if self.object_frames else 0.0


def record_path(out_dir: Path, name: str) -> Path:
    """Where sequence `name`'s progress record lives; it exists only once the sequence has finished."""
    return out_dir / PROGRESS_DIR / f"{name}.json"


def save_sequence_record(out_dir: Path, record: SequenceRecord) -> None:
    # The text json.dumps(asdict(record)) gives, streamed: no copy of the gate rows (one per object-frame,
    # 15,000 for 3,000 frames x 5 objects) and no whole-file string in memory.
    values = {f.name: getattr(record, f.name) for f in fields(record)}

    def write(tmp: Path) -> None:
        with tmp.open("w") as f:
            json.dump(values, f)

    atomic_write(record_path(out_dir, record.name), write)


def load_sequence_record(out_dir: Path, name: str) -> SequenceRecord | None:
    path = record_path(out_dir, name)
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    data["gate"] = [tuple(row) for row in data["gate"]]
    return SequenceRecord(**data)


def totals(records: list[SequenceRecord]) -> dict[str, float]:
    """Overall fps (all frames / all tracking time) and reuse rate (over all object-frames)."""
    frames = sum(r.frames for r in records)
    seconds = sum(r.seconds for r in records)
    object_frames = sum(r.object_frames for r in records)
    reused = sum(r.reused for r in records)
    return {
        "frames": frames,
        "seconds": seconds,
        "fps": frames / seconds if seconds > 0 else float("nan"),
        "object_frames": object_frames,
        "reuse_rate": reused / object_frames if object_frames else 0.0,
    }


def write_gate_log(path: Path, records: list[SequenceRecord], frame_names: dict[str, list[str]]) -> None:
    """CSV with one row per object and frame after the object's first: sequence, frame (index in the
    video), frame_name (its file name: YouTube-VOS numbers only every 5th frame), object, p_reuse, decision."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["sequence", "frame", "frame_name", "object", "p_reuse", "decision"])
    for r in records:
        names = frame_names[r.name]
        for frame, obj, p, reused in r.gate:
            writer.writerow([r.name, frame, names[frame], obj, f"{p:.6f}", "reuse" if reused else "compute"])
    atomic_write_text(path, buf.getvalue())


def write_summary(path: Path, records: list[SequenceRecord], scores: dict | None, settings: dict,
                  run: dict | None = None) -> dict:
    """summary.json: the totals over all sequences (fps = all frames / the sum of the sequences' tracking
    times, whichever process tracked them), `run` (e.g. device, wall time, number of processes), the
    scores, per-sequence figures and the settings (those of the folder's .run.json, under the same
    names). Returns what it wrote."""
    summary = {
        **totals(records),
        **(run or {}),
        "scores": scores,
        "per_sequence": {
            r.name: {"frames": r.frames, "fps": r.fps, "reuse_rate": r.reuse_rate, "deep_calls": r.deep_calls}
            for r in records
        },
        "settings": settings,
    }
    atomic_write_text(path, json.dumps(summary, indent=2))
    return summary


def write_submission_zip(zip_path: Path, results_dir: Path, sequences: list[str], layout: str = "ytvos") -> None:
    """Zip the masks as an evaluation server expects them: 'ytvos' (YouTube-VOS, MOSE)
    `Annotations/<video>/<frame>.png`, 'davis' (DAVIS test-dev) `<sequence>/<frame>.png`."""
    prefix = {"ytvos": "Annotations/", "davis": ""}[layout]
    with atomic_path(zip_path) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for name in sequences:
                for png in sorted((results_dir / name).glob("*.png")):
                    zf.write(png, f"{prefix}{name}/{png.name}")
