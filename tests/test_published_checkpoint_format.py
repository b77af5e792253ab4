"""Published checkpoints exactly as their trainer wrote them, read without running anything stored in them.

The published trainer saves dict(name, epoch, stats, model, optimizer, scheduler) with `stats` a
defaultdict of `AverageMeter` objects of its module `lib.utils` (numpy values inside). These tests
write such files with a real `lib.utils` module registered only while saving, then read them in
every way a user does; and they check that files whose pickle would run code are refused with
nothing run, and that damaged files say so.
"""
from __future__ import annotations

import collections
import contextlib
import copy
import io
import json
import os
import pickle
import shlex
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import evaluate
from dataset.synthetic import generate_dataset
from lib.safe_unpickler import StoredClass, StoredObject, installed
from models.checkpoint import CheckpointError, DamagedCheckpointError, load_checkpoint, load_gfrtm
from models.config import NetworkConfig
from models.gfrtm import GFRTM
from trainer.checkpoints import load_refiner_init
from trainer.export import main as export_main
from tests.test_train_cli import one_torch_thread  # noqa: F401 (an autouse fixture: one thread, repeatable results)

AVERAGE_METER = '''
class AverageMeter:
    """The published trainer's running average (val, avg, sum, count, seq_avg)."""

    def __init__(self):
        self.val = 0
        self.avg = 0
        self.sum = 0
        self.count = 0
        self.seq_avg = []

    def update(self, val, n=1):
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.sum / self.count
        self.seq_avg.append(self.avg)
'''

TRAP = '''
import pathlib

MARKER = pathlib.Path({marker!r})


class AverageMeter:
    """A lib.utils whose every method leaves a marker: loading must use none of them."""

    def __new__(cls, *args, **kwargs):
        MARKER.touch()
        return super().__new__(cls)

    def __init__(self, *args, **kwargs):
        MARKER.touch()

    def __setstate__(self, state):
        MARKER.touch()
'''


@contextlib.contextmanager
def published_code(source: str = AVERAGE_METER):
    """A module `lib.utils` in sys.modules (the published code's), removed afterwards."""
    module = types.ModuleType("lib.utils")
    exec(compile(source, "lib/utils.py", "exec"), module.__dict__)
    sys.modules["lib.utils"] = module
    try:
        yield module
    finally:
        del sys.modules["lib.utils"]


def save_as_published_trainer(path: Path, model: torch.nn.Module, epoch: int = 260) -> dict:
    """Write `path` as the published trainer does, with `model`'s weights; returns what it saved."""
    weights = copy.deepcopy(model.state_dict())  # before the step below; keeps the state dict's _metadata
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5, amsgrad=True)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=40, gamma=0.5)
    for parameter in model.parameters():
        parameter.grad = torch.full_like(parameter, 0.01)
    optimizer.step()  # Adam now has a state (step, exp_avg, exp_avg_sq, max_exp_avg_sq) per parameter
    scheduler.step()
    with published_code() as utils:
        stats = collections.defaultdict(utils.AverageMeter)
        for loss in (np.float32(0.75), np.float32(0.5)):
            stats["loss"].update(loss)
        stats["iou"].update(np.array([0.25, 0.5]), n=2)
        stats["lr"].update(np.float64(1e-3))
        saved = dict(name="rn18_all", epoch=epoch, stats=stats, model=weights,
                     optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict())
        torch.save(saved, path)
    return saved


def _trained_like() -> GFRTM:
    torch.manual_seed(3)
    model = GFRTM(NetworkConfig())
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.copy_(torch.rand_like(value) + 0.5)
            else:
                value.fill_(9)
    return model


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("published") / "rn18_all.pth"
    return path, save_as_published_trainer(path, _trained_like())


def _equal(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_equal, a, b))
    return a == b


def test_the_file_really_needs_the_published_module():
    """The format is the real one: without lib.utils, plain full unpickling cannot even read it."""
    buffer = io.BytesIO()
    with published_code() as utils:
        torch.save({"stats": collections.defaultdict(utils.AverageMeter)}, buffer)
    assert "lib.utils" not in sys.modules
    with pytest.raises(ModuleNotFoundError, match="lib.utils"):
        torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)


