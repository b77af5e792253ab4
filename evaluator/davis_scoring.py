"""Score a folder of result masks the way the official DAVIS toolkit (davis2017-evaluation) does
for the semi-supervised task, and write its two CSV files (docs/method.md, "Scores").

Sequence rules (the toolkit's):
- scored frames: all annotated frames except the first and the last;
- 255 in the ground truth is void and is set to 0 before objects are split;
- DAVIS objects are 1..(max label of the FIRST annotated frame); object k is `label == k`;
- result objects are 1..(max label over the scored result frames): more than the ground truth
  has is an error, fewer are padded with empty masks.

Generalisation for YouTube-VOS local validation (yt2018jjval), where objects first appear in
later frames so the first frame does not list them all: the caller passes the object ids of
each sequence explicitly. Object k is then still `label == k`, per-object rows are named
`<seq>_<k>` with the real id k, and a result label outside the ids is an error.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from lib.atomic import atomic_write_text
from lib.image_io import read_label_png
from evaluator.metrics import boundary_measure_frames, region_similarity, statistics

VOID_LABEL = 255
GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
PER_OBJECT_COLUMNS = ("Sequence", "J-Mean", "F-Mean")
MISSING_FILES_SHOWN = 5  # how many missing result files an error message lists


class ScoringError(ValueError):
    """Results or ground truth that cannot be scored; the message says which file and why."""


@dataclass
class SequenceScores:
    """Per-frame scores of one sequence: object id -> (T,) values over the scored frames."""

    name: str
    j: dict[int, np.ndarray]
    f: dict[int, np.ndarray]
    merged_ids: list[int] = field(default_factory=list)  # DAVIS 2016: the result ids merged into object 1


def first_frame_object_ids(first_gt_labels: np.ndarray) -> list[int]:
    """DAVIS object ids: 1..max label of the first annotated frame (void 255 excluded). (H, W) -> ids."""
    labels = np.where(first_gt_labels == VOID_LABEL, 0, first_gt_labels)
    return list(range(1, int(labels.max()) + 1))


def score_sequence(name: str, gt_labels: np.ndarray, res_labels: np.ndarray,
                   object_ids: list[int] | None = None) -> SequenceScores:
    """J and F per object and frame of one sequence.

    gt_labels, res_labels: (T, H, W) integer label maps of the SCORED frames only (the caller
    drops the first and last annotated frame). object_ids: the ground-truth objects; None means
    1..max label of gt_labels[0] -- correct only when gt_labels[0] is the first annotated frame,
    so callers that dropped it should pass `first_frame_object_ids(<first frame>)`.
    """
    if gt_labels.ndim != 3 or gt_labels.shape != res_labels.shape:
        raise ScoringError(f"sequence {name}: ground truth {gt_labels.shape} and results {res_labels.shape} "
                           f"must be (T, H, W) stacks of the same shape")
    if gt_labels.shape[0] == 0:
        raise ScoringError(f"sequence {name}: no frames to score")
    gt_labels = np.where(gt_labels == VOID_LABEL, 0, gt_labels)
    ids = first_frame_object_ids(gt_labels[0]) if object_ids is None else [int(k) for k in object_ids]
    extra = sorted(set(np.unique(res_labels).tolist()) - {0} - set(ids))
    if extra:
        raise ScoringError(f"sequence {name}: the result masks contain object label(s) {extra}, but the ground "
                           f"truth has objects {ids}; results must use the ground truth's object ids")
    j: dict[int, np.ndarray] = {}
    f: dict[int, np.ndarray] = {}
    for k in ids:
        gt_k = gt_labels == k
        res_k = res_labels == k  # an object absent from the results is an empty mask (padding)
        j[k] = region_similarity(gt_k, res_k)
        f[k] = boundary_measure_frames(gt_k, res_k)
    return SequenceScores(name, j, f)


def score_results_folder(results_dir: str | os.PathLike,
                         sequences: Sequence[tuple[str, list[str], list[Path]]],
                         object_ids: dict[str, list[int]] | None = None,
                         progress: bool = True,
                         merge_objects: bool = False) -> list[SequenceScores]:
    """Score `results_dir/<seq>/<frame>.png` against the ground truth of every sequence.

    sequences: (name, names of ALL annotated frames in order, their GT PNG paths); the first and
    last are not scored. object_ids: optional name -> ids (YouTube-VOS); without it the DAVIS
    first-frame rule applies. merge_objects (DAVIS 2016): every label > 0 becomes 1 in ground
    truth and results; it is applied before void removal because the DAVIS 2016 release marks
    the object with 255. Missing result files are all reported before anything is scored.
    """
    check_results_folder(results_dir, sequences)
    return score_listed_sequences(results_dir, sequences, object_ids, progress, merge_objects)


def score_listed_sequences(results_dir: str | os.PathLike,
                           sequences: Sequence[tuple[str, list[str], list[Path]]],
                           object_ids: dict[str, list[int]] | None = None,
                           progress: bool = True,
                           merge_objects: bool = False,
                           gt_readers: dict[str, Callable[[Path], np.ndarray]] | None = None) -> list[SequenceScores]:
    """`score_results_folder` without the up-front folder check: for a share of a folder that
    `check_results_folder` has already checked (several processes score one folder).

    gt_readers: name -> how that sequence's ground-truth files are read (the user's own masks of the
    folder set); without it, or for a name it lacks, they are label PNGs (`read_label_png`)."""
    results_dir = Path(results_dir)
    if object_ids is not None:
        lacking = [name for name, _, _ in sequences if name not in object_ids]
        if lacking:
            raise ScoringError(f"no object ids were given for sequence(s) {', '.join(lacking)}")
    scores = []
    # `with`: an interrupt clears the bar instead of leaving half of it on the terminal
    off = {} if progress else {"disable": True}  # when on, tqdm's own default (and TQDM_DISABLE) applies
    with tqdm(total=len(sequences), desc="scoring", unit="seq", leave=False, **off) as bar:
        for name, frames, gt_paths in sequences:
            read_gt = (gt_readers or {}).get(name, read_label_png)
            first = _read_labels([gt_paths[0]], merge_objects, read_gt)[0]
            gt = _read_labels(gt_paths[1:-1], merge_objects, read_gt)
            res = _read_labels([results_dir / name / f"{frame}.png" for frame in frames[1:-1]], merge=False)
            merged = []
            if merge_objects:
                merged = sorted(set(np.unique(res).tolist()) - {0})
                res = (res > 0).astype(np.uint8)
            if res.shape[1:] != gt.shape[1:]:
                raise ScoringError(f"sequence {name}: result masks in {results_dir / name} are {res.shape[1:]} (H, W) "
                                   f"but the ground truth is {gt.shape[1:]}; write results at the original size")
            ids = object_ids[name] if object_ids is not None else first_frame_object_ids(first)
            seq_scores = score_sequence(name, gt, res, ids)
            seq_scores.merged_ids = merged if len(merged) > 1 else []
            scores.append(seq_scores)
            bar.update(1)
    return scores


def check_results_folder(results_dir: str | os.PathLike,
                         sequences: Sequence[tuple[str, list[str], list[Path]]]) -> None:
    """Raise ScoringError, listing the first missing files, unless every scored result mask exists."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        what = "is a file, not a folder" if results_dir.exists() else "does not exist"
        raise ScoringError(f"results folder {results_dir} {what}; pass the folder that holds <sequence>/<frame>.png")
    if not any(results_dir.iterdir()):
        raise ScoringError(f"results folder {results_dir} is empty: expected one folder of PNG masks per sequence")
    missing = []
    for name, frames, gt_paths in sequences:
        if len(frames) != len(gt_paths):
            raise ScoringError(f"sequence {name}: {len(frames)} frame names but {len(gt_paths)} ground-truth paths")
        if len(frames) < 3:
            raise ScoringError(f"sequence {name}: only {len(frames)} annotated frame(s); scoring needs at least 3 "
                               f"because the first and the last are not scored")
        missing += [p for p in (results_dir / name / f"{f}.png" for f in frames[1:-1]) if not p.is_file()]
    if missing:
        shown = "\n  ".join(str(p) for p in missing[:MISSING_FILES_SHOWN])
        more = f"\n  ... and {len(missing) - MISSING_FILES_SHOWN} more" if len(missing) > MISSING_FILES_SHOWN else ""
        raise ScoringError(f"{len(missing)} result mask(s) missing in {results_dir}:\n  {shown}{more}\n"
                           f"every annotated frame except the first and last of each sequence needs a PNG")


