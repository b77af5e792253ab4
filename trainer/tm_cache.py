"""Target models for training samples: fitted on the augmented first frame, or loaded from the cache.

Cache layout (the published one):
    <cache>/<backbone>-c<c_channels>_gTrue/<sequence>/<frame0:05d>.<object_id>.layer4.pth
holding the state dict {'project.weight', 'filter.weight'}; frame0 is the number in the first
frame's annotation file name (00035.png -> 35), not its position among the annotated frames.
Next to the sequence folders, `cache_info.json` (the cache index) records what the models were
fitted on (backbone and its weights, fitting settings, frame size, generated videos, file naming),
so a cache built otherwise is refused instead of silently reused.
"""
from __future__ import annotations

import json
import warnings
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from lib.atomic import atomic_write, atomic_write_text
from models.augmentation import FirstFrameAugmenter
from models.backbone import Backbone
from models.config import TargetModelConfig
from models.target_model import TargetModel

INFO_FILE = "cache_info.json"
# How frame0 in file names is counted; recorded in the index so that caches of the earlier naming
# (the position in the list of annotated frames, never recorded) are refused.
FRAME0_NAMING = "annotation file number"
TM_KEYS = ("project.weight", "filter.weight")


class CacheMismatchError(RuntimeError):
    """The cache folder was filled with different backbone weights or target-model settings."""


class TargetModelFitError(RuntimeError):
    """A training sample's target model cannot be fitted (e.g. its object has no pixels in frame 0)."""


class TargetModelCache:
    """Reads and writes fitted target models; counts hits and misses.

    Args:
        root: the cache root (train.py's --tmcache).
        backbone: backbone name, part of the folder name.
        cfg: target-model settings; c_channels is part of the folder name.
        read_only: never write (cache misses are fitted in memory only).
    """

    def __init__(self, root: str | Path, backbone: str, cfg: TargetModelConfig, read_only: bool = False) -> None:
        self.folder = Path(root) / f"{backbone}-c{cfg.c_channels}_gTrue"
        self.read_only = read_only
        self.hits = 0
        self.misses = 0
        self.refits = 0  # unreadable files that were fitted again

    def path(self, sequence: str, frame0: int, object_id: int, layer: str = "layer4") -> Path:
        return self.folder / sequence / f"{int(frame0):05d}.{int(object_id)}.{layer}.pth"

    def check_info(self, info: dict, write: bool) -> None:
        """Refuse a cache fitted with other settings; record ours in a new cache when `write`.

        A cache without an index (e.g. the published ResNet-18 one) is trusted as is.
        """
        path = self.folder / INFO_FILE
        if path.exists():
            try:
                recorded = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                raise CacheMismatchError(f"{path}: unreadable cache index ({err}); delete it or pass another "
                                         f"--tmcache") from err
            if recorded != info:
                changed = sorted(k for k in set(info) | set(recorded) if info.get(k) != recorded.get(k))
                shown = "; ".join(f"{k}: cached {_shown(recorded, k)}, now {_shown(info, k)}" for k in changed)
                raise CacheMismatchError(
                    f"{self.folder}: its target models were fitted with other settings ({shown}); pass another "
                    f"--tmcache (a new folder for this run) or delete that folder")
        elif write and not self.read_only:
            atomic_write_text(path, json.dumps(info, indent=1, sort_keys=True) + "\n")

    def load(self, sequence: str, frame0: int, object_id: int,
             shapes: dict[str, torch.Size]) -> dict[str, Tensor] | None:
        """The cached state dict if it has exactly `shapes`; None when absent or unreadable (which warns)."""
        path = self.path(sequence, frame0, object_id)
        if not path.exists():
            self.misses += 1
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or set(state) != set(TM_KEYS):
                raise ValueError(f"expected the keys {', '.join(TM_KEYS)}")
            found = {k: tuple(state[k].shape) for k in TM_KEYS}
            if found != {k: tuple(shapes[k]) for k in TM_KEYS}:
                raise ValueError(f"shapes {found} do not fit this backbone and c_channels")
        except Exception as err:  # any unreadable file is refitted, never fatal
            # one line: torch's weights-only errors run over many lines of advice that does not apply here
            first_line = next((line for line in str(err).splitlines() if line.strip()), "").strip()
            action = "refitting it (read-only cache: not rewritten)" if self.read_only else "refitting and rewriting it"
            warnings.warn(f"target-model cache file {path} is unreadable ({_error_name(err)}: {first_line}); "
                          f"{action}", stacklevel=2)
            self.misses += 1
            self.refits += 1
            return None
        self.hits += 1
        return state

    def store(self, sequence: str, frame0: int, object_id: int, state: dict[str, Tensor]) -> None:
        if self.read_only:
            return
        cpu_state = {k: state[k].detach().cpu() for k in TM_KEYS}
        atomic_write(self.path(sequence, frame0, object_id), lambda tmp: torch.save(cpu_state, tmp))


