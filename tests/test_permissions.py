"""The daemon's user and the sync tool's are different users (deploy/README.md, Permissions):
a file or folder the daemon may not take is told, in its own report, and the photos after it
go on. A non-root trial found every photo after one unreadable photo waiting for good, with
no report and nothing in `status`. Run as root, the daemon is started without the
capabilities that override file permissions, so the refusals are the kernel's own."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from pathlib import Path

import pytest
from conftest import (
    CLI,
    REPO,
    Folders,
    as_an_ordinary_user,
    make_image,
    start_daemon,
    wait_for,
    write_json,
)

from daemon.status import shut_out


def _stylefold(*args: str, ordinary: bool = True) -> subprocess.CompletedProcess[str]:
    """The command, run as an ordinary user (`ordinary`) or as this one."""
    launcher = as_an_ordinary_user() if ordinary else ()
    return subprocess.run(
        [*launcher, *CLI, *args], cwd=REPO, capture_output=True, text=True, timeout=240
    )


def _pair(folder: Path, stem: str, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / f"{stem}.json", {"style": "mosaic"})
    return make_image(folder / f"{stem}.jpg", seed=seed)


def _error(path: Path) -> str:
    return str(json.loads(path.read_text())["error"])


def test_a_file_the_daemon_may_not_take_is_told_and_the_photos_after_it_go_on(
    folders: Folders,
) -> None:
    unreadable = _pair(folders.inbox, "unreadable", seed=1)
    unreadable.chmod(0o000)
    locked = _pair(folders.inbox / "locked", "photo", seed=2)
    locked.parent.chmod(0o555)  # its folder refuses the move
    _pair(folders.inbox, "later", seed=3)
    hidden = _pair(folders.inbox, "hidden", seed=4).with_suffix(".json")
    hidden.chmod(0o000)
    brush = make_image(folders.inbox / "brush.png", seed=9)  # a review: it held them all too
    make_image(folders.inbox / "brushed.jpg", seed=10)
    write_json(folders.inbox / "brushed.json", {"style": {"file": "brush.png"}})
    brush.chmod(0o000)
    both = _pair(folders.inbox, "both", seed=5)  # told together, not in two rounds
    for path in (both, both.with_suffix(".json")):
        path.chmod(0o000)
    before = {path: path.stat() for path in (unreadable, locked, hidden, brush, both)}
    try:
        done = _stylefold("once", "--config", str(folders.config()), "--log-format", "json")
    finally:
        locked.parent.chmod(0o755)
        unreadable.chmod(0o644)
        hidden.chmod(0o644)
        brush.chmod(0o644)
        for path in (both, both.with_suffix(".json")):
            path.chmod(0o644)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert (folders.outbox / "later.manifest.json").exists(), log[-3000:]
    assert _error(folders.outbox / "unreadable.error.json") == (
        "unreadable.jpg cannot be read by the daemon (Permission denied): make it readable by "
        "the daemon's user (for example by the folder's group: chmod g+r), then it is taken "
        "again by itself within rescan_interval (at once if you touch it or run `stylefold "
        "reload`)"
    )
    assert _error(folders.outbox / "locked" / "photo.error.json").startswith(
        "photo.jpg cannot be taken out of the inbox folder locked (Permission denied): the "
        "daemon's user needs write permission on that folder"
    )
    assert _error(folders.outbox / "hidden.error.json").startswith(
        "hidden.json: sidecar: hidden.json cannot be read by the daemon (Permission denied): "
        "make it readable"
    )
    told = _error(folders.outbox / "both.error.json")
    assert told.startswith("both.json: sidecar: both.json cannot be read by the daemon"), told
    assert "; both.jpg cannot be read by the daemon (Permission denied): make it" in told, told
    assert _error(folders.outbox / "brushed.error.json").startswith(
        "style.file: brush.png cannot be read by the daemon (Permission denied): make it readable"
    )
    for path, seen in before.items():  # left where they were, untouched
        assert path.stat().st_ino == seen.st_ino and path.stat().st_mtime_ns == seen.st_mtime_ns


def test_a_state_database_the_daemon_may_not_write_stops_it_at_start(folders: Folders) -> None:
    """A non-root trial: with the database left owned by root, the daemon started "ready"
    and every photo then waited, and `doctor` passed."""
    config = str(folders.config())
    made = _stylefold("once", "--config", config, ordinary=False)
    assert made.returncode == 0, made.stderr[-2000:]
    database = folders.state / "stylefold.db"
    database.chmod(0o444)
    try:
        run = _stylefold("run", "--config", config)
        doctor = _stylefold("doctor", "--config", config)
    finally:
        database.chmod(0o644)
    told = f"the state database file {database} cannot be written by this user (its mode, "
    assert run.returncode == 78, run.stdout[-2000:] + run.stderr[-2000:]
    assert told in run.stdout + run.stderr
    assert "lets no one write it); chmod u+w it" in run.stdout + run.stderr
    assert doctor.returncode != 0
    assert f"FAIL state database: {database} cannot be written by this user" in doctor.stdout
    # Mended, it starts (a re-test: the refused start had left a -shm file of mode 444).
    again = _stylefold("once", "--config", config)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]


def _attention(folders: Folders) -> list[str]:
    try:
        items = json.loads((folders.state / "status.json").read_text())["attention"]
    except (OSError, ValueError):
        return ["(not yet written)"]
    return [item["what"] for item in items]


def test_claims_that_fail_for_the_daemons_own_reason_show_in_status(folders: Folders) -> None:
    """Not the photo's fault (its job folder cannot be made): the photo waits and is tried
    again, and status says why meanwhile (it said nothing while every photo waited)."""

    def attention() -> list[str]:
        return _attention(folders)

    daemon = start_daemon(folders, launcher=as_an_ordinary_user())
    spool = folders.state / "spool"
    try:
        spool.chmod(0o555)
        _pair(folders.inbox, "photo", seed=5)
        told = "photos cannot be taken from the inbox: "
        wait_for(lambda: any(w.startswith(told) for w in attention()), 60, "the attention item")
        spool.chmod(0o755)
        wait_for((folders.outbox / "photo.manifest.json").exists, 90, "the result")
        wait_for(lambda: not any("cannot be taken" in w for w in attention()), 30, "it to clear")
    finally:
        spool.chmod(0o755)
        assert daemon.stop() == 0


def test_a_folder_the_daemon_may_not_read_is_named_in_status(folders: Folders) -> None:
    """A non-root trial: a sync tool's folder of mode 700 was skipped without a word, its
    photos never seen; and a re-test's folder of mode 644 (listed, not entered)."""
    config = folders.config(rescan_interval=2)
    daemon = start_daemon(folders, config=config, launcher=as_an_ordinary_user())
    told = "folders in the inbox cannot be read by the daemon: photos in them are not seen"
    shut: list[Path] = []
    try:
        for name, mode in (("secret", 0o000), ("listed", 0o644)):
            folder = folders.inbox / name
            _pair(folder, "photo", seed=len(shut))
            shut.append(folder)
            folder.chmod(mode)
            wait_for(lambda: told in _attention(folders), 60, f"the item about {name}")
            assert _attention_where(folders) == name
            folder.chmod(0o755)
            wait_for((folders.outbox / name / "photo.manifest.json").exists, 90, "the result")
            wait_for(lambda: told not in _attention(folders), 30, "it to clear")
        # Both at once are both named: one must not hide the other (a non-root trial).
        for folder, mode in zip(shut, (0o000, 0o644), strict=True):
            _pair(folder, "again", seed=7)
            folder.chmod(mode)
        wait_for(lambda: _attention_where(folders) == "listed, secret", 60, "both named")
        shut[0].chmod(0o755)  # the list follows each full scan (a re-test: it stayed as first)
        wait_for(lambda: _attention_where(folders) == "listed", 60, "only the one left named")
    finally:
        for folder in shut:
            folder.chmod(0o755)
        assert daemon.stop() == 0


