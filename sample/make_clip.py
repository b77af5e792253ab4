"""Regenerates sample/clip/: 16 frames of a synthetic video (two objects, 320x176) and the palette mask of
its first frame, the clip the README's Python example segments. Run from the repository root:

    python sample/make_clip.py
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project's modules, run as a script

from dataset.synthetic import render_video  # noqa: E402
from lib.image_io import write_image, write_label_png  # noqa: E402

SEED = 3000  # apart from the demo model's training (1..), demo and held-out videos
out = Path(__file__).resolve().parent / "clip"
video = render_video(np.random.default_rng([SEED, 0]), 16, (176, 320), 2, later_objects=False)
for t, frame in enumerate(video.frames):
    write_image(out / "frames" / f"{t:05d}.jpg", frame)
write_label_png(out / "first_mask.png", video.labels[0])
print(f"wrote {len(video.frames)} frames and the first frame's mask to {out}")
