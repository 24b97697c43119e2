"""The optimisation loop on small closed-form problems."""

import pytest
import torch

from service.errors import EngineError
from service.optimize import CHECK_EVERY, HISTORY, optimize


def _quadratic(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(n, n, generator=g, dtype=torch.float64)
    a = q @ q.T + 0.1 * torch.eye(n, dtype=torch.float64)  # positive definite, ill-conditioned
    b = torch.randn(n, generator=g, dtype=torch.float64)
    return a, b


def _loss(a: torch.Tensor, b: torch.Tensor):  # type: ignore[no-untyped-def]
    def fn(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = x.reshape(-1)
        total = 0.5 * v @ a @ v - b @ v
        return total, torch.stack([total.detach(), total.detach() * 0, total.detach() * 0])

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
        total.backward()
        return total

    torch_lbfgs.step(closure)
    assert ours.iterations == 9 and ours.stop_reason == "iterations"
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
    assert result.stop_reason == "converged"
    assert result.iterations < 1000 and result.iterations % CHECK_EVERY == 0
    assert seen == list(range(CHECK_EVERY, result.iterations + 1, CHECK_EVERY))


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
    assert len({r.iterations for r in runs}) == 1
    assert all(torch.equal(runs[0].image, r.image) for r in runs)


def test_divergence_is_an_error() -> None:
    def fn(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = (x * float("nan")).sum()
        return total, torch.stack([total.detach()] * 3)

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
    assert result.iterations == 0
    assert torch.equal(result.image, torch.ones(1, 12, dtype=torch.float64))
    assert result.losses[3] == pytest.approx(float(_loss(a, b)(result.image)[0]))


def test_projection_keeps_iterates_feasible_and_finds_the_constrained_minimum() -> None:
    """min sum (x - t)^2 over the box [0, 1]: the answer is t clipped to the box."""
    target = torch.tensor([[-2.0, 0.25, 0.5, 3.0, 1.5, 0.75]], dtype=torch.float64)
    seen_outside: list[bool] = []

    def fn(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen_outside.append(bool(((x < 0) | (x > 1)).any()))
        total = ((x - target) ** 2).sum()
        return total, torch.stack([total.detach()] * 3)

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
    assert result.losses[3] == pytest.approx(float(((target.clamp(0, 1) - target) ** 2).sum()))
