"""DistributedDataParallel around the training step (the process group itself: lib/distributed.py)."""
from __future__ import annotations

from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lib.distributed import DistInfo


def wrap(module: nn.Module, info: DistInfo) -> nn.Module:
    """DistributedDataParallel around `module` when distributed, else the module itself.

    Every trainable parameter takes part in every step (both gated paths are computed and
    blended), so find_unused_parameters stays off.
    """
    if not info.distributed:
        return module
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)
