"""FRTM's discriminative target model: two bias-free convs on layer4, fitted online by GN-CG (DESIGN 2).

`TargetModel` holds one object's `project` (1x1) and `filter` (3x3) convolutions. `initialize()`
fits both on the augmented first frame, then fills a `SampleMemory`; during tracking `update()`
adds confident frames to the memory and periodically refits `filter` alone.

The model is used inside the tracker's `torch.inference_mode()` and autocast. Fitting needs
autograd in float32, so the memory and all optimisation tensors are created with inference
mode switched off (inputs are cloned out of it), and the results are written back into the
parameters in whichever mode the parameters were created in.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.config import TargetModelConfig
from models.gn_cg import GaussNewtonCG


@contextmanager
def _autograd_allowed(device: torch.device) -> Iterator[None]:
    """Ordinary (non-inference) float32 tensors, whatever mode the caller is in."""
    with torch.inference_mode(False), torch.autocast(device.type, enabled=False):
        yield


def _assign(param: Tensor, value: Tensor) -> None:
    """param[...] = value, also for parameters created in inference mode."""
    with torch.inference_mode(param.is_inference()), torch.no_grad():
        param.copy_(value)


def pixel_weights(targets: Tensor, cfg: TargetModelConfig) -> Tensor:
    """Per-sample (foreground, background) pixel weights of the thresholded masks (DESIGN 2, "hinge").

    Args:
        targets: (N,1,H,W) masks; pixels > 0.5 are foreground.
        cfg: `pixel_weighting` "hinge" (with `target_influence` tf and `hinge_min_px`) or None.
    Returns:
        (N,2) float32 weights (the residual is later multiplied by their square root). With
        foreground fraction af (tf when the object has fewer than `hinge_min_px` pixels):
        af > tf -> (1, 1); otherwise (tf / af, (1 - tf) / (1 - af)). None -> all ones.
    """
    n = targets.shape[0]
    ones = torch.ones(n, 2, dtype=torch.float32, device=targets.device)
    if cfg.pixel_weighting is None:
        return ones
    if cfg.pixel_weighting != "hinge":
        raise ValueError(f"TargetModelConfig.pixel_weighting must be 'hinge' or None, got {cfg.pixel_weighting!r}")
    tf = cfg.target_influence
    count = (targets > 0.5).flatten(1).sum(dim=1).float()
    af = count / targets[0].numel()
    af = torch.where(count < cfg.hinge_min_px, torch.full_like(af, tf), af)
    weighted = torch.stack([tf / af, (1 - tf) / (1 - af)], dim=1)
    return torch.where((af > tf)[:, None], ones, weighted)


class SampleMemory:
    """Fixed-capacity training memory of one target model (DESIGN 2).

    Slots hold (projected layer4 features, soft target mask at image resolution, (fg, bg) pixel
    weights). Tensors are preallocated on the first `reset()`; sample weights live on the CPU in
    float64 (a handful of numbers, kept off the device to avoid synchronisations).
    """

    def __init__(self, capacity: int, learning_rate: float) -> None:
        if capacity < 1:
            raise ValueError(f"SampleMemory: capacity must be >= 1, got {capacity}")
        if not 0 < learning_rate < 1:
            raise ValueError(f"SampleMemory: learning_rate must be in (0, 1), got {learning_rate}")
        self.capacity = capacity
        self.learning_rate = learning_rate
        with torch.inference_mode(False):  # updated in place later, also from inside inference mode
            self.weights = torch.zeros(capacity, dtype=torch.float64)
        self.features: Tensor | None = None  # (capacity,C,h,w)
        self.targets: Tensor | None = None  # (capacity,1,H,W)
        self.pixel_weights: Tensor | None = None  # (capacity,2)
        self._previous_slot: int | None = None  # slot of the last update's sample

    @property
    def is_allocated(self) -> bool:
        return self.features is not None

    def reset(self, features: Tensor, targets: Tensor, pixel_weights: Tensor) -> None:
        """Store the K initial samples: weights 1/K, the original (index 0) 2/K, then normalised.

        Args:
            features: (K,C,h,w); targets: (K,1,H,W); pixel_weights: (K,2). Index 0 is the original image.
        """
        k = features.shape[0]
        if k > self.capacity:
            raise ValueError(f"SampleMemory: {k} initial samples do not fit a memory of {self.capacity}; "
                             f"raise memory_size or lower num_aug")
        with _autograd_allowed(features.device):
            if not self._fits(features, targets):
                self.features = features.new_zeros(self.capacity, *features.shape[1:], dtype=torch.float32)
                self.targets = targets.new_zeros(self.capacity, *targets.shape[1:], dtype=torch.float32)
                self.pixel_weights = pixel_weights.new_zeros(self.capacity, 2, dtype=torch.float32)
            self.features[:k] = features
            self.targets[:k] = targets
            self.pixel_weights[:k] = pixel_weights
            self.weights.zero_()
            self.weights[:k] = self.initial_weights(k)
        self._previous_slot = None

    @staticmethod
    def initial_weights(k: int) -> Tensor:
        """(k,) float64 weights of the initial samples: 1/k each, 2/k for the original (index 0), normalised."""
        weights = torch.full((k,), 1.0 / k, dtype=torch.float64)
        weights[0] = 2.0 / k
        return weights / weights.sum()

    def _fits(self, features: Tensor, targets: Tensor) -> bool:
        """Whether the allocated buffers can take samples like these (else they are reallocated)."""
        return (self.is_allocated and self.features.device == features.device
                and self.features.shape[1:] == features.shape[1:] and self.targets.shape[1:] == targets.shape[1:])

    def insert(self, features: Tensor, target: Tensor, pixel_weights: Tensor) -> int:
        """Replace the smallest-weight slot with a new sample and reweight (DESIGN 2). Returns the slot.

        Args:
            features: (1,C,h,w); target: (1,1,H,W); pixel_weights: (1,2).
        """
        if not self.is_allocated:
            raise RuntimeError("SampleMemory.insert: the memory is empty; call reset() with the initial samples first")
        if features.shape[1:] != self.features.shape[1:] or target.shape[1:] != self.targets.shape[1:]:
            raise ValueError(f"SampleMemory.insert: sample of shapes {tuple(features.shape)} / {tuple(target.shape)} "
                             f"does not match the memory's {tuple(self.features.shape[1:])} / "
                             f"{tuple(self.targets.shape[1:])}; frames must keep the first frame's size")
        slot = int(torch.argmin(self.weights))  # the first empty slot while the memory is not full
        lr = self.learning_rate
        with _autograd_allowed(self.features.device):
            if self._previous_slot is None:
                self.weights /= 1 - lr
                self.weights[slot] = lr
            else:
                self.weights[slot] = self.weights[self._previous_slot] / (1 - lr)
            self.weights /= self.weights.sum()
            self.features[slot] = features[0]
            self.targets[slot] = target[0]
            self.pixel_weights[slot] = pixel_weights[0]
        self._previous_slot = slot
        return slot

    def active(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Samples with non-zero weight: features (n,C,h,w), targets (n,1,H,W), pixel weights (n,2),
        sample weights (n,) float32 on the memory's device. Views when the active slots are a prefix."""
        if not self.is_allocated:
            raise RuntimeError("SampleMemory.active: the memory is empty; call reset() first")
        index = torch.nonzero(self.weights > 0).flatten()
        n = index.numel()
        device = self.features.device
        weights = self.weights[index].to(device=device, dtype=torch.float32)
        if torch.equal(index, torch.arange(n)):
            return self.features[:n], self.targets[:n], self.pixel_weights[:n], weights
        index = index.to(device)
        return self.features[index], self.targets[index], self.pixel_weights[index], weights


