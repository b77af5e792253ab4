"""tools/gpu_check.py: its quick run on a machine without CUDA (what CI sees), the mask comparison,
its output-folder checks and its time limits."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lib.image_io import write_label_png

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import gpu_check  # noqa: E402


def test_quick_run_without_cuda_runs_the_cpu_parts_and_exits_0(tmp_path, capsys, monkeypatch):
    """What CI sees: the script's own process in-process (saves a torch import), its commands as subprocesses."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the commands it runs see no GPU either
    out = tmp_path / "check"
    code = gpu_check.main(["--quick", "--out", str(out)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0, "\n".join(lines)
    assert "CUDA is not available on this machine" in lines[0]
    status = {line.split()[1].rstrip(":"): line.split()[0] for line in lines[1:-1]}
    assert status == {"cuda-tests": "SKIP", "demo-cpu": "PASS", "demo-cuda": "SKIP", "amp": "SKIP",
                      "train": "PASS", "bench-cpu-smoke": "PASS"}
    assert lines[-1].startswith("gpu_check: 3 PASS, 0 FAIL, 3 SKIP") and str(out) in lines[-1]
    record = json.loads((out / "gpu_check.json").read_text())
    assert record["cuda"] is None and [c["status"] for c in record["checks"]].count("PASS") == 3
    ckpts = out / "train" / "checkpoints" / "gpu_check"
    assert (ckpts / "gpu_check_ep0001.pth").is_file() and (ckpts / "gpu_check_ep0002.pth").is_file()
    assert "epoch 1 done" in (out / "logs" / "train-epoch2.log").read_text()  # the second run resumed
    assert "| resnet18 | float32 |" in (out / "gpu_table.md").read_text()
    # a second run into the same folder needs --overwrite, and leaves the first one's files alone
    assert gpu_check.main(["--quick", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "gpu_check.json").is_file()


def _results(folder: Path, labels: dict[str, list[np.ndarray]], jf: float, tau: float = 0.7) -> Path:
    for seq, frames in labels.items():
        for t, lab in enumerate(frames):
            write_label_png(folder / seq / f"{t:05d}.png", lab)
    (folder / "summary.json").write_text(json.dumps({"scores": {"J&F-Mean": jf}, "settings": {"TH": tau}}))
    return folder


def test_comparison_gives_per_object_iou_equal_pixels_and_the_jf_difference(tmp_path):
    a = np.zeros((2, 10, 10), np.uint8)
    a[:, 0:4, 0:5] = 1  # object 1: 20 pixels per frame
    a[:, 6:8, 6:8] = 2  # object 2: 4 pixels per frame
    b = a.copy()
    b[1, 0:4, 4] = 0  # object 1 loses 4 pixels on frame 1: IoU 36 / 40
    b[0, 9, 9] = 3  # an object only in b
    ref = _results(tmp_path / "ref" / "demo-m-TH0.7", {"s": list(a)}, 0.7000)
    oth = _results(tmp_path / "oth" / "demo-m-TH0.7", {"s": list(b)}, 0.6990)
    (ref / ".progress").mkdir()  # evaluate.py's own records: not a sequence
    (ref / ".progress" / "s.json").write_text("{}")
    c = gpu_check.compare_results(ref, oth)
    assert c["object_iou"] == pytest.approx({"s#1": 36 / 40, "s#2": 1.0, "s#3": 0.0})
    assert c["worst_object"] == "s#3" and c["jf_diff"] == pytest.approx(-0.001)
    assert c["equal_pixels"] == pytest.approx(1 - 5 / 200)
    assert gpu_check._comparison("x", ref.parent, oth.parent, "b against a").status == "PASS"  # 0.001 <= 0.005
    _results(tmp_path / "far" / "demo-m-TH0.7", {"s": list(b)}, 0.6900)
    far = gpu_check._comparison("x", ref.parent, tmp_path / "far", "b against a")
    assert far.status == "FAIL" and "-0.0100" in far.detail and "limit 0.005" in far.detail


def test_output_folder_of_something_else_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert gpu_check.main(["--out", str(tmp_path), "--quick"]) == 2
    assert "holds other files" in capsys.readouterr().err
    assert gpu_check.main(["--out", str(tmp_path / "notes.txt")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert gpu_check.main(["--out", str(tmp_path / "new"), "--budget", "5"]) == 2
    assert "--budget 5" in capsys.readouterr().err and not (tmp_path / "new").exists()


def _running(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat")
        return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except (ProcessLookupError, FileNotFoundError):
        return False


def _wait_until(condition, what: str, timeout_s: float = 60) -> None:
    """Poll `condition` until it holds; fail after `timeout_s` (a guard: it holds in well under a second)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout_s:.0f} s")
        time.sleep(0.05)


def test_a_command_past_its_limit_is_stopped_with_its_children(tmp_path, monkeypatch):
    runner = gpu_check.Runner(tmp_path, budget_s=60)
    pid_file = tmp_path / "pids"
    # both sleep far beyond the 3 s limit and the checks below: a process that is not stopped is still there
    script = ("import os, subprocess, sys, time; "
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
              f"open({str(pid_file)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}'); print('started', flush=True); "
              "time.sleep(300); print('slept to the end')")

    def started() -> bool:  # the line itself: the log's header line (the command) holds the word too
        return "started" in runner.log_path("sleepy").read_text().splitlines()

    class LimitOnceStarted(subprocess.Popen):
        """The limit counts from when the command has started its child: on a loaded machine starting two
        Pythons can take longer than the limit itself, and then there would be no child to stop."""

        def wait(self, timeout=None):
            if timeout is not None and not started():
                _wait_until(lambda: started() or self.poll() is not None, "the command's start")
            return super().wait(timeout)

    monkeypatch.setattr(gpu_check.subprocess, "Popen", LimitOnceStarted)
    code, text = runner.run("sleepy", [sys.executable, "-c", script], limit_s=3)
    assert code is None, text  # stopped, not run to its end
    lines = text.splitlines()
    assert "started" in lines and "slept to the end" not in lines and "stopped after 3 s, its time limit" in text
    command, child = map(int, pid_file.read_text().split())
    try:
        assert not _running(command)  # waited for: gone before run() returned
        # the grandchild went with its group (init reaps it); the signal takes effect once it next runs
        _wait_until(lambda: not _running(child), f"process {child} outlived the stopped command")
    finally:
        for pid in (command, child):
            if _running(pid):  # only after a failure: leave no sleeper behind
                os.kill(pid, 9)
