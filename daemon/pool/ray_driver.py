"""The Ray driver: a child process of the daemon that joins the cluster, runs the render actors
and passes on what they say (daemon.pool.ray_protocol).

Ray lives here, never in the daemon, because of what a driver does when its cluster goes: Ray
ends the process a minute after the head stops answering, a Ray Client driver whose connection
dropped starts a brand-new local cluster on its next call, and `ray.init` installs its own
signal handlers and writes to stdout. So this process ignores signals (the daemon ends it),
writes only into a pipe the daemon turns into log lines, never connects implicitly
(RAY_ENABLE_AUTO_CONNECT=0), and when the cluster stops answering it says `Lost` and exits: the
daemon then puts the running jobs back in its queue and starts another driver to reconnect.
It joins from / (daemon.pool.ray_connect.DRIVER_CWD): Ray puts a driver's working directory
first on every worker's module path, where it would shadow the stylefold a node has installed.
Progress stays on each actor until this driver takes it, so no single actor carries it for all.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from typing import Any, Literal

from daemon.pool.messages import MemberLost, WorkerLoadFailed
from daemon.pool.ray_actor import RenderActor
from daemon.pool.ray_connect import connect, describe, ignore_signals, probe
from daemon.pool.ray_protocol import (
    Cancel,
    Close,
    Command,
    ConnectFailed,
    Finished,
    Joined,
    Lost,
    Open,
    Remove,
    Reply,
    Run,
    Spawn,
    connect_kind,
)
from daemon.pool.render import WorkerSpec
from daemon.versions import stylefold_build

TICK = 0.1  # seconds one turn waits for the actors or the daemon
PROGRESS_EVERY = 0.5  # seconds between two progress takes from a rendering actor ...
# ... and from an idle one, which says whether it is alive: an actor whose node died while it
# was idle was otherwise found dead only when a job was sent to it, and that job was charged
# an attempt, with advice about memory (a Ray operator's trial: a photo failed after two
# dead actors, never rendered; status counted both as idle).
ALIVE_EVERY = 2.0
HEALTH_EVERY = 1.0  # seconds between two probes of the cluster's address
HEALTH_FAILURES = 3  # failed probes in a row that mean the cluster is gone
# Seconds a rendering actor's death waits before it is reported, charging its job an attempt:
# `ray stop` on the head kills its raylet, and so the actors there, about 2 s before the
# cluster's address stops answering (a Ray operator's trial), and a job lost with its cluster
# is requeued free. Other deaths charge nothing, and wait not: a job could be sent meanwhile.
LOSS_GRACE = 5.0
ACTOR_CONCURRENCY = 4  # identify or load or render, take_progress, cancel
STYLE_REFS = 32  # style images held in the cluster's object store (the latest used) ...
STYLE_REF_BYTES = 256 * 2**20  # ... and at most this many bytes of them (the latest is kept)


class Link:
    """This end of the daemon's pipe. Commands are read on a thread, so a daemon sending a
    large job never waits on a busy driver; replies are sent under a lock (the health thread
    sends too). None in `commands`: the daemon is gone."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.commands: queue.SimpleQueue[Command | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        threading.Thread(target=self._read, name="stylefold-commands", daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                self.commands.put(self.conn.recv())
        except (EOFError, OSError):
            self.commands.put(None)

    def send(self, reply: Reply) -> None:
        with self._lock, contextlib.suppress(OSError):  # OSError: the daemon is gone
            self.conn.send(reply)

    def lose(self, reason: str) -> None:
        """The cluster is gone: say so and exit at once (Ray may hang in any call now)."""
        self.send(Lost(reason))
        os._exit(0)


class StyleRefs:
    """Each style image put in the cluster's object store once and passed to renders by
    reference. Sent with every job, a style (145-315 KB beside a 3 KB photo in a soak) crossed
    the Ray Client link again for each: about 230 MB per 1,000 jobs. The latest `size` used are
    held here, as many as `size` and `budget` bytes allow (a library of large paintings would
    otherwise pin gigabytes of the head's object store); Ray frees one let go once no render
    still reads it. A driver lives for one connection, so its references never outlive their
    cluster."""

    def __init__(
        self, put: Callable[[bytes], Any], size: int = STYLE_REFS, budget: int = STYLE_REF_BYTES
    ) -> None:
        self._put = put
        self._size = size
        self._budget = budget
        self._refs: OrderedDict[bytes, tuple[Any, int]] = OrderedDict()
        self._held = 0  # bytes

    def __call__(self, data: bytes) -> Any:
        key = hashlib.blake2b(data, digest_size=16).digest()
        if key not in self._refs:
            self._refs[key] = (self._put(data), len(data))
            self._held += len(data)
        self._refs.move_to_end(key)
        while len(self._refs) > 1 and (len(self._refs) > self._size or self._held > self._budget):
            self._held -= self._refs.popitem(last=False)[1][1]
        return self._refs[key][0]


