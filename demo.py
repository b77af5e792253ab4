"""Segment your own video with G-FRTM, given the mask of the objects in one frame.

    python demo.py --video clip.mp4 --mask first_frame.png
    python demo.py --video frames/ --mask frames_mask/00010.png --mask-frame 10 --model weights/rn18_all.pth

INPUT is a video file (mp4, avi, mov, ... anything OpenCV decodes) or a folder of frames. The mask
is a palette PNG (value = object id) or a black-and-white PNG (0 and one other value: one object).
Tracking starts at the mask's frame. Writes <output>/masks/<frame>.png (DAVIS palette) and
<output>/overlay.mp4 with each object's gate decision, and prints the speed and the reuse rate.
After Ctrl-C, running the same command again continues the run.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lib.arg_types import reuse_threshold_arg
from lib.atomic import unwritable_reason
from lib.demo_runs import DemoOutput, OutputInUse, labels_digest, model_identity, prepare
from lib.image_io import ImageReadError, read_label_png, write_label_png
from lib.interrupts import command_line, drop_flag, exit_status, held_signals, interrupted_line, sigterm_as_interrupt
from models.config import OverlayConfig, TrackerConfig

# torch and the network are imported when the run starts (run()), so that Ctrl-C during those
# seconds of imports also ends with the one-line message
DEMO_MODEL = Path(__file__).resolve().parent / "weights" / "demo_synthetic_rn18.pth"


class DemoError(RuntimeError):
    """A problem with the demo's command line."""


@dataclass
class Saved:
    """What the run has on disk so far, for the message of an interrupted run."""

    out: DemoOutput | None = None
    frame_names: list[str] = field(default_factory=list)  # the frames this run tracks
    recorded: bool = False  # the run record is written: the same command without --overwrite continues

    def text(self) -> str:
        if self.out is None:
            return "nothing is saved yet"
        done = self.out.saved_masks(self.frame_names)
        if done == 0:  # the masks folder may not even exist yet: name no folder
            return f"no mask is saved yet (0 of {len(self.frame_names)})"
        return (f"{done} of {len(self.frame_names)} masks are saved in {self.out.masks} "
                f"(the overlay video is written at the end)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", required=True, help="video file or folder of frames")
    p.add_argument("--mask", required=True,
                   help="PNG with the objects of frame --mask-frame: a palette PNG (index = object id), or a "
                        "greyscale/colour PNG with 0 and one other value (one object, e.g. 0/255 or 0/128); "
                        "a greyscale PNG with several values gives one object per value")
    p.add_argument("--mask-frame", type=int, default=0, help="index of the frame the mask belongs to (default 0)")
    p.add_argument("--model", help=f"G-FRTM checkpoint (default: {DEMO_MODEL.relative_to(DEMO_MODEL.parents[1])} "
                                   "when present, else an untrained network)")
    p.add_argument("--ftext", choices=("resnet18", "resnet101"), help="backbone; must agree with the checkpoint")
    p.add_argument("--dev", default=None, help="device, e.g. cuda:0 or cpu (default: cuda:0 when CUDA exists)")
    p.add_argument("--TH", "--tau", dest="tau", type=reuse_threshold_arg, default=TrackerConfig().tau,
                   help="reuse threshold: an object reuses iff p_reuse > TH (default %(default)s)")
    p.add_argument("--fast", dest="fast", action="store_true", default=True,
                   help="target-model optimiser schedule init (5,10,10,10), update (5,): the default")
    p.add_argument("--full-schedule", dest="fast", action="store_false",
                   help="the longer schedule instead: init (5,10,10,10,10), update (10,)")
    p.add_argument("--backbone-weights", default=None,
                   help="'imagenet', 'none' or a ResNet state-dict path (default: what the checkpoint was trained "
                        "with, else imagenet; 'none' for an untrained network)")
    p.add_argument("--output", help="output folder (default: demo_output/<video name>)")
    p.add_argument("--resize-mask", action="store_true", help="resize a mask whose size differs from the frames")
    p.add_argument("--max-frames", type=int, help="track at most this many frames, from the mask frame on")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results of an earlier run in the same folder (an interrupted run with the same "
                        "settings needs no --overwrite: the same command continues it)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; Ctrl-C or SIGTERM stops with one line (masks saved, the command that continues) and 130/143."""
    args = parse_args(argv)
    saved = Saved()
    with sigterm_as_interrupt():
        try:
            return _run_reporting_errors(args, saved)
        except KeyboardInterrupt as err:
            stop = err
    argv = sys.argv[1:] if argv is None else argv
    if saved.recorded:  # the record now says which run this is: continuing needs (and must not get) --overwrite
        argv = drop_flag(argv, "--overwrite", takes_value=False)
    print(interrupted_line(stop, saved.text(), command_line(argv)), file=sys.stderr)
    return exit_status(stop)


def _run_reporting_errors(args: argparse.Namespace, saved: Saved) -> int:
    with held_signals():  # a Ctrl-C while torch is imported arrives once the import is complete
        from lib.video_input import VideoInputError
        from models.backbone import BackboneWeightsError
        from models.checkpoint import CheckpointError

    try:
        run(args, saved)
    except (DemoError, VideoInputError, ImageReadError, CheckpointError, BackboneWeightsError,
            FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def run(args: argparse.Namespace, saved: Saved | None = None) -> None:
    """Check the inputs, track the video, write masks and overlay, print speed and reuse rate.

    An interrupted run with the same settings in the output folder is continued: tracking starts
    again at the mask frame (the tracker's state is not saved), masks already on disk that come out
    the same are kept as they are, and the others are written.
    """
    from lib.devices import resolve_device
    from lib.evaluation import build_tracker, load_network
    from lib.overlays import OverlayVideoWriter, frame_statuses
    from lib.video_input import open_video, read_start_mask

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
    model_path = _resolve_model(args.model)
    net, trained_with = load_network(model_path, args.ftext, device)
    backbone_weights = args.backbone_weights or trained_with
    start = args.mask_frame
    stop = len(video) if args.max_frames is None else min(len(video), start + args.max_frames)
    # only a request that can run may replace an earlier run's files (--overwrite)
    out = DemoOutput(Path(args.output or Path("demo_output") / video.path.stem))
    reason = unwritable_reason(out.folder)
    if reason:
        raise DemoError(f"--output: {reason}; pick a writable folder")
    settings = {"video": str(video.path.resolve()), "frames": len(video), "start mask": labels_digest(labels),
                "mask frame": start, "last frame": stop - 1, "model": model_identity(model_path),
                "backbone": net.cfg.backbone, "backbone weights": str(backbone_weights), "TH": args.tau,
                "schedule": "fast" if args.fast else "full"}
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


def _resolve_model(model: str | None) -> Path | None:
    """The checkpoint to load, or None for an untrained network (announced)."""
    if model is not None:
        path = Path(model)
        if not path.is_file():
            raise DemoError(f"--model {model}: no such file")
        return path
    if DEMO_MODEL.is_file():
        return DEMO_MODEL
    print(f"demo: no model at {DEMO_MODEL}: running an UNTRAINED network (masks will be poor); pass --model PATH "
          "or train one with `python train.py --dset synthetic --backbone-weights none`")
    return None


if __name__ == "__main__":
    sys.exit(main())
