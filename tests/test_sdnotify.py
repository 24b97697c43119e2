"""The notify protocol against real AF_UNIX datagram sockets owned by the test, and the real
daemon under it as systemd runs it: start-up, reload (good and broken), stop at any moment,
the watchdog's abort, exit codes, journald priorities, a GPU host without usable CUDA."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, REPO, Folders, make_folders, make_image, write_json
from test_gpu_probe import BROKEN_CUDA, fake_driver

from daemon.exitcodes import ExitCode
from daemon.gpu_probe import PROBE_ENV, ROOT_ENV
from daemon.sdnotify import EXTEND_STEP, Notifier, _watchdog_seconds
from daemon.status import read_status
from daemon.status_model import StatusReport


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
    notifier.ready()
    notifier.status("x")
    notifier.watchdog()
    notifier.stopping()


def test_relative_socket_path_is_refused_not_used() -> None:
    assert not Notifier.from_env({"NOTIFY_SOCKET": "relative.sock"}).enabled


def _beats(notifier: Notifier, sock: socket.socket) -> bool:
    """Whether the main loop's first beat sends WATCHDOG=1."""
    notifier.beat()
    sock.settimeout(0.2)
    try:
        return sock.recv(4096) == b"WATCHDOG=1"
    except TimeoutError:
        return False


def test_watchdog_interval_for_this_process(path_socket: tuple[socket.socket, str]) -> None:
    sock, path = path_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    assert _watchdog_seconds(env, os.getpid()) == 30.0
    assert _beats(Notifier.from_env(env), sock)
    without_pid = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2500000"}
    assert _watchdog_seconds(without_pid, os.getpid()) == 2.5


def test_watchdog_meant_for_another_process_is_ignored(
    path_socket: tuple[socket.socket, str],
) -> None:
    sock, path = path_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert _watchdog_seconds(env, os.getpid()) is None
    assert not _beats(Notifier.from_env(env), sock)


@pytest.mark.parametrize("usec", ["0", "-5", "soon"])
def test_invalid_watchdog_usec_means_no_watchdog(
    path_socket: tuple[socket.socket, str], usec: str
) -> None:
    sock, path = path_socket
    assert not _beats(Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": usec}), sock)


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
    notifier.ready()
    assert _receive(sock) == b"READY=1"
    assert _beats(notifier, sock)  # WATCHDOG_USEC read from the process's environment


def test_reloading_names_its_monotonic_time(path_socket: tuple[socket.socket, str]) -> None:
    sock, path = path_socket
    before = time.monotonic_ns() // 1000
    usec = Notifier.from_env({"NOTIFY_SOCKET": path}).reloading()
    after = time.monotonic_ns() // 1000
    assert before <= usec <= after
    assert _receive(sock) == f"RELOADING=1\nMONOTONIC_USEC={usec}".encode()


def test_beat_paces_watchdog_and_extension(path_socket: tuple[socket.socket, str]) -> None:
    sock, path = path_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}  # a beat every 0.1 s
    notifier = Notifier.from_env(env)
    deadline = time.monotonic() + 0.45
    while time.monotonic() < deadline:
        notifier.beat(extend=True)
        time.sleep(0.01)
    notifier.beat()  # not loading or draining: no extension
    notifier.stopping()
    notifier.beat(extend=True)  # a stop is a new timeout: extended at once
    sock.settimeout(0)
    received = []
    with contextlib.suppress(BlockingIOError):
        while True:
            received.append(sock.recv(4096))
    extend = f"EXTEND_TIMEOUT_USEC={int(EXTEND_STEP * 1_000_000)}".encode()
    assert received[:2] == [b"WATCHDOG=1", extend]
    assert 3 <= received.count(b"WATCHDOG=1") <= 7, received  # every 0.1 s for 0.45 s
    assert received.count(extend) == 2
    assert received[-2:] == [b"STOPPING=1", extend]


# --- the real daemon under the protocol, as systemd would run it -----------------------------

JOURNAL_LINE = re.compile(rb"^<(\d{1,3})>")


def journal_entries(raw: bytes) -> list[tuple[int, str]]:
    """What journald makes of a service's stream: a `<N>` prefix is the line's priority (and is
    stripped); a line without one gets the default, info (6)."""
    entries = []
    for line in raw.splitlines():
        match = JOURNAL_LINE.match(line)
        priority = int(match.group(1)) & 7 if match else 6
        entries.append((priority, line[match.end() if match else 0 :].decode(errors="replace")))
    return entries


