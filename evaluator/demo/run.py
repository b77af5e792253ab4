"""demo.py's run: check the user's video and masks, track forward from the earliest given mask (every
later mask starts or corrects objects) and backward before it, write the masks (and with --save-objects
one PNG per object and frame) and the overlay video, continuing an interrupted run of the same settings.

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
from lib.image_io import ImageReadError, read_label_png, write_binary_png, write_label_png
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
    """Check the inputs, track the video both ways from the given masks, write masks and overlay, print
    speed and reuse rate.

    `default_model` is loaded when --model is not given (an untrained network when it is absent).
    An interrupted run with the same settings in the output folder is continued: tracking starts
    again (the tracker's state is not saved), files already on disk that come out the same are kept
    as they are, and the others are written.
    """
    from evaluator.demo.mask_specs import parse_mask_specs, read_given_masks
    from evaluator.demo.video_input import VideoInputError, open_video
    from evaluator.overlays import OverlayVideoWriter
    from lib.devices import resolve_device
    from models.both_ways import BothWays
    from models.builder import build_tracker, load_network
    from models.config import TrackerConfig
    from models.tracker import AmpUnavailable, check_cpu_bf16

    saved = saved if saved is not None else Saved()
    try:
        pairs, framed = parse_mask_specs(args.mask, args.mask_frame)
    except ValueError as err:
        raise DemoError(str(err)) from None
    video = open_video(args.video)
    if args.max_frames is not None and args.max_frames < 1:
        raise DemoError(f"--max-frames {args.max_frames}: give a positive number of frames")
    try:
        given = read_given_masks(pairs, video.path, len(video), video.size, args.resize_mask, framed)
    except ValueError as err:
        if isinstance(err, VideoInputError):
            raise
        raise DemoError(str(err)) from None
    try:
        device = resolve_device(args.dev)
        if args.amp and device.type == "cpu":
            check_cpu_bf16()
    except (ValueError, AmpUnavailable) as err:
        raise DemoError(str(err)) from None
    model_path = _resolve_model(args.model, default_model)
    net, trained_with = load_network(model_path, args.ftext, device)
    backbone_weights = args.backbone_weights or trained_with
    first = given[0].frame
    stop = len(video) if args.max_frames is None else min(len(video), first + args.max_frames)
    late = [g.frame for g in given if g.frame >= stop]
    if late:
        raise DemoError(f"--max-frames {args.max_frames}: the tracked frames end at {stop - 1}, before the mask "
                        f"given on frame {late[0]}; raise --max-frames or drop that mask")
    # only a request that can run may replace an earlier run's files (--overwrite)
    out = DemoOutput(Path(args.output or Path("demo_output") / video.path.stem))
    reason = unwritable_reason(out.folder)
    if reason:
        raise DemoError(f"--output: {reason}; pick a writable folder")
    settings = demo_settings(video.path, len(video), [(g.frame, g.labels) for g in given], stop, model_path,
                             net.cfg.backbone, str(backbone_weights), args.tau, args.fast)  # hashes the model file
    try:
        continuing = prepare(out, settings, args.overwrite)
    except OutputInUse as err:
        raise DemoError(str(err)) from None
    saved.out, saved.frame_names = out, video.frame_names[:stop]
    if continuing:
        print(f"demo: continuing the interrupted run in {out.folder}: {out.saved_masks(saved.frame_names)} of "
              f"{stop} masks are there; tracking starts again (the tracker's state is not saved) and files that "
              f"come out the same are kept")
    out.write_record(settings, finished=False)
    saved.recorded = True
    tracker = build_tracker(net, backbone_weights, TrackerConfig(tau=args.tau, fast=args.fast, amp=args.amp), device)

    objects = sorted({oid for g in given for oid in g.object_ids})
    where = ", ".join(f"frame {g.frame}: {g.object_ids}" for g in given)
    backward = f", frames {first - 1}..0 backward" if first > 0 else ""
    print(f"demo: {video.path}, frames {first}..{stop - 1} forward{backward} (of {len(video)}), "
          f"{len(objects)} object(s) ({where}), {net.cfg.backbone}, TH {args.tau:g}, device {device}")
    writer = _ResultWriter(out, video.frame_names, continuing, args.save_objects)
    run = BothWays(tracker, _Shown(video), {g.frame: g.masks() for g in given}, stop)
    cfg = OverlayConfig()
    # leave=False: an interrupt clears the bar, so the message that follows stands alone
    with OverlayVideoWriter(out.overlay, None, video.fps or cfg.fps, cfg) as overlay, \
            tqdm(total=stop, unit="frame", dynamic_ncols=True, leave=False) as bar:
        for result in run:
            writer.write(result)
            if result.index >= first:
                if result.index == first:  # the frames tracked backward go first into the video, in order
                    _overlay_backward_frames(overlay, video, writer, first)
                overlay.add(run.source.take(result.index), result.labels, f"frame {video.frame_names[result.index]}",
                            writer.statuses.pop(result.index, []))
            bar.update(1)
    out.write_record(settings, finished=True)
    st = run.stats
    print(f"{st.frames} frames, {st.fps:.2f} fps, reuse rate {st.reuse_rate:.3f}")
    note = f" ({writer.kept} kept from the interrupted run, {st.frames - writer.kept} written)" if continuing else ""
    objects_line = f"\nobjects: {out.objects}" if args.save_objects else ""
    print(f"masks: {out.masks}{note}{objects_line}\noverlay: {out.overlay}")


class _Shown:
    """The video as a FrameSource that keeps each frame the forward session is on, for drawing its overlay."""

    def __init__(self, video) -> None:
        self.video = video
        self.kept: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.video)

    def frames(self, start: int, stop: int):
        for index, image in self.video.frames(start, stop):
            self.kept[index] = image
            yield index, image

    def frames_backward(self, start: int, stop: int):
        return self.video.frames_backward(start, stop)

    def take(self, index: int) -> np.ndarray:
        return self.kept.pop(index)


class _ResultWriter:
    """Writes a frame's label map (and with --save-objects one binary PNG per object), keeping files an
    interrupted run left that are already right; remembers each frame's gate verdicts for the overlay."""

    def __init__(self, out: DemoOutput, frame_names: list[str], continuing: bool, save_objects: bool) -> None:
        self.out, self.frame_names, self.continuing, self.save_objects = out, frame_names, continuing, save_objects
        self.kept = 0  # masks left by the interrupted run that came out the same
        self.statuses: dict[int, list] = {}

    def write(self, result) -> None:
        from evaluator.overlays import ObjectStatus

        name = self.frame_names[result.index]
        if self.continuing and _holds(self.out.mask_path(name), result.labels):
            self.kept += 1
        else:
            write_label_png(self.out.mask_path(name), result.labels)
        if self.save_objects:
            for object_id in self.object_ids(result):
                binary = (result.labels == object_id).astype(np.uint8) * 255
                path = self.out.object_path(object_id, name)
                if not (self.continuing and _holds(path, binary)):
                    write_binary_png(path, binary)
        rows = [ObjectStatus(oid, "start") for oid in result.given]
        rows += [ObjectStatus(g.object_id, "reuse" if g.reused else "compute", g.p_reuse) for g in result.gate]
        self.statuses[result.index] = sorted(rows, key=lambda s: s.object_id)

    def object_ids(self, result) -> list[int]:
        """The objects a frame's files cover: those tracked or given on it (an object absent from the label map
        gets an empty PNG, so every object has a file for every frame once it is tracked)."""
        return sorted({g.object_id for g in result.gate} | set(result.given))


def _overlay_backward_frames(overlay, video, writer: _ResultWriter, first: int) -> None:
    """Frames 0..first-1 into the overlay video, in order, with their masks as written (tracked backward)."""
    for index, image in video.frames(0, first):
        labels = read_label_png(writer.out.mask_path(video.frame_names[index]))
        overlay.add(image, labels, f"frame {video.frame_names[index]}", writer.statuses.pop(index, []))


def _holds(path: Path, labels: np.ndarray) -> bool:
    """Whether `path` already holds exactly these values ((H,W) uint8; a palette or greyscale PNG)."""
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
