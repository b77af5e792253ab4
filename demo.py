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
from pathlib import Path

from evaluator.demo.run import Saved, run_status
from lib.arg_types import reuse_threshold_arg
from lib.interrupts import command_line, drop_flag, exit_status, interrupted_line, sigterm_as_interrupt
from models.config import TrackerConfig

# torch and the network are imported when the run starts (evaluator.demo.run.run_status), so that
# Ctrl-C during those seconds of imports also ends with the one-line message
DEMO_MODEL = Path(__file__).resolve().parent / "weights" / "demo_synthetic_rn18.pth"


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
            return run_status(args, saved, DEMO_MODEL)
        except KeyboardInterrupt as err:
            stop = err
    argv = sys.argv[1:] if argv is None else argv
    if saved.recorded:  # the record now says which run this is: continuing needs (and must not get) --overwrite
        argv = drop_flag(argv, "--overwrite", takes_value=False)
    print(interrupted_line(stop, saved.text(), command_line(argv)), file=sys.stderr)
    return exit_status(stop)


if __name__ == "__main__":
    sys.exit(main())
