"""A job's answer in the outbox: what it says (the details recorded while PUBLISHING, so a
restart or a blocked outbox can write it again) and how it is written (manifest or error report,
with the job's log). Every user-facing error report is built here, from one catalogue of texts.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from daemon.fsutil import file_sha256, read_json
from daemon.jobs import outbox
from daemon.jobs.outbox import OutputNames, choose_names
from daemon.jobs.record import Job, JobStyle
from daemon.pool.events import FailureKind, ResultInfo
from daemon.versions import stylefold_version

# -- the catalogue of what people read --------------------------------------------------------

RETURNED = (
    "returned to {path}; it is taken again by itself once the fix above is done: a changed "
    "photo, sidecar or brought-along style image, a setting the error names changed and reloaded "
    "(SIGHUP), or the file of a library style it names replaced"
)
LEFT_REJECTED = (
    "left in the inbox, unchanged; it is taken again by itself once the fix above is done: a "
    "changed photo, sidecar or brought-along style image, a style added to the library, or a "
    "setting changed and reloaded (SIGHUP, which also looks again at every photo left here)"
)
LEFT_PROBLEM = "left in the inbox, unchanged"
INTERRUPTED = (
    "the job was interrupted {starts} times (the daemon or its worker stopped while rendering "
    "it); check the machine's memory (dmesg) and lower params.size in its sidecar: the photo is "
    "back in the inbox and is taken again once the sidecar changes"
)
INTERNAL = "internal error while finishing the job ({error}); please report it"
# How a job-time report says where a style image lives (`style_label`).
IN_LIBRARY = "in the style library"
BROUGHT_ALONG = "brought along in the inbox"
OUTBOX_FIX = "free space in the outbox or fix its permissions; the job waits"


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


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(seconds))


# -- what PUBLISHING records --------------------------------------------------------------------


class ResultDetail(BaseModel):
    info: ResultInfo
    started_at: float | None = None  # when the last attempt started (queued time)
    node: str | None = None


class ReuseDetail(BaseModel):
    job_id: str
    output: str
    manifest: str


class FailureDetail(BaseModel):
    kind: FailureKind
    reason: str
    traceback: str | None = None


class ReportDetail(BaseModel):
    """A report about inbox files that never became a job (a rejected pair, a lone file)."""

    input: str  # relative to the inbox
    sidecar: str | None
    reason: str
    original: str  # what happened to the files, for people
    rel_dir: str
    stem: str
    paths: list[str | None]  # relative to the inbox: the files to remember as answered


# -- writing ------------------------------------------------------------------------------------


def _sidecar_entry(job: Job) -> dict[str, Any] | None:
    if job.sidecar_name is None:
        return None
    return {"path": job.sidecar_name, "content": job.sidecar}


def build_manifest(
    job: Job, detail: ResultDetail, names: OutputNames, digest: str
) -> dict[str, Any]:
    """What was done, exactly enough to reproduce it."""
    info = detail.info
    now = time.time()
    timings: dict[str, Any] = dict(info.timings)
    started = detail.started_at
    timings["queued_seconds"] = round(started - job.claimed_at, 3) if started else None
    timings["total_seconds"] = round(now - job.claimed_at, 3)
    used = info.params.model_dump(mode="json")
    requested = job.params.model_dump(mode="json")
    return {
        "job_id": job.id,
        "status": "ok",
        "reused": None,
        "input": {
            "path": job.source,
            "sha256": job.input_sha256,
            "format": info.input_format,
            "size": list(info.input_size),
        },
        "sidecar": _sidecar_entry(job),
        "styles": [
            {"name": style.name, "weight": style.weight, "sha256": style.sha256}
            for style in job.styles
        ],
        "params": used,
        "requested_params": requested if used != requested else None,
        "output": {
            "file": names.image.name,
            "format": job.output_format,
            "quality": job.output_quality,
            "size": list(info.output_size),
            "sha256": digest,
        },
        "device": info.device,
        "node": detail.node or info.node,
        "attempt": info.attempt,
        "iterations": info.iterations,
        "stop_reason": info.stop_reason,
        "losses": info.losses,
        "scales": [list(scale) for scale in info.scales],
        "peak_memory_bytes": info.peak_memory_bytes,
        # Jobs rendered together share the render's time and peak memory.
        "batch_size": info.batch_size,
        "timings": timings,
        "versions": {
            "stylefold": stylefold_version(),
            "python": platform.python_version(),
            **info.versions,
        },
        "claimed_at": _iso(job.claimed_at),
        "finished_at": _iso(now),
    }


def publish_result(
    job: Job, detail: ResultDetail, result: Path, names: OutputNames, log: str
) -> dict[str, Any]:
    digest = file_sha256(result)
    manifest = build_manifest(job, detail, names, digest)
    outbox.publish_result(names, result, manifest, log)
    return manifest


def publish_reuse(job: Job, detail: ReuseDetail, names: OutputNames, log: str) -> None:
    """An identical job was done before: answer with a copy of its result."""
    previous = read_json(Path(detail.manifest))
    base = previous if isinstance(previous, dict) else {}
    manifest = {
        **base,
        "job_id": job.id,
        "input": {**base.get("input", {}), "path": job.source},
        "sidecar": _sidecar_entry(job),
        "output": {**base.get("output", {}), "file": names.image.name},
        "reused": {"job_id": detail.job_id, "output": detail.output, "manifest": detail.manifest},
        "claimed_at": _iso(job.claimed_at),
        "finished_at": _iso(time.time()),
    }
    outbox.publish_result(names, Path(detail.output), manifest, log)


def failure_report(job: Job, detail: FailureDetail, inbox: Path) -> dict[str, Any]:
    original = inbox / job.rel_dir / job.image_name
    return {
        "error": detail.reason,
        "job_id": job.id,
        "kind": detail.kind,
        "input": job.source,
        "sidecar": job.sidecar_name,
        "original": RETURNED.format(path=original),
        "styles": [style.name for style in job.styles],
        "params": job.params.model_dump(mode="json"),
        "at": _iso(time.time()),
    }


def publish_report(
    job_id: str,
    detail: ReportDetail,
    outbox_root: Path,
    output_format: str,
) -> OutputNames:
    """The report of inbox files that never became a job, under names free right now."""
    names = choose_names(outbox_root / detail.rel_dir, detail.stem, output_format)
    report = {
        "error": detail.reason,
        "job_id": job_id,
        "input": detail.input,
        "sidecar": detail.sidecar,
        "original": detail.original,
        "at": _iso(time.time()),
    }
    outbox.publish_error(names, report, f"{_iso(time.time())} {detail.reason}\n")
    return names
