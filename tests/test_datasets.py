"""Evaluation readers (DAVIS 2016/2017, YouTube-VOS) on synthetic and real data, and their errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from dataset.errors import DatasetError
from dataset.registry import EVAL_SETS, load_eval_sequences
from dataset.synthetic import generate_dataset
from lib.image_io import ImageReadError, read_image, read_label_png, write_label_png

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SIZE = (64, 112)


@pytest.fixture(scope="module")
def davis_root(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("davis"), "davis", num_videos=2, num_frames=8, size=SIZE,
                            seed=11, max_objects=3, split="val")


@pytest.fixture(scope="module")
def ytvos_valid(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("ytv"), "ytvos", num_videos=2, num_frames=16, size=SIZE,
                            seed=12, max_objects=3, split="val")


@pytest.fixture(scope="module")
def ytvos_train(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("ytt"), "ytvos", num_videos=2, num_frames=16, size=SIZE,
                            seed=13, max_objects=3, split="train")


def _copy(root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(root, tmp_path / "copy"))


def _meta_starts(root: Path, folder: str, video: str) -> dict[int, str]:
    objects = json.loads((root / folder / "meta.json").read_text())["videos"][video]["objects"]
    return {int(o): v["frames"][0] for o, v in objects.items()}


# ----------------------------------------------------------------------------- DAVIS
def test_dv2017val_reads_objects_frames_and_annotations(davis_root):
    seqs = load_eval_sequences("dv2017val", davis_root)
    assert [s.name for s in seqs] == ["synth000", "synth001"]
    seq = seqs[0]
    first = read_label_png(davis_root / "Annotations" / "480p" / "synth000" / "00000.png")
    assert seq.object_ids == [1, 2, 3] == sorted(set(np.unique(first)) - {0})
    assert seq.start_frames == {1: 0, 2: 0, 3: 0}
    assert len(seq) == 8 and seq.frame_names == [f"{t:05d}" for t in range(8)]
    assert seq.annotated_frames == list(range(8)) and seq.output_frames == list(range(8))
    assert seq.size == SIZE and not seq.merge_objects
    assert np.array_equal(seq.annotation(3), read_label_png(seq.annotation_paths[3]))
    masks = seq.start_masks(0)
    assert sorted(masks) == [1, 2, 3] and all(m.dtype == bool and m.any() for m in masks.values())
    assert np.array_equal(masks[2], first == 2)
    assert seq.start_masks(1) == {}


def test_frames_are_read_in_order_one_at_a_time(davis_root):
    seq = load_eval_sequences("dv2017val", davis_root, sequences=["synth001"])[0]
    frames = seq.frames()
    index, first = next(frames)  # a generator: nothing is read ahead
    assert index == 0 and np.array_equal(first, read_image(seq.image_paths[0]))
    rest = list(frames)
    assert [i for i, _ in rest] == list(range(1, 8))
    assert all(np.array_equal(img, read_image(seq.image_paths[i])) for i, img in rest)
    assert np.array_equal(seq.image(3), rest[2][1]) and seq.frame_size(3) == first.shape[:2]


def test_dv2016val_merges_all_objects_into_one(davis_root):
    seq = load_eval_sequences("dv2016val", davis_root, sequences=["synth000"])[0]
    assert seq.merge_objects and seq.object_ids == [1] and seq.start_frames == {1: 0}
    raw = read_label_png(seq.annotation_paths[4])
    assert len(np.unique(raw)) > 2  # several objects on disk ...
    assert np.array_equal(seq.annotation(4), (raw != 0).astype(np.uint8))  # ... one object when read
    assert np.array_equal(seq.start_masks(0)[1], read_label_png(seq.annotation_paths[0]) != 0)


def _original_2016_copy(davis_root: Path, target: Path, names: list[str]) -> Path:
    """The original DAVIS 2016 release layout: 0/255 greyscale masks and a frame list."""
    lines = []
    for name in names:
        for image in sorted((davis_root / "JPEGImages" / "480p" / name).iterdir()):
            mask = read_label_png(davis_root / "Annotations" / "480p" / name / f"{image.stem}.png")
            out_mask = target / "Annotations" / "480p" / name / f"{image.stem}.png"
            out_mask.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.where(mask != 0, 255, 0).astype(np.uint8), mode="L").save(out_mask)
            out_image = target / "JPEGImages" / "480p" / name / image.name
            out_image.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(image, out_image)
            lines.append(f"/JPEGImages/480p/{name}/{image.name} /Annotations/480p/{name}/{image.stem}.png")
    (target / "ImageSets" / "480p").mkdir(parents=True)
    (target / "ImageSets" / "480p" / "val.txt").write_text("\n".join(lines) + "\n")
    return target


def _assert_same_merged_sequences(a, b):
    assert [s.name for s in a] == [s.name for s in b]
    for x, y in zip(a, b):
        assert x.frame_names == y.frame_names and x.object_ids == y.object_ids == [1]
        assert x.annotated_frames == y.annotated_frames
        for i in x.annotated_frames:
            assert np.array_equal(x.annotation(i), y.annotation(i))


def test_original_2016_release_gives_the_same_merged_masks_as_the_2017_layout(davis_root, tmp_path):
    original = _original_2016_copy(davis_root, tmp_path / "davis2016", ["synth000", "synth001"])
    _assert_same_merged_sequences(load_eval_sequences("dv2016val", davis_root),
                                  load_eval_sequences("dv2016val", original))


def test_real_car_shadow_is_identical_in_both_davis_2016_layouts():
    if not (SHARED / "data" / "davis2016-mini").is_dir() or not (SHARED / "data" / "davis-mini").is_dir():
        pytest.skip("../shared/data is not available")
    original = load_eval_sequences("dv2016val", SHARED / "data" / "davis2016-mini")
    layout2017 = load_eval_sequences("dv2016val", SHARED / "data" / "davis-mini", sequences=["car-shadow"])
    assert [s.name for s in original] == ["car-shadow"] and len(original[0]) == 40
    _assert_same_merged_sequences(original, layout2017)


def test_real_davis_mini_loads():
    root = SHARED / "data" / "davis-mini"
    if not root.is_dir():
        pytest.skip("../shared/data/davis-mini is not available")
    seqs = {s.name: s for s in load_eval_sequences("dv2017val", root)}
    assert sorted(seqs) == ["blackswan", "car-shadow", "kite-surf"]
    assert [len(seqs[n]) for n in sorted(seqs)] == [50, 40, 50]
    assert seqs["kite-surf"].object_ids == [1, 2, 3] and seqs["blackswan"].object_ids == [1]
    assert seqs["kite-surf"].size == (480, 854)
    assert seqs["car-shadow"].image(39).shape == (480, 854, 3)
    assert [s.name for s in load_eval_sequences("dv2016val", root)] == ["blackswan", "car-shadow"]


# ----------------------------------------------------------------------------- YouTube-VOS
def test_yt2018val_objects_start_where_meta_json_says(ytvos_valid):
    seqs = load_eval_sequences("yt2018val", ytvos_valid)
    seq = next(s for s in seqs if s.name == "synth000")
    starts = _meta_starts(ytvos_valid, "valid", "synth000")
    assert seq.object_ids == sorted(starts) == [1, 2, 3]
    assert {o: seq.frame_names[f] for o, f in seq.start_frames.items()} == starts
    assert max(seq.start_frames.values()) > 0  # an object appears later
    assert len(seq) == 4 and seq.frame_names == ["00000", "00005", "00010", "00015"]
    assert seq.annotated_frames == sorted(set(seq.start_frames.values()))
    assert seq.output_frames == [0, 1, 2, 3]
    later = max(seq.start_frames.values())
    masks = seq.start_masks(later)
    assert sorted(masks) == [o for o, f in seq.start_frames.items() if f == later]
    assert all(m.any() and m.shape == SIZE for m in masks.values())


def test_yt2018valAll_uses_all_frames_and_writes_the_valid_frames(ytvos_valid, tmp_path):
    seq = load_eval_sequences("yt2018valAll", ytvos_valid, sequences=["synth000"])[0]
    assert len(seq) == 16 and seq.output_frames == [0, 5, 10, 15]
    starts = _meta_starts(ytvos_valid, "valid", "synth000")
    assert {o: seq.frame_names[f] for o, f in seq.start_frames.items()} == starts
    assert all(p.is_relative_to(ytvos_valid / "valid" / "Annotations") for p in seq.annotation_paths.values())
    # valid_all_frames with its own Annotations: those are used
    root = _copy(ytvos_valid, tmp_path)
    shutil.copytree(root / "valid" / "Annotations", root / "valid_all_frames" / "Annotations")
    seq = load_eval_sequences("yt2018valAll", root, sequences=["synth000"])[0]
    assert all(p.is_relative_to(root / "valid_all_frames" / "Annotations") for p in seq.annotation_paths.values())


def test_yt2018jjval_reads_the_published_list_by_default_and_follows_a_split_file(ytvos_train, tmp_path):
    # by default the published list's 300 videos, which this small synthetic root does not hold
    with pytest.raises(DatasetError, match="ytvos_jjvalid.txt"):
        load_eval_sequences("yt2018jjval", ytvos_train)
    split = tmp_path / "jj.txt"
    split.write_text("synth001\nsynth000\n")
    seqs = load_eval_sequences("yt2018jjval", ytvos_train, split_file=split)
    assert [s.name for s in seqs] == ["synth001", "synth000"]
    seq = seqs[1]
    assert len(seq) == 16 and seq.annotated_frames == [0, 5, 10, 15] == seq.output_frames
    starts = _meta_starts(ytvos_train, "train", "synth000")
    assert {o: seq.frame_names[f] for o, f in seq.start_frames.items()} == starts
    # without meta.json the start frames come from the annotations themselves
    root = _copy(ytvos_train, tmp_path)
    (root / "train" / "meta.json").unlink()
    scanned = load_eval_sequences("yt2018jjval", root, split_file=split)[1]
    assert scanned.start_frames == seq.start_frames


# ----------------------------------------------------------------------------- bad input
def test_unknown_sets_roots_split_files_and_sequences_are_reported(davis_root, tmp_path):
    assert "dv2017val" in EVAL_SETS
    with pytest.raises(DatasetError, match="unknown evaluation set"):
        load_eval_sequences("dv2019val", davis_root)
    with pytest.raises(DatasetError, match="DAVIS root not found"):
        load_eval_sequences("dv2017val", tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="YouTube-VOS root not found"):
        load_eval_sequences("yt2018val", tmp_path / "nowhere")
    with pytest.raises(DatasetError, match=r"unknown sequences \['bear', 'dog'\]"):
        load_eval_sequences("dv2017val", davis_root, sequences=["synth000", "bear", "dog"])
    root = _copy(davis_root, tmp_path)
    (root / "ImageSets" / "2017" / "val.txt").unlink()
    with pytest.raises(DatasetError, match=r"ImageSets/2017/val.txt: DAVIS split file not found"):
        load_eval_sequences("dv2017val", root)
    with pytest.raises(DatasetError, match="split file not found"):
        load_eval_sequences("yt2018jjval", tmp_path, split_file=tmp_path / "missing.txt")


def test_missing_first_annotation_is_reported_up_front(davis_root, ytvos_valid, tmp_path):
    root = _copy(davis_root, tmp_path)
    (root / "Annotations" / "480p" / "synth001" / "00000.png").unlink()
    with pytest.raises(DatasetError, match=r"synth001/00000.png: sequence 'synth001' has no annotation for its first"):
        load_eval_sequences("dv2017val", root)
    yt = Path(shutil.copytree(ytvos_valid, tmp_path / "yt"))
    later = max(_meta_starts(yt, "valid", "synth000").values())
    (yt / "valid" / "Annotations" / "synth000" / f"{later}.png").unlink()
    with pytest.raises(DatasetError, match=f"synth000/{later}.png: missing"):
        load_eval_sequences("yt2018val", yt)


def test_annotation_size_differing_from_its_frame_is_reported(davis_root, tmp_path):
    root = _copy(davis_root, tmp_path)
    first = root / "Annotations" / "480p" / "synth000" / "00000.png"
    write_label_png(first, np.ones((32, 56), np.uint8))
    with pytest.raises(DatasetError, match=r"00000.png: annotation is 56x32 but its frame .* is 112x64"):
        load_eval_sequences("dv2017val", root)
    write_label_png(first, read_label_png(davis_root / "Annotations" / "480p" / "synth000" / "00000.png"))
    later = root / "Annotations" / "480p" / "synth000" / "00005.png"
    write_label_png(later, np.ones((32, 56), np.uint8))
    seq = load_eval_sequences("dv2017val", root)[0]  # later frames are checked when read
    with pytest.raises(DatasetError, match="00005.png: annotation is 56x32"):
        seq.annotation(5)


def test_unreadable_images_are_named(davis_root, tmp_path):
    root = _copy(davis_root, tmp_path)
    (root / "JPEGImages" / "480p" / "synth001" / "00000.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ImageReadError, match="synth001/00000.jpg"):
        load_eval_sequences("dv2017val", root)
    shutil.copy(davis_root / "JPEGImages" / "480p" / "synth001" / "00000.jpg",
                root / "JPEGImages" / "480p" / "synth001" / "00000.jpg")
    (root / "JPEGImages" / "480p" / "synth001" / "00006.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match="00006.jpg: empty frame file"):
        load_eval_sequences("dv2017val", root)
    (root / "JPEGImages" / "480p" / "synth001" / "00006.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ImageReadError, match="00006.jpg: not a readable image"):  # every header is read up front
        load_eval_sequences("dv2017val", root)
    whole = (davis_root / "JPEGImages" / "480p" / "synth001" / "00006.jpg").read_bytes()
    (root / "JPEGImages" / "480p" / "synth001" / "00006.jpg").write_bytes(whole[:len(whole) // 2])
    seq = load_eval_sequences("dv2017val", root, sequences=["synth001"])[0]  # a sound header, a cut-off body:
    with pytest.raises(ImageReadError, match="00006.jpg: not a readable image"):  # found when decoded
        list(seq.frames())
    shutil.copy(davis_root / "JPEGImages" / "480p" / "synth001" / "00006.jpg", root / "JPEGImages" / "480p" / "synth001")
    cv2.imwrite(str(root / "JPEGImages" / "480p" / "synth001" / "00003.jpg"), np.zeros((32, 56, 3), np.uint8))
    with pytest.raises(DatasetError, match="00003.jpg: frame is 56x32 but .*00000.jpg is 112x64"):
        load_eval_sequences("dv2017val", root)


def test_annotation_ids_missing_from_meta_json_are_reported(ytvos_valid, tmp_path):
    root = _copy(ytvos_valid, tmp_path)
    meta_path = root / "valid" / "meta.json"
    meta = json.loads(meta_path.read_text())
    starts = _meta_starts(root, "valid", "synth000")
    dropped = max(o for o, f in starts.items() if f == "00000")
    del meta["videos"]["synth000"]["objects"][str(dropped)]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=rf"00000.png: object ids \[{dropped}\] are not listed for synth000"):
        load_eval_sequences("yt2018val", root)
    meta_path.write_text("{not json")
    with pytest.raises(DatasetError, match="meta.json: not a YouTube-VOS meta.json"):
        load_eval_sequences("yt2018val", root)
