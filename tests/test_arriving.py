"""A settled but truncated photo is still arriving (daemon.intake.arrival): a hand-moved clock
over real files, then the claim's check that the photo is still the file that settled."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import Folders, write_json
from PIL import Image

from daemon.config import load_settings
from daemon.intake.arrival import MAX_BACKOFF
from daemon.intake.ignore import IgnoreRules
from daemon.intake.pairing import IN_PLACE_QUIET, Arrival, Intake, Problem
from daemon.intake.resolve import resolve
from daemon.intake.styles import StyleLibrary
from daemon.jobs.spool import Spool
from daemon.jobs.states import State
from daemon.jobs.store import Store
from daemon.safefs import Changed

SETTLE = 2.0
TIMEOUT = 300.0


def _jpeg_of(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


PHOTO = _jpeg_of(3)


class Clock:
    def __init__(self, inbox: Path, arriving_timeout: float = TIMEOUT) -> None:
        self.now = 1000.0
        self.inbox = inbox
        self.intake = Intake(
            inbox, IgnoreRules(), settle_seconds=SETTLE, pair_timeout=60.0,
            arriving_timeout=arriving_timeout,
        )  # fmt: skip

    def write(self, name: str, data: bytes) -> Path:
        path = self.inbox / name
        path.write_bytes(data)
        self.intake.observe(path, self.now)
        return path

    def poll(self, after: float) -> list[object]:
        self.now += after
        return list(self.intake.poll(self.now))

    def states(self) -> dict[str, str]:
        return {item.path: item.state for item in self.intake.items(self.now, 0.0)}


@pytest.fixture
def clock(tmp_path: Path) -> Clock:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    return Clock(inbox)


def test_a_truncated_photo_waits_through_long_pauses_then_arrives_once(clock: Clock) -> None:
    clock.write("photo.json", b'{"style": "mosaic"}')
    photo = clock.write("photo.jpg", PHOTO[:3000])
    for _burst in range(3):  # pauses of 5 settle times: each one looks like a finished file
        assert clock.poll(5 * SETTLE) == []
        assert clock.states()["photo.jpg"] == "arriving"
        item = next(i for i in clock.intake.items(clock.now, 0.0) if i.path == "photo.jpg")
        assert "a JPEG without its end marker" in item.note
        assert item.gives_up_in is not None and 0 < item.gives_up_in < TIMEOUT
        with photo.open("ab") as handle:
            handle.write(PHOTO[photo.stat().st_size : photo.stat().st_size + 3000])
        clock.intake.observe(photo, clock.now)
        assert clock.states()["photo.jpg"] == "settling"
    photo.write_bytes(PHOTO)
    clock.intake.observe(photo, clock.now)
    events = clock.poll(SETTLE)
    assert events == [Arrival(photo, clock.inbox / "photo.json", Path("."))]
    assert isinstance(events[0], Arrival) and events[0].seen is not None
    assert events[0].seen[photo].size == len(PHOTO)


def test_a_photo_whose_size_is_set_before_its_content_waits_for_it(clock: Clock) -> None:
    """Windows and SMB copies (and some phone apps) set the full size first, then write: a
    sync trial's photo was reported "not an image format" three seconds in, and answered again
    when written. Zeros are no image's start: it is still arriving."""
    clock.write("photo.json", b'{"style": "mosaic"}')
    photo = clock.write("photo.jpg", bytes(len(PHOTO)))
    assert clock.poll(5 * SETTLE) == []
    assert clock.states()["photo.jpg"] == "arriving"
    item = next(i for i in clock.intake.items(clock.now, 0.0) if i.path == "photo.jpg")
    assert "its first bytes are still zeros" in item.note, item.note
    with photo.open("r+b") as handle:  # the first chunk: then a JPEG without its end
        handle.write(PHOTO[:4096])
    clock.intake.observe(photo, clock.now)
    assert clock.poll(5 * SETTLE) == [] and clock.states()["photo.jpg"] == "arriving"
    photo.write_bytes(PHOTO)
    clock.intake.observe(photo, clock.now)
    assert clock.poll(SETTLE) == [Arrival(photo, clock.inbox / "photo.json", Path("."))]
    # A sidecar written so: waited for too, not reported as bad JSON (a sync trial).
    other = clock.write("other.jpg", PHOTO)
    sidecar = clock.write("other.json", bytes(19))
    assert clock.poll(5 * SETTLE) == [] and clock.states()["other.json"] == "arriving"
    sidecar.write_bytes(b'{"style": "mosaic"}')
    clock.intake.observe(sidecar, clock.now)
    assert clock.poll(SETTLE) == [Arrival(other, sidecar, Path("."))]

    # A sidecar of zeros too large to be one is not waited for: its size is told at once (an
    # attacker's trial: a sparse 10 GiB waited arriving_timeout, its photo pair_timeout).
    big = clock.write("big.jpg", PHOTO)
    zeros = clock.inbox / "big.json"
    with zeros.open("wb") as handle:
        handle.truncate(10 << 30)
    clock.intake.observe(zeros, clock.now)
    assert clock.poll(SETTLE) == [Arrival(big, zeros, Path("."))]


