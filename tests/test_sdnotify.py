"""The notify protocol against real AF_UNIX datagram sockets owned by the test."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.sdnotify import Notifier


def _receive(sock: socket.socket) -> bytes:
    sock.settimeout(2)
    return sock.recv(4096)


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    yield sock, path
    sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    name = f"stylefold-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    yield sock, "@" + name
    sock.close()


def test_path_socket_gets_exact_messages_in_order(path_socket: tuple[socket.socket, str]) -> None:
    sock, path = path_socket
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    notifier.ready()
    notifier.status("queue 2, running photo.jpg")
    notifier.watchdog()
    notifier.stopping()
    received = [_receive(sock) for _ in range(4)]
    assert received == [
        b"READY=1",
        b"STATUS=queue 2, running photo.jpg",
        b"WATCHDOG=1",
        b"STOPPING=1",
    ]


def test_abstract_namespace_socket(abstract_socket: tuple[socket.socket, str]) -> None:
    sock, name = abstract_socket
    notifier = Notifier.from_env({"NOTIFY_SOCKET": name})
    notifier.ready()
    assert _receive(sock) == b"READY=1"


def test_status_newlines_do_not_split_the_message(path_socket: tuple[socket.socket, str]) -> None:
    sock, path = path_socket
    Notifier.from_env({"NOTIFY_SOCKET": path}).status("line one\nline two")
    assert _receive(sock) == b"STATUS=line one line two"


def test_unset_socket_is_a_silent_no_op() -> None:
    notifier = Notifier.from_env({})
    assert not notifier.enabled
    assert notifier.watchdog_interval() is None
    notifier.ready()
    notifier.status("x")
    notifier.watchdog()
    notifier.stopping()


def test_relative_socket_path_is_refused_not_used() -> None:
    assert not Notifier.from_env({"NOTIFY_SOCKET": "relative.sock"}).enabled


def test_watchdog_interval_for_this_process(path_socket: tuple[socket.socket, str]) -> None:
    _, path = path_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier.from_env(env).watchdog_interval() == 30.0
    without_pid = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2500000"}
    assert Notifier.from_env(without_pid).watchdog_interval() == 2.5


def test_watchdog_meant_for_another_process_is_ignored(
    path_socket: tuple[socket.socket, str],
) -> None:
    _, path = path_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier.from_env(env).watchdog_interval() is None


@pytest.mark.parametrize("usec", ["0", "-5", "soon"])
def test_invalid_watchdog_usec_means_no_watchdog(
    path_socket: tuple[socket.socket, str], usec: str
) -> None:
    _, path = path_socket
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": usec})
    assert notifier.watchdog_interval() is None


def test_missing_socket_never_raises_and_recovers(tmp_path: Path) -> None:
    path = str(tmp_path / "later.sock")
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
    notifier.ready()  # nobody listening yet: logged, not raised
    notifier.watchdog()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        notifier.watchdog()
        assert _receive(sock) == b"WATCHDOG=1"
    finally:
        sock.close()


def test_real_environment_is_the_default(
    path_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = Notifier.from_env()
    assert notifier.watchdog_interval() == 4.0
    notifier.ready()
    assert _receive(sock) == b"READY=1"
