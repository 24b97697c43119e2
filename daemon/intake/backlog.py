"""The watcher's news, observed a budget at a time.

The watcher (its own thread) queues every inbox path it hears of, and a marker after each full
scan, upon which every tracked file is looked at again (a sweep: deletions whose events were
lost). The daemon's loop observes them here between its other work, for at most a budget per
turn: a volume trial's 50,000 new paths were observed in one turn (about 2 s on a 2-core
machine; their sweep after each full scan as long again), and the workers' news, claims and
`status` waited for it.

Pairs are decided (`poll`) only in a turn that caught up with the news: a photo whose sidecar
is still queued would be decided alone, and after a long stop its wait for a partner has run
out already. News that comes in after the catching up waits for the next turn, or a steady
stream of events (a large photo copied over minutes) would hold every decision. A sweep's
re-looks are no news (they find no new partner), so decisions go on during one.
"""

import threading
import time
from collections import deque
from pathlib import Path

from daemon.intake.arrival import Event
from daemon.intake.pairing import Intake


class _Scanned:
    """A full scan ended here (each its own: markers are never merged)."""


class Backlog:
    """Usage: the watcher calls `put` and `scanned` from its thread; the loop calls `observe`,
    then `poll`, each turn."""

    def __init__(self, intake: Intake) -> None:
        self.intake = intake
        # Each path once however many events name it (a re-test: 72,000 writes a second to
        # 2,000 files queued millions, and decisions waited minutes after the writes ended),
        # and a marker after each full scan. The watcher's thread adds, the loop takes.
        self._queue: dict[Path | _Scanned, None] = {}
        self._lock = threading.Lock()
        self._sweep: deque[Path] = deque()  # tracked files to look at again
        self._sweeping = False
        self._behind = False  # the last `observe` left news for the next turn

    def put(self, path: Path | _Scanned) -> None:
        with self._lock:
            self._queue[path] = None

    def scanned(self) -> None:
        self.put(_Scanned())

    def _take(self) -> Path | _Scanned | None:
        """The oldest path or marker, or None when nothing is queued."""
        with self._lock:
            if not self._queue:
                return None
            path = next(iter(self._queue))
            del self._queue[path]
            return path

    @property
    def empty(self) -> bool:
        return not self._queue and not self._sweeping

    def observe(self, now: float, until: float) -> bool:
        """Observe queued paths, then the sweep's, until `until` (time.monotonic()), at least
        one; True if any was news (a new path, not a sweep's re-look)."""
        fresh = False
        while True:
            path = self._take()
            self._behind = path is not None
            if isinstance(path, _Scanned):  # (a sweep still going starts again)
                self._sweep = deque(self.intake.tracked())
                self._sweeping = True
            elif path is not None:
                fresh = True
                self.intake.observe(path, now)
            elif self._sweep:
                self.intake.observe(self._sweep.popleft(), now)
            elif self._sweeping:
                self._sweeping = False
                self.intake.swept()
            else:
                return fresh
            if time.monotonic() >= until:
                self._behind = bool(self._queue)
                return fresh

    def poll(self, now: float, until: float) -> list[Event] | None:
        """The intake's decisions (`Intake.poll`), or None when `observe` left news."""
        return None if self._behind else self.intake.poll(now, until)
