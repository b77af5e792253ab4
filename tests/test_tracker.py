"""The tracker on small synthetic multi-object videos."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.backbone import build_backbone
from models.config import NetworkConfig, TrackerConfig
from models.gfrtm import GFRTM
from models.session import TrackingSession
from models.tracker import Tracker
from tests.square_video import square_video

H, W, T = 64, 96, 6


def _video(seed: int = 0):
    """T frames with three square objects; object 3 starts on frame 2."""
    return square_video(T, H, W, seed, second_x=50, third_x=10)


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", "none")
    net = GFRTM(NetworkConfig(backbone="resnet18")).eval()
    return backbone, net


def _run(parts, tau, force=None):
    backbone, net = parts
    tracker = Tracker(backbone, net, TrackerConfig(tau=tau, fast=True), force_reuse=force)
    frames, start_masks = _video()
    results = list(tracker.track(enumerate(frames), start_masks))
    return tracker, results


def test_objects_starting_late_are_tracked_and_recorded(parts):
    tracker, results = _run(parts, tau=0.7)
    assert [r.index for r in results] == list(range(T))
    assert all(r.labels.shape == (H, W) and r.labels.dtype == np.uint8 for r in results)
    # the given masks are the output on an object's first frame
    assert set(np.unique(results[0].labels)) <= {0, 1, 2} and {1, 2} <= set(np.unique(results[0].labels))
    assert 3 in np.unique(results[2].labels)
    # gate records: objects 1, 2 from frame 1 on, object 3 from frame 3 on
    per_frame = {r.index: sorted(g.object_id for g in r.gate) for r in results}
    assert per_frame[0] == [] and per_frame[1] == [1, 2] and per_frame[2] == [1, 2] and per_frame[3] == [1, 2, 3]
    assert tracker.stats.object_frames == 2 * (T - 1) + (T - 3)
    assert all(0.0 <= g.p_reuse <= 1.0 for r in results for g in r.gate)


def test_tau_one_never_reuses_and_equals_the_gate_off_path(parts):
    tracker, results = _run(parts, tau=1.0)
    assert tracker.stats.reused == 0
    assert not any(g.reused for r in results for g in r.gate)
    _, forced = _run(parts, tau=1.0, force=lambda frame, ids: [False] * len(ids))
    for a, b in zip(results, forced):
        np.testing.assert_array_equal(a.labels, b.labels)


def test_tau_zero_reuses_every_frame_after_an_objects_first(parts):
    tracker, results = _run(parts, tau=0.0)
    assert tracker.stats.reused == tracker.stats.object_frames > 0
    # only frames where an object starts need the deep half: 0 and 2
    assert tracker.stats.deep_calls == 2


def test_deep_half_runs_once_per_frame_for_all_objects(parts, monkeypatch):
    backbone, _ = parts
    frame_calls = []
    fitting = []  # deep-half calls made while fitting a target model on augmented images are not frame calls
    original_deep, original_fit = backbone.deep, TrackingSession._fit_target_model

    def counting_deep(layer3):
        if not fitting:
            frame_calls.append(layer3.shape[0])
        return original_deep(layer3)

    def flagged_fit(self, *args, **kwargs):
        fitting.append(True)
        try:
            return original_fit(self, *args, **kwargs)
        finally:
            fitting.pop()

    monkeypatch.setattr(backbone, "deep", counting_deep)
    monkeypatch.setattr(TrackingSession, "_fit_target_model", flagged_fit)
    tracker, _ = _run(parts, tau=1.0)
    # three objects all take the full path on every frame, yet the deep half runs once per frame
    assert frame_calls == [1] * T
    assert tracker.stats.deep_calls == T