class TargetModelProvider:
    """Frozen target models of a batch's samples, from the cache or fitted on their first frame.

    Args:
        backbone: the frozen backbone (its layer4 feeds the target model).
        cfg: target-model settings (TargetModelConfig.train() in training).
        cache: where fitted models are kept, or None to always fit.
        feature_chunk: augmented images per backbone call while fitting (bounds memory).
        seed: base seed of the first-frame augmentation; each object's seed also depends on
            its (sequence, frame0, object_id), so a fit does not depend on batch order or rank.
    """

    def __init__(self, backbone: Backbone, cfg: TargetModelConfig, cache: TargetModelCache | None,
                 feature_chunk: int, seed: int) -> None:
        self.backbone = backbone
        self.cfg = cfg
        self.cache = cache
        self.feature_chunk = feature_chunk
        self.seed = seed

    def __call__(self, images: Tensor, masks: Tensor, sequences: Sequence[str], frames0: Sequence[int],
                 object_ids: Sequence[int]) -> list[TargetModel]:
        """images (B,3,H,W) uint8 and masks (B,1,H,W) of each sample's frame 0 -> B frozen target models."""
        models = []
        shapes = {k: v.shape for k, v in self._empty_model(torch.device("cpu")).state_dict().items()}
        for b, (seq, frame0, oid) in enumerate(zip(sequences, frames0, object_ids)):
            frame0, oid = int(frame0), int(oid)
            state = self.cache.load(seq, frame0, oid, shapes) if self.cache is not None else None
            if state is None:
                try:
                    model = self.fit(images[b], masks[b, 0], _object_seed(self.seed, seq, frame0, oid))
                except ValueError as err:
                    raise TargetModelFitError(f"sequence {seq!r} object {oid} frame {frame0}: {err}") from err
                if self.cache is not None:
                    self.cache.store(seq, frame0, oid, model.state_dict())
            else:
                model = self._empty_model(images.device)
                model.load_state_dict(state)
            models.append(model.eval().requires_grad_(False))
        return models

    @torch.no_grad()
    def fit(self, image: Tensor, mask: Tensor, seed: int) -> TargetModel:
        """Fit on K augmented copies of image (3,H,W) uint8 with mask (H,W) (docs/method.md, "Target model")."""
        augmenter = FirstFrameAugmenter(self.cfg.num_aug, self.cfg.min_px_count, seed=seed)
        aug_images, aug_masks = augmenter(image, mask > 0.5)
        layer4 = []
        for chunk in aug_images.split(self.feature_chunk):
            shallow = self.backbone.shallow(self.backbone.normalize(chunk))
            layer4.append(self.backbone.deep(shallow["layer3"])["layer4"])
        model = self._empty_model(image.device)
        model.initialize(torch.cat(layer4).float(), aug_masks)
        return model

    def _empty_model(self, device: torch.device) -> TargetModel:
        return TargetModel(self.backbone.channels["layer4"], self.cfg).to(device)


def cache_info(backbone: str, backbone_weights: str, cfg: TargetModelConfig, image_size: tuple[int, int],
               synthetic: dict | None = None) -> dict:
    """What a cache's target models depend on: backbone, its weights, the fitting settings, the training
    frame size (H, W) they were fitted at, the file naming and, for generated videos, the generator's
    settings (the same sequence names then hold other pictures)."""
    settings = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}
    info = {"backbone": backbone, "backbone_weights": str(backbone_weights), "target_model": settings,
            "image_size": [int(image_size[0]), int(image_size[1])], "frame0": FRAME0_NAMING}
    if synthetic is not None:
        info["synthetic_data"] = dict(synthetic)
    return info


def _shown(record: dict, key: str) -> str:
    """A cache index entry as JSON with sorted keys, so that the cached and the new value read alike."""
    return json.dumps(record[key], sort_keys=True) if key in record else "not recorded"


def _error_name(err: BaseException) -> str:
    """ValueError, or module.Name for errors outside the builtins (struct.error says little on its own)."""
    cls = type(err)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _object_seed(base: int, sequence: str, frame0: int, object_id: int) -> int:
    return (base * 1_000_003 + zlib.crc32(f"{sequence}/{frame0}/{object_id}".encode())) % (2**31)
