"""demo.py on the user's own video: a video file or a folder of frames, the start mask, the outputs and the errors."""
from __future__ import annotations

import json
import os
import re

import cv2
import numpy as np
import pytest
from PIL import Image

import demo
from evaluator.demo.run import Saved
from evaluator.demo.run_record import DemoOutput, OutputInUse, prepare
from evaluator.demo.video_input import VideoInputError, open_video, read_start_mask
from evaluator.settings_record import read_record, write_record
from lib.file_hash import file_sha256
from lib.image_io import DAVIS_PALETTE, read_label_png

H, W, T = 64, 112, 6


def _frame(t: int) -> tuple[np.ndarray, np.ndarray]:
    """(RGB image, 0/1 mask) of frame t: a bright square moving right over a smooth gradient."""
    yy, xx = np.mgrid[0:H, 0:W]
    image = np.stack([xx * 2, yy * 3, 255 - xx * 2], axis=-1).clip(0, 255).astype(np.uint8)
    mask = np.zeros((H, W), np.uint8)
    mask[16:44, 20 + 3 * t:48 + 3 * t] = 1
    image[mask == 1] = (250, 240, 30)
    return image, mask


def _save_mask(path, mask: np.ndarray) -> None:
    Image.fromarray(mask * 255).save(path)  # a 0/255 greyscale PNG, as a user would draw it


