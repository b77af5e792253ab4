"""The evaluation-set readers added beside DAVIS and YouTube-VOS 2018 (DAVIS 2017 test-dev, YouTube-VOS
2019, MOSE, LVOS, a plain folder tree), on small trees written in their real layouts, their errors,
and how the registry describes every set."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dataset.errors import DatasetError
from dataset.folder import folder_is_fully_annotated
from dataset.registry import EVAL_SETS, EvalSetInfo, eval_set_info, load_eval_sequences
from dataset.sequence import VideoSequence
from dataset.synthetic import generate_dataset
from lib.image_io import read_label_png, write_image, write_label_png

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
H, W = 24, 32


# ----------------------------------------------------------------------------- tree builders
def _frame(path: Path, value: int = 100, size: tuple[int, int] = (H, W)) -> None:
    write_image(path, np.full((*size, 3), value, np.uint8))


def _labels(*objects: int) -> np.ndarray:
    """A (H, W) label map with one 4x4 square per object id, at a place of its own."""
    labels = np.zeros((H, W), np.uint8)
    for oid in objects:
        labels[2:6, 4 * oid:4 * oid + 4] = oid
    return labels


def _video(image_dir: Path, names: list[str]) -> None:
    for k, name in enumerate(names):
        _frame(image_dir / f"{name}.jpg", 40 + 10 * k)


def _names(count: int, step: int = 1, width: int = 5) -> list[str]:
    return [f"{i * step:0{width}d}" for i in range(count)]


def _davis_testdev(root: Path) -> Path:
    """DAVIS 2017 test-dev: two sequences of 5 frames, the first frame annotated only."""
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "test-dev.txt").write_text("carousel\nbike-trial\n")
    for name, objects in (("carousel", (1, 2, 3)), ("bike-trial", (1,))):
        _video(root / "JPEGImages" / "480p" / name, _names(5))
        write_label_png(root / "Annotations" / "480p" / name / "00000.png", _labels(*objects))
    return root


def _ytvos_valid(root: Path) -> Path:
    """YouTube-VOS valid/ (every 5th frame) and valid_all_frames/: object 2 of 'a1' starts at 00005."""
    meta = {"videos": {"a1": {"objects": {"1": {"category": "cat", "frames": ["00000", "00005", "00010"]},
                                          "2": {"category": "dog", "frames": ["00005", "00010"]}}},
                       "b2": {"objects": {"1": {"category": "car", "frames": ["00000", "00005", "00010"]}}}}}
    for video in meta["videos"]:
        _video(root / "valid" / "JPEGImages" / video, _names(3, step=5))
        _video(root / "valid_all_frames" / "JPEGImages" / video, _names(11))
    write_label_png(root / "valid" / "Annotations" / "a1" / "00000.png", _labels(1))
    write_label_png(root / "valid" / "Annotations" / "a1" / "00005.png", _labels(2))
    write_label_png(root / "valid" / "Annotations" / "b2" / "00000.png", _labels(1))
    (root / "valid" / "meta.json").write_text(json.dumps(meta))
    return root


def _mose(root: Path) -> Path:
    """MOSE valid: two videos, first-frame masks only (all objects in them)."""
    for video, count, objects in (("0a7b1c", 6, (1, 2)), ("ff2e31", 4, (1, 2, 3, 4))):
        _video(root / "valid" / "JPEGImages" / video, _names(count))
        write_label_png(root / "valid" / "Annotations" / video / "00000.png", _labels(*objects))
    return root


LVOS_FRAMES = _names(16, width=8)  # 00000000 .. 00000015, every 5th annotated


def _lvos(root: Path, meta_form: str = "frame_range") -> Path:
    """LVOS valid: 'v1' with object 2 starting at frame 00000010; sparse annotations (every 5th frame)."""
    starts = {"v1": {1: 0, 2: 10}, "v2": {1: 0}}
    for video in starts:
        _video(root / "valid" / "JPEGImages" / video, LVOS_FRAMES)
    for frame in (0, 5, 10, 15):
        write_label_png(root / "valid" / "Annotations" / "v1" / f"{LVOS_FRAMES[frame]}.png",
                        _labels(1, 2) if frame >= 10 else _labels(1))
        write_label_png(root / "valid" / "Annotations" / "v2" / f"{LVOS_FRAMES[frame]}.png", _labels(1))
    _write_lvos_meta(root, starts, meta_form)
    return root


def _write_lvos_meta(root: Path, starts: dict[str, dict[int, int]], form: str) -> None:
    def entry(start: int) -> dict:
        if form == "frames":
            return {"frames": LVOS_FRAMES[start::5]}
        return {"frame_range": {"start": LVOS_FRAMES[start], "end": LVOS_FRAMES[-1],
                                "frame_nums": len(LVOS_FRAMES) - start}}
    meta = {"videos": {v: {"objects": {str(o): entry(f) for o, f in objects.items()}} for v, objects in starts.items()}}
    (root / "valid" / "valid_meta.json").write_text(json.dumps(meta))


def _sparse_folder(root: Path) -> Path:
    """A folder tree: 'walk' annotated in frames 0, 2 and 4 only, object 2 appearing in frame 2."""
    _video(root / "JPEGImages" / "walk", _names(6))
    write_label_png(root / "Annotations" / "walk" / "00000.png", _labels(1))
    write_label_png(root / "Annotations" / "walk" / "00002.png", _labels(1, 2))
    write_label_png(root / "Annotations" / "walk" / "00004.png", _labels(2))
    return root


def _davis_as_folder(davis_root: Path, target: Path) -> Path:
    """The DAVIS sequences of `davis_root` copied into the folder layout (no 480p level)."""
    for kind in ("JPEGImages", "Annotations"):
        shutil.copytree(davis_root / kind / "480p", target / kind)
    return target


@pytest.fixture(scope="module")
def davis_root(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("davis"), "davis", num_videos=2, num_frames=6, size=(64, 112),
                            seed=21, max_objects=3, split="val")


def _assert_same_sequence(a: VideoSequence, b: VideoSequence) -> None:
    """Equal in every field a run depends on: frames, objects, starts, written and scored frames, masks."""
    assert (a.name, a.frame_names, a.object_ids, a.start_frames, a.merge_objects) == \
        (b.name, b.frame_names, b.object_ids, b.start_frames, b.merge_objects)
    assert a.annotated_frames == b.annotated_frames and a.output_frames == b.output_frames
    assert [p.name for p in a.image_paths] == [p.name for p in b.image_paths]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a.image_paths, b.image_paths))
    for i in a.annotated_frames:
        assert np.array_equal(a.annotation(i), b.annotation(i))
    for i in sorted(set(a.start_frames.values())):
        masks_a, masks_b = a.start_masks(i), b.start_masks(i)
        assert sorted(masks_a) == sorted(masks_b) and all(np.array_equal(masks_a[o], masks_b[o]) for o in masks_a)


# ----------------------------------------------------------------------------- registry
def test_every_set_has_its_root_flag_scoring_and_submission():
    expected = {
        "dv2016val": ("--davis-root", "davis", None), "dv2017val": ("--davis-root", "davis", None),
        "dv2017testdev": ("--davis-root", None, "davis"),
        "yt2018jjval": ("--ytvos-root", "late-objects", None),
        "yt2018val": ("--ytvos-root", None, "ytvos"), "yt2018valAll": ("--ytvos-root", None, "ytvos"),
        "yt2019val": ("--yt2019-root", None, "ytvos"), "yt2019valAll": ("--yt2019-root", None, "ytvos"),
        "mose": ("--mose-root", None, "ytvos"), "lvos": ("--lvos-root", "late-objects", None),
        "folder": ("--root", None, None),
    }
    assert set(EVAL_SETS) == set(expected)
    for name, (flag, scoring, submission) in expected.items():
        assert eval_set_info(name) == EvalSetInfo(name, flag, scoring, submission)
    with pytest.raises(AttributeError):
        eval_set_info("mose").scoring = "davis"  # frozen
    with pytest.raises(DatasetError, match="unknown evaluation set 'dv2019val'"):
        eval_set_info("dv2019val")


def test_split_files_are_refused_where_a_set_takes_every_video(tmp_path):
    for dset in ("mose", "lvos", "folder"):
        with pytest.raises(DatasetError, match=f"--split-file is for the YouTube-VOS sets; {dset} .*--sequences"):
            load_eval_sequences(dset, tmp_path, split_file=tmp_path / "list.txt")
    with pytest.raises(DatasetError, match="dv2017testdev reads its list from ImageSets/"):
        load_eval_sequences("dv2017testdev", tmp_path, split_file=tmp_path / "list.txt")


# ----------------------------------------------------------------------------- DAVIS 2017 test-dev
def test_dv2017testdev_reads_the_test_dev_list_with_first_frame_masks_only(tmp_path):
    root = _davis_testdev(tmp_path / "davis")
    seqs = load_eval_sequences("dv2017testdev", root)
    assert [s.name for s in seqs] == ["carousel", "bike-trial"]  # the list's order
    carousel = seqs[0]
    assert carousel.frame_names == _names(5) and carousel.size == (H, W)
    assert carousel.object_ids == [1, 2, 3] and carousel.start_frames == {1: 0, 2: 0, 3: 0}
    assert carousel.annotated_frames == [0] and carousel.output_frames == [0, 1, 2, 3, 4]
    assert np.array_equal(carousel.start_masks(0)[2], _labels(1, 2, 3) == 2)
    assert seqs[1].object_ids == [1]
    assert [s.name for s in load_eval_sequences("dv2017testdev", root, sequences=["bike-trial"])] == ["bike-trial"]
    assert eval_set_info("dv2017testdev", seqs).scoring is None


def test_dv2017testdev_errors(tmp_path):
    with pytest.raises(DatasetError, match="DAVIS root not found; point --davis-root"):
        load_eval_sequences("dv2017testdev", tmp_path / "nowhere")
    root = _davis_testdev(tmp_path / "davis")
    (root / "Annotations" / "480p" / "bike-trial" / "00000.png").unlink()
    with pytest.raises(DatasetError, match="bike-trial/00000.png: sequence 'bike-trial' has no annotation for its"):
        load_eval_sequences("dv2017testdev", root)
    (root / "ImageSets" / "2017" / "test-dev.txt").write_text("carousel\nhorsejump-stick\n")
    with pytest.raises(DatasetError, match=r"horsejump-stick: frame folder of sequence 'horsejump-stick' \(listed in "
                                           r".*test-dev.txt\) not found"):
        load_eval_sequences("dv2017testdev", root)
    (root / "ImageSets" / "2017" / "test-dev.txt").unlink()
    with pytest.raises(DatasetError, match="test-dev.txt: DAVIS test-dev list not found; dv2017testdev needs"):
        load_eval_sequences("dv2017testdev", root)


# ----------------------------------------------------------------------------- YouTube-VOS 2019
def test_yt2019val_and_valAll_read_the_2018_layout_under_their_own_root(tmp_path):
    root = _ytvos_valid(tmp_path / "yt2019")
    seqs = load_eval_sequences("yt2019val", root)
    assert [s.name for s in seqs] == ["a1", "b2"]
    a1 = seqs[0]
    assert a1.frame_names == ["00000", "00005", "00010"] and a1.output_frames == [0, 1, 2]
    assert a1.object_ids == [1, 2] and a1.start_frames == {1: 0, 2: 1}  # object 2 starts later
    assert a1.annotated_frames == [0, 1] and a1.start_masks(1)[2].sum() == 16
    every = load_eval_sequences("yt2019valAll", root, sequences=["a1"])[0]
    assert len(every) == 11 and every.start_frames == {1: 0, 2: 5} and every.output_frames == [0, 5, 10]
    split = tmp_path / "only_b2.txt"
    split.write_text("b2\n")
    assert [s.name for s in load_eval_sequences("yt2019val", root, split_file=split)] == ["b2"]
    # the same tree as a 2018 root gives the same sequences
    for dset in ("val", "valAll"):
        for new, old in zip(load_eval_sequences(f"yt2019{dset}", root), load_eval_sequences(f"yt2018{dset}", root)):
            _assert_same_sequence(new, old)


def test_yt2019_messages_name_the_2019_set_and_its_flag(tmp_path):
    with pytest.raises(DatasetError, match="YouTube-VOS 2019 root not found; point --yt2019-root"):
        load_eval_sequences("yt2019val", tmp_path / "nowhere")
    root = _ytvos_valid(tmp_path / "yt2019")
    shutil.rmtree(root / "valid_all_frames")
    with pytest.raises(DatasetError, match=r"yt2019valAll reads valid_all_frames .*2019 root, --yt2019-root"):
        load_eval_sequences("yt2019valAll", root)
    (root / "valid" / "Annotations" / "a1" / "00005.png").unlink()
    with pytest.raises(DatasetError, match="a1/00005.png: missing; object 2 of a1 first appears in frame 00005"):
        load_eval_sequences("yt2019val", root)
    (root / "valid" / "meta.json").write_text("{truncated")
    with pytest.raises(DatasetError, match="meta.json: not a YouTube-VOS meta.json"):
        load_eval_sequences("yt2019val", root)
    shutil.rmtree(root / "valid")
    with pytest.raises(DatasetError, match=r"valid: not found; yt2019val and yt2019valAll need valid/ .*--yt2019-root"):
        load_eval_sequences("yt2019val", root)


# ----------------------------------------------------------------------------- MOSE
def test_mose_reads_every_video_with_its_first_frame_objects(tmp_path):
    root = _mose(tmp_path / "mose")
    seqs = load_eval_sequences("mose", root)
    assert [s.name for s in seqs] == ["0a7b1c", "ff2e31"]  # folder name order
    first, second = seqs
    assert first.frame_names == _names(6) and first.output_frames == list(range(6))
    assert first.object_ids == [1, 2] and first.start_frames == {1: 0, 2: 0} and first.annotated_frames == [0]
    assert second.object_ids == [1, 2, 3, 4] and len(second) == 4
    assert np.array_equal(second.start_masks(0)[4], _labels(1, 2, 3, 4) == 4)
    assert [s.name for s in load_eval_sequences("mose", root, sequences=["ff2e31"])] == ["ff2e31"]
    with pytest.raises(DatasetError, match=r"unknown sequences \['zzz'\]"):
        load_eval_sequences("mose", root, sequences=["zzz"])


def test_mose_errors(tmp_path):
    with pytest.raises(DatasetError, match="MOSE root not found; point --mose-root"):
        load_eval_sequences("mose", tmp_path / "nowhere")
    root = _mose(tmp_path / "mose")
    annotations = root / "valid" / "Annotations" / "ff2e31" / "00000.png"
    annotations.unlink()
    with pytest.raises(DatasetError, match="ff2e31/00000.png: missing; MOSE gives the objects of video 'ff2e31'"):
        load_eval_sequences("mose", root)
    write_label_png(annotations, np.zeros((H, W), np.uint8))
    with pytest.raises(DatasetError, match="ff2e31/00000.png: the first-frame mask of 'ff2e31' contains no object"):
        load_eval_sequences("mose", root)
    write_label_png(annotations, _labels(1))
    _frame(root / "valid" / "JPEGImages" / "ff2e31" / "00002.jpg", size=(H, W + 8))
    with pytest.raises(DatasetError, match="00002.jpg: frame is 40x24 but .*00000.jpg is 32x24"):
        load_eval_sequences("mose", root)
    (root / "valid" / "JPEGImages" / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty: no frames"):
        load_eval_sequences("mose", root, sequences=["empty"])
    shutil.rmtree(root / "valid" / "Annotations")
    with pytest.raises(DatasetError, match=r"valid/Annotations: not found; mose reads .* under --mose-root"):
        load_eval_sequences("mose", root)


# ----------------------------------------------------------------------------- LVOS
@pytest.mark.parametrize("meta_form", ["frame_range", "frames"])
def test_lvos_objects_start_at_their_meta_start_and_annotated_frames_are_scored(tmp_path, meta_form):
    root = _lvos(tmp_path / "lvos", meta_form)
    seqs = load_eval_sequences("lvos", root)
    assert [s.name for s in seqs] == ["v1", "v2"]
    v1 = seqs[0]
    assert v1.frame_names == LVOS_FRAMES and v1.output_frames == list(range(16))
    assert v1.object_ids == [1, 2] and v1.start_frames == {1: 0, 2: 10}
    assert v1.annotated_frames == [0, 5, 10, 15]
    assert sorted(v1.start_masks(10)) == [2] and v1.start_masks(5) == {}
    assert np.array_equal(v1.annotation(15), _labels(1, 2))
    assert seqs[1].start_frames == {1: 0}


def test_lvos_start_given_as_a_frame_number(tmp_path):
    root = _lvos(tmp_path / "lvos")
    meta_path = root / "valid" / "valid_meta.json"
    meta = json.loads(meta_path.read_text())
    meta["videos"]["v1"]["objects"]["2"]["frame_range"]["start"] = 10
    meta_path.write_text(json.dumps(meta))
    assert load_eval_sequences("lvos", root, sequences=["v1"])[0].start_frames == {1: 0, 2: 10}


def test_lvos_errors(tmp_path):
    with pytest.raises(DatasetError, match="LVOS root not found; point --lvos-root"):
        load_eval_sequences("lvos", tmp_path / "nowhere")
    root = _lvos(tmp_path / "lvos")
    meta_path = root / "valid" / "valid_meta.json"
    good = meta_path.read_text()

    def with_meta(text: str, match: str) -> None:
        meta_path.write_text(text)
        with pytest.raises(DatasetError, match=match):
            load_eval_sequences("lvos", root)
        meta_path.write_text(good)

    with_meta("{oops", r"valid_meta.json: unreadable LVOS meta file .*expected \{\"videos\"")
    with_meta(json.dumps([1, 2]), r"valid_meta.json: not a recognised LVOS meta file .*frame_range")
    with_meta(json.dumps({"videos": {"v1": {"objects": {"1": {"start": "00000000"}}}}}),
              r"object 1 of video 'v1' gives no start frame \(neither frame_range.start nor frames\); expected")
    with_meta(json.dumps({"videos": {"v1": {"objects": {"0": {"frames": ["00000000"]}}}}}), "object id '0'")
    with_meta(json.dumps({"videos": {"v9": {"objects": {"1": {"frames": ["00000000"]}}}}}),
              r"v9: frame folder of video 'v9' \(listed in .*valid_meta.json\) not found")
    with_meta(good.replace('"start": "00000010"', '"start": "00000099"'),
              r"object 2 of v1 starts in frame '00000099', which is not among its frames 00000000..00000015")
    with_meta(good.replace('"start": "00000010"', '"start": "00000011"'),
              "v1/00000011.png: missing; object 2 of v1 starts in frame 00000011 and needs its annotation there")
    with_meta(good.replace('"start": "00000010"', '"start": "00000005"'),
              r"00000005.png: objects \[2\] of v1 should first appear in this frame but have no pixel in it")
    meta_path.unlink()
    with pytest.raises(DatasetError, match="valid_meta.json: LVOS meta file not found"):
        load_eval_sequences("lvos", root)
    shutil.rmtree(root / "valid" / "Annotations")
    with pytest.raises(DatasetError, match=r"valid/Annotations: not found; lvos reads .* under --lvos-root"):
        load_eval_sequences("lvos", root)


# ----------------------------------------------------------------------------- folder
def test_a_fully_annotated_folder_is_read_exactly_like_dv2017val(davis_root, tmp_path):
    folder = _davis_as_folder(davis_root, tmp_path / "tree")
    as_folder = load_eval_sequences("folder", folder)
    as_davis = load_eval_sequences("dv2017val", davis_root)
    assert [s.name for s in as_folder] == [s.name for s in as_davis] == ["synth000", "synth001"]
    for a, b in zip(as_folder, as_davis):
        _assert_same_sequence(a, b)
        assert a.image_paths[0].parent == folder / "JPEGImages" / a.name
    assert as_folder[0].object_ids == [1, 2, 3]
    assert folder_is_fully_annotated(as_folder)
    # scored on each sequence's own objects (the ids present), which are DAVIS's 1..max here
    assert eval_set_info("folder", as_folder).scoring == "late-objects"
    assert eval_set_info("dv2017val").scoring == "davis"


def test_a_fully_annotated_folder_takes_the_objects_of_its_first_frame_only(tmp_path):
    """Object 3 shows up in frame 2 of a sequence annotated in every frame: DAVIS ignores it, so does folder."""
    davis, tree = tmp_path / "davis", tmp_path / "tree"
    (davis / "ImageSets" / "2017").mkdir(parents=True)
    (davis / "ImageSets" / "2017" / "val.txt").write_text("late\n")
    for images, annotations in ((davis / "JPEGImages" / "480p", davis / "Annotations" / "480p"),
                                (tree / "JPEGImages", tree / "Annotations")):
        _video(images / "late", _names(4))
        for i in range(4):
            write_label_png(annotations / "late" / f"{i:05d}.png", _labels(1, 3) if i >= 2 else _labels(1))
    as_folder, as_davis = load_eval_sequences("folder", tree)[0], load_eval_sequences("dv2017val", davis)[0]
    _assert_same_sequence(as_folder, as_davis)
    assert as_folder.object_ids == [1] and as_folder.start_frames == {1: 0}
    assert as_folder.annotated_frames == [0, 1, 2, 3]
    (tree / "Annotations" / "late" / "00001.png").unlink()  # no longer complete: objects are scanned
    sparse = load_eval_sequences("folder", tree)[0]
    assert sparse.object_ids == [1, 3] and sparse.start_frames == {1: 0, 3: 2} and sparse.annotated_frames == [0, 2, 3]


def test_a_sparsely_annotated_folder_scans_its_annotations_and_is_not_scored(davis_root, tmp_path):
    root = _sparse_folder(tmp_path / "tree")
    walk = load_eval_sequences("folder", root)[0]
    assert walk.frame_names == _names(6) and walk.output_frames == list(range(6))
    assert walk.object_ids == [1, 2] and walk.start_frames == {1: 0, 2: 2}
    assert walk.annotated_frames == [0, 2, 4] and sorted(walk.start_masks(2)) == [2]
    assert not folder_is_fully_annotated([walk]) and eval_set_info("folder", [walk]).scoring is None
    # one sparse sequence beside a full one: the full one keeps the DAVIS rules, the set is not scored
    _davis_as_folder(davis_root, root / "more")
    shutil.copytree(root / "more" / "JPEGImages" / "synth000", root / "JPEGImages" / "synth000")
    shutil.copytree(root / "more" / "Annotations" / "synth000", root / "Annotations" / "synth000")
    seqs = load_eval_sequences("folder", root)
    assert [s.name for s in seqs] == ["synth000", "walk"]
    _assert_same_sequence(seqs[0], load_eval_sequences("dv2017val", davis_root, sequences=["synth000"])[0])
    assert eval_set_info("folder", seqs).scoring is None
    assert eval_set_info("folder", seqs[:1]).scoring == "late-objects"
    assert eval_set_info("folder", load_eval_sequences("folder", root, sequences=["synth000"])).scoring == \
        "late-objects"


def test_folder_errors(davis_root, tmp_path):
    with pytest.raises(DatasetError, match="root not found; point --root at the folder holding JPEGImages"):
        load_eval_sequences("folder", tmp_path / "nowhere")
    with pytest.raises(DatasetError, match=r"480p: holds folders \(synth000, synth001\), not frames; .*dv2017val"):
        load_eval_sequences("folder", davis_root)
    root = _sparse_folder(tmp_path / "tree")
    (root / "Annotations" / "walk" / "00000.png").unlink()
    with pytest.raises(DatasetError, match="walk/00000.png: sequence 'walk' has no annotation for its first frame"):
        load_eval_sequences("folder", root)
    full = _davis_as_folder(davis_root, tmp_path / "full")
    (full / "Annotations" / "synth001" / "00000.png").unlink()  # now sparse, and without its first mask
    with pytest.raises(DatasetError, match="synth001/00000.png: sequence 'synth001' has no annotation for its first"):
        load_eval_sequences("folder", full)
    shutil.copy(davis_root / "Annotations" / "480p" / "synth001" / "00000.png", full / "Annotations" / "synth001")
    write_label_png(full / "Annotations" / "synth001" / "00000.png", np.zeros((64, 112), np.uint8))
    with pytest.raises(DatasetError, match="the first annotation of 'synth001' contains no object"):
        load_eval_sequences("folder", full)  # fully annotated: the DAVIS rule, objects of the first frame
    (full / "JPEGImages" / "bare").mkdir()
    with pytest.raises(DatasetError, match="bare: no frames .* for sequence 'bare'"):
        load_eval_sequences("folder", full, sequences=["bare"])
    shutil.rmtree(full / "Annotations")
    with pytest.raises(DatasetError, match=r"Annotations: not found; the folder set reads .* under --root"):
        load_eval_sequences("folder", full)


# ----------------------------------------------------------------------------- real DAVIS sequences
def test_real_davis_sequences_in_the_folder_layout_match_dv2017val(tmp_path):
    davis = SHARED / "data" / "davis-mini"
    if not davis.is_dir():
        pytest.skip("the real DAVIS sequences are not available")
    tree = tmp_path / "tree"
    for kind in ("JPEGImages", "Annotations"):
        (tree / kind).mkdir(parents=True)
        for seq in (davis / kind / "480p").iterdir():
            (tree / kind / seq.name).symlink_to(seq, target_is_directory=True)
    as_folder = load_eval_sequences("folder", tree)
    as_davis = load_eval_sequences("dv2017val", davis)
    assert [s.name for s in as_folder] == ["blackswan", "car-shadow", "kite-surf"] == [s.name for s in as_davis]
    for a, b in zip(as_folder, as_davis):
        _assert_same_sequence(a, b)
    assert eval_set_info("folder", as_folder).scoring == "late-objects"
    assert read_label_png(as_folder[2].annotation_paths[0]).max() == 3
