"""Sequence and folder scoring, summaries and CSV files, as the DAVIS toolkit produces them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluator.davis_scoring import (
    ScoringError,
    SequenceScores,
    first_frame_object_ids,
    format_table,
    score_results_folder,
    score_sequence,
    summarize,
    write_csvs,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DAVIS_MINI = SHARED / "data" / "davis-mini"
DAVIS2016_MINI = SHARED / "data" / "davis2016-mini"
SIZE = (24, 32)  # (H, W) of the synthetic frames


def write_png(path: Path, labels: np.ndarray, mode: str = "P") -> None:
    """A label PNG: palette ('P', value = object id) or greyscale ('L')."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels.astype(np.uint8))  # mode 'L'
    if mode == "P":
        # putpalette turns the 'L' image into 'P' with the same pixel values
        image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * (256 * 3 - 12))
    image.save(path)


def box(top: int, left: int, size: int = 6, label: int = 1) -> np.ndarray:
    labels = np.zeros(SIZE, dtype=np.uint8)
    labels[top:top + size, left:left + size] = label
    return labels


def make_sequence(root: Path, name: str, gt: list[np.ndarray], results: list[np.ndarray] | None,
                  mode: str = "P") -> tuple[str, list[str], list[Path]]:
    """GT PNGs under root/gt/<name>, results (one per GT frame, or None) under root/res/<name>."""
    frames = [f"{i:05d}" for i in range(len(gt))]
    paths = []
    for frame, labels in zip(frames, gt):
        paths.append(root / "gt" / name / f"{frame}.png")
        write_png(paths[-1], labels, mode)
    for frame, labels in zip(frames, results or []):
        write_png(root / "res" / name / f"{frame}.png", labels)
    return name, frames, paths


# ---------------------------------------------------------------- score_sequence


def test_first_frame_object_ids_ignores_void():
    first = np.array([[0, 2], [255, 1]], dtype=np.uint8)
    assert first_frame_object_ids(first) == [1, 2]
    assert first_frame_object_ids(np.zeros((2, 2), np.uint8)) == []


def test_score_sequence_perfect_and_fewer_objects_padded():
    gt = np.stack([box(2, 2) + box(12, 20, label=2)] * 3)
    res = np.stack([box(2, 2)] * 3)  # object 2 missing: padded with empty masks
    scores = score_sequence("two", gt, res)
    assert sorted(scores.j) == [1, 2]
    np.testing.assert_array_equal(scores.j[1], [1, 1, 1])
    np.testing.assert_array_equal(scores.f[1], [1, 1, 1])
    np.testing.assert_array_equal(scores.j[2], [0, 0, 0])
    np.testing.assert_array_equal(scores.f[2], [0, 0, 0])


def test_score_sequence_more_result_objects_is_an_error():
    gt = np.stack([box(2, 2)] * 2)
    res = np.stack([box(2, 2) + box(12, 20, label=3)] * 2)
    with pytest.raises(ScoringError, match=r"sequence swan: .*label\(s\) \[3\].*objects \[1\]"):
        score_sequence("swan", gt, res)


def test_score_sequence_void_is_zeroed_in_gt_only():
    gt = np.stack([box(2, 2) + box(14, 20, label=255)] * 2)
    scores = score_sequence("void", gt, np.stack([box(2, 2)] * 2))
    assert list(scores.j) == [1]
    np.testing.assert_array_equal(scores.j[1], [1, 1])
    with pytest.raises(ScoringError, match=r"\[255\]"):  # 255 in results is an object id, as in the toolkit
        score_sequence("void", gt, gt)


def test_score_sequence_objects_come_from_the_first_gt_frame():
    # Object 2 appears only in the second frame: the DAVIS rule does not score it.
    gt = np.stack([box(2, 2), box(2, 2) + box(12, 20, label=2)])
    res = np.stack([box(2, 2), box(2, 2)])
    assert list(score_sequence("late", gt, res).j) == [1]


