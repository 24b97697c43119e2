"""One bad job never takes the daemon down: a job record damaged in the state database (or
written by a version whose job record differs) is set aside at start-up, its originals kept,
while the other jobs carry on; listings and status read past it. Real files, the real
database (the record is damaged with SQL); no worker is started."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time

import pytest
from conftest import Folders, image_bytes, write_json
from structlog.testing import capture_logs

from daemon.config import load_settings
from daemon.intake.pairing import Arrival
from daemon.intake.styles import StyleLibrary
from daemon.jobs.lifecycle import HEADER_MARK, Lifecycle
from daemon.jobs.states import State
from daemon.jobs.store import DB_FILE, Store
from daemon.metrics import Metrics
from daemon.pool import make_pool
from daemon.status import from_store
from daemon.status_model import DaemonInfo


def _lifecycle(folders: Folders, publish_retry: float = 1.0) -> Lifecycle:
    """The real lifecycle on the real database; the worker's events are given by hand."""
    settings = load_settings(folders.config(), {})
    return Lifecycle(
        settings,
        Store(settings.state),
        make_pool(settings),
        StyleLibrary.from_settings(settings),
        Metrics.disabled(),
        publish_retry,
    )


def _claim(lc: Lifecycle, folders: Folders, name: str, seed: int) -> tuple[str, bytes]:
    image = folders.inbox / name
    data = image_bytes(seed=seed)
    image.write_bytes(data)
    sidecar = write_json(image.with_suffix(".json"), {"style": "mosaic"})
    before = set(lc.jobs)
    lc.claim(Arrival(image, sidecar, image.parent.relative_to(folders.inbox)))
    [job_id] = set(lc.jobs) - before
    return job_id, data


def test_a_damaged_job_record_is_set_aside_at_start_up_and_the_rest_carry_on(
    folders: Folders,
) -> None:
    lc = _lifecycle(folders)
    bad, data = _claim(lc, folders, "bad.jpg", seed=1)
    good, _ = _claim(lc, folders, "good.jpg", seed=2)
    lc.store.close()  # the daemon stops; then the record is damaged
    with sqlite3.connect(folders.state / DB_FILE) as db:
        db.execute("UPDATE jobs SET record = ? WHERE id = ?", ('{"id": 1}', bad))
    db.close()

    lc = _lifecycle(folders)
    [row] = [row for row in lc.store.active() if row.id == bad]  # listing reads past it
    assert row.job is None and "does not read as a job" in str(row.record_error)
    # On one line, naming each field (status showed a pydantic error's lines as literal \n).
    assert "\n" not in str(row.record_error)
    assert "claimed_at: Field required; rel_dir: Field required" in str(row.record_error)
    assert lc.recover() == 2  # as many as its `job.recovered` lines, the one set aside too
    assert [job.id for job in lc.for_pool] == [good]
    assert bad not in lc.jobs
    row = lc.store.get(bad)
    assert row is not None and row.state is State.BROKEN
    kept = folders.state / "spool" / f".broken-{bad}"
    assert (kept / "input.jpg").read_bytes() == data
    report = from_store(lc.store, DaemonInfo(running=False, version="test"))
    [attention] = report.attention
    assert f"job {bad} (bad.jpg) is broken" in attention.what
    assert "does not read as a job" in str(attention.where) and str(kept) in str(attention.where)


def test_a_broken_job_stays_in_status_while_its_folder_is_kept(folders: Folders) -> None:
    """Status listed a broken job only while it was among the 50 latest ends: on a busy
    daemon it vanished within minutes, its photo still set aside for a person (and the
    history's prune would have dropped its row later)."""
    lc = _lifecycle(folders)
    bad, _ = _claim(lc, folders, "bad.jpg", seed=1)
    lc.store.close()
    with sqlite3.connect(folders.state / DB_FILE) as db:
        db.execute("UPDATE jobs SET record = ? WHERE id = ?", ('{"id": 1}', bad))
    db.close()
    lc = _lifecycle(folders)
    lc.recover()
    with sqlite3.connect(folders.state / DB_FILE) as db:  # then many jobs end after it
        db.executemany(
            "INSERT INTO jobs (id, state, since, input) VALUES (?,?,?,?)",
            [(f"29990101-000000-{n:06d}-cccccc", "done", 4e9 + n, "x.jpg") for n in range(80)],
        )
    db.close()

    def broken() -> list[str]:
        report = from_store(lc.store, DaemonInfo(running=False, version="test"))
        return [item.what for item in report.attention]

    assert broken() == [f"job {bad} (bad.jpg) is broken"]
    assert lc.store.prune(keep=60).jobs == 20  # the history is pruned, the broken job kept
    assert broken() == [f"job {bad} (bad.jpg) is broken"]
    shutil.rmtree(folders.state / "spool" / f".broken-{bad}")  # the person is done with it
    assert broken() == []


def test_a_crash_just_after_a_claim_fails_the_job_and_returns_its_photo(
    folders: Folders, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Something unforeseen (here a stand-in for a bug: the job's log cannot be written) right
    after the photo moved into the spool was reported as a pair "left in the inbox", while the
    photo sat in the spool with a job nobody ran until the next start. It now ends through the
    one failure path: photo back in the inbox, a report that says so, nothing left running."""
    lc = _lifecycle(folders)

    def broken(job: object, line: str) -> None:
        raise RuntimeError("a bug after the claim")

    monkeypatch.setattr(lc.spool, "append_log", broken)
    image = folders.inbox / "photo.jpg"
    data = image_bytes(seed=3)
    image.write_bytes(data)
    sidecar = write_json(image.with_suffix(".json"), {"style": "mosaic"})
    lc.arrived(Arrival(image, sidecar, image.parent.relative_to(folders.inbox)))
    lc.feed(time.monotonic() + 10)
    monkeypatch.undo()
    [row] = lc.store.finished(10)
    assert row.state is State.FAILED and "a bug after the claim" in str(row.reason)
    assert lc.jobs == {} and not lc.for_pool and not lc.busy
    assert image.read_bytes() == data  # back where it was
    report = json.loads((folders.outbox / "photo.error.json").read_text())
    assert "a bug after the claim" in report["error"]
    assert list((folders.state / "spool").iterdir()) == []


def test_a_photo_whose_header_read_never_ended_is_left_to_the_worker(folders: Folders) -> None:
    """A photo that stops the daemon in a header parser (some of Pillow's are C) would stop it
    at every start, its job queued again each time. A read that began and never ended (what
    such a crash leaves in the job's folder) is not begun again: the worker, a process of its
    own, decodes the photo, where a crash is a failed attempt."""
    lc = _lifecycle(folders)
    job_id, _ = _claim(lc, folders, "photo.jpg", seed=1)
    spooled = lc.spool.job_dir(lc.jobs[job_id])
    lc.store.close()
    (spooled / "input.jpg").write_bytes(os.urandom(3000))  # what a header read refuses at once
    (spooled / HEADER_MARK).touch()

    lc = _lifecycle(folders)
    with capture_logs() as logs:
        lc.recover()
        lc.feed(time.monotonic() + 10)
    assert job_id in lc.jobs and lc.pool.queued == [job_id]  # handed to a worker to decode
    assert [e["input"] for e in logs if e["event"] == "job.header_not_read"] == ["photo.jpg"]
    assert list(folders.outbox.iterdir()) == []
    assert (spooled / HEADER_MARK).exists()  # never read here again, whatever restarts come
