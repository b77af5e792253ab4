"""Training samples: DAVIS 2017 train, YouTube-VOS 2018 train, both, synthetic data, or a folder of one's own videos.

One item is one object of one sequence seen in `seq_len` frames: a first frame where the object
is visible, then seq_len-1 other annotated frames of the sequence drawn at random without
replacement (kept in the order drawn). Frames are resized to cfg.image_size; the object becomes
label 1 and everything else 0. An item gives its frames both as indices into the sequence's list
of annotated frames ('frames') and as the numbers in their annotation file names
('frame_numbers': 00035.png -> 35); they differ where not every frame is annotated (YouTube-VOS).

Epochs: every DAVIS (sequence, object) pair appears davis_repeats times; YouTube-VOS contributes
ytvos_samples pairs drawn at random from sequences with at least seq_len + 2 annotated frames.
A folder (the layout evaluate.py's folder set reads, read by the same code) is sampled as DAVIS when
every frame of every sequence is annotated, as YouTube-VOS otherwise; its objects are all the ids
its annotations hold, each usable from the frames where it is visible (so objects may start late).
The epoch's list is shuffled. Everything random is drawn from (seed, epoch) for the list and
(seed, epoch, item index) for an item's frames, so an item does not depend on worker order and
the loader needs no shuffling of its own (use shuffle=False for exact reproducibility).
Call set_epoch before each epoch; with DataLoader workers, do not use persistent_workers (each
worker must receive the dataset after set_epoch).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from dataset.davis import RESOLUTION, check_davis_root, davis_split_path
from dataset.errors import DatasetError
from dataset.folder import FolderSequence, scan_folder
from dataset.sequence import IMAGE_SUFFIXES, list_frame_files, read_name_list, select_names
from dataset.stats_cache import PixelCounts, cached_pixel_counts
from dataset.ytvos import check_ytvos_root
from lib.image_io import read_image, read_label_png
from lib.user_masks import MaskReading
from models.config import TrainConfig

TRAINING_SETS = ("all", "dv2017", "ytvos2018", "yt2018", "synthetic", "folder")


def visible_frames(counts: np.ndarray, min_px: int, min_fraction: float) -> np.ndarray:
    """Indices of the frames where an object is visible: at least `min_px` pixels and at least
    `min_fraction` of its largest count in the sequence (otherwise it counts as occluded)."""
    counts = np.asarray(counts)
    if counts.size == 0:
        return np.zeros(0, np.int64)
    return np.flatnonzero((counts >= min_px) & (counts >= min_fraction * counts.max()))


@dataclass
class TrainingSequence:
    """A training video: its annotated frames (images and labels in parallel) and per-object pixel counts.

    frame_numbers name the frames for the target-model cache and in messages: by default the numbers
    in the annotation file names; a folder of one's own passes them (see `folder_frame_numbers`).
    mask_reading: how the user's own masks are read (folder); None for the data sets' label PNGs.
    """

    name: str
    image_paths: list[Path]
    annotation_paths: list[Path]
    pixel_counts: PixelCounts
    frame_numbers: list[int] = field(default_factory=list)  # in the order of annotation_paths
    mask_reading: MaskReading | None = None

    def __post_init__(self) -> None:
        if not self.frame_numbers:
            self.frame_numbers = [frame_number(p) for p in self.annotation_paths]

    def __len__(self) -> int:
        return len(self.image_paths)

    def labels(self, k: int) -> np.ndarray:
        """(H, W) uint8 ids of annotated frame k."""
        path = self.annotation_paths[k]
        return self.mask_reading.read(path) if self.mask_reading is not None else read_label_png(path)


def frame_number(annotation: Path) -> int:
    """The frame number in an annotation file name (00035.png -> 35)."""
    if not (annotation.stem.isascii() and annotation.stem.isdigit()):
        raise DatasetError(f"{annotation}: annotation file names must be frame numbers (as 00035.png); rename the "
                           f"annotations of this sequence")
    return int(annotation.stem)


@dataclass
class PairSource:
    """Where an epoch's (sequence, object) pairs come from: each pair `repeats` times, or `samples` random pairs."""

    pairs: list[tuple[int, int]]  # (index into TrainingSamples.sequences, object id)
    repeats: int = 0
    samples: int = 0


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 -> size (H', W'): area interpolation when shrinking, cubic when enlarging."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    shrinking = height <= image.shape[0] and width <= image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) labels -> size (H', W') with nearest-neighbour interpolation."""
    height, width = size
    if labels.shape == (height, width):
        return labels
    return cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)


