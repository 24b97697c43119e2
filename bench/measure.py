"""Running one benchmark subject in its own process and measuring it from the outside.

Each subject (pastiche, or stylefold at one configuration) runs in a fresh child process so that
its peak memory is its own: `os.wait4` returns the rusage of that one child, whereas
`getrusage(RUSAGE_CHILDREN)` would report the largest of all children waited for so far.
"""

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Measured:
    """What the parent saw of one child run."""

    wall_s: float  # from spawn to exit: interpreter start, imports and work
    peak_rss_bytes: int  # ru_maxrss of that child alone
    cpu_s: float  # user + system CPU time of that child: less sensitive to other load than wall
    returncode: int
    log: Path  # the child's stdout and stderr together


class SubjectFailedError(RuntimeError):
    """A benchmark subject exited non-zero; the message carries the tail of its log."""


def run_measured(cmd: list[str], log: Path, timeout_s: float | None = None) -> Measured:
    """Run `cmd` with its output to `log`, wait for it with wait4, and fail loudly if it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as sink:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
        deadline = None if timeout_s is None else start + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG if deadline else 0)
            if pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code  # so Popen's finaliser does not try to reap it again
    measured = Measured(wall, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime, code, log)
    if code != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SubjectFailedError(f"{' '.join(cmd)} exited with {code}; last output:\n{tail}")
    return measured
