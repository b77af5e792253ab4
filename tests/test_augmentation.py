"""First-frame augmentation: outputs, determinism, redraws, errors and backend agreement."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.augmentation import (MAX_TRIES, AugmentationError, FirstFrameAugmenter, ParameterSource, apply_opencv,
                                 apply_torch, cut_out, cut_out_to_torch)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
RED, GREEN = (220, 30, 30), (30, 160, 60)


def _scene(height: int = 64, width: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A textured green background with a red ellipse-like object."""
    g = torch.Generator().manual_seed(seed)
    image = torch.tensor(GREEN, dtype=torch.float32).view(3, 1, 1) + 20 * torch.randn(3, height, width, generator=g)
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    mask = ((ys - 28) / 12.0) ** 2 + ((xs - 40) / 18.0) ** 2 <= 1
    image[:, mask] = torch.tensor(RED, dtype=torch.float32).view(3, 1)
    return image.round().clamp(0, 255).to(torch.uint8), mask


def test_shapes_dtype_device_and_original_first():
    image, mask = _scene()
    images, masks = FirstFrameAugmenter(num_aug=5, seed=3)(image, mask)
    assert images.shape == (5, 3, 64, 96) and images.dtype == torch.uint8 and images.device == image.device
    assert masks.shape == (5, 1, 64, 96) and masks.dtype == torch.float32 and masks.device == image.device
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(images[0], image)
    assert torch.equal(masks[0, 0], mask.float())
    assert not any(torch.equal(images[k], image) for k in range(1, 5))
    # uint8 masks are accepted as well
    _, masks_u8 = FirstFrameAugmenter(num_aug=5, seed=3)(image, mask.to(torch.uint8))
    assert torch.equal(masks_u8, masks)


def test_object_is_pasted_on_an_inpainted_background():
    image, mask = _scene()
    images, masks = FirstFrameAugmenter(num_aug=6, seed=1)(image, mask)
    red = torch.tensor(RED).view(3, 1)
    for k in range(1, 6):
        inside = masks[k, 0].bool()
        redness = images[k][0].float() - images[k][1].float()  # red minus green
        assert redness[inside].mean() > 120  # the object's colour where its mask says
        assert (redness[~inside] > 120).float().mean() < 0.01  # no red left elsewhere: the hole was inpainted
    assert torch.allclose(images[0][:, mask].float().mean(1), red.float().squeeze(1))


def test_deterministic_under_a_seed():
    image, mask = _scene()
    first = FirstFrameAugmenter(num_aug=4, seed=7)(image, mask)
    np.random.seed(123)  # global state must not matter
    torch.manual_seed(123)
    second = FirstFrameAugmenter(num_aug=4, seed=7)(image, mask)
    other = FirstFrameAugmenter(num_aug=4, seed=8)(image, mask)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[0][1:], other[0][1:])


def test_augmentations_keep_min_px_count_by_redrawing():
    image, mask = _scene()
    needed = int(mask.sum())  # as many pixels as the original: small scales must be redrawn
    _, loose = FirstFrameAugmenter(num_aug=10, min_px_count=1, seed=0)(image, mask)
    _, strict = FirstFrameAugmenter(num_aug=10, min_px_count=needed, seed=0)(image, mask)
    loose_px = loose[1:].flatten(1).sum(1)
    strict_px = strict[1:].flatten(1).sum(1)
    assert (loose_px < needed).any()  # without the threshold some objects are smaller
    assert (strict_px >= needed).all()


def test_empty_mask_is_a_clear_error():
    image, mask = _scene()
    with pytest.raises(ValueError, match="no pixels in its first frame"):
        FirstFrameAugmenter(num_aug=3)(image, torch.zeros_like(mask))


def test_impossible_min_px_count_gives_up_after_max_tries():
    image, mask = _scene()
    with pytest.raises(AugmentationError, match=f"{MAX_TRIES} tries"):
        FirstFrameAugmenter(num_aug=3, min_px_count=64 * 96 + 1)(image, mask)


def test_bad_inputs_are_rejected():
    image, mask = _scene()
    with pytest.raises(ValueError, match="uint8 RGB"):
        FirstFrameAugmenter(3)(image.float(), mask)
    with pytest.raises(ValueError, match=r"mask must be \(H,W\)"):
        FirstFrameAugmenter(3)(image, mask[:-1])
    with pytest.raises(ValueError, match="num_aug"):
        FirstFrameAugmenter(0)


def _backend_agreement(image: torch.Tensor, mask: torch.Tensor, num_aug: int) -> None:
    """The torch backend (run on CPU tensors) matches the OpenCV backend for the same parameters."""
    mask_np = mask.numpy()
    source = ParameterSource(np.random.default_rng(0), num_aug, mask_np)
    cut = cut_out(np.ascontiguousarray(image.permute(1, 2, 0).numpy()), mask_np)
    cut_t = cut_out_to_torch(cut, torch.device("cpu"))
    kinds = set()
    for _ in range(num_aug - 1):
        params = source.draw()
        kinds.add((params.background_warp is not None, params.background_sigma > 0, params.motion_kernel is not None))
        cv_image, cv_mask = apply_opencv(cut, params)
        t_image, t_mask = apply_torch(cut_t, params)
        cv_mask = torch.from_numpy(cv_mask)
        iou = (cv_mask & t_mask).sum() / (cv_mask | t_mask).sum()
        assert iou > 0.9
        difference = (torch.from_numpy(cv_image).permute(2, 0, 1).float() - t_image.float()).abs()
        assert difference.mean() < 1.0
    # the parameters exercised background zoom, background blur and motion blur
    assert any(k[0] for k in kinds) and any(k[1] for k in kinds) and any(k[2] for k in kinds)


def test_torch_backend_agrees_with_opencv_backend():
    image, mask = _scene()
    _backend_agreement(image, mask, num_aug=15)


def test_torch_backend_agrees_on_a_real_davis_frame():
    root = SHARED / "data" / "davis-mini"
    if not root.is_dir():
        pytest.skip(f"shared DAVIS data not found at {root}")
    from PIL import Image
    image = torch.from_numpy(np.array(Image.open(root / "JPEGImages/480p/blackswan/00000.jpg").convert("RGB")))
    mask = torch.from_numpy(np.array(Image.open(root / "Annotations/480p/blackswan/00000.png")) == 1)
    _backend_agreement(image.permute(2, 0, 1).contiguous(), mask, num_aug=5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_input_uses_the_torch_backend_and_matches_cpu():
    image, mask = _scene()
    cpu_images, cpu_masks = FirstFrameAugmenter(num_aug=8, seed=2)(image, mask)
    gpu_images, gpu_masks = FirstFrameAugmenter(num_aug=8, seed=2)(image.cuda(), mask.cuda())
    assert gpu_images.device.type == "cuda" and gpu_masks.device.type == "cuda"
    for k in range(8):
        a, b = cpu_masks[k, 0].bool(), gpu_masks[k, 0].cpu().bool()
        assert (a & b).sum() / (a | b).sum() > 0.9
    assert (cpu_images.float() - gpu_images.cpu().float()).abs().mean() < 2.0
