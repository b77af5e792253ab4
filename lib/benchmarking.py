"""Speed benchmark of the tracker (the logic behind benchmark.py).

On generated frames it measures, after a warm-up, the median over repeated runs of:
  a. per-frame time of each stage on the full path (every frame full) and the reuse path
     (every frame reused), with the device synchronised around each stage;
  b. per-frame time of a video with the reuse decision forced at several rates, against the ideal
     mix (1 - r) T_full + r T_reuse of the rate-0 and rate-1 runs;
  c. per-frame time with several objects at reuse rate 0;
  d. optionally the published schedule (TrackerConfig.schedule = "reference") on the same frames;
  e. peak memory of each run (resident set on the CPU, max allocated on CUDA).
Per-frame times leave out frame 0, where the objects start (reported separately).
The network is untrained and the backbone randomly initialised: the work per frame does not
depend on the weights, and nothing needs downloading.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import statistics
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from lib.atomic import atomic_write_text
from models.backbone import build_backbone
from models.config import NetworkConfig, TrackerConfig
from models.gfrtm import GFRTM
from models.tracker import STAGES, Tracker

# The targets: (name, limit, comparison), checked on the measured ratios.
MIX_TOLERANCE = 0.05  # |measured / ideal mix - 1| at every forced reuse rate
REUSE_OVER_SHALLOW_MAX = 1.35  # reuse path / shallow backbone half
FIVE_OVER_ONE_OBJECT_MAX = 2.0  # per-frame time with 5 objects / with 1
REFERENCE_SPEEDUP_MIN = 1.25  # reference schedule / batched full path, 3 objects
REFERENCE_OBJECTS = 3

# Generated video: objects are discs of this radius (fraction of the shorter side) that drift.
OBJECT_RADIUS = 0.12
OBJECT_SPEED = 0.004  # fraction of the width per frame


class BenchmarkError(RuntimeError):
    """A benchmark request that cannot run (bad option or missing device)."""


@dataclass(frozen=True)
class BenchmarkOptions:
    backbone: str = "resnet18"
    device: str = "cpu"
    size: tuple[int, int] = (480, 854)  # (H, W)
    frames: int = 60
    repeats: int = 3
    warmup_frames: int = 8
    rates: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    object_counts: tuple[int, ...] = (1, 2, 3, 5)
    reference: bool = False  # also run the published schedule (--reference-mode)
    amp: bool = False
    threads: int | None = None
    seed: int = 0

    def check(self) -> None:
        h, w = self.size
        if h < 32 or w < 32:
            raise BenchmarkError(f"--size {w}x{h}: frames must be at least 32x32 pixels")
        if self.frames < 3 or self.repeats < 1 or self.warmup_frames < 2:
            raise BenchmarkError(f"--frames ({self.frames}) must be >= 3, --repeats ({self.repeats}) >= 1 and "
                                 f"--warmup-frames ({self.warmup_frames}) >= 2")
        if any(not 0.0 <= r <= 1.0 for r in self.rates) or 0.0 not in self.rates or 1.0 not in self.rates:
            raise BenchmarkError(f"--rates {self.rates}: rates lie in [0, 1] and must include 0 and 1 "
                                 f"(the ideal mix is built from them)")
        if any(n < 1 for n in self.object_counts) or 1 not in self.object_counts:
            raise BenchmarkError(f"--objects {self.object_counts}: counts are positive and must include 1")
        if self.amp and not self.device.startswith("cuda"):
            raise BenchmarkError("--amp is float16 autocast on CUDA: use it with --dev cuda")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise BenchmarkError(f"--dev {self.device}: CUDA is not available on this machine; use --dev cpu")


# ------------------------------------------------------------------------------------- inputs
def generate_video(size: tuple[int, int], frames: int, objects: int, seed: int):
    """Frames (H,W,3) uint8 of drifting textured discs on a smooth background, and each disc's
    mask on frame 0. Returns (frames, start_masks) in the form Tracker.track takes."""
    h, w = size
    rng = np.random.default_rng(seed)
    coarse = rng.integers(40, 200, size=(h // 16 + 2, w // 16 + 2, 3)).astype(np.float32)
    background = np.kron(coarse, np.ones((16, 16, 1), np.float32))[:h, :w]
    radius = OBJECT_RADIUS * min(h, w)
    yy, xx = np.mgrid[0:h, 0:w]
    centres = [((k % 3 + 1) * h / 4, (k // 3 + 1) * w / (objects // 3 + 2)) for k in range(objects)]
    colours = rng.integers(0, 255, size=(objects, 3))
    video, first_masks = [], {}
    for t in range(frames):
        image = background + rng.normal(0, 2, size=background.shape).astype(np.float32)
        for k, (cy, cx) in enumerate(centres):
            inside = (yy - cy) ** 2 + (xx - cx - OBJECT_SPEED * w * t) ** 2 < radius ** 2
            image[inside] = colours[k] + 20 * np.sin(xx[inside] / 5.0)[:, None]
            if t == 0:
                first_masks[k + 1] = inside
        video.append(np.clip(image, 0, 255).astype(np.uint8))
    return video, (lambda i: dict(first_masks) if i == 0 else {})


def reuse_pattern(rate: float) -> Callable[[int, list[int]], list[bool]]:
    """force_reuse hook: frame t >= 1 reuses iff floor(t * rate) > floor((t - 1) * rate), which
    spreads floor((T-1) * rate) reuse frames evenly; all objects of a frame decide alike."""
    def decide(frame: int, ids: list[int]) -> list[bool]:
        reuse = int(frame * rate) > int((frame - 1) * rate)
        return [reuse] * len(ids)
    return decide


# ------------------------------------------------------------------------------------- measuring
class StageClock:
    """StageTimer that sums wall time per stage and frame, synchronising the device around stages."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.current: dict[str, float] = defaultdict(float)
        self.frames: list[dict[str, float]] = []

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        _synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            _synchronize(self.device)
            self.current[name] += time.perf_counter() - start

    def end_frame(self) -> None:
        self.frames.append(dict(self.current))
        self.current = defaultdict(float)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory of a stretch of work: resident set (CPU) or max allocated (CUDA), in MiB."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "cuda max allocated" if device.type == "cuda" else "resident set (VmHWM)"

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:  # Linux: writing 5 resets the process's peak resident set
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.kind = "process peak resident set (could not reset)"

    def read(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class RunResult:
    """Medians over the repeats of one configuration."""

    per_frame_s: float  # frames 1..T-1
    start_frame_s: float  # frame 0 (objects start)
    reuse_rate: float
    deep_calls: int
    peak_mib: float
    stages_s: dict[str, float] = field(default_factory=dict)  # per frame, when timed by stage


class Bench:
    """Builds the tracker once and runs configurations on generated frames."""

    def __init__(self, opts: BenchmarkOptions) -> None:
        self.opts = opts
        self.device = torch.device(opts.device)
        torch.manual_seed(opts.seed)
        self.backbone = build_backbone(opts.backbone, "none", device=self.device)
        self.net = GFRTM(NetworkConfig(backbone=opts.backbone)).to(self.device).eval()
        self.memory = PeakMemory(self.device)
        self._video: tuple[int, tuple] | None = None  # (objects, video): only one kept, it counts in the peak

    def video(self, objects: int):
        if self._video is None or self._video[0] != objects:
            self._video = None
            self._video = (objects, generate_video(self.opts.size, self.opts.frames, objects, self.opts.seed))
        return self._video[1]

    def run(self, objects: int, rate: float, schedule: str = "batched", by_stage: bool = False) -> RunResult:
        """Warm up on the first frames, then the median of `repeats` runs of the whole video."""
        frames, start_masks = self.video(objects)
        cfg = TrackerConfig(tau=0.7, amp=self.opts.amp, schedule=schedule)
        self._track(cfg, rate, frames[:self.opts.warmup_frames], start_masks, None)
        runs = []
        for _ in range(self.opts.repeats):
            clock = StageClock(self.device) if by_stage else None
            self.memory.reset()
            tracker = self._track(cfg, rate, frames, start_masks, clock)
            peak = self.memory.read()
            stages = {}
            if clock is not None:
                timed = clock.frames[1:]
                stages = {name: sum(f.get(name, 0.0) for f in timed) / len(timed) for name in STAGES}
            st = tracker.stats
            runs.append(RunResult(float(np.mean(st.frame_seconds[1:])), st.frame_seconds[0], st.reuse_rate,
                                  st.deep_calls, peak, stages))
        return _median_result(runs)

    def _track(self, cfg: TrackerConfig, rate: float, frames, start_masks, clock: StageClock | None) -> Tracker:
        tracker = Tracker(self.backbone, self.net, cfg, force_reuse=reuse_pattern(rate), timer=clock)
        for _ in tracker.track(enumerate(frames), start_masks):
            if clock is not None:
                clock.end_frame()
        _synchronize(self.device)
        return tracker


def _median_result(runs: list[RunResult]) -> RunResult:
    med = lambda values: float(statistics.median(values))  # noqa: E731
    stages = {k: med([r.stages_s[k] for r in runs]) for k in runs[0].stages_s}
    return RunResult(med([r.per_frame_s for r in runs]), med([r.start_frame_s for r in runs]), runs[0].reuse_rate,
                     runs[0].deep_calls, max(r.peak_mib for r in runs), stages)


# ------------------------------------------------------------------------------------- the benchmark
def run_benchmark(opts: BenchmarkOptions, log: Callable[[str], None] = print) -> dict:
    """Run every part and return the report (see module docstring); `log` gets progress lines."""
    opts.check()
    if opts.threads is not None:
        torch.set_num_threads(opts.threads)
    if opts.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    bench = Bench(opts)
    started = time.perf_counter()

    def timed_run(label: str, *args, **kwargs) -> RunResult:
        log(f"  {label} ...")
        result = bench.run(*args, **kwargs)
        log(f"  {label}: {1000 * result.per_frame_s:.1f} ms/frame")
        return result

    stage_full = timed_run("stages, full path", 1, 0.0, by_stage=True)
    stage_reuse = timed_run("stages, reuse path", 1, 1.0, by_stage=True)
    by_rate = {r: timed_run(f"reuse rate {r:g}", 1, r) for r in opts.rates}
    t_full, t_reuse = by_rate[0.0].per_frame_s, by_rate[1.0].per_frame_s
    rates = []
    for r, res in by_rate.items():
        ideal = (1 - res.reuse_rate) * t_full + res.reuse_rate * t_reuse
        rates.append({"rate": r, "measured_rate": res.reuse_rate, "per_frame_s": res.per_frame_s, "ideal_s": ideal,
                      "ratio": res.per_frame_s / ideal, "deep_calls": res.deep_calls, "peak_mib": res.peak_mib})
    by_count = {1: by_rate[0.0]}
    for n in opts.object_counts:
        if n not in by_count:
            by_count[n] = timed_run(f"{n} objects", n, 0.0)
    objects = [{"objects": n, "per_frame_s": res.per_frame_s, "start_frame_s": res.start_frame_s,
                "peak_mib": res.peak_mib} for n, res in sorted(by_count.items())]
    reference = []
    if opts.reference:
        if REFERENCE_OBJECTS not in by_count:
            by_count[REFERENCE_OBJECTS] = timed_run(f"{REFERENCE_OBJECTS} objects", REFERENCE_OBJECTS, 0.0)
        ref = timed_run(f"reference schedule, {REFERENCE_OBJECTS} objects", REFERENCE_OBJECTS, 0.0, "reference")
        batched = by_count[REFERENCE_OBJECTS].per_frame_s
        reference.append({"objects": REFERENCE_OBJECTS, "per_frame_s": ref.per_frame_s, "batched_per_frame_s": batched,
                          "speedup": ref.per_frame_s / batched, "deep_calls": ref.deep_calls,
                          "batched_deep_calls": by_count[REFERENCE_OBJECTS].deep_calls, "peak_mib": ref.peak_mib})
    report = {
        "settings": _settings(opts, bench.memory.kind),
        "stages": {"full": stage_full.stages_s, "reuse": stage_reuse.stages_s,
                   "full_total_s": sum(stage_full.stages_s.values()),
                   "reuse_total_s": sum(stage_reuse.stages_s.values()),
                   "start_frame_s": stage_full.start_frame_s},
        "rates": rates,
        "objects": objects,
        "reference": reference,
    }
    report["targets"] = check_targets(report, opts)
    report["settings"]["benchmark_seconds"] = time.perf_counter() - started
    return report


def check_targets(report: dict, opts: BenchmarkOptions) -> list[dict]:
    """The issue's targets as measured ratios with their limits and verdicts."""
    targets = []
    for row in report["rates"]:
        targets.append(_target(f"reuse rate {row['rate']:g}: measured / ideal mix", row["ratio"],
                               f"within {MIX_TOLERANCE:.0%}", abs(row["ratio"] - 1) <= MIX_TOLERANCE))
    reuse = next(row["per_frame_s"] for row in report["rates"] if row["rate"] == 1.0)
    shallow = report["stages"]["reuse"]["shallow"]
    targets.append(_target("reuse path / shallow backbone half", reuse / shallow,
                           f"<= {REUSE_OVER_SHALLOW_MAX}", reuse / shallow <= REUSE_OVER_SHALLOW_MAX))
    counts = {row["objects"]: row["per_frame_s"] for row in report["objects"]}
    if 5 in counts:
        ratio = counts[5] / counts[1]
        targets.append(_target("5 objects / 1 object", ratio, f"<= {FIVE_OVER_ONE_OBJECT_MAX}",
                               ratio <= FIVE_OVER_ONE_OBJECT_MAX))
    for row in report["reference"]:
        targets.append(_target(f"reference schedule / full path, {row['objects']} objects", row["speedup"],
                               f">= {REFERENCE_SPEEDUP_MIN}", row["speedup"] >= REFERENCE_SPEEDUP_MIN))
    return targets


def _target(name: str, value: float, limit: str, passed: bool) -> dict:
    return {"name": name, "value": value, "limit": limit, "pass": bool(passed)}


def _settings(opts: BenchmarkOptions, memory_kind: str) -> dict:
    settings = asdict(opts)
    settings.update({
        "torch": torch.__version__,
        "threads_used": torch.get_num_threads(),
        "machine": _machine(opts.device),
        "memory": memory_kind,
        "weights": "random backbone ('none'), untrained network",
    })
    return settings


def _machine(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs"


# ------------------------------------------------------------------------------------- output
def format_report(report: dict) -> str:
    """One plain-text table of everything measured."""
    s = report["settings"]
    h, w = s["size"]
    ms = lambda seconds: f"{1000 * seconds:9.1f}"  # noqa: E731
    lines = [f"G-FRTM speed: {s['backbone']}, {s['device']} ({s['machine']}), {w}x{h}, {s['frames']} frames, "
             f"median of {s['repeats']}, torch {s['torch']}, {s['threads_used']} threads"
             + (", amp" if s["amp"] else ""),
             "", f"{'stage (ms per frame)':34s}{'full':>9s}{'reuse':>9s}"]
    full, reuse = report["stages"]["full"], report["stages"]["reuse"]
    for name in STAGES:
        lines.append(f"  {name:32s}{ms(full[name])}{ms(reuse[name])}")
    lines.append(f"  {'sum':32s}{ms(report['stages']['full_total_s'])}{ms(report['stages']['reuse_total_s'])}")
    lines.append(f"  {'start frame (1 object)':32s}{ms(report['stages']['start_frame_s'])}")
    lines += ["", f"{'forced reuse rate':20s}{'ms/frame':>9s}{'ideal':>9s}{'ratio':>8s}{'deep':>6s}{'peak MiB':>10s}"]
    for row in report["rates"]:
        lines.append(f"  {row['rate']:<6g} (got {row['measured_rate']:.3f}){ms(row['per_frame_s'])}{ms(row['ideal_s'])}"
                     f"{row['ratio']:8.3f}{row['deep_calls']:6d}{row['peak_mib']:10.0f}")
    lines += ["", f"{'objects (rate 0)':20s}{'ms/frame':>9s}{'start':>9s}{'peak MiB':>10s}"]
    for row in report["objects"]:
        lines.append(f"  {row['objects']:<18d}{ms(row['per_frame_s'])}{ms(row['start_frame_s'])}"
                     f"{row['peak_mib']:10.0f}")
    for row in report["reference"]:
        lines += ["", f"reference schedule, {row['objects']} objects: {1000 * row['per_frame_s']:.1f} ms/frame "
                      f"({row['deep_calls']} deep-half runs) vs {1000 * row['batched_per_frame_s']:.1f} ms/frame "
                      f"({row['batched_deep_calls']}): {row['speedup']:.2f}x"]
    lines += ["", "targets:"]
    for t in report["targets"]:
        lines.append(f"  {'PASS' if t['pass'] else 'FAIL'}  {t['name']}: {t['value']:.3f} ({t['limit']})")
    return "\n".join(lines)


def write_report(report: dict, path: Path) -> None:
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
