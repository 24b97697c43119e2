"""Serving the page with uvicorn on a socket bound here, so the address (port 0 included) is
known, and printed, before the first request; in the foreground (`stylefold web`) or beside
the demo's daemon on a thread (`stylefold demo --web`)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from dataclasses import dataclass

import structlog
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from daemon.config import Settings
from daemon.web.app import POLL_SECONDS, create_app, is_loopback

log = structlog.get_logger("stylefold.web")

SHUTDOWN_GRACE = 5  # seconds
REQUEST_DEADLINE = 10.0  # seconds a connection has to send a whole request line and headers
SEND_STALL = 60.0  # seconds a client may leave an answer unread (nginx's send_timeout)
SEND_CHECK = 5.0  # seconds between looks at what a connection has left to send


class DeadlineProtocol(H11Protocol):
    """uvicorn closes a connection only once it sat idle after a response: one that never
    finishes its request (a header byte every few seconds, "slowloris") held a file
    descriptor until the process ran out of them. Each request now has REQUEST_DEADLINE,
    counted from the connection or the previous response. A client that stops reading an
    answer held its connection and the answer's buffers for good, too: a connection whose
    unsent bytes do not go down for SEND_STALL is cut (aborted, since closing would wait to
    send them)."""

    _deadline: asyncio.TimerHandle | None = None
    _watch: asyncio.TimerHandle | None = None
    _unsent = 0
    _resumed = False  # the transport took more since the last look (flow control resumed)
    _progress = 0.0  # when the unsent bytes last went down

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()
        self._progress = self.loop.time()
        self._watch = self.loop.call_later(SEND_CHECK, self._check_sending)

    def resume_writing(self) -> None:
        self._resumed = True
        super().resume_writing()

    def _check_sending(self) -> None:
        unsent, now = self.transport.get_write_buffer_size(), self.loop.time()
        if unsent == 0 or unsent < self._unsent or self._resumed:
            self._progress = now
        elif now - self._progress > SEND_STALL:
            self.transport.abort()
            return
        self._unsent, self._resumed = unsent, False
        self._watch = self.loop.call_later(SEND_CHECK, self._check_sending)

    def on_response_complete(self) -> None:
        self._arm()  # first: a pipelined request may start inside
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._deadline, self._watch):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(REQUEST_DEADLINE, self._expire)

    def _expire(self) -> None:
        answering = self.cycle is not None and not self.cycle.response_complete
        if not answering and not self.transport.is_closing():
            self.transport.close()


@dataclass
class WebServer:
    server: uvicorn.Server
    sock: socket.socket
    url: str
    thread: threading.Thread | None = None

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM (on the main thread) or `stop()`."""
        self.server.run(sockets=[self.sock])

    def start(self) -> None:
        """Serve on a thread of its own (the main thread runs the demo's daemon)."""
        self.thread = threading.Thread(target=self.run, name="stylefold-web", daemon=True)
        self.thread.start()

    def wait_for_ctrl_c(self) -> None:
        """Keep the thread serving until Ctrl-C or SIGTERM, then stop it. Handlers that
        only set a flag (the demo daemon's) are replaced by ones that interrupt the wait."""
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        with contextlib.suppress(KeyboardInterrupt):
            while self.thread is not None and self.thread.is_alive():
                self.thread.join(0.5)
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(10)


def bind(
    settings: Settings,
    host: str,
    port: int,
    *,
    poll_seconds: float = POLL_SECONDS,
    when_stopped: str | None = None,
) -> WebServer:
    """The page for `settings` on host:port (OSError when the address cannot be bound)."""
    if not is_loopback(host):
        log.warning(
            "web.exposed",
            host=host,
            risk="everyone who can reach this address sees the photos, results and logs",
            fix="bind to 127.0.0.1 and reach it through an SSH tunnel or a reverse proxy that "
            "asks for a password",
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family)
    bound = sock.getsockname()[1]
    app = create_app(settings, poll_seconds=poll_seconds, when_stopped=when_stopped)
    # A stop waits at most SHUTDOWN_GRACE for open requests (a phone that stopped reading),
    # well inside the unit's TimeoutStopSec=.
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        http=DeadlineProtocol,
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
    )
    if host in ("0.0.0.0", "::"):  # every address: the machine's name, which the page answers to
        shown = socket.gethostname()
    else:
        shown = f"[{host}]" if family == socket.AF_INET6 else host
    return WebServer(uvicorn.Server(config), sock, f"http://{shown}:{bound}/")
