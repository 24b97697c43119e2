"""The `stylefold` command: a thin dispatcher over subcommand modules.

Each subcommand module exposes `register(subparsers)`, which adds its parser and sets `func`
(taking the parsed arguments and returning an exit code). Heavy imports (torch) happen inside
the commands, so `stylefold status` and `--help` stay fast.
"""

import argparse
import sys
from collections.abc import Sequence

from daemon.cli import commands, demo, render


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stylefold",
        description="Neural style transfer for a shared folder: drop a photo and a sidecar JSON "
        "into the inbox, collect the stylised image from the outbox.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (commands, render, demo):
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
