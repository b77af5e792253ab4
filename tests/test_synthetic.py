"""The synthetic video generator: layouts, determinism, idempotence, and the kinds of motion it shows."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dataset.errors import DatasetError
from dataset.synthetic import MANIFEST, generate_dataset, main, motion_schedule, render_video
from lib.image_io import read_image, read_label_png

SIZE = (64, 112)


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_davis_layout_has_every_frame_annotated_and_lists_the_videos(tmp_path):
    root = generate_dataset(tmp_path / "d", "davis", num_videos=2, num_frames=6, size=SIZE, seed=3, split="train")
    names = (root / "ImageSets" / "2017" / "train.txt").read_text().split()
    assert names == ["synth000", "synth001"]
    assert (root / "ImageSets" / "2016" / "train.txt").read_text().split() == names
    for name in names:
        frames = sorted((root / "JPEGImages" / "480p" / name).iterdir())
        masks = sorted((root / "Annotations" / "480p" / name).iterdir())
        assert [p.name for p in frames] == [f"{t:05d}.jpg" for t in range(6)]
        assert [p.stem for p in masks] == [p.stem for p in frames]
        assert read_image(frames[0]).shape == (*SIZE, 3)
        assert read_label_png(masks[0]).shape == SIZE
    # video 0 always has max_objects objects, all visible in frame 0
    first = read_label_png(root / "Annotations" / "480p" / "synth000" / "00000.png")
    assert set(np.unique(first)) == {0, 1, 2, 3}


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    args = dict(layout="davis", num_videos=2, num_frames=5, size=SIZE, max_objects=2)
    a = generate_dataset(tmp_path / "a", seed=7, **args)
    b = generate_dataset(tmp_path / "b", seed=7, **args)
    c = generate_dataset(tmp_path / "c", seed=8, **args)
    assert _files(a) == _files(b) == _files(c)
    frames = [f for f in _files(a) if f.endswith(".jpg")]
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in _files(a) if f != MANIFEST)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in frames)


def test_generation_is_idempotent_and_never_overwrites_other_folders(tmp_path):
    args = dict(layout="davis", num_videos=1, num_frames=3, size=SIZE, seed=0)
    root = generate_dataset(tmp_path / "d", **args)
    frame = root / "JPEGImages" / "480p" / "synth000" / "00000.jpg"
    stamp = frame.stat().st_mtime_ns
    assert generate_dataset(tmp_path / "d", **args) == root
    assert frame.stat().st_mtime_ns == stamp  # not rewritten
    with pytest.raises(DatasetError, match="other arguments"):
        generate_dataset(tmp_path / "d", **{**args, "seed": 1})
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty"):
        generate_dataset(user, **args)
    assert (user / "notes.txt").read_text() == "mine" and len(list(user.iterdir())) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (generate_dataset(empty, **args) / MANIFEST).is_file()


def test_an_interrupted_generation_is_resumed_with_the_same_arguments(tmp_path):
    args = dict(layout="davis", num_videos=1, num_frames=3, size=SIZE, seed=0)
    root = generate_dataset(tmp_path / "d", **args)
    manifest = json.loads((root / MANIFEST).read_text())
    (root / MANIFEST).unlink()  # as if the run had died before its last write
    (root / ".synthetic_incomplete.json").write_text(json.dumps({"arguments": manifest["arguments"]}))
    (root / "ImageSets" / "2017" / "val.txt").unlink()
    generate_dataset(tmp_path / "d", **args)
    assert (root / MANIFEST).is_file() and (root / "ImageSets" / "2017" / "val.txt").is_file()
    assert not (root / ".synthetic_incomplete.json").exists()


def test_ytvos_valid_layout_has_later_objects_annotated_only_where_they_start(tmp_path):
    root = generate_dataset(tmp_path / "y", "ytvos", num_videos=2, num_frames=16, size=SIZE, seed=1, split="val")
    meta = json.loads((root / "valid" / "meta.json").read_text())["videos"]
    objects = meta["synth000"]["objects"]
    assert sorted(objects) == ["1", "2", "3"]
    starts = {int(o): int(v["frames"][0]) for o, v in objects.items()}
    assert starts[1] == 0 and max(starts.values()) > 0 and all(s % 5 == 0 for s in starts.values())
    all_frames = sorted(p.name for p in (root / "valid_all_frames" / "JPEGImages" / "synth000").iterdir())
    sparse = sorted(p.name for p in (root / "valid" / "JPEGImages" / "synth000").iterdir())
    assert all_frames == [f"{t:05d}.jpg" for t in range(16)]
    assert sparse == ["00000.jpg", "00005.jpg", "00010.jpg", "00015.jpg"]
    annotated = sorted(p.stem for p in (root / "valid" / "Annotations" / "synth000").iterdir())
    assert annotated == sorted({f"{s:05d}" for s in starts.values()})
    for frame in annotated:  # each holds exactly the objects that start there
        ids = set(np.unique(read_label_png(root / "valid" / "Annotations" / "synth000" / f"{frame}.png"))) - {0}
        assert ids == {o for o, s in starts.items() if s == int(frame)}
    assert not (root / "valid_all_frames" / "Annotations").exists()


def test_ytvos_train_layout_annotates_every_sparse_frame(tmp_path):
    root = generate_dataset(tmp_path / "y", "ytvos", num_videos=1, num_frames=11, size=SIZE, seed=2, split="train")
    annotated = sorted(p.stem for p in (root / "train" / "Annotations" / "synth000").iterdir())
    assert annotated == ["00000", "00005", "00010"]
    objects = json.loads((root / "train" / "meta.json").read_text())["videos"]["synth000"]["objects"]
    for oid, obj in objects.items():
        present = [f for f in annotated
                   if (read_label_png(root / "train" / "Annotations" / "synth000" / f"{f}.png") == int(oid)).any()]
        assert obj["frames"] == present


def test_motion_schedule_alternates_calm_and_fast_stretches():
    kinds = motion_schedule(np.random.default_rng(0), 40)
    assert len(kinds) == 40 and "fast" in kinds and ({"still", "slow"} & set(kinds))
    changes = [a for a, b in zip(kinds, kinds[1:]) if a != b]
    assert all((a == "fast") != (b == "fast") for a, b in zip(changes, changes[1:]))


@pytest.mark.parametrize("seed", [0, 1])
def test_still_stretches_only_change_by_noise_and_fast_ones_move_objects(seed):
    video = render_video(np.random.default_rng([seed, 0]), 30, SIZE, 2, later_objects=False)
    assert video.frames.shape == (30, *SIZE, 3) and video.labels.shape == (30, *SIZE)
    moved = []
    for t, kind in enumerate(video.motion):
        a, b = video.labels[t], video.labels[t + 1]
        if kind == "still":
            assert np.array_equal(a, b)
            assert np.abs(video.frames[t].astype(int) - video.frames[t + 1]).mean() < 4
        if kind == "fast":
            ious = [((a == o) & (b == o)).sum() / max(((a == o) | (b == o)).sum(), 1) for o in (1, 2)]
            moved.append(min(ious))
    assert moved and min(moved) < 0.6  # fast stretches really move things


def test_later_objects_are_absent_before_their_start_and_visible_at_it():
    video = render_video(np.random.default_rng(5), 21, SIZE, 3, later_objects=True)
    for oid, start in video.start_frames.items():
        assert (video.labels[start] == oid).any()
        assert not (video.labels[:start] == oid).any()
    assert max(video.start_frames.values()) > 0


def test_command_line_writes_the_requested_dataset(tmp_path, capsys):
    out = main(["--out", str(tmp_path / "cli"), "--layout", "ytvos", "--videos", "1", "--frames", "6",
                "--size", "80x48", "--seed", "4", "--split", "train"])
    assert read_image(out / "train_all_frames" / "JPEGImages" / "synth000" / "00005.jpg").shape == (48, 80, 3)
    assert "synthetic ytvos dataset" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "bad"), "--size", "48-80"])
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "cli"), "--layout", "ytvos", "--videos", "2"])  # other args: refused
