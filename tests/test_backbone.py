"""The frozen backbone: FRTM naming, weight sources, determinism, scaling and BatchNorm folding."""
from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from models.backbone import Backbone, BackboneWeightsError, build_backbone
from models.config import BACKBONES, FEATURE_CHANNELS, FEATURE_STRIDES

H, W = 64, 96


def _image(seed: int = 0, size=(H, W)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, 3, *size), dtype=torch.uint8, generator=generator)


def _torchvision_stages(resnet: torchvision.models.ResNet, x: torch.Tensor) -> dict[str, torch.Tensor]:
    stem = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x))))
    l1 = resnet.layer1(stem)
    l2 = resnet.layer2(l1)
    l3 = resnet.layer3(l2)
    return {"layer1": stem, "layer2": l1, "layer3": l2, "layer4": l3, "layer5": resnet.layer4(l3)}


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory) -> tuple[Path, torchvision.models.ResNet]:
    """A torchvision ResNet-18 with non-trivial BatchNorm statistics, saved as a plain state dict."""
    torch.manual_seed(1)
    resnet = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():
        for module in resnet.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.0)
                module.bias.uniform_(-0.1, 0.1)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(resnet.state_dict(), path)
    return path, resnet


def test_halves_equal_the_torchvision_forward_with_frtm_names(resnet18_file):
    path, resnet = resnet18_file
    backbone = build_backbone("resnet18", str(path), fold_bn=False)
    x = backbone.normalize(_image())
    with torch.no_grad():
        reference = _torchvision_stages(resnet, x)
        shallow = backbone.shallow(x)
        deep = backbone.deep(shallow["layer3"])
        full = backbone(x)
    assert set(shallow) == {"layer1", "layer2", "layer3"} and set(deep) == {"layer4", "layer5"}
    for name, expected in reference.items():
        got = {**shallow, **deep}[name]
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        torch.testing.assert_close(full[name], expected, rtol=0, atol=0)
        assert got.shape[1] == FEATURE_CHANNELS["resnet18"][name] == backbone.channels[name]


def test_state_dict_wrapped_under_state_dict_or_model_loads(resnet18_file, tmp_path):
    path, resnet = resnet18_file
    reference = build_backbone("resnet18", str(path), fold_bn=False)
    for wrapper in ("state_dict", "model"):
        wrapped = tmp_path / f"{wrapper}.pth"
        torch.save({wrapper: resnet.state_dict(), "epoch": 3}, wrapped)
        loaded = build_backbone("resnet18", str(wrapped), fold_bn=False)
        for (k, a), (_, b) in zip(reference.state_dict().items(), loaded.state_dict().items()):
            assert torch.equal(a, b), k


@pytest.mark.parametrize("name", BACKBONES)
def test_random_backbone_is_well_scaled_with_the_documented_shapes(name):
    backbone = build_backbone(name, "none")
    with torch.no_grad():
        feats = backbone(backbone.normalize(_image()))
    for layer, stride in FEATURE_STRIDES.items():
        f = feats[layer]
        assert f.shape == (1, FEATURE_CHANNELS[name][layer], -(-H // stride), -(-W // stride)), layer
        assert torch.isfinite(f).all()
        assert 0.05 <= float(f.std()) <= 20, f"{name} {layer} std {float(f.std())}"


def test_random_backbone_is_bit_identical_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = Backbone("resnet18", "none")
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(999)  # a different global state must not change the weights
    second = Backbone("resnet18", "none")
    for (k, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), k


def test_backbone_stays_frozen_in_train_mode():
    backbone = build_backbone("resnet18", "none", fold_bn=False)
    assert all(not p.requires_grad for p in backbone.parameters())
    stats = {k: v.clone() for k, v in backbone.state_dict().items()}
    backbone.train()
    assert not backbone.training
    assert not any(m.training for m in backbone.modules())
    with torch.no_grad():
        backbone(backbone.normalize(_image(3)))
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, stats[k]), f"{k} changed in train mode"


def test_batchnorm_folding_agrees_with_unfolded_output():
    plain = build_backbone("resnet18", "none", fold_bn=False)
    folded = build_backbone("resnet18", "none", fold_bn=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in plain.modules()) == 20
    x = plain.normalize(_image(5))
    with torch.no_grad():
        a, b = plain(x), folded(x)
    for layer in a:
        assert _relative_error(b[layer], a[layer]) < 1e-4, layer


def test_normalize_accepts_uint8_and_float_and_uses_imagenet_statistics():
    backbone = build_backbone("resnet18", "none")
    image = _image(7)
    torch.testing.assert_close(backbone.normalize(image), backbone.normalize(image.float()))
    mean_pixel = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1).expand(1, 3, 2, 2) * 255
    torch.testing.assert_close(backbone.normalize(mean_pixel), torch.zeros(1, 3, 2, 2), atol=1e-6, rtol=0)
    white = torch.full((1, 3, 1, 1), 255, dtype=torch.uint8)
    expected = torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(backbone.normalize(white), expected)


def test_imagenet_weights_offline_raise_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(BackboneWeightsError) as info:
        build_backbone("resnet18", "imagenet")
    message = str(info.value)
    assert str(Path(torch.hub.get_dir()) / "checkpoints") in message
    assert "resnet18-f37072fd.pth" in message
    assert "--backbone-weights none" in message and "--backbone-weights PATH" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_missing_weights_file_is_named(tmp_path):
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(BackboneWeightsError, match="nowhere.pth.*does not exist"):
        build_backbone("resnet18", str(missing))


def test_weights_file_with_wrong_keys_or_garbage_is_named(tmp_path, resnet18_file):
    path, resnet = resnet18_file
    wrong = tmp_path / "wrong.pth"
    state = resnet.state_dict()
    del state["layer4.1.conv2.weight"]
    state["layer9.weight"] = torch.zeros(1)
    torch.save(state, wrong)
    with pytest.raises(BackboneWeightsError) as info:
        build_backbone("resnet18", str(wrong))
    message = str(info.value)
    assert "wrong.pth" in message and "layer4.1.conv2.weight" in message and "layer9.weight" in message

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(BackboneWeightsError, match="garbage.pth"):
        build_backbone("resnet18", str(garbage))

    not_a_dict = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), not_a_dict)
    with pytest.raises(BackboneWeightsError, match="tensor.pth.*state dict"):
        build_backbone("resnet18", str(not_a_dict))


def test_resnet18_file_for_resnet101_reports_shapes(resnet18_file):
    path, _ = resnet18_file
    with pytest.raises(BackboneWeightsError, match="resnet18.pth is not a torchvision resnet101 state dict"):
        build_backbone("resnet101", str(path))
