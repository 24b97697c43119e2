"""`stylefold web` as a service manager runs it: the real process, stopped by a signal, exits 0
(systemd's `systemctl stop` sends SIGTERM; a terminal's Ctrl-C, SIGINT). No daemon or browser
is needed: the page serves a configuration's folders whether or not the daemon runs."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import CLI, REPO, as_an_ordinary_user, make_folders

pytest.importorskip("starlette", reason="the page needs the web extra")


def _start(config: Path, launcher: tuple[str, ...] = ()) -> tuple[subprocess.Popen[str], str]:
    """`stylefold web` on a free port (run under `launcher`), and the URL it says to open."""
    web = subprocess.Popen(
        [*launcher, *CLI, "web", "--config", str(config), "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert web.stdout is not None
    first = web.stdout.readline()
    opened = re.search(r"open (http://127\.0\.0\.1:\d+/)", first)
    if opened is None:
        web.kill()
        raise AssertionError(first + web.stdout.read())
    return web, opened[1]


def _stop(web: subprocess.Popen[str]) -> None:
    if web.poll() is None:
        web.kill()
        web.wait(10)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_page_with_status_0(tmp_path: Path, sig: signal.Signals) -> None:
    web, url = _start(make_folders(tmp_path).config())
    try:
        with urllib.request.urlopen(f"{url}api/page", timeout=30) as response:
            sections = json.load(response)["sections"]
        health, queue = sections["health"]["html"], sections["queue"]["html"]
        assert "not running: start it with `stylefold run`" in health  # no daemon, as said
        # Not "Nothing waiting" (a web trial): only a running daemon knows the inbox.
        assert "what waits in the inbox is not known here" in queue
        assert "Nothing waiting" not in queue
        web.send_signal(sig)
        status = web.wait(30)
        assert web.stdout is not None
        rest = web.stdout.read()
        assert status == 0, f"exit status {status} after {sig.name}\n{rest}"
        assert "Traceback" not in rest, rest
    finally:
        _stop(web)


def _open_after(url: str, first: bytes, then: bytes, limit: float) -> float | None:
    """Seconds until the server closed a connection that sent `first`, then `then` every
    second; None if it was still open after `limit` seconds."""
    where = urlsplit(url)
    connection = socket.create_connection((where.hostname, where.port), timeout=5)
    connection.settimeout(None)  # blocking, so that MSG_DONTWAIT says "nothing yet" at once
    started = time.monotonic()
    try:
        connection.sendall(first)
        while time.monotonic() - started < limit:
            time.sleep(1.0)
            try:
                connection.sendall(then)
                if connection.recv(1 << 16, socket.MSG_DONTWAIT) == b"":
                    return time.monotonic() - started
            except BlockingIOError:
                continue  # open, nothing to read
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - started
        return None
    finally:
        connection.close()


def test_a_request_sent_a_line_at_a_time_is_cut_off(tmp_path: Path) -> None:
    """Found by an attacker's trial: a connection that never finished its request (a header
    line every second, "slowloris") was held open for good, so a few hundred of them used up
    the process's file descriptors. It now has REQUEST_DEADLINE for each request."""
    from daemon.web.server import REQUEST_DEADLINE

    web, url = _start(make_folders(tmp_path).config())
    try:
        head = b"GET / HTTP/1.1\r\nHost: localhost\r\n"
        closed = _open_after(url, head, b"X-Slow: 1\r\n", REQUEST_DEADLINE + 20)
        assert closed is not None, "the slow connection was still open"
        assert closed >= REQUEST_DEADLINE - 1
        with urllib.request.urlopen(f"{url}api/page", timeout=30) as response:
            assert response.status == 200  # the page goes on
    finally:
        _stop(web)


def _web_exits(config: Path, port: str) -> subprocess.CompletedProcess[str]:
    """`stylefold web` run to its end (one that cannot start)."""
    return subprocess.run(
        [*CLI, "web", "--config", str(config), "--port", port],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_configuration_error_exits_78(tmp_path: Path) -> None:
    """As for the daemon: systemd does not restart a unit after 78 (RestartPreventExitStatus=)."""
    folders = make_folders(tmp_path)
    config = folders.config()
    folders.inbox.rmdir()  # an unmounted share
    done = _web_exits(config, "0")
    assert done.returncode == 78, done.stdout + done.stderr
    assert f"inbox: {folders.inbox} does not exist" in done.stderr
    # A port another program holds, as the daemon's metrics port (a new user's trial: exit 1,
    # which systemd restarted every 5 s).
    folders.inbox.mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = _web_exits(config, port)
    assert done.returncode == 78, done.stdout + done.stderr
    assert f"cannot listen on 127.0.0.1:{port} (" in done.stderr
    assert "choose another --port (or web_port)" in done.stderr


def test_on_every_address_it_says_to_open_the_machines_name(tmp_path: Path) -> None:
    """`--host 0.0.0.0` said to open http://0.0.0.0:PORT/, an address no browser elsewhere
    can open (a new user's trial); the page answers to this machine's name."""
    config = make_folders(tmp_path).config()
    web = subprocess.Popen(
        [*CLI, "web", "--config", str(config), "--host", "0.0.0.0", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert web.stdout is not None
        said = ""
        while (opened := re.search(r"open (http://(\S+):(\d+)/)", said)) is None:
            line = web.stdout.readline()  # after the warning that the page is exposed
            assert line, said
            said += line
        assert opened is not None and opened[2] == socket.gethostname(), said
        request = urllib.request.Request(f"http://127.0.0.1:{opened[3]}/api/page")
        request.add_header("Host", f"{socket.gethostname()}:{opened[3]}")
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
    finally:
        _stop(web)


def test_a_state_folder_this_user_may_not_read_is_said_not_a_server_error(
    tmp_path: Path,
) -> None:
    """A non-root trial: the page's unit run as another user than the daemon's, whose lock
    file it may not read, answered every request with a bare 500."""
    folders = make_folders(tmp_path)
    lock = folders.state / "lock"
    lock.touch()
    lock.chmod(0o000)
    web, url = _start(folders.config(), as_an_ordinary_user())
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=30)
        told = refused.value.read().decode()
        assert refused.value.code == 503, told
        assert f"{lock}: Permission denied; run this as the user the daemon runs as" in told
    finally:
        _stop(web)
