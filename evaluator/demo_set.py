"""The built-in demo set of `evaluate.py --dset demo`: generated DAVIS-layout videos scored as DAVIS 2017 val.

One definition for evaluate.py and for validation while training (`--val-dset demo`), so both score
the very same videos by the same rules.
"""
from __future__ import annotations

# dataset.synthetic.generate_dataset's arguments for the demo videos
DEMO_DATA = {"layout": "davis", "num_videos": 4, "num_frames": 30, "size": (176, 320), "seed": 1000, "split": "val"}
DEMO_SCORED_AS = "dv2017val"


def scoring_set(dset: str) -> str:
    """The set whose reader and scoring rules apply to --dset `dset` ('demo' is scored as DAVIS 2017 val)."""
    return DEMO_SCORED_AS if dset == "demo" else dset
