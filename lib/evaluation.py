"""Running G-FRTM over an evaluation set and scoring it (the logic behind evaluate.py)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from dataset.sequence import VideoSequence
from lib.davis_scoring import format_table, score_results_folder, summarize, write_csvs
from lib.image_io import write_label_png
from lib.prefetch import prefetch
from lib.run_records import SequenceRecord, load_sequence_record, save_sequence_record
from models.backbone import build_backbone
from models.config import NetworkConfig, TrackerConfig
from models.gfrtm import GFRTM
from models.tracker import Tracker

SUBMISSION_SETS = ("yt2018val", "yt2018valAll")
RESULT_FILES = ("summary.json", "gate_log.csv")


class EvaluationError(RuntimeError):
    """A problem with the user's request that stops the run before any work is done."""


@dataclass
class RunOptions:
    dset: str
    set_name: str  # name used in CSV file names
    output_dir: Path  # <output>/<dset>-<model>-TH<tau>
    tau: float
    fast: bool = True
    amp: bool = False
    overwrite: bool = False
    restart: str | None = None


def results_dir_name(dset: str, model_name: str, tau: float) -> str:
    return f"{dset}-{model_name}-TH{tau:g}"


def plan_output(opts: RunOptions, sequences: list[VideoSequence]) -> tuple[list[VideoSequence], bool]:
    """Check the output folder; return the sequences still to run and whether to wipe the folder first.

    Touches nothing, so every threshold of a sweep is checked before any runs. A folder that already
    holds results is refused unless --overwrite (wipe it) or --restart SEQ (keep the finished
    sequences before SEQ, rerun SEQ and later ones).
    """
    out = opts.output_dir
    names = [s.name for s in sequences]
    if opts.restart is not None:
        if opts.restart not in names:
            raise EvaluationError(f"--restart {opts.restart}: no such sequence in {opts.dset} (first few: {names[:5]})")
        first = names.index(opts.restart)
        missing = [n for n in names[:first] if load_sequence_record(out, n) is None]
        if missing:
            raise EvaluationError(
                f"--restart {opts.restart}: {out} has no finished results for {missing[:5]} (which come before it); "
                f"restart from {missing[0]} instead"
            )
        return sequences[first:], False
    if out.exists() and any(out.iterdir()):
        if not opts.overwrite:
            raise EvaluationError(
                f"{out} already holds results. Use --overwrite to replace them, or --restart SEQ to resume from a sequence."
            )
        return sequences, True
    return sequences, False


def run_sequences(tracker: Tracker, sequences: list[VideoSequence], out: Path, preload: bool = False) -> None:
    """Track each sequence, write its palette PNGs and its progress record.

    Frames are decoded ahead by a background thread (tracker.cfg.prefetch_frames of them), or all
    read before tracking with `preload`. Either way the tracker's fps counts frames already in
    memory, as DESIGN 4 asks: its clock runs from receiving a frame to yielding the frame's result.
    """
    for seq in sequences:
        if preload:
            seq.preload()
        wanted = set(seq.output_frames)
        # `with`: an error mid-sequence clears the bar, so its message gets a line of its own
        with tqdm(total=len(seq), desc=seq.name, unit="frame", leave=False, dynamic_ncols=True) as bar:
            for result in tracker.track(prefetch(seq.frames(), tracker.cfg.prefetch_frames), seq.start_masks):
                if result.index in wanted:
                    write_label_png(out / seq.name / f"{seq.frame_names[result.index]}.png", result.labels)
                bar.update(1)
        st = tracker.stats
        gate = [(g.frame, g.object_id, g.p_reuse, int(g.reused)) for g in tracker.gate_log]
        save_sequence_record(
            out, SequenceRecord(seq.name, st.frames, st.seconds, st.object_frames, st.reused, st.deep_calls, gate)
        )
        tqdm.write(f"{seq.name}: {st.frames} frames, {st.fps:.2f} fps, reuse rate {st.reuse_rate:.3f}")
        seq.release()


def score_run(dset: str, set_name: str, sequences: list[VideoSequence], results_dir: Path) -> dict:
    """Score a results folder against the ground truth; write the two CSVs. Returns the global scores."""
    items = [(s.name, [s.frame_names[i] for i in s.annotated_frames], [s.annotation_paths[i] for i in s.annotated_frames])
             for s in sequences]
    object_ids = {s.name: s.object_ids for s in sequences} if dset.startswith("yt") else None
    merge = any(s.merge_objects for s in sequences)
    scores = score_results_folder(results_dir, items, object_ids=object_ids, merge_objects=merge)
    global_scores, rows = summarize(scores)
    write_csvs(results_dir, set_name, global_scores, rows)
    return global_scores


def load_network(model_path: Path | None, backbone_name: str | None, device: torch.device) -> tuple[GFRTM, str]:
    """Load a G-FRTM checkpoint, or build an untrained network when model_path is None.

    Returns the network (eval mode) and the backbone weights it was trained with: what the
    checkpoint records (this project's checkpoints do), else 'imagenet' (the published ones);
    an untrained network gets the deterministic random backbone, 'none'.
    """
    from models.checkpoint import load_gfrtm

    if model_path is None:
        net = GFRTM(NetworkConfig(backbone=backbone_name or "resnet18"))
        return net.to(device).eval(), "none"
    net, checkpoint = load_gfrtm(model_path, device=device, backbone=backbone_name)
    return net.eval(), str(checkpoint.get("backbone_weights", "imagenet"))


def build_tracker(net: GFRTM, backbone_weights: str, tau: float, fast: bool, amp: bool, device) -> Tracker:
    backbone = build_backbone(net.cfg.backbone, backbone_weights, device=device)
    return Tracker(backbone, net, TrackerConfig(tau=tau, fast=fast, amp=amp))


def print_final_table(dset: str, summary: dict) -> None:
    scores = summary.get("scores")
    if summary["frames"]:
        lines = [f"\n{dset}: {summary['frames']} frames, {summary['fps']:.2f} fps, reuse rate {summary['reuse_rate']:.3f}"]
    else:  # --eval-only: nothing was tracked, so there is no speed to report
        lines = [f"\n{dset}: scores of the results folder"]
    if scores:
        lines.append(format_table(scores))
    else:
        lines.append("(no public ground truth: not scored)")
    print("\n".join(lines))

