"""LVOS validation reader (lvos).

Layout under the root (--lvos-root): valid/JPEGImages/<video>/<frame>.jpg,
valid/Annotations/<video>/<frame>.png (palette, value = object id; sparse: only some frames are
annotated) and valid/valid_meta.json, which lists the videos and gives each object's start frame.
Two forms of the meta file are read, per object:

    {"videos": {<video>: {"objects": {<id>: {"frame_range": {"start": <frame name>, "end": ...}}}}}}
    {"videos": {<video>: {"objects": {<id>: {"frames": [<frame name>, ...]}}}}}   (YouTube-VOS form)

In the first the object starts at `start`, in the second at the first frame listed. A start given
as a number (or digits) that is not a frame name is matched to the frame whose name has that
numeric value (e.g. 1 -> 00000001). The start frame must be annotated and its annotation must
contain the object; objects may start after frame 0. Every frame is written; the annotated frames
are scored, with the objects of the meta file, each from its start frame on.
"""
from __future__ import annotations

import json
from pathlib import Path

from dataset.errors import DatasetError
from dataset.sequence import (VideoSequence, frame_folder, pngs_by_stem, require_folders, select_names,
                              validate_start_annotations)

ROOT_FLAG = "--lvos-root"
META_NAME = "valid_meta.json"
EXPECTED_META = ('{"videos": {<video>: {"objects": {<id>: {"frame_range": {"start": <frame name>, ...}}}}}} '
                 'or, per object, {"frames": [<frame names>]}')

Starts = dict[str, dict[int, str]]  # video -> object id -> start frame (as the meta file gives it)


def read_lvos_meta(path: Path) -> Starts:
    """The meta file as {video: {object id: start frame}}; an unrecognised file is one DatasetError."""
    if not path.is_file():
        raise DatasetError(f"{path}: LVOS meta file not found; lvos reads each object's start frame from "
                           f"valid/{META_NAME} under {ROOT_FLAG}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: unreadable LVOS meta file ({type(err).__name__}: {err}); expected "
                           f"{EXPECTED_META}") from None
    videos = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(videos, dict) or not videos:
        raise DatasetError(f"{path}: not a recognised LVOS meta file (no \"videos\" mapping); expected {EXPECTED_META}")
    return {video: _object_starts(path, video, entry) for video, entry in videos.items()}


def _object_starts(path: Path, video: str, entry) -> dict[int, str]:
    objects = entry.get("objects") if isinstance(entry, dict) else None
    if not isinstance(objects, dict) or not objects:
        raise DatasetError(f"{path}: video {video!r} has no \"objects\" mapping; expected {EXPECTED_META}")
    starts = {}
    for oid, obj in objects.items():
        if not str(oid).isdigit() or not 0 < int(oid) < 255:
            raise DatasetError(f"{path}: video {video!r} has object id {oid!r}; object ids are 1..254")
        frame_range = obj.get("frame_range") if isinstance(obj, dict) else None
        frames = obj.get("frames") if isinstance(obj, dict) else None
        if isinstance(frame_range, dict) and isinstance(frame_range.get("start"), (str, int)):
            starts[int(oid)] = str(frame_range["start"])
        elif isinstance(frames, list) and frames and isinstance(frames[0], (str, int)):
            starts[int(oid)] = str(frames[0])
        else:
            raise DatasetError(f"{path}: object {oid} of video {video!r} gives no start frame (neither "
                               f"frame_range.start nor frames); expected {EXPECTED_META}")
    return starts


def _frame_index(start: str, names: list[str]) -> int | None:
    """Index of frame `start`: by name, else (digits only) by the numeric value of the frame names."""
    if start in names:
        return names.index(start)
    if start.isdigit():
        matches = [i for i, name in enumerate(names) if name.isdigit() and int(name) == int(start)]
        if len(matches) == 1:
            return matches[0]
    return None


def load_lvos(root: str | Path, only: list[str] | None = None) -> list[VideoSequence]:
    """The LVOS valid videos listed in valid/valid_meta.json (or those of `only`), validated up front."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: LVOS root not found; point {ROOT_FLAG} at the folder holding valid/")
    valid = root / "valid"
    require_folders(valid / "JPEGImages", valid / "Annotations",
                    needed_by=f"lvos reads valid/JPEGImages/<video>/, valid/Annotations/<video>/ and "
                              f"valid/{META_NAME} under {ROOT_FLAG} ({root})")
    meta_path = valid / META_NAME
    meta = read_lvos_meta(meta_path)
    sequences = []
    for video in select_names(sorted(meta), only, str(meta_path)):
        images = frame_folder(valid / "JPEGImages" / video, video, str(meta_path))
        names = [p.stem for p in images]
        by_stem = pngs_by_stem(valid / "Annotations" / video)
        annotations = {i: by_stem[name] for i, name in enumerate(names) if name in by_stem}
        starts = {}
        for oid, start in sorted(meta[video].items()):
            index = _frame_index(start, names)
            if index is None:
                raise DatasetError(f"{meta_path}: object {oid} of {video} starts in frame {start!r}, which is not "
                                   f"among its frames {names[0]}..{names[-1]} in {valid / 'JPEGImages' / video}")
            if index not in annotations:
                raise DatasetError(f"{valid / 'Annotations' / video / (names[index] + '.png')}: missing; object "
                                   f"{oid} of {video} starts in frame {names[index]} and needs its annotation there")
            starts[oid] = index
        seq = VideoSequence(video, names, images, annotations, sorted(starts), starts)
        validate_start_annotations(seq, set(meta[video]), str(meta_path))
        sequences.append(seq)
    return sequences
