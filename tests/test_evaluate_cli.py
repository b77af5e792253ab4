"""evaluate.py end to end: the demo command, output folders, --eval-only, and refused requests."""
from __future__ import annotations

import csv
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

import evaluate
from dataset.synthetic import generate_dataset
from lib.image_io import read_label_png
from models.checkpoint import save_gfrtm
from models.config import NetworkConfig
from models.gfrtm import GFRTM

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DAVIS_MINI = SHARED / "data" / "davis-mini"
SIZE = (48, 64)  # (H, W)


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
def test_bad_requests_stop_before_any_work(case, message, tiny_davis, untrained_rn18, tmp_path, capsys):
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


def test_bad_demo_request_generates_no_data(tmp_path, capsys):
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
