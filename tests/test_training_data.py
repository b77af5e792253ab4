"""Training samples: visibility rule, epoch composition, determinism, statistics cache."""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import dataset.stats_cache as stats_cache
from dataset.errors import DatasetError
from dataset.synthetic import generate_dataset
from dataset.training import build_training_set, resize_image, resize_labels, visible_frames
from lib.image_io import read_label_png, write_label_png
from models.config import TrainConfig

SIZE = (64, 112)
CFG = replace(TrainConfig(), seq_len=3, image_size=(48, 80), davis_repeats=2, ytvos_samples=7,
              min_visible_px=30, workers=1, seed=5)


@pytest.fixture(scope="module")
def davis_root(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("davis"), "davis", num_videos=3, num_frames=8, size=SIZE,
                            seed=21, max_objects=3, split="train")


@pytest.fixture(scope="module")
def ytvos_root(tmp_path_factory):
    # 21 frames -> 5 annotated (every 5th) frames = seq_len + 2
    return generate_dataset(tmp_path_factory.mktemp("ytvos"), "ytvos", num_videos=3, num_frames=21, size=SIZE,
                            seed=22, max_objects=2, split="train")


def _items(ds, indices):
    return [ds[i] for i in indices]


def _same(a: dict, b: dict) -> bool:
    return (a["sequence"] == b["sequence"] and a["object_id"] == b["object_id"]
            and torch.equal(a["frames"], b["frames"]) and torch.equal(a["images"], b["images"])
            and torch.equal(a["labels"], b["labels"]))


def test_visibility_needs_enough_pixels_and_a_quarter_of_the_maximum():
    counts = np.array([0, 50, 100, 400, 99, 1000, 240, 250])
    assert visible_frames(counts, 100, 0.25).tolist() == [3, 5, 7]
    assert visible_frames(np.array([120, 90]), 100, 0.25).tolist() == [0]
    assert visible_frames(np.zeros(0), 100, 0.25).size == 0


def test_items_have_the_documented_shapes_and_labels(davis_root, tmp_path):
    ds = build_training_set("synthetic", davis_root, None, CFG, tmp_path / "cache")
    item = ds[0]
    assert item["images"].shape == (3, 3, 48, 80) and item["images"].dtype == torch.uint8
    assert item["labels"].shape == (3, 1, 48, 80) and item["labels"].dtype == torch.float32
    assert set(item["labels"].unique().tolist()) <= {0.0, 1.0}
    assert item["frames"].dtype == torch.long and len(set(item["frames"].tolist())) == 3
    assert isinstance(item["sequence"], str) and isinstance(item["object_id"], int)
    # the label is the chosen object, relabelled 1
    seq = next(s for s in ds.sequences if s.name == item["sequence"])
    raw = read_label_png(seq.annotation_paths[int(item["frames"][1])])
    expected = resize_labels(raw, CFG.image_size) == item["object_id"]
    assert np.array_equal(item["labels"][1, 0].numpy() == 1, expected)


def test_first_frame_always_shows_the_object(davis_root, ytvos_root, tmp_path):
    ds = build_training_set("all", davis_root, ytvos_root, CFG, tmp_path / "cache")
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            seq, oid, frames = ds.draw_frames(i)
            visible = visible_frames(seq.pixel_counts[oid], CFG.min_visible_px, CFG.min_visible_fraction)
            assert frames[0] in visible and len(set(frames)) == CFG.seq_len
    for item in _items(ds, range(0, len(ds), 5)):
        assert item["labels"][0].sum() > 0


def test_frame_numbers_are_the_annotation_file_numbers(ytvos_root, tmp_path):
    # YouTube-VOS train annotates every 5th frame: the 3rd annotation is 00010.png, frame number 10
    ds = build_training_set("ytvos2018", None, ytvos_root, CFG, tmp_path / "cache")
    for item in _items(ds, range(len(ds))):
        assert item["frame_numbers"].dtype == torch.long
        assert item["frame_numbers"].tolist() == [5 * f for f in item["frames"].tolist()]


