"""benchmark.py's command line: options refused before measuring, --json checks, Ctrl-C/SIGTERM,
and the float32 / CPU bfloat16 comparison (--compare-bf16)."""
from __future__ import annotations

import json
import os
import shlex
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import benchmark
import evaluator.speed.benchmark as benchmarking
from evaluator.speed.bf16 import PRECISIONS
from lib.devices import cpu_bf16_support
from models.backbone import build_backbone
from models.config import NetworkConfig, TrackerConfig
from models.gfrtm import GFRTM
from models.tracker import AmpUnavailable, Tracker
from tests.square_video import square_video
from tests.test_train_step import one_torch_thread  # noqa: F401  (autouse: one torch thread in this module)



@pytest.mark.parametrize("argv, words", [
    (["--threads", "0"], ["--threads 0", "at least 1"]),
    (["--threads", "100000"], ["--threads 100000", "give at most"]),
    (["--frames", "2"], ["--frames (2)", ">= 3"]),
    (["--repeats", "0"], ["--repeats (0)"]),
    (["--warmup-frames", "1"], ["--warmup-frames (1)"]),
    (["--rates", "0.5"], ["--rates", "include 0 and 1"]),
    (["--rates", "0", "1", "1.5"], ["--rates", "[0, 1]"]),
    (["--objects", "2", "3"], ["--objects", "include 1"]),
    (["--seed", "-1"], ["--seed -1"]),
    (["--size", "16x16"], ["--size 16x16"]),
    (["--compare-bf16", "--amp"], ["--compare-bf16", "--dev cpu"]),
])
def test_nonsensical_numbers_are_refused_before_measuring(argv, words, capsys):
    assert benchmark.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "round" not in err
    for word in words:
        assert word in err


