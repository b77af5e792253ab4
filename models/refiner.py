"""FRTM's refinement network (SegNetwork) plus G-FRTM's refine translator (DESIGN 3.4).

Refinement layers run deepest first (layer5, layer4, layer3, layer2). The deep part (layer5, layer4)
produces the stride-16 map x; the translator predicts x on reuse frames from the previous x and the
score change; the shallow part (layer3, layer2) and the upsampler turn x into mask logits.

Backbone features may have batch 1 while scores have batch B (the objects of one frame): the
feature-only work (TSE reduce, its global pool) runs once at batch 1 and is expanded, not copied.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.config import NetworkConfig

# Widths and kernels below are fixed by the published checkpoint layout, not tunable.
TRANSLATOR_WIDTH = 48  # per dilated branch
TRANSLATOR_DILATIONS = (1, 2, 3)
TRANSLATOR_BLEND_KERNEL = 5
UPSAMPLER_WIDTH = 32


def resize(x: Tensor, size) -> Tensor:
    """Bilinear (align_corners=False) resize of (B,C,h,w) to `size`; a no-op when the size already matches."""
    size = tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def pyramid_upsample2x(x: Tensor) -> Tensor:
    """(B,C,h,w) -> (B,C,2h,2w) bicubic pyramid upsampling: cubic kernel a = -0.75, border replicated.

    F.interpolate's bicubic mode with align_corners=False uses exactly that kernel and clamps
    sample positions at the border (tests/test_network.py checks it against explicit taps).
    """
    return F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)


def _conv3x3(cin: int, cout: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=bias)


class TSE(nn.Module):
    """Target segmentation encoder: reduce features, attach the score, transform.

    The published LeakyReLU(0) activations are plain ReLUs (parameter-free, same indices).
    """

    def __init__(self, feature_channels: int, oc: int, ic: int) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(feature_channels, oc, 1), nn.ReLU(), nn.Conv2d(oc, oc, 1))
        width = oc + ic
        self.transform = nn.Sequential(
            _conv3x3(width, width), nn.ReLU(), _conv3x3(width, width), nn.ReLU(), _conv3x3(width, oc), nn.ReLU()
        )

    def forward(self, features: Tensor, score: Tensor, prev: Tensor | None) -> tuple[Tensor, Tensor]:
        """features (1 or B,C,h,w), score (B,ic,*,*), prev (B,oc,*,*) or None -> (h (B,oc,h,w), hpool).

        hpool is the global mean of the reduced features (B,oc,1,1) for the first layer, else prev.
        """
        batch = score.shape[0]
        reduced = self.reduce(features)
        hpool = reduced.mean(dim=(2, 3), keepdim=True).expand(batch, -1, -1, -1) if prev is None else prev
        reduced = reduced.expand(batch, -1, -1, -1)
        h = self.transform(torch.cat([reduced, resize(score, reduced.shape[-2:])], dim=1))
        return h, hpool


class RRB(nn.Module):
    """Residual refinement block: 1x1 conv, plus a (conv, BN, ReLU, conv) residual, then ReLU."""

    def __init__(self, oc: int) -> None:
        super().__init__()
        self.conv1x1 = nn.Conv2d(oc, oc, 1)
        self.bblock = nn.Sequential(_conv3x3(oc, oc), nn.BatchNorm2d(oc), nn.ReLU(), _conv3x3(oc, oc, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1x1(x)
        return torch.relu(x + self.bblock(x))


class CAB(nn.Module):
    """Channel attention block: gate the shallower map by both maps' global context, add the deeper map."""

    def __init__(self, oc: int) -> None:
        super().__init__()
        self.convreluconv = nn.Sequential(nn.Conv2d(2 * oc, oc, 1), nn.ReLU(), nn.Conv2d(oc, oc, 1))

    def forward(self, deeper: Tensor, shallower: Tensor) -> Tensor:
        """deeper (B,oc,h',w') or a pooled (B,oc,1,1), shallower (B,oc,h,w) -> (B,oc,h,w)."""
        shallow_pool = shallower.mean(dim=(2, 3), keepdim=True)
        deep_pool = deeper if deeper.shape[-2:] == (1, 1) else deeper.mean(dim=(2, 3), keepdim=True)
        attention = torch.sigmoid(self.convreluconv(torch.cat([shallow_pool, deep_pool], dim=1)))
        return shallower * attention + resize(deeper, shallower.shape[-2:])


