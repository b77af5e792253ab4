"""One evaluation video: its frames, its first-frame annotations, and helpers to list frame folders."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from dataset.errors import DatasetError
from lib.image_io import read_image, read_image_size, read_label_png
from lib.user_masks import MaskReading

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
VOID_LABEL = 255  # never an object id


def _natural_key(name: str) -> list:
    # '00005' < '00010' and 'frame2' < 'frame10'
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def list_frame_files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Files of `folder` with one of `suffixes`, sorted by frame name; hidden files are ignored."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in suffixes and not p.name.startswith(".")]
    return sorted(files, key=lambda p: _natural_key(p.stem))


def read_name_list(path: Path, what: str) -> list[str]:
    """Non-empty, stripped lines of a split file (sequence names), in order, without duplicates."""
    if not path.is_file():
        raise DatasetError(f"{path}: {what} not found")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DatasetError(f"{path}: {what} lists no sequences")
    return list(dict.fromkeys(names))


def select_names(available: list[str], wanted: list[str] | None, source: str) -> list[str]:
    """`available` restricted to `wanted` (kept in `available` order); unknown names are an error."""
    if wanted is None:
        return available
    known = set(available)
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise DatasetError(f"unknown sequences {unknown} (not in {source}); first available: {available[:5]}")
    chosen = set(wanted)
    return [n for n in available if n in chosen]


def object_ids_in(labels: np.ndarray) -> list[int]:
    """Sorted object ids present in a label map (0 = background and 255 = void excluded)."""
    return [int(v) for v in np.unique(labels) if v not in (0, VOID_LABEL)]


def require_folders(*folders: Path, needed_by: str) -> None:
    """DatasetError for the first of `folders` that does not exist; `needed_by` says what reads it from where."""
    for folder in folders:
        if not folder.is_dir():
            raise DatasetError(f"{folder}: not found; {needed_by}")


def sub_folders(folder: Path) -> list[str]:
    """Names of the sub-folders of `folder` (hidden ones ignored), in name order."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def pngs_by_stem(folder: Path) -> dict[str, Path]:
    """The PNG files of `folder` by file stem ({} when the folder does not exist)."""
    return {p.stem: p for p in list_frame_files(folder, (".png",))} if folder.is_dir() else {}


def frame_folder(folder: Path, name: str, listed_in: str, kind: str = "video") -> list[Path]:
    """The frames of `folder`, in order, after reading every header (`check_frames_readable`).

    `name` is the video's name, `listed_in` where it was found (named in the message when the folder
    is missing) and `kind` what the data set calls a video ('video' or 'sequence').
    """
    if not folder.is_dir():
        raise DatasetError(f"{folder}: frame folder of {kind} {name!r} (listed in {listed_in}) not found")
    images = list_frame_files(folder, IMAGE_SUFFIXES)
    if not images:
        raise DatasetError(f"{folder}: no frames (.jpg/.png) for {kind} {name!r}")
    check_frames_readable(name, images)
    return images


def scan_first_appearance(annotations: dict[int, Path]) -> dict[int, int]:
    """Object id -> first annotated frame containing it (reads every annotation, in frame order)."""
    starts: dict[int, int] = {}
    for frame in sorted(annotations):
        for oid in object_ids_in(read_label_png(annotations[frame])):
            starts.setdefault(oid, frame)
    return starts