def _residual_scale(targets: Tensor, pixel_weights: Tensor, sample_weights: Tensor) -> Tensor:
    """(n,1,H,W) residual multiplier: sqrt(sample weight) * sqrt(pixel weight of the thresholded target)."""
    per_pixel = torch.where(targets > 0.5, pixel_weights[:, 0, None, None, None], pixel_weights[:, 1, None, None, None])
    return per_pixel.sqrt() * sample_weights.sqrt().view(-1, 1, 1, 1)


def _mask_residual(scores: Tensor, targets: Tensor, scale: Tensor) -> Tensor:
    """scale * (bilinear upsampling of (n,1,h,w) scores to the targets' (H,W) - targets)."""
    upsampled = F.interpolate(scores, size=targets.shape[-2:], mode="bilinear", align_corners=False)
    return scale * (upsampled - targets)


class TargetModel(nn.Module):
    """One object's discriminative appearance model on layer4 features (DESIGN 2).

    Only `project.weight` and `filter.weight` are in the state dict (the target-model cache
    layout); the sample memory and CG state are run-time state. A model restored from a cache
    can `score()` but needs `initialize()` before `update()`.

    Start weights: uniform in +-1/sqrt(fan_in) from a generator seeded with `cfg.init_seed`, so a
    fit never depends on the global RNG.
    """

    def __init__(self, in_channels: int, cfg: TargetModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # skip_init: the start weights come from our own generator, not the global RNG
        self.project = nn.utils.skip_init(nn.Conv2d, in_channels, cfg.c_channels, 1, bias=False)
        self.filter = nn.utils.skip_init(nn.Conv2d, cfg.c_channels, 1, 3, padding=1, bias=False)
        self._reset_weights()
        self.memory = SampleMemory(cfg.memory_size, cfg.learning_rate)
        self._filter_solver = GaussNewtonCG((cfg.precond[1],), cfg.direction_forget_factor)
        self.init_losses: list[float] = []  # ||r||^2 of the joint fit per GN step, then the final one
        self.score_calls = 0
        self.update_runs = 0  # filter optimisations started by update() since initialize()
        self._last_projected: Tensor | None = None
        self._last_run_call = 0

    def _reset_weights(self) -> None:
        generator = torch.Generator().manual_seed(self.cfg.init_seed)
        for conv in (self.project, self.filter):
            weight = conv.weight
            bound = 1.0 / math.sqrt(weight[0].numel())
            start = (torch.rand(weight.shape, generator=generator) * 2 - 1) * bound
            _assign(weight, start.to(device=weight.device, dtype=weight.dtype))

    def initialize(self, features: Tensor, masks: Tensor) -> None:
        """Fit on the K augmented first-frame images and fill the memory (DESIGN 2).

        Args:
            features: (K,C,h,w) layer4 features; index 0 is the original image.
            masks: (K,1,H,W) float object masks at image resolution.
        """
        if features.dim() != 4 or masks.dim() != 4 or masks.shape[:2] != (features.shape[0], 1):
            raise ValueError(f"TargetModel.initialize: expected features (K,C,h,w) and masks (K,1,H,W), got "
                             f"{tuple(features.shape)} and {tuple(masks.shape)}")
        cfg = self.cfg
        with _autograd_allowed(features.device):
            features = features.detach().float().clone()
            targets = masks.detach().float().clone()
            weights = pixel_weights(targets, cfg)
            self._reset_weights()
            sample_weights = SampleMemory.initial_weights(features.shape[0]).to(features.device, torch.float32)
            scale = _residual_scale(targets, weights, sample_weights)
            reg_project, reg_filter = cfg.filter_reg

            def joint_residuals(theta: list[Tensor]) -> list[Tensor]:
                project, filt = theta
                scores = F.conv2d(F.conv2d(features, project), filt, padding=1)
                return [_mask_residual(scores, targets, scale), reg_project * project, reg_filter * filt]

            solver = GaussNewtonCG(cfg.precond, cfg.direction_forget_factor)
            project, filt = solver.run(joint_residuals, [self.project.weight, self.filter.weight], cfg.init_iters)
            self.init_losses = solver.losses
            _assign(self.project.weight, project)
            _assign(self.filter.weight, filt)
            with torch.no_grad():
                projected = F.conv2d(features, project)
            self.memory.reset(projected, targets, weights)
            self._filter_solver.reset()
            self._optimise_filter()
        self.score_calls = 0
        self.update_runs = 0
        self._last_run_call = 0
        self._last_projected = None

    def score(self, features: Tensor) -> Tensor:
        """(B,C,h,w) layer4 features -> (B,1,h,w) raw target score at stride 16; remembered for update()."""
        self.score_calls += 1
        projected = self.project(features)
        self._last_projected = projected.detach()
        return self.filter(projected)

    def update(self, mask: Tensor) -> None:
        """Learn from this frame's (1,1,H,W) soft prediction; call after score() on full-path frames only.

        The sample enters memory when at least `min_update_px` pixels are above 0.5; the filter is
        refitted on every `train_skipping`-th score() call (whether or not this sample entered).
        """
        if not self.memory.is_allocated:
            raise RuntimeError("TargetModel.update: no sample memory; call initialize() first "
                               "(a model loaded from a cache can score but not update)")
        if self._last_projected is None:
            raise RuntimeError("TargetModel.update: call score() on this frame before update()")
        if mask.dim() != 4 or mask.shape[:2] != (1, 1) or self._last_projected.shape[0] != 1:
            raise ValueError(f"TargetModel.update: expected one (1,1,H,W) mask for a single scored frame, got mask "
                             f"{tuple(mask.shape)} after scoring a batch of {self._last_projected.shape[0]}")
        cfg = self.cfg
        with _autograd_allowed(mask.device):
            target = mask.detach().float().clone()
            if int((target > 0.5).sum()) >= cfg.min_update_px:
                self.memory.insert(self._last_projected, target, pixel_weights(target, cfg))
            self._last_projected = None
            if self.score_calls % cfg.train_skipping == 0 and self.score_calls != self._last_run_call:
                self._last_run_call = self.score_calls
                self.update_runs += 1
                self._optimise_filter()

    def _optimise_filter(self) -> None:
        """cfg.update_iters of GN-CG on `filter` over the memory's samples with non-zero weight."""
        reg = self.cfg.filter_reg[1]
        with _autograd_allowed(self.filter.weight.device):
            features, targets, weights, sample_weights = self.memory.active()
            scale = _residual_scale(targets, weights, sample_weights)

            def filter_residuals(theta: list[Tensor]) -> list[Tensor]:
                scores = F.conv2d(features, theta[0], padding=1)
                return [_mask_residual(scores, targets, scale), reg * theta[0]]

            (filt,) = self._filter_solver.run(filter_residuals, [self.filter.weight], self.cfg.update_iters)
        _assign(self.filter.weight, filt)
