"""`stylefold reload`: SIGHUP the running daemon, then wait for its verdict, so that systemd's
`ExecReload=` (and an admin at a shell) learn whether the new configuration was taken.

The daemon answers in `state/status.json` (`daemon.reload`), naming the CLOCK_MONOTONIC time
its reload began; the answer to this request is the first one that began after the signal.
The daemon is found by its state folder's lock, named as the settings would name it, even in a
config file with a wrong value (`--state` alone is enough), and its own verdict is the answer.
Only when not even the state folder can be read from the configuration (`--pid` with a file
that is not TOML) does this command judge the file itself: the signal still goes out (the daemon
says so in its log and STATUS=), and the exit code is 78 at once.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path

from daemon.cli.common import (
    config_file,
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
from daemon.exitcodes import ExitCode
from daemon.lock import holder, state_of
from daemon.status import RESTART_FIX, read_status


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommand(
        subparsers,
        "reload",
        "make the running daemon re-read its configuration; fails if it keeps the old one",
    )
    folder_flags(parser)
    parser.add_argument(
        "--pid",
        type=number_flag(int),
        metavar="PID",
        help="the daemon's process id (systemd: $MAINPID); default: the state folder's lock holder",
    )
    parser.add_argument(
        "--timeout",
        type=number_flag(float),
        default=60.0,
        metavar="S",
        help="seconds to wait for the answer",
    )
    parser.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    try:
        state: Path | None = read_settings(args).state
        broken = ""
    except ConfigError as exc:  # still the daemon's own file to judge, when its state is known
        state, broken = state_folder(args), str(exc)
    pid = args.pid if args.pid is not None else state and holder(state)
    if not pid:
        if state is None and config_named(args):  # but not one that names a state folder
            return fail_config(
                f"{broken}\n(or give the state folder: stylefold reload --state DIR)"
            )
        where = f"on {state}" if state else "(no state folder named: give --config or --state)"
        return fail(
            f"no running daemon found {where}; start it, or name it with --pid (also when "
            "`state` was changed in the file: the daemon keeps its folder until a restart)"
        )
    if state is not None and holder(state) != pid:
        state = state_of(pid) or state  # `state` changed in the file: the daemon's own folder
    asked = time.monotonic_ns() // 1000
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        return fail(f"cannot signal process {pid}: {exc.strerror}")
    if state is None:
        # its verdict cannot be read without the state folder: the file's own errors, in the
        # verdict's words (an administrator's trial: two wordings for one failure), as far as
        # they are known (the daemon may read another file: a newcomer's review)
        return fail_config(
            f"reload failed, process {pid} keeps its previous configuration (if it reads this "
            f"file, which has errors):\n{broken}"
        )
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        reload = read_status(state).daemon.reload
        if reload is not None and reload.monotonic_usec >= asked:
            read = _file_read(reload.config, args)
            if reload.error is None:
                print(f"stylefold: process {pid} reloaded its configuration{read}")
                if reload.needs_restart:
                    print(
                        f"stylefold: {', '.join(reload.needs_restart)} changed, which only a "
                        f"restart applies; until then the running values stay ({RESTART_FIX})"
                    )
                return ExitCode.OK
            return fail_config(
                f"reload failed, process {pid} keeps its previous configuration{read}:\n"
                f"{reload.error}"
            )
        time.sleep(0.1)
    return fail(f"process {pid} did not report a reload within {args.timeout:g} s")


def _file_read(config: str | None, args: argparse.Namespace) -> str:
    """Which file the daemon read again: the one it was started with, whatever --config this
    command was given (a new user's trial: a reload of another file failed on the daemon's
    own, unnamed)."""
    if config is None:
        return ""
    given = config_file(args)
    if given and Path(given).resolve() != Path(config).resolve():
        return f" (from {config}, the file it was started with, not {given})"
    return f" (from {config})"
