"""stylefold's own answers, come back into the inbox.

People like their results in the phone's gallery, so the outbox is often synced into the very
folder that feeds the inbox, and every answer comes back: a stylised image without a sidecar
would be rendered again with the default style (and its result again, for ever), and a
manifest or error report is a JSON file without a photo, whose report would come back in turn.
So an answer of ours is recognised by its content, not its name (a person may name a photo
anything): images by the EXIF Software that `service.imageio` signs every image with, JSON by
the job id and input that every manifest, error report and progress file carries (a sidecar
may not have a `job_id`). It is left alone, without a job or a report.

Only files that would otherwise be answered without a sidecar are looked at: a stylised image
with a sidecar of its own is a deliberate request to render it again. An image's header is
parsed here, in the daemon's own process, so the read is guarded (`daemon.header_guard`): a file
whose read never ended is not parsed again, and is answered as any file without a sidecar.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import structlog

from daemon import header_guard, safefs
from daemon.intake.jsonload import SidecarError, load_json, read_inbox
from daemon.job_id import JOB_ID
from service.imageio import written_by_stylefold

log = structlog.get_logger("stylefold.intake")
MAX_ANSWER_BYTES = 1 << 20  # far above any manifest; larger JSON is not ours
FIX = (
    "the outbox seems to be synced into a folder that feeds the inbox: exclude stylefold's "
    "answers from that sync (*.stylised*, *.manifest*.json, *.error*.json, *.progress.json, "
    "*.preview.jpg, *.log), or sync the outbox elsewhere; then delete them from the inbox"
)


def own_answer(inbox: Path, path: Path, marks: Path) -> str | None:
    """What kind of stylefold answer the inbox file `path` is, or None if it is not one. `marks`
    is the folder for the header reads' marks."""
    relative = path.relative_to(inbox)
    if path.suffix.lower() == ".json":
        return _json_answer(inbox, relative)
    try:
        with safefs.folder(inbox, relative.parent) as dir_fd:
            fd = safefs.open_file(dir_fd, relative.name)
    except (OSError, safefs.Changed):
        return None
    with os.fdopen(fd, "rb") as file:
        mark, identity = header_mark(marks, relative, os.fstat(file.fileno()))
        with header_guard.guarded_read(mark, identity) as readable:
            if not readable:
                shown = relative.as_posix()
                log.warning("intake.header_not_read", path=shown, why=header_guard.NOT_READ)
                return None
            return "a stylised image" if written_by_stylefold(file) else None


def header_mark(marks: Path, relative: Path, seen: os.stat_result) -> tuple[Path, str]:
    """The mark of a read of the inbox file `relative` as `seen`, and what it holds: the path and
    the file's size, mtime and inode, so that a changed file is read again."""
    name = os.fsencode(relative.as_posix())
    identity = f"{seen.st_size} {seen.st_mtime_ns} {seen.st_ino} {name.hex()}"
    return marks / hashlib.sha256(name).hexdigest()[:32], identity


def _json_answer(inbox: Path, relative: Path) -> str | None:
    try:
        data = load_json(read_inbox(inbox, relative, MAX_ANSWER_BYTES, "answer", None))
    except (SidecarError, safefs.Changed):
        return None
    if not (isinstance(data, dict) and "input" in data):
        return None
    if not (isinstance(data.get("job_id"), str) and JOB_ID.fullmatch(data["job_id"])):
        return None
    if data.get("status") == "ok":
        return "a manifest"
    if "error" in data:
        return "an error report"
    return "a progress file" if data.get("state") == "running" else None
