"""What a member does with a batch, whatever process it lives in (a local worker or a Ray
actor): load the engine, decode the job's images, render, encode, and describe the result.

torch and the engine are imported inside the functions: the daemon imports this module (for
the types) and must stay free of torch.
"""

from __future__ import annotations

import errno
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from daemon.fsutil import atomic_write, user_name
from daemon.pool.events import FailureKind, Progress, ResultInfo, WorkerTimings, WorkerVersions
from daemon.pool.task import Task
from service.params import RenderParams
from service.weights import WeightsConfig

if TYPE_CHECKING:
    from PIL import Image

    from service.engine import Engine, RenderResult, StyleImage
    from service.errors import EngineError
    from service.imageio import LoadedImage
    from service.progress import Progress as EngineProgress

PREVIEW_SIDE = 512  # long side of a preview, at most
PREVIEW_QUALITY = 80
FAULT_OOM = "STYLEFOLD_FAULT_OOM"
BYTES_NAME = "the image"  # what service.imageio calls an image given as bytes


@dataclass(frozen=True)
class EngineSetup:
    """What every member loads and renders with."""

    progress_every: int = 10  # iterations between progress reports
    warm_params: RenderParams = field(default_factory=RenderParams)  # network to load at start
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    compile: bool = False  # torch.compile the network (service.engine.Engine)


@dataclass(frozen=True)
class WorkerSpec:
    """What a member is started with."""

    worker_id: int
    device: str
    threads: int | None = None  # torch intra-op threads (CPU members share the cores)
    setup: EngineSetup = field(default_factory=EngineSetup)


