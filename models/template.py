"""Template matching ("Tmatching"): a per-object 64x64 template and its match on later frames.

Both branches take concat(layer3 features, one mask/score channel). Their first layer is a 1x1 conv, so
the feature part is computed once per frame (batch 1) and only the extra channel's contribution is per
object: several objects of one frame share the expensive part without copying the features.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LEAKY_SLOPE = 0.2
GROUPED_KERNEL = 5
GROUP_SIZE = 4  # grouped convs use groups = width // GROUP_SIZE


def mask_to_stride(mask: Tensor, size: tuple[int, int], training: bool) -> Tensor:
    """(B,1,H,W) mask -> (B,1,h,w) float: nearest at inference, bilinear (align_corners=False) in training."""
    mask = mask.float() if not mask.is_floating_point() else mask
    if training:
        return F.interpolate(mask, size=tuple(size), mode="bilinear", align_corners=False)
    return F.interpolate(mask, size=tuple(size), mode="nearest")


def _grouped_conv(width: int) -> nn.Conv2d:
    """5x5 conv width -> width with groups = width // 4 (padding keeps the size)."""
    return nn.Conv2d(width, width, GROUPED_KERNEL, padding=GROUPED_KERNEL // 2, groups=width // GROUP_SIZE)


def _run_branch(branch: nn.Sequential, feats: Tensor, extra: Tensor) -> Tensor:
    """branch(cat(feats, extra)) for a branch starting with a 1x1 conv; feats (1 or B,C,h,w), extra (B,1,h,w)
    in any float dtype (cast to the features' dtype).

    The feature part of the 1x1 conv runs at the features' batch and broadcasts over the objects.
    """
    first = branch[0]
    extra = extra.to(feats.dtype)
    x = F.conv2d(feats, first.weight[:, :-1], first.bias) + extra * first.weight[:, -1].view(1, -1, 1, 1)
    return branch[1:](x)


class TemplateGenerator(nn.Module):
    """Builds an object's template from its first frame ("Tgenerate")."""

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.conv_key = nn.Sequential(nn.Conv2d(in_channels, width, 1), nn.LeakyReLU(LEAKY_SLOPE), _grouped_conv(width))
        self.conv_val = nn.Sequential(nn.Conv2d(in_channels, width, 1), nn.LeakyReLU(LEAKY_SLOPE), _grouped_conv(width))

    def forward(self, layer3: Tensor, mask8: Tensor) -> Tensor:
        """layer3 (1 or B,C3,h,w), mask8 (B,1,h,w) -> template (B,width,width)."""
        key = _run_branch(self.conv_key, layer3, mask8)
        val = _run_branch(self.conv_val, layer3, mask8)
        key, val = key.flatten(2), val.flatten(2)  # (B,width,h*w)
        return torch.softmax(val @ key.transpose(1, 2) / math.sqrt(key.shape[-1]), dim=-1)


class TemplateMatcher(nn.Module):
    """Matches a template against a frame ("Tmatching.Tmatching")."""

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.conv_key = nn.Sequential(
            nn.Conv2d(in_channels, width, 1), _grouped_conv(width), nn.LeakyReLU(LEAKY_SLOPE)
        )
        self.conv_feat = nn.Sequential(
            nn.Conv2d(in_channels, width, 1), _grouped_conv(width), nn.LeakyReLU(LEAKY_SLOPE)
        )
        self.blend = nn.Sequential(_grouped_conv(2 * width), nn.Conv2d(2 * width, width, 1))

    def forward(self, template: Tensor, layer3: Tensor, score8: Tensor) -> Tensor:
        """template (B,w,w), layer3 (1 or B,C3,h,w), score8 (B,1,h,w) -> tplS (B,w,h,w)."""
        key = _run_branch(self.conv_key, layer3, score8)
        feat = _run_branch(self.conv_feat, layer3, score8)
        similarity = (template @ key.flatten(2)).view_as(key)
        return torch.relu(self.blend(torch.cat([feat, similarity], dim=1)))


class TemplateMatching(nn.Module):
    """Template generation and matching; parameter names follow the published checkpoints.

    Args:
        in_channels: channels(layer3) + 1 (features plus one mask/score channel).
        width: key, value and output width (64).
    """

    def __init__(self, in_channels: int, width: int = 64) -> None:
        super().__init__()
        # registration order = the published state_dict order (matcher first)
        self.Tmatching = TemplateMatcher(in_channels, width)
        self.Tgenerate = TemplateGenerator(in_channels, width)

    def generate(self, layer3: Tensor, mask8: Tensor) -> Tensor:
        """layer3 (1 or B,C3,h8,w8), mask8 (B,1,h8,w8) -> template (B,64,64)."""
        return self.Tgenerate(layer3, mask8)

    def match(self, template: Tensor, layer3: Tensor, score8: Tensor) -> Tensor:
        """template (B,64,64), layer3 (1 or B,C3,h8,w8), score8 (B,1,h8,w8) -> tplS (B,64,h8,w8)."""
        return self.Tmatching(template, layer3, score8)
