"""FRTM's first-frame augmentation: the object pasted, warped, onto its inpainted background.

The object is cut out with a 1-pixel feathered alpha and its hole is inpainted (OpenCV Telea, on
the CPU). Each of the K-1 augmentations then warps the object with an affine transform, optionally
motion-blurs it, and pastes it over a (possibly zoomed and blurred) copy of the background.

The random parameters are drawn once, by shared code (`ParameterSource`), and applied by one of
two small backends: OpenCV for CPU tensors, torch (affine_grid/grid_sample, conv2d) for others.
Both use the same conventions (integer pixel coordinates are pixel centres, reflect-101 borders
for blurs, bilinear sampling), so their results agree up to interpolation rounding.

The parameter sets below are the method's fixed constants (docs/method.md), not tunable settings.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

ROTATIONS_DEG = (5, -5, 10, -10, 20, -20, 30, -30, 45, -45)
OBJECT_SCALES = (0.5, 0.7, 1.0, 1.5, 2.0, 2.5)
MIRROR_DRAWS = (True, False, False, False, False)  # mirror with probability 1/5
SKEW_DRAWS = (True, False, False)  # skew in one of three
SKEW = (0.1, 0.1)  # (x by y, y by x) shear
MOTION_BLUR_DRAWS = (True, False, False, False)  # motion blur in one of four
MOTION_BLUR_ANGLES_DEG = (0, 45, 90, 135)
BACKGROUND_SCALES = (1.0, 1.0, 1.2)  # zoom about the image centre
BACKGROUND_BLURS = (0, 0, 1, 2, 5)  # Gaussian sigma in pixels; 0 = no blur
MIN_OBJECT_SIDE_PX = 10  # the warped object stays at least this wide and high
MAX_TRIES = 100  # draws per augmentation before giving up
INPAINT_RADIUS = 3
GRID_JITTER = 0.25  # centre jitter, as a fraction of a grid cell
# Motion blur of size 2: the pixel and its neighbour in the blur direction, as (dy, dx) per angle.
_MOTION_NEIGHBOUR = {0: (0, 1), 45: (-1, 1), 90: (-1, 0), 135: (-1, -1)}


class AugmentationError(RuntimeError):
    """No valid augmentation could be drawn for an object."""


@dataclass(frozen=True)
class AugmentParams:
    """One augmentation, in pixel coordinates (integer coordinates are pixel centres).

    object_warp: (2,3) affine map from source to output pixel coordinates of the object.
    motion_kernel: (3,3) float32 kernel applied to the warped object, or None.
    background_warp: (2,3) affine map of the background, or None for the identity.
    background_sigma: Gaussian blur sigma of the background in pixels (0 = none).
    """

    object_warp: np.ndarray
    motion_kernel: np.ndarray | None
    background_warp: np.ndarray | None
    background_sigma: float


class _Cycle:
    """A shuffled list drawn without replacement, starting over when exhausted."""

    def __init__(self, rng: np.random.Generator, values: Sequence) -> None:
        self.values = [values[i] for i in rng.permutation(len(values))]
        self.position = 0

    def next(self):
        value = self.values[self.position % len(self.values)]
        self.position += 1
        return value


def _jittered_grid(rng: np.random.Generator, count: int, height: int, width: int) -> list[tuple[float, float]]:
    """`count` (x, y) centres: one per cell of a grid covering the image, jittered inside the cell."""
    cols = math.ceil(math.sqrt(count * width / height))
    rows = math.ceil(count / cols)
    cell_w, cell_h = width / cols, height / rows
    centres = []
    for row in range(rows):
        for col in range(cols):
            jx, jy = rng.uniform(-GRID_JITTER, GRID_JITTER, size=2)
            centres.append(((col + 0.5 + jx) * cell_w - 0.5, (row + 0.5 + jy) * cell_h - 0.5))
    return [centres[i] for i in rng.permutation(len(centres))[:count]]


def _motion_kernel(angle_deg: int) -> np.ndarray:
    dy, dx = _MOTION_NEIGHBOUR[angle_deg]
    kernel = np.zeros((3, 3), np.float32)
    kernel[1, 1] = kernel[1 + dy, 1 + dx] = 0.5
    return kernel


def _gaussian_taps(sigma: float, max_radius: int) -> np.ndarray:
    """Normalised 1-D Gaussian of radius ceil(3 sigma) (capped so a reflect border stays valid)."""
    radius = max(1, min(math.ceil(3 * sigma), max_radius))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (x / sigma) ** 2)
    return (taps / taps.sum()).astype(np.float32)


class ParameterSource:
    """Draws augmentation parameters for one object (shuffled lists, drawn without replacement)."""

    def __init__(self, rng: np.random.Generator, num_aug: int, mask: np.ndarray) -> None:
        self.height, self.width = mask.shape
        ys, xs = np.nonzero(mask)
        self.centre = ((xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2)
        self.size = (xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        self.targets = _Cycle(rng, _jittered_grid(rng, num_aug, self.height, self.width))
        self.rotations = _Cycle(rng, ROTATIONS_DEG)
        self.mirrors = _Cycle(rng, MIRROR_DRAWS)
        self.scales = _Cycle(rng, OBJECT_SCALES)
        self.skews = _Cycle(rng, SKEW_DRAWS)
        self.blurs = _Cycle(rng, MOTION_BLUR_DRAWS)
        self.blur_angles = _Cycle(rng, MOTION_BLUR_ANGLES_DEG)
        self.background_scales = _Cycle(rng, BACKGROUND_SCALES)
        self.background_blurs = _Cycle(rng, BACKGROUND_BLURS)

    def draw(self) -> AugmentParams:
        angle = math.radians(self.rotations.next())
        shape = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        if self.mirrors.next():
            shape = shape @ np.diag([-1.0, 1.0])
        if self.skews.next():
            shape = np.array([[1.0, SKEW[0]], [SKEW[1], 1.0]]) @ shape
        linear = self._limit_scale(self.scales.next(), shape) * shape
        target = np.array(self.targets.next())
        shift = target - linear @ np.array(self.centre)
        object_warp = np.hstack([linear, shift[:, None]])

        motion = _motion_kernel(self.blur_angles.next()) if self.blurs.next() else None
        zoom = self.background_scales.next()
        background_warp = None
        if zoom != 1.0:
            middle = np.array([(self.width - 1) / 2, (self.height - 1) / 2])
            background_warp = np.hstack([zoom * np.eye(2), (middle - zoom * middle)[:, None]])
        return AugmentParams(object_warp, motion, background_warp, float(self.background_blurs.next()))

    def _limit_scale(self, scale: float, shape: np.ndarray) -> float:
        """Clamp the scale so the warped bounding box fits the image and is >= MIN_OBJECT_SIDE_PX a side."""
        w, h = self.size
        corners = shape @ np.array([[-w, w, w, -w], [-h, -h, h, h]]) / 2
        extent_x, extent_y = np.ptp(corners, axis=1)
        smallest = max(MIN_OBJECT_SIDE_PX / extent_x, MIN_OBJECT_SIDE_PX / extent_y)
        largest = min(self.width / extent_x, self.height / extent_y)
        return min(max(scale, smallest), largest)


@dataclass(frozen=True)
class CutOut:
    """The object separated from its frame, as float32 numpy arrays (H,W,...)."""

    layer: np.ndarray  # (H,W,4): colour premultiplied by alpha, then alpha (1-px feathered edge)
    mask: np.ndarray  # (H,W) 0/1
    background: np.ndarray  # (H,W,3) the frame with the object inpainted away


def cut_out(image: np.ndarray, mask: np.ndarray) -> CutOut:
    """image (H,W,3) uint8, mask (H,W) bool -> the object layer and the inpainted background."""
    mask8 = mask.astype(np.uint8)
    cross = np.ones((3, 3), np.uint8)
    # 1-px feather: the object's outermost pixel ring is half transparent
    alpha = (mask8 + cv2.erode(mask8, cross, borderType=cv2.BORDER_REPLICATE)).astype(np.float32) / 2
    # the hole also covers the ring just outside the object, where colours are mixed with it
    background = cv2.inpaint(image, cv2.dilate(mask8, cross), INPAINT_RADIUS, cv2.INPAINT_TELEA)
    layer = np.concatenate([image.astype(np.float32) * alpha[..., None], alpha[..., None]], axis=2)
    return CutOut(layer, mask8.astype(np.float32), background.astype(np.float32))


def apply_opencv(cut: CutOut, params: AugmentParams) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV backend: -> augmented image (H,W,3) uint8 and object mask (H,W) bool."""
    height, width = cut.mask.shape
    size = (width, height)
    background = cut.background
    if params.background_warp is not None:
        background = cv2.warpAffine(background, params.background_warp, size, flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REFLECT_101)
    if params.background_sigma > 0:
        taps = _gaussian_taps(params.background_sigma, min(height, width) - 1)
        background = cv2.sepFilter2D(background, -1, taps, taps, borderType=cv2.BORDER_REFLECT_101)
    layer = cv2.warpAffine(cut.layer, params.object_warp, size, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    mask = cv2.warpAffine(cut.mask, params.object_warp, size, flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0.5
    if params.motion_kernel is not None:
        layer = cv2.filter2D(layer, -1, params.motion_kernel, borderType=cv2.BORDER_CONSTANT)
    composite = layer[..., :3] + (1 - layer[..., 3:]) * background
    return np.clip(np.rint(composite), 0, 255).astype(np.uint8), mask


def _pixel_to_normalised(height: int, width: int) -> np.ndarray:
    """3x3 map from pixel-centre coordinates to grid_sample's align_corners=False coordinates."""
    return np.array([[2 / width, 0, 1 / width - 1], [0, 2 / height, 1 / height - 1], [0, 0, 1]])


def _warp_torch(x: Tensor, warp: np.ndarray, padding_mode: str) -> Tensor:
    """Bilinear warp of (1,C,H,W) x by a (2,3) source->output pixel affine map."""
    height, width = x.shape[-2:]
    to_norm = _pixel_to_normalised(height, width)
    inverse = np.linalg.inv(np.vstack([warp, [0, 0, 1]]))  # output pixel -> source pixel
    theta = (to_norm @ inverse @ np.linalg.inv(to_norm))[:2]
    grid = F.affine_grid(torch.as_tensor(theta, dtype=x.dtype, device=x.device)[None], list(x.shape),
                         align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def _blur_torch(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (1,C,H,W) x with reflect-101 borders."""
    channels = x.shape[1]
    taps = torch.as_tensor(_gaussian_taps(sigma, min(x.shape[-2:]) - 1), device=x.device)
    radius = taps.numel() // 2
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1),
                 groups=channels)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1),
                    groups=channels)


def cut_out_to_torch(cut: CutOut, device: torch.device) -> dict[str, Tensor]:
    """The cut-out as (1,C,H,W) float32 tensors on `device`: 'layer' (4 ch), 'mask' (1), 'background' (3)."""
    def to_tensor(a: np.ndarray) -> Tensor:
        a = a[..., None] if a.ndim == 2 else a
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None].to(device)

    return {"layer": to_tensor(cut.layer), "mask": to_tensor(cut.mask), "background": to_tensor(cut.background)}


def apply_torch(cut: dict[str, Tensor], params: AugmentParams) -> tuple[Tensor, Tensor]:
    """Torch backend (any device): -> augmented image (3,H,W) uint8 and object mask (H,W) bool."""
    background = cut["background"]
    if params.background_warp is not None:
        background = _warp_torch(background, params.background_warp, "reflection")
    if params.background_sigma > 0:
        background = _blur_torch(background, params.background_sigma)
    warped = _warp_torch(torch.cat([cut["layer"], cut["mask"]], dim=1), params.object_warp, "zeros")
    layer, mask = warped[:, :4], warped[0, 4] > 0.5
    if params.motion_kernel is not None:
        kernel = torch.as_tensor(params.motion_kernel, device=layer.device)
        layer = F.conv2d(layer, kernel.view(1, 1, 3, 3).expand(4, 1, 3, 3), padding=1, groups=4)
    composite = layer[:, :3] + (1 - layer[:, 3:]) * background
    return composite[0].round().clamp(0, 255).to(torch.uint8), mask


class FirstFrameAugmenter:
    """K augmented copies of an object's first frame; index 0 is the original.

    Args:
        num_aug: K, the number of images returned (the original plus K-1 augmentations).
        min_px_count: an augmentation whose object keeps fewer pixels is redrawn.
        seed: seeds the numpy Generator created on every call (the result depends only on
            the inputs and the seed).
    """

    def __init__(self, num_aug: int, min_px_count: int = 1, seed: int = 0) -> None:
        if num_aug < 1:
            raise ValueError(f"FirstFrameAugmenter: num_aug must be >= 1 (the original image), got {num_aug}")
        if min_px_count < 0:
            raise ValueError(f"FirstFrameAugmenter: min_px_count must be >= 0, got {min_px_count}")
        self.num_aug = num_aug
        self.min_px_count = min_px_count
        self.seed = seed

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """image (3,H,W) uint8 RGB, mask (H,W) bool/uint8 -> images (K,3,H,W) uint8, masks (K,1,H,W)
        float32 {0,1}, on the image's device."""
        self._check(image, mask)
        mask_np = mask.detach().cpu().numpy() > 0
        if not mask_np.any():
            raise ValueError("FirstFrameAugmenter: the object has no pixels in its first frame mask, so no target "
                             "model can be initialised for it; check the annotation (object id / palette)")
        image_np = np.ascontiguousarray(image.detach().cpu().numpy().transpose(1, 2, 0))
        rng = np.random.default_rng(self.seed)
        source = ParameterSource(rng, self.num_aug, mask_np)
        cut = cut_out(image_np, mask_np)
        on_cpu = image.device.type == "cpu"
        cut_torch = None if on_cpu else cut_out_to_torch(cut, image.device)

        images = [image.detach()]
        masks = [torch.as_tensor(mask_np, device=image.device)]
        for index in range(1, self.num_aug):
            for _ in range(MAX_TRIES):
                params = source.draw()
                if on_cpu:
                    aug_image, aug_mask = apply_opencv(cut, params)
                    aug_image, aug_mask = torch.from_numpy(aug_image).permute(2, 0, 1), torch.from_numpy(aug_mask)
                else:
                    aug_image, aug_mask = apply_torch(cut_torch, params)
                if int(aug_mask.sum()) >= self.min_px_count:
                    break
            else:
                raise AugmentationError(
                    f"FirstFrameAugmenter: augmentation {index} of {self.num_aug - 1} left fewer than "
                    f"min_px_count={self.min_px_count} object pixels in each of {MAX_TRIES} tries (the object has "
                    f"{int(mask_np.sum())} pixels in a {mask_np.shape[0]}x{mask_np.shape[1]} frame); "
                    f"lower min_px_count or check the mask")
            images.append(aug_image)
            masks.append(aug_mask)
        return torch.stack(images), torch.stack(masks).unsqueeze(1).float()

    @staticmethod
    def _check(image: Tensor, mask: Tensor) -> None:
        if image.dim() != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
            raise ValueError(f"FirstFrameAugmenter: image must be a (3,H,W) uint8 RGB tensor, got shape "
                             f"{tuple(image.shape)} and dtype {image.dtype}")
        if mask.shape != image.shape[1:]:
            raise ValueError(f"FirstFrameAugmenter: mask must be (H,W) = {tuple(image.shape[1:])} like the image, "
                             f"got {tuple(mask.shape)}")
        if mask.dtype not in (torch.bool, torch.uint8):
            raise ValueError(f"FirstFrameAugmenter: mask must be bool or uint8, got {mask.dtype}")
