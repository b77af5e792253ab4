"""A plain tree of videos (folder): <root>/JPEGImages/<sequence>/ and <root>/Annotations/<sequence>/.

Frames are <frame>.jpg/.png directly in JPEGImages/<sequence>/ (no resolution level such as 480p);
annotations are PNGs named like their frames, drawn the ways users draw masks (palette, greyscale
0/255 or ids, 16-bit, RGB): lib.user_masks reads them, all masks of a sequence by one rule
(docs/own_data.md). The sequences are the sub-folders of JPEGImages in name order. Every sequence
needs its first frame annotated. Every annotation is read up front (its format, its objects, its size).

- A sequence with every frame annotated is read as DAVIS 2017 val reads one: its objects are those
  of the first annotation, all starting in frame 0.
- Any other sequence takes its objects from all of its annotations: each starts in the first
  annotated frame that contains it.

A sequence's objects are the ids present (ids 1 and 7 are two objects, 1 and 7), not 1..max.
Every frame is written. A loaded set is scored when every frame of every loaded sequence is
annotated (`folder_is_fully_annotated`), each sequence on its own objects; otherwise it is not scored.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from dataset.errors import DatasetError
from dataset.sequence import VideoSequence, frame_folder, pngs_by_stem, require_folders, select_names, sub_folders
from lib.image_io import read_image_size
from lib.user_masks import PALETTE_IDS, VOID_INDEX, MaskContent, MaskFormatError, inspect_mask, reading_for

ROOT_FLAG = "--root"
READ_THREADS = 4  # PNG decoding lets go of the GIL: reading every annotation up front takes a fraction
LAYOUT = "JPEGImages/<sequence>/ and Annotations/<sequence>/"


@dataclass
class FolderSequence:
    """A loaded folder sequence and what each of its annotations holds (frame index -> summary)."""

    sequence: VideoSequence
    contents: dict[int, MaskContent]


def folder_is_fully_annotated(sequences: list[VideoSequence]) -> bool:
    """Whether every frame of every one of `sequences` (at least one) has an annotation."""
    return bool(sequences) and all(s.annotated_frames == list(range(len(s))) for s in sequences)


def load_folder(root: str | Path, only: list[str] | None = None) -> list[VideoSequence]:
    """The sequences under `root` (all of them, or those of `only`), validated up front."""
    return [scan.sequence for scan in scan_folder(root, only)]


def scan_folder(root: str | Path, only: list[str] | None = None) -> list[FolderSequence]:
    """`load_folder` with the summary of every annotation (training counts the objects' pixels from it)."""
    root = Path(root)
    check_folder_root(root)
    image_root, annotation_root = root / "JPEGImages", root / "Annotations"
    require_folders(image_root, annotation_root, needed_by=f"the folder set reads {LAYOUT} under {ROOT_FLAG} ({root})")
    available = sub_folders(image_root)
    if not available:
        raise DatasetError(f"{image_root}: holds no sequence folders; put each sequence's frames in "
                           f"JPEGImages/<sequence>/")
    names = select_names(available, only, str(image_root))
    return [_scan_sequence(image_root, annotation_root, name) for name in names]


def check_folder_root(root: Path) -> None:
    """`root` must be a folder (the message tells a file from a missing path)."""
    if root.is_file():
        raise DatasetError(f"{root}: is a file, not a folder; point {ROOT_FLAG} at the folder holding {LAYOUT}")
    if not root.is_dir():
        raise DatasetError(f"{root}: root not found; point {ROOT_FLAG} at the folder holding {LAYOUT}")


def _scan_sequence(image_root: Path, annotation_root: Path, name: str) -> FolderSequence:
    _refuse_resolution_level(image_root / name, name)
    images = frame_folder(image_root / name, name, str(image_root), kind="sequence")
    by_stem = pngs_by_stem(annotation_root / name)
    stems = [p.stem for p in images]
    strays = [by_stem[s].name for s in by_stem if s not in set(stems)]
    if strays:
        more = f" ({len(strays) - 3} more)" if len(strays) > 3 else ""
        raise DatasetError(f"{annotation_root / name}: the annotations {', '.join(strays[:3])}{more} are named like no "
                           f"frame of {image_root / name}; name each mask as its frame (00000.png for 00000.jpg), "
                           f"or remove it")
    annotations = {i: by_stem[s] for i, s in enumerate(stems) if s in by_stem}
    if 0 not in annotations:
        raise DatasetError(f"{annotation_root / name / (stems[0] + '.png')}: sequence {name!r} has no annotation for "
                           f"its first frame {stems[0]}; annotate the first frame")
    try:
        with ThreadPoolExecutor(READ_THREADS) as pool:
            contents = dict(zip(annotations, pool.map(inspect_mask, annotations.values())))
        reading = reading_for(list(contents.values()))
        frame_size = read_image_size(images[0])  # every frame has this size (checked by frame_folder)
        for i, content in contents.items():
            if content.size != frame_size:
                raise DatasetError(f"{content.path}: annotation is {content.size[1]}x{content.size[0]} but its frame "
                                   f"{images[i]} is {frame_size[1]}x{frame_size[0]} (WxH); resize the annotation to "
                                   f"the frame")
        if len(annotations) == len(images):  # as DAVIS: the objects of the first frame
            starts = {oid: 0 for oid in reading.object_pixels(contents[0])}
            if not starts:
                raise DatasetError(f"{annotations[0]}: the first annotation of {name!r} contains no object "
                                   f"({_no_object_detail(contents[0], reading.rule)})")
        else:
            starts = {}
            for i in sorted(contents):
                for oid in reading.object_pixels(contents[i]):
                    starts.setdefault(oid, i)
            if not starts:
                raise DatasetError(f"{annotation_root / name}: the annotations of {name!r} contain no object "
                                   f"(the first: {_no_object_detail(contents[0], reading.rule)})")
    except MaskFormatError as err:
        raise DatasetError(str(err)) from None
    seq = VideoSequence(name, stems, images, annotations, sorted(starts), starts, mask_reading=reading)
    return FolderSequence(seq, contents)


def _no_object_detail(content: MaskContent, rule: str) -> str:
    """What an annotation without objects holds; a palette of void alone gets a word of its own."""
    detail = content.describe()
    if rule == PALETTE_IDS and VOID_INDEX in content.values:
        detail += f"; index {VOID_INDEX} marks void (unlabelled) pixels in a palette mask: give the object index 1"
    return detail


def _refuse_resolution_level(folder: Path, name: str) -> None:
    """A DAVIS tree (JPEGImages/480p/<sequence>/) given as a folder tree gets a message of its own."""
    if sub_folders(folder) and not any(p.is_file() for p in folder.iterdir()):
        raise DatasetError(f"{folder}: holds folders ({', '.join(sub_folders(folder)[:3])}), not frames; the folder "
                           f"set reads frames directly in JPEGImages/<sequence>/ (a DAVIS tree with 480p/ is read with "
                           f"--davis-root by --dset dv2017val in evaluate.py, --dset dv2017 in train.py)")