def _attention_where(folders: Folders) -> str | None:
    try:
        items = json.loads((folders.state / "status.json").read_text())["attention"]
    except (OSError, ValueError):
        return None
    return next((item["where"] for item in items if "cannot be read" in item["what"]), None)


def test_a_command_the_user_may_not_run_says_so_without_a_traceback(folders: Folders) -> None:
    """A non-root trial: `status` and `reload` by a user outside the state folder's group
    printed a PermissionError traceback."""
    lock = folders.state / "lock"
    lock.write_text("")
    lock.chmod(0o000)
    try:
        done = _stylefold("status", "--state", str(folders.state))
    finally:
        lock.chmod(0o644)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(f"stylefold: {lock}: Permission denied; run this as the user")


def test_a_folder_shut_to_this_user_is_not_told_to_be_mounted_again(folders: Folders) -> None:
    """A non-root trial: `doctor` by a user the state folder shuts out was told the archive
    "cannot be reached; if it is on a share ... mount it again"."""
    folders.state.chmod(0o000)
    try:
        done = _stylefold("doctor", "--config", str(folders.config()))
    finally:
        folders.state.chmod(0o755)
    said = done.stdout + done.stderr
    assert done.returncode != 0 and "mount it again" not in said, said
    # the folder that shuts it out, by name (an operator's trial: "a folder on its way")
    shut = f"cannot be reached (Permission denied): {folders.state}, on its way (owner root, mode"
    assert f"{shut} 0000), shuts this user out" in said, said


