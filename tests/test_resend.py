"""One answer per photo: re-sent photos are skipped (daemon.jobs.resend), names do not drift
(a stale error report of the same photo is replaced, not numbered past), and a photo written on
after its claim is given back instead of answered from half of each version. The lifecycle runs on
real files and the state database; renders are finished by hand (no worker is started)."""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import Folders, image_bytes, mount_tmpfs, write_json
from structlog.testing import capture_logs

from daemon.config import load_settings
from daemon.intake.pairing import Arrival, Problem
from daemon.intake.styles import StyleLibrary
from daemon.jobs import answers, handover, outbox
from daemon.jobs.answers import ResultDetail, ResultLost, ReuseDetail
from daemon.jobs.lifecycle import Lifecycle
from daemon.jobs.record import Job
from daemon.jobs.spool import ClaimIntent
from daemon.jobs.states import State
from daemon.jobs.store import DB_FILE, KEEP_FINISHED, Answer, Store
from daemon.metrics import Metrics
from daemon.pool import make_pool
from daemon.pool.events import Done, Failed, ResultInfo
from daemon.status import from_store
from daemon.status_model import DaemonInfo, open_failures
from daemon.supervision import host_attention, status_line
from daemon.web.records import OutboxFile, Outputs

SIDECAR = {"style": "mosaic"}
RESULT_SET = ["photo.log", "photo.manifest.json", "photo.stylised.jpg"]


def _lifecycle(folders: Folders, metrics: Metrics | None = None, **settings: Any) -> Lifecycle:
    config = load_settings(folders.config(**settings), {})
    return Lifecycle(
        config,
        Store(config.state),
        make_pool(config),
        StyleLibrary.from_settings(config),
        metrics or Metrics.disabled(),
        1.0,
    )


def _send(folders: Folders, name: str = "photo.jpg", sidecar: object = SIDECAR) -> Arrival:
    """What a sync tool delivers: the same bytes every time for the same name."""
    image = folders.inbox / name
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(image_bytes(seed=5))
    side = write_json(image.with_suffix(".json"), sidecar) if sidecar is not None else None
    return Arrival(image, side, image.parent.relative_to(folders.inbox))


def _take(lc: Lifecycle, arrival: Arrival) -> str | None:
    """Claim a pair; the new job's id while it waits for its render, else None."""
    before = set(lc.jobs)
    lc.claim(arrival)
    new = set(lc.jobs) - before
    return new.pop() if new else None


def _render(lc: Lifecycle, job_id: str) -> None:
    """What a worker reports after writing its result into the spool."""
    job = lc.jobs[job_id]
    (lc.spool.job_dir(job) / "result.jpg").write_bytes(image_bytes(seed=99))
    lc.handle(Done(job_id, _info(job)))


def _info(job: Job) -> ResultInfo:
    return ResultInfo(
        iterations=4, stop_reason="iterations", losses={}, scales=[(48, 36)], device="cpu",
        output_size=(48, 36), input_size=(64, 48), input_format="JPEG", peak_memory_bytes=0,
        params=job.params, versions={"torch": "2", "pillow": "11"},
        timings={"decode_seconds": 0.1, "render_seconds": 1.0, "encode_seconds": 0.1,
                 "worker_total_seconds": 1.2},
    )  # fmt: skip


def _outbox(folders: Folders, sub: str = "") -> list[str]:
    return sorted(p.name for p in (folders.outbox / sub).iterdir())


def _end(lc: Lifecycle, job_id: str) -> State:
    row = lc.store.get(job_id)
    assert row is not None
    return row.state


def _last_end(lc: Lifecycle) -> State:
    return lc.store.finished(1)[0].state


def test_a_photo_sent_again_is_skipped_and_its_copies_go(folders: Folders) -> None:
    lc = _lifecycle(folders)
    first = _take(lc, _send(folders))
    assert first is not None
    _render(lc, first)
    assert _end(lc, first) is State.DONE and _outbox(folders) == RESULT_SET
    archived = sorted(p.name for p in lc.settings.archive_path.iterdir())
    for _again in range(3):  # a timer's rsync, `rclone sync`, Syncthing's Revert...
        assert _take(lc, _send(folders)) is None
        assert _last_end(lc) is State.SKIPPED
    assert _outbox(folders) == RESULT_SET
    assert list(folders.inbox.iterdir()) == []
    # The archive already held byte-identical copies: no photo.returned-N.jpg pile-up.
    assert sorted(p.name for p in lc.settings.archive_path.iterdir()) == archived
    # Nor for a sidecar that says the same in other bytes (a new user's trial).
    arrival = _send(folders)
    (folders.inbox / "photo.json").write_text(" " + json.dumps(SIDECAR, indent=4) + "\n\n")
    assert _take(lc, arrival) is None and _last_end(lc) is State.SKIPPED
    assert sorted(p.name for p in lc.settings.archive_path.iterdir()) == archived
    report = from_store(lc.store, DaemonInfo(running=False, version="x"))
    assert report.counts.skipped == 4 and report.counts.done == 1
    assert report.recent[0].outcome == "skipped" and report.recent[0].output == "photo.stylised.jpg"


def test_a_photo_sent_again_after_the_defaults_changed_is_still_skipped(folders: Folders) -> None:
    """An operator's trial: after an upgrade whose defaults differ (`init`), every archived
    original a sync tool restored got a second answer; the parameters a pair resolves to are
    not what makes it a re-send. A row an earlier version recorded (by job key) still counts."""
    first = _lifecycle(folders)
    job_id = _take(first, _send(folders))
    assert job_id is not None
    _render(first, job_id)
    first.store.close()
    again = _lifecycle(folders, defaults={"iterations": 7, "init": "content"})
    assert _take(again, _send(folders)) is None and _last_end(again) is State.SKIPPED
    assert _outbox(folders) == RESULT_SET

    row = again.store.get(job_id)
    assert row is not None and row.job is not None
    again.store.close()
    with sqlite3.connect(folders.state / DB_FILE) as db:  # as an earlier version recorded it
        db.execute("UPDATE answered_inputs SET key = ? WHERE job_id = ?", (row.job.key, job_id))
    earlier = _lifecycle(folders)  # its defaults: the job key matches
    assert _take(earlier, _send(folders)) is None and _last_end(earlier) is State.SKIPPED
    assert _outbox(folders) == RESULT_SET


@pytest.mark.parametrize("archive", ["keep", "move"])
def test_a_photo_sent_again_that_its_new_settings_refuse_is_still_skipped(
    folders: Folders, archive: str
) -> None:
    """An operator's trial: a photo answered in the default style (sidecar `{}`), rewritten by
    a sync tool after a reload had removed default_style, got a second answer, a report that
    its sidecar names no style. The answer stands: it is a re-send, whatever it resolves to
    now; the pair is left answered where it lies."""
    first = _lifecycle(folders, archive=archive, default_style="mosaic")
    job_id = _take(first, _send(folders, sidecar={}))
    assert job_id is not None
    _render(first, job_id)
    first.store.close()
    again = _lifecycle(folders, archive=archive)
    arrival = _send(folders, sidecar={})  # rewritten: a new mtime
    with capture_logs() as logs:
        assert _take(again, arrival) is None
    assert _outbox(folders) == RESULT_SET
    assert [log["answered_by"] for log in logs if log["event"] == "job.resent_refused"] == [job_id]
    assert again.spool.in_place.already_handled([arrival.image, arrival.sidecar])
    # Another sidecar is another request: refused, with its report.
    write_json(folders.inbox / "photo.json", {"style": "nope"})
    assert _take(again, arrival) is None
    assert "photo.error-2.json" in _outbox(folders)


def test_with_archive_keep_a_resent_copy_stays_in_the_inbox_remembered(folders: Folders) -> None:
    lc = _lifecycle(folders, archive="keep")
    first = _take(lc, _send(folders))
    assert first is not None
    _render(lc, first)
    arrival = _send(folders)  # rewritten by the tool (rsync -I, a new mtime)
    assert _take(lc, arrival) is None and _last_end(lc) is State.SKIPPED
    assert arrival.image.exists() and lc.spool.in_place.already_handled(
        [arrival.image, arrival.sidecar]
    )
    assert _outbox(folders) == RESULT_SET


def test_a_start_on_an_inbox_share_not_yet_mounted_keeps_what_was_answered(
    folders: Folders,
) -> None:
    """An operator's trial: started while the inbox share was not mounted (an empty mount
    point), the daemon forgot every answered original it keeps in the inbox; once the share
    came back all were taken again, and a result the user had deleted was rendered again."""
    lc = _lifecycle(folders, archive="keep")
    job_id = _take(lc, _send(folders))
    assert job_id is not None
    _render(lc, job_id)
    assert _take(lc, _send(folders, "other.jpg")) is None  # the same picture: answered from it
    share = folders.root / "share"
    folders.inbox.rename(share)
    folders.inbox.mkdir()  # the mount point, empty
    lc.spool.in_place.forget_vanished()  # what every start does
    folders.inbox.rmdir()
    share.rename(folders.inbox)
    sent = [folders.inbox / name for name in ("photo.jpg", "photo.json", "other.jpg", "other.json")]
    assert lc.spool.in_place.already_handled(sent[:2]) and lc.spool.in_place.already_handled(
        sent[2:]
    )

    (folders.inbox / "other.jpg").unlink()  # one really gone: its record goes, the other stays
    lc.spool.in_place.forget_vanished()
    assert lc.spool.in_place.already_handled(sent[:2])
    assert "other.jpg" not in lc.store.seen_paths()


