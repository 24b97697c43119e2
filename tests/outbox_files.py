"""Whole answers for tests that publish one without running a job (the models refuse parts)."""

from __future__ import annotations

from daemon.jobs.error_report import ErrorReport
from daemon.jobs.manifest import InputInfo, Manifest, OutputInfo, StyleEntry, Timings, Versions
from service.params import RenderParams

SHA = "0" * 64


def a_manifest(job_id: str) -> Manifest:
    return Manifest(
        job_id=job_id,
        input=InputInfo(path="old/photo.jpg", sha256=SHA, format="JPEG", size=(64, 48)),
        sidecar=None,
        styles=[StyleEntry(name="mosaic", weight=1.0, sha256=SHA)],
        params=RenderParams(),
        output=OutputInfo(file="photo.stylised.jpg", format="jpg", quality=92, size=(48, 36),
                          sha256=SHA),
        device="cpu", attempt=1, iterations=4, stop_reason="iterations", losses={},
        scales=[(48, 36)], peak_memory_bytes=1, batch_size=1,
        timings=Timings(decode_seconds=0, render_seconds=1, encode_seconds=0,
                        worker_total_seconds=1, queued_seconds=0, total_seconds=1),
        versions=Versions(stylefold="0", python="3", torch="2", pillow="11"),
        claimed_at="2026-01-01T00:00:00+0000", finished_at="2026-01-01T00:00:01+0000",
    )  # fmt: skip


def a_report(
    error: str = "what was wrong and the fix", job_id: str = "j", input: str = "photo.jpg"
) -> ErrorReport:
    return ErrorReport(
        error=error,
        job_id=job_id,
        input=input,
        sidecar=None,
        original="left in the inbox, unchanged",
        at="2026-01-01T00:00:00+0000",
    )