def test_an_archive_the_daemon_may_not_write_is_told_as_the_originals_not_the_outbox(
    folders: Folders,
) -> None:
    """A non-root trial: with the archive refusing the originals (the answer already out),
    status said the outbox could not be written, and to free space there."""
    archive = folders.root / "archive"
    archive.mkdir()
    config = folders.config(archive_dir=str(archive))
    env = {"STYLEFOLD_TEST_PUBLISH_RETRY": "0.5"}
    daemon = start_daemon(folders, config=config, env=env, launcher=as_an_ordinary_user())

    def blocked_on() -> list[str]:
        try:
            jobs = json.loads((folders.state / "status.json").read_text())["jobs"]
        except (OSError, ValueError):
            return []
        return [job["blocked_on"] for job in jobs if job["state"] == "blocked"]

    try:
        archive.chmod(0o555)  # after the start, which checks it
        _pair(folders.inbox, "photo", seed=7)
        wait_for(lambda: blocked_on() == ["originals"], 90, "the job blocked on its originals")
        assert (folders.outbox / "photo.manifest.json").exists()
        archive.chmod(0o755)
        wait_for((archive / "photo.jpg").exists, 90, "the original archived")
    finally:
        archive.chmod(0o755)
        assert daemon.stop() == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="only root passes every permission")
def test_doctor_run_as_root_says_it_checks_nothing_of_the_daemons_rights(folders: Folders) -> None:
    """A non-root trial: `doctor` as root said "folders: readable and writable" however the
    daemon's user was set up."""
    os.chown(folders.state, 65534, 65534)
    try:
        done = _stylefold("doctor", "--config", str(folders.config()), ordinary=False)
    finally:
        os.chown(folders.state, 0, 0)
    owner = pwd.getpwuid(65534).pw_name
    told = "WARN user: run as root, which every folder lets in; the state folder belongs to "
    told += f"{owner}: run `runuser -u {owner} -- stylefold doctor --config {folders.config()}`"
    assert told in done.stdout, done.stdout  # with its config (an operator's trial: none)


