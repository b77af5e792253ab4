"""The speed work changes no result: each fast path against the straightforward computation,
the whole tracker against its unoptimised path, frame prefetching, and a benchmark.py smoke run."""
from __future__ import annotations

import json
import threading
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import benchmark
import models.session as tracker_module
from lib.prefetch import prefetch
from models.backbone import build_backbone
from models.config import NetworkConfig, TargetModelConfig, TrackerConfig
from models.gfrtm import GFRTM
from models.refiner import TSE, Upsampler, pyramid_upsample2x, resize
from models.target_model import ScoreSpaceStatistics, TargetModel, apply_stencil
from models.tracker import STAGES, Tracker
from tests.square_video import square_video

H, W, T = 64, 96, 14


# ---------------------------------------------------------------------------------------------- whole tracker
def _video():
    """T frames, three drifting squares; object 3 starts on frame 2."""
    return square_video(T, H, W, seed=3, second_x=60, third_x=12)


def _well_scaled_network() -> GFRTM:
    """An untrained G-FRTM whose masks depend on its input: He-initialised convs, zero biases.
    (The default initialisation gives nearly constant logits, i.e. empty masks on every path.)"""
    torch.manual_seed(0)
    net = GFRTM(NetworkConfig(backbone="resnet18")).eval()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    module.bias.zero_()
    return net


def _track(fold_bn: bool, **settings):
    """Labels, per-frame object probabilities, stats and the number of filter optimisations of one run."""
    backbone = build_backbone("resnet18", "none", fold_bn=fold_bn)
    # objects 1 and 2 reuse on every 4th frame, object 3 never: both paths, mixed batches, and
    # more than train_skipping full-path frames, so the filter updates run too
    force = lambda frame, ids: [frame % 4 == 0 and oid != 3 for oid in ids]  # noqa: E731
    # an untrained network's merged masks rarely reach the 10 confident pixels an update needs:
    # refit every 2nd score so that updates run on both paths
    tm_cfg = replace(TrackerConfig(fast=True).target_model, train_skipping=2)
    tracker = Tracker(backbone, _well_scaled_network(),
                      TrackerConfig(tau=0.7, fast=True, target_model_override=tm_cfg, **settings), force_reuse=force)
    frames, start_masks = _video()
    probs, runs = [], []
    merge, optimise = tracker_module.merge_objects, TargetModel._optimise_filter

    def recording_merge(p, **kwargs):
        probs.append(p.clone())
        return merge(p, **kwargs)

    def counting_optimise(model, *args):
        runs.append(model)
        return optimise(model, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tracker_module, "merge_objects", recording_merge)
        mp.setattr(TargetModel, "_optimise_filter", counting_optimise)
        labels = [r.labels for r in tracker.track(enumerate(frames), start_masks)]
    return labels, probs, tracker.stats, len(runs)


def _aggregation(p: torch.Tensor) -> torch.Tensor:
    """The published merge's softmax over the odds of [background, objects], from its formula."""
    p = p.clamp(1e-7, 1 - 1e-7)
    candidates = torch.cat([(1 - p).min(dim=0, keepdim=True).values, p])
    return torch.softmax(candidates / (1 - candidates), dim=0)


def _near_ties(probs: torch.Tensor, margin: float) -> np.ndarray:
    """(H,W) bool: pixels where either round of the merge has its two best candidates within `margin`
    of each other in odds (a probability change of `margin` moves an odds value p/(1-p) by up to
    margin/(1-p)^2, so ties are judged on the odds scale, where both rounds take their argmax)."""
    first = _aggregation(probs)
    wins = first.argmax(dim=0)
    kept = first[1:] * (wins.unsqueeze(0) == torch.arange(1, len(probs) + 1).view(-1, 1, 1))
    close = torch.zeros(probs.shape[1:], dtype=torch.bool)
    for p in (probs, kept):
        q = p.clamp(1e-7, 1 - 1e-7)
        candidates = torch.cat([(1 - q).min(dim=0, keepdim=True).values, q])
        odds = candidates / (1 - candidates)
        top2 = odds.topk(2, dim=0).values
        slack = margin / (1 - candidates.max(dim=0).values).clamp(min=1e-3) ** 2
        close |= top2[0] - top2[1] < slack
    return close.numpy()


