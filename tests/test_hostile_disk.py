"""A full state folder (a small tmpfs the test mounts and fills up): nothing is lost, rendered
twice or explained wrongly, and the daemon carries on by itself once there is room. A photo
that cannot be claimed stays in the inbox; a job whose result cannot be stored waits (it is not
failed as "out of memory"); no empty claim folder is left behind. Needs root to mount."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import CLI, Daemon, Folders, image_bytes, mount_tmpfs, wait_for
from test_one_bad_job import _lifecycle
from test_reliability_disk import _fill

from daemon.intake.pairing import Arrival
from daemon.jobs import answers
from daemon.jobs.lifecycle import Lifecycle
from daemon.jobs.recovery import MAX_STARTS
from daemon.jobs.states import State
from daemon.jobs.store import DB_FILE
from daemon.pool.events import Done, Requeued, ResultInfo, Started
from daemon.status_model import DaemonInfo, StatusReport
from daemon.supervision import host_attention, status_line
from service.params import RenderParams

pytestmark = pytest.mark.heavy


@pytest.fixture
def tmpfs_state(folders: Folders) -> Iterator[Path]:
    mount_tmpfs(folders.state, "16m")
    yield folders.state
    subprocess.run(["umount", "-l", str(folders.state)], check=False)


def _drop(folders: Folders, stem: str, seed: int) -> bytes:
    data = image_bytes(seed=seed)
    (folders.inbox / f"{stem}.jpg").write_bytes(data)
    (folders.inbox / f"{stem}.json").write_text(json.dumps({"style": "mosaic"}))
    return data


def _events(daemon: Daemon, event: str) -> list[dict[str, object]]:
    return [line for line in daemon.log_lines() if line.get("event") == event]


def _claims_left(state: Path) -> list[str]:
    return [p.name for p in (state / "spool").iterdir()]


def _answers(folders: Folders) -> list[str]:
    return sorted(
        p.name
        for p in folders.outbox.iterdir()
        if p.name.endswith((".manifest.json", ".error.json"))
    )


def test_photos_wait_in_the_inbox_while_the_state_folder_is_full(
    folders: Folders, tmpfs_state: Path, daemon_factory: Callable[..., Daemon]
) -> None:
    daemon = daemon_factory()
    filler = _fill(tmpfs_state)
    data = _drop(folders, "photo", seed=1)
    failed = daemon.wait_for_log("job.claim_failed", timeout=60)
    assert "no space left" in str(failed["error"]).lower()
    reached = daemon.wait_for_log("limit.reached", timeout=10)
    assert reached["setting"] == "state" and "free space" in str(reached["fix"])
    assert (folders.inbox / "photo.jpg").read_bytes() == data
    assert _claims_left(tmpfs_state) == []  # no empty claim folder
    assert _answers(folders) == []

    filler.unlink()  # room again: no restart
    wait_for((folders.outbox / "photo.manifest.json").exists, 90, "the result once there is room")
    _archived(tmpfs_state, "photo.jpg", data)
    daemon.wait_for_log("limit.cleared", timeout=10)
    _drop(folders, "later", seed=2)
    wait_for((folders.outbox / "later.manifest.json").exists, 90, "a photo after the outage")
    assert _answers(folders) == ["later.manifest.json", "photo.manifest.json"]
    assert [line["setting"] for line in _events(daemon, "limit.reached")] == ["state"]
    wait_for(lambda: _claims_left(tmpfs_state) == [], 30, "the spool emptied")
    assert daemon.stop() == 0


def test_a_result_that_cannot_be_stored_waits_instead_of_failing(
    folders: Folders, tmpfs_state: Path, daemon_factory: Callable[..., Daemon]
) -> None:
    """Two photos at once: the first renders on the only worker while the second waits its
    turn, claimed; the state folder fills up before the second's render even starts, so its
    result cannot be stored whatever the timing."""
    daemon = daemon_factory(config=folders.config(defaults={"iterations": 8}))
    first = _drop(folders, "first", seed=3)
    second = _drop(folders, "second", seed=4)
    daemon.wait_for_log("job.claimed", timeout=60, count=2)
    filler = _fill(tmpfs_state)
    wait_for(lambda: _held(daemon, "second.jpg"), 180, "the second job held")
    [reason] = _held(daemon, "second.jpg")
    assert "no space left in the daemon's state folder" in reason
    spooled = [p.read_bytes() for p in (tmpfs_state / "spool").glob("*/input.jpg")]
    assert second in spooled  # the original is safe in the spool meanwhile
    assert "second.error.json" not in _answers(folders)

    filler.unlink()
    for stem in ("first", "second"):
        wait_for(
            (folders.outbox / f"{stem}.manifest.json").exists, 180, f"{stem} once there is room"
        )
    assert _answers(folders) == ["first.manifest.json", "second.manifest.json"]
    assert len(_held(daemon, "second.jpg")) == 1  # rendered again only once there was room
    assert _events(daemon, "job.failed") == []
    assert "out of memory" not in daemon.log_path.read_text().lower()
    _archived(tmpfs_state, "first.jpg", first)
    _archived(tmpfs_state, "second.jpg", second)
    wait_for(lambda: _claims_left(tmpfs_state) == [], 30, "the spool emptied")
    assert daemon.stop() == 0


def test_a_job_recorded_nowhere_while_the_state_database_is_full_runs_and_waits(
    folders: Folders, tmpfs_state: Path
) -> None:
    """The state database cannot record anything (its file system is full and its WAL is
    empty, so SQLite must grow a file for any write): the job still runs, shown as running,
    and its answer waits, blocked, instead of failing; it lands once there is room. The
    lifecycle runs on real files and the real database; the worker's events are given by
    hand (no worker is started)."""
    lc = _lifecycle(folders, publish_retry=0.0)  # a blocked answer: tried at the next retry
    data = _drop(folders, "photo", seed=5)
    inbox = folders.inbox
    lc.claim(Arrival(inbox / "photo.jpg", inbox / "photo.json", Path(".")))
    [job] = lc.jobs.values()
    (lc.spool.job_dir(job) / "result.jpg").write_bytes(image_bytes(seed=99))
    with sqlite3.connect(tmpfs_state / DB_FILE) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    filler = _fill(tmpfs_state)

    lc.handle(Started(job.id, worker=0, device="cpu"))
    assert [item.state for item in lc.items()] == ["running"]
    lc.handle(Done(job.id, _info(job.params)))
    assert job.id in lc.publisher.blocked
    assert "no space left for the state database" in lc.publisher.blocked[job.id].reason
    assert _answers(folders) == []
    [item] = lc.items()  # status names the state folder, not the outbox, and its fix
    assert item.state == "blocked" and item.blocked_on == "state"
    report = StatusReport(daemon=DaemonInfo(running=True, version="test"), jobs=lc.items())
    [attention] = host_attention(report)
    assert attention.what.startswith("the state folder is full or unwritable")
    assert attention.fix == answers.STATE_FIX and "state folder" in attention.fix
    assert "1 blocked (state folder full or unwritable)" in status_line(report)
    row = lc.store.get(job.id)
    assert row is not None and row.state is State.QUEUED  # nothing could be recorded
    time.sleep(0.05)
    lc.retry_due()  # refused again: blocked since the first refusal, not this one (an
    # administrator's trial: status said "for 30 s" of an outbox full for minutes)
    report = StatusReport(daemon=DaemonInfo(running=True, version="test"), jobs=lc.items())
    assert [item.since for item in host_attention(report)] == [attention.since]

    filler.unlink()
    lc.retry_due()
    assert _answers(folders) == ["photo.manifest.json"]
    row = lc.store.get(job.id)
    assert row is not None and row.state is State.DONE
    assert (tmpfs_state / "archive" / "photo.jpg").read_bytes() == data
    assert lc.jobs == {} and lc.publisher.blocked == {}


def _info(params: RenderParams) -> ResultInfo:
    """What a worker reports after writing its result into the spool."""
    return ResultInfo(
        iterations=4, stop_reason="iterations", losses={}, scales=[(48, 36)], device="cpu",
        output_size=(48, 36), input_size=(64, 48), input_format="JPEG", peak_memory_bytes=0,
        params=params, versions={"torch": "2", "pillow": "11"},
        timings={"decode_seconds": 0.1, "render_seconds": 1.0, "encode_seconds": 0.1,
                 "worker_total_seconds": 1.2},
    )  # fmt: skip


def _archived(state: Path, name: str, data: bytes) -> None:
    """The original lands in the archive just after its manifest is published."""
    archived = state / "archive" / name
    wait_for(archived.exists, 30, f"{name} archived")
    assert archived.read_bytes() == data


def _held(daemon: Daemon, image: str) -> list[str]:
    return [str(line["reason"]) for line in _events(daemon, "job.held") if line["input"] == image]


def test_the_daemon_starts_on_a_full_state_folder_and_finishes_a_release_later(
    folders: Folders, tmpfs_state: Path, daemon_factory: Callable[..., Daemon]
) -> None:
    """A job left RELEASING (its answer out, its originals not yet moved: here the archive
    was a read-only file system) meets a full state database at the next
    start. Recovery releases it, cannot record the end, and must not stop the daemon: it
    starts, `status` names the full state folder, and the job ends by itself once there is
    room. A reader keeps the database's WAL index open, as `stylefold web` does (SQLite cannot
    create one on a full disk); the WAL is emptied, so any write must grow it."""
    env = {"STYLEFOLD_TEST_PUBLISH_RETRY": "0.5", "STYLEFOLD_LOG_LEVEL": "debug"}
    archive = tmpfs_state / "archive"
    archive.mkdir()
    mount_tmpfs(archive, "4m")
    try:
        daemon = daemon_factory(env=env)  # a start checks that the archive is writable
        subprocess.run(["mount", "-o", "remount,ro", str(archive)], check=True)
        (folders.inbox / "trip").mkdir()
        data = image_bytes(seed=6)
        (folders.inbox / "trip" / "photo.jpg").write_bytes(data)
        (folders.inbox / "trip" / "photo.json").write_text(json.dumps({"style": "mosaic"}))
        blocked = daemon.wait_for_log("job.originals_unwritable", timeout=120)
        assert "Read-only file system" in str(blocked["error"])
        assert "archive folder" in str(blocked["fix"])
        assert blocked["input"] == "trip/photo.jpg"
        assert daemon.stop() == 0
    finally:
        subprocess.run(["umount", "-l", str(archive)], check=False)
    [row] = _rows(tmpfs_state)
    assert row[1] == "releasing"

    reader = sqlite3.connect(tmpfs_state / DB_FILE)
    try:
        reader.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        filler = _fill(tmpfs_state)
        daemon = daemon_factory(env=env)
        unwritable = daemon.wait_for_log("job.state_unwritable", timeout=30)
        assert "no space left for the state database" in str(unwritable["error"])
        assert "state folder" in str(unwritable["fix"])
        again = daemon.wait_for_log("job.still_blocked", timeout=30)  # tried again
        assert again["on"] == "state"
        assert daemon.process.poll() is None
        report = json.loads(
            subprocess.run(
                [*CLI, "status", "--config", str(folders.config()), "--json"],
                capture_output=True, check=True, env=daemon.env,
            ).stdout
        )  # fmt: skip
        assert [job["input"] for job in report["jobs"]] == ["trip/photo.jpg"]
        [attention] = [a for a in report["attention"] if "state folder" in a["what"]]
        assert "is full" in attention["what"] and "free space" in attention["fix"]
        assert (tmpfs_state / "archive" / "trip" / "photo.jpg").read_bytes() == data

        filler.unlink()
        wait_for(lambda: _rows(tmpfs_state)[0][1] == "done", 30, "the job recorded done")
    finally:
        reader.close()
    assert (folders.outbox / "trip" / "photo.manifest.json").exists()
    # The end is recorded before the spool folder goes (a crash between leaves a folder the
    # next start removes, never an end without a record): wait for the folder too.
    wait_for(lambda: _claims_left(tmpfs_state) == [], 30, "the spool emptied")
    assert daemon.stop() == 0


def _rows(state: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(state / DB_FILE) as db:
        return list(db.execute("SELECT id, state FROM jobs ORDER BY id"))


def test_a_start_the_full_state_database_cannot_record_still_counts_for_max_starts(
    folders: Folders, tmpfs_state: Path
) -> None:
    """A job started MAX_STARTS - 1 times, each recorded, is started once more while the state
    database cannot record anything, and the daemon dies while it renders (the crash loop
    MAX_STARTS guards against). That start must count: the next start-up gives the job up
    with its report instead of starting it again uncounted."""

    def lifecycle() -> Lifecycle:
        return _lifecycle(folders, publish_retry=0.0)

    lc = lifecycle()
    data = _drop(folders, "photo", seed=7)
    inbox = folders.inbox
    lc.claim(Arrival(inbox / "photo.jpg", inbox / "photo.json", Path(".")))
    [job] = lc.jobs.values()
    for _ in range(MAX_STARTS - 1):
        lc.handle(Started(job.id, worker=0, device="cpu"))
        lc.handle(Requeued(job.id, "the worker went away"))
    row = lc.store.get(job.id)
    assert row is not None and row.starts == MAX_STARTS - 1 and row.state is State.QUEUED
    with sqlite3.connect(tmpfs_state / DB_FILE) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    filler = _fill(tmpfs_state)
    lc.handle(Started(job.id, worker=0, device="cpu"))
    row = lc.store.get(job.id)
    assert row is not None and row.starts == MAX_STARTS - 1  # not recorded
    lc.store.close()  # the daemon dies while rendering
    filler.unlink()

    lc = lifecycle()
    lc.recover()
    assert lc.for_pool == deque()
    report = json.loads((folders.outbox / "photo.error.json").read_text())
    assert report["kind"] == "interrupted" and f"{MAX_STARTS} times" in report["error"]
    assert (folders.inbox / "photo.jpg").read_bytes() == data


@pytest.mark.ray
def test_a_ray_result_that_cannot_be_stored_is_nospace_as_on_a_local_worker(
    tmpfs_state: Path,
) -> None:
    """On Ray the daemon writes the actor's result into the job folder itself: a full state
    folder there must be 'nospace' (the job waits), as it is for a local worker, not an
    internal error."""
    pytest.importorskip("ray")
    from daemon.pool.messages import JobFailed
    from daemon.pool.ray_backend import RayActors
    from daemon.pool.ray_protocol import Finished
    from daemon.pool.render import Rendered
    from daemon.pool.task import Task

    job_dir = tmpfs_state / "spool" / "j1"
    job_dir.mkdir(parents=True)
    task = Task("j1", job_dir, job_dir / "in.jpg", (), RenderParams(size=32), "jpg", 90, 10)
    info = _info(task.params)
    _fill(tmpfs_state)
    actors = RayActors("auto", cpu_actors=0)  # nothing connects until it starts
    (reply,) = actors._finished(Finished(0, Rendered(task, b"\xff" * 65536, info)))
    assert isinstance(reply, JobFailed)
    assert reply.kind == "nospace", reply


def test_status_says_how_much_room_a_held_result_needs(folders: Folders, tmpfs_state: Path) -> None:
    """Found by an operator's trial: on a state folder smaller than a result's room the held
    job never went on, and nothing said how much room it waited for."""
    lc = _lifecycle(folders, publish_retry=1.0)
    for stem, size in (("small", 48), ("large", 2100)):  # 4.0 and 16.6 MiB of room
        _drop(folders, stem, seed=1)
        sidecar = {"style": "mosaic", "params": {"size": size}}
        (folders.inbox / f"{stem}.json").write_text(json.dumps(sidecar))
        lc.claim(Arrival(folders.inbox / f"{stem}.jpg", folders.inbox / f"{stem}.json", Path()))
    small, large = sorted(lc.jobs.values(), key=lambda job: job.params.size)
    lc.space.hold(small, "no space")
    [item] = [a for a in lc.attention() if "wait for room" in a.what]
    assert item.what.startswith("1 rendered job(s) wait for room for their result: the next "
                                "needs 4.0 MiB free in the state folder, ")  # fmt: skip
    assert item.fix.startswith("free space where the state folder is")
    lc.space.held = [large, small]
    [item] = [a for a in lc.attention() if "wait for room" in a.what]
    assert item.what.endswith("and its file system holds only 16.0 MiB"), item.what
    assert item.fix.startswith("move the state folder to a larger file system")
