"""Training checkpoints: save (atomic), resume from the latest, and --initPth (DESIGN 5, 8).

A checkpoint is `<checkpoints>/<name>/<name>_ep<epoch:04d>.pth`, a dict with 'name', 'epoch',
'stats', 'model' (the G-FRTM state dict with exactly the published keys), 'optimizer',
'scheduler', 'rng' (torch, numpy, python and CUDA random states) and 'backbone_weights'.
Everything is stored as tensors, numbers, strings and containers, so `torch.load(...,
weights_only=True)` can read it.
"""
from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.checkpoint import CheckpointError, check_state_dict, detect_backbone, load_checkpoint, save_gfrtm

REFINER_PREFIX = "refiner."


def checkpoint_path(folder: str | Path, name: str, epoch: int) -> Path:
    return Path(folder) / name / f"{name}_ep{epoch:04d}.pth"


def latest_checkpoint(folder: str | Path, name: str) -> Path | None:
    """The `<name>_ep*.pth` with the highest epoch in `<folder>/<name>`, or None."""
    pattern = re.compile(rf"^{re.escape(name)}_ep(\d+)\.pth$")
    found = [(int(m.group(1)), p) for p in (Path(folder) / name).glob(f"{name}_ep*.pth")
             if (m := pattern.match(p.name))]
    return max(found)[1] if found else None


def save_training_checkpoint(path: Path, net: nn.Module, optimizer: torch.optim.Optimizer, scheduler,
                             name: str, epoch: int, stats: dict[str, float], backbone_weights: str) -> None:
    """Write a checkpoint atomically (a temporary file renamed into place)."""
    save_gfrtm(path, net, name=name, epoch=epoch, stats=dict(stats), optimizer=optimizer.state_dict(),
               scheduler=scheduler.state_dict(), rng=rng_state(), backbone_weights=str(backbone_weights))


@dataclass
class Resumed:
    epoch: int
    stats: dict[str, float] = field(default_factory=dict)


def resume(path: Path, net: nn.Module, optimizer: torch.optim.Optimizer, scheduler, backbone: str,
           backbone_weights: str) -> Resumed:
    """Restore model, optimizer, scheduler and random states from `path`; returns its epoch and stats.

    A checkpoint of another backbone or other backbone weights is refused: the trained parts only
    fit the frozen features they were trained on.
    """
    ckpt = load_checkpoint(path)
    missing = [k for k in ("model", "optimizer", "scheduler", "epoch") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint (no {', '.join(missing)}); move it out of the "
                              f"checkpoint folder or choose another --name")
    found = detect_backbone(ckpt["model"], str(path))
    if found != backbone:
        raise CheckpointError(f"{path} was trained with {found}, this run uses {backbone}: pass --ftext {found} "
                              f"to resume it, or another --name (or --checkpoints) to start a new run")
    recorded = ckpt.get("backbone_weights")
    if recorded is not None and str(recorded) != str(backbone_weights):
        raise CheckpointError(f"{path} was trained with --backbone-weights {recorded}, this run uses "
                              f"--backbone-weights {backbone_weights}: pass --backbone-weights {recorded} to resume "
                              f"it, or another --name (or --checkpoints) to start a new run")
    check_state_dict(ckpt["model"], backbone, str(path))
    net.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if "rng" in ckpt:
        set_rng_state(ckpt["rng"])
    return Resumed(int(ckpt["epoch"]), dict(ckpt.get("stats", {})))


def switch_initial_lr(optimizer: torch.optim.Optimizer, scheduler, lr: float) -> float | None:
    """Make `lr` the initial learning rate of a resumed run, at the same point of its schedule.

    Each group's current lr is scaled by lr / its old initial lr (so StepLR decays already applied
    carry over), and the scheduler's base_lrs follow. Returns the old initial lr, or None when the
    checkpoint's already is `lr` (nothing changed).
    """
    old = float(optimizer.param_groups[0]["initial_lr"])
    if math.isclose(old, lr, rel_tol=1e-9):
        return None
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr"] / group["initial_lr"]
        group["initial_lr"] = lr
    scheduler.base_lrs = [lr] * len(optimizer.param_groups)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]  # what get_last_lr() reports
    return old


@dataclass
class InitReport:
    """What --initPth changed: refiner keys loaded, refiner keys the file lacks, file keys not used."""

    loaded: list[str]
    missing: list[str]
    ignored: list[str]

    def summary(self, path: Path) -> str:
        text = f"--initPth {path}: loaded {len(self.loaded)} refiner tensors"
        if self.missing:
            text += f"; {len(self.missing)} refiner tensors keep their initial values (e.g. {self.missing[0]})"
        if self.ignored:
            text += f"; {len(self.ignored)} tensors of the file are not refiner weights and were ignored"
        return text


def load_refiner_init(path: Path, net: nn.Module, backbone: str) -> InitReport:
    """Initialise the refinement network from a checkpoint's `refiner.` weights (non-strict).

    Accepts an FRTM or G-FRTM checkpoint (a dict with 'model'). A file for the other backbone,
    or with refiner tensors of other shapes, is refused.
    """
    state = load_checkpoint(path)["model"]
    refiner = {k: v for k, v in state.items() if k.startswith(REFINER_PREFIX)}
    if not refiner:
        raise CheckpointError(f"--initPth {path}: no '{REFINER_PREFIX}' keys; pass an FRTM or G-FRTM checkpoint")
    found = detect_backbone(state, f"--initPth {path}")
    if found != backbone:
        raise CheckpointError(f"--initPth {path} was trained with {found}, this run uses {backbone}; "
                              f"pass --ftext {found} or a {backbone} checkpoint")
    own = net.state_dict()
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in refiner.items()
             if k in own and own[k].shape != v.shape]
    if wrong:
        raise CheckpointError(f"--initPth {path}: refiner tensors of the wrong shape: {'; '.join(wrong[:3])}")
    usable = {k: v for k, v in refiner.items() if k in own}
    net.load_state_dict(usable, strict=False)
    missing = sorted(k for k in own if k.startswith(REFINER_PREFIX) and k not in usable)
    ignored = sorted(set(state) - set(usable))
    return InitReport(sorted(usable), missing, ignored)


def rng_state() -> dict:
    """Random states of torch, numpy, python and CUDA (if any), as weights_only-loadable values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
