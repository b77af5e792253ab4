"""The reuse gate "convGS" and its decisions.

The gate reads tplS and outputs two logits [reuse, compute]. Training uses a hard straight-through
decision; inference reuses iff p[reuse] > tau.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

REUSE, COMPUTE = 0, 1  # logit / probability columns
GATE_CHANNELS = 16
FIRST_POOL = 7
SECOND_POOL = 3


def make_gate(init_bias: tuple[float, float] = (0.1, 2.0), in_channels: int = 64) -> nn.Sequential:
    """The gate stack over tplS (B,in_channels,h,w) -> (B,2,1,1) logits; indices match the checkpoints.

    init_bias: the last conv's bias (reuse, compute) at training start.
    """
    gate = nn.Sequential(
        nn.AdaptiveMaxPool2d(FIRST_POOL),
        nn.Conv2d(in_channels, GATE_CHANNELS, 3, stride=2, padding=1),
        nn.BatchNorm2d(GATE_CHANNELS),
        nn.AdaptiveMaxPool2d(SECOND_POOL),
        nn.Conv2d(GATE_CHANNELS, 2, 3, stride=2, padding=0),
    )
    with torch.no_grad():
        gate[4].bias.copy_(torch.tensor(init_bias, dtype=gate[4].bias.dtype))
    return gate


def straight_through(logits: Tensor) -> tuple[Tensor, Tensor]:
    """logits (B,2) -> (decision (B,2), p (B,2)).

    decision's value is exactly one-hot(argmax p); its gradient is that of p = softmax(logits).
    Written as hard + (p - p.detach()), which equals hard - p.detach() + p but keeps the forward
    value exact (p - p.detach() is exactly zero).
    """
    p = torch.softmax(logits, dim=1)
    hard = F.one_hot(p.argmax(dim=1), num_classes=p.shape[1]).to(p.dtype)
    return hard + (p - p.detach()), p


def reuse_decision(p_reuse: Tensor, tau: float) -> Tensor:
    """p_reuse (B,) -> bool (B,): reuse iff p_reuse > tau (strict, so tau = 1 never reuses)."""
    return p_reuse > tau
