"""Reading and writing frames and label PNGs (DAVIS / YouTube-VOS conventions).

Frames are (H, W, 3) uint8 RGB arrays. Labels are (H, W) uint8 arrays where the value is the
object id (0 = background); they are stored as palette PNGs with the DAVIS palette.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from lib.atomic import atomic_write

JPEG_QUALITY = 95


class ImageReadError(ValueError):
    """An image or label file that is missing, truncated or in an unsupported format."""


def _davis_palette() -> np.ndarray:
    """The VOC/DAVIS palette: the bits of the index are spread over R, G and B, high bit first."""
    palette = np.zeros((256, 3), np.uint8)
    for index in range(256):
        value, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= (value & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette[index] = (r, g, b)
    return palette


DAVIS_PALETTE: np.ndarray = _davis_palette()


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except OSError as err:
        raise ImageReadError(f"{path}: cannot be read ({err.strerror or err})") from None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a colour image. Returns (H, W, 3) uint8 RGB (greyscale files are expanded)."""
    path = Path(path)
    data = np.frombuffer(_read_bytes(path), np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageReadError(f"{path}: not a readable image (empty, truncated or not a JPEG/PNG); replace the file")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) of an image or label file, read from its header only (cheap)."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            width, height = img.size
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ImageReadError(f"{path}: not a readable image ({err}); replace the file") from None
    return height, width


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a label PNG. Returns (H, W) uint8: the palette index of a 'P' PNG, the raw value of an 'L' PNG."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L"):
                raise ImageReadError(
                    f"{path}: label PNG has mode {img.mode!r}; expected a palette ('P') or greyscale ('L') PNG"
                )
            labels = np.array(img, dtype=np.uint8)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ImageReadError(f"{path}: not a readable label PNG ({err}); replace the file") from None
    return labels


def write_label_png(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write (H, W) integer labels in 0..255 as a palette PNG with DAVIS_PALETTE, atomically."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{path}: labels must be (H, W), got shape {labels.shape}")
    if labels.dtype != np.uint8:
        if labels.size and (labels.min() < 0 or labels.max() > 255):
            raise ValueError(f"{path}: labels must lie in 0..255, got {labels.min()}..{labels.max()}")
        labels = labels.astype(np.uint8)
    img = Image.fromarray(labels, mode="P")
    img.putpalette(DAVIS_PALETTE.tobytes())
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def write_binary_png(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write an (H, W) mask (non-zero = the object) as a greyscale PNG of 0 and 255, atomically."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{path}: a mask must be (H, W), got shape {mask.shape}")
    img = Image.fromarray((mask != 0).astype(np.uint8) * 255, mode="L")
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB image as JPEG or PNG (chosen by the suffix of `path`), atomically."""
    path = Path(path)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{path}: image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    elif suffix == ".png":
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    else:
        raise ValueError(f"{path}: unsupported image suffix {path.suffix!r}; use .jpg, .jpeg or .png")
    if not ok:
        raise ValueError(f"{path}: the image could not be encoded")
    atomic_write(path, lambda tmp: tmp.write_bytes(encoded.tobytes()))
