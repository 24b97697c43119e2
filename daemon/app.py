"""The daemon: the one loop that moves photos from the inbox through the workers to the outbox.

Threads only feed it (the watcher puts paths on a queue; signal handlers set flags), so every
decision happens here, in order: observe paths -> pair and settle (intake) -> claim into the
spool -> queue in the pool -> publish into the outbox -> archive or return the originals.
Durability lives in the spool (see spool.py); this loop may be killed at any instant.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import queue
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from daemon.config import ConfigError, Settings, load_settings
from daemon.fsutil import atomic_write_json, file_sha256, read_json, remove_temporaries
from daemon.intake.ignore import IgnoreRules
from daemon.intake.pairing import Arrival, Intake, Problem
from daemon.intake.styles import StyleLibrary
from daemon.intake.watcher import Watcher, WatchError
from daemon.jobs import outbox
from daemon.jobs.outbox import OutputNames, choose_names, published_by
from daemon.jobs.progress import ProgressFile, percent_done
from daemon.jobs.spool import Job, Rejected, Spool, new_job_id, resolve
from daemon.lock import LockError, StateLock
from daemon.logs import job_context, setup_logging
from daemon.metrics import Metrics, MetricsError
from daemon.pool.batching import batch_key
from daemon.pool.local import PoolError, PoolEvent, make_pool
from daemon.pool.worker import StyleRef, Task
from daemon.sdnotify import Notifier

log = structlog.get_logger("stylefold.daemon")

TICK = 0.2  # seconds the loop waits for worker messages; bounds the reaction time
STATUS_EVERY = 2.0
# Seconds before writing into an unwritable outbox is tried again; the environment variable is
# a test hook (the reliability suite shortens it), not a setting.
PUBLISH_RETRY = float(os.environ.get("STYLEFOLD_TEST_PUBLISH_RETRY", "30"))
CLAIM_RETRY = 10.0
FEED_BUDGET = 0.5  # seconds of claiming per loop turn
MAX_STARTS = 5  # a job interrupted this often (daemon or worker killed) is given up
READY_TIMEOUT = 600.0
CANCEL_GRACE = 15.0
STATUS_FILE = "status.json"  # after the grace period: time for workers to acknowledge `cancel`
# Settings that only a restart can change (SIGHUP keeps the running values and says so).
RESTART_ONLY = (
    "inbox",
    "outbox",
    "styles",
    "state",
    "archive_dir",
    "devices",
    "workers_per_device",
    "compile",
    "watch_mode",
    "metrics_port",
    "metrics_host",
)


def stylefold_version() -> str:
    try:
        return importlib.metadata.version("stylefold")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(seconds))


@dataclass
class Running:
    job: Job
    started: float
    worker: int
    device: str
    progress: ProgressFile
    last: dict[str, Any] = field(default_factory=dict)


@dataclass
class Blocked:
    """A finished job whose outbox write failed (disk full, permissions); retried later."""

    job: Job
    retry_at: float
    outcome: str  # "done" | "failed"
    data: dict[str, Any]


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
        self.spool = Spool(settings)
        self.library = StyleLibrary.from_settings(settings)
        self.rules = IgnoreRules.from_settings(settings)
        self.intake = Intake.from_settings(settings, self.rules)
        self.paths: queue.SimpleQueue[Path | None] = queue.SimpleQueue()  # None: scan finished
        self.watcher = Watcher.from_settings(
            settings, self.rules, self.paths.put, on_scan=lambda: self.paths.put(None)
        )
        self.pool = make_pool(settings)
        self.jobs: dict[str, Job] = {}  # claimed and not finished
        self.backlog: deque[Job] = deque()  # claimed, waiting for room in the pool queue
        self.deferred: deque[Arrival] = deque()  # ready in the inbox, not claimed yet
        self.running: dict[str, Running] = {}
        self.blocked: dict[str, Blocked] = {}
        # Error reports that could not be written yet: (retry at, what, reason).
        self.unreported: deque[tuple[float, Arrival | Problem, str]] = deque()
        self._claim_pause_until = 0.0
        self._signals = 0
        self._reload = False
        self._last_activity = time.monotonic()
        self._last_status = 0.0
        self._last_beat = 0.0
        self._status_text = ""
        self._status_shape: tuple[object, ...] = ()

    # -- life cycle -----------------------------------------------------------------------

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
            if self.settings.metrics_port is not None:
                self.metrics = Metrics.start(self.settings.metrics_host, self.settings.metrics_port)
            self.notifier.status("loading the network")
            self.pool.start()
            self.pool.wait_ready(READY_TIMEOUT, tick=self._starting_tick)
            if self._signals:
                self.pool.stop()
                return 0
            self.watcher.start()
        except (PoolError, WatchError, MetricsError) as exc:
            log.error("daemon.start_failed", error=str(exc))
            self.pool.stop()
            return 1
        for job in self.spool.recover():
            self._resume(job)
        self.notifier.ready()
        log.info(
            "daemon.ready",
            workers=self.pool.ready_workers(),
            devices=self.pool.devices,
            watch_mode=self.watcher.mode,
            recovered=len(self.jobs),
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
        return (
            self.watcher.first_scan.is_set()
            and not self.jobs
            and not self.deferred
            and not self.blocked
            and not self.unreported
            and self.paths.empty()
            and time.monotonic() - self._last_activity > self.settings.settle_seconds + 1.0
        )

    def _shutdown(self) -> None:
        """Stop taking jobs; let running ones finish within the grace period; put the rest back
        in the queue (they stay in the spool for the next start)."""
        self.notifier.stopping()
        log.info("daemon.stopping", running=len(self.running), queued=len(self.pool.queued))
        self.watcher.stop()
        self.pool.drain()
        self.backlog.clear()
        self.deferred.clear()
        deadline = time.monotonic() + self.settings.grace_period
        while self.running and time.monotonic() < deadline and self._signals < 2:
            self._pump(TICK)
            self._beat()
        if self.running:
            log.info("daemon.cancelling", jobs=sorted(self.running))
            self.pool.cancel_running()
            deadline = time.monotonic() + CANCEL_GRACE
            while self.running and time.monotonic() < deadline:
                self._pump(TICK)
                self._beat()
        for running in list(self.running.values()):
            self._requeued(running.job, "the daemon stopped")
        self.pool.stop()
        self.metrics.stop()
        with contextlib.suppress(OSError):
            (self.settings.state / STATUS_FILE).unlink(missing_ok=True)
        log.info("daemon.stopped", left_in_spool=len(self.spool.pending()))

    # -- the loop -------------------------------------------------------------------------

    def step(self, timeout: float) -> None:
        """One turn: new paths, ready pairs, room in the queue, worker news, housekeeping."""
        now = time.monotonic()
        self._observe(now)
        for event in self.intake.poll(now):
            self._last_activity = now
            if isinstance(event, Arrival):
                self.deferred.append(event)
                continue
            try:
                self._problem(event)
            except Exception:
                log.exception("problem.crashed", path=str(event.path))
        self._feed()
        self._pump(timeout)
        self._retry_blocked()
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

    def _feed(self) -> None:
        """Claim what is ready while the pool queue has room (the bound keeps a burst of
        thousands of photos in the inbox, visible, rather than in memory). Each turn claims
        for at most FEED_BUDGET seconds, so workers, signals and watchdog beats are served
        during a burst."""
        deadline = time.monotonic() + FEED_BUDGET
        while self.backlog and self.pool.has_room() and time.monotonic() < deadline:
            self._submit(self.backlog.popleft())
        while (
            self.deferred
            and not self.backlog
            and self.pool.has_room()
            and self._claim_pause_until <= time.monotonic() < deadline
        ):
            arrival = self.deferred.popleft()
            try:
                self._arrival(arrival)
            except Exception:  # one bad pair must never stop the daemon
                log.exception("job.arrival_crashed", image=str(arrival.image))

    def _pump(self, timeout: float) -> None:
        for event in self.pool.poll(timeout):
            job = self.jobs.get(event.job_id)
            if job is None:
                continue
            with job_context(job.id):
                try:
                    self._pool_event(job, event)
                except Exception as exc:  # a bug while finishing one job must not stop the rest
                    log.exception("job.event_crashed", kind=event.kind)
                    if event.kind in ("done", "failed"):
                        reason = f"internal error while finishing the job ({exc}); please report it"
                        self._failed(job, {"kind": "internal", "reason": reason})

    # -- intake ---------------------------------------------------------------------------

    def _arrival(self, arrival: Arrival) -> None:
        if self.spool.already_handled([arrival.image, arrival.sidecar]):
            return
        try:
            resolved = resolve(arrival, self.settings, self.library)
        except Rejected as exc:
            self._reject(arrival, str(exc))
            return
        try:
            job = self.spool.claim(arrival, resolved)
        except Rejected as exc:
            log.info("job.claim_skipped", image=str(arrival.image), reason=str(exc))
            return
        except FileNotFoundError:
            log.info("job.claim_vanished", image=str(arrival.image))
            return
        except OSError as exc:
            log.error(
                "job.claim_failed", image=str(arrival.image), error=str(exc), retry_in=CLAIM_RETRY
            )
            self.deferred.appendleft(arrival)
            self._claim_pause_until = time.monotonic() + CLAIM_RETRY
            return
        self.jobs[job.id] = job
        with job_context(job.id):
            styles = ", ".join(f"{s.name} x{s.weight:g}" for s in job.styles)
            self.spool.append_log(job, f"claimed {job.source} (style {styles})")
            self.spool.append_log(job, f"params {job.params}")
            log.info("job.claimed", input=job.source, sidecar=job.sidecar_name, styles=styles)
            self._submit(job)

    def _reject(self, arrival: Arrival, reason: str) -> None:
        """The pair cannot become a job; it stays in the inbox untouched, with a report."""
        rel = (arrival.rel_dir / arrival.image.name).as_posix()
        job_id = new_job_id()
        report = {
            "error": reason,
            "job_id": job_id,
            "input": rel,
            "sidecar": arrival.sidecar.name if arrival.sidecar else None,
            "original": "left in the inbox, unchanged; fix the sidecar (or replace the photo) "
            "and it is taken again",
            "at": _iso(time.time()),
        }
        names = choose_names(
            self.settings.outbox / arrival.rel_dir, arrival.image.stem, self.settings.output_format
        )
        try:
            outbox.publish_error(names, report, f"{_iso(time.time())} rejected {rel}: {reason}\n")
        except OSError as exc:
            log.error("job.report_failed", input=rel, error=str(exc), retry_in=PUBLISH_RETRY)
            self.unreported.append((time.monotonic() + PUBLISH_RETRY, arrival, reason))
            return
        self.spool.remember([arrival.image, arrival.sidecar], job_id)
        self.spool.journal(
            {
                "job_id": job_id,
                "outcome": "rejected",
                "input": rel,
                "error": reason,
                "report": str(names.error),
            }
        )
        self.metrics.job_finished("failed", 0.0)
        log.warning("job.rejected", input=rel, reason=reason, report=str(names.error))

    def _problem(self, problem: Problem) -> None:
        """A settled file that cannot become a job (no sidecar, empty, special file...)."""
        if self.spool.already_handled([problem.path]):
            return
        rel_path = problem.path.relative_to(self.settings.inbox)
        name = problem.path.name
        stem = name[:-5] if name.lower().endswith(".json") else name
        stem = Path(stem).stem if self.rules.is_image_name(stem) else stem
        job_id = new_job_id()
        names = choose_names(
            self.settings.outbox / rel_path.parent, stem, self.settings.output_format
        )
        report = {
            "error": problem.reason,
            "job_id": job_id,
            "input": rel_path.as_posix(),
            "original": "left in the inbox, unchanged",
            "at": _iso(time.time()),
        }
        try:
            outbox.publish_error(names, report, f"{_iso(time.time())} {problem.reason}\n")
        except OSError as exc:
            log.error(
                "problem.report_failed", input=str(rel_path), error=str(exc), retry_in=PUBLISH_RETRY
            )
            self.unreported.append((time.monotonic() + PUBLISH_RETRY, problem, problem.reason))
            return
        self.spool.remember([problem.path], job_id)
        self.spool.journal(
            {
                "job_id": job_id,
                "outcome": "rejected",
                "input": str(rel_path),
                "error": problem.reason,
                "report": str(names.error),
            }
        )
        log.warning("problem.reported", input=str(rel_path), reason=problem.reason)

    # -- jobs -----------------------------------------------------------------------------

    def _resume(self, job: Job) -> None:
        """A job found in the spool at start-up: finish whatever step it had reached."""
        self.jobs[job.id] = job
        with job_context(job.id):
            names = self.spool.names(job)
            state = published_by(names, job.id)
            log.info("job.recovered", input=job.source, published=state)
            if state == "result":
                self._release(job, success=True)
            elif state == "error":
                self._release(job, success=False)
            elif (self.spool.job_dir(job) / "result.json").exists():
                info = read_json(self.spool.job_dir(job) / "result.json")
                self._done(job, info if isinstance(info, dict) else {})
            elif self.spool.starts(job) >= MAX_STARTS:
                reason = (
                    f"the job was interrupted {self.spool.starts(job)} times (the daemon or its "
                    "worker stopped while rendering it); check the machine's memory (dmesg) and "
                    "lower params.size, then put the photo back in the inbox"
                )
                self._failed(job, {"kind": "interrupted", "reason": reason})
            else:
                self.spool.clear_running(job)
                self.backlog.append(job)

    def _submit(self, job: Job) -> None:
        if self.settings.dedupe:
            earlier = self.spool.earlier_result(job)
            if earlier is not None:
                self._reuse(job, earlier)
                return
        job_dir = self.spool.job_dir(job)
        task = Task(
            job_id=job.id,
            job_dir=job_dir,
            content=self.spool.input_path(job),
            styles=tuple(StyleRef(job_dir / style.file, style.weight) for style in job.styles),
            params=job.params,
            output_format=job.output_format,
            output_quality=job.output_quality,
            max_pixels=self.settings.max_pixels,
            batch_key=batch_key(
                self.spool.input_path(job),
                [(style.sha256, style.weight) for style in job.styles],
                job.params,
            )
            if self.pool.may_batch()
            else None,
        )
        if not self.pool.submit(task):
            self.backlog.appendleft(job)

    def _pool_event(self, job: Job, event: PoolEvent) -> None:
        if event.kind == "started":
            self._started(job, event.data)
        elif event.kind == "progress":
            self._progress(job, event.data)
        elif event.kind == "retry":
            line = (
                f"attempt {event.data['attempt'] - 1} failed ({event.data.get('error')}); retrying"
            )
            if event.data.get("size") != job.params.get("size"):
                line += f" at size {event.data.get('size')}"
            if event.data.get("device"):
                line += f" on {event.data['device']}"
            self.spool.append_log(job, line)
            log.warning("job.retry", **{k: v for k, v in event.data.items() if k != "traceback"})
            self.metrics.job_finished("retried", self._elapsed(job))
        elif event.kind == "done":
            self._done(job, event.data)
        elif event.kind == "failed":
            self._failed(job, event.data)
        elif event.kind == "cancelled":
            self._requeued(job, str(event.data.get("reason", "cancelled")))

    def _elapsed(self, job: Job) -> float:
        running = self.running.get(job.id)
        return time.time() - running.started if running else 0.0

    def _started(self, job: Job, data: dict[str, Any]) -> None:
        starts = self.spool.record_start(
            job,
            {"worker": data.get("worker"), "device": data.get("device"), "pid": data.get("pid")},
        )
        names = self.spool.names(job)
        progress = ProgressFile(names.progress, job.id, job.source)
        running = Running(
            job, time.time(), int(data.get("worker", -1)), str(data.get("device")), progress
        )
        self.running[job.id] = running
        self._report_status()  # before the same batch of worker news may already end it
        first = {"iteration": 0, "total": job.params.get("iterations", 0), "device": running.device}
        with contextlib.suppress(OSError):
            progress.update(first, force=True)
        batch = int(data.get("batch_size") or 1)
        together = f", in a batch of {batch}" if batch > 1 else ""
        self.spool.append_log(
            job, f"started on {running.device} (worker {running.worker}, start {starts}{together})"
        )
        log.info(
            "job.started",
            input=job.source,
            device=running.device,
            worker=running.worker,
            start=starts,
            queued_seconds=round(time.time() - job.claimed_at, 3),
        )

    def _progress(self, job: Job, data: dict[str, Any]) -> None:
        running = self.running.get(job.id)
        if running is None:
            return
        running.last = data
        with contextlib.suppress(OSError):  # a full outbox must not stop the render
            running.progress.update(data)
        losses = " ".join(f"{k}={v:.4g}" for k, v in data.get("losses", {}).items())
        percent = percent_done(int(data.get("iteration", 0)), int(data.get("total", 0)))
        self.spool.append_log(
            job,
            f"iteration {data.get('iteration')}/{data.get('total')} ({percent}%) "
            f"scale {int(data.get('scale', 0)) + 1}/{data.get('scales')} {losses}",
        )

    def _done(self, job: Job, info: dict[str, Any]) -> None:
        names = self.spool.names(job)
        self._drop_progress(names)  # gone before the manifest says the job is finished
        result = self.spool.job_dir(job) / f"result.{job.output_format}"
        running = self.running.get(job.id)
        try:
            digest = file_sha256(result)
            manifest = build_manifest(job, info, names, digest, running)
            last = (
                f"done: {info.get('iterations')} iterations ({info.get('stop_reason')}), "
                f"wrote {names.image.name}"
            )
            outbox.publish_result(names, result, manifest, self.spool.read_log(job, last))
            self.spool.record_result(job, names.image, digest, names.manifest)
        except OSError as exc:
            self._block(job, "done", info, exc)
            return
        timings = manifest["timings"]
        overhead = timings["total_seconds"] - timings.get("render_seconds", 0.0)
        log.info(
            "job.done",
            input=job.source,
            output=str(names.image),
            render_seconds=timings.get("render_seconds"),
            queued_seconds=timings.get("queued_seconds"),
            total_seconds=timings["total_seconds"],
            overhead_seconds=round(overhead, 3),
        )
        self.metrics.job_finished("done", self._elapsed(job))
        if info.get("peak_memory_bytes") and str(info.get("device", "")).startswith("cuda"):
            self.metrics.set_gpu_memory(int(info["peak_memory_bytes"]))
        self._release(
            job,
            success=True,
            entry={"output": str(names.image), "seconds": timings["total_seconds"]},
        )

    def _reuse(self, job: Job, earlier: dict[str, Any]) -> None:
        """An identical job was done before: answer with a copy of its result."""
        names = self.spool.names(job)
        previous = read_json(Path(str(earlier.get("manifest", ""))))
        base = previous if isinstance(previous, dict) else {}
        source = Path(str(earlier["output"]))
        manifest = {
            **base,
            "job_id": job.id,
            "input": {**base.get("input", {}), "path": job.source},
            "sidecar": _sidecar_entry(job),
            "output": {**base.get("output", {}), "file": names.image.name},
            "reused": {
                "job_id": earlier.get("job_id"),
                "output": str(source),
                "manifest": earlier.get("manifest"),
            },
            "claimed_at": _iso(job.claimed_at),
            "finished_at": _iso(time.time()),
        }
        last = f"identical to job {earlier.get('job_id')}; reused {source}"
        try:
            outbox.publish_result(names, source, manifest, self.spool.read_log(job, last))
        except OSError as exc:
            self._block(job, "reuse", earlier, exc)
            return
        log.info("job.reused", input=job.source, output=str(names.image), earlier=str(source))
        self.metrics.job_finished("reused", 0.0)
        self._release(job, success=True, entry={"output": str(names.image), "reused": True})

    def _failed(self, job: Job, data: dict[str, Any]) -> None:
        names = self.spool.names(job)
        self._drop_progress(names)
        reason = str(data.get("reason") or data.get("error") or "unknown error")
        original = self.settings.inbox / job.rel_dir / job.image_name
        report = {
            "error": reason,
            "job_id": job.id,
            "kind": data.get("kind"),
            "input": job.source,
            "sidecar": job.sidecar_name,
            "original": f"returned to {original}; it is not taken again until the photo or "
            "its sidecar changes",
            "styles": [style.name for style in job.styles],
            "params": job.params,
            "at": _iso(time.time()),
        }
        last = f"failed: {reason}"
        if data.get("traceback"):
            last += "\n" + str(data["traceback"])
        try:
            outbox.publish_error(names, report, self.spool.read_log(job, last))
        except OSError as exc:
            self._block(job, "failed", data, exc)
            return
        log.warning(
            "job.failed",
            input=job.source,
            kind=data.get("kind"),
            reason=reason,
            report=str(names.error),
        )
        self.metrics.job_finished("failed", self._elapsed(job))
        self._release(job, success=False, entry={"error": reason, "report": str(names.error)})

    def _block(self, job: Job, outcome: str, data: dict[str, Any], exc: OSError) -> None:
        log.error(
            "job.outbox_unwritable",
            error=str(exc),
            retry_in=PUBLISH_RETRY,
            fix="free space in the outbox or fix its permissions; the job waits",
        )
        running = self.running.pop(job.id, None)
        if running is not None:
            with contextlib.suppress(OSError):
                running.progress.remove()
        self.blocked[job.id] = Blocked(job, time.monotonic() + PUBLISH_RETRY, outcome, data)

    def _retry_blocked(self) -> None:
        now = time.monotonic()
        while self.unreported and self.unreported[0][0] <= now:
            _, item, reason = self.unreported.popleft()
            if isinstance(item, Arrival):
                self._reject(item, reason)
            else:
                self._problem(item)
        for blocked in [b for b in self.blocked.values() if b.retry_at <= now]:
            del self.blocked[blocked.job.id]
            with job_context(blocked.job.id):
                if blocked.outcome == "done":
                    self._done(blocked.job, blocked.data)
                elif blocked.outcome == "reuse":
                    self._reuse(blocked.job, blocked.data)
                else:
                    self._failed(blocked.job, blocked.data)

    def _requeued(self, job: Job, reason: str) -> None:
        """Cancelled at shutdown: the job stays in the spool and runs again at the next start."""
        running = self.running.pop(job.id, None)
        if running is not None:
            with contextlib.suppress(OSError):
                running.progress.remove()
        self.spool.clear_running(job)
        self.spool.append_log(job, f"put back in the queue ({reason})")
        log.info("job.requeued", input=job.source, reason=reason)

    @staticmethod
    def _drop_progress(names: OutputNames) -> None:
        with contextlib.suppress(OSError):
            names.progress.unlink(missing_ok=True)

    def _release(self, job: Job, *, success: bool, entry: dict[str, Any] | None = None) -> None:
        """After the outbox holds the result or report: move the originals on and forget."""
        self.running.pop(job.id, None)
        self._drop_progress(self.spool.names(job))  # also after a restart
        try:
            if success and self.settings.archive == "move":
                placed = self.spool.archive_originals(job)
            else:
                placed = self.spool.return_originals(job)
        except OSError as exc:
            # The result is safe; the originals stay in the spool and are moved at next start.
            log.error(
                "job.originals_not_moved", error=str(exc), folder=str(self.spool.job_dir(job))
            )
            self.jobs.pop(job.id, None)
            return
        self.spool.finish(job)
        self.jobs.pop(job.id, None)
        if entry is not None:
            self.spool.journal(
                {
                    "job_id": job.id,
                    "outcome": "done" if success else "failed",
                    "input": job.source,
                    "originals": [str(p) for p in placed],
                    **entry,
                }
            )

    # -- reporting ------------------------------------------------------------------------

    def _report_status(self) -> None:
        """A job starting or ending is published at once (a short job would otherwise never
        show); progress percentages only every STATUS_EVERY seconds."""
        now = time.monotonic()
        self._beat()
        waiting = len(self.pool.queued) + len(self.backlog) + len(self.deferred)
        shape = (waiting, tuple(self.running), self.watcher.paused)
        if shape == self._status_shape and now - self._last_status < STATUS_EVERY:
            return
        self._status_shape = shape
        self._last_status = now
        parts = [f"{waiting} queued", f"{len(self.running)} running"]
        for running in self.running.values():
            percent = percent_done(
                int(running.last.get("iteration", 0)), int(running.last.get("total", 0))
            )
            parts.append(f"{running.job.source} {percent:g}% on {running.device}")
        if self.watcher.paused:
            parts.append(f"inbox unavailable: {self.watcher.pause_reason}")
        text = ", ".join(parts)
        self.metrics.set_queue(waiting + len(self.running))
        if text != self._status_text:
            self._status_text = text
            self.notifier.status(text)
            self._write_snapshot(waiting)

    def _write_snapshot(self, waiting: int) -> None:
        """`state/status.json`, for `stylefold status` (which never talks to the daemon)."""
        snapshot = {
            "pid": os.getpid(),
            "updated_at": time.time(),
            "queued": waiting,
            "watch_mode": self.watcher.mode,
            "paused": self.watcher.pause_reason if self.watcher.paused else None,
            "running": [
                {
                    "job_id": running.job.id,
                    "input": running.job.source,
                    "device": running.device,
                    "started_at": running.started,
                    "iteration": running.last.get("iteration", 0),
                    "total": running.last.get("total", running.job.params.get("iterations")),
                    "percent": percent_done(
                        int(running.last.get("iteration", 0)), int(running.last.get("total", 0))
                    ),
                    "eta_seconds": running.last.get("eta"),
                }
                for running in self.running.values()
            ],
        }
        with contextlib.suppress(OSError):
            atomic_write_json(self.settings.state / STATUS_FILE, snapshot, durable=False)

    # -- SIGHUP ---------------------------------------------------------------------------

    def reload(self) -> None:
        """Re-read the config and the style library. Folder, device and watch settings need a
        restart; the running values are kept for those (and the log says so)."""
        try:
            new = load_settings(self.config_path, self.overrides)
        except ConfigError as exc:
            log.error("daemon.reload_failed", error=str(exc), kept="the previous settings")
            return
        changed = [
            name for name in RESTART_ONLY if getattr(new, name) != getattr(self.settings, name)
        ]
        if changed:
            log.warning("daemon.reload_needs_restart", settings=changed)
            new = new.model_copy(update={name: getattr(self.settings, name) for name in changed})
        self.settings = new
        self.spool.settings = new
        setup_logging(new.log_format, new.log_level)
        problems = self.library.reload()
        self.library.max_json_bytes = new.max_sidecar_bytes
        self.rules = IgnoreRules.from_settings(new)
        self.intake.rules = self.rules
        self.watcher.rules = self.rules
        self.intake.settle_seconds = new.settle_seconds
        self.intake.pair_timeout = new.pair_timeout
        self.intake.use_default = new.no_sidecar == "default" and new.default_style is not None
        self.intake.max_sidecar_bytes = new.max_sidecar_bytes
        self.pool.job_timeout = new.job_timeout
        self.pool.retries = new.retries
        self.pool.oom_fallback = new.oom_fallback
        self.pool.queue_max = new.queue_max
        self.pool.batch_max = new.batch_max
        self.watcher.request_scan()
        log.info("daemon.reloaded", styles=len(self.library.names()), style_problems=len(problems))


def _sidecar_entry(job: Job) -> dict[str, Any] | None:
    if job.sidecar_name is None:
        return None
    return {"path": job.sidecar_name, "content": job.sidecar}


def build_manifest(
    job: Job,
    info: dict[str, Any],
    names: OutputNames,
    digest: str,
    running: Running | None,
) -> dict[str, Any]:
    """What was done, exactly enough to reproduce it."""
    now = time.time()
    timings = dict(info.get("timings", {}))
    started = running.started if running is not None else None
    timings["queued_seconds"] = round(started - job.claimed_at, 3) if started else None
    timings["total_seconds"] = round(now - job.claimed_at, 3)
    used = info.get("params", job.params)
    return {
        "job_id": job.id,
        "status": "ok",
        "reused": None,
        "input": {
            "path": job.source,
            "sha256": job.input_sha256,
            "format": info.get("input_format"),
            "size": info.get("input_size"),
        },
        "sidecar": _sidecar_entry(job),
        "styles": [
            {"name": style.name, "weight": style.weight, "sha256": style.sha256}
            for style in job.styles
        ],
        "params": used,
        "requested_params": job.params if used != job.params else None,
        "output": {
            "file": names.image.name,
            "format": job.output_format,
            "quality": job.output_quality,
            "size": info.get("output_size"),
            "sha256": digest,
        },
        "device": info.get("device"),
        "attempt": info.get("attempt"),
        "iterations": info.get("iterations"),
        "stop_reason": info.get("stop_reason"),
        "losses": info.get("losses"),
        "scales": info.get("scales"),
        "peak_memory_bytes": info.get("peak_memory_bytes"),
        # Jobs rendered together share the render's time and peak memory.
        "batch_size": info.get("batch_size", 1),
        "timings": timings,
        "versions": {
            "stylefold": stylefold_version(),
            "python": platform.python_version(),
            **info.get("versions", {}),
        },
        "claimed_at": _iso(job.claimed_at),
        "finished_at": _iso(now),
    }
