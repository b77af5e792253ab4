"""The G-FRTM training step, its losses, the target-model cache and checkpoints, on tiny frames."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from models.backbone import build_backbone
from models.checkpoint import CheckpointError, save_gfrtm
from models.config import NetworkConfig, TargetModelConfig, TrainConfig
from models.gfrtm import GFRTM
from trainer.checkpoints import load_refiner_init, resume
from lib.distributed import DistInfo
from trainer.logging import GRID_WIDTH, sample_grid
from trainer.loop import Trainer
from trainer.losses import gate_loss, gate_target, mask_iou, reuse_margin
from trainer.options import RunPaths, TrainingError, TrainOptions
from trainer.step import forward_sequence, frozen_features
from trainer.tm_cache import CacheMismatchError, TargetModelCache, cache_info

KEY_TABLE = Path(__file__).resolve().parents[1] / "weights" / "checkpoint_keys_resnet18.tsv"
B, N, H, W = 2, 3, 64, 112
TINY_TM = dataclasses.replace(TargetModelConfig.train(), num_aug=3, init_iters=(3, 3), update_iters=(2,))
CPU = DistInfo(0, 1, torch.device("cpu"))


def _batch(seed: int = 0) -> dict:
    """B samples of N frames: a coloured box moving right over dark noise; its mask is the label."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 60, (B, N, 3, H, W), generator=g).to(torch.uint8)
    labels = torch.zeros(B, N, 1, H, W)
    for b in range(B):
        for t in range(N):
            y, x = 16 + 2 * t, 10 + 8 * t + 40 * b
            images[b, t, :, y:y + 24, x:x + 28] = torch.tensor([200, 60 + 100 * b, 40], dtype=torch.uint8).view(3, 1, 1)
            labels[b, t, 0, y:y + 24, x:x + 28] = 1
    # annotated every 5th frame from 00005.png on, as in YouTube-VOS: file numbers differ from list positions
    return {"images": images, "labels": labels, "sequence": [f"box{b}" for b in range(B)],
            "object_id": torch.ones(B, dtype=torch.long), "frames": torch.arange(N).repeat(B, 1),
            "frame_numbers": (5 + 5 * torch.arange(N)).repeat(B, 1)}


def _options(tmp_path: Path, lr_given: bool = False, backbone_weights: str = "none", **cfg) -> TrainOptions:
    config = dataclasses.replace(TrainConfig(), batch_size=B, seq_len=N, image_size=(H, W), workers=0,
                                 target_model_override=TINY_TM, **cfg)
    paths = RunPaths(tmp_path / "data", tmp_path / "data", tmp_path / "ckpt", tmp_path / "tb", tmp_path / "tmcache")
    return TrainOptions(name="tiny", cfg=config, paths=paths, device="cpu", init_pth=None,
                        backbone_weights=backbone_weights, lr_given=lr_given)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors gain nothing from threads, and on a shared 2-core machine busy OpenMP threads slow tests ~10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def backbone():
    return build_backbone("resnet18", "none")


# --------------------------------------------------------------------------------------- losses
def test_margin_ramps_linearly_to_m1_and_marginEp_zero_means_m1_at_once():
    assert reuse_margin(0, 1.0, 120) == 0.0
    assert reuse_margin(30, 1.0, 120) == pytest.approx(0.25)
    assert reuse_margin(60, 0.5, 120) == pytest.approx(0.25)
    assert reuse_margin(120, 0.5, 120) == pytest.approx(0.5)
    assert reuse_margin(250, 0.5, 120) == pytest.approx(0.5)
    assert reuse_margin(1, 0.7, 0) == pytest.approx(0.7)


def test_gate_target_is_the_capped_iou_and_zero_for_an_empty_union():
    a = torch.zeros(3, 1, 4, 4)
    b = torch.zeros(3, 1, 4, 4)
    a[0, 0, :2] = 1  # 8 px
    b[0, 0, 1:3] = 1  # 8 px, 4 shared -> IoU 4/12
    a[1, 0, :2] = 1
    b[1, 0, :2] = 1  # identical -> 1
    # sample 2: both empty
    torch.testing.assert_close(mask_iou(a, b, empty=0.0), torch.tensor([1 / 3, 1.0, 0.0]))
    torch.testing.assert_close(gate_target(a, b, margin=1.0), torch.tensor([1 / 3, 1.0, 0.0]))
    torch.testing.assert_close(gate_target(a, b, margin=0.5), torch.tensor([1 / 3, 0.5, 0.0]))
    assert mask_iou(a, b, empty=1.0)[2] == 1.0


