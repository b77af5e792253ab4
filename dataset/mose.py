"""MOSE validation reader (mose).

Layout under the root (--mose-root): valid/JPEGImages/<video>/<frame>.jpg and
valid/Annotations/<video>/<first frame>.png, the mask of the video's first frame (palette PNG,
value = object id). Every object of a video is in that first mask and starts in frame 0; further
PNGs in the annotation folder, if any, are not read. The videos are the sub-folders of
valid/JPEGImages in name order. There is no public ground truth: every frame is written, nothing
is scored, and the results are submitted as a zip of Annotations/<video>/<frame>.png.
"""
from __future__ import annotations

from pathlib import Path

from dataset.errors import DatasetError
from dataset.sequence import (
    VideoSequence,
    frame_folder,
    object_ids_in,
    require_folders,
    select_names,
    sub_folders,
    validate_start_annotations,
)
from lib.image_io import read_label_png

ROOT_FLAG = "--mose-root"


def load_mose(root: str | Path, only: list[str] | None = None) -> list[VideoSequence]:
    """The MOSE valid videos (all of them, or those of `only`), validated up front."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: MOSE root not found; point {ROOT_FLAG} at the folder holding valid/")
    image_root, annotation_root = root / "valid" / "JPEGImages", root / "valid" / "Annotations"
    require_folders(image_root, annotation_root, needed_by=f"mose reads valid/JPEGImages/<video>/ and "
                                                          f"valid/Annotations/<video>/ under {ROOT_FLAG} ({root})")
    available = sub_folders(image_root)
    if not available:
        raise DatasetError(f"{image_root}: holds no video folders; is {root} the MOSE root?")
    sequences = []
    for video in select_names(available, only, str(image_root)):
        images = frame_folder(image_root / video, video, str(image_root))
        first = annotation_root / video / f"{images[0].stem}.png"
        if not first.is_file():
            raise DatasetError(f"{first}: missing; MOSE gives the objects of video {video!r} in the mask of its "
                               f"first frame {images[0].stem}")
        object_ids = object_ids_in(read_label_png(first))
        if not object_ids:
            raise DatasetError(f"{first}: the first-frame mask of {video!r} contains no object")
        seq = VideoSequence(video, [p.stem for p in images], images, {0: first}, object_ids,
                            {o: 0 for o in object_ids})
        validate_start_annotations(seq)
        sequences.append(seq)
    return sequences
