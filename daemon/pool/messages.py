"""What the pool and its members (worker processes, Ray actors) say to each other.

Members report with `WorkerMessage`s; the pool answers them with `PoolEvent`s for the daemon
(daemon.pool.events). Every job message names the attempt, so a late word about an attempt that
has already ended (killed, timed out, retried elsewhere) is recognised and dropped. Nothing here
holds a tensor: unpickling one would make the daemon import torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.pool.events import FailureKind, Progress, ResultInfo
from daemon.pool.task import Task

# -- member -> pool ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerReady:
    """The network is loaded; the member takes jobs from now on."""

    worker_id: int
    device: str  # as the engine resolved it
    seconds: float  # the load took
    pid: int
    node: str | None = None  # the Ray node
    threads: int | None = None  # torch's CPU threads (intra-op)


@dataclass(frozen=True)
class WorkerLoadFailed:
    worker_id: int
    kind: FailureKind
    error: str


@dataclass(frozen=True)
class JobStarted:
    worker_id: int
    job_id: str
    attempt: int
    pid: int | None
    batch_size: int = 1


@dataclass(frozen=True)
class JobProgress:
    worker_id: int
    attempt: int
    progress: Progress  # passed on to the daemon as it is

    @property
    def job_id(self) -> str:
        return self.progress.job_id


@dataclass(frozen=True)
class JobDone:
    """Sent once `result.<ext>` and `result.json` are in the job folder."""

    worker_id: int
    job_id: str
    attempt: int
    info: ResultInfo


@dataclass(frozen=True)
class JobFailed:
    worker_id: int
    job_id: str
    attempt: int
    kind: FailureKind
    error: str
    traceback: str | None = None  # for an internal error
    batch_size: int = 1  # how many jobs were rendering together when it failed


WorkerMessage = WorkerReady | WorkerLoadFailed | JobStarted | JobProgress | JobDone | JobFailed


@dataclass(frozen=True)
class MemberLost:
    """Not from the member but about it (from its backend): it died, or could not be reached."""

    worker_id: int
    reason: str
    with_cluster: bool = False  # its whole Ray cluster went away: not its jobs' fault


Report = WorkerMessage | MemberLost

# -- pool -> worker process -------------------------------------------------------------------


@dataclass(frozen=True)
class RunBatch:
    tasks: tuple[Task, ...]


@dataclass(frozen=True)
class CancelBatch:
    """Stop the batch now rendering; each of its jobs then fails as `cancelled`."""


@dataclass(frozen=True)
class StopWorker:
    """Exit once idle."""


Command = RunBatch | CancelBatch | StopWorker
