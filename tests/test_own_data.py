"""Users' own annotated videos, on generated trees in the real layout (JPEGImages/<seq>/*.jpg and
Annotations/<seq>/*.png): every mask format read alike by evaluate's folder reader, train's folder
dataset and demo's reader; a video's masks read by one rule; the ids present as the objects;
train.py --dset folder; refusals that leave nothing behind."""
from __future__ import annotations

import csv
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
from dataset.errors import DatasetError
from dataset.registry import eval_set_info, load_eval_sequences
from dataset.training import build_training_set, folder_frame_numbers
from evaluator.demo.video_input import read_start_mask
from lib.image_io import DAVIS_PALETTE, write_image, write_label_png
from lib.user_masks import MaskFormatError, read_user_mask
from models.config import TrainConfig
from train import main as train_main
from tests.test_train_step import one_torch_thread  # noqa: F401  (autouse: one torch thread in this module)

H, W = 48, 64
CFG = replace(TrainConfig(), seq_len=3, image_size=(H, W), workers=0, seed=3)


def _ids(frame: int, objects: tuple[int, ...] = (1, 3)) -> np.ndarray:
    """(H, W) uint8 ids: object k a 12x14 block (168 px) in a row of its own, moving right by 2 px a frame."""
    labels = np.zeros((H, W), np.uint8)
    for row, oid in enumerate(objects):
        labels[2 + 15 * row:14 + 15 * row, 4 + 2 * frame:18 + 2 * frame] = oid
    return labels


