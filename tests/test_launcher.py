"""The "to continue" command of a torchrun process is the launcher's own command line, options included."""
from __future__ import annotations

import sys

from lib.launcher import continue_command, launcher_options


def test_the_options_between_torchrun_and_the_script_are_kept():
    py = "/usr/bin/python3"
    assert launcher_options([py, "/venv/bin/torchrun", "--standalone", "--nproc_per_node=2", "evaluate.py", "--TH",
                             "0.7"], "evaluate.py") == ["--standalone", "--nproc_per_node=2"]
    assert launcher_options(["torchrun", "--nnodes=2", "--rdzv-endpoint", "host:29400", "train.py"],
                            "train.py") == ["--nnodes=2", "--rdzv-endpoint", "host:29400"]
    assert launcher_options([py, "-m", "torch.distributed.run", "--nproc_per_node", "4", "evaluate.py"],
                            "evaluate.py") == ["--nproc_per_node", "4"]
    assert launcher_options([py, "-m", "pytest", "evaluate.py"], "evaluate.py") is None  # not a launcher
    assert launcher_options(["torchrun", "--no-python", "wrap.sh"], "evaluate.py") is None  # a wrapper script


def test_without_torchrun_the_command_is_unchanged(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert continue_command("python evaluate.py --dset demo") == "python evaluate.py --dset demo"


def test_when_the_launcher_cannot_be_read_its_options_are_rebuilt(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["evaluate.py"])  # pytest's parent process is not torchrun
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert continue_command("python evaluate.py --dset demo") == \
        "torchrun --standalone --nproc_per_node=8 evaluate.py --dset demo"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert continue_command("python evaluate.py --dset demo") == \
        "torchrun --nnodes=2 --nproc_per_node=4 <the same rendezvous options> evaluate.py --dset demo (on every machine)"
