"""Atomic writes: complete or absent, never half-written, and readable as any new file would be."""
from __future__ import annotations

import os
import stat

import pytest

from lib.atomic import atomic_path, atomic_write_text, probe_writable


def test_written_file_has_the_modes_of_an_ordinary_new_file(tmp_path):
    atomic_write_text(tmp_path / "result.csv", "a,b\n")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "result.csv").stat().st_mode) == 0o666 & ~mask
    assert (tmp_path / "result.csv").read_text() == "a,b\n"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_probe_writable_creates_the_folder_or_raises(tmp_path):
    probe_writable(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir() and not any((tmp_path / "a" / "b").iterdir())
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):
        probe_writable(tmp_path / "file" / "sub")
