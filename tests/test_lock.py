"""The state-directory lock with real processes: refusal naming the pid, stale locks cleared."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.lock import InboxLock, LockError, StateLock, holder, state_of

HOLD = """
import sys, time
from pathlib import Path
from daemon.lock import InboxLock, StateLock
lock = (InboxLock if len(sys.argv) > 2 else StateLock)(Path(sys.argv[1]))
lock.acquire()
print("locked", flush=True)
time.sleep(60)
"""


def start_holder(state: Path, *inbox: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(state), *inbox], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "locked"
    return process


CHURN = """
import os, sys, time
from pathlib import Path
from daemon.lock import StateLock
StateLock(Path(sys.argv[1])).acquire()
print("locked", flush=True)
while True:  # a daemon opens and closes files all along: logs, status, the config at a reload
    for fd in [os.open(sys.argv[1], os.O_RDONLY) for _ in range(20)]:
        os.close(fd)
"""


def test_the_state_of_a_daemon_opening_and_closing_files_is_found(tmp_path: Path) -> None:
    """A CI run: `reload --pid` after `state` was changed in the file timed out, though the
    daemon had reloaded: looking up its lock among its open files gave up on the first file
    closed meanwhile (1,960 of 3,000 looks, beside this churning process)."""
    process = subprocess.Popen(
        [sys.executable, "-c", CHURN, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "locked"
        assert {state_of(process.pid) for _ in range(500)} == {tmp_path}
    finally:
        process.kill()
        process.wait()


def test_second_daemon_refused_with_pid_then_stale_lock_cleared(tmp_path: Path) -> None:
    process = start_holder(tmp_path)
    try:
        assert holder(tmp_path) == process.pid
        with pytest.raises(LockError) as caught:
            StateLock(tmp_path).acquire()
        message = str(caught.value)
        assert (
            f"another stylefold daemon (pid {process.pid}) is using the state directory" in message
        )
        assert "systemctl stop stylefold" in message
        # Its own state directory alone is then refused for the inbox (a new user's trial).
        assert "needs its own inbox, outbox and state directory" in message
    finally:
        process.send_signal(signal.SIGKILL)  # no clean-up at all: the kernel drops the flock
        process.wait()
    assert (tmp_path / "lock").read_text().strip() == str(process.pid)  # the stale pid remains
    assert holder(tmp_path) is None
    with StateLock(tmp_path) as lock:
        assert lock.held
        assert (tmp_path / "lock").read_text() == f"{os.getpid()}\n"
        assert holder(tmp_path) == os.getpid()
    assert holder(tmp_path) is None


def test_same_process_second_lock_refused_and_release(tmp_path: Path) -> None:
    first = StateLock(tmp_path)
    first.acquire()
    with pytest.raises(LockError, match=f"pid {os.getpid()}"):
        StateLock(tmp_path).acquire(attempts=1)
    first.release()
    assert not first.held
    second = StateLock(tmp_path)
    second.acquire()
    second.release()


def test_no_lock_file_means_no_holder(tmp_path: Path) -> None:
    assert holder(tmp_path) is None


def test_lock_not_inherited_by_exec(tmp_path: Path) -> None:
    with StateLock(tmp_path):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.1)
        with StateLock(tmp_path):  # the exec'd child does not keep the lock alive
            pass
    finally:
        child.kill()
        child.wait()


def test_an_inbox_is_locked_by_one_process_until_it_dies(tmp_path: Path) -> None:
    """The lock is on the folder itself (nothing is written into the inbox)."""
    process = start_holder(tmp_path, "inbox")
    try:
        with pytest.raises(LockError, match="another stylefold daemon is watching the inbox"):
            InboxLock(tmp_path).acquire()
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    lock = InboxLock(tmp_path)
    assert lock.acquire()
    lock.release()
    assert list(tmp_path.iterdir()) == []
    assert not InboxLock(tmp_path / "absent").acquire()  # the folder guard reports that one
