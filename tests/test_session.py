"""The tracking session: objects started, corrected and removed on any frame, frames in either
direction, its input checks, and the target-model memory that keeps a correction."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.both_ways import BothWays, FrameList
from models.backbone import build_backbone
from models.config import NetworkConfig, TargetModelConfig, TrackerConfig
from models.gfrtm import GFRTM
from models.session import SessionInputError
from models.target_model import SampleMemory, TargetModel
from models.tracker import Tracker
from tests.square_video import square_video

H, W, T = 48, 64, 5


@pytest.fixture(scope="module")
def tracker():
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", "none")
    return Tracker(backbone, GFRTM(NetworkConfig(backbone="resnet18")).eval(), TrackerConfig(tau=0.7))


@pytest.fixture(scope="module")
def video():
    frames, start_masks = square_video(T, H, W, seed=3, second_x=40, third_x=8)
    return frames, {1: start_masks(0)[1], 2: start_masks(0)[2]}


def test_a_corrected_object_takes_the_given_mask_keeps_its_memory_and_learns_the_frame(tracker, video):
    frames, first = video
    session = tracker.session()
    session.step(frames[0], first)
    session.step(frames[1])
    model = session.objects.target_models[0]
    learnt = model.memory.weights.clone()
    n = int((learnt > 0).sum())  # the first frame's samples and frame 1's
    samples_before = model.memory.features[:n].clone()
    filter_before = model.filter.weight.detach().clone()
    fix = np.zeros((H, W), bool)
    fix[20:36, 10:30] = True  # object 1 is said to be here, over part of object 2
    result = session.step(frames[2], {1: fix})
    assert result.given == (1,) and [g.object_id for g in result.gate] == [2]  # object 1 not gated this frame
    np.testing.assert_array_equal(result.labels == 1, fix)  # the given mask is the frame's result ...
    assert not ((result.labels == 2) & fix).any()  # ... and takes its pixels from the other object
    assert session.object_ids == [1, 2] and session.stats.object_frames == 2 + 1
    memory = model.memory
    (slots,) = memory.trusted_batches
    k = model.cfg.num_aug
    assert len(slots) == k and memory.trusted_share == model.cfg.trusted_share
    # what it learnt before stays: the same samples with the same relative weights, beside the trusted ones
    assert not set(slots) & set(range(n)) and torch.equal(memory.features[:n], samples_before)
    torch.testing.assert_close(memory.weights[:n] / memory.weights[:n].sum(), learnt[:n] / learnt.sum())
    combined = memory.combined_weights()
    assert combined.sum().item() == pytest.approx(1.0)
    assert combined[slots].sum().item() == pytest.approx(model.cfg.trusted_share)
    assert combined[slots[0]] == pytest.approx(2 * combined[slots[1]].item())  # the frame itself weighs double
    assert not torch.equal(model.filter.weight, filter_before)  # refitted
    # the stored score is the given mask at stride 16, as at a start
    stored = session.objects.stored_score[0, 0]
    assert stored.max() == 1 and stored.sum() > 0
    session.step(frames[3])  # tracking goes on from the correction


def test_memory_never_replaces_a_trusted_frame_and_drops_the_oldest_beyond_half(tracker):
    cfg = TargetModelConfig(memory_size=12, num_aug=3)
    memory = SampleMemory(cfg.memory_size, cfg.learning_rate, score_space=True)
    feats = lambda n: torch.randn(n, 4, 3, 5)  # noqa: E731
    masks = lambda n: (torch.rand(n, 1, 48, 80) > 0.5).float()  # noqa: E731
    weights = lambda n: torch.ones(n, 2)  # noqa: E731
    memory.reset(feats(3), masks(3), weights(3))
    first = memory.insert_trusted(feats(3), masks(3), weights(3), share=0.5)
    for _ in range(20):  # far more regular samples than free slots
        slot = memory.insert(feats(1), masks(1), weights(1))
        assert slot not in first
    assert all(memory.combined_weights()[first] > 0)
    second = memory.insert_trusted(feats(3), masks(3), weights(3), share=0.5)
    assert memory.trusted_batches == [first, second]
    third = memory.insert_trusted(feats(3), masks(3), weights(3), share=0.5)  # 9 > 12 // 2 slots: the oldest goes
    assert memory.trusted_batches == [second, third]
    combined = memory.combined_weights()
    assert combined.sum().item() == pytest.approx(1.0)
    assert combined[second].sum().item() == pytest.approx(0.25) and combined[third].sum().item() == pytest.approx(0.25)
    # without a trusted frame the weights are the published ones, the same tensor
    plain = SampleMemory(cfg.memory_size, cfg.learning_rate)
    plain.reset(feats(3), masks(3), weights(3))
    assert plain.combined_weights() is plain.weights


def test_a_corrected_target_model_fits_the_new_appearance_and_keeps_the_old_one():
    """The correction's purpose, at the target model: after an appearance change its score finds the object
    in the corrected frame where the uncorrected model does not, and it still finds the old appearance, which a
    model started afresh on the corrected frame does not."""
    torch.manual_seed(0)
    cfg = TargetModelConfig(num_aug=1, memory_size=8, c_channels=8)
    before = torch.zeros(1, 16, 6, 8)
    before[:, :8, 1:4, 1:4] = 1.0  # appearance A: channels 0..7, top left
    after = torch.zeros(1, 16, 6, 8)
    after[:, 8:, 2:5, 4:7] = 1.0  # appearance B: channels 8..15, elsewhere
    mask_before = torch.zeros(1, 1, 96, 128)
    mask_before[..., 16:64, 16:64] = 1
    mask_after = torch.zeros(1, 1, 96, 128)
    mask_after[..., 32:80, 64:112] = 1

    def fit(model: TargetModel, features: torch.Tensor, mask: torch.Tensor) -> float:
        score = torch.nn.functional.interpolate(model.score(features), size=mask.shape[-2:], mode="bilinear")
        found = score > 0.5  # the score is fitted to the 0/1 mask
        return (found & (mask > 0)).sum().item() / ((found | (mask > 0)).sum().item() or 1)  # IoU

    plain, corrected, afresh = TargetModel(16, cfg), TargetModel(16, cfg), TargetModel(16, cfg)
    for model in (plain, corrected):
        model.initialize(before, mask_before)
    afresh.initialize(after, mask_after)
    corrected.learn_trusted(after, mask_after)
    assert fit(corrected, after, mask_after) > 0.9 and fit(plain, after, mask_after) < 0.1
    assert fit(corrected, before, mask_before) > 0.9 and fit(afresh, before, mask_before) < 0.1


def test_removed_objects_are_no_longer_tracked_or_drawn_and_ids_can_start_again(tracker, video):
    frames, first = video
    session = tracker.session()
    session.step(frames[0], first)
    session.remove(2)
    result = session.step(frames[1])
    assert session.object_ids == [1] and [g.object_id for g in result.gate] == [1] and not (result.labels == 2).any()
    result = session.step(frames[2], {2: first[2]})  # the id starts again, afresh
    assert session.object_ids == [1, 2] and result.given == (2,)
    with pytest.raises(SessionInputError, match=r"remove\(7\): no such object is tracked; tracked ids: \[1, 2\]"):
        session.remove(7)


def test_objects_start_on_any_frame_and_frames_before_any_object_are_background(tracker, video):
    frames, first = video
    session = tracker.session()
    assert not session.step(frames[0]).labels.any()
    result = session.step(frames[1], {2: first[2]})
    np.testing.assert_array_equal(result.labels == 2, first[2])
    assert session.step(frames[2]).index == 2


def test_a_reverse_session_counts_frames_down_and_both_ways_covers_every_frame(tracker, video):
    frames, first = video
    masks_on_2 = {1: np.roll(first[1], 2, axis=1)}
    run = BothWays(tracker, FrameList(frames), {2: masks_on_2})
    results = list(run)
    assert [r.index for r in results] == [1, 0, 2, 3, 4]
    np.testing.assert_array_equal(results[2].labels == 1, masks_on_2[1])
    assert results[2].given == (1,) and run.backward.stats.frames == 3 and run.forward.stats.frames == 3
    assert [g.frame for g in run.backward.gate_log] == [1, 0] and run.stats.frames == T
    with pytest.raises(ValueError, match=r"masks given on frame\(s\) \[9\]"):
        BothWays(tracker, FrameList(frames), {9: masks_on_2})


@pytest.mark.parametrize("image, masks, message", [
    (np.zeros((H, W, 3), np.float32), {}, r"\(H,W,3\) uint8 RGB numpy array, got ndarray float32"),
    (np.zeros((H, W), np.uint8), {}, "of shape \\(48, 64\\)"),
    (np.zeros((H, W, 3), np.uint8), {0: np.ones((H, W), bool)}, "object id 0 must be an integer in 1..255"),
    (np.zeros((H, W, 3), np.uint8), {"a": np.ones((H, W), bool)}, "object id 'a'"),
    (np.zeros((H, W, 3), np.uint8), {1: np.ones((H, W + 1), bool)}, r"object 1 has shape \(48, 65\)"),
    (np.zeros((H, W, 3), np.uint8), {1: np.zeros((H, W), bool)}, "the mask of object 1 is empty"),
])
def test_bad_images_and_masks_are_refused_with_what_is_wrong(tracker, image, masks, message):
    with pytest.raises(SessionInputError, match=message):
        tracker.session().step(image, masks)


def test_frames_of_another_size_are_refused(tracker, video):
    frames, first = video
    session = tracker.session()
    session.step(frames[0], first)
    with pytest.raises(SessionInputError, match="frame 1 is 32x48 but the session's first frame was 64x48"):
        session.step(np.zeros((48, 32, 3), np.uint8))
