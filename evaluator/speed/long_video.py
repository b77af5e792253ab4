"""Long videos at flat memory: the logic behind `benchmark.py --long-video SHORT LONG`.

    python benchmark.py --long-video 300 3000 --dev cpu

One video of LONG frames is generated (textured objects drifting over a textured background, with
stretches of stillness, slow and fast motion that repeat every MOTION_PERIOD frames) and written
as JPEG files to a temporary folder, with the first frame's annotation; the SHORT video is its first
SHORT frames. Each length is then segmented in a process of its own (the peak resident set of a
process only grows, so one process cannot measure both) by the evaluation path as evaluate.py runs
it: a VideoSequence over the files, evaluator.runner.run_sequences with the tracker of
models.builder.build_tracker (frames decoded by the prefetch thread, palette PNG masks written,
the sequence record saved). The network is the demo model (weights/demo_synthetic_rn18.pth) or,
with `--model none`, an untrained network on the deterministic random backbone.

For each length the report gives the peak resident set (getrusage's ru_maxrss of that process),
the resident set sampled after the first frame and at 10 %, 50 % and 100 % of the frames, and the
tracking loop's time per frame without the first frame (where the target models are fitted). The
targets: the long video's peak resident set and time per frame within +10 % of the short one's.
Temporary files are removed at the end, also after an error or an interrupt.

`python -m evaluator.speed.long_video SPEC RESULT` is the child process of one length (internal).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from evaluator.speed.benchmark import BenchmarkError, machine_name, target_verdict
from lib.atomic import atomic_write_text, unwritable_reason
from lib.devices import resolve_device, usable_cores
from lib.image_io import write_image, write_label_png

ROOT = Path(__file__).resolve().parents[2]
DEMO_MODEL = ROOT / "weights" / "demo_synthetic_rn18.pth"
SEQUENCE = "long_video"

# The targets: long video / short video, at most.
PEAK_RSS_RATIO_MAX = 1.10
MS_PER_FRAME_RATIO_MAX = 1.10
SAMPLE_FRACTIONS = (0.1, 0.5, 1.0)  # the resident set is also sampled after the first frame
MIN_SHORT = 10
MAX_OBJECTS = 5

# The generated video.
MOTION_PERIOD = 60  # frames: a third still, a third slow, a third fast, over and over
SPEEDS = (0.0, 0.002, 0.012)  # path speed per frame of each third, as a fraction of the frame diagonal
OBJECT_RADIUS = 0.12  # fraction of the shorter side (the benchmark's discs); objects are ellipses 1 x 0.7
SENSOR_NOISE = 2.0  # grey levels
JPEG_BYTES_PER_PIXEL = 0.5  # generous estimate of a frame's JPEG size, for the free-space check


# ------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class LongVideoOptions:
    short: int
    long: int
    device: str = "cpu"
    size: tuple[int, int] = (480, 854)  # (H, W)
    objects: int = 3
    model: str | None = str(DEMO_MODEL)  # None: an untrained network on the random backbone
    backbone: str | None = None  # --ftext: must agree with the model's; None: the model's (untrained: resnet18)
    tau: float = 0.7
    amp: bool = False
    threads: int | None = None
    seed: int = 0
    tmp_dir: str | None = None  # where the temporary folder goes (None: the system's temporary folder)

    def check(self) -> None:
        """Raise BenchmarkError for a request that cannot run, before anything is generated."""
        if self.short < MIN_SHORT or self.long <= self.short:
            raise BenchmarkError(f"--long-video {self.short} {self.long}: give SHORT LONG frame counts with "
                                 f"SHORT >= {MIN_SHORT} and LONG > SHORT, e.g. --long-video 300 3000")
        h, w = self.size
        if h < 32 or w < 32:
            raise BenchmarkError(f"--size {w}x{h}: frames must be at least 32x32 pixels")
        if not 1 <= self.objects <= MAX_OBJECTS:
            raise BenchmarkError(f"--objects {self.objects}: --long-video tracks 1 to {MAX_OBJECTS} objects")
        if self.threads is not None and not 1 <= self.threads <= usable_cores():
            raise BenchmarkError(f"--threads {self.threads}: give 1 to {usable_cores()} (the CPU cores this "
                                 f"process may use), or leave it out for torch's choice")
        if self.seed < 0:
            raise BenchmarkError(f"--seed {self.seed}: seeds are >= 0")
        if self.amp and self.device.startswith("cpu"):
            from models.tracker import AmpUnavailable, check_cpu_bf16

            try:
                check_cpu_bf16()
            except AmpUnavailable as err:
                raise BenchmarkError(str(err)) from None
        try:
            resolve_device(self.device)
        except ValueError as err:
            raise BenchmarkError(str(err)) from None
        self._check_model()
        self._check_tmp_dir()

    def _check_model(self) -> None:
        from models.checkpoint import CheckpointError, load_gfrtm

        if self.model is None:
            return
        try:
            load_gfrtm(self.model, device="cpu", backbone=self.backbone)
        except CheckpointError as err:
            raise BenchmarkError(f"--model: {err}") from None

    def _check_tmp_dir(self) -> None:
        folder = Path(self.tmp_dir) if self.tmp_dir is not None else Path(tempfile.gettempdir())
        if not folder.is_dir():
            raise BenchmarkError(f"--tmp-dir {folder}: not an existing folder")
        reason = unwritable_reason(folder)
        if reason:
            raise BenchmarkError(f"--tmp-dir {folder}: {reason}")
        h, w = self.size
        needed = self.long * h * w * JPEG_BYTES_PER_PIXEL * 1.2  # the frames, then the masks of both runs
        free = shutil.disk_usage(folder).free
        if free < needed:
            raise BenchmarkError(f"--tmp-dir {folder}: {free / 2**30:.1f} GiB free, but {self.long} frames of "
                                 f"{w}x{h} and their masks need about {needed / 2**30:.1f} GiB; "
                                 f"name a folder with more room")


# ------------------------------------------------------------------------------------- the video
class LongVideo:
    """Textured ellipses drifting over a textured background along closed figure-eight paths, each in
    its own column of the frame (so they stay in view however long the video), turning as they move.

    The motion repeats its kinds every MOTION_PERIOD frames (still, slow, fast), so a video's first
    frames have the same mix of motion as the whole. Frame t is made on demand, the same for a seed.
    """

    def __init__(self, size: tuple[int, int], objects: int, seed: int) -> None:
        h, w = size
        self.size, self.objects, self.seed = size, objects, seed
        rng = np.random.default_rng([seed, 1])
        shade = rng.uniform(60, 190, size=(h // 24 + 2, w // 24 + 2, 1)).astype(np.float32)  # blotches
        tint = rng.uniform(-30, 30, size=(h // 48 + 2, w // 48 + 2, 3)).astype(np.float32)  # slow colour change
        grain = rng.uniform(-15, 15, size=(h // 4 + 1, w // 4 + 1, 3)).astype(np.float32)  # fine texture
        self.background = sum(cv2.resize(layer, (w, h), interpolation=cv2.INTER_CUBIC).reshape(h, w, -1)
                              for layer in (shade, tint, grain))
        self.radius = OBJECT_RADIUS * min(h, w)
        column = w / objects
        self.centres = [((k + 0.5) * column, h / 2) for k in range(objects)]
        margin = 1.05 * self.radius
        self.amplitude = (max(0.0, column / 2 - margin), max(0.0, h / 2 - margin - 0.04 * h))
        self.colours = rng.uniform(30, 225, size=(objects, 3)).astype(np.float32)
        self.phases = rng.uniform(0, 2 * np.pi, size=objects)
        diagonal = float(np.hypot(h, w))
        path_scale = max(1.0, self.amplitude[0] + 2 * self.amplitude[1])  # pixels per unit of path parameter
        self.rates = [speed * diagonal / path_scale for speed in SPEEDS]  # path parameter per frame

    def _progress(self, t: int) -> float:
        """The path parameter after t frames: the sum of the per-frame rates of frames 0 .. t-1."""
        third = MOTION_PERIOD // 3
        periods, rest = divmod(t, MOTION_PERIOD)
        total = periods * third * sum(self.rates)
        for k, rate in enumerate(self.rates):
            total += rate * min(max(rest - k * third, 0), third)
        return total

    def pose(self, k: int, t: int) -> tuple[float, float, float]:
        """(x, y, angle) of object k in frame t."""
        s = self._progress(t) + self.phases[k]
        cx, cy = self.centres[k]
        return (cx + self.amplitude[0] * math.sin(s), cy + self.amplitude[1] * math.sin(2 * s),
                0.5 * s + self.phases[k])

    def frame(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame t: ((H,W,3) uint8 RGB image, (H,W) uint8 labels)."""
        h, w = self.size
        noise = np.random.default_rng([self.seed, 2, t]).normal(0, SENSOR_NOISE, size=(h, w, 3))
        image = self.background + noise.astype(np.float32)
        labels = np.zeros((h, w), np.uint8)
        a, b = self.radius, 0.7 * self.radius
        for k in range(self.objects):
            x, y, angle = self.pose(k, t)
            top, bottom = max(0, int(y - a) - 1), min(h, int(y + a) + 2)
            left, right = max(0, int(x - a) - 1), min(w, int(x + a) + 2)
            yy, xx = np.ogrid[top:bottom, left:right]
            c, s = math.cos(angle), math.sin(angle)
            u = (xx - x) * c + (yy - y) * s  # object coordinates: the texture moves and turns with it
            v = (yy - y) * c - (xx - x) * s
            inside = (u / a) ** 2 + (v / b) ** 2 < 1
            shade = 28 * np.sin(u / 3.5) + 14 * np.cos(v / 5.0)
            patch = image[top:bottom, left:right]
            patch[inside] = self.colours[k] + shade[inside][:, None]
            labels[top:bottom, left:right][inside] = k + 1
        return np.clip(image + 0.5, 0, 255).astype(np.uint8), labels


