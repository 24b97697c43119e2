"""Members as actors on a Ray cluster, so more machines mean more throughput and nothing else.

One actor per cluster GPU (and `ray_cpu_actors` on CPUs) loads the network once and renders
one job at a time. Nothing needs a shared filesystem: the daemon reads a job's images from its
folder and sends the bytes; the actor sends back the encoded result and its `ResultInfo`, and
this backend writes both into the job folder exactly where a local worker would, so the rest of
the daemon cannot tell the backends apart.

Ray itself runs in a child process, the driver (daemon.pool.ray_driver, handled through
daemon.pool.ray_process), never in the daemon. An actor that dies (its process, or its node)
is reported lost, as a local worker process would be, and its job is retried by the usual
rules. When the driver loses the cluster (the head, or the connection to it) every actor is
reported lost *with the cluster*: their jobs go back to the queue without counting as an
attempt, and the pool's replacements start a new driver, which connects again (with the pool's
growing back-off while it cannot).
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable

import structlog

from daemon.pool.api import ClusterUnavailable, Outage, PoolError, SetupError
from daemon.pool.messages import JobDone, JobFailed, JobStarted, MemberLost, Report
from daemon.pool.ray_process import DriverProcess
from daemon.pool.ray_protocol import (
    Cancel,
    Close,
    Connected,
    ConnectFailed,
    Finished,
    Joined,
    Lost,
    NodeInfo,
    Open,
    Remove,
    Reply,
    Run,
    Spawn,
)
from daemon.pool.render import (
    EngineSetup,
    Sources,
    WorkerSpec,
    classify,
    copy_unreadable,
    write_result,
)
from daemon.pool.task import Task
from daemon.versions import stylefold_build
from service.errors import ImageInputError

log = structlog.get_logger(__name__)

NAMESPACE = "stylefold"
VERSIONS_WAIT = 10.0  # doctor: seconds, after connecting, for every node to say its version
MISSING_EXTRA = "backend 'ray' needs the ray extra: pip install 'stylefold[ray]'"


def actor_name(daemon_pid: int, worker_id: int) -> str:
    """Named, so an operator can find the actor that runs a job (`ray list actors`)."""
    return f"stylefold-{daemon_pid}-{worker_id}"


def misfit(connected: Connected, cpu_actors: int, actor_cpus: int) -> str | None:
    """Why the cluster cannot hold the actors the settings ask for, with the fix; else None."""
    if connected.gpus + cpu_actors == 0:
        return (
            "the Ray cluster has no GPU and ray_cpu_actors is 0; "
            "add a GPU worker or set ray_cpu_actors"
        )
    largest = max((node.cpus for node in connected.nodes), default=0.0)
    if cpu_actors * actor_cpus > connected.cpus or (cpu_actors and actor_cpus > largest):
        return (
            f"ray_cpu_actors ({cpu_actors}) x ray_actor_cpus ({actor_cpus}) do not fit the Ray "
            f"cluster: {connected.cpus:g} CPUs, at most {largest:g} on one node; lower them or "
            "add nodes"
        )
    return None


def probe_cluster(address: str, timeout: float) -> Connected:
    """The cluster's nodes, resources and stylefold versions (for `stylefold doctor`), asked
    of a short-lived driver; ClusterUnavailable when it cannot be reached within `timeout`."""
    _require_ray()
    deadline = time.monotonic() + timeout
    opening = Open(address, NAMESPACE, deadline, local_cpus=1, probe_until=deadline + VERSIONS_WAIT)
    driver = DriverProcess(opening, timeout)
    try:
        while driver.connected is None:
            driver.replies(0.2)
            problem = driver.problem()
            if driver.connected is None and problem is not None:
                raise _not_joined(driver, address, timeout, problem)
        return driver.connected
    finally:
        driver.end(5.0 if driver.connected else 0.0)  # one that never joined will not leave


def _require_ray() -> None:
    """The daemon itself never imports ray; its driver process would fail to. A restart
    cannot install it (EX_CONFIG)."""
    if importlib.util.find_spec("ray") is None:
        raise SetupError(MISSING_EXTRA)


def local_cluster(cpu_actors: int, actor_cpus: int, gpus: int) -> Connected:
    """The private cluster that ray_address "local" starts: this machine, `gpus` GPUs."""
    node = NodeInfo("local", _local_cpus(cpu_actors, actor_cpus), gpus, stylefold_build())
    return Connected(stylefold_build(), (node,))


def _local_cpus(cpu_actors: int, actor_cpus: int) -> int:
    """This machine's CPUs, or more: Ray places no more actors than its CPUs allow."""
    return max(os.cpu_count() or 1, cpu_actors * actor_cpus)


