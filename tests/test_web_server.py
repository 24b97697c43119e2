"""The page's connections against clients that hold them: the real uvicorn with stylefold's
protocol, serving an answer larger than every buffer between it and the client."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import wait_for

pytest.importorskip("uvicorn", reason="the page needs the web extra")

import uvicorn

from daemon.web import server

CHUNK = 1 << 20
PAUSE_EVERY = 8 * CHUNK
BODY = 64 * CHUNK  # far above the kernel's socket buffers (4-6 MiB at most by default)


async def large_answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
    headers = [(b"content-type", b"application/octet-stream"), (b"content-length", b"%d" % BODY)]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for _ in range(BODY // CHUNK):
        await send({"type": "http.response.body", "body": b"x" * CHUNK, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def running(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[uvicorn.Server, int]]:
    monkeypatch.setattr(server, "SEND_STALL", 2.0)
    monkeypatch.setattr(server, "SEND_CHECK", 0.25)
    config = uvicorn.Config(
        large_answer, http=server.DeadlineProtocol, lifespan="off", log_level="warning"
    )
    web = uvicorn.Server(config)
    sock = socket.create_server(("127.0.0.1", 0))
    thread = threading.Thread(target=web.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: web.started, 10, "the server")
    try:
        yield web, sock.getsockname()[1]
    finally:
        web.should_exit = True
        thread.join(10)


def _ask(port: int) -> socket.socket:
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, like a phone's
    client.connect(("127.0.0.1", port))
    client.sendall(b"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    return client


def _read_all(client: socket.socket, pause: float = 0.0) -> int:
    received = 0
    try:
        while chunk := client.recv(CHUNK):
            received += len(chunk)
            if pause and received // PAUSE_EVERY != (received - len(chunk)) // PAUSE_EVERY:
                time.sleep(pause)  # slow, but reading
    except ConnectionResetError:
        pass
    return received


def test_a_client_that_stops_reading_is_cut_off(running: tuple[uvicorn.Server, int]) -> None:
    """Found by an operator's trial: a client that asked for a picture and then read nothing
    held its connection, and the answer's buffers, for as long as it liked."""
    web, port = running
    client = _ask(port)
    with client:
        wait_for(lambda: len(web.server_state.connections) == 1, 10, "the connection")
        wait_for(lambda: not web.server_state.connections, 15, "the stalled connection cut")
        assert _read_all(client) < BODY  # it got a part, then the cut


def test_a_slow_reader_gets_the_whole_answer(running: tuple[uvicorn.Server, int]) -> None:
    """Pauses shorter than SEND_STALL, adding up to several times it: a slow link, not a stall."""
    _, port = running
    with _ask(port) as client:
        received = _read_all(client, pause=0.6)
    assert received > BODY  # the headers, then all of the body
