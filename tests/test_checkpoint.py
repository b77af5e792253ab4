"""Published-checkpoint I/O: exact round trips and clear errors for every kind of bad file."""
from __future__ import annotations

import fractions
import pickle

import pytest
import torch

from models.checkpoint import (
    CheckpointError,
    check_state_dict,
    detect_backbone,
    expected_shapes,
    load_checkpoint,
    load_gfrtm,
    save_gfrtm,
)
from models.config import NetworkConfig
from models.gfrtm import GFRTM
from trainer.export import main as export_main


def _trained_like(backbone: str = "resnet18") -> GFRTM:
    """A GFRTM whose every tensor (BatchNorm statistics included) differs from a fresh one."""
    torch.manual_seed(7)
    model = GFRTM(NetworkConfig(backbone=backbone))
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                value.copy_(torch.rand_like(value) + 0.5)
            else:
                value.fill_(17)
    return model


def _save_model_dict(path, state_dict, **extra):
    torch.save({"model": state_dict, **extra}, path)
    return path


def test_round_trip_is_exact_and_keeps_extra_entries(tmp_path):
    model = _trained_like()
    path = tmp_path / "run" / "run_ep0003.pth"
    save_gfrtm(path, model, epoch=3, name="run", stats={"loss": [0.5, 0.25]})
    loaded, checkpoint = load_gfrtm(path)
    assert checkpoint["epoch"] == 3 and checkpoint["name"] == "run" and checkpoint["stats"]["loss"] == [0.5, 0.25]
    assert loaded.cfg.backbone == "resnet18"
    original, restored = model.state_dict(), loaded.state_dict()
    assert list(original) == list(restored)
    for key in original:
        assert restored[key].dtype == original[key].dtype and torch.equal(restored[key], original[key]), key
    assert [p.name for p in tmp_path.joinpath("run").iterdir()] == ["run_ep0003.pth"]  # no temporary left


def test_failed_save_leaves_the_previous_file_intact(tmp_path):
    path = tmp_path / "model.pth"
    save_gfrtm(path, _trained_like(), epoch=1)
    before = path.read_bytes()
    with pytest.raises((AttributeError, pickle.PicklingError)):  # local lambdas cannot be pickled
        save_gfrtm(path, GFRTM(NetworkConfig()), epoch=2, bad=lambda: None)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]


def test_backbone_is_detected_from_the_layer4_reduce_weight():
    for backbone in ("resnet18", "resnet101"):
        assert detect_backbone(GFRTM(NetworkConfig(backbone=backbone)).state_dict(), "x.pth") == backbone
    with pytest.raises(CheckpointError, match="odd.pth.*512 input channels"):
        detect_backbone({"refiner.TSE.layer4.reduce.0.weight": torch.zeros(64, 512, 1, 1)}, "odd.pth")
    with pytest.raises(CheckpointError, match="empty.pth.*refiner.TSE.layer4.reduce.0.weight"):
        detect_backbone({}, "empty.pth")
    wrapped = {f"module.{k}": v for k, v in GFRTM(NetworkConfig()).state_dict().items()}
    with pytest.raises(CheckpointError, match="ddp.pth.*start with 'module.'"):
        detect_backbone(wrapped, "ddp.pth")
    with pytest.raises(CheckpointError, match=r"other.pth.*its 4 keys begin a, b, c \(1 more\)"):
        detect_backbone(dict.fromkeys("abcd", torch.zeros(1)), "other.pth")


def test_expected_shapes_need_no_file():
    shapes = expected_shapes("resnet101")
    assert shapes["refiner.TSE.layer4.reduce.0.weight"] == (64, 1024, 1, 1)
    assert shapes["Tmatching.Tgenerate.conv_key.0.weight"] == (64, 513, 1, 1)
    assert shapes["convGS.2.num_batches_tracked"] == ()
    assert expected_shapes("resnet18")["refiner.TSE.layer2.reduce.0.weight"] == (64, 64, 1, 1)


