"""A tracking session: one video segmented frame by frame, with explicit state (docs/python_api.md).

    session = tracker.session()
    for image in frames:                          # (H,W,3) uint8 RGB
        result = session.step(image, masks)       # masks: {object id: (H,W) mask} given on this frame, or {}

Per frame the shallow backbone half runs once. Every tracked object then goes through template
matching and the reuse gate; the deep backbone half runs at most once per frame, and only if some
object takes the full path or is given on this frame. Objects are batched wherever their tensors
have equal shapes (matching, gate, delta, translator, deep refinement part); the feature-only work
of the shallow refinement part is shared too. Only the target models are per object.

A mask given for an id not yet tracked starts that object (as the published tracker starts an
object on its first frame); a mask given for an id already tracked corrects it (this project's
extension: its result on the frame is the given mask, its template, stored score and previous x are
taken from the frame as at a start, and its target model learns the frame as a trusted sample,
keeping what it learnt before). `remove(id)` stops tracking an object from the next frame on.

The gate decision is the frame's one wait for the device; the label map's transfer is the other
(after it the device is idle, so the target-model updates that follow wait for nothing).
`TrackerConfig.schedule = "reference"` runs the published schedule instead, for comparison: objects
one after another, each with its own gate decision, deep backbone half and refinement.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.augmentation import FirstFrameAugmenter
from models.merge import merge_objects
from models.object_states import ObjectStates
from models.target_model import TargetModel
from models.template import mask_to_stride
from models.tracking_records import START_STAGE, FrameResult, GateRecord, StageTimer, TrackStats

if TYPE_CHECKING:
    from models.tracker import Tracker

MAX_OBJECT_ID = 255  # label maps are uint8
# A correction's augmentations are drawn from a seed of their own per frame, apart from the first frame's.
CORRECTION_SEED_STRIDE = 1_000_003

ForceReuse = Callable[[int, list[int]], list[bool]]


class SessionInputError(ValueError):
    """An image, a mask or an object id given to a session cannot be used as given."""


@dataclass
class _Tracked:
    """Result of the objects tracked on one frame."""

    probs: Tensor  # (N,H,W) foreground probabilities
    full: list[bool]  # per object: took the full path
    records: list[GateRecord]


class TrackingSession:
    """One video, advanced one frame at a time by `step` (see the module docstring).

    Args:
        tracker: the Tracker whose network, backbone and settings the session uses.
        force_reuse: testing/benchmark hook: (frame index, object ids) -> list[bool] replacing the gate's
            decisions; the gate still runs so timings stay honest.
        timer: a StageTimer that receives every stage of the work (benchmarks).
        first_index: the index of the first frame stepped (frame indices in results and gate records).
        reverse: frames come in reverse order (indices count down from first_index).

    Attributes:
        stats: timing and reuse counts so far; gate_log: every GateRecord so far;
        object_ids: the ids tracked now, in the order they started.
    """

    def __init__(self, tracker: Tracker, force_reuse: ForceReuse | None = None, timer: StageTimer | None = None,
                 first_index: int = 0, reverse: bool = False) -> None:
        self.tracker = tracker
        self.backbone, self.net, self.cfg, self.device = tracker.backbone, tracker.net, tracker.cfg, tracker.device
        self.force_reuse = force_reuse
        self._stage = timer.stage if timer is not None else (lambda name: contextlib.nullcontext())
        self.next_index = first_index
        self._direction = -1 if reverse else 1
        self.objects = ObjectStates()
        self.stats = TrackStats()
        self.gate_log: list[GateRecord] = []
        self._frame_size: tuple[int, int] | None = None

    @property
    def object_ids(self) -> list[int]:
        return list(self.objects.ids)

    # ------------------------------------------------------------------ public
    def step(self, image: np.ndarray, masks: Mapping[int, np.ndarray] | None = None) -> FrameResult:
        """Segment the next frame.

        Args:
            image: (H,W,3) uint8 RGB; every frame of a session has the first frame's size.
            masks: object id (1..255) -> (H,W) mask (bool, or numbers: non-zero is the object) given on
                this frame: ids not tracked yet start here, tracked ids are corrected here. None or {}: none.
        Returns:
            the frame's FrameResult. Time spent by the caller between steps is not counted in `stats`.
        """
        index = self.next_index
        given = self._check(index, image, masks or {})
        start = time.perf_counter()
        with torch.inference_mode(), self.tracker.autocast():
            labels, records, updates = self._frame(index, image, given)
            with self._stage("merge"):
                labels_np = labels.cpu().numpy()
            with self._stage("tm_update"):
                for model, soft in updates:
                    model.update(soft)
        seconds = time.perf_counter() - start
        if not self.stats.frames:
            self.stats.first_frame_seconds = seconds
        self.stats.seconds += seconds
        self.stats.frames += 1
        self.gate_log += records
        self.next_index += self._direction
        return FrameResult(index, labels_np, records, tuple(sorted(given)))

    def remove(self, object_id: int) -> None:
        """Stop tracking an object: from the next frame on it is neither tracked nor drawn."""
        if object_id not in self.objects:
            raise SessionInputError(f"remove({object_id!r}): no such object is tracked; tracked ids: "
                                    f"{self.objects.ids or 'none'}")
        self.objects.remove(object_id)

    # ---------------------------------------------------------------- checks
    def _check(self, index: int, image: np.ndarray, masks: Mapping[int, np.ndarray]) -> dict[int, np.ndarray]:
        """The given masks as (H,W) bool arrays, after checking the image and the masks (SessionInputError)."""
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            shape = getattr(image, "shape", None)
            raise SessionInputError(f"frame {index}: the image must be an (H,W,3) uint8 RGB numpy array, got "
                                    f"{type(image).__name__} {getattr(image, 'dtype', '')} of shape {shape}")
        size = image.shape[:2]
        if self._frame_size is None:
            self._frame_size = size
        elif size != self._frame_size:
            raise SessionInputError(f"frame {index} is {size[1]}x{size[0]} but the session's first frame was "
                                    f"{self._frame_size[1]}x{self._frame_size[0]}: a session's frames share one size")
        given = {}
        for object_id, mask in masks.items():
            if isinstance(object_id, bool) or not isinstance(object_id, (int, np.integer)) \
                    or not 1 <= object_id <= MAX_OBJECT_ID:
                raise SessionInputError(f"frame {index}: object id {object_id!r} must be an integer in "
                                        f"1..{MAX_OBJECT_ID} (0 is the background; label maps are uint8)")
            mask = np.asarray(mask)
            if mask.shape != size:
                raise SessionInputError(f"frame {index}: the mask of object {object_id} has shape {mask.shape}; "
                                        f"the frame is {size} (H,W)")
            mask = mask.astype(bool) if mask.dtype != bool else mask
            if not mask.any():
                raise SessionInputError(f"frame {index}: the mask of object {object_id} is empty; an object needs "
                                        f"at least one pixel to be started or corrected (remove({object_id}) "
                                        f"stops tracking it)")
            given[int(object_id)] = mask
        return given

    # ----------------------------------------------------------------- one frame
    def _frame(self, index: int, image: np.ndarray, given: dict[int, np.ndarray]):
        """One frame -> (label map (H,W) uint8 on the device, gate records, pending target-model updates)."""
        objects = self.objects
        height, width = image.shape[:2]
        with self._stage("shallow"):
            frame = torch.from_numpy(image).to(self.device, non_blocking=True).permute(2, 0, 1).unsqueeze(0)
            normalized = self.backbone.normalize(frame).to(self.tracker.dtype)
            feats = self.backbone.shallow(normalized.contiguous(memory_format=self.tracker.memory_format))
        tracked_positions = [k for k, oid in enumerate(objects.ids) if oid not in given]
        tracked = None
        if tracked_positions:
            track = self._track_reference if self.cfg.schedule == "reference" else self._track_batched
            tracked = track(index, feats, tracked_positions, (height, width))
        records = tracked.records if tracked else []
        corrected = [oid for oid in sorted(given) if oid in objects]
        new = [oid for oid in sorted(given) if oid not in objects]
        n_old = len(objects)
        probs = tracked.probs if tracked else None
        full = [False] * n_old
        for k, is_full in zip(tracked_positions, tracked.full if tracked else []):
            full[k] = is_full
        if given:
            if "layer4" not in feats:
                self._run_deep(feats)
            with self._stage(START_STAGE):
                given_probs = self._given_masks(given, sorted(given))  # (M,1,H,W)
                cover = given_probs[:, 0].amax(dim=0, keepdim=True)
                by_id = dict(zip(sorted(given), given_probs))
                if corrected:
                    self._correct_objects(index, frame[0], feats, corrected,
                                          torch.stack([by_id[i] for i in corrected]))
                if new:
                    self._start_objects(frame[0], feats, new, torch.stack([by_id[i] for i in new]))
            # a given mask takes its pixels from the objects tracked on this frame
            if probs is not None:
                probs = probs * (1 - cover)
            if corrected:
                rows = torch.zeros(n_old, height, width, dtype=given_probs.dtype, device=given_probs.device)
                if probs is not None:
                    rows[self._to_device(tracked_positions)] = probs
                rows[self._to_device([objects.position(i) for i in corrected])] = \
                    torch.stack([by_id[i][0] for i in corrected])
                probs = rows
            if new:
                new_probs = torch.stack([by_id[i][0] for i in new])
                probs = new_probs if probs is None else torch.cat([probs, new_probs])
            full = full + [False] * len(new)
        if probs is None:
            return torch.zeros(height, width, dtype=torch.uint8), records, []
        with self._stage("merge"):
            labels, soft = merge_objects(probs, ids=objects.ids)
        updates = [(objects.target_models[k], soft[k][None, None]) for k, is_full in enumerate(full) if is_full]
        return labels, records, updates

    def _given_masks(self, given: dict[int, np.ndarray], ids: list[int]) -> Tensor:
        """(M,1,H,W) float32 masks of these ids on the device."""
        masks = torch.stack([torch.from_numpy(given[i].astype(np.float32)) for i in ids]).to(self.device)
        return masks.unsqueeze(1)

    def _track_batched(self, index: int, feats: dict[str, Tensor], positions: list[int], image_size) -> _Tracked:
        """Matching, gate, scores and refinement of the tracked objects at `positions`, batched."""
        net, objects = self.net, self.objects
        everyone = len(positions) == len(objects)
        sub = (lambda t: t) if everyone else (lambda t: t[self._to_device(positions)])  # noqa: E731
        ids = [objects.ids[k] for k in positions]
        templates, stored_score, prev_x = sub(objects.templates), sub(objects.stored_score), sub(objects.prev_x)
        with self._stage("match_gate"):
            tpl = net.match(templates, feats["layer3"], stored_score)
            p_reuse = torch.softmax(net.gate_logits(tpl).float(), dim=1)[:, 0].cpu()  # the frame's wait for the device
            reuse = self._decide(index, ids, p_reuse)
        records = self._record(index, ids, p_reuse, reuse)
        score = stored_score.clone()
        x = prev_x.clone()
        reuse_idx = [k for k, r in enumerate(reuse) if r]
        full_idx = [k for k, r in enumerate(reuse) if not r]
        if reuse_idx:
            with self._stage("translate"):
                sel = self._to_device(reuse_idx)
                diff = net.delta(tpl[sel])
                score[sel] = stored_score[sel] + diff
                x[sel] = net.refiner.translate(prev_x[sel], diff)
        if full_idx:
            self._run_deep(feats)
            with self._stage("tm_score"):
                sel = self._to_device(full_idx)
                layer4 = feats["layer4"].float()  # the target models are float32 (a no-op unless --amp on the CPU)
                scores = torch.cat([objects.target_models[positions[k]].score(layer4) for k in full_idx])
                scores = scores.to(score.dtype)
            with self._stage("refine_deep"):
                x_full = net.refiner.deep(scores, feats)
                score[sel] = scores
                x[sel] = x_full
                stored = self._to_device([positions[k] for k in full_idx])
                objects.stored_score[stored] = scores
                objects.prev_x[stored] = x_full
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

    def _track_reference(self, index: int, feats: dict[str, Tensor], positions: list[int], image_size) -> _Tracked:
        """The published schedule: each object alone, its own gate decision, deep half and refinement."""
        net, objects = self.net, self.objects
        probs, full, records = [], [], []
        for k in positions:
            oid = objects.ids[k]
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
                    score = objects.target_models[k].score(own["layer4"].float()).to(objects.stored_score.dtype)
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

    # ------------------------------------------------------------ given objects
    def _start_objects(self, image: Tensor, feats, ids: list[int], masks: Tensor) -> None:
        """Initialise the objects that start on this frame; masks (M,1,H,W) float, in the order of `ids`."""
        models = [self._fit_target_model(image, masks[k, 0], oid) for k, oid in enumerate(ids)]
        templates, stored, x = self._frame_state(feats, masks, models)
        self.objects.add(ids, models, templates, stored, x)

    def _correct_objects(self, index: int, image: Tensor, feats, ids: list[int], masks: Tensor) -> None:
        """Corrections: each target model learns its augmented frame as a trusted sample, then the template,
        stored score and previous x are taken from this frame as at a start."""
        positions = [self.objects.position(oid) for oid in ids]
        models = [self.objects.target_models[k] for k in positions]
        for model, mask, oid in zip(models, masks[:, 0], ids):
            seed = self.cfg.aug_seed + oid + CORRECTION_SEED_STRIDE * (index + 1)
            layer4, aug_masks = self._augmented_features(image, mask, seed)
            model.learn_trusted(layer4, aug_masks)
        self.objects.replace(positions, *self._frame_state(feats, masks, models))

    def _frame_state(self, feats, masks: Tensor, models: list[TargetModel]) -> tuple[Tensor, Tensor, Tensor]:
        """(templates, stored scores, previous x) of objects given on this frame with masks (M,1,H,W)."""
        size8 = feats["layer3"].shape[-2:]
        templates = self.net.make_template(feats["layer3"], mask_to_stride(masks, size8, training=False))
        stored = F.interpolate(masks, size=feats["layer4"].shape[-2:], mode="nearest")
        # The previous x comes from the target model's score on this frame, not from the given mask
        # (which is the stored score); at a start this score is the model's first call.
        fitted = torch.cat([model.score(feats["layer4"].float()) for model in models]).to(stored.dtype)
        x = self.net.refiner.deep(fitted, feats)
        return templates, stored, x

    def _fit_target_model(self, image: Tensor, mask: Tensor, object_id: int) -> TargetModel:
        """Fit one object's target model on its augmented first frame."""
        layer4, masks = self._augmented_features(image, mask, self.cfg.aug_seed + object_id)
        tm_cfg = self.cfg.target_model
        model = TargetModel(self.backbone.channels["layer4"], tm_cfg, score_space=self.cfg.score_space_update)
        model = model.to(self.device)
        model.initialize(layer4, masks)
        return model

    def _augmented_features(self, image: Tensor, mask: Tensor, seed: int) -> tuple[Tensor, Tensor]:
        """The frame and its K-1 augmentations: layer4 features (K,C,h,w) float32 and masks (K,1,H,W)."""
        tm_cfg = self.cfg.target_model
        augmenter = FirstFrameAugmenter(tm_cfg.num_aug, tm_cfg.min_px_count, seed=seed)
        images, masks = augmenter(image, mask > 0.5)
        layer4 = []
        for chunk in images.split(self.cfg.feature_chunk):
            normalized = self.backbone.normalize(chunk).to(self.tracker.dtype)
            shallow = self.backbone.shallow(normalized.contiguous(memory_format=self.tracker.memory_format))
            layer4.append(self.backbone.deep(shallow["layer3"])["layer4"])
        return torch.cat(layer4).float(), masks
