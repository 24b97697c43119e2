"""A worker's batch, run in this process with the real engine: files in, results and info out."""

from __future__ import annotations

import io
import multiprocessing
import os
import zlib
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_PARAMS, make_image
from icc_profiles import rgb_profile
from PIL import Image, ImageCms

from daemon.pool import ResultInfo, StyleRef, Task
from daemon.pool.messages import (
    CancelBatch,
    JobDone,
    JobFailed,
    JobProgress,
    JobStarted,
    WorkerMessage,
)
from daemon.pool.render import EngineSetup, WorkerSpec, cpu_threads, load_engine
from daemon.pool.worker import Cancel, run_batch
from service.engine import Engine
from service.params import RenderParams

PARAMS = RenderParams.model_validate(TINY_PARAMS)


def _spec(progress_every: int = 10) -> WorkerSpec:
    return WorkerSpec(0, "cpu", setup=EngineSetup(progress_every, warm_params=PARAMS))


@pytest.fixture(scope="module")
def engine() -> Engine:
    return load_engine(_spec())


def _rotated_photo_with_icc(path: Path) -> Path:
    """A 64x48 picture stored sideways (EXIF orientation 6), in Display P3 as an iPhone's."""
    make_image(path.with_suffix(".png"), size=(48, 64))
    image = Image.open(path.with_suffix(".png")).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "StylefoldCam"
    exif[0x8769] = {0xA001: 0xFFFF}  # colour space: not sRGB
    image.save(path, format="JPEG", exif=exif.tobytes(), icc_profile=rgb_profile("P3 (test)"))
    return path


def _messages(conn: Connection) -> list[WorkerMessage]:
    seen = []
    while conn.poll():
        seen.append(conn.recv())
    return seen


def _run(engine: Engine, tasks: list[Task], spec: WorkerSpec) -> list[WorkerMessage]:
    ours, theirs = multiprocessing.Pipe()
    run_batch(engine, tasks, theirs, Cancel(theirs, os.getppid()), spec)
    return _messages(ours)


def test_a_job_gets_an_upright_result_with_metadata(engine: Engine, tmp_path: Path) -> None:
    content = _rotated_photo_with_icc(tmp_path / "photo.jpg")
    style = make_image(tmp_path / "style.png", size=(48, 48), seed=3)
    task = Task("job-1", tmp_path, content, (StyleRef(style, 1.0),), PARAMS, "jpg", 90, 10**6)
    messages = _run(engine, [task], _spec(progress_every=1))
    assert isinstance(messages[0], JobStarted) and isinstance(messages[-1], JobDone)
    info = messages[-1].info

    with Image.open(task.result_path) as result:
        assert result.size == (48, 36)  # rotated upright: landscape
        assert result.getexif()[0x0112] == 1
        assert result.getexif()[0x010F] == "StylefoldCam"
        profile = ImageCms.ImageCmsProfile(io.BytesIO(result.info["icc_profile"]))
        assert "sRGB" in ImageCms.getProfileDescription(profile)  # painted in sRGB
        assert result.getexif().get_ifd(0x8769)[0xA001] == 1
    assert ResultInfo.model_validate_json(task.info_path.read_text()) == info
    assert info.iterations == TINY_PARAMS["iterations"] and info.params == PARAMS
    assert info.output_size == (48, 36) and info.input_size == (64, 48)  # upright
    assert info.input_profile == "P3 (test)"
    timings = info.timings
    assert timings.worker_total_seconds == pytest.approx(
        timings.decode_seconds + timings.render_seconds + timings.encode_seconds, abs=1e-3
    )
    assert timings.render_seconds > 0
    assert info.batch_size == 1 and info.attempt == 1
    progress = [m.progress for m in messages[1:-1] if isinstance(m, JobProgress)]
    assert len(progress) == len(messages) - 2  # started, progress..., done
    assert [p.iteration for p in progress] == list(range(1, 5))
    assert all(p.preview is None and p.job_id == "job-1" for p in progress)


def test_a_batch_gives_every_job_its_own_result_and_a_bad_photo_fails_alone(
    engine: Engine, tmp_path: Path
) -> None:
    style = make_image(tmp_path / "style.png", size=(48, 48), seed=3)
    tasks = []
    for n, seed in enumerate((1, 2, 0)):
        job_dir = tmp_path / f"job-{n}"
        job_dir.mkdir()
        photo = make_image(job_dir / "photo.png", size=(64, 48), seed=seed)
        if n == 2:
            photo.write_bytes(b"not an image")
        styles = (StyleRef(style, 1.0),)
        task = Task(f"job-{n}", job_dir, photo, styles, PARAMS, "png", 90, 10**6)
        tasks.append(replace(task, batch_key="one style, one size"))
    messages = _run(engine, tasks, _spec())
    started = [m for m in messages if isinstance(m, JobStarted)]
    assert [m.job_id for m in started] == ["job-0", "job-1", "job-2"]
    assert all(m.batch_size == 3 for m in started)
    ends = {m.job_id: m for m in messages if isinstance(m, JobDone | JobFailed)}
    failed = ends["job-2"]
    assert isinstance(failed, JobFailed) and failed.kind == "input"
    assert not tasks[2].result_path.exists() and not tasks[2].info_path.exists()
    for task in tasks[:2]:
        done = ends[task.job_id]
        assert isinstance(done, JobDone) and done.info.batch_size == 2
        assert ResultInfo.model_validate_json(task.info_path.read_text()) == done.info
    first, second = (Image.open(t.result_path).tobytes() for t in tasks[:2])
    assert first != second


