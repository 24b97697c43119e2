"""A rendered result that is gone from the spool before its answer is written (removed by hand
or by a cleaner in the state folder) sends the job back to be rendered again, live and at a
restart, instead of blocking it forever as "state folder unwritable"; the photo then gets
exactly one answer; a result that keeps vanishing fails the job with a report that says why.
Real files and the real database; the worker's part is done by hand (no worker is started)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Folders, image_bytes, write_json
from test_hostile_disk import _info
from test_one_bad_job import _lifecycle

from daemon.intake.pairing import Arrival
from daemon.jobs import answers
from daemon.jobs.lifecycle import MAX_RESULTS_LOST, Lifecycle
from daemon.jobs.record import Job
from daemon.jobs.states import State
from daemon.pool.events import Done, Started
from daemon.pool.task import RESULT_INFO, result_file


def _claimed(lc: Lifecycle, folders: Folders) -> tuple[Job, bytes]:
    data = image_bytes(seed=3)
    (folders.inbox / "photo.jpg").write_bytes(data)
    write_json(folders.inbox / "photo.json", {"style": "mosaic"})
    lc.claim(Arrival(folders.inbox / "photo.jpg", folders.inbox / "photo.json", Path(".")))
    [job] = lc.jobs.values()
    return job, data


def _rendered(lc: Lifecycle, job: Job) -> Path:
    """What a worker leaves in the job's spool folder: the result, then its description.
    Returns the result's path."""
    folder = lc.spool.job_dir(job)
    result = result_file(folder, job.output_format)
    result.write_bytes(image_bytes(seed=99))
    (folder / RESULT_INFO).write_text(_info(job.params).model_dump_json())
    return result


def _sent_back(lc: Lifecycle, job: Job, folders: Folders, data: bytes) -> None:
    row = lc.store.get(job.id)
    assert row is not None and row.state is State.QUEUED
    assert list(lc.for_pool) == [job] and lc.publisher.blocked == {}
    assert list(folders.outbox.rglob("*.json")) == []  # no answer yet, and no report
    assert lc.spool.input_path(job).read_bytes() == data  # the original waits in the spool
    assert not (lc.spool.job_dir(job) / RESULT_INFO).exists()
    assert answers.RESULT_LOST in lc.spool.read_log(job)


def _answered_once(lc: Lifecycle, job: Job, folders: Folders) -> None:
    """Rendered again, the job gets one answer, which says what happened."""
    lc.for_pool.clear()  # taken by the worker, whose part is done by hand
    _rendered(lc, job)
    lc.handle(Started(job.id, worker=0, device="cpu"))
    lc.handle(Done(job.id, _info(job.params)))
    names = lc.spool.names(job)
    assert sorted(p.name for p in folders.outbox.rglob("*.json")) == [names.manifest.name]
    assert names.image.read_bytes() == image_bytes(seed=99)
    assert answers.RESULT_LOST in names.log.read_text()
    row = lc.store.get(job.id)
    assert row is not None and row.state is State.DONE


def test_a_result_gone_before_it_is_published_is_rendered_again(folders: Folders) -> None:
    lc = _lifecycle(folders)
    job, data = _claimed(lc, folders)
    lc.handle(Started(job.id, worker=0, device="cpu"))
    _rendered(lc, job).unlink()

    lc.handle(Done(job.id, _info(job.params)))
    _sent_back(lc, job, folders, data)
    lc.retry_due()  # nothing is waiting to be retried
    assert list(lc.for_pool) == [job]
    _answered_once(lc, job, folders)


def test_a_result_gone_while_the_daemon_was_down_is_rendered_again_at_start_up(
    folders: Folders,
) -> None:
    """The worker finished (its result and description are in the spool), the daemon stopped
    before publishing, and the result was removed meanwhile: the restart renders it again
    rather than retrying a write that can never succeed."""
    lc = _lifecycle(folders)
    job, data = _claimed(lc, folders)
    lc.handle(Started(job.id, worker=0, device="cpu"))
    result = _rendered(lc, job)
    lc.store.close()
    result.unlink()

    lc = _lifecycle(folders)
    lc.recover()
    _sent_back(lc, job, folders, data)
    _answered_once(lc, job, folders)


def test_a_result_that_keeps_vanishing_fails_the_job_with_a_report_that_says_why(
    folders: Folders,
) -> None:
    """Rendering again cannot help when something keeps deleting in the state folder: after
    MAX_RESULTS_LOST losses, counted across a restart, the job fails like any other, with an
    error report naming the likely cause, and the original goes back to the inbox."""
    lc = _lifecycle(folders)
    job, data = _claimed(lc, folders)
    for _ in range(MAX_RESULTS_LOST - 1):
        lc.for_pool.clear()
        lc.handle(Started(job.id, worker=0, device="cpu"))
        _rendered(lc, job).unlink()
        lc.handle(Done(job.id, _info(job.params)))
        _sent_back(lc, job, folders, data)
    lc.handle(Started(job.id, worker=0, device="cpu"))
    result = _rendered(lc, job)
    lc.store.close()  # the daemon stops before publishing; the result goes meanwhile
    result.unlink()

    lc = _lifecycle(folders)
    lc.recover()
    assert list(lc.for_pool) == []
    row = lc.store.get(job.id)
    assert row is not None and row.state is State.FAILED
    assert [p.name for p in folders.outbox.rglob("*.json")] == ["photo.error.json"]
    report = json.loads((folders.outbox / "photo.error.json").read_text())
    assert report["kind"] == "result_lost"
    assert f"{MAX_RESULTS_LOST} times" in report["error"] and "state folder" in report["error"]
    assert (folders.inbox / "photo.jpg").read_bytes() == data
