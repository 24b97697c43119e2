"""What a report about inbox files that no job answers says (`ReportDetail`): a rejected pair,
a file that cannot be a job, or a pair whose claim crashed, which stay in the inbox untouched;
or a claim's originals given back unanswered and kept in the state folder, their inbox folder
gone. The report is their one answer (published by `Publisher.publish`, outcome "report")."""

from __future__ import annotations

from pathlib import Path

from daemon.intake.pairing import Arrival, Problem
from daemon.jobs import answers
from daemon.jobs.answers import ReportDetail
from daemon.jobs.spool import ClaimIntent


def about_arrival(
    arrival: Arrival, inbox: Path, reason: str, *, crashed: bool = False
) -> ReportDetail:
    """The report of a pair that cannot become a job: refused for what it asks (resolved
    again after a fix outside it), or `crashed` while it was claimed (taken again only once
    it changes)."""
    return ReportDetail(
        input=arrival.image.relative_to(inbox).as_posix(),
        sidecar=arrival.sidecar.name if arrival.sidecar else None,
        reason=reason,
        original=answers.LEFT_PROBLEM if crashed else answers.LEFT_REJECTED,
        rel_dir=_folder(arrival.rel_dir),
        stem=arrival.image.stem,
        paths=[_rel(arrival.image, inbox), _rel(arrival.sidecar, inbox)],
        resolve_again=not crashed,
    )


def about_kept(
    intent: ClaimIntent, kept: list[Path], inbox: Path, state: Path, reason: str
) -> ReportDetail:
    """The report of a claim's originals given back unanswered into state/returned/ (`kept`),
    their inbox folder gone: nothing of them is left in the inbox to remember."""
    photo, sidecar = intent.inbox_pair(Path())
    return ReportDetail(
        input=photo.as_posix(),
        sidecar=sidecar.name if sidecar is not None else None,
        reason=reason,
        original=answers.original_text(kept, inbox, state),
        rel_dir=intent.rel_dir,
        stem=photo.stem,
        paths=[None],
    )


def about_problem(problem: Problem, inbox: Path) -> ReportDetail:
    """The report of a settled file that cannot become a job (no sidecar, empty...)."""
    rel = problem.path.relative_to(inbox)
    return ReportDetail(
        input=rel.as_posix(),
        sidecar=None if problem.sidecar is None else problem.sidecar.name,
        reason=problem.reason,
        original=answers.LEFT_UNTIL_FIXED,
        rel_dir=_folder(rel.parent),
        stem=problem.stem,
        paths=[rel.as_posix()],
    )


def _folder(rel_dir: Path) -> str:
    return rel_dir.as_posix() if str(rel_dir) != "." else ""


def _rel(path: Path | None, inbox: Path) -> str | None:
    return None if path is None else path.relative_to(inbox).as_posix()
