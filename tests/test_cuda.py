"""The CUDA path against the CPU: tracker, float16 autocast, target-model fit, a training step under
NCCL, the benchmark. Marked `cuda` and skipped without CUDA (`pytest -m cuda` runs only these;
tools/gpu_check.py runs them first)."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import benchmark
from models.builder import load_network
from models.backbone import build_backbone
from models.config import TargetModelConfig, TrackerConfig
from models.target_model import TargetModel
from models.tracker import Tracker
from dataset.synthetic import render_video

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

DEMO_MODEL = Path(__file__).resolve().parents[1] / "weights" / "demo_synthetic_rn18.pth"
T = 10
CUDA = torch.device("cuda:0")
OBJECTS = [1, 2, 3]


@functools.lru_cache(maxsize=1)
def _video():
    """The kind of video the demo model was trained on, at its size; three objects from frame 0
    (made when a test first needs it: without CUDA, collecting this file costs nothing)."""
    video = render_video(np.random.default_rng(1000), T, (176, 320), num_objects=3, later_objects=False)
    assert sorted(video.start_frames) == OBJECTS
    return video


def _force(frame: int, ids: list[int]) -> list[bool]:
    """All but the last object reuse on every 3rd frame: both paths run, and no decision can flip."""
    return [frame % 3 == 0 and oid != OBJECTS[-1] for oid in ids]


def _track(device: torch.device, amp: bool = False, hook=None) -> tuple[list[np.ndarray], Tracker]:
    """Labels of the demo model on _video(), on `device`."""
    if not DEMO_MODEL.is_file():
        pytest.skip(f"{DEMO_MODEL} is missing")
    net, weights = load_network(DEMO_MODEL, "resnet18", device)
    backbone = build_backbone("resnet18", weights, device=device)
    if hook is not None:  # on the backbone's first convolution
        next(m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d)).register_forward_hook(hook)
    tracker = Tracker(backbone, net, TrackerConfig(tau=0.7, amp=amp), force_reuse=_force)
    video = _video()

    def start_masks(t: int) -> dict[int, np.ndarray]:
        return {oid: video.labels[t] == oid for oid, first in video.start_frames.items() if first == t}

    return [r.labels for r in tracker.track(enumerate(video.frames), start_masks)], tracker


def _object_ious(a: list[np.ndarray], b: list[np.ndarray]) -> dict[int, float]:
    """Per object id: IoU of its pixels in `a` and `b` over all frames together."""
    stack_a, stack_b = np.stack(a), np.stack(b)
    ious = {}
    for oid in OBJECTS:
        inter = np.logical_and(stack_a == oid, stack_b == oid).sum()
        union = np.logical_or(stack_a == oid, stack_b == oid).sum()
        ious[oid] = inter / union if union else 1.0
    return ious


def test_tracker_on_cuda_gives_the_cpu_masks():
    cpu_labels, cpu = _track(torch.device("cpu"))
    cuda_labels, cuda = _track(CUDA)
    ious = _object_ious(cpu_labels, cuda_labels)
    assert min(ious.values()) >= 0.97, ious
    agree = np.mean([np.mean(a == b) for a, b in zip(cpu_labels, cuda_labels)])
    assert agree >= 0.995
    assert cuda.stats.deep_calls == cpu.stats.deep_calls and cuda.stats.reused == cpu.stats.reused > 0
    # the masks are not trivial: every object is found after its first frame
    assert all((cuda_labels[-1] == oid).any() for oid in OBJECTS)


def test_amp_runs_the_network_in_float16_and_keeps_the_masks():
    dtypes = set()
    amp_labels, _ = _track(CUDA, amp=True, hook=lambda module, args, out: dtypes.add(out.dtype))
    f32_labels, _ = _track(CUDA)
    assert torch.float16 in dtypes  # autocast did apply
    ious = _object_ious(f32_labels, amp_labels)
    assert min(ious.values()) >= 0.95, ious


def test_target_model_fit_on_cuda_matches_the_cpu():
    """GN-CG in float32 on both devices (TF32 off, so only summation order differs)."""
    g = torch.Generator().manual_seed(0)
    features = torch.randn(4, 512, 6, 10, generator=g)
    masks = torch.zeros(4, 1, 96, 160)
    masks[:, :, 20:60, 30:90] = 1
    cfg = TargetModelConfig()
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        weights = []
        for device in (torch.device("cpu"), CUDA):
            model = TargetModel(512, cfg).to(device)
            model.initialize(features.to(device), masks.to(device))
            weights.append(model.filter.weight.detach().cpu())
            scores = model.score(features[:1].to(device))
            assert scores.shape == (1, 1, 6, 10) and torch.isfinite(scores).all()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous
    torch.testing.assert_close(weights[1], weights[0], rtol=1e-3, atol=1e-4)


def test_a_ddp_training_step_over_nccl_changes_the_weights(tmp_path):
    """One process, one GPU: a one-member NCCL group, and DDP forced on (the trainer wraps only when
    there are several processes), so the step's gradients go through an NCCL all-reduce."""
    from torch.nn.parallel import DistributedDataParallel

    from tests.test_train_step import _batch, _options
    from lib import distributed
    from trainer.loop import Trainer

    info = distributed.setup_explicit(0, 1, f"file://{tmp_path / 'rendezvous'}", CUDA)
    try:
        assert torch.distributed.get_backend() == "nccl"
        trainer = Trainer(_options(tmp_path), info)
        trainer.forward = DistributedDataParallel(trainer.forward, device_ids=[0])
        before = {k: v.detach().clone() for k, v in trainer.net.named_parameters()}
        out = trainer.train_batch(_batch(), epoch=1)
        floats = [v for v in out.values() if isinstance(v, torch.Tensor) and v.is_floating_point()]
        assert floats and all(torch.isfinite(v).all() for v in floats)
        changed = [k for k, v in trainer.net.named_parameters() if not torch.equal(before[k], v.detach())]
        assert len(changed) > len(before) // 2
        assert next(trainer.net.parameters()).device.type == "cuda"
    finally:
        distributed.teardown(info)


def test_benchmark_on_cuda_reports_cuda_memory(tmp_path):
    path = tmp_path / "bench.json"
    code = benchmark.main(["--dev", "cuda:0", "--amp", "--size", "160x96", "--frames", "5", "--repeats", "1",
                           "--warmup-frames", "2", "--rates", "0", "1", "--objects", "1", "--json", str(path)])
    assert code == 0
    report = json.loads(path.read_text())
    assert report["settings"]["memory"] == "cuda max allocated" and report["settings"]["amp"] is True
    assert report["settings"]["machine"] == torch.cuda.get_device_name(0)
    assert all(row["peak_mib"] > 0 for row in report["rates"])
