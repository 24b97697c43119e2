"""The page against what anyone who writes to the shared folders can put there: files of
hundreds of megabytes, thousands of files."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

import pytest
from conftest import image_bytes, in_fresh_process, make_folders, wait_for

pytest.importorskip("starlette", reason="the page needs the web extra")

# In a fresh process, so that its peak memory is this check's alone.
CHECK = """
import resource, sys
from pathlib import Path
from daemon.web.thumbnails import MAX_FILE_BYTES, Pictures
original, expected = Path(sys.argv[1]), sys.argv[2]
pictures = Pictures(original.parent / "cache", max_pixels=10**6)
with original.open("rb") as handle:
    shown = pictures.encode(handle, sha256=expected) is not None
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
refused = []
for size in (MAX_FILE_BYTES, MAX_FILE_BYTES + 1):
    with original.open("r+b") as handle:
        handle.truncate(size)  # sparse: nothing on disk
    with original.open("rb") as handle:
        refused.append(pictures.encode(handle, sha256=expected) is None)
print(shown, all(refused), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_an_original_replaced_by_a_large_file_is_refused_before_it_is_read(
    tmp_path: Path,
) -> None:
    """An original left in the inbox (archive = "keep") may be replaced by anyone: a 256 MB
    file was read whole into memory at every request before its hash was compared (1.6 GB
    for one gallery's six requests, an attacker's trial). The hash is now streamed and a file
    over the limit is not read at all."""
    photo = image_bytes(seed=1)
    original = tmp_path / "photo.jpg"
    original.write_bytes(photo)
    expected = hashlib.sha256(photo).hexdigest()
    shown, refused, grown = in_fresh_process(CHECK, str(original), expected).split()
    assert shown == "True"  # the real original is shown
    assert refused == "True"
    assert int(grown) < 64 * 1024, f"the process grew by {grown} KiB"


def test_a_replaced_original_is_read_once_per_version(tmp_path: Path) -> None:
    """A replaced original was read and hashed again at every request (every page view, with
    archive = "keep"); its refusal is remembered until the file changes again."""
    from daemon.web.thumbnails import Pictures

    photo = image_bytes(seed=2)
    original = tmp_path / "photo.jpg"
    original.write_bytes(image_bytes(seed=3))  # someone else's picture under its name
    pictures = Pictures(tmp_path / "cache", max_pixels=10**6)
    expected = hashlib.sha256(photo).hexdigest()
    for read_again in (True, False):
        with original.open("rb") as handle:
            assert pictures.thumbnail(handle, "job:o", expected) is None
            assert (handle.tell() > 0) is read_again
    original.write_bytes(photo)  # put back: shown again
    with original.open("rb") as handle:
        assert pictures.thumbnail(handle, "job:o", expected) is not None


def test_a_thumbnail_cached_before_photos_were_converted_to_srgb_is_made_again(
    tmp_path: Path,
) -> None:
    """Cached thumbnails outlive an upgrade: a Display P3 photo's, cached when its P3 numbers
    were shown as sRGB, stayed washed out. The cache key holds the rendition."""
    import io

    from icc_profiles import rgb_profile
    from PIL import Image

    from daemon.web.thumbnails import Pictures

    photo = tmp_path / "p3.png"
    Image.new("RGB", (32, 32), (200, 100, 50)).save(photo, icc_profile=rgb_profile("P3"))
    info = photo.stat()
    old_key = f"job:p\0{info.st_size}\0{info.st_mtime_ns}"  # before the rendition was in it
    cache = tmp_path / "cache"
    cache.mkdir()
    stale = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 100, 50)).save(stale, "JPEG")  # the P3 numbers as sRGB
    (cache / f"{hashlib.sha256(old_key.encode()).hexdigest()[:40]}.jpg").write_bytes(
        stale.getvalue()
    )
    with photo.open("rb") as handle:
        shown = Pictures(cache, max_pixels=10**6).thumbnail(handle, "job:p")
    assert shown is not None
    red, _, blue = Image.open(io.BytesIO(shown)).getpixel((16, 16))
    assert red > 210 and blue < 35  # converted: (216, 93, 24) in sRGB


