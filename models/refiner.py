"""FRTM's refinement network (SegNetwork) plus G-FRTM's refine translator.

Refinement layers run deepest first (layer5, layer4, layer3, layer2). The deep part (layer5, layer4)
produces the stride-16 map x; the translator predicts x on reuse frames from the previous x and the
score change; the shallow part (layer3, layer2) and the upsampler turn x into mask logits.

Backbone features may have batch 1 while scores have batch B (the objects of one frame): the
feature-only work (TSE reduce, its global pool, the feature part of the first transform conv) runs
once at batch 1 and is broadcast, not copied; `Refiner.encode` keeps it for several calls.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.config import NetworkConfig

# Widths and kernels below are fixed by the published checkpoint layout, not tunable.
TRANSLATOR_WIDTH = 48  # per dilated branch
TRANSLATOR_DILATIONS = (1, 2, 3)
TRANSLATOR_BLEND_KERNEL = 5
UPSAMPLER_WIDTH = 32
CUBIC_A = -0.75  # the bicubic kernel of the pyramid upsampling (PyTorch's and OpenCV's)


def resize(x: Tensor, size) -> Tensor:
    """Bilinear (align_corners=False) resize of (B,C,h,w) to `size`; a no-op when the size already matches."""
    size = tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _cubic_taps(t: float) -> tuple[float, float, float, float]:
    """Weights of the 4 input samples around a position with fraction t, cubic convolution a = -0.75."""
    a = CUBIC_A

    def near(d: float) -> float:  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d: float) -> float:  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return far(t + 1), near(t), near(1 - t), far(2 - t)


# 2x with half-pixel centres: output 2i samples input i - 0.25 (taps i-2..i+1), output 2i+1 samples
# i + 0.25 (taps i-1..i+2).
EVEN_TAPS = _cubic_taps(0.75)
ODD_TAPS = _cubic_taps(0.25)


def _transposed_kernel() -> Tensor:
    """(8,) kernel of a stride-2 transposed convolution that interleaves the two phases:
    output o gets input i with weight k[o + 7 - 2i] (see `pyramid_upsample2x`)."""
    k = torch.zeros(8, dtype=torch.float64)
    k[7], k[5], k[3], k[1] = EVEN_TAPS
    k[6], k[4], k[2], k[0] = ODD_TAPS
    return k


UPSAMPLE_KERNEL_1D = _transposed_kernel()


@lru_cache(maxsize=32)
def _depthwise_upsample_kernel(channels: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(channels, 1, 8, 8) weight of the transposed convolution, built once per channel count, dtype and device."""
    with torch.inference_mode(False):  # an ordinary tensor: the cache outlives the inference_mode that asked
        k = UPSAMPLE_KERNEL_1D.to(device=device)
        return (k[:, None] * k[None, :]).to(dtype).expand(channels, 1, 8, 8).contiguous()


