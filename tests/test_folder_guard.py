"""A shared folder deleted and re-created under the sandbox's bind mount: inside, the new folder
is a read-only stand-in, and the daemon exits 75 so systemd restarts it with fresh mounts.

The sandbox is the unit's file-system view, made with unshare(1): the inbox, outbox, state and
a private /tmp are bind mounts of themselves, and / is remounted read-only
(ReadWritePaths= under ProtectSystem=strict). The same folder remounted read-only is not this:
answers wait for it (tests/test_reliability_disk.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable

import pytest
from conftest import CLI, REPO, Daemon, Folders, can_unshare_mounts, wait_for

from daemon.exitcodes import ExitCode
from daemon.folder_guard import FolderGuard
from daemon.jobs.store import DB_FILE, Store

_SANDBOX = """
set -e
for writable in "$INBOX" "$OUTBOX" "$STATE" "$PRIVATE_TMP"; do
  mount --bind "$writable" "$writable"
done
mount -o remount,bind,ro /
exec "$@"
"""


def test_a_folder_recreated_on_a_writable_file_system_is_no_reason(folders: Folders) -> None:
    """Outside a sandbox a re-created folder is simply the new folder (the watcher follows
    it), and a missing one is an unmounted share (paused): neither needs a restart."""
    guard = FolderGuard({"inbox": folders.inbox, "outbox": folders.outbox}, check_every=0)
    assert not guard.tripped(1.0)
    shutil.rmtree(folders.outbox)
    assert not guard.tripped(2.0)
    folders.outbox.mkdir()
    folders.inbox.rename(folders.root / "old-inbox")
    folders.inbox.mkdir()
    assert not guard.tripped(3.0) and guard.reason is None


@pytest.mark.heavy
@pytest.mark.skipif(not can_unshare_mounts(), reason="needs root and unshare(1) mount namespaces")
@pytest.mark.parametrize("folder", ["outbox", "inbox"])
def test_a_read_only_stand_in_makes_the_daemon_exit_for_a_restart(
    folders: Folders, folder: str
) -> None:
    private_tmp = folders.root / "tmp"
    private_tmp.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},
        "INBOX": str(folders.inbox),
        "OUTBOX": str(folders.outbox),
        "STATE": str(folders.state),
        "PRIVATE_TMP": str(private_tmp),
        "TMPDIR": str(private_tmp),
        "HOME": str(folders.state),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    sandbox = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _SANDBOX, "sh"]
    command = [*CLI, "run", "--config", str(folders.config()), "--log-format", "json"]
    log_path = folders.root / "daemon.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [*sandbox, *command], cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT, env=env
        )
    try:
        wait_for(lambda: "daemon.ready" in log_path.read_text(), 90, "the daemon to be ready")
        # A sync tool re-adding the folder, on the host: the sandbox's bind mount goes, and the
        # new folder shows through the read-only rest.
        path = getattr(folders, folder)
        shutil.rmtree(path)
        path.mkdir()
        code = process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    log = log_path.read_text()
    assert code == ExitCode.TEMPFAIL == 75, log[-3000:]
    assert '"event": "daemon.folder_replaced"' in log
    assert f"the {folder} {path} is now a different folder on a read-only mount" in log
    assert '"event": "daemon.stopped"' in log  # through the ordinary shutdown


@pytest.mark.parametrize("how", ["deleted", "moved"])
def test_a_state_folder_taken_away_while_the_daemon_runs_makes_it_exit_for_a_restart(
    daemon_factory: Callable[..., Daemon], folders: Folders, how: str
) -> None:
    """Found by an operator trial: after `rm -rf` of the state folder the daemon ran on,
    writing its records to a deleted database, with its lock gone (a second daemon could
    start on the same inbox) and `status` blind."""
    daemon = daemon_factory()
    if how == "deleted":
        shutil.rmtree(folders.state)
    else:
        folders.state.rename(folders.root / "state-moved")
    code = daemon.process.wait(60)
    assert code == ExitCode.TEMPFAIL == 75, daemon.log_path.read_text()[-3000:]
    [line] = [line for line in daemon.log_lines() if line["event"] == "daemon.state_replaced"]
    assert line["reason"] == f"the state database {folders.state / DB_FILE} was deleted or moved"
    assert "Stop the daemon before moving its state" in line["fix"]
    assert daemon.logged("daemon.stopped") == 1  # through the ordinary shutdown
    # Nothing made anew on its way out: an operator's trial found an empty state folder there,
    # and moving the real one back put it inside that.
    assert not folders.state.exists()
    again = daemon_factory()  # what systemd's restart does: a new, working state
    assert (folders.state / DB_FILE).exists()
    assert again.stop() == 0


def test_the_state_database_is_watched_from_when_it_is_opened(folders: Folders) -> None:
    """From the moment the daemon opens it, not from its first look in the main loop: a state
    folder deleted while the workers load (minutes on a slow disk) was taken for one not yet
    created, and whatever appeared later for the database."""
    store = Store(folders.state)
    guard = FolderGuard({"inbox": folders.inbox, "outbox": folders.outbox}, check_every=0)
    guard.watch_database(store.path)
    assert not guard.tripped(1.0)
    store.path.rename(folders.root / "elsewhere.db")
    store.path.write_bytes(b"")  # a new file at the path is not the database either
    assert guard.tripped(2.0)
    assert guard.reason == f"the state database {store.path} was deleted or moved"