def test_a_burst_in_the_inbox_is_counted_not_listed_and_the_running_job_stays_on_top(
    tmp_path: Path,
) -> None:
    """10,000 files in the inbox made every poll of every viewer 2.8 MB of queue (an
    attacker's trial); the page lists QUEUE_SHOWN rows, the jobs at work first."""
    from daemon.config import load_settings
    from daemon.status_model import DaemonInfo, InboxItem, JobItem, StatusReport, Unlisted
    from daemon.web.app import Site
    from daemon.web.page import QUEUE_SHOWN, build_page

    settings = load_settings(make_folders(tmp_path).config(), {})
    site = Site(settings, poll_seconds=2.0)
    burst = [
        InboxItem(path=f"flood/f{index}.jpg", state="waiting", note="waiting", since=0.0)
        for index in range(QUEUE_SHOWN + 10)
    ]
    running = JobItem(job_id="j", input="mine.jpg", state="running", since=0.0)
    report = StatusReport(daemon=DaemonInfo(running=True, pid=1, version="1"), inbox=burst)
    report = report.model_copy(update={"jobs": [running]})
    page = build_page(report, settings, site.outputs, site.library())
    assert [row.name for row in page.queue[:2]] == ["mine.jpg", "flood/f0.jpg"]
    assert len(page.queue) == QUEUE_SHOWN and page.queue_more == 11
    html = site.sections(page)["queue"]
    assert "... and 11 more waiting" in html and "flood/f48.jpg" in html
    assert "flood/f49.jpg" not in html
    # The daemon's report lists LISTED of them and counts the rest: they are counted here too.
    unlisted = Unlisted(queued=7, inbox={"waiting": 5})
    counted = report.model_copy(update={"unlisted": unlisted})
    page = build_page(counted, settings, site.outputs, site.library())
    assert page.queue_more == 11 + 12


def test_a_page_run_by_root_writes_nothing_in_another_users_state_folder(tmp_path: Path) -> None:
    """A re-tester's trial: `sudo stylefold web` over the daemon's user's state folder, whose
    `thumbnails` that user had made a link to a folder of root's, wrote root's cache there and
    deleted its oldest files. Thumbnails are made, and nothing is written or deleted."""
    import os

    from daemon.web.thumbnails import CACHE_FILES, Pictures

    if os.geteuid() != 0:
        pytest.skip("only root writes into another user's state folder")
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o700)
    for index in range(CACHE_FILES + 3):
        (victim / f"f{index}").write_text("root's")
    state = tmp_path / "state"
    state.mkdir()
    (state / "thumbnails").symlink_to(victim)
    os.chown(state, 4321, 4322)
    os.chown(state / "thumbnails", 4321, 4322, follow_symlinks=False)
    photo = tmp_path / "p.png"
    photo.write_bytes(image_bytes(seed=3))
    pictures = Pictures(state / "thumbnails", max_pixels=10**6)
    for _ in range(2):
        with photo.open("rb") as handle:
            assert pictures.thumbnail(handle, "job:p")
    assert sorted(p.name for p in victim.iterdir()) == sorted(
        f"f{index}" for index in range(CACHE_FILES + 3)
    )


def test_a_picture_with_a_long_comment_gets_a_thumbnail(tmp_path: Path) -> None:
    """An attacker's trial: a GIF whose comment is over 64 KB made the thumbnail's JPEG encoder
    raise, so the page answered 500 and decoded the file again at every view."""
    import io

    from PIL import Image

    from daemon.web.thumbnails import Pictures

    gif = tmp_path / "long.gif"
    Image.new("P", (30, 20), 5).save(gif, "GIF", comment=b"c" * 70_000)
    assert len(Image.open(gif).info["comment"]) == 70_000
    with gif.open("rb") as handle:
        shown = Pictures(tmp_path / "cache", max_pixels=10**6).thumbnail(handle, "job:g")
    assert shown is not None and Image.open(io.BytesIO(shown)).size == (30, 20)


