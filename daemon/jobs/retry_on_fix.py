"""Retrying photos once the fix their report asked for is done, even when that fix lies outside
the photo and its sidecar.

A rejected or failed pair stays in the inbox, remembered in the store's `seen` table so that it
is not taken again while it is unchanged (`daemon.jobs.in_place`). Some fixes change nothing in
the inbox: a style added to the library, a setting raised and reloaded. So, when the style folder
changes (a look at it every few seconds from the daemon loop), on a reload (SIGHUP) and at
start-up, each pair still answered in place is looked at again:

- a rejected pair is resolved again as a dry run (`intake.resolve` moves nothing); if it now
  resolves, its `seen` record is dropped and the pair is claimed. One still rejected keeps its
  report, so an unrelated change does not bring a second report.
- a failed job whose report names a setting (max_pixels, job_timeout, oom_fallback, ...) is taken
  again when a reload changes that setting; one whose report names a style of the library is
  taken again when the library changes.
- a pair whose brought-along style image changed after its answer is taken again, as when its
  photo or sidecar changes (the intake offers the pair again: `arrived`).
- a rejected pair whose photo, sidecar or folder had its permissions, owner or links changed
  after its answer (a `chmod`, another name for it removed: only the inode change time moves,
  which the intake does not see) is resolved again at each full scan's interval
  (`rescan_interval`).

Files reported for another reason (no sidecar, an empty file) are decided again by the intake
after a reload (`Intake.reconsider`): no_sidecar and default_style may have changed.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import structlog
from pydantic import ValidationError

from daemon.config import Settings
from daemon.intake.pairing import Arrival
from daemon.intake.resolve import Rejected, resolve
from daemon.jobs import answers, handover
from daemon.jobs.answers import FailureDetail, ReportDetail
from daemon.jobs.lifecycle import Lifecycle
from daemon.jobs.publisher import outcome_detail
from daemon.jobs.record import Job
from daemon.jobs.states import ENDS_WITH_REPORT, State
from daemon.jobs.store import JobRow
from daemon.safefs import Changed, Identity, NotUsable

log = structlog.get_logger("stylefold.jobs")

STYLES_EVERY = 2.0  # seconds between looks at the style folder


class FixWatch:
    """Watches for the fixes reports ask for; see the module docstring."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.jobs = lifecycle
        self._loaded = lifecycle.library.signature()
        self._last = self._loaded
        self._next_look = 0.0
        self._next_touched = 0.0

    def tick(self, now: float) -> None:
        """A look at the style folder; a change that held still since the last look (so a
        copy in progress is not decoded half-written) reloads the library and retries. Every
        `rescan_interval`, a look at the rejected pairs' inode change times."""
        if now >= self._next_touched:
            self._next_touched = now + self.jobs.settings.rescan_interval
            self.retry("its permissions or links changed", touched=True)
        if now < self._next_look:
            return
        self._next_look = now + STYLES_EVERY
        current = self.jobs.library.signature()
        if current == self._loaded or current != self._last:
            self._last = current
            return
        self._loaded = current
        library = self.jobs.library
        problems = library.reload()
        for problem in problems:
            log.warning("styles.problem", path=str(problem.path), reason=problem.reason)
        log.info("styles.reloaded", styles=len(library.names()), style_problems=len(problems))
        self.jobs.check_default_style()
        self.retry("the style library changed", library=True)

    def reloaded(self, old: Settings) -> None:
        """After SIGHUP: the library and the settings were reloaded."""
        self._loaded = self._last = self.jobs.library.signature()
        self.retry("the daemon reloaded", old=old, library=True)

    def arrived(self, arrival: Arrival) -> None:
        """A pair offered by the intake: if its brought-along style image changed after the
        pair was answered (the `seen` record holds only the photo and the sidecar), forget
        the answer, so the pair is claimed again."""
        if arrival.style_file is None:
            return
        rel = arrival.image.relative_to(self.jobs.settings.inbox).as_posix()
        store = self.jobs.store
        for path, row in store.seen_answers(ENDS_WITH_REPORT, rel):
            if _touched_since(row.since, arrival.style_file) and _forgotten(self.jobs, path):
                log.info("job.retry_after_fix", input=path, because="its style image was replaced")

    def retry(
        self,
        why: str,
        *,
        old: Settings | None = None,
        library: bool = False,
        touched: bool = False,
    ) -> int:
        """Queue for claiming every pair whose fix is now done; returns how many. `touched`:
        only rejected pairs whose files' inode changed since their answer."""
        jobs = self.jobs
        queued = {arrival.image for arrival in jobs.deferred}
        count = 0
        for path, row in jobs.store.seen_answers(
            frozenset({State.REJECTED}) if touched else ENDS_WITH_REPORT
        ):
            try:
                arrival = self._fixed(path, row, old, library, touched)
            except (ValidationError, ValueError, OSError) as exc:
                log.warning("job.retry_check_failed", input=path, error=str(exc))
                continue
            if arrival is None or arrival.image in queued or not _forgotten(jobs, path):
                continue
            jobs.deferred.append(arrival)
            queued.add(arrival.image)
            count += 1
            log.info("job.retry_after_fix", input=path, because=why, answered_by=row.id)
        return count

    def _fixed(
        self, path: str, row: JobRow, old: Settings | None, library: bool, touched: bool = False
    ) -> Arrival | None:
        """The pair to claim again if its fix is done and it is unchanged since its answer
        (a changed pair is the intake's business)."""
        inbox = self.jobs.settings.inbox
        if row.detail is None:
            return None
        if row.state is State.REJECTED and row.outcome == "report":
            report = outcome_detail("report", row.detail)
            assert isinstance(report, ReportDetail)
            if not report.resolve_again:
                return None
            image = inbox / report.input
            sidecar = image.parent / report.sidecar if report.sidecar else None
            paths = (image, sidecar, image.parent)
            if touched and not _touched_since(row.since, *paths, slack=CTIME_SLACK):
                return None
            arrival = Arrival(image, sidecar, Path(report.rel_dir or "."))
            if not self.jobs.spool.in_place.already_handled([image, sidecar]):
                return None
            try:
                resolve(arrival, self.jobs.settings, self.jobs.library)
                # what the claim refuses before moving (a file the daemon may not read: a
                # review found it claimed again, and reported again, at every reload)
                files: list[tuple[str, str, Identity | None]] = [
                    (p.name, p.name, None) for p in (image, sidecar) if p is not None
                ]
                handover.check_files(inbox, report.rel_dir or "", files)
            except (Rejected, NotUsable, Changed):
                return None
            return arrival
        if row.state is State.FAILED and row.outcome == "failure" and row.job is not None:
            failure = outcome_detail("failure", row.detail)
            assert isinstance(failure, FailureDetail)
            changed = _setting_changed(failure.reason, old, self.jobs.settings)
            if not changed and not (library and answers.IN_LIBRARY in failure.reason):
                return None
            image = inbox / path
            sidecar = _sidecar_beside(image, row.job)
            if not self.jobs.spool.in_place.already_handled([image, sidecar]):
                return None
            return Arrival(image, sidecar, image.parent.relative_to(inbox))
        return None


