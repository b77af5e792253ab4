"""The user's own video for demo.py: a video file (anything OpenCV decodes: mp4, avi, mov, ...)
or a folder of frames, and the mask of the objects in one of its frames.

What can be checked before tracking is checked when opening (a video file is decoded once to
count its frames; the frames of a folder are checked for size as they are read), with an error
that names the file, says what is wrong and what to do.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from dataset.sequence import list_frame_files
from lib.image_io import read_image
from lib.user_masks import MaskFormatError, read_user_mask

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
BACKWARD_STRETCH = 32  # frames of a video file decoded at a time when reading it backward


class VideoInputError(ValueError):
    """The user's video or mask cannot be used as given."""


@dataclass
class VideoInput:
    """A video file or a folder of frames, opened and checked.

    Attributes:
        path: the file or folder.
        frame_names: one name per frame (file stems of a folder, 00000... for a video file).
        size: (H, W) of the frames.
        fps: the file's frame rate, None for a folder.
        frame_paths: the frame images of a folder, None for a video file.
    """

    path: Path
    frame_names: list[str]
    size: tuple[int, int]
    fps: float | None
    frame_paths: list[Path] | None = None

    def __len__(self) -> int:
        return len(self.frame_names)

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (index, (H,W,3) uint8 RGB image) for frames start..stop-1, reading lazily."""
        stop = len(self) if stop is None else min(stop, len(self))
        source = self._folder_frames(start, stop) if self.frame_paths is not None else self._file_frames(start, stop)
        for index, image in source:
            if image.shape[:2] != self.size:
                raise VideoInputError(f"{self._frame_label(index)} is {image.shape[1]}x{image.shape[0]} but the "
                                      f"first frame is {self.size[1]}x{self.size[0]}: all frames must have one size")
            yield index, image

    def frames_backward(self, start: int, stop: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (index, image) for frames stop-1 down to start. A video file is decoded forward in stretches
        of BACKWARD_STRETCH frames, the last stretch first (its frames held in memory meanwhile), because
        seeking in compressed video is unreliable."""
        stop = min(stop, len(self))
        if self.frame_paths is not None:
            for index in range(stop - 1, start - 1, -1):
                yield index, self._checked(index, read_image(self.frame_paths[index]))
            return
        for first in range(max(start, stop - BACKWARD_STRETCH), start - BACKWARD_STRETCH, -BACKWARD_STRETCH):
            first = max(first, start)
            stretch = list(self.frames(first, stop))
            stop = first
            yield from reversed(stretch)

    def _checked(self, index: int, image: np.ndarray) -> np.ndarray:
        if image.shape[:2] != self.size:
            raise VideoInputError(f"{self._frame_label(index)} is {image.shape[1]}x{image.shape[0]} but the "
                                  f"first frame is {self.size[1]}x{self.size[0]}: all frames must have one size")
        return image

    def _folder_frames(self, start: int, stop: int) -> Iterator[tuple[int, np.ndarray]]:
        for index in range(start, stop):
            yield index, read_image(self.frame_paths[index])

    def _file_frames(self, start: int, stop: int) -> Iterator[tuple[int, np.ndarray]]:
        capture = cv2.VideoCapture(str(self.path))
        try:
            for index in range(stop):
                if index < start:  # grab() skips a frame without converting it; seeking is unreliable
                    ok = capture.grab()
                    image = None
                else:
                    ok, image = capture.read()
                if not ok:
                    raise VideoInputError(f"{self.path}: frame {index} cannot be decoded although the video has "
                                          f"{len(self)} frames; re-encode it (e.g. with ffmpeg) or pass a folder of frames")
                if image is not None:
                    yield index, cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()

    def _frame_label(self, index: int) -> str:
        return str(self.frame_paths[index]) if self.frame_paths is not None else f"{self.path}: frame {index}"


def open_video(path: str | Path) -> VideoInput:
    """Open a video file or a folder of frames (sorted by name, numbers in names compared as numbers)."""
    path = Path(path)
    if not path.exists():
        raise VideoInputError(f"{path}: no such video file or frame folder")
    if path.is_dir():
        return _open_folder(path)
    return _open_file(path)


def read_start_mask(path: str | Path, frame_size: tuple[int, int], resize: bool = False) -> np.ndarray:
    """Read the mask of the objects to track, by the rules of every user's mask (lib.user_masks,
    docs/own_data.md): palette indices are ids; a greyscale or RGB mask with one value or colour
    besides 0 is object 1; several grey values are ids; DAVIS palette colours are their indices.

    Args:
        frame_size: (H, W) of the video's frames.
        resize: resize a mask of another size to frame_size (nearest neighbour) instead of refusing it.
    Returns:
        (H,W) uint8 object ids, 0 = background, with at least one object.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoInputError(f"{path}: no such mask file")
    try:
        labels = read_user_mask(path)
    except MaskFormatError as err:
        raise VideoInputError(str(err)) from err
    if labels.shape != tuple(frame_size):
        if not resize:
            raise VideoInputError(
                f"{path}: the mask is {labels.shape[1]}x{labels.shape[0]} but the video frames are "
                f"{frame_size[1]}x{frame_size[0]}; pass --resize-mask to resize it to the frames (nearest neighbour)"
            )
        labels = cv2.resize(labels, (frame_size[1], frame_size[0]), interpolation=cv2.INTER_NEAREST)
    if not labels.any():
        raise VideoInputError(f"{path}: the mask is empty (every pixel is background); mark the objects to track "
                              "with non-zero values (255 for one object, or palette indices 1, 2, ...)")
    return labels


def _open_folder(folder: Path) -> VideoInput:
    paths = list_frame_files(folder, FRAME_SUFFIXES)  # numbers in names compare as numbers
    if not paths:
        raise VideoInputError(f"{folder}: the folder holds no frames ({', '.join(FRAME_SUFFIXES)} files)")
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        dup = sorted({s for s in stems if stems.count(s) > 1})[:3]
        raise VideoInputError(f"{folder}: several frames share the names {dup} (e.g. .jpg and .png); keep one of each")
    height, width = read_image(paths[0]).shape[:2]
    return VideoInput(folder, stems, (height, width), None, paths)


def _open_file(path: Path) -> VideoInput:
    capture = cv2.VideoCapture(str(path))
    try:
        ok, first = capture.read() if capture.isOpened() else (False, None)
        if not ok:
            raise VideoInputError(
                f"{path}: OpenCV cannot read this video (unsupported or damaged file). Convert it to mp4 "
                "(e.g. `ffmpeg -i INPUT out.mp4`) or extract its frames into a folder and pass the folder"
            )
        fps = capture.get(cv2.CAP_PROP_FPS)
        count = 1
        while capture.grab():  # count by decoding: the container's frame count is not always right
            count += 1
    finally:
        capture.release()
    return VideoInput(path, [f"{i:05d}" for i in range(count)], first.shape[:2], fps if fps > 0 else None)