def test_gate_loss_has_a_dead_zone_of_m2():
    p = torch.tensor([[0.7, 0.3], [0.2, 0.8]])
    s = torch.tensor([0.6, 0.6])
    # |p - [s, 1-s]| = [0.1, 0.1] and [0.4, 0.4]
    assert gate_loss(p, s, m2=0.0).item() == pytest.approx((2 * 0.01 + 2 * 0.16) / 4)
    assert gate_loss(p, s, m2=0.2).item() == pytest.approx((2 * 0.04) / 4)
    assert gate_loss(p, s, m2=0.5).item() == 0.0


# ----------------------------------------------------------------------------- gated forward
def _forced_forward(backbone, plan: list[bool], margin: float = 1.0, spy: dict | None = None):
    """forward_sequence with the gate forced per frame (plan[t-1] True = reuse on frame t)."""
    torch.manual_seed(0)
    net = GFRTM(NetworkConfig()).train()
    batch = _batch()
    feats = frozen_features(backbone, batch["images"])
    size16 = feats[0]["layer4"].shape[-2:]
    scores = torch.randn(B, N, 1, *size16)
    calls = iter(plan)

    def forced_logits(tpl):
        reuse = next(calls)
        return torch.tensor([10.0, -10.0] if reuse else [-10.0, 10.0]).expand(tpl.shape[0], 2)

    net.gate_logits = forced_logits
    if spy is not None:
        for name in ("deep", "translate"):
            original = getattr(net.refiner, name)

            def record(*args, _original=original, _name=name):
                result = _original(*args)
                spy.setdefault(_name, []).append((args, result))
                return result

            setattr(net.refiner, name, record)
        original_match = net.match
        net.match = lambda tpl, layer3, score: spy.setdefault("match", []).append(score) or original_match(
            tpl, layer3, score)
    out = forward_sequence(net, feats, scores, batch["labels"], margin=margin, m2=0.0)
    return out, batch["labels"], scores


def test_gate_target_uses_the_label_of_the_last_full_path_frame(backbone):
    labels = _batch()["labels"]
    iou = lambda t, u: mask_iou(labels[:, t], labels[:, u], empty=0.0)  # noqa: E731

    full, _, _ = _forced_forward(backbone, [False, False])
    assert full["reuse_rate"].item() == 0.0
    torch.testing.assert_close(full["gate_targets"], torch.stack([iou(1, 0), iou(2, 1)], dim=1))

    reuse, _, _ = _forced_forward(backbone, [True, True])
    assert reuse["reuse_rate"].item() == 1.0
    torch.testing.assert_close(reuse["gate_targets"], torch.stack([iou(1, 0), iou(2, 0)], dim=1))
    assert not torch.allclose(iou(2, 0), iou(2, 1))  # the two rules are told apart by this batch

    capped, _, _ = _forced_forward(backbone, [False, False], margin=0.3)
    torch.testing.assert_close(capped["gate_targets"], full["gate_targets"].clamp(max=0.3))


def test_previous_x_and_stored_score_follow_the_inference_rule(backbone):
    spy: dict = {}
    out, labels, scores = _forced_forward(backbone, [False, True], spy=spy)  # frame 1 full, frame 2 reuse
    torch.testing.assert_close(out["decisions"], torch.tensor([[0.0, 1.0]] * B))
    x_frame1 = spy["deep"][1][1]  # deep-part calls: frame 0, frame 1, frame 2
    prev_x_frame2 = spy["translate"][1][0][0]  # translate calls: frame 1, frame 2
    # Deviation (previous x): the full-path frame 1 replaced the previous x (published code kept frame 0's)
    torch.testing.assert_close(prev_x_frame2, x_frame1)
    assert not torch.allclose(prev_x_frame2, spy["deep"][0][1])
    # the stored score became frame 1's target-model score; matching on frame 2 uses it
    torch.testing.assert_close(spy["match"][1], scores[:, 1])


def test_first_previous_x_is_the_deep_part_on_frame_0s_target_model_score(backbone):
    spy: dict = {}
    out, labels, scores = _forced_forward(backbone, [True, True], spy=spy)
    (score0, deep_feats0), x0 = spy["deep"][0]
    # frame 0's deep part takes the target model's score, not the mask at stride 16 ...
    torch.testing.assert_close(score0, scores[:, 0], rtol=0, atol=0)
    mask16 = torch.nn.functional.interpolate(labels[:, 0], size=scores.shape[-2:], mode="bilinear",
                                             align_corners=False)
    assert not torch.allclose(score0, mask16)
    # ... and its output is the previous x that frame 1's translator starts from
    torch.testing.assert_close(spy["translate"][0][0][0], x0)
    # while matching on frame 1 reads the stored score, which is the mask
    torch.testing.assert_close(spy["match"][0], mask16)