def test_records_of_deleted_answered_files_stay_harmless_and_warn_only_on_an_empty_inbox(
    folders: Folders,
) -> None:
    """A new user's trial: after deleting a photo whose report they had read, every start
    warned of a share not mounted. The warning now says both readings. With anything in the
    inbox it is only information: a share's marker file or Syncthing's .stfolder may be back
    before its photos (an attacker's trial: records dropped on that sign, kept photos were
    rendered again). The records go at a start that finds one of them."""
    lc = _lifecycle(folders)
    assert _take(lc, _send(folders, sidecar={"style": "no-such-style"})) is None
    assert _take(lc, _send(folders, "two.jpg", sidecar={"style": "no-such-style"})) is None
    assert sorted(lc.store.seen_paths()) == ["photo.jpg", "two.jpg"]
    for name in ("photo.jpg", "photo.json", "two.jpg", "two.json"):
        (folders.inbox / name).unlink()
    with capture_logs() as logs:
        lc.spool.in_place.forget_vanished()
    [kept] = [line for line in logs if line["event"] == "spool.records_kept"]
    assert kept["log_level"] == "warning" and "which is empty" in kept["reason"]
    assert "if they were deleted, nothing is wrong" in kept["hint"]
    (folders.inbox / ".stfolder").mkdir()  # the share's marker, its photos not back yet
    with capture_logs() as logs:
        lc.spool.in_place.forget_vanished()
    assert [line["log_level"] for line in logs] == ["info"]
    assert sorted(lc.store.seen_paths()) == ["photo.jpg", "two.jpg"]
    _send(folders, "two.jpg", sidecar={"style": "no-such-style"})  # one comes back
    lc.spool.in_place.forget_vanished()
    assert lc.store.seen_paths() == ["two.jpg"]


def test_resend_answer_publishes_again_numbered(folders: Folders) -> None:
    lc = _lifecycle(folders, resend="answer")
    first = _take(lc, _send(folders))
    assert first is not None
    _render(lc, first)
    assert _take(lc, _send(folders)) is None and _last_end(lc) is State.DONE
    assert _outbox(folders) == sorted(
        [*RESULT_SET, "photo-2.log", "photo.manifest-2.json", "photo.stylised-2.jpg"]
    )


def test_the_same_photo_under_another_name_is_answered_there_then_skipped(
    folders: Folders,
) -> None:
    lc = _lifecycle(folders)
    first = _take(lc, _send(folders))
    assert first is not None
    _render(lc, first)
    assert _take(lc, _send(folders, "copy.jpg")) is None  # answered from the result
    assert _last_end(lc) is State.DONE
    copies = ["copy.log", "copy.manifest.json", "copy.stylised.jpg"]
    assert _outbox(folders) == sorted([*RESULT_SET, *copies])
    assert _take(lc, _send(folders, "copy.jpg")) is None
    assert _last_end(lc) is State.SKIPPED
    assert _outbox(folders) == sorted([*RESULT_SET, *copies])
    again = _take(lc, _send(folders, "album/copy.jpg"))  # another folder's: rendered there
    assert again is not None
    _render(lc, again)
    assert _outbox(folders, "album") == copies
    manifest = json.loads((folders.outbox / "album/copy.manifest.json").read_text())
    assert manifest["reused"] is None


def test_the_metrics_tell_a_render_a_reused_result_and_a_skip_apart(folders: Folders) -> None:
    """A newcomer's review: a photo answered from an earlier result counted as `done` and a
    skipped re-send as `reused`, against deploy/README's table. A refused sidecar is
    `rejected`, not `failed`: an admin's alert on failures must not fire on senders' typos."""
    parser = pytest.importorskip("prometheus_client.parser")
    metrics = Metrics.start("127.0.0.1", 0)
    try:
        lc = _lifecycle(folders, metrics)
        first = _take(lc, _send(folders))
        assert first is not None
        _render(lc, first)
        assert _take(lc, _send(folders, "copy.jpg")) is None  # answered from the result
        assert _take(lc, _send(folders, "copy.jpg")) is None  # sent again: skipped
        assert _take(lc, _send(folders, "typo.jpg", {"style": "mosaic", "sise": 9})) is None
        assert (folders.outbox / "typo.error.json").exists()
        arrival = _send(folders, "damaged.jpg")
        arrival.image.write_bytes(image_bytes(seed=77))  # not the photo answered above
        damaged = _take(lc, arrival)  # refused by its worker: the sender's to mend too
        assert damaged is not None
        lc.handle(Failed(damaged, "input", "the photo is truncated or corrupt; copy it again"))
        assert (folders.outbox / "damaged.error.json").exists()
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics.port}/metrics") as response:
            text = response.read().decode()
    finally:
        metrics.stop()
    counts = {
        sample.labels["outcome"]: sample.value
        for family in parser.text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "stylefold_jobs_total"
    }
    assert counts == {
        "done": 1, "failed": 0, "rejected": 2, "reused": 1, "skipped": 1, "retried": 0
    }  # fmt: skip


def test_originals_that_cannot_move_on_wait_blocked_and_say_why(folders: Folders) -> None:
    """A newcomer's review: with the answer out, a failed move of the originals (here an
    archive on a file system gone read-only) dropped the job from the running daemon's status,
    its originals in the spool until a restart. It is blocked now, named, and retried."""
    archive = folders.root / "archive"
    archive.mkdir()
    mount_tmpfs(archive, "4m")
    try:
        lc = _lifecycle(folders, archive_dir=str(archive))
        job_id = _take(lc, _send(folders, "trip/photo.jpg"))
        assert job_id is not None
        subprocess.run(["mount", "-o", "remount,ro", str(archive)], check=True)
        _render(lc, job_id)
        assert _outbox(folders, "trip") == RESULT_SET  # the answer is out
        [item] = lc.items()
        assert item.state == "blocked" and item.blocked_on == "originals", item
        assert "Read-only file system" in (item.reason or "")
        report = from_store(lc.store, DaemonInfo(running=True, version="t"), live=lc.items())
        assert "1 blocked (originals not moved)" in status_line(report)
        [attention] = host_attention(report)
        assert attention.fix == answers.ORIGINALS_FIX
        assert _end(lc, job_id) is State.RELEASING

        subprocess.run(["mount", "-o", "remount,rw", str(archive)], check=True)
        time.sleep(1.1)  # publish_retry
        lc.retry_due()
        assert lc.items() == [] and _end(lc, job_id) is State.DONE
        assert (archive / "trip" / "photo.jpg").read_bytes() == image_bytes(seed=5)
    finally:
        subprocess.run(["umount", "-l", str(archive)], check=False)


def test_a_file_where_the_archive_folder_belongs_keeps_the_originals_in_the_state_folder(
    folders: Folders,
) -> None:
    """An attacker's trial: an inbox folder named like an archived photo (`b.jpg/`) made the
    archive need a folder where a file was; the job stayed blocked for good, its fix (rename
    the inbox folder) no help. The originals are kept in state/returned/ instead, listed by
    `status`, as for an inbox folder that went."""
    lc = _lifecycle(folders)
    job_id = _take(lc, _send(folders, "b.jpg/photo.jpg"))
    assert job_id is not None
    (lc.settings.archive_path / "b.jpg").write_bytes(b"an archived photo")
    _render(lc, job_id)
    assert _outbox(folders, "b.jpg") == RESULT_SET
    assert lc.items() == [] and _end(lc, job_id) is State.DONE
    kept = folders.state / "returned" / job_id
    assert (kept / "photo.jpg").read_bytes() == image_bytes(seed=5)
    [attention] = lc.spool.kept()
    assert attention.where == str(kept) and "archive" in attention.what


def test_a_report_never_takes_the_names_of_a_queued_job(folders: Folders) -> None:
    """An attacker's trial: a report about `y.png` (here a link) was written under the names a
    queued `y.jpg` job held but had not used yet; the job's answer then replaced it."""
    lc = _lifecycle(folders)
    job_id = _take(lc, _send(folders, "y.jpg"))
    assert job_id is not None and _outbox(folders) == []  # queued: nothing written yet
    (folders.inbox / "y.png").symlink_to("/etc/hostname")
    lc.reports.problem(Problem(folders.inbox / "y.png", "y.png is a symbolic link", "y"))
    assert _outbox(folders) == ["y-2.log", "y.error-2.json"]
    _render(lc, job_id)
    assert _outbox(folders) == [
        "y-2.log",
        "y.error-2.json",
        "y.log",
        "y.manifest.json",
        "y.stylised.jpg",
    ]
    assert json.loads((folders.outbox / "y.error-2.json").read_text())["input"] == "y.png"