def test_annotation_names_that_are_not_frame_numbers_are_refused(davis_root, tmp_path):
    root = Path(shutil.copytree(davis_root, tmp_path / "davis"))
    annotation = next((root / "Annotations" / "480p").glob("*/00003.png"))
    annotation.rename(annotation.with_name("frame3.png"))
    (root / "JPEGImages" / "480p" / annotation.parent.name / "00003.jpg").rename(
        root / "JPEGImages" / "480p" / annotation.parent.name / "frame3.jpg")
    with pytest.raises(DatasetError, match=r"frame3\.png: annotation file names must be frame numbers"):
        build_training_set("dv2017", root, None, CFG, tmp_path / "cache")


def test_epoch_sizes_follow_repeats_and_samples(davis_root, ytvos_root, tmp_path):
    davis = build_training_set("dv2017", davis_root, None, CFG, tmp_path / "cache")
    pairs = sum(len(s.pixel_counts) for s in davis.sequences)
    assert len(davis) == pairs * CFG.davis_repeats
    assert sorted(davis.items) == sorted(davis.sources[0].pairs * CFG.davis_repeats)
    ytvos = build_training_set("yt2018", None, ytvos_root, CFG, tmp_path / "cache")
    assert len(ytvos) == CFG.ytvos_samples
    both = build_training_set("all", davis_root, ytvos_root, CFG, tmp_path / "cache")
    assert len(both) == len(davis) + len(ytvos)


def test_samples_are_reproducible_under_a_seed_and_independent_of_order(davis_root, ytvos_root, tmp_path):
    a = build_training_set("all", davis_root, ytvos_root, CFG, tmp_path / "cache")
    b = build_training_set("all", davis_root, ytvos_root, CFG, tmp_path / "cache")
    order = [5, 0, 11, 3]
    assert all(_same(x, y) for x, y in zip(_items(a, order), _items(b, list(reversed(order)))[::-1]))
    first_epoch = list(a.items)
    a.set_epoch(1)
    assert a.items != first_epoch
    a.set_epoch(0)
    assert a.items == first_epoch and _same(a[5], b[5])
    other = build_training_set("all", davis_root, ytvos_root, replace(CFG, seed=6), tmp_path / "cache")
    assert other.items != first_epoch or any(not _same(other[i], a[i]) for i in range(4))


def test_dataloader_workers_give_the_same_items(davis_root, tmp_path):
    ds = build_training_set("synthetic", davis_root, None, CFG, tmp_path / "cache")
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    batch = next(iter(loader))
    direct = torch.utils.data.default_collate([ds[i] for i in range(4)])
    assert torch.equal(batch["images"], direct["images"]) and torch.equal(batch["frames"], direct["frames"])


