"""Training checkpoints: save (atomic), resume from the latest, --initPth, --finetune and best.pth.

A checkpoint is `<checkpoints>/<name>/<name>_ep<epoch:04d>.pth`, a dict with 'name', 'epoch',
'stats', 'model' (the G-FRTM state dict with exactly the published keys), 'optimizer',
'scheduler', 'rng' (torch, numpy, python and CUDA random states), 'backbone_weights' and
'settings' (trainer/run_settings.py; absent in checkpoints of earlier versions). best.pth is a
copy of one of them with a 'best' entry added. Everything is stored as tensors, numbers, strings
and containers, so `torch.load(..., weights_only=True)` can read it.
"""
from __future__ import annotations

import math
import random
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lib.printable import printable
from lib.atomic import atomic_write
from models.checkpoint import (CheckpointError, DamagedCheckpointError, check_state_dict, detect_backbone,
                               load_checkpoint, save_gfrtm)

REFINER_PREFIX = "refiner."
TRAINING_KEYS = ("model", "optimizer", "scheduler", "epoch")  # what resuming needs of a checkpoint


def checkpoint_path(folder: str | Path, name: str, epoch: int) -> Path:
    return Path(folder) / name / f"{name}_ep{epoch:04d}.pth"


def latest_checkpoint(folder: str | Path, name: str) -> Path | None:
    """The `<name>_ep*.pth` with the highest epoch in `<folder>/<name>`, or None."""
    found = epoch_checkpoints(folder, name)
    return found[-1][1] if found else None


def epoch_checkpoints(folder: str | Path, name: str) -> list[tuple[int, Path]]:
    """(epoch, path) of every `<name>_ep<NNNN>.pth` in `<folder>/<name>`, oldest epoch first.

    Temporary files of a save in progress (`.<name>_ep<NNNN>.pth.*.tmp`) do not match.
    """
    pattern = re.compile(rf"^{re.escape(name)}_ep(\d+)\.pth$")
    return sorted((int(m.group(1)), p) for p in (Path(folder) / name).glob(f"{name}_ep*.pth")
                  if (m := pattern.match(p.name)))


def prune_checkpoints(folder: str | Path, name: str, keep: int, saved_epoch: int) -> list[Path]:
    """--keep-last: of run `name`'s epoch checkpoints up to `saved_epoch` (the one just written), delete all
    but the `keep` newest; returns the deleted paths.

    Call it only after that checkpoint is in place (saves are atomic, so a file that exists is
    complete): the run can then always resume from what is left. Files of later epochs (left by
    another run of the same name) are not touched, so they can never push out the new one.
    """
    if keep < 1:
        raise ValueError(f"prune_checkpoints: keep must be at least 1, got {keep}")
    upto = [path for epoch, path in epoch_checkpoints(folder, name) if epoch <= saved_epoch]
    old = upto[:-keep]
    for path in old:
        path.unlink(missing_ok=True)  # missing_ok: another process may prune the same folder
    return old


def save_training_checkpoint(path: Path, net: nn.Module, optimizer: torch.optim.Optimizer, scheduler,
                             name: str, epoch: int, stats: dict[str, float], backbone_weights: str,
                             settings: dict | None = None) -> None:
    """Write a checkpoint atomically (a temporary file renamed into place); `settings`: the run's training
    settings (trainer/run_settings.py), left out when None."""
    extra = {} if settings is None else {"settings": settings}
    save_gfrtm(path, net, name=name, epoch=epoch, stats=dict(stats), optimizer=optimizer.state_dict(),
               scheduler=scheduler.state_dict(), rng=rng_state(), backbone_weights=str(backbone_weights), **extra)


@dataclass
class Resumed:
    epoch: int
    stats: dict[str, float] = field(default_factory=dict)
    settings: dict | None = None  # the training settings it records (None: written before they were)


def resume(path: Path, net: nn.Module, optimizer: torch.optim.Optimizer, scheduler, backbone: str,
           backbone_weights: str) -> Resumed:
    """Restore model, optimizer, scheduler and random states from `path`; returns its epoch, stats and settings.

    A checkpoint of another backbone or other backbone weights is refused: the trained parts only
    fit the frozen features they were trained on. A damaged one is refused with the previous good
    checkpoint of the run and the command that makes the run resume from it.
    """
    ckpt = read_resumable(path, backbone, backbone_weights)
    net.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if "rng" in ckpt:
        set_rng_state(ckpt["rng"])
    settings = ckpt.get("settings")
    return Resumed(int(ckpt["epoch"]), dict(ckpt.get("stats", {})), settings if isinstance(settings, dict) else None)


def read_resumable(path: Path, backbone: str, backbone_weights: str) -> dict:
    """The checkpoint at `path`, checked as `resume` checks it (CheckpointError otherwise), not loaded anywhere."""
    try:
        ckpt = load_checkpoint(path)
    except DamagedCheckpointError as err:
        raise CheckpointError(_damaged_latest(path, err)) from None
    missing = [k for k in TRAINING_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint (no {', '.join(missing)}); move it out of the "
                              f"checkpoint folder or choose another --name")
    found = detect_backbone(ckpt["model"], str(path))
    if found != backbone:
        raise CheckpointError(f"{path} was trained with {found}, this run uses {backbone}: pass --ftext {found} "
                              f"to resume it, or another --name (or --checkpoints) to start a new run")
    recorded = ckpt.get("backbone_weights")
    if recorded is not None and str(recorded) != str(backbone_weights):
        recorded = printable(recorded, 200)  # read from the file: no escape codes reach the terminal
        raise CheckpointError(f"{path} was trained with --backbone-weights {recorded}, this run uses "
                              f"--backbone-weights {backbone_weights}: pass --backbone-weights {recorded} to resume "
                              f"it, or another --name (or --checkpoints) to start a new run")
    check_state_dict(ckpt["model"], backbone, str(path))
    return ckpt