def test_published_file_loads_with_identical_weights_and_inert_stats(published):
    path, saved = published
    model, checkpoint = load_gfrtm(path)
    assert model.cfg.backbone == "resnet18"
    for key, value in saved["model"].items():
        assert _equal(model.state_dict()[key], value), key
    assert checkpoint["model"]._metadata == saved["model"]._metadata  # the state dict's versions, as saved
    assert checkpoint["name"] == "rn18_all" and checkpoint["epoch"] == 260
    assert _equal(checkpoint["optimizer"], saved["optimizer"]) and _equal(checkpoint["scheduler"], saved["scheduler"])

    stats = checkpoint["stats"]
    assert isinstance(stats, collections.defaultdict) and list(stats) == ["loss", "iou", "lr"]
    meter = stats["loss"]
    assert isinstance(meter, StoredObject) and (meter.cls.module, meter.cls.name) == ("lib.utils", "AverageMeter")
    assert meter.state["avg"] == np.float32(0.625) and meter.state["count"] == 2 and len(meter.state["seq_avg"]) == 2
    assert isinstance(meter.state["val"], np.float32)
    np.testing.assert_array_equal(stats["iou"].state["sum"], [0.5, 1.0])
    assert not hasattr(meter, "update")  # a placeholder has no behaviour
    assert isinstance(stats.default_factory, StoredClass)
    with pytest.raises(TypeError, match="lib.utils.AverageMeter is a placeholder"):
        stats["missing"]  # the factory is not the published class: calling it only says so
    assert "lib.utils" not in sys.modules


def test_published_code_present_at_load_time_is_still_not_run(published, tmp_path):
    marker = tmp_path / "MARKER"
    with published_code(TRAP.format(marker=str(marker))):
        checkpoint = load_checkpoint(published[0])
    assert isinstance(checkpoint["stats"]["loss"], StoredObject)
    assert not marker.exists()


def test_evaluate_runs_a_published_file_of_the_demo_model(tmp_path, capsys):
    """evaluate.py with the demo model's weights in the published format gives the demo model's masks."""
    demo = torch.load(evaluate.DEMO_MODEL, weights_only=True)
    model = GFRTM(NetworkConfig())
    model.load_state_dict(demo["model"])
    path = tmp_path / "demo_published.pth"
    save_as_published_trainer(path, model, epoch=demo["epoch"])
    root = generate_dataset(tmp_path / "videos", "davis", num_videos=1, num_frames=3, size=(64, 112), seed=1000,
                            split="val")
    masks = {}
    for checkpoint in (path, evaluate.DEMO_MODEL):
        # published files record no backbone weights; the demo model was trained without ImageNet's
        assert evaluate.main(["--dset", "dv2017val", "--davis-root", str(root), "--model", str(checkpoint),
                              "--backbone-weights", "none", "--dev", "cpu", "--output", str(tmp_path / "out")]) == 0
        out = tmp_path / "out" / f"dv2017val-{checkpoint.stem}-TH0.7"
        assert json.loads((out / "summary.json").read_text())["settings"]["backbone_weights"] == "none"
        masks[checkpoint] = {p.relative_to(out): p.read_bytes() for p in sorted(out.glob("*/*.png"))}
    assert len(masks[path]) == 3 and masks[path] == masks[evaluate.DEMO_MODEL]  # the same weights, the same masks
    assert "J&F-Mean" in capsys.readouterr().out


