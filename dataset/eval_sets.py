"""The evaluation sets' names and how each is treated: a table without imports, so that evaluate.py can
offer the names before it loads anything heavy. Reading a set: dataset/registry.py."""
from __future__ import annotations

from dataclasses import dataclass

EVAL_SETS: tuple[str, ...] = ("dv2016val", "dv2017val", "dv2017testdev", "yt2018jjval", "yt2018val", "yt2018valAll",
                              "yt2019val", "yt2019valAll", "mose", "lvos", "folder")


@dataclass(frozen=True)
class EvalSetInfo:
    """How the evaluator treats an evaluation set.

    name: the set (one of EVAL_SETS).
    root_flag: the evaluate.py flag that sets its root ('--davis-root', '--ytvos-root', '--yt2019-root',
        '--mose-root', '--lvos-root' or '--root').
    scoring: 'davis' (the DAVIS rules: the objects of the first frame, every annotated frame scored),
        'late-objects' (each sequence's own objects, its `object_ids`: the ids its annotations hold,
        which may start after frame 0; the annotated frames are scored) or None (no ground truth:
        nothing is scored).
    submission: None, 'ytvos' (a zip of Annotations/<video>/<frame>.png for the written frames) or
        'davis' (a zip of <sequence>/<frame>.png at the zip's root, as the DAVIS server takes it).
    """

    name: str
    root_flag: str
    scoring: str | None
    submission: str | None


_FIELDS: dict[str, tuple[str, str | None, str | None]] = {
    "dv2016val": ("--davis-root", "davis", None),
    "dv2017val": ("--davis-root", "davis", None),
    "dv2017testdev": ("--davis-root", None, "davis"),
    "yt2018jjval": ("--ytvos-root", "late-objects", None),
    "yt2018val": ("--ytvos-root", None, "ytvos"),
    "yt2018valAll": ("--ytvos-root", None, "ytvos"),
    "yt2019val": ("--yt2019-root", None, "ytvos"),
    "yt2019valAll": ("--yt2019-root", None, "ytvos"),
    "mose": ("--mose-root", None, "ytvos"),
    "lvos": ("--lvos-root", "late-objects", None),
    "folder": ("--root", None, None),  # scoring: see eval_set_info
}


SET_INFO: dict[str, EvalSetInfo] = {name: EvalSetInfo(name, *fields) for name, fields in _FIELDS.items()}
