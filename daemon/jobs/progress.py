"""The per-job progress file in the outbox: what a person (or `stylefold status`) looks at while
a photo is being painted. Written atomically under a stable name, at most every
`min_interval` seconds so a fast job does not turn into a stream of fsyncs, removed at the end.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.fsutil import atomic_write_json


def percent_done(iteration: int, total: int) -> float:
    if total <= 0:
        return 0.0
    return round(min(100.0, 100.0 * iteration / total), 1)


def progress_payload(job_id: str, source: str, event: dict[str, Any], now: float) -> dict[str, Any]:
    """The file's content: the worker's progress event plus what a reader needs around it."""
    iteration = int(event.get("iteration", 0))
    total = int(event.get("total", 0))
    eta = event.get("eta")
    return {
        "job_id": job_id,
        "input": source,
        "state": "running",
        "iteration": iteration,
        "total": total,
        "percent": percent_done(iteration, total),
        "scale": event.get("scale"),
        "scales": event.get("scales"),
        "size": event.get("size"),
        "elapsed_seconds": event.get("elapsed"),
        "eta_seconds": None if eta is None else round(float(eta), 1),
        "losses": event.get("losses", {}),
        "device": event.get("device"),
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now)),
    }


@dataclass
class ProgressFile:
    """One running job's progress file."""

    path: Path
    job_id: str
    source: str
    min_interval: float = 0.5
    _last_write: float = field(default=float("-inf"), init=False)

    def update(self, event: dict[str, Any], now: float | None = None, force: bool = False) -> bool:
        """Write the file if `min_interval` has passed (or `force`); True when written."""
        now = time.time() if now is None else now
        if not force and now - self._last_write < self.min_interval:
            return False
        payload = progress_payload(self.job_id, self.source, event, now)
        atomic_write_json(self.path, payload, durable=False)
        self._last_write = now
        return True

    def remove(self) -> None:
        """Called once the job's result or error report is in place."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
