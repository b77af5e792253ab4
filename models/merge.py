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

How it is computed: the same arithmetic on the values that matter, a fraction of the passes over the
frame (the kept maps and labels come out bit for bit as from the two full rounds). With m = max_k of
the clamped p_k, the background is 1 - m and every odds value grows with its probability, so:
- the first round's winner is the first object with p_k = m where m > 0.5, else the background
  (at m = 0.5 background and object tie, and ties go to the lower index, the background);
- the winner's odds are the peak of the softmax, so its softmax value is 1 / sum_j exp(odds_j - peak),
  the very sum the aggregation forms, in the same order;
- in the second round only the winner holds a value (the others are clamped to 1e-7), against a
  background of 1 minus it: the label is the winner where its kept value exceeds 0.5, else 0.
One object needs no maximum and no sum: its kept value is 1 / (exp(background odds - odds) + 1)
where p > 0.5, its label p > 0.5. Everything runs as float arithmetic on whole maps (boolean maps,
`where` and reductions over the object dimension are several times slower on the CPU), mostly in place.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

_EPS = 1e-7
MAX_LABEL_ID = 255  # label maps with object ids are uint8 (the DAVIS annotation format)


# exp of an argument below about -87.3 is a denormal or 0, and above 88.7 it overflows; the CPU's exp
# computes those some 20x more slowly. From -87 on, exp is below 1.7e-38, a term that no sum
# containing the winner's exp(0) = 1 can notice, so arguments are floored there. Positive arguments
# only occur for one object where it loses to the background, whose kept value is 0 whatever they are.
_EXP_RANGE = (-87.0, 80.0)


def _exp_(x: Tensor) -> Tensor:
    """exp in place, of the argument clamped to _EXP_RANGE."""
    return x.clamp_(*_EXP_RANGE).exp_()


def merge_objects(probs: Tensor, ids: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """Merge the soft masks of the objects of one frame.

    Args:
        probs: (N,H,W) foreground probability of each of N >= 1 objects (computed in float32).
        ids: optional object id of each of the N objects (1..255).
    Returns:
        labels: (H,W): without ids, long positions (0 = background, k = the k-th object, 1-based);
            with ids, uint8 object ids (0 = background).
        kept: (N,H,W) float32, what enters each object's target-model memory: its softmax value
            where it wins the first round and 0 elsewhere (also for N = 1).
    """
    if probs.dim() != 3 or probs.shape[0] < 1:
        raise ValueError(f"merge_objects expects probabilities of shape (N,H,W) with N >= 1, got {tuple(probs.shape)}")
    if ids is not None:
        ids = [int(i) for i in ids]
        if len(ids) != probs.shape[0]:
            raise ValueError(f"merge_objects got {len(ids)} ids for {probs.shape[0]} objects")
        if any(not 1 <= i <= MAX_LABEL_ID for i in ids):
            raise ValueError(f"object ids must lie in 1..{MAX_LABEL_ID} for a uint8 label map, got {ids}")
    values = list(range(1, probs.shape[0] + 1)) if ids is None else ids
    probs = probs.float()
    if probs.shape[0] == 1:
        won, kept = _merge_one(probs[0])
        labels = won if values[0] == 1 else won.mul_(values[0])
    else:
        labels, kept = _merge_several(probs, values)
    return labels.to(torch.long if ids is None else torch.uint8), kept


def _merge_one(p: Tensor) -> tuple[Tensor, Tensor]:
    """p (H,W) -> (won (H,W) float 0/1, kept (1,H,W)).

    Where p > 0.5 the clamp to 1 - 1e-7 only matters above it, where the kept value is 1 in any case
    (the background's exp term is below 1e-38), so p is used as it is; there, 1 - p and 1 - (1 - p)
    are exact, so the background's odds are (1 - p) / p, and the kept value 1 / (exp(background odds
    - odds) + 1) is the two-way softmax's. Elsewhere the value is multiplied by 0.
    """
    rest = torch.rsub(p, 1)
    kept = torch.div(rest, p).addcdiv_(p, rest, value=-1)  # background odds - odds
    _exp_(kept).add_(1).reciprocal_()
    won = torch.gt(p, 0.5, out=rest)  # float 0/1, in a buffer no longer needed
    return won, kept.mul_(won).unsqueeze(0)


def _merge_several(probs: Tensor, values: list[int]) -> tuple[Tensor, Tensor]:
    """probs (N,H,W), values: the label of each object -> (labels (H,W) float, kept (N,H,W)).

    Only pixels where an object wins (best > 0.5) keep anything, so the softmax is computed for
    them: there 1 - (1 - best) = best exactly, the background's odds are (1 - best) / best, and the
    peak is the best object's odds. Elsewhere the values are finite and multiplied by 0. Each object
    is done in one sweep (its exp term, then its winner indicator over its clamped map), in few buffers.
    """
    kept = probs.clamp(_EPS, 1 - _EPS)  # the clamped probabilities; then, object by object, the kept maps
    best = kept.amax(dim=0)
    # exp(odds - peak) of the background, then of each object: with -peak = best / (best - 1) and
    # c - 1 = -(1 - c), x - c / (c - 1) is the odds minus the peak in one pass (addcdiv), rounded as
    # the odds then the difference
    minus_background = torch.sub(best, 1)
    minus_peak = torch.div(best, minus_background)
    total = _exp_(torch.addcdiv(minus_peak, minus_background, best, value=-1, out=minus_background))
    # From here `best` only marks who wins: lifting it by 2 (above any probability) where no object
    # wins, and where an object has claimed the pixel, leaves it reachable only by the first object
    # with the best value at a pixel some object wins.
    best.add_(torch.le(best, 0.5, out=torch.empty_like(best)), alpha=2)
    term = torch.empty_like(best)
    labels = torch.zeros_like(best)
    last = len(values) - 1
    for k, value in enumerate(values):
        clamped = kept[k]
        torch.sub(clamped, 1, out=term)
        total.add_(_exp_(torch.addcdiv(minus_peak, clamped, term, value=-1, out=term)))
        indicator = torch.eq(clamped, best, out=clamped)  # the first object reaching the best
        if k < last:
            best.add_(indicator, alpha=2)
        labels.add_(indicator, alpha=value)
    share = total.reciprocal_()  # the winner's softmax value (its exp term is exp(0) = 1)
    kept.mul_(share)
    labels.mul_(torch.gt(share, 0.5, out=term))  # the second round
    return labels, kept
