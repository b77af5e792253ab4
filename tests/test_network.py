"""G-FRTM modules: shapes, template matching, gate, refiner batching, upsampling and the checkpoint layout."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.backbone import build_backbone
from models.config import BACKBONES, NetworkConfig
from models.gate import make_gate, reuse_decision, straight_through
from models.gfrtm import GFRTM
from models.refiner import pyramid_upsample2x
from models.template import mask_to_stride

KEY_TABLES = Path(__file__).resolve().parents[1] / "weights"  # checkpoint_keys_<backbone>.tsv, shipped in the repository
H, W = 64, 96


@pytest.fixture(scope="module", params=BACKBONES)
def parts(request):
    torch.manual_seed(0)
    backbone = build_backbone(request.param, "none")
    net = GFRTM(NetworkConfig(backbone=request.param)).eval()
    image = torch.randint(0, 256, (1, 3, H, W), dtype=torch.uint8)
    with torch.no_grad():
        feats = backbone(backbone.normalize(image))
    return net, feats


def _masks(batch: int, size=(H, W)) -> torch.Tensor:
    """(batch,1,H,W) distinct rectangular masks."""
    masks = torch.zeros(batch, 1, *size)
    for k in range(batch):
        masks[k, 0, 8 + 4 * k:40 + 2 * k, 10 + 6 * k:60 + 3 * k] = 1
    return masks


def test_every_module_output_has_the_documented_shape(parts):
    net, feats = parts
    b = 3
    layer3, layer4 = feats["layer3"], feats["layer4"]
    h8, w8 = layer3.shape[-2:]
    h16, w16 = layer4.shape[-2:]
    masks = _masks(b)
    with torch.no_grad():
        template = net.make_template(layer3, mask_to_stride(masks, (h8, w8), training=False))
        score = mask_to_stride(masks, (h16, w16), training=False)
        tpl = net.match(template, layer3, score)
        logits = net.gate_logits(tpl)
        diff = net.delta(tpl)
        x = net.refiner.deep(score, feats)
        x_reuse = net.refiner.translate(x, diff)
        out = net.refiner.shallow(x_reuse, score + diff, feats, (H, W))
    assert template.shape == (b, 64, 64)
    torch.testing.assert_close(template.sum(-1), torch.ones(b, 64))  # softmax rows
    assert tpl.shape == (b, 64, h8, w8) and (tpl >= 0).all()
    assert logits.shape == (b, 2)
    assert diff.shape == (b, 1, h16, w16)
    assert x.shape == x_reuse.shape == (b, 64, h16, w16)
    assert out.shape == (b, 1, H, W) and torch.isfinite(out).all()


def test_delta_map_has_layer4_size_for_odd_frame_sizes():
    backbone = build_backbone("resnet18", "none")
    net = GFRTM(NetworkConfig()).eval()
    for size in [(100, 170), (97, 203), (480, 854)]:
        image = torch.zeros(1, 3, *size, dtype=torch.uint8)
        with torch.no_grad():
            feats = backbone.shallow(backbone.normalize(image))
            layer4 = backbone.deep(feats["layer3"])["layer4"]
            tpl = net.match(torch.eye(64)[None], feats["layer3"], torch.zeros(1, 1, *layer4.shape[-2:]))
            assert net.delta(tpl).shape[-2:] == layer4.shape[-2:], size


def _cat_reference(branch: nn.Sequential, feats: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
    """The branch on an explicit concat(features, extra channel)."""
    return branch(torch.cat([feats.expand(extra.shape[0], -1, -1, -1), extra], dim=1))


def test_template_generation_and_matching_follow_the_formulas(parts):
    net, feats = parts
    tm = net.Tmatching
    layer3 = feats["layer3"]
    h8, w8 = layer3.shape[-2:]
    masks8 = mask_to_stride(_masks(2), (h8, w8), training=False)
    with torch.no_grad():
        key = _cat_reference(tm.Tgenerate.conv_key, layer3, masks8).flatten(2)
        val = _cat_reference(tm.Tgenerate.conv_val, layer3, masks8).flatten(2)
        expected = torch.softmax(val @ key.transpose(1, 2) / math.sqrt(h8 * w8), dim=-1)
        template = net.make_template(layer3, masks8)
        torch.testing.assert_close(template, expected, rtol=1e-4, atol=1e-6)

        score8 = torch.rand(2, 1, h8, w8)
        mkey = _cat_reference(tm.Tmatching.conv_key, layer3, score8)
        feat = _cat_reference(tm.Tmatching.conv_feat, layer3, score8)
        similarity = (template @ mkey.flatten(2)).view(2, 64, h8, w8)
        expected_tpl = torch.relu(tm.Tmatching.blend(torch.cat([feat, similarity], dim=1)))
        torch.testing.assert_close(tm.match(template, layer3, score8), expected_tpl, rtol=1e-4, atol=1e-5)


def test_match_resizes_the_stride16_score_bilinearly(parts):
    net, feats = parts
    layer3 = feats["layer3"]
    template = torch.softmax(torch.randn(2, 64, 64), dim=-1)
    score16 = torch.rand(2, 1, *feats["layer4"].shape[-2:])
    score8 = F.interpolate(score16, size=layer3.shape[-2:], mode="bilinear", align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(net.match(template, layer3, score16), net.Tmatching.match(template, layer3, score8))


def test_mask_to_stride_is_nearest_at_inference_and_bilinear_in_training():
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :3, :] = 1
    nearest = mask_to_stride(mask, (4, 4), training=False)
    bilinear = mask_to_stride(mask, (4, 4), training=True)
    assert set(nearest.unique().tolist()) <= {0.0, 1.0}
    assert 0 < bilinear[0, 0, 1, 0] < 1  # a row straddling the mask border gets a fractional value
    assert mask_to_stride(mask.bool(), (4, 4), training=False).dtype == torch.float32


def test_gate_layout_and_initial_bias():
    gate = make_gate().eval()
    kinds = [nn.AdaptiveMaxPool2d, nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveMaxPool2d, nn.Conv2d]
    assert [type(m) for m in gate] == kinds
    assert gate[1].stride == (2, 2) and gate[1].padding == (1, 1) and gate[4].padding == (0, 0)
    assert gate[4].bias.tolist() == pytest.approx([0.1, 2.0])
    net = GFRTM(NetworkConfig()).eval()
    with torch.no_grad():
        p = torch.softmax(net.gate_logits(torch.zeros(2, 64, 13, 22)), dim=1)
    assert p.shape == (2, 2)
    assert p[:, 1].tolist() == pytest.approx([0.87, 0.87], abs=0.02)


def test_straight_through_is_exactly_one_hot_and_passes_gradients():
    torch.manual_seed(3)
    gate = make_gate()
    tpl = torch.randn(4, 64, 9, 14)
    decision, p = straight_through(gate(tpl).flatten(1))
    torch.testing.assert_close(p.sum(1), torch.ones(4))
    expected = F.one_hot(p.argmax(1), 2).float()
    assert torch.equal(decision.detach(), expected)  # exact, not approximately one-hot
    (decision[:, 0] * torch.arange(1.0, 5.0)).sum().backward()
    assert gate[1].weight.grad is not None and gate[1].weight.grad.abs().sum() > 0
    assert gate[4].weight.grad.abs().sum() > 0


def test_reuse_decision_is_strict():
    p = torch.tensor([1.0, 0.7, 0.7001, 0.0])
    assert reuse_decision(p, 1.0).tolist() == [False, False, False, False]
    assert reuse_decision(p, 0.7).tolist() == [True, False, True, False]
    assert reuse_decision(p, 0.0).tolist() == [True, True, True, False]


def test_refiner_batched_objects_equal_each_object_alone(parts):
    net, feats = parts
    refiner = net.refiner
    b = 3
    h16, w16 = feats["layer4"].shape[-2:]
    torch.manual_seed(4)
    score = torch.randn(b, 1, h16, w16)
    diff = 0.1 * torch.randn(b, 1, h16, w16)
    with torch.no_grad():
        x = refiner.deep(score, feats)
        xt = refiner.translate(x, diff)
        out = refiner.shallow(xt, score + diff, feats, (H, W))
        for k in range(b):
            xk = refiner.deep(score[k:k + 1], feats)
            xtk = refiner.translate(xk, diff[k:k + 1])
            outk = refiner.shallow(xtk, score[k:k + 1] + diff[k:k + 1], feats, (H, W))
            torch.testing.assert_close(x[k:k + 1], xk, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(xt[k:k + 1], xtk, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(out[k:k + 1], outk, rtol=1e-5, atol=1e-5)
        # features given per object (batch B, as in training) give the same result
        per_object = {name: f.expand(b, -1, -1, -1).contiguous() for name, f in feats.items()}
        torch.testing.assert_close(refiner.deep(score, per_object), x, rtol=1e-5, atol=1e-5)


def test_refiner_output_depends_on_score_and_features(parts):
    net, feats = parts
    h16, w16 = feats["layer4"].shape[-2:]
    score = torch.zeros(1, 1, h16, w16)
    with torch.no_grad():
        x = net.refiner.deep(score, feats)
        assert not torch.allclose(net.refiner.deep(score + 1, feats), x)
        other = {k: v.flip(-1) for k, v in feats.items()}
        assert not torch.allclose(net.refiner.deep(score, other), x)


def _cubic(t: float, a: float = -0.75) -> float:
    t = abs(t)
    if t <= 1:
        return (a + 2) * t**3 - (a + 3) * t**2 + 1
    if t < 2:
        return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return 0.0


def _explicit_upsample_1d(row: list[float]) -> list[float]:
    """2x cubic convolution (a = -0.75) with replicated border samples, half-pixel centres."""
    n = len(row)
    out = []
    for i in range(2 * n):
        src = (i + 0.5) / 2 - 0.5
        base = math.floor(src)
        value = 0.0
        for tap in range(base - 1, base + 3):
            value += _cubic(src - tap) * row[min(max(tap, 0), n - 1)]
        out.append(value)
    return out


def test_bicubic_pyramid_upsampling_equals_explicit_four_taps():
    torch.manual_seed(5)
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64)
    rows = [[_explicit_upsample_1d(x[0, c, i].tolist()) for i in range(4)] for c in range(2)]
    rows = torch.tensor(rows, dtype=torch.float64)  # (2, 4, 10)
    cols = [[_explicit_upsample_1d(rows[c, :, j].tolist()) for j in range(10)] for c in range(2)]
    expected = torch.tensor(cols, dtype=torch.float64).transpose(1, 2)[None]  # (1, 2, 8, 10)
    torch.testing.assert_close(pyramid_upsample2x(x), expected, rtol=1e-12, atol=1e-12)


def _spec_rows(backbone: str) -> list[tuple[str, tuple[int, ...], str]]:
    path = KEY_TABLES / f"checkpoint_keys_{backbone}.tsv"
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        rows.append((key, tuple(int(n) for n in shape.strip("()").split(",") if n.strip()), dtype))
    return rows


@pytest.mark.parametrize("backbone", BACKBONES)
def test_state_dict_equals_the_published_checkpoint_layout(backbone):
    expected = _spec_rows(backbone)
    state = GFRTM(NetworkConfig(backbone=backbone)).state_dict()
    got = [(key, tuple(value.shape), str(value.dtype)) for key, value in state.items()]
    assert got == expected
