"""Serving the page with uvicorn on a socket bound here, so the address (port 0 included) is
known, and printed, before the first request; in the foreground (`stylefold web`) or beside
the demo's daemon on a thread (`stylefold demo --web`)."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass

import structlog
import uvicorn

from daemon.config import Settings
from daemon.web.app import POLL_SECONDS, create_app, is_loopback

log = structlog.get_logger("stylefold.web")


@dataclass
class WebServer:
    server: uvicorn.Server
    sock: socket.socket
    url: str

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM (on the main thread) or `stop()`."""
        self.server.run(sockets=[self.sock])

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="stylefold-web", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.server.should_exit = True


def bind(
    settings: Settings, host: str, port: int, *, poll_seconds: float = POLL_SECONDS
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
    app = create_app(settings, host=host, poll_seconds=poll_seconds)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    return WebServer(uvicorn.Server(config), sock, f"http://{shown}:{bound}/")
