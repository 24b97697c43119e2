"""`stylefold status`: the daemon's one typed report (`daemon.status.StatusReport`), for people
or, with --json, for scripts.

The text is a pure function of the report, so what people read and what scripts parse can
never disagree; each non-empty group gets a section, and a long one says how many it left out.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from daemon.cli.common import (
    config_named,
    fail,
    fail_config,
    folder_flags,
    number_flag,
    read_settings,
    state_folder,
    subcommand,
)
from daemon.config import ConfigError
from daemon.fsutil import model_to_json
from daemon.jobs.states import State
from daemon.status import blocked_why, duration, read_status, time_left, waited
from daemon.status_model import (
    Attention,
    DaemonInfo,
    Finished,
    InboxItem,
    JobItem,
    StatusReport,
    open_failures,
)
from daemon.visible import visible

SHOWN = 20  # lines per section; --json lists more (daemon.status.LISTED)
INBOX_SECTIONS = (
    ("settling", "settling"),
    ("arriving", "still arriving"),
    ("waiting", "waiting for their pair"),
    ("ready", "ready to be claimed"),
)
JOB_SECTIONS = (State.QUEUED, State.RUNNING, State.PUBLISHING, State.BLOCKED)

Item = TypeVar("Item")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommand(
        subparsers, "status", "queue, running jobs and recent failures (reads the state folder)"
    )
    folder_flags(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--failures",
        type=number_flag(int),
        default=10,
        metavar="N",
        help="how many recent failures to show",
    )
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    try:
        state = _state_dir(args)
    except ConfigError as exc:
        return fail_config(f"{exc}\n(or give the state folder: stylefold status --state DIR)")
    if not state.is_dir():
        return fail(
            f"the state folder {state} does not exist: no daemon has run with it yet (start "
            "one: stylefold run), or the configuration names another"
        )
    report = read_status(state)
    if args.json:
        print(model_to_json(report, indent=2))
    else:
        print(render_status(report, failures=args.failures))
    return 0


def _state_dir(args: argparse.Namespace) -> Path:
    """The config's state folder; while the config is broken, the one it names (or --state):
    `status` only reads the state folder, so it must work while someone fixes the file, and
    says on stderr that it is broken (an operator's trial: a stopped daemon's status showed
    nothing of it)."""
    try:
        return read_settings(args).state
    except ConfigError as exc:
        if (state := state_folder(args)) is None:
            raise
        if config_named(args):  # `--state` alone names no config to be broken
            first, given = str(exc).splitlines()[0], "given" if args.state else "it names"
            print(
                f"stylefold: note: the configuration cannot be used ({first}); status reads "
                f"the state folder {given}; `stylefold doctor` says what to fix",
                file=sys.stderr,
            )
        return state


# -- the text ---------------------------------------------------------------------------------


def render_status(report: StatusReport, *, failures: int, now: float | None = None) -> str:
    """The report for people: the daemon, then the inbox, the jobs by state, recent failures
    (the newest `failures`) and what needs an admin. `now` fixes the clock for tests."""
    now = time.time() if now is None else now
    lines = _daemon_lines(report.daemon, now)
    if any(report.counts.model_dump().values()):
        lines.append(f"finished: {report.counts.described()}")
    for state, heading in INBOX_SECTIONS:
        items = [item for item in report.inbox if item.state == state]
        more = report.unlisted.inbox.get(state, 0)
        _section(lines, heading, items, lambda item: _inbox_line(item, now), more)
    for state in dict.fromkeys([*JOB_SECTIONS, *(job.state for job in report.jobs)]):
        more = report.unlisted_jobs(state)
        line = functools.partial(_job_line, daemon=report.daemon, now=now)
        _section(lines, state, report.in_state(state), line, more)
    # A photo sent again leaves the inbox with nothing new in the outbox (a photographer's
    # trial: "1 skipped", with no name, was its only trace).
    again = [end for end in report.recent if end.outcome == "skipped"]
    _section(lines, "sent again, answered before", again, lambda end: _again_line(end, now))
    _failures(lines, open_failures(report.recent), failures)
    _section(lines, "needs attention", report.attention, lambda item: _attention_line(item, now))
    return "\n".join(visible(line) for line in lines)  # names from the inbox, escapes shown


def _section(
    lines: list[str],
    heading: str,
    items: Sequence[Item],
    line: Callable[[Item], str | list[str]],
    unlisted: int = 0,
) -> None:
    """`heading: count`, then each item's line (or lines), indented; `unlisted` more are
    counted by the report, not listed in it."""
    if not items and not unlisted:
        return
    lines.append(f"{heading}: {len(items) + unlisted}")
    for item in items[:SHOWN]:
        shown = line(item)
        lines += [f"  {text}" for text in ([shown] if isinstance(shown, str) else shown)]
    # What was not shown (an attacker's flood: "and 2064 more" of 2084 when none was shown).
    if more := len(items) + unlisted - min(len(items), SHOWN):
        where = f"stylefold status --json lists {len(items)}" if items else "counted, not listed"
        lines.append(f"  ... and {more} more ({where})")


def _failures(lines: list[str], failed: list[Finished], limit: int) -> None:
    """The newest `limit` of `failed` (newest first), shown oldest first, after a line
    counting the ones left out."""
    if not failed:
        return
    shown = failed[:limit][::-1] if limit > 0 else []
    lines.append(f"recent failures: {len(failed)}")
    if len(failed) > len(shown):
        lines.append(f"  ... {len(failed) - len(shown)} earlier (--failures N shows more)")
    lines += [f"  {_failure_line(end)}" for end in shown]


def _daemon_lines(daemon: DaemonInfo, now: float) -> list[str]:
    if not daemon.running:
        return [f"daemon: not running (stylefold {daemon.version})"]
    doing = "running"
    if daemon.stopping:  # past the grace period, or at a second signal, the jobs are cut
        cut = daemon.cuts_running_at is not None and daemon.cuts_running_at <= now
        how = "cutting its running jobs short" if cut else "finishing its running jobs"
        doing = f"stopping ({how})"
    if daemon.starting:
        doing = f"starting ({daemon.starting})"
    parts = [f"daemon: {doing}, pid {daemon.pid}" if daemon.pid else "daemon: starting"]
    parts.append(f"stylefold {daemon.version}")
    if daemon.watch_mode:
        why = f": {daemon.watch_reason}" if daemon.watch_reason else ""
        parts.append(f"watching the inbox ({daemon.watch_mode}{why})")
    if daemon.updated_at is not None:
        parts.append(f"reported {duration(now - daemon.updated_at)} ago")
    lines = [", ".join(parts)]
    if daemon.paused:
        lines.append(f"inbox: paused ({daemon.paused}); nothing new is taken until it is back")
    lines += _worker_lines(daemon)
    return lines


def _worker_lines(daemon: DaemonInfo) -> list[str]:
    backend = f" ({daemon.backend})" if daemon.backend else ""
    if not daemon.workers:
        return [f"devices{backend}: {', '.join(daemon.devices)}"] if daemon.devices else []
    by_device: dict[str, dict[str, int]] = {}
    for worker in daemon.workers:
        where = f"{worker.device} on {worker.node}" if worker.node else worker.device
        states = by_device.setdefault(where, {})
        states[worker.state] = states.get(worker.state, 0) + 1
    groups = [
        f"{sum(states.values())} on {where} ({', '.join(f'{n} {s}' for s, n in states.items())})"
        for where, states in by_device.items()
    ]
    return [f"workers{backend}: {'; '.join(groups)}"]


def _inbox_line(item: InboxItem, now: float) -> str:
    if item.state == "waiting":
        text = f"{item.path}  {item.note} (waiting {duration(now - item.since)}"
        if item.gives_up_in is not None:
            text += f", gives up in {duration(item.gives_up_in)}"
        return text + ")"
    if item.state == "ready":  # the heading says ready
        return f"{item.path}  {item.note.removeprefix('ready; ')}, for {duration(now - item.since)}"
    return f"{item.path}  {item.note} (last change {duration(now - item.since)} ago)"


def _job_line(job: JobItem, daemon: DaemonInfo, now: float) -> str:
    if job.state is State.RUNNING:
        done = f"{job.percent:g}%" if job.percent is not None else "starting"
        if job.iteration is not None and job.total is not None:
            done += f" ({job.iteration}/{job.total})"
        where = f" on {job.device}" if job.device else ""
        where += f" ({job.node})" if job.node else ""
        text = f"{job.input}  {done}{where}"
        if (left := time_left(job, daemon, now)) is not None:
            text += f", {left}"
        return text + (f"; preview {job.preview}" if job.preview else "")
    if job.state is State.BLOCKED:
        return f"{job.input}  {blocked_why(job, now)}"
    waiting = "waiting" if job.state is State.QUEUED else "for"
    return f"{job.input}  {waiting} {waited(job, now)}"


def _again_line(end: Finished, now: float) -> str:
    answer = f"; its answer {end.output} stands" if end.output else ""
    return f"{end.input}  {duration(max(0.0, now - end.at))} ago{answer}"


def _failure_line(end: Finished) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(end.at))
    text = f"{when}  {end.input} {end.outcome}: {end.reason or 'no reason recorded'}"
    return text + (f"; report {end.report}" if end.report else "")


def _attention_line(item: Attention, now: float) -> list[str]:
    where = f" ({item.where})" if item.where else ""
    since = "" if item.since is None else f", for {duration(max(0.0, now - item.since))}"
    return [f"{item.what}{where}{since}", f"    fix: {item.fix}"]
