"""Synthetic videos in which tracking from the first mask alone is made to fail, to measure corrections.

Three kinds of event happen to object 1 at frame `event`:
- "appearance": it changes its surface and outline at once (a person turning round, a lamp switched
  on), and a distractor with object 1's old surface wanders in the scene from the start;
- "hidden": it is hidden for `hidden_frames` frames (it leaves the view) and comes back elsewhere
  with a turned pose, while the distractor (object 1's surface) stays in view;
- "turns back": it changes its surface and outline as in "appearance" (with no distractor), and
  `turn_back` frames later takes its first look again.
Object 2 is an ordinary second object. Drawn with the shapes and textures of dataset/synthetic.py,
deterministically per (kind, seed).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dataset.synthetic import SENSOR_NOISE, TEXTURE_EXTENT, MovingShape, _compose, _outline
from dataset.textures import background_texture, object_texture

KINDS = ("appearance", "hidden", "turns back")
TRACKED = 1  # the object the event happens to


@dataclass
class HardEventVideo:
    """frames (T,H,W,3) uint8, labels (T,H,W) uint8 (objects 1 and 2; the distractor is unlabelled)."""

    kind: str
    frames: np.ndarray
    labels: np.ndarray
    event: int  # the first frame after the event (the changed or returned object 1)


def render_hard_event(kind: str, seed: int, num_frames: int = 36, size: tuple[int, int] = (176, 320),
                      event: int = 12, hidden_frames: int = 6, turn_back: int = 12) -> HardEventVideo:
    """Render one video (see the module docstring); object 1 is seen on every frame but the hidden ones."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not 0 < event < num_frames - 1:
        raise ValueError(f"event {event} must lie inside the video's {num_frames} frames")
    rng = np.random.default_rng([KINDS.index(kind), seed])
    height, width = size
    diagonal = float(np.hypot(height, width))
    background = background_texture(rng, height, width).astype(np.float32)
    radius = min(height, width) * 0.2

    def shape(hue: float, x: float, y: float, scale: float = 1.0) -> MovingShape:
        size_px = int(np.clip(2 * TEXTURE_EXTENT * radius * scale, 64, 256))
        outline = _outline(rng, str(rng.choice(["ellipse", "polygon", "blob"])))
        return MovingShape(outline, object_texture(rng, size_px, hue, TEXTURE_EXTENT), x, y, radius * scale,
                           rng.uniform(0, 2 * np.pi))

    hue = rng.uniform()
    tracked = shape(hue, 0.25 * width, 0.45 * height)
    other = shape((hue + 0.5) % 1.0, 0.75 * width, 0.6 * height, 0.8)
    distractor = MovingShape(tracked.outline, tracked.texture, 0.6 * width, 0.3 * height, tracked.radius,
                             tracked.angle + np.pi / 3)
    changed = shape((hue + 0.33) % 1.0, 0.0, 0.0)  # object 1 after an appearance change
    original = tracked
    for obj in (tracked, other, distractor, changed):
        obj.set_motion(rng, "slow", diagonal)
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    labels = np.zeros((num_frames, height, width), np.uint8)
    hidden = range(event - hidden_frames, event) if kind == "hidden" else range(0)
    for t in range(num_frames):
        if t > 0:
            for obj in (tracked, other, distractor):
                obj.step(height, width)
            if t == event and kind != "hidden" or t == event + turn_back and kind == "turns back":
                # same place, size and motion, the other surface and outline
                look = changed if t == event else original
                look.x, look.y, look.radius, look.angle = tracked.x, tracked.y, tracked.radius, tracked.angle
                look.velocity = tracked.velocity
                tracked = look
            elif t == event:  # hidden: back on the other side of the frame, turned
                tracked.x, tracked.y = width - tracked.x, height - tracked.y
                tracked.angle += np.pi / 2
            if t % 8 == 0:  # new slow motion now and then, so nothing stays put
                for obj in (tracked, other, distractor):
                    obj.set_motion(rng, "slow" if rng.random() < 0.7 else "still", diagonal)
        layers = [] if kind == "turns back" else [(distractor, 0)]
        layers += [(other, 2)] + ([] if t in hidden else [(tracked, TRACKED)])
        image, labels[t] = _compose(background, layers)
        image += rng.normal(0.0, SENSOR_NOISE, size=image.shape).astype(np.float32)
        frames[t] = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    return HardEventVideo(kind, frames, labels, event)
