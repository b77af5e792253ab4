"""The frozen ResNet feature extractor, split into FRTM's shallow and deep halves.

FRTM names the torchvision stages differently: layer1 = conv1+bn1+relu+maxpool, layer2..layer5 =
torchvision layer1..layer4. The shallow half (layer1..layer3) runs on every frame; the deep half
(layer4, layer5) only on frames where some object takes the full path.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from models.config import BACKBONES, FEATURE_CHANNELS, IMAGENET_MEAN, IMAGENET_STD

# weights="none": the seed of the random initialisation, and the synthetic images whose statistics
# become the BatchNorm running statistics (so features of any image are well scaled).
RANDOM_INIT_SEED = 20210619
CALIBRATION_BATCH = 6
CALIBRATION_SIZE = (128, 128)

_IMAGENET_WEIGHTS = {
    "resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
    "resnet101": torchvision.models.ResNet101_Weights.IMAGENET1K_V1,
}
_CONSTRUCTORS = {"resnet18": torchvision.models.resnet18, "resnet101": torchvision.models.resnet101}


class BackboneWeightsError(RuntimeError):
    """The backbone weights asked for cannot be obtained or do not fit the network."""


class Backbone(nn.Module):
    """Frozen torchvision ResNet-18/101 split into FRTM's shallow (layer1..layer3) and deep (layer4, layer5) halves.

    Always in eval mode with no gradients: `train()` keeps the BatchNorm statistics frozen.
    """

    def __init__(self, name: str, weights: str = "imagenet") -> None:
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
        self.name = name
        self.channels: dict[str, int] = dict(FEATURE_CHANNELS[name])
        resnet = _make_resnet(name, weights)
        self.layer1 = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layer2 = resnet.layer1
        self.layer3 = resnet.layer2
        self.layer4 = resnet.layer3
        self.layer5 = resnet.layer4
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255, persistent=False)
        self.folded = False
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> "Backbone":
        """The backbone is frozen: stay in eval mode whatever `mode` says."""
        return super().train(False)

    def normalize(self, images: Tensor) -> Tensor:
        """(B,3,H,W) uint8 RGB or float in 0..255 -> ImageNet-normalised float (B,3,H,W)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B,3,H,W), got {tuple(images.shape)}")
        x = images.float() if not images.is_floating_point() else images
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def shallow(self, x: Tensor) -> dict[str, Tensor]:
        """Normalised (B,3,H,W) -> {'layer1': stride 4, 'layer2': stride 4, 'layer3': stride 8}."""
        layer1 = self.layer1(x)
        layer2 = self.layer2(layer1)
        return {"layer1": layer1, "layer2": layer2, "layer3": self.layer3(layer2)}

    def deep(self, layer3: Tensor) -> dict[str, Tensor]:
        """layer3 (B,C3,h8,w8) -> {'layer4': stride 16, 'layer5': stride 32}."""
        layer4 = self.layer4(layer3)
        return {"layer4": layer4, "layer5": self.layer5(layer4)}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Normalised (B,3,H,W) -> all five feature maps."""
        feats = self.shallow(x)
        feats.update(self.deep(feats["layer3"]))
        return feats

    @torch.no_grad()
    def fold_batchnorm(self) -> "Backbone":
        """Fold every frozen BatchNorm into the convolution before it (faster inference, same output)."""
        if self.folded:
            return self
        _fold_pair(self.layer1, "0", "1")
        for stage in (self.layer2, self.layer3, self.layer4, self.layer5):
            for block in stage:
                for i in (1, 2, 3):
                    if hasattr(block, f"conv{i}"):
                        _fold_pair(block, f"conv{i}", f"bn{i}")
                if block.downsample is not None:
                    _fold_pair(block.downsample, "0", "1")
        self.folded = True
        return self


def build_backbone(name: str, weights: str = "imagenet", device: str | torch.device = "cpu",
                   fold_bn: bool = True) -> Backbone:
    """A frozen backbone on `device` (eval mode, requires_grad False), BatchNorm folded unless fold_bn=False.

    weights: "imagenet" (torchvision's ImageNet weights from torch's hub cache), "none" (a deterministic
    well-scaled random initialisation) or a path to a torchvision ResNet state-dict file.
    """
    backbone = Backbone(name, weights)
    if fold_bn:
        backbone.fold_batchnorm()
    return backbone.to(device)


def _skeleton(name: str) -> torchvision.models.ResNet:
    """The ResNet's structure with unallocated tensors: no initialisation work, no global RNG use."""
    with torch.device("meta"):
        return _CONSTRUCTORS[name](weights=None)


def _make_resnet(name: str, weights: str) -> torchvision.models.ResNet:
    if weights == "none":
        return _random_resnet(name)
    resnet = _skeleton(name)
    if weights == "imagenet":
        state_dict = _download_imagenet(name)
        source = f"torchvision's ImageNet weights for {name}"
    else:
        state_dict = _read_state_dict_file(Path(weights))
        source = str(weights)
    _load_trunk(resnet, state_dict, name, source)
    return resnet


