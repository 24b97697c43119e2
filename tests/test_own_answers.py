"""stylefold's own answers synced back into the inbox (the outbox shared into the phone folder
that feeds the inbox) are left alone: no result of a result, no report about a report."""

from __future__ import annotations

import io
import json
import re
import shutil
import signal
import struct
import time
import zlib
from pathlib import Path

import pytest
from conftest import (
    Folders,
    image_bytes,
    in_fresh_process,
    make_folders,
    start_daemon,
    wait_for,
    write_json,
)
from PIL import Image, PngImagePlugin

from daemon.intake.arrival import Arrival
from daemon.intake.ignore import IgnoreRules
from daemon.intake.own_answers import own_answer
from daemon.intake.pairing import Intake
from daemon.job_id import new_job_id
from daemon.status import read_status
from service.imageio import encode_image

PAIR_TIMEOUT = 3.0


def _camera_photo(path: Path, software: str = "Ver.1.00") -> Path:
    exif = Image.Exif()
    exif[0x0131] = software
    Image.open(io.BytesIO(image_bytes())).save(path, format="JPEG", exif=exif.tobytes())
    return path


@pytest.mark.parametrize("fmt", ["jpg", "png", "webp", "tiff"])
def test_an_image_we_encoded_is_known_and_a_camera_photo_is_not(tmp_path: Path, fmt: str) -> None:
    photo = _camera_photo(tmp_path / "camera.jpg")
    loaded = Image.open(photo)
    ours = tmp_path / f"result.{fmt}"
    ours.write_bytes(encode_image(loaded, fmt, exif=loaded.info["exif"]))
    assert own_answer(tmp_path, ours, tmp_path) == "a stylised image"
    assert own_answer(tmp_path, photo, tmp_path) is None
    (tmp_path / "garbage.jpg").write_bytes(b"\xff\xd8 not really")
    assert own_answer(tmp_path, tmp_path / "garbage.jpg", tmp_path) is None


