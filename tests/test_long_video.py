"""Long videos at flat memory: what the evaluation path keeps does not grow with the video (beyond the
gate decisions, which the gate log needs), and `benchmark.py --long-video` (options, report, Ctrl-C)."""
from __future__ import annotations

import gc
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
import types
from collections import deque
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

import benchmark
import evaluator.speed.long_video as long_video
from evaluator.run_records import SequenceRecord, load_sequence_record, record_path, save_sequence_record
from models.tracker import GateRecord, TrackStats
from tests.test_train_step import one_torch_thread  # noqa: F401  (autouse: one torch thread in this module)

SHORT, LONG = 20, 200  # frames; the short video is the long one's first SHORT frames
SIZE = (96, 160)  # (H, W): a label map is 15 KB, so one kept per frame would add 2.7 MB from frame 20 to 200
OBJECTS = 2
# Tensor bytes that may differ between the two frames: the current frame's own tensors (held by the runner's
# loop until the next frame) differ between a frame that took the full path and one that reused.
TENSOR_SLACK = 10 * SIZE[0] * SIZE[1] * 4  # ten float maps of a frame: 600 KB, against 2.7 MB for a label map a frame
HEAP_SLACK = 6 * 1024  # bytes of Python heap besides the gate decisions (about 1 KB seen): 34 bytes a frame


# ---------------------------------------------------------------------------------------------- what is kept
def _container_sizes(roots: dict[str, object], depth: int = 10) -> dict[str, int]:
    """Path -> length of every list, tuple, dict, set and deque reachable from `roots` through attributes,
    container items (the first 64 of each) and the local variables of suspended generators."""
    sizes: dict[str, int] = {}
    seen: set[int] = set()
    leaves = (str, bytes, int, float, bool, type(None), torch.Tensor, torch.device, torch.dtype, type,
              types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType)

    def visit(obj, path: str, left: int) -> None:
        if left < 0 or id(obj) in seen or isinstance(obj, leaves):
            return
        seen.add(id(obj))
        if isinstance(obj, (list, tuple, dict, set, frozenset, deque)):
            sizes[path] = len(obj)
            items = list(obj.items()) if isinstance(obj, dict) else list(enumerate(obj))
            for key, value in items[:64]:
                visit(value, f"{path}[{key!r}]", left - 1)
            return
        if isinstance(obj, types.GeneratorType):
            attributes = obj.gi_frame.f_locals if obj.gi_frame is not None else {}
        else:
            attributes = dict(getattr(obj, "__dict__", {}))
            for slot in getattr(type(obj), "__slots__", ()):
                if hasattr(obj, slot):
                    attributes[slot] = getattr(obj, slot)
        for key, value in attributes.items():
            visit(value, f"{path}.{key}", left - 1)

    for name, root in roots.items():
        visit(root, name, depth)
    return sizes


def _run_state(session) -> dict[str, object]:
    """What a run keeps between frames: the session (its objects and their target models), and the local
    variables of the run's functions on the stack (evaluate_frames, run_sequences, _track_one with the
    prefetch generator and its queue, ...)."""
    roots: dict[str, object] = {"session": session}
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename.startswith(str(long_video.ROOT)) and frame.f_code.co_filename != __file__:
            roots[f"{frame.f_code.co_name}()"] = dict(frame.f_locals)
        frame = frame.f_back
    return roots


def _tensor_bytes() -> int:
    """Bytes of the storages of all live tensors (each storage once; a sparse tensor's indices and values)."""
    storages = {}
    for obj in gc.get_objects():
        if issubclass(type(obj), torch.Tensor):  # type(): isinstance would touch deprecated module proxies
            for dense in (obj._indices(), obj._values()) if obj.is_sparse else (obj,):
                storage = dense.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def _gate_log_bytes(log: list[GateRecord]) -> int:
    """Python heap held by the gate log: the list, its records, their floats and frame numbers."""
    frames = {id(g.frame): g.frame for g in log if not -5 <= g.frame <= 256}  # small ints are shared
    return (sys.getsizeof(log) + sum(sys.getsizeof(g) + sys.getsizeof(g.p_reuse) for g in log)
            + sum(sys.getsizeof(f) for f in frames.values()))


