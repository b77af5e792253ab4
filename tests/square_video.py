"""A tiny test video: three coloured squares on noise; squares 1 and 2 drift, square 3 starts late."""
from __future__ import annotations

import numpy as np

COLOURS = ((220, 40, 40), (40, 220, 40), (40, 40, 220))
STARTS = {1: 0, 2: 0, 3: 2}  # object id -> first frame


def square_video(frames: int, height: int, width: int, seed: int, second_x: int, third_x: int):
    """(list of (H,W,3) uint8 frames, start_masks(i) -> {object id: (H,W) bool}) as Tracker.track takes.

    Square 1 moves right from x=8, square 2 left from `second_x`, square 3 stands at `third_x` from frame 2.
    """
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for t in range(frames):
        img = rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)
        lab = np.zeros((height, width), np.uint8)
        for k, (y, x) in enumerate([(8, 8 + t), (30, second_x - t), (40, third_x)]):
            if t < STARTS[k + 1]:
                continue
            img[y:y + 16, x:x + 16] = COLOURS[k]
            lab[y:y + 16, x:x + 16] = k + 1
        images.append(img)
        labels.append(lab)
    return images, lambda i: {oid: labels[i] == oid for oid, s in STARTS.items() if s == i}
