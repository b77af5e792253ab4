"""lib/interrupts.py: SIGTERM becomes an interrupt, exit statuses and the one-line message."""
import os
import signal
import sys

import pytest

from lib.interrupts import (EXIT_SIGINT, EXIT_SIGTERM, Terminated, command_line, exit_status, interrupted_line,
                            sigterm_as_interrupt)


def test_sigterm_raises_terminated_inside_the_block_and_the_old_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated) as caught:
        with sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before the next bytecode
    assert isinstance(caught.value, KeyboardInterrupt)
    assert exit_status(caught.value) == EXIT_SIGTERM == 143
    assert signal.getsignal(signal.SIGTERM) is before


def test_ctrl_c_status_and_line():
    assert exit_status(KeyboardInterrupt()) == EXIT_SIGINT == 130
    line = interrupted_line(KeyboardInterrupt(), "3 of 5 sequences are saved in out/", "python evaluate.py --restart c")
    assert line == "interrupted (Ctrl-C): 3 of 5 sequences are saved in out/; to continue: python evaluate.py --restart c"
    assert "\n" not in interrupted_line(Terminated(), "nothing saved", None)
    assert interrupted_line(Terminated(), "nothing saved", None).startswith("terminated (SIGTERM)")


def test_command_line_replaces_removes_and_appends_flags(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["evaluate.py"])
    argv = ["--dset", "demo", "--restart", "a", "--output=o 1", "--TH", "0.7", "1.0"]
    assert command_line(argv, {"--restart": "b"}) == "python evaluate.py --dset demo --restart b '--output=o 1' --TH 0.7 1.0"
    assert command_line(argv, {"--restart": None, "--output": "x"}) == "python evaluate.py --dset demo --output x --TH 0.7 1.0"
    assert command_line(argv, {"--overwrite": "1"}).endswith("--TH 0.7 1.0 --overwrite 1")
    assert command_line(["--dset", "demo"], {"--overwrite-missing": None}) == "python evaluate.py --dset demo"


def test_drop_flag_also_drops_the_abbreviations_argparse_accepts():
    from lib.interrupts import drop_flag

    args = ["--video", "v.mp4", "--overw", "--output", "o", "--restart=s1", "--TH", "0.7"]
    assert drop_flag(args, "--overwrite", takes_value=False) == ["--video", "v.mp4", "--output", "o", "--restart=s1",
                                                                  "--TH", "0.7"]
    assert drop_flag(["--rest", "s1", "--overwrite"], "--restart", takes_value=True) == ["--overwrite"]
    assert drop_flag(args, "--restart", takes_value=True) == ["--video", "v.mp4", "--overw", "--output", "o",
                                                              "--TH", "0.7"]
