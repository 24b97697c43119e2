"""The worker pool on a Ray cluster: the same queue, events and retry rules as `Pool`, with Ray
actors in place of worker processes, so more machines mean more throughput and nothing else.

One actor per cluster GPU (and `ray_cpu_actors` on CPUs) loads the network once and renders
one job at a time. Nothing needs a shared filesystem: the daemon reads a job's images from its
spool and sends the bytes; the actor sends back the encoded result and its manifest data, and
the daemon writes them into the spool exactly where a local worker would, so the rest of the
daemon cannot tell the backends apart. Progress comes back through one Ray queue. An actor that
dies (its process, or its node) fails its call with `RayActorError`: the job goes through the
same retry rules as a crashed local worker, and a fresh actor takes the dead one's place.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import structlog

from daemon.fsutil import atomic_write, atomic_write_json
from daemon.pool.local import CANCEL_WAIT, Pool, PoolError, PoolEvent, cpu_threads
from daemon.pool.worker import Sources, Task, WorkerSpec, classify, load_engine, render_bytes

if TYPE_CHECKING:
    from ray.actor import ActorHandle
    from ray.util.queue import Queue

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
        self.engine: Any = None
        self.cancelled: set[str] = set()
        self.lock = threading.Lock()

    def load(self) -> dict[str, Any]:
        """The actor's facts, or `{"error": ...}` when the network cannot load."""
        started = time.monotonic()
        try:
            self.engine = load_engine(self.spec)
        except Exception as exc:
            return {"error": str(exc) or repr(exc), "kind": classify(exc)}
        import ray

        return {
            "device": str(getattr(self.engine, "device", self.spec.device)),
            "seconds": time.monotonic() - started,
            "pid": os.getpid(),
            "node": ray.util.get_node_ip_address(),
        }

    def cancel(self, job_id: str) -> None:
        with self.lock:
            self.cancelled.add(job_id)

    def render(self, task: Task, sources: Sources) -> dict[str, Any]:
        """`{"kind": "done", "image": bytes, "info": {...}}` or `{"kind": "failed", ...}`."""
        key = (self.spec.worker_id, task.job_id, task.attempt)

        def report(data: dict[str, Any]) -> None:
            self.progress.put_nowait((*key, data))

        def cancel() -> bool:
            with self.lock:
                return task.job_id in self.cancelled

        try:
            image, info = render_bytes(self.engine, task, sources, report, cancel, self.spec)
        except Exception as exc:
            kind = classify(exc)
            return {"kind": "failed", "data": {"kind": kind, "error": str(exc) or repr(exc)}}
        finally:
            with self.lock:
                self.cancelled.discard(task.job_id)
        return {"kind": "done", "image": image, "info": info}


@dataclass
class _Actor:
    spec: WorkerSpec
    handle: ActorHandle
    call: Any  # the ObjectRef of `load` (starting) or `render` (busy)
    state: Literal["starting", "idle", "busy"] = "starting"
    task: Task | None = None
    task_started: float = 0.0
    cancel_sent: float | None = None
    info: dict[str, Any] | None = None


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise PoolError(MISSING_EXTRA) from None
    return ray


