"""A job's answer in the outbox: what it says (the details recorded while PUBLISHING, so a
restart or a blocked outbox can write it again) and how it is written (manifest or error report,
with the job's log). Every error report is built here, its texts from one catalogue; what the
intake says of a file that never became a job comes from `daemon.intake.reasons` (and a
sidecar's problems from `daemon.intake.sidecar_errors`), a retry's words from
`daemon.pool.retry`.

The outbox is synced to people who see neither the server nor its folders, so nothing written
there names a server path: files are named relative to the inbox (or the outbox), and `public`
rewrites any path that slipped into a message (an OSError's file name, say) to the role of its
folder (`state/spool/...`) or, for a path outside them, to its last name only.
"""

from __future__ import annotations

import platform
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from pydantic import BaseModel, model_validator

from daemon.config import Settings
from daemon.fsutil import (
    JSON_BYTES,
    NotTheSame,
    atomic_write_json,
    file_sha256,
    open_answer,
    parse_ours,
    read_json,
)
from daemon.jobs import outbox
from daemon.jobs.error_report import ErrorReport, FailureReport, as_report
from daemon.jobs.manifest import (
    InputInfo,
    Manifest,
    OutputInfo,
    ReusedFrom,
    SidecarEntry,
    StyleEntry,
    Timings,
    Versions,
)
from daemon.jobs.outbox import (
    OutputNames,
    choose_names,
    drop_other_reports,
    local_time,
    log_line,
)
from daemon.jobs.record import Job, JobStyle
from daemon.pool.events import FailureKind, ResultInfo
from daemon.status_model import BlockedOn
from daemon.versions import stylefold_version

AnswerT = TypeVar("AnswerT", bound=BaseModel)

# -- the catalogue of what people read --------------------------------------------------------