def test_doctor_names_what_a_command_run_as_another_user_left_in_the_state_folder(
    folders: Folders,
) -> None:
    """An operator's trial: `once` run as root left its lock and folders in the daemon's
    state folder; doctor passed, and the daemon then failed at its start, told to run as the
    daemon's user, which it was."""
    done = _stylefold("once", "--config", str(folders.config()), ordinary=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lock = folders.state / "lock"
    assert lock.exists()
    os.chown(folders.state, 65534, 65534)  # the daemon's user's, with root's files inside
    try:
        checked = _stylefold("doctor", "--config", str(folders.config()), ordinary=False)
    finally:
        os.chown(folders.state, 0, 0)
    nobody = pwd.getpwuid(65534).pw_name
    assert checked.returncode == 1, checked.stdout
    assert f"FAIL state contents: {folders.state}/" in checked.stdout, checked.stdout
    assert f"give them back: chown -R {nobody}: {folders.state}" in checked.stdout
    checked = _stylefold("doctor", "--config", str(folders.config()), ordinary=False)
    assert "ok   state contents: writable" in checked.stdout, checked.stdout
    # What the daemon's user is told when it meets such a file (its own folder's, not its).
    os.chown(lock, 65534, 65534)
    try:
        told = shut_out(PermissionError(13, "Permission denied", str(lock)))
    finally:
        os.chown(lock, 0, 0)
    assert told == (
        f"{lock}: Permission denied: it belongs to {nobody}, not to this user (root), who owns "
        f"the folder it is in: a command run as {nobody} left it; give the folder's contents "
        f"back: chown -R root: {folders.state}"
    )


def test_an_unreadable_photo_is_taken_again_once_readable_and_not_reported_twice(
    folders: Folders,
) -> None:
    """A review: every reload (and start) claimed a photo the daemon may not read again, and
    wrote it a new report; once it is readable, a reload or start takes it, as its report
    says."""
    photo = _pair(folders.inbox, "photo", seed=11)
    photo.chmod(0o000)
    report = folders.outbox / "photo.error.json"
    config = str(folders.config())
    try:
        reports = []
        for _ in range(2):  # the second start retries the pairs answered in place
            done = _stylefold("once", "--config", config)
            assert done.returncode == 0, done.stderr[-2000:]
            reports.append(json.loads(report.read_text())["job_id"])
        assert reports[0] == reports[1]
    finally:
        photo.chmod(0o644)
    done = _stylefold("once", "--config", config)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (folders.outbox / "photo.manifest.json").exists() and not report.exists()


def test_an_outbox_folder_the_daemon_may_not_write_into_gets_a_numbered_one(
    folders: Folders,
) -> None:
    """A non-root trial: another user of a shared outbox made `alicedir/` there (mode 755,
    hers) before alice's photos in `inbox/alicedir/` were answered; their answers were blocked
    for as long as it stayed. They go to `alicedir-2/`, as for a name a file holds."""
    shut = folders.outbox / "alicedir"
    shut.mkdir(mode=0o555)
    _pair(folders.inbox / "alicedir", "r1", seed=3)
    try:
        done = _stylefold("once", "--config", str(folders.config()), "--log-format", "json")
    finally:
        shut.chmod(0o755)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert (folders.outbox / "alicedir-2" / "r1.manifest.json").exists()
    assert list(shut.iterdir()) == []


def test_a_photo_whose_folder_refused_its_move_is_taken_once_the_folder_is_fixed(
    folders: Folders,
) -> None:
    """Its report says it is taken again by itself once the folder is fixed: a chmod of the
    folder moves no file's size or time, and nothing looked again until a touch or a reload."""
    locked = _pair(folders.inbox / "locked", "photo", seed=2).parent
    locked.chmod(0o555)
    config = folders.config(rescan_interval=1.0)
    daemon = start_daemon(folders, config=config, launcher=as_an_ordinary_user())
    try:
        report = folders.outbox / "locked" / "photo.error.json"
        wait_for(report.exists, 60, "the report")
        assert "fix the folder, then it is taken again by itself within rescan_interval" in (
            _error(report)
        )
        locked.chmod(0o755)
        wait_for((folders.outbox / "locked" / "photo.manifest.json").exists, 60, "the result")
    finally:
        locked.chmod(0o755)
        assert daemon.stop() == 0


def test_an_outbox_folder_shut_while_its_photo_renders_gets_a_numbered_one(
    folders: Folders,
) -> None:
    """The same where the folder stops taking answers while the photo renders (after its
    claim chose it): shut by another user, or given a sync tool's copied mode. The answer was
    blocked for as long as it stayed; it goes to the numbered one too."""
    slow = {"style": "mosaic", "params": {"size": 48, "iterations": 80, "tolerance": 0.0}}
    (folders.inbox / "alicedir").mkdir()
    write_json(folders.inbox / "alicedir" / "r2.json", slow)
    make_image(folders.inbox / "alicedir" / "r2.jpg", seed=4)
    daemon = start_daemon(folders, launcher=as_an_ordinary_user())
    shut = folders.outbox / "alicedir"
    try:
        daemon.wait_for_log("job.started")
        wait_for((shut / "r2.progress.json").exists, 30, "its progress file")
        shut.chmod(0o555)
        wait_for((folders.outbox / "alicedir-2" / "r2.manifest.json").exists, 90, "the result")
        moved = daemon.wait_for_log("job.answer_folder_moved")
        assert moved["folder"] == "alicedir-2", moved
        log = (folders.outbox / "alicedir-2" / "r2.log").read_text()
        assert "may not be written by the daemon" in log, log
    finally:
        shut.chmod(0o755)
        assert daemon.stop() == 0
    # Only its progress file stayed there: the shut folder refused its deletion.
    assert sorted(path.name for path in shut.iterdir()) == ["r2.progress.json"]
