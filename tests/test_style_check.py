"""Every style is checked where it is listed: `stylefold styles` and `stylefold doctor` decode
each image as a worker will and name the broken ones; a job-time style error names the file
and where it lives."""

from __future__ import annotations

import json
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


def test_a_job_time_style_error_names_the_file(tmp_path: Path) -> None:
    """The worker's decode: the report says which style image, not "a style image"."""
    content = make_image(tmp_path / "input.jpg")
    empty = tmp_path / "style-0.jpg"
    empty.write_bytes(b"")
    label = "the image of style 'mosaic' (/srv/styles/mosaic.jpg in the style library)"
    task = Task(
        job_id="j",
        job_dir=tmp_path,
        content=content,
        styles=(StyleRef(empty, 1.0, label),),
        params=RenderParams(),
        output_format="jpg",
        output_quality=90,
        max_pixels=10**6,
    )
    for sources in (Sources.of(task), Sources.read(task)):  # a local worker, a Ray actor
        with pytest.raises(ImageInputError) as caught:
            decode(task, sources)
        assert str(caught.value) == f"{label} is empty (0 bytes); copy the file again"


def test_a_job_whose_own_copy_cannot_be_read_is_the_servers_fault(tmp_path: Path) -> None:
    """A review: a spool copy the worker could not read (gone, refused) was reported as the
    sender's input, and counted as their mistake in the metrics."""
    from daemon.pool.render import classify, copy_unreadable
    from service.errors import EngineError

    content = make_image(tmp_path / "input.jpg")
    task = Task(
        job_id="j",
        job_dir=tmp_path,
        content=content,
        styles=(StyleRef(content, 1.0, "the image of style 'mosaic'"),),
        params=RenderParams(),
        output_format="jpg",
        output_quality=90,
        max_pixels=10**6,
    )
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
