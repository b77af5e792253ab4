"""Export a training checkpoint as a release file: the published layout without the optimiser state.

    python -m trainer.export checkpoints/NAME/NAME_ep0040.pth weights/NAME.pth

The release keeps `model` (the published key layout), `name`, `epoch`, `stats` and
`backbone_weights` (so evaluate.py uses the backbone the model was trained with); the
optimizer, scheduler and random states (two thirds of a training checkpoint's size) are dropped.

    python -m trainer.export --trust-pickle someone_elses.pth converted.pth

converts a checkpoint that holds Python objects besides tensors (which every loader of this
project refuses, as loading them runs code stored in the file) into a tensors-only file; only
do it for files from a source you trust. Entries that are not tensors-only are left out.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from models.checkpoint import CheckpointError, check_state_dict, detect_backbone, load_checkpoint
from lib.atomic import atomic_path

RELEASE_KEYS = ("name", "epoch", "stats", "backbone_weights")


def export_release(src: str | Path, dst: str | Path, trust_pickle: bool = False) -> tuple[Path, list[str]]:
    """Write the release file `dst` from the checkpoint `src`; returns `dst` and the entries left out."""
    import torch

    ckpt = load_checkpoint(src, trust_pickle=trust_pickle)
    model = ckpt["model"]
    check_state_dict(model, detect_backbone(model, str(src)), str(src))
    extra = {k: ckpt[k] for k in RELEASE_KEYS if k in ckpt}
    left_out = [k for k, v in extra.items() if not _tensors_only(v)]
    release = {"model": model, **{k: v for k, v in extra.items() if k not in left_out}}
    dst = Path(dst)
    with atomic_path(dst) as tmp:
        torch.save(release, tmp)
    return dst, left_out


def _tensors_only(value: object) -> bool:
    """Whether `value` survives a save and a tensors-only (weights_only) load."""
    import torch

    buf = io.BytesIO()
    torch.save(value, buf)
    buf.seek(0)
    try:
        torch.load(buf, weights_only=True)
    except Exception:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a training checkpoint (<checkpoints>/<name>/<name>_epNNNN.pth)")
    parser.add_argument("output", help="the release file to write")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="read a checkpoint that holds Python objects (runs code stored in it: trusted files only)")
    args = parser.parse_args(argv)
    try:
        out, left_out = export_release(args.checkpoint, args.output, trust_pickle=args.trust_pickle)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if left_out:
        print(f"left out (not tensors-only): {', '.join(left_out)}")
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