@pytest.fixture
def video_file(tmp_path):
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 15, (W, H))
    for t in range(T):
        writer.write(cv2.cvtColor(_frame(t)[0], cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture
def frame_folder(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(T):
        Image.fromarray(_frame(t)[0]).save(folder / f"img{t + 8}.png")  # img8 .. img13: numbers sort as numbers
    return folder


@pytest.fixture
def untrained(tmp_path, monkeypatch):
    """No demo model: the demo announces and runs an untrained network with backbone weights 'none'."""
    monkeypatch.setattr(demo, "DEMO_MODEL", tmp_path / "absent.pth")


def _mp4_frames(path) -> tuple[int, tuple[int, int]]:
    cap = cv2.VideoCapture(str(path))
    count, size = 0, None
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        count, size = count + 1, frame.shape[:2]
    cap.release()
    return count, size


def test_demo_on_a_video_file(video_file, tmp_path, untrained, capsys):
    _save_mask(tmp_path / "first.png", _frame(0)[1])
    out = tmp_path / "out"
    rc = demo.main(["--video", str(video_file), "--mask", str(tmp_path / "first.png"), "--output", str(out),
                    "--dev", "cpu", "--fast"])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "UNTRAINED" in printed and "fps" in printed and "reuse rate" in printed
    masks = sorted((out / "masks").glob("*.png"))
    assert [p.stem for p in masks] == [f"{t:05d}" for t in range(T)]
    with Image.open(masks[0]) as first:
        assert first.mode == "P" and np.array_equal(np.array(first.getpalette()[:12]), DAVIS_PALETTE[:4].ravel())
    np.testing.assert_array_equal(read_label_png(masks[0]), _frame(0)[1])  # the given mask on its own frame
    assert _mp4_frames(out / "overlay.mp4") == (T, (H, W))
    # a second run into the same folder is refused rather than mixed with the first
    rc = demo.main(["--video", str(video_file), "--mask", str(tmp_path / "first.png"), "--output", str(out)])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err
    # --overwrite with a request that cannot run keeps the earlier results
    rc = demo.main(["--video", str(video_file), "--mask", str(tmp_path / "first.png"), "--output", str(out),
                    "--overwrite", "--model", str(tmp_path / "missing.pth")])
    assert rc == 2 and "missing.pth" in capsys.readouterr().err
    assert len(list((out / "masks").glob("*.png"))) == T and (out / "overlay.mp4").is_file()


def test_demo_on_a_folder_of_frames_from_a_later_mask_frame(frame_folder, tmp_path, untrained):
    """A mask on frame 2: frames 2..4 are tracked forward (--max-frames 3), frames 1 and 0 backward."""
    _save_mask(tmp_path / "m.png", _frame(2)[1])
    out = tmp_path / "out"
    rc = demo.main(["--video", str(frame_folder), "--mask", str(tmp_path / "m.png"), "--mask-frame", "2",
                    "--max-frames", "3", "--output", str(out), "--dev", "cpu", "--fast"])
    assert rc == 0
    assert sorted(p.stem for p in (out / "masks").glob("*.png")) == ["img10", "img11", "img12", "img8", "img9"]
    np.testing.assert_array_equal(read_label_png(out / "masks" / "img10.png"), _frame(2)[1])
    assert _mp4_frames(out / "overlay.mp4") == (5, (H, W))


def _save_ids(path, labels: np.ndarray) -> None:
    """Object ids as a palette PNG (index = id), as DAVIS annotations are."""
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(DAVIS_PALETTE.ravel().tolist())
    image.save(path)


def test_masks_on_several_frames_start_and_correct_objects_and_earlier_frames_are_tracked_backward(
        frame_folder, tmp_path, untrained):
    """Object 1 given on frame 2; on frame 4 object 1 is corrected and object 2 starts. Every frame gets a mask
    (frames 0, 1 backward from frame 2), each given frame's result is its given mask, and --save-objects writes
    one 0/255 PNG per object and frame from the object's first tracked frame on."""
    _save_ids(tmp_path / "m2.png", _frame(2)[1])
    later = _frame(4)[1].copy()
    later[50:60, 90:105] = 2  # a second object joins on frame 4
    _save_ids(tmp_path / "m4.png", later)
    out = tmp_path / "out"
    rc = demo.main(["--video", str(frame_folder), "--mask", f"2:{tmp_path / 'm2.png'}", "--mask",
                    f"4:{tmp_path / 'm4.png'}", "--save-objects", "--output", str(out), "--dev", "cpu"])
    assert rc == 0
    names = [f"img{t + 8}" for t in range(T)]
    assert sorted(p.stem for p in (out / "masks").glob("*.png")) == sorted(names)
    np.testing.assert_array_equal(read_label_png(out / "masks" / "img10.png"), _frame(2)[1])
    np.testing.assert_array_equal(read_label_png(out / "masks" / "img12.png"), later)
    assert sorted(p.stem for p in (out / "objects" / "1").glob("*.png")) == sorted(names)
    assert sorted(p.stem for p in (out / "objects" / "2").glob("*.png")) == ["img12", "img13"]
    for object_id, name in ((1, "img8"), (1, "img12"), (2, "img13")):
        with Image.open(out / "objects" / str(object_id) / f"{name}.png") as binary:
            assert binary.mode == "L"
            pixels = np.array(binary)
        assert set(np.unique(pixels).tolist()) <= {0, 255}
        np.testing.assert_array_equal(pixels == 255, read_label_png(out / "masks" / f"{name}.png") == object_id)
    assert _mp4_frames(out / "overlay.mp4") == (T, (H, W))
    record = json.loads((out / "demo_run.json").read_text())["settings"]
    assert [m.split(":")[0] for m in record["masks"]] == ["2", "4"] and record["last_frame"] == T - 1


@pytest.mark.parametrize(
    "masks, message",
    [
        (["1:a.png", "--mask", "1:b.png"], r"several masks for frame\(s\) \[1\]"),
        (["0:a.png", "--mask", f"{T}:b.png"], f"--mask {T}:.*b.png: .* has {T} frames"),
        (["0:a.png", "--mask-frame", "1"], "--mask-frame goes with a single --mask PATH"),
        (["a.png", "--mask", "b.png"], "2 masks without a frame"),
        (["0:a.png", "--mask", "b.png"], "give every mask as FRAME:PATH, or one mask as PATH"),
    ],
)
def test_mask_flags_that_do_not_fit_are_one_error_line_and_nothing_is_written(masks, message, video_file, tmp_path,
                                                                                capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("a.png", "b.png"):
        _save_mask(tmp_path / name, _frame(0)[1])
    argv = ["--video", str(video_file), "--mask", *masks, "--output", str(tmp_path / "out"), "--dev", "cpu"]
    assert demo.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and re.search(message, err), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "case, message",
    [
        ("unreadable video", "OpenCV cannot read this video"),
        ("mask size differs", "pass --resize-mask"),
        ("empty mask", "the mask is empty"),
        ("mask frame beyond the end", f"--mask-frame {T}: .* has {T} frames"),
    ],
)
def test_demo_errors_say_what_is_wrong(case, message, video_file, tmp_path, capsys):
    video, mask, mask_frame = video_file, tmp_path / "mask.png", 0
    _save_mask(mask, _frame(0)[1])
    if case == "unreadable video":
        video = tmp_path / "broken.mp4"
        video.write_bytes(b"this is not a video")
    elif case == "mask size differs":
        _save_mask(mask, np.ones((H // 2, W // 2), np.uint8))
    elif case == "empty mask":
        _save_mask(mask, np.zeros((H, W), np.uint8))
    else:
        mask_frame = T
    rc = demo.main(["--video", str(video), "--mask", str(mask), "--mask-frame", str(mask_frame),
                    "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ")
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()  # nothing written before the inputs are checked


def test_open_video_reads_files_and_folders_in_order(video_file, frame_folder):
    from_file = open_video(video_file)
    assert len(from_file) == T and from_file.size == (H, W) and from_file.fps == pytest.approx(15)
    frames = list(from_file.frames(start=4))
    assert [i for i, _ in frames] == [4, 5] and frames[0][1].shape == (H, W, 3)
    from_folder = open_video(frame_folder)
    assert from_folder.frame_names == [f"img{t + 8}" for t in range(T)] and from_folder.fps is None
    index, image = next(from_folder.frames(start=1))
    assert index == 1 and np.array_equal(image, _frame(1)[0])


def test_frames_read_backward_are_the_frames_read_forward(video_file, frame_folder, monkeypatch):
    import evaluator.demo.video_input as video_input

    monkeypatch.setattr(video_input, "BACKWARD_STRETCH", 2)  # a video file is decoded in several stretches
    for source in (open_video(video_file), open_video(frame_folder)):
        forward = list(source.frames(1, T))
        backward = list(source.frames_backward(1, T))
        assert [i for i, _ in backward] == list(range(T - 1, 0, -1))
        for (i, image), (j, same) in zip(reversed(forward), backward):
            assert i == j and np.array_equal(image, same)


def test_open_video_refuses_missing_and_empty_inputs(tmp_path):
    with pytest.raises(VideoInputError, match="no such video file or frame folder"):
        open_video(tmp_path / "nothing.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoInputError, match="holds no frames"):
        open_video(tmp_path / "empty")


def test_frames_of_another_size_in_a_folder_are_named(frame_folder):
    Image.fromarray(np.zeros((H, W + 4, 3), np.uint8)).save(frame_folder / "img11.png")
    with pytest.raises(VideoInputError, match=r"img11\.png is 116x64 but the first frame is 112x64"):
        list(open_video(frame_folder).frames())


def test_start_masks_in_every_accepted_format(tmp_path):
    ids = np.zeros((H, W), np.uint8)
    ids[5:20, 5:30], ids[30:50, 60:90] = 1, 2
    palette = Image.fromarray(ids, mode="P")
    palette.putpalette(DAVIS_PALETTE.ravel().tolist())
    palette.save(tmp_path / "palette.png")
    Image.fromarray(DAVIS_PALETTE[ids]).save(tmp_path / "rgb.png")  # palette colours saved as RGB
    Image.fromarray(ids).save(tmp_path / "ids.png")  # greyscale object ids
    for name in ("palette.png", "rgb.png", "ids.png"):
        np.testing.assert_array_equal(read_start_mask(tmp_path / name, (H, W)), ids)
    _save_mask(tmp_path / "binary.png", (ids > 0).astype(np.uint8))
    np.testing.assert_array_equal(read_start_mask(tmp_path / "binary.png", (H, W)), (ids > 0).astype(np.uint8))


def test_start_mask_resize_and_refusals(tmp_path):
    small = np.zeros((H // 2, W // 2), np.uint8)
    small[4:12, 4:20] = 1
    _save_mask(tmp_path / "small.png", small)
    resized = read_start_mask(tmp_path / "small.png", (H, W), resize=True)
    assert resized.shape == (H, W) and resized[8:24, 8:40].all() and resized.sum() == 4 * small.sum()
    Image.fromarray(np.array([[0, 255, 128, 3]] * 4, np.uint8)).save(tmp_path / "soft.png")
    with pytest.raises(VideoInputError, match="mixes 255 with other values"):
        read_start_mask(tmp_path / "soft.png", (4, 4))
    Image.fromarray(np.full((4, 4, 3), (10, 200, 30), np.uint8)).save(tmp_path / "green.png")
    with pytest.raises(VideoInputError, match="not DAVIS palette colours"):
        read_start_mask(tmp_path / "green.png", (4, 4))
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(VideoInputError, match="cannot read the mask image"):
        read_start_mask(tmp_path / "text.png", (4, 4))


@pytest.mark.parametrize("case", ["grey 0/128", "grey 0/1", "16-bit 0/65535", "grey as RGB", "black and red"])
def test_a_mask_of_background_and_one_value_is_object_1(tmp_path, case):
    shape = np.zeros((H, W), np.uint8)
    shape[10:30, 20:50] = 1
    if case == "grey 0/128":
        image = Image.fromarray(shape * 128)
    elif case == "grey 0/1":
        image = Image.fromarray(shape)
    elif case == "16-bit 0/65535":
        image = Image.fromarray(shape.astype(np.uint16) * 65535)
    elif case == "grey as RGB":
        image = Image.fromarray(np.repeat(shape[..., None] * 128, 3, axis=2))
    else:
        image = Image.fromarray(shape[..., None] * np.array([230, 20, 20], np.uint8))  # not a palette colour
    image.save(tmp_path / "mask.png")
    np.testing.assert_array_equal(read_start_mask(tmp_path / "mask.png", (H, W)), shape)


def test_palette_indices_and_several_grey_values_stay_object_ids(tmp_path):
    ids = np.zeros((H, W), np.uint8)
    ids[10:30, 20:50] = 128
    palette = Image.fromarray(ids, mode="P")
    palette.putpalette(DAVIS_PALETTE.ravel().tolist())
    palette.save(tmp_path / "palette.png")
    np.testing.assert_array_equal(read_start_mask(tmp_path / "palette.png", (H, W)), ids)  # a palette keeps 128
    ids[40:50, 60:70] = 3
    Image.fromarray(ids).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(read_start_mask(tmp_path / "grey.png", (H, W)), ids)  # several values: ids
    Image.fromarray(DAVIS_PALETTE[(ids > 0) * 2]).save(tmp_path / "green.png")  # black and palette colour 2
    np.testing.assert_array_equal(read_start_mask(tmp_path / "green.png", (H, W)), (ids > 0) * 2)
    Image.fromarray(np.array([[0, 300, 301, 0]] * 4, np.uint16)).save(tmp_path / "wide.png")
    with pytest.raises(VideoInputError, match="object ids must be 1..254"):
        read_start_mask(tmp_path / "wide.png", (4, 4))


def test_an_output_folder_is_continued_only_by_an_unfinished_run_of_the_same_settings(tmp_path):
    out = DemoOutput(tmp_path / "out")
    settings = {"video": "clip.mp4", "TH": 0.7}
    assert prepare(out, settings, overwrite=False) is False  # nothing there: a fresh start
    out.write_record(settings, finished=False)
    out.masks.mkdir()
    (out.masks / "00000.png").write_bytes(b"a mask")
    assert prepare(out, settings, overwrite=False) is True  # interrupted, same settings: continued, files kept
    assert (out.masks / "00000.png").is_file()
    with pytest.raises(OutputInUse, match=r"interrupted run with other settings \(TH 0.7 there, 0.5 now\)"):
        prepare(out, {**settings, "TH": 0.5}, overwrite=False)
    out.write_record(settings, finished=True)
    with pytest.raises(OutputInUse, match="already holds the results of a run; pass --overwrite"):
        prepare(out, settings, overwrite=False)
    assert prepare(out, {**settings, "TH": 0.5}, overwrite=True) is False  # --overwrite clears everything
    assert not out.masks.exists() and not out.record.exists()
    out.masks.mkdir()
    (out.masks / "00000.png").write_bytes(b"an older version's mask, no record")
    with pytest.raises(OutputInUse, match="already holds the results"):
        prepare(out, settings, overwrite=False)


def test_a_record_of_the_previous_version_counts_as_other_settings(tmp_path):
    out = DemoOutput(tmp_path / "out")
    old = {"video": "clip.mp4", "start mask": "0123456789abcdef", "mask frame": 0, "last frame": 5,
           "model": "/w/m.pth (123 bytes, modified 1700000000000000000)", "backbone weights": "none", "TH": 0.7}
    out.write_record(old, finished=False)
    now = {"video": "clip.mp4", "start_mask": "0123456789abcdef", "mask_frame": 0, "last_frame": 5, "TH": 0.7}
    with pytest.raises(OutputInUse, match=r"other settings \(start_mask not recorded there, .*--overwrite"):
        prepare(out, now, overwrite=False)


def _interrupted_after_the_last_mask(out) -> None:
    """Make a finished run's record say unfinished, as a run stopped between its last mask and its overlay leaves it."""
    record = read_record(out / "demo_run.json")
    write_record(out / "demo_run.json", record["settings"], finished=False)


def test_the_record_names_settings_as_evaluate_does_and_knows_a_model_by_its_contents(video_file, tmp_path, capsys):
    from models.checkpoint import save_gfrtm
    from models.config import NetworkConfig
    from models.gfrtm import GFRTM

    torch = pytest.importorskip("torch")
    _save_mask(tmp_path / "first.png", _frame(0)[1])
    model, out = tmp_path / "model.pth", tmp_path / "out"
    net = GFRTM(NetworkConfig())
    save_gfrtm(model, net, backbone_weights="none")
    argv = ["--video", str(video_file), "--mask", str(tmp_path / "first.png"), "--output", str(out),
            "--model", str(model), "--max-frames", "2", "--dev", "cpu"]
    assert demo.main(argv) == 0
    record = json.loads((out / "demo_run.json").read_text())
    assert record["finished"] is True and set(record) == {"settings", "finished"}
    settings = record["settings"]
    assert sorted(settings) == sorted(["video", "frames", "masks", "last_frame", "model",
                                       "model_sha256", "backbone", "backbone_weights", "TH", "schedule"])
    assert settings["model"] == str(model.resolve()) and settings["model_sha256"] == file_sha256(model)
    assert (settings["backbone"], settings["backbone_weights"], settings["TH"], settings["schedule"]) == \
        ("resnet18", "none", 0.7, "fast")
    assert (settings["video"], settings["frames"], settings["last_frame"]) == (str(video_file.resolve()), T, 1)
    assert [m.split(":")[0] for m in settings["masks"]] == ["0"]

    # stopped after its last mask: another threshold is refused, named by its flag
    _interrupted_after_the_last_mask(out)
    capsys.readouterr()
    assert demo.main([*argv, "--TH", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "interrupted run with other settings (TH 0.7 there, 0.5 now)" in err and "--overwrite" in err

    # the model retrained in place, with the same size and modification time: another model all the same
    before = model.stat()
    with torch.no_grad():
        next(net.parameters()).add_(1.0)
    save_gfrtm(model, net, backbone_weights="none")
    os.utime(model, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (model.stat().st_size, model.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert file_sha256(model) != settings["model_sha256"]
    assert demo.main(argv) == 2
    err = capsys.readouterr().err
    assert f"other settings (model {model.resolve()} has changed since)" in err and "--overwrite" in err
    assert demo.main([*argv, "--overwrite"]) == 0
    assert read_record(out / "demo_run.json")["settings"]["model_sha256"] == file_sha256(model)


def test_the_interrupt_line_names_the_masks_folder_only_once_a_mask_is_there(tmp_path):
    saved = Saved(DemoOutput(tmp_path / "out"), [f"{k:05d}" for k in range(30)], recorded=True)
    assert saved.text() == "no mask is saved yet (0 of 30)"  # the masks folder does not exist yet
    assert Saved().text() == "nothing is saved yet"
    saved.out.masks.mkdir(parents=True)
    (saved.out.masks / "00000.png").write_bytes(b"a mask")
    assert saved.text() == (f"1 of 30 masks are saved in {tmp_path / 'out' / 'masks'} "
                            f"(the overlay video is written at the end)")