def test_a_kept_photo_another_pair_borrows_as_its_style_stays_answered(folders: Folders) -> None:
    """An attacker's trial (archive = "keep"): `S.json` naming the answered `R.jpg` as its style
    replaced R's record (photo and sidecar) with one for R alone; after a restart R and its
    sidecar were taken again and answered a second time."""
    lc = _lifecycle(folders, archive="keep")
    first = _take(lc, _send(folders, "R.jpg"))
    assert first is not None
    _render(lc, first)
    kept = [folders.inbox / "R.jpg", folders.inbox / "R.json"]
    assert lc.spool.in_place.already_handled(kept)
    style = Arrival(folders.inbox / "S.jpg", folders.inbox / "S.json", Path("."), kept[0])
    (folders.inbox / "S.jpg").write_bytes(image_bytes(seed=6))
    write_json(folders.inbox / "S.json", {"style": {"file": "R.jpg"}})
    second = _take(lc, style)
    assert second is not None
    assert lc.spool.in_place.already_handled(kept)  # what a restart asks of R and its sidecar


def test_a_kept_photo_whose_sidecar_went_gets_no_second_report(folders: Folders) -> None:
    """A sync user's trial (archive = "keep"): a phone app tidied the sidecar away after the
    answer; the photo, unchanged and answered, waited "for its sidecar" and then got a report
    that it had none."""
    lc = _lifecycle(folders, archive="keep")
    first = _take(lc, _send(folders))
    assert first is not None
    _render(lc, first)
    (folders.inbox / "photo.json").unlink()
    lc.reports.problem(Problem(folders.inbox / "photo.jpg", "photo.jpg has no sidecar", "photo"))
    assert _outbox(folders) == RESULT_SET
    (folders.inbox / "photo.jpg").write_bytes(image_bytes(seed=9))  # a new version: its report
    lc.reports.problem(Problem(folders.inbox / "photo.jpg", "photo.jpg has no sidecar", "photo"))
    assert _outbox(folders) == sorted([*RESULT_SET, "photo-2.log", "photo.error-2.json"])


