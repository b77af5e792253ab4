"""Synthetic videos in the DAVIS or YouTube-VOS layout: the project's built-in data.

Each video shows 1 to `max_objects` textured shapes (ellipses, polygons, blobs) over a generated
landscape-like background. Motion comes in stretches: still (only sensor noise changes) or slow
drift, where a reuse gate can skip work, alternating with fast motion, rotation and scale change,
with a panning camera, a flying unlabelled occluder and sometimes a foreground pole that hides
objects passing behind it. In the YouTube-VOS layout some objects appear later (on a frame of the
every-5th subset, as in the real data).

Everything is drawn from numpy generators seeded by (seed, video index): the same arguments
give the same files.

    python -m dataset.synthetic --out DIR --layout davis|ytvos --videos N --frames N --size WxH --seed S --split val
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dataset.errors import DatasetError
from dataset.textures import background_texture, object_texture
from lib.atomic import atomic_write_text
from lib.image_io import write_image, write_label_png
from lib.arg_types import frame_size_arg

LAYOUTS = ("davis", "ytvos")
MANIFEST = "synthetic_manifest.json"
INCOMPLETE = ".synthetic_incomplete.json"
FORMAT_VERSION = 1
SPARSE_STEP = 5  # YouTube-VOS train/ and valid/ keep every 5th frame
TEXTURE_SIZE = 96  # smallest texture side; object textures grow with the object
TEXTURE_EXTENT = 1.5  # object textures cover local coordinates [-1.5, 1.5]^2; outlines stay within 1.3
CAMERA_MARGIN = 0.12  # the background is this much larger than the frame on each side, for panning
SENSOR_NOISE = 1.5  # grey levels


# ----------------------------------------------------------------------------- motion
# Per-frame motion of each kind of stretch, as fractions of the frame diagonal (speed), of the
# object's size (scale change) and radians (rotation).
MOTION = {
    "still": dict(speed=(0.0, 0.0), scale=(0.0, 0.0), turn=(0.0, 0.0), camera=(0.0, 0.0)),
    "slow": dict(speed=(0.002, 0.006), scale=(0.0, 0.004), turn=(0.0, 0.01), camera=(0.0005, 0.002)),
    "fast": dict(speed=(0.03, 0.06), scale=(0.03, 0.06), turn=(0.04, 0.12), camera=(0.008, 0.02)),
}


def motion_schedule(rng: np.random.Generator, steps: int) -> list[str]:
    """The kind of motion of each step t -> t+1: calm stretches (still or slow) alternating with fast ones."""
    kinds: list[str] = []
    kind = str(rng.choice(["still", "slow"]))
    while len(kinds) < steps:
        length = int(rng.integers(3, 7) if kind == "fast" else rng.integers(3, 9))
        kinds += [kind] * length
        kind = "fast" if kind != "fast" else str(rng.choice(["still", "slow"]))
    return kinds[:steps]


def _random_signed(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds) * rng.choice([-1.0, 1.0]))


def _outline(rng: np.random.Generator, kind: str) -> np.ndarray:
    """A closed outline in local coordinates (radius about 1), (K, 2) float32."""
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    if kind == "ellipse":
        points = np.stack([np.cos(t), rng.uniform(0.5, 0.9) * np.sin(t)], axis=1)
    elif kind == "polygon":
        n = int(rng.integers(3, 8))
        angles = np.sort(rng.uniform(0, 2 * np.pi / n, n) + np.arange(n) * 2 * np.pi / n)
        radii = rng.uniform(0.75, 1.1, n)
        points = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    else:  # blob: a smooth random radius function
        radius = np.ones_like(t)
        for k in range(2, 6):
            radius += rng.uniform(0, 0.2) / np.sqrt(k) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
        points = np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)
    return (points * min(1.0, 1.3 / np.abs(points).max())).astype(np.float32)


class MovingShape:
    """A textured outline with a pose (centre, radius in pixels, angle) that moves step by step."""

    def __init__(self, outline: np.ndarray, texture: np.ndarray, x: float, y: float, radius: float, angle: float):
        self.outline, self.texture = outline, texture
        self.x, self.y, self.radius, self.angle = x, y, radius, angle
        self.base_radius = radius
        self.velocity = np.zeros(2)
        self.growth = 0.0  # relative scale change per step
        self.turn = 0.0

    def set_motion(self, rng: np.random.Generator, kind: str, diagonal: float) -> None:
        spec = MOTION[kind]
        direction = rng.uniform(0, 2 * np.pi)
        self.velocity = rng.uniform(*spec["speed"]) * diagonal * np.array([np.cos(direction), np.sin(direction)])
        self.growth = _random_signed(rng, spec["scale"])
        self.turn = _random_signed(rng, spec["turn"])

    def step(self, height: int, width: int) -> None:
        """Move one frame; bounce off the frame borders and the scale limits."""
        for axis, (pos, low, high) in enumerate(((self.x, 0.1 * width, 0.9 * width),
                                                 (self.y, 0.12 * height, 0.88 * height))):
            pos += self.velocity[axis]
            if not low <= pos <= high:
                self.velocity[axis] *= -1
                pos = float(np.clip(pos, low, high))
            if axis == 0:
                self.x = pos
            else:
                self.y = pos
        radius = self.radius * (1.0 + self.growth)
        if not 0.55 * self.base_radius <= radius <= 1.7 * self.base_radius:
            self.growth *= -1
            radius = float(np.clip(radius, 0.55 * self.base_radius, 1.7 * self.base_radius))
        self.radius = radius
        self.angle += self.turn

    def _linear(self) -> np.ndarray:
        c, s = np.cos(self.angle), np.sin(self.angle)
        return self.radius * np.array([[c, -s], [s, c]])

    def render(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(alpha (H, W) float32 in [0, 1] with anti-aliased edges, colour (H, W, 3) float32)."""
        points = self.outline @ self._linear().T + np.array([self.x, self.y])
        canvas = np.zeros((height, width), np.uint8)
        cv2.fillPoly(canvas, [np.round(points * 8).astype(np.int32)], 255, cv2.LINE_AA, shift=3)
        # texture pixel p -> local coordinates p * 2E/(S-1) - E -> frame
        size = self.texture.shape[0]
        linear = self._linear() * (2 * TEXTURE_EXTENT / (size - 1))
        offset = np.array([self.x, self.y]) - self._linear() @ np.array([TEXTURE_EXTENT, TEXTURE_EXTENT])
        warp = np.concatenate([linear, offset[:, None]], axis=1)
        colour = cv2.warpAffine(self.texture, warp, (width, height), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT)
        return canvas.astype(np.float32) / 255.0, colour.astype(np.float32)


