"""`stylefold demo --web`: the newcomer's first command also shows where to watch it, and the
page it serves has the demo's results."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest
from conftest import CLI, REPO

pytest.importorskip("starlette", reason="the page needs the web extra")
pytest.importorskip("skimage", reason="the demo's images come with the demo extra")


@pytest.mark.heavy  # a whole demo (four jobs), beside test_demo's
def test_demo_web_serves_the_results_until_ctrl_c(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [*CLI, "demo", "--dir", str(tmp_path / "demo"), "--size", "32", "--iterations", "3",
         "--web", "--web-port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        assert demo.stdout is not None
        printed = []
        for line in demo.stdout:
            printed.append(line)
            if "the page stays open at" in line:
                break
        text = "".join(printed)
        opened = re.search(r"watch it work in a browser: open (http://127\.0\.0\.1:\d+/)", text)
        assert opened, text
        # Printed before the daemon starts, so the page can be watched from the first job on.
        assert text.index(opened[0]) < text.index("running the daemon once")
        with urllib.request.urlopen(f"{opened[1]}api/page", timeout=30) as response:
            sections = json.load(response)["sections"]
        gallery = sections["gallery"]["html"]
        for photo in ("chelsea.png", "astronaut.png", "coffee.png", "rocket.jpg"):
            assert photo in gallery, photo
        assert "cells" in sections["styles"]["html"]
        # The demo's daemon has stopped, as it should: said so, not in alarm (a demo trial's
        # page said "not running: start it with `stylefold run`" in red).
        health = sections["health"]["html"]
        assert 'class="health ok"' in health and "the demo runs the daemon only" in health
        demo.send_signal(signal.SIGINT)
        assert demo.wait(60) == 0, demo.stdout.read()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)