def events(raw: bytes) -> list[dict[str, Any]]:
    found = []
    for _, message in journal_entries(raw):
        with contextlib.suppress(ValueError):
            found.append(json.loads(message))
    return found


class Supervisor:
    """What systemd is to the daemon, for one test: a notify socket read on a thread, and one
    file for stdout and stderr that JOURNAL_STREAM names, as journald's stream would be."""

    def __init__(self, root: Path, config: Path, env: dict[str, str] | None = None) -> None:
        self.socket_path = root / f"notify-{uuid.uuid4().hex[:8]}.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.socket_path))
        self.sock.settimeout(0.2)
        self.messages: list[bytes] = []
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.journal = root / f"journal-{uuid.uuid4().hex[:8]}.log"
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCH"))}
        with self.journal.open("wb") as stream:
            info = os.fstat(stream.fileno())
            self.env = {
                **inherited,
                "NOTIFY_SOCKET": str(self.socket_path),
                "WATCHDOG_USEC": "2000000",  # beats every second
                "JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}",
                "PYTHONUNBUFFERED": "1",
                **(env or {}),
            }
            command = [*CLI, "run", "--config", str(config), "--log-format", "json"]
            self.process = subprocess.Popen(
                command, cwd=REPO, stdout=stream, stderr=subprocess.STDOUT, env=self.env
            )

    def _read(self) -> None:
        while not self._closed.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                self.messages.append(self.sock.recv(4096))

    def wait_for(self, seen: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not seen() and time.monotonic() < deadline and self.process.poll() is None:
            time.sleep(0.05)
        time.sleep(0.3)  # messages sent just before an exit are read too
        assert seen(), f"no {what}; exit {self.process.poll()}\n{self.log()[-3000:]}"

    def wait_message(self, prefix: bytes, timeout: float = 90, after: int = 0) -> None:
        def seen() -> bool:
            return any(m.startswith(prefix) for m in self.messages[after:])

        self.wait_for(seen, timeout, f"{prefix!r} message")

    def statuses(self) -> list[str]:
        return [m.decode() for m in self.messages if m.startswith(b"STATUS=")]

    def log(self) -> str:
        return self.journal.read_bytes().decode(errors="replace")

    def finish(self, timeout: float = 60) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        time.sleep(0.3)
        self._closed.set()
        self._reader.join(5)
        self.sock.close()


@dataclass
class Reload:
    result: subprocess.CompletedProcess[str]
    messages: list[bytes]  # from the signal on
    asked_usec: int  # CLOCK_MONOTONIC just before `stylefold reload` started


@dataclass
class SupervisedRun:
    messages: list[bytes]
    journal: bytes
    exit_code: int
    scrape_after_job: str
    reloads: list[Reload]
    status_after_broken: StatusReport
    status_text_after_broken: str


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _reload(daemon: Supervisor, config: Path) -> Reload:
    start = len(daemon.messages)
    asked = time.monotonic_ns() // 1000
    command = [*CLI, "reload", "--config", str(config), "--pid", str(daemon.process.pid)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=90)
    daemon.wait_message(b"READY=1", 30, after=start)
    return Reload(result, daemon.messages[start:], asked)


@pytest.fixture(scope="module")
def supervised(tmp_path_factory: pytest.TempPathFactory) -> SupervisedRun:
    """`stylefold run` as systemd runs it: one job, a reload, a reload of a broken config, a
    reload of the mended one, a metrics scrape, a folder linked into the inbox, then
    SIGTERM."""
    folders = make_folders(tmp_path_factory.mktemp("notify"))
    port = _free_port()
    config = folders.config(metrics_port=port)
    daemon = Supervisor(folders.root, config)
    try:
        daemon.wait_message(b"READY=1")
        # A job start is published at once, however short the job (CI machines are fast).
        write_json(folders.inbox / "photo.json", {"style": "mosaic", "params": {"iterations": 20}})
        make_image(folders.inbox / "photo.jpg")
        manifest = folders.outbox / "photo.manifest.json"
        daemon.wait_for(manifest.exists, 90, "result")
        time.sleep(2.5)  # a status refresh and more beats after the job
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            scrape = response.read().decode()
        good = config.read_text()
        reloads = [_reload(daemon, config)]
        config.write_text(good.replace("[defaults]", "[defaults"))  # not TOML any more
        reloads.append(_reload(daemon, config))
        status = read_status(folders.state)
        flags = [f"--{name}={getattr(folders, name)}" for name in ("inbox", "styles", "state")]
        shown = subprocess.run(
            [*CLI, "status", f"--outbox={folders.outbox}", *flags],  # the config is broken
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        config.write_text(good)
        reloads.append(_reload(daemon, config))
        linked = len(daemon.messages)
        (folders.inbox / "holiday").symlink_to(folders.styles)  # a folder linked in
        daemon.wait_message(b"STATUS=1 need attention", 30, after=linked)
        daemon.process.send_signal(signal.SIGTERM)
        exit_code = daemon.finish(30)
    finally:
        daemon.close()
    return SupervisedRun(
        daemon.messages, daemon.journal.read_bytes(), exit_code, scrape, reloads, status, shown
    )


def test_daemon_notifies_ready_status_watchdog_stopping_in_order(
    supervised: SupervisedRun,
) -> None:
    messages = supervised.messages
    assert supervised.exit_code == 0, supervised.journal[-3000:]
    assert messages.count(b"READY=1") == 1 + len(supervised.reloads)
    assert messages.count(b"STOPPING=1") == 1
    ready, stopping = messages.index(b"READY=1"), messages.index(b"STOPPING=1")
    assert ready < stopping
    # READY only once the network is loaded: the loading status comes first (beats may too).
    before = [m for m in messages[:ready] if m != b"WATCHDOG=1"]
    before = [m for m in before if not m.startswith(b"EXTEND_TIMEOUT_USEC=")]
    assert before and all(m.startswith(b"STATUS=") for m in before), before
    first_reload = next(i for i, m in enumerate(messages) if m.startswith(b"RELOADING=1"))
    statuses = [m.decode() for m in messages[ready:first_reload] if m.startswith(b"STATUS=")]
    assert any("photo.jpg" in s and "1 running" in s for s in statuses), statuses
    assert statuses[-1] == "STATUS=0 queued, 0 running", statuses
    # WATCHDOG=1 about every second (WATCHDOG_USEC / 2) throughout the run, job included.
    assert messages[ready:stopping].count(b"WATCHDOG=1") >= 3


def test_loading_and_draining_extend_systemds_timeouts(supervised: SupervisedRun) -> None:
    """EXTEND_TIMEOUT_USEC while loading and after STOPPING=1, never while running: a wedged
    loop stops asking, and TimeoutStartSec=/TimeoutStopSec= apply again."""
    messages = supervised.messages
    ready, stopping = messages.index(b"READY=1"), messages.index(b"STOPPING=1")
    extend = f"EXTEND_TIMEOUT_USEC={int(EXTEND_STEP * 1_000_000)}".encode()
    assert extend in messages[:ready]
    assert extend not in messages[ready:stopping]
    assert messages[stopping + 1 :].count(extend) >= 1


def test_reload_is_framed_by_reloading_and_ready(supervised: SupervisedRun) -> None:
    for reload in supervised.reloads:
        framed = [m for m in reload.messages if m.startswith((b"RELOADING=1", b"READY=1"))]
        assert len(framed) == 2 and framed[1] == b"READY=1", framed
        fields = dict(line.split("=", 1) for line in framed[0].decode().splitlines())
        assert fields["RELOADING"] == "1"
        # CLOCK_MONOTONIC is one clock for every process: the reload began after the request.
        assert reload.asked_usec <= int(fields["MONOTONIC_USEC"]) <= time.monotonic_ns() // 1000
    good, _, mended = supervised.reloads
    assert good.result.returncode == 0, good.result.stderr
    assert mended.result.returncode == 0, mended.result.stderr
    assert "reloaded its configuration (from " in good.result.stdout


def test_a_broken_config_on_reload_keeps_the_old_one_and_says_so(
    supervised: SupervisedRun,
) -> None:
    _, broken, mended = supervised.reloads
    assert broken.result.returncode == 78, broken.result.stderr
    assert re.search(
        r"reload failed, process \d+ keeps its previous configuration \(if it reads this file, "
        r"which has errors\):",
        broken.result.stderr,
    )
    assert "is not valid TOML" in broken.result.stderr
    said = [m for m in broken.messages if m.startswith(b"STATUS=")]
    assert said and said[-1].startswith(b"STATUS=reload failed, the previous config still runs")
    failures = [e for e in events(supervised.journal) if e.get("event") == "daemon.reload_failed"]
    assert len(failures) == 1 and "is not valid TOML" in failures[0]["error"]
    daemon = supervised.status_after_broken.daemon
    assert daemon.reload is not None and "is not valid TOML" in (daemon.reload.error or "")
    whats = [item.what for item in supervised.status_after_broken.attention]
    assert "the configuration could not be reloaded; the previous one still runs" in whats
    assert "could not be reloaded" in supervised.status_text_after_broken
    # Said for `stylefold run` in a terminal too, not systemd's words alone (a new user's trial).
    assert "`stylefold reload --config FILE`" in supervised.status_text_after_broken
    # Mended, the STATUS= line is the queue again, from the reload on.
    began = next(i for i, m in enumerate(mended.messages) if m.startswith(b"RELOADING=1"))
    after = [m for m in mended.messages[began:] if m.startswith(b"STATUS=")]
    assert after and not any(b"reload failed" in m for m in after), after
    assert supervised.exit_code == 0  # the daemon ran on with the previous settings


def test_the_status_line_says_when_something_else_needs_attention(
    supervised: SupervisedRun,
) -> None:
    """An operator's trial: a full state folder (or a limit reached, a link in the inbox)
    was listed by `stylefold status` but not in the line `systemctl status` shows."""
    said = [m.decode() for m in supervised.reloads[-1].messages if m.startswith(b"STATUS=")]
    assert not any("attention" in line for line in said), said  # nothing to say before
    [line] = {m.decode() for m in supervised.messages if b"need attention" in m}
    assert line == (
        "STATUS=1 need attention (stylefold status): links in the inbox are not followed: "
        "the photos they point to are not taken, 0 queued, 0 running"
    )


def test_every_log_line_carries_its_journald_priority(supervised: SupervisedRun) -> None:
    priorities = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}
    lines = supervised.journal.splitlines()
    assert lines and all(JOURNAL_LINE.match(line) for line in lines), lines[:5]
    seen = set()
    for priority, message in journal_entries(supervised.journal):
        level = json.loads(message)["level"]
        assert priority == priorities[level], message
        seen.add(level)
    assert {"info", "error"} <= seen


def test_daemon_metrics_count_the_job(supervised: SupervisedRun) -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in parser.text_string_to_metric_families(supervised.scrape_after_job)
        for sample in family.samples
    }
    assert samples[("stylefold_jobs_total", (("outcome", "done"),))] == 1
    assert samples[("stylefold_job_duration_seconds_count", (("outcome", "done"),))] == 1
    # The job's wall time: it was 0 for every job (an operator's trial, after 150 jobs).
    assert 0 < samples[("stylefold_job_duration_seconds_sum", (("outcome", "done"),))] < 90
    assert samples[("stylefold_queue_length", ())] == 0
    assert samples[("stylefold_gpu_memory_bytes", ())] == 0  # CPU only here
    assert samples[("stylefold_ready_workers", ())] == 1
    assert samples[("stylefold_blocked_jobs", ())] == 0
    assert samples[("stylefold_outbox_write_errors_total", ())] == 0
    assert samples[("stylefold_gpu_fallback", ())] == 0