def test_every_trainable_parameter_gets_a_gradient(backbone):
    # both gated paths are blended, so DDP can run without find_unused_parameters
    torch.manual_seed(0)
    net = GFRTM(NetworkConfig()).train()
    batch = _batch()
    feats = frozen_features(backbone, batch["images"])
    scores = torch.randn(B, N, 1, *feats[0]["layer4"].shape[-2:])
    forward_sequence(net, feats, scores, batch["labels"], margin=1.0, m2=0.0)["loss"].backward()
    assert [name for name, p in net.named_parameters() if p.grad is None] == []
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


# --------------------------------------------------------------------------------- trainer
def test_total_loss_falls_on_a_fixed_batch(tmp_path):
    torch.manual_seed(0)
    trainer = Trainer(_options(tmp_path, lr=1e-3), CPU)
    batch = _batch()
    losses = [trainer.train_batch(batch, epoch=1)["loss"].item() for _ in range(8)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-2:]) / 2 < 0.8 * sum(losses[:2]) / 2, losses


def test_first_previous_x_comes_from_the_cached_target_model_on_a_cache_hit(tmp_path, monkeypatch):
    trainer = Trainer(_options(tmp_path), CPU)
    batch = _batch()
    trainer.train_batch(batch, epoch=1)  # fits every target model and writes the cache
    seen = []
    deep = trainer.net.refiner.deep
    monkeypatch.setattr(trainer.net.refiner, "deep",
                        lambda score, feats, *a: seen.append(score.detach().clone()) or deep(score, feats, *a))
    trainer.train_batch(batch, epoch=2)
    assert trainer.cache.hits == B
    # the first deep-part call is frame 0's: the cached model classifying the un-augmented frame 0
    layer4 = frozen_features(trainer.backbone, batch["images"])[0]["layer4"]
    for b in range(B):
        state = torch.load(trainer.cache.path(f"box{b}", 5, 1), weights_only=True)
        projected = torch.nn.functional.conv2d(layer4[b:b + 1], state["project.weight"])
        expected = torch.nn.functional.conv2d(projected, state["filter.weight"], padding=1)
        torch.testing.assert_close(seen[0][b:b + 1], expected)
    assert seen[0].abs().sum() > 0


def test_second_epoch_hits_the_target_model_cache_and_bad_files_are_refitted(tmp_path):
    trainer = Trainer(_options(tmp_path), CPU)
    batch = _batch()
    trainer.train_batch(batch, epoch=1)
    assert (trainer.cache.hits, trainer.cache.misses) == (0, B)
    cached = trainer.cache.path("box0", 5, 1)  # named by the first frame's file number, not its position 0
    assert cached == tmp_path / "tmcache" / "resnet18-c32_gTrue" / "box0" / "00005.1.layer4.pth"
    assert cached.is_file()
    assert set(torch.load(cached, weights_only=True)) == {"project.weight", "filter.weight"}
    trainer.train_batch(batch, epoch=2)
    assert (trainer.cache.hits, trainer.cache.misses) == (B, B)

    cached.write_bytes(b"not a checkpoint")
    torch.save({"project.weight": torch.zeros(8, 256, 1, 1), "filter.weight": torch.zeros(1, 8, 3, 3)},
               trainer.cache.path("box1", 5, 1))  # another c_channels
    with pytest.warns(UserWarning, match="unreadable") as warned:
        trainer.train_batch(batch, epoch=3)
    assert len(warned) == 2 and "shapes" in str(warned[1].message)
    for warning in warned:  # one line each (not torch's multi-line weights-only advice)
        text = str(warning.message)
        assert "\n" not in text and text.endswith("refitting and rewriting it"), text
    assert "UnpicklingError" in str(warned[0].message) and "ValueError" in str(warned[1].message)
    assert trainer.cache.refits == 2 and trainer.cache.hits == B
    assert set(torch.load(cached, weights_only=True)) == {"project.weight", "filter.weight"}  # rewritten
    assert torch.load(trainer.cache.path("box1", 5, 1), weights_only=True)["filter.weight"].shape == (1, 32, 3, 3)


def test_read_only_cache_writes_nothing(tmp_path, backbone):
    cache = TargetModelCache(tmp_path, "resnet18", TINY_TM, read_only=True)
    cache.store("seq", 3, 2, {"project.weight": torch.zeros(1), "filter.weight": torch.zeros(1)})
    assert not any(tmp_path.rglob("*.pth"))
    assert cache.load("seq", 3, 2, {}) is None and cache.misses == 1


