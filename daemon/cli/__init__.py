"""The `stylefold` command: a thin dispatcher over one module per subcommand.

Each subcommand module exposes `register(subparsers)`, which adds its parser and sets `func`
(taking the parsed arguments and returning an exit code). Heavy imports (torch) happen inside
the commands, so `stylefold status` and `--help` stay fast.
"""

import sys

from daemon import early_stop

# First, before the imports below (pydantic, structlog: hundreds of milliseconds): from here on a
# SIGTERM during `stylefold run`'s start-up is a stop, not a kill (see `daemon.early_stop`).
early_stop.install(sys.argv[1:])

import argparse  # noqa: E402
import os  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from daemon.cli import demo, doctor, reload, render, run, status, styles, validate, web  # noqa: E402
from daemon.cli.common import refuse_unknown_flags  # noqa: E402
from daemon.status import shut_out  # noqa: E402
from daemon.versions import stylefold_version  # noqa: E402

COMMANDS = (run, reload, status, styles, validate, doctor, render, demo, web)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stylefold",
        description="Neural style transfer for a shared folder: drop a photo and a sidecar JSON "
        "into the inbox, collect the stylised image from the outbox.",
    )
    parser.add_argument("--version", action="version", version=f"stylefold {stylefold_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            parser = build_parser()
            refuse_unknown_flags(parser, sys.argv[1:] if argv is None else argv)
            args = parser.parse_args(argv)
            code: int = args.func(args)
        finally:
            sys.stdout.flush()  # also after --help, which leaves through SystemExit
    except BrokenPipeError:
        # The reader went away (`stylefold status | head -1`): not an error. As Python's docs
        # advise, stdout now points at devnull, so the flush at exit cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except PermissionError as exc:  # a non-root trial: `status` by another user, a traceback
        print(f"stylefold: {shut_out(exc)}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
