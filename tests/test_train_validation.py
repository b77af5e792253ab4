"""Validation while training: validation.csv, best.pth and the val/ logs, scored as evaluate.py scores the
same checkpoint; an interrupted validation is redone on resume; the best-checkpoint rule."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from torch.optim.lr_scheduler import StepLR

from dataset.synthetic import generate_dataset
from lib.distributed import DistInfo
from lib.file_hash import file_sha256
from models.config import NetworkConfig, TrainConfig
from models.gfrtm import GFRTM
from tests.test_train_cli import _argv, one_torch_thread  # noqa: F401 (the run's flags; an autouse fixture)
from train import main, paths
from trainer.best_checkpoint import BestRule
from trainer.checkpoints import (
    checkpoint_path,
    prune_checkpoints,
    save_training_checkpoint,
)
from trainer.epoch_validation import EpochValidation, read_table
from trainer.loop import make_optimizer
from trainer.options import TrainingError, parse_options

DEMO_MODEL = Path(__file__).resolve().parents[1] / "weights" / "demo_synthetic_rn18.pth"
LIGHT = ("--batch-size", "1", "--epoch-samples", "1", "--seq-len", "2")  # one sample of two frames per epoch
CPU = DistInfo(0, 1, torch.device("cpu"))


def _val_set(tmp: Path) -> Path:
    """One DAVIS-layout video of 5 frames with 2 objects: the first and last frames are not scored."""
    return generate_dataset(tmp / "val", "davis", num_videos=1, num_frames=5, size=(64, 112), seed=2000,
                            max_objects=2, split="val")


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_a_fine_tune_validates_picks_best_and_evaluate_gives_the_same_scores_for_best(tmp_path, capsys,
                                                                                      monkeypatch):
    import evaluator.validation
    from evaluate import main as evaluate_main

    val = _val_set(tmp_path)
    argv = _argv(tmp_path, *LIGHT, "--max-epochs", "1", "--marginEp", "0", "--finetune", str(DEMO_MODEL),
                 "--val-dset", "dv2017val", "--val-root", str(val))
    run = tmp_path / "ckpt" / "cli"

    def interrupted(*args, **kwargs):  # Ctrl-C while the first threshold's sequences are tracked
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluator.validation, "run_sequences", interrupted)
    assert main(argv) == 130
    assert f"is saved in {run / 'cli_ep0001.pth'}" in capsys.readouterr().err
    assert not (run / "validation.csv").exists() and not (run / "best.pth").exists()
    monkeypatch.undo()

    assert main(argv) == 0  # the same command: epoch 1 is validated again, nothing is trained
    out = capsys.readouterr().out
    assert "validating epoch 1: it has no rows" in out and "nothing to train" in out
    with (run / "validation.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert (run / "validation.csv").read_text().splitlines()[0] == "epoch,TH,J&F,J,F,reuse_rate"
    assert [(r["epoch"], float(r["TH"])) for r in rows] == [("1", 1.0), ("1", 0.7)]
    assert sorted(p.name for p in (run / "validation").iterdir()) == ["ep0001-TH0.7", "ep0001-TH1"]

    best = torch.load(run / "best.pth", weights_only=True)
    assert best["best"]["epoch"] == 1 and best["epoch"] == 1 and "TH 0.7" in best["best"]["why"]
    assert best["settings"]["finetune"]["sha256"] == file_sha256(DEMO_MODEL)
    scalars = _scalars(tmp_path / "tb" / "cli")
    for row in rows:
        suffix = f"TH{float(row['TH']):g}"
        for key in ("J&F", "J", "F", "reuse_rate"):
            [(step, value)] = scalars[f"val/{key}_{suffix}"]
            assert step == 1 and value == pytest.approx(float(row[key]), abs=1e-6)
    assert scalars["val/reuse_rate_TH1"][0][1] == 0.0  # TH 1 never reuses

    # evaluate.py on best.pth, the same set: the same numbers
    assert evaluate_main(["--dset", "dv2017val", "--davis-root", str(val), "--model", str(run / "best.pth"),
                          "--TH", "1.0", "0.7", "--dev", "cpu", "--output", str(tmp_path / "results")]) == 0
    for row in rows:
        summary = json.loads((tmp_path / "results" / f"dv2017val-best-TH{float(row['TH']):g}" /
                              "summary.json").read_text())
        expected = {"J&F": summary["scores"]["J&F-Mean"], "J": summary["scores"]["J-Mean"],
                    "F": summary["scores"]["F-Mean"], "reuse_rate": summary["reuse_rate"]}
        assert {k: row[k] for k in expected} == {k: f"{v:.6f}" for k, v in expected.items()}
        assert best["best"]["scores"][f"{float(row['TH']):g}"]["J&F"] == float(f"{expected['J&F']:.6f}")


class _Scores:
    """A validator that returns set scores instead of tracking (and draws random numbers, as tracking does)."""

    def __init__(self, by_epoch: dict[int, list[tuple[float, float]]]) -> None:
        self.by_epoch = by_epoch  # epoch -> [(J&F, reuse rate) at TH 1, at TH 0.7]
        self.calls: list[int] = []

    def check(self) -> None:
        pass

    def prepare(self, info) -> None:
        pass

    def __call__(self, checkpoint: Path, epoch: int, info) -> list[dict[str, float]]:
        assert checkpoint.is_file()
        self.calls.append(epoch)
        torch.rand(5)
        return [{"TH": tau, "J&F": jf, "J": jf - 0.01, "F": jf + 0.01, "reuse_rate": reuse}
                for tau, (jf, reuse) in zip((1.0, 0.7), self.by_epoch[epoch])]


class _Log:
    def __init__(self) -> None:
        self.rows: dict[int, list] = {}

    def validation(self, epoch: int, rows: list) -> None:
        self.rows[epoch] = rows


def test_best_pth_follows_the_rule_over_the_epochs_and_survives_keep_last(tmp_path, capsys):
    opts = parse_options(_argv(tmp_path, "--val-dset", "dv2017val", "--val-root", str(tmp_path), "--val-every", "2",
                               "--max-epochs", "5"), paths)
    net = GFRTM(NetworkConfig())
    optimizer = make_optimizer(net, TrainConfig())
    scheduler = StepLR(optimizer, step_size=10)
    scores = _Scores({2: [(0.80, 0.0), (0.78, 0.30)],  # qualifies
                      4: [(0.85, 0.0), (0.70, 0.60)],  # loses 0.15: does not qualify
                      5: [(0.82, 0.0), (0.81, 0.26)]})  # qualifies, higher at TH 1 than epoch 2
    validation = EpochValidation(opts, scores, CPU, print)
    log = _Log()
    for epoch in range(1, 6):
        with torch.no_grad():
            net.convGS[1].bias.fill_(float(epoch))  # tells the epochs' weights apart
        save_training_checkpoint(checkpoint_path(opts.paths.checkpoints, "cli", epoch), net, optimizer, scheduler,
                                 "cli", epoch, {}, "none")
        prune_checkpoints(opts.paths.checkpoints, "cli", 1, epoch)  # --keep-last 1
        torch.manual_seed(epoch)
        expected = torch.rand(3)
        torch.manual_seed(epoch)
        validation.after_epoch(epoch, lambda: log)
        assert torch.equal(torch.rand(3), expected)  # validating drew no number from the training's generator
        best = torch.load(tmp_path / "ckpt" / "cli" / "best.pth", weights_only=True) if epoch >= 2 else None
        if epoch in (2, 4):
            assert best["best"]["epoch"] == 2 and best["model"]["convGS.1.bias"][0] == 2.0  # epoch 2's file is gone
    assert scores.calls == [2, 4, 5]  # every 2nd epoch, and the last
    assert best["best"]["epoch"] == 5 and best["model"]["convGS.1.bias"][0] == 5.0
    assert "the highest J&F at TH 1 (0.820) of the 2 of 3" in best["best"]["why"]
    assert sorted(log.rows) == [2, 4, 5]
    table = read_table(tmp_path / "ckpt" / "cli" / "validation.csv")
    assert table[4] == {1.0: {"J&F": 0.85, "J": 0.84, "F": 0.86, "reuse_rate": 0.0},
                        0.7: {"J&F": 0.70, "J": 0.69, "F": 0.71, "reuse_rate": 0.60}}

    # a new run of the name, with no checkpoint left, would mix its rows into this table: refused
    for path in (tmp_path / "ckpt" / "cli").glob("cli_ep*.pth"):
        path.unlink()
    with pytest.raises(TrainingError, match=r"holds validation.csv and best.pth but no epoch checkpoint"):
        validation.check()


@pytest.mark.parametrize("tau, table, expected", [
    (0.7, {1: {1.0: 0.90, 0.7: (0.80, 0.9)}, 2: {1.0: 0.84, 0.7: (0.83, 0.25)}, 3: {1.0: 0.86, 0.7: (0.84, 0.20)}},
     (2, "the highest J&F at TH 1 (0.840) of the 1 of 3")),
    (0.7, {1: {1.0: 0.90, 0.7: (0.80, 0.9)}, 2: {1.0: 0.84, 0.7: (0.83, 0.10)}, 3: {1.0: 0.88}},
     (2, "none of the 2 validated epoch(s)")),  # epoch 3 has no TH 0.7 row: not compared
    (1.0, {1: {1.0: 0.80}, 2: {1.0: 0.80, 0.7: (0.9, 0.9)}, 3: {1.0: 0.79}}, (1, "the highest J&F at TH 1 (0.800)")),
])
def test_the_best_rule(tau, table, expected):
    rows = {epoch: {th: {"J&F": v[0], "reuse_rate": v[1]} if isinstance(v, tuple) else {"J&F": v, "reuse_rate": 0.0}
                    for th, v in by_th.items()} for epoch, by_th in table.items()}
    epoch, why = BestRule().choose(rows, tau)
    assert epoch == expected[0] and why.startswith(expected[1])


@pytest.mark.parametrize("flags, message", [
    (["--val-dset", "yt2018val"], "no public ground truth"),
    (["--val-dset", "lvos"], "--val-dset lvos needs --val-root DIR"),
    (["--val-every", "2"], "--val-every needs --val-dset"),
    (["--val-dset", "dv2017val", "--val-every", "0"], "--val-every 0: must be at least 1"),
    (["--val-dset", "demo", "--val-root", "x"], "drop --val-root"),
    (["--val-dset", "dv2017val", "--val-TH", "1.5"], "--val-TH"),
])
def test_bad_validation_flags_exit_with_usage(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exc:
        main(_argv(tmp_path) + flags)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_a_validation_set_that_cannot_be_read_fails_the_run_before_anything_is_written(tmp_path, capsys):
    (tmp_path / "val" / "JPEGImages").mkdir(parents=True)  # no Annotations, no ImageSets
    argv = _argv(tmp_path, "--max-epochs", "1", "--val-dset", "dv2017val", "--val-root", str(tmp_path / "val"))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: --val-dset dv2017val (root ") and str(tmp_path / "val") in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["val"]  # no checkpoint folder, no log, no cache index
