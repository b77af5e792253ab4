"""Command-line value types shared by the entry points: frame sizes (WIDTHxHEIGHT, as in 854x480,
everywhere) and reuse thresholds."""
from __future__ import annotations

import argparse


def parse_frame_size(text: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' (as in 854x480) -> (H, W); a ValueError names the expected form."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size {text!r}: expected WIDTHxHEIGHT, e.g. 854x480") from None
    if width < 1 or height < 1:
        raise ValueError(f"size {text!r}: width and height must be positive")
    return height, width


def frame_size_arg(text: str) -> tuple[int, int]:
    """argparse `type=` for WIDTHxHEIGHT: the error message reaches the user."""
    try:
        return parse_frame_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def reuse_threshold_arg(text: str) -> float:
    """argparse `type=` for --TH: a number in [0, 1] (0 reuses whenever it can, 1 never reuses)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text}: a reuse threshold lies in [0, 1] (1 never reuses)")
    return value
