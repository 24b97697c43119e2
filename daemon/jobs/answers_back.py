"""stylefold's own answers found in the inbox (`daemon.intake.own_answers` knows them): left
alone without a job or a report, remembered until they change, and listed by `status` while
they are there, since only a person can change the sync setup that brings them back."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import structlog

from daemon.intake import own_answers
from daemon.job_id import new_job_id
from daemon.jobs.layout import header_marks
from daemon.jobs.spool import Spool
from daemon.status_model import Attention

log = structlog.get_logger("stylefold.jobs")

MAX_TRACKED = 100  # answers status keeps track of (it shows one and the count)


class AnswersBack:
    def __init__(self, inbox: Path, spool: Spool) -> None:
        self.inbox = inbox
        self.spool = spool
        self.found: dict[Path, str] = {}  # path -> what kind of answer
        self.marks = header_marks(spool.settings.state)
        with contextlib.suppress(OSError):
            self.marks.mkdir(exist_ok=True)
            self._forget_changed_marks()

    def _forget_changed_marks(self) -> None:
        """Drop the marks of files changed or gone since their read never ended: a mark is
        only of use while its file is as it was."""
        for mark in self.marks.iterdir():
            with contextlib.suppress(OSError, ValueError):
                held = mark.read_text(encoding="utf-8")
                name = os.fsdecode(bytes.fromhex(held.rpartition(" ")[2]))
                seen = (self.inbox / name).lstat()
                if own_answers.header_mark(self.marks, Path(name), seen) == (mark, held):
                    continue
            mark.unlink(missing_ok=True)

    def kind_of(self, path: Path) -> str | None:
        """What kind of our answers the inbox file `path` is ("a manifest"), or None."""
        return own_answers.own_answer(self.inbox, path, self.marks)

    def left_alone(self, path: Path, *partners: Path | None) -> bool:
        """True when `path` is one of our answers (then it is remembered with `partners`, as
        `AnsweredInPlace.already_handled` will look it up, and logged)."""
        kind = self.kind_of(path)
        if kind is None:
            return False
        self.spool.in_place.remember([path, *partners], new_job_id())
        if len(self.found) < MAX_TRACKED:
            self.found[path] = kind
        shown = path.relative_to(self.inbox).as_posix()
        log.warning("intake.own_answer", path=shown, kind=kind, fix=own_answers.FIX)
        return True

    def attention(self) -> list[Attention]:
        self.found = {path: kind for path, kind in self.found.items() if path.exists()}
        if not self.found:
            return []
        path, kind = next(iter(self.found.items()))
        example = path.relative_to(self.inbox).as_posix()
        return [
            Attention(
                what=f"{len(self.found)} of stylefold's own answers came back into the inbox "
                f"and are left alone (for example {example}, {kind})",
                where=str(self.inbox),
                fix=own_answers.FIX,
            )
        ]
