"""Do corrections help? Tracking through hard events with and without a user's correction.

    python -m evaluator.correction_study --videos 8 --first-seed 8 --dev cpu

Each generated video (dataset/hard_events.py) has an event that makes object 1 hard to follow: it
changes its appearance, or it is hidden and comes back elsewhere, with a look-alike distractor in
view. Every video is tracked three times from the masks of frame 0:
- `none`: no help;
- `correction`: the true mask of object 1 is given on frame event + delay (the session corrects it:
  its target model learns the frame as a trusted sample and keeps what it learnt before);
- `restart`: the same mask given after removing object 1, so it starts afresh from that frame alone
  (what a session without corrections offers).
Reported: J, F and J&F of object 1 (and of object 2, which no one corrects) over the frames after the
correction frame, per kind of event, averaged over the videos. The network is the demo model
(weights/demo_synthetic_rn18.pth) at the size it was trained at.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from dataset.hard_events import KINDS, TRACKED, HardEventVideo, render_hard_event
from evaluator.metrics import boundary_measure_frames, region_similarity
from lib.atomic import atomic_write_text
from lib.devices import resolve_device
from models.builder import build_tracker, load_network
from models.config import TrackerConfig
from models.tracker import Tracker

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "weights" / "demo_synthetic_rn18.pth"
MODES = ("none", "correction", "restart")
DELAY = 2  # frames between the event and the user's correction: they see the failure, then correct


def track(tracker: Tracker, video: HardEventVideo, mode: str, corrected: int) -> np.ndarray:
    """(T,H,W) uint8 label maps of one run (mode: none, correction or restart); objects 1 and 2 start on frame 0."""
    session = tracker.session()
    labels = []
    for t, image in enumerate(video.frames):
        masks = {oid: video.labels[0] == oid for oid in (1, 2)} if t == 0 else {}
        if t == corrected and mode != "none":
            if mode == "restart":
                session.remove(TRACKED)
            masks = {TRACKED: video.labels[t] == TRACKED}
        labels.append(session.step(image, masks).labels)
    return np.stack(labels)


def scores_after(video: HardEventVideo, labels: np.ndarray, first: int, object_id: int) -> dict[str, float]:
    """Mean J, F and J&F of one object over frames first..T-1."""
    gt, pred = video.labels[first:] == object_id, labels[first:] == object_id
    j = float(np.mean(region_similarity(gt, pred)))
    f = float(np.mean(boundary_measure_frames(gt, pred)))
    return {"J": j, "F": f, "J&F": (j + f) / 2}


def run_study(videos: int, device: str, model: Path = DEMO_MODEL, shares: tuple[float, ...] = (),
              first_seed: int = 0, log=print) -> dict:
    """Every kind x video (seeds first_seed..) x mode; returns {"rows": per run, "summary": means per kind and mode}.

    shares: further trusted_share values to try, each as one more correction run ("correction, share S").
    """
    device = resolve_device(device)
    net, weights = load_network(model, None, device)
    default = TrackerConfig(tau=0.7)
    trackers = {mode: build_tracker(net, weights, default, device) for mode in MODES}
    for share in shares:
        tm_cfg = replace(default.target_model, trusted_share=share)
        trackers[f"correction, share {share:g}"] = build_tracker(
            net, weights, replace(default, target_model_override=tm_cfg), device)
    rows = []
    for kind in KINDS:
        for seed in range(first_seed, first_seed + videos):
            video = render_hard_event(kind, seed)
            corrected = video.event + DELAY
            for mode, tracker in trackers.items():
                labels = track(tracker, video, mode.split(",")[0], corrected)
                row = {"kind": kind, "seed": seed, "mode": mode, "corrected_frame": corrected}
                for object_id in (TRACKED, 2):
                    for name, value in scores_after(video, labels, corrected + 1, object_id).items():
                        row[f"{name} object {object_id}"] = value
                rows.append(row)
            log(f"  {kind} video {seed}: J&F of object 1 after frame {corrected}: " + ", ".join(
                f"{r['mode']} {r['J&F object 1']:.3f}" for r in rows[-len(trackers):]), flush=True)
    summary = {kind: {mode: {key: statistics.fmean(r[key] for r in rows if r["kind"] == kind and r["mode"] == mode)
                             for key in rows[0] if key.startswith(("J", "F"))}
                      for mode in trackers} for kind in KINDS}
    return {"model": str(model), "videos_per_kind": videos, "first_seed": first_seed, "delay": DELAY, "rows": rows,
            "summary": summary}


def format_summary(report: dict) -> str:
    seeds = f"{report['first_seed']}..{report['first_seed'] + report['videos_per_kind'] - 1}"
    lines = [f"J&F over the frames after the correction (object 1: the corrected one; object 2: never corrected), "
             f"mean of {report['videos_per_kind']} videos per kind (seeds {seeds})",
             f"{'event':12s}{'run':24s}{'J&F 1':>8s}{'J 1':>8s}{'F 1':>8s}{'J&F 2':>8s}"]
    for kind, by_mode in report["summary"].items():
        for mode, s in by_mode.items():
            lines.append(f"{kind:12s}{mode:24s}{s['J&F object 1']:8.3f}{s['J object 1']:8.3f}{s['F object 1']:8.3f}"
                         f"{s['J&F object 2']:8.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=8, help="videos per kind of event (default %(default)s)")
    p.add_argument("--first-seed", type=int, default=8,
                   help="seed of the first video (default %(default)s: the default trusted share was chosen on "
                        "seeds 0-7, so the report is on others)")
    p.add_argument("--dev", default="cpu", help="device (default cpu)")
    p.add_argument("--model", default=str(DEMO_MODEL), help="G-FRTM checkpoint (default: the demo model)")
    p.add_argument("--trusted-share", type=float, nargs="+", default=[],
                   help="also run corrections with these trusted shares (the default is TargetModelConfig's)")
    p.add_argument("--json", help="also write the report (every run's scores) to this file")
    args = p.parse_args(argv)
    if args.videos < 1 or args.first_seed < 0:
        p.error(f"--videos {args.videos} --first-seed {args.first_seed}: give at least 1 video and a seed >= 0")
    if any(not 0 < share < 1 for share in args.trusted_share):
        p.error("--trusted-share: values lie in (0, 1)")
    report = run_study(args.videos, args.dev, Path(args.model), tuple(args.trusted_share), args.first_seed)
    print(format_summary(report))
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
