"""`stylefold run` and `stylefold once`: the daemon, watching until SIGTERM or until the inbox
is done. The only commands that start workers (and so import torch, in the worker processes).
Their exit codes are `daemon.exitcodes.ExitCode`."""

from __future__ import annotations

import argparse
import faulthandler
import os
import signal
from pathlib import Path

from daemon import early_stop
from daemon.cli.common import fail_config, folder_flags, number_flag, overrides, subcommand
from daemon.config import ConfigError, load_settings
from daemon.config.fields import LOG_LEVELS
from daemon.config.loading import misspelt_variables, named_config
from daemon.exitcodes import ExitCode


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, help_text, once in (
        ("run", "run the watch-folder daemon (until SIGTERM)", False),
        ("once", "process what is in the inbox now, then exit", True),
    ):
        parser = subcommand(subparsers, name, help_text)
        folder_flags(parser)
        parser.add_argument(
            "--device",
            action="append",
            metavar="DEV",
            help="auto, cpu, mps, cuda or cuda:N (repeat or comma-separate)",
        )
        parser.add_argument(
            "--workers", type=number_flag(int), metavar="N", help="workers per device"
        )
        parser.add_argument("--backend", choices=("local", "ray"), help="worker pool backend")
        parser.add_argument("--log-format", choices=("auto", "json", "console"))
        parser.add_argument("--log-level", choices=LOG_LEVELS)
        parser.set_defaults(func=command, once=once)


def command(args: argparse.Namespace) -> int:
    # systemd's watchdog ends a wedged daemon with SIGABRT: every thread's stack goes to stderr
    # (the journal) first, so the cause is read there, not guessed.
    faulthandler.enable(all_threads=True)
    from daemon.logs import setup_logging

    given = overrides(args)
    try:
        # The daemon makes missing folders once it holds the inbox (`Daemon._take_folders`).
        settings = load_settings(args.config, given, create_dirs=False)
    except ConfigError as exc:
        status = fail_config(f"configuration error:\n{exc}")
        if early_stop.stop_asked():
            return stopped_before_start()  # the stop was asked for: no failure to restart on
        # Also as a log line, in the format asked for: a log shipper reading JSON sees it too.
        import structlog

        setup_logging(args.log_format or "auto", "error")
        structlog.get_logger("stylefold.daemon").error(
            "daemon.config_error", error=str(exc), exit_code=int(status)
        )
        return status
    setup_logging(settings.log_format, settings.log_level)
    if early_stop.stop_asked():
        return stopped_before_start()
    import structlog

    for problem in misspelt_variables(os.environ):
        structlog.get_logger("stylefold.daemon").warning("config.unknown_variable", problem=problem)
    from daemon.app import Daemon  # the daemon's modules: a stop meanwhile is taken over by it

    # Whole, as the start line and the reloads name it: a relative path means little in a log.
    config_path = named_config(args.config)
    if config_path is not None:
        config_path = Path(os.path.abspath(config_path))
    return Daemon(settings, config_path=config_path, overrides=given, once=args.once).run()


def stopped_before_start() -> int:
    """A SIGTERM/SIGINT recorded while `stylefold run` imported: an ordinary stop, said to
    systemd and the log like any other, before anything was opened or taken from the inbox."""
    import structlog

    from daemon.sdnotify import Notifier

    log = structlog.get_logger("stylefold.daemon")
    Notifier.from_env().stopping()
    names = [signal.Signals(number).name for number in early_stop.take()]  # a SIGHUP too
    log.info("daemon.stopping", while_starting=True, before_start=True, signals=names)
    log.info("daemon.stopped", while_starting=True, before_start=True)
    return ExitCode.OK
