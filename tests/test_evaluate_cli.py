"""evaluate.py end to end: the demo command, output folders, --eval-only, and refused requests."""
from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import evaluate
from dataset.synthetic import generate_dataset
from lib.image_io import read_label_png
from models.checkpoint import save_gfrtm
from models.config import NetworkConfig
from models.gfrtm import GFRTM

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DAVIS_MINI = SHARED / "data" / "davis-mini"
SIZE = (48, 64)  # (H, W)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread: on a small machine shared with other jobs, two threads that wait for each
    other make these runs several times slower (the assertions hold for any thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_davis(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("davis"), "davis", num_videos=2, num_frames=5, size=SIZE,
                            seed=7, split="val")


@pytest.fixture(scope="module")
def untrained_rn18(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "untrained.pth"
    save_gfrtm(path, GFRTM(NetworkConfig(backbone="resnet18")), backbone_weights="none")
    return path


def _evaluate(root: Path, model: Path, output: Path, *extra: str) -> int:
    return evaluate.main(["--dset", "dv2017val", "--davis-root", str(root), "--model", str(model), "--dev", "cpu",
                          "--output", str(output), *extra])


def _sequences(root: Path) -> list[str]:
    return (root / "ImageSets" / "2017" / "val.txt").read_text().split()


def test_demo_command_runs_with_the_demo_model(tmp_path, capsys):
    """`python evaluate.py --dset demo` as the README's first command runs it (demo model from weights/)."""
    assert evaluate.DEMO_MODEL.is_file(), "weights/demo_synthetic_rn18.pth is part of the repository"
    assert evaluate.main(["--dset", "demo", "--dev", "cpu", "--output", str(tmp_path)]) == 0
    out = tmp_path / "demo-demo_synthetic_rn18-TH0.7"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["backbone_weights"] == "none"  # taken from the checkpoint
    sequences = _sequences(tmp_path / "demo_data")
    assert sorted(summary["per_sequence"]) == sorted(sequences) and len(sequences) == 4
    for seq in sequences:
        assert len(list((out / seq).glob("*.png"))) == 30
    # the trained demo model segments its videos and its gate reuses (README: J&F about 0.7)
    assert summary["scores"]["J&F-Mean"] > 0.6
    assert 0.2 < summary["reuse_rate"] < 0.9
    with open(out / "gate_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and {"sequence", "frame", "frame_name", "object", "p_reuse", "decision"} <= set(rows[0])
    assert all(r["frame_name"] == f"{int(r['frame']):05d}" for r in rows)  # DAVIS numbers every frame
    assert "J&F-Mean" in capsys.readouterr().out


def test_results_are_refused_then_overwritten_or_resumed(tiny_davis, untrained_rn18, tmp_path, capsys):
    first, second = _sequences(tiny_davis)
    assert _evaluate(tiny_davis, untrained_rn18, tmp_path) == 0
    out = tmp_path / "dv2017val-untrained-TH0.7"
    assert (out / "global_results-dv2017val.csv").is_file() and (out / "per-sequence_results-dv2017val.csv").is_file()
    kept = out / first / "00000.png"
    stamp = kept.stat().st_mtime_ns

    capsys.readouterr()
    assert _evaluate(tiny_davis, untrained_rn18, tmp_path) == 2
    assert "already holds results" in capsys.readouterr().err
    assert kept.stat().st_mtime_ns == stamp  # nothing touched

    assert _evaluate(tiny_davis, untrained_rn18, tmp_path, "--restart", second) == 0
    assert kept.stat().st_mtime_ns == stamp  # the finished sequence before SEQ is kept
    assert (out / second / "00004.png").is_file()

    assert _evaluate(tiny_davis, untrained_rn18, tmp_path, "--overwrite") == 0
    assert kept.stat().st_mtime_ns != stamp

    # a sweep whose second threshold's folder holds results is refused before the first one runs
    capsys.readouterr()
    assert _evaluate(tiny_davis, untrained_rn18, tmp_path, "--TH", "1.0", "0.7") == 2
    assert str(out) in capsys.readouterr().err
    assert not (tmp_path / "dv2017val-untrained-TH1").exists()


def test_eval_only_scores_a_folder_without_the_network(tiny_davis, tmp_path, capsys):
    """Ground-truth masks as results score 1; the CSVs are written into the scored folder."""
    results = tmp_path / "other_method"
    shutil.copytree(tiny_davis / "Annotations" / "480p", results)
    assert evaluate.main(["--dset", "dv2017val", "--davis-root", str(tiny_davis), "--eval-only", str(results)]) == 0
    with open(results / "global_results-dv2017val.csv", newline="") as f:
        scores = next(csv.DictReader(f))
    assert float(scores["J&F-Mean"]) == 1.0
    assert "nan" not in capsys.readouterr().out  # nothing was tracked: no speed is printed
    # the scores just written are not replaced without --overwrite
    assert evaluate.main(["--dset", "dv2017val", "--davis-root", str(tiny_davis), "--eval-only", str(results)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    # a missing frame is named
    missing = sorted((results / _sequences(tiny_davis)[0]).glob("*.png"))[2]
    missing.unlink()
    capsys.readouterr()
    assert evaluate.main(["--dset", "dv2017val", "--davis-root", str(tiny_davis), "--eval-only", str(results),
                          "--overwrite"]) == 2
    assert missing.name in capsys.readouterr().err


def test_eval_only_on_real_davis_ground_truth_gives_one(tmp_path):
    if not DAVIS_MINI.is_dir():
        pytest.skip(f"{DAVIS_MINI} not found")
    results = tmp_path / "gt"
    for seq in ("blackswan", "car-shadow"):  # real ground truth (kite-surf's masks are not)
        shutil.copytree(DAVIS_MINI / "Annotations" / "480p" / seq, results / seq)
    assert evaluate.main(["--dset", "dv2017val", "--davis-root", str(DAVIS_MINI), "--sequences", "blackswan",
                          "car-shadow", "--eval-only", str(results)]) == 0
    with open(results / "global_results-dv2017val.csv", newline="") as f:
        scores = next(csv.DictReader(f))
    assert float(scores["J&F-Mean"]) == 1.0 and float(scores["J-Mean"]) == 1.0 and float(scores["F-Mean"]) == 1.0


@pytest.mark.parametrize("case, message", [
    ("missing model", "no such file"),
    ("other backbone", "resnet101"),
    ("amp on cpu", "--amp"),
])
def test_bad_requests_stop_before_any_work(case, message, tiny_davis, untrained_rn18, tmp_path, capsys,
                                          cpu_without_bf16):
    args = {"missing model": ["--model", str(tmp_path / "nothing.pth")],
            "other backbone": ["--model", str(untrained_rn18), "--ftext", "resnet101"],
            "amp on cpu": ["--model", str(untrained_rn18), "--amp"]}[case]
    rc = evaluate.main(["--dset", "dv2017val", "--davis-root", str(tiny_davis), "--dev", "cpu",
                        "--output", str(tmp_path / "out"), *args])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unwritable_output_and_bad_thresholds_are_refused_up_front(tiny_davis, untrained_rn18, tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    assert _evaluate(tiny_davis, untrained_rn18, tmp_path / "a_file" / "out") == 2
    assert "--output" in capsys.readouterr().err
    for bad in ("1.5", "-0.1", "nan"):
        with pytest.raises(SystemExit) as exc:
            _evaluate(tiny_davis, untrained_rn18, tmp_path / "out", "--TH", bad)
        assert exc.value.code == 2 and "--TH" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bad_demo_request_generates_no_data(tmp_path, capsys, cpu_without_bf16):
    rc = evaluate.main(["--dset", "demo", "--dev", "cpu", "--amp", "--output", str(tmp_path / "out")])
    assert rc == 2 and "--amp" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # the synthetic demo data is generated only for a valid request


def test_palette_masks_hold_the_object_ids(tiny_davis, untrained_rn18, tmp_path):
    assert _evaluate(tiny_davis, untrained_rn18, tmp_path, "--TH", "1.0") == 0
    seq = _sequences(tiny_davis)[0]
    ids = set(np.unique(read_label_png(tiny_davis / "Annotations" / "480p" / seq / "00000.png")).tolist())
    got = read_label_png(tmp_path / "dv2017val-untrained-TH1" / seq / "00000.png")
    assert got.shape == SIZE and set(np.unique(got).tolist()) <= ids  # frame 0 is the given mask


def test_youtube_vos_sweep_writes_one_submission_zip_per_threshold(untrained_rn18, tmp_path):
    root = generate_dataset(tmp_path / "ytvos", "ytvos", num_videos=1, num_frames=10, size=SIZE, seed=3, split="val")
    video = json.loads((root / "valid" / "meta.json").read_text())["videos"]
    name = next(iter(video))
    assert evaluate.main(["--dset", "yt2018val", "--ytvos-root", str(root), "--model", str(untrained_rn18),
                          "--dev", "cpu", "--output", str(tmp_path / "out"), "--TH", "1.0", "0.7"]) == 0
    for tau in ("1", "0.7"):
        with zipfile.ZipFile(tmp_path / "out" / f"yt2018val-untrained-TH{tau}.zip") as zf:
            entries = sorted(zf.namelist())
        annotated = sorted(p.name for p in (root / "valid" / "JPEGImages" / name).glob("*.jpg"))
        assert entries == [f"Annotations/{name}/{Path(f).stem}.png" for f in annotated]


# ---------------------------------------------------------------- interrupts and reruns


def _files(folder: Path) -> dict[str, tuple]:
    """Every file and folder under `folder` with what a write would change (contents, size, mtime, mode)."""
    return {str(p.relative_to(folder)): (p.is_dir(), p.stat().st_mtime_ns, p.stat().st_mode,
                                         None if p.is_dir() else p.read_bytes())
            for p in [folder, *sorted(folder.rglob("*"))]}


def test_an_interrupted_sweep_continues_when_the_same_command_runs_again(tiny_davis, untrained_rn18, tmp_path,
                                                                         capsys, monkeypatch):
    """SIGTERM during the second threshold: one line, status 143; the command it prints finishes the sweep
    without redoing what was finished; the same folder with other settings is refused."""
    import evaluator.runner as evaluation
    from lib.interrupts import Terminated

    first, second = _sequences(tiny_davis)
    real_save, saves = evaluation.save_sequence_record, []

    def save_then_stop(out, record):  # SIGTERM while the 4th sequence (TH 0.7's second) is being written
        saves.append(record.name)
        if len(saves) == 4:
            raise Terminated()
        real_save(out, record)

    monkeypatch.setattr(evaluation, "save_sequence_record", save_then_stop)
    argv = ["--dset", "dv2017val", "--davis-root", str(tiny_davis), "--model", str(untrained_rn18), "--dev", "cpu",
            "--output", str(tmp_path), "--TH", "1.0", "0.7", "1", "--overwrite"]
    assert evaluate.main(argv) == 143
    out, err = capsys.readouterr()
    assert "each runs once: 1 0.7" in out  # --TH 1.0 and 1 name one folder
    th07, th1 = tmp_path / "dv2017val-untrained-TH0.7", tmp_path / "dv2017val-untrained-TH1"
    segments = [s for s in re.split(r"[\r\n]", err) if s.strip()]  # progress bars redraw with \r
    line = segments[-1]
    assert err.endswith(line + "\n") and all("%|" in s for s in segments[:-1])  # one line besides the bars
    assert line.startswith(f"terminated (SIGTERM): 1 of 2 thresholds finished, 1 of 2 sequences finished in {th07}")
    assert "--overwrite" not in line  # the folders now record the settings: the plain command continues
    assert (th07 / first / "00004.png").is_file() and not (th07 / second).exists()  # partial masks removed
    kept = {p: p.stat().st_mtime_ns for p in [*th1.rglob("*.png"), *(th07 / first).glob("*.png")]}

    monkeypatch.setattr(evaluation, "save_sequence_record", real_save)
    again = shlex.split(line.split("to continue: ", 1)[1])
    assert again[:2] == ["python", sys.argv[0]]
    assert evaluate.main(again[2:]) == 0
    out = capsys.readouterr().out
    assert f"{th1}: finished earlier, kept" in out and "continuing: 1 of 2 sequences already finished" in out
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # nothing finished was redone
    assert (th07 / second / "00004.png").is_file() and (th07 / "summary.json").is_file()
    with open(tmp_path / "dv2017val-untrained-sweep" / "sweep.csv", newline="") as f:
        assert [row["TH"] for row in csv.DictReader(f)] == ["1", "0.7"]

    assert evaluate.main(again[2:] + ["--full-schedule"]) == 2  # same folders, other settings: never mixed
    err = capsys.readouterr().err
    assert "other settings" in err and "schedule fast there, full now" in err and "--overwrite" in err


def test_ctrl_c_ends_with_one_line_and_status_130(tiny_davis, untrained_rn18, tmp_path):
    """A real SIGINT to a running evaluate.py: one line on stderr, no traceback."""
    root = Path(__file__).resolve().parents[1]
    argv = [sys.executable, "-u", "evaluate.py", "--dset", "dv2017val", "--davis-root", str(tiny_davis), "--model",
            str(untrained_rn18), "--dev", "cpu", "--output", str(tmp_path)]
    # should the signal be slow to come, the run waits for it after its first sequence rather than finish
    pause = {"PYTHONPATH": os.pathsep.join([str(root / "tests" / "child_hooks"), str(root)]),
             "TEST_PAUSE_AFTER_LINE": f"{_sequences(tiny_davis)[0]}: "}
    env = {**os.environ, "TQDM_DISABLE": "1", **pause}
    proc = subprocess.Popen(argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # the run has started once it names its folder
        if line.startswith("dv2017val: 2 sequences"):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.count("\n") == 1 and err.startswith("interrupted (Ctrl-C): ")
    assert f"of 2 sequences finished in {tmp_path / 'dv2017val-untrained-TH0.7'}; to continue: " in err


def test_eval_only_with_output_only_reads_the_scored_folder(tiny_davis, tmp_path, capsys):
    """Someone else's read-only results: the CSVs go to --output and nothing in the scored folder changes
    (asserted on the files themselves: as root, chmod does not stop writes)."""
    results = tmp_path / "theirs"
    shutil.copytree(tiny_davis / "Annotations" / "480p", results)
    for p in [*results.rglob("*"), results]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    before = _files(results)
    try:
        assert evaluate.main(["--dset", "dv2017val", "--davis-root", str(tiny_davis), "--eval-only", str(results),
                              "--output", str(tmp_path / "scores")]) == 0
        assert _files(results) == before
    finally:
        for p in [results, *results.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
    with open(tmp_path / "scores" / "global_results-dv2017val.csv", newline="") as f:
        assert float(next(csv.DictReader(f))["J&F-Mean"]) == 1.0
    assert f"wrote the CSV files into {tmp_path / 'scores'}" in capsys.readouterr().out


def test_dv2016val_eval_only_merges_several_object_ids_and_says_so(tiny_davis, tmp_path, capsys):
    results = tmp_path / "multi"
    shutil.copytree(tiny_davis / "Annotations" / "480p", results)  # video 0 has three objects
    assert evaluate.main(["--dset", "dv2016val", "--davis-root", str(tiny_davis), "--eval-only", str(results)]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if "merged" in line]
    assert len(notes) == 1 and "several object ids" in notes[0] and "1, 2, 3" in notes[0]
    with open(results / "global_results-dv2016val.csv", newline="") as f:
        assert float(next(csv.DictReader(f))["J&F-Mean"]) == 1.0  # the merged masks are the merged truth


def test_a_failed_run_leaves_no_empty_folders(tiny_davis, untrained_rn18, tmp_path, capsys):
    out = tmp_path / "out"
    assert _evaluate(tiny_davis, untrained_rn18, out, "--sequences", "nosuch") == 2
    assert "nosuch" in capsys.readouterr().err and not out.exists()
    broken = tmp_path / "broken"
    shutil.copytree(tiny_davis, broken)
    frame = broken / "JPEGImages" / "480p" / _sequences(tiny_davis)[0] / "00002.jpg"
    frame.write_bytes(frame.read_bytes()[:len(frame.read_bytes()) // 3])  # the header reads, the pixels do not
    assert _evaluate(broken, untrained_rn18, out) == 2
    assert str(frame) in capsys.readouterr().err
    assert not out.exists()  # neither the results folder nor --output itself is left behind empty


def test_a_failed_demo_run_leaves_neither_its_demo_data_nor_its_output(tmp_path, capsys):
    out = tmp_path / "out"
    (tmp_path / "bad.pth").write_bytes(np.random.default_rng(0).bytes(100))
    assert evaluate.main(["--dset", "demo", "--dev", "cpu", "--model", str(tmp_path / "bad.pth"),
                          "--output", str(out)]) == 2
    assert "damaged" in capsys.readouterr().err and not out.exists()  # refused before any data is generated
    assert evaluate.main(["--dset", "demo", "--dev", "cpu", "--sequences", "nosuch", "--output", str(out)]) == 2
    assert "nosuch" in capsys.readouterr().err and not out.exists()  # the generated videos are removed again
    (out / "demo_data").mkdir(parents=True)  # data that was there before is never removed
    assert evaluate.main(["--dset", "demo", "--dev", "cpu", "--sequences", "nosuch", "--output", str(out)]) == 2
    assert (out / "demo_data").is_dir()


def test_an_unwritable_eval_only_folder_points_to_output(tiny_davis, tmp_path, capsys, monkeypatch):
    import evaluator.cli

    results = tmp_path / "theirs"
    shutil.copytree(tiny_davis / "Annotations" / "480p", results)
    monkeypatch.setattr(evaluator.cli, "unwritable_reason",  # as root, chmod does not stop writes
                        lambda folder: f"cannot write to {folder} (Read-only file system)" if folder == results else None)
    assert evaluate.main(["--dset", "dv2017val", "--davis-root", str(tiny_davis), "--eval-only", str(results)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --eval-only: cannot write to {results}") and "add --output OUT" in err
