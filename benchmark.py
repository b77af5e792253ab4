"""Measure the tracker's speed: per-stage times, forced reuse rates, object counts, peak memory.

    python benchmark.py --ftext resnet18 --dev cpu --json results/bench_rn18_cpu.json --reference-mode
    python benchmark.py --ftext resnet101 --dev cuda --amp --json results/bench_rn101_cuda_amp.json
    python benchmark.py --ftext resnet18 --dev cpu --compare-bf16 --frames 8 --warmup-frames 2 --threads 2
    python benchmark.py --long-video 300 3000 --dev cpu

Prints one table (with PASS/FAIL per target) and writes the numbers as JSON with --json.
Frames are generated; the network is untrained and the backbone random (speed does not depend on
the weights), so nothing needs downloading. --long-video SHORT LONG instead runs the evaluation path
(evaluator.runner, with the demo model) on a generated video of SHORT and of LONG frames, each in a
process of its own, and compares their peak memory and time per frame.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lib.arg_types import frame_size_arg
from lib.atomic import unwritable_reason


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Options only some modes use default to None, so that one given where it does not apply is refused.
    p.add_argument("--ftext", choices=("resnet18", "resnet101"),
                   help="backbone (default resnet18; --long-video: the model's)")
    p.add_argument("--dev", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--size", type=frame_size_arg, default=(480, 854), help="frame size WIDTHxHEIGHT (default 854x480)")
    p.add_argument("--frames", type=int, help="frames per video (frame 0 starts the objects; default 60)")
    p.add_argument("--repeats", type=int, help="timed runs per configuration; the median is reported (default 3)")
    p.add_argument("--warmup-frames", type=int, help="untimed frames run before each configuration (default 8)")
    p.add_argument("--rates", type=float, nargs="+",
                   help="forced reuse rates (must include 0 and 1; default 0 0.25 0.5 0.75 1)")
    p.add_argument("--objects", type=int, nargs="+",
                   help="object counts at reuse rate 0 (default 1 2 3 5); --long-video: one count (default 3)")
    p.add_argument("--reference-mode", action="store_true",
                   help="also run the published schedule (objects one after another, deep half per object)")
    p.add_argument("--amp", action="store_true", help="mixed precision: float16 autocast on CUDA, bfloat16 on a CPU that has it natively")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated frames and the network")
    p.add_argument("--json", type=Path, help="write the report to this JSON file (checked before measuring)")
    p.add_argument("--compare-bf16", action="store_true",
                   help="CPU: instead of the usual report, time the full and the reuse path in float32 and under "
                        "bfloat16 (the CPU --amp, here allowed on any CPU), and show the CPU's bfloat16 support")
    p.add_argument("--long-video", nargs="+", metavar="N",
                   help="SHORT LONG: instead of the usual report, segment a generated video of SHORT and of LONG "
                        "frames by the evaluation path, each in a process of its own, and compare their peak "
                        "memory and ms/frame (e.g. --long-video 300 3000)")
    p.add_argument("--model", help="--long-video: a G-FRTM checkpoint, or 'none' for an untrained network on the "
                                   "random backbone (default weights/demo_synthetic_rn18.pth)")
    p.add_argument("--tmp-dir", help="--long-video: where the temporary folder of frames and masks goes "
                                     "(default: the system's temporary folder)")
    return p.parse_args(argv)


# Options of the usual report and --compare-bf16 that --long-video does not take.
NOT_FOR_LONG_VIDEO = ("frames", "repeats", "warmup_frames", "rates", "reference_mode", "compare_bf16")


def long_video_options(args: argparse.Namespace):
    """The LongVideoOptions of `--long-video SHORT LONG` (refused options raise BenchmarkError)."""
    from evaluator.speed.benchmark import BenchmarkError
    from evaluator.speed.long_video import LongVideoOptions

    given = [f"--{name.replace('_', '-')}" for name in NOT_FOR_LONG_VIDEO if getattr(args, name) not in (None, False)]
    if given:
        raise BenchmarkError(f"{', '.join(given)}: not taken by --long-video (it runs each length once, by the "
                             f"evaluation path)")
    counts = args.long_video
    if len(counts) != 2 or not all(c.isdigit() for c in counts):
        raise BenchmarkError(f"--long-video {' '.join(counts)}: give two frame counts, SHORT LONG, "
                             f"e.g. --long-video 300 3000")
    if args.objects is not None and len(args.objects) != 1:
        raise BenchmarkError(f"--objects {' '.join(map(str, args.objects))}: --long-video takes one object count")
    model = None if args.model == "none" else args.model
    return LongVideoOptions(
        short=int(counts[0]), long=int(counts[1]), device=args.dev, size=args.size,
        objects=args.objects[0] if args.objects else 3, backbone=args.ftext, amp=args.amp, threads=args.threads,
        seed=args.seed, tmp_dir=args.tmp_dir,
        **({} if args.model is None else {"model": model}))


def benchmark_options(args: argparse.Namespace):
    """The BenchmarkOptions of the usual report or --compare-bf16 (refused options raise BenchmarkError)."""
    from evaluator.speed.benchmark import BenchmarkError, BenchmarkOptions

    given = [flag for flag, value in (("--model", args.model), ("--tmp-dir", args.tmp_dir)) if value is not None]
    if given:
        raise BenchmarkError(f"{', '.join(given)}: only taken by --long-video")
    optional = {"frames": args.frames, "repeats": args.repeats, "warmup_frames": args.warmup_frames,
                "rates": None if args.rates is None else tuple(args.rates),
                "object_counts": None if args.objects is None else tuple(args.objects)}
    return BenchmarkOptions(backbone=args.ftext or "resnet18", device=args.dev, size=args.size,
                            reference=args.reference_mode, amp=args.amp, threads=args.threads, seed=args.seed,
                            compare_bf16=args.compare_bf16,
                            **{name: value for name, value in optional.items() if value is not None})


def json_problem(path: Path) -> str | None:
    """Why the report could not be written to `path` (checked before measuring), or None.

    Refused: an existing folder, and a path under a file or under a folder that cannot be written.
    Missing folders on the way are fine: they are created when the report is written, not before.
    """
    if path.is_dir():
        return f"{path} is a folder; name a file in it, e.g. {path / 'benchmark.json'}"
    if path.name in ("", ".", ".."):
        return f"{path} does not name a file; give a path such as results/benchmark.json"
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the nearest existing folder on the way
    if not folder.is_dir():
        return f"{folder} is not a folder, so {path} cannot be created there"
    reason = unwritable_reason(folder)  # folder exists: nothing is created
    return f"{reason}; pick another path" if reason else None


def main(argv: list[str] | None = None) -> int:
    from lib.interrupts import command_line, exit_status, interrupted_line, sigterm_as_interrupt

    args = parse_args(argv)
    try:
        with sigterm_as_interrupt():
            return _run(args)
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: one line, no traceback
        unsaved = f"nothing measured is saved (the report and --json {args.json} are written at the end)" \
            if args.json else "nothing measured is saved (the report is printed at the end)"
        if args.long_video is not None:
            unsaved += "; the generated frames and masks are removed"
        print(interrupted_line(err, unsaved, command_line(argv)), file=sys.stderr)
        return exit_status(err)


def _run(args: argparse.Namespace) -> int:
    """Check everything, measure, print and write the report; 2 after a refused option."""
    from lib.interrupts import held_signals

    with held_signals():  # a Ctrl-C while torch is imported arrives once the import is complete
        from evaluator.speed.benchmark import BenchmarkError, format_report, run_benchmark, write_report

    try:
        opts = long_video_options(args) if args.long_video is not None else benchmark_options(args)
    except BenchmarkError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    problem = json_problem(args.json) if args.json else None
    if problem:
        print(f"error: --json {args.json}: {problem}", file=sys.stderr)
        return 2
    if args.long_video is not None:
        from evaluator.speed.long_video import format_long_video_report, run_long_video

        measure, show = run_long_video, format_long_video_report
    elif opts.compare_bf16:
        from evaluator.speed.bf16 import format_bf16_report, run_bf16_comparison

        measure, show = run_bf16_comparison, format_bf16_report
    else:
        measure, show = run_benchmark, format_report
    try:  # each measurement checks its options (opts.check()) before it builds or generates anything
        report = measure(opts, log=lambda line: print(line, file=sys.stderr, flush=True))
    except BenchmarkError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(show(report))
    if args.json:
        write_report(report, args.json)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
