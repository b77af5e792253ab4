"""The inference forms of the shallow refinement, the upsampler and the merge against the plain computations:
pyramid upsampling, the tap maps' resize-and-shift, folded BatchNorm, the merge rule, and a bfloat16 network."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.backbone import build_backbone
from models.config import NetworkConfig
from models.gfrtm import GFRTM
from models.merge import merge_objects
from models.refiner import Refiner, Upsampler
from models.template import mask_to_stride
from models.upsampling import pyramid_upsample2x, shifted_resize_operator, tap_resize

H, W = 41, 58  # odd on purpose: the stride-4 maps then overhang the image


def _bicubic(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)


def _well_scaled(net: nn.Module, seed: int = 0) -> nn.Module:
    """He-initialised convs and BatchNorms with non-trivial statistics, so every layer matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=g) * (2 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=g) * 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                module.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                module.weight.copy_(torch.rand(n, generator=g) + 0.5)
                module.bias.copy_(torch.randn(n, generator=g) * 0.2)
    return net.eval()


# ------------------------------------------------------------------------------------ pyramid upsampling
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])  # float64 on the CPU takes the 4-phase form
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(1, 3, 5, 7), (2, 4, 6, 9), (1, 2, 1, 3)])
def test_pyramid_upsampling_equals_bicubic_interpolation(dtype, channels_last, shape):
    x = torch.randn(shape, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        got = pyramid_upsample2x(x)
    tolerance = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(got, _bicubic(x), rtol=tolerance, atol=tolerance)
    assert got.dtype == dtype
    assert got.is_contiguous(memory_format=torch.channels_last) == (channels_last and shape[-1] * shape[-2] > 1)


def test_pyramid_upsampling_in_bfloat16_is_the_bicubic_of_its_values():
    x = torch.randn(1, 8, 7, 10).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        got = pyramid_upsample2x(x)
    assert got.dtype == torch.bfloat16 and got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got.float(), _bicubic(x.float()), rtol=1e-2, atol=2e-2)


def test_pyramid_upsampling_records_the_plain_interpolation_for_autograd():
    x = torch.randn(1, 2, 4, 5, requires_grad=True)
    pyramid_upsample2x(x).sum().backward()
    expected = torch.autograd.grad(_bicubic(x).sum(), x)[0]
    torch.testing.assert_close(x.grad, expected)


# ------------------------------------------------------------------------------------ upsampler
def _plain_upsampler(up: Upsampler, x: torch.Tensor, size) -> torch.Tensor:
    """conv1 -> bicubic 2x ... in the published order: bicubic, conv1, ReLU, bicubic, bilinear resize, 3x3 conv."""
    y = torch.relu(up.conv1(_bicubic(x)))
    y = F.interpolate(_bicubic(y), size=size, mode="bilinear", align_corners=False)
    return up.conv2(y)


