"""The pool over real worker processes and the real engine on tiny images."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import TINY_PARAMS, make_image

from daemon.pool import (
    Cancelled,
    Done,
    Failed,
    PoolEvent,
    PoolPolicy,
    Progress,
    ResultInfo,
    Retrying,
    SetupError,
    Started,
    StyleRef,
    Task,
    core,
)
from daemon.pool.core import Pool
from daemon.pool.local import WorkerProcesses
from daemon.pool.render import FAULT_OOM, EngineSetup
from service.params import RenderParams
from service.weights import WeightsConfig

ENDS = (Done, Failed, Cancelled)


def _pool(policy: PoolPolicy, progress_every: int = 10) -> Pool:
    setup = EngineSetup(progress_every, warm_params=RenderParams.model_validate(TINY_PARAMS))
    return Pool(WorkerProcesses(["cpu"], 1, setup), policy)


def _task(tmp_path: Path, job_id: str, **params: object) -> Task:
    job_dir = tmp_path / job_id
    job_dir.mkdir()
    content = make_image(job_dir / "input.jpg", seed=hash(job_id) % 1000)
    style = make_image(tmp_path / "style.jpg", size=(48, 48), seed=7)
    return Task(
        job_id=job_id,
        job_dir=job_dir,
        content=content,
        styles=(StyleRef(style, 1.0),),
        params=RenderParams.model_validate({**TINY_PARAMS, **params}),
        output_format="jpg",
        output_quality=90,
        max_pixels=1_000_000,
    )


def _run_until(pool: Pool, done: set[str], timeout: float = 60.0) -> list[PoolEvent]:
    """Poll until every job in `done` has ended (done, failed or cancelled)."""
    events: list[PoolEvent] = []
    ended: set[str] = set()
    deadline = time.monotonic() + timeout
    while not done <= ended:
        assert time.monotonic() < deadline, f"jobs still open: {done - ended}; events {events}"
        for event in pool.poll(0.1):
            events.append(event)
            if isinstance(event, ENDS):
                ended.add(event.job_id)
    return events


def _kinds(events: list[PoolEvent]) -> list[str]:
    return [type(e).__name__ for e in events if not isinstance(e, Progress)]


@pytest.fixture(scope="module")
def pool() -> Iterator[Pool]:
    pool = _pool(PoolPolicy(job_timeout=60, retries=1, batch_max=3), progress_every=1)
    pool.start()
    pool.wait_ready(90)
    yield pool
    pool.stop()


def test_jobs_run_first_in_first_out_with_progress(pool: Pool, tmp_path: Path) -> None:
    tasks = [_task(tmp_path, f"job-{i}") for i in range(3)]
    for task in tasks:
        assert pool.submit(task)
    assert pool.queued == [t.job_id for t in tasks]
    events = _run_until(pool, {t.job_id for t in tasks})
    started = [e for e in events if isinstance(e, Started)]
    assert [e.job_id for e in started] == [t.job_id for t in tasks]
    assert all(e.device == "cpu" and e.pid and e.batch_size == 1 for e in started)
    assert {e.job_id for e in events if isinstance(e, Progress)} == {t.job_id for t in tasks}
    done = [e for e in events if isinstance(e, Done)]
    for task, end in zip(tasks, done, strict=True):
        assert task.result_path.stat().st_size > 0
        assert ResultInfo.model_validate_json(task.info_path.read_text()) == end.info
    assert done[0].info.output_size == (48, 36)
    assert done[0].info.iterations == TINY_PARAMS["iterations"]
    assert pool.queued == []


def test_bad_input_fails_without_retry(pool: Pool, tmp_path: Path) -> None:
    task = _task(tmp_path, "broken")
    task.content.write_bytes(b"not an image at all")
    pool.submit(task)
    events = _run_until(pool, {"broken"})
    assert _kinds(events) == ["Started", "Failed"]
    failed = events[-1]
    assert isinstance(failed, Failed) and failed.kind == "input"
    assert "not an image format" in failed.reason


def test_a_photo_over_max_bytes_is_not_read_into_the_worker(pool: Pool, tmp_path: Path) -> None:
    """A claimed photo can still grow (a writer holding it open); the worker reads no more
    than the daemon's max_input_bytes of it (an attacker's trial: 3 GiB were read whole)."""
    task = replace(_task(tmp_path, "grown"), max_bytes=100)  # a JPEG's headers alone are more
    assert task.content.stat().st_size > 100
    pool.submit(task)
    events = _run_until(pool, {"grown"})
    failed = events[-1]
    assert isinstance(failed, Failed) and failed.kind == "input"
    assert "the photo is more than 100 bytes, over the limit" in failed.reason


def test_a_killed_worker_is_replaced_and_its_job_retried(pool: Pool, tmp_path: Path) -> None:
    task = _task(tmp_path, "victim", iterations=8)
    pool.submit(task)
    retry_seen = time.time()
    events = _kill_at_first_progress(pool, lambda seen: any(isinstance(e, Done) for e in seen))
    assert _kinds(events) == ["Started", "Retrying", "Started", "Done"]
    retry = next(e for e in events if isinstance(e, Retrying))
    assert retry.attempt == 2 and retry.kind == "crash" and "SIGKILL" in retry.error
    assert retry.size == TINY_PARAMS["size"] and retry.device is None
    done = events[-1]
    assert isinstance(done, Done) and done.info.attempt == 2
    assert pool.ready_workers() == 1
    (worker,) = pool.workers()
    assert worker.state == "idle" and worker.pid != _pid_of(events[:1])
    assert worker.started_at is not None and worker.started_at > retry_seen - 60  # the new one


def test_jobs_with_one_batch_key_run_together_and_the_rest_wait(pool: Pool, tmp_path: Path) -> None:
    key = "same style, params and size"
    a, other, b, c, d = (_task(tmp_path, name) for name in ("a", "other", "b", "c", "d"))
    queued = [replace(a, batch_key=key), other, replace(b, batch_key=key)]
    queued += [replace(c, batch_key=key), replace(d, batch_key=key)]
    for task in queued:
        assert pool.submit(task)
    events = _run_until(pool, {t.job_id for t in queued})
    ends = [e for e in events if isinstance(e, Started | Done)]
    order = [(type(e).__name__, e.job_id) for e in ends]
    # a, b and c (batch_max 3) start together and finish before `other`, first in line after them.
    assert order[:3] == [("Started", "a"), ("Started", "b"), ("Started", "c")], order
    assert {e.job_id for e in ends[3:6]} == {"a", "b", "c"} and ends[6].job_id == "other"
    done = {e.job_id: e.info for e in events if isinstance(e, Done)}
    assert [done[j].batch_size for j in ("a", "b", "c", "other", "d")] == [3, 3, 3, 1, 1]
    for task in queued:
        assert task.result_path.stat().st_size > 0


def test_a_batch_whose_worker_dies_is_retried_job_by_job(pool: Pool, tmp_path: Path) -> None:
    tasks = [replace(_task(tmp_path, f"pair-{i}", iterations=8), batch_key="k") for i in (1, 2)]
    for task in tasks:
        pool.submit(task)
    events = _kill_at_first_progress(pool, lambda seen: sum(isinstance(e, Done) for e in seen) == 2)
    retries = [e for e in events if isinstance(e, Retrying)]
    assert {e.job_id for e in retries} == {"pair-1", "pair-2"}
    # Each retry runs alone (its batch key is dropped), one after the other.
    assert [e.info.batch_size for e in events if isinstance(e, Done)] == [1, 1]


def _kill_at_first_progress(
    pool: Pool, finished: Callable[[list[PoolEvent]], bool]
) -> list[PoolEvent]:
    """Poll until `finished`, SIGKILLing the busy worker at the first progress event."""
    killed = False
    events: list[PoolEvent] = []
    deadline = time.monotonic() + 90
    while not finished(events):
        assert time.monotonic() < deadline, events
        for event in pool.poll(0.1):
            events.append(event)
            if isinstance(event, Progress) and not killed:
                os.kill(_pid_of(events), signal.SIGKILL)
                killed = True
    return events


def _pid_of(events: list[PoolEvent]) -> int:
    started = [e for e in events if isinstance(e, Started)]
    assert started[-1].pid is not None
    return started[-1].pid


def test_cancel_leaves_the_job_cancelled(pool: Pool, tmp_path: Path) -> None:
    task = _task(tmp_path, "cancel-me", iterations=100)
    pool.submit(task)
    events: list[PoolEvent] = []
    deadline = time.monotonic() + 60
    while not any(isinstance(e, ENDS) for e in events):
        assert time.monotonic() < deadline
        new = pool.poll(0.1)
        events += new
        if any(isinstance(e, Progress) for e in new):
            assert [w.state for w in pool.workers()] == ["busy"]
            pool.cancel_running()
    assert isinstance(events[-1], Cancelled)
    assert not task.result_path.exists()
    assert pool.ready_workers() == 1  # the worker stopped the job and stays


def test_timeout_kills_the_worker_and_fails_with_the_setting_named(tmp_path: Path) -> None:
    pool = _pool(PoolPolicy(job_timeout=1.0, retries=0))
    pool.start()
    try:
        pool.wait_ready(90)
        pool.submit(_task(tmp_path, "slow", iterations=5000, size=96))
        events = _run_until(pool, {"slow"}, timeout=90)
        assert _kinds(events) == ["Started", "Failed"]
        failed = events[-1]
        assert isinstance(failed, Failed) and failed.kind == "timeout"
        assert "job_timeout (1 s)" in failed.reason
    finally:
        pool.stop()


def test_out_of_memory_is_retried_smaller_by_the_worker_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAULT_OOM, "1")  # the worker's first attempt of every job runs out
    pool = _pool(PoolPolicy(retries=1, oom_fallback="smaller"))
    pool.start()
    try:
        pool.wait_ready(90)
        pool.submit(replace(_task(tmp_path, "big"), batch_key="k"))
        events = _run_until(pool, {"big"})
    finally:
        pool.stop()
    assert _kinds(events) == ["Started", "Retrying", "Started", "Done"]
    retry = next(e for e in events if isinstance(e, Retrying))
    assert retry.kind == "oom" and retry.size == 33 and "injected" in retry.error
    done = events[-1]
    assert isinstance(done, Done) and done.info.params.size == 33 and done.info.attempt == 2
    assert max(done.info.output_size) == 33


def test_a_worker_that_cannot_load_is_reported_with_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = WeightsConfig(vgg19=tmp_path / "missing.pth")
    pool = Pool(WorkerProcesses(["cpu"], 1, EngineSetup(weights=missing)))
    assert pool.load_trouble() is None
    pool.start()
    try:
        # SetupError: the settings' fault, which the daemon exits on with EX_CONFIG.
        with pytest.raises(SetupError, match=r"no worker could start: cpu: .*missing\.pth"):
            pool.wait_ready(90)
        assert pool.ready_workers() == 0
        # What `status` says while replacements keep failing, until a while after the last.
        trouble = pool.load_trouble()
        assert trouble is not None and trouble.failures >= 1 and "missing.pth" in trouble.reason
        monkeypatch.setattr(core, "LOAD_TROUBLE_WINDOW", 0.0)
        assert pool.load_trouble() is None
    finally:
        pool.stop()


@pytest.mark.heavy
def test_once_a_worker_starts_the_others_waiting_out_a_back_off_start_too() -> None:
    """Workers killed while loading (four times) make their replacements wait longer each
    time (2, 4, 8, 16 s); once one of them starts, the device works again and the other
    starts at once rather than after the rest of its 16 s."""
    pool = Pool(WorkerProcesses(["cpu"], 2, EngineSetup()), PoolPolicy())
    pool.start()
    try:
        killed: set[int] = set()
        while len(killed) < 4:
            pool.poll(0.05)
            for worker in pool.workers():
                if (
                    worker.pid is not None
                    and worker.pid not in killed
                    and worker.state == "starting"
                ):
                    os.kill(worker.pid, signal.SIGKILL)
                    killed.add(worker.pid)
        first_ready: float | None = None
        second_started: float | None = None
        deadline = time.monotonic() + 90
        while second_started is None and time.monotonic() < deadline:
            pool.poll(0.05)
            workers = pool.workers()
            if first_ready is None and any(worker.state == "idle" for worker in workers):
                first_ready = time.monotonic()
            elif first_ready is not None and len(workers) == 2:
                second_started = time.monotonic()
        assert first_ready is not None and second_started is not None
        assert second_started - first_ready < 2.0
        # Deaths while loading are load trouble too (a crash loop left status silent).
        trouble = pool.load_trouble()
        assert trouble is not None and trouble.failures == 4, trouble
        assert "while loading" in trouble.reason
        pool.wait_ready(90)
        assert pool.ready_workers() == 2
    finally:
        pool.stop()


def test_policy_reloads_live_and_drain_empties_the_queue(tmp_path: Path) -> None:
    """No worker needed: the queue and the policy are the pool's own."""
    pool = Pool(WorkerProcesses(["cpu"], 1), PoolPolicy(queue_max=1))
    first = _task(tmp_path, "first")
    assert pool.submit(first) and not pool.has_room() and not pool.submit(first)
    assert not pool.may_batch()  # auto batching is off on a CPU
    pool.configure(PoolPolicy(queue_max=2, batch_max=4))
    assert pool.has_room() and pool.may_batch()
    assert pool.submit(_task(tmp_path, "second"))
    assert pool.queued == ["first", "second"]
    pool.drain()
    assert pool.queued == [] and pool.poll(0.01) == []


def test_auto_batching_is_on_for_a_gpu() -> None:
    assert Pool(WorkerProcesses(["cuda:0"], 1)).may_batch()
    assert not Pool(WorkerProcesses(["cuda:0"], 1), PoolPolicy(batch_max=1)).may_batch()


def test_workers_die_with_the_daemon(tmp_path: Path) -> None:
    """kill -9 of the process that owns the pool must not leave workers holding the device."""
    script = textwrap.dedent(
        """
        import sys, time
        from daemon.pool.core import Pool
        from daemon.pool.local import WorkerProcesses
        pool = Pool(WorkerProcesses(["cpu"], 1))
        pool.start()
        pool.wait_ready(90)
        for worker in pool.workers():
            print("PID", worker.pid, flush=True)
        time.sleep(60)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        line = ""
        while not line.startswith("PID "):
            line = owner.stdout.readline()
            assert line, "the pool owner exited early"
        worker_pid = int(line.split()[1])
        owner.kill()
        owner.wait(10)
        deadline = time.monotonic() + 10
        while _alive(worker_pid):
            assert time.monotonic() < deadline, "worker outlived the daemon"
            time.sleep(0.1)
    finally:
        owner.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().split()[2] != "Z"
