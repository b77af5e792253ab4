"""The training step against the published step's rules, computed by hand on a tiny batch.

The network is replaced by scalar stand-ins with the same interface (a batch-mean in the deep part
plays BatchNorm's role, so the make-up of the deep part's batch matters), and the loss and every
parameter's gradient of `forward_sequence` are compared with an independent per-sample
computation of the published rules:
- segmentation loss: BCE of sigmoid(logits), logs clamped at -100 (torch's BCELoss);
- only x is blended by the gate value g (straight-through); the score is chosen by the decision;
- the deep part's batch takes, for reuse samples, the features of their last full-path frame and
  the stored score;
- the stored previous x is blended by g too, so the gradient flows through it (with the project's
  documented inference rule: full-path samples take the new x, reuse samples keep theirs);
- the first previous x is the deep part on frame 0's target-model score, not on the mask.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from trainer.losses import segmentation_loss
from trainer.step import forward_sequence

B, N = 3, 3
PARAMS = {"a": 0.7, "w": 1.3, "d": 0.4, "u": 0.9, "c": 0.2, "v": -0.6, "k": 1.1}


class _Refiner(nn.Module):
    def __init__(self, p: dict[str, nn.Parameter]) -> None:
        super().__init__()
        self.p = p

    def deep(self, score: Tensor, feats: dict[str, Tensor]) -> Tensor:
        z = self.p["u"] * (score + feats["layer4"] + feats["layer5"])
        return z - z.mean(dim=0, keepdim=True) + self.p["c"]  # batch statistics, as BatchNorm's in training

    def translate(self, prev_x: Tensor, diff: Tensor) -> Tensor:
        return prev_x + self.p["v"] * diff

    def shallow(self, x: Tensor, score: Tensor, feats: dict[str, Tensor], image_size) -> Tensor:
        return self.p["k"] * x + score + feats["layer2"]  # (B,1,1,1) + (B,1,1,2) -> (B,1,1,2)


class _Net(nn.Module):
    """forward_sequence's view of GFRTM, with one scalar parameter per part."""

    def __init__(self) -> None:
        super().__init__()
        self.p = nn.ParameterDict({k: nn.Parameter(torch.tensor(v, dtype=torch.float64)) for k, v in PARAMS.items()})
        self.refiner = _Refiner(self.p)

    def make_template(self, layer3: Tensor, mask8: Tensor) -> Tensor:
        return torch.ones(layer3.shape[0], 1, 1, dtype=layer3.dtype)

    def match(self, template: Tensor, layer3: Tensor, stored: Tensor) -> Tensor:
        return self.p["a"] * layer3 + stored

    def gate_logits(self, tpl: Tensor) -> Tensor:
        return torch.cat([self.p["w"] * tpl.flatten(1), torch.zeros_like(tpl.flatten(1))], dim=1)

    def delta(self, tpl: Tensor) -> Tensor:
        return self.p["d"] * tpl


def _batch():
    """Features, target-model scores and labels of 3 samples x 3 frames on a 1x2 image.

    layer3 values are picked so that the gate (reuse iff w * (a * layer3 + stored) > 0) mixes the
    decisions: sample 0 reuses then computes, sample 1 always computes, sample 2 always reuses.
    """
    d = dict(dtype=torch.float64)
    layer3 = torch.tensor([[0.0, 2.0, -3.0], [0.0, -2.0, -2.0], [0.0, 1.5, 1.0]], **d)  # (B,N)
    layer4 = torch.tensor([[0.3, -0.2, 0.5], [0.1, 0.4, -0.3], [-0.5, 0.2, 0.6]], **d)
    layer5 = torch.tensor([[0.2, 0.1, -0.4], [-0.3, 0.5, 0.2], [0.4, -0.1, 0.3]], **d)
    layer2 = torch.tensor([[[0.1, -0.3], [0.5, 0.2], [-0.2, 0.4]], [[0.0, 0.3], [-0.4, 0.1], [0.2, -0.5]],
                           [[0.3, 0.3], [0.1, -0.2], [-0.3, 0.0]]], **d)  # (B,N,2 pixels)
    feats = [{"layer2": layer2[:, t].view(B, 1, 1, 2), "layer3": layer3[:, t].view(B, 1, 1, 1),
              "layer4": layer4[:, t].view(B, 1, 1, 1), "layer5": layer5[:, t].view(B, 1, 1, 1)} for t in range(N)]
    scores = torch.tensor([[-0.7, 0.8, -0.6], [0.3, -1.2, 0.9], [1.1, 0.5, 1.4]], **d).view(B, N, 1, 1, 1)
    labels = torch.tensor([[[1, 1], [1, 0], [0, 1]], [[1, 0], [1, 1], [0, 0]], [[0, 1], [0, 1], [1, 1]]], **d)
    return feats, scores, labels.view(B, N, 1, 1, 2)


