"""What the page shows, as typed rows built from the daemon's report, the manifests and the
style library. The templates only lay these out; every URL here is built from a job id or a
style name, and only these URLs lead to files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from daemon.config import Settings
from daemon.intake.styles import StyleLibrary
from daemon.jobs.answers import BLOCKED_FIX
from daemon.jobs.manifest import Manifest
from daemon.jobs.states import State
from daemon.status import RESULTS, blocked_why, duration, time_left, waited
from daemon.status_model import (
    Attention,
    Counts,
    DaemonInfo,
    Finished,
    JobItem,
    StatusReport,
    open_failures,
)
from daemon.versions import stylefold_version
from daemon.web.records import Outputs
from service.params import STOPPED

FAILURES = 20  # newest failures shown
STALE = 30.0  # seconds without a report from a running daemon before the page says so
LOW_DISK = 0.05  # a folder's file system with less free space is marked
INBOX_LABELS = {
    "settling": "settling",
    "arriving": "still arriving",
    "waiting": "waiting for its pair",
    "ready": "ready",
}
# Shown on a card; style_weight only when given (it overrides strength, which is then moot).
PARAMS_SHOWN = ("size", "iterations", "strength", "style_weight", "preserve_colors")


@dataclass(frozen=True)
class QueueRow:
    state: str  # settling | arriving | waiting | queued | running | publishing | blocked | ...
    label: str
    name: str
    note: str = ""
    styles: str = ""
    percent: float | None = None
    preview: str | None = None  # URL
    fix: str | None = None


@dataclass(frozen=True)
class Card:
    """One result: the original beside the stylised picture, with what made it."""

    job_id: str
    name: str
    when: str
    result: str  # thumbnail URL
    original: str  # thumbnail URL (404 when the original is gone or changed)
    full: str  # the full-size picture, re-encoded
    log: str
    styles: list[str]
    summary: list[str]  # the parameters people look at first
    params: list[tuple[str, str]]  # all of them
    facts: list[tuple[str, str]]  # iterations, device, timings


@dataclass(frozen=True)
class FailureRow:
    name: str
    outcome: str
    when: str
    reason: str
    original: str | None  # what happened to the photo, from the report
    report: str | None  # URL
    log: str | None  # URL


@dataclass(frozen=True)
class StyleCard:
    name: str
    thumb: str
    defaults: str


@dataclass(frozen=True)
class Skipped:
    file: str
    reason: str


@dataclass(frozen=True)
class Disk:
    folders: str
    free: str
    total: str
    percent_free: float
    low: bool


@dataclass(frozen=True)
class Health:
    daemon: DaemonInfo
    state: str  # one line: running, stale, not running
    ok: bool
    workers: list[str]
    devices: str
    fallback: str | None  # configured GPUs that are not in use
    disks: list[Disk]
    attention: list[Attention]
    counts: Counts
    web_version: str


@dataclass(frozen=True)
class Page:
    queue: list[QueueRow]
    queue_more: int  # rows left out (QUEUE_SHOWN)
    gallery: list[Card]
    failures: list[FailureRow]
    styles: list[StyleCard]
    skipped: list[Skipped]
    health: Health
    at: str = field(default="")


def job_url(job_id: str, what: str) -> str:
    return f"/jobs/{quote(job_id, safe='')}/{what}"


def build_page(
    report: StatusReport,
    settings: Settings,
    outputs: Outputs,
    library: StyleLibrary,
    when_stopped: str | None = None,
) -> Page:
    now = time.time()
    queue = queue_rows(report, now)
    return Page(
        queue=queue[:QUEUE_SHOWN],
        queue_more=max(0, len(queue) - QUEUE_SHOWN) + report.unlisted_total,
        gallery=gallery(report.recent, outputs),
        failures=failures(report.recent, outputs),
        styles=[_style_card(style.name, style.path, style.defaults) for style in library.styles()],
        skipped=[Skipped(p.path.name, p.reason) for p in library.problems],
        health=health(report, settings, now, when_stopped),
        at=time.strftime("%H:%M:%S", time.localtime(now)),
    )


# -- the queue ----------------------------------------------------------------------------------


# Rows of the queue on the page: a burst of thousands of files in the inbox would make each
# poll of every viewer megabytes.
QUEUE_SHOWN = 50


def queue_rows(report: StatusReport, now: float) -> list[QueueRow]:
    """Jobs at work first (running, publishing, blocked), then the inbox, then the queued."""
    rows = [
        QueueRow(
            item.state,
            INBOX_LABELS.get(item.state, item.state),
            item.path,
            item.note
            + (
                f"; gives up in {duration(item.gives_up_in)}"
                if item.gives_up_in is not None
                else ""
            ),
        )
        for item in report.inbox
    ]
    order = {State.RUNNING: 0, State.PUBLISHING: 1, State.BLOCKED: 2, State.QUEUED: 3}
    jobs = sorted(report.jobs, key=lambda job: order.get(job.state, 4))
    listed = [(order.get(job.state, 4), _job_row(job, report.daemon, now)) for job in jobs]
    at_work = [row for turn, row in listed if turn < order[State.QUEUED]]
    return at_work + rows + [row for turn, row in listed if turn >= order[State.QUEUED]]


def _job_row(job: JobItem, daemon: DaemonInfo, now: float) -> QueueRow:
    styles = ", ".join(job.styles)
    if job.state is State.RUNNING:
        notes = [f"{job.iteration}/{job.total} iterations" if job.total else "starting"]
        notes.append(f"on {job.device}" + (f" ({job.node})" if job.node else ""))
        if (left := time_left(job, daemon, now)) is not None:
            notes.append(left)
        preview = job_url(job.job_id, f"preview?v={job.iteration or 0}") if job.preview else None
        return QueueRow(
            "running", "running", job.input, ", ".join(notes), styles, job.percent or 0.0, preview
        )
    if job.state is State.BLOCKED:
        note = blocked_why(job, now)
        fix = BLOCKED_FIX[job.waits_for]
        return QueueRow("blocked", "blocked", job.input, note, styles, fix=fix)
    return QueueRow(job.state, job.state, job.input, f"for {waited(job, now)}", styles)


# -- results and failures -----------------------------------------------------------------------


def gallery(recent: list[Finished], outputs: Outputs) -> list[Card]:
    # Not the skipped: a photo sent again has no result of its own to show, and 24 of them
    # emptied the gallery (a web regression trial).
    done = [end for end in recent if end.outcome == "done"][:RESULTS]
    records = outputs.records([end.job_id for end in done])
    cards = []
    for end in done:
        record = records.get(end.job_id)
        manifest = outputs.manifest(record) if record is not None else None
        if manifest is not None:
            cards.append(_card(end, manifest))
    return cards


def _card(end: Finished, manifest: Manifest) -> Card:
    params = manifest.params.model_dump(mode="json")
    timings = manifest.timings
    facts = [
        ("iterations", f"{manifest.iterations} ({STOPPED[manifest.stop_reason]})"),
        ("device", manifest.device + (f" ({manifest.node})" if manifest.node else "")),
        ("output", f"{manifest.output.size[0]}x{manifest.output.size[1]} {manifest.output.format}"),
        ("render", f"{timings.render_seconds:.1f} s"),
        ("total", f"{timings.total_seconds:.1f} s"),
    ]
    if timings.queued_seconds is not None:
        # to the start of the attempt that made it: earlier attempts and stops count too
        facts.append(("before its start", f"{timings.queued_seconds:.1f} s"))
    if manifest.reused is not None:
        facts.append(("reused", f"the result of job {manifest.reused.job_id}"))
    return Card(
        job_id=end.job_id,
        name=manifest.input.path,
        when=clock(end.at),
        result=job_url(end.job_id, "thumb/result"),
        original=job_url(end.job_id, "thumb/original"),
        full=job_url(end.job_id, "full"),
        log=job_url(end.job_id, "log"),
        styles=[
            style.name if len(manifest.styles) == 1 else f"{style.name} ×{style.weight:g}"
            for style in manifest.styles
        ],
        summary=[
            f"{name.replace('_', ' ')} {params[name]}"
            for name in PARAMS_SHOWN
            if params[name] is not None and not (name == "strength" and params["style_weight"])
        ],
        params=[(name, _value(value)) for name, value in params.items()],
        facts=facts,
    )


def failures(recent: list[Finished], outputs: Outputs) -> list[FailureRow]:
    failed = open_failures(recent)[:FAILURES]
    records = outputs.records([end.job_id for end in failed])
    rows = []
    for end in failed:
        record = records.get(end.job_id)
        report = outputs.report(record) if record is not None else None
        has_log = record is not None and outputs.path(record, "log") is not None
        rows.append(
            FailureRow(
                name=end.input,
                outcome=end.outcome,
                when=clock(end.at),
                reason=end.reason or "no reason recorded",
                original=report.original if report is not None else None,
                report=job_url(end.job_id, "report") if report is not None else None,
                log=job_url(end.job_id, "log") if has_log else None,
            )
        )
    return rows


# -- styles and health --------------------------------------------------------------------------


def _style_card(name: str, path: Path, defaults: dict[str, object]) -> StyleCard:
    version = 0
    with contextlib.suppress(OSError):
        version = path.stat().st_mtime_ns
    shown = ", ".join(f"{key} {_value(value)}" for key, value in defaults.items())
    return StyleCard(name, f"/styles/{quote(name, safe='')}/thumb?v={version}", shown)


def health(
    report: StatusReport, settings: Settings, now: float, when_stopped: str | None = None
) -> Health:
    """`when_stopped`: what a stopped daemon means where stopping is expected (the demo's,
    which stops once its photos are done: a demo trial's page said "not running" in red)."""
    daemon = report.daemon
    ok = daemon.running or when_stopped is not None
    if not daemon.running:
        state = when_stopped or "not running: start it with `stylefold run` (or its systemd unit)"
    else:
        doing = "stopping" if daemon.stopping else "running"
        if daemon.starting:
            doing = f"starting ({daemon.starting})"
        state = f"{doing}, pid {daemon.pid}"
        if daemon.updated_at is not None:
            age = now - daemon.updated_at
            state += f", last report {duration(age)} ago"
            if age > STALE:
                ok = False
                state += " (it may be stuck: see its log)"
    workers = [
        f"worker {w.worker} on {w.device}{f' ({w.node})' if w.node else ''}: {w.state}"
        + (f", pid {w.pid}" if w.pid else "")
        for w in daemon.workers
    ]
    in_use = ", ".join(daemon.devices) or "none reported"
    wanted = [device for device in settings.devices if device.startswith("cuda")]
    fallback = None
    if daemon.running and wanted and not any(d.startswith("cuda") for d in daemon.devices):
        fallback = f"configured {', '.join(wanted)} but running on {in_use}"
    return Health(
        daemon=daemon,
        state=state,
        ok=ok and not daemon.paused,
        workers=workers,
        devices=f"{in_use} (configured: {', '.join(settings.devices)})",
        fallback=fallback,
        disks=disks(settings),
        attention=report.attention,
        counts=report.counts,
        web_version=stylefold_version(),
    )


def disks(settings: Settings) -> list[Disk]:
    """Free space per file system, naming the folders on each."""
    folders = {
        "inbox": settings.inbox,
        "outbox": settings.outbox,
        "state": settings.state,
        "archive": settings.archive_path,
        "styles": settings.styles,
    }
    by_device: dict[int, tuple[list[str], Path]] = {}
    for name, path in folders.items():
        with contextlib.suppress(OSError):
            by_device.setdefault(os.stat(path).st_dev, ([], path))[0].append(name)
    shown = []
    for names, path in by_device.values():
        try:
            usage = shutil.disk_usage(path)
        except OSError:
            continue
        free = usage.free / usage.total if usage.total else 0.0
        shown.append(
            Disk(
                ", ".join(names),
                size(usage.free),
                size(usage.total),
                round(100 * free, 1),
                free < LOW_DISK,
            )
        )
    return shown


# -- words --------------------------------------------------------------------------------------


def _value(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return "default" if value is None else str(value)


def clock(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch))


def size(count: float) -> str:
    units = ("B", "KB", "MB", "GB", "TB")
    unit = 0
    while count >= 1024 and unit < len(units) - 1:
        count /= 1024
        unit += 1
    return f"{count:.0f} B" if unit == 0 else f"{count:.1f} {units[unit]}"
