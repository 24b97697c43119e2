"""The watcher with real watchdog observers (inotify and polling) on real folders."""

import errno
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from daemon.intake.ignore import IgnoreRules
from daemon.intake.mounts import Mount, mount_of, needs_polling, parse_mountinfo
from daemon.intake.native import held_watches
from daemon.intake.pairing import Arrival, Intake
from daemon.intake.watcher import Watcher, WatchError

TIMEOUT = 10.0


def wait_for(condition: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


class Seen:
    """A thread-safe record of the paths the watcher fed."""

    def __init__(self) -> None:
        self.paths: list[Path] = []
        self.lock = threading.Lock()

    def __call__(self, path: Path) -> None:
        with self.lock:
            self.paths.append(path)

    def has(self, path: Path) -> bool:
        with self.lock:
            return path in self.paths

    def clear(self) -> None:
        with self.lock:
            self.paths.clear()

    def snapshot(self) -> set[Path]:
        with self.lock:
            return set(self.paths)


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    root = tmp_path / "inbox"
    root.mkdir()
    return root


@pytest.fixture
def make_watcher(inbox: Path) -> Iterator[Callable[..., tuple[Watcher, Seen]]]:
    started: list[Watcher] = []

    def factory(**options: object) -> tuple[Watcher, Seen]:
        seen = Seen()
        settings: dict[str, object] = {
            "poll_interval": 0.2,
            "rescan_interval": 3600.0,
            "check_interval": 0.1,
            **options,
        }
        watcher = Watcher(inbox, IgnoreRules(), seen, **settings)  # type: ignore[arg-type]
        watcher.start()
        started.append(watcher)
        assert watcher.first_scan.wait(TIMEOUT)
        return watcher, seen

    yield factory
    for watcher in started:
        watcher.stop()


@pytest.mark.parametrize("mode", ["native", "polling"])
def test_arrivals_seen(
    make_watcher: Callable[..., tuple[Watcher, Seen]], inbox: Path, mode: str
) -> None:
    watcher, seen = make_watcher(mode=mode)
    assert watcher.mode == mode
    direct = inbox / "photo.jpg"
    direct.write_bytes(b"x")
    assert wait_for(lambda: seen.has(direct))

    # A sync tool's temporary name is never fed; its rename into place is.
    temp = inbox / ".syncthing.other.jpg.tmp"
    temp.write_bytes(b"x" * 10)
    final = inbox / "other.jpg"
    temp.rename(final)
    assert wait_for(lambda: seen.has(final))
    assert not seen.has(temp)

    # A subfolder created later, and a whole folder moved in from outside.
    (inbox / "trip").mkdir()
    nested = inbox / "trip" / "photo.json"
    nested.write_text("{}")
    assert wait_for(lambda: seen.has(nested))
    outside = inbox.parent / "album"
    (outside / "day").mkdir(parents=True)
    (outside / "day" / "a.png").write_bytes(b"x")
    (outside / "day" / "a.json").write_text("{}")
    outside.rename(inbox / "album")
    for name in ("a.png", "a.json"):
        assert wait_for(lambda name=name: seen.has(inbox / "album" / "day" / name))  # type: ignore[misc]

    # Deletions are fed too, so the intake can forget the file.
    seen.clear()
    direct.unlink()
    assert wait_for(lambda: seen.has(direct))
    assert not any(".syncthing" in path.name or path.suffix == ".tmp" for path in seen.snapshot())


def test_initial_scan_feeds_existing_files_and_skips_ignored(
    make_watcher: Callable[..., tuple[Watcher, Seen]], inbox: Path
) -> None:
    wanted = [inbox / "a.jpg", inbox / "a.json", inbox / "sub" / "b.heic"]
    unwanted = [
        inbox / name
        for name in (
            ".DS_Store",
            "._a.jpg",
            "@eaDir/a.jpg",
            ".stversions/old.jpg",
            "notes.txt",
            "x.jpg.partial",
        )
    ]
    for path in wanted + unwanted:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    scanned = threading.Event()
    watcher, seen = make_watcher(mode="native", on_scan=scanned.set)
    assert scanned.is_set()
    assert watcher.scans == 1
    assert seen.snapshot() == set(wanted)


def test_periodic_scan_finds_what_events_missed(
    make_watcher: Callable[..., tuple[Watcher, Seen]], inbox: Path
) -> None:
    # A polling observer that never gets round to polling stands in for dropped events.
    watcher, seen = make_watcher(mode="polling", poll_interval=3600.0, rescan_interval=0.3)
    missed = inbox / "missed.jpg"
    missed.write_bytes(b"x")
    assert wait_for(lambda: seen.has(missed))
    assert watcher.scans >= 2


def test_request_scan(make_watcher: Callable[..., tuple[Watcher, Seen]], inbox: Path) -> None:
    watcher, seen = make_watcher(mode="polling", poll_interval=3600.0)
    (inbox / "late.jpg").write_bytes(b"x")
    watcher.request_scan()
    assert wait_for(lambda: seen.has(inbox / "late.jpg"))


@pytest.mark.parametrize("mode", ["native", "polling"])
def test_inbox_gone_pauses_and_returns(
    make_watcher: Callable[..., tuple[Watcher, Seen]], inbox: Path, mode: str
) -> None:
    kept = inbox / "kept.jpg"
    kept.write_bytes(b"x")
    with capture_logs() as logs:
        watcher, seen = make_watcher(mode=mode)
        assert seen.has(kept)
        away = inbox.parent / "unmounted"
        inbox.rename(away)
        assert wait_for(lambda: watcher.paused)
        away.rename(inbox)
        assert wait_for(lambda: not watcher.paused)
    # Event names are dotted, as every other (an operator's trial: the README's jq recipes
    # filter on them, and "inbox unavailable, pausing (...)" was a sentence).
    events = [line["event"] for line in logs]
    assert events[:3] == ["watcher.started", "watcher.paused", "watcher.resumed"], events
    [paused] = [line for line in logs if line["event"] == "watcher.paused"]
    assert paused["reason"] == "it does not exist"
    inbox.rename(away)
    assert wait_for(lambda: watcher.paused)
    assert watcher.pause_reason == "it does not exist"
    assert watcher.mode is None  # cleared in the same statement that pauses
    seen.clear()
    (away / "while-away.jpg").write_bytes(b"x")
    time.sleep(0.5)
    assert seen.snapshot() == set()  # nothing reported while paused: no deletions, no arrivals
    away.rename(inbox)
    assert wait_for(lambda: not watcher.paused)
    assert watcher.mode == mode
    assert wait_for(lambda: seen.snapshot() >= {kept, inbox / "while-away.jpg"})
    fresh = inbox / "fresh.jpg"
    fresh.write_bytes(b"x")
    assert wait_for(lambda: seen.has(fresh))


def watches_folder(watcher: Watcher, inbox: Path) -> bool:
    """Whether the watcher's observer was started on the folder now at `inbox`."""
    return watcher._identity is not None and watcher._identity[1] == inbox.stat().st_ino


class Sampler:
    """What `status` would read of a watcher, read as often as the other threads allow."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self.seen: set[tuple[bool, str | None]] = set()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.is_set():
            self.seen.add((self.watcher.paused, self.watcher.mode))
            time.sleep(0)  # let the watcher's threads run between reads

    def stop(self) -> set[tuple[bool, str | None]]:
        self.done.set()
        self.thread.join()
        return self.seen


@pytest.mark.parametrize("mode", ["native", "polling"])
def test_an_unpaused_inbox_always_has_a_watch_mode(
    make_watcher: Callable[..., tuple[Watcher, Seen]], inbox: Path, mode: str
) -> None:
    # Enough folders that starting a watch (the depth walk, inotify's recursive add) takes a
    # while: that is when `status` once read an unpaused inbox with no mode.
    for index in range(400):
        (inbox / f"album{index}").mkdir()
    watcher, _ = make_watcher(mode=mode)
    sampler = Sampler(watcher)
    away = inbox.parent / "unmounted"
    for _ in range(3):
        inbox.rename(away)
        assert wait_for(lambda: watcher.paused)
        away.rename(inbox)
        assert wait_for(lambda: not watcher.paused)
    shutil.rmtree(inbox)
    inbox.mkdir()  # recreated: the observer restarts without a pause
    assert wait_for(lambda: watches_folder(watcher, inbox))
    seen = sampler.stop()
    assert (False, None) not in seen
    assert {(True, None), (False, mode)} <= seen


def test_recreated_inbox_gets_a_new_observer(
    make_watcher: Callable[..., tuple[Watcher, Seen]], inbox: Path
) -> None:
    watcher, seen = make_watcher(mode="native", check_interval=1.0)
    shutil.rmtree(inbox)
    inbox.mkdir()  # recreated before a check notices: same path, new folder
    assert wait_for(lambda: watcher.mode == "native" and watches_folder(watcher, inbox))
    new = inbox / "after.jpg"
    new.write_bytes(b"x")
    assert wait_for(lambda: seen.has(new))


def test_folders_moved_out_of_the_inbox_release_their_watches(
    make_watcher: Callable[..., tuple[Watcher, Seen]], inbox: Path
) -> None:
    """watchdog keeps the inotify watch of a folder moved out of the tree: the watches pile up
    against fs.inotify.max_user_watches for as long as the folders live elsewhere (a trash
    folder), and what happens in them is reported as if it were in the inbox."""
    watcher, seen = make_watcher(mode="native")
    assert watcher.mode == "native"
    held = len(held_watches())  # the inbox's, and any other watch of this test process
    if not held:
        pytest.skip("this kernel lists no inotify watches in /proc/self/fdinfo")
    for index in range(5):
        (inbox / f"album{index}" / "day").mkdir(parents=True)
    assert wait_for(lambda: len(held_watches()) == held + 10)
    trash = inbox.parent / "trash"
    trash.mkdir()
    for index in range(5):
        (inbox / f"album{index}").rename(trash / f"album{index}")
    assert wait_for(lambda: len(held_watches()) == held)
    seen.clear()
    (trash / "album0" / "day" / "x.jpg").write_bytes(b"x")  # outside the inbox now
    (inbox / "album0").mkdir()  # a new folder of the same name is watched
    (inbox / "album0" / "y.jpg").write_bytes(b"x")
    assert wait_for(lambda: seen.has(inbox / "album0" / "y.jpg"))
    time.sleep(0.5)
    assert not seen.has(inbox / "album0" / "day" / "x.jpg")


class LimitReachedObserver(Observer):  # type: ignore[misc,valid-type]
    """The kernel's answer when fs.inotify.max_user_watches is exhausted (not settable here)."""

    def schedule(self, *args: object, **kwargs: object) -> object:
        raise OSError(errno.ENOSPC, "inotify watch limit reached")


def limit_reached() -> BaseObserver:
    return LimitReachedObserver()


def test_auto_falls_back_to_polling_when_native_fails(
    make_watcher: Callable[..., tuple[Watcher, Seen]], inbox: Path
) -> None:
    watcher, seen = make_watcher(mode="auto", native_factory=limit_reached)
    assert watcher.mode == "polling"
    assert "inotify watch limit reached" in watcher.mode_reason
    (inbox / "a.jpg").write_bytes(b"x")
    assert wait_for(lambda: seen.has(inbox / "a.jpg"))


def test_native_requested_but_impossible_is_an_error(inbox: Path) -> None:
    watcher = Watcher(inbox, IgnoreRules(), print, mode="native", native_factory=limit_reached)
    with pytest.raises(WatchError, match=r"max_user_watches.*watch_mode = \"polling\""):
        watcher.start()
    watcher.stop()


def test_network_filesystem_polls_automatically(
    make_watcher: Callable[..., tuple[Watcher, Seen]], inbox: Path, tmp_path: Path
) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("22 1 0:21 / / rw,relatime - nfs4 nas:/export/photos rw,vers=4.2\n")
    watcher, seen = make_watcher(mode="auto", mountinfo=mountinfo)
    assert watcher.mode == "polling"
    assert "nfs4 (nas:/export/photos)" in watcher.mode_reason
    (inbox / "a.jpg").write_bytes(b"x")
    assert wait_for(lambda: seen.has(inbox / "a.jpg"))


MOUNTINFO = r"""22 28 0:21 / /proc rw,nosuid - proc proc rw
28 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw
40 28 0:35 / /mnt/nas rw,relatime shared:20 - nfs4 nas:/export rw,vers=4.2
41 28 0:36 / /srv/smb\040share rw - cifs //server/photos rw
42 28 0:37 / /home/me/remote rw,nosuid - fuse.rclone drive: rw
43 28 8:17 / /media/usb rw - fuseblk /dev/sdb1 rw
44 40 0:38 / /mnt/nas/local rw - ext4 /dev/sdc1 rw
garbage line
"""


def test_mountinfo_parsing_and_lookup() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert Mount("/srv/smb share", "cifs", "//server/photos") in mounts
    assert len(mounts) == 7

    def fstype(path: str) -> str | None:
        mount = mount_of(Path(path), mounts)
        return None if mount is None else mount.fstype

    assert fstype("/mnt/nas/inbox") == "nfs4"
    assert fstype("/mnt/nas") == "nfs4"
    assert fstype("/mnt/nasty") == "ext4"
    assert fstype("/mnt/nas/local/inbox") == "ext4"
    assert fstype("/srv/smb share/in") == "cifs"
    assert fstype("/home/me/remote/x") == "fuse.rclone"
    assert [needs_polling(kind) for kind in ("nfs4", "cifs", "fuse.rclone", "fuse", "9p")] == [
        True
    ] * 5
    assert [
        needs_polling(kind) for kind in ("ext4", "xfs", "btrfs", "tmpfs", "fuseblk", "overlay")
    ] == [False] * 6


def test_real_mountinfo_names_this_filesystem(inbox: Path) -> None:
    mount = mount_of(inbox, parse_mountinfo(Path("/proc/self/mountinfo").read_text()))
    assert mount is not None
    assert mount.fstype


@pytest.mark.parametrize("mode", ["native", "polling"])
def test_watcher_and_intake_together_one_arrival_on_the_complete_file(
    inbox: Path, mode: str
) -> None:
    """A plain copy (final name first, growing) and an rsync-style rename, end to end with
    real time: exactly one arrival each, after the last byte, on the complete file."""
    paths: queue.SimpleQueue[Path] = queue.SimpleQueue()
    intake = Intake(inbox, IgnoreRules(), settle_seconds=0.5, pair_timeout=30.0)
    watcher = Watcher(inbox, IgnoreRules(), paths.put, mode=mode, poll_interval=0.1,
                      check_interval=0.1)  # fmt: skip
    watcher.start()
    arrivals: list[Arrival] = []
    last_byte: dict[str, float] = {}

    def pump(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            while not paths.empty():
                intake.observe(paths.get(), time.monotonic())
            for event in intake.poll(time.monotonic()):
                assert isinstance(event, Arrival), event
                arrivals.append(event)
                last_byte[event.image.name] = time.monotonic() - last_byte[event.image.name]
            time.sleep(0.02)

    try:
        assert watcher.first_scan.wait(TIMEOUT)
        (inbox / "grown.json").write_text("{}")
        grown = inbox / "grown.jpg"
        with grown.open("wb") as handle:
            for _ in range(8):  # 1.6 s of growth, longer than the settle time
                handle.write(b"x" * 1000)
                handle.flush()
                last_byte["grown.jpg"] = time.monotonic()
                pump(0.2)
        temp = inbox / ".renamed.jpg.Xa9bQ2"
        temp.write_bytes(b"y" * 5000)
        (inbox / "renamed.jpg.json").write_text("{}")
        temp.rename(inbox / "renamed.jpg")
        last_byte["renamed.jpg"] = time.monotonic()
        pump(2.0)
    finally:
        watcher.stop()
    assert sorted(arrival.image.name for arrival in arrivals) == ["grown.jpg", "renamed.jpg"]
    assert (inbox / "grown.jpg").stat().st_size == 8000
    for latency in last_byte.values():
        assert 0.5 <= latency < 1.5  # settle time plus at most a poll or two
