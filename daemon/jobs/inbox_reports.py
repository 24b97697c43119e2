"""Answers about inbox files that never became a job: a pair refused at its claim, a settled
file that cannot be one (no sidecar, empty, a special file), and originals that could not go
back to their inbox folder. Each is told in the outbox through the publisher's one way out; a
few are first recognised as needing no answer (stylefold's own answers come back, a photo come
back alone after its answer, the sidecar of a kept photo that someone deleted)."""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from daemon import safefs
from daemon.intake.ignore import SIDECAR_EXTENSION
from daemon.intake.pairing import Arrival, Problem
from daemon.intake.partners import key
from daemon.job_id import new_job_id
from daemon.jobs import answers, reports
from daemon.jobs.answers import ReportDetail
from daemon.jobs.answers_back import AnswersBack
from daemon.jobs.outbox import withdraw_report
from daemon.jobs.publisher import Publisher
from daemon.jobs.resend import answered_alone
from daemon.jobs.spool import ClaimIntent, Spool
from daemon.jobs.states import ENDS_WITH_REPORT, State
from daemon.jobs.store import Store

log = structlog.get_logger("stylefold.jobs")

# The transitions whose note names a report written: a rejection's, a failure's
_REPORTED = (State.REJECTED, State.RELEASING)
RECENT_JOBS = 200  # finished jobs a late sidecar or style is matched against (`_taken`)