class RayPool(Pool):
    """`Pool`'s interface and retry rules over Ray actors; `devices` lists one entry per
    actor slot kind ("cuda" for the cluster's GPUs, "cpu" for `cpu_actors`)."""

    MEMBER = "Ray actor"

    def __init__(
        self,
        address: str,
        cpu_actors: int,
        **options: Any,
    ) -> None:
        """`options`: `Pool`'s keyword arguments (timeouts, retries, queue, engine settings);
        batching is not used on Ray (one job per actor call)."""
        super().__init__([], **options)
        self.address = address
        self.cpu_actors = cpu_actors
        self._actors: dict[int, _Actor] = {}
        self._progress: Queue | None = None
        self._ray: Any = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
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
        for device in self.devices:
            self._spawn(device)

    def _spawn(self, device: str) -> Any:
        ray = self._ray
        spec = self._spec(device)
        if device == "cpu" and self.address == "local":
            spec = replace(spec, threads=cpu_threads(self.cpu_actors))
        elif device == "cpu":
            spec = replace(spec, threads=None)
        else:  # Ray gives each GPU actor its own CUDA_VISIBLE_DEVICES: its GPU is cuda:0
            spec = replace(spec, device="cuda:0")
        resources = {"num_gpus": 1, "num_cpus": 1} if device != "cpu" else {"num_cpus": 1}
        handle = (
            ray.remote(RenderActor)
            .options(
                name=actor_name(os.getpid(), spec.worker_id),
                namespace=NAMESPACE,
                max_concurrency=2,
                max_restarts=0,
                **resources,
            )
            .remote(spec, self._progress)
        )
        actor = _Actor(spec=spec, handle=handle, call=handle.load.remote())
        self._actors[spec.worker_id] = actor
        log.info("pool.actor_started", worker=spec.worker_id, device=device)
        return actor

    def may_batch(self) -> bool:
        return False  # one job per actor call

    def _states(self) -> list[str]:
        return [actor.state for actor in self._actors.values()]

    def stop(self, timeout: float = 10.0) -> None:
        """Kill the actors (a job still on one stays in the spool) and leave the cluster."""
        self._stopping = True
        ray = self._ray
        if ray is None:
            return
        for actor in self._actors.values():
            ray.kill(actor.handle, no_restart=True)
        self._actors.clear()
        ray.shutdown()
        self._ray = None

    # -- queue -------------------------------------------------------------------------------

    @property
    def running(self) -> dict[str, tuple[int, str, float]]:
        return {
            a.task.job_id: (a.spec.worker_id, a.spec.device, a.task_started)
            for a in self._actors.values()
            if a.state == "busy" and a.task is not None
        }

    def cancel_running(self) -> None:
        now = time.monotonic()
        for actor in self._actors.values():
            if actor.state == "busy" and actor.task is not None and actor.cancel_sent is None:
                actor.handle.cancel.remote(actor.task.job_id)
                actor.cancel_sent = now

    # -- the loop ----------------------------------------------------------------------------

    def poll(self, timeout: float) -> list[PoolEvent]:
        events: list[PoolEvent] = []
        if self._ray is None:
            time.sleep(timeout)
            return events
        ray = self._ray
        self._dispatch(events)
        calls = {a.call: a for a in self._actors.values() if a.call is not None}
        if calls:
            ray.wait(list(calls), num_returns=1, timeout=timeout)
            ready, _ = ray.wait(list(calls), num_returns=len(calls), timeout=0)
        else:
            time.sleep(timeout)
            ready = []
        self._drain_progress(events)  # before results, so a job's progress precedes its end
        for ref in ready:
            self._finish_call(calls[ref], ref, events)
        self._police(events)
        self._respawn_due()
        self._dispatch(events)
        return events

    def _dispatch(self, events: list[PoolEvent]) -> None:
        if self._stopping:
            return
        for actor in sorted(self._actors.values(), key=lambda a: a.spec.worker_id):
            if actor.state != "idle" or not self._queue:
                continue
            task = self._take_for("cpu" if actor.spec.device == "cpu" else "cuda")
            if task is None:
                continue
            try:
                sources = Sources(
                    content=task.content.read_bytes(),
                    styles=tuple((ref.path.read_bytes(), ref.weight) for ref in task.styles),
                    init=task.init_image.read_bytes() if task.init_image else None,
                )
            except OSError as exc:
                self._job_failed(task, "input", {"error": f"cannot read the job: {exc}"}, events)
                continue
            actor.call = actor.handle.render.remote(task, sources)
            actor.state, actor.task = "busy", task
            actor.task_started, actor.cancel_sent = time.monotonic(), None
            info = actor.info or {}
            events.append(PoolEvent("started", task.job_id, task, {
                "worker": actor.spec.worker_id, "device": actor.spec.device,
                "pid": info.get("pid"), "node": info.get("node"),
            }))  # fmt: skip

    def _take_for(self, device: str) -> Task | None:
        """As `Pool`, with every GPU actor answering to "cuda" whatever its local index."""
        for index, task in enumerate(self._queue):
            if task.device is None or task.device.split(":")[0] == device:
                del self._queue[index]
                return task
        return None

    def _drain_progress(self, events: list[PoolEvent]) -> None:
        if self._progress is None:
            return
        count = self._progress.qsize()
        if not count:
            return
        for worker_id, job_id, attempt, data in self._progress.get_nowait_batch(count):
            actor = self._actors.get(worker_id)
            task = actor.task if actor else None
            if task is not None and task.job_id == job_id and task.attempt == attempt:
                events.append(PoolEvent("progress", job_id, task, data))

    def _finish_call(self, actor: _Actor, ref: Any, events: list[PoolEvent]) -> None:
        from ray.exceptions import RayActorError, RayError

        try:
            outcome = self._ray.get(ref)
        except RayActorError as exc:
            self._actor_lost(actor, events, f"the Ray actor died ({type(exc).__name__})", "crash")
            return
        except RayError as exc:
            self._actor_lost(actor, events, f"the Ray call failed: {exc}", "crash")
            return
        actor.call = None
        if actor.state == "starting" and "error" in outcome:
            self._actor_lost(actor, events, str(outcome["error"]), "crash")
            return
        if actor.state == "starting":
            actor.state, actor.info = "idle", outcome
            self._respawn_failures.pop(actor.spec.device, None)
            log.info("pool.worker_ready", worker=actor.spec.worker_id, **outcome)
            return
        task = actor.task
        actor.state, actor.task, actor.cancel_sent = "idle", None, None
        if task is None:
            return
        if outcome["kind"] == "done":
            try:
                atomic_write(task.result_path, outcome["image"])
                atomic_write_json(task.info_path, outcome["info"])
            except OSError as exc:
                self._job_failed(task, "internal", {"error": f"cannot write the result: {exc}"},
                                 events)  # fmt: skip
                return
            events.append(PoolEvent("done", task.job_id, task, outcome["info"]))
        else:
            data = outcome["data"]
            self._job_failed(task, str(data.get("kind")), data, events)

    def _actor_lost(self, actor: _Actor, events: list[PoolEvent], reason: str, kind: str) -> None:
        """An actor died or was killed: its job is cancelled, retried or failed as `kind`, and
        a fresh actor takes its place (with a growing delay while they die before loading)."""
        task, was_cancelled = actor.task, actor.cancel_sent is not None
        self._ray.kill(actor.handle, no_restart=True)
        del self._actors[actor.spec.worker_id]
        delay = 0.0
        device = "cpu" if actor.spec.device == "cpu" else "cuda"
        if actor.info is None:
            self._load_errors.append(f"{device}: {reason}")
            failures = self._respawn_failures.get(device, 0) + 1
            self._respawn_failures[device] = failures
            delay = min(60.0, 2.0**failures)
        log.warning("pool.worker_lost", worker=actor.spec.worker_id, reason=reason,
                    job_id=task.job_id if task else None)  # fmt: skip
        if not self._stopping:
            self._pending_respawn.append((time.monotonic() + delay, device))
        if task is None:
            return
        if was_cancelled:
            events.append(PoolEvent("cancelled", task.job_id, task, {"reason": reason}))
        else:
            self._job_failed(task, kind, {"error": reason}, events)

    def _police(self, events: list[PoolEvent]) -> None:
        now = time.monotonic()
        for actor in list(self._actors.values()):
            if actor.state != "busy" or actor.task is None:
                continue
            if actor.cancel_sent is not None and now - actor.cancel_sent > CANCEL_WAIT:
                reason, kind = "the actor did not stop when asked", "cancelled"
            elif now - actor.task_started > self.job_timeout:
                reason, kind = f"the job ran past job_timeout ({self.job_timeout:g} s)", "timeout"
            else:
                continue
            self._actor_lost(actor, events, reason, kind)