def _png_turned_after_its_pixels(path: Path, size: tuple[int, int], seed: int) -> Path:
    """A PNG whose EXIF orientation (6: turn it) is an eXIf chunk after the pixels, where a
    header read does not look and the decoder does."""
    make_image(path, size=size, seed=seed)
    data = path.read_bytes()
    exif = Image.Exif()
    exif[0x0112] = 6
    body = exif.tobytes()[6:]  # without the "Exif\0\0" of JPEG's APP1
    chunk = len(body).to_bytes(4, "big") + b"eXIf" + body
    chunk += zlib.crc32(b"eXIf" + body).to_bytes(4, "big")
    end = data.rindex(b"IEND") - 4
    path.write_bytes(data[:end] + chunk + data[end:])
    return path


def test_a_batch_holding_a_photo_that_turns_out_sideways_renders_both(
    engine: Engine, tmp_path: Path
) -> None:
    """A family's trial: batched by their headers (both 64x43), the decoded PNG was 43x64, and
    the batch failed as an internal error, the other sender's job with it."""
    style = make_image(tmp_path / "style.png", size=(48, 48), seed=3)
    tasks = []
    for n in range(2):
        job_dir = tmp_path / f"job-{n}"
        job_dir.mkdir()
        photo = job_dir / "photo.png"
        if n == 0:
            make_image(photo, size=(64, 43), seed=1)
        else:
            _png_turned_after_its_pixels(photo, (64, 43), seed=2)
        task = Task(f"job-{n}", job_dir, photo, (StyleRef(style, 1.0),), PARAMS, "png", 90, 10**6)
        tasks.append(replace(task, batch_key="one style, one size by the headers"))
    messages = _run(engine, tasks, _spec())
    ends = [m for m in messages if isinstance(m, JobDone | JobFailed)]
    assert [type(m) for m in ends] == [JobDone, JobDone], ends
    sizes = [Image.open(task.result_path).size for task in tasks]
    assert sizes[0] == sizes[1][::-1] and sizes[0][0] > sizes[0][1]


def test_cancel_from_the_daemon_stops_the_render(engine: Engine, tmp_path: Path) -> None:
    content = make_image(tmp_path / "photo.jpg")
    params = PARAMS.model_copy(update={"iterations": 50})
    task = Task("job-2", tmp_path, content, (StyleRef(content, 1.0),), params, "png", 90, 10**6)
    ours, theirs = multiprocessing.Pipe()
    ours.send(CancelBatch())
    cancel = Cancel(theirs, os.getppid())
    run_batch(engine, [task], theirs, cancel, _spec(progress_every=1))
    (failed,) = [m for m in _messages(ours) if isinstance(m, JobFailed)]
    assert failed.kind == "cancelled" and cancel.requested
    assert not task.result_path.exists() and not task.info_path.exists()


def test_previews_arrive_as_small_jpegs_every_preview_every_iterations(
    engine: Engine, tmp_path: Path
) -> None:
    content = make_image(tmp_path / "photo.jpg", size=(64, 48))
    style = make_image(tmp_path / "style.png", size=(48, 48), seed=3)
    params = PARAMS.model_copy(update={"iterations": 6})
    task = Task("job-3", tmp_path, content, (StyleRef(style, 1.0),), params, "jpg", 90, 10**6)
    messages = _run(engine, [replace(task, preview_every=3)], _spec(progress_every=2))
    progress = [m.progress for m in messages if isinstance(m, JobProgress)]
    # Progress every 2 iterations and a preview every 3: both cadences, nothing in between.
    assert [p.iteration for p in progress] == [2, 3, 4, 6]
    previews = {p.iteration: p.preview for p in progress if p.preview is not None}
    assert sorted(previews) == [3, 6]
    for data in previews.values():
        assert data is not None and data.startswith(b"\xff\xd8")  # a JPEG
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "JPEG" and image.size == (48, 36)  # the scale's size
    # The last preview is the result (before the result's own encoding and metadata).
    with Image.open(io.BytesIO(previews[6])) as last, Image.open(task.result_path) as result:
        diff = np.abs(np.asarray(last, float) - np.asarray(result, float))
    assert diff.mean() < 8  # grey levels: two JPEG encodings of one image


def test_a_closed_pipe_counts_as_cancel(tmp_path: Path) -> None:
    ours, theirs = multiprocessing.Pipe()
    cancel = Cancel(theirs, os.getppid())
    assert not cancel()
    ours.close()
    assert cancel() and cancel.requested


def test_cpu_members_split_the_cores_this_process_may_use_unless_the_operator_chose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cores were counted with os.cpu_count(): a daemon confined to fewer (systemd's
    CPUAffinity=, a container's cpuset) ran more threads than cores, and torch's threads
    spin-waited for each other. OMP_NUM_THREADS, where the operator set it, is taken as is."""
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        pytest.skip("needs two cores to confine this process to one")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cpu_threads(1) == len(allowed)
    try:
        os.sched_setaffinity(0, {min(allowed)})
        assert cpu_threads(1) == 1 and cpu_threads(3) == 1
    finally:
        os.sched_setaffinity(0, allowed)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_threads(1) == 3 and cpu_threads(2) == 3
    for unusable in ("0", "two", "-1", ""):  # torch's own reading of these varies: ignored
        monkeypatch.setenv("OMP_NUM_THREADS", unusable)
        assert cpu_threads(1) == len(allowed)
