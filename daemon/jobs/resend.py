"""Photos sent again: recognised, not answered again.

Sync tools bring back originals the daemon has already answered: rsync or rclone run from a
timer copy the folder again once the archived originals are gone from the inbox, `rclone sync`
restores them, and Syncthing's "Revert Local Changes" (on a Receive Only inbox) and "Override
Changes" (on a Send Only folder) send every archived original once more. A job is a *re-send*
when the same inbox path was answered before for the same pair (photo bytes, sidecar, style
images: `Job.sent_key`, not the parameters they resolve to, which an upgrade or a reload may
change) and that answer is still in the outbox, unchanged.

With `resend = "skip"` (the default) a re-send ends SKIPPED: nothing new reaches the outbox,
the earlier answer stands, and the re-sent originals are released like an answered job's:
back into the inbox with archive = "keep" (remembered, not taken again while unchanged), into
the archive with archive = "move", or, when the archive already holds byte-identical copies
under the same names, deleted (the archived copies are the originals; repeated re-sends do not
pile up `photo.returned-N.jpg`). `resend = "answer"` publishes it again, numbered, as a reused
result. The same photo under another name or in another folder is not a re-send: it gets its
own answer (from the earlier result, with `dedupe`).

Syncthing sends only what changed, so a photo touched on the phone comes back *alone*, its
sidecar archived with it. An answered photo that comes back alone, byte for byte, is not a lone
photo to report at `pair_timeout` (`answered_alone`): its answer stands, and it is answered in
place, left in the inbox until its sidecar comes again and it is skipped as above.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from daemon import safefs
from daemon.config import Settings
from daemon.fsutil import file_sha256
from daemon.intake.jsonload import SidecarError, load_json, read_inbox
from daemon.intake.pairing import Arrival
from daemon.jobs import answers, handover
from daemon.jobs.record import Job
from daemon.jobs.spool import SIDECAR_FILE, Spool, still_published, unchanged
from daemon.jobs.store import Answer, Store


def earlier_answer_to_this_input(store: Store, job: Job, settings: Settings) -> Answer | None:
    """The answer already published for this job's inbox path and pair (`Job.sent_key`; or its
    job key, which earlier versions recorded), if it is still in the outbox unchanged (a
    result someone deleted or edited is no reason to skip)."""
    answer = store.input_answer(job.source, job.sent_key) or store.input_answer(job.source, job.key)
    if answer is None and job.sidecar_name is None:  # come back alone (`answered_alone`),
        # taken with the default style (no_sidecar = "default"): not rendered in another style
        earlier = store.input_answers(job.source)
        answer = _answer_to_photo(store, earlier, job.input_sha256, settings.outbox)
    return still_published(answer, job, settings)


@dataclass(frozen=True)
class ResentAlone:
    """An answered photo come back without its sidecar: its answer, whether that still stands
    in the outbox as published, and the photo's `safefs.version` as it was read (what
    `AnsweredInPlace` remembers)."""

    answer: Answer
    published: bool
    signature: list[int]


def answered_alone(store: Store, settings: Settings, photo: Path) -> ResentAlone | None:
    """The answer to the inbox file `photo` when it is, byte for byte, the photo of that
    answer, come back without its sidecar (a sync user's trial, Syncthing with archive =
    "move": touched on the phone, it got a second answer, "no sidecar"); its report, when the
    answer has left the outbox since, says the photo was answered before. Read
    through `daemon.safefs`, at most `max_input_bytes` of it (a writer appending to it cannot
    hold the daemon's loop), and only if it did not change while it was read."""
    inbox, max_bytes = settings.inbox, settings.max_input_bytes
    relative = photo.relative_to(inbox)
    earlier = store.input_answers(relative.as_posix())
    if not earlier:
        return None
    try:
        with safefs.folder(inbox, relative.parent) as folder:
            fd = safefs.open_file(folder, relative.name)
        try:
            before = os.fstat(fd)
            if before.st_size > max_bytes:
                return None
            digest = safefs.digest_open(fd, before.st_size)
            after = os.fstat(fd)
        finally:
            os.close(fd)
    except (OSError, safefs.Changed):
        return None
    if safefs.stat_key(after) != safefs.stat_key(before):
        return None
    answer = _answer_to_photo(store, earlier, digest, settings.outbox)
    if answer is None:
        return None
    return ResentAlone(answer, unchanged(answer, settings), safefs.version(after, digest))


def resent_pair(store: Store, settings: Settings, arrival: Arrival) -> ResentAlone | None:
    """`answered_alone` for a photo come back with its sidecar, as written then (parsed: a sync
    tool's rewrite changes no value), where the pair is refused as it resolves now: its answer
    stands, as for any re-send (an operator's trial: sidecar `{}` answered in the default
    style, rewritten after a reload removed default_style, got a second answer, a report)."""
    if arrival.sidecar is None or (found := answered_alone(store, settings, arrival.image)) is None:
        return None
    row = store.get(found.answer.job_id)
    if row is None or row.job is None or row.job.sidecar_name is None:
        return None  # its sidecar is not known any more
    relative = arrival.sidecar.relative_to(settings.inbox)
    try:
        sent = load_json(read_inbox(settings.inbox, relative, settings.max_sidecar_bytes, "", None))
    except (OSError, SidecarError, safefs.Changed):
        return None
    return found if sent == row.job.sidecar else None


def _answer_to_photo(
    store: Store, earlier: list[Answer], sha256: str, outbox: Path
) -> Answer | None:
    """Of an inbox path's answers, the latest to a photo of these bytes (in the outbox or not:
    callers ask). The photo's hash comes from its job's record or, once the history is pruned
    (after KEEP_FINISHED jobs; the answers are kept longer), from its manifest in `outbox`."""
    for answer in earlier:
        row = store.get(answer.job_id)
        if row is not None and row.job is not None:
            photo = row.job.input_sha256
        else:
            try:
                photo = answers.manifest_at(answer.manifest, outbox).input.sha256
            except (OSError, ValueError):
                continue
        if photo == sha256:
            return answer
    return None


def archived_twins(job: Job, spool: Spool, folder: Path) -> bool:
    """Whether the archive `folder` (the job's subfolder) already holds its photo and sidecar,
    byte for byte, under their own names or as one of their `.returned-N` renamings (a photo
    edited once and then re-sent by a timer as it is now: a sync user's trial found a new
    identical copy archived at every run): then the re-sent copies go without losing
    anything. A sidecar counts as the same when it says the same (a new user's trial: one
    re-sent with a trailing newline, skipped as sent again, was archived as a second copy)."""
    if job.companions:
        return False  # rare (macOS `._` files): released the ordinary way
    try:
        sidecar = None if job.sidecar_name is None else spool.job_dir(job) / SIDECAR_FILE
        sent = None if sidecar is None else sidecar.read_bytes()
    except OSError:
        return False
    for names in handover.numbered(job.pair):
        if not os.path.lexists(folder / names[0]):
            return False
        with contextlib.suppress(OSError):
            if file_sha256(folder / names[0]) == job.input_sha256 and (
                sent is None or _says_the_same((folder / names[1]).read_bytes(), sent)
            ):
                return True
    return False


def _says_the_same(archived: bytes, sent: bytes) -> bool:
    if archived == sent:
        return True
    try:
        return bool(load_json(archived) == load_json(sent))
    except SidecarError:
        return False
