"""Room in the state folder. When its file system is full nothing may be lost, rendered twice
or explained wrongly: a claim that cannot be recorded leaves the photo where it is in the inbox
(and is tried again); a job whose result cannot be stored is held, not failed, and is rendered
again only once there is room for its result. Both are logged once and listed by `status` while
the folder is full, and carry on by themselves when space returns (no restart)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import structlog

from daemon.jobs.record import Job
from daemon.limits import Limits
from daemon.status_model import Attention

log = structlog.get_logger("stylefold.jobs")

SETTING = "state"  # the limit's name in `status`: the state folder's file system
SLACK = 4 << 20  # bytes beyond a result's own size: the job's log, its record, the database


def is_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def room_for(job: Job) -> int:
    """Bytes a held job needs before it is rendered again: its result uncompressed (8-bit RGB,
    an upper bound for every output format) plus slack."""
    return 3 * job.params.size * job.params.size + SLACK


class StateSpace:
    def __init__(self, state: Path) -> None:
        self.state = state
        self.limits = Limits()
        self.held: list[Job] = []  # results that could not be stored: waiting for room

    def attention(self) -> list[Attention]:
        """The full file system, and while results wait for room, how much the next one needs
        (so a person knows when it will go on, or that it never can)."""
        items = self.limits.attention()
        if not self.held:
            return items
        need = room_for(self.held[0])
        try:
            fs = os.statvfs(self.state)
        except OSError:
            return items
        free, total = fs.f_bavail * fs.f_frsize, fs.f_blocks * fs.f_frsize
        what = (
            f"{len(self.held)} rendered job(s) wait for room for their result: the next needs "
            f"{_mb(need)} free in the state folder, {_mb(free)} is free"
        )
        fix = "free space where the state folder is; it goes on by itself"
        if need > total:
            what += f", and its file system holds only {_mb(total)}"
            fix = "move the state folder to a larger file system (state = ...) and restart"
        return [*items, Attention(what=what, where=str(self.state), fix=fix)]

    def full(self, cause: object) -> None:
        self.limits.reach(
            SETTING,
            f"the state folder's file system is full ({cause}); new photos wait in the inbox "
            "and jobs whose result could not be stored wait to be rendered again",
            f"free space where the state folder is ({self.state}); everything carries on by "
            "itself once there is room",
        )

    def hold(self, job: Job, reason: str) -> None:
        self.held.append(job)
        log.warning("job.held", input=job.source, reason=reason)

    def free(self) -> int:
        result = os.statvfs(self.state)
        return result.f_bavail * result.f_frsize

    def released(self) -> list[Job]:
        """The held jobs there is room for now, in the order they were held."""
        if not self.held:
            return []
        available = self.free()
        ready = []
        for job in list(self.held):
            if room_for(job) > available:
                break
            available -= room_for(job)
            ready.append(self.held.pop(0))
        if not self.held:
            self.recovered()
        return ready

    def recovered(self) -> None:
        self.limits.clear(SETTING)


def _mb(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"
