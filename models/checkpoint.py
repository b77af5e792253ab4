"""Published G-FRTM checkpoints (DESIGN 8): read, check, load and save.

A checkpoint is a dict whose 'model' entry is GFRTM's state dict. GFRTM's module names are the
published ones (convGS, Tmatching, Convert_Diff, refiner and everything below them), so published
files load unchanged and the project's files load in the published code: no key mapping is needed.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from lib.atomic import atomic_write
from models.config import BACKBONES, FEATURE_CHANNELS, NetworkConfig
from models.gfrtm import GFRTM

BACKBONE_KEY = "refiner.TSE.layer4.reduce.0.weight"  # its input channels = layer4 channels of the backbone
SHOWN_KEYS = 3  # how many offending keys an error message lists per kind


class CheckpointError(ValueError):
    """A checkpoint file is unreadable or does not fit the network asked for."""


def detect_backbone(state_dict: dict, source: str) -> str:
    """The backbone a G-FRTM state dict was trained with, from the layer4 TSE input channels."""
    weight = state_dict.get(BACKBONE_KEY)
    if not isinstance(weight, Tensor) or weight.dim() != 4:
        keys = [str(k) for k in state_dict]
        if any(k.startswith("module.") for k in keys):
            hint = ("its keys start with 'module.' (saved from a DistributedDataParallel wrapper): strip that "
                    "prefix, e.g. {k.removeprefix('module.'): v for k, v in state_dict.items()}")
        else:
            shown = ", ".join(keys[:SHOWN_KEYS]) + (f" ({len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else "")
            hint = f"its {len(keys)} keys begin {shown or '(none)'}; is this a G-FRTM checkpoint?"
        raise CheckpointError(
            f"{source}: no 4-d tensor {BACKBONE_KEY!r} in the 'model' state dict, so the backbone cannot be "
            f"told; {hint}"
        )
    by_channels = {FEATURE_CHANNELS[name]["layer4"]: name for name in BACKBONES}
    channels = weight.shape[1]
    if channels not in by_channels:
        known = ", ".join(f"{c} = {name}" for c, name in by_channels.items())
        raise CheckpointError(f"{source}: {BACKBONE_KEY} has {channels} input channels; expected {known}")
    return by_channels[channels]


@lru_cache(maxsize=None)
def _expected(backbone: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    model = GFRTM(NetworkConfig(backbone=backbone))
    return tuple((key, tuple(value.shape)) for key, value in model.state_dict().items())


def expected_shapes(backbone: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a GFRTM state dict for `backbone` (from a freshly built network)."""
    return dict(_expected(backbone))


def check_state_dict(state_dict: dict, backbone: str, source: str) -> None:
    """Raise CheckpointError naming `source` and the first offending keys unless the keys and shapes fit."""
    expected = expected_shapes(backbone)
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    wrong = []
    for key, shape in expected.items():
        value = state_dict.get(key)
        if value is None:
            continue
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        if got != shape:
            wrong.append(f"{key} {got} instead of {shape}")
    if not (missing or unexpected or wrong):
        return
    problems = []
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong)):
        if keys:
            more = f", ... ({len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else ""
            problems.append(f"{len(keys)} {label}: {', '.join(keys[:SHOWN_KEYS])}{more}")
    raise CheckpointError(
        f"{source} does not fit the G-FRTM {backbone} network: {'; '.join(problems)}. "
        f"Use a checkpoint saved by this project or a published G-FRTM file"
    )


def load_checkpoint(path: str | os.PathLike, map_location="cpu", trust_pickle: bool = False) -> dict:
    """Read a checkpoint dict with a 'model' entry.

    Tensors and plain containers only (torch's weights_only), because full unpickling runs code
    stored in the file. `trust_pickle` (only `python -m trainer.export --trust-pickle`) allows it,
    to convert a trusted file that holds other Python objects into a tensors-only one.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path (or --model)")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        if trust_pickle:
            data = _load_trusted(path, map_location)
        else:
            reason = str(err).strip().splitlines()[0][:160]
            raise CheckpointError(
                f"cannot read checkpoint {path} as tensors only ({type(err).__name__}: {reason}). The file is "
                f"damaged, not a PyTorch checkpoint, or holds Python objects besides tensors, which load only by "
                f"running code stored in the file. If it comes from a source you trust, convert it once with "
                f"`python -m trainer.export --trust-pickle {path} CONVERTED.pth` and use CONVERTED.pth"
            ) from None
    if not isinstance(data, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(data).__name__}, not a dict; expected {{'model': state_dict, ...}} "
            f"as saved by this project or the published G-FRTM code"
        )
    if "model" not in data:
        hint = (" It looks like a bare state dict: save it as {'model': state_dict}."
                if BACKBONE_KEY in data else "")
        shown = ", ".join(map(str, list(data)[:5]))
        raise CheckpointError(f"checkpoint {path} has no 'model' entry (its keys: {shown}).{hint}")
    if not isinstance(data["model"], dict):
        raise CheckpointError(f"checkpoint {path}: 'model' is a {type(data['model']).__name__}, not a state dict")
    return data


def _load_trusted(path: Path, map_location) -> object:
    """Full unpickling, for trusted checkpoints that store Python objects besides tensors."""
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:
        raise CheckpointError(
            f"cannot read checkpoint {path} ({type(err).__name__}: {err}); the file is damaged or not a "
            f"PyTorch checkpoint: download or copy it again"
        ) from None


def load_gfrtm(path: str | os.PathLike, device="cpu", backbone: str | None = None) -> tuple[GFRTM, dict]:
    """Build a GFRTM for the checkpoint's backbone and load it strictly. Returns (model, checkpoint dict)."""
    checkpoint = load_checkpoint(path)
    state_dict = checkpoint["model"]
    detected = detect_backbone(state_dict, str(path))
    if backbone is not None and backbone != detected:
        raise CheckpointError(
            f"checkpoint {path} is for {detected} but {backbone} was asked for (--ftext {backbone}); "
            f"pass --ftext {detected} or a {backbone} checkpoint"
        )
    check_state_dict(state_dict, detected, str(path))
    model = GFRTM(NetworkConfig(backbone=detected))
    model.load_state_dict(state_dict, strict=True)
    return model.to(device), checkpoint


def save_gfrtm(path: str | os.PathLike, model: GFRTM, **extra) -> None:
    """Write {'model': state_dict (on CPU), **extra} atomically."""
    if "model" in extra:
        raise ValueError("save_gfrtm: 'model' is reserved for the network's state dict")
    state_dict = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    atomic_write(path, lambda tmp: torch.save({"model": state_dict, **extra}, tmp))