def test_export_converts_a_published_file(published, tmp_path, capsys):
    out = tmp_path / "release.pth"
    assert export_main([str(published[0]), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "left out (not tensors-only): stats (objects of lib.utils.AverageMeter" in printed
    release = torch.load(out, weights_only=True)  # tensors only now
    assert set(release) == {"model", "name", "epoch"} and release["epoch"] == 260
    assert _equal(release["model"], published[1]["model"])


def test_init_pth_accepts_a_published_file(published):
    torch.manual_seed(11)
    net = GFRTM(NetworkConfig())
    report = load_refiner_init(published[0], net, "resnet18")
    refiner = [k for k in published[1]["model"] if k.startswith("refiner.")]
    assert report.loaded == sorted(refiner) and not report.missing
    for key in refiner:
        assert torch.equal(net.state_dict()[key], published[1]["model"][key])


class _Calls:
    """Pickles as a call of `func(*args)`, as a malicious file's object does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker: Path) -> list[tuple[object, str]]:
    """Objects whose unpickling would run something, and the global each message must name."""
    import posix

    command = f"touch {marker}"
    return [
        (_Calls(os.system, command), "posix.system"),  # os.system is posix.system, and pickles as such
        (_Calls(posix.system, command), "posix.system"),
        (_Calls(eval, f"open({str(marker)!r}, 'w')"), "builtins.eval"),
        (_Calls(exec, f"open({str(marker)!r}, 'w')"), "builtins.exec"),
        (_Calls(subprocess.Popen, ["touch", str(marker)]), "subprocess.Popen"),
        (_Calls(getattr, "os", "system"), "builtins.getattr"),  # how a pickle reaches functions by name
    ]


@pytest.mark.parametrize("where", ["top", "stats"])
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_pickles_that_would_run_code_are_refused_and_nothing_runs(tmp_path, capsys, where, protocol):
    marker = tmp_path / "MARKER"
    model = {"refiner.w": torch.zeros(2)}  # refused before the model is looked at
    for number, (payload, name) in enumerate(_payloads(marker)):
        path = tmp_path / f"payload{number}.pth"
        with published_code() as utils:
            if where == "top":
                content = {"model": model, "epoch": payload}
            else:  # in the state of a published AverageMeter of the stats
                content = {"model": model, "stats": collections.defaultdict(utils.AverageMeter)}
                content["stats"]["loss"].update(np.float32(0.5))
                content["stats"]["loss"].seq_avg.append({"meter": payload})
            torch.save(content, path, pickle_protocol=protocol)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        message = str(info.value)
        assert name in message and "Do not use this file" in message and "--trust-pickle" not in message
        assert export_main(["--trust-pickle", str(path), str(tmp_path / "out.pth")]) == 2  # refused even trusted
        assert name in capsys.readouterr().err
        assert not marker.exists(), name
    assert not (tmp_path / "out.pth").exists()


def test_a_call_into_code_that_is_not_here_is_kept_as_a_placeholder(tmp_path):
    """REDUCE of a class of absent code builds a placeholder with its arguments; nothing is called."""
    with published_code("class Point:\n    def __init__(self, x, y): self.x, self.y = x, y\n"
                        "    def __reduce__(self): return (Point, (self.x, self.y))\n") as utils:
        torch.save({"model": {}, "origin": utils.Point(3, 4)}, tmp_path / "point.pth")
    origin = load_checkpoint(tmp_path / "point.pth")["origin"]
    assert isinstance(origin, StoredObject) and origin.cls.name == "Point" and origin.args == (3, 4)


def test_damaged_files_say_so_without_trust_advice(published, tmp_path):
    data = published[0].read_bytes()
    (tmp_path / "half.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "random.pth").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "escape.pth").write_bytes(b"\x80\x02\x1b]0;owned\x07\x1b[2J" * 3)
    with zipfile.ZipFile(published[0]) as source, zipfile.ZipFile(tmp_path / "no_record.pth", "w") as damaged:
        for info in source.infolist():
            if not info.filename.endswith("/data/1"):
                damaged.writestr(info, source.read(info))
    for size in (4000, 20000, 64000):  # torch reports these as OSError "Invalid argument"
        (tmp_path / f"cut{size}.pth").write_bytes(data[:size])
    directory_name = data.rindex(b"/data/")  # a record's name in the zip's central directory, at the end
    for byte in (0xF0, ord("_")):  # not UTF-8; another name
        (tmp_path / f"directory{byte}.pth").write_bytes(data[:directory_name + 1] + bytes([byte]) +
                                                        data[directory_name + 2:])
    names = ["half", "random", "empty", "escape", "no_record", "cut4000", "cut20000", "cut64000", "directory240",
             "directory95"]
    for name in names:
        with pytest.raises(DamagedCheckpointError) as info:
            load_checkpoint(tmp_path / f"{name}.pth")
        message = str(info.value)
        assert f"{name}.pth" in message and ("damaged or truncated" in message or "is empty" in message), message
        assert message.endswith("Download or copy it again") and "trust-pickle" not in message
        assert message.isprintable(), message  # no escape codes or control characters
        assert "more characters" not in message  # nothing cut short


def test_names_read_from_a_file_reach_the_terminal_without_escape_codes(tmp_path):
    evil_key = "refiner.\x1b[31mred\x1b[0m\rOK"
    torch.save({"model": {evil_key: torch.zeros(1)}}, tmp_path / "keys.pth")
    with pytest.raises(CheckpointError) as info:
        load_gfrtm(tmp_path / "keys.pth")
    assert str(info.value).isprintable() and "\\x1b[31mred" in str(info.value)

    module = types.ModuleType("evil\x1b[2J")  # a class whose module name clears the screen
    exec("class Meter:\n    pass\n", module.__dict__)
    sys.modules[module.__name__] = module
    try:
        torch.save(module.Meter(), tmp_path / "escape_class.pth")
    finally:
        del sys.modules[module.__name__]
    with pytest.raises(CheckpointError, match="holds a placeholder") as info:
        load_checkpoint(tmp_path / "escape_class.pth")
    assert str(info.value).isprintable() and "evil\\x1b[2J.Meter" in str(info.value)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated, and still what makes such files
def test_torchscript_archives_are_not_handed_to_torch_jit(tmp_path, monkeypatch):
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "scripted.pth")
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("torch.jit.load was called"))
    with pytest.raises(CheckpointError, match="scripted.pth is a TorchScript archive"):
        load_checkpoint(tmp_path / "scripted.pth")


@pytest.mark.parametrize("name, value, reason", [
    ("object_array", np.array([1, "a"], dtype=object), "dtype object"),
    ("ndarray_called", _Calls(np.ndarray, (2,), "O"), "would call a type object"),
    ("installed_function", _Calls(shlex.split, "a b"), "would call shlex.split, which is installed here"),
])
def test_other_code_is_refused_unless_trusted(tmp_path, capsys, name, value, reason):
    path = tmp_path / f"{name}.pth"
    torch.save({"model": {"refiner.w": torch.zeros(2)}, "extra": value}, path)
    with pytest.raises(CheckpointError, match=reason) as info:
        load_checkpoint(path)
    assert "Nothing of it was run" in str(info.value)
    if "installed here" in reason or "dtype" in reason:  # full unpickling would read it: for trusted files only
        assert "--trust-pickle" in str(info.value)
        assert load_checkpoint(path, trust_pickle=True)["extra"] is not None


def test_modules_are_looked_up_without_importing_them():
    assert installed("os") and installed("os.path") and installed("lib") and installed("json.decoder")
    assert not installed("lib.utils") and not installed("no_such_module_here") and not installed("a..b")
    assert "antigravity" not in sys.modules and installed("antigravity")  # found, not imported (it opens a browser)
    assert "antigravity" not in sys.modules


def test_a_forced_weights_only_environment_is_named(published, tmp_path, monkeypatch):
    torch.save({"model": {"refiner.w": torch.zeros(2)}}, tmp_path / "plain.pth")
    monkeypatch.setenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "1")
    assert torch.equal(load_checkpoint(tmp_path / "plain.pth")["model"]["refiner.w"], torch.zeros(2))
    with pytest.raises(CheckpointError, match="TORCH_FORCE_WEIGHTS_ONLY_LOAD is set.*unset it"):
        load_checkpoint(published[0])


def test_legacy_format_and_numpy_1_names_are_read(tmp_path):
    """Files of torch < 1.6 (no zip) and of numpy 1.x (numpy.core.multiarray) load the same way."""
    weights = torch.nn.Linear(2, 2).state_dict()
    with published_code() as utils:
        stats = collections.defaultdict(utils.AverageMeter)
        stats["loss"].update(np.float32(0.25))
        torch.save({"model": weights, "stats": stats}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    data = (tmp_path / "legacy.pth").read_bytes()
    assert b"numpy._core.multiarray" in data or b"numpy.core.multiarray" in data
    (tmp_path / "numpy1.pth").write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    for name in ("legacy.pth", "numpy1.pth"):
        checkpoint = load_checkpoint(tmp_path / name)
        assert _equal(checkpoint["model"], weights)
        assert checkpoint["stats"]["loss"].state["avg"] == np.float32(0.25)


def test_a_damaged_module_name_gets_no_trust_advice(tmp_path):
    """A flipped byte that renames numpy in a legacy-format file: --trust-pickle could not help, so it is not offered."""
    torch.save({"model": {}, "loss": np.float32(0.5)}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    data = (tmp_path / "legacy.pth").read_bytes()
    at = data.index(b"cnumpy\ndtype") + 1
    (tmp_path / "renamed.pth").write_bytes(data[:at] + b"nu-py" + data[at + 5:])
    assert load_checkpoint(tmp_path / "legacy.pth")["loss"] == np.float32(0.5)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "renamed.pth")
    message = str(info.value)
    assert "nu-py.dtype" in message and "not installed here" in message and "trust-pickle" not in message
