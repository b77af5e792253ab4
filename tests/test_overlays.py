"""Overlay frames and videos: mask blend, outline, gate badge, MP4/GIF writing, per-sequence overlays."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from lib.image_io import DAVIS_PALETTE, write_label_png
from evaluator.overlays import (
    ObjectStatus,
    OverlayVideoWriter,
    blend_masks,
    draw_badge,
    frame_statuses,
    gif_size,
    save_sequence_overlays,
)
from evaluator.run_records import SequenceRecord
from models.config import OverlayConfig

H, W, T = 64, 112, 6


def _mp4_frames(path) -> tuple[int, tuple[int, int]]:
    """(decoded frame count, (H, W)) of a video file."""
    cap = cv2.VideoCapture(str(path))
    count, size = 0, None
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        count, size = count + 1, frame.shape[:2]
    cap.release()
    return count, size


def _gif_frames(path) -> tuple[int, tuple[int, int]]:
    with Image.open(path) as gif:
        return gif.n_frames, (gif.height, gif.width)


def _frames():
    rng = np.random.default_rng(0)
    for t in range(T):
        image = rng.integers(0, 255, size=(H, W, 3), dtype=np.uint8)
        labels = np.zeros((H, W), np.uint8)
        labels[10:40, 10 + t:40 + t] = 1
        labels[30:60, 60:100] = 2
        yield image, labels


def test_statuses_group_starts_and_gate_rows_by_frame():
    gate = [(1, 2, 0.9, 1), (1, 1, 0.25, 0), (3, 1, 0.75, True)]
    statuses = frame_statuses(gate, {1: 0, 2: 0, 3: 3})
    assert statuses[0] == [ObjectStatus(1, "start"), ObjectStatus(2, "start")]
    assert statuses[1] == [ObjectStatus(1, "compute", 0.25), ObjectStatus(2, "reuse", 0.9)]
    assert statuses[3] == [ObjectStatus(1, "reuse", 0.75), ObjectStatus(3, "start")]
    assert 2 not in statuses
    assert [s.text for s in statuses[1]] == ["1 COMPUTE p=0.25", "2 REUSE p=0.90"]
    assert statuses[0][0].text == "1 START"


def test_blend_colours_the_object_and_outlines_it():
    image = np.full((H, W, 3), 100, np.uint8)
    labels = np.zeros((H, W), np.uint8)
    labels[20:50, 30:80] = 3
    out = blend_masks(image, labels, alpha=0.5)
    # inside: half grey 100, half palette colour 3 = (128,128,0)
    np.testing.assert_array_equal(out[35, 55], [114, 114, 50])
    np.testing.assert_array_equal(out[5, 5], [100, 100, 100])  # background untouched
    outline = DAVIS_PALETTE[3].astype(int) + (255 - DAVIS_PALETTE[3].astype(int)) // 2
    np.testing.assert_array_equal(out[20, 55], outline)  # top edge of the object
    np.testing.assert_array_equal(out[35, 30], outline)  # left edge
    with pytest.raises(ValueError, match="differs from frame size"):
        blend_masks(image, labels[:-1], alpha=0.5)


def _orange_pixels(frame: np.ndarray) -> int:
    r, g, b = (frame[..., c].astype(int) for c in range(3))
    return int(((r > 200) & (g > 120) & (g < 210) & (b < 110)).sum())


def test_badge_shows_each_objects_colour_and_decision():
    frame = np.full((240, 432, 3), 200, np.uint8)
    reuse = draw_badge(frame, "seq 00001", [ObjectStatus(1, "reuse", 0.9), ObjectStatus(2, "reuse", 0.8)])
    compute = draw_badge(frame, "seq 00001", [ObjectStatus(1, "reuse", 0.9), ObjectStatus(2, "compute", 0.1)])
    assert (frame == 200).all()  # input untouched
    assert reuse[2, 2].max() < 100  # the badge darkens its corner
    assert (reuse[200:, 300:] == 200).all()  # and only its corner
    for palette_colour in (DAVIS_PALETTE[1], DAVIS_PALETTE[2]):  # colour swatches of both objects
        assert (reuse[:80, :200] == palette_colour).all(axis=-1).any()
    assert _orange_pixels(reuse) == 0 and _orange_pixels(compute) > 10  # COMPUTE is drawn in orange


def test_writer_keeps_every_frame_in_the_mp4_and_strides_and_shrinks_the_gif(tmp_path):
    cfg = OverlayConfig(gif_stride=2, gif_max_side=56)
    with OverlayVideoWriter(tmp_path / "v.mp4", tmp_path / "v.gif", fps=10, cfg=cfg) as video:
        for t, (image, labels) in enumerate(_frames()):
            video.add(image, labels, f"frame {t}", [ObjectStatus(1, "reuse", 0.8)])
    assert _mp4_frames(tmp_path / "v.mp4") == (T, (H, W))
    assert _gif_frames(tmp_path / "v.gif") == (T // 2, gif_size(H, W, 56)) == (T // 2, (32, 56))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.gif", "v.mp4"]  # no temporary files left


def test_writer_leaves_no_file_when_rendering_fails(tmp_path):
    with pytest.raises(ValueError, match="all frames of a video must have one size"):
        with OverlayVideoWriter(tmp_path / "v.mp4", tmp_path / "v.gif", fps=10) as video:
            video.add(np.zeros((H, W, 3), np.uint8), np.zeros((H, W), np.uint8), "a", [])
            video.add(np.zeros((H, W + 2, 3), np.uint8), np.zeros((H, W + 2), np.uint8), "b", [])
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="no frames"):
        with OverlayVideoWriter(tmp_path / "v.mp4", None, fps=10):
            pass
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    """One tiny synthetic DAVIS-layout sequence, loaded as the evaluation does."""
    from dataset.registry import load_eval_sequences
    from dataset.synthetic import generate_dataset

    root = generate_dataset(tmp_path_factory.mktemp("data"), layout="davis", num_videos=1, num_frames=T,
                            size=(H, W), seed=3, max_objects=2, split="val")
    return load_eval_sequences("dv2017val", root)[0]


def test_sequence_overlays_have_the_sequences_frames_and_size(sequence, tmp_path):
    # The run's output: masks in <out>/<seq>/ (the ground truth stands in for predictions) and its gate record.
    for i in range(len(sequence)):
        write_label_png(tmp_path / sequence.name / f"{sequence.frame_names[i]}.png", sequence.annotation(i))
    gate = [(t, oid, 0.9 if t % 2 else 0.2, t % 2) for t in range(1, T) for oid in sequence.object_ids]
    record = SequenceRecord(sequence.name, T, 1.0, len(gate), sum(g[3] for g in gate), 3, gate)
    gif, mp4 = save_sequence_overlays(sequence, tmp_path, [record])
    assert gif.parent == mp4.parent == tmp_path / "overlays"
    assert _mp4_frames(mp4) == (len(sequence), sequence.size)
    assert _gif_frames(gif) == (len(sequence), sequence.size)


def test_sequence_overlays_name_what_is_missing(sequence, tmp_path):
    with pytest.raises(ValueError, match=f"no run record for sequence '{sequence.name}'"):
        save_sequence_overlays(sequence, tmp_path, [])
    record = SequenceRecord(sequence.name, T, 1.0, 0, 0, 1, [])
    with pytest.raises(FileNotFoundError, match=f"{sequence.frame_names[0]}.png"):
        save_sequence_overlays(sequence, tmp_path, [record])
    assert not (tmp_path / "overlays" / f"{sequence.name}.mp4").exists()


def test_evaluate_save_overlays_writes_both_videos_per_sequence(sequence, tmp_path):
    """evaluate.py --save-overlays end to end: an untrained checkpoint on the tiny synthetic set."""
    import evaluate
    from models.checkpoint import save_gfrtm
    from models.config import NetworkConfig
    from models.gfrtm import GFRTM

    model = tmp_path / "untrained.pth"
    save_gfrtm(model, GFRTM(NetworkConfig()), backbone_weights="none")
    root = sequence.image_paths[0].parents[3]  # <root>/JPEGImages/480p/<seq>/<frame>
    rc = evaluate.main(["--dset", "dv2017val", "--davis-root", str(root), "--model", str(model), "--dev", "cpu",
                        "--fast", "--output", str(tmp_path / "results"), "--save-overlays"])
    assert rc == 0
    gif, mp4 = [tmp_path / "results" / "dv2017val-untrained-TH0.7" / "overlays" / f"{sequence.name}{s}"
                for s in (".gif", ".mp4")]
    assert _mp4_frames(mp4) == (len(sequence), sequence.size)
    assert _gif_frames(gif) == (len(sequence), sequence.size)
