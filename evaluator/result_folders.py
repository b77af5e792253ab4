"""The results folder of one threshold: what its run was made with, what is left to do, what a failure removes.

Each folder records the settings that shape its masks (`.run.json`: dataset, model file, backbone
and its weights, TH, schedule, amp) and, per finished sequence, a progress record. So the same
command run again after an interrupt continues where it stopped, while a command with other
settings is refused instead of mixing two runs' masks in one folder.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from dataset.sequence import VideoSequence
from evaluator.run_records import PROGRESS_DIR, record_path
from evaluator.settings_record import differences, model_settings, read_record, weights_setting, write_record
from lib.created_folders import remove_empty_folders

RUN_RECORD = ".run.json"
SHARED_RESULTS = ("summary.json", "gate_log.csv")  # rewritten from the sequence records at the end of a run


class FolderRefused(ValueError):
    """An output folder that this command must not write into; the message says what to do."""


def run_settings(dset: str, root: Path, model_path: Path | None, backbone: str, backbone_weights: str, fast: bool,
                 amp: bool) -> dict:
    """What a folder's masks depend on, but for the threshold ("TH"): the same for every folder of a sweep.

    The dataset by its set and root, the model by its contents (hashed once per command), a
    weights file by its path.
    """
    return {"dset": dset, "root": str(root.resolve()), **model_settings(model_path), "backbone": backbone,
            "backbone_weights": weights_setting(backbone_weights), "schedule": "fast" if fast else "full", "amp": amp}


def read_run_record(folder: Path) -> dict | None:
    return read_record(folder / RUN_RECORD)


def write_run_record(folder: Path, settings: dict, thresholds: list[float]) -> None:
    write_record(folder / RUN_RECORD, settings, thresholds=thresholds)


def finished_sequences(folder: Path, names: list[str]) -> list[str]:
    return [n for n in names if record_path(folder, n).is_file()]


@dataclass
class FolderPlan:
    """What one threshold's run does with its folder."""

    folder: Path
    tau: float
    settings: dict
    todo: list[str] = field(default_factory=list)  # names of the sequences to track, in dataset order
    wipe: bool = False  # --overwrite: empty the folder first
    complete: bool = False  # every sequence finished and the results written: nothing to do
    recorded_thresholds: list[float] | None = None
    fresh: bool = False  # the folder is new, empty or wiped: a failed run may remove it again


def plan_folder(folder: Path, tau: float, settings: dict, sequences: list[VideoSequence], overwrite: bool,
                restart: str | None) -> FolderPlan:
    """Decide what to do with `folder`; touches nothing, so every threshold is checked before any runs.

    - new or empty folder: run every sequence;
    - `restart` SEQ: keep the finished sequences before SEQ, rerun SEQ and the later ones;
    - `overwrite`: empty the folder and run every sequence;
    - the same settings as recorded: run the sequences that have not finished (a plain rerun continues);
    - other settings, or results without a record: refused.
    """
    names = [s.name for s in sequences]
    plan = FolderPlan(folder, tau, settings)
    record = read_run_record(folder)
    if restart is not None:
        if restart not in names:
            raise FolderRefused(f"--restart {restart}: no such sequence in {settings['dset']} (first few: {names[:5]})")
        first = names.index(restart)
        finished = set(finished_sequences(folder, names[:first]))
        missing = [n for n in names[:first] if n not in finished]
        if missing:
            raise FolderRefused(f"--restart {restart}: {folder} has no finished results for {missing[:5]} (which come "
                                f"before it); restart from {missing[0]} instead")
        if record is not None and record["settings"] != settings:
            raise FolderRefused(f"--restart {restart}: {folder} holds results made with other settings "
                                f"({differences(record['settings'], settings)}); drop --restart and pass --overwrite "
                                f"to replace them, or choose another --output")
        plan.todo = names[first:]
        return plan
    if not folder.is_dir() or not any(folder.iterdir()):
        plan.todo, plan.fresh = names, True
        return plan
    if overwrite:
        plan.todo, plan.wipe, plan.fresh = names, True, True
        return plan
    if record is None:
        raise FolderRefused(f"{folder} already holds results. Use --overwrite to replace them, or --restart SEQ to "
                            f"resume from a sequence.")
    if record["settings"] != settings:
        raise FolderRefused(f"{folder} holds results made with other settings "
                            f"({differences(record['settings'], settings)}); pass --overwrite to replace them, "
                            f"or choose another --output")
    done = set(finished_sequences(folder, names))
    plan.todo = [n for n in names if n not in done]
    plan.fresh = not done and all(p.name in (RUN_RECORD, PROGRESS_DIR) for p in folder.iterdir())
    plan.complete = not plan.todo and (folder / "summary.json").is_file()
    plan.recorded_thresholds = record.get("thresholds")
    return plan


def check_complete_folders(plans: list[FolderPlan], thresholds: list[float]) -> None:
    """A finished folder is kept only as part of the same sweep continuing after an interrupt.

    When everything is finished, or a finished folder was written by another command, the request
    is refused as before: nothing would be run, or another command's results would be reused.
    """
    complete = [p for p in plans if p.complete]
    if not complete:
        return
    if len(complete) == len(plans) or any(p.recorded_thresholds != thresholds for p in complete):
        raise FolderRefused(f"{complete[0].folder} already holds results. Use --overwrite to replace them, or "
                            f"--restart SEQ to resume from a sequence.")


def prepare_folder(plan: FolderPlan, thresholds: list[float]) -> None:
    """Apply a plan before any sequence runs: wipe, drop results that are about to change, record the settings."""
    if plan.complete:
        return
    if plan.wipe:
        shutil.rmtree(plan.folder)
    for name in SHARED_RESULTS:
        (plan.folder / name).unlink(missing_ok=True)
    (plan.folder.parent / f"{plan.folder.name}.zip").unlink(missing_ok=True)  # a YouTube-VOS submission
    for csv_file in plan.folder.glob("*_results-*.csv") if plan.folder.is_dir() else ():
        csv_file.unlink()
    write_run_record(plan.folder, plan.settings, thresholds)


def forget_sequence(folder: Path, name: str) -> None:
    """Before a sequence is (re)tracked: its record goes first, so an interrupt never leaves a record
    that vouches for masks being rewritten; then its old masks go."""
    record_path(folder, name).unlink(missing_ok=True)
    shutil.rmtree(folder / name, ignore_errors=True)


def prune_after_failure(made: list[Path], created: list[Path]) -> None:
    """After a failed run: remove the results folders this run made or emptied that hold no finished
    sequence (only their run record, perhaps the masks of the sequence that failed), then the folders
    it created (e.g. --output) that are left empty. Folders that held results before are never removed."""
    for folder in made:
        if folder.is_dir() and not any((folder / PROGRESS_DIR).glob("*.json")):
            shutil.rmtree(folder, ignore_errors=True)
    remove_empty_folders(created)

