"""The published tracker's rules, each against its formula on small hand-made inputs: merging objects,
the target-model update schedule and the first previous x."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.backbone import build_backbone
from models.config import NetworkConfig, TrackerConfig
from models.gfrtm import GFRTM
from models.merge import merge_objects
from models.target_model import TargetModel
from models.session import TrackingSession
from models.tracker import Tracker
from tests.square_video import square_video


def _literal_softmax(values: list[float]) -> list[float]:
    """softmax of the odds p / (1 - p) of [background, objects], in float64 by hand."""
    odds = [v / (1 - v) for v in values]
    exp = [math.exp(o - max(odds)) for o in odds]
    return [e / sum(exp) for e in exp]


def _pixels(*columns: tuple[float, ...]) -> torch.Tensor:
    """(N,1,len(columns)) probabilities: one column per hand-made pixel, one row per object."""
    return torch.tensor(columns, dtype=torch.float32).T.reshape(len(columns[0]), 1, len(columns))


def test_merge_keeps_the_softmax_of_the_odds_themselves_not_of_their_logarithm():
    probs = _pixels((0.9, 0.6))  # background = min(0.1, 0.4) = 0.1
    labels, kept = merge_objects(probs)
    literal = _literal_softmax([0.1, 0.9, 0.6])
    assert kept[0, 0, 0].item() == pytest.approx(literal[1], rel=1e-6)  # 0.99931...
    assert kept[1, 0, 0].item() == 0.0  # the loser keeps nothing
    # RGMP's softmax of the log-odds normalises the odds themselves: 9 / (1/9 + 9 + 1.5) = 0.848
    rgmp = 9 / (1 / 9 + 9 + 1.5)
    assert abs(kept[0, 0, 0].item() - rgmp) > 0.15
    assert labels[0, 0].item() == 1


def test_label_map_is_a_second_round_over_the_kept_maps():
    # two unsure objects tie at 0.6: object 1 wins the first round with a softmax value below 0.5 ...
    probs = _pixels((0.6, 0.6), (0.9, 0.1), (0.2, 0.3))
    labels, kept = merge_objects(probs)
    first = _literal_softmax([0.4, 0.6, 0.6])
    assert first[1] < 0.5 and kept[0, 0, 0].item() == pytest.approx(first[1], rel=1e-6)
    assert kept[1, 0, 0].item() == 0.0
    # ... so in the second round background = 1 - kept beats it: the written label is background
    second = _literal_softmax([1 - first[1], first[1], 1e-7])
    assert second[0] > second[1]
    assert labels[0].tolist() == [0, 1, 0]
    # a clear winner stays; a pixel no object claims stays background
    assert kept[0, 0, 1].item() == pytest.approx(_literal_softmax([0.1, 0.9, 0.1])[1], rel=1e-6)
    assert kept[:, 0, 2].tolist() == [0.0, 0.0]


def test_one_object_goes_through_the_same_merge_and_keeps_its_softmax_value_not_p():
    values = [0.2, 0.5, 0.51, 0.7, 0.99]
    labels, kept = merge_objects(torch.tensor([[values]]))
    assert labels[0].tolist() == [0, 0, 1, 1, 1]  # p > 0.5
    # background = 1 - p; the object keeps softmax(p/(1-p)) against ((1-p)/p) where it wins
    expected = [_literal_softmax([1 - v, v])[1] if v > 0.5 else 0.0 for v in values]
    torch.testing.assert_close(kept[0, 0], torch.tensor(expected), rtol=1e-6, atol=0)
    assert kept[0, 0, 3].item() == pytest.approx(0.8704, abs=1e-4)  # not 0.7: 1 / (1 + exp(0.4286 - 2.3333))
    assert kept[0, 0, 2].item() == pytest.approx(0.5200, abs=1e-4)  # not 0.51


# ------------------------------------------------------------------------------------- tracker
H, W, T = 48, 64, 7


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    return build_backbone("resnet18", "none"), GFRTM(NetworkConfig(backbone="resnet18")).eval()


def _one_object_video():
    frames, start_masks = square_video(T, H, W, seed=5, second_x=40, third_x=8)
    first = start_masks(0)
    return frames, lambda t: {1: first[1]} if t == 0 else {}


def test_reuse_frames_do_not_advance_the_update_count_and_the_first_frame_does(parts, monkeypatch):
    """Counts and refits per frame, with the gate forced: full, reuse, full, full, reuse, full."""
    backbone, net = parts
    plan = {1: False, 2: True, 3: False, 4: False, 5: True, 6: False}
    # every prediction enters memory (min_update_px 0) and a refit is due at every 2nd score call
    tm_cfg = replace(TrackerConfig().target_model, train_skipping=2, min_update_px=0)
    tracker = Tracker(backbone, net, TrackerConfig(tau=0.7, target_model_override=tm_cfg),
                      force_reuse=lambda t, ids: [plan[t]] * len(ids))
    models, updates = [], []
    fit = TrackingSession._fit_target_model
    monkeypatch.setattr(TrackingSession, "_fit_target_model", lambda self, *a: models.append(fit(self, *a)) or models[-1])
    update = TargetModel.update
    monkeypatch.setattr(TargetModel, "update", lambda self, mask: updates.append(self.score_calls) or update(self, mask))
    frames, start_masks = _one_object_video()
    counts, runs = [], []
    for _ in tracker.track(enumerate(frames), start_masks):
        counts.append(models[0].score_calls)
        runs.append(models[0].update_runs)
    # frame 0: the score of the freshly fitted model is call 1; reuse frames (2, 5) call nothing
    assert counts == [1, 2, 2, 3, 4, 4, 5]
    assert updates == [2, 3, 4, 5]  # full-path frames only
    assert runs == [0, 1, 1, 1, 2, 2, 2]  # refits when the count reaches 2 and 4


def test_first_previous_x_comes_from_the_fitted_target_models_score(parts, monkeypatch):
    backbone, net = parts
    scores, deep_inputs, matched = [], [], []
    score = TargetModel.score
    monkeypatch.setattr(TargetModel, "score", lambda self, f: scores.append(score(self, f)) or scores[-1])
    deep = net.refiner.deep
    monkeypatch.setattr(net.refiner, "deep", lambda s, feats, *a: deep_inputs.append(s.clone()) or deep(s, feats, *a))
    match = net.match
    monkeypatch.setattr(net, "match", lambda tpl, l3, s: matched.append(s.clone()) or match(tpl, l3, s))
    tracker = Tracker(backbone, net, TrackerConfig(tau=0.7), force_reuse=lambda t, ids: [False] * len(ids))
    frames, start_masks = square_video(2, H, W, seed=5, second_x=40, third_x=8)
    list(tracker.track(enumerate(frames), start_masks))
    # frame 0: two objects start; one score call each, then one deep-part call on those scores
    first = torch.cat(scores[:2])
    torch.testing.assert_close(deep_inputs[0], first, rtol=0, atol=0)
    masks = torch.stack([torch.from_numpy(m.astype(np.float32)) for _, m in sorted(start_masks(0).items())])
    stored = F.interpolate(masks[:, None], size=first.shape[-2:], mode="nearest")
    assert not torch.equal(first, stored)
    # ... while the stored score, which frame 1's matching reads, is the given mask at stride 16
    torch.testing.assert_close(matched[0], stored, rtol=0, atol=0)
