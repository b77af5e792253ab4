"""From a checkpoint to a ready tracker: what evaluate.py, demo.py, the benchmarks and users' code share.

    from models.builder import load_tracker
    tracker = load_tracker("weights/demo_synthetic_rn18.pth", device="cpu")
    session = tracker.session()
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from models.backbone import build_backbone
from models.checkpoint import load_gfrtm
from models.config import NetworkConfig, TrackerConfig
from models.gfrtm import GFRTM
from models.tracker import Tracker


def load_network(model_path: str | os.PathLike | None, backbone_name: str | None,
                 device: str | torch.device) -> tuple[GFRTM, str]:
    """Load a G-FRTM checkpoint, or build an untrained network when model_path is None.

    Returns the network (eval mode) and the backbone weights it was trained with: what the checkpoint
    records (this project's checkpoints do), else 'imagenet' (the published ones); an untrained network
    gets the deterministic random backbone, 'none'. Raises models.checkpoint.CheckpointError for a file
    that cannot be used (named, with the reason).
    """
    if model_path is None:
        net = GFRTM(NetworkConfig(backbone=backbone_name or "resnet18"))
        return net.to(device).eval(), "none"
    net, checkpoint = load_gfrtm(Path(model_path), device=device, backbone=backbone_name)
    return net.eval(), str(checkpoint.get("backbone_weights", "imagenet"))


def build_tracker(net: GFRTM, backbone_weights: str, cfg: TrackerConfig, device: str | torch.device,
                  allow_emulated_bf16: bool = False) -> Tracker:
    """A Tracker for `net` with its backbone ('imagenet', 'none' or a state-dict path) on `device`."""
    backbone = build_backbone(net.cfg.backbone, backbone_weights, device=device)
    return Tracker(backbone, net, cfg, allow_emulated_bf16=allow_emulated_bf16)


def load_tracker(model: str | os.PathLike | None, device: str | torch.device = "cpu", tau: float = 0.7,
                 fast: bool = True, amp: bool = False, backbone: str | None = None,
                 backbone_weights: str | None = None) -> Tracker:
    """A ready Tracker from a checkpoint file (a published G-FRTM file or one of this project's).

    Args:
        model: the checkpoint; None for an untrained network (on the random backbone).
        device: 'cpu', 'cuda', 'cuda:1', ...
        tau: the reuse threshold: an object reuses iff p_reuse > tau (1 never reuses).
        fast: the target models' short optimiser schedule (the published evaluation's).
        amp: float16 on CUDA, bfloat16 on a CPU that has it natively (refused on other CPUs).
        backbone: 'resnet18' or 'resnet101' to check the checkpoint against (None: the checkpoint's).
        backbone_weights: 'imagenet', 'none' or a ResNet state-dict path (None: what the checkpoint records).
    """
    device = torch.device(device)
    net, trained_with = load_network(model, backbone, device)
    cfg = TrackerConfig(tau=tau, fast=fast, amp=amp)
    return build_tracker(net, backbone_weights or trained_with, cfg, device)
