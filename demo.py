"""Segment your own video with G-FRTM, given the masks of the objects in one frame or several.

    python demo.py --video clip.mp4 --mask first_frame.png
    python demo.py --video frames/ --mask frames_mask/00010.png --mask-frame 10 --model weights/rn18_all.pth
    python demo.py --video clip.mp4 --mask 0:first.png --mask 40:fix.png --save-objects

INPUT is a video file (mp4, avi, mov, ... anything OpenCV decodes) or a folder of frames. A mask
is a palette PNG (value = object id) or a black-and-white PNG (0 and one other value: one object).
`--mask FRAME:PATH` (repeatable) gives masks on several frames: ids not tracked yet start there, ids
already tracked are corrected there. Frames after the earliest mask are tracked forward, frames
before it backward, so every frame gets a mask. Writes <output>/masks/<frame>.png (DAVIS palette),
with --save-objects <output>/objects/<id>/<frame>.png (0/255), and <output>/overlay.mp4 with each
object's gate decision, and prints the speed and the reuse rate. After Ctrl-C, running the same
command again continues the run.
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
    p.add_argument("--mask", required=True, action="append", metavar="[FRAME:]PATH",
                   help="PNG with the objects of a frame: a palette PNG (index = object id), or a greyscale/colour "
                        "PNG with 0 and one other value (one object, e.g. 0/255 or 0/128); a greyscale PNG with "
                        "several values gives one object per value. PATH alone: the frame of --mask-frame. "
                        "FRAME:PATH, repeatable: masks on several frames (new ids start there, tracked ids are "
                        "corrected there)")
    p.add_argument("--mask-frame", type=int, default=None,
                   help="with a single --mask PATH: index of the frame the mask belongs to (default 0)")
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
    p.add_argument("--max-frames", type=int,
                   help="track at most this many frames forward from the earliest mask (the frames before it are "
                        "always tracked backward)")
    p.add_argument("--save-objects", action="store_true",
                   help="also write one binary PNG per object and frame: <output>/objects/<id>/<frame>.png (0/255)")
    p.add_argument("--amp", action="store_true",
                   help="mixed precision: float16 on CUDA; bfloat16 on a CPU with native bfloat16 (AMX or "
                        "AVX512-BF16; refused on other CPUs, where it is slower than float32)")
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
