"""Merging per-object probabilities into one label map, as the published tracker does.

With several objects the published tracker aggregates the objects' probabilities p_k (clamped to
[1e-7, 1 - 1e-7]) with a background probability min_k (1 - p_k) and takes a softmax over the
odds p / (1 - p) themselves, not over their logarithm (RGMP's soft aggregation would be the
latter). Each object keeps its softmax value where it wins and 0 elsewhere: that kept map is what
enters its target model's memory. The label map is the argmax of the same aggregation applied once
more, to the kept maps. A pixel where several objects are unsure can therefore end up background
in the label map even though one of them won the first round. A single object goes through the same
merge (background 1 - p): it keeps the softmax value of its odds against the background's where
p > 0.5, not p itself, and its label is p > 0.5.
"""
from __future__ import annotations

import torch
from torch import Tensor

_EPS = 1e-7


def aggregate(probs: Tensor) -> tuple[Tensor, Tensor]:
    """One round of the published aggregation.

    Args:
        probs: (N,H,W) foreground probabilities of N >= 1 objects.
    Returns:
        winner: (H,W) long argmax over [background, objects] (0 = background, k = the k-th object).
        softmax: (N+1,H,W) the softmax over the odds of [background, objects].

    Written as elementwise passes over the N objects (a running minimum, maximum and sum) rather
    than reductions across the object dimension, which are several times slower on the CPU. The
    softmax is the usual max-shifted one; ties go to the lower index, as argmax does.
    """
    p = probs.clamp(_EPS, 1 - _EPS)
    background = 1 - p[0]
    for k in range(1, p.shape[0]):
        background = torch.minimum(background, 1 - p[k])
    candidates = torch.cat([background.unsqueeze(0), p])
    odds = candidates / (1 - candidates)
    peak = odds[0]
    for k in range(1, odds.shape[0]):
        peak = torch.maximum(peak, odds[k])
    exp = torch.exp(odds - peak)
    total = exp[0]
    for k in range(1, exp.shape[0]):
        total = total + exp[k]
    softmax = exp / total
    best = softmax[0]
    winner = torch.zeros(softmax.shape[1:], dtype=torch.long, device=probs.device)
    for k in range(1, softmax.shape[0]):
        better = softmax[k] > best
        best = torch.where(better, softmax[k], best)
        winner.masked_fill_(better, k)
    return winner, softmax


def merge_objects(probs: Tensor) -> tuple[Tensor, Tensor]:
    """Merge the soft masks of the objects of one frame.

    Args:
        probs: (N,H,W) foreground probability of each of N >= 1 objects.
    Returns:
        labels: (H,W) long, 0 = background, k = the k-th object (1-based position in `probs`).
        kept: (N,H,W) what enters each object's target-model memory: its softmax value where it
            wins the first round and 0 elsewhere (also for N = 1).
    """
    winner, softmax = aggregate(probs)
    positions = torch.arange(1, probs.shape[0] + 1, device=probs.device).view(-1, 1, 1)
    kept = softmax[1:] * (winner.unsqueeze(0) == positions)
    labels, _ = aggregate(kept)
    return labels, kept