def _by_hand(net: _Net, feats, scores, labels, margin: float, blend_state: bool = True,
             score_first_x: bool = True):
    """The published rules, sample by sample (m2 = 0). Returns (loss, reuse decisions per frame)."""
    p = net.p
    y = labels[:, :, 0, 0, :]  # (B,N,2)
    f = {k: [[feats[t][k].flatten()[b] for t in range(N)] for b in range(B)] for k in ("layer3", "layer4", "layer5")}
    l2 = [[feats[t]["layer2"][b, 0, 0] for t in range(N)] for b in range(B)]
    stored = [y[b, 0].mean() for b in range(B)]  # bilinear 1x2 -> 1x1 is the mean
    last = [(f["layer4"][b][0], f["layer5"][b][0]) for b in range(B)]
    last_label = [y[b, 0] for b in range(B)]

    def deep(inputs):  # inputs: per sample (score, layer4, layer5)
        z = [p["u"] * (s + a + b) for s, a, b in inputs]
        mean = sum(z) / len(z)
        return [zi - mean + p["c"] for zi in z]

    first_score = [scores[b, 0].flatten()[0] for b in range(B)] if score_first_x else stored
    prev_x = deep([(first_score[b], *last[b]) for b in range(B)])
    seg = delta = gate = 0.0
    decisions = []
    for t in range(1, N):
        tpl = [p["a"] * f["layer3"][b][t] + stored[b] for b in range(B)]
        pr = [torch.sigmoid(p["w"] * tpl[b]) for b in range(B)]  # softmax of [w tpl, 0], reuse column
        reuse = [bool(pr[b] > 0.5) for b in range(B)]
        g = [pr[b] + (float(reuse[b]) - pr[b]).detach() for b in range(B)]  # straight-through
        diff = [p["d"] * tpl[b] for b in range(B)]
        s_full = [scores[b, t].flatten()[0] for b in range(B)]
        cur = [(f["layer4"][b][t], f["layer5"][b][t]) for b in range(B)]
        x_deep = deep([(stored[b], *last[b]) if reuse[b] else (s_full[b], *cur[b]) for b in range(B)])
        x = [g[b] * (prev_x[b] + p["v"] * diff[b]) + (1 - g[b]) * x_deep[b] for b in range(B)]
        score = [stored[b] + diff[b] if reuse[b] else s_full[b] for b in range(B)]
        for b in range(B):
            for j in range(2):
                q = torch.sigmoid(p["k"] * x[b] + score[b] + l2[b][t][j])
                seg = seg - (y[b, t, j] * torch.log(q) + (1 - y[b, t, j]) * torch.log(1 - q)) / (2 * B)
            delta = delta + (diff[b] - (y[b, t].mean() - stored[b])) ** 2 / B
            inter = float((y[b, t] * last_label[b]).sum())
            union = float(((y[b, t] + last_label[b]) > 0).sum())
            s = min(inter / union if union else 0.0, margin)
            gate = gate + ((pr[b] - s) ** 2 + ((1 - pr[b]) - (1 - s)) ** 2) / (2 * B)
        for b in range(B):
            if blend_state:
                prev_x[b] = g[b] * prev_x[b] + (1 - g[b]) * x_deep[b]
            else:  # the detached state this project used before
                prev_x[b] = prev_x[b] if reuse[b] else x_deep[b]
            if not reuse[b]:
                stored[b], last[b], last_label[b] = s_full[b], cur[b], y[b, t]
        decisions.append(reuse)
    return seg + delta + gate, decisions


def _gradients(loss: Tensor, net: _Net) -> dict[str, float]:
    grads = torch.autograd.grad(loss, list(net.p.values()))
    return {k: g.item() for k, g in zip(net.p.keys(), grads)}


@pytest.mark.parametrize("margin", [1.0, 0.25])  # exact in float32, as the IoU targets are
def test_loss_and_gradients_of_one_step_equal_the_published_rules_by_hand(margin):
    feats, scores, labels = _batch()
    net = _Net()
    out = forward_sequence(net, feats, scores, labels, margin=margin, m2=0.0)
    expected, decisions = _by_hand(net, feats, scores, labels, margin)
    # the batch exercises every case: reuse then full, always full, always reuse
    assert decisions == [[True, False, True], [False, False, True]]
    assert out["decisions"].tolist() == [[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-12)
    got, want = _gradients(out["loss"], net), _gradients(expected, net)
    assert got == pytest.approx(want, rel=1e-10, abs=1e-12)
    # the gradient that reaches the gate through the blended previous x is part of it
    detached, _ = _by_hand(net, feats, scores, labels, margin, blend_state=False)
    assert _gradients(detached, net)["w"] != pytest.approx(want["w"], rel=1e-3)
    # the first previous x from the mask (this project's earlier rule) is told apart too
    from_mask, _ = _by_hand(net, feats, scores, labels, margin, score_first_x=False)
    assert from_mask.item() != pytest.approx(expected.item(), rel=1e-6)


def test_segmentation_loss_is_bce_of_the_probabilities_with_logs_clamped_at_minus_100():
    logits = torch.tensor([[[[0.3, -2.0, 20.0, -200.0]]]])
    label = torch.tensor([[[[1.0, 0.0, 0.0, 1.0]]]])
    # by hand: -log(sigmoid(0.3)), -log(1 - sigmoid(-2)), then sigmoid(20) rounds to 1 in float32
    # (log(1 - 1) = -inf, clamped: 100) and sigmoid(-200) to 0 (log 0 clamped: 100)
    expected = (math.log(1 + math.exp(-0.3)) + math.log(1 + math.exp(-2.0)) + 100 + 100) / 4
    assert segmentation_loss(logits, label).item() == pytest.approx(expected, rel=1e-6)
    # BCE with logits would give 20 and 200 for the last two
    with_logits = torch.nn.functional.binary_cross_entropy_with_logits(logits, label).item()
    assert with_logits == pytest.approx((expected * 4 - 200 + 220) / 4, rel=1e-5)
    assert segmentation_loss(torch.tensor([[[[float("nan"), 0.0]]]]), torch.ones(1, 1, 1, 2)).isnan()
