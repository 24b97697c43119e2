"""Log lines that carry their priority into the systemd journal.

journald reads a `<N>` prefix (a syslog priority; `SyslogLevelPrefix=yes` is the default) at the
start of every line a service writes to its stdout or stderr stream, and strips it: so
`journalctl -p err` finds the daemon's errors, and `journalctl -o cat` still prints bare JSON.
systemd names the stream that is the journal in JOURNAL_STREAM=<device>:<inode>; lines are
prefixed only when the log goes to that very stream, never on a terminal, a pipe or a file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TextIO

JOURNAL_ENV = "JOURNAL_STREAM"


def is_journal(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether `stream` is the journal stream systemd connected (sd_journal_stream_fd's check)."""
    value = (os.environ if environ is None else environ).get(JOURNAL_ENV, "")
    device, _, inode = value.partition(":")
    try:
        info = os.fstat(stream.fileno())
        return (info.st_dev, info.st_ino) == (int(device), int(inode))
    except (OSError, ValueError, AttributeError):  # no descriptor (io.UnsupportedOperation too)
        return False


def priority(level: int) -> int:
    """The syslog priority of a logging level: 2 critical, 3 error, 4 warning, 6 info, 7 debug."""
    for floor, value in ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4)):
        if level >= floor:
            return value
    return 6 if level >= logging.INFO else 7


class PriorityFormatter(logging.Formatter):
    """Another formatter's output with the record's `<N>` in front of each line (a console
    traceback spans several, and journald reads every line as an entry of its own)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self.inner.format(record).split("\n"))
