"""`stylefold web` as a service manager runs it: the real process, stopped by a signal, exits 0
(systemd's `systemctl stop` sends SIGTERM; a terminal's Ctrl-C, SIGINT). No daemon or browser
is needed: the page serves a configuration's folders whether or not the daemon runs."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest
from conftest import CLI, REPO, make_folders

pytest.importorskip("starlette", reason="the page needs the web extra")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_page_with_status_0(tmp_path: Path, sig: signal.Signals) -> None:
    config = make_folders(tmp_path).config()
    web = subprocess.Popen(
        [*CLI, "web", "--config", str(config), "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert web.stdout is not None
        first = web.stdout.readline()
        opened = re.search(r"open (http://127\.0\.0\.1:\d+/)", first)
        assert opened, first + web.stdout.read()
        with urllib.request.urlopen(f"{opened[1]}api/page", timeout=30) as response:
            health = json.load(response)["sections"]["health"]["html"]
        assert "not running: start it with `stylefold run`" in health  # no daemon, as said
        web.send_signal(sig)
        status = web.wait(30)
        rest = web.stdout.read()
        assert status == 0, f"exit status {status} after {sig.name}\n{rest}"
        assert "Traceback" not in rest, rest
    finally:
        if web.poll() is None:
            web.kill()
            web.wait(10)


def test_a_configuration_error_exits_78(tmp_path: Path) -> None:
    """As for the daemon: systemd does not restart a unit after 78 (RestartPreventExitStatus=)."""
    folders = make_folders(tmp_path)
    config = folders.config()
    folders.inbox.rmdir()  # an unmounted share
    done = subprocess.run(
        [*CLI, "web", "--config", str(config), "--port", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 78, done.stdout + done.stderr
    assert f"inbox: {folders.inbox} does not exist" in done.stderr
