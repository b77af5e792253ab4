"""Segment an evaluation set with G-FRTM and score it as the DAVIS toolkit does.

    python evaluate.py --dset demo                      # built-in synthetic videos, CPU, minutes
    python evaluate.py --ftext resnet18 --dset dv2017val --dev cuda:0 --TH 0.7
    python evaluate.py --dset dv2017val --eval-only path/to/results   # score another method's masks
    torchrun --nproc_per_node=4 evaluate.py --dset yt2018val          # sequences shared among 4 GPUs

Edit `paths` below for your machine; the command-line flags override it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dataset.eval_sets import EVAL_SETS as DATASET_SETS
from lib.arg_types import reuse_threshold_arg

paths = {
    "models": "weights",  # published G-FRTM checkpoints (rn18_all.pth, rn101_all.pth, rn18_ytvos.pth)
    "davis": "/data/DAVIS",  # DAVIS 2017 trainval (+ test-dev), or the DAVIS 2016 release for dv2016val
    "yt2018": "/data/YouTubeVOS2018",  # holds train/, train_all_frames/, valid/, valid_all_frames/
    "yt2019": "/data/YouTubeVOS2019",  # holds valid/, valid_all_frames/
    "mose": "/data/MOSE",  # holds valid/
    "lvos": "/data/LVOS",  # holds valid/
    "output": "results",
}

EVAL_SETS = (*DATASET_SETS, "demo")
DEMO_MODEL = Path(__file__).resolve().parent / "weights" / "demo_synthetic_rn18.pth"
# The model used when --model is not given, per backbone and dataset family: the YouTube-VOS sets take
# the model trained on YouTube-VOS only, every other set the one trained on DAVIS + YouTube-VOS.
DEFAULT_MODELS = {
    ("resnet18", "davis"): "rn18_all.pth",
    ("resnet101", "davis"): "rn101_all.pth",
    ("resnet18", "ytvos"): "rn18_ytvos.pth",
    ("resnet101", "ytvos"): "rn101_ytvos.pth",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dset", choices=EVAL_SETS, default="dv2017val", help="evaluation set")
    p.add_argument("--model", help="checkpoint file, or a file name inside paths['models'] (default: by --ftext and --dset)")
    p.add_argument("--ftext", choices=("resnet18", "resnet101"), help="backbone; must agree with the checkpoint")
    p.add_argument("--dev", default=None, help="device, e.g. cuda:0 or cpu (default: cuda:0 when CUDA exists)")
    p.add_argument("--TH", "--tau", dest="tau", metavar="TH", type=reuse_threshold_arg, nargs="+", default=[0.7],
                   help="reuse threshold(s): an object reuses iff p_reuse > TH; several values run a sweep")
    p.add_argument("--fast", dest="fast", action="store_true", default=True,
                   help="target-model optimiser schedule init (5,10,10,10), update (5,): the default, as in every "
                        "published figure (the flag is accepted for the published command lines)")
    p.add_argument("--full-schedule", dest="fast", action="store_false",
                   help="the longer schedule instead: init (5,10,10,10,10), update (10,)")
    p.add_argument("--amp", action="store_true",
                   help="mixed precision: float16 on CUDA; bfloat16 on a CPU with native bfloat16 (AMX or AVX512-BF16; "
                        "refused on other CPUs, where it is slower than float32)")
    p.add_argument("--backbone-weights", default=None,
                   help="'imagenet', 'none' or a ResNet state-dict path (default: what the checkpoint was trained "
                        "with, else imagenet)")
    p.add_argument("--sequences", nargs="+", help="run only these sequences")
    p.add_argument("--restart", metavar="SEQ", help="rerun from sequence SEQ on, keeping the finished ones before it "
                                                    "(the same command without it continues an interrupted run)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace results already in the output folder (also those made with other settings)")
    p.add_argument("--split-file", help="sequence list for yt2018jjval (default: dataset/splits/ytvos_jjvalid.txt); "
                                        "for yt2018val*/yt2019val*: only the videos listed")
    p.add_argument("--eval-only", metavar="RESULTS_DIR",
                   help="only score an existing results folder (only read when --output names where the CSVs go)")
    p.add_argument("--davis-root", help=f"overrides paths['davis'] ({paths['davis']})")
    p.add_argument("--ytvos-root", help=f"overrides paths['yt2018'] ({paths['yt2018']})")
    p.add_argument("--yt2019-root", help=f"overrides paths['yt2019'] ({paths['yt2019']})")
    p.add_argument("--mose-root", help=f"overrides paths['mose'] ({paths['mose']})")
    p.add_argument("--lvos-root", help=f"overrides paths['lvos'] ({paths['lvos']})")
    p.add_argument("--root", help="--dset folder: the folder holding JPEGImages/<sequence>/ and Annotations/<sequence>/")
    p.add_argument("--zip", action="store_true",
                   help="also zip the masks as Annotations/<sequence>/<frame>.png (the sets without ground truth "
                        "always write their submission zip)")
    p.add_argument("--output", help=f"overrides paths['output'] ({paths['output']}); with --eval-only: the folder "
                                   f"for the CSV files")
    p.add_argument("--save-overlays", action="store_true", help="also write an overlay GIF and MP4 per sequence")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """0 on success; 2 with one `error: ...` line; 130/143 with one line after Ctrl-C/SIGTERM."""
    from lib.interrupts import command_line, exit_status, held_signals, interrupted_line, sigterm_as_interrupt
    from lib.launcher import continue_command, is_rank_zero

    args = parse_args(argv)
    try:  # importing torch takes seconds, in which a Ctrl-C is likely: it is held back until the import is done
        with sigterm_as_interrupt(), held_signals():
            from evaluator.cli import main_status
    except KeyboardInterrupt as err:
        if is_rank_zero():
            print(interrupted_line(err, "nothing saved yet", continue_command(command_line(argv))), file=sys.stderr)
        return exit_status(err)
    return main_status(args, argv, paths, DEFAULT_MODELS, DEMO_MODEL)


if __name__ == "__main__":
    sys.exit(main())
