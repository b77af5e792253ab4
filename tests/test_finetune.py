"""--finetune (every trained part from a G-FRTM checkpoint) and the training settings that checkpoints record."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch.optim.lr_scheduler import StepLR

from lib.distributed import DistInfo
from lib.file_hash import file_sha256
from models.checkpoint import CheckpointError, load_checkpoint, save_gfrtm
from models.config import NetworkConfig, TrainConfig
from models.gfrtm import GFRTM
from tests.test_train_cli import _argv, one_torch_thread  # noqa: F401 (the run's flags; an autouse fixture)
from tests.test_train_step import TINY_TM
from train import main, paths
from trainer.checkpoints import checkpoint_path, read_finetune, save_training_checkpoint
from trainer.loop import Trainer, make_optimizer
from trainer.options import parse_options
from trainer.run_settings import changed_settings, training_settings

DEMO_MODEL = Path(__file__).resolve().parents[1] / "weights" / "demo_synthetic_rn18.pth"
CPU = DistInfo(0, 1, torch.device("cpu"))


def _options(tmp: Path, *flags: str):
    opts = parse_options(_argv(tmp, *flags), paths)
    return dataclasses.replace(opts, cfg=dataclasses.replace(opts.cfg, target_model_override=TINY_TM))


def test_finetune_starts_every_trained_part_from_the_checkpoint_and_a_resume_keeps_its_source(tmp_path, capsys):
    opts = _options(tmp_path, "--finetune", str(DEMO_MODEL))
    trainer = Trainer(opts, CPU)
    demo = load_checkpoint(DEMO_MODEL)["model"]
    assert trainer.start_epoch == 1 and trainer.optimizer.state_dict()["state"] == {}  # a fresh optimiser
    for key, value in trainer.net.state_dict().items():  # convGS, Tmatching, Convert_Diff and refiner alike
        assert torch.equal(value, demo[key]), key
    assert "the optimiser and the learning-rate schedule start fresh at epoch 1" in capsys.readouterr().out
    saved = torch.load(trainer.save(1, {"loss": 1.0}), weights_only=True)
    assert saved["settings"]["finetune"] == {"path": str(DEMO_MODEL), "sha256": file_sha256(DEMO_MODEL)}
    assert saved["settings"]["batch_size"] == 2 and saved["settings"]["image_size"] == [64, 112]

    other = tmp_path / "other.pth"
    save_gfrtm(other, GFRTM(NetworkConfig()), backbone_weights="none")
    resumed = Trainer(_options(tmp_path, "--finetune", str(other)), CPU)  # the checkpoint wins
    assert resumed.start_epoch == 2 and f"--finetune {other} ignored" in capsys.readouterr().out
    assert resumed.settings["finetune"]["path"] == str(DEMO_MODEL)  # what the run really started from


def test_finetune_refuses_another_backbone_other_backbone_weights_and_init_pth_too(tmp_path, capsys):
    rn101 = tmp_path / "rn101.pth"
    save_gfrtm(rn101, GFRTM(NetworkConfig(backbone="resnet101")))
    assert main(_argv(tmp_path, "--max-epochs", "1", "--finetune", str(rn101))) == 2
    err = capsys.readouterr().err
    assert f"--finetune {rn101} was trained with resnet101, this run uses resnet18" in err
    assert "--ftext resnet101" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rn101.pth"]  # refused before anything was made

    published = tmp_path / "published.pth"  # as released: only 'model', trained on ImageNet's backbone
    torch.save({"model": GFRTM(NetworkConfig()).state_dict()}, published)
    with pytest.raises(CheckpointError, match=r"backbone weights imagenet, this run uses --backbone-weights none: "
                                              r"pass --backbone-weights imagenet"):
        read_finetune(published, "resnet18", "none")
    assert set(read_finetune(published, "resnet18", "imagenet")) == set(GFRTM(NetworkConfig()).state_dict())
    torch.save({"model": {k: v for k, v in GFRTM(NetworkConfig()).state_dict().items()
                          if not k.startswith("convGS.")}}, published)  # an FRTM-like file: no gate
    with pytest.raises(CheckpointError, match="missing keys: convGS"):
        read_finetune(published, "resnet18", "imagenet")

    for flags, message in ((["--finetune", str(DEMO_MODEL), "--initPth", str(DEMO_MODEL)], "pass one of them"),
                           (["--finetune", str(tmp_path / "nothing.pth")], "--finetune")):
        with pytest.raises(SystemExit):
            main(_argv(tmp_path, *flags))
        assert message in capsys.readouterr().err


def _checkpoint_of(tmp: Path, epoch: int, settings: dict | None) -> Path:
    net = GFRTM(NetworkConfig())
    optimizer = make_optimizer(net, TrainConfig())
    path = checkpoint_path(tmp / "ckpt", "cli", epoch)
    save_training_checkpoint(path, net, optimizer, StepLR(optimizer, 127), "cli", epoch, {}, "none", settings)
    return path


def test_a_resume_with_other_settings_is_refused_unless_allowed(tmp_path, capsys):
    recorded = training_settings(parse_options(_argv(tmp_path, "--max-epochs", "1"), paths))
    _checkpoint_of(tmp_path, 1, recorded)
    changed = _argv(tmp_path, "--max-epochs", "1", "--batch-size", "4", "--seq-len", "2")
    assert main(changed) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert "--batch-size 2 in the checkpoint, 4 now" in err and "--seq-len 3 in the checkpoint, 2 now" in err
    assert "--allow-changed-settings" in err
    assert not (tmp_path / "tmcache").exists()  # refused before any data was generated or cache written

    assert main(changed + ["--allow-changed-settings"]) == 0  # epoch 1 done: nothing to train
    out = capsys.readouterr().out
    assert "--allow-changed-settings: resuming" in out and "nothing to train" in out

    # what a resume may change: no complaint
    assert main(_argv(tmp_path, "--max-epochs", "1", "--lr", "1e-3", "--workers", "1", "--keep-last", "2")) == 0
    assert "resuming from" in capsys.readouterr().out


def test_a_checkpoint_without_settings_resumes_with_a_note(tmp_path, capsys):
    _checkpoint_of(tmp_path, 1, None)
    assert main(_argv(tmp_path, "--max-epochs", "1")) == 0
    assert "records no training settings (written by an earlier version)" in capsys.readouterr().out


def test_settings_compare_what_shapes_the_result_and_not_what_may_change(tmp_path):
    base = training_settings(parse_options(_argv(tmp_path, "--val-dset", "dv2017val"), paths))
    free = training_settings(parse_options(_argv(tmp_path, "--max-epochs", "9", "--lr", "1e-2", "--workers", "3",
                                                 "--val-dset", "dv2017val", "--val-every", "4", "--val-TH", "0.5",
                                                 "--checkpoints", str(tmp_path / "elsewhere"),
                                                 "--tmcache", str(tmp_path / "cache2")), paths))
    assert changed_settings(base, free) == []
    assert changed_settings(base, training_settings(parse_options(_argv(tmp_path), paths))) == []  # validation off
    other = training_settings(parse_options(_argv(tmp_path, "--m1", "0.5", "--seed", "3", "--val-dset", "demo"), paths))
    assert {c.key for c in changed_settings(base, other)} == {"m1", "seed", "validation_set"}
    sized = training_settings(parse_options(_argv(tmp_path, "--size", "128x64", "--val-dset", "dv2017val"), paths))
    [change] = changed_settings(base, sized)
    assert change.describe() == "--size 112x64 in the checkpoint, 128x64 now"
    newer = {**base, "a_setting_of_a_later_version": 1}
    assert changed_settings(base, newer) == []  # only what both record is compared
