"""Generated textures for the synthetic videos: photograph-like backgrounds and object surfaces.

Everything is drawn from a numpy Generator, so a texture is a pure function of the generator state.
"""
from __future__ import annotations

import colorsys

import cv2
import numpy as np


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int, octaves: int = 4,
                 persistence: float = 0.5) -> np.ndarray:
    """Multi-octave value noise, (H, W) float32 in [0, 1].

    Octave k is a random grid of about cells * 2**k cells along the longer side, upsampled bicubically;
    its amplitude is persistence**k (larger persistence = rougher).
    """
    height, width = shape
    longer = max(height, width)
    total = np.zeros((height, width), np.float32)
    amplitude = 1.0
    for octave in range(octaves):
        n = cells * 2 ** octave
        grid_h = max(2, round(n * height / longer) + 1)
        grid_w = max(2, round(n * width / longer) + 1)
        grid = rng.random((grid_h, grid_w), dtype=np.float32)
        total += amplitude * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        amplitude *= persistence
    low, high = float(total.min()), float(total.max())
    return (total - low) / max(high - low, 1e-6)


def colour_ramp(t: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Map t in [0, 1] (H, W) through evenly spaced colour stops (K, 3) in [0, 1] -> (H, W, 3) float32."""
    stops = np.linspace(0.0, 1.0, len(colours))
    return np.stack([np.interp(t, stops, colours[:, c]) for c in range(3)], axis=-1).astype(np.float32)


def hsv_colour(hue: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, saturation, value), np.float32)


def _soft_step(x: np.ndarray, width: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x / max(width, 1e-6), -30, 30)))


def background_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A landscape-like scene: sky with clouds, a hilly textured ground, a few built structures,
    directional light, vignette and grain. Returns (H, W, 3) uint8 RGB."""
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]

    # Sky: a vertical gradient between two sky colours, brightened by soft clouds.
    sky_hue = rng.choice([0.55, 0.58, 0.6, 0.62, 0.08]) + rng.uniform(-0.03, 0.03)  # mostly blue, some dusk
    top = hsv_colour(sky_hue, rng.uniform(0.3, 0.7), rng.uniform(0.55, 0.8))
    low = hsv_colour(sky_hue + rng.uniform(-0.05, 0.05), rng.uniform(0.05, 0.3), rng.uniform(0.8, 1.0))
    sky = top + (low - top) * ys[..., None] ** 0.7
    clouds = np.clip(smooth_noise(rng, (height, width), cells=3, octaves=5, persistence=0.55) * 1.6 - 0.7, 0, 1)
    sky = sky + (1.0 - sky) * 0.7 * clouds[..., None]

    # Ground: a rough multi-octave field through earthy/green/urban colour stops, more detail near the bottom.
    ground_hue = rng.uniform(0.05, 0.35)
    stops = np.stack([hsv_colour(ground_hue + rng.uniform(-0.08, 0.08), rng.uniform(0.2, 0.7), v)
                      for v in np.sort(rng.uniform(0.15, 0.75, size=4))])
    field = smooth_noise(rng, (height, width), cells=4, octaves=6, persistence=0.6)
    ground = colour_ramp(field, stops)
    # Surface detail down to a few pixels (grass, gravel), stronger towards the camera.
    fine_cells = max(8, max(height, width) // 6)
    detail = (0.6 * smooth_noise(rng, (height, width), cells=32, octaves=3, persistence=0.6)
              + 0.4 * smooth_noise(rng, (height, width), cells=fine_cells, octaves=1)) - 0.5
    ground *= (1.0 + 0.7 * detail * (0.3 + ys))[..., None]

    hills = cv2.resize(rng.random((1, int(rng.integers(3, 8))), dtype=np.float32), (width, 1),
                       interpolation=cv2.INTER_CUBIC)
    horizon = rng.uniform(0.3, 0.6) + 0.12 * (hills - 0.5)
    ground_alpha = _soft_step(ys - horizon, 0.006)[..., None]
    image = sky * (1.0 - ground_alpha) + ground * ground_alpha

    # Structures: walls/buildings standing on the horizon, with a window or plank pattern.
    for _ in range(int(rng.integers(1, 5))):
        x0, bw = rng.uniform(-0.1, 0.9), rng.uniform(0.06, 0.25)
        y_top = float(horizon.mean()) - rng.uniform(0.1, 0.35)
        y_bottom = float(horizon.mean()) + rng.uniform(0.02, 0.12)
        inside = (_soft_step(xs - x0, 0.003) * _soft_step(x0 + bw - xs, 0.003)
                  * _soft_step(ys - y_top, 0.003) * _soft_step(y_bottom - ys, 0.003))
        colour = hsv_colour(rng.uniform(0, 1), rng.uniform(0.05, 0.4), rng.uniform(0.35, 0.85))
        period_x, period_y = rng.uniform(0.015, 0.04), rng.uniform(0.02, 0.06)
        pattern = ((np.sin(2 * np.pi * xs / period_x) > 0.2) & (np.sin(2 * np.pi * ys / period_y) > 0.1))
        shade = 1.0 - 0.35 * pattern.astype(np.float32) * rng.uniform(0.3, 1.0)
        shade = shade * (0.85 + 0.3 * (xs - x0) / bw)  # light falls across the facade
        wall = colour[None, None, :] * shade[..., None]
        image = image * (1.0 - inside[..., None]) + wall * inside[..., None]

    # Directional light, vignette, slight optical blur, grain.
    angle = rng.uniform(0, 2 * np.pi)
    light = 0.85 + 0.3 * (np.cos(angle) * xs + np.sin(angle) * ys)
    vignette = 1.0 - 0.35 * ((xs - 0.5) ** 2 + (ys - 0.5) ** 2)
    image = image * (light * vignette)[..., None]
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 0.6)
    image += rng.normal(0.0, 0.012, size=image.shape).astype(np.float32)
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def object_texture(rng: np.random.Generator, size: int, hue: float, extent: float) -> np.ndarray:
    """A square surface texture covering local coordinates [-extent, extent]^2 of an object.

    Stripes, spots, marble or a warped checker pattern in two colours near `hue`, with rim shading
    so the object looks rounded. Returns (size, size, 3) uint8 RGB.
    """
    coords = np.linspace(-extent, extent, size, dtype=np.float32)
    u, v = coords[None, :], coords[:, None]
    warp = smooth_noise(rng, (size, size), cells=3, octaves=3) - 0.5
    kind = int(rng.integers(4))
    frequency = rng.uniform(5.0, 12.0)
    if kind == 0:  # stripes
        a = rng.uniform(0, np.pi)
        t = 0.5 + 0.5 * np.sin(frequency * (u * np.cos(a) + v * np.sin(a)) + 4.0 * warp)
    elif kind == 1:  # spots
        t = _soft_step(smooth_noise(rng, (size, size), cells=6, octaves=2) - 0.55, 0.03)
    elif kind == 2:  # marble
        t = 0.5 + 0.5 * np.sin(frequency * u + 10.0 * warp)
    else:  # warped checker
        t = _soft_step(np.sin(frequency * (u + 0.3 * warp)) * np.sin(frequency * (v - 0.3 * warp)), 0.1)
    first = hsv_colour(hue, rng.uniform(0.55, 0.95), rng.uniform(0.6, 0.95))
    second = hsv_colour(hue + rng.uniform(0.05, 0.15), rng.uniform(0.3, 0.9), rng.uniform(0.15, 0.5))
    colour = first + (second - first) * t[..., None]
    grain = smooth_noise(rng, (size, size), cells=24, octaves=2) - 0.5
    shading = 1.1 - 0.35 * (u ** 2 + v ** 2) / extent ** 2 - 0.12 * (u + v) / extent + 0.25 * grain
    return (np.clip(colour * shading[..., None], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
