"""Published G-FRTM checkpoints: read, check, load and save.

A checkpoint is a dict whose 'model' entry is GFRTM's state dict. GFRTM's module names are the
published ones (convGS, Tmatching, Convert_Diff, refiner and everything below them), so published
files load unchanged and the project's files load in the published code: no key mapping is needed.
Published files are read exactly as their trainer wrote them (their `stats` hold objects of the
published code, which become inert placeholders), and nothing stored in a file is ever run.
"""
from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from lib.atomic import atomic_write
from lib.printable import printable
from lib.safe_unpickler import PickleRefused, StoredObject, checkpoint_pickle
from models.config import BACKBONES, FEATURE_CHANNELS, NetworkConfig
from models.gfrtm import GFRTM

BACKBONE_KEY = "refiner.TSE.layer4.reduce.0.weight"  # its input channels = layer4 channels of the backbone
SHOWN_KEYS = 3  # how many offending keys an error message lists per kind
KEY_LIMIT = 80  # a key read from a file is shown up to this many characters
DETAIL_LIMIT = 200  # torch's or the OS's reason, shown up to this many characters


class CheckpointError(ValueError):
    """A checkpoint file is unreadable or does not fit the network asked for."""


class DamagedCheckpointError(CheckpointError):
    """The file's zip or pickle structure is broken (truncated, cut short, overwritten): get it again.

    `detail` is the reader's reason, printable, for messages that say more about the file.
    """

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


def detect_backbone(state_dict: dict, source: str) -> str:
    """The backbone a G-FRTM state dict was trained with, from the layer4 TSE input channels."""
    weight = state_dict.get(BACKBONE_KEY)
    if not isinstance(weight, Tensor) or weight.dim() != 4:
        keys = [printable(k, KEY_LIMIT) for k in state_dict]  # read from the file: no escape codes
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
    unexpected = [printable(key, KEY_LIMIT) for key in state_dict if key not in expected]
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
    """Read a checkpoint dict with a 'model' entry, without running code stored in the file.

    Tensors, numpy values and plain containers are rebuilt; objects of classes whose code is not
    here (a published file's `lib.utils.AverageMeter` stats) become inert placeholders (see
    lib/safe_unpickler.py); a file that would call other code is refused. `trust_pickle` (only
    `python -m trainer.export --trust-pickle`) also rebuilds objects of installed classes, by
    running their code.
    """
    path = Path(path)
    shown = printable(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {shown} does not exist; check the path (or --model)")
    data = _read(path, shown, map_location, trust_pickle)
    if not isinstance(data, dict):
        raise CheckpointError(
            f"checkpoint {shown} holds {_describe(data)}, not a dict; expected {{'model': state_dict, ...}} "
            f"as saved by this project or the published G-FRTM code"
        )
    if "model" not in data:
        hint = (" It looks like a bare state dict: save it as {'model': state_dict}."
                if BACKBONE_KEY in data else "")
        shown_keys = ", ".join(printable(key, KEY_LIMIT) for key in list(data)[:5])
        raise CheckpointError(f"checkpoint {shown} has no 'model' entry (its keys: {shown_keys}).{hint}")
    if not isinstance(data["model"], dict):
        raise CheckpointError(f"checkpoint {shown}: 'model' is {_describe(data['model'])}, not a state dict")
    return data


def _read(path: Path, shown: str, map_location, trust_pickle: bool) -> object:
    """torch.load with the restricted unpickler; every failure becomes a CheckpointError that says what to do."""
    if path.stat().st_size == 0:
        raise DamagedCheckpointError(f"checkpoint {shown} is empty (0 bytes): its download or copy did not finish. "
                                     f"Download or copy it again", "the file is empty")
    try:  # the OS's own reasons (permissions, a folder) first: torch's OSErrors come from damaged files
        with open(path, "rb") as f:
            f.read(1)
    except OSError as err:
        raise CheckpointError(f"cannot open checkpoint {shown}: {printable(err.strerror or err, DETAIL_LIMIT)}; "
                              f"check that it is a readable file") from None
    if _is_torchscript(path):  # torch.load would hand it to torch.jit.load
        raise CheckpointError(f"{shown} is a TorchScript archive (torch.jit.save), not a checkpoint; pass a file "
                              f"written by torch.save, such as a published G-FRTM file or one of this project's")
    if os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "0").lower() in ("1", "y", "yes", "true"):
        return _read_weights_only(path, shown, map_location)  # torch would refuse any other pickle_module
    try:
        return torch.load(path, map_location=map_location, weights_only=False,
                          pickle_module=checkpoint_pickle(trusted=trust_pickle))
    except PickleRefused as err:
        if err.trust_helps and not trust_pickle:
            advice = (f"If the file comes from a source you trust, convert it once with `python -m trainer.export "
                      f"--trust-pickle {shown} CONVERTED.pth` and use CONVERTED.pth")
        else:
            advice = "Do not use this file; get the checkpoint again from where it was published"
        not_run = "What it names was not run" if trust_pickle else "Nothing of it was run"  # trusted: other code ran
        raise CheckpointError(f"cannot read checkpoint {shown} as tensors only, plain values and placeholders: "
                              f"{err.reason}. {not_run}. {advice}") from None
    except MemoryError:
        raise CheckpointError(f"not enough memory to read checkpoint {shown}") from None
    except Exception as err:  # the zip or pickle structure is broken: truncated, cut short, not a checkpoint
        # (torch reports a zip cut short as OSError "Invalid argument", the file itself opened fine above)
        detail = f"{type(err).__name__}: {_first_line(err)}"
        raise DamagedCheckpointError(
            f"cannot read checkpoint {shown}: the file is damaged or truncated, or is not a PyTorch checkpoint "
            f"({detail}). Download or copy it again", detail
        ) from None


