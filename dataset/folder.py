"""A plain tree of videos (folder): <root>/JPEGImages/<sequence>/ and <root>/Annotations/<sequence>/.

Frames are <frame>.jpg/.png directly in JPEGImages/<sequence>/ (no resolution level such as 480p);
annotations are palette PNGs (value = object id) named like their frames. The sequences are the
sub-folders of JPEGImages in name order. Every sequence needs its first frame annotated.

- A sequence with every frame annotated is read exactly as DAVIS 2017 val reads one: its objects
  are those of the first annotation, all starting in frame 0 (so DAVIS sequences copied into this
  layout give the same sequences, masks and scores).
- Any other sequence takes its objects from all of its annotations: each starts in the first
  annotated frame that contains it (every annotation is read up front).

Every frame is written. A loaded set is scored with the DAVIS rules only when every frame of every
loaded sequence is annotated (`folder_is_fully_annotated`); otherwise it is not scored.
"""
from __future__ import annotations

from pathlib import Path

from dataset.davis import davis_sequence
from dataset.errors import DatasetError
from dataset.sequence import (
    VideoSequence,
    frame_folder,
    pngs_by_stem,
    require_folders,
    scan_first_appearance,
    select_names,
    sub_folders,
    validate_start_annotations,
)

ROOT_FLAG = "--root"


def folder_is_fully_annotated(sequences: list[VideoSequence]) -> bool:
    """Whether every frame of every one of `sequences` (at least one) has an annotation."""
    return bool(sequences) and all(s.annotated_frames == list(range(len(s))) for s in sequences)


def load_folder(root: str | Path, only: list[str] | None = None) -> list[VideoSequence]:
    """The sequences under `root` (all of them, or those of `only`), validated up front."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: root not found; point {ROOT_FLAG} at the folder holding JPEGImages/<sequence>/ "
                           f"and Annotations/<sequence>/")
    image_root, annotation_root = root / "JPEGImages", root / "Annotations"
    require_folders(image_root, annotation_root, needed_by=f"the folder set reads JPEGImages/<sequence>/ and "
                                                          f"Annotations/<sequence>/ under {ROOT_FLAG} ({root})")
    available = sub_folders(image_root)
    if not available:
        raise DatasetError(f"{image_root}: holds no sequence folders; put each sequence's frames in "
                           f"JPEGImages/<sequence>/")
    sequences = []
    for name in select_names(available, only, str(image_root)):
        _refuse_resolution_level(image_root / name, name)
        images = frame_folder(image_root / name, name, str(image_root), kind="sequence")
        by_stem = pngs_by_stem(annotation_root / name)
        annotations = [by_stem.get(p.stem) for p in images]
        expected_first = annotation_root / name / f"{images[0].stem}.png"
        if all(a is not None for a in annotations):
            seq = davis_sequence(name, images, annotations, False, expected_first)
        else:
            seq = _scanned_sequence(name, images, annotations, expected_first)
        validate_start_annotations(seq)
        sequences.append(seq)
    return sequences


def _refuse_resolution_level(folder: Path, name: str) -> None:
    """A DAVIS tree (JPEGImages/480p/<sequence>/) given as a folder tree gets a message of its own."""
    if sub_folders(folder) and not any(p.is_file() for p in folder.iterdir()):
        raise DatasetError(f"{folder}: holds folders ({', '.join(sub_folders(folder)[:3])}), not frames; the folder "
                           f"set reads frames directly in JPEGImages/<sequence>/ (for a DAVIS tree with 480p/ use "
                           f"--dset dv2017val)")


def _scanned_sequence(name: str, images: list[Path], annotations: list[Path | None],
                      expected_first: Path) -> VideoSequence:
    """A sparsely annotated sequence: every object starts where it first appears in the annotations."""
    if annotations[0] is None:
        raise DatasetError(f"{expected_first}: sequence {name!r} has no annotation for its first frame "
                           f"{images[0].stem}; annotate the first frame")
    annotated = {i: a for i, a in enumerate(annotations) if a is not None}
    starts = scan_first_appearance(annotated)
    if not starts:
        raise DatasetError(f"{expected_first.parent}: the annotations of {name!r} contain no object")
    return VideoSequence(name, [p.stem for p in images], images, annotated, sorted(starts), starts)
