"""Masks drawn by users: one set of rules for demo.py's start mask and the annotations of the folder set
(evaluate.py and train.py `--dset folder`). docs/own_data.md states the rules for users.

The rules look at all masks of one video together, so that every mask of a video is read the same
way (a 0/255 series is object 1 in every frame). demo.py's single mask is a video of one mask.

- palette PNG ('P'): each index is an object id; 255 (DAVIS's void) is background;
- greyscale PNG (8- or 16-bit; also 1-bit, and RGB whose pixels are all grey): with one non-zero
  value over the whole video, whatever its brightness, that value is object 1; with several, each
  value is an object id (1..254), and 255 next to other values is refused (anti-aliasing or JPEG
  compression, not ids);
- RGB PNG with colours: DAVIS palette colours are their palette indices; black and one colour of
  the user's own (one colour over the whole video, and black somewhere) is object 1;
- the masks of one video are all palette, or all greyscale (RGB grey counts as greyscale), or all RGB
  with colours; masks without any object (all 0) fit every kind.

The DAVIS, YouTube-VOS, MOSE and LVOS readers keep their own formats (lib.image_io.read_label_png).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from lib.image_io import DAVIS_PALETTE, ImageReadError

VOID_INDEX = 255  # DAVIS marks unlabelled pixels 255 in palette masks: background here
MAX_ID = 254  # ids share uint8 label maps with the void value 255
SHOWN = 5  # values a message lists
HELP = "docs/own_data.md says how to convert a mask"

# how a video's masks become ids
PALETTE_IDS = "palette indices are ids"
ONE_OBJECT = "every non-zero pixel is object 1"
GREY_IDS = "grey values are ids"
PALETTE_COLOURS = "DAVIS palette colours are their indices"

_MODE_NAMES = {"P": "palette ('P')", "L": "8-bit greyscale ('L')", "1": "1-bit ('1')",
               "LA": "greyscale with alpha ('LA')", "RGB": "RGB ('RGB')", "RGBA": "RGBA ('RGBA')"}


class MaskFormatError(ImageReadError):
    """A user's mask that cannot be read as object ids; the message names the file, says what it holds
    and how to save it instead."""


def _rgb_code(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 colours -> one int32 per colour (r << 16 | g << 8 | b); black is 0."""
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


_PALETTE_INDEX: dict[int, int] = {}
for _index, _code in enumerate(_rgb_code(DAVIS_PALETTE).tolist()):
    _PALETTE_INDEX.setdefault(_code, _index)


def _colour(code: int) -> tuple[int, int, int]:
    return (code >> 16) & 255, (code >> 8) & 255, code & 255


def _is_grey(code: int) -> bool:
    r, g, b = _colour(code)
    return r == g == b


@dataclass
class MaskContent:
    """What one mask file holds.

    kind: 'palette', 'grey' or 'rgb' (how it is stored); mode: the PNG's PIL mode; size: (H, W);
    values: {non-zero value: pixel count}, the values being palette indices, grey levels or RGB codes
    (r << 16 | g << 8 | b); zeros: the count of pixels of value 0 (background, black).
    """

    path: Path
    mode: str
    kind: str
    size: tuple[int, int]
    values: dict[int, int] = field(default_factory=dict)
    zeros: int = 0

    def describe(self) -> str:
        """'<kind> mask with <values>', for messages."""
        what = _MODE_NAMES.get(self.mode, f"{'16' if self.mode.startswith('I;16') else '32'}-bit greyscale "
                                          f"({self.mode!r})")
        if not self.values:
            return f"{what} mask with no value but 0"
        values = sorted(self.values)
        shown = [_colour(v) for v in values[:SHOWN]] if self.kind == "rgb" else values[:SHOWN]
        more = f" ... ({len(values)} in all)" if len(values) > SHOWN else ""
        noun = "colours" if self.kind == "rgb" else "indices" if self.kind == "palette" else "values"
        return f"{what} mask with non-zero {noun} {', '.join(map(str, shown))}{more}"