def _not_joined(driver: DriverProcess, address: str, timeout: float, problem: str) -> PoolError:
    """SetupError for the wrong kind of port (it answered at once, as what it is: a setting to
    fix, which restarts cannot help), else ClusterUnavailable. A Ray client refused for its
    token only times out: the words name the token too (a Ray operator's trial: a wrong
    RAY_AUTH_TOKEN read as a cluster down, and the unit restarted), unless nothing took the
    connection at all (an operator's trial was told of tokens at "Connection refused")."""
    if driver.connect_failure == "wrong port":
        return SetupError(problem)
    reached = f"cannot reach the Ray cluster at {address!r} within {timeout:g} s "
    reached += f"(ray_connect_timeout): {problem}"
    if driver.connect_failure == "nothing listens":  # a Ray operator's trial: no fix was said
        return ClusterUnavailable(
            f"{reached}; start the cluster (on the head: `systemctl start ray-head`, or `ray "
            "start --head`) or correct ray_address (`stylefold doctor` checks it); under "
            "systemd the daemon is started again by itself"
        )
    token = (
        "check that RAY_AUTH_TOKEN in this daemon's environment is the head's"
        if os.environ.get("RAY_AUTH_MODE") == "token"
        else "set RAY_AUTH_MODE=token and the head's RAY_AUTH_TOKEN in this daemon's environment"
    )
    return ClusterUnavailable(
        f"{reached}; a cluster that asks for a token refuses a missing or wrong one this way "
        f"too: if yours does, {token}; if it does not, the head's Ray Client server may have "
        "failed to start this client's session (its ray_client_server logs on the head): "
        "try again"
    )


