"""CPU bfloat16 (--amp on the CPU) keeps float32's accuracy: the demo model on a small synthetic video.

This CPU may lack native bfloat16; oneDNN then emulates it, slowly but with bfloat16's rounding, which
is what accuracy depends on (the tracker is told to allow the emulation here)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dataset.synthetic import render_video
from evaluator.metrics import boundary_measure_frames, region_similarity
from models.builder import build_tracker, load_network
from models.config import TrackerConfig
from tests.test_train_step import one_torch_thread  # noqa: F401  (autouse: one torch thread in this module)

DEMO_MODEL = Path(__file__).resolve().parents[1] / "weights" / "demo_synthetic_rn18.pth"
FRAMES, SIZE = 8, (112, 192)


def _run(amp: bool) -> tuple[float, float, list[bool]]:
    """(J&F over objects and frames 1.., reuse rate, the gate's decisions) of one run of the video."""
    video = render_video(np.random.default_rng([4000, 0]), FRAMES, SIZE, 2, later_objects=False)
    net, weights = load_network(DEMO_MODEL, None, "cpu")
    tracker = build_tracker(net, weights, TrackerConfig(tau=0.7, amp=amp), "cpu", allow_emulated_bf16=True)
    session = tracker.session()
    labels = np.stack([session.step(image, {k: video.labels[0] == k for k in (1, 2)} if t == 0 else None).labels
                       for t, image in enumerate(video.frames)])
    scores = []
    for k in (1, 2):
        gt, pred = video.labels[1:] == k, labels[1:] == k
        scores.append((np.mean(region_similarity(gt, pred)) + np.mean(boundary_measure_frames(gt, pred))) / 2)
    return float(np.mean(scores)), session.stats.reuse_rate, [g.reused for g in session.gate_log]


def test_cpu_bfloat16_keeps_the_accuracy_and_the_gate_decisions_of_float32():
    if not DEMO_MODEL.is_file():
        pytest.skip(f"{DEMO_MODEL} is missing")
    f32, f32_reuse, f32_gate = _run(amp=False)
    bf16, bf16_reuse, bf16_gate = _run(amp=True)
    assert f32 > 0.5  # the demo model tracks this video, so the comparison means something
    assert abs(bf16 - f32) <= 0.02
    assert abs(bf16_reuse - f32_reuse) <= 0.15 and sum(a != b for a, b in zip(f32_gate, bf16_gate)) <= 2
