"""Deciding when inbox files are complete and which belong together.

Sync tools and network copies write files over seconds or hours, so a file is ready only once its
size, mtime and inode have stayed unchanged for `settle_seconds`; every change restarts the timer
and the tracker never gives up on a file that keeps changing. A settled photo whose structure
says it is cut short is still arriving (`daemon.intake.arrival`). Ready photos are paired with their
sidecars (`photo.json` or the more specific `photo.jpg.json`), whichever arrives first; a pair is
ready only when both halves (and a style image the sidecar brings along) have settled; which files
belong together is `daemon.intake.partners`'s index.

`Intake` is driven from outside: `observe(path, now)` for every event or scan hit, `poll(now)`
to collect what became ready. Time is passed in, so tests drive it with their own clock; the only
I/O is `stat`, reading a settled photo's structure (`daemon.intake.complete`) and a settled
sidecar (to learn which brought-along style file to wait for).
Nothing is looked at through a symbolic link: a file in a symlinked folder counts as absent, and
a link, a special file or a file with several hard links is reported instead of taken.
It is not thread-safe: call it from one thread (the daemon's main loop).
"""

import errno
import math
import os
import stat
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

from daemon.config import DEFAULTS, Settings
from daemon.intake import reasons
from daemon.intake.arrival import (
    Arrival,
    Event,
    Problem,
    Signature,
    inbox_item,
    look_again,
)
from daemon.intake.beside import Beside
from daemon.intake.complete import ZERO_TAIL, truncation
from daemon.intake.ignore import SIDECAR_EXTENSION, IgnoreRules, without_trailing
from daemon.intake.jsonload import SidecarError, read_inbox
from daemon.intake.partners import (
    Emitted,
    Partners,
    Reported,
    Sharing,
    Tracked,
    base_of,
    key,
    reported_unusable,
    signature_of,
)
from daemon.intake.sidecar import TAKEOUT, files_named, parse_sidecar
from daemon.limits import Limits
from daemon.safefs import Changed, UnsafePath, lstat_under, unusable
from daemon.status_model import Attention, InboxItem

PATH_MAX = 4096  # Linux's, in bytes, with the closing NUL
# What the daemon adds to an inbox path below its other folders: a job id and numbered,
# numbered names (state/returned/<job id>/..., "photo.stylised-12.jpg", ".stylefold-<hex>.tmp").
PATH_SLACK = 128
# How many times settle_seconds a photo written over in place after it was taken must stay
# unchanged (`Intake._quiet`): rsync --inplace pauses burst / bandwidth, 5.1 s at 50 KiB/s.
IN_PLACE_QUIET = 4


def longest_relative(settings: Settings) -> int:
    """The longest inbox-relative path (bytes) whose photo the daemon can take and answer: it
    becomes a path below the outbox, the archive and the state folder too."""
    roots = (settings.inbox, settings.outbox, settings.archive_path, settings.state)
    return PATH_MAX - 1 - PATH_SLACK - max(len(os.fsencode(root)) for root in roots)