def _read_labels(paths: Sequence[Path], merge: bool,
                 read: Callable[[Path], np.ndarray] = read_label_png) -> np.ndarray:
    """Read label PNGs (with `read`) into a (T, H, W) uint8 stack; frames of different sizes are an error."""
    frames = []
    for path in paths:
        labels = read(path)
        if frames and labels.shape != frames[0].shape:
            raise ScoringError(f"{path}: size {labels.shape} differs from {frames[0].shape} of {paths[0]}")
        frames.append(labels)
    stack = np.stack(frames).astype(np.uint8)
    if merge:
        stack = (stack > 0).astype(np.uint8)
    return stack


def summarize(scores: list[SequenceScores]) -> tuple[dict[str, float], list[tuple[str, float, float]]]:
    """Dataset scores (means over all objects of every sequence) and per-object rows.

    Returns ({column in GLOBAL_COLUMNS: value}, [(f"{seq}_{k}", J-Mean, F-Mean), ...]).
    """
    if not scores:
        raise ScoringError("no sequences were scored")
    stats: dict[str, list[float]] = {key: [] for key in GLOBAL_COLUMNS[1:]}
    rows = []
    for seq in scores:
        for k in seq.j:
            j_mean, j_recall, j_decay = statistics(seq.j[k])
            f_mean, f_recall, f_decay = statistics(seq.f[k])
            for key, value in zip(GLOBAL_COLUMNS[1:], (j_mean, j_recall, j_decay, f_mean, f_recall, f_decay)):
                stats[key].append(value)
            rows.append((f"{seq.name}_{k}", j_mean, f_mean))
    if not rows:
        raise ScoringError("the scored sequences contain no objects")
    means = {key: float(np.mean(values)) for key, values in stats.items()}
    global_scores = {"J&F-Mean": (means["J-Mean"] + means["F-Mean"]) / 2, **means}
    return global_scores, rows


