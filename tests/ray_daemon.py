"""What the Ray tests (test_ray_pool, test_ray_client) do with their daemons: drop photos,
wait for starts and answers, read the log, run doctor, and check no cluster was started."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, REPO, Daemon, Folders, image_bytes, wait_for, write_json

LONG_SECONDS = 5.0  # a job that a fault must reach mid-job runs about this long ...
PACE = {"iterations": 60}  # ... with this many iterations; measured on the first jobs


def long_job() -> dict[str, Any]:
    return {"params": {"iterations": PACE["iterations"]}}


def assert_json_log(daemon: Daemon) -> None:
    """Every line the daemon wrote (stdout and stderr) is one JSON object: Ray's output too."""
    for raw in daemon.log_path.read_text(errors="replace").splitlines():
        try:
            assert isinstance(json.loads(raw), dict), raw
        except ValueError:
            pytest.fail(f"a line of the daemon's output is not JSON: {raw!r}")


def events(daemon: Daemon, name: str) -> list[dict[str, Any]]:
    return [line for line in daemon.log_lines() if line.get("event") == name]


def descendants(pid: int) -> dict[int, str]:
    """pid -> command name of every process below `pid`."""
    parents: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        parents[int(entry.name)] = (int(stat[stat.rindex(")") + 2 :].split()[1]), name)
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, name) in parents.items():
            if ppid == parent and child not in found:
                found[child] = name
                frontier.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def assert_no_cluster_started_by(daemon: Daemon) -> None:
    """Ray did not start a cluster of its own under the daemon (its GCS or raylet)."""
    names = set(descendants(daemon.process.pid).values())
    assert not names & {"gcs_server", "raylet"}, names


def drop(folders: Folders, name: str, sidecar: dict[str, Any], seed: int = 0) -> None:
    (folders.inbox / f"{name}.jpg").write_bytes(image_bytes(seed=seed))
    write_json(folders.inbox / f"{name}.json", {"style": "mosaic", **sidecar})


def started(daemon: Daemon, name: str, count: int = 1) -> dict[str, Any]:
    def found() -> list[dict[str, Any]]:
        lines = [line for line in events(daemon, "job.started") if line["input"] == f"{name}.jpg"]
        return lines if len(lines) >= count else []

    lines: list[dict[str, Any]] = wait_for(found, 90, f"{name} started")
    return lines[count - 1]


def answered_once(folders: Folders, names: list[str]) -> dict[str, dict[str, Any]]:
    """Each job has exactly one answer, a result (a second would be `NAME.stylised-2.jpg`);
    its manifest by name."""
    for name in names:
        found = sorted(p.name for p in folders.outbox.glob(f"{name}.*"))
        assert found == [f"{name}.log", f"{name}.manifest.json", f"{name}.stylised.jpg"], found
    return {
        name: json.loads((folders.outbox / f"{name}.manifest.json").read_text()) for name in names
    }


def wait_answered(folders: Folders, names: list[str], timeout: float = 120) -> None:
    manifests = [folders.outbox / f"{name}.manifest.json" for name in names]
    wait_for(lambda: all(path.exists() for path in manifests), timeout, f"answers to {names}")


def doctor(config: Path, env: dict[str, str]) -> tuple[int, str, float]:
    begun = time.monotonic()
    done = subprocess.run(
        [*CLI, "doctor", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **env},
        timeout=180,
    )
    return done.returncode, done.stdout + done.stderr, time.monotonic() - begun