# File times come from the kernel's coarse clock, and an answer's record is written after its
# report: a fix made the moment the report appeared (a script's chmod; a CI run under load) had
# a change time before `since` and was never seen. For a pair refused at its claim, a change
# this much earlier counts: `_fixed` claims it only if its files now pass the claim's checks.
CTIME_SLACK = 1.0


def _touched_since(since: float, *paths: Path | None, slack: float = 0.0) -> bool:
    """Whether a chmod, chown, link or unlink (or a write) changed one of `paths` after `since`
    (the photo's folder too: a chmod of it lets the daemon move the photo out)."""
    for path in paths:
        with contextlib.suppress(OSError):
            if path is not None and path.lstat().st_ctime > since - slack:
                return True
    return False


def _forgotten(jobs: Lifecycle, path: str) -> bool:
    """Drop the record that an inbox file was answered; False when the state folder cannot be
    written (full): the file stays answered and is looked at again at the next retry."""
    try:
        jobs.store.forget_seen([path])
    except OSError as exc:
        log.warning("job.retry_deferred", input=path, error=str(exc), fix=answers.STATE_FIX)
        return False
    return True


def _setting_changed(reason: str, old: Settings | None, new: Settings) -> bool:
    """The report names a setting that a reload has changed."""
    if old is None:
        return False
    return any(
        getattr(old, name) != getattr(new, name) and re.search(rf"\b{name}\b", reason)
        for name in Settings.model_fields
    )


def _sidecar_beside(image: Path, job: Job) -> Path | None:
    """The sidecar returned with the photo: the names `Spool.release` chose as a pair."""
    if job.sidecar_name is None:
        return None
    if image.name == job.image_name:
        return image.with_name(job.sidecar_name)
    specific = job.sidecar_name == f"{job.image_name}.json"
    return image.with_name(f"{image.name}.json" if specific else f"{image.stem}.json")
