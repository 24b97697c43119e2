"""`stylefold status` text: a pure function of the typed report, tested on constructed reports."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import time
from collections.abc import Callable

import pytest
from conftest import (
    CLI,
    REPO,
    Daemon,
    Folders,
    can_unshare_mounts,
    image_bytes,
    start_daemon,
    status_json,
    wait_for,
    write_json,
)

from daemon.cli.status import SHOWN, render_status
from daemon.config import load_settings
from daemon.fsutil import model_to_json
from daemon.job_id import new_job_id
from daemon.jobs.states import State
from daemon.jobs.store import Store
from daemon.lock import StateLock
from daemon.status import LISTED, RECENT, RESULTS, STALE_AFTER, blocked_why, listed, read_status
from daemon.status_model import (
    Attention,
    Counts,
    DaemonInfo,
    Finished,
    InboxItem,
    JobItem,
    ReloadInfo,
    StatusReport,
    WorkerItem,
    open_failures,
)
from daemon.status_reporter import waiting_actors
from daemon.supervision import host_attention, status_line
from daemon.web.page import health, queue_rows

NOW = 1_800_000_000.0


def busy_report() -> StatusReport:
    """One item in every section."""
    return StatusReport(
        daemon=DaemonInfo(
            running=True,
            pid=4242,
            version="9.8.7",
            updated_at=NOW - 2,
            watch_mode="inotify",
            paused="the inbox /mnt/share/inbox is not mounted",
            workers=[
                WorkerItem(worker=0, device="cuda:0", state="busy", pid=11),
                WorkerItem(worker=1, device="cuda:0", state="idle", pid=12),
                WorkerItem(worker=2, device="cpu", state="starting"),
            ],
        ),
        inbox=[
            InboxItem(path="in/settle.jpg", state="settling", since=NOW - 3, note="size changes"),
            InboxItem(path="in/arrive.jpg", state="arriving", since=NOW - 1, note="still written"),
            InboxItem(
                path="in/lonely.jpg",
                state="waiting",
                since=NOW - 120,
                note="waits for lonely.json",
                gives_up_in=240,
            ),
            InboxItem(
                path="in/ready.jpg",
                state="ready",
                since=NOW - 40,
                note="ready; waits for room in the queue (queue_max)",
            ),
        ],
        jobs=[
            JobItem(
                job_id="q",
                input="q/queued.jpg",
                state="queued",
                since=NOW - 30,
                starts=1,
                starts_in_seconds=240,
            ),
            JobItem(
                job_id="r",
                input="r/running.jpg",
                state="running",
                since=NOW - 60,
                device="cuda:0",
                percent=42.5,
                iteration=85,
                total=200,
                eta_seconds=150,
                preview="r/running.preview.jpg",
            ),
            JobItem(job_id="p", input="p/publishing.jpg", state="publishing", since=NOW - 4),
            JobItem(
                job_id="b",
                input="b/blocked.jpg",
                state="blocked",
                since=NOW - 10,
                reason="the outbox is full (ENOSPC)",
                retry_at=NOW + 50,
                blocked_on="outbox",
            ),
        ],
        recent=[
            Finished(job_id="d", input="d/done.jpg", outcome="done", at=NOW - 500),
            Finished(
                job_id="s",
                input="d/again.jpg",
                outcome="skipped",
                at=NOW - 120,
                output="d/again.stylised.jpg",
            ),
            Finished(
                job_id="f",
                input="f/failed.jpg",
                outcome="failed",
                at=NOW - 400,
                report="f/failed.error.json",
                reason="out of memory twice",
            ),
            Finished(
                job_id="x",
                input="x/rejected.jpg",
                outcome="rejected",
                at=NOW - 300,
                report="x/rejected.error.json",
                reason="unknown style 'starry'",
            ),
        ],
        attention=[
            Attention(
                what="a job folder could not be read and was moved aside",
                where="state/broken/20260101-x",
                fix="look at its job.json, then delete the folder",
            ),
            Attention(
                what="the Ray cluster at 10.0.0.2:6379 does not answer",
                where="[Errno 111] Connection refused",
                fix="jobs wait in the queue",
                since=NOW - 180,
            ),
        ],
        counts=Counts(done=7, failed=1, rejected=1),
    )


def sections(text: str) -> list[str]:
    return [line.split(":")[0] for line in text.splitlines() if not line.startswith(" ")]


def test_every_section_in_order() -> None:
    text = render_status(busy_report(), failures=10, now=NOW)
    assert sections(text) == [
        "daemon",
        "inbox",
        "workers",
        "finished",
        "settling",
        "still arriving",
        "waiting for their pair",
        "ready to be claimed",
        "queued",
        "running",
        "publishing",
        "blocked",
        "sent again, answered before",
        "recent failures",
        "needs attention",
    ]
    assert "\n  d/again.jpg  2 min ago; its answer d/again.stylised.jpg stands\n" in text
    first = text.splitlines()[0]
    assert first == (
        "daemon: running, pid 4242, stylefold 9.8.7, watching the inbox (inotify), reported 2 s ago"
    )
    assert "inbox: paused (the inbox /mnt/share/inbox is not mounted)" in text
    assert "workers: 2 on cuda:0 (1 busy, 1 idle); 1 on cpu (1 starting)" in text
    assert "finished: 7 done, 1 failed, 1 rejected" in text
    assert "in/lonely.jpg  waits for lonely.json (waiting 2 min, gives up in 4 min)" in text
    assert "q/queued.jpg  waiting 30 s; starts in about 4 min; started 1 time(s) before" in text
    assert "\n  in/ready.jpg  waits for room in the queue (queue_max), for 40 s\n" in text
    assert (
        "r/running.jpg  42.5% (85/200) on cuda:0, about 2 min left; preview r/running.preview.jpg"
        in text
    )
    assert "b/blocked.jpg  outbox unwritable: the outbox is full (ENOSPC); next try in 50 s" in text
    notes = {row.name: row.note for row in queue_rows(busy_report(), NOW)}  # and on the page
    assert notes["b/blocked.jpg"].startswith("outbox unwritable: the outbox is full (ENOSPC)")
    assert notes["q/queued.jpg"] == "for 30 s; starts in about 4 min; started 1 time(s) before"
    assert notes["in/ready.jpg"] == "ready; waits for room in the queue (queue_max)"
    # A report built from the database does not know what refused: it does not guess.
    [blocked] = busy_report().in_state(State.BLOCKED)
    unknown = blocked.model_copy(update={"blocked_on": None})
    assert blocked_why(unknown, NOW) == f"{blocked.reason}; next try in 50 s"
    # Since when, where it is known (deploy/README promises it for a Ray outage).
    assert (
        "the Ray cluster at 10.0.0.2:6379 does not answer ([Errno 111] Connection refused), "
        "for 3 min\n      fix: jobs wait in the queue" in text
    )
    assert "moved aside (state/broken/20260101-x)\n" in text  # no since: none shown
    assert re.search(
        r"x/rejected.jpg rejected: unknown style 'starry'; report x/rejected.error.json", text
    )
    # On a line of its own (a sync user's trial: a literal "\n" was shown before it).
    assert "\n      fix: look at its job.json, then delete the folder" in text
    assert "\\n" not in text


def test_nothing_is_dropped() -> None:
    report = busy_report()
    text = render_status(report, failures=10, now=NOW)
    paths = [item.path for item in report.inbox] + [job.input for job in report.jobs]
    paths += [end.input for end in report.recent if end.outcome != "done"]
    paths += [end.report for end in report.recent if end.report]
    paths += [item.where for item in report.attention if item.where]
    paths += [job.preview for job in report.jobs if job.preview]
    assert [path for path in paths if path not in text] == []


def test_a_job_state_without_a_section_of_its_own_still_shows() -> None:
    report = StatusReport(
        daemon=DaemonInfo(running=True, pid=1, version="1"),
        jobs=[JobItem(job_id="c", input="c/claiming.jpg", state=State.CLAIMING, since=NOW - 5)],
    )
    assert "claiming: 1\n  c/claiming.jpg  for 5 s" in render_status(report, failures=10, now=NOW)


def test_names_with_terminal_escapes_are_shown_not_obeyed() -> None:
    """Inbox names reach the terminal: ESC [ 2 J would clear it, a bidi override reorder a
    name (an attacker's trial). They print as escapes, as on the web page."""
    name = "e\x1b]0;PWNED\x07\x1b[2J\u202egpj.jpg"
    report = StatusReport(
        daemon=DaemonInfo(running=True, pid=1, version="1"),
        jobs=[JobItem(job_id="c", input=name, state="queued", since=NOW - 5)],
    )
    text = render_status(report, failures=10, now=NOW)
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert r"e\x1b]0;PWNED\x07\x1b[2J\u202egpj.jpg" in text


def test_an_idle_daemon_is_one_line() -> None:
    report = StatusReport(daemon=DaemonInfo(running=False, version="1.2"))
    assert render_status(report, failures=10, now=NOW) == "daemon: not running (stylefold 1.2)"


def test_a_stopping_daemon_says_so() -> None:
    report = StatusReport(daemon=DaemonInfo(running=True, pid=7, version="1.2", stopping=True))
    text = render_status(report, failures=10, now=NOW)
    assert text.startswith("daemon: stopping (finishing its running jobs), pid 7")
    cut = report.daemon.model_copy(update={"cuts_running_at": NOW - 1})  # an attacker's trial
    text = render_status(report.model_copy(update={"daemon": cut}), failures=10, now=NOW)
    assert text.startswith("daemon: stopping (cutting its running jobs short), pid 7")


def test_a_stop_that_cuts_a_running_job_says_when_not_its_estimate() -> None:
    """An administrator's trial: during a stop, "about 2 min left" showed for a job the grace
    period would cut within seconds. The CLI and the web page say the same."""
    busy = busy_report()
    daemon = busy.daemon.model_copy(update={"stopping": True, "cuts_running_at": NOW + 20})
    quick = busy.in_state(State.RUNNING)[0].model_copy(
        update={"job_id": "s", "input": "s/short.jpg", "eta_seconds": 5}
    )
    report = busy.model_copy(update={"daemon": daemon, "jobs": [*busy.jobs, quick]})
    text = render_status(report, failures=10, now=NOW)
    cut = "the stop cuts it in 20 s; it runs again at the next start"
    assert f"r/running.jpg  42.5% (85/200) on cuda:0, {cut}; preview" in text, text
    assert "s/short.jpg  42.5% (85/200) on cuda:0, about 5 s left" in text, text
    rows = {row.name: row.note for row in queue_rows(report, NOW)}
    assert rows["r/running.jpg"].endswith(f"on cuda:0, {cut}")
    assert rows["s/short.jpg"].endswith("on cuda:0, about 5 s left")


def test_status_line_leads_with_the_most_pressing() -> None:
    """An administrator's trial: "restart to apply metrics_port" led STATUS=, and the answers
    a full outbox refused came last, after the queue."""
    busy = busy_report()
    waiting = ReloadInfo(monotonic_usec=1, at=NOW - 60, needs_restart=["metrics_port"])
    report = busy.model_copy(update={"daemon": busy.daemon.model_copy(update={"reload": waiting})})
    assert status_line(report).split(", ")[:6] == [
        "1 blocked (outbox unwritable)",
        "inbox unavailable: the inbox /mnt/share/inbox is not mounted",
        "2 need attention (stylefold status): a job folder could not be read and was moved aside",
        "restart to apply metrics_port",
        "1 queued",
        "1 running",
    ]
    # and `status`'s "needs attention" in the same order (a re-test: the restart came first)
    assert [item.what.split(";")[0] for item in host_attention(report)] == [
        "1 answer(s) cannot be written to the outbox",
        "the reloaded configuration changes settings that only a restart applies",
    ]


def test_long_sections_say_what_they_left_out() -> None:
    jobs = [
        JobItem(job_id=str(n), input=f"q/{n:03}.jpg", state="queued", since=NOW)
        for n in range(SHOWN + 5)
    ]
    failures = [  # newest first, as `daemon.status.report` lists them
        Finished(job_id=str(n), input=f"f/{n:03}.jpg", outcome="failed", at=NOW - n, reason="x")
        for n in reversed(range(12))
    ]
    report = StatusReport(daemon=DaemonInfo(running=False, version="1"), jobs=jobs, recent=failures)
    text = render_status(report, failures=3, now=NOW)
    assert f"queued: {SHOWN + 5}" in text and f"q/{SHOWN - 1:03}.jpg" in text
    assert f"q/{SHOWN:03}.jpg" not in text and "... and 5 more" in text
    # The newest failures are the ones shown, oldest of them first, after a line counting the
    # others (a new user's trial: the oldest were shown, as "earlier" hid the newest).
    assert [f"f/{n:03}.jpg" in text for n in (8, 9, 10, 11)] == [False, True, True, True]
    assert text.index("f/009.jpg") < text.index("f/010.jpg") < text.index("f/011.jpg")
    assert "recent failures: 12\n  ... 9 earlier (--failures N shows more)\n" in text
    hidden = render_status(report, failures=0, now=NOW)
    assert hidden.endswith("recent failures: 12\n  ... 12 earlier (--failures N shows more)")


def test_a_long_queue_is_listed_in_part_and_counted_whole() -> None:
    """A bulk import's trial: 3,000 queued photos made status.json 1.2 MB, rewritten every 2 s
    while the queue drained. A running daemon's report lists the first LISTED queued jobs and
    inbox files; every count (the text, systemd's line) still holds them all."""
    running = JobItem(job_id="r", input="r.jpg", state="running", since=NOW, device="cpu")
    jobs = [running] + [
        JobItem(job_id=f"q{n}", input=f"q/{n:04}.jpg", state="queued", since=NOW)
        for n in range(LISTED + 50)
    ]
    inbox = [
        InboxItem(path=f"i/{n:04}.jpg", state=state, since=NOW, note="")
        for n, state in enumerate(["settling", "waiting"] * ((LISTED + 30) // 2))
    ]
    whole = StatusReport(daemon=DaemonInfo(running=True, version="1"), jobs=jobs, inbox=inbox)
    report = listed(whole)
    assert report.in_state(State.RUNNING) == [running]
    assert [job.job_id for job in report.in_state(State.QUEUED)] == [f"q{n}" for n in range(LISTED)]
    assert report.inbox == inbox[:LISTED]
    assert report.unlisted.queued == 50 and report.unlisted.inbox == {"settling": 15, "waiting": 15}
    text = render_status(report, failures=3, now=NOW)
    assert f"queued: {LISTED + 50}\n" in text
    assert f"  ... and {LISTED + 50 - SHOWN} more (stylefold status --json lists {LISTED})" in text
    assert f"settling: {(LISTED + 30) // 2}\n" in text
    assert status_line(report).startswith(f"{LISTED + 50} queued, 1 running")
    assert len(model_to_json(report)) < len(model_to_json(whole)) * 0.9
    assert listed(report) == report  # within the limits: unchanged
    # A state none of whose files made the list (an attacker's flood: "and 2064 more" of 2084).
    waiting = [
        InboxItem(path=f"w/{n}.jpg", state="waiting", since=NOW, note="") for n in range(LISTED)
    ]
    late = [InboxItem(path=f"s/{n}.jpg", state="settling", since=NOW, note="") for n in range(40)]
    flood = whole.model_copy(update={"jobs": [], "inbox": [*waiting, *late]})
    text = render_status(listed(flood), failures=3, now=NOW)
    assert "settling: 40\n  ... and 40 more (counted, not listed)\n" in text
    assert f"  ... and {LISTED - SHOWN} more (stylefold status --json lists {LISTED})" in text


def test_a_stopped_daemons_long_queue_is_listed_as_a_running_ones(folders: Folders) -> None:
    """A re-test's finding: with the daemon stopped, `status --json` listed all 1,100 queued
    jobs (537 KB) with nothing under `unlisted`, unlike the running daemon's report."""
    store = Store(folders.state)
    try:
        for index in range(LISTED + 5):
            store.create(f"job-{index:04}", State.CLAIMING, f"roll/IMG_{index:04}.jpg")
            store.move(f"job-{index:04}", State.QUEUED)
    finally:
        store.close()
    report = read_status(folders.state)
    assert not report.daemon.running
    assert len(report.in_state(State.QUEUED)) == LISTED and report.unlisted.queued == 5
    assert f"queued: {LISTED + 5}\n" in render_status(report, failures=0, now=NOW)


def test_a_failure_waiting_in_the_inbox_stays_listed_after_many_later_jobs(
    folders: Folders,
) -> None:
    """An operator's trial: after 50 good jobs, status and the web page said "no recent
    failures" while seven reported photos still waited in the inbox for their fix. A failure
    whose photo is remembered as still there stays listed; one whose photo went does not."""
    store = Store(folders.state)
    try:
        for job_id, photo in (("0-waits", "waits.jpg"), ("0-gone", "gone.jpg")):
            store.create(job_id, State.PUBLISHING, photo, outcome="report")
            store.move(job_id, State.REJECTED, reason="no sidecar", note=f"{photo}.error.json")
        store.remember("waits.jpg", [[10, 1]], "0-waits")
        for index in range(RECENT + 10):
            job_id = f"1-{index:03}"
            store.create(job_id, State.PUBLISHING, f"ok{index}.jpg", outcome="result")
            store.move(job_id, State.RELEASING)
            store.move(job_id, State.DONE)
    finally:
        store.close()
    report = read_status(folders.state)
    assert [end.input for end in open_failures(report.recent)] == ["waits.jpg"]
    shown = render_status(report, failures=10, now=NOW)
    assert "recent failures: 1" in shown and "waits.jpg" in shown and "gone.jpg" not in shown


def test_the_newest_results_stay_listed_after_a_burst_of_failures(folders: Folders) -> None:
    """A web page trial: 500 lone photos rejected pushed every result out of the latest ends,
    and the page's gallery of everyone's results was empty; then photos sent again (skipped,
    no result of their own) did the same. The newest RESULTS results stay listed, however
    many of either came after them."""
    store = Store(folders.state)
    try:
        for index in range(RESULTS + 3):
            job_id = f"0-{index:03}"
            store.create(job_id, State.PUBLISHING, f"ok{index}.jpg", outcome="result")
            store.move(job_id, State.RELEASING)
            store.move(job_id, State.DONE)
        for index in range(RESULTS + 6):  # sent again: no result of their own (a web trial)
            job_id = f"1-{index:03}"
            store.create(job_id, State.PUBLISHING, f"ok{index}.jpg", outcome="skip")
            store.move(job_id, State.RELEASING)
            store.move(job_id, State.SKIPPED)
        for index in range(RECENT + 10):
            job_id = f"2-{index:03}"
            store.create(job_id, State.PUBLISHING, f"lone{index}.jpg", outcome="report")
            store.move(job_id, State.REJECTED, reason="no sidecar", note=f"lone{index}.error.json")
    finally:
        store.close()
    recent = read_status(folders.state).recent
    results = [end.input for end in recent if end.outcome == "done"]
    assert results == [f"ok{index}.jpg" for index in reversed(range(3, RESULTS + 3))]
    assert sum(end.outcome == "rejected" for end in recent) == RECENT


def test_a_failure_is_not_hidden_by_a_job_of_its_name_claimed_before_it(folders: Folders) -> None:
    """An attacker's trial (archive = "keep"): a kept photo replaced by a link while its job
    waited; the link's report was hidden from status once that job, claimed before it, was
    done, though the link still waits in the inbox. A job claimed after a failure answers it."""
    claimed, report = new_job_id(), new_job_id()
    store = Store(folders.state)
    try:
        store.create(claimed, State.CLAIMING, "m.jpg")
        store.move(claimed, State.QUEUED)
        store.create(report, State.PUBLISHING, "m.jpg", outcome="report")
        store.move(report, State.REJECTED, reason="a link", note="m.error-2.json")
        store.remember("m.jpg", [[10, 1, 7]], report)
        store.move(claimed, State.RUNNING)
        store.move(claimed, State.PUBLISHING, outcome="result")
        store.move(claimed, State.RELEASING)
        store.move(claimed, State.DONE)
        assert [end.job_id for end in open_failures(read_status(folders.state).recent)] == [report]
        store.create(new_job_id(), State.CLAIMING, "m.jpg")  # claimed after it: the fix
        # A lone sidecar's later report does not answer a photo's failure (an attacker's
        # trial: the report on both.json, unused beside both.jpg and both.jpg.json, hid
        # both.jpg's), but a later report on the same sidecar answers its earlier one.
        for input in ["both.jpg", "both.json", "lone.json", "lone.json"]:
            job_id = new_job_id()  # made when it is claimed: after the one before ended
            store.create(job_id, State.PUBLISHING, input, outcome="report")
            store.move(job_id, State.REJECTED, reason="a problem", note="x.error.json")
    finally:
        store.close()
    failures = open_failures(read_status(folders.state).recent)
    assert sorted(end.input for end in failures) == ["both.jpg", "both.json", "lone.json"]


def test_a_running_daemon_s_report_that_is_not_rewritten_any_more_is_flagged(
    folders: Folders,
) -> None:
    """An operator's trial: with the state folder made immutable, the daemon took no photo and
    could not rewrite its report, and `status` showed the last one, minutes old, as all well."""
    with StateLock(folders.state):  # a daemon holds the state: this process
        for age, flagged in ((5.0, False), (STALE_AFTER + 60, True)):
            written = StatusReport(
                daemon=DaemonInfo(
                    running=True, pid=os.getpid(), version="x", updated_at=time.time() - age
                )
            )
            (folders.state / "status.json").write_bytes(model_to_json(written).encode())
            report = read_status(folders.state)
            stale = [a for a in report.attention if "has not rewritten this report" in a.what]
            assert bool(stale) == flagged, report.attention
    assert "stylefold doctor" in stale[0].fix
    assert "needs attention" in render_status(report, failures=0)


def test_status_of_a_running_daemon(
    folders: Folders, daemon_factory: Callable[..., Daemon]
) -> None:
    """The command end to end: the running daemon's report, as text and as JSON."""
    (folders.inbox / "slow.jpg").write_bytes(image_bytes(seed=3))
    write_json(folders.inbox / "slow.json", {"style": "mosaic", "params": {"iterations": 2000}})
    daemon = daemon_factory()

    running = wait_for(
        lambda: status_json(folders).in_state("running"), what="a running job in status"
    )
    assert [job.input for job in running] == ["slow.jpg"]
    assert status_json(folders).daemon.pid == daemon.process.pid
    text = subprocess.run(
        [*CLI, "status", "--config", str(folders.config())],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert text.startswith(f"daemon: running, pid {daemon.process.pid}, stylefold ")
    assert "\nrunning: 1\n  slow.jpg  " in text and " on cpu" in text
    assert daemon.stop() == 0


def test_a_daemon_waiting_for_its_ray_cluster_says_so(folders: Folders) -> None:
    """A Ray operator's trial: a daemon waiting at start for its cluster showed as running,
    with nothing of what it waited for (and systemd's status said "loading the network")."""
    pytest.importorskip("ray", reason="the ray extra is not installed")
    with socket.socket() as sock:  # a port where nothing answers (yet)
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    config = folders.config(backend="ray", ray_address=address, ray_connect_timeout=120)
    daemon = start_daemon(folders, config=config, ready=False)

    def shown() -> str:
        return subprocess.run(
            [*CLI, "status", "--config", str(config)], cwd=REPO, capture_output=True, text=True
        ).stdout

    waiting = (
        f"daemon: starting (connecting to the Ray cluster at {address} (ray_connect_timeout "
        f"120 s) and loading the network on its actors), pid {daemon.process.pid}, stylefold "
    )
    try:
        wait_for(lambda: shown().startswith(waiting), 30, "status to say what it waits for")
        page = health(read_status(folders.state), load_settings(config, {}), time.time())
        assert page.state.startswith(f"starting (connecting to the Ray cluster at {address} ")
    finally:
        assert daemon.stop() == 0  # a stop while starting
    assert shown().startswith("daemon: not running")


def test_queued_jobs_say_when_they_start_once_the_daemon_knows_its_pace(
    folders: Folders, daemon_factory: Callable[..., Daemon]
) -> None:
    """No queued job said when it would start: with one worker and a long render ahead, a
    photo's sender saw only "waiting 3 min". After a first render the daemon knows its pace."""
    daemon = daemon_factory(config=folders.config(grace_period=1.0))

    (folders.inbox / "first.jpg").write_bytes(image_bytes(seed=1))
    write_json(folders.inbox / "first.json", {"style": "mosaic", "params": {"iterations": 4}})
    daemon.wait_for_log("job.done")
    (folders.inbox / "slow.jpg").write_bytes(image_bytes(seed=2))
    write_json(folders.inbox / "slow.json", {"style": "mosaic", "params": {"iterations": 2000}})
    wait_for(lambda: status_json(folders).in_state("running"), what="the long render running")
    for seed, (name, size) in enumerate((("small", 32), ("large", 64)), start=3):
        (folders.inbox / f"{name}.jpg").write_bytes(image_bytes(seed=seed))
        params = {"iterations": 50, "size": size}
        write_json(folders.inbox / f"{name}.json", {"style": "mosaic", "params": params})

    def estimated() -> StatusReport | None:
        seen = status_json(folders)
        queued = seen.in_state("queued")
        running = seen.in_state("running")
        ready = len(queued) == 2 and running and running[0].eta_seconds is not None
        return seen if ready and all(job.starts_in_seconds for job in queued) else None

    seen = wait_for(estimated, what="both queued jobs with a start estimate")
    [slow] = seen.in_state("running")
    queued = seen.in_state("queued")  # in the order the pool takes them
    first, second = (job.starts_in_seconds or 0.0 for job in queued)
    assert slow.eta_seconds is not None
    assert first == pytest.approx(slow.eta_seconds, abs=0.5)  # when the worker is free
    assert second > first  # then after the first one's own estimated time
    text = render_status(seen, failures=0, now=seen.daemon.updated_at or 0.0)
    assert re.search(rf"{queued[0].input}  waiting \d+ s; starts in about \d", text), text
    assert daemon.stop() == 0


@pytest.mark.skipif(not can_unshare_mounts(), reason="needs root and unshare(1) for a mount")
@pytest.mark.parametrize("command", ["status", "validate", "doctor"])
def test_read_only_commands_work_on_a_read_only_view_of_the_folders(
    folders: Folders, command: str
) -> None:
    """An admin, or a unit with ReadOnlyPaths=, may see the outbox and state read-only: the
    commands that only read must still work (doctor then says what is not writable)."""
    config = folders.config()
    (folders.outbox / "seen.txt").write_text("")
    binds = " && ".join(
        f"mount --bind {shlex.quote(str(p))} {shlex.quote(str(p))} && "
        f"mount -o remount,bind,ro {shlex.quote(str(p))}"
        for p in (folders.outbox, folders.state)
    )
    sidecar = folders.root / "photo.json"
    write_json(sidecar, {"style": "mosaic"})
    extra = [str(sidecar)] if command == "validate" else []
    cli = shlex.join([*CLI, command, "--config", str(config), *extra])
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", f"{binds} && {cli}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert "not a writable folder" not in output or command == "doctor", output
    if command == "doctor":
        assert "outbox" in output and "not a writable folder" in output, output
    else:
        assert done.returncode == 0, output


def test_an_unreadable_state_database_is_reported_not_raised(folders: Folders) -> None:
    """status (and the web page, through the same read_status) answers with what is wrong."""
    (folders.state / "stylefold.db").write_bytes(b"not a database, " * 512)
    done = subprocess.run(
        [*CLI, "status", "--state", str(folders.state)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "the state database is damaged" in done.stdout, done.stdout
    assert "restore stylefold.db from a backup" in done.stdout, done.stdout
    assert "Traceback" not in done.stderr


def test_ray_actors_waiting_long_for_room_on_the_cluster_need_attention() -> None:
    """A Ray operator's trial: with a node's raylet killed, status showed "1 starting" for as
    long as it lasted, and nothing needing attention, while `ray status` listed the demand."""
    now = 10_000.0
    workers = [
        WorkerItem(worker=0, device="cpu", state="idle", node="head", started_at=now - 900),
        WorkerItem(worker=1, device="cpu", state="starting", started_at=now - 300),
        WorkerItem(worker=2, device="cpu", state="starting", started_at=now - 30),
    ]
    item = waiting_actors(workers, now)
    assert item is not None and item.what.startswith("1 render actor(s) have waited over 120 s")
    assert item.since == now - 300 and "ray status" in item.fix and "node gone" in item.where
    assert waiting_actors(workers[:1] + workers[2:], now) is None  # starting, but not for long
