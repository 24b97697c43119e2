"""Noticing inbox files: watchdog events plus periodic full scans, with the inbox's health checked.

Events are fast but not reliable: inotify drops them silently when its queue overflows, network
and FUSE file systems never deliver changes made elsewhere, and the watch limit can be reached.
So the watcher
- uses watchdog's native (inotify) observer, or polls when configured, when the inbox's file
  system cannot deliver events (NFS, SMB, FUSE, VM shared folders, read from
  /proc/self/mountinfo), when native watching fails (watch or instance limit), or when folders
  are nested deeper than `max_depth` (inotify watches every level and cannot be bounded);
- scans the whole inbox at start and every `rescan_interval` seconds, feeding the same callback,
  so anything the events missed is found;
- walks the inbox only with `daemon.intake.tree.walk` (scans and polls alike): no symbolic link
  is followed, no folder deeper than `max_depth` is entered, at most `max_tracked` files are
  held; limits reached are logged once and shown by `status` (`attention`);
- checks every `check_interval` seconds that the inbox is still there, readable and still on its
  mount; if not (an unmounted share), it pauses, warns once, reports nothing (in particular, no
  file counts as deleted), and resumes with a fresh observer and a full scan when it is back.
- starts a fresh observer when watches are held on folders moved out of the inbox (watchdog
  keeps them, and reports what happens there under the old inbox path): see
  `daemon.intake.native.StaleWatches`.

The callback receives paths of photos and sidecars (created, modified, closed, moved in or out,
deleted) and runs on watcher threads: it must be thread-safe (put the path on a queue).
"""

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Literal

import structlog
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from daemon.config import DEFAULTS, Settings
from daemon.intake import reasons
from daemon.intake.ignore import IgnoreRules
from daemon.intake.mounts import (
    MOUNTINFO,
    Mount,
    held_mount,
    mount_of,
    needs_polling,
    read_mounts,
    still_mounted,
)
from daemon.intake.native import Handler, OverflowListener, StaleWatches, native_reader_alive
from daemon.intake.tree import ROOT, Stamp, Tree, changes, depth, walk
from daemon.limits import Limits
from daemon.status_model import Attention

log = structlog.get_logger("stylefold.watcher")
LINKS = "links"  # the attention item about links in the inbox (not a setting: nothing to raise)
UNREADABLE = "unreadable folders"  # the attention item about folders the daemon may not list

WatchMode = Literal["auto", "native", "polling"]
ActiveMode = Literal["native", "polling"]


class WatchError(RuntimeError):
    """Watching cannot start as configured; the message says what to change."""


