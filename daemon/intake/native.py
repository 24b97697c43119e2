"""The native (inotify, through watchdog) side of watching: its event handler, and whether its
shared event thread still runs."""

import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

from watchdog.events import DirCreatedEvent, DirMovedEvent, FileSystemEvent, FileSystemEventHandler


class Handler(FileSystemEventHandler):
    """Turns watchdog's events into paths for the watcher: files are fed, a folder created or
    moved in is scanned (its files raise no events of their own), and `went` hears of a
    folder deleted or moved away."""

    def __init__(
        self,
        scan: Callable[[Path], object],
        feed: Callable[[Path], None],
        went: Callable[[], None],
    ) -> None:
        self.scan = scan
        self.feed = feed
        self.went = went

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        if event.is_directory and event.event_type in ("deleted", "moved"):
            self.went()
        paths = [event.src_path, event.dest_path] if event.dest_path else [event.src_path]
        for raw in paths:
            path = Path(os.fsdecode(raw))
            if event.is_directory:
                if isinstance(event, DirCreatedEvent | DirMovedEvent) and _is_folder(path):
                    self.scan(path)
            else:
                self.feed(path)


def native_reader_alive() -> bool:
    """watchdog (7 and later) reads every inotify watch of the process in one shared thread; an
    exception in it (its recursive walk of a folder tree moved in, a thousand levels deep) ends
    that thread for good, and no event arrives any more, while the observer looks alive."""
    try:
        from watchdog.observers.inotify_c import InotifyFD
    except ImportError:  # not Linux: no shared reader
        return True
    reader = getattr(InotifyFD, "_instance", None)
    return reader is None or reader.is_alive()


def stale_watches(inbox: Path) -> int:
    """How many of this process's inotify watches are on folders no longer in the inbox.
    watchdog keeps the watch of a folder moved out of the tree (a TODO in its inotify
    emitter): the watch stays for as long as the folder lives elsewhere, counting against
    fs.inotify.max_user_watches, and what happens in it is reported under its old inbox path.
    Read from the kernel's list (/proc/self/fdinfo), compared with the inbox's folders; 0
    where there is no such list."""
    held = held_watches()
    if not held:
        return 0
    here: set[tuple[int, int]] = set()
    for folder, _, _ in os.walk(inbox):  # links are not followed, as watchdog does not
        with contextlib.suppress(OSError):
            result = os.lstat(folder)
            here.add((result.st_dev, result.st_ino))
    return len(held - here)


def held_watches() -> set[tuple[int, int]]:
    """(device, inode) of every folder this process's inotify instances watch."""
    held: set[tuple[int, int]] = set()
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
                device = int(fields["sdev"], 16)  # the kernel's dev_t: major << 20 | minor
                held.add((os.makedev(device >> 20, device & 0xFFFFF), int(fields["ino"], 16)))
    return held


def _is_folder(path: Path) -> bool:
    """A real folder (a link to one is not entered)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False