def _load(path: str | Path) -> tuple[MaskContent, np.ndarray]:
    """The file's content summary and its (H, W) pixels: palette indices, grey levels or RGB codes."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode == "P":
                kind, pixels = "palette", np.array(img)
            elif mode in ("L", "1", "LA"):
                kind, pixels = "grey", np.array(img if mode == "L" else img.convert("L"))
            elif mode.startswith("I"):  # 16-bit PNGs open as 'I;16' ('I;16B', 'I' elsewhere)
                kind, pixels = "grey", np.array(img).astype(np.int64)
            elif mode in ("RGB", "RGBA"):
                kind, pixels = "rgb", _rgb_code(np.array(img.convert("RGB")))
            else:
                raise MaskFormatError(f"{path}: a {mode!r} image is not a mask format this reader knows; save it as "
                                      f"a palette PNG (object id = palette index), a greyscale PNG (0/255 for one "
                                      f"object, or ids 1, 2, ...) or an RGB PNG ({HELP})")
    except FileNotFoundError:
        raise MaskFormatError(f"{path}: no such mask file") from None
    except (UnidentifiedImageError, OSError) as err:
        raise MaskFormatError(f"{path}: cannot read the mask image ({err}); save it as a PNG") from None
    if pixels.dtype == np.uint8:  # the common case: a histogram is much faster than np.unique
        counts = _histogram(pixels)
        found = np.flatnonzero(counts)
        values = {int(v): int(counts[v]) for v in found if v}
        zeros = int(counts[0])
    else:
        found, counts = np.unique(pixels, return_counts=True)
        values = {int(v): int(c) for v, c in zip(found, counts) if v}
        zeros = int(counts[0]) if found.size and found[0] == 0 else 0
    if values and min(values) < 0:
        raise MaskFormatError(f"{path}: {mode!r} mask with negative values; save it as an 8-bit greyscale or "
                              f"palette PNG of object ids ({HELP})")
    return MaskContent(path, mode, kind, (int(pixels.shape[0]), int(pixels.shape[1])), values, zeros), pixels


def _histogram(pixels: np.ndarray) -> np.ndarray:
    """(256,) int64 pixel counts of (H, W) uint8 values. OpenCV's is ~10x numpy's; it counts in float32,
    exact up to 2**24 pixels, so larger images take numpy's."""
    if pixels.size < 2**24:
        return cv2.calcHist([np.ascontiguousarray(pixels)], [0], None, [256], [0, 256]).ravel().astype(np.int64)
    return np.bincount(pixels.ravel(), minlength=256)


def inspect_mask(path: str | Path) -> MaskContent:
    """Read one mask file and summarise it (its kind and its non-zero values with their pixel counts)."""
    return _load(path)[0]


@dataclass(frozen=True)
class MaskReading:
    """How every mask of one video becomes object ids: `rule` is one of PALETTE_IDS, ONE_OBJECT,
    GREY_IDS, PALETTE_COLOURS (chosen by `reading_for`)."""

    rule: str

    def read(self, path: str | Path) -> np.ndarray:
        """The mask at `path` as (H, W) uint8 object ids, 0 = background."""
        content, pixels = _load(path)
        return self._labels(content, pixels)

    def object_pixels(self, content: MaskContent) -> dict[int, int]:
        """{object id: pixel count} of a mask summarised by `inspect_mask` (without reading it again)."""
        counts: dict[int, int] = {}
        for value, count in content.values.items():
            oid = self._id_of(value, content)
            if oid:
                counts[oid] = counts.get(oid, 0) + count
        return counts

    def _id_of(self, value: int, content: MaskContent) -> int:
        if self.rule == ONE_OBJECT:
            return 1
        if self.rule == PALETTE_IDS:
            return 0 if value == VOID_INDEX else value
        if self.rule == GREY_IDS:
            level = value & 255 if content.kind == "rgb" else value
            if level > MAX_ID or (content.kind == "rgb" and not _is_grey(value)):
                raise MaskFormatError(f"{content.path}: {content.describe()}, but the masks of its video were read "
                                      f"as grey object ids 1..{MAX_ID}; save every mask of the video the same way "
                                      f"({HELP})")
            return level
        index = _PALETTE_INDEX.get(value)
        if index is None:
            raise MaskFormatError(f"{content.path}: {content.describe()}: colour {_colour(value)} is not a DAVIS "
                                  f"palette colour, but the masks of its video were read as palette colours; save "
                                  f"every mask of the video the same way ({HELP})")
        return 0 if index == VOID_INDEX else index

    def _labels(self, content: MaskContent, pixels: np.ndarray) -> np.ndarray:
        if self.rule == ONE_OBJECT:
            return (pixels != 0).astype(np.uint8)
        top = max(content.values, default=0)
        if top <= 65535:  # 8- and 16-bit values: a table over them maps every pixel at once
            lookup = np.zeros(top + 1, np.uint8)
            for value in content.values:
                lookup[value] = self._id_of(value, content)
            return lookup[pixels]
        found, inverse = np.unique(pixels, return_inverse=True)  # RGB codes
        ids = np.array([self._id_of(int(v), content) if v else 0 for v in found], np.uint8)
        return ids[inverse].reshape(pixels.shape)