class Intake:
    """Settle timers and image/sidecar pairing for one inbox."""

    def __init__(
        self,
        inbox: Path,
        rules: IgnoreRules,
        *,
        settle_seconds: float,
        pair_timeout: float,
        no_sidecar: Literal["default", "wait"] = DEFAULTS.no_sidecar,
        default_style: str | None = DEFAULTS.default_style,
        max_sidecar_bytes: int = DEFAULTS.max_sidecar_bytes,
        max_input_bytes: int = DEFAULTS.max_input_bytes,
        max_tracked: int = DEFAULTS.max_tracked,
        arriving_timeout: float = DEFAULTS.arriving_timeout,
        max_relative: int = PATH_MAX,
    ) -> None:
        self.inbox = inbox
        self.beside = Beside(inbox)  # folders listed for a report's advice, once a poll
        self.rules = rules
        self.settle_seconds = settle_seconds
        self.pair_timeout = pair_timeout
        self.no_sidecar = no_sidecar
        self.default_style = default_style
        self.max_sidecar_bytes = max_sidecar_bytes
        self.max_input_bytes = max_input_bytes
        self.max_tracked = max_tracked
        self.arriving_timeout = arriving_timeout
        self.max_relative = max_relative  # bytes of an inbox-relative path (longest_relative)
        self.dropped = 0  # observations refused because max_tracked files are already tracked
        self.too_long = 0  # observations refused because their path is longer than max_relative
        self.limits = Limits()
        self._pairs = Partners()
        self._files = self._pairs.files  # the same dict, read often
        self._pending: set[Path] = set()  # to be looked at in the next poll
        # Settled files that nothing but time decides now (a lone photo until pair_timeout):
        # path -> when to look again; a change to it or a partner wakes it sooner. Deciding
        # each of 3,000 waiting photos at every poll took the daemon a fifth of a core (a bulk
        # import's trial).
        self._asleep: dict[Path, float] = {}
        # Whether the last poll looked at every file due (not cut short by its `until`): what
        # `once` waits for before it calls the inbox done.
        self.looked_at_all = True
        self._used_styles: dict[Path, Signature] = {}  # style files already part of a job
        self._emitted_now: set[Path] = set()  # photos emitted in this poll: not claimed yet
        self.style_names: Callable[[], list[str]] = list  # the library's, for the advice given
        # What kind of stylefold answer an inbox file is (daemon.jobs.answers_back's), or None.
        self.own_answer: Callable[[Path], str | None] = lambda path: None
        # Whether a photo with no sidecar, as it is, was answered where it lies; whether with
        # a report about it and a sidecar; and whether as a style image another photo's
        # sidecar brought along (the state database knows).
        self.answered_in_place: Callable[[Path], bool] = lambda path: False
        self.reported_with_sidecar: Callable[[Path], bool] = lambda path: False
        # Told of a tracked file that is gone from the inbox (deleted, renamed away), or of a
        # photo whose refused pair lost its sidecar so: its answer is gone with the sidecar.
        self.vanished: Callable[[Path], None] = lambda path: None
        self.brought_along: Callable[[Path], bool] = lambda path: False

    @property
    def default(self) -> str | None:
        """The style a lone photo is rendered in, if any."""
        return self.default_style if self.no_sidecar == "default" else None

    @classmethod
    def from_settings(cls, settings: Settings, rules: IgnoreRules | None = None) -> "Intake":
        return cls(
            settings.inbox,
            rules if rules is not None else IgnoreRules.from_settings(settings),
            settle_seconds=settings.settle_seconds,
            pair_timeout=settings.pair_timeout,
            no_sidecar=settings.no_sidecar,
            default_style=settings.default_style,
            max_sidecar_bytes=settings.max_sidecar_bytes,
            max_input_bytes=settings.max_input_bytes,
            arriving_timeout=settings.arriving_timeout,
            max_tracked=settings.max_tracked,
            max_relative=longest_relative(settings),
        )

    def attention(self) -> list[Attention]:
        """Limits reached (too many files tracked), for `status`."""
        return self.limits.attention()

    def __len__(self) -> int:
        return len(self._files)

    @property
    def pending(self) -> int:
        """Files still settling or waiting for a partner."""
        return len(self._pending) + len(self._asleep)

    def configure(self, settings: Settings, rules: IgnoreRules) -> None:
        """Apply reloaded settings (SIGHUP)."""
        self.rules = rules
        self.settle_seconds = settings.settle_seconds
        self.pair_timeout = settings.pair_timeout
        self.no_sidecar = settings.no_sidecar
        self.default_style = settings.default_style
        self.max_sidecar_bytes = settings.max_sidecar_bytes
        self.max_input_bytes = settings.max_input_bytes
        self.arriving_timeout = settings.arriving_timeout
        self._wake(list(self._asleep))  # their time may have changed with pair_timeout

    def reconsider(self) -> None:
        """Decide again on the files answered with a problem (after a reload, a changed
        no_sidecar or default_style may turn one into a job); the same answer is not repeated."""
        for path, entry in self._files.items():
            # A photo reported before this process started was decided without a report of
            # its own (`answered_in_place`); a README trial's reload after setting
            # default_style left it so.
            earlier = entry.done is None and entry.kind == "image"
            if earlier or isinstance(entry.done, Reported):
                self._wake([path])

    def items(self, now: float, wall: float) -> list[InboxItem]:
        """Files not yet a job, for `status`: settling, still arriving, or settled and waiting
        for a partner. `now` is this tracker's clock, `wall` the epoch time at the same instant.
        Cheap for a flood (status is written the more rarely the longer it takes): paths sorted
        by their parts, made relative by their text."""
        inbox = len(os.fspath(self.inbox).rstrip("/")) + 1
        due = sorted(self._pending | self._asleep.keys(), key=lambda path: path.parts)
        return [
            inbox_item(
                os.fspath(path)[inbox:],
                entry.kind,
                waits_for=entry.waits_for,
                lent=entry.lent,
                own=entry.own_answer,
                settled=entry.settled,
                arriving=entry.arriving,
                changed_at=entry.changed_at,
                unchanged_since=entry.unchanged_since,
                waiting_since=entry.waiting_since,
                now=now,
                wall=wall,
                settle_seconds=self._quiet(entry),
                pair_timeout=self.pair_timeout,
                arriving_timeout=self.arriving_timeout,
                default=self.default,
                empty=entry.signature.size == 0,
            )
            for path in due
            for entry in (self._files[path],)
        ]

    # -- observations ---------------------------------------------------------------------

    def observe(self, path: Path, now: float) -> None:
        """Record the current state of `path` (an event or a scan hit). Unchanged files cost one
        stat; changed ones restart their settle timer; vanished ones are forgotten."""
        try:
            relative = path.relative_to(self.inbox)
        except ValueError:
            return
        kind = self.rules.kind(relative)
        if kind is None:
            self._observe_folder(path, now)
            return
        if len(os.fsencode(relative)) > self.max_relative:
            self._refuse_long(relative)
            return
        try:
            result = lstat_under(self.inbox, relative)
        except (FileNotFoundError, UnsafePath) as exc:
            known = self._files.get(path)
            partners = self._pairs.related(known) if known and known.kind == "sidecar" else ()
            self.forget(path, now)  # gone, or only reachable through a link: not in the inbox
            if known is not None and exc.errno == errno.ENOENT:  # not swapped for a link: gone
                self.vanished(path)
                for photo in sorted(partners):  # a refused pair's report is about it too
                    entry = self._files.get(photo)
                    if (
                        entry is not None
                        and self._pairs.sidecar_for(entry)[0] is None  # alone now
                        and self.reported_with_sidecar(photo)
                    ):
                        self.vanished(photo)
                        entry.done = None  # its answer is gone: decided again, alone
                        self._wake([photo])
            return
        except OSError:
            return  # unreadable for now (e.g. a folder without search permission): try later
        if stat.S_ISDIR(result.st_mode):
            self.forget(path, now)  # a folder with a photo's name is not a photo
            return
        signature = signature_of(result)
        entry = self._files.get(path)
        if entry is not None:
            # A second name removed (or added) changes no signature, and a photo reported
            # for it would stay reported (an attacker's trial): it is a change too.
            why = self._unusable(path, result)
            if entry.signature != signature or entry.unusable != why:
                entry.signature = signature
                entry.changed_at = entry.waiting_since = entry.unchanged_since = now
                entry.settled = False
                entry.arriving = None
                entry.unusable = why
                self._wake([path])
                self._touch_related(entry)
            return
        base = base_of(path, kind)
        # A file completing a tracked pair is let in beyond max_tracked (at most doubling it),
        # so a full tracker never holds photos whose sidecars it keeps out.
        if len(self._files) >= self.max_tracked and not self._pairs.has_partner(path, kind, base):
            self.dropped += 1
            self.limits.reach(
                "max_tracked",
                f"max_tracked ({self.max_tracked}) inbox files are tracked already; the others "
                "are picked up by later scans once there is room",
                reasons.MAX_TRACKED_FIX,
            )
            return
        # The wait for a partner counts from the file's arrival (its inode change time: the
        # rename that put it in place), not from when this tracker first saw it; otherwise a
        # restart, or `run --once` from cron, would start every lone photo's timer again and
        # it would never be answered. A truncated photo's wait to be reported counts from its
        # last change (the same inode change time, which every write moves), for the same
        # reason (an operator's trial: restarted within arriving_timeout, it was never told).
        # Settling is still timed from now.
        age = max(0.0, time.time() - result.st_ctime)
        waited, unchanged = min(age, self.pair_timeout), min(age, self.arriving_timeout)
        entry = Tracked(
            path,
            kind,
            base,
            signature,
            now,
            now - waited,
            now - unchanged,
            unusable=self._unusable(path, result),
        )
        self._pairs.add(entry)
        self._wake([path])
        self._touch_related(entry)

    def _observe_folder(self, folder: Path, now: float) -> None:
        """A folder the watcher saw deleted or moved away: the files tracked in it are looked
        at, gone too though no event names them."""
        if os.path.lexists(folder):
            return
        for path in [path for path in self._files if path.is_relative_to(folder)]:
            self.observe(path, now)

    def _unusable(self, path: Path, result: os.stat_result) -> str | None:
        """Why the file cannot be taken as it is (a link, a FIFO, a second name; a photo's
        name with a space or dot after its extension), or None."""
        clean = without_trailing(path.name)
        if (why := unusable(result)) is not None or clean == path.name:
            return why
        # The advice to rename it must not name a file or folder there, as the folder's file
        # system may see it (in another case or Unicode form: SMB, macOS), nor what another
        # copy so named is told (an attacker's trial: pic.jpg. and `pic.jpg ` were both told
        # "rename it pic.jpg", and a folder pic.jpg/ was called a copy to remove).
        listing = self.beside.folder(path.parent.relative_to(self.inbox))
        clashes = [name for name in listing.named([key(clean)]) if name != path.name]
        return reasons.misnamed_photo(path.name, min(clashes) if clashes else None)

    def forget(self, path: Path, now: float) -> None:
        """Drop a file that vanished (claimed by the daemon, deleted, renamed away). Its
        partners as they were and as they are without it are decided again (a phone user's
        trial: a photo whose own sidecar, pic.jpg.json, went was not paired with the pic.json
        its report said it would then take)."""
        known = self._files.get(path)
        before = set() if known is None else self._pairs.related(known)
        entry = self._pairs.remove(path)
        self._decided(path)
        self._used_styles.pop(path, None)
        if entry is None:
            return
        for related in sorted(before | self._pairs.related(entry)):  # both hold tracked files
            # A half pair is alone from now on: its timeout counts from here, not from its birth.
            other = self._files[related]
            other.waiting_since = max(other.waiting_since, now)
            self._wake([related])

    def tracked(self) -> list[Path]:
        """Every tracked file: after a full scan each is observed again (a sweep, in
        `daemon.intake.backlog`), which forgets files whose deletion events were lost, e.g. on
        inotify queue overflow; then `swept`."""
        return list(self._files)

    def swept(self) -> None:
        """A full scan and its sweep are done: limits no longer reached are cleared."""
        if not self.dropped:
            self.limits.clear("max_tracked")
        if not self.too_long:
            self.limits.clear("path length")
        self.dropped = self.too_long = 0

    def _refuse_long(self, relative: Path) -> None:
        """A path the system cannot open whole (nor the answer's, under the outbox): such a
        photo could be neither taken nor answered, so it is listed for a person instead."""
        self.too_long += 1
        shown = relative.as_posix()
        self.limits.reach(
            "path length",
            reasons.PATH_TOO_LONG.format(limit=self.max_relative),
            reasons.PATH_TOO_LONG_FIX,
            where=shown if len(shown) <= 120 else f"{shown[:60]}...{shown[-57:]}",
        )

    def resettle(self, path: Path, now: float) -> None:
        """Start over with a file that was not what settled when it was claimed (swapped,
        replaced): it must settle again, even if it has meanwhile been put back as it was."""
        self.forget(path, now)
        self.observe(path, now)

    def _touch_related(self, entry: Tracked) -> None:
        self._wake(self._pairs.related(entry))

    def _wake(self, paths: Iterable[Path]) -> None:
        for path in paths:
            self._asleep.pop(path, None)
            self._pending.add(path)

    def _sleep(self, path: Path, until: float) -> None:
        self._pending.discard(path)
        self._asleep[path] = until

    def _decided(self, path: Path) -> None:
        """Nothing to look at for `path` until it or a partner changes."""
        self._pending.discard(path)
        self._asleep.pop(path, None)

    # -- decisions ------------------------------------------------------------------------

    def poll(self, now: float, until: float = math.inf) -> list[Event]:
        """Everything that became ready or hopeless since the last poll, oldest first. Settle
        checks read files (`_still_arriving`), so they stop at `until` (time.monotonic()) after
        the first, and the rest wait for the next poll: the daemon's loop, and the watchdog it
        feeds, go on while a thousand arriving photos are looked at."""
        events: list[Event] = []
        self.beside.forget()
        self._emitted_now.clear()
        self._wake([path for path, due in self._asleep.items() if due <= now])
        self.looked_at_all = True
        for path in sorted(self._pending, key=lambda path: self._files[path].changed_at):
            entry = self._files.get(path)
            if entry is None or path not in self._pending:
                continue
            if self._settle(entry, now, events) and time.monotonic() >= until:
                self.looked_at_all = False
                break
        # Decisions come after every settle check, so halves settling in the same poll pair up;
        # a decision may wake partners, which are decided in the next round of this same poll.
        # Settled sidecars are read first: a photo another one brings as its style waits for
        # that pair, whichever of the two is decided first.
        for path in self._pending:
            entry = self._files[path]
            if entry.kind == "sidecar" and entry.settled:
                self._read_style_file(entry)
        decided: set[Path] = set()
        while True:
            batch = sorted(
                (
                    path
                    for path in self._pending
                    if path not in decided and self._files[path].settled
                ),
                key=lambda path: self._files[path].changed_at,
            )
            if not batch:
                return events
            for path in batch:
                decided.add(path)
                entry = self._files.get(path)
                if entry is None or path not in self._pending:
                    continue
                if entry.kind == "image":
                    self._decide_image(entry, now, events)
                else:
                    self._decide_sidecar(entry, now, events)

    def _settle(self, entry: Tracked, now: float, events: list[Event]) -> bool:
        """Whether the file was due to be looked at, and was (what takes time)."""
        if entry.settled or now - entry.changed_at < self._quiet(entry):
            return False
        if entry.arriving is not None and now < entry.arriving.look_at:
            return False
        self._look(entry, now, events)
        return True

    def _quiet(self, entry: Tracked) -> float:
        """How long `entry` must stay unchanged: `settle_seconds`, or `IN_PLACE_QUIET` times
        that for a photo written over in place after it was taken (archive = "keep"), whose old
        end makes a half-written new version look whole (a sync trial: `rsync --inplace` at a
        low bandwidth paused longer than settle_seconds, and the half-written photo was
        answered)."""
        done = entry.done
        if not isinstance(done, Emitted):
            return self.settle_seconds
        was, now = done.signature, entry.signature
        in_place = (was.ino, was.dev) == (now.ino, now.dev)
        return self.settle_seconds * (IN_PLACE_QUIET if in_place else 1)

    def _look(self, entry: Tracked, now: float, events: list[Event]) -> None:
        before = entry.signature
        self.observe(entry.path, now)  # one last look: a change missed by events restarts
        current = self._files.get(entry.path)
        if current is not entry or entry.signature != before:
            return
        if entry.unusable is not None:
            self._report(entry, events, entry.unusable)
            return
        if entry.kind == "image" and entry.signature.size > self.max_input_bytes:
            # Before anything reads it: its size may be a sparse file's, gigabytes of nothing.
            reason = reasons.too_large(entry.signature.size, self.max_input_bytes)
            self._report(entry, events, reason)
            return
        if entry.signature.size == 0:
            # From its arrival, as a lone photo's wait: a restart started it again (a soak trial).
            if now - entry.waiting_since >= self.pair_timeout:
                self._report(entry, events, reasons.empty(self.pair_timeout))
            else:  # writers often create a file first and fill it later, which wakes it
                # Asleep, not looked at every turn: 50,000 empty photos took every turn's
                # looks, and a pair dropped beside them waited until they were reported.
                self._sleep(entry.path, entry.waiting_since + self.pair_timeout)
            return
        # A sidecar too: written by a copy that sets the size first, it is zeros for a while.
        # One over max_sidecar_bytes is refused for its size, whatever it holds, at once (a
        # sparse 10 GiB of zeros waited arriving_timeout: an attacker's trial).
        oversized = entry.kind == "sidecar" and entry.signature.size > self.max_sidecar_bytes
        if not oversized and self._still_arriving(entry, now, events):
            return
        entry.settled = True
        self._touch_related(entry)
        self._look_for_own_answer(entry)

    def _look_for_own_answer(self, entry: Tracked) -> None:
        """Whether a file settled alone is one of stylefold's own answers, synced back: status
        says so while it waits out pair_timeout, after which it is left alone (a sync user saw
        each result "waiting for its sidecar" for ten minutes). Read here, where settling is
        budgeted, once per version of the file."""
        if entry.own is not None and entry.own[0] == entry.signature:
            return
        alone = (
            self._pairs.sidecar_for(entry)[0] is None
            if entry.kind == "image"
            else not self._pairs.images_for(entry.path)
        )
        if alone:
            entry.own = (entry.signature, self.own_answer(entry.path))

    def _still_arriving(self, entry: Tracked, now: float, events: list[Event]) -> bool:
        """A truncated image, or a file still all zeros at its start or its end, is not
        settled: it is looked at again with a growing back-off, and reported only once
        unchanged for `arriving_timeout`; one that ends in zeros is taken then instead (an
        uncompressed image's last rows may be black: the decoder judges it)."""
        reason = (
            entry.arriving.reason
            if entry.arriving is not None
            else truncation(self.inbox, entry.path.relative_to(self.inbox))
        )
        if reason is None:
            return False
        due = entry.unchanged_since + self.arriving_timeout
        if now >= due:
            entry.arriving = None
            if reason == ZERO_TAIL:
                return False
            self._report(entry, events, reasons.given_up(reason, self.arriving_timeout))
        else:
            entry.arriving = look_again(entry.arriving, reason, now, due, self.settle_seconds)
        return True

    def _report(
        self,
        entry: Tracked,
        events: list[Event],
        reason: str,
        *,
        orphan: bool = False,
        missing_style: str | None = None,
        alone: bool = False,
        sidecar: Tracked | None = None,
        shadowed: bool = False,
    ) -> None:
        marker = Reported(entry.signature, reason, shadowed)
        if entry.done != marker:
            done, entry.done = entry.done, marker
            renewed = isinstance(done, Reported) and done.signature == entry.signature
            text = f"{entry.path.name} {reason}"
            stem = self._stem(entry)
            read = None if sidecar is None else sidecar.path
            problem = Problem(
                entry.path, text, stem, orphan, missing_style, alone, read, renewed, entry.signature
            )
            events.append(problem)
        self._decided(entry.path)

    def as_decided(self, problem: Problem) -> bool:
        """Whether the file a problem is about is still there as it was when it was decided:
        a report written turns later (a flood of them is spread over the loop's turns) must
        not be about a file that has changed or gone since."""
        entry = self._files.get(problem.path)
        return entry is not None and entry.signature == problem.signature

    def _stem(self, entry: Tracked) -> str:
        """photo.jpg, photo.json, photo.jpg.json -> photo; but p.manifest.json -> p.manifest
        (the sidecar of p.manifest.jpg), so a report about it never lands on photo p's names;
        nor does a report on Google Takeout's IMG_1.jpg.json, no sidecar of IMG_1.jpg (a
        re-test: the photo's answers were numbered -2 after it)."""
        name = entry.path.name
        if without_trailing(name) != name:  # pic.jpg. is told in pic.jpg.error.json, not as pic
            return without_trailing(name)
        if entry.kind != "sidecar":
            return Path(name).stem
        base = name[: -len(SIDECAR_EXTENSION) - 1]
        return Path(base).stem if self.rules.is_image_name(base) and not entry.takeout else base

    def _folder_named(
        self,
        entry: Tracked,
        wanted: Iterable[str],
        reason: str,
        photo_of: str = "",
        is_folder: Callable[[str], str] = reasons.partner_is_folder,
    ) -> str:
        relative = entry.path.parent.relative_to(self.inbox)
        return self.beside.advice(relative, wanted, reason, self.rules, photo_of, is_folder)

    def _other_type_sidecar(self, image: Tracked) -> str | None:
        """A sidecar named for this photo's name with another image extension (pic.jpg.json
        beside pic.jpeg), when no photo of that name is here to take it."""
        folder = image.path.parent
        for extension in sorted(self.rules.image_extensions):
            name = f"{image.base}.{extension}"
            if key(name) == key(image.path.name) or self._pairs.exact_image(folder, name):
                continue
            if (found := self._pairs.named_for(folder, name)) is not None:
                return found.name
        return None

    def _other_type_photo(self, sidecar: Tracked) -> bool:
        """Whether a sidecar named for pic.jpg may be meant for pic.jpeg, which is here alone,
        with no sidecar of its own (`_other_type_sidecar` is the photo's side)."""
        if not self.rules.is_image_name(sidecar.base):
            return False
        folder = sidecar.path.parent
        lone = [
            image
            for image in self._pairs.images_of_stem(folder, Path(sidecar.base).stem)
            if self._pairs.sidecar_for(self._files[image]) == (None, None)
        ]
        return len(lone) == 1

    def _beside_photo_not_taken(self, sidecar: Tracked) -> bool:
        """Whether a photo of a type the inbox does not take (pic.nef, pic.bmp) lies beside a
        sidecar that waits for its photo: then it is told at once, not after pair_timeout.
        Looked for once per version of the sidecar (waiting sidecars are decided every poll)."""
        if sidecar.looked_beside == sidecar.signature:
            return False
        sidecar.looked_beside = sidecar.signature
        relative = sidecar.path.parent.relative_to(self.inbox)
        return self.beside.photo_not_taken(relative, key(sidecar.base), self.rules)

    def _read_style_file(self, sidecar: Tracked) -> None:
        if sidecar.parsed == sidecar.signature:
            return
        sidecar.parsed = sidecar.signature
        data: bytes | None = None
        refused: tuple[str, ...] = ()
        try:
            relative = sidecar.path.relative_to(self.inbox)
            identity = sidecar.signature.identity()
            data = read_inbox(self.inbox, relative, self.max_sidecar_bytes, "sidecar", identity)
            name = parse_sidecar(data).style_file()
        except SidecarError as exc:  # the job itself reports what is wrong with the sidecar
            name, sidecar.takeout = None, exc.problems == [TAKEOUT]
            refused = () if data is None else files_named(data)
        except Changed:  # a change is seen by the next observation
            name = None
        self._pairs.set_style_ref(sidecar, name, refused)

    def _decide_image(self, image: Tracked, now: float, events: list[Event]) -> None:
        image.waits_for, image.lent = None, False
        sidecar, sharing = self._pairs.sidecar_for(image)
        # A kept photo whose sidecar or style went since; not one refused with its sidecar,
        # which is alone now (asked of the database only for a photo emitted as it is).
        if self._pairs.emitted_as_is(image, sidecar) and not (
            sidecar is None and self.reported_with_sidecar(image.path)
        ):
            self._decided(image.path)
            return
        timed_out = now - image.waiting_since >= self.pair_timeout
        if sidecar is None:
            self._decide_lone(image, sharing, timed_out, events)
            return
        if not sidecar.settled:
            if reported_unusable(sidecar) is not None:  # its sidecar's report answers for the pair
                self._decided(image.path)
            # Status told a photo beside an empty placeholder sidecar that no sidecar would
            # mean the default style (a re-test's finding); it waits for that one.
            image.waits_for = f"its sidecar {sidecar.path.name} to be complete"
            return
        ready, style = self._brought_style(image, sidecar, now, events)
        if not ready:
            return
        if (borrowers := self._pairs.waiting_borrowers(image.path, sidecar)) and not timed_out:
            if not self._pairs.waits_on_itself(image.path, sidecar):
                # Pairs bringing this photo as their style copy it first: a job moves it.
                # Status said "waiting for its sidecar", which was there (an attacker's trial).
                image.waits_for = reasons.lent_as_style([b.path.name for b in borrowers])
                image.lent = True
                return
            self._emit(image, sidecar, style, events, borrowed=True)
            return
        self._emit(image, sidecar, style, events)

    def _decide_lone(
        self, image: Tracked, sharing: Sharing | None, timed_out: bool, events: list[Event]
    ) -> None:
        """A photo with no sidecar of its own: a style image, a photo answered before, one
        still waiting, or one to report (or to give the default style) once it waited long
        enough."""
        used = self._used_styles.get(image.path) == image.signature
        if used or self._pairs.is_style_image(image.path):
            self._decided(image.path)  # a brought-along style image, not a photo
        elif self.brought_along(image.path) or (
            self.default is None and self.answered_in_place(image.path)
        ):
            # A brought-along style after a restart, a photo reported before: its report
            # would be left out, so no wait either (a docs trial: `once` and `status`
            # said the style would be reported after pair_timeout). With a default style
            # a reported photo is a job now (a reload that configured one), but a style
            # image stays one (it was listed as waiting for the default style, then
            # dropped as answered).
            self._decided(image.path)
        elif not timed_out:
            if sharing is not None:  # status said "waiting for its sidecar", which is there
                shared = sharing.sidecar.name
                others = [p.name for p in sharing.photos if p != image.path]
                image.waits_for = reasons.own_sidecar(shared, image.path.name, others)
            else:
                # A misnamed sidecar told now, not only in the report at pair_timeout (a
                # photographer's trial: "waiting for its sidecar" ten minutes beside
                # `n1.json.txt`).
                reason, told = self._no_sidecar(image)
                if reason != told:
                    image.waits_for = f"its sidecar; {image.path.name} {reason}"
            self._sleep(image.path, image.waiting_since + self.pair_timeout)
        elif sharing is not None:
            others = [path.name for path in sharing.photos]
            reason = reasons.shares_sidecar(sharing.sidecar.name, image.path.name, others)
            self._report(image, events, reason)
        else:
            reason, told = self._no_sidecar(image)
            # The default style is for a photo sent without a sidecar, not for one whose
            # sidecar is misnamed (a re-test: `t.json.txt` got the default style silently).
            if self.default is not None and reason == told:
                self._emit(image, None, None, events)
            else:
                reason += self._lone_partner(image) if reason == told else ""
                self._report(image, events, reason, alone=True)

    def _lone_partner(self, entry: Tracked) -> str:
        """The other file alone in `entry`'s folder, as its likely partner under another name,
        where the folder holds one photo and one sidecar alone (a re-test: two lone sidecars
        were each told to take the one photo's name). Not with a default style, which answers
        a lone photo (a re-test: told to rename the sidecar, that photo was rendered already)."""
        listing = self.beside.folder(entry.path.parent.relative_to(self.inbox))
        photos, sidecars = listing.unpaired(self.rules)
        others = sidecars if entry.kind == "image" else photos
        if len(photos) != 1 or len(sidecars) != 1 or self.default is not None:
            return ""
        photo = entry.path.name if entry.kind == "image" else others[0]
        return reasons.lone_partner(entry.kind, others[0], f"{photo.rpartition('.')[0]}.json")

    def _no_sidecar(self, image: Tracked) -> tuple[str, str]:
        """What a photo without a sidecar is told, and what it is told when nothing beside it
        looks meant as its sidecar (the two differ for a misnamed one)."""
        # photo.jpg.json when photo.json is another's (an attacker's trial: s.jpg.jpg
        # beside s.jpg and s.jpg.json, or t.jpg and t.json, was told to add s.jpg.json)
        taken = self._pairs.sidecar_taken(image.path.parent, image.base)
        named = f"{image.path.name if taken else image.base}.json"
        told = reasons.no_sidecar(named, self.style_names(), self.default_style)
        wanted = {key(f"{image.base}.json"), key(f"{image.path.name}.json")}
        reason = self._folder_named(image, wanted, told)
        if reason == told and (other := self._other_type_sidecar(image)) is not None:
            reason = reasons.sidecar_of_other_type(other, image.path.name, image.base)
        return reason, told

    def _brought_style(
        self, image: Tracked, sidecar: Tracked, now: float, events: list[Event]
    ) -> tuple[bool, Tracked | None]:
        """Whether the pair may go on, and the style image its sidecar brings along (None: it
        brings none, or names a file the job will refuse). Not yet (False) while that image
        is missing or still arriving: the photo then says what it waits for, and is reported
        once it waited `pair_timeout` or the image was found unusable."""
        self._read_style_file(sidecar)
        style: Tracked | None = None
        if sidecar.style_file is not None:
            style_path = image.path.parent / sidecar.style_file
            # Only an image is waited for: a name the job cannot take ("x.json", as an
            # attacker's trial named another pair's sidecar) is told so by the job, at once.
            if self.rules.kind(style_path.relative_to(self.inbox)) == "image":
                named, by = sidecar.style_file, sidecar.path.name
                found = self._pairs.exact_image(image.path.parent, named)
                style = None if found is None else self._files.get(found)
                alike = self._pairs.alike_images(image.path.parent, named)
                if found is None and len(alike) > 1:
                    # Told at once, not as missing after pair_timeout (an attacker's trial).
                    which = [path.name for path in alike]
                    reason = reasons.style_name_ambiguous(named, by, which)
                    self._report(image, events, reason, sidecar=sidecar)
                    return False, None
                if style is None:
                    image.waits_for = f"the style image {named} named by {by}"
                    if now - max(image.waiting_since, sidecar.waiting_since) >= self.pair_timeout:
                        reason = self._folder_named(
                            image,
                            {key(named)},
                            reasons.style_not_beside(named, by),
                            is_folder=lambda name: reasons.style_is_folder(name, by),
                        )
                        self._report(image, events, reason, missing_style=named, sidecar=sidecar)
                    return False, None
                if not style.settled:
                    if (why := reported_unusable(style)) is not None:
                        reason = reasons.style_unusable(style.path.name, why)
                        self._report(image, events, reason, sidecar=sidecar)
                    return False, None
        return True, style

    def _emit(
        self,
        image: Tracked,
        sidecar: Tracked | None,
        style: Tracked | None,
        events: list[Event],
        borrowed: bool = False,
    ) -> None:
        marker = Emitted(
            image.signature,
            None if sidecar is None else (sidecar.path, sidecar.signature),
            None if style is None else (style.path, style.signature),
        )
        self._decided(image.path)
        if sidecar is not None:
            self._decided(sidecar.path)
            sidecar.done = marker
        if style is not None:
            # Still decided as a photo: another sidecar may name any photo as its style, and
            # one with a sidecar of its own must get its own answer.
            self._used_styles[style.path] = style.signature
        if image.done == marker:
            return
        image.done = marker
        self._emitted_now.add(image.path)
        rel_dir = image.path.parent.relative_to(self.inbox)
        settled = [entry for entry in (image, sidecar, style) if entry is not None]
        folder = image.path.parent
        named = () if sidecar is None else sidecar.refused_styles
        events.append(
            Arrival(
                image.path,
                None if sidecar is None else sidecar.path,
                rel_dir,
                None if style is None else style.path,
                seen={entry.path: entry.signature for entry in settled},
                borrowed=borrowed,
                refused_styles=tuple(
                    self._pairs.exact_image(folder, n) or folder / n for n in named
                ),
            )
        )

    def _decide_sidecar(self, sidecar: Tracked, now: float, events: list[Event]) -> None:
        sidecar.waits_for = None
        self._read_style_file(sidecar)
        images = self._pairs.images_for(sidecar.path)
        if images:
            self._decided(sidecar.path)  # its images drive the pairing
            self._wake(
                path for path in images if not self._pairs.emitted_as_is(self._files[path], sidecar)
            )
            return
        timed_out = now - sidecar.waiting_since >= self.pair_timeout
        # Not used while its photo takes another sidecar: told once the photo is decided, in a
        # later poll than its arrival (so the report names the job that took it), not after
        # pair_timeout (status said it waited for its photo, which was there).
        shadow = self._pairs.shadowed_by(sidecar.path)
        if shadow is not None and (
            self._files[shadow[0]].done is None or shadow[0] in self._emitted_now
        ):
            photo, used = (path.name for path in shadow)
            sidecar.waits_for = f"{photo} to be taken with {used}, which comes first"
            return
        said = sidecar.done
        if isinstance(said, Reported) and said.shadowed and said.signature == sidecar.signature:
            # Its photo claimed since: not "waiting for its photo" in status, to be told again
            # at pair_timeout as one without a photo (a re-test).
            self._decided(sidecar.path)
            return
        if timed_out or shadow is not None or self._beside_photo_not_taken(sidecar):
            if shadow is not None:
                photo, used = (path.name for path in shadow)
                reason = reasons.sidecar_shadowed(sidecar.path.name, photo, used)
                self._report(sidecar, events, reason, orphan=True, shadowed=True)
                return
            if sidecar.takeout:  # told to add IMG_1.jpg.supplemental-metadata.jpg (a trial)
                reason = reasons.TAKEOUT_ALONE
            else:
                told = reasons.no_photo(sidecar.base, self.rules.is_image_name(sidecar.base))
                named = self.beside.folder(sidecar.path.parent.relative_to(self.inbox))
                photos = [key(name) for name in named.stemmed(key(sidecar.base))]
                photos = [name for name in photos if self.rules.is_image_name(name)]
                reason = self._folder_named(sidecar, photos, told, photo_of=sidecar.base)
                if reason == told and self._other_type_photo(sidecar):
                    # The photo's report names it and the fix: one report, as both would take
                    # the stem's name (a re-test: which got `-2` changed from run to run).
                    self._decided(sidecar.path)
                    return
                reason += self._lone_partner(sidecar) if reason == told else ""
            self._report(sidecar, events, reason, orphan=True)
        else:
            self._sleep(sidecar.path, sidecar.waiting_since + self.pair_timeout)
