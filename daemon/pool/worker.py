"""The worker process: one `Engine` on one device, loaded once, rendering one batch at a time
(usually a batch of one job; queued jobs with one style and output size come together).

It talks to the daemon over its own pipe (never a queue shared with other workers, whose lock a
killed worker could leave held). A finished render is written into the job's spool folder before
the daemon is told, so a daemon that dies at that moment finds the result on restart instead of
painting the photo again. The worker dies with the daemon: it sees end-of-file on its pipe (and
on Linux the kernel kills it with the parent), so no orphan keeps holding GPU memory.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from daemon.fsutil import atomic_write, atomic_write_json

RESULT_INFO = "result.json"


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process is started with."""

    worker_id: int
    device: str
    threads: int | None = None  # torch intra-op threads (CPU workers share the cores)
    progress_every: int = 10
    warm_params: dict[str, Any] = field(default_factory=dict)  # network to load at start
    weights: dict[str, Any] = field(default_factory=dict)  # service.weights.WeightsConfig
    compile: bool = False  # torch.compile the network (service.engine.Engine)


@dataclass(frozen=True)
class StyleRef:
    path: Path
    weight: float


@dataclass(frozen=True)
class Task:
    """One render, as far as the worker needs to know: files in, parameters, files out."""

    job_id: str
    job_dir: Path
    content: Path
    styles: tuple[StyleRef, ...]
    params: dict[str, Any]
    output_format: str
    output_quality: int
    max_pixels: int
    attempt: int = 1
    device: str | None = None  # only a worker on this device may take it (OOM fallback to CPU)
    init_image: Path | None = None
    batch_key: str | None = None  # tasks with one key may be optimised together; None: alone

    @property
    def result_path(self) -> Path:
        return self.job_dir / f"result.{self.output_format}"

    @property
    def info_path(self) -> Path:
        return self.job_dir / RESULT_INFO


@dataclass
class Message:
    """Worker -> daemon. `kind`: ready | load_failed | started | progress | done | failed."""

    kind: str
    worker_id: int
    job_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


CANCEL = "cancel"


def _die_with_parent() -> None:
    """Linux only: SIGKILL this process when the daemon dies, even mid-render."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


class _Cancel:
    """The engine's cancel check: the daemon sent `cancel`, or went away."""

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
                        if self._conn.recv() == CANCEL:
                            self.requested = True
                except (EOFError, OSError):
                    self.requested = True
        return self.requested


def classify(exc: BaseException) -> str:
    from service.errors import (
        CancelledError,
        DeviceOutOfMemoryError,
        EngineError,
        ImageInputError,
        WeightsError,
    )

    kinds: tuple[tuple[type[BaseException], str], ...] = (
        (CancelledError, "cancelled"),
        (DeviceOutOfMemoryError, "oom"),
        (ImageInputError, "input"),
        (WeightsError, "weights"),
        (EngineError, "engine"),
        (MemoryError, "oom"),
    )
    for cls, kind in kinds:
        if isinstance(exc, cls):
            return kind
    return "internal"


@dataclass(frozen=True)
class Sources:
    """A job's images as paths (a local worker reads the spool) or bytes (a Ray actor, which
    has no access to the daemon's folders)."""

    content: Path | bytes
    styles: tuple[tuple[Path | bytes, float], ...]
    init: Path | bytes | None = None

    @classmethod
    def of(cls, task: Task) -> Sources:
        styles = tuple((ref.path, ref.weight) for ref in task.styles)
        return cls(task.content, styles, task.init_image)


@dataclass(frozen=True)
class Decoded:
    """A job's images, decoded (service.imageio.LoadedImage / service.engine.StyleImage)."""

    task: Task
    content: Any
    styles: list[Any]
    init: Any | None
    seconds: float


def decode(task: Task, sources: Sources) -> Decoded:
    from service.engine import StyleImage
    from service.imageio import open_image

    started = time.monotonic()
    content = _decode(open_image, sources.content, task, "the photo")
    styles = [
        StyleImage(_decode(open_image, source, task, "a style image").image, weight)
        for source, weight in sources.styles
    ]
    init = (
        _decode(open_image, sources.init, task, "the init image").image
        if sources.init is not None
        else None
    )
    return Decoded(task, content, styles, init, time.monotonic() - started)