def _save(path: Path, labels: np.ndarray, fmt: str) -> None:
    """labels written the way `fmt` stores masks (one-object formats get object 1 = any id)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    on = labels > 0
    if fmt == "palette":
        write_label_png(path, labels)
        return
    image = {"grey 0/255": lambda: Image.fromarray(on.astype(np.uint8) * 255),
             "grey 0/1": lambda: Image.fromarray(on.astype(np.uint8)),
             "grey ids": lambda: Image.fromarray(labels),
             "rgb DAVIS colours": lambda: Image.fromarray(DAVIS_PALETTE[labels]),
             "rgb black+one colour": lambda: Image.fromarray(on[..., None] * np.array([230, 20, 20], np.uint8)),
             "16-bit": lambda: Image.fromarray(on.astype(np.uint16) * 65535)}[fmt]()
    image.save(path)


def _tree(root: Path, fmt: str = "palette", frames: int = 4, annotated=None, names=None, objects=(1, 3),
          seq: str = "clip") -> Path:
    """One sequence `seq` of `frames` frames; `annotated` frame indices get masks (default: all)."""
    names = names or [f"{i:05d}" for i in range(frames)]
    rng = np.random.default_rng(len(seq))
    for i, name in enumerate(names):
        image = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        image[_ids(i, objects) > 0] = (250, 240, 30)
        write_image(root / "JPEGImages" / seq / f"{name}.jpg", image)
    for i in (range(frames) if annotated is None else annotated):
        _save(root / "Annotations" / seq / f"{names[i]}.png", _ids(i, objects), fmt)
    return root


def _expected(fmt: str, frame: int) -> np.ndarray:
    labels = _ids(frame)
    return labels if fmt in ("palette", "grey ids", "rgb DAVIS colours") else (labels > 0).astype(np.uint8)


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- one reader
@pytest.mark.parametrize("fmt", ["palette", "grey 0/255", "grey 0/1", "grey ids", "rgb DAVIS colours",
                                 "rgb black+one colour", "16-bit"])
def test_every_mask_format_is_read_alike_by_evaluate_train_and_demo(tmp_path, fmt):
    root = _tree(tmp_path / "tree", fmt)
    expected = [_expected(fmt, i) for i in range(4)]
    ids = sorted(set(np.unique(expected[0]).tolist()) - {0})
    seq = load_eval_sequences("folder", root)[0]  # evaluate.py --dset folder
    assert seq.object_ids == ids and seq.start_frames == dict.fromkeys(ids, 0)
    for i in range(4):
        np.testing.assert_array_equal(seq.annotation(i), expected[i])
    samples = build_training_set("folder", None, None, CFG, tmp_path / "stats", folder_root=root)  # train.py
    train_seq = samples.sequences[0]
    assert sorted(train_seq.pixel_counts) == ids
    for oid in ids:
        assert train_seq.pixel_counts[oid].tolist() == [int((e == oid).sum()) for e in expected]
    for k in range(4):
        np.testing.assert_array_equal(train_seq.labels(k), expected[k])
    item = samples[0]
    for frame, label in zip(item["frames"].tolist(), item["labels"][:, 0]):
        np.testing.assert_array_equal(label.numpy(), expected[frame] == item["object_id"])
    np.testing.assert_array_equal(read_start_mask(seq.annotation_paths[0], (H, W)), expected[0])  # demo.py
    assert not (tmp_path / "stats").exists()  # a folder's pixel counts come from reading it, no cache


def test_the_masks_of_a_video_are_read_by_one_rule(tmp_path):
    # a 0/255 series with an empty frame: object 1 in every frame, and the empty frame is fine
    root = _tree(tmp_path / "tree", "grey 0/255")
    _save(root / "Annotations" / "clip" / "00002.png", np.zeros((H, W), np.uint8), "grey 0/255")
    seq = load_eval_sequences("folder", root)[0]
    assert seq.object_ids == [1] and not seq.annotation(2).any()
    # 0/255 in one frame and 0/1 in another: neither one object nor ids throughout, so refused with both files
    _save(root / "Annotations" / "clip" / "00003.png", _ids(3), "grey 0/1")
    with pytest.raises(DatasetError, match=r"clip/00000.png: 8-bit greyscale \('L'\) mask with non-zero values "
                                           r"255, but .*clip/00003.png of the same video holds other values "
                                           r"\(.* values 1\): the masks of one video mix 255 with other values"):
        load_eval_sequences("folder", root)
    # several grey values over the video are ids, even where a frame holds one of them alone
    _save(root / "Annotations" / "clip" / "00000.png", _ids(0, (2,)), "grey ids")
    _save(root / "Annotations" / "clip" / "00003.png", _ids(3, (5,)), "grey ids")
    _save(root / "Annotations" / "clip" / "00001.png", _ids(1, (2,)), "grey ids")
    seq = load_eval_sequences("folder", root)[0]
    assert seq.object_ids == [2] and seq.annotation(3).max() == 5  # frame 0's objects, as DAVIS
    # a palette mask next to greyscale ones
    write_label_png(root / "Annotations" / "clip" / "00001.png", _ids(1, (2,)))
    with pytest.raises(DatasetError, match=r"00001.png: palette \('P'\) mask with non-zero indices 2, but .*00000.png "
                                           r"of the same video holds another kind of mask \(8-bit greyscale .*\); save "
                                           r"every mask of a video the same way"):
        load_eval_sequences("folder", root)


def test_masks_that_cannot_be_read_say_what_they_hold_and_what_to_do(tmp_path):
    cases = {
        "soft": (Image.fromarray(np.array([[0, 255, 128, 3]] * 4, np.uint8)),
                 r"values 3, 128, 255: the greyscale mask mixes 255 with other values \[3, 128\].*every value >= 128"),
        "wide": (Image.fromarray(np.array([[0, 300, 301, 0]] * 4, np.uint16)),
                 r"16-bit greyscale \('I;16'\) mask .* values go up to 301; object ids must be 1..254"),
        "colours": (Image.fromarray(np.array([[[0, 0, 0], [10, 200, 30], [200, 10, 30], [0, 0, 0]]] * 4, np.uint8)),
                    r"RGB \('RGB'\) mask with non-zero colours .*: colours \[.*\] are not DAVIS palette colours"),
        "cmyk": (Image.new("CMYK", (4, 4)), r"a 'CMYK' image is not a mask format this reader knows"),
    }
    for name, (image, message) in cases.items():
        image.save(tmp_path / f"{name}.png" if name != "cmyk" else tmp_path / "cmyk.jpg")
        with pytest.raises(MaskFormatError, match=message):
            read_user_mask(tmp_path / (f"{name}.png" if name != "cmyk" else "cmyk.jpg"))
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(MaskFormatError, match="text.png: cannot read the mask image"):
        read_user_mask(tmp_path / "text.png")
    # a palette mask whose only object is the void index: the folder says why it holds no object
    root = _tree(tmp_path / "tree", "palette")
    write_label_png(root / "Annotations" / "clip" / "00000.png", (_ids(0) > 0).astype(np.uint8) * 255)
    with pytest.raises(DatasetError, match=r"contains no object \(palette \('P'\) mask with non-zero indices 255; "
                                           r"index 255 marks void"):
        load_eval_sequences("folder", root)


# ----------------------------------------------------------------------------- the ids present
def test_a_folder_is_scored_on_the_ids_present_and_davis_on_1_to_max(tmp_path, capsys):
    root = _tree(tmp_path / "tree", "grey ids", objects=(1, 7))
    _tree(root, "grey 0/255", seq="swan")  # ground truth 0/255 is object 1, not DAVIS's void
    seqs = load_eval_sequences("folder", root)
    assert [s.object_ids for s in seqs] == [[1, 7], [1]] and eval_set_info("folder", seqs).scoring == "late-objects"
    results = tmp_path / "results"
    for i in range(4):  # object 1 exact, object 7 missed; the swan exact
        write_label_png(results / "clip" / f"{i:05d}.png", _ids(i, (1,)))
        write_label_png(results / "swan" / f"{i:05d}.png", (_ids(i) > 0).astype(np.uint8))
    assert evaluate.main(["--dset", "folder", "--root", str(root), "--eval-only", str(results)]) == 0
    rows = {r["Sequence"]: (float(r["J-Mean"]), float(r["F-Mean"]))
            for r in _csv_rows(results / "per-sequence_results-folder.csv")}
    assert rows == {"clip_1": (1.0, 1.0), "clip_7": (0.0, 0.0), "swan_1": (1.0, 1.0)}
    # the same masks as a DAVIS tree: the toolkit's rule, objects 1..7 of the first frame (2..6 empty)
    davis = tmp_path / "davis"
    (davis / "ImageSets" / "2017").mkdir(parents=True)
    (davis / "ImageSets" / "2017" / "val.txt").write_text("clip\n")
    for kind in ("JPEGImages", "Annotations"):
        (davis / kind / "480p").mkdir(parents=True)
        (davis / kind / "480p" / "clip").symlink_to(root / kind / "clip", target_is_directory=True)
    out = tmp_path / "davis-scores"
    assert evaluate.main(["--dset", "dv2017val", "--davis-root", str(davis), "--eval-only", str(results),
                          "--output", str(out)]) == 0
    rows = [r["Sequence"] for r in _csv_rows(out / "per-sequence_results-dv2017val.csv")]
    assert rows == [f"clip_{k}" for k in range(1, 8)]


# ----------------------------------------------------------------------------- training on a folder
def test_a_folder_is_sampled_as_davis_when_complete_and_as_youtube_vos_otherwise(tmp_path):
    full = build_training_set("folder", None, None, CFG, tmp_path / "s", folder_root=_tree(tmp_path / "full"))
    assert [(s.repeats, s.samples, s.pairs) for s in full.sources] == [(CFG.davis_repeats, 0, [(0, 1), (0, 3)])]
    assert len(full) == 2 * CFG.davis_repeats
    # every other frame annotated; object 3 starts late; names that are not numbers
    names = [f"frame_{c}" for c in "abcdefghijkl"]
    sparse_root = _tree(tmp_path / "sparse", frames=12, annotated=[0, 2, 4, 6, 8, 10], names=names)
    write_label_png(sparse_root / "Annotations" / "clip" / "frame_a.png", _ids(0, (1,)))
    sparse = build_training_set("folder", None, None, CFG, tmp_path / "s", folder_root=sparse_root)
    assert [(s.repeats, s.samples, s.pairs) for s in sparse.sources] == [(0, CFG.ytvos_samples, [(0, 1), (0, 3)])]
    seq = sparse.sequences[0]
    assert seq.frame_numbers == [0, 2, 4, 6, 8, 10]  # positions: the names are not numbers
    assert seq.pixel_counts[3].tolist() == [0, 168, 168, 168, 168, 168]
    assert folder_frame_numbers(["00035", "00040"]) == [35, 40] and folder_frame_numbers(["1", "01"]) == [0, 1]
    short = replace(CFG, seq_len=5)  # 6 annotated frames < seq_len + 2
    with pytest.raises(DatasetError, match=r"no \(sequence, object\) pair qualifies: some frames have no annotation, "
                                           r"so it is sampled as YouTube-VOS: .* at least seq_len \+ 2 = 7"):
        build_training_set("folder", None, None, short, tmp_path / "s", folder_root=sparse_root)


def _train_argv(tmp: Path, *extra: str) -> list[str]:
    return ["--backbone-weights", "none", "--size", f"{W}x{H}", "--seq-len", "3", "--batch-size", "2",
            "--epoch-samples", "2", "--workers", "0", "--max-epochs", "1", "--name", "own",
            "--checkpoints", str(tmp / "ckpt"), "--tensorboard", str(tmp / "tb"), "--tmcache", str(tmp / "tmcache"),
            *extra]


def test_train_on_a_folder_of_ones_own_writes_a_checkpoint_and_its_cache(tmp_path):
    names = [f"frame_{c}" for c in "abcdefgh"]
    root = _tree(tmp_path / "tree", "grey 0/255", frames=8, annotated=[0, 2, 3, 5, 6, 7], names=names)
    assert train_main(["--dset", "folder", "--root", str(root), *_train_argv(tmp_path)]) == 0
    assert torch.load(tmp_path / "ckpt" / "own" / "own_ep0001.pth", weights_only=True)["epoch"] == 1
    cache = tmp_path / "tmcache" / "resnet18-c32_gTrue"
    assert json.loads((cache / "cache_info.json").read_text())["folder_root"] == str(root.resolve())
    fitted = sorted(p.name for p in (cache / "clip").iterdir())
    positions = {f"{k:05d}.1.layer4.pth" for k in (0, 2, 3, 5, 6, 7)}  # named by frame position
    assert fitted and set(fitted) <= positions


def test_refused_trees_and_flags_stop_before_anything_is_written(tmp_path, capsys):
    folder_tree = _tree(tmp_path / "tree")
    out = tmp_path / "out"
    runs = [  # (argv, what the one error line says)
        (["--dset", "dv2017", "--davis-root", str(folder_tree)],
         f"no JPEGImages/480p folder; this is not a DAVIS root; .* read it with --dset folder --root {folder_tree}"),
        (["--dset", "folder"], "--dset folder needs --root DIR"),
        (["--dset", "folder", "--root", str(folder_tree / "JPEGImages" / "clip" / "00000.jpg")],
         "00000.jpg: is a file, not a folder"),
        (["--dset", "dv2017", "--root", str(folder_tree)], "only --dset folder reads it"),
    ]
    soft = _tree(tmp_path / "soft", "grey 0/255")
    Image.fromarray(np.array([[0, 255, 128, 3] * 16] * 48, np.uint8)).save(soft / "Annotations" / "clip" / "00002.png")
    runs.append((["--dset", "folder", "--root", str(soft)], "00002.png: .* mixes 255 with other values"))
    with pytest.raises(DatasetError, match="00000.jpg: is a file, not a folder; point --root at the folder"):
        load_eval_sequences("folder", folder_tree / "JPEGImages" / "clip" / "00000.jpg")  # evaluate.py's reader
    for argv, message in runs:
        assert train_main([*argv, *_train_argv(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and re.search(message, err), err
        assert not [p for p in out.rglob("*") if p.is_file()]  # no cache index, statistics, checkpoint or log
