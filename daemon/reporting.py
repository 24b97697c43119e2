"""Publishing the status report: `state/status.json` (what `stylefold status` and the web page
read), systemd's one-line STATUS= and the queue gauge. A change in any job's state goes out at
once (a short job would otherwise never show as running); progress only every STATUS_EVERY s."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from daemon.fsutil import atomic_write, model_to_json
from daemon.metrics import Metrics
from daemon.sdnotify import Notifier
from daemon.status import STATUS_FILE, StatusReport

STATUS_EVERY = 2.0


class StatusWriter:
    def __init__(self, state: Path, notifier: Notifier, metrics: Metrics) -> None:
        self.path = state / STATUS_FILE
        self.notifier = notifier
        self.metrics = metrics
        self._shape: tuple[object, ...] = ()
        self._last = 0.0

    def due(self, shape: tuple[object, ...]) -> bool:
        """True when the report should be built and published now."""
        now = time.monotonic()
        if shape == self._shape and now - self._last < STATUS_EVERY:
            return False
        self._shape, self._last = shape, now
        return True

    def publish(self, report: StatusReport) -> None:
        self.metrics.set_queue(len(report.jobs))
        self.notifier.status(summary(report))
        with contextlib.suppress(OSError):
            atomic_write(self.path, model_to_json(report, indent=1).encode(), durable=False)

    def remove(self) -> None:
        """At shutdown: no daemon, no snapshot (`status` then reads the database)."""
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)


def summary(report: StatusReport) -> str:
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
