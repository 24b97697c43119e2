"""The per-job progress file in the outbox: what a person (or a sync client) looks at while a
photo is being painted. Written atomically under a stable name, at most every `min_interval`
seconds so a fast job does not turn into a stream of writes, removed when the answer lands.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.fsutil import atomic_write_json
from daemon.jobs.outbox import local_time
from daemon.pool.events import Progress


def percent_done(iteration: int, total: int) -> float:
    if total <= 0:
        return 0.0
    return round(min(100.0, 100.0 * iteration / total), 1)


@dataclass
class ProgressFile:
    """One running job's progress file."""

    path: Path
    job_id: str
    source: str
    min_interval: float = 0.5
    _last_write: float = field(default=float("-inf"), init=False)

    def write(
        self,
        iteration: int,
        total: int,
        device: str,
        *,
        force: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> bool:
        """Write the file if `min_interval` has passed (or `force`); True when written."""
        now = time.time()
        if not force and now - self._last_write < self.min_interval:
            return False
        payload = {
            "job_id": self.job_id,
            "input": self.source,
            "state": "running",
            "iteration": iteration,
            "total": total,
            "percent": percent_done(iteration, total),
            "device": device,
            **(extra or {}),
            "updated_at": local_time(now),
        }
        atomic_write_json(self.path, payload, durable=False)
        self._last_write = now
        return True

    def update(self, event: Progress) -> bool:
        return self.write(
            event.iteration,
            event.total,
            event.device,
            extra={
                "scale": event.scale + 1,  # of "scales", counted from 1 as the log does
                "scales": event.scales,
                "size": list(event.size),
                "elapsed_seconds": event.elapsed,
                "eta_seconds": round(event.eta, 1),
                "losses": event.losses,
            },
        )
