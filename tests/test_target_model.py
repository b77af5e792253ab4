"""GN-CG solver, sample memory, pixel weights and the target model."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from models.config import TargetModelConfig
from models.gn_cg import GaussNewtonCG
from models.target_model import SampleMemory, TargetModel, pixel_weights

STRIDE = 16


# ---------------------------------------------------------------------------------------------- GN-CG

def _linear_problem(seed: int = 0):
    """Residuals [A theta - b, reg_1 theta_1, reg_2 theta_2] over theta = (theta_1 (3,), theta_2 (2,))."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(12, 5, generator=g, dtype=torch.float64)
    b = torch.randn(12, generator=g, dtype=torch.float64)
    regs = (0.3, 0.05)

    def residuals(theta):
        return [a @ torch.cat(theta) - b, regs[0] * theta[0], regs[1] * theta[1]]

    reg_diag = torch.tensor([regs[0]] * 3 + [regs[1]] * 2, dtype=torch.float64) ** 2
    exact = torch.linalg.solve(a.T @ a + torch.diag(reg_diag), a.T @ b)
    start = [torch.zeros(3, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)]
    return residuals, start, exact


@pytest.mark.parametrize("iters", [(8,), (5, 5)])
def test_gn_cg_reaches_closed_form_solution_of_linear_problem(iters):
    residuals, start, exact = _linear_problem()
    solver = GaussNewtonCG(precond=(0.01, 3.0), direction_forget_factor=0.0)
    theta = solver.run(residuals, start, iters)
    assert torch.allclose(torch.cat(theta), exact, atol=1e-9)
    assert solver.losses[-1] < solver.losses[0]
    assert all(torch.equal(s, torch.zeros_like(s)) for s in start)  # inputs untouched


def test_gn_cg_short_cg_runs_decrease_the_loss_monotonically():
    residuals, start, exact = _linear_problem()
    solver = GaussNewtonCG(precond=(0.5, 2.0), direction_forget_factor=0.0)
    theta = solver.run(residuals, start, (2,) * 40)
    assert all(later <= earlier + 1e-12 for earlier, later in zip(solver.losses, solver.losses[1:]))
    assert torch.allclose(torch.cat(theta), exact, atol=1e-6)


def test_gn_cg_runs_inside_inference_mode_on_inference_tensors():
    residuals, start, exact = _linear_problem()
    with torch.inference_mode():
        start = [s.clone() for s in start]  # inference tensors
        theta = GaussNewtonCG((1.0, 1.0), 0.0).run(residuals, start, (8,))
    assert torch.allclose(torch.cat(theta), exact, atol=1e-9)


def test_gn_cg_stops_on_zero_residual_without_nans():
    # a problem whose gradient is exactly zero at the start: rho == 0 ends CG at once
    solver = GaussNewtonCG((1.0,), 0.5)
    zero = solver.run(lambda th: [2.0 * th[0]], [torch.zeros(4, dtype=torch.float64)], (5,))
    assert torch.equal(zero[0], torch.zeros(4, dtype=torch.float64))
    assert not solver.has_state


def test_direction_forget_factor_zero_resets_cg_state():
    residuals, start, _ = _linear_problem()
    partial = [torch.tensor([0.5, -0.2, 0.1], dtype=torch.float64), torch.tensor([0.3, 0.4], dtype=torch.float64)]

    def second_run(factor: float):
        solver = GaussNewtonCG((0.01, 3.0), factor)
        solver.run(residuals, start, (2,))  # leaves a stored direction behind
        assert solver.has_state
        return torch.cat(solver.run(residuals, partial, (2,)))

    fresh = torch.cat(GaussNewtonCG((0.01, 3.0), 0.0).run(residuals, partial, (2,)))
    assert torch.allclose(second_run(0.0), fresh, atol=1e-12)
    # with no forgetting the old direction is continued, which changes the result ...
    assert not torch.allclose(second_run(1.0), fresh, atol=1e-6)
    # ... while a tiny factor divides the stored rho into a huge one: beta ~ 0, almost a reset
    assert torch.allclose(second_run(1e-30), fresh, atol=1e-9)


# ---------------------------------------------------------------------------------------------- pixel weights

def _mask_with(pixels: int, shape=(64, 96)) -> torch.Tensor:
    mask = torch.zeros(1, 1, *shape)
    mask.view(-1)[:pixels] = 0.9
    return mask