@dataclass(frozen=True)
class VideoFiles:
    frames_dir: str  # 00000.jpg, 00001.jpg, ...
    annotation: str  # the first frame's labels (palette PNG)
    frames: int
    objects: int
    bytes: int  # of the JPEG files
    seconds: float  # to make and write them


def write_video(folder: Path, opts: LongVideoOptions, log: Callable[[str], None]) -> VideoFiles:
    """Write opts.long frames of a LongVideo as JPEG files into folder/frames and the first frame's
    annotation into folder/annotations."""
    started = time.perf_counter()
    video = LongVideo(opts.size, opts.objects, opts.seed)
    frames_dir = folder / "frames"
    annotation = folder / "annotations" / "00000.png"
    size = 0
    step = max(1, opts.long // 10)
    for t in range(opts.long):
        image, labels = video.frame(t)
        path = frames_dir / f"{t:05d}.jpg"
        write_image(path, image)
        size += path.stat().st_size
        if t == 0:
            write_label_png(annotation, labels)
        if (t + 1) % step == 0 or t + 1 == opts.long:
            log(f"  {t + 1}/{opts.long} frames written")
    return VideoFiles(str(frames_dir), str(annotation), opts.long, opts.objects, size,
                      time.perf_counter() - started)


def video_sequence(files: VideoFiles, frames: int):
    """The first `frames` frames of the written video as a VideoSequence (all objects start on frame 0)."""
    from dataset.sequence import VideoSequence

    paths = [Path(files.frames_dir) / f"{t:05d}.jpg" for t in range(frames)]
    ids = list(range(1, files.objects + 1))
    return VideoSequence(SEQUENCE, [p.stem for p in paths], paths, {0: Path(files.annotation)}, ids,
                         {oid: 0 for oid in ids})


# ------------------------------------------------------------------------------------- one evaluation run
@dataclass(frozen=True)
class RunSpec:
    """One evaluation run: the first `frames` frames of `video`, masks and record into `out`."""

    video: VideoFiles
    frames: int
    out: str
    model: str | None
    backbone: str | None
    device: str = "cpu"
    tau: float = 0.7
    amp: bool = False
    threads: int | None = None
    bars: bool = True


def sample_frames(frames: int) -> list[int]:
    """After which frames the memory is sampled: the first, and SAMPLE_FRACTIONS of them."""
    return sorted({1} | {max(1, round(f * frames)) for f in SAMPLE_FRACTIONS})


def rss_mib() -> float | None:
    """This process's resident set now (Linux /proc), None where it cannot be read."""
    try:
        resident = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """This process's peak resident set so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def memory_probe(session) -> dict:
    """The default sample: resident set now and at its peak (and CUDA's allocated memory)."""
    sample = {"rss_mib": rss_mib(), "peak_rss_mib": peak_rss_mib()}
    if session.device.type == "cuda":
        sample["device_mib"] = torch.cuda.memory_allocated(session.device) / 2**20
        sample["device_peak_mib"] = torch.cuda.max_memory_allocated(session.device) / 2**20
    return sample


def evaluate_frames(spec: RunSpec, probe: Callable[[object], dict] = memory_probe) -> dict:
    """Segment the first spec.frames frames as evaluate.py does (evaluator.runner) and return the figures.

    `probe(session)` is called after the frames of sample_frames(), between frames (after the mask
    is written, outside the session's clock); its dict joins that frame's sample.
    """
    from dataset.sequence import check_frames_readable, validate_start_annotations
    from evaluator.run_records import record_path
    from evaluator.runner import run_sequences
    from models.builder import build_tracker, load_network
    from models.config import TrackerConfig

    device = resolve_device(spec.device)
    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    net, trained_with = load_network(Path(spec.model) if spec.model else None, spec.backbone, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    tracker = build_tracker(net, trained_with, TrackerConfig(tau=spec.tau, fast=True, amp=spec.amp), device)
    seq = video_sequence(spec.video, spec.frames)
    check_frames_readable(seq.name, seq.image_paths)
    validate_start_annotations(seq)
    marks = set(sample_frames(spec.frames))
    samples: list[dict] = []
    finished: dict = {}

    def sample(session, result) -> None:  # between frames, after the mask is written: outside the session's clock
        finished["session"] = session
        done = session.stats.frames
        if done in marks:
            samples.append({"frame": done, "tracking_seconds": session.stats.seconds,
                            "cpu_seconds": time.process_time(), "load": os.getloadavg()[0], **probe(session)})

    out = Path(spec.out)
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    run_sequences(tracker, [seq], out, bars=spec.bars, after_frame=sample)
    wall = time.perf_counter() - started
    st = finished["session"].stats
    result = {
        "frames": st.frames,
        "pid": os.getpid(),
        "backbone": net.cfg.backbone,
        "objects": spec.video.objects,
        "tracking_seconds": st.seconds,
        "first_frame_seconds": st.first_frame_seconds,
        "ms_per_frame": 1000 * st.later_frame_seconds,
        # the process's CPU time (tracking, decoding, writing) per frame after the first: the work, without
        # the time the process waited for a CPU on a shared machine
        "cpu_ms_per_frame": 1000 * (samples[-1]["cpu_seconds"] - samples[0]["cpu_seconds"])
        / (samples[-1]["frame"] - samples[0]["frame"]) if st.frames > 1 else float("nan"),
        "fps": st.fps,
        "reuse_rate": st.reuse_rate,
        "deep_calls": st.deep_calls,
        "gate_rows": len(finished["session"].gate_log),
        "masks": sum(1 for _ in (out / seq.name).glob("*.png")),
        "record_bytes": record_path(out, seq.name).stat().st_size,
        "wall_seconds": wall,
        "threads": torch.get_num_threads(),
        "load_start": load_start,
        "load_end": os.getloadavg()[0],
        "samples": samples,
    }
    if device.type == "cuda":
        result["device_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def _child_command(spec_path: Path, result_path: Path) -> list[str]:
    return [sys.executable, "-m", "evaluator.speed.long_video", str(spec_path), str(result_path)]


def _run_in_child(spec: RunSpec, folder: Path) -> dict:
    """evaluate_frames(spec) in a process of its own; its progress bar and line go to stderr.

    The child runs in a session of its own, so a Ctrl-C at the terminal reaches this process alone,
    which then ends the child (SIGTERM: it stops as evaluate.py does) before it says anything."""
    from lib.interrupts import held_signals

    spec_path, result_path = folder / f"spec-{spec.frames}.json", folder / f"result-{spec.frames}.json"
    atomic_write_text(spec_path, json.dumps(asdict(spec)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    proc = None
    try:
        with held_signals():  # not interrupted between starting the child and knowing it; it unblocks them
            proc = subprocess.Popen(_child_command(spec_path, result_path), cwd=ROOT, env=env,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        code = proc.wait()
    finally:
        if proc is not None:
            _stop(proc)
    if code != 0 or not result_path.is_file():
        how = f"was killed by signal {-code}" if code < 0 else f"ended with exit status {code}"
        hint = " (out of memory?)" if code == -9 else ""
        raise BenchmarkError(f"--long-video: the {spec.frames}-frame run {how}{hint}; its messages are above")
    return json.loads(result_path.read_text())


def _stop(proc: subprocess.Popen) -> None:
    """End the child (after an interrupt of this process): SIGTERM, then SIGKILL after 20 s."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def child_main(argv: list[str]) -> int:
    """`python -m evaluator.speed.long_video SPEC RESULT`: one evaluation run, its figures into RESULT."""
    from lib.interrupts import exit_status, sigterm_as_interrupt, unblock_signals

    spec_path, result_path = (Path(a) for a in argv)
    try:
        with sigterm_as_interrupt(), contextlib.redirect_stdout(sys.stderr):
            unblock_signals()  # started with them held (_run_in_child): one sent meanwhile arrives here
            data = json.loads(spec_path.read_text())
            spec = RunSpec(**{**data, "video": VideoFiles(**data["video"])})
            result = evaluate_frames(spec)
            atomic_write_text(result_path, json.dumps(result))
    except KeyboardInterrupt as err:  # the parent says what happened
        return exit_status(err)
    return 0


# ------------------------------------------------------------------------------------- the measurement
def run_long_video(opts: LongVideoOptions, log: Callable[[str], None] = print) -> dict:
    """Check the options, write the video, run both lengths in processes of their own, return the report."""
    from lib.interrupts import held_signals

    opts.check()
    started = time.perf_counter()
    load_start = os.getloadavg()
    folder = Path(tempfile.mkdtemp(prefix="gfrtm-long-video-", dir=opts.tmp_dir))
    try:
        h, w = opts.size
        log(f"writing a {opts.long}-frame {w}x{h} video with {opts.objects} objects to {folder} ...")
        files = write_video(folder / "video", opts, log)
        runs = []
        for frames in (opts.short, opts.long):
            log(f"{frames} frames: evaluation run in a process of its own ...")
            spec = RunSpec(files, frames, str(folder / f"results-{frames}"), opts.model, opts.backbone,
                           opts.device, opts.tau, opts.amp, opts.threads)
            runs.append(_run_in_child(spec, folder))
            run = runs[-1]
            log(f"  {frames} frames: peak RSS {run['peak_rss_mib']:.1f} MiB, {run['ms_per_frame']:.1f} ms/frame")
    finally:
        with held_signals():  # a second Ctrl-C does not leave half the files behind
            shutil.rmtree(folder, ignore_errors=True)
    for run in runs:  # the resident set's change from 10 % of the frames to the end (the first sample is frame 1)
        first, last = run["samples"][1 if len(run["samples"]) > 2 else 0], run["samples"][-1]
        run["rss_growth"] = {"from_frame": first["frame"], "to_frame": last["frame"],
                             "mib": None if first["rss_mib"] is None or last["rss_mib"] is None
                             else last["rss_mib"] - first["rss_mib"]}
    short, long = runs
    ratios = {"peak_rss": long["peak_rss_mib"] / short["peak_rss_mib"],
              "ms_per_frame": long["ms_per_frame"] / short["ms_per_frame"],
              "cpu_ms_per_frame": long["cpu_ms_per_frame"] / short["cpu_ms_per_frame"]}
    report = {
        "settings": {**asdict(opts), "size": list(opts.size), "backbone": short["backbone"],
                     "model": opts.model if opts.model is not None else "untrained (random backbone)",
                     "machine": machine_name(opts.device), "torch": torch.__version__, "threads_used": short["threads"],
                     "load_average_start": list(load_start), "load_average_end": list(os.getloadavg()),
                     "seconds": time.perf_counter() - started},
        "video": {k: v for k, v in asdict(files).items() if k not in ("frames_dir", "annotation")},
        "runs": runs,
        "ratios": ratios,
    }
    report["targets"] = [
        target_verdict(f"peak RSS, {opts.long} / {opts.short} frames", ratios["peak_rss"],
                       f"<= {PEAK_RSS_RATIO_MAX:.2f}", ratios["peak_rss"] <= PEAK_RSS_RATIO_MAX),
        target_verdict(f"ms/frame of the tracking loop, {opts.long} / {opts.short} frames", ratios["ms_per_frame"],
                       f"<= {MS_PER_FRAME_RATIO_MAX:.2f}", ratios["ms_per_frame"] <= MS_PER_FRAME_RATIO_MAX),
    ]
    return report


# ------------------------------------------------------------------------------------- output
def format_long_video_report(report: dict) -> str:
    """The report as plain text, with PASS/FAIL per target."""
    s, video = report["settings"], report["video"]
    h, w = s["size"]
    runs = report["runs"]
    model = s["model"] if s["model"].startswith("untrained") else _shown_path(s["model"])
    lines = [f"G-FRTM long video: {s['backbone']}, {model}, {s['device']} ({s['machine']}), {w}x{h}, "
             f"{video['objects']} objects, TH {s['tau']:g}, torch {s['torch']}, {s['threads_used']} threads",
             f"video: {video['frames']} frames written as JPEG ({video['bytes'] / 2**20:.0f} MiB) in "
             f"{video['seconds']:.0f} s; the {s['short']}-frame video is its first {s['short']} frames; "
             f"each length ran in a process of its own",
             f"load average (1, 5, 15 min): {_load(s['load_average_start'])} at the start, "
             f"{_load(s['load_average_end'])} at the end", "",
             f"{'frames':>8s}{'peak RSS MiB':>14s}{'ms/frame':>10s}{'CPU ms':>8s}{'first ms':>10s}{'fps':>7s}"
             f"{'reuse':>7s}{'deep':>6s}{'masks':>7s}{'record KiB':>12s}{'wall s':>8s}  load (start, end)"]
    for r in runs:
        lines.append(f"{r['frames']:8d}{r['peak_rss_mib']:14.1f}{r['ms_per_frame']:10.1f}{r['cpu_ms_per_frame']:8.1f}"
                     f"{1000 * r['first_frame_seconds']:10.1f}{r['fps']:7.2f}{r['reuse_rate']:7.3f}"
                     f"{r['deep_calls']:6d}{r['masks']:7d}{r['record_bytes'] / 2**10:12.1f}{r['wall_seconds']:8.0f}"
                     f"  {r['load_start']:.2f}, {r['load_end']:.2f}")
    lines += ["", "resident set during the run, MiB (peak so far), after frame:"]
    for r in runs:
        cells = [f"{x['frame']}: {_mib(x['rss_mib'])} ({x['peak_rss_mib']:.1f})" for x in r["samples"]]
        growth = r["rss_growth"]
        change = "n/a" if growth["mib"] is None else f"{growth['mib']:+.1f} MiB"
        lines.append(f"  {r['frames']:>5d} frames   " + "   ".join(cells)
                     + f"   (frame {growth['from_frame']} to {growth['to_frame']}: {change})")
    lines += ["ms/frame of the tracking loop (CPU ms/frame of the process) by part of the video (frames):"]
    for r in runs:
        cells, prev = [], r["samples"][0]
        for x in r["samples"][1:]:
            span = x["frame"] - prev["frame"]
            cells.append(f"{prev['frame'] + 1}-{x['frame']}: "
                         f"{1000 * (x['tracking_seconds'] - prev['tracking_seconds']) / span:.1f} "
                         f"({1000 * (x['cpu_seconds'] - prev['cpu_seconds']) / span:.1f})")
            prev = x
        lines.append(f"  {r['frames']:>5d} frames   " + "   ".join(cells))
    lines += ["", "first ms: the first frame (the target models are fitted); ms/frame: the tracking loop's time per",
              "frame after it; CPU ms: the process's CPU time per frame after it (tracking, decoding, writing),",
              "which leaves out the time it waited for a CPU on a shared machine.", "targets:"]
    for t in report["targets"]:
        lines.append(f"  {'PASS' if t['pass'] else 'FAIL'}  {t['name']}: {t['value']:.3f} ({t['limit']})")
    lines.append(f"  (CPU ms/frame, {s['long']} / {s['short']} frames: {report['ratios']['cpu_ms_per_frame']:.3f})")
    return "\n".join(lines)


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _load(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _shown_path(path: str) -> str:
    with contextlib.suppress(ValueError):
        return str(Path(path).resolve().relative_to(ROOT))
    return path


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
