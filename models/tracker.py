"""The G-FRTM tracker: segments a video given each object's mask where it first appears (DESIGN 4).

Per frame the shallow backbone half runs once. Every tracked object then goes through
template matching and the reuse gate; the deep backbone half runs at most once per frame,
and only if some object takes the full path (or starts on this frame). Objects are
batched wherever their tensors have equal shapes: matching, gate, delta, the deep and
shallow refinement parts. Only the target models are per object (each has its own weights).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.augmentation import FirstFrameAugmenter
from models.backbone import Backbone
from models.config import TrackerConfig
from models.gfrtm import GFRTM
from models.merge import merge_objects
from models.target_model import TargetModel
from models.template import mask_to_stride


@dataclass
class GateRecord:
    """The gate's verdict for one object on one frame."""

    frame: int
    object_id: int
    p_reuse: float
    reused: bool


@dataclass
class FrameResult:
    """Output of one frame: the merged label map (object ids as values) and the gate records."""

    index: int
    labels: np.ndarray  # (H,W) uint8 object ids, 0 = background
    gate: list[GateRecord] = field(default_factory=list)


@dataclass
class TrackStats:
    """Timing and reuse counts of one video."""

    frames: int = 0
    seconds: float = 0.0
    object_frames: int = 0  # object-frames after each object's first frame
    reused: int = 0
    deep_calls: int = 0  # deep backbone half runs (at most one per frame)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")

    @property
    def reuse_rate(self) -> float:
        return self.reused / self.object_frames if self.object_frames else 0.0