def progress_data(progress: Any, device: str) -> dict[str, Any]:
    """An engine Progress as plain Python numbers: a tensor in a message would make the daemon
    import torch (some 600 MiB) just to unpickle it."""
    return {
        "iteration": int(progress.iteration),
        "total": int(progress.total),
        "scale": int(progress.scale),
        "scales": int(progress.scales),
        "size": [int(side) for side in progress.size],
        "losses": {str(name): float(value) for name, value in progress.losses.items()},
        "elapsed": float(progress.elapsed),
        "eta": float(progress.eta),
        "device": device,
    }


def render_decoded(
    engine: Any,
    batch: list[Decoded],
    report: Callable[[int, dict[str, Any]], None],
    cancel: Callable[[], bool],
    spec: WorkerSpec,
) -> list[tuple[bytes, dict[str, Any]]]:
    """Render decoded jobs that share a batch key in one engine call; returns per job the
    encoded result and its manifest data."""
    from service.params import RenderParams

    for job in batch:
        _injected_oom(job.task)
    first = batch[0]
    results = engine.render_batch(
        [job.content.image for job in batch],
        first.styles,
        RenderParams.model_validate(first.task.params),
        init_images=[job.init for job in batch],
        progress=lambda item, progress: report(item, progress_data(progress, spec.device)),
        progress_every=spec.progress_every,
        cancel=cancel,
    )
    return [_finish(job, result) for job, result in zip(batch, results, strict=True)]


def _finish(job: Decoded, result: Any) -> tuple[bytes, dict[str, Any]]:
    from service.imageio import encode_image

    started = time.monotonic()
    task, content = job.task, job.content
    data = encode_image(
        result.image,
        format=task.output_format,
        quality=task.output_quality,
        exif=content.exif,
        icc=content.icc,
    )
    encode_seconds = time.monotonic() - started
    info = {
        "iterations": result.iterations,
        "stop_reason": result.stop_reason,
        "losses": {name: float(value) for name, value in result.losses.items()},
        "scales": [[int(side) for side in scale] for scale in result.scales],
        "device": str(result.device),
        "output_size": list(result.image.size),
        "input_size": list(content.image.size),
        "input_format": content.format,
        "peak_memory_bytes": int(result.peak_memory_bytes),
        "batch_size": int(result.batch_size),
        "attempt": task.attempt,
        "params": task.params,
        "versions": library_versions(),
        "timings": {
            "decode_seconds": round(job.seconds, 4),
            "render_seconds": round(float(result.seconds), 4),
            "encode_seconds": round(encode_seconds, 4),
            "worker_total_seconds": round(job.seconds + result.seconds + encode_seconds, 4),
        },
    }
    return data, info


def render_bytes(
    engine: Any,
    task: Task,
    sources: Sources,
    report: Callable[[dict[str, Any]], None],
    cancel: Callable[[], bool],
    spec: WorkerSpec,
) -> tuple[bytes, dict[str, Any]]:
    """Decode, render and encode one job (a Ray actor's unit of work)."""
    job = decode(task, sources)
    ((data, info),) = render_decoded(engine, [job], lambda _i, d: report(d), cancel, spec)
    return data, info


def _decode(open_image: Callable[..., Any], source: Path | bytes, task: Task, what: str) -> Any:
    """The engine names the spool file and "the limit"; the person reading the report knows
    neither, so name what the file is and the setting to raise."""
    from service.errors import ImageInputError

    try:
        return open_image(source, max_pixels=task.max_pixels)
    except ImageInputError as exc:
        message = str(exc)
        if isinstance(source, Path):
            message = message.replace(str(source), what)
        message = message.replace("raise the limit", "raise the daemon's max_pixels setting")
        raise ImageInputError(message) from exc


FAULT_OOM = "STYLEFOLD_FAULT_OOM"


