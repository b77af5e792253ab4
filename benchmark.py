"""Measure the tracker's speed: per-stage times, forced reuse rates, object counts, peak memory.

    python benchmark.py --ftext resnet18 --dev cpu --json results/bench_rn18_cpu.json --reference-mode
    python benchmark.py --ftext resnet101 --dev cuda --amp --json results/bench_rn101_cuda_amp.json
    python benchmark.py --ftext resnet18 --dev cpu --compare-bf16 --frames 8 --warmup-frames 2 --threads 2

Prints one table (with PASS/FAIL per target) and writes the numbers as JSON with --json.
Frames are generated; the network is untrained and the backbone random (speed does not depend on
the weights), so nothing needs downloading.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lib.arg_types import frame_size_arg
from lib.atomic import unwritable_reason


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ftext", choices=("resnet18", "resnet101"), default="resnet18", help="backbone")
    p.add_argument("--dev", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--size", type=frame_size_arg, default=(480, 854), help="frame size WIDTHxHEIGHT (default 854x480)")
    p.add_argument("--frames", type=int, default=60, help="frames per video (frame 0 starts the objects)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per configuration; the median is reported")
    p.add_argument("--warmup-frames", type=int, default=8, help="untimed frames run before each configuration")
    p.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0],
                   help="forced reuse rates (must include 0 and 1)")
    p.add_argument("--objects", type=int, nargs="+", default=[1, 2, 3, 5], help="object counts at reuse rate 0")
    p.add_argument("--reference-mode", action="store_true",
                   help="also run the published schedule (objects one after another, deep half per object)")
    p.add_argument("--amp", action="store_true", help="CUDA only: float16 autocast")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated frames and the network")
    p.add_argument("--json", type=Path, help="write the report to this JSON file (checked before measuring)")
    p.add_argument("--compare-bf16", action="store_true",
                   help="CPU: instead of the usual report, time the full and the reuse path in float32 and under "
                        "bfloat16 autocast, and show the CPU's bfloat16 support")
    return p.parse_args(argv)


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
        print(interrupted_line(err, unsaved, command_line(argv)), file=sys.stderr)
        return exit_status(err)


def _run(args: argparse.Namespace) -> int:
    """Check everything, measure, print and write the report; 2 after a refused option."""
    from lib.interrupts import held_signals

    with held_signals():  # a Ctrl-C while torch is imported arrives once the import is complete
        from evaluator.speed.benchmark import BenchmarkError, BenchmarkOptions, format_report, run_benchmark, write_report

    opts = BenchmarkOptions(backbone=args.ftext, device=args.dev, size=args.size, frames=args.frames,
                            repeats=args.repeats, warmup_frames=args.warmup_frames, rates=tuple(args.rates),
                            object_counts=tuple(args.objects), reference=args.reference_mode, amp=args.amp,
                            threads=args.threads, seed=args.seed, compare_bf16=args.compare_bf16)
    try:
        opts.check()
    except BenchmarkError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    problem = json_problem(args.json) if args.json else None
    if problem:
        print(f"error: --json {args.json}: {problem}", file=sys.stderr)
        return 2
    if opts.compare_bf16:
        from evaluator.speed.bf16 import format_bf16_report, run_bf16_comparison

        measure, show = run_bf16_comparison, format_bf16_report
    else:
        measure, show = run_benchmark, format_report
    try:
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