class Watcher:
    """Feeds `on_path` with inbox photos and sidecars; `on_scan` runs after each full scan."""

    def __init__(
        self,
        inbox: Path,
        rules: IgnoreRules,
        on_path: Callable[[Path], None],
        *,
        mode: WatchMode = DEFAULTS.watch_mode,
        poll_interval: float = DEFAULTS.poll_interval,
        rescan_interval: float = DEFAULTS.rescan_interval,
        on_scan: Callable[[], None] | None = None,
        check_interval: float = 1.0,
        native_factory: Callable[[], BaseObserver] = Observer,
        mountinfo: Path = MOUNTINFO,
        max_depth: int = DEFAULTS.max_depth,
        max_tracked: int = DEFAULTS.max_tracked,
    ) -> None:
        self.inbox = inbox.absolute()
        self.rules = rules
        self.on_path = on_path
        self.on_scan = on_scan
        self.requested_mode = mode
        self.poll_interval = poll_interval
        self.rescan_interval = rescan_interval
        self.check_interval = check_interval
        self.native_factory = native_factory
        self.mountinfo = mountinfo
        self.max_depth = max_depth
        self.max_tracked = max_tracked
        self.limits = Limits()
        # What is running now: None only before `start` and while paused, so `status` never
        # shows an unpaused inbox without a watch mode.
        self.mode: ActiveMode | None = None
        self.mode_reason = ""  # why this mode: shown by `status`
        self.paused = False
        self.pause_reason = ""
        self.scans = 0
        self.first_scan = threading.Event()
        self._observer: BaseObserver | None = None
        self._identity: tuple[int, int] | None = None
        self._mount_point: Path | None = None
        self._stop = threading.Event()
        self._scan_requested = threading.Event()
        self._overflow = OverflowListener(self._overflowed)
        self._stale = StaleWatches(self.inbox)
        self._thread: threading.Thread | None = None
        self._polled: dict[PurePath, Stamp] = {}  # polling: the last walk's files
        self._deep: bool | None = None  # whether the last whole walk found too-deep folders
        self._polling_for_depth = False  # native watching gave way to polling for them alone

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        rules: IgnoreRules,
        on_path: Callable[[Path], None],
        on_scan: Callable[[], None] | None = None,
    ) -> "Watcher":
        return cls(
            settings.inbox,
            rules,
            on_path,
            mode=settings.watch_mode,
            poll_interval=settings.poll_interval,
            rescan_interval=settings.rescan_interval,
            on_scan=on_scan,
            max_depth=settings.max_depth,
            max_tracked=settings.max_tracked,
        )

    def attention(self) -> list[Attention]:
        """Limits the watching has reached (deep folders, too many files), for `status`."""
        return self.limits.attention()

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start watching (or start paused if the inbox is unavailable) and the scan thread,
        whose first full scan sets `first_scan`. Raises WatchError if watch_mode="native" was
        asked for and cannot work."""
        mount = mount_of(self.inbox, read_mounts(self.mountinfo))
        self._mount_point = held_mount(mount)
        problem = self._unavailable()
        if problem is None:
            self._start_observer(mount)
        else:
            self._pause(problem)
        self._scan_requested.set()
        self._overflow.attach()
        self._thread = threading.Thread(target=self._run, name="stylefold-scan", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._stop_observer()
        self._overflow.detach()

    def _overflowed(self) -> None:
        log.warning("watcher.overflow", what="inotify dropped events; a full scan now")
        self._scan_requested.set()

    def request_scan(self) -> None:
        """Ask for a full scan soon (e.g. on SIGHUP)."""
        self._scan_requested.set()

    # -- feeding --------------------------------------------------------------------------

    def feed(self, path: Path) -> None:
        if self.paused:
            return
        try:
            relative = path.relative_to(self.inbox)
        except ValueError:
            return
        if depth(relative.parent) > self.max_depth:
            self._too_deep([relative.parent])
        elif self.rules.is_candidate(relative):
            self.on_path(path)
        elif not self.rules.ignored_dir(relative) and path.is_symlink():
            self._linked([relative])

    def _folder_went(self, folder: Path) -> None:
        """A folder deleted or moved away: its watches may be left behind (`StaleWatches`),
        and the intake looks again at the files it tracks there, which no event names
        (inotify tells of the folder alone; a re-test: the reports on photos of a folder moved
        out of the inbox stayed until the next full scan)."""
        self._stale.went()
        if self.paused:
            return
        with contextlib.suppress(ValueError):
            if not self.rules.ignored_dir(folder.relative_to(self.inbox)):
                self.on_path(folder)

    def scan_folder(self, folder: Path) -> int:
        """Feed every photo and sidecar under `folder`, skipping ignored folders; returns the
        number of paths fed."""
        try:
            relative = folder.relative_to(self.inbox)
        except ValueError:
            return 0
        tree = self._walk(relative)
        if relative == ROOT and tree.complete:
            self._polled = tree.files  # what polling compares its next walk with
        return self._feed_all(sorted(tree.files))

    def _feed_all(self, paths: list[PurePath]) -> int:
        fed = 0
        for path in paths:
            if self._stop.is_set() or self.paused:
                break
            self.on_path(self.inbox / path)
            fed += 1
        return fed

    def _walk(self, start: PurePath, heed_pause: bool = True) -> Tree:
        """One bounded walk (see `daemon.intake.tree`), with the limits it reached noted. It
        stops early on a pause unless told not to heed it."""
        tree = walk(
            self.inbox,
            self.rules,
            start=start,
            max_depth=self.max_depth,
            max_entries=self.max_tracked,
            stop=lambda: self._stop.is_set() or (heed_pause and self.paused),
        )
        whole = start == ROOT and tree.complete  # what it found is all there is
        self._too_deep(tree.deep, whole)
        self._linked(tree.links, whole)
        self._unreadable(tree.unreadable, whole)
        if tree.truncated:
            self.limits.reach(
                "max_tracked",
                f"the inbox holds more than max_tracked ({self.max_tracked}) photos and "
                "sidecars; the rest are found once there is room",
                reasons.MAX_TRACKED_FIX,
            )
        elif whole:
            self.limits.clear("max_tracked")
        if whole:
            self._deep = bool(tree.deep)
            if not tree.deep:
                self.limits.clear("max_depth")
            if not tree.links:
                self.limits.clear(LINKS)
            if not tree.unreadable:
                self.limits.clear(UNREADABLE)
        return tree

    def _unreadable(self, folders: list[PurePath], whole: bool = False) -> None:
        """A folder the daemon's user may not list (a sync tool's mode 700): its photos would
        wait unseen, for ever."""
        if folders:
            self.limits.reach(
                UNREADABLE,
                "folders in the inbox cannot be read by the daemon: photos in them are not seen",
                "let the daemon's user read and enter them (deploy/README.md, Permissions: the "
                "folder's group, chmod g+rx); they are looked at again at the next full scan",
                where=_listed(folders),
                whole=whole,
            )

    def _linked(self, links: list[PurePath], whole: bool = False) -> None:
        """A link is never followed (the inbox is a trust boundary): a folder of photos linked
        into the inbox would otherwise wait for ever, unexplained."""
        if links:
            self.limits.reach(
                LINKS,
                "links in the inbox are not followed: the photos they point to are not taken",
                "copy or move the photos into the inbox instead of linking them",
                where=_listed(links),
                whole=whole,
            )

    def _too_deep(self, folders: list[PurePath], whole: bool = False) -> None:
        """Folders deeper than max_depth are never entered; native watching (which would watch
        every level, and fails at about a thousand) gives way to polling at the next check."""
        if not folders:
            return
        self._deep = True
        self.limits.reach(
            "max_depth",
            f"folders nested deeper than max_depth ({self.max_depth}) are not watched; "
            "photos in them are not taken",
            "move the photos nearer the top of the inbox, or raise max_depth",
            where=_listed(folders),
            whole=whole,
        )

    # -- observer -------------------------------------------------------------------------

    def _choose(self, mount: Mount | None) -> tuple[ActiveMode, str]:
        self._polling_for_depth = False
        if self.requested_mode == "polling":
            return "polling", "watch_mode is polling"
        if self.requested_mode == "auto" and mount is not None and needs_polling(mount.fstype):
            return "polling", (
                f"the inbox is on {mount.fstype} ({mount.source}), which does not report "
                "changes made on other machines"
            )
        if self._deep is None:
            # How deep the inbox is, before inotify walks all of it. Only the scan thread
            # pauses, and it is here, so a pause now is the one `_resume` is about to lift.
            self._walk(ROOT, heed_pause=False)
        if self._deep:
            self._polling_for_depth = True
            return "polling", f"folders are nested deeper than max_depth ({self.max_depth})"
        if not native_reader_alive():
            return "polling", (
                "native watching stopped: watchdog's event thread failed (for example on a "
                "folder tree moved in that is too deep for it)"
            )
        return "native", f"watch_mode is {self.requested_mode}"

    def _start_observer(self, mount: Mount | None) -> None:
        mode, reason = self._choose(mount)
        if mode == "native":
            try:
                self._observer = self._launch(self.native_factory())
            except (OSError, RecursionError) as exc:
                fix = (
                    "raise the limit (sysctl fs.inotify.max_user_watches=524288 and "
                    'fs.inotify.max_user_instances=1024) or set watch_mode = "polling"'
                )
                if self.requested_mode == "native" and isinstance(exc, OSError):
                    raise WatchError(f"watch_mode: native watching failed ({exc}); {fix}") from exc
                log.warning(
                    "watcher.native_failed", what="polling instead", error=str(exc), fix=fix
                )
                mode, reason = "polling", f"native watching failed ({exc})"
        self.mode, self.mode_reason = mode, reason
        self._identity = self._inbox_identity()
        log.info("watcher.started", inbox=str(self.inbox), mode=self.mode, reason=self.mode_reason)

    def _launch(self, observer: BaseObserver) -> BaseObserver:
        observer.daemon = True
        try:
            handler = Handler(self.scan_folder, self.feed, self._folder_went)
            observer.schedule(handler, str(self.inbox), recursive=True)
            observer.start()
        except BaseException:
            observer.stop()
            raise
        return observer

    def _stop_observer(self) -> None:
        """Leaves `mode` as it was: a restart replaces it, a pause clears it."""
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            if observer.is_alive():
                observer.join(timeout=5)

    def _observer_healthy(self) -> bool:
        """Polling is the scan thread's own walks (`_poll`): healthy while this thread runs,
        unless it stood in for native watching only while folders were too deep, and they went
        (a family's trial: one person's deep folder left the daemon polling until a restart)."""
        if self.mode == "polling":
            return not (self._polling_for_depth and self._deep is False)
        observer = self._observer
        if self._deep or observer is None or not native_reader_alive(observer):
            return False  # native watching must give way to polling (see `_choose`)
        return observer.is_alive() and all(emitter.is_alive() for emitter in observer.emitters)

    def _poll(self) -> None:
        """Feed the photos and sidecars that appeared, changed or went since the last walk."""
        tree = self._walk(ROOT)
        if tree.complete:
            before, self._polled = self._polled, tree.files
            self._feed_all(changes(before, tree.files))

    # -- inbox health ---------------------------------------------------------------------

    def _inbox_identity(self) -> tuple[int, int] | None:
        try:
            result = os.stat(self.inbox)
        except OSError:
            return None
        return result.st_dev, result.st_ino

    def _unavailable(self) -> str | None:
        """Why the inbox cannot be watched now, or None if it can."""
        if self._mount_point is not None and not still_mounted(self._mount_point, self.mountinfo):
            return f"{self._mount_point} is no longer mounted"
        try:
            with os.scandir(self.inbox) as entries:
                next(entries, None)
        except FileNotFoundError:
            return "it does not exist"
        except NotADirectoryError:
            return "it is not a folder"
        except OSError as exc:
            return f"it cannot be read ({exc.strerror})"
        return None

    def _pause(self, reason: str) -> None:
        self.paused, self.pause_reason, self.mode = True, reason, None
        self._stop_observer()
        log.warning(
            "watcher.paused",
            inbox=str(self.inbox),
            reason=reason,
            what="the inbox is unavailable; nothing in it counts as deleted meanwhile",
        )

    def _resume(self) -> None:
        """The watch starts before the pause lifts, so `status` never shows an unpaused inbox
        without a watch mode. What the observer reports meanwhile is dropped (`feed`); the full
        scan asked for here takes it."""
        log.info("watcher.resumed", inbox=str(self.inbox))
        self._start_observer(mount_of(self.inbox, read_mounts(self.mountinfo)))
        self.paused, self.pause_reason = False, ""
        self._scan_requested.set()

    def _check(self) -> None:
        problem = self._unavailable()
        if problem is not None:
            if not self.paused:
                self._pause(problem)
            return
        if self.paused:
            self._resume()
            return
        if (
            self._inbox_identity() != self._identity
            or not self._observer_healthy()
            or (self.mode == "native" and self._stale.found())  # walks the inbox's folders
        ):
            # Recreated inbox (its watch is on the old folder), a dead emitter thread, folders
            # too deep for native watching, or watches on folders moved out.
            log.warning("watcher.restarted", inbox=str(self.inbox))
            self._stop_observer()
            self._start_observer(mount_of(self.inbox, read_mounts(self.mountinfo)))
            self._stale.renewed()
            self._scan_requested.set()

    def _run(self) -> None:
        last_scan = last_poll = -float("inf")
        while not self._stop.is_set():
            try:
                self._check()
                now = time.monotonic()
                if not self.paused and (
                    now - last_scan >= self.rescan_interval or self._scan_requested.is_set()
                ):
                    self._scan_requested.clear()
                    last_scan = last_poll = now
                    self.scan_folder(self.inbox)
                    if not self.paused and not self._stop.is_set():
                        self.scans += 1
                        self.first_scan.set()
                        if self.on_scan is not None:
                            self.on_scan()
                elif (
                    not self.paused
                    and self.mode == "polling"
                    and now - last_poll >= self.poll_interval
                ):
                    last_poll = now
                    self._poll()
            except Exception:
                log.exception("inbox watcher check failed; retrying")
            wait = self.check_interval
            if self.mode == "polling":
                wait = min(wait, self.poll_interval)
            self._stop.wait(wait)


def _listed(paths: list[PurePath], shown: int = 3) -> str:
    """The first few of `paths` by name, and how many more: one folder listed first must not
    hide the others (a non-root trial: a folder of mode 000 went unnamed behind one of 700)."""
    names = [path.as_posix() for path in sorted(paths)[:shown]]
    more = len(paths) - len(names)
    return ", ".join(names) + (f" and {more} more" if more else "")
