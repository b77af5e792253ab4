"""Training losses of G-FRTM, the gate's IoU target and its margin schedule (docs/method.md, "Losses")."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def reuse_margin(epoch: int, m1: float, margin_epochs: int) -> float:
    """Cap on the gate's reuse target at `epoch` (1-based): m1 * min(epoch / marginEp, 1).

    Deviation (m1), docs/method.md: the published code computes this margin and then discards it, so
    its models were trained with the plain IoU target. We apply it as a cap, s := min(s, margin):
    early epochs teach the gate to compute, later ones let it reuse. marginEp == 0 gives m1 at
    once, and `--m1 1.0 --marginEp 0` reproduces the published behaviour (IoU never exceeds 1).
    """
    if margin_epochs <= 0:
        return float(m1)
    return float(m1) * min(epoch / margin_epochs, 1.0)


def mask_iou(a: Tensor, b: Tensor, empty: float) -> Tensor:
    """IoU of the binarised (> 0.5) masks a, b (B,1,H,W) -> (B,). `empty` is the value for an empty union."""
    a = a.flatten(1) > 0.5
    b = b.flatten(1) > 0.5
    inter = (a & b).sum(1).float()
    union = (a | b).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.full_like(union, empty))


def gate_target(label: Tensor, last_full_label: Tensor, margin: float) -> Tensor:
    """Reuse target s (B,): IoU of the label with that of the sample's last full-path frame, capped by `margin`.

    An empty union gives s = 0: with nothing to track there is nothing to reuse.
    """
    return mask_iou(label, last_full_label, empty=0.0).clamp(max=margin)


def gate_loss(p: Tensor, target: Tensor, m2: float) -> Tensor:
    """mean(relu(|p - [s, 1-s]| - m2)^2) over samples and both classes; p (B,2) [reuse, compute], target s (B,)."""
    goal = torch.stack([target, 1.0 - target], dim=1)
    return F.relu((p - goal).abs() - m2).pow(2).mean()


def segmentation_loss(logits: Tensor, label: Tensor) -> Tensor:
    """Binary cross-entropy of sigmoid(logits) against the label, both (B,1,H,W), mean over all pixels.

    As in the published step: torch's BCELoss on the probabilities, whose logarithms are clamped at
    -100. It equals BCE-with-logits except where |logit| > ~16.6 (sigmoid rounds to 0 or 1 in
    float32 there, so the loss of a confidently wrong pixel saturates at 100 and its gradient vanishes).
    """
    probs = torch.sigmoid(logits)
    # BCELoss refuses NaN input (on CUDA with a device-side assert): a NaN probability gives a NaN
    # loss instead, which the training loop reports with the batch's samples.
    nan = torch.isnan(probs).any()
    loss = F.binary_cross_entropy(probs.nan_to_num(0.5), label)
    return torch.where(nan, torch.full_like(loss, float("nan")), loss)


def delta_loss(diff: Tensor, label16: Tensor, stored_score: Tensor) -> Tensor:
    """MSE between Diff and (label at stride 16 - stored score), all (B,1,h16,w16)."""
    return F.mse_loss(diff, label16 - stored_score)
