"""train.py when the latest checkpoint of a run is damaged: it names the previous good one and the command to resume."""
from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from torch.optim.lr_scheduler import StepLR

from models.checkpoint import CheckpointError
from models.config import NetworkConfig, TrainConfig
from models.gfrtm import GFRTM
from train import main
from trainer.checkpoints import checkpoint_path, resume, save_training_checkpoint
from trainer.loop import make_optimizer
from tests.test_train_cli import _argv, one_torch_thread  # noqa: F401 (the run's flags; an autouse fixture)


def _save_epochs(folder: Path, epochs: range) -> tuple:
    """Checkpoints of run 'cli' as train.py writes them (model, optimizer, scheduler, rng, backbone weights);
    returns the network, optimiser and scheduler they were saved from."""
    net = GFRTM(NetworkConfig())
    cfg = TrainConfig()
    optimizer = make_optimizer(net, cfg)
    scheduler = StepLR(optimizer, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
    for epoch in epochs:
        save_training_checkpoint(checkpoint_path(folder, "cli", epoch), net, optimizer, scheduler, "cli", epoch,
                                 {"loss": 1.0 / epoch}, "none")
    return net, optimizer, scheduler


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # as a full disk or a killed copy leaves it


def test_damaged_latest_checkpoint_names_the_previous_good_one_and_the_command(tmp_path, capsys):
    folder = tmp_path / "ckpt"
    _save_epochs(folder, range(1, 4))
    run = folder / "cli"
    _truncate(run / "cli_ep0003.pth")

    assert main(_argv(tmp_path, "--max-epochs", "3")) == 2
    everything = capsys.readouterr().err
    err = everything.strip().splitlines()[-1]  # (progress bars of the data preparation come first)
    assert err.startswith("error: ") and "Traceback" not in everything
    damaged = run / "cli_ep0003.pth"
    move = f"mv {shlex.quote(str(damaged))} {shlex.quote(str(damaged) + '.damaged')}"
    assert f"the latest checkpoint of this run, {damaged}, is damaged or truncated" in err
    assert f"The previous good checkpoint is {run / 'cli_ep0002.pth'} (epoch 2)" in err
    assert f"`{move}` and run the same command again" in err and "trust-pickle" not in err

    subprocess.run(move, shell=True, check=True)  # what the message says to do
    assert main(_argv(tmp_path, "--max-epochs", "2")) == 0  # the same run now resumes from epoch 2
    out = capsys.readouterr().out
    assert f"resuming from {run / 'cli_ep0002.pth'} (epoch 2 done)" in out
    assert sorted(p.name for p in run.iterdir()) == ["cli_ep0001.pth", "cli_ep0002.pth", "cli_ep0003.pth.damaged"]


def test_damaged_earlier_checkpoints_are_skipped_and_none_left_says_so(tmp_path):
    net = _save_epochs(tmp_path, range(1, 4))
    run = tmp_path / "cli"
    for epoch in (2, 3):
        _truncate(run / f"cli_ep000{epoch}.pth")
    with pytest.raises(CheckpointError, match=re.escape(f"previous good checkpoint is {run / 'cli_ep0001.pth'} (epoch 1)")):
        resume(run / "cli_ep0003.pth", *net, "resnet18", "none")

    _truncate(run / "cli_ep0001.pth")
    with pytest.raises(CheckpointError) as info:
        resume(run / "cli_ep0003.pth", *net, "resnet18", "none")
    message = str(info.value)
    assert "no earlier checkpoint of the run can be read" in message and "start the run from the beginning" in message
    assert "mv " in message and "cli_ep0003.pth.damaged" in message
