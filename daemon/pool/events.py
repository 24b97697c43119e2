"""What the pool tells the daemon about a job: small typed events, the same for every backend.

A worker (process or Ray actor) reports to its pool; the pool applies the retry rules and hands
the daemon one of these. `Done` and `Failed` end a job (but a `Failed` of kind "nospace",
the state folder full, holds it to render again); `Retrying`, `Requeued` and `Cancelled` put
it back in a queue (the pool's or, at shutdown, the spool's for the next start). Some
`FailureKind`s are the daemon's own, never a pool's ("interrupted", "result_lost").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

from service.params import RenderParams, StopReason

FailureKind = Literal[
    "input",
    "weights",
    "device",  # the device named in the settings is not there (a worker cannot start)
    "engine",
    "oom",
    "crash",
    "timeout",
    "internal",
    "cancelled",
    "interrupted",
    "nospace",  # the result could not be stored: the state folder's file system is full
    "lost",  # its worker went with its Ray cluster once too often (retry.MAX_REQUEUES)
    "result_lost",  # its rendered result vanished from the spool too often (MAX_RESULTS_LOST)
]


class WorkerTimings(BaseModel):
    """Seconds the worker spent on a job; the manifest's `timings` adds the daemon's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decode_seconds: float
    render_seconds: float
    encode_seconds: float
    worker_total_seconds: float


class WorkerVersions(BaseModel):
    """The versions that decide what a render looks like, in the worker that made it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    torch: str
    pillow: str


class ResultInfo(BaseModel):
    """What a worker knows about a finished render; kept in the job's spool folder beside the
    result (`result.json`), so a restart can publish it without rendering again."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    iterations: int
    stop_reason: StopReason
    losses: dict[str, float]
    scales: list[tuple[int, int]]
    scale_iterations: tuple[int, ...] = ()  # empty in results of older versions
    device: str
    output_size: tuple[int, int]
    input_size: tuple[int, int]
    input_format: str | None
    input_profile: str | None = None  # the photo's colour profile, converted from
    peak_memory_bytes: int
    batch_size: int = 1
    attempt: int = 1
    params: RenderParams
    versions: WorkerVersions
    timings: WorkerTimings
    node: str | None = None  # the Ray node that rendered it
    notes: tuple[str, ...] = ()  # the engine's, where the render differs from its params
    # (w, h) each style image was used at (the engine's); empty in results of older versions
    style_sizes: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Started:
    job_id: str
    worker: int
    device: str
    pid: int | None = None
    node: str | None = None
    batch_size: int = 1


@dataclass(frozen=True)
class Progress:
    job_id: str
    iteration: int
    total: int
    scale: int
    scales: int
    size: tuple[int, int]
    losses: dict[str, float]
    elapsed: float
    eta: float
    done: float  # share of the work done (`service.progress.Progress.done`)
    device: str
    preview: bytes | None = None  # an encoded JPEG of the current image (preview_every)


@dataclass(frozen=True)
class Done:
    job_id: str
    info: ResultInfo


@dataclass(frozen=True)
class Retrying:
    job_id: str
    attempt: int  # the attempt about to run
    kind: FailureKind
    error: str
    size: int  # the long side the retry renders at
    device: str | None  # set when the retry must run on this device (oom_fallback = "cpu")


@dataclass(frozen=True)
class Failed:
    job_id: str
    kind: FailureKind
    reason: str  # for people: what went wrong and what to change
    error: str = ""
    traceback: str | None = None


@dataclass(frozen=True)
class Requeued:
    """Back in the pool's queue through no fault of its own (its Ray cluster went away while it
    ran); it runs again, and the lost run does not count as an attempt (up to
    retry.MAX_REQUEUES times: later losses are failed attempts of kind "lost")."""

    job_id: str
    reason: str


@dataclass(frozen=True)
class Cancelled:
    """Stopped on request (shutdown): the job runs again at the next start."""

    job_id: str
    reason: str


PoolEvent = Started | Progress | Done | Retrying | Requeued | Failed | Cancelled
