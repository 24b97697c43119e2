"""The worker pool with real worker processes and the real engine on tiny images."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import TINY_PARAMS, make_image

from daemon.pool.local import Pool, PoolEvent
from daemon.pool.worker import StyleRef, Task


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
        params={**TINY_PARAMS, **params},
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
            if event.kind in ("done", "failed", "cancelled"):
                ended.add(event.job_id)
    return events


@pytest.fixture(scope="module")
def pool() -> object:
    pool = Pool(
        ["cpu"], 1, job_timeout=60, retries=1, batch_max=3, progress_every=1,
        warm_params=TINY_PARAMS,
    )  # fmt: skip
    pool.start()
    pool.wait_ready(90)
    yield pool
    pool.stop()


def test_jobs_run_first_in_first_out_with_progress(pool: Pool, tmp_path: Path) -> None:
    tasks = [_task(tmp_path, f"job-{i}") for i in range(3)]
    for task in tasks:
        assert pool.submit(task)
    events = _run_until(pool, {t.job_id for t in tasks})
    started = [e.job_id for e in events if e.kind == "started"]
    assert started == [t.job_id for t in tasks]
    assert any(e.kind == "progress" for e in events)
    for task in tasks:
        assert task.result_path.stat().st_size > 0
        assert task.info_path.exists()
    done = [e for e in events if e.kind == "done"]
    assert done[0].data["output_size"] == [48, 36]
    assert done[0].data["iterations"] == TINY_PARAMS["iterations"]


def test_bad_input_fails_without_retry(pool: Pool, tmp_path: Path) -> None:
    task = _task(tmp_path, "broken")
    task.content.write_bytes(b"not an image at all")
    pool.submit(task)
    events = _run_until(pool, {"broken"})
    assert [e.kind for e in events] == ["started", "failed"]
    assert events[-1].data["kind"] == "input"
    assert "not an image format" in events[-1].data["reason"]


def test_a_killed_worker_is_replaced_and_its_job_retried(pool: Pool, tmp_path: Path) -> None:
    task = _task(tmp_path, "victim", iterations=8)
    pool.submit(task)
    events = _kill_at_first_progress(
        pool, lambda seen: any(e.kind in ("done", "failed") for e in seen)
    )
    kinds = [e.kind for e in events if e.kind != "progress"]
    assert kinds[:2] == ["started", "retry"], kinds
    retry = next(e for e in events if e.kind == "retry")
    assert retry.task.attempt == 2 and "SIGKILL" in retry.data["error"]
    assert kinds[-1] == "done"
    assert pool.ready_workers() == 1


def test_jobs_with_one_batch_key_run_together_and_the_rest_wait(pool: Pool, tmp_path: Path) -> None:
    key = "same style, params and size"
    a, other, b, c, d = (_task(tmp_path, name) for name in ("a", "other", "b", "c", "d"))
    queued = [replace(a, batch_key=key), other, replace(b, batch_key=key)]
    queued += [replace(c, batch_key=key), replace(d, batch_key=key)]
    for task in queued:
        assert pool.submit(task)
    events = _run_until(pool, {t.job_id for t in queued})
    ends = [e for e in events if e.kind in ("started", "done")]
    order = [(e.kind, e.job_id) for e in ends]
    # a, b and c (batch_max 3) start together and finish before `other`, first in line after them.
    assert order[:3] == [("started", "a"), ("started", "b"), ("started", "c")], order
    assert {e.job_id for e in ends[3:6]} == {"a", "b", "c"} and ends[6].job_id == "other"
    done = {e.job_id: e.data for e in events if e.kind == "done"}
    assert [done[j]["batch_size"] for j in ("a", "b", "c", "other", "d")] == [3, 3, 3, 1, 1]
    for task in queued:
        assert task.result_path.stat().st_size > 0


def test_a_batch_whose_worker_dies_is_retried_job_by_job(pool: Pool, tmp_path: Path) -> None:
    tasks = [replace(_task(tmp_path, f"pair-{i}", iterations=8), batch_key="k") for i in (1, 2)]
    for task in tasks:
        pool.submit(task)
    events = _kill_at_first_progress(pool, lambda seen: sum(e.kind == "done" for e in seen) == 2)
    retries = [e for e in events if e.kind == "retry"]
    assert {e.job_id for e in retries} == {"pair-1", "pair-2"}
    assert all(e.task.batch_key is None for e in retries)
    assert [e.data["batch_size"] for e in events if e.kind == "done"] == [1, 1]


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
            if event.kind == "progress" and not killed:
                os.kill(_pid_of(events), signal.SIGKILL)
                killed = True
    return events


def _pid_of(events: list[PoolEvent]) -> int:
    started = [e for e in events if e.kind == "started"]
    return int(started[-1].data["pid"])


def test_cancel_leaves_the_job_cancelled(pool: Pool, tmp_path: Path) -> None:
    task = _task(tmp_path, "cancel-me", iterations=100)
    pool.submit(task)
    events: list[PoolEvent] = []
    deadline = time.monotonic() + 60
    while not any(e.kind in ("done", "failed", "cancelled") for e in events):
        assert time.monotonic() < deadline
        new = pool.poll(0.1)
        events += new
        if any(e.kind == "progress" for e in new):
            pool.cancel_running()
    assert events[-1].kind == "cancelled"
    assert not task.result_path.exists()


def test_timeout_kills_the_worker_and_fails_with_the_setting_named(tmp_path: Path) -> None:
    pool = Pool(["cpu"], 1, job_timeout=1.0, retries=0, warm_params=TINY_PARAMS)
    pool.start()
    try:
        pool.wait_ready(90)
        pool.submit(_task(tmp_path, "slow", iterations=5000, size=96))
        events = _run_until(pool, {"slow"}, timeout=90)
        kinds = [e.kind for e in events if e.kind != "progress"]
        assert kinds == ["started", "failed"]
        assert "job_timeout" in events[-1].data["reason"]
    finally:
        pool.stop()


def test_out_of_memory_retries_smaller_then_on_cpu() -> None:
    pool = Pool(["cpu"], 1, retries=2, oom_fallback="smaller")
    task = Task("j", Path("/x"), Path("/x/in.jpg"), (), {"size": 512}, "jpg", 90, 10)
    smaller = pool._retry_of(task, "oom")
    assert smaller is not None and smaller.params["size"] == 358 and smaller.attempt == 2
    assert pool._retry_of(task, "input") is None
    pool.oom_fallback = "fail"
    assert pool._retry_of(task, "oom") is None
    pool.retries = 0
    assert pool._retry_of(task, "crash") is None
    # A batch that ran out of memory: each job again at its own size, alone.
    keyed_but_alone = pool._retry_of(replace(task, batch_key="k"), "oom")
    assert keyed_but_alone is None  # it ran alone: the configured fallback (now "fail") holds
    alone = pool._retry_of(replace(task, batch_key="k"), "oom", batched=True)
    assert alone is not None and alone.params["size"] == 512 and alone.batch_key is None


def test_batch_size_auto_is_off_on_a_cpu_and_on_for_a_gpu() -> None:
    def task(job_id: str) -> Task:
        return Task(job_id, Path("/x"), Path("/x/in.jpg"), (), {}, "jpg", 90, 10, batch_key="k")

    for device, expected in (("cpu", 0), ("cuda:0", 2)):
        pool = Pool([device], 1, batch_max=0)
        for job_id in ("a", "b", "c"):
            pool.submit(task(job_id))
        first = pool._take_for(device)
        assert first is not None and len(pool._batch_mates(first, device)) == expected
        assert pool.may_batch() == (expected > 0)
    explicit = Pool(["cpu"], 1, batch_max=2)
    for job_id in ("a", "b", "c"):
        explicit.submit(task(job_id))
    first = explicit._take_for("cpu")
    assert first is not None and [t.job_id for t in explicit._batch_mates(first, "cpu")] == ["b"]


def test_a_full_queue_refuses_more() -> None:
    pool = Pool(["cpu"], 1, queue_max=2)
    task = Task("j", Path("/x"), Path("/x/in.jpg"), (), {}, "jpg", 90, 10)
    assert pool.submit(task) and pool.submit(task)
    assert not pool.submit(task)
    assert pool.drop_queued() == [task, task]


def test_workers_die_with_the_daemon(tmp_path: Path) -> None:
    """kill -9 of the process that owns the pool must not leave workers holding the device."""
    script = textwrap.dedent(
        """
        import sys, time
        from daemon.pool.local import Pool
        pool = Pool(["cpu"], 1, warm_params={"size": 48})
        pool.start()
        pool.wait_ready(90)
        for worker in pool._workers.values():
            print("PID", worker.process.pid, flush=True)
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
