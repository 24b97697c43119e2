"""Progress of a render across its scales: what a caller is told (`Progress`), how often
(`Cadence`), and the time left, estimated from the work in pixels x iterations. The
cancel check runs at the same points, so a cancelled render stops within one check interval."""

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from service import schedule
from service.errors import CancelledError


@dataclass(frozen=True)
class Progress:
    iteration: int  # iterations done so far, all scales together
    total: int  # iteration caps of all scales together (convergence may finish earlier)
    scale: int  # index of the current scale, 0-based, coarsest first
    scales: int
    size: tuple[int, int]  # (w, h) of the current scale
    losses: dict[str, float]
    elapsed: float
    eta: float  # seconds left (`time_left`)
    # Share of the work done, 0 to 1, by iterations x pixels: at 1024 px a fine iteration costs
    # four coarse ones, so the iteration count alone said 77 % where 30 % of the time had passed.
    done: float
    # With `preview_every`, at its multiples: the current image as the result would show it (at
    # this scale's size). Computed only when called, and only valid inside the callback.
    preview: Callable[[], Image.Image] | None = None


@dataclass(frozen=True)
class Cadence:
    """When progress (and previews) are reported, in iterations of the current scale; the
    optimiser stops to check at every multiple of either."""

    progress: int
    preview: int = 0  # 0: no previews

    @property
    def checks(self) -> int:
        return math.gcd(self.progress, self.preview) if self.preview else self.progress


ProgressFn = Callable[[Progress], None]
BatchProgressFn = Callable[[int, Progress], None]  # (item index in the batch, its progress)
CancelFn = Callable[[], bool]


def time_left(
    elapsed: float, work_done: float, pass_seconds: float, pass_work: float, work_left: float
) -> float:
    """Seconds for `work_left` (iterations x pixels) at the current pass's own pace once it has
    one, else at the render's so far. A finer pass costs more per pixel than a coarser one (on
    a bf16 CPU 8x the time for 4x the pixels at 1024 px), so the render's average pace, coarse
    passes included, told a fine pass too little time left."""
    if pass_work > 0:
        return pass_seconds / pass_work * work_left
    return elapsed / max(work_done, 1) * work_left


def loss_dict(values: Sequence[float]) -> dict[str, float]:
    return dict(zip(("content", "style", "tv", "total"), values, strict=True))


class Reporter:
    """Progress across scales: counts iterations, estimates the time left (`time_left`), and
    runs the cancel check."""

    def __init__(
        self,
        stages: Sequence[schedule.Stage],
        sizes: Sequence[tuple[int, int]],
        progress: BatchProgressFn | None,
        cadence: Cadence,
        cancel: CancelFn | None,
        picture: Callable[[torch.Tensor, int, tuple[int, int]], Image.Image],
    ) -> None:
        self.started = time.perf_counter()
        self.stages = stages
        self.pixels = [w * h for w, h in sizes]
        self.sizes = sizes
        self.progress = progress
        self.cadence = cadence
        self.cancel = cancel
        self.picture = picture
        self.stage = 0
        self.stage_began = self.started
        self.stage_iterations: list[int] = []
        self.iterate: torch.Tensor | None = None  # the optimiser's, updated in place

    def begin(self, stage: int) -> None:
        """The optimiser starts pass `stage` now."""
        self.stage, self.stage_began = stage, time.perf_counter()

    def watch(self, iterate: torch.Tensor) -> None:
        self.iterate = iterate

    def finished(self, iterations: int, stages: list[schedule.Stage]) -> None:
        """The current pass ran `iterations`, and the engine's plan is now `stages` (the finer
        passes refitted to that count)."""
        self.stage_iterations.append(iterations)
        self.stages = stages

    def check(self, iteration: int, losses: list[list[float]]) -> None:
        if self.cancel is not None and self.cancel():
            raise CancelledError("the render was cancelled")
        if self.progress is None:
            return
        i = self.stage
        at_end = iteration == self.stages[i].iterations
        preview = self.cadence.preview > 0 and iteration % self.cadence.preview == 0
        if not (preview or at_end or iteration % self.cadence.progress == 0):
            return
        done = sum(self.stage_iterations)
        pixels = self.pixels
        work_done = sum(n * p for n, p in zip(self.stage_iterations, pixels, strict=False))
        work_done += iteration * pixels[i]
        work_left = (self.stages[i].iterations - iteration) * pixels[i] + sum(
            s.iterations * p for s, p in zip(self.stages[i + 1 :], pixels[i + 1 :], strict=True)
        )
        now = time.perf_counter()
        elapsed = now - self.started
        eta = time_left(
            elapsed, work_done, now - self.stage_began, iteration * pixels[i], work_left
        )
        for item, item_losses in enumerate(losses):
            self.progress(
                item,
                Progress(
                    iteration=done + iteration,
                    total=done + sum(s.iterations for s in self.stages[i:]),
                    scale=i,
                    scales=len(self.stages),
                    size=self.sizes[i],
                    losses=loss_dict(item_losses),
                    elapsed=elapsed,
                    eta=eta,
                    done=work_done / max(work_done + work_left, 1),
                    preview=self._preview(item) if preview else None,
                ),
            )

    def _preview(self, item: int) -> Callable[[], Image.Image]:
        iterate, size = self.iterate, self.sizes[self.stage]
        assert iterate is not None
        return lambda: self.picture(iterate[item : item + 1], item, size)
