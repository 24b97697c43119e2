"""The daemon: wiring, signals, the systemd watchdog and the one loop that drives everything.

Threads only feed it (the watcher puts paths on a queue; signal handlers set flags), so every
decision happens in the loop, in order: observe paths -> settle and pair (`intake.pairing`) ->
claim, submit, publish and release (`jobs.lifecycle`) -> worker news (`pool`). Durability lives
in the state database (`jobs.store`); this loop may be killed at any instant.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from daemon.config import ConfigError, Settings, load_settings, restart_only_changes
from daemon.fsutil import atomic_write, model_to_json, remove_temporaries
from daemon.intake.ignore import IgnoreRules
from daemon.intake.pairing import Arrival, Intake
from daemon.intake.styles import StyleLibrary
from daemon.intake.watcher import Watcher, WatchError
from daemon.jobs.lifecycle import Lifecycle
from daemon.jobs.store import Store, StoreError
from daemon.lock import LockError, StateLock
from daemon.logs import setup_logging
from daemon.metrics import Metrics, MetricsError
from daemon.pool import ClusterUnavailable, PoolError, PoolPolicy, make_pool
from daemon.pool.events import Started
from daemon.sdnotify import Notifier
from daemon.status import STATUS_FILE, DaemonInfo, StatusReport, WorkerItem, from_store
from daemon.versions import stylefold_version

log = structlog.get_logger("stylefold.daemon")

TICK = 0.2  # seconds the loop waits for worker messages; bounds the reaction time
STATUS_EVERY = 2.0
# Seconds before writing into an unwritable outbox is tried again; the environment variable is
# a test hook (the reliability suite shortens it), not a setting.
PUBLISH_RETRY = float(os.environ.get("STYLEFOLD_TEST_PUBLISH_RETRY", "30"))
FEED_BUDGET = 0.5  # seconds of claiming per loop turn
READY_TIMEOUT = 600.0
CANCEL_GRACE = 15.0  # after the grace period: time for workers to acknowledge `cancel`


class Daemon:
    """`run()` until SIGTERM/SIGINT (or, with once=True, until the inbox has been worked off)."""

    def __init__(
        self,
        settings: Settings,
        *,
        config_path: Path | None = None,
        overrides: dict[str, Any] | None = None,
        once: bool = False,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.overrides = overrides or {}
        self.once = once
        self.notifier = Notifier.from_env()
        self.metrics = Metrics.disabled()
        self.lock = StateLock(settings.state)
        self.library = StyleLibrary.from_settings(settings)
        self.rules = IgnoreRules.from_settings(settings)
        self.intake = Intake.from_settings(settings, self.rules)
        self.paths: queue.SimpleQueue[Path | None] = queue.SimpleQueue()  # None: scan finished
        self.watcher = Watcher.from_settings(
            settings, self.rules, self.paths.put, on_scan=lambda: self.paths.put(None)
        )
        self.pool = make_pool(settings)
        self.store: Store | None = None
        self.lifecycle: Lifecycle | None = None
        self._signals = 0
        self._reload = False
        self._last_activity = time.monotonic()
        self._last_status = 0.0
        self._last_beat = 0.0
        self._status_shape: tuple[object, ...] = ()

    # -- life cycle -------------------------------------------------------------------------

    def run(self) -> int:
        try:
            self.lock.acquire()
        except LockError as exc:
            log.error("daemon.locked", error=str(exc))
            return 1
        try:
            return self._run_locked()
        finally:
            self.lock.release()

    def _run_locked(self) -> int:
        self._install_signals()
        removed = remove_temporaries(self.settings.outbox)
        if removed:
            log.info("daemon.temporaries_removed", count=removed)
        for problem in self.library.problems:
            log.warning("styles.problem", path=str(problem.path), reason=problem.reason)
        try:
            self.store = Store(self.settings.state)
            if self.settings.metrics_port is not None:
                self.metrics = Metrics.start(self.settings.metrics_host, self.settings.metrics_port)
            self.notifier.status("loading the network")
            self.pool.start(tick=self._starting_tick)
            self.pool.wait_ready(READY_TIMEOUT, tick=self._starting_tick)
            if self._signals:
                self.pool.stop()
                return 0
            self.watcher.start()
        except (PoolError, WatchError, MetricsError, StoreError) as exc:
            log.error("daemon.start_failed", error=str(exc))
            self.pool.stop()
            return os.EX_TEMPFAIL if isinstance(exc, ClusterUnavailable) else 1
        jobs = self.lifecycle = Lifecycle(
            self.settings, self.store, self.pool, self.library, self.metrics, PUBLISH_RETRY
        )
        jobs.recover()
        self.notifier.ready()
        log.info(
            "daemon.ready",
            workers=self.pool.ready_workers(),
            devices=self.pool.devices,
            watch_mode=self.watcher.mode,
            recovered=len(jobs.jobs),
            once=self.once,
        )
        try:
            while not self._signals:
                if self._reload:
                    self._reload = False
                    self.reload()
                self.step(TICK)
                if self.once and self._idle():
                    log.info("daemon.inbox_done", left_waiting=self.intake.pending)
                    break
        finally:
            self._shutdown()
        return 0

    def _starting_tick(self) -> bool:
        """While the workers load: keep the watchdog fed; True ends the wait on a signal."""
        self._beat()
        return bool(self._signals)

    def _beat(self) -> None:
        """WATCHDOG=1 at half the interval, only ever from the main thread's loop, so a wedged
        loop stops the beats and systemd restarts the daemon."""
        interval = self.notifier.watchdog_interval()
        now = time.monotonic()
        if interval is not None and now - self._last_beat >= interval / 2:
            self.notifier.watchdog()
            self._last_beat = now

    def _install_signals(self) -> None:
        def stop(signum: int, _frame: FrameType | None) -> None:
            self._signals += 1
            if self._signals > 1:
                log.warning("daemon.stop_now", signal=signal.Signals(signum).name)

        def hup(_signum: int, _frame: FrameType | None) -> None:
            self._reload = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hup)

    def _idle(self) -> bool:
        """`once`: everything in the inbox has been taken and worked off."""
        assert self.lifecycle is not None
        return (
            self.watcher.first_scan.is_set()
            and not self.lifecycle.busy
            and self.paths.empty()
            and time.monotonic() - self._last_activity > self.settings.settle_seconds + 1.0
        )

    def _shutdown(self) -> None:
        """Stop taking jobs; let running ones finish within the grace period; put the rest back
        in the queue (they stay QUEUED for the next start)."""
        assert self.lifecycle is not None
        jobs = self.lifecycle
        self.notifier.stopping()
        log.info("daemon.stopping", running=len(jobs.running), queued=len(self.pool.queued))
        self.watcher.stop()
        self.pool.drain()
        jobs.backlog.clear()
        jobs.deferred.clear()
        deadline = time.monotonic() + self.settings.grace_period
        while jobs.running and time.monotonic() < deadline and self._signals < 2:
            self._pump(TICK)
        if jobs.running:
            log.info("daemon.cancelling", jobs=sorted(jobs.running))
            self.pool.cancel_running()
            deadline = time.monotonic() + CANCEL_GRACE
            while jobs.running and time.monotonic() < deadline:
                self._pump(TICK)
        for running in list(jobs.running.values()):
            jobs.requeue(running.job, "the daemon stopped")
        self.pool.stop()
        self.metrics.stop()
        with contextlib.suppress(OSError):
            (self.settings.state / STATUS_FILE).unlink(missing_ok=True)
        log.info("daemon.stopped", left_in_spool=len(jobs.jobs))

    # -- the loop ---------------------------------------------------------------------------

    def step(self, timeout: float) -> None:
        """One turn: new paths, ready pairs, room in the queue, worker news, housekeeping."""
        assert self.lifecycle is not None
        now = time.monotonic()
        self._observe(now)
        for event in self.intake.poll(now):
            self._last_activity = now
            if isinstance(event, Arrival):
                self.lifecycle.deferred.append(event)
                continue
            try:
                self.lifecycle.problem(event)
            except Exception:
                log.exception("problem.crashed", path=str(event.path))
        self.lifecycle.feed(time.monotonic() + FEED_BUDGET)
        self._pump(timeout)
        self.lifecycle.retry_blocked()
        self._report_status()

    def _observe(self, now: float) -> None:
        while True:
            try:
                path = self.paths.get_nowait()
            except queue.Empty:
                return
            if path is None:
                self.intake.sweep(now)
            else:
                self._last_activity = now
                self.intake.observe(path, now)

    def _pump(self, timeout: float) -> None:
        assert self.lifecycle is not None
        for event in self.pool.poll(timeout):
            self.lifecycle.handle(event)
            if isinstance(event, Started):
                self._report_status()  # before the same batch of news may already end the job
        self._beat()

    # -- reporting --------------------------------------------------------------------------

    def _report_status(self) -> None:
        """A change of any job's state is published at once (a short job would otherwise never
        show); progress percentages only every STATUS_EVERY seconds."""
        assert self.lifecycle is not None and self.store is not None
        now = time.monotonic()
        self._beat()
        items = self.lifecycle.items()
        inbox = self.intake.items(now, time.time())
        shape = (tuple((i.job_id, i.state) for i in items), len(inbox), self.watcher.paused)
        if shape == self._status_shape and now - self._last_status < STATUS_EVERY:
            return
        self._status_shape = shape
        self._last_status = now
        report = from_store(self.store, self._daemon_info())
        report = report.model_copy(update={"inbox": inbox, "jobs": items})
        self.metrics.set_queue(len(items))
        self.notifier.status(_summary(report))
        with contextlib.suppress(OSError):
            data = model_to_json(report, indent=1).encode()
            atomic_write(self.settings.state / STATUS_FILE, data, durable=False)

    def _daemon_info(self) -> DaemonInfo:
        workers = [
            WorkerItem(worker=w.worker, device=w.device, state=w.state, pid=w.pid, node=w.node)
            for w in self.pool.workers()
        ]
        return DaemonInfo(
            running=True,
            pid=os.getpid(),
            version=stylefold_version(),
            updated_at=time.time(),
            watch_mode=self.watcher.mode,
            watch_reason=self.watcher.mode_reason or None,
            paused=self.watcher.pause_reason if self.watcher.paused else None,
            backend=self.settings.backend,
            workers=workers,
            devices=list(self.pool.devices),
        )

    # -- SIGHUP -----------------------------------------------------------------------------

    def reload(self) -> None:
        """Re-read the config and the style library and apply every live setting; settings
        that need a restart keep their running values (and the log says so)."""
        try:
            new = load_settings(self.config_path, self.overrides)
        except ConfigError as exc:
            log.error("daemon.reload_failed", error=str(exc), kept="the previous settings")
            return
        changed = restart_only_changes(self.settings, new)
        if changed:
            log.warning("daemon.reload_needs_restart", settings=changed)
            new = new.model_copy(update={name: getattr(self.settings, name) for name in changed})
        self.settings = new
        setup_logging(new.log_format, new.log_level)
        problems = self.library.reload()
        self.library.max_json_bytes = new.max_sidecar_bytes
        self.rules = IgnoreRules.from_settings(new)
        self.intake.configure(new, self.rules)
        self.watcher.rules = self.rules
        self.watcher.rescan_interval = new.rescan_interval
        self.pool.configure(PoolPolicy.from_settings(new))
        if self.lifecycle is not None:
            self.lifecycle.settings = new
            self.lifecycle.spool.settings = new
        self.watcher.request_scan()
        log.info("daemon.reloaded", styles=len(self.library.names()), style_problems=len(problems))


def _summary(report: StatusReport) -> str:
    """The one line systemd shows (STATUS=)."""
    queued = len(report.in_state("queued"))
    running = report.in_state("running")
    parts = [f"{queued} queued", f"{len(running)} running"]
    parts += [f"{job.input} {job.percent or 0:g}% on {job.device}" for job in running]
    blocked = report.in_state("blocked")
    if blocked:
        parts.append(f"{len(blocked)} blocked (outbox unwritable)")
    if report.daemon.paused:
        parts.append(f"inbox unavailable: {report.daemon.paused}")
    return ", ".join(parts)