RETURNED = (
    f"{outbox.RETURNED_PREFIX}{{path}}; it is taken again by itself once the fix above is done: a "
    "changed photo, sidecar or brought-along style image, a setting the error names changed and "
    "reloaded (SIGHUP), or the file of a library style it names replaced"
)
KEPT = (
    f"{outbox.KEPT_PREFIX} as {{path}}, because the inbox folder it came from was gone or was "
    "no longer a real folder when it was returned; ask the administrator for it"
)
LEFT_PROBLEM = "left in the inbox, unchanged"
_TAKEN_AGAIN = f"{LEFT_PROBLEM}; it is taken again by itself once the fix above is done: "
_RELOADED = (
    "a setting changed and reloaded (SIGHUP, which also looks again at every photo left here)"
)
LEFT_REJECTED = (
    f"{_TAKEN_AGAIN}a changed photo, sidecar or brought-along style image, a style added to the "
    f"library, or {_RELOADED}"
)
# Said of a photo without its sidecar, a sidecar without its photo, a file cut short...: the
# reason above names what to add or send (a re-test: a lone sidecar was told "its sidecar added").
LEFT_UNTIL_FIXED = f"{_TAKEN_AGAIN}a file added beside it or sent again, or {_RELOADED}"
CLAIMS_FAILING_FIX = (
    "see the folder the error names: the state folder's free space, and that the daemon's "
    "user may write it, its database and the inbox (stylefold doctor, run as that user); it "
    "tries again every {seconds:g} s"
)
ANSWER_GONE = (
    "this very photo was answered before (job {job_id}, {output}), and that answer has left the "
    "outbox since: send its sidecar with it to have it rendered again"
)
SIDECAR_AFTER_PHOTO = (
    "{sidecar} arrived after its photo {photo} had been taken with the sidecar it had then "
    "(job {job_id}), so it was not used; to render the photo with it, put {photo} back beside "
    "it{kept}; otherwise remove {sidecar}"
)
# Where the photo went, for SIDECAR_AFTER_PHOTO (a photographer's trial: the phone no longer
# had the original, and the report did not say where it was).
PHOTO_KEPT = " (it is kept at {path})"
STYLE_TAKEN = (
    "{photo} cannot use the style image {style} its sidecar names: {style} had been taken as a "
    "photo of its own, with {used} (job {job_id}), before {photo} and its sidecar were "
    "complete; to use it as a style too, send a copy of it under another name beside {photo}, "
    "or add it to the style library"
)
SIDECAR_SHADOWED = (
    "{sidecar} was not used: job {job_id} took {photo} with {used}, the sidecar named after the "
    "photo's whole file name, which comes first; remove {sidecar} (or, to render the photo with "
    "it, remove {used} and send {photo} again)"
)
SIDECAR_CASE_TWIN = (
    "{sidecar} was not used: job {job_id} took {photo} with {used}, which differs from it in case "
    "or Unicode form alone and is written as the photo is; remove {sidecar} (or, to render the "
    "photo with it, remove {used} and send {photo} again)"
)
# Where a failed job's photo is, and what takes it again (the end of a failure's advice).
BACK_IN_INBOX = "the photo is back in the inbox and is taken again once the sidecar changes"
INTERRUPTED = (
    "the job was interrupted {starts} times (the daemon or its worker stopped while rendering "
    "it); check the machine's memory (dmesg) and lower params.size in its sidecar: " + BACK_IN_INBOX
)
INTERNAL = "internal error while finishing the job ({error}); please report it"
# A job recorded RUNNING when no daemon runs: its daemon was killed or crashed (recovery queues
# it again), in status and in its log.
STOPPED_WHILE_RUNNING = "interrupted: the daemon stopped while it ran"
# How a job-time report says where a style image lives (`style_label`).
IN_LIBRARY = "in the style library"
BROUGHT_ALONG = "brought along in the inbox"
OUTBOX_FIX = (
    "free space in the outbox or fix its permissions (or what the reason names); the job waits"
)
REUSE_CHANGED = (
    "the earlier identical answer it was to be copied from changed in the outbox before the "
    "copy (edited, replaced or removed); it is rendered instead"
)
RESULT_LOST = (
    "its rendered result was gone from the state folder's spool before it reached the outbox "
    "(removed by hand, or by a cleaner?); it is rendered again"
)
RESULT_KEEPS_VANISHING = (
    "its rendered result was gone from the state folder's spool {times} times before it reached "
    "the outbox: something keeps removing files there (a cleaner such as systemd-tmpfiles, or a "
    "sync tool pointed at the state folder?); keep the state folder out of its reach: "
    + BACK_IN_INBOX
)
ORIGINAL_CHANGED = (
    "{name} changed while it was being rendered (a copy tool still writing it in place?): "
    "nothing is published from it; it is back in the inbox and is taken again once it settles"
)
# The reasons of a report on originals kept in the state folder (`KEPT` says where and why).
ORIGINAL_CHANGED_KEPT = (
    "{name} changed while it was being rendered (a copy tool still writing it in place?), so "
    "nothing is published from it"
)
CLAIM_KEPT = (
    "{name} was not answered: its claim was cut short (by a stop of the daemon, or an error), "
    "or it changed while it was being rendered"
)
STATE_FIX = (
    "free space where the state folder is, or fix its permissions; the job waits and carries on "
    "by itself"
)
ORIGINALS_FIX = (
    "free space in the archive folder or the inbox, or fix its permissions (or what the reason "
    "names); the originals wait in the spool and move on by themselves"
)
BLOCKED_FIX: dict[BlockedOn, str] = {
    "outbox": OUTBOX_FIX,
    "state": STATE_FIX,
    "originals": ORIGINALS_FIX,
}
# What refused a blocked job, in a few words (STATUS=, and before each blocked job's error in
# `status` and on the page, which said only "[Errno 28] No space left on device").
BLOCKED_ON: dict[BlockedOn, str] = {
    "outbox": "outbox unwritable",
    "state": "state folder full or unwritable",
    "originals": "originals not moved",
}