def test_statistics_are_cached_and_recomputed_when_the_dataset_changes(davis_root, tmp_path, monkeypatch):
    root = Path(shutil.copytree(davis_root, tmp_path / "davis"))
    cache = tmp_path / "cache"
    build_training_set("synthetic", root, None, CFG, cache)
    files = sorted(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".json"

    def no_counting(*args):
        raise AssertionError("statistics were recomputed although the dataset did not change")

    monkeypatch.setattr(stats_cache, "count_pixels", no_counting)
    again = build_training_set("synthetic", root, None, CFG, cache)
    monkeypatch.undo()
    # change one annotation: the object 1 disappears from frame 2 of synth000
    path = root / "Annotations" / "480p" / "synth000" / "00002.png"
    labels = read_label_png(path)
    write_label_png(path, np.where(labels == 1, 0, labels))
    changed = build_training_set("synthetic", root, None, CFG, cache)
    assert len(list(cache.iterdir())) == 2
    old = next(s for s in again.sequences if s.name == "synth000").pixel_counts[1]
    new = next(s for s in changed.sequences if s.name == "synth000").pixel_counts[1]
    assert old[2] > 0 and new[2] == 0 and np.array_equal(np.delete(old, 2), np.delete(new, 2))


def test_an_unreadable_cache_file_is_recomputed(davis_root, tmp_path):
    cache = tmp_path / "cache"
    first = build_training_set("synthetic", davis_root, None, CFG, cache)
    (cache_file,) = cache.iterdir()
    cache_file.write_text("garbage")
    second = build_training_set("synthetic", davis_root, None, CFG, cache)
    assert first.items == second.items and cache_file.read_text().startswith("{")


def test_annotation_size_differing_from_its_frame_is_reported_before_training(davis_root, tmp_path):
    root = Path(shutil.copytree(davis_root, tmp_path / "davis"))
    write_label_png(root / "Annotations" / "480p" / "synth001" / "00003.png", np.zeros((10, 20), np.uint8))
    with pytest.raises(DatasetError, match=r"synth001/00003.png: annotation is 20x10 but its frame .* is 112x64"):
        build_training_set("synthetic", root, None, CFG, tmp_path / "cache")


def test_annotations_without_their_frames_are_named_not_dropped(davis_root, ytvos_root, tmp_path):
    root = Path(shutil.copytree(davis_root, tmp_path / "davis"))
    (root / "JPEGImages" / "480p" / "synth001" / "00005.jpg").unlink()
    with pytest.raises(DatasetError, match=r"synth001: no image for the annotations 00005.png"):
        build_training_set("synthetic", root, None, CFG, tmp_path / "cache")
    shutil.copy(davis_root / "JPEGImages" / "480p" / "synth001" / "00005.jpg", root / "JPEGImages" / "480p" / "synth001")
    shutil.rmtree(root / "JPEGImages" / "480p" / "synth002")
    with pytest.raises(DatasetError, match=r"synth002: frame folder not found"):
        build_training_set("synthetic", root, None, CFG, tmp_path / "cache")
    yt = Path(shutil.copytree(ytvos_root, tmp_path / "ytvos"))
    shutil.rmtree(yt / "train" / "JPEGImages")
    with pytest.raises(DatasetError, match=r"frame folder not found"):
        build_training_set("yt2018", None, yt, CFG, tmp_path / "cache")


def test_cache_inside_the_code_package_is_refused(davis_root):
    package = Path(stats_cache.__file__).resolve().parent
    with pytest.raises(DatasetError, match="may not live inside the code package"):
        build_training_set("synthetic", davis_root, None, CFG, package / "cache")
    evaluator = package.parent / "evaluator"  # every package of the code, also those above dataset/
    with pytest.raises(DatasetError, match=f"inside the code package {evaluator}"):
        build_training_set("synthetic", davis_root, None, CFG, evaluator / "cache")


def test_bad_requests_are_reported(davis_root, ytvos_root, tmp_path):
    with pytest.raises(DatasetError, match="unknown training set"):
        build_training_set("coco", davis_root, None, CFG, tmp_path)
    with pytest.raises(DatasetError, match="needs the YouTube-VOS root"):
        build_training_set("all", davis_root, None, CFG, tmp_path)
    with pytest.raises(DatasetError, match="DAVIS root not found"):
        build_training_set("dv2017", tmp_path / "nowhere", None, CFG, tmp_path)
    with pytest.raises(DatasetError, match="split file not found"):
        build_training_set("dv2017", davis_root, None, CFG, tmp_path, split="val")
    # YouTube-VOS videos need seq_len + 2 annotated frames: with 5 per video, seq_len 4 leaves none
    with pytest.raises(DatasetError, match="no \\(sequence, object\\) pair qualifies"):
        build_training_set("yt2018", None, ytvos_root, replace(CFG, seq_len=4), tmp_path)


def test_resizing_uses_area_to_shrink_cubic_to_enlarge_and_nearest_for_labels():
    image = np.zeros((4, 4, 3), np.uint8)
    image[:, 2:] = 200
    assert resize_image(image, (2, 2))[:, :, 0].tolist() == [[0, 200], [0, 200]]  # area: exact block means
    enlarged = resize_image(image, (8, 8))[:, :, 0]
    assert enlarged.shape == (8, 8) and enlarged.max() > 200  # cubic overshoots at the edge (clipped to uint8)
    labels = np.array([[0, 3], [5, 0]], np.uint8)
    assert set(np.unique(resize_labels(labels, (7, 9)))) == {0, 3, 5}