class RayActors:
    """`Members` (daemon.pool.core) as Ray actors; `devices` has one entry per actor, "cuda"
    for each of the cluster's GPUs and "cpu" for each of `cpu_actors`, which reserve
    `actor_cpus` CPUs each and run torch on as many threads."""

    kind = "Ray actor"
    batches = False  # one job per actor call

    def __init__(
        self,
        address: str,
        cpu_actors: int,
        setup: EngineSetup | None = None,
        *,
        actor_cpus: int = 1,
        connect_timeout: float = 30.0,
    ) -> None:
        self.address = address
        self.cpu_actors = cpu_actors
        self.actor_cpus = actor_cpus
        self.connect_timeout = connect_timeout
        self.setup = setup or EngineSetup()
        self.devices: list[str] = []
        self._driver: DriverProcess | None = None
        self._members: set[int] = set()  # the actors the current driver runs
        self._said: list[Report] = []  # reports this backend makes for its actors
        self.outage: Outage | None = None

    def open(self, tick: Callable[[], bool] = lambda: False) -> list[str]:
        """Connect within `connect_timeout` (ClusterUnavailable otherwise); no devices when
        `tick` says the daemon is stopping meanwhile."""
        _require_ray()
        driver = self._start()
        while driver.connected is None:
            if tick():
                self._end()
                return []
            for reply in driver.replies(0.1):
                self._reply(reply)
            problem = driver.problem()
            if problem is not None:
                self._end()
                raise _not_joined(driver, self.address, self.connect_timeout, problem)
        problem = misfit(driver.connected, self.cpu_actors, self.actor_cpus)
        if problem is not None:
            self._end()
            # A private cluster is this machine: waiting for a node to join cannot help.
            raise (SetupError if self.address == "local" else ClusterUnavailable)(problem)
        self.devices = ["cuda"] * driver.connected.gpus + ["cpu"] * self.cpu_actors
        return list(self.devices)

    def _start(self) -> DriverProcess:
        say = log.debug if self.outage is not None else log.info  # each try of an outage
        say("pool.ray_connecting", address=self.address, timeout=self.connect_timeout)
        deadline = time.monotonic() + self.connect_timeout
        opening = Open(
            self.address, NAMESPACE, deadline, _local_cpus(self.cpu_actors, self.actor_cpus)
        )
        self._driver = DriverProcess(opening, self.connect_timeout)
        return self._driver

    def spawn(self, worker_id: int, device: str) -> int | None:
        if device not in self.devices:
            self.devices.append(device)
        driver = self._driver or self._start()  # the cluster was lost: connect again
        if device == "cpu":
            spec = WorkerSpec(worker_id, "cpu", self.actor_cpus, self.setup)
            cpus, gpus = self.actor_cpus, 0
        else:  # Ray gives each GPU actor its own CUDA_VISIBLE_DEVICES: its GPU is cuda:0
            spec, cpus, gpus = WorkerSpec(worker_id, "cuda:0", None, self.setup), 1, 1
        self._members.add(worker_id)
        driver.send(Spawn(worker_id, actor_name(os.getpid(), worker_id), spec, cpus, gpus))
        return None  # known once it has loaded

    def send(self, worker_id: int, tasks: list[Task]) -> bool:
        if worker_id not in self._members or self._driver is None:
            return False
        (task,) = tasks
        try:
            sources = Sources.read(task)
        except ImageInputError as exc:
            told = copy_unreadable(exc, "a file of the job") or exc
            error = f"cannot read the job: {told}"
            self._said.append(
                JobFailed(worker_id, task.job_id, task.attempt, classify(told), error)
            )
            return True
        if not self._driver.send(Run(worker_id, task, sources)):
            return False  # the driver is gone: receive reports its actors lost
        self._said.append(JobStarted(worker_id, task.job_id, task.attempt, pid=None))
        return True

    def cancel(self, worker_id: int, tasks: list[Task]) -> None:
        if worker_id in self._members and self._driver is not None:
            for task in tasks:
                self._driver.send(Cancel(worker_id, task.job_id))

    def remove(self, worker_id: int) -> None:
        if worker_id in self._members and self._driver is not None:
            self._members.discard(worker_id)
            self._driver.send(Remove(worker_id))

    def receive(self, timeout: float) -> list[Report]:
        reports, self._said = self._said, []
        driver = self._driver
        if driver is None:
            if not reports:
                time.sleep(timeout)
            return reports
        for reply in driver.replies(0.0 if reports else timeout):
            reports += self._reply(reply)
        problem = driver.problem()
        if problem is not None:
            reports += self._lose(driver, problem)
        return reports

    def _reply(self, reply: Reply) -> list[Report]:
        if isinstance(reply, Connected):
            self.outage = None
            log.info(
                "pool.ray_connected",
                address=self.address,
                nodes=[node.name for node in reply.nodes],
                cpus=reply.cpus,
                gpus=reply.gpus,
            )
            return []
        if isinstance(reply, Joined | ConnectFailed | Lost):
            return []  # the driver's problem(), acted on in receive
        if isinstance(reply, Finished):
            return self._finished(reply)
        if isinstance(reply, MemberLost):
            self._members.discard(reply.worker_id)
        return [reply]

    def _finished(self, reply: Finished) -> list[Report]:
        outcome = reply.outcome
        if isinstance(outcome, JobFailed):
            return [outcome]
        task = outcome.task
        try:
            write_result(outcome)
        except OSError as exc:  # classified as a local worker's is: a full state folder waits
            error = f"cannot write the result: {exc}"
            kind = classify(exc)
            return [JobFailed(reply.worker_id, task.job_id, task.attempt, kind, error)]
        return [JobDone(reply.worker_id, task.job_id, task.attempt, outcome.info)]

    def _lose(self, driver: DriverProcess, problem: str) -> list[Report]:
        """The driver is gone or could not connect: its actors are lost with the cluster."""
        event = "pool.ray_lost" if driver.connected else "pool.ray_unreachable"
        log.error(event, address=self.address, error=problem, actors=len(self._members))
        self._end()
        reason = f"the Ray cluster was lost ({problem})"
        if driver.connected is None:
            reason = f"cannot reach the Ray cluster at {self.address!r}: {problem}"
        since = self.outage.since if self.outage is not None else time.time()
        self.outage = Outage(self.address, problem, since)
        lost: list[Report] = [
            MemberLost(worker_id, reason, with_cluster=True) for worker_id in sorted(self._members)
        ]
        self._members.clear()
        return lost

    def _end(self, timeout: float = 0.0) -> None:
        driver, self._driver = self._driver, None
        if driver is not None:
            driver.end(timeout)

    def close(self, timeout: float) -> None:
        """Kill the actors (a job still on one stays in the spool) and leave the cluster."""
        if self._driver is not None:
            self._driver.send(Close())
            self._end(timeout if self._driver.connected else 0.0)
        self._members.clear()