def reading_for(contents: Sequence[MaskContent]) -> MaskReading:
    """The one way to read all masks of a video (see the module docstring); MaskFormatError if there is none."""
    marked = [c for c in contents if c.values]
    if not marked:  # nothing to read: no id can come out whatever the rule
        return MaskReading(PALETTE_IDS if contents and contents[0].kind == "palette" else ONE_OBJECT)
    first_of = {}
    for content in marked:
        first_of.setdefault(content.kind, content)
    if "palette" in first_of:
        if len(first_of) > 1:
            other = next(c for kind, c in first_of.items() if kind != "palette")
            raise _mixed(first_of["palette"], other)
        return MaskReading(PALETTE_IDS)
    coloured = next((c for c in marked if c.kind == "rgb" and not all(map(_is_grey, c.values))), None)
    if coloured is not None:
        if "grey" in first_of:
            raise _mixed(coloured, first_of["grey"])
        return _colour_reading([c for c in marked if c.kind == "rgb"])
    return _grey_reading(marked)


def _mixed(a: MaskContent, b: MaskContent) -> MaskFormatError:
    return MaskFormatError(f"{a.path}: {a.describe()}, but {b.path} of the same video holds another kind of mask "
                           f"({b.describe()}); save every mask of a video the same way (all palette, all greyscale "
                           f"or all RGB) ({HELP})")


def _grey_reading(marked: list[MaskContent]) -> MaskReading:
    """Greyscale masks (and RGB ones with grey pixels only): one value -> object 1, several -> ids."""
    levels = {c.path: {v & 255 if c.kind == "rgb" else v for v in c.values} for c in marked}
    union = set().union(*levels.values())
    if len(union) == 1:
        return MaskReading(ONE_OBJECT)
    if max(union) > 255:
        wide = next(c for c in marked if max(levels[c.path]) > 255)
        raise MaskFormatError(f"{wide.path}: {wide.describe()}: mask values go up to {max(levels[wide.path])}; object "
                              f"ids must be 1..{MAX_ID} (or give one object as 0 and one other value); save the ids "
                              f"as an 8-bit greyscale or palette PNG ({HELP})")
    if VOID_INDEX in union:
        holders = [c for c in marked if VOID_INDEX in levels[c.path]]
        white = next((c for c in holders if len(levels[c.path]) > 1), holders[0])  # a file mixing them, first
        if len(levels[white.path]) > 1:
            others = sorted(levels[white.path] - {VOID_INDEX})[:SHOWN]
            raise MaskFormatError(
                f"{white.path}: {white.describe()}: the greyscale mask mixes 255 with other values {others} (an "
                f"anti-aliased or JPEG-compressed mask?); save it as 0/255 for one object (e.g. every value >= 128 "
                f"becomes 255), or as object ids 1, 2, ... ({HELP})")
        other = next(c for c in marked if levels[c.path] - {VOID_INDEX})
        raise MaskFormatError(
            f"{white.path}: {white.describe()}, but {other.path} of the same video holds other values "
            f"({other.describe()}): the masks of one video mix 255 with other values, so neither one object "
            f"(0/255) nor object ids; save every mask of the video as 0/255 (one object) or as ids 1, 2, ... ({HELP})")
    return MaskReading(GREY_IDS)


def _colour_reading(rgb: list[MaskContent]) -> MaskReading:
    """RGB masks with colours: DAVIS palette colours -> indices; black and one colour of one's own -> object 1."""
    union = set().union(*(c.values for c in rgb))
    unknown = sorted(code for code in union if code not in _PALETTE_INDEX)
    if not unknown:
        return MaskReading(PALETTE_COLOURS)
    if len(union) == 1 and any(c.zeros for c in rgb):  # one colour of one's own on black
        return MaskReading(ONE_OBJECT)
    holder = next(c for c in rgb if unknown[0] in c.values)
    where = "" if set(holder.values) >= set(union) else " (over all masks of the video)"
    raise MaskFormatError(
        f"{holder.path}: {holder.describe()}: colours {[_colour(c) for c in unknown[:3]]} are not DAVIS palette "
        f"colours, and a mask of colours of one's own may hold one colour besides black{where}; save the masks as "
        f"palette PNGs (object id = palette index), 0/255 greyscale PNGs, or black and one colour (one object) "
        f"({HELP})")


def read_user_mask(path: str | Path) -> np.ndarray:
    """One mask read on its own by the rules above: (H, W) uint8 object ids, 0 = background."""
    content, pixels = _load(path)
    return reading_for([content])._labels(content, pixels)
