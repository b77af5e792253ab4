"""FRTM's discriminative target model: two bias-free convs on layer4, fitted online by GN-CG.

`TargetModel` holds one object's `project` (1x1) and `filter` (3x3) convolutions. `initialize()`
fits both on the augmented first frame, then fills a `SampleMemory`; during tracking `update()`
adds confident frames to the memory and periodically refits `filter` alone.

The model is used inside the tracker's `torch.inference_mode()` and autocast. Fitting needs
autograd in float32, so the memory and all optimisation tensors are created with inference
mode switched off (inputs are cloned out of it), and the results are written back into the
parameters in whichever mode the parameters were created in.

Both fits are least-squares problems whose residuals live at image resolution. With
`score_space=True` (the default) their normal equations are formed at the score resolution
instead: each sample's full-resolution part of the residual is folded into a few score-sized
maps (`ScoreSpaceStatistics`), computed once when the sample enters memory. The optimisation is
the same GN-CG in exact arithmetic (the same CG, `ScoreSpaceSolver`), without touching a
full-resolution tensor; only float rounding differs from the full-resolution residuals.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.config import TargetModelConfig
from models.gn_cg import GN_STEP, GaussNewtonCG


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
    """Per-sample (foreground, background) pixel weights of the thresholded masks ("hinge").

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


STENCIL_OFFSETS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))  # order of the stencil maps


def interpolation_matrix(size_in: int, size_out: int, device: torch.device) -> Tensor:
    """(size_out, size_in) float64 matrix of 1-D linear interpolation, as F.interpolate's bilinear
    mode (align_corners=False) does along one axis; the 2-D upsampling is U_h X U_w^T."""
    eye = torch.eye(size_in, dtype=torch.float64, device=device).view(1, size_in, size_in, 1)
    columns = F.interpolate(eye, size=(size_out, 1), mode="bilinear", align_corners=False)
    return columns[0, :, :, 0].T


def _neighbour_products(u: Tensor) -> Tensor:
    """u (n_out, n_in) -> (n_out, 3 * n_in): [u[:, p] * u[:, p + d] for d = -1, 0, 1], zero past the ends."""
    zero = u.new_zeros(u.shape[0], 1)
    below = torch.cat([zero, u[:, 1:] * u[:, :-1]], dim=1)  # d = -1
    above = torch.cat([u[:, :-1] * u[:, 1:], zero], dim=1)  # d = +1
    return torch.cat([below, u * u, above], dim=1)


class _SparseRows:
    """A matrix with a few non-zeros per row (an interpolation matrix), for products x @ matrix."""

    def __init__(self, matrix: Tensor) -> None:
        self.transposed = matrix.T.to_sparse()  # sparse-dense products take the sparse operand on the left

    def right_multiply(self, x: Tensor) -> Tensor:
        """x (..., n) @ matrix (n, m) -> (..., m)."""
        flat = x.reshape(-1, x.shape[-1])
        return torch.sparse.mm(self.transposed, flat.T).T.reshape(*x.shape[:-1], -1)