def _injected_oom(task: Task) -> None:
    """Test hook: with STYLEFOLD_FAULT_OOM=N in the daemon's environment, the first N attempts
    of every job fail at the engine boundary as a device out-of-memory would, so the daemon's
    oom_fallback can be exercised on a CPU-only machine. Unset in production."""
    from service.errors import DeviceOutOfMemoryError

    attempts = int(os.environ.get(FAULT_OOM, "0") or 0)
    if task.attempt <= attempts:
        raise DeviceOutOfMemoryError(
            f"out of memory (injected by {FAULT_OOM}={attempts}, attempt {task.attempt})"
        )


def library_versions() -> dict[str, str]:
    """The versions that decide what a render looks like, for the manifest."""
    import PIL
    import torch

    return {"torch": str(torch.__version__), "pillow": str(PIL.__version__)}


def load_engine(spec: WorkerSpec) -> Any:
    """Build the engine and load every network up front, so the first job does not pay for it
    and a broken weights file is reported before the daemon says it is ready."""
    import torch

    import service.imageio  # noqa: F401  (imported now, so the first job does not pay for it)
    from service.engine import Engine
    from service.params import RenderParams
    from service.weights import WeightsConfig

    if spec.threads:
        torch.set_num_threads(spec.threads)
    engine = Engine(
        device=spec.device,
        weights=WeightsConfig.model_validate(spec.weights),
        compile=spec.compile,
    )
    engine.network(RenderParams.model_validate(spec.warm_params))
    return engine


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
        conn.send(
            Message("load_failed", spec.worker_id, data={"error": str(exc), "kind": classify(exc)})
        )
        return
    conn.send(
        Message(
            "ready",
            spec.worker_id,
            data={
                "device": str(getattr(engine, "device", spec.device)),
                "seconds": time.monotonic() - started,
                "pid": os.getpid(),
            },
        )
    )
    while True:
        try:
            batch = conn.recv()
        except (EOFError, OSError):
            return  # the daemon is gone
        if batch is None:
            return
        if not isinstance(batch, list):
            continue  # a late `cancel` for a job that already ended
        cancel = _Cancel(conn, parent)
        try:
            run_batch(engine, batch, conn, cancel, spec)
        except (EOFError, OSError):
            return  # the pipe broke: the daemon is gone
        if cancel.requested and os.getppid() != parent:
            return


def _failure(exc: BaseException) -> dict[str, Any]:
    kind = classify(exc)
    detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    data = {"kind": kind, "error": str(exc) or detail, "detail": detail}
    if kind == "internal":
        data["traceback"] = traceback.format_exc()
    return data


def run_batch(
    engine: Any, tasks: list[Task], conn: Connection, cancel: _Cancel, spec: WorkerSpec
) -> None:
    """Every job of the batch gets `started`, then `done` or `failed` of its own. The result
    is in the job's spool folder before `done` is sent. Jobs that share a batch key are
    rendered together, as many at a time as the engine says fit in memory."""
    from service.params import RenderParams

    def send(kind: str, task: Task, data: dict[str, Any]) -> None:
        conn.send(Message(kind, spec.worker_id, task.job_id, data))

    for task in tasks:
        send("started", task, {"pid": os.getpid(), "batch_size": len(tasks)})
    waiting: list[Decoded] = []
    for task in tasks:
        try:
            waiting.append(decode(task, Sources.of(task)))
        except Exception as exc:
            send("failed", task, _failure(exc))
    while waiting:
        limit = 1
        if len(waiting) > 1:
            params = RenderParams.model_validate(waiting[0].task.params)
            limit = engine.batch_limit(waiting[0].content.image.size, params)
        chunk, waiting = waiting[:limit], waiting[limit:]

        def report(item: int, data: dict[str, Any], chunk: list[Decoded] = chunk) -> None:
            send("progress", chunk[item].task, data)

        try:
            outputs = render_decoded(engine, chunk, report, cancel, spec)
        except Exception as exc:
            failure = {**_failure(exc), "batch_size": len(chunk)}
            for job in chunk:
                send("failed", job.task, failure)
            if cancel.requested:
                for job in waiting:
                    send("failed", job.task, failure)
                return
            continue
        for job, (data, info) in zip(chunk, outputs, strict=True):
            atomic_write(job.task.result_path, data)
            atomic_write_json(job.task.info_path, info)
            send("done", job.task, info)
