"""Inbox files that are not a job yet: what the intake hands out (`Arrival`, `Problem`), when a
settled but truncated photo is looked at again or given up, and how each waiting file is shown
in `status`. `daemon.intake.pairing` decides; the types and rules live here, the texts of its
reports in `daemon.intake.reasons`.

A photo that has stopped changing for `settle_seconds` but whose own structure says it is cut
short (`daemon.intake.complete`) is *still arriving*: copy tools pause between bursts for longer
than the settle time on slow links. It is looked at again with a growing back-off, and any
change sends it back to settling. Only a photo that stays truncated and unchanged for
`arriving_timeout` (counted from its last change, its inode change time, so that a restart or
a `once` run does not start the count again) is reported, because then the transfer was cut
off and only copying it again helps.

Pure functions of the tracker's clock (`now`) and the epoch time at the same instant (`wall`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

from daemon.intake import reasons
from daemon.safefs import Identity
from daemon.status_model import InboxItem

MAX_BACKOFF = 60.0  # seconds between looks at a truncated file that does not change

Kind = Literal["image", "sidecar"]


class Signature(NamedTuple):
    """What must stay unchanged for a file to count as settled (a rename-over changes ino; a
    write that puts the mtime back still moves ctime)."""

    size: int
    mtime_ns: int
    ino: int
    dev: int = 0
    ctime_ns: int = 0

    def identity(self) -> Identity:
        """What the claim checks again on the file it actually takes."""
        return Identity(self.dev, self.ino, self.size, self.mtime_ns)


@dataclass(frozen=True)
class Arrival:
    """A settled photo ready to become a job. `sidecar` is None when the default style applies;
    `style_file` is a brought-along style image the sidecar names (to copy, not move: several
    sidecars may share it). `rel_dir` is the photo's folder relative to the inbox; `seen`
    holds what each file was when it settled (image, sidecar, style file), for the claim to
    check on the file it opens."""

    image: Path
    sidecar: Path | None
    rel_dir: Path
    style_file: Path | None = None
    seen: dict[Path, Signature] | None = field(default=None, compare=False)
    # Other pairs that name this photo as their style wait for it, and it waits for them (two
    # photos that swap styles): claimed as a copy, it stays in the inbox for them.
    borrowed: bool = False
    # The style images its sidecar names though refused (`Tracked.refused_styles`): style
    # images, not photos, whose own reports as lone photos go with the pair's report.
    refused_styles: tuple[Path, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Problem:
    """A settled file that cannot become a job; `reason` says what to do about it, and `stem`
    names its report (the photo's stem that the file is, or is the sidecar of)."""

    path: Path
    reason: str
    stem: str
    orphan: bool = False  # a sidecar whose photo is not beside it
    missing_style: str | None = None  # the style image its sidecar names, not beside it
    alone: bool = False  # a photo without a sidecar (not one of several sharing one)
    sidecar: Path | None = None  # the photo's sidecar, read, where the problem is the pair's
    # Told anew about the file as it was: what it is told changed with what lies beside it
    # (a misnamed photo's name taken by a file that came since), so its report is replaced.
    renewed: bool = False
    # the file as it was decided (`Intake.as_decided`); not part of what the problem is
    signature: Signature | None = field(default=None, compare=False)


Event = Arrival | Problem


@dataclass(frozen=True)
class Arriving:
    """A settled file found truncated: what is missing and when to look again."""

    reason: str  # e.g. "a JPEG without its end marker" (daemon.intake.complete)
    look_at: float  # tracker clock
    backoff: float  # seconds from one look to the next, doubling up to MAX_BACKOFF


def look_again(
    previous: Arriving | None, reason: str, now: float, due: float, settle_seconds: float
) -> Arriving:
    """The next look: `settle_seconds` after the first (at least a second), then twice as long
    each time, never after `due`, the moment the file is to be reported."""
    backoff = max(1.0, settle_seconds) if previous is None else previous.backoff * 2
    backoff = min(backoff, MAX_BACKOFF)
    return Arriving(reason, min(now + backoff, due), backoff)


def inbox_item(
    relative: str,
    kind: Kind,
    *,
    settled: bool,
    arriving: Arriving | None,
    changed_at: float,
    waiting_since: float,
    unchanged_since: float,
    now: float,
    wall: float,
    settle_seconds: float,
    pair_timeout: float,
    arriving_timeout: float,
    waits_for: str | None = None,
    lent: bool = False,
    own: str | None = None,
    default: str | None = None,
    empty: bool = False,
) -> InboxItem:
    """One file for `status`: settling, still arriving, or settled and waiting for a partner
    (or for what `waits_for` says: a style image its sidecar names, which status had told as
    "waiting for its sidecar" while the sidecar was there). A photo that the `default` style
    answers when no sidecar comes does not give up: it is rendered then (a camera roll's
    trial: status said "gives up in 9 min"). One of stylefold's own answers (`own`: what kind)
    is told as such: it is left alone then, unless its partner comes."""
    quiet = now - changed_at
    if arriving is not None:
        unchanged = now - unchanged_since
        note = (
            f"still arriving: {arriving.reason}; next look in "
            f"{max(0.0, arriving.look_at - now):.0f} s, reported as truncated in "
            f"{max(0.0, arriving_timeout - unchanged):.0f} s unless it changes"
        )
        return InboxItem(
            path=relative,
            state="arriving",
            since=wall - unchanged,
            note=note,
            gives_up_in=max(0.0, arriving_timeout - unchanged),
        )
    if not settled and empty and quiet >= settle_seconds:
        # Writers often create a file first and fill it later; status said "ready in 0 s".
        left = max(0.0, pair_timeout - (now - waiting_since))
        note = f"empty (0 bytes): waiting for its content; reported as empty in {left:.0f} s"
        return InboxItem(
            path=relative, state="arriving", since=wall - quiet, note=note, gives_up_in=left
        )
    if not settled:
        left = max(0.0, settle_seconds - quiet)
        note = f"settling: unchanged for {quiet:.0f} s, ready in {left:.0f} s"
        return InboxItem(path=relative, state="settling", since=wall - quiet, note=note)
    waited = now - waiting_since
    left = max(0.0, pair_timeout - waited)
    partner = "its photo" if kind == "sidecar" else "its sidecar"
    note = f"waiting for {waits_for or partner}"
    if own is not None and waits_for is None:
        note = reasons.own_answer_waits(own, partner, left)
    elif kind == "image" and waits_for is None and default is not None:
        note += f"; without one it is rendered with the default style {default} in {left:.0f} s"
        return InboxItem(path=relative, state="waiting", since=wall - waited, note=note)
    elif lent:  # it goes at pair_timeout whatever the pairs borrowing it do
        note += f"; taken by itself in {left:.0f} s at the latest"
        return InboxItem(path=relative, state="waiting", since=wall - waited, note=note)
    elif kind == "sidecar" and waits_for is not None:
        # One another shadows is told once its photo is taken, however long that takes (a
        # phone user's trial: "gives up in 0 s", past pair_timeout, the photo still arriving).
        return InboxItem(path=relative, state="waiting", since=wall - waited, note=note)
    return InboxItem(
        path=relative, state="waiting", since=wall - waited, note=note, gives_up_in=left
    )
