"""Segment your own video with G-FRTM, given the mask of the objects in one frame.

    python demo.py --video clip.mp4 --mask first_frame.png
    python demo.py --video frames/ --mask frames_mask/00010.png --mask-frame 10 --model weights/rn18_all.pth

INPUT is a video file (mp4, avi, mov, ... anything OpenCV decodes) or a folder of frames. The mask
is a palette PNG (value = object id) or a 0/255 greyscale PNG (one object). Tracking starts at the
mask's frame. Writes <output>/masks/<frame>.png (DAVIS palette) and <output>/overlay.mp4 with
each object's gate decision, and prints the speed and the reuse rate.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lib.arg_types import reuse_threshold_arg
from lib.atomic import unwritable_reason
from lib.devices import resolve_device
from lib.evaluation import build_tracker, load_network
from lib.image_io import ImageReadError, write_label_png
from lib.overlays import OverlayVideoWriter, frame_statuses
from lib.video_input import VideoInputError, open_video, read_start_mask
from models.backbone import BackboneWeightsError
from models.checkpoint import CheckpointError
from models.config import OverlayConfig, TrackerConfig

DEMO_MODEL = Path(__file__).resolve().parent / "weights" / "demo_synthetic_rn18.pth"
USER_ERRORS = (VideoInputError, ImageReadError, CheckpointError, BackboneWeightsError, FileNotFoundError)


class DemoError(RuntimeError):
    """A problem with the demo's command line."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", required=True, help="video file or folder of frames")
    p.add_argument("--mask", required=True, help="PNG with the objects of frame --mask-frame (palette or 0/255)")
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
    p.add_argument("--overwrite", action="store_true", help="replace the masks and overlay of an earlier run")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except (DemoError, *USER_ERRORS) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def run(args: argparse.Namespace) -> None:
    """Check the inputs, track the video, write masks and overlay, print speed and reuse rate."""
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
    # only a request that can run may replace an earlier run's files (--overwrite)
    output = Path(args.output or Path("demo_output") / video.path.stem)
    masks_dir, overlay_path = output / "masks", output / "overlay.mp4"
    reason = unwritable_reason(output)
    if reason:
        raise DemoError(f"--output: {reason}; pick a writable folder")
    _prepare_output(masks_dir, overlay_path, args.overwrite)
    backbone_weights = args.backbone_weights or trained_with
    tracker = build_tracker(net, backbone_weights, args.tau, args.fast, False, device)

    start = args.mask_frame
    stop = len(video) if args.max_frames is None else min(len(video), start + args.max_frames)
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
    with OverlayVideoWriter(overlay_path, None, video.fps or cfg.fps, cfg) as overlay:
        bar = tqdm(total=stop - start, unit="frame", dynamic_ncols=True)
        for result in tracker.track(frames(), lambda i: given if i == start else {}):
            name = video.frame_names[result.index]
            write_label_png(masks_dir / f"{name}.png", result.labels)
            gate = [(g.frame, g.object_id, g.p_reuse, g.reused) for g in result.gate]
            statuses = frame_statuses(gate, starts).get(result.index, [])
            overlay.add(shown.pop(result.index), result.labels, f"frame {name}", statuses)
            bar.update(1)
        bar.close()
    st = tracker.stats
    print(f"{st.frames} frames, {st.fps:.2f} fps, reuse rate {st.reuse_rate:.3f}")
    print(f"masks: {masks_dir}\noverlay: {overlay_path}")


def _prepare_output(masks_dir: Path, overlay_path: Path, overwrite: bool) -> None:
    """Refuse to mix with an earlier run's files unless --overwrite, which removes them."""
    earlier = overlay_path.exists() or (masks_dir.is_dir() and any(masks_dir.iterdir()))
    if not earlier:
        return
    if not overwrite:
        raise DemoError(f"{masks_dir.parent} already holds the results of a run; pass --overwrite to replace them "
                        "or --output to write elsewhere")
    if masks_dir.is_dir():
        shutil.rmtree(masks_dir)
    overlay_path.unlink(missing_ok=True)


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