@dataclass
class _Actor:
    worker_id: int
    handle: Any
    spec: WorkerSpec
    stage: Literal["identify", "load", "idle", "render"] = "identify"
    call: Any = None  # the ObjectRef of identify, load or render while one runs
    progress: Any = None  # the ObjectRef of take_progress while one runs (idle ones too)
    polled: float = field(default_factory=time.monotonic)


class Driver:
    """The actors on a connected cluster, driven by the daemon's commands."""

    def __init__(self, ray: Any, link: Link, target: tuple[str, int], address: str) -> None:
        self.ray = ray
        self.link = link
        self.target = target
        self.address = address
        self.version = stylefold_build()
        self.actors: dict[int, _Actor] = {}
        self.dead: list[tuple[float, MemberLost]] = []  # not reported before LOSS_GRACE
        self.actor_class = ray.remote(RenderActor)
        self.styles = StyleRefs(ray.put)

    def run(self) -> None:
        """Until the daemon says Close (or is gone)."""
        threading.Thread(target=self._watch, name="stylefold-health", daemon=True).start()
        while True:
            try:
                if not self._commands():
                    return
                self._turn()
            except Exception as exc:  # anything Ray raises here means this driver is unusable
                self.link.lose(f"the Ray driver failed: {type(exc).__name__}: {exc}")

    def _watch(self) -> None:
        failures = 0
        while True:
            time.sleep(HEALTH_EVERY)
            error = probe(self.target)
            failures = failures + 1 if error else 0
            if failures >= HEALTH_FAILURES:
                self.link.lose(f"the Ray cluster at {self.address} stopped answering ({error})")

    def _commands(self) -> bool:
        """Apply what the daemon sent; False when it is time to leave."""
        busy = any(actor.call is not None for actor in self.actors.values())
        try:
            command = self.link.commands.get(timeout=0.0 if busy else TICK)
        except queue.Empty:
            return True
        while True:
            if command is None or isinstance(command, Close):
                self.leave()
                return False
            self._apply(command)
            try:
                command = self.link.commands.get_nowait()
            except queue.Empty:
                return True

    def _apply(self, command: Command) -> None:
        if isinstance(command, Spawn):
            self._spawn(command)
            return
        actor = self.actors.get(getattr(command, "worker_id", -1))
        if actor is None:
            return  # about an actor already gone (its loss has been reported)
        if isinstance(command, Run):
            actor.stage, actor.polled = "render", time.monotonic()
            sources, styles = command.sources, []
            for data, _ in sources.styles:
                assert isinstance(data, bytes), "an actor cannot read the daemon's files"
                styles.append(self.styles(data))
            # Top-level arguments, so that Ray hands the actor the bytes, not the references.
            bare = replace(sources, styles=())
            actor.call = actor.handle.render.remote(command.task, bare, *styles)
        elif isinstance(command, Cancel):
            actor.handle.cancel.remote(command.job_id)
        elif isinstance(command, Remove):
            self._kill(self.actors.pop(command.worker_id))

    def _spawn(self, command: Spawn) -> None:
        handle = self.actor_class.options(
            name=command.name,
            max_concurrency=ACTOR_CONCURRENCY,
            max_restarts=0,
            num_cpus=command.num_cpus,
            num_gpus=command.num_gpus,
        ).remote()
        actor = _Actor(command.worker_id, handle, command.spec)
        actor.call = handle.identify.remote()
        self.actors[command.worker_id] = actor

    def _turn(self) -> None:
        now = time.monotonic()
        self._report_dead(now)
        for actor in self.actors.values():
            every = PROGRESS_EVERY if actor.stage == "render" else ALIVE_EVERY
            due = now - actor.polled >= every
            if actor.stage in ("render", "idle") and actor.progress is None and due:
                actor.progress, actor.polled = actor.handle.take_progress.remote(), now
        owners: dict[Any, tuple[_Actor, bool]] = {}
        for actor in self.actors.values():
            if actor.progress is not None:
                owners[actor.progress] = (actor, True)
            if actor.call is not None:
                owners[actor.call] = (actor, False)
        if not owners:
            return
        ready, _ = self.ray.wait(list(owners), num_returns=len(owners), timeout=TICK)
        ready.sort(key=lambda ref: not owners[ref][1])  # a job's progress before its end
        for ref in ready:
            actor, is_progress = owners[ref]
            if self.actors.get(actor.worker_id) is not actor:
                continue  # lost meanwhile
            if is_progress:
                self._progress(actor)
            else:
                self._answered(actor)

    def _progress(self, actor: _Actor, timeout: float = 0.0) -> None:
        from ray.exceptions import RayActorError, RayError

        ref, actor.progress = actor.progress, None
        try:
            reports = self.ray.get(ref, timeout=timeout)
        except RayError as exc:
            if actor.stage == "idle" and isinstance(exc, RayActorError):
                self._failed(actor, exc)  # no call of its own would say so
            return  # a rendering actor's call says what happened to it
        for report in reports:
            self.link.send(report)

    def _answered(self, actor: _Actor) -> None:
        from ray.exceptions import RayError

        ref, actor.call = actor.call, None
        try:
            value = self.ray.get(ref)
        except RayError as exc:
            self._failed(actor, exc)
            return
        if actor.stage == "identify":
            # Plain strings from whatever stylefold the node has; anything else is not ours.
            ours = isinstance(value, tuple) and len(value) == 2
            version, node = value if ours else ("unknown", "?")
            if version != self.version:
                error = (
                    f"the Ray node {node} runs stylefold {version}, the daemon {self.version}; "
                    "install the same version on every node "
                    "(from a checkout, the same code)"
                )
                self._drop(actor, WorkerLoadFailed(actor.worker_id, "engine", error), error)
                return
            actor.stage, actor.call = "load", actor.handle.load.remote(actor.spec)
        elif actor.stage == "load":
            if isinstance(value, WorkerLoadFailed):
                self._drop(actor, value, value.error)
                return
            actor.stage = "idle"
            self.link.send(value)
        else:
            outcome, progress = value
            if actor.progress is not None:  # taken before the end: it comes first
                self._progress(actor, timeout=5.0)
            for report in progress:
                self.link.send(report)
            actor.stage = "idle"
            self.link.send(Finished(actor.worker_id, outcome))

    def _failed(self, actor: _Actor, exc: Exception) -> None:
        from ray.exceptions import RayActorError

        if isinstance(exc, RayActorError):
            reason = f"the Ray actor died ({type(exc).__name__})"
        else:
            reason = f"the Ray call failed: {str(exc).splitlines()[0] if str(exc) else exc!r}"
        del self.actors[actor.worker_id]
        grace = LOSS_GRACE if actor.stage == "render" else 0.0
        self.dead.append((time.monotonic() + grace, MemberLost(actor.worker_id, reason)))

    def _report_dead(self, now: float) -> None:
        """The deaths whose grace is over, unless the cluster went meanwhile (then Lost)."""
        due = [lost for until, lost in self.dead if until <= now]
        if not due:
            return
        error = probe(self.target)
        if error is not None:
            self.link.lose(f"the Ray cluster at {self.address} stopped answering ({error})")
        self.dead = [(until, lost) for until, lost in self.dead if until > now]
        for lost in due:
            self.link.send(lost)

    def _drop(self, actor: _Actor, said: WorkerLoadFailed, reason: str) -> None:
        del self.actors[actor.worker_id]
        self._kill(actor)
        self.link.send(said)
        self.link.send(MemberLost(actor.worker_id, reason))

    def _kill(self, actor: _Actor) -> None:
        with contextlib.suppress(Exception):  # already dead, or its cluster is going
            self.ray.kill(actor.handle, no_restart=True)

    def leave(self) -> None:
        """Kill the actors and disconnect; never connects anew (no implicit ray.init)."""
        if not self.ray.is_initialized():
            return
        for actor in self.actors.values():
            self._kill(actor)
        self.actors.clear()
        with contextlib.suppress(Exception):  # leaving a cluster that is gone
            self.ray.shutdown()


def main(conn: Connection, output: Connection) -> None:
    """The process's entry point: its own session (the daemon ends it with everything Ray
    started), its output into `output`, then connect and drive until told to stop."""
    os.setsid()
    ignore_signals()
    os.dup2(output.fileno(), 1)
    os.dup2(output.fileno(), 2)
    output.close()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    os.environ["RAY_ENABLE_AUTO_CONNECT"] = "0"  # read when ray is imported
    link = Link(conn)
    opening = link.commands.get()
    if not isinstance(opening, Open):
        return
    # 0.5 s early, so the daemon hears why before it gives up.
    until = None if opening.probe_until is None else opening.probe_until - 0.5
    try:
        ray, target = connect(opening, opening.deadline - 0.5)
        link.send(Joined())
        connected = describe(ray, stylefold_build(), until)
    except Exception as exc:  # ConnectionError, RuntimeError, ...: all mean "no cluster"
        link.send(ConnectFailed(str(exc) or type(exc).__name__, connect_kind(exc)))
        return
    link.send(connected)
    driver = Driver(ray, link, target, opening.address)
    if opening.probe_until is not None:
        driver.leave()
        return
    driver.run()