def _format_value(value: float) -> str:
    # pandas.to_csv(float_format="%.3f"), which the toolkit uses, writes NaN as an empty field.
    return "" if np.isnan(value) else "%.3f" % value


def _csv_text(header: Sequence[str], rows: list[Sequence]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([v if isinstance(v, str) else _format_value(v) for v in row])
    return buf.getvalue()


def write_csvs(out_dir: str | os.PathLike, set_name: str, global_scores: dict[str, float],
               per_object_rows: list[tuple[str, float, float]]) -> tuple[Path, Path]:
    """Write global_results-<set>.csv and per-sequence_results-<set>.csv into out_dir, as the toolkit does.

    Returns (global CSV path, per-sequence CSV path).
    """
    out_dir = Path(out_dir)
    global_path = out_dir / f"global_results-{set_name}.csv"
    per_object_path = out_dir / f"per-sequence_results-{set_name}.csv"
    atomic_write_text(global_path, _csv_text(GLOBAL_COLUMNS, [[global_scores[c] for c in GLOBAL_COLUMNS]]))
    atomic_write_text(per_object_path, _csv_text(PER_OBJECT_COLUMNS, per_object_rows))
    return global_path, per_object_path


def format_table(global_scores: dict[str, float]) -> str:
    """The seven global scores as an aligned two-line table for the terminal."""
    widths = [max(len(c), 8) for c in GLOBAL_COLUMNS]
    header = "  ".join(c.rjust(w) for c, w in zip(GLOBAL_COLUMNS, widths))
    values = "  ".join(("%.3f" % global_scores[c]).rjust(w) for c, w in zip(GLOBAL_COLUMNS, widths))
    return f"{header}\n{values}"
