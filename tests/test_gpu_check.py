"""tools/gpu_check.py: its quick run on a machine without CUDA (what CI sees), the mask comparison,
its output-folder checks and its time limits."""
from __future__ import annotations

import json
import os
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


def test_a_command_past_its_limit_is_stopped_with_its_children(tmp_path):
    runner = gpu_check.Runner(tmp_path, budget_s=60)
    pid_file = tmp_path / "child.pid"
    script = ("import subprocess, sys, time; "
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              f"open({str(pid_file)!r}, 'w').write(str(child.pid)); print('started', flush=True); time.sleep(60)")
    started = time.monotonic()
    code, log = runner.run("sleepy", [sys.executable, "-c", script], limit_s=3)
    assert code is None and time.monotonic() - started < 20
    assert "started" in log and "stopped after 3 s, its time limit" in log
    child = int(pid_file.read_text())
    for _ in range(50):  # the grandchild went with its group (init reaps it)
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"process {child} outlived the stopped command")