def _read_weights_only(path: Path, shown: str, map_location) -> object:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"cannot read checkpoint {shown} with torch's tensors-only reader ({type(err).__name__}: "
            f"{_first_line(err)}). TORCH_FORCE_WEIGHTS_ONLY_LOAD is set in the environment, which makes torch.load "
            f"refuse this project's reader (it reads published files without running code stored in them); "
            f"unset it to read this file"
        ) from None


def _is_torchscript(path: Path) -> bool:
    """What torch.load checks before handing a file to torch.jit.load: a 'constants.pkl' record."""
    try:
        return "constants.pkl" in torch._C.PyTorchFileReader(str(path)).get_all_records()
    except Exception:  # not a zip torch reads (or a damaged one): torch.load will not dispatch it to jit either
        return False


def _first_line(err: BaseException) -> str:
    """The first sentence of an error's text (torch goes on with general advice), printable."""
    lines = str(err).strip().splitlines()
    first = re.split(r"(?<=\.)\s+(?=[A-Z])", lines[0], maxsplit=1)[0].rstrip(".") if lines else "no details"
    return printable(first, DETAIL_LIMIT)


def _describe(value: object) -> str:
    """'a list', or 'a placeholder for lib.utils.X' for a stored object of code that is not here."""
    if isinstance(value, StoredObject):
        return f"a placeholder {value.cls.qualified()} object"
    return f"a {type(value).__name__}"


def load_gfrtm(path: str | os.PathLike, device="cpu", backbone: str | None = None) -> tuple[GFRTM, dict]:
    """Build a GFRTM for the checkpoint's backbone and load it strictly. Returns (model, checkpoint dict)."""
    checkpoint = load_checkpoint(path)
    state_dict = checkpoint["model"]
    shown = printable(path)
    detected = detect_backbone(state_dict, shown)
    if backbone is not None and backbone != detected:
        raise CheckpointError(
            f"checkpoint {shown} is for {detected} but {backbone} was asked for (--ftext {backbone}); "
            f"pass --ftext {detected} or a {backbone} checkpoint"
        )
    check_state_dict(state_dict, detected, shown)
    model = GFRTM(NetworkConfig(backbone=detected))
    model.load_state_dict(state_dict, strict=True)
    return model.to(device), checkpoint


def save_gfrtm(path: str | os.PathLike, model: GFRTM, **extra) -> None:
    """Write {'model': state_dict (on CPU), **extra} atomically."""
    if "model" in extra:
        raise ValueError("save_gfrtm: 'model' is reserved for the network's state dict")
    state_dict = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    atomic_write(path, lambda tmp: torch.save({"model": state_dict, **extra}, tmp))