def test_cache_index_refuses_models_fitted_with_other_settings(tmp_path):
    cache = TargetModelCache(tmp_path, "resnet18", TINY_TM)
    synthetic = {"videos": 2, "frames": 5, "seed": 1, "size": [H, W], "max_objects": 3}
    ours = cache_info("resnet18", "none", TINY_TM, (H, W), synthetic)
    cache.check_info(ours, write=False)
    assert not (cache.folder / "cache_info.json").exists()  # a cache without an index is trusted
    cache.check_info(ours, write=True)
    cache.check_info(ours, write=True)  # same settings: fine
    with pytest.raises(CacheMismatchError, match=r"backbone_weights.*--tmcache"):
        cache.check_info(cache_info("resnet18", "imagenet", TINY_TM, (H, W), synthetic), write=True)
    with pytest.raises(CacheMismatchError, match=r"image_size: cached \[64, 112\], now \[128, 224\].*--tmcache"):
        cache.check_info(cache_info("resnet18", "none", TINY_TM, (2 * H, 2 * W), synthetic), write=True)
    with pytest.raises(CacheMismatchError, match=r'synthetic_data.*"videos": 3'):
        cache.check_info(cache_info("resnet18", "none", TINY_TM, (H, W), synthetic | {"videos": 3}), write=True)


def test_cache_index_of_the_old_frame_naming_is_refused(tmp_path):
    # an index written before frame0 meant the annotation file number (no 'frame0' entry)
    cache = TargetModelCache(tmp_path, "resnet18", TINY_TM)
    ours = cache_info("resnet18", "none", TINY_TM, (H, W))
    old = {k: v for k, v in ours.items() if k != "frame0"}
    cache.folder.mkdir(parents=True)
    (cache.folder / "cache_info.json").write_text(json.dumps(old))
    with pytest.raises(CacheMismatchError, match=r'frame0: cached not recorded, now "annotation file number"'):
        cache.check_info(ours, write=True)


def test_resume_restores_the_next_epoch_and_the_optimizer_state(tmp_path):
    torch.manual_seed(0)
    first = Trainer(_options(tmp_path), CPU)
    first.train_batch(_batch(), epoch=1)
    first.scheduler.step()
    path = first.save(1, {"loss": 1.0})
    assert path == tmp_path / "ckpt" / "tiny" / "tiny_ep0001.pth"
    saved = torch.load(path, weights_only=True)  # loadable without unpickling Python objects
    assert {"name", "epoch", "stats", "model", "optimizer", "scheduler", "rng"} <= set(saved)
    spec = [line.split("\t")[0] for line in KEY_TABLE.read_text().splitlines() if line and not line.startswith("#")]
    assert list(saved["model"]) == spec

    torch.manual_seed(123)  # a different initialisation that the resume must overwrite
    second = Trainer(_options(tmp_path), CPU)
    assert second.start_epoch == 2
    for key, value in first.net.state_dict().items():
        torch.testing.assert_close(second.net.state_dict()[key], value)
    a, b = first.optimizer.state_dict(), second.optimizer.state_dict()
    assert a["param_groups"] == b["param_groups"]
    assert a["param_groups"][1]["weight_decay"] == 0.0  # the gate group
    for k in a["state"]:
        for name, value in a["state"][k].items():
            torch.testing.assert_close(b["state"][k][name], value)
    assert second.scheduler.state_dict() == first.scheduler.state_dict()


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before:UserWarning")
def test_resume_switches_to_an_explicit_lr_and_otherwise_keeps_the_checkpoints(tmp_path, capsys):
    first = Trainer(_options(tmp_path, lr=1e-3, lr_step=1), CPU)
    first.scheduler.step()  # one StepLR decay: lr 1e-4
    first.save(1, {"loss": 1.0})

    kept = Trainer(_options(tmp_path, lr=5e-4, lr_step=1), CPU)  # a default --lr: not given on the command line
    assert [(g["initial_lr"], g["lr"]) for g in kept.optimizer.param_groups] == [(1e-3, pytest.approx(1e-4))] * 2
    assert "replaces" not in capsys.readouterr().out

    switched = Trainer(_options(tmp_path, lr_given=True, lr=2e-3, lr_step=1), CPU)
    for group in switched.optimizer.param_groups:
        assert group["initial_lr"] == 2e-3 and group["lr"] == pytest.approx(2e-4)  # same point of the schedule
    assert switched.scheduler.base_lrs == [2e-3, 2e-3]
    assert switched.scheduler.get_last_lr() == [pytest.approx(2e-4)] * 2
    out = capsys.readouterr().out
    assert "--lr 0.002 replaces the checkpoint's initial lr 0.001" in out and "0.0002" in out
    switched.scheduler.step()
    assert switched.optimizer.param_groups[0]["lr"] == pytest.approx(2e-5)  # the decay goes on from there

    same = Trainer(_options(tmp_path, lr_given=True, lr=1e-3, lr_step=1), CPU)  # the checkpoint's own lr: no change
    assert same.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert "replaces" not in capsys.readouterr().out


