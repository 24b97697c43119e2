"""A stop (or a reload) asked for before the daemon can act on it: SIGTERM/SIGINT (SIGHUP)
while `stylefold run` still imports and loads its configuration.

Until a process installs a handler, SIGTERM kills it (exit -15, a failed stop for systemd).
`daemon.cli` calls `install` before any other import, so from then on a stop is only recorded
here, and the daemon honours it as an ordinary stop as soon as it can (`daemon.cli.run`, then
`Daemon`, which takes the record over with `take`). This module imports the standard library
only: whatever it imported would run inside the window it is meant to close.

The window that remains is the interpreter's own start before any code of this package runs:
measured from exec to SIGTERM caught (SigCgt in /proc/PID/status, on 2 busy cores) 30-70 ms,
median 36 ms for `python -m daemon.cli run` and 52 ms for the console script; `python -S`
alone takes ~22 ms, `site` (here with an editable install's import finder) most of the rest.
A SIGTERM there still ends the process with the kernel's default action (it was ~1.1 s, up
to the daemon's own handlers, before this module).
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from types import FrameType

DAEMON_COMMANDS = frozenset({"run", "once"})
# SIGTERM last: a process seen catching it (SigCgt in /proc/PID/status) records the others too.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# SIGHUP's default action is to end the process too; a reload asked for during start-up is
# done once the daemon runs (its configuration may have been read before the file changed).
RECORDED = (signal.SIGHUP, *STOP_SIGNALS)

_received: list[int] = []  # signal numbers, in order; only appended to by the handler


def _record(signum: int, _frame: FrameType | None) -> None:
    """Only remembers: a handler that runs during an import must not do anything else."""
    _received.append(signum)


def command_of(argv: Sequence[str]) -> str | None:
    """The subcommand in `argv` (without the program name): the first word not an option."""
    return next((word for word in argv if not word.startswith("-")), None)


def install(argv: Sequence[str]) -> bool:
    """Record SIGHUP/SIGINT/SIGTERM from now on when `argv` starts the daemon; True when it
    did. Other commands (`status`, `validate`, ...) keep the default: a stop ends them at once."""
    if command_of(argv) not in DAEMON_COMMANDS:
        return False
    for sig in RECORDED:
        signal.signal(sig, _record)
    return True


def stop_asked() -> bool:
    """Whether a stop signal has been recorded (the handler stays installed)."""
    return any(signum in STOP_SIGNALS for signum in _received)


def take() -> list[int]:
    """The signals recorded so far, forgotten here: the caller now owns them (it has
    installed its own handlers first, so none is lost in between)."""
    taken = list(_received)
    del _received[: len(taken)]
    return taken
