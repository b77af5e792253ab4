"""Where an evaluate.py run stands, for the line an interrupt prints and the clean-up after a failure."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from lib.interrupts import command_line, drop_flag
from lib.launcher import continue_command
from evaluator.result_folders import finished_sequences, prune_after_failure


class RunState:
    """What is saved so far and how to continue. Only the main process's state is ever printed."""

    def __init__(self, argv: list[str] | None) -> None:
        self.argv = list(sys.argv[1:] if argv is None else argv)
        self.folder: Path | None = None  # the threshold's folder being worked on
        self.names: list[str] = []  # its sequences
        self.threshold = (0, 1)  # (index, number of thresholds)
        self.nothing_saved = "nothing saved yet"
        self.planned = False  # folders are prepared: a plain rerun continues (no --overwrite, no --restart)
        self.made: list[Path] = []  # results folders this run made or emptied
        self.created: list[Path] = []  # other folders this run created (e.g. --output)
        self.generated: list[Path] = []  # data this run generated (the demo videos), made again by a rerun

    def at(self, folder: Path, names: list[str], index: int, count: int) -> None:
        self.folder, self.names, self.threshold = folder, names, (index, count)

    def saved(self) -> str:
        if self.folder is None:
            return self.nothing_saved
        done = len(finished_sequences(self.folder, self.names))
        text = f"{done} of {len(self.names)} sequences finished in {self.folder}"
        index, count = self.threshold
        return f"{index} of {count} thresholds finished, {text}" if count > 1 else text

    def resume_command(self) -> str:
        args = self.argv
        if self.planned:  # the folders now record this run's settings: the same command continues
            args = drop_flag(drop_flag(args, "--overwrite", takes_value=False), "--restart", takes_value=True)
        return continue_command(command_line(args))

    def prune(self) -> None:
        """After a failed run: remove what it made that holds no finished work (see prune_after_failure)."""
        for folder in self.generated:
            shutil.rmtree(folder, ignore_errors=True)
        prune_after_failure(self.made, self.created)
