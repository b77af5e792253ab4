"""Per-sequence pixel counts for the training samplers, computed once and cached.

The cache lives in a folder the user names (never inside the installed packages) as one small
JSON file per dataset, keyed by a hash of the annotation file list with sizes and modification
times: a changed, added or removed annotation gives a new key, so the counts are recomputed.
"""
from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from dataset.errors import DatasetError
from dataset.sequence import VOID_LABEL
from lib.atomic import atomic_write_text
from lib.image_io import read_image_size, read_label_png

STATS_VERSION = 1

PixelCounts = dict[int, np.ndarray]  # object id -> (F,) pixel count in each annotation of the sequence


def annotation_fingerprint(sequences: dict[str, list[Path]]) -> str:
    """Hash of every sequence's annotation file names, sizes and modification times (in list order)."""
    digest = hashlib.sha256(f"pixel-counts-v{STATS_VERSION}\n".encode())
    for name in sorted(sequences):
        for path in sequences[name]:
            stat = path.stat()
            digest.update(f"{name}/{path.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _check_cache_dir(cache_dir: Path) -> None:
    code_root = Path(__file__).resolve().parents[1]
    resolved = cache_dir.resolve()
    for package in (p for p in code_root.iterdir() if (p / "__init__.py").is_file()):  # lib, models, ...
        if resolved == package or package in resolved.parents:
            raise DatasetError(f"{cache_dir}: the statistics cache may not live inside the code package "
                               f"{package}; choose a cache folder of your own")


def count_pixels(annotations: list[Path], images: list[Path] | None = None) -> PixelCounts:
    """Pixel count of every object id (not 0, not void) in each annotation.

    With `images` (the frames, in parallel), each annotation must have its frame's size.
    """
    per_frame = []
    for k, path in enumerate(annotations):
        labels = read_label_png(path)
        if images is not None and labels.shape != read_image_size(images[k]):
            height, width = read_image_size(images[k])
            raise DatasetError(f"{path}: annotation is {labels.shape[1]}x{labels.shape[0]} but its frame {images[k]} "
                               f"is {width}x{height} (WxH); resize the annotation to the frame")
        per_frame.append(np.bincount(labels.ravel(), minlength=256))
    table = np.stack(per_frame) if per_frame else np.zeros((0, 256), np.int64)
    ids = [i for i in np.flatnonzero(table.sum(axis=0)) if i not in (0, VOID_LABEL)]
    return {int(i): table[:, i].astype(np.int64) for i in ids}


def cached_pixel_counts(cache_dir: str | Path, tag: str, sequences: dict[str, list[Path]], workers: int = 4,
                        images: dict[str, list[Path]] | None = None,
                        pending: list[Callable[[], None]] | None = None) -> dict[str, PixelCounts]:
    """Pixel counts of every sequence ({name: annotation paths}), from the cache when it is current.

    `tag` names the dataset in the cache file name (e.g. 'davis2017-train'). A cache file that
    cannot be read is recomputed and rewritten, never fatal. With `images` ({name: frame paths}
    in parallel), annotation sizes are checked against their frames while counting. With `pending`,
    the new cache file is not written but the function that writes it is appended there: a caller
    that may still refuse the data writes nothing until it has accepted it.
    """
    cache_dir = Path(cache_dir)
    _check_cache_dir(cache_dir)
    key = annotation_fingerprint(sequences)
    path = cache_dir / f"pixel_counts-{tag}-{key[:16]}.json"
    cached = _load(path, key, sequences)
    if cached is not None:
        return cached
    names = list(sequences)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(tqdm(pool.map(lambda n: count_pixels(sequences[n], images[n] if images else None), names), total=len(names),
                            desc=f"pixel statistics of {tag} (first time only)", unit="seq", dynamic_ncols=True))
    counts = dict(zip(names, results))
    payload = {"version": STATS_VERSION, "fingerprint": key,
               "sequences": {n: {str(o): c.tolist() for o, c in counts[n].items()} for n in names}}
    write = lambda: atomic_write_text(path, json.dumps(payload, separators=(",", ":")))  # noqa: E731
    if pending is None:
        write()
    else:
        pending.append(write)
    return counts


def _load(path: Path, key: str, sequences: dict[str, list[Path]]) -> dict[str, PixelCounts] | None:
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text())
        if payload["fingerprint"] != key or set(payload["sequences"]) != set(sequences):
            return None
        counts = {n: {int(o): np.asarray(c, np.int64) for o, c in objects.items()}
                  for n, objects in payload["sequences"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if any(len(c) != len(sequences[n]) for n, objects in counts.items() for c in objects.values()):
        return None
    return counts