def test_a_photo_resent_without_its_sidecar_gets_no_second_answer(folders: Folders) -> None:
    """A sync user's trial (Syncthing, archive = "move"): touched on the phone, the answered
    photo came back alone (its sidecar was archived with it, and Syncthing sends only what
    changed) and got a second answer at pair_timeout, "no sidecar". Its answer stands: it is
    left in the inbox, not reported again, and skipped once its sidecar comes back too."""
    lc = _lifecycle(folders)
    first = _take(lc, _send(folders))
    assert first is not None
    _render(lc, first)
    _send(folders, sidecar=None)  # the same bytes, alone
    lone = Problem(folders.inbox / "photo.jpg", "photo.jpg has no sidecar", "photo", alone=True)
    with capture_logs() as logs:
        lc.reports.problem(lone)
        lc.reports.problem(lone)  # a rescan
    assert _outbox(folders) == RESULT_SET
    assert [(e["event"], e.get("answered_by")) for e in logs] == [("job.resent_alone", first)]
    # Another photo of that size put in its place with its mtime is no answered photo (an
    # attacker's trial: it got no answer at all).
    photo = folders.inbox / "photo.jpg"
    seen, other = photo.stat(), bytearray(photo.read_bytes())
    other[len(other) // 2] ^= 0xFF
    (folders.inbox / ".swap").write_bytes(bytes(other))
    os.utime(folders.inbox / ".swap", ns=(seen.st_atime_ns, seen.st_mtime_ns))
    os.replace(folders.inbox / ".swap", photo)
    lc.reports.problem(lone)
    assert _outbox(folders) == sorted([*RESULT_SET, "photo-2.log", "photo.error-2.json"])
    _send(folders, sidecar=None)  # the answered photo again: its report is outdated
    lc.reports.problem(lone)
    assert _take(lc, _send(folders)) is None and _last_end(lc) is State.SKIPPED
    assert list(folders.inbox.iterdir()) == []
    # An edited photo alone is a new photo: told it has no sidecar.
    (folders.inbox / "photo.jpg").write_bytes(image_bytes(seed=9))
    lc.reports.problem(lone)
    assert _outbox(folders) == sorted([*RESULT_SET, "photo-2.log", "photo.error-2.json"])


def test_a_photo_alone_whose_answer_was_deleted_is_told_it_was_answered(folders: Folders) -> None:
    """A re-test: an answered photo come back alone after its result was deleted was told it
    had no sidecar, with no word that it had been answered; its report says so now."""
    lc = _lifecycle(folders)
    first = _take(lc, _send(folders))
    assert first is not None
    _render(lc, first)
    (folders.outbox / "photo.stylised.jpg").unlink()
    _send(folders, sidecar=None)
    lc.reports.problem(
        Problem(folders.inbox / "photo.jpg", "photo.jpg has no sidecar", "photo", alone=True)
    )
    [report] = [p for p in folders.outbox.iterdir() if p.name.startswith("photo.error")]
    error = json.loads(report.read_text())["error"]
    assert "has no sidecar" in error
    assert error.endswith(
        f"; this very photo was answered before (job {first}, photo.stylised.jpg), and that "
        "answer has left the outbox since: send its sidecar with it to have it rendered again"
    )
    assert (folders.inbox / "photo.jpg").exists()


def test_a_photo_alone_is_known_by_its_manifest_once_its_job_is_pruned(folders: Folders) -> None:
    """The answers outlive the history of jobs (KEEP_FINISHED): a photo answered long ago
    that comes back alone is known by its manifest's hash."""
    lc = _lifecycle(folders)
    first = _take(lc, _send(folders))
    assert first is not None
    _render(lc, first)
    assert lc.store.prune(keep=0).jobs == 1 and lc.store.get(first) is None
    _send(folders, sidecar=None)
    with capture_logs() as logs:
        lc.reports.problem(
            Problem(folders.inbox / "photo.jpg", "photo.jpg has no sidecar", "photo", alone=True)
        )
    assert [e["event"] for e in logs] == ["job.resent_alone"] and _outbox(folders) == RESULT_SET


def test_a_manifest_reached_through_a_folder_swapped_for_a_link_does_not_tell(
    folders: Folders, tmp_path: Path
) -> None:
    """A newcomer's review: once the job was pruned, the photo's hash was read from its
    manifest following any link in the folders on its way (only the file itself was checked),
    where every other read of our answers follows none: a manifest beyond a link told the
    photo "answered before"."""
    lc = _lifecycle(folders)
    first = _take(lc, _send(folders, "trip/photo.jpg"))
    assert first is not None
    _render(lc, first)
    assert lc.store.prune(keep=0).jobs == 1
    away = tmp_path / "away"
    (folders.outbox / "trip").rename(away)
    (folders.outbox / "trip").symlink_to(away)
    _send(folders, "trip/photo.jpg", sidecar=None)
    problem = Problem(folders.inbox / "trip/photo.jpg", "no sidecar", "photo", alone=True)
    with capture_logs() as logs:
        lc.reports.problem(problem)
    [rejected] = [e for e in logs if e["event"] == "job.rejected"]  # what it was told then:
    assert "answered before" not in rejected["reason"]  # read from beyond the link, before


def test_only_a_photo_alone_is_taken_for_one_come_back(folders: Folders) -> None:
    """A newcomer's review: any problem of an answered photo's bytes was taken for a photo come
    back alone, and a sidecar naming a style image that is not there was never reported."""
    lc = _lifecycle(folders)
    first = _take(lc, _send(folders))
    assert first is not None
    _render(lc, first)
    _send(folders, sidecar={"style": {"file": "mine.png"}})
    missing = "photo.jpg: the style image mine.png named by photo.json is not beside it"
    lc.reports.problem(
        Problem(folders.inbox / "photo.jpg", missing, "photo", missing_style="mine.png")
    )
    assert _outbox(folders) == sorted([*RESULT_SET, "photo-2.log", "photo.error-2.json"])


def test_with_no_sidecar_default_a_photo_come_back_alone_is_skipped(folders: Folders) -> None:
    """A newcomer's review: with no_sidecar = "default" a photo come back alone is a job (in the
    default style), and was rendered a second time."""
    lc = _lifecycle(folders, no_sidecar="default", default_style="waves")
    first = _take(lc, _send(folders))
    assert first is not None
    _render(lc, first)
    assert _take(lc, _send(folders, sidecar=None)) is None and _last_end(lc) is State.SKIPPED
    assert _outbox(folders) == RESULT_SET and list(folders.inbox.iterdir()) == []


def test_a_deleted_result_is_rendered_again_under_the_plain_name(folders: Folders) -> None:
    lc = _lifecycle(folders)
    first = _take(lc, _send(folders))
    assert first is not None
    _render(lc, first)
    for path in folders.outbox.iterdir():
        path.unlink()
    again = _take(lc, _send(folders))
    assert again is not None  # not skipped: the earlier answer is gone
    _render(lc, again)
    assert _outbox(folders) == RESULT_SET


def test_a_result_whose_image_alone_was_deleted_is_answered_again_under_its_own_names(
    folders: Folders,
) -> None:
    """An operator's soak: deleting only the stylised image, then sending the photo again, got
    `photo.stylised-2.jpg` and a second manifest beside the first one, a record of an image
    that no longer exists. The new answer replaces that manifest and its log; a failure report
    replaces them too. Another photo's manifest at those names still holds them."""
    lc = _lifecycle(folders, archive="keep")
    first = _take(lc, _send(folders))
    assert first is not None
    _render(lc, first)
    (folders.outbox / "photo.stylised.jpg").unlink()
    again = _take(lc, _send(folders))
    assert again is not None  # not skipped: the earlier answer's image is gone
    _render(lc, again)
    assert _outbox(folders) == RESULT_SET
    manifest = json.loads((folders.outbox / "photo.manifest.json").read_text())
    assert manifest["job_id"] == again

    (folders.outbox / "photo.stylised.jpg").unlink()
    failed = _take(lc, _send(folders, sidecar={"style": "mosaic", "params": {"size": 48}}))
    assert failed is not None
    lc.handle(Failed(failed, "input", "photo.jpg is truncated or corrupt; copy it again"))
    assert _outbox(folders) == ["photo.error.json", "photo.log"]

    other = _take(lc, _send(folders, "other.jpg"))
    assert other is not None
    _render(lc, other)
    (folders.outbox / "other.stylised.jpg").rename(folders.outbox / "photo.stylised.jpg")
    (folders.outbox / "other.manifest.json").rename(folders.outbox / "photo.manifest.json")
    (folders.outbox / "photo.stylised.jpg").unlink()
    (folders.outbox / "photo.error.json").unlink()
    last = _take(lc, _send(folders))
    assert last is not None
    _render(lc, last)
    assert "photo.stylised-2.jpg" in _outbox(folders)  # other.jpg's manifest is not ours


def test_a_photo_rendered_again_is_not_archived_twice(folders: Folders) -> None:
    """The soak's other half: rendered again after its image was deleted, the photo went to the
    archive a second time beside its identical first copy. Identical copies go, as for a skip."""
    lc = _lifecycle(folders)
    for _ in range(2):
        job = _take(lc, _send(folders))
        assert job is not None
        _render(lc, job)
        (folders.outbox / "photo.stylised.jpg").unlink()
    assert sorted(p.name for p in (folders.state / "archive").iterdir()) == [
        "photo.jpg",
        "photo.json",
    ]
    assert (folders.state / "archive" / "photo.jpg").read_bytes() == image_bytes(seed=5)
    assert not any(folders.inbox.iterdir())


def test_sent_again_while_the_first_copy_renders_still_one_answer(folders: Folders) -> None:
    lc = _lifecycle(folders)
    first = _take(lc, _send(folders))
    # The inbox no longer holds the photo (claimed, moved), so a timer's copy brings it back.
    second = _take(lc, _send(folders))
    assert first is not None and second is not None
    # The copy waits for the first render instead of being rendered (and shown) a second time.
    assert lc.pool.queued == [first]
    _render(lc, first)
    lc.feed(time.monotonic() + 5)
    assert _end(lc, first) is State.DONE and _end(lc, second) is State.SKIPPED
    assert _outbox(folders) == RESULT_SET
    assert not lc.jobs and not lc.twins


def test_a_fixed_sidecar_gets_the_plain_name_and_the_stale_report_goes(folders: Folders) -> None:
    lc = _lifecycle(folders)
    assert _take(lc, _send(folders, sidecar={"style": "no-such-style"})) is None
    assert _outbox(folders) == ["photo.error.json", "photo.log"]
    assert _take(lc, _send(folders, sidecar={"style": "no-such-style", "params": {}})) is None
    assert _outbox(folders) == ["photo.error.json", "photo.log"]  # replaced, not numbered
    fixed = _take(lc, _send(folders))
    assert fixed is not None
    _render(lc, fixed)
    assert _outbox(folders) == RESULT_SET


def test_a_failure_then_a_success_leaves_only_the_result(folders: Folders) -> None:
    lc = _lifecycle(folders, archive="keep")
    first = _take(lc, _send(folders))
    assert first is not None
    lc.handle(Failed(first, "input", "photo.jpg is truncated or corrupt; copy it again"))
    assert _outbox(folders) == ["photo.error.json", "photo.log"]
    second = _take(lc, _send(folders, sidecar={"style": "waves"}))
    assert second is not None
    _render(lc, second)
    assert _outbox(folders) == RESULT_SET


@pytest.mark.parametrize("then", ["result", "failure"])
def test_a_failed_photo_given_back_under_another_name_keeps_its_report(
    folders: Folders, then: str
) -> None:
    """An attacker's trial: a newer photo took the failed one's inbox name while it rendered, so
    the failed one went back as photo.returned-2.jpg; the newer photo's answer then deleted the
    report (or, failing too, wrote its own over it), and the returned photo sat there
    unexplained. Its report stays; the newer photo's answer is numbered beside it."""
    lc = _lifecycle(folders)
    first = _take(lc, _send(folders))
    assert first is not None
    newer = folders.inbox / "photo.jpg"
    newer.write_bytes(image_bytes(seed=8))
    write_json(folders.inbox / "photo.json", {"style": "waves"})
    lc.handle(Failed(first, "input", "photo.jpg is truncated or corrupt; copy it again"))
    report = folders.outbox / "photo.error.json"
    back = "returned to the inbox as photo.returned-2.jpg, photo.returned-2.json; "
    assert json.loads(report.read_text())["original"].startswith(back)
    second = _take(lc, Arrival(newer, folders.inbox / "photo.json", Path(".")))
    assert second is not None
    if then == "result":
        _render(lc, second)
        numbered = ["photo-2.log", "photo.manifest-2.json", "photo.stylised-2.jpg"]
    else:
        lc.handle(Failed(second, "input", "photo.jpg is truncated or corrupt; copy it again"))
        numbered = ["photo-2.log", "photo.error-2.json"]
    assert _outbox(folders) == sorted(["photo.error.json", "photo.log", *numbered])
    assert json.loads(report.read_text())["job_id"] == first
    returned = folders.inbox / "photo.returned-2.jpg"
    assert returned.read_bytes() == image_bytes(seed=5)
    # Taken again under that name, it is answered, and its report goes (a re-test: it stayed).
    fixed = write_json(returned.with_suffix(".json"), {"style": "mosaic", "params": {"size": 40}})
    again = _take(lc, Arrival(returned, fixed, Path(".")))
    assert again is not None
    _render(lc, again)
    answered = ["photo.returned-2.log", "photo.returned-2.manifest.json"]
    answered.append("photo.returned-2.stylised.jpg")
    assert _outbox(folders) == sorted([*numbered, *answered])


@pytest.mark.parametrize("stem", ["p" * 250, "e\u0301" * 83])  # a Mac's decomposed é too
def test_a_long_named_photo_given_back_loses_its_report_once_answered(
    folders: Folders, stem: str
) -> None:
    """The same with a stem near the name limit: the report's names and the returned photo's
    are shortened differently (`.error.json` against `.returned-2.json`), and the report,
    looked up by the returned photo's shortened stem, was never found, so it stayed."""
    lc = _lifecycle(folders)
    first = _take(lc, _send(folders, f"{stem}.jpg"))
    assert first is not None
    newer = folders.inbox / f"{stem}.jpg"
    newer.write_bytes(image_bytes(seed=8))
    lc.handle(Failed(first, "input", "truncated or corrupt; copy it again"))
    [report] = folders.outbox.glob("*.error.json")
    assert json.loads(report.read_text())["original"].startswith("returned to the inbox as ")
    [returned] = folders.inbox.glob("*.returned-2.jpg")
    assert returned.read_bytes() == image_bytes(seed=5)
    fixed = write_json(returned.with_suffix(".json"), {"style": "mosaic", "params": {"size": 40}})
    again = _take(lc, Arrival(returned, fixed, Path(".")))
    assert again is not None
    _render(lc, again)
    assert not report.exists(), "the returned photo is answered: its report is outdated"
    assert len(list(folders.outbox.glob("*.stylised.jpg"))) == 1


def test_the_page_serves_a_jobs_files_only_while_they_are_its_own(folders: Folders) -> None:
    """An attacker's trial: once a newer answer about the same photo took a job's names (a
    stale report replaced, a deleted result's photo sent again), the web page served the newer
    job's report and log under the older job's address."""
    lc = _lifecycle(folders, archive="keep")
    outputs = Outputs(lc.settings)

    def served(job_id: str, kind: OutboxFile) -> bytes | None:
        record = outputs.record(job_id)
        handle = None if record is None else outputs.open(record, kind)
        if handle is None:
            return None
        with handle:
            return handle.read()

    failed = _take(lc, _send(folders))
    assert failed is not None
    lc.handle(Failed(failed, "input", "photo.jpg is truncated or corrupt; copy it again"))
    assert failed.encode() in (served(failed, "report") or b"")
    assert served(failed, "log") is not None
    again = _take(lc, _send(folders, sidecar={"style": "waves"}))
    assert again is not None
    lc.handle(Failed(again, "input", "photo.jpg is truncated or corrupt; copy it again"))
    assert _outbox(folders) == ["photo.error.json", "photo.log"]  # the stale report replaced
    assert served(failed, "report") is None and served(failed, "log") is None
    assert again.encode() in (served(again, "report") or b"")

    done = _take(lc, _send(folders, sidecar={"style": "mosaic", "params": {"size": 40}}))
    assert done is not None
    _render(lc, done)
    image = served(done, "result")
    assert image == (folders.outbox / "photo.stylised.jpg").read_bytes()
    (folders.outbox / "photo.stylised.jpg").unlink()
    later = _take(lc, _send(folders, sidecar={"style": "mosaic", "params": {"size": 44}}))
    assert later is not None
    _render(lc, later)  # under the plain names, its manifest and log replacing the first's
    assert served(done, "result") is None and served(done, "log") is None
    assert served(later, "result") == (folders.outbox / "photo.stylised.jpg").read_bytes()
    # A newer job running under the same names writes its preview there (a review).
    (folders.outbox / "photo.preview.jpg").write_bytes(image_bytes(seed=3))
    assert served(later, "preview") is None and served(done, "preview") is None


@pytest.mark.parametrize("sub", ["", "trip"])
def test_a_different_job_on_the_same_name_is_numbered(folders: Folders, sub: str) -> None:
    lc = _lifecycle(folders)
    name = f"{sub}/photo.jpg" if sub else "photo.jpg"
    first = _take(lc, _send(folders, name))
    assert first is not None
    _render(lc, first)
    other = _take(lc, _send(folders, name, sidecar={"style": "waves"}))
    assert other is not None
    _render(lc, other)
    assert _outbox(folders, sub) == sorted(
        [*RESULT_SET, "photo-2.log", "photo.manifest-2.json", "photo.stylised-2.jpg"]
    )


def _written_then_killed(folders: Folders, name: str = "photo.jpg", indexed: bool = False) -> Job:
    """A job whose daemon was killed after writing its result into the outbox (and indexing
    it, if `indexed`): the steps the publisher takes before that (PUBLISHING recorded, the
    answer written, as `_render` would), then the database closed."""
    lc = _lifecycle(folders)
    job_id = _take(lc, _send(folders, name))
    assert job_id is not None
    job = lc.jobs[job_id]
    result = lc.spool.job_dir(job) / "result.jpg"
    result.write_bytes(image_bytes(seed=99))
    detail = ResultDetail(info=_info(job))
    lc.store.move(job_id, State.PUBLISHING, outcome="result", detail=detail)
    names = lc.spool.names(job)
    digest = answers.publish_result(job, detail, result, names, "log\n", {})
    if indexed:
        lc.store.record_answer(Answer(job.reuse_key, job.id, names.image, digest, names.manifest))
    lc.store.close()  # killed here
    return job


def test_a_result_written_and_indexed_before_a_kill_is_not_answered_again_elsewhere(
    folders: Folders, tmp_path: Path
) -> None:
    """Killed after its answer was written and indexed, before the originals went: its folder
    swapped for a link before the restart had the answer written again in a numbered folder,
    a second one. What the database indexed counts as written (the outbox is not trusted)."""
    job = _written_then_killed(folders, "trip/photo.jpg", indexed=True)
    answer = folders.outbox / "trip"
    manifest = (answer / "photo.manifest.json").read_bytes()
    answer.rename(tmp_path / "away")
    answer.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    lc = _lifecycle(folders)
    lc.recover()
    assert _end(lc, job.id) is State.DONE and not lc.publisher.blocked
    answer.unlink()
    (tmp_path / "away").rename(answer)
    found = sorted(p.relative_to(folders.outbox).as_posix() for p in folders.outbox.rglob("*.json"))
    assert found == ["trip/photo.manifest.json"]
    assert (answer / "photo.manifest.json").read_bytes() == manifest


def test_a_result_published_again_after_a_crash_still_answers_an_identical_photo(
    folders: Folders,
) -> None:
    """The daemon died after writing a result into the outbox and before indexing it for
    dedupe (a full state folder leaves the same gap: the next try finds the result written).
    Publishing it again must index it: an identical photo under another name is then answered
    from it at once, not rendered a second time. The crash is reproduced by the steps the
    publisher takes before it: PUBLISHING recorded, the answer written, nothing indexed."""
    job = _written_then_killed(folders)
    job_id = job.id
    lc = _lifecycle(folders)
    assert lc.store.answer_for(job.reuse_key) is None
    lc.recover()
    assert _end(lc, job_id) is State.DONE
    assert lc.store.answer_for(job.reuse_key) is not None
    assert _take(lc, _send(folders, "copy.jpg")) is None  # answered at once, from the result
    manifest = json.loads((folders.outbox / "copy.manifest.json").read_text())
    assert manifest["reused"]["job_id"] == job_id


@pytest.mark.parametrize("planted", [False, True])
def test_an_answer_published_again_is_written_whole_whatever_its_names_hold(
    folders: Folders, planted: bool
) -> None:
    """The daemon died after writing a result, and its image was gone before the restart (a
    person's, or whoever else writes the outbox). Or an attacker's trial: a manifest with the
    job's id (read from its progress file) planted at its name while it ran. Both had the
    answer taken as written, read back for its hash, and the job blocked for good ("No such
    file or directory"). The answer is written again, whole, and indexed as written."""
    if planted:
        lc = _lifecycle(folders)
        job_id = _take(lc, _send(folders))
        assert job_id is not None
        job = lc.jobs[job_id]
        write_json(folders.outbox / "photo.manifest.json", {"job_id": job_id})
        _render(lc, job_id)
    else:
        job = _written_then_killed(folders)
        job_id = job.id
        (folders.outbox / "photo.stylised.jpg").unlink()
        lc = _lifecycle(folders)
        lc.recover()
    assert _end(lc, job_id) is State.DONE and not lc.publisher.blocked
    assert _outbox(folders) == RESULT_SET
    image = (folders.outbox / "photo.stylised.jpg").read_bytes()
    assert image == image_bytes(seed=99)
    answer = lc.store.answer_for(job.reuse_key)
    assert answer is not None and answer.sha256 == hashlib.sha256(image).hexdigest()
    manifest = json.loads((folders.outbox / "photo.manifest.json").read_text())
    assert manifest["output"]["sha256"] == answer.sha256


def test_an_answer_written_then_not_recorded_is_neither_written_again_nor_moved(
    folders: Folders, tmp_path: Path
) -> None:
    """A reviewer's reading: an answer written whole, then not indexed (the state database
    full: here a trigger of the real database refuses the row as a full disk does), was
    written again at every try, its manifest's times changing each time, and moved to a
    numbered folder, a second answer, if its folder had been swapped for a link meanwhile."""
    lc = _lifecycle(folders)
    photo = folders.inbox / "trip" / "photo.jpg"
    photo.parent.mkdir()
    photo.write_bytes(image_bytes(seed=5))
    write_json(photo.with_suffix(".json"), SIDECAR)
    job_id = _take(lc, Arrival(photo, photo.with_suffix(".json"), Path("trip")))
    assert job_id is not None
    with sqlite3.connect(folders.state / DB_FILE) as db:
        db.execute(
            "CREATE TRIGGER full BEFORE INSERT ON answered "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    _render(lc, job_id)
    assert lc.publisher.blocked[job_id].on == "state"
    answer = folders.outbox / "trip"
    manifest = (answer / "photo.manifest.json").read_bytes()
    answer.rename(tmp_path / "away")  # swapped for a link by whoever writes the outbox
    answer.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with sqlite3.connect(folders.state / DB_FILE) as db:
        db.execute("DROP TRIGGER full")
    time.sleep(1.1)
    lc.retry_due()
    assert _end(lc, job_id) is State.DONE and not lc.publisher.blocked
    answer.unlink()
    (tmp_path / "away").rename(answer)
    assert sorted(
        p.relative_to(folders.outbox).as_posix() for p in folders.outbox.rglob("*.json")
    ) == ["trip/photo.manifest.json"]
    assert (answer / "photo.manifest.json").read_bytes() == manifest
    assert lc.store.answer_for(lc.store.get(job_id).job.reuse_key) is not None  # type: ignore[union-attr]


@pytest.mark.parametrize("damage", ["image removed", "manifest broken", "manifest too deep"])
def test_a_reuse_whose_earlier_answer_went_before_a_later_try_is_rendered_instead(
    folders: Folders, damage: str
) -> None:
    """A reviewer's reading: a reuse checks its earlier answer when queued, and copies it at
    every try; one removed or broken in the outbox meanwhile blocked the job for good ("No such
    file or directory", told as an unwritable outbox) or failed it beside its answer."""
    lc = _lifecycle(folders)
    job_id = _take(lc, _send(folders))
    assert job_id is not None
    job = lc.jobs[job_id]
    _render(lc, job_id)
    answer = lc.store.answer_for(job.reuse_key)
    assert answer is not None
    detail = ReuseDetail(
        job_id=job_id,
        output=str(answer.output),
        manifest=str(answer.manifest),
        sha256=answer.sha256,
    )
    if damage == "image removed":
        Path(answer.output).unlink()
    else:  # past the parser's recursion, an attacker's RecursionError (no ValueError)
        Path(answer.manifest).write_text("{" if damage == "manifest broken" else "[" * 200_000)
    names = outbox.choose_names(folders.outbox, "copy", "jpg", root=folders.outbox)
    with pytest.raises(ResultLost, match="removed"):
        answers.publish_reuse(job, detail, names, "log\n", lc.settings, {})
    assert not names.image.exists() and not names.manifest.exists()


def test_every_job_answers_once_while_its_folder_is_swapped_for_a_link(
    folders: Folders, tmp_path: Path
) -> None:
    """An attacker's trial: a folder of the outbox swapped for a link between an answer's
    manifest and the daemon reading its image back (to index it) blocked the job, whose next
    try wrote the answer again in a numbered folder: two answers to one photo. What was
    written is indexed as written; a try refused through the link writes elsewhere whole."""
    lc = _lifecycle(folders)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ids = []
    for index in range(40):
        photo = folders.inbox / "trip" / f"p{index}.jpg"
        photo.parent.mkdir(parents=True, exist_ok=True)
        photo.write_bytes(image_bytes(seed=200 + index))
        write_json(photo.with_suffix(".json"), SIDECAR)
        job_id = _take(lc, Arrival(photo, photo.with_suffix(".json"), Path("trip")))
        assert job_id is not None
        ids.append(job_id)
    real, link = folders.outbox / "trip", folders.outbox / ".away"
    real.mkdir(exist_ok=True)
    link.symlink_to(elsewhere)
    exchange = ctypes.CDLL(None, use_errno=True).renameat2

    def swapped() -> bool:
        return exchange(-100, os.fsencode(real), -100, os.fsencode(link), 2) == 0  # EXCHANGE

    if not (swapped() and swapped()):
        pytest.skip("this file system cannot exchange two names (renameat2)")
    stop, swaps = threading.Event(), [0]

    def swap() -> None:
        while not stop.is_set():
            swaps[0] += swapped()
            time.sleep(0.0002)

    swapper = threading.Thread(target=swap)
    swapper.start()
    try:
        with capture_logs() as logged:
            for job_id in ids:
                _render(lc, job_id)
            for _turn in range(3):  # tries again while the swapping goes on
                time.sleep(1.1)
                lc.retry_due()
    finally:
        stop.set()
        swapper.join()
    assert swaps[0] > 100
    assert any(line["event"] == "job.outbox_unwritable" for line in logged)  # some refused
    if real.is_symlink():
        exchange(-100, os.fsencode(real), -100, os.fsencode(link), 2)
    deadline = time.monotonic() + 30
    while lc.publisher.blocked and time.monotonic() < deadline:
        time.sleep(0.2)
        lc.retry_due()
    assert list(elsewhere.iterdir()) == []
    owners: dict[str, list[str]] = {}
    for folder, _dirs, files in os.walk(folders.outbox):  # does not enter links
        for name in (n for n in files if ".manifest" in n):
            path = Path(folder, name)
            owner = json.loads(path.read_text())["job_id"]
            owners.setdefault(owner, []).append(path.relative_to(folders.outbox).as_posix())
    assert {job: found for job, found in owners.items() if len(found) > 1} == {}
    assert sorted(owners) == sorted(ids)
    assert {_end(lc, job_id) for job_id in ids} == {State.DONE}


def test_a_report_pointing_to_kept_originals_survives_a_new_photo_at_the_same_path(
    folders: Folders,
) -> None:
    """A failed photo's folder was gone when its originals went back, so they were kept in
    state/returned/ and its report says so: the owner's only pointer to them. A new photo
    later sent under the same path, whether it succeeds or fails, must not replace or remove
    that report: its answer is numbered beside it."""
    lc = _lifecycle(folders)
    first = _take(lc, _send(folders, "trip/photo.jpg"))
    assert first is not None

    def folder_gone(moment: str, where: Path) -> None:
        if moment == "return":
            shutil.rmtree(where)

    handover.race_hook = folder_gone
    try:
        lc.handle(Failed(first, kind="engine", reason="the render failed"))
    finally:
        handover.race_hook = None
    kept = folders.outbox / "trip" / "photo.error.json"
    pointer = kept.read_text()
    assert f"returned/{first}/photo.jpg" in json.loads(pointer)["original"]

    second = _take(lc, _send(folders, "trip/photo.jpg"))  # the folder again, a new photo
    assert second is not None
    _render(lc, second)
    assert _outbox(folders, "trip") == [
        "photo-2.log", "photo.error.json", "photo.log", "photo.manifest-2.json",
        "photo.stylised-2.jpg",
    ]  # fmt: skip
    assert kept.read_text() == pointer
    third = _take(lc, _send(folders, "trip/photo.jpg", sidecar={"style": "nosuchstyle"}))
    assert third is None  # rejected: a report about the same path, numbered too
    assert kept.read_text() == pointer
    assert "nosuchstyle" in (folders.outbox / "trip" / "photo.error-3.json").read_text()
    assert (folders.state / "returned" / first / "photo.jpg").exists()


# -- an original that changes while its job runs ---------------------------------------------


def _rewritten_in_place(lc: Lifecycle, folders: Folders, failed: bool = False) -> tuple[str, bytes]:
    """`rsync --inplace` over a photo: the writer opened the file before the claim, paused
    longer than the settle time, and goes on writing through its descriptor after the claim
    moved the file into the spool, without truncating it (the old tail was still there)."""
    arrival = _send(folders)
    new = image_bytes(size=(64, 48), seed=6)
    with arrival.image.open("r+b") as writer:  # no O_TRUNC, like rsync --inplace
        writer.write(new[: len(new) // 2])
        writer.flush()
        job_id = _take(lc, arrival)
        assert job_id is not None
        writer.write(new[len(new) // 2 :])
        writer.truncate()
    if failed:  # a decoder that tripped over half of each version
        lc.handle(Failed(job_id, "input", "photo.jpg is truncated or corrupt; copy it again"))
    else:
        _render(lc, job_id)
    return job_id, new


@pytest.mark.parametrize("failed", [False, True], ids=["rendered", "failed"])
def test_a_photo_written_on_after_its_claim_goes_back_unanswered(
    folders: Folders, failed: bool
) -> None:
    lc = _lifecycle(folders, archive="keep")
    job_id, new = _rewritten_in_place(lc, folders, failed)
    # Nothing was published from the mixed file, and the whole new file is back, unremembered.
    assert _end(lc, job_id) is State.ROLLED_BACK
    assert not folders.outbox.exists() or _outbox(folders) == []
    photo, sidecar = folders.inbox / "photo.jpg", folders.inbox / "photo.json"
    assert photo.read_bytes() == new and sidecar.exists()
    assert not lc.spool.in_place.already_handled([photo, sidecar])
    assert sorted(lc.settle_again()) == [photo, sidecar]  # settles again, as a new arrival
    assert not lc.spool.job_dir(job_id).exists() and job_id not in lc.jobs
    # Taken again once settled: one answer, of the new version, under the plain names.
    again = _take(lc, Arrival(photo, sidecar, Path()))
    assert again is not None
    _render(lc, again)
    assert _outbox(folders) == RESULT_SET
    manifest = json.loads((folders.outbox / "photo.manifest.json").read_text())
    assert manifest["input"]["sha256"] == hashlib.sha256(new).hexdigest()


@pytest.mark.parametrize("put", ["symlink", "fifo"])
def test_a_kept_photo_replaced_by_a_link_on_its_inode_is_still_answered(
    folders: Folders, put: str
) -> None:
    """An attacker's trial (archive = "keep"): the photo, claimed as a copy, was deleted and a
    symbolic link put in its place, which the file system gave the freed inode: the same
    device and inode at another size read as the photo written on in place, so the claimed
    copy's result was thrown away (and the link, back "to settle again", reported twice). A
    file of another type is a new file, whatever its inode."""
    lc = _lifecycle(folders, archive="keep")
    arrival = _send(folders)
    job_id = _take(lc, arrival)
    assert job_id is not None
    arrival.image.unlink()
    if put == "symlink":
        arrival.image.symlink_to(folders.root / "elsewhere.jpg")
    else:
        os.mkfifo(arrival.image)
    job = lc.jobs[job_id]
    dev, ino = (lambda st: (st.st_dev, st.st_ino))(os.lstat(arrival.image))
    # The freed inode, as that file system reused it (this one may not).
    lc.jobs[job_id] = job.model_copy(
        update={"origin": [job.origin[0]._replace(dev=dev, ino=ino), *job.origin[1:]]}
    )
    _render(lc, job_id)
    assert _end(lc, job_id) is State.DONE
    assert _outbox(folders) == RESULT_SET


def test_a_changed_sidecar_also_sends_the_pair_back(folders: Folders) -> None:
    lc = _lifecycle(folders)
    arrival = _send(folders)
    assert arrival.sidecar is not None
    with arrival.sidecar.open("r+b") as writer:
        job_id = _take(lc, arrival)
        assert job_id is not None
        writer.write(json.dumps({"style": "waves"}).encode())
        writer.truncate()
    _render(lc, job_id)
    assert _end(lc, job_id) is State.ROLLED_BACK
    assert json.loads((folders.inbox / "photo.json").read_text()) == {"style": "waves"}
    assert (folders.inbox / "photo.jpg").exists()


def test_originals_refused_their_way_back_are_shown_and_tried_again(folders: Folders) -> None:
    """A newcomer's review: a RETURNING job whose way back to the inbox was refused left the
    running daemon's status, its originals in the spool until a restart. It is shown now
    (returning, with why) and tried again every publish_retry seconds."""
    trip = folders.inbox / "trip"
    trip.mkdir()
    mount_tmpfs(trip, "4m")
    try:
        lc = _lifecycle(folders)
        arrival = _send(folders, "trip/photo.jpg")
        job_id = _take(lc, arrival)
        assert job_id is not None and not arrival.image.exists()  # in the spool
        # The claim copied it across file systems: write on the spool's copy, as an `rsync
        # --inplace` holding the file open does on one file system (`_rewritten_in_place`).
        new = image_bytes(size=(64, 48), seed=6)
        (lc.spool.job_dir(job_id) / lc.jobs[job_id].input_file).write_bytes(new)
        subprocess.run(["mount", "-o", "remount,ro", str(trip)], check=True)
        _render(lc, job_id)
        [item] = lc.items()
        assert item.state is State.RETURNING and item.blocked_on == "originals", item
        assert "Read-only file system" in (item.reason or "") and item.retry_at is not None
        assert _end(lc, job_id) is State.RETURNING and lc.busy
        report = from_store(lc.store, DaemonInfo(running=True, version="t"), live=lc.items())
        assert "1 blocked (originals not moved)" in status_line(report)
        [attention] = host_attention(report)
        assert attention.fix == answers.ORIGINALS_FIX
        assert not (folders.outbox / "trip").exists()  # nothing published

        subprocess.run(["mount", "-o", "remount,rw", str(trip)], check=True)
        lc.retry_due()
        assert lc.items() != []  # not before its time
        time.sleep(1.1)  # publish_retry
        lc.retry_due()
        assert lc.items() == [] and _end(lc, job_id) is State.ROLLED_BACK
        assert arrival.image.read_bytes() == new
        assert not lc.spool.job_dir(job_id).exists()
    finally:
        subprocess.run(["umount", "-l", str(trip)], check=False)


def test_a_restart_while_giving_back_finishes_the_way_back(folders: Folders) -> None:
    lc = _lifecycle(folders)
    job_id = _take(lc, _send(folders))
    assert job_id is not None
    job = lc.jobs[job_id]
    # Recorded RETURNING, then the daemon died before the first file went back.
    lc.store.move(job_id, State.RUNNING, started=True)
    lc.store.move(job_id, State.RETURNING, detail=ClaimIntent.of(job))
    restarted = _lifecycle(folders)
    restarted.recover()
    assert _end(restarted, job_id) is State.ROLLED_BACK
    assert sorted(p.name for p in folders.inbox.iterdir()) == ["photo.jpg", "photo.json"]
    assert not restarted.spool.job_dir(job_id).exists()


@pytest.mark.parametrize("restart", [False, True], ids=["running", "after a restart"])
def test_originals_whose_folder_went_while_they_changed_get_a_report(
    folders: Folders, restart: bool
) -> None:
    """An attacker's trial: a photo written on after its claim, its inbox folder renamed
    meanwhile, went to state/returned/ with no word to its sender: no answer, and the photo
    gone from the inbox. Its report now says what happened and where the originals are."""
    lc = _lifecycle(folders)
    arrival = _send(folders, "trip/photo.jpg")
    job_id = _take(lc, arrival)
    assert job_id is not None
    job = lc.jobs[job_id]
    (folders.inbox / "trip").rename(folders.inbox / "trip-renamed")
    if restart:  # recorded RETURNING, then the daemon died before the first file went back
        lc.store.move(job_id, State.RUNNING, started=True)
        intent = ClaimIntent.of(job).model_copy(update={"changed": "photo.jpg"})
        lc.store.move(job_id, State.RETURNING, detail=intent)
        lc = _lifecycle(folders)
        lc.recover()
    else:
        (lc.spool.job_dir(job_id) / job.input_file).write_bytes(image_bytes(seed=9))
        _render(lc, job_id)
    assert _end(lc, job_id) is State.ROLLED_BACK
    kept = folders.state / "returned" / job_id
    assert sorted(path.name for path in kept.iterdir()) == ["photo.jpg", "photo.json"]
    report = json.loads((folders.outbox / "trip" / "photo.error.json").read_text())
    assert report["input"] == "trip/photo.jpg" and report["sidecar"] == "photo.json"
    assert report["error"].startswith("photo.jpg changed while it was being rendered")
    assert "the inbox folder it came from was gone" in report["original"]
    assert (
        f"kept by the daemon in its state folder as returned/{job_id}/photo.jpg"
        in report["original"]
    )
    assert "ask the administrator for it" in report["original"]
    assert sorted(path.name for path in (folders.outbox / "trip").iterdir()) == [
        "photo.error.json",
        "photo.log",
    ]


def test_a_report_outdated_by_a_new_job_goes_when_the_job_is_taken(folders: Folders) -> None:
    """A status trial: a photo's "no such style" report stayed in the outbox, saying failed,
    for the minutes its corrected pair waited in the queue; the outbox is all a sender sees."""
    lc = _lifecycle(folders)
    assert _take(lc, _send(folders, sidecar={"style": "no such style"})) is None
    report, log = folders.outbox / "photo.error.json", folders.outbox / "photo.log"
    assert report.exists() and log.exists()
    job_id = _take(lc, _send(folders))
    assert job_id is not None
    assert not report.exists() and not log.exists()  # queued: nothing outdated is shown
    _render(lc, job_id)
    assert _outbox(folders) == RESULT_SET


@pytest.mark.parametrize("restart", [False, True], ids=["running", "after a restart"])
def test_a_job_whose_answer_folder_a_file_took_is_answered_in_a_numbered_one(
    folders: Folders, restart: bool
) -> None:
    """An administrator's upgrade trial: a job an older version had claimed for the inbox
    folder `a.log/`, where the answer `a.log` of `a.jpg` is a file, was blocked for ever under
    the new one, and told to move the answer away. Its answer goes where the folder's new
    photos' go, the numbered `a.log-2/`, and the answer `a.log` stays."""
    lc = _lifecycle(folders)
    job_id = _take(lc, _send(folders, "a.log/photo.jpg"))
    assert job_id is not None
    folders.outbox.mkdir(exist_ok=True)
    (folders.outbox / "a.log").write_text("the log of a.jpg's answer")
    if restart:  # rendered, then stopped before it was published
        (lc.spool.job_dir(job_id) / "result.jpg").write_bytes(image_bytes(seed=99))
        lc.store.move(job_id, State.RUNNING, started=True)
        lc.store.move(
            job_id,
            State.PUBLISHING,
            outcome="result",
            detail=ResultDetail(info=_info(lc.jobs[job_id])),
        )
        lc = _lifecycle(folders)
        lc.recover()
    else:
        _render(lc, job_id)
    assert _end(lc, job_id) is State.DONE
    assert (folders.outbox / "a.log").read_text() == "the log of a.jpg's answer"
    assert _outbox(folders, "a.log-2") == [".stylefold-folder.json", *RESULT_SET]
    log = (folders.outbox / "a.log-2" / "photo.log").read_text()
    assert "answered in the outbox folder a.log-2/, not a.log/" in log
    row = lc.store.get(job_id)
    assert row is not None and row.job is not None and row.job.answer_dir == "a.log-2"


def test_a_job_log_shows_escapes_in_names_instead_of_running_them(folders: Folders) -> None:
    """A status trial: `cat` of a synced `photo.log` cleared the terminal and retitled it, the
    photo's name written raw in the log's lines (status and the web page showed it escaped)."""
    lc = _lifecycle(folders)
    name = "e\x1b]0;PWNED\x07\x1b[2J\u202egpj"
    assert _take(lc, _send(folders, f"{name}.jpg", sidecar={"style": "no such style"})) is None
    job_id = _take(lc, _send(folders, f"sub/{name}.jpg"))
    assert job_id is not None
    _render(lc, job_id)
    logs = [folders.outbox / f"{name}.log", folders.outbox / "sub" / f"{name}.log"]
    for log in logs:
        text = log.read_text()
        assert r"e\x1b]0;PWNED\x07\x1b[2J\u202egpj" in text, text
        assert not any(char in text for char in "\x1b\x07\u202e"), text


def _synced(path: Path, data: bytes) -> None:
    """How Syncthing, Nextcloud or rsync deliver a file: a temporary name, then a rename."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    temporary.rename(path)


@pytest.mark.parametrize("updated", ["photo.jpg", "photo.json"])
def test_keep_an_original_updated_during_its_job_goes_to_the_archive(
    folders: Folders, updated: str
) -> None:
    """Found by a sync-tool trial: the answered photo came back beside its newer version as
    photo.returned-2.jpg, taking the sidecar along as photo.returned-2.json, so the mirrored
    inbox grew copies and the newer photo waited for a sidecar that never came."""
    lc = _lifecycle(folders, archive="keep")
    first = _take(lc, _send(folders))
    assert first is not None
    newer = image_bytes(seed=8) if updated.endswith(".jpg") else b'{"style": "waves"}'
    _synced(folders.inbox / updated, newer)
    old = (lc.spool.job_dir(first) / lc.jobs[first].input_file).read_bytes()
    _render(lc, first)
    assert _end(lc, first) is State.DONE
    assert sorted(p.name for p in folders.inbox.iterdir()) == ["photo.jpg", "photo.json"]
    assert (folders.inbox / updated).read_bytes() == newer
    archived = lc.settings.archive_path / updated
    assert sorted(p.name for p in lc.settings.archive_path.iterdir()) == [updated]
    if updated == "photo.jpg":
        assert archived.read_bytes() == old
    # The newer pair is not taken for the answered one: it is answered in its turn.
    again = _take(lc, Arrival(folders.inbox / "photo.jpg", folders.inbox / "photo.json", Path()))
    assert again is not None
    _render(lc, again)
    assert _outbox(folders) == sorted(
        [*RESULT_SET, "photo-2.log", "photo.manifest-2.json", "photo.stylised-2.jpg"]
    )


def test_the_history_of_finished_jobs_is_pruned_as_the_daemon_runs(folders: Folders) -> None:
    """Found by a soak trial: KEEP_FINISHED was promised, but nothing called prune, so the
    database grew by about 5 KB per job for ever."""
    lc = _lifecycle(folders)
    first = _take(lc, _send(folders))
    assert first is not None
    _render(lc, first)  # one answer, still recognised after the prune
    older = [
        (f"20200101-000000-{n:06d}-000000", "done", float(n), "old.jpg")
        for n in range(KEEP_FINISHED + 50)
    ]
    db = sqlite3.connect(folders.state / DB_FILE)
    with db:
        db.executemany("INSERT INTO jobs (id, state, since, input) VALUES (?,?,?,?)", older)
    db.close()
    lc.feed(time.monotonic() + 5)
    assert len(lc.store.finished(2 * KEEP_FINISHED)) == KEEP_FINISHED
    assert lc.store.get(first) is not None  # the newest are kept
    assert _take(lc, _send(folders)) is None and _last_end(lc) is State.SKIPPED


def test_a_kept_photo_deleted_leaves_its_sidecar_without_a_second_report(
    folders: Folders,
) -> None:
    """A sync user's trial: with archive = "keep", the phone deleted an answered photo and its
    sidecar stayed; after pair_timeout the sidecar got a report saying it "arrived after its
    photo had been taken", beside the photo's result. The sidecar the photo was answered with
    is left alone; one written anew still gets its report."""
    lc = _lifecycle(folders, archive="keep")
    arrival = _send(folders)
    job_id = _take(lc, arrival)
    assert job_id is not None and arrival.sidecar is not None
    _render(lc, job_id)
    assert _outbox(folders) == RESULT_SET
    arrival.image.unlink()  # deleted on the phone, synced here
    lone = Problem(arrival.sidecar, "photo.json has no photo beside it", "photo", orphan=True)
    lc.reports.problem(lone)
    assert _outbox(folders) == RESULT_SET
    assert lc.spool.in_place.already_handled(
        [arrival.sidecar]
    )  # not looked at again while unchanged
    write_json(arrival.sidecar, {"style": "waves"})  # a new sidecar: a real orphan
    lc.reports.problem(lone)
    [report_file] = [p for p in folders.outbox.iterdir() if ".error" in p.name]
    report = json.loads(report_file.read_text())
    assert "arrived after its photo photo.jpg had been taken" in report["error"]


def test_a_lone_sidecar_s_report_does_not_ask_for_a_sidecar(folders: Folders) -> None:
    """A re-test: a sidecar without its photo was told it is taken again "(its sidecar added,
    or the file sent again whole)". Its reason says what to add; its report's end defers to
    that."""
    lc = _lifecycle(folders)
    sidecar = write_json(folders.inbox / "z.json", SIDECAR)
    orphan = Problem(sidecar, "z.json has no photo beside it; add the photo", "z", orphan=True)
    lc.reports.problem(orphan)
    report = json.loads((folders.outbox / "z.error.json").read_text())
    assert report["original"] == answers.LEFT_UNTIL_FIXED
    assert "sidecar" not in report["original"]


def test_a_photo_edited_once_then_resent_does_not_pile_up_in_the_archive(
    folders: Folders,
) -> None:
    """A sync user's trial (archive = "move", rsync from a timer): after the photo was edited
    once, every run re-sent it as it is now; each was skipped, but archived anew as
    photo.returned-N, since only photo.jpg (the first version) was compared."""
    lc = _lifecycle(folders)
    first = _take(lc, _send(folders))
    assert first is not None
    _render(lc, first)
    image, sidecar = folders.inbox / "photo.jpg", folders.inbox / "photo.json"

    def send_edited() -> str | None:
        image.write_bytes(image_bytes(seed=6))  # the edited version, as the phone has it now
        write_json(sidecar, SIDECAR)
        return _take(lc, Arrival(image, sidecar, Path()))

    second = send_edited()
    assert second is not None
    _render(lc, second)  # answered: its original archived beside the first, as returned-2
    for _ in range(3):  # the timer's runs
        assert send_edited() is None  # skipped at once
        assert _last_end(lc) is State.SKIPPED
    assert sorted(p.name for p in lc.settings.archive_path.iterdir()) == [
        "photo.jpg",
        "photo.json",
        "photo.returned-2.jpg",
        "photo.returned-2.json",
    ]
    assert not image.exists() and not sidecar.exists()  # nothing left in the inbox either


def test_an_identical_photo_does_not_wait_behind_a_blocked_job(folders: Folders) -> None:
    """An attacker's trial: a job blocked for good (its answer's name held by a folder,
    until a person mends it) kept identical photos elsewhere waiting behind it."""
    lc = _lifecycle(folders)
    folders.outbox.mkdir(parents=True, exist_ok=True)
    first = _take(lc, _send(folders, "xc/photo.jpg"))
    assert first is not None
    (folders.outbox / "xc" / "photo.stylised.jpg").mkdir(parents=True)  # after the claim
    _render(lc, first)
    assert first in lc.publisher.blocked
    second = _take(lc, _send(folders, "album/photo.jpg"))  # the same bytes and sidecar
    assert second is not None and lc.jobs[second].key == lc.jobs[first].key
    assert lc.twins == [] and second in lc.pool.queued  # rendered, not waiting
    _render(lc, second)
    assert _outbox(folders, "album") == RESULT_SET


def test_json_nested_past_the_parser_in_the_outbox_is_none_of_ours(folders: Folders) -> None:
    """An attacker's trial: 200,000 `[` planted in a two-way synced outbox (json's parser raises
    RecursionError there, not ValueError). At `photo.error.json` every claim of photo.jpg
    crashed, and the report of that crash too: no answer, nothing in status. In a folder's mark
    every photo of that inbox folder did; at a manifest the web page answered 500."""
    deep = b"[" * 200_000
    folders.outbox.mkdir(parents=True, exist_ok=True)
    (folders.outbox / "photo.error.json").write_bytes(deep)
    (folders.outbox / "mk").write_bytes(b"a file where the folder's mirror would be")
    (folders.outbox / "mk-2").mkdir()
    (folders.outbox / "mk-2" / outbox.FOLDER_MARK).write_bytes(deep)
    lc = _lifecycle(folders)
    ids = [_take(lc, _send(folders, name)) for name in ("photo.jpg", "mk/photo.jpg")]
    assert None not in ids
    for job_id in ids:
        assert job_id is not None
        _render(lc, job_id)
        assert _end(lc, job_id) is State.DONE
    # Not ours: the answer takes the next names beside it, as beside any file of another's.
    numbered = ["photo-2.log", "photo.manifest-2.json", "photo.stylised-2.jpg"]
    assert _outbox(folders) == sorted([*numbered, "photo.error.json", "mk", "mk-2", "mk-3"])
    assert _outbox(folders, "mk-3") == sorted([outbox.FOLDER_MARK, *RESULT_SET])
    (folders.outbox / "photo.manifest-2.json").write_bytes(deep)
    site = Outputs(lc.settings)
    record = site.record(ids[0] or "")
    assert record is not None and site.manifest(record) is None


def test_a_failure_ended_after_a_newer_photo_of_its_name_was_claimed_keeps_its_report(
    folders: Folders,
) -> None:
    """An attacker's trial: a broken a.jpg queued, then another a.jpg sent under its name and
    claimed too; the broken one failed and went back to the inbox with its report, which the
    other's result then deleted as outdated, and status took that result for its answer: the
    broken photo sat in the inbox, answered by nothing. Only a job claimed after a report
    outdates it."""
    lc = _lifecycle(folders)
    broken = _take(lc, _send(folders))
    assert broken is not None
    newer = folders.inbox / "photo.jpg"
    newer.write_bytes(image_bytes(seed=6))
    write_json(folders.inbox / "photo.json", SIDECAR)
    other = _take(lc, Arrival(newer, folders.inbox / "photo.json", Path(".")))
    assert other is not None
    lc.handle(Failed(broken, "input", "photo.jpg is truncated or corrupt; copy it again"))
    _render(lc, other)
    assert _outbox(folders) == [
        "photo-2.log",
        "photo.error.json",
        "photo.log",
        "photo.manifest-2.json",
        "photo.stylised-2.jpg",
    ]
    assert (folders.inbox / "photo.jpg").read_bytes() == image_bytes(seed=5)  # given back
    report = from_store(lc.store, DaemonInfo(running=False, version="test"))
    assert [end.job_id for end in open_failures(report.recent)] == [broken]
    # Fixed and sent again, it is answered, and that answer outdates the report.
    again = _take(lc, _send(folders, sidecar={"style": "mosaic", "params": {"size": 48}}))
    assert again is not None
    _render(lc, again)
    assert "photo.error.json" not in _outbox(folders)
    report = from_store(lc.store, DaemonInfo(running=False, version="test"))
    assert open_failures(report.recent) == []
