"""Gauss-Newton with preconditioned conjugate gradient for least-squares problems (docs/method.md, "Target model").

The solver minimises sum_i ||r_i(theta)||^2, where the residual function maps a list of parameter
tensors to a list of residual tensors. Each Gauss-Newton step linearises r at theta and solves
J^T J d = -J^T r with a few preconditioned CG iterations, then sets theta += step * d with the
full step (1). J is never formed: J^T v is one backward pass, and J v comes from the
double-backward trick (differentiate the linear map u -> J^T u with respect to u).

The CG state (search direction p, rho, previous residual) survives between CG runs, so a later
run continues where the last one stopped; `direction_forget_factor` divides the stored rho at the
start of every run (0 resets the state).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

ResidualFn = Callable[[list[Tensor]], list[Tensor]]

GN_STEP = 1.0  # Gauss-Newton step size: the full step


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    """Inner product of two tensor lists, summed over all entries."""
    return float(sum((x * y).sum() for x, y in zip(a, b)))


def _squared_norm(tensors: Sequence[Tensor]) -> float:
    return _dot(tensors, tensors)


class GaussNewtonCG:
    """Gauss-Newton + preconditioned CG least-squares solver with persistent CG state.

    Args:
        precond: one positive constant per parameter tensor; the diagonal preconditioner
            applies z_i = r_i / precond_i.
        direction_forget_factor: divides the stored rho between CG runs; 0 resets the CG
            state (direction, rho, previous residual) before every run.
    """

    def __init__(self, precond: Sequence[float], direction_forget_factor: float) -> None:
        if any(c <= 0 for c in precond):
            raise ValueError(f"GaussNewtonCG: preconditioner constants must be positive, got {tuple(precond)}")
        if direction_forget_factor < 0:
            raise ValueError(f"GaussNewtonCG: direction_forget_factor must be >= 0, got {direction_forget_factor}")
        self.precond = tuple(float(c) for c in precond)
        self.direction_forget_factor = float(direction_forget_factor)
        self.losses: list[float] = []  # ||r||^2 at the start of each GN step of the last run, then the final one
        self.reset()

    def reset(self) -> None:
        """Forget the CG state: the next run starts with steepest descent."""
        self._direction: list[Tensor] | None = None
        self._rho = 1.0
        self._prev_residual: list[Tensor] | None = None

    @property
    def has_state(self) -> bool:
        """True when a stored search direction will be continued by the next CG run."""
        return self._direction is not None

    def run(self, residual_fn: ResidualFn, params: Sequence[Tensor], iters: Sequence[int]) -> list[Tensor]:
        """Optimise `params` and return the new values (detached tensors; `params` are not modified).

        Args:
            residual_fn: theta (list like `params`) -> list of residual tensors; must be
                differentiable twice (the double-backward trick needs the backward's graph).
            params: starting values, one tensor per preconditioner constant. Tensors created in
                inference mode are fine: they are cloned into ordinary tensors first.
            iters: one entry per Gauss-Newton step, the number of CG iterations in that step.
        """
        if len(params) != len(self.precond):
            raise ValueError(f"GaussNewtonCG: got {len(params)} parameter tensors but {len(self.precond)} "
                             f"preconditioner constants; give one constant per tensor")
        self.losses = []
        device_type = params[0].device.type
        # Autograd must run even when the caller is in inference_mode/no_grad/autocast.
        with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device_type, enabled=False):
            theta = [p.detach().clone() for p in params]
            for cg_iters in iters:
                theta = [t.requires_grad_(True) for t in theta]
                residuals = residual_fn(theta)
                self.losses.append(_squared_norm([r.detach() for r in residuals]))
                step = self._solve_normal_equations(residuals, theta, cg_iters)
                theta = [(t + GN_STEP * d).detach() for t, d in zip(theta, step)]
            with torch.no_grad():
                self.losses.append(_squared_norm(residual_fn(theta)))
        return theta

    def _solve_normal_equations(self, residuals: list[Tensor], theta: list[Tensor], num_iters: int) -> list[Tensor]:
        """Approximately solve J^T J d = -J^T r with `num_iters` preconditioned CG iterations."""
        dummies = [torch.zeros_like(r, requires_grad=True) for r in residuals]
        jt_dummy = torch.autograd.grad(residuals, theta, dummies, create_graph=True)  # J^T u, linear in u
        gradient = torch.autograd.grad(residuals, theta, [r.detach() for r in residuals], retain_graph=True)

        def normal_op(v: list[Tensor]) -> list[Tensor]:
            jv = torch.autograd.grad(jt_dummy, dummies, v, retain_graph=True)
            return list(torch.autograd.grad(residuals, theta, jv, retain_graph=True))

        return self._conjugate_gradient(normal_op, [-g for g in gradient], num_iters)

    def _conjugate_gradient(self, normal_op: Callable[[list[Tensor]], list[Tensor]], rhs: list[Tensor],
                            num_iters: int) -> list[Tensor]:
        """Preconditioned CG from x = 0 with Polak-Ribiere beta (clamped at 0); continues the stored direction."""
        if self.direction_forget_factor == 0:
            self.reset()
        elif self._direction is not None:
            self._rho /= self.direction_forget_factor

        x = [torch.zeros_like(b) for b in rhs]
        r = [b.clone() for b in rhs]
        for _ in range(num_iters):
            z = [ri / c for ri, c in zip(r, self.precond)]
            rho = _dot(r, z)
            if rho == 0:
                break
            if self._direction is None:
                p = z
            else:
                beta = max((rho - _dot(self._prev_residual, z)) / self._rho, 0.0)
                p = [zi + beta * pi for zi, pi in zip(z, self._direction)]
            q = normal_op(p)
            curvature = _dot(p, q)
            if curvature == 0:
                break
            alpha = rho / curvature
            x = [xi + alpha * pi for xi, pi in zip(x, p)]
            self._direction, self._rho, self._prev_residual = p, rho, r
            r = [ri - alpha * qi for ri, qi in zip(r, q)]
        return x
