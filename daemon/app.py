"""The daemon: wiring, signals, the systemd watchdog and the one loop that drives everything.

Threads only feed it (the watcher puts paths on a queue; signal handlers set flags), so every
decision happens in the loop, in order: observe paths -> settle and pair (`intake.pairing`) ->
claim, submit, publish and release (`jobs.lifecycle`) -> worker news (`pool`). Durability lives
in the state database (`jobs.store`); this loop may be killed at any instant.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
from collections import deque
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from daemon import early_stop
from daemon.config import (
    ConfigError,
    Settings,
    check_folders,
    load_settings,
    restart_only_changes,
)
from daemon.config.reload import applied_changes
from daemon.exitcodes import ExitCode
from daemon.folder_guard import FolderGuard
from daemon.fsutil import remove_temporaries
from daemon.gpu_probe import DeviceProbe, probe_for
from daemon.intake.backlog import Backlog
from daemon.intake.ignore import IgnoreRules
from daemon.intake.pairing import Arrival, Intake, Problem
from daemon.intake.sidecar import defaults_notes
from daemon.intake.styles import StyleLibrary
from daemon.intake.watcher import Watcher, WatchError
from daemon.jobs import outbox
from daemon.jobs.answers import ReportDetail
from daemon.jobs.lifecycle import Lifecycle
from daemon.jobs.live import Blocked
from daemon.jobs.retry_on_fix import FixWatch
from daemon.jobs.store import DamagedStateError, Store, StoreError, as_damage
from daemon.lock import InboxLock, LockError, StateLock, holder, nested_inbox
from daemon.logs import setup_logging
from daemon.metrics import Metrics, MetricsError
from daemon.pool import PoolError, PoolPolicy, make_pool
from daemon.pool.events import Started
from daemon.sdnotify import Notifier
from daemon.status import STATUS_FILE
from daemon.status_model import InboxItem, ReloadInfo
from daemon.status_reporter import Reporter
from daemon.supervision import exit_code_for
from daemon.versions import stylefold_version

log = structlog.get_logger("stylefold.daemon")

TICK = 0.2  # seconds the loop waits for worker messages; bounds the reaction time
# Seconds before writing into an unwritable outbox is tried again; the environment variable is
# a test hook (the reliability suite shortens it), not a setting.
PUBLISH_RETRY = float(os.environ.get("STYLEFOLD_TEST_PUBLISH_RETRY", "30"))
FEED_BUDGET = 0.5  # seconds of claiming per loop turn
INTAKE_BUDGET = 0.5  # seconds of settle checks per loop turn (they read arriving photos)
REPORT_BUDGET = 0.5  # seconds of reports on inbox files per loop turn (the rest wait a turn)
OBSERVE_BUDGET = 0.5  # seconds of the watcher's news per loop turn (`Backlog`)
READY_TIMEOUT = 600.0  # the units' TimeoutStartSec= is shorter: loading sends EXTEND_TIMEOUT_USEC
INTERNAL_RELOAD = "internal error reading the configuration ({!r}); please report it"
CANCEL_GRACE = 15.0  # after the grace period: time for workers to acknowledge `cancel`
STOP_LOADING = 2.0  # a stop while loading: seconds workers get before they are killed


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
        self.inbox_lock = InboxLock(settings.inbox)
        self.library = StyleLibrary.from_settings(settings)
        self.rules = IgnoreRules.from_settings(settings)
        self.intake = Intake.from_settings(settings, self.rules)
        self.intake.style_names = self.library.names
        self.backlog = Backlog(self.intake)
        self.watcher = Watcher.from_settings(
            settings, self.rules, self.backlog.put, on_scan=self.backlog.scanned
        )
        self.pool = make_pool(settings)
        self.guard = FolderGuard({"inbox": settings.inbox, "outbox": settings.outbox})
        self.store: Store | None = None
        self.lifecycle: Lifecycle | None = None
        self.gpu: DeviceProbe | None = None
        self.reloaded: ReloadInfo | None = None
        self.fixes: FixWatch | None = None
        self.problems: deque[Problem] = deque()  # decided, to be reported (`_report_problems`)
        self._signals = 0
        self.stopping = False  # draining after a stop was asked for (shown by `status`)
        self.cuts_running_at: float | None = None  # epoch seconds: the grace period's end
        self._reload = False
        self._extending = True  # loading or draining: systemd's timeouts are extended
        self._last_activity = time.monotonic()
        # When a poll last looked at every file due in the inbox; `once` is done only when one
        # did, settle_seconds after the last change it saw (a turn can take long: pruning old
        # jobs, observing 50,000 files, and a re-test's `once` left 35,000 photos unlooked at).
        self._looked_at_all = -math.inf
        self.reporter = Reporter(self)
        self._install_signals()  # from the start: a stop while loading ends cleanly too

    # -- life cycle -------------------------------------------------------------------------

    def run(self) -> int:
        if self._signals:  # asked for while `stylefold run` imported: nothing to undo yet
            return self._stop_while_starting()
        # What runs, from which file, on which folders: the journal's answer to "which
        # version and config was this?" after an upgrade or an edit (an operator's trial).
        log.info(
            "daemon.starting",
            version=stylefold_version(),
            pid=os.getpid(),
            config=str(self.config_path) if self.config_path is not None else None,
            inbox=str(self.settings.inbox),
            outbox=str(self.settings.outbox),
            state=str(self.settings.state),
            once=self.once,
        )
        _tell_unused_defaults(self.settings)
        try:
            self._take_folders()
        except LockError as exc:
            self.inbox_lock.release()
            # On stderr too, as a configuration error is (a new user's trial: a second `run`
            # logging JSON to a file or pipe said why it stopped in a JSON line alone).
            print(f"stylefold: {exc}", file=sys.stderr)
            log.error("daemon.locked", error=str(exc))
            # Two daemons configured on one folder: a restart cannot mend that while the other
            # runs, and a loop of them would bury this message.
            return ExitCode.CONFIG
        except ConfigError as exc:  # an outbox or state folder that cannot be made
            self.inbox_lock.release()
            # On stderr too, as `run` tells the settings' own errors (a re-test: a JSON log
            # line on stdout was all a script saw).
            print(f"stylefold: configuration error:\n{exc}", file=sys.stderr)
            log.error("daemon.config_error", error=str(exc), exit_code=int(ExitCode.CONFIG))
            return ExitCode.CONFIG
        try:
            return self._run_locked()
        finally:
            self.inbox_lock.release()
            self.lock.release()

    def _take_folders(self) -> None:
        """The inbox's lock first, then the missing folders made, then the state's lock: a
        second daemon refused for the inbox leaves no state folder behind (an operator's
        trial found an empty `state-b/` with `archive/` and `lock` after each refusal)."""
        try:
            locked = self.inbox_lock.acquire()
        except LockError:
            same_state = holder(self.settings.state)
            if same_state is None:
                raise
            raise LockError(self.lock.held_message(same_state or None)) from None
        if not locked:
            unlocked = "cannot lock the inbox folder here; a second daemon would not be kept out"
            log.warning("daemon.inbox_unlocked", inbox=str(self.settings.inbox), why=unlocked)
        if (other := nested_inbox(self.settings.inbox)) is not None:
            pid, folder = other
            where = "inside" if folder.is_relative_to(self.settings.inbox.resolve()) else "around"
            raise LockError(
                f"another stylefold daemon (pid {pid}) is watching the inbox {folder}, {where} "
                f"this one's ({self.settings.inbox}): both would take its photos; stop it, or "
                "give each daemon an inbox that holds no other's"
            )
        check_folders(self.settings, create=True)
        self.lock.acquire()

    def _run_locked(self) -> int:
        removed = remove_temporaries(self.settings.outbox)
        if removed:
            log.info("daemon.temporaries_removed", count=removed)
        for problem in self.library.problems:
            log.warning("styles.problem", path=str(problem.path), reason=problem.reason)
        try:
            self.store = Store(self.settings.state)
            self.guard.watch_database(self.store.path)
            if self.settings.metrics_port is not None:
                self.metrics = Metrics.start(self.settings.metrics_host, self.settings.metrics_port)
            phase = self._start_phase()
            self.notifier.status(phase)
            self.reporter.starting(phase)
            if self._probe_devices():
                return ExitCode.GPU_UNUSABLE
            if not self._signals:
                self.pool.start(tick=self._starting_tick)
                self.pool.wait_ready(READY_TIMEOUT, tick=self._starting_tick)
            if not self._signals:
                self.watcher.start()
        except (PoolError, WatchError, MetricsError, StoreError) as exc:
            if not self._signals:  # a stop asked for while loading is no failure
                log.error("daemon.start_failed", error=str(exc))
                self.pool.stop()
                return exit_code_for(exc)
        if self._signals:
            return self._stop_while_starting()
        assert self.store is not None
        jobs = self.lifecycle = Lifecycle(
            self.settings, self.store, self.pool, self.library, self.metrics, PUBLISH_RETRY
        )
        self.intake.own_answer = jobs.answers_back.kind_of
        self.intake.answered_in_place = jobs.spool.in_place.answered_alone
        self.intake.reported_with_sidecar = jobs.spool.in_place.reported_with_sidecar
        self.intake.vanished = jobs.reports.vanished
        self.intake.brought_along = jobs.spool.in_place.brought_along
        try:
            left_blocked = self._serve(jobs)
        except BaseException as exc:
            if (damage := as_damage(exc, self.store.path)) is not None:
                return self._stop_on_damage(damage)
            self._shutdown()
            raise
        self._shutdown()
        return ExitCode.TEMPFAIL if self.guard.reason or left_blocked else ExitCode.OK

    def _stop_on_damage(self, damage: DamagedStateError) -> int:
        """A query found the state database broken inside: every later one may fail too, so
        the daemon stops without the drain, which records in it, and is not restarted (an
        operator's trial: a traceback, and five restarts by systemd, each failing alike).
        The photos of unfinished jobs stay in the spool, which the next start empties."""
        log.error("daemon.state_damaged", error=str(damage))
        self.notifier.stopping()
        self.watcher.stop()
        self.pool.stop()
        self.metrics.stop()
        log.info("daemon.stopped", state_damaged=True)
        return ExitCode.CONFIG

    def _serve(self, jobs: Lifecycle) -> list[str]:
        """Recover, then take photos until a signal (or, `once`, until the inbox is done);
        the blocked answers left, in `once`."""
        recovered = jobs.recover()
        self._extending = False
        self.fixes = FixWatch(jobs)
        self.fixes.retry("the daemon started")  # fixes done while it was stopped
        self.notifier.ready()
        log.info(
            "daemon.ready",
            workers=self.pool.ready_workers(),
            devices=self.pool.devices,
            watch_mode=self.watcher.mode,
            recovered=recovered,  # as many as `job.recovered` lines; some end at once
            unfinished=len(jobs.jobs),
            once=self.once,
        )
        while not self._signals and not self.guard.tripped(time.monotonic()):
            if self._reload:
                self._reload = False
                self.reload()
            self.step(TICK)
            if self.once and self._idle():
                # Each named with what it waits for (a photographer's trial: a sidecar
                # naming a style image that never came left only "left_waiting=2").
                waiting = self.intake.items(time.monotonic(), time.time())
                log.info("daemon.inbox_done", left_waiting=list(map(_waiting_line, waiting)))
                break
            if self.once and self._idle(blocked=True):
                # Blocked answers wait for a person; a cron job must end (an attacker's
                # trial: `once` ran until killed). The next start tries them again.
                left_blocked = sorted(map(_blocked_line, jobs.publisher.blocked.values()))
                log.warning("daemon.inbox_done", left_blocked=left_blocked)
                return left_blocked
        return []

    def _probe_devices(self) -> bool:
        """`devices = "auto"` on local workers: find them, loudly when a GPU host cannot use
        CUDA; True when that must stop the daemon (gpu_required)."""
        self.gpu = probe_for(self.settings, self._starting_tick)
        if self.gpu is None:
            return False
        self.pool = make_pool(self.settings.model_copy(update={"devices": self.gpu.devices}))
        self.metrics.set_gpu_fallback(self.gpu.fallback)
        return self.gpu.fallback and self.settings.gpu_required and not self._signals

    def _starting_tick(self) -> bool:
        """While the workers load: keep the watchdog fed and `status` told; True ends the wait
        on a signal."""
        self._beat()
        self.reporter.starting(self._start_phase())
        return bool(self._signals)

    def _start_phase(self) -> str:
        settings = self.settings
        if settings.backend == "ray" and settings.ray_address != "local":
            return (
                f"connecting to the Ray cluster at {settings.ray_address} (ray_connect_timeout "
                f"{settings.ray_connect_timeout:g} s) and loading the network on its actors"
            )
        return "loading the network"

    def _stop_while_starting(self) -> int:
        self.notifier.stopping()
        log.info("daemon.stopping", while_starting=True)
        self.pool.stop(timeout=STOP_LOADING)
        self.metrics.stop()
        log.info("daemon.stopped", while_starting=True)
        return ExitCode.OK

    def _beat(self) -> None:
        self.notifier.beat(extend=self._extending)

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
        # Stops and reloads recorded before these handlers (`daemon.early_stop`), taken after
        # them: each signal is counted once, by one handler or the other.
        for signum in early_stop.take():
            if signum == signal.SIGHUP:
                log.info("daemon.reload_asked", before_start=True)
                self._reload = True
                continue
            log.info("daemon.stop_asked", signal=signal.Signals(signum).name, before_start=True)
            self._signals += 1

    def _idle(self, blocked: bool = False) -> bool:
        """`once`: everything in the inbox has been taken and worked off (`blocked`: but for
        answers blocked on the outbox)."""
        assert self.lifecycle is not None
        return (
            self.watcher.first_scan.is_set()
            and (self.lifecycle.only_blocked if blocked else not self.lifecycle.busy)
            and self.backlog.empty
            and not self.problems
            and self._looked_at_all - self._last_activity > self.settings.settle_seconds + 1.0
        )

    def _shutdown(self) -> None:
        """Stop taking jobs; let running ones finish within the grace period; put the rest back
        in the queue (they stay QUEUED for the next start)."""
        assert self.lifecycle is not None
        jobs = self.lifecycle
        self._extending = True
        self.notifier.stopping()
        self._beat()  # EXTEND_TIMEOUT_USEC at once: the drain may outlast TimeoutStopSec=
        waits = (  # a new user's trial: the first Ctrl-C seemed to do nothing for 30 s
            f"up to {self.settings.grace_period:g} s (grace_period) for the running jobs; a "
            "second signal (Ctrl-C) stops them now, and they are rendered again at the next start"
            if jobs.running
            else None
        )
        log.info(
            "daemon.stopping", running=len(jobs.running), queued=len(self.pool.queued), waits=waits
        )
        self.stopping = True
        if jobs.running:
            self.cuts_running_at = time.time() + self.settings.grace_period
        self._report_status(force=True)
        self.watcher.stop()
        self.pool.drain()
        jobs.for_pool.clear()
        jobs.deferred.clear()
        deadline = time.monotonic() + self.settings.grace_period
        while jobs.running and time.monotonic() < deadline and self._signals < 2:
            self._pump(TICK)
        if jobs.running:
            log.info("daemon.cancelling", jobs=sorted(jobs.running))
            self.cuts_running_at = time.time()  # now: the grace period ended, or a second signal
            self._report_status(force=True)
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
        if self.backlog.observe(now, now + OBSERVE_BUDGET):
            self._last_activity = now
        events = self.backlog.poll(now, time.monotonic() + INTAKE_BUDGET)
        for event in events or ():
            self._last_activity = now
            if isinstance(event, Arrival):
                if self.fixes is not None:
                    self.fixes.arrived(event)
                self.lifecycle.arrived(event)
            else:
                self.problems.append(event)
        if events is not None and self.intake.looked_at_all:
            self._looked_at_all = now
        self._report_problems(time.monotonic() + REPORT_BUDGET)
        if self.fixes is not None:
            self.fixes.tick(now)
        self.lifecycle.feed(time.monotonic() + FEED_BUDGET)
        for path in self.lifecycle.settle_again():
            self.intake.resettle(path, now)
        self._pump(timeout)
        self.lifecycle.retry_due()
        self._report_status()

    def _report_problems(self, until: float) -> None:
        """Reports on inbox files that cannot become jobs, until `until` (time.monotonic()),
        the rest at the next turns: a volume trial's 50,000 empty photos held every render,
        claim and status update for minutes while their reports were written in one turn. A
        file that changed or went since it was decided is not reported: it is decided again."""
        assert self.lifecycle is not None
        with outbox.one_listing():
            while self.problems and time.monotonic() < until:
                problem = self.problems.popleft()
                if not self.intake.as_decided(problem):
                    continue
                try:
                    self.lifecycle.reports.problem(problem)
                except Exception:
                    log.exception("problem.crashed", path=str(problem.path))

    def _pump(self, timeout: float) -> None:
        assert self.lifecycle is not None
        for event in self.pool.poll(timeout):
            self.lifecycle.handle(event)
            if isinstance(event, Started):
                self._report_status()  # before the same batch of news may already end the job
        self._beat()

    # -- reporting --------------------------------------------------------------------------

    def _report_status(self, force: bool = False) -> None:
        self._beat()
        self.reporter.publish(force)

    # -- SIGHUP -----------------------------------------------------------------------------

    def reload(self) -> None:
        """RELOADING=1, then re-read the config and the style library and apply every live
        setting, then READY=1; a broken config keeps the running one, and the log, STATUS= and
        `status` say so until a reload succeeds."""
        usec = self.notifier.reloading()
        error = None
        try:
            # No folder is made for a changed folder setting: it applies only at a restart.
            new = load_settings(self.config_path, self.overrides, create_dirs=False)
            waiting = self._apply(new)
        except Exception as exc:  # whatever the file holds, a reload never ends the daemon
            if not isinstance(exc, ConfigError):
                log.exception("daemon.reload_crashed")
            error = str(exc) if isinstance(exc, ConfigError) else INTERNAL_RELOAD.format(exc)
            log.error("daemon.reload_failed", error=error, kept="the previous settings")
            # What an earlier reload left waiting for a restart still waits (a Ray operator's
            # trial: a broken reload hid it from `status`).
            waiting = [] if self.reloaded is None else self.reloaded.needs_restart
        now = time.time()
        self.reloaded = ReloadInfo(
            monotonic_usec=usec,
            at=now,
            error=error,
            needs_restart=waiting,
            waiting_since=self._waiting_since(waiting, now),
            config=None if self.config_path is None else str(self.config_path),
        )
        self.notifier.ready()  # before the verdict, which ends `stylefold reload` (ExecReload=)
        self._report_status(force=True)

    def _waiting_since(self, waiting: list[str], now: float) -> float | None:
        """Since when settings have waited for a restart: from the reload that first left one
        waiting, not the latest (an administrator's trial: "for 0 s" right after a second
        reload, of a change made minutes before)."""
        before = self.reloaded
        if not waiting:
            return None
        if before is not None and before.needs_restart:
            return before.waiting_since or before.at
        return now

    def _apply(self, new: Settings) -> list[str]:
        """Settings that need a restart keep their running values; they are returned, for
        `reload` and `status` to say so (a changed inbox would otherwise wait unwatched)."""
        old = self.settings
        changed = restart_only_changes(self.settings, new)
        if changed:
            log.warning("daemon.reload_needs_restart", settings=changed)
            new = new.model_copy(update={name: getattr(self.settings, name) for name in changed})
        self.settings = new
        setup_logging(new.log_format, new.log_level)
        self.library.max_json_bytes = new.max_sidecar_bytes
        self.library.checker.max_pixels = new.max_pixels
        problems = self.library.reload()
        for problem in problems:
            log.warning("styles.problem", path=str(problem.path), reason=problem.reason)
        self.rules = IgnoreRules.from_settings(new)
        self.intake.configure(new, self.rules)
        self.watcher.rules = self.rules
        self.watcher.rescan_interval = new.rescan_interval
        self.pool.configure(PoolPolicy.from_settings(new))
        if self.lifecycle is not None:
            self.lifecycle.configure(new)
        self.watcher.request_scan()
        log.info(
            "daemon.reloaded",
            changed=applied_changes(old, new),
            styles=len(self.library.names()),
            style_problems=len(problems),
        )
        _tell_unused_defaults(new)
        self.intake.reconsider()
        if self.fixes is not None:
            self.fixes.reloaded(old)
        return changed


def _tell_unused_defaults(settings: Settings) -> None:
    for note in defaults_notes(settings.defaults):
        log.warning("config.unused_default", note=note)


def _waiting_line(item: InboxItem) -> str:
    """`once`'s last word on an inbox file it leaves: what it waits for, and when a running
    daemon would report it (an arriving file's note says so itself: when it is reported as
    truncated or empty)."""
    left = item.gives_up_in
    waits = left is not None and item.state != "arriving"
    later = f"; reported in {left:.0f} s (pair_timeout) unless it comes" if waits else ""
    return f"{item.path}: {item.note}{later}"


def _blocked_line(blocked: Blocked) -> str:
    """`once`'s last word on an answer left waiting: its photo and why."""
    if blocked.job is not None:
        source = blocked.job.source
    else:  # a report about files that never became a job
        assert isinstance(blocked.detail, ReportDetail)
        source = blocked.detail.input
    return f"{source} (job {blocked.job_id}): {blocked.reason}"
