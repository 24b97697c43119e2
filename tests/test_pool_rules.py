"""The pool's pure rules, the same for every backend: the task queue (first in first out,
device constraints, batches) and what a failure leads to (retry, smaller, CPU, or a failure
report that says what to change)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from daemon.pool import PoolPolicy, Task
from daemon.pool.queue import AUTO_GPU_BATCH, TaskQueue, batch_size
from daemon.pool.ray_driver import StyleRefs
from daemon.pool.retry import MAX_REQUEUES, explain, next_attempt, requeue_free
from service.params import RenderParams


def _task(job_id: str, **fields: object) -> Task:
    task = Task(job_id, Path("/x"), Path("/x/in.jpg"), (), RenderParams(size=512), "jpg", 90, 10)
    return replace(task, **fields)


def _queue(*tasks: Task, limit: int = 100) -> TaskQueue:
    queue = TaskQueue(limit)
    for task in tasks:
        assert queue.submit(task)
    return queue


# -- the queue ---------------------------------------------------------------------------------


def test_tasks_leave_first_in_first_out() -> None:
    queue = _queue(_task("a"), _task("b"), _task("c"))
    assert queue.job_ids == ["a", "b", "c"]
    assert [t.job_id for t in queue.take("cpu", 1)] == ["a"]
    assert [t.job_id for t in queue.take("cpu", 1)] == ["b"]
    assert queue.job_ids == ["c"]


def test_a_full_queue_refuses_more_until_one_leaves() -> None:
    queue = _queue(_task("a"), _task("b"), limit=2)
    assert not queue.has_room() and not queue.submit(_task("c"))
    queue.take("cpu", 1)
    assert queue.submit(_task("c")) and queue.job_ids == ["b", "c"]


def test_put_back_goes_first_in_line_even_when_full() -> None:
    queue = _queue(_task("a"), _task("b"), limit=2)
    taken = queue.take("cpu", 1)
    assert queue.submit(_task("c"))
    queue.put_back(taken)
    assert queue.job_ids == ["a", "b", "c"]


def test_a_task_bound_to_the_cpu_waits_for_a_cpu_member() -> None:
    queue = _queue(_task("needs-cpu", device="cpu"), _task("any"))
    assert [t.job_id for t in queue.take("cuda:0", 8)] == ["any"]
    assert queue.take("cuda:0", 8) == []
    assert [t.job_id for t in queue.take("cpu", 1)] == ["needs-cpu"]


def test_top_inbox_folders_take_turns() -> None:
    """A bulk import's trial: a photo sent on purpose waited behind a camera roll of 3,000 in
    `DCIM/` (and a family's: one person's long jobs held another's). Each folder's own photos
    keep their order; a folder with nothing queued is served first when a photo comes."""
    queue = _queue(
        *[_task(f"roll{n}", share="DCIM") for n in range(4)],
        _task("urgent", share=""),
        _task("alice", share="alice"),
        _task("alice2", share="alice"),
    )

    def order(count: int) -> list[str]:
        return [queue.take("cpu", 1)[0].job_id for _ in range(count)]

    ahead = ["roll0", "urgent", "alice", "roll1", "alice2", "roll2", "roll3"]
    assert queue.job_ids == ahead  # what status lists: the order they are taken in
    assert order(4) == ahead[:4] and queue.job_ids == ahead[4:]
    assert queue.submit(_task("bob", share="bob"))
    assert order(2) == ["bob", "alice2"]
    [again] = queue.take("cpu", 1)
    assert again.job_id == "roll2"
    queue.put_back([again])  # first in line already: first again
    assert order(2) == ["roll2", "roll3"]


def test_a_batch_takes_the_oldest_tasks_with_its_key_up_to_the_size() -> None:
    queue = _queue(
        _task("a", batch_key="k"),
        _task("other", batch_key="j"),
        _task("alone"),
        _task("b", batch_key="k"),
        _task("c", batch_key="k"),
        _task("d", batch_key="k"),
    )
    assert [t.job_id for t in queue.take("cuda:0", 3)] == ["a", "b", "c"]
    assert queue.job_ids == ["other", "alone", "d"]
    assert [t.job_id for t in queue.take("cuda:0", 3)] == ["other"]  # no mate left for "j"
    assert [t.job_id for t in queue.take("cuda:0", 3)] == ["alone"]  # no key: alone


def test_a_batch_keeps_one_preview_cadence_and_the_members_device() -> None:
    queue = _queue(
        _task("a", batch_key="k"),
        _task("previewed", batch_key="k", preview_every=5),
        _task("cpu-only", batch_key="k", device="cpu"),
        _task("b", batch_key="k"),
    )
    assert [t.job_id for t in queue.take("cuda:0", 8)] == ["a", "b"]


def test_auto_batches_on_a_gpu_only() -> None:
    assert batch_size("cpu", 0) == 1
    assert batch_size("cuda:0", 0) == batch_size("mps", 0) == AUTO_GPU_BATCH
    assert batch_size("cpu", 3) == batch_size("cuda:1", 3) == 3


# -- retries -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["crash", "timeout", "internal", "lost"])
def test_crash_timeout_internal_errors_and_losses_are_retried_as_they_were(kind: str) -> None:
    task = _task("j", batch_key="k")
    retry = next_attempt(task, kind, PoolPolicy(retries=1))
    assert retry == replace(task, attempt=2, batch_key=None)  # alone, same size and device
    assert next_attempt(retry, kind, PoolPolicy(retries=1)) is None
    assert next_attempt(task, kind, PoolPolicy(retries=0)) is None


@pytest.mark.parametrize("kind", ["input", "weights", "engine"])
def test_problems_with_the_job_itself_are_not_retried(kind: str) -> None:
    assert next_attempt(_task("j"), kind, PoolPolicy(retries=5)) is None


def test_out_of_memory_retries_smaller_down_to_the_minimum() -> None:
    policy = PoolPolicy(retries=20, oom_fallback="smaller")
    sizes = []
    task: Task | None = _task("j")
    while task is not None:
        sizes.append(task.params.size)
        task = next_attempt(task, "oom", policy)
    assert sizes[:3] == [512, 358, 250]
    assert sizes[-1] == 16 and sizes[-2] > 16  # the minimum ends it, not the retries


def test_out_of_memory_moves_to_the_cpu_once() -> None:
    policy = PoolPolicy(retries=3, oom_fallback="cpu")
    on_cpu = next_attempt(_task("j"), "oom", policy)
    assert on_cpu is not None and on_cpu.device == "cpu" and on_cpu.params.size == 512
    assert next_attempt(on_cpu, "oom", policy) is None


def test_out_of_memory_fails_when_asked_to() -> None:
    assert next_attempt(_task("j"), "oom", PoolPolicy(oom_fallback="fail")) is None


def test_a_batch_out_of_memory_runs_each_job_alone_at_its_size_whatever_the_settings() -> None:
    policy = PoolPolicy(retries=0, oom_fallback="fail")
    task = _task("j", batch_key="k", attempt=4)
    alone = next_attempt(task, "oom", policy, batched=True)
    assert alone == replace(task, attempt=5, batch_key=None)
    # Alone it is the user's size that does not fit: the configured fallback ("fail") holds.
    assert next_attempt(alone, "oom", policy, batched=False) is None


def test_failure_reasons_name_the_setting_to_change() -> None:
    policy = PoolPolicy(job_timeout=90)
    task = _task("j", attempt=2)
    timeout = explain(task, "timeout", "killed", policy)
    assert "job_timeout (90 s)" in timeout and "2 attempts" in timeout and "512" in timeout
    assert "lower params.size" in explain(task, "crash", "killed by SIGKILL", policy)
    assert "raise retries" in explain(_task("j", device="cpu"), "oom", "", policy)
    # Never the setting in use, nor the CPU as a fallback from the CPU (a re-test).
    oom = _task("j", attempt=3)
    said = "cpu ran out of memory; use a smaller size"
    smaller = PoolPolicy(retries=2, oom_fallback="smaller")
    assert explain(oom, "oom", said, smaller, ["cpu"]) == (
        "out of memory at size 512 (3 attempts): cpu ran out of memory; lower params.size, or "
        "raise retries (now 2) to try it smaller again"
    )
    fail = PoolPolicy(oom_fallback="fail")
    assert explain(oom, "oom", said, fail, ["cpu"]).endswith(
        "; lower params.size, or set oom_fallback to 'smaller'"
    )
    assert explain(oom, "oom", said, fail, ["cuda:0"]).endswith(
        "; lower params.size, or set oom_fallback to 'smaller' or 'cpu'"
    )
    assert "please report" in explain(task, "internal", "KeyError", policy)
    assert explain(task, "input", "not an image format", policy) == "not an image format"
    lost = explain(replace(task, lost=5), "lost", "the Ray cluster was lost (gone)", policy)
    assert "lost 5 times" in lost and "(last: the Ray cluster was lost (gone))" in lost
    assert f"after the first {MAX_REQUEUES}" in lost and "2 attempts failed" in lost
    assert "lower params.size (now 512)" in lost and "send it again" in lost


def test_losing_the_cluster_requeues_for_free_only_so_often() -> None:
    assert [requeue_free(_task("j", lost=n)) for n in range(MAX_REQUEUES + 2)] == [
        *[True] * MAX_REQUEUES,
        False,
        False,
    ]


# -- the package -------------------------------------------------------------------------------


def test_importing_the_pool_imports_neither_ray_nor_torch() -> None:
    """The daemon stays small (no torch), and Ray loads only for backend "ray"."""
    code = (
        "import sys, daemon.pool, daemon.pool.local, daemon.pool.core\n"
        "print(sorted({'ray', 'torch', 'daemon.pool.ray_backend'} & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_the_ray_driver_puts_each_style_once_and_holds_the_latest() -> None:
    """daemon.pool.ray_driver.StyleRefs, with a stand-in for `ray.put` that records what it is
    given (the cluster path is tests/test_ray_client.py's, through a real `ray://` link)."""
    put: list[bytes] = []

    def record(data: bytes) -> int:
        put.append(data)
        return len(put)  # a reference: which put made it

    styles = StyleRefs(record, size=2)
    first, second, third = (bytes([n]) * 1000 for n in range(3))
    assert styles(first) == styles(bytes(bytearray(first))) == 1  # equal bytes: one put
    assert styles(second) == 2
    assert styles(first) == 1  # used again: now the latest
    assert styles(third) == 3  # lets go of `second`, the least recently used
    assert styles(first) == 1
    assert styles(second) == 4
    assert put == [first, second, third, second]


def test_the_ray_driver_holds_styles_up_to_a_byte_budget() -> None:
    """A few large paintings must not pin the head's object store: past the budget the least
    recently used go, but the style just used is held even when it alone is over it."""
    put: list[bytes] = []

    def record(data: bytes) -> int:
        put.append(data)
        return len(put)

    styles = StyleRefs(record, size=32, budget=2500)
    small, medium, large = bytes(1000), b"m" * 1200, b"L" * 3000
    assert styles(small) == 1
    assert styles(medium) == 2  # 2200 bytes held: both kept
    assert styles(small) == 1
    assert styles(large) == 3  # over the budget alone: held, everything older let go
    assert styles(large) == 3
    assert styles(small) == 4  # let go above, so put again; `large` goes now
    assert styles(medium) == 5
    assert styles(small) == 4  # 2200 bytes: both still held
    assert put == [small, medium, large, small, medium]
