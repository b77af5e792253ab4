"""Folders a run creates, so that a run that fails can take them away again (only while they are empty)."""
from __future__ import annotations

from pathlib import Path


def missing_folders(*folders: Path) -> list[Path]:
    """Those of `folders` and their parents that do not exist yet, deepest first."""
    missing: set[Path] = set()
    for folder in folders:
        for path in [Path(folder), *Path(folder).parents]:
            if path.exists() or path.is_symlink():
                break
            missing.add(path)
    return sorted(missing, key=lambda path: len(path.parts), reverse=True)


def remove_empty_folders(folders: list[Path]) -> None:
    """Remove those of `folders` (deepest first, as missing_folders lists them) that are still empty.

    A folder that holds anything (a checkpoint, logs, results) stays.
    """
    for folder in folders:
        try:
            folder.rmdir()  # only ever removes an empty folder
        except OSError:
            pass