def test_optimised_tracker_gives_the_masks_of_the_unoptimised_path():
    """Float rounding differs between the paths (folded BatchNorm, regrouped sums), so probabilities
    agree to a tolerance and labels everywhere except at near-ties of the merge."""
    tolerance = 1e-3
    fast_labels, fast_probs, fast_stats, fast_runs = _track(fold_bn=True)
    slow_labels, slow_probs, slow_stats, slow_runs = _track(fold_bn=False, schedule="reference",
                                                            channels_last=False, score_space_update=False)
    for t in range(T):
        torch.testing.assert_close(fast_probs[t], slow_probs[t], rtol=0, atol=tolerance, msg=f"frame {t}")
        differ = fast_labels[t] != slow_labels[t]
        assert not (differ & ~_near_ties(slow_probs[t], 2 * tolerance)).any(), f"frame {t}"
        assert differ.sum() <= 3, f"frame {t}"
    # the masks are not trivial: every object is found on later frames
    assert all(any((labels == oid).any() for labels in fast_labels[3:]) for oid in (1, 2, 3))
    assert fast_stats.reused == slow_stats.reused > 0
    assert fast_runs == slow_runs > 3  # 3 initial fits, then updates
    # batched: one deep half per frame; reference: one per full-path object, and one for the
    # objects starting on frames 0 and 2
    assert fast_stats.deep_calls == T
    assert slow_stats.deep_calls == 2 + sum(1 for t in range(1, T) for oid in (1, 2, 3)
                                            if (oid != 3 or t > 2) and not (t % 4 == 0 and oid != 3))


def test_tracker_config_rejects_unknown_schedule():
    with pytest.raises(ValueError, match="schedule"):
        TrackerConfig(schedule="fastest")


@pytest.mark.parametrize("objects", [2, 3, 5])
def test_merge_equals_the_published_formula(objects):
    """merge_objects' running minimum, maximum and sum against torch.softmax and argmax of the formula."""
    from models.merge import merge_objects

    g = torch.Generator().manual_seed(objects)
    probs = torch.rand(objects, 37, 53, generator=g)
    probs[:, :4] = probs[:1, :4]  # exact ties: the lower label wins, as with argmax
    probs[0, 5:8] = 1.0  # clamped extremes
    probs[1, 9:12] = 0.0
    first = _aggregation(probs)
    wins = first.argmax(dim=0).unsqueeze(0) == torch.arange(1, objects + 1).view(-1, 1, 1)
    expected_kept = first[1:] * wins
    expected_labels = _aggregation(expected_kept).argmax(dim=0)
    labels, kept = merge_objects(probs)
    torch.testing.assert_close(kept, expected_kept, rtol=1e-5, atol=1e-6)
    assert torch.equal(labels, expected_labels)