def test_hinge_weights():
    cfg = TargetModelConfig.eval()
    tf, total = cfg.target_influence, 64 * 96
    assert cfg.pixel_weighting == "hinge"
    # af > tf: every pixel weighs 1
    assert torch.allclose(pixel_weights(_mask_with(total // 2), cfg), torch.ones(1, 2))
    # af < tf: foreground tf/af, background (1-tf)/(1-af)
    af = 100 / total
    expected = torch.tensor([[tf / af, (1 - tf) / (1 - af)]])
    assert torch.allclose(pixel_weights(_mask_with(100), cfg), expected)
    # fewer than hinge_min_px pixels: af := tf, i.e. weights 1
    assert torch.allclose(pixel_weights(_mask_with(cfg.hinge_min_px - 1), cfg), torch.ones(1, 2))
    # soft values at or below 0.5 are background
    soft = _mask_with(100) * 0.5
    assert torch.allclose(pixel_weights(soft, cfg), torch.ones(1, 2))


def test_no_pixel_weighting_gives_ones():
    cfg = TargetModelConfig.train()
    assert cfg.pixel_weighting is None
    assert torch.equal(pixel_weights(_mask_with(100), cfg), torch.ones(1, 2))


# ---------------------------------------------------------------------------------------------- sample memory

def _sample(value: float, count: int = 1):
    return torch.full((count, 2, 3, 4), value), torch.full((count, 1, 6, 8), value), torch.ones(count, 2)


def test_memory_weight_rules():
    lr = 0.1
    memory = SampleMemory(capacity=6, learning_rate=lr)
    memory.reset(*_sample(0.0, count=4))
    # initial: 1/K each, the original 2/K, normalised
    assert torch.allclose(memory.weights, torch.tensor([2, 1, 1, 1, 0, 0], dtype=torch.float64) / 5)

    # first update: all weights / (1 - lr), the new sample lr, then normalise
    assert memory.insert(*_sample(1.0)) == 4
    expected = torch.tensor([2, 1, 1, 1, 0, 0], dtype=torch.float64) / 5 / (1 - lr)
    expected[4] = lr
    expected /= expected.sum()
    assert torch.allclose(memory.weights, expected)

    # later updates: previous sample's weight / (1 - lr), then normalise
    assert memory.insert(*_sample(2.0)) == 5
    expected[5] = expected[4] / (1 - lr)
    expected /= expected.sum()
    assert torch.allclose(memory.weights, expected)
    assert memory.weights.sum().item() == pytest.approx(1.0)

    # full: the smallest-weight slot is replaced (here the first update's sample)
    smallest = int(torch.argmin(expected))
    assert smallest == 4
    assert memory.insert(*_sample(3.0)) == smallest
    expected[smallest] = expected[5] / (1 - lr)
    expected /= expected.sum()
    assert torch.allclose(memory.weights, expected)
    assert torch.all(memory.features[smallest] == 3.0) and torch.all(memory.targets[smallest] == 3.0)
    assert memory.features.shape[0] == 6  # capacity is fixed


def test_memory_excludes_zero_weight_samples():
    memory = SampleMemory(capacity=5, learning_rate=0.1)
    memory.reset(*_sample(0.0, count=2))
    memory.insert(*_sample(7.0))
    features, targets, _, weights = memory.active()
    assert features.shape[0] == targets.shape[0] == weights.shape[0] == 3
    assert features.data_ptr() == memory.features.data_ptr()  # a prefix: a view, no copy
    memory.weights[1] = 0  # a hole in the middle
    features, _, _, weights = memory.active()
    assert features.shape[0] == 2 and torch.all(features[1] == 7.0)
    assert torch.all(weights > 0)


def test_memory_rejects_bad_use():
    with pytest.raises(ValueError, match="do not fit"):
        SampleMemory(capacity=2, learning_rate=0.1).reset(*_sample(0.0, count=3))
    with pytest.raises(RuntimeError, match="empty"):
        SampleMemory(capacity=2, learning_rate=0.1).insert(*_sample(0.0))
    memory = SampleMemory(capacity=4, learning_rate=0.1)
    memory.reset(*_sample(0.0, count=2))
    with pytest.raises(ValueError, match="first frame's size"):
        memory.insert(torch.zeros(1, 2, 3, 4), torch.zeros(1, 1, 7, 8), torch.ones(1, 2))


# ---------------------------------------------------------------------------------------------- target model

TOY_CFG = replace(TargetModelConfig.train(), c_channels=4, memory_size=8, num_aug=3, init_iters=(5, 5),
                  update_iters=(3,), train_skipping=3)
CHANNELS, H16, W16 = 8, 8, 12


def _toy_frames(count: int, seed: int = 0):
    """Features whose foreground cells have their own direction; masks at image resolution."""
    g = torch.Generator().manual_seed(seed)
    background, foreground = torch.randn(CHANNELS, generator=g), torch.randn(CHANNELS, generator=g)
    cells = torch.zeros(count, 1, H16, W16)
    for k in range(count):
        top, left = 1 + k % 3, 2 + k % 4
        cells[k, :, top:top + 4, left:left + 5] = 1
    features = (0.2 * torch.randn(count, CHANNELS, H16, W16, generator=g) + background.view(1, -1, 1, 1)
                + cells * foreground.view(1, -1, 1, 1))
    masks = F.interpolate(cells, scale_factor=STRIDE, mode="nearest")
    return features, masks, cells.bool()


def _fitted_model(cfg=TOY_CFG) -> tuple[TargetModel, torch.Tensor, torch.Tensor, torch.Tensor]:
    features, masks, cells = _toy_frames(cfg.num_aug + 10)
    model = TargetModel(CHANNELS, cfg)
    model.initialize(features[:cfg.num_aug], masks[:cfg.num_aug])
    return model, features[cfg.num_aug:], masks[cfg.num_aug:], cells[cfg.num_aug:]


def test_initialize_fits_and_separates_foreground():
    model, features, _, cells = _fitted_model()
    losses = model.init_losses
    assert len(losses) == len(TOY_CFG.init_iters) + 1
    assert losses[-1] < 0.2 * losses[0]
    with torch.no_grad():
        scores = torch.cat([model.score(f[None]) for f in features])  # unseen frames
    assert scores.shape == (len(features), 1, H16, W16)
    fg, bg = scores[cells], scores[~cells]
    assert fg.mean() > 0.6 and bg.mean().abs() < 0.2
    assert fg.mean() - bg.mean() > 0.5
    # the memory holds the K initial samples, the original with twice the weight
    assert torch.allclose(model.memory.weights[:3], torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64))


def test_update_optimises_exactly_every_train_skipping_th_score_call():
    model, features, masks, _ = _fitted_model()
    runs, changed = [], []
    for t in range(9):
        before = model.filter.weight.detach().clone()
        model.score(features[t][None])
        model.update(masks[t][None])
        runs.append(model.update_runs)
        changed.append(not torch.equal(before, model.filter.weight))
    assert runs == [0, 0, 1, 1, 1, 2, 2, 2, 3]
    assert changed == [False, False, True] * 3
    assert model.score_calls == 9
    # every frame had enough pixels: 9 new samples in a memory of 8, 3 of them initial
    assert int((model.memory.weights > 0).sum()) == 8
    with pytest.raises(RuntimeError, match="score"):
        model.update(masks[0][None])  # no score() since the last update


def test_a_mask_of_nine_pixels_changes_nothing_even_on_a_train_skipping_th_call():
    model, features, masks, _ = _fitted_model()
    small = torch.zeros_like(masks[0][None])
    small.view(-1)[:TOY_CFG.min_update_px - 1] = 1.0  # 9 pixels above 0.5
    for t in range(TOY_CFG.train_skipping - 1):
        model.score(features[t][None])
        model.update(masks[t][None])
    weights, filt = model.memory.weights.clone(), model.filter.weight.detach().clone()
    model.score(features[0][None])  # the train_skipping-th call: a refit would be due
    model.update(small)
    assert model.score_calls % TOY_CFG.train_skipping == 0
    assert torch.equal(model.memory.weights, weights)  # nothing inserted ...
    assert torch.equal(model.filter.weight, filt) and model.update_runs == 0  # ... and nothing optimised
    with pytest.raises(RuntimeError, match="score"):
        model.update(masks[0][None])  # the skipped frame still used up its score
    # exactly min_update_px pixels enter memory
    model.score(features[0][None])
    ten = small.clone()
    ten.view(-1)[TOY_CFG.min_update_px - 1] = 1.0
    model.update(ten)
    assert int((model.memory.weights > 0).sum()) == TOY_CFG.num_aug + TOY_CFG.train_skipping


def test_fit_is_deterministic_and_ignores_global_rng():
    features, masks, _ = _toy_frames(TOY_CFG.num_aug)
    results = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = TargetModel(CHANNELS, TOY_CFG)
        model.initialize(features, masks)
        results.append(model.state_dict())
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


def test_state_dict_layout_and_restore():
    model, features, masks, _ = _fitted_model()
    state = model.state_dict()
    assert set(state) == {"project.weight", "filter.weight"}
    assert state["project.weight"].shape == (TOY_CFG.c_channels, CHANNELS, 1, 1)
    assert state["filter.weight"].shape == (1, TOY_CFG.c_channels, 3, 3)
    restored = TargetModel(CHANNELS, TOY_CFG)
    restored.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(restored.score(features[:1]), model.score(features[:1]))
    with pytest.raises(RuntimeError, match="initialize"):
        restored.update(masks[:1])


def test_target_model_works_inside_inference_mode_and_autocast():
    """The tracker builds, fits, scores and updates target models under inference_mode (+ autocast)."""
    features, masks, cells = _toy_frames(TOY_CFG.num_aug + 3)
    cfg = replace(TOY_CFG, train_skipping=1)
    with torch.inference_mode():
        model = TargetModel(CHANNELS, cfg)
        model.initialize(features[:3], masks[:3])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            score = model.score(features[3:4])
            model.update(masks[3:4])
        score = model.score(features[4:5])
        model.update(masks[4:5])
    assert model.update_runs == 2
    fg = score[cells[4:5]].float().mean()
    bg = score[~cells[4:5]].float().mean()
    assert fg - bg > 0.5


def test_initialize_rejects_bad_shapes():
    model = TargetModel(CHANNELS, TOY_CFG)
    with pytest.raises(ValueError, match=r"\(K,1,H,W\)"):
        model.initialize(torch.zeros(3, CHANNELS, H16, W16), torch.zeros(2, 1, 128, 192))