def cpu_threads(cpu_members: int) -> int:
    """Torch threads for each CPU member of one machine: OMP_NUM_THREADS where the operator set
    it (a machine shared with other work), else the cores this process may use (its affinity:
    systemd's CPUAffinity=, a container's cpuset) split between the members. Oversubscribed
    cores cost far more than their share: torch's threads spin-wait for each other."""
    chosen = os.environ.get("OMP_NUM_THREADS", "")
    if chosen.isdigit() and int(chosen) > 0:
        return int(chosen)
    affinity = getattr(os, "sched_getaffinity", None)  # Linux; macOS (mps) has none
    cores = len(affinity(0)) if affinity is not None else os.cpu_count() or 1
    return max(1, cores // max(1, cpu_members))


@dataclass(frozen=True)
class Sources:
    """A job's images as paths (a local worker reads the spool) or bytes (a Ray actor, which
    has no access to the daemon's folders)."""

    content: Path | bytes
    styles: tuple[tuple[Path | bytes, float], ...]

    @classmethod
    def of(cls, task: Task) -> Sources:
        styles = tuple((ref.path, ref.weight) for ref in task.styles)
        return cls(task.content, styles)

    @classmethod
    def read(cls, task: Task) -> Sources:
        """The files' bytes, for a member on another machine (ImageInputError when one is
        unreadable or over the task's max_bytes)."""
        from service.imageio import read_image_file

        def read(path: Path) -> bytes:
            return read_image_file(path, task.max_bytes)

        return cls(read(task.content), tuple((read(ref.path), ref.weight) for ref in task.styles))


@dataclass(frozen=True)
class Decoded:
    task: Task
    content: LoadedImage
    styles: list[StyleImage]
    seconds: float


@dataclass(frozen=True)
class Rendered:
    """A finished job: the encoded result and what to say about it."""

    task: Task
    data: bytes
    info: ResultInfo


def write_result(output: Rendered) -> None:
    """The result, then its description: a `result.json` means the result beside it is whole
    (the daemon publishes from the two after a restart)."""
    atomic_write(output.task.result_path, output.data)
    atomic_write(output.task.info_path, output.info.model_dump_json(indent=2).encode())


def classify(exc: BaseException) -> FailureKind:
    from service.errors import (
        CancelledError,
        DeviceError,
        DeviceOutOfMemoryError,
        EngineError,
        ImageInputError,
        WeightsError,
    )

    kinds: tuple[tuple[type[BaseException], FailureKind], ...] = (
        (CancelledError, "cancelled"),
        (DeviceOutOfMemoryError, "oom"),
        (ImageInputError, "input"),
        (WeightsError, "weights"),
        (DeviceError, "device"),
        (EngineError, "engine"),
        (MemoryError, "oom"),
    )
    for cls, kind in kinds:
        if isinstance(exc, cls):
            return kind
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "nospace"
    return "internal"


def describe(exc: BaseException) -> tuple[FailureKind, str, str | None]:
    """(kind, message, traceback for an internal error) of an exception being handled."""
    kind = classify(exc)
    detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return kind, str(exc) or detail, traceback.format_exc() if kind == "internal" else None


def load_engine(spec: WorkerSpec) -> Engine:
    """Build the engine and load the network up front, so the first job does not pay for it
    and a broken weights file is reported before the daemon says it is ready."""
    import torch

    import service.imageio  # noqa: F401  (imported now, so the first job does not pay for it)
    from service.engine import Engine

    if spec.threads:
        torch.set_num_threads(spec.threads)
    engine = Engine(device=spec.device, weights=spec.setup.weights, compile=spec.setup.compile)
    engine.network(spec.setup.warm_params)
    return engine


def decode(task: Task, sources: Sources) -> Decoded:
    from service.engine import StyleImage

    started = time.monotonic()
    content = _open(sources.content, task, task.content_label)
    styles = [
        StyleImage(_style(source, task, ref.label), weight, ref.name)
        for ref, (source, weight) in zip(task.styles, sources.styles, strict=True)
    ]
    return Decoded(task, content, styles, time.monotonic() - started)


def _style(source: Path | bytes, task: Task, label: str) -> Image.Image:
    """A style image the library would list: a brought-along one is not checked before its
    job (an attacker's trial: a strip of 30000x16 px ran the worker out of memory)."""
    from service.errors import ImageInputError
    from service.style_shape import shape_problem

    image = _open(source, task, label).image
    if (problem := shape_problem(label, image.size)) is not None:
        raise ImageInputError(problem)
    return image


def _open(source: Path | bytes, task: Task, what: str) -> LoadedImage:
    """The engine names the spool file and "the limit"; the person reading the report knows
    neither, so name what the file is and the setting to raise."""
    from service.errors import ImageInputError
    from service.imageio import open_image

    try:
        return open_image(source, max_pixels=task.max_pixels, max_bytes=task.max_bytes)
    except ImageInputError as exc:
        if (unreadable := copy_unreadable(exc, what)) is not None:
            raise unreadable from exc
        raise ImageInputError(_for_people(str(exc), source, what)) from exc


def copy_unreadable(exc: BaseException, what: str) -> EngineError | None:
    """The daemon's own copy of a file (in its spool or style store) could not be read: the
    server's fault, not the sender's, so not an input error (a review: it counted as the
    sender's in the metrics, and told them nothing they could mend). Unless the file is still
    its sender's (a claim moves the photo, owner and all) and was made unreadable since: an
    ImageInputError then (an attacker's trial: a `chmod 000` through a descriptor kept open
    after the claim was called a fault of the server)."""
    from service.errors import EngineError, FileUnreadableError, ImageInputError

    cause = exc.__cause__
    if not isinstance(exc, FileUnreadableError) or not isinstance(cause, OSError):
        return None
    if isinstance(cause, PermissionError) and (owner := _other_owner(cause.filename)):
        return ImageInputError(
            f"{what} cannot be read any more ({cause.strerror}): its owner ({owner}) changed "
            "its permissions after it was taken; make it readable to the daemon's user again "
            "and send it again"
        )
    return EngineError(
        f"the daemon's own copy of {what} cannot be read ({cause.strerror or cause}): a fault "
        "of the server, not of the file; its administrator can look at the state folder "
        "(stylefold doctor)"
    )


def _other_owner(path: str | bytes | None) -> str | None:
    """Who owns the file at `path`, when not the daemon's user."""
    if path is None:
        return None
    try:
        uid = os.stat(path).st_uid
    except OSError:
        return None
    return None if uid == os.geteuid() else user_name(uid)


def photo_problem(
    photo: Path,
    max_pixels: int,
    head: bytes,
    params: RenderParams,
    max_size: int,
    what: str = "the photo",
) -> str | None:
    """What decoding the photo would refuse, where its header tells it (no decoder takes the
    file, or it is over max_pixels), or its shape at this size (a strip too thin for the
    network at any size up to max_output_size): said at once, not after the queue ahead of it
    (a trial: random bytes named broken.jpg waited their turn to be told they are not an
    image)."""
    from service.imageio import header_look
    from service.schedule import output_problem

    problem, size = header_look(photo, max_pixels, head)
    if problem is not None:
        return _for_people(problem, photo, what)
    return None if size is None else output_problem(size, params, max_size)


def _for_people(message: str, source: Path | bytes, what: str) -> str:
    if isinstance(source, Path):
        message = message.replace(str(source), what)
    elif message.startswith(BYTES_NAME):  # bytes sent to a Ray actor
        message = what + message[len(BYTES_NAME) :]
    return message.replace("raise the limit", "raise the daemon's max_pixels setting")


def render(
    engine: Engine,
    batch: list[Decoded],
    report: Callable[[Progress], None],
    cancel: Callable[[], bool],
    spec: WorkerSpec,
    node: str | None = None,
) -> list[Rendered]:
    """Render decoded jobs that share a batch key in one engine call."""
    for job in batch:
        _injected_oom(job.task)
    first = batch[0].task

    def progress(item: int, value: EngineProgress) -> None:
        report(progress_event(batch[item].task.job_id, value, spec.device))

    results = engine.render_batch(
        [job.content.image for job in batch],
        batch[0].styles,
        first.params,
        progress=progress,
        progress_every=spec.setup.progress_every,
        cancel=cancel,
        preview_every=first.preview_every,
    )
    return [_finish(job, result, node) for job, result in zip(batch, results, strict=True)]


def progress_event(job_id: str, progress: EngineProgress, device: str) -> Progress:
    """The engine's progress in plain Python numbers (a tensor in a message would make the
    daemon import torch just to unpickle it), with the preview encoded when there is one."""
    return Progress(
        job_id=job_id,
        iteration=int(progress.iteration),
        total=int(progress.total),
        scale=int(progress.scale),
        scales=int(progress.scales),
        size=(int(progress.size[0]), int(progress.size[1])),
        losses={str(name): float(value) for name, value in progress.losses.items()},
        elapsed=float(progress.elapsed),
        eta=float(progress.eta),
        done=float(progress.done),
        device=device,
        preview=preview_jpeg(progress.preview()) if progress.preview else None,
    )


def preview_jpeg(image: Image.Image) -> bytes:
    """Small enough to rewrite every few iterations, large enough to judge the look."""
    from service.imageio import encode_image

    image = image.copy()
    image.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    return encode_image(image, format="jpg", quality=PREVIEW_QUALITY)


def _finish(job: Decoded, result: RenderResult, node: str | None) -> Rendered:
    from service.imageio import encode_result

    started = time.monotonic()
    task, content = job.task, job.content
    data, notes = encode_result(
        result.image,
        content,
        format=task.output_format,
        quality=task.output_quality,
        location=not task.strip_location,
    )
    encode_seconds = time.monotonic() - started
    info = ResultInfo(
        iterations=result.iterations,
        stop_reason=result.stop_reason,
        losses={name: float(value) for name, value in result.losses.items()},
        scales=[(int(w), int(h)) for w, h in result.scales],
        scale_iterations=tuple(int(n) for n in result.stage_iterations),
        device=str(result.device),
        output_size=result.image.size,
        input_size=content.image.size,
        input_format=content.format,
        input_profile=content.profile,
        peak_memory_bytes=int(result.peak_memory_bytes),
        batch_size=int(result.batch_size),
        notes=result.notes + notes,
        style_sizes=result.style_sizes,
        attempt=task.attempt,
        params=task.params,
        versions=library_versions(),
        timings=WorkerTimings(
            decode_seconds=round(job.seconds, 4),
            render_seconds=round(float(result.seconds), 4),
            encode_seconds=round(encode_seconds, 4),
            worker_total_seconds=round(job.seconds + result.seconds + encode_seconds, 4),
        ),
        node=node,
    )
    return Rendered(task, data, info)


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


def library_versions() -> WorkerVersions:
    """The versions that decide what a render looks like, for the manifest."""
    import PIL
    import torch

    return WorkerVersions(torch=str(torch.__version__), pillow=str(PIL.__version__))
