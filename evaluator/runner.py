"""Running G-FRTM over an evaluation set and scoring it (the logic behind evaluate.py)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from dataset.sequence import VideoSequence
from evaluator.davis_scoring import (
    SequenceScores,
    check_results_folder,
    format_table,
    score_listed_sequences,
    summarize,
    write_csvs,
)
from lib.image_io import write_label_png
from lib.prefetch import prefetch
from evaluator.result_folders import forget_sequence
from evaluator.run_records import SequenceRecord, save_sequence_record
from models.session import TrackingSession
from models.tracker import FrameResult, Tracker

class EvaluationError(RuntimeError):
    """A refused request or a failed run: evaluate.py prints its message as one `error: ...` line."""


def results_dir_name(dset: str, model_name: str, tau: float) -> str:
    return f"{dset}-{model_name}-TH{tau:g}"


def run_sequences(tracker: Tracker, sequences: list[VideoSequence], out: Path, bars: bool = True, label: str = "",
                  stop: Callable[[], bool] | None = None,
                  after_frame: Callable[[TrackingSession, FrameResult], None] | None = None) -> None:
    """Track each sequence in a session of its own, write its palette PNGs and its progress record.

    Frames are decoded ahead by a background thread (tracker.cfg.prefetch_frames of them), so the
    session's fps counts frames already in memory: its clock runs from receiving a frame to
    returning the frame's result.

    A sequence's old record and masks are removed before it is tracked, and its partial masks when
    it fails or is interrupted, so the folder never holds a record for masks that are not all there.
    bars: a progress bar per sequence (off when several processes share the terminal); label
    prefixes each sequence's line; `stop()` is asked between sequences (another process failed);
    `after_frame(session, result)` is called after each frame's mask is written (measurements).
    """
    for seq in sequences:
        if stop is not None and stop():
            return
        forget_sequence(out, seq.name)
        try:
            session = _track_one(tracker, seq, out, bars, after_frame)
            st = session.stats
            gate = [(g.frame, g.object_id, g.p_reuse, int(g.reused)) for g in session.gate_log]
            save_sequence_record(
                out, SequenceRecord(seq.name, st.frames, st.seconds, st.object_frames, st.reused, st.deep_calls, gate)
            )
        except BaseException:  # no record: the masks so far are removed, a rerun redoes the sequence
            shutil.rmtree(out / seq.name, ignore_errors=True)
            raise
        tqdm.write(f"{label}{seq.name}: {st.frames} frames, {st.fps:.2f} fps, reuse rate {st.reuse_rate:.3f}")


def _track_one(tracker: Tracker, seq: VideoSequence, out: Path, bars: bool,
               after_frame: Callable[[TrackingSession, FrameResult], None] | None) -> TrackingSession:
    wanted = set(seq.output_frames)
    session = tracker.session()
    # `with`: an error or interrupt mid-sequence clears the bar, so the message gets a line of its own
    off = {} if bars else {"disable": True}  # when on, tqdm's own default (and TQDM_DISABLE) applies
    with tqdm(total=len(seq), desc=seq.name, unit="frame", leave=False, dynamic_ncols=True, **off) as bar:
        frames = prefetch(seq.frames(), tracker.cfg.prefetch_frames)
        for index, image in frames:
            result = session.step(image, seq.start_masks(index))
            if result.index in wanted:
                write_label_png(out / seq.name / f"{seq.frame_names[result.index]}.png", result.labels)
            if after_frame is not None:
                after_frame(session, result)
            bar.update(1)
    return session


def scoring_items(sequences: list[VideoSequence]) -> list[tuple[str, list[str], list[Path]]]:
    """(name, annotated frame names, their ground-truth paths) per sequence, as evaluator.davis_scoring takes them."""
    return [(s.name, [s.frame_names[i] for i in s.annotated_frames], [s.annotation_paths[i] for i in s.annotated_frames])
            for s in sequences]


def check_scorable(sequences: list[VideoSequence], results_dir: Path) -> None:
    """Every scored mask is there (raises ScoringError naming the missing ones)."""
    check_results_folder(results_dir, scoring_items(sequences))


def score_sequences(scoring: str, sequences: list[VideoSequence], results_dir: Path,
                    progress: bool) -> list[SequenceScores]:
    """J and F of the given sequences' masks in `results_dir` (checked beforehand by `check_scorable`).

    scoring: 'davis' (the objects of each sequence's first annotated frame) or 'late-objects' (the
    sequence's objects, which may start later: yt2018jjval, lvos); see dataset.eval_sets."""
    object_ids = {s.name: s.object_ids for s in sequences} if scoring == "late-objects" else None
    merge = any(s.merge_objects for s in sequences)
    return score_listed_sequences(results_dir, scoring_items(sequences), object_ids=object_ids,
                                  progress=progress, merge_objects=merge,
                                  gt_readers={s.name: s.read_labels for s in sequences})


def write_scores(set_name: str, scores: list[SequenceScores], csv_dir: Path) -> dict:
    """Write the two CSVs of the scores (in dataset order) into csv_dir; returns the global scores."""
    global_scores, rows = summarize(scores)
    write_csvs(csv_dir, set_name, global_scores, rows)
    return global_scores


def merge_note(dset: str, scores: list[SequenceScores]) -> str | None:
    """DAVIS 2016 scores one object per sequence: one line when results with several object ids were merged."""
    merged = [s for s in scores if s.merged_ids]
    if not merged:
        return None
    first = merged[0]
    return (f"{dset}: the masks of {len(merged)} sequence(s) hold several object ids (e.g. {first.name}: "
            f"{', '.join(map(str, first.merged_ids))}); DAVIS 2016 has one object per sequence, so they were merged "
            f"into one object before scoring")


def print_final_table(dset: str, summary: dict, not_scored: str = "") -> None:
    scores = summary.get("scores")
    if summary["frames"]:
        lines = [f"\n{dset}: {summary['frames']} frames, {summary['fps']:.2f} fps, reuse rate {summary['reuse_rate']:.3f}"]
    else:  # --eval-only: nothing was tracked, so there is no speed to report
        lines = [f"\n{dset}: scores of the results folder"]
    if scores:
        lines.append(format_table(scores))
    elif not_scored:
        lines.append(f"not scored: {not_scored}")
    print("\n".join(lines))