class MultiDilationConv(nn.Module):
    """Three parallel dilated 3x3 convs (dilations 1, 2, 3), concatenated and blended by a 5x5 conv."""

    def __init__(self, cin: int, oc: int) -> None:
        super().__init__()
        d1, d2, d3 = TRANSLATOR_DILATIONS
        self.conv1 = nn.Conv2d(cin, TRANSLATOR_WIDTH, 3, padding=d1, dilation=d1)
        self.conv2 = nn.Conv2d(cin, TRANSLATOR_WIDTH, 3, padding=d2, dilation=d2)
        self.conv3 = nn.Conv2d(cin, TRANSLATOR_WIDTH, 3, padding=d3, dilation=d3)
        self.convBlend = nn.Conv2d(3 * TRANSLATOR_WIDTH, oc, TRANSLATOR_BLEND_KERNEL,
                                   padding=TRANSLATOR_BLEND_KERNEL // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.convBlend(torch.cat([self.conv1(x), self.conv2(x), self.conv3(x)], dim=1))


class RefineTranslator(nn.Module):
    """'Diff_process': previous x and the score change Diff -> this frame's x (reuse frames)."""

    def __init__(self, oc: int, ic: int) -> None:
        super().__init__()
        self.conv_multi = MultiDilationConv(oc + ic, oc)
        self.postRBB = RRB(oc)

    def forward(self, prev_x: Tensor, diff: Tensor) -> Tensor:
        """prev_x (B,oc,h16,w16), diff (B,ic,h16,w16) -> x (B,oc,h16,w16)."""
        return self.postRBB(self.conv_multi(torch.cat([prev_x, diff], dim=1)))


class Upsampler(nn.Module):
    """Stride-4 map -> image-size logits: bicubic 2x, conv+ReLU, bicubic 2x, bilinear to size, conv."""

    def __init__(self, oc: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(oc, UPSAMPLER_WIDTH)
        self.conv2 = _conv3x3(UPSAMPLER_WIDTH, 1)

    def forward(self, x: Tensor, image_size) -> Tensor:
        """x (B,oc,h,w) -> logits (B,1,H,W)."""
        x = torch.relu(self.conv1(pyramid_upsample2x(x)))
        x = pyramid_upsample2x(x)
        return self.conv2(resize(x, image_size))


class Refiner(nn.Module):
    """The refinement network; child names follow the published checkpoints ('refiner.*')."""

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        oc, ic = cfg.refine_channels, cfg.score_channels
        layers = cfg.refine_layers
        self.deep_layers = tuple(cfg.deep_refine_layers)
        self.shallow_layers = tuple(layer for layer in layers if layer not in self.deep_layers)
        # registration order = the published state_dict order
        self.TSE = nn.ModuleDict({layer: TSE(cfg.channels[layer], oc, ic) for layer in layers})
        self.RRB1 = nn.ModuleDict({layer: RRB(oc) for layer in layers})
        self.CAB = nn.ModuleDict({layer: CAB(oc) for layer in layers})
        self.RRB2 = nn.ModuleDict({layer: RRB(oc) for layer in layers})
        self.Diff_process = RefineTranslator(oc, ic)
        self.project = Upsampler(oc)

    def _refine(self, layers: tuple[str, ...], x: Tensor | None, score: Tensor, feats: dict[str, Tensor]) -> Tensor:
        for layer in layers:
            h, hpool = self.TSE[layer](feats[layer], score, x)
            h = self.RRB1[layer](h)
            h = self.CAB[layer](hpool, h)
            x = self.RRB2[layer](h)
        return x

    def deep(self, score: Tensor, feats: dict[str, Tensor]) -> Tensor:
        """score (B,1,h16,w16), feats 'layer5', 'layer4' (batch 1 or B) -> x (B,64,h16,w16)."""
        return self._refine(self.deep_layers, None, score, feats)

    def translate(self, prev_x: Tensor, diff: Tensor) -> Tensor:
        """prev_x (B,64,h16,w16), diff (B,1,h16,w16) -> x (B,64,h16,w16)."""
        return self.Diff_process(prev_x, diff)

    def shallow(self, x: Tensor, score: Tensor, feats: dict[str, Tensor], image_size) -> Tensor:
        """x (B,64,h16,w16), score (B,1,h16,w16), feats 'layer3', 'layer2' (batch 1 or B) -> logits (B,1,H,W)."""
        return self.project(self._refine(self.shallow_layers, x, score, feats), image_size)
