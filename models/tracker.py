"""The G-FRTM tracker: segments a video given each object's mask where it first appears (docs/method.md, "Tracking").

Per frame the shallow backbone half runs once. Every tracked object then goes through
template matching and the reuse gate; the deep backbone half runs at most once per frame,
and only if some object takes the full path (or starts on this frame). Objects are
batched wherever their tensors have equal shapes: matching, gate, delta, translator and the
deep refinement part; the feature-only work of the shallow refinement part is shared too.
Only the target models are per object (each has its own weights).

The gate decision is the frame's one wait for the device; the label map's transfer is the
other (after it the device is idle, so the target-model updates that follow wait for nothing).

`TrackerConfig.schedule = "reference"` runs the published schedule instead, for comparison:
objects one after another, each with its own gate decision, deep backbone half and refinement.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Iterable, Iterator, Protocol

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

# Stage names of a frame's work (see StageTimer). The per-frame ones, in order:
STAGES = (
    "shallow",  # shallow backbone half (with the frame's upload and normalisation)
    "match_gate",  # template matching and the gate (with the decision's transfer to the host)
    "deep",  # deep backbone half
    "tm_score",  # target-model scores
    "refine_deep",  # deep refinement part
    "translate",  # delta generator and refine translator (reuse path)
    "refine_shallow",  # shallow refinement part and upsampler
    "merge",  # merging objects and the label map's transfer to the host
    "tm_update",  # target-model updates (memory insertion, every train_skipping-th time GN-CG)
)
START_STAGE = "start"  # initialising the objects that start on a frame


class StageTimer(Protocol):
    """Receives the tracker's stages: `with timer.stage(name): ...` around each piece of a frame's work."""

    def stage(self, name: str) -> ContextManager: ...


@dataclass(slots=True)
class GateRecord:
    """The gate's verdict for one object on one frame (slots: a video's gate log holds one per object-frame)."""

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
    deep_calls: int = 0  # deep backbone half runs (at most one per frame, except in the reference schedule)
    first_frame_seconds: float = 0.0  # the first frame's share of `seconds` (its objects' target models are fitted)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")

    @property
    def later_frame_seconds(self) -> float:
        """Mean time of the frames after the first (nan for a one-frame video)."""
        return (self.seconds - self.first_frame_seconds) / (self.frames - 1) if self.frames > 1 else float("nan")

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


@dataclass
class _Tracked:
    """Result of the tracked objects on one frame."""

    probs: Tensor  # (N,H,W) foreground probabilities
    full: list[bool]  # per object: took the full path
    records: list[GateRecord]


class Tracker:
    """Runs G-FRTM over videos.

    Args:
        backbone: the frozen feature extractor.
        net: the trained G-FRTM modules (eval mode is set here; with cfg.channels_last both
            modules' weights are switched to channels-last memory, values unchanged).
        cfg: tracker settings (tau, fast, amp, augmentation seed, speed settings).
        force_reuse: testing/benchmark hook: a callable (frame, object_ids) -> list[bool] that
            replaces the gate's decision; the gate still runs so timings stay honest.
        timer: optional StageTimer that receives every stage of the work (benchmarks).
    """

    def __init__(self, backbone: Backbone, net: GFRTM, cfg: TrackerConfig,
                 force_reuse: Callable[[int, list[int]], list[bool]] | None = None,
                 timer: StageTimer | None = None) -> None:
        self.backbone = backbone.eval()
        self.net = net.eval()
        self.cfg = cfg
        self.tm_cfg = cfg.target_model
        self.force_reuse = force_reuse
        self.device = next(net.parameters()).device
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        if cfg.channels_last:
            self.backbone.to(memory_format=torch.channels_last)
            self.net.to(memory_format=torch.channels_last)
        self._stage = timer.stage if timer is not None else (lambda name: contextlib.nullcontext())
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
                labels, records, updates = self._step(index, image, start_masks(index), objects)
                with self._stage("merge"):
                    labels_np = labels.to(torch.uint8).cpu().numpy()
                with self._stage("tm_update"):
                    for model, soft in updates:
                        model.update(soft)
            seconds = time.perf_counter() - start
            if not self.stats.frames:
                self.stats.first_frame_seconds = seconds
            self.stats.seconds += seconds
            self.stats.frames += 1
            self.gate_log += records
            yield FrameResult(index, labels_np, records)

    # ----------------------------------------------------------------- one frame
    def _step(self, index: int, image: np.ndarray, new_masks: dict[int, np.ndarray], objects: _Objects):
        """One frame -> (label map (H,W) long on the device, gate records, pending target-model updates)."""
        height, width = image.shape[:2]
        with self._stage("shallow"):
            frame = torch.from_numpy(image).to(self.device, non_blocking=True).permute(2, 0, 1).unsqueeze(0)
            normalized = self.backbone.normalize(frame).contiguous(memory_format=self.memory_format)
            feats = self.backbone.shallow(normalized)
        tracked = None
        if len(objects):
            track = self._track_reference if self.cfg.schedule == "reference" else self._track_batched
            tracked = track(index, feats, objects, (height, width))
        probs = tracked.probs if tracked else None
        full = tracked.full if tracked else []
        if new_masks:
            if "layer4" not in feats:
                self._run_deep(feats)
            with self._stage(START_STAGE):
                new_probs = self._start_objects(frame[0], feats, new_masks, objects)
            if probs is not None:  # a newly starting object takes its pixels from older objects
                probs = torch.cat([probs * (1 - new_probs.amax(dim=0, keepdim=True)), new_probs])
            else:
                probs = new_probs
            full = full + [False] * len(new_masks)
        records = tracked.records if tracked else []
        if probs is None:
            return torch.zeros(height, width, dtype=torch.long), records, []
        with self._stage("merge"):
            positions, soft = merge_objects(probs)
            ids = self._to_device([0] + objects.ids)
            labels = ids[positions]
        updates = [(objects.target_models[k], soft[k][None, None]) for k, is_full in enumerate(full) if is_full]
        return labels, records, updates

    def _track_batched(self, index: int, feats: dict[str, Tensor], objects: _Objects, image_size) -> _Tracked:
        """Matching, gate, scores and refinement of all objects already tracked, batched."""
        net = self.net
        with self._stage("match_gate"):
            tpl = net.match(objects.templates, feats["layer3"], objects.stored_score)
            p_reuse = torch.softmax(net.gate_logits(tpl).float(), dim=1)[:, 0].cpu()  # the frame's wait for the device
            reuse = self._decide(index, objects.ids, p_reuse)
        records = self._record(index, objects.ids, p_reuse, reuse)
        score = objects.stored_score.clone()
        x = objects.prev_x.clone()
        reuse_idx = [k for k, r in enumerate(reuse) if r]
        full_idx = [k for k, r in enumerate(reuse) if not r]
        if reuse_idx:
            with self._stage("translate"):
                sel = self._to_device(reuse_idx)
                diff = net.delta(tpl[sel])
                score[sel] = objects.stored_score[sel] + diff
                x[sel] = net.refiner.translate(objects.prev_x[sel], diff)
        if full_idx:
            self._run_deep(feats)
            with self._stage("tm_score"):
                sel = self._to_device(full_idx)
                scores = torch.cat([objects.target_models[k].score(feats["layer4"]) for k in full_idx])
                scores = scores.to(score.dtype)
            with self._stage("refine_deep"):
                x_full = net.refiner.deep(scores, feats)
                score[sel] = scores
                x[sel] = x_full
                objects.stored_score[sel] = scores
                objects.prev_x[sel] = x_full
        with self._stage("refine_shallow"):
            logits = self._refine_shallow(x, score, feats, image_size)
        return _Tracked(torch.sigmoid(logits.float())[:, 0], [not r for r in reuse], records)

    def _refine_shallow(self, x: Tensor, score: Tensor, feats: dict[str, Tensor], image_size) -> Tensor:
        """Shallow refinement of all objects; on the CPU in chunks of cfg.cpu_refine_batch objects
        (their stride-4 maps together outgrow the caches), sharing the feature-only work."""
        refiner = self.net.refiner
        chunk = len(x) if self.device.type != "cpu" else self.cfg.cpu_refine_batch
        if chunk >= len(x):
            return refiner.shallow(x, score, feats, image_size)
        encoded = refiner.encode(feats, refiner.shallow_layers)
        return torch.cat([refiner.shallow(x[k:k + chunk], score[k:k + chunk], feats, image_size, encoded)
                          for k in range(0, len(x), chunk)])

    def _track_reference(self, index: int, feats: dict[str, Tensor], objects: _Objects, image_size) -> _Tracked:
        """The published schedule: each object alone, its own gate decision, deep half and refinement."""
        net = self.net
        probs, full, records = [], [], []
        for k, oid in enumerate(objects.ids):
            one = slice(k, k + 1)
            with self._stage("match_gate"):
                tpl = net.match(objects.templates[one], feats["layer3"], objects.stored_score[one])
                p_reuse = torch.softmax(net.gate_logits(tpl).float(), dim=1)[:, 0].cpu()
                (reuse,) = self._decide(index, [oid], p_reuse)
            records += self._record(index, [oid], p_reuse, [reuse])
            if reuse:
                with self._stage("translate"):
                    diff = net.delta(tpl)
                    score = objects.stored_score[one] + diff
                    x = net.refiner.translate(objects.prev_x[one], diff)
            else:
                own = dict(feats)
                self._run_deep(own)
                with self._stage("tm_score"):
                    score = objects.target_models[k].score(own["layer4"]).to(objects.stored_score.dtype)
                with self._stage("refine_deep"):
                    x = net.refiner.deep(score, own)
                    objects.stored_score[one] = score
                    objects.prev_x[one] = x
            with self._stage("refine_shallow"):
                logits = net.refiner.shallow(x, score, feats, image_size)
            probs.append(torch.sigmoid(logits.float())[:, 0])
            full.append(not reuse)
        return _Tracked(torch.cat(probs), full, records)

    def _decide(self, index: int, ids: list[int], p_reuse: Tensor) -> list[bool]:
        """Reuse decisions from the gate's probabilities (already on the host), or the forced ones."""
        if self.force_reuse is not None:
            return [bool(r) for r in self.force_reuse(index, list(ids))]
        return (p_reuse > self.cfg.tau).tolist()

    def _record(self, index: int, ids: list[int], p_reuse: Tensor, reuse: list[bool]) -> list[GateRecord]:
        """Count and record the decisions; p_reuse is on the host."""
        self.stats.object_frames += len(ids)
        self.stats.reused += sum(reuse)
        return [GateRecord(index, oid, p, r) for oid, p, r in zip(ids, p_reuse.tolist(), reuse)]

    def _run_deep(self, feats: dict[str, Tensor]) -> None:
        with self._stage("deep"):
            feats.update(self.backbone.deep(feats["layer3"]))
        self.stats.deep_calls += 1

    def _to_device(self, values: list[int]) -> Tensor:
        """A small index tensor on the device, copied without waiting for the device."""
        return torch.tensor(values, dtype=torch.long).to(self.device, non_blocking=True)

    # ------------------------------------------------------------ new objects
    def _start_objects(self, image: Tensor, feats, new_masks: dict[int, np.ndarray], objects: _Objects) -> Tensor:
        """Initialise the objects that start on this frame. Returns their given masks, (M,H,W) float."""
        ids = sorted(new_masks)
        masks = torch.stack([torch.from_numpy(new_masks[i].astype(np.float32)) for i in ids]).to(self.device)
        masks = masks.unsqueeze(1)  # (M,1,H,W)
        models = [self._fit_target_model(image, masks[k, 0], oid) for k, oid in enumerate(ids)]
        size8 = feats["layer3"].shape[-2:]
        templates = self.net.make_template(feats["layer3"], mask_to_stride(masks, size8, training=False))
        stored = F.interpolate(masks, size=feats["layer4"].shape[-2:], mode="nearest")
        # The first previous x comes from the freshly fitted target model's score on this frame, not
        # from the given mask (which is the stored score); this score is each model's first call.
        fitted = torch.cat([model.score(feats["layer4"]) for model in models]).to(stored.dtype)
        x = self.net.refiner.deep(fitted, feats)
        objects.add(ids, models, templates, stored, x)
        return masks[:, 0]

    def _fit_target_model(self, image: Tensor, mask: Tensor, object_id: int) -> TargetModel:
        """Fit one object's target model on its augmented first frame."""
        augmenter = FirstFrameAugmenter(self.tm_cfg.num_aug, self.tm_cfg.min_px_count, seed=self.cfg.aug_seed + object_id)
        images, masks = augmenter(image, mask > 0.5)
        layer4 = []
        for chunk in images.split(self.cfg.feature_chunk):
            normalized = self.backbone.normalize(chunk).contiguous(memory_format=self.memory_format)
            shallow = self.backbone.shallow(normalized)
            layer4.append(self.backbone.deep(shallow["layer3"])["layer4"])
        model = TargetModel(self.backbone.channels["layer4"], self.tm_cfg, score_space=self.cfg.score_space_update)
        model = model.to(self.device)
        model.initialize(torch.cat(layer4).float(), masks)
        return model

    def _autocast(self):
        enabled = self.cfg.amp and self.device.type == "cuda"
        return torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=enabled)
