"""The native (inotify, through watchdog) side of watching: its event handler, and whether its
shared event thread still runs."""

import contextlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog
from watchdog.events import DirCreatedEvent, DirMovedEvent, FileSystemEvent, FileSystemEventHandler
from watchdog.observers.api import BaseObserver

log = structlog.get_logger("stylefold.watcher")


class Handler(FileSystemEventHandler):
    """Turns watchdog's events into paths for the watcher: files are fed, a folder created or
    moved in is scanned (its files raise no events of their own), and `went` hears of a
    folder deleted or moved away."""

    def __init__(
        self,
        scan: Callable[[Path], object],
        feed: Callable[[Path], None],
        went: Callable[[Path], None],
    ) -> None:
        self.scan = scan
        self.feed = feed
        self.went = went

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        if event.is_directory and event.event_type in ("deleted", "moved"):
            self.went(Path(os.fsdecode(event.src_path)))
        paths = [event.src_path, event.dest_path] if event.dest_path else [event.src_path]
        for raw in paths:
            path = Path(os.fsdecode(raw))
            if event.is_directory:
                if isinstance(event, DirCreatedEvent | DirMovedEvent) and _is_folder(path):
                    self.scan(path)
            else:
                self.feed(path)


class OverflowListener(logging.Filter):
    """watchdog tells of an inotify queue overflow only in its log ("filesystem events were
    lost"; it rebuilds its watches itself): `on_overflow` is called then, so that a full scan
    finds at once what the lost events would have told, not at the next rescan_interval (a bulk
    copy's trial: 970 of 1,000 photos unseen, and uncounted by status, for 5 minutes). The
    logger is let through at WARNING whatever the log level; records below that level still
    show nothing."""

    LOGGER = "watchdog.observers.inotify_c"

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        super().__init__()
        self.on_overflow = on_overflow
        self._level = logging.NOTSET
        self._shown = logging.WARNING

    def attach(self) -> None:
        logger = logging.getLogger(self.LOGGER)
        self._level, self._shown = logger.level, logger.getEffectiveLevel()
        logger.setLevel(min(self._shown, logging.WARNING))
        logger.addFilter(self)

    def detach(self) -> None:
        logger = logging.getLogger(self.LOGGER)
        logger.removeFilter(self)
        logger.setLevel(self._level)

    def filter(self, record: logging.LogRecord) -> bool:
        if "overflowed" in record.getMessage():
            self.on_overflow()
        return record.levelno >= self._shown


def native_reader_alive(observer: BaseObserver | None = None) -> bool:
    """watchdog reads inotify events in a thread of its own (one shared by the process, or
    one per emitter in watchdog 7.1: `emitter._inotify_fd`); an exception in it (its recursive
    walk of a folder tree moved in, a thousand levels deep) ends that thread for good, and no
    event arrives any more, while the observer and its emitters look alive. An attacker's
    trial found 7.1's per-emitter reader unwatched: a deep tree moved in under a hidden name
    (which stylefold's own walks skip) left the daemon "native" and deaf to new photos."""
    try:
        from watchdog.observers.inotify_c import InotifyFD
    except ImportError:  # not Linux: no such reader
        return True
    readers = [getattr(InotifyFD, "_instance", None)]
    if observer is not None:
        readers += [getattr(emitter, "_inotify_fd", None) for emitter in observer.emitters]
    return all(reader.is_alive() for reader in readers if isinstance(reader, threading.Thread))


def stale_watches(inbox: Path) -> int:
    """How many of this process's inotify watches are on folders no longer in the inbox.
    watchdog keeps the watch of a folder moved out of the tree (a TODO in its inotify
    emitter): the watch stays for as long as the folder lives elsewhere, counting against
    fs.inotify.max_user_watches, and what happens in it is reported under its old inbox path.
    Read from the kernel's list (/proc/self/fdinfo), compared with the inbox's folders by
    inode number alone (the kernel's device there is the superblock's, which btrfs subvolumes
    report otherwise to stat). A watch counts only if it is there before and after the walk,
    so folders deleted meanwhile do not. 0 where there is no such list."""
    before = held_watches()
    if not before:
        return 0
    here: set[int] = set()
    for folder, _, _ in os.walk(inbox):  # links are not followed, as watchdog does not
        with contextlib.suppress(OSError):
            here.add(os.lstat(folder).st_ino)
    after = set(held_watches())
    return sum(1 for inode in before if inode in after and inode not in here)


class StaleWatches:
    """When to look for watches on folders moved out of the inbox (the watcher starts a new
    observer when there are some), and whether looking works here at all."""

    CHECK_EVERY = 30.0  # seconds between looks: each walks the inbox's folders
    QUIET = 1.0  # looked at once no folder went for this long, so a batch of moves is one look

    def __init__(self, inbox: Path) -> None:
        self.inbox = inbox
        self._went_at: float | None = None  # when a folder was last deleted or moved away
        self._checked = -float("inf")
        self._renewing = False  # a new observer is being started for stale watches
        self._unreliable = False  # even a fresh observer looked stale: never look again

    def went(self) -> None:
        """From the observer's thread: a folder was deleted or moved."""
        self._went_at = time.monotonic()

    def found(self) -> bool:
        """True when watches are held on folders no longer in the inbox."""
        now, went = time.monotonic(), self._went_at
        if (
            went is None
            or self._unreliable
            or now - went < self.QUIET
            or now - self._checked < self.CHECK_EVERY
        ):
            return False
        if self._went_at == went:
            self._went_at = None
        self._checked = now
        stale = stale_watches(self.inbox)
        if stale:
            log.info("watcher.stale_watches", watches=stale, what="held on folders moved out")
            self._renewing = True
        return stale > 0

    def renewed(self) -> None:
        """After a new observer was started: one started for stale watches must hold none, or
        fdinfo's and stat's inode numbers differ on this file system (overlayfs may)."""
        if self._renewing:
            self._renewing = False
            if stale_watches(self.inbox):
                self._unreliable = True
                log.info(
                    "watcher.stale_watches_unknowable",
                    what="stale inotify watches cannot be told apart here; no longer looked for",
                )


def held_watches() -> list[int]:
    """The inode number of the folder of each inotify watch this process holds."""
    held: list[int] = []
    try:
        descriptors = os.listdir("/proc/self/fd")
    except OSError:
        return held
    for fd in descriptors:
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:inotify":
                continue
            lines = Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines()
        except OSError:
            continue  # closed meanwhile
        for line in lines:
            if line.startswith("inotify wd:"):
                fields = dict(item.split(":", 1) for item in line.split()[1:] if ":" in item)
                held.append(int(fields["ino"], 16))
    return held


def _is_folder(path: Path) -> bool:
    """A real folder (a link to one is not entered)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False