# --- start-up: stop, abort, configuration errors ---------------------------------------------


def test_sigterm_while_the_network_loads_stops_cleanly(folders: Folders) -> None:
    daemon = Supervisor(folders.root, folders.config())
    try:
        daemon.wait_message(b"STATUS=loading the network", 60)
        daemon.process.send_signal(signal.SIGTERM)  # the workers need seconds to import torch
        code = daemon.finish(30)
    finally:
        daemon.close()
    assert code == 0, daemon.log()[-3000:]
    assert b"READY=1" not in daemon.messages
    assert daemon.messages.count(b"STOPPING=1") == 1
    assert "no worker could start" not in daemon.log()
    assert [e["event"] for e in events(daemon.journal.read_bytes())][-1] == "daemon.stopped"


def _catches(pid: int, sig: signal.Signals) -> bool:
    """Whether the process has a handler for `sig` now (the SigCgt mask of /proc/PID/status)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def _wait_until_caught(daemon: Supervisor) -> float:
    """Seconds from exec until `stylefold run` catches SIGTERM. Before that the interpreter
    itself is starting and the kernel's default action applies: the one window no code of
    ours can close (`daemon.early_stop`)."""
    started = time.monotonic()
    while not _catches(daemon.process.pid, signal.SIGTERM):
        assert daemon.process.poll() is None, daemon.log()[-3000:]
        assert time.monotonic() - started < 30, "SIGTERM never caught"
        time.sleep(0.0005)
    return time.monotonic() - started


@pytest.mark.parametrize(
    ("sig", "delay"),
    [
        (signal.SIGTERM, 0.0),  # at once: while daemon.cli imports pydantic, structlog, ...
        (signal.SIGINT, 0.0),
        (signal.SIGTERM, 0.02),
        (signal.SIGTERM, 0.1),
        (signal.SIGTERM, 0.3),  # on 2 busy cores: about when `Daemon` takes the stop over
        (signal.SIGTERM, 0.8),  # the workers are starting
    ],
)
def test_a_stop_at_any_moment_of_start_up_exits_0_with_stopping(
    folders: Folders, sig: signal.Signals, delay: float
) -> None:
    """The contract: SIGTERM (or SIGINT) at any moment, start-up included, ends with
    STOPPING=1 and exit 0, and nothing is taken from the inbox."""
    write_json(folders.inbox / "photo.json", {"style": "mosaic"})
    make_image(folders.inbox / "photo.jpg")
    daemon = Supervisor(folders.root, folders.config())
    try:
        _wait_until_caught(daemon)
        time.sleep(delay)
        daemon.process.send_signal(sig)
        code = daemon.finish(30)
    finally:
        daemon.close()
    assert code == 0, daemon.log()[-3000:]
    assert daemon.messages.count(b"STOPPING=1") == 1, daemon.messages
    assert b"READY=1" not in daemon.messages
    names = [e["event"] for e in events(daemon.journal.read_bytes())]
    assert names[-2:] == ["daemon.stopping", "daemon.stopped"], daemon.log()[-3000:]
    assert sorted(p.name for p in folders.inbox.iterdir()) == ["photo.jpg", "photo.json"]
    assert list(folders.outbox.iterdir()) == []


def test_a_reload_asked_during_start_up_is_done_once_running(folders: Folders) -> None:
    """SIGHUP's default action ends a process too: during start-up it is recorded, and the
    reload is done once the daemon runs (the file may have changed after it was read)."""
    daemon = Supervisor(folders.root, folders.config())
    try:
        _wait_until_caught(daemon)
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_for(lambda: b"READY=1" in b"".join(daemon.messages), 90, "READY=1")

        def names() -> list[str]:
            return [e["event"] for e in events(daemon.journal.read_bytes())]

        daemon.wait_for(lambda: "daemon.reloaded" in names(), 30, "the reload")
        assert "daemon.reload_asked" in names()
        assert daemon.process.poll() is None, "SIGHUP ended the daemon"
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.finish(60) == 0, daemon.log()[-3000:]
    finally:
        daemon.close()


# Runs `stylefold run --help` as the console script does, watching every module load: the
# names loaded while SIGTERM still had its default action go to stdout as JSON.
_WATCH_IMPORTS = """
import json, signal, sys
unguarded, guarded = [], []
def hook(event, args):
    if event == "import":
        default = signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        (unguarded if default else guarded).append(args[0])
