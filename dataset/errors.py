"""The error raised for a dataset that cannot be used as it is."""
from __future__ import annotations


class DatasetError(ValueError):
    """A dataset folder, split file or annotation that is missing or inconsistent.

    The message names the file, says what is wrong and what to do about it.
    """