@dataclass
class VideoSequence:
    """A video to segment: frames on disk, annotation PNGs, and when each object first appears.

    Frames are read from disk when asked for (nothing is kept). Labels are (H, W) uint8 object ids.
    The data sets' annotations are read as they store them (lib.image_io.read_label_png); a folder
    of the user's own masks gives `mask_reading`, the one way all masks of this video are read.
    """

    name: str
    frame_names: list[str]  # file stems, used for output file names
    image_paths: list[Path]
    annotation_paths: dict[int, Path]  # frame index -> annotation PNG, for every annotated frame
    object_ids: list[int]  # sorted
    start_frames: dict[int, int]  # object id -> index of the frame where it first appears
    merge_objects: bool = False  # DAVIS 2016: every non-zero label is object 1
    output_frames: list[int] | None = None  # frames whose masks a run writes; None = every frame
    mask_reading: MaskReading | None = None  # the user's own masks (folder set); None: a data set's format

    def __post_init__(self) -> None:
        if len(self.frame_names) != len(self.image_paths):
            raise ValueError(f"{self.name}: {len(self.frame_names)} frame names for {len(self.image_paths)} images")
        if sorted(self.start_frames) != sorted(self.object_ids):
            raise ValueError(f"{self.name}: start frames {self.start_frames} do not match object ids {self.object_ids}")
        missing = sorted({f for f in self.start_frames.values() if f not in self.annotation_paths})
        if missing:
            raise ValueError(f"{self.name}: objects start in frames {missing}, which have no annotation")
        self.object_ids = sorted(self.object_ids)
        if self.output_frames is None:
            self.output_frames = list(range(len(self.image_paths)))

    def __len__(self) -> int:
        return len(self.image_paths)

    @property
    def annotated_frames(self) -> list[int]:
        return sorted(self.annotation_paths)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of frame 0."""
        return self.frame_size(0)

    def frame_size(self, i: int) -> tuple[int, int]:
        return read_image_size(self.image_paths[i])

    def image(self, i: int) -> np.ndarray:
        """Frame i as (H, W, 3) uint8 RGB."""
        return read_image(self.image_paths[i])

    def read_labels(self, path: Path) -> np.ndarray:
        """One of this sequence's annotation files as (H, W) uint8 ids, as they are stored (no merging)."""
        return self.mask_reading.read(path) if self.mask_reading is not None else read_label_png(path)

    def annotation(self, i: int) -> np.ndarray:
        """Labels of annotated frame i, (H, W) uint8 (0/1 when merge_objects)."""
        path = self.annotation_paths.get(i)
        if path is None:
            raise DatasetError(f"{self.name}: frame {i} ({self.frame_names[i]}) has no annotation")
        labels = self.read_labels(path)
        frame_size = self.frame_size(i)
        if labels.shape != tuple(frame_size):
            raise DatasetError(
                f"{path}: annotation is {labels.shape[1]}x{labels.shape[0]} but its frame {self.image_paths[i]} is "
                f"{frame_size[1]}x{frame_size[0]} (WxH); resize the annotation to the frame"
            )
        if self.merge_objects:
            labels = (labels != 0).astype(np.uint8)
        return labels

    def start_masks(self, i: int) -> dict[int, np.ndarray]:
        """{object id: (H, W) bool mask in frame i} of the objects whose first frame is i."""
        starting = [o for o in self.object_ids if self.start_frames[o] == i]
        if not starting:
            return {}
        labels = self.annotation(i)
        return {o: labels == o for o in starting}

    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        """(index, (H, W, 3) uint8 RGB frame) in order, read one at a time."""
        for i in range(len(self)):
            yield i, self.image(i)


def validate_start_annotations(seq: VideoSequence, known_ids: set[int] | None = None, id_source: str = "") -> None:
    """Check, before any work, every frame where an object starts.

    Each start annotation must be readable, have its frame's size, contain every object that
    starts there, and (when `known_ids` is given) contain no id outside `known_ids`
    (`id_source` names where those ids come from, e.g. a meta.json).
    """
    for frame in sorted(set(seq.start_frames.values())):
        path = seq.annotation_paths[frame]
        labels = seq.read_labels(path)
        frame_size = read_image_size(seq.image_paths[frame])
        if labels.shape != tuple(frame_size):
            raise DatasetError(
                f"{path}: annotation is {labels.shape[1]}x{labels.shape[0]} but its frame {seq.image_paths[frame]} is "
                f"{frame_size[1]}x{frame_size[0]} (WxH); resize the annotation to the frame"
            )
        present = set(object_ids_in(labels)) if not seq.merge_objects else ({1} if (labels != 0).any() else set())
        starting = [o for o in seq.object_ids if seq.start_frames[o] == frame]
        absent = [o for o in starting if o not in present]
        if absent:
            raise DatasetError(
                f"{path}: objects {absent} of {seq.name} should first appear in this frame but have no pixel in it; "
                f"the first annotation of every object must contain it"
            )
        if known_ids is not None:
            unknown = sorted(present - known_ids)
            if unknown:
                raise DatasetError(
                    f"{path}: object ids {unknown} are not listed for {seq.name} in {id_source}; "
                    f"fix the annotation or the metadata"
                )


def check_frames_readable(name: str, image_paths: list[Path]) -> None:
    """Read every frame's header up front (about 0.1 ms a frame): an empty, unreadable or odd-sized
    frame is reported before any sequence is tracked, not in the middle of a run."""
    empty = [p for p in image_paths if p.stat().st_size == 0]
    if empty:
        raise DatasetError(f"{empty[0]}: empty frame file in sequence {name} ({len(empty)} such files); replace them")
    first = read_image_size(image_paths[0])
    for path in image_paths[1:]:
        size = read_image_size(path)
        if size != first:
            raise DatasetError(f"{path}: frame is {size[1]}x{size[0]} but {image_paths[0]} is {first[1]}x{first[0]} "
                               f"(WxH); all frames of sequence {name} must have one size")