def test_score_sequence_explicit_object_ids_for_late_objects():
    # YouTube-VOS: object 2 starts in frame 1; frame 0 has it empty in GT and results -> J = F = 1.
    gt = np.stack([box(2, 2), box(2, 2) + box(12, 20, label=2)])
    res = np.stack([box(2, 2), box(2, 2) + box(12, 21, label=2)])
    scores = score_sequence("late", gt, res, object_ids=[1, 2])
    assert sorted(scores.j) == [1, 2]
    assert scores.j[2][0] == 1.0
    assert scores.j[2][1] == pytest.approx(30 / 42)  # 6x6 boxes shifted one column: 30 overlap, 42 union
    with pytest.raises(ScoringError, match="late"):
        score_sequence("late", gt, res, object_ids=[1])


def test_score_sequence_rejects_mismatched_shapes():
    with pytest.raises(ScoringError, match="same shape"):
        score_sequence("s", np.zeros((2, 4, 4), np.uint8), np.zeros((2, 4, 5), np.uint8))


# ---------------------------------------------------------------- score_results_folder


def test_first_and_last_frames_are_not_scored(tmp_path):
    gt = [box(2 + i, 3 + i) for i in range(5)]
    res = [np.zeros(SIZE, np.uint8)] + gt[1:4] + [box(15, 20)]  # wrong only in the first and last frame
    seq = make_sequence(tmp_path, "walk", gt, res)
    scores = score_results_folder(tmp_path / "res", [seq], progress=False)
    assert len(scores[0].j[1]) == 3
    global_scores, rows = summarize(scores)
    assert global_scores["J&F-Mean"] == 1.0 and global_scores["J-Mean"] == 1.0 and global_scores["F-Mean"] == 1.0
    assert rows == [("walk_1", 1.0, 1.0)]


def test_first_annotated_frame_sets_the_objects(tmp_path):
    # Object 2 is in the dropped first frame only, but still counts (empty in GT and results -> 1).
    gt = [box(2, 2) + box(12, 20, label=2)] + [box(2, 2)] * 3
    seq = make_sequence(tmp_path, "pair", gt, [box(2, 2)] * 4)
    scores = score_results_folder(tmp_path / "res", [seq], progress=False)
    assert sorted(scores[0].j) == [1, 2]
    np.testing.assert_array_equal(scores[0].j[2], [1, 1])


def test_more_result_objects_in_folder_is_an_error(tmp_path):
    gt = [box(2, 2)] * 3
    seq = make_sequence(tmp_path, "kite", gt, [box(2, 2), box(2, 2, label=2), box(2, 2)])
    with pytest.raises(ScoringError, match=r"sequence kite: .*\[2\].*\[1\]"):
        score_results_folder(tmp_path / "res", [seq], progress=False)


def test_result_labels_in_unscored_frames_are_ignored(tmp_path):
    # The toolkit reads only the scored frames, so an extra id in the last frame goes unnoticed.
    seq = make_sequence(tmp_path, "tail", [box(2, 2)] * 3, [box(2, 2), box(2, 2), box(2, 2, label=2)])
    scores = score_results_folder(tmp_path / "res", [seq], progress=False)
    np.testing.assert_array_equal(scores[0].j[1], [1.0])


def test_missing_result_files_are_listed_before_scoring(tmp_path):
    ok = make_sequence(tmp_path, "ok", [box(2, 2)] * 3, [box(2, 2)] * 3)
    gt = [box(2, 2)] * 4
    partial = make_sequence(tmp_path, "partial", gt, [box(2, 2)] * 4)
    (tmp_path / "res" / "partial" / "00002.png").unlink()
    (tmp_path / "res" / "partial" / "00003.png").unlink()  # the last frame is not needed
    with pytest.raises(ScoringError) as err:
        score_results_folder(tmp_path / "res", [ok, partial], progress=False)
    message = str(err.value)
    assert "1 result mask(s) missing" in message
    assert str(tmp_path / "res" / "partial" / "00002.png") in message
    assert "00003.png" not in message


def test_many_missing_files_show_the_first_few_and_a_count(tmp_path):
    seq = make_sequence(tmp_path, "gone", [box(2, 2)] * 10, None)
    (tmp_path / "res" / "other").mkdir(parents=True)
    with pytest.raises(ScoringError, match=r"(?s)8 result mask\(s\) missing.*00005\.png.*and 3 more"):
        score_results_folder(tmp_path / "res", [seq], progress=False)


