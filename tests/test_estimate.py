"""When a queued job starts: the pace learned from finished renders, laid over the workers."""

from __future__ import annotations

import pytest

from daemon.jobs.estimate import Pace, planned_work, queue_starts, start_in
from daemon.jobs.record import AnswerNames, Job
from daemon.pool.api import WorkerState
from daemon.pool.events import ResultInfo, WorkerTimings, WorkerVersions
from service.params import RenderParams


def _info(params: RenderParams, seconds: float, batch: int = 1) -> ResultInfo:
    return ResultInfo(
        iterations=params.iterations, stop_reason="iterations", losses={}, scales=[(64, 48)],
        device="cpu", output_size=(64, 48), input_size=(64, 48), input_format="JPEG",
        peak_memory_bytes=0, batch_size=batch, params=params,
        versions=WorkerVersions(torch="2", pillow="11"),
        timings=WorkerTimings(decode_seconds=0, render_seconds=seconds, encode_seconds=0,
                              worker_total_seconds=seconds),
    )  # fmt: skip


def test_work_counts_every_pass_by_its_pixels() -> None:
    one = RenderParams(size=512, iterations=100, multiscale="off")
    assert planned_work(one) == 100 * 512**2
    assert planned_work(one.model_copy(update={"iterations": 200})) == 2 * planned_work(one)
    # coarse to fine: the 512 px pass with the whole cap, then its share at 1024 px
    large = RenderParams(size=1024, iterations=100)
    assert planned_work(large) == 100 * 512**2 + 30 * 1024**2


def test_one_kind_of_render_is_paced_in_proportion_and_a_batch_shares_its_time() -> None:
    pace = Pace()
    small = RenderParams(size=64, iterations=10)
    assert pace.seconds(small) is None  # nothing rendered yet: no guess
    pace.record(_info(small, 2.0))
    pace.record(_info(small, 200.0))  # one slow outlier
    pace.record(_info(small, 3.0))
    assert pace.seconds(small) == pytest.approx(3.0)
    doubled = small.model_copy(update={"iterations": 20})
    assert pace.seconds(doubled) == pytest.approx(6.0)
    batched = Pace()
    batched.record(_info(small, 8.0, batch=4))  # four photos in 8 s: 2 s of a worker each
    assert batched.seconds(small) == pytest.approx(2.0)


def test_renders_of_different_sizes_give_a_fixed_part_and_a_rate() -> None:
    """Found measuring the estimates: paced in proportion to one small render (decoding and
    encoding a large part of it), larger jobs were predicted to take twice their time."""
    pace = Pace()
    for iterations, seconds in ((10, 1.5), (20, 2.0), (40, 3.0), (80, 5.0), (30, 60.0)):
        pace.record(_info(RenderParams(size=100, iterations=iterations), seconds))
    # 1 s fixed plus 0.05 s an iteration fits all but the outlier
    assert pace.seconds(RenderParams(size=100, iterations=160)) == pytest.approx(9.0)
    assert pace.seconds(RenderParams(size=200, iterations=40)) == pytest.approx(1 + 4 * 2.0)


def test_each_job_goes_to_the_worker_free_first() -> None:
    assert start_in([10.0, 0.0], [5.0, 5.0, 5.0, 5.0]) == [0.0, 5.0, 10.0, 10.0]
    assert start_in([3.0], [4.0, 1.0]) == [3.0, 7.0]


def test_an_unknown_time_leaves_what_follows_unknown() -> None:
    assert start_in([0.0], [2.0, None, 3.0]) == [0.0, 2.0]
    assert start_in([None, 0.0], [1.0]) == []  # a worker whose job has no estimate yet
    assert start_in([], [1.0]) == []  # no workers (all failed to start)


def _queued(job_id: str, params: RenderParams) -> Job:
    return Job(
        id=job_id, claimed_at=0.0, rel_dir="", image_name=f"{job_id}.jpg", sidecar_name=None,
        sidecar=None, input_file="input.jpg", input_sha256="0" * 64, styles=[], params=params,
        output_format="jpg", output_quality=92, key=job_id,
        names=AnswerNames(stem=job_id, image_ext="jpg", number=1),
    )  # fmt: skip


def test_members_still_starting_are_no_free_workers() -> None:
    """An operator's trial: with the Ray cluster down, and while its actors had no room, a
    queued job "starts in about 0 s" for minutes."""
    params = RenderParams(size=64, iterations=10)
    pace = Pace()
    pace.record(_info(params, 4.0))
    queued = [_queued("a", params), _queued("b", params)]
    starting = [WorkerState(0, "cpu", "starting"), WorkerState(1, "cpu", "starting")]
    assert queue_starts(queued, [], starting, pace, now=0.0) == {}
    one_up = [WorkerState(0, "cpu", "idle"), WorkerState(1, "cpu", "starting")]
    assert queue_starts(queued, [], one_up, pace, now=0.0) == {"a": 0.0, "b": 4.0}
