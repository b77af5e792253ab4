"""One threshold of an evaluate.py run, or one --eval-only folder, shared among the processes.

Every process tracks its share of the sequences (balanced by frame count) and scores its share of
the folder; rank 0 alone merges the scores and writes the shared files (CSVs, gate log, summary,
submission zip), so they are the same as a single process would write.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path

from dataset.sequence import VideoSequence
from evaluator.davis_scoring import SequenceScores
from evaluator.processes import RunFolder, share_by_size
from dataset.eval_sets import EvalSetInfo
from evaluator.runner import (
    check_scorable,
    merge_note,
    print_final_table,
    run_sequences,
    score_sequences,
    write_scores,
)
from evaluator.result_folders import FolderPlan
from evaluator.run_records import load_sequence_record, write_gate_log, write_submission_zip, write_summary
from models.builder import build_tracker
from models.config import TrackerConfig
from models.gfrtm import GFRTM
from lib.distributed import DistInfo, agree, gather, on_every_process, on_main


@dataclass
class ThresholdRun:
    """What every threshold of one command shares."""

    dset: str  # as given, e.g. 'demo'
    set_info: EvalSetInfo  # the set read, scored and submitted, e.g. dv2017val's for 'demo'
    sequences: list[VideoSequence]
    net: GFRTM
    backbone_weights: str
    fast: bool
    amp: bool
    save_overlays: bool
    zip: bool  # --zip: a zip of the masks for a set without a submission format of its own
    environment: dict  # where it runs (device, torch version): summary.json's top level, beside the settings
    info: DistInfo
    errors: tuple[type[BaseException], ...]  # the user errors that stop all processes with a message
    run_folder: RunFolder | None = None  # several processes: their stop signal


def run_threshold(run: ThresholdRun, plan: FolderPlan) -> dict:
    """Track the plan's unfinished sequences, score the folder, write its files; returns the summary (rank 0)."""
    info, out = run.info, plan.folder
    started = time.perf_counter()
    by_name = {s.name: s for s in run.sequences}
    todo = [by_name[n] for n in plan.todo]
    mine = [todo[i] for i in share_by_size([len(s) for s in todo], info.world_size)[info.rank]]
    error = None
    try:
        cfg = TrackerConfig(tau=plan.tau, fast=run.fast, amp=run.amp)
        tracker = build_tracker(run.net, run.backbone_weights, cfg, info.device)
        label = f"[process {info.rank}] " if info.distributed else ""
        stop = run.run_folder.stopped if run.run_folder else None
        run_sequences(tracker, mine, out, bars=not info.distributed, label=label, stop=stop)
    except run.errors as err:
        error = err
        if run.run_folder:
            run.run_folder.signal_stop()  # the others stop after their current sequence
    agree(error, info)
    if run.save_overlays:
        on_every_process(lambda: _save_overlays(run, out), info, run.errors)
    scores = None if run.set_info.scoring is None else score_folder(run.set_info, run.sequences, out, info, run.errors)
    wall = time.perf_counter() - started
    return on_main(lambda: _write_results(run, plan, scores, wall), info)


def score_folder(set_info: EvalSetInfo, sequences: list[VideoSequence], results: Path, info: DistInfo,
                 errors: tuple[type[BaseException], ...]) -> list[SequenceScores] | None:
    """Score `results` with every process taking a share of the sequences; the scores, in dataset order, on rank 0."""
    on_main(lambda: check_scorable(sequences, results), info)  # every missing mask listed once, by rank 0
    share = share_by_size([len(s.annotated_frames) for s in sequences], info.world_size)[info.rank]
    mine = on_every_process(lambda: score_sequences(set_info.scoring, [sequences[i] for i in share], results,
                                                    progress=not info.distributed), info, errors)
    everyone = gather(list(zip(share, mine)), info)
    if not info.is_main:
        return None
    return [scores for _, scores in sorted(itertools.chain(*everyone), key=lambda pair: pair[0])]


def report_scores(dset: str, scores: list[SequenceScores], csv_dir: Path) -> dict:
    """Write the CSVs into csv_dir (rank 0), saying in one line when DAVIS 2016 merged several object ids."""
    note = merge_note(dset, scores)
    if note:
        print(note)
    return write_scores(dset, scores, csv_dir)


def _save_overlays(run: ThresholdRun, out: Path) -> None:
    from evaluator.overlays import save_sequence_overlays

    share = share_by_size([len(s) for s in run.sequences], run.info.world_size)[run.info.rank]
    for seq in (run.sequences[i] for i in share):
        save_sequence_overlays(seq, out, [load_sequence_record(out, seq.name)])


def _write_results(run: ThresholdRun, plan: FolderPlan, scores: list[SequenceScores] | None, wall: float) -> dict:
    out, sequences = plan.folder, run.sequences
    records = [load_sequence_record(out, s.name) for s in sequences]
    global_scores = None if scores is None else report_scores(run.dset, scores, out)
    write_gate_log(out / "gate_log.csv", records, {s.name: s.frame_names for s in sequences})
    summary = write_summary(out / "summary.json", records, global_scores, plan.settings,
                            {**run.environment, "wall_seconds": wall, "processes": run.info.world_size})
    layout = run.set_info.submission or ("ytvos" if run.zip else None)
    if layout:
        zip_path = out.parent / f"{out.name}.zip"  # not with_suffix: "TH0.7" has a dot
        write_submission_zip(zip_path, out, [s.name for s in sequences], layout)
        print(f"{'submission' if run.set_info.submission else 'zip'}: {zip_path}")
    print_final_table(run.dset, summary, not_scored_reason(run.set_info))
    return summary


def not_scored_reason(set_info: EvalSetInfo) -> str:
    """Why a set is not scored, for the final table ('' when it is)."""
    if set_info.scoring is not None:
        return ""
    if set_info.name == "folder":
        return "some frames of the tree have no annotation (a folder is scored when every frame has one)"
    return "no public ground truth; submit the zip to the evaluation server"