class InboxReports:
    """Settings are the spool's, which a reload replaces."""

    def __init__(
        self, store: Store, spool: Spool, publisher: Publisher, answers_back: AnswersBack
    ) -> None:
        self.store = store
        self.spool = spool
        self.publisher = publisher
        self.answers_back = answers_back

    def reject(self, arrival: Arrival, reason: str, *, crashed: bool = False) -> None:
        """The pair cannot become a job; it stays in the inbox untouched, with a report. A
        style image its refused sidecar names loses its report as a lone photo (a re-test:
        "add x.json beside it" stayed beside the pair's report)."""
        inbox = self.spool.settings.inbox
        detail = reports.about_arrival(arrival, inbox, reason, crashed=crashed)
        self._publish(detail)
        for style in arrival.refused_styles:
            self.withdraw(self.spool.in_place.relative(style), style=True)

    def _publish(self, detail: ReportDetail) -> None:
        """A report on an inbox file, unless the same one waits to be written (a full outbox):
        not a second, which a restart made (a re-test: two jobs, two "rejected" in status,
        for one photo). A waiting one that says otherwise is outdated by this one."""
        if self.publisher.outdate_report(detail.input, keep=detail.reason):
            log.info("job.report_waiting", input=detail.input)
            return
        self.publisher.publish(new_job_id(), None, "report", detail)

    def arrival_crashed(self, arrival: Arrival, exc: Exception) -> None:
        """A pair whose claim crashed before it became a job (a claim cut short is rolled
        back; once it is a job, it fails as any job does) stays in the inbox with a report:
        answered, and not taken again until it changes, rather than crashing again at every
        look."""
        reason = answers.INTERNAL.format(error=f"claiming it: {exc!r}")
        try:
            self.reject(arrival, reason, crashed=True)
        except Exception:
            log.exception("job.report_crashed", image=str(arrival.image))

    def problem(self, problem: Problem) -> None:
        """A settled file that cannot become a job (no sidecar, empty, special file...)."""
        settings = self.spool.settings
        inbox = settings.inbox
        in_place = self.spool.in_place
        if problem.alone:
            answered = in_place.answered_alone(problem.path)
        elif problem.sidecar is not None and in_place.reported_with_sidecar(problem.path):
            # A pair refused before is answered only while its sidecar is unchanged too (a
            # re-test: mended, but for a style image still missing, it was never told so).
            answered = in_place.already_handled([problem.path, problem.sidecar])
        else:
            answered = in_place.answered_as_is(problem.path)
        answered = answered and not problem.renewed
        if answered or self.answers_back.left_alone(problem.path):
            return
        resent = None
        if problem.alone:
            resent = answered_alone(self.store, settings, problem.path)
        if resent is not None and resent.published:
            job_id = resent.answer.job_id
            self.spool.in_place.remember_read(problem.path, [resent.signature], job_id)
            relative = self.spool.in_place.relative(problem.path)
            log.info("job.resent_alone", input=relative, answered_by=job_id)
            return
        detail = reports.about_problem(problem, inbox)
        if resent is not None:  # a re-test: told "no sidecar" with no word of its answer
            earlier = answers.ANSWER_GONE.format(
                job_id=resent.answer.job_id, output=resent.answer.output.name
            )
            detail = detail.model_copy(update={"reason": f"{detail.reason}; {earlier}"})
        folder = problem.path.parent.relative_to(inbox)
        if problem.missing_style and (taken := self._taken(folder, name=problem.missing_style)):
            job_id, style, used = taken
            reason = answers.STYLE_TAKEN.format(
                photo=problem.path.name, style=style, used=used, job_id=job_id
            )
            detail = detail.model_copy(update={"reason": reason})
        # A sidecar's photo has its stem, or its base as a stem: x.jpg.json is x.jpg's, or
        # x.jpg.jpg's, which x.jpg.jpg.json comes before (an attacker's trial).
        base = problem.path.name[: -len(SIDECAR_EXTENSION) - 1]
        stems = (problem.stem, base)
        if problem.orphan and (taken := self._taken(folder, stems=stems)) is not None:
            job_id, photo, used = taken
            sidecar = problem.path.name
            if used == sidecar and self.spool.in_place.answered_with(
                problem.path.parent / photo, sidecar
            ):
                # The very sidecar its kept photo was answered with, left when someone deleted
                # the photo (a sync user's trial: it got a second, wrong report).
                self.spool.in_place.remember([problem.path], job_id)
                log.info("intake.sidecar_left", sidecar=str(problem.path), job_id=job_id)
                return
            text = answers.SIDECAR_AFTER_PHOTO
            if used is not None and sidecar != used and key(sidecar) == key(used):
                text = answers.SIDECAR_CASE_TWIN
            elif used is not None and key(used) == key(f"{photo}.json") and sidecar != used:
                text = answers.SIDECAR_SHADOWED  # m.JPG.json is M.jpg's too (a re-test)
            kept = self._kept_at(job_id)
            reason = text.format(sidecar=sidecar, photo=photo, job_id=job_id, used=used, kept=kept)
            detail = detail.model_copy(update={"reason": reason})
        if problem.renewed and self.spool.in_place.told_as_is(problem.path, detail.reason):
            # The intake's words changed (a shadowed sidecar, its photo claimed since, became
            # one without a photo at pair_timeout), the answer did not: it was told twice (an
            # attacker's trial).
            return
        self._publish(detail)

    def vanished(self, path: Path) -> None:
        """An inbox file gone (deleted, renamed away) that was answered where it lay with a
        report: the report, about a file no longer there, goes too (a new user's trial: q2.jpg
        renamed q2b.jpg and answered, q2.error.json stayed for good, saying the photo was left
        in the inbox). A file being claimed, or back since, keeps it. So does a photo whose
        refused pair lost its sidecar: the report on the pair goes, and the photo is decided
        again alone (a sync trial: "rb.json: zz: unknown key" stayed pair_timeout after rb.json
        went)."""
        self.withdraw(self.spool.in_place.relative(path))

    def withdraw(self, relative: str, style: bool = False) -> None:
        """`vanished` for a file (relative to the inbox) known to be gone: also one deleted
        while the daemon was stopped (`AnsweredInPlace.forget_vanished`). `style`: the file is
        there, and a pair just claimed brings it along as its style image (or a refused one
        names it so): a report on it alone (no sidecar, as a photo) goes, since it is no photo
        (a re-test: "sz.jpg has no sidecar" stayed beside the result that sz.jpg was the
        style of)."""
        try:
            self._withdraw(relative, style)
        except safefs.UnsafePath as exc:  # an attacker's trial: a traceback, at level error
            # An outbox folder swapped for a link: left for the next start to withdraw.
            log.warning("report.not_withdrawn", input=relative, reason=str(exc))
        except Exception:  # housekeeping: the intake, or the start, goes on
            log.exception("report.withdraw_crashed", input=relative)

    def _withdraw(self, relative: str, style: bool) -> None:
        path = self.spool.settings.inbox / relative
        answer = self.store.seen_by(relative)
        if answer is None or answer[1] not in ENDS_WITH_REPORT:
            return
        with_sidecar = self.spool.in_place.reported_with_sidecar(path)
        if (style and with_sidecar) or (not style and os.path.lexists(path) and not with_sidecar):
            return
        if self.store.under_way(relative):
            return
        job_id = answer[0]
        shown = [t.note for t in self.store.transitions(job_id) if t.new in _REPORTED]
        outbox = self.spool.settings.outbox
        if shown and withdraw_report(outbox, shown[-1], job_id, relative):
            log.info("report.withdrawn", input=relative, report=shown[-1], job_id=job_id)
        self.store.withdrawn(job_id)
        self.store.forget_seen([relative])

    def _taken(
        self, folder: Path, *, stems: tuple[str, ...] = (), name: str | None = None
    ) -> tuple[str, str, str | None] | None:
        """The latest job that took a photo of this folder with one of these stems (what a
        lone sidecar names: one corrected, or synced, after its photo was claimed, or one of two
        sidecars) or this name (a style image another pair brings). (job id, photo name, the
        sidecar it was taken with). Names compare as pairing does: in NFC and without case."""
        wanted = {key(stem) for stem in stems} if name is None else {key(name)}
        for row in [*reversed(self.store.active()), *self.store.finished(RECENT_JOBS)]:
            taken = Path(row.input)
            named = key(taken.stem if name is None else taken.name) in wanted
            if row.job is not None and taken.parent == folder and named:
                return row.id, taken.name, row.job.sidecar_name
        return None

    def _kept_at(self, job_id: str) -> str:
        """PHOTO_KEPT for where a finished job's photo went (the archive, under its name or
        a free one), or nothing while it is not known."""
        for step in self.store.transitions(job_id):
            for path in step.originals:
                if path.suffix.lower() != f".{SIDECAR_EXTENSION}":
                    return answers.PHOTO_KEPT.format(path=path)
        return ""

    def kept(self, intent: ClaimIntent, kept: list[Path]) -> None:
        """Originals given back unanswered that could not go back (their inbox folder was
        renamed or removed meanwhile) have a report in the outbox, where their sender looks:
        they had left the inbox with no word (an attacker's trial)."""
        photo = intent.moves[0][0]
        why = answers.ORIGINAL_CHANGED_KEPT if intent.changed else answers.CLAIM_KEPT
        reason = why.format(name=intent.changed or photo)
        detail = reports.about_kept(
            intent, kept, self.spool.settings.inbox, self.spool.settings.state, reason
        )
        self.publisher.publish(new_job_id(), None, "report", detail)