def test_a_file_with_a_second_name_is_not_served_and_the_page_says_why(tmp_path: Path) -> None:
    """A review: an outbox of hard-link snapshots (`cp -al`) would empty the page silently."""
    import os

    from structlog.testing import capture_logs

    from daemon.web.files import open_inside

    outbox = tmp_path / "outbox"
    outbox.mkdir()
    (outbox / "cat.log").write_text("log")
    handle = open_inside(outbox, "cat.log", one_name=True)
    assert handle is not None
    handle.close()
    os.link(outbox / "cat.log", tmp_path / "snapshot.log")
    with capture_logs() as logs:
        assert open_inside(outbox, "cat.log", one_name=True) is None
        assert open_inside(outbox, "cat.log", one_name=True) is None
    assert [entry["event"] for entry in logs] == ["web.hard_link_not_served"]
    assert logs[0]["path"] == str(outbox / "cat.log")


def test_root_uses_no_cache_another_user_owns_in_its_own_state_folder(tmp_path: Path) -> None:
    """A review: with the state folder root's but `thumbnails/` another user's, root would
    read a cached file that user made a link to a secret, and serve it."""
    import os

    from daemon.web.thumbnails import Pictures

    if os.geteuid() != 0:
        pytest.skip("only root")
    state = tmp_path / "state"
    (state / "thumbnails").mkdir(parents=True)
    os.chown(state / "thumbnails", 4321, 4322)
    photo = tmp_path / "p.png"
    photo.write_bytes(image_bytes(seed=3))
    with photo.open("rb") as handle:
        assert Pictures(state / "thumbnails", max_pixels=10**6).thumbnail(handle, "job:p")
    assert list((state / "thumbnails").iterdir()) == []


def test_the_finished_line_counts_every_outcome_as_status_does(tmp_path: Path) -> None:
    """A new user's trial: the page said "4 done, 0 failed, 0 rejected" where status said
    "4 done, 2 skipped" after photos were sent again. Both now say the same line."""
    from daemon.cli.status import render_status
    from daemon.config import load_settings
    from daemon.status_model import Counts, DaemonInfo, StatusReport
    from daemon.web.app import Site
    from daemon.web.page import build_page

    settings = load_settings(make_folders(tmp_path).config(), {})
    site = Site(settings, poll_seconds=2.0)
    daemon = DaemonInfo(running=True, pid=1, version="1")
    for counts, said in [
        (Counts(done=4, skipped=2), "4 done, 2 skipped"),
        (Counts(failed=1, rejected=3), "1 failed, 3 rejected"),
        (Counts(), "nothing yet"),
    ]:
        report = StatusReport(daemon=daemon, counts=counts)
        health = site.sections(build_page(report, settings, site.outputs, site.library()))
        assert f"<dt>finished</dt><dd>{said}</dd>" in health["health"]
        text = render_status(report, failures=5, now=0.0)
        assert (f"finished: {said}" in text) == (said != "nothing yet")


# Four requests at once for four large results, then the first again, in a fresh process.
FULL = """
import resource, sys, threading
from pathlib import Path
from PIL import Image
from daemon.web.thumbnails import Pictures
folder = Path(sys.argv[1])
results = []
for n in range(4):
    results.append(folder / f"r{n}.png")
    Image.new("RGB", (4000, 4000), (10 * n, 120, 200)).save(results[-1])
pictures = Pictures(folder / "cache", max_pixels=10**8)
def show(path):
    with path.open("rb") as handle:
        assert pictures.full(handle, f"{path.name}:full") is not None
show(results[0])
one = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
threads = [threading.Thread(target=show, args=(r,)) for r in results[1:]]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
four = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with results[0].open("rb") as handle:
    read = pictures.full(handle, "r0.png:full") is not None and handle.tell()
print(one, four, read)
"""


def test_full_size_pictures_are_decoded_one_at_a_time_and_kept(tmp_path: Path) -> None:
    """A dozen requests at once for a 50 MP result took 4 GB in the page's process, each
    decoding it again (an attacker's trial). Decodes now wait their turn, and the latest full
    sizes are kept: a result looked at again is not read again."""
    one, four, read = (int(n) for n in in_fresh_process(FULL, str(tmp_path), timeout=300).split())
    # A 16 MP decode takes about 48 MB of pixels at the least; three at once would add as
    # much again twice over.
    assert four - one < 48 * 1024, f"three at once grew the process by {four - one} KiB"
    assert read == 0  # served as kept, the file not read


