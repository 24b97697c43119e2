"""Members as local worker processes, one or more per device.

Spawned, not forked, so no CUDA state is ever inherited; each has its own pipe. A process that
exits is noticed through its sentinel and reported lost after whatever it still had to say.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

import structlog

from daemon.gpu_probe import GPU_FIX, probe_devices
from daemon.pool.api import Outage
from daemon.pool.messages import (
    CancelBatch,
    Command,
    MemberLost,
    Report,
    RunBatch,
    StopWorker,
)
from daemon.pool.render import EngineSetup, WorkerSpec, cpu_threads
from daemon.pool.task import Task
from daemon.pool.worker import worker_main

log = structlog.get_logger(__name__)


def visible_devices() -> list[str]:
    """What 'auto' means: every visible CUDA GPU, else MPS, else the CPU (daemon.gpu_probe,
    which asks a child process, so the daemon itself never imports torch). A driver host
    without usable CUDA is an error in the log, never a silent fallback."""
    probe = probe_devices()
    if probe.problem is not None:
        log.error("pool.gpu_unusable", problem=probe.problem, devices=probe.devices, fix=GPU_FIX)
    return probe.devices


def expand_devices(devices: list[str]) -> list[str]:
    return visible_devices() if devices == ["auto"] else list(devices)


@dataclass
class _Process:
    process: BaseProcess
    conn: Connection


class WorkerProcesses:
    """`Members` (daemon.pool.core) as processes on this machine."""

    kind = "worker"
    batches = True
    outage: Outage | None = None  # processes on this machine have no cluster to lose

    def __init__(
        self, devices: list[str], workers_per_device: int = 1, setup: EngineSetup | None = None
    ) -> None:
        self.devices = list(devices)  # "auto" is resolved by `open`, not at construction
        self.workers_per_device = workers_per_device
        self.setup = setup or EngineSetup()
        self._context = multiprocessing.get_context("spawn")
        self._processes: dict[int, _Process] = {}

    def open(self, tick: Callable[[], bool]) -> list[str]:
        self.devices = expand_devices(self.devices)
        return [device for device in self.devices for _ in range(self.workers_per_device)]

    def spawn(self, worker_id: int, device: str) -> int | None:
        if device not in self.devices:
            self.devices.append(device)
        cpu_workers = self.devices.count("cpu") * self.workers_per_device
        threads = cpu_threads(cpu_workers) if device == "cpu" else None
        spec = WorkerSpec(worker_id, device, threads, self.setup)
        ours, theirs = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=worker_main, args=(spec, theirs), name=f"stylefold-worker-{worker_id}"
        )
        process.daemon = True
        process.start()
        theirs.close()
        self._processes[worker_id] = _Process(process, ours)
        return process.pid

    def send(self, worker_id: int, tasks: list[Task]) -> bool:
        return self._send(worker_id, RunBatch(tuple(tasks)))

    def cancel(self, worker_id: int, tasks: list[Task]) -> None:
        self._send(worker_id, CancelBatch())

    def _send(self, worker_id: int, command: Command) -> bool:
        member = self._processes.get(worker_id)
        if member is None:
            return False
        try:
            member.conn.send(command)
        except (OSError, BrokenPipeError):
            return False
        return True

    def remove(self, worker_id: int) -> None:
        member = self._processes.pop(worker_id, None)
        if member is None:
            return
        if member.process.is_alive():
            member.process.kill()
        member.process.join(5)
        member.conn.close()

    def receive(self, timeout: float) -> list[Report]:
        if not self._processes:
            time.sleep(timeout)
            return []
        conns = {member.conn: worker_id for worker_id, member in self._processes.items()}
        sentinels = {m.process.sentinel: worker_id for worker_id, m in self._processes.items()}
        ready = set(wait([*conns, *sentinels], timeout))
        reports: list[Report] = []
        for conn, worker_id in conns.items():
            if conn in ready:
                reports += self._drain(worker_id)
        for sentinel, worker_id in sentinels.items():
            if sentinel in ready:
                reports += self._drain(worker_id)
                reports.append(MemberLost(worker_id, self._exit_reason(worker_id)))
        return reports

    def _drain(self, worker_id: int) -> list[Report]:
        conn = self._processes[worker_id].conn
        reports: list[Report] = []
        with contextlib.suppress(EOFError, OSError):
            while conn.poll():
                reports.append(conn.recv())
        return reports

    def _exit_reason(self, worker_id: int) -> str:
        process = self._processes[worker_id].process
        process.join(1)
        code = process.exitcode
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return f"the worker process was killed by {signal.Signals(-code).name}"
        return f"the worker process exited with code {code}"

    def close(self, timeout: float) -> None:
        for worker_id in self._processes:
            self._send(worker_id, StopWorker())
        deadline = time.monotonic() + timeout
        for member in self._processes.values():
            member.process.join(max(0.0, deadline - time.monotonic()))
        for worker_id in list(self._processes):
            self.remove(worker_id)
