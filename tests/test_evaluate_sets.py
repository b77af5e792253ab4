"""evaluate.py on the newer evaluation sets, end to end on small generated trees in their real layouts:
what each writes (masks, submission zips, scores), that a fully annotated folder gives exactly the
dv2017val results, and that a bad tree is one error line and leaves nothing behind."""
from __future__ import annotations

import csv
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

import evaluate
from dataset.synthetic import generate_dataset
from lib.image_io import write_label_png
from tests.test_eval_sets import _davis_testdev, _labels, _lvos, _mose, _sparse_folder, _ytvos_valid

ROOT_FLAGS = {"dv2017testdev": "--davis-root", "mose": "--mose-root", "yt2019val": "--yt2019-root",
              "lvos": "--lvos-root", "folder": "--root"}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One thread: tiny frames gain nothing from more, and the masks then match across runs bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _run(dset: str, root: Path, out: Path, *extra: str) -> int:
    flag = ROOT_FLAGS.get(dset, "--davis-root")
    return evaluate.main(["--dset", dset, flag, str(root), "--model", str(evaluate.DEMO_MODEL), "--dev", "cpu",
                          "--output", str(out), *extra])


def _folder(out: Path, dset: str) -> Path:
    return out / f"{dset}-{evaluate.DEMO_MODEL.stem}-TH0.7"


def _masks(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.glob("*/*.png"))}


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_fully_annotated_folder_gives_exactly_the_dv2017val_masks_and_scores(tmp_path, capsys):
    davis = generate_dataset(tmp_path / "davis", "davis", num_videos=2, num_frames=5, size=(176, 320), seed=21,
                             max_objects=3, split="val")
    tree = tmp_path / "tree"
    for kind in ("JPEGImages", "Annotations"):
        shutil.copytree(davis / kind / "480p", tree / kind)
    assert _run("dv2017val", davis, tmp_path / "out") == 0
    assert _run("folder", tree, tmp_path / "out", "--zip") == 0
    dv, folder = _folder(tmp_path / "out", "dv2017val"), _folder(tmp_path / "out", "folder")
    assert len(_masks(dv)) == 10 and _masks(folder) == _masks(dv)
    for kind in ("global_results", "per-sequence_results"):
        assert _csv_rows(folder / f"{kind}-folder.csv") == _csv_rows(dv / f"{kind}-dv2017val.csv")
    assert float(_csv_rows(dv / "global_results-dv2017val.csv")[0]["J&F-Mean"]) > 0.2  # real masks
    with zipfile.ZipFile(folder.parent / f"{folder.name}.zip") as zf:  # --zip: the YouTube-VOS layout
        assert sorted(zf.namelist()) == sorted(f"Annotations/{name}" for name in _masks(folder))


@pytest.mark.parametrize("dset, build, zip_prefix, frames", [
    ("dv2017testdev", _davis_testdev, "", {"carousel": 5, "bike-trial": 5}),
    ("mose", _mose, "Annotations/", {"0a7b1c": 6, "ff2e31": 4}),
    ("yt2019val", _ytvos_valid, "Annotations/", {"a1": 3, "b2": 3}),
])
def test_sets_without_ground_truth_write_every_mask_and_their_submission_zip(tmp_path, capsys, dset, build,
                                                                             zip_prefix, frames):
    assert _run(dset, build(tmp_path / "data"), tmp_path / "out") == 0
    results = _folder(tmp_path / "out", dset)
    masks = _masks(results)
    assert {name: sum(m.startswith(f"{name}/") for m in masks) for name in frames} == frames
    with zipfile.ZipFile(results.parent / f"{results.name}.zip") as zf:
        assert sorted(zf.namelist()) == sorted(zip_prefix + name for name in masks)
    assert not list(results.glob("*_results-*.csv"))
    assert "not scored: no public ground truth" in capsys.readouterr().out
    assert json.loads((results / "summary.json").read_text())["scores"] is None


def test_lvos_scores_the_annotated_frames_with_objects_that_start_late(tmp_path, capsys):
    assert _run("lvos", _lvos(tmp_path / "lvos"), tmp_path / "out") == 0
    results = _folder(tmp_path / "out", "lvos")
    assert len(_masks(results)) == 32  # every frame of both 16-frame videos is written
    rows = _csv_rows(results / "per-sequence_results-lvos.csv")
    assert [row["Sequence"] for row in rows] == ["v1_1", "v1_2", "v2_1"]  # object 2 of v1 starts at frame 10


def test_a_sparsely_annotated_folder_writes_masks_only_and_cannot_be_scored(tmp_path, capsys):
    tree = _sparse_folder(tmp_path / "tree")
    assert _run("folder", tree, tmp_path / "out") == 0
    results = _folder(tmp_path / "out", "folder")
    assert len(_masks(results)) == 6 and not list(results.glob("*_results-*.csv"))
    assert not (results.parent / f"{results.name}.zip").exists()  # only on request (--zip)
    assert "a folder is scored when every frame has one" in capsys.readouterr().out
    assert evaluate.main(["--dset", "folder", "--root", str(tree), "--eval-only", str(results)]) == 2
    assert "cannot be scored" in capsys.readouterr().err


def test_the_dataset_root_is_part_of_a_folders_settings(tmp_path, capsys):
    tree = _sparse_folder(tmp_path / "tree")
    other = shutil.copytree(tree, tmp_path / "other")
    assert _run("folder", tree, tmp_path / "out") == 0
    assert _run("folder", other, tmp_path / "out") == 2  # another tree: its masks would mix with the first's
    err = capsys.readouterr().err
    assert f"root {tree.resolve()} there, {other.resolve()} now" in err and "--overwrite" in err


def test_a_bad_tree_is_one_error_line_and_leaves_nothing_behind(tmp_path, capsys):
    root = _mose(tmp_path / "mose")
    (root / "valid" / "Annotations" / "ff2e31" / "00000.png").unlink()  # a video without its first-frame mask
    assert _run("mose", root, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "ff2e31" in err
    assert not (tmp_path / "out").exists()  # the --output folder it would have made is not left behind

    write_label_png(root / "valid" / "Annotations" / "ff2e31" / "00000.png", _labels(1))
    assert evaluate.main(["--dset", "folder", "--dev", "cpu", "--output", str(tmp_path / "out")]) == 2
    assert "--dset folder needs --root" in capsys.readouterr().err
