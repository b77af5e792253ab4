"""Validation while training, the training side: when to validate, validation.csv, best.pth, the logs.

The scoring itself is a `Validator`: train.py wires the one of evaluator/validation.py, which
scores a saved checkpoint file exactly as evaluate.py scores it (trainer/ and evaluator/ do not
import each other). Files in `<checkpoints>/<name>/`:

- validation.csv: `epoch,TH,J&F,J,F,reuse_rate`, one row per validated epoch and threshold,
  rewritten whole and atomically after each validation, so it never holds half an epoch;
- best.pth: a copy of the checkpoint that trainer/best_checkpoint.py's rule picks, with a 'best'
  entry saying which epoch and why; written (atomically) before validation.csv, so an interrupt
  between the two leaves an epoch without rows, which the resumed run validates again.

An epoch whose validation was cut short (Ctrl-C, SIGTERM, a crash) has a checkpoint but no rows:
the resumed run validates it before it trains on.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable, Protocol

from lib import distributed
from lib.atomic import atomic_write_text
from lib.distributed import DistInfo
from models.checkpoint import CheckpointError, load_checkpoint
from trainer.best_checkpoint import BestRule, Rows
from trainer.checkpoints import checkpoint_path, epoch_checkpoints, rng_state, set_rng_state, write_best
from trainer.logging import TrainLogger
from trainer.options import TrainingError, TrainOptions

COLUMNS = ("epoch", "TH", "J&F", "J", "F", "reuse_rate")
SCORES = ("J&F", "J", "F", "reuse_rate")
CSV_NAME = "validation.csv"
BEST_NAME = "best.pth"
MASKS_NAME = "validation"  # <checkpoints>/<name>/validation/ep<NNNN>-TH<TH>/: the masks of the newest validation


class Validator(Protocol):
    """Scores a saved checkpoint on the validation set (evaluator/validation.py's, wired by train.py)."""

    def check(self) -> None:
        """Rank 0, before anything is written: the set can be read and scored (else a one-line error)."""

    def prepare(self, info: DistInfo) -> None:
        """Every process, after the run's checks: make the set ready (e.g. generate it)."""

    def __call__(self, checkpoint: Path, epoch: int, info: DistInfo) -> list[dict[str, float]] | None:
        """Every process: score `checkpoint` at each threshold. Returns on rank 0 one dict per threshold
        with the keys 'TH', 'J&F', 'J', 'F' and 'reuse_rate' (None elsewhere)."""


def run_folder(opts: TrainOptions) -> Path:
    return opts.paths.checkpoints / opts.name


def masks_folder(opts: TrainOptions) -> Path:
    """Where the validation masks go: under the run's folder, which every torchrun process sees (a
    temporary folder can be local to one machine) and which the run already checked is writable."""
    return run_folder(opts) / MASKS_NAME


class EpochValidation:
    """Validates the due epochs of a run (rank 0 writes the files; every process takes part in the scoring)."""

    def __init__(self, opts: TrainOptions, validator: Validator, info: DistInfo, say: Callable[[str], None],
                 rule: BestRule = BestRule()) -> None:
        if opts.validation is None:
            raise ValueError("EpochValidation needs --val-dset (opts.validation)")
        self.opts, self.val, self.validator, self.info, self.say, self.rule = (
            opts, opts.validation, validator, info, say, rule)
        self.csv_path = run_folder(opts) / CSV_NAME
        self.best_path = run_folder(opts) / BEST_NAME

    def check(self) -> None:
        """Rank 0, before anything is made: no leftovers of another run, and a usable validation set."""
        if not epoch_checkpoints(self.opts.paths.checkpoints, self.opts.name):
            leftovers = [p.name for p in (self.csv_path, self.best_path) if p.exists()]
            if leftovers:
                raise TrainingError(f"{run_folder(self.opts)} holds {' and '.join(leftovers)} but no epoch checkpoint: "
                                    f"they belong to an earlier run of this name; move them away (or pass another "
                                    f"--name) so that this run's validation starts a table of its own")
        read_table(self.csv_path)  # a damaged table is found now, not after the first epoch
        self.validator.check()

    def prepare(self) -> None:
        self.validator.prepare(self.info)

    def catch_up(self, done_epoch: int, logger: Callable[[], TrainLogger]) -> None:
        """Before training on: validate the epoch the run resumes from if it is due and has no rows (its
        validation was cut short, or --val-dset is new to the run)."""
        if done_epoch < 1 or not self.val.due(done_epoch, self.opts.cfg.max_epochs):
            return
        missing = distributed.broadcast_object(
            distributed.on_main(lambda: done_epoch not in read_table(self.csv_path), self.info), self.info)
        if missing:
            self.say(f"validating epoch {done_epoch}: it has no rows in {self.csv_path}")
            self.after_epoch(done_epoch, logger)

    def after_epoch(self, epoch: int, logger: Callable[[], TrainLogger]) -> None:
        """Validate `epoch` (its checkpoint is saved) if it is due; every process calls it."""
        if not self.val.due(epoch, self.opts.cfg.max_epochs):
            return
        checkpoint = checkpoint_path(self.opts.paths.checkpoints, self.opts.name, epoch)
        state = rng_state()  # scoring must not change the training's random numbers (a resumed run has not scored)
        try:
            rows = self.validator(checkpoint, epoch, self.info)
        finally:
            set_rng_state(state)
        distributed.on_main(lambda: self._record(epoch, rows, checkpoint, logger()), self.info)

    def _record(self, epoch: int, rows: list[dict[str, float]], checkpoint: Path, logger: TrainLogger) -> None:
        table = read_table(self.csv_path)
        table[epoch] = {float(row["TH"]): {key: _rounded(row[key]) for key in SCORES} for row in rows}
        best = self._update_best(table, epoch, checkpoint)
        atomic_write_text(self.csv_path, table_text(table))
        logger.validation(epoch, rows)
        shown = ", ".join(f"TH {row['TH']:g} J&F {row['J&F']:.3f} reuse {row['reuse_rate']:.3f}" for row in rows)
        self.say(f"validation of epoch {epoch} on {self.val.dset}: {shown}; best.pth: {best}")

    def _update_best(self, table: dict[int, Rows], epoch: int, checkpoint: Path) -> str:
        """Write best.pth if the rule now picks another checkpoint than the one it holds; says which it holds."""
        choice = self.rule.choose(table, self.val.tau)
        if choice is None:  # cannot happen after a validation at the run's own thresholds
            return "unchanged (no epoch validated at these thresholds)"
        chosen, why = choice
        if chosen != epoch and chosen == best_epoch(self.best_path):  # the epoch just saved is always copied anew
            return f"epoch {chosen} (kept)"
        source = checkpoint if chosen == epoch else checkpoint_path(self.opts.paths.checkpoints, self.opts.name, chosen)
        if not source.is_file():  # removed by --keep-last after an interrupt, or by hand
            return f"the rule picks epoch {chosen}, whose checkpoint {source} is gone, so best.pth was left as it was"
        record = {"epoch": chosen, "why": why, "rule": self.rule.describe(self.val.tau),
                  "validation": {"dset": self.val.dset, "root": str(self.val.root.resolve()),
                                 "thresholds": sorted(table[chosen], reverse=True)},
                  "scores": {f"{tau:g}": dict(table[chosen][tau]) for tau in sorted(table[chosen], reverse=True)}}
        write_best(source, self.best_path, record)
        return f"epoch {chosen}, {why}"


def best_epoch(path: Path) -> int | None:
    """The epoch best.pth holds, or None (no file, or one that cannot be read: it is then rewritten)."""
    if not path.is_file():
        return None
    try:
        record = load_checkpoint(path).get("best")
    except CheckpointError:
        return None
    return int(record["epoch"]) if isinstance(record, dict) and "epoch" in record else None


def read_table(path: Path) -> dict[int, Rows]:
    """validation.csv as epoch -> TH -> scores ({} when there is no file yet)."""
    if not path.is_file():
        return {}
    table: dict[int, Rows] = {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise TrainingError(f"{path}: its columns are {reader.fieldnames}, expected {','.join(COLUMNS)}; move "
                                f"the file away (or pass another --name)")
        for line, row in enumerate(reader, start=2):
            try:
                table.setdefault(int(row["epoch"]), {})[float(row["TH"])] = {k: float(row[k]) for k in SCORES}
            except (TypeError, ValueError):
                raise TrainingError(f"{path}, line {line}: not a row of numbers ({row}); fix or remove that line, "
                                    f"or move the file away") from None
    return table


def table_text(table: dict[int, Rows]) -> str:
    """The CSV text: epochs in order, TH 1.0 before --val-TH (thresholds high to low)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for epoch in sorted(table):
        for tau in sorted(table[epoch], reverse=True):
            writer.writerow([epoch, repr(tau)] + [f"{table[epoch][tau][k]:.6f}" for k in SCORES])
    return buf.getvalue()


def _rounded(value: float) -> float:
    """As validation.csv keeps it (6 decimals), so the rule picks the same epoch from the file and from memory."""
    return float(f"{value:.6f}")