@pytest.mark.parametrize("image_size", [(H, W), (64, 96), (33, 7), (50, 17)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_upsampler_equals_the_plain_composition(image_size, channels_last):
    up = _well_scaled(Upsampler(16), seed=1)
    if image_size == (50, 17):  # a stride-4 map that does not match the image: any pair of sizes works
        x = torch.randn(2, 16, 5, 6)
    else:
        x = torch.randn(2, 16, (image_size[0] + 3) // 4, (image_size[1] + 3) // 4)
    with torch.no_grad():
        expected = _plain_upsampler(up.double(), x.double(), image_size)
        up = up.float()
        if channels_last:
            up, x = up.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        got = up(x, image_size)
    assert got.shape == (2, 1, *image_size) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def test_tap_resize_stays_float32_inside_an_autocast_region():
    taps = torch.randn(2, 9, 6, 8)
    resize_taps = tap_resize((6, 8), (11, 15), taps.device)
    expected = resize_taps(taps)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = resize_taps(taps)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_shifted_resize_operator_is_the_interpolation_read_one_pixel_on():
    length, size = 6, 11
    signal = torch.randn(length, dtype=torch.float64)
    plain = F.interpolate(_bicubic(signal.view(1, 1, 1, -1).expand(1, 1, 2, -1)), size=(4, size),
                          mode="bilinear", align_corners=False)[0, 0, 0]
    for shift in (-1, 0, 1):
        got = shifted_resize_operator(length, size, shift) @ signal
        expected = torch.zeros(size, dtype=torch.float64)
        lo, hi = max(0, -shift), size - max(0, shift)
        expected[lo:hi] = plain[lo + shift:hi + shift]  # zero where the shifted pixel is outside
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------ refiner
@pytest.fixture(scope="module")
def network_and_features():
    torch.manual_seed(0)
    net = _well_scaled(GFRTM(NetworkConfig(backbone="resnet18")))
    backbone = build_backbone("resnet18", "none")
    image = torch.randint(0, 256, (1, 3, H, W), dtype=torch.uint8)
    with torch.no_grad():
        feats = backbone(backbone.normalize(image))
    return net, feats


def _refiner_outputs(refiner: Refiner, feats, score, diff, grad: bool):
    with torch.set_grad_enabled(grad):
        x = refiner.deep(score, feats)
        x_reuse = refiner.translate(x, diff)
        logits = refiner.shallow(x_reuse, score + diff, feats, (H, W))
    return [t.detach() for t in (x, x_reuse, logits)]


def test_inference_refiner_equals_its_recorded_form_and_folding_changes_nothing(network_and_features):
    """Autograd records the plain operations (out of place, BatchNorm, plain resizings); the inference
    forms (in place, banded tap resizing) and the folded BatchNorm give the same values up to rounding."""
    net, feats = network_and_features
    g = torch.Generator().manual_seed(2)
    h16 = feats["layer4"].shape[-2:]
    score, diff = torch.randn(2, 1, *h16, generator=g), 0.3 * torch.randn(2, 1, *h16, generator=g)
    refiner = copy.deepcopy(net.refiner).requires_grad_(True)
    plain = _refiner_outputs(refiner, feats, score, diff, grad=True)
    fast = _refiner_outputs(refiner, feats, score, diff, grad=False)
    folded = _refiner_outputs(copy.deepcopy(refiner).fold_batchnorm(), feats, score, diff, grad=False)
    for name, a, b, c in zip(("deep x", "translated x", "logits"), plain, fast, folded):
        scale = a.abs().max().item()
        assert scale > 1  # well scaled: the comparison means something
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5 * scale, msg=name)
        torch.testing.assert_close(c, a, rtol=1e-4, atol=1e-5 * scale, msg=name)
    # the masks are not trivial
    assert 0.05 < (plain[2] > 0).float().mean() < 0.95


def test_a_folded_refiner_cannot_be_saved_or_loaded(network_and_features):
    net, _ = network_and_features
    keys = list(net.state_dict())
    folded = copy.deepcopy(net)
    folded.refiner.fold_batchnorm()
    assert folded.refiner.fold_batchnorm() is folded.refiner  # folding twice is a no-op
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.refiner.modules())
    with pytest.raises(RuntimeError, match="fold_batchnorm"):
        folded.state_dict()
    with pytest.raises(RuntimeError, match="fold_batchnorm"):
        folded.load_state_dict(net.state_dict())
    with pytest.raises(RuntimeError, match="only runs inference"):
        folded.train()
    folded.eval()  # eval mode stays allowed
    with pytest.raises(RuntimeError, match="eval"):
        copy.deepcopy(net).train().refiner.fold_batchnorm()
    assert list(net.state_dict()) == keys  # the unfolded network is untouched


def test_bfloat16_network_runs_and_stays_close_to_float32(network_and_features):
    """Weights converted once with .to(bfloat16) and bfloat16 features; scores and masks stay float32."""
    net, feats = network_and_features
    h16, h8 = feats["layer4"].shape[-2:], feats["layer3"].shape[-2:]
    g = torch.Generator().manual_seed(3)
    score = torch.randn(2, 1, *h16, generator=g)
    masks = torch.zeros(2, 1, H, W)
    masks[0, :, 5:30, 8:40] = 1
    masks[1, :, 20:40, 25:55] = 1
    mask8 = mask_to_stride(masks, h8, training=False)
    outputs = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = copy.deepcopy(net)
        model.refiner.fold_batchnorm()
        model = model.to(dtype).to(memory_format=torch.channels_last)
        f = {k: v.to(dtype).contiguous(memory_format=torch.channels_last) for k, v in feats.items()}
        with torch.inference_mode():
            x = model.refiner.deep(score, f)
            tpl = model.match(model.make_template(f["layer3"], mask8), f["layer3"], score)
            gate, diff = model.gate_logits(tpl), model.delta(tpl)
            x_reuse = model.refiner.translate(x, diff)
            logits = model.refiner.shallow(x_reuse, score + diff.float(), f, (H, W))
        assert (x.dtype, gate.dtype, diff.dtype, x_reuse.dtype) == (dtype,) * 4
        assert logits.dtype == torch.float32 and logits.shape == (2, 1, H, W)
        outputs[dtype] = [t.float() for t in (x, gate, diff, x_reuse, logits)]
    for name, a, b in zip(("x", "gate", "diff", "x_reuse", "logits"), outputs[torch.float32], outputs[torch.bfloat16]):
        assert (a - b).abs().max() <= 0.05 * a.abs().max(), name  # bfloat16 keeps 8 bits of mantissa
    masks32, masks16 = outputs[torch.float32][-1] > 0, outputs[torch.bfloat16][-1] > 0
    assert (masks32 == masks16).float().mean() > 0.98


# ------------------------------------------------------------------------------------ merge
def _published_merge(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The published rule written out plainly: clamp, background = min(1 - p), softmax of the odds over
    [background, objects], argmax (ties to the lower index), kept maps, and a second round on them."""
    def aggregate(p):
        p = p.clamp(1e-7, 1 - 1e-7)
        background = (1 - p).min(dim=0, keepdim=True).values
        candidates = torch.cat([background, p])
        softmax = torch.softmax(candidates / (1 - candidates), dim=0)
        return softmax.argmax(dim=0), softmax

    winner, softmax = aggregate(probs)
    positions = torch.arange(1, len(probs) + 1).view(-1, 1, 1)
    kept = softmax[1:] * (winner.unsqueeze(0) == positions)
    labels, _ = aggregate(kept)
    return labels, kept


def _merge_inputs(objects: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    uniform = torch.rand(objects, 37, 53, generator=g)
    uniform[:, :3] = uniform[:1, :3]  # exact ties between all objects
    uniform[:, 3, :20] = 0.5  # exactly at 0.5
    uniform[0, 4] = 1.0  # clamped to the upper bound, tied with the next row's ...
    uniform[-1, 4:6] = 1 - 1e-7
    uniform[0, 6] = 0.0  # ... and to the lower bound
    near_ties = torch.tensor([0.5 + 2 ** -24, 0.5 - 2 ** -25, 0.6, 0.6, 0.9, 0.9, 1e-8, 0.0, 1.0, 0.99999994])
    for k in range(objects):  # each object a different arrangement of values at and around ties
        uniform[k, 7, :10] = near_ties.roll(k)
    # real-looking: sigmoids of smooth logits, with large saturated areas and soft boundaries
    coarse = torch.randn(objects, 1, 6, 8, generator=g) * 8
    smooth = torch.sigmoid(F.interpolate(coarse, size=(48, 64), mode="bilinear", align_corners=False)[:, 0])
    return [uniform, smooth]


@pytest.mark.parametrize("objects", [1, 2, 3, 4, 5])
def test_merge_equals_the_published_rule(objects):
    for probs in _merge_inputs(objects, seed=objects):
        expected_labels, expected_kept = _published_merge(probs)
        labels, kept = merge_objects(probs)
        assert labels.dtype == torch.long and torch.equal(labels, expected_labels)
        torch.testing.assert_close(kept, expected_kept, rtol=1e-6, atol=1e-7)


def test_merge_writes_object_ids_into_a_uint8_map():
    probs = _merge_inputs(3, seed=7)[1]
    positions, kept = merge_objects(probs)
    labels, kept_with_ids = merge_objects(probs, ids=[4, 9, 200])
    assert labels.dtype == torch.uint8
    assert torch.equal(labels.long(), torch.tensor([0, 4, 9, 200])[positions])
    assert torch.equal(kept_with_ids, kept)
    one, _ = merge_objects(probs[:1], ids=[7])
    assert torch.equal(one.long(), 7 * (probs[0] > 0.5).long())


@pytest.mark.parametrize("probs, ids, message", [
    (torch.rand(4, 5), None, "shape"),
    (torch.rand(0, 4, 5), None, "shape"),
    (torch.rand(2, 4, 5), [1], "2 objects"),
    (torch.rand(2, 4, 5), [1, 256], "1..255"),
])
def test_merge_rejects_bad_input(probs, ids, message):
    with pytest.raises(ValueError, match=message):
        merge_objects(probs, ids)
