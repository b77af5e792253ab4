"""Speed benchmark of the tracker (the logic behind benchmark.py).

On generated frames it measures, after a warm-up, the median over repeated runs of:
  a. per-frame time of each stage on the full path (every frame full) and the reuse path
     (every frame reused), with the device synchronised around each stage;
  b. per-frame time of a video with the reuse decision forced at several rates, against the ideal
     mix (1 - r) T_full + r T_reuse of the rate-0 and rate-1 runs;
  c. per-frame time with several objects at reuse rate 0;
  d. optionally the published schedule (TrackerConfig.schedule = "reference": objects one after
     another, the deep backbone half per object; the other speed settings unchanged) on the same frames;
  e. peak memory of each run (resident set on the CPU, max allocated on CUDA);
  f. the multiply-accumulates of each stage (torch's FLOP counter: convolutions and matrix
     products, no elementwise work). Next to each time ratio the report gives the same ratio of
     multiply-accumulates: what the architecture asks for. A time ratio well below its MAC ratio
     is not to be expected (it needs the bigger configuration to compute more efficiently);
  g. the merge of the objects' maps alone, per object count (time_merge).
Configurations are measured in rounds (each runs once per round; warm-up first), and every ratio
(mix against ideal, objects, reference schedule, reuse path against shallow half) is taken within a
round and then the median over rounds: a machine whose speed drifts over minutes (shared or
throttled CPUs) then shifts both sides of a ratio alike. Per-frame times leave out frame 0, where the objects start (reported separately).
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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

from torch.utils.flop_counter import FlopCounterMode

import numpy as np
import torch
import torch.nn.functional as F

from lib.atomic import atomic_write_text
from lib.devices import resolve_device, usable_cores
from models.backbone import build_backbone
from models.config import NetworkConfig, TrackerConfig
from models.gfrtm import GFRTM
from models.merge import merge_objects
from models.session import TrackingSession
from models.tracker import STAGES, AmpUnavailable, Tracker, check_cpu_bf16

# The targets: (name, limit, comparison), checked on the measured ratios.
MIX_TOLERANCE = 0.05  # |measured / ideal mix - 1| at every forced reuse rate
REUSE_OVER_SHALLOW_MAX = 1.35  # reuse path / shallow backbone half
FIVE_OVER_ONE_OBJECT_MAX = 2.0  # per-frame time with 5 objects / with 1
REFERENCE_SPEEDUP_MIN = 1.25  # reference schedule / batched full path, 3 objects
REFERENCE_OBJECTS = 3
# Time per multiply-accumulate of the shallow refinement and upsampler over the shallow backbone half's,
# one object on the full path: both are convolutions at strides 4 to 8, so they should run at one pace.
REFINE_PACE_MAX = 1.15
# The merge of the objects' maps into the label map, ms at most: for one object, and per further object.
MERGE_FIRST_MS, MERGE_FURTHER_MS = 2.0, 2.0
MERGE_CALLS, MERGE_WARMUP = 15, 5  # timed and untimed calls per object count (a video merges every frame)

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
    compare_bf16: bool = False  # CPU: only the stage timings, float32 against bfloat16

    def check(self) -> None:
        """Raise BenchmarkError for an option that makes no sense, before anything is built or measured."""
        h, w = self.size
        if h < 32 or w < 32:
            raise BenchmarkError(f"--size {w}x{h}: frames must be at least 32x32 pixels")
        if self.frames < 3 or self.repeats < 1 or self.warmup_frames < 2:
            raise BenchmarkError(f"--frames ({self.frames}) must be >= 3, --repeats ({self.repeats}) >= 1 and "
                                 f"--warmup-frames ({self.warmup_frames}) >= 2")
        if any(not 0.0 <= r <= 1.0 for r in self.rates) or 0.0 not in self.rates or 1.0 not in self.rates:
            raise BenchmarkError(f"--rates {' '.join(f'{r:g}' for r in self.rates)}: rates lie in [0, 1] and must "
                                 f"include 0 and 1 (the ideal mix is built from them)")
        if any(n < 1 for n in self.object_counts) or 1 not in self.object_counts:
            raise BenchmarkError(f"--objects {' '.join(map(str, self.object_counts))}: counts are positive and "
                                 f"must include 1")
        if self.threads is not None and self.threads < 1:
            raise BenchmarkError(f"--threads {self.threads}: give at least 1 (or leave it out for torch's choice)")
        cores = usable_cores()
        if self.threads is not None and self.threads > cores:  # extra threads only wait for each other
            raise BenchmarkError(f"--threads {self.threads}: this process can use {cores} CPU core(s); give at most "
                                 f"{cores} (more threads than cores measure the waiting, not the network)")
        if self.seed < 0:
            raise BenchmarkError(f"--seed {self.seed}: seeds are >= 0")
        if self.compare_bf16 and (self.amp or not self.device.startswith("cpu")):
            raise BenchmarkError("--compare-bf16 times CPU bfloat16 against float32: use it with --dev cpu "
                                 "and without --amp")
        if self.amp and self.device.startswith("cpu"):
            try:
                check_cpu_bf16()
            except AmpUnavailable as err:
                raise BenchmarkError(f"{err} (--compare-bf16 measures both precisions on any CPU)") from None
        try:
            resolve_device(self.device)
        except ValueError as err:
            raise BenchmarkError(str(err)) from None


# ------------------------------------------------------------------------------------- inputs
class GeneratedVideo:
    """Drifting textured discs on a smooth background, one object per disc, frames made on demand
    (deterministic per seed and frame index), so no video is held in memory.

    `frames(n)` yields (index, (H,W,3) uint8) for the first n frames and `start_masks(i)` gives the
    discs' masks on frame 0 (what a session's step takes on frame 0). Making a frame happens before the
    session receives it, outside its clock.
    """

    def __init__(self, size: tuple[int, int], objects: int, seed: int) -> None:
        h, w = size
        self.size, self.seed = size, seed
        rng = np.random.default_rng(seed)
        coarse = rng.integers(40, 200, size=(h // 16 + 2, w // 16 + 2, 3)).astype(np.float32)
        self.background = np.kron(coarse, np.ones((16, 16, 1), np.float32))[:h, :w]
        self.radius = OBJECT_RADIUS * min(h, w)
        self.centres = [((k % 3 + 1) * h / 4, (k // 3 + 1) * w / (objects // 3 + 2)) for k in range(objects)]
        self.colours = rng.integers(0, 255, size=(objects, 3))
        self.first_masks = {k + 1: self._disc(k, 0) for k in range(objects)}

    def _disc(self, k: int, t: int) -> np.ndarray:
        h, w = self.size
        yy, xx = np.ogrid[0:h, 0:w]
        cy, cx = self.centres[k]
        return (yy - cy) ** 2 + (xx - cx - OBJECT_SPEED * w * t) ** 2 < self.radius ** 2

    def frame(self, t: int) -> np.ndarray:
        noise = np.random.default_rng([self.seed, t]).normal(0, 2, size=self.background.shape).astype(np.float32)
        image = self.background + noise
        xx = np.arange(self.size[1], dtype=np.float32)[None, :].repeat(self.size[0], axis=0)
        for k, colour in enumerate(self.colours):
            inside = self._disc(k, t)
            image[inside] = colour + 20 * np.sin(xx[inside] / 5.0)[:, None]
        return np.clip(image, 0, 255).astype(np.uint8)

    def frames(self, n: int) -> Iterator[tuple[int, np.ndarray]]:
        return ((t, self.frame(t)) for t in range(n))

    def start_masks(self, index: int) -> dict[int, np.ndarray]:
        return dict(self.first_masks) if index == 0 else {}


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


class StageMacs:
    """StageTimer that counts multiply-accumulates per stage and frame (FLOP counter / 2)."""

    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)
        self.frames: list[dict[str, float]] = []

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        counter = FlopCounterMode(display=False)
        try:
            with counter:
                yield
        finally:
            self.current[name] += counter.get_total_flops() / 2

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
    """One run of a configuration, or the medians over its rounds (with each round's values kept)."""

    per_frame_s: float  # frames 1..T-1
    start_frame_s: float  # frame 0 (objects start)
    reuse_rate: float
    deep_calls: int
    peak_mib: float
    stages_s: dict[str, float] = field(default_factory=dict)  # per frame, when timed by stage
    rounds: list[RunResult] = field(default_factory=list)  # the runs behind the medians


@dataclass(frozen=True)
class Config:
    """One measured configuration: objects in the video, forced reuse rate, schedule, per-stage timing."""

    objects: int
    rate: float
    schedule: str = "batched"
    by_stage: bool = False
    bf16: bool = False  # CPU bfloat16 (TrackerConfig.amp on the CPU)


class Bench:
    """Builds the tracker once and runs configurations on generated frames."""

    def __init__(self, opts: BenchmarkOptions) -> None:
        self.opts = opts
        self.device = torch.device(opts.device)
        torch.manual_seed(opts.seed)
        self.backbone = build_backbone(opts.backbone, "none", device=self.device)
        self.net = GFRTM(NetworkConfig(backbone=opts.backbone)).to(self.device).eval()
        self.memory = PeakMemory(self.device)
        self._videos: dict[int, GeneratedVideo] = {}
        self._trackers: dict[tuple[TrackerConfig, bool], Tracker] = {}

    def video(self, objects: int) -> GeneratedVideo:
        if objects not in self._videos:
            self._videos[objects] = GeneratedVideo(self.opts.size, objects, self.opts.seed)
        return self._videos[objects]

    def run_interleaved(self, configs: dict[str, Config], log: Callable[[str], None]) -> dict[str, RunResult]:
        """Each configuration warmed up on the first frames, then `repeats` rounds in which every
        configuration runs the whole video once (so a machine that slows down or speeds up over
        minutes affects all alike); per configuration the median of its runs."""
        for config in configs.values():
            self._run_once(config, self.opts.warmup_frames, timed=False)
        runs: dict[str, list[RunResult]] = {label: [] for label in configs}
        for round_index in range(self.opts.repeats):
            for label, config in configs.items():
                runs[label].append(self._run_once(config, self.opts.frames))
                log(f"  round {round_index + 1}/{self.opts.repeats}, {label}: "
                    f"{1000 * runs[label][-1].per_frame_s:.1f} ms/frame")
        return {label: _median_result(results) for label, results in runs.items()}

    def _run_once(self, config: Config, frames: int, timed: bool = True) -> RunResult | None:
        video = self.video(config.objects)
        cfg = TrackerConfig(tau=0.7, amp=self.opts.amp, schedule=config.schedule)
        clock = StageClock(self.device) if config.by_stage and timed else None
        self.memory.reset()
        session = self._track(cfg, config.rate, video.frames(frames), video.start_masks, clock, config.bf16)
        if not timed:
            return None
        peak = self.memory.read()
        stages = _stage_means(clock.frames) if clock is not None else {}
        st = session.stats
        return RunResult(st.later_frame_seconds, st.first_frame_seconds, st.reuse_rate,
                         st.deep_calls, peak, stages)

    def count_macs(self, objects: int, rate: float) -> dict[str, float]:
        """Multiply-accumulates per stage, averaged over the frames after the start frame of the first
        warmup_frames frames (the count does not depend on the pixels; no timing)."""
        video = self.video(objects)
        counter = StageMacs()
        self._track(TrackerConfig(tau=0.7, amp=self.opts.amp), rate, video.frames(self.opts.warmup_frames),
                    video.start_masks, counter)
        return _stage_means(counter.frames)

    def _track(self, cfg: TrackerConfig, rate: float, frames, start_masks,
               clock: StageClock | StageMacs | None, bf16: bool = False) -> TrackingSession:
        """One session over the frames, the gate's decisions forced at `rate`; returns the session (its stats)."""
        if bf16:  # CPU bfloat16 (Tracker, cfg.amp): measured here on any CPU, native bfloat16 or not
            cfg = replace(cfg, amp=True)
        key = (cfg, bf16)
        if key not in self._trackers:  # a bfloat16 tracker converts copies of the weights: once
            self._trackers[key] = Tracker(self.backbone, self.net, cfg, allow_emulated_bf16=bf16)
        session = self._trackers[key].session(force_reuse=reuse_pattern(rate), timer=clock)
        for index, image in frames:
            session.step(image, start_masks(index))
            if clock is not None:
                clock.end_frame()
        _synchronize(self.device)
        return session


def prepare(opts: BenchmarkOptions) -> Bench:
    """Check the options, set torch's threads and cuDNN autotuning, build the network."""
    opts.check()
    if opts.threads is not None:
        torch.set_num_threads(opts.threads)
    if opts.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    return Bench(opts)


def _stage_means(frames: list[dict[str, float]]) -> dict[str, float]:
    """Per stage, the mean over the frames after the start frame (frame 0 fits the target models)."""
    counted = frames[1:]
    return {name: sum(f.get(name, 0.0) for f in counted) / len(counted) for name in STAGES}


def _median(values) -> float:
    return float(statistics.median(values))


def _median_result(runs: list[RunResult]) -> RunResult:
    stages = {k: _median([r.stages_s[k] for r in runs]) for k in runs[0].stages_s}
    return RunResult(_median([r.per_frame_s for r in runs]), _median([r.start_frame_s for r in runs]),
                     runs[0].reuse_rate, runs[0].deep_calls, max(r.peak_mib for r in runs), stages, runs)


def _per_round(ratio: Callable[..., float], *results: RunResult) -> float:
    """Median over rounds of a ratio of runs from the same round (configurations of one round run
    minutes apart at most, so a drifting machine cancels out of their ratio)."""
    return _median([ratio(*runs) for runs in zip(*(r.rounds for r in results))])


# ------------------------------------------------------------------------------------- the benchmark
def run_benchmark(opts: BenchmarkOptions, log: Callable[[str], None] = print) -> dict:
    """Run every part and return the report (see module docstring); `log` gets progress lines."""
    bench = prepare(opts)
    started = time.perf_counter()

    log("stage timings (full path, reuse path):")
    staged = bench.run_interleaved({"full path": Config(1, 0.0, by_stage=True),
                                    "reuse path": Config(1, 1.0, by_stage=True)}, log)
    stage_full, stage_reuse = staged["full path"], staged["reuse path"]
    configs = {f"reuse rate {r:g}": Config(1, r) for r in opts.rates}
    counts = sorted(set(opts.object_counts) | ({REFERENCE_OBJECTS} if opts.reference else set()))
    configs.update({f"{n} objects": Config(n, 0.0) for n in counts if n != 1})
    if opts.reference:
        configs["reference schedule"] = Config(REFERENCE_OBJECTS, 0.0, "reference")
    log("whole videos (rates, object counts" + (", reference schedule" if opts.reference else "") + "):")
    measured = bench.run_interleaved(configs, log)
    by_rate = {r: measured[f"reuse rate {r:g}"] for r in opts.rates}
    full, reuse = by_rate[0.0], by_rate[1.0]
    rates = []
    for r, res in by_rate.items():
        def ideal(t_full: RunResult, t_reuse: RunResult, rate: float = res.reuse_rate) -> float:
            return (1 - rate) * t_full.per_frame_s + rate * t_reuse.per_frame_s

        rates.append({"rate": r, "measured_rate": res.reuse_rate, "per_frame_s": res.per_frame_s,
                      "ideal_s": ideal(full, reuse),
                      "ratio": _per_round(lambda mix, f, u: mix.per_frame_s / ideal(f, u), res, full, reuse),
                      "rounds_s": [run.per_frame_s for run in res.rounds], "deep_calls": res.deep_calls,
                      "peak_mib": res.peak_mib})
    by_count = {n: full if n == 1 else measured[f"{n} objects"] for n in counts}
    objects = [{"objects": n, "per_frame_s": by_count[n].per_frame_s, "start_frame_s": by_count[n].start_frame_s,
                "over_one": _per_round(lambda many, one: many.per_frame_s / one.per_frame_s, by_count[n], full),
                "rounds_s": [run.per_frame_s for run in by_count[n].rounds], "peak_mib": by_count[n].peak_mib}
               for n in sorted(opts.object_counts)]
    reference = []
    if opts.reference:
        ref, batched = measured["reference schedule"], by_count[REFERENCE_OBJECTS]
        reference.append({"objects": REFERENCE_OBJECTS, "per_frame_s": ref.per_frame_s,
                          "batched_per_frame_s": batched.per_frame_s,
                          "speedup": _per_round(lambda a, b: a.per_frame_s / b.per_frame_s, ref, batched),
                          "rounds_s": [run.per_frame_s for run in ref.rounds], "deep_calls": ref.deep_calls,
                          "batched_deep_calls": batched.deep_calls, "peak_mib": ref.peak_mib})
    log("  counting multiply-accumulates ...")
    macs = {"full": bench.count_macs(1, 0.0), "reuse": bench.count_macs(1, 1.0)}
    for row in objects:
        per_stage = macs["full"] if row["objects"] == 1 else bench.count_macs(row["objects"], 0.0)
        row["macs"] = sum(per_stage.values())
    report = {
        "settings": _settings(opts, bench.memory.kind),
        "macs": macs,
        "stages": {"full": stage_full.stages_s, "reuse": stage_reuse.stages_s,
                   "full_total_s": sum(stage_full.stages_s.values()),
                   "reuse_total_s": sum(stage_reuse.stages_s.values()),
                   "full_per_frame_s": stage_full.per_frame_s, "reuse_per_frame_s": stage_reuse.per_frame_s,
                   "reuse_over_shallow": _per_round(lambda run: run.per_frame_s / run.stages_s["shallow"], stage_reuse),
                   "start_frame_s": stage_full.start_frame_s},
        "rates": rates,
        "objects": objects,
        "reference": reference,
        "merge": time_merge(opts, bench.device, log),
    }
    report["targets"] = check_targets(report, opts)
    report["settings"]["benchmark_seconds"] = time.perf_counter() - started
    return report


def time_merge(opts: BenchmarkOptions, device: torch.device, log: Callable[[str], None]) -> list[dict]:
    """The merge alone (models.merge.merge_objects with the objects' ids, as a session calls it) per object count:
    median ms of MERGE_CALLS calls (after MERGE_WARMUP untimed ones) on probability maps like a network's (sigmoids of smooth logits with
    saturated areas and soft boundaries), the device synchronised around each call."""
    log("  timing the merge ...")
    generator = torch.Generator().manual_seed(opts.seed)
    h, w = opts.size
    rows = []
    for n in sorted(opts.object_counts):
        coarse = torch.randn(n, 1, max(h // 16, 1), max(w // 16, 1), generator=generator) * 12
        probs = torch.sigmoid(F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[:, 0])
        probs = probs.to(device).contiguous()
        ids = list(range(1, n + 1))
        for _ in range(MERGE_WARMUP):
            merge_objects(probs, ids)
        times = []
        for _ in range(MERGE_CALLS):
            _synchronize(device)
            start = time.perf_counter()
            merge_objects(probs, ids)
            _synchronize(device)
            times.append(time.perf_counter() - start)
        rows.append({"objects": n, "ms": 1000 * _median(times), "limit_ms": MERGE_FIRST_MS + MERGE_FURTHER_MS * (n - 1)})
    return rows


def check_targets(report: dict, opts: BenchmarkOptions) -> list[dict]:
    """The issue's targets as measured ratios with their limits and verdicts."""
    targets = []
    for row in report["rates"]:
        targets.append(target_verdict(f"reuse rate {row['rate']:g}: measured / ideal mix", row["ratio"],
                               f"within {MIX_TOLERANCE:.0%}", abs(row["ratio"] - 1) <= MIX_TOLERANCE))
    macs = report["macs"]
    ratio = report["stages"]["reuse_over_shallow"]
    mac_ratio = sum(macs["reuse"].values()) / macs["reuse"]["shallow"]
    targets.append(target_verdict("reuse path / shallow backbone half", ratio, f"<= {REUSE_OVER_SHALLOW_MAX}",
                           ratio <= REUSE_OVER_SHALLOW_MAX, mac_ratio))
    full_s, full_macs = report["stages"]["full"], macs["full"]
    if full_macs["refine_shallow"] > 0 and full_macs["shallow"] > 0:
        pace = (full_s["refine_shallow"] / full_macs["refine_shallow"]) / (full_s["shallow"] / full_macs["shallow"])
        targets.append(target_verdict("refine_shallow / shallow backbone half, time per MAC", pace,
                                      f"<= {REFINE_PACE_MAX}", pace <= REFINE_PACE_MAX))
    counts = {row["objects"]: row for row in report["objects"]}
    if 5 in counts:
        ratio = counts[5]["over_one"]
        mac_ratio = counts[5]["macs"] / counts[1]["macs"]
        targets.append(target_verdict("5 objects / 1 object", ratio, f"<= {FIVE_OVER_ONE_OBJECT_MAX}",
                               ratio <= FIVE_OVER_ONE_OBJECT_MAX, mac_ratio))
    for row in report["reference"]:
        targets.append(target_verdict(f"reference schedule / full path, {row['objects']} objects", row["speedup"],
                               f">= {REFERENCE_SPEEDUP_MIN}", row["speedup"] >= REFERENCE_SPEEDUP_MIN))
    for row in report["merge"]:
        targets.append(target_verdict(f"merge, {row['objects']} object(s), ms", row["ms"], f"<= {row['limit_ms']:g}",
                                      row["ms"] <= row["limit_ms"]))
    return targets


def target_verdict(name: str, value: float, limit: str, passed: bool, mac_ratio: float | None = None) -> dict:
    """mac_ratio: the same ratio of the two configurations' multiply-accumulates, where one applies."""
    return {"name": name, "value": value, "limit": limit, "pass": bool(passed), "mac_ratio": mac_ratio}


def _settings(opts: BenchmarkOptions, memory_kind: str) -> dict:
    settings = asdict(opts)
    settings.update({
        "torch": torch.__version__,
        "threads_used": torch.get_num_threads(),
        "machine": machine_name(opts.device),
        "memory": memory_kind,
        "weights": "random backbone ('none'), untrained network",
    })
    return settings


def machine_name(device: str) -> str:
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
             "", f"{'stage (per frame)':34s}{'full ms':>9s}{'reuse ms':>9s}{'full GMAC':>11s}{'reuse GMAC':>11s}"]
    full, reuse = report["stages"]["full"], report["stages"]["reuse"]
    macs = report["macs"]
    gmac = lambda count: f"{count / 1e9:11.2f}"  # noqa: E731
    for name in STAGES:
        lines.append(f"  {name:32s}{ms(full[name])}{ms(reuse[name])}{gmac(macs['full'][name])}"
                     f"{gmac(macs['reuse'][name])}")
    lines.append(f"  {'sum':32s}{ms(report['stages']['full_total_s'])}{ms(report['stages']['reuse_total_s'])}"
                 f"{gmac(sum(macs['full'].values()))}{gmac(sum(macs['reuse'].values()))}")
    lines.append(f"  {'timed run (with stage syncs)':32s}{ms(report['stages']['full_per_frame_s'])}"
                 f"{ms(report['stages']['reuse_per_frame_s'])}")
    lines.append(f"  {'start frame (1 object)':32s}{ms(report['stages']['start_frame_s'])}")
    rounds = lambda row: " ".join(f"{1000 * t:.0f}" for t in row["rounds_s"])  # noqa: E731
    lines += ["", f"{'forced reuse rate':20s}{'ms/frame':>9s}{'ideal':>9s}{'ratio':>8s}{'deep':>6s}{'peak MiB':>10s}"
                  f"  rounds (ms/frame)"]
    for row in report["rates"]:
        lines.append(f"  {row['rate']:<6g} (got {row['measured_rate']:.3f}){ms(row['per_frame_s'])}{ms(row['ideal_s'])}"
                     f"{row['ratio']:8.3f}{row['deep_calls']:6d}{row['peak_mib']:10.0f}  {rounds(row)}")
    lines += ["", f"{'objects (rate 0)':20s}{'ms/frame':>9s}{'x one':>8s}{'start':>9s}{'peak MiB':>10s}{'GMAC':>9s}"
                  f"  rounds (ms/frame)"]
    for row in report["objects"]:
        lines.append(f"  {row['objects']:<18d}{ms(row['per_frame_s'])}{row['over_one']:8.3f}{ms(row['start_frame_s'])}"
                     f"{row['peak_mib']:10.0f}{row['macs'] / 1e9:9.2f}  {rounds(row)}")
    lines += ["", "merge (" + ", ".join(f"{row['objects']} object(s) {row['ms']:.1f} ms" for row in report["merge"])
              + f"; median of {MERGE_CALLS} calls)"]
    for row in report["reference"]:
        lines += ["", f"reference schedule, {row['objects']} objects: {1000 * row['per_frame_s']:.1f} ms/frame "
                      f"({row['deep_calls']} deep-half runs) vs {1000 * row['batched_per_frame_s']:.1f} ms/frame "
                      f"({row['batched_deep_calls']}): {row['speedup']:.2f}x; rounds {rounds(row)}"]
    lines += ["", "Ratios are medians over rounds of ratios within a round. MAC ratio: the same ratio of",
              "multiply-accumulates, what the architecture asks for.", "targets:"]
    for t in report["targets"]:
        ratio = f", MAC ratio {t['mac_ratio']:.3f}" if t["mac_ratio"] is not None else ""
        lines.append(f"  {'PASS' if t['pass'] else 'FAIL'}  {t['name']}: {t['value']:.3f} ({t['limit']}{ratio})")
    return "\n".join(lines)


def write_report(report: dict, path: Path) -> None:
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