@pytest.mark.parametrize(
    "change, key",
    [
        ("missing", "Convert_Diff.bias"),
        ("extra", "refiner.extra.weight"),
        ("shape", "convGS.4.weight"),
    ],
)
def test_mismatched_state_dict_names_the_file_and_key(tmp_path, change, key):
    state = GFRTM(NetworkConfig()).state_dict()
    if change == "missing":
        del state[key]
    elif change == "extra":
        state[key] = torch.zeros(3)
    else:
        state[key] = torch.zeros(3, 16, 3, 3)
    path = _save_model_dict(tmp_path / f"{change}.pth", state)
    with pytest.raises(CheckpointError) as info:
        load_gfrtm(path)
    message = str(info.value)
    assert f"{change}.pth" in message and key in message
    assert {"missing": "1 missing keys", "extra": "1 unexpected keys", "shape": "1 wrong shapes"}[change] in message


def test_check_state_dict_counts_and_truncates_long_lists():
    state = GFRTM(NetworkConfig()).state_dict()
    refiner_keys = [k for k in state if k.startswith("refiner.RRB1.")]
    for key in refiner_keys:
        del state[key]
    with pytest.raises(CheckpointError, match=rf"src.pth .*{len(refiner_keys)} missing keys: .*\(\d+ more\)"):
        check_state_dict(state, "resnet18", "src.pth")
    check_state_dict(GFRTM(NetworkConfig()).state_dict(), "resnet18", "ok.pth")  # a good one passes


def test_unreadable_and_malformed_files_give_clear_errors(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00\x01 definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        load_checkpoint(garbage)

    no_model = tmp_path / "no_model.pth"
    torch.save({"state": {}, "epoch": 1}, no_model)
    with pytest.raises(CheckpointError, match="no_model.pth has no 'model' entry"):
        load_checkpoint(no_model)

    bare = tmp_path / "bare.pth"
    torch.save(GFRTM(NetworkConfig()).state_dict(), bare)
    with pytest.raises(CheckpointError, match="bare.pth.*bare state dict"):
        load_checkpoint(bare)

    not_dict = tmp_path / "list.pth"
    torch.save([1, 2], not_dict)
    with pytest.raises(CheckpointError, match="list.pth holds a list"):
        load_checkpoint(not_dict)

    with pytest.raises(CheckpointError, match="absent.pth does not exist"):
        load_checkpoint(tmp_path / "absent.pth")


def test_resnet101_checkpoint_asked_as_resnet18_says_which_is_which(tmp_path):
    path = _save_model_dict(tmp_path / "rn101_all.pth", GFRTM(NetworkConfig(backbone="resnet101")).state_dict())
    with pytest.raises(CheckpointError) as info:
        load_gfrtm(path, backbone="resnet18")
    message = str(info.value)
    assert "rn101_all.pth is for resnet101 but resnet18 was asked for" in message and "--ftext resnet101" in message
    model, _ = load_gfrtm(path, backbone="resnet101")
    assert model.cfg.backbone == "resnet101"


def test_checkpoint_with_python_objects_is_refused_until_converted_on_trust(tmp_path, capsys):
    state = GFRTM(NetworkConfig()).state_dict()
    src = _save_model_dict(tmp_path / "published.pth", state, stats=fractions.Fraction(1, 3), epoch=7)
    with pytest.raises(CheckpointError, match=r"published.pth as tensors only.*--trust-pickle"):
        load_checkpoint(src)  # loading it would run code stored in the file
    assert export_main([str(src), str(tmp_path / "converted.pth")]) == 2
    assert "--trust-pickle" in capsys.readouterr().err and not (tmp_path / "converted.pth").exists()

    assert export_main(["--trust-pickle", str(src), str(tmp_path / "converted.pth")]) == 0
    assert "left out (not tensors-only): stats" in capsys.readouterr().out
    converted = load_checkpoint(tmp_path / "converted.pth")  # tensors only now
    assert converted["epoch"] == 7 and "stats" not in converted
    model, _ = load_gfrtm(tmp_path / "converted.pth")
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key], value)