"""Measure the tracker's speed: per-stage times, forced reuse rates, object counts, peak memory.

    python benchmark.py --ftext resnet18 --dev cpu --json results/bench_rn18_cpu.json --reference-mode
    python benchmark.py --ftext resnet101 --dev cuda --amp --json results/bench_rn101_cuda_amp.json

Prints one table (with PASS/FAIL per target) and writes the numbers as JSON with --json.
Frames are generated; the network is untrained and the backbone random (speed does not depend on
the weights), so nothing needs downloading.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lib.arg_types import frame_size_arg


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
    p.add_argument("--json", type=Path, help="write the report to this JSON file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from lib.atomic import unwritable_reason
    from lib.benchmarking import BenchmarkError, BenchmarkOptions, format_report, run_benchmark, write_report

    args = parse_args(argv)
    opts = BenchmarkOptions(backbone=args.ftext, device=args.dev, size=args.size, frames=args.frames,
                            repeats=args.repeats, warmup_frames=args.warmup_frames, rates=tuple(args.rates),
                            object_counts=tuple(args.objects), reference=args.reference_mode, amp=args.amp,
                            threads=args.threads, seed=args.seed)
    reason = unwritable_reason(args.json.parent) if args.json else None
    if reason:
        print(f"error: --json {args.json}: {reason}; pick another path", file=sys.stderr)
        return 2
    try:
        report = run_benchmark(opts, log=lambda line: print(line, file=sys.stderr, flush=True))
    except BenchmarkError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        write_report(report, args.json)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
