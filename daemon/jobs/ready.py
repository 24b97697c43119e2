"""Pairs ready in the inbox and not claimed yet: claims are paced (a share of each turn of the
daemon's loop) and wait while the pool's queue is full (`queue_max`). Claimed with the top
inbox folders taking turns, as the queue serves them (`daemon.pool.queue`). First come,
first served, 3,000 pairs synced into 100 folders held a photo dropped at the top of the inbox
for over five minutes, unseen by `status` (a volume trial): it waited behind the whole import
before it could take its turn in the queue.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from daemon.intake.arrival import Arrival
from daemon.pool.queue import in_turns
from daemon.status_model import InboxItem

READY_FULL = "ready; waits for room in the queue (queue_max)"
READY_IN_TURN = "ready; claimed in turn"


def top_folder(rel_dir: Path | str) -> str:
    """The inbox folder whose photos take one turn together ("" for the inbox itself)."""
    parts = Path(rel_dir).parts
    return parts[0] if parts else ""


@dataclass(frozen=True)
class _Ready:
    arrival: Arrival
    since: float  # epoch seconds it was ready


class ReadyPairs:
    def __init__(self) -> None:
        self._shares: dict[str, deque[_Ready]] = {}
        self._served: dict[str, int] = {}  # top folder -> its last turn
        self._turns = itertools.count()

    def __len__(self) -> int:
        return sum(len(waiting) for waiting in self._shares.values())

    def __bool__(self) -> bool:
        return bool(self._shares)

    def __iter__(self) -> Iterator[Arrival]:
        """In the order `popleft` takes them."""
        return (ready.arrival for ready in self._in_turns())

    def clear(self) -> None:
        self._shares.clear()
        self._served.clear()

    def append(self, arrival: Arrival) -> None:
        share = top_folder(arrival.rel_dir)
        self._shares.setdefault(share, deque()).append(_Ready(arrival, time.time()))

    def appendleft(self, arrival: Arrival) -> None:
        """First again, its folder's turn given back: a claim that could not be made now."""
        share = top_folder(arrival.rel_dir)
        first = min((waiting[0].since for waiting in self._shares.values()), default=time.time())
        self._shares.setdefault(share, deque()).appendleft(_Ready(arrival, first))
        self._served.pop(share, None)

    def popleft(self) -> Arrival:
        """The oldest pair of the folder served least recently (the oldest folder among
        equals); a folder left with nothing is forgotten, so its next pair goes first."""
        share = min(
            self._shares,
            key=lambda name: (self._served.get(name, -1), self._shares[name][0].since),
        )
        waiting = self._shares[share]
        ready = waiting.popleft()
        if waiting:
            self._served[share] = next(self._turns)
        else:
            del self._shares[share]
            self._served.pop(share, None)
        return ready.arrival

    def items(self, inbox: Path, queue_full: bool) -> list[InboxItem]:
        """For `status`: each pair's photo, ready to be claimed, in the order taken. What they
        wait for: room in the queue, or with room, only their turn (claims are paced, a few
        per turn of the daemon's loop: an attacker's flood of 5,000 junk pairs was listed as
        waiting for room while the queue was empty)."""
        note = READY_FULL if queue_full else READY_IN_TURN
        return [
            InboxItem(
                path=ready.arrival.image.relative_to(inbox).as_posix(),
                state="ready",
                since=ready.since,
                note=note,
            )
            for ready in self._in_turns()
        ]

    def _in_turns(self) -> list[_Ready]:
        oldest_first = sorted(self._shares.items(), key=lambda item: item[1][0].since)
        return in_turns({share: list(waiting) for share, waiting in oldest_first}, self._served)
