"""Publishing what the daemon knows, as one `StatusReport`: STATUS= for systemd,
`state/status.json` for `stylefold status` (and the web page), and the Prometheus gauges.

A change of any job's state is published at once (a short job would otherwise never show);
progress percentages only every STATUS_EVERY seconds. With a long queue a report costs more
(3,000 queued photos: the main process spent a fifth of a core on it, a bulk import's trial), so
reports are paced to take at most STATUS_SHARE of the daemon's time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import TYPE_CHECKING, Protocol

from daemon.fsutil import atomic_write, model_to_json
from daemon.jobs.states import State
from daemon.pool.api import LoadTrouble, Outage
from daemon.status import STATUS_FILE, from_store, listed
from daemon.status_model import Attention, DaemonInfo, ReloadInfo, StatusReport, WorkerItem
from daemon.supervision import host_attention, status_line
from daemon.versions import stylefold_version

if TYPE_CHECKING:
    from daemon.config import Settings
    from daemon.gpu_probe import DeviceProbe
    from daemon.intake.pairing import Intake
    from daemon.intake.watcher import Watcher
    from daemon.jobs.lifecycle import Lifecycle
    from daemon.jobs.store import Store
    from daemon.metrics import Metrics
    from daemon.pool import WorkerPool
    from daemon.sdnotify import Notifier

STATUS_EVERY = 2.0
STATUS_SHARE = 0.05


class Source(Protocol):
    """The daemon's parts a report is read from (`daemon.app.Daemon`), read afresh each time:
    a reload replaces the settings, the device probe the pool."""

    settings: Settings
    store: Store | None
    lifecycle: Lifecycle | None
    intake: Intake
    watcher: Watcher
    pool: WorkerPool
    notifier: Notifier
    metrics: Metrics
    gpu: DeviceProbe | None
    reloaded: ReloadInfo | None
    stopping: bool
    cuts_running_at: float | None


def _outage_attention(outage: Outage) -> Attention:
    # The driver's reason mostly says what `what` says, around the error itself (a Ray
    # operator's trial: "does not answer (the Ray cluster at ... stopped answering (...))").
    said = f"the Ray cluster at {outage.address} stopped answering ("
    where = outage.reason
    if where.startswith(said) and where.endswith(")"):
        where = where[len(said) : -1]
    return Attention(
        what=f"the Ray cluster at {outage.address} does not answer",
        where=where,
        since=outage.since,
        fix="jobs wait in the queue and the daemon connects again by itself, waiting up to a "
        "minute between tries; on the head: `ray status`, `systemctl status ray-head`",
    )


def _load_attention(trouble: LoadTrouble) -> Attention:
    return Attention(
        what=f"render workers failed to load the engine {trouble.failures} time(s)",
        where=trouble.reason,
        since=trouble.since,
        fix="the reason says what to mend (`stylefold doctor` checks the nodes' versions and "
        "the weights); replacements start by themselves, up to a minute apart, and jobs wait "
        "in the queue unless other workers take them; this clears a few minutes after the "
        "last failure",
    )


# A Ray actor still starting after this long has no room on the cluster: loading the network
# takes seconds.
ACTOR_WAIT = 120.0


def waiting_actors(workers: list[WorkerItem], now: float) -> Attention | None:
    """Ray actors that have waited ACTOR_WAIT for room on a cluster that answers: a node was
    gone, and `status` showed only "1 starting" (a Ray operator's trial: for a minute, with
    Ray's own `ray status` listing the demand)."""
    waiting = [
        w.started_at
        for w in workers
        if w.state == "starting" and w.started_at is not None and now - w.started_at > ACTOR_WAIT
    ]
    if not waiting:
        return None
    return Attention(
        what=f"{len(waiting)} render actor(s) have waited over {ACTOR_WAIT:g} s for room on the "
        "Ray cluster",
        where="a node gone (its raylet stopped, the machine down), or too few CPUs or GPUs on "
        "the nodes for ray_cpu_actors x ray_actor_cpus",
        since=min(waiting),
        fix="on the head, `ray status` shows the pending demand: start the node again "
        "(systemctl start ray-worker@...), or lower ray_cpu_actors; the actors that are ready "
        "render meanwhile",
    )


class Reporter:
    def __init__(self, source: Source) -> None:
        self.source = source
        self._last = 0.0
        self._next = 0.0  # no look before then (STATUS_SHARE)
        self._shape: tuple[object, ...] = ()

    def publish(self, force: bool = False) -> None:
        """Publish if anything changed (or STATUS_EVERY passed, or `force`)."""
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._publish(now, force)
        self._next = now + (time.monotonic() - now) / STATUS_SHARE

    def _publish(self, now: float, force: bool) -> None:
        daemon = self.source
        assert daemon.lifecycle is not None and daemon.store is not None
        items = daemon.lifecycle.items()
        inbox = daemon.intake.items(now, time.time())
        inbox += daemon.lifecycle.ready_items()
        inbox_states = tuple(i.state for i in inbox)  # settling -> still arriving shows at once
        shape = (tuple((i.job_id, i.state) for i in items), inbox_states, daemon.watcher.paused)
        if not force and shape == self._shape and now - self._last < STATUS_EVERY:
            return
        self._shape = shape
        self._last = now
        report = from_store(daemon.store, self.daemon_info(), live=items)
        report = report.model_copy(update={"inbox": inbox})
        report.attention[:0] = host_attention(report)
        # Limits reached (depth, tracked files, queue) and originals kept aside.
        report.attention += daemon.watcher.attention() + daemon.intake.attention()
        report.attention += daemon.lifecycle.attention()
        if (trouble := daemon.pool.load_trouble()) is not None:
            report.attention.append(_load_attention(trouble))
        if (outage := daemon.pool.outage) is not None:
            report.attention.append(_outage_attention(outage))
        elif daemon.settings.backend == "ray" and (
            waiting := waiting_actors(report.daemon.workers, time.time())
        ):
            report.attention.append(waiting)
        daemon.metrics.set_queue(len(items))
        blocked = len(report.in_state(State.BLOCKED))
        daemon.metrics.set_health(blocked=blocked, ready_workers=daemon.pool.ready_workers())
        report = listed(report)
        daemon.notifier.status(status_line(report))
        self._write(report)

    def starting(self, phase: str) -> None:
        """While the daemon is not ready yet: what it waits for (an operator's Ray trial saw
        nothing of a daemon waiting for its cluster), rewritten now and then as it waits."""
        now = time.monotonic()
        if now - self._last < STATUS_EVERY * 5:
            return
        self._last = now
        info = self.daemon_info().model_copy(update={"starting": phase})
        self._write(StatusReport(daemon=info))

    def _write(self, report: StatusReport) -> None:
        with contextlib.suppress(OSError):
            data = model_to_json(report, indent=1).encode()
            # Under the state folder as it is, never made again: one moved away while the
            # daemon ran was made anew, empty, by the last report on its way out (an
            # operator's trial then moved the real one back into it).
            state = self.source.settings.state
            atomic_write(state / STATUS_FILE, data, durable=False, under=state)

    def daemon_info(self) -> DaemonInfo:
        daemon = self.source
        workers = [WorkerItem(**dataclasses.asdict(w)) for w in daemon.pool.workers()]
        return DaemonInfo(
            running=True,
            pid=os.getpid(),
            version=stylefold_version(),
            updated_at=time.time(),
            watch_mode=daemon.watcher.mode,
            watch_reason=daemon.watcher.mode_reason or None,
            paused=daemon.watcher.pause_reason if daemon.watcher.paused else None,
            backend=daemon.settings.backend,
            workers=workers,
            devices=list(daemon.pool.devices),
            gpu_fallback=daemon.gpu.problem if daemon.gpu else None,
            reload=daemon.reloaded,
            stopping=daemon.stopping,
            cuts_running_at=daemon.cuts_running_at,
        )
