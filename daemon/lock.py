"""One daemon per state directory: an exclusive `flock` on `<state>/lock`, which holds the pid.

Why flock and not a pid file alone: the kernel releases a flock when the last descriptor of the
open file goes away, however the process ends (exit, crash, SIGKILL, OOM killer). A lock left by
a dead daemon therefore needs no clean-up: the file (with the dead pid in it) remains, but the
next daemon's flock succeeds and it writes its own pid. Nothing ever guesses from a pid whether a
holder is alive, so pid reuse cannot confuse it.

The descriptor is close-on-exec, so programs the daemon runs do not hold the lock; worker
processes started with fork do hold it until they exit, which is right, as they still write into
the state directory. On NFS, Linux implements flock with POSIX byte-range locks, so two daemons
on different machines sharing one state directory also exclude each other.
"""

import contextlib
import fcntl
import os
import stat
import time
from pathlib import Path
from types import TracebackType

LOCK_NAME = "lock"


class LockError(RuntimeError):
    """Another daemon holds the state directory; the message names its pid and the fix."""


def _read_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode("ascii", errors="replace").strip()
    return int(text) if text.isdigit() else None


class StateLock:
    """Usage: `with StateLock(settings.state): run_daemon()`, or acquire()/release()."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, attempts: int = 5, pause: float = 0.05) -> None:
        """Take the lock or raise LockError. A few quick retries let a concurrent `holder()`
        probe (a shared lock held for microseconds) pass."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            for attempt in range(attempts):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if attempt == attempts - 1:
                        raise LockError(self.held_message(_read_pid(fd))) from None
                    time.sleep(pause)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def held_message(self, pid: int | None) -> str:
        who = f"pid {pid}" if pid is not None else "a process that has not written its pid yet"
        return (
            f"another stylefold daemon ({who}) is using the state directory {self.path.parent}; "
            "stop it first (e.g. systemctl stop stylefold); a second daemon needs its own "
            "inbox, outbox and state directory (--inbox, --outbox, --state; deploy/README.md, "
            '"Several instances")'
        )

    def release(self) -> None:
        """Unlock and close; the file stays (removing it would race with a starting daemon)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "StateLock":
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


class InboxLock:
    """One daemon per inbox as well: two daemons with their own state folders on one inbox would
    race for every photo. The lock is a flock on the inbox folder itself, because a lock file in
    it would sync to every device. Where the filesystem cannot flock a folder (NFS emulates flock
    with POSIX locks, which need a file open for writing), the daemon runs without this lock and
    says so. A claim then still renames a photo out of the inbox, which only one daemon can win,
    where the state folder shares the inbox's filesystem; across filesystems a claim is a copy,
    and two daemons could both answer one photo."""

    def __init__(self, inbox: Path) -> None:
        self.inbox = inbox
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock (True), or find that this filesystem cannot (False); LockError when
        another daemon holds it."""
        try:  # a missing inbox is the folder guard's to report
            fd = os.open(self.inbox, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockError(
                f"another stylefold daemon is watching the inbox {self.inbox} (with another "
                "state directory); stop it first, or give this one its own inbox"
            ) from None
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def holder(state_dir: Path) -> int | None:
    """The pid of the daemon holding `state_dir` (0 if it has not written its pid yet), or None
    when no daemon runs (for `status`)."""
    try:
        fd = os.open(state_dir / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def state_of(pid: int) -> Path | None:
    """The state folder daemon `pid` holds, found by its open lock file (Linux's /proc): a
    `reload` after `state` was changed in the file reads the new folder, not the one the
    running daemon keeps until its restart. None when the process cannot be looked at."""
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return None
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:  # closed since the listing: the daemon opens and closes files all along
            continue
        lock = Path(target)
        if lock.name == LOCK_NAME and lock.is_absolute() and holder(lock.parent) == pid:
            return lock.parent
    return None


def _folder_flocks() -> dict[str, int]:
    """Linux's /proc/locks: each flocked file's "<maj>:<min>:<inode>" and its holder's pid;
    empty where /proc cannot tell."""
    try:
        text = Path("/proc/locks").read_text(encoding="ascii", errors="replace")
    except OSError:
        return {}
    held = {}
    for line in text.splitlines():
        fields = line.split()  # "1: FLOCK ADVISORY WRITE <pid> <maj>:<min>:<inode> 0 EOF"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[4].isdigit():
            held[fields[5]] = int(fields[4])
    return held


def _where(info: os.stat_result) -> str:
    return f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"


def inbox_holder(inbox: Path) -> int | None:
    """The pid of the daemon watching `inbox` (its `InboxLock`), read from Linux's /proc/locks
    without taking the lock: trying it would make a daemon starting at that moment exit. None
    when none is found (or /proc cannot tell)."""
    try:
        seen = inbox.stat()
    except OSError:
        return None
    return _folder_flocks().get(_where(seen))


def nested_inbox(inbox: Path) -> tuple[int, Path] | None:
    """Another daemon's inbox around or inside this one (its pid and folder): the inbox lock
    keeps out a second daemon on the same folder only, and a re-test started one on a
    subfolder of a watched inbox, both then racing for its photos. A folder inside is found by
    the holder's open descriptor (readable where /proc lets us: the same user, or root)."""
    held = {where: pid for where, pid in _folder_flocks().items() if pid != os.getpid()}
    if not held:
        return None
    inbox = inbox.resolve()
    for folder in inbox.parents:
        with contextlib.suppress(OSError):
            if (pid := held.get(_where(folder.stat()))) is not None and _is_daemon(pid):
                return pid, folder
    for where, pid in held.items():
        if not _is_daemon(pid):  # before its descriptors: other programs' may be thousands
            continue
        for folder in _open_folders(pid):
            if not folder.is_relative_to(inbox) or folder == inbox:
                continue
            with contextlib.suppress(OSError):
                info = folder.stat()  # a folder: a daemon's lock file may lie in the tree too
                if stat.S_ISDIR(info.st_mode) and _where(info) == where:
                    return pid, folder
    return None


def _is_daemon(pid: int) -> bool:
    """Whether `pid` runs stylefold (another program may flock a folder for its own ends)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"stylefold" in command or b"daemon.cli" in command


def _open_folders(pid: int) -> list[Path]:
    try:
        links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
    except OSError:
        return []
    return [Path(link) for link in links if link.startswith("/")]