class ScoreSpaceStatistics:
    """The full-resolution part of memory samples' residuals, folded to the score resolution (exact).

    A sample with score map s (h,w), bilinear upsampling U to its target's (H,W), hinge pixel
    weights P (diagonal) and target y has ||sqrt(P) (U s - y)||^2 = s^T M s - 2 b^T s + c with
    M = U^T P U, b = U^T P y and c = y^T P y. U has two taps per output pixel along each axis, so
    M couples a score cell only with its 3x3 neighbours: it is kept as 9 maps (the stencil).
    Computed in float64 and stored in float32.
    """

    def __init__(self, score_size: tuple[int, int], image_size: tuple[int, int], device: torch.device) -> None:
        (h, w), (height, width) = score_size, image_size
        self.score_size = (h, w)
        self.image_size = (height, width)
        self.up_h = interpolation_matrix(h, height, device)  # (H,h)
        self.up_w = interpolation_matrix(w, width, device)  # (W,w)
        self.pairs_h = _neighbour_products(self.up_h)  # (H,3h)
        self.sparse_up_w = _SparseRows(self.up_w)  # (W,w)
        self.sparse_pairs_w = _SparseRows(_neighbour_products(self.up_w))  # (W,3w)

    def compute(self, targets: Tensor, pixel_weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """targets (k,1,H,W), pixel weights (k,2) -> stencil (k,9,h,w), b (k,1,h,w), c (k,) float32.

        stencil[:, i] at cell q is M[q, q + STENCIL_OFFSETS[i]] (zero where that cell is outside).
        """
        (h, w), k = self.score_size, targets.shape[0]
        y = targets[:, 0].double()
        weights = pixel_weights.double()
        p = torch.where(y > 0.5, weights[:, 0, None, None], weights[:, 1, None, None])  # (k,H,W)
        pairs = self.pairs_h.T @ self.sparse_pairs_w.right_multiply(p)  # (k,3h,3w): block (a,b) = offset (a-1,b-1)
        stencil = pairs.view(k, 3, h, 3, w).permute(0, 1, 3, 2, 4).reshape(k, 9, h, w)
        b = self.up_h.T @ self.sparse_up_w.right_multiply(p * y)  # (k,h,w)
        c = (p * y * y).flatten(1).sum(dim=1)
        return stencil.float(), b.unsqueeze(1).float(), c.float()


def _shifted(x: Tensor, dy: int, dx: int) -> Tensor:
    """x (n,k,h,w) -> x at (i + dy, j + dx), zero where that falls outside."""
    h, w = x.shape[-2:]
    return F.pad(x, (1, 1, 1, 1))[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]


def apply_stencil(stencil: Tensor, scores: Tensor) -> Tensor:
    """M s per sample: stencil (n,9,h,w), scores (n,1,h,w) -> (n,1,h,w)."""
    out = torch.zeros_like(scores)
    for i, (dy, dx) in enumerate(STENCIL_OFFSETS):
        out += stencil[:, i:i + 1] * _shifted(scores, dy, dx)
    return out


def _data_loss(scores: Tensor, stencil: Tensor, b: Tensor, c: Tensor, weights: Tensor) -> Tensor:
    """sum_i w_i (s_i^T M_i s_i - 2 b_i^T s_i + c_i): the weighted full-resolution residuals' squared norm."""
    return (weights * (scores * apply_stencil(stencil, scores) - 2 * b * scores)).sum() + weights.flatten() @ c


class _FilterProblem:
    """The filter update's least squares in score space: sum_i w_i ||sqrt(P_i)(U conv(f_i, theta) - y_i)||^2
    + reg^2 ||theta||^2, with the memory's features f_i (n,C,h,w) and statistics.

    The 3x3 conv with one output channel is written as one matrix product (all samples and cells
    against the 9 taps) and shifted sums: a general conv kernel is slow for a single output channel.
    Taps follow STENCIL_OFFSETS. Features stored channels-last make the product's operand a view.
    """

    def __init__(self, features: Tensor, stencil: Tensor, b: Tensor, c: Tensor, sample_weights: Tensor,
                 reg: float) -> None:
        self.n, channels, h, w = features.shape
        self.size = (h, w)
        self.features = features.permute(0, 2, 3, 1).reshape(-1, channels)  # (n*h*w,C)
        self.weights = sample_weights.view(-1, 1, 1, 1)
        self.stencil, self.b, self.c = stencil, b, c
        self.reg = reg

    def _scores(self, theta: Tensor) -> Tensor:
        """conv2d(features, theta (1,C,3,3), padding=1) -> (n,1,h,w)."""
        per_tap = (theta[0].flatten(1).T @ self.features.T).view(9, self.n, 1, *self.size)
        out = torch.zeros_like(per_tap[0])
        for i, (dy, dx) in enumerate(STENCIL_OFFSETS):
            out += _shifted(per_tap[i], dy, dx)
        return out

    def _adjoint(self, grad_scores: Tensor) -> Tensor:
        """J^T of `_scores`: grad_scores (n,1,h,w) -> (1,C,3,3)."""
        shifted = torch.stack([_shifted(grad_scores, -dy, -dx) for dy, dx in STENCIL_OFFSETS])  # (9,n,1,h,w)
        return (shifted.view(9, -1) @ self.features).T.reshape(1, -1, 3, 3)

    def loss(self, theta: list[Tensor]) -> float:
        (filt,) = theta
        data = _data_loss(self._scores(filt), self.stencil, self.b, self.c, self.weights)
        return float(data + self.reg ** 2 * (filt * filt).sum())

    def _normal(self, v: Tensor) -> Tensor:
        """J^T J v."""
        return self._adjoint(self.weights * apply_stencil(self.stencil, self._scores(v))) + self.reg ** 2 * v

    def linearize(self, theta: list[Tensor]):
        """(loss, J^T r, v -> J^T J v) at theta = [filter]; the problem is linear, J does not change."""
        (filt,) = theta
        s = self._scores(filt)
        gradient = self._adjoint(self.weights * (apply_stencil(self.stencil, s) - self.b)) + self.reg ** 2 * filt
        return self.loss(theta), [gradient], lambda v: [self._normal(v[0])]


class _JointProblem:
    """The initial fit of project and filter in score space: sum_i w_i ||sqrt(P_i)(U s_i(theta) - y_i)||^2
    + sum_j reg_j^2 ||theta_j||^2 with s_i = conv(conv(f_i, project), filter). Not linear in theta:
    each GN step linearises it with autograd on the score-sized maps (J v by the double-backward trick)."""

    def __init__(self, features: Tensor, stencil: Tensor, b: Tensor, c: Tensor, sample_weights: Tensor,
                 regs: tuple[float, float]) -> None:
        self.features = features
        self.weights = sample_weights.view(-1, 1, 1, 1)
        self.stencil, self.b, self.c = stencil, b, c
        self.regs = regs

    def _scores(self, theta: list[Tensor]) -> Tensor:
        project, filt = theta
        return F.conv2d(F.conv2d(self.features, project), filt, padding=1)

    def _loss(self, scores: Tensor, theta: list[Tensor]) -> float:
        reg = sum(r ** 2 * (t * t).sum() for r, t in zip(self.regs, theta))
        return float(_data_loss(scores, self.stencil, self.b, self.c, self.weights) + reg)

    def loss(self, theta: list[Tensor]) -> float:
        with torch.no_grad():
            return self._loss(self._scores(theta), theta)

    def linearize(self, theta: list[Tensor]):
        """(loss, J^T r, v -> J^T J v) at theta = [project, filter]."""
        with torch.enable_grad():
            theta = [t.detach().requires_grad_(True) for t in theta]
            s = self._scores(theta)
            residual = self.weights * (apply_stencil(self.stencil, s.detach()) - self.b)  # W (M s - b)
            data = torch.autograd.grad(s, theta, residual, retain_graph=True)
            gradient = [g + r ** 2 * t.detach() for g, r, t in zip(data, self.regs, theta)]
            loss = self._loss(s.detach(), [t.detach() for t in theta])
            dummy = torch.zeros_like(s, requires_grad=True)
            transpose = torch.autograd.grad(s, theta, dummy, create_graph=True)  # J^T u, linear in u

        def normal(v: list[Tensor]) -> list[Tensor]:
            with torch.enable_grad():
                (jv,) = torch.autograd.grad(transpose, dummy, v, retain_graph=True)
                jtmjv = torch.autograd.grad(s, theta, self.weights * apply_stencil(self.stencil, jv), retain_graph=True)
            return [a + r ** 2 * vi for a, r, vi in zip(jtmjv, self.regs, v)]

        return loss, gradient, normal


class ScoreSpaceSolver(GaussNewtonCG):
    """GaussNewtonCG that can also run on a score-space problem (its CG and CG state are shared)."""

    def run_score_space(self, problem: _FilterProblem | _JointProblem, start: list[Tensor], iters) -> list[Tensor]:
        """`run()` for a problem given as `linearize(theta) -> (loss, J^T r, v -> J^T J v)` and `loss(theta)`."""
        self.losses = []
        theta = [t.detach().clone().float() for t in start]
        for cg_iters in iters:
            loss, gradient, normal = problem.linearize(theta)
            self.losses.append(loss)
            step = self._conjugate_gradient(normal, [-g for g in gradient], cg_iters)
            theta = [(t + GN_STEP * d).detach() for t, d in zip(theta, step)]
        self.losses.append(problem.loss(theta))
        return theta


class SampleMemory:
    """Fixed-capacity training memory of one target model.

    Slots hold (projected layer4 features, soft target mask at image resolution, (fg, bg) pixel
    weights) and, with `score_space`, each sample's `ScoreSpaceStatistics`. Tensors are preallocated
    on the first `reset()`; sample weights live on the CPU in float64 (a handful of numbers, kept off
    the device to avoid synchronisations).
    """

    def __init__(self, capacity: int, learning_rate: float, score_space: bool = False) -> None:
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
        self.score_space = score_space
        self._statistics: ScoreSpaceStatistics | None = None
        self.stencil: Tensor | None = None  # (capacity,9,h,w), with score_space
        self.projected_targets: Tensor | None = None  # (capacity,1,h,w) b, with score_space
        self.target_energy: Tensor | None = None  # (capacity,) c, with score_space
        self._previous_slot: int | None = None  # slot of the last update's sample
        # Trusted samples (corrections, this project's extension): pinned slots, never replaced by insert().
        # Their weights live apart from `weights` (the published scheme, which then covers the other slots).
        with torch.inference_mode(False):
            self.trusted_weights = torch.zeros(capacity, dtype=torch.float64)
        self.trusted_batches: list[list[int]] = []  # slots of each trusted frame, oldest first
        self.trusted_share = 0.0  # the trusted samples' part of the total weight (0: none kept)

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
                # channels-last: the score-space update reads the features as a (samples*cells, C) matrix
                self.features = torch.zeros(self.capacity, *features.shape[1:], dtype=torch.float32,
                                            device=features.device).to(memory_format=torch.channels_last)
                self.targets = targets.new_zeros(self.capacity, *targets.shape[1:], dtype=torch.float32)
                self.pixel_weights = pixel_weights.new_zeros(self.capacity, 2, dtype=torch.float32)
                if self.score_space:
                    self._allocate_statistics(features, targets)
            self.features[:k] = features
            self.targets[:k] = targets
            self.pixel_weights[:k] = pixel_weights
            if self.score_space:
                self._store_statistics(slice(0, k), targets, pixel_weights)
            self.weights.zero_()
            self.weights[:k] = self.initial_weights(k)
            self.trusted_weights.zero_()
        self.trusted_batches = []
        self.trusted_share = 0.0
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
        """Replace the smallest-weight slot with a new sample and reweight. Returns the slot.

        Args:
            features: (1,C,h,w); target: (1,1,H,W); pixel_weights: (1,2).
        """
        if not self.is_allocated:
            raise RuntimeError("SampleMemory.insert: the memory is empty; call reset() with the initial samples first")
        if features.shape[1:] != self.features.shape[1:] or target.shape[1:] != self.targets.shape[1:]:
            raise ValueError(f"SampleMemory.insert: sample of shapes {tuple(features.shape)} / {tuple(target.shape)} "
                             f"does not match the memory's {tuple(self.features.shape[1:])} / "
                             f"{tuple(self.targets.shape[1:])}; frames must keep the first frame's size")
        slot = int(torch.argmin(self._replaceable_weights()))  # the first empty slot while the memory is not full
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
            if self.score_space:
                self._store_statistics(slice(slot, slot + 1), target, pixel_weights)
        self._previous_slot = slot
        return slot

    def insert_trusted(self, features: Tensor, targets: Tensor, pixel_weights: Tensor, share: float) -> list[int]:
        """Keep the K samples of a trusted frame (a user's correction) in pinned slots. Returns the slots.

        The trusted frames together hold `share` of the total weight, each frame alike and, within a
        frame, the original (index 0) twice an augmentation (the first frame's pattern); the published
        weights of the other slots are scaled to the rest and keep evolving as before. Pinned slots are
        never replaced by insert(). At most half the memory is pinned: beyond that the oldest trusted
        frame is dropped. The K slots taken are the empty ones first, then those of the smallest weight.

        Args:
            features: (K,C,h,w) projected features; targets: (K,1,H,W); pixel_weights: (K,2);
            share: in (0, 1).
        """
        if not self.is_allocated:
            raise RuntimeError("SampleMemory.insert_trusted: the memory is empty; call reset() first")
        k = features.shape[0]
        if not 0 < share < 1:
            raise ValueError(f"SampleMemory.insert_trusted: share must be in (0, 1), got {share}")
        if k > self.capacity // 2:
            raise ValueError(f"SampleMemory.insert_trusted: {k} samples exceed half the memory ({self.capacity}); "
                             f"raise memory_size or lower num_aug")
        if features.shape[1:] != self.features.shape[1:] or targets.shape[1:] != self.targets.shape[1:]:
            raise ValueError(f"SampleMemory.insert_trusted: samples of shapes {tuple(features.shape)} / "
                             f"{tuple(targets.shape)} do not match the memory's; frames must keep one size")
        while sum(map(len, self.trusted_batches)) + k > self.capacity // 2:
            self._drop_slots(self.trusted_batches.pop(0))
        slots = torch.argsort(self._replaceable_weights(), stable=True)[:k].tolist()
        with _autograd_allowed(self.features.device):
            self._drop_slots(slots)
            self.features[slots] = features.to(self.features.dtype)
            self.targets[slots] = targets.to(self.targets.dtype)
            self.pixel_weights[slots] = pixel_weights.to(self.pixel_weights.dtype)
            if self.score_space:
                index = torch.tensor(slots, device=self.features.device)
                stencil, b, c = self._statistics.compute(targets, pixel_weights)
                self.stencil[index], self.projected_targets[index], self.target_energy[index] = stencil, b, c
            self.trusted_batches.append(slots)
            self.trusted_share = share
            pattern = self.initial_weights(k)
            for batch in self.trusted_batches:
                self.trusted_weights[batch] = pattern / len(self.trusted_batches)
        return slots

    def _replaceable_weights(self) -> Tensor:
        """The published weights with pinned slots excluded (+inf), for choosing a slot to replace."""
        if not self.trusted_batches:
            return self.weights
        return torch.where(self.trusted_weights > 0, torch.full_like(self.weights, math.inf), self.weights)

    def _drop_slots(self, slots: list[int]) -> None:
        """Empty these slots (their weights become 0) and renormalise the published weights of the rest."""
        with _autograd_allowed(self.features.device):
            self.weights[slots] = 0
            self.trusted_weights[slots] = 0
            total = self.weights.sum()
            if total > 0:
                self.weights /= total
            if self._previous_slot in slots:  # the next sample's weight grows from the newest one left
                self._previous_slot = int(torch.argmax(self.weights)) if total > 0 else None

    def combined_weights(self) -> Tensor:
        """(capacity,) float64 sample weights as the optimisation sees them: the published weights, and with
        trusted samples kept, those scaled to 1 - trusted_share plus the trusted ones scaled to trusted_share."""
        if not self.trusted_batches:
            return self.weights
        return self.weights * (1 - self.trusted_share) + self.trusted_weights * self.trusted_share

    def _allocate_statistics(self, features: Tensor, targets: Tensor) -> None:
        h, w = features.shape[-2:]
        self._statistics = ScoreSpaceStatistics((h, w), targets.shape[-2:], features.device)
        self.stencil = features.new_zeros(self.capacity, 9, h, w, dtype=torch.float32)
        self.projected_targets = features.new_zeros(self.capacity, 1, h, w, dtype=torch.float32)
        self.target_energy = features.new_zeros(self.capacity, dtype=torch.float32)

    def _store_statistics(self, slots: slice, targets: Tensor, pixel_weights: Tensor) -> None:
        stencil, b, c = self._statistics.compute(targets, pixel_weights)
        self.stencil[slots] = stencil
        self.projected_targets[slots] = b
        self.target_energy[slots] = c

    def active(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Samples with non-zero weight: features (n,C,h,w), targets (n,1,H,W), pixel weights (n,2),
        sample weights (n,) float32 on the memory's device. Views when the active slots are a prefix."""
        select, weights = self._active("active")
        return select(self.features), select(self.targets), select(self.pixel_weights), weights

    def active_score_space(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Samples with non-zero weight in score space: features (n,C,h,w), stencil (n,9,h,w),
        b (n,1,h,w), c (n,), sample weights (n,) float32 (see `ScoreSpaceStatistics`)."""
        if not self.score_space:
            raise RuntimeError("SampleMemory.active_score_space: this memory keeps no score-space statistics; "
                               "create it with score_space=True")
        select, weights = self._active("active_score_space")
        return (select(self.features), select(self.stencil), select(self.projected_targets),
                select(self.target_energy), weights)

    def _active(self, caller: str):
        """(function selecting the active slots of a slot tensor, their sample weights on the device)."""
        if not self.is_allocated:
            raise RuntimeError(f"SampleMemory.{caller}: the memory is empty; call reset() first")
        combined = self.combined_weights()
        index = torch.nonzero(combined > 0).flatten()
        n = index.numel()
        device = self.features.device
        weights = combined[index].to(device=device, dtype=torch.float32)
        if torch.equal(index, torch.arange(n)):
            return (lambda slots: slots[:n]), weights
        index = index.to(device)
        return (lambda slots: slots[index]), weights


def _residual_scale(targets: Tensor, pixel_weights: Tensor, sample_weights: Tensor) -> Tensor:
    """(n,1,H,W) residual multiplier: sqrt(sample weight) * sqrt(pixel weight of the thresholded target)."""
    per_pixel = torch.where(targets > 0.5, pixel_weights[:, 0, None, None, None], pixel_weights[:, 1, None, None, None])
    return per_pixel.sqrt() * sample_weights.sqrt().view(-1, 1, 1, 1)


def _mask_residual(scores: Tensor, targets: Tensor, scale: Tensor) -> Tensor:
    """scale * (bilinear upsampling of (n,1,h,w) scores to the targets' (H,W) - targets)."""
    upsampled = F.interpolate(scores, size=targets.shape[-2:], mode="bilinear", align_corners=False)
    return scale * (upsampled - targets)


class TargetModel(nn.Module):
    """One object's discriminative appearance model on layer4 features.

    Only `project.weight` and `filter.weight` are in the state dict (the target-model cache
    layout); the sample memory and CG state are run-time state. A model restored from a cache
    can `score()` but needs `initialize()` before `update()`.

    Start weights: uniform in +-1/sqrt(fan_in) from a generator seeded with `cfg.init_seed`, so a
    fit never depends on the global RNG.

    score_space: solve the filter updates in score space (exact, and independent of the image
    size); False runs autograd over the full-resolution residuals, as the published code does.
    """

    def __init__(self, in_channels: int, cfg: TargetModelConfig, score_space: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        # skip_init: the start weights come from our own generator, not the global RNG
        self.project = nn.utils.skip_init(nn.Conv2d, in_channels, cfg.c_channels, 1, bias=False)
        self.filter = nn.utils.skip_init(nn.Conv2d, cfg.c_channels, 1, 3, padding=1, bias=False)
        self._reset_weights()
        self.memory = SampleMemory(cfg.memory_size, cfg.learning_rate, score_space=score_space)
        self._filter_solver = ScoreSpaceSolver((cfg.precond[1],), cfg.direction_forget_factor)
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
        """Fit on the K augmented first-frame images and fill the memory.

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
            start = [self.project.weight, self.filter.weight]
            solver = ScoreSpaceSolver(cfg.precond, cfg.direction_forget_factor)
            if self.memory.score_space:
                stats = ScoreSpaceStatistics(features.shape[-2:], targets.shape[-2:], features.device)
                problem = _JointProblem(features, *stats.compute(targets, weights), sample_weights, cfg.filter_reg)
                project, filt = solver.run_score_space(problem, start, cfg.init_iters)
            else:
                scale = _residual_scale(targets, weights, sample_weights)
                reg_project, reg_filter = cfg.filter_reg

                def joint_residuals(theta: list[Tensor]) -> list[Tensor]:
                    project, filt = theta
                    scores = F.conv2d(F.conv2d(features, project), filt, padding=1)
                    return [_mask_residual(scores, targets, scale), reg_project * project, reg_filter * filt]

                project, filt = solver.run(joint_residuals, start, cfg.init_iters)
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

        As the published tracker does: a prediction with fewer than `min_update_px` pixels above 0.5
        changes nothing (no sample enters, no optimisation). Otherwise it enters memory, and the
        filter is refitted when the number of score() calls since initialize() (the first being
        the object's first frame) is a multiple of `train_skipping`.
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
            projected, self._last_projected = self._last_projected, None
            if int((target > 0.5).sum()) < cfg.min_update_px:
                return
            self.memory.insert(projected, target, pixel_weights(target, cfg))
            if self.score_calls % cfg.train_skipping == 0 and self.score_calls != self._last_run_call:
                self._last_run_call = self.score_calls
                self.update_runs += 1
                self._optimise_filter()

    def learn_trusted(self, features: Tensor, masks: Tensor) -> None:
        """Learn a corrected frame as a trusted sample (this project's extension; docs/method.md, "Corrections").

        The K samples (the corrected frame and K-1 augmentations, as at initialisation) are projected
        with the model's `project`, which stays as fitted, and kept in pinned memory slots holding
        `cfg.trusted_share` of the weight (`SampleMemory.insert_trusted`); then `filter` is refitted
        with `cfg.correction_iters` from a fresh CG state. What the memory held before stays in it.

        Args:
            features: (K,C,h,w) layer4 features; index 0 is the corrected frame itself.
            masks: (K,1,H,W) float masks at image resolution.
        """
        if not self.memory.is_allocated:
            raise RuntimeError("TargetModel.learn_trusted: no sample memory; call initialize() first")
        cfg = self.cfg
        with _autograd_allowed(features.device):
            targets = masks.detach().float().clone()
            with torch.no_grad():
                projected = F.conv2d(features.detach().float(), self.project.weight)
            self.memory.insert_trusted(projected, targets, pixel_weights(targets, cfg), cfg.trusted_share)
            self._filter_solver.reset()  # the problem changed: no search direction of the old one carries over
            self._optimise_filter(cfg.correction_iters)
        self._last_projected = None

    def _optimise_filter(self, iters: tuple[int, ...] | None = None) -> None:
        """GN-CG on `filter` (cfg.update_iters unless `iters`) over the memory's samples with non-zero weight."""
        iters = self.cfg.update_iters if iters is None else iters
        reg = self.cfg.filter_reg[1]
        with _autograd_allowed(self.filter.weight.device):
            if self.memory.score_space:
                problem = _FilterProblem(*self.memory.active_score_space(), reg=reg)
                with torch.no_grad():
                    (filt,) = self._filter_solver.run_score_space(problem, [self.filter.weight], iters)
            else:
                features, targets, weights, sample_weights = self.memory.active()
                scale = _residual_scale(targets, weights, sample_weights)

                def filter_residuals(theta: list[Tensor]) -> list[Tensor]:
                    scores = F.conv2d(features, theta[0], padding=1)
                    return [_mask_residual(scores, targets, scale), reg * theta[0]]

                (filt,) = self._filter_solver.run(filter_residuals, [self.filter.weight], iters)
        _assign(self.filter.weight, filt)