def _encoded(fmt: str, pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def test_a_webp_whose_size_is_set_first_waits_for_its_end(clock: Clock) -> None:
    """A sync trial: a writer that set the size first, then wrote 256 KiB every 8 s, had a
    WebP (and a HEIC, a TIFF) taken after its first chunk and rendered from it and zeros:
    the header's size fits. Its last bytes are zeros until the end is written."""
    pixels = np.random.default_rng(5).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    data = _encoded("WEBP", pixels)
    clock.write("photo.json", b'{"style": "mosaic"}')
    photo = clock.write("photo.webp", bytes(len(data)))
    for written in (len(data) // 3, 2 * len(data) // 3):
        with photo.open("r+b") as handle:
            handle.write(data[:written])
        clock.intake.observe(photo, clock.now)
        assert clock.poll(5 * SETTLE) == [] and clock.states()["photo.webp"] == "arriving"
    photo.write_bytes(data)
    clock.intake.observe(photo, clock.now)
    assert clock.poll(SETTLE) == [Arrival(photo, clock.inbox / "photo.json", Path("."))]


def test_a_photo_ending_in_black_is_taken_once_unchanged_for_arriving_timeout(
    clock: Clock,
) -> None:
    """Whole, an uncompressed photo whose last rows are black ends in zeros too: it waits as
    long as a truncated one, then is taken, not reported."""
    pixels = np.random.default_rng(6).integers(1, 256, (48, 64, 3), dtype=np.uint8)
    pixels[-6:] = 0
    clock.write("dark.json", b'{"style": "mosaic"}')
    photo = clock.write("dark.tiff", _encoded("TIFF", pixels))
    assert clock.poll(SETTLE) == [] and clock.states()["dark.tiff"] == "arriving"
    item = next(i for i in clock.intake.items(clock.now, 0.0) if i.path == "dark.tiff")
    assert "its last bytes are still zeros" in item.note, item.note
    assert clock.poll(TIMEOUT - 2 * SETTLE) == []
    assert clock.poll(2 * SETTLE) == [Arrival(photo, clock.inbox / "dark.json", Path("."))]


def test_a_taken_photo_written_over_in_place_must_stay_unchanged_longer(clock: Clock) -> None:
    """archive = "keep": `rsync --inplace` at a low bandwidth wrote a new version over a taken
    photo, paused longer than settle_seconds, and the half-written file, whole by the old
    version's end, was answered (a sync trial). Such a rewrite waits IN_PLACE_QUIET times."""
    clock.write("photo.json", b'{"style": "mosaic"}')
    photo = clock.write("photo.jpg", PHOTO)
    assert clock.poll(SETTLE) == [Arrival(photo, clock.inbox / "photo.json", Path("."))]
    other = _jpeg_of(7)
    with photo.open("r+b") as handle:  # the first burst of a new version, over the old
        handle.write(other[:4096])
    clock.intake.observe(photo, clock.now)
    assert clock.poll(SETTLE) == [] and clock.poll((IN_PLACE_QUIET - 1.5) * SETTLE) == []
    assert clock.states()["photo.jpg"] == "settling"
    with photo.open("r+b") as handle:  # the rest: a new version, whole
        handle.write(other)
    clock.intake.observe(photo, clock.now)
    assert clock.poll((IN_PLACE_QUIET - 0.5) * SETTLE) == []
    assert clock.poll(SETTLE) == [Arrival(photo, clock.inbox / "photo.json", Path("."))]
    replaced = clock.inbox / "new.jpg"  # a new file renamed over it settles as any new file
    replaced.write_bytes(PHOTO)
    replaced.rename(photo)
    clock.intake.observe(photo, clock.now)
    assert clock.poll(SETTLE) == [Arrival(photo, clock.inbox / "photo.json", Path("."))]


def test_looks_back_off_and_a_photo_cut_off_for_good_is_reported_once(clock: Clock) -> None:
    clock.write("photo.json", b'{"style": "mosaic"}')
    photo = clock.write("photo.jpg", PHOTO[:-100])
    clock.poll(SETTLE)
    looks = []
    while True:
        entry = clock.intake._files[photo]
        if entry.arriving is None:
            break
        looks.append(entry.arriving.look_at - clock.now)
        events = clock.poll(entry.arriving.look_at - clock.now)
        if events:
            break
    assert looks[:4] == [SETTLE, 2 * SETTLE, 4 * SETTLE, 8 * SETTLE]
    assert max(looks) <= MAX_BACKOFF
    # reported on time, not a look late (counted from the photo's ctime, a moment before 1000)
    assert clock.now - 1000.0 == pytest.approx(TIMEOUT, abs=0.5)
    assert len(events) == 1 and isinstance(events[0], Problem)
    assert "truncated or corrupt (a JPEG without its end marker)" in events[0].reason
    assert "arriving_timeout" in events[0].reason
    assert clock.poll(TIMEOUT) == []  # once
    # A new, whole copy is taken.
    photo.write_bytes(PHOTO)
    clock.intake.observe(photo, clock.now)
    assert [type(e) for e in clock.poll(SETTLE)] == [Arrival]


def test_a_restart_does_not_start_a_truncated_photo_s_wait_again(tmp_path: Path) -> None:
    """An operator's trial: restarted (or run by `once` from cron) within arriving_timeout, a
    cut-off photo was never reported, each start counting again from when it saw the photo.
    The wait counts from the file's last change on disk (its inode change time)."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_json(inbox / "photo.json", {"style": "mosaic"})
    (inbox / "photo.jpg").write_bytes(PHOTO[:-100])
    time.sleep(1.0)  # unchanged since, while no daemon ran
    started = Clock(inbox, arriving_timeout=SETTLE + 0.5)
    for name in ("photo.json", "photo.jpg"):
        started.intake.observe(inbox / name, started.now)
    [event] = started.poll(SETTLE)  # reported once settled, not arriving_timeout after
    assert isinstance(event, Problem) and "arriving_timeout" in event.reason, event


def test_whole_and_unknown_files_settle_as_before(clock: Clock) -> None:
    clock.write("a.jpg", PHOTO)
    clock.write("a.json", b"{}")
    clock.write("b.jpg", b"\xff\xd8 not a JPEG at all")  # corrupt: the decoder reports it
    clock.write("b.json", b"{}")
    assert sorted(e.image.name for e in clock.poll(SETTLE) if isinstance(e, Arrival)) == [
        "a.jpg",
        "b.jpg",
    ]


def test_a_claim_gives_back_a_photo_that_changed_after_it_settled(folders: Folders) -> None:
    settings = load_settings(folders.config(), {})
    spool = Spool(settings, Store(settings.state))
    intake = Intake.from_settings(settings)
    photo = folders.inbox / "photo.jpg"
    photo.write_bytes(PHOTO)
    write_json(folders.inbox / "photo.json", {"style": "mosaic"})
    for path in folders.inbox.iterdir():
        intake.observe(path, 0.0)
    (arrival,) = intake.poll(settings.settle_seconds + 1)
    assert isinstance(arrival, Arrival)
    with photo.open("ab") as handle:  # a writer still at work after the file looked settled
        handle.write(b"more")
    resolved = resolve(arrival, settings, StyleLibrary.from_settings(settings))
    with pytest.raises(Changed):
        spool.claim(arrival, resolved)
    assert photo.read_bytes() == PHOTO + b"more"  # back in the inbox, untouched
    assert (folders.inbox / "photo.json").exists()
    assert os.listdir(spool.root) == []
    # Refused before anything moved, or rolled back: either way no job was recorded as claimed.
    assert all(row.state is State.ROLLED_BACK for row in spool.store.finished(5))
    assert spool.store.active() == []


def test_a_photo_named_as_the_style_of_a_pair_cut_off_goes_once_that_one_is_reported(
    tmp_path: Path,
) -> None:
    """An attacker's trial: a truncated photo whose sidecar named another person's photo as
    its style held that one back for the whole pair_timeout after it was reported, and status
    said the photo waited for its sidecar, which was there."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    clock = Clock(inbox, arriving_timeout=20.0)
    clock.write("att.jpg", PHOTO[:-100])
    clock.write("att.json", b'{"style": {"file": "v.jpg"}}')
    victim = clock.write("v.jpg", _jpeg_of(4))
    clock.write("v.json", b'{"style": "mosaic"}')
    assert clock.poll(SETTLE) == []
    item = next(item for item in clock.intake.items(clock.now, 0.0) if item.path == "v.jpg")
    assert item.note == (
        "waiting for the pair of att.json, which names it as its style image, to be taken "
        "first; taken by itself in 58 s at the latest"
    )
    assert item.gives_up_in is None  # it is not reported then: it goes
    events: list[object] = []
    while not any(isinstance(e, Arrival) for e in events) and clock.now < 1000.0 + 60.0:
        events += clock.poll(1.0)
    reported = [e for e in events if isinstance(e, Problem)]
    assert [e.path.name for e in reported] == ["att.jpg"]
    assert "truncated or corrupt" in reported[0].reason
    assert events[-1] == Arrival(victim, inbox / "v.json", Path("."))
    assert clock.now - 1000.0 <= 20.0 + SETTLE  # at the report, not at pair_timeout
