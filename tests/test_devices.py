"""`--dev` checking shared by train.py, evaluate.py, demo.py and benchmark.py."""
from __future__ import annotations

import pytest
import torch

from lib.devices import resolve_device


def test_default_is_the_cpu_without_cuda_and_cuda0_with_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(None) == torch.device("cuda:0")


@pytest.mark.parametrize("name, message", [("gpu0", "not a device name"), ("mps", "CPU or on CUDA")])
def test_unknown_or_unsupported_names_are_refused(name, message):
    with pytest.raises(ValueError, match=message) as exc:
        resolve_device(name)
    assert f"--dev {name}" in str(exc.value)


def test_cuda_without_cuda_and_an_index_beyond_the_devices_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="use --dev cpu"):
        resolve_device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match="2 CUDA device"):
        resolve_device("cuda:2")
    assert resolve_device("cpu") == torch.device("cpu")
