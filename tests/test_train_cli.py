"""train.py end to end on generated synthetic videos (tiny frames, CPU), and its errors for bad input."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.checkpoint import save_gfrtm
from models.config import NetworkConfig
from models.gfrtm import GFRTM
from train import main

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
STAT_KEYS = {"loss", "seg", "delta", "gate", "iou", "reuse_rate", "lr", "tm_cache_hits"}


def _argv(tmp: Path, *extra: str) -> list[str]:
    return ["--dset", "synthetic", "--backbone-weights", "none", "--size", "112x64", "--seq-len", "3",
            "--batch-size", "2", "--epoch-samples", "2", "--workers", "0", "--synthetic-videos", "2",
            "--synthetic-frames", "5", "--name", "cli", "--checkpoints", str(tmp / "ckpt"),
            "--tensorboard", str(tmp / "tb"), "--tmcache", str(tmp / "tmcache"), *extra]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors gain nothing from threads, and on a shared 2-core machine busy OpenMP threads slow tests ~10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_synthetic_run_writes_checkpoints_logs_cache_and_resumes(tmp_path, capsys):
    assert main(_argv(tmp_path, "--max-epochs", "1")) == 0
    ep1 = tmp_path / "ckpt" / "cli" / "cli_ep0001.pth"
    ckpt = torch.load(ep1, weights_only=True)
    assert ckpt["name"] == "cli" and ckpt["epoch"] == 1 and ckpt["backbone_weights"] == "none"
    assert STAT_KEYS <= set(ckpt["stats"]) and ckpt["stats"]["samples"] == 2
    assert 0.0 <= ckpt["stats"]["reuse_rate"] <= 1.0 and 0.0 <= ckpt["stats"]["iou"] <= 1.0
    if (SHARED / "spec").is_dir():
        lines = (SHARED / "spec" / "checkpoint_keys_resnet18.tsv").read_text().splitlines()
        spec = {line.split("\t")[0]: line.split("\t")[1] for line in lines if line and not line.startswith("#")}
        assert {k: str(tuple(v.shape)) for k, v in ckpt["model"].items()} == spec
    assert any((tmp_path / "tb" / "cli").glob("events.out.tfevents.*"))
    cache = tmp_path / "tmcache" / "resnet18-c32_gTrue"
    assert (cache / "cache_info.json").is_file() and any(cache.glob("*/*.*.layer4.pth"))
    assert any((tmp_path / "tmcache" / "data").iterdir())  # the generated synthetic videos
    first_written = ep1.stat().st_mtime_ns

    capsys.readouterr()
    assert main(_argv(tmp_path, "--max-epochs", "2")) == 0
    assert f"resuming from {ep1}" in capsys.readouterr().out
    ep2 = torch.load(tmp_path / "ckpt" / "cli" / "cli_ep0002.pth", weights_only=True)
    assert ep2["epoch"] == 2 and ep1.stat().st_mtime_ns == first_written
    assert ep2["scheduler"]["last_epoch"] == 2
    assert ep2["stats"]["tm_cache_hits"] + ep2["stats"]["tm_cache_misses"] == 2  # one lookup per sample


@pytest.mark.parametrize("dset, flag", [("dv2017", "--davis-root"), ("yt2018", "--ytvos-root"),
                                        ("all", "--davis-root")])
def test_missing_dataset_names_the_flag(tmp_path, capsys, dset, flag):
    argv = _argv(tmp_path, "--max-epochs", "1")
    argv[argv.index("synthetic")] = dset
    assert main(argv + [flag, str(tmp_path / "no-data")]) == 2
    err = capsys.readouterr().err
    assert "no-data" in err and flag in err


def test_unwritable_checkpoint_folder_fails_before_training(tmp_path, capsys):
    (tmp_path / "a-file").write_text("in the way")
    argv = _argv(tmp_path, "--max-epochs", "1")
    argv[argv.index("--checkpoints") + 1] = str(tmp_path / "a-file" / "ckpt")
    assert main(argv) == 2
    assert "--checkpoints" in capsys.readouterr().err
    assert not (tmp_path / "tmcache" / "data").exists()  # nothing was generated or trained


def test_checkpoints_of_the_other_backbone_are_refused(tmp_path, capsys):
    save_gfrtm(tmp_path / "rn101.pth", GFRTM(NetworkConfig(backbone="resnet101")))
    assert main(_argv(tmp_path, "--max-epochs", "1", "--initPth", str(tmp_path / "rn101.pth"))) == 2
    assert "--ftext resnet101" in capsys.readouterr().err

    save_gfrtm(tmp_path / "ckpt" / "cli" / "cli_ep0003.pth", GFRTM(NetworkConfig(backbone="resnet101")),
               epoch=3, optimizer={}, scheduler={})
    assert main(_argv(tmp_path, "--max-epochs", "4")) == 2
    err = capsys.readouterr().err
    assert "cli_ep0003.pth" in err and "resnet101" in err


@pytest.mark.parametrize("flags", [["--size", "480"], ["--size", "16x16"], ["--seq-len", "1"],
                                   ["--dset", "davis2016"], ["--lr", "0"], ["--m2", "-0.1"], ["--dev", "gpu0"]])
def test_bad_flags_exit_with_usage(tmp_path, flags, capsys):
    with pytest.raises(SystemExit) as exc:
        main(_argv(tmp_path) + flags)
    assert exc.value.code == 2
    assert flags[0] in capsys.readouterr().err


def test_cuda_on_a_machine_without_it_is_refused_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exc:
        main(_argv(tmp_path) + ["--dev", "cuda:0"])
    assert exc.value.code == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "ckpt").exists()