sys.addaudithook(hook)
sys.argv = ["stylefold", "run", "--help"]
from daemon.cli import main
try:
    main()
except SystemExit:
    pass
print(json.dumps({"unguarded": unguarded, "guarded": guarded}))
"""


def test_nothing_heavy_is_imported_before_the_stop_handler() -> None:
    """Before `daemon.early_stop` installs its handler SIGTERM still kills: in that window only
    the standard library, the `daemon` and `daemon.cli` packages (which install it) and
    `early_stop` itself may load, never pydantic, structlog or torch (hundreds of ms)."""
    result = subprocess.run(
        [sys.executable, "-c", _WATCH_IMPORTS], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.splitlines()[-1])
    assert "pydantic" in loaded["guarded"]  # the hook does see the heavy imports
    outside = [m for m in loaded["unguarded"] if m.split(".")[0] not in sys.stdlib_module_names]
    assert outside == ["daemon.cli", "daemon", "daemon.early_stop"], loaded["unguarded"]


def _hanging_probe(folders: Folders, **extra: Any) -> Supervisor:
    """A daemon stuck in the device probe of a GPU host (the probe child never answers)."""
    root = fake_driver(folders.root / "host")
    env = {ROOT_ENV: str(root), PROBE_ENV: "import time; time.sleep(120)"}
    daemon = Supervisor(folders.root, folders.config(devices=["auto"], **extra), env)
    daemon.wait_message(b"STATUS=loading the network", 60)
    return daemon


def test_sigterm_while_probing_the_devices_stops_cleanly(folders: Folders) -> None:
    daemon = _hanging_probe(folders)
    try:
        time.sleep(0.5)
        daemon.process.send_signal(signal.SIGTERM)
        code = daemon.finish(15)
    finally:
        daemon.close()
    assert code == 0, daemon.log()[-3000:]
    assert b"READY=1" not in daemon.messages and b"STOPPING=1" in daemon.messages
    assert any(m.startswith(b"EXTEND_TIMEOUT_USEC=") for m in daemon.messages)


def test_watchdog_abort_writes_every_threads_traceback(folders: Folders) -> None:
    """systemd's watchdog kills with SIGABRT: faulthandler shows where each thread was."""
    daemon = _hanging_probe(folders, metrics_port=_free_port())  # the endpoint is a 2nd thread
    try:
        time.sleep(0.5)
        daemon.process.send_signal(signal.SIGABRT)
        code = daemon.finish(15)
    finally:
        daemon.close()
    log = daemon.log()
    assert code == -signal.SIGABRT
    assert "Fatal Python error: Aborted" in log
    assert "Current thread 0x" in log and "\nThread 0x" in log, log[-3000:]  # and another
    assert re.search(r'File ".*gpu_probe\.py", line \d+ in probe_devices', log), log[-3000:]


