"""The worker pool: tasks in, typed events out, over local worker processes or Ray actors.

The daemon needs only what is exported here; `make_pool(settings)` picks the backend.
"""

from daemon.pool.api import (
    ClusterUnavailable,
    PoolError,
    PoolPolicy,
    SetupError,
    WorkerPool,
    WorkerState,
)
from daemon.pool.events import (
    Cancelled,
    Done,
    Failed,
    FailureKind,
    PoolEvent,
    Progress,
    Requeued,
    ResultInfo,
    Retrying,
    Started,
)
from daemon.pool.factory import make_pool
from daemon.pool.task import RESULT_INFO, StyleRef, Task, result_file

__all__ = [
    "RESULT_INFO",
    "Cancelled",
    "ClusterUnavailable",
    "Done",
    "Failed",
    "FailureKind",
    "PoolError",
    "PoolEvent",
    "PoolPolicy",
    "Progress",
    "Requeued",
    "ResultInfo",
    "Retrying",
    "SetupError",
    "Started",
    "StyleRef",
    "Task",
    "WorkerPool",
    "WorkerState",
    "make_pool",
    "result_file",
]
