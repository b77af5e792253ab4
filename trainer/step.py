"""One training batch of G-FRTM: frozen features, target-model scores, and the gated forward with its losses.

See docs/method.md, "Training". Frame 0 of every sample initialises its template, stored score (the
mask) and previous x (the deep part on the target model's frame-0 score); on
frames 1..N-1 the gate takes a hard straight-through decision g per sample (1 = reuse). Both paths
run for every sample, so the gradient reaches every trainable part; as in the published step, the
gate blends the deep-part output x (and the stored previous x), while the score and the deep
part's inputs are chosen per sample by the decision.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
from torch import Tensor, nn

from models.backbone import Backbone
from models.gate import straight_through
from models.gfrtm import GFRTM
from models.template import mask_to_stride
from trainer.losses import delta_loss, gate_loss, gate_target, mask_iou, segmentation_loss

if TYPE_CHECKING:  # annotations only
    from models.target_model import TargetModel

Features = dict[str, Tensor]


@torch.no_grad()
def frozen_features(backbone: Backbone, images: Tensor) -> list[Features]:
    """Backbone features of every frame: images (B,N,3,H,W) uint8 -> N dicts of (B,C,h,w) for layer2..layer5."""
    feats = []
    for t in range(images.shape[1]):
        shallow = backbone.shallow(backbone.normalize(images[:, t]))
        deep = backbone.deep(shallow["layer3"])
        feats.append({"layer2": shallow["layer2"], "layer3": shallow["layer3"], **deep})
    return feats


@torch.no_grad()
def target_scores(models: Sequence[TargetModel], feats: list[Features]) -> Tensor:
    """Scores of each sample's frozen target model (fitted or read from the cache) on the
    un-augmented frames 0..N-1 -> (B,N,1,h16,w16). Frame 0's score feeds the first previous x."""
    layer4 = torch.stack([f["layer4"] for f in feats], dim=1)  # (B,N,C,h16,w16)
    return torch.stack([model.score(layer4[b]) for b, model in enumerate(models)])


def forward_sequence(net: GFRTM, feats: list[Features], scores: Tensor, labels: Tensor, margin: float,
                     m2: float) -> dict[str, Tensor]:
    """Gated forward over a batch of sequences and the summed per-frame losses.

    Args:
        net: G-FRTM in train mode.
        feats: N dicts of frozen backbone features (B,C,h,w) (see `frozen_features`).
        scores: (B,N,1,h16,w16) target-model scores of frames 0..N-1.
        labels: (B,N,1,H,W) float object masks.
        margin: cap on the gate's reuse target (`reuse_margin`).
        m2: dead zone of the gate loss.
    Returns:
        'loss' (total, with gradient); detached: 'seg', 'delta', 'gate' (summed over frames),
        'iou' (mean IoU of mask > 0.5 vs label; 1 where both are empty), 'reuse_rate';
        per frame 1..N-1: 'masks' (B,N-1,1,H,W) probabilities, 'diffs' (B,N-1,1,h16,w16),
        'decisions' (B,N-1) 1 = reuse, 'gate_targets' (B,N-1) the capped IoU targets.
    """
    image_size = tuple(labels.shape[-2:])
    size8 = tuple(feats[0]["layer3"].shape[-2:])
    size16 = tuple(feats[0]["layer4"].shape[-2:])
    label0 = labels[:, 0]
    template = net.make_template(feats[0]["layer3"], mask_to_stride(label0, size8, training=True))
    stored = mask_to_stride(label0, size16, training=True)
    last_deep = {k: feats[0][k] for k in ("layer4", "layer5")}  # deep features of the last full-path frame
    # As at inference, the first previous x is the deep part on frame 0's target-model score (the
    # stored score, which the matching reads, is the mask).
    prev_x = net.refiner.deep(scores[:, 0], last_deep)
    last_full_label = label0

    seg_sum = delta_sum = gate_sum = labels.new_zeros(())
    masks, diffs, decisions, targets, ious = [], [], [], [], []
    for t in range(1, labels.shape[1]):
        label = labels[:, t]
        tpl = net.match(template, feats[t]["layer3"], stored)
        decision, p = straight_through(net.gate_logits(tpl))
        g = decision[:, 0].view(-1, 1, 1, 1)  # 1 = reuse; its value is 0 or 1, its gradient that of p
        reuse = g.detach() > 0.5
        diff = net.delta(tpl)
        s_full = scores[:, t]
        # The deep part runs on the whole batch, so its BatchNorm's batch statistics cover every
        # sample, as in the published step: full-path samples bring this frame's features and
        # target-model score, reuse samples those of their last full-path frame and the stored score.
        deep_feats = {k: torch.where(reuse, last_deep[k], feats[t][k]) for k in last_deep}
        x_deep = net.refiner.deep(torch.where(reuse, stored, s_full), deep_feats)
        # Only x is blended by the gate (the gate's gradient comes through it); the score is chosen.
        x = g * net.refiner.translate(prev_x, diff) + (1 - g) * x_deep
        score = torch.where(reuse, stored + diff, s_full)
        logits = net.refiner.shallow(x, score, {"layer3": feats[t]["layer3"], "layer2": feats[t]["layer2"]},
                                     image_size)

        target = gate_target(label, last_full_label, margin)
        seg_sum = seg_sum + segmentation_loss(logits, label)
        delta_sum = delta_sum + delta_loss(diff, mask_to_stride(label, size16, training=True), stored)
        gate_sum = gate_sum + gate_loss(p, target, m2)

        # State for the next frame. The previous x is blended by g, so the gradient flows through it
        # as in the published step. Deviation (previous x): with the inference rule - full-path
        # samples take the new x, reuse samples keep theirs (the published step has the gate inverted).
        prev_x = g * prev_x + (1 - g) * x_deep
        stored = torch.where(reuse, stored, s_full)
        last_deep = deep_feats
        last_full_label = torch.where(reuse, last_full_label, label)

        mask = torch.sigmoid(logits.detach())
        masks.append(mask)
        diffs.append(diff.detach())
        decisions.append(reuse.flatten().to(labels.dtype))
        targets.append(target)
        ious.append(mask_iou(mask, label, empty=1.0))

    return {
        "loss": seg_sum + delta_sum + gate_sum,
        "seg": seg_sum.detach(),
        "delta": delta_sum.detach(),
        "gate": gate_sum.detach(),
        "iou": torch.stack(ious).mean(),
        "reuse_rate": torch.stack(decisions).mean(),
        "masks": torch.stack(masks, dim=1),
        "diffs": torch.stack(diffs, dim=1),
        "decisions": torch.stack(decisions, dim=1),
        "gate_targets": torch.stack(targets, dim=1),
    }


class SequenceForward(nn.Module):
    """G-FRTM behind one `forward` that covers a whole training batch.

    DistributedDataParallel synchronises gradients only for work done inside its wrapped
    module's forward, so the per-frame loop must live in one forward call. `self.net` holds
    the parameters; checkpoints save `net.state_dict()` (the published key layout).
    """

    def __init__(self, net: GFRTM) -> None:
        super().__init__()
        self.net = net

    def forward(self, feats: list[Features], scores: Tensor, labels: Tensor, margin: float,
                m2: float) -> dict[str, Tensor]:
        return forward_sequence(self.net, feats, scores, labels, margin, m2)