def _png_of_zeros(path: Path, side: int) -> Path:
    """A whole, valid grey PNG of side x side pixels, a few hundred KB on disk."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    packer, row = zlib.compressobj(9), b"\0" * (side + 1)  # filter byte, then the pixels
    pixels = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )
    return path


# In a fresh process, so that its peak memory is this check's alone.
HEADER_CHECK = """
import resource, sys
from pathlib import Path
from daemon.intake.own_answers import own_answer
from daemon.pool.batching import upright_size
bomb = Path(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
found = own_answer(bomb.parent, bomb, bomb.parent), upright_size(bomb)
print(found, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_a_large_png_is_judged_from_its_header_without_decoding(tmp_path: Path) -> None:
    """An attacker's trial: a lone 0.7 MB PNG of 177 megapixels cost the daemon's main process
    half a gigabyte, as Pillow's PNG `getexif` decodes the whole image to look for EXIF after
    the pixels; the batch key's look at its orientation did the same for a claimed photo.
    Both happen before a worker applies max_pixels, so both now read the header only."""
    side = 12_000  # 144 megapixels, just under Pillow's own refusal
    bomb = _png_of_zeros(tmp_path / "bomb.png", side)
    found, grown = in_fresh_process(HEADER_CHECK, str(bomb)).rsplit(maxsplit=1)
    assert found == f"(None, ({side}, {side}))"
    assert int(grown) < 32 * 1024, f"the process grew by {grown} KiB"


def test_our_json_answers_are_known_and_sidecars_are_not(tmp_path: Path) -> None:
    job = {"job_id": new_job_id(), "input": "photo.jpg"}
    answers = {
        "photo.manifest.json": {**job, "status": "ok", "output": {}},
        "photo.error.json": {**job, "error": "has no sidecar", "sidecar": None},
        "photo.progress.json": {**job, "state": "running", "iteration": 3},
    }
    kinds = {
        name: own_answer(tmp_path, write_json(tmp_path / name, v), tmp_path)
        for name, v in answers.items()
    }
    assert kinds == {
        "photo.manifest.json": "a manifest",
        "photo.error.json": "an error report",
        "photo.progress.json": "a progress file",
    }
    not_ours = {
        "sidecar.json": {"style": "mosaic"},
        "made-up.json": {"job_id": "42", "input": "x", "error": "?"},
        "list.json": [job],
    }
    for name, value in not_ours.items():
        assert own_answer(tmp_path, write_json(tmp_path / name, value), tmp_path) is None, name
    (tmp_path / "broken.json").write_text("{")
    assert own_answer(tmp_path, tmp_path / "broken.json", tmp_path) is None


def test_status_tells_answers_come_back_before_pair_timeout_leaves_them_alone(
    tmp_path: Path,
) -> None:
    """A sync user's finding: every result synced back was listed "waiting for its sidecar"
    for pair_timeout (ten minutes) before it was known for what it is."""
    inbox, marks = tmp_path / "inbox", tmp_path / "marks"
    inbox.mkdir()
    marks.mkdir()
    intake = Intake(inbox, IgnoreRules(), settle_seconds=1.0, pair_timeout=600.0)
    intake.own_answer = lambda path: own_answer(inbox, path, marks)
    camera = Image.open(_camera_photo(inbox / "camera.jpg"))
    ours = encode_image(camera, "jpg", exif=camera.info["exif"])
    (inbox / "IMG_0001.jpg").write_bytes(ours)
    (inbox / "again.jpg").write_bytes(ours)  # with a sidecar: a request to render it again
    write_json(inbox / "again.json", {"style": "mosaic"})
    manifest = {"job_id": new_job_id(), "input": "photo.jpg", "status": "ok", "output": {}}
    write_json(inbox / "photo.manifest.json", manifest)
    write_json(inbox / "lonely.json", {"style": "mosaic"})
    for path in inbox.iterdir():
        intake.observe(path, 0.0)
    events = intake.poll(2.0)
    assert [event.image.name for event in events if isinstance(event, Arrival)] == ["again.jpg"]

    def notes() -> dict[str, str]:
        return {item.path: item.note for item in intake.items(2.0, time.time())}

    said = {name: re.sub(r"in 59\d s", "in N s", note) for name, note in notes().items()}
    assert said["IMG_0001.jpg"].startswith(
        "one of stylefold's own answers (a stylised image), come back into the inbox: left "
        "alone in N s unless its sidecar comes; exclude stylefold's answers from the sync"
    ), said
    assert said["photo.manifest.json"].startswith(
        "one of stylefold's own answers (a manifest), come back into the inbox: left alone in "
        "N s unless its photo comes"
    ), said
    assert said["camera.jpg"] == "waiting for its sidecar"
    assert said["lonely.json"] == "waiting for its photo"
    assert "again.jpg" not in said
    # Written over with a photo of the camera's, it is a lone photo again.
    shutil.copyfile(inbox / "camera.jpg", inbox / "IMG_0001.jpg")
    intake.observe(inbox / "IMG_0001.jpg", 2.0)
    intake.poll(4.0)
    assert notes()["IMG_0001.jpg"] == "waiting for its sidecar"


def test_the_daemons_status_tells_an_answer_come_back(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    folders: Folders = make_folders(tmp_path_factory.mktemp("told"))
    daemon = start_daemon(folders, config=folders.config(pair_timeout=300.0))
    try:
        camera = Image.open(_camera_photo(folders.root / "camera.jpg"))
        ours = encode_image(camera, "jpg", exif=camera.info["exif"])
        (folders.inbox / "IMG_0002.jpg").write_bytes(ours)

        def told() -> list[str]:
            inbox = read_status(folders.state).inbox
            return [item.note for item in inbox if item.path == "IMG_0002.jpg"]

        wait_for(lambda: any("own answers (a stylised image)" in note for note in told()), 30, "")
    finally:
        assert daemon.stop() == 0


def test_answers_synced_back_make_no_job_and_no_report(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    folders: Folders = make_folders(tmp_path_factory.mktemp("back"))
    config = folders.config(no_sidecar="default", default_style="mosaic", pair_timeout=PAIR_TIMEOUT)
    daemon = start_daemon(folders, config=config)
    try:
        _camera_photo(folders.inbox / "photo.jpg")
        write_json(folders.inbox / "lonely.json", {"style": "mosaic"})  # a photo never came
        wait_for(lambda: (folders.outbox / "photo.manifest.json").exists(), 90, "the result")
        wait_for(lambda: (folders.outbox / "lonely.error.json").exists(), 90, "the report")
        log = (folders.outbox / "photo.log").read_text()  # a new user's trial: it did not say
        assert "no sidecar came, so the default style mosaic (default_style)" in log, log
        answered = sorted(p.name for p in folders.outbox.iterdir())
        claimed = daemon.logged("job.claimed")
        # The phone's gallery folder holds the outbox's files and syncs them to the inbox.
        back = folders.inbox / "phone"
        shutil.copytree(folders.outbox, back)
        (back / "photo.stylised.jpg").rename(back / "IMG_0001.jpg")  # renamed on the phone
        wait_for(lambda: daemon.logged("intake.own_answer") >= 3, 30, "three answers known")
        time.sleep(PAIR_TIMEOUT + 2)  # any report or job would have come by now
        assert sorted(p.name for p in folders.outbox.iterdir()) == answered
        assert daemon.logged("job.claimed") == claimed
        kinds = sorted(
            line["kind"] for line in daemon.log_lines() if line.get("event") == "intake.own_answer"
        )
        assert kinds == ["a manifest", "a stylised image", "an error report"]
        # status.json is rewritten every STATUS_EVERY seconds at most, later on a busy machine
        wait_for(lambda: _own_answers_listed(folders), 30, "the attention item")
        (item,) = _own_answers_listed(folders)
        assert item["what"].startswith("3 of stylefold's own answers came back")
        assert "exclude" in item["fix"]
        # A result with a sidecar of its own is a request to render it again, and is.
        write_json(back / "IMG_0001.json", {"style": "waves"})
        wait_for(lambda: (folders.outbox / "phone" / "IMG_0001.manifest.json").exists(), 90, "")
        # Gone from the inbox, gone from status.
        shutil.rmtree(back)
        wait_for(lambda: not _own_answers_listed(folders), 30, "the attention item to clear")
    finally:
        assert daemon.stop() == 0


def _own_answers_listed(folders: Folders) -> list[dict[str, str]]:
    status = json.loads((folders.state / "status.json").read_text())
    return [a for a in status["attention"] if "own answers" in a["what"]]


# Loaded by every Python process the test starts (PYTHONPATH): Pillow's PNG parser ends the
# process, as a crash inside a C parser would, on a PNG whose header holds the text "crash".
CRASHING_PARSER = """
import os, signal
from PIL import PngImagePlugin

_open = PngImagePlugin.PngImageFile._open


def _crashing_open(self):
    _open(self)
    if self.info.get("crash") == "here":
        os.kill(os.getpid(), signal.SIGKILL)


PngImagePlugin.PngImageFile._open = _crashing_open
"""


def test_a_lone_file_whose_header_read_killed_the_daemon_is_not_read_there_again(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The own-answer check parses a lone file's header in the daemon's process. A file that
    kills it there killed it again at every start (a systemd restart loop: a left finding of
    session 32); the read's mark outlives it, and the next start answers the file unread."""
    folders: Folders = make_folders(tmp_path_factory.mktemp("crash"))
    hooks = folders.root / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(CRASHING_PARSER)
    env = {"PYTHONPATH": str(hooks)}
    config = folders.config(pair_timeout=1.0)
    photo = folders.inbox / "photo.png"
    text = PngImagePlugin.PngInfo()
    text.add_text("crash", "here")
    Image.open(io.BytesIO(image_bytes())).save(photo, pnginfo=text)
    first = start_daemon(folders, config=config, env=env)
    assert first.process.wait(timeout=60) == -signal.SIGKILL  # inside the parser
    marks = list((folders.state / "header-reads").iterdir())
    assert len(marks) == 1

    again = start_daemon(folders, config=config, env=env)
    try:
        report = folders.outbox / "photo.error.json"
        wait_for(report.exists, 60, "the report")
        assert "has no sidecar" in json.loads(report.read_text())["error"]
        assert [e["path"] for e in again.log_lines() if e.get("event") == "intake.header_not_read"]
        assert again.process.poll() is None
        assert marks[0].exists()  # the photo is still there as it was
    finally:
        assert again.stop() == 0

    photo.unlink()
    last = start_daemon(folders, config=config, env=env)
    assert not marks[0].exists()  # its file is gone: the mark is of no more use
    assert last.stop() == 0
