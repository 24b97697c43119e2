"""What the daemon and its Ray driver process (daemon.pool.ray_driver) say to each other.

The driver is a child process so that Ray never runs inside the daemon: Ray ends a driver that
loses its cluster for a minute, installs signal handlers and writes to stdout. Plain values
only, like every message between processes here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from daemon.pool.messages import JobFailed, Report
from daemon.pool.render import Rendered, Sources, WorkerSpec
from daemon.pool.task import Task

# How the two failures the daemon acts on begin their words (their kind travels as
# `ConnectFailed.kind`).
NOTHING_ANSWERS = "nothing answers at"
WRONG_PORT = "ray_address names the wrong port:"


class NothingListens(ConnectionError):
    """No TCP connection to a Ray address at all (refused, an unknown host): no token was
    asked for, so the words do not name one."""


class WrongPort(ConnectionError):
    """The address is the other kind of Ray port than its form says: a setting to fix, which
    restarts cannot help, not an outage."""


# Why a driver could not connect, as far as the daemon acts on it ("other": a timeout, a
# refused token, anything Ray raised).
ConnectKind = Literal["nothing listens", "wrong port", "other"]


def connect_kind(error: BaseException) -> ConnectKind:
    if isinstance(error, WrongPort):
        return "wrong port"
    return "nothing listens" if isinstance(error, NothingListens) else "other"


# -- daemon -> driver --------------------------------------------------------------------------


@dataclass(frozen=True)
class Open:
    """The first message: which cluster, and how long the driver may take to reach it."""

    address: str
    namespace: str
    deadline: float  # time.monotonic() (one clock for every process) when the daemon gives up
    local_cpus: int  # CPUs of the private cluster that address "local" starts
    # `stylefold doctor`: each node's stylefold version by then (time.monotonic()), then leave.
    # The daemon does not ask: each actor says its node's version before it loads.
    probe_until: float | None = None


@dataclass(frozen=True)
class Spawn:
    worker_id: int
    name: str  # the actor's name, so an operator finds it (`ray list actors`)
    spec: WorkerSpec
    num_cpus: int
    num_gpus: int


@dataclass(frozen=True)
class Run:
    worker_id: int
    task: Task
    sources: Sources


@dataclass(frozen=True)
class Cancel:
    worker_id: int
    job_id: str


@dataclass(frozen=True)
class Remove:
    worker_id: int


@dataclass(frozen=True)
class Close:
    """Kill the actors and leave the cluster."""


Command = Open | Spawn | Run | Cancel | Remove | Close

# -- driver -> daemon --------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeInfo:
    name: str  # the Ray node name (`ray start --node-name`; by default its IP address)
    cpus: float
    gpus: float
    version: str | None  # stylefold installed there; None: not asked, or no answer


@dataclass(frozen=True)
class Connected:
    version: str  # stylefold's version in the driver, which is the daemon's
    nodes: tuple[NodeInfo, ...]  # the alive ones

    @property
    def cpus(self) -> float:
        return sum(node.cpus for node in self.nodes)

    @property
    def gpus(self) -> int:
        return int(sum(node.gpus for node in self.nodes))

    def strangers(self) -> list[NodeInfo]:
        """Nodes that run another stylefold version (their actors are refused)."""
        return [node for node in self.nodes if node.version not in (None, self.version)]

    def silent(self) -> list[NodeInfo]:
        """Nodes whose version is unknown: no answer in time, or no stylefold to answer."""
        return [node for node in self.nodes if node.version is None]


@dataclass(frozen=True)
class Joined:
    """`ray.init` returned: what is left is asking the nodes (doctor: their versions), so the
    connection's deadline is over (doctor waited ray_connect_timeout and that asking's time
    for an address that never answered: 26 s for 8 s in a re-test)."""


@dataclass(frozen=True)
class ConnectFailed:
    error: str
    kind: ConnectKind = "other"


@dataclass(frozen=True)
class Lost:
    """The driver lost its cluster (the head, or the connection to it) and exits."""

    reason: str


@dataclass(frozen=True)
class Finished:
    """An actor's render: the daemon writes the result into the job folder itself."""

    worker_id: int
    outcome: Rendered | JobFailed


Reply = Joined | Connected | ConnectFailed | Lost | Finished | Report