# ---------------------------------------------------------------------------------------------- refinement
@pytest.mark.parametrize("shape", [(1, 3, 5, 7), (2, 4, 6, 9)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_pyramid_upsampling_equals_bicubic_interpolation(shape, channels_last):
    x = torch.randn(shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    with torch.no_grad():
        got = pyramid_upsample2x(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert got.is_contiguous(memory_format=torch.channels_last) == channels_last


@pytest.mark.parametrize("image_size", [(64, 96), (41, 50)])
def test_upsampler_equals_conv_after_the_resizings(image_size):
    torch.manual_seed(1)
    up = Upsampler(16).eval()
    x = torch.randn(2, 16, (image_size[0] + 3) // 4, (image_size[1] + 3) // 4)
    with torch.no_grad():
        y = torch.relu(up.conv1(F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)))
        y = F.interpolate(y, scale_factor=2, mode="bicubic", align_corners=False)
        expected = up.conv2(resize(y, image_size))
        got = up(x, image_size)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_tse_split_first_conv_equals_conv_over_concatenation():
    torch.manual_seed(2)
    tse = TSE(8, 6, 1).eval()
    features, score = torch.randn(1, 8, 10, 12), torch.randn(3, 1, 5, 6)
    with torch.no_grad():
        reduced = tse.reduce(features).expand(3, -1, -1, -1)
        expected = tse.transform(torch.cat([reduced, resize(score, (10, 12))], dim=1))
        got, hpool = tse(features, score, None)
        encoded = tse.encode(features)
        one_by_one = torch.cat([tse(encoded, score[k:k + 1], None)[0] for k in range(3)])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(one_by_one, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(hpool, reduced.mean(dim=(2, 3), keepdim=True))


# ---------------------------------------------------------------------------------------------- target model
def test_score_space_statistics_give_the_full_resolution_loss():
    g = torch.Generator().manual_seed(4)
    scores = torch.randn(3, 1, 5, 7, generator=g, dtype=torch.float64)
    targets = torch.rand(3, 1, 37, 50, generator=g, dtype=torch.float64)
    weights = torch.rand(3, 2, generator=g, dtype=torch.float64) + 0.5
    stats = ScoreSpaceStatistics((5, 7), (37, 50), torch.device("cpu"))
    stencil, b, c = stats.compute(targets, weights)
    pixel = torch.where(targets > 0.5, weights[:, 0, None, None, None], weights[:, 1, None, None, None])
    up = F.interpolate(scores, size=(37, 50), mode="bilinear", align_corners=False)
    expected = (pixel * (up - targets) ** 2).flatten(1).sum(1)
    got = (scores * apply_stencil(stencil.double(), scores) - 2 * b.double() * scores).flatten(1).sum(1) + c.double()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)  # statistics are stored in float32


def test_score_space_fit_and_updates_match_the_full_resolution_ones():
    cfg = replace(TargetModelConfig.eval(fast=True), memory_size=12, train_skipping=2)
    g = torch.Generator().manual_seed(5)
    features = torch.randn(12, 16, 4, 6, generator=g)
    masks = F.interpolate((features[:, :1] > 0.3).float(), size=(64, 96), mode="nearest")
    masks[7] *= 0.02  # a nearly empty mask: hinge weighting away from 1
    fits, filters = [], []
    for score_space in (True, False):
        model = TargetModel(16, cfg, score_space=score_space)
        model.initialize(features[:5], masks[:5])
        fits.append((model.project.weight.detach().clone(), model.init_losses))
        for t in range(5, 12):
            model.score(features[t:t + 1])
            model.update(masks[t:t + 1])
        assert model.update_runs == 3
        filters.append(model.filter.weight.detach())
    torch.testing.assert_close(fits[0][0], fits[1][0], rtol=1e-4, atol=1e-6)  # the joint initial fit
    assert fits[0][1] == pytest.approx(fits[1][1], rel=1e-4)
    torch.testing.assert_close(filters[0], filters[1], rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------- prefetch
def test_prefetch_keeps_order_and_stops_its_thread_when_left_early():
    assert list(prefetch(range(50), depth=3)) == list(range(50))
    before = set(threading.enumerate())  # not a count: a thread of an earlier test may end meanwhile
    items = prefetch(iter(range(10**6)), depth=2)
    assert [next(items) for _ in range(5)] == [0, 1, 2, 3, 4]
    assert len(set(threading.enumerate()) - before) == 1  # its thread
    items.close()
    assert set(threading.enumerate()) - before == set()


def test_prefetch_reraises_the_sources_error_in_place():
    def source():
        yield 1
        raise OSError("frame 2 is unreadable")

    got = []
    with pytest.raises(OSError, match="unreadable"):
        for item in prefetch(source(), depth=4):
            got.append(item)
    assert got == [1]


# ---------------------------------------------------------------------------------------------- benchmark.py
def test_benchmark_smoke_run_writes_a_sane_report(tmp_path, capsys):
    path = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    try:
        code = benchmark.main(["--size", "96x64", "--frames", "6", "--repeats", "2", "--warmup-frames", "2",
                               "--objects", "1", "5", "--reference-mode", "--threads", "1", "--json", str(path)])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    report = json.loads(path.read_text())
    assert set(report) == {"settings", "macs", "stages", "rates", "objects", "reference", "merge", "targets"}
    assert [(row["objects"], row["limit_ms"]) for row in report["merge"]] == [(1, 2.0), (5, 10.0)]
    assert all(row["ms"] > 0 for row in report["merge"])
    assert report["settings"]["size"] == [64, 96] and report["settings"]["threads_used"] == 1
    full, reuse = report["stages"]["full"], report["stages"]["reuse"]
    assert set(full) == set(reuse) == set(STAGES)
    assert full["deep"] > 0 and reuse["deep"] == 0 and reuse["translate"] > 0 and full["translate"] == 0
    rates = {row["rate"]: row for row in report["rates"]}
    assert sorted(rates) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert rates[0.0]["ratio"] == pytest.approx(1.0) and rates[1.0]["ratio"] == pytest.approx(1.0)
    assert rates[0.0]["deep_calls"] == 6 and rates[1.0]["deep_calls"] == 1  # only the start frame
    assert all(row["per_frame_s"] > 0 and row["peak_mib"] > 0 for row in report["rates"])
    assert [row["objects"] for row in report["objects"]] == [1, 5]
    # multiply-accumulates: the reuse path skips the deep half, more objects cost more, and the
    # targets' MAC ratios are the ratios of these counts
    macs = report["macs"]
    assert macs["full"]["deep"] > 0 and macs["reuse"]["deep"] == 0 and macs["reuse"]["shallow"] == macs["full"]["shallow"]
    one, five = (row["macs"] for row in report["objects"])
    assert five > one > sum(macs["reuse"].values())
    mac_ratios = {t["name"]: t["mac_ratio"] for t in report["targets"]}
    reuse_macs = sum(macs["reuse"].values())
    assert mac_ratios["reuse path / shallow backbone half"] == pytest.approx(reuse_macs / macs["reuse"]["shallow"])
    assert mac_ratios["5 objects / 1 object"] == pytest.approx(five / one)
    (ref,) = report["reference"]
    assert ref["objects"] == 3 and ref["deep_calls"] == 1 + 3 * 5 and ref["batched_deep_calls"] == 6
    names = [t["name"] for t in report["targets"]]
    assert len(names) == 5 + 4 + 2 and all(isinstance(t["pass"], bool) for t in report["targets"])
    pace = next(t for t in report["targets"] if t["name"].startswith("refine_shallow / shallow"))
    full, full_macs = report["stages"]["full"], macs["full"]
    assert pace["value"] == pytest.approx((full["refine_shallow"] / full_macs["refine_shallow"])
                                          / (full["shallow"] / full_macs["shallow"]))
    out = capsys.readouterr().out
    assert "targets:" in out and out.count("PASS") + out.count("FAIL") == len(names)


def test_benchmark_refuses_amp_on_a_cpu_without_native_bfloat16(capsys, cpu_without_bf16):
    assert benchmark.main(["--amp", "--dev", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "--amp" in err and "no native bfloat16" in err and "--compare-bf16" in err


def test_benchmark_refuses_an_unwritable_json_path_before_measuring(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert benchmark.main(["--json", str(blocker / "report.json")]) == 2
    err = capsys.readouterr().err
    assert "--json" in err and "report.json" in err and "round" not in err  # nothing was measured