def test_missing_or_empty_results_folder(tmp_path):
    seq = make_sequence(tmp_path, "s", [box(2, 2)] * 3, None)
    with pytest.raises(ScoringError, match="does not exist"):
        score_results_folder(tmp_path / "nope", [seq], progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScoringError, match="is empty"):
        score_results_folder(tmp_path / "empty", [seq], progress=False)


def test_too_short_sequence_is_an_error(tmp_path):
    seq = make_sequence(tmp_path, "short", [box(2, 2)] * 2, [box(2, 2)] * 2)
    with pytest.raises(ScoringError, match="short: only 2 annotated"):
        score_results_folder(tmp_path / "res", [seq], progress=False)


def test_result_size_mismatch_is_an_error(tmp_path):
    seq = make_sequence(tmp_path, "small", [box(2, 2)] * 3, None)
    for frame in seq[1]:
        write_png(tmp_path / "res" / "small" / f"{frame}.png", np.zeros((12, 16), np.uint8))
    with pytest.raises(ScoringError, match="original size"):
        score_results_folder(tmp_path / "res", [seq], progress=False)


def test_merge_objects_for_davis2016(tmp_path):
    # DAVIS 2016 release: greyscale 0/255 ground truth; results with two ids merge into one object.
    gt = [box(2, 2, size=10, label=255)] * 3
    res = [box(2, 2, size=10) for _ in range(3)]
    res[1][2:7, 2:12] = 2  # the top half as object 2
    seq = make_sequence(tmp_path, "cow", gt, res, mode="L")
    scores = score_results_folder(tmp_path / "res", [seq], progress=False, merge_objects=True)
    assert list(scores[0].j) == [1]
    np.testing.assert_array_equal(scores[0].j[1], [1.0])


def test_object_ids_per_sequence(tmp_path):
    gt = [np.zeros(SIZE, np.uint8)] + [box(2, 2, label=3)] * 3
    seq = make_sequence(tmp_path, "yt", gt, gt)
    scores = score_results_folder(tmp_path / "res", [seq], object_ids={"yt": [3]}, progress=False)
    _, rows = summarize(scores)
    assert rows == [("yt_3", 1.0, 1.0)]
    with pytest.raises(ScoringError, match="no object ids were given for sequence\\(s\\) yt"):
        score_results_folder(tmp_path / "res", [seq], object_ids={}, progress=False)


# ---------------------------------------------------------------- summaries and CSV files


def test_summarize_means_over_all_objects():
    a = SequenceScores("a", {1: np.array([1.0, 1.0, 0.0, 0.0])}, {1: np.array([1.0, 1.0, 1.0, 1.0])})
    b = SequenceScores("b", {1: np.array([0.5, 0.5, 0.5, 0.5]), 2: np.array([1.0, 1.0, 1.0, 1.0])},
                       {1: np.array([0.0, 0.0, 0.0, 0.0]), 2: np.array([0.6, 0.6, 0.6, 0.6])})
    global_scores, rows = summarize([a, b])
    # J means 0.5, 0.5, 1.0; J recalls 0.5, 0, 1; J decays 1, 0, 0.
    assert global_scores["J-Mean"] == pytest.approx(2 / 3)
    assert global_scores["J-Recall"] == pytest.approx(0.5)
    assert global_scores["J-Decay"] == pytest.approx(1 / 3)
    # F means 1, 0, 0.6; F recalls 1, 0, 1; F decays 0.
    assert global_scores["F-Mean"] == pytest.approx(1.6 / 3)
    assert global_scores["F-Recall"] == pytest.approx(2 / 3)
    assert global_scores["F-Decay"] == pytest.approx(0.0)
    assert global_scores["J&F-Mean"] == pytest.approx((2 / 3 + 1.6 / 3) / 2)
    assert [r[0] for r in rows] == ["a_1", "b_1", "b_2"]
    with pytest.raises(ScoringError):
        summarize([])


