"""Export a training checkpoint as a release file: the published layout without the optimiser state.

    python -m trainer.export checkpoints/NAME/NAME_ep0040.pth weights/NAME.pth

The release keeps `model` (the published key layout), `name`, `epoch`, `stats` and
`backbone_weights` (so evaluate.py uses the backbone the model was trained with); the
optimizer, scheduler and random states (two thirds of a training checkpoint's size) are dropped.
Entries that would not load tensors-only (torch.load(weights_only=True)) are left out and named,
e.g. a published file's `stats`, whose objects of the published code are read as placeholders.
Published files need no conversion: every entry point reads them as they are.

    python -m trainer.export --trust-pickle someone_elses.pth converted.pth

is for a file that also holds objects of other installed classes (e.g. fractions.Fraction),
which every loader of this project refuses because rebuilding them runs that code: with
--trust-pickle it is run (only for files from a source you trust) and the objects are left out
of the written file. Pickles that name modules which run commands (os, subprocess, builtins'
eval, ...) are refused even then.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from lib.atomic import atomic_path, unwritable_reason
from lib.printable import printable
from lib.safe_unpickler import StoredObject
from models.checkpoint import CheckpointError, check_state_dict, detect_backbone, load_checkpoint

RELEASE_KEYS = ("name", "epoch", "stats", "backbone_weights")


def export_release(src: str | Path, dst: str | Path, trust_pickle: bool = False) -> tuple[Path, list[str]]:
    """Write the release file `dst` from the checkpoint `src`; returns `dst` and the entries left out."""
    import torch

    dst = Path(dst)
    if dst.is_dir():
        raise CheckpointError(f"output {dst} is a folder; give the path of the release file to write")
    ckpt = load_checkpoint(src, trust_pickle=trust_pickle)
    model = ckpt["model"]
    shown = printable(src)
    check_state_dict(model, detect_backbone(model, shown), shown)
    reason = unwritable_reason(dst.parent)  # after reading: a refused file leaves no new folder behind
    if reason:
        raise CheckpointError(f"{reason}; choose another output path")
    extra = {k: ckpt[k] for k in RELEASE_KEYS if k in ckpt}
    left_out = [k for k, v in extra.items() if not _tensors_only(v)]
    release = {"model": model, **{k: v for k, v in extra.items() if k not in left_out}}
    with atomic_path(dst) as tmp:
        torch.save(release, tmp)
    return dst, [_with_placeholders(k, extra[k]) for k in left_out]


def _tensors_only(value: object) -> bool:
    """Whether `value` survives a save and a tensors-only (weights_only) load."""
    import torch

    if _placeholder_classes(value):
        return False
    buf = io.BytesIO()
    try:
        torch.save(value, buf)
        buf.seek(0)
        torch.load(buf, weights_only=True)
    except Exception:  # cannot be pickled, or not by tensors only
        return False
    return True


def _placeholder_classes(value: object) -> set[str]:
    """Names of the classes whose objects in `value` were read as placeholders (their code is not here)."""
    if isinstance(value, StoredObject):
        return {value.cls.qualified()}
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return set().union(*map(_placeholder_classes, value))
    return set()


def _with_placeholders(key: str, value: object) -> str:
    """`key`, followed by the placeholder classes it holds, if any."""
    names = sorted(_placeholder_classes(value))
    return f"{key} (objects of {', '.join(names)}, whose code is not here)" if names else key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a training checkpoint (<checkpoints>/<name>/<name>_epNNNN.pth)")
    parser.add_argument("output", help="the release file to write")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="also rebuild objects of installed classes other than tensors and plain values, by "
                             "running their code (trusted files only; published files do not need it)")
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
