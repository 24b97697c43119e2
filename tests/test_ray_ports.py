"""What answers at a ray_address, told before `ray.init` (which hangs to its own timeouts on a
port that is not the kind the address names): real listeners on 127.0.0.1 and ::1. The two
kinds of Ray port themselves are in test_ray_client, on a real head."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("grpc", reason="the ray extra is not installed: pip install 'stylefold[ray]'")

from daemon.pool.ray_connect import check_port, endpoint, port_kind, probe, shown
from daemon.pool.ray_protocol import WRONG_PORT, WrongPort


@pytest.fixture
def web_server() -> Iterator[tuple[str, int]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield "127.0.0.1", int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_a_web_server_is_no_ray_port_of_either_kind(web_server: tuple[str, int]) -> None:
    """A re-test: an HTTP server at ray_address waited three times ray_connect_timeout, then
    was told "no answer" and to check the token."""
    assert port_kind(web_server, timeout=5.0) == "not grpc"
    for address in (shown(web_server), f"ray://{shown(web_server)}"):
        with pytest.raises(WrongPort, match=f"^{WRONG_PORT} .*[(]not gRPC"):
            check_port(address, web_server, time.monotonic() + 5.0)


def test_a_silent_listener_is_left_to_the_connection_timeout() -> None:
    """One that accepts and says nothing may be a head still starting: no verdict."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        target = endpoint(f"127.0.0.1:{listener.getsockname()[1]}")
        assert target is not None and port_kind(target, timeout=0.5) is None
        check_port(shown(target), target, time.monotonic() + 0.5)  # no error


def test_an_ipv6_address_is_reached_without_its_brackets() -> None:
    """A re-test: a listener at [::1]:PORT was "nothing answers ... Name or service not known"."""
    assert endpoint("[::1]:6379") == ("::1", 6379)
    assert endpoint("ray://[::1]:10001") == ("::1", 10001)
    assert shown(("::1", 6379)) == "[::1]:6379" and shown(("h", 1)) == "h:1"
    try:
        listener = socket.socket(socket.AF_INET6)
        listener.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with listener:
        listener.listen()
        target = endpoint(f"[::1]:{listener.getsockname()[1]}")
        assert target is not None and probe(target) is None


def test_an_address_that_never_answers_costs_doctor_its_timeout_only() -> None:
    """A re-test: doctor gave a silent port ray_connect_timeout (8 s) plus the time it allows
    for asking the nodes' versions, plus a wait for a driver that never joined: 26 s."""
    pytest.importorskip("ray", reason="the ray extra is not installed")
    from daemon.pool.api import ClusterUnavailable
    from daemon.pool.ray_backend import VERSIONS_WAIT, probe_cluster

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        begun = time.monotonic()
        with pytest.raises(ClusterUnavailable, match="no answer within 3 s"):
            probe_cluster(address, 3.0)
        assert time.monotonic() - begun < 3.0 + VERSIONS_WAIT / 2
