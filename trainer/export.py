"""Export a training checkpoint as a release file: the published layout without the optimiser state.

    python -m trainer.export checkpoints/NAME/NAME_ep0040.pth weights/NAME.pth

The release keeps `model` (the published key layout), `name`, `epoch`, `stats` and
`backbone_weights` (so evaluate.py uses the backbone the model was trained with); the
optimizer, scheduler and random states (two thirds of a training checkpoint's size) are dropped.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from models.checkpoint import CheckpointError, check_state_dict, detect_backbone, load_checkpoint
from lib.atomic import atomic_path

RELEASE_KEYS = ("name", "epoch", "stats", "backbone_weights")


def export_release(src: str | Path, dst: str | Path) -> Path:
    """Write the release file `dst` from the training checkpoint `src`; returns `dst`."""
    import torch

    ckpt = load_checkpoint(src)
    model = ckpt["model"]
    check_state_dict(model, detect_backbone(model, str(src)), str(src))
    release = {"model": model, **{k: ckpt[k] for k in RELEASE_KEYS if k in ckpt}}
    dst = Path(dst)
    with atomic_path(dst) as tmp:
        torch.save(release, tmp)
    return dst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a training checkpoint (<checkpoints>/<name>/<name>_epNNNN.pth)")
    parser.add_argument("output", help="the release file to write")
    args = parser.parse_args(argv)
    try:
        out = export_release(args.checkpoint, args.output)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