class _Objects:
    """Per-object state of the tracked objects, stacked along the batch dimension."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.target_models: list[TargetModel] = []
        self.templates: Tensor | None = None  # (B,64,64)
        self.stored_score: Tensor | None = None  # (B,1,h16,w16): last full-path score
        self.prev_x: Tensor | None = None  # (B,64,h16,w16): last deep-part output

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, ids: list[int], models: list[TargetModel], templates: Tensor, scores: Tensor, x: Tensor) -> None:
        self.ids += ids
        self.target_models += models
        cat = lambda old, new: new if old is None else torch.cat([old, new])  # noqa: E731
        self.templates = cat(self.templates, templates)
        self.stored_score = cat(self.stored_score, scores)
        self.prev_x = cat(self.prev_x, x)


class Tracker:
    """Runs G-FRTM over videos.

    Args:
        backbone: the frozen feature extractor.
        net: the trained G-FRTM modules (eval mode is set here).
        cfg: tracker settings (tau, fast, amp, augmentation seed).
        force_reuse: testing/benchmark hook: a callable (frame, object_ids) -> list[bool] that
            replaces the gate's decision; the gate still runs so timings stay honest.
    """

    def __init__(self, backbone: Backbone, net: GFRTM, cfg: TrackerConfig, force_reuse=None) -> None:
        self.backbone = backbone.eval()
        self.net = net.eval()
        self.cfg = cfg
        self.tm_cfg = cfg.target_model
        self.force_reuse = force_reuse
        self.device = next(net.parameters()).device
        self.stats = TrackStats()
        self.gate_log: list[GateRecord] = []

    # ------------------------------------------------------------------ public
    def track(self, frames: Iterable[tuple[int, np.ndarray]], start_masks) -> Iterator[FrameResult]:
        """Segment one video.

        Args:
            frames: (index, (H,W,3) uint8 RGB image) in order.
            start_masks: callable index -> {object_id: (H,W) bool mask} of the objects that
                start on that frame (empty dict when none).
        Yields:
            one FrameResult per frame. `self.stats` holds the video's timing and reuse counts;
            time spent by the caller between frames (e.g. writing files) is not counted.
        """
        self.stats = TrackStats()
        self.gate_log = []
        objects = _Objects()
        for index, image in frames:
            start = time.perf_counter()
            with torch.inference_mode(), self._autocast():
                labels, records = self._step(index, image, start_masks(index), objects)
            labels_np = labels.to(torch.uint8).cpu().numpy()
            self.stats.seconds += time.perf_counter() - start
            self.stats.frames += 1
            self.gate_log += records
            yield FrameResult(index, labels_np, records)

    # ----------------------------------------------------------------- one frame
    def _step(self, index: int, image: np.ndarray, new_masks: dict[int, np.ndarray], objects: _Objects):
        height, width = image.shape[:2]
        frame = torch.from_numpy(image).to(self.device, non_blocking=True).permute(2, 0, 1).unsqueeze(0)
        feats = self.backbone.shallow(self.backbone.normalize(frame))
        size16 = _half(feats["layer3"].shape[-2:])
        records: list[GateRecord] = []
        probs = None
        full = torch.zeros(0, dtype=torch.bool)
        if len(objects):
            probs, full, records = self._track_objects(index, feats, objects, (height, width))
        elif new_masks:
            feats.update(self.backbone.deep(feats["layer3"]))
            self.stats.deep_calls += 1
        if new_masks:
            if "layer4" not in feats:
                feats.update(self.backbone.deep(feats["layer3"]))
                self.stats.deep_calls += 1
            new_probs = self._start_objects(frame[0], feats, new_masks, objects, size16)
            if probs is not None:  # a newly starting object takes its pixels from older objects
                probs = probs * (1 - new_probs.amax(dim=0, keepdim=True))
                probs = torch.cat([probs, new_probs])
                full = torch.cat([full, torch.zeros(len(new_masks), dtype=torch.bool)])
            else:
                probs = new_probs
                full = torch.zeros(len(new_masks), dtype=torch.bool)
        if probs is None:
            return torch.zeros(height, width, dtype=torch.long), records
        positions, soft = merge_objects(probs)
        ids = torch.tensor([0] + objects.ids, device=positions.device)
        for k in torch.nonzero(full).flatten().tolist():
            objects.target_models[k].update(soft[k][None, None])
        return ids[positions], records

    def _track_objects(self, index: int, feats: dict[str, Tensor], objects: _Objects, image_size):
        """Matching, gate, scores and refinement of all objects already tracked. Returns (N,H,W) probs."""
        net = self.net
        tpl = net.match(objects.templates, feats["layer3"], objects.stored_score)
        p_reuse = torch.softmax(net.gate_logits(tpl).float(), dim=1)[:, 0]
        p_cpu = p_reuse.cpu()  # the frame's one host-device synchronisation
        if self.force_reuse is not None:
            reuse = torch.tensor(self.force_reuse(index, list(objects.ids)), dtype=torch.bool)
        else:
            reuse = p_cpu > self.cfg.tau
        full = ~reuse
        records = [
            GateRecord(index, oid, float(p), bool(r)) for oid, p, r in zip(objects.ids, p_cpu.tolist(), reuse.tolist())
        ]
        self.stats.object_frames += len(objects)
        self.stats.reused += int(reuse.sum())

        score = objects.stored_score.clone()
        x = objects.prev_x.clone()
        reuse_idx = torch.nonzero(reuse).flatten().tolist()
        full_idx = torch.nonzero(full).flatten().tolist()
        if reuse_idx:
            sel = torch.tensor(reuse_idx, device=self.device)
            diff = net.delta(tpl[sel])
            score[sel] = objects.stored_score[sel] + diff
            x[sel] = net.refiner.translate(objects.prev_x[sel], diff)
        if full_idx:
            feats.update(self.backbone.deep(feats["layer3"]))
            self.stats.deep_calls += 1
            sel = torch.tensor(full_idx, device=self.device)
            scores = torch.cat([objects.target_models[k].score(feats["layer4"]) for k in full_idx]).to(score.dtype)
            x_full = net.refiner.deep(scores, feats)
            score[sel] = scores
            x[sel] = x_full
            objects.stored_score[sel] = scores
            objects.prev_x[sel] = x_full
        logits = net.refiner.shallow(x, score, feats, image_size)
        return torch.sigmoid(logits.float())[:, 0], full, records

    def _start_objects(self, image: Tensor, feats, new_masks: dict[int, np.ndarray], objects: _Objects, size16):
        """Initialise the objects that start on this frame. Returns their given masks, (M,H,W) float."""
        ids = sorted(new_masks)
        masks = torch.stack([torch.from_numpy(new_masks[i].astype(np.float32)) for i in ids]).to(self.device)
        masks = masks.unsqueeze(1)  # (M,1,H,W)
        models = [self._fit_target_model(image, masks[k, 0], oid) for k, oid in enumerate(ids)]
        size8 = feats["layer3"].shape[-2:]
        templates = self.net.make_template(feats["layer3"], mask_to_stride(masks, size8, training=False))
        scores = F.interpolate(masks, size=size16, mode="nearest")
        x = self.net.refiner.deep(scores, feats)
        objects.add(ids, models, templates, scores, x)
        return masks[:, 0]

    def _fit_target_model(self, image: Tensor, mask: Tensor, object_id: int) -> TargetModel:
        """Fit one object's target model on its augmented first frame (DESIGN 2)."""
        augmenter = FirstFrameAugmenter(self.tm_cfg.num_aug, self.tm_cfg.min_px_count, seed=self.cfg.aug_seed + object_id)
        images, masks = augmenter(image, mask > 0.5)
        layer4 = []
        for chunk in images.split(self.cfg.feature_chunk):
            shallow = self.backbone.shallow(self.backbone.normalize(chunk))
            layer4.append(self.backbone.deep(shallow["layer3"])["layer4"])
        model = TargetModel(self.backbone.channels["layer4"], self.tm_cfg).to(self.device)
        model.initialize(torch.cat(layer4).float(), masks)
        return model

    def _autocast(self):
        enabled = self.cfg.amp and self.device.type == "cuda"
        return torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=enabled)


def _half(size) -> tuple[int, int]:
    """Spatial size of a stride-2 convolution (kernel 3, padding 1) output: ceil(n / 2)."""
    return tuple((n + 1) // 2 for n in size)