def _download_imagenet(name: str) -> dict:
    url = _IMAGENET_WEIGHTS[name].url
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    try:
        return torch.hub.load_state_dict_from_url(url, model_dir=str(cache), map_location="cpu", progress=False)
    except Exception as err:  # network, disk or hash failures all leave the user with the same three choices
        raise BackboneWeightsError(
            f"cannot get the ImageNet weights of {name} ({type(err).__name__}: {err}). "
            f"Put the file {os.path.basename(url)} (from {url}) into {cache}, "
            f"or pass `--backbone-weights PATH` with a torchvision {name} state-dict file, "
            f"or `--backbone-weights none` for a deterministic random backbone (only for models trained with it, "
            f"such as the synthetic demo model; the published checkpoints need the ImageNet weights)."
        ) from None


def _read_state_dict_file(path: Path) -> dict:
    if not path.is_file():
        raise BackboneWeightsError(
            f"backbone weights file {path} does not exist; pass 'imagenet', 'none' or the path of a "
            f"torchvision ResNet state-dict file"
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise BackboneWeightsError(
            f"cannot read backbone weights file {path} ({type(err).__name__}: {err}); "
            f"it must be a torchvision ResNet state dict saved with torch.save"
        ) from None
    if isinstance(data, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(data.get(wrapper), dict):
                data = data[wrapper]
                break
    if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()):
        raise BackboneWeightsError(
            f"backbone weights file {path} does not hold a state dict (a dict of tensors, optionally under "
            f"'state_dict' or 'model'); got {type(data).__name__}"
        )
    return {k.removeprefix("module."): v for k, v in data.items()}


def _load_trunk(resnet: torchvision.models.ResNet, state_dict: dict, name: str, source: str) -> None:
    """Load everything but the classifier; any missing, unexpected or misshapen key is an error."""
    expected = {k: v.shape for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
    given = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    wrong = [f"{k} {tuple(given[k].shape)} instead of {tuple(s)}" for k, s in expected.items()
             if k in given and given[k].shape != s]
    if missing or unexpected or wrong:
        problems = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                problems.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise BackboneWeightsError(
            f"{source} is not a torchvision {name} state dict: {'; '.join(problems)}. "
            f"Use a file saved from torchvision.models.{name}()"
        )
    given = {k: v.float() if v.is_floating_point() else v for k, v in given.items()}
    resnet.load_state_dict(given, strict=False, assign=True)  # the unused classifier stays unallocated


def _random_resnet(name: str) -> torchvision.models.ResNet:
    """A random ResNet, identical on every machine and independent of the global RNG state.

    Weights are drawn (He-normal, fan-out, as torchvision does) and calibrated in float64 from a
    dedicated generator, then rounded to float32, so last-bit differences between CPUs vanish.
    A random ResNet with identity BatchNorm statistics explodes or vanishes with depth, so each
    BatchNorm's running statistics are set from one train-mode pass over fixed synthetic images.
    """
    resnet = _skeleton(name).to_empty(device="cpu").double()
    generator = torch.Generator().manual_seed(RANDOM_INIT_SEED)
    with torch.no_grad():
        for module in resnet.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.weight.shape[0] * module.weight[0, 0].numel()
                noise = torch.randn(module.weight.shape, generator=generator, dtype=torch.float64)
                module.weight.copy_(noise * math.sqrt(2.0 / fan_out))
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.fill_(1.0)
                module.bias.zero_()
                module.reset_running_stats()
                module.momentum = None  # cumulative average: one pass sets the statistics of that pass
            elif isinstance(module, nn.Linear):  # the unused classifier
                module.weight.zero_()
                module.bias.zero_()
        resnet.train()
        resnet(_calibration_images())
    for module in resnet.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1  # back to torchvision's default
    return resnet.eval().float()


def _calibration_images() -> Tensor:
    """(B,3,H,W) float64 ImageNet-normalised images ranging from smooth random colour fields to pure noise.

    Covering both ends keeps the features of natural and of noise images well scaled.
    """
    generator = torch.Generator().manual_seed(RANDOM_INIT_SEED + 1)
    b, (h, w) = CALIBRATION_BATCH, CALIBRATION_SIZE
    coarse = torch.rand(b, 3, h // 16, w // 16, generator=generator, dtype=torch.float64)
    smooth = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    noise = torch.rand(b, 3, h, w, generator=generator, dtype=torch.float64)
    smoothness = torch.linspace(1, 0, b, dtype=torch.float64).view(b, 1, 1, 1)
    pixels = 255 * (smoothness * smooth + (1 - smoothness) * noise)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1) * 255
    return (pixels - mean) / std


def _fold_pair(parent: nn.Module, conv_name: str, bn_name: str) -> None:
    """Replace conv -> bn by one conv with bias: w' = w * g / sqrt(v + eps), b' = beta + (b - m) * g / sqrt(v + eps)."""
    conv: nn.Conv2d = getattr(parent, conv_name)  # Sequential children are attributes "0", "1", ...
    bn = getattr(parent, bn_name)
    if not isinstance(bn, nn.BatchNorm2d):
        return
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                       conv.dilation, conv.groups, bias=True).to(conv.weight.device, conv.weight.dtype)
    folded.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    folded.bias.copy_(bn.bias + (bias - bn.running_mean) * scale)
    folded.requires_grad_(False)
    setattr(parent, conv_name, folded)
    setattr(parent, bn_name, nn.Identity())
