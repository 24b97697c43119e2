"""A job whose worker keeps going with its Ray cluster (a photo that takes its node down every
time): put back for free only `MAX_REQUEUES` times, counted in the state database across
restarts, then failed like a crash through the `retries` path, with a report that says so.

The real lifecycle, state database, spool, outbox and pool rules (`daemon.pool.core.Pool`)
run here; only the backend is the test's, one that says exactly what the Ray backend says when
its driver loses the cluster under a job (`JobStarted` on send, then `MemberLost` with the
cluster). tests/test_ray_pool.py loses real clusters, once per job.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from conftest import Folders, make_image, write_json

from daemon.config import Settings, load_settings
from daemon.intake.pairing import Arrival
from daemon.intake.styles import StyleLibrary
from daemon.jobs.lifecycle import Lifecycle
from daemon.jobs.states import State
from daemon.jobs.store import Store
from daemon.metrics import Metrics
from daemon.pool import PoolPolicy, Requeued, Retrying, Task
from daemon.pool.api import Outage
from daemon.pool.core import Pool
from daemon.pool.messages import JobStarted, MemberLost, Report, WorkerReady
from daemon.pool.retry import MAX_REQUEUES

LOSS = "the Ray cluster was lost (the Ray driver process was killed by SIGKILL)"


class ClusterLostWithEveryJob:
    """`Members` whose cluster goes down under every job it is sent, as a poison photo's would
    (while `losing`; else the job just runs)."""

    kind = "Ray actor"
    batches = False
    outage: Outage | None = None

    def __init__(self) -> None:
        self.devices = ["cpu"]
        self.sent: list[Task] = []
        self.losing = True
        self._said: list[Report] = []

    def open(self, tick: Callable[[], bool]) -> list[str]:
        return list(self.devices)

    def spawn(self, worker_id: int, device: str) -> int | None:
        self._said.append(WorkerReady(worker_id, device, 0.0, 0, node="node-a"))
        return None

    def send(self, worker_id: int, tasks: list[Task]) -> bool:
        (task,) = tasks
        self.sent.append(task)
        self._said.append(JobStarted(worker_id, task.job_id, task.attempt, pid=None))
        if self.losing:
            self._said.append(MemberLost(worker_id, LOSS, with_cluster=True))
        return True

    def cancel(self, worker_id: int, tasks: list[Task]) -> None:
        pass

    def remove(self, worker_id: int) -> None:
        pass

    def receive(self, timeout: float) -> list[Report]:
        said, self._said = self._said, []
        return said

    def close(self, timeout: float) -> None:
        pass


def _daemon(settings: Settings, members: ClusterLostWithEveryJob) -> Lifecycle:
    """What `Daemon` wires together at start-up, over the same state folder each time."""
    pool = Pool(members, PoolPolicy.from_settings(settings))
    pool.start()
    library = StyleLibrary.from_settings(settings)
    lifecycle = Lifecycle(settings, Store(settings.state), pool, library, Metrics.disabled(), 1.0)
    lifecycle.recover()
    return lifecycle


def _turn(lifecycle: Lifecycle) -> list[object]:
    """One turn of the daemon's loop, as far as jobs go: feed the pool, act on its news."""
    lifecycle.feed(float("inf"))
    events = lifecycle.pool.poll(0.0)
    for event in events:
        lifecycle.handle(event)
    return list(events)


def _turns_until(lifecycle: Lifecycle, done: Callable[[], bool]) -> list[object]:
    """The loop's turns until `done` (a bounded number: a test that loops fails instead)."""
    events: list[object] = []
    for _ in range(100):
        if done():
            return events
        events += _turn(lifecycle)
    raise AssertionError(f"not done after 100 turns: {events}")


def _claim(folders: Folders, lifecycle: Lifecycle) -> str:
    image = make_image(folders.inbox / "poison.jpg")
    sidecar = write_json(folders.inbox / "poison.json", {"style": "mosaic"})
    lifecycle.claim(Arrival(image, sidecar, Path(".")))
    (job_id,) = lifecycle.jobs
    return job_id


def _settings(folders: Folders, retries: int) -> Settings:
    return load_settings(folders.config(retries=retries), {})


def test_a_job_that_loses_its_cluster_every_time_ends_with_a_report(folders: Folders) -> None:
    settings = _settings(folders, retries=1)
    members = ClusterLostWithEveryJob()
    lifecycle = _daemon(settings, members)
    job_id = _claim(folders, lifecycle)
    events = _turns_until(lifecycle, lambda: job_id not in lifecycle.jobs)

    # MAX_REQUEUES losses for free, then attempt 1 and its one retry (retries = 1) fail.
    assert len(members.sent) == MAX_REQUEUES + 2 == 5
    assert [t.attempt for t in members.sent] == [1, 1, 1, 1, 2]
    assert [t.lost for t in members.sent] == [0, 1, 2, 3, 4]
    assert sum(isinstance(e, Requeued) for e in events) == MAX_REQUEUES
    assert [(e.attempt, e.kind) for e in events if isinstance(e, Retrying)] == [(2, "lost")]

    row = Store(settings.state).get(job_id)
    assert row is not None and row.state is State.FAILED
    assert row.lost == MAX_REQUEUES + 1  # the last loss ended the job instead
    report = json.loads((folders.outbox / "poison.error.json").read_text())
    assert report["kind"] == "lost" and report["job_id"] == job_id
    error = report["error"]
    assert "its worker was lost 5 times" in error and "Ray driver process" in error
    assert f"after the first {MAX_REQUEUES}" in error and "2 attempts failed" in error
    assert "lower params.size" in error and "send it again" in error
    log = (folders.outbox / "poison.log").read_text()
    assert log.count("put back in the queue (the Ray cluster was lost") == MAX_REQUEUES
    assert (folders.inbox / "poison.jpg").exists()  # the original went back, as after a crash


def test_the_count_survives_a_restart_and_a_stop_of_the_daemon_is_free(folders: Folders) -> None:
    settings = _settings(folders, retries=0)
    members = ClusterLostWithEveryJob()
    lifecycle = _daemon(settings, members)
    job_id = _claim(folders, lifecycle)
    _turns_until(lifecycle, lambda: len(members.sent) == 2)
    members.losing = False
    _turns_until(lifecycle, lambda: job_id in lifecycle.running)  # on a replacement

    # SIGTERM: `Daemon._shutdown` puts the running job back; that is never the job's doing.
    lifecycle.requeue(lifecycle.jobs[job_id], "the daemon stopped")
    lifecycle.pool.stop()
    lifecycle.store.close()
    row = Store(settings.state).get(job_id)
    assert row is not None and (row.state, row.lost) == (State.QUEUED, 2)

    again = ClusterLostWithEveryJob()
    lifecycle = _daemon(settings, again)  # the next start: the job is submitted again
    events = _turns_until(lifecycle, lambda: job_id not in lifecycle.jobs)
    # Sent 3 times before the stop (the third ran until it), twice after: the third free loss
    # after the restart, then the fourth one counted: with retries = 0 that failed the job.
    assert [t.lost for t in members.sent + again.sent] == [0, 1, 2, 2, 3]
    assert sum(isinstance(e, Requeued) for e in events) == 1
    report = json.loads((folders.outbox / "poison.error.json").read_text())
    assert report["kind"] == "lost"
    assert (
        "its worker was lost 4 times" in report["error"] and "1 attempt failed" in report["error"]
    )