def test_resume_refuses_a_checkpoint_of_other_backbone_weights(tmp_path):
    first = Trainer(_options(tmp_path), CPU)
    path = first.save(1, {"loss": 1.0})
    with pytest.raises(CheckpointError, match=r"--backbone-weights none to resume it, or another --name"):
        resume(path, first.net, first.optimizer, first.scheduler, "resnet18", "imagenet")
    assert resume(path, first.net, first.optimizer, first.scheduler, "resnet18", "none").epoch == 1


def test_init_pth_loads_refiner_weights_and_refuses_the_other_backbone(tmp_path):
    torch.manual_seed(1)
    source = GFRTM(NetworkConfig())
    save_gfrtm(tmp_path / "frtm18.pth", source)
    torch.manual_seed(2)
    target = GFRTM(NetworkConfig())
    report = load_refiner_init(tmp_path / "frtm18.pth", target, "resnet18")
    assert report.loaded and all(k.startswith("refiner.") for k in report.loaded)
    for key in report.loaded:
        torch.testing.assert_close(target.state_dict()[key], source.state_dict()[key])
    assert not torch.equal(target.state_dict()["convGS.1.weight"], source.state_dict()["convGS.1.weight"])

    save_gfrtm(tmp_path / "frtm101.pth", GFRTM(NetworkConfig(backbone="resnet101")))
    with pytest.raises(CheckpointError, match="resnet101"):
        load_refiner_init(tmp_path / "frtm101.pth", target, "resnet18")


def test_non_finite_loss_stops_and_names_the_samples(tmp_path):
    trainer = Trainer(_options(tmp_path), CPU)
    with torch.no_grad():
        trainer.net.refiner.project.conv2.weight.fill_(float("nan"))
    # frames by their annotation file numbers; no checkpoint yet, so a rerun starts from scratch
    with pytest.raises(TrainingError, match=r"non-finite loss .*box0 object 1 frames \[5, 10, 15\].*box1.*"
                                            r"--lr.*starts from scratch"):
        trainer.train_batch(_batch(), epoch=1)


def test_non_finite_gradients_stop_before_the_step(tmp_path):
    trainer = Trainer(_options(tmp_path), CPU)
    path = trainer.save(1, {"loss": 1.0})
    # the loss stays finite, but a gradient turns NaN on its way back
    weight = trainer.net.refiner.project.conv2.weight
    weight.register_hook(lambda grad: grad * float("nan"))
    before = {k: v.detach().clone() for k, v in trainer.net.named_parameters()}
    with pytest.raises(TrainingError, match=r"non-finite gradients .*refiner\.project\.conv2\.weight.*box0 object 1 "
                                            r"frames \[5, 10, 15\].*resumes from the last good checkpoint") as err:
        trainer.train_batch(_batch(), epoch=2)
    assert str(path) in str(err.value)
    for key, value in trainer.net.named_parameters():  # no optimiser step was taken
        assert torch.equal(value, before[key]), key
    assert not trainer.optimizer.state


def test_image_grid_has_a_column_per_frame_and_a_row_per_kind():
    batch = _batch()
    masks = batch["labels"][0, 1:]
    diffs = torch.linspace(-1, 1, (N - 1) * 4 * 7).view(N - 1, 1, 4, 7)
    grid = sample_grid(batch["images"][0], batch["labels"][0], masks, diffs, torch.tensor([1.0, 0.0]))
    tile_h = round(H * GRID_WIDTH / W)
    assert grid.shape == (3, 5 * tile_h + 6 * 2, N * GRID_WIDTH + (N + 1) * 2)
    assert 0.0 <= grid.min() and grid.max() <= 1.0
    gate_row = grid[:, -2 - tile_h:-2]
    reuse_tile = gate_row[:, :, 2 + (GRID_WIDTH + 2) * 1:(GRID_WIDTH + 2) * 2]
    full_tile = gate_row[:, :, 2 + (GRID_WIDTH + 2) * 2:(GRID_WIDTH + 2) * 3]
    assert reuse_tile[1].mean() > reuse_tile[0].mean() and full_tile[0].mean() > full_tile[1].mean()
