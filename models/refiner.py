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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.config import NetworkConfig
from models.upsampling import pyramid_upsample2x, resize, tap_resize

# Widths and kernels below are fixed by the published checkpoint layout, not tunable.
TRANSLATOR_WIDTH = 48  # per dilated branch
TRANSLATOR_DILATIONS = (1, 2, 3)
TRANSLATOR_BLEND_KERNEL = 5
UPSAMPLER_WIDTH = 32
CENTRE_TAP = 4  # tap (dy, dx) = (0, 0) of a 3x3 conv in the order k = (dy+1)*3 + (dx+1)


def _conv3x3(cin: int, cout: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=bias)


def _inference() -> bool:
    """True when autograd does not record: the forwards may then work in place on their own fresh tensors."""
    return not torch.is_grad_enabled()


def _run(layers: nn.Sequential, x: Tensor) -> Tensor:
    """layers(x) for a stack of convs and ReLUs; at inference the ReLUs act in place (x must be a fresh tensor)."""
    if not _inference():
        return layers(x)
    for layer in layers:
        x = x.relu_() if isinstance(layer, nn.ReLU) else layer(x)
    return x


@torch.no_grad()
def fold_batchnorm_into_conv(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    """Make `conv` compute conv -> norm (eval mode), in place.

    w' = w * g / sqrt(v + eps), b' = beta + (b - m) * g / sqrt(v + eps); computed in float64, stored in the
    conv's dtype and memory format. No new module is built, so no random initialisation draws from the RNG.
    """
    scale = norm.weight.double() / torch.sqrt(norm.running_var.double() + norm.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    folded_bias = norm.bias.double() + (bias - norm.running_mean.double()) * scale
    conv.weight.copy_(conv.weight.double() * scale.view(-1, 1, 1, 1))
    if conv.bias is None:
        conv.bias = nn.Parameter(folded_bias.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)
    else:
        conv.bias.copy_(folded_bias)


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
        reduced = _run(self.reduce, features)
        first, oc = self.transform[0], reduced.shape[1]
        shared = F.conv2d(reduced, first.weight[:, :oc], first.bias, padding=1)
        return EncodedFeatures(shared, reduced.mean(dim=(2, 3), keepdim=True))

    def forward(self, features: Tensor | EncodedFeatures, score: Tensor, prev: Tensor | None) -> tuple[Tensor, Tensor]:
        """features (1 or B,C,h,w) or their encoding, score (B,ic,*,*) in any float dtype, prev (B,oc,*,*)
        or None -> (h (B,oc,h,w), hpool).

        hpool is the global mean of the reduced features (B,oc,1,1) for the first layer, else prev.
        """
        encoded = features if isinstance(features, EncodedFeatures) else self.encode(features)
        batch = score.shape[0]
        hpool = encoded.pooled.expand(batch, -1, -1, -1) if prev is None else prev
        first, oc = self.transform[0], encoded.pooled.shape[1]
        shared = encoded.shared
        own = F.conv2d(resize(score, shared.shape[-2:]).to(shared.dtype), first.weight[:, oc:], padding=1)
        in_place = _inference() and own.shape == torch.broadcast_shapes(own.shape, shared.shape)
        return _run(self.transform[1:], own.add_(shared) if in_place else shared + own), hpool


class RRB(nn.Module):
    """Residual refinement block: 1x1 conv, plus a (conv, BN, ReLU, conv) residual, then ReLU.

    `fold_batchnorm` (inference only) merges the BatchNorm into the conv before it.
    """

    def __init__(self, oc: int) -> None:
        super().__init__()
        self.conv1x1 = nn.Conv2d(oc, oc, 1)
        self.bblock = nn.Sequential(_conv3x3(oc, oc), nn.BatchNorm2d(oc), nn.ReLU(), _conv3x3(oc, oc, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1x1(x)
        if not _inference():
            return torch.relu(x + self.bblock(x))
        conv, norm, _, last = self.bblock
        return last(norm(conv(x)).relu_()).add_(x).relu_()

    def fold_batchnorm(self) -> None:
        if isinstance(self.bblock[1], nn.BatchNorm2d):
            fold_batchnorm_into_conv(self.bblock[0], self.bblock[1])
            self.bblock[1] = nn.Identity()


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
        resized = resize(deeper, shallower.shape[-2:])
        if not _inference():
            return shallower * attention + resized
        if resized is deeper or resized.shape != shallower.shape:  # not a fresh tensor of the output's shape
            return torch.addcmul(resized, shallower, attention)
        return resized.addcmul_(shallower, attention)


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
        """prev_x (B,oc,h16,w16), diff (B,ic,h16,w16) in any float dtype -> x (B,oc,h16,w16) in prev_x's dtype."""
        return self.postRBB(self.conv_multi(torch.cat([prev_x, diff.to(prev_x.dtype)], dim=1)))


class Upsampler(nn.Module):
    """Stride-4 map -> image-size logits: bicubic 2x, conv+ReLU, bicubic 2x, bilinear to size, conv.

    The last conv (32 -> 1 channels, 3x3) runs before the last two resizings, which are linear and
    act on each channel alike: its channel sum is taken per kernel tap at stride 2 (9 maps instead
    of 32 channels get resized), and the taps' spatial shifts are added at image size. Same value,
    a fraction of the image-size work. At inference the resizing and shifted sum of the 9 maps is
    one banded product per axis (`TapResize`), and the conv's bias rides on the centre tap's map
    (both resizings preserve a constant and the centre tap is not shifted).
    """

    def __init__(self, oc: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(oc, UPSAMPLER_WIDTH)
        self.conv2 = _conv3x3(UPSAMPLER_WIDTH, 1)

    def forward(self, x: Tensor, image_size) -> Tensor:
        """x (B,oc,h,w) -> logits (B,1,H,W): float32 at inference (whatever x's dtype), else x's dtype."""
        if not _inference():
            return self._recorded_forward(x, image_size)
        x = self.conv1(pyramid_upsample2x(x)).relu_()
        taps = F.conv2d(x, self._tap_weights(), self._tap_bias())
        size = (int(image_size[0]), int(image_size[1]))
        return tap_resize(tuple(taps.shape[-2:]), size, taps.device)(taps)

    def _tap_weights(self) -> Tensor:
        """(9,32,1,1): output k = (dy+1)*3 + (dx+1) is the channel sum of the tap at offset (dy,dx)."""
        return self.conv2.weight.permute(2, 3, 1, 0).reshape(9, -1, 1, 1)

    def _tap_bias(self) -> Tensor:
        """(9,): conv2's bias on the centre tap, 0 on the others."""
        bias = self.conv2.bias.new_zeros(9)
        bias[CENTRE_TAP] = self.conv2.bias[0]
        return bias

    def _recorded_forward(self, x: Tensor, image_size) -> Tensor:
        """The same function in operations autograd records (training)."""
        x = torch.relu(self.conv1(pyramid_upsample2x(x)))
        per_tap = resize(pyramid_upsample2x(F.conv2d(x, self._tap_weights().to(x.dtype))), image_size).contiguous()
        height, width = image_size
        logits = self.conv2.bias.to(x.dtype).view(1, 1, 1, 1).expand(x.shape[0], 1, height, width).clone()
        for k in range(9):
            dy, dx = k // 3 - 1, k % 3 - 1
            # output (i, j) adds tap k's map at (i + dy, j + dx) where that is inside: the conv's zero padding
            out = logits[:, :, max(0, -dy):height - max(0, dy), max(0, -dx):width - max(0, dx)]
            out += per_tap[:, k:k + 1, max(0, dy):height - max(0, -dy), max(0, dx):width - max(0, -dx)]
        return logits


class Refiner(nn.Module):
    """The refinement network; child names follow the published checkpoints ('refiner.*').

    Inputs may be float32 or, with weights converted by `.to(torch.bfloat16)`, bfloat16 features;
    scores and score changes in any float dtype are cast to the features' dtype.
    """

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
        self.folded = False

    @torch.no_grad()
    def fold_batchnorm(self) -> Refiner:
        """Fold every RRB's BatchNorm into the conv before it, for inference (same output up to rounding).

        Call it once on a network that only runs inference (eval mode), after loading its weights.
        A folded refiner has lost the checkpoint layout: its state_dict() and load_state_dict() raise,
        so a folded network cannot be saved or reloaded by mistake.
        """
        if self.training:
            raise RuntimeError("fold_batchnorm() needs an eval-mode refiner (BatchNorm then uses its running "
                               "statistics); call .eval() first")
        if not self.folded:
            for module in self.modules():
                if isinstance(module, RRB):
                    module.fold_batchnorm()
            self.folded = True
            self.register_load_state_dict_pre_hook(_refuse_folded_load)
        return self

    def train(self, mode: bool = True) -> Refiner:
        if mode and self.folded:
            raise RuntimeError("a refiner whose BatchNorm is folded (fold_batchnorm) only runs inference; "
                               "train the network before folding it, or fold a copy")
        return super().train(mode)

    def state_dict(self, *args, **kwargs):
        if self.folded:
            raise RuntimeError(_FOLDED_MESSAGE)
        return super().state_dict(*args, **kwargs)

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
        """score (B,1,h16,w16), feats 'layer5', 'layer4' (batch 1 or B) -> x (B,64,h16,w16) in the features' dtype."""
        return self._refine(self.deep_layers, None, score, feats, None)

    def translate(self, prev_x: Tensor, diff: Tensor) -> Tensor:
        """prev_x (B,64,h16,w16), diff (B,1,h16,w16) -> x (B,64,h16,w16) in prev_x's dtype."""
        return self.Diff_process(prev_x, diff)

    def shallow(self, x: Tensor, score: Tensor, feats: dict[str, Tensor], image_size,
                encoded: dict[str, EncodedFeatures] | None = None) -> Tensor:
        """x (B,64,h16,w16), score (B,1,h16,w16), feats 'layer3', 'layer2' (batch 1 or B) -> logits (B,1,H,W).

        The logits are float32 at inference (see `Upsampler.forward`) and may be a view with padded rows.
        encoded: `encode(feats, shallow_layers)`, when several calls share the features.
        """
        return self.project(self._refine(self.shallow_layers, x, score, feats, encoded), image_size)


_FOLDED_MESSAGE = ("this refiner's BatchNorm layers are folded into its convolutions for inference, so it no "
                   "longer has the checkpoint layout: save or load the network before calling fold_batchnorm(), "
                   "or fold a copy")


def _refuse_folded_load(*args, **kwargs) -> None:
    raise RuntimeError(_FOLDED_MESSAGE)
