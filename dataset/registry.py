"""`load_eval_sequences`: the evaluation sets by name (docs/method.md, "Datasets")."""
from __future__ import annotations

from pathlib import Path

from dataset.davis import load_davis
from dataset.errors import DatasetError
from dataset.sequence import VideoSequence
from dataset.ytvos import load_ytvos

EVAL_SETS: tuple[str, ...] = ("dv2016val", "dv2017val", "yt2018jjval", "yt2018val", "yt2018valAll")


def load_eval_sequences(dset: str, root: str | Path, split_file: str | Path | None = None,
                        sequences: list[str] | None = None) -> list[VideoSequence]:
    """The sequences of evaluation set `dset`, checked up front.

    Args:
        dset: one of EVAL_SETS.
        root: the DAVIS root (dv*) or the YouTube-VOS root holding train/, train_all_frames/,
            valid/ and valid_all_frames/ (yt*).
        split_file: sequence list; for yt2018jjval it defaults to the published list shipped in
            dataset/splits/ytvos_jjvalid.txt, for yt2018val* it is an optional restriction.
            Not used by the DAVIS sets (their lists live in ImageSets/).
        sequences: run only these sequences (unknown names are an error).
    Raises:
        DatasetError naming the file, the problem and what to do; raised before any frame is tracked.
    """
    if dset not in EVAL_SETS:
        raise DatasetError(f"unknown evaluation set {dset!r}; choose one of {', '.join(EVAL_SETS)}")
    if dset.startswith("dv"):
        if split_file is not None:
            raise DatasetError(f"--split-file is for the YouTube-VOS sets; {dset} reads its list from ImageSets/")
        return load_davis(root, "2016" if dset == "dv2016val" else "2017", "val", only=sequences)
    return load_ytvos(root, dset, split_file, only=sequences)
