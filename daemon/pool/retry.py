"""What happens to a job that went wrong: the next attempt or, when there is none, the failure
in words with what to change. Pure rules, the same for every backend."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

from daemon.pool.api import PoolPolicy
from daemon.pool.events import FailureKind
from daemon.pool.task import Task

OOM_SHRINK = 0.7  # each out-of-memory retry renders at 70 % of the previous long side
MIN_SIZE = 16
RETRIED = ("crash", "timeout", "internal", "lost")  # worth another try as they are
# A job whose worker goes with its Ray cluster (the head, or the connection to it) is put back
# without counting an attempt, as it is rarely the job's fault. Rarely is not never: a photo
# that takes its node down every time (the OOM killer, a driver crash) would loop for ever. So
# after this many free requeues each further loss is a failed attempt (kind "lost"), retried
# as `retries` allows and then reported. 3 outlasts a head restart, a cut connection and a
# reconnect gone wrong in a row, yet gives a poison job up within minutes.
MAX_REQUEUES = 3


def _memory_fix(task: Task, policy: PoolPolicy, devices: Collection[str]) -> str:
    """What to change after running out of memory: never the setting already in use, nor a
    fall back to the CPU from the CPU (a re-test: told to set the oom_fallback it had)."""
    fixes = ["lower params.size"]
    gpu = task.device != "cpu" and any(device != "cpu" for device in devices)
    fallbacks = [
        f"'{name}'"
        for name in ("smaller", "cpu")
        if name != policy.oom_fallback and (gpu or name != "cpu")
    ]
    if policy.oom_fallback == "smaller":
        fixes.append(f"raise retries (now {policy.retries}) to try it smaller again")
    if fallbacks:
        fixes.append(f"set oom_fallback to {' or '.join(fallbacks)}")
    return ", or ".join(fixes)


def requeue_free(task: Task) -> bool:
    """Whether losing `task`'s worker with its cluster may put it back without an attempt."""
    return task.lost < MAX_REQUEUES


def next_attempt(
    task: Task, kind: FailureKind, policy: PoolPolicy, *, batched: bool = False
) -> Task | None:
    """The retry of `task` after a failure of `kind`, or None. A retry runs alone (no batch
    key): whatever went wrong in a batch should not take its companions down a second time.
    `batched`: the job failed in a batch of several."""
    attempt = task.attempt + 1
    if kind == "oom" and batched:
        # The batch did not fit, not the job: the same size again, alone, whatever the retry
        # settings (the batch was stylefold's choice, not the user's).
        return replace(task, attempt=attempt, batch_key=None)
    if task.attempt > policy.retries:
        return None
    alone = replace(task, attempt=attempt, batch_key=None)
    if kind in RETRIED:
        return alone
    if kind != "oom" or policy.oom_fallback == "fail":
        return None
    if policy.oom_fallback == "cpu":
        return None if task.device == "cpu" else replace(alone, device="cpu")
    size = task.params.size
    smaller = max(MIN_SIZE, int(size * OOM_SHRINK))
    if smaller >= size:
        return None
    return replace(alone, params=task.params.model_copy(update={"size": smaller}))


def explain(
    task: Task, kind: FailureKind, error: str, policy: PoolPolicy, devices: Collection[str] = ()
) -> str:
    """The failure of the last attempt in words, with what to change (`devices`: the pool's,
    for whether another than the CPU is there to fall back from)."""
    size = task.params.size
    tries = f"{task.attempt} attempt{'s' if task.attempt > 1 else ''}"
    if kind == "timeout":
        return (
            f"the job took longer than job_timeout ({policy.job_timeout:g} s) after {tries}; "
            f"lower params.size (now {size}) or params.iterations, or raise job_timeout"
        )
    if kind == "crash":
        return (
            f"{error} while rendering ({tries}); this usually means the machine "
            f"ran out of memory: lower params.size (now {size}) or the image's resolution"
        )
    if kind == "oom":
        said = error.partition("; ")[0]  # the engine's advice after it names no setting
        fix = _memory_fix(task, policy, devices)
        return f"out of memory at size {size} ({tries}): {said}; {fix}"
    if kind == "nospace":
        return (
            f"no space left in the daemon's state folder to store the result ({error}); the "
            "job waits and is rendered again once there is room"
        )
    if kind == "internal":
        return f"internal error: {error}; please report it with the job's log"
    if kind == "lost":
        return (
            f"its worker was lost {task.lost} times while rendering it, with its Ray cluster "
            f"(last: {error}); after the first {MAX_REQUEUES} each loss was a failed attempt, "
            f"and {tries} failed. A photo that takes its node down every time usually runs it "
            f"out of memory: lower params.size (now {size}) or the photo's resolution, check "
            "the nodes' memory and logs (dmesg, `ray logs`), then send it again"
        )
    return error
