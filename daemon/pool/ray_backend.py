"""Members as actors on a Ray cluster, so more machines mean more throughput and nothing else.

One actor per cluster GPU (and `ray_cpu_actors` on CPUs) loads the network once and renders
one job at a time. Nothing needs a shared filesystem: the daemon reads a job's images from its
folder and sends the bytes; the actor sends back the encoded result and its `ResultInfo`, and
this backend writes both into the job folder exactly where a local worker would, so the rest of
the daemon cannot tell the backends apart. Progress comes back through one Ray queue. An actor
that dies (its process, or its node) fails its call with `RayActorError` and is reported lost,
as a local worker process would be.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from daemon.pool.api import PoolError
from daemon.pool.events import Progress
from daemon.pool.messages import (
    JobDone,
    JobFailed,
    JobProgress,
    JobStarted,
    MemberLost,
    Report,
    WorkerLoadFailed,
    WorkerReady,
)
from daemon.pool.render import (
    EngineSetup,
    Rendered,
    Sources,
    WorkerSpec,
    cpu_threads,
    decode,
    describe,
    load_engine,
    render,
    write_result,
)
from daemon.pool.task import Task

if TYPE_CHECKING:
    from ray.actor import ActorHandle
    from ray.util.queue import Queue

    from service.engine import Engine

log = structlog.get_logger(__name__)

NAMESPACE = "stylefold"
MISSING_EXTRA = "backend 'ray' needs the ray extra: pip install 'stylefold[ray]'"


def actor_name(daemon_pid: int, worker_id: int) -> str:
    """Named, so an operator (or a test) can find the actor that runs a job in the log."""
    return f"stylefold-{daemon_pid}-{worker_id}"


class RenderActor:
    """Runs inside a Ray worker process: one engine, one job at a time. Threaded (the render
    holds one thread), so `cancel` reaches it while it renders."""

    def __init__(self, spec: WorkerSpec, progress: Queue) -> None:
        self.spec = spec
        self.progress = progress
        self.engine: Engine | None = None
        self.node: str | None = None
        self.cancelled: set[str] = set()
        self.lock = threading.Lock()

    def load(self) -> WorkerReady | WorkerLoadFailed:
        import ray

        started = time.monotonic()
        try:
            self.engine = load_engine(self.spec)
        except Exception as exc:
            kind, error, _ = describe(exc)
            return WorkerLoadFailed(self.spec.worker_id, kind, error)
        self.node = ray.util.get_node_ip_address()
        seconds = time.monotonic() - started
        device = str(self.engine.device)
        return WorkerReady(self.spec.worker_id, device, seconds, os.getpid(), self.node)

    def cancel(self, job_id: str) -> None:
        with self.lock:
            self.cancelled.add(job_id)

    def render(self, task: Task, sources: Sources) -> Rendered | JobFailed:
        assert self.engine is not None, "render before load"

        def report(progress: Progress) -> None:
            self.progress.put_nowait(JobProgress(self.spec.worker_id, task.attempt, progress))

        def cancel() -> bool:
            with self.lock:
                return task.job_id in self.cancelled

        try:
            job = decode(task, sources)
            (rendered,) = render(self.engine, [job], report, cancel, self.spec, self.node)
        except Exception as exc:
            kind, error, trace = describe(exc)
            return JobFailed(self.spec.worker_id, task.job_id, task.attempt, kind, error, trace)
        finally:
            with self.lock:
                self.cancelled.discard(task.job_id)
        return rendered


@dataclass
class _Actor:
    handle: ActorHandle
    call: Any  # the ObjectRef of `load` or `render` while one runs, else None


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise PoolError(MISSING_EXTRA) from None
    return ray


class RayActors:
    """`Members` (daemon.pool.core) as Ray actors; `devices` has one entry per actor, "cuda"
    for each of the cluster's GPUs and "cpu" for each of `cpu_actors`."""

    kind = "Ray actor"
    batches = False  # one job per actor call

    def __init__(self, address: str, cpu_actors: int, setup: EngineSetup | None = None) -> None:
        self.address = address
        self.cpu_actors = cpu_actors
        self.setup = setup or EngineSetup()
        self.devices: list[str] = []
        self._actors: dict[int, _Actor] = {}
        self._said: list[Report] = []  # reports this backend makes for its actors
        self._progress: Queue | None = None
        self._ray: Any = None

    def open(self) -> list[str]:
        ray = self._ray = _import_ray()
        from ray.util.queue import Queue

        options: dict[str, Any] = {"namespace": NAMESPACE}
        if not self.address.startswith("ray://"):  # Ray Client takes no log_to_driver
            options["log_to_driver"] = False  # actors' output would break the JSON log
        if self.address == "local":
            options.update(num_cpus=max(os.cpu_count() or 1, self.cpu_actors))
            options.update(include_dashboard=False)
        else:
            options["address"] = self.address
        # ray.init installs its own SIGTERM handler (exit at once) and a C++ one that logs a
        # stack: the daemon's handlers, which drain, are put back.
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            ray.init(**options)
        except Exception as exc:  # ConnectionError, RuntimeError, ...: all mean "no cluster"
            raise PoolError(f"cannot reach the Ray cluster at {self.address!r}: {exc}") from exc
        finally:
            for sig, handler in handlers.items():
                if handler is not None:
                    signal.signal(sig, handler)
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if gpus + self.cpu_actors == 0:
            raise PoolError(
                "the Ray cluster has no GPU and ray_cpu_actors is 0; "
                "add a GPU worker or set ray_cpu_actors"
            )
        if self.cpu_actors > resources.get("CPU", 0):
            raise PoolError(
                f"ray_cpu_actors is {self.cpu_actors} but the Ray cluster has "
                f"{resources.get('CPU', 0):g} CPUs; lower ray_cpu_actors or add nodes"
            )
        self._progress = Queue(actor_options={"num_cpus": 0, "namespace": NAMESPACE})
        self.devices = ["cuda"] * gpus + ["cpu"] * self.cpu_actors
        return list(self.devices)

    def spawn(self, worker_id: int, device: str) -> int | None:
        if device not in self.devices:
            self.devices.append(device)
        if device == "cpu":  # the actors share a machine's cores only on a local cluster
            threads = cpu_threads(self.cpu_actors) if self.address == "local" else None
            spec = WorkerSpec(worker_id, "cpu", threads, self.setup)
        else:  # Ray gives each GPU actor its own CUDA_VISIBLE_DEVICES: its GPU is cuda:0
            spec = WorkerSpec(worker_id, "cuda:0", None, self.setup)
        resources = {"num_gpus": 1, "num_cpus": 1} if device != "cpu" else {"num_cpus": 1}
        handle = (
            self._ray.remote(RenderActor)
            .options(
                name=actor_name(os.getpid(), worker_id),
                namespace=NAMESPACE,
                max_concurrency=2,
                max_restarts=0,
                **resources,
            )
            .remote(spec, self._progress)
        )
        self._actors[worker_id] = _Actor(handle, handle.load.remote())
        return None  # known once it has loaded

    def send(self, worker_id: int, tasks: list[Task]) -> bool:
        actor = self._actors.get(worker_id)
        if actor is None:
            return False
        (task,) = tasks
        try:
            sources = Sources.read(task)
        except OSError as exc:
            error = f"cannot read the job: {exc}"
            self._said.append(JobFailed(worker_id, task.job_id, task.attempt, "input", error))
            return True
        actor.call = actor.handle.render.remote(task, sources)
        self._said.append(JobStarted(worker_id, task.job_id, task.attempt, pid=None))
        return True

    def cancel(self, worker_id: int, tasks: list[Task]) -> None:
        actor = self._actors.get(worker_id)
        if actor is None:
            return
        for task in tasks:
            actor.handle.cancel.remote(task.job_id)

    def remove(self, worker_id: int) -> None:
        actor = self._actors.pop(worker_id, None)
        if actor is not None and self._ray is not None:
            self._ray.kill(actor.handle, no_restart=True)

    def receive(self, timeout: float) -> list[Report]:
        reports, self._said = self._said, []
        calls = {a.call: worker_id for worker_id, a in self._actors.items() if a.call is not None}
        if not calls:
            if not reports:
                time.sleep(timeout)
            return reports
        ray = self._ray
        if not reports:
            ray.wait(list(calls), num_returns=1, timeout=timeout)
        ready, _ = ray.wait(list(calls), num_returns=len(calls), timeout=0)
        reports += self._progress_reports()  # before results: a job's progress precedes its end
        for ref in ready:
            reports += self._outcome(calls[ref], ref)
        return reports

    def _progress_reports(self) -> list[Report]:
        if self._progress is None:
            return []
        count = self._progress.qsize()
        return list(self._progress.get_nowait_batch(count)) if count else []

    def _outcome(self, worker_id: int, ref: Any) -> list[Report]:
        from ray.exceptions import RayActorError, RayError

        self._actors[worker_id].call = None
        try:
            outcome = self._ray.get(ref)
        except RayActorError as exc:
            return [MemberLost(worker_id, f"the Ray actor died ({type(exc).__name__})")]
        except RayError as exc:
            return [MemberLost(worker_id, f"the Ray call failed: {exc}")]
        if isinstance(outcome, WorkerLoadFailed):
            return [outcome, MemberLost(worker_id, outcome.error)]
        if not isinstance(outcome, Rendered):
            return [outcome]  # WorkerReady, JobFailed
        task = outcome.task
        try:
            write_result(outcome)
        except OSError as exc:
            error = f"cannot write the result: {exc}"
            return [JobFailed(worker_id, task.job_id, task.attempt, "internal", error)]
        return [JobDone(worker_id, task.job_id, task.attempt, outcome.info)]

    def close(self, timeout: float) -> None:
        """Kill the actors (a job still on one stays in the spool) and leave the cluster."""
        if self._ray is None:
            return
        for worker_id in list(self._actors):
            self.remove(worker_id)
        self._ray.shutdown()
        self._ray = None