def test_a_configuration_error_exits_78_without_ready(folders: Folders) -> None:
    config = folders.root / "broken.toml"
    config.write_text(folders.config().read_text() + "grace_period = -1\n")
    daemon = Supervisor(folders.root, config)
    code = daemon.finish(60)
    assert code == ExitCode.CONFIG == 78
    assert "grace_period" in daemon.log()
    assert b"READY=1" not in daemon.messages


# --- a GPU host whose CUDA cannot be used --------------------------------------------------


def _gpu_host(folders: Folders, **extra: Any) -> Supervisor:
    root = fake_driver(folders.root / "host", proc=False, node=True)
    env = {ROOT_ENV: str(root), PROBE_ENV: BROKEN_CUDA}
    return Supervisor(folders.root, folders.config(devices=["auto"], **extra), env)


def _gpu_error(journal: bytes) -> dict[str, Any]:
    found = [e for e in events(journal) if e.get("event") == "daemon.gpu_unusable"]
    assert len(found) == 1, journal[-3000:]
    error = found[0]
    assert error["level"] == "error"
    assert "Error 304: OS call failed" in error["problem"]  # the probe's stderr
    for fix in ("DeviceAllow=", "nvidia-uvm", "video and render"):
        assert fix in error["fix"]
    return error


def test_gpu_required_makes_an_unusable_gpu_fatal(folders: Folders) -> None:
    daemon = _gpu_host(folders, gpu_required=True)
    code = daemon.finish(60)
    assert code == ExitCode.GPU_UNUSABLE == 69, daemon.log()[-3000:]
    assert _gpu_error(daemon.journal.read_bytes())["then"] == "exiting (gpu_required)"
    assert b"READY=1" not in daemon.messages


