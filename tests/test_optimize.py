"""The optimisation loop on small closed-form problems."""

import itertools

import pytest
import torch

from service.errors import EngineError
from service.optimize import CHECK_EVERY, HISTORY, RISE_LIMIT, optimize


def _quadratic(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(n, n, generator=g, dtype=torch.float64)
    a = q @ q.T + 0.1 * torch.eye(n, dtype=torch.float64)  # positive definite, ill-conditioned
    b = torch.randn(n, generator=g, dtype=torch.float64)
    return a, b


def _loss(a: torch.Tensor, b: torch.Tensor):  # type: ignore[no-untyped-def]
    """0.5 x'Ax - b'x for each item of a batch of vectors `[B, n]`."""

    def fn(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = x.reshape(x.shape[0], -1)
        total = 0.5 * ((v @ a) * v).sum(-1) - v @ b
        t = total.detach()
        return total, torch.stack([t, t * 0, t * 0], dim=1)

    return fn


def _sum_of_squares(target: torch.Tensor):  # type: ignore[no-untyped-def]
    def fn(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = ((x - target) ** 2).flatten(1).sum(1)
        return total, torch.stack([total.detach()] * 3, dim=1)

    return fn


def test_lbfgs_takes_the_same_steps_as_pytorch_without_its_tolerances() -> None:
    a, b = _quadratic()
    x0 = torch.zeros(1, 12, dtype=torch.float64)
    ours = optimize(x0, _loss(a, b), method="lbfgs", iterations=9, learning_rate=1.0, tolerance=0.0)
    x = x0.clone().requires_grad_(True)
    torch_lbfgs = torch.optim.LBFGS(
        [x], lr=1.0, max_iter=9, history_size=HISTORY, tolerance_grad=-1, tolerance_change=-1
    )

    def closure() -> torch.Tensor:
        torch_lbfgs.zero_grad()
        total, _ = _loss(a, b)(x)
        total.sum().backward()
        return total.sum()

    torch_lbfgs.step(closure)
    assert ours.iterations == [9] and ours.stop_reasons == ["iterations"]
    assert torch.allclose(ours.image, x.detach(), rtol=1e-6, atol=1e-9)


def test_lbfgs_solves_a_quadratic() -> None:
    a, b = _quadratic()
    solution = torch.linalg.solve(a, b)
    result = optimize(
        torch.zeros(1, 12, dtype=torch.float64),
        _loss(a, b),
        method="lbfgs",
        iterations=200,
        learning_rate=1.0,
        tolerance=0.0,
    )
    assert torch.allclose(result.image.reshape(-1), solution, atol=1e-4)


def test_adam_lowers_the_loss() -> None:
    a, b = _quadratic()
    fn = _loss(a, b)
    start = float(fn(torch.zeros(1, 12, dtype=torch.float64))[0])
    result = optimize(
        torch.zeros(1, 12, dtype=torch.float64),
        fn,
        method="adam",
        iterations=100,
        learning_rate=0.05,
        tolerance=0.0,
    )
    assert float(fn(result.image)[0]) < start - 1.0


def test_convergence_stops_early_and_says_so() -> None:
    a, b = _quadratic()
    seen: list[int] = []
    result = optimize(
        torch.zeros(1, 12, dtype=torch.float64),
        _loss(a, b),
        method="lbfgs",
        iterations=1000,
        learning_rate=1.0,
        tolerance=1e-6,
        on_check=lambda i, losses: seen.append(i),
    )
    (steps,) = result.iterations
    assert result.stop_reasons == ["converged"]
    assert steps < 1000 and steps % CHECK_EVERY == 0
    assert seen == list(range(CHECK_EVERY, steps + 1, CHECK_EVERY))


@pytest.mark.parametrize(
    ("iterations", "tolerance"), [(7, 0.0), (1000, 1e-6)], ids=["cap", "converged"]
)
def test_the_last_check_reports_the_returned_images_losses(
    iterations: int, tolerance: float
) -> None:
    """Found by a new user: a log's last line showed the loss before the last step, the
    manifest the returned image's."""
    a, b = _quadratic()
    seen: list[tuple[int, list[list[float]]]] = []
    result = optimize(
        torch.zeros(1, 12, dtype=torch.float64), _loss(a, b), method="lbfgs",
        iterations=iterations, learning_rate=1.0, tolerance=tolerance, check_every=5,
        on_check=lambda i, losses: seen.append((i, losses)),
    )  # fmt: skip
    assert seen[-1] == (result.iterations[0], result.losses)
    done = [i for i, _ in seen]
    assert done == sorted(set(done))  # each count reported once
    assert result.losses[0][3] == pytest.approx(float(_loss(a, b)(result.image)[0]))


def test_progress_frequency_does_not_change_the_result() -> None:
    a, b = _quadratic()
    runs = [
        optimize(
            torch.zeros(1, 12, dtype=torch.float64),
            _loss(a, b),
            method="lbfgs",
            iterations=300,
            learning_rate=1.0,
            tolerance=1e-6,
            check_every=every,
        )
        for every in (3, 10, 7)
    ]
    assert len({tuple(r.iterations) for r in runs}) == 1
    assert all(torch.equal(runs[0].image, r.image) for r in runs)


def test_divergence_is_an_error() -> None:
    def fn(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = (x * float("nan")).sum(1)
        return total, torch.stack([total.detach()] * 3, dim=1)

    with pytest.raises(EngineError, match="diverged"):
        optimize(
            torch.ones(1, 4), fn, method="adam", iterations=20, learning_rate=1.0, tolerance=0.0
        )


def test_zero_iterations_reports_the_start() -> None:
    a, b = _quadratic()
    result = optimize(
        torch.ones(1, 12, dtype=torch.float64),
        _loss(a, b),
        method="lbfgs",
        iterations=0,
        learning_rate=1.0,
        tolerance=0.0,
    )
    assert result.iterations == [0]
    assert torch.equal(result.image, torch.ones(1, 12, dtype=torch.float64))
    assert result.losses[0][3] == pytest.approx(float(_loss(a, b)(result.image)[0]))


def test_projection_keeps_iterates_feasible_and_finds_the_constrained_minimum() -> None:
    """min sum (x - t)^2 over the box [0, 1]: the answer is t clipped to the box."""
    target = torch.tensor([[-2.0, 0.25, 0.5, 3.0, 1.5, 0.75]], dtype=torch.float64)
    seen_outside: list[bool] = []

    def fn(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen_outside.append(bool(((x < 0) | (x > 1)).any()))
        return _sum_of_squares(target)(x)

    result = optimize(
        torch.full((1, 6), 0.5, dtype=torch.float64),
        fn,
        method="lbfgs",
        iterations=40,
        learning_rate=1.0,
        tolerance=0.0,
        project=lambda x: x.clamp(0, 1),
    )
    assert not any(seen_outside)
    assert torch.allclose(result.image, target.clamp(0, 1), atol=1e-6)
    assert result.losses[0][3] == pytest.approx(float(((target.clamp(0, 1) - target) ** 2).sum()))


@pytest.mark.parametrize("method", ["lbfgs", "adam"])
def test_a_batch_gives_each_item_its_own_solo_result(method: str) -> None:
    """Items with different starts converge at different times: each stops on its own, frozen
    where it converged, and ends exactly where it would alone."""
    a, b = _quadratic()
    starts = torch.stack(
        [torch.zeros(12, dtype=torch.float64), torch.full((12,), 5.0, dtype=torch.float64)]
    )
    kw = {"method": method, "iterations": 400, "learning_rate": 1.0 if method == "lbfgs" else 0.05}
    batch = optimize(starts, _loss(a, b), tolerance=1e-4, **kw)  # type: ignore[arg-type]
    alone = [
        optimize(starts[i : i + 1], _loss(a, b), tolerance=1e-4, **kw)  # type: ignore[arg-type]
        for i in range(2)
    ]
    assert batch.iterations == [r.iterations[0] for r in alone]
    assert batch.stop_reasons == [r.stop_reasons[0] for r in alone]
    if method == "lbfgs":
        assert batch.iterations[0] != batch.iterations[1]  # the test needs a real difference
        assert "converged" in batch.stop_reasons
    for i, solo in enumerate(alone):
        assert torch.allclose(batch.image[i : i + 1], solo.image, rtol=1e-9, atol=1e-9)
        assert batch.losses[i] == pytest.approx(solo.losses[0], rel=1e-9)


def test_convergence_is_judged_above_the_loss_floor() -> None:
    """A constant in the loss (a blend's spread between unlike styles) must not make the
    relative test stop early: with the constant named as the floor, the run stops where it
    stops without the constant; unnamed, the same constant stops it much sooner."""
    target = torch.linspace(-3, 3, 24, dtype=torch.float64).reshape(1, 24)
    constant = 1e3

    def distance(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = (x - target).abs().sum(1)  # Adam closes it at a steady pace, then stalls
        return total, torch.stack([total.detach()] * 3, dim=1)

    def shifted(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total, parts = distance(x)
        return total + constant, parts

    def run(fn, floor: list[float] | None) -> int:  # type: ignore[no-untyped-def]
        result = optimize(
            torch.zeros(1, 24, dtype=torch.float64), fn, method="adam", iterations=2000,
            learning_rate=0.01, tolerance=0.02, floor=floor,
        )  # fmt: skip
        assert result.stop_reasons == ["converged"]
        (steps,) = result.iterations
        return steps

    plain = run(distance, None)
    assert run(shifted, [constant]) == plain
    assert run(shifted, None) < plain / 2


def _rosenbrock(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rosenbrock's valley in independent pairs of coordinates: a full L-BFGS step without a
    line search overshoots it now and then."""
    v = x.reshape(x.shape[0], -1)
    a, b = v[:, 0::2], v[:, 1::2]
    total = (100 * (b - a**2) ** 2 + (1 - a) ** 2).sum(-1)
    t = total.detach()
    return total, torch.stack([t, t * 0, t * 0], dim=1)


def test_lbfgs_takes_back_a_step_that_raises_the_loss() -> None:
    """PyTorch's L-BFGS without a line search (pastiche's) jumps up the valley's walls; ours
    takes such a step back and tries half of it, so the loss it reports never rises above the
    lowest it has seen by more than the rounding allowance, and it ends lower."""
    start = torch.tensor([[-1.2, 1.0] * 3], dtype=torch.float64)
    x = start.clone().requires_grad_(True)
    torch_lbfgs = torch.optim.LBFGS(
        [x], lr=1.0, max_iter=1, history_size=HISTORY, tolerance_grad=-1, tolerance_change=-1
    )
    theirs: list[float] = []  # the loss at each step's start

    def closure() -> torch.Tensor:
        torch_lbfgs.zero_grad()
        total, _ = _rosenbrock(x)
        total.sum().backward()
        theirs.append(float(total.detach().sum()))
        return total.sum()

    for _ in range(40):
        torch_lbfgs.step(closure)
    assert max(b - a for a, b in itertools.pairwise(theirs)) > 100  # the test's premise

    seen: list[float] = []
    ours = optimize(
        start, _rosenbrock, method="lbfgs", iterations=40, learning_rate=1.0, tolerance=0.0,
        on_check=lambda i, losses: seen.append(losses[0][3]), check_every=1,
    )  # fmt: skip
    assert all(later <= min(seen[: i + 1]) * (1 + RISE_LIMIT) for i, later in enumerate(seen[1:]))
    assert ours.losses[0][3] <= min(seen) * (1 + RISE_LIMIT)
    assert ours.losses[0][3] == pytest.approx(float(_rosenbrock(ours.image)[0]))
    assert ours.losses[0][3] < float(_rosenbrock(x.detach())[0]) / 10


def test_a_step_taken_back_for_one_item_leaves_the_others_alone() -> None:
    """In a batch, one item on Rosenbrock's valley (whose steps are taken back now and then)
    and one on a quadratic (whose steps never are) each end where they end alone."""
    a, b = _quadratic(6)

    def mixed(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        valley, _ = _rosenbrock(x[:1])
        bowl, _ = _loss(a, b)(x[1:])
        total = torch.cat([valley, bowl])
        t = total.detach()
        return total, torch.stack([t, t * 0, t * 0], dim=1)

    starts = torch.stack(
        [torch.tensor([-1.2, 1.0] * 3, dtype=torch.float64), torch.zeros(6, dtype=torch.float64)]
    )
    kw = {"method": "lbfgs", "iterations": 40, "learning_rate": 1.0, "tolerance": 0.0}
    batch = optimize(starts, mixed, **kw)  # type: ignore[arg-type]
    alone = [
        optimize(starts[:1], _rosenbrock, **kw),  # type: ignore[arg-type]
        optimize(starts[1:], _loss(a, b), **kw),  # type: ignore[arg-type]
    ]
    for i, solo in enumerate(alone):
        assert torch.allclose(batch.image[i : i + 1], solo.image, rtol=1e-9, atol=1e-9)


def test_lbfgs_starts_again_from_the_gradient_after_steps_taken_back_in_a_row() -> None:
    """A photographer's float TIFF: the step after a half-kept one was taken back and halved
    ten times in a row (an iteration wasted each, the loss stuck at 2.5e8 against 8e6 for the
    same picture as a PNG). After RESTART_AFTER in a row the item starts again from its
    gradient with its curvature forgotten; a second item in the batch goes on as before."""
    from service.optimize import _LBFGS, RESTART_AFTER

    x = torch.zeros(2, 3, 4, 4)
    lbfgs = _LBFGS(x, 1.0)
    grad = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    first = lbfgs.direction(grad, torch.tensor([True, True]))
    lbfgs.taken(first)
    step = lbfgs.direction(grad * 0.5, torch.tensor([True, True]))  # one curvature pair
    lbfgs.taken(step)
    base_grad = (grad * 0.5).reshape(2, -1)
    flat = step.reshape(2, -1)
    for count in range(1, RESTART_AFTER + 1):
        previous = flat
        step = lbfgs.direction(torch.full_like(grad, 9.0), torch.tensor([False, True]))
        lbfgs.taken(step)
        flat = step.reshape(2, -1)
        if count < RESTART_AFTER:  # halved along the same direction
            assert torch.allclose(flat[0], 0.5 * previous[0])
    # The gradient's direction from the kept point, as long as the last step halved: not the
    # first step's length (a photo of one colour went back to a step too short to change it).
    rms = float(previous[0].pow(2).mean().sqrt())
    expected = -base_grad[0] * (0.5 * rms / float(base_grad[0].pow(2).mean().sqrt()))
    assert torch.allclose(flat[0], expected)
    assert not torch.any(lbfgs.valid[0]) and int(lbfgs.rejected[0]) == 0
    assert torch.any(lbfgs.valid[1])  # the other item keeps what it learnt


def test_lbfgs_small_algebra_in_float32_as_on_mps_takes_the_same_steps() -> None:
    """Apple's MPS has no float64, so there the (pairs x pairs) algebra of the compact form
    runs in float32: on an ill-conditioned problem (condition 1e4) with the history wrapped
    round its ring and a step taken back now and then, its steps stay those of float64."""
    from service.optimize import _LBFGS

    generator = torch.Generator().manual_seed(3)
    n = 4000
    curvature = torch.logspace(-2, 2, n)[torch.randperm(n, generator=generator)]
    target = torch.randn(2, n, generator=generator)
    x = torch.zeros(2, n)
    exact, single = _LBFGS(x, 1.0), _LBFGS(x, 1.0)
    single.small = torch.float32
    single.sy, single.yy = single.sy.float(), single.yy.float()
    worst = 0.0
    for i in range(HISTORY + 30):
        grad = curvature * x - target
        kept = torch.tensor([True, i % 13 != 7])
        step = exact.direction(grad, kept)
        other = single.direction(grad, kept)
        worst = max(worst, float(((step - other).norm(dim=-1) / step.norm(dim=-1)).max()))
        x = x + step
        exact.taken(step)
        single.taken(step)
    assert worst < 1e-3, worst
    assert float((0.5 * curvature * x * x - target * x).sum()) < -0.9 * float(
        (0.5 * target * target / curvature).sum()
    )  # and the steps did solve it: within 10 % of the minimum