def test_a_picture_put_in_place_with_the_same_size_and_mtime_is_not_served_stale(
    tmp_path: Path,
) -> None:
    """A re-tester put another result in place of one with the same size and mtime (as rsync
    -t or Syncthing would) and was shown the old one from the cache; the change time, which no
    one sets, tells them apart. With the job's hash, only its own picture is shown."""
    from daemon.web.thumbnails import Pictures

    pictures = Pictures(tmp_path / "cache", max_pixels=10**6)
    first, second = (_uncompressed((200, 40, 40)), _uncompressed((40, 40, 200)))
    assert len(first) == len(second)
    result = tmp_path / "r.jpg"
    result.write_bytes(first)
    mtime = result.stat().st_mtime_ns
    with result.open("rb") as handle:
        shown = pictures.full(handle, "job:full"), pictures.thumbnail(handle, "job:r")
    result.write_bytes(second)
    os.utime(result, ns=(mtime, mtime))
    with result.open("rb") as handle:
        again = pictures.full(handle, "job:full"), pictures.thumbnail(handle, "job:r")
    assert again[0] != shown[0] and again[1] != shown[1]
    with result.open("rb") as handle:  # the job's hash was of the first
        assert pictures.full(handle, "job:hashed", hashlib.sha256(first).hexdigest()) is None
        # Larger than its manifest says: not decoded (a 49 MP picture took 1 GB to show).
        assert pictures.full(handle, "job:larger", pixels=32 * 32 - 1) is None
        assert pictures.full(handle, "job:as large", pixels=32 * 32) is not None


def test_pictures_beyond_those_waiting_are_refused_at_once(tmp_path: Path) -> None:
    """A re-tester's 60 requests for full sizes, abandoned within a second, each held one of
    the server's threads while it waited for the decoder, and the whole page did not answer for
    22 s. Beyond MAX_WAITING, a picture is refused at once (503, asked again later)."""
    from daemon.web.thumbnails import MAX_WAITING, Busy, Pictures

    pictures = Pictures(tmp_path / "cache", max_pixels=10**6)
    fifo = tmp_path / "held"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR)  # its reads wait until this end writes or closes
    busy: list[Busy] = []
    made: list[bytes | None] = []

    def ask() -> None:
        try:
            with fifo.open("rb") as handle:
                made.append(pictures.encode(handle))
        except Busy as refused:
            busy.append(refused)

    askers = [threading.Thread(target=ask) for _ in range(MAX_WAITING + 1)]
    for asker in askers:
        asker.start()
    try:
        wait_for(lambda: busy, timeout=30, what="one request refused while the decoder is held")
    finally:
        os.write(writer, b"not a picture")
        os.close(writer)
        for asker in askers:
            asker.join(30)
    assert len(busy) == 1 and made == [None] * MAX_WAITING
    photo = tmp_path / "p.jpg"
    photo.write_bytes(image_bytes(seed=6))
    with photo.open("rb") as handle:
        assert pictures.encode(handle) is not None  # room again


def _uncompressed(colour: tuple[int, int, int]) -> bytes:
    """A 32 px TIFF without compression: of one size whatever its colour."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(out, format="TIFF")
    return out.getvalue()


def test_thumbnails_stored_at_once_do_not_call_the_cache_unwritable(tmp_path: Path) -> None:
    """A regression trial: requests storing thumbnails at once saw each other's temporary
    files come and go between the cache's listing and a look at one, and the page warned at
    once that its cache could not be written (and would make every thumbnail again)."""
    from daemon.web.thumbnails import Pictures

    pictures = Pictures(tmp_path / "cache", max_pixels=10**6)
    photos = []
    for n in range(64):
        photos.append(tmp_path / f"p{n}.jpg")
        photos[-1].write_bytes(image_bytes(seed=n, size=(16, 12)))

    def show(mine: list[Path]) -> None:
        for photo in mine:
            with photo.open("rb") as handle:
                assert pictures.thumbnail(handle, photo.name) is not None

    threads = [threading.Thread(target=show, args=(photos[n::8],)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not pictures._warned  # the warning's own flag: said once, and never wrongly
    assert len(list((tmp_path / "cache").glob("*.jpg"))) == len(photos)
