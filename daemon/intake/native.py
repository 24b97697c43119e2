"""The native (inotify, through watchdog) side of watching: its event handler, and whether its
shared event thread still runs."""

import os
import stat
from collections.abc import Callable
from pathlib import Path

from watchdog.events import DirCreatedEvent, DirMovedEvent, FileSystemEvent, FileSystemEventHandler


class Handler(FileSystemEventHandler):
    """Turns watchdog's events into paths for the watcher: files are fed, and a folder created
    or moved in is scanned (its files raise no events of their own)."""

    def __init__(self, scan: Callable[[Path], object], feed: Callable[[Path], None]) -> None:
        self.scan = scan
        self.feed = feed

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
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


def _is_folder(path: Path) -> bool:
    """A real folder (a link to one is not entered)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False