def _damaged_latest(path: Path, err: DamagedCheckpointError) -> str:
    """The message for a damaged latest checkpoint: the newest earlier one that reads, and how to resume from it."""
    match = re.match(r"^(.+)_ep(\d+)\.pth$", path.name)
    earlier = ([(epoch, p) for epoch, p in epoch_checkpoints(path.parent.parent, match.group(1))
                if epoch < int(match.group(2))] if match else [])
    move = f"mv {shlex.quote(str(path))} {shlex.quote(str(path) + '.damaged')}"  # no longer an _epNNNN.pth name
    for epoch, candidate in reversed(earlier):
        try:
            readable = all(key in load_checkpoint(candidate) for key in TRAINING_KEYS)
        except CheckpointError:
            readable = False
        if readable:
            return (f"the latest checkpoint of this run, {path}, is damaged or truncated ({err.detail}). The previous "
                    f"good checkpoint is {candidate} (epoch {epoch}): to resume from it, move the damaged file out "
                    f"of the way with `{move}` and run the same command again")
    return (f"the latest checkpoint of this run, {path}, is damaged or truncated ({err.detail}), and no earlier "
            f"checkpoint of the run can be read. Move it out of the way with `{move}` and run the same command "
            f"again to start the run from the beginning, or copy the file again from a backup")


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


def read_refiner_init(path: Path, backbone: str) -> tuple[dict, dict]:
    """The model state dict of an --initPth file and its `refiner.` part; CheckpointError when the file
    cannot be read (missing, damaged, refused), has no refiner weights or is of the other backbone.

    Training reads it before any folder is made or data generated, so such a file fails the run at once.
    """
    try:
        state = load_checkpoint(path)["model"]
    except CheckpointError as err:  # the message names the file; say which flag gave it
        raise CheckpointError(f"--initPth: {err}") from None
    refiner = {k: v for k, v in state.items() if k.startswith(REFINER_PREFIX)}
    if not refiner:
        raise CheckpointError(f"--initPth {path}: no '{REFINER_PREFIX}' keys; pass an FRTM or G-FRTM checkpoint")
    found = detect_backbone(state, f"--initPth {path}")
    if found != backbone:
        raise CheckpointError(f"--initPth {path} was trained with {found}, this run uses {backbone}; "
                              f"pass --ftext {found} or a {backbone} checkpoint")
    return state, refiner


def load_refiner_init(path: Path, net: nn.Module, backbone: str, read: tuple[dict, dict] | None = None) -> InitReport:
    """Initialise the refinement network from a checkpoint's `refiner.` weights (non-strict).

    Accepts an FRTM or G-FRTM checkpoint (a dict with 'model'). A file for the other backbone,
    or with refiner tensors of other shapes, is refused. `read`: what `read_refiner_init` returned
    for this file, when it was already read (so a run reads it once).
    """
    state, refiner = read if read is not None else read_refiner_init(path, backbone)
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


def read_finetune(path: Path, backbone: str, backbone_weights: str) -> dict:
    """The model state dict of a --finetune file, checked to fit this run; CheckpointError when it cannot be read
    (missing, damaged, refused), is not a whole G-FRTM state dict, is of the other backbone, or was trained on
    other backbone weights (its trained parts fit only the frozen features they were trained on).

    A published file records no backbone weights: those were trained on ImageNet's.
    """
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as err:  # the message names the file; say which flag gave it
        raise CheckpointError(f"--finetune: {err}") from None
    state = ckpt["model"]
    source = f"--finetune {printable(path)}"
    found = detect_backbone(state, source)
    if found != backbone:
        raise CheckpointError(f"{source} was trained with {found}, this run uses {backbone} (--ftext {backbone}); "
                              f"pass --ftext {found}, or a {backbone} checkpoint")
    check_state_dict(state, backbone, source)
    recorded = str(ckpt.get("backbone_weights", "imagenet"))
    if recorded != str(backbone_weights):
        recorded = printable(recorded, 200)  # read from the file: no escape codes reach the terminal
        raise CheckpointError(f"{source} was trained on the backbone weights {recorded}, this run uses "
                              f"--backbone-weights {backbone_weights}: pass --backbone-weights {recorded} (its "
                              f"trained parts fit only the features they were trained on)")
    return state


def write_best(source: Path, best_path: Path, record: dict) -> None:
    """best.pth: a copy of the checkpoint `source` with `record` (which epoch and why) as its 'best' entry,
    written atomically, so that it is either the old best or the new one, never half of either."""
    ckpt = load_checkpoint(source)
    atomic_write(best_path, lambda tmp: torch.save({**ckpt, "best": record}, tmp))


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
