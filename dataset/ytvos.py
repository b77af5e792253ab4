"""YouTube-VOS readers: yt2018jjval, yt2018val, yt2018valAll, and yt2019val, yt2019valAll.

Layout under the root (2018 and 2019 alike; a 2019 root needs only valid/ and valid_all_frames/):
train/, train_all_frames/, valid/, valid_all_frames/, each with JPEGImages/<video>/<frame>.jpg
and (train, valid) Annotations/<video>/<frame>.png plus meta.json
(videos -> <video> -> objects -> <id> -> frames). The *_all_frames folders hold every frame of the
video; train/ and valid/ every 5th. Annotations are read from the *_all_frames folder when it has
its own, otherwise from its sparse sibling. In valid/, an object's mask is given only in the frame
where it first appears. The 2019 valid sets follow exactly the rules of the 2018 ones; only their
root (--yt2019-root instead of --ytvos-root) differs.
"""
from __future__ import annotations

import json
from pathlib import Path

from dataset.errors import DatasetError
from dataset.sequence import (
    IMAGE_SUFFIXES,
    VideoSequence,
    frame_folder,
    list_frame_files,
    pngs_by_stem,
    read_name_list,
    scan_first_appearance,
    select_names,
    validate_start_annotations,
)

# Published lists shipped with the repository: the 300 YouTube-VOS 2018 train/ videos held out as
# yt2018jjval, and the train/ videos to train on without them (train.py --ytvos-split-file).
SPLITS = Path(__file__).resolve().parent / "splits"
JJVALID_SPLIT = SPLITS / "ytvos_jjvalid.txt"
JJTRAIN_SPLIT = SPLITS / "ytvos_jjtrain.txt"

Meta = dict[str, dict[int, list[str]]]  # video -> object id -> frame names

# The valid sets: name -> (release year, whether every frame is tracked)
VALID_SETS: dict[str, tuple[str, bool]] = {
    "yt2018val": ("2018", False), "yt2018valAll": ("2018", True),
    "yt2019val": ("2019", False), "yt2019valAll": ("2019", True),
}
ROOT_FLAGS: dict[str, str] = {"2018": "--ytvos-root", "2019": "--yt2019-root"}


def check_ytvos_root(root: Path, year: str = "2018") -> None:
    """`root` exists; the message names the flag that sets the `year` release's root."""
    if root.is_dir():
        return
    if year == "2018":
        raise DatasetError(f"{root}: YouTube-VOS root not found; point --ytvos-root at the folder holding "
                           f"train/, train_all_frames/, valid/ and valid_all_frames/")
    raise DatasetError(f"{root}: YouTube-VOS {year} root not found; point {ROOT_FLAGS[year]} at the folder holding "
                       f"valid/ and valid_all_frames/")


def read_meta(path: Path) -> Meta:
    """meta.json as {video: {object id: [frame names]}}."""
    if not path.is_file():
        raise DatasetError(f"{path}: YouTube-VOS meta.json not found")
    try:
        videos = json.loads(path.read_text())["videos"]
        return {video: {int(oid): list(obj["frames"]) for oid, obj in entry["objects"].items()}
                for video, entry in videos.items()}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise DatasetError(f"{path}: not a YouTube-VOS meta.json (expected videos -> <video> -> objects -> <id> "
                           f"-> frames): {type(err).__name__}: {err}") from None


def load_ytvos(root: str | Path, dset: str, split_file: str | Path | None = None,
               only: list[str] | None = None) -> list[VideoSequence]:
    """The sequences of `dset` ('yt2018jjval' or one of VALID_SETS), validated up front."""
    root = Path(root)
    if dset == "yt2018jjval":
        check_ytvos_root(root)
        return _jjval_sequences(root, split_file, only)
    if dset in VALID_SETS:
        check_ytvos_root(root, VALID_SETS[dset][0])
        return _valid_sequences(root, dset, split_file, only)
    raise ValueError(f"not a YouTube-VOS evaluation set: {dset!r}")


def _folder(root: Path, sub: str, what: str) -> Path:
    path = root / sub
    if not path.is_dir():
        raise DatasetError(f"{path}: not found; {what}")
    return path


def _annotation_files(own: Path, fallback: Path, video: str) -> dict[str, Path]:
    """Annotation PNGs of `video` by frame name: from `own`/<video> if it exists, else `fallback`/<video>."""
    return pngs_by_stem(own / video if (own / video).is_dir() else fallback / video)


