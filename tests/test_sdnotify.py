"""The notify protocol against real AF_UNIX datagram sockets owned by the test."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, make_folders, make_image, write_json

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


# --- the real daemon under the protocol, as systemd would run it -----------------------------


@dataclass
class SupervisedRun:
    messages: list[bytes]
    log: str
    exit_code: int
    scrape_after_job: str


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def supervised(tmp_path_factory: pytest.TempPathFactory) -> SupervisedRun:
    """`stylefold run` with NOTIFY_SOCKET and WATCHDOG_USEC set, one job, then SIGTERM."""
    folders = make_folders(tmp_path_factory.mktemp("notify"))
    port = _free_port()
    config = folders.config(metrics_port=port)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(folders.root / "notify.sock"))
    sock.settimeout(0.2)
    messages: list[bytes] = []
    log_path = folders.root / "daemon.log"
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(folders.root / "notify.sock"),
        "WATCHDOG_USEC": "2000000",  # beats every second
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("WATCHDOG_PID", None)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daemon.cli",
                "run",
                "--config",
                str(config),
                "--log-format",
                "json",
            ],
            cwd=REPO,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def receive_until(done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(TimeoutError):
                messages.append(sock.recv(4096))

    try:
        receive_until(lambda: b"READY=1" in messages, 90)
        assert b"READY=1" in messages, log_path.read_text()[-3000:]
        # A job start is published at once, however short the job (CI machines are fast).
        write_json(folders.inbox / "photo.json", {"style": "mosaic", "params": {"iterations": 20}})
        make_image(folders.inbox / "photo.jpg")
        manifest = folders.outbox / "photo.manifest.json"
        receive_until(manifest.exists, 90)
        assert manifest.exists(), log_path.read_text()[-3000:]
        receive_until(lambda: False, 2.5)  # a status refresh and more beats after the job
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            scrape = response.read().decode()
        process.send_signal(signal.SIGTERM)
        receive_until(lambda: process.poll() is not None, 30)
        exit_code = process.wait(30)
        with contextlib.suppress(TimeoutError, BlockingIOError):
            sock.settimeout(0)
            while True:
                messages.append(sock.recv(4096))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        sock.close()
    return SupervisedRun(messages, log_path.read_text(), exit_code, scrape)


def test_daemon_notifies_ready_status_watchdog_stopping_in_order(
    supervised: SupervisedRun,
) -> None:
    messages = supervised.messages
    assert supervised.exit_code == 0, supervised.log[-3000:]
    assert messages.count(b"READY=1") == 1
    assert messages.count(b"STOPPING=1") == 1
    ready, stopping = messages.index(b"READY=1"), messages.index(b"STOPPING=1")
    assert ready < stopping
    # READY only once the network is loaded: the loading status comes first (beats may too).
    before = [m for m in messages[:ready] if m != b"WATCHDOG=1"]
    assert before and all(m.startswith(b"STATUS=") for m in before), before
    statuses = [m.decode() for m in messages[ready:stopping] if m.startswith(b"STATUS=")]
    assert any("photo.jpg" in s and "1 running" in s for s in statuses), statuses
    assert statuses[-1] == "STATUS=0 queued, 0 running", statuses
    # WATCHDOG=1 about every second (WATCHDOG_USEC / 2) throughout the run, job included.
    assert messages[ready:stopping].count(b"WATCHDOG=1") >= 3


def test_daemon_metrics_count_the_job(supervised: SupervisedRun) -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in parser.text_string_to_metric_families(supervised.scrape_after_job)
        for sample in family.samples
    }
    assert samples[("stylefold_jobs_total", (("outcome", "done"),))] == 1
    assert samples[("stylefold_job_duration_seconds_count", (("outcome", "done"),))] == 1
    assert samples[("stylefold_queue_length", ())] == 0
    assert samples[("stylefold_gpu_memory_bytes", ())] == 0  # CPU only here
