"""The trainable part of G-FRTM: gate, template matching, delta generator and refinement network (docs/method.md).

The frozen backbone and the per-object target models are not part of it, so its state_dict() is
exactly a published checkpoint's 'model' entry (weights/checkpoint_keys_<backbone>.tsv).
"""
from __future__ import annotations

from torch import Tensor, nn

from models.config import NetworkConfig
from models.gate import make_gate
from models.refiner import Refiner, resize
from models.template import TemplateMatching

DELTA_KERNEL = 3  # Convert_Diff: 3x3, stride 2, padding 1 -> ceil(n/2), layer4's size


class GFRTM(nn.Module):
    """Everything that is trained; its state_dict() has exactly the published checkpoint keys."""

    def __init__(self, cfg: NetworkConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg if cfg is not None else NetworkConfig()
        width = self.cfg.template_width
        # registration order = the published state_dict order
        self.convGS = make_gate(self.cfg.gate_init_bias, in_channels=width)
        self.Tmatching = TemplateMatching(self.cfg.channels["layer3"] + self.cfg.score_channels, width)
        self.Convert_Diff = nn.Conv2d(width, self.cfg.score_channels, DELTA_KERNEL, stride=2,
                                      padding=DELTA_KERNEL // 2)
        self.refiner = Refiner(self.cfg)

    def make_template(self, layer3: Tensor, mask8: Tensor) -> Tensor:
        """layer3 (1 or B,C3,h8,w8), mask8 (B,1,h8,w8) -> template (B,64,64)."""
        return self.Tmatching.generate(layer3, mask8)

    def match(self, template: Tensor, layer3: Tensor, prev_score: Tensor) -> Tensor:
        """template (B,64,64), layer3 (1 or B,C3,h8,w8), prev_score (B,1,h16,w16) -> tplS (B,64,h8,w8).

        The score is resized bilinearly to layer3's size first.
        """
        return self.Tmatching.match(template, layer3, resize(prev_score, layer3.shape[-2:]))

    def gate_logits(self, tplS: Tensor) -> Tensor:
        """tplS (B,64,h8,w8) -> logits (B,2) = [reuse, compute]."""
        return self.convGS(tplS).flatten(1)

    def delta(self, tplS: Tensor) -> Tensor:
        """tplS (B,64,h8,w8) -> Diff (B,1,h16,w16), the score change at layer4's size."""
        return self.Convert_Diff(tplS)