def style_label(job: Job, style: JobStyle, library_file: Path | None) -> str:
    """What a job-time report calls one of the job's style images: the file, and whether it is
    in the style library or was brought along in the inbox."""
    spec = (job.sidecar or {}).get("style")
    if isinstance(spec, dict):  # {"file": ...}: the image beside the sidecar
        where = (Path(job.rel_dir) / style.name).as_posix()
        return f"the style image {where} ({BROUGHT_ALONG})"
    if library_file is None:
        return f"the image of style {style.name!r} ({IN_LIBRARY})"
    return f"the image of style {style.name!r} ({library_file} {IN_LIBRARY})"


# An absolute path: a "/" not inside a word or a number, then at least two names.
_ABSOLUTE = re.compile(r"(?<![\w/.])/(?:[^\s/'\"():,;]+/)+([^\s/'\"():,;]+)")


def public(value: Any, roots: Mapping[Path, str]) -> Any:
    """`value` (text, or JSON-like data) as it may be published: each path under one of `roots`
    (the daemon's folders) starts with that folder's role instead, any other absolute path is
    cut to its last name."""
    if isinstance(value, str):
        for root, role in sorted(roots.items(), key=lambda item: -len(str(item[0]))):
            value = value.replace(str(root), role)
        return _ABSOLUTE.sub(lambda match: f".../{match.group(1)}", value)
    if isinstance(value, dict):
        return {key: public(item, roots) for key, item in value.items()}
    if isinstance(value, list):
        return [public(item, roots) for item in value]
    return value


def published(answer: AnswerT, roots: Mapping[Path, str]) -> AnswerT:
    """A manifest or report as it may be published (`public`), checked again as its model."""
    return type(answer).model_validate(public(answer.model_dump(mode="json"), roots))


def answered_elsewhere(folder: str, rel_dir: str) -> str:
    """The log's line for answers in a numbered outbox folder (`outbox.answer_folder`)."""
    return (
        f"answered in the outbox folder {folder}/, not {rel_dir}/: a file in the outbox (or an "
        "answer in progress, or another inbox folder's answers) holds that name, or a folder "
        "of that name there may not be written by the daemon"
    )


def original_text(placed: list[Path], inbox: Path, state: Path) -> str:
    """Where a failed job's originals are, named as the people reading the report know them."""
    if not placed:
        return "no original was left to return"
    if inbox not in placed[0].parents:
        return KEPT.format(path=", ".join(p.relative_to(state).as_posix() for p in placed))
    return RETURNED.format(path=", ".join(p.relative_to(inbox).as_posix() for p in placed))


# -- what PUBLISHING records --------------------------------------------------------------------


class ResultDetail(BaseModel):
    info: ResultInfo
    started_at: float | None = None  # when the last attempt started (queued time)
    node: str | None = None


class ReuseDetail(BaseModel):
    job_id: str
    output: str
    manifest: str
    sha256: str | None = None  # the output's as published (None in records of earlier versions)


class ResultLost(Exception):
    """What a job's answer was to be made of is gone or changed (its rendered result in the
    spool, an earlier answer to copy): it is rendered again, for `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FailureDetail(BaseModel):
    kind: FailureKind
    reason: str
    traceback: str | None = None


class ReportDetail(BaseModel):
    """A report about inbox files no job answers (a rejected pair, a lone file, originals
    given back unanswered and kept in the state folder)."""

    input: str  # relative to the inbox
    sidecar: str | None
    reason: str
    original: str  # what happened to the files, for people
    rel_dir: str
    stem: str
    paths: list[str | None]  # relative to the inbox: the files to remember as answered
    # A pair refused by what it asks for: resolved again when a fix outside it may have been
    # made (`daemon.jobs.retry_on_fix`); the others are taken again only once they change.
    resolve_again: bool = False

    @model_validator(mode="before")
    @classmethod
    def _recorded_before_the_flag(cls, data: Any) -> Any:
        """A record written before `resolve_again` existed told it by its text alone."""
        if isinstance(data, dict) and "resolve_again" not in data:
            return {**data, "resolve_again": data.get("original") == LEFT_REJECTED}
        return data


# -- writing ------------------------------------------------------------------------------------


def _sidecar_entry(job: Job) -> SidecarEntry | None:
    if job.sidecar_name is None:
        return None
    return SidecarEntry(path=job.sidecar_name, content=job.sidecar or {})


def _style_entries(job: Job, sizes: Sequence[tuple[int, int] | None]) -> list[StyleEntry]:
    """The job's styles, each with the size it was used at (None where that is not known)."""
    known = dict(enumerate(sizes))  # none at all from a result rendered by an older version
    return [
        StyleEntry(name=s.name, weight=s.weight, sha256=s.sha256, size=known.get(index))
        for index, s in enumerate(job.styles)
    ]


