"""Frame sizes on the command line: WIDTHxHEIGHT, as in 854x480, everywhere."""
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
