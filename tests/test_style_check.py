"""Every style is checked where it is listed: `stylefold styles` and `stylefold doctor` decode
each image as a worker will and name the broken ones; a job-time style error names the file
and where it lives."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import Folders, make_image
from test_commands import stylefold

from daemon.pool.render import Sources, decode
from daemon.pool.task import StyleRef, Task
from service.errors import ImageInputError
from service.params import RenderParams


def _break(folders: Folders) -> None:
    (folders.styles / "empty.jpg").write_bytes(b"")
    whole = (folders.styles / "mosaic.jpg").read_bytes()
    (folders.styles / "cut.jpg").write_bytes(whole[: len(whole) // 2])


def test_styles_and_doctor_name_empty_and_truncated_images(folders: Folders) -> None:
    _break(folders)
    listing = stylefold("styles", "--styles", str(folders.styles))
    assert listing.returncode == 1, "a skipped file fails the listing, as it fails doctor"
    assert "2 style(s)" in listing.stdout
    assert "skipped empty.jpg: empty.jpg is empty (0 bytes)" in listing.stdout
    assert "skipped cut.jpg: cut.jpg is truncated or corrupt" in listing.stdout
    result = stylefold("styles", "--styles", str(folders.styles), "--json")
    assert result.returncode == 1
    as_json = json.loads(result.stdout)
    assert [s["name"] for s in as_json["styles"]] == ["mosaic", "waves"]
    assert {Path(p["path"]).name for p in as_json["problems"]} == {"cut.jpg", "empty.jpg"}

    doctor = stylefold("doctor", "--config", str(folders.config()))
    assert doctor.returncode == 1, doctor.stdout
    [line] = [line for line in doctor.stdout.splitlines() if "styles:" in line]
    assert line.startswith("FAIL styles: 2 (mosaic, waves); unusable, fix or remove:")
    assert "cut.jpg: cut.jpg is truncated" in line and "empty.jpg: empty.jpg is empty" in line


def _task(folder: Path, content: Path, style: Path, label: str) -> Task:
    return Task(
        job_id="j",
        job_dir=folder,
        content=content,
        styles=(StyleRef(style, 1.0, label),),
        params=RenderParams(),
        output_format="jpg",
        output_quality=90,
        max_pixels=10**6,
    )


def test_a_job_time_style_error_names_the_file(tmp_path: Path) -> None:
    """The worker's decode: the report says which style image, not "a style image"."""
    content = make_image(tmp_path / "input.jpg")
    empty = tmp_path / "style-0.jpg"
    empty.write_bytes(b"")
    label = "the image of style 'mosaic' (/srv/styles/mosaic.jpg in the style library)"
    task = _task(tmp_path, content, empty, label)
    for sources in (Sources.of(task), Sources.read(task)):  # a local worker, a Ray actor
        with pytest.raises(ImageInputError) as caught:
            decode(task, sources)
        assert str(caught.value) == f"{label} is empty (0 bytes); copy the file again"


@pytest.mark.skipif(os.geteuid() != 0, reason="acts as two users")
def test_a_photo_its_owner_made_unreadable_after_its_claim_is_the_sender_s_input() -> None:
    """An attacker's trial: a claim moves the photo, owner and all; its sender, holding it open,
    made it unreadable (fchmod 000), and the report called it a fault of the server, which
    `doctor` then found none of. The daemon's user reads here as `nobody`."""
    from daemon.pool.render import classify

    folder = Path(tempfile.mkdtemp())  # not under pytest's root-only folders
    try:
        folder.chmod(0o755)
        content = make_image(folder / "input.jpg")
        os.chown(content, 12345, 12345)
        content.chmod(0)
        style = make_image(folder / "style.jpg")
        task = _task(folder, content, style, "the image of style 'mosaic'")
        # Imported before the fork: `nobody` may not read this Python's own folders.
        readable = replace(task, content=style)
        decode(readable, Sources.of(readable))
        classify(ImageInputError("x"))
        context = multiprocessing.get_context("fork")
        told: multiprocessing.Queue[tuple[str, str]] = context.Queue()

        def as_the_daemon() -> None:
            os.setgid(65534)
            os.setuid(65534)
            try:
                decode(task, Sources.of(task))
            except Exception as exc:
                told.put((classify(exc), str(exc)))

        child = context.Process(target=as_the_daemon)
        child.start()
        kind, text = told.get(timeout=60)
        child.join(60)
    finally:
        shutil.rmtree(folder)
    assert kind == "input", text
    assert text == (
        "the photo cannot be read any more (Permission denied): its owner (uid 12345) changed "
        "its permissions after it was taken; make it readable to the daemon's user again and "
        "send it again"
    )


def test_a_job_whose_own_copy_cannot_be_read_is_the_servers_fault(tmp_path: Path) -> None:
    """A review: a spool copy the worker could not read (gone, refused) was reported as the
    sender's input, and counted as their mistake in the metrics."""
    from daemon.pool.render import classify, copy_unreadable
    from service.errors import EngineError

    content = make_image(tmp_path / "input.jpg")
    task = _task(tmp_path, content, content, "the image of style 'mosaic'")
    content.unlink()
    with pytest.raises(EngineError) as caught:
        decode(task, Sources.of(task))
    assert not isinstance(caught.value, ImageInputError) and classify(caught.value) == "engine"
    assert str(caught.value).startswith(
        "the daemon's own copy of the photo cannot be read (No such file or directory): a fault "
        "of the server, not of the file"
    )
    with pytest.raises(ImageInputError) as read:
        Sources.read(task)  # what a Ray driver reads for its actor
    assert copy_unreadable(read.value, "a file of the job") is not None
    for own_fault in (b"", b"not an image at all"):  # the photo's own fault stays the sender's
        (tmp_path / "input.jpg").write_bytes(own_fault)  # (Pillow's "cannot identify" is an
        with pytest.raises(ImageInputError) as refused:  # OSError: not a read's failure)
            decode(task, Sources.of(task))
        assert copy_unreadable(refused.value.__cause__ or refused.value, "x") is None
