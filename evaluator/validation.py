"""Validation while training, the evaluation side: a saved checkpoint scored as evaluate.py scores it.

train.py hands a `CheckpointValidator` to the training loop (trainer/epoch_validation.py says when
it runs and what is done with the scores). `score_checkpoint` is the one place that runs the
evaluator for it: the network read from the checkpoint file with the backbone weights it records,
the default fast schedule without amp, the same tracking, scoring and summary code as
evaluate.py, so the numbers are those `evaluate.py --model <checkpoint> --TH ...` prints for that
file on that set. Under torchrun every process tracks and scores its share of the sequences, as
evaluate.py shares them.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from dataset.errors import DatasetError
from dataset.registry import eval_set_info, load_eval_sequences
from dataset.sequence import VideoSequence
from evaluator.davis_scoring import ScoringError, summarize
from evaluator.demo_set import DEMO_DATA, scoring_set
from evaluator.processes import share_by_size
from evaluator.run_records import load_sequence_record, totals
from evaluator.runner import run_sequences
from evaluator.threshold import score_folder
from lib.distributed import DistInfo, on_every_process, on_main
from lib.image_io import ImageReadError
from models.backbone import BackboneWeightsError
from models.builder import build_tracker, load_network
from models.checkpoint import CheckpointError
from models.config import TrackerConfig

# what a validation can meet that the user can fix: it stops the run with one line (train.py)
USER_ERRORS = (DatasetError, ScoringError, ImageReadError, CheckpointError, BackboneWeightsError)


class ValidationError(RuntimeError):
    """The validation set cannot be read or scored; the message names --val-dset and what to do."""


@dataclass(frozen=True)
class ValidationRequest:
    """What train.py asks: the set (an evaluate.py --dset name with ground truth), its root, the thresholds,
    and the folder whose `ep<NNNN>-TH<TH>/` sub-folders take the masks."""

    dset: str
    root: Path
    thresholds: tuple[float, ...]
    masks: Path

    @property
    def scored_as(self) -> str:
        return scoring_set(self.dset)


class CheckpointValidator:
    """trainer.epoch_validation.Validator: scores a checkpoint file at each threshold, as evaluate.py would."""

    def __init__(self, request: ValidationRequest) -> None:
        self.request = request
        self.sequences: list[VideoSequence] | None = None

    def check(self) -> None:
        """Read the set and make sure it can be scored (a generated demo set is only made by `prepare`)."""
        if self.request.dset != "demo":
            self.sequences = self._load()

    def prepare(self, info: DistInfo) -> None:
        """Generate the demo set (rank 0) and read the set on every process."""
        req = self.request
        if req.dset == "demo":
            from dataset.synthetic import generate_dataset

            on_main(lambda: generate_dataset(req.root, **DEMO_DATA), info, USER_ERRORS)
        # every process takes part (rank 0 may have read the set in `check` already)
        self.sequences = on_every_process(lambda: self.sequences or self._load(), info, (ValidationError,))

    def __call__(self, checkpoint: Path, epoch: int, info: DistInfo) -> list[dict[str, float]] | None:
        if self.sequences is None:
            raise RuntimeError("CheckpointValidator: call prepare() before validating")
        req = self.request
        folders = {tau: req.masks / f"ep{epoch:04d}-TH{tau:g}" for tau in req.thresholds}
        on_main(lambda: _clear_masks(req.masks), info)  # the masks of earlier validations and of a cut-short one
        try:
            return score_checkpoint(checkpoint, req.scored_as, self.sequences, folders, info)
        except USER_ERRORS as err:
            raise ValidationError(f"validation on --val-dset {req.dset} ({req.root}): {err}") from None

    def _load(self) -> list[VideoSequence]:
        req = self.request
        try:
            sequences = load_eval_sequences(req.scored_as, req.root)
        except DatasetError as err:
            raise ValidationError(f"--val-dset {req.dset} (root {req.root}): {err}") from None
        if eval_set_info(req.scored_as, sequences).scoring is None:
            raise ValidationError(f"--val-dset {req.dset}: some frames under {req.root} have no annotation, so it "
                                  f"cannot be scored; validate on a folder whose every frame is annotated")
        return sequences


def score_checkpoint(checkpoint: Path, scored_as: str, sequences: list[VideoSequence], folders: dict[float, Path],
                     info: DistInfo) -> list[dict[str, float]] | None:
    """J&F, J, F and the reuse rate of `checkpoint` on `sequences` at each threshold of `folders` (TH -> the
    folder its masks go to), each process tracking its share; rank 0 gets one dict per threshold, the
    others None. The same calls, in the same order, as evaluate.py's run of that checkpoint."""
    net, backbone_weights = load_network(checkpoint, None, info.device)
    set_info = eval_set_info(scored_as, sequences)
    mine = [sequences[i] for i in share_by_size([len(s) for s in sequences], info.world_size)[info.rank]]
    label = f"[process {info.rank}] " if info.distributed else ""
    rows = []
    for tau, out in folders.items():
        tracker = build_tracker(net, backbone_weights, TrackerConfig(tau=tau, fast=True, amp=False), info.device)
        on_every_process(lambda: run_sequences(tracker, mine, out, bars=not info.distributed,
                                               label=f"{label}validation TH {tau:g}: "), info, USER_ERRORS)
        scores = score_folder(set_info, sequences, out, info, USER_ERRORS)
        if info.is_main:
            global_scores, _ = summarize(scores)
            reuse = totals([load_sequence_record(out, s.name) for s in sequences])["reuse_rate"]
            rows.append({"TH": tau, "J&F": global_scores["J&F-Mean"], "J": global_scores["J-Mean"],
                         "F": global_scores["F-Mean"], "reuse_rate": reuse})
    return rows if info.is_main else None


def _clear_masks(folder: Path) -> None:
    """Empty the validation masks folder: it keeps only the masks of the validation in progress (or the last one)."""
    if folder.is_dir():
        for old in folder.iterdir():
            if old.is_dir() and old.name.startswith("ep"):
                shutil.rmtree(old)
    folder.mkdir(parents=True, exist_ok=True)