def test_what_the_evaluation_path_keeps_does_not_grow_with_the_video(tmp_path):
    """One run of LONG frames through the evaluation path (evaluate_frames: evaluator.runner.run_sequences
    with the demo model, frames prefetched from JPEG files, masks written, the record saved), measured
    after frame SHORT (the end of the short video) and after frame LONG: the containers of the run's state
    (the session with the objects' target models, the runner's and the prefetch's locals)
    keep their lengths except the gate log, the live tensors differ by less than the current frame's own,
    and the Python heap grows by the gate decisions only. Deterministic: no resident-set threshold."""
    opts = long_video.LongVideoOptions(SHORT, LONG, size=SIZE, objects=OBJECTS)
    files = long_video.write_video(tmp_path / "video", opts, lambda line: None)
    assert long_video.sample_frames(LONG) == [1, SHORT, LONG // 2, LONG]
    kept = {}

    # Not counted: frames decoded ahead (a bounded queue) and what this test and tracemalloc allocate.
    ignored = [tracemalloc.Filter(False, pattern, all_frames=True)
               for pattern in ("*/lib/prefetch.py", __file__, tracemalloc.__file__)]
    tracemalloc.Snapshot([], 1).filter_traces(ignored)  # compiles the patterns before tracing starts

    def probe(session) -> dict:
        frames = session.stats.frames
        if frames in (SHORT, LONG):
            gc.collect()
            sys._clear_type_cache()  # its 4096 entries hold attribute names made on the fly (f-strings)
            heap = sum(trace.size for trace in tracemalloc.take_snapshot().filter_traces(ignored).traces)
            kept[frames] = {"heap": heap, "gate": _gate_log_bytes(session.gate_log), "tensors": _tensor_bytes(),
                            "containers": _container_sizes(_run_state(session)), "gate_rows": len(session.gate_log)}
        return {}

    spec = long_video.RunSpec(files, LONG, str(tmp_path / "results"), opts.model, None, threads=1)
    tracemalloc.start(4)  # enough frames to see the prefetch thread in a decoded frame's traceback
    try:
        result = long_video.evaluate_frames(spec, probe)
    finally:
        tracemalloc.stop()
    short, long = kept[SHORT], kept[LONG]

    # grown by more than a few items over LONG - SHORT frames (the prefetch queue holds 0 to 4 frames, the
    # samples list gains one per sample)
    grown = {path: (short["containers"][path], size) for path, size in long["containers"].items()
             if size > short["containers"].get(path, size) + 8}
    assert grown == {"session.gate_log": ((SHORT - 1) * OBJECTS, (LONG - 1) * OBJECTS)}
    walked = set(long["containers"])  # the walk reached the target models' memories and the prefetch queue
    assert any(".target_models[1].memory." in path for path in walked)
    assert any(path.endswith(".buffer.queue") for path in walked)
    assert short["gate_rows"] == (SHORT - 1) * OBJECTS and long["gate_rows"] == (LONG - 1) * OBJECTS
    assert not [name for name, value in vars(TrackStats()).items() if isinstance(value, (list, dict))]

    assert long["tensors"] - short["tensors"] <= TENSOR_SLACK, (short["tensors"], long["tensors"])
    other = (long["heap"] - long["gate"]) - (short["heap"] - short["gate"])
    assert other <= HEAP_SLACK, f"{other} bytes of Python heap beyond the gate decisions from frame {SHORT} to {LONG}"
    # the gate decisions: about 100 bytes per object and frame (a slotted GateRecord and its float)
    assert (long["gate"] - short["gate"]) / (long["gate_rows"] - short["gate_rows"]) < 120

    assert result["frames"] == result["masks"] == LONG and result["gate_rows"] == (LONG - 1) * OBJECTS
    record = load_sequence_record(Path(spec.out), long_video.SEQUENCE)
    assert record.frames == LONG and len(record.gate) == (LONG - 1) * OBJECTS
    assert [s["frame"] for s in result["samples"]] == [1, SHORT, LONG // 2, LONG]


def test_the_sequence_record_is_written_as_before(tmp_path):
    """save_sequence_record streams the file; its text is what json.dumps(asdict(record)) gave."""
    rng = random.Random(0)
    gate = [(f, o, rng.random(), int(rng.random() > 0.5)) for f in range(1, 300) for o in (1, 2, 3)]
    gate[0] = (1, 1, 1e-9, 0)
    record = SequenceRecord("bmx-trees", 300, 12.345678901234, len(gate), 400, 250, gate)
    save_sequence_record(tmp_path, record)
    assert record_path(tmp_path, "bmx-trees").read_text() == json.dumps(asdict(record))
    assert load_sequence_record(tmp_path, "bmx-trees") == record


def test_a_video_frame_is_the_same_for_a_seed_and_its_objects_stay_in_view():
    video = long_video.LongVideo(SIZE, 3, seed=4)
    image, labels = video.frame(500)
    again, labels_again = long_video.LongVideo(SIZE, 3, seed=4).frame(500)
    assert (image == again).all() and (labels == labels_again).all()
    for t in (0, 37, 1234, 5000, 100000):
        _, labels = video.frame(t)
        areas = [int((labels == k).sum()) for k in (1, 2, 3)]
        assert all(270 < area < 310 for area in areas), (t, areas)  # whole ellipses (11.5 x 8 pixels): in view


# ---------------------------------------------------------------------------------------------- benchmark.py
@pytest.mark.parametrize("argv, words", [
    (["--long-video", "300"], ["--long-video 300", "two frame counts"]),
    (["--long-video", "300", "x"], ["two frame counts"]),
    (["--long-video", "300", "300"], ["LONG > SHORT"]),
    (["--long-video", "5", "50"], ["SHORT >= 10"]),
    (["--long-video", "30", "300", "--frames", "10"], ["--frames", "not taken by --long-video"]),
    (["--long-video", "30", "300", "--compare-bf16", "--rates", "0", "1"], ["--rates, --compare-bf16"]),
    (["--long-video", "30", "300", "--objects", "2", "3"], ["one object count"]),
    (["--long-video", "30", "300", "--objects", "9"], ["--objects 9", "1 to 5"]),
    (["--long-video", "30", "300", "--size", "16x16"], ["--size 16x16"]),
    (["--long-video", "30", "300", "--threads", "0"], ["--threads 0"]),
    (["--long-video", "30", "300", "--amp"], ["--amp", "bfloat16", "CUDA"]),
    (["--long-video", "30", "300", "--dev", "tpu"], ["--dev tpu"]),
    (["--long-video", "30", "300", "--model", "no/such.pth"], ["--model", "does not exist"]),
    (["--long-video", "30", "300", "--ftext", "resnet101"], ["--model", "is for resnet18"]),
    (["--long-video", "30", "300", "--model", "none", "--tmp-dir", "no/such/folder"], ["--tmp-dir", "not an existing"]),
    (["--long-video", "30", "100000000", "--model", "none"], ["GiB free", "more room"]),
    (["--model", "none"], ["--model", "only taken by --long-video"]),
    (["--tmp-dir", "."], ["--tmp-dir", "only taken by --long-video"]),
])
def test_long_video_options_are_refused_before_anything_is_made(argv, words, capsys, tmp_path, cpu_without_bf16):
    argv = argv + ([] if "--tmp-dir" in argv else ["--tmp-dir", str(tmp_path)] if "--long-video" in argv else [])
    assert benchmark.main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and err.count("\n") == 1 and not out
    for word in words:
        assert word in err
    assert not list(tmp_path.iterdir())


def test_long_video_runs_each_length_in_its_own_process_and_removes_its_files(tmp_path, capsys):
    report_path = tmp_path / "new" / "long.json"
    work = tmp_path / "work"
    work.mkdir()
    code = benchmark.main(["--long-video", "10", "20", "--size", "96x64", "--objects", "1", "--model", "none",
                           "--threads", "1", "--tmp-dir", str(work), "--json", str(report_path)])
    assert code == 0
    assert not list(work.iterdir())  # frames, masks and records are gone
    report = json.loads(report_path.read_text())
    assert set(report) == {"settings", "video", "runs", "ratios", "targets"}
    assert report["video"]["frames"] == 20 and report["settings"]["model"].startswith("untrained")
    short, long = report["runs"]
    for run, frames, samples in ((short, 10, [1, 5, 10]), (long, 20, [1, 2, 10, 20])):
        assert run["frames"] == run["masks"] == frames and run["gate_rows"] == frames - 1
        assert [s["frame"] for s in run["samples"]] == samples and run["threads"] == 1
        assert run["peak_rss_mib"] >= max(s["rss_mib"] for s in run["samples"]) > 100
        assert run["ms_per_frame"] > 0 and run["cpu_ms_per_frame"] > 0 and run["first_frame_seconds"] > 0
        assert run["cpu_ms_per_frame"] == pytest.approx(1000 * (run["samples"][-1]["cpu_seconds"] - run["samples"][0][
            "cpu_seconds"]) / (frames - 1))
    assert len({os.getpid(), short["pid"], long["pid"]}) == 3
    assert report["ratios"]["peak_rss"] == pytest.approx(long["peak_rss_mib"] / short["peak_rss_mib"])
    assert 0.67 < report["ratios"]["peak_rss"] < 1.5  # generous: only a gross leak would pass 1.5 here
    assert [t["name"] for t in report["targets"]] == ["peak RSS, 20 / 10 frames",
                                                      "ms/frame of the tracking loop, 20 / 10 frames"]
    out = capsys.readouterr().out
    assert "G-FRTM long video: resnet18, untrained" in out and "targets:" in out
    assert sum(line.startswith(("  PASS  ", "  FAIL  ")) for line in out.splitlines()) == 2
    assert "(CPU ms/frame, 20 / 10 frames: " in out


def test_sigterm_during_a_run_ends_the_child_and_removes_the_files(monkeypatch, tmp_path, capsys):
    started = threading.Event()
    children: list[subprocess.Popen] = []

    class Recorded(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            children.append(self)
            started.set()

    child = ("import signal, time; signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM}); "
             "time.sleep(120)")  # as the real child, it lets in the signals its parent held while starting it
    monkeypatch.setattr(long_video, "_child_command", lambda spec, result: [sys.executable, "-c", child])
    monkeypatch.setattr(long_video.subprocess, "Popen", Recorded)

    def terminate_when_started():
        if started.wait(60):
            # Usually the main thread waits for the child by then; if it is still inside held_signals(),
            # the signal arrives when the hold ends, before the wait: the outcome asserted below is the same.
            time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` would

    threading.Thread(target=terminate_when_started, daemon=True).start()
    before = signal.getsignal(signal.SIGTERM)
    argv = ["--long-video", "10", "20", "--size", "64x48", "--model", "none", "--tmp-dir", str(tmp_path)]
    assert benchmark.main(argv) == 143
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith("terminated (SIGTERM): nothing measured is saved (the report is printed "
                                           "at the end); the generated frames and masks are removed; to continue: ")
    assert len(children) == 1 and children[0].poll() is not None  # the child was ended, not left behind
    assert not list(tmp_path.iterdir())
    assert signal.getsignal(signal.SIGTERM) is before