# ----------------------------------------------------------------------------- one video
@dataclass
class SyntheticVideo:
    """A rendered video: frames (T, H, W, 3) uint8, labels (T, H, W) uint8, and its objects."""

    frames: np.ndarray
    labels: np.ndarray
    start_frames: dict[int, int]  # object id -> first frame
    categories: dict[int, str]  # object id -> outline kind
    motion: list[str]  # kind of motion ('still', 'slow', 'fast') of each step t -> t+1


def _start_frames(rng: np.random.Generator, num_objects: int, num_frames: int, later: bool) -> list[int]:
    """Object 1 starts at frame 0; with `later`, the last object (and sometimes others) start on a later
    every-5th frame."""
    starts = [0] * num_objects
    latest = (num_frames - 1) // SPARSE_STEP
    if not later or latest < 1:
        return starts
    for k in range(1, num_objects):
        if k == num_objects - 1 or rng.random() < 0.3:
            starts[k] = SPARSE_STEP * int(rng.integers(1, latest + 1))
    return starts


def _compose(background: np.ndarray, layers: list[tuple[MovingShape, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Draw shapes back to front over a (H, W, 3) float32 background.

    layers: (shape, label); label 0 marks an unlabelled occluder, which removes the labels it covers.
    Labelled shapes cast a soft shadow. Returns (image float32 (H, W, 3), labels uint8 (H, W)).
    """
    height, width = background.shape[:2]
    image = background.copy()
    labels = np.zeros((height, width), np.uint8)
    rendered = [shape.render(height, width) for shape, _ in layers]
    for (shape, label), (alpha, _) in zip(layers, rendered):
        if label:  # shadows first, so no object is darkened by its own shadow
            shadow = cv2.GaussianBlur(alpha, (0, 0), 0.08 * shape.radius)
            offset = np.float32([[1, 0, 0.15 * shape.radius], [0, 1, 0.25 * shape.radius]])
            image *= (1.0 - 0.45 * cv2.warpAffine(shadow, offset, (width, height)))[..., None]
    for (_, label), (alpha, colour) in zip(layers, rendered):
        image += (colour - image) * alpha[..., None]
        labels[alpha >= 0.5] = label
    return image, labels


def render_video(rng: np.random.Generator, num_frames: int, size: tuple[int, int], num_objects: int,
                 later_objects: bool) -> SyntheticVideo:
    """Plan and render one video."""
    height, width = size
    diagonal = float(np.hypot(height, width))
    pad_y, pad_x = int(round(CAMERA_MARGIN * height)), int(round(CAMERA_MARGIN * width))
    background = background_texture(rng, height + 2 * pad_y, width + 2 * pad_x).astype(np.float32)

    kinds = [str(k) for k in rng.choice(["ellipse", "polygon", "blob"], size=num_objects)]
    hues = (rng.uniform() + np.arange(num_objects) / num_objects) % 1.0  # far apart
    objects = []
    for k in range(num_objects):
        x = width * (k + 0.5) / num_objects + rng.uniform(-0.05, 0.05) * width
        y = height * rng.uniform(0.3, 0.7)
        radius = min(height, width) * rng.uniform(0.14, 0.24) * (1.0 if num_objects < 3 else 0.85)
        texture_size = int(np.clip(2 * TEXTURE_EXTENT * radius, TEXTURE_SIZE, 4 * TEXTURE_SIZE))  # ~1 texel/pixel
        texture = object_texture(rng, texture_size, float(hues[k]), TEXTURE_EXTENT)
        objects.append(MovingShape(_outline(rng, kinds[k]), texture, x, y, radius, rng.uniform(0, 2 * np.pi)))
    starts = _start_frames(rng, num_objects, num_frames, later_objects)
    # Objects starting at frame 0 in random depth order; later ones in front so they are seen when they appear.
    depth = [k for k in rng.permutation(num_objects) if starts[k] == 0] + \
            sorted((k for k in range(num_objects) if starts[k] > 0), key=lambda k: starts[k])

    pole, pole_x = None, 0.0
    if rng.random() < 0.5:  # a thin foreground pole spanning the frame height (radius = frame height)
        half_width = width * rng.uniform(0.035, 0.06) / 2 / height
        outline = np.array([[-half_width, -1], [half_width, -1], [half_width, 1], [-half_width, 1]], np.float32)
        outline[:, 0] += rng.uniform(-0.15, 0.15) * outline[:, 1]  # slight tilt
        pole_x = width * rng.uniform(0.25, 0.75)
        pole = MovingShape(outline, object_texture(rng, TEXTURE_SIZE, 0.08, TEXTURE_EXTENT),
                           pole_x, height / 2, float(height), 0.0)
    flyer = MovingShape(_outline(rng, "blob"), object_texture(rng, TEXTURE_SIZE, rng.uniform(), TEXTURE_EXTENT),
                        -1e4, -1e4, min(height, width) * rng.uniform(0.15, 0.25), 0.0)
    flying = False
    protected = set(starts)  # frames where an object starts are never hidden by the flyer

    schedule = motion_schedule(rng, num_frames - 1)
    camera, camera_velocity = np.zeros(2), np.zeros(2)
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    labels = np.zeros((num_frames, height, width), np.uint8)
    for t in range(num_frames):
        if t > 0:
            kind = schedule[t - 1]
            if t == 1 or kind != schedule[t - 2]:  # a new stretch: new motion for everything
                for obj in objects:
                    obj.set_motion(rng, kind, diagonal)
                spec = MOTION[kind]["camera"]
                camera_velocity = np.array([_random_signed(rng, spec), 0.5 * _random_signed(rng, spec)]) * width
                flying = kind == "fast" and rng.random() < 0.6
                if flying:
                    length = next((i for i, k in enumerate(schedule[t - 1:]) if k != kind), num_frames - t)
                    side = rng.choice([-1.0, 1.0])
                    flyer.x = width / 2 - side * (width / 2 + flyer.radius)
                    flyer.y = height * rng.uniform(0.25, 0.75)
                    flyer.velocity = np.array([side * (width + 2 * flyer.radius) / max(length, 1), 0.0])
                    flyer.turn = rng.uniform(-0.2, 0.2)
            for obj in objects:
                obj.step(height, width)
            camera = np.clip(camera + camera_velocity, [-pad_x, -pad_y], [pad_x, pad_y])
            if flying:
                flyer.x += flyer.velocity[0]
                flyer.angle += flyer.turn
        shift = np.array([[1, 0, -(pad_x + camera[0])], [0, 1, -(pad_y + camera[1])]], np.float32)
        view = cv2.warpAffine(background, shift, (width, height), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT)
        layers = [(objects[k], k + 1) for k in depth if starts[k] <= t]
        if pole is not None:
            pole.x = pole_x - 1.5 * camera[0]  # in the foreground: parallax against the background
            layers.append((pole, 0))
        if flying and t not in protected:
            layers.append((flyer, 0))
        image, labels[t] = _compose(view, layers)
        starting = {k + 1 for k in range(num_objects) if starts[k] == t}
        if any(not (labels[t] == oid).any() for oid in starting):
            # an object must be seen where it starts: bring the starting objects to the front
            layers = [layer for layer in layers if layer[1] not in starting] + \
                     [layer for layer in layers if layer[1] in starting]
            image, labels[t] = _compose(view, layers)
        image += rng.normal(0.0, SENSOR_NOISE, size=image.shape).astype(np.float32)
        frames[t] = np.clip(image + 0.5, 0, 255).astype(np.uint8)

    start_frames = {k + 1: starts[k] for k in range(num_objects)}
    return SyntheticVideo(frames, labels, start_frames, {k + 1: kinds[k] for k in range(num_objects)}, schedule)


# ----------------------------------------------------------------------------- writing a dataset
def _video_name(index: int) -> str:
    return f"synth{index:03d}"


def _write_davis_video(out: Path, name: str, video: SyntheticVideo) -> None:
    for t in range(len(video.frames)):
        write_image(out / "JPEGImages" / "480p" / name / f"{t:05d}.jpg", video.frames[t])
        write_label_png(out / "Annotations" / "480p" / name / f"{t:05d}.png", video.labels[t])


def _write_ytvos_video(out: Path, folder: str, name: str, video: SyntheticVideo) -> dict:
    """Write one video into <folder>_all_frames/ (every frame) and <folder>/ (every 5th frame,
    annotations: every one in train, only where an object starts in valid). Returns its meta.json entry."""
    sparse = list(range(0, len(video.frames), SPARSE_STEP))
    for t in range(len(video.frames)):
        write_image(out / f"{folder}_all_frames" / "JPEGImages" / name / f"{t:05d}.jpg", video.frames[t])
    for t in sparse:
        write_image(out / folder / "JPEGImages" / name / f"{t:05d}.jpg", video.frames[t])
    objects = {}
    if folder == "train":
        for t in sparse:
            write_label_png(out / folder / "Annotations" / name / f"{t:05d}.png", video.labels[t])
        for oid in video.start_frames:
            frames = [f"{t:05d}" for t in sparse if (video.labels[t] == oid).any()]
            objects[str(oid)] = {"category": video.categories[oid], "frames": frames}
    else:
        for t in sorted(set(video.start_frames.values())):
            starting = [o for o, s in video.start_frames.items() if s == t]
            labels = np.where(np.isin(video.labels[t], starting), video.labels[t], 0).astype(np.uint8)
            write_label_png(out / folder / "Annotations" / name / f"{t:05d}.png", labels)
        for oid, start in video.start_frames.items():
            frames = [f"{t:05d}" for t in sparse if t >= start]
            objects[str(oid)] = {"category": video.categories[oid], "frames": frames}
    return {"objects": objects}


def _check_arguments(layout: str, num_videos: int, num_frames: int, size: tuple[int, int], seed: int,
                     max_objects: int, split: str) -> None:
    if layout not in LAYOUTS:
        raise DatasetError(f"unknown synthetic layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if num_videos < 1 or num_frames < 2 or max_objects < 1 or seed < 0:
        raise DatasetError(f"synthetic dataset: need videos >= 1, frames >= 2, max_objects >= 1 and seed >= 0 "
                           f"(got {num_videos}, {num_frames}, {max_objects}, {seed})")
    if len(size) != 2 or min(size) < 16:
        raise DatasetError(f"synthetic dataset: frames must be at least 16x16 (--size WIDTHxHEIGHT), got "
                           f"{'x'.join(map(str, size[::-1]))}")
    if layout == "ytvos" and split not in ("train", "val", "valid"):
        raise DatasetError(f"synthetic YouTube-VOS split must be 'train' or 'val', got {split!r}")
    if layout == "davis" and (not split or not split.replace("-", "").replace("_", "").isalnum()):
        raise DatasetError(f"synthetic DAVIS split must be a plain name such as 'train' or 'val', got {split!r}")


def _claim_output(out: Path, arguments: dict) -> bool:
    """True when `out` already holds this dataset; False when it may be (re)written; raises otherwise."""
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out}: exists and is not a folder; choose another --out")
    if not out.exists() or not any(out.iterdir()):
        return False
    for marker, complete in ((out / MANIFEST, True), (out / INCOMPLETE, False)):
        if marker.is_file():
            try:
                recorded = json.loads(marker.read_text()).get("arguments")
            except (json.JSONDecodeError, AttributeError):
                recorded = None
            if recorded == arguments:
                return complete
            raise DatasetError(f"{out}: holds a synthetic dataset made with other arguments ({marker.name}: "
                               f"{recorded}); choose another --out or delete that folder")
    raise DatasetError(f"{out}: the folder is not empty and is not a synthetic dataset; it is never overwritten. "
                       f"Choose a new or empty --out")


def generate_dataset(out: str | Path, layout: str = "davis", num_videos: int = 4, num_frames: int = 30,
                     size: tuple[int, int] = (240, 432), seed: int = 0, max_objects: int = 3,
                     split: str = "val") -> Path:
    """Write a synthetic dataset into `out` and return `out`.

    DAVIS layout: JPEGImages/480p/<seq>/%05d.jpg, Annotations/480p/<seq>/%05d.png (every frame),
    ImageSets/2017/<split>.txt and ImageSets/2016/<split>.txt. YouTube-VOS layout ('train' or 'val'):
    <train|valid>_all_frames/JPEGImages (every frame), <train|valid>/JPEGImages (every 5th frame),
    <train|valid>/Annotations and meta.json. Video 0 always has `max_objects` objects, the others
    1..max_objects.

    Idempotent: a folder holding this very dataset (same arguments) is returned untouched; a folder
    holding anything else raises DatasetError.
    """
    size = (int(size[0]), int(size[1]))
    _check_arguments(layout, num_videos, num_frames, size, seed, max_objects, split)
    out = Path(out)
    arguments = {"format": FORMAT_VERSION, "layout": layout, "num_videos": num_videos, "num_frames": num_frames,
                 "size": list(size), "seed": seed, "max_objects": max_objects, "split": split}
    if _claim_output(out, arguments):
        return out
    atomic_write_text(out / INCOMPLETE, json.dumps({"arguments": arguments}))
    folder = "train" if split == "train" else "valid"
    names, meta = [], {}
    for index in range(num_videos):
        rng = np.random.default_rng([seed, index])
        num_objects = max_objects if index == 0 else int(rng.integers(1, max_objects + 1))
        video = render_video(rng, num_frames, size, num_objects, later_objects=layout == "ytvos")
        name = _video_name(index)
        names.append(name)
        if layout == "davis":
            _write_davis_video(out, name, video)
        else:
            meta[name] = _write_ytvos_video(out, folder, name, video)
    if layout == "davis":
        for year in ("2016", "2017"):
            atomic_write_text(out / "ImageSets" / year / f"{split}.txt", "\n".join(names) + "\n")
    else:
        atomic_write_text(out / folder / "meta.json", json.dumps({"videos": meta}, indent=1))
    atomic_write_text(out / MANIFEST, json.dumps({"generator": "dataset.synthetic", "arguments": arguments},
                                                 indent=1))
    (out / INCOMPLETE).unlink()
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m dataset.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (new or empty)")
    parser.add_argument("--layout", choices=LAYOUTS, default="davis")
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--size", type=frame_size_arg, default=(240, 432), help="WIDTHxHEIGHT, e.g. 432x240 (as train.py --size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-objects", type=int, default=3)
    parser.add_argument("--split", default="val", help="DAVIS: list name in ImageSets; YouTube-VOS: train or val")
    args = parser.parse_args(argv)
    try:
        out = generate_dataset(args.out, args.layout, args.videos, args.frames, args.size, args.seed,
                               args.max_objects, args.split)
    except DatasetError as err:
        parser.exit(2, f"error: {err}\n")
    print(f"synthetic {args.layout} dataset in {out}")
    return out


if __name__ == "__main__":
    main()