def _jjval_sequences(root: Path, split_file, only) -> list[VideoSequence]:
    split_path = JJVALID_SPLIT if split_file is None else Path(split_file)
    if split_file is None and not split_path.is_file():  # a copy of the code without its data files
        raise DatasetError(f"{split_path}: the published yt2018jjval list is missing from this copy of the "
                           f"repository; restore it (git checkout) or pass --split-file with your own list")
    names = select_names(read_name_list(split_path, "split file"), only, str(split_path))
    image_root = _folder(root, "train_all_frames/JPEGImages", "yt2018jjval reads train_all_frames (download "
                                                              "train_all_frames.zip into the YouTube-VOS root)")
    meta_path = next((p for p in (root / "train" / "meta.json", root / "train_all_frames" / "meta.json")
                      if p.is_file()), None)
    meta = read_meta(meta_path) if meta_path else None
    sequences = []
    for video in names:
        images = frame_folder(image_root / video, video, str(split_path))
        by_stem = _annotation_files(root / "train_all_frames" / "Annotations", root / "train" / "Annotations", video)
        annotations = {i: by_stem[p.stem] for i, p in enumerate(images) if p.stem in by_stem}
        if not annotations:
            raise DatasetError(f"{video}: no annotation PNG matches its frames in {image_root / video} (looked in "
                               f"train_all_frames/Annotations and train/Annotations); sequence without annotations")
        if meta is not None and video in meta:
            starts = _first_annotated(video, meta[video], images, annotations, meta_path)
        else:
            starts = scan_first_appearance(annotations)
        if not starts:
            raise DatasetError(f"{video}: its annotations contain no object")
        seq = VideoSequence(video, [p.stem for p in images], images, annotations, sorted(starts), starts,
                            output_frames=sorted(annotations))
        validate_start_annotations(seq, set(meta[video]) if meta and video in meta else None, str(meta_path))
        sequences.append(seq)
    return sequences


def _first_annotated(video: str, objects: dict[int, list[str]], images: list[Path],
                     annotations: dict[int, Path], meta_path: Path) -> dict[int, int]:
    """Object id -> first annotated frame of its meta.json frame list."""
    index = {p.stem: i for i, p in enumerate(images)}
    starts = {}
    for oid, frames in objects.items():
        annotated = [index[f] for f in frames if f in index and index[f] in annotations]
        if not annotated:
            raise DatasetError(f"{meta_path}: object {oid} of {video} has no annotated frame among its frames "
                               f"{frames[:3]}...; the sequence lacks the object's first annotation")
        starts[oid] = min(annotated)
    return starts


def _valid_sequences(root: Path, dset: str, split_file, only) -> list[VideoSequence]:
    year, all_frames = VALID_SETS[dset]
    base, flag = dset.removesuffix("All"), ROOT_FLAGS[year]
    root_name = "YouTube-VOS root" if year == "2018" else f"YouTube-VOS {year} root"
    valid = _folder(root, "valid", f"{base} and {base}All need valid/ (JPEGImages, Annotations, meta.json) "
                                   f"under {flag}")
    meta_path = valid / "meta.json"
    if not meta_path.is_file() and all_frames and (root / "valid_all_frames" / "meta.json").is_file():
        meta_path = root / "valid_all_frames" / "meta.json"
    meta = read_meta(meta_path)
    available = sorted(meta)
    if split_file is not None:
        listed = read_name_list(Path(split_file), "split file")
        missing = [v for v in listed if v not in meta]
        if missing:
            raise DatasetError(f"{split_file}: videos {missing[:5]} are not in {meta_path}")
        chosen = set(listed)
        available = [v for v in available if v in chosen]
    names = select_names(available, only, str(meta_path))
    image_root = (_folder(root, "valid_all_frames/JPEGImages", f"{dset} reads valid_all_frames (download "
                                                                f"valid_all_frames.zip into the {root_name}, {flag})")
                  if all_frames else _folder(root, "valid/JPEGImages", f"{dset} reads valid/JPEGImages"))
    sequences = []
    for video in names:
        images = frame_folder(image_root / video, video, str(meta_path))
        index = {p.stem: i for i, p in enumerate(images)}
        own = root / "valid_all_frames" / "Annotations" if all_frames else valid / "Annotations"
        by_stem = _annotation_files(own, valid / "Annotations", video)
        starts, annotations = {}, {}
        for oid, frames in sorted(meta[video].items()):
            if not frames or frames[0] not in index:
                raise DatasetError(f"{meta_path}: object {oid} of {video} starts in frame "
                                   f"{frames[0] if frames else '(none)'}, which is not among its frames in "
                                   f"{image_root / video}")
            first = frames[0]
            if first not in by_stem:
                raise DatasetError(f"{valid / 'Annotations' / video / (first + '.png')}: missing; object {oid} of "
                                   f"{video} first appears in frame {first} and needs its annotation there")
            starts[oid] = index[first]
            annotations[index[first]] = by_stem[first]
        if not starts:
            raise DatasetError(f"{meta_path}: video {video} lists no objects")
        output = _submission_frames(valid, video, images, dset) if all_frames else list(range(len(images)))
        seq = VideoSequence(video, [p.stem for p in images], images, annotations, sorted(starts), starts,
                            output_frames=output)
        validate_start_annotations(seq, set(meta[video]), str(meta_path))
        sequences.append(seq)
    return sequences


def _submission_frames(valid: Path, video: str, images: list[Path], dset: str) -> list[int]:
    """Indices of the frames of valid/JPEGImages/<video>: the ones a submission needs."""
    folder = valid / "JPEGImages" / video
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not found; {dset} writes masks for the frames of valid/JPEGImages")
    wanted = {p.stem for p in list_frame_files(folder, IMAGE_SUFFIXES)}
    output = [i for i, p in enumerate(images) if p.stem in wanted]
    if len(output) != len(wanted):
        raise DatasetError(f"{folder}: some of its frames are missing from valid_all_frames/JPEGImages/{video}")
    return output
