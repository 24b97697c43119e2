"""The daemon on a real local Ray cluster: two CPU actors, jobs end to end, and an actor killed
mid-job whose job is retried on another actor and published exactly once.

One cluster (started here, in the test process) and one daemon (a `stylefold run` subprocess that
joins the cluster as a second driver) serve the module; the test process finds the daemon's
actors by name, as an operator would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, image_bytes, make_folders, start_daemon, wait_for, write_json

ray = pytest.importorskip(
    "ray", reason="the ray extra is not installed: pip install 'stylefold[ray]'"
)

from daemon.pool.ray_backend import NAMESPACE, actor_name  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    ray.init(num_cpus=2, include_dashboard=False, namespace=NAMESPACE, log_to_driver=False)
    try:
        yield str(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def daemon(cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    folders = make_folders(tmp_path_factory.mktemp("ray"))
    config = folders.config(backend="ray", ray_address=cluster, ray_cpu_actors=2, retries=1)
    started = start_daemon(folders, config=config)
    yield started
    assert started.stop() == 0


def _stylised(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.stylised.jpg"))


def test_jobs_flow_end_to_end_on_two_actors(daemon: Daemon) -> None:
    inbox = daemon.folders.inbox / "flow"
    for index in range(4):
        (inbox / f"p{index}.jpg").parent.mkdir(parents=True, exist_ok=True)
        (inbox / f"p{index}.jpg").write_bytes(image_bytes(seed=index))
        write_json(inbox / f"p{index}.json", {"style": "mosaic"})
    outbox = daemon.folders.outbox / "flow"
    wait_for(lambda: len(list(outbox.glob("*.manifest.json"))) == 4, 90, "four manifests")
    assert _stylised(outbox) == [f"p{index}.stylised.jpg" for index in range(4)]
    manifest = json.loads((outbox / "p0.manifest.json").read_text())
    assert manifest["device"] == "cpu" or "cpu" in json.dumps(manifest)
    workers = {
        line.get("worker") for line in daemon.log_lines() if line.get("event") == "job.started"
    }
    assert len(workers) == 2, "both actors took jobs"
    log_text = (outbox / "p0.log").read_text()
    assert "iteration" in log_text  # progress came back from the actor


def _started(daemon: Daemon, source: str) -> dict[str, Any]:
    def found() -> bool:
        return any(
            line.get("event") == "job.started" and source in str(line.get("input"))
            for line in daemon.log_lines()
        )

    wait_for(found, 60, f"{source} started")
    return next(
        line
        for line in daemon.log_lines()
        if line.get("event") == "job.started" and source in str(line.get("input"))
    )


def test_killed_actor_mid_job_yields_exactly_one_output(daemon: Daemon) -> None:
    inbox = daemon.folders.inbox / "kill"
    inbox.mkdir(parents=True)
    (inbox / "photo.jpg").write_bytes(image_bytes(seed=7))
    write_json(inbox / "photo.json", {"style": "waves", "params": {"iterations": 400}})
    started = _started(daemon, "kill/photo.jpg")
    victim = ray.get_actor(actor_name(daemon.process.pid, int(started["worker"])))
    ray.kill(victim, no_restart=True)
    outbox = daemon.folders.outbox / "kill"
    wait_for((outbox / "photo.manifest.json").exists, 90, "the retried job's manifest")
    assert _stylised(outbox) == ["photo.stylised.jpg"]
    assert not list(outbox.glob("*.error.json"))
    manifest = json.loads((outbox / "photo.manifest.json").read_text())
    assert "attempt" in json.dumps(manifest)
    retries = [line for line in daemon.log_lines() if line.get("event") == "job.retry"]
    assert retries and "Ray actor died" in str(retries[-1].get("error"))
    lost = [line for line in daemon.log_lines() if line.get("event") == "pool.worker_lost"]
    assert lost, "the pool noticed the dead actor"
    # A fresh actor replaced the dead one: the pool is back to two.
    wait_for(
        lambda: sum(line.get("event") == "pool.worker_ready" for line in daemon.log_lines()) >= 3,
        60,
        "a replacement actor",
    )