def test_a_folder_as_json_is_refused_before_measuring(tmp_path, capsys):
    assert benchmark.main(["--json", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path} is a folder" in err and "benchmark.json" in err and "round" not in err


def test_a_json_path_under_a_file_is_refused_and_nothing_is_created(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert benchmark.main(["--json", str(blocker / "sub" / "report.json")]) == 2
    err = capsys.readouterr().err
    assert f"{blocker} is not a folder" in err and "round" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs a folder no one can write (Linux /proc)")
def test_a_json_path_in_an_unwritable_folder_is_refused(capsys):
    assert benchmark.main(["--json", "/proc/benchmark.json"]) == 2
    err = capsys.readouterr().err
    assert "cannot write to /proc" in err and "pick another path" in err


def test_missing_folders_of_json_are_not_created_before_the_report(tmp_path):
    assert benchmark.json_problem(tmp_path / "new" / "deeper" / "report.json") is None
    assert not (tmp_path / "new").exists()


def test_ctrl_c_while_measuring_is_one_line_and_status_130(monkeypatch, capsys, tmp_path):
    def interrupted(opts, log):
        log("  round 1/3, full path: 1.0 ms/frame")
        raise KeyboardInterrupt

    monkeypatch.setattr(benchmarking, "run_benchmark", interrupted)
    path = tmp_path / "report.json"
    assert benchmark.main(["--json", str(path)]) == 130
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("interrupted (Ctrl-C): nothing measured is saved") and f"--json {path}" in last
    assert last.endswith(f"to continue: python {shlex.quote(sys.argv[0])} --json {shlex.quote(str(path))}")
    assert not path.exists()


def test_sigterm_while_measuring_is_one_line_and_status_143(monkeypatch, capsys):
    def terminated(opts, log):
        log("  round 1/3, full path: 1.0 ms/frame")
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` would; the handler raises at the next bytecode
        raise AssertionError("SIGTERM did not stop the measuring")

    monkeypatch.setattr(benchmarking, "run_benchmark", terminated)
    before = signal.getsignal(signal.SIGTERM)
    assert benchmark.main(["--size", "96x64"]) == 143
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 2  # the progress line and the final line
    assert err.splitlines()[-1] == ("terminated (SIGTERM): nothing measured is saved (the report is printed at the "
                                    f"end); to continue: python {shlex.quote(sys.argv[0])} --size 96x64")
    assert signal.getsignal(signal.SIGTERM) is before


# ---------------------------------------------------------------------------------------------- bfloat16
def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t: fpu\n")
    support = cpu_bf16_support(info)
    assert support["flags"] == {"avx512f": True, "avx512_bf16": True, "amx_tile": False, "amx_bf16": False}
    assert support["hardware_bf16"] and support["cpuinfo_read"]
    missing = cpu_bf16_support(tmp_path / "absent")
    assert not missing["cpuinfo_read"] and not missing["hardware_bf16"]


def test_cpu_amp_runs_bfloat16_weights_converted_once_and_leaves_the_given_modules_float32():
    """--amp on the CPU: the tracker's own copies of the backbone and network are bfloat16 (converted once), the
    frames run in bfloat16, the target models stay float32; the modules it was given are untouched."""
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", "none")
    net = GFRTM(NetworkConfig(backbone="resnet18")).eval()
    frames, start_masks = square_video(3, 48, 64, seed=1, second_x=40, third_x=8)
    tracker = Tracker(backbone, net, TrackerConfig(amp=True), allow_emulated_bf16=True)
    assert {p.dtype for p in tracker.backbone.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in tracker.net.parameters()} == {torch.bfloat16}
    seen = []  # output dtypes of the first convolution of the tracker's backbone
    conv = next(m for m in tracker.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    session = tracker.session()
    labels = [session.step(image, start_masks(t)).labels for t, image in enumerate(frames)]
    assert len(labels) == 3 and all(lab.shape == (48, 64) for lab in labels)
    assert set(seen) == {torch.bfloat16}
    assert {p.dtype for m in session.objects.target_models for p in m.parameters()} == {torch.float32}
    assert {p.dtype for p in backbone.parameters()} == {p.dtype for p in net.parameters()} == {torch.float32}
    if not cpu_bf16_support()["native"]:  # refused where the CPU would emulate it
        with pytest.raises(AmpUnavailable, match="no native bfloat16"):
            Tracker(backbone, net, TrackerConfig(amp=True))


def test_compare_bf16_reports_both_precisions_and_writes_missing_folders(tmp_path, capsys):
    path = tmp_path / "new" / "bf16.json"
    code = benchmark.main(["--compare-bf16", "--size", "64x48", "--frames", "3", "--warmup-frames", "2",
                           "--repeats", "2", "--threads", "1", "--json", str(path)])
    assert code == 0
    report = json.loads(path.read_text())
    assert set(report) == {"settings", "cpu", "paths", "targets"} and report["settings"]["compare_bf16"] is True
    assert set(report["cpu"]["flags"]) == {"avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}
    for name, row in report["paths"].items():
        for precision in PRECISIONS:
            assert len(row[precision]["rounds_s"]) == 2 and row[precision]["per_frame_s"] > 0
            assert (row[precision]["stages"]["deep"] > 0) == (name == "full")
        ratios = [a / b for a, b in zip(row["float32"]["rounds_s"], row["bfloat16"]["rounds_s"])]
        assert row["speedup_rounds"] == pytest.approx(ratios) and row["speedup"] == pytest.approx(np.median(ratios))
    targets = {t["name"]: t for t in report["targets"]}
    assert set(targets) == {"resnet18 full path: float32 / bfloat16 per frame",
                            "resnet18 reuse path: float32 / bfloat16 per frame"}
    for path, limit in (("full", 2.0), ("reuse", 1.8)):
        target = targets[f"resnet18 {path} path: float32 / bfloat16 per frame"]
        assert target["value"] == report["paths"][path]["speedup"] and target["limit"] == f">= {limit}"
        if report["cpu"]["native"]:
            assert target["status"] == ("PASS" if target["value"] >= limit else "FAIL")
        else:  # emulated bfloat16 says nothing about the code: not judged
            assert target["status"] == "NOT MEASURED" and not target["pass"] and target["why"]
    out = capsys.readouterr().out
    assert "full bf16" in out and "avx512_bf16" in out and "resnet18 reuse path: float32 / bfloat16" in out
