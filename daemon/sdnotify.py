"""The systemd notify protocol, spoken directly: one datagram per message to $NOTIFY_SOCKET.

Under `Type=notify` systemd waits for `READY=1`, shows `STATUS=` in `systemctl status`, kills a
service whose `WATCHDOG=1` beats stop (with `WatchdogSec=`), and knows a stop is under way after
`STOPPING=1`. A reload is framed by `RELOADING=1` (with `MONOTONIC_USEC=`, as
`Type=notify-reload` wants it) and `READY=1`; `EXTEND_TIMEOUT_USEC=` keeps systemd's start or
stop timeout from running out while loading or draining still makes progress. Outside systemd
every call is a no-op, so the daemon never checks whether it is supervised. A failed send is
logged, never raised: supervision must not be what kills the daemon.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)

# While loading or draining, every EXTEND_EVERY seconds: "give me EXTEND_STEP more seconds".
# A loop that stops turning stops asking, and systemd's own timeout applies again.
EXTEND_EVERY = 5.0
EXTEND_STEP = 30.0


def _socket_address(value: str) -> str | bytes | None:
    """An AF_UNIX address for $NOTIFY_SOCKET: '@name' is the abstract namespace (leading NUL)."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def _watchdog_seconds(environ: Mapping[str, str], pid: int) -> float | None:
    """The watchdog timeout meant for this process, as sd_watchdog_enabled() reads it."""
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    try:
        if not usec or int(usec) <= 0:
            return None
        if owner and int(owner) != pid:
            return None  # inherited from a parent that systemd watches, not us
    except ValueError:
        log.warning("sdnotify.bad_watchdog_env", usec=usec, pid=owner)
        return None
    return int(usec) / 1_000_000


class Notifier:
    """Sends state changes to systemd; disabled (every call a no-op) when address is None."""

    def __init__(self, address: str | bytes | None, watchdog_seconds: float | None = None) -> None:
        self._address = address
        self._watchdog_seconds = watchdog_seconds
        self._socket: socket.socket | None = None
        self._failing = False
        self._last_beat = -float("inf")
        self._last_extend = -float("inf")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        address = _socket_address(raw) if raw else None
        if raw and address is None:
            log.warning("sdnotify.unsupported_socket", notify_socket=raw)
        return cls(address, _watchdog_seconds(env, os.getpid()) if address else None)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def ready(self) -> None:
        self._send("READY=1")

    def reloading(self) -> int:
        """RELOADING=1 with the CLOCK_MONOTONIC time in microseconds, which is returned: a
        reload's result can name the request it answers."""
        usec = time.monotonic_ns() // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}")
        return usec

    def extend_timeout(self, seconds: float) -> None:
        self._send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def beat(self, *, extend: bool = False) -> None:
        """Called from the main loop only, so a wedged loop stops the beats and systemd kills
        it: WATCHDOG=1 at half the watchdog interval and, with `extend` (loading, draining),
        EXTEND_TIMEOUT_USEC every EXTEND_EVERY seconds."""
        now = time.monotonic()
        interval = self._watchdog_seconds
        if interval is not None and now - self._last_beat >= interval / 2:
            self.watchdog()
            self._last_beat = now
        if extend and now - self._last_extend >= EXTEND_EVERY:
            self.extend_timeout(EXTEND_STEP)
            self._last_extend = now

    def status(self, text: str) -> None:
        # The protocol is newline-separated assignments: a newline would end STATUS early.
        self._send("STATUS=" + " ".join(text.splitlines()))

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")
        self._last_extend = -float("inf")  # the stop timeout is a new one: extend it at once

    def _send(self, message: str) -> None:
        if self._address is None:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.sendto(message.encode(), self._address)
        except OSError as exc:
            # Log the first failure of a run of failures: a dead socket must not flood the journal.
            if not self._failing:
                log.warning("sdnotify.send_failed", message=message, error=str(exc))
            self._failing = True
        else:
            if self._failing:
                log.info("sdnotify.send_recovered", message=message)
            self._failing = False