def pyramid_upsample2x(x: Tensor) -> Tensor:
    """(B,C,h,w) -> (B,C,2h,2w) bicubic pyramid upsampling: cubic kernel a = -0.75, border replicated.

    F.interpolate's bicubic mode with align_corners=False computes exactly this (tests/test_network.py
    checks it against explicit taps); it runs when autograd records. Otherwise the same sums run as
    one depthwise stride-2 transposed convolution over the border-replicated input (the 4 taps of
    each output phase interleaved in an 8x8 kernel; padding 7 crops the replicated margin), several
    times faster on the CPU. The memory format of the input is kept.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    channels = x.shape[1]
    kernel = _depthwise_upsample_kernel(channels, x.dtype, x.device)
    padded = F.pad(x, (2, 2, 2, 2), mode="replicate")
    return F.conv_transpose2d(padded, kernel, stride=2, padding=7, groups=channels)


def _conv3x3(cin: int, cout: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=bias)


@dataclass
class EncodedFeatures:
    """The feature-only part of a TSE (no score involved): computed once per frame, shared by objects.

    shared: transform's first conv applied to the reduced features, bias included (N,oc+ic,h,w).
    pooled: global mean of the reduced features (N,oc,1,1).
    """

    shared: Tensor
    pooled: Tensor


class TSE(nn.Module):
    """Target segmentation encoder: reduce features, attach the score, transform.

    The published LeakyReLU(0) activations are plain ReLUs (parameter-free, same indices).
    transform's first conv over cat(reduced features, score) is computed as its feature part
    (`encode`, once per frame) plus its score part (per object): the same sum, regrouped.
    """

    def __init__(self, feature_channels: int, oc: int, ic: int) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(feature_channels, oc, 1), nn.ReLU(), nn.Conv2d(oc, oc, 1))
        width = oc + ic
        self.transform = nn.Sequential(
            _conv3x3(width, width), nn.ReLU(), _conv3x3(width, width), nn.ReLU(), _conv3x3(width, oc), nn.ReLU()
        )

    def encode(self, features: Tensor) -> EncodedFeatures:
        """features (N,C,h,w) -> their EncodedFeatures."""
        reduced = self.reduce(features)
        first, oc = self.transform[0], reduced.shape[1]
        shared = F.conv2d(reduced, first.weight[:, :oc], first.bias, padding=1)
        return EncodedFeatures(shared, reduced.mean(dim=(2, 3), keepdim=True))

    def forward(self, features: Tensor | EncodedFeatures, score: Tensor, prev: Tensor | None) -> tuple[Tensor, Tensor]:
        """features (1 or B,C,h,w) or their encoding, score (B,ic,*,*), prev (B,oc,*,*) or None
        -> (h (B,oc,h,w), hpool).

        hpool is the global mean of the reduced features (B,oc,1,1) for the first layer, else prev.
        """
        encoded = features if isinstance(features, EncodedFeatures) else self.encode(features)
        batch = score.shape[0]
        hpool = encoded.pooled.expand(batch, -1, -1, -1) if prev is None else prev
        first, oc = self.transform[0], encoded.pooled.shape[1]
        shared = encoded.shared
        own = F.conv2d(resize(score, shared.shape[-2:]).to(shared.dtype), first.weight[:, oc:], padding=1)
        return self.transform[1:](shared + own), hpool


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
    """Stride-4 map -> image-size logits: bicubic 2x, conv+ReLU, bicubic 2x, bilinear to size, conv.

    The last conv (32 -> 1 channels, 3x3) runs before the last two resizings, which are linear and
    act on each channel alike: its channel sum is taken per kernel tap at stride 2 (9 maps instead
    of 32 channels get resized), and the taps' spatial shifts are added at image size. Same value,
    a fraction of the image-size work.
    """

    def __init__(self, oc: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(oc, UPSAMPLER_WIDTH)
        self.conv2 = _conv3x3(UPSAMPLER_WIDTH, 1)

    def forward(self, x: Tensor, image_size) -> Tensor:
        """x (B,oc,h,w) -> logits (B,1,H,W)."""
        x = torch.relu(self.conv1(pyramid_upsample2x(x)))
        # (9,32,1,1): output k = (dy+1)*3 + (dx+1) is the channel sum of the tap at offset (dy,dx)
        taps = self.conv2.weight.permute(2, 3, 1, 0).reshape(9, -1, 1, 1)
        per_tap = resize(pyramid_upsample2x(F.conv2d(x, taps.to(x.dtype))), image_size).contiguous()
        height, width = image_size
        logits = self.conv2.bias.to(x.dtype).view(1, 1, 1, 1).expand(x.shape[0], 1, height, width).clone()
        for k in range(9):
            dy, dx = k // 3 - 1, k % 3 - 1
            # output (i, j) adds tap k's map at (i + dy, j + dx) where that is inside: the conv's zero padding
            out = logits[:, :, max(0, -dy):height - max(0, dy), max(0, -dx):width - max(0, dx)]
            out += per_tap[:, k:k + 1, max(0, dy):height - max(0, -dy), max(0, dx):width - max(0, -dx)]
        return logits


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

    def encode(self, feats: dict[str, Tensor], layers: tuple[str, ...]) -> dict[str, EncodedFeatures]:
        """The feature-only work of these refinement layers, to share between calls on one frame's features."""
        return {layer: self.TSE[layer].encode(feats[layer]) for layer in layers}

    def _refine(self, layers: tuple[str, ...], x: Tensor | None, score: Tensor, feats: dict[str, Tensor],
                encoded: dict[str, EncodedFeatures] | None) -> Tensor:
        for layer in layers:
            h, hpool = self.TSE[layer](encoded[layer] if encoded else feats[layer], score, x)
            h = self.RRB1[layer](h)
            h = self.CAB[layer](hpool, h)
            x = self.RRB2[layer](h)
        return x

    def deep(self, score: Tensor, feats: dict[str, Tensor]) -> Tensor:
        """score (B,1,h16,w16), feats 'layer5', 'layer4' (batch 1 or B) -> x (B,64,h16,w16)."""
        return self._refine(self.deep_layers, None, score, feats, None)

    def translate(self, prev_x: Tensor, diff: Tensor) -> Tensor:
        """prev_x (B,64,h16,w16), diff (B,1,h16,w16) -> x (B,64,h16,w16)."""
        return self.Diff_process(prev_x, diff)

    def shallow(self, x: Tensor, score: Tensor, feats: dict[str, Tensor], image_size,
                encoded: dict[str, EncodedFeatures] | None = None) -> Tensor:
        """x (B,64,h16,w16), score (B,1,h16,w16), feats 'layer3', 'layer2' (batch 1 or B) -> logits (B,1,H,W).

        encoded: `encode(feats, shallow_layers)`, when several calls share the features.
        """
        return self.project(self._refine(self.shallow_layers, x, score, feats, encoded), image_size)
