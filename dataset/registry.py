"""The evaluation sets by name: `load_eval_sequences` reads one, `eval_set_info` says how to treat it.

See docs/method.md, "Datasets", for the layouts.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from dataset.davis import load_davis, load_davis_testdev
from dataset.errors import DatasetError
from dataset.eval_sets import EVAL_SETS, SET_INFO, EvalSetInfo
from dataset.folder import folder_is_fully_annotated, load_folder
from dataset.lvos import load_lvos
from dataset.mose import load_mose
from dataset.sequence import VideoSequence
from dataset.ytvos import VALID_SETS, load_ytvos

def eval_set_info(name: str, sequences: list[VideoSequence] | None = None) -> EvalSetInfo:
    """How set `name` is treated: its root flag, its scoring and its submission format.

    Only 'folder' depends on the tree: when every frame of every loaded sequence is annotated
    (`folder_is_fully_annotated`) it is scored on each sequence's own objects, the ids present
    ('late-objects': ids 1 and 7 are two objects, not seven as the DAVIS rule 1..max would make
    them), else not at all (None). Pass the sequences `load_eval_sequences` returned to get it;
    without them the scoring of 'folder' is None (not yet known). Every other field, and every
    other set, is fixed by the name alone.
    """
    if name not in SET_INFO:
        raise DatasetError(f"unknown evaluation set {name!r}; choose one of {', '.join(EVAL_SETS)}")
    info = SET_INFO[name]
    if name == "folder" and sequences is not None and folder_is_fully_annotated(sequences):
        return replace(info, scoring="late-objects")
    return info


def load_eval_sequences(dset: str, root: str | Path, split_file: str | Path | None = None,
                        sequences: list[str] | None = None) -> list[VideoSequence]:
    """The sequences of evaluation set `dset`, checked up front.

    Args:
        dset: one of EVAL_SETS.
        root: the set's root, the folder its `eval_set_info(dset).root_flag` names: the DAVIS root
            (dv*), the YouTube-VOS 2018 root holding train/, train_all_frames/, valid/ and
            valid_all_frames/ (yt2018*), the YouTube-VOS 2019 root holding valid/ and
            valid_all_frames/ (yt2019*), the MOSE or LVOS root holding valid/ (mose, lvos), or a
            folder holding JPEGImages/ and Annotations/ (folder).
        split_file: sequence list; for yt2018jjval it defaults to the published list shipped in
            dataset/splits/ytvos_jjvalid.txt, for yt2018val*/yt2019val* it is an optional restriction.
            Not used by the other sets (DAVIS reads ImageSets/, the others take every video under the root).
        sequences: run only these sequences (unknown names are an error).
    Raises:
        DatasetError naming the file, the problem and what to do; raised before any frame is tracked.
    """
    if dset not in EVAL_SETS:
        raise DatasetError(f"unknown evaluation set {dset!r}; choose one of {', '.join(EVAL_SETS)}")
    if dset.startswith("dv"):
        if split_file is not None:
            raise DatasetError(f"--split-file is for the YouTube-VOS sets; {dset} reads its list from ImageSets/")
        if dset == "dv2017testdev":
            return load_davis_testdev(root, only=sequences)
        return load_davis(root, "2016" if dset == "dv2016val" else "2017", "val", only=sequences)
    if dset == "yt2018jjval" or dset in VALID_SETS:
        return load_ytvos(root, dset, split_file, only=sequences)
    if split_file is not None:
        raise DatasetError(f"--split-file is for the YouTube-VOS sets; {dset} takes every video under its root "
                           f"({eval_set_info(dset).root_flag}): choose some with --sequences")
    loaders = {"mose": load_mose, "lvos": load_lvos, "folder": load_folder}
    return loaders[dset](root, only=sequences)
