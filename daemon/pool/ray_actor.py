"""What runs on the Ray cluster's nodes: the render actor and the per-node version probe.

Imported there from the stylefold installed on each node, so the first thing asked of a node
is its stylefold version (plain strings, readable whatever the version), and the driver
refuses an actor whose version differs from the daemon's.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from daemon.pool.events import Progress
from daemon.pool.messages import JobFailed, JobProgress, WorkerLoadFailed, WorkerReady
from daemon.pool.render import (
    Rendered,
    Sources,
    WorkerSpec,
    decode,
    describe,
    load_engine,
    render,
)
from daemon.pool.task import Task
from daemon.versions import stylefold_build

if TYPE_CHECKING:
    from service.engine import Engine


def node_name() -> str:
    """The Ray node this process runs on, by its name (`ray start --node-name`, by default the
    node's IP address): what `status` and the manifest show."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node["NodeID"] == node_id:
            return str(node.get("NodeName") or node["NodeManagerAddress"])
    return str(ray.util.get_node_ip_address())


def identify() -> tuple[str, str]:
    """(stylefold build, node name) of this process's node."""
    return stylefold_build(), node_name()


class RenderActor:
    """One engine, one job at a time. Threaded (max_concurrency), so `cancel` and
    `take_progress` reach it while it renders; progress waits here until the driver takes it,
    so no other actor carries it."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.spec: WorkerSpec | None = None
        self.node: str | None = None
        self.cancelled: set[str] = set()
        self.progress: list[JobProgress] = []
        self.lock = threading.Lock()

    def identify(self) -> tuple[str, str]:
        return identify()

    def load(self, spec: WorkerSpec) -> WorkerReady | WorkerLoadFailed:
        import torch

        self.spec = spec
        started = time.monotonic()
        try:
            self.engine = load_engine(spec)
        except Exception as exc:
            kind, error, _ = describe(exc)
            return WorkerLoadFailed(spec.worker_id, kind, error)
        self.node = node_name()
        seconds = time.monotonic() - started
        device = str(self.engine.device)
        threads = torch.get_num_threads()
        return WorkerReady(spec.worker_id, device, seconds, os.getpid(), self.node, threads)

    def cancel(self, job_id: str) -> None:
        with self.lock:
            self.cancelled.add(job_id)

    def take_progress(self) -> list[JobProgress]:
        with self.lock:
            taken, self.progress = self.progress, []
        return taken

    def render(
        self, task: Task, sources: Sources, *styles: bytes
    ) -> tuple[Rendered | JobFailed, list[JobProgress]]:
        """The outcome, with the progress not yet taken (it comes before the outcome).
        `styles`: the style images' bytes, which the driver sends apart from `sources` (once
        per style, see daemon.pool.ray_driver.StyleRefs)."""
        assert self.engine is not None and self.spec is not None, "render before load"
        spec = self.spec

        def report(progress: Progress) -> None:
            with self.lock:
                self.progress.append(JobProgress(spec.worker_id, task.attempt, progress))

        def cancel() -> bool:
            with self.lock:
                return task.job_id in self.cancelled

        outcome: Rendered | JobFailed
        try:
            weights = (ref.weight for ref in task.styles)
            sources = replace(sources, styles=tuple(zip(styles, weights, strict=True)))
            job = decode(task, sources)
            (outcome,) = render(self.engine, [job], report, cancel, spec, self.node)
        except Exception as exc:
            kind, error, trace = describe(exc)
            outcome = JobFailed(spec.worker_id, task.job_id, task.attempt, kind, error, trace)
        finally:
            with self.lock:
                self.cancelled.discard(task.job_id)
        return outcome, self.take_progress()
