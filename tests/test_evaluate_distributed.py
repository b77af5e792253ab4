"""evaluate.py under torchrun: two CPU processes (gloo) write what one process writes (tracking and
scoring shared between them), and stop together with the message of the process that failed."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import evaluate
from dataset.synthetic import generate_dataset
from evaluator.processes import cpu_threads, share_by_size

ROOT = Path(__file__).resolve().parents[1]
SIZE = (96, 128)  # (H, W): large enough for the demo model to segment something


def test_sequences_are_shared_by_frame_count_longest_first():
    sizes = [10, 7, 5, 4, 3, 1]
    assert share_by_size(sizes, 2) == [[0, 3, 5], [1, 2, 4]]  # 15 frames each
    assert share_by_size(sizes, 3) == [[0], [1, 4], [2, 3, 5]]
    assert share_by_size([3, 3], 4) == [[0], [1], [], []]  # more processes than sequences: some idle
    assert share_by_size(sizes, 1) == [list(range(6))]


@pytest.fixture(scope="module")
def small_davis(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("davis"), "davis", num_videos=3, num_frames=4, size=SIZE,
                            seed=7, split="val")


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "evaluate.py",
               "--dev", "cpu", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _tree(folder: Path, suffixes: tuple[str, ...]) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.suffix in suffixes}


def _without_timings(summary: dict) -> dict:
    timing = ("seconds", "fps", "wall_seconds", "processes")
    kept = {k: v for k, v in summary.items() if k not in timing}
    kept["per_sequence"] = {name: {k: v for k, v in seq.items() if k != "fps"}
                            for name, seq in summary["per_sequence"].items()}
    return kept


def test_two_processes_write_what_one_process_writes(small_davis, tmp_path):
    args = ["--dset", "dv2017val", "--davis-root", str(small_davis), "--model", str(evaluate.DEMO_MODEL)]
    threads = torch.get_num_threads()
    torch.set_num_threads(cpu_threads(2))  # what each of the two processes uses: float sums in the same order
    try:
        assert evaluate.main([*args, "--dev", "cpu", "--output", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
    done = _torchrun(*args, "--output", str(tmp_path / "two"))
    assert done.returncode == 0, done.stderr
    one, two = (tmp_path / name / "dv2017val-demo_synthetic_rn18-TH0.7" for name in ("one", "two"))
    masks = _tree(one, (".png",))
    assert len(masks) == 12 and _tree(two, (".png",)) == masks  # byte for byte
    assert _tree(two, (".csv",)) == _tree(one, (".csv",))  # both score CSVs and the gate log
    with open(one / "per-sequence_results-dv2017val.csv", newline="") as f:
        assert any(float(row["J-Mean"]) > 0.1 for row in csv.DictReader(f))  # real masks, not empty ones
    summaries = [json.loads((folder / "summary.json").read_text()) for folder in (one, two)]
    assert [s["processes"] for s in summaries] == [1, 2]
    for s in summaries:  # overall fps: all frames over the sum of the sequences' tracking times
        assert s["fps"] == pytest.approx(s["frames"] / s["seconds"]) and s["wall_seconds"] > 0
    untimed = [_without_timings(s) for s in summaries]
    assert untimed[0] == untimed[1] and untimed[0]["scores"] and untimed[0]["per_sequence"]
    assert "[process 1] " in done.stdout and done.stdout.count("J&F-Mean") == 1  # rank 0 alone reports


def test_a_failure_in_one_process_stops_both_with_its_message(small_davis, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(small_davis, broken)
    names = (broken / "ImageSets" / "2017" / "val.txt").read_text().split()
    frame = broken / "JPEGImages" / "480p" / names[1] / "00002.jpg"  # the second sequence goes to process 1
    frame.write_bytes(frame.read_bytes()[:len(frame.read_bytes()) // 3])  # the header reads, the pixels do not
    done = _torchrun("--dset", "dv2017val", "--davis-root", str(broken), "--model", str(evaluate.DEMO_MODEL),
                     "--output", str(tmp_path / "out"))
    assert done.returncode != 0
    ours = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(ours) == 1 and ours[0].startswith(f"error: process 1: {frame}"), done.stderr


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds process 1 through /proc (Linux)")
def test_ctrl_c_in_another_process_ends_with_one_line_and_the_command_continues(tmp_path):
    data = generate_dataset(tmp_path / "davis", "davis", num_videos=4, num_frames=12, size=SIZE, seed=7, split="val")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "evaluate.py",
               "--dev", "cpu", "--dset", "dv2017val", "--davis-root", str(data), "--model", str(evaluate.DEMO_MODEL),
               "--output", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
    # process 1 waits after its first sequence until the signal comes (tests/child_hooks): its second one is
    # still to do however slowly this test gets to send it
    pause = {"PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "child_hooks"), str(ROOT)]),
             "TEST_PAUSE_AFTER_LINE": "[process 1] "}
    launcher = subprocess.Popen(command, cwd=ROOT, env={**env, **pause}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        for line in launcher.stdout:  # process 1 has finished a sequence, and waits before its next one
            if line.startswith("[process 1] "):
                break
        rank1 = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _is_rank_1_of(p, launcher.pid)]
        assert len(rank1) == 1
        os.kill(int(rank1[0].name), signal.SIGINT)  # as a Ctrl-C on another machine would
        stdout, stderr = launcher.communicate(timeout=300)
    finally:
        launcher.kill()
    assert launcher.returncode != 0
    assert f'File "{ROOT}' not in stderr, stderr  # evaluate.py printed no traceback (torchrun prints its own)
    ours = [line for line in stderr.splitlines() if line.startswith(("error: ", "terminated ", "interrupted "))]
    assert len(ours) == 1, stderr  # torchrun may SIGTERM process 0 before it notices that process 1 is gone
    resume = ours[0].split("; to continue: ")[1]
    assert resume.startswith("torchrun --standalone --nproc_per_node=2 evaluate.py --dev cpu --dset dv2017val")
    again = subprocess.run(["torchrun", *resume.split()[1:]] if shutil.which("torchrun") else
                           [sys.executable, "-m", "torch.distributed.run", *resume.split()[1:]],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "continuing: " in again.stdout
    folder = out / "dv2017val-demo_synthetic_rn18-TH0.7"
    assert len(list(folder.rglob("*.png"))) == 4 * 12 and (folder / "summary.json").is_file()


def _is_rank_1_of(proc: Path, launcher_pid: int) -> bool:
    """Whether /proc entry `proc` is the torchrun worker with RANK=1 started by `launcher_pid`."""
    try:
        env = (proc / "environ").read_bytes().split(b"\0")
        parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return False
    return b"RANK=1" in env and parent == launcher_pid
