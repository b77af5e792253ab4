"""Ctrl-C and SIGTERM in train.py and demo.py, as a user (or a batch system) sends them: one line on
stderr, exit status 130/143, no traceback, no process left behind, and the printed command continues.

The programs run as subprocesses in their own session, and the signal goes to the whole process
group, as a terminal's Ctrl-C (and torchrun) deliver it: DataLoader workers receive it too.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

import demo
from lib.image_io import read_label_png
from tests.square_video import square_video

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}  # one thread: same masks in every process
LINE = re.compile(r"^(interrupted \(Ctrl-C\)|terminated \(SIGTERM\)): (.*); to continue: (python .*)$")

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc to find leftovers")


def _start(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *argv], cwd=cwd, env={**ENV, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)  # SIGINT as by default: conftest.py


def _interrupt_when(proc: subprocess.Popen, ready: Callable[[], bool], sig: int) -> tuple[str, str]:
    """Wait until `ready()`, send `sig` to the process group; returns (stdout, stderr) after it ended."""
    deadline = time.monotonic() + 240
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"never got ready to be interrupted (exit {proc.returncode}):\n{out.decode()}\n{err.decode()}")
        time.sleep(0.02)
    os.killpg(proc.pid, sig)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return out.decode(), err.decode()


PF_EXITING = 0x4  # Linux's flag (include/linux/sched.h, /proc/PID/stat field 9) of a process that is exiting


def _session_processes(sid: int) -> list[int]:
    """Processes still running in session `sid`: not a zombie, and not already on their way out."""
    alive = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        fields = stat.rsplit(")", 1)[-1].split()  # after "(comm)": state ppid pgrp session tty tpgid flags ...
        if fields[3] == str(sid) and fields[0] not in "ZX" and not int(fields[6]) & PF_EXITING:
            alive.append(int(entry.name))
    return alive


def _check_stop(proc: subprocess.Popen, err: str, sig: int) -> re.Match:
    """The run ended as an interrupt should: status, one clean last line, no traceback, nothing left running."""
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err and "Exception" not in err, err
    # the last line: the message, after a progress bar (drawn with '\r') was cleared with '\r<spaces>\r'
    visible = err.rstrip("\n").split("\n")[-1].split("\r")
    assert len(visible) == 1 or not visible[-2].strip(), err
    match = LINE.match(visible[-1])
    assert match, err
    assert match.group(1).startswith("interrupted" if sig == signal.SIGINT else "terminated")
    # no waiting needed: the run's processes (DataLoader workers too) all held the pipes that communicate() read to
    # their end, so each has exited, or has closed its files on the way out (PF_EXITING) and cannot stay
    assert _session_processes(proc.pid) == []
    return match


def _rerun_argv(command: str) -> list[str]:
    """The printed `python script args` command as argv for _start (script and args)."""
    words = shlex.split(command)
    assert words[0] == "python"
    return words[1:]


def test_train_stops_cleanly_and_the_printed_command_resumes(tmp_path):
    ckpt = tmp_path / "ckpt" / "run"
    argv = [str(ROOT / "train.py"), "--dset", "synthetic", "--backbone-weights", "none", "--size", "64x48",
            "--seq-len", "2", "--batch-size", "1", "--epoch-samples", "1", "--workers", "1",
            "--synthetic-videos", "1", "--synthetic-frames", "2", "--name", "run", "--dev", "cpu",
            "--checkpoints", str(tmp_path / "ckpt"), "--tensorboard", str(tmp_path / "tb"),
            "--tmcache", str(tmp_path / "tmcache"), "--max-epochs", "1000", "--keep-last", "1"]
    epochs = lambda: sorted(int(p.stem[-4:]) for p in ckpt.glob("run_ep*.pth"))  # noqa: E731

    # Ctrl-C to the process group (the DataLoader worker gets it too) once epoch 1 is saved
    proc = _start(argv, tmp_path)
    out, err = _interrupt_when(proc, lambda: bool(epochs()), signal.SIGINT)
    line = _check_stop(proc, err, signal.SIGINT)
    first = epochs()[-1]
    saved = ckpt / f"run_ep{first:04d}.pth"
    assert line.group(2) == f"the last finished epoch ({first} of 1000) is saved in {saved}"
    assert torch.load(saved, weights_only=True)["epoch"] == first  # complete, not half-written
    assert not list(ckpt.glob(".*")), "a temporary file of an interrupted save was left"
    assert line.group(3) == "python " + shlex.join(argv)  # the same command: a run resumes by itself

    # the printed command resumes from that epoch; SIGTERM (as a batch system sends it) once --keep-last 1
    # has deleted that epoch's checkpoint, which happens right after the next one is saved
    proc = _start(_rerun_argv(line.group(3)), tmp_path)
    out, err = _interrupt_when(proc, lambda: first not in epochs() and bool(epochs()), signal.SIGTERM)
    line = _check_stop(proc, err, signal.SIGTERM)
    assert f"resuming from {saved} (epoch {first} done)" in out
    last = epochs()
    assert first not in last and last[-1] > first and len(last) <= 2  # 2: stopped between a save and its pruning
    assert f"({last[-1]} of 1000) is saved in {ckpt / f'run_ep{last[-1]:04d}.pth'}" in line.group(2)
    assert torch.load(ckpt / f"run_ep{last[-1]:04d}.pth", weights_only=True)["epoch"] == last[-1]


def _frames_with_pauses(folder: Path, images: list[np.ndarray], pauses: set[int]) -> None:
    """Write the frames as PNGs; frame k in `pauses` is a FIFO, so the demo blocks reading it until it is replaced."""
    folder.mkdir(exist_ok=True)
    for k, image in enumerate(images):
        path = folder / f"f{k:02d}.png"
        path.unlink(missing_ok=True)
        if k in pauses:
            os.mkfifo(path)
        else:
            Image.fromarray(image).save(path)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_demo_stops_cleanly_and_the_same_command_continues(tmp_path, one_thread, capsys):
    images, starts = square_video(8, 48, 80, seed=5, second_x=56, third_x=30)
    Image.fromarray(starts(0)[1].astype(np.uint8) * 128).save(tmp_path / "mask.png")  # 0/128: one object, 1
    frames, out = tmp_path / "frames", tmp_path / "out"
    argv = [str(ROOT / "demo.py"), "--video", str(frames), "--mask", str(tmp_path / "mask.png"),
            "--output", str(out), "--dev", "cpu"]
    masks = lambda: len(list((out / "masks").glob("*.png")))  # noqa: E731

    # Ctrl-C while the demo waits for frame 4: masks 0..3 are saved, no overlay
    _frames_with_pauses(frames, images, {4})
    proc = _start(argv, tmp_path)
    _, err = _interrupt_when(proc, lambda: masks() == 4, signal.SIGINT)
    line = _check_stop(proc, err, signal.SIGINT)
    assert line.group(2) == f"4 of 8 masks are saved in {out / 'masks'} (the overlay video is written at the end)"
    assert line.group(3) == "python " + shlex.join(argv)
    assert not (out / "overlay.mp4").exists() and not list(out.glob(".*tmp*"))
    written = {p.name: p.stat().st_mtime_ns for p in (out / "masks").glob("*.png")}

    # the same command continues (no --overwrite needed); SIGTERM while it waits for frame 6
    _frames_with_pauses(frames, images, {6})
    proc = _start(_rerun_argv(line.group(3)), tmp_path)
    stdout, err = _interrupt_when(proc, lambda: masks() == 6, signal.SIGTERM)
    line = _check_stop(proc, err, signal.SIGTERM)
    assert "continuing the interrupted run" in stdout and "4 of 8 masks are there" in stdout
    assert line.group(2).startswith("6 of 8 masks are saved")
    assert {name: (out / "masks" / name).stat().st_mtime_ns for name in written} == written  # kept, not rewritten

    # once more, to the end: every mask, the overlay, and the masks of an uninterrupted run
    _frames_with_pauses(frames, images, set())
    capsys.readouterr()
    assert demo.main(_rerun_argv(line.group(3))[1:]) == 0
    assert "(6 kept from the interrupted run, 2 written)" in capsys.readouterr().out
    assert demo.main([*argv[1:-4], "--output", str(tmp_path / "reference"), "--dev", "cpu"]) == 0
    names = sorted(p.name for p in (tmp_path / "reference" / "masks").glob("*.png"))
    assert names == sorted(p.name for p in (out / "masks").glob("*.png")) and len(names) == 8
    for name in names:
        labels = read_label_png(out / "masks" / name)
        np.testing.assert_array_equal(labels, read_label_png(tmp_path / "reference" / "masks" / name), err_msg=name)
        assert set(np.unique(labels).tolist()) <= {0, 1}
    np.testing.assert_array_equal(read_label_png(out / "masks" / "f00.png"), starts(0)[1])  # the given mask
    assert (out / "overlay.mp4").is_file()
    # finished now: the same command is refused rather than redone
    assert demo.main(argv[1:]) == 2 and "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("script", ["evaluate.py", "benchmark.py", "train.py"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_while_starting_up_is_one_line_too(script, sig, tmp_path):
    """The first seconds import torch: a Ctrl-C there is the likeliest of all (a wrong flag spotted at once).
    Whenever it comes in that import, the run ends with the one line (SIGTERM too), never with a traceback or a
    half-imported module. The signal goes once the program is in the import (tests/child_hooks creates the marker
    there and waits until the signal is held), not after a delay: on a loaded machine a delay can end
    before the program even runs, in Python's own start-up, which a Ctrl-C ends with a traceback."""
    args = {"evaluate.py": ["--dset", "demo", "--dev", "cpu", "--output", str(tmp_path / "out")],
            "benchmark.py": ["--dev", "cpu", "--size", "64x48", "--threads", "1", "--json", str(tmp_path / "b.json")],
            "train.py": ["--dset", "synthetic", "--backbone-weights", "none", "--size", "64x48", "--dev", "cpu",
                         "--checkpoints", str(tmp_path / "ckpt"), "--tensorboard", str(tmp_path / "tb"),
                         "--tmcache", str(tmp_path / "tmcache")]}[script]
    marker = tmp_path / "importing"
    hooks = {"PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "child_hooks"), str(ROOT)]),
             "TEST_HELD_MARKER": str(marker)}
    proc = _start([str(ROOT / script), *args], tmp_path, hooks)
    out, err = _interrupt_when(proc, marker.exists, sig)
    line = _check_stop(proc, err, sig)
    assert line.group(3) == "python " + shlex.join([str(ROOT / script), *args])
    assert not (tmp_path / "b.json").exists() and not (tmp_path / "ckpt").exists()