def build_manifest(job: Job, detail: ResultDetail, names: OutputNames, digest: str) -> Manifest:
    """What was done, exactly enough to reproduce it."""
    info = detail.info
    now = time.time()
    started = detail.started_at
    return Manifest(
        job_id=job.id,
        input=InputInfo(
            path=job.source,
            sha256=job.input_sha256,
            format=info.input_format,
            size=info.input_size,
            colour_profile=info.input_profile,
        ),
        sidecar=_sidecar_entry(job),
        styles=_style_entries(job, info.style_sizes),
        params=info.params,
        style_weight_used=info.params.effective_style_weight,
        start_style_colours=(
            info.params.recolor_share if info.params.init in ("recolored", "content") else None
        ),
        requested_params=None if info.params == job.params else job.params,
        output=OutputInfo(
            file=names.image.name,
            format=job.output_format,
            quality=job.output_quality,
            size=info.output_size,
            sha256=digest,
        ),
        device=info.device,
        node=detail.node or info.node,
        attempt=info.attempt,
        iterations=info.iterations,
        stop_reason=info.stop_reason,
        losses=info.losses,
        scales=info.scales,
        scale_iterations=list(info.scale_iterations),
        notes=list(info.notes),
        peak_memory_bytes=info.peak_memory_bytes,
        # Jobs rendered together share the render's time and peak memory.
        batch_size=info.batch_size,
        timings=Timings(
            **info.timings.model_dump(),
            queued_seconds=round(started - job.claimed_at, 3) if started else None,
            total_seconds=round(now - job.claimed_at, 3),
        ),
        versions=Versions(
            stylefold=stylefold_version(),
            python=platform.python_version(),
            **info.versions.model_dump(),
        ),
        claimed_at=local_time(job.claimed_at),
        finished_at=local_time(now),
    )


def publish_result(
    job: Job,
    detail: ResultDetail,
    result: Path,
    names: OutputNames,
    log: str,
    roots: Mapping[Path, str],
) -> str:
    """Returns the SHA-256 of the image written (the one its manifest names)."""
    digest = file_sha256(result)
    manifest = build_manifest(job, detail, names, digest)
    return _publish_result(names, result, manifest, log, roots, digest)


def _publish_result(
    names: OutputNames,
    image: Path,
    manifest: Manifest,
    log: str,
    roots: Mapping[Path, str],
    sha256: str | None = None,
    opened: BinaryIO | None = None,
) -> str:
    shown, text = published(manifest, roots), public(log, roots)
    return outbox.publish_result(names, image, shown, text, sha256, opened)


def manifest_at(path: Path, outbox: Path) -> Manifest:
    """A manifest we published, read from the `outbox` without following a link anywhere on
    its way (`open_answer`); raises OSError or ValueError when it is gone or no longer a
    manifest (an identical job is then rendered instead of answered from it)."""
    with open_answer(path, outbox, JSON_BYTES) as handle:
        return Manifest.model_validate(parse_ours(handle.read(JSON_BYTES + 1)))


