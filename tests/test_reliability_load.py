"""Load: 1,000 pairs dropped at once, with native and with polling watching. Every pair is
answered exactly once, the daemon's memory stays bounded and its intake keeps up.

What the burst holds (so it runs in a few minutes on 2 cores): 500 pairs name an unknown style
(rejected at intake, an error report each), 490 repeat a job rendered just before the burst
(answered from the result index: claimed, spooled, published, archived, not rendered; primed in
the burst's folder, as a result is reused in its own folder only) and 10 are
distinct photos that really render (32 px, 1 iteration).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from conftest import Daemon, Folders, image_bytes, start_daemon, wait_for
from reliability_report import Collector

from daemon.status import STATUS_FILE

pytestmark = pytest.mark.heavy

BURST = 1000
REJECTED = 500
RENDERED = 10
RSS_LIMIT_MIB = 300
STATUS_LIMIT = 200_000  # bytes of status.json: LISTED queued jobs and inbox files, and the rest


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"/proc/{pid}/status has no VmRSS line")


class PeakRss(threading.Thread):
    """The daemon's peak RSS, and the largest status.json it wrote meanwhile."""

    def __init__(self, pid: int, status: Path) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0.0, True
        self.status, self.status_peak = status, 0

    def run(self) -> None:
        while self.running:
            try:
                self.peak = max(self.peak, rss_mib(self.pid))
            except (FileNotFoundError, ProcessLookupError):
                return
            with contextlib.suppress(FileNotFoundError):
                self.status_peak = max(self.status_peak, self.status.stat().st_size)
            time.sleep(0.1)


def stage_burst(folders: Folders, primed: bytes) -> Path:
    """Write the 1,000 pairs beside the inbox (same file system), to be renamed in at once."""
    stage = folders.root / "stage"
    stage.mkdir()
    for n in range(BURST):
        stem = f"b{n:04d}"
        if n < REJECTED:
            data, sidecar = primed, {"style": "no_such_style"}
        elif n < BURST - RENDERED:
            data, sidecar = primed, {"style": "mosaic"}
        else:
            data, sidecar = image_bytes(size=(40, 32), seed=5000 + n), {"style": "mosaic"}
        (stage / f"{stem}.jpg").write_bytes(data)
        (stage / f"{stem}.json").write_text(json.dumps(sidecar))
    return stage


def answers(folder: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    if folder.is_dir():
        for name in os.listdir(folder):
            if name.endswith((".manifest.json", ".error.json")):
                found.setdefault(name.split(".", 1)[0], []).append(name)
    return found


def accepted(daemon: Daemon) -> int:
    events = ("job.claimed", "job.rejected")
    return sum(
        1
        for line in daemon.log_lines()
        if line.get("event") in events and "burst/b" in str(line.get("input", ""))
    )


@pytest.mark.parametrize("mode", ["native", "polling"])
def test_a_burst_of_1000_pairs_is_answered_once_each(
    folders: Folders, mode: str, reliability: Collector
) -> None:
    config = folders.config(
        watch_mode=mode,
        poll_interval=1.0,
        settle_seconds=0.5,
        defaults={"size": 32, "iterations": 1},
    )
    daemon = start_daemon(folders, config=config)
    rss_idle = rss_mib(daemon.process.pid)
    primed = image_bytes(size=(40, 32), seed=4)
    inbox = folders.inbox / "burst"
    inbox.mkdir()
    (inbox / "prime.jpg").write_bytes(primed)
    (inbox / "prime.json").write_text(json.dumps({"style": "mosaic"}))
    wait_for((folders.outbox / "burst/prime.manifest.json").exists, 120, "the primed job")
    stage = stage_burst(folders, primed)
    peak = PeakRss(daemon.process.pid, folders.state / STATUS_FILE)
    peak.start()
    started = time.monotonic()
    for path in sorted(stage.iterdir()):
        os.rename(path, inbox / path.name)
    dropped = time.monotonic() - started
    wait_for(lambda: accepted(daemon) >= BURST, 240, "every pair claimed or rejected")
    accept_s = time.monotonic() - started
    out = folders.outbox / "burst"
    wait_for(lambda: len(answers(out)) >= BURST + 1, 240, "an answer to every pair")
    answer_s = time.monotonic() - started
    peak.running = False
    peak.join()
    assert daemon.process.poll() is None
    time.sleep(1.0)  # a late duplicate would show up now
    found = answers(out)
    assert found.pop("prime") == ["prime.manifest.json"]
    assert len(found) == BURST
    twice = {stem: names for stem, names in found.items() if len(names) != 1}
    assert twice == {}
    kinds = {"error": 0, "reused": 0, "rendered": 0}
    for stem, (name,) in found.items():
        n = int(stem[1:])
        if name.endswith(".error.json"):
            assert n < REJECTED, (stem, (out / name).read_text())
            kinds["error"] += 1
        else:
            manifest = json.loads((out / name).read_text())
            kinds["reused" if manifest.get("reused") else "rendered"] += 1
    assert kinds == {
        "error": REJECTED,
        "reused": BURST - REJECTED - RENDERED,
        "rendered": RENDERED,
    }
    assert 0 < peak.peak < RSS_LIMIT_MIB, f"daemon RSS peaked at {peak.peak:.0f} MiB"
    # Before the report listed LISTED of each (a bulk import's trial), this burst wrote 348 KB.
    assert 0 < peak.status_peak < STATUS_LIMIT, f"status.json peaked at {peak.status_peak} B"
    assert daemon.stop() == 0
    shutil.rmtree(stage, ignore_errors=True)
    reliability.record(
        f"load: burst of 1,000 pairs ({mode} watching)",
        BURST,
        f"every pair answered exactly once ({kinds['error']} unknown-style error reports, "
        f"{kinds['reused']} answered from an earlier identical result, {kinds['rendered']} "
        f"rendered at 32 px/1 iteration); daemon RSS below {RSS_LIMIT_MIB} MiB; status.json below "
        f"{STATUS_LIMIT // 1000} KB",
        f"dropped in {dropped:.1f} s; all accepted after {accept_s:.0f} s, all answered after "
        f"{answer_s:.0f} s; daemon RSS {rss_idle:.0f} MiB idle, {peak.peak:.0f} MiB peak; "
        f"status.json {peak.status_peak // 1000} KB at most",
    )