class TrainingSamples(Dataset):
    """Epoch-wise (sequence, object) samples of cfg.seq_len frames; see the module docstring."""

    def __init__(self, sequences: list[TrainingSequence], sources: list[PairSource], cfg: TrainConfig) -> None:
        if cfg.seed < 0:
            raise ValueError(f"seed must be >= 0, got {cfg.seed}")
        self.sequences = sequences
        self.sources = sources
        self.cfg = cfg
        self.epoch = 0
        self.items: list[tuple[int, int]] = []
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw the (sequence, object) list of `epoch` from (seed, epoch)."""
        rng = np.random.default_rng([self.cfg.seed, epoch, 0])
        items: list[tuple[int, int]] = []
        for source in self.sources:
            items += source.pairs * source.repeats
            if source.samples and source.pairs:
                items += [source.pairs[k] for k in rng.integers(len(source.pairs), size=source.samples)]
        self.items = [items[k] for k in rng.permutation(len(items))]
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def draw_frames(self, i: int) -> tuple[TrainingSequence, int, list[int]]:
        """(sequence, object id, frame indices) of item i: a visible first frame, then random others."""
        seq_index, object_id = self.items[i]
        seq = self.sequences[seq_index]
        rng = np.random.default_rng([self.cfg.seed, self.epoch, 1, i])
        visible = visible_frames(seq.pixel_counts[object_id], self.cfg.min_visible_px, self.cfg.min_visible_fraction)
        first = int(rng.choice(visible))
        others = rng.choice(np.delete(np.arange(len(seq)), first), size=self.cfg.seq_len - 1, replace=False)
        return seq, object_id, [first, *(int(f) for f in others)]

    def __getitem__(self, i: int) -> dict:
        """images uint8 (N, 3, H, W), labels float32 (N, 1, H, W) in {0, 1}, sequence, object_id,
        frames LongTensor (N,) (indices into the sequence's annotated frames; frames[0] is the first) and
        frame_numbers LongTensor (N,) (the same frames' annotation file numbers)."""
        seq, object_id, frames = self.draw_frames(i)
        images, labels = [], []
        for f in frames:
            image = read_image(seq.image_paths[f])
            label = seq.labels(f)
            if label.shape != image.shape[:2]:
                raise DatasetError(f"{seq.annotation_paths[f]}: annotation is {label.shape[1]}x{label.shape[0]} but "
                                   f"its frame {seq.image_paths[f]} is {image.shape[1]}x{image.shape[0]} (WxH); "
                                   f"resize the annotation to the frame")
            images.append(resize_image(image, self.cfg.image_size))
            labels.append(resize_labels(label, self.cfg.image_size) == object_id)
        return {
            "images": torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
            "labels": torch.from_numpy(np.stack(labels)[:, None].astype(np.float32)),
            "sequence": seq.name,
            "object_id": int(object_id),
            "frames": torch.tensor(frames, dtype=torch.long),
            "frame_numbers": torch.tensor([seq.frame_numbers[f] for f in frames], dtype=torch.long),
        }


# ----------------------------------------------------------------------------- dataset folders
def _paired_frames(image_dir: Path, annotation_dir: Path) -> tuple[list[Path], list[Path]]:
    """Each annotated frame with its image, in frame order (frames without annotation are not used).

    An annotation whose image is missing is an error, not a frame quietly left out.
    """
    if not annotation_dir.is_dir():
        return [], []
    annotations = list_frame_files(annotation_dir, (".png",))
    if annotations and not image_dir.is_dir():
        raise DatasetError(f"{image_dir}: frame folder not found, but {annotation_dir} holds {len(annotations)} "
                           f"annotations; restore the frames (JPEGImages) of this sequence")
    images = {p.stem: p for p in list_frame_files(image_dir, IMAGE_SUFFIXES)} if annotations else {}
    missing = [p.name for p in annotations if p.stem not in images]
    if missing:
        more = f" ({len(missing) - 5} more)" if len(missing) > 5 else ""
        raise DatasetError(f"{image_dir}: no image for the annotations {', '.join(missing[:5])}{more} of "
                           f"{annotation_dir}; restore those frames or remove their annotations")
    return [images[p.stem] for p in annotations], annotations


def davis_training_folders(root: Path, split: str) -> dict[str, tuple[list[Path], list[Path]]]:
    """{sequence: (images, annotations)} of DAVIS 2017 ImageSets/2017/<split>.txt."""
    check_davis_root(root)
    names = read_name_list(davis_split_path(root, "2017", split), "DAVIS 2017 split file")
    folders = {}
    for name in names:
        images, annotations = _paired_frames(root / "JPEGImages" / RESOLUTION / name,
                                             root / "Annotations" / RESOLUTION / name)
        if not annotations:
            raise DatasetError(f"{root / 'Annotations' / RESOLUTION / name}: no annotated frames of training "
                               f"sequence {name!r} (listed in {davis_split_path(root, '2017', split)})")
        folders[name] = (images, annotations)
    return folders


def ytvos_training_folders(root: Path, split_file: str | Path | None = None) -> dict[str, tuple[list[Path], list[Path]]]:
    """{video: (images, annotations)} of YouTube-VOS train/, optionally only the videos of `split_file`."""
    check_ytvos_root(root)
    image_root, annotation_root = root / "train" / "JPEGImages", root / "train" / "Annotations"
    if not annotation_root.is_dir():
        raise DatasetError(f"{annotation_root}: not found; YouTube-VOS training reads train/ (download train.zip)")
    available = sorted(p.name for p in annotation_root.iterdir() if p.is_dir())
    wanted = read_name_list(Path(split_file), "split file") if split_file is not None else None
    folders = {}
    for name in select_names(available, wanted, str(annotation_root)):
        folders[name] = _paired_frames(image_root / name, annotation_root / name)
    return folders


def folder_frame_numbers(names: list[str]) -> list[int]:
    """How a folder sequence's frames are numbered for the target-model cache: the numbers in the frame
    names when every name is a number and no two are equal (00035 -> 35, as in the data sets), otherwise
    each frame's position in the sequence (0 for the first, in name order: frame_a, frame_b -> 0, 1)."""
    if all(n.isascii() and n.isdigit() for n in names) and len({int(n) for n in names}) == len(names):
        return [int(n) for n in names]
    return list(range(len(names)))


def _folder_training_sequence(scan: FolderSequence) -> TrainingSequence:
    """A folder sequence's annotated frames, with the pixel counts of every object its annotations hold."""
    seq, frames = scan.sequence, scan.sequence.annotated_frames
    per_frame = [seq.mask_reading.object_pixels(scan.contents[i]) for i in frames]
    ids = sorted(set().union(*per_frame))
    counts = {oid: np.array([pixels.get(oid, 0) for pixels in per_frame], np.int64) for oid in ids}
    numbers = folder_frame_numbers(seq.frame_names)
    return TrainingSequence(seq.name, [seq.image_paths[i] for i in frames], [seq.annotation_paths[i] for i in frames],
                            counts, [numbers[i] for i in frames], seq.mask_reading)


def _sequences_with_counts(folders: dict[str, tuple[list[Path], list[Path]]], cache_dir, tag: str,
                           workers: int, pending: list[Callable[[], None]]) -> list[TrainingSequence]:
    counts = cached_pixel_counts(cache_dir, tag, {n: a for n, (_, a) in folders.items()}, workers,
                                 images={n: i for n, (i, _) in folders.items()}, pending=pending)
    return [TrainingSequence(n, images, annotations, counts[n]) for n, (images, annotations) in folders.items()]


def _pairs(sequences: list[TrainingSequence], offset: int, min_frames: int, cfg: TrainConfig) -> list[tuple[int, int]]:
    """(sequence index + offset, object id) of objects visible somewhere, in sequences of at least min_frames."""
    return [(offset + s, oid) for s, seq in enumerate(sequences) if len(seq) >= min_frames
            for oid, counts in sorted(seq.pixel_counts.items())
            if visible_frames(counts, cfg.min_visible_px, cfg.min_visible_fraction).size]


def build_training_set(dset: str, davis_root: str | Path | None, ytvos_root: str | Path | None, cfg: TrainConfig,
                       cache_dir: str | Path, split: str = "train",
                       ytvos_split_file: str | Path | None = None,
                       folder_root: str | Path | None = None) -> TrainingSamples:
    """The training samples of `dset` ('all', 'dv2017', 'ytvos2018' or its alias 'yt2018', 'synthetic', 'folder').

    'synthetic' reads a DAVIS-layout root (made by dataset.synthetic) exactly like 'dv2017'.
    `split` names the DAVIS list (ImageSets/2017/<split>.txt); `ytvos_split_file` optionally
    restricts YouTube-VOS train/ to the videos it lists (e.g. dataset/splits/ytvos_jjtrain.txt, which keeps
    the yt2018jjval videos out of training). 'folder' reads `folder_root` as evaluate.py's folder set
    does (every annotation is read up front, so its pixel counts need no cache). Pixel statistics are
    cached under `cache_dir`, written only once the whole set is accepted (a refused set writes nothing).
    """
    if dset not in TRAINING_SETS:
        raise DatasetError(f"unknown training set {dset!r}; choose one of {', '.join(TRAINING_SETS)}")
    if cfg.seq_len < 2:
        raise DatasetError(f"seq_len must be at least 2, got {cfg.seq_len}")
    sequences: list[TrainingSequence] = []
    sources: list[PairSource] = []
    pending: list[Callable[[], None]] = []  # cache writes, made once every check has passed
    rule = (f"sequences need at least seq_len={cfg.seq_len} annotated frames (YouTube-VOS: seq_len + 2) and "
            f"objects a frame with at least {cfg.min_visible_px} pixels")
    if dset in ("all", "dv2017", "synthetic"):
        if davis_root is None:
            raise DatasetError(f"--dset {dset} needs the DAVIS root (--davis-root)")
        tag = ("synthetic" if dset == "synthetic" else "davis2017") + f"-{split}"
        davis = _sequences_with_counts(davis_training_folders(Path(davis_root), split), cache_dir, tag, cfg.workers,
                                       pending)
        sources.append(PairSource(_pairs(davis, 0, cfg.seq_len, cfg), repeats=cfg.davis_repeats))
        sequences += davis
    if dset in ("all", "ytvos2018", "yt2018"):
        if ytvos_root is None:
            raise DatasetError(f"--dset {dset} needs the YouTube-VOS root (--ytvos-root)")
        ytvos = _sequences_with_counts(ytvos_training_folders(Path(ytvos_root), ytvos_split_file), cache_dir,
                                       "ytvos2018-train", cfg.workers, pending)
        sources.append(PairSource(_pairs(ytvos, len(sequences), cfg.seq_len + 2, cfg), samples=cfg.ytvos_samples))
        sequences += ytvos
    if dset == "folder":
        if folder_root is None:
            raise DatasetError("--dset folder needs --root DIR, the folder holding JPEGImages/<sequence>/ and "
                               "Annotations/<sequence>/")
        scans = scan_folder(Path(folder_root))
        sequences = [_folder_training_sequence(scan) for scan in scans]
        if all(len(scan.sequence.annotated_frames) == len(scan.sequence) for scan in scans):  # as DAVIS
            sources.append(PairSource(_pairs(sequences, 0, cfg.seq_len, cfg), repeats=cfg.davis_repeats))
            rule = (f"every frame is annotated, so it is sampled as DAVIS: sequences need at least seq_len="
                    f"{cfg.seq_len} frames and objects a frame with at least {cfg.min_visible_px} pixels")
        else:
            sources.append(PairSource(_pairs(sequences, 0, cfg.seq_len + 2, cfg), samples=cfg.ytvos_samples))
            rule = (f"some frames have no annotation, so it is sampled as YouTube-VOS: sequences need at least "
                    f"seq_len + 2 = {cfg.seq_len + 2} annotated frames and objects a frame with at least "
                    f"{cfg.min_visible_px} pixels")
    if not any(source.pairs for source in sources):
        raise DatasetError(f"--dset {dset}: no (sequence, object) pair qualifies: {rule}")
    for write in pending:
        write()
    return TrainingSamples(sequences, sources, cfg)