def publish_reuse(
    job: Job,
    detail: ReuseDetail,
    names: OutputNames,
    log: str,
    settings: Settings,
    roots: Mapping[Path, str],
) -> str:
    """An identical job was done before: answer with a copy of its result and its facts, but
    this job's own names (a style brought along under another name is the same image). The
    result is copied from one opening (`open_answer`), and only if it is still the one
    published (`fsutil.atomic_copy`'s `sha256`). Returns the SHA-256 of the copy."""
    outbox_root = settings.outbox
    try:
        previous = manifest_at(Path(detail.manifest), outbox_root)
    except (OSError, ValueError):  # gone or changed since the job was queued: rendered
        raise ResultLost(REUSE_CHANGED) from None
    used = {style.sha256: style.size for style in previous.styles}  # the same images
    manifest = previous.model_copy(
        update={
            "job_id": job.id,
            "input": previous.input.model_copy(update={"path": job.source}),
            "sidecar": _sidecar_entry(job),
            "styles": _style_entries(job, [used.get(s.sha256) for s in job.styles]),
            "output": previous.output.model_copy(update={"file": names.image.name}),
            "reused": ReusedFrom(
                job_id=detail.job_id,
                output=_in_outbox(detail.output, outbox_root),
                manifest=_in_outbox(detail.manifest, outbox_root),
            ),
            "claimed_at": local_time(job.claimed_at),
            "finished_at": local_time(time.time()),
        }
    )
    output = Path(detail.output)
    try:
        image = open_answer(output, outbox_root, settings.max_answer_bytes)
    except OSError:  # gone since the job was queued (a later try: a reviewer's reading)
        raise ResultLost(REUSE_CHANGED) from None
    try:
        with image:
            return _publish_result(names, output, manifest, log, roots, detail.sha256, image)
    except NotTheSame:
        raise ResultLost(REUSE_CHANGED) from None


def _in_outbox(path: str, outbox_root: Path) -> str:
    """An earlier answer's file, relative to the outbox."""
    try:
        return Path(path).relative_to(outbox_root).as_posix()
    except ValueError:
        return Path(path).name


def failure_report(job: Job, detail: FailureDetail) -> FailureReport:
    """The report of a failed job; its `original` names the planned return, and
    `amend_original` corrects it once the originals are back if they went elsewhere."""
    original = ", ".join((Path(job.rel_dir) / name).as_posix() for name in job.pair)
    return FailureReport(
        error=detail.reason,
        job_id=job.id,
        kind=detail.kind,
        input=job.source,
        sidecar=job.sidecar_name,
        original=RETURNED.format(path=original),
        styles=[style.name for style in job.styles],
        params=job.params,
        at=local_time(time.time()),
    )


def publish_failure(
    names: OutputNames, report: ErrorReport, log: str, roots: Mapping[Path, str]
) -> None:
    outbox.publish_error(names, published(report, roots), public(log, roots))


def publish_report(
    job_id: str,
    detail: ReportDetail,
    folder: Path,
    outbox_root: Path,
    output_format: str,
    roots: Mapping[Path, str],
    reserved: Iterable[Path],
) -> OutputNames:
    """The report of inbox files that never became a job, in `folder` (of the outbox at
    `outbox_root`), under names free right now and not `reserved` by a claimed job (which may
    not have written any file yet)."""
    inputs = [path for path in detail.paths if path is not None]
    names = choose_names(
        folder,
        detail.stem,
        output_format,
        reserved=reserved,
        inputs=inputs,
        root=outbox_root,
    )
    report = ErrorReport(
        error=detail.reason,
        job_id=job_id,
        input=detail.input,
        sidecar=detail.sidecar,
        original=detail.original,
        at=local_time(time.time()),
    )
    log = log_line(detail.reason)
    relative = folder.relative_to(outbox_root).as_posix()
    if relative != (detail.rel_dir or "."):
        log += log_line(answered_elsewhere(relative, detail.rel_dir))
    publish_failure(names, report, log, roots)
    drop_other_reports(names, inputs)
    return names


def amend_original(names: OutputNames, job_id: str, text: str) -> None:
    """Correct a failure report's `original` when the originals went elsewhere than planned (a
    free `.returned-N` name, or state/ because their folder was gone or swapped)."""
    report = as_report(read_json(names.error))
    if report is not None and report.job_id == job_id and report.original != text:
        amended = report.model_copy(update={"original": text})
        atomic_write_json(names.error, amended.model_dump(mode="json"), under=names.outbox)
