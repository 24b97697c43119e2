"""The per-job progress file in the outbox: what a person (or a sync client) looks at while a
photo is being painted. Written atomically under a stable name, at most every `min_interval`
seconds so a fast job does not turn into a stream of writes, removed when the answer lands.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from daemon.fsutil import atomic_write_json
from daemon.jobs.outbox import local_time
from daemon.pool.events import Progress


def percent_done(done: float) -> float:
    """A worker's share of work done as the percent people read."""
    return round(min(100.0, max(0.0, 100.0 * done)), 1)


class ProgressReport(BaseModel):
    """`<stem>.progress.json`. The scale and timing keys are null until the worker's first
    report (the file is written as the job starts, at iteration 0)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str
    input: str = Field(description="The photo's path relative to the inbox.")
    state: Literal["running"] = "running"
    iteration: int = Field(ge=0, description="Optimiser iterations done, all scales together.")
    total: int = Field(ge=0, description="The iterations the job may take at most.")
    percent: float = Field(
        ge=0,
        le=100,
        description="The work done, weighted by pixels: an iteration of a finer scale counts "
        "as much more as it costs.",
    )
    device: str
    scale: int | None = Field(None, description="The scale at work, counted from 1.")
    scales: int | None = None
    size: tuple[int, int] | None = Field(None, description="[width, height] of this scale.")
    elapsed_seconds: float | None = None
    eta_seconds: float | None = Field(None, description="Time left, estimated.")
    losses: dict[str, float] | None = None
    updated_at: str = Field(description="Local time, ISO 8601.")


@dataclass
class ProgressFile:
    """One running job's progress file."""

    path: Path
    outbox: Path  # the outbox it is in (`fsutil.atomic_write`'s `under`)
    job_id: str
    source: str
    min_interval: float = 0.5
    _last_write: float = field(default=float("-inf"), init=False)

    def started(self, total: int, device: str) -> None:
        """The file as the job starts, before any report from its worker."""
        self._write(ProgressReport(**self._common(0, total, 0.0, device)))

    def update(self, event: Progress) -> bool:
        """Write the file if `min_interval` has passed since the last; True when written."""
        if time.time() - self._last_write < self.min_interval:
            return False
        report = ProgressReport(
            **self._common(event.iteration, event.total, event.done, event.device),
            scale=event.scale + 1,  # of "scales", counted from 1 as the log does
            scales=event.scales,
            size=event.size,
            elapsed_seconds=event.elapsed,
            eta_seconds=round(event.eta, 1),
            losses=event.losses,
        )
        self._write(report)
        return True

    def _common(self, iteration: int, total: int, done: float, device: str) -> dict[str, object]:
        return {
            "job_id": self.job_id,
            "input": self.source,
            "iteration": iteration,
            "total": total,
            "percent": percent_done(done),
            "device": device,
            "updated_at": local_time(time.time()),
        }

    def _write(self, report: ProgressReport) -> None:
        atomic_write_json(self.path, report.model_dump(mode="json"), False, self.outbox)
        self._last_write = time.time()