@pytest.mark.heavy
def test_a_gpu_host_on_the_cpu_says_so_everywhere(folders: Folders) -> None:
    port = _free_port()
    daemon = _gpu_host(folders, metrics_port=port)
    try:
        daemon.wait_message(b"READY=1")
        daemon.wait_for(lambda: (folders.state / "status.json").exists(), 30, "status.json")
        report = read_status(folders.state)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            scrape = response.read().decode()
        shown = subprocess.run(
            [*CLI, "status", "--config", str(folders.root / "stylefold.toml")],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.finish(30) == 0
    finally:
        daemon.close()
    assert _gpu_error(daemon.journal.read_bytes())["then"] == "running on the CPU"
    assert report.daemon.devices == ["cpu"]
    assert report.daemon.gpu_fallback and "Error 304" in report.daemon.gpu_fallback
    assert [item.what for item in report.attention] == ["a GPU host runs on the CPU"]
    assert "a GPU host runs on the CPU" in shown and "DeviceAllow=" in shown
    assert daemon.statuses()[-1].startswith("STATUS=ON THE CPU: the GPU is unusable")
    assert "stylefold_gpu_fallback 1.0" in scrape


@pytest.mark.heavy
def test_doctor_fails_on_an_unusable_gpu(folders: Folders) -> None:
    root = fake_driver(folders.root / "host")
    env = {**os.environ, ROOT_ENV: str(root), PROBE_ENV: BROKEN_CUDA}
    done = subprocess.run(
        [*CLI, "doctor", "--config", str(folders.config(devices=["auto"]))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 1, done.stdout
    line = next(line for line in done.stdout.splitlines() if "devices:" in line)
    assert line.startswith("FAIL devices: auto would run on cpu: torch sees no CUDA device")
    assert "Error 304" in line and "DeviceAllow=" in line


# --- the deploy README's journal commands, on what journald makes of the daemon's output ------

FAKE_JOURNALCTL = """
import json, os, sys

LEVELS = {"emerg": 0, "alert": 1, "crit": 2, "err": 3, "warning": 4, "notice": 5, "info": 6,
          "debug": 7}
with open(os.environ["FAKE_JOURNAL"]) as handle:
    entries = [json.loads(line) for line in handle]
output, floor, args = "short", 7, sys.argv[1:]
while args:
    arg = args.pop(0)
    if arg in ("-o", "--output"):
        output = args.pop(0)
    elif arg in ("-p", "--priority"):
        value = args.pop(0)
        floor = int(value) if value.isdigit() else LEVELS[value]
    elif arg in ("-u", "--unit", "--since", "--until"):
        args.pop(0)
for entry in entries:
    if int(entry["PRIORITY"]) > floor:
        continue
    if output == "cat":
        print(entry["MESSAGE"])
    elif output == "json":
        print(json.dumps(entry))
    else:
        print(f"2026-12-01T10:00:00+0000 host {entry['SYSLOG_IDENTIFIER']}: {entry['MESSAGE']}")
"""


def _readme_journal_commands() -> list[str]:
    text = (REPO / "deploy" / "README.md").read_text()
    commands = []
    for block in re.findall(r"^ *```sh\n(.*?)^ *```", text, re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("journalctl "):
                commands.append(line.strip())  # bash drops the trailing comments
    return commands


def test_readme_journal_commands_work_on_journal_output(
    supervised: SupervisedRun, tmp_path: Path
) -> None:
    """Each `journalctl ... | jq ...` of deploy/README.md, on the supervised run's output as
    journald stores it (priority from the `<N>` prefix), with systemd's own plain lines and a
    traceback line around it; `journalctl` is a stand-in that prints that journal."""
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed (Debian package jq; .ci/run installs it)")
    stylefold = journal_entries(supervised.journal)
    entries = [
        (6, "systemd", "Starting stylefold.service - stylefold style-transfer daemon..."),
        *((priority, "stylefold", message) for priority, message in stylefold),
        (6, "stylefold", "Fatal Python error: Aborted"),
        (3, "systemd", "stylefold.service: Watchdog timeout (limit 1min)!"),
    ]
    journal = tmp_path / "journal.jsonl"
    fields = ("PRIORITY", "SYSLOG_IDENTIFIER", "MESSAGE")
    lines = [json.dumps(dict(zip(fields, (str(p), i, m), strict=True))) for p, i, m in entries]
    journal.write_text("\n".join(lines) + "\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "journalctl"
    fake.write_text(f"#!{sys.executable}\n{FAKE_JOURNALCTL}")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_JOURNAL": str(journal)}
    commands = _readme_journal_commands()
    assert len(commands) >= 8, commands
    outputs = {}
    for command in commands:
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert done.returncode == 0 and not done.stderr, f"{command}\n{done.stderr}"
        outputs[command] = done.stdout

    def output(*words: str) -> str:
        return next(out for cmd, out in outputs.items() if all(w in cmd for w in words))

    assert '"event":"daemon.reload_failed"' in output("-p err -o cat |", "{timestamp, event")
    assert "photo.jpg\tphoto.stylised.jpg" in output('"job.done"')
    warnings = output("-p warning -o cat")
    assert "Watchdog timeout" in warnings and "daemon.reload_failed" in warnings
    assert "daemon.ready" not in warnings  # info lines stay out
    follow = output("-f -o cat")
    assert '"Fatal Python error: Aborted"' in follow and '"event": "daemon.ready"' in follow
