"""The training settings a checkpoint records, and what a resumed run may change of them.

Every checkpoint stores `settings`: the TrainConfig fields (with the target-model settings in
effect), the data the run reads (dataset roots by their absolute paths), the backbone weights, the
source of the starting weights (--finetune or --initPth: path and sha256) and the validation
flags. A resume compares them with the command's: the settings that shape the result must agree,
unless --allow-changed-settings says to go on; the ones meant to change between two runs of the
same training are recorded but never compared.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lib.file_hash import file_sha256
from lib.printable import printable
from trainer.checkpoints import latest_checkpoint, read_resumable
from trainer.options import TrainingError, TrainOptions

# recorded, never compared: a resumed run may change them (--lr rescales the schedule, see Trainer._restore);
# feature_chunk only sets how many images a backbone call takes
MEANT_TO_CHANGE = ("max_epochs", "lr", "workers", "validation", "feature_chunk")
# recorded, never compared: a resumed run ignores --finetune and --initPth, so the recorded source stays
STARTING_WEIGHTS = ("finetune", "init_pth")
# data each --dset reads, by the RunPaths field that holds it
DATA_PATHS = {"dv2017": ("davis_root",), "ytvos2018": ("ytvos_root", "ytvos_split_file"),
              "all": ("davis_root", "ytvos_root", "ytvos_split_file"), "synthetic": (), "folder": ("folder_root",)}
OUTPUT_PATHS = ("checkpoints", "tensorboard", "tmcache", "synthetic_root")  # where things go, not what is read
SYNTHETIC_FIELDS = ("synthetic_videos", "synthetic_frames", "synthetic_max_objects", "synthetic_seed")
# the flag behind a setting, for messages; the others have no flag (a changed default of models/config.py)
FLAGS = {"dset": "--dset", "backbone": "--ftext", "backbone_weights": "--backbone-weights", "image_size": "--size",
         "seq_len": "--seq-len", "batch_size": "--batch-size", "m1": "--m1", "m2": "--m2",
         "margin_epochs": "--marginEp",
         "seed": "--seed", "epoch_samples": "--epoch-samples", "synthetic_videos": "--synthetic-videos",
         "synthetic_frames": "--synthetic-frames", "davis_root": "--davis-root", "ytvos_root": "--ytvos-root",
         "ytvos_split_file": "--ytvos-split-file", "folder_root": "--root", "validation_set": "--val-dset/--val-root"}


@dataclass(frozen=True)
class Change:
    """One setting that differs between a checkpoint and the command resuming it."""

    key: str
    recorded: object
    now: object

    def describe(self) -> str:
        flag = FLAGS.get(self.key, f"{self.key} (models/config.py)")
        return f"{flag} {_shown(self.key, self.recorded)} in the checkpoint, {_shown(self.key, self.now)} now"


def training_settings(opts: TrainOptions) -> dict:
    """What this run is made of, as plain values (checkpoints are read with torch.load(weights_only=True))."""
    cfg = opts.cfg
    config = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "target_model_override"}
    if cfg.dset != "synthetic":  # the generator's settings mean nothing to a run on a real dataset
        for key in SYNTHETIC_FIELDS:
            config.pop(key)
    settings = {**config, "target_model": dataclasses.asdict(cfg.target_model),
                "backbone_weights": opts.backbone_weights}
    for key in _data_paths(opts):
        value = getattr(opts.paths, key)
        settings[key] = None if value is None else str(Path(value).resolve())
    settings["finetune"] = _source(opts.finetune)
    settings["init_pth"] = _source(opts.init_pth)
    val = opts.validation
    settings["validation_set"] = None if val is None else {"dset": val.dset, "root": str(val.root.resolve())}
    settings["validation"] = None if val is None else {"every": val.every, "TH": val.tau}
    return _plain(settings)


def changed_settings(recorded: dict, now: dict) -> list[Change]:
    """The compared settings that differ. A key only one side has (a setting added by a later version of
    the code) is not compared, nor is a validation set that one side does not have."""
    skip = set(MEANT_TO_CHANGE) | set(STARTING_WEIGHTS)
    changes = []
    for key, value in now.items():
        if key in skip or key not in recorded:
            continue
        if key == "validation_set" and (value is None or recorded[key] is None):  # turned on or off: no conflict
            continue
        if _plain(recorded[key]) != value:
            changes.append(Change(key, recorded[key], value))
    return changes


def check_resume_settings(opts: TrainOptions, settings: dict, say: Callable[[str], None]) -> None:
    """A run that resumes must have the settings its latest checkpoint records, but for those meant to change
    (MEANT_TO_CHANGE), unless --allow-changed-settings; the checkpoint is checked as resuming checks it, so a
    damaged or refused one is named before anything is made."""
    latest = latest_checkpoint(opts.paths.checkpoints, opts.name)
    if latest is None:
        return
    recorded = read_resumable(latest, opts.cfg.backbone, opts.backbone_weights).get("settings")
    if not isinstance(recorded, dict):
        say(f"note: {latest} records no training settings (written by an earlier version), so they are not compared")
        return
    changes = changed_settings(recorded, settings)
    if not changes:
        return
    listed = "; ".join(change.describe() for change in changes)
    if not opts.allow_changed_settings:
        raise TrainingError(f"{latest} was trained with other settings than this command's: {listed}. Pass the "
                            f"checkpoint's values to resume it as it was, add --allow-changed-settings to go on with "
                            f"the new ones, or pass another --name to start a new run")
    say(f"--allow-changed-settings: resuming {latest} with other settings ({listed}); the next checkpoints record "
        f"the new ones")


def carried_over(recorded: dict | None, now: dict) -> dict:
    """The settings a resumed run's checkpoints record: the command's, with the starting weights of the
    run's first checkpoint (a resumed run ignores --finetune and --initPth); unknown for an old checkpoint."""
    kept = {key: (recorded or {}).get(key) for key in STARTING_WEIGHTS}
    return {**now, **kept}


def _source(path: Path | None) -> dict | None:
    if path is None:
        return None
    return {"path": str(Path(path).resolve()), "sha256": file_sha256(path)}


def _data_paths(opts: TrainOptions) -> tuple[str, ...]:
    """The RunPaths fields holding data this --dset reads; a --dset not listed records every non-output one."""
    if opts.cfg.dset in DATA_PATHS:
        return DATA_PATHS[opts.cfg.dset]
    return tuple(f.name for f in dataclasses.fields(opts.paths) if f.name not in OUTPUT_PATHS)


def _plain(value: object) -> object:
    """Tuples as lists, recursively: the form a recorded value is compared in."""
    if isinstance(value, dict):
        return {key: _plain(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _shown(key: str, value: object) -> str:
    if key == "image_size" and isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{value[1]}x{value[0]}"  # as --size takes it: WIDTHxHEIGHT
    if value is None:
        return "(not set)"
    if isinstance(value, dict) and set(value) == {"dset", "root"}:
        return f"{value['dset']} at {printable(str(value['root']), 200)}"
    return printable(str(value), 200)  # read from a file: no escape codes reach the terminal
