"""Atomic file writes: a file is either absent or complete, never half-written."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; read once, at import, before any threads
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it onto `path`.

    The temporary file lives in the destination folder so the final `os.replace` is an
    atomic rename on the same filesystem. On any exception the temporary file is removed
    and `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes owner-only files; results are to be shared
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)` and move the result onto `path` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def probe_writable(folder: str | os.PathLike) -> None:
    """Create `folder` and write (then remove) a file there; raises OSError when that fails.

    Entry points call this before long work, so an unwritable output is found in the first second.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=folder)
    os.close(fd)
    os.unlink(probe)


def unwritable_reason(folder: str | os.PathLike) -> str | None:
    """None when a file can be written in `folder` (created if need be), else why not, for an error message."""
    try:
        probe_writable(folder)
    except OSError as err:
        return f"cannot write to {folder} ({err.strerror or err})"
    return None
