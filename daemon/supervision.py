"""What systemd and the admin are told about the daemon's health, apart from the jobs: the
STATUS= line, the attention items of a GPU it cannot use, a configuration it could not reload,
an outbox that takes no answers or a state folder that records none, and the exit code of a
failed start."""

from __future__ import annotations

from daemon.exitcodes import ExitCode
from daemon.gpu_probe import GPU_FIX
from daemon.intake.watcher import WatchError
from daemon.jobs.answers import BLOCKED_FIX, BLOCKED_ON
from daemon.jobs.states import State
from daemon.jobs.store import DamagedStateError, NewerStateError, ReadOnlyStateError
from daemon.metrics import MetricsError
from daemon.pool.api import ClusterUnavailable, SetupError
from daemon.status import RESTART_FIX
from daemon.status_model import Attention, BlockedOn, JobItem, StatusReport

# Start-up failures that a restart cannot mend: their messages name the setting to change.
_START_FAILURES: dict[type[Exception], ExitCode] = {
    WatchError: ExitCode.CONFIG,
    MetricsError: ExitCode.CONFIG,
    SetupError: ExitCode.CONFIG,
    ClusterUnavailable: ExitCode.TEMPFAIL,  # systemd restarts and the cluster may be back
    NewerStateError: ExitCode.CONFIG,  # a state folder of a newer version: not restarted
    ReadOnlyStateError: ExitCode.CONFIG,  # its owner must be mended first
    DamagedStateError: ExitCode.CONFIG,  # restored or moved aside first (an operator's trial)
}


def exit_code_for(exc: Exception) -> ExitCode:
    """The exit code of a start that failed with `exc`."""
    return _START_FAILURES.get(type(exc), ExitCode.FAILURE)


def status_line(report: StatusReport) -> str:
    """The one line systemd shows (STATUS=): what needs an admin first, the most pressing
    first (an administrator's trial: "restart to apply metrics_port" led a line whose 77
    answers the full outbox refused came last), then the queue."""
    reload = report.daemon.reload
    parts = []
    if reload is not None and reload.error:
        parts.append("reload failed, the previous config still runs (see stylefold status)")
    for on, jobs in _blocked(report).items():
        parts.append(f"{len(jobs)} blocked ({BLOCKED_ON[on]})")
    if report.daemon.paused:
        parts.append(f"inbox unavailable: {report.daemon.paused}")
    if report.daemon.gpu_fallback:
        parts.append("ON THE CPU: the GPU is unusable (see stylefold status)")
    told = host_attention(report)  # each of these has its own words in the line
    if others := [item for item in report.attention if item not in told]:
        parts.append(f"{len(others)} need attention (stylefold status): {others[0].what}")
    if reload is not None and reload.needs_restart:
        parts.append(f"restart to apply {', '.join(reload.needs_restart)}")
    queued = len(report.in_state(State.QUEUED)) + report.unlisted.queued
    running = report.in_state(State.RUNNING)
    parts += [f"{queued} queued", f"{len(running)} running"]
    parts += [f"{job.input} {job.percent or 0:g}% on {job.device}" for job in running]
    return ", ".join(parts)


def host_attention(report: StatusReport) -> list[Attention]:
    """What the running daemon itself needs an admin for, the most pressing first, as STATUS=
    orders it: a configuration it could not reload, answers nothing takes, a GPU it cannot use,
    settings waiting for a restart."""
    items = []
    daemon = report.daemon
    reload = daemon.reload
    if reload is not None and reload.error:
        items.append(
            Attention(
                what="the configuration could not be reloaded; the previous one still runs",
                where=reload.error,
                since=reload.at,
                fix="correct the file, then reload again: `stylefold reload --config FILE` "
                "(`systemctl reload stylefold` for the service, or SIGHUP)",
            )
        )
    for on, jobs in _blocked(report).items():
        items.append(
            Attention(
                what=_BLOCKED[on].format(count=len(jobs)),
                where=jobs[0].reason,
                since=min(job.since for job in jobs),
                fix=BLOCKED_FIX[on],
            )
        )
    if daemon.gpu_fallback:
        items.append(
            Attention(what="a GPU host runs on the CPU", where=daemon.gpu_fallback, fix=GPU_FIX)
        )
    if reload is not None and reload.needs_restart:
        items.append(
            Attention(
                what="the reloaded configuration changes settings that only a restart applies; "
                "they keep their running values until then",
                where=", ".join(reload.needs_restart),
                since=reload.waiting_since or reload.at,
                fix=RESTART_FIX,
            )
        )
    return items


# Per folder that refused: the attention item's words.
_BLOCKED: dict[BlockedOn, str] = {
    "outbox": "{count} answer(s) cannot be written to the outbox",
    "state": "the state folder is full or unwritable: {count} answered job(s) cannot be recorded",
    "originals": "{count} job(s) cannot move their originals to the archive or back to the inbox",
}


def _blocked(report: StatusReport) -> dict[BlockedOn, list[JobItem]]:
    """Blocked jobs by the folder they wait for, in `_BLOCKED`'s order; with them, the jobs
    whose originals could not go back to the inbox (RETURNING, `blocked_on` set)."""
    returning = [job for job in report.in_state(State.RETURNING) if job.blocked_on]
    blocked = report.in_state(State.BLOCKED) + returning
    by_folder = {on: [job for job in blocked if job.waits_for == on] for on in _BLOCKED}
    return {on: jobs for on, jobs in by_folder.items() if jobs}
