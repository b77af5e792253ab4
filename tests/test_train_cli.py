"""train.py end to end on generated synthetic videos (tiny frames, CPU), and its errors for bad input."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from models.checkpoint import save_gfrtm
from models.config import NetworkConfig
from models.gfrtm import GFRTM
from train import main, paths
from trainer.checkpoints import epoch_checkpoints, prune_checkpoints
from trainer.loop import check_before_training, record_cache_index
from trainer.options import TrainingError, build_parser, parse_options

KEY_TABLE = Path(__file__).resolve().parents[1] / "weights" / "checkpoint_keys_resnet18.tsv"
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
    lines = KEY_TABLE.read_text().splitlines()
    spec = {line.split("\t")[0]: line.split("\t")[1] for line in lines if line and not line.startswith("#")}
    assert {k: str(tuple(v.shape)) for k, v in ckpt["model"].items()} == spec
    assert any((tmp_path / "tb" / "cli").glob("events.out.tfevents.*"))
    cache = tmp_path / "tmcache" / "resnet18-c32_gTrue"
    assert (cache / "cache_info.json").is_file() and any(cache.glob("*/*.*.layer4.pth"))
    assert any((tmp_path / "tmcache" / "data").iterdir())  # the generated synthetic videos
    first_written = ep1.stat().st_mtime_ns

    capsys.readouterr()
    assert main(_argv(tmp_path, "--max-epochs", "2", "--lr", "1e-3")) == 0  # resumed with another --lr
    out = capsys.readouterr().out
    assert f"resuming from {ep1}" in out and "--lr 0.001 replaces the checkpoint's initial lr 0.0005" in out
    ep2 = torch.load(tmp_path / "ckpt" / "cli" / "cli_ep0002.pth", weights_only=True)
    assert ep2["epoch"] == 2 and ep1.stat().st_mtime_ns == first_written
    assert [g["initial_lr"] for g in ep2["optimizer"]["param_groups"]] == [1e-3, 1e-3]
    assert ep2["scheduler"]["base_lrs"] == [1e-3, 1e-3] and ep2["stats"]["lr"] == 1e-3
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


def test_an_init_pth_is_read_once_and_loaded_into_the_refinement_network(tmp_path, capsys, monkeypatch):
    import trainer.checkpoints

    torch.manual_seed(3)
    save_gfrtm(tmp_path / "init.pth", GFRTM(NetworkConfig()))
    reads = []
    load = trainer.checkpoints.load_checkpoint
    monkeypatch.setattr(trainer.checkpoints, "load_checkpoint", lambda path, *a, **k: reads.append(path) or load(
        path, *a, **k))
    assert main(_argv(tmp_path, "--max-epochs", "1", "--initPth", str(tmp_path / "init.pth"))) == 0
    assert reads == [tmp_path / "init.pth"]
    assert f"--initPth {tmp_path / 'init.pth'}: loaded" in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"\x8f\x13 not a checkpoint " * 4, "refused", "no refiner"],
                         ids=["damaged", "refused", "no-refiner"])
def test_an_unusable_init_pth_is_refused_before_any_folder_or_data_is_made(tmp_path, capsys, content):
    bad = tmp_path / "bad init.pth"
    if content == "refused":  # a pickle that would run code: refused unread
        torch.save({"model": {}, "stats": print}, bad)
    elif content == "no refiner":
        torch.save({"model": {"backbone.conv1.weight": torch.zeros(1)}}, bad)
    else:
        bad.write_bytes(content)
    assert main(_argv(tmp_path, "--max-epochs", "1", "--initPth", str(bad))) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and err.startswith("error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad init.pth"]  # no ckpt/cli, tb/cli, tmcache, data


def test_a_run_that_fails_before_its_first_checkpoint_removes_the_empty_folders_it_made(tmp_path, capsys,
                                                                                        monkeypatch):
    import trainer.loop

    def fail(*args, **kwargs):
        raise TrainingError("the model could not be built")

    monkeypatch.setattr(trainer.loop, "Trainer", fail)
    (tmp_path / "tb").mkdir()  # there before the run: kept
    (tmp_path / "ckpt" / "other").mkdir(parents=True)
    assert main(_argv(tmp_path, "--max-epochs", "1")) == 2
    assert "the model could not be built" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["other"]  # ckpt/cli removed, ckpt kept
    assert list((tmp_path / "tb").iterdir()) == []  # tb/cli removed, tb (there before) kept
    assert any((tmp_path / "tmcache" / "data").iterdir())  # folders that hold files stay

    (tmp_path / "ckpt" / "other").rmdir()
    (tmp_path / "ckpt" / "cli").mkdir()  # there before the run, empty: kept
    assert main(_argv(tmp_path, "--max-epochs", "1")) == 2
    assert (tmp_path / "ckpt" / "cli").is_dir() and not (tmp_path / "tb" / "cli").exists()


@pytest.mark.parametrize("flags", [["--size", "480"], ["--size", "16x16"], ["--seq-len", "1"],
                                   ["--dset", "davis2016"], ["--lr", "0"], ["--m2", "-0.1"], ["--dev", "gpu0"],
                                   ["--name", "runs/a"], ["--name", "a\\b"], ["--name", ""], ["--name", "."],
                                   ["--name", ".."], ["--initPth", "no-such-checkpoint.pth"], ["--keep-last", "0"]])
def test_bad_flags_exit_with_usage(tmp_path, flags, capsys):
    with pytest.raises(SystemExit) as exc:
        main(_argv(tmp_path) + flags)
    assert exc.value.code == 2
    assert flags[0] in capsys.readouterr().err
    assert not (tmp_path / "ckpt").exists()


def test_lr_is_marked_as_given_only_when_on_the_command_line(tmp_path):
    default = parse_options(_argv(tmp_path), paths)
    assert default.cfg.lr == 5e-4 and not default.lr_given
    given = parse_options(_argv(tmp_path, "--lr", "5e-4"), paths)
    assert given.cfg.lr == 5e-4 and given.lr_given


def test_help_shows_zero_defaults():
    text = " ".join(build_parser(paths).format_help().split())  # argparse wraps lines
    assert "dead zone of the gate loss (default: 0.0)" in text
    assert "random seed (default: 0)" in text
    assert "(default: 0.0005)" in text  # --lr, which defaults to None to tell whether it was given


def test_a_cache_of_another_frame_size_or_other_synthetic_videos_is_refused(tmp_path, capsys):
    opts = parse_options(_argv(tmp_path), paths)
    check_before_training(opts, 1)
    record_cache_index(opts)  # the cache index of 112x64, as a run writes it once its data is accepted
    assert (tmp_path / "tmcache" / "resnet18-c32_gTrue" / "cache_info.json").is_file()
    for flags, key in ((["--size", "128x64"], "image_size"), (["--synthetic-videos", "3"], "synthetic_data")):
        assert main(_argv(tmp_path, "--max-epochs", "1", "--name", "other", *flags)) == 2
        err = capsys.readouterr().err
        assert key in err and "--tmcache" in err
    assert not any(p.is_file() for p in (tmp_path / "tmcache" / "data").rglob("*"))  # refused before generating


def test_unwritable_synthetic_root_fails_before_training(tmp_path, capsys):
    (tmp_path / "a-file").write_text("in the way")
    assert main(_argv(tmp_path, "--max-epochs", "1", "--synthetic-root", str(tmp_path / "a-file" / "data"))) == 2
    assert "--synthetic-root" in capsys.readouterr().err


def test_read_only_cache_must_exist(tmp_path, capsys):
    assert main(_argv(tmp_path, "--max-epochs", "1", "--tmcache-readonly")) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "tmcache") in err and "--tmcache-readonly" in err
    (tmp_path / "tmcache" / "resnet101-c32_gTrue").mkdir(parents=True)  # a cache, but not of this backbone
    assert main(_argv(tmp_path, "--max-epochs", "1", "--tmcache-readonly")) == 2
    assert "no resnet18-c32_gTrue folder" in capsys.readouterr().err


def test_read_only_cache_trains_on_synthetic_videos_written_elsewhere(tmp_path):
    cache = tmp_path / "tmcache" / "resnet18-c32_gTrue"
    cache.mkdir(parents=True)
    assert main(_argv(tmp_path, "--max-epochs", "1", "--tmcache-readonly")) == 0
    assert list((tmp_path / "tmcache").rglob("*")) == [cache]  # nothing written to the read-only cache
    assert any((tmp_path / "ckpt" / "data").iterdir())  # the videos went under --checkpoints


def test_cuda_on_a_machine_without_it_is_refused_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exc:
        main(_argv(tmp_path) + ["--dev", "cuda:0"])
    assert exc.value.code == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "ckpt").exists()


def test_ytvos_split_file_limits_training_to_its_videos(tmp_path, capsys):
    from dataset.synthetic import generate_dataset

    root = generate_dataset(tmp_path / "ytvos", "ytvos", num_videos=3, num_frames=21, size=(64, 112), seed=4,
                            max_objects=1, split="train")
    (tmp_path / "split.txt").write_text("synth001\n")
    argv = _argv(tmp_path, "--max-epochs", "1", "--ytvos-root", str(root))
    argv[argv.index("synthetic")] = "yt2018"
    assert main(argv + ["--ytvos-split-file", str(tmp_path / "split.txt")]) == 0
    fitted = {p.name for p in (tmp_path / "tmcache").glob("resnet18-*/*") if p.is_dir()}
    assert fitted == {"synth001"}  # both samples came from the listed video

    assert main(argv + ["--ytvos-split-file", str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt: no such file" in capsys.readouterr().err
    assert main(_argv(tmp_path, "--ytvos-split-file", str(tmp_path / "split.txt"))) == 2
    assert "reads no YouTube-VOS videos" in capsys.readouterr().err


def test_keep_last_prunes_older_epochs_up_to_the_one_just_saved(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    for epoch in (1, 2, 3, 4, 9):
        (folder / f"run_ep{epoch:04d}.pth").write_bytes(b"x")
    (folder / ".run_ep0005.pth.abc.tmp").write_bytes(b"a save in progress")
    (folder / "run_ep0002.pth.bak").write_bytes(b"not a checkpoint name")
    assert prune_checkpoints(tmp_path, "run", keep=2, saved_epoch=4) == [folder / "run_ep0001.pth",
                                                                       folder / "run_ep0002.pth"]
    left = sorted(p.name for p in folder.iterdir())
    assert left == [".run_ep0005.pth.abc.tmp", "run_ep0002.pth.bak", "run_ep0003.pth", "run_ep0004.pth",
                    "run_ep0009.pth"]  # a later epoch's file (another run of the name) never pushes out the new one
    assert prune_checkpoints(tmp_path, "run", keep=1, saved_epoch=9) == [folder / "run_ep0003.pth",
                                                                       folder / "run_ep0004.pth"]
    assert [e for e, _ in epoch_checkpoints(tmp_path, "run")] == [9]


def test_an_interrupt_behind_another_error_is_still_the_interrupt(monkeypatch):
    from lib.interrupts import Terminated
    from trainer.interrupted import continue_command, interrupt_of

    stop = Terminated()
    try:
        try:
            raise stop
        except Terminated:
            raise RuntimeError("DataLoader worker (pid 7) is killed by signal: Terminated.")
    except RuntimeError as err:
        assert interrupt_of(err) is stop
    assert interrupt_of(RuntimeError("a real error")) is None
    monkeypatch.setattr(sys, "argv", ["train.py"])
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert continue_command(["--name", "a b"]) == "torchrun --standalone --nproc_per_node=4 train.py --name 'a b'"
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert continue_command(["--name", "a"]) == "python train.py --name a"


def test_an_interrupt_inside_a_finalizer_is_kept_for_the_next_check():
    import os
    import signal

    from lib.interrupts import Terminated, sigterm_as_interrupt
    from trainer.interrupted import interrupt_of
    from trainer.signals import kept_across_finalizers, raise_if_interrupted

    class JoinsWorkers:
        def __del__(self):  # as the DataLoader iterator's, which waits for its workers between epochs
            os.kill(os.getpid(), signal.SIGINT)
            self.after = True  # the handler runs here; Python would print and drop a KeyboardInterrupt

    before = signal.getsignal(signal.SIGINT)
    with sigterm_as_interrupt(), kept_across_finalizers():
        raise_if_interrupted()  # nothing received yet
        obj = JoinsWorkers()
        del obj  # no exception here...
        assert interrupt_of(RuntimeError("a peer process is gone")).__class__ is KeyboardInterrupt
        with pytest.raises(KeyboardInterrupt):
            raise_if_interrupted()  # ...but at the next check
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signal.SIGTERM)  # outside a finalizer: at once
    assert signal.getsignal(signal.SIGINT) is before
