"""The worker process: one engine on one device, loaded once, rendering one batch at a time
(usually a batch of one job; queued jobs with one style and output size come together).

It talks to the pool over its own pipe (never a queue shared with other workers, whose lock a
killed worker could leave held). A finished render is written into the job's folder before the
pool is told, so a daemon that dies at that moment finds the result on restart instead of
painting the photo again. The worker dies with the daemon: it sees end-of-file on its pipe (and
on Linux the kernel kills it with the parent), so no orphan keeps holding GPU memory.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from daemon.pool.events import Progress
from daemon.pool.messages import (
    CancelBatch,
    JobDone,
    JobFailed,
    JobProgress,
    JobStarted,
    RunBatch,
    StopWorker,
    WorkerLoadFailed,
    WorkerMessage,
    WorkerReady,
)
from daemon.pool.render import (
    Decoded,
    Sources,
    WorkerSpec,
    decode,
    describe,
    load_engine,
    render,
    write_result,
)
from daemon.pool.task import Task

if TYPE_CHECKING:
    from service.engine import Engine


def _die_with_parent() -> None:
    """Linux only: SIGKILL this process when the daemon dies, even mid-render."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


class Cancel:
    """The engine's cancel check: the pool sent `CancelBatch`, or went away."""

    def __init__(self, conn: Connection, parent: int) -> None:
        self._conn = conn
        self._parent = parent
        self.requested = False

    def __call__(self) -> bool:
        if not self.requested:
            if os.getppid() != self._parent:
                self.requested = True
            else:
                try:
                    while self._conn.poll():
                        if isinstance(self._conn.recv(), CancelBatch):
                            self.requested = True
                except (EOFError, OSError):
                    self.requested = True
        return self.requested


def worker_main(spec: WorkerSpec, conn: Connection) -> None:
    """Process entry point (multiprocessing spawn)."""
    _die_with_parent()
    # Ctrl-C in a terminal reaches the whole process group; the daemon decides what stops when.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    started = time.monotonic()
    try:
        engine = load_engine(spec)
    except Exception as exc:  # reported, then this worker is done
        kind, error, _ = describe(exc)
        conn.send(WorkerLoadFailed(spec.worker_id, kind, error))
        return
    import torch

    device = str(engine.device)
    threads = torch.get_num_threads()
    seconds = time.monotonic() - started
    conn.send(WorkerReady(spec.worker_id, device, seconds, os.getpid(), threads=threads))
    while True:
        try:
            command = conn.recv()
        except (EOFError, OSError):
            return  # the daemon is gone
        if isinstance(command, StopWorker):
            return
        if not isinstance(command, RunBatch):
            continue  # a late cancel for a batch that already ended
        cancel = Cancel(conn, parent)
        try:
            run_batch(engine, list(command.tasks), conn, cancel, spec)
        except (EOFError, OSError):
            return  # the pipe broke: the daemon is gone
        if cancel.requested and os.getppid() != parent:
            return


def run_batch(
    engine: Engine, tasks: list[Task], conn: Connection, cancel: Cancel, spec: WorkerSpec
) -> None:
    """Every job of the batch gets `JobStarted`, then `JobDone` or `JobFailed` of its own. The
    result is in the job's folder before `JobDone` is sent. Jobs that share a batch key are
    rendered together, as many at a time as the engine says fit in memory."""

    def send(message: WorkerMessage) -> None:
        conn.send(message)

    def fail(task: Task, exc: BaseException, batch_size: int = 1) -> None:
        kind, error, trace = describe(exc)
        send(JobFailed(spec.worker_id, task.job_id, task.attempt, kind, error, trace, batch_size))

    def report(progress: Progress) -> None:
        attempt = next(t.attempt for t in tasks if t.job_id == progress.job_id)
        send(JobProgress(spec.worker_id, attempt, progress))

    for task in tasks:
        send(JobStarted(spec.worker_id, task.job_id, task.attempt, os.getpid(), len(tasks)))
    waiting: list[Decoded] = []
    for task in tasks:
        try:
            waiting.append(decode(task, Sources.of(task)))
        except Exception as exc:
            fail(task, exc)
    while waiting:
        limit = 1
        if len(waiting) > 1:
            first = waiting[0]
            limit = engine.batch_limit(first.content.image.size, first.task.params)
        chunk, waiting = waiting[:limit], waiting[limit:]
        try:
            outputs = render(engine, chunk, report, cancel, spec)
        except Exception as exc:
            for job in chunk:
                fail(job.task, exc, len(chunk))
            if cancel.requested:
                for job in waiting:
                    fail(job.task, exc, len(chunk))
                return
            continue
        for output in outputs:
            try:
                write_result(output)
            except Exception as exc:  # a full state folder is the job's problem, not the pipe's
                fail(output.task, exc)
                continue
            send(JobDone(spec.worker_id, output.task.job_id, output.task.attempt, output.info))
