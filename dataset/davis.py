"""DAVIS readers: the 2017 trainval layout (DAVIS 2016 and 2017 sets) and the original DAVIS 2016 release.

2017 trainval layout: JPEGImages/480p/<seq>/<frame>.jpg, Annotations/480p/<seq>/<frame>.png
(palette, value = object id), ImageSets/{2016,2017}/<split>.txt (sequence names).
Original 2016 release: the same folders with 0/255 greyscale masks and ImageSets/480p/<split>.txt,
one "/JPEGImages/480p/<seq>/<frame>.jpg /Annotations/480p/<seq>/<frame>.png" line per frame.
Every DAVIS object starts in frame 0; DAVIS 2016 merges all objects of a sequence into object 1.
DAVIS 2017 test-dev (dv2017testdev) has the same layout with ImageSets/2017/test-dev.txt and only
the first frame of each sequence annotated: every frame is written, nothing is scored.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dataset.errors import DatasetError
from dataset.sequence import (
    IMAGE_SUFFIXES,
    VideoSequence,
    check_frames_readable,
    list_frame_files,
    object_ids_in,
    read_name_list,
    select_names,
    validate_start_annotations,
)
from lib.image_io import read_label_png

RESOLUTION = "480p"


def check_davis_root(root: Path) -> None:
    """`root` must hold JPEGImages/480p; a tree of the folder layout is pointed to the flags that read it."""
    if root.is_file():
        raise DatasetError(f"{root}: is a file, not a folder; point --davis-root at the folder holding JPEGImages/ "
                           f"and Annotations/")
    if not root.is_dir():
        raise DatasetError(f"{root}: DAVIS root not found; point --davis-root at the folder holding JPEGImages/ "
                           f"and Annotations/")
    if not (root / "JPEGImages" / RESOLUTION).is_dir():
        hint = ""
        if (root / "JPEGImages").is_dir() and (root / "Annotations").is_dir():
            hint = (f"; it holds JPEGImages/<sequence>/ and Annotations/<sequence>/, the layout of your own videos: "
                    f"read it with --dset folder --root {root}")
        raise DatasetError(f"{root}: no JPEGImages/{RESOLUTION} folder; this is not a DAVIS root{hint}")


def davis_split_path(root: Path, year: str, split: str) -> Path:
    return root / "ImageSets" / year / f"{split}.txt"


def load_davis(root: str | Path, year: str, split: str = "val",
               only: list[str] | None = None) -> list[VideoSequence]:
    """DAVIS `year` ('2016' or '2017') `split` sequences, validated up front.

    For 2016, ImageSets/2016/<split>.txt (2017 trainval layout) is used when present, otherwise
    ImageSets/480p/<split>.txt (the original 2016 release).
    """
    root = Path(root)
    check_davis_root(root)
    if year not in ("2016", "2017"):
        raise ValueError(f"DAVIS year must be '2016' or '2017', got {year!r}")
    merge = year == "2016"
    split_path = davis_split_path(root, year, split)
    if split_path.is_file():
        names = select_names(read_name_list(split_path, "DAVIS split file"), only, str(split_path))
        sequences = [_folder_sequence(root, name, merge, split_path) for name in names]
    elif year == "2016" and (root / "ImageSets" / RESOLUTION / f"{split}.txt").is_file():
        sequences = _original_2016_sequences(root / "ImageSets" / RESOLUTION / f"{split}.txt", root, only)
    else:
        also = f" or {root / 'ImageSets' / RESOLUTION / f'{split}.txt'} (original DAVIS 2016 release)" if merge else ""
        raise DatasetError(f"{split_path}: DAVIS split file not found{also}; is {root} a DAVIS {year} root?")
    for seq in sequences:
        validate_start_annotations(seq)
    return sequences


def load_davis_testdev(root: str | Path, only: list[str] | None = None) -> list[VideoSequence]:
    """DAVIS 2017 test-dev (ImageSets/2017/test-dev.txt): first-frame masks only, validated up front."""
    root = Path(root)
    check_davis_root(root)
    split_path = davis_split_path(root, "2017", "test-dev")
    if not split_path.is_file():
        raise DatasetError(f"{split_path}: DAVIS test-dev list not found; dv2017testdev needs the DAVIS 2017 "
                           f"test-dev download (ImageSets, JPEGImages/480p, Annotations/480p) in --davis-root")
    return load_davis(root, "2017", "test-dev", only)


def _folder_sequence(root: Path, name: str, merge: bool, listed_in: Path) -> VideoSequence:
    image_dir = root / "JPEGImages" / RESOLUTION / name
    if not image_dir.is_dir():
        raise DatasetError(f"{image_dir}: frame folder of sequence {name!r} (listed in {listed_in}) not found")
    images = list_frame_files(image_dir, IMAGE_SUFFIXES)
    if not images:
        raise DatasetError(f"{image_dir}: no frames (.jpg/.png) for sequence {name!r}")
    annotation_dir = root / "Annotations" / RESOLUTION / name
    by_stem = {p.stem: p for p in list_frame_files(annotation_dir, (".png",))} if annotation_dir.is_dir() else {}
    annotations = [by_stem.get(p.stem) for p in images]
    expected_first = annotation_dir / f"{images[0].stem}.png"
    return davis_sequence(name, images, annotations, merge, expected_first)


def _original_2016_sequences(list_path: Path, root: Path, only: list[str] | None) -> list[VideoSequence]:
    """Sequences of an original DAVIS 2016 frame list, in order of first appearance."""
    frames: dict[str, list[tuple[Path, Path | None]]] = {}
    for number, line in enumerate(list_path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) > 2:
            raise DatasetError(f"{list_path}, line {number}: expected '<image> [<annotation>]', got {line.strip()!r}")
        image = root / parts[0].lstrip("/")
        annotation = root / parts[1].lstrip("/") if len(parts) == 2 else None
        frames.setdefault(image.parent.name, []).append((image, annotation))
    if not frames:
        raise DatasetError(f"{list_path}: DAVIS 2016 frame list is empty")
    sequences = []
    for name in select_names(list(frames), only, str(list_path)):
        images = [image for image, _ in frames[name]]
        missing = [p for p in images if not p.is_file()]
        if missing:
            raise DatasetError(f"{missing[0]}: frame listed in {list_path} not found ({len(missing)} missing in {name})")
        annotations = [a if a is not None and a.is_file() else None for _, a in frames[name]]
        expected_first = frames[name][0][1] or root / "Annotations" / RESOLUTION / name / f"{images[0].stem}.png"
        sequences.append(davis_sequence(name, images, annotations, True, expected_first))
    return sequences


def davis_sequence(name: str, images: list[Path], annotations: list[Path | None], merge: bool,
                   expected_first: Path) -> VideoSequence:
    """A DAVIS sequence; its objects are those of the first annotation, all starting at frame 0.

    `annotations[i]` is frame i's annotation or None; `expected_first` is named when the first is missing.
    """
    if annotations[0] is None:
        raise DatasetError(f"{expected_first}: sequence {name!r} has no annotation for its first frame "
                           f"{images[0].stem}; DAVIS needs the first frame annotated")
    check_frames_readable(name, images)
    first = read_label_png(annotations[0])
    object_ids = ([1] if np.any(first != 0) else []) if merge else object_ids_in(first)
    if not object_ids:
        raise DatasetError(f"{annotations[0]}: the first annotation of {name!r} contains no object")
    return VideoSequence(
        name=name,
        frame_names=[p.stem for p in images],
        image_paths=images,
        annotation_paths={i: a for i, a in enumerate(annotations) if a is not None},
        object_ids=object_ids,
        start_frames={o: 0 for o in object_ids},
        merge_objects=merge,
    )
