"""demo.py's run: check the user's video and start mask, track from the mask frame, write the masks
and the overlay video into the output folder, continuing an interrupted run of the same settings.

torch and the network are imported when the run starts (`run_status`, `run`), so that demo.py
parses its arguments at once and a Ctrl-C during those seconds of imports ends with its one line.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from evaluator.demo.run_record import DemoOutput, OutputInUse, demo_settings, prepare
from lib.atomic import unwritable_reason
from lib.image_io import ImageReadError, read_label_png, write_label_png
from lib.interrupts import held_signals
from models.config import OverlayConfig


class DemoError(RuntimeError):
    """A problem with the demo's command line."""


@dataclass
class Saved:
    """What the run has on disk so far, for the message of an interrupted run."""

    out: DemoOutput | None = None
    frame_names: list[str] = field(default_factory=list)  # the frames this run tracks
    recorded: bool = False  # the run record is written: the same command without --overwrite continues

    def text(self) -> str:
        """'N of M masks are saved in FOLDER ...', or what there is instead."""
        if self.out is None:
            return "nothing is saved yet"
        done = self.out.saved_masks(self.frame_names)
        if done == 0:  # the masks folder may not even exist yet: name no folder
            return f"no mask is saved yet (0 of {len(self.frame_names)})"
        return (f"{done} of {len(self.frame_names)} masks are saved in {self.out.masks} "
                f"(the overlay video is written at the end)")


def run_status(args: argparse.Namespace, saved: Saved, default_model: Path) -> int:
    """Run the demo: 0 when done, 2 after one `error: ...` line on stderr. Interrupts propagate."""
    with held_signals():  # a Ctrl-C while torch is imported arrives once the import is complete
        from evaluator.demo.video_input import VideoInputError
        from models.backbone import BackboneWeightsError
        from models.checkpoint import CheckpointError

    try:
        run(args, default_model, saved)
    except (DemoError, VideoInputError, ImageReadError, CheckpointError, BackboneWeightsError,
            FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def run(args: argparse.Namespace, default_model: Path, saved: Saved | None = None) -> None:
    """Check the inputs, track the video, write masks and overlay, print speed and reuse rate.

    `default_model` is loaded when --model is not given (an untrained network when it is absent).
    An interrupted run with the same settings in the output folder is continued: tracking starts
    again at the mask frame (the tracker's state is not saved), masks already on disk that come out
    the same are kept as they are, and the others are written.
    """
    from evaluator.demo.video_input import open_video, read_start_mask
    from evaluator.overlays import OverlayVideoWriter, frame_statuses
    from evaluator.runner import build_tracker, load_network
    from lib.devices import resolve_device

    saved = saved if saved is not None else Saved()
    video = open_video(args.video)
    if not 0 <= args.mask_frame < len(video):
        raise DemoError(f"--mask-frame {args.mask_frame}: {args.video} has {len(video)} frames "
                        f"(0..{len(video) - 1})")
    if args.max_frames is not None and args.max_frames < 1:
        raise DemoError(f"--max-frames {args.max_frames}: give a positive number of frames")
    labels = read_start_mask(args.mask, video.size, resize=args.resize_mask)
    object_ids = [int(i) for i in np.unique(labels) if i != 0]
    try:
        device = resolve_device(args.dev)
    except ValueError as err:
        raise DemoError(str(err)) from None
    model_path = _resolve_model(args.model, default_model)
    net, trained_with = load_network(model_path, args.ftext, device)
    backbone_weights = args.backbone_weights or trained_with
    start = args.mask_frame
    stop = len(video) if args.max_frames is None else min(len(video), start + args.max_frames)
    # only a request that can run may replace an earlier run's files (--overwrite)
    out = DemoOutput(Path(args.output or Path("demo_output") / video.path.stem))
    reason = unwritable_reason(out.folder)
    if reason:
        raise DemoError(f"--output: {reason}; pick a writable folder")
    settings = demo_settings(video.path, len(video), labels, start, stop, model_path, net.cfg.backbone,
                             str(backbone_weights), args.tau, args.fast)  # hashes the model file: once
    try:
        continuing = prepare(out, settings, args.overwrite)
    except OutputInUse as err:
        raise DemoError(str(err)) from None
    saved.out, saved.frame_names = out, video.frame_names[start:stop]
    if continuing:
        print(f"demo: continuing the interrupted run in {out.folder}: {out.saved_masks(saved.frame_names)} of "
              f"{stop - start} masks are there; tracking starts again at frame {start} (the tracker's state is not "
              f"saved) and masks that come out the same are kept")
    out.write_record(settings, finished=False)
    saved.recorded = True
    tracker = build_tracker(net, backbone_weights, args.tau, args.fast, False, device)

    given = {oid: labels == oid for oid in object_ids}
    starts = {oid: start for oid in object_ids}
    shown: dict[int, np.ndarray] = {}  # the frame the tracker is on, kept for drawing its overlay

    def frames():
        for index, image in video.frames(start, stop):
            shown[index] = image
            yield index, image

    print(f"demo: {video.path}, frames {start}..{stop - 1} of {len(video)}, {len(object_ids)} object(s) "
          f"{object_ids}, {net.cfg.backbone}, TH {args.tau:g}, device {device}")
    cfg = OverlayConfig()
    kept = 0
    # leave=False: an interrupt clears the bar, so the message that follows stands alone
    with OverlayVideoWriter(out.overlay, None, video.fps or cfg.fps, cfg) as overlay, \
            tqdm(total=stop - start, unit="frame", dynamic_ncols=True, leave=False) as bar:
        for result in tracker.track(frames(), lambda i: given if i == start else {}):
            name = video.frame_names[result.index]
            if _holds(out.mask_path(name), result.labels):
                kept += 1  # left by the interrupted run, and the same
            else:
                write_label_png(out.mask_path(name), result.labels)
            gate = [(g.frame, g.object_id, g.p_reuse, g.reused) for g in result.gate]
            statuses = frame_statuses(gate, starts).get(result.index, [])
            overlay.add(shown.pop(result.index), result.labels, f"frame {name}", statuses)
            bar.update(1)
    out.write_record(settings, finished=True)
    st = tracker.stats
    print(f"{st.frames} frames, {st.fps:.2f} fps, reuse rate {st.reuse_rate:.3f}")
    note = f" ({kept} kept from the interrupted run, {st.frames - kept} written)" if continuing else ""
    print(f"masks: {out.masks}{note}\noverlay: {out.overlay}")


def _holds(path: Path, labels: np.ndarray) -> bool:
    """Whether `path` already holds exactly these labels ((H,W) uint8)."""
    if not path.is_file():
        return False
    try:
        return bool(np.array_equal(read_label_png(path), labels))
    except ImageReadError:  # not a mask this demo wrote: replaced
        return False


def _resolve_model(model: str | None, default_model: Path) -> Path | None:
    """The checkpoint to load, or None for an untrained network (announced)."""
    if model is not None:
        path = Path(model)
        if not path.is_file():
            raise DemoError(f"--model {model}: no such file")
        return path
    if default_model.is_file():
        return default_model
    print(f"demo: no model at {default_model}: running an UNTRAINED network (masks will be poor); pass --model PATH "
          "or train one with `python train.py --dset synthetic --backbone-weights none`")
    return None
