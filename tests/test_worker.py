"""A worker's batch, run in this process with the real engine: files in, results and info out."""

from __future__ import annotations

import json
import multiprocessing
import os
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
from conftest import TINY_PARAMS, make_image
from PIL import Image, ImageCms

from daemon.pool.worker import (
    CANCEL,
    Message,
    StyleRef,
    Task,
    WorkerSpec,
    _Cancel,
    load_engine,
    run_batch,
)


@pytest.fixture(scope="module")
def engine() -> object:
    return load_engine(WorkerSpec(worker_id=0, device="cpu", warm_params=TINY_PARAMS))


def _rotated_photo_with_icc(path: Path) -> Path:
    """A 64x48 picture stored sideways (EXIF orientation 6) with an sRGB ICC profile."""
    make_image(path.with_suffix(".png"), size=(48, 64))
    image = Image.open(path.with_suffix(".png")).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "StylefoldCam"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image.save(path, format="JPEG", exif=exif.tobytes(), icc_profile=icc)
    return path


def _messages(conn: Connection) -> list[Message]:
    seen = []
    while conn.poll():
        seen.append(conn.recv())
    return seen


def test_a_job_gets_an_upright_result_with_metadata(engine: object, tmp_path: Path) -> None:
    content = _rotated_photo_with_icc(tmp_path / "photo.jpg")
    style = make_image(tmp_path / "style.png", size=(48, 48), seed=3)
    task = Task(
        "job-1", tmp_path, content, (StyleRef(style, 1.0),), dict(TINY_PARAMS), "jpg", 90, 10**6
    )
    ours, theirs = multiprocessing.Pipe()
    spec = WorkerSpec(worker_id=0, device="cpu", progress_every=1)
    run_batch(engine, [task], theirs, _Cancel(theirs, os.getppid()), spec)
    messages = _messages(ours)
    assert messages[0].kind == "started" and messages[-1].kind == "done"
    info = messages[-1].data

    with Image.open(task.result_path) as result:
        assert result.size == (48, 36)  # rotated upright: landscape
        assert result.getexif()[0x0112] == 1
        assert result.getexif()[0x010F] == "StylefoldCam"
        assert result.info.get("icc_profile")
    assert json.loads(task.info_path.read_text()) == info
    assert info["iterations"] == TINY_PARAMS["iterations"]
    assert set(info["timings"]) == {
        "decode_seconds",
        "render_seconds",
        "encode_seconds",
        "worker_total_seconds",
    }
    assert info["batch_size"] == 1
    progress = messages[1:-1]
    assert progress and all(isinstance(m, Message) and m.kind == "progress" for m in progress)
    assert progress[-1].data["iteration"] == TINY_PARAMS["iterations"]


def test_a_batch_gives_every_job_its_own_result_and_a_bad_photo_fails_alone(
    engine: object, tmp_path: Path
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
        task = Task(f"job-{n}", job_dir, photo, styles, dict(TINY_PARAMS), "png", 90, 10**6)
        tasks.append(replace(task, batch_key="one style, one size"))
    ours, theirs = multiprocessing.Pipe()
    run_batch(engine, tasks, theirs, _Cancel(theirs, os.getppid()), WorkerSpec(0, "cpu"))
    ends = {m.job_id: m for m in _messages(ours) if m.kind in ("done", "failed")}
    assert ends["job-2"].kind == "failed" and ends["job-2"].data["kind"] == "input"
    assert not tasks[2].result_path.exists()
    for task in tasks[:2]:
        assert ends[task.job_id].kind == "done"
        assert ends[task.job_id].data["batch_size"] == 2
        assert json.loads(task.info_path.read_text()) == ends[task.job_id].data
    first, second = (Image.open(t.result_path).tobytes() for t in tasks[:2])
    assert first != second


def test_cancel_from_the_daemon_stops_the_render(engine: object, tmp_path: Path) -> None:
    content = make_image(tmp_path / "photo.jpg")
    task = Task(
        "job-2",
        tmp_path,
        content,
        (StyleRef(content, 1.0),),
        {**TINY_PARAMS, "iterations": 50},
        "png",
        90,
        10**6,
    )
    ours, theirs = multiprocessing.Pipe()
    ours.send(CANCEL)
    cancel = _Cancel(theirs, os.getppid())
    run_batch(engine, [task], theirs, cancel, WorkerSpec(0, "cpu", progress_every=1))
    (failed,) = [m for m in _messages(ours) if m.kind == "failed"]
    assert failed.data["kind"] == "cancelled" and cancel.requested
    assert not task.result_path.exists() and not task.info_path.exists()


def test_a_closed_pipe_counts_as_cancel(tmp_path: Path) -> None:
    ours, theirs = multiprocessing.Pipe()
    cancel = _Cancel(theirs, os.getppid())
    assert not cancel()
    ours.close()
    assert cancel() and cancel.requested
