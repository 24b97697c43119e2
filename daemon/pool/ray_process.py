"""The daemon's handle on its Ray driver process (daemon.pool.ray_driver): start it, talk to it,
notice when it is gone, end it with everything it started, and turn whatever Ray writes into
the daemon's log lines (`ray.output`), so Ray never breaks the JSON log."""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import os
import re
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from multiprocessing.connection import Connection, wait

import structlog

from daemon.pool import ray_driver
from daemon.pool.ray_protocol import (
    Command,
    Connected,
    ConnectFailed,
    ConnectKind,
    Joined,
    Lost,
    Open,
    Reply,
)

log = structlog.get_logger("stylefold.ray")

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Ray's Python lines: "2026-01-01 10:00:00,000<TAB>WARNING worker.py:1 -- ..."; its C++ lines:
# "[2026-01-01 10:00:00,000 W 123 456] file.cc:1: ..." (C: a failed check, before a crash);
# either may come from an actor, after its "(RenderActor pid=123)".
_SOURCE = re.compile(r"^(\(\S+ pid=\d+(?:, ip=[^)]*)?\))?")
_PY_LEVEL = re.compile(r"\S+ \S+\t(DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
_CC_LEVEL = re.compile(r"\[\S+ \S+ ([DIWECF]) \d+ \d+\]")
_CC_LEVELS = {
    "D": "DEBUG", "I": "INFO", "W": "WARNING", "E": "ERROR", "C": "CRITICAL", "F": "CRITICAL"
}  # fmt: skip


def _source(line: str) -> str:
    """The actor prefix a line of Ray's output begins with, or ""."""
    match = _SOURCE.match(line)
    return match[0] if match else ""


def output_level(line: str, previous: tuple[str, int] | None = None) -> int:
    """The level Ray gave a line of its output. A line with none, from the same source (an
    actor's prefix) as an error before it, is part of that error: a crash's stack trace, one
    line per frame, was logged at info after its critical first line (a Ray operator's trial);
    any other takes info."""
    prefix = _source(line)
    rest = line[len(prefix) :].lstrip()
    if match := _PY_LEVEL.match(rest):
        return logging.getLevelNamesMapping()[match[1]]
    if match := _CC_LEVEL.match(rest):
        return logging.getLevelNamesMapping()[_CC_LEVELS[match[1]]]
    if previous is not None and previous[0] == prefix and previous[1] >= logging.ERROR:
        return previous[1]
    return logging.INFO


def output_levels(lines: Iterable[str]) -> Iterator[tuple[str, int]]:
    """Each line of Ray's output with its level (`output_level`, knowing the line before)."""
    previous: tuple[str, int] | None = None
    for line in lines:
        level = output_level(line, previous)
        previous = (_source(line), level)
        yield line, level


def _relay(output: Connection) -> None:
    with os.fdopen(os.dup(output.fileno()), "rb") as stream:
        output.close()
        decoded = (_ANSI.sub("", raw.decode(errors="replace")).rstrip() for raw in stream)
        for line, level in output_levels(line for line in decoded if line):
            log.log(level, "ray.output", line=line)


class DriverProcess:
    """One driver: connecting until `connected` (or a `problem()`), then running actors."""

    def __init__(self, opening: Open, timeout: float) -> None:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe(duplex=True)
        output, output_end = context.Pipe(duplex=False)
        self.process = context.Process(
            target=ray_driver.main, args=(theirs, output_end), name="stylefold-ray-driver"
        )
        self.process.daemon = True
        self.process.start()
        theirs.close()
        output_end.close()
        self.conn = ours
        self.timeout = timeout
        self.deadline = opening.deadline  # to join; then to ask the nodes, if it does
        self._probe_until = opening.probe_until
        self.connected: Connected | None = None
        self._failure: str | None = None
        self.connect_failure: ConnectKind = "other"  # why it could not connect
        self._relay = threading.Thread(target=_relay, args=(output,), daemon=True)
        self._relay.start()
        # The driver ignores SIGTERM, and multiprocessing joins its children at exit: an exit
        # without pool.stop() (a crash) must not wait for it forever.
        atexit.register(self.end)
        self.send(opening)

    def send(self, command: Command) -> bool:
        """False when the driver is gone (`problem()` says why)."""
        try:
            self.conn.send(command)
        except (OSError, ValueError):
            return False
        return True

    def replies(self, timeout: float) -> list[Reply]:
        """What the driver said, waiting up to `timeout` for the first word."""
        replies: list[Reply] = []
        with contextlib.suppress(OSError, ValueError):
            wait([self.conn, self.process.sentinel], timeout)
        try:
            while self.conn.poll():
                reply: Reply = self.conn.recv()
                if isinstance(reply, Joined):
                    self.deadline = max(self.deadline, self._probe_until or 0.0)
                elif isinstance(reply, Connected):
                    self.connected = reply
                elif isinstance(reply, ConnectFailed):
                    self._failure = reply.error
                    self.connect_failure = reply.kind
                elif isinstance(reply, Lost):
                    self._failure = reply.reason
                replies.append(reply)
        except (EOFError, OSError):
            self._failure = self._failure or self._exit_reason()
        return replies

    def problem(self) -> str | None:
        """Why this driver is of no more use, or None while it connects or runs (or has words
        left to read: a result it sent before it went is not lost)."""
        if self._failure is None and not self.process.is_alive() and not self._unread():
            self._failure = self._exit_reason()
        if self._failure is None and self.connected is None and time.monotonic() > self.deadline:
            self._failure = f"no answer within {self.timeout:g} s"
        return self._failure

    def _unread(self) -> bool:
        try:
            return self.conn.poll()  # True at the end of the pipe too: `replies` reads that
        except (OSError, ValueError):
            return False

    def _exit_reason(self) -> str:
        self.process.join(1)
        code = self.process.exitcode
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return f"the Ray driver process was killed by {signal.Signals(-code).name}"
        return f"the Ray driver process exited with code {code}"

    def end(self, timeout: float = 0.0) -> None:
        """Wait up to `timeout` for the driver to leave, then kill it and whatever it started
        (its own session: a private "local" cluster too)."""
        atexit.unregister(self.end)
        self.process.join(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.process.pid:
                os.killpg(self.process.pid, signal.SIGKILL)
        if self.process.is_alive():  # killed before it made its own session
            self.process.kill()
        self.process.join(5)
        self.conn.close()
        self._relay.join(2)