def test_csv_files_byte_for_byte(tmp_path):
    global_scores = {"J&F-Mean": 0.71749, "J-Mean": 0.6875, "J-Recall": 0.8, "J-Decay": -0.0123,
                     "F-Mean": 0.74749, "F-Recall": 1.0, "F-Decay": 0.0005}
    rows = [("bike-packing_1", 0.5, 0.25), ("bike-packing_2", 0.12345, 1.0)]
    global_path, per_object_path = write_csvs(tmp_path / "out", "val", global_scores, rows)
    assert global_path == tmp_path / "out" / "global_results-val.csv"
    assert per_object_path == tmp_path / "out" / "per-sequence_results-val.csv"
    assert global_path.read_bytes() == (
        b"J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay\n"
        b"0.717,0.688,0.800,-0.012,0.747,1.000,0.001\n"
    )
    assert per_object_path.read_bytes() == (
        b"Sequence,J-Mean,F-Mean\n"
        b"bike-packing_1,0.500,0.250\n"
        b"bike-packing_2,0.123,1.000\n"
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [global_path.name, per_object_path.name]


def test_csv_writes_nan_as_an_empty_field_like_pandas(tmp_path):
    global_scores = dict.fromkeys(["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"], 0.5)
    global_scores["J-Decay"] = float("nan")
    global_path, _ = write_csvs(tmp_path, "x", global_scores, [])
    assert global_path.read_text().splitlines()[1] == "0.500,0.500,0.500,,0.500,0.500,0.500"


def test_format_table_lists_every_score():
    table = format_table({"J&F-Mean": 0.8, "J-Mean": 0.75, "J-Recall": 0.9, "J-Decay": 0.05,
                          "F-Mean": 0.85, "F-Recall": 0.95, "F-Decay": 0.06})
    header, values = table.splitlines()
    assert header.split() == ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
    assert values.split() == ["0.800", "0.750", "0.900", "0.050", "0.850", "0.950", "0.060"]


# ---------------------------------------------------------------- real DAVIS sequences


def davis_sequence(root: Path, name: str, limit: int | None = None) -> tuple[str, list[str], list[Path]]:
    paths = sorted((root / "Annotations" / "480p" / name).glob("*.png"))[:limit]
    return name, [p.stem for p in paths], paths


def test_real_davis_ground_truth_scores_itself_perfectly():
    if not DAVIS_MINI.is_dir():
        pytest.skip(f"{DAVIS_MINI} not found")
    annotations = DAVIS_MINI / "Annotations" / "480p"
    seqs = [davis_sequence(DAVIS_MINI, "kite-surf", limit=6), davis_sequence(DAVIS_MINI, "car-shadow", limit=5)]
    scores = score_results_folder(annotations, seqs, progress=False)
    global_scores, rows = summarize(scores)
    assert [r[0] for r in rows] == ["kite-surf_1", "kite-surf_2", "kite-surf_3", "car-shadow_1"]
    for key in ("J&F-Mean", "J-Mean", "J-Recall", "F-Mean", "F-Recall"):
        assert global_scores[key] == 1.0, key
    assert global_scores["J-Decay"] == 0.0 and global_scores["F-Decay"] == 0.0


def test_real_davis_translation_within_tolerance_keeps_f_perfect(tmp_path):
    # 480x854 -> 8 px tolerance: moving every mask 8 px right keeps F at 1 (the swan does not touch
    # the image sides), while J drops.
    if not DAVIS_MINI.is_dir():
        pytest.skip(f"{DAVIS_MINI} not found")
    name, frames, paths = davis_sequence(DAVIS_MINI, "blackswan", limit=4)
    for frame, path in zip(frames, paths):
        labels = np.array(Image.open(path))
        assert not labels[:, :8].any() and not labels[:, -8:].any()
        shifted = np.zeros_like(labels)
        shifted[:, 8:] = labels[:, :-8]
        write_png(tmp_path / name / f"{frame}.png", shifted)
    scores = score_results_folder(tmp_path, [(name, frames, paths)], progress=False)
    np.testing.assert_array_equal(scores[0].f[1], [1.0, 1.0])
    assert (scores[0].j[1] < 0.99).all() and (scores[0].j[1] > 0.5).all()


def test_real_davis2016_greyscale_release_with_merge():
    if not DAVIS2016_MINI.is_dir():
        pytest.skip(f"{DAVIS2016_MINI} not found")
    seq = davis_sequence(DAVIS2016_MINI, "car-shadow", limit=4)
    scores = score_results_folder(DAVIS2016_MINI / "Annotations" / "480p", [seq], progress=False, merge_objects=True)
    assert list(scores[0].j) == [1]
    np.testing.assert_array_equal(scores[0].j[1], [1.0, 1.0])
